/* Helpers shared by the mime unit tests (header-only, static). */
#ifndef QUMAIL_MIME_TEST_UTIL_H
#define QUMAIL_MIME_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "mime.h"

static inline unsigned char *tu_read_file(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (buf == NULL || n != (size_t)st.st_size) {
        free(buf);
        return NULL;
    }
    *len_r = n;
    return buf;
}

/* Deterministic pseudo-random bytes (SHA-256 counter mode over a seed). */
static inline void tu_fill(unsigned char *out, size_t n, const char *seed)
{
    unsigned char block[32], in[128 + 8];
    size_t sl = strlen(seed) < 128 ? strlen(seed) : 128;
    memcpy(in, seed, sl);
    uint64_t ctr = 0;
    while (n > 0) {
        memcpy(in + sl, &ctr, sizeof(ctr));
        if (EVP_Digest(in, sl + 8, block, NULL, EVP_sha256(), NULL) != 1)
            abort();
        size_t take = n < sizeof(block) ? n : sizeof(block);
        memcpy(out, block, take);
        out += take;
        n -= take;
        ctr++;
    }
}

/* A key set: n keys, ids "<prefix>-<i>", bytes from one pool. */
struct tu_keys {
    struct mime_key *keys;
    size_t n;
    unsigned char *pool;
    size_t pool_len;
    char **ids;
};

/* Splits total_bytes into keys of at most max_key bytes each. */
static inline void tu_keys_make(struct tu_keys *k, size_t total_bytes,
                                size_t max_key, const char *prefix)
{
    k->n = (total_bytes + max_key - 1) / max_key;
    k->keys = calloc(k->n, sizeof(*k->keys));
    k->ids = calloc(k->n, sizeof(char *));
    k->pool = malloc(total_bytes);
    k->pool_len = total_bytes;
    tu_fill(k->pool, total_bytes, prefix);
    size_t off = 0;
    for (size_t i = 0; i < k->n; i++) {
        size_t len = total_bytes - off < max_key ? total_bytes - off : max_key;
        if (asprintf(&k->ids[i], "%s-%zu", prefix, i) < 0)
            abort();
        k->keys[i] = (struct mime_key){.key_id = k->ids[i], .key = k->pool + off, .key_len = len};
        off += len;
    }
}

/* Keys for a message of size octets under alg. */
static inline void tu_keys_for(struct tu_keys *k, enum mime_alg alg,
                               uint64_t size, size_t max_key,
                               const char *prefix)
{
    uint64_t bits = 0;
    if (mime_key_bits_needed(alg, size, &bits) != 0)
        abort();
    tu_keys_make(k, (size_t)(bits / 8), max_key, prefix);
}

static inline void tu_keys_free(struct tu_keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->ids[i]);
    free(k->ids);
    free(k->keys);
    free(k->pool);
    memset(k, 0, sizeof(*k));
}

static inline struct mime_encrypt_params tu_params(enum mime_alg alg)
{
    struct mime_encrypt_params p = {
        .algorithm = alg,
        .source_kme_id = "KME_A",
        .master_sae_id = "SAE_ALICE",
        .slave_sae_id = "SAE_BOB",
        .protect_subject = 1,
        .subject_placeholder = NULL,
    };
    return p;
}

/* Finds the outer header block (up to the first empty line). */
static inline size_t tu_header_len(const unsigned char *m, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (m[i] == '\n' && (m[i + 1] == '\n' ||
                             (i + 2 < len && m[i + 1] == '\r' &&
                              m[i + 2] == '\n')))
            return i + 1;
    }
    return len;
}

/* Case-insensitive search for "\n<name>:" (or at the start). */
static inline int tu_has_field(const unsigned char *m, size_t hl,
                               const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + n < hl; i++) {
        if ((i == 0 || m[i - 1] == '\n') && strncasecmp((const char *)m + i,
                                                       name, n) == 0 &&
            m[i + n] == ':')
            return 1;
    }
    return 0;
}

#endif
