/* KME client: HTTP responses through the llhttp layer (whole and one byte
 * at a time), error mapping of spec and non-spec answers, base URLs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "client/client_internal.h"

struct canned {
    const char *wire;
    int rc;              /* final result of feeding + eof */
    int status;
    const char *body;
    bool keep_alive;
    bool need_eof;       /* completes only at EOF */
};

static const struct canned responses[] = {
    {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
     "{\"keys\": []}\n", 1, 200, "{\"keys\": []}\n", true, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n", 1, 200, "{\"a\": 1}", true, false},
    {"HTTP/1.1 400 Bad Request\r\nContent-Length: 62\r\nConnection: close\r\n\r\n"
     "{\"message\": \"one or more keys specified are not found on KME\"}", 1, 400, NULL,
     false, false},
    {"HTTP/1.0 503 Service Unavailable\r\n\r\nbackend down", 1, 503, "backend down", false,
     true},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 1, 204, "", true, false},
    {"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 1, 401, "", true, false},
    {"SSH-2.0-OpenSSH_9.2\r\n", KME_EBADRESPONSE, 0, NULL, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"keys\"", KME_EIO, 0, NULL, false,
     true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", KME_EBADRESPONSE, 0, NULL,
     false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
     KME_EBADRESPONSE, 0, NULL, false, false},
};

/* Feeds wire in pieces of step bytes; returns the final rc. */
static int run(const struct canned *c, size_t step, struct kme_http_resp *r, size_t max_body)
{
    kme_http_resp_init(r, max_body);
    size_t len = strlen(c->wire), off = 0;
    int rc = 0;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        size_t used = 0;
        rc = kme_http_resp_feed(r, c->wire + off, n, &used);
        if (rc != 0) {
            if (rc == 1)
                assert_int_equal(off + used, len); /* nothing left over */
            return rc;
        }
        assert_int_equal(used, n);
        off += n;
    }
    return kme_http_resp_eof(r);
}

static void test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(responses) / sizeof(responses[0]); i++) {
        const struct canned *c = &responses[i];
        size_t steps[] = {1, 2, 7, 100000};
        for (size_t s = 0; s < 4; s++) {
            struct kme_http_resp r;
            int rc = run(c, steps[s], &r, 4096);
            if (rc != c->rc)
                fail_msg("response %zu step %zu: rc %d, want %d (%s)", i, steps[s], rc, c->rc,
                         r.error ? r.error : "");
            if (rc == 1) {
                assert_int_equal(r.status, c->status);
                assert_int_equal(r.keep_alive, c->keep_alive);
                if (c->body != NULL) {
                    assert_int_equal(r.body_len, strlen(c->body));
                    assert_memory_equal(r.body ? r.body : "", c->body, r.body_len);
                }
            } else {
                assert_non_null(r.error);
            }
            kme_http_resp_clear(&r);
        }
    }
}

static void test_leftover_and_limit(void **state)
{
    (void)state;
    struct kme_http_resp r;
    kme_http_resp_init(&r, 4);
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    size_t used = 0;
    assert_int_equal(kme_http_resp_feed(&r, two, strlen(two), &used), 1);
    assert_int_equal(used, strlen("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    kme_http_resp_clear(&r);

    /* chunked body over the limit, byte by byte */
    kme_http_resp_init(&r, 4);
    const char *big = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n";
    int rc = 0;
    for (size_t i = 0; big[i] && rc == 0; i++)
        rc = kme_http_resp_feed(&r, big + i, 1, &used);
    assert_int_equal(rc, KME_EBADRESPONSE);
    assert_string_equal(r.error, "response body exceeds the limit");
    kme_http_resp_clear(&r);

    /* EOF before anything */
    kme_http_resp_init(&r, 4);
    assert_int_equal(kme_http_resp_eof(&r), KME_EIO);
    kme_http_resp_clear(&r);
}

struct mapping {
    enum kme_op_kind op;
    int status;
    const char *body;
    int code;
    const char *message;
};

static const struct mapping mappings[] = {
    {KME_OP_DEC, 400, "{\"message\":\"one or more keys specified are not found on KME\"}",
     KME_ENOTFOUND, "one or more keys specified are not found on KME"},
    {KME_OP_ENC, 400, "{\"message\":\"size shall be a multiple of 8\"}", KME_EHTTP,
     "size shall be a multiple of 8"},
    {KME_OP_DEC, 400, "{\"message\":\"Key not found\",\"details\":[{\"x\":1}]}",
     KME_ENOTFOUND, "Key not found"},
    {KME_OP_ENC, 400, "{\"message\":\"Key not found\"}", KME_EHTTP, "Key not found"},
    {KME_OP_DEC, 401, "", KME_EUNAUTHORIZED, "HTTP 401"},
    {KME_OP_DEC, 401, "Unauthorized", KME_EUNAUTHORIZED, "HTTP 401 (non-JSON body: Unauthorized)"},
    {KME_OP_STATUS, 403, "<html>forbidden</html>", KME_EUNAUTHORIZED,
     "HTTP 403 (non-JSON body: <html>forbidden</html>)"},
    {KME_OP_DEC, 404, "{\"detail\":\"Not Found\"}", KME_ENOTFOUND, "HTTP 404 (non-JSON body: {\"detail\":\"Not Found\"})"},
    {KME_OP_ENC, 404, "", KME_EHTTP, "HTTP 404"},
    {KME_OP_ENC, 405, "Method Not Allowed\r\nmore", KME_EHTTP,
     "HTTP 405 (non-JSON body: Method Not Allowed)"},
    {KME_OP_DEC, 409, "{\"message\":\"key already delivered\"}", KME_EHTTP, "key already delivered"},
    {KME_OP_ENC, 412, "{\"message\":\"\"}", KME_EHTTP, "HTTP 412 (non-JSON body: {\"message\":\"\"})"},
    {KME_OP_ENC, 422, "{\"message\": 42}", KME_EHTTP, "HTTP 422 (non-JSON body: {\"message\": 42})"},
    {KME_OP_ENC, 503, "{\"message\":\"key data access error\"}", KME_ESERVER, "key data access error"},
    {KME_OP_DEC, 504, "<html>\n<b>Gateway Time-out</b></html>", KME_ESERVER,
     "HTTP 504 (non-JSON body: <html>)"},
    {KME_OP_STATUS, 302, "", KME_EBADRESPONSE, "HTTP 302"},
    {KME_OP_STATUS, 408, "", KME_ETIMEDOUT, "HTTP 408"},
    {KME_OP_STATUS, 500, "bin\x01\x80" "ary", KME_ESERVER, "HTTP 500 (non-JSON body: bin??ary)"},
};

static void test_error_mapping(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(mappings) / sizeof(mappings[0]); i++) {
        const struct mapping *m = &mappings[i];
        char *msg = NULL;
        int code = kme_map_http_error(m->op, m->status, m->body, strlen(m->body), &msg);
        assert_non_null(msg);
        if (code != m->code || strcmp(msg, m->message) != 0)
            fail_msg("mapping %zu: got %s '%s', want %s '%s'", i, kme_client_errname(code),
                     msg, kme_client_errname(m->code), m->message);
        free(msg);
    }
}

static void test_net_errors(void **state)
{
    (void)state;
    assert_int_equal(kme_map_net_error(UV_ECONNREFUSED, true), KME_ECONNREFUSED);
    assert_int_equal(kme_map_net_error(NET_ETLS, true), KME_ETLS);
    assert_int_equal(kme_map_net_error(NET_EVERIFY, true), KME_ETLS);
    /* an alert on the first read after the handshake: still TLS */
    assert_int_equal(kme_map_net_error(NET_ETLS, false), KME_ETLS);
    assert_int_equal(kme_map_net_error(NET_ETIMEDOUT, false), KME_ETIMEDOUT);
    assert_int_equal(kme_map_net_error(UV_EAI_NONAME, true), KME_ECONNECT);
    assert_int_equal(kme_map_net_error(UV_ECONNRESET, false), KME_EIO);
    assert_int_equal(kme_map_net_error(0, false), KME_EIO);
}

static void test_strerror(void **state)
{
    (void)state;
    int codes[] = {KME_OK, KME_ENOMEM, KME_EINVAL, KME_ETIMEDOUT, KME_ECONNREFUSED,
                   KME_ECONNECT, KME_EIO, KME_ETLS, KME_EHTTP, KME_EBADRESPONSE,
                   KME_ENOTFOUND, KME_EUNAUTHORIZED, KME_ESERVER, KME_ECANCELLED,
                   KME_ELIMITS};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_string_not_equal(kme_client_strerror(codes[i]), "unknown error");
        assert_string_not_equal(kme_client_errname(codes[i]), "KME_EUNKNOWN");
    }
    assert_string_equal(kme_client_strerror(-1), "unknown error");
    assert_true(kme_client_error_is_temporary(KME_ETIMEDOUT));
    assert_true(kme_client_error_is_temporary(KME_ENOTFOUND));
    assert_false(kme_client_error_is_temporary(KME_EUNAUTHORIZED));
    assert_false(kme_client_error_is_temporary(KME_ELIMITS));
}

static void test_urls(void **state)
{
    (void)state;
    struct kme_url u;
    char *err = NULL;
    assert_int_equal(kme_url_parse("https://kme.example:8443", &u, &err), 0);
    assert_string_equal(u.host, "kme.example");
    assert_int_equal(u.port, 8443);
    assert_string_equal(u.host_header, "kme.example:8443");
    assert_string_equal(u.prefix, "");
    kme_url_clear(&u);
    assert_int_equal(kme_url_parse("HTTPS://[::1]:9/qkd/", &u, &err), 0);
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.host_header, "[::1]:9");
    assert_string_equal(u.prefix, "/qkd");
    kme_url_clear(&u);
    assert_int_equal(kme_url_parse("https://10.0.0.1", &u, &err), 0);
    assert_int_equal(u.port, 443);
    assert_string_equal(u.host_header, "10.0.0.1");
    kme_url_clear(&u);
    const char *bad[] = {"http://kme:80", "https://", "https://:443", "https://kme:0",
                         "https://kme:70000", "https://kme:8x", "https://u@kme",
                         "https://kme/?a=1", "https://[::1", "https://[::1]x",
                         "ftp://kme", "https://kme /x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        if (kme_url_parse(bad[i], &u, &err) != KME_EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(err);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_leftover_and_limit),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_net_errors),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
