/* Durable per-message metadata: what a summary sweep needs, in one blob
 * the vault stores encrypted under the message identity.
 *
 * Layout (little-endian, version 1):
 *   "QMM\x01"
 *   u64 size                       RFC822.SIZE of the normalised plaintext
 *   str id                         the identity (checked on reading)
 *   u32 n, n x str                 the copy's bound recipients
 *   str BODYSTRUCTURE, str BODY, str ENVELOPE
 *   u8  has_header, [str header]   the top-level header block, blank line
 *                                  included, normalised (when small enough)
 * where str = u32 length + bytes. Decoding checks every length against the
 * blob; anything left over, or short, is a damaged blob. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "incoming_internal.h"

#define META_MAGIC "QMM\x01"
#define META_MAX_RECIPIENTS MIME_MAX_RECIPIENTS

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool failed;
};

static void put(struct wbuf *w, const void *d, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *np = malloc(cap);
        if (np == NULL) {
            w->failed = true;
            return;
        }
        if (w->p != NULL) {
            memcpy(np, w->p, w->len);
            OPENSSL_cleanse(w->p, w->len); /* header values: wipe old copies */
            free(w->p);
        }
        w->p = np;
        w->cap = cap;
    }
    memcpy(w->p + w->len, d, n);
    w->len += n;
}

static void put_u32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    put(w, b, 4);
}

static void put_u64(struct wbuf *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_str(struct wbuf *w, const void *s, size_t n)
{
    if (n > UINT32_MAX) {
        w->failed = true;
        return;
    }
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

int pi_meta_encode(const protect_in_view *v, size_t max_header,
                   uint8_t **blob_r, size_t *len_r)
{
    if (!v->complete || v->reason != PROTECT_IN_DECRYPTED || v->id == NULL ||
        v->ms == NULL)
        return PROTECT_IN_EINVAL;
    struct wbuf w = {0};
    put(&w, META_MAGIC, 4);
    put_u64(&w, v->size);
    put_str(&w, v->id, strlen(v->id));
    put_u32(&w, (uint32_t)v->binding.count);
    for (size_t i = 0; i < v->binding.count; i++)
        put_str(&w, v->binding.addrs[i], strlen(v->binding.addrs[i]));
    put_str(&w, v->bodystructure, v->bodystructure_len);
    put_str(&w, v->body, v->body_len);
    put_str(&w, v->envelope, v->envelope_len);
    uint64_t hsize = mime_struct_root(v->ms)->header_size;
    uint8_t has = hsize <= max_header;
    put(&w, &has, 1);
    if (has)
        put_str(&w, v->data, (size_t)hsize);
    if (w.failed) {
        if (w.p != NULL)
            OPENSSL_cleanse(w.p, w.len);
        free(w.p);
        return PROTECT_IN_ENOMEM;
    }
    *blob_r = w.p;
    *len_r = w.len;
    return 0;
}

/* ---- decoding ------------------------------------------------------------------ */

struct rbuf {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static const uint8_t *take(struct rbuf *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint32_t get_u32(struct rbuf *r)
{
    const uint8_t *b = take(r, 4);
    return b == NULL ? 0
                     : (uint32_t)b[0] | (uint32_t)b[1] << 8 |
                           (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get_u64(struct rbuf *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}

/* A malloc'd NUL-terminated copy of the next string; NULL when damaged or
 * out of memory (*oom set). */
static char *get_str(struct rbuf *r, size_t *len_r, bool *oom)
{
    uint32_t n = get_u32(r);
    const uint8_t *p = take(r, n);
    if (p == NULL)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL) {
        *oom = true;
        r->bad = true;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    if (len_r != NULL)
        *len_r = n;
    return s;
}

int pi_meta_decode(const uint8_t *blob, size_t len, const char *id,
                   const struct pi_view_hooks *hooks, protect_in_view **v_r)
{
    *v_r = NULL;
    struct rbuf r = {blob, len, false};
    const uint8_t *magic = take(&r, 4);
    if (magic == NULL || memcmp(magic, META_MAGIC, 4) != 0)
        return PROTECT_IN_EINVAL;
    protect_in_view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return PROTECT_IN_ENOMEM;
    v->refs = 1;
    v->complete = false;
    v->reason = PROTECT_IN_DECRYPTED;
    if (hooks != NULL)
        v->hooks = *hooks;
    bool oom = false;
    v->size = get_u64(&r);
    v->id = get_str(&r, NULL, &oom);
    uint32_t n = get_u32(&r);
    if (!r.bad && n > META_MAX_RECIPIENTS)
        r.bad = true;
    if (!r.bad && n > 0) {
        v->binding.addrs = calloc(n, sizeof(char *));
        if (v->binding.addrs == NULL)
            oom = r.bad = true;
        for (uint32_t i = 0; !r.bad && i < n; i++) {
            v->binding.addrs[i] = get_str(&r, NULL, &oom);
            if (v->binding.addrs[i] != NULL)
                v->binding.count = i + 1;
        }
    }
    v->bodystructure = get_str(&r, &v->bodystructure_len, &oom);
    v->body = get_str(&r, &v->body_len, &oom);
    v->envelope = get_str(&r, &v->envelope_len, &oom);
    const uint8_t *has = take(&r, 1);
    if (has != NULL && *has == 1) {
        size_t hlen = 0;
        v->data = (uint8_t *)get_str(&r, &hlen, &oom);
        v->data_len = hlen;
    } else if (has != NULL && *has != 0) {
        r.bad = true;
    }
    if (r.bad || r.left != 0 || v->id == NULL || strcmp(v->id, id) != 0) {
        pi_view_destroy(v);
        return oom ? PROTECT_IN_ENOMEM : PROTECT_IN_EINVAL;
    }
    if (v->data != NULL) {
        int ret = mime_struct_parse(v->data, v->data_len, MIME_STRUCT_BORROW,
                                    &v->ms, NULL);
        if (ret < 0) {
            pi_view_destroy(v);
            return ret == MIME_ERR_NOMEM ? PROTECT_IN_ENOMEM : PROTECT_IN_EINVAL;
        }
    }
    v->footprint = pi_view_footprint(v);
    *v_r = v;
    return 0;
}
