//! Min-heap: the smallest region in which a workload runs with no
//! out-of-memory failure, per region allocator ("how big must my enclave
//! heap be?").
//!
//! Search, in whole MiB: the upper bound is `--max-heap`, which is probed
//! first and must succeed (else the answer is "more than --max-heap"); the
//! lower bound is the smallest heap `run --heap` accepts for the workload
//! (largest object + 64 KiB) rounded up to a MiB. It is probed next, and is
//! the answer if it passes, unless it is smaller than the peak of live
//! requested bytes in the upper-bound probe (then it cannot hold what the
//! workload keeps live, and counts as failed without a probe). Between the
//! bounds, bisection keeps "lo failed, hi passed" and stops when they are
//! 1 MiB apart; the answer is hi.
//! Every probe is a fresh region and a fresh workload of `--duration`
//! (10 s by default) with the same seed.
//!
//! Bisection assumes success is monotone in the heap size; with threads it
//! is only nearly so (an unlucky interleaving may fail where a smaller heap
//! passed), so the answer is "a heap that passed one probe, 1 MiB below
//! which one failed". With `--confirm N` the answer must also pass N more
//! probes, with seeds `--seed` + 1 to + N; a size that fails one moves the
//! answer up a MiB, where all N + 1 seeds are probed again.

use serde::Serialize;

use crate::alloc::AllocSpec;
use crate::region::Region;
use crate::run::Summary;
use crate::units::MIB;

/// One probe of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Heap size in MiB.
    pub heap_mib: usize,
    /// Out-of-memory failures in the probe.
    pub oom_count: u64,
    /// Corrupted or escaping blocks (must be zero).
    pub integrity_failures: u64,
    /// Peak reserved bytes in the probe: the allocator's exact peak where
    /// it keeps one, else the highest sample. A probe stops at the first
    /// sample after a failure, so a failed probe's peak is that of the
    /// part it ran.
    pub peak_reserved_bytes: u64,
    /// Seconds the probe ran (less than the duration when it failed).
    pub seconds: f64,
    /// Peak live requested bytes in the probe.
    pub peak_requested_bytes: u64,
    /// The probe's seed, as an offset from `--seed`.
    pub seed_offset: u64,
}

/// The search result for one allocator.
#[derive(Clone, Debug, Serialize)]
pub struct MinHeap {
    /// Allocator label.
    pub alloc: String,
    /// The smallest passing heap in MiB, or `None` if even the upper bound
    /// failed.
    pub min_heap_mib: Option<usize>,
    /// The probes in order.
    pub probes: Vec<Probe>,
}

/// What a probe needs: the allocator and a way to run the workload.
pub struct Search<'a> {
    /// The allocator.
    pub spec: &'a AllocSpec,
    /// Lower bound in MiB (assumed the smallest meaningful heap).
    pub lo_mib: usize,
    /// Upper bound in MiB.
    pub hi_mib: usize,
    /// Further seeds the answer must pass (`--confirm`).
    pub confirm: u64,
    /// Runs one probe on a built allocator, with the seed `--seed` plus the
    /// given offset.
    pub probe: &'a dyn Fn(&dyn crate::alloc::RegionAlloc, u64) -> crate::run::RunOutcome,
    /// Called after each probe (progress).
    pub report: &'a dyn Fn(&str, &Probe),
}

fn probe_at(s: &Search<'_>, heap_mib: usize, seed_offset: u64) -> Result<Probe, String> {
    let region = Region::map(heap_mib * MIB)?;
    let alloc = s.spec.build(region)?;
    let outcome = (s.probe)(alloc.as_ref(), seed_offset);
    if crate::interrupt::requested() {
        // The probe was cut short: it proves nothing either way.
        return Err("interrupted: the search has no answer".into());
    }
    let sum = Summary::of(&outcome);
    let p = Probe {
        heap_mib,
        oom_count: sum.oom_count,
        integrity_failures: sum.corruption_count + sum.escape_count,
        peak_reserved_bytes: sum
            .exact_peak_reserved_bytes
            .unwrap_or(sum.peak_reserved_bytes),
        seconds: outcome.elapsed_s,
        peak_requested_bytes: sum.peak_requested_bytes,
        seed_offset,
    };
    (s.report)(&alloc.label(), &p);
    if p.integrity_failures > 0 {
        // Corruption is a failed run, never a heap that was too small.
        return Err(format!(
            "{} at {heap_mib} MiB: {} corrupted blocks, {} blocks outside the region",
            alloc.label(),
            sum.corruption_count,
            sum.escape_count
        ));
    }
    Ok(p)
}

/// Runs the search.
pub fn search(s: &Search<'_>) -> Result<MinHeap, String> {
    let mut probes = Vec::new();
    // A probe with corrupted blocks ended the search in `probe_at`.
    let passes = |p: &Probe| p.oom_count == 0;
    let top = probe_at(s, s.hi_mib, 0)?;
    let top_ok = passes(&top);
    let demand_bytes = top.peak_requested_bytes;
    probes.push(top);
    let label = s.spec.to_string();
    if !top_ok {
        return Ok(MinHeap {
            alloc: label,
            min_heap_mib: None,
            probes,
        });
    }
    let (mut lo, mut hi) = (s.lo_mib.min(s.hi_mib), s.hi_mib);
    if lo < hi && (lo * MIB) as u64 >= demand_bytes {
        let bottom = probe_at(s, lo, 0)?;
        let ok = passes(&bottom);
        probes.push(bottom);
        if ok {
            let min_heap_mib = confirm(s, lo, &mut probes)?;
            return Ok(MinHeap {
                alloc: label,
                min_heap_mib,
                probes,
            });
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let p = probe_at(s, mid, 0)?;
        if passes(&p) {
            hi = mid;
        } else {
            lo = mid;
        }
        probes.push(p);
    }
    let min_heap_mib = confirm(s, hi, &mut probes)?;
    Ok(MinHeap {
        alloc: label,
        min_heap_mib,
        probes,
    })
}

/// From `answer`, which passed with seed offset 0: the smallest size from
/// there up to the upper bound that passes every seed offset up to
/// `s.confirm` (offset 0 is probed again only where it was not yet);
/// `None` if none does.
fn confirm(
    s: &Search<'_>,
    answer: usize,
    probes: &mut Vec<Probe>,
) -> Result<Option<usize>, String> {
    'size: for heap_mib in answer..=s.hi_mib {
        for offset in 0..=s.confirm {
            let known = probes
                .iter()
                .find(|p| p.heap_mib == heap_mib && p.seed_offset == offset)
                .map(|p| p.oom_count == 0);
            let ok = match known {
                Some(ok) => ok,
                None => {
                    let p = probe_at(s, heap_mib, offset)?;
                    let ok = p.oom_count == 0;
                    probes.push(p);
                    ok
                }
            };
            if !ok {
                continue 'size;
            }
        }
        return Ok(Some(heap_mib));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunOutcome, Sample};

    /// A probe's outcome: failed (one out-of-memory failure) or not, with
    /// 30 MiB live at its peak.
    fn outcome(fails: bool) -> RunOutcome {
        RunOutcome {
            oom_count: u64::from(fails),
            samples: vec![Sample {
                t_s: 0.0,
                requested_bytes: 30 * MIB as u64,
                reserved_bytes: 0,
                ops_per_s: 0.0,
            }],
            ..RunOutcome::default()
        }
    }

    #[test]
    fn bisection_finds_the_threshold() {
        // A fake workload that fails below 37 MiB.
        let spec = AllocSpec::Dlmalloc {
            granularity_bytes: None,
        };
        let probe = |a: &dyn crate::alloc::RegionAlloc, _seed: u64| {
            outcome(a.region().map_or(0, |r| r.len()) < 37 * MIB)
        };
        let s = Search {
            spec: &spec,
            lo_mib: 1,
            hi_mib: 64,
            confirm: 0,
            probe: &probe,
            report: &|_, _| {},
        };
        let r = search(&s).expect("search");
        assert_eq!(r.min_heap_mib, Some(37));
        // 64, then bisection over 1..64 without probing 1 (below demand).
        assert!(r.probes.len() <= 8, "{} probes", r.probes.len());
        assert!(r.probes.iter().all(|p| p.heap_mib != 1));
    }

    #[test]
    fn confirmation_moves_the_answer_up_until_every_seed_passes() {
        let spec = AllocSpec::Dlmalloc {
            granularity_bytes: None,
        };
        // Fails below 40 MiB; at 40 only seed offset 1 fails, at 41 only
        // offset 2; 42 passes every seed.
        let probe = |a: &dyn crate::alloc::RegionAlloc, seed: u64| {
            let mib = a.region().map_or(0, |r| r.len()) / MIB;
            outcome(mib < 40 || (mib == 40 && seed == 1) || (mib == 41 && seed == 2))
        };
        let answer = |confirm| {
            let s = Search {
                spec: &spec,
                lo_mib: 1,
                hi_mib: 64,
                confirm,
                probe: &probe,
                report: &|_, _| {},
            };
            search(&s).expect("search")
        };
        assert_eq!(answer(0).min_heap_mib, Some(40));
        assert_eq!(answer(1).min_heap_mib, Some(41));
        let r = answer(2);
        assert_eq!(r.min_heap_mib, Some(42));
        // 42 was probed with every seed; no size and seed twice.
        for offset in 0..=2 {
            assert!(r
                .probes
                .iter()
                .any(|p| p.heap_mib == 42 && p.seed_offset == offset));
        }
        for p in &r.probes {
            let same = r
                .probes
                .iter()
                .filter(|q| q.heap_mib == p.heap_mib && q.seed_offset == p.seed_offset)
                .count();
            assert_eq!(same, 1, "{} MiB seed +{}", p.heap_mib, p.seed_offset);
        }
    }
}
