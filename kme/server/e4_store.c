/* Durable 004 state in the KME's SQLite file, written in the same batches
 * (transactions) as the 014 state (store.c calls in here):
 *
 *   e4_stream(ksid, state)     one row per stream, its state as JSON
 *                              (e4_stream_state_json)
 *   e4_chunk(ksid, idx, key, at, exp)
 *                              chunks known here at or above the stream's
 *                              floor; key NULL once used here
 *   e4_outbox(off, len, ksid, idx, at, exp)
 *                              owner: chunk reservations not yet applied by
 *                              the peer (the 014 outbox's 004 half)
 *
 * Statements run on the committer thread with the rest of the batch. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"

const char kme_e4_schema[] =
    "CREATE TABLE IF NOT EXISTS e4_stream(ksid TEXT PRIMARY KEY, "
    "  state TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS e4_chunk(ksid TEXT NOT NULL, idx INTEGER NOT NULL, "
    "  key BLOB, at INTEGER NOT NULL, exp INTEGER NOT NULL, "
    "  PRIMARY KEY(ksid, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS e4_outbox(off INTEGER PRIMARY KEY, "
    "  len INTEGER NOT NULL, ksid TEXT NOT NULL, idx INTEGER NOT NULL, "
    "  at INTEGER NOT NULL, exp INTEGER NOT NULL);";

enum { Q_STREAM, Q_STREAM_DEL, Q_CHUNKS_DEL, Q_CHUNK, Q_TRIM, Q_OUTBOX, Q_OUTBOX_TRIM,
       Q_COUNT };

static const char *const q_sql[Q_COUNT] = {
    [Q_STREAM] = "INSERT INTO e4_stream(ksid, state) VALUES(?1, ?2) "
                 "ON CONFLICT(ksid) DO UPDATE SET state = excluded.state",
    [Q_STREAM_DEL] = "DELETE FROM e4_stream WHERE ksid = ?1",
    [Q_CHUNKS_DEL] = "DELETE FROM e4_chunk WHERE ksid = ?1",
    [Q_CHUNK] = "INSERT OR REPLACE INTO e4_chunk(ksid, idx, key, at, exp) "
                "VALUES(?1, ?2, ?3, ?4, ?5)",
    [Q_TRIM] = "DELETE FROM e4_chunk WHERE ksid = ?1 AND idx < ?2",
    [Q_OUTBOX] = "INSERT INTO e4_outbox(off, len, ksid, idx, at, exp) "
                 "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_OUTBOX_TRIM] = "DELETE FROM e4_outbox WHERE off < ?1 AND off + len <= ?1",
};

struct kme_e4_store {
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
};

int kme_e4_store_open(sqlite3 *db, struct kme_e4_store **st_r)
{
    struct kme_e4_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return SQLITE_NOMEM;
    st->db = db;
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < Q_COUNT; i++)
        rc = sqlite3_prepare_v3(db, q_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i],
                                NULL);
    if (rc != SQLITE_OK) {
        kme_e4_store_close(&st);
        return rc;
    }
    *st_r = st;
    return SQLITE_OK;
}

void kme_e4_store_close(struct kme_e4_store **stp)
{
    struct kme_e4_store *st = *stp;
    if (st == NULL)
        return;
    *stp = NULL;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(st->q[i]);
    free(st);
}

static int run(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

int kme_e4_store_apply(struct kme_e4_store *st, const struct kme_op *op)
{
    sqlite3_stmt *s;
    switch (op->kind) {
    case KME_OP_E4_STREAM:
        s = st->q[Q_STREAM];
        sqlite3_bind_text(s, 1, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, op->master, -1, SQLITE_STATIC);
        return run(s);
    case KME_OP_E4_STREAM_DEL:
        sqlite3_bind_text(st->q[Q_CHUNKS_DEL], 1, op->key_id, -1, SQLITE_STATIC);
        if (run(st->q[Q_CHUNKS_DEL]) < 0)
            return -1;
        sqlite3_bind_text(st->q[Q_STREAM_DEL], 1, op->key_id, -1, SQLITE_STATIC);
        return run(st->q[Q_STREAM_DEL]);
    case KME_OP_E4_CHUNK:
        s = st->q[Q_CHUNK];
        sqlite3_bind_text(s, 1, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)op->e4_index);
        if (op->data != NULL)
            sqlite3_bind_blob(s, 3, op->data, (int)op->len, SQLITE_STATIC);
        else
            sqlite3_bind_null(s, 3);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)op->e4_at);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)op->expires_ms);
        return run(s);
    case KME_OP_E4_CHUNK_TRIM:
        s = st->q[Q_TRIM];
        sqlite3_bind_text(s, 1, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)op->e4_index);
        return run(s);
    case KME_OP_E4_OUTBOX_ADD:
        s = st->q[Q_OUTBOX];
        sqlite3_bind_int64(s, 1, (sqlite3_int64)op->off);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)op->len);
        sqlite3_bind_text(s, 3, op->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)op->e4_index);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)op->e4_at);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)op->expires_ms);
        return run(s);
    default:
        return -1;
    }
}

int kme_e4_store_trim(struct kme_e4_store *st, uint64_t applied)
{
    sqlite3_bind_int64(st->q[Q_OUTBOX_TRIM], 1, (sqlite3_int64)applied);
    return run(st->q[Q_OUTBOX_TRIM]);
}

/* ---- load ----------------------------------------------------------------------- */

static int fail(sqlite3 *db, char **error_r, const char *what)
{
    if (error_r != NULL && asprintf(error_r, "%s: %s", what,
                                    db != NULL ? sqlite3_errmsg(db) : "invalid row") < 0)
        *error_r = NULL;
    return KME_SERVER_ESTORE;
}

static int load_streams(struct kme_e4_store *st, struct kme *k, char **error_r)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT ksid, state FROM e4_stream", -1, &q, NULL) !=
        SQLITE_OK)
        return fail(st->db, error_r, "e4_stream");
    int ret = 0;
    while (ret == 0 && sqlite3_step(q) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(q, 0);
        const char *state = (const char *)sqlite3_column_text(q, 1);
        uint8_t ksid[ETSI004_KSID_LEN];
        if (text == NULL || state == NULL || etsi004_ksid_from_text(text, ksid) < 0) {
            ret = fail(NULL, error_r, "e4_stream");
            break;
        }
        struct e4_stream *s = e4_stream_add(k->e4, ksid);
        if (s == NULL) {
            ret = KME_SERVER_ENOMEM;
            break;
        }
        if (e4_stream_state_load(s, state) < 0) {
            ret = fail(NULL, error_r, "e4_stream state");
            break;
        }
        s->sent_end[0] = s->end[0];
        s->sent_end[1] = s->end[1];
        s->sent_next = s->next_index;
        s->owner_view_here = s->end[E4_HERE];
    }
    sqlite3_finalize(q);
    return ret;
}

static int load_chunks(struct kme_e4_store *st, struct kme *k, char **error_r)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT ksid, idx, key, at, exp FROM e4_chunk", -1,
                           &q, NULL) != SQLITE_OK)
        return fail(st->db, error_r, "e4_chunk");
    int ret = 0;
    while (ret == 0 && sqlite3_step(q) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(q, 0);
        uint8_t ksid[ETSI004_KSID_LEN];
        struct e4_stream *s = text != NULL && etsi004_ksid_from_text(text, ksid) == 0
                                  ? e4_stream_find(k->e4, ksid) : NULL;
        sqlite3_int64 idx = sqlite3_column_int64(q, 1);
        if (s == NULL || idx < 0 || idx > UINT32_MAX) {
            ret = fail(NULL, error_r, "e4_chunk without its stream");
            break;
        }
        const void *blob = sqlite3_column_blob(q, 2);
        size_t len = (size_t)sqlite3_column_bytes(q, 2);
        uint8_t *key = NULL;
        if (blob != NULL) {
            if (len == 0 || len > ETSI004_MAX_CHUNK) {
                ret = fail(NULL, error_r, "e4_chunk key");
                break;
            }
            if ((key = malloc(len)) == NULL) {
                ret = KME_SERVER_ENOMEM;
                break;
            }
            memcpy(key, blob, len);
        }
        if (e4_chunk_add(s, (uint32_t)idx, key, key != NULL ? (uint32_t)len
                                                            : s->qos.key_chunk_size,
                         (uint64_t)sqlite3_column_int64(q, 3),
                         (uint64_t)sqlite3_column_int64(q, 4)) < 0) {
            free(key);
            ret = KME_SERVER_ENOMEM;
        }
    }
    sqlite3_finalize(q);
    return ret;
}

static int by_off(const void *a, const void *b)
{
    const struct kme_reservation *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The outbox holds the 014 reservations; the 004 ones are merged in, in
 * stream offset order (the peer applies them strictly in that order). */
static int load_outbox(struct kme_e4_store *st, struct kme *k, char **error_r)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT off, len, ksid, idx, at, exp FROM e4_outbox "
                                   "ORDER BY off", -1, &q, NULL) != SQLITE_OK)
        return fail(st->db, error_r, "e4_outbox");
    struct kme_outbox *ob = &k->outbox;
    size_t n = ob->count, cap = n + 64;
    struct kme_reservation *all = malloc(cap * sizeof(*all));
    int ret = all != NULL ? 0 : KME_SERVER_ENOMEM;
    for (size_t i = 0; ret == 0 && i < ob->count; i++)
        all[i] = *kme_outbox_at(ob, i);
    while (ret == 0 && sqlite3_step(q) == SQLITE_ROW) {
        if (n == cap) {
            struct kme_reservation *m = realloc(all, 2 * cap * sizeof(*all));
            if (m == NULL) {
                ret = KME_SERVER_ENOMEM;
                break;
            }
            all = m;
            cap *= 2;
        }
        struct kme_reservation *r = &all[n];
        memset(r, 0, sizeof(*r));
        const char *text = (const char *)sqlite3_column_text(q, 2);
        sqlite3_int64 idx = sqlite3_column_int64(q, 3);
        if (text == NULL || strlen(text) != ETSI004_KSID_TEXT_LEN || idx < 0 ||
            idx > UINT32_MAX) {
            ret = fail(NULL, error_r, "e4_outbox");
            break;
        }
        r->off = (uint64_t)sqlite3_column_int64(q, 0);
        r->len = (uint32_t)sqlite3_column_int64(q, 1);
        memcpy(r->key_id, text, ETSI004_KSID_TEXT_LEN + 1);
        r->e4 = true;
        r->e4_index = (uint32_t)idx;
        r->e4_at = (uint64_t)sqlite3_column_int64(q, 4);
        r->e4_exp = (uint64_t)sqlite3_column_int64(q, 5);
        n++;
    }
    sqlite3_finalize(q);
    if (ret == 0 && n > ob->count && kme_outbox_reserve(ob, n - ob->count) < 0)
        ret = KME_SERVER_ENOMEM;
    if (ret == 0 && n > ob->count) {
        qsort(all, n, sizeof(*all), by_off);
        /* The entries (and their strings) move: refill the ring, which
         * has room for all of them (the pushes cannot fail). */
        ob->first = 0;
        ob->count = 0;
        for (size_t i = 0; i < n; i++)
            kme_outbox_push(ob, &all[i]);
    }
    free(all);
    return ret;
}

int kme_e4_store_load(struct kme_e4_store *st, struct kme *k, char **error_r)
{
    int ret = load_streams(st, k, error_r);
    if (ret == 0)
        ret = load_chunks(st, k, error_r);
    if (ret == 0)
        ret = load_outbox(st, k, error_r);
    return ret;
}
