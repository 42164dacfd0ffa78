/* protect_in: the instance, the cache of views, lookups and requests. The
 * builds themselves are in incoming_build.c. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "incoming_internal.h"

static const char *const error_texts[] = {
    "out of memory",
    "invalid argument",
    "cancelled",
    "message larger than max_message_size",
    "could not write the private file",
};

const char *protect_in_strerror(int error)
{
    if (error == 0)
        return "ok";
    int i = PROTECT_IN_ENOMEM - error;
    if (i >= 0 && (size_t)i < sizeof(error_texts) / sizeof(error_texts[0]))
        return error_texts[i];
    return "unknown error";
}

void protect_in_config_defaults(struct protect_in_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->cache_max_bytes = UINT64_C(256) << 20;
    cfg->cache_max_views = 10000;
    cfg->notice_ttl_ms = 3000;
    cfg->max_message_size = UINT64_C(64) << 20;
    cfg->status_ttl_ms = UINT64_C(10) * 60 * 1000;
    cfg->max_header_keep = (size_t)64 << 10;
    cfg->recipient_check = PROTECT_IN_CHECK_STRICT;
    cfg->release_unbound = false;
}

uint64_t pi_now(const protect_in *pi)
{
    return uv_now(pi->loop);
}

/* ---- the cache holds views ------------------------------------------------------ */

static void *view_ref(void *obj)
{
    return protect_in_view_ref(obj);
}

static void view_unref(void *obj)
{
    protect_in_view *v = obj;
    protect_in_view_unref(&v);
}

static const struct viewcache_ops view_ops = {view_ref, view_unref};

void pi_cache_put(protect_in *pi, const char *key, protect_in_view *v,
                  uint64_t ttl_ms)
{
    if (pi->closing || pi->cache == NULL || key == NULL)
        return;
    uint64_t now = pi_now(pi);
    viewcache_put(pi->cache, key, v, v->footprint, ttl_ms > 0 ? now + ttl_ms : 0,
                  now);
}

/* ---- instance ---------------------------------------------------------------------- */

protect_in *protect_in_new(const struct protect_in_deps *deps,
                           const struct protect_in_config *cfg,
                           char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    if (deps == NULL || deps->loop == NULL || deps->vault == NULL || cfg == NULL ||
        cfg->cache_max_bytes == 0 || cfg->cache_max_views == 0 ||
        cfg->max_message_size == 0) {
        if (error_r != NULL)
            *error_r = strdup("protect_in: loop, vault and non-zero limits are required");
        return NULL;
    }
    protect_in *pi = calloc(1, sizeof(*pi));
    if (pi == NULL)
        return NULL;
    pi->loop = deps->loop;
    pi->vault = deps->vault;
    pi->policies = deps->policies;
    pi->link_fn = deps->link;
    pi->link_arg = deps->link_arg;
    pi->source_fn = deps->source;
    pi->source_arg = deps->source_arg;
    pi->cfg = *cfg;
    pi->cfg.addresses = NULL;
    pi->cfg.n_addresses = 0;
    pi->cfg.default_domain = NULL;
    pi->hooks.wiped = cfg->test_wiped;
    pi->hooks.arg = cfg->test_arg;
    bool ok = true;
    if (cfg->default_domain != NULL && cfg->default_domain[0] != '\0')
        ok = (pi->default_domain = strdup(cfg->default_domain)) != NULL;
    if (ok && pi_addrmap_build(cfg, &pi->map, &pi->n_map, error_r) < 0)
        ok = false;
    if (ok)
        ok = (pi->cache = viewcache_new(&view_ops, cfg->cache_max_bytes,
                                        cfg->cache_max_views)) != NULL;
    if (!ok || uv_timer_init(pi->loop, &pi->kick) < 0) {
        viewcache_free(&pi->cache);
        pi_addrmap_free(pi->map, pi->n_map);
        free(pi->default_domain);
        free(pi);
        return NULL;
    }
    pi->kick.data = pi;
    return pi;
}

static void on_kick_closed(uv_handle_t *h)
{
    protect_in *pi = h->data;
    pi->kick_closed = true;
    pi_free_final(pi);
}

void pi_free_final(protect_in *pi)
{
    if (!pi->closing || pi->workers > 0 || !pi->kick_closed)
        return;
    pi_links_free(pi);
    pi_unsaved_free(pi);
    pi_addrmap_free(pi->map, pi->n_map);
    free(pi->default_domain);
    free(pi);
}

void protect_in_free(protect_in **pip)
{
    protect_in *pi = *pip;
    if (pi == NULL)
        return;
    *pip = NULL;
    if (pi->closing)
        return;
    pi->workers++; /* pin while callbacks run */
    /* Every waiter, then every build. */
    pi_cancel_all(pi);
    pi->closing = true;
    pi_builds_close(pi);
    viewcache_free(&pi->cache);
    uv_timer_stop(&pi->kick);
    uv_close((uv_handle_t *)&pi->kick, on_kick_closed);
    pi->workers--;
    pi_free_final(pi);
}

/* ---- lookups ------------------------------------------------------------------------ */

/* A view from memory for this reader: a decrypted view it may read, or a
 * notice. A decrypted view it may not read is not an answer (open it: the
 * build gives the reader's notice without fetching any key). */
static protect_in_view *cached_for(protect_in *pi, protect_in_reader *r,
                                   const char *hint, bool full)
{
    if (hint == NULL || pi->cache == NULL)
        return NULL;
    protect_in_view *v = viewcache_get(pi->cache, hint, pi_now(pi));
    if (v == NULL)
        return NULL;
    if (full && !protect_in_view_complete(v)) {
        protect_in_view_unref(&v); /* a summary view: the message is opened */
        return NULL;
    }
    if (v->reason == PROTECT_IN_DECRYPTED &&
        pi_access(pi, r, &v->binding) != PROTECT_IN_DECRYPTED)
        protect_in_view_unref(&v);
    return v;
}

int protect_in_lookup(protect_in *pi, protect_in_reader *r, const char *hint,
                      enum protect_in_need need, protect_in_view **view_r)
{
    *view_r = NULL;
    if (pi == NULL || r == NULL || pi->closing)
        return PROTECT_IN_EINVAL;
    pi->stats.lookups++;
    protect_in_view *v = cached_for(pi, r, hint, need == PROTECT_IN_FULL);
    if (v != NULL) {
        pi->stats.lookup_hits_cache++;
        *view_r = v;
        return 1;
    }
    if (need != PROTECT_IN_SUMMARY || hint == NULL)
        return 0;
    uint8_t *blob = NULL;
    size_t len = 0;
    int ret = kme_vault_meta_get(pi->vault, hint, &blob, &len, NULL);
    if (ret == KME_VAULT_ENOMEM)
        return PROTECT_IN_ENOMEM;
    if (ret < 0)
        return 0; /* absent, or the vault cannot say: open the message */
    ret = pi_meta_decode(blob, len, hint, &pi->hooks, &v);
    kme_vault_bytes_free(&blob, len);
    if (ret == PROTECT_IN_ENOMEM)
        return ret;
    if (ret < 0)
        return 0;
    if (pi_access(pi, r, &v->binding) != PROTECT_IN_DECRYPTED) {
        protect_in_view_unref(&v);
        return 0;
    }
    pi->stats.lookup_hits_meta++;
    /* kept in memory: the next sweep reads no vault row (a complete view
     * built later replaces it) */
    pi_cache_put(pi, hint, v, 0);
    *view_r = v;
    return 1;
}

/* ---- requests ---------------------------------------------------------------------- */

void pi_waiter_free(struct pi_waiter *w)
{
    protect_in_reader_free(&w->reader);
    free(w);
}

static int open_request(protect_in *pi, protect_in_reader *r, const char *hint,
                        protect_in_fetch_fn fetch, void *fetch_arg,
                        protect_in_fetch **supplied_r, protect_in_view_cb cb,
                        void *arg)
{
    struct pi_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return PROTECT_IN_ENOMEM;
    w->reader = pi_reader_ref(r);
    w->fetch = fetch;
    w->fetch_arg = fetch_arg;
    w->cb = cb;
    w->arg = arg;
    w->asked = fetch == NULL; /* a supplying request is never asked */
    pi->stats.opens++;

    protect_in_view *v = cached_for(pi, r, hint, true);
    if (v != NULL) {
        struct pi_ready *rd = calloc(1, sizeof(*rd));
        if (rd == NULL) {
            protect_in_view_unref(&v);
            pi_waiter_free(w);
            return PROTECT_IN_ENOMEM;
        }
        rd->w = w;
        rd->view = v;
        struct pi_ready **pp = &pi->ready; /* keep the order of requests */
        while (*pp != NULL)
            pp = &(*pp)->next;
        *pp = rd;
        pi_kick(pi);
        return 0;
    }
    struct pi_build *b = pi_build_find(pi, hint);
    if (b != NULL) {
        pi->stats.coalesced++;
        pi_build_join(b, w);
        return 0;
    }
    int ret = pi_build_start(pi, hint, w, supplied_r);
    if (ret < 0) {
        pi_waiter_free(w);
        return ret;
    }
    return 0;
}

int protect_in_open(protect_in *pi, protect_in_reader *r, const char *hint,
                    protect_in_fetch_fn fetch, void *fetch_arg,
                    protect_in_view_cb cb, void *arg)
{
    if (pi == NULL || r == NULL || fetch == NULL || cb == NULL || pi->closing)
        return PROTECT_IN_EINVAL;
    return open_request(pi, r, hint, fetch, fetch_arg, NULL, cb, arg);
}

int protect_in_open_supplied(protect_in *pi, protect_in_reader *r,
                             const char *hint, protect_in_fetch **fetch_r,
                             protect_in_view_cb cb, void *arg)
{
    if (fetch_r != NULL)
        *fetch_r = NULL;
    if (pi == NULL || r == NULL || fetch_r == NULL || cb == NULL || pi->closing)
        return PROTECT_IN_EINVAL;
    return open_request(pi, r, hint, NULL, NULL, fetch_r, cb, arg);
}

size_t protect_in_cancel(protect_in *pi, void *arg)
{
    if (pi == NULL || pi->closing)
        return 0;
    pi->workers++; /* pin: a callback may free pi */
    size_t n = pi_build_cancel(pi, arg);
    pi->workers--;
    if (pi->closing)
        pi_free_final(pi);
    return n;
}

void protect_in_get_stats(const protect_in *pi, struct protect_in_stats *st)
{
    *st = pi->stats;
    st->in_flight = pi_builds_count(pi);
    if (pi->cache != NULL) {
        struct viewcache_stats cs;
        viewcache_get_stats(pi->cache, &cs);
        st->cached_views = cs.entries;
        st->cached_bytes = cs.bytes;
        st->evictions = cs.evictions;
    }
}
