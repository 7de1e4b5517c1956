#!/usr/bin/python3
"""Benchmark: real programs under each allocator, in the same run.

Workloads (each a named purpose):
  python  - tests/programs/alloc_heavy.py (allocation-heavy interpreter work)
  sqlite  - tests/programs/workload.sql on an in-memory database
  redis   - redis-benchmark against redis-server, then a mixed-size keyspace
            (~150 MB): fill, delete a random 80%, refill, FLUSHALL, and RSS
            right after and 10 s later. The keyspace is the same for every
            allocator (seeded), so the refill RSS compares resident memory
            per live byte directly ("x best"); Redis's used_memory counts
            malloc_usable_size, which is allocator-dependent, so RSS/used
            is not a per-live-byte figure.
Allocators: glibc (through a preloaded forwarding shim, since Debian's
redis-server links jemalloc), jemalloc, mimalloc, tcmalloc (Debian's
packages) and snugalloc (target/release/libsnugalloc.so), all preloaded.

Usage (from the workspace root, after `cargo build --release`):
  /usr/bin/python3 crates/snugalloc-c/bench/real_programs.py [--quick] [--rounds N]
      [--programs python,sqlite,redis]
Rounds (default 3, 1 with --quick) run every allocator once each, in turn,
so load on a shared machine falls on all of them alike; CPU times are the
minimum over the rounds (the run least disturbed by other work), with the
median beside it ("median x best": each median over the lowest median),
memory figures come from the last round. The "x best" columns divide each CPU
time by the lowest of that program.
Needs: apt-get install -y python3 sqlite3 redis-server redis-tools
       libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4
Prints a table and writes target/bench/real_programs.csv.
"""
import csv
import os
import random
import resource
import socket
import subprocess
import sys
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../.."))
PROGRAMS_DIR = os.path.join(HERE, "../tests/programs")
OUT = os.path.join(ROOT, "target/bench")
LIBDIR = "/usr/lib/x86_64-linux-gnu"


def parse_args(argv):
    """(quick, rounds, programs) from the command line; exits with the
    usage on --help and on anything it does not know."""
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        sys.exit(0)
    usage = "allowed: --quick, --rounds N with N >= 1, --programs LIST of python,sqlite,redis, --help"
    quick, rounds, programs, i = False, None, list(ALL_PROGRAMS), 0
    while i < len(argv):
        if argv[i] == "--quick":
            quick = True
        elif argv[i] == "--rounds" and i + 1 < len(argv) and argv[i + 1].isdigit() and int(argv[i + 1]) > 0:
            rounds = int(argv[i + 1])
            i += 1
        elif argv[i] == "--programs" and i + 1 < len(argv):
            programs = argv[i + 1].split(",")
            unknown = [p for p in programs if p not in ALL_PROGRAMS]
            if unknown or not programs:
                sys.exit(f"real_programs.py: unknown program {unknown!r} in --programs ({usage})")
            i += 1
        else:
            sys.exit(f"real_programs.py: unexpected argument {argv[i]!r} ({usage})")
        i += 1
    return quick, rounds if rounds is not None else (1 if quick else 3), programs


ALL_PROGRAMS = ("python", "sqlite", "redis")
QUICK, ROUNDS, PROGRAMS = parse_args(sys.argv[1:])


def build_shim():
    os.makedirs(OUT, exist_ok=True)
    shim = os.path.join(OUT, "libglibcshim.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", os.path.join(HERE, "glibc_shim.c"), "-o", shim, "-ldl"], check=True)
    return shim


def allocators():
    libs = {
        "glibc": build_shim(),
        "jemalloc": os.path.join(LIBDIR, "libjemalloc.so.2"),
        "mimalloc": os.path.join(LIBDIR, "libmimalloc.so.2"),
        "tcmalloc": os.path.join(LIBDIR, "libtcmalloc_minimal.so.4"),
        "snugalloc": os.path.join(ROOT, "target/release/libsnugalloc.so"),
    }
    for name, path in libs.items():
        if not os.path.exists(path):
            sys.exit(f"{name}: {path} is missing (see the usage note)")
    return libs


def env_for(lib):
    env = dict(os.environ)
    env["LD_PRELOAD"] = lib
    return env


def run_rusage(cmd, lib, stdin=None):
    inp = open(stdin, "rb") if stdin else open(os.devnull, "rb")
    pid = os.fork()
    if pid == 0:
        os.dup2(inp.fileno(), 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execve(cmd[0], cmd, env_for(lib))
    _, status, ru = os.wait4(pid, 0)
    inp.close()
    if status != 0:
        raise RuntimeError(f"{cmd} under {lib} exited with {status}")
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(1 << 20)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data
        if line[:1] == b"-":
            raise RuntimeError(line.decode())
        return line[1:]

    def pipeline(self, commands, batch=2000):
        for i in range(0, len(commands), batch):
            chunk = commands[i : i + batch]
            self.sock.sendall(b"".join(self.encode(*c) for c in chunk))
            for _ in chunk:
                self._reply()

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self._reply()


def value_size(rng):
    r = rng.random()
    if r < 0.6:
        return rng.randrange(10, 100)
    if r < 0.9:
        return rng.randrange(100, 1000)
    return rng.randrange(1000, 3000)


def redis_workload(lib, keys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, env=env_for(lib))
    try:
        deadline = time.time() + 20
        while True:
            try:
                r = Redis(port)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        n = "20000" if QUICK else "100000"
        subprocess.run(["/usr/bin/redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q", "-n", n, "-c", "50",
                        "-r", "100000", "-d", "200", "-t", "set,get,incr,lpush,rpop,sadd,hset,lrange_100,mset"],
                       check=True, stdout=subprocess.DEVNULL)
        r.call("FLUSHALL")
        rng = random.Random(7)
        r.pipeline([("SET", f"key:{i}", b"v" * value_size(rng)) for i in range(keys)])
        full_rss = rss_mib(server.pid)
        doomed = rng.sample(range(keys), keys * 8 // 10)
        r.pipeline([("DEL", f"key:{i}") for i in doomed])
        r.pipeline([("SET", f"new:{i}", b"w" * value_size(rng)) for i in range(len(doomed))])
        info = r.call("INFO", "memory").decode()
        used = int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:"))) / 2**20
        refill_rss = rss_mib(server.pid)
        r.call("FLUSHALL")
        time.sleep(0.5)
        flush_rss = rss_mib(server.pid)
        time.sleep(10)
        flush10_rss = rss_mib(server.pid)
        cpu = proc_stat(server.pid)
        peak = rss_mib(server.pid, "VmHWM")
        return dict(cpu=cpu, peak=peak, full=full_rss, used=used, refill=refill_rss, flush=flush_rss,
                    flush10=flush10_rss)
    finally:
        server.kill()
        server.wait()


def main():
    libs = allocators()
    keys = 100_000 if QUICK else 400_000
    rows = {}
    samples = {}
    for rnd in range(ROUNDS):
        for name, lib in libs.items():
            row = dict(allocator=name)
            if "python" in PROGRAMS:
                row["python_cpu_s"], row["python_peak_rss_mib"] = run_rusage(
                    ["/usr/bin/python3", os.path.join(PROGRAMS_DIR, "alloc_heavy.py")], lib)
            if "sqlite" in PROGRAMS:
                row["sqlite_cpu_s"], row["sqlite_peak_rss_mib"] = run_rusage(
                    ["/usr/bin/sqlite3", ":memory:"], lib, stdin=os.path.join(PROGRAMS_DIR, "workload.sql"))
            if "redis" in PROGRAMS:
                rd = redis_workload(lib, keys)
                row.update(redis_cpu_s=rd["cpu"], redis_peak_rss_mib=rd["peak"], redis_full_rss_mib=rd["full"],
                           redis_used_mib=rd["used"], redis_refill_rss_mib=rd["refill"],
                           redis_rss_per_used=rd["refill"] / rd["used"], redis_flush_rss_mib=rd["flush"],
                           redis_flush10_rss_mib=rd["flush10"])
            for prog in PROGRAMS:
                k = f"{prog}_cpu_s"
                samples.setdefault((name, k), []).append(row[k])
                row[k] = min(samples[(name, k)])
                row[f"{prog}_cpu_median_s"] = median(samples[(name, k)])
            rows[name] = row
            print(f"round {rnd + 1}/{ROUNDS} done: {name}", file=sys.stderr)
    rows = list(rows.values())
    for prog in PROGRAMS:
        best = min(r[f"{prog}_cpu_s"] for r in rows)
        best_median = min(r[f"{prog}_cpu_median_s"] for r in rows)
        for r in rows:
            r[f"{prog}_cpu_x_best"] = r[f"{prog}_cpu_s"] / best
            r[f"{prog}_cpu_median_x_best"] = r[f"{prog}_cpu_median_s"] / best_median
    # Refill RSS per live byte: see the module documentation ("redis").
    if "redis" in PROGRAMS:
        best_rss = min(r["redis_refill_rss_mib"] for r in rows)
        for r in rows:
            r["redis_refill_rss_x_best"] = r["redis_refill_rss_mib"] / best_rss
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "real_programs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = [("allocator", "allocator", "{}"), ("python_cpu_s", "py cpu s", "{:.2f}"),
            ("python_cpu_x_best", "x best", "{:.2f}"),
            ("python_cpu_median_x_best", "median x best", "{:.2f}"),
            ("python_peak_rss_mib", "py peak MiB", "{:.0f}"), ("sqlite_cpu_s", "sql cpu s", "{:.2f}"),
            ("sqlite_cpu_x_best", "x best", "{:.2f}"),
            ("sqlite_cpu_median_x_best", "median x best", "{:.2f}"),
            ("sqlite_peak_rss_mib", "sql peak MiB", "{:.0f}"), ("redis_cpu_s", "redis cpu s", "{:.2f}"),
            ("redis_cpu_x_best", "x best", "{:.2f}"),
            ("redis_cpu_median_x_best", "median x best", "{:.2f}"),
            ("redis_peak_rss_mib", "redis peak MiB", "{:.0f}"), ("redis_refill_rss_mib", "refill RSS MiB", "{:.0f}"),
            ("redis_refill_rss_x_best", "x best", "{:.3f}"),
            ("redis_used_mib", "used MiB", "{:.0f}"), ("redis_rss_per_used", "RSS/used", "{:.2f}"),
            ("redis_flush_rss_mib", "flush RSS MiB", "{:.0f}"), ("redis_flush10_rss_mib", "+10s RSS MiB", "{:.0f}")]
    cols = [c for c in cols if c[0] in rows[0]]
    print("| " + " | ".join(h for _, h, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[k]) for k, _, fmt in cols) + " |")


if __name__ == "__main__":
    main()
