/* Run setuid (and, as a control, plainly) with SNUGALLOC_* set: prints
 * whether the loader put the process in secure mode (AT_SECURE), then
 * allocates, so that the library, which reads its variables with
 * secure_getenv, makes its heap. With SNUGALLOC_STATS=1 the statistics
 * appear at exit only when the process is not in secure mode. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

int main(void) {
    printf("secure=%lu\n", getauxval(AT_SECURE));
    char *p = malloc(1000);
    if (!p) return 1;
    memset(p, 1, 1000);
    free(p);
    printf("ok\n");
    return 0;
}
