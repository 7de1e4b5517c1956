//! Replay: `ecall-churn` on one OS thread, with its 20 threads played as
//! virtual threads by a seeded scheduler, so a run is exactly repeatable.
//!
//! The threaded runs of `run` and `min-heap` depend on how the OS schedules
//! 20 threads on the machine's cores, so two runs of the same seed differ,
//! and a min-heap answer moves by a MiB or two between runs. Placement
//! policies and size-class choices need a comparison without that noise:
//! here every virtual thread holds its own attached handle (as a thread that
//! is preempted in the middle of an ECall holds its allocator), and the
//! scheduler runs one virtual thread for a random slice of operations (a
//! timeslice, 1 to `2 * mean_slice - 1` operations) before it switches to
//! another, anywhere in an ECall. Time is virtual too: `ops_per_s`
//! operations make one second of the store's triangle wave, and an other
//! thread's sleep between ECalls skips it for that many operations' worth of
//! turns.
//!
//! What it measures is memory only: peak live requested bytes, peak
//! reserved bytes (sampled every 1000 operations, plus the allocator's exact
//! peak) and out-of-memory failures. A virtual thread that cannot run
//! (asleep, or failing to attach) lets one operation's worth of time pass. Blocks carry no guard bytes; the
//! threaded runs check integrity.

use std::alloc::Layout;

use crate::alloc::{ClassTable, Handle, Refused, RegionAlloc};
use crate::rng::Rng;
use crate::workload::ecall_churn::{alloc_step, Gen, Params, Sink};
use crate::workload::layout_of;

/// How a replay is scheduled.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Operations (allocations and frees) in the whole replay.
    pub ops: u64,
    /// Mean operations a virtual thread runs before the scheduler switches.
    pub mean_slice: u64,
    /// Operations that make one virtual second.
    pub ops_per_s: u64,
    /// Whether to take the size-class table at the reserved peak (a walk
    /// of the allocator's metadata at every new sampled peak).
    pub tables: bool,
    /// Whether every virtual thread uses one handle, attached once for the
    /// whole replay, instead of attaching its own for each ECall. A
    /// diagnostic, not a way to run an allocator: with snugalloc it is one
    /// allocator for every thread (no per-thread slabs, no remote frees),
    /// which is the floor any design without per-thread slabs could reach
    /// with the same placement.
    pub one_allocator: bool,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            ops: 100_000_000,
            mean_slice: 1500,
            ops_per_s: 10_000_000,
            tables: false,
            one_allocator: false,
        }
    }
}

/// What a replay measured.
#[derive(Clone, Debug, Default)]
pub struct ReplayOutcome {
    /// Allocations that returned null.
    pub oom_count: u64,
    /// Peak live requested bytes (exact).
    pub peak_requested_bytes: u64,
    /// Peak reserved bytes: the allocator's exact peak where it keeps one,
    /// else the sampled peak.
    pub peak_reserved_bytes: u64,
    /// The allocator's size-class table at the highest sampled reserved
    /// bytes (taken only when [`Schedule::tables`] is set).
    pub class_table_at_peak: Option<ClassTable>,
    /// Live requested bytes by block size at the peak of live bytes.
    pub live_by_size_at_peak: SizeBands,
}

/// Live requested bytes by block size: the mix a placement policy has to
/// pack at a given moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeBands {
    /// Bytes of blocks in each of [`SizeBands::LIMITS`]' bands: up to the
    /// first limit, then above each limit up to the next, then above the
    /// last.
    pub bytes: [u64; 5],
    /// Bytes that rounding each block above 2 KiB up to a multiple of
    /// 4 KiB would add (what an allocator of 4 KiB chunk runs loses to
    /// rounding, before any other overhead).
    pub round_to_4k_bytes: u64,
}

impl SizeBands {
    /// Upper limits of the first four bands (1, 2, 4 and 32 KiB).
    pub const LIMITS: [usize; 4] = [1 << 10, 2 << 10, 4 << 10, 32 << 10];

    fn band(size: usize) -> usize {
        Self::LIMITS.iter().take_while(|&&l| size > l).count()
    }

    fn rounding(size: usize) -> u64 {
        if size > 2 << 10 {
            (size.next_multiple_of(4 << 10) - size) as u64
        } else {
            0
        }
    }

    fn add(&mut self, size: usize) {
        self.bytes[Self::band(size)] += size as u64;
        self.round_to_4k_bytes += Self::rounding(size);
    }

    fn remove(&mut self, size: usize) {
        self.bytes[Self::band(size)] -= size as u64;
        self.round_to_4k_bytes -= Self::rounding(size);
    }
}

impl std::fmt::Display for SizeBands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kib = |b: u64| b as f64 / 1024.0;
        let [a, b, c, d, e] = self.bytes;
        write!(
            f,
            "live KiB by block size: up to 1 KiB {:.0}, 1-2 KiB {:.0}, 2-4 KiB {:.0}, 4-32 KiB {:.0}, above 32 KiB {:.0}; rounding blocks above 2 KiB to 4 KiB would add {:.0} KiB",
            kib(a),
            kib(b),
            kib(c),
            kib(d),
            kib(e),
            kib(self.round_to_4k_bytes)
        )
    }
}

#[derive(Clone, Copy)]
struct Blk {
    ptr: *mut u8,
    layout: Layout,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between ECalls (detached); an other thread may be asleep until the
    /// given operation count.
    Out { wake_at: u64 },
    /// Allocating: operations made so far in the ECall.
    Alloc { done: usize },
    /// Freeing what is left of the ECall's local blocks.
    Drain,
    /// Trimming the store.
    Trim,
}

struct VThread<'a> {
    gen: Gen,
    trim_rng: Rng,
    ops: usize,
    other: bool,
    handle: Option<Box<dyn Handle + 'a>>,
    /// Its attach was refused for memory, and counted, since it last
    /// attached.
    refused: bool,
    local: Vec<Blk>,
    to_store: Vec<Blk>,
    victims: Vec<Blk>,
    phase: Phase,
}

struct World {
    store: Vec<Blk>,
    store_bytes: usize,
    live: u64,
    peak_live: u64,
    bands: SizeBands,
    bands_at_peak: SizeBands,
    oom: u64,
    done: u64,
}

/// Replays ecall-churn with `p` on `alloc`; every block is freed at the end.
pub fn replay(alloc: &dyn RegionAlloc, p: &Params, s: Schedule) -> ReplayOutcome {
    let n = p.workers + p.others;
    let mut threads: Vec<VThread<'_>> = (0..n)
        .map(|i| VThread {
            gen: Gen::new(p, i),
            trim_rng: Rng::for_thread(p.seed ^ 0x7121_3000, i),
            ops: if i >= p.workers {
                p.other_ops
            } else {
                p.worker_ops
            },
            other: i >= p.workers,
            handle: None,
            refused: false,
            local: Vec::new(),
            to_store: Vec::new(),
            victims: Vec::new(),
            phase: Phase::Out { wake_at: 0 },
        })
        .collect();
    let mut sched = Rng::new(p.seed ^ 0x5c4e_d011);
    let mut w = World {
        store: Vec::new(),
        store_bytes: 0,
        live: 0,
        peak_live: 0,
        bands: SizeBands::default(),
        bands_at_peak: SizeBands::default(),
        oom: 0,
        done: 0,
    };
    let mut peak_reserved = 0u64;
    let mut class_table_at_peak = None;
    let sleep_ops = (p.other_sleep.as_secs_f64() * s.ops_per_s as f64) as u64;
    let mut shared = if s.one_allocator {
        Some(
            alloc
                .attach()
                .expect("an allocator can attach before the replay starts"),
        )
    } else {
        None
    };
    while w.done < s.ops {
        let t = &mut threads[sched.below(n)];
        let slice = 1 + sched.below((2 * s.mean_slice.max(1) - 1) as usize) as u64;
        let end = w.done + slice;
        while w.done < end {
            let before = w.done;
            if !step(alloc, p, &s, t, &mut shared, &mut w, sleep_ops) {
                // Asleep: the core idles for a turn, and virtual time goes
                // on (so a replay of sleeping threads alone still ends).
                w.done += 1;
                break;
            }
            if w.done / 1000 != before / 1000 {
                let reserved = alloc.reserved_bytes() as u64;
                if reserved > peak_reserved {
                    peak_reserved = reserved;
                    if s.tables {
                        class_table_at_peak = alloc.class_table();
                    }
                }
            }
        }
    }
    // Finish: detach everyone (so an allocator is free to attach even in a
    // full region), then free the store and what ECalls held.
    for t in threads.iter_mut() {
        t.handle = None;
    }
    let mut h = shared.or_else(|| {
        Some(
            alloc
                .attach()
                .expect("an allocator can attach once every virtual thread has detached"),
        )
    });
    for t in threads.iter_mut() {
        let blocks = t
            .local
            .drain(..)
            .chain(t.to_store.drain(..))
            .chain(t.victims.drain(..));
        for b in blocks.collect::<Vec<_>>() {
            free(h.as_deref_mut(), &mut w, b);
        }
    }
    for b in std::mem::take(&mut w.store) {
        free(h.as_deref_mut(), &mut w, b);
    }
    ReplayOutcome {
        oom_count: w.oom,
        peak_requested_bytes: w.peak_live,
        peak_reserved_bytes: alloc
            .peak_reserved_bytes()
            .map_or(peak_reserved, |b| b as u64),
        class_table_at_peak,
        live_by_size_at_peak: w.bands_at_peak,
    }
}

/// The handle a virtual thread works through: the one shared by every
/// thread ([`Schedule::one_allocator`]), else its own.
fn handle<'x, 'a>(
    own: &'x mut Option<Box<dyn Handle + 'a>>,
    shared: &'x mut Option<Box<dyn Handle + 'a>>,
) -> Option<&'x mut (dyn Handle + 'a)> {
    match shared {
        Some(h) => Some(h.as_mut()),
        None => own.as_deref_mut(),
    }
}

/// One step of virtual thread `t`: one operation, or a phase change.
/// Returns false when the thread cannot go on now (asleep).
fn step<'a>(
    alloc: &'a dyn RegionAlloc,
    p: &Params,
    s: &Schedule,
    t: &mut VThread<'a>,
    shared: &mut Option<Box<dyn Handle + 'a>>,
    w: &mut World,
    sleep_ops: u64,
) -> bool {
    match t.phase {
        Phase::Out { wake_at } => {
            if w.done < wake_at {
                return false;
            }
            if shared.is_none() {
                match alloc.attach() {
                    Ok(h) => {
                        t.handle = Some(h);
                        t.refused = false;
                    }
                    Err(why) => {
                        // One failure per ECall, however many retries.
                        if why == Refused::OutOfMemory && !t.refused {
                            w.oom += 1;
                            t.refused = true;
                        }
                        return false;
                    }
                }
            }
            t.phase = Phase::Alloc { done: 0 };
        }
        Phase::Alloc { done } => {
            let mut sink = ReplaySink {
                h: handle(&mut t.handle, shared),
                w,
            };
            t.phase = match alloc_step(
                &mut t.gen,
                t.ops,
                done,
                &mut sink,
                &mut t.local,
                &mut t.to_store,
            ) {
                Some(done) => Phase::Alloc { done },
                None => Phase::Drain,
            };
        }
        Phase::Drain => {
            if t.local.is_empty() {
                let now_s = w.done as f64 / s.ops_per_s as f64;
                let target = p.store_target_bytes(now_s);
                for b in t.to_store.drain(..) {
                    w.store_bytes += b.layout.size();
                    w.store.push(b);
                }
                while w.store_bytes > target && !w.store.is_empty() {
                    let i = t.trim_rng.below(w.store.len());
                    let b = w.store.swap_remove(i);
                    w.store_bytes -= b.layout.size();
                    t.victims.push(b);
                }
                t.phase = Phase::Trim;
            } else {
                let i = t.gen.rng.below(t.local.len());
                let b = t.local.swap_remove(i);
                free(handle(&mut t.handle, shared), w, b);
            }
        }
        Phase::Trim => match t.victims.pop() {
            Some(b) => free(handle(&mut t.handle, shared), w, b),
            None => {
                t.handle = None;
                let wake_at = if t.other { w.done + sleep_ops } else { 0 };
                t.phase = Phase::Out { wake_at };
            }
        },
    }
    true
}

/// The allocator and books of a replay, as an ECall sees them.
struct ReplaySink<'h, 'w> {
    h: Option<&'h mut (dyn Handle + 'w)>,
    w: &'h mut World,
}

impl Sink for ReplaySink<'_, '_> {
    type B = Blk;
    fn alloc(&mut self, size: usize) -> Option<Blk> {
        let layout = layout_of(size);
        let w = &mut *self.w;
        w.done += 1;
        let ptr = self
            .h
            .as_deref_mut()
            .map(|h| h.alloc(layout))
            .filter(|p| !p.is_null());
        let Some(ptr) = ptr else {
            w.oom += 1;
            return None;
        };
        w.live += layout.size() as u64;
        w.bands.add(layout.size());
        if w.live > w.peak_live {
            w.peak_live = w.live;
            w.bands_at_peak = w.bands;
        }
        Some(Blk { ptr, layout })
    }
    fn free(&mut self, b: Blk) {
        free(self.h.as_deref_mut(), self.w, b);
    }
}

fn free(h: Option<&mut (dyn Handle + '_)>, w: &mut World, b: Blk) {
    let Some(h) = h else { return };
    // SAFETY: `b` came from a handle of this allocator with this layout and
    // leaves the replay's books here, so it is freed once.
    unsafe { h.dealloc(b.ptr, b.layout) };
    w.live -= b.layout.size() as u64;
    w.bands.remove(b.layout.size());
    w.done += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::AllocSpec;
    use crate::region::Region;
    use crate::workload::ecall_churn::tests::params;

    fn once(spec: &str, mib: usize, seed: u64) -> ReplayOutcome {
        let a = AllocSpec::parse(spec)
            .and_then(|s| s.on_one_thread().build(Region::map(mib << 20)?))
            .expect("build");
        let s = Schedule {
            ops: 3_000_000,
            ..Schedule::default()
        };
        let o = replay(a.as_ref(), &params(seed), s);
        // Everything was freed at the end.
        assert!(a.check().is_empty(), "{spec}: {:?}", a.check());
        o
    }

    #[test]
    fn a_replay_is_exactly_repeatable() {
        for spec in ["snugalloc", "dlmalloc"] {
            let (a, b) = (once(spec, 64, 7), once(spec, 64, 7));
            assert_eq!(a.oom_count, 0, "{spec}");
            assert_eq!(a.peak_requested_bytes, b.peak_requested_bytes, "{spec}");
            assert_eq!(a.peak_reserved_bytes, b.peak_reserved_bytes, "{spec}");
            assert!(a.peak_reserved_bytes >= a.peak_requested_bytes, "{spec}");
        }
        assert_ne!(
            once("snugalloc", 64, 7).peak_requested_bytes,
            once("snugalloc", 64, 8).peak_requested_bytes
        );
    }

    /// Forwards to an allocator and counts its attaches.
    struct CountingAttaches {
        inner: Box<dyn RegionAlloc>,
        attaches: std::sync::atomic::AtomicUsize,
    }

    impl RegionAlloc for CountingAttaches {
        fn label(&self) -> String {
            self.inner.label()
        }
        fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused> {
            self.attaches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.attach()
        }
        fn reserved_bytes(&self) -> usize {
            self.inner.reserved_bytes()
        }
        fn peak_reserved_bytes(&self) -> Option<usize> {
            self.inner.peak_reserved_bytes()
        }
        fn region(&self) -> Option<&Region> {
            self.inner.region()
        }
        fn check(&self) -> Vec<String> {
            self.inner.check()
        }
    }

    #[test]
    fn one_allocator_replays_the_same_workload_through_one_attach() {
        let run = |one_allocator: bool| {
            let a = CountingAttaches {
                inner: AllocSpec::parse("snugalloc")
                    .and_then(|s| s.on_one_thread().build(Region::map(64 << 20)?))
                    .expect("build"),
                attaches: Default::default(),
            };
            let s = Schedule {
                ops: 1_000_000,
                one_allocator,
                ..Schedule::default()
            };
            let o = replay(&a, &params(3), s);
            assert!(a.check().is_empty(), "{:?}", a.check());
            (o, a.attaches.into_inner())
        };
        let (own, own_attaches) = run(false);
        let (one, one_attaches) = run(true);
        assert_eq!(one_attaches, 1);
        // One per ECall (thousands), plus the final one.
        assert!(own_attaches > 1000, "{own_attaches}");
        // Same requests in the same order: the workload does not depend on
        // the handles.
        assert_eq!(own.oom_count + one.oom_count, 0);
        assert_eq!(own.peak_requested_bytes, one.peak_requested_bytes);
        // What the diagnostic is for: per-thread slabs cost memory, so one
        // allocator holds less at its peak.
        assert!(
            one.peak_reserved_bytes < own.peak_reserved_bytes,
            "{} vs {}",
            one.peak_reserved_bytes,
            own.peak_reserved_bytes
        );
    }

    #[test]
    fn a_region_too_small_counts_failures_and_frees_everything() {
        let o = once("snugalloc", 8, 1);
        assert!(o.oom_count > 0);
        assert!(o.peak_reserved_bytes <= 8 << 20);
    }

    #[test]
    fn size_bands_split_at_their_limits_and_count_rounding_above_2_kib() {
        let mut b = SizeBands::default();
        for size in [1024, 1025, 2048, 2049, 4096, 4097, 32768, 32769] {
            b.add(size);
        }
        assert_eq!(
            b.bytes,
            [1024, 1025 + 2048, 2049 + 4096, 4097 + 32768, 32769]
        );
        // 2049 -> 4096, 4097 -> 8192, 32769 -> 36864; the rest are exact
        // or at most 2 KiB.
        assert_eq!(b.round_to_4k_bytes, 2047 + 4095 + 4095);
        for size in [1024, 1025, 2048, 2049, 4096, 4097, 32768, 32769] {
            b.remove(size);
        }
        assert_eq!(b, SizeBands::default());
    }

    #[test]
    fn the_replay_reports_the_live_mix_and_the_table_at_the_peak() {
        let a = AllocSpec::parse("snugalloc")
            .expect("spec")
            .on_one_thread()
            .build(Region::map(64 << 20).expect("region"))
            .expect("heap");
        let s = Schedule {
            ops: 300_000,
            tables: true,
            ..Schedule::default()
        };
        let o = replay(a.as_ref(), &params(1), s);
        assert_eq!(
            o.live_by_size_at_peak.bytes.iter().sum::<u64>(),
            o.peak_requested_bytes
        );
        assert!(
            o.live_by_size_at_peak.bytes.iter().all(|&b| b > 0),
            "{}",
            o.live_by_size_at_peak
        );
        let table = o
            .class_table_at_peak
            .expect("snugalloc gives a class table");
        assert!(!table.rows.is_empty());
    }
}
