/* Encryption: original message -> RFC 1847 multipart/encrypted message.
 * Streams the plaintext in MIME_CHUNK pieces: read, encrypt in place, base64
 * straight into the writer's buffer, write. Layout in FORMAT-SPEC.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gmime/gmime.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "mime_internal.h"

static int cmp_key_id(const void *a, const void *b)
{
    const struct mime_key *const *x = a, *const *y = b;
    return strcmp((*x)->key_id, (*y)->key_id);
}

/* The key list must be valid, distinct, and hold exactly `needed` bits. */
static int check_keys(const struct mime_key *keys, size_t n, uint64_t needed,
                      char **error_r)
{
    if (n == 0)
        return mime_fail(error_r, MIME_ERR_KEY_SHORT, "no keys given");
    if (n > MIME_MAX_KEYS)
        return mime_fail(error_r, MIME_ERR_TOO_LARGE, "more than %d keys",
                         MIME_MAX_KEYS);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mime_id_valid(keys[i].key_id))
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "key %zu: key_ID must be 1-%d visible ASCII "
                             "characters", i, MIME_MAX_ID_LEN);
        if (keys[i].key == NULL || keys[i].key_len == 0)
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "key %s: empty", keys[i].key_id);
        if (keys[i].key_len > MIME_MAX_MESSAGE_SIZE)
            return mime_fail(error_r, MIME_ERR_KEY_SURPLUS,
                             "key %s: larger than any message needs",
                             keys[i].key_id);
        total += (uint64_t)keys[i].key_len * 8u; /* <= 1e5 * 2^39 */
    }
    const struct mime_key **idx = malloc(n * sizeof(*idx));
    if (idx == NULL)
        return MIME_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        idx[i] = &keys[i];
    qsort(idx, n, sizeof(*idx), cmp_key_id);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(idx[i - 1]->key_id, idx[i]->key_id) == 0) {
            int rc = mime_fail(error_r, MIME_ERR_KEY_DUPLICATE,
                               "key_ID %s given twice", idx[i]->key_id);
            free(idx);
            return rc;
        }
    }
    free(idx);
    if (total < needed)
        return mime_fail(error_r, MIME_ERR_KEY_SHORT,
                         "keys hold %llu bits, the message needs %llu",
                         (unsigned long long)total,
                         (unsigned long long)needed);
    if (total > needed)
        return mime_fail(error_r, MIME_ERR_KEY_SURPLUS,
                         "keys hold %llu bits, the message needs exactly %llu;"
                         " refusing to waste key material",
                         (unsigned long long)total,
                         (unsigned long long)needed);
    return MIME_OK;
}

static int check_params(const struct mime_encrypt_params *p, char **error_r)
{
    if (p == NULL)
        return mime_fail(error_r, MIME_ERR_INVALID_ARG, "no parameters");
    if (p->algorithm != MIME_ALG_OTP_POLY1305 &&
        p->algorithm != MIME_ALG_AES_256_GCM)
        return mime_fail(error_r, MIME_ERR_UNSUPPORTED_ALGORITHM,
                         "algorithm %d", (int)p->algorithm);
    if (!mime_id_valid(p->source_kme_id) || !mime_id_valid(p->master_sae_id) ||
        !mime_id_valid(p->slave_sae_id))
        return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                         "KME and SAE ids must be 1-%d visible ASCII "
                         "characters", MIME_MAX_ID_LEN);
    if (p->subject_placeholder != NULL) {
        for (const unsigned char *s =
                 (const unsigned char *)p->subject_placeholder; *s; s++)
            if (*s < 0x20 || *s == 0x7f)
                return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                                 "control character in subject placeholder");
        if (!g_utf8_validate(p->subject_placeholder, -1, NULL) ||
            strlen(p->subject_placeholder) > 500)
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "subject placeholder: not UTF-8 or too long");
    }
    if (p->fixed_boundary != NULL) {
        size_t n = strlen(p->fixed_boundary);
        if (n == 0 || n > MIME_MAX_BOUNDARY ||
            strspn(p->fixed_boundary, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
                                      "nopqrstuvwxyz0123456789_=.-") != n)
            return mime_fail(error_r, MIME_ERR_INVALID_ARG, "bad boundary");
    }
    return MIME_OK;
}

/* Writes a raw field with its internal line breaks turned into eol. */
static int put_field_raw(struct mime_writer *w, const struct mime_field *f,
                         const char *eol)
{
    const char *p = f->raw, *end = f->raw + f->raw_len;
    int rc = MIME_OK;
    while (p < end && rc == MIME_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        size_t n = (size_t)(line_end - p);
        if (nl != NULL && n > 0 && p[n - 1] == '\r')
            n--;
        rc = mime_writer_put(w, p, n);
        if (rc == MIME_OK)
            rc = mime_writer_puts(w, eol);
        p = nl ? nl + 1 : end;
    }
    return rc;
}

static size_t longest_line(const struct mime_field *f)
{
    size_t longest = 0, cur = 0;
    for (size_t i = 0; i < f->raw_len; i++) {
        if (f->raw[i] == '\n') {
            longest = cur > longest ? cur : longest;
            cur = 0;
        } else {
            cur++;
        }
    }
    return cur > longest ? cur : longest;
}

static int put_subject(struct mime_writer *w, const char *placeholder,
                       const char *eol)
{
    int ascii = 1;
    for (const unsigned char *s = (const unsigned char *)placeholder; *s; s++)
        ascii &= *s < 0x7f;
    int rc = mime_writer_puts(w, "Subject: ");
    if (rc != MIME_OK)
        return rc;
    if (ascii) {
        rc = mime_writer_puts(w, placeholder);
    } else {
        char *enc = g_mime_utils_header_encode_text(NULL, placeholder, "utf-8");
        if (enc == NULL)
            return MIME_ERR_NOMEM;
        /* Fold only at GMime's line breaks, with our eol. */
        struct mime_field f = {enc, 0, enc, strlen(enc), enc, strlen(enc)};
        while (f.raw_len > 0 && (enc[f.raw_len - 1] == '\n' ||
                                 enc[f.raw_len - 1] == '\r'))
            f.raw_len--;
        rc = put_field_raw(w, &f, eol);
        g_free(enc);
        return rc;
    }
    return rc == MIME_OK ? mime_writer_puts(w, eol) : rc;
}

static int put_fmt(struct mime_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int put_fmt(struct mime_writer *w, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return MIME_ERR_INVALID_ARG;
    return mime_writer_put(w, buf, (size_t)n);
}

static int put_outer(struct mime_writer *w, const char *head, size_t head_len,
                     int head_cut, const struct mime_encrypt_params *p,
                     const struct mime_info *info, const char *control,
                     size_t control_len, const char *boundary, const char *eol)
{
    int complete;
    size_t hl = mime_header_block_len(head, head_len, &complete);
    struct mime_field *fields = NULL;
    size_t nf = 0;
    int rc = mime_fields_split(head, hl, &fields, &nf);
    const char *ph = p->subject_placeholder ? p->subject_placeholder
                                            : MIME_DEFAULT_PLACEHOLDER;
    /* A header block cut at MIME_HEADER_LIMIT may end inside a field. */
    if (rc == MIME_OK && !complete && head_cut && nf > 0)
        nf--;
    size_t budget = MIME_OUTER_KEPT_LIMIT;
    for (size_t i = 0; rc == MIME_OK && i < nf; i++) {
        if (!mime_field_kept_outside(&fields[i]))
            continue;
        if (p->protect_subject && mime_field_is(&fields[i], "Subject")) {
            rc = put_subject(w, ph, eol);
            continue;
        }
        /* Stay well inside what readers accept (FORMAT-SPEC 2.2): a field
         * too long for the outer message is only inside. */
        if (fields[i].raw_len > budget ||
            longest_line(&fields[i]) > MIME_OUTER_LINE_LIMIT)
            continue;
        budget -= fields[i].raw_len;
        rc = put_field_raw(w, &fields[i], eol);
    }
    free(fields);
    if (rc != MIME_OK)
        return rc;

    const char *e = eol;
    rc = put_fmt(w, "MIME-Version: 1.0%s"
                    "Content-Type: multipart/encrypted;%s"
                    "\tprotocol=\"" MIME_PROTOCOL "\";%s"
                    "\tboundary=\"%s\"%s"
                    "X-QKD-Version: %u%s"
                    "X-QKD-Algorithm: %s%s",
                 e, e, e, boundary, e, info->version, e,
                 mime_alg_name(info->alg), e);
    if (rc == MIME_OK)
        rc = put_fmt(w, "X-QKD-Key-ID: %s%sX-QKD-Key-Count: %zu%s%s",
                     info->key_ids[0], e, info->n_keys, e, e);
    if (rc == MIME_OK)
        rc = put_fmt(w, "This is a QKD-encrypted message (QuMail format %u)."
                        "%sRead it through a QuMail gateway; the attachment "
                        "encrypted.qkd%sholds the original message.%s%s"
                        "--%s%s"
                        "Content-Type: " MIME_PROTOCOL "%s"
                        "Content-Description: QKD control data%s%s",
                     info->version, e, e, e, e, boundary, e, e, e, e);
    /* The control text is CRLF-canonical; written with eol. */
    for (size_t off = 0; rc == MIME_OK && off < control_len;) {
        const char *crlf = memchr(control + off, '\r', control_len - off);
        size_t n = (size_t)(crlf - (control + off));
        rc = mime_writer_put(w, control + off, n);
        if (rc == MIME_OK)
            rc = mime_writer_puts(w, e);
        off += n + 2;
    }
    if (rc == MIME_OK)
        rc = put_fmt(w, "%s--%s%s"
                        "Content-Type: application/octet-stream; "
                        "name=\"encrypted.qkd\"%s"
                        "Content-Disposition: attachment; "
                        "filename=\"encrypted.qkd\"%s"
                        "Content-Transfer-Encoding: base64%s%s",
                     e, boundary, e, e, e, e, e);
    return rc;
}

/* Encrypts src chunk by chunk and writes the base64 lines and the close
 * delimiter. */
static int put_ciphertext(struct mime_writer *w, const struct mime_source *src,
                          struct mime_cipher *c, const char *boundary,
                          const char *eol, char **error_r)
{
    size_t eol_len = strlen(eol);
    unsigned char *buf = malloc(MIME_CHUNK + MIME_TAG_LEN);
    if (buf == NULL)
        return MIME_ERR_NOMEM;
    int rc = MIME_OK;
    uint64_t off = 0;
    size_t used = 0; /* octets of buf that held data: wiped at the end */
    do {
        size_t n = src->size - off < MIME_CHUNK ? (size_t)(src->size - off)
                                                : MIME_CHUNK;
        if (n + MIME_TAG_LEN > used)
            used = n + MIME_TAG_LEN;
        if (src->fd >= 0) {
            rc = mime_source_read(src, off, buf, n);
            if (rc == MIME_OK)
                rc = mime_cipher_update(c, buf, buf, n);
        } else {
            rc = mime_cipher_update(c, src->mem + off, buf, n);
        }
        if (rc != MIME_OK)
            break;
        off += n;
        size_t total = n;
        if (off == src->size) {
            rc = mime_cipher_final(c, buf + n);
            if (rc != MIME_OK)
                break;
            total += MIME_TAG_LEN;
        }
        char *dst = mime_writer_reserve(w, mime_b64_encoded_max(total, eol_len));
        if (dst == NULL) {
            rc = MIME_ERR_IO;
            break;
        }
        mime_writer_commit(w, mime_b64_encode_lines(buf, total, eol, eol_len,
                                                    dst));
    } while (off < src->size);
    OPENSSL_cleanse(buf, used);
    free(buf);
    if (rc == MIME_OK)
        rc = put_fmt(w, "--%s--%s", boundary, eol);
    if (rc == MIME_OK)
        rc = mime_writer_flush(w);
    if (rc != MIME_OK)
        return mime_fail(error_r, rc, "writing the ciphertext");
    return MIME_OK;
}

static int encrypt_source(const struct mime_source *src,
                          struct mime_writer *w,
                          const struct mime_encrypt_params *p,
                          const struct mime_key *keys, size_t n_keys,
                          char **error_r)
{
    uint64_t needed;
    int rc = mime_init();
    if (rc == MIME_OK)
        rc = check_params(p, error_r);
    if (rc != MIME_OK)
        return rc;
    if ((rc = mime_key_bits_needed(p->algorithm, src->size, &needed)) != 0)
        return mime_fail(error_r, rc, "message of %llu octets",
                         (unsigned long long)src->size);
    if ((rc = check_keys(keys, n_keys, needed, error_r)) != MIME_OK)
        return rc;

    /* Header area, for the outer headers and the line-ending choice. */
    size_t head_len = src->size < MIME_HEADER_LIMIT ? (size_t)src->size
                                                     : MIME_HEADER_LIMIT;
    char *head = malloc(head_len + 1);
    struct mime_info *info = mime_info_new();
    char *control = NULL;
    size_t control_len = 0;
    struct mime_cipher *c = NULL;
    char boundary[MIME_MAX_BOUNDARY + 1];
    if (head == NULL || info == NULL) {
        rc = MIME_ERR_NOMEM;
        goto out;
    }
    if ((rc = mime_source_read(src, 0, head, head_len)) != MIME_OK) {
        rc = mime_fail(error_r, rc, "reading the message");
        goto out;
    }
    const char *nl = memchr(head, '\n', head_len);
    const char *eol = (nl == NULL || (nl > head && nl[-1] == '\r')) ? "\r\n"
                                                                     : "\n";

    info->version = MIME_FORMAT_VERSION;
    info->alg = p->algorithm;
    info->source_kme_id = strdup(p->source_kme_id);
    info->master_sae_id = strdup(p->master_sae_id);
    info->slave_sae_id = strdup(p->slave_sae_id);
    info->length = src->size;
    info->key_ids = calloc(n_keys, sizeof(char *));
    info->key_bits = calloc(n_keys, sizeof(uint64_t));
    if (!info->source_kme_id || !info->master_sae_id || !info->slave_sae_id ||
        !info->key_ids || !info->key_bits) {
        rc = MIME_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_keys; i++, info->n_keys = i) {
        if ((info->key_ids[i] = strdup(keys[i].key_id)) == NULL) {
            rc = MIME_ERR_NOMEM;
            goto out;
        }
        info->key_bits[i] = (uint64_t)keys[i].key_len * 8u;
    }
    info->n_keys = n_keys;
    if (p->algorithm == MIME_ALG_AES_256_GCM) {
        if (p->fixed_nonce != NULL)
            memcpy(info->nonce, p->fixed_nonce, MIME_NONCE_LEN);
        else if (RAND_bytes(info->nonce, MIME_NONCE_LEN) != 1) {
            rc = mime_fail(error_r, MIME_ERR_CRYPTO, "no random nonce");
            goto out;
        }
    }
    if (p->fixed_boundary != NULL) {
        snprintf(boundary, sizeof(boundary), "%s", p->fixed_boundary);
    } else {
        unsigned char rnd[16];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            rc = mime_fail(error_r, MIME_ERR_CRYPTO, "no random boundary");
            goto out;
        }
        int n = snprintf(boundary, sizeof(boundary), "=_qkd_");
        for (unsigned i = 0; i < sizeof(rnd); i++)
            n += snprintf(boundary + n, sizeof(boundary) - (size_t)n, "%02x",
                          rnd[i]);
    }
    if ((rc = mime_control_build(info, &control, &control_len, error_r)) != 0)
        goto out;
    if ((rc = mime_cipher_new(p->algorithm, 1, keys, n_keys, info->nonce,
                              control, control_len, &c, error_r)) != 0)
        goto out;
    rc = put_outer(w, head, head_len, head_len < src->size, p, info, control,
                   control_len, boundary, eol);
    if (rc != MIME_OK) {
        rc = mime_fail(error_r, rc, "writing the outer message");
        goto out;
    }
    rc = put_ciphertext(w, src, c, boundary, eol, error_r);
out:
    if (head != NULL) {
        OPENSSL_cleanse(head, head_len);
        free(head);
    }
    free(control);
    mime_info_free(&info);
    mime_cipher_free(&c);
    return rc;
}

int mime_encrypt_fd(int in_fd, int out_fd,
                    const struct mime_encrypt_params *params,
                    const struct mime_key *keys, size_t n_keys,
                    uint64_t *out_size_r, char **error_r)
{
    struct stat st;
    if (fstat(in_fd, &st) != 0 || !S_ISREG(st.st_mode))
        return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                         "input must be a regular file or memfd");
    struct mime_source src = {in_fd, NULL, (uint64_t)st.st_size};
    struct mime_writer *w = mime_writer_fd(out_fd);
    if (w == NULL)
        return MIME_ERR_NOMEM;
    int rc = encrypt_source(&src, w, params, keys, n_keys, error_r);
    if (rc == MIME_OK && out_size_r != NULL)
        *out_size_r = mime_writer_total(w);
    mime_writer_free(&w);
    return rc;
}

int mime_encrypt_mem(const void *in, size_t in_len,
                     const struct mime_encrypt_params *params,
                     const struct mime_key *keys, size_t n_keys,
                     unsigned char **out_r, size_t *out_len_r,
                     char **error_r)
{
    if (in == NULL && in_len > 0)
        return mime_fail(error_r, MIME_ERR_INVALID_ARG, "no input");
    struct mime_source src = {-1, in != NULL ? in : (const void *)"", in_len};
    /* Room for the usual case without reallocation: base64 with CRLF lines
     * of the message and tag, the kept headers, control part and framing. */
    size_t hint = in_len / MIME_B64_LINE * 78u + 78u * 2u +
                  MIME_OUTER_KEPT_LIMIT / 4u + n_keys * 64u + 4096u;
    if (in_len > SIZE_MAX / 2)
        hint = 0;
    struct mime_writer *w = mime_writer_mem_hint(hint);
    if (w == NULL)
        return MIME_ERR_NOMEM;
    int rc = encrypt_source(&src, w, params, keys, n_keys, error_r);
    if (rc == MIME_OK)
        *out_r = mime_writer_take(w, out_len_r);
    mime_writer_free(&w);
    return rc;
}
