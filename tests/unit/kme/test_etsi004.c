/* The ETSI GS QKD 004 wire model (kme/etsi004.h): every message round
 * trip, the exact byte layout of each against hand-written frames, frames
 * fed one byte at a time, every truncation refused, malformed payloads,
 * oversized lengths, KSID text forms, metadata JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "etsi004.h"

static const uint8_t KSID[16] = {0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4,
                                 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0x00};

static struct etsi004_qos sample_qos(void)
{
    struct etsi004_qos q = {
        .key_chunk_size = 32, .max_bps = 100000, .min_bps = 1000, .jitter = 10,
        .priority = 3, .timeout = 5000, .ttl = 3600,
    };
    strcpy(q.metadata_mimetype, "application/json");
    return q;
}

/* Parses a whole frame of an expected service: returns the payload. */
static const uint8_t *payload_of(const uint8_t *f, size_t len, uint8_t service,
                                 size_t *n_r)
{
    struct etsi004_header h;
    assert_int_equal(etsi004_frame_parse(f, len, 1u << 20, &h), 1);
    assert_int_equal(h.service, service);
    assert_int_equal(h.length + 8, len);
    assert_int_equal(h.version[0], 2);
    assert_int_equal(h.version[1], 1);
    assert_int_equal(h.version[2], 1);
    *n_r = h.length;
    return f + 8;
}

static void test_header_byte_order(void **state)
{
    (void)state;
    size_t len;
    uint8_t *f = etsi004_close_resp_encode(0x01020304, &len);
    static const uint8_t want[] = {2, 1, 1, 0x09, 0, 0, 0, 4, 1, 2, 3, 4};
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(f, want, sizeof(want));
    free(f);

    /* Any version bytes are accepted; the length is big-endian. */
    static const uint8_t other[] = {0, 0, 7, 0x04, 0x00, 0x00, 0x01, 0x00};
    struct etsi004_header h;
    assert_int_equal(etsi004_frame_parse(other, sizeof(other), 1u << 20, &h), 0);
    assert_int_equal(h.length, 256);
    assert_int_equal(h.service, 4);
    assert_int_equal(h.version[2], 7);
}

static void test_frame_need_more_and_too_big(void **state)
{
    (void)state;
    struct etsi004_header h;
    static const uint8_t big[] = {2, 1, 1, 0x02, 0x7f, 0xff, 0xff, 0xff};
    for (size_t n = 0; n < 8; n++)
        assert_int_equal(etsi004_frame_parse(big, n, 100, &h), 0);
    /* Refused as soon as the header is in, not after waiting for 2 GiB. */
    assert_int_equal(etsi004_frame_parse(big, 8, 100, &h), ETSI004_ETOOBIG);
    static const uint8_t edge[] = {2, 1, 1, 0x02, 0, 0, 0, 100};
    assert_int_equal(etsi004_frame_parse(edge, 8, 100, &h), 0);
    assert_int_equal(etsi004_frame_parse(edge, 8, 99, &h), ETSI004_ETOOBIG);
    static const uint8_t zero[] = {2, 1, 1, 0x09, 0, 0, 0, 0};
    assert_int_equal(etsi004_frame_parse(zero, 8, 100, &h), 1);
    assert_int_equal(h.length, 0);
}

static void test_open_req_layout(void **state)
{
    (void)state;
    struct etsi004_qos q = sample_qos();
    size_t len, n;
    uint8_t *f = etsi004_open_req_encode("qkd://app-a", "qkd://app-b", &q, KSID, &len);
    assert_non_null(f);
    const uint8_t *p = payload_of(f, len, ETSI004_OPEN_CONNECT_REQ, &n);
    assert_int_equal(n, 12 + 12 + 284 + 16);
    assert_memory_equal(p, "qkd://app-a\0qkd://app-b\0", 24);
    static const uint8_t qos_ints[] = {0, 0, 0, 32, 0, 1, 0x86, 0xa0, 0, 0, 3, 0xe8,
                                       0, 0, 0, 10, 0, 0, 0, 3, 0, 0, 0x13, 0x88,
                                       0, 0, 0x0e, 0x10};
    assert_memory_equal(p + 24, qos_ints, 28);
    assert_memory_equal(p + 52, "application/json", 17);
    for (size_t i = 52 + 16; i < 52 + 256; i++)
        assert_int_equal(p[i], 0);
    assert_memory_equal(p + 24 + 284, KSID, 16);

    struct etsi004_open_req r;
    assert_int_equal(etsi004_open_req_decode(p, n, &r), 0);
    assert_string_equal(r.source, "qkd://app-a");
    assert_string_equal(r.destination, "qkd://app-b");
    assert_memory_equal(&r.qos, &q, sizeof(q));
    assert_memory_equal(r.ksid, KSID, 16);
    /* Every truncation and one byte too many are refused. */
    for (size_t k = 0; k < n; k++)
        assert_int_equal(etsi004_open_req_decode(p, k, &r), ETSI004_EFORMAT);
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, p, n);
    longer[n] = 0;
    assert_int_equal(etsi004_open_req_decode(longer, n + 1, &r), ETSI004_EFORMAT);
    free(longer);
    free(f);

    /* Empty URIs are a valid layout (the server decides what it accepts). */
    f = etsi004_open_req_encode("", "", &q, KSID, &len);
    p = payload_of(f, len, ETSI004_OPEN_CONNECT_REQ, &n);
    assert_int_equal(etsi004_open_req_decode(p, n, &r), 0);
    assert_string_equal(r.source, "");
    free(f);
}

static void test_open_req_uri_limits(void **state)
{
    (void)state;
    struct etsi004_qos q = sample_qos();
    char *uri = malloc(ETSI004_URI_MAX + 2);
    memset(uri, 'u', ETSI004_URI_MAX + 1);
    uri[ETSI004_URI_MAX + 1] = '\0';
    size_t len, n;
    assert_null(etsi004_open_req_encode(uri, "d", &q, KSID, &len));
    uri[ETSI004_URI_MAX] = '\0';
    uint8_t *f = etsi004_open_req_encode(uri, uri, &q, KSID, &len);
    assert_non_null(f);
    const uint8_t *p = payload_of(f, len, ETSI004_OPEN_CONNECT_REQ, &n);
    assert_int_equal(n, ETSI004_MAX_REQUEST);
    struct etsi004_open_req r;
    assert_int_equal(etsi004_open_req_decode(p, n, &r), 0);
    free(f);
    /* A source without its NUL within the limit is refused. */
    uint8_t *raw = calloc(1, ETSI004_URI_MAX + 2 + 300);
    memset(raw, 'x', ETSI004_URI_MAX + 1);
    assert_int_equal(etsi004_open_req_decode(raw, ETSI004_URI_MAX + 2 + 300, &r),
                     ETSI004_EFORMAT);
    free(raw);
    free(uri);
}

static void test_mimetype_without_nul(void **state)
{
    (void)state;
    struct etsi004_qos q = sample_qos();
    memset(q.metadata_mimetype, 'm', ETSI004_MIMETYPE_LEN);
    q.metadata_mimetype[ETSI004_MIMETYPE_LEN] = '\0';
    size_t len, n;
    uint8_t *f = etsi004_open_req_encode("s", "d", &q, KSID, &len);
    const uint8_t *p = payload_of(f, len, ETSI004_OPEN_CONNECT_REQ, &n);
    struct etsi004_open_req r;
    assert_int_equal(etsi004_open_req_decode(p, n, &r), 0);
    assert_int_equal(strlen(r.qos.metadata_mimetype), 256);
    free(f);
}

static void test_open_resp(void **state)
{
    (void)state;
    struct etsi004_open_resp r = {.status = ETSI004_QOS_NOT_MET, .has_qos = true,
                                  .qos = sample_qos()};
    memcpy(r.ksid, KSID, 16);
    size_t len, n;
    uint8_t *f = etsi004_open_resp_encode(&r, &len);
    const uint8_t *p = payload_of(f, len, ETSI004_OPEN_CONNECT_RESP, &n);
    assert_int_equal(n, 4 + 284 + 16);
    assert_memory_equal(p, "\0\0\0\7", 4);
    struct etsi004_open_resp d;
    assert_int_equal(etsi004_open_resp_decode(p, n, &d), 0);
    assert_memory_equal(&d, &r, sizeof(d));
    for (size_t k = 0; k < n; k++) {
        int rc = etsi004_open_resp_decode(p, k, &d);
        assert_int_equal(rc, k == 4 ? 0 : ETSI004_EFORMAT);
    }
    free(f);

    struct etsi004_open_resp bare = {.status = ETSI004_KSID_IN_USE};
    f = etsi004_open_resp_encode(&bare, &len);
    p = payload_of(f, len, ETSI004_OPEN_CONNECT_RESP, &n);
    assert_int_equal(n, 4);
    assert_int_equal(etsi004_open_resp_decode(p, n, &d), 0);
    assert_int_equal(d.status, 5);
    assert_false(d.has_qos);
    free(f);
}

static void test_get_req(void **state)
{
    (void)state;
    struct etsi004_get_req r = {.index = 0xfffffffe, .metadata_size = 1024};
    memcpy(r.ksid, KSID, 16);
    size_t len, n;
    uint8_t *f = etsi004_get_req_encode(&r, &len);
    const uint8_t *p = payload_of(f, len, ETSI004_GET_KEY_REQ, &n);
    assert_int_equal(n, 24);
    assert_memory_equal(p + 16, "\xff\xff\xff\xfe\0\0\4\0", 8);
    struct etsi004_get_req d;
    assert_int_equal(etsi004_get_req_decode(p, n, &d), 0);
    assert_memory_equal(&d, &r, sizeof(d));
    for (size_t k = 0; k < 30; k++) {
        if (k != 24)
            assert_int_equal(etsi004_get_req_decode(p, k, &d), ETSI004_EFORMAT);
    }
    free(f);
}

static void test_get_resp(void **state)
{
    (void)state;
    uint8_t key[32];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(i * 7 + 1);
    char md[ETSI004_METADATA_JSON_MAX + 1];
    size_t mdl = etsi004_metadata_json(1234, 0, md);
    assert_string_equal(md, "{\"age\":1234,\"hops\":0}");
    struct etsi004_get_resp r = {.status = 0, .index = 7, .key_len = 32, .key = key,
                                 .metadata_len = (uint32_t)mdl,
                                 .metadata = (const uint8_t *)md};
    size_t len, n;
    uint8_t *f = etsi004_get_resp_encode(&r, &len);
    const uint8_t *p = payload_of(f, len, ETSI004_GET_KEY_RESP, &n);
    assert_int_equal(n, 12 + 32 + 4 + mdl);
    assert_memory_equal(p, "\0\0\0\0\0\0\0\7\0\0\0\x20", 12);
    assert_memory_equal(p + 12, key, 32);
    struct etsi004_get_resp d;
    assert_int_equal(etsi004_get_resp_decode(p, n, &d), 0);
    assert_int_equal(d.index, 7);
    assert_int_equal(d.key_len, 32);
    assert_memory_equal(d.key, key, 32);
    assert_int_equal(d.metadata_len, mdl);
    assert_memory_equal(d.metadata, md, mdl);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(etsi004_get_resp_decode(p, k, &d), ETSI004_EFORMAT);
    etsi004_free_secret(f, len);

    /* A key length larger than the payload is refused, not read past. */
    static const uint8_t lie[] = {0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0,
                                  0, 0, 0, 0};
    assert_int_equal(etsi004_get_resp_decode(lie, sizeof(lie), &d), ETSI004_EFORMAT);
    static const uint8_t mdlie[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
                                    0xff, 0xff, 0xff, 0xff};
    assert_int_equal(etsi004_get_resp_decode(mdlie, sizeof(mdlie), &d), ETSI004_EFORMAT);

    /* No metadata, and the two error forms. */
    struct etsi004_get_resp nomd = {.status = 0, .index = 0, .key_len = 4, .key = key};
    f = etsi004_get_resp_encode(&nomd, &len);
    p = payload_of(f, len, ETSI004_GET_KEY_RESP, &n);
    assert_int_equal(n, 20);
    assert_int_equal(etsi004_get_resp_decode(p, n, &d), 0);
    assert_int_equal(d.metadata_len, 0);
    assert_null(d.metadata);
    etsi004_free_secret(f, len);

    struct etsi004_get_resp small = {.status = 8, .metadata_needed = 40};
    f = etsi004_get_resp_encode(&small, &len);
    p = payload_of(f, len, ETSI004_GET_KEY_RESP, &n);
    assert_int_equal(n, 8);
    assert_int_equal(etsi004_get_resp_decode(p, n, &d), 0);
    assert_int_equal(d.status, 8);
    assert_int_equal(d.metadata_needed, 40);
    assert_int_equal(etsi004_get_resp_decode(p, 7, &d), ETSI004_EFORMAT);
    free(f);

    struct etsi004_get_resp fail = {.status = 6};
    f = etsi004_get_resp_encode(&fail, &len);
    p = payload_of(f, len, ETSI004_GET_KEY_RESP, &n);
    assert_int_equal(n, 4);
    assert_int_equal(etsi004_get_resp_decode(p, n, &d), 0);
    assert_int_equal(d.status, 6);
    free(f);
}

static void test_close(void **state)
{
    (void)state;
    size_t len, n;
    uint8_t *f = etsi004_close_req_encode(KSID, &len);
    const uint8_t *p = payload_of(f, len, ETSI004_CLOSE_REQ, &n);
    uint8_t k[16];
    assert_int_equal(etsi004_close_req_decode(p, n, k), 0);
    assert_memory_equal(k, KSID, 16);
    assert_int_equal(etsi004_close_req_decode(p, 15, k), ETSI004_EFORMAT);
    free(f);
    uint32_t st;
    static const uint8_t resp[] = {0, 0, 0, 3, 9, 9};
    assert_int_equal(etsi004_close_resp_decode(resp, 6, &st), 0);
    assert_int_equal(st, 3);
    assert_int_equal(etsi004_close_resp_decode(resp, 3, &st), ETSI004_EFORMAT);
}

/* Three frames back to back, fed one byte at a time through a growing
 * buffer: each is recognised exactly when its last byte arrives. */
static void test_stream_byte_at_a_time(void **state)
{
    (void)state;
    struct etsi004_qos q = sample_qos();
    size_t l1, l2, l3;
    uint8_t *f1 = etsi004_open_req_encode("a", "b", &q, KSID, &l1);
    struct etsi004_get_req g = {.index = 3};
    uint8_t *f2 = etsi004_get_req_encode(&g, &l2);
    uint8_t *f3 = etsi004_close_req_encode(KSID, &l3);
    size_t total = l1 + l2 + l3;
    uint8_t *all = malloc(total);
    memcpy(all, f1, l1);
    memcpy(all + l1, f2, l2);
    memcpy(all + l1 + l2, f3, l3);
    size_t start = 0, frames = 0;
    size_t ends[3] = {l1, l1 + l2, total};
    for (size_t have = start; have <= total; have++) {
        struct etsi004_header h;
        int rc = etsi004_frame_parse(all + start, have - start, ETSI004_MAX_REQUEST, &h);
        assert_true(rc >= 0);
        if (rc == 1) {
            assert_int_equal(have, ends[frames]);
            frames++;
            start = have;
        }
    }
    assert_int_equal(frames, 3);
    free(all);
    free(f1);
    free(f2);
    free(f3);
}

static void test_ksid_text(void **state)
{
    (void)state;
    char text[37];
    etsi004_ksid_to_text(KSID, text);
    assert_string_equal(text, "550e8400-e29b-41d4-a716-446655440000");
    uint8_t back[16];
    assert_int_equal(etsi004_ksid_from_text("550E8400-E29B-41D4-A716-446655440000", back), 0);
    assert_memory_equal(back, KSID, 16);
    static const char *const bad[] = {
        "", "550e8400e29b41d4a716446655440000", "550e8400-e29b-41d4-a716-44665544000",
        "550e8400-e29b-41d4-a716-4466554400000", "550e8400-e29b-41d4-a716_446655440000",
        "g50e8400-e29b-41d4-a716-446655440000", "550e840-0e29b-41d4-a716-446655440000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(etsi004_ksid_from_text(bad[i], back), -1);
    assert_int_equal(etsi004_ksid_from_text(NULL, back), -1);
    static const uint8_t zero[16] = {0};
    assert_true(etsi004_ksid_is_null(zero));
    assert_false(etsi004_ksid_is_null(KSID));
    uint8_t g1[16], g2[16];
    assert_int_equal(etsi004_ksid_generate(g1), 0);
    assert_int_equal(etsi004_ksid_generate(g2), 0);
    assert_memory_not_equal(g1, g2, 16);
    assert_int_equal(g1[6] >> 4, 4);
    assert_int_equal(g1[8] >> 6, 2);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(etsi004_status_name(0), "SUCCESS");
    assert_string_equal(etsi004_status_name(8), "METADATA_TOO_SMALL");
    assert_string_equal(etsi004_status_name(9), "UNKNOWN");
    assert_string_equal(etsi004_service_name(0x04), "GET_KEY");
    assert_null(etsi004_service_name(0x06));
    char md[ETSI004_METADATA_JSON_MAX + 1];
    size_t n = etsi004_metadata_json(UINT32_MAX, UINT32_MAX, md);
    assert_true(n <= ETSI004_METADATA_JSON_MAX);
    assert_int_equal(n, strlen(md));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_byte_order),
        cmocka_unit_test(test_frame_need_more_and_too_big),
        cmocka_unit_test(test_open_req_layout),
        cmocka_unit_test(test_open_req_uri_limits),
        cmocka_unit_test(test_mimetype_without_nul),
        cmocka_unit_test(test_open_resp),
        cmocka_unit_test(test_get_req),
        cmocka_unit_test(test_get_resp),
        cmocka_unit_test(test_close),
        cmocka_unit_test(test_stream_byte_at_a_time),
        cmocka_unit_test(test_ksid_text),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
