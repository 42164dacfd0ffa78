/* 004 streams and chunks in memory, and the ops that make them durable
 * (rows in e4_store.c). A stream's chunk table holds the indices at or
 * above its floor that this KME knows: with key bytes while they wait for
 * this end's application, without once used (delivered or expired) here.
 * Indices below the floor are all used: their entries are dropped. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "log.h"

static size_t ksid_hash(const uint8_t *ksid, size_t buckets)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < ETSI004_KSID_LEN; i++)
        h = (h ^ ksid[i]) * 1099511628211ull;
    return (size_t)(h % buckets);
}

struct e4_stream *e4_stream_find(struct kme_e4 *e, const uint8_t *ksid)
{
    if (e->bucket_count == 0)
        return NULL;
    for (struct e4_stream *s = e->buckets[ksid_hash(ksid, e->bucket_count)]; s != NULL;
         s = s->next)
        if (memcmp(s->ksid, ksid, ETSI004_KSID_LEN) == 0)
            return s;
    return NULL;
}

static int grow_streams(struct kme_e4 *e)
{
    size_t n = e->bucket_count ? e->bucket_count * 2 : 64;
    struct e4_stream **b = calloc(n, sizeof(struct e4_stream *));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < e->bucket_count; i++) {
        struct e4_stream *s = e->buckets[i];
        while (s != NULL) {
            struct e4_stream *next = s->next;
            size_t h = ksid_hash(s->ksid, n);
            s->next = b[h];
            b[h] = s;
            s = next;
        }
    }
    free(e->buckets);
    e->buckets = b;
    e->bucket_count = n;
    return 0;
}

struct e4_stream *e4_stream_add(struct kme_e4 *e, const uint8_t *ksid)
{
    if (e->count >= e->bucket_count && grow_streams(e) < 0)
        return NULL;
    struct e4_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    memcpy(s->ksid, ksid, ETSI004_KSID_LEN);
    etsi004_ksid_to_text(ksid, s->text);
    size_t h = ksid_hash(ksid, e->bucket_count);
    s->next = e->buckets[h];
    e->buckets[h] = s;
    e->count++;
    return s;
}

static void chunk_free(struct e4_chunk *c)
{
    if (c->key != NULL) {
        OPENSSL_cleanse(c->key, c->len);
        free(c->key);
    }
    free(c);
}

static void chunks_free(struct e4_stream *s)
{
    for (size_t i = 0; i < s->chunk_buckets; i++) {
        struct e4_chunk *c = s->chunks[i];
        while (c != NULL) {
            struct e4_chunk *next = c->next;
            chunk_free(c);
            c = next;
        }
    }
    free(s->chunks);
    s->chunks = NULL;
    s->chunk_buckets = s->chunk_count = 0;
}

void e4_stream_remove(struct kme_e4 *e, struct e4_stream *s)
{
    for (struct e4_stream **pp = &e->buckets[ksid_hash(s->ksid, e->bucket_count)];
         *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            e->count--;
            break;
        }
    }
    if (s->dirty) {
        for (struct e4_stream **pp = &e->dirty_first; *pp != NULL;
             pp = &(*pp)->dirty_next) {
            if (*pp == s) {
                *pp = s->dirty_next;
                if (*pp == NULL)
                    e->dirty_tail = pp;
                break;
            }
        }
    }
    chunks_free(s);
    free(s->src);
    free(s->dst);
    free(s->sae[0]);
    free(s->sae[1]);
    free(s);
}

/* ---- chunks ----------------------------------------------------------------- */

struct e4_chunk *e4_chunk_find(const struct e4_stream *s, uint32_t index)
{
    if (s->chunk_buckets == 0)
        return NULL;
    for (struct e4_chunk *c = s->chunks[index % s->chunk_buckets]; c != NULL; c = c->next)
        if (c->index == index)
            return c;
    return NULL;
}

static int grow_chunks(struct e4_stream *s)
{
    size_t n = s->chunk_buckets ? s->chunk_buckets * 2 : 16;
    struct e4_chunk **b = calloc(n, sizeof(struct e4_chunk *));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < s->chunk_buckets; i++) {
        struct e4_chunk *c = s->chunks[i];
        while (c != NULL) {
            struct e4_chunk *next = c->next;
            c->next = b[c->index % n];
            b[c->index % n] = c;
            c = next;
        }
    }
    free(s->chunks);
    s->chunks = b;
    s->chunk_buckets = n;
    return 0;
}

int e4_chunk_add(struct e4_stream *s, uint32_t index, uint8_t *key, uint32_t len,
                 uint64_t at_ms, uint64_t exp_ms)
{
    if (s->chunk_count >= s->chunk_buckets && grow_chunks(s) < 0)
        return -1;
    struct e4_chunk *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->index = index;
    c->key = key;
    c->len = len;
    c->at_ms = at_ms;
    c->exp_ms = exp_ms;
    c->next = s->chunks[index % s->chunk_buckets];
    s->chunks[index % s->chunk_buckets] = c;
    s->chunk_count++;
    return 0;
}

static void chunk_unlink(struct e4_stream *s, struct e4_chunk *c)
{
    for (struct e4_chunk **pp = &s->chunks[c->index % s->chunk_buckets]; *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            s->chunk_count--;
            chunk_free(c);
            return;
        }
    }
}

bool e4_chunk_used(const struct e4_stream *s, uint32_t index)
{
    if (index < s->floor)
        return true;
    const struct e4_chunk *c = e4_chunk_find(s, index);
    return c != NULL && c->key == NULL;
}

/* ---- state as JSON (stored rows) ----------------------------------------------- */

json_t *e4_qos_to_json(const struct etsi004_qos *q)
{
    return json_pack("[I,I,I,I,I,I,I,s]", (json_int_t)q->key_chunk_size,
                     (json_int_t)q->max_bps, (json_int_t)q->min_bps,
                     (json_int_t)q->jitter, (json_int_t)q->priority,
                     (json_int_t)q->timeout, (json_int_t)q->ttl, q->metadata_mimetype);
}

static bool u32_at(json_t *a, size_t i, uint32_t *out)
{
    json_t *v = json_array_get(a, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > UINT32_MAX)
        return false;
    *out = (uint32_t)json_integer_value(v);
    return true;
}

int e4_qos_from_json(json_t *a, struct etsi004_qos *q, bool any)
{
    memset(q, 0, sizeof(*q));
    const char *m = json_string_value(json_array_get(a, 7));
    if (!json_is_array(a) || json_array_size(a) != 8 || m == NULL ||
        strlen(m) > ETSI004_MIMETYPE_LEN || !u32_at(a, 0, &q->key_chunk_size) ||
        !u32_at(a, 1, &q->max_bps) || !u32_at(a, 2, &q->min_bps) ||
        !u32_at(a, 3, &q->jitter) || !u32_at(a, 4, &q->priority) ||
        !u32_at(a, 5, &q->timeout) || !u32_at(a, 6, &q->ttl) ||
        (!any && (q->key_chunk_size == 0 || q->key_chunk_size > ETSI004_MAX_CHUNK)))
        return -1;
    memcpy(q->metadata_mimetype, m, strlen(m) + 1);
    return 0;
}

char *e4_stream_state_json(const struct e4_stream *s)
{
    json_t *o = json_pack("{s:o, s:s, s:s, s:i, s:i, s:s?, s:s?, s:I, s:I, s:I, s:b}",
                          "qos", e4_qos_to_json(&s->qos), "src", s->src ? s->src : "",
                          "dst", s->dst ? s->dst : "", "here", (int)s->end[E4_HERE],
                          "there", (int)s->end[E4_THERE], "sae_here", s->sae[E4_HERE],
                          "sae_there", s->sae[E4_THERE], "next",
                          (json_int_t)s->next_index, "floor", (json_int_t)s->floor,
                          "last", (json_int_t)s->last_ms, "registered", s->registered);
    if (o == NULL)
        return NULL;
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static int get_end(json_t *o, const char *name, enum e4_end_state *out)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 2)
        return -1;
    *out = (enum e4_end_state)json_integer_value(v);
    return 0;
}

static int dup_opt(json_t *o, const char *name, char **out)
{
    json_t *v = json_object_get(o, name);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = strdup(json_string_value(v));
    return *out != NULL ? 0 : -1;
}

int e4_stream_state_load(struct e4_stream *s, const char *text)
{
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    json_t *next = json_object_get(o, "next"), *floor = json_object_get(o, "floor");
    json_t *last = json_object_get(o, "last");
    int ret = -1;
    if (json_is_object(o) && e4_qos_from_json(json_object_get(o, "qos"), &s->qos, true) == 0 &&
        get_end(o, "here", &s->end[E4_HERE]) == 0 &&
        get_end(o, "there", &s->end[E4_THERE]) == 0 && json_is_integer(next) &&
        json_is_integer(floor) && json_is_integer(last) &&
        dup_opt(o, "src", &s->src) == 0 && dup_opt(o, "dst", &s->dst) == 0 &&
        dup_opt(o, "sae_here", &s->sae[E4_HERE]) == 0 &&
        dup_opt(o, "sae_there", &s->sae[E4_THERE]) == 0) {
        s->next_index = (uint32_t)json_integer_value(next);
        s->floor = (uint32_t)json_integer_value(floor);
        s->last_ms = (uint64_t)json_integer_value(last);
        s->registered = json_is_true(json_object_get(o, "registered"));
        ret = 0;
    }
    json_decref(o);
    return ret;
}

/* ---- durable rows ---------------------------------------------------------------- */

int e4_stream_save(struct kme *k, struct e4_stream *s)
{
    char *state = e4_stream_state_json(s);
    struct kme_batch *b = kme_batch(k);
    struct kme_op *op = state != NULL && b != NULL ? kme_batch_op(b, KME_OP_E4_STREAM)
                                                   : NULL;
    if (op == NULL) {
        free(state);
        return -1;
    }
    memcpy(op->key_id, s->text, sizeof(s->text));
    op->master = state;
    return 0;
}

int e4_chunk_save(struct kme *k, struct e4_stream *s, const struct e4_chunk *c)
{
    uint8_t *copy = NULL;
    if (c->key != NULL && (copy = malloc(c->len)) == NULL)
        return -1;
    struct kme_batch *b = kme_batch(k);
    struct kme_op *op = b != NULL ? kme_batch_op(b, KME_OP_E4_CHUNK) : NULL;
    if (op == NULL) {
        free(copy);
        return -1;
    }
    memcpy(op->key_id, s->text, sizeof(s->text));
    op->e4_index = c->index;
    if (copy != NULL) {
        memcpy(copy, c->key, c->len);
        op->data = copy;
        op->len = c->len;
    }
    op->e4_at = c->at_ms;
    op->expires_ms = c->exp_ms;
    return 0;
}

int e4_chunk_use(struct kme *k, struct e4_stream *s, struct e4_chunk *c)
{
    if (c->key != NULL) {
        OPENSSL_cleanse(c->key, c->len);
        free(c->key);
        c->key = NULL;
    }
    uint32_t old_floor = s->floor;
    if (c->index != s->floor) {
        /* Used above the floor: the row stays, without its key. */
        return e4_chunk_save(k, s, c);
    }
    struct e4_chunk *f;
    while ((f = e4_chunk_find(s, s->floor)) != NULL && f->key == NULL) {
        chunk_unlink(s, f);
        if (s->floor == UINT32_MAX)
            break;
        s->floor++;
    }
    struct kme_batch *b = kme_batch(k);
    struct kme_op *op = b != NULL ? kme_batch_op(b, KME_OP_E4_CHUNK_TRIM) : NULL;
    if (op == NULL)
        return -1;
    memcpy(op->key_id, s->text, sizeof(s->text));
    /* Rows of the used chunks from the old floor up go. */
    op->e4_index = s->floor == old_floor ? (uint64_t)old_floor + 1 : s->floor;
    return e4_stream_save(k, s);
}

void e4_stream_drop(struct kme *k, struct e4_stream *s)
{
    struct kme_batch *b = kme_batch(k);
    struct kme_op *op = b != NULL ? kme_batch_op(b, KME_OP_E4_STREAM_DEL) : NULL;
    if (op != NULL)
        memcpy(op->key_id, s->text, sizeof(s->text));
    qlog_info("kme %s: 004 stream %s removed", k->cfg.kme_id, s->text);
    e4_stream_remove(k->e4, s);
}

/* ---- what the peer hears: the committed view ------------------------------------- */

struct changed {
    struct kme *k;
    uint8_t ksid[ETSI004_KSID_LEN];
    enum e4_end_state end[2];
    uint32_t next;
};

void e4_dirty_push(struct kme_e4 *e, struct e4_stream *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->dirty_next = NULL;
    *e->dirty_tail = s;
    e->dirty_tail = &s->dirty_next;
}

static void changed_done(void *arg, int status)
{
    struct changed *ch = arg;
    struct kme *k = ch->k;
    struct e4_stream *s = status == 0 && k->e4 != NULL ? e4_stream_find(k->e4, ch->ksid)
                                                       : NULL;
    if (s != NULL) {
        s->sent_end[0] = ch->end[0];
        s->sent_end[1] = ch->end[1];
        s->sent_next = ch->next;
        e4_dirty_push(k->e4, s);
        kme_link_kick(k);
    }
    free(ch);
}

void e4_stream_changed(struct kme *k, struct e4_stream *s)
{
    struct changed *ch = calloc(1, sizeof(*ch));
    struct kme_batch *b = kme_batch(k);
    if (ch == NULL || b == NULL || kme_batch_on_done(b, changed_done, ch) < 0) {
        free(ch);
        return; /* the peer hears at the next sync */
    }
    ch->k = k;
    memcpy(ch->ksid, s->ksid, ETSI004_KSID_LEN);
    ch->end[0] = s->end[0];
    ch->end[1] = s->end[1];
    ch->next = s->next_index;
}
