/* SMTP server session: connection lifecycle, input dispatch, the reply
 * function, state transitions, and the message body (DATA/BDAT -> spool). */
#include "smtp_session_internal.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

static const char *const state_names[SMTP_STATE_COUNT] = {
    [SMTP_STATE_UPSTREAM] = "UPSTREAM",
    [SMTP_STATE_TLS] = "TLS",
    [SMTP_STATE_HELO] = "HELO",
    [SMTP_STATE_READY] = "READY",
    [SMTP_STATE_AUTH_UPSTREAM] = "AUTH_UPSTREAM",
    [SMTP_STATE_AUTH_CLIENT] = "AUTH_CLIENT",
    [SMTP_STATE_MAIL_UPSTREAM] = "MAIL_UPSTREAM",
    [SMTP_STATE_MAIL] = "MAIL",
    [SMTP_STATE_RCPT_UPSTREAM] = "RCPT_UPSTREAM",
    [SMTP_STATE_RCPT] = "RCPT",
    [SMTP_STATE_DATA] = "DATA",
    [SMTP_STATE_BDAT] = "BDAT",
    [SMTP_STATE_BDAT_DISCARD] = "BDAT_DISCARD",
    [SMTP_STATE_CHUNKED] = "CHUNKED",
    [SMTP_STATE_SKIP_LINE] = "SKIP_LINE",
    [SMTP_STATE_PROCESSING] = "PROCESSING",
    [SMTP_STATE_DELIVERING] = "DELIVERING",
    [SMTP_STATE_CLOSING] = "CLOSING",
};

static const char *const dropped_headers[] = {"Bcc", NULL};

const char *smtp_state_name(enum smtp_state st) { return state_names[st]; }
const char *smtp_session_id(const smtp_session *s) { return s->id; }
const char *smtp_session_peer(const smtp_session *s) { return s->peer; }

bool smtp_session_busy(const smtp_session *s)
{
    switch (s->state) {
    case SMTP_STATE_MAIL_UPSTREAM: case SMTP_STATE_MAIL: case SMTP_STATE_RCPT_UPSTREAM:
    case SMTP_STATE_RCPT: case SMTP_STATE_DATA: case SMTP_STATE_BDAT:
    case SMTP_STATE_BDAT_DISCARD: case SMTP_STATE_CHUNKED: case SMTP_STATE_PROCESSING:
    case SMTP_STATE_DELIVERING:
        return true;
    default:
        return false;
    }
}

/* A relayed command is with upstream: the client's next commands wait in
 * the input buffer, in order. */
static bool holds_input(enum smtp_state st)
{
    return st == SMTP_STATE_AUTH_UPSTREAM || st == SMTP_STATE_MAIL_UPSTREAM ||
           st == SMTP_STATE_RCPT_UPSTREAM;
}

/* The message is with the hook or upstream: input is read (so that a client
 * that leaves is noticed) but not dispatched. */
static bool ignores_input(enum smtp_state st)
{
    return st == SMTP_STATE_PROCESSING || st == SMTP_STATE_DELIVERING;
}

void smtp_enter_state(smtp_session *s, enum smtp_state st)
{
    enum smtp_state old = s->state;
    if (old == st || old == SMTP_STATE_CLOSING)
        return;
    qlog_debug("smtp %s: %s -> %s", s->id, state_names[old], state_names[st]);
    s->state = st;
    if (!s->conn || st == SMTP_STATE_CLOSING)
        return;
    /* While upstream answers, the clock of the client's phase stops. */
    if (holds_input(st) && !holds_input(old))
        smtp_phase_suspend(s);
    else if (holds_input(old) && !holds_input(st))
        smtp_phase_continue(s);
    if (holds_input(st) && !holds_input(old)) {
        net_conn_pause(s->conn);
    } else if ((holds_input(old) || ignores_input(old)) && !holds_input(st) &&
               !ignores_input(st)) {
        /* Commands may be waiting in the buffer: offer them again (resume
         * re-delivers buffered input on the next loop turn). */
        if (ignores_input(old))
            net_conn_pause(s->conn);
        net_conn_resume(s->conn);
    }
}

void smtp_session_enter(smtp_session *s)
{
    s->busy++;
}

static void session_on_event(net_conn *conn, enum net_event ev, void *arg);
static void upstream_ready(smtp_client *c, const struct smtp_client_reply *r, void *arg);
static void process_input(smtp_session *s);

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

uint64_t smtp_size_after_expansion(uint64_t upstream_size, uint64_t own_limit)
{
    const uint64_t overhead = (uint64_t)64 * 1024;
    if (upstream_size == 0)
        return own_limit;
    if (upstream_size <= overhead)
        return 0;
    /* plaintext p -> base64 with CRLF per 76: 4/3 * 78/76 = 26/19 * p */
    uint64_t room = upstream_size - overhead;
    uint64_t p = room / 26 * 19 + (room % 26) * 19 / 26;
    return p < own_limit ? p : own_limit;
}

uint64_t smtp_advertised_size(const smtp_session *s)
{
    uint64_t up = s->up ? smtp_client_max_size(s->up) : 0;
    return smtp_size_after_expansion(up, s->cfg.max_message_size);
}

smtp_session *smtp_session_new(uv_loop_t *loop, net_conn *conn,
                               const struct smtp_session_config *cfg,
                               const struct smtp_session_hooks *hooks,
                               void *hooks_ctx)
{
    smtp_session *s = calloc(1, sizeof(*s));
    if (!s) {
        net_conn_close(&conn);
        return NULL;
    }
    s->loop = loop;
    s->conn = conn;
    s->cfg = *cfg;
    s->hostname = strdup(cfg->hostname ? cfg->hostname : "localhost");
    s->listener = strdup(cfg->listener ? cfg->listener : "smtp");
    s->spool_dir = cfg->spool_dir ? strdup(cfg->spool_dir) : NULL;
    s->cfg.hostname = s->hostname;
    s->cfg.listener = s->listener;
    s->cfg.spool_dir = s->spool_dir;
    if (s->cfg.upstream.helo_name == NULL)
        s->cfg.upstream.helo_name = s->hostname;
    if (s->cfg.max_line_length < 512)
        s->cfg.max_line_length = 512;
    s->hooks = *hooks;
    s->hooks_ctx = hooks_ctx;
    random_id(s->id, 6);
    snprintf(s->peer, sizeof(s->peer), "%s", net_conn_peer_addr(conn));
    s->state = SMTP_STATE_UPSTREAM;

    net_conn_set_cb(conn, session_on_event, s);
    net_conn_set_max_input(conn, s->cfg.max_line_length > 65536 ? s->cfg.max_line_length
                                                                 : 65536);
    net_conn_set_timeout(conn, s->cfg.command_timeout_ms);
    /* Input before the greeting stays buffered: process_input ignores it
     * until the state allows commands (no pause: TLS must handshake). */
    qlog_info("smtp %s: connect from %s on %s", s->id, s->peer, s->listener);

    char *err = NULL;
    /* No file yet: smtp_body_begin opens it. */
    s->spool = smtp_spool_new(s->spool_dir, s->cfg.max_message_size, &err);
    if (!s->spool) {
        qlog_error("smtp %s: %s", s->id, err);
        free(err);
        goto fail;
    }
    s->up = smtp_client_new(loop, &s->cfg.upstream, upstream_ready, s);
    if (!s->up)
        goto fail;
    if (s->cfg.implicit_tls && s->cfg.tls_ctx) {
        smtp_enter_state(s, SMTP_STATE_TLS);
        if (net_conn_start_tls(conn, s->cfg.tls_ctx, NULL) < 0)
            goto fail;
        smtp_phase_start(s, SMTP_PHASE_TLS);
    }
    return s;
fail:
    /* Nothing was handed out yet: undo here, the hooks never saw s. */
    net_conn_close(&s->conn);
    smtp_client_free(&s->up);
    smtp_spool_free(&s->spool);
    free(s->hostname);
    free(s->listener);
    free(s->spool_dir);
    free(s);
    return NULL;
}

static void session_destroy(smtp_session *s)
{
    qlog_info("smtp %s: disconnect from %s%s%s", s->id, s->peer,
              s->auth_user[0] ? " user=" : "", s->auth_user);
    smtp_authid_end(&s->authid, 0, s->auth_user, s->auth_authzid); /* wipes */
    if (s->hooks.closed)
        s->hooks.closed(s->hooks_ctx, s);
    smtp_client_free(&s->up);   /* cancelled callbacks touch nothing */
    smtp_deliver_free(s);
    smtp_txn_reset(s);
    smtp_spool_free(&s->spool);
    free(s->rcpts);
    free(s->line_buf);
    free(s->hdr_buf);
    free(s->helo);
    free(s->hostname);
    free(s->listener);
    free(s->spool_dir);
    free(s);
}

void smtp_session_leave(smtp_session *s)
{
    if (--s->busy == 0 && s->state == SMTP_STATE_CLOSING)
        session_destroy(s);
}

void smtp_session_schedule_close(smtp_session *s, bool after_write)
{
    if (s->state == SMTP_STATE_CLOSING)
        return;
    smtp_enter_state(s, SMTP_STATE_CLOSING);
    if (s->conn) {
        if (after_write)
            net_conn_close_after_write(&s->conn);
        else
            net_conn_close(&s->conn);
    }
    /* Destroy on a later loop turn when nothing is on the stack. */
}

void smtp_session_close(smtp_session *s)
{
    smtp_session_enter(s);
    smtp_session_schedule_close(s, false);
    smtp_session_leave(s);
}

/* ---- replies ---------------------------------------------------------- */

void smtp_reply_code(smtp_session *s, int code, const char *enh, const char *text)
{
    if (!s->conn)
        return;
    char def_enh[16];
    if (code >= 300 && code < 400) {
        enh = NULL; /* RFC 2034: no enhanced code on intermediate replies */
    } else if (enh && !*enh) {
        snprintf(def_enh, sizeof(def_enh), "%d.0.0", code / 100);
        enh = def_enh;
    }
    const char *p = text ? text : "";
    for (;;) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        if (len > 900)
            len = 900; /* keep each reply line within RFC 5321 limits */
        if (enh)
            net_conn_printf(s->conn, "%d%c%s %.*s\r\n", code, nl ? '-' : ' ', enh, len, p);
        else
            net_conn_printf(s->conn, "%d%c%.*s\r\n", code, nl ? '-' : ' ', len, p);
        if (!nl)
            break;
        p = nl + 1;
    }
    if (qlog_get_level() >= QLOG_DEBUG) {
        bool secret = code == 334 || s->state == SMTP_STATE_AUTH_UPSTREAM ||
                      s->state == SMTP_STATE_AUTH_CLIENT;
        qlog_debug("smtp %s: >>> %d%s%s %s", s->id, code, enh ? " " : "", enh ? enh : "",
                   secret ? "<redacted>" : (text ? text : ""));
    }
}

void smtp_reply(smtp_session *s, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    /* "ddd x.y.z text" */
    int code = (int)strtol(buf, NULL, 10);
    const char *p = buf + 3;
    while (*p == ' ')
        p++;
    char enh[16] = "";
    const char *sp = strchr(p, ' ');
    if (p[0] >= '2' && p[0] <= '5' && p[1] == '.' && sp && (size_t)(sp - p) < sizeof(enh)) {
        memcpy(enh, p, (size_t)(sp - p));
        enh[sp - p] = '\0';
        p = sp + 1;
    }
    smtp_reply_code(s, code, enh, p);
}

/* ---- input ---------------------------------------------------------------- */

bool smtp_upstream_usable(smtp_session *s)
{
    if (s->up && smtp_client_ready(s->up))
        return true;
    smtp_reply(s, "421 4.4.2 %s Upstream connection lost, closing", s->hostname);
    smtp_session_schedule_close(s, true);
    return false;
}

static int spool_sink(void *arg, const char *data, size_t len)
{
    smtp_session *s = arg;
    smtp_spool_write(s->spool, data, len);
    return 0; /* I/O errors are sticky in the spool and reported at the end */
}

static int filter_sink(void *arg, const char *data, size_t len)
{
    smtp_session *s = arg;
    return smtp_hdrfilter_feed(&s->filter, data, len);
}

static void rfc5322_date(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

int smtp_body_begin(smtp_session *s)
{
    /* The spool's file exists from here to the end of the transaction
     * (smtp_txn_reset): an idle session holds no descriptor for it. */
    char *err = NULL;
    if (smtp_spool_open(s->spool, &err) < 0) {
        qlog_error("smtp %s: %s", s->id, err ? err : "spool: out of memory");
        free(err);
        return -1;
    }
    smtp_hdrfilter_init(&s->filter, dropped_headers, spool_sink, s);
    if (!s->hdr_buf)
        s->hdr_buf = malloc(SMTP_HEADER_KEEP);
    if (s->hdr_buf)
        smtp_hdrfilter_capture(&s->filter, s->hdr_buf, SMTP_HEADER_KEEP);
    smtp_data_reader_init(&s->reader, s->cfg.max_line_length, filter_sink, s);
    if (s->cfg.trace_header) {
        char date[64], host[64];
        rfc5322_date(date, sizeof(date));
        snprintf(host, sizeof(host), "%s", s->peer);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = '\0';
        bool tls = s->conn && net_conn_is_tls(s->conn);
        char line[1024];
        int n = snprintf(line, sizeof(line),
                         "Received: from %s (%s)\r\n\tby %s (qumail) with %s%s%s id %s;\r\n\t%s\r\n",
                         s->helo ? s->helo : "unknown", host, s->hostname,
                         s->esmtp ? "ESMTP" : "SMTP", tls ? "S" : "",
                         s->authenticated ? "A" : "", s->msg_id, date);
        /* The HELO name is the client's: strip control characters. */
        for (int i = 0; i < n && (size_t)i < sizeof(line); i++)
            if ((unsigned char)line[i] < 0x20 && line[i] != '\r' && line[i] != '\n' &&
                line[i] != '\t')
                line[i] = '?';
        if (n > 0)
            smtp_spool_write(s->spool, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
    net_conn_set_timeout(s->conn, s->cfg.data_timeout_ms);
    return 0;
}

/* End of DATA or of the LAST BDAT chunk. */
void smtp_body_end(smtp_session *s)
{
    smtp_hdrfilter_finish(&s->filter);
    smtp_spool_finish(s->spool);
    smtp_phase_end(s, SMTP_PHASE_DATA);
    net_conn_set_timeout(s->conn, s->cfg.command_timeout_ms);
    const char *reject = NULL;
    if (smtp_spool_overflow(s->spool))
        reject = "552 5.3.4 Message size exceeds fixed maximum message size";
    else if (s->reader.line_too_long)
        reject = "552 5.3.4 Message has a line longer than the limit";
    else if (smtp_spool_error(s->spool))
        reject = "451 4.3.0 Local error writing the message";
    if (reject) {
        smtp_reply(s, "%s", reject);
        if (s->txn_upstream && s->up && smtp_client_ready(s->up))
            smtp_client_command(s->up, "RSET", 0, NULL, NULL);
        smtp_txn_reset(s);
        smtp_enter_state(s, SMTP_STATE_READY);
        return;
    }
    /* Input is not paused while the message is processed: it stays
     * buffered (the connection stops reading when its buffer is full), and
     * a client that leaves is noticed at once, which cancels the message. */
    smtp_enter_state(s, SMTP_STATE_PROCESSING);
    struct smtp_message m = {
        .id = s->msg_id,
        .from = s->from ? s->from : "",
        .rcpts = s->rcpts,
        .n_rcpts = s->n_rcpts,
        .fd = smtp_spool_fd(s->spool),
        .size = smtp_spool_size(s->spool),
        .authenticated = s->authenticated,
        .auth_user = s->authenticated && s->auth_user[0] ? s->auth_user : NULL,
        .auth_authzid = s->authenticated && s->auth_authzid[0] ? s->auth_authzid : NULL,
        .peer = s->peer,
    };
    if (s->hdr_buf && !s->filter.capture_overflow && s->filter.in_body) {
        m.headers = s->hdr_buf;
        m.headers_len = s->filter.capture_len;
    }
    s->hooks.message(s->hooks_ctx, s, &m);
}

void smtp_txn_reset(smtp_session *s)
{
    free(s->from);
    s->from = NULL;
    s->mail_params[0] = '\0';
    s->smtputf8 = false;
    for (size_t i = 0; i < s->n_rcpts; i++) {
        free(s->rcpts[i].addr);
        free(s->rcpts[i].dsn);
        if (s->rcpts[i].data && s->hooks.rcpt_free)
            s->hooks.rcpt_free(s->hooks_ctx, s->rcpts[i].data);
    }
    s->n_rcpts = 0;
    s->txn_upstream = false;
    s->chunk_left = 0;
    s->chunk_last = false;
    s->discard_reply = NULL;
    s->msg_id[0] = '\0';
    free(s->hdr_buf); /* reallocated by the next message's body */
    s->hdr_buf = NULL;
    smtp_spool_close(s->spool); /* the message's file (the hooks keep dups) */
}

static void process_data(smtp_session *s)
{
    size_t avail;
    const char *in = net_conn_input(s->conn, &avail);
    if (avail == 0)
        return;
    size_t used = 0;
    const char *err = NULL;
    enum smtp_parse_result pr = smtp_data_feed(&s->reader, in, avail, &used, &err);
    net_conn_consume(s->conn, used);
    smtp_phase_progress(s, used);
    if (pr == SMTP_DONE)
        smtp_body_end(s);
    else if (pr == SMTP_ERR) {
        smtp_reply(s, "451 4.3.0 Local error reading the message");
        smtp_session_schedule_close(s, true);
    }
}

/* A BDAT chunk's bytes (BDAT: to the message; BDAT_DISCARD: dropped). */
static void process_chunk(smtp_session *s)
{
    size_t avail;
    const char *in = net_conn_input(s->conn, &avail);
    size_t n = avail < s->chunk_left ? avail : (size_t)s->chunk_left;
    if (n > 0) {
        if (s->state == SMTP_STATE_BDAT)
            smtp_hdrfilter_feed(&s->filter, in, n);
        net_conn_consume(s->conn, n);
        s->chunk_left -= n;
        smtp_phase_progress(s, n);
    }
    if (s->chunk_left == 0)
        smtp_bdat_chunk_done(s);
}

/* The longest line accepted now: AUTH lines may be longer than commands. */
static size_t line_limit(const smtp_session *s, const char *in, size_t avail)
{
    size_t limit = s->cfg.max_line_length;
    bool auth = s->state == SMTP_STATE_AUTH_CLIENT ||
                (s->state == SMTP_STATE_SKIP_LINE && s->resume == SMTP_STATE_AUTH_CLIENT) ||
                (avail >= 5 && strncasecmp(in, "AUTH ", 5) == 0);
    return auth && limit < SMTP_AUTH_LINE_MAX ? SMTP_AUTH_LINE_MAX : limit;
}

/* States in which a command line is read. */
static bool reads_commands(enum smtp_state st)
{
    return st == SMTP_STATE_HELO || st == SMTP_STATE_READY || st == SMTP_STATE_AUTH_CLIENT ||
           st == SMTP_STATE_MAIL || st == SMTP_STATE_RCPT || st == SMTP_STATE_CHUNKED ||
           st == SMTP_STATE_SKIP_LINE;
}

/* Dispatches buffered input while the client reads its replies: once the
 * queued output passes the connection's high-water mark it stops, and the
 * connection offers the rest again (NET_EV_READ) when the client caught up. */
static void process_input(smtp_session *s)
{
    while (s->conn && !net_conn_output_blocked(s->conn)) {
        size_t avail;
        const char *in = net_conn_input(s->conn, &avail);
        if (s->state == SMTP_STATE_DATA) {
            if (avail == 0)
                return;
            process_data(s);
            continue;
        }
        if (s->state == SMTP_STATE_BDAT || s->state == SMTP_STATE_BDAT_DISCARD) {
            if (avail == 0 && s->chunk_left > 0)
                return;
            process_chunk(s);
            continue;
        }
        if (!reads_commands(s->state))
            return; /* UPSTREAM, TLS, *_UPSTREAM, PROCESSING, DELIVERING, CLOSING */
        size_t len = net_conn_line_len(s->conn);
        size_t limit = line_limit(s, in, avail);
        if (len == 0) {
            /* A command line is awaited: it has command_timeout in all,
             * however slowly its bytes come. */
            if (!smtp_phase_running(s, SMTP_PHASE_LINE))
                smtp_phase_start(s, SMTP_PHASE_LINE);
            if (avail >= limit) {
                if (s->state != SMTP_STATE_SKIP_LINE) {
                    smtp_reply(s, "500 5.5.2 Line too long");
                    s->resume = s->state;
                    smtp_enter_state(s, SMTP_STATE_SKIP_LINE);
                }
                net_conn_consume(s->conn, avail);
            }
            return;
        }
        smtp_phase_end(s, SMTP_PHASE_LINE);
        if (s->state == SMTP_STATE_SKIP_LINE) {
            net_conn_consume(s->conn, len);
            smtp_enter_state(s, s->resume);
            continue;
        }
        if (len > limit) {
            net_conn_consume(s->conn, len);
            smtp_reply(s, "500 5.5.2 Line too long");
            continue;
        }
        /* One line buffer per session: max_line_length + 1 bytes, grown
         * for a long AUTH line (wiped after every line, so nothing is
         * copied when it grows). */
        if (len + 1 > s->line_cap || !s->line_buf) {
            size_t cap = len + 1 > (size_t)s->cfg.max_line_length + 1
                             ? len + 1
                             : (size_t)s->cfg.max_line_length + 1;
            free(s->line_buf);
            s->line_cap = 0;
            if (!(s->line_buf = malloc(cap))) {
                smtp_reply(s, "421 4.3.0 Insufficient system resources");
                smtp_session_schedule_close(s, true);
                return;
            }
            s->line_cap = cap;
        }
        memcpy(s->line_buf, in, len);
        s->line_buf[len] = '\0';
        net_conn_consume(s->conn, len);
        smtp_command(s, s->line_buf, len);
        if (s->line_buf)
            OPENSSL_cleanse(s->line_buf, len); /* may have held AUTH data */
    }
}

static void send_greeting(smtp_session *s)
{
    smtp_enter_state(s, SMTP_STATE_HELO);
    char text[300];
    snprintf(text, sizeof(text), "%s ESMTP qumail", s->hostname);
    smtp_reply_code(s, 220, NULL, text); /* the greeting carries no enhanced code */
    process_input(s); /* anything sent early */
}

static void session_handle_event(smtp_session *s, enum net_event ev)
{
    switch (ev) {
    case NET_EV_TLS_READY:
        smtp_phase_end(s, SMTP_PHASE_TLS);
        if (s->state != SMTP_STATE_TLS)
            return;
        if (s->cfg.implicit_tls && !s->helo && s->up && smtp_client_ready(s->up)) {
            send_greeting(s);
        } else if (s->cfg.implicit_tls && !s->helo) {
            smtp_enter_state(s, SMTP_STATE_UPSTREAM); /* greeting when ready */
        } else {
            /* STARTTLS done: RFC 3207 4.2, forget what was said before. */
            free(s->helo);
            s->helo = NULL;
            s->esmtp = false;
            smtp_enter_state(s, SMTP_STATE_HELO);
        }
        return;
    case NET_EV_READ:
        process_input(s);
        return;
    case NET_EV_DRAINED:
        return;
    case NET_EV_EOF:
        process_input(s);
        if (ignores_input(s->state))
            /* The client left before the reply to its message: nobody
             * would hear a 250, so nothing is sent (the hook's work for
             * it is cancelled by the closed hook). */
            qlog_info("smtp %s: client left during %s: message %s cancelled", s->id,
                      state_names[s->state], s->msg_id);
        smtp_session_schedule_close(s, false);
        return;
    case NET_EV_TIMEOUT:
        if (net_conn_error_code(s->conn) == NET_EDEADLINE) {
            const char *phase = smtp_phase_expired(s);
            if (phase == NULL)
                return; /* extended meanwhile */
            smtp_reply(s, "421 4.4.2 %s Timeout, closing", s->hostname);
            qlog_info("smtp %s: timeout in state %s (%s deadline)", s->id,
                      state_names[s->state], phase);
            smtp_session_schedule_close(s, true);
            return;
        }
        if (holds_input(s->state) || ignores_input(s->state) ||
            s->state == SMTP_STATE_UPSTREAM) {
            net_conn_set_timeout(s->conn, s->cfg.command_timeout_ms); /* re-arm */
            return;
        }
        smtp_reply(s, "421 4.4.2 %s Timeout, closing", s->hostname);
        qlog_info("smtp %s: timeout in state %s", s->id, state_names[s->state]);
        smtp_session_schedule_close(s, true);
        return;
    case NET_EV_ERROR:
        qlog_info("smtp %s: %s%s%s", s->id, net_conn_error(s->conn),
                  ignores_input(s->state) ? ": message cancelled " : "",
                  ignores_input(s->state) ? s->msg_id : "");
        smtp_session_schedule_close(s, false);
        return;
    case NET_EV_CONNECTED:
        return;
    }
}

static void session_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    smtp_session *s = arg;
    (void)conn;
    smtp_session_enter(s);
    if (s->state != SMTP_STATE_CLOSING)
        session_handle_event(s, ev);
    smtp_session_leave(s);
}

static void upstream_ready(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    smtp_session *s = arg;
    (void)c;
    if (r->cancelled)
        return;
    smtp_session_enter(s);
    if (r->code != 250) {
        qlog_warn("smtp %s: upstream unavailable: %d %s %s", s->id, r->code, r->enh, r->text);
        if (s->state == SMTP_STATE_TLS) {
            /* Implicit TLS still handshaking: answer after it. Simplest
             * correct path: close; the client retries later. */
            smtp_session_schedule_close(s, false);
        } else {
            smtp_reply(s, "421 4.4.1 %s Upstream server unavailable, try again later",
                       s->hostname);
            smtp_session_schedule_close(s, true);
        }
    } else if (s->state == SMTP_STATE_UPSTREAM) {
        send_greeting(s);
    }
    smtp_session_leave(s);
}

/* Hooks' answers (entry points from the daemon). */
void smtp_session_fail(smtp_session *s, int code, const char *enh, const char *text)
{
    smtp_session_enter(s);
    smtp_reply_code(s, code, enh, text);
    if (s->txn_upstream && s->up && smtp_client_ready(s->up))
        smtp_client_command(s->up, "RSET", 0, NULL, NULL);
    smtp_txn_reset(s);
    smtp_enter_state(s, SMTP_STATE_READY);
    smtp_session_leave(s);
}
