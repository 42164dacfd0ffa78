/* The session's APPEND interception (issue 13, imap_append.c) over real
 * loopback sockets: a scripted client, the session with APPEND hooks, a
 * scripted upstream. The hooks decide with the real protect_mailboxes
 * (proxy/protect/mailboxes.h); protect() is either a visible transform
 * (a header line put in front, so the scripts can say exactly what the
 * upstream must get), a refusal (what a failed vault write gives), or the
 * real protect_append over a real vault (the upstream receives our
 * ciphertext). Answers come from the loop, never from inside protect(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "append.h"
#include "imap_session.h"
#include "imap_test_peer.h"
#include "mailboxes.h"
#include "../vault/vault_test.h"

enum protect_mode { P_MARK, P_FAIL, P_FAIL_NOW, P_REAL };

#define MARK "X-Test-Protected: yes\r\n"

struct job {
    struct fixture *fx;
    imap_session *s;
    uv_timer_t t;
    int in_fd;
    uint64_t len;
    protect_append_job *real;
};

struct fixture {
    struct imap_fx b; /* first: the hooks' ctx */
    struct protect_mailboxes_config *mcfg;
    struct protect_mailboxes *mb;
    enum protect_mode mode;
    int protects, lists_seen, asks;
    kme_vault *vault;
};

/* ---- hooks ---------------------------------------------------------------------- */

static enum imap_append_verdict h_mailbox(void *ctx, imap_session *s, const char *name,
                                          bool listed)
{
    struct fixture *fx = ctx;
    (void)s;
    if (protect_mailboxes_match(fx->mb, name))
        return IMAP_APPEND_PROTECT;
    if (!listed && protect_mailboxes_needs_list(fx->mb, name)) {
        fx->asks++;
        return IMAP_APPEND_ASK;
    }
    return IMAP_APPEND_PLAIN;
}

/* As the IMAP service does (imap_append_glue.c): the proxy's own LIST
 * is the truth; a relayed response teaches only a special-use attribute. */
static void h_list(void *ctx, imap_session *s, const char *name, const char *const *attrs,
                   size_t n, bool own)
{
    struct fixture *fx = ctx;
    (void)s;
    fx->lists_seen++;
    bool teaches = own;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(attrs[i], "\\Sent") == 0 || strcasecmp(attrs[i], "\\Drafts") == 0)
            teaches = true;
    if (teaches)
        assert_int_equal(protect_mailboxes_learn(fx->mb, name, attrs, n), 0);
}

static void job_closed(uv_handle_t *h)
{
    free(h->data);
}

static void mark_done(uv_timer_t *t)
{
    struct job *j = t->data;
    struct imap_append_result r = {0};
    int out = -1;
    if (j->fx->mode == P_FAIL) {
        r.status = -1;
        r.code = "UNAVAILABLE";
        r.text = "Vault write failed.";
    } else {
        out = memfd_create("test-out", MFD_CLOEXEC);
        assert_true(out >= 0);
        assert_int_equal(write(out, MARK, strlen(MARK)), (ssize_t)strlen(MARK));
        char *buf = malloc(j->len + 1);
        assert_int_equal(pread(j->in_fd, buf, j->len, 0), (ssize_t)j->len);
        assert_int_equal(write(out, buf, j->len), (ssize_t)j->len);
        free(buf);
        r.fd = out;
        r.size = strlen(MARK) + j->len;
    }
    imap_session_append_done(j->s, j, &r);
    uv_close((uv_handle_t *)&j->t, job_closed);
}

static void real_done(void *arg, int status, struct protect_append_result *pr, const char *error)
{
    struct job *j = arg;
    (void)error;
    struct imap_append_result r = {.status = status < 0 ? status : 0, .fd = -1};
    if (status < 0) {
        r.code = protect_append_imap_code(status);
        r.text = "Cannot protect the message.";
    } else if (pr->outcome == PROTECT_APPEND_ENCRYPTED) {
        r.fd = pr->fd;
        r.size = pr->size;
        pr->fd = -1;
    }
    imap_session_append_done(j->s, j, &r);
    free(j);
}

static void *h_protect(void *ctx, imap_session *s, int in_fd, uint64_t len, const char **code_r,
                       const char **text_r)
{
    struct fixture *fx = ctx;
    fx->protects++;
    if (fx->mode == P_FAIL_NOW) {
        *code_r = "CANNOT";
        *text_r = "No address for this login.";
        return NULL;
    }
    struct job *j = calloc(1, sizeof(*j));
    j->fx = fx;
    j->s = s;
    j->in_fd = in_fd;
    j->len = len;
    if (fx->mode == P_REAL) {
        struct protect_append_params p = {.vault = fx->vault, .owner = "alice@example.org"};
        assert_int_equal(
            protect_append_start(&fx->b.loop, &p, in_fd, len, real_done, j, &j->real), 0);
        return j;
    }
    uv_timer_init(&fx->b.loop, &j->t);
    j->t.data = j;
    uv_timer_start(&j->t, mark_done, 0, 0);
    return j;
}

static void h_cancel(void *ctx, imap_session *s, void *job)
{
    struct fixture *fx = ctx;
    struct job *j = job;
    (void)s;
    if (fx->mode == P_REAL)
        protect_append_cancel(j->real);
    /* the marking timer answers anyway */
}

/* ---- fixture (imap_test_peer.h's, without TLS) ---------------------------------- */

static void fx_init_with(struct fixture *fx, enum protect_mode mode, const char *boxes)
{
    memset(fx, 0, sizeof(*fx));
    imap_fx_init(&fx->b);
    fx->b.watchdog_ms = 60000;
    fx->b.hooks.append.mailbox = h_mailbox;
    fx->b.hooks.append.list = h_list;
    fx->b.hooks.append.protect = h_protect;
    fx->b.hooks.append.cancel = h_cancel;
    fx->mode = mode;
    char *err = NULL;
    assert_int_equal(protect_mailboxes_config_parse(boxes ? &boxes : NULL, boxes ? 1 : 0,
                                                    &fx->mcfg, &err), 0);
    fx->mb = protect_mailboxes_new(fx->mcfg);
    assert_non_null(fx->mb);
}

/* The default: Sent, Drafts, \Sent, \Drafts. */
static void fx_init(struct fixture *fx, enum protect_mode mode)
{
    fx_init_with(fx, mode, NULL);
}

static void run(struct fixture *fx, const char *const *client, const char *const *upstream)
{
    imap_fx_run(&fx->b, client, upstream);
}

static void fx_free(struct fixture *fx)
{
    imap_fx_free(&fx->b);
    protect_mailboxes_free(&fx->mb);
    protect_mailboxes_config_free(&fx->mcfg);
}

#define UP_PLUS "> * OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND AUTH=PLAIN] ready"
#define CL_PLUS "< * OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND AUTH=PLAIN] ready"
#define UP_SYNC "> * OK [CAPABILITY IMAP4rev1 MULTIAPPEND AUTH=PLAIN] ready"
#define CL_SYNC "< * OK [CAPABILITY IMAP4rev1 MULTIAPPEND AUTH=PLAIN] ready"
/* The greeting and "a LOGIN u p" as each side sees them. */
#define CL_LOGIN_PLUS \
    CL_PLUS, "> a LOGIN u p", "< a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] Logged in"
#define UP_LOGIN_PLUS \
    UP_PLUS, "< a LOGIN u p", "> a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] Logged in"
#define CL_LOGIN_SYNC \
    CL_SYNC, "> a LOGIN u p", "< a OK [CAPABILITY IMAP4rev1 MULTIAPPEND] Logged in"
#define UP_LOGIN_SYNC \
    UP_SYNC, "< a LOGIN u p", "> a OK [CAPABILITY IMAP4rev1 MULTIAPPEND] Logged in"

/* ---- tests ------------------------------------------------------------------------- */

/* A mailbox that is not protected: streamed exactly as without hooks (the
 * upstream's own "+" is relayed, nothing is held) - known from a LIST
 * response with the default configuration, by name with a configuration
 * of names only. */
static void test_plain_mailbox_streamed(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    static const char *const client[] = {
        CL_LOGIN_PLUS,
        "> l LIST \"\" INBOX",
        "< * LIST (\\HasNoChildren) \"/\" INBOX",
        "< l OK List completed.",
        "> b APPEND INBOX (\\Seen) {5}",
        "< + OK",
        ">>hello\r\n",
        "< b OK [APPENDUID 1 7] Append completed.",
        "> c APPEND INBOX {5}",
        "< + Ready for literal data",
        ">>world\r\n",
        "< c OK [APPENDUID 1 8] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_PLUS,
        "< l LIST \"\" INBOX",
        "> * LIST (\\HasNoChildren) \"/\" INBOX",
        "> l OK List completed.",
        "<@LIST \"\" \"INBOX\"",
        "> * LIST (\\HasNoChildren) \"/\" INBOX",
        ">@OK List completed.",
        "< b APPEND INBOX (\\Seen) {5+}",
        "< hello",
        "> b OK [APPENDUID 1 7] Append completed.",
        "< c APPEND INBOX {5}",
        "> + Ready for literal data",
        "< world",
        "> c OK [APPENDUID 1 8] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 0);
    assert_int_equal(fx.asks, 1); /* a relayed LIST without attributes teaches nothing */
    fx_free(&fx);
    /* names only: nothing to ask */
    fx_init_with(&fx, P_MARK, "Sent, Drafts");
    static const char *const client2[] = {
        CL_LOGIN_PLUS,
        "> b APPEND INBOX (\\Seen) {5}",
        "< + Ready for literal data",
        ">>hello\r\n",
        "< b OK [APPENDUID 1 7] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream2[] = {
        UP_LOGIN_PLUS,
        "< b APPEND INBOX (\\Seen) {5}",
        "> + Ready for literal data",
        "< hello",
        "> b OK [APPENDUID 1 7] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client2, upstream2);
    assert_int_equal(fx.protects, 0);
    fx_free(&fx);
}

/* Sent, a synchronizing literal from the client: the proxy answers "+ OK"
 * itself, protects, and the upstream (LITERAL+) gets the new size with the
 * flags and the date as written; APPENDUID comes back unchanged. Drafts
 * with a non-synchronizing one; a command pipelined behind keeps its place. */
static void test_protected_literal_plus_upstream(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    static const char *const client[] = {
        CL_LOGIN_PLUS,
        "> b APPEND Sent (\\Seen) \"21-Nov-2025 10:00:00 +0000\" {5}",
        "< + OK",
        ">>hello\r\n",
        "< b OK [APPENDUID 1 7] Append completed.",
        ">>c APPEND \"Drafts\" {3+}\r\nabc\r\nd NOOP\r\n",
        "< c OK [APPENDUID 2 1] Append completed.",
        "< d OK done",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_PLUS,
        "< b APPEND Sent (\\Seen) \"21-Nov-2025 10:00:00 +0000\" {28+}",
        "< X-Test-Protected: yes",
        "< hello",
        "> b OK [APPENDUID 1 7] Append completed.",
        "< c APPEND \"Drafts\" {26+}",
        "< X-Test-Protected: yes",
        "< abc",
        "< d NOOP",
        "> c OK [APPENDUID 2 1] Append completed.",
        "> d OK done",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 2);
    fx_free(&fx);
}

/* An upstream without LITERAL+: synchronizing literals, the data held
 * until its "+" (consumed, not relayed). MULTIAPPEND: each message
 * protected, one command upstream. */
static void test_protected_sync_upstream_multiappend(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    static const char *const client[] = {
        CL_LOGIN_SYNC,
        ">>b APPEND Drafts (\\Draft) {3+}\r\nabc (\\Seen) {2+}\r\nde\r\n",
        "< b OK [APPENDUID 2 5:6] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_SYNC,
        "< b APPEND Drafts (\\Draft) {26}",
        "> + OK",
        "< X-Test-Protected: yes",
        "< abc (\\Seen) {25}",
        "> + OK",
        "< X-Test-Protected: yes",
        "< de",
        "> b OK [APPENDUID 2 5:6] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 2);
    fx_free(&fx);
}

/* The vault write fails (answered later) or the hook refuses at once: a
 * tagged NO with the hook's code; the upstream never hears of the APPEND. */
static void test_refused_nothing_upstream(void **state)
{
    (void)state;
    for (int m = 0; m < 2; m++) {
        static struct fixture fx;
        fx_init(&fx, m == 0 ? P_FAIL : P_FAIL_NOW);
        static const char *const client0[] = {
            CL_LOGIN_PLUS,
            "> b APPEND Sent {5}",
            "< + OK",
            ">>hello\r\nc NOOP\r\n",
            "< b NO [UNAVAILABLE] Vault write failed.",
            "< c OK done",
            "x",
            NULL,
        };
        static const char *const client1[] = {
            CL_LOGIN_PLUS,
            ">>b APPEND Sent (\\Seen) {3+}\r\nabc (\\Seen) {3+}\r\ndef\r\nc NOOP\r\n",
            "< b NO [CANNOT] No address for this login.",
            "< c OK done",
            "x",
            NULL,
        };
        static const char *const upstream[] = {
            UP_LOGIN_PLUS,
            "< c NOOP",
            "> c OK done",
            "<$",
            NULL,
        };
        run(&fx, m == 0 ? client0 : client1, upstream);
        assert_int_equal(fx.protects, 1);
        fx_free(&fx);
    }
}

/* Over max_protected_append: NO [TOOBIG] as Dovecot says it, nothing
 * held or sent; a non-synchronizing literal's data is skipped; a second
 * message that makes the total too large refuses the command. */
static void test_too_big(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init_with(&fx, P_MARK, "Sent");
    fx.b.cfg.max_protected_append = 10;
    static const char *const client[] = {
        CL_LOGIN_PLUS,
        "> b APPEND Sent {11}",
        "< b NO [TOOBIG] Message too large.",
        ">>c APPEND Sent {11+}\r\n0123456789a\r\n",
        "< c NO [TOOBIG] Message too large.",
        ">>d APPEND Sent {6+}\r\n012345 {5}\r\n",
        "< d NO [TOOBIG] Message too large.",
        "> e APPEND INBOX {11}",
        "< + go",
        ">>0123456789a\r\n",
        "< e OK Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_PLUS,
        "< e APPEND INBOX {11}",
        "> + go",
        "< 0123456789a",
        "> e OK Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 0);
    fx_free(&fx);
}

/* SPECIAL-USE: a relayed LIST response (unchanged) teaches that "Sent
 * Items" is \Sent; a mailbox never listed is asked about with the proxy's
 * own LIST ... RETURN (SPECIAL-USE) (not shown to the client) before the
 * APPEND goes upstream; one that turns out plain is sent unchanged. */
static void test_special_use(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    static const char *const client[] = {
        CL_PLUS,
        "> a LOGIN u p",
        "< a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND LIST-EXTENDED SPECIAL-USE] Logged in",
        "> b LIST \"\" *",
        "< * LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"",
        "< * LIST (\\HasNoChildren) \"/\" {5}",
        "< INBOX",
        "< b OK List completed.",
        ">>c APPEND \"Sent Items\" {2+}\r\nhi\r\n",
        "< c OK [APPENDUID 3 1] Append completed.",
        ">>d APPEND Archive2 {2+}\r\nyo\r\n",
        "< d OK [APPENDUID 4 1] Append completed.",
        ">>e APPEND Other {2+}\r\nok\r\n",
        "< e OK [APPENDUID 5 1] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_PLUS,
        "< a LOGIN u p",
        "> a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND LIST-EXTENDED SPECIAL-USE] Logged in",
        "< b LIST \"\" *",
        ">>* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n"
        "* LIST (\\HasNoChildren) \"/\" {5}\r\nINBOX\r\n",
        "> b OK List completed.",
        "< c APPEND \"Sent Items\" {25+}",
        "< X-Test-Protected: yes",
        "< hi",
        "> c OK [APPENDUID 3 1] Append completed.",
        "<@LIST \"\" \"Archive2\" RETURN (SPECIAL-USE)",
        "> * LIST (\\HasNoChildren \\Drafts) \"/\" Archive2",
        ">@OK List completed.",
        "< d APPEND Archive2 {25+}",
        "< X-Test-Protected: yes",
        "< yo",
        "> d OK [APPENDUID 4 1] Append completed.",
        "<@LIST \"\" \"Other\" RETURN (SPECIAL-USE)",
        "> * LIST (\\HasNoChildren) \"/\" Other",
        ">@OK List completed.",
        "< e APPEND Other {2+}",
        "< ok",
        "> e OK [APPENDUID 5 1] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 2);
    assert_int_equal(fx.lists_seen, 4);
    assert_int_equal(fx.asks, 2);
    fx_free(&fx);
}

/* The mailbox name itself as a literal: held, decided when complete. */
static void test_mailbox_literal(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    static const char *const client[] = {
        CL_LOGIN_SYNC,
        "> b APPEND {4}",
        "< + OK",
        "> Sent {2}",
        "< + OK",
        ">>hi\r\n",
        "< b OK [APPENDUID 1 2] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_SYNC,
        "< b APPEND {4}",
        "> + OK",
        "< Sent {25}",
        "> + OK",
        "< X-Test-Protected: yes",
        "< hi",
        "> b OK [APPENDUID 1 2] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 1);
    fx_free(&fx);
}

/* Byte at a time: a MULTIAPPEND with a synchronizing and a
 * non-synchronizing literal, flags and a date, one byte per write. */
static void test_byte_at_a_time(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_MARK);
    const char *parts[] = {
        "b APPEND Sent (\\Seen \\Flagged) \"21-Nov-2025 10:00:00 +0000\" {5}\r\n", "+ OK",
        "hello (\\Draft) {3+}\r\nabc\r\n", NULL};
    const char *steps[600];
    size_t n = 0;
    steps[n++] = CL_PLUS;
    steps[n++] = "> a LOGIN u p";
    steps[n++] = "< a OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] Logged in";
    static char bytes[400][4];
    size_t nb = 0;
    for (size_t p = 0; parts[p]; p++) {
        if (strcmp(parts[p], "+ OK") == 0) {
            steps[n++] = "< + OK";
            continue;
        }
        for (const char *c = parts[p]; *c; c++) {
            snprintf(bytes[nb], sizeof(bytes[nb]), ">>%c", *c);
            steps[n++] = "~1";
            steps[n++] = bytes[nb++];
        }
    }
    steps[n++] = "< b OK [APPENDUID 1 3:4] Append completed.";
    steps[n++] = "x";
    steps[n++] = NULL;
    static const char *const upstream[] = {
        UP_LOGIN_PLUS,
        "< b APPEND Sent (\\Seen \\Flagged) \"21-Nov-2025 10:00:00 +0000\" {28+}",
        "< X-Test-Protected: yes",
        "< hello (\\Draft) {26+}",
        "< X-Test-Protected: yes",
        "< abc",
        "> b OK [APPENDUID 1 3:4] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, steps, upstream);
    assert_int_equal(fx.protects, 2);
    fx_free(&fx);
}

/* The real protect_append over a real vault: the upstream receives our
 * encrypted format (no plaintext marker) with the size it was announced
 * with; a 300 kB message goes through in chunks. */
static void test_real_vault(void **state)
{
    (void)state;
    static struct fixture fx;
    fx_init(&fx, P_REAL);
    struct vt t;
    vt_init(&t, "imap-append");
    char *err = NULL;
    assert_int_equal(kme_vault_open(&t.cfg, &fx.vault, &err), 0);
    static char big[300 * 1024 + 64];
    size_t bl = (size_t)snprintf(big, sizeof(big),
                                 "Subject: secret plan\r\nX-Marker: PLAINTEXT-42\r\n\r\n");
    while (bl < 300 * 1024)
        bl += (size_t)snprintf(big + bl, sizeof(big) - bl, "PLAINTEXT-BODY line %zu\r\n", bl);
    static char hdr[80];
    snprintf(hdr, sizeof(hdr), "> b APPEND Sent (\\Seen) {%zu}", bl);
    static char send_body[300 * 1024 + 80];
    snprintf(send_body, sizeof(send_body), ">>%s\r\n", big);
    const char *const client[] = {
        CL_LOGIN_PLUS,
        hdr,
        "< + OK",
        send_body,
        "< b OK [APPENDUID 1 9] Append completed.",
        "x",
        NULL,
    };
    static const char *const upstream[] = {
        UP_LOGIN_PLUS,
        "<^b APPEND Sent (\\Seen) {",
        "<L",
        "< ",
        "> b OK [APPENDUID 1 9] Append completed.",
        "<$",
        NULL,
    };
    run(&fx, client, upstream);
    assert_int_equal(fx.protects, 1);
    assert_non_null(fx.b.upstream.lit);
    fx.b.upstream.lit[fx.b.upstream.lit_len] = '\0';
    assert_true(fx.b.upstream.lit_len > bl);
    assert_null(memmem(fx.b.upstream.lit, fx.b.upstream.lit_len, "PLAINTEXT", 9));
    assert_null(memmem(fx.b.upstream.lit, fx.b.upstream.lit_len, "secret plan", 11));
    assert_non_null(strcasestr(fx.b.upstream.lit, "x-qkd-encrypted"));
    kme_vault_close(&fx.vault);
    vt_cleanup(&t);
    fx_free(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_mailbox_streamed),
        cmocka_unit_test(test_protected_literal_plus_upstream),
        cmocka_unit_test(test_protected_sync_upstream_multiappend),
        cmocka_unit_test(test_refused_nothing_upstream),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_special_use),
        cmocka_unit_test(test_mailbox_literal),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_real_vault),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
