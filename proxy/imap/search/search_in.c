/* imap_search_in_parse: a criteria text -> argument tree (tests, tools).
 * Atoms, "quoted" strings with \ escapes, {n} / {n+} literals followed by
 * CRLF and n bytes, and parenthesised lists. */
#include <stdlib.h>
#include <string.h>

#include "search_internal.h"

#define MAX_DEPTH 64

struct node {
    struct imap_search_in in;
    struct node *first, *last, *next;
    size_t count;
    char *buf; /* owned string bytes */
};

/* One allocation holds the tree: the nodes are copied into an array. */
struct in_block {
    size_t n;
    struct imap_search_in nodes[];
};

static void node_free(struct node *n)
{
    while (n != NULL) {
        struct node *next = n->next;
        node_free(n->first);
        free(n->buf);
        free(n);
        n = next;
    }
}

static bool is_atom_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '"' && c != '{' && c != '%' &&
           c != '\\';
}

static int parse_list(const char **pp, const char *end, struct node *parent, unsigned depth,
                      const char **error_r)
{
    const char *p = *pp;
    while (true) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end || *p == '\r' || *p == '\n')
            break;
        if (*p == ')') {
            if (depth == 0) {
                *error_r = "unexpected ')'";
                return -1;
            }
            break;
        }
        struct node *n = calloc(1, sizeof(*n));
        if (n == NULL) {
            *error_r = "out of memory";
            return -1;
        }
        if (parent->last != NULL)
            parent->last->next = n;
        else
            parent->first = n;
        parent->last = n;
        parent->count++;
        if (*p == '(') {
            if (depth + 1 >= MAX_DEPTH) {
                *error_r = "too deeply nested";
                return -1;
            }
            p++;
            n->in.type = IMAP_SEARCH_IN_LIST;
            if (parse_list(&p, end, n, depth + 1, error_r) < 0)
                return -1;
            if (p >= end || *p != ')') {
                *error_r = "missing ')'";
                return -1;
            }
            p++;
        } else if (*p == '"') {
            p++;
            n->in.type = IMAP_SEARCH_IN_STRING;
            n->buf = malloc((size_t)(end - p) + 1);
            if (n->buf == NULL) {
                *error_r = "out of memory";
                return -1;
            }
            size_t o = 0;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end)
                    p++;
                n->buf[o++] = *p++;
            }
            if (p >= end) {
                *error_r = "unterminated quoted string";
                return -1;
            }
            p++;
            n->in.len = o;
        } else if (*p == '{') {
            /* The size by hand, not strtoull: the text is not NUL-terminated
             * (found by fuzzing: strtoull read past its end). */
            const char *e = p + 1;
            unsigned long long sz = 0;
            while (e < end && *e >= '0' && *e <= '9' && sz <= (unsigned long long)(end - p))
                sz = sz * 10 + (unsigned long long)(*e++ - '0');
            if (e == p + 1)
                goto bad_literal;
            if (e < end && *e == '+')
                e++;
            if (e >= end || *e != '}')
                goto bad_literal;
            e++;
            if (e < end && *e == '\r')
                e++;
            if (e >= end || *e != '\n')
                goto bad_literal;
            e++;
            if (sz > (unsigned long long)(end - e))
                goto bad_literal;
            n->in.type = IMAP_SEARCH_IN_STRING;
            n->buf = malloc((size_t)sz + 1);
            if (n->buf == NULL) {
                *error_r = "out of memory";
                return -1;
            }
            memcpy(n->buf, e, (size_t)sz);
            n->in.len = (size_t)sz;
            p = e + sz;
        } else {
            const char *s = p;
            while (p < end && (is_atom_char((unsigned char)*p) || *p == '%' || *p == '\\' ||
                               (unsigned char)*p >= 0x80))
                p++;
            if (p == s) {
                *error_r = "invalid character";
                return -1;
            }
            n->in.type = IMAP_SEARCH_IN_ATOM;
            n->buf = malloc((size_t)(p - s) + 1);
            if (n->buf == NULL) {
                *error_r = "out of memory";
                return -1;
            }
            memcpy(n->buf, s, (size_t)(p - s));
            n->in.len = (size_t)(p - s);
        }
    }
    *pp = p;
    return 0;
bad_literal:
    *error_r = "bad literal";
    return -1;
}

static size_t count_nodes(const struct node *n, size_t *bytes)
{
    size_t c = 0;
    for (; n != NULL; n = n->next) {
        c++;
        *bytes += n->in.len + 1;
        c += count_nodes(n->first, bytes);
    }
    return c;
}

/* Lays siblings out contiguously: list children are arrays. */
static void flatten(const struct node *first, struct imap_search_in *dst, size_t *next_free,
                    struct imap_search_in *base, char **strp)
{
    size_t i = 0;
    for (const struct node *n = first; n != NULL; n = n->next, i++) {
        dst[i] = n->in;
        if (n->in.type == IMAP_SEARCH_IN_LIST) {
            struct imap_search_in *kids = base + *next_free;
            *next_free += n->count;
            dst[i].list = kids;
            dst[i].count = n->count;
            dst[i].str = "";
            flatten(n->first, kids, next_free, base, strp);
        } else {
            memcpy(*strp, n->buf, n->in.len);
            (*strp)[n->in.len] = '\0';
            dst[i].str = *strp;
            *strp += n->in.len + 1;
        }
    }
}

int imap_search_in_parse(const char *text, size_t len, struct imap_search_in **in_r,
                         size_t *count_r, const char **error_r)
{
    struct node root = {0};
    const char *p = text, *end = text + len;
    const char *err = NULL;
    *in_r = NULL;
    *count_r = 0;
    if (parse_list(&p, end, &root, 0, &err) < 0 || (p < end && *p == ')')) {
        node_free(root.first);
        *error_r = err != NULL ? err : "unexpected ')'";
        return IMAP_SEARCH_ESYNTAX;
    }
    size_t bytes = 0;
    size_t total = count_nodes(root.first, &bytes);
    struct in_block *blk = malloc(sizeof(*blk) + (total + 1) * sizeof(struct imap_search_in) + bytes + 1);
    if (blk == NULL) {
        node_free(root.first);
        *error_r = "out of memory";
        return IMAP_SEARCH_ENOMEM;
    }
    blk->n = total;
    char *strp = (char *)(blk->nodes + total + 1);
    size_t next_free = root.count;
    flatten(root.first, blk->nodes, &next_free, blk->nodes, &strp);
    node_free(root.first);
    /* the caller holds the block through its nodes (imap_search_in_free) */
    *in_r = blk->nodes;
    *count_r = root.count;
    // cppcheck-suppress memleak
    return 0;
}

void imap_search_in_free(struct imap_search_in **in)
{
    if (in == NULL || *in == NULL)
        return;
    free((char *)*in - offsetof(struct in_block, nodes));
    *in = NULL;
}
