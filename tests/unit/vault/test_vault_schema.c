/* Layout versions and migrations: a version 1 vault with keys in it opens
 * with this code (version 2), its keys intact and the step recorded; a
 * newer layout is refused; a step that fails leaves the old version and
 * its rows; processes opening an old vault at once migrate it once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>

#include "vault_internal.h"
#include "vault_test.h"

static const uint8_t MASTER_KEY[32] = {0x42, 0x13, 0x37};

static int setup(void **state)
{
    if (vt_setup_named(state, "schema") != 0)
        return -1;
    struct vt *t = *state;
    /* An operator key, so that a database can be built before the vault
     * is first opened. */
    snprintf(t->key, sizeof(t->key), "%s/vault.key", t->dir);
    int fd = open(t->key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_int_equal(write(fd, MASTER_KEY, 32), 32);
    close(fd);
    t->cfg.create_key = false;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/state", t->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    return 0;
}

static sqlite3 *raw_open(struct vt *t)
{
    /* 0600 before SQLite creates it, as the vault does. */
    int fd = open(t->db, O_RDWR | O_CREAT, 0600);
    close(fd);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    return db;
}

static int query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* A version 1 vault as the version 1 code wrote it: layout 1, a key row
 * sealed under the key-row sub-key, the key check. */
static void build_v1(struct vt *t)
{
    sqlite3 *db = raw_open(t);
    char *err = NULL;
    if (kme_vault_migrate(db, 1, &err) != 0)
        fail_msg("migrate: %s", err);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_schema WHERE "
                                   "name = 'messages'"),
                     0);

    uint8_t rows[32], check[32], key[32], sealed[32 + KME_VAULT_SEAL_OVERHEAD];
    assert_int_equal(kme_vault_derive(MASTER_KEY, "qumail vault v1 key rows",
                                      rows),
                     0);
    assert_int_equal(kme_vault_derive(MASTER_KEY, "qumail vault v1 key check",
                                      check),
                     0);
    vt_key_bytes("old-key", key);
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *enc = kme_vault_cipher(aes, rows, true);
    uint8_t aad[KME_VAULT_KEY_AAD_MAX];
    size_t aad_len = kme_vault_key_aad(aad, KME_VAULT_KIND_QKD,
                                       KME_VAULT_RECEIVED, "K", "S",
                                       "old-key");
    assert_int_equal(kme_vault_seal(enc, aad, aad_len, key, 32, sealed), 0);
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_free(aes);

    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO keys VALUES(1, 'K', 'S', "
                                        "'old-key', 1, 0, ?1)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(q, 1, sealed, sizeof(sealed), SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO info VALUES('key_check', "
                                        "?1)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(q, 1, check, sizeof(check), SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void assert_old_key(kme_vault *v)
{
    uint8_t want[32], *b = NULL;
    size_t len = 0;
    vt_key_bytes("old-key", want);
    assert_int_equal(kme_vault_key_get(v, "K", "S", "old-key", &b, &len, NULL),
                     0);
    assert_int_equal(len, 32);
    assert_memory_equal(b, want, 32);
    kme_vault_bytes_free(&b, len);
}

static void test_upgrade_v1(void **state)
{
    struct vt *t = *state;
    build_v1(t);
    kme_vault *v = NULL;
    char *err = NULL;
    if (kme_vault_open(&t->cfg, &v, &err) != 0)
        fail_msg("open: %s", err);
    assert_old_key(v);
    /* What version 2 added works. */
    assert_int_equal(kme_vault_meta_put(v, "m", "x", 1, NULL), 0);
    struct kme_vault_stats st;
    assert_int_equal(kme_vault_stats(v, &st, NULL), 0);
    assert_int_equal(st.schema_version, KME_VAULT_SCHEMA_VERSION);
    assert_int_equal(st.keys_received, 1);
    kme_vault_close(&v);

    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM migrations"), 2);
    assert_int_equal(query_int(db, "SELECT max(version) FROM migrations"), 2);
    sqlite3_close(db);

    /* Opening again applies nothing more. */
    assert_int_equal(kme_vault_open(&t->cfg, &v, NULL), 0);
    assert_old_key(v);
    kme_vault_close(&v);
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    assert_int_equal(query_int(db, "SELECT count(*) FROM migrations"), 2);
    sqlite3_close(db);
}

static void test_newer_refused(void **state)
{
    struct vt *t = *state;
    kme_vault *v = NULL;
    assert_int_equal(kme_vault_open(&t->cfg, &v, NULL), 0);
    kme_vault_close(&v);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 3", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    char *err = NULL;
    assert_int_equal(kme_vault_open(&t->cfg, &v, &err), KME_VAULT_EVERSION);
    assert_non_null(strstr(err, "newer"));
    free(err);
    assert_null(v);
    assert_int_equal(kme_vault_migrate(NULL, 0, NULL), KME_VAULT_EINVAL);
}

/* Step 2 meets a table in its way: the open fails, version 1 and its key
 * stay, and once the obstacle is gone the migration succeeds. */
static void test_failed_step_rolls_back(void **state)
{
    struct vt *t = *state;
    build_v1(t);
    sqlite3 *db = raw_open(t);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE messages(x)", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    kme_vault *v = NULL;
    char *err = NULL;
    assert_int_equal(kme_vault_open(&t->cfg, &v, &err), KME_VAULT_EDB);
    assert_non_null(strstr(err, "migration"));
    free(err);

    db = raw_open(t);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM migrations"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM keys"), 1);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE messages", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(kme_vault_open(&t->cfg, &v, NULL), 0);
    assert_old_key(v);
    kme_vault_close(&v);
}

/* One opener of test_concurrent_migration. */
static int migration_opener(struct vt *t, int i)
{
    kme_vault *v = NULL;
    char *err = NULL;
    int r = kme_vault_open(&t->cfg, &v, &err);
    if (r != 0) {
        fprintf(stderr, "opener %d: %s\n", i, err);
        return 3;
    }
    kme_vault_close(&v);
    return 0;
}

static void test_concurrent_migration(void **state)
{
    struct vt *t = *state;
    build_v1(t);
    vt_race(t, 4, migration_opener);
    sqlite3 *db = raw_open(t);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM migrations"), 2);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upgrade_v1, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_newer_refused, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_failed_step_rolls_back, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_migration, setup,
                                        vt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
