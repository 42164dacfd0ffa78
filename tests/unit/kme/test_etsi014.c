/* Unit tests of the ETSI GS QKD 014 wire model (kme/etsi014.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "etsi014.h"

#define S(x) (x), strlen(x)

/* ---- UUIDs -------------------------------------------------------------- */

static void test_uuid(void **state)
{
    (void)state;
    assert_true(etsi014_uuid_valid(S("550e8400-e29b-41d4-a716-446655440000")));
    assert_true(etsi014_uuid_valid(S("550E8400-E29B-41D4-A716-446655440000")));
    assert_false(etsi014_uuid_valid(S("550e8400-e29b-41d4-a716-44665544000")));
    assert_false(etsi014_uuid_valid(S("550e8400-e29b-41d4-a716-4466554400000")));
    assert_false(etsi014_uuid_valid(S("550e8400xe29b-41d4-a716-446655440000")));
    assert_false(etsi014_uuid_valid(S("550e8400-e29b-41d4-a716-44665544000g")));
    assert_false(etsi014_uuid_valid(S("")));
    char a[ETSI014_UUID_LEN + 1], b[ETSI014_UUID_LEN + 1];
    assert_int_equal(etsi014_uuid_generate(a), 0);
    assert_int_equal(etsi014_uuid_generate(b), 0);
    assert_true(etsi014_uuid_valid(a, strlen(a)));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');                       /* version 4 */
    assert_non_null(strchr("89ab", a[19]));             /* variant */
}

/* ---- paths -------------------------------------------------------------- */

static void test_paths(void **state)
{
    (void)state;
    char *p = etsi014_path(ETSI014_EP_ENC_KEYS, "alice@example.org", "number=2");
    assert_string_equal(p, "/api/v1/keys/alice%40example.org/enc_keys?number=2");
    enum etsi014_endpoint ep;
    char *sae;
    const char *q;
    size_t ql;
    assert_int_equal(etsi014_path_parse(S(p), &ep, &sae, &q, &ql), 0);
    assert_int_equal(ep, ETSI014_EP_ENC_KEYS);
    assert_string_equal(sae, "alice@example.org");
    assert_int_equal(ql, 8);
    assert_memory_equal(q, "number=2", 8);
    free(sae);
    free(p);

    assert_int_equal(etsi014_path_parse(S("/api/v1/keys/sae-b/status"), &ep,
                                        &sae, &q, &ql), 0);
    assert_int_equal(ep, ETSI014_EP_STATUS);
    assert_null(q);
    free(sae);
    assert_int_equal(etsi014_path_parse(S("/api/v1/keys/sae-a/dec_keys?key_ID=x"),
                                        &ep, &sae, &q, &ql), 0);
    assert_int_equal(ep, ETSI014_EP_DEC_KEYS);
    free(sae);

    static const char *const bad[] = {
        "/", "/api/v1/keys/", "/api/v1/keys//status", "/api/v1/keys/a/stat",
        "/api/v1/keys/a/status/x", "/api/v2/keys/a/status",
        "/api/v1/keys/a%00b/status", "/api/v1/keys/a%zz/status",
        "/api/v1/keys/a%4/status", "/api/v1/keys/a/b/status",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sae = (char *)1;
        assert_int_equal(etsi014_path_parse(S(bad[i]), &ep, &sae, &q, &ql), -1);
        assert_null(sae);
    }
    assert_true(etsi014_id_blank(""));
    assert_true(etsi014_id_blank(" \t"));
    assert_false(etsi014_id_blank(" a"));
}

/* ---- Status ------------------------------------------------------------- */

static void test_status_roundtrip(void **state)
{
    (void)state;
    struct etsi014_status st = {
        .source_kme_id = "AAAABBBBCCCCDDDD", .target_kme_id = "EEEEFFFFGGGGHHHH",
        .master_sae_id = "IIIIJJJJKKKKLLLL", .slave_sae_id = "MMMMNNNNOOOOPPPP",
        .key_size = 352, .stored_key_count = 25000, .max_key_count = 100000,
        .max_key_per_request = 128, .max_key_size = 1024, .min_key_size = 64,
        .max_sae_id_count = 0,
    };
    size_t len;
    char *text = etsi014_status_encode(&st, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"max_SAE_ID_count\":0"));
    assert_non_null(strstr(text, "\"source_KME_ID\":\"AAAABBBBCCCCDDDD\""));
    struct etsi014_status d;
    assert_int_equal(etsi014_status_decode(text, len, &d, NULL), 0);
    assert_string_equal(d.slave_sae_id, "MMMMNNNNOOOOPPPP");
    assert_int_equal(d.key_size, 352);
    assert_int_equal(d.stored_key_count, 25000);
    assert_int_equal(d.min_key_size, 64);
    assert_null(d.status_extension);
    etsi014_status_clear(&d);
    free(text);

    /* Unknown members ignored, extension kept, missing member refused. */
    const char *ext = "{\"source_KME_ID\":\"a\",\"target_KME_ID\":\"b\","
                      "\"master_SAE_ID\":\"c\",\"slave_SAE_ID\":\"d\","
                      "\"key_size\":8,\"stored_key_count\":1,\"max_key_count\":2,"
                      "\"max_key_per_request\":3,\"max_key_size\":16,"
                      "\"min_key_size\":8,\"max_SAE_ID_count\":1,"
                      "\"vendor_x\":[1,2],\"status_extension\":{\"q\":1}}";
    assert_int_equal(etsi014_status_decode(S(ext), &d, NULL), 0);
    assert_non_null(d.status_extension);
    etsi014_status_clear(&d);
    char *err = NULL;
    assert_int_equal(etsi014_status_decode(S("{\"source_KME_ID\":\"a\"}"), &d, &err),
                     ETSI014_EFORMAT);
    assert_non_null(err);
    free(err);
    assert_int_equal(etsi014_status_decode(S("not json"), &d, NULL), ETSI014_EJSON);
    assert_int_equal(etsi014_status_decode(S("[1]"), &d, NULL), ETSI014_EJSON);
}

/* ---- Key request -------------------------------------------------------- */

static void test_key_request_decode(void **state)
{
    (void)state;
    struct etsi014_key_request r;
    char *err = NULL;
    assert_int_equal(etsi014_key_request_decode(NULL, 0, &r, &err), 0);
    assert_false(r.has_number);
    assert_int_equal(etsi014_key_request_decode(S(" \r\n"), &r, &err), 0);
    assert_int_equal(etsi014_key_request_decode(S("{}"), &r, &err), 0);

    assert_int_equal(etsi014_key_request_decode(
                         S("{\"number\":20,\"size\":512,\"extension_mandatory\":"
                           "[{\"abc_route_type\":\"direct\"}],\"extension_optional\":"
                           "[{\"abc_max_age\":30000}],\"unknown\":{\"x\":1}}"),
                         &r, &err), 0);
    assert_true(r.has_number);
    assert_int_equal(r.number, 20);
    assert_int_equal(r.size, 512);
    assert_non_null(r.extension_mandatory);
    assert_false(etsi014_key_request_is_simple(&r));
    etsi014_key_request_clear(&r);

    assert_int_equal(etsi014_key_request_decode(
                         S("{\"number\":1,\"size\":4096,\"additional_slave_SAE_IDs\":"
                           "[\"ABCDEFG\",\"HIJKLMN\"]}"), &r, &err), 0);
    assert_int_equal(r.additional_count, 2);
    assert_string_equal(r.additional_slave_sae_ids[1], "HIJKLMN");
    size_t len;
    char *text = etsi014_key_request_encode(&r, &len);
    etsi014_key_request_clear(&r);
    assert_int_equal(etsi014_key_request_decode(text, len, &r, &err), 0);
    assert_int_equal(r.additional_count, 2);
    assert_int_equal(r.size, 4096);
    etsi014_key_request_clear(&r);
    free(text);

    static const struct {
        const char *body;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"number\":\"3\"}", ETSI014_EFORMAT, "number shall be an integer"},
        {"{\"number\":3.5}", ETSI014_EFORMAT, "number shall be an integer"},
        {"{\"size\":null}", ETSI014_EFORMAT, "size shall be an integer"},
        {"{\"size\":true}", ETSI014_EFORMAT, "size shall be an integer"},
        {"{\"additional_slave_SAE_IDs\":\"a\"}", ETSI014_EFORMAT, NULL},
        {"{\"additional_slave_SAE_IDs\":[1]}", ETSI014_EFORMAT, NULL},
        {"{\"extension_mandatory\":{}}", ETSI014_EFORMAT, NULL},
        {"{\"extension_optional\":[1]}", ETSI014_EFORMAT, NULL},
        {"{\"number\":1,\"number\":2}", ETSI014_EJSON, NULL},
        {"{\"number\":99999999999999999999999}", ETSI014_EJSON, NULL},
        {"[]", ETSI014_EJSON, NULL},
        {"{", ETSI014_EJSON, NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(etsi014_key_request_decode(S(bad[i].body), &r, &err),
                         bad[i].code);
        assert_non_null(err);
        if (bad[i].msg != NULL)
            assert_string_equal(err, bad[i].msg);
        assert_int_equal(r.additional_count, 0);
        free(err);
    }
}

static void test_key_request_query(void **state)
{
    (void)state;
    struct etsi014_key_request r;
    char *err = NULL;
    assert_int_equal(etsi014_key_request_from_query(S("number=3&size=1024"), &r, &err), 0);
    assert_int_equal(r.number, 3);
    assert_int_equal(r.size, 1024);
    assert_int_equal(etsi014_key_request_from_query(NULL, 0, &r, &err), 0);
    assert_false(r.has_number || r.has_size);
    assert_int_equal(etsi014_key_request_from_query(S("size=-8"), &r, &err), 0);
    assert_int_equal(r.size, -8);
    static const char *const bad[] = {"number=x", "number=", "number=1&number=2",
                                      "foo=1", "size=1.5", "size=%zz", "size= 8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(etsi014_key_request_from_query(S(bad[i]), &r, &err),
                         ETSI014_EFORMAT);
        assert_non_null(err);
        free(err);
    }
}

static int validate(const char *body, const char *master, const char *slave,
                    int64_t *n, int64_t *s, char **err)
{
    struct etsi014_limits lim = {.key_size = 256, .min_key_size = 64,
                                 .max_key_size = 1024, .max_key_per_request = 128,
                                 .max_sae_id_count = 2, .multiple_of_8_only = true};
    struct etsi014_key_request r;
    int ret = etsi014_key_request_decode(S(body), &r, err);
    assert_int_equal(ret, 0);
    ret = etsi014_key_request_validate(&r, &lim, master, slave, n, s, err);
    etsi014_key_request_clear(&r);
    return ret;
}

static void test_key_request_validate(void **state)
{
    (void)state;
    int64_t n, s;
    char *err = NULL;
    assert_int_equal(validate("{}", "m", "s", &n, &s, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s, 256);
    assert_int_equal(validate("{\"number\":128,\"size\":1024}", "m", "s", &n, &s, &err), 0);
    assert_int_equal(validate("{\"size\":64}", "m", "s", &n, &s, &err), 0);
    assert_int_equal(validate("{\"size\":72}", "m", "s", &n, &s, &err), 0);
    assert_int_equal(validate("{\"additional_slave_SAE_IDs\":[\"x\",\"y\"]}", "m",
                              "s", &n, &s, &err), 0);
    assert_int_equal(validate("{\"extension_optional\":[{\"abc\":1}],"
                              "\"extension_mandatory\":[{}]}", "m", "s", &n, &s, &err), 0);

    static const struct {
        const char *body, *master, *slave;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"size\":12}", "m", "s", ETSI014_EINVAL, "size shall be a multiple of 8"},
        {"{\"size\":0}", "m", "s", ETSI014_EINVAL, "size shall be a positive integer"},
        {"{\"size\":-8}", "m", "s", ETSI014_EINVAL, "size shall be a positive integer"},
        {"{\"size\":8}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"size\":2048}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"number\":0}", "m", "s", ETSI014_EINVAL, "number shall be a positive integer"},
        {"{\"number\":-1}", "m", "s", ETSI014_EINVAL, "number shall be a positive integer"},
        {"{\"number\":129}", "m", "s", ETSI014_EINVAL, NULL},
        {"{}", "s", "s", ETSI014_EINVAL, "slave_SAE_ID shall differ from master_SAE_ID"},
        {"{}", "m", " ", ETSI014_EINVAL, "slave_SAE_ID shall not be blank"},
        {"{}", "", "s", ETSI014_EINVAL, "master_SAE_ID shall not be blank"},
        {"{\"additional_slave_SAE_IDs\":[\"x\",\"x\"]}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"additional_slave_SAE_IDs\":[\"m\"]}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"additional_slave_SAE_IDs\":[\"s\"]}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"additional_slave_SAE_IDs\":[\"\"]}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"additional_slave_SAE_IDs\":[\"a\",\"b\",\"c\"]}", "m", "s", ETSI014_EINVAL, NULL},
        {"{\"extension_mandatory\":[{\"abc_route_type\":\"direct\"}]}", "m", "s",
         ETSI014_EUNSUPPORTED, "not all extension_mandatory parameters are supported"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(validate(bad[i].body, bad[i].master, bad[i].slave, &n,
                                  &s, &err), bad[i].code);
        assert_non_null(err);
        if (bad[i].msg != NULL)
            assert_string_equal(err, bad[i].msg);
        free(err);
    }
    /* A KME that serves any bit size does not apply the multiple-of-8 rule. */
    struct etsi014_limits lim = {.key_size = 256, .min_key_size = 1,
                                 .max_key_size = 1024, .max_key_per_request = 1};
    struct etsi014_key_request r = {.has_size = true, .size = 12};
    assert_int_equal(etsi014_key_request_validate(&r, &lim, "m", "s", &n, &s, NULL), 0);
    assert_int_equal(s, 12);
}

/* ---- Key container ------------------------------------------------------ */

static void test_key_container(void **state)
{
    (void)state;
    struct etsi014_key_container kc;
    assert_int_equal(etsi014_key_container_alloc(&kc, 3), 0);
    for (size_t i = 0; i < 3; i++) {
        etsi014_uuid_generate(kc.keys[i].key_id);
        kc.keys[i].key_len = i + 1; /* 1, 2, 3 bytes: all padding cases */
        kc.keys[i].key = malloc(i + 1);
        memset(kc.keys[i].key, (int)(0xA0 + i), i + 1);
    }
    kc.keys[1].key_extension = json_pack("{s:i}", "x", 1);
    size_t len;
    char *text = etsi014_key_container_encode(&kc, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    struct etsi014_key_container d;
    char *err = NULL;
    assert_int_equal(etsi014_key_container_decode(text, len, &d, &err), 0);
    assert_int_equal(d.count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(d.keys[i].key_id, kc.keys[i].key_id);
        assert_int_equal(d.keys[i].key_len, i + 1);
        assert_memory_equal(d.keys[i].key, kc.keys[i].key, i + 1);
    }
    assert_non_null(d.keys[1].key_extension);
    etsi014_key_container_clear(&d);
    etsi014_free_secret(text, len);
    etsi014_key_container_clear(&kc);
    assert_null(kc.keys);

    /* The spec's example decodes; uppercase IDs are normalised. */
    const char *ex = "{\"keys\":[{\"key_ID\":\"BC490419-7D60-487F-ADC1-4DDCC177C139\","
                     "\"key\":\"wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s=\"}],"
                     "\"key_container_extension\":{}}";
    assert_int_equal(etsi014_key_container_decode(S(ex), &d, &err), 0);
    assert_string_equal(d.keys[0].key_id, "bc490419-7d60-487f-adc1-4ddcc177c139");
    assert_int_equal(d.keys[0].key_len, 32);
    etsi014_key_container_clear(&d);

    static const char *const bad[] = {
        "{}", "{\"keys\":{}}", "{\"keys\":[1]}",
        "{\"keys\":[{\"key_ID\":\"x\",\"key\":\"AAAA\"}]}",
        "{\"keys\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\",\"key\":\"AAA\"}]}",
        "{\"keys\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\",\"key\":\"A=AA\"}]}",
        "{\"keys\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\",\"key\":\"AA!A\"}]}",
        "{\"keys\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\"}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(etsi014_key_container_decode(S(bad[i]), &d, &err),
                         ETSI014_EFORMAT);
        assert_non_null(err);
        assert_null(d.keys);
        free(err);
    }
}

/* ---- Key IDs ------------------------------------------------------------ */

static void test_key_ids(void **state)
{
    (void)state;
    struct etsi014_key_ids ids;
    char *err = NULL;
    const char *ok = "{\"key_IDs\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\"},"
                     "{\"key_ID\":\"0A782FB5-3434-48FE-AA4D-14F41D46CF92\","
                     "\"key_ID_extension\":{}}],\"key_IDs_extension\":{},\"x\":1}";
    assert_int_equal(etsi014_key_ids_decode(S(ok), &ids, 0, &err), 0);
    assert_int_equal(ids.count, 2);
    assert_string_equal(ids.key_ids[1], "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    size_t len;
    char *text = etsi014_key_ids_encode(&ids, &len);
    etsi014_key_ids_clear(&ids);
    assert_int_equal(etsi014_key_ids_decode(text, len, &ids, 2, &err), 0);
    assert_int_equal(ids.count, 2);
    etsi014_key_ids_clear(&ids);
    err = NULL;
    assert_int_equal(etsi014_key_ids_decode(text, len, &ids, 1, &err), ETSI014_EINVAL);
    free(err);
    free(text);

    static const struct {
        const char *body;
        int code;
    } bad[] = {
        {"{}", ETSI014_EFORMAT},
        {"{\"key_IDs\":[]}", ETSI014_EFORMAT},
        {"{\"key_IDs\":[\"bc490419-7d60-487f-adc1-4ddcc177c139\"]}", ETSI014_EFORMAT},
        {"{\"key_IDs\":[{\"key_ID\":\"nope\"}]}", ETSI014_EFORMAT},
        {"{\"key_IDs\":[{\"key_ID\":7}]}", ETSI014_EFORMAT},
        {"{\"key_IDs\":[{\"key_ID\":\"bc490419-7d60-487f-adc1-4ddcc177c139\"},"
         "{\"key_ID\":\"BC490419-7D60-487F-ADC1-4DDCC177C139\"}]}", ETSI014_EINVAL},
        {"", ETSI014_EJSON},
        {"nope", ETSI014_EJSON},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(etsi014_key_ids_decode(S(bad[i].body), &ids, 0, &err),
                         bad[i].code);
        assert_non_null(err);
        assert_null(ids.key_ids);
        free(err);
    }

    assert_int_equal(etsi014_key_ids_from_query(
                         S("key_ID=bc490419-7d60-487f-adc1-4ddcc177c139"), &ids, &err), 0);
    assert_int_equal(ids.count, 1);
    etsi014_key_ids_clear(&ids);
    static const char *const badq[] = {
        "", "key_ID=x",
        ("key_ID=bc490419-7d60-487f-adc1-4ddcc177c139&key_ID="
         "bc490419-7d60-487f-adc1-4ddcc177c139"),
        "id=bc490419-7d60-487f-adc1-4ddcc177c139",
        "key_ID=bc490419-7d60-487f-adc1-4ddcc177c139&number=1",
    };
    for (size_t i = 0; i < sizeof(badq) / sizeof(badq[0]); i++) {
        err = NULL;
        assert_int_equal(etsi014_key_ids_from_query(S(badq[i]), &ids, &err),
                         ETSI014_EFORMAT);
        free(err);
    }
    err = NULL;
    assert_int_equal(etsi014_key_ids_from_query(NULL, 0, &ids, &err), ETSI014_EFORMAT);
    free(err);
}

/* ---- Error -------------------------------------------------------------- */

static void test_error(void **state)
{
    (void)state;
    size_t len;
    char *text = etsi014_error_encode(ETSI014_MSG_SIZE_MULTIPLE_OF_8, NULL, &len);
    assert_string_equal(text, "{\"message\":\"size shall be a multiple of 8\"}");
    struct etsi014_error e;
    assert_int_equal(etsi014_error_decode(text, len, &e, NULL), 0);
    assert_string_equal(e.message, "size shall be a multiple of 8");
    etsi014_error_clear(&e);
    free(text);
    json_t *details = json_pack("[{s:s}]", "extension_mandatory_unsupported",
                                "abc_route_type is not supported");
    text = etsi014_error_encode(ETSI014_MSG_EXT_MANDATORY_UNSUPPORTED, details, &len);
    json_decref(details);
    assert_int_equal(etsi014_error_decode(text, len, &e, NULL), 0);
    assert_non_null(e.details);
    etsi014_error_clear(&e);
    free(text);
    assert_int_equal(etsi014_error_decode(S("<html>401</html>"), &e, NULL), ETSI014_EJSON);
    assert_int_equal(etsi014_error_decode(S("{\"msg\":1}"), &e, NULL), ETSI014_EFORMAT);
    assert_string_equal(etsi014_strerror(ETSI014_EJSON), "not a JSON object");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_status_roundtrip),
        cmocka_unit_test(test_key_request_decode),
        cmocka_unit_test(test_key_request_query),
        cmocka_unit_test(test_key_request_validate),
        cmocka_unit_test(test_key_container),
        cmocka_unit_test(test_key_ids),
        cmocka_unit_test(test_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
