//! glibc's own names for the allocator: the `__libc_*` aliases and the
//! `<malloc.h>` extensions (`mallinfo`, `mallinfo2`, `malloc_trim`,
//! `malloc_stats`, `malloc_info`, `mallopt`).
//!
//! They are exported because a program (or a tracing shim) that calls them
//! would otherwise reach glibc's allocator: `__libc_malloc`'s block handed
//! to this library's `free` is a fatal error, and glibc's `mallinfo`
//! describes an arena nobody uses. They are not declared in
//! `include/snugalloc.h`; `<malloc.h>` declares them.

use core::ffi::{c_int, c_void};
use core::fmt;

use crate::global::{existing_heap, with_own_allocator};

/// glibc's `struct mallinfo2` (`<malloc.h>`, glibc 2.33 and later).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo2 {
    /// Bytes the heap has reserved (chunks of slabs, large objects and
    /// metadata).
    pub arena: usize,
    /// Free blocks: not counted (0).
    pub ordblks: usize,
    /// Fast-bin blocks: none (0).
    pub smblks: usize,
    /// Separately mapped regions: none (0); large objects are chunk runs
    /// of the heap, counted in `arena`.
    pub hblks: usize,
    /// Bytes in separately mapped regions: 0.
    pub hblkhd: usize,
    /// Unused by glibc (0).
    pub usmblks: usize,
    /// Bytes in fast-bin blocks: 0.
    pub fsmblks: usize,
    /// Bytes in use by the program (usable sizes, as `snugalloc_stats`'s
    /// `live_bytes`).
    pub uordblks: usize,
    /// Reserved bytes not in use (`arena - uordblks`): free slab slots,
    /// rounding, metadata.
    pub fordblks: usize,
    /// Bytes `malloc_trim` could give back from the top: not tracked (0).
    pub keepcost: usize,
}

/// glibc's `struct mallinfo`: [`MallInfo2`] with `int` fields.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo {
    /// As [`MallInfo2::arena`], and so on for every field.
    pub arena: c_int,
    /// See [`MallInfo2::ordblks`].
    pub ordblks: c_int,
    /// See [`MallInfo2::smblks`].
    pub smblks: c_int,
    /// See [`MallInfo2::hblks`].
    pub hblks: c_int,
    /// See [`MallInfo2::hblkhd`].
    pub hblkhd: c_int,
    /// See [`MallInfo2::usmblks`].
    pub usmblks: c_int,
    /// See [`MallInfo2::fsmblks`].
    pub fsmblks: c_int,
    /// See [`MallInfo2::uordblks`].
    pub uordblks: c_int,
    /// See [`MallInfo2::fordblks`].
    pub fordblks: c_int,
    /// See [`MallInfo2::keepcost`].
    pub keepcost: c_int,
}

/// Heap figures in glibc's form; all zero before the first allocation.
/// Does not allocate.
#[no_mangle]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    let Some(heap) = existing_heap() else {
        return MallInfo2::default();
    };
    let stats = heap.stats();
    let live = stats.live_bytes.min(stats.reserved_bytes);
    MallInfo2 {
        arena: stats.reserved_bytes,
        uordblks: live,
        fordblks: stats.reserved_bytes - live,
        ..MallInfo2::default()
    }
}

/// [`mallinfo2`] in `int` fields. Unlike glibc, which wraps, a figure of
/// 2 GiB or more reads `INT_MAX`.
#[no_mangle]
pub extern "C" fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    MallInfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// Gives free memory back to the OS now: the calling thread's allocator
/// (if it has one: none is made for the call) and every idle one give back
/// what they hold unused, then every free chunk still committed is
/// decommitted, whatever the decommit policy would wait for. Allocators
/// other running threads hold keep their empty slabs. `pad` is ignored.
/// Returns 1 if memory was given back, 0 if not (as glibc).
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let Some(heap) = existing_heap() else {
        return 0;
    };
    let given = with_own_allocator(|a| a.trim()).unwrap_or_else(|| heap.trim());
    c_int::from(given > 0)
}

/// Prints the per-size-class statistics table to standard error (where
/// glibc prints its own), without allocating.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    crate::print_stats();
}

/// glibc's `malloc_info`: this heap in glibc's XML, so that tools that
/// read it see the allocator in use (glibc's own would describe its unused
/// arena). One `<heap>`: `<sizes>` lists, per size class with free slots
/// in its slabs, the slots' size, count and bytes; `rest` is those free
/// slots in all; `system current`/`max` are the reserved bytes and their
/// peak (as `snugalloc_stats`), `aspace` the reserved bytes too (glibc
/// reports the memory it obtained there); no fast bins and no separate
/// mappings. Returns 0;
/// `EINVAL` (the value, as glibc's code does, where its manual says -1;
/// `errno` is set too) if `options` is not 0 or `fp` is null; -1 if
/// writing to `fp` failed.
///
/// # Safety
/// `fp` must be null or an open stream.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut libc::FILE) -> c_int {
    if options != 0 || fp.is_null() {
        crate::set_errno(libc::EINVAL);
        return libc::EINVAL;
    }
    let mut out = FileWriter { fp };
    match write_info(&mut out) {
        Ok(()) => 0,
        Err(fmt::Error) => -1,
    }
}

/// Formatted text to a C stream.
struct FileWriter {
    /// An open stream (`malloc_info`'s contract).
    fp: *mut libc::FILE,
}

impl fmt::Write for FileWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: `fp` is an open stream (the caller's contract) and `s`
        // is `s.len()` readable bytes.
        let n = unsafe { libc::fwrite(s.as_ptr().cast(), 1, s.len(), self.fp) };
        if n == s.len() {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

fn write_info(w: &mut impl fmt::Write) -> fmt::Result {
    let heap = existing_heap();
    let stats = heap.map(|h| h.stats());
    let snapshot = heap.map(|h| h.snapshot());
    writeln!(w, "<malloc version=\"1\">")?;
    writeln!(w, "<heap nr=\"0\">")?;
    writeln!(w, "<sizes>")?;
    let (mut count, mut bytes) = (0usize, 0usize);
    let rows = snapshot.as_ref().map_or(&[][..], |s| s.classes());
    for r in rows
        .iter()
        .filter(|r| r.slab_count > 0 && r.object_bytes > 0)
    {
        let slots = r.slab_count * (r.slab_bytes / r.slab_count / r.object_bytes);
        let free = slots.saturating_sub(r.live_objects);
        if free > 0 {
            let size = r.object_bytes;
            writeln!(
                w,
                "<size from=\"{size}\" to=\"{size}\" total=\"{}\" count=\"{free}\"/>",
                free * size
            )?;
            count += free;
            bytes += free * size;
        }
    }
    writeln!(w, "</sizes>")?;
    // `aspace` is what glibc obtained from the system and can write, which
    // for this heap is what it has reserved (an OS heap's address space is
    // 64 GiB, nearly all of it untouched).
    let (current, max) = stats.map_or((0, 0), |s| (s.reserved_bytes, s.peak_reserved_bytes));
    let space = current;
    let totals = |w: &mut dyn fmt::Write| -> fmt::Result {
        writeln!(w, "<total type=\"fast\" count=\"0\" size=\"0\"/>")?;
        writeln!(
            w,
            "<total type=\"rest\" count=\"{count}\" size=\"{bytes}\"/>"
        )
    };
    let system = |w: &mut dyn fmt::Write| -> fmt::Result {
        writeln!(w, "<system type=\"current\" size=\"{current}\"/>")?;
        writeln!(w, "<system type=\"max\" size=\"{max}\"/>")?;
        writeln!(w, "<aspace type=\"total\" size=\"{space}\"/>")?;
        writeln!(w, "<aspace type=\"mprotect\" size=\"{space}\"/>")
    };
    totals(w)?;
    system(w)?;
    writeln!(w, "</heap>")?;
    totals(w)?;
    writeln!(w, "<total type=\"mmap\" count=\"0\" size=\"0\"/>")?;
    system(w)?;
    writeln!(w, "</malloc>")
}

/// glibc's tuning parameters do not apply to this allocator (it is
/// configured by `SNUGALLOC_*` variables): every call is accepted and
/// changes nothing. It returns 1, as glibc's own `mallopt` did for a
/// preloaded program before this one was exported (it tuned an arena
/// nobody used), so programs that check the result go on as before.
#[no_mangle]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// glibc's internal name for [`crate::malloc`].
///
/// # Safety
/// As for [`crate::malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    // SAFETY: the same function under another name.
    unsafe { crate::malloc(size) }
}

/// glibc's internal name for [`crate::free`].
///
/// # Safety
/// As for [`crate::free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
    // SAFETY: the caller's contract is `free`'s.
    unsafe { crate::free(ptr) }
}

/// glibc's internal name for [`crate::calloc`].
///
/// # Safety
/// As for [`crate::calloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: the same function under another name.
    unsafe { crate::calloc(count, size) }
}

/// glibc's internal name for [`crate::realloc`].
///
/// # Safety
/// As for [`crate::realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract is `realloc`'s.
    unsafe { crate::realloc(ptr, size) }
}

/// glibc's internal name for [`crate::memalign`].
///
/// # Safety
/// As for [`crate::memalign`].
#[no_mangle]
pub unsafe extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: the same function under another name.
    unsafe { crate::memalign(align, size) }
}

/// glibc's internal name for [`crate::valloc`].
///
/// # Safety
/// As for [`crate::valloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    // SAFETY: the same function under another name.
    unsafe { crate::valloc(size) }
}

/// glibc's internal name for [`crate::pvalloc`].
///
/// # Safety
/// As for [`crate::pvalloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    // SAFETY: the same function under another name.
    unsafe { crate::pvalloc(size) }
}

/// glibc's internal name for [`mallinfo`].
#[no_mangle]
pub extern "C" fn __libc_mallinfo() -> MallInfo {
    mallinfo()
}

/// glibc's internal name for [`mallopt`].
#[no_mangle]
pub extern "C" fn __libc_mallopt(param: c_int, value: c_int) -> c_int {
    mallopt(param, value)
}
