/* smtp_log_view: the one redaction decision for client lines in the debug
 * log, by session state and by content (issue 10, defect 4: secrets in
 * debug logs). The end-to-end proof, with real secrets through the real
 * proxy at debug level, is tests/e2e/hostile/test_hostile.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_session_internal.h"

static enum smtp_log_view view(const struct smtp_guard *g, enum smtp_state st,
                               const char *line)
{
    struct smtp_cmd cmd;
    const char *err = NULL;
    bool valid = smtp_cmd_parse(line, strlen(line), &cmd, &err) == 0;
    return smtp_log_view(g, st, &cmd, valid);
}

static void test_secret_shapes_never_logged(void **state)
{
    (void)state;
    struct smtp_guard g = {0};
    /* AUTH in every shape: verb only, or nothing. */
    assert_int_equal(view(&g, SMTP_STATE_READY, "AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
                     SMTP_LOG_VERB);
    assert_int_equal(view(&g, SMTP_STATE_READY, " AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
                     SMTP_LOG_NOTHING);
    assert_int_equal(view(&g, SMTP_STATE_READY, "AUTHPLAIN AGFsaWNlAHNlY3JldA=="),
                     SMTP_LOG_NOTHING);
    assert_int_equal(view(&g, SMTP_STATE_READY, "auth login"), SMTP_LOG_VERB);
    /* A base64 line, a header line, body text: no command, nothing shown. */
    assert_int_equal(view(&g, SMTP_STATE_READY, "c2VjcmV0LXBhc3N3b3Jk"), SMTP_LOG_NOTHING);
    assert_int_equal(view(&g, SMTP_STATE_READY, "Subject: the secret plan"),
                     SMTP_LOG_NOTHING);
    assert_int_equal(view(&g, SMTP_STATE_READY, "meet me at noon"), SMTP_LOG_NOTHING);
    /* Free-text arguments: verb only. */
    assert_int_equal(view(&g, SMTP_STATE_READY, "NOOP secret"), SMTP_LOG_VERB);
    assert_int_equal(view(&g, SMTP_STATE_READY, "VRFY someone"), SMTP_LOG_VERB);
    assert_int_equal(view(&g, SMTP_STATE_READY, "HELP me"), SMTP_LOG_VERB);
    /* Inside an AUTH exchange everything is hidden, commands too. */
    assert_int_equal(view(&g, SMTP_STATE_AUTH_CLIENT, "QUIT"), SMTP_LOG_NOTHING);
}

static void test_envelope_is_logged(void **state)
{
    (void)state;
    struct smtp_guard g = {0};
    assert_int_equal(view(&g, SMTP_STATE_HELO, "EHLO client.example"), SMTP_LOG_LINE);
    assert_int_equal(view(&g, SMTP_STATE_READY, "MAIL FROM:<a@example.org>"), SMTP_LOG_LINE);
    assert_int_equal(view(&g, SMTP_STATE_MAIL, "RCPT TO:<b@example.org>"), SMTP_LOG_LINE);
    assert_int_equal(view(&g, SMTP_STATE_RCPT, "DATA"), SMTP_LOG_LINE);
    assert_int_equal(view(&g, SMTP_STATE_READY, "QUIT"), SMTP_LOG_LINE);
    /* An invalid known command: its verb. */
    assert_int_equal(view(&g, SMTP_STATE_READY, "MAIL FROM:broken"), SMTP_LOG_VERB);
}

static void test_lines_after_refusals_hidden(void **state)
{
    (void)state;
    /* After a refused AUTH the next lines may be a user name and a
     * password that happen to look like commands. */
    struct smtp_guard g = {.hide_lines = 2};
    assert_int_equal(view(&g, SMTP_STATE_READY, "HELP"), SMTP_LOG_NOTHING);
    /* After a refused DATA: message lines until the lone dot, even ones
     * that parse as commands. */
    struct smtp_guard d = {.hide_until_dot = true};
    assert_int_equal(view(&d, SMTP_STATE_RCPT, "MAIL FROM:<x@example.org>"), SMTP_LOG_NOTHING);
    assert_int_equal(view(&d, SMTP_STATE_RCPT, "QUIT"), SMTP_LOG_NOTHING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_shapes_never_logged),
        cmocka_unit_test(test_envelope_is_logged),
        cmocka_unit_test(test_lines_after_refusals_hidden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
