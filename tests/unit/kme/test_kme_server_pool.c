/* Pool accounting of the KME simulator: bit-exact draws from the key
 * stream, no waste, held keys (multicast collection), outbox. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

static void fill(uint8_t *p, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 2654435761u >> 13);
}

static void test_stream_exact_draws(void **state)
{
    (void)state;
    struct kme_stream s;
    kme_stream_init(&s, 0);
    uint8_t buf[5000];
    fill(buf, sizeof(buf), 0);
    assert_int_equal(kme_stream_append(&s, 0, buf, sizeof(buf)), 0);
    assert_int_equal(kme_stream_append(&s, 1, buf, 1), -1); /* not at tail */
    /* Draw every size from 1 to 99 bytes (8..792 bits): each takes exactly
     * its bytes, consecutive, nothing skipped. */
    uint64_t off = 0;
    uint8_t out[100];
    for (size_t n = 1; n < 100; n++) {
        assert_int_equal(kme_stream_take(&s, n, out), 0);
        assert_memory_equal(out, buf + off, n);
        off += n;
        assert_int_equal(s.head, off);
    }
    assert_int_equal(off, 4950);
    assert_int_equal(kme_stream_len(&s), 50);
    assert_int_equal(kme_stream_take(&s, 51, out), -1); /* not enough */
    assert_int_equal(kme_stream_len(&s), 50);           /* nothing lost */
    assert_int_equal(kme_stream_take(&s, 50, out), 0);
    assert_memory_equal(out, buf + 4950, 50);
    assert_int_equal(kme_stream_len(&s), 0);
    kme_stream_clear(&s);
}

static void test_stream_compaction(void **state)
{
    (void)state;
    struct kme_stream s;
    kme_stream_init(&s, 1000); /* streams resume at any offset */
    uint64_t tail = 1000, head = 1000;
    uint8_t chunk[777], got[333], want[333];
    for (int round = 0; round < 2000; round++) {
        fill(chunk, sizeof(chunk), tail);
        assert_int_equal(kme_stream_append(&s, tail, chunk, sizeof(chunk)), 0);
        tail += sizeof(chunk);
        for (int j = 0; j < 2; j++) {
            size_t n = (size_t)(round % 300) + 33;
            assert_int_equal(kme_stream_take(&s, n, got), 0);
            fill(want, n, head);
            assert_memory_equal(got, want, n);
            head += n;
        }
        const uint8_t *p = kme_stream_at(&s, head, 1);
        assert_non_null(p);
        fill(want, 1, head);
        assert_int_equal(p[0], want[0]);
    }
    assert_int_equal(s.head, head);
    assert_int_equal(s.tail, tail);
    /* Memory stays bounded by what is held, not by what passed through. */
    assert_true(s.cap <= 4 * (tail - head) + 8192);
    assert_null(kme_stream_at(&s, head - 1, 1));
    assert_null(kme_stream_at(&s, tail, 1));
    kme_stream_clear(&s);
}

static void test_held_multicast(void **state)
{
    (void)state;
    struct kme_held_table t;
    assert_int_equal(kme_held_init(&t), 0);
    const char *slaves[] = {"b", "c", "d"};
    uint8_t key[32];
    fill(key, sizeof(key), 7);
    struct kme_held *h = kme_held_new("bc490419-7d60-487f-adc1-4ddcc177c139", "a",
                                      slaves, 3, key, sizeof(key), 0);
    assert_non_null(h);
    assert_int_equal(kme_held_insert(&t, h), 0);
    struct kme_held *dup = kme_held_new("bc490419-7d60-487f-adc1-4ddcc177c139", "a",
                                        slaves, 1, key, 1, 0);
    assert_int_equal(kme_held_insert(&t, dup), -1);
    kme_held_free(dup);
    h = kme_held_find(&t, "bc490419-7d60-487f-adc1-4ddcc177c139");
    assert_non_null(h);
    assert_int_equal(kme_held_slave_index(h, "a"), -1); /* master is no slave */
    int c = kme_held_slave_index(h, "c");
    assert_true(c >= 0);
    assert_false(kme_held_collect(&t, h, (size_t)c));
    assert_int_equal(kme_held_slave_index(h, "c"), -1); /* never twice */
    assert_false(kme_held_collect(&t, h, (size_t)kme_held_slave_index(h, "b")));
    assert_memory_equal(h->key, key, sizeof(key));
    assert_true(kme_held_collect(&t, h, (size_t)kme_held_slave_index(h, "d")));
    assert_null(kme_held_find(&t, "bc490419-7d60-487f-adc1-4ddcc177c139"));
    assert_int_equal(t.count, 0);

    /* Many keys: the table grows and finds every one. */
    char id[ETSI014_UUID_LEN + 1];
    static char ids[10000][ETSI014_UUID_LEN + 1];
    for (int i = 0; i < 10000; i++) {
        etsi014_uuid_generate(id);
        memcpy(ids[i], id, sizeof(id));
        h = kme_held_new(id, "a", slaves, 1, key, 1 + (size_t)(i % 32), 0);
        assert_int_equal(kme_held_insert(&t, h), 0);
    }
    assert_int_equal(t.count, 10000);
    for (int i = 0; i < 10000; i++) {
        h = kme_held_find(&t, ids[i]);
        assert_non_null(h);
        assert_int_equal(h->key_len, 1 + (size_t)(i % 32));
        if (i % 2 == 0)
            kme_held_destroy(&t, h);
    }
    assert_int_equal(t.count, 5000);
    kme_held_free_all(&t);
}

static void test_outbox(void **state)
{
    (void)state;
    struct kme_outbox q = {0};
    uint64_t off = 0;
    for (int round = 0; round < 5; round++) {
        assert_int_equal(kme_outbox_reserve(&q, 300), 0);
        for (int i = 0; i < 300; i++) {
            struct kme_reservation r = {.off = off, .len = 32};
            snprintf(r.key_id, sizeof(r.key_id), "%d", i);
            r.master = strdup("a");
            r.slaves_json = strdup("[\"b\"]");
            assert_int_equal(kme_outbox_push(&q, &r), 0);
            off += 32;
        }
        /* The peer applied all but the last 100. */
        kme_outbox_drop_until(&q, off - (uint64_t)100 * 32);
        assert_int_equal(q.count, 100);
        assert_int_equal(kme_outbox_at(&q, 0)->off, off - (uint64_t)100 * 32);
        for (size_t i = 1; i < q.count; i++)
            assert_int_equal(kme_outbox_at(&q, i)->off,
                             kme_outbox_at(&q, i - 1)->off + 32);
    }
    kme_outbox_drop_until(&q, off - 16); /* a partial key is not applied */
    assert_int_equal(q.count, 1);
    assert_null(kme_outbox_at(&q, 1));
    kme_outbox_clear(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_exact_draws),
        cmocka_unit_test(test_stream_compaction),
        cmocka_unit_test(test_held_multicast),
        cmocka_unit_test(test_outbox),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
