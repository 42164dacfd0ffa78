/* Transit header fields (INCOMING.md "Transit fields"): the fields the
 * delivery path put above the encrypted message appear above the
 * decrypted original in every item of the view (size, BODYSTRUCTURE,
 * ENVELOPE, sections, durable metadata); only allow-listed trace fields,
 * only those above the writer's block, octets exactly as stored. Real
 * KME simulator, vault and mime; plus the pure functions on their own. */
#include "pi_test.h"
#include "incoming_internal.h"

static struct pi_env env;

static int setup(void **state)
{
    (void)state;
    pi_suite_begin(&env, "transit", 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pi_suite_end(&env);
    return 0;
}

/* The original: it was submitted with a Received field of its own (the
 * writer keeps it in its block, FORMAT-SPEC.md 2.2). */
static const char ORIGINAL[] =
    "Received: from client.example.org by submit.example.org; "
    "Mon, 7 Dec 2026 09:59:59 +0000\r\n"
    "From: Sam Sender <sam@example.org>\r\n"
    "To: Alice <alice@example.org>\r\n"
    "Subject: Transit test\r\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <t1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Alice.\r\n";

/* What LMTP and Postfix put on top, with a folded Received (kept octet
 * for octet), and two fields that are not on the allow-list. */
static const char TRANSIT_IN[] =
    "Return-Path: <sam@example.org>\r\n"
    "Delivered-To: alice@example.org\r\n"
    "Received: from mx.example.org\r\n"
    "\tby imap.example.org with LMTP id 4f2a\r\n"
    "\t(envelope-from <sam@example.org>)\r\n"
    "\tfor <alice@example.org>; Mon, 07 Dec 2026 10:00:02 +0000\r\n"
    "From: Mallory <mallory@evil.example>\r\n"
    "X-Spam-Flag: NO\r\n"
    "Received: from gw.example.org (gw.example.org [127.0.0.1])\r\n"
    "  by mx.example.org (Postfix) with ESMTP id 7A1B2\r\n"
    "  for <alice@example.org>; Mon, 07 Dec 2026 10:00:01 +0000\r\n";

/* TRANSIT_IN without the fields not allowed. */
static const char TRANSIT_OUT[] =
    "Return-Path: <sam@example.org>\r\n"
    "Delivered-To: alice@example.org\r\n"
    "Received: from mx.example.org\r\n"
    "\tby imap.example.org with LMTP id 4f2a\r\n"
    "\t(envelope-from <sam@example.org>)\r\n"
    "\tfor <alice@example.org>; Mon, 07 Dec 2026 10:00:02 +0000\r\n"
    "Received: from gw.example.org (gw.example.org [127.0.0.1])\r\n"
    "  by mx.example.org (Postfix) with ESMTP id 7A1B2\r\n"
    "  for <alice@example.org>; Mon, 07 Dec 2026 10:00:01 +0000\r\n";

static char *concat(const char *a, const uint8_t *b, size_t blen, size_t *len_r)
{
    size_t alen = strlen(a);
    char *s = malloc(alen + blen + 1);
    assert_non_null(s);
    memcpy(s, a, alen);
    memcpy(s + alen, b, blen);
    s[alen + blen] = '\0';
    *len_r = alen + blen;
    return s;
}

static void expect_same_summary(protect_in_view *sum, protect_in_view *full)
{
    assert_false(protect_in_view_complete(sum));
    assert_int_equal(protect_in_view_size(sum), protect_in_view_size(full));
    assert_string_equal(protect_in_view_bodystructure(sum, NULL),
                        protect_in_view_bodystructure(full, NULL));
    assert_string_equal(protect_in_view_body(sum, NULL), protect_in_view_body(full, NULL));
    assert_string_equal(protect_in_view_envelope(sum, NULL),
                        protect_in_view_envelope(full, NULL));
    const char *specs[] = {"HEADER", "HEADER.FIELDS (Received Return-Path From)",
                           "HEADER.FIELDS.NOT (Received)"};
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        struct imap_section sec;
        uint32_t path[4];
        const char *fields[8];
        char names[128];
        assert_int_equal(imap_render_section_parse(specs[i], &sec, path, 4, fields, 8,
                                                   names), 0);
        struct imap_section_data a = {0}, b = {0};
        assert_int_equal(imap_render_section(protect_in_view_struct(sum), &sec, &a), 0);
        assert_int_equal(imap_render_section(protect_in_view_struct(full), &sec, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.ptr, b.ptr, a.len);
        imap_section_data_free(&a);
        imap_section_data_free(&b);
    }
}

static void wait_meta(uint64_t n)
{
    struct protect_in_stats st;
    while (protect_in_get_stats(env.pi, &st), st.meta_stored + st.meta_kept < n)
        uv_run(&env.loop, UV_RUN_NOWAIT);
}

/* Transit fields above: the view is they + the original, every item from
 * that; after a restart the summary from the vault agrees. A second
 * delivered copy of the same ciphertext with other transit fields is
 * another view, with its own metadata. */
static void test_transit_view(void **state)
{
    (void)state;
    size_t clen;
    uint8_t *c = pi_encrypt(&env, ORIGINAL, MIME_ALG_OTP_POLY1305, PI_TO_ALICE, &clen);
    size_t dlen, d2len, elen;
    char *delivered = concat(TRANSIT_IN, c, clen, &dlen);
    const char second[] = "Delivered-To: team@example.org\r\n";
    char *delivered2 = concat(second, c, clen, &d2len);
    char *expect = concat(TRANSIT_OUT, (const uint8_t *)ORIGINAL, strlen(ORIGINAL), &elen);
    char *plain_hint = pi_hint(c, clen);
    char *hint = pi_hint((const uint8_t *)delivered, dlen);
    char *hint2 = pi_hint((const uint8_t *)delivered2, d2len);
    /* the hint names the delivered copy: "t/<tag>/k/<key ID>" */
    assert_int_equal(strncmp(hint, "t/", 2), 0);
    /* (the ciphertext alone has a tag too: the writer kept the
     * original's Received field) */
    const char *kpart = plain_hint + 3 + PI_TRANSIT_TAG_LEN;
    assert_int_equal(strncmp(kpart, "k/", 2), 0);
    assert_string_equal(hint + 3 + PI_TRANSIT_TAG_LEN, kpart);
    assert_string_not_equal(hint, plain_hint);
    assert_string_not_equal(hint, hint2);

    /* the probe's answer gives the hint the whole message gives */
    char probe[4096];
    snprintf(probe, sizeof(probe),
             "Return-Path: <sam@example.org>\r\nDelivered-To: alice@example.org\r\n"
             "Received: from mx.example.org\r\n"
             "\tby imap.example.org with LMTP id 4f2a\r\n"
             "\t(envelope-from <sam@example.org>)\r\n"
             "\tfor <alice@example.org>; Mon, 07 Dec 2026 10:00:02 +0000\r\n"
             "Received: from gw.example.org (gw.example.org [127.0.0.1])\r\n"
             "  by mx.example.org (Postfix) with ESMTP id 7A1B2\r\n"
             "  for <alice@example.org>; Mon, 07 Dec 2026 10:00:01 +0000\r\n"
             "Received: from client.example.org by submit.example.org; "
             "Mon, 7 Dec 2026 09:59:59 +0000\r\n"
             "Content-Type: multipart/encrypted;\r\n"
             "\tprotocol=\"application/x-qkd-encrypted\";\r\n\tboundary=\"x\"\r\n"
             "X-QKD-Key-ID: %s\r\n\r\n", kpart + 2);
    char *probe_hint = pi_hint((const uint8_t *)probe, strlen(probe));
    assert_string_equal(probe_hint, hint);
    free(probe_hint);

    struct pi_msg m = {(const uint8_t *)delivered, dlen, 0, false, 0};
    struct pi_msg m2 = {(const uint8_t *)delivered2, d2len, 0, false, 0};
    struct protect_in_config cfg;
    pi_config(&cfg);
    cfg.recipient_check = PROTECT_IN_CHECK_OFF;
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, hint, &m);
    pi_expect_plain(v, expect);
    assert_string_equal(protect_in_view_id(v), hint);
    /* the From the path put on top is not in the view */
    const struct mime_struct *vs = protect_in_view_struct(v);
    assert_null(memmem(mime_struct_data(vs), mime_struct_size(vs), "mallory", 7));
    assert_null(memmem(mime_struct_data(vs), mime_struct_size(vs), "X-Spam-Flag", 11));
    protect_in_view_unref(&v);

    /* the second copy: the keys from the vault, its own transit field */
    size_t e2len;
    char *expect2 = concat(second, (const uint8_t *)ORIGINAL, strlen(ORIGINAL), &e2len);
    v = pi_open_wait(&env, alice, hint2, &m2);
    pi_expect_plain(v, expect2);
    assert_string_equal(protect_in_view_id(v), hint2);
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.decrypted, 2);
    assert_true(st.keys_from_vault > 0);
    wait_meta(2);
    pi_reader_close_as(&env, &alice);

    /* restart: each copy's summary from its own metadata equals its view */
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *sum = NULL, *sum2 = NULL;
    assert_int_equal(protect_in_lookup(env.pi, alice, hint, PROTECT_IN_SUMMARY, &sum), 1);
    assert_int_equal(protect_in_lookup(env.pi, alice, hint2, PROTECT_IN_SUMMARY, &sum2), 1);
    protect_in_view *full = pi_open_wait(&env, alice, hint, &m);
    protect_in_view *full2 = pi_open_wait(&env, alice, hint2, &m2);
    pi_expect_plain(full, expect);
    pi_expect_plain(full2, expect2);
    expect_same_summary(sum, full);
    expect_same_summary(sum2, full2);
    assert_int_not_equal(protect_in_view_size(sum), protect_in_view_size(sum2));
    protect_in_view_unref(&sum);
    protect_in_view_unref(&sum2);
    protect_in_view_unref(&full);
    protect_in_view_unref(&full2);
    pi_reader_close_as(&env, &alice);

    free(expect);
    free(expect2);
    free(hint);
    free(hint2);
    free(plain_hint);
    free(delivered);
    free(delivered2);
    free(c);
}

/* No transit fields: the view is the original, the identity untagged. */
static void test_no_transit(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, ORIGINAL, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    /* the writer's block holds the original's Received: not transit */
    assert_int_equal(strncmp(pm.hint, "t/", 2), 0);
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, ORIGINAL);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm);

    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    assert_int_equal(strncmp(pm.hint, "k/", 2), 0);
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    assert_string_equal(protect_in_view_id(v), pm.hint);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm);
}

/* ---- the pure functions ------------------------------------------------------------ */

static void expect_transit(const char *outer, const char *plain, const char *want)
{
    uint8_t *out = NULL;
    size_t len = 1;
    assert_int_equal(pi_transit_fields((const uint8_t *)outer, strlen(outer),
                                       (const uint8_t *)plain, strlen(plain), &out, &len),
                     0);
    assert_int_equal(len, strlen(want));
    if (len > 0)
        assert_memory_equal(out, want, len);
    else
        assert_null(out);
    free(out);
}

static void test_transit_fields(void **state)
{
    (void)state;
    const char writer[] = "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted;\r\n"
                          "\tboundary=\"b\"\r\nX-QKD-Version: 2\r\n\r\n";
    char outer[2048];
    /* only allow-listed fields, in order, folding kept */
    snprintf(outer, sizeof(outer),
             "From: x@evil.example\r\nReceived: a\r\n b\r\nSubject: no\r\n"
             "Authentication-Results: mx; spf=pass\r\nDKIM-Signature: v=1\r\n"
             "ARC-Seal: i=1\r\nX-Original-To: a@example.org\r\n"
             "From: Sam <sam@example.org>\r\n%s", writer);
    expect_transit(outer, "From: Sam <sam@example.org>\r\n\r\nbody\r\n",
                   "Received: a\r\n b\r\nAuthentication-Results: mx; spf=pass\r\n"
                   "X-Original-To: a@example.org\r\n");
    /* the writer's copies of the original's trace fields are not transit,
     * also when the original has LF line ends; fields identical to
     * earlier ones of the original are matched in order */
    snprintf(outer, sizeof(outer),
             "Received: t1\r\nReceived: r1\r\nReturn-Path: <p>\r\nReceived: r2\r\n"
             "From: s@example.org\r\nReceived: r3\r\n  folded\r\n%s", writer);
    expect_transit(outer,
                   "Received: r1\nReturn-Path: <p>\nReceived: r2\nFrom: s@example.org\n"
                   "Received: r3\n  folded\nX-Other: 1\n\nbody\n",
                   "Received: t1\r\n");
    /* everything matched: nothing above */
    expect_transit(outer + strlen("Received: t1\r\n"),
                   "Received: r1\r\nReturn-Path: <p>\r\nReceived: r2\r\n"
                   "Received: r3\r\n  folded\r\n\r\n",
                   "");
    /* a MIME-Version on top: the writer's block begins there, nothing above */
    snprintf(outer, sizeof(outer), "MIME-Version: 1.0\r\nReceived: t\r\n%s", writer);
    expect_transit(outer, "From: a@b\r\n\r\n", "");
    /* no header at all, garbage lines, LF outer */
    expect_transit("", "", "");
    expect_transit("garbage line\nReceived: t\nMIME-Version: 1.0\n\n", "\n",
                   "Received: t\n");
    /* a header cut short (no line end): the field ends in CRLF */
    expect_transit("Received: t", "", "Received: t\r\n");

    /* tags: none without trace fields; line ends do not matter */
    char t1[PI_TRANSIT_TAG_LEN + 1], t2[PI_TRANSIT_TAG_LEN + 1];
    const char *h1 = "Subject: x\r\nReceived: a\r\n b\r\n\r\n";
    const char *h2 = "Received: a\n b\nContent-Type: text/plain\n\n";
    assert_int_equal(pi_transit_tag((const uint8_t *)"Subject: x\r\n\r\n", 14, t1), 0);
    assert_string_equal(t1, "");
    assert_int_equal(pi_transit_tag((const uint8_t *)h1, strlen(h1), t1), 1);
    assert_int_equal(pi_transit_tag((const uint8_t *)h2, strlen(h2), t2), 1);
    assert_string_equal(t1, t2);
    assert_int_equal(strlen(t1), PI_TRANSIT_TAG_LEN);
    const char *h3 = "Received: a\r\n c\r\n\r\n";
    assert_int_equal(pi_transit_tag((const uint8_t *)h3, strlen(h3), t2), 1);
    assert_string_not_equal(t1, t2);
}

/* Every allow-listed name is among the probe's fields (else the hint's
 * tag would never equal the identity's). */
static void test_probe_fields(void **state)
{
    (void)state;
    const char *names[] = {"Return-Path", "Received", "Received-SPF", "Delivered-To",
                           "X-Original-To", "Authentication-Results"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_true(pi_transit_allowed((const uint8_t *)names[i], strlen(names[i])));
        char pat[64];
        snprintf(pat, sizeof(pat), " %s ", names[i]);
        char probe[256];
        snprintf(probe, sizeof(probe), " %s ", PROTECT_IN_PROBE_FIELDS);
        for (char *p = probe; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        for (char *p = pat; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        assert_non_null(strstr(probe, pat));
    }
    const char *no[] = {"From", "DKIM-Signature", "ARC-Seal", "Subject", "Received-X"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(pi_transit_allowed((const uint8_t *)no[i], strlen(no[i])));
}

int main(void)
{
    pi_test_options();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transit_fields),
        cmocka_unit_test(test_probe_fields),
        cmocka_unit_test(test_transit_view),
        cmocka_unit_test(test_no_transit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
