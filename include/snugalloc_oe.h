/* snugalloc for Open Enclave: libsnugalloc_oe.a implements OE's pluggable
 * allocator interface (openenclave/advanced/allocator.h and mallinfo.h).
 *
 * Link it into the enclave before oelibc/oelibcxx/oecore, e.g. with CMake:
 *   target_link_libraries(enclave PRIVATE snugalloc_oe openenclave::oelibc ...)
 * It exports only the oe_allocator_* functions and snugalloc_stats: no
 * malloc or dl* symbols. Build it for an enclave with
 *   cargo build -p snugalloc-oe --release --features enclave
 *
 * When OE's own headers are included first, their declarations are used
 * and the duplicates below are skipped. */
#ifndef SNUGALLOC_OE_H
#define SNUGALLOC_OE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef OE_ADVANCED_MALLINFO_H
/* As oe_result_t in openenclave/bits/result.h (an enum of unsigned int
 * size): OE_OK is 0, OE_FAILURE 1, OE_UNSUPPORTED 24. */
#ifndef _OE_BITS_RESULT
typedef unsigned int oe_result_t;
#define OE_OK 0u
#define OE_FAILURE 1u
#define OE_UNSUPPORTED 24u
#endif
/* As in openenclave/advanced/mallinfo.h. */
typedef struct _oe_mallinfo {
    size_t max_total_heap_size;         /* bytes the heap manages */
    size_t current_allocated_heap_size; /* exact usable bytes of live blocks */
    size_t peak_allocated_heap_size;    /* highest current_allocated_heap_size */
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
oe_result_t oe_allocator_mallinfo(oe_mallinfo_t *info);
#endif

#ifndef SNUGALLOC_H
#define SNUGALLOC_STATS_VERSION 1
#define SNUGALLOC_MAX_CLASSES 96
struct snugalloc_class_stats {
    size_t object_bytes;
    size_t live_objects;
    size_t live_bytes;
    size_t slab_bytes;
    size_t slab_count;
};
/* Same layout as in snugalloc.h. */
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
};
void snugalloc_stats(struct snugalloc_stats *out);
#endif

#ifdef __cplusplus
}
#endif

#endif /* SNUGALLOC_OE_H */
