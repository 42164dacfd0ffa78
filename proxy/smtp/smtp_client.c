/* Upstream SMTP client: connection setup state machine, pipelined command
 * queue, body streaming (a net_pump with the dot-stuffer as its filter). */
#include "smtp_client.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_proto.h"

#define BODY_CHUNK ((size_t)64 * 1024)
#define BODY_HIGH_WATER ((size_t)256 * 1024) /* pause reading the fd above this */

enum smtpc_state {
    SMTPC_CONNECTING,
    SMTPC_TLS_IMPLICIT,  /* handshake right after connect */
    SMTPC_GREETING,
    SMTPC_EHLO,
    SMTPC_HELO,
    SMTPC_STARTTLS,
    SMTPC_TLS_STARTTLS,
    SMTPC_EHLO2,
    SMTPC_READY,         /* idle or running queued operations */
    SMTPC_QUIT,
    SMTPC_FAILED,
};

static const char *const state_names[] = {
    [SMTPC_CONNECTING] = "CONNECTING", [SMTPC_TLS_IMPLICIT] = "TLS",
    [SMTPC_GREETING] = "GREETING",     [SMTPC_EHLO] = "EHLO",
    [SMTPC_HELO] = "HELO",             [SMTPC_STARTTLS] = "STARTTLS",
    [SMTPC_TLS_STARTTLS] = "STARTTLS_TLS", [SMTPC_EHLO2] = "EHLO2",
    [SMTPC_READY] = "READY",           [SMTPC_QUIT] = "QUIT",
    [SMTPC_FAILED] = "FAILED",
};

struct op {
    struct op *next;
    char *line;         /* NULL for a body operation */
    size_t line_len;
    unsigned flags;
    bool sent;
    net_pump *pump;     /* body: the caller's fd through the stuffer */
    smtp_client_cb cb;
    void *arg;
};

struct smtp_client {
    uv_loop_t *loop;
    enum smtpc_state state;
    net_conn *conn;
    net_tls *tls_ctx;
    enum smtp_upstream_tls tls_mode;
    char *host;
    char *server_name;
    char *helo;
    uint64_t timeout_ms;
    smtp_client_cb ready_cb;
    void *ready_arg;

    unsigned ext;
    uint64_t max_size;
    smtp_reply_parser *parser;

    struct op *head, *tail;  /* queued operations, oldest first */
    /* body streaming of head (a body op) */
    bool body_active;        /* sending the head op's body */
    bool body_done_sending;
    struct smtp_stuffer stuffer; /* the pump filter's state */
    bool closing;            /* smtp_client_free() was called */
    unsigned busy;           /* inside a net or fs callback: defer destroy */
    unsigned in_callback;
};

static void client_on_event(net_conn *conn, enum net_event ev, void *arg);
static void pump(smtp_client *c);
static void body_continue(smtp_client *c);

const char *smtp_client_state_name(const smtp_client *c)
{
    return state_names[c->state];
}

static void enter_state(smtp_client *c, enum smtpc_state s) { c->state = s; }

bool smtp_client_ready(const smtp_client *c) { return c->state == SMTPC_READY; }
unsigned smtp_client_extensions(const smtp_client *c) { return c->ext; }
uint64_t smtp_client_max_size(const smtp_client *c) { return c->max_size; }
bool smtp_client_is_tls(const smtp_client *c)
{
    return c->conn && net_conn_is_tls(c->conn);
}

static void op_free(struct op *op)
{
    net_pump_free(&op->pump);
    if (op->line) {
        if (op->flags & SMTP_CLIENT_SECRET)
            OPENSSL_cleanse(op->line, op->line_len);
        free(op->line);
    }
    free(op);
}

static void client_destroy(smtp_client *c)
{
    smtp_reply_parser_free(&c->parser);
    free(c->host);
    free(c->server_name);
    free(c->helo);
    free(c);
}

/* Fails every queued operation (and a pending setup) with reply r. */
static void fail_all(smtp_client *c, int code, const char *enh, const char *text,
                     bool transport, bool cancelled)
{
    struct smtp_client_reply r = {code, enh, text, transport, cancelled};
    enum smtpc_state old = c->state;
    enter_state(c, SMTPC_FAILED);
    if (c->conn)
        net_conn_close(&c->conn);
    c->body_active = false;
    c->in_callback++;
    if (old < SMTPC_READY && c->ready_cb) {
        smtp_client_cb cb = c->ready_cb;
        c->ready_cb = NULL;
        cb(c, &r, c->ready_arg);
    }
    while (c->head) {
        struct op *op = c->head;
        c->head = op->next;
        if (!c->head)
            c->tail = NULL;
        if (op->cb)
            op->cb(c, &r, op->arg);
        op_free(op);
    }
    c->in_callback--;
}

static void transport_failure(smtp_client *c, const char *what)
{
    char text[512];
    snprintf(text, sizeof(text), "Upstream %s: %s", c->host, what);
    fail_all(c, 421, "4.4.2", text, true, false);
}

smtp_client *smtp_client_new(uv_loop_t *loop, const struct smtp_client_config *cfg,
                             smtp_client_cb ready_cb, void *arg)
{
    smtp_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->tls_ctx = cfg->tls_ctx;
    c->tls_mode = cfg->tls;
    c->host = strdup(cfg->host);
    c->server_name = strdup(cfg->server_name ? cfg->server_name : cfg->host);
    c->helo = strdup(cfg->helo_name ? cfg->helo_name : "localhost");
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 300000;
    c->ready_cb = ready_cb;
    c->ready_arg = arg;
    c->parser = smtp_reply_parser_new();
    if (!c->host || !c->server_name || !c->helo || !c->parser) {
        client_destroy(c);
        return NULL;
    }
    enter_state(c, SMTPC_CONNECTING);
    c->conn = net_connect(loop, cfg->host, cfg->port, client_on_event, c);
    if (!c->conn) {
        client_destroy(c);
        return NULL;
    }
    return c;
}

void smtp_client_free(smtp_client **cp)
{
    if (!cp || !*cp)
        return;
    smtp_client *c = *cp;
    *cp = NULL;
    c->ready_cb = NULL;
    if (c->state == SMTPC_READY && !c->body_active && c->conn) {
        /* Replies still due are dropped; unsent commands are never sent. */
        net_conn_write(c->conn, "QUIT\r\n", 6);
        net_conn_close_after_write(&c->conn);
    } else if (c->conn) {
        net_conn_close(&c->conn);
    }
    c->closing = true;
    fail_all(c, 421, "4.3.0", "cancelled", false, true);
    if (c->busy > 0)
        return; /* destroyed when the callback returns */
    client_destroy(c);
}

/* Called at the end of every entry from the loop. */
static void maybe_destroy(smtp_client *c)
{
    if (c->closing && c->busy == 0)
        client_destroy(c);
}

/* ---- EHLO parsing -------------------------------------------------------- */

static void learn_ehlo(smtp_client *c, const struct smtp_reply *r)
{
    c->ext = 0;
    c->max_size = 0;
    size_t pos = 0, len;
    const char *line;
    bool first = true;
    while ((line = smtp_reply_line(r, &pos, &len)) != NULL) {
        if (first) { /* greeting line: server name */
            first = false;
            continue;
        }
        char kw[32];
        size_t k = 0;
        while (k < len && k < sizeof(kw) - 1 && line[k] != ' ' && line[k] != '=') {
            kw[k] = line[k];
            k++;
        }
        kw[k] = '\0';
        const char *args = line + k;
        size_t alen = len - k;
        if (strcasecmp(kw, "PIPELINING") == 0)
            c->ext |= SMTP_EXT_PIPELINING;
        else if (strcasecmp(kw, "8BITMIME") == 0)
            c->ext |= SMTP_EXT_8BITMIME;
        else if (strcasecmp(kw, "SMTPUTF8") == 0)
            c->ext |= SMTP_EXT_SMTPUTF8;
        else if (strcasecmp(kw, "ENHANCEDSTATUSCODES") == 0)
            c->ext |= SMTP_EXT_ENHANCEDSTATUSCODES;
        else if (strcasecmp(kw, "DSN") == 0)
            c->ext |= SMTP_EXT_DSN;
        else if (strcasecmp(kw, "CHUNKING") == 0)
            c->ext |= SMTP_EXT_CHUNKING;
        else if (strcasecmp(kw, "STARTTLS") == 0)
            c->ext |= SMTP_EXT_STARTTLS;
        else if (strcasecmp(kw, "SIZE") == 0) {
            c->ext |= SMTP_EXT_SIZE;
            uint64_t v = 0;
            size_t i = 0;
            while (i < alen && args[i] == ' ')
                i++;
            for (; i < alen && args[i] >= '0' && args[i] <= '9' && v < UINT64_MAX / 10; i++)
                v = v * 10 + (uint64_t)(args[i] - '0');
            c->max_size = v;
        } else if (strcasecmp(kw, "AUTH") == 0) {
            c->ext |= SMTP_EXT_AUTH;
            /* mechanisms, space (or '=' for old servers) separated */
            size_t i = 0;
            while (i < alen) {
                while (i < alen && (args[i] == ' ' || args[i] == '='))
                    i++;
                size_t s = i;
                while (i < alen && args[i] != ' ')
                    i++;
                static const struct {
                    const char *name;
                    unsigned ext;
                } mechs[] = {
                    {"PLAIN", SMTP_EXT_AUTH_PLAIN},
                    {"LOGIN", SMTP_EXT_AUTH_LOGIN},
                    {"XOAUTH2", SMTP_EXT_AUTH_XOAUTH2},
                    {"OAUTHBEARER", SMTP_EXT_AUTH_OAUTHBEARER},
                };
                for (size_t m = 0; m < sizeof(mechs) / sizeof(mechs[0]); m++)
                    if (i - s == strlen(mechs[m].name) &&
                        strncasecmp(args + s, mechs[m].name, i - s) == 0)
                        c->ext |= mechs[m].ext;
            }
        }
    }
}

/* ---- setup state machine -------------------------------------------------- */

static void send_line(smtp_client *c, const char *line)
{
    net_conn_printf(c->conn, "%s\r\n", line);
}

static void send_ehlo(smtp_client *c, enum smtpc_state s)
{
    enter_state(c, s);
    net_conn_printf(c->conn, "%s %s\r\n", s == SMTPC_HELO ? "HELO" : "EHLO", c->helo);
}

static void setup_ready(smtp_client *c, const struct smtp_reply *r)
{
    enter_state(c, SMTPC_READY);
    net_conn_set_timeout(c->conn, 0); /* idle between transactions is fine */
    if (c->ready_cb) {
        smtp_client_cb cb = c->ready_cb;
        c->ready_cb = NULL;
        struct smtp_client_reply out = {r->code, r->enh, r->text, false, false};
        c->in_callback++;
        cb(c, &out, c->ready_arg);
        c->in_callback--;
    }
}

static void setup_reply_failed(smtp_client *c, const struct smtp_reply *r,
                               const char *during)
{
    char text[SMTP_REPLY_MAX + 128];
    snprintf(text, sizeof(text), "Upstream %s refused %s: %s", c->host, during, r->text);
    int code = r->code >= 500 ? 554 : 421;
    fail_all(c, code, code >= 500 ? "5.3.0" : "4.3.0", text, false, false);
}

static void setup_reply(smtp_client *c, const struct smtp_reply *r)
{
    switch (c->state) {
    case SMTPC_GREETING:
        if (r->code != 220)
            return setup_reply_failed(c, r, "the connection");
        return send_ehlo(c, SMTPC_EHLO);
    case SMTPC_EHLO:
        if (r->code == 250) {
            learn_ehlo(c, r);
            bool want_tls = c->tls_mode == SMTP_UPSTREAM_STARTTLS ||
                            (c->tls_mode == SMTP_UPSTREAM_STARTTLS_OPPORTUNISTIC &&
                             (c->ext & SMTP_EXT_STARTTLS));
            if (want_tls) {
                if (!(c->ext & SMTP_EXT_STARTTLS)) {
                    fail_all(c, 421, "4.7.0",
                             "Upstream does not offer STARTTLS, which is required",
                             true, false);
                    return;
                }
                enter_state(c, SMTPC_STARTTLS);
                send_line(c, "STARTTLS");
                return;
            }
            return setup_ready(c, r);
        }
        if (r->code >= 500 && c->tls_mode != SMTP_UPSTREAM_STARTTLS)
            return send_ehlo(c, SMTPC_HELO);
        return setup_reply_failed(c, r, "EHLO");
    case SMTPC_HELO:
        if (r->code != 250)
            return setup_reply_failed(c, r, "HELO");
        c->ext = 0;
        return setup_ready(c, r);
    case SMTPC_STARTTLS:
        if (r->code != 220) {
            if (c->tls_mode == SMTP_UPSTREAM_STARTTLS_OPPORTUNISTIC)
                return setup_ready(c, r); /* stays plain, as configured */
            return setup_reply_failed(c, r, "STARTTLS");
        }
        enter_state(c, SMTPC_TLS_STARTTLS);
        if (net_conn_start_tls(c->conn, c->tls_ctx, c->server_name) < 0)
            transport_failure(c, "cannot start TLS");
        return;
    case SMTPC_EHLO2:
        if (r->code != 250)
            return setup_reply_failed(c, r, "EHLO after STARTTLS");
        learn_ehlo(c, r);
        return setup_ready(c, r);
    default:
        return;
    }
}

/* ---- operations ----------------------------------------------------------- */

static void op_complete(smtp_client *c, const struct smtp_reply *r)
{
    struct op *op = c->head;
    c->head = op->next;
    if (!c->head)
        c->tail = NULL;
    struct smtp_client_reply out = {r->code, r->enh, r->text, false, false};
    c->in_callback++;
    if (op->cb)
        op->cb(c, &out, op->arg);
    c->in_callback--;
    op_free(op);
}

static void on_reply(smtp_client *c, const struct smtp_reply *r)
{
    if (c->state != SMTPC_READY) {
        setup_reply(c, r);
        return;
    }
    struct op *op = c->head;
    if (!op || !op->sent) {
        transport_failure(c, "unexpected reply");
        return;
    }
    if (!op->line && !c->body_done_sending) {
        /* Server answered before the end of the body: it gave up. */
        c->body_active = false;
    }
    if (!op->line)
        c->body_active = false;
    op_complete(c, r);
    if (c->state == SMTPC_READY && c->conn && !c->head)
        net_conn_set_timeout(c->conn, 0); /* idle: waiting for our client is fine */
    if (c->state == SMTPC_READY)
        pump(c);
}

static void process_input(smtp_client *c)
{
    size_t len;
    while (c->conn && (len = net_conn_line_len(c->conn)) > 0) {
        size_t avail;
        const char *in = net_conn_input(c->conn, &avail);
        const struct smtp_reply *r = NULL;
        const char *err = NULL;
        enum smtp_parse_result pr = smtp_reply_feed(c->parser, in, len, &r, &err);
        net_conn_consume(c->conn, len);
        if (pr == SMTP_ERR) {
            transport_failure(c, err);
            return;
        }
        if (pr == SMTP_DONE)
            on_reply(c, r);
    }
    if (c->conn) {
        size_t avail;
        net_conn_input(c->conn, &avail);
        if (avail >= 65536)
            transport_failure(c, "reply line too long");
    }
}

static void client_handle_event(smtp_client *c, enum net_event ev);

static void client_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    smtp_client *c = arg;
    (void)conn;
    c->busy++;
    client_handle_event(c, ev);
    c->busy--;
    maybe_destroy(c);
}

static void client_handle_event(smtp_client *c, enum net_event ev)
{
    if (c->closing || !c->conn)
        return;
    switch (ev) {
    case NET_EV_CONNECTED:
        net_conn_set_timeout(c->conn, c->timeout_ms);
        if (c->tls_mode == SMTP_UPSTREAM_IMPLICIT) {
            enter_state(c, SMTPC_TLS_IMPLICIT);
            if (net_conn_start_tls(c->conn, c->tls_ctx, c->server_name) < 0)
                transport_failure(c, "cannot start TLS");
        } else {
            enter_state(c, SMTPC_GREETING);
        }
        return;
    case NET_EV_TLS_READY:
        if (c->state == SMTPC_TLS_IMPLICIT)
            enter_state(c, SMTPC_GREETING);
        else if (c->state == SMTPC_TLS_STARTTLS)
            send_ehlo(c, SMTPC_EHLO2);
        return;
    case NET_EV_READ:
        process_input(c);
        return;
    case NET_EV_DRAINED:
        if (c->body_active)
            body_continue(c);
        return;
    case NET_EV_EOF:
        process_input(c);
        if (c->conn)
            transport_failure(c, "connection closed");
        return;
    case NET_EV_TIMEOUT:
        transport_failure(c, "timed out waiting for a reply");
        return;
    case NET_EV_ERROR:
        transport_failure(c, net_conn_error(c->conn));
        return;
    }
}

/* Writes queued command lines: all of them with PIPELINING, else the next
 * one when nothing is outstanding. A body op is started once every earlier
 * op has completed (it is then the head). */
static void pump(smtp_client *c)
{
    if (c->state != SMTPC_READY || !c->conn)
        return;
    bool outstanding = false;
    for (struct op *op = c->head; op; op = op->next) {
        if (op->sent) {
            outstanding = true;
            continue;
        }
        if (!op->line) {
            if (op != c->head)
                return;
            op->sent = true;
            c->body_active = true;
            c->body_done_sending = false;
            smtp_stuffer_init(&c->stuffer);
            net_conn_set_timeout(c->conn, c->timeout_ms);
            body_continue(c);
            return;
        }
        if (outstanding && !(c->ext & SMTP_EXT_PIPELINING))
            return;
        net_conn_write(c->conn, op->line, op->line_len);
        if (op->flags & SMTP_CLIENT_SECRET)
            OPENSSL_cleanse(op->line, op->line_len);
        op->sent = true;
        outstanding = true;
        net_conn_set_timeout(c->conn, c->timeout_ms);
    }
}

static int enqueue(smtp_client *c, struct op *op)
{
    if (c->state != SMTPC_READY) {
        op_free(op);
        return -1;
    }
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    pump(c);
    return 0;
}

int smtp_client_command(smtp_client *c, const char *line, unsigned flags,
                        smtp_client_cb cb, void *arg)
{
    struct op *op = calloc(1, sizeof(*op));
    if (!op)
        return -1;
    size_t len = strlen(line);
    op->line = malloc(len + 3);
    if (!op->line) {
        free(op);
        return -1;
    }
    memcpy(op->line, line, len);
    memcpy(op->line + len, "\r\n", 2);
    op->line[len + 2] = '\0';
    op->line_len = len + 2;
    op->flags = flags;
    op->cb = cb;
    op->arg = arg;
    return enqueue(c, op);
}

/* The dot-stuffer as a net_pump filter (c->stuffer). */
static size_t stuff_chunk(void *arg, const char *in, size_t len, char *out)
{
    return smtp_stuff(arg, in, len, out);
}

static size_t stuff_end(void *arg, char *out)
{
    return smtp_stuff_end(arg, out);
}

int smtp_client_body(smtp_client *c, int fd, uint64_t size, smtp_client_cb cb,
                     void *arg)
{
    if (c->state != SMTPC_READY || !c->conn)
        return -1;
    struct op *op = calloc(1, sizeof(*op));
    if (!op)
        return -1;
    /* smtp_stuff writes at most 2 * len + 2 bytes, the end 5. */
    const struct net_pump_filter stuffing = {
        .chunk = stuff_chunk, .end = stuff_end, .out_factor = 2, .out_extra = 8,
        .arg = &c->stuffer};
    const struct net_pump_config pc = {
        .fd = fd, .offset = 0, .length = size, .chunk_size = BODY_CHUNK,
        .high_water = BODY_HIGH_WATER, .filter = &stuffing};
    op->pump = net_pump_new(c->conn, &pc);
    if (!op->pump) {
        free(op);
        return -1;
    }
    op->cb = cb;
    op->arg = arg;
    return enqueue(c, op);
}

/* ---- body streaming -------------------------------------------------------- */

/* Streams the head op's body: the copy is a local file the proxy has just
 * written (page cache); the pump reads it on the loop while the output
 * queue stays below the high water mark, and NET_EV_DRAINED continues. */
static void body_continue(smtp_client *c)
{
    struct op *op = c->head;
    if (!c->body_active || !c->conn || !op || op->line)
        return;
    int rc = net_pump_run(op->pump);
    if (rc == NET_PUMP_MORE)
        return;
    c->body_active = false;
    if (rc == NET_PUMP_DONE) {
        c->body_done_sending = true;
        return;
    }
    transport_failure(c, rc == UV_EOF ? "message file shorter than expected"
                         : rc == UV_EIO ? "cannot read the message"
                                        : "write failed");
}
