/* The IMAP session and its upstream client over real loopback sockets: a
 * scripted client talks to an imap_session whose upstream is a scripted
 * server. Each test runs its own loop to the end and asserts that every
 * handle was closed (uv_loop_close succeeds), that both scripts ran to the
 * end and that the session said goodbye exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_session.h"
#include "imap_test_peer.h"
#include "log.h"

static char cert_dir[512];
static net_tls *client_tls;      /* the test client: trusts the test CA */
static net_tls *server_tls;      /* the proxy's listeners: localhost */
static net_tls *up_server_tls;   /* the scripted upstream: localhost */
static net_tls *proxy_up_tls;    /* the proxy towards the upstream: trusts the CA */

static char *cert_path(const char *name)
{
    static char p[4][600];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", cert_dir, name);
    return p[i];
}

static int make_certs(void **state)
{
    (void)state;
    snprintf(cert_dir, sizeof(cert_dir), "%s/imap-test-certs", QUMAIL_TEST_TMP);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "sh %s/certs/mkcerts.sh -o %s >/dev/null", QUMAIL_SRC_DIR,
             cert_dir);
    if (system(cmd) != 0)
        return -1;
    char *err = NULL;
    struct net_tls_config c = {.server = false, .ca_file = cert_path("ca.pem"), .verify_peer = true};
    struct net_tls_config sv = {.server = true, .cert_file = cert_path("localhost.pem"),
                                .key_file = cert_path("localhost.key")};
    client_tls = net_tls_new(&c, &err);
    proxy_up_tls = net_tls_new(&c, &err);
    server_tls = net_tls_new(&sv, &err);
    up_server_tls = net_tls_new(&sv, &err);
    return client_tls && proxy_up_tls && server_tls && up_server_tls ? 0 : -1;
}

static int free_certs(void **state)
{
    (void)state;
    net_tls_free(&client_tls);
    net_tls_free(&proxy_up_tls);
    net_tls_free(&server_tls);
    net_tls_free(&up_server_tls);
    return 0;
}

struct fixture {
    struct imap_fx b; /* first: the hooks' ctx */
    char login_user[256];
    int logins;
    /* FETCH hook test state */
    int fetch_mode;
    int responses, taken_tokens, commands_ended;
    bool taken_now;
    char taken[256];
    size_t taken_len;
    uv_timer_t resume_timer;
    bool resume_timer_on;
};

static void close_resume_timer(struct imap_fx *base)
{
    struct fixture *fx = (struct fixture *)base;
    if (fx->resume_timer_on) {
        uv_close((uv_handle_t *)&fx->resume_timer, NULL);
        fx->resume_timer_on = false;
    }
}

static void h_login(void *ctx, imap_session *s, const char *user)
{
    struct fixture *fx = ctx;
    (void)s;
    snprintf(fx->login_user, sizeof(fx->login_user), "%s", user);
    fx->logins++;
}

static void fx_init(struct fixture *fx)
{
    memset(fx, 0, sizeof(*fx));
    imap_fx_init(&fx->b);
    fx->b.hooks.login = h_login;
    fx->b.client_tls = client_tls;
    fx->b.up_server_tls = up_server_tls;
    fx->b.on_finish = close_resume_timer;
}

static void run(struct fixture *fx, const char *const *client, const char *const *upstream)
{
    imap_fx_run(&fx->b, client, upstream);
}

static void fx_free(struct fixture *fx)
{
    imap_fx_free(&fx->b);
}

#define GREET_UP                                                                             \
    "> * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN " \
    "AUTH=LOGIN AUTH=XOAUTH2 AUTH=CRAM-MD5] Dovecot ready."
#define GREET_CLIENT                                                                         \
    "< * OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN "      \
    "AUTH=XOAUTH2] Dovecot ready."

/* The greeting and "a LOGIN u p" as each side sees them. */
#define CL_LOGIN GREET_CLIENT, "> a LOGIN u p", "< a OK [CAPABILITY IMAP4rev1] Logged in"
#define UP_LOGIN GREET_UP, "< a LOGIN u p", "> a OK [CAPABILITY IMAP4rev1] Logged in"

/* ---- relaying --------------------------------------------------------------------- */

static void test_login_select_fetch_logout(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        "> a1 CAPABILITY",
        "< * CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN "
        "AUTH=XOAUTH2",
        "< a1 OK Pre-login capabilities listed.",
        "> a2 LOGIN alice \"se cret\"",
        "< a2 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in",
        "> a3 SELECT INBOX",
        "< * 2 EXISTS",
        "< a3 OK [READ-WRITE] Select completed.",
        "> a4 FETCH 1 (UID BODY[])",
        "< * 1 FETCH (UID 5 BODY[] {7}",
        "< hello",
        "< )",
        "< a4 OK Fetch completed.",
        "> a5 LOGOUT",
        "< * BYE Logging out",
        "< a5 OK Logout completed.",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a1 CAPABILITY",
        "> * CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN "
        "AUTH=LOGIN AUTH=XOAUTH2 AUTH=CRAM-MD5",
        "> a1 OK Pre-login capabilities listed.",
        "< a2 LOGIN alice \"se cret\"",
        "> a2 OK [CAPABILITY IMAP4rev1 IDLE MOVE BINARY COMPRESS=DEFLATE X-FOO] Logged in",
        "< a3 SELECT INBOX",
        "> * 2 EXISTS",
        "> a3 OK [READ-WRITE] Select completed.",
        "< a4 FETCH 1 (UID BODY[])",
        ">>* 1 FETCH (UID 5 BODY[] {7}\r\nhello\r\n)\r\n",
        "> a4 OK Fetch completed.",
        "< a5 LOGOUT",
        "> * BYE Logging out",
        "> a5 OK Logout completed.",
        NULL,
    };
    run(&fx, client, upstream);
    assert_string_equal(fx.login_user, "alice");
    assert_int_equal(fx.logins, 1);
    fx_free(&fx);
}

/* Pipelined commands go upstream in order, untagged data arrives between. */
static void test_pipelining(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        ">>a LOGIN u p\r\nb NOOP\r\nc NOOP\r\nd STATUS INBOX (MESSAGES)\r\n",
        "< a OK [CAPABILITY IMAP4rev1] Logged in",
        "< b OK NOOP completed.",
        "< * 3 EXISTS",
        "< c OK NOOP completed.",
        "< * STATUS INBOX (MESSAGES 3)",
        "< d OK Status completed.",
        "x",
        NULL,
    };
    static const char *const upstream2[] = {
        UP_LOGIN,
        "< b NOOP",
        "< c NOOP",
        "< d STATUS INBOX (MESSAGES)",
        ">>b OK NOOP completed.\r\n* 3 EXISTS\r\nc OK NOOP completed.\r\n",
        ">>* STATUS INBOX (MESSAGES 3)\r\nd OK Status completed.\r\n",
        "<$",
        NULL,
    };
    run(&fx, client, upstream2);
    fx_free(&fx);
}

/* LOGIN with literals: the proxy answers "+ OK"; an upstream without
 * LITERAL+ gets synchronizing literals and its "+" is consumed. */
static void test_login_literals_sync_upstream(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        "< * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
        ">>a LOGIN {5}\r\n",
        "< + OK",
        ">>alice {6+}\r\nsecret\r\n",
        "< a OK [CAPABILITY IMAP4rev1] Logged in",
        "> b NOOP",
        "< b OK done",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        "> * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
        "< a LOGIN {5}",
        "> + go ahead",
        "< alice {6}",
        "> + go ahead",
        "< secret",
        "> a OK [CAPABILITY IMAP4rev1] Logged in",
        "< b NOOP",
        "> b OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_string_equal(fx.login_user, "alice");
    fx_free(&fx);
}

static void test_login_literals_literal_plus(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        ">>a LOGIN {5}\r\n",
        "< + OK",
        ">>alice {6}\r\n",
        "< + OK",
        ">>secret\r\n",
        "< a NO [AUTHENTICATIONFAILED] Authentication failed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a LOGIN {5+}",
        "< alice {6+}",
        "< secret",
        "> a NO [AUTHENTICATIONFAILED] Authentication failed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.logins, 0);
    fx_free(&fx);
}

/* AUTHENTICATE: SASL-IR, the continuation dance, LOGIN's two prompts, an
 * XOAUTH2 failure with its error challenge; the proxy learns the identity. */
static void test_authenticate(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    /* PLAIN "\0bob\0pw" = AGJvYgBwdw==, LOGIN user "carol" = Y2Fyb2w= */
    static const char *const client[] = {
        GREET_CLIENT,
        "> a AUTHENTICATE CRAM-MD5",
        "< a NO Unsupported authentication mechanism.",
        "> b AUTHENTICATE XOAUTH2 dXNlcj1kYXZlAWF1dGg9QmVhcmVyIHgBAQ==",
        "< + eyJzdGF0dXMiOiI0MDAifQ==",
        "> ",
        "< b NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> c AUTHENTICATE LOGIN",
        "< + VXNlcm5hbWU6",
        "> Y2Fyb2w=",
        "< + UGFzc3dvcmQ6",
        "> cHc=",
        "< c NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> d AUTHENTICATE PLAIN",
        "< + ",
        "> AGJvYgBwdw==",
        "< d OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< b AUTHENTICATE XOAUTH2 dXNlcj1kYXZlAWF1dGg9QmVhcmVyIHgBAQ==",
        "> + eyJzdGF0dXMiOiI0MDAifQ==",
        "< ",
        "> b NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< c AUTHENTICATE LOGIN",
        "> + VXNlcm5hbWU6",
        "< Y2Fyb2w=",
        "> + UGFzc3dvcmQ6",
        "< cHc=",
        "> c NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< d AUTHENTICATE PLAIN",
        "> + ",
        "< AGJvYgBwdw==",
        "> d OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_string_equal(fx.login_user, "bob");
    assert_int_equal(fx.logins, 1);
    fx_free(&fx);
}

static void test_idle(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "> b IDLE",
        "< + idling",
        "< * OK Still here",
        "< * 4 EXISTS",
        "> DONE",
        "< b OK Idle completed.",
        "> c NOOP",
        "< c OK NOOP completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1 IDLE] Logged in",
        "< b IDLE",
        "> + idling",
        "> * OK Still here",
        "> * 4 EXISTS",
        "< DONE",
        "> b OK Idle completed.",
        "< c NOOP",
        "> c OK NOOP completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* APPEND: a synchronizing literal waits for the upstream's own "+"; a
 * non-synchronizing one streams at once when the upstream has LITERAL+. */
static void test_append(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] Logged in",
        "> b APPEND INBOX (\\Seen) {12}",
        "< + Ready for literal data",
        ">>Subject: x\r\n\r\n",
        "< b OK [APPENDUID 1 7] Append completed.",
        ">>c APPEND INBOX {3+}\r\nabc (\\Draft) {2+}\r\nde\r\n",
        "< c OK [APPENDUID 1 8:9] Append completed.",
        "> d APPEND INBOX {99999999}",
        "< d NO [TOOBIG] Mail too large.",
        ">>f APPEND nonexistent {5+}\r\n",
        "< f NO [TRYCREATE] Mailbox doesn't exist: nonexistent",
        ">>hello\r\n",
        "> e NOOP",
        "< e OK done",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] Logged in",
        "< b APPEND INBOX (\\Seen) {12}",
        "> + Ready for literal data",
        "< Subject: x",
        "< ",
        "> b OK [APPENDUID 1 7] Append completed.",
        "< c APPEND INBOX {3+}",
        "< abc (\\Draft) {2+}",
        "< de",
        "> c OK [APPENDUID 1 8:9] Append completed.",
        "< d APPEND INBOX {99999999}",
        "> d NO [TOOBIG] Mail too large.",
        /* answered before the data of a LITERAL+ literal: the server still
         * reads (and drops) the rest of the command, so it gets it */
        "< f APPEND nonexistent {5+}",
        "> f NO [TRYCREATE] Mailbox doesn't exist: nonexistent",
        "< hello",
        "< e NOOP",
        "> e OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* Non-synchronizing APPEND literals to an upstream without LITERAL+: the
 * proxy makes them synchronizing, holds the client's data until the
 * upstream's "+", and discards the rest when the upstream refuses. */
static void test_append_nonsync_to_sync_upstream(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        "< * OK [CAPABILITY IMAP4rev1] ready",
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1] Logged in",
        ">>b APPEND INBOX {5+}\r\nhello\r\n",
        "< b OK Append completed.",
        ">>c APPEND INBOX {5+}\r\nworld {3+}\r\nxyz\r\nd NOOP\r\n",
        "< c NO [OVERQUOTA] Quota exceeded",
        "< d OK done",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        "> * OK [CAPABILITY IMAP4rev1] ready",
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1] Logged in",
        "< b APPEND INBOX {5}",
        "> + OK",
        "< hello",
        "> b OK Append completed.",
        "< c APPEND INBOX {5}",
        "> c NO [OVERQUOTA] Quota exceeded",
        "< d NOOP",
        "> d OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* Commands and FETCH items the proxy does not honour never reach the
 * upstream; capabilities and ENABLE are filtered; ID loses forged fields. */
static void test_refusals_and_filters(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        "> a SELECT INBOX",
        "< a BAD Error in IMAP command received by server.",
        "> b ID (\"name\" \"mutt\" \"X-Originating-IP\" \"6.6.6.6\" \"x-connected-port\" \"1\")",
        "< * ID (\"name\" \"Dovecot\")",
        "< b OK ID completed.",
        "> c LOGIN u p",
        "< c OK [CAPABILITY IMAP4rev1 CONDSTORE ENABLE] Logged in",
        "> d COMPRESS DEFLATE",
        "< d BAD Error in IMAP command COMPRESS: Unknown command.",
        "> e FETCH 1 (FLAGS BINARY.PEEK[1])",
        "< e BAD Error in IMAP command FETCH: Unknown parameter BINARY.PEEK[1]",
        "> f UID FETCH 1:* (UID X-GM-LABELS)",
        "< f BAD Error in IMAP command UID FETCH: Unknown parameter X-GM-LABELS",
        "> g ENABLE IMAP4rev2 UTF8=ACCEPT",
        "< * ENABLED",
        "< g OK Enabled.",
        "> h ENABLE CONDSTORE X-FOO",
        "< * ENABLED CONDSTORE",
        "< h OK Enabled.",
        "> i FOOBAR",
        "< i BAD Error in IMAP command received by server: Unknown command.",
        "> j LOGIN again x",
        "< j BAD Error in IMAP command LOGIN: Unknown command.",
        "> k CAPABILITY",
        "< * CAPABILITY IMAP4rev1 CONDSTORE ENABLE",
        "< k OK done",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< b ID (\"name\" \"mutt\")",
        "> * ID (\"name\" \"Dovecot\")",
        "> b OK ID completed.",
        "< c LOGIN u p",
        "> c OK [CAPABILITY IMAP4rev1 CONDSTORE COMPRESS=DEFLATE ENABLE UTF8=ACCEPT] Logged in",
        "< h ENABLE CONDSTORE",
        "> * ENABLED CONDSTORE X-SECRET",
        "> h OK Enabled.",
        "< k CAPABILITY",
        "> * CAPABILITY IMAP4rev1 CONDSTORE COMPRESS=DEFLATE ENABLE NOTIFY PREVIEW",
        "> k OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* ---- FETCH hooks ------------------------------------------------------------------ */

static void *fh_command(void *ctx, imap_session *s, const struct imap_fetch *f, char **rewrite,
                        bool *prepare)
{
    struct fixture *fx = ctx;
    (void)s;
    (void)f;
    (void)prepare;
    if (fx->fetch_mode == 2)
        *rewrite = strdup("1 (UID BODY.PEEK[])");
    return fx;
}

static void fh_begin(void *ctx, imap_session *s, void *cmd, uint32_t seq)
{
    struct fixture *fx = ctx;
    (void)s;
    (void)cmd;
    (void)seq;
    fx->responses++;
    fx->taken_now = false;
}

static enum imap_fetch_verdict fh_item(void *ctx, imap_session *s, void *cmd, const char *name,
                                       unsigned index)
{
    struct fixture *fx = ctx;
    (void)s;
    (void)cmd;
    (void)index;
    if (strcmp(name, "UID") == 0)
        return IMAP_FETCH_DROP;
    if (strcmp(name, "BODY[]") == 0) {
        fx->taken_now = true;
        return IMAP_FETCH_TAKE;
    }
    return IMAP_FETCH_PASS;
}

static void fh_value(void *ctx, imap_session *s, void *cmd, const struct imap_token *tok, bool last)
{
    struct fixture *fx = ctx;
    (void)s;
    (void)cmd;
    fx->taken_tokens++;
    if (tok->type == IMAP_TOK_LITERAL_DATA && fx->taken_len + tok->len < sizeof(fx->taken)) {
        memcpy(fx->taken + fx->taken_len, tok->str, tok->len);
        fx->taken_len += tok->len;
    }
    (void)last;
}

static void resume_cb(uv_timer_t *t)
{
    struct fixture *fx = t->data;
    if (!fx->b.session)
        return;
    /* the rewritten value, emitted late */
    static const char v[] = "{9}\r\nPLAINTEXT";
    imap_session_fetch_item(fx->b.session, "BODY[]", v, sizeof(v) - 1);
    imap_session_fetch_resume(fx->b.session);
}

static enum imap_fetch_flow fh_end(void *ctx, imap_session *s, void *cmd)
{
    struct fixture *fx = ctx;
    (void)cmd;
    if (!fx->taken_now)
        return IMAP_FETCH_CONTINUE;
    if (fx->fetch_mode == 1) {
        static const char v[] = "{9}\r\nPLAINTEXT";
        imap_session_fetch_item(s, "BODY[]", v, sizeof(v) - 1);
        return IMAP_FETCH_CONTINUE;
    }
    /* mode 2: answer later, as an asynchronous decryption would */
    if (!fx->resume_timer_on) {
        uv_timer_init(&fx->b.loop, &fx->resume_timer);
        fx->resume_timer.data = fx;
        fx->resume_timer_on = true;
    }
    uv_timer_start(&fx->resume_timer, resume_cb, 50, 0);
    return IMAP_FETCH_WAIT;
}

static void fh_command_end(void *ctx, imap_session *s, void *cmd, enum imap_status st)
{
    struct fixture *fx = ctx;
    (void)s;
    (void)cmd;
    (void)st;
    fx->commands_ended++;
}

static void hooks_fixture(struct fixture *fx, int mode)
{
    fx_init(fx);
    fx->fetch_mode = mode;
    fx->b.hooks.fetch.command = fh_command;
    fx->b.hooks.fetch.response_begin = fh_begin;
    fx->b.hooks.fetch.item = fh_item;
    fx->b.hooks.fetch.value = fh_value;
    fx->b.hooks.fetch.response_end = fh_end;
    fx->b.hooks.fetch.command_end = fh_command_end;
}

static void test_fetch_hooks(void **state)
{
    (void)state;
    for (int mode = 1; mode <= 2; mode++) {
        static struct fixture fx;
        hooks_fixture(&fx, mode);
        const char *const client[] = {
            CL_LOGIN,
            "> b FETCH 1 (FLAGS BODY[])",
            "< * 1 FETCH (FLAGS (\\Seen) BODY[] {9}",
            "< PLAINTEXT)",
            "< * 2 FETCH (FLAGS (\\Seen))", /* a flag update: passed */
            "< b OK Fetch completed.",
            "> c NOOP",
            "< c OK done",
            "x",
            NULL,
        };
        const char *const upstream[] = {
            UP_LOGIN,
            mode == 2 ? "< b FETCH 1 (UID BODY.PEEK[])" : "< b FETCH 1 (FLAGS BODY[])",
            ">>* 1 FETCH (UID 9 FLAGS (\\Seen) BODY[] {10}\r\nCIPHERTEXT)\r\n",
            ">>* 2 FETCH (FLAGS (\\Seen))\r\nb OK Fetch completed.\r\n",
            "< c NOOP",
            "> c OK done",
            "<$",
            NULL,
        };
        run(&fx, client, upstream);
        assert_int_equal(fx.responses, 2);
        assert_int_equal(fx.commands_ended, 1);
        assert_int_equal(fx.taken_len, 10);
        assert_memory_equal(fx.taken, "CIPHERTEXT", 10);
        fx_free(&fx);
    }
}

/* ---- bad input ---------------------------------------------------------------------- */

static void test_bad_syntax_and_limits(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.max_line = 100;
    fx.b.cfg.max_command = 200;
    static char longline[400];
    memset(longline, 'x', sizeof(longline) - 1);
    snprintf(longline, 10, "> a NOOP ");
    longline[9] = 'x';
    static const char *client[] = {
        GREET_CLIENT,
        NULL, /* the long line */
        "< a BAD Error in IMAP command: IMAP command line too large",
        "> b NOOP (unclosed",
        "< b BAD Error in IMAP command: Missing ')'",
        "> c NOOP \"unterminated",
        "< c BAD Error in IMAP command: Missing '\"'",
        "> d LOGIN {300}",
        "< d BAD Literal size too large",
        "> e NOOP",
        "< e OK done",
        "> +bad NOOP",
        "< * BAD Error in IMAP command received by server.",
        "> f NOOP {500+}",
        "< * BYE Literal size too large",
        "<$",
        NULL,
    };
    client[1] = longline;
    static const char *const upstream[] = {
        GREET_UP,
        "< e NOOP",
        "> e OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

static void test_too_many_bad_commands(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *client[64];
    size_t n = 0;
    client[n++] = GREET_CLIENT;
    for (int i = 0; i < 19; i++) {
        client[n++] = "> t BOGUS";
        client[n++] = "< t BAD Error in IMAP command received by server: Unknown command.";
    }
    client[n++] = "> t BOGUS";
    client[n++] = "< t BAD Error in IMAP command received by server: Unknown command.";
    client[n++] = "< * BYE Too many invalid IMAP commands.";
    client[n++] = "<$";
    client[n] = NULL;
    static const char *const upstream[] = {GREET_UP, "<$", NULL};
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* A client that stops inside a literal is timed out; the upstream
 * connection is closed with it (no partial message is completed). */
static void test_client_stops_mid_literal(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.command_timeout_ms = 300;
    static const char *const client[] = {
        GREET_CLIENT,
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in",
        "> b APPEND INBOX {100}",
        "< + OK",
        ">>only part of it",
        "< * BYE Disconnected for inactivity.",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in",
        "< b APPEND INBOX {100}",
        "> + OK",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* The upstream closes inside a response: the client's connection is
 * closed without another byte (a BYE would land inside the literal). */
static void test_upstream_closes_mid_response(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        CL_LOGIN,
        "> b FETCH 1 BODY[]",
        "< * 1 FETCH (BODY[] {100}",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN,
        "< b FETCH 1 BODY[]",
        ">>* 1 FETCH (BODY[] {100}\r\nthe first",
        "~50",
        "x",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* Between responses the client hears why. */
static void test_upstream_closes_between_responses(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        GREET_CLIENT,
        "> a NOOP",
        "< a OK done",
        "< * BYE Upstream server closed the connection.",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP, "< a NOOP", "> a OK done", "~50", "x", NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* The upstream refuses: the client hears it and is disconnected. */
static void test_upstream_unavailable(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    static const char *const client[] = {
        "< * BYE Upstream server unavailable, try again later.",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {"> * BYE Too many connections", NULL};
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* A large literal goes through in pieces (never whole in the proxy) and
 * arrives byte for byte. */
static void test_large_literal(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    size_t lines = 32000, n = lines * 100;
    /* 3.2 MB of 100-byte lines, the last one unlike the others */
    char *body = malloc(n + 1);
    for (size_t i = 0; i < lines; i++) {
        memset(body + i * 100, i + 1 == lines ? 'Z' : 'a' + (char)(i % 26), 98);
        memcpy(body + i * 100 + 98, "\r\n", 2);
    }
    body[n] = '\0';
    char head[128];
    snprintf(head, sizeof(head), ">>* 1 FETCH (BODY[] {%zu}\r\n", n);
    char *up_body = malloc(n + 3);
    snprintf(up_body, n + 3, ">>%s", body);
    static char want_line[120];
    snprintf(want_line, sizeof(want_line), "<~%.*s", 98, body + (lines - 1) * 100);
    const char *client[] = {
        CL_LOGIN,
        "> b FETCH 1 BODY[]",
        "< * 1 FETCH (BODY[] {3200000}",
        want_line,
        "< )",
        "< b OK done",
        "x",
        NULL,
    };
    const char *upstream[] = {
        UP_LOGIN,
        "< b FETCH 1 BODY[]",
        head,
        up_body,
        ">>)\r\nb OK done\r\n",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    /* every line of the body arrived, in order */
    const char *p = strstr(fx.b.client.log, "{3200000}\r\n");
    assert_non_null(p);
    p += strlen("{3200000}\r\n");
    assert_memory_equal(p, body, n);
    free(body);
    free(up_body);
    fx_free(&fx);
}

/* One client stalls inside a LOGIN literal and another floods an
 * over-long line; a third session meanwhile logs in, fetches and logs out
 * as if they were not there. */
static void test_other_clients_unaffected(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.command_timeout_ms = 1000;
    static const char *const client[] = {
        CL_LOGIN,
        "~200",
        "> b FETCH 1 BODY[]",
        "< * 1 FETCH (BODY[] {5}",
        "< hello)",
        "< b OK done",
        "> c LOGOUT",
        "< * BYE bye",
        "< c OK done",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN,
        "< b FETCH 1 BODY[]",
        ">>* 1 FETCH (BODY[] {5}\r\nhello)\r\nb OK done\r\n",
        "< c LOGOUT",
        "> * BYE bye",
        "> c OK done",
        NULL,
    };
    static char flood[70010];
    memset(flood, 'x', sizeof(flood) - 1);
    snprintf(flood, 10, "> y NOOP ");
    flood[9] = 'x';
    static const char *client2[] = {
        GREET_CLIENT,
        NULL, /* 70 kB of one line */
        "< y BAD Error in IMAP command: IMAP command line too large",
        "> x LOGIN {100}",
        "< + OK",
        ">>only ten",
        "< * BYE Disconnected for inactivity.",
        "<$",
        NULL,
    };
    client2[1] = flood;
    static const char *const upstream2[] = {GREET_UP, "<$", NULL};
    imap_fx_second(&fx.b, client2, upstream2);
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* The proxy's own APPEND limit is checked before the upstream hears of it. */
static void test_append_own_limit(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.max_append = 1000;
    static const char *const client[] = {
        GREET_CLIENT,
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in",
        "> b APPEND INBOX {1001}",
        "< b NO [TOOBIG] Message too large.",
        "> c APPEND INBOX {3}",
        "< + OK",
        ">>abc\r\n",
        "< c OK Append completed.",
        "> d APPEND INBOX {2000+}",
        "< * BYE Literal size too large",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in",
        "< c APPEND INBOX {3}",
        "> + OK",
        "< abc",
        "> c OK Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* ---- the log ------------------------------------------------------------------------ */

static char logbuf[65536];
static size_t loglen;

static void log_sink(void *arg, enum qlog_level level, const char *line, size_t len)
{
    (void)arg;
    (void)level;
    if (loglen + len < sizeof(logbuf)) {
        memcpy(logbuf + loglen, line, len);
        loglen += len;
        logbuf[loglen] = '\0';
    }
}

/* Credentials in every form the proxy relays never reach a log line, even
 * at debug level; every line names the session; the session's one line
 * at the end says who, from where, how long, how much, how it ended. */
static void test_secrets_never_logged(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    loglen = 0;
    qlog_set_sink(log_sink, NULL);
    enum qlog_level old = qlog_get_level();
    qlog_set_level(QLOG_DEBUG);
    /* PLAIN "\0bob\0Zecret-IR" = AGJvYgBaZWNyZXQtSVI=;
     * XOAUTH2 "user=dave\1auth=Bearer T0ken-x0\1\1" =
     * dXNlcj1kYXZlAWF1dGg9QmVhcmVyIFQwa2VuLXgwAQE=;
     * OAUTHBEARER "n,a=erin,\1auth=Bearer B3arer-y1\1\1" =
     * bixhPWVyaW4sAWF1dGg9QmVhcmVyIEIzYXJlci15MQEB */
    static const char *const client[] = {
        "< * OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] "
        "ready",
        ">>a LOGIN alice {12}\r\n",
        "< + OK",
        ">>Pa55-literal\r\n",
        "< a NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> b LOGIN alice \"Pa55-quoted\"",
        "< b NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> c AUTHENTICATE PLAIN AGJvYgBaZWNyZXQtSVI=",
        "< c NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> d AUTHENTICATE XOAUTH2",
        "< + ",
        "> dXNlcj1kYXZlAWF1dGg9QmVhcmVyIFQwa2VuLXgwAQE=",
        "< d NO [AUTHENTICATIONFAILED] Authentication failed.",
        "> e AUTHENTICATE OAUTHBEARER bixhPWVyaW4sAWF1dGg9QmVhcmVyIEIzYXJlci15MQEB",
        "< e OK [CAPABILITY IMAP4rev1] Logged in",
        "> f LOGOUT",
        "< * BYE bye",
        "< f OK done",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {
        "> * OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN AUTH=XOAUTH2 "
        "AUTH=OAUTHBEARER] ready",
        "< a LOGIN alice {12+}",
        "< Pa55-literal",
        "> a NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< b LOGIN alice \"Pa55-quoted\"",
        "> b NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< c AUTHENTICATE PLAIN AGJvYgBaZWNyZXQtSVI=",
        "> c NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< d AUTHENTICATE XOAUTH2",
        "> + ",
        "< dXNlcj1kYXZlAWF1dGg9QmVhcmVyIFQwa2VuLXgwAQE=",
        "> d NO [AUTHENTICATIONFAILED] Authentication failed.",
        "< e AUTHENTICATE OAUTHBEARER bixhPWVyaW4sAWF1dGg9QmVhcmVyIEIzYXJlci15MQEB",
        "> e OK [CAPABILITY IMAP4rev1] Logged in",
        "< f LOGOUT",
        "> * BYE bye",
        "> f OK done",
        NULL,
    };
    run(&fx, client, upstream);
    qlog_set_sink(NULL, NULL);
    qlog_set_level(old);
    assert_string_equal(fx.login_user, "erin");
    static const char *const secrets[] = {
        "Pa55", "Zecret", "T0ken", "B3arer", "AGJvYgBa", "dXNlcj1k", "bixhPWVy", NULL};
    for (size_t i = 0; secrets[i]; i++) {
        if (strstr(logbuf, secrets[i]))
            print_error("secret %s in the log:\n%s", secrets[i], logbuf);
        assert_null(strstr(logbuf, secrets[i]));
    }
    /* the identities are logged, the attempts too */
    assert_non_null(strstr(logbuf, "login failed user=alice method=LOGIN"));
    assert_non_null(strstr(logbuf, "login failed user=bob method=PLAIN"));
    assert_non_null(strstr(logbuf, "login failed user=dave method=XOAUTH2"));
    assert_non_null(strstr(logbuf, "login user=erin method=OAUTHBEARER"));
    /* every line carries "imap <id>:", and the end line has every field */
    const char *sid = strstr(logbuf, "imap ");
    assert_non_null(sid);
    char id[32];
    assert_int_equal(sscanf(sid, "imap %31[0-9A-F]:", id), 1);
    size_t lines = 0;
    for (const char *l = logbuf; *l; lines++) {
        const char *nl = strchr(l, '\n');
        assert_non_null(nl);
        char want[48];
        snprintf(want, sizeof(want), "imap %s:", id);
        char *line = strndup(l, (size_t)(nl - l));
        if (!strstr(line, want))
            print_error("line without the session id: %s\n", line);
        assert_non_null(strstr(line, want));
        free(line);
        l = nl + 1;
    }
    assert_true(lines > 10);
    const char *end = strstr(logbuf, "session end user=erin from=127.0.0.1:");
    assert_non_null(end);
    assert_non_null(strstr(end, " listener=test duration="));
    assert_non_null(strstr(end, " commands=6 outcome=logout"));
    assert_non_null(strstr(end, " in="));
    assert_non_null(strstr(end, " out="));
    fx_free(&fx);
}

/* ---- TLS -------------------------------------------------------------------------- */

/* STARTTLS offered, LOGINDISABLED until it; a command sent in the clear
 * behind STARTTLS is never executed; after TLS the proxy's own
 * capabilities are gone and logins work. */
static void test_starttls_logindisabled(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.tls_ctx = server_tls;
    fx.b.cfg.require_tls_for_auth = true;
    static const char *const client[] = {
        "< * OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] "
        "Dovecot ready.",
        "> a LOGIN u p",
        "< a BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client "
        "did it anyway. If anyone was listening, the password was exposed.",
        "> b AUTHENTICATE PLAIN AGJvYgBwdw==",
        "< b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
        "connections.",
        ">>c STARTTLS\r\nx NOOP\r\n",
        "< c OK Begin TLS negotiation now.",
        "T",
        "> d CAPABILITY",
        "< * CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN "
        "AUTH=XOAUTH2",
        "< d OK done",
        "> e STARTTLS",
        "< e BAD TLS is already active.",
        "> f LOGIN u p",
        "< f OK [CAPABILITY IMAP4rev1] Logged in",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        GREET_UP,
        "< d CAPABILITY",
        "> * CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN "
        "AUTH=XOAUTH2",
        "> d OK done",
        "< f LOGIN u p",
        "> f OK [CAPABILITY IMAP4rev1] Logged in",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* Implicit TLS towards the client, STARTTLS towards the upstream (its
 * certificate verified), the client's address told to the upstream. */
static void test_implicit_tls_upstream_starttls(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.tls_ctx = server_tls;
    fx.b.cfg.implicit_tls = true;
    fx.b.cfg.require_tls_for_auth = true;
    fx.b.cfg.upstream.tls = IMAP_UPSTREAM_STARTTLS;
    fx.b.cfg.upstream.tls_ctx = proxy_up_tls;
    fx.b.cfg.upstream.server_name = "localhost";
    fx.b.cfg.upstream.send_client_id = true;
    static const char *const client[] = {
        "T",
        "< * OK [CAPABILITY IMAP4rev1 LITERAL+ ID AUTH=PLAIN] upstream ready",
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1] Logged in",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        "> * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED ID] upstream ready",
        "<@STARTTLS",
        ">@OK Begin TLS negotiation now.",
        "S",
        "<@CAPABILITY",
        "> * CAPABILITY IMAP4rev1 LITERAL+ ID AUTH=PLAIN",
        ">@OK Pre-login capabilities listed.",
        "<@ID (\"x-originating-ip\" \"127.0.0.1\" \"x-originating-port\" \"",
        "> * ID NIL",
        ">@OK ID completed.",
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1] Logged in",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    fx_free(&fx);
}

/* An upstream whose certificate does not name what the proxy expects is
 * refused; the client hears the upstream is unavailable. */
static void test_upstream_certificate_refused(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx);
    fx.b.cfg.upstream.tls = IMAP_UPSTREAM_IMPLICIT;
    fx.b.cfg.upstream.tls_ctx = proxy_up_tls;
    fx.b.cfg.upstream.server_name = "imap.example.org";
    static const char *const client[] = {
        "< * BYE Upstream server unavailable, try again later.",
        "<$",
        NULL,
    };
    static const char *const upstream[] = {"S?", NULL};
    run(&fx, client, upstream);
    fx_free(&fx);
}

int main(void)
{
    qlog_set_level(getenv("IMAP_TEST_DEBUG") ? QLOG_DEBUG : QLOG_ERROR);
    if (getenv("IMAP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("IMAP_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_login_select_fetch_logout),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_login_literals_sync_upstream),
        cmocka_unit_test(test_login_literals_literal_plus),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_idle),
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_append_nonsync_to_sync_upstream),
        cmocka_unit_test(test_refusals_and_filters),
        cmocka_unit_test(test_fetch_hooks),
        cmocka_unit_test(test_bad_syntax_and_limits),
        cmocka_unit_test(test_too_many_bad_commands),
        cmocka_unit_test(test_client_stops_mid_literal),
        cmocka_unit_test(test_upstream_closes_mid_response),
        cmocka_unit_test(test_upstream_closes_between_responses),
        cmocka_unit_test(test_upstream_unavailable),
        cmocka_unit_test(test_large_literal),
        cmocka_unit_test(test_other_clients_unaffected),
        cmocka_unit_test(test_append_own_limit),
        cmocka_unit_test(test_secrets_never_logged),
        cmocka_unit_test(test_starttls_logindisabled),
        cmocka_unit_test(test_implicit_tls_upstream_starttls),
        cmocka_unit_test(test_upstream_certificate_refused),
    };
    return cmocka_run_group_tests(tests, make_certs, free_certs);
}
