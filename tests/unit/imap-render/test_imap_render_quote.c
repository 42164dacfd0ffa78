/* Dovecot's string output rules: quoted vs literal, NIL, no-LF, humans. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "imap_render_internal.h"

typedef void quote_fn(struct imap_render_buf *, const char *);

static void q(quote_fn *fn, const char *in, const char *want)
{
    struct imap_render_buf b = {0};
    fn(&b, in);
    assert_non_null(b.data);
    assert_string_equal(b.data, want);
    imap_render_buf_free(&b);
}

static void test_nstring(void **state)
{
    (void)state;
    q(q_nstring, NULL, "NIL");
    q(q_nstring, "", "\"\"");
    q(q_nstring, "plain text", "\"plain text\"");
    q(q_nstring, "a\"b\\c", "\"a\\\"b\\\\c\"");
    q(q_nstring, "\"\"\"\"", "\"\\\"\\\"\\\"\\\"\"");      /* 4 escapes: quoted */
    q(q_nstring, "\"\"\"\"\"", "{5}\r\n\"\"\"\"\"");       /* 5: literal */
    q(q_nstring, "caf\xc3\xa9", "{5}\r\ncaf\xc3\xa9");     /* 8-bit: literal */
    q(q_nstring, "a\r\nb", "{4}\r\na\r\nb");
}

static void test_nolf(void **state)
{
    (void)state;
    q(q_nstring_nolf, NULL, "NIL");
    q(q_nstring_nolf, "a\n b", "\"a b\"");
    q(q_nstring_nolf, "a\nb", "\"a b\"");
    q(q_nstring_nolf, "a\r\n\tb", "\"a\tb\"");
    q(q_nstring_nolf, "a\n", "\"a\"");
}

static void test_humans(void **state)
{
    (void)state;
    q(q_for_humans, "simple", "\"simple\"");
    q(q_for_humans, "  ", "\"\"");
    q(q_for_humans, "a  b", "{3}\r\na b");
    q(q_for_humans, "a\tb", "{3}\r\na b");
    q(q_for_humans, " lead trail ", "{10}\r\nlead trail");
    q(q_for_humans, "x\n\ty", "{3}\r\nx y");
    q(q_for_humans, "a\rb", "{3}\r\na b");
    q(q_for_humans, "say \"hi\"", "{8}\r\nsay \"hi\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nstring),
        cmocka_unit_test(test_nolf),
        cmocka_unit_test(test_humans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
