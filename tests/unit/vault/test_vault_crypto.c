/* Encryption at rest: no key byte or metadata byte in the files, a fresh
 * nonce per row, and every change an attacker with write access to the
 * database could make is detected: a flipped bit, a row copied to another
 * identity (key ID, source, master, origin, kind), a key row presented as
 * metadata, a metadata row moved to another message. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>

#include "vault_internal.h"
#include "vault_test.h"

static int setup(void **state)
{
    return vt_setup_named(state, "crypto");
}

/* The whole file (an empty buffer when it cannot be read). */
static size_t read_all(const char *path, uint8_t **buf)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    size_t size = fd >= 0 && fstat(fd, &st) == 0 ? (size_t)st.st_size : 0;
    *buf = malloc(size + 1);
    ssize_t n = fd >= 0 && *buf != NULL ? read(fd, *buf, size) : 0;
    if (fd >= 0)
        close(fd);
    return n > 0 ? (size_t)n : 0;
}

static void put_one(kme_vault *v, const char *src, const char *master,
                    const char *id, const uint8_t *key)
{
    struct kme_vault_key_in in = {id, key, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, src, master,
                                        &in, 1, NULL),
                     0);
}

static int get_one(kme_vault *v, const char *src, const char *master,
                   const char *id)
{
    uint8_t *b = NULL;
    size_t len = 0;
    char *err = NULL;
    int ret = kme_vault_key_get(v, src, master, id, &b, &len, &err);
    if (ret == KME_VAULT_EAUTH)
        assert_non_null(strstr(err, id));
    free(err);
    kme_vault_bytes_free(&b, len);
    return ret;
}

static void test_nothing_in_clear(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32];
    memset(key, 0xc3, sizeof(key)); /* easy to spot */
    put_one(v, "K", "S", "id", key);
    static const char marker[] = "Subject: PLAINTEXT-MARKER-do-not-store";
    assert_int_equal(kme_vault_meta_put(v, "m", marker, sizeof(marker), NULL),
                     0);
    /* Look in the WAL while open, and in the database after close (the
     * checkpoint moved everything there). */
    char wal[700];
    snprintf(wal, sizeof(wal), "%s-wal", t->db);
    uint8_t *buf;
    size_t n = read_all(wal, &buf);
    assert_true(n > 0);
    assert_null(memmem(buf, n, key, 8));
    assert_null(memmem(buf, n, "PLAINTEXT-MARKER", 16));
    free(buf);
    kme_vault_close(&v);
    n = read_all(t->db, &buf);
    assert_true(n > 0);
    assert_null(memmem(buf, n, key, 8));
    assert_null(memmem(buf, n, "PLAINTEXT-MARKER", 16));
    /* The identity itself is in clear (it is the lookup key): the row is
     * really there. */
    assert_non_null(memmem(buf, n, "id", 2));
    free(buf);
}

static void test_fresh_nonces(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32] = {0};
    enum { N = 500 };
    struct kme_vault_key_in in[N];
    char ids[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "n%d", i);
        in[i] = (struct kme_vault_key_in){ids[i], key, 32};
    }
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, "K", "S", in, N,
                                        NULL),
                     0);
    kme_vault_close(&v);
    /* Same bytes everywhere, yet every nonce (and so every ciphertext)
     * differs. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(DISTINCT substr(sealed, "
                                        "2, 12)), count(DISTINCT sealed), "
                                        "count(*), min(length(sealed)) FROM "
                                        "keys",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), N);
    assert_int_equal(sqlite3_column_int(q, 1), N);
    assert_int_equal(sqlite3_column_int(q, 2), N);
    assert_int_equal(sqlite3_column_int(q, 3), 32 + KME_VAULT_SEAL_OVERHEAD);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_tampered_key_rows(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32];
    vt_key_bytes("k1", key);
    put_one(v, "K", "S", "k1", key);
    put_one(v, "K", "S", "k2", key);
    put_one(v, "K", "S", "k3", key);
    put_one(v, "K", "S", "k7", key);
    kme_vault_close(&v);

    /* A flipped bit in the ciphertext of k1. */
    vt_raw_sql(t, "UPDATE keys SET sealed = substr(sealed, 1, 20) || "
               "x'ff' || substr(sealed, 22) WHERE key_id = 'k1'");
    /* k2's sealed bytes copied over k3 (a row copied to another
     * identity). */
    vt_raw_sql(t, "UPDATE keys SET sealed = (SELECT sealed FROM keys WHERE "
               "key_id = 'k2') WHERE key_id = 'k3'");
    /* k2 duplicated under other masters, sources, kinds and origins. */
#define K2 " FROM keys WHERE key_id = 'k2' AND source = 'K' AND master = 'S';"
    vt_raw_sql(t, "INSERT INTO keys SELECT kind, source, 'S2', key_id, origin, "
               "created, sealed" K2
               "INSERT INTO keys SELECT kind, 'K2', master, key_id, origin, "
               "created, sealed" K2
               "INSERT INTO keys SELECT 2, 'local', master, key_id, 3, "
               "created, sealed" K2
               "INSERT INTO keys SELECT kind, source, master, 'k4', origin, "
               "created, sealed" K2
               "INSERT INTO keys SELECT kind, source, master, 'k5', origin, "
               "created, substr(sealed, 1, length(sealed) - 1)" K2
               "INSERT INTO keys SELECT kind, source, master, 'k6', origin, "
               "created, x'01'" K2);
#undef K2
    /* k7's own row, its origin changed (RECEIVED -> SENT). */
    vt_raw_sql(t, "UPDATE keys SET origin = 2 WHERE key_id = 'k7'");

    v = vt_open_ok(t);
    assert_int_equal(get_one(v, "K", "S", "k1"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S", "k2"), 0);
    assert_int_equal(get_one(v, "K", "S", "k3"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S2", "k2"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K2", "S", "k2"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "local", "S", "k2"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S", "k4"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S", "k5"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S", "k6"), KME_VAULT_EAUTH);
    assert_int_equal(get_one(v, "K", "S", "k7"), KME_VAULT_EAUTH);

    /* A batch with one bad row fails as a whole: no partial result. */
    const char *ids[] = {"k2", "k1"};
    struct kme_vault_keys *k = NULL;
    assert_int_equal(kme_vault_keys_get(v, "K", "S", ids, 2, &k, NULL),
                     KME_VAULT_EAUTH);
    assert_null(k);
    /* A put of the same identity does not paper over a bad row. */
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, "K", "S",
                                        &(struct kme_vault_key_in){"k1", key,
                                                                   32},
                                        1, NULL),
                     KME_VAULT_EAUTH);

    uint64_t rows = 0;
    char *err = NULL;
    assert_int_equal(kme_vault_verify(v, &rows, &err), KME_VAULT_EAUTH);
    assert_non_null(strstr(err, "fails authentication"));
    free(err);
    kme_vault_close(&v);
}

static void test_tampered_meta_rows(void **state)
{
    struct vt *t = *state;
    kme_vault *v = vt_open_ok(t);
    uint8_t key[32] = {1};
    put_one(v, "K", "S", "k1", key);
    assert_int_equal(kme_vault_meta_put(v, "m1", "one", 3, NULL), 0);
    assert_int_equal(kme_vault_meta_put(v, "m2", "two", 3, NULL), 0);
    uint64_t rows = 0;
    assert_int_equal(kme_vault_verify(v, &rows, NULL), 0);
    assert_int_equal(rows, 3);
    kme_vault_close(&v);

    /* m1's blob moved to m2; a key row presented as metadata m3. */
    vt_raw_sql(t, "UPDATE messages SET sealed = (SELECT sealed FROM messages "
               "WHERE id = 'm1') WHERE id = 'm2';"
               "INSERT INTO messages SELECT 'm3', 0, 0, sealed FROM keys;"
               "INSERT INTO messages VALUES('m4', 0, 0, x'0102')");
    v = vt_open_ok(t);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_meta_get(v, "m1", &b, &len, NULL), 0);
    assert_memory_equal(b, "one", 3);
    kme_vault_bytes_free(&b, len);
    assert_int_equal(kme_vault_meta_get(v, "m2", &b, &len, NULL),
                     KME_VAULT_EAUTH);
    assert_null(b);
    assert_int_equal(kme_vault_meta_get(v, "m3", &b, &len, NULL),
                     KME_VAULT_EAUTH);
    assert_int_equal(kme_vault_meta_get(v, "m4", &b, &len, NULL),
                     KME_VAULT_EAUTH);
    assert_int_equal(kme_vault_verify(v, &rows, NULL), KME_VAULT_EAUTH);
    kme_vault_close(&v);
}

/* The row primitives on their own. */
static void test_seal_unseal(void **state)
{
    (void)state;
    uint8_t master[32] = {1, 2, 3};
    uint8_t k1[32], k2[32], k1again[32];
    assert_int_equal(kme_vault_derive(master, "a", k1), 0);
    assert_int_equal(kme_vault_derive(master, "b", k2), 0);
    assert_int_equal(kme_vault_derive(master, "a", k1again), 0);
    assert_memory_equal(k1, k1again, 32);
    assert_memory_not_equal(k1, k2, 32);

    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *enc = kme_vault_cipher(aes, k1, true);
    EVP_CIPHER_CTX *dec = kme_vault_cipher(aes, k1, false);
    EVP_CIPHER_CTX *dec2 = kme_vault_cipher(aes, k2, false);
    uint8_t aad[KME_VAULT_KEY_AAD_MAX], aad2[KME_VAULT_KEY_AAD_MAX];
    size_t aad_len = kme_vault_key_aad(aad, 1, 1, "K", "S", "id");
    size_t aad2_len = kme_vault_key_aad(aad2, 1, 1, "K", "Si", "d");
    assert_int_not_equal(aad_len == aad2_len &&
                             memcmp(aad, aad2, aad_len) == 0,
                         1);
    const uint8_t pt[5] = "hello";
    uint8_t sealed[5 + KME_VAULT_SEAL_OVERHEAD], out[5];
    assert_int_equal(kme_vault_seal(enc, aad, aad_len, pt, 5, sealed), 0);
    assert_int_equal(sealed[0], KME_VAULT_ROW_FORMAT);
    assert_int_equal(kme_vault_unseal(dec, aad, aad_len, sealed,
                                      sizeof(sealed), out),
                     0);
    assert_memory_equal(out, pt, 5);
    /* Shifted field boundaries give another AAD: fails. */
    assert_int_equal(kme_vault_unseal(dec, aad2, aad2_len, sealed,
                                      sizeof(sealed), out),
                     KME_VAULT_EAUTH);
    assert_int_equal(kme_vault_unseal(dec2, aad, aad_len, sealed,
                                      sizeof(sealed), out),
                     KME_VAULT_EAUTH);
    sealed[0] = 2;
    assert_int_equal(kme_vault_unseal(dec, aad, aad_len, sealed,
                                      sizeof(sealed), out),
                     KME_VAULT_EAUTH);
    assert_int_equal(kme_vault_unseal(dec, aad, aad_len, sealed,
                                      KME_VAULT_SEAL_OVERHEAD - 1, out),
                     KME_VAULT_EAUTH);
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    EVP_CIPHER_CTX_free(dec2);
    EVP_CIPHER_free(aes);

    char u[37];
    assert_int_equal(kme_vault_uuid4(u), 0);
    assert_int_equal(strlen(u), 36);
    assert_true(kme_vault_id_ok(u, KME_VAULT_MAX_ID_LEN));
    assert_non_null(strchr("89ab", u[19]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nothing_in_clear, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_fresh_nonces, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_key_rows, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_tampered_meta_rows, setup,
                                        vt_teardown),
        cmocka_unit_test(test_seal_unseal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
