/* Operator views of the vault: counts (stats) and a full check (verify:
 * SQLite's integrity check, then every row decrypted and authenticated).
 * Both scan the whole database in one read transaction. Backup copies it
 * (VACUUM INTO). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vault_internal.h"

static uint64_t file_size(const char *path, const char *suffix)
{
    char *p = NULL;
    struct stat st;
    uint64_t size = 0;
    if (asprintf(&p, "%s%s", path, suffix) >= 0 && stat(p, &st) == 0)
        size = (uint64_t)st.st_size;
    free(p);
    return size;
}

static int stats_rows(struct kme_vault_conn *c, struct kme_vault_stats *st,
                      char **error_r)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        c->db,
        "SELECT origin, count(*), sum(length(sealed)) - count(*) * ?1 FROM "
        "keys GROUP BY origin",
        -1, &q, NULL);
    if (rc == SQLITE_OK)
        sqlite3_bind_int(q, 1, KME_VAULT_SEAL_OVERHEAD);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        uint64_t n = (uint64_t)sqlite3_column_int64(q, 1);
        st->key_bytes += (uint64_t)sqlite3_column_int64(q, 2);
        switch (sqlite3_column_int(q, 0)) {
        case KME_VAULT_RECEIVED: st->keys_received += n; break;
        case KME_VAULT_SENT: st->keys_sent += n; break;
        case KME_VAULT_LOCAL: st->keys_local += n; break;
        default: break;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc == SQLITE_DONE)
        rc = sqlite3_prepare_v2(c->db, "SELECT count(*) FROM messages", -1,
                                &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        st->messages = (uint64_t)sqlite3_column_int64(q, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        st->schema_version = sqlite3_column_int(q, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? 0 : kme_vault_fail_db(c->db, rc, error_r, "stats");
}

int kme_vault_stats(kme_vault *v, struct kme_vault_stats *st, char **error_r)
{
    memset(st, 0, sizeof(*st));
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    struct kme_vault_conn *c = kme_vault_reader_get(v);
    int ret = kme_vault_exec_stmt(c, KV_BEGIN_READ, error_r);
    if (ret == 0)
        ret = stats_rows(c, st, error_r);
    if (ret == 0)
        ret = kme_vault_exec_stmt(c, KV_COMMIT, error_r);
    if (ret != 0)
        kme_vault_rollback(c);
    kme_vault_reader_put(v, c);
    st->db_bytes = file_size(v->path, "");
    st->wal_bytes = file_size(v->path, "-wal");
    return ret;
}

static int integrity(struct kme_vault_conn *c, char **error_r)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db, "PRAGMA integrity_check(1)", -1, &q,
                                NULL);
    int ret = 0;
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(q, 0);
        if (r == NULL || strcmp(r, "ok") != 0)
            ret = kme_vault_fail(error_r, KME_VAULT_EDB,
                                 "integrity check: %s", r ? r : "no answer");
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK && ret == 0)
        ret = kme_vault_fail_db(c->db, rc, error_r, "integrity check");
    sqlite3_finalize(q);
    return ret;
}

/* Decrypts every row of the keys table (keys) or the messages table. */
static int verify_table(kme_vault *v, struct kme_vault_conn *c, bool keys,
                        uint64_t *rows, char **error_r)
{
    const char *sql = keys ? "SELECT sealed, kind, origin, source, master, "
                             "key_id FROM keys"
                           : "SELECT sealed, id FROM messages";
    EVP_CIPHER_CTX *dec = kme_vault_cipher(v->aes, keys ? v->key_rows
                                                        : v->key_meta,
                                           false);
    if (dec == NULL)
        return kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "cipher setup");
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &q, NULL);
    int ret = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    while (ret == 0 && rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        const uint8_t *sealed = sqlite3_column_blob(q, 0);
        size_t slen = (size_t)sqlite3_column_bytes(q, 0);
        uint8_t aad[KME_VAULT_META_AAD_MAX > KME_VAULT_KEY_AAD_MAX
                        ? KME_VAULT_META_AAD_MAX
                        : KME_VAULT_KEY_AAD_MAX];
        size_t aad_len;
        const char *what;
        if (keys) {
            what = (const char *)sqlite3_column_text(q, 5);
            const char *src = (const char *)sqlite3_column_text(q, 3);
            const char *mst = (const char *)sqlite3_column_text(q, 4);
            if (what == NULL || src == NULL || mst == NULL ||
                !kme_vault_id_ok(what, KME_VAULT_MAX_ID_LEN) ||
                !kme_vault_id_ok(src, KME_VAULT_MAX_ID_LEN) ||
                !kme_vault_id_ok(mst, KME_VAULT_MAX_ID_LEN)) {
                ret = kme_vault_fail(error_r, KME_VAULT_EAUTH,
                                     "key row with an invalid identity");
                break;
            }
            aad_len = kme_vault_key_aad(aad, sqlite3_column_int(q, 1),
                                        sqlite3_column_int(q, 2), src, mst,
                                        what);
        } else {
            what = (const char *)sqlite3_column_text(q, 1);
            if (what == NULL || !kme_vault_id_ok(what,
                                                 KME_VAULT_MAX_MSG_ID_LEN)) {
                ret = kme_vault_fail(error_r, KME_VAULT_EAUTH,
                                     "metadata row with an invalid identity");
                break;
            }
            aad_len = kme_vault_meta_aad(aad, what);
        }
        if (slen > cap) {
            free(buf); /* wiped after each row */
            cap = slen;
            if ((buf = malloc(cap)) == NULL) {
                ret = KME_VAULT_ENOMEM;
                break;
            }
        }
        if (kme_vault_unseal(dec, aad, aad_len, sealed, slen, buf) != 0)
            ret = kme_vault_fail(error_r, KME_VAULT_EAUTH,
                                 "%s %s fails authentication",
                                 keys ? "key" : "metadata of", what);
        else
            OPENSSL_cleanse(buf, slen - KME_VAULT_SEAL_OVERHEAD);
        (*rows)++;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = kme_vault_fail_db(c->db, rc, error_r, "verify");
    sqlite3_finalize(q);
    free(buf);
    EVP_CIPHER_CTX_free(dec);
    return ret;
}

int kme_vault_verify(kme_vault *v, uint64_t *rows_r, char **error_r)
{
    uint64_t rows = 0;
    if (rows_r != NULL)
        *rows_r = 0;
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    struct kme_vault_conn *c = kme_vault_reader_get(v);
    int ret = kme_vault_exec_stmt(c, KV_BEGIN_READ, error_r);
    if (ret == 0)
        ret = integrity(c, error_r);
    if (ret == 0)
        ret = verify_table(v, c, true, &rows, error_r);
    if (ret == 0)
        ret = verify_table(v, c, false, &rows, error_r);
    if (ret == 0)
        ret = kme_vault_exec_stmt(c, KV_COMMIT, error_r);
    if (ret != 0)
        kme_vault_rollback(c);
    kme_vault_reader_put(v, c);
    if (rows_r != NULL)
        *rows_r = rows;
    return ret;
}

int kme_vault_backup(kme_vault *v, const char *dest_path, char **error_r)
{
    if (v == NULL || dest_path == NULL || dest_path[0] == '\0')
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "no vault or backup path");
    /* An empty private file first: VACUUM INTO fills an empty file, and
     * the copy is never readable by others, not even for a moment. */
    int fd = open(dest_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return kme_vault_fail(error_r, KME_VAULT_EIO, "cannot create %s: %s",
                              dest_path, strerror(errno));
    int ret = 0;
    if (fchmod(fd, 0600) != 0)
        ret = kme_vault_fail(error_r, KME_VAULT_EIO, "chmod %s: %s",
                             dest_path, strerror(errno));
    close(fd);
    if (ret == 0) {
        struct kme_vault_conn *c = kme_vault_reader_get(v);
        sqlite3_stmt *q = NULL;
        /* query_only refuses VACUUM INTO, which writes only the copy. */
        int rc = sqlite3_exec(c->db, "PRAGMA query_only=OFF", NULL, NULL,
                              NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(c->db, "VACUUM INTO ?1", -1, &q, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(q, 1, dest_path, -1, SQLITE_STATIC);
            rc = sqlite3_step(q);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        if (rc != SQLITE_OK)
            ret = kme_vault_fail_db(c->db, rc, error_r, "backup");
        sqlite3_finalize(q);
        if (c != &v->writer &&
            sqlite3_exec(c->db, "PRAGMA query_only=ON", NULL, NULL, NULL) !=
                SQLITE_OK &&
            ret == 0)
            ret = kme_vault_fail_db(c->db, SQLITE_ERROR, error_r, "backup");
        kme_vault_reader_put(v, c);
    }
    /* VACUUM INTO does not sync its output. */
    fd = ret == 0 ? open(dest_path, O_RDONLY | O_CLOEXEC) : -1;
    if (ret == 0 && (fd < 0 || fsync(fd) != 0))
        ret = kme_vault_fail(error_r, KME_VAULT_EIO, "cannot sync %s: %s",
                             dest_path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (ret == 0)
        ret = kme_vault_fsync_dir(dest_path, error_r);
    if (ret != 0)
        unlink(dest_path);
    return ret;
}
