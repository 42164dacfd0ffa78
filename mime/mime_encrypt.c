/* Encryption: original message -> RFC 1847 multipart/encrypted message.
 * Streams the plaintext in MIME_CHUNK pieces: read, encrypt in place, base64
 * straight into the writer's buffer, write. Layout in FORMAT-SPEC.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gmime/gmime.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "mime_internal.h"

/* The key list as the message will use it: its entries (014 keys, runs
 * of 004 chunks) and the key-stream pieces. */
struct plan {
    struct mime_entry *entries;
    size_t n_entries;
    struct mime_piece *pieces;
    size_t n_pieces;
    size_t id_bytes;            /* sum of id lengths + NULs */
};

static void plan_free(struct plan *pl)
{
    free(pl->entries);
    free(pl->pieces);
    memset(pl, 0, sizeof(*pl));
}

static int eq_key(const void *ctx, size_t value, const void *key)
{
    const struct mime_key *a = &((const struct mime_key *)ctx)[value];
    const struct mime_key *b = key;
    if ((a->ksid == NULL) != (b->ksid == NULL))
        return 0;
    if (a->ksid != NULL)
        return a->index == b->index && strcmp(a->ksid, b->ksid) == 0;
    return strcmp(a->key_id, b->key_id) == 0;
}

static const char *key_name(const struct mime_key *k, char *buf, size_t cap)
{
    if (k->ksid == NULL)
        return k->key_id;
    snprintf(buf, cap, "chunk %llu of key stream %s",
             (unsigned long long)k->index, k->ksid);
    return buf;
}

/* Checks the key list (valid, distinct, exactly `needed` bits, or less
 * than one chunk more when the last key is a 004 chunk) and groups it. */
static int plan_keys(const struct mime_key *keys, size_t n, uint64_t needed,
                     struct plan *pl, char **error_r)
{
    char buf[128];
    if (n == 0)
        return mime_fail(error_r, MIME_ERR_KEY_SHORT, "no keys given");
    if (n > MIME_MAX_KEYS)
        return mime_fail(error_r, MIME_ERR_TOO_LARGE,
                         "more than %d keys and chunks", MIME_MAX_KEYS);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const struct mime_key *k = &keys[i];
        if (k->ksid != NULL &&
            (!mime_ksid_valid(k->ksid, strlen(k->ksid)) ||
             k->index > UINT32_MAX))
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "key %zu: a 004 chunk needs a lowercase UUID "
                             "Key_stream_ID and an index below 2^32", i);
        if (k->ksid == NULL && !mime_id_valid(k->key_id))
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "key %zu: key_ID must be 1-%d visible ASCII "
                             "characters", i, MIME_MAX_ID_LEN);
        if (k->key == NULL || k->key_len == 0)
            return mime_fail(error_r, MIME_ERR_INVALID_ARG, "%s: empty",
                             key_name(k, buf, sizeof(buf)));
        if (k->key_len > MIME_MAX_MESSAGE_SIZE ||
            (k->ksid != NULL && k->key_len > UINT32_MAX))
            return mime_fail(error_r, MIME_ERR_KEY_SURPLUS,
                             "%s: larger than any message needs",
                             key_name(k, buf, sizeof(buf)));
        total += (uint64_t)k->key_len * 8u; /* <= 2^20 * 2^39 */
    }
    struct mime_hash *h = mime_hash_new(n);
    if (h == NULL)
        return MIME_ERR_NOMEM;
    uint64_t ahead[MIME_HASH_AHEAD];
    for (size_t i = 0; i < n + MIME_HASH_AHEAD; i++) {
        if (i >= MIME_HASH_AHEAD) { /* key j, hashed AHEAD steps ago */
            size_t j = i - MIME_HASH_AHEAD;
            if (mime_hash_add(h, ahead[j % MIME_HASH_AHEAD], eq_key, keys,
                              &keys[j], j) != SIZE_MAX) {
                mime_hash_free(&h);
                return mime_fail(error_r, MIME_ERR_KEY_DUPLICATE,
                                 "%s given twice",
                                 key_name(&keys[j], buf, sizeof(buf)));
            }
        }
        if (i < n) { /* hash ahead, prefetch the slot */
            const struct mime_key *k = &keys[i];
            const char *id = k->ksid ? k->ksid : k->key_id;
            ahead[i % MIME_HASH_AHEAD] = mime_hash_of(
                h, id, strlen(id), k->ksid ? k->index : UINT64_MAX);
            mime_hash_prefetch(h, ahead[i % MIME_HASH_AHEAD]);
        }
    }
    mime_hash_free(&h);
    if (total < needed)
        return mime_fail(error_r, MIME_ERR_KEY_SHORT,
                         "keys hold %llu bits, the message needs %llu",
                         (unsigned long long)total,
                         (unsigned long long)needed);
    /* A 004 chunk cannot be split: the last one may be used in part. */
    uint64_t spare = keys[n - 1].ksid != NULL
                         ? (uint64_t)keys[n - 1].key_len * 8u - 8u
                         : 0;
    if (total - needed > spare)
        return mime_fail(error_r, MIME_ERR_KEY_SURPLUS,
                         "keys hold %llu bits, the message needs exactly %llu;"
                         " refusing to waste key material",
                         (unsigned long long)total,
                         (unsigned long long)needed);

    pl->entries = calloc(n, sizeof(*pl->entries));
    pl->pieces = calloc(n, sizeof(*pl->pieces));
    if (pl->entries == NULL || pl->pieces == NULL)
        return MIME_ERR_NOMEM;
    uint64_t left = needed / 8;
    for (size_t i = 0; i < n; i++) {
        const struct mime_key *k = &keys[i];
        size_t use = k->key_len < left ? k->key_len : (size_t)left;
        left -= use;
        pl->pieces[pl->n_pieces++] = (struct mime_piece){k->key, use};
        struct mime_entry *prev =
            pl->n_entries ? &pl->entries[pl->n_entries - 1] : NULL;
        if (k->ksid != NULL && prev != NULL &&
            prev->kind == MIME_KEY_ETSI004 && strcmp(prev->id, k->ksid) == 0 &&
            prev->first + prev->count == k->index &&
            prev->chunk_bits == (uint64_t)k->key_len * 8u) {
            prev->count++;
            prev->bits += (uint64_t)use * 8u;
            continue;
        }
        struct mime_entry *e = &pl->entries[pl->n_entries++];
        e->kind = k->ksid ? MIME_KEY_ETSI004 : MIME_KEY_ETSI014;
        e->id = k->ksid ? k->ksid : k->key_id; /* copied into the info */
        e->first = k->ksid ? k->index : 0;
        e->count = 1;
        e->chunk_bits = (uint64_t)k->key_len * 8u;
        e->bits = (uint64_t)use * 8u;
        pl->id_bytes += strlen(e->id) + 1;
    }
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
        const unsigned char *s = (const unsigned char *)p->subject_placeholder;
        size_t n = strlen(p->subject_placeholder);
        if (n == 0 || n > 500)
            return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                             "subject placeholder: 1 to 500 octets");
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t l = mime_utf8_seq(s + i, n - i, &cp);
            if (l == 0)
                return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                                 "subject placeholder: not UTF-8");
            if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
                return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                                 "control character in subject placeholder");
            i += l;
        }
    }
    if (p->n_recipients > MIME_MAX_RECIPIENTS ||
        (p->n_recipients > 0 && p->recipients == NULL))
        return mime_fail(error_r, MIME_ERR_INVALID_ARG,
                         "0 to %d recipients", MIME_MAX_RECIPIENTS);
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

/* "Subject: " + placeholder (FORMAT-SPEC.md 2.3): printable ASCII without
 * "=?" as is; anything else as RFC 2047 "B" encoded-words in UTF-8, each
 * holding at most 39 octets of whole characters (52 base64 characters, so
 * a word is 64 characters and every line stays within 78), one per line,
 * the continuation lines folded with a single SP. */
static int put_subject(struct mime_writer *w, const char *placeholder,
                       const char *eol)
{
    const unsigned char *s = (const unsigned char *)placeholder;
    size_t n = strlen(placeholder);
    int plain = strstr(placeholder, "=?") == NULL;
    for (size_t i = 0; i < n && plain; i++)
        plain = s[i] >= 0x20 && s[i] < 0x7f;
    int rc = mime_writer_puts(w, "Subject: ");
    if (rc == MIME_OK && plain)
        rc = mime_writer_puts(w, placeholder);
    for (size_t i = 0; rc == MIME_OK && !plain && i < n;) {
        size_t take = 0;
        for (;;) { /* whole characters, at most 39 octets */
            uint32_t cp;
            size_t l = mime_utf8_seq(s + i + take, n - i - take, &cp);
            if (l == 0 || take + l > 39)
                break;
            take += l;
            if (i + take == n)
                break;
        }
        if (take == 0)
            return MIME_ERR_INVALID_ARG; /* checked before: cannot happen */
        char b64[53];
        EVP_EncodeBlock((unsigned char *)b64, s + i, (int)take);
        if (i > 0)
            rc = put_fmt(w, "%s ", eol);
        if (rc == MIME_OK)
            rc = put_fmt(w, "=?UTF-8?B?%s?=", b64);
        i += take;
    }
    return rc == MIME_OK ? mime_writer_puts(w, eol) : rc;
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
                                            : MIME_DEFAULT_SUBJECT;
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
                     info->keys[0].id, e, info->n_keys, e, e);
    /* What a person without the gateway sees (FORMAT-SPEC.md 2.5): the
     * preamble in a raw view, the descriptions as the parts' titles. */
    static const char *const preamble[] = {
        "This is a QuMail QKD-encrypted message (format 2). Your mail",
        "program cannot show it by itself: it was encrypted with keys from",
        "quantum key distribution (QKD), and only a QuMail gateway holding",
        "those keys can decrypt it. Read this mailbox through your QuMail",
        "gateway (IMAP), or ask your administrator. The attachment",
        "encrypted.qkd holds the original message; the part before it names",
        "the keys that unlock it.",
    };
    for (size_t i = 0; rc == MIME_OK && i < sizeof(preamble) / sizeof(*preamble);
         i++)
        rc = put_fmt(w, "%s%s", preamble[i], e);
    if (rc == MIME_OK)
        rc = put_fmt(w, "%s--%s%s"
                        "Content-Type: " MIME_PROTOCOL "%s"
                        "Content-Description: " MIME_CONTROL_DESCRIPTION "%s%s",
                     e, boundary, e, e, e, e);
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
                        "Content-Description: " MIME_DATA_DESCRIPTION "%s"
                        "Content-Transfer-Encoding: base64%s%s",
                     e, boundary, e, e, e, e, e, e);
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

/* Fills the info's key entries (from the plan) and its bound recipients
 * (normalised, duplicates dropped, in the order given). */
static int info_keys_and_recipients(struct mime_info *info,
                                    const struct plan *pl,
                                    const struct mime_encrypt_params *p,
                                    char **error_r)
{
    size_t nr = p->n_recipients;
    char **norm = calloc(nr ? nr : 1, sizeof(char *));
    size_t rcpt_bytes = 0;
    int rc = norm != NULL ? MIME_OK : MIME_ERR_NOMEM;
    for (size_t i = 0; rc == MIME_OK && i < nr; i++) {
        if (mime_address_normalize(p->recipients[i], &norm[i]) != MIME_OK) {
            char *esc = p->recipients[i]
                            ? mime_escape(p->recipients[i],
                                          strlen(p->recipients[i]))
                            : NULL;
            rc = mime_fail(error_r, MIME_ERR_INVALID_ARG,
                           "recipient %zu (%s): not an address that can be "
                           "bound", i, esc ? esc : "NULL");
            free(esc);
            break;
        }
        rcpt_bytes += strlen(norm[i]) + 1;
    }
    info->arena_cap = pl->id_bytes + rcpt_bytes + 1;
    info->arena = malloc(info->arena_cap);
    info->keys = calloc(pl->n_entries ? pl->n_entries : 1, sizeof(*info->keys));
    info->rcpts = calloc(nr ? nr : 1, sizeof(char *));
    if (rc == MIME_OK && (!info->arena || !info->keys || !info->rcpts))
        rc = MIME_ERR_NOMEM;
    for (size_t i = 0; rc == MIME_OK && i < pl->n_entries; i++) {
        info->keys[i] = pl->entries[i];
        info->keys[i].id = mime_info_arena_add(info, pl->entries[i].id,
                                               strlen(pl->entries[i].id));
        info->n_pieces += info->keys[i].count;
    }
    info->n_keys = pl->n_entries;
    for (size_t i = 0; rc == MIME_OK && i < nr; i++) {
        int seen = 0; /* few recipients per copy: a scan is fine */
        for (size_t k = 0; k < info->n_rcpts && !seen; k++)
            seen = strcmp(info->rcpts[k], norm[i]) == 0;
        if (!seen)
            info->rcpts[info->n_rcpts++] =
                mime_info_arena_add(info, norm[i], strlen(norm[i]));
    }
    for (size_t i = 0; norm != NULL && i < nr; i++)
        free(norm[i]);
    free(norm);
    return rc;
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
    struct plan plan = {0};
    if ((rc = plan_keys(keys, n_keys, needed, &plan, error_r)) != MIME_OK) {
        plan_free(&plan);
        return rc;
    }

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
    if ((rc = info_keys_and_recipients(info, &plan, p, error_r)) != MIME_OK)
        goto out;
    if (!info->source_kme_id || !info->master_sae_id || !info->slave_sae_id) {
        rc = MIME_ERR_NOMEM;
        goto out;
    }
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
    if ((rc = mime_cipher_new(p->algorithm, 1, plan.pieces, plan.n_pieces,
                              info->nonce, control, control_len, &c,
                              error_r)) != 0)
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
    plan_free(&plan);
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
    size_t hint = in_len / MIME_B64_LINE * 78 + (size_t)78 * 2 +
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
