/* Scripted peers over real loopback sockets for the IMAP session tests: a
 * client talking to an imap_session whose upstream is a scripted server.
 *
 * Script steps:
 *   "> text"    send text + CRLF
 *   ">>text"    send text as is (C escapes for CRLF inside)
 *   "< text"    the next line received equals text (without CRLF)
 *   "<^text"    the next line starts with text
 *   "<~text"    skip lines until one starts with text
 *   "<*text"    the next line contains text
 *   "<@text"    the next line is "TAG text..." (text a prefix); TAG is kept
 *   ">@text"    send the kept TAG, a space, text and CRLF
 *   "T" / "S"   start TLS as client (verifying tls_name) / as server;
 *               "T?" / "S?" when the handshake is expected to fail
 *   "<$"        the other side closes (EOF) next; no line before it
 *   "<L"        right after a line ending in {N} or {N+}: N bytes of
 *               literal data follow; they are kept in lit/lit_len
 *   "~ms"       pause
 *   "x"         close now
 * A script that ends without "x" or "<$" closes after its last write.
 * Lines received are appended to log (for extra assertions).
 *
 * Below the peer: struct imap_fx, the fixture of the session tests (a
 * scripted client -> an imap_session -> a scripted upstream, optionally a
 * second pair) with imap_fx_init / imap_fx_run / imap_fx_free; these
 * assert with cmocka (include <cmocka.h> before this header). */
#ifndef IMAP_TEST_PEER_H
#define IMAP_TEST_PEER_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "imap_session.h"
#include "net.h"

struct peer {
    const char *name;
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_on;
    net_conn *conn;
    const char *const *script;
    size_t step;
    bool done;
    bool failed;
    bool eof_seen;
    void (*on_done)(void *arg);
    void *done_arg;
    char *log;
    size_t log_len, log_cap;
    net_tls *tls;          /* for "T" / "S" */
    const char *tls_name;
    bool tls_started;
    char tag[64];          /* "<@" */
    char *lit;             /* "<L": the literal received (owned) */
    size_t lit_len;
    uint64_t lit_left;
};

static inline void peer_finish(struct peer *p)
{
    if (p->timer_on) {
        uv_close((uv_handle_t *)&p->timer, NULL);
        p->timer_on = false;
    }
    if (!p->done) {
        p->done = true;
        if (p->on_done)
            p->on_done(p->done_arg);
    }
}

static void peer_run(struct peer *p);

static inline void peer_timer_cb(uv_timer_t *t)
{
    struct peer *p = t->data;
    p->step++;
    peer_run(p);
}

static void peer_run(struct peer *p)
{
    while (p->conn && p->script[p->step]) {
        const char *st = p->script[p->step];
        if (st[0] == '~') {
            if (!p->timer_on) {
                uv_timer_init(p->loop, &p->timer);
                p->timer.data = p;
                p->timer_on = true;
            }
            uv_timer_start(&p->timer, peer_timer_cb, strtoull(st + 1, NULL, 10), 0);
            return;
        }
        if (st[0] == 'T' || st[0] == 'S') {
            if (!p->tls_started) {
                p->tls_started = true;
                if (net_conn_start_tls(p->conn, p->tls, st[0] == 'T' ? p->tls_name : NULL) < 0) {
                    fprintf(stderr, "%s: cannot start TLS\n", p->name);
                    p->failed = true;
                    net_conn_close(&p->conn);
                    peer_finish(p);
                }
            }
            return; /* NET_EV_TLS_READY moves on */
        }
        if (st[0] == 'x') {
            net_conn_close(&p->conn);
            p->step++;
            break;
        }
        if (st[0] == '>' && st[1] == '@') {
            net_conn_printf(p->conn, "%s %s\r\n", p->tag, st + 2);
        } else if (st[0] == '>' && st[1] == '>') {
            net_conn_write(p->conn, st + 2, strlen(st + 2));
        } else if (st[0] == '>') {
            net_conn_printf(p->conn, "%s\r\n", st + 2);
        } else {
            return; /* an expectation */
        }
        p->step++;
    }
    if (!p->script[p->step]) {
        if (p->conn)
            net_conn_close_after_write(&p->conn);
        peer_finish(p);
    }
}

static inline void peer_log(struct peer *p, const char *line, size_t len)
{
    if (p->log_len + len + 1 > p->log_cap) {
        size_t cap = p->log_cap ? p->log_cap * 2 : 4096;
        while (cap < p->log_len + len + 1)
            cap *= 2;
        p->log = realloc(p->log, cap);
        p->log_cap = cap;
    }
    memcpy(p->log + p->log_len, line, len);
    p->log_len += len;
    p->log[p->log_len] = '\0';
}

static inline void peer_fail(struct peer *p, const char *what, const char *line, size_t len)
{
    fprintf(stderr, "%s: step %zu (%s): %s '%.*s'\n", p->name, p->step,
            p->script[p->step] ? p->script[p->step] : "end", what, (int)(len > 300 ? 300 : len),
            line);
    p->failed = true;
    net_conn_close(&p->conn);
    peer_finish(p);
}

static inline void peer_line(struct peer *p, const char *line, size_t len)
{
    peer_log(p, line, len);
    size_t l = len;
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
        l--;
    const char *want = p->script[p->step];
    if (!want) {
        peer_fail(p, "unexpected line after the script", line, l);
        return;
    }
    if (want[0] != '<') {
        peer_fail(p, "unexpected line", line, l);
        return;
    }
    bool ok;
    if (want[1] == '^') {
        ok = l >= strlen(want + 2) && memcmp(line, want + 2, strlen(want + 2)) == 0;
    } else if (want[1] == '~') {
        if (!(l >= strlen(want + 2) && memcmp(line, want + 2, strlen(want + 2)) == 0))
            return; /* skipped */
        ok = true;
    } else if (want[1] == '$') {
        ok = false;
    } else if (want[1] == '*') {
        char *tmp = malloc(l + 1);
        memcpy(tmp, line, l);
        tmp[l] = '\0';
        ok = strstr(tmp, want + 2) != NULL;
        free(tmp);
    } else if (want[1] == '@') {
        const char *sp = memchr(line, ' ', l);
        size_t tl = sp ? (size_t)(sp - line) : 0;
        ok = sp && tl < sizeof(p->tag) && (size_t)(line + l - sp - 1) >= strlen(want + 2) &&
             memcmp(sp + 1, want + 2, strlen(want + 2)) == 0;
        if (ok) {
            memcpy(p->tag, line, tl);
            p->tag[tl] = '\0';
        }
    } else {
        ok = l == strlen(want + 2) && memcmp(line, want + 2, l) == 0;
    }
    if (!ok) {
        peer_fail(p, "got", line, l);
        return;
    }
    p->step++;
    if (p->script[p->step] && strcmp(p->script[p->step], "<L") == 0) {
        const char *o = l > 0 && line[l - 1] == '}' ? line + l - 1 : NULL;
        while (o && o > line && *o != '{')
            o--;
        if (!o || *o != '{') {
            peer_fail(p, "no literal header in", line, l);
            return;
        }
        p->lit_left = strtoull(o + 1, NULL, 10);
        free(p->lit);
        p->lit = malloc(p->lit_left + 1);
        p->lit_len = 0;
        if (p->lit_left == 0)
            p->step++;
        return; /* the data: peer_cb */
    }
    peer_run(p);
}

static inline void peer_cb(net_conn *conn, enum net_event ev, void *arg)
{
    struct peer *p = arg;
    (void)conn;
    switch (ev) {
    case NET_EV_CONNECTED:
        peer_run(p);
        return;
    case NET_EV_TLS_READY:
        p->step++;
        peer_run(p);
        return;
    case NET_EV_READ: {
        size_t len;
        for (;;) {
            if (!p->conn)
                break;
            if (p->lit_left > 0) {
                size_t avail;
                const char *in = net_conn_input(p->conn, &avail);
                size_t n = avail < p->lit_left ? avail : (size_t)p->lit_left;
                if (n == 0)
                    break;
                memcpy(p->lit + p->lit_len, in, n);
                p->lit_len += n;
                p->lit_left -= n;
                net_conn_consume(p->conn, n);
                if (p->lit_left == 0) {
                    p->step++;
                    peer_run(p);
                }
                continue;
            }
            if ((len = net_conn_line_len(p->conn)) == 0)
                break;
            size_t avail;
            const char *in = net_conn_input(p->conn, &avail);
            char *line = malloc(len);
            memcpy(line, in, len);
            net_conn_consume(p->conn, len);
            peer_line(p, line, len);
            free(line);
        }
        return;
    }
    case NET_EV_EOF:
    case NET_EV_ERROR:
    case NET_EV_TIMEOUT:
        p->eof_seen = true;
        if (p->script[p->step] &&
            (strcmp(p->script[p->step], "<$") == 0 || strcmp(p->script[p->step], "S?") == 0 ||
             strcmp(p->script[p->step], "T?") == 0)) {
            p->step++; /* an end that was expected (or a TLS failure that was) */
        } else if (p->script[p->step]) {
            fprintf(stderr, "%s: %s at step %zu (%s)\n", p->name, net_event_name(ev), p->step,
                    p->script[p->step]);
            p->failed = true;
        }
        net_conn_close(&p->conn);
        peer_finish(p);
        return;
    default:
        return;
    }
}

/* ---- the session fixture ------------------------------------------------------------ */

/* A test's own fixture embeds this as its FIRST member, so that the
 * session's hooks (ctx = the struct imap_fx) may cast ctx to it. */
struct imap_fx {
    uv_loop_t loop;
    net_listener *front, *up_l;
    struct peer client, upstream;
    bool up_connected;
    /* a second client and upstream (imap_fx_second): the second client
     * connects once the first upstream connection is up */
    struct peer client2, upstream2;
    bool two;
    int ups;
    imap_session *session;
    struct imap_session_config cfg;
    struct imap_session_hooks hooks;
    int closed;
    uv_timer_t watchdog;
    uint64_t watchdog_ms;   /* the whole run's deadline (imap_fx_init: 20 s) */
    bool watchdog_fired;
    bool finished;
    net_tls *client_tls;    /* the client's "T" (verifying "localhost") */
    net_tls *up_server_tls; /* the upstream's "S" */
    void (*on_finish)(struct imap_fx *fx); /* closes the test's own handles */
};

static inline void imap_fx_maybe_finish(void *arg)
{
    struct imap_fx *fx = arg;
    if (fx->finished || !fx->client.done || (fx->up_connected && !fx->upstream.done) ||
        fx->closed == 0)
        return;
    if (fx->two && (!fx->client2.done || (fx->ups > 1 && !fx->upstream2.done) || fx->closed < 2))
        return;
    fx->finished = true;
    net_listener_close(&fx->front);
    net_listener_close(&fx->up_l);
    uv_close((uv_handle_t *)&fx->watchdog, NULL);
    if (fx->on_finish)
        fx->on_finish(fx);
}

static inline void imap_fx_h_closed(void *ctx, imap_session *s)
{
    struct imap_fx *fx = ctx;
    (void)s;
    fx->closed++;
    fx->session = NULL;
    imap_fx_maybe_finish(fx);
}

static inline void imap_fx_up_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct imap_fx *fx = arg;
    (void)l;
    fx->up_connected = true;
    struct peer *p = fx->ups++ == 0 ? &fx->upstream : &fx->upstream2;
    p->conn = conn;
    net_conn_set_cb(conn, peer_cb, p);
    peer_run(p);
    if (!fx->two || fx->ups == 2)
        net_listener_close(&fx->up_l);
    if (fx->two && fx->ups == 1)
        fx->client2.conn = net_connect(&fx->loop, "127.0.0.1", net_listener_port(fx->front),
                                       peer_cb, &fx->client2);
}

static inline void imap_fx_front_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct imap_fx *fx = arg;
    (void)l;
    fx->session = imap_session_new(&fx->loop, conn, &fx->cfg, &fx->hooks, fx);
    assert_non_null(fx->session);
}

static inline void imap_fx_watchdog_cb(uv_timer_t *t)
{
    struct imap_fx *fx = t->data;
    fprintf(stderr, "watchdog: client step %zu, upstream step %zu\n", fx->client.step,
            fx->upstream.step);
    fx->watchdog_fired = true;
    net_conn_close(&fx->client.conn);
    net_conn_close(&fx->upstream.conn);
    net_conn_close(&fx->client2.conn);
    net_conn_close(&fx->upstream2.conn);
    peer_finish(&fx->client);
    peer_finish(&fx->upstream);
    if (fx->two) {
        peer_finish(&fx->client2);
        peer_finish(&fx->upstream2);
    }
    if (fx->session)
        imap_session_close(fx->session, "test over");
    fx->up_connected = false;
    imap_fx_maybe_finish(fx);
}

/* A plain upstream on loopback, the closed hook set; the test adds its
 * own hooks and configuration before imap_fx_run. */
static inline void imap_fx_init(struct imap_fx *fx)
{
    memset(fx, 0, sizeof(*fx));
    fx->cfg.listener = "test";
    fx->cfg.upstream.host = "127.0.0.1";
    fx->cfg.upstream.tls = IMAP_UPSTREAM_PLAIN;
    fx->hooks.closed = imap_fx_h_closed;
    fx->watchdog_ms = 20000;
}

/* Set before imap_fx_run: a second client and upstream. */
static inline void imap_fx_second(struct imap_fx *fx, const char *const *client,
                                  const char *const *upstream)
{
    fx->two = true;
    fx->client2 = (struct peer){.name = "client2", .loop = &fx->loop, .script = client,
                                .on_done = imap_fx_maybe_finish, .done_arg = fx};
    fx->upstream2 = (struct peer){.name = "upstream2", .loop = &fx->loop, .script = upstream,
                                  .on_done = imap_fx_maybe_finish, .done_arg = fx};
}

/* Runs the loop to the end: both scripts (and the second pair's) ran to
 * the end without a failed step, the session said goodbye once per
 * client, every handle was closed (uv_loop_close succeeds). */
static inline void imap_fx_run(struct imap_fx *fx, const char *const *client,
                               const char *const *upstream)
{
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    char *err = NULL;
    fx->up_l = net_listen(&fx->loop, "127.0.0.1", 0, imap_fx_up_accept, fx, &err);
    assert_non_null(fx->up_l);
    fx->cfg.upstream.port = net_listener_port(fx->up_l);
    fx->front = net_listen(&fx->loop, "127.0.0.1", 0, imap_fx_front_accept, fx, &err);
    assert_non_null(fx->front);
    fx->client = (struct peer){.name = "client", .loop = &fx->loop, .script = client,
                               .on_done = imap_fx_maybe_finish, .done_arg = fx,
                               .tls = fx->client_tls, .tls_name = "localhost"};
    fx->upstream = (struct peer){.name = "upstream", .loop = &fx->loop, .script = upstream,
                                 .on_done = imap_fx_maybe_finish, .done_arg = fx,
                                 .tls = fx->up_server_tls};
    uv_timer_init(&fx->loop, &fx->watchdog);
    fx->watchdog.data = fx;
    uv_timer_start(&fx->watchdog, imap_fx_watchdog_cb, fx->watchdog_ms, 0);
    fx->client.conn = net_connect(&fx->loop, "127.0.0.1", net_listener_port(fx->front), peer_cb,
                                  &fx->client);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_false(fx->watchdog_fired);
    assert_false(fx->client.failed);
    assert_false(fx->upstream.failed);
    assert_false(fx->client2.failed);
    assert_false(fx->upstream2.failed);
    assert_int_equal(fx->closed, fx->two ? 2 : 1);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static inline void imap_fx_free(struct imap_fx *fx)
{
    struct peer *peers[] = {&fx->client, &fx->upstream, &fx->client2, &fx->upstream2};
    for (size_t i = 0; i < 4; i++) {
        free(peers[i]->log);
        free(peers[i]->lit);
    }
}

#endif
