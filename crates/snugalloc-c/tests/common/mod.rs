//! Shared by the integration tests: builds the release libraries once,
//! compiles C programs with the system compiler, runs programs and checks
//! their output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        None => root().join("target"),
    }
}

/// `target/release`, after making sure `libsnugalloc` and `libsnugalloc_oe`
/// there are up to date (runs `cargo build --release` for both crates once
/// per test binary).
pub fn release_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(root())
            .args(["build", "--release", "-p", "snugalloc-c", "-p", "snugalloc-oe"])
            .status()
            .unwrap_or_else(|e| panic!("could not run `{cargo} build --release`: {e}"));
        assert!(
            status.success(),
            "`cargo build --release -p snugalloc-c -p snugalloc-oe` failed; the C tests need target/release/libsnugalloc.so"
        );
        let dir = target_dir().join("release");
        for lib in ["libsnugalloc.so", "libsnugalloc.a", "libsnugalloc_oe.so", "libsnugalloc_oe.a"] {
            assert!(dir.join(lib).exists(), "{} is missing after the build", dir.join(lib).display());
        }
        dir
    })
}

/// `libsnugalloc_oe.a` as an enclave links it: built with the `enclave`
/// feature (no Rust std) on its own, in `target/enclave-check`, so that no
/// other workspace member's features leak into it (once per test binary).
pub fn enclave_lib() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = root().join("target").join("enclave-check");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(root())
            .args([
                "build",
                "-p",
                "snugalloc-oe",
                "--release",
                "--features",
                "enclave",
            ])
            .arg("--target-dir")
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("could not run `{cargo} build`: {e}"));
        assert!(status.success(), "the enclave build failed");
        dir.join("release").join("libsnugalloc_oe.a")
    })
}

/// `target/release/libsnugalloc.so`.
pub fn preload_lib() -> PathBuf {
    release_dir().join("libsnugalloc.so")
}

/// Where compiled test programs go.
fn out_dir() -> PathBuf {
    let dir = target_dir().join("c-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An empty directory `name` under the C tests' output directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = out_dir().join(name);
    // A leftover from an earlier run goes first; a missing one is fine.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the scratch directory is created");
    dir
}

/// How a C test program gets its allocator.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// Nothing extra: glibc's malloc unless preloaded.
    Plain,
    /// `-lsnugalloc` (the shared library, found through an rpath).
    Shared,
    /// `libsnugalloc.a` linked in.
    Static,
    /// `-lsnugalloc_oe`.
    Oe,
    /// The enclave build of `libsnugalloc_oe.a` ([`enclave_lib`]) linked in.
    OeEnclave,
}

/// Compiles `tests/c/<name>.c` into an executable and returns its path.
pub fn compile(name: &str, link: Link) -> PathBuf {
    let lib = release_dir();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let exe = out_dir().join(format!("{name}-{link:?}").to_lowercase());
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args([
        "-O2",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-use-after-free",
        "-fno-builtin",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg(&src)
    .arg("-o")
    .arg(&exe);
    let rpath = format!("-Wl,-rpath,{}", lib.display());
    match link {
        Link::Plain => {}
        Link::Shared => {
            cc.arg("-L").arg(lib).args(["-lsnugalloc", &rpath]);
        }
        Link::Static => {
            cc.arg(lib.join("libsnugalloc.a")).args(["-ldl", "-lm"]);
        }
        Link::Oe => {
            cc.arg("-L").arg(lib).args(["-lsnugalloc_oe", &rpath]);
        }
        Link::OeEnclave => {
            cc.arg(enclave_lib());
        }
    }
    cc.arg("-lpthread");
    let out = cc.output().expect("the system C compiler (cc) runs");
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `cmd`, prints its output, and fails the test unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("$ {cmd:?}\n{stdout}{stderr}");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    out
}

/// The first of `candidates` that exists as a file, or `None` (with a
/// printed message naming the package to install) so that the caller can
/// skip.
pub fn find_program(candidates: &[&str], package: &str) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        skipped(&format!(
            "{} is not installed (apt-get install -y {package})",
            candidates.join(" or ")
        ));
    }
    found
}

/// Says on the real standard error (which the test harness does not
/// capture, unlike `println!`) that a test skipped part of its work, so a
/// passing run without the programs does not look like a full one. With
/// `SNUGALLOC_TEST_REQUIRE_ALL=1` (set by `.ci/run` after it installed
/// the packages) a skip is a failure instead: there the programs must be
/// present, and a test that silently ran on nothing would pass.
pub fn skipped(why: &str) {
    if std::env::var_os("SNUGALLOC_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{why}, and SNUGALLOC_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
}
