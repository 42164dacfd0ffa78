/* imap_search_parse: the criteria argument tree -> struct imap_search;
 * imap_search_write: back to IMAP syntax; what each key needs. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "search_internal.h"

#define MAX_DEPTH 100
#define MAX_NODES 10000

struct imap_search {
    struct imap_search_node *root;
    void **allocs; /* every allocation of the tree, freed together */
    size_t n_allocs, cap_allocs;
    size_t n_nodes;
    unsigned needs;
};

struct pctx {
    struct imap_search *s;
    const char *charset;
    const char *error;
    int code;
};

static void *s_alloc(struct pctx *c, size_t size)
{
    struct imap_search *s = c->s;
    if (s->n_allocs == s->cap_allocs) {
        size_t cap = s->cap_allocs != 0 ? s->cap_allocs * 2 : 32;
        void **a = realloc(s->allocs, cap * sizeof(*a));
        if (a == NULL)
            return NULL;
        s->allocs = a;
        s->cap_allocs = cap;
    }
    void *p = calloc(1, size != 0 ? size : 1);
    if (p != NULL)
        s->allocs[s->n_allocs++] = p;
    return p;
}

static int fail(struct pctx *c, int code, const char *text)
{
    if (c->error == NULL) {
        c->error = text;
        c->code = code;
    }
    return -1;
}

static struct imap_search_node *new_node(struct pctx *c, enum imap_search_op op)
{
    if (++c->s->n_nodes > MAX_NODES) {
        fail(c, IMAP_SEARCH_ELIMIT, "Search query too complex");
        return NULL;
    }
    struct imap_search_node *n = s_alloc(c, sizeof(*n));
    if (n == NULL) {
        fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
        return NULL;
    }
    n->op = op;
    return n;
}

static bool atom_is(const struct imap_search_in *a, const char *name)
{
    return a->type == IMAP_SEARCH_IN_ATOM && strlen(name) == a->len &&
           strncasecmp(a->str, name, a->len) == 0;
}

static char *dup_bytes(struct pctx *c, const char *p, size_t len)
{
    char *d = s_alloc(c, len + 1);
    if (d == NULL) {
        fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
        return NULL;
    }
    memcpy(d, p, len);
    return d;
}

/* An astring argument, converted from the CHARSET to UTF-8. */
static const char *get_string(struct pctx *c, const struct imap_search_in *a)
{
    if (a->type == IMAP_SEARCH_IN_LIST) {
        fail(c, IMAP_SEARCH_ESYNTAX, "Invalid search arguments: string expected");
        return NULL;
    }
    if (memchr(a->str, '\0', a->len) != NULL) {
        fail(c, IMAP_SEARCH_ESYNTAX, "NUL in search string");
        return NULL;
    }
    if (search_charset_is_utf8(c->charset))
        return dup_bytes(c, a->str, a->len);
    struct sbuf b = {0};
    if (!search_charset_to_utf8(&b, c->charset, a->str, a->len)) {
        sbuf_free(&b);
        fail(c, IMAP_SEARCH_EBADCHARSET, "Unknown charset");
        return NULL;
    }
    const char *r = b.failed ? NULL : dup_bytes(c, b.d != NULL ? b.d : "", b.len);
    if (b.failed)
        fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
    sbuf_free(&b);
    return r;
}

static bool get_number(const struct imap_search_in *a, uint64_t *n_r)
{
    if (a->type == IMAP_SEARCH_IN_LIST || a->len == 0 || a->len > 20)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < a->len; i++) {
        if (a->str[i] < '0' || a->str[i] > '9')
            return false;
        uint64_t d = (uint64_t)(a->str[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *n_r = n;
    return true;
}

int64_t search_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};

bool search_imap_date(const char *s, size_t len, int64_t *t_r)
{
    /* date-day "-" date-month "-" date-year; day 1 or 2 digits */
    size_t i = 0;
    unsigned day = 0;
    while (i < len && i < 2 && isdigit((unsigned char)s[i]))
        day = day * 10 + (unsigned)(s[i++] - '0');
    if (i == 0 || i >= len || s[i] != '-' || len - i != 9)
        return false;
    i++;
    int mon = -1;
    for (int m = 0; m < 12; m++)
        if (strncasecmp(s + i, months[m], 3) == 0)
            mon = m;
    if (mon < 0 || s[i + 3] != '-')
        return false;
    i += 4;
    int64_t year = 0;
    for (size_t k = 0; k < 4; k++) {
        if (!isdigit((unsigned char)s[i + k]))
            return false;
        year = year * 10 + (s[i + k] - '0');
    }
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (day < 1 || day > mdays[mon])
        return false;
    *t_r = search_days_from_civil(year, (unsigned)mon + 1, day) * 86400;
    return true;
}

static bool parse_set(struct pctx *c, const char *s, size_t len, struct imap_search_node *n)
{
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ',')
            count++;
    struct imap_search_range *r = s_alloc(c, count * sizeof(*r));
    if (r == NULL) {
        fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
        return false;
    }
    size_t k = 0, i = 0;
    while (i <= len) {
        uint32_t v[2];
        int nv = 0;
        while (true) {
            if (i < len && s[i] == '*') {
                v[nv++] = IMAP_SEARCH_STAR;
                i++;
            } else {
                uint64_t x = 0;
                size_t st = i;
                while (i < len && s[i] >= '0' && s[i] <= '9') {
                    x = x * 10 + (uint64_t)(s[i] - '0');
                    if (x > UINT32_MAX)
                        return false;
                    i++;
                }
                if (i == st || x == 0)
                    return false;
                v[nv++] = (uint32_t)x;
            }
            if (nv == 1 && i < len && s[i] == ':') {
                i++;
                continue;
            }
            break;
        }
        if (nv == 1)
            v[1] = v[0];
        r[k].lo = v[0] < v[1] ? v[0] : v[1];
        r[k].hi = v[0] < v[1] ? v[1] : v[0];
        k++;
        if (i == len)
            break;
        if (s[i] != ',')
            return false;
        i++;
    }
    n->ranges = r;
    n->n_ranges = k;
    return true;
}

static bool is_set_atom(const struct imap_search_in *a)
{
    if (a->type != IMAP_SEARCH_IN_ATOM || a->len == 0)
        return false;
    for (size_t i = 0; i < a->len; i++)
        if (!isdigit((unsigned char)a->str[i]) && a->str[i] != ':' && a->str[i] != ',' &&
            a->str[i] != '*')
            return false;
    return true;
}

static const struct {
    const char *name;
    const char *flag;
    bool set;
} flag_keys[] = {
    {"ANSWERED", "\\Answered", true}, {"DELETED", "\\Deleted", true},
    {"DRAFT", "\\Draft", true},       {"FLAGGED", "\\Flagged", true},
    {"RECENT", "\\Recent", true},     {"SEEN", "\\Seen", true},
    {"UNANSWERED", "\\Answered", false}, {"UNDELETED", "\\Deleted", false},
    {"UNDRAFT", "\\Draft", false},    {"UNFLAGGED", "\\Flagged", false},
    {"UNSEEN", "\\Seen", false},      {"OLD", "\\Recent", false},
};

static const struct {
    const char *name;
    enum imap_search_op op;
} string_keys[] = {
    {"BCC", IMAP_SEARCH_BCC},   {"BODY", IMAP_SEARCH_BODY},       {"CC", IMAP_SEARCH_CC},
    {"FROM", IMAP_SEARCH_FROM}, {"SUBJECT", IMAP_SEARCH_SUBJECT}, {"TEXT", IMAP_SEARCH_TEXT},
    {"TO", IMAP_SEARCH_TO},
};

static const struct {
    const char *name;
    enum imap_search_op op;
} date_keys[] = {
    {"BEFORE", IMAP_SEARCH_BEFORE},         {"ON", IMAP_SEARCH_ON},
    {"SINCE", IMAP_SEARCH_SINCE},           {"SENTBEFORE", IMAP_SEARCH_SENTBEFORE},
    {"SENTON", IMAP_SEARCH_SENTON},         {"SENTSINCE", IMAP_SEARCH_SENTSINCE},
};

static struct imap_search_node *parse_key(struct pctx *c, const struct imap_search_in *args,
                                          size_t count, size_t *i, unsigned depth);

static struct imap_search_node *parse_and(struct pctx *c, const struct imap_search_in *args,
                                          size_t count, unsigned depth)
{
    if (count == 0) {
        fail(c, IMAP_SEARCH_ESYNTAX, "Missing search parameters");
        return NULL;
    }
    struct imap_search_node *n = new_node(c, IMAP_SEARCH_AND);
    if (n == NULL)
        return NULL;
    const struct imap_search_node **kids = s_alloc(c, count * sizeof(struct imap_search_node *));
    if (kids == NULL) {
        fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
        return NULL;
    }
    size_t i = 0, k = 0;
    while (i < count) {
        struct imap_search_node *kid = parse_key(c, args, count, &i, depth + 1);
        if (kid == NULL)
            return NULL;
        kids[k++] = kid;
    }
    n->children = (const struct imap_search_node *const *)kids;
    n->n_children = k;
    return n;
}

static struct imap_search_node *parse_key(struct pctx *c, const struct imap_search_in *args,
                                          size_t count, size_t *i, unsigned depth)
{
    if (depth > MAX_DEPTH) {
        fail(c, IMAP_SEARCH_ELIMIT, "Search query too deeply nested");
        return NULL;
    }
    if (*i >= count) {
        fail(c, IMAP_SEARCH_ESYNTAX, "Missing search parameters");
        return NULL;
    }
    const struct imap_search_in *a = &args[(*i)++];
    if (a->type == IMAP_SEARCH_IN_LIST)
        return parse_and(c, a->list, a->count, depth);
    if (a->type != IMAP_SEARCH_IN_ATOM) {
        fail(c, IMAP_SEARCH_ESYNTAX, "Unknown argument");
        return NULL;
    }
    struct imap_search_node *n;
    if (atom_is(a, "ALL"))
        return new_node(c, IMAP_SEARCH_ALL);
    if (atom_is(a, "$"))
        return new_node(c, IMAP_SEARCH_SAVED);
    if (is_set_atom(a)) {
        n = new_node(c, IMAP_SEARCH_SEQSET);
        if (n != NULL && !parse_set(c, a->str, a->len, n)) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Invalid messageset");
            return NULL;
        }
        return n;
    }
    for (size_t k = 0; k < sizeof(flag_keys) / sizeof(flag_keys[0]); k++)
        if (atom_is(a, flag_keys[k].name)) {
            n = new_node(c, IMAP_SEARCH_FLAG);
            if (n != NULL) {
                n->value = flag_keys[k].flag;
                n->set = flag_keys[k].set;
            }
            return n;
        }
    if (atom_is(a, "NEW")) { /* RECENT UNSEEN */
        n = new_node(c, IMAP_SEARCH_AND);
        struct imap_search_node *r = new_node(c, IMAP_SEARCH_FLAG);
        struct imap_search_node *u = new_node(c, IMAP_SEARCH_FLAG);
        const struct imap_search_node **kids = s_alloc(c, 2 * sizeof(struct imap_search_node *));
        if (n == NULL || r == NULL || u == NULL || kids == NULL) {
            fail(c, IMAP_SEARCH_ENOMEM, "Out of memory");
            return NULL;
        }
        r->value = "\\Recent";
        r->set = true;
        u->value = "\\Seen";
        u->set = false;
        kids[0] = r;
        kids[1] = u;
        n->children = (const struct imap_search_node *const *)kids;
        n->n_children = 2;
        return n;
    }
    if (atom_is(a, "KEYWORD") || atom_is(a, "UNKEYWORD")) {
        bool set = atom_is(a, "KEYWORD");
        if (*i >= count || args[*i].type != IMAP_SEARCH_IN_ATOM) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Missing keyword");
            return NULL;
        }
        n = new_node(c, IMAP_SEARCH_FLAG);
        if (n == NULL)
            return NULL;
        n->value = dup_bytes(c, args[*i].str, args[*i].len);
        n->field = "KEYWORD"; /* a keyword, even when it looks like \Seen */
        n->set = set;
        (*i)++;
        return n->value != NULL ? n : NULL;
    }
    for (size_t k = 0; k < sizeof(string_keys) / sizeof(string_keys[0]); k++)
        if (atom_is(a, string_keys[k].name)) {
            if (*i >= count) {
                fail(c, IMAP_SEARCH_ESYNTAX, "Missing search parameters");
                return NULL;
            }
            n = new_node(c, string_keys[k].op);
            if (n == NULL || (n->value = get_string(c, &args[(*i)++])) == NULL)
                return NULL;
            return n;
        }
    if (atom_is(a, "HEADER")) {
        if (*i + 1 >= count) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Missing search parameters");
            return NULL;
        }
        n = new_node(c, IMAP_SEARCH_HEADER);
        if (n == NULL || (n->field = get_string(c, &args[(*i)++])) == NULL ||
            (n->value = get_string(c, &args[(*i)++])) == NULL)
            return NULL;
        return n;
    }
    for (size_t k = 0; k < sizeof(date_keys) / sizeof(date_keys[0]); k++)
        if (atom_is(a, date_keys[k].name)) {
            n = new_node(c, date_keys[k].op);
            if (n == NULL)
                return NULL;
            if (*i >= count || args[*i].type == IMAP_SEARCH_IN_LIST ||
                !search_imap_date(args[*i].str, args[*i].len, &n->date)) {
                fail(c, IMAP_SEARCH_ESYNTAX, "Invalid search date parameter");
                return NULL;
            }
            (*i)++;
            return n;
        }
    if (atom_is(a, "LARGER") || atom_is(a, "SMALLER") || atom_is(a, "OLDER") ||
        atom_is(a, "YOUNGER")) {
        enum imap_search_op op = atom_is(a, "LARGER")    ? IMAP_SEARCH_LARGER
                                 : atom_is(a, "SMALLER") ? IMAP_SEARCH_SMALLER
                                 : atom_is(a, "OLDER")   ? IMAP_SEARCH_OLDER
                                                         : IMAP_SEARCH_YOUNGER;
        n = new_node(c, op);
        if (n == NULL)
            return NULL;
        if (*i >= count || !get_number(&args[*i], &n->number)) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Invalid size / interval");
            return NULL;
        }
        (*i)++;
        return n;
    }
    if (atom_is(a, "MODSEQ")) {
        n = new_node(c, IMAP_SEARCH_MODSEQ);
        if (n == NULL)
            return NULL;
        /* [entry-name entry-type-req] mod-sequence-valzer (RFC 7162) */
        if (*i < count && (args[*i].type == IMAP_SEARCH_IN_STRING ||
                           (args[*i].type == IMAP_SEARCH_IN_ATOM && args[*i].len > 0 &&
                            args[*i].str[0] == '/')))
            *i += 2;
        if (*i >= count || !get_number(&args[*i], &n->number)) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Invalid MODSEQ");
            return NULL;
        }
        (*i)++;
        return n;
    }
    if (atom_is(a, "UID")) {
        n = new_node(c, IMAP_SEARCH_UIDSET);
        if (n == NULL)
            return NULL;
        if (*i < count && atom_is(&args[*i], "$")) {
            n->op = IMAP_SEARCH_SAVED; /* UID $: the saved result */
            (*i)++;
            return n;
        }
        if (*i >= count || !is_set_atom(&args[*i]) ||
            !parse_set(c, args[*i].str, args[*i].len, n)) {
            fail(c, IMAP_SEARCH_ESYNTAX, "Invalid uidset");
            return NULL;
        }
        (*i)++;
        return n;
    }
    if (atom_is(a, "NOT")) {
        n = new_node(c, IMAP_SEARCH_NOT);
        const struct imap_search_node **kids = s_alloc(c, sizeof(struct imap_search_node *));
        if (n == NULL || kids == NULL)
            return NULL;
        if ((kids[0] = parse_key(c, args, count, i, depth + 1)) == NULL)
            return NULL;
        n->children = (const struct imap_search_node *const *)kids;
        n->n_children = 1;
        return n;
    }
    if (atom_is(a, "OR")) {
        n = new_node(c, IMAP_SEARCH_OR);
        const struct imap_search_node **kids = s_alloc(c, 2 * sizeof(struct imap_search_node *));
        if (n == NULL || kids == NULL)
            return NULL;
        if ((kids[0] = parse_key(c, args, count, i, depth + 1)) == NULL ||
            (kids[1] = parse_key(c, args, count, i, depth + 1)) == NULL)
            return NULL;
        n->children = (const struct imap_search_node *const *)kids;
        n->n_children = 2;
        return n;
    }
    fail(c, IMAP_SEARCH_ESYNTAX, "Unknown argument");
    return NULL;
}

static unsigned node_needs(const struct imap_search_node *n)
{
    unsigned r = 0;
    switch (n->op) {
    case IMAP_SEARCH_FLAG: r = IMAP_SEARCH_NEED_FLAGS; break;
    case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_ON: case IMAP_SEARCH_SINCE:
    case IMAP_SEARCH_OLDER: case IMAP_SEARCH_YOUNGER:
        r = IMAP_SEARCH_NEED_INTERNALDATE; break;
    case IMAP_SEARCH_MODSEQ: r = IMAP_SEARCH_NEED_MODSEQ; break;
    case IMAP_SEARCH_LARGER: case IMAP_SEARCH_SMALLER: r = IMAP_SEARCH_NEED_SIZE; break;
    case IMAP_SEARCH_SENTBEFORE: case IMAP_SEARCH_SENTON: case IMAP_SEARCH_SENTSINCE:
    case IMAP_SEARCH_HEADER: case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_FROM:
    case IMAP_SEARCH_TO: case IMAP_SEARCH_CC: case IMAP_SEARCH_BCC:
        r = IMAP_SEARCH_NEED_HEADER; break;
    case IMAP_SEARCH_BODY: case IMAP_SEARCH_TEXT:
        /* BODY "" / TEXT "" match every message: no content needed */
        r = n->value[0] != '\0' ? IMAP_SEARCH_NEED_BODY : 0; break;
    default: break;
    }
    for (size_t i = 0; i < n->n_children; i++)
        r |= node_needs(n->children[i]);
    return r;
}

int imap_search_parse(const struct imap_search_in *args, size_t count, const char *charset,
                      struct imap_search **search_r, const char **error_r)
{
    *search_r = NULL;
    struct imap_search *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        *error_r = "Out of memory";
        return IMAP_SEARCH_ENOMEM;
    }
    struct pctx c = {s, charset, NULL, 0};
    if (charset != NULL && !search_charset_is_utf8(charset)) {
        struct sbuf probe = {0};
        bool known = search_charset_to_utf8(&probe, charset, "a", 1);
        sbuf_free(&probe);
        if (!known) {
            imap_search_free(&s);
            *error_r = "Unknown charset";
            return IMAP_SEARCH_EBADCHARSET;
        }
    }
    s->root = parse_and(&c, args, count, 0);
    if (s->root == NULL) {
        imap_search_free(&s);
        *error_r = c.error != NULL ? c.error : "Out of memory";
        return c.code != 0 ? c.code : IMAP_SEARCH_ENOMEM;
    }
    s->needs = node_needs(s->root);
    *search_r = s;
    return 0;
}

void imap_search_free(struct imap_search **search)
{
    if (search == NULL || *search == NULL)
        return;
    for (size_t i = 0; i < (*search)->n_allocs; i++)
        free((*search)->allocs[i]);
    free((*search)->allocs);
    free(*search);
    *search = NULL;
}

const struct imap_search_node *imap_search_root(const struct imap_search *s)
{
    return s->root;
}

unsigned imap_search_needs(const struct imap_search *s)
{
    return s->needs;
}

bool imap_search_node_is_content(const struct imap_search_node *n)
{
    return (node_needs(n) & (IMAP_SEARCH_NEED_SIZE | IMAP_SEARCH_NEED_HEADER |
                             IMAP_SEARCH_NEED_BODY)) != 0;
}

bool imap_search_needs_content(const struct imap_search *s)
{
    return imap_search_node_is_content(s->root);
}

/* ---- writing ----------------------------------------------------------- */

static void write_string(struct sbuf *b, const char *s)
{
    bool literal = false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p >= 0x80 || *p == '\r' || *p == '\n')
            literal = true;
    if (literal) {
        char hdr[32];
        snprintf(hdr, sizeof(hdr), "{%zu}\r\n", strlen(s));
        sbuf_adds(b, hdr);
        sbuf_adds(b, s);
        return;
    }
    sbuf_addc(b, '"');
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            sbuf_addc(b, '\\');
        sbuf_addc(b, *p);
    }
    sbuf_addc(b, '"');
}

static void write_date(struct sbuf *b, int64_t t)
{
    static const char *const mnames[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t z = t / 86400 + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    char buf[32];
    snprintf(buf, sizeof(buf), "%u-%s-%04lld", d, mnames[m - 1], (long long)y);
    sbuf_adds(b, buf);
}

static void write_set(struct sbuf *b, const struct imap_search_node *n)
{
    for (size_t i = 0; i < n->n_ranges; i++) {
        char buf[32];
        if (i > 0)
            sbuf_addc(b, ',');
        const struct imap_search_range *r = &n->ranges[i];
        if (r->lo == IMAP_SEARCH_STAR)
            snprintf(buf, sizeof(buf), "*");
        else if (r->lo == r->hi)
            snprintf(buf, sizeof(buf), "%u", r->lo);
        else if (r->hi == IMAP_SEARCH_STAR)
            snprintf(buf, sizeof(buf), "%u:*", r->lo);
        else
            snprintf(buf, sizeof(buf), "%u:%u", r->lo, r->hi);
        sbuf_adds(b, buf);
    }
}

static void write_node(struct sbuf *b, const struct imap_search_node *n, bool top)
{
    static const char *const names[] = {
        [IMAP_SEARCH_BEFORE] = "BEFORE", [IMAP_SEARCH_ON] = "ON", [IMAP_SEARCH_SINCE] = "SINCE",
        [IMAP_SEARCH_OLDER] = "OLDER", [IMAP_SEARCH_YOUNGER] = "YOUNGER",
        [IMAP_SEARCH_MODSEQ] = "MODSEQ", [IMAP_SEARCH_SENTBEFORE] = "SENTBEFORE",
        [IMAP_SEARCH_SENTON] = "SENTON", [IMAP_SEARCH_SENTSINCE] = "SENTSINCE",
        [IMAP_SEARCH_LARGER] = "LARGER", [IMAP_SEARCH_SMALLER] = "SMALLER",
        [IMAP_SEARCH_HEADER] = "HEADER", [IMAP_SEARCH_SUBJECT] = "SUBJECT",
        [IMAP_SEARCH_FROM] = "FROM", [IMAP_SEARCH_TO] = "TO", [IMAP_SEARCH_CC] = "CC",
        [IMAP_SEARCH_BCC] = "BCC", [IMAP_SEARCH_BODY] = "BODY", [IMAP_SEARCH_TEXT] = "TEXT",
    };
    char num[32];
    switch (n->op) {
    case IMAP_SEARCH_ALL: sbuf_adds(b, "ALL"); break;
    case IMAP_SEARCH_SAVED: sbuf_adds(b, "$"); break;
    case IMAP_SEARCH_AND:
        if (!top)
            sbuf_addc(b, '(');
        for (size_t i = 0; i < n->n_children; i++) {
            if (i > 0)
                sbuf_addc(b, ' ');
            write_node(b, n->children[i], false);
        }
        if (!top)
            sbuf_addc(b, ')');
        break;
    case IMAP_SEARCH_OR:
        sbuf_adds(b, "OR ");
        write_node(b, n->children[0], false);
        sbuf_addc(b, ' ');
        write_node(b, n->children[1], false);
        break;
    case IMAP_SEARCH_NOT:
        sbuf_adds(b, "NOT ");
        write_node(b, n->children[0], false);
        break;
    case IMAP_SEARCH_SEQSET: write_set(b, n); break;
    case IMAP_SEARCH_UIDSET: sbuf_adds(b, "UID "); write_set(b, n); break;
    case IMAP_SEARCH_FLAG:
        if (n->field == NULL) {
            /* \Recent unset is OLD; the others UN<flag> */
            if (strcasecmp(n->value, "\\Recent") == 0 && !n->set) {
                sbuf_adds(b, "OLD");
                break;
            }
            if (!n->set)
                sbuf_adds(b, "UN");
            for (const char *p = n->value + 1; *p != '\0'; p++)
                sbuf_addc(b, (char)toupper((unsigned char)*p));
        } else {
            sbuf_adds(b, n->set ? "KEYWORD " : "UNKEYWORD ");
            sbuf_adds(b, n->value);
        }
        break;
    case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_ON: case IMAP_SEARCH_SINCE:
    case IMAP_SEARCH_SENTBEFORE: case IMAP_SEARCH_SENTON: case IMAP_SEARCH_SENTSINCE:
        sbuf_adds(b, names[n->op]);
        sbuf_addc(b, ' ');
        write_date(b, n->date);
        break;
    case IMAP_SEARCH_OLDER: case IMAP_SEARCH_YOUNGER: case IMAP_SEARCH_MODSEQ:
    case IMAP_SEARCH_LARGER: case IMAP_SEARCH_SMALLER:
        snprintf(num, sizeof(num), "%s %llu", names[n->op], (unsigned long long)n->number);
        sbuf_adds(b, num);
        break;
    case IMAP_SEARCH_HEADER:
        sbuf_adds(b, "HEADER ");
        write_string(b, n->field);
        sbuf_addc(b, ' ');
        write_string(b, n->value);
        break;
    default:
        sbuf_adds(b, names[n->op]);
        sbuf_addc(b, ' ');
        write_string(b, n->value);
        break;
    }
}

char *imap_search_write(const struct imap_search_node *n)
{
    struct sbuf b = {0};
    write_node(&b, n, true);
    if (b.failed) {
        sbuf_free(&b);
        return NULL;
    }
    return b.d != NULL ? b.d : strdup("");
}
