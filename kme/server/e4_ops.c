/* OPEN_CONNECT, GET_KEY and CLOSE at one KME (the rules are in
 * kme/ETSI004.md, "Semantics"). A request is decided at once when it can
 * be; otherwise it waits in k->e4->waits (for the peer application to
 * open, for the owner KME's answer, for a chunk in transit, for key
 * material) and is re-examined by e4_wake() whenever something changes
 * and on the sweep, until it can be decided or its stream's Timeout
 * passes. Every answer goes through e4_conn_answer(), which sends it only
 * after the state it reports is committed. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "log.h"

enum step { STEP_PARK, STEP_DONE };

#define RETRY_MS 250 /* non-owner: ask the owner again after a refusal */

uint64_t e4_now(void)
{
    return kme_now_ms();
}

bool e4_link_up(struct kme *k)
{
    return kme_link_out_ready(k) && kme_link_in_ready(k);
}

void e4_wait_free(struct e4_wait *w)
{
    if (w == NULL)
        return;
    free(w->src);
    free(w->dst);
    free(w);
}

void e4_wait_orphan(struct e4_wait *w)
{
    w->conn = NULL;
}

/* ---- answers ------------------------------------------------------------------ */

static void answer_open(struct kme *k, struct e4_conn *c, uint32_t status,
                        const struct etsi004_qos *qos, const uint8_t *ksid)
{
    struct etsi004_open_resp r = {.status = status};
    if (qos != NULL && (status == ETSI004_SUCCESS || status == ETSI004_PEER_NOT_CONNECTED ||
                        status == ETSI004_QOS_NOT_MET)) {
        r.has_qos = true;
        r.qos = *qos;
        memcpy(r.ksid, ksid, ETSI004_KSID_LEN);
    }
    size_t len = 0;
    uint8_t *f = etsi004_open_resp_encode(&r, &len);
    e4_conn_answer(k, c, f, len, false, "OPEN_CONNECT");
}

static void answer_get(struct kme *k, struct e4_conn *c, uint32_t status,
                       uint32_t needed)
{
    struct etsi004_get_resp r = {.status = status, .metadata_needed = needed};
    size_t len = 0;
    uint8_t *f = etsi004_get_resp_encode(&r, &len);
    e4_conn_answer(k, c, f, len, false, "GET_KEY");
}

static void answer_close(struct kme *k, struct e4_conn *c, uint32_t status)
{
    size_t len = 0;
    uint8_t *f = etsi004_close_resp_encode(status, &len);
    e4_conn_answer(k, c, f, len, false, "CLOSE");
}

/* ---- allocation (owner) ------------------------------------------------------ */

/* Draws chunk index of s from the outgoing key stream (acknowledged
 * material only, like a 014 draw) and queues its reservation for the peer
 * and its rows. The key row is written only when keep_row: a chunk handed
 * to this end's application in the same batch never reaches the file.
 * NULL when the material is short (or out of memory). */
struct e4_chunk *e4_allocate(struct kme *k, struct e4_stream *s, uint32_t index,
                             bool keep_row)
{
    uint32_t len = s->qos.key_chunk_size;
    if (kme_out_available(k) < len)
        return NULL;
    struct kme_batch *b = kme_batch(k);
    uint8_t *key = malloc(len);
    if (b == NULL || key == NULL || kme_batch_reserve(b, 4) < 0 ||
        kme_outbox_reserve(&k->outbox, 1) < 0) {
        free(key);
        return NULL;
    }
    uint64_t now = e4_now();
    uint64_t exp = now + (uint64_t)s->qos.ttl * 1000u;
    struct kme_reservation r = {.off = k->out.head, .len = len, .e4 = true,
                                .e4_index = index, .e4_at = now, .e4_exp = exp};
    memcpy(r.key_id, s->text, sizeof(s->text));
    kme_stream_take(&k->out, len, key);
    if (e4_chunk_add(s, index, key, len, now, exp) < 0) {
        /* The bytes are drawn: lost, never handed out twice. */
        OPENSSL_cleanse(key, len);
        free(key);
        return NULL;
    }
    struct kme_op *op = kme_batch_op(b, KME_OP_E4_OUTBOX_ADD);
    op->off = r.off;
    op->len = len;
    memcpy(op->key_id, s->text, sizeof(s->text));
    op->e4_index = index;
    op->e4_at = now;
    op->expires_ms = exp;
    kme_outbox_push(&k->outbox, &r);
    if (index >= s->next_index)
        s->next_index = index + 1; /* UINT32_MAX: exhausted */
    s->last_ms = now;
    struct e4_chunk *c = e4_chunk_find(s, index);
    if (keep_row)
        e4_chunk_save(k, s, c);
    e4_stream_save(k, s);
    e4_stream_changed(k, s);
    return c;
}

/* ---- GET_KEY ------------------------------------------------------------------- */

/* The longest metadata a chunk of this stream can have: what status 8
 * reports, so that a retry with that size cannot fail again. */
static uint32_t metadata_bound(void)
{
    char md[ETSI004_METADATA_JSON_MAX + 1];
    return (uint32_t)etsi004_metadata_json(UINT32_MAX, 0, md);
}

/* Hands chunk c to w's application: status 0 with the key and metadata,
 * or 8 (nothing consumed) when the caller's metadata buffer is short. */
static void deliver(struct kme *k, struct e4_wait *w, struct e4_stream *s,
                    struct e4_chunk *c)
{
    char md[ETSI004_METADATA_JSON_MAX + 1];
    size_t mdl = 0;
    if (s->qos.metadata_mimetype[0] != '\0' && w->metadata_size > 0) {
        uint64_t now = e4_now();
        uint64_t age = now > c->at_ms ? now - c->at_ms : 0;
        mdl = etsi004_metadata_json(age > UINT32_MAX ? UINT32_MAX : (uint32_t)age, 0, md);
        if (w->metadata_size < mdl) {
            answer_get(k, w->conn, ETSI004_METADATA_TOO_SMALL, metadata_bound());
            return;
        }
    }
    struct etsi004_get_resp r = {.status = ETSI004_SUCCESS, .index = c->index,
                                 .key_len = c->len, .key = c->key,
                                 .metadata_len = (uint32_t)mdl,
                                 .metadata = (const uint8_t *)md};
    size_t len = 0;
    uint8_t *f = etsi004_get_resp_encode(&r, &len);
    if (f == NULL) {
        answer_get(k, w->conn, ETSI004_INSUFFICIENT_KEY, 0);
        return;
    }
    e4_chunk_use(k, s, c);
    e4_conn_answer(k, w->conn, f, len, true, "GET_KEY");
}

/* A refusal from the owner (non-owner side): asked again after RETRY_MS
 * while the deadline allows, since what the owner lacked (key material,
 * its application) may come. */
static enum step owner_refused(struct kme *k, struct e4_wait *w, uint64_t now)
{
    if (now >= w->deadline) {
        answer_get(k, w->conn, w->owner_status, 0);
        return STEP_DONE;
    }
    if (w->retry_at == 0)
        w->retry_at = now + RETRY_MS;
    if (now >= w->retry_at) {
        w->retry_at = 0;
        w->answered = false;
        w->asked = false;
        e4_ask_owner(k, w);
    }
    return STEP_PARK;
}

static enum step get_step(struct kme *k, struct e4_wait *w)
{
    struct kme_e4 *e = k->e4;
    uint64_t now = uv_now(k->loop);
    struct e4_stream *s = e4_stream_find(e, w->ksid);
    if (s == NULL || s->end[E4_HERE] != E4_END_OPEN || s->sae[E4_HERE] == NULL ||
        strcmp(s->sae[E4_HERE], w->sae) != 0) {
        answer_get(k, w->conn, ETSI004_PEER_APP_NOT_CONNECTED, 0);
        return STEP_DONE;
    }
    bool peer_open = s->end[E4_THERE] == E4_END_OPEN;
    if (w->index == ETSI004_INDEX_NEXT && !w->answered && s->qos.metadata_mimetype[0] != '\0' &&
        w->metadata_size > 0 && w->metadata_size < metadata_bound()) {
        /* Checked before an index is chosen: a status 8 does not carry the
         * index, so a chunk chosen now would be lost to the caller. */
        answer_get(k, w->conn, ETSI004_METADATA_TOO_SMALL, metadata_bound());
        return STEP_DONE;
    }
    if (w->index == ETSI004_INDEX_NEXT && e->owner) {
        if (!peer_open) {
            if (now < w->deadline)
                return STEP_PARK;
            answer_get(k, w->conn, ETSI004_PEER_APP_NOT_CONNECTED, 0);
            return STEP_DONE;
        }
        if (s->next_index == ETSI004_INDEX_NEXT) {
            answer_get(k, w->conn, ETSI004_INSUFFICIENT_KEY, 0);
            return STEP_DONE;
        }
        struct e4_chunk *c = e4_allocate(k, s, s->next_index, false);
        if (c == NULL) {
            if (now < w->deadline)
                return STEP_PARK;
            answer_get(k, w->conn, ETSI004_INSUFFICIENT_KEY, 0);
            return STEP_DONE;
        }
        deliver(k, w, s, c);
        return STEP_DONE;
    }
    if (w->index == ETSI004_INDEX_NEXT) { /* non-owner: the owner picks */
        if (w->answered && w->owner_status != ETSI004_SUCCESS)
            return owner_refused(k, w, now);
        if (!w->answered) {
            if (!w->asked && !peer_open && now < w->deadline)
                return STEP_PARK; /* the owner's application may open */
            if (!w->asked && !peer_open) {
                answer_get(k, w->conn, ETSI004_PEER_APP_NOT_CONNECTED, 0);
                return STEP_DONE;
            }
            if (!w->asked && !e4_link_up(k)) {
                answer_get(k, w->conn, ETSI004_NO_QKD_CONNECTION, 0);
                return STEP_DONE;
            }
            if (!w->asked)
                e4_ask_owner(k, w);
            if (now < w->deadline)
                return STEP_PARK;
            answer_get(k, w->conn, ETSI004_TIMEOUT, 0);
            return STEP_DONE;
        }
        /* answered with an index: wait for that chunk below */
    }
    if (w->index == ETSI004_INDEX_NEXT) { /* cannot happen: answered without one */
        answer_get(k, w->conn, ETSI004_TIMEOUT, 0);
        return STEP_DONE;
    }
    if (e4_chunk_used(s, w->index)) {
        answer_get(k, w->conn, ETSI004_INSUFFICIENT_KEY, 0);
        return STEP_DONE;
    }
    struct e4_chunk *c = e4_chunk_find(s, w->index);
    if (c != NULL) {
        deliver(k, w, s, c);
        return STEP_DONE;
    }
    if (e->owner) {
        if (!peer_open) {
            if (now < w->deadline)
                return STEP_PARK;
            answer_get(k, w->conn, ETSI004_PEER_APP_NOT_CONNECTED, 0);
            return STEP_DONE;
        }
        c = e4_allocate(k, s, w->index, false);
        if (c == NULL) {
            if (now < w->deadline)
                return STEP_PARK;
            answer_get(k, w->conn, ETSI004_INSUFFICIENT_KEY, 0);
            return STEP_DONE;
        }
        deliver(k, w, s, c);
        return STEP_DONE;
    }
    /* Non-owner: the chunk is not here yet; the owner allocates it (or has,
     * and it is on its way). */
    if (w->answered && w->owner_status != ETSI004_SUCCESS)
        return owner_refused(k, w, now);
    if (!w->asked && !w->answered) {
        if (!e4_link_up(k)) {
            answer_get(k, w->conn, ETSI004_NO_QKD_CONNECTION, 0);
            return STEP_DONE;
        }
        e4_ask_owner(k, w);
    }
    if (now < w->deadline)
        return STEP_PARK;
    answer_get(k, w->conn, ETSI004_TIMEOUT, 0);
    return STEP_DONE;
}

/* ---- OPEN_CONNECT ------------------------------------------------------------- */

static bool uri_ok(const char *u)
{
    for (; *u != '\0'; u++)
        if ((unsigned char)*u < 0x20 || (unsigned char)*u > 0x7e)
            return false;
    return true;
}

/* The open is registered here for w's application: answer 0 when the
 * peer application has opened too, 1 when not (after waiting up to the
 * Timeout for a predefined KSID; at once for an assigned one: nobody else
 * knows it yet). */
static enum step open_registered(struct kme *k, struct e4_wait *w, struct e4_stream *s)
{
    w->deadline = w->t0 + s->qos.timeout; /* the stream's Timeout */
    if (s->end[E4_THERE] == E4_END_OPEN) {
        answer_open(k, w->conn, ETSI004_SUCCESS, &s->qos, s->ksid);
        return STEP_DONE;
    }
    if (!w->assigned && uv_now(k->loop) < w->deadline)
        return STEP_PARK;
    answer_open(k, w->conn, ETSI004_PEER_NOT_CONNECTED, &s->qos, s->ksid);
    return STEP_DONE;
}

static bool same_sae(const struct e4_stream *s, int end, const char *sae)
{
    return s->sae[end] != NULL && strcmp(s->sae[end], sae) == 0;
}

static enum step open_step_owner(struct kme *k, struct e4_wait *w)
{
    struct kme_e4 *e = k->e4;
    struct e4_stream *s = e4_stream_find(e, w->ksid);
    if (s == NULL) {
        struct etsi004_qos q;
        if (e4_qos_negotiate(&k->cfg.e4, k->cfg.rate_bps, &w->qos, &q) != 0) {
            uint8_t zero[ETSI004_KSID_LEN] = {0};
            answer_open(k, w->conn, ETSI004_QOS_NOT_MET, &q, w->assigned ? zero : w->ksid);
            return STEP_DONE;
        }
        if (e->count >= k->cfg.e4.max_streams || (s = e4_stream_add(e, w->ksid)) == NULL) {
            qlog_warn("kme %s: 004 stream refused: %zu streams (max_streams)",
                      k->cfg.kme_id, e->count);
            answer_open(k, w->conn, ETSI004_NO_QKD_CONNECTION, NULL, NULL);
            return STEP_DONE;
        }
        s->qos = q;
        s->registered = true;
        s->src = strdup(w->src);
        s->dst = strdup(w->dst);
        s->end[E4_HERE] = E4_END_OPEN;
        s->sae[E4_HERE] = strdup(w->sae);
        s->last_ms = e4_now();
        e4_stream_save(k, s);
        e4_stream_changed(k, s);
        qlog_info("kme %s: 004 stream %s registered by %s (%s)", k->cfg.kme_id, s->text,
                  w->sae, w->assigned ? "KSID assigned" : "predefined KSID");
        return open_registered(k, w, s);
    }
    if (s->end[E4_HERE] == E4_END_OPEN && same_sae(s, E4_HERE, w->sae) && !w->assigned)
        return open_registered(k, w, s);
    if (s->end[E4_HERE] == E4_END_NONE && !w->assigned) {
        s->end[E4_HERE] = E4_END_OPEN;
        s->sae[E4_HERE] = strdup(w->sae);
        s->last_ms = e4_now();
        e4_stream_save(k, s);
        e4_stream_changed(k, s);
        return open_registered(k, w, s);
    }
    answer_open(k, w->conn, ETSI004_KSID_IN_USE, NULL, NULL);
    return STEP_DONE;
}

static enum step open_step_peer(struct kme *k, struct e4_wait *w)
{
    struct e4_stream *s = e4_stream_find(k->e4, w->ksid);
    uint64_t now = uv_now(k->loop);
    if (s != NULL && s->registered && s->end[E4_HERE] == E4_END_OPEN &&
        same_sae(s, E4_HERE, w->sae)) {
        if (!w->answered && w->assigned) { /* a random KSID that exists here */
            answer_open(k, w->conn, ETSI004_KSID_IN_USE, NULL, NULL);
            return STEP_DONE;
        }
        return open_registered(k, w, s);
    }
    if (s != NULL && (s->end[E4_HERE] == E4_END_CLOSED ||
                      (s->end[E4_HERE] == E4_END_OPEN && !same_sae(s, E4_HERE, w->sae)))) {
        answer_open(k, w->conn, ETSI004_KSID_IN_USE, NULL, NULL);
        return STEP_DONE;
    }
    if (w->answered) {
        /* The owner refused (0 and 1 register the stream here, above). */
        uint32_t st = w->owner_status;
        if (st == ETSI004_SUCCESS || st == ETSI004_PEER_NOT_CONNECTED)
            st = ETSI004_NO_QKD_CONNECTION; /* registered but lost here */
        uint8_t zero[ETSI004_KSID_LEN] = {0};
        answer_open(k, w->conn, st, st == ETSI004_QOS_NOT_MET ? &w->qos : NULL,
                    w->assigned ? zero : w->ksid);
        return STEP_DONE;
    }
    if (!w->asked) {
        if (!e4_link_up(k)) {
            answer_open(k, w->conn, ETSI004_NO_QKD_CONNECTION, NULL, NULL);
            return STEP_DONE;
        }
        e4_ask_owner(k, w);
    }
    if (now < w->deadline)
        return STEP_PARK;
    answer_open(k, w->conn, ETSI004_TIMEOUT, NULL, NULL);
    return STEP_DONE;
}

/* ---- CLOSE ----------------------------------------------------------------------- */

static void do_close(struct kme *k, struct e4_conn *c, const char *sae, const uint8_t *ksid)
{
    struct e4_stream *s = e4_stream_find(k->e4, ksid);
    if (s == NULL || s->end[E4_HERE] == E4_END_NONE) {
        answer_close(k, c, ETSI004_PEER_APP_NOT_CONNECTED);
        return;
    }
    if (!same_sae(s, E4_HERE, sae)) {
        answer_close(k, c, ETSI004_KSID_IN_USE);
        return;
    }
    if (s->end[E4_HERE] == E4_END_OPEN) {
        /* This end's unused chunks are discarded now; the peer end keeps
         * its own until it closes or their TTL passes. */
        s->end[E4_HERE] = E4_END_CLOSED;
        s->last_ms = e4_now();
        for (size_t i = 0; i < s->chunk_buckets; i++) {
            for (struct e4_chunk *ch = s->chunks[i]; ch != NULL; ch = ch->next) {
                if (ch->key != NULL) {
                    OPENSSL_cleanse(ch->key, ch->len);
                    free(ch->key);
                    ch->key = NULL;
                }
            }
        }
        struct kme_batch *b = kme_batch(k);
        struct kme_op *op = b != NULL ? kme_batch_op(b, KME_OP_E4_CHUNK_TRIM) : NULL;
        if (op != NULL) {
            memcpy(op->key_id, s->text, sizeof(s->text));
            op->e4_index = (uint64_t)UINT32_MAX + 1; /* every row */
        }
        e4_stream_save(k, s);
        e4_stream_changed(k, s);
        qlog_info("kme %s: 004 stream %s closed by %s", k->cfg.kme_id, s->text, sae);
    }
    answer_close(k, c, ETSI004_SUCCESS);
}

/* ---- dispatch and waking ------------------------------------------------------- */

static enum step step(struct kme *k, struct e4_wait *w)
{
    if (w->service == ETSI004_GET_KEY_REQ)
        return get_step(k, w);
    return k->e4->owner ? open_step_owner(k, w) : open_step_peer(k, w);
}

/* Runs w once; parks it or frees it. */
static void run(struct kme *k, struct e4_wait *w, bool parked)
{
    struct kme_e4 *e = k->e4;
    if (step(k, w) == STEP_PARK) {
        if (!parked) {
            w->next = e->waits;
            e->waits = w;
            e->wait_count++;
            e4_conn_set_wait(w->conn, w);
        }
        return;
    }
    if (parked) {
        for (struct e4_wait **pp = &e->waits; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == w) {
                *pp = w->next;
                e->wait_count--;
                break;
            }
        }
    }
    e4_wait_free(w);
}

void e4_wake(struct kme *k, bool all)
{
    struct kme_e4 *e = k->e4;
    if (e == NULL)
        return;
    struct e4_wait **pp = &e->waits;
    while (*pp != NULL) {
        struct e4_wait *w = *pp;
        enum step st = STEP_DONE;
        if (w->conn == NULL) {
            st = STEP_DONE; /* its connection went: nobody to answer */
        } else if (all) {
            if (w->service == ETSI004_GET_KEY_REQ)
                answer_get(k, w->conn, ETSI004_NO_QKD_CONNECTION, 0);
            else
                answer_open(k, w->conn, ETSI004_NO_QKD_CONNECTION, NULL, NULL);
        } else {
            st = step(k, w);
        }
        if (st == STEP_PARK) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        e->wait_count--;
        if (w->conn != NULL)
            e4_conn_set_wait(w->conn, NULL);
        e4_wait_free(w);
    }
    kme_flush(k);
}

int e4_handle(struct kme *k, struct e4_conn *c, const char *sae, uint8_t service,
              const uint8_t *payload, size_t len)
{
    struct kme_e4 *e = k->e4;
    if (service == ETSI004_CLOSE_REQ) {
        uint8_t ksid[ETSI004_KSID_LEN];
        if (etsi004_close_req_decode(payload, len, ksid) < 0)
            return -1;
        do_close(k, c, sae, ksid);
        kme_flush(k);
        return 0;
    }
    struct e4_wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->conn = c;
    w->service = service;
    snprintf(w->sae, sizeof(w->sae), "%s", sae);
    uint64_t now = uv_now(k->loop);
    w->t0 = now;
    if (service == ETSI004_GET_KEY_REQ) {
        struct etsi004_get_req r;
        if (etsi004_get_req_decode(payload, len, &r) < 0) {
            e4_wait_free(w);
            return -1;
        }
        memcpy(w->ksid, r.ksid, ETSI004_KSID_LEN);
        w->index = r.index;
        w->metadata_size = r.metadata_size;
        struct e4_stream *s = e4_stream_find(e, r.ksid);
        w->deadline = now + (s != NULL ? s->qos.timeout : k->cfg.e4.timeout_default_ms);
    } else {
        struct etsi004_open_req r;
        if (etsi004_open_req_decode(payload, len, &r) < 0 || !uri_ok(r.source) ||
            !uri_ok(r.destination)) {
            e4_wait_free(w);
            return -1;
        }
        w->src = strdup(r.source);
        w->dst = strdup(r.destination);
        w->qos = r.qos;
        w->assigned = etsi004_ksid_is_null(r.ksid);
        if (w->assigned) {
            /* A fresh random KSID that no stream here has. */
            int tries = 0;
            do {
                if (etsi004_ksid_generate(w->ksid) < 0)
                    tries = 100;
            } while (++tries < 100 && e4_stream_find(e, w->ksid) != NULL);
            if (tries >= 100) {
                e4_wait_free(w);
                return -1;
            }
        } else {
            memcpy(w->ksid, r.ksid, ETSI004_KSID_LEN);
        }
        if (w->src == NULL || w->dst == NULL) {
            e4_wait_free(w);
            return -1;
        }
        /* Until the stream's QoS is known: the Timeout as negotiated here. */
        struct etsi004_qos q;
        e4_qos_negotiate(&k->cfg.e4, k->cfg.rate_bps, &r.qos, &q);
        w->deadline = now + q.timeout;
    }
    if (k->failed || k->stopping) {
        if (service == ETSI004_GET_KEY_REQ)
            answer_get(k, c, ETSI004_NO_QKD_CONNECTION, 0);
        else
            answer_open(k, c, ETSI004_NO_QKD_CONNECTION, NULL, NULL);
        e4_wait_free(w);
        return 0;
    }
    run(k, w, false);
    kme_flush(k);
    return 0;
}
