/* The asynchronous ETSI 004 client (kme/etsi004_client.h) against real
 * KMEs (qumail kme with etsi004 listeners): the primitives, chunk lists at
 * both ends (same bytes, index order), 16 lists at once over a small pool,
 * typed errors (refused, wrong KME ID, status mapping), cancellation,
 * freeing from inside a callback, the libuv rule for synchronous failures,
 * and no handle left behind.
 *
 * usage: e4client_api PORT_A PORT_B CERTDIR
 *   PORT_A: KME A's 004 port (sae-a), PORT_B: KME B's (sae-b); certificates
 *   CERTDIR/<sae>.pem/.key and CERTDIR/ca.pem. Exit 0 when every check
 *   passes; one line per failed check on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "etsi004_client.h"

static uint16_t port_a, port_b;
static const char *certdir;
static int failures, checks;
static char certbuf[2][3][512];

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        }                                                                    \
    } while (0)

static struct etsi004_client_config config_for(int slot, uint16_t port, const char *sae)
{
    snprintf(certbuf[slot][0], sizeof(certbuf[slot][0]), "%s/%s.pem", certdir, sae);
    snprintf(certbuf[slot][1], sizeof(certbuf[slot][1]), "%s/%s.key", certdir, sae);
    snprintf(certbuf[slot][2], sizeof(certbuf[slot][2]), "%s/ca.pem", certdir);
    return (struct etsi004_client_config){
        .host = "127.0.0.1", .port = port, .server_name = "localhost",
        .cert_file = certbuf[slot][0], .key_file = certbuf[slot][1],
        .ca_file = certbuf[slot][2], .max_connections = 3,
    };
}

static etsi004_client *client_for(uv_loop_t *loop, int slot, uint16_t port, const char *sae)
{
    struct etsi004_client_config cfg = config_for(slot, port, sae);
    char *err = NULL;
    etsi004_client *c = etsi004_client_new(loop, &cfg, &err);
    if (c == NULL) {
        printf("FAIL etsi004_client_new: %s\n", err);
        free(err);
        exit(1);
    }
    return c;
}

/* ---- results ------------------------------------------------------------------ */

struct res {
    bool done;
    int error;
    uint32_t status;
    struct etsi004_qos qos;
    uint8_t ksid[ETSI004_KSID_LEN];
    struct kme_keys *keys;
    int calls;
    bool inside;            /* set while the submitting call runs */
    bool called_inside;
};

static void open_cb(const struct etsi004_result *r, const struct etsi004_qos *q,
                    const uint8_t *ksid, void *arg)
{
    struct res *x = arg;
    x->done = true;
    x->calls++;
    x->called_inside |= x->inside;
    x->error = r->error;
    x->status = r->status;
    if (q != NULL) {
        x->qos = *q;
        memcpy(x->ksid, ksid, ETSI004_KSID_LEN);
    }
}

static void keys_cb(const struct kme_result *r, struct kme_keys *keys, void *arg)
{
    struct res *x = arg;
    x->done = true;
    x->calls++;
    x->called_inside |= x->inside;
    x->error = r->error;
    x->keys = keys;
}

static void close_cb(const struct etsi004_result *r, void *arg)
{
    struct res *x = arg;
    x->done = true;
    x->calls++;
    x->error = r->error;
    x->status = r->status;
}

static void run_until(uv_loop_t *loop, struct res *x, size_t n)
{
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++)
            done += x[i].done;
        if (done == n || uv_run(loop, UV_RUN_ONCE) == 0)
            return;
    }
}

static void walk_count(uv_handle_t *h, void *arg)
{
    (void)h;
    (*(int *)arg)++;
}

/* ---- tests ---------------------------------------------------------------------- */

/* Opens a stream at both ends; returns its KSID in ksid. */
static void open_pair(uv_loop_t *loop, etsi004_client *a, etsi004_client *b, uint8_t *ksid,
                      uint32_t chunk)
{
    struct etsi004_qos q = {.key_chunk_size = chunk, .timeout = 2000};
    strcpy(q.metadata_mimetype, "application/json");
    struct res x[2] = {0};
    x[0].inside = true;
    int rc = etsi004_client_open(a, "qkd://sae-a", "qkd://sae-b", &q, NULL, 0, open_cb, &x[0]);
    x[0].inside = false;
    CHECK(rc == KME_OK, "open: %d", rc);
    run_until(loop, x, 1);
    CHECK(!x[0].called_inside, "callback never inside the submitting call");
    CHECK(x[0].error == KME_OK && x[0].status == ETSI004_PEER_NOT_CONNECTED,
          "NULL KSID open: error %d status %u", x[0].error, x[0].status);
    CHECK(x[0].qos.key_chunk_size == chunk, "granted chunk %u", x[0].qos.key_chunk_size);
    memcpy(ksid, x[0].ksid, ETSI004_KSID_LEN);
    rc = etsi004_client_open(b, "qkd://sae-b", "qkd://sae-a", &q, ksid, 0, open_cb, &x[1]);
    CHECK(rc == KME_OK, "open at b: %d", rc);
    run_until(loop, &x[1], 1);
    CHECK(x[1].error == KME_OK && x[1].status == ETSI004_SUCCESS,
          "peer open: error %d status %u", x[1].error, x[1].status);
    CHECK(etsi004_client_kme_id(a) != NULL && strcmp(etsi004_client_kme_id(a), "kme-a") == 0,
          "KME ID learnt from the certificate");
    CHECK(strcmp(etsi004_client_sae_id(b), "sae-b") == 0, "our SAE ID");
}

static void test_lists(uv_loop_t *loop)
{
    etsi004_client *a = client_for(loop, 0, port_a, "sae-a");
    etsi004_client *b = client_for(loop, 1, port_b, "sae-b");
    uint8_t ksid[ETSI004_KSID_LEN];
    open_pair(loop, a, b, ksid, 32);

    /* 16 lists of 5 KME-chosen chunks at once over 3 connections. */
    enum { N = 16, PER = 5 };
    struct res x[N] = {{0}};
    for (int i = 0; i < N; i++) {
        x[i].inside = true;
        int rc = etsi004_client_next_chunks(a, ksid, PER, 32, 2000, keys_cb, &x[i]);
        x[i].inside = false;
        CHECK(rc == KME_OK, "next_chunks %d", rc);
    }
    run_until(loop, x, N);
    bool seen[N * PER] = {false};
    for (int i = 0; i < N; i++) {
        CHECK(x[i].error == KME_OK && x[i].keys != NULL && x[i].keys->count == PER,
              "list %d: error %d", i, x[i].error);
        CHECK(!x[i].called_inside, "no callback inside the call");
        if (x[i].keys == NULL)
            continue;
        for (size_t k = 0; k < PER; k++) {
            uint32_t idx = x[i].keys->keys[k].index;
            CHECK(idx < N * PER && !seen[idx], "index %u unique", idx);
            if (idx < N * PER)
                seen[idx] = true;
            CHECK(k == 0 || idx > x[i].keys->keys[k - 1].index, "ascending");
            CHECK(x[i].keys->keys[k].len == 32, "chunk size");
        }
    }
    /* The other end fetches 0..79 in one list: the same bytes. */
    struct res y = {0};
    CHECK(etsi004_client_fetch_chunks(b, ksid, 0, N * PER, 32, 2000, keys_cb, &y) == KME_OK,
          "fetch");
    run_until(loop, &y, 1);
    CHECK(y.error == KME_OK && y.keys != NULL && y.keys->count == N * PER,
          "fetch 80: %d", y.error);
    size_t same = 0;
    for (int i = 0; y.keys != NULL && i < N; i++) {
        for (size_t k = 0; x[i].keys != NULL && k < PER; k++) {
            const struct kme_key *ka = &x[i].keys->keys[k];
            const struct kme_key *kb = &y.keys->keys[ka->index];
            same += kb->index == ka->index && memcmp(kb->bytes, ka->bytes, 32) == 0;
        }
    }
    CHECK(same == N * PER, "both ends hold the same bytes for every index (%zu)", same);
    /* A second fetch of those indices: status 2, reported as an error. */
    struct res z = {0};
    etsi004_client_fetch_chunks(b, ksid, 3, 2, 32, 2000, keys_cb, &z);
    run_until(loop, &z, 1);
    CHECK(z.error == KME_ESERVER && z.keys == NULL, "used indices: KME_ESERVER (%d)", z.error);
    for (int i = 0; i < N; i++)
        kme_keys_free(&x[i].keys);
    kme_keys_free(&y.keys);

    /* Cancellation: a list cancelled at once calls back with
     * KME_ECANCELLED before etsi004_client_cancel returns. */
    struct res c1 = {0};
    etsi004_client_next_chunks(a, ksid, 20, 32, 2000, keys_cb, &c1);
    size_t n = etsi004_client_cancel(a, &c1);
    CHECK(n == 1 && c1.done && c1.error == KME_ECANCELLED && c1.calls == 1,
          "cancel: n %zu error %d calls %d", n, c1.error, c1.calls);
    /* The client keeps working afterwards. */
    struct res c2 = {0};
    etsi004_client_next_chunks(a, ksid, 2, 32, 2000, keys_cb, &c2);
    run_until(loop, &c2, 1);
    CHECK(c2.error == KME_OK, "after a cancellation: %d", c2.error);
    kme_keys_free(&c2.keys);

    /* Synchronous failures never call back. */
    struct res s = {0};
    CHECK(etsi004_client_next_chunks(a, ksid, 0, 32, 0, keys_cb, &s) == KME_EINVAL, "count 0");
    CHECK(etsi004_client_fetch_chunks(a, ksid, UINT32_MAX - 1, 5, 32, 0, keys_cb, &s) ==
              KME_EINVAL, "beyond the last index");
    CHECK(s.calls == 0, "no callback for a synchronous failure");

    struct res cl[2] = {{0}};
    etsi004_client_close(a, ksid, close_cb, &cl[0]);
    etsi004_client_close(b, ksid, close_cb, &cl[1]);
    run_until(loop, cl, 2);
    CHECK(cl[0].status == 0 && cl[1].status == 0, "close at both ends");
    etsi004_client_free(&a);
    etsi004_client_free(&b);
}

/* Freeing the client inside a callback, with other requests pending. */
struct free_ctx {
    etsi004_client *c;
    int calls, cancelled;
};

static void free_inside_cb(const struct kme_result *r, struct kme_keys *keys, void *arg)
{
    struct free_ctx *f = arg;
    f->calls++;
    kme_keys_free(&keys);
    if (r->error == KME_ECANCELLED)
        f->cancelled++;
    else
        etsi004_client_free(&f->c);
}

static void test_free_inside(uv_loop_t *loop)
{
    etsi004_client *a = client_for(loop, 0, port_a, "sae-a");
    etsi004_client *b = client_for(loop, 1, port_b, "sae-b");
    uint8_t ksid[ETSI004_KSID_LEN];
    open_pair(loop, a, b, ksid, 16);
    struct free_ctx f = {.c = a};
    for (int i = 0; i < 4; i++)
        etsi004_client_next_chunks(a, ksid, 3, 16, 2000, free_inside_cb, &f);
    while (f.calls < 4 && uv_run(loop, UV_RUN_ONCE) != 0)
        ;
    CHECK(f.c == NULL, "freed in the first callback");
    CHECK(f.calls == 4 && f.cancelled == 3, "the others cancelled (calls %d cancelled %d)",
          f.calls, f.cancelled);
    etsi004_client_free(&b);
}

static void test_errors(uv_loop_t *loop)
{
    /* Nothing listens there: connection refused, temporary. */
    struct etsi004_client_config cfg = config_for(0, 1, "sae-a");
    char *err = NULL;
    etsi004_client *c = etsi004_client_new(loop, &cfg, &err);
    struct etsi004_qos q = {0};
    struct res x = {0};
    etsi004_client_open(c, "qkd://a", "qkd://b", &q, NULL, 0, open_cb, &x);
    run_until(loop, &x, 1);
    CHECK(x.error == KME_ECONNREFUSED, "refused: %d", x.error);
    CHECK(kme_client_error_is_temporary(x.error), "refused is temporary");
    etsi004_client_free(&c);
    /* The wrong KME ID in its certificate: KME_ETLS, nothing sent. */
    cfg = config_for(0, port_a, "sae-a");
    cfg.expect_kme_id = "kme-z";
    c = etsi004_client_new(loop, &cfg, &err);
    struct res y = {0};
    etsi004_client_open(c, "qkd://a", "qkd://b", &q, NULL, 0, open_cb, &y);
    run_until(loop, &y, 1);
    CHECK(y.error == KME_ETLS, "wrong KME ID: %d", y.error);
    etsi004_client_free(&c);
    /* Status mapping. */
    CHECK(etsi004_status_error(2) == KME_ESERVER && etsi004_status_error(6) == KME_ETIMEDOUT &&
              etsi004_status_error(3) == KME_ENOTFOUND && etsi004_status_error(5) ==
              KME_EUNAUTHORIZED && etsi004_status_error(7) == KME_ELIMITS,
          "status mapping");
    char *host = NULL;
    uint16_t port = 0;
    CHECK(etsi004_parse_address("etsi004://[::1]:9", &host, &port) == 0 &&
              strcmp(host, "::1") == 0 && port == 9, "IPv6 address");
    free(host);
    CHECK(etsi004_parse_address("kme.example", &host, &port) == 0 && port == 25575,
          "default port");
    free(host);
    CHECK(etsi004_parse_address("h:0", &host, &port) == KME_EINVAL, "port 0");
    CHECK(etsi004_parse_address("h:1x", &host, &port) == KME_EINVAL, "bad port");
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT_A PORT_B CERTDIR\n", argv[0]);
        return 2;
    }
    port_a = (uint16_t)atoi(argv[1]);
    port_b = (uint16_t)atoi(argv[2]);
    certdir = argv[3];
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_lists(&loop);
    test_free_inside(&loop);
    test_errors(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    int handles = 0;
    uv_walk(&loop, walk_count, &handles);
    CHECK(handles == 0, "no handle left (%d)", handles);
    CHECK(uv_loop_close(&loop) == 0, "loop closes");
    printf("e4client_api: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
