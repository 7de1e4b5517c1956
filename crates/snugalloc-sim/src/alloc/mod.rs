//! Allocators: everything the simulator can run a workload against, behind
//! one pair of traits.
//!
//! [`RegionAlloc`] is one allocator instance for one run; [`Handle`] is what a
//! thread holds for the length of one ECall. `attach` models entering the
//! enclave: for snugalloc it takes an allocator from its pool and detaching
//! (dropping the handle) gives it back; for every other allocator it is free.
//!
//! Two families:
//!
//! - region allocators (`snugalloc`, `dlmalloc`, `talc`, `rlsf`, `firstfit`,
//!   `bestfit`)
//!   get one [`Region`] of `--heap` bytes, obtained once, and may use nothing
//!   else for their heap. Their reserved bytes are their footprint inside it
//!   (each adapter's module says exactly how it is counted).
//! - process allocators (`system`, `mimalloc`, `jemalloc`, `snmalloc`) are
//!   unbounded and run in a child process, where reserved bytes are the
//!   growth of its resident set (see [`process`]).
//!
//! Call tree of one ECall, as the workloads drive it:
//!
//! ```text
//! RegionAlloc::attach ──> Box<dyn Handle>
//!     Handle::alloc / Handle::dealloc   (K times, guard bytes around each block)
//! drop(handle)                          (detach)
//! ```

pub mod dlmalloc;
pub mod extent;
pub mod firstfit;
pub mod locked;
pub mod process;
pub mod rlsf;
pub mod talc;

use std::alloc::Layout;
use std::fmt;

use crate::region::Region;
use crate::units::parse_bytes;
use firstfit::Fit;

/// What one thread holds for the length of one ECall.
pub trait Handle {
    /// Allocates a block for `layout`; null when the allocator is out of
    /// memory.
    fn alloc(&mut self, layout: Layout) -> *mut u8;

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// - `ptr` was returned by `alloc` on a handle of the same
    ///   [`RegionAlloc`] (any thread's) with this same `layout`;
    /// - it has not been freed since.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout);
}

/// A class row of an allocator's size-class table (snugalloc only).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClassRow {
    /// Size-class index.
    pub class: usize,
    /// Object size of the class.
    pub object_bytes: usize,
    /// Live objects in the class.
    pub live_objects: usize,
    /// Bytes the objects of the class occupy (object_bytes * live_objects).
    pub live_bytes: usize,
    /// Bytes of slabs holding the class.
    pub slab_bytes: usize,
    /// Number of slabs of the class.
    pub slab_count: usize,
    /// Requested bytes live in the class at the same moment (`run
    /// --exact-live` only).
    #[serde(default)]
    pub requested_bytes: Option<u64>,
    /// The program's live blocks in the class at the same moment (`run
    /// --exact-live` only); `live_objects` also counts objects freed and
    /// not yet back on a free list (remote frees in flight, foreign objects
    /// kept for reuse).
    #[serde(default)]
    pub program_objects: Option<u64>,
}

/// A per-size-class table taken at one moment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ClassTable {
    /// The allocator's own rendering of the table.
    pub text: String,
    /// The rows.
    pub rows: Vec<ClassRow>,
    /// Bytes of the chunk runs of large objects (those no class serves).
    #[serde(default)]
    pub large_bytes: u64,
    /// Requested bytes live in large objects at the same moment (`run
    /// --exact-live` only).
    #[serde(default)]
    pub large_requested_bytes: Option<u64>,
}

impl ClassTable {
    /// Adds the program's live requested bytes and blocks by class
    /// (`class_live`, indexed by class) and its requested bytes in all
    /// (`total`) to the table: rows gain theirs, classes with live blocks
    /// but no row gain a row, and what no class holds is the large
    /// objects'.
    pub fn add_requested(
        &mut self,
        class_live: &[(i64, i64)],
        total: i64,
        object_bytes: impl Fn(usize) -> usize,
    ) {
        let mut in_classes = 0i64;
        for (class, &(bytes, blocks)) in class_live.iter().enumerate() {
            in_classes += bytes;
            let requested = Some(bytes.max(0) as u64);
            let program = Some(blocks.max(0) as u64);
            match self.rows.iter_mut().find(|r| r.class == class) {
                Some(r) => (r.requested_bytes, r.program_objects) = (requested, program),
                None if bytes > 0 => self.rows.push(ClassRow {
                    class,
                    object_bytes: object_bytes(class),
                    live_objects: 0,
                    live_bytes: 0,
                    slab_bytes: 0,
                    slab_count: 0,
                    requested_bytes: requested,
                    program_objects: program,
                }),
                None => {}
            }
        }
        self.rows.sort_by_key(|r| r.class);
        self.large_requested_bytes = Some((total - in_classes).max(0) as u64);
    }

    /// The table with requested bytes, as the simulator prints it: per
    /// class, in KiB, what the program asked for; what rounding each block
    /// up to the class size adds; what objects freed but not yet back on a
    /// free list hold (remote frees in flight, foreign objects kept for
    /// reuse); what free slots hold (partly used slabs, idle allocators'
    /// slabs); and the slabs in all, which those four add up to (up to the
    /// racing of the two readings). `None` without requested bytes.
    pub fn requested_text(&self) -> Option<String> {
        let large = self.large_requested_bytes?;
        let kib = |b: u64| b as f64 / 1024.0;
        let columns = |cols: &[u64; 5]| -> String {
            cols.iter().map(|&b| format!(" {:>10.1}", kib(b))).collect()
        };
        let mut out = format!(
            "{:>5} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "class", "object B", "requested", "rounding", "in flight", "free slots", "slabs"
        );
        let mut sum = [0u64; 5];
        for r in &self.rows {
            let requested = r.requested_bytes.unwrap_or(0);
            let program = r.program_objects.unwrap_or(0) * r.object_bytes as u64;
            let held = r.live_bytes as u64;
            let slabs = r.slab_bytes as u64;
            let cols = [
                requested,
                program.saturating_sub(requested),
                held.saturating_sub(program),
                slabs.saturating_sub(held),
                slabs,
            ];
            for (s, c) in sum.iter_mut().zip(cols) {
                *s += c;
            }
            out += &format!("{:>5} {:>9}{}\n", r.class, r.object_bytes, columns(&cols));
        }
        out += &format!("{:>15}{}\n", "all classes", columns(&sum));
        out += &format!(
            "large objects: {:.1} KiB requested in {:.1} KiB of chunk runs (rounding to whole chunks {:.1} KiB)\n",
            kib(large),
            kib(self.large_bytes),
            kib(self.large_bytes.saturating_sub(large))
        );
        Some(out)
    }
}

/// Why [`RegionAlloc::attach`] gave no handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No memory for a new allocator's metadata.
    OutOfMemory,
    /// Every allocator is attached, or out of the pool for a moment.
    Busy,
}

/// One allocator instance for one run.
pub trait RegionAlloc: Send + Sync {
    /// The label used in tables, plots and files (the spec string).
    fn label(&self) -> String;

    /// Starts an ECall, or says why no handle can be had right now (the
    /// caller retries), which only snugalloc can cause: every allocator of
    /// its pool attached, or no room for a new one's metadata. An ECall
    /// refused for memory is one out-of-memory failure, however many times
    /// its thread retries (a thread that cannot attach does no work).
    fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused>;

    /// Bytes currently reserved: the allocator's footprint, by its
    /// adapter's definition. Cheap and lock-free; called every 100 ms.
    fn reserved_bytes(&self) -> usize;

    /// The exact highest reserved bytes so far, where the allocator tracks
    /// it (the samples can miss a peak shorter than a tick).
    fn peak_reserved_bytes(&self) -> Option<usize> {
        None
    }

    /// The region every block must lie in, for region allocators.
    fn region(&self) -> Option<&Region>;

    /// The per-size-class table, where the allocator has one.
    /// The size class that serves `size`, where the allocator has classes
    /// (snugalloc: [`snugalloc::Heap::size_class_of`]).
    fn class_of(&self, _size: usize) -> Option<usize> {
        None
    }

    fn class_table(&self) -> Option<ClassTable> {
        None
    }

    /// Allocations that found no room and waited for other threads to
    /// free some, and of those the ones that failed anyway, where the
    /// allocator waits (snugalloc: `Stats::room_waits` and
    /// `room_waits_failed`). Read once, at the end of a run.
    fn waits_for_room(&self) -> Option<[u64; 2]> {
        None
    }

    /// Cross-checks of the allocator's own counters, run once at the end of
    /// a run; each returned string is a finding to report.
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The process allocators, run in a child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessKind {
    /// The platform allocator (glibc malloc on Linux).
    System,
    /// mimalloc (feature `mimalloc`).
    Mimalloc,
    /// jemalloc via tikv-jemallocator (feature `jemalloc`).
    Jemalloc,
    /// snmalloc via snmalloc-rs (feature `snmalloc`).
    Snmalloc,
}

impl ProcessKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::System => "system",
            ProcessKind::Mimalloc => "mimalloc",
            ProcessKind::Jemalloc => "jemalloc",
            ProcessKind::Snmalloc => "snmalloc",
        }
    }

    /// Whether this binary was built with the allocator.
    pub fn built_in(self) -> bool {
        match self {
            ProcessKind::System => true,
            ProcessKind::Mimalloc => cfg!(feature = "mimalloc"),
            ProcessKind::Jemalloc => cfg!(feature = "jemalloc"),
            ProcessKind::Snmalloc => cfg!(feature = "snmalloc"),
        }
    }

    /// Parses a process allocator name.
    pub fn from_name(name: &str) -> Option<ProcessKind> {
        [
            ProcessKind::System,
            ProcessKind::Mimalloc,
            ProcessKind::Jemalloc,
            ProcessKind::Snmalloc,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// snugalloc's configuration overrides from a spec such as
/// `snugalloc:chunk=16k,max-slab=8k`; `None` keeps the core's default for
/// the region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnugOptions {
    /// `chunk=`: minimum chunk bytes.
    pub chunk_bytes: Option<usize>,
    /// `max-slab=`: largest object served from slabs.
    pub max_slab_object_bytes: Option<usize>,
    /// `slab=`: largest slab.
    pub max_slab_bytes: Option<usize>,
    /// `max-allocators=`: pool size.
    pub max_allocators: Option<usize>,
    /// `idle-retain=`: bytes of empty slabs an idle allocator may keep.
    pub idle_retain_bytes: Option<usize>,
    /// `foreign=`: bytes of other allocators' objects an allocator keeps
    /// to hand out again.
    pub foreign_retain_bytes: Option<usize>,
    /// `oom-wait=`: milliseconds an allocation that finds no room waits
    /// for other threads to free some before it fails (`0`: at once).
    pub out_of_memory_wait_ms: Option<u64>,
    /// `depot=`: bytes the heap's depot of other allocators' objects may
    /// hold (`0` turns it off).
    pub depot_bytes: Option<usize>,
    /// `classes=`: size classes per power of two above 128 B (2, 4 or 8).
    pub classes_per_doubling: Option<usize>,
    /// `cache=`: a per-allocator chunk cache of this many bytes, in force
    /// whatever the region size (`0` turns it off).
    pub chunk_cache_bytes: Option<usize>,
    /// `halves=on|off`: objects just above the largest slab class in half
    /// chunks (`Config::half_chunks`).
    pub half_chunks: Option<bool>,
}

/// A parsed `--alloc` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocSpec {
    /// snugalloc over the region.
    Snugalloc(SnugOptions),
    /// The dlmalloc crate over the region, one lock, sbrk-like growth.
    Dlmalloc {
        /// `granularity=`: bytes dlmalloc asks sbrk for at a time.
        granularity_bytes: Option<usize>,
    },
    /// talc over the region, one lock.
    Talc,
    /// rlsf (TLSF) over the region, one lock.
    Rlsf,
    /// The reference address-ordered first-fit list, one lock.
    FirstFit,
    /// The same list placing by best fit, one lock.
    BestFit,
    /// A process allocator in a child process.
    Process(ProcessKind),
}

/// Allocator names `--alloc` accepts, for error messages.
pub const ALLOC_ALLOWED: &str =
    "snugalloc[:chunk=SIZE,max-slab=SIZE,slab=SIZE,max-allocators=N,idle-retain=SIZE,foreign=SIZE,oom-wait=MS,depot=SIZE,classes=N,cache=SIZE,halves=on|off], \
dlmalloc[:granularity=SIZE], talc, rlsf, firstfit, bestfit, system, mimalloc, jemalloc, snmalloc";

impl AllocSpec {
    /// Parses one `--alloc` entry such as `dlmalloc` or `snugalloc:chunk=4k`.
    pub fn parse(text: &str) -> Result<AllocSpec, String> {
        let (name, opts) = match text.split_once(':') {
            Some((n, o)) => (n.trim(), Some(o)),
            None => (text.trim(), None),
        };
        let pairs = |opts: Option<&str>| -> Result<Vec<(String, String)>, String> {
            let Some(opts) = opts else {
                return Ok(Vec::new());
            };
            opts.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                    None => Err(format!("'{kv}' in '{text}' is not KEY=VALUE")),
                })
                .collect()
        };
        let no_opts = |spec: AllocSpec| -> Result<AllocSpec, String> {
            if opts.is_some_and(|o| !o.trim().is_empty()) {
                Err(format!("'{name}' takes no options"))
            } else {
                Ok(spec)
            }
        };
        match name {
            "snugalloc" => {
                let mut o = SnugOptions::default();
                for (k, v) in pairs(opts)? {
                    let bytes = || parse_bytes(&v).map_err(|e| format!("snugalloc {k}: {e}"));
                    match k.as_str() {
                        "chunk" => o.chunk_bytes = Some(bytes()?),
                        "max-slab" => o.max_slab_object_bytes = Some(bytes()?),
                        "slab" => o.max_slab_bytes = Some(bytes()?),
                        "max-allocators" => {
                            o.max_allocators = Some(v.parse().map_err(|_| {
                                format!("snugalloc max-allocators: '{v}' is not a count")
                            })?)
                        }
                        "idle-retain" => o.idle_retain_bytes = Some(bytes()?),
                        "foreign" => o.foreign_retain_bytes = Some(bytes()?),
                        "oom-wait" => {
                            o.out_of_memory_wait_ms = Some(v.parse().map_err(|_| {
                                format!("snugalloc oom-wait: '{v}' is not a count of milliseconds (allowed: 0 to 1000)")
                            })?)
                        }
                        "depot" => o.depot_bytes = Some(bytes()?),
                        "cache" => o.chunk_cache_bytes = Some(bytes()?),
                        "halves" => {
                            o.half_chunks = Some(match v.as_str() {
                                "on" => true,
                                "off" => false,
                                _ => {
                                    return Err(format!(
                                        "snugalloc halves: '{v}' is not on or off"
                                    ))
                                }
                            })
                        }
                        "classes" => {
                            o.classes_per_doubling = Some(v.parse().map_err(|_| {
                                format!("snugalloc classes: '{v}' is not a count (allowed: 2, 4 or 8)")
                            })?)
                        }
                        _ => {
                            return Err(format!(
                                "unknown snugalloc option '{k}' (allowed: chunk, max-slab, slab, max-allocators, idle-retain, foreign, oom-wait, depot, classes, cache, halves)"
                            ))
                        }
                    }
                }
                Ok(AllocSpec::Snugalloc(o))
            }
            "dlmalloc" => {
                let mut granularity_bytes = None;
                for (k, v) in pairs(opts)? {
                    match k.as_str() {
                        "granularity" => {
                            let g = parse_bytes(&v)
                                .map_err(|e| format!("dlmalloc granularity: {e}"))?;
                            if !g.is_power_of_two() || g < 64 {
                                return Err(format!(
                                    "dlmalloc granularity {g} is not a power of two of at least 64"
                                ));
                            }
                            granularity_bytes = Some(g);
                        }
                        _ => {
                            return Err(format!(
                                "unknown dlmalloc option '{k}' (allowed: granularity)"
                            ))
                        }
                    }
                }
                Ok(AllocSpec::Dlmalloc { granularity_bytes })
            }
            "talc" => no_opts(AllocSpec::Talc),
            "rlsf" => no_opts(AllocSpec::Rlsf),
            "firstfit" => no_opts(AllocSpec::FirstFit),
            "bestfit" => no_opts(AllocSpec::BestFit),
            other => match ProcessKind::from_name(other) {
                Some(k) if !k.built_in() => Err(format!(
                    "'{other}' is not built into this binary (rebuild with --features {other})"
                )),
                Some(k) => no_opts(AllocSpec::Process(k)),
                None => Err(format!("unknown allocator '{other}'")),
            },
        }
    }

    /// The spec for a replay, where one OS thread holds every virtual
    /// thread's handle: snugalloc's wait for room (`oom-wait=`) is set to 0
    /// unless the spec sets it, since the handles that could free are held
    /// by the waiting thread itself, so every failure would wait its whole
    /// bound and then fail as before.
    pub fn on_one_thread(self) -> AllocSpec {
        match self {
            AllocSpec::Snugalloc(o) => AllocSpec::Snugalloc(SnugOptions {
                out_of_memory_wait_ms: o.out_of_memory_wait_ms.or(Some(0)),
                ..o
            }),
            other => other,
        }
    }

    /// Whether the allocator works in a fixed region (and so has a min-heap).
    pub fn is_region(&self) -> bool {
        !matches!(self, AllocSpec::Process(_))
    }

    /// Builds the allocator over `region`. Process allocators are built by
    /// [`process::ProcessAlloc::new`] in the child instead.
    pub fn build(&self, region: Region) -> Result<Box<dyn RegionAlloc>, String> {
        let label = self.to_string();
        match self {
            AllocSpec::Snugalloc(o) => crate::snug::build(label, o, region),
            AllocSpec::Dlmalloc { granularity_bytes } => Ok(Box::new(
                dlmalloc::DlmallocRegion::new(label, region, *granularity_bytes)?,
            )),
            AllocSpec::Talc => Ok(Box::new(talc::build(label, region)?)),
            AllocSpec::Rlsf => Ok(Box::new(rlsf::build(label, region)?)),
            AllocSpec::FirstFit => Ok(Box::new(firstfit::build(label, region, Fit::First)?)),
            AllocSpec::BestFit => Ok(Box::new(firstfit::build(label, region, Fit::Best)?)),
            AllocSpec::Process(k) => Err(format!("{} runs in a child process", k.name())),
        }
    }
}

impl fmt::Display for AllocSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = |b: usize| {
            if b % (1 << 20) == 0 {
                format!("{}M", b >> 20)
            } else if b % 1024 == 0 {
                format!("{}k", b >> 10)
            } else {
                b.to_string()
            }
        };
        match self {
            AllocSpec::Snugalloc(o) => {
                let mut parts = Vec::new();
                if let Some(b) = o.chunk_bytes {
                    parts.push(format!("chunk={}", kib(b)));
                }
                if let Some(b) = o.max_slab_object_bytes {
                    parts.push(format!("max-slab={}", kib(b)));
                }
                if let Some(b) = o.max_slab_bytes {
                    parts.push(format!("slab={}", kib(b)));
                }
                if let Some(n) = o.max_allocators {
                    parts.push(format!("max-allocators={n}"));
                }
                if let Some(b) = o.idle_retain_bytes {
                    parts.push(format!("idle-retain={}", kib(b)));
                }
                if let Some(b) = o.foreign_retain_bytes {
                    parts.push(format!("foreign={}", kib(b)));
                }
                if let Some(ms) = o.out_of_memory_wait_ms {
                    parts.push(format!("oom-wait={ms}"));
                }
                if let Some(b) = o.depot_bytes {
                    parts.push(format!("depot={}", kib(b)));
                }
                if let Some(n) = o.classes_per_doubling {
                    parts.push(format!("classes={n}"));
                }
                if let Some(b) = o.chunk_cache_bytes {
                    parts.push(format!("cache={}", kib(b)));
                }
                if let Some(h) = o.half_chunks {
                    parts.push(format!("halves={}", if h { "on" } else { "off" }));
                }
                if parts.is_empty() {
                    f.write_str("snugalloc")
                } else {
                    write!(f, "snugalloc:{}", parts.join(","))
                }
            }
            AllocSpec::Dlmalloc {
                granularity_bytes: None,
            } => f.write_str("dlmalloc"),
            AllocSpec::Dlmalloc {
                granularity_bytes: Some(g),
            } => {
                write!(f, "dlmalloc:granularity={}", kib(*g))
            }
            AllocSpec::Talc => f.write_str("talc"),
            AllocSpec::Rlsf => f.write_str("rlsf"),
            AllocSpec::FirstFit => f.write_str("firstfit"),
            AllocSpec::BestFit => f.write_str("bestfit"),
            AllocSpec::Process(k) => f.write_str(k.name()),
        }
    }
}

/// Parses a comma-separated `--alloc` list. Entries are split on commas
/// that start a new allocator name, so `snugalloc:chunk=4k,max-slab=8k,dlmalloc`
/// is two entries.
pub fn parse_alloc_list(text: &str) -> Result<Vec<AllocSpec>, String> {
    let mut entries: Vec<String> = Vec::new();
    for piece in text.split(',') {
        let starts_option = piece.contains('=') && !piece.contains(':');
        match entries.last_mut() {
            Some(last) if starts_option => {
                last.push(',');
                last.push_str(piece);
            }
            _ => entries.push(piece.to_string()),
        }
    }
    let specs: Vec<AllocSpec> = entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| AllocSpec::parse(e))
        .collect::<Result<_, _>>()?;
    if specs.is_empty() {
        return Err("no allocator given".to_string());
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requested-bytes table splits each class's slabs into requested
    /// bytes, rounding, objects in flight and free slots, which add up.
    #[test]
    fn requested_bytes_split_a_class_into_its_parts() {
        let row = |class, object_bytes, live_objects, slab_bytes| ClassRow {
            class,
            object_bytes,
            live_objects,
            live_bytes: object_bytes * live_objects,
            slab_bytes,
            slab_count: 1,
            requested_bytes: None,
            program_objects: None,
        };
        // Class 2: 48-byte objects, 10 held (2 of them freed, in flight) in
        // a 4 KiB slab; the program holds 8 blocks of 40 bytes.
        let mut t = ClassTable {
            text: String::new(),
            rows: vec![row(2, 48, 10, 4096)],
            large_bytes: 8192,
            large_requested_bytes: None,
        };
        assert_eq!(t.requested_text(), None);
        let mut live = vec![(0i64, 0i64); 8];
        live[2] = (8 * 40, 8);
        // Class 5 has a block the snapshot did not see in a slab.
        live[5] = (90, 1);
        t.add_requested(&live, 8 * 40 + 90 + 5000, |c| 16 * (c + 1));
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[1].class, 5);
        assert_eq!(t.large_requested_bytes, Some(5000));
        let text = t.requested_text().expect("requested bytes");
        let cells = |line: &str| -> Vec<f64> {
            line.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        };
        let class2 = text.lines().nth(1).expect("class 2's row");
        // KiB: requested 320 B, rounding 8 x 8 B, in flight 2 x 48 B, free
        // slots 4096 - 480 B, slabs 4 KiB.
        let want = [2.0, 48.0, 0.3125, 0.0625, 0.09375, 3.53125, 4.0];
        for (got, want) in cells(class2).iter().zip(want) {
            assert!((got - want).abs() < 0.051, "{class2}");
        }
        assert!(
            text.contains("large objects: 4.9 KiB requested in 8.0 KiB"),
            "{text}"
        );
    }

    #[test]
    fn parses_lists_with_options() {
        let v = parse_alloc_list("snugalloc:chunk=4k,max-slab=8k,dlmalloc,talc").expect("parse");
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].to_string(), "snugalloc:chunk=4k,max-slab=8k");
        assert_eq!(
            v[1],
            AllocSpec::Dlmalloc {
                granularity_bytes: None
            }
        );
        assert!(parse_alloc_list("nosuch").is_err());
        assert!(parse_alloc_list("talc:x=1").is_err());
        assert!(parse_alloc_list("snugalloc:chunk=4Q").is_err());
        let v = parse_alloc_list("snugalloc:classes=2,cache=256k").expect("parse");
        assert_eq!(v[0].to_string(), "snugalloc:classes=2,cache=256k");
        let v = parse_alloc_list("snugalloc:halves=off").expect("parse");
        assert_eq!(v[0].to_string(), "snugalloc:halves=off");
        assert!(parse_alloc_list("snugalloc:halves=maybe").is_err());
        assert!(parse_alloc_list("snugalloc:classes=many").is_err());
    }
}
