/* Upstream IMAP connection: setup, commands in flight, continuations, held
 * output, response events to the owner. */
#include "imap_client.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CAPS_MAX 8192
#define TAG_MAX 64

enum ic_state {
    IC_CONNECTING,
    IC_TLS,           /* implicit TLS handshake */
    IC_GREETING,
    IC_STARTTLS,      /* STARTTLS sent */
    IC_STARTTLS_TLS,  /* handshake after STARTTLS */
    IC_CAPABILITY,
    IC_ID,
    IC_READY,
    IC_DEAD,
};

struct imap_client_cmd {
    imap_client_cmd *next, *prev;
    char tag[TAG_MAX + 1];
    size_t tag_len;
    imap_client_cmd_cb cb;
    void *arg;
};

struct waiter {
    imap_client_cmd *cmd;
    enum imap_cont_mode mode;
};

/* Output held while a RELEASE continuation is awaited. */
struct held {
    struct held *next;
    imap_client_cmd *cmd;
    bool marker;               /* an expect() rather than bytes */
    enum imap_cont_mode mode;
    size_t len;
    char data[];
};

struct imap_client {
    uv_loop_t *loop;
    net_conn *conn;
    struct imap_client_config cfg;
    char *host, *server_name, *client_addr, *local_addr; /* copies */
    struct imap_client_events ev;
    void *arg;
    enum ic_state st;
    imap_resp *resp;
    enum imap_status greet_status;
    char *greeting;  /* owned */
    char *caps;      /* owned */
    char setup_tag[24];
    bool collecting_caps;
    size_t caps_len;

    imap_client_cmd *head, *tail; /* in flight, oldest first */
    size_t n_cmds;
    struct waiter *waiters;       /* FIFO of continuations due */
    size_t n_waiters, cap_waiters;
    struct held *held_head, *held_tail;
    size_t held_bytes;
    bool blocked;                 /* a RELEASE continuation is due */

    bool paused;
    unsigned busy;                /* inside callbacks: free deferred */
    bool freed;
    bool mid_response;
    bool eof_seen;                /* the upstream closed; input may remain */
    bool idling;                  /* IDLE in flight */
    uint64_t cur_timeout;         /* what the connection was given */
    uint32_t tag_seq;
    char tag_prefix[12];
    uint64_t bytes_in, bytes_out;
};

static void on_conn(net_conn *conn, enum net_event e, void *arg);
static void process_input(imap_client *c);

/* After setup: a response is due while a command is in flight. */
static void update_timeout(imap_client *c)
{
    if (!c->conn || c->st != IC_READY)
        return;
    uint64_t t = c->n_cmds > 0 && !c->idling
                     ? (c->cfg.command_timeout_ms ? c->cfg.command_timeout_ms : 300000)
                     : c->cfg.idle_timeout_ms;
    if (t != c->cur_timeout) {
        c->cur_timeout = t;
        net_conn_set_timeout(c->conn, t);
    }
}

void imap_client_relay_rest(imap_client *c)
{
    imap_resp_relay_rest(c->resp);
}

void imap_client_set_idling(imap_client *c, bool idling)
{
    c->idling = idling;
    update_timeout(c);
}
static void check_eof(imap_client *c);

enum imap_status imap_client_greeting_status(const imap_client *c) { return c->greet_status; }
const char *imap_client_greeting_text(const imap_client *c) { return c->greeting ? c->greeting : ""; }
const char *imap_client_capabilities(const imap_client *c) { return c->caps ? c->caps : ""; }
bool imap_client_is_tls(const imap_client *c) { return c->conn && net_conn_is_tls(c->conn); }
size_t imap_client_inflight(const imap_client *c) { return c->n_cmds; }
const char *imap_client_cmd_tag(const imap_client_cmd *cmd) { return cmd->tag; }
uint64_t imap_client_bytes_in(const imap_client *c) { return c->bytes_in; }
uint64_t imap_client_bytes_out(const imap_client *c) { return c->bytes_out; }

size_t imap_client_output_pending(const imap_client *c)
{
    return (c->conn ? net_conn_output_pending(c->conn) : 0) + c->held_bytes;
}

bool imap_client_has_cap(const imap_client *c, const char *cap)
{
    if (!c->caps)
        return false;
    size_t cl = strlen(cap);
    const char *p = c->caps;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *a = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - a) == cl && strncasecmp(a, cap, cl) == 0)
            return true;
    }
    return false;
}

void imap_client_set_capabilities(imap_client *c, const char *caps, size_t len)
{
    if (len > CAPS_MAX)
        len = CAPS_MAX;
    char *n = malloc(len + 1);
    if (!n)
        return;
    memcpy(n, caps, len);
    n[len] = '\0';
    free(c->caps);
    c->caps = n;
}

/* ---- lifetime ---------------------------------------------------------------- */

static void free_held(imap_client *c)
{
    struct held *h = c->held_head;
    while (h) {
        struct held *n = h->next;
        OPENSSL_cleanse(h->data, h->len); /* may be a password literal */
        free(h);
        h = n;
    }
    c->held_head = c->held_tail = NULL;
    c->held_bytes = 0;
}

static void destroy(imap_client *c)
{
    imap_client_cmd *cmd = c->head;
    while (cmd) {
        imap_client_cmd *n = cmd->next;
        free(cmd);
        cmd = n;
    }
    free_held(c);
    free(c->waiters);
    imap_resp_free(&c->resp);
    free(c->greeting);
    free(c->caps);
    free(c->host);
    free(c->server_name);
    free(c->client_addr);
    free(c->local_addr);
    free(c);
}

void imap_client_free(imap_client **cp)
{
    imap_client *c = *cp;
    *cp = NULL;
    if (!c || c->freed)
        return;
    c->freed = true;
    c->st = IC_DEAD;
    net_conn_close(&c->conn);
    if (c->busy == 0)
        destroy(c);
}

static void maybe_destroy(imap_client *c)
{
    if (c->freed && c->busy == 0)
        destroy(c);
}

/* Setup failure or end of the connection: tell the owner once. */
static void die(imap_client *c, const char *why)
{
    if (c->st == IC_DEAD)
        return;
    bool was_ready = c->st == IC_READY;
    c->st = IC_DEAD;
    net_conn_close(&c->conn);
    if (!was_ready) {
        if (c->ev.ready)
            c->ev.ready(c->arg, c, false, why);
    } else if (c->ev.closed) {
        c->ev.closed(c->arg, c, c->mid_response, why);
    }
}

imap_client *imap_client_new(uv_loop_t *loop, const struct imap_client_config *cfg,
                             const struct imap_client_events *events, void *arg)
{
    imap_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->cfg = *cfg;
    c->ev = *events;
    c->arg = arg;
    c->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    c->server_name = strdup(cfg->server_name ? cfg->server_name : c->host ? c->host : "");
    c->client_addr = cfg->client_addr ? strdup(cfg->client_addr) : NULL;
    c->local_addr = cfg->local_addr ? strdup(cfg->local_addr) : NULL;
    c->resp = imap_resp_new(&cfg->limits);
    unsigned char rnd[2];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        memset(rnd, 0, sizeof(rnd));
    snprintf(c->tag_prefix, sizeof(c->tag_prefix), "QP%02x%02x.", rnd[0], rnd[1]);
    if (!c->host || !c->server_name || !c->resp ||
        (cfg->client_addr && !c->client_addr) || (cfg->local_addr && !c->local_addr)) {
        destroy(c);
        return NULL;
    }
    c->cfg.host = c->host;
    c->cfg.server_name = c->server_name;
    c->cfg.client_addr = c->client_addr;
    c->cfg.local_addr = c->local_addr;
    c->conn = net_connect(loop, c->host, cfg->port, on_conn, c);
    if (!c->conn) {
        destroy(c);
        return NULL;
    }
    net_conn_set_timeout(c->conn, cfg->setup_timeout_ms ? cfg->setup_timeout_ms : 30000);
    /* the longest response line we must hold whole (a text token), and at
     * least 256 KiB: bodies are read in large gulps */
    size_t tok = cfg->limits.max_token ? cfg->limits.max_token : 65536;
    size_t max_input = 2 * tok + 4096;
    net_conn_set_max_input(c->conn, max_input > 256 * 1024 ? max_input : 256 * 1024);
    c->st = IC_CONNECTING;
    return c;
}

/* ---- commands, continuations, held output -------------------------------------- */

void imap_client_new_tag(imap_client *c, char *buf, size_t size)
{
    for (;;) {
        snprintf(buf, size, "%s%u", c->tag_prefix, ++c->tag_seq);
        bool clash = false;
        for (imap_client_cmd *x = c->head; x; x = x->next)
            if (strcmp(x->tag, buf) == 0)
                clash = true;
        if (!clash)
            return;
    }
}

imap_client_cmd *imap_client_cmd_new(imap_client *c, const char *tag, size_t tag_len,
                                     imap_client_cmd_cb cb, void *arg)
{
    if (tag_len > TAG_MAX || c->st == IC_DEAD)
        return NULL;
    imap_client_cmd *cmd = calloc(1, sizeof(*cmd));
    if (!cmd)
        return NULL;
    memcpy(cmd->tag, tag, tag_len);
    cmd->tag[tag_len] = '\0';
    cmd->tag_len = tag_len;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->prev = c->tail;
    if (c->tail)
        c->tail->next = cmd;
    else
        c->head = cmd;
    c->tail = cmd;
    c->n_cmds++;
    update_timeout(c);
    return cmd;
}

static void cmd_unlink(imap_client *c, imap_client_cmd *cmd)
{
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        c->head = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
    else
        c->tail = cmd->prev;
    c->n_cmds--;
}

static int wire_write(imap_client *c, const void *data, size_t len)
{
    if (!c->conn)
        return NET_ESTATE;
    c->bytes_out += len;
    return net_conn_write(c->conn, data, len);
}

static int push_waiter(imap_client *c, imap_client_cmd *cmd, enum imap_cont_mode mode)
{
    if (c->n_waiters == c->cap_waiters) {
        size_t cap = c->cap_waiters ? c->cap_waiters * 2 : 4;
        struct waiter *w = realloc(c->waiters, cap * sizeof(*w));
        if (!w)
            return UV_ENOMEM;
        c->waiters = w;
        c->cap_waiters = cap;
    }
    c->waiters[c->n_waiters].cmd = cmd;
    c->waiters[c->n_waiters].mode = mode;
    c->n_waiters++;
    if (mode == IMAP_CONT_RELEASE)
        c->blocked = true;
    return 0;
}

static int hold(imap_client *c, imap_client_cmd *cmd, bool marker, enum imap_cont_mode mode,
                const void *data, size_t len)
{
    struct held *h = malloc(sizeof(*h) + len);
    if (!h)
        return UV_ENOMEM;
    h->next = NULL;
    h->cmd = cmd;
    h->marker = marker;
    h->mode = mode;
    h->len = len;
    if (len)
        memcpy(h->data, data, len);
    if (c->held_tail)
        c->held_tail->next = h;
    else
        c->held_head = h;
    c->held_tail = h;
    c->held_bytes += len;
    return 0;
}

int imap_client_send(imap_client *c, imap_client_cmd *cmd, const void *data, size_t len)
{
    if (c->st == IC_DEAD)
        return NET_ESTATE;
    if (len == 0)
        return 0;
    if (c->blocked)
        return hold(c, cmd, false, IMAP_CONT_RELAY, data, len);
    return wire_write(c, data, len);
}

int imap_client_expect(imap_client *c, imap_client_cmd *cmd, enum imap_cont_mode mode)
{
    if (c->st == IC_DEAD)
        return NET_ESTATE;
    if (c->blocked)
        return hold(c, cmd, true, mode, NULL, 0);
    return push_waiter(c, cmd, mode);
}

/* Sends held output until the next RELEASE wait. */
static void release(imap_client *c)
{
    c->blocked = false;
    while (c->held_head && !c->blocked) {
        struct held *h = c->held_head;
        c->held_head = h->next;
        if (!c->held_head)
            c->held_tail = NULL;
        c->held_bytes -= h->len;
        if (h->marker)
            push_waiter(c, h->cmd, h->mode);
        else
            wire_write(c, h->data, h->len);
        OPENSSL_cleanse(h->data, h->len);
        free(h);
    }
}

/* The command ended: its pending continuations are void, and bytes of it
 * still held were never sent (the server finished it without them). */
static void forget_cmd(imap_client *c, const imap_client_cmd *cmd)
{
    bool unblock = false;
    size_t j = 0;
    for (size_t i = 0; i < c->n_waiters; i++) {
        if (c->waiters[i].cmd == cmd) {
            if (c->waiters[i].mode == IMAP_CONT_RELEASE)
                unblock = true;
            continue;
        }
        c->waiters[j++] = c->waiters[i];
    }
    c->n_waiters = j;
    struct held **pp = &c->held_head;
    c->held_tail = NULL;
    while (*pp) {
        struct held *h = *pp;
        if (h->cmd == cmd) {
            *pp = h->next;
            c->held_bytes -= h->len;
            OPENSSL_cleanse(h->data, h->len);
            free(h);
            continue;
        }
        c->held_tail = h;
        pp = &h->next;
    }
    if (unblock)
        release(c);
}

/* ---- pause / resume ------------------------------------------------------------ */

void imap_client_pause(imap_client *c)
{
    c->paused = true;
    if (c->conn)
        net_conn_pause(c->conn);
}

void imap_client_resume(imap_client *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    if (c->conn)
        net_conn_resume(c->conn); /* buffered input comes on a later turn */
    if (c->eof_seen && c->busy == 0 && c->conn) {
        /* no more input will come to wake us: finish here */
        c->busy++;
        process_input(c);
        check_eof(c);
        c->busy--;
        maybe_destroy(c);
    }
}

/* ---- setup ------------------------------------------------------------------------ */

static void setup_send(imap_client *c, const char *verb)
{
    imap_client_new_tag(c, c->setup_tag, sizeof(c->setup_tag));
    char line[64];
    int n = snprintf(line, sizeof(line), "%s %s\r\n", c->setup_tag, verb);
    wire_write(c, line, (size_t)n);
}

/* "1.2.3.4:5" / "[::1]:5" -> ip, port */
static bool split_addr(const char *addr, char *ip, size_t ip_size, char *port, size_t port_size)
{
    if (!addr)
        return false;
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return false;
    const char *a = addr, *ae = colon;
    if (*a == '[' && ae > a && ae[-1] == ']') {
        a++;
        ae--;
    }
    if ((size_t)(ae - a) >= ip_size || strlen(colon + 1) >= port_size || ae == a)
        return false;
    memcpy(ip, a, (size_t)(ae - a));
    ip[ae - a] = '\0';
    snprintf(port, port_size, "%s", colon + 1);
    return true;
}

static void become_ready(imap_client *c)
{
    c->st = IC_READY;
    c->cur_timeout = UINT64_MAX;
    update_timeout(c);
    if (c->ev.ready)
        c->ev.ready(c->arg, c, true, NULL);
}

static void setup_id_or_ready(imap_client *c)
{
    char ip[64], port[16];
    if (c->cfg.send_client_id && imap_client_has_cap(c, "ID") &&
        split_addr(c->cfg.client_addr, ip, sizeof(ip), port, sizeof(port))) {
        imap_client_new_tag(c, c->setup_tag, sizeof(c->setup_tag));
        char line[512];
        int n = snprintf(line, sizeof(line),
                         "%s ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%s\"",
                         c->setup_tag, ip, port);
        char lip[64], lport[16];
        if (split_addr(c->cfg.local_addr, lip, sizeof(lip), lport, sizeof(lport)))
            n += snprintf(line + n, sizeof(line) - (size_t)n,
                          " \"x-connected-ip\" \"%s\" \"x-connected-port\" \"%s\"", lip, lport);
        n += snprintf(line + n, sizeof(line) - (size_t)n, ")\r\n");
        wire_write(c, line, (size_t)n);
        c->st = IC_ID;
        return;
    }
    become_ready(c);
}

static void setup_capability(imap_client *c)
{
    c->st = IC_CAPABILITY;
    c->collecting_caps = false;
    setup_send(c, "CAPABILITY");
}

/* Saves "[CAPABILITY ...]" of a resp-text; returns the text after it. */
static const char *take_caps_code(imap_client *c, const char *text, size_t len, size_t *rest_len)
{
    const char *code, *args;
    size_t cl, al;
    if (imap_resp_code(text, len, &code, &cl, &args, &al) && cl == 10 &&
        strncasecmp(code, "CAPABILITY", 10) == 0)
        imap_client_set_capabilities(c, args, al);
    if (len > 0 && text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (close) {
            const char *r = close + 1;
            while (r < text + len && *r == ' ')
                r++;
            *rest_len = len - (size_t)(r - text);
            return r;
        }
    }
    *rest_len = len;
    return text;
}

static bool is_setup_tagged(const imap_client *c, const struct imap_resp_event *ev)
{
    return ev->kind == IMAP_RESP_TAGGED && ev->tag_len == strlen(c->setup_tag) &&
           memcmp(ev->tag, c->setup_tag, ev->tag_len) == 0;
}

static void setup_event(imap_client *c, const struct imap_resp_event *ev)
{
    switch (c->st) {
    case IC_GREETING: {
        if (ev->kind != IMAP_RESP_STATUS) {
            die(c, "upstream sent no greeting");
            return;
        }
        if (ev->status == IMAP_STATUS_BYE) {
            die(c, "upstream refused the connection (BYE)");
            return;
        }
        if (ev->status != IMAP_STATUS_OK && ev->status != IMAP_STATUS_PREAUTH) {
            die(c, "upstream greeting is not OK");
            return;
        }
        c->greet_status = ev->status;
        size_t rl;
        const char *rest = take_caps_code(c, ev->text, ev->text_len, &rl);
        free(c->greeting);
        c->greeting = strndup(rest, rl);
        if (c->cfg.tls == IMAP_UPSTREAM_STARTTLS) {
            if (ev->status == IMAP_STATUS_PREAUTH) {
                die(c, "upstream greets PREAUTH: STARTTLS impossible");
                return;
            }
            c->st = IC_STARTTLS;
            setup_send(c, "STARTTLS");
            return;
        }
        if (c->caps)
            setup_id_or_ready(c);
        else
            setup_capability(c);
        return;
    }
    case IC_STARTTLS:
        if (!is_setup_tagged(c, ev))
            return; /* untagged noise */
        if (ev->status != IMAP_STATUS_OK) {
            die(c, "upstream refused STARTTLS");
            return;
        }
        c->st = IC_STARTTLS_TLS;
        free(c->caps); /* learnt in the clear: forget */
        c->caps = NULL;
        if (net_conn_start_tls(c->conn, c->cfg.tls_ctx, c->server_name) < 0)
            die(c, "cannot start TLS with upstream");
        return;
    case IC_CAPABILITY:
        if (ev->kind == IMAP_RESP_DATA_BEGIN) {
            c->collecting_caps = ev->name_len == 10 && strncasecmp(ev->name, "CAPABILITY", 10) == 0;
            if (c->collecting_caps) {
                free(c->caps);
                c->caps = calloc(1, CAPS_MAX + 1);
                c->caps_len = 0;
                if (!c->caps)
                    die(c, "out of memory");
            }
            return;
        }
        if (ev->kind == IMAP_RESP_DATA_TOKEN && c->collecting_caps) {
            if (ev->tok.type == IMAP_TOK_ATOM && c->caps_len + ev->tok.len + 1 < CAPS_MAX) {
                if (c->caps_len)
                    c->caps[c->caps_len++] = ' ';
                memcpy(c->caps + c->caps_len, ev->tok.str, ev->tok.len);
                c->caps_len += ev->tok.len;
            }
            return;
        }
        if (ev->kind == IMAP_RESP_DATA_END) {
            if (c->collecting_caps && c->caps) {
                char *fit = realloc(c->caps, c->caps_len + 1); /* not 8 KiB per session */
                if (fit)
                    c->caps = fit;
            }
            c->collecting_caps = false;
            return;
        }
        if (is_setup_tagged(c, ev)) {
            if (ev->status != IMAP_STATUS_OK || !c->caps) {
                die(c, "upstream CAPABILITY failed");
                return;
            }
            setup_id_or_ready(c);
        }
        return;
    case IC_ID:
        if (is_setup_tagged(c, ev))
            become_ready(c);
        return;
    default:
        return;
    }
}

/* ---- events after setup ------------------------------------------------------------ */

static imap_client_cmd *find_cmd(imap_client *c, const char *tag, size_t len)
{
    for (imap_client_cmd *x = c->head; x; x = x->next)
        if (x->tag_len == len && memcmp(x->tag, tag, len) == 0)
            return x;
    return NULL;
}

/* Returns 1 to stop reading. */
static int dispatch(imap_client *c, const struct imap_resp_event *ev)
{
    if (c->st != IC_READY) {
        setup_event(c, ev);
        return 0;
    }
    if (ev->kind == IMAP_RESP_TAGGED) {
        imap_client_cmd *cmd = find_cmd(c, ev->tag, ev->tag_len);
        if (!cmd)
            return c->ev.response(c->arg, c, ev) ? 1 : 0;
        cmd_unlink(c, cmd);
        forget_cmd(c, cmd);
        update_timeout(c);
        if (cmd->cb)
            cmd->cb(c, cmd, ev, IMAP_CONT_RELAY, cmd->arg);
        free(cmd);
        return 0;
    }
    if (ev->kind == IMAP_RESP_CONTINUATION) {
        if (c->n_waiters == 0)
            return c->ev.response(c->arg, c, ev) ? 1 : 0;
        struct waiter w = c->waiters[0];
        memmove(c->waiters, c->waiters + 1, (c->n_waiters - 1) * sizeof(*c->waiters));
        c->n_waiters--;
        if (w.mode == IMAP_CONT_RELEASE) {
            release(c);
            return 0;
        }
        if (w.cmd->cb)
            w.cmd->cb(c, w.cmd, ev, w.mode, w.cmd->arg);
        return 0;
    }
    return c->ev.response(c->arg, c, ev) ? 1 : 0;
}

static void process_input(imap_client *c)
{
    size_t len;
    const char *in = net_conn_input(c->conn, &len);
    size_t off = 0;
    bool events = false;
    c->busy++;
    while (c->conn && !c->paused && !c->freed && c->st != IC_DEAD) {
        struct imap_resp_event ev;
        size_t used;
        const char *err = NULL;
        int rc = imap_resp_next(c->resp, in + off, len - off, &used, &ev, &err);
        if (rc == IMAP_PARSE_MORE)
            break;
        if (rc == IMAP_PARSE_ERROR) {
            char why[160];
            snprintf(why, sizeof(why), "upstream protocol error: %s", err);
            if (events && c->st == IC_READY && c->ev.batch_end && !c->freed)
                c->ev.batch_end(c->arg, c);
            events = false;
            die(c, why);
            break;
        }
        off += used;
        c->bytes_in += used;
        c->mid_response = !imap_resp_at_line_start(c->resp);
        events = true;
        if (dispatch(c, &ev))
            imap_client_pause(c);
    }
    if (events && !c->freed && c->st == IC_READY && c->ev.batch_end)
        c->ev.batch_end(c->arg, c);
    if (c->conn && off)
        net_conn_consume(c->conn, off);
    c->busy--;
}

/* After the upstream's end of input: once everything it sent was handed
 * on (not paused), the connection is over. */
static void check_eof(imap_client *c)
{
    if (c->eof_seen && !c->paused && !c->freed && c->st != IC_DEAD)
        die(c, "upstream closed the connection");
}

static void on_conn(net_conn *conn, enum net_event e, void *arg)
{
    imap_client *c = arg;
    (void)conn;
    if (c->freed || c->st == IC_DEAD)
        return;
    c->busy++;
    switch (e) {
    case NET_EV_CONNECTED:
        if (c->cfg.tls == IMAP_UPSTREAM_IMPLICIT) {
            c->st = IC_TLS;
            if (net_conn_start_tls(c->conn, c->cfg.tls_ctx, c->server_name) < 0)
                die(c, "cannot start TLS with upstream");
        } else {
            c->st = IC_GREETING;
        }
        break;
    case NET_EV_TLS_READY:
        imap_resp_reset(c->resp);
        if (c->st == IC_TLS)
            c->st = IC_GREETING;
        else if (c->st == IC_STARTTLS_TLS)
            setup_capability(c);
        break;
    case NET_EV_READ:
        process_input(c);
        break;
    case NET_EV_DRAINED:
        if (c->st == IC_READY && c->ev.drained)
            c->ev.drained(c->arg, c);
        break;
    case NET_EV_EOF:
        c->eof_seen = true;
        process_input(c);
        check_eof(c);
        break;
    case NET_EV_TIMEOUT:
        die(c, c->st == IC_READY ? "upstream idle timeout" : "upstream setup timeout");
        break;
    case NET_EV_ERROR: {
        char why[600];
        snprintf(why, sizeof(why), "upstream: %s", c->conn ? net_conn_error(c->conn) : "error");
        die(c, why);
        break;
    }
    }
    c->busy--;
    maybe_destroy(c);
}
