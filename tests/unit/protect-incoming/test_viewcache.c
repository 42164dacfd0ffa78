/* viewcache: LRU order, byte and count limits, replacement, expiry,
 * references given back exactly once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "viewcache.h"

struct obj {
    int refs;
    int id;
};

static void *ref(void *o)
{
    ((struct obj *)o)->refs++;
    return o;
}

static void unref(void *o)
{
    struct obj *x = o;
    assert_true(x->refs > 0);
    x->refs--;
}

static const struct viewcache_ops ops = {ref, unref};

static void test_lru_count(void **state)
{
    (void)state;
    struct obj o[4] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    viewcache *vc = viewcache_new(&ops, 1000, 3);
    assert_non_null(vc);
    char key[8];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(viewcache_put(vc, key, &o[i], 10, 0, 0), 1);
        assert_int_equal(o[i].refs, 1);
    }
    /* use k0: k1 becomes the least recently used */
    struct obj *g = viewcache_get(vc, "k0", 0);
    assert_ptr_equal(g, &o[0]);
    assert_int_equal(o[0].refs, 2);
    unref(g);
    assert_int_equal(viewcache_put(vc, "k3", &o[3], 10, 0, 0), 1);
    assert_int_equal(o[1].refs, 0); /* evicted */
    assert_null(viewcache_get(vc, "k1", 0));
    struct viewcache_stats st;
    viewcache_get_stats(vc, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.bytes, 30);
    assert_int_equal(st.evictions, 1);
    viewcache_free(&vc);
    assert_null(vc);
    for (int i = 0; i < 4; i++)
        assert_int_equal(o[i].refs, 0);
}

static void test_bytes_replace_expire(void **state)
{
    (void)state;
    struct obj a = {0, 0}, b = {0, 1}, c = {0, 2}, big = {0, 3};
    viewcache *vc = viewcache_new(&ops, 100, 100);
    assert_int_equal(viewcache_put(vc, "a", &a, 40, 0, 0), 1);
    assert_int_equal(viewcache_put(vc, "b", &b, 40, 0, 0), 1);
    /* 40 + 40 + 40 > 100: a goes */
    assert_int_equal(viewcache_put(vc, "c", &c, 40, 0, 0), 1);
    assert_int_equal(a.refs, 0);
    /* larger than the whole budget: not cached, nothing evicted */
    assert_int_equal(viewcache_put(vc, "big", &big, 101, 0, 0), 0);
    assert_int_equal(big.refs, 0);
    assert_int_equal(b.refs, 1);
    /* replace b's entry with a */
    assert_int_equal(viewcache_put(vc, "b", &a, 10, 0, 0), 1);
    assert_int_equal(b.refs, 0);
    assert_int_equal(a.refs, 1);
    struct obj *g = viewcache_get(vc, "b", 0);
    assert_ptr_equal(g, &a);
    unref(g);
    /* expiry */
    assert_int_equal(viewcache_put(vc, "e", &big, 5, 1000, 0), 1);
    g = viewcache_get(vc, "e", 999);
    assert_ptr_equal(g, &big);
    unref(g);
    assert_null(viewcache_get(vc, "e", 1000));
    assert_int_equal(big.refs, 0);
    struct viewcache_stats st;
    viewcache_get_stats(vc, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(viewcache_remove(vc, "c"), 1);
    assert_int_equal(viewcache_remove(vc, "c"), 0);
    assert_int_equal(c.refs, 0);
    viewcache_clear(vc);
    assert_int_equal(a.refs, 0);
    viewcache_get_stats(vc, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    viewcache_free(&vc);
    assert_null(viewcache_new(&ops, 0, 1));
    assert_null(viewcache_new(&ops, 1, 0));
}

/* Many keys: the table grows; every object comes back exactly once. */
static void test_many(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct obj *o = calloc(N, sizeof(*o));
    viewcache *vc = viewcache_new(&ops, UINT64_MAX, 2000);
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "m%d", i);
        assert_int_equal(viewcache_put(vc, key, &o[i], 1, 0, 0), 1);
    }
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "m%d", i);
        struct obj *g = viewcache_get(vc, key, 0);
        if (i < N - 2000) {
            assert_null(g);
            assert_int_equal(o[i].refs, 0);
        } else {
            assert_ptr_equal(g, &o[i]);
            unref(g);
        }
    }
    viewcache_free(&vc);
    for (int i = 0; i < N; i++)
        assert_int_equal(o[i].refs, 0);
    free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_count),
        cmocka_unit_test(test_bytes_replace_expire),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
