/* Module-wide basics: one-time initialisation, error texts, algorithm and
 * level names, the key budget, the list-backed key lookup. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>
#include <openssl/crypto.h>

#include "mime_internal.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_gmime(void)
{
    g_mime_init();
}

int mime_init(void)
{
    if (pthread_once(&init_once, init_gmime) != 0)
        return MIME_ERR_CRYPTO;
    return MIME_OK;
}

static const char *const error_text[] = {
    [0] = "success",
    [1] = "not a QKD-encrypted message",
    [2] = "malformed QKD-encrypted message",
    [3] = "unsupported format version",
    [4] = "unsupported algorithm",
    [5] = "key missing",
    [6] = "key has the wrong size",
    [7] = "authentication failed: message altered or wrong key",
    [8] = "not enough key material",
    [9] = "more key material than needed",
    [10] = "duplicate key_ID",
    [11] = "invalid argument",
    [12] = "message too large",
    [13] = "I/O error",
    [14] = "cryptographic library failure",
    [15] = "out of memory",
};

const char *mime_strerror(int err)
{
    if (err > 0 || -err >= (int)(sizeof(error_text) / sizeof(error_text[0])))
        return "unknown mime error";
    return error_text[-err];
}

int mime_fail(char **error_r, int err, const char *fmt, ...)
{
    if (error_r != NULL && *error_r == NULL) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(error_r, fmt, ap) < 0)
            *error_r = NULL;
        va_end(ap);
    }
    return err;
}

int mime_id_valid(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e)
            return 0;
        if (n >= MIME_MAX_ID_LEN)
            return 0;
    }
    return n > 0;
}

const char *mime_alg_name(enum mime_alg alg)
{
    switch (alg) {
    case MIME_ALG_NONE: return "none";
    case MIME_ALG_OTP_POLY1305: return "OTP-POLY1305";
    case MIME_ALG_AES_256_GCM: return "AES-256-GCM";
    }
    return NULL;
}

int mime_alg_parse(const char *name, enum mime_alg *alg_r)
{
    if (name == NULL)
        return MIME_ERR_INVALID_ARG;
    if (strcmp(name, "OTP-POLY1305") == 0 || strcmp(name, "otp") == 0)
        *alg_r = MIME_ALG_OTP_POLY1305;
    else if (strcmp(name, "AES-256-GCM") == 0 || strcmp(name, "aes") == 0)
        *alg_r = MIME_ALG_AES_256_GCM;
    else
        return MIME_ERR_UNSUPPORTED_ALGORITHM;
    return MIME_OK;
}

int mime_level_parse(const char *name, enum mime_level *level_r)
{
    static const struct { const char *name; enum mime_level level; } t[] = {
        {"none", MIME_LEVEL_NONE}, {"otp", MIME_LEVEL_OTP},
        {"aes", MIME_LEVEL_AES}, {"auto", MIME_LEVEL_AUTO},
    };
    for (size_t i = 0; name != NULL && i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(name, t[i].name) == 0) {
            *level_r = t[i].level;
            return MIME_OK;
        }
    }
    return MIME_ERR_INVALID_ARG;
}

enum mime_alg mime_level_algorithm(enum mime_level level,
                                   uint64_t auto_threshold,
                                   uint64_t message_size)
{
    switch (level) {
    case MIME_LEVEL_OTP: return MIME_ALG_OTP_POLY1305;
    case MIME_LEVEL_AES: return MIME_ALG_AES_256_GCM;
    case MIME_LEVEL_AUTO:
        return message_size <= auto_threshold ? MIME_ALG_OTP_POLY1305
                                              : MIME_ALG_AES_256_GCM;
    case MIME_LEVEL_NONE: break;
    }
    return MIME_ALG_NONE;
}

int mime_key_bits_needed(enum mime_alg alg, uint64_t message_size,
                         uint64_t *bits_r)
{
    if (message_size > MIME_MAX_MESSAGE_SIZE)
        return MIME_ERR_TOO_LARGE;
    switch (alg) {
    case MIME_ALG_NONE: *bits_r = 0; return MIME_OK;
    case MIME_ALG_OTP_POLY1305:
        *bits_r = message_size * 8u + MIME_KEY_BITS_MAC; /* < 2^40: no wrap */
        return MIME_OK;
    case MIME_ALG_AES_256_GCM: *bits_r = MIME_KEY_BITS_AES; return MIME_OK;
    }
    return MIME_ERR_UNSUPPORTED_ALGORITHM;
}

/* The lookup name of list entry k: its key_ID, or "<KSID> <index>". */
int mime_key_list_match(const struct mime_key *k, const char *name)
{
    if (k->ksid == NULL)
        return k->key_id != NULL && strcmp(k->key_id, name) == 0;
    char ksid[MIME_KSID_LEN + 1];
    uint64_t index;
    return mime_key_name_parse(name, ksid, &index) == 1 &&
           strcmp(k->ksid, ksid) == 0 && k->index == index;
}

int mime_key_list_lookup(void *ctx, const char *name,
                         const unsigned char **key_r, size_t *key_len_r)
{
    const struct mime_key_list *list = ctx;
    for (size_t i = 0; list != NULL && name != NULL && i < list->n_keys; i++) {
        if (mime_key_list_match(&list->keys[i], name)) {
            *key_r = list->keys[i].key;
            *key_len_r = list->keys[i].key_len;
            return MIME_OK;
        }
    }
    return MIME_ERR_KEY_MISSING;
}

/* 1 for the code points mime_escape() hides although they are valid UTF-8:
 * C1 controls, line/paragraph separators, bidirectional controls. */
static int hidden_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x061c || cp == 0x200e || cp == 0x200f ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

char *mime_escape(const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = data != NULL ? data : (const unsigned char *)"";
    if (len > (SIZE_MAX - 1) / 4)
        return NULL;
    char *out = malloc(len * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t l = mime_utf8_seq(s + i, len - i, &cp);
        if (l == 1 && cp >= 0x20 && cp < 0x7f && cp != '\\') {
            *o++ = (char)cp;
        } else if (l == 1 && cp == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else if (l > 1 && !hidden_cp(cp)) {
            memcpy(o, s + i, l);
            o += l;
        } else {
            size_t n = l > 1 ? l : 1;
            for (size_t k = 0; k < n; k++) {
                *o++ = '\\';
                *o++ = 'x';
                *o++ = hex[s[i + k] >> 4];
                *o++ = hex[s[i + k] & 15];
            }
            i += n;
            continue;
        }
        i += l;
    }
    *o = '\0';
    return out;
}

void mime_plaintext_free(unsigned char **p, size_t len)
{
    if (p == NULL || *p == NULL)
        return;
    OPENSSL_cleanse(*p, len);
    free(*p);
    *p = NULL;
}
