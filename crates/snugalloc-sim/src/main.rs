//! snugalloc-sim: the command-line front end; see the library docs for
//! the layers. Exit codes: 0 success; 1 a run failed (corruption, a block
//! outside the region, an I/O error); 2 bad input (one line on stderr
//! naming the flag and what is allowed).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use snugalloc_sim::{child, cli, interrupt, minheap, output, plot, rounds, run, units};

use snugalloc_sim::alloc::{AllocSpec, ProcessKind, RegionAlloc};
use snugalloc_sim::cli::{check_heap, Cli, Cmd, Common, InputError, MinHeapArgs, RunArgs};
use snugalloc_sim::output::{file_label, CsvSink, Machine, Report, RunRecord};
use snugalloc_sim::region::Region;
use snugalloc_sim::run::{run_in_process, RunOptions, RunOutcome, Summary};
use snugalloc_sim::units::{human_bytes, MIB};

/// How `main` ends.
enum Failure {
    /// Bad input: exit 2.
    Input(String),
    /// A failed run or I/O: exit 1.
    Run(String),
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure::Input(e.0)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    let text = e.to_string();
                    let first = text
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("error: bad arguments");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    eprintln!("snugalloc-sim: {first}");
                    ExitCode::from(2)
                }
            };
        }
    };
    let result = match cli.cmd {
        Cmd::Run(args) => cmd_run(&args),
        Cmd::MinHeap(args) => cmd_min_heap(&args),
        Cmd::List => {
            print!("{}", list_text());
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Input(msg)) => {
            eprintln!("snugalloc-sim: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("snugalloc-sim: {msg}");
            ExitCode::from(1)
        }
    }
}

fn list_text() -> String {
    let mut s = String::from(
        "workloads:\n  ecall-churn        16 workers + 4 others in ECalls over a shared store (snmalloc #615)\n  \
churn              short ECalls around a bounded queue of 48-byte objects\n  \
producer-consumer  objects allocated on some threads, freed on others\n  \
sizes              single-thread alloc/free batches per size\nallocators:\n  \
snugalloc          this project, over the region (options: chunk, max-slab, slab, max-allocators, idle-retain, foreign, oom-wait, depot, classes, cache)\n  \
dlmalloc           dlmalloc crate over the region, one lock, sbrk (Open Enclave's default)\n  \
talc               talc over the region, one lock\n  \
rlsf               rlsf (TLSF) over the region, one lock\n  \
firstfit           address-ordered first fit, one lock (reference point)\n  \
bestfit            address-ordered best fit, one lock (reference point)\n",
    );
    for k in [
        ProcessKind::System,
        ProcessKind::Mimalloc,
        ProcessKind::Jemalloc,
        ProcessKind::Snmalloc,
    ] {
        let state = if k.built_in() {
            "built in"
        } else {
            "not built in; cargo feature"
        };
        s.push_str(&format!(
            "  {:<18} process allocator, resident memory in a child ({state} {})\n",
            k.name(),
            k.name()
        ));
    }
    s
}

/// Builds every region allocator up front so a bad configuration is an
/// input error before anything runs.
fn build_all(
    specs: &[AllocSpec],
    heap: usize,
) -> Result<Vec<Option<Box<dyn RegionAlloc>>>, Failure> {
    specs
        .iter()
        .map(|spec| {
            if !spec.is_region() {
                return Ok(None);
            }
            let region = Region::map(heap)
                .map_err(|e| Failure::Run(format!("--heap {}: {e}", human_bytes(heap))))?;
            spec.build(region)
                .map(Some)
                .map_err(|e| Failure::Input(format!("--alloc {spec}: {e}")))
        })
        .collect()
}

fn check_common(common: &Common) -> Result<(), Failure> {
    common.wl.validate(common.workload)?;
    Ok(())
}

/// ", paced at N operations/s" when the run has a pace, else nothing.
fn pace_text(common: &Common) -> String {
    common
        .pace
        .map_or_else(String::new, |r| format!(", paced at {r} operations/s"))
}

fn inject(common: &Common) -> Option<u64> {
    common.inject_corruption_every.map(|n| n as u64)
}

/// The options of each run `args` asks for, in this process or a child.
fn run_options(args: &RunArgs) -> RunOptions {
    RunOptions {
        inject_corruption_every: inject(&args.common),
        exact_live: args.exact_live,
        pace: args.common.pace,
        ..RunOptions::new(args.duration)
    }
}

/// One run of `spec` as `args` say: in this process on `built` (a region
/// allocator built for it), or in a child process (a process allocator),
/// tagged with the core-to-core round trip before and after it. `None`
/// for a region allocator that was not built.
fn run_one(
    args: &RunArgs,
    spec: &AllocSpec,
    built: Option<Box<dyn RegionAlloc>>,
    on_sample: &mut dyn FnMut(&run::Sample),
) -> Result<Option<RunOutcome>, String> {
    let common = &args.common;
    let round_trip_before = snugalloc_sim::coherence::round_trip_ns();
    let mut outcome = match (built, spec) {
        (Some(alloc), _) => {
            let wl = common.wl.instantiate(common.workload, common.seed);
            run_in_process(alloc.as_ref(), wl.as_ref(), run_options(args), on_sample)
        }
        (None, AllocSpec::Process(kind)) => child::run_child(*kind, on_sample)?,
        (None, _) => return Ok(None),
    };
    outcome.core_round_trip_ns = [round_trip_before, snugalloc_sim::coherence::round_trip_ns()];
    Ok(Some(outcome))
}

/// What rounds 2 and later of `run --repeat` leave besides throughput.
#[derive(Default)]
struct RoundsEnd {
    /// Notes, as the first round's (an interruption, a finding).
    notes: Vec<String>,
    /// Runs that did not finish or found corruption: each fails the
    /// command, as a failed run of the first round does.
    failures: Vec<String>,
}

/// Rounds 2 to `args.repeat` of `run --repeat`, each with freshly built
/// allocators in alternating order, after the first round's `first`.
/// Returns every round's throughput.
fn more_rounds(
    args: &RunArgs,
    heap: usize,
    first: &[RunOutcome],
    pb: &ProgressBar,
) -> Result<(Vec<rounds::RoundRun>, RoundsEnd), Failure> {
    let specs = &args.common.alloc.0;
    let dur_ms = args.duration.as_millis() as u64;
    let mut runs: Vec<rounds::RoundRun> =
        first.iter().map(|o| rounds::RoundRun::of(o, 1)).collect();
    let mut end = RoundsEnd::default();
    for round in 2..=args.repeat {
        let mut built = build_all(specs, heap)?;
        for (k, i) in rounds::order(round, specs.len()).into_iter().enumerate() {
            if interrupt::requested() {
                end.notes.push(format!("interrupted in round {round}"));
                return Ok((runs, end));
            }
            let spec = &specs[i];
            pb.set_message(format!("{spec}, round {round}"));
            pb.set_position((((round - 1) * specs.len() + k) as u64) * dur_ms);
            match run_one(args, spec, built[i].take(), &mut |_| {}) {
                Ok(Some(o)) => {
                    let s = Summary::of(&o);
                    if s.failed() {
                        end.failures.push(format!(
                            "{spec}, round {round}: {} corrupted blocks, {} blocks outside the region",
                            s.corruption_count, s.escape_count
                        ));
                    }
                    for f in &o.findings {
                        end.notes.push(format!("{spec}, round {round}: {f}"));
                    }
                    runs.push(rounds::RoundRun::of(&o, round));
                }
                Ok(None) => {}
                Err(e) => end.failures.push(format!("{spec}, round {round}: {e}")),
            }
        }
    }
    Ok((runs, end))
}

fn cmd_run(args: &RunArgs) -> Result<bool, Failure> {
    let common = &args.common;
    check_common(common)?;
    let heap = check_heap("--heap", args.heap, common)?;
    interrupt::install();
    if let Some(name) = &args.child {
        let kind = ProcessKind::from_name(name)
            .ok_or_else(|| Failure::Input(format!("--child: unknown '{name}'")))?;
        let wl = common.wl.instantiate(common.workload, common.seed);
        child::child_main(kind, wl.as_ref(), run_options(args)).map_err(Failure::Run)?;
        return Ok(true);
    }
    let specs = &common.alloc.0;
    let mut built = build_all(specs, heap)?;
    std::fs::create_dir_all(&common.out)
        .map_err(|e| Failure::Run(format!("--out {}: {e}", common.out.display())))?;
    let name = common.workload.name();
    let csv_path = common.out.join(format!("{name}.csv"));
    let json_path = common.out.join(format!("{name}.json"));
    let mut csv = CsvSink::create(&csv_path).map_err(Failure::Run)?;

    let dur_ms = args.duration.as_millis() as u64;
    let pb = progress_bar(dur_ms * (specs.len() * args.repeat) as u64);
    let mut outcomes: Vec<RunOutcome> = Vec::new();
    let mut in_region: Vec<bool> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if interrupt::requested() {
            notes.push(format!(
                "interrupted: {} allocator(s) not run",
                specs.len() - i
            ));
            break;
        }
        let label = spec.to_string();
        pb.set_message(label.clone());
        let offset = i as u64 * dur_ms;
        let mut io_err: Option<String> = None;
        let mut on_sample = |s: &run::Sample| {
            if let Err(e) = csv.row(&label, s) {
                io_err.get_or_insert(e);
            }
            pb.set_position(offset + ((s.t_s * 1000.0) as u64).min(dur_ms));
        };
        let outcome = match run_one(args, spec, built[i].take(), &mut on_sample) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => {
                notes.push(e);
                continue;
            }
        };
        if let Some(e) = io_err {
            return Err(Failure::Run(e));
        }
        csv.flush().map_err(Failure::Run)?;
        for f in &outcome.findings {
            notes.push(format!("{label}: {f}"));
        }
        if let Some(table) = &outcome.class_table_at_peak {
            let path = common
                .out
                .join(format!("{name}-classes-{}.txt", file_label(&label)));
            let text = match table.requested_text() {
                Some(r) => format!("{}\n{r}", table.text),
                None => table.text.clone(),
            };
            std::fs::write(&path, text)
                .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
        }
        summaries.push(Summary::of(&outcome));
        outcomes.push(outcome);
        in_region.push(spec.is_region());
        let report = Report {
            version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            workload: name,
            heap_bytes: heap,
            duration_s: args.duration.as_secs_f64(),
            seed: common.seed,
            tick_ms: run::TICK.as_millis() as u64,
            machine: Machine::here(),
            runs: summaries
                .iter()
                .zip(&outcomes)
                .map(|(summary, outcome)| RunRecord { summary, outcome })
                .collect(),
        };
        output::write_json(&json_path, &report).map_err(Failure::Run)?;
    }
    let mut round_failures = Vec::new();
    let rounds_table = if args.repeat > 1 {
        let (runs, mut end) = more_rounds(args, heap, &outcomes, &pb)?;
        notes.append(&mut end.notes);
        round_failures = end.failures;
        let path = common.out.join(format!("{name}-rounds.json"));
        output::write_json(&path, &runs).map_err(Failure::Run)?;
        let labels: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        Some((rounds::table(&labels, &runs), path))
    } else {
        None
    };
    pb.finish_and_clear();

    println!(
        "{name} on a {} heap, {} per allocator, seed {}{}:\n",
        human_bytes(heap),
        fmt_duration(args.duration),
        common.seed,
        pace_text(common)
    );
    print!("{}", output::summary_table(&summaries));
    println!();
    println!("{}\n", output::round_trip_line(&outcomes));
    if let Some(line) = output::waits_line(&outcomes) {
        println!("{line}\n");
    }
    for o in &outcomes {
        if let Some(t) = &o.class_table_at_peak {
            println!("{} size classes at the reserved peak:\n{}", o.alloc, t.text);
            if let Some(r) = t.requested_text() {
                println!(
                    "{} requested bytes by class at the same moment (--exact-live):\n{r}",
                    o.alloc
                );
            }
        }
    }
    let mut files = vec![
        csv_path.display().to_string(),
        json_path.display().to_string(),
    ];
    if let Some((table, path)) = &rounds_table {
        println!(
            "throughput over {} rounds of {} (the order alternating; near: a cache line's round trip under {} ns before and after the run, far: at least that; / best: over the highest median in the column):\n\n{table}",
            args.repeat,
            fmt_duration(args.duration),
            rounds::NEAR_BELOW_NS
        );
        files.push(path.display().to_string());
    }
    if !args.no_plot && !summaries.is_empty() {
        match plots(
            &common.out,
            name,
            heap,
            args.duration,
            &outcomes,
            &in_region,
            &summaries,
        ) {
            Ok(mut f) => files.append(&mut f),
            Err(e) => notes.push(format!("plots skipped: {e}")),
        }
    }
    println!("wrote: {}", files.join(", "));
    for n in &notes {
        eprintln!("snugalloc-sim: note: {n}");
    }
    let failed: Vec<&Summary> = summaries.iter().filter(|s| s.failed()).collect();
    for s in &failed {
        eprintln!(
            "snugalloc-sim: FAILED: {}: {} corrupted blocks, {} blocks outside the region",
            s.alloc, s.corruption_count, s.escape_count
        );
    }
    for f in &round_failures {
        eprintln!("snugalloc-sim: FAILED: {f}");
    }
    Ok(failed.is_empty()
        && round_failures.is_empty()
        && (interrupt::requested() || summaries.len() == specs.len()))
}

fn plots(
    out: &Path,
    name: &str,
    heap: usize,
    duration: Duration,
    outcomes: &[RunOutcome],
    in_region: &[bool],
    summaries: &[Summary],
) -> Result<Vec<String>, String> {
    let runs: Vec<plot::Series> = outcomes
        .iter()
        .zip(in_region)
        .map(|(o, r)| plot::Series {
            label: o.alloc.clone(),
            samples: o.samples.clone(),
            in_region: *r,
        })
        .collect();
    let title = format!(
        "{name}: reserved and requested bytes ({} heap, {})",
        human_bytes(heap),
        fmt_duration(duration)
    );
    let mut files = plot::time_series(&out.join(name), &title, Some(heap), &runs)?;
    let bars_title = format!(
        "{name}: overhead at peak and throughput ({} heap)",
        human_bytes(heap)
    );
    files.append(&mut plot::bars(
        &out.join(format!("{name}-bars")),
        &bars_title,
        summaries,
    )?);
    Ok(files)
}

fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>24} [{bar:40}] {percent:>3}% elapsed {elapsed} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 && s % 3600.0 == 0.0 {
        format!("{}h", s / 3600.0)
    } else if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

fn cmd_min_heap(args: &MinHeapArgs) -> Result<bool, Failure> {
    let common = &args.common;
    check_common(common)?;
    let max_heap = check_heap("--max-heap", args.max_heap, common)?;
    if max_heap % MIB != 0 {
        return Err(Failure::Input(format!(
            "--max-heap {}: the search goes in 1 MiB steps; allowed: a whole number of MiB, e.g. 64M",
            units::human_bytes(max_heap)
        )));
    }
    let specs: Vec<&AllocSpec> = common.alloc.0.iter().filter(|s| s.is_region()).collect();
    if specs.is_empty() {
        return Err(Failure::Input(format!(
            "--alloc: min-heap needs at least one region allocator (allowed: {})",
            "snugalloc, dlmalloc, talc, rlsf, firstfit, bestfit"
        )));
    }
    for s in common.alloc.0.iter().filter(|s| !s.is_region()) {
        eprintln!("snugalloc-sim: note: {s} is a process allocator with no fixed heap; skipped");
    }
    // Validate every configuration before the first probe.
    let owned: Vec<AllocSpec> = specs.iter().map(|s| (*s).clone()).collect();
    drop(build_all(&owned, max_heap)?);
    std::fs::create_dir_all(&common.out)
        .map_err(|e| Failure::Run(format!("--out {}: {e}", common.out.display())))?;
    let hi_mib = max_heap / MIB;
    let lo_mib = cli::smallest_heap_bytes(common).div_ceil(MIB);
    eprintln!(
        "snugalloc-sim: min-heap of {} between {lo_mib} and {hi_mib} MiB, {} per probe{}",
        common.workload.name(),
        fmt_duration(args.duration),
        pace_text(common)
    );
    let probe = |a: &dyn RegionAlloc, seed_offset: u64| {
        let wl = common
            .wl
            .instantiate(common.workload, common.seed.wrapping_add(seed_offset));
        let opts = RunOptions {
            inject_corruption_every: inject(common),
            stop_on_oom: true,
            pace: common.pace,
            ..RunOptions::new(args.duration)
        };
        run_in_process(a, wl.as_ref(), opts, &mut |_| {})
    };
    let report = |label: &str, p: &minheap::Probe| {
        eprintln!(
            "snugalloc-sim:   {label:<24} {:>5} MiB, seed +{}: {} OOM in {:.1} s, peak reserved {:.2} MiB",
            p.heap_mib,
            p.seed_offset,
            p.oom_count,
            p.seconds,
            units::mib(p.peak_reserved_bytes as f64)
        );
    };
    let mut results = Vec::new();
    for spec in specs {
        let s = minheap::Search {
            spec,
            lo_mib,
            hi_mib,
            confirm: args.confirm,
            probe: &probe,
            report: &report,
        };
        results
            .push(minheap::search(&s).map_err(|e| Failure::Run(format!("min-heap FAILED: {e}")))?);
    }
    let seeds = if args.confirm == 0 {
        format!("seed {}", common.seed)
    } else if args.confirm == 1 {
        format!(
            "seed {}, the answer confirmed with seed {}",
            common.seed,
            common.seed.wrapping_add(1)
        )
    } else {
        format!(
            "seed {}, the answer confirmed with seeds {} to {}",
            common.seed,
            common.seed.wrapping_add(1),
            common.seed.wrapping_add(args.confirm)
        )
    };
    println!(
        "min-heap of {} (1 MiB steps, {} per probe, {seeds}{}):\n",
        common.workload.name(),
        fmt_duration(args.duration),
        pace_text(common)
    );
    println!("| allocator | min heap MiB | probes |");
    println!("|:--|--:|--:|");
    for r in &results {
        let v = r
            .min_heap_mib
            .map_or_else(|| format!("> {hi_mib}"), |m| m.to_string());
        println!("| {} | {v} | {} |", r.alloc, r.probes.len());
    }
    let path = common
        .out
        .join(format!("{}-min-heap.json", common.workload.name()));
    output::write_json(&path, &results).map_err(Failure::Run)?;
    println!("\nwrote: {}", path.display());
    Ok(true)
}
