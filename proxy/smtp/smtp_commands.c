/* The SMTP command table: each command's check (state and syntax,
 * answering the error itself) and proceed step. Policy hooks in between
 * check and proceed for RCPT; MAIL, RCPT and AUTH are relayed live. */
#include "smtp_session_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "log.h"

#define MAX_BAD_COMMANDS 20

struct smtp_command_def {
    enum smtp_verb verb;
    bool (*check)(smtp_session *s, const struct smtp_cmd *cmd);
    void (*proceed)(smtp_session *s, const struct smtp_cmd *cmd);
};

static bool in_transaction(const smtp_session *s)
{
    return s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
           s->state == SMTP_STATE_CHUNKED;
}

static unsigned up_ext(const smtp_session *s)
{
    return s->up ? smtp_client_extensions(s->up) : 0;
}

static bool tls_ok_for_auth(const smtp_session *s)
{
    return !s->cfg.require_tls_for_auth || (s->conn && net_conn_is_tls(s->conn));
}

/* The SASL mechanisms passed through, when upstream offers them. The
 * proxy only relays the lines (it stores and logs no credential), so any
 * line-based mechanism works the same way; these are the ones clients
 * use: PLAIN and LOGIN with a password, XOAUTH2 and OAUTHBEARER (RFC 7628)
 * with an OAuth token (Gmail and Microsoft 365 accept only those). */
static const struct {
    const char *name;
    unsigned ext;
} auth_mechs[] = {
    {"PLAIN", SMTP_EXT_AUTH_PLAIN},
    {"LOGIN", SMTP_EXT_AUTH_LOGIN},
    {"XOAUTH2", SMTP_EXT_AUTH_XOAUTH2},
    {"OAUTHBEARER", SMTP_EXT_AUTH_OAUTHBEARER},
};
#define N_AUTH_MECHS (sizeof(auth_mechs) / sizeof(auth_mechs[0]))

static unsigned auth_mech_mask(void)
{
    unsigned m = 0;
    for (size_t i = 0; i < N_AUTH_MECHS; i++)
        m |= auth_mechs[i].ext;
    return m;
}

static bool auth_offered(const smtp_session *s)
{
    return !s->cfg.gateway && (up_ext(s) & auth_mech_mask());
}

/* Upstream transaction (live MAIL) is dropped with RSET, pipelined. */
static void upstream_rset(smtp_session *s)
{
    if (s->txn_upstream && s->up && smtp_client_ready(s->up))
        smtp_client_command(s->up, "RSET", 0, NULL, NULL);
    s->txn_upstream = false;
}

/* Relays an upstream reply to the client faithfully (code, enhanced code,
 * text). Transport failures close the session. Returns true for 2xx/3xx. */
static bool relay_reply(smtp_session *s, const struct smtp_client_reply *r)
{
    if (r->transport) {
        smtp_reply_code(s, 421, "4.4.2", "Upstream connection lost, closing");
        smtp_session_schedule_close(s, true);
        return false;
    }
    smtp_reply_code(s, r->code, r->enh, r->text);
    return r->code < 400;
}

/* ---- HELO / EHLO ---------------------------------------------------------- */

static bool check_helo(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)s;
    (void)cmd;
    return true; /* (during an AUTH exchange every line is AUTH data) */
}

static void proceed_helo(smtp_session *s, const struct smtp_cmd *cmd)
{
    upstream_rset(s);
    smtp_txn_reset(s);
    free(s->helo);
    s->helo = strndup(cmd->arg, cmd->arg_len < 255 ? cmd->arg_len : 255);
    s->esmtp = cmd->verb == SMTP_CMD_EHLO;
    smtp_enter_state(s, SMTP_STATE_READY);
    if (!s->esmtp) {
        smtp_reply(s, "250 2.0.0 %s", s->hostname);
        return;
    }
    unsigned ext = up_ext(s);
    char text[1024];
    size_t n = 0;
#define ADD(...) n += (size_t)snprintf(text + n, sizeof(text) - n, __VA_ARGS__)
    ADD("%s greets %.*s", s->hostname, (int)(cmd->arg_len < 64 ? cmd->arg_len : 64), cmd->arg);
    ADD("\nPIPELINING");
    ADD("\nSIZE %llu", (unsigned long long)smtp_advertised_size(s));
    if (ext & SMTP_EXT_8BITMIME)
        ADD("\n8BITMIME");
    if (ext & SMTP_EXT_SMTPUTF8)
        ADD("\nSMTPUTF8");
    ADD("\nENHANCEDSTATUSCODES");
    if (ext & SMTP_EXT_DSN)
        ADD("\nDSN");
    ADD("\nCHUNKING");
    if (s->cfg.tls_ctx && s->conn && !net_conn_is_tls(s->conn))
        ADD("\nSTARTTLS");
    if (auth_offered(s) && tls_ok_for_auth(s) && !s->authenticated) {
        ADD("\nAUTH");
        for (size_t i = 0; i < N_AUTH_MECHS; i++)
            if (ext & auth_mechs[i].ext)
                ADD(" %s", auth_mechs[i].name);
    }
#undef ADD
    /* EHLO's reply lines carry no enhanced code (RFC 2034 3). */
    smtp_reply_code(s, 250, NULL, text);
}

/* ---- STARTTLS ------------------------------------------------------------- */

static bool check_starttls(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (!s->cfg.tls_ctx || (s->conn && net_conn_is_tls(s->conn))) {
        smtp_reply(s, "502 5.5.1 STARTTLS not available");
        return false;
    }
    if (in_transaction(s)) {
        smtp_reply(s, "503 5.5.1 STARTTLS not allowed in a transaction");
        return false;
    }
    return true;
}

static void proceed_starttls(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    smtp_enter_state(s, SMTP_STATE_TLS);
    s->authenticated = false;
    s->auth_user[0] = s->auth_authzid[0] = '\0';
    if (net_conn_start_tls(s->conn, s->cfg.tls_ctx, NULL) < 0)
        smtp_session_schedule_close(s, false);
    else
        smtp_phase_start(s, SMTP_PHASE_TLS);
}

/* ---- AUTH (relayed) ------------------------------------------------------- */

static void auth_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    smtp_session *s = arg;
    (void)c;
    if (r->cancelled)
        return;
    smtp_session_enter(s);
    if (r->transport) {
        relay_reply(s, r);
    } else if (r->code == 334) {
        /* Challenge: passed on; the client's answer is relayed next. */
        smtp_reply_code(s, 334, NULL, r->text);
        smtp_enter_state(s, SMTP_STATE_AUTH_CLIENT);
    } else {
        smtp_phase_end(s, SMTP_PHASE_AUTH);
        smtp_enter_state(s, SMTP_STATE_READY);
        if (r->code != 235)
            smtp_guard_refused(s, SMTP_CMD_AUTH);
        /* The identity the client gave counts only now, upstream having
         * accepted it. */
        smtp_authid_end(&s->authid, r->code, s->auth_user, s->auth_authzid);
        if (r->code == 235) {
            s->authenticated = true;
            qlog_info("smtp %s: authenticated by upstream%s%s%s%s", s->id,
                      s->auth_user[0] ? " user=" : "", s->auth_user,
                      s->auth_authzid[0] ? " authzid=" : "", s->auth_authzid);
        } else {
            qlog_info("smtp %s: authentication refused by upstream: %d %s", s->id,
                      r->code, r->enh);
        }
        relay_reply(s, r);
    }
    smtp_session_leave(s);
}

static bool check_auth(smtp_session *s, const struct smtp_cmd *cmd)
{
    if (!auth_offered(s)) {
        smtp_reply(s, "502 5.5.1 AUTH not available");
        return false;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply(s, s->state == SMTP_STATE_HELO ? "503 5.5.1 Send EHLO first"
                                                  : "503 5.5.1 AUTH not allowed now");
        return false;
    }
    if (s->authenticated) {
        smtp_reply(s, "503 5.5.1 Already authenticated");
        return false;
    }
    if (!tls_ok_for_auth(s)) {
        smtp_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return false;
    }
    size_t m = 0;
    while (m < cmd->arg_len && cmd->arg[m] != ' ')
        m++;
    unsigned ext = up_ext(s);
    bool known = false;
    for (size_t i = 0; i < N_AUTH_MECHS && !known; i++)
        known = m == strlen(auth_mechs[i].name) &&
                strncasecmp(cmd->arg, auth_mechs[i].name, m) == 0 && (ext & auth_mechs[i].ext);
    if (!known) {
        smtp_reply(s, "504 5.5.4 Unrecognized authentication type");
        return false;
    }
    return smtp_upstream_usable(s);
}

static void relay_auth_line(smtp_session *s, const char *line)
{
    smtp_enter_state(s, SMTP_STATE_AUTH_UPSTREAM);
    if (smtp_client_command(s->up, line, SMTP_CLIENT_SECRET, auth_reply, s) < 0) {
        smtp_reply(s, "421 4.4.2 Upstream connection lost, closing");
        smtp_session_schedule_close(s, true);
    }
}

static void proceed_auth(smtp_session *s, const struct smtp_cmd *cmd)
{
    size_t n = cmd->arg_len + 6;
    char *line = malloc(n);
    if (!line) {
        smtp_reply(s, "454 4.3.0 Insufficient system resources");
        return;
    }
    snprintf(line, n, "AUTH %.*s", (int)cmd->arg_len, cmd->arg);
    smtp_authid_begin(&s->authid, cmd->arg, cmd->arg_len);
    smtp_phase_start(s, SMTP_PHASE_AUTH);
    relay_auth_line(s, line);
    OPENSSL_cleanse(line, n);
    free(line);
}

/* ---- MAIL ------------------------------------------------------------------ */

static void mail_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    smtp_session *s = arg;
    (void)c;
    if (r->cancelled)
        return;
    smtp_session_enter(s);
    if (relay_reply(s, r)) {
        s->txn_upstream = true;
        smtp_enter_state(s, SMTP_STATE_MAIL);
    } else {
        smtp_txn_reset(s);
        smtp_enter_state(s, SMTP_STATE_READY);
    }
    smtp_session_leave(s);
}

static bool check_mail(smtp_session *s, const struct smtp_cmd *cmd)
{
    if (s->state == SMTP_STATE_HELO) {
        smtp_reply(s, "503 5.5.1 Send EHLO first");
        return false;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply(s, "503 5.5.1 Nested MAIL command");
        return false;
    }
    if (s->cfg.gateway && !s->cfg.trusted) {
        smtp_reply(s, "554 5.7.1 Relay access denied: %s is not a trusted network", s->peer);
        return false;
    }
    if (!s->cfg.gateway && !s->authenticated && !s->cfg.trusted) {
        smtp_reply(s, "530 5.7.0 Authentication required");
        return false;
    }
    if (cmd->has_size && cmd->size > smtp_advertised_size(s)) {
        smtp_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return false;
    }
    if (cmd->smtputf8 && !(up_ext(s) & SMTP_EXT_SMTPUTF8)) {
        smtp_reply(s, "555 5.5.4 SMTPUTF8 not supported");
        return false;
    }
    if (cmd->body == SMTP_BODY_8BITMIME && !(up_ext(s) & SMTP_EXT_8BITMIME)) {
        smtp_reply(s, "555 5.5.4 8BITMIME not supported");
        return false;
    }
    if (cmd->dsn[0] && !(up_ext(s) & SMTP_EXT_DSN)) {
        smtp_reply(s, "555 5.5.4 DSN not supported");
        return false;
    }
    return smtp_upstream_usable(s);
}

static void proceed_mail(smtp_session *s, const struct smtp_cmd *cmd)
{
    smtp_txn_reset(s);
    s->from = strdup(cmd->path);
    s->smtputf8 = cmd->smtputf8;
    size_t n = 0;
    if (cmd->body == SMTP_BODY_8BITMIME)
        n += (size_t)snprintf(s->mail_params + n, sizeof(s->mail_params) - n, " BODY=8BITMIME");
    else if (cmd->body == SMTP_BODY_7BIT)
        n += (size_t)snprintf(s->mail_params + n, sizeof(s->mail_params) - n, " BODY=7BIT");
    if (cmd->smtputf8)
        n += (size_t)snprintf(s->mail_params + n, sizeof(s->mail_params) - n, " SMTPUTF8");
    if (cmd->dsn[0])
        snprintf(s->mail_params + n, sizeof(s->mail_params) - n, " %s", cmd->dsn);
    unsigned char r[6];
    if (RAND_bytes(r, sizeof(r)) != 1)
        memset(r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(s->msg_id + 2 * i, 3, "%02X", r[i]);
    char line[SMTP_PATH_MAX + sizeof(s->mail_params) + 64];
    if (cmd->has_size)
        snprintf(line, sizeof(line), "MAIL FROM:<%s> SIZE=%llu%s", cmd->path,
                 (unsigned long long)cmd->size + cmd->size / 19 * 7 + 65536, s->mail_params);
    else
        snprintf(line, sizeof(line), "MAIL FROM:<%s>%s", cmd->path, s->mail_params);
    smtp_enter_state(s, SMTP_STATE_MAIL_UPSTREAM);
    if (smtp_client_command(s->up, line, 0, mail_reply, s) < 0) {
        smtp_reply(s, "421 4.4.2 Upstream connection lost, closing");
        smtp_session_schedule_close(s, true);
    }
}

/* ---- RCPT ------------------------------------------------------------------ */

struct rcpt_pending {
    smtp_session *s;
    struct smtp_rcpt rcpt;
};

static void rcpt_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    struct rcpt_pending *p = arg;
    smtp_session *s = p->s;
    (void)c;
    if (r->cancelled) {
        free(p->rcpt.addr);
        free(p->rcpt.dsn);
        if (p->rcpt.data && s->hooks.rcpt_free)
            s->hooks.rcpt_free(s->hooks_ctx, p->rcpt.data);
        free(p);
        return;
    }
    smtp_session_enter(s);
    if (relay_reply(s, r)) {
        s->rcpts[s->n_rcpts++] = p->rcpt;
    } else {
        free(p->rcpt.addr);
        free(p->rcpt.dsn);
        if (p->rcpt.data && s->hooks.rcpt_free)
            s->hooks.rcpt_free(s->hooks_ctx, p->rcpt.data);
    }
    free(p);
    smtp_enter_state(s, s->n_rcpts > 0 ? SMTP_STATE_RCPT : SMTP_STATE_MAIL);
    smtp_session_leave(s);
}

static bool check_rcpt(smtp_session *s, const struct smtp_cmd *cmd)
{
    if (!in_transaction(s)) {
        smtp_reply(s, "503 5.5.1 Need MAIL command first");
        return false;
    }
    if (s->state == SMTP_STATE_CHUNKED) {
        smtp_reply(s, "503 5.5.1 RCPT not allowed after BDAT");
        return false;
    }
    if (s->n_rcpts >= s->cfg.max_recipients) {
        smtp_reply(s, "452 4.5.3 Too many recipients");
        return false;
    }
    if (cmd->path_utf8 && !s->smtputf8) {
        smtp_reply(s, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
        return false;
    }
    if (cmd->dsn[0] && !(up_ext(s) & SMTP_EXT_DSN)) {
        smtp_reply(s, "555 5.5.4 DSN not supported");
        return false;
    }
    return smtp_upstream_usable(s);
}

static void proceed_rcpt(smtp_session *s, const struct smtp_cmd *cmd)
{
    /* Policy between check and proceed: a refusal is told here. */
    struct smtp_rcpt_verdict v;
    memset(&v, 0, sizeof(v));
    s->hooks.rcpt(s->hooks_ctx, s, cmd->path, &v);
    if (!v.accept) {
        qlog_info("smtp %s: recipient refused by policy: %d %s %s", s->id, v.code, v.enh, v.text);
        smtp_reply_code(s, v.code ? v.code : 550, v.enh[0] ? v.enh : "5.7.1",
                        v.text[0] ? v.text : "Recipient refused by policy");
        return;
    }
    if (s->n_rcpts == s->cap_rcpts) {
        size_t cap = s->cap_rcpts ? s->cap_rcpts * 2 : 8;
        struct smtp_rcpt *grown = realloc(s->rcpts, cap * sizeof(*grown));
        if (!grown)
            goto nomem;
        s->rcpts = grown;
        s->cap_rcpts = cap;
    }
    struct rcpt_pending *p = calloc(1, sizeof(*p));
    if (!p)
        goto nomem;
    p->s = s;
    p->rcpt.addr = strdup(cmd->path);
    p->rcpt.dsn = cmd->dsn[0] ? strdup(cmd->dsn) : NULL;
    p->rcpt.data = v.data;
    char line[SMTP_PATH_MAX + SMTP_PARAM_MAX + 16];
    snprintf(line, sizeof(line), "RCPT TO:<%s>%s%s", cmd->path, cmd->dsn[0] ? " " : "",
             cmd->dsn);
    smtp_enter_state(s, SMTP_STATE_RCPT_UPSTREAM);
    if (smtp_client_command(s->up, line, 0, rcpt_reply, p) < 0) {
        free(p->rcpt.addr);
        free(p->rcpt.dsn);
        free(p);
        if (v.data && s->hooks.rcpt_free)
            s->hooks.rcpt_free(s->hooks_ctx, v.data);
        smtp_reply(s, "421 4.4.2 Upstream connection lost, closing");
        smtp_session_schedule_close(s, true);
    }
    return;
nomem:
    if (v.data && s->hooks.rcpt_free)
        s->hooks.rcpt_free(s->hooks_ctx, v.data);
    smtp_reply(s, "452 4.3.0 Insufficient system resources");
}

/* ---- DATA / BDAT ------------------------------------------------------------ */

/* No file for the message (smtp_body_begin logged why). */
static const char SPOOL_FAILED[] = "451 4.3.0 Local error: cannot store the message";

static bool check_data(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (s->state == SMTP_STATE_MAIL) {
        smtp_reply(s, "554 5.5.1 No valid recipients");
        return false;
    }
    if (s->state == SMTP_STATE_CHUNKED) {
        smtp_reply(s, "503 5.5.1 DATA not allowed after BDAT");
        return false;
    }
    if (s->state != SMTP_STATE_RCPT) {
        smtp_reply(s, "503 5.5.1 Need RCPT command first");
        return false;
    }
    return true;
}

static void proceed_data(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (smtp_body_begin(s) < 0) {
        smtp_reply(s, "%s", SPOOL_FAILED);
        return; /* still RCPT: the client may try DATA again */
    }
    smtp_phase_start(s, SMTP_PHASE_DATA);
    smtp_enter_state(s, SMTP_STATE_DATA);
    smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* BDAT always consumes its chunk, even when refused (RFC 3030 2). */
static bool check_bdat(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    const char *err = NULL;
    if (s->state == SMTP_STATE_MAIL)
        err = "554 5.5.1 No valid recipients";
    else if (s->state != SMTP_STATE_RCPT && s->state != SMTP_STATE_CHUNKED)
        err = "503 5.5.1 Need RCPT command first";
    s->discard_reply = err;
    return true;
}

static void proceed_bdat(smtp_session *s, const struct smtp_cmd *cmd)
{
    s->chunk_left = cmd->chunk_size;
    s->chunk_last = cmd->last;
    net_conn_set_timeout(s->conn, s->cfg.data_timeout_ms);
    smtp_phase_start(s, SMTP_PHASE_DATA);
    /* The first chunk starts the body; without a spool file the chunk is
     * consumed and refused (RFC 3030 2), the transaction stays. */
    if (!s->discard_reply && s->state == SMTP_STATE_RCPT && smtp_body_begin(s) < 0)
        s->discard_reply = SPOOL_FAILED;
    if (s->discard_reply) {
        s->resume = s->state;
        smtp_enter_state(s, SMTP_STATE_BDAT_DISCARD);
        return;
    }
    smtp_enter_state(s, SMTP_STATE_BDAT);
}

/* The current chunk was read in full. */
void smtp_bdat_chunk_done(smtp_session *s)
{
    smtp_phase_end(s, SMTP_PHASE_DATA);
    net_conn_set_timeout(s->conn, s->cfg.command_timeout_ms);
    if (s->state == SMTP_STATE_BDAT_DISCARD) {
        const char *reply = s->discard_reply;
        s->discard_reply = NULL;
        smtp_enter_state(s, s->resume);
        smtp_reply(s, "%s", reply);
        return;
    }
    if (s->chunk_last) {
        smtp_body_end(s);
        return;
    }
    smtp_enter_state(s, SMTP_STATE_CHUNKED);
    smtp_reply(s, "250 2.0.0 Chunk received");
}

/* ---- the rest ---------------------------------------------------------------- */

static bool check_any(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)s;
    (void)cmd;
    return true;
}

static void proceed_rset(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    upstream_rset(s);
    smtp_txn_reset(s);
    if (s->state != SMTP_STATE_HELO)
        smtp_enter_state(s, SMTP_STATE_READY);
    smtp_reply(s, "250 2.0.0 Ok");
}

static void proceed_noop(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "250 2.0.0 Ok");
}

static void proceed_quit(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "221 2.0.0 Bye");
    smtp_session_schedule_close(s, true);
}

static void proceed_vrfy(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message");
}

static void proceed_expn(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "502 5.5.1 EXPN not available");
}

static void proceed_help(smtp_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    smtp_reply(s, "214 2.0.0 qumail: see https://www.rfc-editor.org/rfc/rfc5321");
}

static const struct smtp_command_def commands[] = {
    {SMTP_CMD_HELO, check_helo, proceed_helo},
    {SMTP_CMD_EHLO, check_helo, proceed_helo},
    {SMTP_CMD_STARTTLS, check_starttls, proceed_starttls},
    {SMTP_CMD_AUTH, check_auth, proceed_auth},
    {SMTP_CMD_MAIL, check_mail, proceed_mail},
    {SMTP_CMD_RCPT, check_rcpt, proceed_rcpt},
    {SMTP_CMD_DATA, check_data, proceed_data},
    {SMTP_CMD_BDAT, check_bdat, proceed_bdat},
    {SMTP_CMD_RSET, check_any, proceed_rset},
    {SMTP_CMD_NOOP, check_any, proceed_noop},
    {SMTP_CMD_QUIT, check_any, proceed_quit},
    {SMTP_CMD_VRFY, check_any, proceed_vrfy},
    {SMTP_CMD_EXPN, check_any, proceed_expn},
    {SMTP_CMD_HELP, check_any, proceed_help},
};

static void bad_command(smtp_session *s)
{
    if (++s->bad_commands >= MAX_BAD_COMMANDS) {
        smtp_reply(s, "421 4.7.0 %s Too many errors, closing", s->hostname);
        smtp_session_schedule_close(s, true);
    }
}

void smtp_command(smtp_session *s, char *line, size_t len)
{
    if (s->state == SMTP_STATE_AUTH_CLIENT) {
        /* A continuation line of the AUTH exchange: relayed, never logged. */
        /* line is the session's own buffer: cut the line end in place. */
        char *copy = line;
        size_t n = len;
        while (n > 0 && (copy[n - 1] == '\n' || copy[n - 1] == '\r'))
            n--;
        copy[n] = '\0';
        qlog_debug("smtp %s: <<< <redacted, %zu bytes>", s->id, len);
        smtp_authid_response(&s->authid, copy, n);
        relay_auth_line(s, copy);
        return;
    }
    struct smtp_cmd cmd;
    const char *err = NULL;
    bool valid = smtp_cmd_parse(line, len, &cmd, &err) == 0;
    smtp_log_client_line(s, &cmd, valid, line, len);
    if (!valid) {
        if (cmd.verb == SMTP_CMD_AUTH || cmd.verb == SMTP_CMD_DATA)
            smtp_guard_refused(s, cmd.verb);
        /* A malformed BDAT cannot be resynchronised. */
        smtp_reply(s, "%s", err);
        if (cmd.verb == SMTP_CMD_BDAT) {
            smtp_session_schedule_close(s, true);
            return;
        }
        bad_command(s);
        return;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i].verb != cmd.verb)
            continue;
        if (commands[i].check(s, &cmd)) {
            commands[i].proceed(s, &cmd);
        } else {
            smtp_guard_refused(s, cmd.verb);
            bad_command(s);
        }
        return;
    }
    smtp_reply(s, "500 5.5.2 Command unrecognized");
    bad_command(s);
}
