//! A multi-threaded workload on a 64 MiB fixed region: 20 threads attach an
//! allocator for every short "call" (as enclave threads do on each ECall),
//! allocate mixed sizes, keep some blocks in a shared store that other
//! threads free, then detach. Prints the per-size-class table at the end.
//!
//! Run: `cargo run --release -p snugalloc --example fixed_region [seconds]`

use core::alloc::Layout;
use snugalloc::{Config, Heap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HEAP_BYTES: usize = 64 << 20;
const THREADS: usize = 20;
/// Live bytes the shared store keeps, at most.
const STORE_BYTES: usize = 20 << 20;

struct Block(*mut u8, Layout);
// SAFETY: a block is owned by whichever thread holds it.
unsafe impl Send for Block {}

/// A small xorshift generator, seeded per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn size(&mut self) -> usize {
        let r = self.next() % 100;
        let log_uniform = |rng: &mut Rng, lo: f64, hi: f64| {
            let u = (rng.next() % 1_000_000) as f64 / 1_000_000.0;
            (lo.ln() + u * (hi.ln() - lo.ln())).exp() as usize
        };
        match r {
            0..=69 => log_uniform(self, 16.0, 512.0),
            70..=89 => log_uniform(self, 512.0, 4096.0),
            90..=97 => log_uniform(self, 4096.0, 32768.0),
            _ => log_uniform(self, 65536.0, 524288.0),
        }
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut region = vec![0u64; HEAP_BYTES / 8];
    // SAFETY: `region` outlives the heap (both live until the end of main)
    // and nothing else uses it.
    let heap = unsafe {
        Heap::from_region(
            region.as_mut_ptr().cast(),
            HEAP_BYTES,
            Config::for_region(HEAP_BYTES),
        )
    }
    .expect("a 64 MiB region is valid");
    let store: Mutex<(Vec<Block>, usize)> = Mutex::new((Vec::new(), 0));
    let stop = AtomicBool::new(false);
    let (calls, ooms) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (heap, store, stop, calls, ooms) = (&heap, &store, &stop, &calls, &ooms);
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1000_0001));
                while !stop.load(Ordering::Relaxed) {
                    let mut a = heap.attach().expect("an allocator");
                    let mut mine = Vec::new();
                    for _ in 0..200 {
                        let layout = Layout::from_size_align(rng.size(), 16).expect("layout");
                        let p = a.alloc(layout);
                        if p.is_null() {
                            ooms.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        mine.push(Block(p, layout));
                    }
                    // About 15% go to the store; the rest die in this call.
                    let keep = mine.len() * 15 / 100;
                    let kept: Vec<Block> = mine.drain(..keep).collect();
                    for b in mine {
                        // SAFETY: allocated above with this layout.
                        unsafe { a.dealloc(b.0, b.1) };
                    }
                    let mut evicted = Vec::new();
                    {
                        let mut st = store.lock().expect("store");
                        for b in kept {
                            st.1 += b.1.size();
                            st.0.push(b);
                        }
                        while st.1 > STORE_BYTES {
                            let i = (rng.next() as usize) % st.0.len();
                            let b = st.0.swap_remove(i);
                            st.1 -= b.1.size();
                            evicted.push(b);
                        }
                    }
                    for b in evicted {
                        // SAFETY: taken out of the store; freed once, possibly
                        // by another allocator than the one that allocated it.
                        unsafe { a.dealloc(b.0, b.1) };
                    }
                    drop(a);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{} calls in {elapsed:.1} s ({:.0} calls/s), {} out-of-memory",
        calls.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed) as f64 / elapsed,
        ooms.load(Ordering::Relaxed)
    );
    println!("{}", heap.snapshot());
    let mut a = heap.attach().expect("an allocator");
    for b in store.into_inner().expect("store").0 {
        // SAFETY: the remaining stored blocks, freed once.
        unsafe { a.dealloc(b.0, b.1) };
    }
    drop(a);
    heap.reclaim();
    println!("after freeing everything: {}", heap.stats());
    drop(heap);
    drop(region);
}
