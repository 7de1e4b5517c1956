/* glibc's own names, run with the library preloaded: blocks from the
 * __libc_* aliases are this library's (freeing them with free, or ours
 * with __libc_free, would be fatal otherwise), the C23 sized frees free,
 * mallinfo/mallinfo2 describe this heap, malloc_trim gives free memory
 * back to the OS at once (a fixed SNUGALLOC_HEAP_SIZE too: it is an OS
 * reservation of that size), mallopt accepts and ignores, malloc_stats
 * prints the class table, malloc_info describes this heap in glibc's XML. Also calloc: a large zeroed block of memory the OS zeroed
 * is not written, so it stays uncommitted until used (as with glibc).
 * Prints "ok" and exits 0 when all hold. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static int failures;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("FAILED line %d: ", __LINE__);                            \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static size_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2) {
        printf("cannot read /proc/self/statm\n");
        exit(2);
    }
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Whether MADV_DONTNEED zeroes here (it does not under qemu's user mode):
 * without it, nothing is given back or known zero, and the library knows. */
static int dontneed_zeroes(void) {
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 0;
    p[0] = 1;
    int zeroes = madvise(p, page, MADV_DONTNEED) == 0 && p[0] == 0;
    munmap(p, page);
    return zeroes;
}

static void aliases(void) {
    char *p = __libc_malloc(100);
    CHECK(p && malloc_usable_size(p) >= 100, "__libc_malloc");
    memset(p, 1, 100);
    free(p);
    p = malloc(100);
    __libc_free(p);
    unsigned char *z = __libc_calloc(1000, 3);
    int zero = 1;
    for (int i = 0; z && i < 3000; i++) zero &= z[i] == 0;
    CHECK(z && zero, "__libc_calloc");
    z = __libc_realloc(z, 100000);
    CHECK(z && malloc_usable_size(z) >= 100000, "__libc_realloc");
    free(z);
    void *a = __libc_memalign(4096, 10);
    CHECK(a && (uintptr_t)a % 4096 == 0, "__libc_memalign");
    free(a);
    long page = sysconf(_SC_PAGESIZE);
    a = __libc_valloc(10);
    CHECK(a && (uintptr_t)a % page == 0, "__libc_valloc");
    free(a);
    a = __libc_pvalloc(10);
    CHECK(a && (uintptr_t)a % page == 0 && malloc_usable_size(a) >= (size_t)page,
          "__libc_pvalloc");
    free(a);
    /* glibc before 2.43 does not declare these: looked up by name. */
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    CHECK(fs && fas, "free_sized or free_aligned_sized not found");
    if (fs && fas) {
        fs(malloc(50), 50);
        fas(aligned_alloc(256, 512), 256, 512);
    }
}

static void info(void) {
    enum { N = 128, SIZE = 64 * 1024 };
    static char *blocks[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE);
        memset(blocks[i], 3, SIZE);
    }
    struct mallinfo2 m = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo(); /* deprecated by glibc, still called */
#pragma GCC diagnostic pop
    CHECK(m.uordblks >= before.uordblks + (size_t)N * SIZE,
          "in use %zu, %zu before %d blocks of %d", m.uordblks, before.uordblks, N, SIZE);
    CHECK(m.arena >= m.uordblks && m.fordblks == m.arena - m.uordblks,
          "arena %zu, in use %zu, free %zu", m.arena, m.uordblks, m.fordblks);
    CHECK(old.uordblks >= N * SIZE && old.arena >= old.uordblks, "mallinfo: in use %d, arena %d",
          old.uordblks, old.arena);
    for (int i = 0; i < N; i++) free(blocks[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + (size_t)N * SIZE / 2 <= m.uordblks,
          "in use %zu after freeing, %zu before", after.uordblks, m.uordblks);
}

/* The number after `key` in `xml` (the first occurrence), or 0. */
static unsigned long long xml_number(const char *xml, const char *key) {
    const char *at = strstr(xml, key);
    return at ? strtoull(at + strlen(key), NULL, 10) : 0;
}

static void info_xml(void) {
    char *keep = malloc(100000);
    memset(keep, 5, 100000);
    char *xml = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&xml, &len);
    CHECK(f != NULL, "open_memstream");
    if (!f) return;
    CHECK(malloc_info(0, f) == 0, "malloc_info(0) failed");
    /* glibc's code returns EINVAL itself (its manual says -1 and errno). */
    CHECK(malloc_info(1, f) == EINVAL, "malloc_info(1) is not EINVAL");
    fclose(f);
    CHECK(xml && strstr(xml, "<malloc version=\"1\">") && strstr(xml, "</malloc>\n"),
          "not glibc's XML: %s", xml ? xml : "(null)");
    if (xml) {
        /* Counts this heap: glibc's own would describe its unused arena. */
        unsigned long long current = xml_number(xml, "<system type=\"current\" size=\"");
        unsigned long long space = xml_number(xml, "<aspace type=\"total\" size=\"");
        struct mallinfo2 m = mallinfo2();
        CHECK(current >= 100000 && space == current, "current %llu, address space %llu", current,
              space);
        CHECK(current <= m.arena + (1 << 20) && m.arena <= current + (1 << 20),
              "current %llu, mallinfo2 arena %zu", current, m.arena);
        CHECK(strstr(xml, "<size from=\"") != NULL, "no free slots listed: %s", xml);
    }
    free(xml);
    free(keep);
}

static void trim(void) {
    enum { N = 32, SIZE = 1 << 20 };
    static char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE);
        CHECK(blocks[i], "malloc(1 MiB) %d", i);
        if (blocks[i]) memset(blocks[i], 4, SIZE);
    }
    /* An eighth freed: the decommit policy keeps that much committed for
     * reuse (unless its timers run out first on a slow machine); after
     * malloc_trim it is gone either way. */
    size_t before = resident_bytes();
    for (int i = 0; i < N / 8; i++) free(blocks[i]);
    size_t before_trim = resident_bytes();
    int trimmed = malloc_trim(0);
    size_t after = resident_bytes();
    printf("resident %zu before the frees, %zu before malloc_trim, %zu after (returned %d)\n",
           before, before_trim, after, trimmed);
    size_t most = before - (size_t)(N / 8 - 1) * SIZE;
    CHECK(after <= most, "resident %zu after malloc_trim, %zu before %d MiB were freed", after,
          before, N / 8);
    CHECK(trimmed == 1 || before_trim <= most, "malloc_trim returned %d and gave back nothing",
          trimmed);
    for (int i = N / 8; i < N; i++) free(blocks[i]);
}

static void lazy_calloc(void) {
    enum { SIZE = 32 << 20 };
    size_t before = resident_bytes();
    unsigned char *p = calloc(1, SIZE);
    CHECK(p, "calloc(32 MiB)");
    if (!p) return;
    size_t after = resident_bytes();
    printf("resident %zu before calloc(32 MiB), %zu after\n", before, after);
    CHECK(after < before + SIZE / 4, "calloc(32 MiB) made %zu bytes resident", after - before);
    int zero = 1;
    for (size_t i = 0; i < SIZE; i += 4096) zero &= p[i] == 0 && p[i + 4095] == 0;
    CHECK(zero, "calloc's block holds data");
    /* Used memory given back and zeroed again by calloc: still zero. */
    memset(p, 9, SIZE);
    free(p);
    p = calloc(SIZE / 16, 16);
    zero = p != NULL;
    for (size_t i = 0; p && i < SIZE; i += 1024) zero &= p[i] == 0;
    CHECK(zero, "calloc's block over reused memory holds data");
    free(p);
}

int main(void) {
    int zeroes = dontneed_zeroes();
    if (zeroes) {
        lazy_calloc();
    } else {
        printf("SKIPPED calloc and malloc_trim: madvise(MADV_DONTNEED) does not zero here\n");
    }
    aliases();
    info();
    info_xml();
    if (zeroes) trim();
    CHECK(mallopt(M_ARENA_MAX, 2) == 1, "mallopt refused a parameter (it accepts and ignores)");
    malloc_stats();
    if (failures) {
        printf("%d failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
