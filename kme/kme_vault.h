/* kme_vault: the key vault. Every key the proxy obtains or uses, and the
 * per-message metadata of encrypted messages, durable in SQLite and
 * encrypted at rest (AES-256-GCM per row under sub-keys derived with HKDF
 * from a master key). See kme/VAULT.md.
 *
 * Why: ETSI GS QKD 014 deletes a key at the KME once delivered, and a
 * mailbox is read many times from many devices. The reading side stores
 * every key it gets with dec_keys before using it; the sending side stores
 * the keys it used with enc_keys so the sender can read its Sent copy;
 * copies only their owner reads (APPEND of Sent and Drafts) use local
 * random keys the vault generates.
 *
 * Key identity: (source KME ID, master SAE ID, key ID). Key IDs are unique
 * per source KME; the master SAE is part of the identity so that the vault
 * answers only the (source, master) pair the KME delivered the key for,
 * as dec_keys itself would. Local keys live under the reserved source
 * KME_VAULT_LOCAL_SOURCE, with the caller's owner string in the master
 * place and a fresh UUID as key ID: the reader looks them up exactly like
 * QKD keys, with the source and master its message's control data names.
 * The vault is not an authorisation layer: who may read which message is
 * the IMAP side's decision.
 *
 * Durability: a call that writes returns 0 only after its transaction is
 * committed with synchronous=FULL in WAL mode (fsync of the WAL). One call
 * is one transaction: a batch is stored entirely or not at all.
 *
 * Threading: a kme_vault may be used from any number of threads at once
 * (libuv's thread pool). Writes are serialised on one writer connection
 * and block for an fsync (milliseconds): call them off the loop
 * (uv_queue_work). Reads use a pool of reader connections that never wait
 * for a write (WAL); kme_vault_key_get() and kme_vault_meta_get() of one
 * row take tens of microseconds and may be called on the loop, but they
 * wait when every reader connection is busy, and a cold page cache means
 * disk reads: prefer the thread pool for batches. kme_vault_open() and
 * kme_vault_close() are not concurrent with anything.
 *
 * Errors: negative KME_VAULT_E* codes; detail through error_r (optional;
 * the caller frees *error_r; set only on failure). Messages never contain
 * key bytes or metadata content.
 *
 * Secrets: key bytes and metadata are wiped (OPENSSL_cleanse) from every
 * buffer the vault frees; results are wiped by their *_free(). */
#ifndef QUMAIL_KME_VAULT_H
#define QUMAIL_KME_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors --------------------------------------------------------------- */

enum kme_vault_error {
    KME_VAULT_OK = 0,
    KME_VAULT_ENOMEM = -8001,    /* out of memory */
    KME_VAULT_EINVAL = -8002,    /* invalid argument or configuration */
    KME_VAULT_EIO = -8003,       /* file system error (key file, folders) */
    KME_VAULT_EDB = -8004,       /* SQLite error (disk full, corrupt file) */
    KME_VAULT_EPERM = -8005,     /* unsafe permissions on a vault file or
                                    folder (group/other access) */
    KME_VAULT_ENOKEY = -8006,    /* master key file missing and not created
                                    (create_key off, or the vault exists) */
    KME_VAULT_EWRONGKEY = -8007, /* the master key is not this vault's */
    KME_VAULT_EAUTH = -8008,     /* a row failed authentication: tampered,
                                    or copied to another identity */
    KME_VAULT_ENOTFOUND = -8009, /* no such metadata row / key */
    KME_VAULT_ECONFLICT = -8010, /* a key with this identity is already
                                    stored with different bytes */
    KME_VAULT_ETOOBIG = -8011,   /* metadata above max_meta_size, or a
                                    batch above the limits below */
    KME_VAULT_EVERSION = -8012,  /* database layout newer than this code,
                                    or not a vault */
    KME_VAULT_EBUSY = -8013,     /* locked by another process too long */
    KME_VAULT_ECRYPTO = -8014,   /* OpenSSL failure (RNG, cipher) */
};

/* Static text for a code ("unknown error" otherwise). */
const char *kme_vault_strerror(int error);
/* Static name, e.g. "KME_VAULT_EAUTH". */
const char *kme_vault_errname(int error);

/* ---- limits --------------------------------------------------------------- */

#define KME_VAULT_MAX_ID_LEN 255       /* source, master, key ID: visible
                                          ASCII 0x21-0x7E, 1..255 chars */
#define KME_VAULT_MAX_MSG_ID_LEN 1024  /* metadata identity, same chars */
#define KME_VAULT_MAX_KEY_LEN 65536    /* bytes of one key */
#define KME_VAULT_MAX_BATCH 100000     /* keys per call (= MIME_MAX_KEYS) */
#define KME_VAULT_MAX_BATCH_BYTES (256u << 20) /* key bytes per call */
#define KME_VAULT_MAX_META_LIMIT (64u << 20) /* ceiling of max_meta_size */

/* Reserved source KME ID of local random keys. Puts of QKD keys with this
 * source are refused (KME_VAULT_EINVAL). */
#define KME_VAULT_LOCAL_SOURCE "local"

/* ---- open and close --------------------------------------------------------- */

enum kme_vault_sync {
    KME_VAULT_SYNC_FULL = 0,   /* default: fsync at every commit (durable
                                  across power loss) */
    KME_VAULT_SYNC_NORMAL = 1, /* WAL without fsync at commit: survives a
                                  process crash, may lose the last commits
                                  on power loss. Tests and benchmarks only. */
};

#define KME_VAULT_READERS_NONE 0xffffffffu

struct kme_vault_config {
    const char *path;       /* SQLite database file (created, 0600) */
    /* Master key: 32 raw bytes, or 64 hex digits and an optional newline.
     * Must not be accessible by group or others (KME_VAULT_EPERM). */
    const char *key_file;
    /* Create key_file (32 random bytes, written as hex, mode 0600, folder
     * 0700) when it is missing and the database does not exist yet. A
     * missing key beside an existing vault is always KME_VAULT_ENOKEY. */
    bool create_key;
    /* Reader connections (1..64); 0: 4. KME_VAULT_READERS_NONE: reads
     * share the writer connection under its mutex, so a read waits for a
     * commit's fsync (measured slower; for comparison and tests). */
    unsigned readers;
    size_t max_meta_size;   /* metadata blob limit; 0: 1 MiB */
    enum kme_vault_sync sync;
    unsigned busy_timeout_ms; /* wait for another process's lock; 0: 5000 */
};

typedef struct kme_vault kme_vault;

/* Opens (creating when needed) the vault: folders 0700, database 0600
 * (its -wal and -shm inherit the mode), migrates an older layout, checks
 * the master key against the vault. Refuses files or folders that group or
 * others can access (KME_VAULT_EPERM, with the chmod to run). Safe against
 * another process opening the same vault at the same moment. */
int kme_vault_open(const struct kme_vault_config *cfg, kme_vault **vault_r,
                   char **error_r);
/* Closes the connections, wipes the sub-keys, clears *vault. */
void kme_vault_close(kme_vault **vault);

/* ---- keys ----------------------------------------------------------------- */

enum kme_vault_origin {
    KME_VAULT_RECEIVED = 1, /* obtained with dec_keys (reading side) */
    KME_VAULT_SENT = 2,     /* used with enc_keys (sending side) */
    KME_VAULT_LOCAL = 3,    /* generated by kme_vault_local_new() */
};

/* One key handed to a put. Borrowed: the vault copies nothing it keeps in
 * memory after the call. */
struct kme_vault_key_in {
    const char *key_id;
    const uint8_t *bytes;
    size_t len;             /* 1..KME_VAULT_MAX_KEY_LEN */
};

/* Stores n keys (1..KME_VAULT_MAX_BATCH, distinct IDs, at most
 * KME_VAULT_MAX_BATCH_BYTES in all: KME_VAULT_ETOOBIG) of one source KME
 * and master SAE in one transaction, durable when 0 is returned. origin is
 * KME_VAULT_RECEIVED or KME_VAULT_SENT. A key already stored with the same
 * identity and the same bytes is left as it is (puts are idempotent); with
 * other bytes the whole call fails with KME_VAULT_ECONFLICT and stores
 * nothing. Blocks (fsync): thread pool. */
int kme_vault_keys_put(kme_vault *v, enum kme_vault_origin origin,
                       const char *source_kme_id, const char *master_sae_id,
                       const struct kme_vault_key_in *keys, size_t n,
                       char **error_r);

/* The same for the key list a kme_client callback hands over (kme/
 * kme_client.h), without converting it. */
struct kme_keys;
int kme_vault_keys_put_kme(kme_vault *v, enum kme_vault_origin origin,
                           const char *source_kme_id,
                           const char *master_sae_id,
                           const struct kme_keys *keys, char **error_r);

/* A key in a result. bytes is NULL (and len 0) when the vault does not
 * hold this key. */
struct kme_vault_key {
    const char *key_id;     /* points into the result */
    const uint8_t *bytes;   /* points into the result's material */
    size_t len;
};

/* Keys in the order asked for. Owned by the caller: kme_vault_keys_free()
 * wipes the material. */
struct kme_vault_keys {
    size_t count;           /* = n asked for */
    size_t found;           /* how many have bytes */
    struct kme_vault_key *keys;
    uint8_t *material;      /* all key bytes, concatenated */
    size_t total_len;
    char *ids;              /* key ID strings */
};
void kme_vault_keys_free(struct kme_vault_keys **keys);

/* The keys with these IDs (1..KME_VAULT_MAX_BATCH IDs, duplicates
 * allowed) from one source KME and master SAE, in one read transaction.
 * Returns 0 and a result where missing keys have bytes NULL (the caller
 * fetches those from the KME and puts them); KME_VAULT_EAUTH (naming the
 * key ID) when any stored row fails authentication: never a partial
 * result. source_kme_id KME_VAULT_LOCAL_SOURCE reads local keys. */
int kme_vault_keys_get(kme_vault *v, const char *source_kme_id,
                       const char *master_sae_id,
                       const char *const *key_ids, size_t n,
                       struct kme_vault_keys **keys_r, char **error_r);

/* One key: 0 with *bytes_r (caller frees with kme_vault_bytes_free) and
 * *len_r, KME_VAULT_ENOTFOUND when absent. */
int kme_vault_key_get(kme_vault *v, const char *source_kme_id,
                      const char *master_sae_id, const char *key_id,
                      uint8_t **bytes_r, size_t *len_r, char **error_r);

/* n fresh local keys of key_len bytes each (RAND_bytes), for copies only
 * their owner reads (APPEND of Sent and Drafts): never QKD material, so a
 * QKD key is never used twice. Stored under (KME_VAULT_LOCAL_SOURCE,
 * owner, new UUID v4 key ID) and durable before the call returns them.
 * owner: the caller's choice (e.g. the login identity or the proxy's SAE
 * ID), same rules as a master SAE ID. Blocks (fsync): thread pool. */
int kme_vault_local_new(kme_vault *v, const char *owner, size_t n,
                        size_t key_len, struct kme_vault_keys **keys_r,
                        char **error_r);

/* ---- per-message metadata -------------------------------------------------- */

/* Stores (replacing) the blob for msg_id (1..KME_VAULT_MAX_MSG_ID_LEN
 * visible ASCII; the caller's choice, e.g. a hash of the control data or
 * "source/master/first key ID"). Opaque bytes, 0..max_meta_size.
 * Blocks (fsync): thread pool. */
int kme_vault_meta_put(kme_vault *v, const char *msg_id, const void *data,
                       size_t len, char **error_r);
/* 0 with *data_r (caller frees with kme_vault_bytes_free; never NULL, also
 * for an empty blob) and *len_r; KME_VAULT_ENOTFOUND when absent. */
int kme_vault_meta_get(kme_vault *v, const char *msg_id, uint8_t **data_r,
                       size_t *len_r, char **error_r);
/* 0, or KME_VAULT_ENOTFOUND when there was nothing to delete. Blocks. */
int kme_vault_meta_delete(kme_vault *v, const char *msg_id, char **error_r);

/* Wipes len bytes and frees them; clears *p. */
void kme_vault_bytes_free(uint8_t **p, size_t len);

/* ---- operations ------------------------------------------------------------ */

struct kme_vault_stats {
    int schema_version;
    uint64_t keys_received;   /* rows by origin */
    uint64_t keys_sent;
    uint64_t keys_local;
    uint64_t key_bytes;       /* sum of stored key lengths */
    uint64_t messages;        /* metadata rows */
    uint64_t db_bytes;        /* database file size */
    uint64_t wal_bytes;       /* -wal file size (0 when absent) */
};
/* Counts rows (a full scan: off the loop). */
int kme_vault_stats(kme_vault *v, struct kme_vault_stats *st, char **error_r);

/* SQLite's integrity check, then every row decrypted and authenticated.
 * 0 when all is well; KME_VAULT_EAUTH / KME_VAULT_EDB with the first
 * problem. *rows_r (optional): rows checked. Slow: off the loop. */
int kme_vault_verify(kme_vault *v, uint64_t *rows_r, char **error_r);

/* A consistent copy of the vault at dest_path (which must not exist;
 * created 0600, synced), taken while the vault is in use: a read
 * transaction on a reader connection (VACUUM INTO), writers go on. The
 * copy is encrypted like the vault and useless without the master key
 * file: back that up too, kept apart. Slow: off the loop. */
int kme_vault_backup(kme_vault *v, const char *dest_path, char **error_r);

#endif
