/* The ETSI GS QKD 004 server of one KME: listener, loading, the sweep
 * (deadlines, TTL), stopping. The owner of the KME pair's streams is the
 * KME whose kme_id sorts first (strcmp): a fixed, symmetric choice that
 * needs no agreement protocol. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "log.h"

#define TTL_SWEEP_MS 1000

int kme_e4_init(struct kme *k, char **error_r)
{
    if (!k->cfg.e4.enabled)
        return 0;
    struct kme_e4 *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return KME_SERVER_ENOMEM;
    e->k = k;
    e->owner = strcmp(k->cfg.kme_id, k->cfg.peer_kme_id) < 0;
    e->dirty_tail = &e->dirty_first;
    e->ctl_tail = &e->ctl_first;
    /* Request ids start at random: ids from before a restart are never
     * taken for new ones by the owner's memory of answers. */
    if (RAND_bytes((unsigned char *)&e->next_req, sizeof(e->next_req)) != 1)
        e->next_req = kme_now_ms() << 16;
    e->next_req &= (UINT64_C(1) << 52) - 1; /* exact in a JSON number */
    k->e4 = e;
    int ret = kme_e4_store_load(kme_store_e4(k->store), k, error_r);
    if (ret < 0)
        return ret;
    e->listener = net_listen(k->loop, k->cfg.e4.host, k->cfg.e4.port, e4_accept, k, error_r);
    if (e->listener == NULL)
        return KME_SERVER_ELISTEN;
    qlog_info("kme %s: ETSI 004 on %s:%u (%s of the streams shared with %s; %zu streams "
              "loaded)", k->cfg.kme_id, k->cfg.e4.host, net_listener_port(e->listener),
              e->owner ? "owner" : "not the owner", k->cfg.peer_kme_id, e->count);
    return 0;
}

uint16_t kme_e4_port(const struct kme *k)
{
    return k->e4 != NULL && k->e4->listener != NULL ? net_listener_port(k->e4->listener)
                                                    : 0;
}

/* Chunks whose TTL passed are erased (used); the owner removes streams
 * that are over: both ends closed, or an end never opened, for a TTL since
 * the last activity (kme/ETSI004.md, "Lifetimes"). */
static void ttl_sweep(struct kme *k)
{
    struct kme_e4 *e = k->e4;
    uint64_t now = e4_now();
    size_t expired = 0;
    for (size_t i = 0; i < e->bucket_count; i++) {
        struct e4_stream *s = e->buckets[i];
        while (s != NULL) {
            struct e4_stream *next = s->next;
            /* Collected first: using a chunk may unlink others. */
            uint32_t *idx = NULL;
            size_t n = 0, cap = 0;
            for (size_t j = 0; j < s->chunk_buckets; j++) {
                for (struct e4_chunk *c = s->chunks[j]; c != NULL; c = c->next) {
                    if (c->key == NULL || c->exp_ms > now)
                        continue;
                    if (n == cap) {
                        size_t nc = cap ? 2 * cap : 64;
                        uint32_t *m = realloc(idx, nc * sizeof(*idx));
                        if (m == NULL)
                            break;
                        idx = m;
                        cap = nc;
                    }
                    idx[n++] = c->index;
                }
            }
            for (size_t j = 0; j < n; j++) {
                struct e4_chunk *c = e4_chunk_find(s, idx[j]);
                if (c != NULL && c->key != NULL) {
                    e4_chunk_use(k, s, c);
                    expired++;
                }
            }
            free(idx);
            bool over = (s->end[E4_HERE] == E4_END_CLOSED && s->end[E4_THERE] == E4_END_CLOSED) ||
                        s->end[E4_HERE] == E4_END_NONE || s->end[E4_THERE] == E4_END_NONE;
            if (e->owner && over && now >= s->last_ms + (uint64_t)s->qos.ttl * 1000u) {
                json_t *gone = json_pack("{s:s, s:s, s:b}", "t", "s", "ksid", s->text,
                                         "gone", 1);
                e4_stream_drop(k, s);
                e4_ctl_send(k, gone); /* the sync covers it if this is lost */
            }
            s = next;
        }
    }
    if (expired > 0)
        qlog_info("kme %s: %zu 004 chunk(s) expired unused (TTL)", k->cfg.kme_id, expired);
}

void kme_e4_tick(struct kme *k)
{
    if (k->e4 == NULL)
        return;
    uint64_t now = uv_now(k->loop);
    if (now - k->e4->last_ttl_sweep >= TTL_SWEEP_MS) {
        k->e4->last_ttl_sweep = now;
        ttl_sweep(k);
    }
    e4_wake(k, false);
}

void kme_e4_wake(struct kme *k)
{
    e4_wake(k, false);
}

void kme_e4_stop(struct kme *k)
{
    struct kme_e4 *e = k->e4;
    if (e == NULL)
        return;
    net_listener_close(&e->listener);
    e4_wake(k, true);
    e4_conn_close_all(k);
}

bool kme_e4_stopped(const struct kme *k)
{
    return k->e4 == NULL || k->e4->conns == NULL;
}

void kme_e4_destroy(struct kme *k)
{
    struct kme_e4 *e = k->e4;
    if (e == NULL)
        return;
    net_listener_close(&e->listener);
    while (e->waits != NULL) {
        struct e4_wait *w = e->waits;
        e->waits = w->next;
        e4_wait_free(w);
    }
    for (size_t i = 0; i < e->bucket_count; i++) {
        while (e->buckets[i] != NULL)
            e4_stream_remove(e, e->buckets[i]);
    }
    free(e->buckets);
    e4_ctl_clear(e);
    free(e);
    k->e4 = NULL;
}
