/* smtp_reply parser: single and multi-line replies, line by line and with
 * invalid inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_proto.h"

static void test_single(void **state)
{
    (void)state;
    smtp_reply_parser *p = smtp_reply_parser_new();
    const struct smtp_reply *r = NULL;
    const char *err = NULL;
    assert_int_equal(smtp_reply_feed(p, "250 2.1.0 Ok\r\n", 14, &r, &err), SMTP_DONE);
    assert_int_equal(r->code, 250);
    assert_string_equal(r->enh, "2.1.0");
    assert_string_equal(r->text, "Ok");
    assert_int_equal(smtp_reply_feed(p, "354 End data with <CR><LF>.<CR><LF>", 35, &r, &err),
                     SMTP_DONE);
    assert_int_equal(r->code, 354);
    assert_string_equal(r->enh, "");
    assert_int_equal(smtp_reply_feed(p, "220", 3, &r, &err), SMTP_DONE);
    assert_string_equal(r->text, "");
    /* A status-code-looking text with the wrong class is text. */
    assert_int_equal(smtp_reply_feed(p, "550 2.0.0 odd", 13, &r, &err), SMTP_DONE);
    assert_string_equal(r->enh, "");
    assert_string_equal(r->text, "2.0.0 odd");
    smtp_reply_parser_free(&p);
    assert_null(p);
}

static void test_multi(void **state)
{
    (void)state;
    smtp_reply_parser *p = smtp_reply_parser_new();
    const struct smtp_reply *r = NULL;
    const char *err = NULL;
    const char *lines[] = {"250-mx.example\r\n", "250-PIPELINING\r\n", "250-SIZE 10240000\r\n",
                           "250 8BITMIME\r\n"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(smtp_reply_feed(p, lines[i], strlen(lines[i]), &r, &err), SMTP_MORE);
    assert_int_equal(smtp_reply_feed(p, lines[3], strlen(lines[3]), &r, &err), SMTP_DONE);
    assert_int_equal(r->code, 250);
    assert_int_equal(r->lines, 4);
    assert_string_equal(r->text, "mx.example\nPIPELINING\nSIZE 10240000\n8BITMIME");
    size_t pos = 0, len;
    const char *l;
    int n = 0;
    while ((l = smtp_reply_line(r, &pos, &len)) != NULL) {
        if (n == 2)
            assert_memory_equal(l, "SIZE 10240000", len);
        n++;
    }
    assert_int_equal(n, 4);
    /* Parser is reusable after a complete reply. */
    assert_int_equal(smtp_reply_feed(p, "550-5.1.1 no such\r\n", 19, &r, &err), SMTP_MORE);
    assert_int_equal(smtp_reply_feed(p, "550 5.1.1 user\r\n", 16, &r, &err), SMTP_DONE);
    assert_string_equal(r->enh, "5.1.1");
    assert_string_equal(r->text, "no such\nuser");
    smtp_reply_parser_free(&p);
}

static void test_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "25", "2500 x", "abc", "650 x", "150 x", "250_x", "25x ok",
    };
    smtp_reply_parser *p = smtp_reply_parser_new();
    const struct smtp_reply *r = NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err = NULL;
        if (smtp_reply_feed(p, bad[i], strlen(bad[i]), &r, &err) != SMTP_ERR)
            fail_msg("accepted '%s'", bad[i]);
        assert_non_null(err);
    }
    const char *err = NULL;
    assert_int_equal(smtp_reply_feed(p, "250-a", 5, &r, &err), SMTP_MORE);
    assert_int_equal(smtp_reply_feed(p, "251 b", 5, &r, &err), SMTP_ERR);
    /* Oversized reply. */
    char line[1003];
    memset(line, 'x', sizeof(line));
    memcpy(line, "250-", 4);
    int rc = SMTP_MORE;
    for (int i = 0; i < 20 && rc == SMTP_MORE; i++)
        rc = smtp_reply_feed(p, line, sizeof(line), &r, &err);
    assert_int_equal(rc, SMTP_ERR);
    assert_string_equal(err, "reply too long");
    smtp_reply_parser_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
