/* smtp_authid: the identity of an AUTH exchange for the log, by mechanism,
 * from the initial response or the first line after 334; kept only after
 * 235; escaped; never more of a response than the identity. Every prefix
 * of every response is read from a buffer of exactly its size (ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "smtp_authid.h"

/* base64 of len bytes (static buffer, enough for these tests). */
static const char *b64(const void *data, size_t len)
{
    static char out[4096];
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* AUTH arg then the client's responses; the identity after code. */
static void exchange(const char *arg, const char *const *responses, int code,
                     char user[SMTP_AUTHID_MAX], char authzid[SMTP_AUTHID_MAX])
{
    struct smtp_authid a;
    smtp_authid_begin(&a, arg, strlen(arg));
    for (size_t i = 0; responses != NULL && responses[i] != NULL; i++)
        smtp_authid_response(&a, responses[i], strlen(responses[i]));
    user[0] = authzid[0] = '\0';
    smtp_authid_end(&a, code, user, authzid);
    static const char zero[SMTP_AUTHID_MAX]; /* wiped, whatever happened */
    assert_int_equal(a.mech, SMTP_AUTHID_NONE);
    assert_false(a.first_seen);
    assert_memory_equal(a.user, zero, sizeof(zero));
    assert_memory_equal(a.authzid, zero, sizeof(zero));
}

static void test_plain(void **state)
{
    (void)state;
    char user[SMTP_AUTHID_MAX], authzid[SMTP_AUTHID_MAX], arg[512];
    static const char msg[] = "\0alice@example.org\0s3cret";
    snprintf(arg, sizeof(arg), "PLAIN %s", b64(msg, sizeof(msg) - 1));
    exchange(arg, NULL, 235, user, authzid);
    assert_string_equal(user, "alice@example.org");
    assert_string_equal(authzid, "");
    /* refused: nobody */
    exchange(arg, NULL, 535, user, authzid);
    assert_string_equal(user, "");
    /* after 334, and an authzid of its own (the same one is not repeated) */
    static const char z[] = "boss@example.org\0alice@example.org\0s3cret";
    const char *const r1[] = {b64(z, sizeof(z) - 1), NULL};
    exchange("plain", r1, 235, user, authzid);
    assert_string_equal(user, "alice@example.org");
    assert_string_equal(authzid, "boss@example.org");
    static const char same[] = "alice@example.org\0alice@example.org\0s3cret";
    const char *const r2[] = {b64(same, sizeof(same) - 1), NULL};
    exchange("PLAIN", r2, 235, user, authzid);
    assert_string_equal(authzid, "");
    /* no second NUL (no password part): no identity; empty authcid too */
    static const char half[] = "\0alice@example.org";
    const char *const r3[] = {b64(half, sizeof(half) - 1), NULL};
    exchange("PLAIN", r3, 235, user, authzid);
    assert_string_equal(user, "");
    static const char none[] = "\0\0pw";
    const char *const r4[] = {b64(none, sizeof(none) - 1), NULL};
    exchange("PLAIN", r4, 235, user, authzid);
    assert_string_equal(user, "");
}

static void test_login(void **state)
{
    (void)state;
    char user[SMTP_AUTHID_MAX], authzid[SMTP_AUTHID_MAX];
    const char *const r[] = {"Ym9iQGV4YW1wbGUub3Jn", "aHVudGVyMg==", NULL}; /* bob@example.org, hunter2 */
    exchange("LOGIN", r, 235, user, authzid);
    assert_string_equal(user, "bob@example.org");
    /* the initial response is the user name */
    const char *const pw[] = {"aHVudGVyMg==", NULL};
    exchange("LOGIN Ym9iQGV4YW1wbGUub3Jn", pw, 235, user, authzid);
    assert_string_equal(user, "bob@example.org");
    /* cancelled, not base64 */
    const char *const cancel[] = {"*", NULL};
    exchange("LOGIN", cancel, 235, user, authzid);
    assert_string_equal(user, "");
    const char *const junk[] = {"not base64!", NULL};
    exchange("LOGIN", junk, 235, user, authzid);
    assert_string_equal(user, "");
}

static void test_oauth(void **state)
{
    (void)state;
    char user[SMTP_AUTHID_MAX], authzid[SMTP_AUTHID_MAX], arg[1024];
    static const char x[] = "user=carol@example.net\001auth=Bearer ya29.TOKEN\001\001";
    snprintf(arg, sizeof(arg), "XOAUTH2 %s", b64(x, sizeof(x) - 1));
    const char *const dummy[] = {"", NULL}; /* the answer to an error challenge */
    exchange(arg, dummy, 235, user, authzid);
    assert_string_equal(user, "carol@example.net");
    /* RFC 7628's example; a saslname with =2C and =3D */
    static const char o[] = "n,a=user@example.com,\001host=server.example.com\001port=143\001"
                            "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\001\001";
    snprintf(arg, sizeof(arg), "OAUTHBEARER %s", b64(o, sizeof(o) - 1));
    exchange(arg, NULL, 235, user, authzid);
    assert_string_equal(user, "user@example.com");
    static const char e[] = "n,a=a=2Cb=3Dc,\001auth=Bearer T\001\001";
    const char *const r[] = {b64(e, sizeof(e) - 1), NULL};
    exchange("OAUTHBEARER", r, 235, user, authzid);
    assert_string_equal(user, "a\\x2cb\\x3dc"); /* decoded, then escaped */
    /* no a=, no user=: nobody */
    static const char na[] = "n,,\001auth=Bearer T\001\001";
    const char *const r2[] = {b64(na, sizeof(na) - 1), NULL};
    exchange("OAUTHBEARER", r2, 235, user, authzid);
    assert_string_equal(user, "");
    static const char nx[] = "auth=Bearer T\001\001";
    const char *const r3[] = {b64(nx, sizeof(nx) - 1), NULL};
    exchange("XOAUTH2", r3, 235, user, authzid);
    assert_string_equal(user, "");
    /* a mechanism without an identity for us */
    exchange("CRAM-MD5", NULL, 235, user, authzid);
    assert_string_equal(user, "");
}

static void test_escape(void **state)
{
    (void)state;
    char out[SMTP_AUTHID_MAX];
    static const unsigned char odd[] = "a b\"c\\d\n\x01\xff=x";
    smtp_authid_escape(odd, sizeof(odd) - 1, out, sizeof(out));
    assert_string_equal(out, "a\\x20b\\x22c\\x5cd\\x0a\\x01\\xff\\x3dx");
    unsigned char longname[400];
    memset(longname, 'u', sizeof(longname));
    smtp_authid_escape(longname, sizeof(longname), out, sizeof(out));
    assert_int_equal(strlen(out), sizeof(out) - 1);
    assert_memory_equal(out + strlen(out) - 3, "...", 3);
    char small[8];
    smtp_authid_escape((const unsigned char *)"\xff\xff", 2, small, sizeof(small));
    assert_string_equal(small, "\\xff..."); /* never a half escape */
}

/* Every prefix of responses of each mechanism, in buffers of exactly their
 * size: never a read past them, never a crash. */
static void test_prefixes(void **state)
{
    (void)state;
    static const char plain[] = "boss\0alice@example.org\0s3cret";
    static const char oauth[] = "n,a=u=2C@x,\001auth=Bearer T\001\001";
    char enc[2][256];
    snprintf(enc[0], sizeof(enc[0]), "%s", b64(plain, sizeof(plain) - 1));
    snprintf(enc[1], sizeof(enc[1]), "%s", b64(oauth, sizeof(oauth) - 1));
    static const char *const mechs[] = {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"};
    for (size_t m = 0; m < 4; m++) {
        for (size_t e = 0; e < 2; e++) {
            size_t len = strlen(enc[e]);
            for (size_t cut = 0; cut <= len; cut++) {
                char *exact = malloc(cut ? cut : 1);
                assert_non_null(exact);
                memcpy(exact, enc[e], cut);
                struct smtp_authid a;
                smtp_authid_begin(&a, mechs[m], strlen(mechs[m]));
                smtp_authid_response(&a, exact, cut);
                char user[SMTP_AUTHID_MAX], authzid[SMTP_AUTHID_MAX];
                smtp_authid_end(&a, 235, user, authzid);
                assert_true(strlen(user) < SMTP_AUTHID_MAX);
                free(exact);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),   cmocka_unit_test(test_login),
        cmocka_unit_test(test_oauth),   cmocka_unit_test(test_escape),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
