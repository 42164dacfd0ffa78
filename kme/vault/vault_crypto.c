/* Row encryption of the key vault: HKDF sub-keys, AES-256-GCM seal/unseal
 * with a fresh random nonce per row and the row's identity as AAD, and the
 * identity encodings. A GCM context is keyed once per call and reused for
 * every row of a batch (only the nonce changes), which keeps a batch of
 * 100,000 keys cheap. */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "vault_internal.h"

int kme_vault_derive(const uint8_t master[KME_VAULT_MASTER_LEN],
                     const char *label, uint8_t out[KME_VAULT_SUBKEY_LEN])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (kctx == NULL)
        return KME_VAULT_ECRYPTO;
    static const char salt[] = "qumail-vault";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master,
                                          KME_VAULT_MASTER_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
                                          sizeof(salt) - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label,
                                          strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kctx, out, KME_VAULT_SUBKEY_LEN, params);
    EVP_KDF_CTX_free(kctx);
    return ok == 1 ? 0 : KME_VAULT_ECRYPTO;
}

EVP_CIPHER_CTX *kme_vault_cipher(const EVP_CIPHER *aes,
                                 const uint8_t key[KME_VAULT_SUBKEY_LEN],
                                 bool enc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex(ctx, aes, NULL, key, NULL, enc ? 1 : 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int kme_vault_seal(EVP_CIPHER_CTX *ctx, const uint8_t *aad, size_t aad_len,
                   const uint8_t *pt, size_t pt_len, uint8_t *out)
{
    uint8_t *nonce = out + 1;
    uint8_t *ct = nonce + KME_VAULT_NONCE_LEN;
    int n = 0, fin = 0;
    out[0] = KME_VAULT_ROW_FORMAT;
    if (pt_len > INT32_MAX || aad_len > INT32_MAX)
        return KME_VAULT_EINVAL;
    if (RAND_bytes(nonce, KME_VAULT_NONCE_LEN) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, out, 1) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
        EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) != 1 ||
        EVP_EncryptFinal_ex(ctx, ct + n, &fin) != 1 ||
        (size_t)n + (size_t)fin != pt_len ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KME_VAULT_TAG_LEN,
                            ct + pt_len) != 1)
        return KME_VAULT_ECRYPTO;
    return 0;
}

int kme_vault_unseal(EVP_CIPHER_CTX *ctx, const uint8_t *aad, size_t aad_len,
                     const uint8_t *in, size_t in_len, uint8_t *out)
{
    if (in_len < KME_VAULT_SEAL_OVERHEAD || in[0] != KME_VAULT_ROW_FORMAT ||
        in_len - KME_VAULT_SEAL_OVERHEAD > INT32_MAX || aad_len > INT32_MAX)
        return KME_VAULT_EAUTH;
    size_t ct_len = in_len - KME_VAULT_SEAL_OVERHEAD;
    const uint8_t *nonce = in + 1;
    const uint8_t *ct = nonce + KME_VAULT_NONCE_LEN;
    uint8_t tag[KME_VAULT_TAG_LEN];
    memcpy(tag, ct + ct_len, sizeof(tag));
    int n = 0, fin = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, in, 1) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, ct, (int)ct_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KME_VAULT_TAG_LEN,
                            tag) != 1)
        return KME_VAULT_ECRYPTO;
    if (EVP_DecryptFinal_ex(ctx, out + n, &fin) != 1) {
        OPENSSL_cleanse(out, ct_len);
        return KME_VAULT_EAUTH;
    }
    return 0;
}

static size_t put_str8(uint8_t *p, const char *s)
{
    size_t len = strlen(s); /* <= KME_VAULT_MAX_ID_LEN, checked by callers */
    p[0] = (uint8_t)len;
    for (size_t i = 0; i < len; i++) /* not a C string: no NUL */
        p[1 + i] = (uint8_t)s[i];
    return 1 + len;
}

/* Labels end with a NUL so that no label is a prefix of another's
 * encoding. */
static const char key_label[] = "qumail-vault key row v1";
static const char meta_label[] = "qumail-vault metadata row v1";

size_t kme_vault_key_aad(uint8_t out[KME_VAULT_KEY_AAD_MAX], int kind,
                         int origin, const char *source, const char *master,
                         const char *key_id)
{
    size_t off = sizeof(key_label);
    memcpy(out, key_label, sizeof(key_label));
    out[off++] = (uint8_t)kind;
    out[off++] = (uint8_t)origin;
    off += put_str8(out + off, source);
    off += put_str8(out + off, master);
    off += put_str8(out + off, key_id);
    return off;
}

size_t kme_vault_meta_aad(uint8_t out[KME_VAULT_META_AAD_MAX],
                          const char *msg_id)
{
    size_t off = sizeof(meta_label);
    size_t len = strlen(msg_id); /* <= KME_VAULT_MAX_MSG_ID_LEN */
    memcpy(out, meta_label, sizeof(meta_label));
    out[off++] = (uint8_t)(len >> 8);
    out[off++] = (uint8_t)len;
    for (size_t i = 0; i < len; i++) /* not a C string: no NUL */
        out[off + i] = (uint8_t)msg_id[i];
    return off + len;
}

int kme_vault_uuid4(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return KME_VAULT_ECRYPTO;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

bool kme_vault_id_ok(const char *s, size_t max)
{
    if (s == NULL)
        return false;
    size_t i = 0;
    for (; s[i] != '\0'; i++)
        if (i >= max || s[i] < 0x21 || s[i] > 0x7e)
            return false;
    return i > 0;
}
