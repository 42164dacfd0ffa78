/* Durable state of one KME in SQLite: schema, load at start, and the
 * batch commit run on the KME's committer thread (commit.c; one
 * transaction per batch, so one fsync per batch however many requests it
 * carries: group commit).
 *
 * Tables: meta (stream counters), out_pool / in_pool (key stream chunks
 * [off, end)), outbox (reservations not yet acknowledged by the peer), held
 * (keys held for each slave SAE). Pragmas: WAL, synchronous FULL (or
 * NORMAL, which in WAL mode survives a process crash but may lose the last
 * commits on power loss), secure_delete (consumed key bytes are zeroed in
 * the file). The connection is used by one thread at a time: the loop
 * thread at open/load, then the committer thread. */
#include <libgen.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "log.h"
#include "server_internal.h"
#include "statefile.h"

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_OUT_INS,
    S_IN_INS,
    S_OUTBOX_INS,
    S_HELD_INS,
    S_HELD_DEL,
    S_META_SET,
    S_OUT_TRIM,
    S_OUT_CUT,
    S_IN_TRIM,
    S_IN_CUT,
    S_OUTBOX_TRIM,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_OUT_INS] = "INSERT INTO out_pool(off, end, data) VALUES(?1, ?2, ?3)",
    [S_IN_INS] = "INSERT INTO in_pool(off, end, data) VALUES(?1, ?2, ?3)",
    [S_OUTBOX_INS] = "INSERT INTO outbox(off, len, key_id, master, slaves) "
                     "VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_HELD_INS] = "INSERT OR REPLACE INTO held(off, slave, key_id, master, "
                   "key, expires) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [S_HELD_DEL] = "DELETE FROM held WHERE off = ?1 AND slave = ?2",
    [S_META_SET] = "INSERT INTO meta(name, value) VALUES(?1, ?2) "
                   "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
    /* "off < ?1" lets SQLite walk only the consumed rows (rowid range). */
    [S_OUT_TRIM] = "DELETE FROM out_pool WHERE off < ?1 AND end <= ?1",
    [S_OUT_CUT] = "UPDATE out_pool SET data = substr(data, ?1 - off + 1), "
                  "off = ?1 WHERE off < ?1 AND end > ?1",
    [S_IN_TRIM] = "DELETE FROM in_pool WHERE off < ?1 AND end <= ?1",
    [S_IN_CUT] = "UPDATE in_pool SET data = substr(data, ?1 - off + 1), "
                 "off = ?1 WHERE off < ?1 AND end > ?1",
    [S_OUTBOX_TRIM] = "DELETE FROM outbox WHERE off < ?1 AND off + len <= ?1",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, "
    "  value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS out_pool(off INTEGER PRIMARY KEY, "
    "  end INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS in_pool(off INTEGER PRIMARY KEY, "
    "  end INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS outbox(off INTEGER PRIMARY KEY, "
    "  len INTEGER NOT NULL, key_id TEXT NOT NULL, master TEXT NOT NULL, "
    "  slaves TEXT NOT NULL);"
    /* Keyed by stream offset, which grows: inserts append to the last
     * page and collections hit recent pages (no random UUID index; lookups
     * by key_ID are served from memory). */
    "CREATE TABLE IF NOT EXISTS held(off INTEGER NOT NULL, "
    "  slave TEXT NOT NULL, key_id TEXT NOT NULL, master TEXT NOT NULL, "
    "  key BLOB NOT NULL, expires INTEGER NOT NULL, "
    "  PRIMARY KEY(off, slave)) WITHOUT ROWID;";

/* Version 2 added the ETSI 004 tables (e4_store.c): a version 1 file is
 * upgraded in place (the new tables are created empty). */
#define SCHEMA_VERSION 2

struct kme_store {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    struct kme_e4_store *e4;  /* the 004 tables' statements */
    struct kme_meta last;   /* counters as last committed (or loaded) */
};

static int fail_db(sqlite3 *db, char **error_r, const char *what)
{
    if (error_r != NULL) {
        char *m = NULL;
        if (asprintf(&m, "%s: %s", what,
                     db != NULL ? sqlite3_errmsg(db) : "out of memory") < 0)
            m = NULL;
        *error_r = m;
    }
    return KME_SERVER_ESTORE;
}

/* The database holds raw key stream and held keys: it and its companions
 * are 0600 in a folder only we may write, whatever the umask. SQLite gives
 * the -wal and -shm files it creates the database file's mode; ones left
 * over from before are fixed too. */
static int make_private(const char *path, char **error_r)
{
    static const char *const companions[] = {"", "-wal", "-shm", "-journal"};
    char *dir = strdup(path), *warning = NULL, *error = NULL;
    int rc = dir != NULL ? statefile_dir(dirname(dir), &warning, &error) : -1;
    free(dir);
    for (size_t i = 0; rc == 0 && i < sizeof(companions) / sizeof(companions[0]); i++) {
        char *p = NULL;
        if (warning != NULL)
            qlog_warn("kme store: %s", warning);
        free(warning);
        warning = NULL;
        if (asprintf(&p, "%s%s", path, companions[i]) < 0)
            return -1;
        rc = statefile_private(p, i == 0, &warning, &error);
        free(p);
    }
    if (warning != NULL)
        qlog_warn("kme store: %s", warning);
    free(warning);
    if (rc < 0 && error_r != NULL) {
        if (asprintf(error_r, "database %s: %s", path, error ? error : "out of memory") < 0)
            *error_r = NULL;
    }
    free(error);
    return rc;
}

int kme_store_open(const char *path, bool sync_full, struct kme_store **st_r,
                   char **error_r)
{
    *st_r = NULL;
    if (make_private(path, error_r) < 0)
        return KME_SERVER_ESTORE;
    struct kme_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return KME_SERVER_ENOMEM;
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_NOMUTEX,
                             NULL);
    char *sql = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(st->db, 5000);
    if (rc == SQLITE_OK &&
        asprintf(&sql,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
                 "PRAGMA secure_delete=ON; PRAGMA cache_size=-16384; %s%s"
                 "PRAGMA user_version = %d;",
                 sync_full ? "FULL" : "NORMAL", schema, kme_e4_schema,
                 SCHEMA_VERSION) < 0)
        rc = SQLITE_NOMEM;
    /* An existing file of another layout is refused, not reinterpreted. */
    int version = 0;
    if (rc == SQLITE_OK) {
        sqlite3_stmt *q;
        rc = sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL);
        if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            version = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    if (rc == SQLITE_OK && version != 0 && version != 1 && version != SCHEMA_VERSION) {
        free(sql);
        if (error_r != NULL &&
            asprintf(error_r, "%s: database layout version %d, this KME "
                              "uses %d", path, version, SCHEMA_VERSION) < 0)
            *error_r = NULL;
        kme_store_close(&st);
        return KME_SERVER_ESTORE;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    free(sql);
    for (int i = 0; rc == SQLITE_OK && i < S_COUNT; i++)
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &st->st[i], NULL);
    if (rc == SQLITE_OK)
        rc = kme_e4_store_open(st->db, &st->e4);
    if (rc != SQLITE_OK) {
        int ret = fail_db(st->db, error_r, path);
        kme_store_close(&st);
        return ret;
    }
    *st_r = st;
    return 0;
}

void kme_store_close(struct kme_store **stp)
{
    struct kme_store *st = *stp;
    if (st == NULL)
        return;
    *stp = NULL;
    kme_e4_store_close(&st->e4);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->st[i]);
    sqlite3_close(st->db);
    free(st);
}

/* ---- load ---------------------------------------------------------------- */

static int load_pool(sqlite3 *db, const char *table, uint64_t head,
                     struct kme_stream *s, char **error_r)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT off, data FROM %s ORDER BY off", table);
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return fail_db(db, error_r, table);
    kme_stream_init(s, head);
    bool first = true;
    int rc, ret = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        uint64_t off = (uint64_t)sqlite3_column_int64(q, 0);
        const void *data = sqlite3_column_blob(q, 1);
        size_t len = (size_t)sqlite3_column_bytes(q, 1);
        if (first && off <= head)
            kme_stream_init(s, off);
        first = false;
        if (kme_stream_append(s, off, data, len) < 0) {
            ret = fail_db(NULL, error_r, "key stream chunks are not contiguous");
            break;
        }
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = fail_db(db, error_r, table);
    sqlite3_finalize(q);
    if (ret == 0 && s->head < head && kme_stream_take(s, head - s->head, NULL) < 0)
        ret = fail_db(NULL, error_r, "key stream shorter than its head");
    if (ret == 0 && s->head != head)
        ret = fail_db(NULL, error_r, "key stream does not start at its head");
    return ret;
}

int kme_store_load(struct kme_store *st, struct kme_meta *meta,
                   struct kme_stream *out, struct kme_stream *in,
                   struct kme_outbox *outbox, struct kme_held_table *held,
                   char **error_r)
{
    sqlite3 *db = st->db;
    memset(meta, 0, sizeof(*meta));
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT name, value FROM meta", -1, &q, NULL) !=
        SQLITE_OK)
        return fail_db(db, error_r, "meta");
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(q, 0);
        uint64_t v = (uint64_t)sqlite3_column_int64(q, 1);
        if (name == NULL)
            continue;
        if (strcmp(name, "out_head") == 0)
            meta->out_head = v;
        else if (strcmp(name, "out_acked") == 0)
            meta->out_acked = v;
        else if (strcmp(name, "out_applied") == 0)
            meta->out_applied = v;
        else if (strcmp(name, "in_head") == 0)
            meta->in_head = v;
    }
    sqlite3_finalize(q);
    st->last = *meta;
    int ret = load_pool(db, "out_pool", meta->out_head, out, error_r);
    if (ret == 0)
        ret = load_pool(db, "in_pool", meta->in_head, in, error_r);
    if (ret < 0)
        return ret;

    if (sqlite3_prepare_v2(db, "SELECT off, len, key_id, master, slaves FROM "
                               "outbox ORDER BY off", -1, &q, NULL) != SQLITE_OK)
        return fail_db(db, error_r, "outbox");
    while (ret == 0 && sqlite3_step(q) == SQLITE_ROW) {
        struct kme_reservation r = {0};
        r.off = (uint64_t)sqlite3_column_int64(q, 0);
        r.len = (uint32_t)sqlite3_column_int64(q, 1);
        snprintf(r.key_id, sizeof(r.key_id), "%s",
                 (const char *)sqlite3_column_text(q, 2));
        r.master = strdup((const char *)sqlite3_column_text(q, 3));
        r.slaves_json = strdup((const char *)sqlite3_column_text(q, 4));
        if (r.master == NULL || r.slaves_json == NULL ||
            kme_outbox_push(outbox, &r) < 0) {
            free(r.master);
            free(r.slaves_json);
            ret = KME_SERVER_ENOMEM;
        }
    }
    sqlite3_finalize(q);
    if (ret < 0)
        return ret;

    if (sqlite3_prepare_v2(db, "SELECT key_id, slave, master, key, expires, off "
                               "FROM held", -1, &q, NULL) != SQLITE_OK)
        return fail_db(db, error_r, "held");
    while (ret == 0 && sqlite3_step(q) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        const char *slave = (const char *)sqlite3_column_text(q, 1);
        const char *master = (const char *)sqlite3_column_text(q, 2);
        const uint8_t *key = sqlite3_column_blob(q, 3);
        size_t len = (size_t)sqlite3_column_bytes(q, 3);
        uint64_t exp = (uint64_t)sqlite3_column_int64(q, 4);
        uint64_t off = (uint64_t)sqlite3_column_int64(q, 5);
        if (id == NULL || slave == NULL || master == NULL || key == NULL)
            continue;
        struct kme_held *h = kme_held_find(held, id);
        if (h != NULL) {
            char **n = realloc(h->slaves, (h->slave_count + 1) * sizeof(char *));
            char *s = strdup(slave);
            if (n == NULL || s == NULL) {
                free(s);
                if (n != NULL)
                    h->slaves = n;
                ret = KME_SERVER_ENOMEM;
                break;
            }
            h->slaves = n;
            h->slaves[h->slave_count++] = s;
            continue;
        }
        h = kme_held_new(id, master, &slave, 1, key, len, exp);
        if (h != NULL)
            h->off = off;
        if (h == NULL || kme_held_insert(held, h) < 0)
            ret = KME_SERVER_ENOMEM;
    }
    sqlite3_finalize(q);
    return ret;
}

/* ---- commit --------------------------------------------------------------- */

static int run(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static int meta_set(struct kme_store *st, const char *name, uint64_t v)
{
    sqlite3_stmt *s = st->st[S_META_SET];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)v);
    return run(s);
}

static int head_trim(struct kme_store *st, enum stmt_id trim, enum stmt_id cut,
                     uint64_t head)
{
    sqlite3_bind_int64(st->st[trim], 1, (sqlite3_int64)head);
    if (run(st->st[trim]) < 0)
        return -1;
    sqlite3_bind_int64(st->st[cut], 1, (sqlite3_int64)head);
    return run(st->st[cut]);
}

static int apply_op(struct kme_store *st, const struct kme_op *op)
{
    sqlite3_stmt *s;
    switch (op->kind) {
    case KME_OP_OUT_MATERIAL:
    case KME_OP_IN_MATERIAL:
        s = st->st[op->kind == KME_OP_OUT_MATERIAL ? S_OUT_INS : S_IN_INS];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)op->off);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)op->off + (sqlite3_int64)op->len);
        sqlite3_bind_blob(s, 3, op->data, (int)op->len, SQLITE_STATIC);
        return run(s);
    case KME_OP_OUTBOX_ADD:
        s = st->st[S_OUTBOX_INS];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)op->off);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)op->len);
        sqlite3_bind_text(s, 3, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, op->master, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, op->slaves_json, -1, SQLITE_STATIC);
        return run(s);
    case KME_OP_HELD_ADD:
        s = st->st[S_HELD_INS];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)op->off);
        sqlite3_bind_text(s, 2, op->slave, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, op->master, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 5, op->data, (int)op->len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)op->expires_ms);
        return run(s);
    case KME_OP_HELD_DEL:
        s = st->st[S_HELD_DEL];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)op->off);
        sqlite3_bind_text(s, 2, op->slave, -1, SQLITE_STATIC);
        return run(s);
    default:
        return kme_e4_store_apply(st->e4, op);
    }
}

void kme_store_commit(struct kme_store *st, struct kme_batch *b)
{
    /* Only what changed is written: fewer statements and pages per batch. */
    const struct kme_meta *m = &b->meta, *l = &st->last;
    int ret = run(st->st[S_BEGIN]);
    for (size_t i = 0; ret == 0 && i < b->op_count; i++)
        ret = apply_op(st, &b->ops[i]);
    if (ret == 0 && m->out_head != l->out_head)
        ret = meta_set(st, "out_head", m->out_head);
    if (ret == 0 && m->out_acked != l->out_acked)
        ret = meta_set(st, "out_acked", m->out_acked);
    if (ret == 0 && m->out_applied != l->out_applied)
        ret = meta_set(st, "out_applied", m->out_applied);
    if (ret == 0 && m->in_head != l->in_head)
        ret = meta_set(st, "in_head", m->in_head);
    if (ret == 0 && m->out_head != l->out_head)
        ret = head_trim(st, S_OUT_TRIM, S_OUT_CUT, m->out_head);
    if (ret == 0 && m->in_head != l->in_head)
        ret = head_trim(st, S_IN_TRIM, S_IN_CUT, m->in_head);
    if (ret == 0 && m->out_applied != l->out_applied) {
        sqlite3_bind_int64(st->st[S_OUTBOX_TRIM], 1,
                           (sqlite3_int64)m->out_applied);
        ret = run(st->st[S_OUTBOX_TRIM]);
        if (ret == 0)
            ret = kme_e4_store_trim(st->e4, m->out_applied);
    }
    if (ret == 0)
        ret = run(st->st[S_COMMIT]);
    if (ret < 0) {
        fail_db(st->db, &b->error, "commit");
        run(st->st[S_ROLLBACK]);
        b->result = KME_SERVER_ESTORE;
    } else {
        st->last = *m;
    }
}

struct kme_e4_store *kme_store_e4(struct kme_store *st)
{
    return st->e4;
}

void kme_batch_free(struct kme_batch **bp)
{
    struct kme_batch *b = *bp;
    if (b == NULL)
        return;
    *bp = NULL;
    for (size_t i = 0; i < b->op_count; i++) {
        struct kme_op *op = &b->ops[i];
        if (op->data != NULL) {
            OPENSSL_cleanse(op->data, op->len);
            free(op->data);
        }
        free(op->master);
        free(op->slave);
        free(op->slaves_json);
    }
    free(b->ops);
    free(b->done);
    free(b->error);
    free(b);
}
