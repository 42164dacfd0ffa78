/* The control part: canonical text, strict parser, and the mime_info
 * accessors. Grammar and error order in FORMAT-SPEC.md section 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mime_internal.h"

#define MAX_KEY_BITS (MIME_MAX_MESSAGE_SIZE * 8u + 256u)
#define MAX_CHUNK_BITS (UINT64_C(0xffffffff) * 8u) /* 004: u32 octets */
#define MAX_CHUNK_INDEX UINT64_C(0xffffffff)        /* 004: u32 index */

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
    free(info->rcpts);
    free(info->keys);
    free(info->arena);
    free(info);
    *p = NULL;
}

char *mime_info_arena_add(struct mime_info *info, const char *s, size_t n)
{
    if (info->arena_cap - info->arena_len < n + 1)
        return NULL; /* sized up front: pointers into it must not move */
    char *d = info->arena + info->arena_len;
    memcpy(d, s, n);
    d[n] = '\0';
    info->arena_len += n + 1;
    return d;
}

unsigned mime_info_version(const struct mime_info *info) { return info->version; }
enum mime_alg mime_info_algorithm(const struct mime_info *info) { return info->alg; }
const char *mime_info_source_kme_id(const struct mime_info *info)
{
    return info->source_kme_id;
}
const char *mime_info_master_sae_id(const struct mime_info *info)
{
    return info->master_sae_id;
}
const char *mime_info_slave_sae_id(const struct mime_info *info)
{
    return info->slave_sae_id;
}
uint64_t mime_info_plaintext_length(const struct mime_info *info)
{
    return info->length;
}
size_t mime_info_key_count(const struct mime_info *info) { return info->n_keys; }
const char *mime_info_key_id(const struct mime_info *info, size_t k)
{
    return k < info->n_keys && info->keys[k].kind == MIME_KEY_ETSI014
               ? info->keys[k].id
               : NULL;
}
uint64_t mime_info_key_bits(const struct mime_info *info, size_t k)
{
    return k < info->n_keys ? info->keys[k].bits : 0;
}
uint64_t mime_info_lookup_count(const struct mime_info *info)
{
    return info->n_pieces;
}

int mime_info_key_entry(const struct mime_info *info, size_t k,
                        struct mime_key_entry *e_r)
{
    if (info == NULL || k >= info->n_keys || e_r == NULL)
        return MIME_ERR_INVALID_ARG;
    const struct mime_entry *e = &info->keys[k];
    int chunks = e->kind == MIME_KEY_ETSI004;
    *e_r = (struct mime_key_entry){
        .kind = e->kind,
        .key_id = chunks ? NULL : e->id,
        .ksid = chunks ? e->id : NULL,
        .first_index = e->first,
        .count = e->count,
        .chunk_bits = e->chunk_bits,
        .bits = e->bits,
    };
    return MIME_OK;
}

size_t mime_info_recipient_count(const struct mime_info *info)
{
    return info->n_rcpts;
}

const char *mime_info_recipient(const struct mime_info *info, size_t k)
{
    return k < info->n_rcpts ? info->rcpts[k] : NULL;
}

int mime_info_bound_to(const struct mime_info *info, const char *addr)
{
    char *norm = NULL;
    if (mime_address_normalize(addr, &norm) != MIME_OK)
        return MIME_ERR_INVALID_ARG;
    int found = 0;
    for (size_t k = 0; k < info->n_rcpts && !found; k++)
        found = strcmp(info->rcpts[k], norm) == 0;
    free(norm);
    return found;
}

/* ---- names: KSIDs, chunk names, addresses -------------------------------- */

int mime_ksid_valid(const char *s, size_t n)
{
    if (n != MIME_KSID_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-'
                 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
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

int mime_key_name_parse(const char *name, char ksid_r[MIME_KSID_LEN + 1],
                        uint64_t *index_r)
{
    if (name == NULL)
        return MIME_ERR_INVALID_ARG;
    const char *sp = strchr(name, ' ');
    if (sp == NULL)
        return mime_id_valid(name) ? 0 : MIME_ERR_INVALID_ARG;
    uint64_t index;
    if (!mime_ksid_valid(name, (size_t)(sp - name)) ||
        parse_dec(sp + 1, strlen(sp + 1), &index) != 0 ||
        index > MAX_CHUNK_INDEX)
        return MIME_ERR_INVALID_ARG;
    if (ksid_r != NULL) {
        memcpy(ksid_r, name, MIME_KSID_LEN);
        ksid_r[MIME_KSID_LEN] = '\0';
    }
    if (index_r != NULL)
        *index_r = index;
    return 1;
}

/* Length of the valid UTF-8 sequence at s (n octets left), 0 if invalid;
 * *cp_r gets the code point. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp_r)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) {
        *cp_r = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *cp_r = cp;
    return len;
}

size_t mime_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp_r)
{
    return utf8_seq(s, n, cp_r);
}

int mime_address_normalize(const char *addr, char **out_r)
{
    if (addr == NULL || out_r == NULL)
        return MIME_ERR_INVALID_ARG;
    size_t n = strlen(addr);
    if (n == 0 || n > MIME_MAX_ADDRESS_LEN || addr[0] == ' ' ||
        addr[n - 1] == ' ')
        return MIME_ERR_INVALID_ARG;
    const unsigned char *s = (const unsigned char *)addr;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_seq(s + i, n - i, &cp);
        if (l == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return MIME_ERR_INVALID_ARG;
        i += l;
    }
    char *out = malloc(n + 1);
    if (out == NULL)
        return MIME_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        /* s[0..n) is a C string of length n (the analyzer loses that) */
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    }
    out[n] = '\0';
    *out_r = out;
    return MIME_OK;
}

static int needs_pct(unsigned char c)
{
    return c >= 0x80 || c == '%' || c == ' ';
}

char *mime_address_encode(const char *addr)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)addr; *s; s++)
        n += needs_pct(*s) ? 3 : 1;
    char *out = malloc(n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (const unsigned char *s = (const unsigned char *)addr; *s; s++) {
        if (needs_pct(*s)) {
            *o++ = '%';
            *o++ = hex[*s >> 4];
            *o++ = hex[*s & 15];
        } else {
            *o++ = (char)*s;
        }
    }
    *o = '\0';
    return out;
}

/* Decodes a Recipient value into out (room for n + 1); -1 unless it is
 * the canonical encoding of a normalised address. */
static int address_decode(const char *v, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = v[i + 1] >= '0' && v[i + 1] <= '9'   ? v[i + 1] - '0'
                 : v[i + 1] >= 'A' && v[i + 1] <= 'F' ? v[i + 1] - 'A' + 10
                                                      : -1;
            lo = v[i + 2] >= '0' && v[i + 2] <= '9'   ? v[i + 2] - '0'
                 : v[i + 2] >= 'A' && v[i + 2] <= 'F' ? v[i + 2] - 'A' + 10
                                                      : -1;
            if (hi < 0 || lo < 0 || !needs_pct((unsigned char)(hi << 4 | lo)))
                return -1;
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (c < 0x21 || c > 0x7e || (c >= 'A' && c <= 'Z')) {
            return -1;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    char *norm = NULL;
    if (mime_address_normalize(out, &norm) != MIME_OK)
        return -1;
    int same = strcmp(norm, out) == 0;
    free(norm);
    return same ? 0 : -1;
}

/* ---- build ---------------------------------------------------------------- */

struct text {
    char *buf;
    size_t len, cap;
    int failed;
};

static void text_put(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->cap - t->len < n + 1) {
        size_t ncap = t->cap * 2 + n + 64;
        char *nb = realloc(t->buf, ncap);
        if (nb == NULL) {
            t->failed = 1;
            return;
        }
        t->buf = nb;
        t->cap = ncap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_put(t, s, strlen(s));
}

static void text_dec(struct text *t, uint64_t v)
{
    char d[24];
    size_t i = sizeof(d);
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    text_put(t, d + i, sizeof(d) - i);
}

static void text_field(struct text *t, const char *name, const char *value)
{
    text_str(t, name);
    text_put(t, ": ", 2);
    text_str(t, value);
    text_put(t, "\r\n", 2);
}

int mime_control_build(const struct mime_info *info, char **text_r,
                       size_t *len_r, char **error_r)
{
    struct text t = {malloc(512 + info->n_keys * 64u), 0,
                     512 + info->n_keys * 64u, 0};
    if (t.buf == NULL)
        return MIME_ERR_NOMEM;
    text_str(&t, "Version: ");
    text_dec(&t, info->version);
    text_put(&t, "\r\n", 2);
    text_field(&t, "Algorithm", mime_alg_name(info->alg));
    text_field(&t, "Source-KME-ID", info->source_kme_id);
    text_field(&t, "Master-SAE-ID", info->master_sae_id);
    text_field(&t, "Slave-SAE-ID", info->slave_sae_id);
    text_str(&t, "Length: ");
    text_dec(&t, info->length);
    text_put(&t, "\r\n", 2);
    if (info->alg == MIME_ALG_AES_256_GCM) {
        static const char hex[] = "0123456789abcdef";
        char n[2 * MIME_NONCE_LEN];
        for (size_t i = 0; i < MIME_NONCE_LEN; i++) {
            n[2 * i] = hex[info->nonce[i] >> 4];
            n[2 * i + 1] = hex[info->nonce[i] & 15];
        }
        text_str(&t, "Nonce: ");
        text_put(&t, n, sizeof(n));
        text_put(&t, "\r\n", 2);
    }
    text_str(&t, "Recipient-Count: ");
    text_dec(&t, info->n_rcpts);
    text_put(&t, "\r\n", 2);
    for (size_t i = 0; i < info->n_rcpts && !t.failed; i++) {
        char *enc = mime_address_encode(info->rcpts[i]);
        if (enc == NULL)
            t.failed = 1;
        else
            text_field(&t, "Recipient", enc);
        free(enc);
    }
    text_str(&t, "Key-Count: ");
    text_dec(&t, info->n_keys);
    text_put(&t, "\r\n", 2);
    for (size_t i = 0; i < info->n_keys; i++) {
        const struct mime_entry *e = &info->keys[i];
        if (e->kind == MIME_KEY_ETSI014) {
            text_str(&t, "Key: ");
            text_str(&t, e->id);
        } else {
            text_str(&t, "Key-Chunks: ");
            text_str(&t, e->id);
            text_put(&t, " ", 1);
            text_dec(&t, e->first);
            text_put(&t, " ", 1);
            text_dec(&t, e->count);
            text_put(&t, " ", 1);
            text_dec(&t, e->chunk_bits);
        }
        text_put(&t, " ", 1);
        text_dec(&t, e->bits);
        text_put(&t, "\r\n", 2);
    }
    if (t.failed) {
        free(t.buf);
        return mime_fail(error_r, MIME_ERR_NOMEM, "control text");
    }
    if (t.len > MIME_CONTROL_LIMIT) {
        free(t.buf);
        return mime_fail(error_r, MIME_ERR_TOO_LARGE,
                         "control part over %zu octets", MIME_CONTROL_LIMIT);
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

/* The next line is "<name>: <value>"; returns the value or NULL. */
static const char *field(struct cursor *c, const char *name, size_t *vlen_r)
{
    size_t n = strlen(name);
    if (next_line(c) != 1 || c->len < n + 2 ||
        memcmp(c->line, name, n) != 0 || c->line[n] != ':' ||
        c->line[n + 1] != ' ')
        return NULL;
    *vlen_r = c->len - n - 2;
    return c->line + n + 2;
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

/* Splits v into exactly n space-separated non-empty words. */
static int words(const char *v, size_t vl, const char **w, size_t *wl,
                 size_t n)
{
    size_t k = 0, i = 0;
    while (k < n) {
        size_t s = i;
        while (i < vl && v[i] != ' ')
            i++;
        if (i == s)
            return -1;
        w[k] = v + s;
        wl[k] = i - s;
        k++;
        if (k < n) {
            if (i >= vl)
                return -1;
            i++; /* exactly one space */
        }
    }
    return i == vl ? 0 : -1;
}

static int eq_id(const void *ctx, size_t value, const void *key)
{
    const struct mime_info *info = ctx;
    return strcmp(info->keys[value].id, key) == 0;
}

static int eq_rcpt(const void *ctx, size_t value, const void *key)
{
    const struct mime_info *info = ctx;
    return strcmp(info->rcpts[value], key) == 0;
}

static int cmp_range(const void *a, const void *b)
{
    const struct mime_entry *x = *(const struct mime_entry *const *)a;
    const struct mime_entry *y = *(const struct mime_entry *const *)b;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Duplicate keys: a key_ID twice, or overlapping chunk ranges of one
 * stream. 1: found; 0: none; MIME_ERR_NOMEM. */
static int find_duplicates(const struct mime_info *info)
{
    struct mime_hash *h = mime_hash_new(info->n_keys);
    /* an array of pointers, sorted below */
    const struct mime_entry **ranges =
        malloc(info->n_keys * sizeof(*ranges)); // NOLINT(bugprone-sizeof-expression)
    if (h == NULL || ranges == NULL) {
        mime_hash_free(&h);
        free(ranges);
        return MIME_ERR_NOMEM;
    }
    size_t nr = 0;
    int dup = 0;
    uint64_t ahead[MIME_HASH_AHEAD];
    for (size_t k = 0; k < info->n_keys + MIME_HASH_AHEAD && !dup; k++) {
        if (k >= MIME_HASH_AHEAD) { /* entry j, hashed AHEAD steps ago */
            size_t j = k - MIME_HASH_AHEAD;
            const struct mime_entry *e = &info->keys[j];
            if (e->kind == MIME_KEY_ETSI004)
                ranges[nr++] = e;
            else
                dup = mime_hash_add(h, ahead[j % MIME_HASH_AHEAD], eq_id, info,
                                    e->id, j) != SIZE_MAX;
        }
        if (k < info->n_keys) { /* hash ahead, prefetch the slot */
            const struct mime_entry *e = &info->keys[k];
            ahead[k % MIME_HASH_AHEAD] = mime_hash_of(h, e->id, strlen(e->id), 0);
            mime_hash_prefetch(h, ahead[k % MIME_HASH_AHEAD]);
        }
    }
    if (!dup && nr > 1) {
        qsort(ranges, nr, sizeof(*ranges), cmp_range); // NOLINT(bugprone-sizeof-expression)
        for (size_t k = 1; k < nr && !dup; k++)
            dup = strcmp(ranges[k - 1]->id, ranges[k]->id) == 0 &&
                  ranges[k - 1]->first + ranges[k - 1]->count >
                      ranges[k]->first;
    }
    mime_hash_free(&h);
    free(ranges);
    return dup;
}

#define BAD(msg) do { err_text = (msg); goto malformed; } while (0)

/* Parses one key line into e; NULL or the reason it is malformed. */
static const char *parse_key_line(struct cursor *c, struct mime_info *info,
                                  struct mime_entry *e)
{
    const char *v, *w[5];
    size_t vl, wl[5];
    const char *save = c->p;
    if ((v = field(c, "Key", &vl)) != NULL) {
        if (words(v, vl, w, wl, 2) != 0 || wl[0] > MIME_MAX_ID_LEN)
            return "bad Key line";
        for (size_t i = 0; i < wl[0]; i++)
            if ((unsigned char)w[0][i] < 0x21 || (unsigned char)w[0][i] > 0x7e)
                return "bad key_ID";
        e->kind = MIME_KEY_ETSI014;
        e->first = 0;
        e->count = 1;
        if (parse_dec(w[1], wl[1], &e->bits) != 0 || e->bits == 0 ||
            e->bits % 8 != 0 || e->bits > MAX_KEY_BITS)
            return "bad key bit count";
        e->chunk_bits = e->bits;
    } else {
        c->p = save;
        if ((v = field(c, "Key-Chunks", &vl)) == NULL)
            return "missing Key or Key-Chunks line";
        if (words(v, vl, w, wl, 5) != 0 || !mime_ksid_valid(w[0], wl[0]))
            return "bad Key-Chunks line";
        e->kind = MIME_KEY_ETSI004;
        if (parse_dec(w[1], wl[1], &e->first) != 0 ||
            parse_dec(w[2], wl[2], &e->count) != 0 ||
            parse_dec(w[3], wl[3], &e->chunk_bits) != 0 ||
            parse_dec(w[4], wl[4], &e->bits) != 0)
            return "bad Key-Chunks number";
        if (e->count == 0 || e->count > MIME_MAX_KEYS ||
            e->first > MAX_CHUNK_INDEX ||
            e->count - 1 > MAX_CHUNK_INDEX - e->first)
            return "bad chunk range";
        if (e->chunk_bits == 0 || e->chunk_bits % 8 != 0 ||
            e->chunk_bits > MAX_CHUNK_BITS || e->bits % 8 != 0 ||
            e->bits <= (e->count - 1) * e->chunk_bits ||
            e->bits > e->count * e->chunk_bits)
            return "bad chunk bit counts";
    }
    if ((e->id = mime_info_arena_add(info, w[0], wl[0])) == NULL)
        return "out of memory";
    return NULL;
}

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
    /* Every id and address fits in the text it comes from. */
    info->arena_cap = len + 1;
    if ((info->arena = malloc(info->arena_cap)) == NULL) {
        mime_info_free(&info);
        return MIME_ERR_NOMEM;
    }

    if ((v = field(&c, "Version", &vl)) == NULL || parse_dec(v, vl, &num) != 0)
        BAD("missing or bad Version");
    if (num != MIME_FORMAT_VERSION) {
        mime_info_free(&info);
        return mime_fail(error_r, MIME_ERR_UNSUPPORTED_VERSION,
                         "format version %llu (supported: %d)",
                         (unsigned long long)num, MIME_FORMAT_VERSION);
    }
    info->version = (unsigned)num;

    if ((v = field(&c, "Algorithm", &vl)) == NULL)
        BAD("missing Algorithm");
    if (vl == strlen("OTP-POLY1305") && memcmp(v, "OTP-POLY1305", vl) == 0)
        info->alg = MIME_ALG_OTP_POLY1305;
    else if (vl == strlen("AES-256-GCM") && memcmp(v, "AES-256-GCM", vl) == 0)
        info->alg = MIME_ALG_AES_256_GCM;
    else {
        char *esc = mime_escape(v, vl > 64 ? 64 : vl);
        mime_info_free(&info);
        rc = mime_fail(error_r, MIME_ERR_UNSUPPORTED_ALGORITHM,
                       "algorithm \"%s\"%s", esc ? esc : "",
                       vl > 64 ? "..." : "");
        free(esc);
        return rc;
    }

    if ((v = field(&c, "Source-KME-ID", &vl)) == NULL ||
        (info->source_kme_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Source-KME-ID");
    if ((v = field(&c, "Master-SAE-ID", &vl)) == NULL ||
        (info->master_sae_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Master-SAE-ID");
    if ((v = field(&c, "Slave-SAE-ID", &vl)) == NULL ||
        (info->slave_sae_id = parse_id(v, vl)) == NULL)
        BAD("missing or bad Slave-SAE-ID");
    if ((v = field(&c, "Length", &vl)) == NULL ||
        parse_dec(v, vl, &info->length) != 0)
        BAD("missing or bad Length");
    if (info->length > MIME_MAX_MESSAGE_SIZE)
        BAD("Length beyond the limit");

    if (info->alg == MIME_ALG_AES_256_GCM) {
        if ((v = field(&c, "Nonce", &vl)) == NULL || vl != 2 * MIME_NONCE_LEN)
            BAD("missing or bad Nonce");
        for (size_t i = 0; i < MIME_NONCE_LEN; i++) {
            int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
            if (hi < 0 || lo < 0)
                BAD("bad Nonce");
            info->nonce[i] = (unsigned char)(hi << 4 | lo);
        }
    }

    /* (an OTP-POLY1305 text with a Nonce line fails here) */
    if ((v = field(&c, "Recipient-Count", &vl)) == NULL ||
        parse_dec(v, vl, &num) != 0 || num > MIME_MAX_RECIPIENTS)
        BAD("missing or bad Recipient-Count");
    info->rcpts = calloc(num ? (size_t)num : 1, sizeof(char *));
    if (info->rcpts == NULL) {
        rc = MIME_ERR_NOMEM;
        BAD("out of memory");
    }
    int dup_rcpt = 0;
    struct mime_hash *rh = mime_hash_new((size_t)num);
    if (rh == NULL) {
        rc = MIME_ERR_NOMEM;
        BAD("out of memory");
    }
    for (size_t k = 0; k < (size_t)num; k++) {
        char buf[(size_t)3 * MIME_MAX_ADDRESS_LEN + 1];
        if ((v = field(&c, "Recipient", &vl)) == NULL || vl == 0 ||
            vl > (size_t)3 * MIME_MAX_ADDRESS_LEN ||
            address_decode(v, vl, buf) != 0) {
            mime_hash_free(&rh);
            BAD("missing or bad Recipient");
        }
        char *a = mime_info_arena_add(info, buf, strlen(buf));
        if (a == NULL) {
            mime_hash_free(&rh);
            BAD("out of memory");
        }
        info->rcpts[k] = a;
        info->n_rcpts = k + 1;
        uint64_t hv = mime_hash_of(rh, a, strlen(a), 0);
        if (mime_hash_add(rh, hv, eq_rcpt, info, a, k) != SIZE_MAX)
            dup_rcpt = 1;
    }
    mime_hash_free(&rh);

    if ((v = field(&c, "Key-Count", &vl)) == NULL ||
        parse_dec(v, vl, &num) != 0 || num == 0 || num > MIME_MAX_KEYS)
        BAD("missing or bad Key-Count");
    info->keys = calloc((size_t)num, sizeof(*info->keys));
    if (info->keys == NULL) {
        rc = MIME_ERR_NOMEM;
        BAD("out of memory");
    }
    uint64_t total = 0, pieces = 0;
    for (size_t k = 0; k < (size_t)num; k++) {
        struct mime_entry *e = &info->keys[k];
        if ((err_text = parse_key_line(&c, info, e)) != NULL)
            goto malformed;
        info->n_keys = k + 1;
        total += e->bits;   /* each <= 2^40 + 2^8, <= 2^20 of them */
        pieces += e->count; /* each <= 2^20 */
    }
    info->n_pieces = pieces;
    if (c.p != c.end)
        BAD("trailing data after the key list");
    if (dup_rcpt)
        BAD("a Recipient listed twice");

    int dup = find_duplicates(info);
    if (dup < 0) {
        rc = dup;
        BAD("out of memory");
    }
    if (dup) {
        mime_info_free(&info);
        return mime_fail(error_r, MIME_ERR_KEY_DUPLICATE,
                         "a key or chunk listed twice in the control part");
    }
    for (size_t k = 0; k + 1 < info->n_keys; k++)
        if (info->keys[k].bits != info->keys[k].count * info->keys[k].chunk_bits)
            BAD("only the last entry may use part of its last chunk");
    if (pieces > MIME_MAX_KEYS)
        BAD("more keys and chunks than the limit");
    uint64_t needed = 0;
    (void)mime_key_bits_needed(info->alg, info->length, &needed);
    if (total != needed)
        BAD("key bits do not match the algorithm and Length");
    *info_r = info;
    return MIME_OK;

malformed:
    mime_info_free(&info);
    return mime_fail(error_r, rc, "control part: %s", err_text);
}
