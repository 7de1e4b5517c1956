/* Run with the library preloaded under a small address-space limit
 * (`ulimit -v`): the heap must still be made (with less address space),
 * errno must not show the reservations that failed on the way, and the old
 * name cfree must reach this library's free. Exit 0 when all hold. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    int at_start = errno;
    errno = 0;
    char *p = malloc(1 << 20);
    int after = errno;
    if (!p) {
        printf("malloc(1 MiB) failed\n");
        return 1;
    }
    memset(p, 1, 1 << 20);
    free(p);
    if (at_start != 0 || after != 0) {
        printf("errno %d at start, %d after a successful malloc\n", at_start, after);
        return 1;
    }
    void (*old_free)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    if (!old_free) {
        printf("no cfree\n");
        return 1;
    }
    old_free(malloc(10));
    printf("ok\n");
    return 0;
}
