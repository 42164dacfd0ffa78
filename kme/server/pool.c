/* In-memory key state of a KME: key streams (bit-exact draws, no waste),
 * keys held for slave SAEs, reservations awaiting the peer's ack. Pure
 * data structures, no I/O; durable copies are kept by store.c. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* ---- key stream --------------------------------------------------------- */

void kme_stream_init(struct kme_stream *s, uint64_t off)
{
    memset(s, 0, sizeof(*s));
    s->base = s->head = s->tail = off;
}

void kme_stream_clear(struct kme_stream *s)
{
    if (s->buf != NULL) {
        OPENSSL_cleanse(s->buf, s->cap);
        free(s->buf);
    }
    memset(s, 0, sizeof(*s));
}

uint64_t kme_stream_len(const struct kme_stream *s)
{
    return s->tail - s->head;
}

int kme_stream_append(struct kme_stream *s, uint64_t off, const uint8_t *data,
                      size_t len)
{
    if (off != s->tail)
        return -1;
    if (len == 0)
        return 0;
    size_t used = (size_t)(s->tail - s->base);
    size_t dead = (size_t)(s->head - s->base);
    if (used + len > s->cap && dead > 0) {
        /* Compact: move live bytes down, wipe the vacated tail. */
        memmove(s->buf, s->buf + dead, used - dead);
        OPENSSL_cleanse(s->buf + (used - dead), dead);
        s->base = s->head;
        used -= dead;
    }
    if (used + len > s->cap) {
        if (len > SIZE_MAX / 2 - used)
            return -1;
        size_t cap = (used + len) * 2;
        if (cap < 4096)
            cap = 4096;
        uint8_t *n = malloc(cap);
        if (n == NULL)
            return -1;
        if (s->buf != NULL) {
            memcpy(n, s->buf, used);
            OPENSSL_cleanse(s->buf, s->cap);
            free(s->buf);
        }
        s->buf = n;
        s->cap = cap;
    }
    memcpy(s->buf + used, data, len);
    s->tail += len;
    return 0;
}

int kme_stream_take(struct kme_stream *s, size_t len, uint8_t *out)
{
    if (len > kme_stream_len(s))
        return -1;
    uint8_t *p = s->buf + (s->head - s->base);
    if (out != NULL)
        memcpy(out, p, len);
    OPENSSL_cleanse(p, len);
    s->head += len;
    return 0;
}

const uint8_t *kme_stream_at(const struct kme_stream *s, uint64_t off,
                             size_t len)
{
    if (off < s->head || off > s->tail || len > s->tail - off)
        return NULL;
    return s->buf + (off - s->base);
}

/* ---- held keys ---------------------------------------------------------- */

static size_t hash_id(const char *id, size_t buckets)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *id != '\0'; id++) {
        h ^= (unsigned char)*id;
        h *= 1099511628211ULL;
    }
    return (size_t)(h % buckets);
}

int kme_held_init(struct kme_held_table *t)
{
    memset(t, 0, sizeof(*t));
    t->bucket_count = 4096;
    t->buckets = calloc(t->bucket_count, sizeof(struct kme_held *));
    return t->buckets != NULL ? 0 : -1;
}

void kme_held_free(struct kme_held *h)
{
    free(h->master);
    for (size_t i = 0; h->slaves != NULL && i < h->slave_count; i++)
        free(h->slaves[i]);
    free(h->slaves);
    for (size_t i = 0; i < h->delivered_count; i++)
        free(h->delivered[i]);
    free(h->delivered);
    free(h->delivered_ms);
    if (h->key != NULL) {
        OPENSSL_cleanse(h->key, h->key_len);
        free(h->key);
    }
    free(h);
}

void kme_held_free_all(struct kme_held_table *t)
{
    for (size_t i = 0; t->buckets != NULL && i < t->bucket_count; i++) {
        struct kme_held *h = t->buckets[i];
        while (h != NULL) {
            struct kme_held *next = h->next;
            kme_held_free(h);
            h = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

static void held_rehash(struct kme_held_table *t)
{
    size_t n = t->bucket_count * 2;
    struct kme_held **b = calloc(n, sizeof(struct kme_held *));
    if (b == NULL)
        return; /* keep the longer chains */
    for (size_t i = 0; i < t->bucket_count; i++) {
        struct kme_held *h = t->buckets[i];
        while (h != NULL) {
            struct kme_held *next = h->next;
            size_t j = hash_id(h->key_id, n);
            h->next = b[j];
            b[j] = h;
            h = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->bucket_count = n;
}

struct kme_held *kme_held_find(const struct kme_held_table *t,
                               const char *key_id)
{
    for (struct kme_held *h = t->buckets[hash_id(key_id, t->bucket_count)];
         h != NULL; h = h->next) {
        if (strcmp(h->key_id, key_id) == 0)
            return h;
    }
    return NULL;
}

int kme_held_insert(struct kme_held_table *t, struct kme_held *h)
{
    if (kme_held_find(t, h->key_id) != NULL)
        return -1;
    if (t->count >= t->bucket_count)
        held_rehash(t);
    size_t i = hash_id(h->key_id, t->bucket_count);
    h->next = t->buckets[i];
    t->buckets[i] = h;
    t->count++;
    return 0;
}

struct kme_held *kme_held_new(const char *key_id, const char *master,
                              const char *const *slaves, size_t slave_count,
                              const uint8_t *key, size_t key_len,
                              uint64_t expires_ms)
{
    struct kme_held *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    snprintf(h->key_id, sizeof(h->key_id), "%s", key_id);
    h->master = strdup(master);
    h->slaves = calloc(slave_count > 0 ? slave_count : 1, sizeof(char *));
    h->key = malloc(key_len > 0 ? key_len : 1);
    bool ok = h->master != NULL && h->slaves != NULL && h->key != NULL;
    for (size_t i = 0; ok && i < slave_count; i++) {
        h->slaves[i] = strdup(slaves[i]);
        ok = h->slaves[i] != NULL;
        h->slave_count = i + 1;
    }
    if (!ok) {
        h->key_len = 0;
        kme_held_free(h);
        return NULL;
    }
    memcpy(h->key, key, key_len);
    h->key_len = key_len;
    h->expires_ms = expires_ms;
    return h;
}

int kme_held_slave_index(const struct kme_held *h, const char *slave)
{
    for (size_t i = 0; i < h->slave_count; i++) {
        if (strcmp(h->slaves[i], slave) == 0)
            return (int)i;
    }
    return -1;
}

void kme_held_destroy(struct kme_held_table *t, struct kme_held *h)
{
    struct kme_held **pp = &t->buckets[hash_id(h->key_id, t->bucket_count)];
    while (*pp != NULL && *pp != h)
        pp = &(*pp)->next;
    if (*pp == h) {
        *pp = h->next;
        t->count--;
    }
    kme_held_free(h);
}

int kme_held_deliver(struct kme_held *h, size_t slave_index, uint64_t now_ms)
{
    if (slave_index >= h->slave_count)
        return -1;
    size_t n = h->delivered_count + 1;
    char **d = realloc(h->delivered, n * sizeof(*d));
    if (d == NULL)
        return -1;
    h->delivered = d;
    uint64_t *ms = realloc(h->delivered_ms, n * sizeof(*ms));
    if (ms == NULL)
        return -1;
    h->delivered_ms = ms;
    h->delivered[h->delivered_count] = h->slaves[slave_index];
    h->delivered_ms[h->delivered_count] = now_ms;
    h->delivered_count = n;
    h->slaves[slave_index] = h->slaves[h->slave_count - 1];
    h->slave_count--;
    return 0;
}

int kme_held_delivered_index(const struct kme_held *h, const char *slave)
{
    for (size_t i = 0; i < h->delivered_count; i++) {
        if (strcmp(h->delivered[i], slave) == 0)
            return (int)i;
    }
    return -1;
}

bool kme_held_undeliver(struct kme_held_table *t, struct kme_held *h, size_t i,
                        char **slave_r)
{
    if (i < h->delivered_count) {
        if (slave_r != NULL)
            *slave_r = h->delivered[i];
        else
            free(h->delivered[i]);
        h->delivered[i] = h->delivered[h->delivered_count - 1];
        h->delivered_ms[i] = h->delivered_ms[h->delivered_count - 1];
        h->delivered_count--;
    }
    if (h->slave_count > 0 || h->delivered_count > 0)
        return false;
    kme_held_destroy(t, h);
    return true;
}

bool kme_held_collect(struct kme_held_table *t, struct kme_held *h,
                      size_t slave_index)
{
    if (slave_index < h->slave_count) {
        free(h->slaves[slave_index]);
        h->slaves[slave_index] = h->slaves[h->slave_count - 1];
        h->slave_count--;
    }
    if (h->slave_count > 0 || h->delivered_count > 0)
        return false;
    kme_held_destroy(t, h);
    return true;
}

/* ---- outbox ------------------------------------------------------------- */

void kme_outbox_clear(struct kme_outbox *q)
{
    for (size_t i = 0; i < q->count; i++) {
        struct kme_reservation *r = kme_outbox_at(q, i);
        free(r->master);
        free(r->slaves_json);
    }
    free(q->items);
    memset(q, 0, sizeof(*q));
}

struct kme_reservation *kme_outbox_at(struct kme_outbox *q, size_t i)
{
    if (i >= q->count)
        return NULL;
    return &q->items[(q->first + i) % q->cap];
}

int kme_outbox_reserve(struct kme_outbox *q, size_t n)
{
    if (q->count + n > q->cap) {
        size_t cap = q->cap > 0 ? q->cap : 256;
        while (cap < q->count + n)
            cap *= 2;
        struct kme_reservation *items = calloc(cap, sizeof(*items));
        if (items == NULL)
            return -1;
        for (size_t i = 0; q->cap > 0 && i < q->count; i++) /* count > 0: cap > 0 */
            items[i] = q->items[(q->first + i) % q->cap];
        free(q->items);
        q->items = items;
        q->cap = cap;
        q->first = 0;
    }
    return 0;
}

int kme_outbox_push(struct kme_outbox *q, struct kme_reservation *r)
{
    if (kme_outbox_reserve(q, 1) < 0)
        return -1;
    q->items[(q->first + q->count) % q->cap] = *r;
    q->count++;
    return 0;
}

void kme_outbox_drop_until(struct kme_outbox *q, uint64_t applied)
{
    while (q->count > 0) {
        struct kme_reservation *r = &q->items[q->first];
        if (r->off + r->len > applied)
            break;
        free(r->master);
        free(r->slaves_json);
        q->first = (q->first + 1) % q->cap;
        q->count--;
    }
}
