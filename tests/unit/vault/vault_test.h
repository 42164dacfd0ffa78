/* Helpers shared by the vault unit tests: a private folder per test with
 * a vault configuration pointing into it, cmocka setup and teardown for it,
 * deterministic key bytes, raw SQL behind the vault's back, and processes
 * started at one moment. Each test file uses a part of them. */
#ifndef QUMAIL_TEST_VAULT_H
#define QUMAIL_TEST_VAULT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <sqlite3.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kme_vault.h"

struct vt {
    char dir[512];
    char db[600];
    char key[600];
    struct kme_vault_config cfg;
};

/* A fresh folder (mode 0700) QUMAIL_TEST_TMP/<name>-XXXXXX with the vault
 * in <dir>/state/vault.sqlite and the key in <dir>/secret/vault.key (both
 * subfolders missing: the vault creates them). */
static inline void vt_init(struct vt *t, const char *name)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "%s/%s-XXXXXX", QUMAIL_TEST_TMP, name);
    if (mkdtemp(t->dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    snprintf(t->db, sizeof(t->db), "%s/state/vault.sqlite", t->dir);
    snprintf(t->key, sizeof(t->key), "%s/secret/vault.key", t->dir);
    t->cfg.path = t->db;
    t->cfg.key_file = t->key;
    t->cfg.create_key = true;
    t->cfg.readers = 2;
}

static inline int vt_rm_one(const char *path, const struct stat *st, int flag,
                            struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void vt_cleanup(struct vt *t)
{
    nftw(t->dir, vt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Key bytes derived from the ID, so that any process can check them. */
static inline void vt_key_bytes(const char *id, uint8_t out[32])
{
    SHA256((const unsigned char *)id, strlen(id), out);
}

static inline mode_t vt_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return (mode_t)-1;
    return st.st_mode & 0777;
}

/* cmocka setup: a struct vt in *state, its folder named after name. */
static inline int vt_setup_named(void **state, const char *name)
{
    struct vt *t = malloc(sizeof(*t));
    if (t == NULL)
        return -1;
    vt_init(t, name);
    *state = t;
    return 0;
}

/* cmocka teardown of vt_setup_named(). */
static inline int vt_teardown(void **state)
{
    struct vt *t = *state;
    vt_cleanup(t);
    free(t);
    return 0;
}

/* Opens the vault of t's configuration; a failure fails the test. */
static inline kme_vault *vt_open_ok(struct vt *t)
{
    kme_vault *v = NULL;
    char *err = NULL;
    int ret = kme_vault_open(&t->cfg, &v, &err);
    if (ret != 0)
        fail_msg("open: %s (%s)", kme_vault_errname(ret), err ? err : "");
    assert_non_null(v);
    return v;
}

/* Runs SQL on the database behind the vault's back. */
static inline void vt_raw_sql(struct vt *t, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t->db, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

/* How many names (dot files aside) the folder holds. */
static inline int vt_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        entries += e->d_name[0] != '.';
    closedir(d);
    return entries;
}

/* n processes started at the same moment: each runs child(t, i) and exits
 * with what it returns (no cmocka assertions in there); the test fails
 * unless every one exited 0. All are waited for before any assertion. */
static inline void vt_race(struct vt *t, int n, int (*child)(struct vt *t, int i))
{
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t *pids = calloc((size_t)n, sizeof(*pids));
    int *status = calloc((size_t)n, sizeof(*status));
    assert_true(pids != NULL && status != NULL);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            char c;
            if (read(gate[0], &c, 1) < 0) /* EOF: everyone starts */
                _exit(2);
            _exit(child(t, i));
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int i = 0; i < n; i++)
        assert_int_equal(waitpid(pids[i], &status[i], 0), pids[i]);
    for (int i = 0; i < n; i++) {
        assert_true(WIFEXITED(status[i]));
        assert_int_equal(WEXITSTATUS(status[i]), 0);
    }
    free(pids);
    free(status);
}

#endif
