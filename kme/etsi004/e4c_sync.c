/* Blocking convenience for command-line tools: one 004 operation on a
 * private libuv loop, run to completion, everything freed before
 * returning (key bytes wiped). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4c_internal.h"

struct sync {
    bool done;
    int error;
    char *message;
    /* open */
    struct etsi004_sync_open *open;
    /* get */
    struct etsi004_sync_get *get;
    /* close */
    uint32_t status;
    /* chunks */
    struct kme_keys *keys;
    /* fetch: the reattach step */
    etsi004_client *c;
    const uint8_t *ksid;
    uint32_t first;
    size_t count, chunk_len;
    bool reopened;
};

static void note(struct sync *s, int error, const char *message)
{
    s->done = true;
    s->error = error;
    if (error != KME_OK && message != NULL)
        s->message = strdup(message);
}

/* Runs until s->done; frees the client and drains the loop. */
static int run(uv_loop_t *loop, etsi004_client **c, struct sync *s, char **error_r)
{
    while (!s->done && uv_run(loop, UV_RUN_ONCE) != 0)
        ;
    etsi004_client_free(c);
    uv_run(loop, UV_RUN_DEFAULT);
    if (!s->done && s->error == KME_OK)
        s->error = KME_EIO;
    if (error_r != NULL)
        *error_r = s->message;
    else
        free(s->message);
    s->message = NULL;
    return s->error;
}

static int with_client(const struct etsi004_client_config *cfg, uv_loop_t *loop,
                       etsi004_client **c_r, char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    if (uv_loop_init(loop) < 0)
        return KME_ENOMEM;
    *c_r = etsi004_client_new(loop, cfg, error_r);
    if (*c_r == NULL) {
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        return KME_EINVAL;
    }
    return KME_OK;
}

static int finish(uv_loop_t *loop, int rc)
{
    uv_loop_close(loop);
    return rc;
}

/* ---- open ----------------------------------------------------------------------- */

static void open_cb(const struct etsi004_result *res, const struct etsi004_qos *qos,
                    const uint8_t *ksid, void *arg)
{
    struct sync *s = arg;
    note(s, res->error, res->message);
    if (res->error != KME_OK)
        return;
    s->open->status = res->status;
    s->open->has_qos = qos != NULL;
    if (qos != NULL) {
        s->open->qos = *qos;
        memcpy(s->open->ksid, ksid, ETSI004_KSID_LEN);
    }
}

int etsi004_sync_open(const struct etsi004_client_config *cfg, const char *source,
                      const char *destination, const struct etsi004_qos *qos,
                      const uint8_t *ksid, struct etsi004_sync_open *r, char **error_r)
{
    memset(r, 0, sizeof(*r));
    uv_loop_t loop;
    etsi004_client *c;
    int rc = with_client(cfg, &loop, &c, error_r);
    if (rc < 0)
        return rc;
    struct sync s = {.open = r};
    rc = etsi004_client_open(c, source, destination, qos, ksid, 0, open_cb, &s);
    if (rc < 0)
        s = (struct sync){.done = true, .error = rc};
    return finish(&loop, run(&loop, &c, &s, error_r));
}

/* ---- get ------------------------------------------------------------------------- */

static void get_cb(const struct etsi004_result *res, const struct etsi004_chunk *ch,
                   void *arg)
{
    struct sync *s = arg;
    note(s, res->error, res->message);
    if (res->error != KME_OK)
        return;
    struct etsi004_sync_get *g = s->get;
    g->status = res->status;
    if (ch == NULL)
        return;
    g->index = ch->index;
    g->metadata_needed = ch->metadata_needed;
    if (res->status != ETSI004_SUCCESS)
        return;
    g->key = malloc(ch->len ? ch->len : 1);
    g->metadata = malloc(ch->metadata_len + 1);
    if (g->key == NULL || g->metadata == NULL) {
        etsi004_sync_get_clear(g);
        s->error = KME_ENOMEM;
        return;
    }
    memcpy(g->key, ch->key, ch->len);
    g->len = ch->len;
    memcpy(g->metadata, ch->metadata != NULL ? ch->metadata : "", ch->metadata_len);
    g->metadata[ch->metadata_len] = '\0';
}

int etsi004_sync_get_key(const struct etsi004_client_config *cfg, const uint8_t *ksid,
                         uint32_t index, uint32_t metadata_size, uint64_t wait_ms,
                         struct etsi004_sync_get *r, char **error_r)
{
    memset(r, 0, sizeof(*r));
    uv_loop_t loop;
    etsi004_client *c;
    int rc = with_client(cfg, &loop, &c, error_r);
    if (rc < 0)
        return rc;
    struct sync s = {.get = r};
    rc = etsi004_client_get_key(c, ksid, index, metadata_size, wait_ms, get_cb, &s);
    if (rc < 0)
        s = (struct sync){.done = true, .error = rc};
    return finish(&loop, run(&loop, &c, &s, error_r));
}

void etsi004_sync_get_clear(struct etsi004_sync_get *r)
{
    if (r->key != NULL) {
        OPENSSL_cleanse(r->key, r->len);
        free(r->key);
    }
    free(r->metadata);
    memset(r, 0, sizeof(*r));
}

/* ---- close ------------------------------------------------------------------------- */

static void close_cb(const struct etsi004_result *res, void *arg)
{
    struct sync *s = arg;
    note(s, res->error, res->message);
    s->status = res->status;
}

int etsi004_sync_close(const struct etsi004_client_config *cfg, const uint8_t *ksid,
                       uint32_t *status_r, char **error_r)
{
    uv_loop_t loop;
    etsi004_client *c;
    int rc = with_client(cfg, &loop, &c, error_r);
    if (rc < 0)
        return rc;
    struct sync s = {0};
    rc = etsi004_client_close(c, ksid, close_cb, &s);
    if (rc < 0)
        s = (struct sync){.done = true, .error = rc};
    rc = finish(&loop, run(&loop, &c, &s, error_r));
    *status_r = s.status;
    return rc;
}

/* ---- fetch for decryption ---------------------------------------------------------- */

static void fetch_cb(const struct kme_result *res, struct kme_keys *keys, void *arg);

static void reopen_cb(const struct etsi004_result *res, const struct etsi004_qos *qos,
                      const uint8_t *ksid, void *arg)
{
    struct sync *s = arg;
    (void)qos;
    (void)ksid;
    if (res->error != KME_OK || (res->status != ETSI004_SUCCESS &&
                                 res->status != ETSI004_PEER_NOT_CONNECTED)) {
        char m[160];
        snprintf(m, sizeof(m), "OPEN_CONNECT to reattach to the stream: %s",
                 res->error != KME_OK ? res->message : etsi004_status_name(res->status));
        note(s, res->error != KME_OK ? res->error : etsi004_status_error(res->status), m);
        return;
    }
    int rc = etsi004_client_fetch_chunks(s->c, s->ksid, s->first, s->count, s->chunk_len, 0,
                                         fetch_cb, s);
    if (rc < 0)
        note(s, rc, "GET_KEY could not be sent");
}

static void fetch_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct sync *s = arg;
    /* "Not connected" (status 3) on the first try: this application's end
     * is not open (yet) at its KME; open it (reattach) and try again. */
    if (res->error == KME_ENOTFOUND && !s->reopened) {
        s->reopened = true;
        char src[ETSI014_ID_MAX + 16];
        snprintf(src, sizeof(src), "qkd://%s",
                 etsi004_client_sae_id(s->c) ? etsi004_client_sae_id(s->c) : "app");
        struct etsi004_qos q = {.timeout = 1000};
        int rc = etsi004_client_open(s->c, src, "qkd://peer", &q, s->ksid, 0, reopen_cb, s);
        if (rc < 0)
            note(s, rc, "OPEN_CONNECT could not be sent");
        return;
    }
    note(s, res->error, res->message);
    s->keys = keys;
}

int etsi004_sync_fetch_chunks(const struct etsi004_client_config *cfg, const uint8_t *ksid,
                              uint32_t first, size_t count, size_t chunk_len,
                              struct kme_keys **keys_r, char **error_r)
{
    *keys_r = NULL;
    uv_loop_t loop;
    etsi004_client *c;
    int rc = with_client(cfg, &loop, &c, error_r);
    if (rc < 0)
        return rc;
    struct sync s = {.c = c, .ksid = ksid, .first = first, .count = count,
                     .chunk_len = chunk_len};
    rc = etsi004_client_fetch_chunks(c, ksid, first, count, chunk_len, 0, fetch_cb, &s);
    if (rc < 0)
        s = (struct sync){.done = true, .error = rc};
    rc = finish(&loop, run(&loop, &c, &s, error_r));
    if (rc == KME_OK)
        *keys_r = s.keys;
    else
        kme_keys_free(&s.keys);
    return rc;
}

/* ---- take for encryption ------------------------------------------------------------ */

struct take {
    struct sync s;
    uint64_t bits;
};

static void take_keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct sync *s = arg;
    note(s, res->error, res->message);
    s->keys = keys;
}

static void take_open_cb(const struct etsi004_result *res, const struct etsi004_qos *qos,
                         const uint8_t *ksid, void *arg)
{
    struct take *t = arg;
    (void)ksid;
    if (res->error != KME_OK || qos == NULL ||
        (res->status != ETSI004_SUCCESS && res->status != ETSI004_PEER_NOT_CONNECTED)) {
        char m[160];
        snprintf(m, sizeof(m), "OPEN_CONNECT of the stream: %s",
                 res->error != KME_OK ? res->message : etsi004_status_name(res->status));
        note(&t->s, res->error != KME_OK ? res->error
                    : res->status == ETSI004_SUCCESS ? KME_EBADRESPONSE
                                                     : etsi004_status_error(res->status), m);
        return;
    }
    uint64_t chunk_bits = (uint64_t)qos->key_chunk_size * 8;
    if (chunk_bits == 0 || qos->key_chunk_size > ETSI004_MAX_CHUNK) {
        note(&t->s, KME_EBADRESPONSE, "the stream's Key_chunk_size is out of range");
        return;
    }
    uint64_t n = (t->bits + chunk_bits - 1) / chunk_bits;
    int rc = etsi004_client_next_chunks(t->s.c, t->s.ksid, (size_t)n, qos->key_chunk_size,
                                        qos->timeout, take_keys_cb, &t->s);
    if (rc < 0)
        note(&t->s, rc, "GET_KEY could not be sent");
}

int etsi004_sync_take_bits(const struct etsi004_client_config *cfg, const uint8_t *ksid,
                           uint64_t bits, struct kme_keys **keys_r, char **kme_id_r,
                           char **sae_id_r, char **error_r)
{
    *keys_r = NULL;
    if (kme_id_r != NULL)
        *kme_id_r = NULL;
    if (sae_id_r != NULL)
        *sae_id_r = NULL;
    if (bits == 0 || bits % 8 != 0 || bits > (uint64_t)ETSI004_MAX_CHUNK * 8 * (1u << 20))
        return KME_EINVAL;
    uv_loop_t loop;
    etsi004_client *c;
    int rc = with_client(cfg, &loop, &c, error_r);
    if (rc < 0)
        return rc;
    struct take t = {.s = {.c = c, .ksid = ksid}, .bits = bits};
    char src[ETSI014_ID_MAX + 16];
    snprintf(src, sizeof(src), "qkd://%s",
             etsi004_client_sae_id(c) ? etsi004_client_sae_id(c) : "app");
    struct etsi004_qos q = {.timeout = 0};
    rc = etsi004_client_open(c, src, "qkd://peer", &q, ksid, 0, take_open_cb, &t);
    if (rc < 0) {
        t.s.done = true;
        t.s.error = rc;
    }
    /* The identities before the client goes. */
    while (!t.s.done && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    if (kme_id_r != NULL && etsi004_client_kme_id(c) != NULL)
        *kme_id_r = strdup(etsi004_client_kme_id(c));
    if (sae_id_r != NULL && etsi004_client_sae_id(c) != NULL)
        *sae_id_r = strdup(etsi004_client_sae_id(c));
    rc = finish(&loop, run(&loop, &c, &t.s, error_r));
    if (rc == KME_OK)
        *keys_r = t.s.keys;
    else
        kme_keys_free(&t.s.keys);
    return rc;
}
