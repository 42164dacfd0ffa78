/* Several threads at once, as libuv's thread pool calls the vault: puts,
 * batch gets, metadata and local keys interleaved, with a reader pool and
 * with one shared connection. Every key a thread stored is readable by
 * all, every read returns either nothing or the right bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "vault_test.h"

enum { THREADS = 6, ROUNDS = 40, BATCH = 10 };

struct worker {
    kme_vault *v;
    int no;
    int failures;
    char local_ids[ROUNDS][37];
};

static void make_id(char *out, size_t n, int thread, int round, int j)
{
    snprintf(out, n, "t%d-r%d-k%d", thread, round, j);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int r = 0; r < ROUNDS; r++) {
        char ids[BATCH][32];
        uint8_t keys[BATCH][32];
        struct kme_vault_key_in in[BATCH];
        for (int j = 0; j < BATCH; j++) {
            make_id(ids[j], sizeof(ids[j]), w->no, r, j);
            vt_key_bytes(ids[j], keys[j]);
            in[j] = (struct kme_vault_key_in){ids[j], keys[j], 32};
        }
        if (kme_vault_keys_put(w->v, KME_VAULT_RECEIVED, "K", "S", in, BATCH,
                               NULL) != 0)
            w->failures++;

        /* Own keys (all there) and the next thread's (there or not). */
        const char *p[2 * BATCH];
        char other[BATCH][32];
        for (int j = 0; j < BATCH; j++) {
            p[j] = ids[j];
            make_id(other[j], sizeof(other[j]), (w->no + 1) % THREADS, r, j);
            p[BATCH + j] = other[j];
        }
        struct kme_vault_keys *k = NULL;
        if (kme_vault_keys_get(w->v, "K", "S", p, (size_t)2 * BATCH, &k, NULL) != 0) {
            w->failures++;
            continue;
        }
        for (int j = 0; j < 2 * BATCH; j++) {
            uint8_t want[32];
            vt_key_bytes(p[j], want);
            bool own = j < BATCH;
            if ((own && k->keys[j].bytes == NULL) ||
                (k->keys[j].bytes != NULL &&
                 (k->keys[j].len != 32 ||
                  memcmp(k->keys[j].bytes, want, 32) != 0)))
                w->failures++;
        }
        kme_vault_keys_free(&k);

        char mid[32];
        snprintf(mid, sizeof(mid), "m%d", w->no);
        if (kme_vault_meta_put(w->v, mid, &r, sizeof(r), NULL) != 0)
            w->failures++;
        uint8_t *b = NULL;
        size_t len = 0;
        if (kme_vault_meta_get(w->v, mid, &b, &len, NULL) != 0 ||
            len != sizeof(r) || memcmp(b, &r, sizeof(r)) != 0)
            w->failures++;
        kme_vault_bytes_free(&b, len);

        if (kme_vault_local_new(w->v, "owner", 1, 32, &k, NULL) != 0) {
            w->failures++;
        } else {
            memcpy(w->local_ids[r], k->keys[0].key_id, 37);
            kme_vault_keys_free(&k);
        }
    }
    return NULL;
}

static void run(unsigned readers)
{
    struct vt t;
    vt_init(&t, "threads");
    t.cfg.readers = readers;
    kme_vault *v = NULL;
    char *err = NULL;
    if (kme_vault_open(&t.cfg, &v, &err) != 0)
        fail_msg("open: %s", err);
    static struct worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.v = v, .no = i};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    struct kme_vault_stats st;
    assert_int_equal(kme_vault_stats(v, &st, NULL), 0);
    assert_int_equal(st.keys_received, (size_t)THREADS * ROUNDS * BATCH);
    assert_int_equal(st.keys_local, THREADS * ROUNDS);
    assert_int_equal(st.messages, THREADS);
    kme_vault_close(&v);

    /* After a reopen: every local key of every thread, in one batch. */
    assert_int_equal(kme_vault_open(&t.cfg, &v, NULL), 0);
    const char *ids[THREADS * ROUNDS];
    for (int i = 0; i < THREADS; i++)
        for (int r = 0; r < ROUNDS; r++)
            ids[i * ROUNDS + r] = w[i].local_ids[r];
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, KME_VAULT_LOCAL_SOURCE, "owner",
                                        ids, (size_t)THREADS * ROUNDS, &k,
                                        NULL),
                     0);
    assert_int_equal(k->found, THREADS * ROUNDS);
    kme_vault_keys_free(&k);
    uint64_t rows = 0;
    assert_int_equal(kme_vault_verify(v, &rows, NULL), 0);
    assert_int_equal(rows, (size_t)THREADS * ROUNDS * (BATCH + 1) + THREADS);
    kme_vault_close(&v);
    vt_cleanup(&t);
}

static void test_reader_pool(void **state)
{
    (void)state;
    run(3);
}

static void test_one_connection(void **state)
{
    (void)state;
    run(KME_VAULT_READERS_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_pool),
        cmocka_unit_test(test_one_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
