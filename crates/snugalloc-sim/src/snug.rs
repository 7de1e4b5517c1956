//! The snugalloc adapter: a [`snugalloc::Heap`] over the region, with one
//! [`snugalloc::Attached`] per ECall (attach takes an allocator from the
//! heap's pool, dropping the handle detaches it).
//!
//! Reserved bytes: the heap's own `Stats::reserved_bytes` (metadata plus
//! every chunk handed out), cross-checked at the end of the run against the
//! region size and the bytes still live. The per-size-class table comes from
//! `Heap::snapshot`.
//!
//! Spec options map onto `Config::for_region(len)`: `chunk=` sets
//! `chunk_bytes` and, like the core's defaults, slabs of up to four chunks
//! and slab objects up to one chunk unless `max-slab=` (largest slab object)
//! or `slab=` (largest slab) say otherwise; `max-allocators=`,
//! `idle-retain=` set the fields of the same names, `foreign=` sets
//! `foreign_retain_bytes`, `oom-wait=` `out_of_memory_wait_ms` and `depot=`
//! `depot_bytes`, `classes=` sets
//! `classes_per_doubling`, `cache=` sets `chunk_cache_bytes` with the
//! cache in force whatever the region size, and `halves=on|off` sets
//! `half_chunks`.

use std::alloc::Layout;
use std::sync::atomic::{AtomicUsize, Ordering};

use snugalloc::{Attached, Config, Heap};

use crate::alloc::{ClassRow, ClassTable, Handle, Refused, RegionAlloc, SnugOptions};
use crate::region::Region;

/// snugalloc over one region.
pub struct SnugRegion {
    label: String,
    heap: Heap,
    region: Region,
}

/// The configuration a spec asks for over a region of `len` bytes.
pub fn config_for(o: &SnugOptions, len: usize) -> Config {
    let mut cfg = Config::for_region(len);
    if let Some(c) = o.chunk_bytes {
        cfg.chunk_bytes = c;
        cfg.max_slab_bytes = (4 * c).min(1 << 20);
        cfg.max_slab_object_bytes = c;
    }
    if let Some(b) = o.max_slab_bytes {
        cfg.max_slab_bytes = b;
    }
    if let Some(b) = o.max_slab_object_bytes {
        cfg.max_slab_object_bytes = b;
    }
    if let Some(n) = o.max_allocators {
        cfg.max_allocators = n;
    }
    if let Some(b) = o.idle_retain_bytes {
        cfg.idle_retain_bytes = b;
    }
    if let Some(b) = o.foreign_retain_bytes {
        cfg.foreign_retain_bytes = b;
    }
    if let Some(ms) = o.out_of_memory_wait_ms {
        cfg.out_of_memory_wait_ms = ms;
    }
    if let Some(b) = o.depot_bytes {
        cfg.depot_bytes = b;
    }
    if let Some(n) = o.classes_per_doubling {
        cfg.classes_per_doubling = n;
    }
    if let Some(b) = o.chunk_cache_bytes {
        cfg.chunk_cache_bytes = b;
        cfg.chunk_cache_min_heap_bytes = 0;
    }
    if let Some(h) = o.half_chunks {
        cfg.half_chunks = h;
    }
    cfg
}

/// Builds snugalloc over `region`.
pub fn build(
    label: String,
    o: &SnugOptions,
    region: Region,
) -> Result<Box<dyn RegionAlloc>, String> {
    let cfg = config_for(o, region.len());
    // SAFETY: the region is mapped read-write, used by nothing else, and
    // outlives the heap and its blocks: `region` is declared after `heap` in
    // `SnugRegion`, so it is unmapped after the heap is dropped, and the
    // workloads free every block before the allocator is dropped.
    let heap = unsafe { Heap::from_region(region.base(), region.len(), cfg) }
        .map_err(|e| e.to_string())?;
    Ok(Box::new(SnugRegion {
        label,
        heap,
        region,
    }))
}

struct SnugHandle<'h>(Attached<'h>, &'h Heap);

/// Tables printed so far by [`report_oom`].
static OOM_TABLES: AtomicUsize = AtomicUsize::new(0);

/// With `SNUGALLOC_SIM_OOM_TABLES=N` in the environment, prints the heap's
/// size-class table and free runs to stderr at the first N out-of-memory
/// failures of the process: what held the memory when a request failed.
/// With `SNUGALLOC_SIM_OOM_MAP=1` as well, also the map of every chunk
/// (`Heap::write_layout`): where the free space was cut up.
fn report_oom(heap: &Heap, size: usize) {
    let Some(limit) = std::env::var("SNUGALLOC_SIM_OOM_TABLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    // Relaxed: a count of reports, nothing else depends on it.
    if OOM_TABLES.fetch_add(1, Ordering::Relaxed) < limit {
        eprintln!(
            "snugalloc-sim: out of memory for {size} bytes:\n{}",
            heap.snapshot()
        );
        if std::env::var_os("SNUGALLOC_SIM_OOM_MAP").is_some_and(|v| v == "1") {
            let mut map = String::new();
            if heap.write_layout(&mut map).is_ok() {
                eprintln!("chunk map (. free, s slab, h half chunk, L# chunk-run object, M allocator, c cached):\n{map}");
            }
        }
    }
}

impl Handle for SnugHandle<'_> {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let p = self.0.alloc(layout);
        if p.is_null() {
            report_oom(self.1, layout.size());
        }
        p
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this heap (any
        // handle) with `layout` and is not used afterwards.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

impl RegionAlloc for SnugRegion {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused> {
        match self.heap.attach() {
            Ok(a) => Ok(Box::new(SnugHandle(a, &self.heap))),
            Err(snugalloc::Error::OutOfMemory) => Err(Refused::OutOfMemory),
            Err(_) => Err(Refused::Busy),
        }
    }

    fn reserved_bytes(&self) -> usize {
        self.heap.stats().reserved_bytes
    }

    fn peak_reserved_bytes(&self) -> Option<usize> {
        Some(self.heap.stats().peak_reserved_bytes)
    }

    fn region(&self) -> Option<&Region> {
        Some(&self.region)
    }

    fn class_table(&self) -> Option<ClassTable> {
        let snap = self.heap.snapshot();
        let rows = snap
            .classes()
            .iter()
            .filter(|r| r.slab_count > 0 || r.live_objects > 0)
            .map(|r| ClassRow {
                class: r.class,
                object_bytes: r.object_bytes,
                live_objects: r.live_objects,
                live_bytes: r.live_bytes,
                slab_bytes: r.slab_bytes,
                slab_count: r.slab_count,
                requested_bytes: None,
                program_objects: None,
            })
            .collect();
        Some(ClassTable {
            text: snap.to_string(),
            rows,
            large_bytes: snap.large_bytes as u64,
            large_requested_bytes: None,
        })
    }

    fn class_of(&self, size: usize) -> Option<usize> {
        self.heap.size_class_of(size)
    }

    fn waits_for_room(&self) -> Option<[u64; 2]> {
        let s = self.heap.stats();
        Some([s.room_waits as u64, s.room_waits_failed as u64])
    }

    fn check(&self) -> Vec<String> {
        let s = self.heap.stats();
        let mut findings = Vec::new();
        if s.heap_bytes > self.region.len() {
            findings.push(format!(
                "heap_bytes {} exceeds the region ({})",
                s.heap_bytes,
                self.region.len()
            ));
        }
        if s.reserved_bytes > s.heap_bytes {
            findings.push(format!(
                "reserved_bytes {} exceeds heap_bytes {}",
                s.reserved_bytes, s.heap_bytes
            ));
        }
        if s.peak_reserved_bytes < s.reserved_bytes {
            findings.push(format!(
                "peak_reserved_bytes {} is below reserved_bytes {}",
                s.peak_reserved_bytes, s.reserved_bytes
            ));
        }
        if s.live_bytes != 0 {
            findings.push(format!(
                "live_bytes is {} after every block was freed",
                s.live_bytes
            ));
        }
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reach_the_config_and_bad_ones_fail_validation() {
        let o = SnugOptions {
            classes_per_doubling: Some(2),
            chunk_cache_bytes: Some(256 << 10),
            half_chunks: Some(false),
            ..SnugOptions::default()
        };
        let cfg = config_for(&o, 64 << 20);
        assert_eq!(cfg.classes_per_doubling, 2);
        assert!(!cfg.half_chunks);
        assert_eq!(
            (cfg.chunk_cache_bytes, cfg.chunk_cache_min_heap_bytes),
            (256 << 10, 0)
        );
        assert_eq!(
            config_for(&SnugOptions::default(), 64 << 20),
            Config::for_region(64 << 20)
        );
        let bad = SnugOptions {
            classes_per_doubling: Some(3),
            ..SnugOptions::default()
        };
        let err = build("x".into(), &bad, Region::map(4 << 20).expect("map"))
            .err()
            .expect("classes=3 is rejected");
        assert!(err.contains("classes_per_doubling"), "{err}");
    }

    /// An ECall refused for memory is one failure, however long its thread
    /// retries: a worker attaches while the only allocator holds the whole
    /// heap, and keeps being refused for 100 ms after its first refusal.
    #[test]
    fn an_ecall_refused_for_memory_counts_once() {
        use crate::workload::{Ctx, ThreadCounters, Worker};
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};

        let a = build(
            "snugalloc".into(),
            &SnugOptions::default(),
            Region::map(4 << 20).expect("map"),
        )
        .expect("heap");
        let mut h = a.attach().expect("the first attach");
        let l = Layout::from_size_align(4096, 16).expect("layout");
        let blocks: Vec<_> =
            core::iter::from_fn(|| Some(h.alloc(l)).filter(|p| !p.is_null())).collect();
        // A second allocator needs memory for its metadata; there is none.
        assert_eq!(a.attach().err(), Some(Refused::OutOfMemory));
        let counters = [ThreadCounters::default(), ThreadCounters::default()];
        let stop = AtomicBool::new(false);
        let ctx = Ctx {
            alloc: a.as_ref(),
            counters: &counters,
            stop: &stop,
            start: Instant::now(),
            deadline: None,
            inject_corruption_every: None,
            exact_live: None,
            pace: None,
        };
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let w = Worker::new(&ctx, 0);
                w.attach(&ctx).is_some()
            });
            // Until the worker has been refused once, then 100 ms more of
            // refusals (bounded, in case it never tries: the count below
            // then fails).
            let until = Instant::now() + Duration::from_secs(10);
            while counters[0].oom.load(Ordering::Relaxed) == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
            for p in blocks {
                // SAFETY: allocated above with `l`, freed once.
                unsafe { h.dealloc(p, l) };
            }
            drop(h);
            assert!(worker.join().expect("the worker"), "attached at last");
        });
        assert_eq!(counters[0].oom.load(Ordering::Relaxed), 1);
    }
}
