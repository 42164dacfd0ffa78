/* smtp_cmd_parse: valid commands and a table of invalid ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_proto.h"

static int parse(const char *line, struct smtp_cmd *cmd, const char **err)
{
    *err = NULL;
    return smtp_cmd_parse(line, strlen(line), cmd, err);
}

static void test_verbs(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char *err;
    assert_int_equal(parse("ehlo client.example\r\n", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_EHLO);
    assert_int_equal(cmd.arg_len, strlen("client.example"));
    assert_memory_equal(cmd.arg, "client.example", cmd.arg_len);
    assert_int_equal(parse("QUIT", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_QUIT);
    assert_int_equal(parse("StartTLS\r\n", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_STARTTLS);
    assert_int_equal(parse("XFOO bar", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_UNKNOWN);
    assert_int_equal(parse("AUTH PLAIN AGFsaWNlAHNlY3JldA==", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_AUTH);
    assert_string_equal(smtp_verb_name(SMTP_CMD_BDAT), "BDAT");
}

static void test_mail(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char *err;
    assert_int_equal(parse("MAIL FROM:<alice@a.example> SIZE=12345 BODY=8BITMIME "
                           "RET=HDRS ENVID=QQ+2B314", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_MAIL);
    assert_string_equal(cmd.path, "alice@a.example");
    assert_true(cmd.has_size);
    assert_int_equal(cmd.size, 12345);
    assert_int_equal(cmd.body, SMTP_BODY_8BITMIME);
    assert_string_equal(cmd.dsn, "RET=HDRS ENVID=QQ+2B314");
    assert_int_equal(parse("MAIL FROM:<>", &cmd, &err), 0);
    assert_string_equal(cmd.path, "");
    assert_int_equal(parse("mail from: <a@b> AUTH=<>", &cmd, &err), 0);
    assert_string_equal(cmd.path, "a@b");
    assert_string_equal(cmd.dsn, "");
    assert_int_equal(parse("MAIL FROM:<\"john doe\"@x.example>", &cmd, &err), 0);
    assert_string_equal(cmd.path, "\"john doe\"@x.example");
    assert_int_equal(parse("MAIL FROM:<@relay.example:bob@x.example>", &cmd, &err), 0);
    assert_string_equal(cmd.path, "bob@x.example");
    assert_int_equal(parse("MAIL FROM:<j\xc3\xb6rg@x.example> SMTPUTF8", &cmd, &err), 0);
    assert_true(cmd.path_utf8);
    assert_true(cmd.smtputf8);
}

static void test_rcpt(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char *err;
    assert_int_equal(parse("RCPT TO:<bob@b.example> NOTIFY=SUCCESS,FAILURE "
                           "ORCPT=rfc822;bob@b.example", &cmd, &err), 0);
    assert_int_equal(cmd.verb, SMTP_CMD_RCPT);
    assert_string_equal(cmd.path, "bob@b.example");
    assert_string_equal(cmd.dsn, "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@b.example");
    assert_int_equal(parse("RCPT TO:<Postmaster>", &cmd, &err), 0);
    assert_string_equal(cmd.path, "Postmaster");
}

static void test_bdat(void **state)
{
    (void)state;
    struct smtp_cmd cmd;
    const char *err;
    assert_int_equal(parse("BDAT 1000", &cmd, &err), 0);
    assert_int_equal(cmd.chunk_size, 1000);
    assert_false(cmd.last);
    assert_int_equal(parse("bdat 0 last", &cmd, &err), 0);
    assert_int_equal(cmd.chunk_size, 0);
    assert_true(cmd.last);
}

static void test_invalid_table(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *code; /* reply code prefix expected */
    } cases[] = {
        {"EHLO", "501"},
        {"HELO   ", "501"},
        {"MAIL", "501"},
        {"MAIL FROM:", "501"},
        {"MAIL FROM:alice@a.example", "501"},
        {"MAIL FROM:<alice@a.example", "501"},
        {"MAIL FROM:<alice@a.example>SIZE=1", "501"},
        {"MAIL FROM:<alice@a.example> SIZE=", "501"},
        {"MAIL FROM:<alice@a.example> SIZE=12a", "501"},
        {"MAIL FROM:<alice@a.example> SIZE=99999999999999999999", "501"},
        {"MAIL FROM:<alice@a.example> BODY=BINARYMIME", "501"},
        {"MAIL FROM:<alice@a.example> SMTPUTF8=yes", "501"},
        {"MAIL FROM:<alice@a.example> RET=ALL", "501"},
        {"MAIL FROM:<alice@a.example> ENVID=a=b", "501"},
        {"MAIL FROM:<alice@a.example> XFOO=1", "555"},
        {"MAIL FROM:<alice@a.example> =1", "501"},
        {"MAIL FROM:<alice>", "501"},
        {"MAIL FROM:<@a.example>", "501"},
        {"MAIL FROM:<alice@>", "501"},
        {"MAIL FROM:<al ice@a.example>", "501"},
        {"MAIL FROM:<a<b@a.example>", "501"},
        {"MAIL FROM:<j\xc3\xb6rg@x.example>", "553"},
        {"MAIL TO:<a@b>", "501"},
        {"RCPT TO:<>", "501"},
        {"RCPT FROM:<a@b>", "501"},
        {"RCPT TO:<a@b> SIZE=10", "555"},
        {"RCPT TO:<a@b> NOTIFY=", "501"},
        {"RCPT TO:<a@b> NOTIFY=SUCCESS;X", "501"},
        {"RCPT TO:<a@b> ORCPT=bob", "501"},
        {"RCPT TO:<a\x01@b>", "501"},
        {"BDAT", "501"},
        {"BDAT x", "501"},
        {"BDAT 10 FIRST", "501"},
        {"BDAT -1", "501"},
        {"DATA now", "501"},
        {"QUIT please", "501"},
        {"STARTTLS x", "501"},
        {"AUTH", "501"},
        {"NOOP\rX", "500"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct smtp_cmd cmd;
        const char *err = NULL;
        int rc = parse(cases[i].line, &cmd, &err);
        if (rc == 0 || !err || strncmp(err, cases[i].code, 3) != 0)
            fail_msg("case %zu '%s': rc %d err %s", i, cases[i].line, rc,
                     err ? err : "(none)");
    }
    /* Embedded NUL is refused. */
    struct smtp_cmd cmd;
    const char *err = NULL;
    assert_int_equal(smtp_cmd_parse("NOOP\0x", 6, &cmd, &err) < 0, 1);
    /* Overlong path. */
    char line[SMTP_PATH_MAX + 64];
    memset(line, 'a', sizeof(line));
    memcpy(line, "RCPT TO:<", 9);
    memcpy(line + sizeof(line) - 10, "@b.exampl>", 10);
    assert_true(smtp_cmd_parse(line, sizeof(line), &cmd, &err) < 0);
    assert_memory_equal(err, "501 5.1.3", 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_invalid_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
