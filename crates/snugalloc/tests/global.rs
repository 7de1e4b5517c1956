//! A test binary whose every allocation goes through `SnugAlloc`: real
//! collections, many threads, and objects freed on other threads.

mod common;

use snugalloc::SnugAlloc;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: SnugAlloc = SnugAlloc;

fn word(i: u64) -> String {
    format!(
        "w{:x}-{}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40,
        "x".repeat((i % 40) as usize)
    )
}

#[test]
fn many_threads_do_real_work() {
    const THREADS: u64 = 12;
    const ITEMS: u64 = 20_000;
    const WORDS: u64 = 5000;
    // Each string travels with the numbers it was made from, so that the
    // receiver can make it again and compare.
    let (tx, rx) = mpsc::channel::<Vec<(u64, u64, String)>>();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut counts: HashMap<String, u64> = HashMap::new();
                let mut batch = Vec::new();
                for i in 0..ITEMS {
                    let w = word(i % WORDS + t);
                    *counts.entry(w.clone()).or_default() += 1;
                    batch.push((t, i, w));
                    if batch.len() == 100 {
                        // Freed by the receiving thread: remote frees.
                        tx.send(std::mem::take(&mut batch)).expect("send");
                    }
                }
                let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
                sorted.sort();
                sorted
            })
        })
        .collect();
    drop(tx);
    let mut received = 0u64;
    let mut per_thread: BTreeMap<u64, u64> = BTreeMap::new();
    for batch in rx {
        for (t, i, w) in &batch {
            assert_eq!(
                *w,
                word(i % WORDS + t),
                "string {i} of thread {t} changed in flight"
            );
            *per_thread.entry(*t).or_default() += 1;
        }
        received += batch.len() as u64;
    }
    for (t, worker) in workers.into_iter().enumerate() {
        let sorted = worker.join().expect("worker");
        // Every word of the thread's range, each counted ITEMS / WORDS times.
        let t = t as u64;
        assert_eq!(sorted.len() as u64, WORDS, "thread {t}'s distinct words");
        let mut expected: Vec<String> = (0..WORDS).map(|k| word(k + t)).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(
            sorted.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(),
            expected,
            "thread {t}'s words"
        );
        assert!(
            sorted.iter().all(|&(_, c)| c == ITEMS / WORDS),
            "thread {t}'s counts"
        );
    }
    assert_eq!(received, THREADS * ITEMS);
    assert!(per_thread.values().all(|&n| n == ITEMS), "{per_thread:?}");
    let stats = SnugAlloc::stats().expect("the heap exists once something was allocated");
    assert!(stats.allocators >= 2, "{stats}");
}

#[test]
fn threads_come_and_go_and_allocators_are_reused() {
    for round in 0..50 {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let v: Vec<Box<[u8]>> = (0..200)
                        .map(|i| vec![(i + t + round) as u8; 1 + i * 37].into_boxed_slice())
                        .collect();
                    v.iter().map(|b| b.len()).sum::<usize>()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(
                h.join().expect("thread"),
                (0..200).map(|i| 1 + i * 37).sum::<usize>()
            );
        }
    }
    let stats = SnugAlloc::stats().expect("heap");
    // 200 threads ran, at most a handful at once: detached allocators were
    // handed to later threads instead of new ones being created.
    assert!(
        stats.allocators < 40,
        "{} allocators for 200 short threads",
        stats.allocators
    );
}

/// Thread-local destructors that run after the allocator's own (which
/// detaches the thread's allocator) still allocate, grow and free: each
/// call attaches an allocator for itself.
#[test]
fn thread_local_destructors_allocate_after_the_thread_detached() {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DONE: AtomicUsize = AtomicUsize::new(0);

    struct AllocatesOnDrop(Cell<bool>);
    impl Drop for AllocatesOnDrop {
        fn drop(&mut self) {
            if !self.0.get() {
                return;
            }
            let mut v: Vec<u64> = (0..1000).collect();
            v.extend(0..100_000u64);
            let words: Vec<String> = (0..100).map(word).collect();
            if v.iter().sum::<u64>() == 499_500 + 4_999_950_000 && words[99] == word(99) {
                DONE.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    thread_local! {
        static EARLY: AllocatesOnDrop = const { AllocatesOnDrop(Cell::new(false)) };
    }

    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                // Registered before the thread's first allocation registers
                // the allocator's guard, so destroyed after it.
                EARLY.with(|e| e.0.set(true));
                let v: Vec<u32> = (0..10_000).collect();
                v.len()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 10_000);
    }
    // `join` returns once the thread's destructors have run.
    assert_eq!(DONE.load(Ordering::Relaxed), 8);
}

/// `SnugAlloc::trim` gives the memory of freed collections back to the
/// OS at once. In a child process that runs only this test: other tests'
/// allocations could reuse the freed runs, or their frees set off a purge
/// of them, before the trim.
#[test]
fn trim_gives_freed_memory_back() {
    if !common::alone_in_a_child("trim_gives_freed_memory_back", "SNUGALLOC_TRIM_CHILD") {
        return;
    }
    let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 256 << 10]).collect();
    assert!(blocks.iter().enumerate().all(|(i, b)| b[1000] == i as u8));
    // An eighth freed: the decommit policy keeps that much for reuse.
    let kept: Vec<Vec<u8>> = blocks.into_iter().skip(8).collect();
    let given = SnugAlloc::trim();
    // The policy itself may have given back the first block (a free after
    // a quiet second gives back all that is dirty).
    assert!(
        given >= 7 * (256 << 10),
        "trim gave back {given} bytes after 2 MiB were freed"
    );
    assert!(kept.iter().all(|b| b.len() == 256 << 10));
}

#[test]
fn large_and_aligned_allocations() {
    let big: Vec<u64> = (0..4_000_000).collect();
    assert_eq!(big.iter().sum::<u64>(), 4_000_000 * 3_999_999 / 2);
    let layout = std::alloc::Layout::from_size_align(3000, 1 << 20).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout.
    unsafe {
        let p = std::alloc::alloc(layout);
        assert!(!p.is_null());
        assert_eq!(p as usize % (1 << 20), 0);
        std::alloc::dealloc(p, layout);
    }
    let snap = SnugAlloc::snapshot().expect("heap");
    assert!(snap.to_string().contains("class"));
}
