/* The three ETSI GS QKD 014 endpoints: routing, validation, and the key
 * operations on the KME's in-memory state. Every answer that changes key
 * state is sent only after the batch holding the change is committed. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

#define MSG_STORE_FAILURE "key store failure on the KME"

/* A response that waits for its commit. */
struct pending {
    struct http_conn *hc;
    char *body;
    size_t len;
    size_t keys;
    uint64_t bits;
};

static void pending_done(void *arg, int status)
{
    struct pending *p = arg;
    if (status == 0) {
        kme_http_log_keys(p->hc, p->keys, p->bits);
        kme_http_respond(p->hc, 200, p->body, p->len, true);
    } else {
        kme_http_error(p->hc, 503, MSG_STORE_FAILURE);
    }
    etsi014_free_secret(p->body, p->len);
    free(p);
}

/* Queues body as the response once the current batch is committed. */
static void respond_after_commit(struct kme *k, struct http_conn *hc,
                                 char *body, size_t len, size_t keys,
                                 uint64_t bits)
{
    struct pending *p = calloc(1, sizeof(*p));
    struct kme_batch *b = kme_batch(k);
    if (p == NULL || b == NULL || kme_batch_on_done(b, pending_done, p) < 0) {
        /* The state change is in the batch; without a completion the answer
         * cannot wait for it: refuse (the keys stay unreported). */
        free(p);
        etsi014_free_secret(body, len);
        kme_http_error(hc, 503, "out of memory");
        kme_flush(k);
        return;
    }
    p->hc = hc;
    p->body = body;
    p->len = len;
    p->keys = keys;
    p->bits = bits;
    kme_flush(k);
}

static void reply_error(struct http_conn *hc, int status, char *msg,
                        const char *fallback)
{
    kme_http_error(hc, status, msg != NULL ? msg : fallback);
    free(msg);
}

static bool caller_registered(const struct kme *k, const char *sae)
{
    if (k->cfg.sae_count == 0)
        return true;
    for (size_t i = 0; i < k->cfg.sae_count; i++) {
        if (strcmp(k->cfg.sae_ids[i], sae) == 0)
            return true;
    }
    return false;
}

static int pair_check(struct http_conn *hc, const char *master,
                      const char *slave)
{
    if (etsi014_id_blank(slave)) {
        kme_http_error(hc, 400, "slave_SAE_ID shall not be blank");
        return -1;
    }
    if (etsi014_id_blank(master)) {
        kme_http_error(hc, 400, "master_SAE_ID shall not be blank");
        return -1;
    }
    if (strcmp(master, slave) == 0) {
        kme_http_error(hc, 400, "slave_SAE_ID shall differ from master_SAE_ID");
        return -1;
    }
    return 0;
}

/* ---- status --------------------------------------------------------------- */

static void handle_status(struct kme *k, struct http_conn *hc,
                          const char *caller, const char *slave)
{
    if (pair_check(hc, caller, slave) < 0)
        return;
    struct etsi014_status st = {
        .source_kme_id = k->cfg.kme_id,
        .target_kme_id = k->cfg.peer_kme_id,
        .master_sae_id = (char *)caller,
        .slave_sae_id = (char *)slave,
        .key_size = k->cfg.key_size,
        .stored_key_count =
            (int64_t)(kme_out_available(k) * 8 / (uint64_t)k->cfg.key_size),
        .max_key_count = k->cfg.max_key_count,
        .max_key_per_request = k->cfg.max_key_per_request,
        .max_key_size = k->cfg.max_key_size,
        .min_key_size = k->cfg.min_key_size,
        .max_sae_id_count = k->cfg.max_sae_id_count,
    };
    size_t len;
    char *body = etsi014_status_encode(&st, &len);
    if (body == NULL) {
        kme_http_error(hc, 503, "out of memory");
        return;
    }
    kme_http_respond(hc, 200, body, len, false);
    free(body);
}

/* ---- enc_keys ------------------------------------------------------------- */

static char *slaves_json(const char *slave, const struct etsi014_key_request *r)
{
    json_t *a = json_array();
    int bad = a == NULL || json_array_append_new(a, json_string(slave)) < 0;
    for (size_t i = 0; !bad && i < r->additional_count; i++)
        bad = json_array_append_new(a, json_string(r->additional_slave_sae_ids[i])) < 0;
    char *text = bad ? NULL : json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

static void handle_enc_keys(struct kme *k, struct http_conn *hc,
                            const struct kme_request *req, bool get,
                            const char *query, size_t query_len,
                            const char *caller, const char *slave)
{
    struct etsi014_key_request kr;
    char *msg = NULL;
    int ret = get ? etsi014_key_request_from_query(query, query_len, &kr, &msg)
                  : etsi014_key_request_decode(req->body, req->body_len, &kr, &msg);
    if (ret < 0) {
        reply_error(hc, ret == ETSI014_ENOMEM ? 503 : 400, msg,
                    "invalid key request");
        return;
    }
    struct etsi014_limits lim = {
        .key_size = k->cfg.key_size,
        .min_key_size = k->cfg.min_key_size,
        .max_key_size = k->cfg.max_key_size,
        .max_key_per_request = k->cfg.max_key_per_request,
        .max_sae_id_count = k->cfg.max_sae_id_count,
        .multiple_of_8_only = true,
    };
    int64_t number, size;
    ret = etsi014_key_request_validate(&kr, &lim, caller, slave, &number,
                                       &size, &msg);
    if (ret < 0) {
        etsi014_key_request_clear(&kr);
        reply_error(hc, 400, msg, "invalid key request");
        return;
    }
    size_t key_len = (size_t)size / 8;
    uint64_t need = (uint64_t)number * key_len;
    uint64_t have = kme_out_available(k);
    if (need > have) {
        etsi014_key_request_clear(&kr);
        char text[160];
        snprintf(text, sizeof(text),
                 "not enough key material: %" PRIu64 " bits requested, %"
                 PRIu64 " available", need * 8, have * 8);
        kme_http_error(hc, 503, text);
        return;
    }
    char *slaves = slaves_json(slave, &kr);
    etsi014_key_request_clear(&kr);
    size_t n = (size_t)number;
    struct etsi014_key_container kc = {0};
    struct kme_batch *b = kme_batch(k);
    struct kme_reservation *rs = calloc(n, sizeof(*rs));
    char **op_strs = calloc(2 * n, sizeof(char *));
    /* Allocate everything first so that the draw cannot fail half-way. */
    bool ok = slaves != NULL && b != NULL && rs != NULL && op_strs != NULL &&
              etsi014_key_container_alloc(&kc, n) == 0 &&
              kme_batch_reserve(b, n) == 0 &&
              kme_outbox_reserve(&k->outbox, n) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        kc.keys[i].key = malloc(key_len);
        kc.keys[i].key_len = key_len;
        rs[i].master = strdup(caller);
        rs[i].slaves_json = strdup(slaves);
        op_strs[2 * i] = strdup(caller);
        op_strs[2 * i + 1] = strdup(slaves);
        ok = kc.keys[i].key != NULL && rs[i].master != NULL &&
             rs[i].slaves_json != NULL && op_strs[2 * i] != NULL &&
             op_strs[2 * i + 1] != NULL &&
             etsi014_uuid_generate(kc.keys[i].key_id) == 0;
    }
    if (!ok) {
        for (size_t i = 0; i < n && rs != NULL && op_strs != NULL; i++) {
            free(rs[i].master);
            free(rs[i].slaves_json);
            free(op_strs[2 * i]);
            free(op_strs[2 * i + 1]);
        }
        free(rs);
        free(op_strs);
        free(slaves);
        etsi014_key_container_clear(&kc);
        kme_http_error(hc, 503, "out of memory");
        return;
    }
    /* The draw: exactly size bits per key, consecutive in the stream. */
    for (size_t i = 0; i < n; i++) {
        struct kme_reservation *r = &rs[i];
        r->off = k->out.head;
        r->len = (uint32_t)key_len;
        memcpy(r->key_id, kc.keys[i].key_id, sizeof(r->key_id));
        kme_stream_take(&k->out, key_len, kc.keys[i].key);
        struct kme_op *op = kme_batch_op(b, KME_OP_OUTBOX_ADD);
        op->off = r->off;
        op->len = r->len;
        memcpy(op->key_id, r->key_id, sizeof(r->key_id));
        op->master = op_strs[2 * i];
        op->slaves_json = op_strs[2 * i + 1];
        kme_outbox_push(&k->outbox, r);
    }
    free(rs);
    free(op_strs);
    free(slaves);
    size_t len = 0;
    char *body = etsi014_key_container_encode(&kc, &len);
    size_t count = kc.count;
    etsi014_key_container_clear(&kc);
    if (body == NULL) {
        /* Drawn and recorded but cannot be answered: the keys are lost to
         * the master (never delivered twice). */
        kme_http_error(hc, 503, "out of memory");
        kme_flush(k);
        return;
    }
    respond_after_commit(k, hc, body, len, count, (uint64_t)count * key_len * 8);
}

/* ---- dec_keys ------------------------------------------------------------- */

enum { DEC_OK, DEC_MISSING, DEC_UNAUTHORIZED };

/* 401 when any key exists but was not given to the caller (clause 5.4);
 * else "missing" when any key is unknown, expired or of another master. */
static int dec_check(struct kme *k, const char *caller, const char *master,
                     const struct etsi014_key_ids *ids)
{
    uint64_t now = kme_now_ms();
    bool unauthorized = false, missing = false;
    for (size_t i = 0; i < ids->count; i++) {
        struct kme_held *h = kme_held_find(&k->held, ids->key_ids[i]);
        int d;
        if (h == NULL || (h->expires_ms != 0 && h->expires_ms <= now))
            missing = true;
        else if (kme_held_slave_index(h, caller) >= 0)
            missing = missing || strcmp(h->master, master) != 0;
        else if ((d = kme_held_delivered_index(h, caller)) >= 0)
            /* collected already: again only within the redelivery grace */
            missing = missing || strcmp(h->master, master) != 0 ||
                      h->delivered_ms[d] + k->cfg.redeliver_ms <= now;
        else
            unauthorized = true;
    }
    return unauthorized ? DEC_UNAUTHORIZED : missing ? DEC_MISSING : DEC_OK;
}

/* dec_keys requests waiting for their keys to arrive over the link (the
 * handover race: the master SAE may pass key IDs on before its KME's
 * reservation reached this KME). Answered as soon as every key is here, or
 * with the spec's 400 after dec_keys_wait. */
struct kme_parked {
    struct kme_parked *next;
    struct http_conn *hc;
    char *caller, *master;
    struct etsi014_key_ids ids;
    uint64_t deadline;         /* uv_now() */
};

#define MAX_PARKED 4096

static void dec_finish(struct kme *k, struct http_conn *hc, const char *caller,
                       const char *master, struct etsi014_key_ids *idsp);

static int park(struct kme *k, struct http_conn *hc, const char *caller,
                const char *master, struct etsi014_key_ids *ids)
{
    struct kme_parked *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    p->caller = strdup(caller);
    p->master = strdup(master);
    if (p->caller == NULL || p->master == NULL) {
        free(p->caller);
        free(p->master);
        free(p);
        return -1;
    }
    p->hc = hc;
    p->ids = *ids;
    memset(ids, 0, sizeof(*ids));
    p->deadline = uv_now(k->loop) + k->cfg.dec_wait_ms;
    p->next = k->parked;
    k->parked = p;
    k->parked_count++;
    return 0;
}

void kme_api_wake(struct kme *k, bool all)
{
    uint64_t now = uv_now(k->loop);
    struct kme_parked **pp = &k->parked;
    while (*pp != NULL) {
        struct kme_parked *p = *pp;
        if (!all && now < p->deadline &&
            dec_check(k, p->caller, p->master, &p->ids) == DEC_MISSING) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        k->parked_count--;
        dec_finish(k, p->hc, p->caller, p->master, &p->ids);
        free(p->caller);
        free(p->master);
        free(p);
    }
}

static void handle_dec_keys(struct kme *k, struct http_conn *hc,
                            const struct kme_request *req, bool get,
                            const char *query, size_t query_len,
                            const char *caller, const char *master)
{
    if (pair_check(hc, master, caller) < 0)
        return;
    struct etsi014_key_ids ids;
    char *msg = NULL;
    int ret = get ? etsi014_key_ids_from_query(query, query_len, &ids, &msg)
                  : etsi014_key_ids_decode(req->body, req->body_len, &ids,
                                           (size_t)k->cfg.max_key_per_request,
                                           &msg);
    if (ret < 0) {
        reply_error(hc, ret == ETSI014_ENOMEM ? 503 : 400, msg,
                    "invalid key IDs");
        return;
    }
    int c = dec_check(k, caller, master, &ids);
    if (c == DEC_MISSING && k->cfg.dec_wait_ms > 0 && !k->stopping &&
        k->parked_count < MAX_PARKED && park(k, hc, caller, master, &ids) == 0)
        return; /* answered when the keys arrive or the wait ends */
    dec_finish(k, hc, caller, master, &ids);
}

/* Answers a dec_keys request whose key IDs are decoded (ids is cleared). */
static void dec_finish(struct kme *k, struct http_conn *hc, const char *caller,
                       const char *master, struct etsi014_key_ids *idsp)
{
    struct etsi014_key_ids ids = *idsp;
    memset(idsp, 0, sizeof(*idsp));
    int c = dec_check(k, caller, master, &ids);
    if (c != DEC_OK || k->stopping) {
        etsi014_key_ids_clear(&ids);
        if (k->stopping)
            kme_http_error(hc, 503, "the KME is shutting down");
        else if (c == DEC_UNAUTHORIZED)
            kme_http_error(hc, 401, "the calling SAE was not given one or "
                                    "more of the keys requested");
        else
            kme_http_error(hc, 400, ETSI014_MSG_KEYS_NOT_FOUND);
        return;
    }
    struct etsi014_key_container kc = {0};
    struct kme_batch *b = kme_batch(k);
    char **slave_strs = calloc(ids.count, sizeof(char *));
    bool ok = b != NULL && slave_strs != NULL &&
              kme_batch_reserve(b, ids.count) == 0 &&
              etsi014_key_container_alloc(&kc, ids.count) == 0;
    for (size_t i = 0; ok && i < ids.count; i++) {
        struct kme_held *h = kme_held_find(&k->held, ids.key_ids[i]);
        kc.keys[i].key = malloc(h->key_len > 0 ? h->key_len : 1);
        slave_strs[i] = strdup(caller);
        ok = kc.keys[i].key != NULL && slave_strs[i] != NULL;
    }
    if (!ok) {
        for (size_t i = 0; slave_strs != NULL && i < ids.count; i++)
            free(slave_strs[i]);
        free(slave_strs);
        etsi014_key_container_clear(&kc);
        etsi014_key_ids_clear(&ids);
        kme_http_error(hc, 503, "out of memory");
        return;
    }
    uint64_t bits = 0;
    for (size_t i = 0; i < ids.count; i++) {
        struct kme_held *h = kme_held_find(&k->held, ids.key_ids[i]);
        memcpy(kc.keys[i].key_id, h->key_id, sizeof(kc.keys[i].key_id));
        memcpy(kc.keys[i].key, h->key, h->key_len);
        kc.keys[i].key_len = h->key_len;
        bits += (uint64_t)h->key_len * 8;
        int si = kme_held_slave_index(h, caller);
        if (k->cfg.redeliver_ms > 0 &&
            (si < 0 || kme_held_deliver(h, (size_t)si, kme_now_ms()) == 0)) {
            /* Kept (in memory and in the store) for the grace: a reader
             * that dies before it stored the keys can collect them again.
             * The sweep deletes it when the grace ends. */
            free(slave_strs[i]);
            continue;
        }
        if (kme_batch_cancel_held_add(b, h->off, caller)) {
            free(slave_strs[i]); /* never written: nothing to delete */
        } else {
            struct kme_op *op = kme_batch_op(b, KME_OP_HELD_DEL);
            memcpy(op->key_id, h->key_id, sizeof(op->key_id));
            op->off = h->off;
            op->slave = slave_strs[i];
        }
        kme_held_collect(&k->held, h, (size_t)kme_held_slave_index(h, caller));
    }
    free(slave_strs);
    etsi014_key_ids_clear(&ids);
    size_t len = 0;
    char *body = etsi014_key_container_encode(&kc, &len);
    size_t count = kc.count;
    etsi014_key_container_clear(&kc);
    if (body == NULL) {
        kme_http_error(hc, 503, "out of memory");
        kme_flush(k);
        return;
    }
    respond_after_commit(k, hc, body, len, count, bits);
}

/* ---- routing -------------------------------------------------------------- */

void kme_api_handle(struct kme *k, struct http_conn *hc,
                    const struct kme_request *req)
{
    enum etsi014_endpoint ep;
    char *sae = NULL;
    const char *query;
    size_t query_len;
    if (etsi014_path_parse(req->target, req->target_len, &ep, &sae, &query,
                           &query_len) < 0) {
        kme_http_error(hc, 404, "not found: the ETSI GS QKD 014 endpoints are "
                                "/api/v1/keys/{SAE_ID}/status, enc_keys, "
                                "dec_keys");
        return;
    }
    bool get = strcmp(req->method, "GET") == 0;
    bool post = strcmp(req->method, "POST") == 0;
    if (!get && !(post && ep != ETSI014_EP_STATUS)) {
        free(sae);
        kme_http_error(hc, 405, ep == ETSI014_EP_STATUS
                                    ? "method not allowed: status takes GET"
                                    : "method not allowed: use GET or POST");
        return;
    }
    if (!caller_registered(k, req->sae_id)) {
        free(sae);
        kme_http_error(hc, 401, "the calling SAE is not registered at this KME");
        return;
    }
    if (k->failed || k->stopping) {
        free(sae);
        kme_http_error(hc, 503, k->failed ? MSG_STORE_FAILURE
                                          : "the KME is shutting down");
        return;
    }
    switch (ep) {
    case ETSI014_EP_STATUS:
        handle_status(k, hc, req->sae_id, sae);
        break;
    case ETSI014_EP_ENC_KEYS:
        handle_enc_keys(k, hc, req, get, query, query_len, req->sae_id, sae);
        break;
    case ETSI014_EP_DEC_KEYS:
        handle_dec_keys(k, hc, req, get, query, query_len, req->sae_id, sae);
        break;
    }
    free(sae);
}
