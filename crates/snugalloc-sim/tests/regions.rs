//! The region allocators never hand out memory outside their region, under
//! random single-thread traffic and under a short multi-threaded run of
//! every workload.

use std::time::Duration;

use snugalloc_sim::alloc::{parse_alloc_list, AllocSpec};
use snugalloc_sim::region::Region;
use snugalloc_sim::rng::Rng;
use snugalloc_sim::run::{run_in_process, RunOptions, Summary};
use snugalloc_sim::workload::{self, layout_of, SizeMix};

/// Every region allocator, or the list in `SNUGALLOC_SIM_TEST_ALLOCS`.
fn region_specs() -> Vec<AllocSpec> {
    let list = std::env::var("SNUGALLOC_SIM_TEST_ALLOCS")
        .unwrap_or_else(|_| "dlmalloc,talc,rlsf,firstfit,bestfit,snugalloc".to_string());
    parse_alloc_list(&list).expect("specs")
}

#[test]
fn random_traffic_stays_in_the_region_until_exhaustion() {
    for spec in region_specs() {
        let region = Region::map(4 << 20).expect("map");
        let (lo, hi) = (region.base() as usize, region.end_addr());
        let alloc = spec.build(region).expect("build");
        let mut h = alloc.attach().expect("attach");
        let mut rng = Rng::new(11);
        let mut live = Vec::new();
        let mut nulls = 0;
        for _ in 0..20_000 {
            if live.is_empty() || rng.chance(0.55) {
                let size = rng.log_uniform(16, 256 << 10);
                let p = h.alloc(layout_of(size));
                if p.is_null() {
                    nulls += 1;
                    continue;
                }
                let a = p as usize;
                assert!(
                    a >= lo && a + size <= hi,
                    "{spec}: block {p:p}+{size} outside {lo:#x}..{hi:#x}"
                );
                live.push((p, size));
            } else {
                let (p, size) = live.swap_remove(rng.below(live.len()));
                // SAFETY: `p` came from this allocator with this layout.
                unsafe { h.dealloc(p, layout_of(size)) };
            }
        }
        // A 4 MiB region under a 55% allocation rate of up to 256 KiB runs
        // out: the allocators must say so with null, not by escaping.
        assert!(nulls > 0, "{spec}: expected the region to fill up");
        for (p, size) in live {
            // SAFETY: as above.
            unsafe { h.dealloc(p, layout_of(size)) };
        }
    }
}

/// ecall-churn with three workers and one other thread, and a store that
/// moves between `store_min` and `store_max` bytes every 200 ms.
fn small_ecall_churn(store_min: usize, store_max: usize) -> workload::ecall_churn::Params {
    workload::ecall_churn::Params {
        workers: 3,
        others: 1,
        worker_ops: 100,
        other_ops: 20,
        other_sleep: Duration::from_millis(1),
        store_share: 0.15,
        local_free_prob: 0.5,
        store_min_bytes: store_min,
        store_max_bytes: store_max,
        store_period: Duration::from_millis(200),
        worker_mix: SizeMix::parse("70,20,8,2").expect("mix"),
        other_mix: SizeMix::parse("40,30,22,8").expect("mix"),
        seed: 5,
    }
}

/// Builds a fresh workload instance.
type MakeWorkload = Box<dyn Fn() -> Box<dyn workload::Workload>>;

#[test]
fn every_workload_stays_in_the_region() {
    let mix = SizeMix::parse("70,20,8,2").expect("mix");
    let workloads: Vec<(&str, MakeWorkload)> = vec![
        (
            "ecall-churn",
            Box::new(move || {
                Box::new(workload::ecall_churn::EcallChurn::new(small_ecall_churn(
                    2 << 20,
                    4 << 20,
                )))
            }),
        ),
        (
            "churn",
            Box::new(|| {
                Box::new(workload::churn::Churn::new(workload::churn::Params {
                    threads: 3,
                    ops: 50,
                    queue_capacity: 512,
                    small_bytes: 48,
                    buffer_prob: 0.05,
                    drain_prob: 0.05,
                    max_sleep: Duration::from_micros(200),
                    seed: 5,
                }))
            }),
        ),
        (
            "producer-consumer",
            Box::new(move || {
                Box::new(workload::producer_consumer::ProducerConsumer::new(
                    workload::producer_consumer::Params {
                        producers: 2,
                        consumers: 2,
                        ops: 50,
                        queue_bytes: 2 << 20,
                        mix,
                        seed: 5,
                    },
                ))
            }),
        ),
        (
            "sizes",
            Box::new(|| {
                Box::new(workload::sizes::Sizes::new(workload::sizes::Params {
                    min_size: 16,
                    max_size: 256 << 10,
                    steps_per_doubling: 1,
                    batch: 32,
                    batch_bytes: 1 << 20,
                    rounds: 1,
                    seed: 5,
                }))
            }),
        ),
    ];
    for spec in region_specs() {
        for (name, make) in &workloads {
            let alloc = spec
                .build(Region::map(16 << 20).expect("map"))
                .expect("build");
            let wl = make();
            let opts = RunOptions {
                exact_live: true,
                ..RunOptions::new(Duration::from_millis(250))
            };
            let o = run_in_process(alloc.as_ref(), wl.as_ref(), opts, &mut |_| {});
            assert_eq!(
                o.escape_count, 0,
                "{spec} on {name}: blocks outside the region"
            );
            assert_eq!(o.corruption_count, 0, "{spec} on {name}: corrupted blocks");
            assert!(o.total_ops > 0, "{spec} on {name}: no operations");
            // The threads worked for most of the run, so the process used
            // CPU time, though never more than the cores allow.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            assert!(
                o.cpu_s > 0.0 && o.cpu_s <= (o.elapsed_s + 1.0) * cores,
                "{spec} on {name}: {} CPU s over {} s",
                o.cpu_s,
                o.elapsed_s
            );
            // The exact peak is at least about every sampled value (a sample
            // sums per-thread counters read one after the other, so it can
            // exceed every real moment by what changed while it read).
            let sampled = Summary::of(&o).peak_requested_bytes;
            let exact = o.exact_peak_requested_bytes;
            assert!(
                exact.is_some_and(|e| e > 0 && e >= sampled - sampled / 16),
                "{spec} on {name}: exact peak {exact:?} below the sampled peak {sampled}"
            );
            assert!(o.findings.is_empty(), "{spec} on {name}: {:?}", o.findings);
        }
    }
}

#[test]
fn a_paced_run_keeps_to_its_pace() {
    // Four threads that could make millions of operations a second, held
    // to 20,000.
    let pace = 20_000u64;
    let wl = workload::ecall_churn::EcallChurn::new(small_ecall_churn(1 << 20, 2 << 20));
    let spec = &parse_alloc_list("snugalloc").expect("spec")[0];
    let alloc = spec
        .build(Region::map(16 << 20).expect("map"))
        .expect("build");
    let opts = RunOptions {
        pace: Some(pace),
        ..RunOptions::new(Duration::from_secs(1))
    };
    let o = run_in_process(alloc.as_ref(), &wl, opts, &mut |_| {});
    assert_eq!(o.corruption_count + o.oom_count, 0);
    // Each thread may be one step of 16 operations past the pace, and after
    // the deadline it finishes its ECall (up to 100 operations) and trims
    // the store unpaced; the clean-up's frees are not counted. The lower
    // bound catches a pace that sleeps far too long.
    let allowed = pace as f64 * o.elapsed_s + 4.0 * (16.0 + 100.0 + 200.0);
    assert!(
        (o.total_ops as f64) <= allowed,
        "{} operations in {:.2} s at a pace of {pace}/s",
        o.total_ops,
        o.elapsed_s
    );
    assert!(
        o.total_ops >= pace / 4,
        "only {} operations in {:.2} s at a pace of {pace}/s",
        o.total_ops,
        o.elapsed_s
    );
}
