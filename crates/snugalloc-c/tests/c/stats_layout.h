/* Included after snugalloc.h (api.c) or snugalloc_oe.h (oe_host.c), each
 * of which defines struct snugalloc_stats when it comes first: asserts
 * that the definition has the library's layout, as stats_abi.rs asserts
 * for the Rust side. Field i of the version 2 part sits at word
 * 16 + 5 * SNUGALLOC_MAX_CLASSES + i. */
#include <stddef.h>

#define V2_WORD(i) ((16 + 5 * SNUGALLOC_MAX_CLASSES + (i)) * sizeof(size_t))
_Static_assert(offsetof(struct snugalloc_stats, classes) == 16 * sizeof(size_t), "layout");
_Static_assert(offsetof(struct snugalloc_stats, room_waits) == V2_WORD(0), "layout");
_Static_assert(offsetof(struct snugalloc_stats, room_waits_failed) == V2_WORD(1), "layout");
_Static_assert(offsetof(struct snugalloc_stats, remote_outgoing) == V2_WORD(2), "layout");
_Static_assert(offsetof(struct snugalloc_stats, remote_inbox) == V2_WORD(3), "layout");
_Static_assert(offsetof(struct snugalloc_stats, foreign_bytes) == V2_WORD(4), "layout");
_Static_assert(offsetof(struct snugalloc_stats, depot_bytes) == V2_WORD(5), "layout");
_Static_assert(offsetof(struct snugalloc_stats, cached_bytes) == V2_WORD(6), "layout");
_Static_assert(sizeof(struct snugalloc_stats) == V2_WORD(7), "layout");
