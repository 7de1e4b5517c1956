//! snugalloc as a C allocator: a complete `malloc` replacement for
//! `LD_PRELOAD` or linking on Linux/glibc (`libsnugalloc.so`,
//! `libsnugalloc.a`), declared in `include/snugalloc.h`.
//!
//! Every function follows C and POSIX, and glibc where they leave a choice:
//! `malloc(0)` returns a unique block, `realloc(p, 0)` frees `p` and returns
//! null, overflowing sizes return null with `errno = ENOMEM`, bad alignments
//! give `EINVAL`, `free` preserves `errno`, and a failed `realloc` leaves the
//! old block valid.
//!
//! | module | concept |
//! |---|---|
//! | `out` | writing to stderr from a stack buffer |
//! | `env` | `SNUGALLOC_*` variables → configuration |
//! | `global` | the process heap, per-thread allocators, fork and exit hooks |
//! | `stats_abi` | `struct snugalloc_stats` |
//! | `glibc` | glibc's `__libc_*` names and `<malloc.h>` extensions |
//! | this file | the standard C functions |
//!
//! Nothing on these paths allocates or panics: an allocator cannot allocate
//! its own error message.
#![no_std]

extern crate std;

mod env;
mod glibc;
mod global;
mod out;
mod stats_abi;

use core::ffi::{c_int, c_void};
use core::fmt::Write;
use core::ptr::null_mut;

use global::{existing_heap, heap, with_thread};
use stats_abi::CStats;

/// Alignment `malloc` guarantees (and `memalign` needs no more than).
const MIN_ALIGN: usize = 16;

#[inline(always)]
fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's life.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// `ENOMEM` and null.
#[cold]
fn out_of_memory() -> *mut c_void {
    set_errno(libc::ENOMEM);
    null_mut()
}

#[inline(always)]
fn alloc(size: usize) -> *mut c_void {
    let p = with_thread(null_mut(), |a| a.malloc(size));
    if p.is_null() {
        return out_of_memory();
    }
    p.cast()
}

fn alloc_aligned(align: usize, size: usize) -> *mut c_void {
    if align <= MIN_ALIGN {
        return alloc(size);
    }
    let p = with_thread(null_mut(), |a| a.malloc_aligned(size, align));
    if p.is_null() {
        return out_of_memory();
    }
    p.cast()
}

fn page_bytes() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Allocates `size` bytes aligned to 16; null with `ENOMEM` on failure.
/// `malloc(0)` returns a unique block that may be freed.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(size)
}

/// Frees a block from this library; null is ignored; `errno` is preserved.
///
/// # Safety
/// `ptr` must be null or a live block from this library's allocation
/// functions, not used afterwards. A pointer the heap does not own is
/// reported as a fatal error.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // errno is preserved without saving it here: the only system call a
    // free can make (madvise, when it gives memory back) restores it.
    let freed = with_thread(false, |a| {
        // SAFETY: the caller's contract is `Attached::free`'s.
        unsafe { a.free(ptr.cast()) };
        true
    });
    if let (false, Some(heap)) = (freed, crate::global::existing_heap()) {
        // No allocator to be had (every one attached, or no room to make
        // one): the block still goes back.
        // SAFETY: as above.
        unsafe { heap.free_detached(ptr.cast()) };
    }
}

/// `free` under its old name, which glibc still exports for old binaries
/// (they would otherwise hand this library's blocks to glibc's `free`).
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: the caller's contract is `free`'s.
    unsafe { free(ptr) }
}

/// C23 `free_sized`: [`free`]; the size is not needed (nor checked).
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, _size: usize) {
    // SAFETY: the caller's contract is `free`'s.
    unsafe { free(ptr) }
}

/// C23 `free_aligned_sized`: [`free`]; the alignment and size are not
/// needed (nor checked).
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: the caller's contract is `free`'s.
    unsafe { free(ptr) }
}

/// Allocates `count * size` zeroed bytes; null with `ENOMEM` when the
/// product overflows or memory runs out.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        return out_of_memory();
    };
    // A large block the OS zeroed and nobody used since is not written,
    // so it stays uncommitted until the program touches it.
    let p = with_thread(null_mut(), |a| a.malloc_zeroed(total));
    if p.is_null() {
        return out_of_memory();
    }
    p.cast()
}

/// Resizes a block, keeping its contents up to the smaller size.
/// `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns
/// null (as glibc does). On failure returns null with `ENOMEM` and `ptr`
/// stays valid and unchanged.
///
/// # Safety
/// `ptr` must be null or a live block from this library; on success it
/// must not be used afterwards unless it is the pointer returned.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return alloc(size);
    }
    if size == 0 {
        // SAFETY: the caller's contract for `ptr`.
        unsafe { free(ptr) };
        return null_mut();
    }
    // SAFETY: `ptr` is a live non-null block of this heap (caller's contract).
    let p = with_thread(null_mut(), |a| unsafe { a.resize(ptr.cast(), size) });
    if p.is_null() {
        return out_of_memory();
    }
    p.cast()
}

/// `realloc(ptr, count * size)`, but null with `ENOMEM` (and `ptr` intact)
/// when the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: the caller's contract is realloc's.
        Some(total) => unsafe { realloc(ptr, total) },
        None => out_of_memory(),
    }
}

/// Stores in `*memptr` a block of `size` bytes aligned to `align`. Returns
/// 0, `EINVAL` when `align` is not a power of two multiple of
/// `sizeof(void *)`, or `ENOMEM`; `*memptr` is set only on success and
/// `errno` is left alone.
///
/// # Safety
/// `memptr` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = alloc_aligned(align, size);
    set_errno(saved);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `memptr` is writable.
    unsafe { *memptr = p };
    0
}

/// C11 `aligned_alloc`: null with `EINVAL` unless `align` is a power of two
/// (as glibc 2.38 and later); any size is accepted.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    alloc_aligned(align, size)
}

/// Obsolete `memalign`, as glibc: an alignment that is not a power of two is
/// rounded up to one; one above `SIZE_MAX / 2 + 1` gives `EINVAL`.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    alloc_aligned(align.next_power_of_two(), size)
}

/// Obsolete `valloc`: `memalign(page size, size)`.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc_aligned(page_bytes(), size)
}

/// Obsolete `pvalloc`: `size` rounded up to whole pages, page-aligned.
///
/// # Safety
/// Always safe to call; declared `unsafe` as part of the C interface.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_bytes();
    match size.checked_next_multiple_of(page) {
        Some(rounded) => alloc_aligned(page, rounded.max(page)),
        None => out_of_memory(),
    }
}

/// Usable bytes of a block (at least what was asked for); 0 for null.
///
/// # Safety
/// `ptr` must be null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // No thread allocator needed: the pagemap answers. (Redis asks this on
    // every allocation and free.)
    match heap() {
        // SAFETY: the caller guarantees `ptr` is a live block of this heap.
        Some(heap) => unsafe { heap.usable_size(ptr.cast()) },
        None => 0,
    }
}

/// Fills the version 1 part of `*out` with the heap's statistics (`struct
/// snugalloc_stats`), `version` 1; all zero but `version` before the
/// first allocation. Does not allocate.
///
/// # Safety
/// `out` must be null or valid for writing a version 1 `struct
/// snugalloc_stats` (`STATS_V1_BYTES`).
#[no_mangle]
pub unsafe extern "C" fn snugalloc_stats(out: *mut CStats) {
    if out.is_null() {
        return;
    }
    let snapshot = existing_heap().map(|h| h.snapshot());
    // SAFETY: the caller's contract.
    unsafe { CStats::write_v1(out, snapshot.as_ref()) };
}

/// Fills as much of `*out` as `size` (the caller's `sizeof(struct
/// snugalloc_stats)`) holds with the heap's statistics, in whole fields;
/// returns the bytes written (0 if `out` is null). Does not allocate.
///
/// # Safety
/// `out` must be null or valid for writing `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn snugalloc_stats_sized(out: *mut CStats, size: usize) -> usize {
    if out.is_null() {
        return 0;
    }
    let snapshot = existing_heap().map(|h| h.snapshot());
    // SAFETY: the caller's contract.
    unsafe { CStats::write_sized(out.cast(), size, snapshot.as_ref()) }
}

/// Prints the per-size-class statistics table to standard error, without
/// allocating.
#[no_mangle]
pub extern "C" fn snugalloc_print_stats() {
    print_stats();
}

pub(crate) fn print_stats() {
    let mut w = out::FdWriter::stderr();
    // FdWriter never fails.
    let _ = match existing_heap() {
        Some(heap) => writeln!(w, "snugalloc statistics:\n{}", heap.snapshot()),
        None => writeln!(w, "snugalloc statistics: no allocation yet"),
    };
}
