/* Content-Type and Content-Transfer-Encoding values as readers take them
 * (FORMAT-SPEC.md 2.6): RFC 2045 syntax with RFC 5322 CFWS (white space
 * and nested comments) between tokens, quoted-string values with
 * quoted-pairs, case-insensitive type, subtype and parameter names. RFC 2231
 * parameters ("name*", "name*0") are other parameters: not decoded. Pure
 * functions over an unfolded value; no I/O. */
#include <stdlib.h>
#include <string.h>

#include "mime_internal.h"

#define COMMENT_DEPTH 32

struct lex {
    const unsigned char *p, *end;
};

/* Skips white space and comments; -1 on an unterminated or too deep
 * comment. */
static int skip_cfws(struct lex *x)
{
    int depth = 0;
    while (x->p < x->end) {
        unsigned char c = *x->p;
        int ws = c == ' ' || c == '\t' || c == '\r' || c == '\n';
        if (depth == 0 && !ws && c != '(')
            break; /* a token or a special */
        if (c == '(' && ++depth > COMMENT_DEPTH)
            return -1;
        if (depth > 0 && c == ')')
            depth--;
        if (depth > 0 && c == '\\' && ++x->p >= x->end)
            return -1; /* a quoted-pair: skip the quoted octet too */
        x->p++;
    }
    return depth == 0 ? 0 : -1;
}

static int is_tspecial(unsigned char c)
{
    return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static int is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !is_tspecial(c);
}

/* A token; its length, 0 when there is none. */
static size_t token(struct lex *x, const unsigned char **t_r)
{
    const unsigned char *s = x->p;
    while (x->p < x->end && is_token_char(*x->p))
        x->p++;
    *t_r = s;
    return (size_t)(x->p - s);
}

/* A quoted-string, unquoted into a malloc'd string; NULL on a syntax error
 * (or no memory: both make the value unusable). */
static char *quoted(struct lex *x)
{
    char *out = malloc((size_t)(x->end - x->p) + 1);
    size_t n = 0;
    if (out == NULL)
        return NULL;
    x->p++; /* the opening quote */
    while (x->p < x->end && *x->p != '"') {
        unsigned char c = *x->p;
        if (c == '\r' || c == '\n')
            break;
        if (c == '\\') {
            if (x->p + 1 >= x->end || x->p[1] == '\r' || x->p[1] == '\n')
                break;
            c = x->p[1];
            x->p++;
        }
        out[n++] = (char)c;
        x->p++;
    }
    if (x->p >= x->end || *x->p != '"') {
        free(out);
        return NULL;
    }
    x->p++;
    out[n] = '\0';
    return out;
}

static void lower_copy(char *dst, size_t cap, const unsigned char *s, size_t n)
{
    if (n >= cap) { /* longer than any type we compare with */
        dst[0] = '\0';
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    dst[n] = '\0';
}

static int name_is(const unsigned char *s, size_t n, const char *want)
{
    if (n != strlen(want))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i];
        if (c != (unsigned char)want[i])
            return 0;
    }
    return 1;
}

void mime_ctype_clear(struct mime_ctype *ct)
{
    free(ct->protocol);
    free(ct->boundary);
    memset(ct, 0, sizeof(*ct));
}

/* Parses the parameter list after the subtype. 0, or -1 on a syntax
 * error (what was parsed before it is kept). */
static int parameters(struct lex *x, struct mime_ctype *ct)
{
    for (;;) {
        if (skip_cfws(x) != 0)
            return -1;
        if (x->p >= x->end)
            return 0;
        if (*x->p != ';')
            return -1; /* trailing junk */
        x->p++;
        if (skip_cfws(x) != 0)
            return -1;
        if (x->p >= x->end)
            return 0; /* a trailing ";" */
        const unsigned char *name;
        size_t nl = token(x, &name);
        if (nl == 0 || skip_cfws(x) != 0 || x->p >= x->end || *x->p != '=')
            return -1;
        x->p++;
        if (skip_cfws(x) != 0 || x->p >= x->end)
            return -1;
        char *value;
        if (*x->p == '"') {
            if ((value = quoted(x)) == NULL)
                return -1;
        } else {
            const unsigned char *v;
            size_t vl = token(x, &v);
            if (vl == 0 || (value = strndup((const char *)v, vl)) == NULL)
                return -1;
        }
        char **slot = NULL;
        if (name_is(name, nl, "protocol")) {
            ct->n_protocol++;
            slot = &ct->protocol;
        } else if (name_is(name, nl, "boundary")) {
            ct->n_boundary++;
            slot = &ct->boundary;
        }
        if (slot != NULL && *slot == NULL)
            *slot = value;
        else
            free(value);
    }
}

void mime_ctype_parse(const char *value, size_t len, struct mime_ctype *ct)
{
    struct lex x = {(const unsigned char *)value,
                    (const unsigned char *)value + len};
    const unsigned char *t, *s;
    size_t tl, sl;
    memset(ct, 0, sizeof(*ct));
    ct->syntax_error = 1;
    if (skip_cfws(&x) != 0 || (tl = token(&x, &t)) == 0 ||
        skip_cfws(&x) != 0 || x.p >= x.end || *x.p != '/')
        return;
    x.p++;
    if (skip_cfws(&x) != 0 || (sl = token(&x, &s)) == 0)
        return;
    lower_copy(ct->type, sizeof(ct->type), t, tl);
    lower_copy(ct->subtype, sizeof(ct->subtype), s, sl);
    ct->has_type = 1;
    ct->syntax_error = parameters(&x, ct) != 0;
}

int mime_ctype_is(const struct mime_ctype *ct, const char *type,
                  const char *subtype)
{
    return ct->has_type && strcmp(ct->type, type) == 0 &&
           strcmp(ct->subtype, subtype) == 0;
}

int mime_cte_parse(const char *value, size_t len, char *out, size_t cap)
{
    struct lex x = {(const unsigned char *)value,
                    (const unsigned char *)value + len};
    const unsigned char *t;
    size_t tl;
    if (skip_cfws(&x) != 0 || (tl = token(&x, &t)) == 0 ||
        skip_cfws(&x) != 0 || x.p != x.end)
        return -1;
    lower_copy(out, cap, t, tl);
    return out[0] != '\0' ? 0 : -1;
}

int mime_boundary_valid(const char *b)
{
    size_t n = strlen(b);
    if (n == 0 || n > MIME_MAX_BOUNDARY || b[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                    (c >= 'A' && c <= 'Z');
        if (!alnum && strchr("'()+_,-./:=? ", c) == NULL)
            return 0;
    }
    return 1;
}

/* 1 when s[0..n) contains want (lower case) case-insensitively. */
static int contains_ci(const char *s, size_t n, const char *want)
{
    size_t wl = strlen(want);
    for (size_t i = 0; i + wl <= n; i++)
        if (name_is((const unsigned char *)s + i, wl, want))
            return 1;
    return 0;
}

int mime_ctype_claims_qkd(const struct mime_ctype *ct, const char *raw,
                          size_t raw_len)
{
    if (!mime_ctype_is(ct, "multipart", "encrypted"))
        return 0;
    if (ct->protocol != NULL && name_is((const unsigned char *)ct->protocol,
                                        strlen(ct->protocol), MIME_PROTOCOL))
        return 1;
    return ct->syntax_error && contains_ci(raw, raw_len, MIME_PROTOCOL);
}
