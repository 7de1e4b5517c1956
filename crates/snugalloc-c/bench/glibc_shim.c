/* A preloadable shim that forwards the malloc family to glibc's own
 * implementation (__libc_*), for a glibc baseline in programs that link
 * another allocator (Debian's redis-server links jemalloc). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

void *malloc(size_t n) { return __libc_malloc(n); }
void free(void *p) { __libc_free(p); }
void *calloc(size_t c, size_t n) { return __libc_calloc(c, n); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return __libc_memalign(a, n); }
void *valloc(size_t n) { return __libc_valloc(n); }
void *pvalloc(size_t n) { return __libc_pvalloc(n); }
int posix_memalign(void **out, size_t a, size_t n) {
    if (a == 0 || (a & (a - 1)) || a % sizeof(void *)) return EINVAL;
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* glibc's own malloc_usable_size, not the one of an allocator the program
 * links (jemalloc's would be handed glibc's blocks). */
size_t malloc_usable_size(void *p) {
    static size_t (*libc_usable)(void *);
    if (!libc_usable) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        libc_usable = (size_t (*)(void *))dlsym(libc, "malloc_usable_size");
    }
    return p ? libc_usable(p) : 0;
}
