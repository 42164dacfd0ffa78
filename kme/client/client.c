/* The public KME client: operations (status, enc by bits or by count, dec
 * by key IDs) built from HTTP exchanges on the pool, the per-SAE limits
 * cache, and the result assembly.
 *
 * An operation (struct op) goes LIMITS -> CALLS -> (done). In LIMITS it
 * waits for a status call when the limits for its SAE are not cached; in
 * CALLS its sub-requests (struct sub, one enc_keys or dec_keys exchange
 * each) run concurrently on the pool; a dec sub whose keys are not (yet)
 * found sleeps in backoff and tries again until the deadline. The first
 * failure cancels the remaining subs and reports; the user's callback is
 * called exactly once, then the op is freed. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

#define DEFAULT_MAX_CONNECTIONS 4
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_REQUEST_TIMEOUT_MS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_STATUS_TTL_MS 60000
#define DEFAULT_RETRY_INITIAL_MS 50
#define DEFAULT_RETRY_MAX_MS 1000
#define DEFAULT_DEC_DEADLINE_MS 10000
#define DEFAULT_MAX_RESPONSE (8u << 20)
/* dec_keys batch when the KME will not tell its limits for the pair */
#define DEC_FALLBACK_BATCH 128
#define LIMITS_CACHE_MAX 1024
#define MAX_DEC_IDS 1000000
#define MAX_ENC_NUMBER 1000000

enum op_state { OP_LIMITS, OP_CALLS };

static const char *const op_state_names[] = {
    [OP_LIMITS] = "limits",
    [OP_CALLS] = "calls",
};

struct op;

struct sub {
    struct op *op;
    struct kme_http_req *req;   /* exchange in flight, or NULL */
    kme_timer *retry;           /* dec: backoff before the next attempt */
    uint64_t number;            /* keys asked for */
    uint64_t size_bits;         /* enc: size of each key */
    size_t first;               /* dec: index of the first key ID */
    uint64_t backoff_ms;
    unsigned attempts;
    struct etsi014_key_container kc; /* the answer, until assembly */
    bool done;
};

struct limits_entry {
    char *sae_id;
    struct etsi014_limits lim;
    uint64_t fetched_ms;
    struct limits_entry *next;
};

/* One status call shared by every op waiting for the same SAE's limits (a
 * burst of messages to one recipient costs one status round trip). */
struct fetch {
    kme_client *client;
    char *sae_id;
    struct kme_http_req *req; /* NULL once the answer is being handed out */
    struct op *waiters;
    struct fetch *prev, *next;
};

struct op {
    kme_client *client;
    enum kme_op_kind kind;
    enum op_state state;
    char *sae_id;
    void *arg;
    kme_keys_cb keys_cb;
    kme_status_cb status_cb;
    /* enc */
    bool by_bits;
    uint64_t total_bits;
    uint64_t number, size_bits;
    /* dec */
    char (*ids)[KME_KEY_ID_SIZE];
    size_t nids;
    uint64_t deadline_ms;
    uint64_t started_ms;

    struct kme_http_req *status_req; /* the status op's own call */
    struct fetch *fetch;             /* LIMITS: the lookup it waits for */
    struct op *wprev, *wnext;        /* links in fetch->waiters */
    struct sub *subs;
    size_t nsubs;
    size_t next_send;                /* subs[next_send..] not sent yet */
    size_t remaining;                /* subs not done yet */
    struct op *prev, *next;
};

struct kme_client {
    uv_loop_t *loop;
    struct kme_client_config cfg;   /* defaults applied; strings copied */
    struct kme_url url;
    net_tls *tls;
    kme_pool *pool;
    struct op *ops;
    struct fetch *fetches;
    struct limits_entry *limits;
    size_t nlimits;
    uint64_t retries;
    bool *gone; /* set when the client is freed inside a user callback */
};

/* ---- limits cache ------------------------------------------------------- */

static struct limits_entry *limits_find(kme_client *cl, const char *sae_id, bool fresh_only)
{
    uint64_t now = uv_now(cl->loop);
    for (struct limits_entry *e = cl->limits; e != NULL; e = e->next) {
        if (strcmp(e->sae_id, sae_id) != 0)
            continue;
        if (fresh_only && now - e->fetched_ms >= cl->cfg.status_ttl_ms)
            return NULL;
        return e;
    }
    return NULL;
}

static void limits_store(kme_client *cl, const char *sae_id, const struct etsi014_status *st)
{
    struct limits_entry *e = limits_find(cl, sae_id, false);
    if (e == NULL) {
        if (cl->nlimits >= LIMITS_CACHE_MAX) {
            /* drop the last (oldest inserted) entry */
            struct limits_entry **pp = &cl->limits;
            while ((*pp)->next != NULL)
                pp = &(*pp)->next;
            free((*pp)->sae_id);
            free(*pp);
            *pp = NULL;
            cl->nlimits--;
        }
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return;
        e->sae_id = strdup(sae_id);
        if (e->sae_id == NULL) {
            free(e);
            return;
        }
        e->next = cl->limits;
        cl->limits = e;
        cl->nlimits++;
    }
    e->lim = (struct etsi014_limits){
        .key_size = st->key_size,
        .min_key_size = st->min_key_size,
        .max_key_size = st->max_key_size,
        .max_key_per_request = st->max_key_per_request,
        .max_sae_id_count = st->max_sae_id_count,
    };
    e->fetched_ms = uv_now(cl->loop);
}

/* ---- ops: lifetime and reporting --------------------------------------- */

static void op_unlink(struct op *op)
{
    kme_client *cl = op->client;
    if (op->prev)
        op->prev->next = op->next;
    else if (cl->ops == op)
        cl->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

/* Stops everything the op still has running (no callbacks). */
static void fetch_free(struct fetch *f);

static void op_stop(struct op *op)
{
    kme_client *cl = op->client;
    struct fetch *f = op->fetch;
    if (f != NULL) {
        if (op->wprev)
            op->wprev->wnext = op->wnext;
        else
            f->waiters = op->wnext;
        if (op->wnext)
            op->wnext->wprev = op->wprev;
        op->wprev = op->wnext = NULL;
        op->fetch = NULL;
        /* nobody waits any more: drop the call (unless it is answering) */
        if (f->waiters == NULL && f->req != NULL)
            fetch_free(f);
    }
    if (op->status_req != NULL) {
        kme_pool_cancel(cl->pool, op->status_req);
        op->status_req = NULL;
    }
    for (size_t i = 0; i < op->nsubs; i++) {
        struct sub *s = &op->subs[i];
        if (s->req != NULL) {
            kme_pool_cancel(cl->pool, s->req);
            s->req = NULL;
        }
        kme_timer_free(&s->retry);
    }
}

static void op_free(struct op *op)
{
    for (size_t i = 0; i < op->nsubs; i++) {
        kme_timer_free(&op->subs[i].retry);
        etsi014_key_container_clear(&op->subs[i].kc);
    }
    free(op->subs);
    free(op->ids);
    free(op->sae_id);
    free(op);
}

/* Calls the user's callback once and frees the op (already stopped and
 * unlinked). Returns true when the callback freed the client. */
static bool op_report(struct op *op, int error, int http_status, const char *message,
                      struct kme_keys *keys, const struct kme_status *status)
{
    kme_client *cl = op->client;
    struct kme_result res = {
        .error = error,
        .http_status = http_status,
        .message = message != NULL ? message : kme_client_strerror(error),
    };
    kme_keys_cb kcb = op->keys_cb;
    kme_status_cb scb = op->status_cb;
    void *arg = op->arg;
    op_free(op);
    bool gone = false;
    bool *outer = NULL;
    if (cl != NULL) {
        outer = cl->gone;
        cl->gone = &gone;
    }
    if (scb != NULL)
        scb(&res, status, arg);
    else
        kcb(&res, keys, arg);
    if (gone) {
        if (outer != NULL)
            *outer = true;
        return true;
    }
    if (cl != NULL)
        cl->gone = outer;
    return false;
}

static bool op_fail(struct op *op, int error, int http_status, const char *message)
{
    op_stop(op);
    op_unlink(op);
    return op_report(op, error, http_status, message, NULL, NULL);
}

/* ---- result assembly ---------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static struct kme_keys *keys_alloc(size_t count, size_t total)
{
    struct kme_keys *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->keys = calloc(count ? count : 1, sizeof(*k->keys));
    k->material = malloc(total ? total : 1);
    if (k->keys == NULL || k->material == NULL) {
        free(k->keys);
        free(k->material);
        free(k);
        return NULL;
    }
    k->count = count;
    k->total_len = total;
    return k;
}

static void keys_set(struct kme_keys *k, size_t i, size_t *off, const struct etsi014_key *src)
{
    memcpy(k->keys[i].key_id, src->key_id, KME_KEY_ID_SIZE);
    memcpy(k->material + *off, src->key, src->key_len);
    k->keys[i].bytes = k->material + *off;
    k->keys[i].len = src->key_len;
    *off += src->key_len;
}

/* enc: keys in plan order; IDs must be distinct across all calls. */
static int assemble_enc(struct op *op, struct kme_keys **keys_r, const char **why_r)
{
    size_t count = 0, total = 0;
    for (size_t i = 0; i < op->nsubs; i++) {
        count += op->subs[i].kc.count;
        for (size_t j = 0; j < op->subs[i].kc.count; j++)
            total += op->subs[i].kc.keys[j].key_len;
    }
    struct kme_keys *k = keys_alloc(count, total);
    const char **ids = calloc(count ? count : 1, sizeof(*ids));
    if (k == NULL || ids == NULL) {
        free(ids);
        kme_keys_free(&k);
        *why_r = "out of memory";
        return KME_ENOMEM;
    }
    size_t n = 0, off = 0;
    for (size_t i = 0; i < op->nsubs; i++)
        for (size_t j = 0; j < op->subs[i].kc.count; j++) {
            keys_set(k, n, &off, &op->subs[i].kc.keys[j]);
            ids[n] = k->keys[n].key_id;
            n++;
        }
    qsort(ids, count, sizeof(*ids), cmp_id);
    for (size_t i = 1; i < count; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0) {
            free(ids);
            kme_keys_free(&k);
            *why_r = "the KME returned the same key_ID twice";
            return KME_EBADRESPONSE;
        }
    free(ids);
    *keys_r = k;
    return 0;
}

/* dec: keys in the order of the IDs asked for. Each sub's container was
 * checked to hold exactly its IDs. */
static int assemble_dec(struct op *op, struct kme_keys **keys_r, const char **why_r)
{
    size_t total = 0;
    for (size_t i = 0; i < op->nsubs; i++)
        for (size_t j = 0; j < op->subs[i].kc.count; j++)
            total += op->subs[i].kc.keys[j].key_len;
    struct kme_keys *k = keys_alloc(op->nids, total);
    if (k == NULL) {
        *why_r = "out of memory";
        return KME_ENOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < op->nsubs; i++) {
        struct sub *s = &op->subs[i];
        for (size_t x = 0; x < s->number; x++) {
            const char *want = op->ids[s->first + x];
            for (size_t j = 0; j < s->kc.count; j++)
                if (strcmp(s->kc.keys[j].key_id, want) == 0) {
                    keys_set(k, s->first + x, &off, &s->kc.keys[j]);
                    break;
                }
        }
    }
    *keys_r = k;
    return 0;
}

static void op_all_done(struct op *op)
{
    struct kme_keys *keys = NULL;
    const char *why = NULL;
    int rc = op->kind == KME_OP_ENC ? assemble_enc(op, &keys, &why)
                                    : assemble_dec(op, &keys, &why);
    op_unlink(op);
    op_report(op, rc, 200, rc == 0 ? "ok" : why, keys, NULL);
}

/* ---- sub-requests ------------------------------------------------------- */

static void sub_done(int error, int status, const char *body, size_t len,
                     const char *detail, void *arg);

static int sub_send(struct sub *s)
{
    struct op *op = s->op;
    kme_client *cl = op->client;
    char *path = NULL, *json = NULL;
    size_t json_len = 0;
    if (op->kind == KME_OP_ENC) {
        struct etsi014_key_request kr = {
            .has_number = true,
            .number = (int64_t)s->number,
            .has_size = true,
            .size = (int64_t)s->size_bits,
        };
        path = etsi014_path(ETSI014_EP_ENC_KEYS, op->sae_id, NULL);
        json = etsi014_key_request_encode(&kr, &json_len);
    } else {
        struct etsi014_key_ids ids = {0};
        if (etsi014_key_ids_alloc(&ids, s->number) == 0) {
            for (size_t i = 0; i < s->number; i++)
                memcpy(ids.key_ids[i], op->ids[s->first + i], KME_KEY_ID_SIZE);
            json = etsi014_key_ids_encode(&ids, &json_len);
        }
        etsi014_key_ids_clear(&ids);
        path = etsi014_path(ETSI014_EP_DEC_KEYS, op->sae_id, NULL);
    }
    if (path != NULL && json != NULL)
        s->req = kme_pool_submit(cl->pool, "POST", path, json, json_len, sub_done, s);
    free(path);
    free(json);
    if (s->req == NULL)
        return KME_ENOMEM;
    s->attempts++;
    return 0;
}

static void sub_retry_cb(void *arg)
{
    struct sub *s = arg;
    kme_timer_free(&s->retry);
    if (sub_send(s) < 0)
        op_fail(s->op, KME_ENOMEM, 0, "out of memory");
}

/* dec: "not found" from the KME. Sleeps and retries while time is left. */
static bool sub_backoff(struct sub *s)
{
    struct op *op = s->op;
    kme_client *cl = op->client;
    uint64_t now = uv_now(cl->loop);
    if (now >= op->deadline_ms)
        return false;
    uint64_t wait = s->backoff_ms;
    if (wait > op->deadline_ms - now)
        wait = op->deadline_ms - now;
    s->backoff_ms = s->backoff_ms * 2 > cl->cfg.retry_max_ms ? cl->cfg.retry_max_ms
                                                               : s->backoff_ms * 2;
    s->retry = kme_timer_start(cl->loop, wait, sub_retry_cb, s);
    if (s->retry == NULL)
        return false;
    cl->retries++;
    return true;
}

/* Checks an enc or dec answer against what the sub asked for. */
static int sub_check(struct sub *s, const char **why_r)
{
    struct op *op = s->op;
    if (s->kc.count != s->number) {
        *why_r = "the KME returned a different number of keys than asked for";
        return KME_EBADRESPONSE;
    }
    if (op->kind == KME_OP_ENC) {
        for (size_t j = 0; j < s->kc.count; j++)
            if ((uint64_t)s->kc.keys[j].key_len * 8 != s->size_bits) {
                *why_r = "the KME returned a key of another size than asked for";
                return KME_EBADRESPONSE;
            }
        return 0;
    }
    for (size_t x = 0; x < s->number; x++) {
        bool found = false;
        for (size_t j = 0; j < s->kc.count && !found; j++)
            found = strcmp(s->kc.keys[j].key_id, op->ids[s->first + x]) == 0;
        if (!found) {
            *why_r = "the KME returned keys other than those asked for";
            return KME_EBADRESPONSE;
        }
    }
    for (size_t j = 0; j < s->kc.count; j++)
        if (s->kc.keys[j].key_len == 0) {
            *why_r = "the KME returned an empty key";
            return KME_EBADRESPONSE;
        }
    return 0;
}

static void sub_done(int error, int status, const char *body, size_t len,
                     const char *detail, void *arg)
{
    struct sub *s = arg;
    struct op *op = s->op;
    s->req = NULL;
    if (error != 0) {
        op_fail(op, error, status, detail);
        return;
    }
    if (status < 200 || status > 299) {
        char *msg = NULL;
        int code = kme_map_http_error(op->kind, status, body, len, &msg);
        if (code == KME_ENOTFOUND && op->kind == KME_OP_DEC && sub_backoff(s)) {
            free(msg);
            return;
        }
        /* the text stays the same for the same facts (the reading side
         * shows it in a notice that must not change between reads): no
         * attempt counts or elapsed time in it */
        op_fail(op, code, status, msg);
        free(msg);
        return;
    }
    char *err = NULL;
    int rc = etsi014_key_container_decode(body, len, &s->kc, &err);
    if (rc < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "invalid key container: %s", err ? err : "");
        free(err);
        op_fail(op, rc == ETSI014_ENOMEM ? KME_ENOMEM : KME_EBADRESPONSE, status, msg);
        return;
    }
    const char *why = NULL;
    rc = sub_check(s, &why);
    if (rc < 0) {
        op_fail(op, rc, status, why);
        return;
    }
    s->done = true;
    if (--op->remaining == 0) {
        op_all_done(op);
        return;
    }
    if (op->next_send < op->nsubs && sub_send(&op->subs[op->next_send++]) < 0)
        op_fail(op, KME_ENOMEM, 0, "out of memory");
}

/* ---- starting the calls once the limits are known ---------------------- */

static int op_plan_enc(struct op *op, const struct etsi014_limits *lim)
{
    struct kme_split_limits sl = {
        .min_key_size = lim->min_key_size > 0 ? (uint64_t)lim->min_key_size : 0,
        .max_key_size = lim->max_key_size > 0 ? (uint64_t)lim->max_key_size : 0,
        .max_key_per_request =
            lim->max_key_per_request > 0 ? (uint64_t)lim->max_key_per_request : 0,
    };
    struct kme_split_plan plan;
    if (op->by_bits) {
        int rc = kme_split(&sl, op->total_bits, &plan);
        if (rc < 0)
            return rc;
    } else {
        uint64_t size = op->size_bits ? op->size_bits
                                      : (lim->key_size > 0 ? (uint64_t)lim->key_size : 0);
        if (size == 0 || sl.max_key_per_request == 0)
            return KME_ELIMITS;
        if (lim->max_key_size > 0 && size > sl.max_key_size)
            return KME_ELIMITS;
        if (size < sl.min_key_size || size % 8 != 0)
            return KME_ELIMITS;
        plan = (struct kme_split_plan){.ngroups = 1, .keys = op->number};
        plan.groups[0].count = op->number;
        plan.groups[0].size_bits = size;
        plan.calls = op->number / sl.max_key_per_request +
                     (op->number % sl.max_key_per_request != 0);
    }
    op->subs = calloc(plan.calls, sizeof(*op->subs));
    if (op->subs == NULL)
        return KME_ENOMEM;
    for (size_t g = 0; g < plan.ngroups; g++) {
        uint64_t left = plan.groups[g].count;
        while (left > 0) {
            struct sub *s = &op->subs[op->nsubs++];
            s->op = op;
            s->number = left < sl.max_key_per_request ? left : sl.max_key_per_request;
            s->size_bits = plan.groups[g].size_bits;
            left -= s->number;
        }
    }
    return 0;
}

static int op_plan_dec(struct op *op, uint64_t batch)
{
    if (batch == 0)
        batch = DEC_FALLBACK_BATCH;
    size_t calls = op->nids / batch + (op->nids % batch != 0);
    op->subs = calloc(calls, sizeof(*op->subs));
    if (op->subs == NULL)
        return KME_ENOMEM;
    for (size_t first = 0; first < op->nids; first += batch) {
        struct sub *s = &op->subs[op->nsubs++];
        s->op = op;
        s->first = first;
        s->number = op->nids - first < batch ? op->nids - first : batch;
        s->backoff_ms = op->client->cfg.retry_initial_ms;
    }
    return 0;
}

/* Plans and sends every sub. lim NULL (dec only): limits unknown. */
static int op_start_calls(struct op *op, const struct etsi014_limits *lim)
{
    int rc;
    op->state = OP_CALLS;
    (void)op_state_names;
    if (op->kind == KME_OP_ENC)
        rc = op_plan_enc(op, lim);
    else
        rc = op_plan_dec(op, lim != NULL && lim->max_key_per_request > 0
                                 ? (uint64_t)lim->max_key_per_request
                                 : 0);
    if (rc < 0)
        return rc;
    op->remaining = op->nsubs;
    /* At most one connection's worth of calls per op in flight: a huge
     * request neither floods the queue (whose wait counts against the
     * request timeout) nor starves the other ops. */
    size_t window = op->client->cfg.max_connections;
    while (op->next_send < op->nsubs && op->next_send < window) {
        rc = sub_send(&op->subs[op->next_send++]);
        if (rc < 0) {
            op_stop(op);
            return rc;
        }
    }
    return 0;
}

static void status_to_public(const struct etsi014_status *st, struct kme_status *out)
{
    *out = (struct kme_status){
        .source_kme_id = st->source_kme_id,
        .target_kme_id = st->target_kme_id,
        .master_sae_id = st->master_sae_id,
        .slave_sae_id = st->slave_sae_id,
        .key_size = st->key_size,
        .stored_key_count = st->stored_key_count,
        .max_key_count = st->max_key_count,
        .max_key_per_request = st->max_key_per_request,
        .max_key_size = st->max_key_size,
        .min_key_size = st->min_key_size,
        .max_sae_id_count = st->max_sae_id_count,
    };
}

static bool transport_error(int code)
{
    return code == KME_ETIMEDOUT || code == KME_ECONNREFUSED || code == KME_ECONNECT ||
           code == KME_EIO || code == KME_ETLS || code == KME_ENOMEM;
}

/* Decodes a status answer. Returns 0 (st filled) or a KME_E* code with
 * *msg_r (malloc'd, may be NULL: use the transport detail). */
static int decode_status(int error, int status, const char *body, size_t len,
                         struct etsi014_status *st, char **msg_r)
{
    *msg_r = NULL;
    if (error != 0)
        return error;
    if (status < 200 || status > 299)
        return kme_map_http_error(KME_OP_STATUS, status, body, len, msg_r);
    char *err = NULL;
    int rc = etsi014_status_decode(body, len, st, &err);
    if (rc < 0) {
        size_t n = 64 + (err ? strlen(err) : 0);
        *msg_r = malloc(n);
        if (*msg_r != NULL)
            snprintf(*msg_r, n, "invalid status: %s", err ? err : "");
    }
    free(err);
    return rc == 0 ? 0 : rc == ETSI014_ENOMEM ? KME_ENOMEM : KME_EBADRESPONSE;
}

/* Answer to the status op (kme_client_status). */
static void status_done(int error, int status, const char *body, size_t len,
                        const char *detail, void *arg)
{
    struct op *op = arg;
    op->status_req = NULL;
    struct etsi014_status st = {0};
    char *msg = NULL;
    int code = decode_status(error, status, body, len, &st, &msg);
    if (code == 0)
        limits_store(op->client, op->sae_id, &st);
    op_unlink(op);
    if (code == 0) {
        struct kme_status pub;
        status_to_public(&st, &pub);
        op_report(op, 0, status, "ok", NULL, &pub);
    } else {
        op_report(op, code, status, msg ? msg : detail, NULL, NULL);
    }
    etsi014_status_clear(&st);
    free(msg);
}

/* An enc/dec op's limits are known (lim), or could not be had (code).
 * Returns true when a callback freed the client. */
static bool op_limits_ready(struct op *op, int code, int http_status, const char *msg,
                            const struct etsi014_limits *lim)
{
    int rc;
    if (code == 0)
        rc = op_start_calls(op, lim);
    else if (op->kind == KME_OP_DEC && !transport_error(code))
        /* The slave side may not be allowed the reverse status: fall back
         * to a conservative batch size. */
        rc = op_start_calls(op, NULL);
    else
        return op_fail(op, code, http_status, msg);
    if (rc < 0)
        return op_fail(op, rc, 0,
                       rc == KME_ELIMITS
                           ? "no combination of key sizes the KME allows fits the request"
                           : NULL);
    return false;
}

static void fetch_unlink(struct fetch *f)
{
    kme_client *cl = f->client;
    if (f->prev)
        f->prev->next = f->next;
    else
        cl->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

/* Unlinks and frees (cancelling the call in flight); waiters must have
 * been detached. */
static void fetch_free(struct fetch *f)
{
    fetch_unlink(f);
    if (f->req != NULL)
        kme_pool_cancel(f->client->pool, f->req);
    free(f->sae_id);
    free(f);
}

static void fetch_done(int error, int status, const char *body, size_t len,
                       const char *detail, void *arg)
{
    struct fetch *f = arg;
    kme_client *cl = f->client;
    f->req = NULL;
    struct etsi014_status st = {0};
    char *msg = NULL;
    int code = decode_status(error, status, body, len, &st, &msg);
    struct etsi014_limits lim = {0};
    if (code == 0) {
        limits_store(cl, f->sae_id, &st);
        lim = (struct etsi014_limits){
            .key_size = st.key_size,
            .min_key_size = st.min_key_size,
            .max_key_size = st.max_key_size,
            .max_key_per_request = st.max_key_per_request,
        };
    }
    etsi014_status_clear(&st);
    /* Hand the answer to each waiter; a callback may cancel other waiters
     * (they leave the list) or free the client (then stop at once: the
     * client's free released this fetch). */
    bool gone = false;
    bool *outer = cl->gone;
    cl->gone = &gone;
    while (f->waiters != NULL && !gone) {
        struct op *op = f->waiters;
        f->waiters = op->wnext;
        if (f->waiters)
            f->waiters->wprev = NULL;
        op->wnext = op->wprev = NULL;
        op->fetch = NULL;
        op_limits_ready(op, code, status, msg ? msg : detail, &lim);
    }
    free(msg);
    if (gone) {
        if (outer != NULL)
            *outer = true;
        return;
    }
    cl->gone = outer;
    fetch_free(f);
}

/* Makes op wait for its SAE's limits, sharing a call in flight. */
static int op_wait_limits(struct op *op)
{
    kme_client *cl = op->client;
    struct fetch *f = cl->fetches;
    while (f != NULL && (f->req == NULL || strcmp(f->sae_id, op->sae_id) != 0))
        f = f->next;
    if (f == NULL) {
        f = calloc(1, sizeof(*f));
        if (f == NULL)
            return KME_ENOMEM;
        f->client = cl;
        f->sae_id = strdup(op->sae_id);
        char *path = etsi014_path(ETSI014_EP_STATUS, op->sae_id, NULL);
        if (f->sae_id != NULL && path != NULL)
            f->req = kme_pool_submit(cl->pool, "GET", path, NULL, 0, fetch_done, f);
        free(path);
        if (f->req == NULL) {
            free(f->sae_id);
            free(f);
            return KME_ENOMEM;
        }
        f->next = cl->fetches;
        if (cl->fetches)
            cl->fetches->prev = f;
        cl->fetches = f;
    }
    op->state = OP_LIMITS;
    op->fetch = f;
    op->wnext = f->waiters;
    if (f->waiters)
        f->waiters->wprev = op;
    f->waiters = op;
    return 0;
}

/* ---- public API --------------------------------------------------------- */

static struct op *op_new(kme_client *cl, enum kme_op_kind kind, const char *sae_id, void *arg)
{
    if (cl == NULL || sae_id == NULL || etsi014_id_blank(sae_id) ||
        strlen(sae_id) > ETSI014_ID_MAX)
        return NULL;
    struct op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->client = cl;
    op->kind = kind;
    op->arg = arg;
    op->sae_id = strdup(sae_id);
    if (op->sae_id == NULL) {
        free(op);
        return NULL;
    }
    op->started_ms = uv_now(cl->loop);
    return op;
}

static void op_link(struct op *op)
{
    kme_client *cl = op->client;
    op->next = cl->ops;
    if (cl->ops)
        cl->ops->prev = op;
    cl->ops = op;
}

/* Starts op: from the cache when its limits are fresh, else after a status
 * call. Returns 0 or an error (op freed, no callback). */
static int op_submit(struct op *op)
{
    kme_client *cl = op->client;
    struct limits_entry *e = op->kind == KME_OP_STATUS ? NULL
                                                        : limits_find(cl, op->sae_id, true);
    int rc;
    if (e != NULL) {
        rc = op_start_calls(op, &e->lim);
    } else if (op->kind != KME_OP_STATUS) {
        rc = op_wait_limits(op);
    } else {
        char *path = etsi014_path(ETSI014_EP_STATUS, op->sae_id, NULL);
        op->status_req = path ? kme_pool_submit(cl->pool, "GET", path, NULL, 0, status_done, op)
                              : NULL;
        free(path);
        rc = op->status_req ? 0 : KME_ENOMEM;
    }
    if (rc < 0) {
        op_stop(op);
        op_free(op);
        return rc;
    }
    op_link(op);
    return 0;
}

int kme_client_status(kme_client *cl, const char *slave_sae_id, kme_status_cb cb, void *arg)
{
    if (cb == NULL)
        return KME_EINVAL;
    struct op *op = op_new(cl, KME_OP_STATUS, slave_sae_id, arg);
    if (op == NULL)
        return KME_EINVAL;
    op->status_cb = cb;
    return op_submit(op);
}

int kme_client_enc_bits(kme_client *cl, const char *slave_sae_id, uint64_t total_bits,
                        kme_keys_cb cb, void *arg)
{
    if (cb == NULL || total_bits == 0 || total_bits % 8 != 0 ||
        total_bits > KME_SPLIT_MAX_TOTAL_BITS)
        return KME_EINVAL;
    struct op *op = op_new(cl, KME_OP_ENC, slave_sae_id, arg);
    if (op == NULL)
        return KME_EINVAL;
    op->keys_cb = cb;
    op->by_bits = true;
    op->total_bits = total_bits;
    return op_submit(op);
}

int kme_client_enc_keys(kme_client *cl, const char *slave_sae_id, uint64_t number,
                        uint64_t size_bits, kme_keys_cb cb, void *arg)
{
    if (cb == NULL || number == 0 || number > MAX_ENC_NUMBER || size_bits % 8 != 0 ||
        size_bits > KME_SPLIT_MAX_TOTAL_BITS || number * (size_bits / 8) > (1u << 30))
        return KME_EINVAL;
    struct op *op = op_new(cl, KME_OP_ENC, slave_sae_id, arg);
    if (op == NULL)
        return KME_EINVAL;
    op->keys_cb = cb;
    op->number = number;
    op->size_bits = size_bits;
    return op_submit(op);
}

int kme_client_dec_keys(kme_client *cl, const char *master_sae_id,
                        const char *const *key_ids, size_t n, kme_keys_cb cb, void *arg)
{
    if (cb == NULL || key_ids == NULL || n == 0 || n > MAX_DEC_IDS)
        return KME_EINVAL;
    char (*ids)[KME_KEY_ID_SIZE] = calloc(n, sizeof(*ids));
    const char **sorted = calloc(n, sizeof(*sorted));
    if (ids == NULL || sorted == NULL) {
        free(ids);
        free(sorted);
        return KME_ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (key_ids[i] == NULL || !etsi014_uuid_valid(key_ids[i], strlen(key_ids[i]))) {
            rc = KME_EINVAL;
            break;
        }
        for (size_t j = 0; j < ETSI014_UUID_LEN; j++) {
            char c = key_ids[i][j];
            ids[i][j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        sorted[i] = ids[i];
    }
    if (rc == 0) {
        qsort(sorted, n, sizeof(*sorted), cmp_id);
        for (size_t i = 1; i < n; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0)
                rc = KME_EINVAL;
    }
    free(sorted);
    struct op *op = rc == 0 ? op_new(cl, KME_OP_DEC, master_sae_id, arg) : NULL;
    if (op == NULL) {
        free(ids);
        return rc < 0 ? rc : KME_EINVAL;
    }
    op->keys_cb = cb;
    op->ids = ids;
    op->nids = n;
    op->deadline_ms = op->started_ms + cl->cfg.dec_deadline_ms;
    return op_submit(op);
}

size_t kme_client_cancel(kme_client *cl, void *arg)
{
    if (cl == NULL)
        return 0;
    /* Detach the matching ops first: callbacks may change the list. */
    struct op *victims = NULL;
    for (struct op *op = cl->ops, *next; op != NULL; op = next) {
        next = op->next;
        if (op->arg != arg)
            continue;
        op_stop(op);
        op_unlink(op);
        op->next = victims;
        victims = op;
    }
    size_t n = 0;
    bool gone = false;
    while (victims != NULL) {
        struct op *op = victims;
        victims = op->next;
        if (gone) {
            op->client = NULL;
        }
        if (op_report(op, KME_ECANCELLED, 0, "cancelled", NULL, NULL))
            gone = true;
        n++;
    }
    return n;
}

void kme_client_get_stats(const kme_client *cl, struct kme_client_stats *st)
{
    *st = (struct kme_client_stats){0};
    if (cl == NULL)
        return;
    kme_pool_stats(cl->pool, st);
    st->retries = cl->retries;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *failed = true;
    return d;
}

static char *errdup(const char *s)
{
    return strdup(s);
}

kme_client *kme_client_new(uv_loop_t *loop, const struct kme_client_config *cfg,
                           char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    if (loop == NULL || cfg == NULL || cfg->cert_file == NULL || cfg->key_file == NULL) {
        if (error_r != NULL)
            *error_r = errdup("KME client: url, cert_file and key_file are required "
                              "(ETSI 014 requires mutual TLS)");
        return NULL;
    }
    kme_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    cl->loop = loop;
    if (kme_url_parse(cfg->url, &cl->url, error_r) < 0) {
        free(cl);
        return NULL;
    }
    cl->cfg = *cfg;
    struct kme_client_config *c = &cl->cfg;
    bool failed = false;
    c->url = NULL;
    c->cert_file = c->key_file = c->ca_file = NULL;
    c->server_name = dup_or_null(cfg->server_name, &failed);
    c->expect_kme_id = dup_or_null(cfg->expect_kme_id, &failed);
    if (c->max_connections == 0)
        c->max_connections = DEFAULT_MAX_CONNECTIONS;
    if (c->connect_timeout_ms == 0)
        c->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (c->request_timeout_ms == 0)
        c->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    if (c->idle_timeout_ms == 0)
        c->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (c->status_ttl_ms == 0)
        c->status_ttl_ms = DEFAULT_STATUS_TTL_MS;
    if (c->retry_initial_ms == 0)
        c->retry_initial_ms = DEFAULT_RETRY_INITIAL_MS;
    if (c->retry_max_ms == 0)
        c->retry_max_ms = DEFAULT_RETRY_MAX_MS;
    if (c->retry_max_ms < c->retry_initial_ms)
        c->retry_max_ms = c->retry_initial_ms;
    if (c->dec_deadline_ms == 0)
        c->dec_deadline_ms = DEFAULT_DEC_DEADLINE_MS;
    if (c->max_response_bytes == 0)
        c->max_response_bytes = DEFAULT_MAX_RESPONSE;

    struct net_tls_config tc = {
        .server = false,
        .cert_file = cfg->cert_file,
        .key_file = cfg->key_file,
        .ca_file = cfg->ca_file,
        .verify_peer = true,
    };
    if (!failed)
        cl->tls = net_tls_new(&tc, error_r);
    if (cl->tls != NULL) {
        struct kme_pool_config pc = {
            .url = &cl->url,
            .tls = cl->tls,
            .server_name = c->server_name,
            .expect_kme_id = c->expect_kme_id,
            .max_connections = c->max_connections,
            .connect_timeout_ms = c->connect_timeout_ms,
            .request_timeout_ms = c->request_timeout_ms,
            .idle_timeout_ms = c->idle_timeout_ms,
            .max_response_bytes = c->max_response_bytes,
        };
        cl->pool = kme_pool_new(loop, &pc);
    }
    if (cl->pool == NULL) {
        if (error_r != NULL && *error_r == NULL)
            *error_r = errdup("out of memory");
        kme_client_free(&cl);
        return NULL;
    }
    return cl;
}

void kme_client_free(kme_client **clp)
{
    kme_client *cl = *clp;
    *clp = NULL;
    if (cl == NULL)
        return;
    if (cl->gone != NULL)
        *cl->gone = true;
    /* Detach every op, then report them cancelled with no client behind. */
    struct op *victims = NULL;
    while (cl->ops != NULL) {
        struct op *op = cl->ops;
        op_stop(op);
        op_unlink(op);
        op->next = victims;
        victims = op;
    }
    /* a fetch still handing out its answer (we are inside it) */
    /* fetch_free unlinks f from f->client->fetches, and f->client is cl (set
     * when the fetch is made, never changed): the analyzer does not know
     * the back pointer and reports a use after free of cl->fetches. */
    while (cl->fetches != NULL) {
        struct fetch *f = cl->fetches;
        f->waiters = NULL; // NOLINT(clang-analyzer-unix.Malloc)
        fetch_free(f);
    }
    kme_pool_free(&cl->pool);
    net_tls_free(&cl->tls);
    kme_url_clear(&cl->url);
    while (cl->limits != NULL) {
        struct limits_entry *e = cl->limits;
        cl->limits = e->next;
        free(e->sae_id);
        free(e);
    }
    free((char *)cl->cfg.server_name);
    free((char *)cl->cfg.expect_kme_id);
    free(cl);
    while (victims != NULL) {
        struct op *op = victims;
        victims = op->next;
        op->client = NULL;
        op_report(op, KME_ECANCELLED, 0, "cancelled: the client was freed", NULL, NULL);
    }
}
