/* The IMAP command table: per command its flags, a check (policy over the
 * parsed command; answers refusals itself), a proceed step (relay or
 * answer) and a done step (effects of the tagged response: login, mailbox
 * selected, IDLE over, FETCH hook told). Hooks sit between check and
 * proceed (FETCH). */
#include "imap_session_internal.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* ---- helpers ---------------------------------------------------------------- */

static struct imap_command *relay_new(imap_session *s, const struct imap_command_def *def)
{
    if (!s->up) {
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        return NULL;
    }
    struct imap_command *c = imap_command_new(s, def);
    if (!c) {
        imap_bye_close(s, "Out of memory.", "out of memory");
        return NULL;
    }
    c->up = imap_client_cmd_new(s->up, s->rd.tag, s->rd.tag_len, imap_command_cb, c);
    if (!c->up) {
        imap_command_free(s, c);
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        return NULL;
    }
    return c;
}

static struct imap_command *relay_raw(imap_session *s)
{
    struct imap_command *c = relay_new(s, s->rd.def);
    if (c)
        imap_forward_raw(s, c, s->rd.buf, s->rd.len, s->rd.lits, s->rd.n_lits);
    return c;
}

static void proceed_relay(imap_session *s, const struct imap_args *args, size_t first)
{
    (void)args;
    (void)first;
    relay_raw(s);
}

static bool client_tls(const imap_session *s)
{
    return s->conn && net_conn_is_tls(s->conn);
}

static bool logins_disabled(const imap_session *s)
{
    return s->cfg.require_tls_for_auth && !client_tls(s);
}

/* ---- LOGIN / AUTHENTICATE ------------------------------------------------------ */

static bool check_login(imap_session *s, const struct imap_args *a, size_t first)
{
    if (logins_disabled(s)) {
        imap_tagged(s, "BAD", "[ALERT] Plaintext authentication not allowed without SSL/TLS, "
                              "but your client did it anyway. If anyone was listening, the "
                              "password was exposed.");
        return false;
    }
    char user[256];
    const char *err;
    if (imap_login_parse(a->args + first, a->count - first, user, sizeof(user), &err) < 0) {
        imap_tagged(s, "BAD", "Error in IMAP command LOGIN: %s", err);
        return false;
    }
    return true;
}

static void proceed_login(imap_session *s, const struct imap_args *a, size_t first)
{
    char user[256];
    const char *err;
    imap_login_parse(a->args + first, a->count - first, user, sizeof(user), &err);
    struct imap_command *c = relay_raw(s);
    OPENSSL_cleanse(s->rd.buf, s->rd.len); /* the password */
    if (!c)
        return;
    snprintf(c->user, sizeof(c->user), "%s", user);
    snprintf(c->mech, sizeof(c->mech), "LOGIN");
    OPENSSL_cleanse(user, sizeof(user));
    qlog_debug("imap %s: <<< %s LOGIN %s <redacted>", s->id, s->rd.tag, c->user);
    imap_enter_state(s, IMAP_STATE_AUTH_WAIT);
}

static bool check_authenticate(imap_session *s, const struct imap_args *a, size_t first)
{
    char mech[32];
    const struct imap_arg *ir;
    const char *err;
    if (imap_authenticate_parse(a->args + first, a->count - first, mech, sizeof(mech), &ir,
                                &err) < 0) {
        imap_tagged(s, "BAD", "Error in IMAP command AUTHENTICATE: %s", err);
        return false;
    }
    char cap[48];
    snprintf(cap, sizeof(cap), "AUTH=%s", mech);
    if (!imap_cap_sasl_allowed(mech) || !imap_client_has_cap(s->up, cap)) {
        imap_tagged(s, "NO", "Unsupported authentication mechanism.");
        return false;
    }
    if (logins_disabled(s)) {
        imap_tagged(s, "NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed on "
                             "non-secure (SSL/TLS) connections.");
        return false;
    }
    return true;
}

static void proceed_authenticate(imap_session *s, const struct imap_args *a, size_t first)
{
    char mech[32];
    const struct imap_arg *ir;
    const char *err;
    imap_authenticate_parse(a->args + first, a->count - first, mech, sizeof(mech), &ir, &err);
    char user[256] = "";
    if (ir && !(ir->len == 1 && ir->str[0] == '='))
        imap_sasl_user(mech, ir->str, ir->len, user, sizeof(user));
    struct imap_command *c = relay_raw(s);
    OPENSSL_cleanse(s->rd.buf, s->rd.len);
    if (!c)
        return;
    snprintf(c->mech, sizeof(c->mech), "%s", mech);
    snprintf(c->user, sizeof(c->user), "%s", user);
    c->auth_first_line = ir == NULL;
    OPENSSL_cleanse(user, sizeof(user));
    imap_client_expect(s->up, c->up, IMAP_CONT_RELAY);
    qlog_debug("imap %s: <<< %s AUTHENTICATE %s <redacted>", s->id, s->rd.tag, mech);
    imap_enter_state(s, IMAP_STATE_AUTH_WAIT);
}

/* The upstream's capabilities after login, when its OK did not list them. */
static void caps_done(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)c;
    (void)ev;
    imap_enter_state(s, imap_idle_state(s));
}

static const struct imap_command_def caps_internal = {IMAP_CMD_CAPABILITY, 0, NULL, NULL,
                                                      caps_done};

static void done_auth(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    if (ev->status != IMAP_STATUS_OK) {
        qlog_info("imap %s: login failed user=%s method=%s from=%s", s->id,
                  c->user[0] ? c->user : "-", c->mech, s->peer);
        imap_enter_state(s, IMAP_STATE_NOT_AUTH);
        return;
    }
    imap_login_done(s, c->user, c->mech);
    const char *code, *args;
    size_t cl, al;
    bool has_caps = imap_resp_code(ev->text, ev->text_len, &code, &cl, &args, &al) &&
                    cl == 10 && strncasecmp(code, "CAPABILITY", 10) == 0;
    if (!has_caps && s->up) {
        /* learn what the upstream offers after login (LITERAL+, ...) */
        struct imap_command *ic = imap_command_new(s, &caps_internal);
        char tag[32];
        imap_client_new_tag(s->up, tag, sizeof(tag));
        if (ic) {
            ic->internal = true;
            ic->up = imap_client_cmd_new(s->up, tag, strlen(tag), imap_command_cb, ic);
            if (ic->up) {
                char line[64];
                int n = snprintf(line, sizeof(line), "%s CAPABILITY\r\n", tag);
                imap_client_send(s->up, ic->up, line, (size_t)n);
                imap_enter_state(s, IMAP_STATE_AUTH_WAIT);
            } else {
                imap_command_free(s, ic);
            }
        }
    }
}

/* ---- STARTTLS, LOGOUT, CAPABILITY, ID, ENABLE -------------------------------------- */

static bool check_starttls(imap_session *s, const struct imap_args *a, size_t first)
{
    (void)a;
    (void)first;
    if (!s->cfg.tls_ctx) {
        imap_tagged(s, "BAD", "TLS support isn't enabled.");
        return false;
    }
    if (client_tls(s)) {
        imap_tagged(s, "BAD", "TLS is already active.");
        return false;
    }
    return true;
}

static void proceed_starttls(imap_session *s, const struct imap_args *a, size_t first)
{
    (void)a;
    (void)first;
    imap_tagged(s, "OK", "Begin TLS negotiation now.");
    imap_enter_state(s, IMAP_STATE_TLS);
    if (net_conn_start_tls(s->conn, s->cfg.tls_ctx, NULL) < 0)
        imap_schedule_close(s, false, "TLS failed");
}

static void proceed_logout(imap_session *s, const struct imap_args *a, size_t first)
{
    (void)a;
    (void)first;
    if (relay_raw(s))
        imap_enter_state(s, IMAP_STATE_LOGOUT);
}

static void done_logout(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)c;
    (void)ev;
    if (!s->outcome[0])
        snprintf(s->outcome, sizeof(s->outcome), "logout");
}

/* Keys a client must not set: the upstream may trust the proxy's word on
 * them (Dovecot's login_trusted_networks). */
static bool id_key_forbidden(const struct imap_arg *k)
{
    static const char *const prefixes[] = {"x-originating-", "x-connected-", "x-session-",
                                           "x-proxy-", "x-forward-"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t pl = strlen(prefixes[i]);
        if (k->len >= pl && strncasecmp(k->str, prefixes[i], pl) == 0)
            return true;
    }
    return false;
}

struct id_build {
    char *buf;
    size_t len, cap;
    bool oom;
    unsigned pairs;
};

static void idb_add(struct id_build *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 512;
        while (cap < b->len + n)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void id_pair(void *ctx, const struct imap_arg *k, const struct imap_arg *v)
{
    struct id_build *b = ctx;
    if (id_key_forbidden(k))
        return;
    size_t need = 2 * (k->len + (v ? v->len : 0)) + 16;
    char *q = malloc(need);
    if (!q) {
        b->oom = true;
        return;
    }
    size_t kl = imap_quote(q, need, k->str, k->len);
    if (kl == 0) {
        free(q);
        return;
    }
    char *qv = q + kl + 1;
    size_t vl = v ? imap_quote(qv, need - kl - 1, v->str, v->len) : 0;
    if (v && vl == 0) {
        free(q);
        return; /* not quotable: left out */
    }
    idb_add(b, b->pairs ? " " : "", b->pairs ? 1 : 0);
    idb_add(b, q, kl);
    idb_add(b, " ", 1);
    if (v)
        idb_add(b, qv, vl);
    else
        idb_add(b, "NIL", 3);
    b->pairs++;
    free(q);
}

static bool check_id(imap_session *s, const struct imap_args *a, size_t first)
{
    struct id_build b = {0};
    const char *err;
    int rc = imap_id_parse(a->args + first, a->count - first, id_pair, &b, &err);
    free(b.buf);
    if (rc < 0) {
        imap_tagged(s, "BAD", "Error in IMAP command ID: %s", err);
        return false;
    }
    return true;
}

static void proceed_id(imap_session *s, const struct imap_args *a, size_t first)
{
    if (a->args[first].type == IMAP_ARG_NIL) {
        relay_raw(s);
        return;
    }
    struct id_build b = {0};
    const char *err;
    idb_add(&b, s->rd.tag, s->rd.tag_len);
    idb_add(&b, " ID (", 5);
    imap_id_parse(a->args + first, a->count - first, id_pair, &b, &err);
    idb_add(&b, ")\r\n", 3);
    if (b.oom) {
        free(b.buf);
        imap_bye_close(s, "Out of memory.", "out of memory");
        return;
    }
    struct imap_command *c = relay_new(s, s->rd.def);
    if (c)
        imap_client_send(s->up, c->up, b.buf, b.len);
    free(b.buf);
}

static void proceed_enable(imap_session *s, const struct imap_args *a, size_t first)
{
    char line[1024];
    size_t n = (size_t)snprintf(line, sizeof(line), "%s ENABLE", s->rd.tag);
    unsigned kept = 0;
    for (size_t i = first; i < a->count; i++) {
        const struct imap_arg *x = &a->args[i];
        if (x->type != IMAP_ARG_ATOM || !imap_cap_enable_allowed(x->str, x->len))
            continue;
        if (n + x->len + 4 >= sizeof(line))
            break;
        line[n++] = ' ';
        memcpy(line + n, x->str, x->len);
        n += x->len;
        kept++;
    }
    if (kept == 0) {
        /* nothing the proxy lets through: answered here, as a server
         * answers an ENABLE of things it does not know */
        imap_reply(s, "* ENABLED");
        imap_tagged(s, "OK", "Enabled.");
        return;
    }
    n += (size_t)snprintf(line + n, sizeof(line) - n, "\r\n");
    struct imap_command *c = relay_new(s, s->rd.def);
    if (c)
        imap_client_send(s->up, c->up, line, n);
}

static bool check_enable(imap_session *s, const struct imap_args *a, size_t first)
{
    if (first >= a->count) {
        imap_tagged(s, "BAD", "Error in IMAP command ENABLE: Missing parameters");
        return false;
    }
    return true;
}

/* ---- mailbox state, IDLE ---------------------------------------------------------------- */

static void done_select(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)c;
    /* a failed SELECT leaves no mailbox selected (RFC 3501 6.3.1) */
    s->selected = ev->status == IMAP_STATUS_OK;
    if (s->state == IMAP_STATE_AUTHENTICATED || s->state == IMAP_STATE_SELECTED)
        imap_enter_state(s, imap_idle_state(s));
}

static void done_close(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)c;
    if (ev->status == IMAP_STATUS_OK)
        s->selected = false;
    if (s->state == IMAP_STATE_AUTHENTICATED || s->state == IMAP_STATE_SELECTED)
        imap_enter_state(s, imap_idle_state(s));
}

static void proceed_idle(imap_session *s, const struct imap_args *a, size_t first)
{
    (void)a;
    (void)first;
    struct imap_command *c = relay_raw(s);
    if (!c)
        return;
    imap_client_expect(s->up, c->up, IMAP_CONT_RELAY);
    imap_client_set_idling(s->up, true);
    imap_enter_state(s, IMAP_STATE_IDLE);
}

static void done_idle(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)c;
    (void)ev;
    if (s->up)
        imap_client_set_idling(s->up, false);
    if (s->state == IMAP_STATE_IDLE) /* ended without DONE (refused) */
        imap_enter_state(s, imap_idle_state(s));
}

/* ---- APPEND (streamed) ------------------------------------------------------------------- */

static void done_append(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    (void)ev;
    const struct imap_command *ended = c;
    if (s->append != ended)
        return;
    /* The upstream ended the APPEND while the client is still in it. */
    s->append = NULL;
    if (s->state == IMAP_STATE_APPEND_WAIT && s->append_wait == IMAP_CONT_RELAY) {
        /* the client waits for a "+" that will not come: line over */
        imap_parser_reset(s->cp);
        imap_rd_reset(s);
        imap_enter_state(s, imap_idle_state(s));
    } else if (s->state == IMAP_STATE_APPEND_WAIT) {
        /* data the upstream never agreed to take: dropped here */
        imap_enter_state(s, IMAP_STATE_DISCARD);
    }
    /* else streaming a non-synchronizing literal the upstream has agreed
     * to (LITERAL+): it reads the rest of the command and drops it, so the
     * rest still goes to it (state APPEND, no command any more) */
}

static const struct imap_command_def *append_def(void);

/* A literal header of an APPEND: the first one starts relaying the
 * command, each one decides how its data goes upstream. */
void imap_append_literal(imap_session *s, bool first, const struct imap_token *tok,
                         const char *raw, size_t raw_len)
{
    if (first) {
        const char *refusal = NULL;
        if (!s->authenticated)
            refusal = "Error in IMAP command received by server.";
        else if (tok->literal8)
            refusal = "Error in IMAP command APPEND: literal8 not allowed here";
        if (refusal) {
            s->commands++;
            imap_tagged(s, "BAD", "%s", refusal);
            if (tok->literal_nonsync) {
                imap_rd_reset(s);
                imap_enter_state(s, IMAP_STATE_DISCARD);
            } else {
                imap_parser_reset(s->cp);
                imap_rd_reset(s);
            }
            imap_count_bad(s);
            return;
        }
        s->commands++;
        if (imap_append_hold_begin(s, tok)) /* a protected mailbox */
            return;
        struct imap_command *c = relay_new(s, append_def());
        if (!c)
            return;
        s->append = c;
        size_t hdr_off = s->rd.len - tok->len;
        imap_client_send(s->up, c->up, s->rd.buf, hdr_off);
        qlog_debug("imap %s: <<< %s APPEND", s->id, s->rd.tag);
    } else {
        if (tok->literal8) {
            imap_bye_close(s, "literal8 not allowed here", "bad APPEND");
            return;
        }
        /* the spaces before the header */
        imap_client_send(s->up, s->append ? s->append->up : NULL, raw, raw_len - tok->len);
        if (!s->append) {
            /* answered already: the upstream drops the rest of the line */
            imap_client_send(s->up, NULL, tok->str, tok->len);
            if (!tok->literal_nonsync) {
                /* no "+" will come, so no data: the line has ended */
                imap_parser_reset(s->cp);
                imap_rd_reset(s);
                imap_enter_state(s, imap_idle_state(s));
            }
            return;
        }
    }
    struct imap_command *c = s->append;
    char hdr[48];
    bool nonsync = tok->literal_nonsync && imap_upstream_nonsync_ok(s, tok->literal_size);
    int n = snprintf(hdr, sizeof(hdr), "{%llu%s}\r\n", (unsigned long long)tok->literal_size,
                     nonsync ? "+" : "");
    imap_client_send(s->up, c->up, hdr, (size_t)n);
    if (nonsync) {
        imap_enter_state(s, IMAP_STATE_APPEND);
    } else {
        /* RELAY: the client waits for the upstream's own "+";
         * RESUME: it sends anyway (non-synchronizing) and waits here */
        s->append_wait = tok->literal_nonsync ? IMAP_CONT_RESUME : IMAP_CONT_RELAY;
        imap_client_expect(s->up, c->up, s->append_wait);
        imap_enter_state(s, IMAP_STATE_APPEND_WAIT);
    }
}

/* ---- FETCH --------------------------------------------------------------------------------- */

static bool fetch_item_refused(const struct imap_fetch_item *it)
{
    switch (it->att) {
    case IMAP_FA_BINARY:      /* not advertised: BINARY */
    case IMAP_FA_BINARY_SIZE:
    case IMAP_FA_PREVIEW:     /* not advertised: PREVIEW */
    case IMAP_FA_OTHER:       /* unknown: could expose content */
        return true;
    default:
        return false;
    }
}

static bool check_fetch(imap_session *s, const struct imap_args *a, size_t first)
{
    struct imap_fetch f;
    const char *err;
    if (imap_fetch_parse(a->args + first, a->count - first, s->rd.uid, &f, &err) < 0) {
        imap_tagged(s, "BAD", "Error in IMAP command %sFETCH: %s", s->rd.uid ? "UID " : "", err);
        return false;
    }
    for (size_t i = 0; i < f.n_items; i++) {
        if (fetch_item_refused(&f.items[i])) {
            const struct imap_fetch_item *it = &f.items[i];
            imap_tagged(s, "BAD", "Error in IMAP command %sFETCH: Unknown parameter %.*s",
                        s->rd.uid ? "UID " : "", (int)(it->raw_len < 200 ? it->raw_len : 200),
                        s->rd.buf + it->raw_off);
            imap_fetch_free(&f);
            return false;
        }
    }
    imap_fetch_free(&f);
    return true;
}

static void proceed_fetch(imap_session *s, const struct imap_args *a, size_t first)
{
    if (!s->hooks.fetch.command) {
        relay_raw(s);
        return;
    }
    struct imap_fetch f;
    const char *err;
    if (imap_fetch_parse(a->args + first, a->count - first, s->rd.uid, &f, &err) < 0) {
        relay_raw(s);
        return;
    }
    f.buf = s->rd.buf;
    f.buf_len = s->rd.len;
    while (f.buf_len > 0 && (f.buf[f.buf_len - 1] == '\n' || f.buf[f.buf_len - 1] == '\r'))
        f.buf_len--;
    f.has_literals = s->rd.n_lits > 0;
    char *rewrite = NULL;
    bool prepare = false;
    void *ctx = s->hooks.fetch.command(s->hooks_ctx, s, &f, &rewrite, &prepare);
    imap_fetch_free(&f);
    if (ctx && prepare && rewrite && s->n_inflight == 0) {
        /* held until imap_session_fetch_release(); the hook's own commands
         * were queued by command() or follow from its callbacks */
        s->prep.ctx = ctx;
        s->prep.rewrite = rewrite;
        memcpy(s->prep.tag, s->rd.tag, s->rd.tag_len + 1);
        s->prep.tag_len = s->rd.tag_len;
        s->prep.uid = s->rd.uid;
        s->prep.search = false;
        imap_enter_state(s, IMAP_STATE_FETCH_PREP);
        if (s->hooks.fetch.prepare)
            s->hooks.fetch.prepare(s->hooks_ctx, s, ctx);
        else
            imap_session_fetch_release(s);
        return;
    }
    struct imap_command *c = relay_new(s, s->rd.def);
    if (!c) {
        if (ctx && s->hooks.fetch.command_end)
            s->hooks.fetch.command_end(s->hooks_ctx, s, ctx, IMAP_STATUS_BYE);
        free(rewrite);
        return;
    }
    c->fetch_ctx = ctx;
    if (rewrite) {
        char head[IMAP_TAG_MAX + 16];
        int n = snprintf(head, sizeof(head), "%s %sFETCH ", s->rd.tag, s->rd.uid ? "UID " : "");
        imap_client_send(s->up, c->up, head, (size_t)n);
        imap_client_send(s->up, c->up, rewrite, strlen(rewrite));
        imap_client_send(s->up, c->up, "\r\n", 2);
        free(rewrite);
    } else {
        imap_forward_raw(s, c, s->rd.buf, s->rd.len, s->rd.lits, s->rd.n_lits);
    }
}

static void done_fetch(imap_session *s, struct imap_command *c, const struct imap_resp_event *ev)
{
    if (c->fetch_ctx && s->hooks.fetch.command_end)
        s->hooks.fetch.command_end(s->hooks_ctx, s, c->fetch_ctx, ev->status);
    c->fetch_ctx = NULL;
}

/* The proxy's own FETCH while a client's FETCH is being prepared. */
static const struct imap_command_def own_fetch_def = {IMAP_CMD_FETCH, 0, NULL, NULL, done_fetch};

int imap_session_own_fetch(imap_session *s, const char *command, void *own)
{
    if (s->state != IMAP_STATE_FETCH_PREP || s->closing)
        return NET_ESTATE;
    if (!s->up)
        return UV_ENOTCONN;
    struct imap_command *c = imap_command_new(s, &own_fetch_def);
    if (!c)
        return UV_ENOMEM;
    c->verb = IMAP_CMD_FETCH;
    c->uid = false;
    c->internal = true;
    char tag[32];
    imap_client_new_tag(s->up, tag, sizeof(tag));
    c->up = imap_client_cmd_new(s->up, tag, strlen(tag), imap_command_cb, c);
    if (!c->up) {
        imap_command_free(s, c);
        return UV_ENOMEM;
    }
    c->fetch_ctx = own;
    imap_client_send(s->up, c->up, tag, strlen(tag));
    imap_client_send(s->up, c->up, " ", 1);
    imap_client_send(s->up, c->up, command, strlen(command));
    imap_client_send(s->up, c->up, "\r\n", 2);
    return 0;
}

void imap_session_fetch_release(imap_session *s)
{
    if (s->state != IMAP_STATE_FETCH_PREP || s->closing || !s->prep.ctx || s->prep.search)
        return;
    imap_hold(s);
    void *ctx = s->prep.ctx;
    char *rewrite = s->prep.rewrite;
    s->prep.ctx = NULL;
    s->prep.rewrite = NULL;
    struct imap_command *c = NULL;
    if (s->up && (c = imap_command_new(s, imap_command_lookup(IMAP_CMD_FETCH)))) {
        c->verb = IMAP_CMD_FETCH;
        c->uid = s->prep.uid;
        c->up = imap_client_cmd_new(s->up, s->prep.tag, s->prep.tag_len, imap_command_cb, c);
        if (!c->up) {
            imap_command_free(s, c);
            c = NULL;
        }
    }
    if (!c) {
        if (s->hooks.fetch.command_end)
            s->hooks.fetch.command_end(s->hooks_ctx, s, ctx, IMAP_STATUS_BYE);
        free(rewrite);
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        imap_release(s);
        return;
    }
    c->fetch_ctx = ctx;
    char head[IMAP_TAG_MAX + 16];
    int n = snprintf(head, sizeof(head), "%s %sFETCH ", s->prep.tag, s->prep.uid ? "UID " : "");
    imap_client_send(s->up, c->up, head, (size_t)n);
    imap_client_send(s->up, c->up, rewrite, strlen(rewrite));
    imap_client_send(s->up, c->up, "\r\n", 2);
    free(rewrite);
    /* buffered client input is delivered again on a later loop turn */
    imap_enter_state(s, imap_idle_state(s));
    imap_release(s);
}

void imap_session_prep_answer(imap_session *s, const char *untagged, size_t len,
                              const char *status, const char *text)
{
    if (s->state != IMAP_STATE_FETCH_PREP || s->closing || !s->prep.ctx)
        return;
    imap_hold(s);
    s->prep.ctx = NULL;
    free(s->prep.rewrite);
    s->prep.rewrite = NULL;
    if (len)
        imap_out_bytes(s, untagged, len);
    char line[IMAP_TAG_MAX + 512];
    int n = snprintf(line, sizeof(line), "%s %s %s\r\n", s->prep.tag, status, text);
    imap_out_bytes(s, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    imap_out_flush(s);
    imap_enter_state(s, imap_idle_state(s));
    imap_release(s);
}

void imap_session_fetch_set_rewrite(imap_session *s, char *rewrite)
{
    if (s->state != IMAP_STATE_FETCH_PREP || !s->prep.ctx || s->prep.search) {
        free(rewrite);
        return;
    }
    free(s->prep.rewrite);
    s->prep.rewrite = rewrite;
}

uint64_t imap_session_mailbox_changes(const imap_session *s) { return s->mailbox_changes; }

void imap_session_prep_tag(const imap_session *s, char *buf, size_t size)
{
    snprintf(buf, size, "%s", s->prep.tag);
}

/* SEARCH / SORT: the hooks may answer it from the proxy's own commands. */
static void proceed_search(imap_session *s, const struct imap_args *a, size_t first)
{
    bool prepare = false;
    void *ctx = s->hooks.search.command
                    ? s->hooks.search.command(s->hooks_ctx, s, s->rd.verb, s->rd.uid, a, first,
                                              &prepare)
                    : NULL;
    if (!ctx || !prepare || s->n_inflight != 0) {
        if (ctx && s->hooks.search.command_end)
            s->hooks.search.command_end(s->hooks_ctx, s, ctx, IMAP_STATUS_OK);
        relay_raw(s);
        return;
    }
    s->prep.ctx = ctx;
    s->prep.search = true;
    s->prep.rewrite = NULL;
    memcpy(s->prep.tag, s->rd.tag, s->rd.tag_len + 1);
    s->prep.tag_len = s->rd.tag_len;
    s->prep.uid = s->rd.uid;
    imap_enter_state(s, IMAP_STATE_FETCH_PREP);
    if (s->hooks.search.prepare)
        s->hooks.search.prepare(s->hooks_ctx, s, ctx);
}

/* A FETCH that the hooks may prepare must start with nothing in flight. */
static bool fetch_wants_barrier(const imap_session *s, const struct imap_args *a, size_t first)
{
    if (!s->hooks.fetch.command || s->n_inflight == 0)
        return false;
    struct imap_fetch f;
    const char *err;
    if (imap_fetch_parse(a->args + first, a->count - first, s->rd.uid, &f, &err) < 0)
        return false;
    bool content = false;
    for (size_t i = 0; i < f.n_items && !content; i++)
        content = imap_fetch_att_is_content(f.items[i].att);
    imap_fetch_free(&f);
    return content;
}

/* ---- the table ----------------------------------------------------------------------------- */

#define ANY (CMDF_PREAUTH | CMDF_AUTH)

static const struct imap_command_def commands[] = {
    {IMAP_CMD_CAPABILITY, ANY, NULL, proceed_relay, NULL},
    {IMAP_CMD_NOOP, ANY, NULL, proceed_relay, NULL},
    {IMAP_CMD_LOGOUT, ANY, NULL, proceed_logout, done_logout},
    {IMAP_CMD_ID, ANY | CMDF_ARGS, check_id, proceed_id, NULL},
    {IMAP_CMD_STARTTLS, CMDF_PREAUTH | CMDF_BARRIER, check_starttls, proceed_starttls, NULL},
    {IMAP_CMD_AUTHENTICATE, CMDF_PREAUTH | CMDF_ARGS | CMDF_BARRIER, check_authenticate,
     proceed_authenticate, done_auth},
    {IMAP_CMD_LOGIN, CMDF_PREAUTH | CMDF_ARGS | CMDF_BARRIER, check_login, proceed_login,
     done_auth},
    {IMAP_CMD_ENABLE, CMDF_AUTH | CMDF_ARGS | CMDF_BARRIER, check_enable, proceed_enable, NULL},
    {IMAP_CMD_SELECT, CMDF_AUTH, NULL, proceed_relay, done_select},
    {IMAP_CMD_EXAMINE, CMDF_AUTH, NULL, proceed_relay, done_select},
    {IMAP_CMD_CREATE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_DELETE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_RENAME, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SUBSCRIBE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_UNSUBSCRIBE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_LIST, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_LSUB, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_NAMESPACE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_STATUS, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_APPEND, CMDF_AUTH | CMDF_STREAM, NULL, proceed_relay, done_append},
    {IMAP_CMD_IDLE, CMDF_AUTH, NULL, proceed_idle, done_idle},
    {IMAP_CMD_GETQUOTA, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_GETQUOTAROOT, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SETQUOTA, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_GETACL, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SETACL, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_DELETEACL, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_LISTRIGHTS, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_MYRIGHTS, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_GETMETADATA, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SETMETADATA, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_CHECK, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_CLOSE, CMDF_AUTH, NULL, proceed_relay, done_close},
    {IMAP_CMD_UNSELECT, CMDF_AUTH, NULL, proceed_relay, done_close},
    {IMAP_CMD_EXPUNGE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SEARCH, CMDF_AUTH | CMDF_ARGS, NULL, proceed_search, NULL},
    {IMAP_CMD_FETCH, CMDF_AUTH | CMDF_ARGS, check_fetch, proceed_fetch, done_fetch},
    {IMAP_CMD_STORE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_COPY, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_MOVE, CMDF_AUTH, NULL, proceed_relay, NULL},
    {IMAP_CMD_SORT, CMDF_AUTH | CMDF_ARGS, NULL, proceed_search, NULL},
    /* THREAD groups by the base subject the server sees (the placeholder
     * for protected messages): hidden with THREAD=*, see README */
    {IMAP_CMD_THREAD, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_CANCELUPDATE, CMDF_AUTH, NULL, proceed_relay, NULL}, /* CONTEXT=SEARCH */
    /* hidden extensions: COMPRESS would hide the stream, NOTIFY sends
     * FETCH data no command asked for, URLAUTH and CONVERT expose stored
     * content, REPLACE is an APPEND the proxy does not stream yet, XLIST
     * is an unknown dialect */
    {IMAP_CMD_COMPRESS, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_NOTIFY, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_URLFETCH, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_GENURLAUTH, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_RESETKEY, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_REPLACE, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_XLIST, CMDF_REFUSED, NULL, NULL, NULL},
    {IMAP_CMD_CONVERT, CMDF_REFUSED, NULL, NULL, NULL},
};

static const struct imap_command_def *append_def(void)
{
    return imap_command_lookup(IMAP_CMD_APPEND);
}

const struct imap_command_def *imap_command_lookup(enum imap_verb verb)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].verb == verb)
            return &commands[i];
    return NULL;
}

/* A complete command is in the reader's buffer. */
void imap_command_dispatch(imap_session *s)
{
    const struct imap_command_def *def = s->rd.def;
    const char *name = imap_verb_name(s->rd.verb);
    if (s->state != IMAP_STATE_BARRIER)
        s->commands++;
    if (!def || (def->flags & CMDF_REFUSED)) {
        imap_tagged(s, "BAD", "Error in IMAP command %s: Unknown command.",
                    def ? name : "received by server");
        imap_rd_reset(s);
        imap_count_bad(s);
        return;
    }
    if (!s->authenticated && !(def->flags & CMDF_PREAUTH)) {
        imap_tagged(s, "BAD", "Error in IMAP command received by server.");
        imap_rd_reset(s);
        imap_count_bad(s);
        return;
    }
    if (s->authenticated && !(def->flags & CMDF_AUTH)) {
        imap_tagged(s, "BAD", "Error in IMAP command %s: Unknown command.", name);
        imap_rd_reset(s);
        imap_count_bad(s);
        return;
    }
    if ((def->flags & CMDF_BARRIER) && s->n_inflight > 0) {
        /* resumes when the commands before it are answered */
        imap_enter_state(s, IMAP_STATE_BARRIER);
        return;
    }
    if (s->state == IMAP_STATE_BARRIER)
        imap_enter_state(s, imap_idle_state(s));
    struct imap_args args = {0};
    size_t first = s->rd.uid ? 3 : 2;
    if (def->flags & CMDF_ARGS) {
        const char *err = NULL;
        struct imap_parser_limits lim = {.max_token = s->cfg.max_line, .max_depth = 32};
        int rc = imap_args_parse(IMAP_PARSER_COMMANDS, &lim, s->rd.buf, s->rd.len, &args, &err);
        if (rc != 0 || args.count < first) {
            imap_tagged(s, "BAD", "Error in IMAP command %s: %s", name,
                        err ? err : "Invalid arguments.");
            if (rc == 0)
                imap_args_free(&args);
            imap_rd_reset(s);
            imap_count_bad(s);
            return;
        }
    }
    if ((def->verb == IMAP_CMD_FETCH && fetch_wants_barrier(s, &args, first)) ||
        ((def->verb == IMAP_CMD_SEARCH || def->verb == IMAP_CMD_SORT) &&
         s->hooks.search.command && s->n_inflight > 0)) {
        /* resumes when the commands before it are answered */
        imap_args_free(&args);
        imap_enter_state(s, IMAP_STATE_BARRIER);
        return;
    }
    qlog_debug("imap %s: <<< %s %s%s", s->id, s->rd.tag, s->rd.uid ? "UID " : "", name);
    if (!def->check || def->check(s, &args, first))
        def->proceed(s, (def->flags & CMDF_ARGS) ? &args : NULL, first);
    else
        imap_count_bad(s);
    if (def->flags & CMDF_ARGS)
        imap_args_free(&args);
    imap_rd_reset(s);
}

/* The tagged response of a relayed command, or a continuation for it. */
void imap_command_cb(imap_client *uc, imap_client_cmd *ucmd, const struct imap_resp_event *ev,
                     enum imap_cont_mode mode, void *arg)
{
    struct imap_command *c = arg;
    imap_session *s = c->s;
    (void)uc;
    (void)ucmd;
    imap_hold(s);
    if (ev->kind == IMAP_RESP_CONTINUATION) {
        if (mode == IMAP_CONT_RELAY)
            imap_out_span(s, ev->raw, ev->raw_len);
        if (c->verb == IMAP_CMD_AUTHENTICATE && s->state == IMAP_STATE_AUTH_WAIT)
            imap_enter_state(s, IMAP_STATE_AUTHENTICATE);
        else if (c->verb == IMAP_CMD_APPEND && s->state == IMAP_STATE_APPEND_WAIT)
            imap_enter_state(s, IMAP_STATE_APPEND);
        imap_release(s);
        return;
    }
    c->up = NULL; /* the client frees its entry */
    if (c->def && c->def->done)
        c->def->done(s, c, ev);
    if (!c->internal && !s->closing)
        imap_relay_line_with_caps(s, ev);
    imap_command_free(s, c);
    if (s->state == IMAP_STATE_LOGOUT && !s->closing)
        imap_schedule_close(s, true, "logout");
    else if (s->state == IMAP_STATE_BARRIER && s->n_inflight == 0 && !s->closing)
        imap_command_dispatch(s);
    else if (s->state == IMAP_STATE_APPEND_PROTECT && !s->closing)
        imap_append_step(s);
    imap_release(s);
}
