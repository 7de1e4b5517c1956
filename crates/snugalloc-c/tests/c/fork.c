/* fork() from a threaded process while other threads allocate: the child
 * allocates, frees and exits cleanly; repeated several times. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    void *slots[256] = {0};
    while (!atomic_load(&stop)) {
        seed = seed * 1103515245 + 12345;
        int i = (seed >> 8) & 255;
        free(slots[i]);
        size_t n = (seed >> 16) % ((seed & 1) ? 200 : 70000);
        slots[i] = malloc(n + 1);
        memset(slots[i], i, n + 1);
    }
    for (int i = 0; i < 256; i++) free(slots[i]);
    return NULL;
}

int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, (void *)(size_t)(i + 1));
    int ok = 0;
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* The child: one thread; the heap must work. */
            void *blocks[1000];
            for (int i = 0; i < 1000; i++) {
                blocks[i] = malloc((size_t)(i * 37 % 20000) + 1);
                if (!blocks[i]) _exit(2);
                memset(blocks[i], 1, (size_t)(i * 37 % 20000) + 1);
            }
            for (int i = 0; i < 1000; i++) free(blocks[i]);
            pthread_t ct;
            if (pthread_create(&ct, NULL, churn, (void *)7) != 0) _exit(3);
            usleep(1000);
            atomic_store(&stop, 1);
            pthread_join(ct, NULL);
            _exit(0);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid) break;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
        else fprintf(stderr, "fork: child %d failed with status %#x\n", round, status);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("fork: %d of 20 children ok\n", ok);
    return ok == 20 ? 0 : 1;
}
