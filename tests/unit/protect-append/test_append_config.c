/* imap.protect_mailboxes and imap.append of the daemon configuration
 * (config/README.md): defaults, the string and array forms, errors; and
 * that what the reader accepts is what protect_mailboxes parses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "mailboxes.h"
#include "settings.h"

static struct qumail_config *load(const char *text, char **err)
{
    struct qumail_config *cfg = NULL;
    *err = NULL;
    qumail_config_load_buffer("t.json", "/tmp", text, strlen(text), &cfg, err);
    return cfg;
}

static void test_defaults(void **state)
{
    (void)state;
    char *err;
    struct qumail_config *c = load("{\"imap\": {}}", &err);
    assert_non_null(c);
    assert_false(c->imap.protect_mailboxes_set);
    assert_null(c->imap.protect_mailboxes);
    assert_int_equal(c->imap.append.algorithm, QUMAIL_APPEND_AES);
    assert_int_equal(c->imap.append.otp_max_size, 64u << 10);
    assert_int_equal(c->imap.append.max_size, 64u << 20);
    qumail_config_free(&c);
}

static void test_values(void **state)
{
    (void)state;
    char *err;
    struct qumail_config *c = load(
        "{\"imap\": {\"protect_mailboxes\": [\"Sent\", \"\\\\Drafts\", \"Archive/2025\"],"
        " \"append\": {\"algorithm\": \"auto\", \"otp_max_size\": \"16K\", \"max_size\": \"20M\"}}}",
        &err);
    if (!c) {
        fail_msg("%s", err);
        return;
    }
    assert_true(c->imap.protect_mailboxes_set);
    assert_int_equal(c->imap.n_protect_mailboxes, 3);
    assert_string_equal(c->imap.protect_mailboxes[1], "\\Drafts");
    assert_int_equal(c->imap.append.algorithm, QUMAIL_APPEND_AUTO);
    assert_int_equal(c->imap.append.otp_max_size, 16u << 10);
    assert_int_equal(c->imap.append.max_size, 20u << 20);
    struct protect_mailboxes_config *pm = NULL;
    assert_int_equal(protect_mailboxes_config_parse(
                         (const char *const *)c->imap.protect_mailboxes,
                         c->imap.n_protect_mailboxes, &pm, &err),
                     0);
    struct protect_mailboxes *m = protect_mailboxes_new(pm);
    assert_true(protect_mailboxes_match(m, "Archive/2025"));
    assert_false(protect_mailboxes_match(m, "Drafts"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&pm);
    qumail_config_free(&c);

    /* one string: "all", or a list in one string; [] protects nothing */
    c = load("{\"imap\": {\"protect_mailboxes\": \"all\"}}", &err);
    assert_non_null(c);
    assert_int_equal(c->imap.n_protect_mailboxes, 1);
    assert_string_equal(c->imap.protect_mailboxes[0], "all");
    qumail_config_free(&c);
    c = load("{\"imap\": {\"protect_mailboxes\": []}}", &err);
    assert_non_null(c);
    assert_true(c->imap.protect_mailboxes_set);
    assert_int_equal(c->imap.n_protect_mailboxes, 0);
    qumail_config_free(&c);
}

static void expect_error(const char *text, const char *needle)
{
    char *err;
    struct qumail_config *c = load(text, &err);
    assert_null(c);
    assert_non_null(err);
    if (strstr(err, needle) == NULL)
        fail_msg("'%s' lacks '%s'", err, needle);
    free(err);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("{\"imap\": {\"append\": {\"algorithm\": \"rot13\"}}}", "algorithm");
    expect_error("{\"imap\": {\"append\": {\"max_size\": 10}}}", "max_size");
    expect_error("{\"imap\": {\"append\": {\"maxsize\": 10}}}", "did you mean");
    expect_error("{\"imap\": {\"protect_mailboxes\": 3}}", "protect_mailboxes");
    expect_error("{\"imap\": {\"protect_mailboxes\": [\"Sent\", 4]}}", "protect_mailboxes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
