//! Benchmark `backend`: the chunk backend alone, lock-free, against the same
//! backend behind one mutex (what a locked global backend costs), with 1, 2,
//! 8 and 32 threads.
//!
//! Each thread keeps up to 64 runs (1-4 chunks mostly, some of 16 or 100)
//! of a 16384-chunk region (64 MiB of 4 KiB chunks), freeing a random one
//! and claiming a new one in a loop. Output: CSV `threads,variant,ops_per_sec`
//! then the ratio (best of three alternating runs each). Run: `cargo bench -p snugalloc --features internals
//! --bench backend` (`-- --quick` for a short run).

use snugalloc::internals::ChunkBackend;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn run(threads: usize, locked: bool, duration: Duration) -> f64 {
    let backend = ChunkBackend::new(16384);
    let lock = Mutex::new(());
    let ops: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (backend, lock) = (&backend, &lock);
                s.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut held: Vec<(usize, usize)> = Vec::with_capacity(64);
                    let mut ops = 0u64;
                    let start = Instant::now();
                    while start.elapsed() < duration {
                        for _ in 0..256 {
                            let r = xorshift(&mut rng);
                            if held.len() == 64 || (r & 1 == 0 && !held.is_empty()) {
                                let (s, n) = held.swap_remove((r >> 8) as usize % held.len());
                                let _g = locked.then(|| lock.lock().expect("lock"));
                                backend.free_run(s, n);
                            } else {
                                let n = match (r >> 8) % 32 {
                                    0 => 100,
                                    1..=3 => 16,
                                    k => 1 + (k as usize % 4),
                                };
                                let _g = locked.then(|| lock.lock().expect("lock"));
                                if let Some(s) = backend.alloc_run(n) {
                                    held.push((s, n));
                                }
                            }
                            ops += 1;
                        }
                    }
                    for (s, n) in held {
                        backend.free_run(s, n);
                    }
                    ops
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(backend.reserved_chunks(), 0, "runs leaked");
    ops.iter().sum::<u64>() as f64 / duration.as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = Duration::from_millis(if quick { 300 } else { 2000 });
    println!("threads,variant,ops_per_sec");
    let mut rows = Vec::new();
    for threads in [1, 2, 8, 32] {
        // Alternate the variants and keep the best of three of each: the
        // machine is shared, and the best run is the least disturbed.
        let (mut free, mut locked) = (0f64, 0f64);
        for _ in 0..3 {
            free = free.max(run(threads, false, duration));
            locked = locked.max(run(threads, true, duration));
        }
        println!("{threads},lock-free,{free:.0}");
        println!("{threads},mutex,{locked:.0}");
        rows.push((threads, free, locked));
    }
    println!();
    println!(
        "{:>7} {:>14} {:>14} {:>8}",
        "threads", "lock-free op/s", "mutex op/s", "ratio"
    );
    for (t, f, l) in rows {
        println!("{t:>7} {f:>14.0} {l:>14.0} {:>8.2}", f / l);
    }
}
