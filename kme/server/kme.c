/* One KME: state, generation of the simulated QKD key stream, expiry of
 * held keys, lifecycle. The group commit of its state changes is in
 * commit.c. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "server_internal.h"

#define GEN_INTERVAL_MS 100 /* one generation commit per tick at most */
#define SWEEP_INTERVAL_MS 250
#define CHUNK_BYTES 1024  /* stored inline in a page: cheap head rewrites */
#define MAX_GEN_ELAPSED_MS 1000

uint64_t kme_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t kme_out_available(const struct kme *k)
{
    return k->out_acked > k->out.head ? k->out_acked - k->out.head : 0;
}

/* ---- generation of the simulated QKD key stream ---------------------------- */

static void generate(struct kme *k, uint64_t elapsed_ms)
{
    if (elapsed_ms > MAX_GEN_ELAPSED_MS)
        elapsed_ms = MAX_GEN_ELAPSED_MS;
    uint64_t bits = k->gen_carry + k->cfg.rate_bps * elapsed_ms / 1000u;
    uint64_t bytes = bits / 8;
    k->gen_carry = bits % 8;
    uint64_t cap = kme_cfg_pool_bytes(&k->cfg);
    uint64_t held = kme_stream_len(&k->out);
    if (held >= cap) {
        k->gen_carry = 0;
        return;
    }
    if (bytes > cap - held) {
        bytes = cap - held;
        k->gen_carry = 0;
    }
    if (bytes == 0)
        return;
    struct kme_batch *b = kme_batch(k);
    if (b == NULL)
        return;
    while (bytes > 0) {
        size_t n = bytes > CHUNK_BYTES ? CHUNK_BYTES : (size_t)bytes;
        uint8_t *data = malloc(n);
        struct kme_op *op = data != NULL ? kme_batch_op(b, KME_OP_OUT_MATERIAL) : NULL;
        if (op == NULL || RAND_bytes(data, (int)n) != 1) {
            if (op != NULL) /* keep the op harmless: an empty chunk */
                b->op_count--;
            free(data);
            break;
        }
        op->off = k->out.tail;
        op->data = data;
        op->len = n;
        if (kme_stream_append(&k->out, op->off, data, n) < 0) {
            b->op_count--;
            OPENSSL_cleanse(data, n);
            free(data);
            break;
        }
        bytes -= n;
    }
    kme_flush_lazy(k);
}

static void gen_tick(uv_timer_t *t)
{
    struct kme *k = t->data;
    uint64_t now = uv_now(k->loop);
    uint64_t elapsed = now - k->gen_last_ms;
    k->gen_last_ms = now;
    if (!k->failed && !k->stopping)
        generate(k, elapsed);
}

/* ---- expiry of held keys ---------------------------------------------------- */

/* Delivered keys whose redelivery grace ended: deleted like a collection.
 * false when the batch could not take the ops (tried again next sweep). */
static bool end_grace(struct kme *k, struct kme_held *h, uint64_t now)
{
    for (size_t j = 0; j < h->delivered_count;) {
        if (h->delivered_ms[j] + k->cfg.redeliver_ms > now) {
            j++;
            continue;
        }
        struct kme_batch *b = kme_batch(k);
        if (b == NULL || kme_batch_reserve(b, 1) < 0)
            return false;
        char *slave = NULL;
        uint64_t off = h->off;
        char key_id[sizeof(h->key_id)];
        memcpy(key_id, h->key_id, sizeof(key_id));
        bool freed = kme_held_undeliver(&k->held, h, j, &slave);
        if (kme_batch_cancel_held_add(b, off, slave)) {
            free(slave);
        } else {
            struct kme_op *op = kme_batch_op(b, KME_OP_HELD_DEL);
            memcpy(op->key_id, key_id, sizeof(op->key_id));
            op->off = off;
            op->slave = slave;
        }
        if (freed)
            break;
    }
    kme_flush_lazy(k);
    return true;
}

static void expire_held(struct kme *k)
{
    if (k->held.count == 0)
        return;
    uint64_t now = kme_now_ms();
    size_t expired = 0;
    for (size_t i = 0; i < k->held.bucket_count; i++) {
        struct kme_held *h = k->held.buckets[i];
        while (h != NULL) {
            struct kme_held *next = h->next;
            if (h->delivered_count > 0 && !(h->expires_ms != 0 && h->expires_ms <= now)) {
                if (!end_grace(k, h, now))
                    return;
            } else if (h->expires_ms != 0 && h->expires_ms <= now) {
                struct kme_batch *b = kme_batch(k);
                size_t n = h->slave_count + h->delivered_count;
                if (b == NULL || kme_batch_reserve(b, n) < 0)
                    return;
                for (size_t j = 0; j < n; j++) {
                    struct kme_op *op = kme_batch_op(b, KME_OP_HELD_DEL);
                    if (op == NULL) /* cannot happen after the reserve */
                        return;
                    char **slot = j < h->slave_count
                                      ? &h->slaves[j]
                                      : &h->delivered[j - h->slave_count];
                    memcpy(op->key_id, h->key_id, sizeof(op->key_id));
                    op->off = h->off;
                    op->slave = *slot;
                    *slot = NULL;
                }
                h->delivered_count = 0;
                h->slave_count = 0;
                kme_held_destroy(&k->held, h);
                expired++;
            }
            h = next;
        }
    }
    if (expired > 0) {
        qlog_info("kme %s: %zu held key(s) expired uncollected", k->cfg.kme_id,
                  expired);
        kme_flush_lazy(k);
    }
}

static void sweep_tick(uv_timer_t *t)
{
    struct kme *k = t->data;
    if (k->failed || k->stopping)
        return;
    expire_held(k);
    kme_api_wake(k, false);
    kme_link_tick(k);
    kme_e4_tick(k);
}

/* ---- lifecycle ------------------------------------------------------------- */

static int make_tls(struct kme *k, char **error_r)
{
    struct net_tls_config sc = {
        .server = true,
        .cert_file = k->cfg.cert_file,
        .key_file = k->cfg.key_file,
        .ca_file = k->cfg.ca_file,
        .verify_peer = true,
    };
    k->tls_server = net_tls_new(&sc, error_r);
    if (k->tls_server == NULL)
        return KME_SERVER_ETLS;
    struct net_tls_config cc = sc;
    cc.server = false;
    k->tls_client = net_tls_new(&cc, error_r);
    if (k->tls_client == NULL)
        return KME_SERVER_ETLS;
    return 0;
}

int kme_init(struct kme *k, struct kme_server *srv, uv_loop_t *loop,
             const struct kme_cfg *cfg, char **error_r)
{
    memset(k, 0, sizeof(*k));
    k->server = srv;
    k->loop = loop;
    kme_stream_init(&k->out, 0);
    kme_stream_init(&k->in, 0);
    int ret = kme_cfg_copy(&k->cfg, cfg);
    if (ret == 0 && kme_held_init(&k->held) < 0)
        ret = KME_SERVER_ENOMEM;
    if (ret == 0)
        ret = make_tls(k, error_r);
    if (ret == 0)
        ret = kme_store_open(k->cfg.database, k->cfg.sync_full, &k->store,
                             error_r);
    struct kme_meta meta;
    if (ret == 0) {
        kme_stream_clear(&k->out);
        kme_stream_clear(&k->in);
        ret = kme_store_load(k->store, &meta, &k->out, &k->in, &k->outbox,
                             &k->held, error_r);
    }
    if (ret == 0) {
        k->out_committed = k->out.tail;
        k->out_head_committed = k->out.head;
        k->out_acked = meta.out_acked;
        k->out_applied = meta.out_applied;
        k->in_committed_tail = k->in.tail;
        k->in_committed_head = k->in.head;
        k->api_listener = net_listen(loop, k->cfg.listen_host, k->cfg.listen_port,
                                     kme_http_accept, k, error_r);
        if (k->api_listener == NULL)
            ret = KME_SERVER_ELISTEN;
    }
    if (ret == 0) {
        k->link_listener = net_listen(loop, k->cfg.link_host, k->cfg.link_port,
                                      kme_link_accept, k, error_r);
        if (k->link_listener == NULL)
            ret = KME_SERVER_ELISTEN;
    }
    if (ret == 0)
        ret = kme_e4_init(k, error_r);
    if (ret < 0) {
        if (ret == KME_SERVER_ESTORE || ret == KME_SERVER_ELISTEN ||
            ret == KME_SERVER_ETLS) {
            char *detail = error_r != NULL ? *error_r : NULL;
            char *msg = NULL;
            if (error_r != NULL &&
                asprintf(&msg, "kme %s: %s", k->cfg.kme_id,
                         detail != NULL ? detail : kme_server_strerror(ret)) >= 0) {
                free(detail);
                *error_r = msg;
            }
        }
        net_listener_close(&k->api_listener);
        net_listener_close(&k->link_listener);
        kme_destroy(k);
        return ret;
    }
    qlog_info("kme %s: 014 API on %s:%u, link on %s:%u, peer %s; pool %llu "
              "bytes here, %llu bytes from the peer, %zu keys held, %zu "
              "reservations to send",
              k->cfg.kme_id, k->cfg.listen_host,
              net_listener_port(k->api_listener), k->cfg.link_host,
              net_listener_port(k->link_listener), k->cfg.peer_kme_id,
              (unsigned long long)kme_stream_len(&k->out),
              (unsigned long long)kme_stream_len(&k->in), k->held.count,
              k->outbox.count);
    return 0;
}

void kme_run(struct kme *k)
{
    uv_timer_init(k->loop, &k->gen_timer);
    uv_timer_init(k->loop, &k->sweep_timer);
    uv_timer_init(k->loop, &k->flush_timer);
    k->timers_open = 3;
    k->gen_timer.data = k;
    k->sweep_timer.data = k;
    k->flush_timer.data = k;
    k->gen_last_ms = uv_now(k->loop);
    uv_timer_start(&k->gen_timer, gen_tick, GEN_INTERVAL_MS, GEN_INTERVAL_MS);
    uv_timer_start(&k->sweep_timer, sweep_tick, 0, SWEEP_INTERVAL_MS);
    if (kme_commit_start(k) < 0) {
        qlog_error("kme %s: cannot start the commit thread; answering 503",
                   k->cfg.kme_id);
        k->failed = true;
    }
}

static void timer_closed(uv_handle_t *h)
{
    struct kme *k = h->data;
    k->timers_open--;
}

void kme_stop(struct kme *k)
{
    if (k->stopping)
        return;
    k->stopping = true;
    net_listener_close(&k->api_listener);
    net_listener_close(&k->link_listener);
    kme_api_wake(k, true);
    kme_e4_stop(k);
    kme_http_close_all(k);
    kme_link_close_all(k);
    if (k->timers_open > 0) {
        uv_close((uv_handle_t *)&k->gen_timer, timer_closed);
        uv_close((uv_handle_t *)&k->sweep_timer, timer_closed);
        uv_close((uv_handle_t *)&k->flush_timer, timer_closed);
    }
    kme_commit_stop(k);
}

bool kme_stopped(const struct kme *k)
{
    return k->in_commit == 0 && k->pending == NULL && !k->committer_started &&
           k->timers_open == 0 &&
           k->conns == NULL && k->lo == NULL && k->li_all == NULL &&
           kme_e4_stopped(k);
}

void kme_destroy(struct kme *k)
{
    kme_e4_destroy(k);
    kme_commit_destroy(k);
    kme_store_close(&k->store);
    net_tls_free(&k->tls_server);
    net_tls_free(&k->tls_client);
    kme_stream_clear(&k->out);
    kme_stream_clear(&k->in);
    kme_outbox_clear(&k->outbox);
    kme_held_free_all(&k->held);
    kme_cfg_clear(&k->cfg);
}
