/* The asynchronous KME client library against real KMEs (qumail kme):
 * keep-alive pool and queueing, exact-bit enc splitting, dec in order and
 * byte-identical, typed errors, cancellation, freeing from a callback, the
 * libuv rule for synchronous failures, and no handle left behind.
 *
 * usage: kme_client_api URL_A URL_B CERTDIR MASTER_SAE SLAVE_SAE OTHER_SAE
 *   URL_A: the master SAE's KME, URL_B: the slave SAE's KME; certificates
 *   CERTDIR/<sae>.pem/.key and CERTDIR/ca.pem. Exit 0 when every check
 *   passes; one line per check on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kme_client.h"

static const char *url_a, *url_b, *certdir, *master, *slave, *other;
static int failures;
static char certbuf[3][512];

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        }                                                                    \
    } while (0)

static struct kme_client_config config_for(const char *url, const char *sae)
{
    snprintf(certbuf[0], sizeof(certbuf[0]), "%s/%s.pem", certdir, sae);
    snprintf(certbuf[1], sizeof(certbuf[1]), "%s/%s.key", certdir, sae);
    snprintf(certbuf[2], sizeof(certbuf[2]), "%s/ca.pem", certdir);
    return (struct kme_client_config){
        .url = url,
        .cert_file = certbuf[0],
        .key_file = certbuf[1],
        .ca_file = certbuf[2],
        .max_connections = 4,
        .dec_deadline_ms = 2000,
    };
}

static kme_client *client_for(uv_loop_t *loop, const char *url, const char *sae)
{
    struct kme_client_config cfg = config_for(url, sae);
    char *err = NULL;
    kme_client *c = kme_client_new(loop, &cfg, &err);
    if (c == NULL) {
        printf("FAIL kme_client_new: %s\n", err);
        free(err);
        exit(1);
    }
    return c;
}

/* ---- collecting results ------------------------------------------------- */

struct slot {
    bool called;
    int calls;
    int error;
    int http_status;
    char message[300];
    struct kme_keys *keys;
    kme_client **free_client; /* free this client inside the callback */
};

static void keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct slot *s = arg;
    s->called = true;
    s->calls++;
    s->error = res->error;
    s->http_status = res->http_status;
    snprintf(s->message, sizeof(s->message), "%s", res->message);
    s->keys = keys;
    if (s->free_client != NULL)
        kme_client_free(s->free_client);
}

static void status_cb(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    struct slot *s = arg;
    s->called = true;
    s->calls++;
    s->error = res->error;
    snprintf(s->message, sizeof(s->message), "%s", res->message);
    if (st != NULL)
        snprintf(s->message, sizeof(s->message), "%s->%s max %lld min %lld per %lld",
                 st->source_kme_id, st->target_kme_id, (long long)st->max_key_size,
                 (long long)st->min_key_size, (long long)st->max_key_per_request);
}

static void run_until(uv_loop_t *loop, struct slot *slots, size_t n)
{
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++)
            done += slots[i].called;
        if (done == n)
            return;
        if (uv_run(loop, UV_RUN_ONCE) == 0)
            return;
    }
}

/* ---- checks ------------------------------------------------------------- */

#define N_CONC 64

static void test_pool_enc_dec(uv_loop_t *loop)
{
    kme_client *a = client_for(loop, url_a, master);
    kme_client *b = client_for(loop, url_b, slave);

    struct slot st = {0};
    CHECK(kme_client_status(a, slave, status_cb, &st) == 0, "status submit");
    CHECK(!st.called, "status callback called synchronously");
    run_until(loop, &st, 1);
    CHECK(st.error == 0, "status: %s", st.message);
    printf("ok   status: %s\n", st.message);

    /* 64 concurrent requests of different exact sizes on 4 connections */
    static struct slot enc[N_CONC];
    memset(enc, 0, sizeof(enc));
    for (int i = 0; i < N_CONC; i++) {
        uint64_t bits = (uint64_t)(i * 37 % 900 + 1) * 8 + 256;
        CHECK(kme_client_enc_bits(a, slave, bits, keys_cb, &enc[i]) == 0, "enc submit %d", i);
    }
    struct kme_client_stats stats;
    kme_client_get_stats(a, &stats);
    CHECK(stats.queued > 0, "nothing queued with 64 requests on 4 connections");
    run_until(loop, enc, N_CONC);
    size_t keys_total = 0;
    for (int i = 0; i < N_CONC; i++) {
        uint64_t bits = (uint64_t)(i * 37 % 900 + 1) * 8 + 256;
        CHECK(enc[i].calls == 1 && enc[i].error == 0, "enc %d: %s", i, enc[i].message);
        if (enc[i].keys != NULL) {
            CHECK(enc[i].keys->total_len * 8 == bits, "enc %d: %zu bytes for %llu bits", i,
                  enc[i].keys->total_len, (unsigned long long)bits);
            keys_total += enc[i].keys->count;
        }
    }
    kme_client_get_stats(a, &stats);
    CHECK(stats.connections_opened <= 4, "opened %llu connections",
          (unsigned long long)stats.connections_opened);
    CHECK(stats.reused >= stats.http_requests - stats.connections_opened,
          "keep-alive: %llu reused of %llu", (unsigned long long)stats.reused,
          (unsigned long long)stats.http_requests);
    printf("ok   64 concurrent enc_bits: %zu keys, %llu HTTP requests on %llu connections\n",
           keys_total, (unsigned long long)stats.http_requests,
           (unsigned long long)stats.connections_opened);

    /* a request larger than max_key_size * max_key_per_request */
    struct slot big = {0};
    uint64_t big_bits = 8ull * 1024 * 300 + 8ull * 77;
    CHECK(kme_client_enc_bits(a, slave, big_bits, keys_cb, &big) == 0, "big submit");
    run_until(loop, &big, 1);
    CHECK(big.error == 0 && big.keys && big.keys->total_len * 8 == big_bits, "big enc: %s",
          big.message);
    if (big.keys)
        printf("ok   enc_bits(%llu): %zu keys, exact total\n", (unsigned long long)big_bits,
               big.keys->count);

    /* dec of everything on the slave side, in order, byte-identical */
    static struct slot dec[N_CONC + 1];
    memset(dec, 0, sizeof(dec));
    for (int i = 0; i <= N_CONC; i++) {
        struct kme_keys *k = i < N_CONC ? enc[i].keys : big.keys;
        if (k == NULL) {
            dec[i].called = true;
            continue;
        }
        const char **ids = calloc(k->count, sizeof(*ids));
        for (size_t j = 0; j < k->count; j++)
            ids[j] = k->keys[j].key_id;
        CHECK(kme_client_dec_keys(b, master, ids, k->count, keys_cb, &dec[i]) == 0,
              "dec submit %d", i);
        free(ids);
    }
    run_until(loop, dec, N_CONC + 1);
    int same = 0;
    for (int i = 0; i <= N_CONC; i++) {
        struct kme_keys *k = i < N_CONC ? enc[i].keys : big.keys;
        if (k == NULL)
            continue;
        CHECK(dec[i].error == 0, "dec %d: %s", i, dec[i].message);
        if (dec[i].keys == NULL)
            continue;
        CHECK(dec[i].keys->count == k->count && dec[i].keys->total_len == k->total_len &&
                  memcmp(dec[i].keys->material, k->material, k->total_len) == 0,
              "dec %d differs from enc", i);
        for (size_t j = 0; j < k->count && j < dec[i].keys->count; j++)
            CHECK(strcmp(dec[i].keys->keys[j].key_id, k->keys[j].key_id) == 0, "order");
        same++;
    }
    printf("ok   dec of %d key sets: identical bytes, same order\n", same);

    /* delivered keys are gone: a second dec is "not found" after retries */
    if (enc[0].keys != NULL) {
        struct slot again = {0};
        const char *id = enc[0].keys->keys[0].key_id;
        CHECK(kme_client_dec_keys(b, master, &id, 1, keys_cb, &again) == 0, "again submit");
        run_until(loop, &again, 1);
        CHECK(again.error == KME_ENOTFOUND, "second dec: %s %s",
              kme_client_errname(again.error), again.message);
        kme_client_get_stats(b, &stats);
        CHECK(stats.retries > 0, "no retries before giving up");
        printf("ok   second dec of a delivered key: %s (%s)\n",
               kme_client_errname(again.error), again.message);
    }

    /* an SAE the keys were not issued for */
    if (enc[1].keys != NULL) {
        kme_client *o = client_for(loop, url_b, other);
        struct slot unauth = {0};
        const char *id = enc[1].keys->keys[0].key_id;
        CHECK(kme_client_dec_keys(o, master, &id, 1, keys_cb, &unauth) == 0, "unauth submit");
        run_until(loop, &unauth, 1);
        CHECK(unauth.error == KME_EUNAUTHORIZED || unauth.error == KME_ENOTFOUND,
              "other SAE: %s %s", kme_client_errname(unauth.error), unauth.message);
        printf("ok   dec by another SAE: %s (HTTP %d)\n", kme_client_errname(unauth.error),
               unauth.http_status);
        kme_client_free(&o);
    }

    for (int i = 0; i <= N_CONC; i++) {
        kme_keys_free(&dec[i].keys);
        if (i < N_CONC)
            kme_keys_free(&enc[i].keys);
    }
    kme_keys_free(&big.keys);
    kme_client_free(&a);
    kme_client_free(&b);
}

static void test_api_rules(uv_loop_t *loop)
{
    kme_client *a = client_for(loop, url_a, master);

    /* a burst with a cold limits cache costs one status call, not ten */
    struct slot burst[10];
    memset(burst, 0, sizeof(burst));
    for (int i = 0; i < 10; i++)
        CHECK(kme_client_enc_bits(a, slave, 256, keys_cb, &burst[i]) == 0, "burst %d", i);
    run_until(loop, burst, 10);
    struct kme_client_stats stats;
    kme_client_get_stats(a, &stats);
    for (int i = 0; i < 10; i++) {
        CHECK(burst[i].error == 0, "burst %d: %s", i, burst[i].message);
        kme_keys_free(&burst[i].keys);
    }
    CHECK(stats.http_requests == 11, "burst: %llu HTTP requests, want 1 status + 10 enc",
          (unsigned long long)stats.http_requests);
    printf("ok   cold burst of 10: %llu HTTP requests (one shared status)\n",
           (unsigned long long)stats.http_requests);
    kme_client_free(&a);
    a = client_for(loop, url_a, master);

    /* synchronous failure: no callback, ever */
    struct slot bad = {0};
    CHECK(kme_client_enc_bits(a, slave, 12, keys_cb, &bad) == KME_EINVAL, "12 bits accepted");
    CHECK(kme_client_enc_bits(a, "", 256, keys_cb, &bad) == KME_EINVAL, "blank SAE accepted");
    const char *ids[] = {"550e8400-e29b-41d4-a716-446655440000",
                         "550E8400-E29B-41D4-A716-446655440000"};
    CHECK(kme_client_dec_keys(a, master, ids, 2, keys_cb, &bad) == KME_EINVAL,
          "duplicate IDs accepted");
    uv_run(loop, UV_RUN_NOWAIT);
    CHECK(!bad.called, "callback after a synchronous failure");

    /* cancel by arg: callbacks run inside the call */
    struct slot c1 = {0}, c2 = {0}, keep = {0};
    CHECK(kme_client_enc_bits(a, slave, 256, keys_cb, &c1) == 0, "c1");
    CHECK(kme_client_enc_bits(a, slave, 256, keys_cb, &c1) == 0, "c1 again");
    CHECK(kme_client_status(a, slave, status_cb, &c2) == 0, "c2");
    CHECK(kme_client_enc_bits(a, slave, 512, keys_cb, &keep) == 0, "keep");
    CHECK(kme_client_cancel(a, &c1) == 2, "cancel count");
    CHECK(c1.calls == 2 && c1.error == KME_ECANCELLED, "cancelled: %d %s", c1.calls,
          kme_client_errname(c1.error));
    run_until(loop, &keep, 1);
    run_until(loop, &c2, 1);
    CHECK(keep.error == 0 && c2.error == 0, "the others still complete: %s / %s",
          keep.message, c2.message);
    kme_keys_free(&keep.keys);
    printf("ok   cancel: 2 cancelled synchronously, others completed\n");

    /* freeing the client from inside a callback cancels the rest */
    struct slot f[3] = {{0}};
    for (int i = 0; i < 3; i++)
        f[i].free_client = &a; /* the first callback frees it */
    for (int i = 0; i < 3; i++)
        CHECK(kme_client_enc_bits(a, slave, 256, keys_cb, &f[i]) == 0, "f%d", i);
    run_until(loop, f, 3);
    CHECK(a == NULL, "client not freed");
    int cancelled = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(f[i].calls == 1, "f%d called %d times", i, f[i].calls);
        cancelled += f[i].error == KME_ECANCELLED;
        kme_keys_free(&f[i].keys);
    }
    CHECK(cancelled == 2, "%d cancelled by the free, want 2", cancelled);
    printf("ok   free inside a callback: %d of 3 cancelled, each called once\n", cancelled);

    /* free with requests in flight */
    kme_client *b = client_for(loop, url_a, master);
    struct slot g[2] = {{0}};
    CHECK(kme_client_enc_bits(b, slave, 256, keys_cb, &g[0]) == 0, "g0");
    CHECK(kme_client_status(b, slave, status_cb, &g[1]) == 0, "g1");
    kme_client_free(&b);
    CHECK(g[0].calls == 1 && g[0].error == KME_ECANCELLED && g[1].error == KME_ECANCELLED,
          "free: %s %s", kme_client_errname(g[0].error), kme_client_errname(g[1].error));
    printf("ok   free with requests in flight: all cancelled\n");
}

static void noop_timer_cb(uv_timer_t *t)
{
    (void)t;
}

static void test_idle_close(uv_loop_t *loop)
{
    struct kme_client_config cfg = config_for(url_a, master);
    cfg.idle_timeout_ms = 100;
    char *err = NULL;
    kme_client *a = kme_client_new(loop, &cfg, &err);
    CHECK(a != NULL, "new: %s", err ? err : "");
    if (a == NULL)
        return;
    struct slot s1 = {0}, s2 = {0}, s3 = {0};
    CHECK(kme_client_status(a, slave, status_cb, &s1) == 0, "s1");
    run_until(loop, &s1, 1);
    CHECK(kme_client_status(a, slave, status_cb, &s2) == 0, "s2");
    run_until(loop, &s2, 1);
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, noop_timer_cb, 300, 0);
    uv_run(loop, UV_RUN_ONCE); /* the idle connection closes meanwhile */
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    CHECK(kme_client_status(a, slave, status_cb, &s3) == 0, "s3");
    run_until(loop, &s3, 1);
    struct kme_client_stats st;
    kme_client_get_stats(a, &st);
    CHECK(s1.error == 0 && s2.error == 0 && s3.error == 0, "status: %s", s3.message);
    CHECK(st.connections_opened == 2 && st.reused == 1,
          "idle close: %llu connections, %llu reused (want 2 and 1)",
          (unsigned long long)st.connections_opened, (unsigned long long)st.reused);
    printf("ok   idle connection closed after idle_timeout_ms, next request reconnects\n");
    kme_client_free(&a);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s URL_A URL_B CERTDIR MASTER SLAVE OTHER\n", argv[0]);
        return 2;
    }
    url_a = argv[1];
    url_b = argv[2];
    certdir = argv[3];
    master = argv[4];
    slave = argv[5];
    other = argv[6];
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_pool_enc_dec(&loop);
    test_api_rules(&loop);
    test_idle_close(&loop);
    uv_run(&loop, UV_RUN_DEFAULT); /* closes finish; nothing else may be alive */
    int rc = uv_loop_close(&loop);
    CHECK(rc == 0, "handles left open: %s", uv_strerror(rc));
    printf(failures ? "FAILED: %d\n" : "all passed\n", failures);
    return failures ? 1 : 0;
}
