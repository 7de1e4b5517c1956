//! Runs the core's unit tests and its heap, stress and shadow tests once
//! more in a build with debug assertions and overflow checks (the dev
//! profile at `opt-level` 1, for speed), in a target directory of its own.
//! The README's test command builds with `--release`, where the
//! allocator's internal checks are compiled out: the slab and bin
//! invariants checked at every detach (`Allocator::check_invariants`),
//! chunks proven free before they are handed out
//! (`Pagemap::debug_assert_free`), frees of chunks not in use, and
//! arithmetic overflow. Here they run under the stress and shadow
//! workloads.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the nested run may take (a cold build included) before it is
/// killed and the test fails, rather than hold up CI without a word.
const LIMIT: Duration = Duration::from_secs(20 * 60);

#[test]
fn the_core_passes_its_tests_with_internal_checks_on() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(root).join("target"), PathBuf::from)
        .join("debug-checks");
    let log = target.with_extension("log");
    std::fs::create_dir_all(&target).expect("target directory");
    let out_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(cargo)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_DEV_OPT_LEVEL", "1")
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
        .stdout(out_file.try_clone().expect("log file"))
        .stderr(out_file)
        .stdin(Stdio::null())
        .spawn()
        .expect("run cargo");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "debug-build tests still running after {LIMIT:?}; output in {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log).expect("read the log");
    assert!(status.success(), "debug-build tests failed:\n{output}");
    // Four test binaries ran, and none ran zero tests.
    let results: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("test result: ok."))
        .collect();
    assert_eq!(results.len(), 4, "{output}");
    assert!(
        results
            .iter()
            .all(|l| !l.starts_with("test result: ok. 0 passed")),
        "{output}"
    );
}
