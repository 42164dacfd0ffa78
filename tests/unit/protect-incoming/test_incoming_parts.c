/* The pieces of protect_in without a KME: views (normalisation, rendered
 * structures), metadata blobs (round trip, every truncation and bit flip
 * refused or harmless), notices (headers copied, Subject prefixed,
 * deterministic, valid for every reason), readers and the access rule. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_render.h"
#include "incoming_internal.h"

static protect_in_view *build(const char *msg, const struct pi_binding *b)
{
    size_t n = strlen(msg);
    uint8_t *p = malloc(n + 1);
    memcpy(p, msg, n);
    protect_in_view *v = NULL;
    assert_int_equal(pi_view_build(p, n, PROTECT_IN_DECRYPTED, "k/abc", b, NULL, &v), 0);
    return v;
}

static const char MSG[] =
    "From: a@example.org\nTo: b@example.org\nSubject: hi\n"
    "Content-Type: multipart/alternative; boundary=x\n\n"
    "--x\nContent-Type: text/plain\n\nplain\n--x\nContent-Type: text/html\n\n"
    "<p>html</p>\n--x--\n";

static void test_view_normalises(void **state)
{
    (void)state;
    char *addrs[] = {"b@example.org"};
    struct pi_binding b = {addrs, 1};
    protect_in_view *v = build(MSG, &b);
    /* LF -> CRLF as Dovecot serves it */
    size_t lines = 0;
    for (const char *p = MSG; *p != '\0'; p++)
        lines += *p == '\n';
    assert_int_equal(protect_in_view_size(v), strlen(MSG) + lines);
    const struct mime_struct *ms = protect_in_view_struct(v);
    assert_int_equal(mime_struct_part_count(ms), 3);
    assert_non_null(strstr(protect_in_view_bodystructure(v, NULL), "\"alternative\""));
    assert_non_null(strstr(protect_in_view_envelope(v, NULL), "\"hi\""));
    assert_int_equal(v->binding.count, 1);
    assert_string_equal(v->binding.addrs[0], "b@example.org");
    assert_int_equal(v->refs, 1);
    protect_in_view *r = protect_in_view_ref(v);
    protect_in_view_unref(&r);
    assert_null(r);
    protect_in_view_unref(&v);
}

static void test_meta_roundtrip_and_damage(void **state)
{
    (void)state;
    char *addrs[] = {"b@example.org", "c@example.org"};
    struct pi_binding b = {addrs, 2};
    protect_in_view *v = build(MSG, &b);
    uint8_t *blob = NULL;
    size_t len = 0;
    assert_int_equal(pi_meta_encode(v, 65536, &blob, &len), 0);
    protect_in_view *s = NULL;
    assert_int_equal(pi_meta_decode(blob, len, "k/abc", NULL, &s), 0);
    assert_false(protect_in_view_complete(s));
    assert_int_equal(protect_in_view_size(s), protect_in_view_size(v));
    assert_string_equal(protect_in_view_bodystructure(s, NULL),
                        protect_in_view_bodystructure(v, NULL));
    assert_string_equal(protect_in_view_body(s, NULL), protect_in_view_body(v, NULL));
    assert_string_equal(protect_in_view_envelope(s, NULL), protect_in_view_envelope(v, NULL));
    assert_int_equal(s->binding.count, 2);
    assert_string_equal(s->binding.addrs[1], "c@example.org");
    /* the header sections agree */
    struct imap_section sec = {.kind = IMAP_SECTION_HEADER};
    struct imap_section_data x = {0}, y = {0};
    assert_int_equal(imap_render_section(protect_in_view_struct(s), &sec, &x), 0);
    assert_int_equal(imap_render_section(protect_in_view_struct(v), &sec, &y), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.ptr, y.ptr, x.len);
    protect_in_view_unref(&s);
    /* another identity: refused */
    assert_int_equal(pi_meta_decode(blob, len, "k/other", NULL, &s), PROTECT_IN_EINVAL);
    /* every truncation is refused */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(pi_meta_decode(blob, cut, "k/abc", NULL, &s), PROTECT_IN_EINVAL);
    /* any flipped bit: refused, or decoded to some view without harm */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            blob[i] ^= (uint8_t)(1 << bit);
            int ret = pi_meta_decode(blob, len, "k/abc", NULL, &s);
            assert_true(ret == 0 || ret == PROTECT_IN_EINVAL);
            protect_in_view_unref(&s);
            blob[i] ^= (uint8_t)(1 << bit);
        }
    }
    free(blob);
    /* a header larger than the limit is left out of the blob */
    assert_int_equal(pi_meta_encode(v, 10, &blob, &len), 0);
    assert_int_equal(pi_meta_decode(blob, len, "k/abc", NULL, &s), 0);
    assert_null(protect_in_view_struct(s));
    assert_int_equal(protect_in_view_size(s), protect_in_view_size(v));
    protect_in_view_unref(&s);
    free(blob);
    protect_in_view_unref(&v);
}

static const char OUTER[] =
    "Received: from mx by mx\r\n"
    "From: Sam <sam@example.org>\r\n"
    "To: alice@example.org,\r\n bob@example.org\r\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    "Subject: =?UTF-8?B?RW5jcnlwdGVk?=\r\n"
    "Message-ID: <x@example.org>\r\n"
    "References: <p@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; "
    "boundary=b\r\n"
    "X-QKD-Key-ID: 11111111-2222-3333-4444-555555555555\r\n"
    "\r\n";

static void test_notice(void **state)
{
    (void)state;
    for (int r = PROTECT_IN_R_MALFORMED; r < PROTECT_IN_REASON_COUNT; r++) {
        struct pi_notice_facts f = {.reason = (enum protect_in_reason)r,
                                    .detail = "detail \x1b[31m text",
                                    .outer = (const uint8_t *)OUTER,
                                    .outer_len = strlen(OUTER),
                                    .login = "bob"};
        uint8_t *m1 = NULL, *m2 = NULL;
        size_t l1, l2;
        assert_int_equal(pi_notice_text(&f, &m1, &l1), 0);
        assert_int_equal(pi_notice_text(&f, &m2, &l2), 0);
        assert_int_equal(l1, l2); /* deterministic */
        assert_memory_equal(m1, m2, l1);
        char *t = calloc(1, l1 + 1);
        memcpy(t, m1, l1);
        assert_non_null(strstr(t, "From: Sam <sam@example.org>\r\n"));
        assert_non_null(strstr(t, "To: alice@example.org,\r\n bob@example.org\r\n"));
        assert_non_null(strstr(t, "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n"));
        assert_non_null(strstr(t, "Message-ID: <x@example.org>\r\n"));
        assert_non_null(strstr(t, "References: <p@example.org>\r\n"));
        assert_non_null(strstr(t, "Subject: [QuMail: not decrypted] "
                                  "=?UTF-8?B?RW5jcnlwdGVk?=\r\n"));
        assert_non_null(strstr(t, "Content-Type: text/plain; charset=utf-8\r\n"));
        assert_non_null(strstr(t, protect_in_reason_name((enum protect_in_reason)r)));
        assert_null(strstr(t, "Received:"));
        assert_null(strstr(t, "X-QKD"));
        assert_null(strstr(t, "\x1b")); /* escaped */
        /* every line ends in CRLF, none is too long */
        const char *line = t;
        for (const char *p = t; *p != '\0'; p++) {
            if (*p == '\n') {
                assert_true(p > t && p[-1] == '\r');
                assert_true(p - line <= 998);
                line = p + 1;
            }
        }
        free(t);
        free(m1);
        free(m2);
        protect_in_view *v = NULL;
        assert_int_equal(pi_notice_view(&f, "k/x", NULL, &v), 0);
        assert_int_equal(protect_in_view_reason(v), r);
        assert_true(protect_in_view_complete(v));
        assert_int_equal(mime_struct_part_count(protect_in_view_struct(v)), 1);
        protect_in_view_unref(&v);
    }
    /* nothing known about the message */
    struct pi_notice_facts f = {.reason = PROTECT_IN_R_FETCH};
    protect_in_view *v = NULL;
    assert_int_equal(pi_notice_view(&f, NULL, NULL, &v), 0);
    const char *d = (const char *)mime_struct_data(protect_in_view_struct(v));
    assert_memory_equal(d, "Subject: [QuMail: not decrypted]\r\n", 34);
    assert_null(protect_in_view_id(v));
    protect_in_view_unref(&v);
    assert_string_equal(protect_in_reason_name(PROTECT_IN_R_KME_UNAVAILABLE),
                        "kme-unavailable");
    assert_string_equal(protect_in_reason_name((enum protect_in_reason)999), "unknown");
}

static void test_readers_and_access(void **state)
{
    (void)state;
    struct protect_in_config cfg;
    protect_in_config_defaults(&cfg);
    const struct protect_in_address map[] = {{"alice", "Team@Example.org"},
                                             {"alice", "alice@example.org"}};
    cfg.addresses = map;
    cfg.n_addresses = 2;
    cfg.default_domain = "example.org";
    /* protect_in_new needs a vault; the reader functions do not use it */
    protect_in pi_stub;
    memset(&pi_stub, 0, sizeof(pi_stub));
    pi_stub.cfg = cfg;
    pi_stub.default_domain = "example.org";
    char *err = NULL;
    assert_int_equal(pi_addrmap_build(&cfg, &pi_stub.map, &pi_stub.n_map, &err), 0);
    protect_in_reader *a = protect_in_reader_new(&pi_stub, "alice");
    assert_int_equal(protect_in_reader_address_count(a), 2); /* no duplicate */
    assert_string_equal(protect_in_reader_address(a, 0), "alice@example.org");
    assert_string_equal(protect_in_reader_address(a, 1), "team@example.org");
    assert_null(protect_in_reader_address(a, 2));
    protect_in_reader *x = protect_in_reader_new(&pi_stub, "X@Other.example");
    assert_int_equal(protect_in_reader_address_count(x), 1);
    assert_string_equal(protect_in_reader_address(x, 0), "x@other.example");
    assert_string_equal(protect_in_reader_login(x), "X@Other.example");

    char *team[] = {"team@example.org"};
    struct pi_binding bt = {team, 1}, none = {NULL, 0};
    assert_int_equal(pi_access(&pi_stub, a, &bt), PROTECT_IN_DECRYPTED);
    assert_int_equal(pi_access(&pi_stub, x, &bt), PROTECT_IN_R_NOT_ALLOWED);
    assert_int_equal(pi_access(&pi_stub, x, &none), PROTECT_IN_R_UNBOUND);
    pi_stub.cfg.release_unbound = true;
    assert_int_equal(pi_access(&pi_stub, x, &none), PROTECT_IN_DECRYPTED);
    pi_stub.default_domain = NULL;
    protect_in_reader *nobody = protect_in_reader_new(&pi_stub, "nobody");
    assert_int_equal(protect_in_reader_address_count(nobody), 0);
    assert_int_equal(pi_access(&pi_stub, nobody, &bt), PROTECT_IN_R_NO_IDENTITY);
    pi_stub.cfg.recipient_check = PROTECT_IN_CHECK_OFF;
    assert_int_equal(pi_access(&pi_stub, nobody, &bt), PROTECT_IN_DECRYPTED);
    protect_in_reader_free(&a);
    protect_in_reader_free(&x);
    protect_in_reader_free(&nobody);
    assert_null(a);
    pi_addrmap_free(pi_stub.map, pi_stub.n_map);
    /* a bad address in the map is a configuration error */
    const struct protect_in_address bad[] = {{"bob", "bob\x01@example.org"}};
    cfg.addresses = bad;
    cfg.n_addresses = 1;
    struct pi_addrmap_entry *m = NULL;
    size_t n = 0;
    assert_int_equal(pi_addrmap_build(&cfg, &m, &n, &err), PROTECT_IN_EINVAL);
    assert_non_null(err);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_normalises),
        cmocka_unit_test(test_meta_roundtrip_and_damage),
        cmocka_unit_test(test_notice),
        cmocka_unit_test(test_readers_and_access),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
