/* Every function of libsnugalloc: the errno and NULL cases, alignment for
 * every power of two up to 1 MiB, usable sizes, realloc contents across
 * size classes, statistics. Given a fixed heap's size in MiB as argv[1]
 * (run with SNUGALLOC_HEAP_SIZE), also exhausts it and expects NULL with ENOMEM. Prints "api: N checks passed". */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snugalloc.h"

/* Weak, so the same source runs preloaded into a program not linked with
 * the library: the dynamic linker binds it to the preloaded definition. */
#pragma weak snugalloc_stats
#pragma weak snugalloc_stats_sized
#pragma weak snugalloc_print_stats

static int checks, failures;
#define CHECK(cond)                                                        \
    do {                                                                   \
        checks++;                                                          \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (0)

/* Keep the compiler from folding calls with impossible sizes. */
static size_t opaque(size_t n) {
    volatile size_t v = n;
    return v;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}
static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

static void test_malloc_free(void) {
    void *z = malloc(opaque(0));
    CHECK(z != NULL);
    void *z2 = malloc(opaque(0));
    CHECK(z2 != NULL && z2 != z);
    free(z);
    free(z2);
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX / 2 + 1)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque((size_t)1 << 60)) == NULL && errno == ENOMEM);
    errno = 1234;
    free(NULL);
    CHECK(errno == 1234);
    void *p = malloc(100);
    errno = 4321;
    free(p);
    CHECK(errno == 4321);
    /* Large blocks too (chunk runs, returned to the OS). */
    p = malloc(8 << 20);
    CHECK(p != NULL);
    memset(p, 1, 8 << 20);
    errno = 77;
    free(p);
    CHECK(errno == 77);
    for (size_t n = 1; n <= (1 << 20); n = n * 3 / 2 + 1) {
        unsigned char *q = malloc(n);
        CHECK(q != NULL && ((uintptr_t)q & 15) == 0);
        CHECK(malloc_usable_size(q) >= n);
        fill(q, n, 7);
        CHECK(same(q, n, 7));
        free(q);
    }
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_calloc(void) {
    errno = 0;
    CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(opaque((size_t)1 << 33), (size_t)1 << 33) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(1, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    void *z = calloc(0, 0);
    CHECK(z != NULL);
    free(z);
    /* Reused memory must come back zeroed. */
    for (size_t n = 1; n <= 300000; n = n * 2 + 3) {
        unsigned char *d = malloc(n);
        memset(d, 0xab, n);
        free(d);
        unsigned char *c = calloc(n, 1);
        CHECK(c != NULL);
        int zero = 1;
        for (size_t i = 0; i < n; i++) zero &= c[i] == 0;
        CHECK(zero);
        free(c);
    }
    unsigned *arr = calloc(1000, sizeof(unsigned));
    CHECK(arr != NULL && arr[0] == 0 && arr[999] == 0);
    free(arr);
}

static void test_realloc(void) {
    /* Contents survive growing and shrinking across classes and into runs. */
    size_t sizes[] = {1, 8, 16, 17, 48, 100, 255, 1000, 4096, 5000, 16384, 16385,
                      70000, 300000, 2 << 20, 100, 3, 40000, 1};
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *q = realloc(p, n);
        CHECK(q != NULL);
        size_t keep = have < n ? have : n;
        CHECK(same(q, keep, 3));
        fill(q, n, 3);
        CHECK(malloc_usable_size(q) >= n);
        p = q;
        have = n;
    }
    /* A failed realloc leaves the block valid and unchanged. */
    errno = 0;
    CHECK(realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    CHECK(same(p, have, 3));
    errno = 0;
    CHECK(realloc(p, opaque((size_t)1 << 62)) == NULL && errno == ENOMEM);
    CHECK(same(p, have, 3));
    /* realloc(p, 0) frees p and returns NULL, as glibc, leaving errno. */
    errno = 55;
    CHECK(realloc(p, 0) == NULL && errno == 55);
    /* realloc(NULL, n) is malloc(n). */
    p = realloc(NULL, 10);
    CHECK(p != NULL);
    free(p);
    /* Aligned blocks can be reallocated. */
    void *a = aligned_alloc(4096, 100);
    fill(a, 100, 9);
    a = realloc(a, 50000);
    CHECK(a != NULL && same(a, 100, 9));
    free(a);
}

static void test_reallocarray(void) {
    unsigned char *p = reallocarray(NULL, 10, 10);
    CHECK(p != NULL);
    fill(p, 100, 5);
    errno = 0;
    CHECK(reallocarray(p, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    CHECK(same(p, 100, 5));
    p = reallocarray(p, 1000, 10);
    CHECK(p != NULL && same(p, 100, 5));
    CHECK(reallocarray(p, 0, 10) == NULL); /* realloc(p, 0): freed */
}

static void test_alignment(void) {
    for (size_t align = 1; align <= (1 << 20); align <<= 1) {
        size_t sizes[] = {0, 1, align / 2 + 1, align, align + 1, 3 * align + 5};
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t n = sizes[i];
            void *p = NULL;
            int rc = posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n);
            CHECK(rc == 0 && p != NULL && ((uintptr_t)p % align) == 0);
            CHECK(malloc_usable_size(p) >= n);
            memset(p, 0x5a, n);
            free(p);
            p = aligned_alloc(align, n);
            CHECK(p != NULL && ((uintptr_t)p % align) == 0);
            CHECK(malloc_usable_size(p) >= n);
            memset(p, 0x5a, n);
            free(p);
            p = memalign(align, n);
            CHECK(p != NULL && ((uintptr_t)p % align) == 0);
            memset(p, 0x5a, n);
            free(p);
        }
    }
    /* Keep many aligned blocks live at once. */
    void *live[64];
    for (int i = 0; i < 64; i++) {
        live[i] = aligned_alloc((size_t)64 << (i % 8), 200 + i);
        CHECK(live[i] != NULL && ((uintptr_t)live[i] % ((size_t)64 << (i % 8))) == 0);
    }
    for (int i = 0; i < 64; i++) free(live[i]);

    /* posix_memalign errors: EINVAL for bad alignments, ENOMEM for sizes;
     * *memptr untouched and errno left alone. */
    void *sentinel = (void *)0x1234;
    void *p = sentinel;
    errno = 99;
    CHECK(posix_memalign(&p, 0, 16) == EINVAL && p == sentinel);
    CHECK(posix_memalign(&p, 2, 16) == EINVAL && p == sentinel);
    CHECK(posix_memalign(&p, 4, 16) == EINVAL && p == sentinel);
    CHECK(posix_memalign(&p, 24, 16) == EINVAL && p == sentinel);
    CHECK(posix_memalign(&p, 63, 16) == EINVAL && p == sentinel);
    CHECK(posix_memalign(&p, 64, opaque(SIZE_MAX)) == ENOMEM && p == sentinel);
    CHECK(posix_memalign(&p, (size_t)1 << 63, 16) == ENOMEM && p == sentinel);
    CHECK(errno == 99);
    CHECK(posix_memalign(&p, 8, 0) == 0 && p != sentinel && p != NULL);
    free(p);

    /* aligned_alloc: EINVAL unless a power of two. */
    errno = 0;
    CHECK(aligned_alloc(0, 16) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    /* memalign: rounds odd alignments up; EINVAL above SIZE_MAX/2+1. */
    p = memalign(24, 10);
    CHECK(p != NULL && ((uintptr_t)p % 32) == 0);
    free(p);
    p = memalign(0, 10);
    CHECK(p != NULL);
    free(p);
    errno = 0;
    CHECK(memalign(opaque(SIZE_MAX), 10) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(memalign(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);

    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    p = valloc(10);
    CHECK(p != NULL && ((uintptr_t)p % page) == 0);
    free(p);
    p = pvalloc(10);
    CHECK(p != NULL && ((uintptr_t)p % page) == 0 && malloc_usable_size(p) >= page);
    free(p);
    p = pvalloc(0);
    CHECK(p != NULL && ((uintptr_t)p % page) == 0 && malloc_usable_size(p) >= page);
    free(p);
    errno = 0;
    CHECK(pvalloc(opaque(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(valloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
}

/* The structure of this header has the library's layout. */
#include "stats_layout.h"

/* The version 2 call fills the whole structure of this header, whose
 * size the library agrees with; the version 1 call fills only the
 * version 1 fields (those before room_waits) and says version 1. */
static void test_stats_versions(void) {
    struct snugalloc_stats s;
    memset(&s, 0xff, sizeof s);
    CHECK(snugalloc_stats_sized(&s, sizeof s) == sizeof s);
    CHECK(s.version == SNUGALLOC_STATS_VERSION && s.version == 2);
    /* Fields of both versions were written, in this header's places. */
    CHECK(s.class_count > 0 && s.class_count <= SNUGALLOC_MAX_CLASSES);
    CHECK(s.room_waits_failed <= s.room_waits && s.room_waits != (size_t)-1);
    CHECK(s.remote_outgoing + s.remote_inbox == s.remote_in_flight);
    CHECK(s.depot_bytes <= s.foreign_bytes && s.cached_bytes != (size_t)-1);
    /* A caller with a shorter structure gets whole fields up to its size. */
    memset(&s, 0xff, sizeof s);
    size_t v1 = offsetof(struct snugalloc_stats, room_waits);
    CHECK(snugalloc_stats_sized(&s, v1 + 3) == v1);
    CHECK(s.version == 2 && s.class_count <= SNUGALLOC_MAX_CLASSES && s.room_waits == (size_t)-1);
    CHECK(snugalloc_stats_sized(NULL, sizeof s) == 0);
    memset(&s, 0xff, sizeof s);
    snugalloc_stats(&s);
    CHECK(s.version == 1 && s.class_count > 0 && s.room_waits == (size_t)-1);
}

static void test_stats(void) {
    struct snugalloc_stats s;
    memset(&s, 0xff, sizeof s);
    snugalloc_stats_sized(&s, sizeof s);
    CHECK(s.version == SNUGALLOC_STATS_VERSION);
    CHECK(s.heap_bytes > 0 && s.reserved_bytes > 0 && s.peak_reserved_bytes >= s.reserved_bytes);
    CHECK(s.peak_live_bytes >= s.live_bytes);
    CHECK(s.class_count > 0 && s.class_count <= SNUGALLOC_MAX_CLASSES);
    CHECK(s.chunk_bytes >= 4096 && (s.chunk_bytes & (s.chunk_bytes - 1)) == 0);
    size_t before = s.live_bytes;
    void *p = malloc(1 << 20);
    snugalloc_stats(&s);
    CHECK(s.live_bytes >= before + (1 << 20));
    CHECK(s.large_objects >= 1);
    free(p);
    snugalloc_stats(&s);
    CHECK(s.live_bytes == before);
    snugalloc_stats(NULL);
    /* The table goes to stderr; the test runner looks for its header. */
    CHECK(snugalloc_print_stats != NULL);
    if (snugalloc_print_stats) snugalloc_print_stats();
}

static void test_fixed_heap_exhaustion(size_t heap) {
    /* Fill the heap with 1 MiB blocks, then small ones, until NULL. */
    void **blocks = malloc(sizeof(void *) * 100000);
    size_t n = 0;
    errno = 0;
    for (; n < 100000; n++) {
        blocks[n] = malloc(n < 1000 ? (1 << 20) : 100);
        if (!blocks[n]) break;
    }
    CHECK(n < 100000 && errno == ENOMEM);
    CHECK(n > 0);
    struct snugalloc_stats s;
    snugalloc_stats(&s);
    CHECK(s.heap_bytes == heap);
    CHECK(s.reserved_bytes <= heap);
    /* One allocation larger than the heap fails at once. */
    errno = 0;
    CHECK(malloc(heap) == NULL && errno == ENOMEM);
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    /* After freeing, a large block fits again. */
    void *big = malloc(heap / 2);
    CHECK(big != NULL);
    free(big);
    free(blocks);
}

int main(int argc, char **argv) {
    test_malloc_free();
    test_calloc();
    test_realloc();
    test_reallocarray();
    test_alignment();
    if (!snugalloc_stats || !snugalloc_stats_sized) {
        fprintf(stderr, "api: snugalloc_stats is not bound: is libsnugalloc preloaded or linked?\n");
        return 1;
    }
    test_stats_versions();
    test_stats();
    /* argv[1]: the fixed heap's size in MiB (when SNUGALLOC_HEAP_SIZE is set). */
    if (argc > 1) test_fixed_heap_exhaustion(strtoull(argv[1], NULL, 10) << 20);
    printf("api: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
