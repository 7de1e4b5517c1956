//! Process allocators: the platform allocator, mimalloc, jemalloc and
//! snmalloc, called directly through their `GlobalAlloc` implementations in a
//! child process of the simulator (see `crate::child`).
//!
//! They have no region and no limit, so their footprint is measured the way a
//! user would see it: reserved bytes are the child's resident set size (from
//! `/proc/self/statm`) minus its resident size just before the workload
//! started. That includes the simulator's own bookkeeping (small: the store's
//! and queues' pointer arrays) and thread stacks, so it slightly overstates
//! the allocator's footprint. Attach is a no-op.

use std::alloc::{GlobalAlloc, Layout, System};

use super::{Handle, ProcessKind, Refused, RegionAlloc};
use crate::region::Region;

/// Resident set size of this process in bytes, or 0 if it cannot be read.
pub fn resident_bytes() -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// A process allocator measured by resident memory.
pub struct ProcessAlloc {
    kind: ProcessKind,
    baseline_bytes: usize,
}

impl ProcessAlloc {
    /// The allocator `kind`, with the resident size now as baseline.
    pub fn new(kind: ProcessKind) -> ProcessAlloc {
        ProcessAlloc {
            kind,
            baseline_bytes: resident_bytes(),
        }
    }
}

struct ProcessHandle(ProcessKind);

/// Calls `$f` on the allocator of `$kind`.
macro_rules! with_allocator {
    ($kind:expr, |$a:ident| $body:expr) => {
        match $kind {
            #[cfg(feature = "mimalloc")]
            ProcessKind::Mimalloc => {
                let $a = &mimalloc::MiMalloc;
                $body
            }
            #[cfg(feature = "jemalloc")]
            ProcessKind::Jemalloc => {
                let $a = &tikv_jemallocator::Jemalloc;
                $body
            }
            #[cfg(feature = "snmalloc")]
            ProcessKind::Snmalloc => {
                let $a = &snmalloc_rs::SnMalloc;
                $body
            }
            // Kinds not built in are rejected when `--alloc` is parsed.
            _ => {
                let $a = &System;
                $body
            }
        }
    };
}

impl Handle for ProcessHandle {
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: workloads never request zero bytes.
        with_allocator!(self.0, |a| unsafe { a.alloc(layout) })
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from `alloc` of the same
        // kind (one kind per child process) with `layout`.
        with_allocator!(self.0, |a| unsafe { a.dealloc(ptr, layout) })
    }
}

impl RegionAlloc for ProcessAlloc {
    fn label(&self) -> String {
        self.kind.name().to_string()
    }
    fn attach(&self) -> Result<Box<dyn Handle + '_>, Refused> {
        Ok(Box::new(ProcessHandle(self.kind)))
    }
    fn reserved_bytes(&self) -> usize {
        resident_bytes().saturating_sub(self.baseline_bytes)
    }
    fn region(&self) -> Option<&Region> {
        None
    }
}
