//! snugalloc: a message-passing memory allocator that stays small in fixed
//! heaps (enclaves, embedded RAM) and fast under many threads.
//!
//! Every thread allocates from its own allocator without atomics; objects
//! freed by another thread go back to their owner in batches, one atomic
//! operation per batch. Unlike allocators that keep per-thread chunk caches,
//! snugalloc gives empty slabs back to a shared chunk backend at once, sizes
//! slabs for small heaps, serves large objects in whole chunks (not powers
//! of two), and reclaims idle allocators' memory before it reports out of
//! memory.
//!
//! # Using it
//!
//! ```
//! use core::alloc::Layout;
//! use snugalloc::{Config, Heap};
//!
//! let mut region = vec![0u8; 4 << 20];
//! // SAFETY: `region` outlives the heap and nothing else uses it.
//! let heap = unsafe { Heap::from_region(region.as_mut_ptr(), region.len(), Config::for_region(4 << 20)) }
//!     .expect("valid region");
//! let mut a = heap.attach().expect("an allocator");
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! let p = a.alloc(layout);
//! assert!(!p.is_null());
//! // SAFETY: `p` came from this heap with `layout`.
//! unsafe { a.dealloc(p, layout) };
//! drop(a);
//! println!("{}", heap.snapshot());
//! ```
//!
//! As the global allocator: `#[global_allocator] static A: snugalloc::SnugAlloc = snugalloc::SnugAlloc;`
//! (feature `std`), or [`FixedGlobal`] over a region.
//!
//! # Layers, bottom up (each uses only those above it in this list)
//!
//! | module | concept |
//! |---|---|
//! | `sync` | atomics and the spin lock, in one place |
//! | `platform` | the only code that calls the OS; fatal errors |
//! | `source` | where the region comes from: fixed, or OS (decommits) |
//! | `size_class` | sizes to classes; slab geometry per heap |
//! | `config` | [`Config`], validation, [`Error`], [`parse_bytes`] |
//! | `half` | half chunks shared by all allocators: the CAS protocol and the index of chunks with a free half |
//! | `pagemap` | chunk → metadata (kind, class, owner, slab state) |
//! | `backend` | runs of chunks: first fit over a bitmap |
//! | `remote` | outgoing batches and inboxes for cross-thread frees |
//! | `depot` | other allocators' objects past what an allocator keeps, for any allocator to hand out again |
//! | `run_cache` | free chunk runs an allocator keeps for its next slab or large object (big heaps) |
//! | `allocator` | fast and slow paths of alloc and free |
//! | `pool` | allocators handed out on attach, taken back on detach |
//! | `fork_gate` | no other allocator's `busy` flag held for a moment across `fork()` |
//! | `heap` | region layout, [`Heap`], [`Attached`], reclaim, statistics |
//! | `stats` | [`Stats`], [`Snapshot`] |
//! | `global` | [`SnugAlloc`] (TLS, OS heap), [`FixedGlobal`] |
#![no_std]
#![deny(missing_docs)]

// Chunk indices, packed descriptors and tagged stack heads assume 64-bit
// pointers and atomics.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("snugalloc needs a 64-bit target with 64-bit atomics");

#[cfg(feature = "std")]
extern crate std;

mod allocator;
mod backend;
mod config;
mod depot;
mod fork_gate;
mod global;
mod half;
mod heap;
mod pagemap;
mod platform;
mod pool;
mod remote;
mod run_cache;
mod size_class;
mod source;
mod stats;
mod sync;

/// Internal structures, exposed only for benchmarks (feature `internals`).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    use crate::backend::OwnedBackend;

    /// The chunk backend over `chunks` chunks of an imaginary region (it
    /// never touches chunk memory), owning its bitmaps.
    pub struct ChunkBackend {
        backend: OwnedBackend,
    }

    impl ChunkBackend {
        /// All chunks free.
        pub fn new(chunks: usize) -> ChunkBackend {
            ChunkBackend {
                backend: OwnedBackend::new(chunks, 1 << 30),
            }
        }

        /// Claims `n` chunks; the first chunk's index.
        pub fn alloc_run(&self, n: usize) -> Option<usize> {
            self.backend.alloc_run(n, 0)
        }

        /// Frees a run returned by `alloc_run` (checked only in debug builds).
        pub fn free_run(&self, start: usize, n: usize) {
            self.backend.free_run(start, n)
        }

        /// Chunks handed out now.
        pub fn reserved_chunks(&self) -> usize {
            self.backend.reserved_chunks()
        }
    }
}

pub use config::{
    parse_bytes, Config, ConfigError, Error, ParseBytesError, MAX_ALLOCATORS, MAX_CHUNKS,
    MAX_CHUNK_BYTES, MAX_DECOMMIT_DELAY_MS, MAX_OUT_OF_MEMORY_WAIT_MS, MIN_CHUNK_BYTES,
    SMALL_HEAP_BYTES,
};
pub use global::FixedGlobal;
#[cfg(feature = "std")]
pub use global::SnugAlloc;
pub use heap::{Attached, Heap};
pub use size_class::{class_size, size_class_of, MAX_CLASS_BYTES, NUM_CLASSES};
pub use stats::{ClassRow, FreeRuns, Snapshot, Stats};
