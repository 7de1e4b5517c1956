/* snugalloc for Open Enclave: libsnugalloc_oe.a implements OE's pluggable
 * allocator interface (openenclave/advanced/allocator.h and mallinfo.h).
 *
 * Link it into the enclave before oelibc/oelibcxx/oecore, e.g. with CMake:
 *   target_link_libraries(enclave PRIVATE snugalloc_oe openenclave::oelibc ...)
 * It exports only the oe_allocator_* functions, snugalloc_stats_sized,
 * snugalloc_stats and (in the enclave build) snugalloc_oe_fatal_message:
 * no malloc or dl* symbols. Build it for an enclave on its own, in a target
 * directory of its own (a workspace build writes a std build, for host
 * tests, to target/release):
 *   cargo build -p snugalloc-oe --release --features enclave --target-dir target/enclave
 * and link target/enclave/release/libsnugalloc_oe.a.
 *
 * Where Open Enclave's headers are on the include path, this header
 * includes openenclave/advanced/allocator.h and mallinfo.h and takes
 * oe_result_t and oe_mallinfo_t from them, so it may come before or after
 * any OE header. Without them (a host build, a test) it declares the same
 * types itself, with OE's values. */
#ifndef SNUGALLOC_OE_H
#define SNUGALLOC_OE_H

#include <stddef.h>

#if defined(__has_include)
#if __has_include(<openenclave/advanced/allocator.h>) && __has_include(<openenclave/advanced/mallinfo.h>)
#include <openenclave/advanced/allocator.h>
#include <openenclave/advanced/mallinfo.h>
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef OE_ADVANCED_MALLINFO_H
/* As oe_result_t in openenclave/bits/result.h (an enum of unsigned int
 * size): OE_OK is 0, OE_FAILURE 1, OE_UNSUPPORTED 16. (The guard was
 * _OE_BITS_RESULT before OE 0.10, _OE_BITS_RESULT_H since.) */
#if !defined(_OE_BITS_RESULT_H) && !defined(_OE_BITS_RESULT)
typedef unsigned int oe_result_t;
#define OE_OK 0u
#define OE_FAILURE 1u
#define OE_UNSUPPORTED 16u
#endif
/* As in openenclave/advanced/mallinfo.h. */
typedef struct _oe_mallinfo {
    size_t max_total_heap_size;         /* bytes the heap manages */
    size_t current_allocated_heap_size; /* exact usable bytes of live blocks */
    size_t peak_allocated_heap_size;    /* highest total published (see
                                           oe_allocator_mallinfo) */
} oe_mallinfo_t;
#endif

#ifndef OE_ADVANCED_ALLOCATOR_H
void oe_allocator_init(void *heap_start_address, void *heap_end_address);
void oe_allocator_cleanup(void);
void oe_allocator_thread_init(void);
void oe_allocator_thread_cleanup(void);
void *oe_allocator_malloc(size_t size);
void oe_allocator_free(void *ptr);
void *oe_allocator_calloc(size_t nmemb, size_t size);
void *oe_allocator_realloc(void *ptr, size_t size);
void *oe_allocator_aligned_alloc(size_t alignment, size_t size);
int oe_allocator_posix_memalign(void **memptr, size_t alignment, size_t size);
size_t oe_allocator_malloc_usable_size(void *ptr);
#endif

#ifndef OE_ADVANCED_MALLINFO_H
/* OE_OK, or OE_FAILURE before oe_allocator_init or with a null info.
 * current_allocated_heap_size is exact. The peak never goes down: it is
 * the highest total the threads published, or a call added up. A thread
 * publishes at oe_allocator_thread_cleanup, and on any slow path (a large
 * block, a half chunk, a new slab) once its count moved by 64 KiB; small
 * blocks taken from or given back to slabs wait for its next slow path.
 * So a peak inside an ECall can be off, either way, by up to 64 KiB per
 * thread plus such small blocks. */
oe_result_t oe_allocator_mallinfo(oe_mallinfo_t *info);
#endif

/* Same layout as in snugalloc.h; whichever header comes first defines it. */
#ifndef SNUGALLOC_STATS_TYPES
#define SNUGALLOC_STATS_TYPES
#define SNUGALLOC_STATS_VERSION 2
#define SNUGALLOC_MAX_CLASSES 96
struct snugalloc_class_stats {
    size_t object_bytes;
    size_t live_objects;
    size_t live_bytes;
    size_t slab_bytes;
    size_t slab_count;
};
struct snugalloc_stats {
    size_t version;
    size_t heap_bytes;
    size_t reserved_bytes;
    size_t peak_reserved_bytes;
    size_t live_bytes;
    size_t peak_live_bytes;
    size_t chunk_bytes;
    size_t metadata_bytes;
    size_t free_bytes;
    size_t allocators;
    size_t large_objects;
    size_t large_bytes;
    size_t idle_bytes;
    size_t remote_in_flight;
    size_t largest_free_bytes;
    size_t class_count;
    struct snugalloc_class_stats classes[SNUGALLOC_MAX_CLASSES];
    size_t room_waits;
    size_t room_waits_failed;
    size_t remote_outgoing;
    size_t remote_inbox;
    size_t foreign_bytes;
    size_t depot_bytes;
    size_t cached_bytes;
};
#endif
/* As in snugalloc.h: snugalloc_stats_sized fills what fits in `size`
 * bytes and returns the bytes written; snugalloc_stats fills only the
 * version 1 fields and sets version to 1. */
size_t snugalloc_stats_sized(struct snugalloc_stats *out, size_t size);
void snugalloc_stats(struct snugalloc_stats *out);

/* Enclave build only: the message of the fatal error that stopped the
 * enclave (misuse, such as freeing a pointer that is not the start of an
 * object), NUL-terminated, written just before the library calls abort.
 * An enclave cannot print it; read it in the debugger
 * (p snugalloc_oe_fatal_message) or from an abort handler. Empty until a
 * fatal error. */
extern char snugalloc_oe_fatal_message[256];

#ifdef __cplusplus
}
#endif

#endif /* SNUGALLOC_OE_H */
