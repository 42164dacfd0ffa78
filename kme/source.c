/* kme_source (kme_source.h): one interface over the 014 client and a 004
 * stream. Each caller operation is an op in the source's list (so that
 * kme_source_cancel finds it by the caller's arg); the underlying client
 * calls carry the op as their arg.
 *
 * A 004 source's stream state: CLOSED -> OPENING -> OPEN; back to CLOSED
 * when the open fails or the KME later says the stream, its peer or the
 * link is gone (then the next operation opens again). Operations wait in
 * the op list while the stream opens; ready ones run from a zero-delay
 * timer, never inside the caller's call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "kme_source.h"

enum sop_kind { SOP_IDS, SOP_ENC, SOP_DEC };
enum stream_state { ST_CLOSED, ST_OPENING, ST_OPEN };

struct sop {
    struct sop *next;
    kme_source *s;
    enum sop_kind kind;
    void *arg;
    kme_source_ids_cb ids_cb;
    kme_keys_cb keys_cb;
    char *sae;                   /* slave (ids, enc) or master (dec) */
    uint64_t bits;
    struct kme_source_ref *refs; /* dec (owned, strings too) */
    size_t n_refs, next_ref;
    struct kme_keys *got;        /* dec: chunks so far */
    bool submitted;              /* handed to the client */
};

struct kme_source {
    enum kme_source_kind kind;
    kme_client *c014;
    etsi004_client *c004;
    bool owned;
    struct sop *ops;
    /* 004 */
    uint8_t ksid[ETSI004_KSID_LEN];
    char ksid_text[ETSI004_KSID_TEXT_LEN + 1];
    char *src_uri, *dst_uri;
    struct etsi004_qos asked, granted;
    enum stream_state state;
    kme_timer *kick;
    bool freeing;
};

/* ---- ops ------------------------------------------------------------------------ */

static void sop_unlink(struct sop *o)
{
    for (struct sop **pp = &o->s->ops; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            return;
        }
    }
}

static void sop_free(struct sop *o)
{
    for (size_t i = 0; i < o->n_refs; i++) {
        free((char *)o->refs[i].key_id);
        free((char *)o->refs[i].ksid);
    }
    free(o->refs);
    kme_keys_free(&o->got);
    free(o->sae);
    free(o);
}

/* Unlinks o, calls its callback once and frees it. */
static void sop_finish(struct sop *o, int error, const char *message, struct kme_keys *keys,
                       const char *kme_id, const char *sae_id)
{
    sop_unlink(o);
    struct kme_result r = {.error = error, .message = message ? message : "ok"};
    if (o->kind == SOP_IDS)
        o->ids_cb(&r, error == KME_OK ? kme_id : NULL, error == KME_OK ? sae_id : NULL,
                  o->arg);
    else
        o->keys_cb(&r, error == KME_OK ? keys : NULL, o->arg);
    if (error != KME_OK)
        kme_keys_free(&keys);
    sop_free(o);
}

static struct sop *sop_new(kme_source *s, enum sop_kind kind, const char *sae, void *arg)
{
    struct sop *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->s = s;
    o->kind = kind;
    o->arg = arg;
    o->sae = strdup(sae != NULL ? sae : "");
    if (o->sae == NULL) {
        free(o);
        return NULL;
    }
    o->next = s->ops;
    s->ops = o;
    return o;
}

/* ---- 014 --------------------------------------------------------------------------- */

static void status_cb(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    struct sop *o = arg;
    sop_finish(o, res->error, res->message, NULL, st ? st->source_kme_id : NULL,
               st ? st->master_sae_id : NULL);
}

static void keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct sop *o = arg;
    kme_source *s = o->s;
    if (s->kind == KME_SOURCE_ETSI004 && res->error == KME_ENOTFOUND)
        s->state = ST_CLOSED; /* the stream or its peer is gone: open again */
    if (s->kind == KME_SOURCE_ETSI004 && o->kind == SOP_DEC && res->error == KME_OK) {
        if (kme_keys_append(&o->got, keys) < 0) {
            sop_finish(o, KME_ENOMEM, "out of memory", NULL, NULL, NULL);
            return;
        }
        if (++o->next_ref < o->n_refs) {
            const struct kme_source_ref *r = &o->refs[o->next_ref];
            uint8_t ksid[ETSI004_KSID_LEN];
            etsi004_ksid_from_text(r->ksid, ksid);
            int rc = etsi004_client_fetch_chunks(s->c004, ksid, r->first, r->count,
                                                 r->chunk_len, s->granted.timeout, keys_cb, o);
            if (rc < 0)
                sop_finish(o, rc, "GET_KEY could not be sent", NULL, NULL, NULL);
            return;
        }
        keys = o->got;
        o->got = NULL;
    }
    sop_finish(o, res->error, res->message, keys, NULL, NULL);
}

static int submit014(struct sop *o)
{
    kme_source *s = o->s;
    o->submitted = true;
    switch (o->kind) {
    case SOP_IDS:
        return kme_client_status(s->c014, o->sae, status_cb, o);
    case SOP_ENC:
        return kme_client_enc_bits(s->c014, o->sae, o->bits, keys_cb, o);
    case SOP_DEC: {
        const char **ids = calloc(o->n_refs, sizeof(*ids));
        if (ids == NULL)
            return KME_ENOMEM;
        for (size_t i = 0; i < o->n_refs; i++)
            ids[i] = o->refs[i].key_id;
        int rc = kme_client_dec_keys(s->c014, o->sae, ids, o->n_refs, keys_cb, o);
        free(ids);
        return rc;
    }
    }
    return KME_EINVAL;
}

/* ---- 004 ----------------------------------------------------------------------------- */

static void kick(kme_source *s)
{
    if (s->kick != NULL)
        kme_timer_restart(s->kick, 0);
}

/* Runs an op on the open stream; 0, or a negative code (the op is then
 * finished by the caller). */
static int submit004(struct sop *o)
{
    kme_source *s = o->s;
    o->submitted = true;
    switch (o->kind) {
    case SOP_IDS:
        sop_finish(o, KME_OK, "ok", NULL, etsi004_client_kme_id(s->c004),
                   etsi004_client_sae_id(s->c004));
        return 0;
    case SOP_ENC: {
        uint64_t chunk_bits = (uint64_t)s->granted.key_chunk_size * 8;
        uint64_t n = (o->bits + chunk_bits - 1) / chunk_bits;
        return etsi004_client_next_chunks(s->c004, s->ksid, (size_t)n,
                                          s->granted.key_chunk_size, s->granted.timeout,
                                          keys_cb, o);
    }
    case SOP_DEC: {
        const struct kme_source_ref *r = &o->refs[0];
        uint8_t ksid[ETSI004_KSID_LEN];
        etsi004_ksid_from_text(r->ksid, ksid);
        return etsi004_client_fetch_chunks(s->c004, ksid, r->first, r->count, r->chunk_len,
                                           s->granted.timeout, keys_cb, o);
    }
    }
    return KME_EINVAL;
}

static void open_cb(const struct etsi004_result *res, const struct etsi004_qos *qos,
                    const uint8_t *ksid, void *arg)
{
    kme_source *s = arg;
    (void)ksid;
    int error = res->error;
    char msg[160];
    snprintf(msg, sizeof(msg), "%s", res->message);
    if (error == KME_OK && (res->status == ETSI004_SUCCESS ||
                            res->status == ETSI004_PEER_NOT_CONNECTED) &&
        qos != NULL && qos->key_chunk_size > 0 && qos->key_chunk_size <= ETSI004_MAX_CHUNK) {
        s->state = ST_OPEN;
        s->granted = *qos;
        kick(s);
        return;
    }
    if (error == KME_OK) {
        error = res->status == ETSI004_SUCCESS ? KME_EBADRESPONSE
                                               : etsi004_status_error(res->status);
        snprintf(msg, sizeof(msg), "OPEN_CONNECT of stream %s: status %u (%s)", s->ksid_text,
                 (unsigned)res->status, etsi004_status_name(res->status));
    }
    s->state = ST_CLOSED;
    /* Everything waiting for the stream fails (callbacks may free us:
     * one at a time, from the list head). */
    while (s->ops != NULL && !s->freeing) {
        struct sop *o = s->ops;
        while (o != NULL && o->submitted)
            o = o->next;
        if (o == NULL)
            break;
        sop_finish(o, error, msg, NULL, NULL, NULL);
    }
}

static void run_ready(void *arg)
{
    kme_source *s = arg;
    if (s->state == ST_CLOSED) {
        bool waiting = false;
        for (struct sop *o = s->ops; o != NULL; o = o->next)
            waiting |= !o->submitted;
        if (!waiting)
            return;
        s->state = ST_OPENING;
        char src[ETSI014_ID_MAX + 16];
        const char *uri = s->src_uri;
        if (uri == NULL) {
            snprintf(src, sizeof(src), "qkd://%s",
                     etsi004_client_sae_id(s->c004) ? etsi004_client_sae_id(s->c004) : "app");
            uri = src;
        }
        int rc = etsi004_client_open(s->c004, uri, s->dst_uri ? s->dst_uri : "qkd://peer",
                                     &s->asked, s->ksid, 0, open_cb, s);
        if (rc < 0) {
            struct etsi004_result r = {.error = rc, .message = "OPEN_CONNECT not sent"};
            open_cb(&r, NULL, NULL, s);
        }
        return;
    }
    if (s->state != ST_OPEN)
        return;
    for (;;) {
        struct sop *o = s->ops;
        while (o != NULL && o->submitted)
            o = o->next;
        if (o == NULL)
            return;
        int rc = submit004(o);
        if (rc < 0)
            sop_finish(o, rc, "request not sent", NULL, NULL, NULL);
        if (s->freeing)
            return;
    }
}

/* ---- the interface ----------------------------------------------------------------------- */

kme_source *kme_source_new_014(kme_client *client, bool owned)
{
    if (client == NULL)
        return NULL;
    kme_source *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->kind = KME_SOURCE_ETSI014;
    s->c014 = client;
    s->owned = owned;
    return s;
}

kme_source *kme_source_new_004(etsi004_client *client, bool owned,
                               const struct kme_source_stream *st, char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    uint8_t ksid[ETSI004_KSID_LEN];
    if (client == NULL || st == NULL || st->ksid == NULL ||
        etsi004_ksid_from_text(st->ksid, ksid) < 0 || etsi004_ksid_is_null(ksid)) {
        if (error_r != NULL)
            *error_r = strdup("an ETSI 004 link needs a predefined KSID (a UUID)");
        return NULL;
    }
    kme_source *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->kind = KME_SOURCE_ETSI004;
    s->c004 = client;
    s->owned = owned;
    memcpy(s->ksid, ksid, ETSI004_KSID_LEN);
    etsi004_ksid_to_text(ksid, s->ksid_text);
    s->src_uri = st->source != NULL ? strdup(st->source) : NULL;
    s->dst_uri = st->destination != NULL ? strdup(st->destination) : NULL;
    s->asked.key_chunk_size = st->chunk_size;
    s->asked.ttl = st->ttl_s;
    s->asked.timeout = st->timeout_ms;
    /* No metadata: the proxy has no use for it (and no status 8 then). */
    s->kick = kme_timer_new(etsi004_client_loop(client), run_ready, s);
    if (s->kick == NULL || (st->source != NULL && s->src_uri == NULL) ||
        (st->destination != NULL && s->dst_uri == NULL)) {
        kme_timer_free(&s->kick);
        free(s->src_uri);
        free(s->dst_uri);
        free(s);
        return NULL;
    }
    return s;
}

enum kme_source_kind kme_source_kind(const kme_source *s)
{
    return s->kind;
}

const char *kme_source_ksid(const kme_source *s)
{
    return s != NULL && s->kind == KME_SOURCE_ETSI004 ? s->ksid_text : NULL;
}

kme_client *kme_source_014(kme_source *s)
{
    return s != NULL && s->kind == KME_SOURCE_ETSI014 ? s->c014 : NULL;
}

size_t kme_source_cancel(kme_source *s, void *arg)
{
    size_t n = 0;
    if (s == NULL)
        return 0;
    for (;;) {
        struct sop *o = s->ops;
        while (o != NULL && o->arg != arg)
            o = o->next;
        if (o == NULL)
            return n;
        n++;
        if (o->submitted) {
            /* The client calls back (with KME_ECANCELLED) at once, which
             * finishes the op. */
            size_t k = s->kind == KME_SOURCE_ETSI014 ? kme_client_cancel(s->c014, o)
                                                     : etsi004_client_cancel(s->c004, o);
            if (k == 0) /* nothing found there: finish it here */
                sop_finish(o, KME_ECANCELLED, "cancelled", NULL, NULL, NULL);
        } else {
            sop_finish(o, KME_ECANCELLED, "cancelled", NULL, NULL, NULL);
        }
    }
}

void kme_source_free(kme_source **sp)
{
    kme_source *s = *sp;
    if (s == NULL)
        return;
    *sp = NULL;
    while (s->ops != NULL)
        kme_source_cancel(s, s->ops->arg);
    s->freeing = true;
    if (s->c004 != NULL)
        etsi004_client_cancel(s->c004, s); /* the open in flight */
    kme_timer_free(&s->kick);
    if (s->owned) {
        kme_client_free(&s->c014);
        etsi004_client_free(&s->c004);
    }
    free(s->src_uri);
    free(s->dst_uri);
    free(s);
}

static int start(struct sop *o)
{
    kme_source *s = o->s;
    if (s->kind == KME_SOURCE_ETSI014) {
        int rc = submit014(o);
        if (rc < 0) {
            sop_unlink(o);
            sop_free(o);
        }
        return rc;
    }
    kick(s); /* opened (if need be) and run from the loop */
    return KME_OK;
}

int kme_source_identity(kme_source *s, const char *slave_sae_id, kme_source_ids_cb cb,
                        void *arg)
{
    if (s == NULL || cb == NULL || slave_sae_id == NULL)
        return KME_EINVAL;
    struct sop *o = sop_new(s, SOP_IDS, slave_sae_id, arg);
    if (o == NULL)
        return KME_ENOMEM;
    o->ids_cb = cb;
    return start(o);
}

int kme_source_enc_bits(kme_source *s, const char *slave_sae_id, uint64_t total_bits,
                        kme_keys_cb cb, void *arg)
{
    if (s == NULL || cb == NULL || slave_sae_id == NULL || total_bits == 0 ||
        total_bits % 8 != 0)
        return KME_EINVAL;
    struct sop *o = sop_new(s, SOP_ENC, slave_sae_id, arg);
    if (o == NULL)
        return KME_ENOMEM;
    o->keys_cb = cb;
    o->bits = total_bits;
    return start(o);
}

int kme_source_dec(kme_source *s, const char *master_sae_id, const struct kme_source_ref *refs,
                   size_t n, kme_keys_cb cb, void *arg)
{
    if (s == NULL || cb == NULL || refs == NULL || n == 0)
        return KME_EINVAL;
    for (size_t i = 0; i < n; i++) {
        uint8_t k[ETSI004_KSID_LEN];
        bool ok = s->kind == KME_SOURCE_ETSI014
                      ? refs[i].key_id != NULL && refs[i].ksid == NULL
                      : refs[i].ksid != NULL && etsi004_ksid_from_text(refs[i].ksid, k) == 0 &&
                            refs[i].count > 0;
        if (!ok)
            return KME_EINVAL;
    }
    struct sop *o = sop_new(s, SOP_DEC, master_sae_id, arg);
    if (o == NULL || (o->refs = calloc(n, sizeof(*refs))) == NULL) {
        if (o != NULL) {
            sop_unlink(o);
            sop_free(o);
        }
        return KME_ENOMEM;
    }
    o->keys_cb = cb;
    o->n_refs = n;
    bool failed = false;
    for (size_t i = 0; i < n; i++) {
        o->refs[i] = refs[i];
        o->refs[i].key_id = refs[i].key_id ? strdup(refs[i].key_id) : NULL;
        o->refs[i].ksid = refs[i].ksid ? strdup(refs[i].ksid) : NULL;
        failed |= (refs[i].key_id && !o->refs[i].key_id) || (refs[i].ksid && !o->refs[i].ksid);
    }
    if (failed) {
        sop_unlink(o);
        sop_free(o);
        return KME_ENOMEM;
    }
    return start(o);
}
