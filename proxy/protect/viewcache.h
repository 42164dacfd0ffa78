/* viewcache: a bounded LRU of reference-counted objects by string key,
 * limited by a byte budget and an entry count, with optional expiry.
 *
 * Generic on purpose (incoming.c stores decrypted views and notices in it;
 * the tests store plain buffers): the cache never looks inside an object.
 * It holds one reference per entry, taken with ops->ref at put and given
 * back with ops->unref when the entry is evicted, replaced, removed, found
 * expired, or the cache is freed. What an unref does (for views: wipe the
 * plaintext once nobody else holds it) is the owner's business.
 *
 * Eviction: least recently used first (a get counts as a use), until both
 * limits hold. An object larger than the whole byte budget is not cached
 * (put returns 0 and takes no reference).
 *
 * Threading: one thread (the loop); no locking. */
#ifndef QUMAIL_PROTECT_VIEWCACHE_H
#define QUMAIL_PROTECT_VIEWCACHE_H

#include <stddef.h>
#include <stdint.h>

struct viewcache_ops {
    void *(*ref)(void *obj);    /* returns obj with one more reference */
    void (*unref)(void *obj);   /* drops one reference */
};

struct viewcache_stats {
    size_t entries;
    uint64_t bytes;
    uint64_t hits, misses;
    uint64_t evictions;   /* dropped to make room */
    uint64_t expired;     /* dropped because their time was up */
};

typedef struct viewcache viewcache;

/* max_bytes, max_entries: the limits (both >= 1). NULL when out of memory
 * or a limit is 0. */
viewcache *viewcache_new(const struct viewcache_ops *ops, uint64_t max_bytes,
                         size_t max_entries);
/* Releases every entry (ops->unref) and the cache; clears *vc. */
void viewcache_free(viewcache **vc);

/* Stores obj under key (copied) with its size in bytes, replacing an entry
 * of the same key. expires_ms: absolute time in the caller's clock after
 * which the entry counts as absent (0: no expiry); now_ms: that clock now.
 * Returns 1 when stored, 0 when obj is too large to cache, -1 when out of
 * memory (nothing changed). */
int viewcache_put(viewcache *vc, const char *key, void *obj, uint64_t bytes,
                  uint64_t expires_ms, uint64_t now_ms);

/* A new reference (ops->ref) to the object stored under key, marked most
 * recently used; NULL when absent or expired (an expired entry is dropped). */
void *viewcache_get(viewcache *vc, const char *key, uint64_t now_ms);

/* Drops the entry of key; returns 1 when there was one. */
int viewcache_remove(viewcache *vc, const char *key);

/* Drops every entry (e.g. shutdown, tests). */
void viewcache_clear(viewcache *vc);

void viewcache_get_stats(const viewcache *vc, struct viewcache_stats *st);

#endif
