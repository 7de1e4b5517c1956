//! snugalloc-sim (library part): replays enclave-style allocation workloads against
//! snugalloc and the allocators users would pick instead, side by side, and
//! shows the result as a table, CSV and JSON time series, and plots.
//!
//! Layers, bottom up (a module uses only those above it in this list):
//!
//! | module | what it is |
//! |---|---|
//! | `units`, `rng` | sizes and durations; the deterministic generator |
//! | `region` | the fixed region (OS calls live here, in `alloc::process` and `interrupt`) |
//! | `alloc` | the allocators behind `RegionAlloc`/`Handle` |
//! | `workload` | the workloads, guard bytes, per-thread counters |
//! | `run` | one workload on one allocator, sampled every 100 ms |
//! | `child` | process allocators in a child process |
//! | `replay` | ecall-churn on one thread with virtual threads, exactly repeatable |
//! | `minheap` | bisection for the smallest heap |
//! | `output`, `plot` | table, CSV, JSON, PNG and SVG |
//! | `cli`, `main` | flags, checks, orchestration |
//!
//! Exit codes: 0 success; 1 a run failed (corruption, a block outside the
//! region, an I/O error); 2 bad input (one line on stderr naming the flag).

pub mod alloc;
pub mod child;
pub mod cli;
pub mod coherence;
pub mod interrupt;
pub mod minheap;
pub mod output;
pub mod plot;
pub mod region;
pub mod replay;
pub mod rng;
pub mod rounds;
pub mod run;
pub mod snug;
pub mod units;
pub mod workload;
