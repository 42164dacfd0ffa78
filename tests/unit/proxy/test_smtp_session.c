/* The SMTP session and the upstream client over real loopback sockets:
 * a scripted client talks to an smtp_session whose upstream is a scripted
 * server. Each test runs its own loop and ends by asserting that every
 * handle was closed (uv_loop_close succeeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "net.h"
#include "smtp_session.h"

/* Every log line of a test, when captured (to look for secrets). */
static char logged[1 << 20];
static size_t logged_len;

static void capture_log(void *arg, enum qlog_level level, const char *line, size_t len)
{
    (void)arg;
    (void)level;
    if (logged_len + len < sizeof(logged)) {
        memcpy(logged + logged_len, line, len);
        logged_len += len;
        logged[logged_len] = '\0';
    }
}

/* Open descriptors of this process (the test's ends of the connections
 * included: compare counts taken at different steps). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the one opendir holds */
}

/* ---- a scripted peer ------------------------------------------------------
 * Steps: "> text" sends text + CRLF; "= text" sends text alone; "< prefix"
 * waits for a line starting with prefix (continuation lines "ddd-" are
 * skipped); "<." waits for the end of a DATA body; "~ms" pauses; "?"
 * records the process's open descriptors (fds[]). Every line received is
 * appended to log. */
struct peer {
    const char *name;
    uv_loop_t *loop;
    uv_timer_t timer;        /* "~ms" steps */
    bool timer_on;
    net_conn *conn;
    const char *const *script;
    size_t step;
    bool done;
    bool failed;
    int fds[8];              /* "?" steps */
    size_t n_fds;
    char log[131072];
    size_t log_len;
};

static void peer_run(struct peer *p);

static void peer_timer_cb(uv_timer_t *t)
{
    struct peer *p = t->data;
    p->step++;
    peer_run(p);
}

static void peer_run(struct peer *p)
{
    while (p->conn && p->script[p->step] &&
           (p->script[p->step][0] == '>' || p->script[p->step][0] == '~' ||
            p->script[p->step][0] == '=' || p->script[p->step][0] == '?')) {
        if (p->script[p->step][0] == '?') {
            if (p->n_fds < sizeof(p->fds) / sizeof(p->fds[0]))
                p->fds[p->n_fds++] = count_fds();
            p->step++;
            continue;
        }
        if (p->script[p->step][0] == '~') {
            if (!p->timer_on) {
                uv_timer_init(p->loop, &p->timer);
                p->timer.data = p;
                p->timer_on = true;
            }
            uv_timer_start(&p->timer, peer_timer_cb, strtoull(p->script[p->step] + 1, NULL, 10), 0);
            return;
        }
        if (p->script[p->step][0] == '=')
            net_conn_printf(p->conn, "%s", p->script[p->step] + 2);
        else
            net_conn_printf(p->conn, "%s\r\n", p->script[p->step] + 2);
        p->step++;
    }
    if (!p->script[p->step] && !p->done) {
        p->done = true;
        net_conn_close_after_write(&p->conn);
    }
    if ((p->done || !p->conn) && p->timer_on) {
        uv_close((uv_handle_t *)&p->timer, NULL);
        p->timer_on = false;
    }
}

static void peer_line(struct peer *p, const char *line, size_t len)
{
    if (p->log_len + len < sizeof(p->log)) {
        memcpy(p->log + p->log_len, line, len);
        p->log_len += len;
        p->log[p->log_len] = '\0';
    }
    const char *want = p->script[p->step];
    if (!want || want[0] != '<')
        return;
    if (strcmp(want, "<.") == 0) {
        if (len >= 3 && memcmp(line, ".\r\n", 3) == 0) {
            p->step++;
            peer_run(p);
        }
        return;
    }
    if (len > 3 && line[3] == '-' && line[0] >= '2' && line[0] <= '5')
        return; /* continuation */
    const char *prefix = want + 2;
    if (len < strlen(prefix) || strncmp(line, prefix, strlen(prefix)) != 0) {
        fprintf(stderr, "%s: step %zu wanted '%s', got '%.*s'\n", p->name, p->step, prefix,
                (int)len, line);
        p->failed = true;
        net_conn_close(&p->conn);
        return;
    }
    p->step++;
    peer_run(p);
}

static void peer_cb(net_conn *conn, enum net_event ev, void *arg)
{
    struct peer *p = arg;
    (void)conn;
    switch (ev) {
    case NET_EV_CONNECTED:
        peer_run(p);
        return;
    case NET_EV_READ: {
        size_t len;
        while (p->conn && (len = net_conn_line_len(p->conn)) > 0) {
            size_t avail;
            const char *in = net_conn_input(p->conn, &avail);
            char line[16384];
            size_t n = len < sizeof(line) ? len : sizeof(line) - 1;
            memcpy(line, in, n);
            net_conn_consume(p->conn, len);
            peer_line(p, line, n);
        }
        return;
    }
    case NET_EV_EOF:
    case NET_EV_ERROR:
    case NET_EV_TIMEOUT:
        if (!p->done && p->script[p->step]) {
            fprintf(stderr, "%s: %s at step %zu (%s)\n", p->name, net_event_name(ev), p->step,
                    p->script[p->step]);
            p->failed = true;
        }
        net_conn_close(&p->conn);
        if (p->timer_on) {
            uv_close((uv_handle_t *)&p->timer, NULL);
            p->timer_on = false;
        }
        return;
    default:
        return;
    }
}

/* ---- the upstream server: accepts one connection for its script -------- */

struct upstream {
    net_listener *l;
    struct peer peer;
};

static void up_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct upstream *u = arg;
    (void)l;
    u->peer.conn = conn;
    net_conn_set_cb(conn, peer_cb, &u->peer);
    peer_run(&u->peer);
    net_listener_close(&u->l); /* one connection per test */
}

/* ---- the proxy side: a session per accepted client --------------------- */

enum mode { DELIVER_ONE, DELIVER_TWO, FAIL_451, DELIVER_BAD_INDEX };

struct fixture {
    uv_loop_t loop;
    enum mode mode;
    net_listener *front;
    smtp_session *session;
    struct smtp_session_config cfg;
    bool closed;
    char spooled[4096];
    size_t spooled_len;
    unsigned delivered;
    struct smtp_delivery_result result;
    char auth_user[200];     /* the message's auth_user ("" for NULL) */
};

static void h_rcpt(void *ctx, smtp_session *s, const char *addr, struct smtp_rcpt_verdict *v)
{
    (void)ctx;
    (void)s;
    if (strncmp(addr, "refuse@", 7) == 0) {
        v->accept = false;
        v->code = 550;
        snprintf(v->enh, sizeof(v->enh), "5.7.1");
        snprintf(v->text, sizeof(v->text), "refused by policy");
        return;
    }
    v->accept = true;
    v->data = strdup(addr);
}

static void h_rcpt_free(void *ctx, void *data)
{
    (void)ctx;
    free(data);
}

static void h_delivered(smtp_session *s, const struct smtp_delivery_result *res, void *arg)
{
    struct fixture *f = arg;
    (void)s;
    f->delivered++;
    f->result = *res;
}

static void h_message(void *ctx, smtp_session *s, const struct smtp_message *m)
{
    struct fixture *f = ctx;
    snprintf(f->auth_user, sizeof(f->auth_user), "%s", m->auth_user ? m->auth_user : "");
    ssize_t n = pread(m->fd, f->spooled, sizeof(f->spooled) - 1, 0);
    assert_true(n >= 0);
    f->spooled_len = (size_t)n;
    assert_int_equal(m->size, f->spooled_len);
    /* the header block comes along (up to the blank line); the FAIL_451
     * message has no blank line, so the hook must read the fd instead */
    if (f->mode == FAIL_451) {
        assert_null(m->headers);
        smtp_session_fail(s, 451, "4.7.5", "keys unavailable");
        return;
    }
    assert_non_null(m->headers);
    assert_true(m->headers_len <= f->spooled_len);
    assert_memory_equal(m->headers, f->spooled, m->headers_len);
    assert_true(m->headers_len >= 2 && m->headers[m->headers_len - 1] == '\n');
    if (f->mode == FAIL_451) {
        smtp_session_fail(s, 451, "4.7.5", "keys unavailable");
        return;
    }
    static size_t all[2] = {0, 1}, first[1] = {0}, second[1] = {1};
    struct smtp_delivery d[2];
    if (f->mode == DELIVER_BAD_INDEX) {
        /* The caller's arrays stay the caller's when deliver refuses: a
         * valid first copy, an out-of-range index in the second. Heap
         * arrays, so that ASan sees a double free if the session freed
         * them. */
        size_t *one = malloc(sizeof(*one)), *bad = malloc(sizeof(*bad));
        assert_non_null(one);
        assert_non_null(bad);
        *one = 0;
        *bad = m->n_rcpts;
        d[0] = (struct smtp_delivery){one, 1, m->fd, m->size};
        d[1] = (struct smtp_delivery){bad, 1, m->fd, m->size};
        assert_int_equal(smtp_session_deliver(s, d, 2, h_delivered, f), -1);
        assert_int_equal(smtp_session_deliver(s, d, 0, h_delivered, f), -1);
        free(one);
        free(bad);
        smtp_session_fail(s, 451, "4.3.0", "local error");
        return;
    }
    if (f->mode == DELIVER_ONE) {
        d[0] = (struct smtp_delivery){all, m->n_rcpts, m->fd, m->size};
        assert_int_equal(smtp_session_deliver(s, d, 1, h_delivered, f), 0);
    } else {
        assert_int_equal(m->n_rcpts, 2);
        d[0] = (struct smtp_delivery){first, 1, m->fd, m->size};
        d[1] = (struct smtp_delivery){second, 1, m->fd, m->size};
        assert_int_equal(smtp_session_deliver(s, d, 2, h_delivered, f), 0);
    }
}

static void h_closed(void *ctx, smtp_session *s)
{
    struct fixture *f = ctx;
    (void)s;
    f->closed = true;
    f->session = NULL;
}

static const struct smtp_session_hooks hooks = {h_rcpt, h_rcpt_free, h_message, h_closed};

static void front_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct fixture *f = arg;
    (void)l;
    f->session = smtp_session_new(&f->loop, conn, &f->cfg, &hooks, f);
    assert_non_null(f->session);
    net_listener_close(&f->front);
}

static uint64_t upstream_timeout_ms = 10000;
static const char *spool_dir; /* NULL: $TMPDIR */

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %d\n", (int)h->type);
}

/* One conversation's state: the proxy side, the client, the upstream. */
struct conv {
    struct fixture f;
    struct peer c;
    struct upstream up;
};

/* Runs one conversation; returns after every handle is closed. */
static void run(struct conv *r, enum mode mode, const char *const *client_script,
                const char *const *upstream_script, bool upstream_down, bool trusted)
{
    memset(r, 0, sizeof(*r));
    struct fixture *f = &r->f;
    struct peer *client = &r->c;
    struct upstream *up = &r->up;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->mode = mode;
    char *err = NULL;
    up->peer.name = "upstream";
    up->peer.script = upstream_script;
    up->l = net_listen(&f->loop, "127.0.0.1", 0, up_accept, up, &err);
    assert_non_null(up->l);
    uint16_t up_port = net_listener_port(up->l);
    if (upstream_down) {
        net_listener_close(&up->l); /* nothing listens there any more */
        up->peer.done = true;
    }
    f->cfg = (struct smtp_session_config){
        .hostname = "proxy.test",
        .listener = "test",
        .trusted = trusted,
        .max_message_size = 1000000,
        .max_recipients = 10,
        .max_line_length = 1000,
        .command_timeout_ms = 10000,
        .data_timeout_ms = 10000,
        .spool_dir = spool_dir,
        .upstream = {.host = "127.0.0.1", .port = up_port, .tls = SMTP_UPSTREAM_PLAIN,
                     .helo_name = "proxy.test", .timeout_ms = upstream_timeout_ms},
    };
    f->front = net_listen(&f->loop, "127.0.0.1", 0, front_accept, f, &err);
    assert_non_null(f->front);
    client->name = "client";
    client->loop = &f->loop;
    up->peer.loop = &f->loop;
    client->script = client_script;
    client->conn = net_connect(&f->loop, "127.0.0.1", net_listener_port(f->front), peer_cb,
                               client);
    assert_non_null(client->conn);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(client->failed);
    assert_false(up->peer.failed);
    assert_true(client->done);
    assert_true(up->peer.done);
    assert_true(f->closed);
    uv_walk(&f->loop, walk_cb, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* Script steps that most conversations share: the upstream's greeting and
 * the proxy's EHLO, a client's greeting and EHLO, MAIL a@x.test and RCPT
 * b@y.test accepted (as each side sees them), a DATA body to its end. */
#define UP_GREET "> 220 up.test ESMTP", "< EHLO proxy.test"
#define UP_MAIL_RCPT \
    "< MAIL FROM:<a@x.test>", "> 250 2.1.0 Ok", "< RCPT TO:<b@y.test>", "> 250 2.1.5 Ok"
#define UP_DATA "< DATA", "> 354 go ahead", "<."
#define CL_EHLO "< 220", "> EHLO c.test", "< 250 "
#define CL_MAIL_RCPT "> MAIL FROM:<a@x.test>", "< 250", "> RCPT TO:<b@y.test>", "< 250"

/* The upstream's full EHLO answer. */
#define EHLO_REPLY                                                                           \
    "> 250-up.test\r\n250-PIPELINING\r\n250-SIZE 1065536\r\n250-8BITMIME\r\n"            \
    "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 AUTH PLAIN LOGIN"

static void test_single_copy_live_transaction(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        EHLO_REPLY,
        "< AUTH PLAIN AGFAeABw",
        "> 235 2.7.0 Authentication successful",
        "< MAIL FROM:<a@x.test> BODY=8BITMIME",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b@y.test> NOTIFY=NEVER",
        "> 250 2.1.5 Ok",
        "< RCPT TO:<bad@y.test>",
        "> 550 5.1.1 <bad@y.test>: no such user",
        UP_DATA,
        "> 250 2.0.0 Ok: queued as ABC",
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    static const char *const client[] = {
        "< 220 proxy.test ESMTP",
        "> EHLO c.test",
        "< 250 ",
        "> MAIL FROM:<a@x.test>",
        "< 530 5.7.0",           /* not authenticated, not trusted */
        "> AUTH PLAIN AGFAeABw",
        "< 235 2.7.0 Authentication successful",
        "> MAIL FROM:<a@x.test> BODY=8BITMIME",
        "< 250 2.1.0 Ok",
        "> RCPT TO:<b@y.test> NOTIFY=NEVER",
        "< 250 2.1.5 Ok",
        "> RCPT TO:<bad@y.test>",
        "< 550 5.1.1 <bad@y.test>: no such user",
        "> RCPT TO:<refuse@y.test>",
        "< 550 5.7.1 refused by policy",
        "> DATA",
        "< 354 ",
        "> Subject: t\r\nBcc: hidden@z.test,\r\n\tother@z.test\r\n\r\n..dot line\r\nend\r\n.",
        "< 250 2.0.0 Ok: queued as ABC",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    run(&r, DELIVER_ONE, client, upstream, false, false);
    /* the spool: unstuffed, Bcc dropped */
    assert_int_equal(r.f.spooled_len, strlen("Subject: t\r\n\r\n.dot line\r\nend\r\n"));
    assert_memory_equal(r.f.spooled, "Subject: t\r\n\r\n.dot line\r\nend\r\n", r.f.spooled_len);
    /* upstream got it stuffed again, without Bcc, and no AUTH data in logs */
    assert_non_null(strstr(r.up.peer.log, "Subject: t\r\n\r\n..dot line\r\nend\r\n.\r\n"));
    assert_null(strstr(r.up.peer.log, "Bcc"));
    /* EHLO: SIZE is upstream's less the expansion; AUTH offered */
    assert_non_null(strstr(r.c.log, "250-SIZE 730769\r\n"));
    assert_non_null(strstr(r.c.log, "AUTH PLAIN LOGIN"));
    assert_non_null(strstr(r.c.log, "250-CHUNKING"));
    assert_null(strstr(r.c.log, "STARTTLS"));
    assert_int_equal(r.f.delivered, 1);
    assert_int_equal(r.f.result.code, 250);
}

/* The spool file exists only while a message is in the session: an idle
 * session holds its client and upstream connections and nothing else (2
 * descriptors, not 3: hostile's 10,000 idle connections), the DATA body
 * one more, and the file is gone once the message has its answer. */
static void test_spool_descriptor_only_during_message(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        EHLO_REPLY,
        UP_MAIL_RCPT,
        UP_DATA,
        "> 250 2.0.0 Ok: queued as Q1",
        UP_MAIL_RCPT,
        UP_DATA,
        "> 250 2.0.0 Ok: queued as Q2",
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    static const char *const client[] = {
        "< 220 proxy.test ESMTP",
        "> EHLO c.test",
        "< 250 ",
        "?", /* 0: idle */
        CL_MAIL_RCPT,
        "?", /* 1: transaction, no body yet */
        "> DATA",
        "< 354",
        "?", /* 2: receiving the body */
        "> Subject: one\r\n\r\nbody\r\n.",
        "< 250 2.0.0 Ok: queued as Q1",
        "?", /* 3: answered */
        CL_MAIL_RCPT,
        "> BDAT 20",
        "= Subject: two\r\n\r\nbody",
        "< 250 2.0.0 Chunk",
        "?", /* 4: between chunks */
        "> BDAT 2 LAST",
        "= \r\n",
        "< 250 2.0.0 Ok: queued as Q2",
        "?", /* 5: answered */
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    run(&r, DELIVER_ONE, client, upstream, false, true);
    assert_int_equal(r.c.n_fds, 6);
    assert_int_equal(r.c.fds[1], r.c.fds[0]);
    assert_int_equal(r.c.fds[2], r.c.fds[0] + 1);
    assert_int_equal(r.c.fds[3], r.c.fds[0]);
    assert_int_equal(r.c.fds[4], r.c.fds[0] + 1);
    assert_int_equal(r.c.fds[5], r.c.fds[0]);
    assert_int_equal(r.f.delivered, 2);
}

/* No file can be made for a message: DATA is answered 451 before any
 * body is sent, a first BDAT chunk is consumed and answered 451 (RFC
 * 3030 2); the transaction stays, nothing reaches the hooks. */
static void test_spool_unavailable(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        EHLO_REPLY,
        UP_MAIL_RCPT,
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    static const char *const client[] = {
        "< 220 proxy.test ESMTP",
        "> EHLO c.test",
        "< 250 ",
        CL_MAIL_RCPT,
        "> DATA",
        "< 451 4.3.0 Local error: cannot store the message",
        "> BDAT 4 LAST",
        "= abcd",
        "< 451 4.3.0 Local error: cannot store the message",
        "> NOOP",
        "< 250",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    spool_dir = "/nonexistent/spool";
    run(&r, DELIVER_ONE, client, upstream, false, true);
    spool_dir = NULL;
    assert_int_equal(r.f.delivered, 0);
    assert_int_equal(r.f.spooled_len, 0);
}

static void test_two_copies_second_refused(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250-up.test\r\n250 SIZE 0",
        "< MAIL FROM:<a@x.test>",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b1@y.test>",
        "> 250 2.1.5 Ok",
        "< RCPT TO:<b2@y.test>",
        "> 250 2.1.5 Ok",
        "< RSET",
        "> 250 2.0.0 Ok",
        "< MAIL FROM:<a@x.test> SIZE=",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b1@y.test>",
        "> 250 2.1.5 Ok",
        "< DATA",
        "> 354 go",
        "<.",
        "> 250 2.0.0 queued 1",
        "< MAIL FROM:<a@x.test> SIZE=",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b2@y.test>",
        "> 452 4.2.2 mailbox full",
        "< RSET",
        "> 250 2.0.0 Ok",
        "< QUIT",
        "> 221 Bye",
        NULL,
    };
    struct conv r;
    static const char *const client4[] = {
        CL_EHLO,
        "> AUTH PLAIN x",
        "< 502 5.5.1",
        "> MAIL FROM:<a@x.test>",
        "< 250",
        "> RCPT TO:<b1@y.test>",
        "< 250",
        "> RCPT TO:<b2@y.test>",
        "< 250",
        "> BDAT 6\r\nA: b",
        "< 250 2.0.0",
        "> BDAT 8 LAST\r\n\r\nbody",
        ("< 452 4.2.2 Upstream refused copy 2 of 2 (for <b2@y.test>): mailbox full "
         "(earlier copies were already delivered)"),
        "> QUIT",
        "< 221",
        NULL,
    };
    run(&r, DELIVER_TWO, client4, upstream, false, true);
    assert_int_equal(r.f.spooled_len, 14);
    assert_memory_equal(r.f.spooled, "A: b\r\n\r\nbody\r\n", 14);
    assert_int_equal(r.f.delivered, 1);
    assert_int_equal(r.f.result.n_done, 1);
    assert_int_equal(r.f.result.n_total, 2);
    assert_int_equal(r.f.result.code, 452);
    /* no AUTH advertised when upstream has none */
    assert_null(strstr(r.c.log, "250-AUTH"));
    assert_null(strstr(r.c.log, "250 AUTH"));
}

static void test_fail_resets_upstream(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250 up.test",
        "< MAIL FROM:<>",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b@y.test>",
        "> 250 2.1.5 Ok",
        "< RSET",
        "> 250 2.0.0 Ok",
        "< QUIT",
        "> 221 Bye",
        NULL,
    };
    static const char *const client[] = {
        "< 220",
        "> HELO c.test",
        "< 250 2.0.0 proxy.test",
        "> NOOP",
        "< 250 2.0.0",
        "> MAIL FROM:<>",
        "< 250",
        "> RCPT TO:<b@y.test>",
        "< 250",
        "> DATA",
        "< 354",
        "> x\r\n.",
        "< 451 4.7.5 keys unavailable",
        "> XYZZY",
        "< 500 5.5.2",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    run(&r, FAIL_451, client, upstream, false, true);
    assert_int_equal(r.f.delivered, 0);
}

/* Upstream drops the connection while MAIL and RCPT of a copy are in
 * flight (pipelined): both replies fail, the client gets 421 once. */
static void test_upstream_lost_during_copies(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250-up.test\r\n250 PIPELINING",
        "< MAIL FROM:<a@x.test>",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b1@y.test>",
        "> 250 2.1.5 Ok",
        "< RCPT TO:<b2@y.test>",
        "> 250 2.1.5 Ok",
        "< RSET",
        "> 250 2.0.0 Ok",
        "< MAIL FROM:<a@x.test> SIZE=",
        NULL, /* and hang up */
    };
    static const char *const client[] = {
        CL_EHLO,
        "> MAIL FROM:<a@x.test>",
        "< 250",
        "> RCPT TO:<b1@y.test>",
        "< 250",
        "> RCPT TO:<b2@y.test>",
        "< 250",
        "> DATA",
        "< 354",
        "> A: b\r\n\r\nbody\r\n.",
        "< 421 4.4.2",
        NULL,
    };
    struct conv r;
    run(&r, DELIVER_TWO, client, upstream, false, true);
    assert_int_equal(r.f.delivered, 1);
    assert_int_equal(r.f.result.code, 421);
    assert_int_equal(r.f.result.n_done, 0);
}

/* The client pauses longer than the upstream reply timeout between MAIL
 * and RCPT: an idle upstream connection does not time out. */
static void test_idle_upstream_does_not_time_out(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250 up.test",
        UP_MAIL_RCPT,
        "< QUIT",
        "> 221 Bye",
        NULL,
    };
    static const char *const client[] = {
        CL_EHLO,
        "> MAIL FROM:<a@x.test>",
        "< 250",
        "~600",
        "> RCPT TO:<b@y.test>",
        "< 250 2.1.5",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    upstream_timeout_ms = 200;
    run(&r, DELIVER_ONE, client, upstream, false, true);
    upstream_timeout_ms = 10000;
}

static void test_deliver_refused_keeps_caller_arrays(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250 up.test",
        UP_MAIL_RCPT,
        "< RSET",
        "> 250 2.0.0 Ok",
        "< QUIT",
        "> 221 Bye",
        NULL,
    };
    static const char *const client[] = {
        CL_EHLO,
        CL_MAIL_RCPT,
        "> DATA",
        "< 354",
        "> A: b\r\n\r\nbody\r\n.",
        "< 451 4.3.0 local error",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    run(&r, DELIVER_BAD_INDEX, client, upstream, false, true);
    assert_int_equal(r.f.delivered, 0);
}

/* The states that used to be flags: an overlong line discarded to its end
 * (SKIP_LINE), a refused BDAT consumed then answered (BDAT_DISCARD), the
 * AUTH exchange with two challenges (AUTH_UPSTREAM / AUTH_CLIENT), RCPT
 * and DATA refused between chunks (CHUNKED), and a QUIT pipelined right
 * after the last chunk, answered after the message's reply (input is
 * offered again when PROCESSING and DELIVERING end). */
static void test_states_and_pipelining(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250-up.test\r\n250-PIPELINING\r\n250 AUTH LOGIN",
        "< AUTH LOGIN",
        "> 334 VXNlcm5hbWU6",
        "< dXNlcg==",
        "> 334 UGFzc3dvcmQ6",
        "< cGFzcw==",
        "> 235 2.7.0 Authentication successful",
        UP_MAIL_RCPT,
        UP_DATA,
        "> 250 2.0.0 Ok: queued as XYZ",
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    static char longline[1600];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[0] = '=';
    longline[1] = ' ';
    static const char *client[] = {
        "< 220 proxy.test ESMTP",
        "> EHLO c.test",
        "< 250 ",
        NULL, /* longline: 1598 bytes without a line end */
        "< 500 5.5.2 Line too long",
        "> rest of the long line",
        "> NOOP",
        "< 250 2.0.0 Ok",
        "> BDAT 5\r\nabc", /* the chunk is "abc" CRLF */
        "< 503 5.5.1 Need RCPT command first",
        "> AUTH LOGIN",
        "< 334 VXNlcm5hbWU6",
        "> dXNlcg==",
        "< 334 UGFzc3dvcmQ6",
        "> cGFzcw==",
        "< 235 2.7.0 Authentication successful",
        "> MAIL FROM:<a@x.test>",
        "< 250 2.1.0 Ok",
        "> RCPT TO:<b@y.test>",
        "< 250 2.1.5 Ok",
        "> BDAT 6\r\nA: b",
        "< 250 2.0.0 Chunk received",
        "> RCPT TO:<c@y.test>",
        "< 503 5.5.1 RCPT not allowed after BDAT",
        "> DATA",
        "< 503 5.5.1 DATA not allowed after BDAT",
        "> BDAT 8 LAST\r\n\r\nbody\r\nQUIT",
        "< 250 2.0.0 Ok: queued as XYZ",
        "< 221",
        NULL,
    };
    client[3] = longline;
    struct conv r;
    run(&r, DELIVER_ONE, client, upstream, false, false);
    assert_int_equal(r.f.spooled_len, strlen("A: b\r\n\r\nbody\r\n"));
    assert_memory_equal(r.f.spooled, "A: b\r\n\r\nbody\r\n", r.f.spooled_len);
    assert_int_equal(r.f.delivered, 1);
    /* the 500 came once for the long line */
    const char *first = strstr(r.c.log, "500 5.5.2");
    assert_non_null(first);
    assert_null(strstr(first + 1, "500 5.5.2"));
}

/* AUTH XOAUTH2 and OAUTHBEARER (RFC 7628) pass through like PLAIN: with an
 * initial response longer than max_line_length (an OAuth token; RFC 4954
 * allows 12288), the error challenge and the client's empty answer
 * relayed, and no token in any log line, at debug level. Upstream offers
 * only the OAuth mechanisms (as Gmail and Microsoft 365 do). */
static void test_auth_oauth_pass_through(void **state)
{
    (void)state;
    /* "user=u@x.test\1auth=Bearer <token>\1\1", base64: a long token */
    static char xoauth2[12100], oauthbearer[5000], up_x[12200], up_o[5100];
    memcpy(xoauth2, "> AUTH XOAUTH2 ", 15); /* NOLINT(bugprone-not-null-terminated-result) */
    for (size_t i = 15; i < sizeof(xoauth2) - 1; i++)
        xoauth2[i] = "dXNlcj1TRUNSRVRUT0tFTgEBYXV0aD1CZWFyZXI"[i % 39];
    snprintf(up_x, sizeof(up_x), "< %s", xoauth2 + 2);
    memcpy(oauthbearer, "> AUTH OAUTHBEARER ", 19); /* NOLINT(bugprone-not-null-terminated-result) */
    for (size_t i = 19; i < sizeof(oauthbearer) - 1; i++)
        oauthbearer[i] = "bixhPXVAeC50ZXN0LAFob3N0PXVwAUJFQVJFUlRPSw"[i % 42];
    snprintf(up_o, sizeof(up_o), "< %s", oauthbearer + 2);
    static const char *upstream[] = {
        UP_GREET,
        "> 250-up.test\r\n250-PIPELINING\r\n250-AUTH XOAUTH2 OAUTHBEARER\r\n250 SIZE 0",
        NULL, /* up_x */
        "> 334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=",
        "< ",  /* the client's empty answer */
        "> 535 5.7.8 Username and Password not accepted",
        NULL, /* up_o */
        "> 235 2.7.0 Accepted",
        "< MAIL FROM:<u@x.test>",
        "> 250 2.1.0 Ok",
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    upstream[3] = up_x;
    upstream[7] = up_o;
    static const char *client[] = {
        CL_EHLO,
        "> AUTH PLAIN AGFAeABw",
        "< 504 5.5.4 Unrecognized authentication type",
        NULL, /* xoauth2 */
        "< 334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=",
        "> ",
        "< 535 5.7.8 Username and Password not accepted",
        NULL, /* oauthbearer */
        "< 235 2.7.0 Accepted",
        "> MAIL FROM:<u@x.test>",
        "< 250 2.1.0 Ok",
        "> QUIT",
        "< 221",
        NULL,
    };
    client[5] = xoauth2;
    client[9] = oauthbearer;
    struct conv r;
    enum qlog_level was = qlog_get_level();
    qlog_set_level(QLOG_DEBUG);
    logged_len = 0;
    qlog_set_sink(capture_log, NULL);
    run(&r, DELIVER_ONE, client, upstream, false, false);
    qlog_set_sink(NULL, NULL);
    qlog_set_level(was);
    assert_non_null(strstr(r.c.log, "250 AUTH XOAUTH2 OAUTHBEARER\r\n"));
    assert_null(strstr(r.c.log, "PLAIN"));
    /* the exchange is in the log, the credentials are not */
    assert_non_null(strstr(logged, "<<< AUTH <redacted>"));
    assert_null(strstr(logged, "dXNlcj1TRUNSRVRUT0tFTgEBYXV0aD1CZWFyZXI"));
    assert_null(strstr(logged, "bixhPXVAeC50ZXN0LAFob3N0PXVwAUJFQVJFUlRPSw"));
    assert_null(strstr(logged, "eyJzdGF0dXMiOiI0MDEi"));
    /* (these responses are token-shaped filler, no GS2 header at their
     * start: nobody is named) and no decoded token shows either */
    assert_non_null(strstr(logged, "authenticated by upstream"));
    assert_null(strstr(logged, "SECRETTOKEN"));
    assert_null(strstr(logged, "BEARERTOK"));
    /* upstream got the whole initial responses and the empty answer */
    assert_non_null(strstr(r.up.peer.log, xoauth2 + 2));
    assert_non_null(strstr(r.up.peer.log, "\r\n\r\nAUTH OAUTHBEARER "));
}

/* The log names who authenticated (PLAIN's authcid and authzid, LOGIN's
 * user name) once upstream answered 235, on the session's lines and in the
 * message; never a password, and nobody for a refused exchange. */
static void test_auth_identity_logged(void **state)
{
    (void)state;
    static const char *const upstream[] = {
        UP_GREET,
        "> 250-up.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN",
        "< AUTH LOGIN",
        "> 334 VXNlcm5hbWU6",
        "< bWFsbG9yeQ==",
        "> 334 UGFzc3dvcmQ6",
        "< cGFzc3dvcmQx",
        "> 535 5.7.8 Authentication credentials invalid",
        "< AUTH PLAIN Ym9zc0BleGFtcGxlLm9yZwBhbGljZUBleGFtcGxlLm9yZwBzM2NyM3QtcHc=",
        "> 235 2.7.0 Authentication successful",
        "< MAIL FROM:<alice@example.org>",
        "> 250 2.1.0 Ok",
        "< RCPT TO:<b@y.test>",
        "> 250 2.1.5 Ok",
        UP_DATA,
        "> 250 2.0.0 Ok: queued as Q1",
        "< QUIT",
        "> 221 2.0.0 Bye",
        NULL,
    };
    static const char *const client[] = {
        CL_EHLO,
        "> AUTH LOGIN",          /* mallory / password1: refused */
        "< 334 VXNlcm5hbWU6",
        "> bWFsbG9yeQ==",
        "< 334 UGFzc3dvcmQ6",
        "> cGFzc3dvcmQx",
        "< 535",
        /* authzid boss@example.org, authcid alice@example.org, s3cr3t-pw */
        "> AUTH PLAIN Ym9zc0BleGFtcGxlLm9yZwBhbGljZUBleGFtcGxlLm9yZwBzM2NyM3QtcHc=",
        "< 235",
        "> MAIL FROM:<alice@example.org>",
        "< 250",
        "> RCPT TO:<b@y.test>",
        "< 250",
        "> DATA",
        "< 354",
        "> Subject: s\r\n\r\nbody\r\n.",
        "< 250 2.0.0 Ok: queued as Q1",
        "> QUIT",
        "< 221",
        NULL,
    };
    struct conv r;
    enum qlog_level was = qlog_get_level();
    qlog_set_level(QLOG_DEBUG);
    logged_len = 0;
    qlog_set_sink(capture_log, NULL);
    run(&r, DELIVER_ONE, client, upstream, false, false);
    qlog_set_sink(NULL, NULL);
    qlog_set_level(was);
    assert_non_null(strstr(logged, "authenticated by upstream user=alice@example.org "
                                   "authzid=boss@example.org"));
    assert_non_null(strstr(logged, "disconnect from 127.0.0.1"));
    assert_non_null(strstr(strstr(logged, "disconnect from"), " user=alice@example.org"));
    assert_string_equal(r.f.auth_user, "alice@example.org");
    assert_int_equal(r.f.delivered, 1);
    /* the refused user, the passwords, the responses: nowhere */
    static const char *const never[] = {
        "mallory", "password1", "s3cr3t-pw", "bWFsbG9yeQ", "cGFzc3dvcmQx",
        "Ym9zc0BleGFtcGxlLm9yZwBhbGljZUBleGFtcGxlLm9yZwBzM2NyM3QtcHc",
    };
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        if (strstr(logged, never[i]) != NULL)
            fail_msg("'%s' is in the log", never[i]);
}

static void test_upstream_down(void **state)
{
    (void)state;
    static const char *const upstream[] = {NULL};
    static const char *const client[] = {
        "< 421 4.4.1",
        NULL,
    };
    struct conv r;
    run(&r, DELIVER_ONE, client, upstream, true, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_copy_live_transaction),
        cmocka_unit_test(test_spool_descriptor_only_during_message),
        cmocka_unit_test(test_spool_unavailable),
        cmocka_unit_test(test_two_copies_second_refused),
        cmocka_unit_test(test_fail_resets_upstream),
        cmocka_unit_test(test_upstream_lost_during_copies),
        cmocka_unit_test(test_idle_upstream_does_not_time_out),
        cmocka_unit_test(test_deliver_refused_keeps_caller_arrays),
        cmocka_unit_test(test_states_and_pipelining),
        cmocka_unit_test(test_auth_oauth_pass_through),
        cmocka_unit_test(test_auth_identity_logged),
        cmocka_unit_test(test_upstream_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
