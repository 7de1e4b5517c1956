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

/// Exported under the names glibc gives them, and declared by
/// `<malloc.h>`, not by our header (which would clash with it).
const GLIBC_NAMES: [&str; 15] = [
    "__libc_malloc",
    "__libc_free",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__libc_mallinfo",
    "__libc_mallopt",
    "mallinfo",
    "mallinfo2",
    "malloc_trim",
    "malloc_stats",
    "malloc_info",
    "mallopt",
];

#[test]
fn snugalloc_h_matches_libsnugalloc_so() {
    let header = declared("snugalloc.h");
    let mut lib = exported("libsnugalloc.so");
    println!("declared: {header:?}\nexported: {lib:?}");
    for f in GLIBC_NAMES {
        assert!(lib.remove(f), "{f} is not exported");
    }
    assert_eq!(
        header, lib,
        "include/snugalloc.h and libsnugalloc.so disagree (besides glibc's names)"
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
        "cfree",
        "free_sized",
        "free_aligned_sized",
        "snugalloc_stats",
        "snugalloc_stats_sized",
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
        14,
        "11 required oe_allocator_* functions, mallinfo, snugalloc_stats, snugalloc_stats_sized"
    );
    for name in &lib {
        assert!(
            name.starts_with("oe_allocator_")
                || name == "snugalloc_stats"
                || name == "snugalloc_stats_sized",
            "libsnugalloc_oe.so must export only oe_allocator_* and the two statistics calls, not {name}"
        );
    }
}

#[test]
fn headers_compile_as_c_and_cxx() {
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        if Command::new(compiler).arg("--version").output().is_err() {
            common::skipped(&format!("{compiler} is not installed"));
            continue;
        }
        for header in ["snugalloc.h", "snugalloc_oe.h"] {
            let src = format!("#include <stdlib.h>\n#include \"{header}\"\n#include \"{header}\"\nint main(void) {{ return 0; }}\n");
            assert!(
                compiles(compiler, lang, &[], &src),
                "{header} does not compile as {lang}"
            );
        }
    }
    // Both headers together (the OE one skips what snugalloc.h declares).
    assert!(compiles(
        "cc",
        "c",
        &[],
        "#include \"snugalloc.h\"\n#include \"snugalloc_oe.h\"\nint main(void){struct snugalloc_stats s; snugalloc_stats(&s); return 0;}\n"
    ));
}

/// Global symbols an archive's members define and those they leave
/// undefined, from `readelf -sW` (`nm` reports no symbols for members that
/// carry LLVM bitcode it cannot read).
fn archive_symbols(path: &std::path::Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new("readelf")
        .arg("-sW")
        .arg(path)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf failed on {}", path.display());
    let (mut defined, mut undefined) = (BTreeSet::new(), BTreeSet::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Num: Value Size Type Bind Vis Ndx Name
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || !f[0].ends_with(':') || !matches!(f[4], "GLOBAL" | "WEAK") {
            continue;
        }
        let name = f[7].to_string();
        if f[6] == "UND" {
            undefined.insert(name);
        } else {
            defined.insert(name);
        }
    }
    assert!(
        defined.len() > 100,
        "readelf found too few symbols: {defined:?}"
    );
    (defined, undefined)
}

/// The enclave build (`--features enclave`: no Rust std) links into an
/// enclave: its static library needs nothing from outside but `abort` and
/// the mem* functions every C library has, and defines no malloc family.
#[test]
fn enclave_build_needs_only_abort_and_mem_functions() {
    let lib = common::enclave_lib();
    let dir = lib
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/enclave-check");
    let (defined, undefined) = archive_symbols(lib);
    let external: BTreeSet<&String> = undefined.difference(&defined).collect();
    println!("external symbols: {external:?}");
    let allowed = [
        "abort",
        "memcpy",
        "memmove",
        "memset",
        "memcmp",
        "bcmp",
        "__errno_location",
    ];
    for name in &external {
        assert!(
            allowed.contains(&name.as_str()),
            "the enclave library needs {name} from outside (allowed: {allowed:?})"
        );
    }
    assert!(
        external.iter().any(|n| *n == "abort"),
        "panics must go to abort"
    );
    assert!(
        external.iter().any(|n| *n == "__errno_location"),
        "failures must set errno"
    );
    for f in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "dlmalloc",
        "posix_memalign",
    ] {
        assert!(!defined.contains(f), "the enclave library defines {f}");
    }
    for f in [
        "oe_allocator_init",
        "oe_allocator_malloc",
        "oe_allocator_mallinfo",
    ] {
        assert!(defined.contains(f), "the enclave library lacks {f}");
    }
    // And it links: a C program over a static buffer, like an enclave's heap.
    let exe = dir.join("enclave-link-check");
    let src = r#"
#include <stdint.h>
#include <string.h>
#include "snugalloc_oe.h"
static _Alignas(4096) unsigned char heap[8 << 20];
int main(void) {
    oe_allocator_init(heap, heap + sizeof heap);
    oe_allocator_thread_init();
    char *p = oe_allocator_malloc(1000);
    if (!p || (unsigned char *)p < heap || (unsigned char *)p >= heap + sizeof heap) return 1;
    memset(p, 7, 1000);
    oe_allocator_free(p);
    if (oe_allocator_malloc(sizeof heap)) return 2;
    oe_allocator_thread_cleanup();
    oe_allocator_cleanup();
    return 0;
}
"#;
    link_with_enclave_lib(lib, &exe, src);
    let status = Command::new(&exe).status().expect("runs");
    assert!(status.success(), "the linked program failed: {status}");
}

/// An enclave cannot print a fatal error: the enclave build copies its
/// message to `snugalloc_oe_fatal_message` before it calls `abort`, where
/// an abort handler (here) or a debugger finds it.
#[test]
fn enclave_build_leaves_the_fatal_message_for_the_abort_handler() {
    let lib = common::enclave_lib();
    let dir = lib
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/enclave-check");
    let exe = dir.join("enclave-fatal-check");
    let src = r#"
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include "snugalloc_oe.h"
static _Alignas(4096) unsigned char heap[8 << 20];
static void on_abort(int sig) {
    (void)sig;
    if (snugalloc_oe_fatal_message[0] == 0) _exit(4);
    write(2, snugalloc_oe_fatal_message, strlen(snugalloc_oe_fatal_message));
    write(2, "\n", 1);
    _exit(3);
}
int main(void) {
    signal(SIGABRT, on_abort);
    oe_allocator_init(heap, heap + sizeof heap);
    oe_allocator_thread_init();
    if (snugalloc_oe_fatal_message[0] != 0) return 1;
    char *p = oe_allocator_malloc(1000);
    if (!p) return 2;
    oe_allocator_free(p + 16);
    return 0;
}
"#;
    link_with_enclave_lib(lib, &exe, src);
    let out = Command::new(&exe).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the misuse must reach abort with a message (4: empty message); stderr: {stderr}"
    );
    assert!(
        stderr.starts_with(
            "snugalloc: fatal: free: pointer is not the start of an object (pointer 0x"
        ),
        "message: {stderr}"
    );
}

/// Compiles the C program `src` (GNU C11, with `include/` on the path)
/// and links it with the enclave library `lib` into `exe`.
fn link_with_enclave_lib(lib: &std::path::Path, exe: &std::path::Path, src: &str) {
    use std::io::Write;
    let mut cc = Command::new("cc")
        .args(["-x", "c", "-std=gnu11", "-I"])
        .arg(common::root().join("include"))
        .args(["-", "-x", "none"])
        .arg(lib)
        .arg("-o")
        .arg(exe)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cc runs");
    cc.stdin
        .take()
        .expect("stdin")
        .write_all(src.as_bytes())
        .expect("write");
    assert!(
        cc.wait().expect("cc").success(),
        "linking the enclave library failed"
    );
}

/// Whether `src` compiles (syntax and types only) as `lang` with `-Wall
/// -Wextra -Werror`, with `include/` and `extra` on the include path;
/// prints the compiler's complaints when it does not.
fn compiles(compiler: &str, lang: &str, extra: &[&std::path::Path], src: &str) -> bool {
    use std::io::Write;
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
        .arg(common::root().join("include"))
        .args(
            extra
                .iter()
                .flat_map(|dir| [std::ffi::OsStr::new("-I"), dir.as_os_str()]),
        )
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the C compiler runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(src.as_bytes())
        .expect("the source is written");
    child.wait().expect("the compiler finishes").success()
}

/// Stand-ins for Open Enclave's headers, written for this test: the include
/// guards, types and declarations an enclave build sees (as in OE 0.19:
/// `oe_result_t` an enum with `OE_UNSUPPORTED` 16, guard
/// `_OE_BITS_RESULT_H`), and an `enclave.h` that brings in the result codes
/// but not `mallinfo.h`.
fn fake_openenclave(dir: &std::path::Path) {
    let files = [
        (
            "openenclave/bits/result.h",
            "#ifndef _OE_BITS_RESULT_H\n#define _OE_BITS_RESULT_H\n\
             typedef enum _oe_result { OE_OK, OE_FAILURE, OE_UNSUPPORTED = 16, \
             __OE_RESULT_MAX = 0x7fffffff } oe_result_t;\n#endif\n",
        ),
        (
            "openenclave/enclave.h",
            "#ifndef _OE_ENCLAVE_H\n#define _OE_ENCLAVE_H\n#include <openenclave/bits/result.h>\n#endif\n",
        ),
        (
            "openenclave/advanced/mallinfo.h",
            "#ifndef OE_ADVANCED_MALLINFO_H\n#define OE_ADVANCED_MALLINFO_H\n#include <stddef.h>\n\
             #include <openenclave/bits/result.h>\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\
             typedef struct _oe_mallinfo { size_t max_total_heap_size; \
             size_t current_allocated_heap_size; size_t peak_allocated_heap_size; } oe_mallinfo_t;\n\
             oe_result_t oe_allocator_mallinfo(oe_mallinfo_t* info);\n\
             #ifdef __cplusplus\n}\n#endif\n#endif\n",
        ),
        (
            "openenclave/advanced/allocator.h",
            "#ifndef OE_ADVANCED_ALLOCATOR_H\n#define OE_ADVANCED_ALLOCATOR_H\n#include <stddef.h>\n\
             #ifdef __cplusplus\nextern \"C\" {\n#endif\n\
             void oe_allocator_init(void* heap_start_address, void* heap_end_address);\n\
             void oe_allocator_cleanup(void);\nvoid oe_allocator_thread_init(void);\n\
             void oe_allocator_thread_cleanup(void);\nvoid* oe_allocator_malloc(size_t size);\n\
             void oe_allocator_free(void* ptr);\nvoid* oe_allocator_calloc(size_t nmemb, size_t size);\n\
             void* oe_allocator_realloc(void* ptr, size_t size);\n\
             void* oe_allocator_aligned_alloc(size_t alignment, size_t size);\n\
             int oe_allocator_posix_memalign(void** memptr, size_t alignment, size_t size);\n\
             size_t oe_allocator_malloc_usable_size(void* ptr);\n\
             #ifdef __cplusplus\n}\n#endif\n#endif\n",
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(path, text).expect("a stand-in header is written");
    }
}

#[test]
fn headers_work_in_either_order_and_beside_open_enclaves() {
    let dir = common::scratch_dir("oe-headers");
    let with_oe = dir.join("with");
    let without_oe = dir.join("without");
    std::fs::create_dir_all(&without_oe).expect("mkdir");
    fake_openenclave(&with_oe);
    let body = "int main(void) { oe_mallinfo_t m; struct snugalloc_stats s; \
                snugalloc_stats(&s); return oe_allocator_mallinfo(&m) == OE_OK \
                && OE_UNSUPPORTED == 16 ? 0 : 1; }\n";
    let cases = [
        ("ours in either order", &without_oe, "#include \"snugalloc_oe.h\"\n#include \"snugalloc.h\"\n"),
        ("ours in either order", &without_oe, "#include \"snugalloc.h\"\n#include \"snugalloc_oe.h\"\n"),
        ("OE's result codes first", &with_oe, "#include <openenclave/enclave.h>\n#include \"snugalloc_oe.h\"\n"),
        (
            "OE's headers after ours",
            &with_oe,
            "#include \"snugalloc_oe.h\"\n#include <openenclave/enclave.h>\n\
             #include <openenclave/advanced/mallinfo.h>\n#include <openenclave/advanced/allocator.h>\n",
        ),
        (
            "OE's headers before ours",
            &with_oe,
            "#include <openenclave/advanced/allocator.h>\n#include <openenclave/advanced/mallinfo.h>\n\
             #include \"snugalloc_oe.h\"\n#include \"snugalloc.h\"\n",
        ),
    ];
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        if Command::new(compiler).arg("--version").output().is_err() {
            common::skipped(&format!("{compiler} is not installed"));
            continue;
        }
        for (what, include, headers) in cases {
            assert!(
                compiles(compiler, lang, &[include], &format!("{headers}{body}")),
                "{what} does not compile as {lang}:\n{headers}"
            );
        }
    }
}
