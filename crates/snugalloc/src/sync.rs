//! Synchronisation primitives: the one place the allocator takes its atomics
//! from. The lock-free structures (chunk backend, remote-free inbox) use
//! [`model`], which is loom's under `--cfg loom`, so the same source is
//! model-checked.
//!
//! Invariant: no other module names `core::sync::atomic` directly.

use core::ops::Deref;

pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Atomics of the lock-free structures that are model-checked with loom
/// (`RUSTFLAGS="--cfg loom"`): loom's under that flag, core's otherwise.
pub(crate) mod model {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
    };
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
    };
}

/// Tells the processor we are spinning.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// Keeps `T` on cache lines of its own, so that writes to it by one thread
/// do not slow down reads of its neighbours by others.
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
