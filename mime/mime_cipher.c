/* The crypto engine: OTP-POLY1305 and AES-256-GCM over a key list.
 *
 * OTP-POLY1305: key stream = the keys' octets in list order. Octets 0..31
 * are the one-time Poly1305 key; octet 32 onward is XORed with the
 * plaintext. Tag = Poly1305 over the RFC 8439 section 2.8 layout with the
 * control text as AAD and the PLAINTEXT in the ciphertext's place:
 *   control || pad16 || plaintext || pad16 || le64(|control|) || le64(|pt|)
 * so every pad octet is bound too: a wrong key octet anywhere changes the
 * decrypted plaintext and so the tag (FORMAT-SPEC.md 4.2).
 * AES-256-GCM: key = HKDF-SHA256(IKM = the 256-bit QKD key, no salt,
 * info = MIME_HKDF_INFO); nonce from the control part; AAD = control text. */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "mime_internal.h"

#define MIME_HKDF_INFO "QuMail QKD-MIME v2 AES-256-GCM message key"
#define SCRATCH_LEN ((size_t)64 * 1024)

struct mime_cipher {
    enum mime_alg alg;
    int encrypt;
    struct mime_keystream ks;     /* OTP: positioned after the MAC key */
    EVP_MAC_CTX *mac;             /* OTP */
    uint64_t control_len;         /* OTP: MAC length block */
    uint64_t text_len;            /* OTP: plaintext octets MACed so far */
    EVP_CIPHER_CTX *gcm;          /* AES */
    unsigned char *scratch;       /* auth_only plaintext, wiped */
    size_t scratch_used;          /* the most of it ever written */
};

/* Copies the next n key-stream octets into out. */
static void ks_take(struct mime_keystream *ks, unsigned char *out, size_t n)
{
    while (n > 0) {
        const struct mime_piece *k = &ks->keys[ks->idx];
        size_t avail = k->len - ks->off;
        size_t take = n < avail ? n : avail;
        memcpy(out, k->p + ks->off, take);
        out += take;
        n -= take;
        ks->off += take;
        if (ks->off == k->len) {
            ks->idx++;
            ks->off = 0;
        }
    }
}

/* 32-octet vectors (two SSE2 registers where there is no AVX). */
typedef unsigned char xor_vec __attribute__((vector_size(32)));

static void xor_into(unsigned char *out, const unsigned char *in,
                     const unsigned char *key, size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        xor_vec a0, a1, k0, k1;
        memcpy(&a0, in + i, 32);
        memcpy(&a1, in + i + 32, 32);
        memcpy(&k0, key + i, 32);
        memcpy(&k1, key + i + 32, 32);
        a0 ^= k0;
        a1 ^= k1;
        memcpy(out + i, &a0, 32);
        memcpy(out + i + 32, &a1, 32);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a, b;
        memcpy(&a, in + i, 8);
        memcpy(&b, key + i, 8);
        a ^= b;
        memcpy(out + i, &a, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ key[i];
}

/* XORs n octets of in with the key stream into out. */
static void ks_xor(struct mime_keystream *ks, const unsigned char *in,
                   unsigned char *out, size_t n)
{
    while (n > 0) {
        const struct mime_piece *k = &ks->keys[ks->idx];
        size_t avail = k->len - ks->off;
        size_t take = n < avail ? n : avail;
        xor_into(out, in, k->p + ks->off, take);
        in += take;
        out += take;
        n -= take;
        ks->off += take;
        if (ks->off == k->len) {
            ks->idx++;
            ks->off = 0;
        }
    }
}

static int otp_init(struct mime_cipher *c, const char *control,
                    size_t control_len, char **error_r)
{
    unsigned char mac_key[32];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    if (mac == NULL)
        return mime_fail(error_r, MIME_ERR_CRYPTO, "Poly1305 unavailable");
    c->mac = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    if (c->mac == NULL)
        return mime_fail(error_r, MIME_ERR_NOMEM, "Poly1305 context");
    ks_take(&c->ks, mac_key, sizeof(mac_key));
    static const unsigned char zeros[16];
    int ok = EVP_MAC_init(c->mac, mac_key, sizeof(mac_key), NULL);
    OPENSSL_cleanse(mac_key, sizeof(mac_key));
    c->control_len = control_len;
    if (!ok ||
        !EVP_MAC_update(c->mac, (const unsigned char *)control, control_len) ||
        !EVP_MAC_update(c->mac, zeros, (16 - control_len % 16) % 16))
        return mime_fail(error_r, MIME_ERR_CRYPTO, "Poly1305 init");
    return MIME_OK;
}

static int aes_init(struct mime_cipher *c, const unsigned char *nonce,
                    const char *control, size_t control_len, char **error_r)
{
    unsigned char ikm[32], key[32];
    int rc = MIME_ERR_CRYPTO;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);

    ks_take(&c->ks, ikm, sizeof(ikm));
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm,
                                          sizeof(ikm)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                          (void *)MIME_HKDF_INFO,
                                          strlen(MIME_HKDF_INFO)),
        OSSL_PARAM_construct_end(),
    };
    if (kctx == NULL || EVP_KDF_derive(kctx, key, sizeof(key), params) != 1)
        goto out;
    c->gcm = EVP_CIPHER_CTX_new();
    if (c->gcm == NULL)
        goto out;
    int (*init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *,
                const unsigned char *, const unsigned char *) =
        c->encrypt ? EVP_EncryptInit_ex : EVP_DecryptInit_ex;
    int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *,
                  const unsigned char *, int) =
        c->encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;
    int outl;
    if (init(c->gcm, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c->gcm, EVP_CTRL_GCM_SET_IVLEN, MIME_NONCE_LEN,
                            NULL) != 1 ||
        init(c->gcm, NULL, NULL, key, nonce) != 1)
        goto out;
    /* AAD in int-sized pieces. */
    for (size_t off = 0; off < control_len;) {
        size_t n = control_len - off > (1u << 30) ? (1u << 30)
                                                  : control_len - off;
        if (update(c->gcm, NULL, &outl, (const unsigned char *)control + off,
                   (int)n) != 1)
            goto out;
        off += n;
    }
    rc = MIME_OK;
out:
    OPENSSL_cleanse(ikm, sizeof(ikm));
    OPENSSL_cleanse(key, sizeof(key));
    EVP_KDF_CTX_free(kctx);
    if (rc != MIME_OK)
        return mime_fail(error_r, rc, "AES-256-GCM setup failed");
    return rc;
}

int mime_cipher_new(enum mime_alg alg, int encrypt,
                    const struct mime_piece *keys, size_t n_keys,
                    const unsigned char *nonce, const char *control,
                    size_t control_len, struct mime_cipher **c_r,
                    char **error_r)
{
    struct mime_cipher *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return MIME_ERR_NOMEM;
    c->alg = alg;
    c->encrypt = encrypt;
    c->ks = (struct mime_keystream){keys, n_keys, 0, 0};
    int rc;
    if (alg == MIME_ALG_OTP_POLY1305)
        rc = otp_init(c, control, control_len, error_r);
    else if (alg == MIME_ALG_AES_256_GCM)
        rc = aes_init(c, nonce, control, control_len, error_r);
    else
        rc = mime_fail(error_r, MIME_ERR_UNSUPPORTED_ALGORITHM, "algorithm");
    if (rc != MIME_OK) {
        mime_cipher_free(&c);
        return rc;
    }
    *c_r = c;
    return MIME_OK;
}

static int gcm_update(struct mime_cipher *c, const unsigned char *in,
                      unsigned char *out, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n, outl;
        int ok = c->encrypt ? EVP_EncryptUpdate(c->gcm, out, &outl, in, chunk)
                            : EVP_DecryptUpdate(c->gcm, out, &outl, in, chunk);
        if (ok != 1 || outl != chunk)
            return MIME_ERR_CRYPTO;
        in += chunk;
        out += chunk;
        n -= (size_t)chunk;
    }
    return MIME_OK;
}

int mime_cipher_update(struct mime_cipher *c, const unsigned char *in,
                       unsigned char *out, size_t n)
{
    if (c->alg == MIME_ALG_AES_256_GCM)
        return gcm_update(c, in, out, n);
    /* The MAC is over the plaintext: in before the XOR when encrypting
     * (in may equal out), out after it when decrypting. */
    c->text_len += n;
    if (c->encrypt && EVP_MAC_update(c->mac, in, n) != 1)
        return MIME_ERR_CRYPTO;
    ks_xor(&c->ks, in, out, n);
    if (!c->encrypt && EVP_MAC_update(c->mac, out, n) != 1)
        return MIME_ERR_CRYPTO;
    return MIME_OK;
}

int mime_cipher_transform_only(struct mime_cipher *c, const unsigned char *in,
                                unsigned char *out, size_t n)
{
    if (c->alg == MIME_ALG_AES_256_GCM)
        return gcm_update(c, in, out, n);
    ks_xor(&c->ks, in, out, n);
    return MIME_OK;
}

int mime_cipher_auth_only(struct mime_cipher *c, const unsigned char *in,
                          size_t n)
{
    /* Both algorithms need the plaintext for the tag: decrypt into a
     * scratch buffer that is wiped when the cipher is freed. */
    if (c->scratch == NULL && (c->scratch = malloc(SCRATCH_LEN)) == NULL)
        return MIME_ERR_NOMEM;
    while (n > 0) {
        size_t chunk = n < SCRATCH_LEN ? n : SCRATCH_LEN;
        if (chunk > c->scratch_used)
            c->scratch_used = chunk;
        int rc = mime_cipher_update(c, in, c->scratch, chunk);
        if (rc != MIME_OK)
            return rc;
        in += chunk;
        n -= chunk;
    }
    return MIME_OK;
}

int mime_cipher_final(struct mime_cipher *c, unsigned char tag[MIME_TAG_LEN])
{
    if (c->alg == MIME_ALG_OTP_POLY1305) {
        static const unsigned char zeros[16];
        unsigned char lens[16], mac[MIME_TAG_LEN];
        size_t outl = 0;
        for (unsigned i = 0; i < 8; i++) { /* le64 lengths */
            lens[i] = (unsigned char)(c->control_len >> (8 * i));
            lens[8 + i] = (unsigned char)(c->text_len >> (8 * i));
        }
        if (EVP_MAC_update(c->mac, zeros, (16 - c->text_len % 16) % 16) != 1 ||
            EVP_MAC_update(c->mac, lens, sizeof(lens)) != 1 ||
            EVP_MAC_final(c->mac, mac, &outl, sizeof(mac)) != 1 ||
            outl != MIME_TAG_LEN)
            return MIME_ERR_CRYPTO;
        int rc = MIME_OK;
        if (c->encrypt)
            memcpy(tag, mac, MIME_TAG_LEN);
        else if (CRYPTO_memcmp(mac, tag, MIME_TAG_LEN) != 0)
            rc = MIME_ERR_AUTH_FAILED;
        OPENSSL_cleanse(mac, sizeof(mac));
        return rc;
    }
    int outl = 0;
    unsigned char dummy[16];
    if (c->encrypt) {
        if (EVP_EncryptFinal_ex(c->gcm, dummy, &outl) != 1 ||
            EVP_CIPHER_CTX_ctrl(c->gcm, EVP_CTRL_GCM_GET_TAG, MIME_TAG_LEN,
                                tag) != 1)
            return MIME_ERR_CRYPTO;
        return MIME_OK;
    }
    if (EVP_CIPHER_CTX_ctrl(c->gcm, EVP_CTRL_GCM_SET_TAG, MIME_TAG_LEN,
                            tag) != 1)
        return MIME_ERR_CRYPTO;
    return EVP_DecryptFinal_ex(c->gcm, dummy, &outl) == 1
               ? MIME_OK
               : MIME_ERR_AUTH_FAILED;
}

void mime_cipher_free(struct mime_cipher **p)
{
    if (p == NULL || *p == NULL)
        return;
    struct mime_cipher *c = *p;
    EVP_MAC_CTX_free(c->mac);       /* cleanses its key state */
    EVP_CIPHER_CTX_free(c->gcm);    /* likewise */
    if (c->scratch != NULL) {
        OPENSSL_cleanse(c->scratch, c->scratch_used);
        free(c->scratch);
    }
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
    *p = NULL;
}
