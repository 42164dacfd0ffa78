/* protect_mailboxes: configured names, SPECIAL-USE learned from LIST,
 * "all", INBOX case, renames, limits and bad entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailboxes.h"

static struct protect_mailboxes *make(const char *const *entries, size_t n,
                                      struct protect_mailboxes_config **cfg)
{
    char *err = NULL;
    assert_int_equal(protect_mailboxes_config_parse(entries, n, cfg, &err), 0);
    assert_null(err);
    struct protect_mailboxes *m = protect_mailboxes_new(*cfg);
    assert_non_null(m);
    return m;
}

static void test_default(void **state)
{
    (void)state;
    struct protect_mailboxes_config *cfg = NULL;
    struct protect_mailboxes *m = make(NULL, 0, &cfg);
    assert_true(protect_mailboxes_match(m, "Sent"));
    assert_true(protect_mailboxes_match(m, "Drafts"));
    assert_false(protect_mailboxes_match(m, "sent")); /* names are case-sensitive */
    assert_false(protect_mailboxes_match(m, "INBOX"));
    assert_false(protect_mailboxes_match(m, "[Gmail]/Sent Mail"));
    /* Not listed yet: the session should LIST before deciding. */
    assert_true(protect_mailboxes_needs_list(m, "[Gmail]/Sent Mail"));
    assert_false(protect_mailboxes_needs_list(m, "Sent"));
    const char *attrs[] = {"\\HasNoChildren", "\\sent"};
    assert_int_equal(protect_mailboxes_learn(m, "[Gmail]/Sent Mail", attrs, 2), 0);
    assert_true(protect_mailboxes_match(m, "[Gmail]/Sent Mail"));
    assert_false(protect_mailboxes_needs_list(m, "[Gmail]/Sent Mail"));
    const char *drafts[] = {"\\Drafts"};
    assert_int_equal(protect_mailboxes_learn(m, "Entw&APw-rfe", drafts, 1), 0);
    assert_true(protect_mailboxes_match(m, "Entw&APw-rfe"));
    /* A later LIST without the attribute forgets it. */
    const char *plain[] = {"\\HasChildren"};
    assert_int_equal(protect_mailboxes_learn(m, "Entw&APw-rfe", plain, 1), 0);
    assert_false(protect_mailboxes_match(m, "Entw&APw-rfe"));
    assert_false(protect_mailboxes_needs_list(m, "Entw&APw-rfe"));
    /* Trash is not protected by default, even when learned. */
    const char *trash[] = {"\\Trash"};
    assert_int_equal(protect_mailboxes_learn(m, "Trash", trash, 1), 0);
    assert_false(protect_mailboxes_match(m, "Trash"));
    protect_mailboxes_free(&m);
    assert_null(m);
    protect_mailboxes_config_free(&cfg);
    assert_null(cfg);
}

static void test_inbox_and_rename(void **state)
{
    (void)state;
    const char *entries[] = {"INBOX/Sent", " Archive/2024 ", "\\Archive"};
    struct protect_mailboxes_config *cfg = NULL;
    struct protect_mailboxes *m = make(entries, 3, &cfg);
    assert_true(protect_mailboxes_match(m, "inbox/Sent"));
    assert_true(protect_mailboxes_match(m, "Inbox/Sent"));
    assert_false(protect_mailboxes_match(m, "inbox/sent"));
    assert_true(protect_mailboxes_match(m, "Archive/2024"));
    assert_false(protect_mailboxes_match(m, "INBOXSent"));
    const char *arch[] = {"\\Archive"};
    assert_int_equal(protect_mailboxes_learn(m, "Old", arch, 1), 0);
    assert_int_equal(protect_mailboxes_learn(m, "Old/2019", arch, 1), 0);
    assert_int_equal(protect_mailboxes_renamed(m, "Old", "Older", '/'), 0);
    assert_false(protect_mailboxes_match(m, "Old"));
    assert_true(protect_mailboxes_match(m, "Older"));
    assert_true(protect_mailboxes_match(m, "Older/2019"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&cfg);
}

static void test_all_and_empty(void **state)
{
    (void)state;
    const char *all[] = {"ALL"};
    struct protect_mailboxes_config *cfg = NULL;
    struct protect_mailboxes *m = make(all, 1, &cfg);
    assert_true(protect_mailboxes_config_all(cfg));
    assert_true(protect_mailboxes_match(m, "INBOX"));
    assert_true(protect_mailboxes_match(m, "anything"));
    assert_false(protect_mailboxes_needs_list(m, "anything"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&cfg);

    const char *none[] = {" ", ""};
    m = make(none, 2, &cfg);
    assert_false(protect_mailboxes_match(m, "Sent"));
    assert_false(protect_mailboxes_needs_list(m, "Sent"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&cfg);

    const char *list[] = {"Sent,Drafts , \\Junk"};
    m = make(list, 1, &cfg);
    assert_true(protect_mailboxes_match(m, "Drafts"));
    const char *junk[] = {"\\Junk"};
    assert_int_equal(protect_mailboxes_learn(m, "Spam", junk, 1), 0);
    assert_true(protect_mailboxes_match(m, "Spam"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&cfg);
}

static void test_bad_entries(void **state)
{
    (void)state;
    struct protect_mailboxes_config *cfg = NULL;
    char *err = NULL;
    const char *bad1[] = {"\\Sentt"};
    assert_int_equal(protect_mailboxes_config_parse(bad1, 1, &cfg, &err),
                     PROTECT_MAILBOXES_EINVAL);
    assert_null(cfg);
    assert_non_null(err);
    assert_non_null(strstr(err, "\\Sentt"));
    free(err);
    err = NULL;
    const char *bad2[] = {"Sent\x01"};
    assert_int_equal(protect_mailboxes_config_parse(bad2, 1, &cfg, &err),
                     PROTECT_MAILBOXES_EINVAL);
    free(err);
    assert_null(protect_mailboxes_new(NULL));
    assert_false(protect_mailboxes_match(NULL, "Sent"));
}

static void test_learn_limit(void **state)
{
    (void)state;
    struct protect_mailboxes_config *cfg = NULL;
    struct protect_mailboxes *m = make(NULL, 0, &cfg);
    char name[32];
    const char *attrs[] = {"\\Sent"};
    for (int i = 0; i < PROTECT_MAILBOXES_MAX_LEARNED; i++) {
        snprintf(name, sizeof(name), "box%d", i);
        assert_int_equal(protect_mailboxes_learn(m, name, attrs, 1), 0);
    }
    assert_int_equal(protect_mailboxes_learn(m, "one-more", attrs, 1),
                     PROTECT_MAILBOXES_ELIMIT);
    /* Known names can still be updated. */
    assert_int_equal(protect_mailboxes_learn(m, "box7", NULL, 0), 0);
    assert_false(protect_mailboxes_match(m, "box7"));
    assert_true(protect_mailboxes_match(m, "box8"));
    protect_mailboxes_free(&m);
    protect_mailboxes_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default),
        cmocka_unit_test(test_inbox_and_rename),
        cmocka_unit_test(test_all_and_empty),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_learn_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
