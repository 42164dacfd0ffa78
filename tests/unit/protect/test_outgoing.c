/* The outgoing-protection pipeline (proxy/protect/outgoing.c) behind a real
 * smtp_session, with the embedded KME simulator (two KMEs, mutual TLS) and
 * a scripted upstream SMTP server, all on one loop over loopback sockets:
 *
 *  - grouping and copies: To/Cc recipients of one rule share a protected
 *    copy, a Bcc recipient gets a copy of its own, plain recipients one
 *    plain copy; each copy reaches upstream with exactly its recipients;
 *    protected copies carry no plaintext;
 *  - fail closed: a "require" recipient whose KME cannot be reached stops
 *    the whole message (4xx, nothing sent); "prefer" sends it as it is;
 *  - cancel at each stage (HEADERS on the thread pool, KEYS with a KME
 *    that never answers, ENCRYPT on the thread pool, DELIVER with an
 *    upstream that never answers DATA) when the client resets its
 *    connection: nothing more reaches upstream, nothing leaks;
 *  - allocation failures: the Nth allocation of outgoing.c and
 *    smtp_deliver.c fails, for every N a message needs (failalloc.h): the
 *    client gets 250 only when every copy was accepted upstream, and a
 *    protected recipient never gets plaintext.
 *
 * Stages are observed through the log (the job logs "msg ID: A -> B" at
 * debug level); the thread pool has one thread, held by a gate while a
 * stage is cancelled. Runs under ASan; ends with no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kme_client.h"
#include "kme_server.h"
#include "log.h"
#include "mime.h"
#include "net.h"
#include "outgoing.h"
#include "policy.h"
#include "smtp_session.h"

/* ---- failing allocations (failalloc.h) ------------------------------------- */

static long fail_at;        /* 0: never; N: the Nth counted allocation fails */
static long alloc_count;
static bool alloc_failed;

static bool fail_now(void)
{
    if (fail_at <= 0)
        return false;
    if (++alloc_count != fail_at)
        return false;
    alloc_failed = true;
    return true;
}

void *failalloc_malloc(size_t n) { return fail_now() ? NULL : malloc(n); }
void *failalloc_calloc(size_t n, size_t size) { return fail_now() ? NULL : calloc(n, size); }
void *failalloc_realloc(void *p, size_t n) { return fail_now() ? NULL : realloc(p, n); }
char *failalloc_strdup(const char *s) { return fail_now() ? NULL : strdup(s); }

/* ---- the world: loop, KME simulator, links, policy, gate ------------------- */

static char certs[512];
static uv_loop_t loop;
static kme_server *kme;
static kme_client *link_local, *link_hole, *link_down;
static kme_source *src_local, *src_hole, *src_down; /* the links as key sources */
static net_listener *hole;          /* a "KME" that accepts and never answers */
static net_conn *hole_conns[16];
static size_t n_hole_conns;
static policy *pol;
static protect_out *po;

static const char policy_text[] =
    "prot.test   action=require link=local slave_sae=sae-b level=aes\n"
    "otp.test    action=require link=local slave_sae=sae-b level=otp\n"
    "down.test   action=require link=down slave_sae=sae-b on_no_key=defer\n"
    "pref.test   action=prefer link=down slave_sae=sae-b\n"
    "hole.test   action=require link=hole slave_sae=sae-b\n"
    "*           action=none\n";

static kme_source *find_link(void *arg, const char *name)
{
    (void)arg;
    if (strcmp(name, "local") == 0)
        return src_local;
    if (strcmp(name, "hole") == 0)
        return src_hole;
    if (strcmp(name, "down") == 0)
        return src_down;
    return NULL;
}

/* The gate: a thread-pool job that waits until opened. With one pool
 * thread, a stage that needs the pool waits behind it. */
static uv_work_t gate_work;
static uv_sem_t gate_sem;
static bool gate_closed;

static void gate_wait(uv_work_t *w)
{
    (void)w;
    uv_sem_wait(&gate_sem);
}

static void gate_done(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
    gate_closed = false;
}

static void gate_close(void)
{
    assert_false(gate_closed);
    gate_closed = true;
    assert_int_equal(uv_queue_work(&loop, &gate_work, gate_wait, gate_done), 0);
}

static void gate_open(void)
{
    if (gate_closed)
        uv_sem_post(&gate_sem);
}

static void hole_event(net_conn *conn, enum net_event ev, void *arg)
{
    (void)arg;
    if (ev == NET_EV_EOF || ev == NET_EV_ERROR)
        for (size_t i = 0; i < n_hole_conns; i++)
            if (hole_conns[i] == conn)
                net_conn_close(&hole_conns[i]);
}

static void hole_accept(net_listener *l, net_conn *conn, void *arg)
{
    (void)l;
    (void)arg;
    if (n_hole_conns == sizeof(hole_conns) / sizeof(hole_conns[0])) {
        net_conn_close(&conn);
        return;
    }
    net_conn_set_cb(conn, hole_event, NULL);
    hole_conns[n_hole_conns++] = conn; /* reads, never answers */
}

/* Runs the loop until cond holds; a bound against hangs only. */
static void run_until(bool (*cond)(void *), void *arg)
{
    uv_update_time(&loop);
    uint64_t start = uv_now(&loop);
    while (!cond(arg)) {
        uv_run(&loop, UV_RUN_ONCE);
        uv_update_time(&loop);
        if (uv_now(&loop) - start > 60000)
            fail_msg("timed out");
    }
}

/* ---- log watching ------------------------------------------------------------- */

static const char *watch_for;   /* a stage transition, e.g. "-> KEYS" */
static bool watch_seen;
static char last_msg_line[1024];

static void log_sink(void *arg, enum qlog_level level, const char *line, size_t len)
{
    (void)arg;
    (void)level;
    if (watch_for && memmem(line, len, watch_for, strlen(watch_for)))
        watch_seen = true;
    if (memmem(line, len, ": from=<", 8)) { /* the one line per message */
        size_t n = len < sizeof(last_msg_line) - 1 ? len : sizeof(last_msg_line) - 1;
        memcpy(last_msg_line, line, n);
        last_msg_line[n] = '\0';
    }
    if (getenv("TEST_OUTGOING_VERBOSE"))
        fwrite(line, 1, len, stderr);
}

/* ---- the upstream: a small SMTP server that records transactions ---------- */

struct txn {
    char rcpts[512];     /* "a@x b@y" */
    char *body;          /* as received, dot-stuffed, without the final dot */
    size_t body_len;
    bool complete;       /* the final dot was received and accepted */
};

struct upstream {
    net_listener *l;
    net_conn *conn;
    bool stall_data;      /* never answer DATA */
    bool in_data;
    bool saw_data;        /* a DATA command arrived */
    struct txn txns[16];
    size_t n_txns;        /* complete ones */
    struct txn cur;
    bool done;
};

static void txn_clear(struct txn *t)
{
    free(t->body);
    memset(t, 0, sizeof(*t));
}

static void up_line(struct upstream *u, const char *line, size_t len)
{
    if (u->in_data) {
        if (len == 3 && memcmp(line, ".\r\n", 3) == 0) {
            u->in_data = false;
            u->cur.complete = true;
            assert_true(u->n_txns < sizeof(u->txns) / sizeof(u->txns[0]));
            u->txns[u->n_txns++] = u->cur;
            memset(&u->cur, 0, sizeof(u->cur));
            net_conn_printf(u->conn, "250 2.0.0 queued as %zu\r\n", u->n_txns);
            return;
        }
        u->cur.body = realloc(u->cur.body, u->cur.body_len + len + 1);
        assert_non_null(u->cur.body);
        memcpy(u->cur.body + u->cur.body_len, line, len);
        u->cur.body_len += len;
        u->cur.body[u->cur.body_len] = '\0';
        return;
    }
    if (len >= 4 && strncmp(line, "EHLO", 4) == 0) {
        net_conn_printf(u->conn, "250-up.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 "250 SIZE 100000000\r\n");
    } else if (len >= 4 && strncmp(line, "MAIL", 4) == 0) {
        txn_clear(&u->cur);
        net_conn_printf(u->conn, "250 2.1.0 Ok\r\n");
    } else if (len >= 4 && strncmp(line, "RCPT", 4) == 0) {
        const char *lt = memchr(line, '<', len), *gt = memchr(line, '>', len);
        size_t n = strlen(u->cur.rcpts);
        if (lt && gt && gt > lt)
            snprintf(u->cur.rcpts + n, sizeof(u->cur.rcpts) - n, "%s%.*s", n ? " " : "",
                     (int)(gt - lt - 1), lt + 1);
        net_conn_printf(u->conn, "250 2.1.5 Ok\r\n");
    } else if (len >= 4 && strncmp(line, "DATA", 4) == 0) {
        u->saw_data = true;
        if (u->stall_data)
            return; /* never answered */
        u->in_data = true;
        net_conn_printf(u->conn, "354 go ahead\r\n");
    } else if (len >= 4 && strncmp(line, "RSET", 4) == 0) {
        txn_clear(&u->cur);
        net_conn_printf(u->conn, "250 2.0.0 Ok\r\n");
    } else if (len >= 4 && strncmp(line, "QUIT", 4) == 0) {
        net_conn_printf(u->conn, "221 2.0.0 Bye\r\n");
        u->done = true;
        net_conn_close_after_write(&u->conn);
    } else {
        net_conn_printf(u->conn, "500 5.5.2 what?\r\n");
    }
}

static void up_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct upstream *u = arg;
    (void)conn;
    if (ev == NET_EV_READ) {
        size_t len;
        while (u->conn && (len = net_conn_line_len(u->conn)) > 0) {
            size_t avail;
            const char *in = net_conn_input(u->conn, &avail);
            char *line = malloc(len + 1);
            assert_non_null(line);
            memcpy(line, in, len);
            net_conn_consume(u->conn, len);
            up_line(u, line, len);
            free(line);
        }
    } else if (ev == NET_EV_EOF || ev == NET_EV_ERROR || ev == NET_EV_TIMEOUT) {
        u->done = true;
        net_conn_close(&u->conn);
    }
}

static void up_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct upstream *u = arg;
    (void)l;
    u->conn = conn;
    net_conn_set_cb(conn, up_event, u);
    net_conn_printf(conn, "220 up.test ESMTP\r\n");
    net_listener_close(&u->l);
}

/* ---- the client: a raw libuv TCP client (it can reset the connection) ----- */

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    bool open;              /* handle initialised, not closed */
    char in[8192];
    size_t in_len;
    char **cmds;            /* commands after the greeting; "" is the body */
    size_t n_cmds, next;
    char replies[32][256];  /* the last line of each reply, in order */
    size_t n_replies;
    bool greeted;
    bool done;              /* QUIT answered, or reset, or the server left */
    bool gate_at_354;       /* hold the thread pool once the body is due:
                               the session and its upstream are set up */
};

static void client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->open = false;
}

static void client_write_cb(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void client_send(struct client *c, const char *text)
{
    size_t n = strlen(text);
    char *copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, text, n + 1);
    uv_write_t *w = malloc(sizeof(*w));
    assert_non_null(w);
    w->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, client_write_cb) < 0) {
        free(copy);
        free(w);
    }
}

static void client_next(struct client *c)
{
    if (c->next >= c->n_cmds)
        return;
    const char *cmd = c->cmds[c->next++];
    char buf[65536];
    snprintf(buf, sizeof(buf), "%s\r\n", cmd);
    client_send(c, buf);
}

static void client_reset(struct client *c)
{
    if (!c->open || c->done)
        return;
    c->done = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_tcp_close_reset(&c->tcp, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)size;
    buf->base = c->in + c->in_len;
    buf->len = sizeof(c->in) - c->in_len;
}

static void client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = st->data;
    (void)buf;
    if (n < 0) {
        c->done = true;
        uv_close((uv_handle_t *)&c->tcp, client_closed);
        return;
    }
    c->in_len += (size_t)n;
    char *lf;
    while ((lf = memchr(c->in, '\n', c->in_len)) != NULL) {
        size_t len = (size_t)(lf - c->in) + 1;
        bool last = len >= 4 && c->in[3] == ' ';
        if (last) {
            size_t k = c->n_replies < 32 ? c->n_replies++ : 31;
            size_t m = len < 255 ? len : 255;
            memcpy(c->replies[k], c->in, m);
            while (m > 0 && (c->replies[k][m - 1] == '\n' || c->replies[k][m - 1] == '\r'))
                m--;
            c->replies[k][m] = '\0';
        }
        memmove(c->in, c->in + len, c->in_len - len);
        c->in_len -= len;
        if (!last)
            continue;
        if (!c->greeted) {
            c->greeted = true;
            client_next(c);
            continue;
        }
        const char *reply = c->replies[c->n_replies - 1];
        if (strncmp(reply, "221", 3) == 0) {
            c->done = true;
            uv_read_stop(st);
            uv_close((uv_handle_t *)&c->tcp, client_closed);
            return;
        }
        if (strncmp(reply, "354", 3) == 0) {
            if (c->gate_at_354)
                gate_close();
            /* the body (dot-stuffed by the scenario), then the end */
            const char *body = c->cmds[c->next++];
            client_send(c, body);
            client_send(c, ".\r\n");
            continue;
        }
        client_next(c);
    }
}

static void client_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

/* ---- one conversation ------------------------------------------------------------ */

struct scenario {
    const char *const *rcpts;
    const char *body;          /* dot-stuffed, CRLF, without the final dot */
    const char *cancel_at;     /* reset the client when the log shows this */
    bool cancel_at_data;       /* ... or when upstream receives DATA */
    bool gate;                 /* hold the thread pool until the reset */
    bool stall_data;
};

struct run {
    struct upstream up;
    struct client c;
    net_listener *front;
    smtp_session *session;
    bool no_session;           /* the protection layer could not start one */
    bool session_closed;
    bool cancelled;
    uv_check_t check;
    bool check_closed;
    const struct scenario *sc;
};

static void session_closed(void *arg)
{
    struct run *r = arg;
    r->session_closed = true;
    r->session = NULL;
}

static void front_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct run *r = arg;
    (void)l;
    net_listener_close(&r->front);
    protect_out_session *ps = protect_out_session_new(po, policy_ref(pol), session_closed, r);
    if (!ps) {
        /* (allocation failures) what the daemon does: close */
        r->no_session = true;
        r->session_closed = true;
        net_conn_close(&conn);
        return;
    }
    struct smtp_session_config cfg = {
        .hostname = "proxy.test",
        .listener = "test",
        .trusted = true,
        .trace_header = false,
        .max_message_size = 10000000,
        .max_recipients = 20,
        .max_line_length = 1000,
        .command_timeout_ms = 30000,
        .data_timeout_ms = 30000,
        .upstream = {.host = "127.0.0.1", .port = net_listener_port(r->up.l),
                     .tls = SMTP_UPSTREAM_PLAIN, .helo_name = "proxy.test",
                     .timeout_ms = 30000},
    };
    r->session = smtp_session_new(&loop, conn, &cfg, &protect_out_hooks, ps);
    assert_non_null(r->session);
}

/* Resets the client once the stage is reached (after the callbacks of the
 * loop turn in which it was reached). */
static void check_cb(uv_check_t *h)
{
    struct run *r = h->data;
    if (r->cancelled)
        return;
    if ((r->sc->cancel_at && watch_seen) || (r->sc->cancel_at_data && r->up.saw_data)) {
        r->cancelled = true;
        client_reset(&r->c);
    }
}

static void check_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    r->check_closed = true;
}

static bool check_is_closed(void *arg) { return ((struct run *)arg)->check_closed; }

static bool run_finished(void *arg)
{
    struct run *r = arg;
    if (!r->c.done || r->c.open || !r->session_closed)
        return false;
    if (r->no_session)
        return true;
    if (r->cancelled) {
        /* The session is gone: open the gate so the pool step ends. */
        gate_open();
        return !gate_closed && protect_out_jobs(po) == 0 && (r->up.done || !r->up.conn);
    }
    return r->up.done && protect_out_jobs(po) == 0;
}

static void run_scenario(const struct scenario *sc, struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->sc = sc;
    r->up.stall_data = sc->stall_data;
    char *err = NULL;
    r->up.l = net_listen(&loop, "127.0.0.1", 0, up_accept, &r->up, &err);
    assert_non_null(r->up.l);
    r->front = net_listen(&loop, "127.0.0.1", 0, front_accept, r, &err);
    assert_non_null(r->front);

    /* The commands after the greeting. */
    static char *cmds[40];
    size_t n = 0;
    cmds[n++] = strdup("EHLO client.test");
    cmds[n++] = strdup("MAIL FROM:<sender@x.test>");
    for (size_t i = 0; sc->rcpts[i]; i++) {
        char line[300];
        snprintf(line, sizeof(line), "RCPT TO:<%s>", sc->rcpts[i]);
        cmds[n++] = strdup(line);
    }
    cmds[n++] = strdup("DATA");
    cmds[n++] = strdup(sc->body);
    cmds[n++] = strdup("QUIT");
    r->c.cmds = cmds;
    r->c.n_cmds = n;

    watch_for = sc->cancel_at;
    watch_seen = false;
    last_msg_line[0] = '\0';
    uv_check_init(&loop, &r->check);
    r->check.data = r;
    uv_check_start(&r->check, check_cb);
    r->c.gate_at_354 = sc->gate;

    uv_tcp_init(&loop, &r->c.tcp);
    r->c.tcp.data = &r->c;
    r->c.open = true;
    r->c.creq.data = &r->c;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", net_listener_port(r->front), &sa);
    assert_int_equal(uv_tcp_connect(&r->c.creq, &r->c.tcp, (struct sockaddr *)&sa,
                                    client_connected), 0);
    run_until(run_finished, r);
    uv_close((uv_handle_t *)&r->check, check_closed);
    run_until(check_is_closed, r);
    net_listener_close(&r->up.l);
    net_listener_close(&r->front);
    net_conn_close(&r->up.conn);
    txn_clear(&r->up.cur);
    watch_for = NULL;
    for (size_t i = 0; i < n; i++)
        free(cmds[i]);
}

static void run_free(struct run *r)
{
    for (size_t i = 0; i < r->up.n_txns; i++)
        free(r->up.txns[i].body);
}

/* The reply to the final dot: the one after the 354. */
static const char *final_reply(const struct run *r)
{
    for (size_t i = 0; i + 1 < r->c.n_replies; i++)
        if (strncmp(r->c.replies[i], "354", 3) == 0)
            return r->c.replies[i + 1];
    return NULL;
}

static const struct txn *txn_for(const struct run *r, const char *rcpts)
{
    for (size_t i = 0; i < r->up.n_txns; i++)
        if (strcmp(r->up.txns[i].rcpts, rcpts) == 0)
            return &r->up.txns[i];
    return NULL;
}

#define SECRET "The launch code is 0000, tell nobody"

static const char message[] =
    "From: sender@x.test\r\n"
    "To: a@prot.test, d@plain.test\r\n"
    "Cc: b@prot.test\r\n"
    "Subject: plans\r\n"
    "\r\n"
    SECRET "\r\n"
    "..a line that starts with a dot\r\n";

/* A protected copy: no plaintext, and bound to exactly its recipients
 * (the copy's RCPTs, in order). */
static void assert_protected(const struct txn *t)
{
    assert_non_null(t);
    assert_true(t->complete);
    assert_null(strstr(t->body, SECRET));
    assert_null(strstr(t->body, "Subject: plans"));
    assert_non_null(strstr(t->body, "X-QKD-Version: "));
    /* unstuff the body for the parser */
    char *m = malloc(t->body_len + 1);
    assert_non_null(m);
    size_t n = 0;
    bool bol = true;
    for (size_t i = 0; i < t->body_len; i++) {
        if (bol && t->body[i] == '.') {
            bol = false;
            continue;
        }
        m[n++] = t->body[i];
        bol = t->body[i] == '\n';
    }
    struct mime_info *info = NULL;
    char *err = NULL;
    if (mime_inspect_mem(m, n, &info, &err) != 0)
        fail_msg("inspect: %s", err ? err : "?");
    char bound[512] = "";
    for (size_t i = 0; i < mime_info_recipient_count(info); i++) {
        size_t k = strlen(bound);
        snprintf(bound + k, sizeof(bound) - k, "%s%s", i ? " " : "", mime_info_recipient(info, i));
    }
    assert_string_equal(bound, t->rcpts);
    mime_info_free(&info);
    free(m);
}

/* ---- the tests ----------------------------------------------------------------------- */

static void test_grouping_and_copies(void **state)
{
    (void)state;
    static const char *const rcpts[] = {"a@prot.test", "b@prot.test", "c@prot.test",
                                        "d@plain.test", NULL};
    const struct scenario sc = {.rcpts = rcpts, .body = message};
    struct run r;
    run_scenario(&sc, &r);
    const char *fin = final_reply(&r);
    assert_non_null(fin);
    if (!strstr(fin, "250 2.0.0 Ok: 3 copies queued upstream"))  /* one copy is plain */
        fail_msg("final reply: %s", fin);
    assert_int_equal(r.up.n_txns, 3);
    /* a and b are in To/Cc under one rule: one copy */
    const struct txn *ab = txn_for(&r, "a@prot.test b@prot.test");
    assert_protected(ab);
    assert_non_null(strstr(ab->body, "X-QKD-Algorithm: AES-256-GCM\r\n"));
    /* c is a Bcc recipient: a copy of its own */
    assert_protected(txn_for(&r, "c@prot.test"));
    /* d is not protected: the message as it was (dot-stuffed on the wire) */
    const struct txn *d = txn_for(&r, "d@plain.test");
    assert_non_null(d);
    assert_non_null(strstr(d->body, SECRET));
    assert_non_null(strstr(d->body, "\r\n..a line that starts with a dot\r\n"));
    assert_null(strstr(d->body, "X-QKD"));
    assert_non_null(strstr(last_msg_line, "copies=3"));
    assert_non_null(strstr(last_msg_line, "level=aes rcpts=2"));
    assert_non_null(strstr(last_msg_line, "level=aes bcc rcpts=1"));
    assert_non_null(strstr(last_msg_line, "level=none rcpts=1"));
    assert_true(r.session_closed);
    run_free(&r);

    /* One protected copy for every recipient: the live transaction. */
    static const char *const one[] = {"a@otp.test", NULL};
    const struct scenario sc1 = {
        .rcpts = one,
        .body = "To: a@otp.test\r\nSubject: s\r\n\r\n" SECRET "\r\n"};
    run_scenario(&sc1, &r);
    fin = final_reply(&r);
    assert_non_null(fin);
    assert_int_equal(strncmp(fin, "250 2.0.0 queued as 1", 21), 0);
    assert_int_equal(r.up.n_txns, 1);
    assert_protected(txn_for(&r, "a@otp.test"));
    assert_non_null(strstr(r.up.txns[0].body, "X-QKD-Algorithm: OTP-POLY1305\r\n"));
    run_free(&r);
}

static void test_fail_closed(void **state)
{
    (void)state;
    /* A required recipient whose KME is down: nothing is sent at all. */
    static const char *const rcpts[] = {"a@prot.test", "x@down.test", "d@plain.test", NULL};
    const struct scenario sc = {.rcpts = rcpts, .body = message};
    struct run r;
    run_scenario(&sc, &r);
    const char *fin = final_reply(&r);
    assert_non_null(fin);
    assert_int_equal(strncmp(fin, "451 4.7.5 Cannot protect the message for <x@down.test>", 54),
                     0);
    assert_int_equal(r.up.n_txns, 0);
    assert_false(r.up.saw_data);
    run_free(&r);

    /* prefer without keys: sent as it is, with the others. */
    static const char *const pref[] = {"a@prot.test", "p@pref.test", NULL};
    const struct scenario sc2 = {
        .rcpts = pref, .body = "To: a@prot.test, p@pref.test\r\n\r\n" SECRET "\r\n"};
    run_scenario(&sc2, &r);
    fin = final_reply(&r);
    assert_non_null(fin);
    /* one of the two copies went plain: the reply must not call both
     * protected */
    assert_int_equal(strncmp(fin, "250 2.0.0 Ok: 2 copies queued upstream", 38), 0);
    assert_null(strstr(fin, "protected"));
    assert_int_equal(r.up.n_txns, 2);
    assert_protected(txn_for(&r, "a@prot.test"));
    const struct txn *p = txn_for(&r, "p@pref.test");
    assert_non_null(p);
    assert_non_null(strstr(p->body, SECRET));
    run_free(&r);
}

/* A big header block (more than the session keeps) is read on the pool. */
static char *big_header_message(void)
{
    size_t cap = 40000;
    char *m = malloc(cap);
    assert_non_null(m);
    size_t n = (size_t)snprintf(m, cap, "To: a@prot.test\r\n");
    for (int i = 0; n + 100 < cap - 200; i++)
        n += (size_t)snprintf(m + n, cap - n, "X-Filler-%d: %060d\r\n", i, i);
    snprintf(m + n, cap - n, "\r\n" SECRET "\r\n");
    return m;
}

static void cancel_run(const struct scenario *sc)
{
    struct run r;
    run_scenario(sc, &r);
    assert_true(r.cancelled);
    assert_true(r.session_closed);
    assert_null(final_reply(&r));
    /* Nothing reached upstream after the reset: no message at all. */
    assert_int_equal(r.up.n_txns, 0);
    run_free(&r);
}

static void test_cancel_at_each_stage(void **state)
{
    (void)state;
    static const char *const prot[] = {"a@prot.test", NULL};
    static const char *const holed[] = {"h@hole.test", NULL};

    /* HEADERS: on the (held) thread pool when the client resets. */
    char *big = big_header_message();
    const struct scenario headers = {
        .rcpts = prot, .body = big, .cancel_at = "-> HEADERS", .gate = true};
    cancel_run(&headers);
    free(big);

    /* KEYS: the KME never answers; the request is cancelled. */
    const struct scenario keys = {
        .rcpts = holed, .body = "To: h@hole.test\r\n\r\nx\r\n", .cancel_at = "-> KEYS"};
    cancel_run(&keys);

    /* ENCRYPT: keys fetched, encryption waiting for the (held) pool. The
     * KME link is warm (no resolver on the pool needed). */
    const struct scenario encrypt = {
        .rcpts = prot, .body = message, .cancel_at = "-> ENCRYPT", .gate = true};
    cancel_run(&encrypt);

    /* DELIVER: upstream never answers DATA. */
    const struct scenario deliver = {
        .rcpts = prot, .body = message, .cancel_at_data = true, .stall_data = true};
    cancel_run(&deliver);

    /* And the pipeline still works afterwards. */
    const struct scenario again = {.rcpts = prot, .body = message};
    struct run r;
    run_scenario(&again, &r);
    assert_non_null(final_reply(&r));
    assert_int_equal(strncmp(final_reply(&r), "250 ", 4), 0);
    run_free(&r);
}

/* Every allocation of the pipeline (and of the session's delivery) fails
 * in turn. The client gets 250 only when every copy was accepted upstream,
 * and a protected recipient never gets plaintext. */
static void test_allocation_failures(void **state)
{
    (void)state;
    static const char *const rcpts[] = {"a@prot.test", "b@prot.test", "c@prot.test",
                                        "d@plain.test", NULL};
    const struct scenario sc = {.rcpts = rcpts, .body = message};
    long n;
    int failed_runs = 0;
    for (n = 1; n < 500; n++) {
        fail_at = n;
        alloc_count = 0;
        alloc_failed = false;
        struct run r;
        run_scenario(&sc, &r);
        fail_at = 0;
        const char *fin = final_reply(&r);
        if (!fin) {
            assert_true(r.no_session); /* the only way to get no reply */
        } else if (strncmp(fin, "250", 3) == 0) {
            /* 250 only when every copy was accepted upstream */
            size_t copies = 1;
            const char *ok = strstr(fin, "Ok: ");
            if (ok)
                copies = strtoul(ok + 4, NULL, 10);
            assert_int_equal(r.up.n_txns, copies);
            for (size_t i = 0; i < r.up.n_txns; i++)
                assert_true(r.up.txns[i].complete);
        } else {
            assert_true(fin[0] == '4' || fin[0] == '5');
        }
        for (size_t i = 0; i < r.up.n_txns; i++)
            if (strstr(r.up.txns[i].rcpts, "prot.test"))
                assert_protected(&r.up.txns[i]);
        run_free(&r);
        if (!alloc_failed)
            break; /* the message needs fewer than n allocations */
        failed_runs++;
    }
    assert_true(n < 500);
    assert_true(failed_runs > 10);
}

/* ---- setup ------------------------------------------------------------------------------ */

/* The simulated link starts with empty pools: wait for key material. */
struct warm {
    bool pending;
    int64_t stored;
};

static void warm_cb(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    struct warm *w = arg;
    w->pending = false;
    if (res->error == KME_OK && st)
        w->stored = st->stored_key_count;
}

static bool warm_idle(void *arg)
{
    return !((struct warm *)arg)->pending;
}

static bool warm_enough(void *arg)
{
    struct warm *w = arg;
    if (w->stored >= 100)
        return true;
    if (!w->pending) {
        w->pending = true;
        if (kme_client_status(link_local, "sae-b", warm_cb, w) < 0)
            fail_msg("status failed");
    }
    return false;
}

static int world_up(void **state)
{
    (void)state;
    snprintf(certs, sizeof(certs), "%s/outgoing-certs", QUMAIL_TEST_TMP);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "sh %s/certs/mkcerts.sh -o %s -k kme-a -k kme-b -s sae-a -s sae-b >/dev/null",
             QUMAIL_SRC_DIR, certs);
    if (system(cmd) != 0)
        return -1;
    qlog_set_sink(log_sink, NULL);
    qlog_set_level(QLOG_DEBUG);
    if (uv_loop_init(&loop) != 0 || uv_sem_init(&gate_sem, 0) != 0)
        return -1;

    char a_cert[600], a_key[600], b_cert[600], b_key[600], ca[600], db_a[600], db_b[600];
    snprintf(a_cert, sizeof(a_cert), "%s/kme-a.pem", certs);
    snprintf(a_key, sizeof(a_key), "%s/kme-a.key", certs);
    snprintf(b_cert, sizeof(b_cert), "%s/kme-b.pem", certs);
    snprintf(b_key, sizeof(b_key), "%s/kme-b.key", certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(db_a, sizeof(db_a), "%s/outgoing-a-%d.db", QUMAIL_TEST_TMP, (int)getpid());
    snprintf(db_b, sizeof(db_b), "%s/outgoing-b-%d.db", QUMAIL_TEST_TMP, (int)getpid());
    struct kme_server_pair_params p = {
        .a = {.kme_id = "kme-a", .cert_file = a_cert, .key_file = a_key, .database = db_a},
        .b = {.kme_id = "kme-b", .cert_file = b_cert, .key_file = b_key, .database = db_b},
        .ca_file = ca,
        .secret_key_rate = 100000000,
        .max_key_count = 100000,
    };
    kme_server_config *kcfg = NULL;
    char *err = NULL;
    if (kme_server_config_pair(&p, &kcfg, &err) < 0 ||
        kme_server_start(&loop, kcfg, &kme, &err) < 0) {
        fprintf(stderr, "KME simulator: %s\n", err ? err : "?");
        return -1;
    }
    kme_server_config_free(&kcfg);

    char url[128], sae_cert[600], sae_key[600];
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", kme_server_port(kme, 0));
    snprintf(sae_cert, sizeof(sae_cert), "%s/sae-a.pem", certs);
    snprintf(sae_key, sizeof(sae_key), "%s/sae-a.key", certs);
    struct kme_client_config kc = {.url = url, .cert_file = sae_cert, .key_file = sae_key,
                                   .ca_file = ca, .request_timeout_ms = 30000};
    if (!(link_local = kme_client_new(&loop, &kc, &err)))
        return -1;
    hole = net_listen(&loop, "127.0.0.1", 0, hole_accept, NULL, &err);
    if (!hole)
        return -1;
    char hole_url[128];
    snprintf(hole_url, sizeof(hole_url), "https://127.0.0.1:%u", net_listener_port(hole));
    kc.url = hole_url;
    if (!(link_hole = kme_client_new(&loop, &kc, &err)))
        return -1;
    /* "down": a port nothing listens on (the hole's, closed at once) */
    net_listener *tmp = net_listen(&loop, "127.0.0.1", 0, hole_accept, NULL, &err);
    char down_url[128];
    snprintf(down_url, sizeof(down_url), "https://127.0.0.1:%u", net_listener_port(tmp));
    net_listener_close(&tmp);
    kc.url = down_url;
    kc.connect_timeout_ms = 2000;
    if (!(link_down = kme_client_new(&loop, &kc, &err)))
        return -1;

    static const char *const links[] = {"local", "hole", "down", NULL};
    if (policy_load_buffer("test.policy", policy_text, strlen(policy_text), links, &pol,
                           &err) < 0) {
        fprintf(stderr, "policy: %s\n", err);
        return -1;
    }
    src_local = kme_source_new_014(link_local, false);
    src_hole = kme_source_new_014(link_hole, false);
    src_down = kme_source_new_014(link_down, false);
    po = protect_out_new(&loop, find_link, NULL);
    if (!po || !src_local || !src_hole || !src_down)
        return -1;
    struct warm w = {0};
    run_until(warm_enough, &w);
    run_until(warm_idle, &w);
    return 0;
}

static bool loop_quiet(void *arg)
{
    (void)arg;
    return !uv_loop_alive(&loop);
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %d\n", (int)h->type);
}

static int world_down(void **state)
{
    (void)state;
    kme_source_free(&src_local);
    kme_source_free(&src_hole);
    kme_source_free(&src_down);
    kme_client_free(&link_local);
    kme_client_free(&link_hole);
    kme_client_free(&link_down);
    for (size_t i = 0; i < n_hole_conns; i++)
        net_conn_close(&hole_conns[i]);
    net_listener_close(&hole);
    kme_server_stop(&kme, NULL, NULL);
    run_until(loop_quiet, NULL);
    uv_walk(&loop, walk_cb, NULL);
    int rc = uv_loop_close(&loop);
    protect_out_free(&po);
    policy_unref(&pol);
    uv_sem_destroy(&gate_sem);
    qlog_set_sink(NULL, NULL);
    char path[700];
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof(path), "%s/outgoing-a-%d.db%s", QUMAIL_TEST_TMP, (int)getpid(),
                 suffixes[k]);
        unlink(path);
        snprintf(path, sizeof(path), "%s/outgoing-b-%d.db%s", QUMAIL_TEST_TMP, (int)getpid(),
                 suffixes[k]);
        unlink(path);
    }
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    /* One pool thread: the gate holds every pool stage behind it. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    if (mime_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grouping_and_copies),
        cmocka_unit_test(test_fail_closed),
        cmocka_unit_test(test_cancel_at_each_stage),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, world_up, world_down);
}
