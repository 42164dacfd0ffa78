/* What a client may make the session spend or reveal: the overall
 * deadline of each phase (a command line, a message body, a TLS handshake,
 * an authentication exchange) and what of a client line reaches the debug
 * log. Idle timers alone do not bound a client that sends a byte a second;
 * deadlines do. Redaction is decided here, once, before anything is
 * formatted. */
#include "smtp_session_internal.h"

#include <stdio.h>

#include "log.h"

/* DATA and BDAT: the body must keep arriving at this average rate, after a
 * grace of data_timeout; a byte a second does not hold a slot for long, a
 * large message on a slow link still gets through. */
#define DEFAULT_DATA_MIN_RATE 1024 /* bytes per second */
/* A TLS handshake takes a few round trips: it gets at most this long (or
 * command_timeout when that is shorter). */
#define DEFAULT_HANDSHAKE_MS 30000

static const char *const phase_names[SMTP_PHASE_COUNT] = {
    [SMTP_PHASE_LINE] = "command line",
    [SMTP_PHASE_DATA] = "message",
    [SMTP_PHASE_TLS] = "TLS handshake",
    [SMTP_PHASE_AUTH] = "authentication",
};

/* ---- deadlines ------------------------------------------------------------ */

static uint64_t now_ms(const smtp_session *s) { return uv_now(s->loop); }

/* Arms the connection's one deadline at the earliest running phase. */
static void guard_arm(smtp_session *s)
{
    if (!s->conn)
        return;
    uint64_t first = 0;
    for (int p = 0; p < SMTP_PHASE_COUNT; p++)
        if (s->guard.end[p] != 0 && (first == 0 || s->guard.end[p] < first))
            first = s->guard.end[p];
    if (first == 0) {
        net_conn_set_deadline(s->conn, 0);
        return;
    }
    uint64_t now = now_ms(s);
    net_conn_set_deadline(s->conn, first > now ? first - now : 1);
}

static uint64_t phase_budget(const smtp_session *s, enum smtp_phase p)
{
    switch (p) {
    case SMTP_PHASE_DATA:
        return s->cfg.data_timeout_ms;
    case SMTP_PHASE_TLS: {
        uint64_t hs = s->cfg.handshake_timeout_ms ? s->cfg.handshake_timeout_ms
                                                  : DEFAULT_HANDSHAKE_MS;
        return s->cfg.command_timeout_ms && s->cfg.command_timeout_ms < hs
                   ? s->cfg.command_timeout_ms : hs;
    }
    case SMTP_PHASE_LINE:
    case SMTP_PHASE_AUTH:
    default:
        return s->cfg.command_timeout_ms;
    }
}

void smtp_phase_start(smtp_session *s, enum smtp_phase p)
{
    uint64_t budget = phase_budget(s, p);
    s->guard.end[p] = budget ? now_ms(s) + budget : 0;
    if (p == SMTP_PHASE_DATA) {
        s->guard.data_start = now_ms(s);
        s->guard.data_bytes = 0;
    }
    guard_arm(s);
}

bool smtp_phase_running(const smtp_session *s, enum smtp_phase p)
{
    return s->guard.end[p] != 0 || s->guard.left[p] != 0;
}

void smtp_phase_progress(smtp_session *s, size_t bytes)
{
    if (s->guard.end[SMTP_PHASE_DATA] == 0 || bytes == 0)
        return;
    s->guard.data_bytes += bytes;
    uint64_t rate = s->cfg.data_min_rate ? s->cfg.data_min_rate : DEFAULT_DATA_MIN_RATE;
    s->guard.end[SMTP_PHASE_DATA] = s->guard.data_start + s->cfg.data_timeout_ms +
                                    s->guard.data_bytes * 1000 / rate;
    guard_arm(s);
}

void smtp_phase_end(smtp_session *s, enum smtp_phase p)
{
    s->guard.left[p] = 0;
    if (s->guard.end[p] == 0)
        return;
    s->guard.end[p] = 0;
    guard_arm(s);
}

void smtp_phase_suspend(smtp_session *s)
{
    uint64_t now = now_ms(s);
    bool any = false;
    for (int p = 0; p < SMTP_PHASE_COUNT; p++) {
        if (s->guard.end[p] == 0)
            continue;
        s->guard.left[p] = s->guard.end[p] > now ? s->guard.end[p] - now : 1;
        s->guard.end[p] = 0;
        any = true;
    }
    if (any)
        guard_arm(s);
}

void smtp_phase_continue(smtp_session *s)
{
    uint64_t now = now_ms(s);
    bool any = false;
    for (int p = 0; p < SMTP_PHASE_COUNT; p++) {
        if (s->guard.left[p] == 0)
            continue;
        s->guard.end[p] = now + s->guard.left[p];
        s->guard.left[p] = 0;
        any = true;
    }
    if (any)
        guard_arm(s);
}

const char *smtp_phase_expired(smtp_session *s)
{
    uint64_t now = now_ms(s);
    const char *name = NULL;
    for (int p = 0; p < SMTP_PHASE_COUNT; p++) {
        if (s->guard.end[p] != 0 && s->guard.end[p] <= now) {
            name = phase_names[p];
            s->guard.end[p] = 0;
        }
    }
    if (name == NULL)
        guard_arm(s); /* not yet (progress moved it): wait on */
    return name;
}

/* ---- what the log shows of a client line ---------------------------------- */

enum smtp_log_view smtp_log_view(const struct smtp_guard *g, enum smtp_state st,
                                 const struct smtp_cmd *cmd, bool valid)
{
    /* By state: an AUTH exchange; the lines a client sends blindly after
     * its AUTH or DATA was refused (passwords, message text). */
    if (st == SMTP_STATE_AUTH_UPSTREAM || st == SMTP_STATE_AUTH_CLIENT ||
        st == SMTP_STATE_DATA || st == SMTP_STATE_BDAT || st == SMTP_STATE_BDAT_DISCARD ||
        g->hide_lines > 0 || g->hide_until_dot)
        return SMTP_LOG_NOTHING;
    /* By content: a line that is no command can be anything (a base64
     * password, " AUTH PLAIN ...", "AUTHPLAIN ...", a header or body line). */
    if (cmd->verb == SMTP_CMD_UNKNOWN)
        return SMTP_LOG_NOTHING;
    if (!valid)
        return SMTP_LOG_VERB;
    switch (cmd->verb) {
    case SMTP_CMD_HELO:
    case SMTP_CMD_EHLO:
    case SMTP_CMD_MAIL:
    case SMTP_CMD_RCPT:
    case SMTP_CMD_BDAT:
    case SMTP_CMD_DATA:
    case SMTP_CMD_RSET:
    case SMTP_CMD_QUIT:
    case SMTP_CMD_STARTTLS:
        return SMTP_LOG_LINE; /* envelope and protocol: nothing secret */
    default:
        return SMTP_LOG_VERB;  /* AUTH, NOOP, VRFY, EXPN, HELP: free text */
    }
}

static bool is_dot_line(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    return len == 1 && line[0] == '.';
}

void smtp_log_client_line(smtp_session *s, const struct smtp_cmd *cmd, bool valid,
                          const char *line, size_t len)
{
    struct smtp_guard *g = &s->guard;
    if (qlog_get_level() >= QLOG_DEBUG) {
        switch (smtp_log_view(g, s->state, cmd, valid)) {
        case SMTP_LOG_LINE: {
            size_t n = len;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
            qlog_debug("smtp %s: <<< %.*s", s->id, (int)(n > 200 ? 200 : n), line);
            break;
        }
        case SMTP_LOG_VERB:
            qlog_debug("smtp %s: <<< %s <redacted>%s", s->id, smtp_verb_name(cmd->verb),
                       valid ? "" : " (invalid)");
            break;
        case SMTP_LOG_NOTHING:
            qlog_debug("smtp %s: <<< <redacted, %zu bytes>", s->id, len);
            break;
        }
    }
    if (g->hide_until_dot && is_dot_line(line, len))
        g->hide_until_dot = false;
    else if (g->hide_lines > 0)
        g->hide_lines--;
}

void smtp_guard_refused(smtp_session *s, enum smtp_verb verb)
{
    if (verb == SMTP_CMD_AUTH)
        s->guard.hide_lines = 2; /* AUTH LOGIN: user name, then password */
    else if (verb == SMTP_CMD_DATA)
        s->guard.hide_until_dot = true;
}
