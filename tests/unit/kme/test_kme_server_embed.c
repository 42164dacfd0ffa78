/* The simulator as a library: configuration checks (file and the embedded
 * two-KME builder) and kme_server_start/stop on a loop with a real
 * enc_keys/dec_keys round trip through the KME client, ending with no
 * leaked handle. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kme_client.h"
#include "kme_server.h"

#define S(x) (x), strlen(x)

static char certs[512];

static int make_certs(void **state)
{
    (void)state;
    snprintf(certs, sizeof(certs), "%s/embed-certs", QUMAIL_TEST_TMP);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "sh %s/certs/mkcerts.sh -o %s -k kme-a -k kme-b -s sae-a -s sae-b "
             ">/dev/null", QUMAIL_SRC_DIR, certs);
    return system(cmd) == 0 ? 0 : -1;
}

static void expect_error(const char *text, const char *needle)
{
    kme_server_config *cfg = (kme_server_config *)1;
    char *err = NULL;
    assert_int_equal(kme_server_config_parse("t.json", "/tmp", S(text), &cfg, &err),
                     KME_SERVER_ECONFIG);
    assert_null(cfg);
    assert_non_null(err);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
    free(err);
}

#define KME(id, peer) \
    "{\"kme_id\":\"" id "\",\"tls\":{\"cert\":\"c\",\"key\":\"k\",\"ca\":\"a\"}," \
    "\"database\":\"" id ".db\",\"link\":{\"peer_kme_id\":\"" peer "\"}"

static void test_config_errors(void **state)
{
    (void)state;
    kme_server_config *cfg;
    char *err = NULL;
    const char *ok = "{\"kmes\":[" KME("a", "b") "}, " KME("b", "a") "}]}";
    assert_int_equal(kme_server_config_parse("t.json", "/tmp", S(ok), &cfg, &err), 0);
    assert_int_equal(kme_server_config_count(cfg), 2);
    assert_string_equal(kme_server_config_kme_id(cfg, 1), "b");
    kme_server_config_free(&cfg);
    assert_null(cfg);

    expect_error("{\"kmes\":[" KME("a", "b") ",\n\"bogus\":1}]}", "t.json:2:");
    expect_error("{\"kmes\":[" KME("a", "b") ",\n\"bogus\":1}]}", "bogus");
    expect_error("{\"kmes\":[" KME("a", "b") ",\"key_size\":100}]}", "multiples of 8");
    expect_error("{\"kmes\":[" KME("a", "b") ",\"min_key_size\":512}]}",
                 "min_key_size <= key_size");
    expect_error("{\"kmes\":[" KME("a", "b") "}]}", "peer_host");
    expect_error("{\"kmes\":[" KME("a", "b") "}, " KME("b", "c") "}]}",
                 "name each other");
    expect_error("{\"kmes\":[" KME("a", "a") "}]}", "differ");
    expect_error("{\"kmes\":[]}", "one or two");
    expect_error("{\"kmes\":[" KME("a", "b") ",\"sqlite_synchronous\":\"off\"}]}",
                 "sqlite_synchronous");
    expect_error("{\"kmes\":[" KME("a", "b") ",\"max_key_count\":1,\"key_size\":64}]}",
                 "max_key_size");
    expect_error("{\"kmes\":[", "t.json:1:");

    struct kme_server_pair_params p = {0};
    err = NULL;
    assert_int_equal(kme_server_config_pair(&p, &cfg, &err), KME_SERVER_ECONFIG);
    assert_non_null(err);
    free(err);
}

/* ---- a server on its own thread, clients on the test thread ------------- */

struct server_thread {
    uv_loop_t loop;
    uv_async_t stop;
    kme_server *srv;
    pthread_t tid;
    int stopped;
};

static void server_done(void *arg)
{
    struct server_thread *t = arg;
    t->stopped = 1;
}

static void on_stop(uv_async_t *a)
{
    struct server_thread *t = a->data;
    kme_server_stop(&t->srv, server_done, t);
    uv_close((uv_handle_t *)a, NULL);
}

static void *run_loop(void *arg)
{
    struct server_thread *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void rm_db(const char *path)
{
    char p[600];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static void test_embedded_roundtrip(void **state)
{
    (void)state;
    char a_cert[600], a_key[600], b_cert[600], b_key[600], ca[600], db_a[600], db_b[600];
    snprintf(a_cert, sizeof(a_cert), "%s/kme-a.pem", certs);
    snprintf(a_key, sizeof(a_key), "%s/kme-a.key", certs);
    snprintf(b_cert, sizeof(b_cert), "%s/kme-b.pem", certs);
    snprintf(b_key, sizeof(b_key), "%s/kme-b.key", certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(db_a, sizeof(db_a), "%s/embed-a-%d.db", QUMAIL_TEST_TMP, (int)getpid());
    snprintf(db_b, sizeof(db_b), "%s/embed-b-%d.db", QUMAIL_TEST_TMP, (int)getpid());
    rm_db(db_a);
    rm_db(db_b);
    struct kme_server_pair_params p = {
        .a = {.kme_id = "kme-a", .cert_file = a_cert, .key_file = a_key, .database = db_a},
        .b = {.kme_id = "kme-b", .cert_file = b_cert, .key_file = b_key, .database = db_b},
        .ca_file = ca,
        .secret_key_rate = 1000000,
        .max_key_count = 1000,
    };
    kme_server_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(kme_server_config_pair(&p, &cfg, &err), 0);

    struct server_thread t = {0};
    assert_int_equal(uv_loop_init(&t.loop), 0);
    int ret = kme_server_start(&t.loop, cfg, &t.srv, &err);
    if (ret < 0)
        fail_msg("start: %s", err);
    kme_server_config_free(&cfg);
    uint16_t pa = kme_server_port(t.srv, 0), pb = kme_server_port(t.srv, 1);
    assert_true(pa > 0 && pb > 0 && pa != pb);
    assert_true(kme_server_link_port(t.srv, 0) > 0);
    assert_int_equal(kme_server_port(t.srv, 2), 0);
    uv_async_init(&t.loop, &t.stop, on_stop);
    t.stop.data = &t;
    assert_int_equal(pthread_create(&t.tid, NULL, run_loop, &t), 0);

    char url_a[64], url_b[64], sa_cert[600], sa_key[600], sb_cert[600], sb_key[600];
    snprintf(url_a, sizeof(url_a), "https://127.0.0.1:%u", pa);
    snprintf(url_b, sizeof(url_b), "https://127.0.0.1:%u", pb);
    snprintf(sa_cert, sizeof(sa_cert), "%s/sae-a.pem", certs);
    snprintf(sa_key, sizeof(sa_key), "%s/sae-a.key", certs);
    snprintf(sb_cert, sizeof(sb_cert), "%s/sae-b.pem", certs);
    snprintf(sb_key, sizeof(sb_key), "%s/sae-b.key", certs);
    struct kme_client_config ca_cfg = {.url = url_a, .cert_file = sa_cert,
                                       .key_file = sa_key, .ca_file = ca,
                                       .expect_kme_id = "kme-a"};
    struct kme_client_config cb_cfg = {.url = url_b, .cert_file = sb_cert,
                                       .key_file = sb_key, .ca_file = ca,
                                       .expect_kme_id = "kme-b"};
    struct kme_keys *enc = NULL, *dec = NULL;
    /* The pool fills at 1 Mbit/s once the link is up: retry briefly. */
    for (int i = 0; i < 100 && enc == NULL; i++) {
        err = NULL;
        if (kme_sync_enc_keys(&ca_cfg, "sae-b", 3, 512, &enc, &err) < 0) {
            free(err);
            usleep(100 * 1000);
        }
    }
    assert_non_null(enc);
    assert_int_equal(enc->count, 3);
    const char *ids[3];
    for (size_t i = 0; i < 3; i++) {
        ids[i] = enc->keys[i].key_id;
        assert_int_equal(enc->keys[i].len, 64);
    }
    err = NULL;
    ret = kme_sync_dec_keys(&cb_cfg, "sae-a", ids, 3, &dec, &err);
    if (ret < 0)
        fail_msg("dec_keys: %s", err);
    assert_int_equal(dec->count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(dec->keys[i].key_id, enc->keys[i].key_id);
        assert_memory_equal(dec->keys[i].bytes, enc->keys[i].bytes, 64);
    }
    kme_keys_free(&dec);
    /* Delivered once only. */
    struct kme_client_config once = cb_cfg;
    once.dec_deadline_ms = 1;
    err = NULL;
    assert_true(kme_sync_dec_keys(&once, "sae-a", ids, 1, &dec, &err) < 0);
    free(err);
    kme_keys_free(&enc);

    uv_async_send(&t.stop);
    pthread_join(t.tid, NULL);
    assert_int_equal(t.stopped, 1);
    assert_int_equal(uv_loop_close(&t.loop), 0); /* no handle leaked */
    rm_db(db_a);
    rm_db(db_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_embedded_roundtrip),
    };
    return cmocka_run_group_tests(tests, make_certs, NULL);
}
