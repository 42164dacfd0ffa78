/* Opening and closing the key vault: files and permissions, the master
 * key, the layout, the key check, the connections. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vault_internal.h"

/* HKDF labels: one sub-key per purpose, so that a key row can never be
 * presented as a metadata row or as the key check. */
static const char label_rows[] = "qumail vault v1 key rows";
static const char label_meta[] = "qumail vault v1 metadata rows";
static const char label_check[] = "qumail vault v1 key check";

#define DEFAULT_MAX_META (1u << 20)
#define DEFAULT_READERS 4

/* The first opener records a value derived from the master key; later
 * opens compare (INSERT OR IGNORE is atomic, so two first openers agree). */
static int key_check(struct kme_vault_conn *c,
                     const uint8_t master[KME_VAULT_MASTER_LEN],
                     char **error_r)
{
    uint8_t check[KME_VAULT_SUBKEY_LEN];
    if (kme_vault_derive(master, label_check, check) != 0)
        return kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "HKDF failed");
    sqlite3_stmt *ins = NULL, *sel = NULL;
    int ret = 0;
    int rc = sqlite3_prepare_v2(c->db,
                                "INSERT OR IGNORE INTO info(name, value) "
                                "VALUES('key_check', ?1), ('created', "
                                "CAST(strftime('%s', 'now') AS INTEGER))",
                                -1, &ins, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob(ins, 1, check, sizeof(check), SQLITE_STATIC);
        rc = sqlite3_step(ins);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db,
                                "SELECT value FROM info WHERE name = "
                                "'key_check'",
                                -1, &sel, NULL);
    if (rc == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW) {
        const void *stored = sqlite3_column_blob(sel, 0);
        int len = sqlite3_column_bytes(sel, 0);
        if (stored == NULL || len != (int)sizeof(check) ||
            CRYPTO_memcmp(stored, check, sizeof(check)) != 0)
            ret = kme_vault_fail(error_r, KME_VAULT_EWRONGKEY,
                                 "the master key does not belong to this "
                                 "vault");
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(c->db);
    }
    if (rc != SQLITE_OK && ret == 0)
        ret = kme_vault_fail_db(c->db, rc, error_r, "key check");
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    OPENSSL_cleanse(check, sizeof(check));
    return ret;
}

static int open_files(kme_vault *v, const struct kme_vault_config *cfg,
                      uint8_t master[KME_VAULT_MASTER_LEN], char **error_r)
{
    char *dir = strdup(cfg->path);
    if (dir == NULL)
        return KME_VAULT_ENOMEM;
    char *slash = strrchr(dir, '/');
    int ret = 0;
    if (slash != NULL) {
        slash[slash == dir ? 1 : 0] = '\0';
        ret = kme_vault_mkdirs(dir, error_r);
    }
    free(dir);
    /* A key is created only for a vault that does not exist yet: a new
     * key beside stored rows would make them unreadable. */
    struct stat st;
    bool exists = stat(cfg->path, &st) == 0 && st.st_size > 0;
    if (ret == 0)
        ret = kme_vault_master_key(cfg->key_file, cfg->create_key, exists,
                                   master, error_r);
    if (ret == 0)
        ret = kme_vault_db_file(v->path, error_r);
    return ret;
}

static int open_db(kme_vault *v, const struct kme_vault_config *cfg,
                   const uint8_t master[KME_VAULT_MASTER_LEN], char **error_r)
{
    int ret = kme_vault_conn_db(&v->writer, v->path, false, cfg->sync,
                                cfg->busy_timeout_ms, error_r);
    if (ret == 0)
        ret = kme_vault_migrate(v->writer.db, KME_VAULT_SCHEMA_VERSION,
                                error_r);
    if (ret == 0)
        ret = key_check(&v->writer, master, error_r);
    if (ret == 0)
        ret = kme_vault_conn_prepare(&v->writer, error_r);
    /* The -wal file exists now: make its directory entry durable too. */
    if (ret == 0)
        ret = kme_vault_fsync_dir(v->path, error_r);
    unsigned readers = cfg->readers == 0 ? DEFAULT_READERS
                       : cfg->readers == KME_VAULT_READERS_NONE ? 0
                                                                : cfg->readers;
    if (ret == 0 && readers > 0) {
        v->readers = calloc(readers, sizeof(*v->readers));
        if (v->readers == NULL)
            return KME_VAULT_ENOMEM;
        for (unsigned i = 0; ret == 0 && i < readers; i++) {
            ret = kme_vault_conn_open(&v->readers[i], v->path, true,
                                      cfg->sync, cfg->busy_timeout_ms,
                                      error_r);
            v->n_readers = i + 1; /* closed by kme_vault_close either way */
            v->readers[i].next_free = v->free_readers;
            v->free_readers = &v->readers[i];
        }
    }
    return ret;
}

int kme_vault_open(const struct kme_vault_config *cfg, kme_vault **vault_r,
                   char **error_r)
{
    *vault_r = NULL;
    if (cfg == NULL || cfg->path == NULL || cfg->path[0] == '\0' ||
        cfg->key_file == NULL || cfg->key_file[0] == '\0')
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "vault path and key_file are required");
    if (cfg->max_meta_size > KME_VAULT_MAX_META_LIMIT ||
        (cfg->readers > 64 && cfg->readers != KME_VAULT_READERS_NONE))
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "max_meta_size above %u or readers above 64",
                              KME_VAULT_MAX_META_LIMIT);
    if (!sqlite3_threadsafe())
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "SQLite is built without thread support");
    kme_vault *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return KME_VAULT_ENOMEM;
    pthread_mutex_init(&v->write_lock, NULL);
    pthread_mutex_init(&v->pool_lock, NULL);
    pthread_cond_init(&v->pool_cond, NULL);
    v->max_meta = cfg->max_meta_size != 0 ? cfg->max_meta_size
                                          : DEFAULT_MAX_META;
    v->path = strdup(cfg->path);
    v->aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    uint8_t master[KME_VAULT_MASTER_LEN];
    int ret = 0;
    if (v->path == NULL)
        ret = KME_VAULT_ENOMEM;
    else if (v->aes == NULL)
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                             "AES-256-GCM unavailable");
    if (ret == 0)
        ret = open_files(v, cfg, master, error_r);
    if (ret == 0)
        ret = open_db(v, cfg, master, error_r);
    if (ret == 0 && (kme_vault_derive(master, label_rows, v->key_rows) != 0 ||
                     kme_vault_derive(master, label_meta, v->key_meta) != 0))
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "HKDF failed");
    OPENSSL_cleanse(master, sizeof(master));
    if (ret != 0) {
        kme_vault_close(&v);
        return ret;
    }
    *vault_r = v;
    return 0;
}

void kme_vault_close(kme_vault **vault)
{
    kme_vault *v = *vault;
    if (v == NULL)
        return;
    *vault = NULL;
    for (unsigned i = 0; i < v->n_readers; i++)
        kme_vault_conn_close(&v->readers[i]);
    free(v->readers);
    kme_vault_conn_close(&v->writer);
    OPENSSL_cleanse(v->key_rows, sizeof(v->key_rows));
    OPENSSL_cleanse(v->key_meta, sizeof(v->key_meta));
    EVP_CIPHER_free(v->aes);
    pthread_cond_destroy(&v->pool_cond);
    pthread_mutex_destroy(&v->pool_lock);
    pthread_mutex_destroy(&v->write_lock);
    free(v->path);
    free(v);
}
