/* imap_capability: the allow-list, the client's view of an upstream list,
 * ENABLE names, SASL mechanisms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "imap_capability.h"

static const char dovecot_login[] =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE COMPRESS=DEFLATE QUOTA ACL RIGHTS=texk "
    "METADATA SEARCH=FUZZY X-CUSTOM XLIST IMAP4rev2 UTF8=ACCEPT APPENDLIMIT=1000 APPENDLIMIT "
    "OBJECTID UIDONLY";

static void test_filter_dovecot(void **state)
{
    (void)state;
    char out[4096];
    struct imap_cap_ctx ctx = {0};
    size_t n = imap_cap_filter(dovecot_login, strlen(dovecot_login), &ctx, out, sizeof(out));
    assert_int_equal(n, strlen(out));
    assert_string_equal(out,
                        "IMAP4rev1 SASL-IR ID ENABLE IDLE SORT SORT=DISPLAY "
                        "MULTIAPPEND UNSELECT CHILDREN "
                        "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
                        "ESORT WITHIN LIST-STATUS MOVE SAVEDATE LITERAL+ "
                        "SPECIAL-USE QUOTA ACL RIGHTS=texk METADATA APPENDLIMIT=1000 OBJECTID");
}

static void test_prelogin(void **state)
{
    (void)state;
    const char *caps = "IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN AUTH=CRAM-MD5 "
                       "AUTH=SCRAM-SHA-256-PLUS AUTH=XOAUTH2 AUTH=oauthbearer AUTH=EXTERNAL";
    char out[512];
    struct imap_cap_ctx ctx = {.starttls = true};
    imap_cap_filter(caps, strlen(caps), &ctx, out, sizeof(out));
    /* the upstream's STARTTLS/LOGINDISABLED are its own business */
    assert_string_equal(out, "IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 AUTH=oauthbearer STARTTLS");
    ctx.logindisabled = true;
    imap_cap_filter(caps, strlen(caps), &ctx, out, sizeof(out));
    assert_string_equal(out, "IMAP4rev1 STARTTLS LOGINDISABLED");
    /* too small an output */
    assert_int_equal(imap_cap_filter(caps, strlen(caps), &ctx, out, 10), 0);
}

static void test_lists(void **state)
{
    (void)state;
    assert_true(imap_cap_allowed("literal+", 8));
    assert_false(imap_cap_allowed("BINARY", 6));
    assert_false(imap_cap_allowed("COMPRESS=DEFLATE", 16));
    assert_false(imap_cap_allowed("APPENDLIMIT", 11));
    assert_true(imap_cap_allowed("APPENDLIMIT=5", 13));
    assert_false(imap_cap_allowed("AUTH=", 5));
    assert_true(imap_cap_enable_allowed("condstore", 9));
    assert_false(imap_cap_enable_allowed("UTF8=ACCEPT", 11));
    assert_false(imap_cap_enable_allowed("IMAP4rev2", 9));
    assert_true(imap_cap_sasl_allowed("XOAUTH2"));
    assert_false(imap_cap_sasl_allowed("GSSAPI"));
    const char *l = "IMAP4rev1 LITERAL+ ID";
    assert_true(imap_cap_has(l, strlen(l), "literal+"));
    assert_false(imap_cap_has(l, strlen(l), "LITERAL"));
    assert_true(imap_cap_has(l, strlen(l), "ID"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_dovecot),
        cmocka_unit_test(test_prelogin),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
