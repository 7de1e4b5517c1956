/* More threads alive at once than the heap has allocators
 * (SNUGALLOC_MAX_ALLOCATORS): every thread still allocates and frees.
 * Threads keep an allocator only while the pool has some left beyond a
 * reserve; the others take one of the reserve for each call. Prints
 * "ok <threads> <allocators>" and exits 0 when no allocation failed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snugalloc.h"

#define THREADS 40
#define ROUNDS 2000

static pthread_barrier_t all_alive, all_done;
static atomic_long failed;

static void *worker(void *arg) {
    unsigned seed = (unsigned)(size_t)arg * 2654435761u;
    /* Every thread allocates before any exits, so the first ones keep
     * their allocators while the others run. */
    char *first = malloc(64);
    if (!first) atomic_fetch_add(&failed, 1);
    pthread_barrier_wait(&all_alive);
    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245 + 12345;
        size_t n = 1 + (seed >> 8) % 20000;
        char *p = malloc(n);
        if (!p) {
            atomic_fetch_add(&failed, 1);
            continue;
        }
        memset(p, (int)i, n);
        if (p[n - 1] != (char)i) atomic_fetch_add(&failed, 1);
        free(p);
    }
    pthread_barrier_wait(&all_done);
    free(first);
    return NULL;
}

int main(void) {
    /* A thread that waits a second for an allocator on every call would
     * take hours here: fail instead. */
    alarm(120);
    pthread_t t[THREADS];
    pthread_barrier_init(&all_alive, NULL, THREADS);
    pthread_barrier_init(&all_done, NULL, THREADS);
    for (size_t i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0) {
            printf("pthread_create failed\n");
            return 2;
        }
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    struct snugalloc_stats s;
    snugalloc_stats(&s);
    long f = atomic_load(&failed);
    if (f != 0) {
        printf("%ld allocations failed with %zu allocators\n", f, s.allocators);
        return 1;
    }
    printf("ok %d %zu\n", THREADS, s.allocators);
    return 0;
}
