/* Transit header fields: what the delivery path (MTAs, LMTP) put above the
 * encrypted message's header block after encryption. Had the plaintext
 * been delivered, the mailbox would hold the same fields above it, so a
 * view shows them above the decrypted message (INCOMING.md "Transit
 * fields"). The outer header is not authenticated: only trace fields of
 * an allow-list are taken, never anything a reader could take for the
 * sender's (From, Subject, ...), and only those above the writer's own
 * block. Pure functions over bytes; no I/O. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "incoming_internal.h"

/* The allow-list. Trace fields a delivery adds and a reader expects above
 * a delivered message. Not DKIM-Signature, ARC-Seal, ARC-Message-Signature:
 * made after encryption they sign the ciphertext, so above the plaintext
 * they fail verification and a reader's filter would call the message
 * forged; nor ARC-Authentication-Results (meaningful only with its seal).
 * Authentication-Results stays: the receiving server's verdict on the
 * message as it travelled, which is what it is. Keep PROTECT_IN_PROBE_FIELDS
 * in step (the hint's transit tag is computed from the probe). */
static const char *const transit_names[] = {
    "Return-Path", "Received", "Received-SPF", "Delivered-To", "X-Original-To",
    "Authentication-Results",
};
#define N_TRANSIT_NAMES (sizeof(transit_names) / sizeof(transit_names[0]))

/* One header field: [start, end) including its line ends and
 * continuation lines; the name is [start, start + name_len). */
struct field {
    size_t start, end, name_len;
};

/* The next field of a header block at *pos (advanced). 1: a field; 0: the
 * end of the header (blank line or end of data). Lines that are not
 * fields (no colon after a name) are skipped with their continuations. */
static int next_field(const uint8_t *p, size_t len, size_t *pos, struct field *f)
{
    for (;;) {
        size_t s = *pos;
        if (s >= len || p[s] == '\n' || (p[s] == '\r' && s + 1 < len && p[s + 1] == '\n'))
            return 0;
        size_t e = s;
        for (;;) { /* this line and its continuations */
            while (e < len && p[e] != '\n')
                e++;
            if (e < len)
                e++;
            if (e >= len || (p[e] != ' ' && p[e] != '\t'))
                break;
        }
        *pos = e;
        size_t n = s;
        while (n < e && p[n] > 0x20 && p[n] < 0x7f && p[n] != ':')
            n++;
        size_t c = n;
        while (c < e && (p[c] == ' ' || p[c] == '\t'))
            c++;
        if (n > s && p[s] != ' ' && p[s] != '\t' && c < e && p[c] == ':') {
            f->start = s;
            f->end = e;
            f->name_len = n - s;
            return 1;
        }
    }
}

static bool name_is(const uint8_t *p, const struct field *f, const char *name)
{
    return strlen(name) == f->name_len &&
           strncasecmp((const char *)p + f->start, name, f->name_len) == 0;
}

bool pi_transit_allowed(const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < N_TRANSIT_NAMES; i++) {
        if (strlen(transit_names[i]) == len &&
            strncasecmp((const char *)name, transit_names[i], len) == 0)
            return true;
    }
    return false;
}

static bool allowed(const uint8_t *p, const struct field *f)
{
    return pi_transit_allowed(p + f->start, f->name_len);
}

/* The same field up to line ends (CRLF, LF; the writer converts them). */
static bool field_equal(const uint8_t *a, const struct field *fa, const uint8_t *b,
                        const struct field *fb)
{
    size_t i = fa->start, j = fb->start;
    for (;;) {
        size_t ie = i, je = j;
        while (ie < fa->end && a[ie] != '\n')
            ie++;
        while (je < fb->end && b[je] != '\n')
            je++;
        size_t il = ie > i && a[ie - 1] == '\r' ? ie - 1 : ie;
        size_t jl = je > j && b[je - 1] == '\r' ? je - 1 : je;
        if (il - i != jl - j || memcmp(a + i, b + j, il - i) != 0)
            return false;
        i = ie < fa->end ? ie + 1 : ie;
        j = je < fb->end ? je + 1 : je;
        if (i >= fa->end || j >= fb->end)
            return i >= fa->end && j >= fb->end;
    }
}

/* The allow-listed fields of a header block, in order (malloc'd array;
 * before_mime: only those above its first MIME-Version field). */
static int trace_fields(const uint8_t *p, size_t len, bool before_mime,
                        struct field **out_r, size_t *n_r)
{
    size_t cap = 0, n = 0, pos = 0;
    struct field *out = NULL, f;
    while (next_field(p, len, &pos, &f) == 1) {
        if (before_mime && name_is(p, &f, "MIME-Version"))
            break;
        if (!allowed(p, &f))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct field *t = realloc(out, nc * sizeof(*t));
            if (t == NULL) {
                free(out);
                return PROTECT_IN_ENOMEM;
            }
            out = t;
            cap = nc;
        }
        out[n++] = f;
    }
    *out_r = out;
    *n_r = n;
    return 0;
}

int pi_transit_tag(const uint8_t *hdr, size_t len, char tag[PI_TRANSIT_TAG_LEN + 1])
{
    tag[0] = '\0';
    struct field *fs = NULL;
    size_t n = 0;
    if (trace_fields(hdr, len, false, &fs, &n) < 0)
        return PROTECT_IN_ENOMEM;
    if (n == 0) {
        free(fs);
        return 0;
    }
    /* Over the fields' lines with CRLF line ends: the same from a probe's
     * answer as from the whole message, whatever the line ends. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (size_t k = 0; ok && k < n; k++) {
        size_t i = fs[k].start;
        while (ok && i < fs[k].end) {
            size_t e = i;
            while (e < fs[k].end && hdr[e] != '\n')
                e++;
            size_t l = e > i && hdr[e - 1] == '\r' ? e - 1 : e;
            ok = EVP_DigestUpdate(ctx, hdr + i, l - i) == 1 &&
                 EVP_DigestUpdate(ctx, "\r\n", 2) == 1;
            i = e + 1;
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 &&
         mdlen >= PI_TRANSIT_TAG_LEN / 2;
    EVP_MD_CTX_free(ctx);
    free(fs);
    if (!ok)
        return PROTECT_IN_ENOMEM;
    for (size_t i = 0; i < PI_TRANSIT_TAG_LEN / 2; i++)
        snprintf(tag + 2 * i, 3, "%02x", md[i]);
    return 1;
}

int pi_transit_fields(const uint8_t *outer, size_t outer_len, const uint8_t *plain,
                      size_t plain_len, uint8_t **out_r, size_t *len_r)
{
    *out_r = NULL;
    *len_r = 0;
    struct field *t = NULL, *o = NULL;
    size_t nt = 0, no = 0;
    if (trace_fields(outer, outer_len, true, &t, &nt) < 0 ||
        trace_fields(plain, plain_len, false, &o, &no) < 0) {
        free(t);
        return PROTECT_IN_ENOMEM;
    }
    /* The writer copies the original's Return-Path, Received and
     * Delivered-To fields (FORMAT-SPEC.md 2.2) into its block: the longest
     * run at the end of t that appears, in order, among the original's
     * trace fields is the writer's; the rest of t is above it. */
    size_t i = nt, j = no;
    while (i > 0) {
        size_t k = j;
        while (k > 0 && !field_equal(outer, &t[i - 1], plain, &o[k - 1]))
            k--;
        if (k == 0)
            break;
        j = k - 1;
        i--;
    }
    if (i == 0) { /* nothing above the writer's block */
        free(t);
        free(o);
        return 0;
    }
    size_t total = 0;
    for (size_t k = 0; k < i; k++)
        total += t[k].end - t[k].start + 2;
    uint8_t *out = malloc(total);
    if (out == NULL) {
        free(t);
        free(o);
        return PROTECT_IN_ENOMEM;
    }
    size_t w = 0;
    for (size_t k = 0; k < i; k++) {
        size_t flen = t[k].end - t[k].start;
        memcpy(out + w, outer + t[k].start, flen);
        w += flen;
        if (flen == 0 || outer[t[k].end - 1] != '\n') { /* header cut short */
            out[w++] = '\r';
            out[w++] = '\n';
        }
    }
    free(t);
    free(o);
    *out_r = out;
    *len_r = w;
    return 0;
}

char *pi_id_tagged(const char *id, const char *tag)
{
    if (id == NULL)
        return NULL;
    if (tag == NULL || tag[0] == '\0')
        return strdup(id);
    size_t n = strlen(id) + strlen(tag) + 5;
    char *s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "t/%s/%s", tag, id);
    return s;
}
