//! Stress: 20 threads with random attach/detach and cross-thread frees drive
//! a 16 MiB region to exhaustion again and again. Every live block is
//! tagged with its owner at both ends and filled in between, and checked
//! before it is freed, so a block handed out twice, or overlapping another
//! anywhere, is caught; at the end everything is freed and the reserved
//! bytes return to where they started.
//!
//! The same test runs again with every allocator caching freed runs (the
//! run cache, off in heaps this small by default), so that allocations
//! about to fail take the cached runs of attached allocators while their
//! holders go on using them.
//!
//! `SNUGALLOC_STRESS_ROUNDS` sets the rounds of each (default 40; soak
//! with more).

mod common;

use common::*;
use core::alloc::Layout;
use snugalloc::Config;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const THREADS: usize = 20;
const HEAP_BYTES: usize = 16 << 20;

#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    layout: Layout,
    tag: u64,
}

/// The byte a block is filled with between its first and last word: one
/// of 255 values, taken from its tag, so that two blocks that overlap
/// almost always write different bytes into each other.
fn fill_byte(b: &Block) -> u8 {
    (b.tag % 255) as u8 + 1
}

/// Writes `tag` into the first and last word of the block and fills the
/// words between with its fill byte, so that an allocation overlapping any
/// part of it (not only its ends) overwrites something `verify` checks.
fn stamp(b: &Block) {
    let n = b.layout.size() / 8;
    // SAFETY: blocks are at least 16 bytes and 8-aligned (see `size_for`).
    unsafe {
        (b.addr as *mut u64).write(b.tag);
        (b.addr as *mut u64).add(n - 1).write(!b.tag);
        (b.addr as *mut u8)
            .add(8)
            .write_bytes(fill_byte(b), (n - 2) * 8);
    }
}

fn verify(b: &Block) {
    let n = b.layout.size() / 8;
    // SAFETY: as in `stamp`; the block is live.
    let (first, last, body) = unsafe {
        (
            (b.addr as *const u64).read(),
            (b.addr as *const u64).add(n - 1).read(),
            core::slice::from_raw_parts((b.addr as *const u64).add(1), n - 2),
        )
    };
    let fill = u64::from_ne_bytes([fill_byte(b); 8]);
    assert!(
        first == b.tag && last == !b.tag && body.iter().all(|&w| w == fill),
        "block {:#x} ({} B) was overwritten: another allocation overlaps it",
        b.addr,
        b.layout.size()
    );
}

fn size_for(r: u64) -> usize {
    let s = match r % 100 {
        0..=69 => 16 + (r >> 8) as usize % 496,
        70..=89 => 512 + (r >> 8) as usize % 3584,
        90..=97 => 4096 + (r >> 8) as usize % 28672,
        _ => 65536 + (r >> 8) as usize % 200_000,
    };
    s.next_multiple_of(8)
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn rounds(default: usize) -> usize {
    std::env::var("SNUGALLOC_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn twenty_threads_exhaust_a_16mib_region_repeatedly() {
    exhaust_repeatedly(Config::for_region(HEAP_BYTES), rounds(40));
}

#[test]
fn twenty_threads_exhaust_a_16mib_region_with_run_caches() {
    let mut config = Config::for_region(HEAP_BYTES);
    config.chunk_cache_bytes = 256 << 10;
    config.chunk_cache_min_heap_bytes = 0;
    exhaust_repeatedly(config, rounds(40));
}

fn exhaust_repeatedly(config: Config, rounds: usize) {
    let heap = fixed_heap_with(HEAP_BYTES, config);
    // Create the allocators first, so that "back to the start" compares
    // like with like.
    let attached: Vec<_> = (0..THREADS)
        .map(|_| heap.attach().expect("attach"))
        .collect();
    drop(attached);
    // Chunks in use other than metadata: an attach that finds the idle
    // stack empty for a moment (another attach holds the last idle
    // allocator aside, having found it held by a helper) makes a new
    // allocator, whose metadata stays; what must come back is the rest.
    let object_bytes = |s: &snugalloc::Stats| s.reserved_bytes - s.metadata_bytes;
    let start_reserved = object_bytes(&heap.stats());
    let shared: Mutex<Vec<Block>> = Mutex::new(Vec::new());
    let nulls = AtomicUsize::new(0);
    let next_tag = AtomicUsize::new(1);
    let caching = config.chunk_cache_min_heap_bytes <= HEAP_BYTES && config.chunk_cache_bytes > 0;
    let mut cached_seen = 0;
    for round in 0..rounds {
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (heap, shared, nulls, next_tag) = (&heap, &shared, &nulls, &next_tag);
                s.spawn(move || {
                    let mut rng = 0x2545_F491_4F6C_DD1D
                        ^ ((round * THREADS + t) as u64 + 1).wrapping_mul(0x9E37_79B9);
                    let mut mine: Vec<Block> = Vec::new();
                    let mut a = heap.attach().expect("attach");
                    let mut failures = 0;
                    for _ in 0..3000 {
                        let r = xorshift(&mut rng);
                        match r % 16 {
                            0..=8 => {
                                let layout =
                                    Layout::from_size_align(size_for(xorshift(&mut rng)), 8)
                                        .expect("layout");
                                let p = a.alloc(layout);
                                if p.is_null() {
                                    nulls.fetch_add(1, Ordering::Relaxed);
                                    failures += 1;
                                    // Exhausted: give half of ours to others to free.
                                    let give = mine.len() / 2;
                                    shared.lock().expect("shared").extend(mine.drain(..give));
                                    continue;
                                }
                                let b = Block {
                                    addr: p as usize,
                                    layout,
                                    tag: next_tag.fetch_add(1, Ordering::Relaxed) as u64,
                                };
                                stamp(&b);
                                mine.push(b);
                            }
                            9..=11 if !mine.is_empty() => {
                                let b = mine.swap_remove((r >> 8) as usize % mine.len());
                                verify(&b);
                                // SAFETY: live, ours, freed once.
                                unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
                            }
                            12 if !mine.is_empty() => {
                                let b = mine.swap_remove((r >> 8) as usize % mine.len());
                                shared.lock().expect("shared").push(b);
                            }
                            13 => {
                                let taken: Vec<Block> = {
                                    let mut sh = shared.lock().expect("shared");
                                    let n = sh.len().min(32);
                                    let at = sh.len() - n;
                                    sh.drain(at..).collect()
                                };
                                for b in taken {
                                    verify(&b);
                                    // SAFETY: handed over through `shared`; freed once.
                                    unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
                                }
                            }
                            14 => {
                                drop(a);
                                a = heap.attach().expect("attach");
                            }
                            _ => {}
                        }
                    }
                    for b in &mine {
                        verify(b);
                    }
                    shared.lock().expect("shared").extend(mine);
                    drop(a);
                    failures
                });
            }
        });
        cached_seen = cached_seen.max(heap.snapshot().cached_bytes);
        // Between rounds, free everything and check the region comes back.
        let mut a = heap.attach().expect("attach");
        for b in shared.lock().expect("shared").drain(..) {
            verify(&b);
            // SAFETY: every block left is live and freed once, here.
            unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
        }
        drop(a);
        heap.reclaim();
        let s = heap.stats();
        assert_eq!(s.live_bytes, 0, "round {round}");
        assert_eq!(
            object_bytes(&s),
            start_reserved,
            "round {round}: chunks leaked\n{}",
            heap.snapshot()
        );
    }
    assert!(
        nulls.load(Ordering::Relaxed) > 0,
        "the region was never exhausted"
    );
    // A free racing a claim of the same chunks must not count them twice:
    // the exact peak cannot pass what the region holds.
    let s = heap.stats();
    assert!(
        s.peak_reserved_bytes <= s.heap_bytes,
        "peak reserved {} B in a heap of {} B",
        s.peak_reserved_bytes,
        s.heap_bytes
    );
    assert_eq!(
        cached_seen > 0,
        caching,
        "cached runs seen: {cached_seen} B"
    );
    eprintln!(
        "{} allocations returned null over {rounds} rounds",
        nulls.load(Ordering::Relaxed)
    );
}
