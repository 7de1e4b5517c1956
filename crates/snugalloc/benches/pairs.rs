//! Benchmark `pairs`: the cost of the fast paths, against the system
//! allocator and mimalloc in the same run.
//!
//! Workloads:
//! - `pair/<size>`: one thread allocates and immediately frees one block,
//!   for sizes 16 B to 4 KiB (the local fast path both ways).
//! - `pair-batch/<size>`: one thread allocates 1000 blocks, then frees them
//!   (free lists in use, slabs filling and emptying).
//! - `producer-consumer`: one thread allocates 64-byte blocks and sends
//!   them in batches of 256 over a channel; another frees them (remote frees).
//!
//! Output: one CSV line per workload and allocator
//! (`workload,allocator,ns_per_op`), then the ratio of each allocator to
//! snugalloc. Run: `cargo bench -p snugalloc --bench pairs` (add
//! `-- --quick` for a short run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::Instant;

use mimalloc::MiMalloc;
use snugalloc::SnugAlloc;

struct Named {
    name: &'static str,
    alloc: &'static (dyn GlobalAlloc + Sync),
}

static ALLOCATORS: [Named; 3] = [
    Named {
        name: "snugalloc",
        alloc: &SnugAlloc,
    },
    Named {
        name: "system",
        alloc: &System,
    },
    Named {
        name: "mimalloc",
        alloc: &MiMalloc,
    },
];

fn pair(a: &dyn GlobalAlloc, layout: Layout, ops: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..ops {
        // SAFETY: non-zero layout; freed at once with the same layout.
        unsafe {
            let p = a.alloc(layout);
            black_box(p).write(1);
            a.dealloc(p, layout);
        }
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn pair_batch(a: &dyn GlobalAlloc, layout: Layout, rounds: u64) -> f64 {
    let mut ptrs = vec![std::ptr::null_mut(); 1000];
    let start = Instant::now();
    for _ in 0..rounds {
        for p in ptrs.iter_mut() {
            // SAFETY: non-zero layout.
            *p = unsafe { a.alloc(layout) };
            // SAFETY: a fresh block of at least one byte.
            unsafe { p.write(1) };
        }
        for &p in ptrs.iter() {
            // SAFETY: allocated above with `layout`.
            unsafe { a.dealloc(black_box(p), layout) };
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * 1000) as f64
}

struct SendPtr(*mut u8);
// SAFETY: the pointer is only a token handed to the freeing thread.
unsafe impl Send for SendPtr {}

fn producer_consumer(a: &'static (dyn GlobalAlloc + Sync), total: u64) -> f64 {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let (tx, rx) = mpsc::sync_channel::<Vec<SendPtr>>(16);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        for batch in rx {
            for p in batch {
                // SAFETY: allocated by the producer with `layout`, handed over.
                unsafe { a.dealloc(p.0, layout) };
            }
        }
    });
    let mut batch = Vec::with_capacity(256);
    for _ in 0..total {
        // SAFETY: non-zero layout.
        let p = unsafe { a.alloc(layout) };
        // SAFETY: a fresh block.
        unsafe { p.write(1) };
        batch.push(SendPtr(p));
        if batch.len() == 256 {
            tx.send(std::mem::replace(&mut batch, Vec::with_capacity(256)))
                .expect("send");
        }
    }
    tx.send(batch).expect("send");
    drop(tx);
    consumer.join().expect("consumer");
    start.elapsed().as_nanos() as f64 / total as f64
}

/// Best of `reps` runs (the machine is shared; the minimum is the least noisy).
fn best(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (ops, reps) = if quick { (200_000, 3) } else { (2_000_000, 7) };
    let mut rows: Vec<(String, [f64; 3])> = Vec::new();
    println!("workload,allocator,ns_per_op");
    let mut record =
        |workload: String, f: &mut dyn FnMut(&'static (dyn GlobalAlloc + Sync)) -> f64| {
            let mut t = [0.0; 3];
            for (i, named) in ALLOCATORS.iter().enumerate() {
                t[i] = f(named.alloc);
                println!("{workload},{},{:.2}", named.name, t[i]);
            }
            rows.push((workload, t));
        };
    for size in [16usize, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        record(format!("pair/{size}"), &mut |a| {
            best(reps, || pair(a, layout, ops))
        });
        record(format!("pair-batch/{size}"), &mut |a| {
            best(reps, || pair_batch(a, layout, ops / 1000))
        });
    }
    record("producer-consumer".into(), &mut |a| {
        best(reps, || producer_consumer(a, ops))
    });
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>14} {:>14}",
        "workload", "snug ns", "system ns", "mimalloc ns", "system/snug", "mimalloc/snug"
    );
    for (w, t) in &rows {
        println!(
            "{:<22} {:>10.2} {:>10.2} {:>10.2} {:>14.2} {:>14.2}",
            w,
            t[0],
            t[1],
            t[2],
            t[1] / t[0],
            t[2] / t[0]
        );
    }
}
