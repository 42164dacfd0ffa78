/* Chunk lists: n GET_KEY calls (KME-chosen or consecutive indices) as one
 * operation returning struct kme_keys, all or nothing, at most
 * MAX_IN_FLIGHT at a time. Each chunk's bytes sit in their own buffer until
 * the list is complete, then are assembled (every copy wiped). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4c_internal.h"

#define MAX_IN_FLIGHT 8
#define MAX_CHUNKS (1u << 20) /* what one message may use (format 2) */

struct slot {
    struct e4c_batch *b;
    uint32_t index;
    uint8_t *key;               /* owned, wiped */
    size_t len;
    bool in_flight;
};

struct e4c_batch {
    struct e4c_batch *next;
    etsi004_client *c;
    uint8_t ksid[ETSI004_KSID_LEN];
    char ksid_text[ETSI004_KSID_TEXT_LEN + 1];
    bool next_index;            /* KME-chosen indices */
    uint32_t first;
    size_t count, issued, done, in_flight;
    size_t chunk_len;           /* 0: any, all equal */
    uint64_t wait_ms;
    struct slot *slots;
    kme_keys_cb cb;
    void *arg;
    bool reported;
    bool holding;               /* cancelling its requests: not freed yet */
};

static void batch_free(struct e4c_batch *b)
{
    for (size_t i = 0; i < b->count; i++) {
        if (b->slots[i].key != NULL) {
            OPENSSL_cleanse(b->slots[i].key, b->slots[i].len);
            free(b->slots[i].key);
        }
    }
    free(b->slots);
    free(b);
}

static void unlink_batch(struct e4c_batch *b)
{
    for (struct e4c_batch **pp = &b->c->batches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            return;
        }
    }
}

/* Reports once; the batch is freed when nothing is in flight any more. */
static void report(struct e4c_batch *b, int error, const char *message, struct kme_keys *keys)
{
    b->reported = true;
    unlink_batch(b);
    /* Requests still out are cancelled (their callbacks come back here
     * synchronously, or later when the client is being freed). */
    b->holding = true;
    for (size_t i = 0; i < b->count && b->in_flight > 0; i++)
        if (b->slots[i].in_flight)
            etsi004_client_cancel(b->c, &b->slots[i]);
    b->holding = false;
    struct kme_result r = {.error = error, .message = message};
    kme_keys_cb cb = b->cb;
    void *arg = b->arg;
    if (b->in_flight == 0)
        batch_free(b);
    cb(&r, keys, arg);
}

static void fail(struct e4c_batch *b, int error, const char *message)
{
    char msg[256]; /* a copy: message may live in what report() frees */
    snprintf(msg, sizeof(msg), "%s", message != NULL ? message : "failed");
    report(b, error, msg, NULL);
}

static int by_index(const void *x, const void *y)
{
    const struct slot *a = x, *b = y;
    return a->index < b->index ? -1 : a->index > b->index;
}

static void complete(struct e4c_batch *b)
{
    if (b->next_index)
        qsort(b->slots, b->count, sizeof(*b->slots), by_index);
    size_t total = 0;
    for (size_t i = 0; i < b->count; i++) {
        if (i > 0 && b->slots[i].index == b->slots[i - 1].index) {
            fail(b, KME_EBADRESPONSE, "the KME gave the same index twice");
            return;
        }
        total += b->slots[i].len;
    }
    struct kme_keys *k = calloc(1, sizeof(*k));
    if (k != NULL) {
        k->keys = calloc(b->count ? b->count : 1, sizeof(*k->keys));
        k->material = malloc(total ? total : 1);
    }
    if (k == NULL || k->keys == NULL || k->material == NULL) {
        if (k != NULL) {
            free(k->keys);
            free(k->material);
            free(k);
        }
        fail(b, KME_ENOMEM, "out of memory");
        return;
    }
    k->count = b->count;
    k->total_len = total;
    size_t off = 0;
    for (size_t i = 0; i < b->count; i++) {
        struct slot *s = &b->slots[i];
        memcpy(k->material + off, s->key, s->len);
        struct kme_key *key = &k->keys[i];
        key->bytes = k->material + off;
        key->len = s->len;
        memcpy(key->ksid, b->ksid_text, sizeof(b->ksid_text));
        key->index = s->index;
        off += s->len;
    }
    report(b, KME_OK, "ok", k);
}

static void issue(struct e4c_batch *b);

static void slot_cb(const struct etsi004_result *res, const struct etsi004_chunk *ch,
                    void *arg)
{
    struct slot *s = arg;
    struct e4c_batch *b = s->b;
    s->in_flight = false;
    b->in_flight--;
    if (b->reported) {
        if (b->in_flight == 0 && !b->holding)
            batch_free(b);
        return;
    }
    if (res->error != KME_OK) {
        fail(b, res->error, res->message);
        return;
    }
    if (res->status != ETSI004_SUCCESS || ch == NULL) {
        char m[160];
        snprintf(m, sizeof(m), "GET_KEY of stream %s: status %u (%s)", b->ksid_text,
                 (unsigned)res->status, etsi004_status_name(res->status));
        fail(b, etsi004_status_error(res->status), m);
        return;
    }
    if (b->next_index && ch->index == ETSI004_INDEX_NEXT) {
        fail(b, KME_EBADRESPONSE, "the KME does not choose indices (it served position "
                                  "2^32-1): its keys are not used");
        return;
    }
    if (!b->next_index && ch->index != s->index) {
        fail(b, KME_EBADRESPONSE, "the KME answered another index");
        return;
    }
    size_t want = b->chunk_len != 0 ? b->chunk_len : b->slots[0].len;
    if (ch->len == 0 || ch->len > ETSI004_MAX_CHUNK || (want != 0 && ch->len != want)) {
        fail(b, KME_EBADRESPONSE, "a chunk of another size than the stream's");
        return;
    }
    s->key = malloc(ch->len);
    if (s->key == NULL) {
        fail(b, KME_ENOMEM, "out of memory");
        return;
    }
    memcpy(s->key, ch->key, ch->len);
    s->len = ch->len;
    s->index = ch->index;
    if (b->chunk_len == 0)
        b->chunk_len = ch->len; /* the first fixes the size for the rest */
    if (++b->done == b->count) {
        complete(b);
        return;
    }
    issue(b);
}

static void issue(struct e4c_batch *b)
{
    while (b->issued < b->count && b->in_flight < MAX_IN_FLIGHT && !b->reported) {
        struct slot *s = &b->slots[b->issued];
        s->b = b;
        s->index = b->next_index ? ETSI004_INDEX_NEXT : b->first + (uint32_t)b->issued;
        int rc = etsi004_client_get_key(b->c, b->ksid, s->index, 0, b->wait_ms, slot_cb, s);
        if (rc < 0) {
            fail(b, rc, "GET_KEY could not be sent");
            return;
        }
        s->in_flight = true;
        b->in_flight++;
        b->issued++;
    }
}

static int start(etsi004_client *c, const uint8_t *ksid, bool next, uint32_t first,
                 size_t count, size_t chunk_len, uint64_t wait_ms, kme_keys_cb cb, void *arg)
{
    if (c == NULL || ksid == NULL || cb == NULL || count == 0 || count > MAX_CHUNKS ||
        chunk_len > ETSI004_MAX_CHUNK ||
        (!next && (uint64_t)first + count - 1 >= ETSI004_INDEX_NEXT))
        return KME_EINVAL;
    if (c->freeing)
        return KME_ECANCELLED;
    struct e4c_batch *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->slots = calloc(count, sizeof(*b->slots))) == NULL) {
        free(b);
        return KME_ENOMEM;
    }
    b->c = c;
    memcpy(b->ksid, ksid, ETSI004_KSID_LEN);
    etsi004_ksid_to_text(ksid, b->ksid_text);
    b->next_index = next;
    b->first = first;
    b->count = count;
    b->chunk_len = chunk_len;
    b->wait_ms = wait_ms;
    b->cb = cb;
    b->arg = arg;
    b->next = c->batches;
    c->batches = b;
    /* The first requests are queued now; answers (and failures) come on
     * the loop, never inside this call. */
    for (size_t i = 0; i < count && i < MAX_IN_FLIGHT; i++) {
        struct slot *s = &b->slots[i];
        s->b = b;
        s->index = next ? ETSI004_INDEX_NEXT : first + (uint32_t)i;
        int rc = etsi004_client_get_key(c, ksid, s->index, 0, wait_ms, slot_cb, s);
        if (rc < 0) {
            /* Nothing reported yet: undo quietly (requests already queued
             * are cancelled without their callbacks reaching the user). */
            b->reported = true;
            unlink_batch(b);
            b->holding = true;
            for (size_t j = 0; j < i; j++)
                etsi004_client_cancel(c, &b->slots[j]);
            b->holding = false;
            if (b->in_flight == 0)
                batch_free(b);
            return rc;
        }
        s->in_flight = true;
        b->in_flight++;
        b->issued++;
    }
    return KME_OK;
}

int etsi004_client_next_chunks(etsi004_client *c, const uint8_t *ksid, size_t count,
                               size_t chunk_len, uint64_t wait_ms, kme_keys_cb cb, void *arg)
{
    return start(c, ksid, true, 0, count, chunk_len, wait_ms, cb, arg);
}

int etsi004_client_fetch_chunks(etsi004_client *c, const uint8_t *ksid, uint32_t first,
                                size_t count, size_t chunk_len, uint64_t wait_ms,
                                kme_keys_cb cb, void *arg)
{
    return start(c, ksid, false, first, count, chunk_len, wait_ms, cb, arg);
}

size_t e4c_batches_cancel(etsi004_client *c, void *arg)
{
    size_t n = 0;
    for (;;) {
        /* Unlinked here, reported (and maybe freed) by fail(). */
        struct e4c_batch **pp = &c->batches;
        while (*pp != NULL && (*pp)->arg != arg)
            pp = &(*pp)->next;
        struct e4c_batch *b = *pp;
        if (b == NULL)
            return n;
        *pp = b->next;
        fail(b, KME_ECANCELLED, "cancelled");
        n++;
    }
}
