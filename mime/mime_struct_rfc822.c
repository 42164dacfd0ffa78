/* RFC 822/2045/2231 tokens, parameters and address lists, with the exact
 * rules of Dovecot 2.3's lib-mail (rfc822-parser, rfc2231-parser,
 * message-address), because BODYSTRUCTURE and ENVELOPE must come out the
 * same bytes. Written from its documented behaviour; checked byte for byte
 * against a running Dovecot by tests/e2e/imap-render. Every function takes
 * a cursor over raw bytes and never reads past t->end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime_struct_internal.h"

/* atext: 1; alpha/digit and 8-bit: 2; atext but MIME tspecial: 4. */
static const unsigned char atext_tab[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 4,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 4, 0, 4,
    0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 1, 1,
    1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};
#define IS_ATEXT(c) (atext_tab[(unsigned char)(c)] != 0)
#define IS_TOKEN(c) ((atext_tab[(unsigned char)(c)] & 3) != 0)

/* Reading *t->data at end is never done: every caller checks first, and
 * this helper answers 0 (no character) there. */
static unsigned char cur(const struct ms_tok *t)
{
    return t->data < t->end ? *t->data : 0;
}

/* ---- tokens ------------------------------------------------------------- */

/* Skips a (nested) comment at t->data == '('. 1: more input, 0: end,
 * -1: unterminated. Keeps its text (quoted-pairs unescaped) when asked. */
static int skip_comment(struct ms_tok *t)
{
    int level = 1;
    const unsigned char *start;

    if (t->last_comment != NULL)
        t->last_comment->len = 0;
    start = ++t->data;
    for (; t->data < t->end; t->data++) {
        switch (*t->data) {
        case '(':
            level++;
            break;
        case ')':
            if (--level == 0) {
                if (t->last_comment != NULL)
                    ms_str_add(t->last_comment, start, (size_t)(t->data - start));
                t->data++;
                return t->data < t->end ? 1 : 0;
            }
            break;
        case '\\':
            if (t->last_comment != NULL)
                ms_str_add(t->last_comment, start, (size_t)(t->data - start));
            start = t->data + 1;
            t->data++;
            if (t->data >= t->end)
                return -1;
            break;
        default:
            break;
        }
    }
    return -1;
}

int ms_tok_skip_lwsp(struct ms_tok *t)
{
    while (t->data < t->end) {
        unsigned char c = *t->data;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            t->data++;
            continue;
        }
        if (c != '(')
            break;
        if (skip_comment(t) < 0)
            return -1;
    }
    return t->data < t->end ? 1 : 0;
}

int ms_tok_atom(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;

    if (t->data >= t->end || !IS_ATEXT(*t->data))
        return -1;
    for (start = t->data++; t->data < t->end; t->data++) {
        if (IS_ATEXT(*t->data))
            continue;
        ms_str_add(out, start, (size_t)(t->data - start));
        return ms_tok_skip_lwsp(t);
    }
    ms_str_add(out, start, (size_t)(t->data - start));
    return 0;
}

/* dot-atom, allowing white space and comments around the dots (RFC 822). */
int ms_tok_dot_atom(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;
    int ret;

    if (t->data >= t->end || !IS_ATEXT(*t->data))
        return -1;
    for (start = t->data++; t->data < t->end;) {
        if (IS_ATEXT(*t->data)) {
            t->data++;
            continue;
        }
        ms_str_add(out, start, (size_t)(t->data - start));
        if ((ret = ms_tok_skip_lwsp(t)) <= 0)
            return ret;
        if (*t->data != '.')
            return 1;
        t->data++;
        ms_str_addc(out, '.');
        if ((ret = ms_tok_skip_lwsp(t)) <= 0)
            return ret;
        start = t->data;
    }
    ms_str_add(out, start, (size_t)(t->data - start));
    return 0;
}

/* MIME token: atext without tspecials, plus '.'. May be empty. */
int ms_tok_mime_token(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;

    for (start = t->data; t->data < t->end; t->data++) {
        if (IS_TOKEN(*t->data) || *t->data == '.')
            continue;
        ms_str_add(out, start, (size_t)(t->data - start));
        return ms_tok_skip_lwsp(t);
    }
    ms_str_add(out, start, (size_t)(t->data - start));
    return 0;
}

/* At '"': the unquoted content; folding (CR)LFs removed. */
int ms_tok_quoted(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;
    size_t len;

    t->data++;
    for (start = t->data; t->data < t->end; t->data++) {
        switch (*t->data) {
        case '"':
            ms_str_add(out, start, (size_t)(t->data - start));
            t->data++;
            return ms_tok_skip_lwsp(t);
        case '\n':
            len = (size_t)(t->data - start);
            if (len > 0 && start[len - 1] == '\r')
                len--;
            ms_str_add(out, start, len);
            start = t->data + 1;
            break;
        case '\\':
            t->data++;
            if (t->data >= t->end)
                return -1;
            ms_str_add(out, start, (size_t)(t->data - start - 1));
            start = t->data;
            break;
        default:
            break;
        }
    }
    return -1;
}

static int atom_or_dot(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;

    for (start = t->data; t->data < t->end; t->data++) {
        if (IS_ATEXT(*t->data) || *t->data == '.')
            continue;
        ms_str_add(out, start, (size_t)(t->data - start));
        return ms_tok_skip_lwsp(t);
    }
    ms_str_add(out, start, (size_t)(t->data - start));
    return 0;
}

/* phrase: words (atoms with dots, quoted strings) joined by one space. */
int ms_tok_phrase(struct ms_tok *t, struct ms_str *out)
{
    int ret;

    if (t->data >= t->end)
        return 0;
    if (*t->data == '.')
        return -1;
    for (;;) {
        if (*t->data == '"')
            ret = ms_tok_quoted(t, out);
        else
            ret = atom_or_dot(t, out);
        if (ret <= 0)
            return ret;
        if (!IS_ATEXT(*t->data) && *t->data != '"' && *t->data != '.')
            break;
        ms_str_addc(out, ' ');
    }
    return ms_tok_skip_lwsp(t);
}

static int domain_literal(struct ms_tok *t, struct ms_str *out)
{
    const unsigned char *start;

    for (start = t->data; t->data < t->end; t->data++) {
        if (*t->data == '\\') {
            t->data++;
            if (t->data >= t->end)
                break;
        } else if (*t->data == ']') {
            t->data++;
            ms_str_add(out, start, (size_t)(t->data - start));
            return ms_tok_skip_lwsp(t);
        }
    }
    return -1;
}

/* At '@'. */
int ms_tok_domain(struct ms_tok *t, struct ms_str *out)
{
    t->data++;
    if (ms_tok_skip_lwsp(t) <= 0)
        return -1;
    if (*t->data == '[')
        return domain_literal(t, out);
    return ms_tok_dot_atom(t, out);
}

/* "type/subtype" into out; <0 when broken (out keeps what was read). */
int ms_tok_content_type(struct ms_tok *t, struct ms_str *out)
{
    if (ms_tok_skip_lwsp(t) <= 0)
        return -1;
    if (ms_tok_mime_token(t, out) <= 0)
        return -1;
    if (cur(t) != '/')
        return -1;
    t->data++;
    if (ms_tok_skip_lwsp(t) <= 0)
        return -1;
    ms_str_addc(out, '/');
    return ms_tok_mime_token(t, out);
}

/* ";" attribute "=" value. 1: *key_r/value set, 0: end, -1: broken. */
static int content_param(struct ms_tok *t, struct ms_str *key,
                         struct ms_str *value)
{
    int ret;

    key->len = 0;
    value->len = 0;
    if (t->data >= t->end)
        return 0;
    if (*t->data != ';')
        return -1;
    t->data++;
    if (ms_tok_skip_lwsp(t) <= 0)
        return -1;
    if (ms_tok_mime_token(t, key) <= 0)
        return -1;
    if (cur(t) != '=')
        return -1;
    t->data++;
    if ((ret = ms_tok_skip_lwsp(t)) <= 0) {
        /* broken or no value */
    } else if (*t->data == '"') {
        ret = ms_tok_quoted(t, value);
    } else if (*t->data == '=') {
        /* name==?utf-8?b?...?= seen in the wild: take it up to ; or space */
        while (t->data < t->end && *t->data != ';' && *t->data != ' ' &&
               *t->data != '\t' && *t->data != '\r' && *t->data != '\n')
            ms_str_addc(value, (char)*t->data++);
    } else {
        ret = ms_tok_mime_token(t, value);
    }
    return ret < 0 ? -1 : 1;
}

/* ---- parameters (RFC 2231 merge) ---------------------------------------- */

struct rawparam {
    char *key, *value; /* malloc'd */
    unsigned int idx;
    int extended;
    int is2231;
};

static int rawparam_cmp(const void *a, const void *b)
{
    const struct rawparam *x = a, *y = b;
    int r = strcmp(x->key, y->key);
    if (r != 0)
        return r;
    return x->idx < y->idx ? -1 : (x->idx > y->idx ? 1 : 0);
}

static char *xstrndup(const char *s, size_t n, int *failed)
{
    char *p = malloc(n + 1);
    if (p == NULL) {
        *failed = 1;
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void rawparams_free(struct rawparam *raw, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(raw[i].key);
        free(raw[i].value);
    }
    free(raw);
}

/* Appends one merged RFC 2231 group raw[i..next) to out. */
static void merge_2231(struct ms_arena *a, const struct rawparam *r, size_t i,
                       size_t next, struct ms_str *tmp, struct mime_param *out,
                       size_t *n_out)
{
    int ok = 1, have_ext = 0;
    unsigned int next_idx = 0;
    size_t j;

    for (j = i; j < next; j++) {
        if (r[j].idx != next_idx)
            ok = 0;
        if (r[j].extended)
            have_ext = 1;
        next_idx++;
    }
    if (!ok) {
        /* an index is missing: keep the pieces as they were named */
        for (j = i; j < next; j++) {
            char num[16];
            int nl = snprintf(num, sizeof(num), "*%u", r[j].idx);
            tmp->len = 0;
            ms_str_add(tmp, r[j].key, strlen(r[j].key));
            ms_str_add(tmp, num, (size_t)nl);
            if (r[j].extended)
                ms_str_addc(tmp, '*');
            out[*n_out].name = ms_strndup(a, tmp->data, tmp->len);
            out[*n_out].value = ms_strndup(a, r[j].value, strlen(r[j].value));
            (*n_out)++;
        }
        return;
    }
    tmp->len = 0;
    if (!r[i].extended && have_ext)
        ms_str_add(tmp, "''", 2);
    for (j = i; j < next; j++) {
        const char *v = r[j].value;
        if (!r[j].extended && have_ext) {
            for (; *v != '\0'; v++) {
                if (*v == '%')
                    ms_str_add(tmp, "%25", 3);
                else
                    ms_str_addc(tmp, *v);
            }
        } else {
            ms_str_add(tmp, v, strlen(v));
        }
    }
    out[*n_out].value = ms_strndup(a, tmp->data ? tmp->data : "", tmp->len);
    tmp->len = 0;
    ms_str_add(tmp, r[i].key, strlen(r[i].key));
    if (have_ext)
        ms_str_addc(tmp, '*');
    out[*n_out].name = ms_strndup(a, tmp->data, tmp->len);
    (*n_out)++;
}

long ms_parse_params(struct ms_tok *t, struct ms_arena *a,
                     const struct mime_param **params_r)
{
    struct ms_str key = {0}, value = {0}, tmp = {0};
    struct rawparam *raw = NULL, *r2 = NULL;
    size_t n_raw = 0, cap_raw = 0, n_out = 0, n2 = 0, i, j;
    struct mime_param *out = NULL;
    unsigned int idx = 0; /* not reset for "name*": kept like Dovecot's */
    int failed = 0, ret;

    *params_r = NULL;
    while ((ret = content_param(t, &key, &value)) != 0) {
        struct rawparam rp = {0};
        const char *k, *p;

        if (ret < 0) {
            /* try to continue after the broken byte */
            if (t->data >= t->end)
                break;
            t->data++;
            continue;
        }
        k = ms_str_c(&key);
        p = strchr(k, '*');
        if (p != NULL) {
            const char *p2 = p;
            int extended;
            if (p[1] != '\0') {
                p++;
                idx = 0;
                for (; *p >= '0' && *p <= '9'; p++)
                    idx = idx * 10 + (unsigned int)(*p - '0');
            }
            if (*p != '*') {
                extended = 0;
            } else {
                extended = 1;
                p++;
            }
            if (*p == '\0') {
                rp.key = xstrndup(k, (size_t)(p2 - k), &failed);
                rp.idx = idx;
                rp.extended = extended;
                rp.is2231 = 1;
            } else {
                p = NULL;
            }
        }
        if (p == NULL)
            rp.key = xstrndup(k, key.len, &failed);
        rp.value = xstrndup(ms_str_c(&value), value.len, &failed);
        if (n_raw == cap_raw) {
            size_t nc = cap_raw ? cap_raw * 2 : 8;
            struct rawparam *nr = realloc(raw, nc * sizeof(*raw));
            if (nr == NULL) {
                free(rp.key);
                free(rp.value);
                failed = 1;
                break;
            }
            raw = nr;
            cap_raw = nc;
        }
        raw[n_raw++] = rp;
        if (failed || key.failed || value.failed) {
            failed = 1;
            break;
        }
    }
    if (failed || n_raw == 0)
        goto done;

    out = ms_alloc(a, n_raw * sizeof(*out));
    r2 = malloc(n_raw * sizeof(*r2));
    if (out == NULL || r2 == NULL) {
        failed = 1;
        goto done;
    }
    /* plain parameters first, in order; then the RFC 2231 ones sorted by
     * key (case-sensitively) and index, merged per key (case-insensitive) */
    for (i = 0; i < n_raw; i++) {
        if (raw[i].is2231) {
            r2[n2++] = raw[i];
            continue;
        }
        out[n_out].name = ms_strndup(a, raw[i].key, strlen(raw[i].key));
        out[n_out].value = ms_strndup(a, raw[i].value, strlen(raw[i].value));
        n_out++;
    }
    if (n2 > 0)
        qsort(r2, n2, sizeof(*r2), rawparam_cmp);
    for (i = 0; i < n2; i = j) {
        for (j = i; j < n2 && strcasecmp(r2[i].key, r2[j].key) == 0; j++)
            ;
        merge_2231(a, r2, i, j, &tmp, out, &n_out);
    }
done:
    free(r2);
    rawparams_free(raw, n_raw);
    if (tmp.failed || key.failed || value.failed)
        failed = 1;
    ms_str_free(&key);
    ms_str_free(&value);
    ms_str_free(&tmp);
    if (failed || a->failed)
        return -1;
    *params_r = n_out ? out : NULL;
    return (long)n_out;
}

/* ---- addresses ------------------------------------------------------------ */

struct addr_ctx {
    struct ms_arena *a;
    struct ms_tok t;
    struct ms_str comment;
    struct ms_str str;
    struct mime_address *first, *last;
    /* the address being built */
    const char *name, *route, *mailbox, *domain;
    int invalid;
};

static const char *arena_str(struct addr_ctx *c, const struct ms_str *s)
{
    return ms_strndup(c->a, s->data ? s->data : "", s->len);
}

static void add_address(struct addr_ctx *c)
{
    struct mime_address *addr = ms_alloc(c->a, sizeof(*addr));

    if (addr != NULL) {
        addr->name = c->name;
        addr->route = c->route;
        addr->mailbox = c->mailbox;
        addr->domain = c->domain;
        if (c->first == NULL)
            c->first = addr;
        else
            c->last->next = addr;
        c->last = addr;
    }
    c->name = c->route = c->mailbox = c->domain = NULL;
    c->invalid = 0;
}

static int parse_local_part(struct addr_ctx *c)
{
    int ret;

    c->str.len = 0;
    if (*c->t.data == '"')
        ret = ms_tok_quoted(&c->t, &c->str);
    else
        ret = ms_tok_dot_atom(&c->t, &c->str);
    if (ret < 0)
        return -1;
    c->mailbox = arena_str(c, &c->str);
    return ret;
}

static int parse_domain(struct addr_ctx *c)
{
    int ret;

    c->str.len = 0;
    if ((ret = ms_tok_domain(&c->t, &c->str)) < 0)
        return -1;
    c->domain = arena_str(c, &c->str);
    return ret;
}

static int parse_domain_list(struct addr_ctx *c)
{
    int ret;

    c->str.len = 0;
    for (;;) {
        if (c->t.data >= c->t.end)
            return 0;
        if (*c->t.data != '@')
            break;
        if (c->str.len > 0)
            ms_str_addc(&c->str, ',');
        ms_str_addc(&c->str, '@');
        if ((ret = ms_tok_domain(&c->t, &c->str)) <= 0)
            return ret;
        while (ms_tok_skip_lwsp(&c->t) > 0 && *c->t.data == ',')
            c->t.data++;
    }
    c->route = arena_str(c, &c->str);
    return 1;
}

static int parse_angle_addr(struct addr_ctx *c)
{
    c->t.data++; /* '<' */
    if (ms_tok_skip_lwsp(&c->t) <= 0)
        return -1;
    if (*c->t.data == '@') {
        if (parse_domain_list(c) > 0 && cur(&c->t) == ':') {
            c->t.data++;
        } else {
            c->route = "INVALID_ROUTE";
            if (c->t.data >= c->t.end)
                return -1;
        }
        if (ms_tok_skip_lwsp(&c->t) <= 0)
            return -1;
    }
    if (*c->t.data != '>') {
        if (parse_local_part(c) <= 0)
            return -1;
        if (cur(&c->t) == '@' && c->t.data < c->t.end) {
            if (parse_domain(c) <= 0)
                return -1;
        }
    }
    if (c->t.data >= c->t.end || *c->t.data != '>')
        return -1;
    c->t.data++;
    return ms_tok_skip_lwsp(&c->t);
}

static int parse_name_addr(struct addr_ctx *c)
{
    c->str.len = 0;
    if (ms_tok_phrase(&c->t, &c->str) <= 0 || cur(&c->t) != '<' ||
        c->t.data >= c->t.end)
        return -1;
    c->name = arena_str(c, &c->str);
    if (c->name != NULL && c->name[0] == '\0')
        c->name = NULL; /* "<address>" without a display name */
    if (parse_angle_addr(c) < 0) {
        c->domain = "SYNTAX_ERROR";
        c->invalid = 1;
    }
    return c->t.data < c->t.end ? 1 : 0;
}

static int parse_addr_spec(struct addr_ctx *c)
{
    int ret, ret2 = -2;
    int quoted;

    c->comment.len = 0;
    quoted = *c->t.data == '"';
    ret = parse_local_part(c);
    if (ret <= 0)
        c->invalid = 1;
    if (ret != 0 && c->t.data < c->t.end && *c->t.data == '@') {
        ret2 = parse_domain(c);
        if (ret2 <= 0)
            ret = ret2;
    }
    if (c->comment.len > 0) {
        c->name = arena_str(c, &c->comment);
    } else if (ret2 == -2) {
        /* "user" alone is a mailbox; "user more words" a display name */
        size_t before;
        ms_str_addc(&c->str, ' ');
        before = c->str.len;
        (void)ms_tok_phrase(&c->t, &c->str);
        if (c->str.len != before) {
            c->mailbox = NULL;
            c->name = arena_str(c, &c->str);
        } else if (!quoted) {
            c->domain = "";
        }
        c->invalid = 1;
        ret = -1;
    }
    return ret;
}

static void add_fixed_address(struct addr_ctx *c)
{
    /* Dovecot fills the gaps for ENVELOPE (fill_missing) */
    if (c->mailbox == NULL)
        c->mailbox = "MISSING_MAILBOX";
    if (c->domain == NULL || c->domain[0] == '\0')
        c->domain = "MISSING_DOMAIN";
    add_address(c);
}

static int parse_mailbox(struct addr_ctx *c)
{
    const unsigned char *start = c->t.data;
    int ret;

    if ((ret = parse_name_addr(c)) < 0) {
        c->t.data = start;
        c->name = c->route = c->mailbox = c->domain = NULL;
        c->invalid = 0;
        ret = parse_addr_spec(c);
        if (c->invalid && c->name == NULL && c->mailbox != NULL &&
            c->domain == NULL) {
            c->name = c->mailbox;
            c->mailbox = NULL;
        }
    }
    add_fixed_address(c);
    return ret;
}

static int parse_group(struct addr_ctx *c)
{
    int ret;

    c->str.len = 0;
    if (ms_tok_phrase(&c->t, &c->str) <= 0 || cur(&c->t) != ':' ||
        c->t.data >= c->t.end)
        return -1;
    c->t.data++;
    ret = ms_tok_skip_lwsp(&c->t);
    c->mailbox = arena_str(c, &c->str);
    add_address(c);

    if (ret > 0 && *c->t.data != ';') {
        for (;;) {
            (void)parse_mailbox(c);
            if (c->t.data >= c->t.end || *c->t.data != ',')
                break;
            c->t.data++;
            if (ms_tok_skip_lwsp(&c->t) <= 0) {
                ret = -1;
                break;
            }
        }
    }
    if (ret >= 0) {
        if (c->t.data >= c->t.end || *c->t.data != ';') {
            ret = -1;
        } else {
            c->t.data++;
            ret = ms_tok_skip_lwsp(&c->t);
        }
    }
    add_address(c); /* group end: all NULL */
    return ret == 0 ? 0 : 1;
}

static int parse_address(struct addr_ctx *c)
{
    const unsigned char *start = c->t.data;
    int ret;

    if ((ret = parse_group(c)) < 0) {
        c->t.data = start;
        c->name = c->route = c->mailbox = c->domain = NULL;
        ret = parse_mailbox(c);
    }
    return ret;
}

const struct mime_address *ms_parse_addresses(struct ms_arena *a,
                                              const char *value, size_t len)
{
    struct addr_ctx c;
    int ret;

    memset(&c, 0, sizeof(c));
    c.a = a;
    c.t.data = (const unsigned char *)value;
    c.t.end = c.t.data + len;
    c.t.last_comment = &c.comment;

    if (ms_tok_skip_lwsp(&c.t) > 0) {
        for (;;) {
            if (parse_address(&c) == 0)
                break;
            if (c.t.data >= c.t.end || *c.t.data != ',')
                break;
            c.t.data++;
            if ((ret = ms_tok_skip_lwsp(&c.t)) <= 0) {
                if (ret < 0)
                    add_fixed_address(&c); /* ends with garbage */
                break;
            }
        }
    }
    if (c.str.failed || c.comment.failed)
        a->failed = 1;
    ms_str_free(&c.str);
    ms_str_free(&c.comment);
    return c.first;
}
