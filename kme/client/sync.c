/* Blocking convenience for command-line tools: one operation on a private
 * libuv loop, run to completion, everything freed before returning. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

struct sync_ctx {
    bool done;
    int error;
    char *message;
    struct kme_keys *keys;
    struct kme_status *status;
    /* the operation */
    const char *sae_id;
    uint64_t a, b;
    const char *const *ids;
    size_t nids;
};

static void note(struct sync_ctx *ctx, const struct kme_result *res)
{
    ctx->done = true;
    ctx->error = res->error;
    if (res->error != 0)
        ctx->message = strdup(res->message);
}

static void keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct sync_ctx *ctx = arg;
    note(ctx, res);
    ctx->keys = keys;
}

static char *sdup(const char *s, bool *failed)
{
    char *d = strdup(s != NULL ? s : "");
    if (d == NULL)
        *failed = true;
    return d;
}

static void status_cb(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    struct sync_ctx *ctx = arg;
    note(ctx, res);
    if (st == NULL)
        return;
    struct kme_status *s = malloc(sizeof(*s));
    if (s == NULL) {
        ctx->error = KME_ENOMEM;
        return;
    }
    *s = *st;
    bool failed = false;
    s->source_kme_id = sdup(st->source_kme_id, &failed);
    s->target_kme_id = sdup(st->target_kme_id, &failed);
    s->master_sae_id = sdup(st->master_sae_id, &failed);
    s->slave_sae_id = sdup(st->slave_sae_id, &failed);
    if (failed) {
        kme_status_free(&s);
        ctx->error = KME_ENOMEM;
    }
    ctx->status = s;
}

enum sync_kind { SYNC_STATUS, SYNC_ENC_BITS, SYNC_ENC_KEYS, SYNC_DEC };

static int sync_run(const struct kme_client_config *cfg, enum sync_kind kind,
                    struct sync_ctx *ctx, char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    uv_loop_t loop;
    if (uv_loop_init(&loop) < 0)
        return KME_ENOMEM;
    kme_client *cl = kme_client_new(&loop, cfg, error_r);
    int rc = cl == NULL ? KME_EINVAL : 0;
    if (rc == 0) {
        switch (kind) {
        case SYNC_STATUS:
            rc = kme_client_status(cl, ctx->sae_id, status_cb, ctx);
            break;
        case SYNC_ENC_BITS:
            rc = kme_client_enc_bits(cl, ctx->sae_id, ctx->a, keys_cb, ctx);
            break;
        case SYNC_ENC_KEYS:
            rc = kme_client_enc_keys(cl, ctx->sae_id, ctx->a, ctx->b, keys_cb, ctx);
            break;
        case SYNC_DEC:
            rc = kme_client_dec_keys(cl, ctx->sae_id, ctx->ids, ctx->nids, keys_cb, ctx);
            break;
        }
        if (rc < 0 && error_r != NULL)
            *error_r = strdup(kme_client_strerror(rc));
    }
    while (rc == 0 && !ctx->done) {
        if (uv_run(&loop, UV_RUN_ONCE) == 0 && !ctx->done) {
            rc = KME_EIO; /* nothing left that could finish it */
            break;
        }
    }
    kme_client_free(&cl);
    uv_run(&loop, UV_RUN_DEFAULT); /* let closed handles go */
    uv_loop_close(&loop);
    if (rc == 0)
        rc = ctx->error;
    if (rc != 0 && error_r != NULL && *error_r == NULL)
        *error_r = ctx->message != NULL ? strdup(ctx->message)
                                        : strdup(kme_client_strerror(rc));
    free(ctx->message);
    ctx->message = NULL;
    if (rc != 0) {
        kme_keys_free(&ctx->keys);
        kme_status_free(&ctx->status);
    }
    return rc;
}

int kme_sync_status(const struct kme_client_config *cfg, const char *slave_sae_id,
                    struct kme_status **status_r, char **error_r)
{
    struct sync_ctx ctx = {.sae_id = slave_sae_id};
    int rc = sync_run(cfg, SYNC_STATUS, &ctx, error_r);
    *status_r = ctx.status;
    return rc;
}

int kme_sync_enc_bits(const struct kme_client_config *cfg, const char *slave_sae_id,
                      uint64_t total_bits, struct kme_keys **keys_r, char **error_r)
{
    struct sync_ctx ctx = {.sae_id = slave_sae_id, .a = total_bits};
    int rc = sync_run(cfg, SYNC_ENC_BITS, &ctx, error_r);
    *keys_r = ctx.keys;
    return rc;
}

int kme_sync_enc_keys(const struct kme_client_config *cfg, const char *slave_sae_id,
                      uint64_t number, uint64_t size_bits, struct kme_keys **keys_r,
                      char **error_r)
{
    struct sync_ctx ctx = {.sae_id = slave_sae_id, .a = number, .b = size_bits};
    int rc = sync_run(cfg, SYNC_ENC_KEYS, &ctx, error_r);
    *keys_r = ctx.keys;
    return rc;
}

int kme_sync_dec_keys(const struct kme_client_config *cfg, const char *master_sae_id,
                      const char *const *key_ids, size_t n, struct kme_keys **keys_r,
                      char **error_r)
{
    struct sync_ctx ctx = {.sae_id = master_sae_id, .ids = key_ids, .nids = n};
    int rc = sync_run(cfg, SYNC_DEC, &ctx, error_r);
    *keys_r = ctx.keys;
    return rc;
}
