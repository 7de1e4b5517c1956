//! ecall-churn: the scenario snugalloc exists for (snmalloc issue #615), as
//! defined in the project's `workloads/ecall-churn.md`.
//!
//! It models an Open Enclave application with a fixed heap, 16 worker
//! threads and 4 other threads that enter and leave the enclave thousands of
//! times a second. Each ECall attaches an allocator, performs K operations
//! (workers K = 200; others K = 50 with sizes biased larger, sleeping 1 ms
//! between ECalls), and detaches. An operation is an allocation or a free,
//! as in the operations-per-second figure; the K include the frees of the
//! ECall's own blocks, so a worker ECall makes about 108 allocations.
//!
//! Within an ECall, after each allocation the thread frees one of its
//! ECall-local blocks chosen at random with probability `--local-free-prob`
//! (0.5), and frees the rest in random order before the ECall ends. A share
//! `--store-share` (15%) of blocks instead goes to a shared store, whose
//! target of live requested bytes is a triangle wave between `--store-min`
//! (15 MiB) and `--store-max` (25 MiB) with period `--store-period` (10 s);
//! at the end of each ECall the thread frees random store entries while the
//! store is above target, so frees cross threads.
//!
//! Size mix (`--worker-mix`, default 70,20,8,2): 70% log-uniform 16-512 B,
//! 20% 512 B-4 KiB, 8% 4-32 KiB of which half exactly 8, 16 or 32 KiB, 2%
//! 64-512 KiB. The other threads use `--other-mix` (40,30,22,8), this
//! simulator's reading of "biased larger".

use std::sync::Mutex;
use std::time::Duration;

use super::{free_all, Block, Ctx, SizeMix, Worker, Workload, MIX_MAX_BYTES};
use crate::rng::Rng;

/// Parameters of ecall-churn.
#[derive(Clone, Debug)]
pub struct Params {
    /// Worker threads.
    pub workers: usize,
    /// Other threads.
    pub others: usize,
    /// Operations (allocations and local frees) per worker ECall.
    pub worker_ops: usize,
    /// Operations per other-thread ECall.
    pub other_ops: usize,
    /// Sleep of other threads between ECalls.
    pub other_sleep: Duration,
    /// Share of blocks that go to the shared store.
    pub store_share: f64,
    /// Probability of freeing a local block after each allocation.
    pub local_free_prob: f64,
    /// Triangle-wave low point of the store target, bytes.
    pub store_min_bytes: usize,
    /// Triangle-wave high point, bytes.
    pub store_max_bytes: usize,
    /// Period of the triangle wave.
    pub store_period: Duration,
    /// Worker size mix.
    pub worker_mix: SizeMix,
    /// Other-thread size mix.
    pub other_mix: SizeMix,
    /// `--seed`.
    pub seed: u64,
}

impl Params {
    /// Largest object the workload may request.
    pub fn largest_object_bytes(&self) -> usize {
        MIX_MAX_BYTES
    }

    /// The store's target of live requested bytes at `t_s` seconds.
    pub fn store_target_bytes(&self, t_s: f64) -> usize {
        let period = self.store_period.as_secs_f64();
        let phase = (t_s / period).fract();
        let tri = 1.0 - (2.0 * phase - 1.0).abs();
        let span = self.store_max_bytes.saturating_sub(self.store_min_bytes) as f64;
        self.store_min_bytes + (span * tri) as usize
    }

    fn is_other(&self, index: usize) -> bool {
        index >= self.workers
    }
}

/// The request generator of one thread: every random choice that shapes its
/// requests.
pub struct Gen {
    pub(crate) rng: Rng,
    pub(crate) mix: SizeMix,
    pub(crate) store_share: f64,
    pub(crate) local_free_prob: f64,
}

impl Gen {
    /// The generator of thread `index`.
    pub fn new(p: &Params, index: usize) -> Gen {
        Gen {
            rng: Rng::for_thread(p.seed, index),
            mix: if p.is_other(index) {
                p.other_mix
            } else {
                p.worker_mix
            },
            store_share: p.store_share,
            local_free_prob: p.local_free_prob,
        }
    }
}

/// Where an ECall's blocks go; lets the same ECall logic drive an allocator
/// or a recording (see [`trace`]).
pub trait Sink {
    /// A live block.
    type B;
    /// Allocates `size` bytes; `None` on out of memory.
    fn alloc(&mut self, size: usize) -> Option<Self::B>;
    /// Frees a block.
    fn free(&mut self, b: Self::B);
}

/// One ECall of `ops` operations: allocations, and frees of its local
/// blocks (see [`alloc_step`]). Store-bound blocks are appended to
/// `to_store`. `local` is scratch space, empty on entry and exit.
pub fn one_ecall<S: Sink>(
    g: &mut Gen,
    ops: usize,
    sink: &mut S,
    local: &mut Vec<S::B>,
    to_store: &mut Vec<S::B>,
) {
    let mut done = 0;
    while let Some(now) = alloc_step(g, ops, done, sink, local, to_store) {
        done = now;
    }
    while !local.is_empty() {
        let i = g.rng.below(local.len());
        sink.free(local.swap_remove(i));
    }
}

/// The next allocation of an ECall that has made `done` of its `ops`
/// operations, and the free of a local block that may follow it; returns
/// the operations made after them. `None` when the ECall has no room for
/// another allocation: an allocation is made only while the budget still
/// covers freeing every local block afterwards (which the caller then
/// does), so an ECall makes `ops` or `ops - 1` operations. The replay
/// drives ECalls through this too, so both make the same requests.
pub fn alloc_step<S: Sink>(
    g: &mut Gen,
    ops: usize,
    done: usize,
    sink: &mut S,
    local: &mut Vec<S::B>,
    to_store: &mut Vec<S::B>,
) -> Option<usize> {
    // Room for this allocation, its free, and the frees already owed.
    if done + local.len() + 2 > ops {
        return None;
    }
    let mut done = done + 1;
    let size = g.mix.draw(&mut g.rng);
    let store = g.rng.chance(g.store_share);
    if let Some(b) = sink.alloc(size) {
        if store {
            to_store.push(b);
        } else {
            local.push(b);
        }
    }
    if !local.is_empty() && g.rng.chance(g.local_free_prob) {
        done += 1;
        let i = g.rng.below(local.len());
        sink.free(local.swap_remove(i));
    }
    Some(done)
}

/// A recorded request: `Alloc(size)`, `Free(size)` of a local block, or
/// `Store(size)` for a block handed to the store at the ECall's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Allocation of this many bytes.
    Alloc(usize),
    /// Free of a local block of this many bytes.
    Free(usize),
    /// A block of this many bytes went to the store.
    Store(usize),
}

struct Recorder(Vec<Event>);

impl Sink for Recorder {
    type B = usize;
    fn alloc(&mut self, size: usize) -> Option<usize> {
        self.0.push(Event::Alloc(size));
        Some(size)
    }
    fn free(&mut self, b: usize) {
        self.0.push(Event::Free(b));
    }
}

/// The requests thread `index` makes in its first `ecalls` ECalls when no
/// allocation fails: a pure function of the parameters and seed.
pub fn trace(p: &Params, index: usize, ecalls: usize) -> Vec<Event> {
    let mut g = Gen::new(p, index);
    let ops = if p.is_other(index) {
        p.other_ops
    } else {
        p.worker_ops
    };
    let mut rec = Recorder(Vec::new());
    let (mut local, mut to_store) = (Vec::new(), Vec::new());
    for _ in 0..ecalls {
        one_ecall(&mut g, ops, &mut rec, &mut local, &mut to_store);
        rec.0.extend(to_store.drain(..).map(Event::Store));
    }
    rec.0
}

/// The shared store: blocks that outlive their ECall.
#[derive(Default)]
struct Store {
    blocks: Vec<Block>,
    bytes: usize,
}

/// A running ecall-churn.
pub struct EcallChurn {
    p: Params,
    store: Mutex<Store>,
}

impl EcallChurn {
    /// A fresh instance with an empty store.
    pub fn new(p: Params) -> EcallChurn {
        EcallChurn {
            p,
            store: Mutex::new(Store::default()),
        }
    }
}

struct Live<'w, 'c, 'h> {
    w: &'w mut Worker<'c>,
    h: &'w mut (dyn crate::alloc::Handle + 'h),
}

impl Sink for Live<'_, '_, '_> {
    type B = Block;
    fn alloc(&mut self, size: usize) -> Option<Block> {
        self.w.alloc(self.h, size)
    }
    fn free(&mut self, b: Block) {
        self.w.free(self.h, b);
    }
}

impl Workload for EcallChurn {
    fn thread_count(&self) -> usize {
        self.p.workers + self.p.others
    }

    fn period(&self) -> Option<Duration> {
        Some(self.p.store_period)
    }

    fn run_thread(&self, index: usize, ctx: &Ctx<'_>) {
        let p = &self.p;
        let mut g = Gen::new(p, index);
        // Trimming picks come from a second generator, so the request stream
        // of `g` does not depend on what other threads left in the store.
        let mut trim_rng = Rng::for_thread(p.seed ^ 0x7121_3000, index);
        let other = p.is_other(index);
        let ops = if other { p.other_ops } else { p.worker_ops };
        let mut w = Worker::new(ctx, index);
        let (mut local, mut to_store, mut victims) = (Vec::new(), Vec::new(), Vec::new());
        while !ctx.stopping() {
            let Some(mut h) = w.attach(ctx) else { break };
            one_ecall(
                &mut g,
                ops,
                &mut Live {
                    w: &mut w,
                    h: h.as_mut(),
                },
                &mut local,
                &mut to_store,
            );
            let target = p.store_target_bytes(ctx.elapsed_s());
            {
                let mut st = self.store.lock().unwrap_or_else(|e| e.into_inner());
                for b in to_store.drain(..) {
                    st.bytes += b.size();
                    st.blocks.push(b);
                }
                while st.bytes > target && !st.blocks.is_empty() {
                    let i = trim_rng.below(st.blocks.len());
                    let b = st.blocks.swap_remove(i);
                    st.bytes -= b.size();
                    victims.push(b);
                }
            }
            for b in victims.drain(..) {
                w.free(h.as_mut(), b);
            }
            drop(h);
            if other && !p.other_sleep.is_zero() {
                std::thread::sleep(p.other_sleep);
            }
        }
    }

    fn finish(&self, ctx: &Ctx<'_>) {
        let blocks =
            std::mem::take(&mut self.store.lock().unwrap_or_else(|e| e.into_inner()).blocks);
        free_all(ctx, self.thread_count(), blocks);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn params(seed: u64) -> Params {
        Params {
            workers: 16,
            others: 4,
            worker_ops: 200,
            other_ops: 50,
            other_sleep: Duration::from_millis(1),
            store_share: 0.15,
            local_free_prob: 0.5,
            store_min_bytes: 15 << 20,
            store_max_bytes: 25 << 20,
            store_period: Duration::from_secs(10),
            worker_mix: SizeMix::parse("70,20,8,2").expect("mix"),
            other_mix: SizeMix::parse("40,30,22,8").expect("mix"),
            seed,
        }
    }

    #[test]
    fn generator_is_deterministic_for_a_seed() {
        for thread in [0, 15, 19] {
            assert_eq!(trace(&params(1), thread, 20), trace(&params(1), thread, 20));
        }
        assert_ne!(trace(&params(1), 0, 5), trace(&params(2), 0, 5));
        assert_ne!(trace(&params(1), 0, 5), trace(&params(1), 1, 5));
    }

    #[test]
    fn mix_and_lifetimes_match_the_definition() {
        let ecalls = 1000;
        let t = trace(&params(9), 0, ecalls);
        let sizes: Vec<usize> = t
            .iter()
            .filter_map(|e| {
                if let Event::Alloc(s) = e {
                    Some(*s)
                } else {
                    None
                }
            })
            .collect();
        let n = sizes.len() as f64;
        // K = 200 operations per ECall, allocations and local frees
        // together (199 when the last allocation would leave no room for
        // its free); every local block is freed, so about 0.85 frees per
        // allocation and 200 / 1.85 = 108 allocations per ECall.
        let frees = t.iter().filter(|e| matches!(e, Event::Free(_))).count();
        let ops = sizes.len() + frees;
        assert!(
            (ecalls * 199..=ecalls * 200).contains(&ops),
            "{ops} operations"
        );
        let per_ecall = n / ecalls as f64;
        assert!(
            (104.0..112.0).contains(&per_ecall),
            "{per_ecall} allocations per ECall"
        );
        let share = |lo: usize, hi: usize| {
            sizes.iter().filter(|s| (lo..hi).contains(*s)).count() as f64 / n
        };
        assert!((share(16, 512) - 0.70).abs() < 0.01);
        assert!((share(512, 4096) - 0.20).abs() < 0.01);
        assert!((share(4096, (32 << 10) + 1) - 0.08).abs() < 0.005);
        assert!((share(64 << 10, 512 << 10) - 0.02).abs() < 0.003);
        let exact = sizes
            .iter()
            .filter(|s| [8 << 10, 16 << 10, 32 << 10].contains(*s))
            .count() as f64
            / n;
        assert!((exact - 0.04).abs() < 0.004, "exact-size share {exact}");
        let stored = t.iter().filter(|e| matches!(e, Event::Store(_))).count() as f64 / n;
        assert!((stored - 0.15).abs() < 0.01, "store share {stored}");
    }

    #[test]
    fn store_target_is_a_triangle() {
        let p = params(1);
        assert_eq!(p.store_target_bytes(0.0), 15 << 20);
        assert_eq!(p.store_target_bytes(5.0), 25 << 20);
        assert_eq!(p.store_target_bytes(10.0), 15 << 20);
        assert_eq!(p.store_target_bytes(2.5), 20 << 20);
    }
}
