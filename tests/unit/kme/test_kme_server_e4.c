/* The simulator's 004 internals that need no network: QoS negotiation and
 * the counter-proposal (every field), the stream state as stored (JSON
 * round trip), chunk tables and the floor, the reservation line, and the
 * store upgrade from layout 1 (014 only) to layout 2 (004 tables). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e4_internal.h"

static struct kme_e4_cfg cfg(void)
{
    return (struct kme_e4_cfg){
        .chunk_default = 32, .chunk_min = 16, .chunk_max = 4096,
        .timeout_default_ms = 5000, .timeout_max_ms = 60000,
        .ttl_default_s = 86400, .ttl_max_s = 30 * 86400,
    };
}

static void test_qos_defaults(void **state)
{
    (void)state;
    struct kme_e4_cfg c = cfg();
    struct etsi004_qos in = {0}, out;
    assert_int_equal(e4_qos_negotiate(&c, 1000000, &in, &out), ETSI004_SUCCESS);
    assert_int_equal(out.key_chunk_size, 32);
    assert_int_equal(out.max_bps, 1000000);
    assert_int_equal(out.min_bps, 0);
    assert_int_equal(out.timeout, 5000);
    assert_int_equal(out.ttl, 86400);
    assert_string_equal(out.metadata_mimetype, "");
    /* A rate above 2^32-1 is reported as the largest u32. */
    assert_int_equal(e4_qos_negotiate(&c, UINT64_C(1) << 40, &in, &out), 0);
    assert_int_equal(out.max_bps, UINT32_MAX);
}

static void test_qos_soft_fields(void **state)
{
    (void)state;
    struct kme_e4_cfg c = cfg();
    struct etsi004_qos in = {.key_chunk_size = 64, .max_bps = 5000000, .timeout = 100000,
                             .jitter = 7, .priority = 9, .ttl = 60}, out;
    strcpy(in.metadata_mimetype, "Application/JSON");
    assert_int_equal(e4_qos_negotiate(&c, 1000000, &in, &out), ETSI004_SUCCESS);
    assert_int_equal(out.max_bps, 1000000);   /* best effort */
    assert_int_equal(out.timeout, 60000);     /* brought down */
    assert_int_equal(out.jitter, 7);
    assert_int_equal(out.priority, 9);
    assert_int_equal(out.ttl, 60);
    assert_string_equal(out.metadata_mimetype, "application/json");
}

/* Each hard field alone gives 7 with only that field changed. */
static void test_qos_counter_proposal(void **state)
{
    (void)state;
    struct kme_e4_cfg c = cfg();
    struct {
        struct etsi004_qos in;
        uint32_t chunk, min_bps, ttl;
        const char *mime;
    } cases[] = {
        {{.key_chunk_size = 8}, 16, 0, 86400, ""},
        {{.key_chunk_size = 5000}, 4096, 0, 86400, ""},
        {{.min_bps = 2000000}, 32, 1000000, 86400, ""},
        {{.ttl = 31 * 86400}, 32, 0, 30 * 86400, ""},
        {{.metadata_mimetype = "text/plain"}, 32, 0, 86400, "application/json"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct etsi004_qos out;
        assert_int_equal(e4_qos_negotiate(&c, 1000000, &cases[i].in, &out),
                         ETSI004_QOS_NOT_MET);
        assert_int_equal(out.key_chunk_size, cases[i].chunk);
        assert_int_equal(out.min_bps, cases[i].min_bps);
        assert_int_equal(out.ttl, cases[i].ttl);
        assert_string_equal(out.metadata_mimetype, cases[i].mime);
        /* The counter-proposal itself is accepted. */
        struct etsi004_qos again;
        assert_int_equal(e4_qos_negotiate(&c, 1000000, &out, &again), ETSI004_SUCCESS);
    }
    /* Min_bps above Max_bps raises Max_bps (within the rate). */
    struct etsi004_qos in = {.max_bps = 100, .min_bps = 500}, out;
    assert_int_equal(e4_qos_negotiate(&c, 1000000, &in, &out), ETSI004_SUCCESS);
    assert_int_equal(out.max_bps, 500);
}

static void test_state_json(void **state)
{
    (void)state;
    struct kme_e4 e = {0};
    e.dirty_tail = &e.dirty_first;
    uint8_t ksid[16];
    assert_int_equal(etsi004_ksid_generate(ksid), 0);
    struct e4_stream *s = e4_stream_add(&e, ksid);
    assert_non_null(s);
    s->qos = (struct etsi004_qos){.key_chunk_size = 48, .max_bps = 1, .min_bps = 2,
                                  .jitter = 3, .priority = 4, .timeout = 5, .ttl = 6};
    strcpy(s->qos.metadata_mimetype, "application/json");
    s->src = strdup("qkd://a\"quoted\"");
    s->dst = strdup("qkd://b");
    s->end[E4_HERE] = E4_END_OPEN;
    s->end[E4_THERE] = E4_END_CLOSED;
    s->sae[E4_HERE] = strdup("sae-a");
    s->next_index = 17;
    s->floor = 9;
    s->last_ms = 1234567890123ull;
    s->registered = true;
    char *text = e4_stream_state_json(s);
    assert_non_null(text);
    struct e4_stream t = {0};
    assert_int_equal(e4_stream_state_load(&t, text), 0);
    assert_memory_equal(&t.qos, &s->qos, sizeof(t.qos));
    assert_string_equal(t.src, s->src);
    assert_int_equal(t.end[E4_HERE], E4_END_OPEN);
    assert_int_equal(t.end[E4_THERE], E4_END_CLOSED);
    assert_string_equal(t.sae[E4_HERE], "sae-a");
    assert_null(t.sae[E4_THERE]);
    assert_int_equal(t.next_index, 17);
    assert_int_equal(t.floor, 9);
    assert_int_equal(t.last_ms, 1234567890123ull);
    assert_true(t.registered);
    free(t.src);
    free(t.dst);
    free(t.sae[E4_HERE]);
    free(text);
    static const char *const bad[] = {
        "", "[]", "{\"qos\":[1,2,3]}", "{\"qos\":[32,0,0,0,0,0,0,\"\"],\"here\":3,\"there\":0,"
        "\"next\":0,\"floor\":0,\"last\":0}",
        "{\"qos\":[32,0,0,0,0,0,0,\"\"],\"here\":0,\"there\":0,\"next\":0,\"floor\":0}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct e4_stream u = {0};
        assert_int_equal(e4_stream_state_load(&u, bad[i]), -1);
        free(u.src);
        free(u.dst);
        free(u.sae[0]);
        free(u.sae[1]);
    }
    /* Streams: found by KSID, removed. */
    assert_ptr_equal(e4_stream_find(&e, ksid), s);
    uint8_t other[16] = {1};
    assert_null(e4_stream_find(&e, other));
    e4_stream_remove(&e, s);
    assert_null(e4_stream_find(&e, ksid));
    free(e.buckets);
}

static void test_chunks_and_used(void **state)
{
    (void)state;
    struct e4_stream s = {0};
    for (uint32_t i = 0; i < 100; i++) {
        uint8_t *k = malloc(4);
        memcpy(k, &i, 4);
        assert_int_equal(e4_chunk_add(&s, i * 3, k, 4, 0, 0), 0);
    }
    assert_int_equal(s.chunk_count, 100);
    for (uint32_t i = 0; i < 300; i++) {
        struct e4_chunk *c = e4_chunk_find(&s, i);
        if (i % 3 == 0) {
            assert_non_null(c);
            uint32_t v;
            memcpy(&v, c->key, 4);
            assert_int_equal(v, i / 3);
            assert_false(e4_chunk_used(&s, i));
        } else {
            assert_null(c);
        }
    }
    s.floor = 10;
    assert_true(e4_chunk_used(&s, 9));   /* below the floor */
    assert_false(e4_chunk_used(&s, 11)); /* unknown: not used */
    struct e4_chunk *c = e4_chunk_find(&s, 12);
    free(c->key);
    c->key = NULL;
    assert_true(e4_chunk_used(&s, 12));  /* known without a key */
    for (size_t i = 0; i < s.chunk_buckets; i++) {
        while (s.chunks[i] != NULL) {
            struct e4_chunk *n = s.chunks[i]->next;
            free(s.chunks[i]->key);
            free(s.chunks[i]);
            s.chunks[i] = n;
        }
    }
    free(s.chunks);
}

static void test_reservation_line(void **state)
{
    (void)state;
    struct kme_reservation r = {.off = 123456789012ull, .len = 32, .e4 = true,
                                .e4_index = 4294967294u, .e4_at = 1, .e4_exp = 2};
    strcpy(r.key_id, "550e8400-e29b-41d4-a716-446655440000");
    char line[256];
    size_t n = kme_e4_reservation_line(&r, line, sizeof(line));
    assert_true(n > 0);
    assert_string_equal(line, "{\"t\":\"c\",\"off\":123456789012,\"len\":32,\"ksid\":"
                              "\"550e8400-e29b-41d4-a716-446655440000\",\"idx\":4294967294,"
                              "\"at\":1,\"exp\":2}\n");
    assert_int_equal(kme_e4_reservation_line(&r, line, 20), 0);
}

/* A store written by a simulator before 004 (layout 1) is upgraded in
 * place: its rows kept, the 004 tables added, user_version 2. */
static void test_store_upgrade(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/e4-upgrade-%d.db", QUMAIL_TEST_TMP, (int)getpid());
    unlink(path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
        "CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES('out_head', 0);"
        "CREATE TABLE out_pool(off INTEGER PRIMARY KEY, end INTEGER NOT NULL, data BLOB NOT NULL);"
        "CREATE TABLE in_pool(off INTEGER PRIMARY KEY, end INTEGER NOT NULL, data BLOB NOT NULL);"
        "CREATE TABLE outbox(off INTEGER PRIMARY KEY, len INTEGER NOT NULL, key_id TEXT NOT NULL,"
        " master TEXT NOT NULL, slaves TEXT NOT NULL);"
        "CREATE TABLE held(off INTEGER NOT NULL, slave TEXT NOT NULL, key_id TEXT NOT NULL,"
        " master TEXT NOT NULL, key BLOB NOT NULL, expires INTEGER NOT NULL,"
        " PRIMARY KEY(off, slave)) WITHOUT ROWID;"
        "INSERT INTO out_pool VALUES(0, 4, x'01020304');"
        "PRAGMA user_version = 1;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct kme_store *st = NULL;
    char *err = NULL;
    assert_int_equal(kme_store_open(path, false, &st, &err), 0);
    assert_non_null(kme_store_e4(st));
    kme_store_close(&st);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 2);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM out_pool", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_exec(db, "SELECT * FROM e4_stream, e4_chunk, e4_outbox", NULL,
                                  NULL, NULL), SQLITE_OK);
    /* A layout this simulator does not know is refused. */
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(kme_store_open(path, false, &st, &err), KME_SERVER_ESTORE);
    assert_non_null(err);
    free(err);
    char side[600];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qos_defaults),
        cmocka_unit_test(test_qos_soft_fields),
        cmocka_unit_test(test_qos_counter_proposal),
        cmocka_unit_test(test_state_json),
        cmocka_unit_test(test_chunks_and_used),
        cmocka_unit_test(test_reservation_line),
        cmocka_unit_test(test_store_upgrade),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
