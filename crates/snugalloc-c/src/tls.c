/* The calling thread's allocator slot, in initial-exec TLS.
 *
 * A Rust thread_local in a shared library uses the general-dynamic model:
 * every access calls __tls_get_addr. A preloaded or directly linked library
 * is loaded at startup, so its TLS can live in the static TLS block, which
 * initial-exec reaches with one %fs-relative load. Stable Rust cannot choose
 * the model, so these two accessors are C. (A library dlopen()ed later may
 * not get static TLS; glibc reserves a surplus for such libraries.)
 *
 * On x86_64 the Rust side reads and writes the slot itself with inline
 * assembly (src/global.rs), so the access is two instructions inlined into
 * malloc and free rather than a call; the functions below serve other
 * targets. The slot is hidden, so it is reached only from this library. */

__attribute__((visibility("hidden"))) __thread void *snugalloc_thread_slot
    __attribute__((tls_model("initial-exec")));

void *snugalloc_tls_get(void) { return snugalloc_thread_slot; }

void snugalloc_tls_set(void *value) { snugalloc_thread_slot = value; }
