/* Cross-thread free storm: producers allocate blocks of many sizes and
 * hand them to consumers on other threads, which check and free them.
 * Threads come and go (exit detaches their allocators). Afterwards live
 * bytes return to where they started. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snugalloc.h"

#define RING 4096
#define PAIRS 4

struct ring {
    _Atomic(unsigned char *) slot[RING];
};
static struct ring rings[PAIRS];
static atomic_long bad;
static long per_producer = 100000;

static void *producer(void *arg) {
    struct ring *r = arg;
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (long i = 0; i < per_producer; i++) {
        seed = seed * 1103515245 + 12345;
        size_t n = 1 + (seed >> 8) % ((i % 64) == 0 ? 100000 : 600);
        unsigned char *p = malloc(n + sizeof(size_t));
        memcpy(p, &n, sizeof n);
        p[sizeof n + n - 1] = (unsigned char)n;
        _Atomic(unsigned char *) *s = &r->slot[i % RING];
        unsigned char *expected = NULL;
        while (!atomic_compare_exchange_weak(s, &expected, p)) {
            expected = NULL;
            sched_yield();
        }
    }
    return NULL;
}

static void *consumer(void *arg) {
    struct ring *r = arg;
    for (long i = 0; i < per_producer; i++) {
        _Atomic(unsigned char *) *s = &r->slot[i % RING];
        unsigned char *p;
        while ((p = atomic_exchange(s, NULL)) == NULL) sched_yield();
        size_t n;
        memcpy(&n, p, sizeof n);
        if (p[sizeof n + n - 1] != (unsigned char)n) atomic_fetch_add(&bad, 1);
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) per_producer = atol(argv[1]);
    struct snugalloc_stats before, after;
    /* Round 0 warms up: glibc keeps exited threads' stacks and their
     * thread-control allocations for reuse. */
    for (int round = 0; round < 4; round++) {
        if (round == 1) snugalloc_stats(&before);
        pthread_t t[2 * PAIRS];
        for (int i = 0; i < PAIRS; i++) {
            pthread_create(&t[2 * i], NULL, producer, &rings[i]);
            pthread_create(&t[2 * i + 1], NULL, consumer, &rings[i]);
        }
        for (int i = 0; i < 2 * PAIRS; i++) pthread_join(t[i], NULL);
    }
    snugalloc_stats(&after);
    printf("storm: %ld corrupted, live bytes before %zu after %zu, allocators %zu, peak reserved %zu\n",
           (long)bad, before.live_bytes, after.live_bytes, after.allocators, after.peak_reserved_bytes);
    /* All other threads have exited (and detached); only main's blocks,
     * the same before and after, are live. Exiting threads gave their
     * allocators back: at most two were made per thread alive at once
     * (one round's and main; a thread's first malloc may borrow a second
     * while it attaches), not one per thread of the four rounds. */
    return bad != 0 || after.live_bytes != before.live_bytes ||
           after.allocators > 2 * (2 * PAIRS + 1);
}
