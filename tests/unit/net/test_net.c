/* net: real sockets on 127.0.0.1, real TLS with certificates made by
 * certs/mkcerts.sh. Each test runs its own loop to completion and checks
 * that no handle is left open. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "net.h"

static char cert_dir[512];

static char *cert_path(const char *name)
{
    static char paths[8][600];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 600, "%s/%s", cert_dir, name);
    return p;
}

static int make_certs(void **state)
{
    (void)state;
    snprintf(cert_dir, sizeof(cert_dir), "%s/net-test-certs", QUMAIL_TEST_TMP);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "sh %s/certs/mkcerts.sh -o %s -k kme-a -s sae-a >/dev/null",
             QUMAIL_SRC_DIR, cert_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %s\n", uv_handle_type_name(h->type));
}

/* Runs the loop until nothing is left and asserts no handle leaked. */
static void finish_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        uv_walk(loop, walk_cb, NULL);
    assert_int_equal(rc, 0);
}

static void guard_cb(uv_timer_t *t)
{
    (void)t;
    fail_msg("test did not finish within its time limit");
}

/* A timer that fails the test if the loop runs too long; unref'd so it
 * does not keep the loop alive. */
static void arm_guard(uv_loop_t *loop, uv_timer_t *guard, uint64_t ms)
{
    uv_timer_init(loop, guard);
    uv_timer_start(guard, guard_cb, ms, 0);
    uv_unref((uv_handle_t *)guard);
}

static void close_guard(uv_timer_t *guard) { uv_close((uv_handle_t *)guard, NULL); }

static net_tls *make_tls(bool server, bool verify, const char *cert, const char *key)
{
    struct net_tls_config cfg = {
        .server = server,
        .cert_file = cert ? cert_path(cert) : NULL,
        .key_file = key ? cert_path(key) : NULL,
        .ca_file = cert_path("ca.pem"),
        .verify_peer = verify,
    };
    char *err = NULL;
    net_tls *tls = net_tls_new(&cfg, &err);
    if (tls == NULL)
        fail_msg("net_tls_new: %s", err);
    return tls;
}

/* ---- a line echo server ---------------------------------------------------- */

struct server {
    net_listener *listener;
    net_conn *conn;
    net_tls *tls;          /* implicit TLS when set at accept */
    net_tls *starttls;     /* upgrade on "STARTTLS" line */
    char peer_cn[128];
    char sni[128];
    char seen[4096];       /* every line the server read, concatenated */
    size_t seen_len;
    int errors;
    int tls_ready;
    size_t slow_consume;   /* consume at most this many bytes per event */
    size_t total_read;
    uint32_t checksum;
};

static void server_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct server *s = arg;
    switch (ev) {
    case NET_EV_TLS_READY:
        s->tls_ready++;
        net_conn_peer_subject(c, "CN", s->peer_cn, sizeof(s->peer_cn));
        if (net_conn_server_name(c) != NULL)
            snprintf(s->sni, sizeof(s->sni), "%s", net_conn_server_name(c));
        assert_string_equal(net_conn_tls_version(c), "TLSv1.3");
        return;
    case NET_EV_READ:
        if (s->slow_consume > 0) {
            size_t len;
            const unsigned char *in = (const unsigned char *)net_conn_input(c, &len);
            if (len > s->slow_consume)
                len = s->slow_consume;
            for (size_t i = 0; i < len; i++)
                s->checksum = s->checksum * 31 + in[i];
            s->total_read += len;
            net_conn_consume(c, len);
            /* Leave the rest for a later turn: pause, then resume. */
            net_conn_input(c, &len);
            if (len > 0) {
                net_conn_pause(c);
                net_conn_resume(c);
            }
            return;
        }
        for (;;) {
            size_t n = net_conn_line_len(c);
            if (n == 0)
                return;
            size_t len;
            const char *line = net_conn_input(c, &len);
            if (s->seen_len + n < sizeof(s->seen)) {
                memcpy(s->seen + s->seen_len, line, n);
                s->seen_len += n;
            }
            bool starttls = n >= 8 && strncmp(line, "STARTTLS", 8) == 0;
            bool quit = n >= 4 && strncmp(line, "QUIT", 4) == 0;
            if (starttls) {
                net_conn_consume(c, n);
                net_conn_write(c, "220 go ahead\r\n", 14);
                assert_int_equal(net_conn_start_tls(c, s->starttls, NULL), 0);
                return;
            }
            if (quit) {
                net_conn_consume(c, n);
                net_conn_write(c, "221 bye\r\n", 9);
                net_conn_close_after_write(&s->conn);
                net_listener_close(&s->listener);
                return;
            }
            net_conn_write(c, line, n);
            net_conn_consume(c, n);
        }
    case NET_EV_EOF:
        if (s->slow_consume > 0) {
            /* Input offered before EOF may remain buffered: take it. */
            size_t len;
            const unsigned char *in = (const unsigned char *)net_conn_input(c, &len);
            for (size_t i = 0; i < len; i++)
                s->checksum = s->checksum * 31 + in[i];
            s->total_read += len;
            net_conn_consume(c, len);
        }
        /* fall through */
    case NET_EV_ERROR:
    case NET_EV_TIMEOUT:
        if (ev != NET_EV_EOF) {
            s->errors++;
            if (getenv("NET_TEST_DEBUG"))
                fprintf(stderr, "server %s: %s\n", net_event_name(ev), net_conn_error(c));
        }
        net_conn_close(&s->conn);
        net_listener_close(&s->listener);
        return;
    default:
        return;
    }
}

static void accept_cb(net_listener *l, net_conn *c, void *arg)
{
    struct server *s = arg;
    (void)l;
    s->conn = c;
    net_conn_set_cb(c, server_cb, s);
    if (s->slow_consume > 0)
        net_conn_set_max_input(c, 4096);
    if (s->tls != NULL)
        assert_int_equal(net_conn_start_tls(c, s->tls, NULL), 0);
}

static uint16_t server_start(uv_loop_t *loop, struct server *s)
{
    char *err = NULL;
    s->listener = net_listen(loop, "127.0.0.1", 0, accept_cb, s, &err);
    if (s->listener == NULL)
        fail_msg("listen: %s", err);
    return net_listener_port(s->listener);
}

/* ---- a scripted client ----------------------------------------------------- */

struct client {
    net_conn *conn;
    net_tls *tls;           /* implicit TLS right after connect */
    net_tls *starttls;      /* upgrade after "220 go ahead" */
    const char *server_name;
    const char *send_first; /* written after connect / TLS */
    const char *after_tls;  /* written after STARTTLS completes */
    char got[4096];
    size_t got_len;
    int connected, tls_ready, errors, eofs;
    char error[512];
};

static void client_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct client *k = arg;
    switch (ev) {
    case NET_EV_CONNECTED:
        k->connected++;
        if (k->tls != NULL) {
            assert_int_equal(net_conn_start_tls(c, k->tls, k->server_name), 0);
            return;
        }
        net_conn_write(c, k->send_first, strlen(k->send_first));
        return;
    case NET_EV_TLS_READY:
        k->tls_ready++;
        if (k->tls != NULL)
            net_conn_write(c, k->send_first, strlen(k->send_first));
        else
            net_conn_write(c, k->after_tls, strlen(k->after_tls));
        return;
    case NET_EV_READ: {
        size_t len;
        const char *in = net_conn_input(c, &len);
        if (k->got_len + len < sizeof(k->got)) {
            memcpy(k->got + k->got_len, in, len);
            k->got_len += len;
            k->got[k->got_len] = '\0';
        }
        net_conn_consume(c, len);
        if (k->starttls != NULL && strstr(k->got, "220 go ahead\r\n") != NULL &&
            !net_conn_is_tls(c) && k->tls_ready == 0) {
            assert_int_equal(net_conn_start_tls(c, k->starttls, k->server_name), 0);
        }
        return;
    }
    case NET_EV_EOF:
        k->eofs++;
        net_conn_close(&k->conn);
        return;
    case NET_EV_ERROR:
    case NET_EV_TIMEOUT:
        k->errors++;
        snprintf(k->error, sizeof(k->error), "%s", net_conn_error(c));
        net_conn_close(&k->conn);
        return;
    default:
        return;
    }
}

/* Runs one server and one client on a fresh loop until both are done. */
static void run_pair(struct server *s, struct client *k, const char *host)
{
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 10000);
    uint16_t port = server_start(&loop, s);
    k->conn = net_connect(&loop, host, port, client_cb, k);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_plain_echo(void **state)
{
    (void)state;
    struct server s = {0};
    struct client k = {.send_first = "hello\r\nworld\r\nQUIT\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    assert_int_equal(k.connected, 1);
    assert_string_equal(k.got, "hello\r\nworld\r\n221 bye\r\n");
    assert_int_equal(k.eofs, 1);
    assert_int_equal(s.errors, 0);
}

static void test_mutual_tls_identity(void **state)
{
    (void)state;
    struct server s = {.tls = make_tls(true, true, "kme-a.pem", "kme-a.key")};
    struct client k = {.tls = make_tls(false, true, "sae-a.pem", "sae-a.key"),
                       .server_name = "localhost",
                       .send_first = "over tls\r\nQUIT\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    assert_int_equal(k.tls_ready, 1);
    assert_int_equal(s.tls_ready, 1);
    assert_string_equal(s.peer_cn, "sae-a");
    assert_string_equal(s.sni, "localhost");
    assert_string_equal(k.got, "over tls\r\n221 bye\r\n");
    assert_int_equal(k.errors, 0);
    net_tls_free(&s.tls);
    net_tls_free(&k.tls);
    assert_null(k.tls);
}

static void test_missing_client_cert_refused(void **state)
{
    (void)state;
    struct server s = {.tls = make_tls(true, true, "kme-a.pem", "kme-a.key")};
    struct client k = {.tls = make_tls(false, true, NULL, NULL),
                       .server_name = "localhost",
                       .send_first = "should not arrive\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    assert_int_equal(s.tls_ready, 0);
    assert_int_equal(s.errors, 1);
    assert_int_equal(s.seen_len, 0);
    assert_true(k.errors + k.eofs >= 1);
    net_tls_free(&s.tls);
    net_tls_free(&k.tls);
}

static void test_wrong_host_name_refused(void **state)
{
    (void)state;
    struct server s = {.tls = make_tls(true, false, "localhost.pem", "localhost.key")};
    struct client k = {.tls = make_tls(false, true, NULL, NULL),
                       .server_name = "mail.example.org",
                       .send_first = "x\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    assert_int_equal(k.tls_ready, 0);
    assert_int_equal(k.errors, 1);
    assert_non_null(strstr(k.error, "certificate verify failed"));
    net_tls_free(&s.tls);
    net_tls_free(&k.tls);
}

static void test_ip_address_name_verified(void **state)
{
    (void)state;
    struct server s = {.tls = make_tls(true, false, "localhost.pem", "localhost.key")};
    struct client k = {.tls = make_tls(false, true, NULL, NULL),
                       .server_name = "127.0.0.1",
                       .send_first = "ip\r\nQUIT\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    assert_int_equal(k.errors, 0);
    assert_string_equal(k.got, "ip\r\n221 bye\r\n");
    net_tls_free(&s.tls);
    net_tls_free(&k.tls);
}

/* Plain first, then STARTTLS; a command pipelined behind STARTTLS in the
 * clear must never reach the server as if it came through TLS. */
static void test_starttls_discards_injected_input(void **state)
{
    (void)state;
    struct server s = {.starttls = make_tls(true, false, "localhost.pem", "localhost.key")};
    struct client k = {.starttls = make_tls(false, true, NULL, NULL),
                       .server_name = "localhost",
                       .send_first = "EHLO x\r\nSTARTTLS\r\nINJECTED\r\n",
                       .after_tls = "secure\r\nQUIT\r\n"};
    run_pair(&s, &k, "127.0.0.1");
    s.seen[s.seen_len] = '\0';
    assert_string_equal(s.seen, "EHLO x\r\nSTARTTLS\r\nsecure\r\nQUIT\r\n");
    assert_int_equal(k.tls_ready, 1);
    assert_int_equal(s.tls_ready, 1);
    assert_non_null(strstr(k.got, "secure\r\n221 bye\r\n"));
    net_tls_free(&s.starttls);
    net_tls_free(&k.starttls);
}

/* ---- bulk transfer with backpressure ---------------------------------------- */

struct bulk {
    net_conn *conn;
    net_tls *tls;
    size_t total, sent;
    uint32_t checksum;
};

static void bulk_fill(struct bulk *b)
{
    unsigned char chunk[8192];
    while (b->sent < b->total && net_conn_output_pending(b->conn) < (size_t)256 * 1024) {
        size_t n = b->total - b->sent < sizeof(chunk) ? b->total - b->sent : sizeof(chunk);
        for (size_t i = 0; i < n; i++) {
            chunk[i] = (unsigned char)((b->sent + i) * 7 + ((b->sent + i) >> 9));
            b->checksum = b->checksum * 31 + chunk[i];
        }
        assert_int_equal(net_conn_write(b->conn, chunk, n), 0);
        b->sent += n;
    }
    if (b->sent == b->total)
        net_conn_close_after_write(&b->conn);
}

static void bulk_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct bulk *b = arg;
    (void)c;
    switch (ev) {
    case NET_EV_CONNECTED:
        if (b->tls != NULL) {
            net_conn_start_tls(c, b->tls, "localhost");
            return;
        }
        bulk_fill(b);
        return;
    case NET_EV_TLS_READY:
    case NET_EV_DRAINED:
        bulk_fill(b);
        return;
    case NET_EV_ERROR:
        fail_msg("bulk sender: %s", net_conn_error(c));
        return;
    default:
        return;
    }
}

static void run_bulk(bool tls)
{
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 30000);
    struct server s = {.slow_consume = 1000};
    if (tls)
        s.tls = make_tls(true, false, "localhost.pem", "localhost.key");
    uint16_t port = server_start(&loop, &s);
    struct bulk b = {.total = 3 * 1024 * 1024 + 17};
    if (tls)
        b.tls = make_tls(false, true, NULL, NULL);
    b.conn = net_connect(&loop, "127.0.0.1", port, bulk_cb, &b);
    /* Small input limit: reading must pause and resume, never lose bytes. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    if (s.total_read != b.total) fprintf(stderr, "server errors=%d read=%zu sent=%zu\n", s.errors, s.total_read, b.sent);
    assert_int_equal(s.total_read, b.total);
    assert_int_equal(s.checksum, b.checksum);
    assert_int_equal(s.errors, 0);
    net_tls_free(&s.tls);
    net_tls_free(&b.tls);
}

static void test_bulk_plain(void **state) { (void)state; run_bulk(false); }
static void test_bulk_tls(void **state) { (void)state; run_bulk(true); }

static void test_connect_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Find a port nobody listens on: bind one, then close it. */
    struct server s = {0};
    uint16_t port = server_start(&loop, &s);
    net_listener_close(&s.listener);
    uv_run(&loop, UV_RUN_DEFAULT);
    struct client k = {.send_first = "x"};
    k.conn = net_connect(&loop, "127.0.0.1", port, client_cb, &k);
    finish_loop(&loop);
    assert_int_equal(k.connected, 0);
    assert_int_equal(k.errors, 1);
    assert_non_null(strstr(k.error, "refused"));
}

static void test_localhost_falls_back_between_addresses(void **state)
{
    (void)state;
    struct server s = {0};
/* IPv4 only */
    struct client k = {.send_first = "via name\r\nQUIT\r\n"};
    run_pair(&s, &k, "localhost");
    assert_int_equal(k.errors, 0);
    assert_string_equal(k.got, "via name\r\n221 bye\r\n");
}

static void timeout_cb(net_conn *c, enum net_event ev, void *arg)
{
    int *timeouts = arg;
    if (ev == NET_EV_TIMEOUT)
        (*timeouts)++;
    if (ev == NET_EV_TIMEOUT || ev == NET_EV_ERROR || ev == NET_EV_EOF) {
        net_conn *tmp = c;
        net_conn_close(&tmp);
    }
}

struct timeout_server {
    net_listener *listener;
    int timeouts;
};

static void timeout_accept(net_listener *l, net_conn *c, void *arg)
{
    struct timeout_server *ts = arg;
    net_conn_set_cb(c, timeout_cb, &ts->timeouts);
    net_conn_set_timeout(c, 50);
    net_listener_close(&ts->listener);
    (void)l;
}

static void test_idle_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 10000);
    struct timeout_server ts = {0};
    char *err = NULL;
    ts.listener = net_listen(&loop, "127.0.0.1", 0, timeout_accept, &ts, &err);
    assert_non_null(ts.listener);
    struct client k = {.send_first = ""};
    k.conn = net_connect(&loop, "127.0.0.1", net_listener_port(ts.listener), client_cb, &k);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    assert_int_equal(ts.timeouts, 1);
    assert_int_equal(k.eofs + k.errors, 1);
}

static void test_tls_config_errors(void **state)
{
    (void)state;
    char *err = NULL;
    struct net_tls_config cfg = {.server = true, .cert_file = "/nonexistent.pem",
                                 .key_file = "/nonexistent.key"};
    assert_null(net_tls_new(&cfg, &err));
    assert_non_null(strstr(err, "/nonexistent.pem"));
    free(err);
    struct net_tls_config server_no_cert = {.server = true};
    assert_null(net_tls_new(&server_no_cert, &err));
    assert_non_null(err);
    free(err);
    struct net_tls_config bad_version = {.min_version = "SSLv3"};
    assert_null(net_tls_new(&bad_version, &err));
    assert_non_null(strstr(err, "min_version"));
    free(err);
    struct net_tls_config mismatched = {.server = true, .cert_file = cert_path("localhost.pem"),
                                        .key_file = cert_path("sae-a.key")};
    assert_null(net_tls_new(&mismatched, &err));
    assert_non_null(strstr(err, "sae-a.key"));
    free(err);
}

static void test_listen_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char *err = NULL;
    assert_null(net_listen(&loop, "not-an-address", 0, accept_cb, NULL, &err));
    assert_non_null(strstr(err, "numeric"));
    free(err);
    struct server s = {0};
    uint16_t port = server_start(&loop, &s);
    assert_null(net_listen(&loop, "127.0.0.1", port, accept_cb, NULL, &err));
    assert_non_null(strstr(err, "address already in use"));
    free(err);
    net_listener_close(&s.listener);
    finish_loop(&loop);
}

/* ---- hostile peers ------------------------------------------------------------ */

/* Output bound: a client sends many requests and does not read the answers
 * (16 KiB each). The server must stop taking requests once its queue passes
 * the high-water mark, so its queue never grows past the mark plus one
 * answer; once the client reads, everything is answered. */
#define FLOOD_LINES 3000
#define FLOOD_REPLY 16384

struct flood {
    net_listener *listener;
    net_conn *server, *client;
    size_t lines_done;
    size_t max_pending;
    bool saw_blocked;
    size_t received;
    char reply[FLOOD_REPLY];
};

static void flood_client_maybe_read(struct flood *f)
{
    /* Reads once the server is held back (or, without a bound, has answered
     * everything): no timing involved. */
    if (f->client != NULL && (f->saw_blocked || f->lines_done == FLOOD_LINES))
        net_conn_resume(f->client);
}

static void flood_server_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct flood *f = arg;
    if (ev == NET_EV_READ) {
        size_t n;
        while (!net_conn_output_blocked(c) && (n = net_conn_line_len(c)) > 0) {
            net_conn_consume(c, n);
            assert_int_equal(net_conn_write(c, f->reply, sizeof(f->reply)), 0);
            f->lines_done++;
            if (net_conn_output_pending(c) > f->max_pending)
                f->max_pending = net_conn_output_pending(c);
        }
        if (net_conn_output_blocked(c))
            f->saw_blocked = true;
        flood_client_maybe_read(f);
        if (f->lines_done == FLOOD_LINES)
            net_conn_close_after_write(&f->server);
        return;
    }
    if (ev == NET_EV_ERROR || ev == NET_EV_EOF || ev == NET_EV_TIMEOUT)
        net_conn_close(&f->server);
}

static void flood_accept(net_listener *l, net_conn *c, void *arg)
{
    struct flood *f = arg;
    (void)l;
    f->server = c;
    net_conn_set_cb(c, flood_server_cb, f);
    net_listener_close(&f->listener);
}

static void flood_client_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct flood *f = arg;
    if (ev == NET_EV_CONNECTED) {
        net_conn_pause(c); /* does not read until told */
        static const char line[] = "NOOP\r\n";
        for (int i = 0; i < FLOOD_LINES; i++)
            net_conn_write(c, line, sizeof(line) - 1);
        return;
    }
    if (ev == NET_EV_READ) {
        size_t len;
        net_conn_input(c, &len);
        f->received += len;
        net_conn_consume(c, len);
        return;
    }
    if (ev == NET_EV_EOF || ev == NET_EV_ERROR || ev == NET_EV_TIMEOUT)
        net_conn_close(&f->client);
}

static void test_output_bound_holds_input(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 60000);
    struct flood *f = calloc(1, sizeof(*f));
    memset(f->reply, 'x', sizeof(f->reply));
    char *err = NULL;
    f->listener = net_listen(&loop, "127.0.0.1", 0, flood_accept, f, &err);
    assert_non_null(f->listener);
    f->client = net_connect(&loop, "127.0.0.1", net_listener_port(f->listener),
                            flood_client_cb, f);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    assert_true(f->saw_blocked);
    assert_true(f->max_pending <= NET_OUTPUT_HIGH + FLOOD_REPLY);
    assert_int_equal(f->lines_done, FLOOD_LINES);
    assert_int_equal(f->received, (size_t)FLOOD_LINES * FLOOD_REPLY);
    free(f);
}

/* Deadline: a peer that sends a byte every 20 ms keeps a 200 ms idle timer
 * alive forever, but not a 300 ms deadline. */
struct trickle {
    net_listener *listener;
    net_conn *server, *client;
    uv_timer_t tick;
    int timeouts, deadline_hits, bytes;
};

static void trickle_server_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct trickle *t = arg;
    if (ev == NET_EV_READ) {
        size_t len;
        net_conn_input(c, &len);
        t->bytes += (int)len;
        /* keeps the bytes: a line that never ends */
        return;
    }
    if (ev == NET_EV_TIMEOUT) {
        t->timeouts++;
        if (net_conn_error_code(c) == NET_EDEADLINE)
            t->deadline_hits++;
    }
    net_conn_close(&t->server);
    uv_timer_stop(&t->tick);
    net_conn_close(&t->client);
    uv_close((uv_handle_t *)&t->tick, NULL);
}

static void trickle_accept(net_listener *l, net_conn *c, void *arg)
{
    struct trickle *t = arg;
    (void)l;
    t->server = c;
    net_conn_set_cb(c, trickle_server_cb, t);
    net_conn_set_timeout(c, 200);
    net_conn_set_deadline(c, 300);
    net_listener_close(&t->listener);
}

static void trickle_tick(uv_timer_t *timer)
{
    struct trickle *t = timer->data;
    if (t->client != NULL)
        net_conn_write(t->client, "x", 1);
}

static void trickle_client_cb(net_conn *c, enum net_event ev, void *arg)
{
    (void)c;
    (void)ev;
    (void)arg;
}

static void test_deadline_beats_trickle(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 20000);
    struct trickle t = {0};
    char *err = NULL;
    t.listener = net_listen(&loop, "127.0.0.1", 0, trickle_accept, &t, &err);
    assert_non_null(t.listener);
    t.client = net_connect(&loop, "127.0.0.1", net_listener_port(t.listener),
                           trickle_client_cb, &t);
    uv_timer_init(&loop, &t.tick);
    t.tick.data = &t;
    uv_timer_start(&t.tick, trickle_tick, 20, 20);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    assert_int_equal(t.timeouts, 1);
    assert_int_equal(t.deadline_hits, 1);
    assert_true(t.bytes > 0);
}

/* A TLS handshake that never finishes: the server times out, queues a
 * farewell (which cannot be sent before the handshake) and closes after
 * write. The socket must be closed, not left half-open for good. */
struct stall {
    net_listener *listener;
    net_conn *server;
    net_tls *tls;
    int timeouts;
};

static void stall_server_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct stall *s = arg;
    (void)c;
    if (ev == NET_EV_TIMEOUT) {
        s->timeouts++;
        net_conn_write(s->server, "421 timeout\r\n", 13);
        net_conn_close_after_write(&s->server);
        return;
    }
    if (ev != NET_EV_READ)
        net_conn_close(&s->server);
}

static void stall_accept(net_listener *l, net_conn *c, void *arg)
{
    struct stall *s = arg;
    (void)l;
    s->server = c;
    net_conn_set_cb(c, stall_server_cb, s);
    net_conn_set_timeout(c, 100);
    assert_int_equal(net_conn_start_tls(c, s->tls, NULL), 0);
    net_listener_close(&s->listener);
}

static void test_stalled_handshake_closes(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 15000);
    struct stall s = {.tls = make_tls(true, false, "localhost.pem", "localhost.key")};
    char *err = NULL;
    s.listener = net_listen(&loop, "127.0.0.1", 0, stall_accept, &s, &err);
    assert_non_null(s.listener);
    /* A plain client that sends half a ClientHello header and waits. */
    struct client k = {.send_first = "\x16\x03\x01"};
    k.conn = net_connect(&loop, "127.0.0.1", net_listener_port(s.listener), client_cb, &k);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(k.eofs + k.errors, 1); /* the client saw the close */
    assert_int_equal(k.got_len, 0);         /* and no plaintext */
    net_tls_free(&s.tls);
}

/* close_after_write to a peer that never reads: the socket is closed after
 * NET_CLOSE_DRAIN_MS even though output is still queued. */
struct deaf {
    net_listener *listener;
    net_conn *server, *client;
    uv_timer_t wake;
    size_t written, received;
    bool closed_seen;
};

static void deaf_server_cb(net_conn *c, enum net_event ev, void *arg)
{
    (void)c;
    (void)ev;
    (void)arg;
}

static void deaf_accept(net_listener *l, net_conn *c, void *arg)
{
    struct deaf *d = arg;
    (void)l;
    d->server = c;
    net_conn_set_cb(c, deaf_server_cb, d);
    static char chunk[65536];
    memset(chunk, 'y', sizeof(chunk));
    for (int i = 0; i < 256; i++) { /* 16 MiB: more than the kernel buffers */
        assert_int_equal(net_conn_write(c, chunk, sizeof(chunk)), 0);
        d->written += sizeof(chunk);
    }
    net_conn_close_after_write(&d->server);
    net_listener_close(&d->listener);
}

static void deaf_client_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct deaf *d = arg;
    if (ev == NET_EV_CONNECTED) {
        net_conn_pause(c);
        return;
    }
    if (ev == NET_EV_READ) {
        size_t len;
        net_conn_input(c, &len);
        d->received += len;
        net_conn_consume(c, len);
        return;
    }
    d->closed_seen = true;
    net_conn_close(&d->client);
}

static void deaf_wake(uv_timer_t *t)
{
    struct deaf *d = t->data;
    if (d->client != NULL)
        net_conn_resume(d->client); /* now read what is left, then EOF */
    uv_close((uv_handle_t *)t, NULL);
}

static void test_close_after_write_to_deaf_peer_is_bounded(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    uv_loop_init(&loop);
    arm_guard(&loop, &guard, 60000);
    struct deaf *d = calloc(1, sizeof(*d));
    char *err = NULL;
    d->listener = net_listen(&loop, "127.0.0.1", 0, deaf_accept, d, &err);
    assert_non_null(d->listener);
    d->client = net_connect(&loop, "127.0.0.1", net_listener_port(d->listener),
                            deaf_client_cb, d);
    uv_timer_init(&loop, &d->wake);
    d->wake.data = d;
    uv_timer_start(&d->wake, deaf_wake, NET_CLOSE_DRAIN_MS + 3000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_guard(&guard);
    finish_loop(&loop);
    assert_true(d->closed_seen);
    /* The server gave up: the client could not get everything. */
    assert_true(d->received < d->written);
    free(d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon does */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_echo),
        cmocka_unit_test(test_mutual_tls_identity),
        cmocka_unit_test(test_missing_client_cert_refused),
        cmocka_unit_test(test_wrong_host_name_refused),
        cmocka_unit_test(test_ip_address_name_verified),
        cmocka_unit_test(test_starttls_discards_injected_input),
        cmocka_unit_test(test_bulk_plain),
        cmocka_unit_test(test_bulk_tls),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_localhost_falls_back_between_addresses),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_tls_config_errors),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_output_bound_holds_input),
        cmocka_unit_test(test_deadline_beats_trickle),
        cmocka_unit_test(test_stalled_handshake_closes),
        cmocka_unit_test(test_close_after_write_to_deaf_peer_is_bounded),
    };
    return cmocka_run_group_tests(tests, make_certs, NULL);
}
