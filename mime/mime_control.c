/* The control part: canonical text, strict parser, and the mime_info
 * accessors. Grammar in FORMAT-SPEC.md section "Control part". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mime_internal.h"

struct mime_info *mime_info_new(void)
{
    return calloc(1, sizeof(struct mime_info));
}

void mime_info_free(struct mime_info **p)
{
    if (p == NULL || *p == NULL)
        return;
    struct mime_info *info = *p;
    free(info->source_kme_id);
    free(info->master_sae_id);
    free(info->slave_sae_id);
    for (size_t i = 0; i < info->n_keys; i++)
        free(info->key_ids[i]);
    free(info->key_ids);
    free(info->key_bits);
    free(info);
    *p = NULL;
}

unsigned mime_info_version(const struct mime_info *i) { return i->version; }
enum mime_alg mime_info_algorithm(const struct mime_info *i) { return i->alg; }
const char *mime_info_source_kme_id(const struct mime_info *i)
{
    return i->source_kme_id;
}
const char *mime_info_master_sae_id(const struct mime_info *i)
{
    return i->master_sae_id;
}
const char *mime_info_slave_sae_id(const struct mime_info *i)
{
    return i->slave_sae_id;
}
uint64_t mime_info_plaintext_length(const struct mime_info *i)
{
    return i->length;
}
size_t mime_info_key_count(const struct mime_info *i) { return i->n_keys; }
const char *mime_info_key_id(const struct mime_info *i, size_t k)
{
    return k < i->n_keys ? i->key_ids[k] : NULL;
}
uint64_t mime_info_key_bits(const struct mime_info *i, size_t k)
{
    return k < i->n_keys ? i->key_bits[k] : 0;
}

/* ---- build ---------------------------------------------------------------- */

struct text {
    char *buf;
    size_t len, cap;
    int failed;
};

static void text_printf(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (size_t)n + 64;
        char *nb = realloc(t->buf, ncap);
        if (nb == NULL) {
            t->failed = 1;
            return;
        }
        t->buf = nb;
        t->cap = ncap;
    }
}

int mime_control_build(const struct mime_info *info, char **text_r,
                       size_t *len_r, char **error_r)
{
    struct text t = {malloc(512), 0, 512, 0};
    if (t.buf == NULL)
        return MIME_ERR_NOMEM;
    text_printf(&t, "Version: %u\r\n", info->version);
    text_printf(&t, "Algorithm: %s\r\n", mime_alg_name(info->alg));
    text_printf(&t, "Source-KME-ID: %s\r\n", info->source_kme_id);
    text_printf(&t, "Master-SAE-ID: %s\r\n", info->master_sae_id);
    text_printf(&t, "Slave-SAE-ID: %s\r\n", info->slave_sae_id);
    text_printf(&t, "Length: %llu\r\n", (unsigned long long)info->length);
    if (info->alg == MIME_ALG_AES_256_GCM) {
        text_printf(&t, "Nonce: ");
        for (unsigned i = 0; i < MIME_NONCE_LEN; i++)
            text_printf(&t, "%02x", info->nonce[i]);
        text_printf(&t, "\r\n");
    }
    text_printf(&t, "Key-Count: %zu\r\n", info->n_keys);
    for (size_t i = 0; i < info->n_keys; i++)
        text_printf(&t, "Key: %s %llu\r\n", info->key_ids[i],
                    (unsigned long long)info->key_bits[i]);
    if (t.failed) {
        free(t.buf);
        return mime_fail(error_r, MIME_ERR_NOMEM, "control text");
    }
    if (t.len > MIME_CONTROL_LIMIT) {
        free(t.buf);
        return mime_fail(error_r, MIME_ERR_TOO_LARGE,
                         "control part over %u octets", MIME_CONTROL_LIMIT);
    }
    *text_r = t.buf;
    *len_r = t.len;
    return MIME_OK;
}

/* ---- parse ---------------------------------------------------------------- */

struct cursor {
    const char *p, *end;
    const char *line; /* current line, without CRLF */
    size_t len;
};

/* Next CRLF-terminated line; 0 at the end, -1 when not CRLF-terminated. */
static int next_line(struct cursor *c)
{
    if (c->p >= c->end)
        return 0;
    const char *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    if (nl == NULL || nl == c->p || nl[-1] != '\r')
        return -1;
    c->line = c->p;
    c->len = (size_t)(nl - 1 - c->p);
    c->p = nl + 1;
    return 1;
}

/* The line is "<name>: <value>"; returns the value or NULL. */
static const char *field(struct cursor *c, const char *name, size_t *vlen_r)
{
    size_t n = strlen(name);
    if (c->len < n + 2 || memcmp(c->line, name, n) != 0 ||
        c->line[n] != ':' || c->line[n + 1] != ' ')
        return NULL;
    *vlen_r = c->len - n - 2;
    return c->line + n + 2;
}

/* Canonical decimal: no sign, no leading zero, at most 19 digits. */
static int parse_dec(const char *s, size_t n, uint64_t *v_r)
{
    if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *v_r = v;
    return 0;
}

static char *parse_id(const char *s, size_t n)
{
    if (n == 0 || n > MIME_MAX_ID_LEN)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return NULL;
    return strndup(s, n);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1; /* canonical form is lower case */
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

#define BAD(msg) do { err_text = (msg); goto malformed; } while (0)

int mime_control_parse(const char *text, size_t len, struct mime_info **info_r,
                       char **error_r)
{
    struct cursor c = {text, text + len, NULL, 0};
    struct mime_info *info = mime_info_new();
    const char *err_text = NULL;
    const char *v;
    size_t vl;
    uint64_t num;
    int rc = MIME_ERR_MALFORMED;

    if (info == NULL)
        return MIME_ERR_NOMEM;

    if (next_line(&c) != 1 || (v = field(&c, "Version", &vl)) == NULL ||
        parse_dec(v, vl, &num) != 0)
        BAD("missing or bad Version");
    if (num != MIME_FORMAT_VERSION) {
        mime_info_free(&info);
        return mime_fail(error_r, MIME_ERR_UNSUPPORTED_VERSION,
                         "format version %llu (supported: %d)",
                         (unsigned long long)num, MIME_FORMAT_VERSION);
    }
    info->version = (unsigned)num;

    if (next_line(&c) != 1 || (v = field(&c, "Algorithm", &vl)) == NULL)
        BAD("missing Algorithm");
    if (vl == strlen("OTP-POLY1305") && memcmp(v, "OTP-POLY1305", vl) == 0)
        info->alg = MIME_ALG_OTP_POLY1305;
    else if (vl == strlen("AES-256-GCM") && memcmp(v, "AES-256-GCM", vl) == 0)
        info->alg = MIME_ALG_AES_256_GCM;
    else {
        mime_info_free(&info);
        return mime_fail(error_r, MIME_ERR_UNSUPPORTED_ALGORITHM,
                         "algorithm \"%.*s\"", (int)(vl > 40 ? 40 : vl), v);
    }

    if (next_line(&c) != 1 || (v = field(&c, "Source-KME-ID", &vl)) == NULL ||
        (info->source_kme_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Source-KME-ID");
    if (next_line(&c) != 1 || (v = field(&c, "Master-SAE-ID", &vl)) == NULL ||
        (info->master_sae_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Master-SAE-ID");
    if (next_line(&c) != 1 || (v = field(&c, "Slave-SAE-ID", &vl)) == NULL ||
        (info->slave_sae_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Slave-SAE-ID");
    if (next_line(&c) != 1 || (v = field(&c, "Length", &vl)) == NULL ||
        parse_dec(v, vl, &info->length) != 0)
        BAD("missing or bad Length");
    if (info->length > MIME_MAX_MESSAGE_SIZE)
        BAD("Length beyond the limit");

    if (info->alg == MIME_ALG_AES_256_GCM) {
        if (next_line(&c) != 1 || (v = field(&c, "Nonce", &vl)) == NULL ||
            vl != 2 * MIME_NONCE_LEN)
            BAD("missing or bad Nonce");
        for (unsigned i = 0; i < MIME_NONCE_LEN; i++) {
            int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
            if (hi < 0 || lo < 0)
                BAD("bad Nonce");
            info->nonce[i] = (unsigned char)(hi << 4 | lo);
        }
    }

    if (next_line(&c) != 1 || (v = field(&c, "Key-Count", &vl)) == NULL ||
        parse_dec(v, vl, &num) != 0 || num == 0 || num > MIME_MAX_KEYS)
        BAD("missing or bad Key-Count");
    info->key_ids = calloc((size_t)num, sizeof(char *));
    info->key_bits = calloc((size_t)num, sizeof(uint64_t));
    if (info->key_ids == NULL || info->key_bits == NULL) {
        rc = MIME_ERR_NOMEM;
        BAD("out of memory");
    }
    uint64_t total = 0;
    for (size_t k = 0; k < (size_t)num; k++) {
        if (next_line(&c) != 1 || (v = field(&c, "Key", &vl)) == NULL)
            BAD("missing Key line");
        const char *sp = memchr(v, ' ', vl);
        if (sp == NULL)
            BAD("bad Key line");
        size_t idl = (size_t)(sp - v);
        uint64_t bits;
        if ((info->key_ids[k] = parse_id(v, idl)) == NULL)
            BAD("bad key_ID");
        info->n_keys = k + 1;
        if (parse_dec(sp + 1, vl - idl - 1, &bits) != 0 || bits == 0 ||
            bits % 8 != 0 || bits > MIME_MAX_MESSAGE_SIZE * 8)
            BAD("bad key bit count");
        info->key_bits[k] = bits;
        total += bits; /* <= 1e5 * 2^39: no wrap */
    }
    if (c.p != c.end)
        BAD("trailing data after the key list");

    if (info->alg == MIME_ALG_AES_256_GCM) {
        if (info->n_keys != 1 || info->key_bits[0] != MIME_KEY_BITS_AES)
            BAD("AES-256-GCM takes exactly one 256-bit key");
    } else if (total != info->length * 8 + MIME_KEY_BITS_MAC) {
        BAD("key bits do not match Length");
    }

    /* Distinct key_IDs. */
    char **sorted = malloc(info->n_keys * sizeof(char *));
    if (sorted == NULL) {
        rc = MIME_ERR_NOMEM;
        BAD("out of memory");
    }
    memcpy(sorted, info->key_ids, info->n_keys * sizeof(char *));
    qsort(sorted, info->n_keys, sizeof(char *), cmp_strp);
    for (size_t k = 1; k < info->n_keys; k++) {
        if (strcmp(sorted[k - 1], sorted[k]) == 0) {
            free(sorted);
            mime_info_free(&info);
            return mime_fail(error_r, MIME_ERR_KEY_DUPLICATE,
                             "key_ID listed twice in the control part");
        }
    }
    free(sorted);
    *info_r = info;
    return MIME_OK;

malformed:
    mime_info_free(&info);
    return mime_fail(error_r, rc, "control part: %s", err_text);
}
