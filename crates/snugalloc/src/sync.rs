//! Synchronisation primitives: the one place the allocator takes its atomics
//! and its spin lock from, so that the same source can later be model-checked
//! by swapping this module.
//!
//! Invariant: no other module names `core::sync::atomic` directly.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Tells the processor we are spinning.
#[inline]
pub(crate) fn spin_hint() {
    core::hint::spin_loop();
}

/// A test-and-test-and-set spin lock around a value.
///
/// Invariant: `value` is accessed only through a [`SpinGuard`], and at most
/// one guard exists at a time (`locked` is true exactly while it exists).
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so
// sharing the lock is sound whenever moving the value between threads is.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning until it is free.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        loop {
            // Acquire pairs with the Release store in `SpinGuard::drop`.
            if !self.locked.swap(true, Ordering::Acquire) {
                return SpinGuard { lock: self };
            }
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }
}

impl<T> SpinLock<T> {
    /// Takes the lock without a guard (for `fork`, where the unlock happens
    /// in another call, or in the child process).
    pub(crate) fn lock_raw(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`SpinLock::lock_raw`].
    ///
    /// # Safety
    /// The lock must have been taken with `lock_raw` by this thread (or, in
    /// a forked child, by the thread that forked), and no guard may exist.
    pub(crate) unsafe fn unlock_raw(&self) {
        // Release pairs with the Acquire swap in `lock`.
        self.locked.store(false, Ordering::Release);
    }
}

/// Exclusive access to a [`SpinLock`]'s value; unlocks on drop.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a guard exists only while `locked` is held by this thread
        // (the type invariant), so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // Release pairs with the Acquire swap in `SpinLock::lock`.
        self.lock.locked.store(false, Ordering::Release);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn spin_lock_excludes() {
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread panicked");
        }
        assert_eq!(*lock.lock(), 40_000);
    }
}
