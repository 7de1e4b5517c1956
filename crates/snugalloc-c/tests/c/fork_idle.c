/* fork() while another thread frees blocks whose allocator is idle (its
 * thread has exited). Freeing them delivers batches to that allocator,
 * holding its flag for a moment; a fork at that moment must not leave the
 * flag held in the child, where a new thread attaching would find only that
 * allocator idle and wait for ever. Each child starts a thread that
 * allocates, under an alarm that kills it if it hangs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCKS 4096
#define FORKS 200

static void *blocks[BLOCKS];
static atomic_int stop;
static atomic_long rounds;

/* Allocates the blocks, then exits: its allocator goes back to the pool
 * with the blocks' slabs. */
static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc((size_t)(16 + i % 200));
        if (!blocks[i]) abort();
    }
    return NULL;
}

/* Over and over: a producer allocates and exits, then this thread frees
 * what it allocated, to its now idle allocator. */
static void *freer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        pthread_t p;
        if (pthread_create(&p, NULL, producer, NULL) != 0) abort();
        pthread_join(p, NULL);
        for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
        atomic_fetch_add(&rounds, 1);
    }
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        char *p = malloc((size_t)(i % 300) + 1);
        if (!p) return (void *)1;
        memset(p, 7, (size_t)(i % 300) + 1);
        free(p);
    }
    return NULL;
}

int main(void) {
    pthread_t f;
    if (pthread_create(&f, NULL, freer, NULL) != 0) return 2;
    int ok = 0;
    for (int round = 0; round < FORKS; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(10);
            pthread_t t;
            void *result = (void *)1;
            if (pthread_create(&t, NULL, child_thread, NULL) != 0) _exit(3);
            pthread_join(t, &result);
            _exit(result == NULL ? 0 : 4);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid) break;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
        else fprintf(stderr, "fork_idle: child %d failed with status %#x\n", round, status);
        usleep(200);
    }
    atomic_store(&stop, 1);
    pthread_join(f, NULL);
    printf("fork_idle: %d of %d children ok, %ld producer rounds\n", ok, FORKS, atomic_load(&rounds));
    return ok == FORKS && atomic_load(&rounds) > 0 ? 0 : 1;
}
