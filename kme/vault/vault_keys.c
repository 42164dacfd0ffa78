/* Key rows: batch put (one transaction, insert or verify equal), batch get
 * (one read transaction, prepared statement loop), local random keys. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kme_client.h"
#include "vault_internal.h"

/* The put loop reads keys through this, so that an array of
 * kme_vault_key_in and a kme_client result are stored without copying. */
typedef void key_at_fn(const void *src, size_t i, const char **id_r,
                       const uint8_t **bytes_r, size_t *len_r);

static void key_at_in(const void *src, size_t i, const char **id_r,
                      const uint8_t **bytes_r, size_t *len_r)
{
    const struct kme_vault_key_in *k = (const struct kme_vault_key_in *)src + i;
    *id_r = k->key_id;
    *bytes_r = k->bytes;
    *len_r = k->len;
}

static void key_at_kme(const void *src, size_t i, const char **id_r,
                       const uint8_t **bytes_r, size_t *len_r)
{
    const struct kme_key *k = &((const struct kme_keys *)src)->keys[i];
    *id_r = k->key_id;
    *bytes_r = k->bytes;
    *len_r = k->len;
}

static int kind_of(const char *source)
{
    return strcmp(source, KME_VAULT_LOCAL_SOURCE) == 0 ? KME_VAULT_KIND_LOCAL
                                                       : KME_VAULT_KIND_QKD;
}

static int check_scope(const char *source, const char *master, size_t n,
                       char **error_r)
{
    if (!kme_vault_id_ok(source, KME_VAULT_MAX_ID_LEN) ||
        !kme_vault_id_ok(master, KME_VAULT_MAX_ID_LEN))
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "source KME and master SAE IDs must be 1..%d "
                              "visible ASCII characters",
                              KME_VAULT_MAX_ID_LEN);
    if (n == 0 || n > KME_VAULT_MAX_BATCH)
        return kme_vault_fail(error_r, n == 0 ? KME_VAULT_EINVAL
                                              : KME_VAULT_ETOOBIG,
                              "%zu keys in one call (1..%d)", n,
                              KME_VAULT_MAX_BATCH);
    return 0;
}

static void bind_identity(sqlite3_stmt *q, int kind, const char *source,
                          const char *master, const char *key_id)
{
    sqlite3_bind_int(q, 1, kind);
    sqlite3_bind_text(q, 2, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, master, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, key_id, -1, SQLITE_STATIC);
}

/* The row with this identity exists: equal bytes are fine (idempotent
 * put), other bytes are a conflict. plain: room for len bytes. */
static int compare_existing(kme_vault *v, struct kme_vault_conn *c,
                            EVP_CIPHER_CTX **dec, int kind,
                            const char *source, const char *master,
                            const char *key_id, const uint8_t *bytes,
                            size_t len, uint8_t *plain, char **error_r)
{
    if (*dec == NULL && (*dec = kme_vault_cipher(v->aes, v->key_rows,
                                                 false)) == NULL)
        return kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "cipher setup");
    sqlite3_stmt *q = c->st[KV_KEY_GET];
    bind_identity(q, kind, source, master, key_id);
    int rc = sqlite3_step(q);
    int ret = 0;
    if (rc != SQLITE_ROW) {
        ret = kme_vault_fail_db(c->db, rc, error_r, "key lookup");
    } else {
        const uint8_t *sealed = sqlite3_column_blob(q, 1);
        size_t slen = (size_t)sqlite3_column_bytes(q, 1);
        uint8_t aad[KME_VAULT_KEY_AAD_MAX];
        size_t aad_len = kme_vault_key_aad(aad, kind, sqlite3_column_int(q, 0),
                                           source, master, key_id);
        /* Another length is a conflict; else decrypt and compare. */
        bool same = slen == len + KME_VAULT_SEAL_OVERHEAD;
        if (same)
            ret = kme_vault_unseal(*dec, aad, aad_len, sealed, slen, plain);
        if (ret == 0 && (!same || CRYPTO_memcmp(plain, bytes, len) != 0))
            ret = KME_VAULT_ECONFLICT;
        OPENSSL_cleanse(plain, len);
        if (ret == KME_VAULT_ECONFLICT)
            kme_vault_fail(error_r, ret,
                           "key %s of %s is already stored with other bytes",
                           key_id, source);
        else if (ret == KME_VAULT_EAUTH)
            kme_vault_fail(error_r, ret,
                           "stored key %s of %s fails authentication",
                           key_id, source);
        else if (ret != 0)
            kme_vault_fail(error_r, ret, "key decryption failed");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return ret;
}

/* Stores n keys in one write transaction. Arguments are validated. */
static int put_rows(kme_vault *v, int kind, int origin, const char *source,
                    const char *master, key_at_fn *at, const void *src,
                    size_t n, size_t max_len, char **error_r)
{
    size_t cap = max_len + KME_VAULT_SEAL_OVERHEAD;
    uint8_t *sealed = malloc(cap);
    uint8_t *plain = malloc(max_len);
    EVP_CIPHER_CTX *enc = kme_vault_cipher(v->aes, v->key_rows, true);
    EVP_CIPHER_CTX *dec = NULL;
    int ret = 0;
    if (sealed == NULL || plain == NULL)
        ret = KME_VAULT_ENOMEM;
    else if (enc == NULL)
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "cipher setup");
    if (ret != 0) {
        free(sealed);
        free(plain);
        EVP_CIPHER_CTX_free(enc);
        return ret;
    }
    struct kme_vault_conn *c = kme_vault_writer_get(v);
    ret = kme_vault_exec_stmt(c, KV_BEGIN_WRITE, error_r);
    sqlite3_stmt *ins = c->st[KV_KEY_INSERT];
    sqlite3_int64 now = (sqlite3_int64)time(NULL);
    for (size_t i = 0; i < n && ret == 0; i++) {
        const char *id;
        const uint8_t *bytes;
        size_t len;
        at(src, i, &id, &bytes, &len);
        uint8_t aad[KME_VAULT_KEY_AAD_MAX];
        size_t aad_len = kme_vault_key_aad(aad, kind, origin, source, master,
                                           id);
        if (kme_vault_seal(enc, aad, aad_len, bytes, len, sealed) != 0) {
            ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                                 "key encryption failed");
            break;
        }
        bind_identity(ins, kind, source, master, id);
        sqlite3_bind_int(ins, 5, origin);
        sqlite3_bind_int64(ins, 6, now);
        sqlite3_bind_blob(ins, 7, sealed,
                          (int)(len + KME_VAULT_SEAL_OVERHEAD),
                          SQLITE_STATIC);
        int rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        sqlite3_clear_bindings(ins);
        if (rc != SQLITE_DONE)
            ret = kme_vault_fail_db(c->db, rc, error_r, "key insert");
        else if (sqlite3_changes(c->db) == 0)
            ret = compare_existing(v, c, &dec, kind, source, master, id,
                                   bytes, len, plain, error_r);
    }
    if (ret == 0)
        ret = kme_vault_exec_stmt(c, KV_COMMIT, error_r);
    if (ret != 0)
        kme_vault_rollback(c);
    kme_vault_writer_put(v, c);
    OPENSSL_cleanse(sealed, cap);
    OPENSSL_cleanse(plain, max_len);
    free(sealed);
    free(plain);
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    return ret;
}

static int put_checked(kme_vault *v, enum kme_vault_origin origin,
                       const char *source, const char *master,
                       key_at_fn *at, const void *src, size_t n,
                       char **error_r)
{
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    int ret = check_scope(source, master, n, error_r);
    if (ret != 0)
        return ret;
    if (origin != KME_VAULT_RECEIVED && origin != KME_VAULT_SENT)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "origin must be RECEIVED or SENT");
    if (kind_of(source) != KME_VAULT_KIND_QKD)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "source KME ID \"%s\" is reserved for local "
                              "keys",
                              KME_VAULT_LOCAL_SOURCE);
    size_t max_len = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *id;
        const uint8_t *bytes;
        size_t len;
        at(src, i, &id, &bytes, &len);
        if (!kme_vault_id_ok(id, KME_VAULT_MAX_ID_LEN) || bytes == NULL ||
            len == 0 || len > KME_VAULT_MAX_KEY_LEN)
            return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                                  "key %zu: ID must be 1..%d visible ASCII "
                                  "characters and the key 1..%d bytes",
                                  i, KME_VAULT_MAX_ID_LEN,
                                  KME_VAULT_MAX_KEY_LEN);
        total += len;
        if (len > max_len)
            max_len = len;
    }
    if (total > KME_VAULT_MAX_BATCH_BYTES)
        return kme_vault_fail(error_r, KME_VAULT_ETOOBIG,
                              "%zu key bytes in one call (at most %u)", total,
                              KME_VAULT_MAX_BATCH_BYTES);
    return put_rows(v, KME_VAULT_KIND_QKD, (int)origin, source, master, at,
                    src, n, max_len, error_r);
}

int kme_vault_keys_put(kme_vault *v, enum kme_vault_origin origin,
                       const char *source_kme_id, const char *master_sae_id,
                       const struct kme_vault_key_in *keys, size_t n,
                       char **error_r)
{
    if (keys == NULL && n > 0)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no keys");
    return put_checked(v, origin, source_kme_id, master_sae_id, key_at_in,
                       keys, n, error_r);
}

int kme_vault_keys_put_kme(kme_vault *v, enum kme_vault_origin origin,
                           const char *source_kme_id,
                           const char *master_sae_id,
                           const struct kme_keys *keys, char **error_r)
{
    if (keys == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no keys");
    return put_checked(v, origin, source_kme_id, master_sae_id, key_at_kme,
                       keys, keys->count, error_r);
}

/* ---- results --------------------------------------------------------------- */

void kme_vault_keys_free(struct kme_vault_keys **keys)
{
    struct kme_vault_keys *k = *keys;
    if (k == NULL)
        return;
    *keys = NULL;
    if (k->material != NULL)
        OPENSSL_cleanse(k->material, k->total_len);
    free(k->material);
    free(k->ids);
    free(k->keys);
    free(k);
}

void kme_vault_bytes_free(uint8_t **p, size_t len)
{
    if (*p == NULL)
        return;
    OPENSSL_cleanse(*p, len);
    free(*p);
    *p = NULL;
}

/* A result for n keys with their IDs copied and material of cap bytes. */
static struct kme_vault_keys *result_new(const char *const *ids, size_t n,
                                         size_t id_bytes, size_t cap)
{
    struct kme_vault_keys *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->count = n;
    k->keys = calloc(n, sizeof(*k->keys));
    k->ids = malloc(id_bytes);
    k->material = malloc(cap > 0 ? cap : 1);
    if (k->keys == NULL || k->ids == NULL || k->material == NULL) {
        kme_vault_keys_free(&k);
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; ids != NULL && i < n; i++) {
        size_t len = strlen(ids[i]) + 1;
        memcpy(k->ids + off, ids[i], len);
        k->keys[i].key_id = k->ids + off;
        off += len;
    }
    return k;
}

/* Makes room for need more bytes after used (wiping the old block). */
static int grow(uint8_t **buf, size_t *cap, size_t used, size_t need)
{
    if (*cap - used >= need)
        return 0;
    size_t ncap = *cap * 2 > used + need ? *cap * 2 : used + need;
    uint8_t *n = malloc(ncap);
    if (n == NULL)
        return KME_VAULT_ENOMEM;
    memcpy(n, *buf, used);
    OPENSSL_cleanse(*buf, *cap);
    free(*buf);
    *buf = n;
    *cap = ncap;
    return 0;
}

/* Looks up every key; offsets of found keys go to off[] (pointers are set
 * once the material no longer moves). */
static int get_rows(kme_vault *v, struct kme_vault_conn *c, int kind,
                    const char *source, const char *master,
                    struct kme_vault_keys *k, size_t *off, size_t *cap,
                    char **error_r)
{
    EVP_CIPHER_CTX *dec = kme_vault_cipher(v->aes, v->key_rows, false);
    if (dec == NULL)
        return kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "cipher setup");
    sqlite3_stmt *q = c->st[KV_KEY_GET];
    int ret = 0;
    for (size_t i = 0; i < k->count && ret == 0; i++) {
        const char *id = k->keys[i].key_id;
        bind_identity(q, kind, source, master, id);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            const uint8_t *sealed = sqlite3_column_blob(q, 1);
            size_t slen = (size_t)sqlite3_column_bytes(q, 1);
            size_t plen = slen >= KME_VAULT_SEAL_OVERHEAD
                              ? slen - KME_VAULT_SEAL_OVERHEAD
                              : 0;
            uint8_t aad[KME_VAULT_KEY_AAD_MAX];
            size_t aad_len = kme_vault_key_aad(
                aad, kind, sqlite3_column_int(q, 0), source, master, id);
            ret = grow(&k->material, cap, k->total_len, plen);
            if (ret == 0 && (plen == 0 ||
                             kme_vault_unseal(dec, aad, aad_len, sealed, slen,
                                              k->material + k->total_len) !=
                                 0))
                ret = kme_vault_fail(error_r, KME_VAULT_EAUTH,
                                     "stored key %s of %s fails "
                                     "authentication",
                                     id, source);
            if (ret == 0) {
                off[i] = k->total_len;
                k->keys[i].len = plen;
                k->total_len += plen;
                k->found++;
            }
        } else if (rc != SQLITE_DONE) {
            ret = kme_vault_fail_db(c->db, rc, error_r, "key lookup");
        }
        sqlite3_reset(q);
    }
    sqlite3_clear_bindings(q);
    EVP_CIPHER_CTX_free(dec);
    return ret;
}

int kme_vault_keys_get(kme_vault *v, const char *source_kme_id,
                       const char *master_sae_id,
                       const char *const *key_ids, size_t n,
                       struct kme_vault_keys **keys_r, char **error_r)
{
    *keys_r = NULL;
    if (v == NULL || key_ids == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault or IDs");
    int ret = check_scope(source_kme_id, master_sae_id, n, error_r);
    if (ret != 0)
        return ret;
    size_t id_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!kme_vault_id_ok(key_ids[i], KME_VAULT_MAX_ID_LEN))
            return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                                  "key ID %zu must be 1..%d visible ASCII "
                                  "characters",
                                  i, KME_VAULT_MAX_ID_LEN);
        id_bytes += strlen(key_ids[i]) + 1;
    }
    size_t cap = n * 32; /* grows when keys are longer than 256 bits */
    struct kme_vault_keys *k = result_new(key_ids, n, id_bytes, cap);
    size_t *off = calloc(n, sizeof(*off));
    if (k == NULL || off == NULL) {
        kme_vault_keys_free(&k);
        free(off);
        return KME_VAULT_ENOMEM;
    }
    int kind = kind_of(source_kme_id);
    struct kme_vault_conn *c = kme_vault_reader_get(v);
    /* One snapshot for the whole batch; one row needs no transaction. */
    if (n > 1)
        ret = kme_vault_exec_stmt(c, KV_BEGIN_READ, error_r);
    if (ret == 0)
        ret = get_rows(v, c, kind, source_kme_id, master_sae_id, k, off, &cap,
                       error_r);
    if (n > 1 && ret == 0)
        ret = kme_vault_exec_stmt(c, KV_COMMIT, error_r);
    if (ret != 0)
        kme_vault_rollback(c);
    kme_vault_reader_put(v, c);
    /* total_len must describe the whole block for the wipe in _free. */
    if (ret != 0) {
        OPENSSL_cleanse(k->material, cap);
        kme_vault_keys_free(&k);
        free(off);
        return ret;
    }
    for (size_t i = 0; i < n; i++)
        if (k->keys[i].len > 0)
            k->keys[i].bytes = k->material + off[i];
    free(off);
    /* Wipe the unused tail now, so that _free's wipe of total_len covers
     * every byte that ever held a key. */
    OPENSSL_cleanse(k->material + k->total_len, cap - k->total_len);
    *keys_r = k;
    return 0;
}

int kme_vault_key_get(kme_vault *v, const char *source_kme_id,
                      const char *master_sae_id, const char *key_id,
                      uint8_t **bytes_r, size_t *len_r, char **error_r)
{
    *bytes_r = NULL;
    *len_r = 0;
    struct kme_vault_keys *k = NULL;
    const char *ids[1] = {key_id};
    int ret = kme_vault_keys_get(v, source_kme_id, master_sae_id,
                                 key_id != NULL ? ids : NULL, 1, &k, error_r);
    if (ret != 0 || k == NULL)
        return ret;
    if (k->found == 0 || k->keys[0].len == 0) {
        kme_vault_keys_free(&k);
        return kme_vault_fail(error_r, KME_VAULT_ENOTFOUND,
                              "key %s of %s is not in the vault", key_id,
                              source_kme_id);
    }
    uint8_t *b = malloc(k->keys[0].len);
    if (b == NULL) {
        kme_vault_keys_free(&k);
        return KME_VAULT_ENOMEM;
    }
    memcpy(b, k->keys[0].bytes, k->keys[0].len);
    *bytes_r = b;
    *len_r = k->keys[0].len;
    kme_vault_keys_free(&k);
    return 0;
}

/* ---- local keys ------------------------------------------------------------- */

static void key_at_result(const void *src, size_t i, const char **id_r,
                          const uint8_t **bytes_r, size_t *len_r)
{
    const struct kme_vault_key *k = &((const struct kme_vault_keys *)src)->keys[i];
    *id_r = k->key_id;
    *bytes_r = k->bytes;
    *len_r = k->len;
}

int kme_vault_local_new(kme_vault *v, const char *owner, size_t n,
                        size_t key_len, struct kme_vault_keys **keys_r,
                        char **error_r)
{
    *keys_r = NULL;
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    int ret = check_scope(KME_VAULT_LOCAL_SOURCE, owner, n, error_r);
    if (ret != 0)
        return ret;
    if (key_len == 0 || key_len > KME_VAULT_MAX_KEY_LEN)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "key length %zu (1..%d bytes)", key_len,
                              KME_VAULT_MAX_KEY_LEN);
    if (key_len * n > KME_VAULT_MAX_BATCH_BYTES) /* n <= 1e5, no overflow */
        return kme_vault_fail(error_r, KME_VAULT_ETOOBIG,
                              "%zu key bytes in one call (at most %u)",
                              key_len * n, KME_VAULT_MAX_BATCH_BYTES);
    struct kme_vault_keys *k = result_new(NULL, n, n * 37, n * key_len);
    if (k == NULL)
        return KME_VAULT_ENOMEM;
    k->total_len = n * key_len;
    if (RAND_bytes(k->material, (int)k->total_len) != 1)
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                             "random generator failed");
    for (size_t i = 0; i < n && ret == 0; i++) {
        char *id = k->ids + 37 * i;
        if (kme_vault_uuid4(id) != 0)
            ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                                 "random generator failed");
        k->keys[i].key_id = id;
        k->keys[i].bytes = k->material + key_len * i;
        k->keys[i].len = key_len;
    }
    k->found = n;
    /* A UUID collision with an existing row would surface as
     * KME_VAULT_ECONFLICT (the bytes differ): never a shared key. */
    if (ret == 0)
        ret = put_rows(v, KME_VAULT_KIND_LOCAL, KME_VAULT_LOCAL,
                       KME_VAULT_LOCAL_SOURCE, owner, key_at_result, k, n,
                       key_len, error_r);
    if (ret != 0) {
        kme_vault_keys_free(&k);
        return ret;
    }
    *keys_r = k;
    return 0;
}
