//! Runs the core's unit tests and its heap, stress and shadow tests once
//! more in a debug build, in their own target directory. The README's test
//! command builds with `--release`, where the allocator's internal checks
//! are compiled out: the slab and bin invariants checked at every detach
//! (`Allocator::check_invariants`), chunks proven free before they are
//! handed out (`Pagemap::debug_assert_free`), frees of chunks not in use,
//! and arithmetic overflow. Here they run under the stress and shadow
//! workloads.

use std::process::Command;

#[test]
fn the_core_passes_its_tests_with_internal_checks_on() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(cargo)
        .current_dir(root)
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/debug-checks"),
        )
        .args([
            "test",
            "-p",
            "snugalloc",
            "--lib",
            "--test",
            "heap",
            "--test",
            "stress",
            "--test",
            "shadow",
        ])
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "debug-build tests failed:\n{stdout}\n{stderr}"
    );
    // Four test binaries ran, and none ran zero tests.
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result: ok."))
        .collect();
    assert_eq!(results.len(), 4, "{stdout}");
    assert!(
        results
            .iter()
            .all(|l| !l.starts_with("test result: ok. 0 passed")),
        "{stdout}"
    );
}
