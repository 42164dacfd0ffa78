/* The imap.decrypt section and kme_simulator.dec_keys_redeliver of the
 * daemon configuration (config/README.md): defaults, values, errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

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
    const struct qumail_imap_decrypt *d = &c->imap.decrypt;
    assert_int_equal(d->cache_size, 256u << 20);
    assert_int_equal(d->cache_views, 10000);
    assert_int_equal(d->notice_ttl_ms, 3000);
    assert_int_equal(d->max_message_size, 64u << 20);
    assert_true(d->recipient_check);
    assert_false(d->release_unbound);
    assert_null(d->default_domain);
    assert_int_equal(d->n_addresses, 0);
    assert_int_equal(c->kme_simulator.redeliver_ms, 300000);
    qumail_config_free(&c);
}

static void test_values(void **state)
{
    (void)state;
    char *err;
    struct qumail_config *c = load(
        "{\"imap\": {\"decrypt\": {\"cache_size\": \"64M\", \"cache_views\": 500,"
        " \"notice_ttl\": 0, \"max_message_size\": \"10M\","
        " \"recipient_check\": \"off\", \"release_unbound\": true,"
        " \"default_domain\": \"example.org\","
        " \"addresses\": {\"alice\": [\"team@example.org\", \"sales@example.org\"],"
        "                 \"bob\": [\"alice@example.org\"]}}},"
        " \"kme_simulator\": {\"dec_keys_redeliver\": \"10m\"}}", &err);
    if (c == NULL) {
        fail_msg("%s", err);
        return;
    }
    const struct qumail_imap_decrypt *d = &c->imap.decrypt;
    assert_int_equal(d->cache_size, 64u << 20);
    assert_int_equal(d->cache_views, 500);
    assert_int_equal(d->notice_ttl_ms, 0);
    assert_int_equal(d->max_message_size, 10u << 20);
    assert_false(d->recipient_check);
    assert_true(d->release_unbound);
    assert_string_equal(d->default_domain, "example.org");
    assert_int_equal(d->n_addresses, 3);
    assert_string_equal(d->addresses[0].login, "alice");
    assert_string_equal(d->addresses[1].address, "sales@example.org");
    assert_string_equal(d->addresses[2].login, "bob");
    assert_string_equal(d->addresses[2].address, "alice@example.org");
    assert_int_equal(c->kme_simulator.redeliver_ms, 600000);
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
    expect_error("{\"imap\": {\"decrypt\": {\"recipient_check\": \"loose\"}}}",
                 "recipient_check");
    expect_error("{\"imap\": {\"decrypt\": {\"addresses\": {\"a\": [\"nobody\"]}}}}",
                 "not a mail address");
    expect_error("{\"imap\": {\"decrypt\": {\"addresses\": {\"a\": \"x@y\"}}}}",
                 "addresses.a");
    expect_error("{\"imap\": {\"decrypt\": {\"cache_views\": 0}}}", "cache_views");
    expect_error("{\"imap\": {\"decrypt\": {\"cach_size\": 1}}}", "did you mean");
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
