/* Per-message metadata rows: opaque blobs (plaintext size, BODYSTRUCTURE,
 * ENVELOPE, header fields) under the caller's message identity, sealed
 * with the metadata sub-key and the identity as AAD. One statement per
 * call (autocommit): a put is durable when it returns. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vault_internal.h"

static int check_id(const char *msg_id, char **error_r)
{
    if (!kme_vault_id_ok(msg_id, KME_VAULT_MAX_MSG_ID_LEN))
        return kme_vault_fail(error_r, KME_VAULT_EINVAL,
                              "message identity must be 1..%d visible ASCII "
                              "characters",
                              KME_VAULT_MAX_MSG_ID_LEN);
    return 0;
}

int kme_vault_meta_put(kme_vault *v, const char *msg_id, const void *data,
                       size_t len, char **error_r)
{
    if (v == NULL || (data == NULL && len > 0))
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault or data");
    int ret = check_id(msg_id, error_r);
    if (ret != 0)
        return ret;
    if (len > v->max_meta)
        return kme_vault_fail(error_r, KME_VAULT_ETOOBIG,
                              "metadata of %zu bytes (limit %zu)", len,
                              v->max_meta);
    size_t slen = len + KME_VAULT_SEAL_OVERHEAD;
    uint8_t *sealed = malloc(slen);
    EVP_CIPHER_CTX *enc = kme_vault_cipher(v->aes, v->key_meta, true);
    uint8_t aad[KME_VAULT_META_AAD_MAX];
    size_t aad_len = kme_vault_meta_aad(aad, msg_id);
    if (sealed == NULL)
        ret = KME_VAULT_ENOMEM;
    else if (enc == NULL ||
             kme_vault_seal(enc, aad, aad_len, data, len, sealed) != 0)
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                             "metadata encryption failed");
    EVP_CIPHER_CTX_free(enc);
    if (ret == 0) {
        struct kme_vault_conn *c = kme_vault_writer_get(v);
        sqlite3_stmt *q = c->st[KV_META_PUT];
        sqlite3_bind_text(q, 1, msg_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, (sqlite3_int64)time(NULL));
        sqlite3_bind_blob(q, 3, sealed, (int)slen, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        if (rc != SQLITE_DONE)
            ret = kme_vault_fail_db(c->db, rc, error_r, "metadata put");
        sqlite3_reset(q);
        sqlite3_clear_bindings(q);
        kme_vault_writer_put(v, c);
    }
    free(sealed); /* ciphertext: no wipe needed */
    return ret;
}

int kme_vault_meta_get(kme_vault *v, const char *msg_id, uint8_t **data_r,
                       size_t *len_r, char **error_r)
{
    *data_r = NULL;
    *len_r = 0;
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    int ret = check_id(msg_id, error_r);
    if (ret != 0)
        return ret;
    EVP_CIPHER_CTX *dec = kme_vault_cipher(v->aes, v->key_meta, false);
    if (dec == NULL)
        return kme_vault_fail(error_r, KME_VAULT_ECRYPTO, "cipher setup");
    uint8_t aad[KME_VAULT_META_AAD_MAX];
    size_t aad_len = kme_vault_meta_aad(aad, msg_id);
    uint8_t *out = NULL;
    size_t plen = 0;
    struct kme_vault_conn *c = kme_vault_reader_get(v);
    sqlite3_stmt *q = c->st[KV_META_GET];
    sqlite3_bind_text(q, 1, msg_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const uint8_t *sealed = sqlite3_column_blob(q, 0);
        size_t slen = (size_t)sqlite3_column_bytes(q, 0);
        plen = slen >= KME_VAULT_SEAL_OVERHEAD
                   ? slen - KME_VAULT_SEAL_OVERHEAD
                   : 0;
        out = malloc(plen > 0 ? plen : 1);
        if (out == NULL)
            ret = KME_VAULT_ENOMEM;
        else if (slen < KME_VAULT_SEAL_OVERHEAD ||
                 kme_vault_unseal(dec, aad, aad_len, sealed, slen, out) != 0)
            ret = kme_vault_fail(error_r, KME_VAULT_EAUTH,
                                 "metadata of %s fails authentication",
                                 msg_id);
    } else if (rc == SQLITE_DONE) {
        ret = kme_vault_fail(error_r, KME_VAULT_ENOTFOUND,
                             "no metadata for %s", msg_id);
    } else {
        ret = kme_vault_fail_db(c->db, rc, error_r, "metadata get");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    kme_vault_reader_put(v, c);
    EVP_CIPHER_CTX_free(dec);
    if (ret != 0) {
        free(out); /* unseal wiped it on failure */
        return ret;
    }
    *data_r = out;
    *len_r = plen;
    return 0;
}

int kme_vault_meta_delete(kme_vault *v, const char *msg_id, char **error_r)
{
    if (v == NULL)
        return kme_vault_fail(error_r, KME_VAULT_EINVAL, "no vault");
    int ret = check_id(msg_id, error_r);
    if (ret != 0)
        return ret;
    struct kme_vault_conn *c = kme_vault_writer_get(v);
    sqlite3_stmt *q = c->st[KV_META_DELETE];
    sqlite3_bind_text(q, 1, msg_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE)
        ret = kme_vault_fail_db(c->db, rc, error_r, "metadata delete");
    else if (sqlite3_changes(c->db) == 0)
        ret = kme_vault_fail(error_r, KME_VAULT_ENOTFOUND,
                             "no metadata for %s", msg_id);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    kme_vault_writer_put(v, c);
    return ret;
}
