/* Helpers shared by the vault unit tests: a private folder per test with
 * a vault configuration pointing into it, and deterministic key bytes. */
#ifndef QUMAIL_TEST_VAULT_H
#define QUMAIL_TEST_VAULT_H

#include <ftw.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

#endif
