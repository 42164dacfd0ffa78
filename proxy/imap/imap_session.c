/* IMAP server session: connection lifecycle, the state transition
 * function, client input (commands read into a buffer, APPEND streamed,
 * SASL and IDLE lines), output to the client, timeouts, the session log. */
#include "imap_session_internal.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define DEFAULT_LOGIN_TIMEOUT_MS (180ull * 1000)
#define DEFAULT_COMMAND_TIMEOUT_MS (300ull * 1000)
#define DEFAULT_MAX_LINE ((size_t)64 * 1024)
#define DEFAULT_MAX_COMMAND ((size_t)256 * 1024)
#define DEFAULT_HIGH_WATER ((size_t)256 * 1024)
#define LOCAL_OUT_MAX ((size_t)64 * 1024)
#define MAX_BAD_COMMANDS 20

static const char *const state_names[IMAP_STATE_COUNT_] = {
    [IMAP_STATE_TLS] = "TLS",
    [IMAP_STATE_CONNECTING] = "CONNECTING",
    [IMAP_STATE_NOT_AUTH] = "NOT_AUTH",
    [IMAP_STATE_AUTH_WAIT] = "AUTH_WAIT",
    [IMAP_STATE_AUTHENTICATE] = "AUTHENTICATE",
    [IMAP_STATE_AUTHENTICATED] = "AUTHENTICATED",
    [IMAP_STATE_SELECTED] = "SELECTED",
    [IMAP_STATE_BARRIER] = "BARRIER",
    [IMAP_STATE_FETCH_PREP] = "FETCH_PREP",
    [IMAP_STATE_IDLE] = "IDLE",
    [IMAP_STATE_APPEND] = "APPEND",
    [IMAP_STATE_APPEND_WAIT] = "APPEND_WAIT",
    [IMAP_STATE_APPEND_HOLD] = "APPEND_HOLD",
    [IMAP_STATE_APPEND_PROTECT] = "APPEND_PROTECT",
    [IMAP_STATE_SKIP_LINE] = "SKIP_LINE",
    [IMAP_STATE_DISCARD] = "DISCARD",
    [IMAP_STATE_LOGOUT] = "LOGOUT",
    [IMAP_STATE_CLOSING] = "CLOSING",
};

const char *imap_state_name(enum imap_state st)
{
    return (unsigned)st < IMAP_STATE_COUNT_ ? state_names[st] : "?";
}

const char *imap_session_id(const imap_session *s) { return s->id; }
const char *imap_session_peer(const imap_session *s) { return s->peer; }
const char *imap_session_user(const imap_session *s) { return s->user; }
bool imap_session_selected(const imap_session *s) { return s->selected; }

size_t imap_session_client_pending(const imap_session *s)
{
    return (s->conn ? net_conn_output_pending(s->conn) : 0) + s->out.span_len;
}

static uint64_t now_ms(const imap_session *s)
{
    return uv_now(s->loop);
}

static void client_on_event(net_conn *conn, enum net_event ev, void *arg);
static void up_ready(void *arg, imap_client *c, bool ok, const char *error);
static void up_batch_end(void *arg, imap_client *c);
static void up_closed(void *arg, imap_client *c, bool mid_response, const char *why);
static void up_drained(void *arg, imap_client *c);

/* ---- states ------------------------------------------------------------------- */

enum imap_state imap_idle_state(const imap_session *s)
{
    if (!s->authenticated)
        return IMAP_STATE_NOT_AUTH;
    return s->selected ? IMAP_STATE_SELECTED : IMAP_STATE_AUTHENTICATED;
}

void imap_enter_state(imap_session *s, enum imap_state st)
{
    if (s->state == st)
        return;
    qlog_debug("imap %s: %s -> %s", s->id, state_names[s->state], state_names[st]);
    s->state = st;
    imap_update_timeout(s);
    imap_update_input(s);
}

static bool reads_input(enum imap_state st)
{
    switch (st) {
    case IMAP_STATE_NOT_AUTH:
    case IMAP_STATE_AUTHENTICATE:
    case IMAP_STATE_AUTHENTICATED:
    case IMAP_STATE_SELECTED:
    case IMAP_STATE_IDLE:
    case IMAP_STATE_APPEND:
    case IMAP_STATE_APPEND_HOLD:
    case IMAP_STATE_SKIP_LINE:
    case IMAP_STATE_DISCARD:
        return true;
    default:
        return false;
    }
}

void imap_update_input(imap_session *s)
{
    if (!s->conn || s->closing)
        return;
    /* TLS must read to handshake; CONNECTING keeps early input buffered */
    if (s->state == IMAP_STATE_TLS || s->state == IMAP_STATE_CONNECTING) {
        net_conn_resume(s->conn);
        return;
    }
    bool want = reads_input(s->state) && !s->flow_client_paused && s->local_len < LOCAL_OUT_MAX;
    if (want)
        net_conn_resume(s->conn);
    else
        net_conn_pause(s->conn);
}

void imap_update_timeout(imap_session *s)
{
    if (!s->conn)
        return;
    uint64_t t;
    bool mid = s->rd.phase != RD_TAG || !imap_parser_at_line_start(s->cp) ||
               s->state == IMAP_STATE_APPEND || s->state == IMAP_STATE_APPEND_WAIT ||
               s->state == IMAP_STATE_APPEND_HOLD || s->state == IMAP_STATE_APPEND_PROTECT;
    t = mid ? s->cfg.command_timeout_ms : s->cfg.idle_timeout_ms;
    if (!s->authenticated) {
        /* login_timeout runs from connect, whatever the client sends: the
         * inactivity timer is set to what is left of it (recomputed after
         * each read, so re-arming cannot stretch it) */
        uint64_t now = now_ms(s), end = s->started_ms + s->cfg.login_timeout_ms;
        uint64_t left = end > now ? end - now : 1;
        if (!mid || left < t)
            t = left;
    }
    if (t != s->cur_timeout_ms) {
        s->cur_timeout_ms = t;
        net_conn_set_timeout(s->conn, t);
    }
}

/* ---- output to the client --------------------------------------------------------- */

#define GATHER_PIECE 4096   /* pieces up to this are gathered */
#define GATHER_MAX 65536    /* gathered bytes written at the latest */

static void span_flush(imap_session *s)
{
    if (s->out.span_len && s->conn) {
        net_conn_write(s->conn, s->out.span, s->out.span_len);
        s->bytes_out += s->out.span_len;
    }
    s->out.span = NULL;
    s->out.span_len = 0;
}

/* The pending span, then the gathered bytes (always in that order: a span
 * is flushed before anything is gathered). */
void imap_out_flush(imap_session *s)
{
    span_flush(s);
    if (s->out.gather_len && s->conn) {
        net_conn_write(s->conn, s->out.gather, s->out.gather_len);
        s->bytes_out += s->out.gather_len;
    }
    s->out.gather_len = 0;
}

/* Copies a small piece of a rewritten FETCH response into the gather
 * buffer; false when it should be written as usual. */
static bool gather(imap_session *s, const void *p, size_t len)
{
    if (s->relay != RELAY_FETCH || len > GATHER_PIECE || !s->conn)
        return false;
    if (s->out.gather_len + len > GATHER_MAX)
        imap_out_flush(s);
    if (s->out.gather_cap < GATHER_MAX) {
        char *n = realloc(s->out.gather, GATHER_MAX);
        if (!n)
            return false;
        s->out.gather = n;
        s->out.gather_cap = GATHER_MAX;
    }
    span_flush(s);
    memcpy(s->out.gather + s->out.gather_len, p, len);
    s->out.gather_len += len;
    return true;
}

void imap_out_span(imap_session *s, const char *p, size_t len)
{
    if (len == 0 || gather(s, p, len))
        return;
    if (s->out.span && s->out.gather_len == 0 && p == s->out.span + s->out.span_len) {
        s->out.span_len += len;
        return;
    }
    imap_out_flush(s);
    s->out.span = p;
    s->out.span_len = len;
}

void imap_out_bytes(imap_session *s, const void *p, size_t len)
{
    if (len == 0 || gather(s, p, len))
        return;
    imap_out_flush(s);
    if (s->conn) {
        net_conn_write(s->conn, p, len);
        s->bytes_out += len;
    }
}

void imap_local_flush(imap_session *s)
{
    if (s->local_len == 0 || s->relay != RELAY_NONE)
        return;
    imap_out_bytes(s, s->local_out, s->local_len);
    bool was_full = s->local_len >= LOCAL_OUT_MAX;
    s->local_len = 0;
    if (was_full)
        imap_update_input(s);
}

__attribute__((format(printf, 2, 0))) static void vreply(imap_session *s, const char *fmt,
                                                         va_list ap)
{
    char line[1024];
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 3)
        n = (int)sizeof(line) - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    if (s->relay == RELAY_NONE && s->local_len == 0) {
        imap_out_bytes(s, line, (size_t)n);
        return;
    }
    /* a relayed response is open: the line would land inside it */
    if (s->local_len + (size_t)n > s->local_cap) {
        size_t cap = s->local_cap ? s->local_cap * 2 : 1024;
        while (cap < s->local_len + (size_t)n)
            cap *= 2;
        char *nb = realloc(s->local_out, cap);
        if (!nb)
            return;
        s->local_out = nb;
        s->local_cap = cap;
    }
    memcpy(s->local_out + s->local_len, line, (size_t)n);
    s->local_len += (size_t)n;
    if (s->local_len >= LOCAL_OUT_MAX)
        imap_update_input(s);
}

void imap_reply(imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, fmt, ap);
    va_end(ap);
}

void imap_tagged(imap_session *s, const char *status, const char *fmt, ...)
{
    char text[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    const char *tag = s->rd.tag_len ? s->rd.tag : "*";
    imap_reply(s, "%s %s %s", tag, status, text);
    qlog_debug("imap %s: >>> %s %s %s", s->id, tag, status, text);
}

/* ---- lifetime ---------------------------------------------------------------------- */

static void random_id(char *out, size_t bytes)
{
    unsigned char raw[8];
    if (bytes > sizeof(raw))
        bytes = sizeof(raw);
    if (RAND_bytes(raw, (int)bytes) != 1)
        memset(raw, 0, sizeof(raw));
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02X", raw[i]);
}

void imap_rd_reset(imap_session *s)
{
    s->rd.phase = RD_TAG;
    s->rd.tag_len = 0;
    s->rd.tag[0] = '\0';
    s->rd.verb = IMAP_CMD_UNKNOWN;
    s->rd.uid = false;
    s->rd.def = NULL;
    s->rd.len = 0;
    s->rd.n_lits = 0;
    /* a large buffer (a long command) is not kept for the idle session */
    if (s->rd.cap > 4096) {
        OPENSSL_cleanse(s->rd.buf, s->rd.cap);
        free(s->rd.buf);
        s->rd.buf = NULL;
        s->rd.cap = 0;
    }
    if (s->rd.cap_lits > 16) {
        free(s->rd.lits);
        s->rd.lits = NULL;
        s->rd.cap_lits = 0;
    }
}

struct imap_command *imap_command_new(imap_session *s, const struct imap_command_def *def)
{
    struct imap_command *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->s = s;
    c->def = def;
    c->verb = s->rd.verb;
    c->uid = s->rd.uid;
    c->prev = s->tail;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    s->n_inflight++;
    return c;
}

void imap_command_free(imap_session *s, struct imap_command *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        s->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->tail = c->prev;
    s->n_inflight--;
    if (s->append == c)
        s->append = NULL;
    if (s->fr.cmd == c)
        s->fr.cmd = NULL;
    OPENSSL_cleanse(c->user, sizeof(c->user));
    free(c);
}

static void session_log_end(imap_session *s)
{
    uint64_t ms = now_ms(s) - s->started_ms;
    qlog_info("imap %s: session end user=%s from=%s listener=%s duration=%llu.%03llus "
              "in=%llu out=%llu commands=%u outcome=%s",
              s->id, s->user[0] ? s->user : "-", s->peer, s->listener,
              (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000),
              (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out, s->commands,
              s->outcome[0] ? s->outcome : "disconnected");
}

static void session_destroy(imap_session *s)
{
    session_log_end(s);
    /* claimed FETCH contexts end with the session */
    for (struct imap_command *c = s->head; c; c = c->next)
        if (c->fetch_ctx && s->hooks.fetch.command_end)
            s->hooks.fetch.command_end(s->hooks_ctx, s, c->fetch_ctx, IMAP_STATUS_BYE);
    if (s->prep.ctx && s->prep.search && s->hooks.search.command_end)
        s->hooks.search.command_end(s->hooks_ctx, s, s->prep.ctx, IMAP_STATUS_BYE);
    else if (s->prep.ctx && s->hooks.fetch.command_end)
        s->hooks.fetch.command_end(s->hooks_ctx, s, s->prep.ctx, IMAP_STATUS_BYE);
    s->prep.ctx = NULL;
    free(s->prep.rewrite);
    imap_append_free(s);
    if (s->hooks.closed)
        s->hooks.closed(s->hooks_ctx, s);
    imap_client_free(&s->up);
    for (struct imap_command *c = s->head, *next; c; c = next) {
        next = c->next;
        OPENSSL_cleanse(c->user, sizeof(c->user));
        free(c);
    }
    s->head = s->tail = NULL;
    imap_parser_free(&s->cp);
    if (s->rd.buf) {
        OPENSSL_cleanse(s->rd.buf, s->rd.cap);
        free(s->rd.buf);
    }
    free(s->rd.lits);
    free(s->local_out);
    free(s->out.gather);
    free(s->collect);
    free(s->listener);
    OPENSSL_cleanse(s->user, sizeof(s->user));
    free(s);
}

static void maybe_destroy(imap_session *s)
{
    if (s->closing && s->busy == 0)
        session_destroy(s);
}

void imap_hold(imap_session *s)
{
    s->busy++;
}

void imap_release(imap_session *s)
{
    s->busy--;
    maybe_destroy(s);
}

void imap_schedule_close(imap_session *s, bool after_write, const char *outcome)
{
    if (s->closing)
        return;
    if (outcome && !s->outcome[0])
        snprintf(s->outcome, sizeof(s->outcome), "%s", outcome);
    imap_enter_state(s, IMAP_STATE_CLOSING);
    s->closing = true;
    if (s->conn) {
        if (after_write) {
            imap_out_flush(s);
            net_conn_close_after_write(&s->conn);
        } else {
            net_conn_close(&s->conn);
        }
    }
    imap_client_free(&s->up);
    imap_append_abort(s);
    /* destroyed when nothing is on the stack */
}

/* "* BYE" when the client is between responses; else just close. */
void imap_bye_close(imap_session *s, const char *text, const char *outcome)
{
    if (s->relay == RELAY_NONE && !s->fr.waiting) {
        imap_local_flush(s);
        imap_reply(s, "* BYE %s", text);
        imap_schedule_close(s, true, outcome);
    } else {
        imap_schedule_close(s, false, outcome);
    }
}

void imap_session_close(imap_session *s, const char *reason)
{
    s->busy++;
    imap_bye_close(s, reason ? reason : "Server shutting down.", "shutdown");
    s->busy--;
    maybe_destroy(s);
}

struct imap_cap_ctx imap_cap_context(const imap_session *s)
{
    bool tls = s->conn && net_conn_is_tls(s->conn);
    struct imap_cap_ctx ctx = {
        .starttls = s->cfg.tls_ctx && !tls && !s->authenticated,
        .logindisabled = s->cfg.require_tls_for_auth && !tls && !s->authenticated,
    };
    return ctx;
}

imap_session *imap_session_new(uv_loop_t *loop, net_conn *conn,
                               const struct imap_session_config *cfg,
                               const struct imap_session_hooks *hooks, void *hooks_ctx)
{
    imap_session *s = calloc(1, sizeof(*s));
    if (!s) {
        net_conn_close(&conn);
        return NULL;
    }
    s->loop = loop;
    s->conn = conn;
    s->cfg = *cfg;
    s->listener = strdup(cfg->listener ? cfg->listener : "imap");
    s->cfg.listener = s->listener;
    if (s->cfg.login_timeout_ms == 0)
        s->cfg.login_timeout_ms = DEFAULT_LOGIN_TIMEOUT_MS;
    if (s->cfg.idle_timeout_ms < IMAP_MIN_IDLE_TIMEOUT_MS)
        s->cfg.idle_timeout_ms = IMAP_MIN_IDLE_TIMEOUT_MS;
    if (s->cfg.command_timeout_ms == 0)
        s->cfg.command_timeout_ms = DEFAULT_COMMAND_TIMEOUT_MS;
    if (s->cfg.max_line == 0)
        s->cfg.max_line = DEFAULT_MAX_LINE;
    if (s->cfg.max_command == 0)
        s->cfg.max_command = DEFAULT_MAX_COMMAND;
    if (s->cfg.output_high_water == 0)
        s->cfg.output_high_water = DEFAULT_HIGH_WATER;
    if (hooks)
        s->hooks = *hooks;
    s->hooks_ctx = hooks_ctx;
    s->started_ms = uv_now(loop);
    random_id(s->id, 6);
    snprintf(s->peer, sizeof(s->peer), "%s", net_conn_peer_addr(conn));
    s->state = IMAP_STATE_CONNECTING;

    struct imap_parser_limits lim = {
        .max_token = s->cfg.max_line,
        .max_line = s->cfg.max_line,
        .max_literal = s->cfg.max_command,
        .max_depth = 32,
    };
    s->cp = imap_parser_new(IMAP_PARSER_COMMANDS, &lim);
    if (!s->listener || !s->cp)
        goto fail;

    net_conn_set_cb(conn, client_on_event, s);
    /* a whole token (line) must fit: it is read in place */
    net_conn_set_max_input(conn, s->cfg.max_line + 4096);
    qlog_info("imap %s: connect from %s on %s", s->id, s->peer, s->listener);

    struct imap_client_config ucfg = s->cfg.upstream;
    ucfg.client_addr = s->peer;
    if (ucfg.idle_timeout_ms == 0)
        ucfg.idle_timeout_ms = s->cfg.idle_timeout_ms + 60000;
    if (ucfg.limits.max_token == 0)
        ucfg.limits.max_token = 65536;
    static const struct imap_client_events up_events = {
        .ready = up_ready,
        .response = imap_relay_response,
        .batch_end = up_batch_end,
        .closed = up_closed,
        .drained = up_drained,
    };
    s->up = imap_client_new(loop, &ucfg, &up_events, s);
    if (!s->up)
        goto fail;
    if (s->cfg.implicit_tls && s->cfg.tls_ctx) {
        s->state = IMAP_STATE_TLS;
        if (net_conn_start_tls(conn, s->cfg.tls_ctx, NULL) < 0)
            goto fail;
    }
    imap_update_timeout(s);
    return s;
fail:
    net_conn_close(&s->conn);
    imap_client_free(&s->up);
    imap_parser_free(&s->cp);
    free(s->listener);
    free(s);
    return NULL;
}

/* ---- greeting ------------------------------------------------------------------------- */

static void send_greeting(imap_session *s)
{
    s->greeted = true;
    struct imap_cap_ctx ctx = imap_cap_context(s);
    char caps[4096];
    const char *up = imap_client_capabilities(s->up);
    if (imap_cap_filter(up, strlen(up), &ctx, caps, sizeof(caps)) == 0)
        snprintf(caps, sizeof(caps), "IMAP4rev1");
    const char *text = imap_client_greeting_text(s->up);
    if (!*text)
        text = "Ready.";
    if (imap_client_greeting_status(s->up) == IMAP_STATUS_PREAUTH) {
        qlog_warn("imap %s: upstream greets PREAUTH: the login identity is unknown", s->id);
        imap_reply(s, "* PREAUTH [CAPABILITY %s] %s", caps, text);
        imap_login_done(s, "", "PREAUTH");
        return;
    }
    imap_reply(s, "* OK [CAPABILITY %s] %s", caps, text);
    imap_enter_state(s, IMAP_STATE_NOT_AUTH);
}

static void up_ready(void *arg, imap_client *c, bool ok, const char *error)
{
    imap_session *s = arg;
    (void)c;
    s->busy++;
    if (!ok) {
        qlog_warn("imap %s: %s", s->id, error ? error : "upstream unavailable");
        s->up = NULL; /* freed below by schedule_close via imap_client_free */
        imap_client *dead = c;
        imap_client_free(&dead);
        if (s->state == IMAP_STATE_TLS)
            imap_schedule_close(s, false, "upstream unavailable");
        else
            imap_bye_close(s, "Upstream server unavailable, try again later.",
                           "upstream unavailable");
    } else {
        s->upstream_ready = true;
        if (s->state == IMAP_STATE_CONNECTING) {
            send_greeting(s);
            imap_process_client_input(s);
        }
    }
    s->busy--;
    maybe_destroy(s);
}

/* ---- login -------------------------------------------------------------------------------- */

void imap_login_done(imap_session *s, const char *user, const char *mech)
{
    s->authenticated = true;
    snprintf(s->user, sizeof(s->user), "%s", user);
    snprintf(s->mech, sizeof(s->mech), "%s", mech);
    qlog_info("imap %s: login user=%s method=%s from=%s", s->id, user[0] ? user : "-", mech,
              s->peer);
    if (s->hooks.login)
        s->hooks.login(s->hooks_ctx, s, s->user);
    imap_enter_state(s, imap_idle_state(s));
}

/* ---- relaying commands upstream ------------------------------------------------------------ */

bool imap_upstream_nonsync_ok(const imap_session *s, uint64_t size)
{
    return imap_client_has_cap(s->up, "LITERAL+") ||
           (size <= 4096 && imap_client_has_cap(s->up, "LITERAL-"));
}

int imap_forward_raw(imap_session *s, struct imap_command *c, const char *buf, size_t len,
                     const struct lit_hdr *lits, size_t n_lits)
{
    size_t pos = 0;
    int rc = 0;
    for (size_t i = 0; i < n_lits && rc == 0; i++) {
        const struct lit_hdr *l = &lits[i];
        rc = imap_client_send(s->up, c->up, buf + pos, l->off - pos);
        char hdr[48];
        bool nonsync = imap_upstream_nonsync_ok(s, l->size);
        int n = snprintf(hdr, sizeof(hdr), "{%llu%s}\r\n", (unsigned long long)l->size,
                         nonsync ? "+" : "");
        if (rc == 0)
            rc = imap_client_send(s->up, c->up, hdr, (size_t)n);
        /* the client already had our "+ OK": the upstream's is consumed */
        if (rc == 0 && !nonsync)
            rc = imap_client_expect(s->up, c->up, IMAP_CONT_RELEASE);
        pos = l->off + l->len;
    }
    if (rc == 0)
        rc = imap_client_send(s->up, c->up, buf + pos, len - pos);
    return rc;
}

/* ---- client input ------------------------------------------------------------------------------ */

static bool rd_append(imap_session *s, const char *p, size_t n)
{
    if (s->rd.len + n > s->rd.cap) {
        size_t cap = s->rd.cap ? s->rd.cap : 512;
        while (cap < s->rd.len + n)
            cap *= 2;
        char *nb = malloc(cap);
        if (!nb)
            return false;
        if (s->rd.len)
            memcpy(nb, s->rd.buf, s->rd.len);
        if (s->rd.buf) {
            OPENSSL_cleanse(s->rd.buf, s->rd.cap);
            free(s->rd.buf);
        }
        s->rd.buf = nb;
        s->rd.cap = cap;
    }
    memcpy(s->rd.buf + s->rd.len, p, n);
    s->rd.len += n;
    return true;
}

static bool rd_add_literal(imap_session *s, size_t off, size_t len, uint64_t size, bool nonsync)
{
    if (s->rd.n_lits == s->rd.cap_lits) {
        size_t cap = s->rd.cap_lits ? s->rd.cap_lits * 2 : 4;
        struct lit_hdr *nl = realloc(s->rd.lits, cap * sizeof(*nl));
        if (!nl)
            return false;
        s->rd.lits = nl;
        s->rd.cap_lits = cap;
    }
    s->rd.lits[s->rd.n_lits++] = (struct lit_hdr){off, len, size, nonsync};
    return true;
}

void imap_count_bad(imap_session *s)
{
    if (++s->bad_commands >= MAX_BAD_COMMANDS)
        imap_bye_close(s, "Too many invalid IMAP commands.", "too many invalid commands");
}

/* A tokenizer error in a command: answered as Dovecot does. */
static void command_parse_error(imap_session *s, const char *err)
{
    enum imap_parse_error kind = imap_parser_error_kind(s->cp);
    if (kind == IMAP_PARSE_ERR_LITERAL_TOO_BIG) {
        uint64_t size;
        bool nonsync;
        imap_parser_error_literal(s->cp, &size, &nonsync);
        if (nonsync) {
            /* its data is on the way and cannot be told from commands */
            imap_bye_close(s, err, "literal too large");
            return;
        }
        if (s->rd.verb == IMAP_CMD_APPEND)
            imap_tagged(s, "NO", "[TOOBIG] Message too large.");
        else
            imap_tagged(s, "BAD", "%s", err);
        imap_parser_reset(s->cp); /* the client sends no data for it */
        imap_rd_reset(s);
        imap_count_bad(s);
        return;
    }
    imap_tagged(s, "BAD", "Error in IMAP command: %s", err);
    imap_rd_reset(s);
    imap_enter_state(s, IMAP_STATE_SKIP_LINE);
    imap_count_bad(s);
}

/* Reads command tokens into the buffer; dispatches at the line end.
 * Returns true when the state changed (caller loops), false for more. */
static bool read_command(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    size_t off = 0;
    for (;;) {
        struct imap_token tok;
        size_t u;
        const char *err;
        /* what is left of the command's budget bounds the next literal */
        if (s->rd.verb != IMAP_CMD_APPEND)
            imap_parser_set_max_literal(s->cp, s->cfg.max_command > s->rd.len
                                                   ? s->cfg.max_command - s->rd.len
                                                   : 1);
        int rc = imap_parser_next(s->cp, in + off, len - off, &u, &tok, &err);
        if (rc == IMAP_PARSE_MORE) {
            *used_r = off;
            return false;
        }
        if (rc == IMAP_PARSE_ERROR) {
            off += u; /* a refused literal header */
            *used_r = off;
            command_parse_error(s, err);
            return true;
        }
        const char *raw = in + off;
        off += u;
        if (!rd_append(s, raw, u)) {
            *used_r = off;
            imap_bye_close(s, "Out of memory.", "out of memory");
            return true;
        }
        switch (s->rd.phase) {
        case RD_TAG:
            if (tok.type == IMAP_TOK_EOL) { /* empty line: ignored */
                imap_rd_reset(s);
                continue;
            }
            if (tok.type != IMAP_TOK_ATOM || !imap_tag_valid(tok.str, tok.len) ||
                tok.len > IMAP_TAG_MAX) {
                *used_r = off;
                imap_rd_reset(s);
                imap_reply(s, "* BAD Error in IMAP command received by server.");
                imap_enter_state(s, IMAP_STATE_DISCARD); /* the rest of the line */
                imap_count_bad(s);
                return true;
            }
            memcpy(s->rd.tag, tok.str, tok.len);
            s->rd.tag[tok.len] = '\0';
            s->rd.tag_len = tok.len;
            s->rd.phase = RD_VERB;
            imap_update_timeout(s);
            continue;
        case RD_VERB:
        case RD_UID_VERB:
            if (tok.type != IMAP_TOK_ATOM) {
                *used_r = off;
                imap_tagged(s, "BAD", "Error in IMAP command received by server.");
                imap_rd_reset(s);
                if (tok.type != IMAP_TOK_EOL)
                    imap_enter_state(s, IMAP_STATE_DISCARD);
                imap_count_bad(s);
                return true;
            }
            if (s->rd.phase == RD_VERB && tok.len == 3 && strncasecmp(tok.str, "UID", 3) == 0) {
                s->rd.uid = true;
                s->rd.phase = RD_UID_VERB;
                continue;
            }
            s->rd.verb = imap_verb_lookup(tok.str, tok.len);
            if (s->rd.uid && !imap_verb_uid_ok(s->rd.verb))
                s->rd.verb = IMAP_CMD_UNKNOWN;
            s->rd.def = imap_command_lookup(s->rd.verb);
            s->rd.phase = RD_ARGS;
            if (s->rd.verb == IMAP_CMD_APPEND)
                imap_parser_set_max_literal(s->cp, s->cfg.max_append);
            continue;
        case RD_ARGS:
            if (tok.type == IMAP_TOK_LITERAL) {
                if (s->rd.verb == IMAP_CMD_APPEND) {
                    *used_r = off;
                    imap_append_literal(s, true, &tok, raw, u);
                    return true;
                }
                if (tok.literal8) {
                    *used_r = off;
                    imap_tagged(s, "BAD", "Error in IMAP command: literal8 not allowed here");
                    imap_rd_reset(s);
                    if (tok.literal_nonsync)
                        imap_enter_state(s, IMAP_STATE_DISCARD);
                    else
                        imap_parser_reset(s->cp);
                    imap_count_bad(s);
                    return true;
                }
                size_t hdr_off = s->rd.len - tok.len;
                rd_add_literal(s, hdr_off, tok.len, tok.literal_size, tok.literal_nonsync);
                if (!tok.literal_nonsync)
                    imap_reply(s, "+ OK");
                continue;
            }
            if (tok.type == IMAP_TOK_EOL) {
                *used_r = off;
                imap_command_dispatch(s);
                return true;
            }
            continue;
        }
    }
}

/* The newest command with this verb (NULL: none in flight). */
static struct imap_command *last_command(imap_session *s, enum imap_verb verb)
{
    struct imap_command *c = s->tail;
    while (c && c->verb != verb)
        c = c->prev;
    return c;
}

/* A SASL response: relayed to the AUTHENTICATE it answers. */
static void sasl_line(imap_session *s, const char *text, size_t tl)
{
    struct imap_command *c = last_command(s, IMAP_CMD_AUTHENTICATE);
    if (!c) {
        imap_enter_state(s, imap_idle_state(s));
        return;
    }
    if (c->auth_first_line && !c->user[0])
        imap_sasl_user(c->mech, text, tl, c->user, sizeof(c->user));
    c->auth_first_line = false;
    imap_client_send(s->up, c->up, text, tl);
    imap_client_send(s->up, c->up, "\r\n", 2);
    imap_client_expect(s->up, c->up, IMAP_CONT_RELAY);
    OPENSSL_cleanse((char *)text, tl); /* consumed right after: gone from the buffer too */
    imap_enter_state(s, IMAP_STATE_AUTH_WAIT);
}

/* IDLE's DONE (or whatever line ends it): relayed, the answer is due. */
static void idle_line(imap_session *s, const char *text, size_t tl)
{
    struct imap_command *c = last_command(s, IMAP_CMD_IDLE);
    if (c) {
        imap_client_send(s->up, c->up, text, tl);
        imap_client_send(s->up, c->up, "\r\n", 2);
        imap_client_set_idling(s->up, false); /* its answer is due now */
    }
    imap_enter_state(s, imap_idle_state(s));
}

/* A SASL response or IDLE's DONE: one line, relayed as it is by line()
 * once complete (text points into in, consumed right after). */
static bool read_line(imap_session *s, const char *in, size_t len, size_t *used_r,
                      void (*line)(imap_session *s, const char *text, size_t tl))
{
    struct imap_token tok;
    size_t u, off = 0;
    const char *err;
    int rc = imap_parser_text_next(s->cp, in, len, &u, &tok, &err);
    if (rc == IMAP_PARSE_MORE) {
        *used_r = 0;
        return false;
    }
    if (rc == IMAP_PARSE_ERROR) {
        *used_r = 0;
        imap_bye_close(s, "Line too long.", "line too long");
        return true;
    }
    off = u;
    const char *text = tok.str;
    size_t text_len = tok.len;
    rc = imap_parser_next(s->cp, in + off, len - off, &u, &tok, &err);
    if (rc == IMAP_PARSE_MORE) {
        /* keep the text token unread: the parser restarts it */
        imap_parser_reset(s->cp);
        *used_r = 0;
        return false;
    }
    if (rc == IMAP_PARSE_ERROR || tok.type != IMAP_TOK_EOL) {
        *used_r = 0;
        imap_bye_close(s, "Invalid line.", "protocol error");
        return true;
    }
    *used_r = off + u;
    line(s, text, text_len);
    return true;
}

static bool read_sasl(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    return read_line(s, in, len, used_r, sasl_line);
}

static bool read_idle(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    return read_line(s, in, len, used_r, idle_line);
}

static bool read_append(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    size_t off = 0;
    struct imap_command *c = s->append;
    while (off < len) {
        if (imap_client_output_pending(s->up) > s->cfg.output_high_water) {
            s->flow_client_paused = true;
            imap_update_input(s);
            *used_r = off;
            return false;
        }
        struct imap_token tok;
        size_t u;
        const char *err;
        int rc = imap_parser_next(s->cp, in + off, len - off, &u, &tok, &err);
        if (rc == IMAP_PARSE_MORE)
            break;
        if (rc == IMAP_PARSE_ERROR) {
            /* part of the command is upstream already: no way back */
            *used_r = off;
            imap_bye_close(s, err, "bad APPEND");
            return true;
        }
        const char *raw = in + off;
        off += u;
        if (tok.type == IMAP_TOK_LITERAL) {
            *used_r = off;
            imap_append_literal(s, false, &tok, raw, u);
            return true;
        }
        /* c NULL: the upstream answered early and drops the rest */
        imap_client_send(s->up, c ? c->up : NULL, raw, u);
        if (tok.type == IMAP_TOK_EOL) {
            *used_r = off;
            s->append = NULL;
            imap_rd_reset(s);
            imap_enter_state(s, imap_idle_state(s));
            return true;
        }
    }
    *used_r = off;
    return false;
}

/* The rest of a refused command: tokens dropped, literal data skipped; a
 * synchronizing literal ends it (the client waits for a "+" that never
 * comes). */
static bool read_discard(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    size_t off = 0;
    for (;;) {
        struct imap_token tok;
        size_t u;
        const char *err;
        int rc = imap_parser_next(s->cp, in + off, len - off, &u, &tok, &err);
        if (rc == IMAP_PARSE_MORE) {
            *used_r = off;
            return false;
        }
        if (rc == IMAP_PARSE_ERROR) {
            *used_r = off;
            imap_enter_state(s, IMAP_STATE_SKIP_LINE);
            return true;
        }
        off += u;
        if (tok.type == IMAP_TOK_EOL || (tok.type == IMAP_TOK_LITERAL && !tok.literal_nonsync)) {
            imap_parser_reset(s->cp);
            *used_r = off;
            imap_rd_reset(s);
            imap_enter_state(s, imap_idle_state(s));
            return true;
        }
    }
}

static bool read_skip(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    if (imap_parser_skip_line(s->cp, in, len, used_r)) {
        imap_rd_reset(s);
        imap_enter_state(s, imap_idle_state(s));
        return true;
    }
    return false;
}

/* Who reads client input in each state; in the others it waits. */
typedef bool input_reader(imap_session *s, const char *in, size_t len, size_t *used_r);
static input_reader *const readers[IMAP_STATE_COUNT_] = {
    [IMAP_STATE_NOT_AUTH] = read_command,
    [IMAP_STATE_AUTHENTICATED] = read_command,
    [IMAP_STATE_SELECTED] = read_command,
    [IMAP_STATE_AUTHENTICATE] = read_sasl,
    [IMAP_STATE_IDLE] = read_idle,
    [IMAP_STATE_APPEND] = read_append,
    [IMAP_STATE_APPEND_HOLD] = imap_append_hold_read,
    [IMAP_STATE_DISCARD] = read_discard,
    [IMAP_STATE_SKIP_LINE] = read_skip,
};

void imap_process_client_input(imap_session *s)
{
    while (s->conn && !s->closing && !s->flow_client_paused && s->local_len < LOCAL_OUT_MAX) {
        if (s->up && imap_client_output_pending(s->up) > s->cfg.output_high_water) {
            /* the upstream is not keeping up (or holds commands behind a
             * literal): read no more until its output drains */
            s->flow_client_paused = true;
            imap_update_input(s);
            break;
        }
        size_t len;
        const char *in = net_conn_input(s->conn, &len);
        if (len == 0)
            return;
        input_reader *reader =
            (unsigned)s->state < IMAP_STATE_COUNT_ ? readers[s->state] : NULL;
        if (reader == NULL)
            return;
        size_t used = 0;
        bool again = reader(s, in, len, &used);
        if (s->conn && used) {
            net_conn_consume(s->conn, used);
            s->bytes_in += used;
        }
        if (!again)
            break;
    }
    if (s->conn && s->state != IMAP_STATE_TLS)
        imap_update_timeout(s);
}

/* ---- connection events --------------------------------------------------------------------- */

static void on_timeout(imap_session *s)
{
    const char *what = !s->authenticated ? "login timeout" : "idle timeout";
    qlog_info("imap %s: %s in state %s", s->id, what, state_names[s->state]);
    imap_bye_close(s, "Disconnected for inactivity.", what);
}

static void client_handle_event(imap_session *s, enum net_event ev)
{
    switch (ev) {
    case NET_EV_TLS_READY:
        if (s->state != IMAP_STATE_TLS)
            return;
        if (!s->greeted) {
            imap_enter_state(s, IMAP_STATE_CONNECTING);
            if (s->upstream_ready)
                send_greeting(s);
        } else {
            /* STARTTLS done: what was said before TLS is forgotten */
            imap_parser_reset(s->cp);
            imap_rd_reset(s);
            imap_enter_state(s, IMAP_STATE_NOT_AUTH);
        }
        imap_process_client_input(s);
        return;
    case NET_EV_READ:
        imap_process_client_input(s);
        return;
    case NET_EV_DRAINED:
        if (s->flow_upstream_paused) {
            s->flow_upstream_paused = false;
            if (s->up && !s->fr.waiting)
                imap_client_resume(s->up);
        }
        return;
    case NET_EV_EOF:
        imap_process_client_input(s);
        if (!s->closing)
            imap_schedule_close(s, false,
                                s->state == IMAP_STATE_LOGOUT ? "logout" : "client disconnected");
        return;
    case NET_EV_TIMEOUT:
        on_timeout(s);
        return;
    case NET_EV_ERROR:
        qlog_info("imap %s: %s", s->id, net_conn_error(s->conn));
        imap_schedule_close(s, false, "client connection error");
        return;
    case NET_EV_CONNECTED:
        return;
    }
}

static void client_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    imap_session *s = arg;
    (void)conn;
    s->busy++;
    if (!s->closing)
        client_handle_event(s, ev);
    s->busy--;
    maybe_destroy(s);
}

/* ---- upstream events ------------------------------------------------------------------------- */

static void up_batch_end(void *arg, imap_client *c)
{
    imap_session *s = arg;
    (void)c;
    imap_out_flush(s);
    if (!s->conn || s->closing)
        return;
    /* held output may have been dropped (a command answered before its
     * literal was taken) without a write that would end in DRAINED */
    if (s->flow_client_paused &&
        imap_client_output_pending(s->up) <= s->cfg.output_high_water / 2) {
        s->flow_client_paused = false;
        imap_update_input(s);
    }
    if (net_conn_output_pending(s->conn) > s->cfg.output_high_water && !s->flow_upstream_paused) {
        s->flow_upstream_paused = true;
        imap_client_pause(s->up);
    }
}

static void up_closed(void *arg, imap_client *c, bool mid_response, const char *why)
{
    imap_session *s = arg;
    s->busy++;
    imap_out_flush(s);
    qlog_info("imap %s: %s", s->id, why);
    s->up = NULL;
    imap_client_free(&c);
    if (s->state == IMAP_STATE_LOGOUT) {
        imap_local_flush(s);
        imap_schedule_close(s, true, "logout");
    } else if (mid_response || s->relay != RELAY_NONE || s->fr.waiting) {
        /* the client is inside a response: nothing more can be said */
        imap_schedule_close(s, false, "upstream closed mid-response");
    } else if (s->upstream_bye) {
        imap_local_flush(s);
        imap_schedule_close(s, true, "upstream said BYE");
    } else {
        imap_bye_close(s, "Upstream server closed the connection.", "upstream closed");
    }
    s->busy--;
    maybe_destroy(s);
}

static void up_drained(void *arg, imap_client *c)
{
    imap_session *s = arg;
    (void)c;
    if (s->state == IMAP_STATE_APPEND_PROTECT)
        imap_append_step(s); /* the next chunk of a held APPEND */
    if (!s->flow_client_paused)
        return;
    s->busy++;
    s->flow_client_paused = false;
    imap_update_input(s);
    imap_process_client_input(s);
    s->busy--;
    maybe_destroy(s);
}

/* ---- FETCH hook helpers (public) -------------------------------------------------------------- */

void imap_fetch_prefix(imap_session *s)
{
    char pre[48];
    int n;
    if (!s->fr.open)
        n = snprintf(pre, sizeof(pre), "* %u FETCH (", s->fr.seq);
    else
        n = snprintf(pre, sizeof(pre), " ");
    s->fr.open = true;
    imap_out_bytes(s, pre, (size_t)n);
}

int imap_session_fetch_item(imap_session *s, const char *name, const void *value, size_t len)
{
    if (s->relay != RELAY_FETCH && !s->fr.waiting)
        return NET_ESTATE;
    imap_fetch_prefix(s);
    imap_out_bytes(s, name, strlen(name));
    imap_out_bytes(s, " ", 1);
    imap_out_bytes(s, value, len);
    return 0;
}

int imap_session_fetch_write(imap_session *s, const void *data, size_t len)
{
    if (s->relay != RELAY_FETCH && !s->fr.waiting)
        return NET_ESTATE;
    imap_out_bytes(s, data, len);
    return 0;
}

void imap_session_fetch_resume(imap_session *s)
{
    if (!s->fr.waiting)
        return;
    s->busy++;
    if (s->fr.open)
        imap_out_bytes(s, ")\r\n", 3);
    s->fr.open = false;
    s->fr.waiting = false;
    s->relay = RELAY_NONE;
    imap_local_flush(s);
    if (s->up && !s->flow_upstream_paused)
        imap_client_resume(s->up);
    s->busy--;
    maybe_destroy(s);
}
