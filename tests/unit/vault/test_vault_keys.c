/* Key rows of the vault: put and get by identity (source KME, master SAE,
 * key ID), batches in one call, idempotent puts and conflicts, local
 * random keys, limits and argument checks, persistence across reopen. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "kme_client.h"
#include "vault_test.h"

static const char *const SRC = "KME_B";
static const char *const MASTER = "sae-a";

static int setup(void **state)
{
    return vt_setup_named(state, "keys");
}

/* Puts keys named prefix0..prefix(n-1) with bytes derived from the IDs. */
static int put_range(kme_vault *v, const char *prefix, size_t n,
                     enum kme_vault_origin origin, char **err)
{
    struct kme_vault_key_in *in = calloc(n, sizeof(*in));
    char (*ids)[64] = calloc(n, sizeof(*ids));
    uint8_t (*bytes)[32] = calloc(n, sizeof(*bytes));
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%s%zu", prefix, i);
        vt_key_bytes(ids[i], bytes[i]);
        in[i] = (struct kme_vault_key_in){ids[i], bytes[i], 32};
    }
    int ret = kme_vault_keys_put(v, origin, SRC, MASTER, in, n, err);
    free(in);
    free(ids);
    free(bytes);
    return ret;
}

static void assert_key(const struct kme_vault_key *k, const char *id)
{
    uint8_t want[32];
    vt_key_bytes(id, want);
    assert_string_equal(k->key_id, id);
    assert_non_null(k->bytes);
    assert_int_equal(k->len, 32);
    assert_memory_equal(k->bytes, want, 32);
}

static void test_put_get(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    assert_int_equal(put_range(v, "k", 3, KME_VAULT_RECEIVED, NULL), 0);

    const char *ids[] = {"k2", "missing", "k0", "k2"};
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, ids, 4, &k, NULL), 0);
    assert_int_equal(k->count, 4);
    assert_int_equal(k->found, 3);
    assert_key(&k->keys[0], "k2");
    assert_string_equal(k->keys[1].key_id, "missing");
    assert_null(k->keys[1].bytes);
    assert_int_equal(k->keys[1].len, 0);
    assert_key(&k->keys[2], "k0");
    assert_key(&k->keys[3], "k2");
    assert_int_equal(k->total_len, 96);
    kme_vault_keys_free(&k);
    assert_null(k);

    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, SRC, MASTER, "k1", &b, &len, NULL),
                     0);
    uint8_t want[32];
    vt_key_bytes("k1", want);
    assert_int_equal(len, 32);
    assert_memory_equal(b, want, 32);
    kme_vault_bytes_free(&b, len);
    assert_null(b);

    char *err = NULL;
    assert_int_equal(kme_vault_key_get(v, SRC, MASTER, "nope", &b, &len, &err),
                     KME_VAULT_ENOTFOUND);
    assert_non_null(strstr(err, "nope"));
    free(err);
    assert_null(b);
    kme_vault_close(&v);
    assert_null(v);
}

/* The identity is (source, master, key ID): the same key ID under another
 * source KME or master SAE is another key. */
static void test_identity(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    assert_int_equal(put_range(v, "k", 1, KME_VAULT_RECEIVED, NULL), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, "KME_C", MASTER, "k0", &b, &len,
                                       NULL),
                     KME_VAULT_ENOTFOUND);
    assert_int_equal(kme_vault_key_get(v, SRC, "sae-x", "k0", &b, &len, NULL),
                     KME_VAULT_ENOTFOUND);
    assert_int_equal(kme_vault_key_get(v, KME_VAULT_LOCAL_SOURCE, MASTER,
                                       "k0", &b, &len, NULL),
                     KME_VAULT_ENOTFOUND);
    /* Another key with the same ID under another master is independent. */
    uint8_t other[32];
    memset(other, 0x5a, sizeof(other));
    struct kme_vault_key_in in = {"k0", other, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_SENT, SRC, "sae-x", &in,
                                        1, NULL),
                     0);
    assert_int_equal(kme_vault_key_get(v, SRC, "sae-x", "k0", &b, &len, NULL),
                     0);
    assert_memory_equal(b, other, 32);
    kme_vault_bytes_free(&b, len);
    assert_int_equal(kme_vault_key_get(v, SRC, MASTER, "k0", &b, &len, NULL),
                     0);
    assert_memory_not_equal(b, other, 32);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);
}

/* Putting the same key twice is fine (the reading side may fetch a key
 * the sending side already stored); other bytes under the same identity
 * fail the whole call, which then stores nothing. */
static void test_idempotent_and_conflict(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    assert_int_equal(put_range(v, "k", 2, KME_VAULT_SENT, NULL), 0);
    assert_int_equal(put_range(v, "k", 2, KME_VAULT_RECEIVED, NULL), 0);

    uint8_t fresh[32], bad[32];
    vt_key_bytes("fresh", fresh);
    memset(bad, 1, sizeof(bad));
    struct kme_vault_key_in in[2] = {{"fresh", fresh, 32}, {"k1", bad, 32}};
    char *err = NULL;
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER, in,
                                        2, &err),
                     KME_VAULT_ECONFLICT);
    assert_non_null(strstr(err, "k1"));
    free(err);
    /* A shorter key under the same identity is a conflict too. */
    struct kme_vault_key_in shorter = {"k0", fresh, 16};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER,
                                        &shorter, 1, NULL),
                     KME_VAULT_ECONFLICT);

    const char *ids[] = {"fresh", "k1"};
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, ids, 2, &k, NULL), 0);
    assert_int_equal(k->found, 1);
    assert_null(k->keys[0].bytes); /* rolled back with the conflict */
    assert_key(&k->keys[1], "k1");
    kme_vault_keys_free(&k);

    struct kme_vault_stats st;
    assert_int_equal(kme_vault_stats(v, &st, NULL), 0);
    assert_int_equal(st.keys_sent, 2); /* the first origin stays */
    assert_int_equal(st.keys_received, 0);
    assert_int_equal(st.key_bytes, 64);
    assert_int_equal(st.schema_version, 2);
    kme_vault_close(&v);
}

static void test_local_keys(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_local_new(v, "alice@example.org", 3, 32, &k,
                                         NULL),
                     0);
    assert_int_equal(k->count, 3);
    assert_int_equal(k->found, 3);
    assert_int_equal(k->total_len, 96);
    const char *ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = k->keys[i].key_id;
        assert_int_equal(strlen(ids[i]), 36);
        assert_int_equal(ids[i][14], '4');  /* UUID version 4 */
        assert_int_equal(k->keys[i].len, 32);
    }
    assert_string_not_equal(ids[0], ids[1]);
    assert_memory_not_equal(k->keys[0].bytes, k->keys[1].bytes, 32);

    struct kme_vault_keys *got = NULL;
    assert_int_equal(kme_vault_keys_get(v, KME_VAULT_LOCAL_SOURCE,
                                        "alice@example.org", ids, 3, &got,
                                        NULL),
                     0);
    assert_int_equal(got->found, 3);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(got->keys[i].bytes, k->keys[i].bytes, 32);
    kme_vault_keys_free(&got);
    /* Bound to the owner. */
    assert_int_equal(kme_vault_keys_get(v, KME_VAULT_LOCAL_SOURCE,
                                        "bob@example.org", ids, 3, &got, NULL),
                     0);
    assert_int_equal(got->found, 0);
    kme_vault_keys_free(&got);

    /* A QKD key may not be stored under the local namespace. */
    struct kme_vault_key_in in = {"x", k->keys[0].bytes, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED,
                                        KME_VAULT_LOCAL_SOURCE, "alice", &in,
                                        1, NULL),
                     KME_VAULT_EINVAL);
    kme_vault_keys_free(&k);

    struct kme_vault_stats st;
    assert_int_equal(kme_vault_stats(v, &st, NULL), 0);
    assert_int_equal(st.keys_local, 3);
    kme_vault_close(&v);

    /* Durable: readable after reopen. */
    v = vt_open_ok(t);
    assert_int_equal(kme_vault_local_new(v, "o", 1, 1, &k, NULL), 0);
    char id[37];
    memcpy(id, k->keys[0].key_id, sizeof(id));
    uint8_t byte = k->keys[0].bytes[0];
    kme_vault_keys_free(&k);
    kme_vault_close(&v);
    v = vt_open_ok(t);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, KME_VAULT_LOCAL_SOURCE, "o", id, &b,
                                       &len, NULL),
                     0);
    assert_int_equal(len, 1);
    assert_int_equal(b[0], byte);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);
}

/* Keys of many sizes in one batch; the get result grows past its first
 * guess (32 bytes a key). */
static void test_key_sizes(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    static uint8_t big[KME_VAULT_MAX_KEY_LEN];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    struct kme_vault_key_in in[] = {
        {"one", big, 1},
        {"big", big, KME_VAULT_MAX_KEY_LEN},
        {"odd", big + 3, 33},
    };
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER, in,
                                        3, NULL),
                     0);
    const char *ids[] = {"one", "big", "odd"};
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, ids, 3, &k, NULL), 0);
    assert_int_equal(k->found, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(k->keys[i].len, in[i].len);
        assert_memory_equal(k->keys[i].bytes, in[i].bytes, in[i].len);
    }
    assert_int_equal(k->total_len, 1 + KME_VAULT_MAX_KEY_LEN + 33);
    kme_vault_keys_free(&k);

    /* Longest identity strings are accepted. */
    char longid[KME_VAULT_MAX_ID_LEN + 1];
    memset(longid, 'x', KME_VAULT_MAX_ID_LEN);
    longid[KME_VAULT_MAX_ID_LEN] = '\0';
    struct kme_vault_key_in l = {longid, big, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, longid, longid,
                                        &l, 1, NULL),
                     0);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, longid, longid, longid, &b, &len,
                                       NULL),
                     0);
    assert_memory_equal(b, big, 32);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);
}

/* A message may need 100,000 keys: one call stores them, one call gets
 * them back. */
static void test_large_batch(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    size_t n = KME_VAULT_MAX_BATCH;
    assert_int_equal(put_range(v, "big-", n, KME_VAULT_RECEIVED, NULL), 0);
    char (*ids)[64] = calloc(n, sizeof(*ids));
    const char **p = calloc(n, sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof(ids[i]), "big-%zu", i);
        p[i] = ids[i];
    }
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, p, n, &k, NULL), 0);
    assert_int_equal(k->found, n);
    for (size_t i = 0; i < n; i += 997)
        assert_key(&k->keys[i], ids[i]);
    assert_key(&k->keys[n - 1], ids[n - 1]);
    kme_vault_keys_free(&k);
    /* One more is too many for one call. */
    char *err = NULL;
    assert_int_equal(put_range(v, "x", n + 1, KME_VAULT_RECEIVED, &err),
                     KME_VAULT_ETOOBIG);
    free(err);
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, p, n + 1, &k, NULL),
                     KME_VAULT_ETOOBIG);
    free(ids);
    free(p);
    kme_vault_close(&v);
}

/* The kme_client result is stored as it comes. */
static void test_put_kme(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t material[64];
    for (int i = 0; i < 64; i++)
        material[i] = (uint8_t)i;
    struct kme_key keys[2] = {
        {"0b2c4ac6-6a0f-4a9e-8d4b-2f1d2b1e6c01", material, 32, "", 0},
        {"0b2c4ac6-6a0f-4a9e-8d4b-2f1d2b1e6c02", material + 32, 32, "", 0},
    };
    struct kme_keys list = {2, keys, material, 64};
    assert_int_equal(kme_vault_keys_put_kme(v, KME_VAULT_RECEIVED, SRC, MASTER,
                                            &list, NULL),
                     0);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, SRC, MASTER, keys[1].key_id, &b,
                                       &len, NULL),
                     0);
    assert_memory_equal(b, material + 32, 32);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);
}

static void test_invalid(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32] = {0};
    char *err = NULL;
    const struct {
        const char *source, *master, *id;
        size_t len;
    } bad[] = {
        {"", MASTER, "id", 32},       {SRC, "", "id", 32},
        {SRC, MASTER, "", 32},        {SRC, MASTER, "sp ace", 32},
        {SRC, MASTER, "tab\t", 32},   {SRC, MASTER, "\x80", 32},
        {SRC, MASTER, "id", 0},       {NULL, MASTER, "id", 32},
        {SRC, NULL, "id", 32},        {SRC, MASTER, NULL, 32},
        {SRC, MASTER, "id", KME_VAULT_MAX_KEY_LEN + 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kme_vault_key_in in = {bad[i].id, key, bad[i].len};
        uint8_t *big = NULL;
        if (bad[i].len > sizeof(key)) {
            big = calloc(1, bad[i].len);
            in.bytes = big;
        }
        assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED,
                                            bad[i].source, bad[i].master, &in,
                                            1, &err),
                         KME_VAULT_EINVAL);
        assert_non_null(err);
        free(err);
        err = NULL;
        free(big);
    }
    char longid[KME_VAULT_MAX_ID_LEN + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    struct kme_vault_key_in in = {longid, key, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER,
                                        &in, 1, NULL),
                     KME_VAULT_EINVAL);
    in.key_id = "ok";
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_LOCAL, SRC, MASTER, &in,
                                        1, NULL),
                     KME_VAULT_EINVAL);
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER,
                                        &in, 0, NULL),
                     KME_VAULT_EINVAL);
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, SRC, MASTER,
                                        NULL, 1, NULL),
                     KME_VAULT_EINVAL);
    struct kme_vault_keys *k = NULL;
    const char *ids[] = {"ok", "bad id"};
    assert_int_equal(kme_vault_keys_get(v, SRC, MASTER, ids, 2, &k, NULL),
                     KME_VAULT_EINVAL);
    assert_null(k);
    assert_int_equal(kme_vault_local_new(v, "o", 1, 0, &k, NULL),
                     KME_VAULT_EINVAL);
    assert_int_equal(kme_vault_local_new(v, "o o", 1, 32, &k, NULL),
                     KME_VAULT_EINVAL);
    assert_int_equal(kme_vault_local_new(v, "o", 0, 32, &k, NULL),
                     KME_VAULT_EINVAL);
    assert_int_equal(kme_vault_local_new(v, "o", 10000, KME_VAULT_MAX_KEY_LEN,
                                         &k, NULL),
                     KME_VAULT_ETOOBIG);
    assert_null(k);
    kme_vault_close(&v);
    kme_vault_close(&v); /* NULL is fine */
}

static void test_errors(void **state)
{
    (void)state;
    for (int e = KME_VAULT_ECRYPTO; e <= KME_VAULT_ENOMEM; e++) {
        assert_string_not_equal(kme_vault_strerror(e), "unknown error");
        assert_non_null(strstr(kme_vault_errname(e), "KME_VAULT_E"));
    }
    assert_string_equal(kme_vault_strerror(0), "success");
    assert_string_equal(kme_vault_strerror(-1), "unknown error");
    assert_string_equal(kme_vault_errname(KME_VAULT_EAUTH), "KME_VAULT_EAUTH");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_identity, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_and_conflict, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_local_keys, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_key_sizes, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_large_batch, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_put_kme, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, vt_teardown),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
