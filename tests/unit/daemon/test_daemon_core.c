/* The daemon core with two toy protocols over real loopback sockets:
 * listeners from the protocol table, the connection limits enforced in
 * the registry (max_connections and per client address, each protocol
 * counted on its own, refused with the protocol's own goodbye), the one
 * unlink place, reload (a listener replaced while a session started in
 * the old generation lives on: its configuration stays valid until it
 * ends), and stop closing every session. Ends by asserting that every
 * handle was closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon.h"
#include "net.h"

/* ---- a toy protocol: greets with "HELLO <proto> <listener>", echoes each
 * line as "<proto>: <line>", ends on the client's EOF ---------------------- */

struct toy_svc {
    const char *name;
    int gens;            /* generations alive */
    int sessions;        /* sessions alive */
};

struct toy_session {
    struct toy_svc *svc;
    proxy_session *handle;
    net_conn *conn;
    const struct qumail_config *cfg;        /* the generation's */
    const struct qumail_listener *listener;
};

static struct toy_svc svc_a = {.name = "toy-a"}, svc_b = {.name = "toy-b"};

static void toy_settings_a(const struct qumail_config *cfg,
                           const struct qumail_listener **ls, size_t *n,
                           const struct qumail_conn_limits **lim)
{
    *ls = cfg->smtp.listeners;
    *n = cfg->smtp.n_listeners;
    *lim = &cfg->smtp.limits.conn;
}

static void toy_settings_b(const struct qumail_config *cfg,
                           const struct qumail_listener **ls, size_t *n,
                           const struct qumail_conn_limits **lim)
{
    *ls = cfg->imap.listeners;
    *n = cfg->imap.n_listeners;
    *lim = &cfg->imap.limits.conn;
}

static int toy_init_a(proxy_daemon *d, void **svc_r, char **error_r)
{
    (void)d;
    (void)error_r;
    *svc_r = &svc_a;
    return 0;
}

static int toy_init_b(proxy_daemon *d, void **svc_r, char **error_r)
{
    (void)d;
    (void)error_r;
    *svc_r = &svc_b;
    return 0;
}

static void toy_free(void *svc) { (void)svc; }

static int toy_gen_new(void *arg, const struct qumail_config *cfg, void **gen_r,
                       char **error_r)
{
    struct toy_svc *svc = arg;
    (void)cfg;
    (void)error_r;
    svc->gens++;
    *gen_r = svc;
    return 0;
}

static void toy_gen_free(void *gen)
{
    struct toy_svc *svc = gen;
    svc->gens--;
}

static void toy_end(struct toy_session *t)
{
    net_conn_close(&t->conn);
    t->svc->sessions--;
    proxy_session_end(&t->handle);
    free(t);
}

static void toy_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct toy_session *t = arg;
    (void)conn;
    if (ev == NET_EV_READ) {
        size_t len;
        while (t->conn && (len = net_conn_line_len(t->conn)) > 0) {
            size_t avail;
            const char *in = net_conn_input(t->conn, &avail);
            /* Reads the session's configuration: under ASan this catches
             * a generation freed too early. */
            net_conn_printf(t->conn, "%s %s %s: %.*s", t->svc->name, t->listener->name,
                            t->cfg->smtp.hostname, (int)len, in);
            net_conn_consume(t->conn, len);
        }
    } else if (ev == NET_EV_EOF || ev == NET_EV_ERROR || ev == NET_EV_TIMEOUT) {
        toy_end(t);
    }
}

static void *toy_accept(const struct proxy_accept *a)
{
    struct toy_session *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->svc = a->svc;
    t->handle = a->session;
    t->conn = a->conn;
    t->cfg = a->cfg;
    t->listener = a->listener;
    assert_non_null(a->peer);
    t->svc->sessions++;
    net_conn_set_cb(t->conn, toy_event, t);
    net_conn_printf(t->conn, "HELLO %s %s\r\n", t->svc->name, a->listener->name);
    return t;
}

static void toy_close(void *session) { toy_end(session); }

static void toy_refuse(net_conn *conn, const char *reason)
{
    net_conn_printf(conn, "REFUSED %s\r\n", reason);
}

static const struct proxy_protocol toy_a = {
    .name = "toy-a", .settings = toy_settings_a, .init = toy_init_a, .free = toy_free,
    .gen_new = toy_gen_new, .gen_free = toy_gen_free, .accept = toy_accept,
    .close = toy_close, .refuse = toy_refuse,
};
static const struct proxy_protocol toy_b = {
    .name = "toy-b", .settings = toy_settings_b, .init = toy_init_b, .free = toy_free,
    .gen_new = toy_gen_new, .gen_free = toy_gen_free, .accept = toy_accept,
    .close = toy_close, .refuse = toy_refuse,
};

/* ---- clients ------------------------------------------------------------ */

struct client {
    net_conn *conn;
    char line[256];     /* the last line received */
    unsigned lines;
    bool closed;        /* EOF or error seen */
};

static void client_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct client *c = arg;
    (void)conn;
    if (ev == NET_EV_READ) {
        size_t len;
        while ((len = net_conn_line_len(c->conn)) > 0) {
            size_t avail;
            const char *in = net_conn_input(c->conn, &avail);
            size_t n = len < sizeof(c->line) ? len : sizeof(c->line) - 1;
            memcpy(c->line, in, n);
            while (n > 0 && (c->line[n - 1] == '\n' || c->line[n - 1] == '\r'))
                n--;
            c->line[n] = '\0';
            c->lines++;
            net_conn_consume(c->conn, len);
        }
    } else if (ev == NET_EV_EOF || ev == NET_EV_ERROR) {
        c->closed = true;
        net_conn_close(&c->conn);
    }
}

static uv_loop_t loop;

/* Runs the loop until cond holds; a bound against hangs, not a timing
 * assertion. */
static void run_until(bool (*cond)(void *), void *arg)
{
    uint64_t start = uv_now(&loop);
    while (!cond(arg)) {
        uv_run(&loop, UV_RUN_ONCE);
        uv_update_time(&loop);
        if (uv_now(&loop) - start > 20000)
            fail_msg("timed out waiting");
    }
}

static bool has_lines(void *arg)
{
    struct client *c = arg;
    return c->lines > 0 || c->closed;
}

static bool is_closed(void *arg) { return ((struct client *)arg)->closed; }

static void connect_client(struct client *c, uint16_t port)
{
    memset(c, 0, sizeof(*c));
    c->conn = net_connect(&loop, "127.0.0.1", port, client_event, c);
    assert_non_null(c->conn);
    run_until(has_lines, c);
}

static void client_close(struct client *c) { net_conn_close(&c->conn); }

struct count_arg {
    proxy_daemon *d;
    const char *proto;
    size_t want;
};

static bool sessions_are(void *arg)
{
    struct count_arg *a = arg;
    return proxy_daemon_sessions(a->d, a->proto) == a->want;
}

static void wait_sessions(proxy_daemon *d, const char *proto, size_t want)
{
    struct count_arg a = {d, proto, want};
    run_until(sessions_are, &a);
}

static void write_config(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char config1[] =
    "{\"smtp\": {\"hostname\": \"one.test\",\n"
    "   \"listeners\": [{\"name\": \"a1\", \"port\": 0}],\n"
    "   \"limits\": {\"max_connections\": 3, \"max_connections_per_address\": 2}},\n"
    " \"imap\": {\"listeners\": [{\"name\": \"b1\", \"port\": 0}],\n"
    "   \"limits\": {\"max_connections\": 1}}}\n";

/* a1 replaced by a2; b1 unchanged (stays bound) */
static const char config2[] =
    "{\"smtp\": {\"hostname\": \"two.test\",\n"
    "   \"listeners\": [{\"name\": \"a2\", \"port\": 0}],\n"
    "   \"limits\": {\"max_connections\": 3, \"max_connections_per_address\": 2}},\n"
    " \"imap\": {\"listeners\": [{\"name\": \"b1\", \"port\": 0}],\n"
    "   \"limits\": {\"max_connections\": 1}}}\n";

static bool loop_alive(void *arg)
{
    (void)arg;
    return !uv_loop_alive(&loop);
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %d\n", (int)h->type);
}

static void test_limits_reload_stop(void **state)
{
    (void)state;
    char path[] = "/tmp/qumail-daemon-core-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_config(path, config1);
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    if (qumail_config_load(path, &cfg, &err) < 0)
        fail_msg("%s", err);
    assert_int_equal(uv_loop_init(&loop), 0);
    static const struct proxy_protocol *const table[] = {&toy_a, &toy_b};
    proxy_daemon *d = proxy_daemon_new(&loop, cfg, table, 2, &err);
    if (!d)
        fail_msg("%s", err);
    assert_int_equal(svc_a.gens, 1);
    uint16_t pa = proxy_daemon_listener_port(d, "toy-a", 0);
    uint16_t pb = proxy_daemon_listener_port(d, "toy-b", 0);
    assert_true(pa > 0 && pb > 0);
    assert_int_equal(proxy_daemon_listener_port(d, "toy-a", 1), 0);

    /* Two from 127.0.0.1 are admitted, the third is refused per address,
     * with the protocol's own goodbye. */
    struct client a[4], b[2];
    connect_client(&a[0], pa);
    assert_string_equal(a[0].line, "HELLO toy-a a1");
    connect_client(&a[1], pa);
    assert_string_equal(a[1].line, "HELLO toy-a a1");
    connect_client(&a[2], pa);
    assert_string_equal(a[2].line,
                        "REFUSED Too many connections from your address, try again later");
    run_until(is_closed, &a[2]);
    assert_int_equal(proxy_daemon_sessions(d, "toy-a"), 2);

    /* The other protocol counts on its own: max_connections 1. */
    connect_client(&b[0], pb);
    assert_string_equal(b[0].line, "HELLO toy-b b1");
    connect_client(&b[1], pb);
    assert_string_equal(b[1].line, "REFUSED Too many connections, try again later");
    run_until(is_closed, &b[1]);
    assert_int_equal(proxy_daemon_sessions(d, NULL), 3);

    /* A session that ends frees its slot (the one unlink place). */
    client_close(&a[1]);
    wait_sessions(d, "toy-a", 1);
    connect_client(&a[1], pa);
    assert_string_equal(a[1].line, "HELLO toy-a a1");

    /* Reload: a1 is replaced by a2, b1 stays bound. The sessions of the
     * first generation keep it (and its listener) alive. */
    write_config(path, config2);
    assert_int_equal(proxy_daemon_reload(d), 0);
    assert_int_equal(svc_a.gens, 2);
    assert_int_equal(proxy_daemon_listener_port(d, "toy-b", 0), pb);
    uint16_t pa2 = proxy_daemon_listener_port(d, "toy-a", 0);
    assert_true(pa2 > 0);
    net_conn_printf(a[0].conn, "ping\r\n");
    a[0].lines = 0;
    run_until(has_lines, &a[0]);
    assert_string_equal(a[0].line, "toy-a a1 one.test: ping");
    /* Limits still count the old generation's sessions. */
    struct client a2[2];
    connect_client(&a2[0], pa2);
    assert_string_equal(a2[0].line,
                        "REFUSED Too many connections from your address, try again later");
    run_until(is_closed, &a2[0]);
    client_close(&a[0]);
    client_close(&a[1]);
    wait_sessions(d, "toy-a", 0);
    assert_int_equal(svc_a.gens, 2); /* b[0] started in it too */
    client_close(&b[0]);
    wait_sessions(d, "toy-b", 0);
    assert_int_equal(svc_a.gens, 1); /* the first generation is gone */
    assert_int_equal(svc_b.gens, 1);
    connect_client(&b[0], pb);
    assert_string_equal(b[0].line, "HELLO toy-b b1");
    connect_client(&a2[0], pa2);
    assert_string_equal(a2[0].line, "HELLO toy-a a2");
    net_conn_printf(a2[0].conn, "ping\r\n");
    a2[0].lines = 0;
    run_until(has_lines, &a2[0]);
    assert_string_equal(a2[0].line, "toy-a a2 two.test: ping");

    /* A configuration with errors is refused; everything stays. */
    write_config(path, "{\"smtp\": {\"listeners\": [{\"name\": \"x\"}]}}");
    assert_int_equal(proxy_daemon_reload(d), -1);
    assert_int_equal(proxy_daemon_listener_port(d, "toy-a", 0), pa2);
    assert_int_equal(svc_a.gens, 1);

    /* Stop closes every session through its protocol. */
    proxy_daemon_stop(d);
    assert_int_equal(proxy_daemon_sessions(d, NULL), 0);
    assert_int_equal(svc_a.sessions + svc_b.sessions, 0);
    run_until(is_closed, &a2[0]);
    run_until(is_closed, &b[0]);
    run_until(loop_alive, NULL);
    proxy_daemon_free(&d);
    assert_null(d);
    assert_int_equal(svc_a.gens + svc_b.gens, 0);
    uv_walk(&loop, walk_cb, NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
    qumail_config_free(&cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_reload_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
