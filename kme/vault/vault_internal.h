/* Internals shared by the files of the key vault (kme/vault/). Not a public
 * interface: the proxy includes kme/kme_vault.h only. Unit tests include
 * this header to build old layouts and tamper with rows. */
#ifndef QUMAIL_KME_VAULT_INTERNAL_H
#define QUMAIL_KME_VAULT_INTERNAL_H

#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>

#include "kme_vault.h"

/* Layout version written to PRAGMA user_version (vault_schema.c). */
#define KME_VAULT_SCHEMA_VERSION 2

#define KME_VAULT_MASTER_LEN ((size_t)32)
#define KME_VAULT_SUBKEY_LEN 32
#define KME_VAULT_NONCE_LEN 12
#define KME_VAULT_TAG_LEN 16
/* A sealed row: format byte, nonce, ciphertext, tag. */
#define KME_VAULT_ROW_FORMAT 1
#define KME_VAULT_SEAL_OVERHEAD (1 + KME_VAULT_NONCE_LEN + KME_VAULT_TAG_LEN)
/* AAD of a key row: label, kind, origin, three length-prefixed strings. */
#define KME_VAULT_KEY_AAD_MAX (32 + 2 + 3 * (1 + KME_VAULT_MAX_ID_LEN))
#define KME_VAULT_META_AAD_MAX (32 + 2 + KME_VAULT_MAX_MSG_ID_LEN)

/* keys.kind: which namespace a key row lives in. */
enum kme_vault_kind {
    KME_VAULT_KIND_QKD = 1,     /* ETSI 014 key: (source KME, master SAE, key ID) */
    KME_VAULT_KIND_LOCAL = 2,   /* local random key: ("local", owner, UUID) */
    /* 3: reserved for ETSI 004 chunks: (source KME, key stream ID,
     * "index") in the same columns, when the 004 client lands. */
};

/* ---- errors (vault_errors.c) ------------------------------------------------ */

/* Sets *error_r (when error_r is not NULL) to the formatted text and
 * returns code. */
int kme_vault_fail(char **error_r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps a SQLite result code to ours (BUSY/LOCKED -> EBUSY, NOMEM ->
 * ENOMEM, else EDB) with "what: sqlite message". */
int kme_vault_fail_db(sqlite3 *db, int rc, char **error_r, const char *what);

/* ---- crypto (vault_crypto.c) ------------------------------------------------ */

/* HKDF-SHA256(master, salt "qumail-vault", info label) -> out[32]. */
int kme_vault_derive(const uint8_t master[KME_VAULT_MASTER_LEN],
                     const char *label, uint8_t out[KME_VAULT_SUBKEY_LEN]);
/* A GCM context holding key, for encrypting (enc) or decrypting many rows;
 * free with EVP_CIPHER_CTX_free. NULL on failure. */
EVP_CIPHER_CTX *kme_vault_cipher(const EVP_CIPHER *aes,
                                 const uint8_t key[KME_VAULT_SUBKEY_LEN],
                                 bool enc);
/* out: pt_len + KME_VAULT_SEAL_OVERHEAD bytes, fresh random nonce. */
int kme_vault_seal(EVP_CIPHER_CTX *ctx, const uint8_t *aad, size_t aad_len,
                   const uint8_t *pt, size_t pt_len, uint8_t *out);
/* out: in_len - KME_VAULT_SEAL_OVERHEAD bytes; KME_VAULT_EAUTH when the row
 * does not authenticate (out is wiped then). */
int kme_vault_unseal(EVP_CIPHER_CTX *ctx, const uint8_t *aad, size_t aad_len,
                     const uint8_t *in, size_t in_len, uint8_t *out);
/* AAD of a key row / a metadata row; returns its length. */
size_t kme_vault_key_aad(uint8_t out[KME_VAULT_KEY_AAD_MAX], int kind,
                         int origin, const char *source, const char *master,
                         const char *key_id);
size_t kme_vault_meta_aad(uint8_t out[KME_VAULT_META_AAD_MAX],
                          const char *msg_id);
/* A random (version 4) UUID in lower case. */
int kme_vault_uuid4(char out[37]);
/* 1..max visible ASCII characters (0x21-0x7E). */
bool kme_vault_id_ok(const char *s, size_t max);

/* ---- files (vault_files.c) -------------------------------------------------- */

/* Creates the missing folders of dir with mode 0700 and refuses a folder
 * that is a link, another user's, or writable by group or others
 * (statefile_dir: KME_VAULT_EPERM). */
int kme_vault_mkdirs(const char *dir, char **error_r);
/* Loads the master key; when it is missing and create is set (and no
 * vault exists), creates it atomically first. */
int kme_vault_master_key(const char *key_file, bool create, bool vault_exists,
                         uint8_t key[KME_VAULT_MASTER_LEN], char **error_r);
/* Creates the database file 0600 when missing; refuses a database (or its
 * -wal, -shm) that group or others may access. */
int kme_vault_db_file(const char *path, char **error_r);
/* fsync of the folder holding path (a new directory entry is durable). */
int kme_vault_fsync_dir(const char *path, char **error_r);

/* ---- schema (vault_schema.c) ------------------------------------------------ */

/* Brings the database to layout version target (1..KME_VAULT_SCHEMA_VERSION)
 * in one write transaction, recording each step in the migrations table.
 * Refuses a newer layout, or a database with tables that is not a vault. */
int kme_vault_migrate(sqlite3 *db, int target, char **error_r);

/* ---- connections (vault_conn.c) --------------------------------------------- */

enum kme_vault_stmt {
    KV_BEGIN_WRITE,
    KV_BEGIN_READ,
    KV_COMMIT,
    KV_ROLLBACK,
    KV_KEY_INSERT,
    KV_KEY_GET,
    KV_META_PUT,
    KV_META_GET,
    KV_META_DELETE,
    KV_STMT_COUNT
};

struct kme_vault_conn {
    sqlite3 *db;
    sqlite3_stmt *st[KV_STMT_COUNT];
    struct kme_vault_conn *next_free;
};

struct kme_vault {
    char *path;
    uint8_t key_rows[KME_VAULT_SUBKEY_LEN]; /* AES key of key rows */
    uint8_t key_meta[KME_VAULT_SUBKEY_LEN]; /* AES key of metadata rows */
    EVP_CIPHER *aes;                        /* fetched once */
    size_t max_meta;

    /* Writes: one connection, one transaction at a time. */
    pthread_mutex_t write_lock;
    struct kme_vault_conn writer;

    /* Reads: a pool (WAL readers never wait for the writer). With no
     * readers, reads take the writer under write_lock. */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    struct kme_vault_conn *readers; /* array of n_readers */
    unsigned n_readers;
    struct kme_vault_conn *free_readers;
};

/* Opens a connection with the vault's pragmas and prepares the
 * statements (the schema must exist). */
int kme_vault_conn_open(struct kme_vault_conn *c, const char *path,
                        bool reader, enum kme_vault_sync sync,
                        unsigned busy_ms, char **error_r);
/* Opens only the SQLite handle and sets the pragmas (for migration). */
int kme_vault_conn_db(struct kme_vault_conn *c, const char *path, bool reader,
                      enum kme_vault_sync sync, unsigned busy_ms,
                      char **error_r);
int kme_vault_conn_prepare(struct kme_vault_conn *c, char **error_r);
void kme_vault_conn_close(struct kme_vault_conn *c);

/* Takes a connection for reading (waits for a free one) / gives it back. */
struct kme_vault_conn *kme_vault_reader_get(kme_vault *v);
void kme_vault_reader_put(kme_vault *v, struct kme_vault_conn *c);
/* Takes the writer (write_lock) / gives it back. */
struct kme_vault_conn *kme_vault_writer_get(kme_vault *v);
void kme_vault_writer_put(kme_vault *v, struct kme_vault_conn *c);

/* Runs a statement that returns no row (BEGIN, COMMIT, ...), resets it. */
int kme_vault_exec_stmt(struct kme_vault_conn *c, enum kme_vault_stmt s,
                        char **error_r);
/* ROLLBACK when a transaction is open (errors ignored: nothing to add). */
void kme_vault_rollback(struct kme_vault_conn *c);

#endif
