//! Property test: random alloc / realloc / dealloc sequences from several
//! threads, with blocks handed between threads and allocators attached and
//! detached, checked against a shadow model of every live block.
//!
//! Checked: blocks never overlap and stay inside the heap, alignment is
//! honoured, contents survive realloc and cross-thread frees, and once
//! everything is freed and the heap reclaims, no chunk stays reserved for
//! objects and live bytes are zero.

mod common;

use common::*;
use core::alloc::Layout;
use proptest::prelude::*;
use snugalloc::{Config, Heap};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_shift: u32 },
    Realloc { pick: usize, size: usize },
    Free { pick: usize },
    Give { pick: usize },
    Take,
    Reattach,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    addr: usize,
    layout: Layout,
    seed: u8,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        7 => 0usize..512,
        2 => 512usize..8192,
        1 => 8192usize..200_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (size(), prop_oneof![8 => Just(0u32), 2 => 0u32..13]).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => (any::<usize>(), size()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Give { pick }),
        2 => Just(Op::Take),
        1 => Just(Op::Reattach),
    ]
}

/// Live blocks of all threads: start -> end.
struct Shadow(Mutex<BTreeMap<usize, usize>>);

impl Shadow {
    fn insert(&self, b: &Block) {
        let (start, end) = (b.addr, b.addr + b.layout.size().max(1));
        let mut map = self.0.lock().expect("shadow lock");
        if let Some((&s, &e)) = map.range(..end).next_back() {
            assert!(
                e <= start || s >= end,
                "block {start:#x}..{end:#x} overlaps {s:#x}..{e:#x}"
            );
        }
        map.insert(start, end);
    }
    fn remove(&self, b: &Block) {
        let removed = self.0.lock().expect("shadow lock").remove(&b.addr);
        assert!(removed.is_some(), "freeing an unknown block {:#x}", b.addr);
    }
}

fn run_thread(heap: &Heap, shadow: &Shadow, exchange: &Mutex<Vec<Block>>, ops: &[Op], tid: u8) {
    let mut a = heap.attach().expect("attach");
    let mut mine: Vec<Block> = Vec::new();
    let check_block = |b: &Block| {
        assert!(
            // SAFETY: the block is live and at least this many bytes long.
            unsafe { check(b.addr as *const u8, b.layout.size().min(256), b.seed) },
            "contents of {:#x} changed",
            b.addr
        )
    };
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc { size, align_shift } => {
                let layout = Layout::from_size_align(size, 1 << align_shift).expect("layout");
                let p = a.alloc(layout);
                if p.is_null() {
                    continue; // out of memory is allowed
                }
                assert!(heap.contains(p));
                assert_eq!(p as usize % layout.align(), 0, "alignment of {layout:?}");
                let b = Block {
                    addr: p as usize,
                    layout,
                    seed: tid.wrapping_mul(31).wrapping_add(i as u8),
                };
                // SAFETY: the block is live and at least this many bytes long.
                unsafe { fill(p, size.min(256), b.seed) };
                shadow.insert(&b);
                mine.push(b);
            }
            Op::Realloc { pick, size } if !mine.is_empty() => {
                let idx = pick % mine.len();
                let b = mine[idx];
                check_block(&b);
                // Out of the shadow first: once realloc moves the block,
                // another thread may be given the old address at once.
                shadow.remove(&b);
                // SAFETY: `b` is live with its layout, owned by this thread.
                let p = unsafe { a.realloc(b.addr as *mut u8, b.layout, size) };
                if p.is_null() {
                    shadow.insert(&b); // the old block stays valid
                    continue;
                }
                let nb = Block {
                    addr: p as usize,
                    layout: Layout::from_size_align(size, b.layout.align()).expect("layout"),
                    seed: b.seed,
                };
                assert_eq!(p as usize % b.layout.align(), 0);
                assert!(
                    // SAFETY: the block is live and at least this many bytes long.
                    unsafe { check(p, b.layout.size().min(size).min(256), b.seed) },
                    "realloc lost contents"
                );
                // SAFETY: the block is live and at least this many bytes long.
                unsafe { fill(p, size.min(256), b.seed) };
                shadow.insert(&nb);
                mine[idx] = nb;
            }
            Op::Free { pick } if !mine.is_empty() => {
                let b = mine.swap_remove(pick % mine.len());
                check_block(&b);
                shadow.remove(&b);
                // SAFETY: `b` is live with its layout and removed from our list.
                unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
            }
            Op::Give { pick } if !mine.is_empty() => {
                let b = mine.swap_remove(pick % mine.len());
                exchange.lock().expect("exchange").push(b);
            }
            Op::Take => {
                let taken = exchange.lock().expect("exchange").pop();
                if let Some(b) = taken {
                    check_block(&b);
                    shadow.remove(&b);
                    // SAFETY: the block was handed over through the exchange;
                    // only this thread holds it now.
                    unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
                }
            }
            Op::Reattach => {
                drop(a);
                a = heap.attach().expect("attach");
            }
            _ => {}
        }
    }
    // What is left goes to the exchange, to be freed by another allocator.
    exchange.lock().expect("exchange").extend(mine);
}

fn run_case(threads: &[Vec<Op>]) {
    const HEAP_BYTES: usize = 24 << 20;
    let mut region = vec![0u64; HEAP_BYTES / 8];
    // SAFETY: `region` outlives `heap`, which is dropped at the end of this
    // function, and nothing else uses it.
    let heap = unsafe {
        Heap::from_region(
            region.as_mut_ptr().cast(),
            HEAP_BYTES,
            Config::for_region(HEAP_BYTES),
        )
    }
    .expect("heap");
    let shadow = Shadow(Mutex::new(BTreeMap::new()));
    let exchange = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (tid, ops) in threads.iter().enumerate() {
            let (heap, shadow, exchange) = (&heap, &shadow, &exchange);
            s.spawn(move || run_thread(heap, shadow, exchange, ops, tid as u8));
        }
    });
    let mut a = heap.attach().expect("attach");
    for b in exchange.into_inner().expect("exchange") {
        // SAFETY: the block is live and at least this many bytes long.
        assert!(unsafe { check(b.addr as *const u8, b.layout.size().min(256), b.seed) });
        shadow.remove(&b);
        // SAFETY: every remaining block is live and freed once, here.
        unsafe { a.dealloc(b.addr as *mut u8, b.layout) };
    }
    drop(a);
    assert!(shadow.0.lock().expect("shadow").is_empty());
    heap.reclaim();
    let stats = heap.stats();
    assert_eq!(
        object_chunk_bytes(&heap),
        0,
        "chunks still reserved after everything was freed: {}",
        heap.snapshot()
    );
    assert_eq!(stats.live_bytes, 0);
    drop(heap);
    drop(region);
}

/// Cases to run: 48, or `SNUGALLOC_SHADOW_CASES` for a long randomized
/// search (see the README's "Measure it").
fn cases() -> u32 {
    match std::env::var("SNUGALLOC_SHADOW_CASES") {
        Err(_) => 48,
        Ok(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                panic!("SNUGALLOC_SHADOW_CASES={v:?}: expected a whole number of cases, at least 1")
            }
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_multithreaded_sequences_match_the_shadow(
        threads in proptest::collection::vec(proptest::collection::vec(op(), 1..400), 1..5)
    ) {
        run_case(&threads);
    }
}
