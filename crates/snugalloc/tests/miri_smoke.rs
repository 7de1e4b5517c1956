//! A small workout meant for Miri (`.ci/miri`), which checks the unsafe
//! code for undefined behaviour: a 1 MiB fixed heap, slab, half-chunk and
//! large allocations, realloc, usable sizes read from the pagemap, and
//! frees across two threads. It also runs as a normal test.

use core::alloc::Layout;
use snugalloc::{Config, Heap};

#[test]
fn small_heap_under_miri() {
    const BYTES: usize = 1 << 20;
    let mut region = vec![0u64; BYTES / 8];
    let config = Config {
        max_allocators: 4,
        ..Config::for_region(BYTES)
    };
    // SAFETY: `region` outlives the heap and nothing else uses it.
    let heap =
        unsafe { Heap::from_region(region.as_mut_ptr().cast(), BYTES, config) }.expect("heap");
    let mut a = heap.attach().expect("attach");
    let sizes = [1usize, 24, 100, 700, 3000, 9000, 40_000, 1500, 2048];
    let mut blocks = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        let p = a.alloc(layout);
        assert!(!p.is_null());
        // SAFETY: a fresh block of `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push((p as usize, layout));
    }
    // Grow one block across classes and into a large run.
    let (p, l) = blocks.remove(2);
    // SAFETY: `p` is live with layout `l`.
    let q = unsafe { a.realloc(p as *mut u8, l, 20_000) };
    assert!(!q.is_null());
    // SAFETY: realloc kept the first 100 bytes.
    assert!(unsafe { core::slice::from_raw_parts(q, 100) }
        .iter()
        .all(|&b| b == 2));
    blocks.push((
        q as usize,
        Layout::from_size_align(20_000, 8).expect("layout"),
    ));
    drop(a);
    // Another thread frees everything (remote frees and large frees).
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = heap.attach().expect("attach");
            for (p, l) in blocks {
                // SAFETY: the block is live; the pagemap answers for any thread.
                let usable = unsafe { heap.usable_size(p as *const u8) };
                assert!(usable >= l.size(), "{usable} < {}", l.size());
                // SAFETY: every block is live and freed once.
                unsafe { b.dealloc(p as *mut u8, l) };
            }
        });
    });
    heap.reclaim();
    let stats = heap.stats();
    assert_eq!(stats.live_bytes, 0);
    assert_eq!(
        stats.reserved_bytes,
        stats.metadata_bytes,
        "{}",
        heap.snapshot()
    );
    drop(heap);
    drop(region);
}
