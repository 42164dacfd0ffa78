/* Files of the vault: modes whatever the umask (folders 0700, database,
 * -wal, -shm and key 0600), refusal of files others can access, the master
 * key's forms (raw, hex), first-run creation and its race between
 * processes, a lost key, a wrong key, files that are not vaults. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>

#include "vault_test.h"

static int setup(void **state)
{
    return vt_setup_named(state, "files");
}

static int try_open(struct vt *t, kme_vault **v, char **err)
{
    *err = NULL;
    return kme_vault_open(&t->cfg, v, err);
}

static void write_file(const char *path, const void *data, size_t len,
                       mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void sibling(char *out, size_t n, const char *path, const char *sfx)
{
    snprintf(out, n, "%s%s", path, sfx);
}

static void test_first_run_modes(void **state)
{
    struct vt *t = *state;
    /* Nested missing folders, a permissive umask: modes still private. */
    snprintf(t->db, sizeof(t->db), "%s/a/b/vault.sqlite", t->dir);
    snprintf(t->key, sizeof(t->key), "%s/k1/k2/vault.key", t->dir);
    mode_t old = umask(0);
    kme_vault *v = NULL;
    char *err = NULL;
    int ret = try_open(t, &v, &err);
    if (ret != 0)
        fail_msg("open: %s", err);
    /* Write so that -wal and -shm exist. */
    uint8_t key[32] = {1};
    struct kme_vault_key_in in = {"id", key, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_RECEIVED, "K", "S", &in,
                                        1, NULL),
                     0);
    char p[700];
    assert_int_equal(vt_mode(t->db), 0600);
    sibling(p, sizeof(p), t->db, "-wal");
    assert_int_equal(vt_mode(p), 0600);
    sibling(p, sizeof(p), t->db, "-shm");
    assert_int_equal(vt_mode(p), 0600);
    assert_int_equal(vt_mode(t->key), 0600);
    snprintf(p, sizeof(p), "%s/a", t->dir);
    assert_int_equal(vt_mode(p), 0700);
    snprintf(p, sizeof(p), "%s/a/b", t->dir);
    assert_int_equal(vt_mode(p), 0700);
    snprintf(p, sizeof(p), "%s/k1/k2", t->dir);
    assert_int_equal(vt_mode(p), 0700);
    umask(old);
    kme_vault_close(&v);

    /* The key file: 64 hex digits and a newline; no temporary left. */
    char buf[100];
    int fd = open(t->key, O_RDONLY);
    assert_int_equal(read(fd, buf, sizeof(buf)), 65);
    close(fd);
    assert_int_equal(buf[64], '\n');
    for (int i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", buf[i]));
    snprintf(p, sizeof(p), "%s/k1/k2", t->dir);
    assert_int_equal(vt_entries(p), 1);

    /* Reopen with the same key: the key row is readable. */
    assert_int_equal(try_open(t, &v, &err), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, "K", "S", "id", &b, &len, NULL), 0);
    assert_memory_equal(b, key, 32);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);
}

static void test_operator_key_forms(void **state)
{
    struct vt *t = *state;
    snprintf(t->key, sizeof(t->key), "%s/op.key", t->dir);
    t->cfg.create_key = false;
    kme_vault *v = NULL;
    char *err = NULL;
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_ENOKEY);
    assert_non_null(strstr(err, "op.key"));
    free(err);

    uint8_t raw[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(0xa0 + i);
    write_file(t->key, raw, 32, 0600);
    assert_int_equal(try_open(t, &v, &err), 0);
    uint8_t key[32] = {7};
    struct kme_vault_key_in in = {"id", key, 32};
    assert_int_equal(kme_vault_keys_put(v, KME_VAULT_SENT, "K", "S", &in, 1,
                                        NULL),
                     0);
    kme_vault_close(&v);

    /* The same key written as hex (upper case, CRLF) opens the vault. */
    char hex[70];
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02X", raw[i]);
    hex[64] = '\r';
    hex[65] = '\n';
    write_file(t->key, hex, 66, 0600);
    assert_int_equal(try_open(t, &v, &err), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(kme_vault_key_get(v, "K", "S", "id", &b, &len, NULL), 0);
    assert_memory_equal(b, key, 32);
    kme_vault_bytes_free(&b, len);
    kme_vault_close(&v);

    /* Malformed keys. */
    const struct {
        const char *data;
        size_t len;
    } bad[] = {
        {"0123", 4},
        {hex, 31},
        {hex, 63},
        {"zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         64},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(t->key, bad[i].data, bad[i].len, 0600);
        assert_int_equal(try_open(t, &v, &err), KME_VAULT_EINVAL);
        free(err);
    }

    /* Another valid key is the wrong key for this vault. */
    memset(raw, 0x11, sizeof(raw));
    write_file(t->key, raw, 32, 0600);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EWRONGKEY);
    free(err);
    assert_null(v);

    /* Readable by group: refused, with the fix in the message. */
    write_file(t->key, raw, 32, 0640);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EPERM);
    assert_non_null(strstr(err, "chmod 600"));
    free(err);
}

/* A key file lost beside an existing vault is never silently replaced. */
static void test_lost_key(void **state)
{
    struct vt *t = *state;
    kme_vault *v = NULL;
    char *err = NULL;
    assert_int_equal(try_open(t, &v, &err), 0);
    kme_vault_close(&v);
    assert_int_equal(unlink(t->key), 0);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_ENOKEY);
    assert_non_null(strstr(err, "restore"));
    free(err);
    assert_int_equal(access(t->key, F_OK), -1);
}

static void test_refuse_shared_files(void **state)
{
    struct vt *t = *state;
    kme_vault *v = NULL;
    char *err = NULL;
    assert_int_equal(try_open(t, &v, &err), 0);
    kme_vault_close(&v);

    assert_int_equal(chmod(t->db, 0644), 0);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EPERM);
    assert_non_null(strstr(err, "chmod 600"));
    free(err);
    assert_int_equal(chmod(t->db, 0600), 0);

    /* A -wal others can read (a vault still open elsewhere). */
    kme_vault *first = NULL;
    assert_int_equal(try_open(t, &first, &err), 0);
    char wal[700];
    sibling(wal, sizeof(wal), t->db, "-wal");
    assert_int_equal(chmod(wal, 0604), 0);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EPERM);
    assert_non_null(strstr(err, "-wal"));
    free(err);
    assert_int_equal(chmod(wal, 0600), 0);
    kme_vault_close(&first);

    /* A folder others may write. */
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/state", t->dir);
    assert_int_equal(chmod(dir, 0770), 0);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EPERM);
    assert_non_null(strstr(err, "chmod 700"));
    free(err);
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(try_open(t, &v, &err), 0);
    kme_vault_close(&v);
}

static void test_not_a_vault(void **state)
{
    struct vt *t = *state;
    kme_vault *v = NULL;
    char *err = NULL;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/state", t->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(dir, sizeof(dir), "%s/secret", t->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    uint8_t raw[32] = {9};
    write_file(t->key, raw, 32, 0600);

    /* Some other application's SQLite database. */
    write_file(t->db, "", 0, 0600);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EVERSION);
    assert_non_null(strstr(err, "not a qumail vault"));
    free(err);

    /* Not SQLite at all. */
    write_file(t->db, "this is not a database, just text long enough\n", 47,
               0600);
    assert_int_equal(try_open(t, &v, &err), KME_VAULT_EDB);
    free(err);
    assert_null(v);

    /* A folder where the file should be. */
    assert_int_equal(unlink(t->db), 0);
    assert_int_equal(mkdir(t->db, 0700), 0);
    assert_int_equal(try_open(t, &v, &err) < 0, 1);
    free(err);

    /* Missing settings. */
    struct kme_vault_config c = t->cfg;
    c.key_file = NULL;
    assert_int_equal(kme_vault_open(&c, &v, NULL), KME_VAULT_EINVAL);
    c = t->cfg;
    c.path = "";
    assert_int_equal(kme_vault_open(&c, &v, NULL), KME_VAULT_EINVAL);
    c = t->cfg;
    c.readers = 65;
    assert_int_equal(kme_vault_open(&c, &v, NULL), KME_VAULT_EINVAL);
}

/* One racer of test_first_run_race: opens the new vault and stores a key
 * named after it. */
static int first_run_racer(struct vt *t, int i)
{
    kme_vault *v = NULL;
    char *err = NULL;
    int r = kme_vault_open(&t->cfg, &v, &err);
    if (r != 0) {
        fprintf(stderr, "racer %d: %s: %s\n", i, kme_vault_errname(r), err);
        return 3;
    }
    char id[16];
    uint8_t key[32];
    snprintf(id, sizeof(id), "racer-%d", i);
    vt_key_bytes(id, key);
    struct kme_vault_key_in in = {id, key, 32};
    int ret = kme_vault_keys_put(v, KME_VAULT_RECEIVED, "K", "S", &in, 1, NULL);
    kme_vault_close(&v);
    return ret == 0 ? 0 : 4;
}

/* Processes started at the same moment on a new vault: one key file is
 * created, all of them use it, every key each one stored is readable. */
static void test_first_run_race(void **state)
{
    struct vt *t = *state;
    enum { N = 6 };
    vt_race(t, N, first_run_racer);
    kme_vault *v = NULL;
    char *err = NULL;
    assert_int_equal(try_open(t, &v, &err), 0);
    for (int i = 0; i < N; i++) {
        char id[16];
        uint8_t want[32], *b = NULL;
        size_t len = 0;
        snprintf(id, sizeof(id), "racer-%d", i);
        vt_key_bytes(id, want);
        assert_int_equal(kme_vault_key_get(v, "K", "S", id, &b, &len, NULL), 0);
        assert_memory_equal(b, want, 32);
        kme_vault_bytes_free(&b, len);
    }
    uint64_t rows = 0;
    assert_int_equal(kme_vault_verify(v, &rows, NULL), 0);
    assert_int_equal(rows, N);
    kme_vault_close(&v);
    /* One key file, no temporaries. */
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/secret", t->dir);
    assert_int_equal(vt_entries(dir), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_run_modes, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_operator_key_forms, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_lost_key, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_refuse_shared_files, setup,
                                        vt_teardown),
        cmocka_unit_test_setup_teardown(test_not_a_vault, setup, vt_teardown),
        cmocka_unit_test_setup_teardown(test_first_run_race, setup, vt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
