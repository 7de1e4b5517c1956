/* Run with the library on a small fixed heap (SNUGALLOC_HEAP_SIZE): the
 * main thread fills the heap with 64 KiB blocks, then a second thread asks
 * for one more. With argument "wait" the main thread frees a block 20 ms
 * after the request started, and the request must succeed (it waits for
 * room, SNUGALLOC_OOM_WAIT_MS); with "fail" the main thread frees only
 * after the request returned, which must be NULL with errno ENOMEM.
 * Prints "ok: W waits, F failed" (the heap's counts of waits for room and
 * of those that failed, from snugalloc_stats_sized) and exits 0 when that
 * holds. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snugalloc.h"

#define BLOCK (64 * 1024)
#define MAX_BLOCKS 4096

static atomic_int stage; /* 1: attached, 2: go, 3: asking, 4: returned */
static void *got;
static int got_errno;

static void wait_for(int s) {
    while (atomic_load(&stage) < s) sched_yield();
}

static void *asker(void *arg) {
    (void)arg;
    /* The first allocation gives this thread its allocator while there is
     * room for it. */
    free(malloc(16));
    atomic_store(&stage, 1);
    wait_for(2);
    atomic_store(&stage, 3);
    errno = 0;
    got = malloc(BLOCK);
    got_errno = errno;
    atomic_store(&stage, 4);
    return NULL;
}

int main(int argc, char **argv) {
    int wait = argc > 1 && strcmp(argv[1], "wait") == 0;
    static void *blocks[MAX_BLOCKS];
    int n = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, asker, NULL) != 0) {
        printf("pthread_create failed\n");
        return 1;
    }
    wait_for(1);
    while (n < MAX_BLOCKS && (blocks[n] = malloc(BLOCK)) != NULL) n++;
    if (n < 8 || n == MAX_BLOCKS) {
        printf("filled with %d blocks: is SNUGALLOC_HEAP_SIZE set?\n", n);
        return 1;
    }
    atomic_store(&stage, 2);
    wait_for(3);
    if (wait) {
        struct timespec ms20 = {0, 20 * 1000 * 1000};
        nanosleep(&ms20, NULL);
        free(blocks[--n]);
    } else {
        wait_for(4);
        free(blocks[--n]);
    }
    pthread_join(t, NULL);
    if (wait && got == NULL) {
        printf("the request failed although a block was freed while it waited\n");
        return 1;
    }
    if (!wait && (got != NULL || got_errno != ENOMEM)) {
        printf("the request got %p, errno %d: expected NULL and ENOMEM\n", got, got_errno);
        return 1;
    }
    struct snugalloc_stats s;
    if (snugalloc_stats_sized(&s, sizeof s) != sizeof s || s.version < 2) {
        printf("snugalloc_stats_sized did not fill version 2\n");
        return 1;
    }
    free(got);
    while (n > 0) free(blocks[--n]);
    printf("ok: %zu waits, %zu failed\n", s.room_waits, s.room_waits_failed);
    return 0;
}
