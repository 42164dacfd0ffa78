/* imap_search_eval: one message against parsed criteria, as Dovecot 2.3
 * (lib-storage/index/index-search.c without FTS) decides it. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "search_internal.h"

/* Decoded text of each part, built when a BODY or TEXT key first needs it. */
struct part_text {
    const struct mime_part *part;
    struct sbuf header; /* TEXT: the header lines as the decoder gives them */
    struct sbuf body;   /* decoded body; empty when not searched */
    bool header_built, body_built;
};

struct ectx {
    const struct imap_search_msg *m;
    struct part_text *parts;
    size_t n_parts;
    bool parts_listed;
};

static void list_parts(struct ectx *c, const struct mime_part *p)
{
    for (; p != NULL; p = p->next) {
        c->parts[c->n_parts++].part = p;
        list_parts(c, p->children);
    }
}

static void build_body(struct ectx *c, struct part_text *pt)
{
    pt->body_built = true;
    if (pt->part->children == NULL)
        (void)search_part_body_text(c->m->ms, pt->part, &pt->body);
}

static void build_header(struct ectx *c, struct part_text *pt)
{
    const struct mime_struct *ms = c->m->ms;
    const struct mime_part *p = pt->part;
    pt->header_built = true;
    uint64_t fields_size = 0;
    for (size_t i = 0; i < p->n_fields; i++) {
        struct search_field f;
        fields_size += p->fields[i].size;
        if (!search_field_get(ms, p, i, &f)) {
            pt->header.failed = true;
            return;
        }
        sbuf_casemap(&pt->header, f.name, f.name_len);
        sbuf_add(&pt->header, f.middle, f.middle_len);
        search_header_decode(&pt->header, f.value, f.value_len);
        if (!f.no_newline)
            sbuf_add(&pt->header, "\r\n", 2);
        search_field_free(&f);
    }
    if (p->header_size > fields_size)
        sbuf_add(&pt->header, "\r\n", 2); /* the blank line */
}

static bool ensure_parts(struct ectx *c)
{
    if (c->parts_listed)
        return c->parts != NULL;
    c->parts_listed = true;
    if (c->m->ms == NULL)
        return false;
    unsigned n = mime_struct_part_count(c->m->ms);
    c->parts = calloc(n != 0 ? n : 1, sizeof(*c->parts));
    if (c->parts == NULL)
        return false;
    list_parts(c, mime_struct_root(c->m->ms));
    return true;
}

static bool contains(const struct sbuf *hay, const char *key, size_t key_len)
{
    return hay->d != NULL && hay->len >= key_len && memmem(hay->d, hay->len, key, key_len) != NULL;
}

/* BODY / TEXT: the key in any part's stream (each part searched apart:
 * Dovecot resets its matcher when the part changes). */
static int eval_text(struct ectx *c, const struct imap_search_node *n, bool with_headers)
{
    if (n->value[0] == '\0')
        return 1;
    struct sbuf key = {0};
    sbuf_casemap(&key, n->value, strlen(n->value));
    int r = 0;
    if (key.len == 0 || key.failed || !ensure_parts(c))
        goto out;
    for (size_t i = 0; i < c->n_parts && r == 0; i++) {
        struct part_text *pt = &c->parts[i];
        if (!pt->body_built)
            build_body(c, pt);
        if (with_headers && !pt->header_built)
            build_header(c, pt);
        if (with_headers) {
            /* header and body are one stream in Dovecot's matcher */
            struct sbuf both = {0};
            sbuf_add(&both, pt->header.d != NULL ? pt->header.d : "", pt->header.len);
            sbuf_add(&both, pt->body.d != NULL ? pt->body.d : "", pt->body.len);
            r = contains(&both, key.d, key.len);
            sbuf_free(&both);
        } else {
            r = contains(&pt->body, key.d, key.len);
        }
    }
out:
    sbuf_free(&key);
    return r;
}

static bool name_is(const struct search_field *f, const char *name)
{
    return strlen(name) == f->name_len && strncasecmp(f->name, name, f->name_len) == 0;
}

static void compress_lwsp(struct sbuf *out, const char *s, size_t len)
{
    bool prev = true;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t') { /* Dovecot's IS_LWSP: not CR/LF */
            if (!prev) {
                prev = true;
                sbuf_addc(out, ' ');
            }
        } else {
            prev = false;
            sbuf_addc(out, ch);
        }
    }
}


/* HEADER / SUBJECT / FROM / TO / CC / BCC on the message's own header. */
static int eval_header(struct ectx *c, const struct imap_search_node *n)
{
    static const char *const names[] = {
        [IMAP_SEARCH_SUBJECT] = "Subject", [IMAP_SEARCH_FROM] = "From",
        [IMAP_SEARCH_TO] = "To", [IMAP_SEARCH_CC] = "Cc", [IMAP_SEARCH_BCC] = "Bcc",
    };
    const char *field = n->op == IMAP_SEARCH_HEADER ? n->field : names[n->op];
    if (c->m->ms == NULL)
        return 0;
    const struct mime_part *root = mime_struct_root(c->m->ms);
    struct sbuf key = {0};
    sbuf_casemap(&key, n->value, strlen(n->value));
    int r = 0;
    for (size_t i = 0; i < root->n_fields && r == 0; i++) {
        struct search_field f;
        if (!search_field_get(c->m->ms, root, i, &f))
            break;
        if (!name_is(&f, field)) {
            search_field_free(&f);
            continue;
        }
        if (n->value[0] == '\0') {
            r = 1; /* existence of the field */
        } else if (key.len > 0) {
            struct sbuf hay = {0}, tmp = {0};
            switch (n->op) {
            case IMAP_SEARCH_SUBJECT:
                compress_lwsp(&tmp, f.value, f.value_len);
                search_header_decode(&hay, tmp.d != NULL ? tmp.d : "", tmp.len);
                break;
            case IMAP_SEARCH_FROM: case IMAP_SEARCH_TO: case IMAP_SEARCH_CC:
            case IMAP_SEARCH_BCC:
                /* every occurrence of the field counts */
                if (!search_field_addresses(c->m->ms, root, i, &tmp))
                    hay.failed = true;
                search_header_decode(&hay, tmp.d != NULL ? tmp.d : "", tmp.len);
                break;
            default:
                search_header_decode(&hay, f.value, f.value_len);
                break;
            }
            r = contains(&hay, key.d, key.len);
            sbuf_free(&hay);
            sbuf_free(&tmp);
        }
        search_field_free(&f);
    }
    sbuf_free(&key);
    return r;
}

/* The Date header as Dovecot's mail_get_date gives it: the first Date
 * field; missing or unreadable: 0. In the sender's own zone. */
static int64_t sent_date(struct ectx *c)
{
    if (c->m->ms == NULL)
        return 0;
    const struct mime_part *root = mime_struct_root(c->m->ms);
    for (size_t i = 0; i < root->n_fields; i++) {
        struct search_field f;
        if (!search_field_get(c->m->ms, root, i, &f))
            return 0;
        if (!name_is(&f, "Date")) {
            search_field_free(&f);
            continue;
        }
        int64_t t = 0;
        int tz = 0;
        if (!imap_search_date_parse(f.value, f.value_len, &t, &tz)) {
            t = 0;
            tz = 0;
        }
        search_field_free(&f);
        return t + (int64_t)tz * 60;
    }
    return 0;
}

static bool in_set(const struct imap_search_node *n, uint32_t v, uint32_t max)
{
    for (size_t i = 0; i < n->n_ranges; i++) {
        uint32_t lo = n->ranges[i].lo == IMAP_SEARCH_STAR ? max : n->ranges[i].lo;
        uint32_t hi = n->ranges[i].hi == IMAP_SEARCH_STAR ? max : n->ranges[i].hi;
        if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
        }
        if (v >= lo && v <= hi)
            return true;
    }
    return false;
}

static bool has_flag(const struct imap_search_msg *m, const char *flag)
{
    for (size_t i = 0; i < m->n_flags; i++)
        if (m->flags[i] != NULL && strcasecmp(m->flags[i], flag) == 0)
            return true;
    return false;
}

static int date_cmp(enum imap_search_op op, int64_t t, int64_t day)
{
    switch (op) {
    case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_SENTBEFORE: return t < day;
    case IMAP_SEARCH_ON: case IMAP_SEARCH_SENTON: return t >= day && t < day + 86400;
    default: return t >= day;
    }
}

static int eval_node(struct ectx *c, const struct imap_search_node *n)
{
    const struct imap_search_msg *m = c->m;
    switch (n->op) {
    case IMAP_SEARCH_ALL: return 1;
    case IMAP_SEARCH_AND:
        for (size_t i = 0; i < n->n_children; i++)
            if (!eval_node(c, n->children[i]))
                return 0;
        return 1;
    case IMAP_SEARCH_OR:
        return eval_node(c, n->children[0]) || eval_node(c, n->children[1]);
    case IMAP_SEARCH_NOT: return !eval_node(c, n->children[0]);
    case IMAP_SEARCH_SEQSET: return in_set(n, m->seq, m->max_seq);
    case IMAP_SEARCH_UIDSET: return in_set(n, m->uid, m->max_uid);
    case IMAP_SEARCH_SAVED: return 0; /* the session substitutes "$" */
    case IMAP_SEARCH_FLAG:
        /* a keyword spelled like a system flag exists nowhere (Dovecot:
         * an invalid keyword never matches) */
        if (n->field != NULL && n->value[0] == '\\')
            return !n->set;
        return has_flag(m, n->value) == n->set;
    case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_ON: case IMAP_SEARCH_SINCE:
        return date_cmp(n->op, m->internaldate + (int64_t)m->internaldate_tz * 60, n->date);
    case IMAP_SEARCH_OLDER: /* Dovecot: BEFORE now-n+1 */
        return m->internaldate < m->now - (int64_t)n->number + 1;
    case IMAP_SEARCH_YOUNGER: return m->internaldate >= m->now - (int64_t)n->number;
    case IMAP_SEARCH_MODSEQ: return m->modseq >= n->number;
    case IMAP_SEARCH_SENTBEFORE: case IMAP_SEARCH_SENTON: case IMAP_SEARCH_SENTSINCE:
        return date_cmp(n->op, sent_date(c), n->date);
    case IMAP_SEARCH_LARGER:
        return m->ms != NULL && mime_struct_size(m->ms) > n->number;
    case IMAP_SEARCH_SMALLER:
        return m->ms != NULL && mime_struct_size(m->ms) < n->number;
    case IMAP_SEARCH_HEADER: case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_FROM:
    case IMAP_SEARCH_TO: case IMAP_SEARCH_CC: case IMAP_SEARCH_BCC:
        return eval_header(c, n);
    case IMAP_SEARCH_BODY: return eval_text(c, n, false);
    case IMAP_SEARCH_TEXT: return eval_text(c, n, true);
    }
    return 0;
}

int imap_search_eval(const struct imap_search *s, const struct imap_search_msg *m)
{
    struct ectx c = {m, NULL, 0, false};
    int r = eval_node(&c, imap_search_root(s));
    for (size_t i = 0; i < c.n_parts; i++) {
        sbuf_free(&c.parts[i].header);
        sbuf_free(&c.parts[i].body);
    }
    free(c.parts);
    return r;
}
