/* Drives libsnugalloc_oe as Open Enclave would: init over a 64 MiB buffer,
 * 20 threads each running thousands of "ECalls" bracketed by
 * oe_allocator_thread_init/thread_cleanup, then OE's own checks: exact
 * current_allocated_heap_size after many malloc/free pairs, one allocation
 * of 99% of the free heap, NULL on exhaustion, the posix_memalign errors.
 * Usage: oe_host [pairs] [ecalls_per_thread] */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snugalloc_oe.h"

/* The structure of this header has the library's layout. */
#include "stats_layout.h"

#define HEAP_BYTES ((size_t)64 << 20)
#define THREADS 20

static int checks, failures;
#define CHECK(cond)                                                        \
    do {                                                                   \
        checks++;                                                          \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (0)

static unsigned char *heap;
static long ecalls = 2000;

static int in_heap(void *p, size_t n) {
    return (unsigned char *)p >= heap && (unsigned char *)p + n <= heap + HEAP_BYTES;
}

static size_t opaque(size_t n) {
    volatile size_t v = n;
    return v;
}

static size_t current(void) {
    oe_mallinfo_t info;
    if (oe_allocator_mallinfo(&info) != OE_OK) return (size_t)-1;
    return info.current_allocated_heap_size;
}

/* One ECall: a 15-deep FIFO of random blocks of 0 to 16 KiB, as in OE's
 * pluggable_allocator sample, with calloc/realloc/aligned mixed in. */
static void *ecall_thread(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    long bad = 0;
    for (long e = 0; e < ecalls; e++) {
        oe_allocator_thread_init();
        void *fifo[15] = {0};
        size_t sizes[15] = {0};
        for (int i = 0; i < 60; i++) {
            int k = i % 15;
            if (fifo[k]) {
                unsigned char *q = fifo[k];
                if (sizes[k] && q[sizes[k] - 1] != (unsigned char)sizes[k]) bad++;
                oe_allocator_free(fifo[k]);
            }
            seed = seed * 1103515245 + 12345;
            size_t n = (seed >> 8) % 16384;
            void *p;
            switch (seed & 3) {
            case 0: p = oe_allocator_calloc(1, n); break;
            case 1: p = oe_allocator_aligned_alloc(64, n); break;
            case 2: p = oe_allocator_realloc(oe_allocator_malloc(16), n); break;
            default: p = oe_allocator_malloc(n); break;
            }
            if (!p || !in_heap(p, n) || oe_allocator_malloc_usable_size(p) < n) bad++;
            if (p && n) ((unsigned char *)p)[n - 1] = (unsigned char)n;
            fifo[k] = p;
            sizes[k] = n;
        }
        for (int k = 0; k < 15; k++) oe_allocator_free(fifo[k]);
        oe_allocator_thread_cleanup();
    }
    return (void *)bad;
}

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 5000000;
    if (argc > 2) ecalls = atol(argv[2]);
    oe_mallinfo_t info;
    CHECK(oe_allocator_mallinfo(&info) == OE_FAILURE); /* before init */
    CHECK(oe_allocator_malloc(10) == NULL);            /* before init */
    heap = aligned_alloc(4096, HEAP_BYTES);
    oe_allocator_init(heap, heap + HEAP_BYTES);
    oe_allocator_thread_init();

    /* A peak once reported is never lower later (a block below the 64 KiB
     * at which a thread publishes, before any larger peak). */
    void *small = oe_allocator_malloc(32 << 10);
    oe_mallinfo_t with_small, after_small;
    CHECK(oe_allocator_mallinfo(&with_small) == OE_OK);
    CHECK(with_small.peak_allocated_heap_size >= (32 << 10));
    oe_allocator_free(small);
    CHECK(oe_allocator_mallinfo(&after_small) == OE_OK);
    CHECK(after_small.peak_allocated_heap_size >= with_small.peak_allocated_heap_size);

    /* 99% of what is free after init, in one block. */
    CHECK(oe_allocator_mallinfo(&info) == OE_OK);
    CHECK(info.max_total_heap_size == HEAP_BYTES);
    size_t want = (info.max_total_heap_size - info.current_allocated_heap_size) / 100 * 99;
    unsigned char *big = oe_allocator_malloc(want);
    CHECK(big != NULL && in_heap(big, want));
    if (big) {
        big[0] = 1;
        big[want - 1] = 2;
        oe_allocator_free(big);
    }
    /* A large block is in the peak at once, though freed inside the ECall. */
    CHECK(oe_allocator_mallinfo(&info) == OE_OK);
    CHECK(info.peak_allocated_heap_size >= want);

    /* OE's basic.c cases. */
    void *z = oe_allocator_malloc(0);
    CHECK(z != NULL);
    oe_allocator_free(z);
    z = oe_allocator_calloc(0, 0);
    CHECK(z != NULL);
    oe_allocator_free(z);
    /* Failures set errno, as OE's dlmalloc does. */
    errno = 0;
    CHECK(oe_allocator_malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(oe_allocator_calloc(1, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(oe_allocator_calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(oe_allocator_malloc(opaque((size_t)1 << 30)) == NULL && errno == ENOMEM); /* 1 GiB in 64 MiB */
    unsigned char *p = oe_allocator_malloc(100);
    memset(p, 7, 100);
    errno = 0;
    CHECK(oe_allocator_realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM && p[0] == 7 && p[99] == 7);
    p = oe_allocator_realloc(p, 100000);
    CHECK(p != NULL && p[0] == 7 && p[99] == 7);
    p = oe_allocator_realloc(p, 10);
    CHECK(p != NULL && p[0] == 7 && p[9] == 7);
    oe_allocator_free(p);
    oe_allocator_free(NULL);
    void *m = NULL;
    CHECK(oe_allocator_posix_memalign(&m, 0, 16) == EINVAL);
    CHECK(oe_allocator_posix_memalign(&m, 2, 16) == EINVAL);
    CHECK(oe_allocator_posix_memalign(&m, 63, 16) == EINVAL);
    CHECK(oe_allocator_posix_memalign(&m, 64, (size_t)1 << 63) == ENOMEM);
    CHECK(oe_allocator_posix_memalign(&m, (size_t)1 << 63, 16) == ENOMEM);
    CHECK(oe_allocator_posix_memalign(&m, 8, 16) == 0 && m != NULL);
    oe_allocator_free(m);
    CHECK(oe_allocator_posix_memalign(&m, 64, 100) == 0 && ((uintptr_t)m & 63) == 0);
    oe_allocator_free(m);
    errno = 0;
    CHECK(oe_allocator_aligned_alloc(24, 48) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(oe_allocator_posix_memalign(&m, 64, (size_t)1 << 63) == ENOMEM && errno == 0);
    for (size_t align = 1; align <= (1 << 20); align <<= 1) {
        void *a = oe_allocator_aligned_alloc(align, align + 3);
        CHECK(a != NULL && ((uintptr_t)a % align) == 0 && in_heap(a, align + 3));
        oe_allocator_free(a);
    }
    CHECK(oe_allocator_malloc_usable_size(NULL) == 0);

    /* fragment.c: malloc/free pairs leave current_allocated exactly. */
    size_t before = current();
    for (long i = 0; i < pairs; i++) oe_allocator_free(oe_allocator_malloc(1024));
    CHECK(current() == before);
    unsigned seed = 1;
    for (long i = 0; i < pairs; i++) {
        seed = seed * 1103515245 + 12345;
        oe_allocator_free(oe_allocator_malloc((seed >> 8) % 70000));
    }
    CHECK(current() == before);
    oe_allocator_thread_cleanup();

    /* 20 threads, each running thousands of bracketed ECalls. */
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, ecall_thread, (void *)(uintptr_t)(i + 1));
    long bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long)r;
    }
    CHECK(bad == 0);
    CHECK(current() == before);

    /* A malloc without thread_init still works (attaches for the call). */
    p = oe_allocator_malloc(50);
    CHECK(p != NULL);
    oe_allocator_free(p);

    /* After all that churn, most of the free heap is still one block
     * (allocator metadata created while other threads held memory may
     * split it; the 99% check is the one after init, as in OE). */
    oe_allocator_thread_init();
    CHECK(oe_allocator_mallinfo(&info) == OE_OK);
    size_t free_heap = info.max_total_heap_size - info.current_allocated_heap_size;
    struct snugalloc_stats churned;
    memset(&churned, 0xff, sizeof churned);
    CHECK(snugalloc_stats_sized(&churned, sizeof churned) == sizeof churned);
    CHECK(churned.version == SNUGALLOC_STATS_VERSION);
    CHECK(churned.remote_outgoing + churned.remote_inbox == churned.remote_in_flight);
    CHECK(churned.room_waits_failed <= churned.room_waits);
    want = free_heap / 100 * 90;
    big = oe_allocator_malloc(want);
    CHECK(big != NULL);
    oe_allocator_free(big);
    printf("oe_host: after churn, largest free run %zu of %zu free (%.1f%%)\n", churned.largest_free_bytes,
           free_heap, 100.0 * (double)churned.largest_free_bytes / (double)free_heap);

    /* Exhaustion: NULL, never an abort; all usable again afterwards. */
    void **blocks = malloc(sizeof(void *) * 70000);
    size_t n = 0;
    while (n < 70000 && (blocks[n] = oe_allocator_malloc(n < 500 ? 100000 : 1000)) != NULL) n++;
    CHECK(n > 0 && n < 70000);
    for (size_t i = 0; i < n; i++) oe_allocator_free(blocks[i]);
    free(blocks);
    CHECK(current() == before);

    struct snugalloc_stats s;
    snugalloc_stats(&s);
    /* The version 1 call says version 1. */
    CHECK(s.version == 1 && s.heap_bytes == HEAP_BYTES);
    CHECK(oe_allocator_mallinfo(&info) == OE_OK);
    oe_allocator_thread_cleanup();
    oe_allocator_cleanup();
    /* OE runs thread-exit destructors after cleanup: they may allocate. */
    p = oe_allocator_malloc(16);
    CHECK(p != NULL && in_heap(p, 16));
    oe_allocator_free(p);
    printf("oe_host: %ld pairs, %d threads x %ld ecalls, heap %zu, peak allocated %zu, allocators %zu: %d checks, %d failed\n",
           pairs, THREADS, ecalls, info.max_total_heap_size, info.peak_allocated_heap_size, s.allocators,
           checks, failures);
    return failures != 0;
}
