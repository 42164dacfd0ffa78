/* Request splitting math of the KME client: exact totals, sizes within the
 * limits and multiples of 8, call counts per max_key_per_request. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/client_internal.h"

static uint64_t plan_total(const struct kme_split_plan *p)
{
    uint64_t t = 0;
    for (size_t i = 0; i < p->ngroups; i++)
        t += p->groups[i].count * p->groups[i].size_bits;
    return t;
}

static void check_plan(const struct kme_split_limits *lim, uint64_t total)
{
    struct kme_split_plan p;
    assert_int_equal(kme_split(lim, total, &p), 0);
    assert_true(p.ngroups >= 1 && p.ngroups <= KME_SPLIT_MAX_GROUPS);
    assert_int_equal(plan_total(&p), total);
    uint64_t keys = 0, calls = 0;
    for (size_t i = 0; i < p.ngroups; i++) {
        const struct kme_split_group *g = &p.groups[i];
        assert_true(g->count > 0);
        assert_int_equal(g->size_bits % 8, 0);
        assert_true(g->size_bits >= lim->min_key_size);
        assert_true(g->size_bits <= lim->max_key_size);
        if (i > 0)
            assert_true(g->size_bits < p.groups[i - 1].size_bits);
        keys += g->count;
        calls += (g->count + lim->max_key_per_request - 1) / lim->max_key_per_request;
    }
    assert_int_equal(keys, p.keys);
    assert_int_equal(calls, p.calls);
    /* fewest keys possible */
    uint64_t maxb = lim->max_key_size / 8 * 8;
    assert_int_equal(p.keys, (total + maxb - 1) / maxb);
}

static void test_simple(void **state)
{
    (void)state;
    struct kme_split_limits lim = {64, 1024, 128};
    struct kme_split_plan p;
    assert_int_equal(kme_split(&lim, 256, &p), 0);
    assert_int_equal(p.ngroups, 1);
    assert_int_equal(p.groups[0].count, 1);
    assert_int_equal(p.groups[0].size_bits, 256);
    assert_int_equal(p.calls, 1);

    assert_int_equal(kme_split(&lim, 1024, &p), 0);
    assert_int_equal(p.ngroups, 1);
    assert_int_equal(p.groups[0].size_bits, 1024);

    /* 1024 + 8: two keys, the second below the minimum is not allowed */
    assert_int_equal(kme_split(&lim, 1032, &p), 0);
    assert_int_equal(p.keys, 2);
    assert_int_equal(plan_total(&p), 1032);
    assert_int_equal(p.groups[0].size_bits, 968);
    assert_int_equal(p.groups[1].size_bits, 64);
}

static void test_message_sizes(void **state)
{
    (void)state;
    /* the mime engine: message bits + 256, rounded up to a byte */
    struct kme_split_limits lim = {64, 1024, 128};
    for (uint64_t msg = 1; msg < 40000; msg += 97) {
        uint64_t total = (msg * 8 + 256 + 7) / 8 * 8;
        check_plan(&lim, total);
    }
    check_plan(&lim, 8ull * 1024 * 1024 * 8); /* 8 MiB message */
}

static void test_many_calls(void **state)
{
    (void)state;
    struct kme_split_limits lim = {64, 1024, 128};
    struct kme_split_plan p;
    /* 200 full keys + 64 bits: 201 keys, 2 calls for the 1024-bit group... */
    assert_int_equal(kme_split(&lim, 200 * 1024 + 64, &p), 0);
    assert_int_equal(plan_total(&p), 200 * 1024 + 64);
    assert_int_equal(p.keys, 201);
    assert_true(p.calls >= 2 && p.calls <= 4);
    lim.max_key_per_request = 1;
    assert_int_equal(kme_split(&lim, (uint64_t)10 * 1024, &p), 0);
    assert_int_equal(p.calls, 10);
}

static void test_odd_limits(void **state)
{
    (void)state;
    /* limits that are not multiples of 8 round inwards */
    struct kme_split_limits lim = {60, 1020, 7};
    struct kme_split_plan p;
    assert_int_equal(kme_split(&lim, 1016, &p), 0);
    assert_int_equal(p.groups[0].size_bits, 1016);
    for (uint64_t t = 64; t < 20000; t += 8)
        check_plan(&lim, t);
    /* min == max: only multiples of that size */
    struct kme_split_limits fixed = {256, 256, 128};
    assert_int_equal(kme_split(&fixed, 768, &p), 0);
    assert_int_equal(p.keys, 3);
    assert_int_equal(kme_split(&fixed, 776, &p), KME_ELIMITS);
    /* min 0 means one byte */
    struct kme_split_limits tiny = {0, 8, 1000};
    assert_int_equal(kme_split(&tiny, 80, &p), 0);
    assert_int_equal(p.keys, 10);
    assert_int_equal(p.calls, 1);
}

static void test_errors(void **state)
{
    (void)state;
    struct kme_split_limits lim = {64, 1024, 128};
    struct kme_split_plan p;
    assert_int_equal(kme_split(&lim, 0, &p), KME_EINVAL);
    assert_int_equal(kme_split(&lim, 12, &p), KME_EINVAL);
    assert_int_equal(kme_split(&lim, KME_SPLIT_MAX_TOTAL_BITS + 8, &p), KME_EINVAL);
    assert_int_equal(kme_split(&lim, 56, &p), KME_ELIMITS); /* below min */
    struct kme_split_limits bad = {64, 1024, 0};
    assert_int_equal(kme_split(&bad, 256, &p), KME_ELIMITS);
    struct kme_split_limits inverted = {512, 256, 10};
    assert_int_equal(kme_split(&inverted, 256, &p), KME_ELIMITS);
    struct kme_split_limits nobytes = {1, 7, 10};
    assert_int_equal(kme_split(&nobytes, 8, &p), KME_ELIMITS);
    /* min 600, max 1024: 1032 bits = 2 keys would need >= 1200 */
    struct kme_split_limits wide = {600, 1024, 10};
    assert_int_equal(kme_split(&wide, 1032, &p), KME_ELIMITS);
    assert_int_equal(kme_split(&wide, 1200, &p), 0);
    assert_int_equal(plan_total(&p), 1200);
}

static void test_exhaustive_small(void **state)
{
    (void)state;
    /* every feasible total for small limits is planned exactly */
    for (uint64_t min = 8; min <= 64; min += 8)
        for (uint64_t max = min; max <= 128; max += 8)
            for (uint64_t t = 8; t <= 2048; t += 8) {
                struct kme_split_limits lim = {min, max, 3};
                struct kme_split_plan p;
                int rc = kme_split(&lim, t, &p);
                uint64_t k = (t + max - 1) / max;
                if (k * min > t) {
                    assert_int_equal(rc, KME_ELIMITS);
                    continue;
                }
                assert_int_equal(rc, 0);
                check_plan(&lim, t);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_message_sizes),
        cmocka_unit_test(test_many_calls),
        cmocka_unit_test(test_odd_limits),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_exhaustive_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
