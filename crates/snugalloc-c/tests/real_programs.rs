//! Real programs under `LD_PRELOAD=target/release/libsnugalloc.so`, each
//! once on the default OS heap and once on a fixed heap
//! (`SNUGALLOC_HEAP_SIZE`), checked against the same run under glibc or
//! against their own test suites. A program that is not installed is
//! skipped with a printed message; CI installs them with
//!   apt-get install -y python3 libpython3.11-testsuite sqlite3 redis-server redis-tools

mod common;

use common::{find_program, preload_lib, run_ok};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's python3 (not a pyenv shim earlier in PATH): its test suite
/// comes from the libpython3.X-testsuite package.
const PYTHON: &str = "/usr/bin/python3";
/// Large enough for the workloads below (sqlite3 peaks near 500 MB live).
const FIXED_HEAP: &str = "1G";

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// Modes: (label, extra environment) — the OS heap and a fixed heap.
fn modes() -> [(&'static str, Vec<(&'static str, &'static str)>); 2] {
    [
        ("os heap", vec![]),
        ("fixed heap", vec![("SNUGALLOC_HEAP_SIZE", FIXED_HEAP)]),
    ]
}

fn preloaded(program: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", preload_lib());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A preloaded program really allocated with snugalloc: with
/// `SNUGALLOC_STATS=1` the library prints its table at exit (a preload that
/// did not take would run on glibc and pass unnoticed).
fn assert_ran_on_snugalloc(stderr: &[u8], program: &str) {
    let stderr = String::from_utf8_lossy(stderr);
    assert!(
        stderr.contains("snugalloc statistics:"),
        "{program} printed no snugalloc statistics: was the library preloaded?\n{stderr}"
    );
}

#[test]
fn python_allocation_heavy_script() {
    let Some(python) = find_program(&[PYTHON], "python3") else {
        return;
    };
    let script = programs_dir().join("alloc_heavy.py");
    let expected = run_ok(Command::new(&python).arg(&script)).stdout;
    for (label, env) in modes() {
        // PYTHONMALLOC=malloc sends every object through malloc, not just
        // pymalloc's arenas and large objects.
        for pymalloc in ["malloc", "pymalloc"] {
            let out = run_ok(
                preloaded(&python, &env)
                    .arg(&script)
                    .env("PYTHONMALLOC", pymalloc)
                    .env("SNUGALLOC_STATS", "1"),
            );
            assert_ran_on_snugalloc(&out.stderr, "python");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&expected),
                "python output differs from glibc's ({label}, PYTHONMALLOC={pymalloc})"
            );
        }
    }
}

#[test]
fn python_regression_tests() {
    let Some(python) = find_program(&[PYTHON], "python3") else {
        return;
    };
    let has_suite = Command::new(&python)
        .args(["-c", "import test.libregrtest"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_suite {
        common::skipped(
            "python3's test suite is not installed (apt-get install -y libpython3.11-testsuite)",
        );
        return;
    }
    let suites: [&[&str]; 2] = [
        &[
            "test_dict",
            "test_list",
            "test_set",
            "test_bytes",
            "test_json",
            "test_gc",
        ],
        &["test_dict", "test_json", "test_gc"],
    ];
    for ((label, env), tests) in modes().into_iter().zip(suites) {
        println!("python regression tests, {label}");
        let out = run_ok(
            preloaded(&python, &env)
                .current_dir(std::env::temp_dir())
                .env("PYTHONMALLOC", "malloc")
                .args(["-m", "test", "-q"])
                .args(tests),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("SUCCESS"),
            "python regression tests ({label}):\n{stdout}"
        );
    }
}

#[test]
fn sqlite3_inserts_indexes_queries() {
    let Some(sqlite) = find_program(&["/usr/bin/sqlite3"], "sqlite3") else {
        return;
    };
    let sql = std::fs::read(programs_dir().join("workload.sql")).unwrap();
    let run = |cmd: &mut Command| {
        use std::io::Write;
        let mut child = cmd
            .arg(":memory:")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sqlite3 starts");
        child.stdin.take().unwrap().write_all(&sql).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (expected, _) = run(&mut Command::new(&sqlite));
    assert!(expected.contains("200000|"), "{expected}");
    assert!(
        expected.trim_end().ends_with("ok"),
        "integrity_check: {expected}"
    );
    for (label, env) in modes() {
        let (got, stderr) = run(preloaded(&sqlite, &env).env("SNUGALLOC_STATS", "1"));
        assert_ran_on_snugalloc(stderr.as_bytes(), "sqlite3");
        assert_eq!(
            got, expected,
            "sqlite3 output differs from glibc's ({label})"
        );
        println!(
            "sqlite3 ({label}): {} result lines identical to glibc's",
            got.lines().count()
        );
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, whatever happens.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> String {
    let out = run_ok(
        Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_server_under_redis_benchmark() {
    let (Some(server), Some(bench), Some(cli)) = (
        find_program(&["/usr/bin/redis-server"], "redis-server"),
        find_program(&["/usr/bin/redis-benchmark"], "redis-tools"),
        find_program(&["/usr/bin/redis-cli"], "redis-tools"),
    ) else {
        return;
    };
    for (label, env) in modes() {
        let port = free_port();
        let mut server = Server(
            preloaded(&server, &env)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server starts"),
        );
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not listen on {port}"
            );
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "redis-server exited ({label})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "redis-server exited ({label}; was the port {port} taken meanwhile?)"
        );
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.0.id()))
            .expect("redis-server's memory map");
        assert!(
            maps.contains("libsnugalloc.so"),
            "redis-server runs without libsnugalloc.so mapped ({label})"
        );
        let out = run_ok(Command::new(&bench).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "20000",
            "-c",
            "20",
            "-r",
            "50000",
            "-d",
            "300",
            "-t",
            "set,get,incr,lpush,rpop,sadd,hset,lrange_100,mset",
        ]));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.matches("requests per second").count() >= 9,
            "redis-benchmark ({label}):\n{report}"
        );
        // The server still answers, with the right data.
        assert_eq!(redis_cli(&cli, port, &["PING"]), "PONG");
        let big = "z".repeat(100_000);
        assert_eq!(redis_cli(&cli, port, &["SET", "k1", &big]), "OK");
        assert_eq!(redis_cli(&cli, port, &["GET", "k1"]), big);
        assert_eq!(redis_cli(&cli, port, &["APPEND", "k1", "tail"]), "100004");
        assert_eq!(redis_cli(&cli, port, &["STRLEN", "k1"]), "100004");
        let dbsize: usize = redis_cli(&cli, port, &["DBSIZE"]).parse().unwrap();
        assert!(dbsize > 1000, "{dbsize} keys after the benchmark");
        assert_eq!(redis_cli(&cli, port, &["FLUSHALL"]), "OK");
        assert_eq!(redis_cli(&cli, port, &["DBSIZE"]), "0");
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "redis-server died ({label})"
        );
        println!("redis ({label}): benchmark passed, {dbsize} keys, flushed");
        drop(server);
    }
}
