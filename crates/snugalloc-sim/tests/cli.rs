//! The command line as a user meets it: bad input exits with code 2 and one
//! line naming the flag; a corrupted block fails the run.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snugalloc-sim"))
        .args(args)
        .output()
        .expect("the simulator binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_bad_input(args: &[&str], flag: &str, allowed: &str) {
    let (code, _out, err) = sim(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.contains(flag), "{args:?}: does not name {flag}: {err}");
    assert!(
        err.contains(allowed),
        "{args:?}: does not say what is allowed ({allowed}): {err}"
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    assert_bad_input(&["run", "--alloc", "nosuch"], "--alloc", "dlmalloc");
    assert_bad_input(
        &["run", "--workload", "nosuch"],
        "--workload",
        "ecall-churn",
    );
    assert_bad_input(&["run", "--heap", "64Q"], "--heap", "64M");
    assert_bad_input(&["run", "--duration", "5y"], "--duration", "20s");
    assert_bad_input(
        &["run", "--alloc", "dlmalloc", "--heap", "256k"],
        "--heap",
        "at least",
    );
    assert_bad_input(
        &["run", "--worker-mix", "1,2,3"],
        "--worker-mix",
        "70,20,8,2",
    );
    assert_bad_input(
        &["min-heap", "--alloc", "dlmalloc", "--max-heap", "100k"],
        "--max-heap",
        "at least",
    );
    assert_bad_input(
        &["min-heap", "--alloc", "dlmalloc", "--max-heap", "1500k"],
        "--max-heap",
        "whole number of MiB",
    );
    assert_bad_input(&["run", "--pace", "fast"], "--pace", "500k");
    assert_bad_input(&["min-heap", "--pace", "0"], "--pace", "500k");
    assert_bad_input(&["run", "--repeat", "0"], "--repeat", "1 to 1000");
    assert_bad_input(
        &["run", "--alloc", "snugalloc:colour=blue"],
        "--alloc",
        "chunk",
    );
    let (code, _, err) = sim(&["run", "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"));
}

/// A small ecall-churn (two workers, a 1-2 MiB store, 300 ms) that damages
/// every 50th block's guard.
const SMALL_CORRUPTING: [&str; 14] = [
    "--workload",
    "ecall-churn",
    "--workers",
    "2",
    "--others",
    "0",
    "--store-min",
    "1M",
    "--store-max",
    "2M",
    "--duration",
    "300ms",
    "--inject-corruption-every",
    "50",
];

#[test]
fn corruption_is_detected_and_fails_the_run() {
    let dir = std::env::temp_dir().join(format!("snugalloc-sim-test-{}", std::process::id()));
    let out = dir.to_str().expect("utf-8 temp dir");
    let (code, stdout, err) = sim(&[
        &["run", "--alloc", "dlmalloc", "--heap", "32M", "--no-plot"],
        &SMALL_CORRUPTING[..],
        &["--out", out],
    ]
    .concat());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {err}");
    assert!(err.contains("corruption: block"), "{err}");
    assert!(err.contains("FAILED: dlmalloc"), "{err}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| dlmalloc"))
        .expect("summary row");
    let corrupt: u64 = row
        .trim_end_matches(" |")
        .rsplit('|')
        .next()
        .expect("cell")
        .trim()
        .parse()
        .expect("count");
    assert!(corrupt > 0, "{row}");
}

/// A min-heap probe that corrupts data fails the search (exit 1), rather
/// than counting as a heap too small to run in.
#[test]
fn corruption_fails_a_min_heap_search() {
    let dir = std::env::temp_dir().join(format!("snugalloc-sim-mh-{}", std::process::id()));
    let out = dir.to_str().expect("utf-8 temp dir");
    let (code, stdout, err) = sim(&[
        &["min-heap", "--alloc", "dlmalloc", "--max-heap", "8M"],
        &SMALL_CORRUPTING[..],
        &["--out", out],
    ]
    .concat());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {err}");
    assert!(err.contains("min-heap FAILED: dlmalloc at 8 MiB"), "{err}");
    assert!(
        !stdout.contains("| dlmalloc |"),
        "an answer was printed: {stdout}"
    );
}

#[test]
fn a_clean_run_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("snugalloc-sim-clean-{}", std::process::id()));
    let out = dir.to_str().expect("utf-8 temp dir");
    let (code, stdout, err) = sim(&[
        "run",
        "--workload",
        "churn",
        "--alloc",
        "dlmalloc,firstfit",
        "--heap",
        "16M",
        "--churn-threads",
        "2",
        "--duration",
        "300ms",
        "--no-plot",
        "--out",
        out,
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {err}");
    let csv = std::fs::read_to_string(dir.join("churn.csv")).expect("csv");
    assert!(csv.starts_with("alloc,t_s,requested_bytes,reserved_bytes,ops_per_s"));
    assert!(csv.lines().any(|l| l.starts_with("firstfit,")));
    let json = std::fs::read_to_string(dir.join("churn.json")).expect("json");
    assert!(json.contains("\"peak_reserved_bytes\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeated_rounds_print_their_table_and_still_fail_on_corruption() {
    let dir = std::env::temp_dir().join(format!("snugalloc-sim-repeat-{}", std::process::id()));
    let out = dir.to_str().expect("utf-8 temp dir");
    let args = [
        "run",
        "--workload",
        "churn",
        "--alloc",
        "snugalloc,dlmalloc",
        "--heap",
        "16M",
        "--churn-threads",
        "2",
        "--duration",
        "200ms",
        "--repeat",
        "3",
        "--no-plot",
        "--out",
        out,
    ];
    let (code, stdout, err) = sim(&args);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {err}");
    assert!(stdout.contains("throughput over 3 rounds"), "{stdout}");
    // Each allocator ran three times, near, far or in between.
    for alloc in ["snugalloc", "dlmalloc"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {alloc} | ")) && l.matches('/').count() >= 2)
            .unwrap_or_else(|| panic!("no rounds row for {alloc}: {stdout}"));
        let counts: Vec<usize> = row
            .split('|')
            .nth(2)
            .expect("runs column")
            .trim()
            .split('/')
            .map(|n| n.parse().expect("a count"))
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 3, "{row}");
    }
    let json = std::fs::read_to_string(dir.join("churn-rounds.json")).expect("rounds json");
    assert_eq!(json.matches("\"round\"").count(), 6, "{json}");
    // With rounds as without, corruption fails the command. (Here the first
    // round already fails; a failure in a later round alone goes through
    // `RoundsEnd::failures`, which no flag can inject by itself.)
    let mut corrupting = args.to_vec();
    corrupting.extend(["--inject-corruption-every", "50"]);
    let (code, _, err) = sim(&corrupting);
    assert_eq!(code, 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
