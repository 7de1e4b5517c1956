//! Workloads: the allocation patterns the simulator replays, and the
//! machinery they share (per-thread counters, guard bytes, the ECall helper).
//!
//! A workload is a set of threads that run until told to stop. Each thread
//! draws every random choice from its own [`Rng`] seeded from `--seed` and
//! its index, so its sequence of requests is a pure function of the seed
//! (the `trace` function of each workload shows it); the interleaving of
//! threads is not.
//!
//! Every block a workload receives is checked to lie in the allocator's
//! region, gets guard bytes written at both ends, and has them checked before
//! it is freed ([`guard`]); a null return counts as out of memory and the
//! operation is skipped.

pub mod churn;
pub mod ecall_churn;
pub mod guard;
pub mod producer_consumer;
pub mod sizes;

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alloc::{Handle, Refused, RegionAlloc};
use crate::rng::Rng;

/// Alignment of every block the workloads request.
pub const BLOCK_ALIGN: usize = 16;

/// The names `--workload` accepts.
pub const WORKLOAD_ALLOWED: &str = "ecall-churn, churn, producer-consumer, sizes";

/// Counters one thread updates and the sampler reads.
///
/// Only the owning thread writes (Relaxed is enough: the sampler wants a
/// recent value, not a synchronised one); `live_bytes` of one thread can go
/// negative when it frees blocks other threads allocated; the sum over all
/// threads is the live requested bytes.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Requested bytes allocated minus freed by this thread.
    pub live_bytes: AtomicI64,
    /// Allocations that succeeded plus frees (a null return is counted in
    /// `oom`, not here).
    pub ops: AtomicU64,
    /// Null returns.
    pub oom: AtomicU64,
    /// Blocks whose guard bytes changed.
    pub corruption: AtomicU64,
    /// Blocks outside the region.
    pub escapes: AtomicU64,
}

/// Live requested bytes over all threads, exactly, and their peak
/// (`run --exact-live`): every allocation and free of every thread updates
/// one shared counter, so the peak between two samples is seen too. That
/// costs each operation an atomic on a shared cache line (about 7% of
/// snugalloc's ecall-churn throughput on a 2-core machine, measured before
/// the per-class counts below, which add two more to blocks of a class and
/// a call of `RegionAlloc::class_of` to every block), so it is off unless
/// asked for. With it, the requested bytes and blocks live in each of the
/// allocator's size classes are counted too (snugalloc only), for the class
/// table at the peak.
#[repr(align(128))]
#[derive(Debug)]
pub struct ExactLive {
    live: AtomicI64,
    peak: AtomicI64,
    /// On lines of their own, away from `live` and `peak`.
    by_class: PerClass,
}

/// Requested bytes and blocks live in each size class.
#[repr(align(128))]
#[derive(Debug)]
struct PerClass([ClassLive; snugalloc::NUM_CLASSES]);

/// One class's live requested bytes and blocks, side by side, so that one
/// block's update touches one cache line.
#[derive(Debug, Default)]
struct ClassLive {
    bytes: AtomicI64,
    blocks: AtomicI64,
}

impl Default for ExactLive {
    fn default() -> ExactLive {
        ExactLive {
            live: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            by_class: PerClass(core::array::from_fn(|_| ClassLive::default())),
        }
    }
}

impl ExactLive {
    /// One block of `bytes` requested bytes more (`blocks` 1) or fewer
    /// (-1) in `class`.
    fn add_to_class(&self, class: usize, bytes: i64, blocks: i64) {
        if let Some(c) = self.by_class.0.get(class) {
            // Relaxed: statistics read by the sampler.
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
            c.blocks.fetch_add(blocks, Ordering::Relaxed);
        }
    }

    /// Requested bytes and blocks live now in each size class (a racy
    /// read, as the samples are).
    pub fn class_live(&self) -> Vec<(i64, i64)> {
        // Relaxed: see `add_to_class`.
        self.by_class
            .0
            .iter()
            .map(|c| {
                (
                    c.bytes.load(Ordering::Relaxed),
                    c.blocks.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn add(&self, bytes: i64) {
        // Relaxed: every update is a read-modify-write of one counter, so
        // each sees the counter's exact value in its modification order; the
        // peak is the largest of those values.
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    fn sub(&self, bytes: i64) {
        // Relaxed: see `add`.
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Requested bytes live now.
    pub fn live_bytes(&self) -> i64 {
        // Relaxed: read by the sampler (racy, as every sample is) and after
        // the threads were joined.
        self.live.load(Ordering::Relaxed)
    }

    /// The most requested bytes live at any moment so far.
    pub fn peak_bytes(&self) -> u64 {
        // Relaxed: read after the threads were joined.
        self.peak.load(Ordering::Relaxed).max(0) as u64
    }
}

/// Totals over all threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Live requested bytes.
    pub live_bytes: i64,
    /// Operations so far.
    pub ops: u64,
    /// Out-of-memory count.
    pub oom: u64,
    /// Corruption count.
    pub corruption: u64,
    /// Region escapes.
    pub escapes: u64,
}

/// Sums the counters of all threads.
pub fn totals(counters: &[ThreadCounters]) -> Totals {
    let mut t = Totals::default();
    for c in counters {
        // Relaxed: statistics; see ThreadCounters.
        t.live_bytes += c.live_bytes.load(Ordering::Relaxed);
        t.ops += c.ops.load(Ordering::Relaxed);
        t.oom += c.oom.load(Ordering::Relaxed);
        t.corruption += c.corruption.load(Ordering::Relaxed);
        t.escapes += c.escapes.load(Ordering::Relaxed);
    }
    t
}

/// What every workload thread gets.
pub struct Ctx<'a> {
    /// The allocator under test.
    pub alloc: &'a dyn RegionAlloc,
    /// One counter set per thread, plus one for the final clean-up.
    pub counters: &'a [ThreadCounters],
    /// Set by the sampler to end the run early (Ctrl-C, out of memory) or
    /// when the time is up.
    pub stop: &'a AtomicBool,
    /// When the run started.
    pub start: Instant,
    /// When the run's time is up (`None`: never, the duration overflowed).
    /// The threads check it themselves, so that they stop on time even when
    /// the sampler is not scheduled (see [`Ctx::stopping`]).
    pub deadline: Option<Instant>,
    /// Test hook: damage the guard of every Nth block a thread allocates.
    pub inject_corruption_every: Option<u64>,
    /// The exact live-bytes counter, when the run keeps one.
    pub exact_live: Option<&'a ExactLive>,
    /// The cap on operations per second, when the run has one.
    pub pace: Option<&'a Pace>,
}

impl Ctx<'_> {
    /// Whether the run should stop: the sampler raised the stop flag, or
    /// the run's time is up.
    ///
    /// The deadline is checked here and not left to the sampler alone: the
    /// threads never block, so a scheduler that does not share the CPU
    /// fairly can leave the sampler (a thread that sleeps between ticks)
    /// waiting for a long time, and the threads would run on until it ran
    /// again. Under valgrind's default scheduler (`--fair-sched=no`) the
    /// sampler's first tick came 2-31 s late in a 4 s run, and a callgrind
    /// run never ended in 15 minutes.
    pub fn stopping(&self) -> bool {
        // Relaxed: a flag polled between ECalls; nothing is published with it.
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Seconds since the run started.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A cap on the run's operations per second (`--pace`), shared by its
/// threads.
///
/// A thread adds its operations to `issued` every [`Pace::STEP`] of them
/// and sleeps while the total is ahead of `ops_per_s` times the time since
/// the start. It sleeps where it is, in the middle of an ECall, holding
/// the ECall's blocks, as a thread held up by a slow allocator does (a
/// pace kept between ECalls would leave most threads with no ECall open
/// and lower the live bytes: 25 MiB at the peak against first fit's 28 in
/// one 5 s run at 800k operations/s). A fast allocator is then measured
/// over the same number of operations as a slow one in the same time: the
/// min-heap of a fixed-time run grows with the operations in it (more
/// large requests near the store's crest, more chances that one finds no
/// run), so without a common pace a faster allocator is searched over
/// more of them.
#[repr(align(128))]
#[derive(Debug)]
pub struct Pace {
    ops_per_s: u64,
    issued: AtomicU64,
}

impl Pace {
    /// Operations a thread does between two looks at the shared total.
    const STEP: u64 = 16;

    /// A pace of `ops_per_s` (at least 1) operations per second.
    pub fn new(ops_per_s: u64) -> Pace {
        Pace {
            ops_per_s: ops_per_s.max(1),
            issued: AtomicU64::new(0),
        }
    }

    /// Counts `done` more operations of `ctx`'s run and sleeps while the
    /// run is ahead of its pace, in steps of at most 50 ms so that a stop
    /// request is seen, and never past the run's deadline.
    fn wait(&self, ctx: &Ctx<'_>, done: u64) {
        // Relaxed: a running total; it decides a sleep and publishes nothing.
        let issued = self.issued.fetch_add(done, Ordering::Relaxed) + done;
        let due = Duration::from_secs_f64(issued as f64 / self.ops_per_s as f64);
        while !ctx.stopping() {
            let Some(ahead) = due.checked_sub(ctx.start.elapsed()) else {
                return;
            };
            let mut nap = ahead.min(Duration::from_millis(50));
            if let Some(d) = ctx.deadline {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            std::thread::sleep(nap);
        }
    }
}

/// A live block the simulator owns.
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
    /// Unique to the allocation (thread and count), mixed into its guards.
    tag: u64,
}

// SAFETY: a `Block` is exclusive ownership of an allocation; the allocators
// under test all allow freeing from any thread.
unsafe impl Send for Block {}

impl Block {
    /// Requested size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// One thread's view while it runs: its counters and its allocation count
/// (for the corruption-injection hook).
pub struct Worker<'c> {
    /// The thread's counters.
    pub counters: &'c ThreadCounters,
    exact_live: Option<&'c ExactLive>,
    /// The allocator, for its size classes (with `exact_live` only).
    alloc: &'c dyn RegionAlloc,
    allocs: u64,
    /// The thread's index, in the top bits of its blocks' tags.
    index: u64,
    inject_every: Option<u64>,
    region: Option<(usize, usize)>,
    /// The run's pace and the run, when it has one (see [`Pace`]).
    paced: Option<(&'c Pace, &'c Ctx<'c>)>,
    /// Operations not yet counted against the pace.
    unpaced: u64,
}

impl<'c> Worker<'c> {
    /// The worker of thread `index`.
    pub fn new(ctx: &'c Ctx<'_>, index: usize) -> Worker<'c> {
        let region = ctx.alloc.region().map(|r| (r.base() as usize, r.len()));
        Worker {
            counters: &ctx.counters[index],
            exact_live: ctx.exact_live,
            alloc: ctx.alloc,
            allocs: 0,
            index: index as u64,
            inject_every: ctx.inject_corruption_every,
            region,
            paced: ctx.pace.map(|pace| (pace, ctx)),
            unpaced: 0,
        }
    }

    /// Attaches (starts an ECall), retrying while snugalloc's pool is empty
    /// unless the run is stopping. An ECall refused for memory counts as
    /// one out-of-memory failure, however many retries it takes.
    pub fn attach<'h>(&self, ctx: &'h Ctx<'_>) -> Option<Box<dyn Handle + 'h>> {
        let mut counted = false;
        loop {
            match ctx.alloc.attach() {
                Ok(h) => return Some(h),
                Err(Refused::OutOfMemory) if !counted => {
                    // Relaxed: statistics; see ThreadCounters.
                    self.counters.oom.fetch_add(1, Ordering::Relaxed);
                    counted = true;
                }
                Err(_) => {}
            }
            if ctx.stopping() {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Counts one operation against the run's pace, if it has one. Inlined,
    /// so that an unpaced run pays one test of a field per operation (as a
    /// call it took 0.5% of an unpaced snugalloc run's samples).
    #[inline(always)]
    fn paced_op(&mut self) {
        if let Some((pace, ctx)) = self.paced {
            self.count_paced(pace, ctx);
        }
    }

    /// [`Worker::paced_op`] of a paced run.
    #[cold]
    fn count_paced(&mut self, pace: &Pace, ctx: &Ctx<'_>) {
        self.unpaced += 1;
        if self.unpaced == Pace::STEP {
            self.unpaced = 0;
            pace.wait(ctx, Pace::STEP);
        }
    }

    /// Allocates `size` bytes and writes its guards; `None` on out of memory
    /// (counted) or a block outside the region (counted, leaked).
    pub fn alloc(&mut self, h: &mut dyn Handle, size: usize) -> Option<Block> {
        let layout = layout_of(size);
        let p = h.alloc(layout);
        let Some(ptr) = NonNull::new(p) else {
            // Relaxed: statistics; see ThreadCounters. A failed allocation
            // is no operation done (throughput counts the work served).
            self.counters.oom.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // Relaxed: statistics; see ThreadCounters.
        self.counters.ops.fetch_add(1, Ordering::Relaxed);
        self.paced_op();
        if let Some((base, len)) = self.region {
            let a = p as usize;
            if a < base || a.saturating_add(size) > base + len {
                self.counters.escapes.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "snugalloc-sim: block {p:p} of {size} bytes lies outside the region {base:#x}..{:#x}",
                    base + len
                );
                return None;
            }
        }
        self.allocs += 1;
        let tag = self.index << 48 | self.allocs;
        // SAFETY: `p` is a fresh allocation of `size` bytes.
        unsafe { guard::write(p, size, tag) };
        if self.inject_every.is_some_and(|n| self.allocs % n == 0) {
            // SAFETY: the last byte of the block is inside it.
            unsafe { p.add(size - 1).write(p.add(size - 1).read() ^ 0xFF) };
        }
        self.counters
            .live_bytes
            .fetch_add(size as i64, Ordering::Relaxed);
        if let Some(e) = self.exact_live {
            e.add(size as i64);
            if let Some(class) = self.alloc.class_of(size) {
                e.add_to_class(class, size as i64, 1);
            }
        }
        Some(Block { ptr, size, tag })
    }

    /// Checks a block's guards and frees it; a damaged block is counted,
    /// reported and leaked (its neighbours' metadata cannot be trusted).
    pub fn free(&mut self, h: &mut dyn Handle, block: Block) {
        let p = block.ptr.as_ptr();
        // Relaxed: statistics; see ThreadCounters.
        self.counters.ops.fetch_add(1, Ordering::Relaxed);
        self.paced_op();
        self.counters
            .live_bytes
            .fetch_sub(block.size as i64, Ordering::Relaxed);
        if let Some(e) = self.exact_live {
            e.sub(block.size as i64);
            if let Some(class) = self.alloc.class_of(block.size) {
                e.add_to_class(class, -(block.size as i64), -1);
            }
        }
        // SAFETY: the block is live and owned by us; guards were written at
        // allocation.
        if let Err(at) = unsafe { guard::check(p, block.size, block.tag) } {
            let n = self.counters.corruption.fetch_add(1, Ordering::Relaxed);
            if n < 5 {
                eprintln!(
                    "snugalloc-sim: corruption: block {p:p} of {} bytes changed at offset {at}",
                    block.size
                );
            }
            return;
        }
        // SAFETY: `p` came from `alloc` of this allocator with this layout
        // and is freed exactly once (the `Block` is consumed).
        unsafe { h.dealloc(p, layout_of(block.size)) };
    }
}

/// The layout the workloads use for `size` bytes.
pub fn layout_of(size: usize) -> Layout {
    // Sizes are positive and far below isize::MAX; align is a power of two.
    Layout::from_size_align(size.max(1), BLOCK_ALIGN).unwrap_or(Layout::new::<[u8; 16]>())
}

/// A size distribution over four bands, in percent:
/// 16 B-512 B, 512 B-4 KiB, 4-32 KiB (half of them exactly 8, 16 or
/// 32 KiB), 64-512 KiB; sizes log-uniform within a band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeMix {
    /// Cumulative thresholds in [0, 1].
    cumulative: [f64; 4],
}

/// What `--worker-mix` and `--other-mix` accept.
pub const MIX_ALLOWED: &str = "four percentages summing to 100, like 70,20,8,2";

impl SizeMix {
    /// Parses `a,b,c,d` percentages summing to 100.
    pub fn parse(text: &str) -> Result<SizeMix, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("'{text}' is not {MIX_ALLOWED}"))?;
        if parts.len() != 4 || parts.iter().any(|p| *p < 0.0) {
            return Err(format!("'{text}' is not {MIX_ALLOWED}"));
        }
        let sum: f64 = parts.iter().sum();
        if (sum - 100.0).abs() > 0.01 {
            return Err(format!("'{text}' sums to {sum}, not 100 ({MIX_ALLOWED})"));
        }
        let mut cumulative = [0.0; 4];
        let mut acc = 0.0;
        for (c, p) in cumulative.iter_mut().zip(&parts) {
            acc += p / 100.0;
            *c = acc;
        }
        Ok(SizeMix { cumulative })
    }

    /// Draws one size.
    pub fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        if u < self.cumulative[0] {
            rng.log_uniform(16, 512)
        } else if u < self.cumulative[1] {
            rng.log_uniform(512, 4096)
        } else if u < self.cumulative[2] {
            if rng.chance(0.5) {
                [8 << 10, 16 << 10, 32 << 10][rng.below(3)]
            } else {
                rng.log_uniform(4096, 32 << 10)
            }
        } else {
            rng.log_uniform(64 << 10, 512 << 10)
        }
    }
}

/// Bound on the sizes [`SizeMix::draw`] returns (it returns less).
pub const MIX_MAX_BYTES: usize = 512 << 10;

/// A running workload instance (fresh shared state for every allocator).
pub trait Workload: Send + Sync {
    /// Number of threads `run_thread` is called for.
    fn thread_count(&self) -> usize;

    /// Runs thread `index` until `ctx.stopping()`.
    fn run_thread(&self, index: usize, ctx: &Ctx<'_>);

    /// Frees every block still held in shared state, using counter set
    /// `thread_count()` (after all threads have returned).
    fn finish(&self, ctx: &Ctx<'_>);

    /// The period of the workload's planned rise and fall of live bytes,
    /// if it has one: the growth figure compares windows a whole number of
    /// periods apart, so that the wave itself does not read as growth.
    fn period(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Frees every block in `blocks` in one ECall, on counter set `index`.
pub fn free_all(ctx: &Ctx<'_>, index: usize, blocks: Vec<Block>) {
    let mut w = Worker::new(ctx, index);
    if blocks.is_empty() {
        return;
    }
    // At the end of a run nothing else holds a handle, so attach succeeds;
    // if it did not, the blocks are leaked with the region.
    let Ok(mut h) = ctx.alloc.attach() else {
        return;
    };
    for b in blocks {
        w.free(h.as_mut(), b);
    }
}
