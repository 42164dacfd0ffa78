/* viewcache: hash table (separate chaining, power-of-two buckets, grows at
 * load 1) plus a doubly linked LRU list, most recent at the head. */
#include "viewcache.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *chain;        /* hash bucket */
    struct entry *prev, *next;  /* LRU: prev towards the head (newer) */
    uint64_t hash;
    uint64_t bytes;
    uint64_t expires_ms;        /* 0: never */
    void *obj;                  /* one reference, ours */
    char key[];                 /* NUL-terminated copy */
};

struct viewcache {
    struct viewcache_ops ops;
    uint64_t max_bytes;
    size_t max_entries;
    struct entry **buckets;
    size_t n_buckets;
    struct entry *head, *tail;
    size_t count;
    uint64_t bytes;
    uint64_t hits, misses, evictions, expired;
};

/* FNV-1a, 64 bit: keys are short identities, not attacker-chosen in bulk
 * (they come from messages the user's own server stores). */
static uint64_t hash_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

viewcache *viewcache_new(const struct viewcache_ops *ops, uint64_t max_bytes,
                         size_t max_entries)
{
    if (ops == NULL || ops->ref == NULL || ops->unref == NULL ||
        max_bytes == 0 || max_entries == 0)
        return NULL;
    viewcache *vc = calloc(1, sizeof(*vc));
    if (vc == NULL)
        return NULL;
    vc->ops = *ops;
    vc->max_bytes = max_bytes;
    vc->max_entries = max_entries;
    vc->n_buckets = 64;
    vc->buckets = calloc(vc->n_buckets, sizeof(struct entry *));
    if (vc->buckets == NULL) {
        free(vc);
        return NULL;
    }
    return vc;
}

static struct entry **find_slot(viewcache *vc, const char *key, uint64_t h)
{
    struct entry **pp = &vc->buckets[h & (vc->n_buckets - 1)];
    while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->chain;
    return pp;
}

static void lru_unlink(viewcache *vc, struct entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        vc->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        vc->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_head(viewcache *vc, struct entry *e)
{
    e->prev = NULL;
    e->next = vc->head;
    if (vc->head != NULL)
        vc->head->prev = e;
    vc->head = e;
    if (vc->tail == NULL)
        vc->tail = e;
}

/* Unlinks e from both structures and releases its object. */
static void drop(viewcache *vc, struct entry *e)
{
    struct entry **pp = &vc->buckets[e->hash & (vc->n_buckets - 1)];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->chain;
    if (*pp == e)
        *pp = e->chain;
    lru_unlink(vc, e);
    vc->count--;
    vc->bytes -= e->bytes;
    void *obj = e->obj;
    free(e);
    vc->ops.unref(obj); /* last: the unref may do anything */
}

static void grow(viewcache *vc)
{
    size_t n = vc->n_buckets * 2;
    struct entry **b = calloc(n, sizeof(struct entry *));
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < vc->n_buckets; i++) {
        struct entry *e = vc->buckets[i];
        while (e != NULL) {
            struct entry *next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(vc->buckets);
    vc->buckets = b;
    vc->n_buckets = n;
}

int viewcache_put(viewcache *vc, const char *key, void *obj, uint64_t bytes,
                  uint64_t expires_ms, uint64_t now_ms)
{
    (void)now_ms;
    if (bytes > vc->max_bytes)
        return 0;
    size_t klen = strlen(key);
    struct entry *e = malloc(sizeof(*e) + klen + 1);
    if (e == NULL)
        return -1;
    memcpy(e->key, key, klen + 1);
    e->hash = hash_key(key);
    e->bytes = bytes;
    e->expires_ms = expires_ms;
    e->prev = e->next = e->chain = NULL;
    e->obj = vc->ops.ref(obj);

    struct entry *old = *find_slot(vc, key, e->hash);
    if (old != NULL)
        drop(vc, old);
    /* Make room first, so the new entry is never its own victim. */
    while (vc->tail != NULL &&
           (vc->count + 1 > vc->max_entries || vc->bytes + bytes > vc->max_bytes)) {
        vc->evictions++;
        drop(vc, vc->tail);
    }
    if (vc->count >= vc->n_buckets)
        grow(vc);
    struct entry **slot = find_slot(vc, key, e->hash);
    e->chain = *slot;
    *slot = e;
    lru_push_head(vc, e);
    vc->count++;
    vc->bytes += bytes;
    return 1;
}

void *viewcache_get(viewcache *vc, const char *key, uint64_t now_ms)
{
    struct entry *e = *find_slot(vc, key, hash_key(key));
    if (e == NULL) {
        vc->misses++;
        return NULL;
    }
    if (e->expires_ms != 0 && now_ms >= e->expires_ms) {
        vc->expired++;
        vc->misses++;
        drop(vc, e);
        return NULL;
    }
    vc->hits++;
    lru_unlink(vc, e);
    lru_push_head(vc, e);
    return vc->ops.ref(e->obj);
}

int viewcache_remove(viewcache *vc, const char *key)
{
    struct entry *e = *find_slot(vc, key, hash_key(key));
    if (e == NULL)
        return 0;
    drop(vc, e);
    return 1;
}

void viewcache_clear(viewcache *vc)
{
    /* detach everything first: an unref may do anything */
    struct entry *e = vc->head;
    vc->head = vc->tail = NULL;
    memset(vc->buckets, 0, vc->n_buckets * sizeof(struct entry *));
    vc->count = 0;
    vc->bytes = 0;
    while (e != NULL) {
        struct entry *next = e->next;
        void *obj = e->obj;
        free(e);
        vc->ops.unref(obj);
        e = next;
    }
}

void viewcache_free(viewcache **vcp)
{
    viewcache *vc = *vcp;
    if (vc == NULL)
        return;
    *vcp = NULL;
    viewcache_clear(vc);
    free(vc->buckets);
    free(vc);
}

void viewcache_get_stats(const viewcache *vc, struct viewcache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->entries = vc->count;
    st->bytes = vc->bytes;
    st->hits = vc->hits;
    st->misses = vc->misses;
    st->evictions = vc->evictions;
    st->expired = vc->expired;
}
