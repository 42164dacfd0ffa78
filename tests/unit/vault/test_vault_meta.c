/* Per-message metadata rows: put (replacing), get, delete, the size
 * limit, binary content, identity rules, persistence across reopen. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "vault_test.h"

static int setup(void **state)
{
    if (vt_setup_named(state, "meta") != 0)
        return -1;
    struct vt *t = *state;
    t->cfg.max_meta_size = 4096;
    return 0;
}

static void expect(kme_vault *v, const char *id, const void *data, size_t len)
{
    uint8_t *got = NULL;
    size_t got_len = 99;
    assert_int_equal(kme_vault_meta_get(v, id, &got, &got_len, NULL), 0);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    if (len > 0)
        assert_memory_equal(got, data, len);
    kme_vault_bytes_free(&got, got_len);
}

static void test_put_get_replace_delete(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    const char *id = "KME_B/sae-a/0b2c4ac6-6a0f-4a9e-8d4b-2f1d2b1e6c01";
    static const uint8_t blob[] = "size 1234\0BODYSTRUCTURE (\"text\" ...)\0\xff";
    assert_int_equal(kme_vault_meta_put(v, id, blob, sizeof(blob), NULL), 0);
    expect(v, id, blob, sizeof(blob));

    static const char second[] = "ENVELOPE (\"Mon, 1 Jan 2024\" ...)";
    assert_int_equal(kme_vault_meta_put(v, id, second, sizeof(second), NULL),
                     0);
    expect(v, id, second, sizeof(second));

    /* Empty blob: a row with no bytes, not "absent". */
    assert_int_equal(kme_vault_meta_put(v, "empty", NULL, 0, NULL), 0);
    expect(v, "empty", NULL, 0);

    struct kme_vault_stats st;
    assert_int_equal(kme_vault_stats(v, &st, NULL), 0);
    assert_int_equal(st.messages, 2);
    assert_true(st.db_bytes > 0);

    assert_int_equal(kme_vault_meta_delete(v, id, NULL), 0);
    uint8_t *got = NULL;
    size_t len = 0;
    char *err = NULL;
    assert_int_equal(kme_vault_meta_get(v, id, &got, &len, &err),
                     KME_VAULT_ENOTFOUND);
    assert_null(got);
    assert_non_null(err);
    free(err);
    assert_int_equal(kme_vault_meta_delete(v, id, NULL), KME_VAULT_ENOTFOUND);
    kme_vault_close(&v);

    v = vt_open_ok(t);
    expect(v, "empty", NULL, 0);
    kme_vault_close(&v);
}

static void test_limits(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t *buf = calloc(1, 4097);
    memset(buf, 'z', 4097);
    assert_int_equal(kme_vault_meta_put(v, "m", buf, 4096, NULL), 0);
    char *err = NULL;
    assert_int_equal(kme_vault_meta_put(v, "m", buf, 4097, &err),
                     KME_VAULT_ETOOBIG);
    assert_non_null(strstr(err, "4096"));
    free(err);
    expect(v, "m", buf, 4096); /* the failed put changed nothing */

    char longid[KME_VAULT_MAX_MSG_ID_LEN + 2];
    memset(longid, 'i', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(kme_vault_meta_put(v, longid, buf, 1, NULL),
                     KME_VAULT_EINVAL);
    longid[KME_VAULT_MAX_MSG_ID_LEN] = '\0';
    assert_int_equal(kme_vault_meta_put(v, longid, buf, 1, NULL), 0);
    expect(v, longid, buf, 1);

    const char *bad[] = {"", "a b", "x\n", "\x7f", NULL};
    uint8_t *got = NULL;
    size_t len = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kme_vault_meta_put(v, bad[i], buf, 1, NULL),
                         KME_VAULT_EINVAL);
        assert_int_equal(kme_vault_meta_get(v, bad[i], &got, &len, NULL),
                         KME_VAULT_EINVAL);
        assert_int_equal(kme_vault_meta_delete(v, bad[i], NULL),
                         KME_VAULT_EINVAL);
    }
    assert_int_equal(kme_vault_meta_put(v, "m", NULL, 3, NULL),
                     KME_VAULT_EINVAL);
    free(buf);
    kme_vault_close(&v);

    /* The ceiling of the setting. */
    t->cfg.max_meta_size = KME_VAULT_MAX_META_LIMIT + 1;
    assert_int_equal(kme_vault_open(&t->cfg, &v, NULL), KME_VAULT_EINVAL);
    assert_null(v);
}

/* The default limit is 1 MiB. */
static void test_default_limit(void **state)
{
    struct vt *t = *state;
    t->cfg.max_meta_size = 0;
    kme_vault *v = vt_open_ok(t);
    size_t n = 1u << 20;
    uint8_t *buf = malloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        buf[i] = (uint8_t)(i * 13);
    assert_int_equal(kme_vault_meta_put(v, "big", buf, n, NULL), 0);
    expect(v, "big", buf, n);
    assert_int_equal(kme_vault_meta_put(v, "big", buf, n + 1, NULL),
                     KME_VAULT_ETOOBIG);
    free(buf);
    kme_vault_close(&v);
}

/* A backup taken while the vault is open reads like the vault itself,
 * with the same key file. */
static void test_backup(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32] = {3, 1, 4};
    struct kme_vault_key_in in = {"k", key, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_SENT, "K", "S", &in, 1,
                                        NULL),
                     0);
    assert_int_equal(kme_vault_meta_put(v, "m", "meta", 4, NULL), 0);
    char copy[700];
    snprintf(copy, sizeof(copy), "%s/backup.sqlite", t->dir);
    char *err = NULL;
    if (kme_vault_backup(v, copy, &err) != 0)
        fail_msg("backup: %s", err);
    assert_int_equal(vt_mode(copy), 0600);
    assert_int_equal(kme_vault_backup(v, copy, &err), KME_VAULT_EIO);
    assert_non_null(strstr(err, "backup.sqlite"));
    free(err);
    assert_int_equal(kme_vault_meta_put(v, "after", "x", 1, NULL), 0);
    kme_vault_close(&v);

    t->cfg.path = copy;
    t->cfg.create_key = false;
    v = vt_open_ok(t);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, "K", "S", "k", &b, &len, NULL), 0);
    assert_memory_equal(b, key, 32);
    kme_vault_bytes_free(&b, len);
    expect(v, "m", "meta", 4);
    assert_int_equal(kme_vault_meta_get(v, "after", &b, &len, NULL),
                     KME_VAULT_ENOTFOUND);
    assert_int_equal(kme_vault_verify(v, NULL, NULL), 0);
    kme_vault_close(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_replace_delete, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_default_limit, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_backup, setup, vt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
