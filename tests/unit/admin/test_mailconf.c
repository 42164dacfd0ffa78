/* admin: the autoconfig and Autodiscover documents and the Autodiscover
 * request parser (a table of requests, each also cut at every length). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

static const struct admin_mail mail = {
    .display_name = "QuMail <&> test",
    .servers = {
        {"smtp", "127.0.0.1", 2587, ADMIN_SEC_STARTTLS, true},
        {"imap", "127.0.0.1", 2143, ADMIN_SEC_PLAIN, true},
        {"smtp", "gw.example.org", 465, ADMIN_SEC_TLS, false},
    },
    .n_servers = 3,
};

static void test_addresses(void **state)
{
    const char *good[] = {"alice@example.org", "a.b+c@sub.example-1.org", "x@y"};
    const char *bad[] = {"", "alice", "@example.org", "alice@", "a b@example.org",
                         "a<b@example.org", "a\"b@example.org", "a&b@example.org",
                         "alice@exa mple.org", "alice@example..org", "alice@.org",
                         "alice@example.org.", "alice@ex_ample.org", "a\n@example.org",
                         "alice@example.org<x>"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(admin_address_ok(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(admin_address_ok(bad[i]));
    char big[300];
    memset(big, 'a', sizeof(big));
    snprintf(big + 250, sizeof(big) - 250, "@example.org");
    assert_false(admin_address_ok(big));
}

static void test_autoconfig(void **state)
{
    char *x = admin_autoconfig_xml(&mail, "alice@example.org");
    assert_non_null(x);
    /* incoming first, escaped display name, per-listener security */
    const char *imap = strstr(x, "<incomingServer type=\"imap\">");
    const char *smtp = strstr(x, "<outgoingServer type=\"smtp\">");
    assert_non_null(imap);
    assert_non_null(smtp);
    assert_true(imap < smtp);
    assert_non_null(strstr(x, "<emailProvider id=\"example.org\">"));
    assert_non_null(strstr(x, "<displayShortName>QuMail &lt;&amp;&gt; test</displayShortName>"));
    assert_non_null(strstr(x, "<port>2143</port>\n      <socketType>plain</socketType>"));
    assert_non_null(strstr(x, "<port>2587</port>\n      <socketType>STARTTLS</socketType>"));
    assert_non_null(strstr(x, "<port>465</port>\n      <socketType>SSL</socketType>\n"
                              "      <authentication>none</authentication>"));
    assert_non_null(strstr(x, "<username>%EMAILADDRESS%</username>"));
    free(x);
    x = admin_autoconfig_xml(&mail, "example.net"); /* a bare domain */
    assert_non_null(x);
    assert_non_null(strstr(x, "<domain>example.net</domain>"));
    free(x);
    assert_null(admin_autoconfig_xml(&mail, "alice@exa<mple.org"));
    assert_null(admin_autoconfig_xml(&mail, "not a domain"));
}

static const char request[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n"
    "<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/"
    "requestschema/2006\">\r\n"
    "  <Request>\r\n"
    "    <EMailAddress> bob@example.org </EMailAddress>\r\n"
    "    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/"
    "outlook/responseschema/2006a</AcceptableResponseSchema>\r\n"
    "  </Request>\r\n"
    "</Autodiscover>\r\n";

static void test_autodiscover_parse(void **state)
{
    char addr[256], schema[256];
    assert_int_equal(admin_autodiscover_parse(request, strlen(request), addr, sizeof(addr),
                                              schema, sizeof(schema)),
                     0);
    assert_string_equal(addr, "bob@example.org");
    assert_string_equal(schema, "http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                                "responseschema/2006a");
    /* every truncation either fails or finds the whole address */
    for (size_t n = 0; n < strlen(request); n++) {
        int rc = admin_autodiscover_parse(request, n, addr, sizeof(addr), schema,
                                          sizeof(schema));
        if (rc == 0)
            assert_string_equal(addr, "bob@example.org");
    }
    static const struct { const char *body; int rc; const char *addr; } cases[] = {
        {"<a:EMailAddress>p@example.org</a:EMailAddress>", 0, "p@example.org"},
        {"<emailaddress>lc@example.org</emailaddress>", 0, "lc@example.org"},
        {"<EMailAddress/>", -1, ""},
        {"<EMailAddress></EMailAddress>", -1, ""},
        {"<EMailAddress>a<b@example.org</EMailAddress>", -1, ""},
        {"<EMailAddress>x@y.org&lt;</EMailAddress>", -1, ""},
        {"<EMailAddressX>x@y.org</EMailAddressX>", -1, ""},
        {"<EMailAddress>no-at-sign</EMailAddress>", -1, ""},
        {"", -1, ""},
        {"<", -1, ""},
        {"<EMailAddress", -1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = admin_autodiscover_parse(cases[i].body, strlen(cases[i].body), addr,
                                          sizeof(addr), schema, sizeof(schema));
        assert_int_equal(rc, cases[i].rc);
        assert_string_equal(addr, cases[i].addr);
    }
    /* a too small output buffer refuses rather than truncates */
    char small[8];
    assert_int_equal(admin_autodiscover_parse(request, strlen(request), small, sizeof(small),
                                              schema, sizeof(schema)),
                     -1);
}

static void test_autodiscover_response(void **state)
{
    char *x = admin_autodiscover_xml(&mail, "bob@example.org", "");
    assert_non_null(x);
    const char *imap = strstr(x, "<Type>IMAP</Type>");
    const char *smtp = strstr(x, "<Type>SMTP</Type>");
    assert_non_null(imap);
    assert_non_null(smtp);
    assert_true(imap < smtp);
    assert_non_null(strstr(x, "<LoginName>bob@example.org</LoginName>"));
    assert_non_null(strstr(x, "<Port>465</Port>"));
    assert_non_null(strstr(x, "<SSL>on</SSL>\n        <Encryption>SSL</Encryption>\n"
                              "        <AuthRequired>off</AuthRequired>"));
    assert_non_null(strstr(x, "<Encryption>TLS</Encryption>"));
    assert_non_null(strstr(x, "<Encryption>None</Encryption>"));
    free(x);
    x = admin_autodiscover_xml(&mail, "bob@example.org",
                               "http://schemas.microsoft.com/exchange/autodiscover/"
                               "mobilesync/responseschema/2006");
    assert_non_null(strstr(x, "<ErrorCode>601</ErrorCode>"));
    free(x);
    assert_null(admin_autodiscover_xml(&mail, "bad address", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_autoconfig),
        cmocka_unit_test(test_autodiscover_parse),
        cmocka_unit_test(test_autodiscover_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
