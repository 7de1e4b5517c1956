//! Cli: the command line, its parsers and the checks that turn bad input into
//! one-line errors (exit code 2).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::alloc::{parse_alloc_list, AllocSpec, ALLOC_ALLOWED};
use crate::units::{human_bytes, parse_bytes, parse_duration, DURATION_ALLOWED};
use crate::workload::{self, SizeMix, Workload, WORKLOAD_ALLOWED};

/// Replays enclave-style allocation workloads against snugalloc and the
/// allocators users would pick instead; prints a summary table and writes
/// CSV, JSON and plots.
#[derive(Parser, Debug)]
#[command(name = "snugalloc-sim", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a workload against each allocator in turn and compare them.
    Run(RunArgs),
    /// Find, by bisection in 1 MiB steps, the smallest heap in which the
    /// workload runs with no out-of-memory failure, per region allocator.
    MinHeap(MinHeapArgs),
    /// List the workloads and allocators.
    List,
}

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// See `workload::ecall_churn`.
    EcallChurn,
    /// See `workload::churn`.
    Churn,
    /// See `workload::producer_consumer`.
    ProducerConsumer,
    /// See `workload::sizes`.
    Sizes,
}

impl WorkloadKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::EcallChurn => "ecall-churn",
            WorkloadKind::Churn => "churn",
            WorkloadKind::ProducerConsumer => "producer-consumer",
            WorkloadKind::Sizes => "sizes",
        }
    }
}

fn parse_workload(text: &str) -> Result<WorkloadKind, String> {
    match text {
        "ecall-churn" => Ok(WorkloadKind::EcallChurn),
        "churn" => Ok(WorkloadKind::Churn),
        "producer-consumer" => Ok(WorkloadKind::ProducerConsumer),
        "sizes" => Ok(WorkloadKind::Sizes),
        _ => Err(format!(
            "unknown workload '{text}' (allowed: {WORKLOAD_ALLOWED})"
        )),
    }
}

/// A parsed `--alloc` list.
#[derive(Clone, Debug)]
pub struct AllocList(pub Vec<AllocSpec>);

fn parse_allocs(text: &str) -> Result<AllocList, String> {
    parse_alloc_list(text)
        .map(AllocList)
        .map_err(|e| format!("{e} (allowed: {ALLOC_ALLOWED})"))
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "'{text}' is not a positive duration ({DURATION_ALLOWED})"
        )),
    }
}

fn parse_any_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn parse_prob(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{text}' is not a probability between 0 and 1")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= 4096 => Ok(n),
        _ => Err(format!("'{text}' is not a count from 0 to 4096")),
    }
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{text}' is not a positive integer")),
    }
}

fn parse_rounds(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a number of rounds from 1 to 1000")),
    }
}

/// A rate in operations per second: a positive integer, optionally with
/// k (thousands) or M (millions).
fn parse_rate(text: &str) -> Result<u64, String> {
    let bad =
        || format!("'{text}' is not a rate from 1 to 1000M operations per second (e.g. 500k, 2M)");
    let (digits, scale) = match text.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match text.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (text, 1),
        },
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if (1..=1_000_000_000).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

fn parse_positive_bytes(text: &str) -> Result<usize, String> {
    match parse_bytes(text)? {
        0 => Err(format!("'{text}' must be more than 0 bytes")),
        n => Ok(n),
    }
}

/// Flags every subcommand shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Workload: ecall-churn, churn, producer-consumer or sizes.
    #[arg(long, short = 'w', default_value = "ecall-churn", value_parser = parse_workload)]
    pub workload: WorkloadKind,

    /// Allocators, comma-separated: snugalloc[:chunk=SIZE,max-slab=SIZE,slab=SIZE,
    /// max-allocators=N,idle-retain=SIZE,foreign=SIZE,oom-wait=MS,depot=SIZE,classes=N,cache=SIZE,halves=on|off], dlmalloc[:granularity=SIZE],
    /// talc, rlsf, firstfit, bestfit, system, and with their cargo features mimalloc,
    /// jemalloc, snmalloc.
    #[arg(long, short = 'a', default_value = "snugalloc,dlmalloc", value_parser = parse_allocs)]
    pub alloc: AllocList,

    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Directory for CSV, JSON and plots (created if missing).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,

    /// Cap on operations per second over all threads (e.g. 500k, 2M;
    /// k = 1,000, M = 1,000,000): threads sleep in the middle of their
    /// ECall, holding its blocks, while the run is ahead of it. Compares allocators of different speeds over the
    /// same number of operations: a fixed-time run's min-heap grows with the
    /// operations in it.
    #[arg(long, value_parser = parse_rate)]
    pub pace: Option<u64>,

    /// Workload parameters.
    #[command(flatten)]
    pub wl: WorkloadArgs,

    /// Test hook: damage the guard bytes of every Nth block each thread
    /// allocates.
    #[arg(long, hide = true, value_parser = parse_positive)]
    pub inject_corruption_every: Option<usize>,
}

/// `run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,

    /// Region size for the region allocators, like 64M.
    #[arg(long, default_value = "64M", value_parser = parse_positive_bytes)]
    pub heap: usize,

    /// How long each allocator runs, like 20s, 10m or 8h.
    #[arg(long, short = 'd', default_value = "20s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Skip the PNG and SVG plots.
    #[arg(long)]
    pub no_plot: bool,

    /// Also count live requested bytes exactly, in one counter all threads
    /// update, and print their exact peak beside the exact peak of reserved
    /// bytes. Costs every operation a shared atomic (about 7% of
    /// snugalloc's throughput here), so compare throughput without it.
    #[arg(long)]
    pub exact_live: bool,

    /// Run the allocators this many times, in alternating order, and add a
    /// table of their throughput over all rounds, compared among runs made
    /// with the two vCPUs near (sharing a cache) and far apart. The main
    /// table, CSV and plots are the first round's.
    #[arg(long, default_value = "1", value_parser = parse_rounds)]
    pub repeat: usize,

    /// Internal: run one process allocator and stream samples to stdout.
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

/// `min-heap` flags.
#[derive(Args, Debug, Clone)]
pub struct MinHeapArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,

    /// How long each probe runs.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Upper bound of the search; a heap this size must run without OOM.
    #[arg(long, default_value = "128M", value_parser = parse_positive_bytes)]
    pub max_heap: usize,

    /// Further seeds (--seed + 1 to + N) the answer must also pass; a size
    /// that fails one moves the answer up a MiB.
    #[arg(long, default_value = "0", value_parser = parse_confirm)]
    pub confirm: u64,
}

fn parse_confirm(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(format!("{s:?} is not a count of seeds; allowed: 0 to 100")),
    }
}

/// Parameters of all workloads; each workload reads its own.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Worker threads.
    #[arg(long, default_value = "16", value_parser = parse_count, help_heading = "ecall-churn")]
    pub workers: usize,
    /// Other threads (fewer, larger allocations, sleeping between ECalls).
    #[arg(long, default_value = "4", value_parser = parse_count, help_heading = "ecall-churn")]
    pub others: usize,
    /// Operations per worker ECall (K): allocations and frees of the
    /// ECall's own blocks.
    #[arg(long, default_value = "200", value_parser = parse_positive, help_heading = "ecall-churn")]
    pub worker_ops: usize,
    /// Operations per other-thread ECall.
    #[arg(long, default_value = "50", value_parser = parse_positive, help_heading = "ecall-churn")]
    pub other_ops: usize,
    /// Sleep of other threads between ECalls.
    #[arg(long, default_value = "1ms", value_parser = parse_any_duration, help_heading = "ecall-churn")]
    pub other_sleep: Duration,
    /// Share of blocks that outlive their ECall in the shared store.
    #[arg(long, default_value = "0.15", value_parser = parse_prob, help_heading = "ecall-churn")]
    pub store_share: f64,
    /// Probability of freeing a random ECall-local block after each allocation.
    #[arg(long, default_value = "0.5", value_parser = parse_prob, help_heading = "ecall-churn")]
    pub local_free_prob: f64,
    /// Low point of the store's target (triangle wave).
    #[arg(long, default_value = "15M", value_parser = parse_bytes, help_heading = "ecall-churn")]
    pub store_min: usize,
    /// High point of the store's target.
    #[arg(long, default_value = "25M", value_parser = parse_bytes, help_heading = "ecall-churn")]
    pub store_max: usize,
    /// Period of the store's target.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, help_heading = "ecall-churn")]
    pub store_period: Duration,
    /// Worker size mix, percent: 16-512 B, 512 B-4 KiB, 4-32 KiB, 64-512 KiB.
    #[arg(long, default_value = "70,20,8,2", value_parser = SizeMix::parse, help_heading = "ecall-churn")]
    pub worker_mix: SizeMix,
    /// Other-thread size mix, same bands.
    #[arg(long, default_value = "40,30,22,8", value_parser = SizeMix::parse, help_heading = "ecall-churn")]
    pub other_mix: SizeMix,

    /// Threads.
    #[arg(long, default_value = "8", value_parser = parse_positive, help_heading = "churn")]
    pub churn_threads: usize,
    /// Queue operations per ECall.
    #[arg(long, default_value = "100", value_parser = parse_positive, help_heading = "churn")]
    pub churn_ops: usize,
    /// Queue capacity, objects.
    #[arg(long, default_value = "4096", value_parser = parse_positive, help_heading = "churn")]
    pub queue_capacity: usize,
    /// Size of the common object.
    #[arg(long, default_value = "48", value_parser = parse_positive_bytes, help_heading = "churn")]
    pub small_bytes: usize,
    /// Probability that a pushed object is a 16/32/64 KiB buffer.
    #[arg(long, default_value = "0.01", value_parser = parse_prob, help_heading = "churn")]
    pub buffer_prob: f64,
    /// Probability of draining the whole queue after an ECall.
    #[arg(long, default_value = "0.002", value_parser = parse_prob, help_heading = "churn")]
    pub drain_prob: f64,
    /// Longest sleep between ECalls (uniform from 0).
    #[arg(long, default_value = "2ms", value_parser = parse_any_duration, help_heading = "churn")]
    pub churn_max_sleep: Duration,

    /// Producer threads (object sizes from --worker-mix).
    #[arg(long, default_value = "4", value_parser = parse_positive, help_heading = "producer-consumer")]
    pub producers: usize,
    /// Consumer threads.
    #[arg(long, default_value = "4", value_parser = parse_positive, help_heading = "producer-consumer")]
    pub consumers: usize,
    /// Objects per ECall.
    #[arg(long, default_value = "200", value_parser = parse_positive, help_heading = "producer-consumer")]
    pub pc_ops: usize,
    /// Producers wait while the queue holds more requested bytes than this.
    #[arg(long, default_value = "16M", value_parser = parse_positive_bytes, help_heading = "producer-consumer")]
    pub pc_queue_bytes: usize,

    /// Smallest size of the sweep.
    #[arg(long, default_value = "16", value_parser = parse_positive_bytes, help_heading = "sizes")]
    pub min_size: usize,
    /// Largest size of the sweep.
    #[arg(long, default_value = "1M", value_parser = parse_positive_bytes, help_heading = "sizes")]
    pub max_size: usize,
    /// Sizes per power of two.
    #[arg(long, default_value = "4", value_parser = parse_positive, help_heading = "sizes")]
    pub steps_per_doubling: usize,
    /// Blocks per batch.
    #[arg(long, default_value = "256", value_parser = parse_positive, help_heading = "sizes")]
    pub batch: usize,
    /// Bound on a batch's bytes.
    #[arg(long, default_value = "4M", value_parser = parse_positive_bytes, help_heading = "sizes")]
    pub batch_bytes: usize,
    /// Batches per size.
    #[arg(long, default_value = "4", value_parser = parse_positive, help_heading = "sizes")]
    pub rounds: usize,
}

/// A one-line input error: exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl WorkloadArgs {
    /// Checks cross-flag constraints of `kind`'s parameters.
    pub fn validate(&self, kind: WorkloadKind) -> Result<(), InputError> {
        match kind {
            WorkloadKind::EcallChurn => {
                if self.workers + self.others == 0 {
                    return Err(InputError(
                        "--workers and --others: at least one thread is needed".into(),
                    ));
                }
                if self.store_min > self.store_max {
                    return Err(InputError(format!(
                        "--store-min {} is above --store-max {}; allowed: store-min <= store-max",
                        human_bytes(self.store_min),
                        human_bytes(self.store_max)
                    )));
                }
            }
            WorkloadKind::Sizes => {
                if self.min_size > self.max_size {
                    return Err(InputError(
                        "--min-size is above --max-size; allowed: min-size <= max-size".into(),
                    ));
                }
            }
            WorkloadKind::Churn | WorkloadKind::ProducerConsumer => {}
        }
        Ok(())
    }

    /// The largest object `kind` requests.
    pub fn largest_object_bytes(&self, kind: WorkloadKind, seed: u64) -> usize {
        match kind {
            WorkloadKind::EcallChurn => self.ecall_churn(seed).largest_object_bytes(),
            WorkloadKind::Churn => self.churn(seed).largest_object_bytes(),
            WorkloadKind::ProducerConsumer => self.producer_consumer(seed).largest_object_bytes(),
            WorkloadKind::Sizes => self.sizes(seed).largest_object_bytes(),
        }
    }

    /// ecall-churn's parameters.
    pub fn ecall_churn(&self, seed: u64) -> workload::ecall_churn::Params {
        workload::ecall_churn::Params {
            workers: self.workers,
            others: self.others,
            worker_ops: self.worker_ops,
            other_ops: self.other_ops,
            other_sleep: self.other_sleep,
            store_share: self.store_share,
            local_free_prob: self.local_free_prob,
            store_min_bytes: self.store_min,
            store_max_bytes: self.store_max,
            store_period: self.store_period,
            worker_mix: self.worker_mix,
            other_mix: self.other_mix,
            seed,
        }
    }

    /// churn's parameters.
    pub fn churn(&self, seed: u64) -> workload::churn::Params {
        workload::churn::Params {
            threads: self.churn_threads,
            ops: self.churn_ops,
            queue_capacity: self.queue_capacity,
            small_bytes: self.small_bytes,
            buffer_prob: self.buffer_prob,
            drain_prob: self.drain_prob,
            max_sleep: self.churn_max_sleep,
            seed,
        }
    }

    /// producer-consumer's parameters.
    pub fn producer_consumer(&self, seed: u64) -> workload::producer_consumer::Params {
        workload::producer_consumer::Params {
            producers: self.producers,
            consumers: self.consumers,
            ops: self.pc_ops,
            queue_bytes: self.pc_queue_bytes,
            mix: self.worker_mix,
            seed,
        }
    }

    /// sizes' parameters.
    pub fn sizes(&self, seed: u64) -> workload::sizes::Params {
        workload::sizes::Params {
            min_size: self.min_size,
            max_size: self.max_size,
            steps_per_doubling: self.steps_per_doubling,
            batch: self.batch,
            batch_bytes: self.batch_bytes,
            rounds: self.rounds,
            seed,
        }
    }

    /// A fresh instance of `kind` (new shared state).
    pub fn instantiate(&self, kind: WorkloadKind, seed: u64) -> Box<dyn Workload> {
        match kind {
            WorkloadKind::EcallChurn => Box::new(workload::ecall_churn::EcallChurn::new(
                self.ecall_churn(seed),
            )),
            WorkloadKind::Churn => Box::new(workload::churn::Churn::new(self.churn(seed))),
            WorkloadKind::ProducerConsumer => Box::new(
                workload::producer_consumer::ProducerConsumer::new(self.producer_consumer(seed)),
            ),
            WorkloadKind::Sizes => Box::new(workload::sizes::Sizes::new(self.sizes(seed))),
        }
    }
}

/// Slack a region needs beyond the largest object (allocator metadata).
pub const HEAP_SLACK_BYTES: usize = 64 << 10;

/// The smallest `--heap` accepted for `kind`: its largest object plus
/// [`HEAP_SLACK_BYTES`], rounded up to 4 KiB.
pub fn smallest_heap_bytes(common: &Common) -> usize {
    let largest = common.wl.largest_object_bytes(common.workload, common.seed);
    (largest + HEAP_SLACK_BYTES).div_ceil(4096) * 4096
}

/// Checks `flag` (a heap size) against the workload's largest object.
pub fn check_heap(flag: &str, heap: usize, common: &Common) -> Result<usize, InputError> {
    let smallest = smallest_heap_bytes(common);
    if heap < smallest {
        let largest = common.wl.largest_object_bytes(common.workload, common.seed);
        return Err(InputError(format!(
            "{flag} {} is too small for {}'s largest object ({}); allowed: at least {}",
            human_bytes(heap),
            common.workload.name(),
            human_bytes(largest),
            human_bytes(smallest)
        )));
    }
    Ok(heap.div_ceil(4096) * 4096)
}
