/* The text Dovecot 2.3's message search compares: header fields unfolded
 * (CLEAN_ONELINE), RFC 2047 words decoded, bodies decoded from their
 * transfer encoding and charset, everything casemapped. Facts from
 * Dovecot's lib-mail (message-header-parser, message-header-decode,
 * message-decoder, message-search, message-address) and checked against
 * the server (README.md). */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "search_internal.h"

static const unsigned char replacement[3] = {0xef, 0xbf, 0xbd};

bool search_charset_is_utf8(const char *charset)
{
    return charset == NULL || strcasecmp(charset, "us-ascii") == 0 ||
           strcasecmp(charset, "ascii") == 0 || strcasecmp(charset, "utf-8") == 0 ||
           strcasecmp(charset, "utf8") == 0;
}

/* iconv to UTF-8; an invalid byte becomes U+FFFD and is skipped. */
static bool iconv_to_utf8(struct sbuf *out, const char *charset, const void *in, size_t len)
{
    iconv_t cd = iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1)
        return false;
    char *ip = (char *)in;
    size_t ileft = len;
    char buf[4096];
    while (ileft > 0) {
        char *op = buf;
        size_t oleft = sizeof(buf);
        size_t r = iconv(cd, &ip, &ileft, &op, &oleft);
        sbuf_add(out, buf, sizeof(buf) - oleft);
        if (r == (size_t)-1) {
            if (errno == E2BIG)
                continue;
            /* EILSEQ / EINVAL: one byte replaced */
            sbuf_add(out, replacement, 3);
            ip++;
            ileft--;
        }
    }
    char *op = buf;
    size_t oleft = sizeof(buf);
    (void)iconv(cd, NULL, NULL, &op, &oleft);
    sbuf_add(out, buf, sizeof(buf) - oleft);
    iconv_close(cd);
    return true;
}

bool search_charset_to_utf8(struct sbuf *out, const char *charset, const void *in, size_t len)
{
    if (search_charset_is_utf8(charset)) {
        sbuf_add(out, in, len);
        return true;
    }
    return iconv_to_utf8(out, charset, in, len);
}

void search_charset_to_casemap(struct sbuf *out, const char *charset, const void *in, size_t len)
{
    if (search_charset_is_utf8(charset)) {
        sbuf_casemap(out, in, len);
        return;
    }
    struct sbuf tmp = {0};
    if (!iconv_to_utf8(&tmp, charset, in, len)) {
        sbuf_free(&tmp);
        sbuf_casemap(out, in, len); /* unknown charset: as UTF-8 */
        return;
    }
    sbuf_casemap(out, tmp.d != NULL ? tmp.d : "", tmp.len);
    if (tmp.failed)
        out->failed = true;
    sbuf_free(&tmp);
}

/* ---- RFC 2047 -------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Base64 as Dovecot decodes it: white space skipped, '=' ends the data,
 * any other invalid character ends it too (what was decoded stays). */
static void b64_decode(struct sbuf *out, const unsigned char *p, size_t len)
{
    if (!sbuf_reserve(out, len / 4 * 3 + 3))
        return;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        int v = b64val(c);
        if (v < 0)
            break;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            sbuf_addc(out, (char)((acc >> bits) & 0xff));
        }
    }
}

static void q_decode(struct sbuf *out, const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '_') {
            sbuf_addc(out, ' ');
        } else if (p[i] == '=' && i + 2 < len && hexval(p[i + 1]) >= 0 &&
                   hexval(p[i + 2]) >= 0) {
            sbuf_addc(out, (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2])));
            i += 2;
        } else {
            sbuf_addc(out, (char)p[i]);
        }
    }
}

static bool only_lwsp(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

/* "charset?E?text?=" after "=?": consumed length, or 0 when not a word. */
static size_t decode_word(const unsigned char *p, size_t n, struct sbuf *charset,
                          struct sbuf *text)
{
    size_t q[3];
    int nq = 0;
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] == '?') {
            q[nq++] = i;
            if (nq == 3)
                break;
        }
    if (i >= n || i + 1 >= n || p[i + 1] != '=')
        return 0;
    if (q[1] != q[0] + 2)
        return 0; /* the encoding must be one letter */
    unsigned char enc = p[q[0] + 1];
    if (enc != 'q' && enc != 'Q' && enc != 'b' && enc != 'B')
        return 0;
    sbuf_add(charset, p, q[0]);
    sbuf_addc(charset, '\0');
    if (enc == 'q' || enc == 'Q')
        q_decode(text, p + q[1] + 1, q[2] - q[1] - 1);
    else
        b64_decode(text, p + q[1] + 1, q[2] - q[1] - 1);
    return q[2] + 2;
}

void search_header_decode(struct sbuf *out, const char *value, size_t len)
{
    const unsigned char *data = (const unsigned char *)value;
    size_t pos = 0, start = 0;
    while (pos + 1 < len) {
        if (data[pos] != '=' || data[pos + 1] != '?') {
            pos++;
            continue;
        }
        struct sbuf cs = {0}, text = {0};
        size_t used = decode_word(data + pos + 2, len - pos - 2, &cs, &text);
        if (used == 0) {
            sbuf_free(&cs);
            sbuf_free(&text);
            pos++;
            continue;
        }
        /* unencoded text before the word, unless it is only white space */
        if (pos != start && !only_lwsp(data + start, pos - start))
            sbuf_casemap(out, data + start, pos - start);
        if (text.len > 0) {
            const char *charset = cs.d != NULL ? cs.d : "";
            if (search_charset_is_utf8(charset)) {
                sbuf_casemap(out, text.d, text.len);
            } else {
                struct sbuf conv = {0};
                if (iconv_to_utf8(&conv, charset, text.d, text.len))
                    sbuf_casemap(out, conv.d != NULL ? conv.d : "", conv.len);
                else /* unknown charset: its bytes as they are (Dovecot
                        does not casemap them), invalid UTF-8 -> U+FFFD */
                    search_utf8_valid(out, text.d, text.len);
                sbuf_free(&conv);
            }
        }
        sbuf_free(&cs);
        sbuf_free(&text);
        pos += 2 + used;
        start = pos;
    }
    if (start < len)
        sbuf_casemap(out, data + start, len - start);
}

/* ---- header fields ------------------------------------------------------- */

bool search_field_get(const struct mime_struct *ms, const struct mime_part *part, size_t i,
                      struct search_field *f)
{
    memset(f, 0, sizeof(*f));
    const struct mime_field *mf = &part->fields[i];
    const char *p = (const char *)mime_struct_data(ms) + mf->offset;
    size_t size = (size_t)mf->size;
    f->name = p;
    f->name_len = mf->name_len;
    size_t k = mf->name_len;
    /* middle: spaces before ':', the ':' and one white space after it */
    size_t m = k;
    while (m < size && (p[m] == ' ' || p[m] == '\t'))
        m++;
    if (m < size && p[m] == ':') {
        m++;
        if (m < size && (p[m] == ' ' || p[m] == '\t'))
            m++;
        f->middle = p + k;
        f->middle_len = m - k;
        k = m;
    } else {
        f->middle = p + k;
        f->middle_len = 0;
        k = size; /* a line without ':' has no value */
    }
    size_t end = size;
    if (end > k && p[end - 1] == '\n') {
        end--;
        if (end > k && p[end - 1] == '\r')
            end--;
    } else {
        f->no_newline = true;
    }
    f->value = malloc(end - k + 1);
    if (f->value == NULL)
        return false;
    size_t o = 0;
    for (size_t j = k; j < end; j++) {
        if (p[j] == '\r' && j + 1 < end && p[j + 1] == '\n')
            continue;
        if (p[j] == '\n') {
            /* folded: the line break goes, the continuation's first
             * white space becomes one space */
            if (j + 1 < end && (p[j + 1] == ' ' || p[j + 1] == '\t')) {
                f->value[o++] = ' ';
                j++;
            }
            continue;
        }
        f->value[o++] = p[j];
    }
    f->value[o] = '\0';
    f->value_len = o;
    return true;
}

void search_field_free(struct search_field *f)
{
    free(f->value);
    f->value = NULL;
}

/* ---- addresses (message_address_write) ------------------------------------ */

static bool is_atext(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if (isalnum(c))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static void append_maybe_escape(struct sbuf *b, const char *s, bool quote)
{
    const char *p;
    for (p = s; *p != '\0'; p++)
        if (!is_atext((unsigned char)*p))
            break;
    if (*p == '\0') {
        sbuf_adds(b, s);
        return;
    }
    if (quote)
        sbuf_addc(b, '"');
    for (p = s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            sbuf_addc(b, '\\');
        sbuf_addc(b, *p);
    }
    if (quote)
        sbuf_addc(b, '"');
}

void search_address_write(struct sbuf *out, const struct mime_address *a)
{
    bool first = true, in_group = false;
    for (; a != NULL; a = a->next) {
        if (first)
            first = false;
        else
            sbuf_adds(out, ", ");
        if (a->domain == NULL) {
            if (!in_group) {
                if (a->mailbox != NULL && a->mailbox[0] != '\0') {
                    if (strstr(a->mailbox, "=?") != NULL)
                        sbuf_adds(out, a->mailbox);
                    else
                        append_maybe_escape(out, a->mailbox, true);
                } else {
                    sbuf_adds(out, "\"\"");
                }
                sbuf_adds(out, ": ");
                first = true;
            } else {
                if (out->len >= 2 && out->d[out->len - 2] == ',' && out->d[out->len - 1] == ' ')
                    out->len -= 2;
                else if (out->len >= 2 && out->d[out->len - 2] == ':' &&
                         out->d[out->len - 1] == ' ')
                    out->len -= 1;
                sbuf_addc(out, ';');
            }
            in_group = !in_group;
            continue;
        }
        const char *mailbox = a->mailbox != NULL ? a->mailbox : "";
        if (a->name != NULL) {
            if (strstr(a->name, "=?") != NULL)
                sbuf_adds(out, a->name);
            else
                append_maybe_escape(out, a->name, true);
        }
        if (a->route != NULL || mailbox[0] != '\0' || a->domain[0] != '\0') {
            if (a->name != NULL && a->name[0] != '\0')
                sbuf_addc(out, ' ');
            sbuf_addc(out, '<');
            if (a->route != NULL) {
                sbuf_adds(out, a->route);
                sbuf_addc(out, ':');
            }
            if (mailbox[0] == '\0')
                sbuf_adds(out, "\"\"");
            else
                append_maybe_escape(out, mailbox, false);
            if (a->domain[0] != '\0') {
                sbuf_addc(out, '@');
                sbuf_adds(out, a->domain);
            }
            sbuf_addc(out, '>');
        }
    }
}

/* The field's value parsed by mime_struct's address parser (Dovecot's, as
 * ENVELOPE uses it): a one-field message "From: <value>" whose envelope
 * From is the list. Used for every occurrence of an address field, since
 * the envelope keeps only the last one. */
static bool parse_field_addresses(const struct mime_struct *ms, const struct mime_part *part,
                                  size_t i, struct mime_struct **tmp_r,
                                  const struct mime_address **list_r)
{
    const struct mime_field *mf = &part->fields[i];
    const char *p = (const char *)mime_struct_data(ms) + mf->offset;
    size_t k = mf->name_len;
    while (k < mf->size && p[k] != ':')
        k++;
    if (k < mf->size)
        k++;
    struct sbuf b = {0};
    sbuf_adds(&b, "From:");
    sbuf_add(&b, p + k, (size_t)mf->size - k);
    sbuf_adds(&b, "\r\n\r\n");
    *tmp_r = NULL;
    *list_r = NULL;
    if (b.failed || mime_struct_parse(b.d, b.len, 0, tmp_r, NULL) != 0) {
        sbuf_free(&b);
        return false;
    }
    sbuf_free(&b);
    const struct mime_envelope *e = mime_struct_root(*tmp_r)->envelope;
    *list_r = e != NULL ? e->from : NULL;
    return true;
}

bool search_field_addresses(const struct mime_struct *ms, const struct mime_part *part,
                            size_t i, struct sbuf *out)
{
    struct mime_struct *tmp = NULL;
    const struct mime_address *list = NULL;
    if (!parse_field_addresses(ms, part, i, &tmp, &list))
        return false;
    search_address_write(out, list);
    mime_struct_free(&tmp);
    return !out->failed;
}

bool search_field_first_address(const struct mime_struct *ms, const struct mime_part *part,
                                size_t i, struct mime_struct **tmp_r,
                                const struct mime_address **addr_r)
{
    return parse_field_addresses(ms, part, i, tmp_r, addr_r);
}

/* ---- bodies ---------------------------------------------------------------- */

enum cte { CTE_78BIT, CTE_BASE64, CTE_QP, CTE_UNKNOWN };

static enum cte parse_cte(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = 0;
    /* a MIME token: anything but SP, CTLs and tspecials */
    while (v[n] != '\0' && (unsigned char)v[n] > 0x20 && (unsigned char)v[n] < 0x7f &&
           strchr("()<>@,;:\\\"/[]?=", v[n]) == NULL)
        n++;
    if ((n == 4 && (strncasecmp(v, "7bit", 4) == 0 || strncasecmp(v, "8bit", 4) == 0)) ||
        (n == 6 && strncasecmp(v, "binary", 6) == 0))
        return CTE_78BIT;
    if (n == 6 && strncasecmp(v, "base64", 6) == 0)
        return CTE_BASE64;
    if (n == 16 && strncasecmp(v, "quoted-printable", 16) == 0)
        return CTE_QP;
    return CTE_UNKNOWN;
}

static bool is_text_type(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    return strncasecmp(v, "text/", 5) == 0 || strncasecmp(v, "message/", 8) == 0;
}

/* Quoted-printable as Dovecot's qp-decoder reads it: soft line breaks
 * removed, =XX decoded, white space before a line end dropped, a broken
 * '=' sequence kept as it is. */
static void qp_decode(struct sbuf *out, const unsigned char *p, size_t len)
{
    size_t i = 0;
    if (!sbuf_reserve(out, len + 2))
        return;
    while (i < len) {
        /* one line, without its line end */
        size_t e = i;
        while (e < len && p[e] != '\n')
            e++;
        size_t le = e;
        bool has_lf = e < len;
        if (le > i && p[le - 1] == '\r')
            le--;
        size_t te = le;
        while (te > i && (p[te - 1] == ' ' || p[te - 1] == '\t'))
            te--;
        bool soft = te > i && p[te - 1] == '=';
        size_t stop = soft ? te - 1 : te;
        for (size_t j = i; j < stop; j++) {
            if (p[j] == '=' && j + 2 < stop && hexval(p[j + 1]) >= 0 &&
                hexval(p[j + 2]) >= 0) {
                sbuf_addc(out, (char)(hexval(p[j + 1]) * 16 + hexval(p[j + 2])));
                j += 2;
            } else {
                sbuf_addc(out, (char)p[j]);
            }
        }
        if (has_lf && !soft)
            sbuf_add(out, "\r\n", 2);
        i = has_lf ? e + 1 : e;
    }
}

static const char *param(const struct mime_part *part, const char *name)
{
    for (size_t i = 0; i < part->n_content_type_params; i++)
        if (strcasecmp(part->content_type_params[i].name, name) == 0)
            return part->content_type_params[i].value;
    return NULL;
}

bool search_part_body_text(const struct mime_struct *ms, const struct mime_part *part,
                           struct sbuf *out)
{
    bool text = true;
    enum cte cte = CTE_78BIT;
    for (size_t i = 0; i < part->n_fields; i++) {
        const struct mime_field *mf = &part->fields[i];
        const char *name = (const char *)mime_struct_data(ms) + mf->offset;
        bool ct = mf->name_len == 12 && strncasecmp(name, "Content-Type", 12) == 0;
        bool te = mf->name_len == 25 && strncasecmp(name, "Content-Transfer-Encoding", 25) == 0;
        if (!ct && !te)
            continue;
        struct search_field f;
        if (!search_field_get(ms, part, i, &f)) {
            out->failed = true;
            return false;
        }
        if (ct)
            text = is_text_type(f.value);
        else
            cte = parse_cte(f.value);
        search_field_free(&f);
    }
    if (!text || cte == CTE_UNKNOWN)
        return false;
    const unsigned char *body = mime_struct_data(ms) + part->offset + part->header_size;
    size_t len = (size_t)part->body_size;
    const char *charset = param(part, "charset");
    if (cte == CTE_78BIT) {
        search_charset_to_casemap(out, charset, body, len);
        return true;
    }
    struct sbuf dec = {0};
    if (cte == CTE_BASE64)
        b64_decode(&dec, body, len);
    else
        qp_decode(&dec, body, len);
    search_charset_to_casemap(out, charset, dec.d != NULL ? dec.d : "", dec.len);
    if (dec.failed)
        out->failed = true;
    sbuf_free(&dec);
    return true;
}
