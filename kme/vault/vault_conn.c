/* SQLite connections of the vault: one writer (writes are serialised by
 * write_lock, so threads of this process never meet SQLITE_BUSY among
 * themselves), and a pool of readers (WAL: a reader sees the last commit
 * and never waits for the writer's fsync). Each connection is used by one
 * thread at a time (SQLITE_OPEN_NOMUTEX) and keeps its prepared
 * statements. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vault_internal.h"

static const char *const stmt_sql[KV_STMT_COUNT] = {
    [KV_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [KV_BEGIN_READ] = "BEGIN",
    [KV_COMMIT] = "COMMIT",
    [KV_ROLLBACK] = "ROLLBACK",
    /* An existing identity is not replaced: the caller compares bytes. */
    [KV_KEY_INSERT] = "INSERT INTO keys(kind, source, master, key_id, origin, "
                      "created, sealed) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                      "ON CONFLICT DO NOTHING",
    [KV_KEY_GET] = "SELECT origin, sealed FROM keys WHERE kind = ?1 AND "
                   "source = ?2 AND master = ?3 AND key_id = ?4",
    [KV_META_PUT] = "INSERT INTO messages(id, created, updated, sealed) "
                    "VALUES(?1, ?2, ?2, ?3) ON CONFLICT(id) DO UPDATE SET "
                    "updated = excluded.updated, sealed = excluded.sealed",
    [KV_META_GET] = "SELECT sealed FROM messages WHERE id = ?1",
    [KV_META_DELETE] = "DELETE FROM messages WHERE id = ?1",
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs sql, retrying for up to busy_ms while another process holds a
 * lock. SQLite skips its busy handler where waiting could deadlock (a
 * journal mode change, WAL recovery by another opener at the same
 * moment), so opening needs this loop of its own. */
static int exec_retry(sqlite3 *db, const char *sql,
                      int (*cb)(void *, int, char **, char **), void *arg,
                      unsigned busy_ms)
{
    uint64_t deadline = now_ms() + busy_ms;
    for (;;) {
        int rc = sqlite3_exec(db, sql, cb, arg, NULL);
        if (((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) ||
            now_ms() >= deadline)
            return rc;
        struct timespec pause = {0, 2000000L}; /* 2 ms */
        nanosleep(&pause, NULL);
    }
}

static int check_wal(void *arg, int ncol, char **val, char **names)
{
    (void)names;
    *(bool *)arg = ncol == 1 && val[0] != NULL &&
                   sqlite3_stricmp(val[0], "wal") == 0;
    return 0;
}

int kme_vault_conn_db(struct kme_vault_conn *c, const char *path, bool reader,
                      enum kme_vault_sync sync, unsigned busy_ms,
                      char **error_r)
{
    int rc = sqlite3_open_v2(path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK)
        return kme_vault_fail_db(c->db, rc, error_r, path);
    busy_ms = busy_ms != 0 ? busy_ms : 5000;
    rc = sqlite3_busy_timeout(c->db, (int)busy_ms);
    /* Defensive: no writable schema, no double-quoted string literals. */
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(c->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    char sql[256];
    /* secure_delete zeroes freed content (metadata blobs deleted or
     * replaced), encrypted as it is. */
    snprintf(sql, sizeof(sql),
             "PRAGMA synchronous=%s; PRAGMA secure_delete=ON; "
             "PRAGMA cache_size=%d; %s",
             sync == KME_VAULT_SYNC_NORMAL ? "NORMAL" : "FULL",
             reader ? -2048 : -8192, /* KiB: writer 8 MiB, readers 2 MiB */
             /* A batch of 100,000 keys grows the WAL to ~20 MB: give the
              * space back after the checkpoint. */
             reader ? "PRAGMA query_only=ON;"
                    : "PRAGMA journal_size_limit=16777216;");
    if (rc == SQLITE_OK)
        rc = exec_retry(c->db, sql, NULL, NULL, busy_ms);
    /* WAL is persistent in the file: the writer sets it (first open) and
     * checks that it took. */
    bool wal = false;
    if (rc == SQLITE_OK && !reader) {
        rc = exec_retry(c->db, "PRAGMA journal_mode=WAL", check_wal, &wal,
                        busy_ms);
        if (rc == SQLITE_OK && !wal)
            return kme_vault_fail(error_r, KME_VAULT_EDB,
                                  "%s: cannot use WAL mode", path);
    }
    if (rc != SQLITE_OK)
        return kme_vault_fail_db(c->db, rc, error_r, path);
    return 0;
}

int kme_vault_conn_prepare(struct kme_vault_conn *c, char **error_r)
{
    for (int i = 0; i < KV_STMT_COUNT; i++) {
        int rc = sqlite3_prepare_v3(c->db, stmt_sql[i], -1,
                                    SQLITE_PREPARE_PERSISTENT, &c->st[i],
                                    NULL);
        if (rc != SQLITE_OK)
            return kme_vault_fail_db(c->db, rc, error_r, "prepare");
    }
    return 0;
}

int kme_vault_conn_open(struct kme_vault_conn *c, const char *path,
                        bool reader, enum kme_vault_sync sync,
                        unsigned busy_ms, char **error_r)
{
    int ret = kme_vault_conn_db(c, path, reader, sync, busy_ms, error_r);
    return ret != 0 ? ret : kme_vault_conn_prepare(c, error_r);
}

void kme_vault_conn_close(struct kme_vault_conn *c)
{
    for (int i = 0; i < KV_STMT_COUNT; i++) {
        sqlite3_finalize(c->st[i]);
        c->st[i] = NULL;
    }
    sqlite3_close(c->db);
    c->db = NULL;
}

struct kme_vault_conn *kme_vault_reader_get(kme_vault *v)
{
    if (v->n_readers == 0)
        return kme_vault_writer_get(v);
    pthread_mutex_lock(&v->pool_lock);
    while (v->free_readers == NULL)
        pthread_cond_wait(&v->pool_cond, &v->pool_lock);
    struct kme_vault_conn *c = v->free_readers;
    v->free_readers = c->next_free;
    pthread_mutex_unlock(&v->pool_lock);
    return c;
}

void kme_vault_reader_put(kme_vault *v, struct kme_vault_conn *c)
{
    if (c == &v->writer) {
        kme_vault_writer_put(v, c);
        return;
    }
    pthread_mutex_lock(&v->pool_lock);
    c->next_free = v->free_readers;
    v->free_readers = c;
    pthread_cond_signal(&v->pool_cond);
    pthread_mutex_unlock(&v->pool_lock);
}

struct kme_vault_conn *kme_vault_writer_get(kme_vault *v)
{
    pthread_mutex_lock(&v->write_lock);
    return &v->writer;
}

void kme_vault_writer_put(kme_vault *v, struct kme_vault_conn *c)
{
    (void)c;
    pthread_mutex_unlock(&v->write_lock);
}

int kme_vault_exec_stmt(struct kme_vault_conn *c, enum kme_vault_stmt s,
                        char **error_r)
{
    int rc = sqlite3_step(c->st[s]);
    sqlite3_reset(c->st[s]);
    if (rc != SQLITE_DONE)
        return kme_vault_fail_db(c->db, rc, error_r, stmt_sql[s]);
    return 0;
}

void kme_vault_rollback(struct kme_vault_conn *c)
{
    if (!sqlite3_get_autocommit(c->db)) {
        sqlite3_step(c->st[KV_ROLLBACK]);
        sqlite3_reset(c->st[KV_ROLLBACK]);
    }
}
