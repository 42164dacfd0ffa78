/* BODYSTRUCTURE, BODY and ENVELOPE: fixed expected strings, each Dovecot
 * 2.3's answer for the same message (corpus files are checked against the
 * live server by tests/e2e/imap-render). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "imap_render.h"
#include "test_util.h"

static struct mime_struct *load(const char *name)
{
    char path[4096];
    size_t len;
    char *msg;
    struct mime_struct *ms = NULL;

    snprintf(path, sizeof(path), "%s/%s", RENDER_CORPUS_DIR, name);
    msg = read_file(path, &len);
    assert_non_null(msg);
    assert_int_equal(mime_struct_parse(msg, len, 0, &ms, NULL), 0);
    free(msg);
    return ms;
}

static void expect(const struct mime_struct *ms, int what, const char *want)
{
    struct imap_render_buf b = {0};
    if (what == 2)
        assert_int_equal(imap_render_envelope(ms, &b), 0);
    else
        assert_int_equal(imap_render_bodystructure(ms, what, &b), 0);
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    imap_render_buf_free(&b);
}

static void test_related_mixed(void **state)
{
    (void)state;
    struct mime_struct *ms = load("02-related-mixed.eml");
    expect(ms, 1,
           "(((((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)"
           "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 22 0 NIL NIL NIL NIL) "
           "\"alternative\" (\"boundary\" \"a\") NIL NIL NIL)(\"image\" \"png\" (\"name\" \"logo.png\") "
           "\"<logo@x>\" NIL \"base64\" 274 NIL (\"inline\" (\"filename\" \"logo.png\")) NIL "
           "\"http://example.org/logo.png\") \"related\" (\"type\" \"text/html\" \"boundary\" \"r\") "
           "NIL NIL NIL)(\"application\" \"octet-stream\" (\"name\" \"a b.bin\") NIL "
           "\"some\tbinary data\" \"base64\" 76 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" "
           "(\"filename\" \"a b.bin\" \"size\" \"57\")) (\"en\" \"de-CH\") NIL) \"mixed\" "
           "(\"boundary\" \"m\") NIL NIL NIL)"
               + 1); // NOLINT(clang-diagnostic-string-plus-int): drops the outer '(' on purpose
    expect(ms, 0,
           "((((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0)(\"text\" \"html\" "
           "(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 22 0) \"alternative\")(\"image\" \"png\" "
           "(\"name\" \"logo.png\") \"<logo@x>\" NIL \"base64\" 274) \"related\")(\"application\" "
           "\"octet-stream\" (\"name\" \"a b.bin\") NIL \"some\tbinary data\" \"base64\" 76) \"mixed\")");
    mime_struct_free(&ms);
}

static void test_digest(void **state)
{
    (void)state;
    struct mime_struct *ms = load("04-digest.eml");
    expect(ms, 0,
           "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 49 (NIL \"first\" ((NIL NIL \"one\" "
           "\"example.org\")) ((NIL NIL \"one\" \"example.org\")) ((NIL NIL \"one\" \"example.org\")) "
           "NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 8 0) 3)"
           "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0)(\"message\" \"rfc822\" "
           "NIL NIL NIL \"7bit\" 93 (NIL \"third\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" "
           "(\"charset\" \"iso-8859-1\") NIL NIL \"7bit\" 10 0) 4) \"digest\")");
    mime_struct_free(&ms);
}

static void test_empty_parts(void **state)
{
    (void)state;
    struct mime_struct *ms = load("09-empty-parts.eml");
    expect(ms, 0,
           "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
           "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
           "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
           "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
           "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"mixed\")");
    mime_struct_free(&ms);
}

static void test_envelope_addresses(void **state)
{
    (void)state;
    struct mime_struct *ms = load("23-addresses.eml");
    expect(ms, 2,
           "(\"Mon, 23 Nov 2026 10:00:00 +0100\" {34}\r\nlots of spaces and \"quotes\" \\ here "
           "((\"Doe, John\" NIL \"john\" \"example.org\")(NIL NIL \"plain\" \"example.org\")) "
           "((NIL \"@route1,@route2\" \"sender\" \"example.org\")) ((NIL NIL \"undisclosed-recipients\" "
           "NIL)(NIL NIL NIL NIL)) ((NIL NIL \"group\" NIL)(NIL NIL \"a\" \"example.org\")({10}\r\n"
           "B \"quoted\" NIL \"b\" \"example.org\")(NIL NIL NIL NIL)(NIL NIL \"nodomain\" "
           "\"MISSING_DOMAIN\")(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) "
           "((\"=?UTF-8?B?w6TDpA==?=\" NIL \"ae\" \"example.org\")({15}\r\nTab Name Spaces NIL \"t\" "
           "\"x\")) NIL \"<a@b> <c@d>\" \" <folded@example.org>\")");
    mime_struct_free(&ms);
}

static void test_overflow(void **state)
{
    (void)state;
    struct mime_struct *ms = load("15-deep-rfc822.eml");
    struct imap_render_buf b = {0};
    assert_int_equal(imap_render_bodystructure(ms, 1, &b), 0);
    /* the 100th level is shown as application/octet-stream, as Dovecot */
    assert_non_null(strstr(b.data, "(NIL \"level 99\" NIL NIL NIL NIL NIL NIL NIL NIL) "
                                   "(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 296 "));
    imap_render_buf_free(&b);
    mime_struct_free(&ms);
}

static void test_header_only(void **state)
{
    (void)state;
    struct mime_struct *ms = NULL;
    const char *m = "Subject: x";
    assert_int_equal(mime_struct_parse(m, strlen(m), 0, &ms, NULL), 0);
    expect(ms, 1, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)");
    expect(ms, 2, "(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)");
    mime_struct_free(&ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_related_mixed),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_empty_parts),
        cmocka_unit_test(test_envelope_addresses),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_header_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
