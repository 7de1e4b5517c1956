//! The headers in `include/` match the libraries' exports, and the OE
//! library exports no malloc-family or dlmalloc symbols.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

/// Names of the functions a header declares (lines `type name(args);`).
fn declared(header: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(common::root().join("include").join(header)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| l.ends_with(");") && !l.starts_with("/*") && !l.starts_with('#'))
        .filter_map(|l| {
            let name = l.split('(').next()?.trim_end();
            let name = name.rsplit([' ', '*']).next()?;
            Some(name.to_string())
        })
        .collect()
}

/// Functions a shared library defines in its dynamic symbol table.
fn exported(lib: &str) -> BTreeSet<String> {
    let path = common::release_dir().join(lib);
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&path)
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm failed on {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "T").then(|| name.split('@').next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn snugalloc_h_matches_libsnugalloc_so() {
    let header = declared("snugalloc.h");
    let lib = exported("libsnugalloc.so");
    println!("declared: {header:?}\nexported: {lib:?}");
    assert_eq!(
        header, lib,
        "include/snugalloc.h and libsnugalloc.so disagree"
    );
    for f in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "snugalloc_stats",
        "snugalloc_print_stats",
    ] {
        assert!(lib.contains(f), "{f} is not exported");
    }
}

#[test]
fn snugalloc_oe_h_matches_libsnugalloc_oe_so() {
    let header = declared("snugalloc_oe.h");
    let lib = exported("libsnugalloc_oe.so");
    println!("declared: {header:?}\nexported: {lib:?}");
    assert_eq!(
        header, lib,
        "include/snugalloc_oe.h and libsnugalloc_oe.so disagree"
    );
    assert_eq!(
        lib.len(),
        13,
        "11 required oe_allocator_* functions, mallinfo, snugalloc_stats"
    );
    for name in &lib {
        assert!(
            name.starts_with("oe_allocator_") || name == "snugalloc_stats",
            "libsnugalloc_oe.so must export only oe_allocator_* and snugalloc_stats, not {name}"
        );
    }
}

#[test]
fn headers_compile_as_c_and_cxx() {
    let include = common::root().join("include");
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        if Command::new(compiler).arg("--version").output().is_err() {
            println!("SKIPPED: {compiler} is not installed");
            continue;
        }
        for header in ["snugalloc.h", "snugalloc_oe.h"] {
            let src = format!("#include <stdlib.h>\n#include \"{header}\"\n#include \"{header}\"\nint main(void) {{ return 0; }}\n");
            let mut child = Command::new(compiler)
                .args([
                    "-x",
                    lang,
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-fsyntax-only",
                    "-I",
                ])
                .arg(&include)
                .arg("-")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(src.as_bytes())
                .unwrap();
            assert!(
                child.wait().unwrap().success(),
                "{header} does not compile as {lang}"
            );
        }
    }
    // Both headers together (the OE one skips what snugalloc.h declares).
    let status = Command::new("cc")
        .args(["-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(&include)
        .arg("-x")
        .arg("c")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"#include \"snugalloc.h\"\n#include \"snugalloc_oe.h\"\nint main(void){struct snugalloc_stats s; snugalloc_stats(&s); return 0;}\n")?;
            c.wait()
        })
        .unwrap();
    assert!(status.success());
}
