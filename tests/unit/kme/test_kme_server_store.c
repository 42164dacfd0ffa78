/* The simulator's SQLite store: what a batch commits is what a restart
 * loads (pools trimmed at their heads, held keys per slave, outbox), and a
 * failed batch changes nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <unistd.h>

#include "server_internal.h"

static char db_path[512];

static int setup(void **state)
{
    (void)state;
    snprintf(db_path, sizeof(db_path), "%s/store-test-%d.db", QUMAIL_TEST_TMP,
             (int)getpid());
    unlink(db_path);
    char p[600];
    snprintf(p, sizeof(p), "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", db_path);
    unlink(p);
    return 0;
}

static int teardown(void **state)
{
    return setup(state);
}

static void fill(uint8_t *p, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 2654435761u >> 11);
}

static void add_material(struct kme_batch *b, enum kme_op_kind kind,
                         uint64_t off, size_t len)
{
    struct kme_op *op = kme_batch_op(b, kind);
    op->off = off;
    op->len = len;
    op->data = malloc(len);
    fill(op->data, len, off);
}

struct state {
    struct kme_meta meta;
    struct kme_stream out, in;
    struct kme_outbox outbox;
    struct kme_held_table held;
};

static void load(struct kme_store *st, struct state *s)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(kme_held_init(&s->held), 0);
    char *err = NULL;
    assert_int_equal(kme_store_load(st, &s->meta, &s->out, &s->in, &s->outbox,
                                    &s->held, &err), 0);
}

static void unload(struct state *s)
{
    kme_stream_clear(&s->out);
    kme_stream_clear(&s->in);
    kme_outbox_clear(&s->outbox);
    kme_held_free_all(&s->held);
}

static void reopen(struct kme_store **st)
{
    kme_store_close(st);
    char *err = NULL;
    assert_int_equal(kme_store_open(db_path, true, st, &err), 0);
}

static void test_commit_and_reload(void **state)
{
    (void)state;
    struct kme_store *st = NULL;
    char *err = NULL;
    assert_int_equal(kme_store_open(db_path, true, &st, &err), 0);
    struct state s;
    load(st, &s);
    assert_int_equal(kme_stream_len(&s.out), 0);
    assert_int_equal(s.held.count, 0);
    unload(&s);

    /* Batch 1: 10000 bytes generated, 5000 drawn for a reservation, 3000
     * received from the peer, one multicast key held for two slaves. */
    struct kme_batch *b = calloc(1, sizeof(*b));
    add_material(b, KME_OP_OUT_MATERIAL, 0, 4096);
    add_material(b, KME_OP_OUT_MATERIAL, 4096, 4096);
    add_material(b, KME_OP_OUT_MATERIAL, 8192, 1808);
    add_material(b, KME_OP_IN_MATERIAL, 0, 3000);
    struct kme_op *op = kme_batch_op(b, KME_OP_OUTBOX_ADD);
    op->off = 0;
    op->len = 5000;
    snprintf(op->key_id, sizeof(op->key_id), "bc490419-7d60-487f-adc1-4ddcc177c139");
    op->master = strdup("sae-a");
    op->slaves_json = strdup("[\"sae-b\"]");
    const char *slaves[] = {"sae-b", "sae-c"};
    for (int i = 0; i < 2; i++) {
        op = kme_batch_op(b, KME_OP_HELD_ADD);
        snprintf(op->key_id, sizeof(op->key_id), "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
        op->slave = strdup(slaves[i]);
        op->master = strdup("sae-x");
        op->len = 32;
        op->data = malloc(32);
        fill(op->data, 32, 0);
        op->expires_ms = 12345;
        op->off = 777;
    }
    b->meta.out_head = 5000;
    b->meta.out_acked = 9000;
    b->meta.in_head = 32;
    kme_store_commit(st, b);
    assert_int_equal(b->result, 0);
    kme_batch_free(&b);
    assert_null(b);

    reopen(&st);
    load(st, &s);
    assert_int_equal(s.meta.out_head, 5000);
    assert_int_equal(s.meta.out_acked, 9000);
    assert_int_equal(s.out.head, 5000);
    assert_int_equal(s.out.tail, 10000);
    uint8_t want[5000];
    fill(want, 5000, 5000);
    assert_memory_equal(kme_stream_at(&s.out, 5000, 5000), want, 5000);
    assert_int_equal(s.in.head, 32);
    assert_int_equal(s.in.tail, 3000);
    fill(want, 2968, 32);
    assert_memory_equal(kme_stream_at(&s.in, 32, 2968), want, 2968);
    assert_int_equal(s.outbox.count, 1);
    assert_string_equal(kme_outbox_at(&s.outbox, 0)->master, "sae-a");
    struct kme_held *h = kme_held_find(&s.held, "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    assert_non_null(h);
    assert_int_equal(h->slave_count, 2);
    assert_int_equal(h->expires_ms, 12345);
    assert_int_equal(h->key_len, 32);
    assert_int_equal(h->off, 777);
    unload(&s);

    /* Batch 2: sae-c collects; the peer applied the reservation. */
    b = calloc(1, sizeof(*b));
    op = kme_batch_op(b, KME_OP_HELD_DEL);
    snprintf(op->key_id, sizeof(op->key_id), "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    op->off = 777;
    op->slave = strdup("sae-c");
    b->meta.out_head = 6001;
    b->meta.out_acked = 10000;
    b->meta.out_applied = 5000;
    b->meta.in_head = 32;
    kme_store_commit(st, b);
    assert_int_equal(b->result, 0);
    kme_batch_free(&b);

    /* Batch 3 fails (a chunk at an existing offset): nothing of it stays. */
    b = calloc(1, sizeof(*b));
    op = kme_batch_op(b, KME_OP_HELD_DEL);
    snprintf(op->key_id, sizeof(op->key_id), "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    op->off = 777;
    op->slave = strdup("sae-b");
    add_material(b, KME_OP_OUT_MATERIAL, 6001, 10);
    b->meta.out_head = 7000;
    kme_store_commit(st, b);
    assert_true(b->result < 0);
    assert_non_null(b->error);
    kme_batch_free(&b);

    reopen(&st);
    load(st, &s);
    assert_int_equal(s.out.head, 6001);
    assert_int_equal(s.out.tail, 10000);
    fill(want, 3999, 6001);
    assert_memory_equal(kme_stream_at(&s.out, 6001, 3999), want, 3999);
    assert_int_equal(s.outbox.count, 0);
    h = kme_held_find(&s.held, "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    assert_non_null(h);
    assert_int_equal(h->slave_count, 1);
    assert_string_equal(h->slaves[0], "sae-b");
    unload(&s);
    kme_store_close(&st);
    assert_null(st);
}

static void test_open_failure(void **state)
{
    (void)state;
    struct kme_store *st = NULL;
    char *err = NULL;
    assert_int_equal(kme_store_open("/proc/nonexistent-dir/x/y.db", true, &st, &err),
                     KME_SERVER_ESTORE);
    assert_null(st);
    assert_non_null(err);
    assert_non_null(strstr(err, "/proc/nonexistent-dir/x/y.db"));
    free(err);
}

static void test_version_mismatch(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct kme_store *st = NULL;
    char *err = NULL;
    assert_int_equal(kme_store_open(db_path, true, &st, &err), KME_SERVER_ESTORE);
    assert_null(st);
    assert_non_null(strstr(err, "version 99"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_and_reload, setup, teardown),
        cmocka_unit_test(test_open_failure),
        cmocka_unit_test_setup_teardown(test_version_mismatch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
