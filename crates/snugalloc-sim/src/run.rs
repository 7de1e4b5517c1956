//! Run: one workload against one allocator for a fixed time, with a sampler.
//!
//! The calling thread becomes the sampler: every [`TICK`] it sums the
//! threads' counters (live requested bytes, operations, failures) and reads
//! the allocator's reserved bytes, hands the [`Sample`] to the caller (CSV
//! rows, progress bar, the child's pipe) and, when reserved bytes reach a new
//! peak, takes the allocator's size-class table (so at most once per tick).
//! When the time is up each thread finishes its ECall and returns (the
//! threads watch the deadline themselves, and the sampler also raises the
//! stop flag, which ends a run early too); then the workload frees what it
//! still holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::alloc::{ClassTable, RegionAlloc};
use crate::workload::{totals, Ctx, ExactLive, Pace, ThreadCounters, Workload};

/// The sampling period.
pub const TICK: Duration = Duration::from_millis(100);

/// One sample of a run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Live requested bytes.
    pub requested_bytes: u64,
    /// Reserved bytes (the allocator's footprint).
    pub reserved_bytes: u64,
    /// Operations per second since the previous sample.
    pub ops_per_s: f64,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Allocator label.
    pub alloc: String,
    /// Samples, one per tick (plus one at t = 0).
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Null returns.
    pub oom_count: u64,
    /// Blocks whose guard bytes changed.
    pub corruption_count: u64,
    /// Blocks handed out outside the region.
    pub escape_count: u64,
    /// Allocations plus frees.
    pub total_ops: u64,
    /// Seconds the threads ran.
    pub elapsed_s: f64,
    /// CPU seconds the process used while they ran (all threads, user and
    /// system), from the start to the end of the last ECall.
    #[serde(default)]
    pub cpu_s: f64,
    /// The size-class table when reserved bytes last reached a new peak.
    pub class_table_at_peak: Option<ClassTable>,
    /// Reserved bytes after the workload freed everything.
    pub residual_reserved_bytes: u64,
    /// The allocator's exact peak of reserved bytes, where it tracks one.
    #[serde(default)]
    pub exact_peak_reserved_bytes: Option<u64>,
    /// Peak live requested bytes counted exactly (between samples too),
    /// with `--exact-live`.
    #[serde(default)]
    pub exact_peak_requested_bytes: Option<u64>,
    /// Problems found by the end-of-run checks.
    pub findings: Vec<String>,
    /// The workload's period ([`Workload::period`]), seconds.
    #[serde(default)]
    pub period_s: Option<f64>,
    /// A cache line's round trip between two cores just before and just
    /// after the run, in nanoseconds (`coherence::round_trip_ns`; the
    /// front end measures it, outside the timed run).
    #[serde(default)]
    pub core_round_trip_ns: [Option<f64>; 2],
    /// At the end of the run, allocations that waited for room and of
    /// those the ones that failed anyway
    /// ([`RegionAlloc::waits_for_room`]), where the allocator waits.
    #[serde(default)]
    pub waits_for_room: Option<[u64; 2]>,
}

/// How [`run_in_process`] runs.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// How long the threads run.
    pub duration: Duration,
    /// Corrupt every n-th block on purpose (a test of the guard checks).
    pub inject_corruption_every: Option<u64>,
    /// End the run at the first sample that sees an out-of-memory failure
    /// (a min-heap probe has failed by then; the rest of its time would be
    /// wasted).
    pub stop_on_oom: bool,
    /// Also count the peak of live requested bytes exactly (see
    /// [`ExactLive`]).
    pub exact_live: bool,
    /// Keep the samples in the outcome. A child process that streams them
    /// does not, so that their storage does not count as the resident
    /// memory of the allocator it measures (32 bytes every 100 ms: more
    /// than 1 MiB an hour).
    pub keep_samples: bool,
    /// Cap the operations per second over all threads (see [`Pace`]).
    pub pace: Option<u64>,
}

impl RunOptions {
    /// A run of `duration` that keeps its samples, with nothing else on.
    pub fn new(duration: Duration) -> RunOptions {
        RunOptions {
            duration,
            inject_corruption_every: None,
            stop_on_oom: false,
            exact_live: false,
            keep_samples: true,
            pace: None,
        }
    }
}

/// Runs `workload` on `alloc` as `opts` say, calling `on_sample` for each
/// sample as it is taken.
pub fn run_in_process(
    alloc: &dyn RegionAlloc,
    workload: &dyn Workload,
    opts: RunOptions,
    on_sample: &mut dyn FnMut(&Sample),
) -> RunOutcome {
    let RunOptions {
        duration,
        inject_corruption_every,
        stop_on_oom,
        exact_live,
        keep_samples,
        pace,
    } = opts;
    let n = workload.thread_count();
    let counters: Vec<ThreadCounters> = (0..=n).map(|_| ThreadCounters::default()).collect();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let exact = ExactLive::default();
    let pace = pace.map(Pace::new);
    let ctx = Ctx {
        alloc,
        counters: &counters,
        stop: &stop,
        start,
        deadline: start.checked_add(duration),
        inject_corruption_every,
        exact_live: exact_live.then_some(&exact),
        pace: pace.as_ref(),
    };
    // Reserved for an hour at most; a longer soak grows the vector.
    let expected = (duration.as_millis() / TICK.as_millis()).min(36_000) as usize + 2;
    let mut samples = Vec::with_capacity(if keep_samples { expected } else { 0 });
    let mut peak_reserved = 0u64;
    let mut class_table_at_peak = None;
    let first = Sample {
        t_s: 0.0,
        requested_bytes: 0,
        reserved_bytes: alloc.reserved_bytes() as u64,
        ops_per_s: 0.0,
    };
    on_sample(&first);
    if keep_samples {
        samples.push(first);
    }
    let cpu_start = process_cpu_s();
    std::thread::scope(|s| {
        for i in 0..n {
            let ctx = &ctx;
            s.spawn(move || workload.run_thread(i, ctx));
        }
        let (mut tick, mut last_ops, mut last_t) = (1u32, 0u64, 0.0f64);
        loop {
            let due = (TICK * tick).min(duration);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let t = start.elapsed();
            let tot = totals(&counters);
            let reserved = alloc.reserved_bytes() as u64;
            let t_s = t.as_secs_f64();
            let dt = (t_s - last_t).max(1e-9);
            let sample = Sample {
                t_s,
                requested_bytes: tot.live_bytes.max(0) as u64,
                reserved_bytes: reserved,
                ops_per_s: (tot.ops - last_ops) as f64 / dt,
            };
            (last_ops, last_t) = (tot.ops, t_s);
            if reserved > peak_reserved {
                peak_reserved = reserved;
                if let Some(mut table) = alloc.class_table() {
                    if exact_live {
                        table.add_requested(
                            &exact.class_live(),
                            exact.live_bytes(),
                            snugalloc::class_size,
                        );
                    }
                    class_table_at_peak = Some(table);
                }
            }
            on_sample(&sample);
            if keep_samples {
                samples.push(sample);
            }
            if t >= duration || crate::interrupt::requested() || (stop_on_oom && tot.oom > 0) {
                break;
            }
            tick += 1;
        }
        // Relaxed: the threads poll it; their results are joined by the scope.
        stop.store(true, Ordering::Relaxed);
    });
    // After the join, as the operations and the CPU time below are.
    let elapsed = start.elapsed();
    // The threads have finished their last ECall: the operations counted
    // below and the CPU time cover the same work.
    let cpu_s = process_cpu_s() - cpu_start;
    let during = totals(&counters);
    workload.finish(&ctx);
    let after = totals(&counters);
    let mut findings = alloc.check();
    let exact_left = exact.live_bytes();
    if exact_live && exact_left != 0 && after.corruption == 0 && after.escapes == 0 {
        findings.push(format!(
            "{exact_left} requested bytes still counted live exactly after the final free"
        ));
    }
    if after.live_bytes != 0 && after.corruption == 0 && after.escapes == 0 {
        findings.push(format!(
            "{} requested bytes still counted live after the final free",
            after.live_bytes
        ));
    }
    RunOutcome {
        alloc: alloc.label(),
        samples,
        oom_count: after.oom,
        corruption_count: after.corruption,
        escape_count: after.escapes,
        total_ops: during.ops,
        elapsed_s: elapsed.as_secs_f64(),
        cpu_s,
        class_table_at_peak,
        residual_reserved_bytes: alloc.reserved_bytes() as u64,
        exact_peak_reserved_bytes: alloc.peak_reserved_bytes().map(|b| b as u64),
        exact_peak_requested_bytes: exact_live.then(|| exact.peak_bytes()),
        findings,
        period_s: workload.period().map(|p| p.as_secs_f64()),
        core_round_trip_ns: [None, None],
        waits_for_room: alloc.waits_for_room(),
    }
}

/// Where the two windows of the growth figure start, each a quarter of a
/// run of `end` seconds long: the second quarter, and the last quarter
/// moved back by less than one `period` so that the two start a whole
/// number of periods apart (a periodic load then averages the same in
/// both, whatever the run's length). `None` when the run is shorter than
/// two periods and the windows would coincide. Without a period: the
/// second and the last quarter, as the workload specification says.
fn growth_windows(end: f64, period: Option<f64>) -> Option<(f64, f64)> {
    let (early, late) = (0.25 * end, 0.75 * end);
    match period {
        Some(p) if p > 0.0 => {
            let whole = ((late - early) / p + 1e-9).floor();
            if whole < 1.0 {
                None
            } else if late - early - whole * p <= TICK.as_secs_f64() {
                // The last sample comes a moment after the duration: the
                // plain quarters are whole periods apart to within a tick.
                Some((early, late))
            } else {
                Some((early, early + whole * p))
            }
        }
        _ => Some((early, late)),
    }
}

/// CPU time this process has used, in seconds (all threads).
fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The per-run figures of the summary table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Allocator label.
    pub alloc: String,
    /// Peak live requested bytes (over the samples).
    pub peak_requested_bytes: u64,
    /// Peak reserved bytes (over the samples).
    pub peak_reserved_bytes: u64,
    /// peak reserved / peak requested - 1.
    pub overhead: f64,
    /// Time of the last new peak of reserved bytes, seconds.
    pub last_peak_s: f64,
    /// Mean reserved in the last quarter over the mean in the second
    /// quarter; with a periodic workload the last quarter is moved back by
    /// less than a period so that both start at the same phase (see
    /// `growth_windows`).
    pub growth_ratio: f64,
    /// Operations per second over the run.
    pub ops_per_s: f64,
    /// Operations per CPU second of the whole process (all threads): less
    /// sensitive than `ops_per_s` to other work on a shared machine, which
    /// takes cores away but adds little CPU time to this process.
    #[serde(default)]
    pub ops_per_cpu_s: f64,
    /// Null returns.
    pub oom_count: u64,
    /// Corrupted blocks.
    pub corruption_count: u64,
    /// Blocks outside the region.
    pub escape_count: u64,
    /// Reserved bytes after everything was freed.
    pub residual_reserved_bytes: u64,
    /// The allocator's exact peak of reserved bytes (between samples too),
    /// where it tracks one.
    pub exact_peak_reserved_bytes: Option<u64>,
    /// Exact peak of live requested bytes (`--exact-live`).
    #[serde(default)]
    pub exact_peak_requested_bytes: Option<u64>,
}

impl Summary {
    /// Computes the summary of an outcome.
    pub fn of(o: &RunOutcome) -> Summary {
        let peak_requested_bytes = o
            .samples
            .iter()
            .map(|s| s.requested_bytes)
            .max()
            .unwrap_or(0);
        let peak_reserved_bytes = o
            .samples
            .iter()
            .map(|s| s.reserved_bytes)
            .max()
            .unwrap_or(0);
        let mut last_peak_s = 0.0;
        let mut best = 0;
        for s in &o.samples {
            if s.reserved_bytes > best {
                best = s.reserved_bytes;
                last_peak_s = s.t_s;
            }
        }
        // The growth windows go by each sample's nominal time, its tick
        // (one sample per tick, the first at 0), not by when the sampler
        // woke: which samples at a window's edge count must not depend on
        // wake-up delays, and the last sample, taken at the duration,
        // counts as taken at the duration.
        let tick = TICK.as_secs_f64();
        let measured_end = o.samples.last().map_or(0.0, |s| s.t_s);
        let nominal = |k: usize| (k as f64 * tick).min(measured_end);
        let end = nominal(o.samples.len().saturating_sub(1));
        let mean_between = |a: f64, b: f64| {
            let v: Vec<f64> = o
                .samples
                .iter()
                .enumerate()
                .filter(|&(k, _)| {
                    let t = nominal(k);
                    // Within a microsecond: ticks are sums of floats.
                    t >= a - 1e-6 && t <= b + 1e-6
                })
                .map(|(_, s)| s.reserved_bytes as f64)
                .collect();
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let growth_ratio = growth_windows(end, o.period_s).map_or(f64::NAN, |(early, late)| {
            mean_between(late, late + 0.25 * end) / mean_between(early, early + 0.25 * end)
        });
        Summary {
            alloc: o.alloc.clone(),
            peak_requested_bytes,
            peak_reserved_bytes,
            overhead: if peak_requested_bytes > 0 {
                peak_reserved_bytes as f64 / peak_requested_bytes as f64 - 1.0
            } else {
                f64::NAN
            },
            last_peak_s,
            growth_ratio,
            ops_per_s: if o.elapsed_s > 0.0 {
                o.total_ops as f64 / o.elapsed_s
            } else {
                0.0
            },
            ops_per_cpu_s: if o.cpu_s > 0.0 {
                o.total_ops as f64 / o.cpu_s
            } else {
                f64::NAN
            },
            oom_count: o.oom_count,
            corruption_count: o.corruption_count,
            escape_count: o.escape_count,
            residual_reserved_bytes: o.residual_reserved_bytes,
            exact_peak_reserved_bytes: o.exact_peak_reserved_bytes,
            exact_peak_requested_bytes: o.exact_peak_requested_bytes,
        }
    }

    /// Whether the run failed its integrity checks.
    pub fn failed(&self) -> bool {
        self.corruption_count > 0 || self.escape_count > 0
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    /// Every figure of the summary, from samples made by hand.
    #[test]
    fn a_summary_computes_every_figure_from_its_samples() {
        // (t, requested, reserved): a rise, a first peak of 50 at t = 3,
        // a dip, the same 50 again at t = 5 (not a new peak), then 60 at
        // t = 7 and a fall.
        let points = [
            (0.0, 0, 0),
            (1.0, 10, 20),
            (2.0, 20, 30),
            (3.0, 40, 50),
            (4.0, 30, 40),
            (5.0, 35, 50),
            (6.0, 38, 44),
            (7.0, 50, 60),
            (8.0, 45, 52),
        ];
        let outcome = RunOutcome {
            alloc: "x".into(),
            samples: points
                .iter()
                .map(|&(t_s, requested_bytes, reserved_bytes)| Sample {
                    t_s,
                    requested_bytes,
                    reserved_bytes,
                    ops_per_s: 0.0,
                })
                .collect(),
            oom_count: 3,
            corruption_count: 1,
            escape_count: 2,
            total_ops: 1000,
            elapsed_s: 8.0,
            cpu_s: 16.0,
            residual_reserved_bytes: 7,
            exact_peak_reserved_bytes: Some(61),
            exact_peak_requested_bytes: Some(51),
            ..RunOutcome::default()
        };
        let s = Summary::of(&outcome);
        assert_eq!(s.alloc, "x");
        assert_eq!(s.peak_requested_bytes, 50);
        assert_eq!(s.peak_reserved_bytes, 60);
        assert!((s.overhead - 0.2).abs() < 1e-12, "{}", s.overhead);
        assert_eq!(s.last_peak_s, 7.0);
        // Last quarter (t 6-8): 44, 60, 52; second quarter (t 2-4): 30, 50, 40.
        let growth = (156.0 / 3.0) / (120.0 / 3.0);
        assert!(
            (s.growth_ratio - growth).abs() < 1e-12,
            "{}",
            s.growth_ratio
        );
        assert_eq!(s.ops_per_s, 125.0);
        assert_eq!(s.ops_per_cpu_s, 62.5);
        assert_eq!((s.oom_count, s.corruption_count, s.escape_count), (3, 1, 2));
        assert_eq!(s.residual_reserved_bytes, 7);
        assert_eq!(s.exact_peak_reserved_bytes, Some(61));
        assert_eq!(s.exact_peak_requested_bytes, Some(51));
    }

    /// A run whose reserved bytes follow the store's triangle wave (15-25,
    /// period 10 s) exactly,
    /// sampled every 100 ms for `end` seconds (the last sample at `end`,
    /// as a run's final sample comes a moment after its duration).
    fn wave_run(end: f64, period_s: Option<f64>) -> RunOutcome {
        let ticks = (end * 10.0 + 1e-6).floor() as u64;
        let times = (0..=ticks).map(|i| i as f64 / 10.0);
        let samples = times
            .chain((ticks as f64 / 10.0 < end - 1e-9).then_some(end))
            .map(|t_s| {
                let phase = (t_s / 10.0).fract();
                let tri = 1.0 - (2.0 * phase - 1.0).abs();
                let bytes = (15_000_000.0 + 10_000_000.0 * tri) as u64;
                Sample {
                    t_s,
                    requested_bytes: bytes,
                    reserved_bytes: bytes,
                    ops_per_s: 0.0,
                }
            })
            .collect();
        RunOutcome {
            samples,
            period_s,
            ..RunOutcome::default()
        }
    }

    #[test]
    fn a_wave_that_does_not_grow_reads_as_no_growth_whatever_the_length() {
        for end in [20.0, 30.0, 45.0, 600.0, 610.0] {
            let g = Summary::of(&wave_run(end, Some(10.0))).growth_ratio;
            assert!((g - 1.0).abs() < 0.005, "{end} s: {g}");
        }
        // The last sample of a real run comes a moment after its duration:
        // 20 s and 10 min runs still use the plain quarters.
        for end in [20.003, 600.004] {
            let run = wave_run(end, Some(10.0));
            let plain = RunOutcome {
                period_s: None,
                ..run.clone()
            };
            assert_eq!(
                Summary::of(&run).growth_ratio,
                Summary::of(&plain).growth_ratio,
                "{end} s"
            );
        }
        // Plain quarters of a 30 s run start half a period apart: the wave
        // alone would read as growth.
        let plain = Summary::of(&wave_run(30.0, None)).growth_ratio;
        assert!(plain > 1.05, "{plain}");
        // Shorter than two periods: no figure rather than a trivial 1.
        assert!(Summary::of(&wave_run(15.0, Some(10.0)))
            .growth_ratio
            .is_nan());
    }

    /// Samples wake a little late, each by its own delay, and the last
    /// one a little after the duration: which samples at the windows'
    /// edges (crests and troughs of the wave) count must not depend on
    /// those delays, or a wave that does not grow reads as shrinking
    /// (0.990-1.005 in a model of 0.5 ms delays, found by review).
    #[test]
    fn sampling_delays_do_not_move_the_growth_windows() {
        let on_time = Summary::of(&wave_run(20.0, Some(10.0))).growth_ratio;
        assert!((on_time - 1.0).abs() < 1e-6, "{on_time}");
        for seed in 1..=20u64 {
            let mut run = wave_run(20.0, Some(10.0));
            let mut x = seed;
            for s in &mut run.samples[1..] {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.t_s += (x >> 40) as f64 / (1u64 << 24) as f64 * 0.003;
            }
            if let Some(last) = run.samples.last_mut() {
                last.t_s = 20.004;
            }
            let g = Summary::of(&run).growth_ratio;
            assert_eq!(g, on_time, "seed {seed}");
        }
    }
}
