//! Rounds: the throughput of several allocators over repeated runs
//! (`run --repeat N`), compared within each state of the machine.
//!
//! On a virtual machine whose two vCPUs are placed sometimes on cores that
//! share a cache and sometimes not, one run of each allocator does not
//! settle which is faster: the same binary moves by up to 2x with the
//! distance, and allocators that share cache lines between threads move
//! more than those that do not. So the rounds alternate the order of the
//! allocators, every run is tagged by the core-to-core round trip measured
//! before and after it ([`crate::coherence`]), and the medians are compared
//! among runs made in the same state: both round trips under
//! [`NEAR_BELOW_NS`] ("near"), both at or above it ("far"), or neither
//! ("mixed": the state changed during the run, counted only in the
//! per-CPU-second column, which the state moves less).

use serde::Serialize;

use crate::run::RunOutcome;

/// A round trip below this, before and after a run, says the vCPUs shared
/// a cache during it (about 55 ns here, against about 300 when they do
/// not).
pub const NEAR_BELOW_NS: f64 = 150.0;

/// Where the two vCPUs were during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Both round trips under [`NEAR_BELOW_NS`].
    Near,
    /// Both at or above it.
    Far,
    /// One of each, or one not measured.
    Mixed,
}

impl Distance {
    /// The state of a run measured `before` and `after` (ns).
    pub fn of(round_trip_ns: [Option<f64>; 2]) -> Distance {
        match round_trip_ns {
            [Some(a), Some(b)] if a < NEAR_BELOW_NS && b < NEAR_BELOW_NS => Distance::Near,
            [Some(a), Some(b)] if a >= NEAR_BELOW_NS && b >= NEAR_BELOW_NS => Distance::Far,
            _ => Distance::Mixed,
        }
    }
}

/// One allocator's run in one round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRun {
    /// The allocator's label.
    pub alloc: String,
    /// The round, from 1.
    pub round: usize,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Operations per CPU second of the process (or of the child).
    pub ops_per_cpu_s: f64,
    /// The round trip before and after the run, ns.
    pub round_trip_ns: [Option<f64>; 2],
    /// Where the vCPUs were.
    pub distance: Distance,
}

impl RoundRun {
    /// The throughput of `outcome`, made in `round`.
    pub fn of(outcome: &RunOutcome, round: usize) -> RoundRun {
        let per = |s: f64| {
            if s > 0.0 {
                outcome.total_ops as f64 / s
            } else {
                0.0
            }
        };
        RoundRun {
            alloc: outcome.alloc.clone(),
            round,
            ops_per_s: per(outcome.elapsed_s),
            ops_per_cpu_s: per(outcome.cpu_s),
            round_trip_ns: outcome.core_round_trip_ns,
            distance: Distance::of(outcome.core_round_trip_ns),
        }
    }
}

/// The order in which round `round` (from 1) runs `n` allocators: as given
/// in odd rounds, reversed in even ones, so that no allocator always runs
/// first (or last) in a round.
pub fn order(round: usize, n: usize) -> Vec<usize> {
    if round % 2 == 1 {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One state's column pair: each allocator's median and its ratio to the
/// highest median among the allocators (`-` where an allocator has no run).
fn column(
    allocs: &[String],
    runs: &[RoundRun],
    keep: impl Fn(&RoundRun) -> bool,
    value: impl Fn(&RoundRun) -> f64,
) -> Vec<(String, String)> {
    let medians: Vec<Option<f64>> = allocs
        .iter()
        .map(|a| {
            median(
                runs.iter()
                    .filter(|r| &r.alloc == a && keep(r))
                    .map(&value)
                    .collect(),
            )
        })
        .collect();
    let best = medians.iter().flatten().copied().fold(0.0, f64::max);
    medians
        .iter()
        .map(|m| match m {
            Some(m) if best > 0.0 => (format!("{:.2}", m / 1e6), format!("{:.2}", m / best)),
            Some(m) => (format!("{:.2}", m / 1e6), "-".into()),
            None => ("-".into(), "-".into()),
        })
        .collect()
}

/// The rounds table: per allocator, in the order of `allocs`, its runs in
/// each state, the median Mops/s of its near and far runs and of Mops per
/// CPU second over all its runs, each with its ratio to the highest median
/// in the same column.
pub fn table(allocs: &[String], runs: &[RoundRun]) -> String {
    let count = |a: &String, d: Distance| {
        runs.iter()
            .filter(|r| &r.alloc == a && r.distance == d)
            .count()
    };
    let near = column(
        allocs,
        runs,
        |r| r.distance == Distance::Near,
        |r| r.ops_per_s,
    );
    let far = column(
        allocs,
        runs,
        |r| r.distance == Distance::Far,
        |r| r.ops_per_s,
    );
    let cpu = column(allocs, runs, |_| true, |r| r.ops_per_cpu_s);
    let mut out = String::from(
        "| allocator | runs near/far/mixed | Mops/s near | / best near | Mops/s far | / best far | Mops/CPU-s, all runs | / best |\n\
         | :-- | :-: | --: | --: | --: | --: | --: | --: |\n",
    );
    for (i, a) in allocs.iter().enumerate() {
        out.push_str(&format!(
            "| {a} | {}/{}/{} | {} | {} | {} | {} | {} | {} |\n",
            count(a, Distance::Near),
            count(a, Distance::Far),
            count(a, Distance::Mixed),
            near[i].0,
            near[i].1,
            far[i].0,
            far[i].1,
            cpu[i].0,
            cpu[i].1,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(alloc: &str, mops: f64, per_cpu: f64, rt: [f64; 2]) -> RoundRun {
        let round_trip_ns = [Some(rt[0]), Some(rt[1])];
        RoundRun {
            alloc: alloc.into(),
            round: 1,
            ops_per_s: mops * 1e6,
            ops_per_cpu_s: per_cpu * 1e6,
            round_trip_ns,
            distance: Distance::of(round_trip_ns),
        }
    }

    #[test]
    fn a_run_is_near_or_far_only_when_both_round_trips_agree() {
        assert_eq!(Distance::of([Some(55.0), Some(64.0)]), Distance::Near);
        assert_eq!(Distance::of([Some(300.0), Some(150.0)]), Distance::Far);
        assert_eq!(Distance::of([Some(55.0), Some(300.0)]), Distance::Mixed);
        assert_eq!(Distance::of([None, Some(55.0)]), Distance::Mixed);
    }

    #[test]
    fn rounds_alternate_the_order() {
        assert_eq!(order(1, 3), [0, 1, 2]);
        assert_eq!(order(2, 3), [2, 1, 0]);
        assert_eq!(order(3, 3), [0, 1, 2]);
    }

    #[test]
    fn the_median_takes_the_middle() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn the_table_compares_medians_within_each_state() {
        let allocs = ["a".to_string(), "b".to_string()];
        let runs = [
            run("a", 20.0, 10.0, [55.0, 60.0]),
            run("a", 30.0, 12.0, [50.0, 58.0]),
            run("a", 10.0, 6.0, [300.0, 310.0]),
            run("b", 40.0, 16.0, [52.0, 61.0]),
            run("b", 12.0, 9.0, [290.0, 300.0]),
            // The state changed during it: counted per CPU second only.
            run("b", 99.0, 2.0, [55.0, 300.0]),
        ];
        let t = table(&allocs, &runs);
        // a: near median 25 (0.62 of b's 40), far 10 (0.83 of b's 12), per
        // CPU second 10 over its three runs, the best (b's three give 9).
        assert!(
            t.contains("| a | 2/1/0 | 25.00 | 0.62 | 10.00 | 0.83 | 10.00 | 1.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| b | 1/1/1 | 40.00 | 1.00 | 12.00 | 1.00 | 9.00 | 0.90 |"),
            "{t}"
        );
    }
}
