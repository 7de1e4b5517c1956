//! Runs the loom model checks of the lock-free structures (`.ci/loom`) as
//! part of the normal test suite, in their own target directory, since
//! `--cfg loom` changes how every crate is built. The models are small
//! enough that loom explores every interleaving in a few seconds; the build
//! takes a few minutes the first time.

use std::process::Command;

#[test]
fn loom_models_of_the_backend_inbox_half_chunks_depot_and_oe_threads_pass() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "--cfg loom")
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/loom"),
        )
        .args([
            "test",
            "-p",
            "snugalloc",
            "-p",
            "snugalloc-oe",
            "--lib",
            "--release",
            "loom_tests",
        ])
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loom models failed:\n{stdout}\n{stderr}"
    );
    let passed = stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with(" ok"))
        .count();
    assert!(
        passed >= 15,
        "expected the 15 loom models (14 of the core, 1 of the Open Enclave thread table) to run, saw {passed}:\n{stdout}"
    );
}
