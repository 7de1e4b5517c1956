//! The process heap and each thread's allocator.
//!
//! One [`Heap`] per process, created by the first allocation from the
//! environment's settings and never dropped. Each thread keeps its attached
//! allocator in a `const`-initialised thread-local pointer (no destructor
//! is registered with the C runtime for it: that would call `calloc`), and
//! a `pthread_key_create` destructor detaches it when the thread exits.
//!
//! The thread-local pointer `LOCAL` holds one of:
//!
//! | value | meaning |
//! |---|---|
//! | `NONE` (0) | no allocator yet: the next call attaches one |
//! | `ATTACHING` (1) | attaching now; a call that re-enters (from `pthread_setspecific`) attaches for itself |
//! | `DETACHED` (2) | the thread's exit destructor ran, or its key could not be set: every call attaches for itself |
//! | anything else | `Attached::into_raw` of this thread's allocator |
//!
//! Call tree of an allocation:
//!
//! ```text
//! with_thread ── LOCAL holds an allocator ──> f(allocator)          (fast path)
//!      └── with_thread_slow ── heap() ── init() on first use
//!               ├── NONE: attach_thread ── heap.attach_for_thread, pthread_setspecific
//!               │     (refused at the keeping limit: back to NONE, and as below)
//!               └── otherwise: heap.attach_for_call, detach after
//! ```
//!
//! Nothing here uses Rust's std at run time: the first call may come from
//! the dynamic loader or libc before they are fully initialised.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt::Write as _;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use snugalloc_core::{Attached, Config, Heap};

use crate::env::{self, Settings};

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

const NONE: usize = 0;
const ATTACHING: usize = 1;
const DETACHED: usize = 2;

/// Storage for the process heap.
///
/// Invariant: initialised exactly when `STATE` is `READY`, by the one thread
/// that moved `STATE` from `UNINIT` to `BUSY`; never written afterwards.
struct HeapCell(UnsafeCell<MaybeUninit<Heap>>);

// SAFETY: the cell is written once, before `STATE` becomes READY with
// Release ordering, and only read after an Acquire load sees READY.
unsafe impl Sync for HeapCell {}

static HEAP: HeapCell = HeapCell(UnsafeCell::new(MaybeUninit::uninit()));
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// The pthread key whose destructor detaches a thread's allocator, or
/// `usize::MAX` when none could be created.
static THREAD_KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
/// `SNUGALLOC_STATS` was set.
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);
/// The fork prepare handler took the heap's lock.
static FORK_LOCKED: AtomicBool = AtomicBool::new(false);

#[cfg(not(target_arch = "x86_64"))]
extern "C" {
    /// The calling thread's slot (`src/tls.c`, initial-exec TLS).
    fn snugalloc_tls_get() -> *mut u8;
    fn snugalloc_tls_set(value: *mut u8);
}

/// The calling thread's allocator slot, reached with one `%fs`-relative
/// load (see `src/tls.c`), where a Rust `thread_local!` in a shared
/// library would call `__tls_get_addr` on every access.
///
/// On x86_64 the access is inline assembly with an initial-exec relocation
/// (`@GOTTPOFF`: the slot's offset from the thread pointer, which the
/// dynamic loader writes into the GOT), so `malloc` and `free` make no call
/// for it; elsewhere it calls the C accessors.
struct Local;

impl Local {
    #[inline(always)]
    fn get(&self) -> *mut u8 {
        #[cfg(target_arch = "x86_64")]
        {
            let value: *mut u8;
            // SAFETY: `snugalloc_thread_slot` is an initial-exec TLS
            // variable of this library (src/tls.c), so its GOT entry holds
            // its offset from %fs, and the load reads this thread's slot.
            // Reads memory only; no stack, flags unchanged.
            unsafe {
                core::arch::asm!(
                    "mov {v}, qword ptr [rip + snugalloc_thread_slot@GOTTPOFF]",
                    "mov {v}, qword ptr fs:[{v}]",
                    v = out(reg) value,
                    options(nostack, readonly, preserves_flags),
                );
            }
            value
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: a plain read of this thread's TLS slot; no invariants.
        unsafe {
            snugalloc_tls_get()
        }
    }

    #[inline(always)]
    fn set(&self, value: *mut u8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `get`; the store writes this thread's slot only.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + snugalloc_thread_slot@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) value,
                options(nostack, preserves_flags),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: a plain write of this thread's TLS slot; no invariants.
        unsafe {
            snugalloc_tls_set(value)
        }
    }
}

static LOCAL: Local = Local;

/// The process heap; `STATE` must be READY.
///
/// # Safety
/// The caller must have seen `STATE == READY` (or hold an allocator
/// attached from the heap, which implies it).
#[inline(always)]
unsafe fn ready_heap() -> &'static Heap {
    // SAFETY: READY means the cell was initialised and is never written
    // again (HeapCell invariant).
    unsafe { (*HEAP.0.get()).assume_init_ref() }
}

/// The process heap, created on first use; `None` if it cannot be made.
#[inline]
pub(crate) fn heap() -> Option<&'static Heap> {
    // Acquire pairs with the Release store of READY in `init`.
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY was observed just above.
        return Some(unsafe { ready_heap() });
    }
    init()
}

/// The heap if it exists, without creating it.
pub(crate) fn existing_heap() -> Option<&'static Heap> {
    // Acquire pairs with the Release store of READY in `init`.
    (STATE.load(Ordering::Acquire) == READY).then(|| {
        // SAFETY: READY was observed just above.
        unsafe { ready_heap() }
    })
}

#[cold]
#[inline(never)]
fn init() -> Option<&'static Heap> {
    loop {
        // Acquire pairs with the Release stores below (another thread's
        // READY or FAILED).
        match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                // Failed reservations and warnings on a closed stderr set
                // errno; a call that goes on to succeed must not show it.
                let errno = crate::errno();
                let settings = env::read();
                STATS_AT_EXIT.store(settings.stats_at_exit, Ordering::Relaxed);
                let made = create(&settings);
                crate::set_errno(errno);
                let Some(heap) = made else {
                    // Release pairs with the Acquire loads of STATE.
                    STATE.store(FAILED, Ordering::Release);
                    return None;
                };
                // SAFETY: we moved STATE to BUSY, so nobody else reads or
                // writes the cell until we publish READY below.
                unsafe { (*HEAP.0.get()).write(heap) };
                create_thread_key();
                // Release pairs with the Acquire loads in `heap`: the heap's
                // writes above happen before any use of it.
                STATE.store(READY, Ordering::Release);
                // SAFETY: just initialised.
                return Some(unsafe { ready_heap() });
            }
            // SAFETY: READY was observed by the failed exchange.
            Err(READY) => return Some(unsafe { ready_heap() }),
            Err(FAILED) => return None,
            Err(_) => core::hint::spin_loop(),
        }
    }
}

/// Builds the heap the settings ask for, falling back to the default OS
/// heap (with a warning) when a fixed size cannot be had.
fn create(settings: &Settings) -> Option<Heap> {
    if let Some(size) = settings.heap_bytes {
        match fixed_heap(size, settings) {
            Ok(heap) => return Some(heap),
            Err(e) => {
                let mut text = [0u8; 24];
                env::warn(
                    "SNUGALLOC_HEAP_SIZE",
                    env::format_usize(size, &mut text),
                    &e,
                );
            }
        }
    }
    let mut config = env::with_chunk(Config::for_os(), settings.chunk_bytes);
    if let Some(max) = settings.max_allocators {
        config.max_allocators = max;
    }
    if let Some(ms) = settings.out_of_memory_wait_ms {
        config.out_of_memory_wait_ms = ms as u64;
    }
    match Heap::from_os(config) {
        Ok(heap) => Some(heap),
        Err(e) => {
            // Said once: every allocation of the process returns NULL.
            let mut w = crate::out::FdWriter::stderr();
            // FdWriter never fails.
            let _ = writeln!(w, "snugalloc: no heap, every allocation will fail: {e}");
            None
        }
    }
}

/// One heap over a fixed region of `size` bytes (rounded down to whole
/// chunks), as in an enclave: reserved from the OS once, never grown, with
/// room for as many allocators (threads at once) as an OS heap. A
/// region of exactly that size or an error: `Heap::from_os` settles for a
/// smaller reservation when the OS refuses a large one, which is right for
/// address space but not for a size the user chose.
fn fixed_heap(size: usize, settings: &Settings) -> Result<Heap, snugalloc_core::Error> {
    let base = env::with_chunk(Config::for_region(size), settings.chunk_bytes);
    let size = size / base.chunk_bytes * base.chunk_bytes;
    let heap = Heap::from_os(Config {
        os_reserve_bytes: size,
        // A process may run many more threads than an enclave (whose
        // default this is): 8 bytes of the region per allowed allocator.
        max_allocators: settings
            .max_allocators
            .unwrap_or(snugalloc_core::MAX_ALLOCATORS),
        out_of_memory_wait_ms: settings
            .out_of_memory_wait_ms
            .map_or(base.out_of_memory_wait_ms, |ms| ms as u64),
        ..base
    })?;
    if heap.stats().heap_bytes < size {
        // Dropping the heap gives its smaller reservation back.
        return Err(snugalloc_core::Error::OsReserveFailed { bytes: size });
    }
    Ok(heap)
}

fn create_thread_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer and `detach_at_thread_exit` has
    // the destructor signature pthread expects.
    if unsafe { libc::pthread_key_create(&mut key, Some(detach_at_thread_exit)) } == 0 {
        // Relaxed: published to other threads by the Release store of READY.
        THREAD_KEY.store(key as usize, Ordering::Relaxed);
    }
}

/// Runs `f` on the calling thread's allocator, attaching one on first use;
/// `fail` when no allocator can be had.
#[inline(always)]
pub(crate) fn with_thread<R>(fail: R, f: impl FnOnce(&mut Attached<'static>) -> R) -> R {
    let raw = LOCAL.get();
    if raw as usize > DETACHED {
        // SAFETY: LOCAL holds `into_raw` of this thread's allocator, attached
        // from the process heap (so STATE is READY); ManuallyDrop keeps it
        // attached after the call, and this is the only handle for it.
        let mut a = ManuallyDrop::new(unsafe {
            Attached::from_raw(ready_heap(), NonNull::new_unchecked(raw))
        });
        return f(&mut a);
    }
    with_thread_slow(raw as usize, fail, f)
}

/// Runs `f` on the calling thread's allocator if it has one already (never
/// attaching one); `None` otherwise.
pub(crate) fn with_own_allocator<R>(f: impl FnOnce(&mut Attached<'static>) -> R) -> Option<R> {
    let raw = LOCAL.get();
    if raw as usize > DETACHED {
        // SAFETY: as in `with_thread`.
        let mut a = ManuallyDrop::new(unsafe {
            Attached::from_raw(ready_heap(), NonNull::new_unchecked(raw))
        });
        return Some(f(&mut a));
    }
    None
}

#[cold]
#[inline(never)]
fn with_thread_slow<R>(state: usize, fail: R, f: impl FnOnce(&mut Attached<'static>) -> R) -> R {
    let Some(heap) = heap() else {
        return fail;
    };
    if state == NONE {
        if let Some(raw) = attach_thread(heap) {
            // SAFETY: just attached and recorded in LOCAL; as in `with_thread`.
            let mut a = ManuallyDrop::new(unsafe { Attached::from_raw(heap, raw) });
            return f(&mut a);
        }
    }
    // Re-entered while attaching, after thread exit, or the thread cannot
    // keep an allocator: use one for this call only (dropping detaches).
    match heap.attach_for_call() {
        Ok(mut a) => f(&mut a),
        Err(_) => fail,
    }
}

/// Attaches an allocator for the calling thread and arranges for it to be
/// detached when the thread exits.
fn attach_thread(heap: &'static Heap) -> Option<NonNull<u8>> {
    LOCAL.set(ATTACHING as *mut u8);
    let Ok(a) = heap.attach_for_thread() else {
        LOCAL.set(null_mut());
        return None;
    };
    let raw = a.into_raw();
    // Relaxed: the key was published with the heap (Release of READY).
    let key = THREAD_KEY.load(Ordering::Relaxed);
    // SAFETY: `key` came from pthread_key_create; setspecific may call
    // calloc (for high key numbers), which re-enters us and sees ATTACHING.
    let ok = key != usize::MAX
        && unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, raw.as_ptr().cast()) }
            == 0;
    if !ok {
        // SAFETY: `raw` is the handle made above, never shared.
        drop(unsafe { Attached::from_raw(heap, raw) });
        LOCAL.set(DETACHED as *mut u8);
        return None;
    }
    LOCAL.set(raw.as_ptr());
    Some(raw)
}

/// The pthread key destructor: detaches the exiting thread's allocator.
/// Later calls on this thread (other destructors) attach for themselves.
unsafe extern "C" fn detach_at_thread_exit(value: *mut c_void) {
    LOCAL.set(DETACHED as *mut u8);
    if let Some(raw) = NonNull::new(value.cast::<u8>()) {
        // SAFETY: the value was set by `attach_thread` on this thread, from
        // the process heap (READY); LOCAL no longer refers to it, so this is
        // the only handle, and dropping it detaches.
        drop(unsafe { Attached::from_raw(ready_heap(), raw) });
    }
}

extern "C" fn fork_prepare() {
    if let Some(heap) = existing_heap() {
        heap.before_fork();
        // Relaxed: read by the same thread in the parent and child handlers.
        FORK_LOCKED.store(true, Ordering::Relaxed);
    }
}

/// Puts `state` back to UNINIT if it is BUSY (see `fork_child`).
fn reset_if_busy(state: &AtomicU8) {
    // Relaxed: the child has one thread.
    let _ = state.compare_exchange(BUSY, UNINIT, Ordering::Relaxed, Ordering::Relaxed);
}

extern "C" fn fork_parent() {
    // Relaxed: written by this same thread in `fork_prepare`.
    if FORK_LOCKED.swap(false, Ordering::Relaxed) {
        if let Some(heap) = existing_heap() {
            // SAFETY: `fork_prepare` took the lock on this thread.
            unsafe { heap.after_fork() };
        }
    }
}

extern "C" fn fork_child() {
    // A heap another thread was making when we forked stays half made
    // here, and that thread does not exist in the child: every malloc
    // would spin on BUSY for ever. The child's one thread is not inside
    // `init` (malloc is not async-signal-safe, so no handler forks from
    // it), so the child starts again with no heap.
    reset_if_busy(&STATE);
    // Relaxed: written by this same thread in `fork_prepare`.
    if FORK_LOCKED.swap(false, Ordering::Relaxed) {
        if let Some(heap) = existing_heap() {
            // SAFETY: `fork_prepare` took the lock on the thread that
            // forked, which is this one, the child's only thread.
            unsafe { heap.after_fork_in_child() };
        }
    }
}

/// Library constructor: registers the fork handlers. Registering from here
/// rather than from the first allocation keeps `pthread_atfork` (which may
/// allocate) from running inside malloc.
extern "C" fn on_load() {
    // SAFETY: the three handlers are plain functions that stay loaded for
    // the life of the process.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
}

/// Library destructor: prints the statistics when `SNUGALLOC_STATS` is set.
extern "C" fn on_unload() {
    // Relaxed: set before READY was published, and we only read it if READY.
    if let (Some(_), true) = (existing_heap(), STATS_AT_EXIT.load(Ordering::Relaxed)) {
        crate::print_stats();
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;
