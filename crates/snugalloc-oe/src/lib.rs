//! snugalloc as an Open Enclave pluggable allocator: the `oe_allocator_*`
//! functions of `openenclave/advanced/allocator.h` and `mallinfo.h`, plus
//! `snugalloc_stats_sized` and `snugalloc_stats`, declared in
//! `include/snugalloc_oe.h`. It exports no
//! `malloc`-family or `dl*` symbols: oecore calls these.
//!
//! How Open Enclave drives it, and what it does:
//!
//! | OE call | here |
//! |---|---|
//! | `oe_allocator_init(start, end)`, once | `Heap::from_region` over the whole heap |
//! | `oe_allocator_thread_init`, each outermost ECall | attach an allocator, record it by thread pointer |
//! | `oe_allocator_malloc` ... | the thread's allocator; without one, attach for the call |
//! | `oe_allocator_thread_cleanup` | detach it (empty slabs go back to the heap) |
//! | `oe_allocator_mallinfo` | heap size, exact live bytes, peak live bytes |
//!
//! Nothing is kept in TLS (OE zeroes it after each ECall); out of memory
//! returns null and never aborts. Before it does, an allocation that found
//! no room even after a reclaim waits for it while another thread is in an
//! ECall (`Config::out_of_memory_wait_ms`, 20 ms by default). With
//! feature `enclave` there is no OS to yield to, so the wait spins (about
//! 16,000 spin hints a millisecond), which helps only where the threads
//! that will free run on other cores; its benefit was measured with
//! yields, in the simulator. With feature `enclave` the library uses no
//! Rust std; without it (the default, for host-side tests) std is linked
//! but not used.
#![no_std]

#[cfg(not(feature = "enclave"))]
extern crate std;

#[path = "../../snugalloc-c/src/stats_abi.rs"]
mod stats_abi;
mod threads;

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_uint, c_void};
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};

use snugalloc_core::{Attached, Config, Heap};
use stats_abi::CStats;

/// `OE_OK` in `openenclave/bits/result.h`.
pub const OE_OK: c_uint = 0;
/// `OE_FAILURE` in `openenclave/bits/result.h`.
pub const OE_FAILURE: c_uint = 1;
/// `OE_UNSUPPORTED` in `openenclave/bits/result.h` of the OE releases
/// with pluggable allocators (24 in releases before 0.10; not returned).
pub const OE_UNSUPPORTED: c_uint = 16;

const EINVAL: c_int = 22;
const ENOMEM: c_int = 12;
const MIN_ALIGN: usize = 16;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// Storage for the enclave heap.
///
/// Invariant: initialised once `STATE` has been READY, by the one call of
/// `oe_allocator_init` that moved it from UNINIT; never written afterwards
/// (cleanup leaves it in service).
struct HeapCell(UnsafeCell<MaybeUninit<Heap>>);

// SAFETY: written once before READY is published with Release; read only
// after an Acquire load sees READY.
unsafe impl Sync for HeapCell {}

static HEAP: HeapCell = HeapCell(UnsafeCell::new(MaybeUninit::uninit()));
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// `oe_mallinfo_t` in `openenclave/advanced/mallinfo.h`.
#[repr(C)]
pub struct OeMallinfo {
    /// Bytes the heap manages (the whole region given to init).
    pub max_total_heap_size: usize,
    /// Exact usable bytes of live blocks.
    pub current_allocated_heap_size: usize,
    /// Highest `current_allocated_heap_size` seen.
    pub peak_allocated_heap_size: usize,
}

#[inline(always)]
fn heap() -> Option<&'static Heap> {
    // Acquire pairs with the Release store of READY in `oe_allocator_init`.
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY means the cell is initialised (HeapCell invariant).
        Some(unsafe { (*HEAP.0.get()).assume_init_ref() })
    } else {
        None
    }
}

/// Runs `f` on the calling thread's allocator, or on one attached for this
/// call when the thread has none; `fail` without a heap or allocator.
#[inline(always)]
fn with_thread<R>(fail: R, f: impl FnOnce(&mut Attached<'static>) -> R) -> R {
    let Some(heap) = heap() else {
        return fail;
    };
    if let Some(raw) = threads::lookup(threads::current()).and_then(NonNull::new) {
        // SAFETY: the table holds `into_raw` of an allocator this thread
        // attached from `heap` in thread_init and has not detached; only
        // this thread uses it, and ManuallyDrop keeps it attached.
        let mut a = ManuallyDrop::new(unsafe { Attached::from_raw(heap, raw) });
        return f(&mut a);
    }
    with_call_allocator(heap, fail, f)
}

#[cold]
#[inline(never)]
fn with_call_allocator<R>(
    heap: &'static Heap,
    fail: R,
    f: impl FnOnce(&mut Attached<'static>) -> R,
) -> R {
    match heap.attach_for_call() {
        Ok(mut a) => f(&mut a),
        Err(_) => fail,
    }
}

/// Lays the heap over `[heap_start, heap_end)`. Called once by oecore
/// before anything else; later calls, and empty or reversed ranges, are
/// ignored (allocation then returns null).
///
/// # Safety
/// The range must be memory that only this allocator uses, valid for reads
/// and writes for the rest of the enclave's life.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_init(heap_start: *mut c_void, heap_end: *mut c_void) {
    let (start, end) = (heap_start as usize, heap_end as usize);
    if start == 0 || end <= start {
        return;
    }
    // Acquire/Relaxed: nothing is read from a failed exchange.
    if STATE
        .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let len = end - start;
    // SAFETY: the caller's guarantees are `from_region`'s.
    match unsafe { Heap::from_region(heap_start.cast(), len, Config::for_region(len)) } {
        Ok(heap) => {
            // SAFETY: we hold BUSY, so nobody else touches the cell.
            unsafe { (*HEAP.0.get()).write(heap) };
            // Release pairs with the Acquire load in `heap`.
            STATE.store(READY, Ordering::Release);
        }
        // Release: pairs with nothing in particular; allocation stays null.
        Err(_) => STATE.store(UNINIT, Ordering::Release),
    }
}

/// Called at enclave termination. Nothing to do: the heap's memory is the
/// enclave's, and the heap stays in service, because OE runs the
/// terminating thread's exit functions (pthread key and C++ `thread_local`
/// destructors, which may allocate) and `oe_allocator_thread_cleanup`
/// after this call.
#[no_mangle]
pub extern "C" fn oe_allocator_cleanup() {}

/// Sets the calling thread's `errno`, as OE's default dlmalloc does when it
/// fails. Some versions of oecore's `malloc` wrapper set it too; setting it
/// twice is harmless, and older ones do not, so the allocator does.
#[cold]
fn set_errno(value: c_int) {
    extern "C" {
        /// The thread's `errno` slot (glibc, musl and OE's libc).
        fn __errno_location() -> *mut c_int;
    }
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's life.
    unsafe { *__errno_location() = value };
}

/// `p`, having set `errno` to `ENOMEM` if it is null.
#[inline(always)]
fn or_enomem(p: *mut c_void) -> *mut c_void {
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p
}

/// Attaches an allocator to the calling enclave thread until
/// `oe_allocator_thread_cleanup`. Without one (the pool's keeping limit
/// reached, no memory for one, or the table full), calls attach for
/// themselves.
#[no_mangle]
pub extern "C" fn oe_allocator_thread_init() {
    let Some(heap) = heap() else {
        return;
    };
    let thread = threads::current();
    if threads::lookup(thread).is_some() {
        return;
    }
    let Ok(a) = heap.attach_for_thread() else {
        return;
    };
    let raw = a.into_raw();
    if !threads::insert(thread, raw.as_ptr()) {
        // SAFETY: `raw` is the handle made above, never shared; dropping
        // it detaches.
        drop(unsafe { Attached::from_raw(heap, raw) });
    }
}

/// Detaches the calling thread's allocator: its empty slabs and pending
/// cross-thread frees go back to the heap, and nothing of it stays in TLS.
#[no_mangle]
pub extern "C" fn oe_allocator_thread_cleanup() {
    let Some(raw) = threads::remove(threads::current()).and_then(NonNull::new) else {
        return;
    };
    if let Some(heap) = heap() {
        // SAFETY: `raw` was attached from `heap` by this thread in
        // thread_init and is no longer in the table: this is the only
        // handle, and dropping it detaches.
        drop(unsafe { Attached::from_raw(heap, raw) });
    }
}

/// `malloc`: 16-byte aligned; null and `ENOMEM` when out of memory.
#[no_mangle]
pub extern "C" fn oe_allocator_malloc(size: usize) -> *mut c_void {
    or_enomem(with_thread(null_mut(), |a| a.malloc(size)).cast())
}

/// `free`; null is ignored.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator, not used
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_free(ptr: *mut c_void) {
    if !ptr.is_null() {
        let freed = with_thread(false, |a| {
            // SAFETY: the caller's contract is `Attached::free`'s.
            unsafe { a.free(ptr.cast()) };
            true
        });
        if let (false, Some(heap)) = (freed, heap()) {
            // No allocator to be had: the block still goes back.
            // SAFETY: as above.
            unsafe { heap.free_detached(ptr.cast()) };
        }
    }
}

/// `calloc`: null and `ENOMEM` when `count * size` overflows or memory
/// runs out.
#[no_mangle]
pub extern "C" fn oe_allocator_calloc(count: usize, size: usize) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        return or_enomem(null_mut());
    };
    let p = oe_allocator_malloc(total);
    if !p.is_null() {
        // SAFETY: a fresh block of at least `total` bytes.
        unsafe { core::ptr::write_bytes(p.cast::<u8>(), 0, total) };
    }
    p
}

/// `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` returns a
/// minimal block (as OE's default dlmalloc does); on failure null and
/// `ENOMEM`, and `ptr` stays valid.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator; on success it
/// must not be used unless it is the pointer returned.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return oe_allocator_malloc(size);
    }
    // SAFETY: `ptr` is a live non-null block of this heap (caller's contract).
    or_enomem(with_thread(null_mut(), |a| unsafe { a.resize(ptr.cast(), size) }).cast())
}

/// `align`-aligned `size` bytes, or null; `errno` is left alone (for
/// `posix_memalign`, which returns its error).
fn alloc_aligned(align: usize, size: usize) -> *mut c_void {
    if align <= MIN_ALIGN {
        return with_thread(null_mut(), |a| a.malloc(size)).cast();
    }
    with_thread(null_mut(), |a| a.malloc_aligned(size, align)).cast()
}

/// C11 `aligned_alloc`: null and `EINVAL` unless `align` is a power of
/// two; null and `ENOMEM` when out of memory.
#[no_mangle]
pub extern "C" fn oe_allocator_aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return null_mut();
    }
    or_enomem(alloc_aligned(align, size))
}

/// `posix_memalign`: 0, `EINVAL` (alignment not a power of two multiple of
/// `sizeof(void *)`, or `memptr` null) or `ENOMEM`; `*memptr` is written
/// only on success.
///
/// # Safety
/// `memptr` must be null or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if memptr.is_null()
        || !align.is_power_of_two()
        || align % core::mem::size_of::<*mut c_void>() != 0
    {
        return EINVAL;
    }
    let p = alloc_aligned(align, size);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller guarantees `memptr` is writable.
    unsafe { *memptr = p };
    0
}

/// `malloc_usable_size`; 0 for null.
///
/// # Safety
/// `ptr` must be null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // The pagemap answers: no allocator need be attached (a thread outside
    // an ECall may ask too).
    match heap() {
        // SAFETY: the caller guarantees `ptr` is a live block of this heap.
        Some(heap) => unsafe { heap.usable_size(ptr.cast()) },
        None => 0,
    }
}

/// Heap size, exact live bytes (usable sizes) and their peak. `OE_OK`, or
/// `OE_FAILURE` before init or with a null `info`. The peak never goes
/// down; how close it is inside an ECall is `Stats::peak_live_bytes`'s
/// (docs/stats.md): within 64 KiB per thread plus the small blocks its
/// fast paths handled since its last slow path.
///
/// # Safety
/// `info` must be null or valid for writing an `oe_mallinfo_t`.
#[no_mangle]
pub unsafe extern "C" fn oe_allocator_mallinfo(info: *mut OeMallinfo) -> c_uint {
    let Some(heap) = heap() else {
        return OE_FAILURE;
    };
    if info.is_null() {
        return OE_FAILURE;
    }
    let s = heap.stats();
    // SAFETY: the caller guarantees `info` is writable.
    unsafe {
        info.write_unaligned(OeMallinfo {
            max_total_heap_size: s.heap_bytes,
            current_allocated_heap_size: s.live_bytes,
            peak_allocated_heap_size: s.peak_live_bytes,
        })
    };
    OE_OK
}

/// Fills the version 1 part of `*out` with the heap's statistics (`struct
/// snugalloc_stats`), `version` 1.
///
/// # Safety
/// `out` must be null or valid for writing a version 1 `struct
/// snugalloc_stats` (`STATS_V1_BYTES`).
#[no_mangle]
pub unsafe extern "C" fn snugalloc_stats(out: *mut CStats) {
    if out.is_null() {
        return;
    }
    let snapshot = heap().map(|h| h.snapshot());
    // SAFETY: the caller's contract.
    unsafe { CStats::write_v1(out, snapshot.as_ref()) };
}

/// Fills as much of `*out` as `size` (the caller's `sizeof(struct
/// snugalloc_stats)`) holds, in whole fields; returns the bytes written
/// (0 if `out` is null).
///
/// # Safety
/// `out` must be null or valid for writing `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn snugalloc_stats_sized(out: *mut CStats, size: usize) -> usize {
    if out.is_null() {
        return 0;
    }
    let snapshot = heap().map(|h| h.snapshot());
    // SAFETY: the caller's contract.
    unsafe { CStats::write_sized(out.cast(), size, snapshot.as_ref()) }
}

/// The personality routine that the prebuilt `core` objects name for
/// unwinding. With `panic = "abort"` nothing unwinds, so it is never
/// called; it is defined so that the static library links into an enclave
/// with no Rust std to provide it (found by `tests/headers.rs` in
/// `snugalloc-c`, which lists what the enclave library needs from outside).
#[cfg(feature = "enclave")]
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// The first fatal error's message, NUL-terminated, for a debugger or an
/// abort handler to read: an enclave has no standard error to print it
/// to, and the allocator may not call out of the enclave. Written once,
/// by the first thread that stops, before it calls `abort`; a thread that
/// stops meanwhile waits (a bounded spin) until it is written before it
/// aborts too (`include/snugalloc_oe.h` declares it).
///
/// Invariant: only the thread that set [`FATAL_CLAIMED`] writes it, and it
/// writes each byte once, then sets [`FATAL_WRITTEN`]; readers in this
/// library read nothing, and others read it after an `abort`.
#[cfg(feature = "enclave")]
#[no_mangle]
#[allow(non_upper_case_globals)] // a C name, declared in the header
pub static snugalloc_oe_fatal_message: FatalMessage = FatalMessage::new();

/// Set by the first thread that stops, which alone fills
/// [`snugalloc_oe_fatal_message`].
#[cfg(feature = "enclave")]
static FATAL_CLAIMED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Set (Release) once [`snugalloc_oe_fatal_message`] is complete.
#[cfg(feature = "enclave")]
static FATAL_WRITTEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Spins a second stopping thread waits at most for the first's message.
#[cfg(feature = "enclave")]
const FATAL_WAIT_SPINS: u32 = 1 << 24;

/// A fixed buffer of 256 bytes that a panic message is copied into.
///
/// Invariant: see [`snugalloc_oe_fatal_message`]; the bytes are written
/// only through [`FatalMessage::fill`], by one thread, once.
#[cfg(feature = "enclave")]
#[repr(transparent)]
pub struct FatalMessage(core::cell::UnsafeCell<[u8; 256]>);

// SAFETY: one thread writes it once (the holder of `FATAL_CLAIMED`), and
// nothing in the library reads it.
#[cfg(feature = "enclave")]
unsafe impl Sync for FatalMessage {}

#[cfg(feature = "enclave")]
impl FatalMessage {
    const fn new() -> FatalMessage {
        FatalMessage(core::cell::UnsafeCell::new([0; 256]))
    }

    /// Copies `info`'s message in, truncated, with a NUL after it; only the
    /// first caller does. A later caller waits, for a bounded time, until
    /// the first has finished, so that whoever reads the buffer after the
    /// `abort` that follows finds it whole.
    fn fill(&self, info: &core::panic::PanicInfo<'_>) {
        use core::fmt::Write;
        use core::sync::atomic::Ordering;
        if FATAL_CLAIMED.swap(true, Ordering::AcqRel) {
            let mut spins = 0;
            // Acquire pairs with the Release store below.
            while !FATAL_WRITTEN.load(Ordering::Acquire) && spins < FATAL_WAIT_SPINS {
                core::hint::spin_loop();
                spins += 1;
            }
            return;
        }
        struct Cursor<'a>(&'a mut [u8], usize);
        impl Write for Cursor<'_> {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                // Keep the last byte for the NUL.
                let room = self.0.len() - 1 - self.1;
                let n = s.len().min(room);
                self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
                self.1 += n;
                Ok(())
            }
        }
        // SAFETY: we set `FATAL_CLAIMED`, so no other thread writes the
        // buffer, and nothing in the library reads it.
        let buf = unsafe { &mut *self.0.get() };
        let mut out = Cursor(buf, 0);
        // Truncates rather than fails (see `write_str`).
        let _ = write!(out, "{}", info.message());
        let end = out.1;
        buf[end] = 0;
        // Release pairs with the Acquire loads of a later stopping thread.
        FATAL_WRITTEN.store(true, Ordering::Release);
    }
}

/// Copies the message to [`snugalloc_oe_fatal_message`], then aborts: a
/// fatal error (misuse, such as freeing a pointer that is not the start
/// of an object) reaches here through the core crate's panic.
#[cfg(feature = "enclave")]
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    extern "C" {
        fn abort() -> !;
    }
    snugalloc_oe_fatal_message.fill(info);
    // SAFETY: the enclave's C library provides abort, which never returns.
    unsafe { abort() }
}
