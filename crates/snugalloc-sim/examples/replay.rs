//! Deterministic ecall-churn replay (see `snugalloc_sim::replay`): for each
//! allocator, the exact peaks in a 64 MiB region and the smallest region, in
//! 1 MiB steps, with no out-of-memory failure.
//!
//! `cargo run --release -p snugalloc-sim --example replay -- [ALLOCS] [OPS] [MIB]`
//! (default `snugalloc,dlmalloc,firstfit` and 50 million operations; with
//! MIB, one replay in a region of that size instead of the search).
//! Environment: `SEED` (default 1); `SLICE` (mean operations between
//! thread switches, default 1500); `OPS_PER_S` (operations that make one
//! second of the store's wave, default 10 million); `GRID=40,42 SEEDS=2` prints the
//! out-of-memory counts at those sizes for seeds 1..=2 instead (a finer
//! comparison of configurations than the search's answer); `TABLES=1`
//! prints the allocator's size-class table at the reserved peak of the
//! replay in 64 MiB (or in MIB), and the live bytes by block size at the
//! peak of live bytes; `ONE_ALLOCATOR=1` gives every virtual thread the
//! same handle, attached once (for snugalloc, one allocator and no
//! per-thread slabs: the floor of any design without them). snugalloc
//! runs with `oom-wait=0` unless the spec says otherwise: one OS thread
//! holds every handle, so nobody could free while a failing allocation
//! waits.

use clap::Parser;
use snugalloc_sim::alloc::{parse_alloc_list, AllocSpec};
use snugalloc_sim::cli::{Cli, Cmd};
use snugalloc_sim::region::Region;
use snugalloc_sim::replay::{replay, Schedule};
use snugalloc_sim::workload::ecall_churn::Params;

const MIB: usize = 1 << 20;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let list = args.get(1).map_or("snugalloc,dlmalloc,firstfit", |s| s);
    let ops: u64 = args
        .get(2)
        .map_or(Ok(50_000_000), |s| s.parse())
        .map_err(|e| format!("OPS: {e}"))?;
    // The workload's parameters are the command line's defaults.
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let p = match Cli::try_parse_from(["snugalloc-sim", "run"]).map_err(|e| e.to_string())? {
        Cli {
            cmd: Cmd::Run(args),
        } => args.common.wl.ecall_churn(seed),
        _ => return Err("unexpected command".into()),
    };
    // A third argument: one replay in a region of that many MiB.
    let only: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    // SLICE: mean operations a virtual thread runs before a switch.
    let mut s = Schedule {
        ops,
        ..Schedule::default()
    };
    if let Some(slice) = std::env::var("SLICE").ok().and_then(|v| v.parse().ok()) {
        s.mean_slice = slice;
    }
    if let Ok(rate) = std::env::var("OPS_PER_S") {
        s.ops_per_s = match rate.parse() {
            Ok(r) if r > 0 => r,
            _ => return Err(format!("OPS_PER_S: '{rate}' is not a positive integer")),
        };
    }
    s.tables = std::env::var_os("TABLES").is_some_and(|v| v == "1");
    s.one_allocator = std::env::var_os("ONE_ALLOCATOR").is_some_and(|v| v == "1");
    // GRID=40,41,42 and SEEDS=n: out-of-memory counts at those sizes for
    // seeds 1..=n (a finer comparison than the bisection's answer).
    if let Ok(grid) = std::env::var("GRID") {
        let sizes: Vec<usize> = grid.split(',').filter_map(|v| v.parse().ok()).collect();
        let seeds: u64 = std::env::var("SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        for spec in parse_alloc_list(list)?
            .into_iter()
            .map(AllocSpec::on_one_thread)
        {
            let mut total = 0;
            let mut cells = Vec::new();
            for seed in 1..=seeds {
                let p = Params { seed, ..p.clone() };
                for &mib in &sizes {
                    let a = spec.build(Region::map(mib * MIB)?)?;
                    let o = replay(a.as_ref(), &p, s);
                    total += o.oom_count;
                    cells.push(o.oom_count.to_string());
                }
            }
            println!("{spec}: total OOM {total} [{}]", cells.join(" "));
        }
        return Ok(());
    }
    println!("| allocator | peak req MiB | peak res MiB (64 MiB) | overhead | min heap MiB |");
    println!("|:--|--:|--:|--:|--:|");
    for spec in parse_alloc_list(list)?
        .into_iter()
        .map(AllocSpec::on_one_thread)
    {
        let run = |mib: usize| -> Result<_, String> {
            let a = spec.build(Region::map(mib * MIB)?)?;
            Ok(replay(a.as_ref(), &p, s))
        };
        if let Some(mib) = only {
            let o = run(mib)?;
            if let Some(t) = &o.class_table_at_peak {
                eprintln!(
                    "{spec}: size classes at the reserved peak in {mib} MiB:\n{}",
                    t.text
                );
                eprintln!("at the peak of live bytes, {}", o.live_by_size_at_peak);
            }
            println!(
                "| {spec} | {mib} MiB: {} OOM, peak reserved {} |",
                o.oom_count, o.peak_reserved_bytes
            );
            continue;
        }
        let top = run(64)?;
        if let Some(t) = &top.class_table_at_peak {
            eprintln!(
                "{spec}: size classes at the reserved peak in 64 MiB:\n{}",
                t.text
            );
            eprintln!("at the peak of live bytes, {}", top.live_by_size_at_peak);
        }
        if top.oom_count > 0 {
            println!("| {spec} | {} OOM in 64 MiB: no answer |", top.oom_count);
            continue;
        }
        let (mut lo, mut hi) = ((top.peak_requested_bytes as usize / MIB).max(1), 64);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let o = run(mid)?;
            eprintln!("  {spec} {mid} MiB: {} OOM", o.oom_count);
            if o.oom_count == 0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let mib = |b: u64| b as f64 / MIB as f64;
        println!(
            "| {spec} | {:.2} | {:.2} | {:+.1}% | {hi} |",
            mib(top.peak_requested_bytes),
            mib(top.peak_reserved_bytes),
            100.0 * (top.peak_reserved_bytes as f64 / top.peak_requested_bytes as f64 - 1.0),
        );
    }
    Ok(())
}
