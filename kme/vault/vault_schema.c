/* Layout of the vault database and its migrations.
 *
 * PRAGMA user_version holds the layout version; steps[i] brings version i
 * to i + 1 and is recorded in the migrations table. All pending steps run
 * in one BEGIN IMMEDIATE transaction that re-reads the version once it
 * holds the write lock, so two processes opening an old vault at once
 * migrate it exactly once, and a step that fails leaves the previous
 * version intact. A new layout is a new entry at the end of steps[]: never
 * edit a step that has shipped.
 *
 * Tables:
 *  info(name, value)         vault-wide values: key_check (proves the
 *                            master key), created
 *  migrations(version, ...)  one row per step applied
 *  keys(kind, source, master, key_id, origin, created, sealed)
 *                            one key per row; (kind, source, master,
 *                            key_id) is the identity; sealed = format,
 *                            nonce, AES-256-GCM(key bytes), tag
 *  messages(id, created, updated, sealed)   per-message metadata blobs
 */
#include <stdio.h>
#include <stdlib.h>

#include "vault_internal.h"

struct step {
    const char *description;
    const char *sql;
};

static const struct step steps[KME_VAULT_SCHEMA_VERSION] = {
    /* 0 -> 1: keys (issue 12: every key obtained with dec_keys). */
    {"keys and vault info",
     "CREATE TABLE info(name TEXT PRIMARY KEY, value BLOB NOT NULL);"
     "CREATE TABLE migrations(version INTEGER PRIMARY KEY, "
     "  applied INTEGER NOT NULL, description TEXT NOT NULL);"
     /* WITHOUT ROWID: rows are small (~130 bytes) and always found by
      * identity, so the identity B-tree is the table. */
     "CREATE TABLE keys(kind INTEGER NOT NULL, source TEXT NOT NULL, "
     "  master TEXT NOT NULL, key_id TEXT NOT NULL, "
     "  origin INTEGER NOT NULL, created INTEGER NOT NULL, "
     "  sealed BLOB NOT NULL, "
     "  PRIMARY KEY(kind, source, master, key_id)) WITHOUT ROWID;"},
    /* 1 -> 2: per-message metadata (summary sweeps after a restart). */
    {"per-message metadata",
     /* A rowid table: blobs can be large, which WITHOUT ROWID handles
      * badly. */
     "CREATE TABLE messages(id TEXT NOT NULL UNIQUE, "
     "  created INTEGER NOT NULL, updated INTEGER NOT NULL, "
     "  sealed BLOB NOT NULL);"},
};

static int read_int(sqlite3 *db, const char *sql, int *v)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            *v = sqlite3_column_int(q, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(q);
    return rc;
}

static int apply_step(sqlite3 *db, int version, char **error_r)
{
    const struct step *s = &steps[version - 1];
    int rc = sqlite3_exec(db, s->sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return kme_vault_fail_db(db, rc, error_r, "migration step failed");
    sqlite3_stmt *q = NULL;
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO migrations(version, applied, "
                            "description) VALUES(?1, "
                            "CAST(strftime('%s', 'now') AS INTEGER), ?2)",
                            -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(q, 1, version);
        sqlite3_bind_text(q, 2, s->description, -1, SQLITE_STATIC);
        rc = sqlite3_step(q);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(q);
    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", version);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, pragma, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return kme_vault_fail_db(db, rc, error_r, "migration record failed");
    return 0;
}

int kme_vault_migrate(sqlite3 *db, int target, char **error_r)
{
    if (target < 1 || target > KME_VAULT_SCHEMA_VERSION)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "no layout version %d", target);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return kme_vault_fail_db(db, rc, error_r, "cannot lock the vault");
    int version = 0, tables = 0, ret = 0;
    rc = read_int(db, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK)
        rc = read_int(db, "SELECT count(*) FROM sqlite_schema", &tables);
    if (rc != SQLITE_OK)
        ret = kme_vault_fail_db(db, rc, error_r, "cannot read the layout");
    else if (version > KME_VAULT_SCHEMA_VERSION)
        ret = kme_vault_fail(error_r, KME_VAULT_EVERSION,
                             "vault layout version %d is newer than this "
                             "qumail (%d): use a newer qumail",
                             version, KME_VAULT_SCHEMA_VERSION);
    else if (version == 0 && tables != 0)
        ret = kme_vault_fail(error_r, KME_VAULT_EVERSION,
                             "not a qumail vault (tables without a layout "
                             "version)");
    for (int v = version + 1; ret == 0 && v <= target; v++)
        ret = apply_step(db, v, error_r);
    if (ret == 0) {
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            ret = kme_vault_fail_db(db, rc, error_r, "migration commit");
    }
    if (ret != 0 && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}
