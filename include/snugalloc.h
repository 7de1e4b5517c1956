/* snugalloc: a C malloc replacement (libsnugalloc.so / libsnugalloc.a).
 *
 * Preload:  LD_PRELOAD=/path/to/libsnugalloc.so ./program
 * Link:     cc main.c -L/path/to/lib -lsnugalloc   (or libsnugalloc.a with -lpthread -ldl)
 *
 * The standard functions below behave as C, POSIX and glibc specify; they
 * are declared here so that a test can check this header against the
 * library's exports. Environment (read once, at the first allocation):
 *   SNUGALLOC_HEAP_SIZE=64M  one fixed region of that size (allocation beyond it returns NULL)
 *   SNUGALLOC_CHUNK_SIZE=16k chunk size, a power of two from 4k to 64k
 *   SNUGALLOC_STATS=1        print the per-size-class statistics to stderr at exit
 *   SNUGALLOC_OOM_WAIT_MS=20 how long (0-1000 ms) an allocation in a full heap
 *                            waits for other threads to free before it returns
 *                            NULL (default 20 in a fixed heap, 0 otherwise)
 */
#ifndef SNUGALLOC_H
#define SNUGALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The statistics types, shared with snugalloc_oe.h (whichever header
 * comes first defines them). */
#ifndef SNUGALLOC_STATS_TYPES
#define SNUGALLOC_STATS_TYPES
/* Version of struct snugalloc_stats filled in by this library. */
#define SNUGALLOC_STATS_VERSION 2
/* Room for per-size-class rows; class_count says how many are filled. */
#define SNUGALLOC_MAX_CLASSES 96

/* One size class. */
struct snugalloc_class_stats {
    size_t object_bytes; /* object size of the class */
    size_t live_objects; /* objects handed out */
    size_t live_bytes;   /* live_objects * object_bytes */
    size_t slab_bytes;   /* bytes of the class's slabs */
    size_t slab_count;   /* number of slabs */
};

/* Heap statistics. Fields never move; a later version only adds fields at
 * the end. snugalloc_stats_sized() is told the caller's sizeof and fills
 * what fits; `version` says which fields the library knows (a field of a
 * later version than `version` was not written). snugalloc_stats(), from
 * version 1, fills only the version 1 fields (up to classes[]) and sets
 * `version` to 1. All sizes are bytes. */
struct snugalloc_stats {
    size_t version;             /* the library's SNUGALLOC_STATS_VERSION from
                                   snugalloc_stats_sized, 1 from
                                   snugalloc_stats */
    size_t heap_bytes;          /* region size, or reserved address space */
    size_t reserved_bytes;      /* metadata plus chunks handed out */
    size_t peak_reserved_bytes; /* highest reserved_bytes */
    size_t live_bytes;          /* usable bytes of live blocks */
    size_t peak_live_bytes;     /* highest live_bytes published, never
                                   lower on a later call; each thread
                                   publishes at exit and on slow paths at
                                   64 KiB of change, so a peak can be off
                                   by up to 64 KiB per thread plus the
                                   small blocks of its fast paths (see
                                   docs/stats.md) */
    size_t chunk_bytes;         /* chunk size */
    size_t metadata_bytes;      /* heap metadata */
    size_t free_bytes;          /* bytes of free chunks */
    size_t allocators;          /* per-thread allocators created */
    size_t large_objects;       /* live blocks served as chunk runs */
    size_t large_bytes;         /* bytes of those runs */
    size_t idle_bytes;          /* free bytes in slabs of idle allocators */
    size_t remote_in_flight;    /* cross-thread frees not yet handled */
    size_t largest_free_bytes;  /* largest block that can be had now */
    size_t class_count;         /* rows of classes[] filled */
    struct snugalloc_class_stats classes[SNUGALLOC_MAX_CLASSES];
    /* version 2 */
    size_t room_waits;          /* allocations that found no room and
                                   waited for other threads to free some
                                   (SNUGALLOC_OOM_WAIT_MS) */
    size_t room_waits_failed;   /* of those, the ones that returned NULL */
    size_t remote_outgoing;     /* of remote_in_flight: in the freeing
                                   threads' outgoing batches */
    size_t remote_inbox;        /* of remote_in_flight: in the owners'
                                   inboxes */
    size_t foreign_bytes;       /* objects kept for reuse by a thread that
                                   does not own them (counted as live in
                                   classes[]) */
    size_t depot_bytes;         /* of foreign_bytes: in the shared depot */
    size_t cached_bytes;        /* free chunk runs in per-thread caches */
};
#endif /* SNUGALLOC_STATS_TYPES */

/* Fills what fits of *out in `size` bytes (pass sizeof *out), in whole
 * fields, and returns the bytes written, 0 for a NULL out (no allocation;
 * all zero but version before the first allocation). From version 2: a
 * version 1 library does not have it. */
size_t snugalloc_stats_sized(struct snugalloc_stats *out, size_t size);
/* The version 1 call: fills the version 1 fields of *out, version = 1. */
void snugalloc_stats(struct snugalloc_stats *out);
/* Prints the per-size-class table to stderr (no allocation). */
void snugalloc_print_stats(void);

/* The standard allocation functions, as exported by libsnugalloc. */
void *malloc(size_t size);
void free(void *ptr);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void *reallocarray(void *ptr, size_t count, size_t size);
int posix_memalign(void **memptr, size_t alignment, size_t size);
void *aligned_alloc(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);
size_t malloc_usable_size(void *ptr);
/* free under its old name, for old binaries. */
void cfree(void *ptr);
/* C23 sized frees (glibc 2.43 and later declare them in <stdlib.h>); the
 * size and alignment are not needed. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);
/* Also exported, as <malloc.h> declares them and not declared here:
 * glibc's internal names __libc_malloc, __libc_free, __libc_calloc,
 * __libc_realloc, __libc_memalign, __libc_valloc, __libc_pvalloc,
 * __libc_mallinfo, __libc_mallopt, and mallinfo, mallinfo2 (figures of
 * this heap), malloc_trim (gives free memory back to the OS now),
 * malloc_stats (the per-size-class table on stderr) and mallopt (glibc's
 * parameters do not apply: accepted, ignored, returns 1). */

#ifdef __cplusplus
}
#endif

#endif /* SNUGALLOC_H */
