/* mime_struct: plaintext -> part tree with Dovecot 2.3's byte semantics
 * (see mime_struct.h for the rules). One forward pass over the normalised
 * bytes in memory: an explicit state machine (enum scan_state, one
 * transition per loop turn in scan_step) over header lines and body lines.
 * Offsets are kept the way Dovecot keeps sizes: a part's body starts at
 * offset + header_size even where a boundary took the header's last CRLF. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime.h"
#include "mime_struct_internal.h"

/* Dovecot 2.3: boundaries longer than this are cut; a boundary line
 * without a line end is compared over at most BOUNDARY_END_MAX bytes. */
#define BOUNDARY_STRING_MAX 80
#define BOUNDARY_END_MAX (BOUNDARY_STRING_MAX + 4)
#define MAX_MESSAGE_SIZE ((uint64_t)1 << 40)

/* ---- arena and scratch strings ------------------------------------------ */

struct ms_arena_chunk {
    struct ms_arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *ms_alloc(struct ms_arena *a, size_t size)
{
    struct ms_arena_chunk *c = a->head;
    size_t need = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);

    if (need == 0)
        need = sizeof(max_align_t);
    if (c == NULL || c->cap - c->used < need) {
        size_t cap = need > 16384 ? need : 16384;
        c = malloc(sizeof(*c) + cap);
        if (c == NULL) {
            a->failed = 1;
            return NULL;
        }
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += need;
    memset(p, 0, size);
    return p;
}

char *ms_strndup(struct ms_arena *a, const void *s, size_t len)
{
    char *p = ms_alloc(a, len + 1);
    if (p != NULL && len > 0)
        memcpy(p, s, len);
    return p;
}

void ms_arena_free(struct ms_arena *a)
{
    while (a->head != NULL) {
        struct ms_arena_chunk *n = a->head->next;
        /* header values of a decrypted message: wiped like the plaintext */
        OPENSSL_cleanse(a->head->data, a->head->used);
        free(a->head);
        a->head = n;
    }
}

void ms_str_add(struct ms_str *s, const void *p, size_t n)
{
    if (s->failed)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *d = realloc(s->data, cap);
        if (d == NULL) {
            s->failed = 1;
            return;
        }
        s->data = d;
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = '\0';
}

void ms_str_addc(struct ms_str *s, char c)
{
    ms_str_add(s, &c, 1);
}

const char *ms_str_c(struct ms_str *s)
{
    if (s->data == NULL)
        ms_str_add(s, "", 0);
    return s->data != NULL ? s->data : "";
}

void ms_str_free(struct ms_str *s)
{
    if (s->data != NULL)
        OPENSSL_cleanse(s->data, s->len);
    free(s->data);
    memset(s, 0, sizeof(*s));
}

/* ---- normalisation -------------------------------------------------------- */

uint64_t mime_struct_normalized_size(const void *msg, size_t len)
{
    const unsigned char *p = msg, *end = p + len, *lf;
    uint64_t size = len;

    while (p < end && (lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (lf == (const unsigned char *)msg || lf[-1] != '\r')
            size++;
        p = lf + 1;
    }
    return size;
}

size_t mime_struct_normalize(const void *msg, size_t len, void *out)
{
    const unsigned char *p = msg, *end = p + len;
    unsigned char *o = out;
    int nuls = len > 0 && memchr(msg, 0, len) != NULL;

    while (p < end) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *stop = lf != NULL ? lf : end;
        size_t n = (size_t)(stop - p);

        memcpy(o, p, n);
        /* NUL -> 0x80, as Dovecot serves it (IMAP literals carry no NUL) */
        for (unsigned char *z = o;
             nuls && (z = memchr(z, 0, (size_t)(o + n - z))) != NULL;)
            *z++ = 0x80;
        o += n;
        if (lf != NULL) {
            if (lf == (const unsigned char *)msg || lf[-1] != '\r')
                *o++ = '\r';
            *o++ = '\n';
            p = lf + 1;
        } else {
            p = end;
        }
    }
    return (size_t)(o - (unsigned char *)out);
}

/* ---- the tree under construction ------------------------------------------ */

struct node {
    struct mime_part pub; /* first: a node is its public part */
    struct node *last_child;
    uint64_t end; /* end of what is attributed to this part so far */
    unsigned int depth;
    struct ms_str fields; /* struct mime_field array being built */
    struct mime_envelope *env;
};

struct boundary {
    struct boundary *next;
    struct node *part;
    const char *b;
    size_t len;
    int epilogue_found;
};

enum scan_state {
    SCAN_HEADER_INIT, /* a part begins: start its header */
    SCAN_HEADER,      /* at the start of a header line */
    SCAN_BODY_INIT,   /* header done: choose how the body is read */
    SCAN_TO_BOUNDARY, /* body lines until a boundary line */
    SCAN_TO_EOF,      /* body to the end of the message */
    SCAN_DONE,
};

struct scan {
    const unsigned char *buf;
    uint64_t n;
    uint64_t pos;
    struct ms_arena *a;
    struct node *root, *part;
    struct boundary *boundaries;
    unsigned int total_parts;
    enum scan_state state;
    int first_line; /* body scanning starts at a line start */

    /* header state of the current part */
    uint64_t hdr_start;
    unsigned int prev_newline; /* line end size of the last header line */
    int seen_content_type;
    int multipart; /* boundary pushed at the end of this header */
    char *last_boundary;
    struct ms_str scratch;
    struct ms_str value;
};

struct mime_struct {
    struct ms_arena arena;
    const uint8_t *data;
    uint8_t *owned;
    uint64_t size;
    struct node *root;
    unsigned int n_parts;
};

static int too_nested(const struct scan *s)
{
    return s->part->depth + 1 >= MIME_STRUCT_MAX_NESTING ||
           s->total_parts >= MIME_STRUCT_MAX_PARTS;
}

static struct node *part_append(struct scan *s)
{
    struct node *parent = s->part, *child = ms_alloc(s->a, sizeof(*child));

    if (child == NULL)
        return NULL;
    child->pub.parent = &parent->pub;
    child->pub.offset = parent->end;
    child->end = parent->end;
    child->depth = parent->depth + 1;
    if (parent->last_child != NULL)
        parent->last_child->pub.next = &child->pub;
    else
        parent->pub.children = &child->pub;
    parent->last_child = child;
    parent->pub.n_children++;
    s->total_parts++;
    s->part = child;
    return child;
}

static void part_finish(struct scan *s)
{
    struct node *p = s->part, *parent = (struct node *)p->pub.parent;

    p->pub.body_size = p->end - (p->pub.offset + p->pub.header_size);
    if (parent->end < p->end)
        parent->end = p->end;
    s->part = parent;
}

/* Is the line at pos a boundary line of an open multipart? The longest
 * matching boundary wins; on a tie the innermost. */
static struct boundary *boundary_line(struct scan *s, uint64_t pos)
{
    const unsigned char *d = s->buf + pos;
    uint64_t size = s->n - pos;
    const unsigned char *lf;
    size_t find;
    struct boundary *b, *best = NULL;

    if (s->boundaries == NULL || size < 2 || d[0] != '-' || d[1] != '-')
        return NULL;
    d += 2;
    size -= 2;
    lf = memchr(d, '\n', size);
    if (lf != NULL) {
        find = (size_t)(lf - d);
        if (find > 0 && d[find - 1] == '\r')
            find--;
        if (find > 2 && d[find - 1] == '-' && d[find - 2] == '-')
            find -= 2;
    } else {
        find = size > BOUNDARY_END_MAX ? BOUNDARY_END_MAX : (size_t)size;
    }
    for (b = s->boundaries; b != NULL; b = b->next) {
        if (b->len <= find && memcmp(b->b, d, b->len) == 0 &&
            (best == NULL || best->len < b->len)) {
            best = b;
            if (best->len == find)
                break;
        }
    }
    if (best != NULL)
        best->epilogue_found = size >= best->len + 2 &&
                               memcmp(d + best->len, "--", 2) == 0;
    return best;
}

/* ---- header fields ---------------------------------------------------------- */

static int name_is(const unsigned char *name, size_t len, const char *want)
{
    size_t wl = strlen(want);
    return len == wl && strncasecmp((const char *)name, want, wl) == 0;
}

/* Dovecot's view of a field value: after the colon, leading LWSP skipped
 * (only one when the first line is all LWSP), lines joined with "\n". */
static void field_value(struct scan *s, const struct mime_field *f,
                        int has_colon, struct ms_str *out)
{
    const unsigned char *p = s->buf + f->offset;
    const unsigned char *end = p + f->size;
    const unsigned char *line_end, *v;
    int first = 1;

    out->len = 0;
    ms_str_add(out, "", 0);
    if (!has_colon)
        return;
    v = memchr(p, ':', f->size);
    p = v + 1;
    while (p < end) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *next = lf != NULL ? lf + 1 : end;
        line_end = lf != NULL ? lf : end;
        if (lf != NULL && line_end > p && line_end[-1] == '\r')
            line_end--;
        if (first) {
            const unsigned char *q = p;
            while (q < line_end && (*q == ' ' || *q == '\t'))
                q++;
            if (q == line_end && line_end > p)
                q = p + 1; /* all LWSP: skip just one */
            p = q;
            first = 0;
        } else {
            ms_str_addc(out, '\n');
        }
        ms_str_add(out, p, (size_t)(line_end - p));
        p = next;
    }
}

static void parse_content_type_flags(struct scan *s, const char *value,
                                     size_t len)
{
    struct ms_tok t = {(const unsigned char *)value,
                       (const unsigned char *)value + len, NULL};
    struct ms_str ct = {0};
    const struct mime_param *params;
    struct node *p = s->part;
    const char *c;
    long n;
    int ret;

    if (s->seen_content_type)
        return;
    s->seen_content_type = 1;
    ms_tok_skip_lwsp(&t);
    ret = ms_tok_content_type(&t, &ct);
    c = ms_str_c(&ct);
    if (strcasecmp(c, "message/rfc822") == 0) {
        p->pub.flags |= MIME_PART_MESSAGE_RFC822;
    } else if (strncasecmp(c, "text", 4) == 0 && (ct.len == 4 || c[4] == '/')) {
        p->pub.flags |= MIME_PART_TEXT;
    } else if (strncasecmp(c, "multipart/", 10) == 0) {
        p->pub.flags |= MIME_PART_MULTIPART;
        if (strcasecmp(c + 10, "digest") == 0)
            p->pub.flags |= MIME_PART_DIGEST;
    }
    ms_str_free(&ct);
    if (ret < 0 || (p->pub.flags & MIME_PART_MULTIPART) == 0 ||
        s->last_boundary != NULL)
        return;
    n = ms_parse_params(&t, s->a, &params);
    for (long i = 0; i < n; i++) {
        if (strcasecmp(params[i].name, "boundary") == 0) {
            size_t bl = strlen(params[i].value);
            if (bl > BOUNDARY_STRING_MAX)
                bl = BOUNDARY_STRING_MAX;
            s->last_boundary = ms_strndup(s->a, params[i].value, bl);
            break;
        }
    }
}

/* Content-* data as Dovecot's message-part-data keeps it. */
static void parse_content_field(struct scan *s, const char *name,
                                const char *value, size_t len)
{
    struct mime_part *d = &s->part->pub;
    struct ms_tok t = {(const unsigned char *)value,
                       (const unsigned char *)value + len, NULL};
    struct ms_str str = {0};

    if (strcasecmp(name, "ID") == 0) {
        if (d->content_id == NULL)
            d->content_id = ms_strndup(s->a, value, len);
    } else if (strcasecmp(name, "MD5") == 0) {
        if (d->content_md5 == NULL)
            d->content_md5 = ms_strndup(s->a, value, len);
    } else if (strcasecmp(name, "Description") == 0) {
        if (d->content_description == NULL)
            d->content_description = ms_strndup(s->a, value, len);
    } else if (strcasecmp(name, "Location") == 0) {
        if (d->content_location == NULL)
            d->content_location = ms_strndup(s->a, value, len);
    } else if (strcasecmp(name, "Type") == 0) {
        if (d->content_type == NULL) {
            const char *c, *slash;
            int ret;
            ms_tok_skip_lwsp(&t);
            ret = ms_tok_content_type(&t, &str);
            c = ms_str_c(&str);
            slash = strchr(c, '/');
            if (slash != NULL) {
                d->content_type = ms_strndup(s->a, c, (size_t)(slash - c));
                d->content_subtype = ms_strndup(s->a, slash + 1, strlen(slash + 1));
            } else {
                d->content_type = ms_strndup(s->a, c, strlen(c));
                d->content_subtype = ms_strndup(s->a, "", 0);
            }
            if (ret >= 0) {
                long n = ms_parse_params(&t, s->a, &d->content_type_params);
                d->n_content_type_params = n > 0 ? (size_t)n : 0;
            }
        }
    } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
        if (d->content_transfer_encoding == NULL) {
            ms_tok_skip_lwsp(&t);
            if (ms_tok_mime_token(&t, &str) >= 0 && ms_tok_skip_lwsp(&t) == 0 &&
                str.len > 0)
                d->content_transfer_encoding = ms_strndup(s->a, str.data, str.len);
        }
    } else if (strcasecmp(name, "Disposition") == 0) {
        /* Dovecot checks the params, not the value: a later field replaces
         * an earlier one without parameters */
        if (d->content_disposition_params == NULL) {
            ms_tok_skip_lwsp(&t);
            if (ms_tok_mime_token(&t, &str) >= 0) {
                long n;
                d->content_disposition = ms_strndup(s->a, ms_str_c(&str), str.len);
                n = ms_parse_params(&t, s->a, &d->content_disposition_params);
                d->n_content_disposition_params = n > 0 ? (size_t)n : 0;
            }
        }
    } else if (strcasecmp(name, "Language") == 0) {
        if (d->content_language == NULL) {
            const char *langs[64];
            size_t nl = 0;
            ms_tok_skip_lwsp(&t);
            for (;;) {
                str.len = 0;
                if (ms_tok_atom(&t, &str) < 0)
                    break;
                if (nl < sizeof(langs) / sizeof(langs[0]))
                    langs[nl++] = ms_strndup(s->a, str.data, str.len);
                if (t.data >= t.end || *t.data != ',')
                    break;
                t.data++;
                ms_tok_skip_lwsp(&t);
            }
            if (nl > 0) {
                const char **arr = ms_alloc(s->a, (nl + 1) * sizeof(*arr));
                if (arr != NULL) {
                    memcpy(arr, langs, nl * sizeof(*arr));
                    d->content_language = arr;
                }
            }
        }
    }
    if (str.failed)
        s->a->failed = 1;
    ms_str_free(&str);
}

static struct mime_envelope *envelope_of(struct scan *s)
{
    struct node *p = s->part;

    if (p->env == NULL) {
        p->env = ms_alloc(s->a, sizeof(*p->env));
        p->pub.envelope = p->env;
    }
    return p->env;
}

static void parse_envelope_field(struct scan *s, const unsigned char *name,
                                 size_t nl, const char *value, size_t len)
{
    struct mime_envelope *e;
    const char **str = NULL;
    const struct mime_address **addr = NULL;

    if ((e = envelope_of(s)) == NULL)
        return;
    if (name_is(name, nl, "Date"))
        str = &e->date;
    else if (name_is(name, nl, "Subject"))
        str = &e->subject;
    else if (name_is(name, nl, "Message-ID"))
        str = &e->message_id;
    else if (name_is(name, nl, "In-Reply-To"))
        str = &e->in_reply_to;
    else if (name_is(name, nl, "From"))
        addr = &e->from;
    else if (name_is(name, nl, "Sender"))
        addr = &e->sender;
    else if (name_is(name, nl, "Reply-To"))
        addr = &e->reply_to;
    else if (name_is(name, nl, "To"))
        addr = &e->to;
    else if (name_is(name, nl, "Cc"))
        addr = &e->cc;
    else if (name_is(name, nl, "Bcc"))
        addr = &e->bcc;
    if (str != NULL)
        *str = ms_strndup(s->a, value, len); /* the last one counts */
    else if (addr != NULL)
        *addr = ms_parse_addresses(s->a, value, len);
}

/* One complete header field [start, end) of the current part. */
static void header_field(struct scan *s, uint64_t start, uint64_t end)
{
    struct node *p = s->part;
    const unsigned char *line = s->buf + start;
    const unsigned char *lf = memchr(line, '\n', (size_t)(end - start));
    size_t first_len = lf != NULL ? (size_t)(lf - line) : (size_t)(end - start);
    const unsigned char *colon = memchr(line, ':', first_len);
    struct mime_field f;
    size_t nl;
    int envelope;

    if (lf != NULL && first_len > 0 && line[first_len - 1] == '\r')
        first_len--;
    if (colon != NULL) {
        nl = (size_t)(colon - line);
        while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
            nl--;
    } else {
        nl = first_len;
    }
    f.offset = start;
    f.size = end - start;
    f.name_len = nl > UINT32_MAX ? UINT32_MAX : (uint32_t)nl;
    ms_str_add(&p->fields, &f, sizeof(f));

    envelope = p->pub.parent == NULL ||
               (p->pub.parent->flags & MIME_PART_MESSAGE_RFC822) != 0;
    if (name_is(line, nl, "Mime-Version")) {
        p->pub.flags |= MIME_PART_IS_MIME;
    } else if (name_is(line, nl, "Content-Type")) {
        p->pub.flags |= MIME_PART_IS_MIME;
        field_value(s, &f, colon != NULL, &s->value);
        parse_content_type_flags(s, ms_str_c(&s->value), s->value.len);
    }
    if (nl > 8 && strncasecmp((const char *)line, "Content-", 8) == 0) {
        s->scratch.len = 0;
        ms_str_add(&s->scratch, line + 8, nl - 8);
        field_value(s, &f, colon != NULL, &s->value);
        parse_content_field(s, ms_str_c(&s->scratch), ms_str_c(&s->value),
                            s->value.len);
    }
    if (envelope && nl <= 11) {
        field_value(s, &f, colon != NULL, &s->value);
        parse_envelope_field(s, line, nl, ms_str_c(&s->value), s->value.len);
    }
}

/* The header ended (blank line, boundary or end of message). */
static void header_end(struct scan *s, uint64_t hdr_bytes, int take_newline)
{
    struct node *p = s->part;
    struct mime_part *d = &p->pub;

    d->header_size = hdr_bytes;
    if (take_newline && s->prev_newline > 0) {
        /* a boundary line follows: the CRLF before it is the boundary's */
        d->header_size -= s->prev_newline;
        if (p->pub.parent != NULL) {
            struct node *parent = (struct node *)p->pub.parent;
            if (parent->end < s->pos)
                parent->end = s->pos;
        }
    }
    p->end = d->offset + d->header_size;

    if ((d->flags & MIME_PART_IS_MIME) == 0) {
        /* not MIME: forget what Content-* said */
        struct mime_envelope *env = p->env;
        unsigned int n_children = d->n_children;
        d->flags = 0;
        d->content_type = d->content_subtype = NULL;
        d->content_type_params = NULL;
        d->n_content_type_params = 0;
        d->content_id = d->content_description = NULL;
        d->content_transfer_encoding = d->content_md5 = NULL;
        d->content_disposition = NULL;
        d->content_disposition_params = NULL;
        d->n_content_disposition_params = 0;
        d->content_language = NULL;
        d->content_location = NULL;
        d->envelope = env;
        d->n_children = n_children;
    }
    s->last_boundary = NULL;
    if (!s->seen_content_type || (d->flags & MIME_PART_IS_MIME) == 0) {
        if (d->parent != NULL && (d->parent->flags & MIME_PART_DIGEST) != 0)
            d->flags |= MIME_PART_MESSAGE_RFC822;
        else
            d->flags |= MIME_PART_TEXT;
    }
    d->fields = (const struct mime_field *)p->fields.data;
    d->n_fields = p->fields.len / sizeof(struct mime_field);
    if (p->fields.failed)
        s->a->failed = 1;
    s->state = SCAN_BODY_INIT;
}

static void push_boundary(struct scan *s)
{
    struct boundary *b = ms_alloc(s->a, sizeof(*b));

    if (b == NULL)
        return;
    b->part = s->part;
    b->b = s->last_boundary;
    b->len = strlen(s->last_boundary);
    b->next = s->boundaries;
    s->boundaries = b;
    s->last_boundary = NULL;
}

static int at_eoh(const struct scan *s, uint64_t pos)
{
    if (pos >= s->n)
        return 0;
    if (s->buf[pos] == '\n')
        return 1;
    return s->buf[pos] == '\r' && pos + 1 < s->n && s->buf[pos + 1] == '\n';
}

/* At the start of a header line. */
static void scan_header_line(struct scan *s)
{
    struct boundary *b;
    uint64_t start = s->pos, end;

    if (at_eoh(s, s->pos) && s->last_boundary != NULL &&
        (s->part->pub.flags & MIME_PART_IS_MIME) != 0) {
        /* a multipart begins: its boundary is known from here on, so that
         * a shared prefix resolves to the innermost part */
        if (!too_nested(s)) {
            push_boundary(s);
            s->multipart = 1;
        } else {
            s->part->pub.flags &= ~(unsigned int)MIME_PART_MULTIPART;
            s->part->pub.flags |= MIME_PART_OVERFLOW;
        }
    }
    b = boundary_line(s, s->pos);
    if (b != NULL && b->part != s->part) {
        header_end(s, s->pos - s->hdr_start, 1);
        return;
    }
    if (s->pos >= s->n) {
        header_end(s, s->pos - s->hdr_start, 0);
        return;
    }
    if (at_eoh(s, s->pos)) {
        uint64_t len = s->buf[s->pos] == '\n' ? 1 : 2;
        s->pos += len;
        s->prev_newline = (unsigned int)len;
        /* the line after the blank line may still be an outer boundary:
         * then the blank line's CRLF is the boundary's */
        b = boundary_line(s, s->pos);
        header_end(s, s->pos - s->hdr_start, b != NULL && b->part != s->part);
        return;
    }
    /* one field: its first line and any folded continuation lines */
    end = s->pos;
    s->prev_newline = 0;
    for (;;) {
        const unsigned char *lf = memchr(s->buf + end, '\n', (size_t)(s->n - end));
        if (lf == NULL) {
            end = s->n; /* header ends without a line end */
            s->prev_newline = 0;
            break;
        }
        s->prev_newline = (lf > s->buf + end && lf[-1] == '\r') ? 2 : 1;
        end = (uint64_t)(lf - s->buf) + 1;
        if (end >= s->n || (s->buf[end] != ' ' && s->buf[end] != '\t'))
            break;
    }
    header_field(s, start, end);
    s->pos = end;
}

/* A boundary line of b starts at line_start ("--"); the parts inside b's
 * multipart end where the content before it was attributed. */
static void finish_at_boundary(struct scan *s, struct boundary *b,
                               uint64_t line_start)
{
    const unsigned char *lf;

    while (s->part != b->part)
        part_finish(s);
    s->boundaries = b->epilogue_found ? b->next : b;
    /* the [CR]LF--boundary[--] line and the rest of it belong to b->part */
    lf = memchr(s->buf + line_start, '\n', (size_t)(s->n - line_start));
    s->pos = lf != NULL ? (uint64_t)(lf - s->buf) + 1 : s->n;
    s->part->end = s->pos;
    if (lf == NULL) {
        s->state = SCAN_DONE; /* the message ends inside the boundary line */
    } else if (s->boundaries == NULL || s->boundaries->part != s->part) {
        s->state = s->boundaries != NULL ? SCAN_TO_BOUNDARY : SCAN_TO_EOF;
        s->first_line = 1;
    } else if (s->total_parts >= MIME_STRUCT_MAX_PARTS) {
        s->state = SCAN_TO_BOUNDARY; /* no more parts: the rest is body */
        s->first_line = 1;
    } else {
        if (part_append(s) == NULL)
            return;
        s->part->pub.flags |= MIME_PART_IS_MIME;
        s->state = SCAN_HEADER_INIT;
    }
}

static void scan_to_boundary(struct scan *s)
{
    struct boundary *b;
    uint64_t pos = s->pos;

    if (s->first_line && (b = boundary_line(s, pos)) != NULL) {
        finish_at_boundary(s, b, pos);
        return;
    }
    for (;;) {
        /* only a line starting with "--" can be a boundary line */
        const unsigned char *lf = memmem(s->buf + pos, (size_t)(s->n - pos), "\n--", 3);
        uint64_t l, bstart;
        if (lf == NULL)
            break;
        l = (uint64_t)(lf - s->buf);
        bstart = (l > s->pos && s->buf[l - 1] == '\r') ? l - 1 : l;
        pos = l + 1;
        if ((b = boundary_line(s, pos)) != NULL) {
            s->part->end = bstart;
            finish_at_boundary(s, b, pos);
            return;
        }
    }
    s->part->end = s->n;
    s->state = SCAN_DONE;
}

static void scan_body_init(struct scan *s)
{
    struct node *p = s->part;

    s->first_line = 1;
    if (s->multipart) {
        s->multipart = 0;
        s->state = SCAN_TO_BOUNDARY;
    } else if ((p->pub.flags & MIME_PART_MESSAGE_RFC822) != 0) {
        if (!too_nested(s)) {
            if (part_append(s) != NULL)
                s->state = SCAN_HEADER_INIT;
            return;
        }
        p->pub.flags &= ~(unsigned int)MIME_PART_MESSAGE_RFC822;
        p->pub.flags |= MIME_PART_OVERFLOW;
        s->state = s->boundaries != NULL ? SCAN_TO_BOUNDARY : SCAN_TO_EOF;
    } else {
        s->state = s->boundaries != NULL ? SCAN_TO_BOUNDARY : SCAN_TO_EOF;
    }
}

/* One transition of the scanner. */
static void scan_step(struct scan *s)
{
    switch (s->state) {
    case SCAN_HEADER_INIT:
        s->hdr_start = s->pos;
        s->prev_newline = 0;
        s->seen_content_type = 0;
        s->multipart = 0;
        s->last_boundary = NULL;
        s->state = SCAN_HEADER;
        break;
    case SCAN_HEADER:
        scan_header_line(s);
        break;
    case SCAN_BODY_INIT:
        scan_body_init(s);
        break;
    case SCAN_TO_BOUNDARY:
        scan_to_boundary(s);
        break;
    case SCAN_TO_EOF:
        s->part->end = s->n;
        s->state = SCAN_DONE;
        break;
    case SCAN_DONE:
        break;
    }
}

/* ---- line counts: LFs in each part's header and body range ---------------- */

struct mark {
    uint64_t pos;
    uint32_t *out; /* where the LF count before pos goes */
};

static int mark_cmp(const void *a, const void *b)
{
    const struct mark *x = a, *y = b;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

static void collect_marks(struct node *p, struct mark *m, size_t *n,
                          uint32_t *tmp)
{
    /* tmp holds 3 counters per part, in part order */
    size_t i = *n / 3;
    uint64_t body = p->pub.offset + p->pub.header_size;

    m[(*n)++] = (struct mark){p->pub.offset, &tmp[i * 3]};
    m[(*n)++] = (struct mark){body, &tmp[i * 3 + 1]};
    m[(*n)++] = (struct mark){body + p->pub.body_size, &tmp[i * 3 + 2]};
    for (const struct mime_part *c = p->pub.children; c != NULL; c = c->next)
        collect_marks((struct node *)c, m, n, tmp);
}

static void apply_counts(struct node *p, size_t *i, const uint32_t *tmp)
{
    size_t k = (*i)++;
    p->pub.header_lines = tmp[k * 3 + 1] - tmp[k * 3];
    p->pub.body_lines = tmp[k * 3 + 2] - tmp[k * 3 + 1];
    for (const struct mime_part *c = p->pub.children; c != NULL; c = c->next)
        apply_counts((struct node *)c, i, tmp);
}

/* LFs in [p, p + n): eight bytes at a time. */
static uint32_t count_lf(const unsigned char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    const uint64_t lf = ones * '\n';
    uint64_t count = 0;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w, x;
        memcpy(&w, p + i, 8);
        x = w ^ lf; /* zero bytes where LF */
        /* exact zero-byte mask: high bit set only for zero bytes */
        x = ~(((x & ~high) + ~high) | x | ~high);
        count += (uint64_t)__builtin_popcountll(x);
    }
    for (; i < n; i++)
        count += p[i] == '\n';
    return (uint32_t)count;
}

static int count_lines(struct mime_struct *ms)
{
    size_t n = (size_t)ms->n_parts * 3, k = 0, i;
    struct mark *m = malloc(n * sizeof(*m));
    uint32_t *tmp = calloc(n, sizeof(*tmp));
    const unsigned char *buf = ms->data;
    uint64_t at = 0;
    uint32_t lines = 0;

    if (m == NULL || tmp == NULL) {
        free(m);
        free(tmp);
        return MIME_ERR_NOMEM;
    }
    collect_marks(ms->root, m, &k, tmp);
    qsort(m, k, sizeof(*m), mark_cmp);
    for (i = 0; i < k; i++) {
        uint64_t to = m[i].pos;
        if (to > at) {
            lines += count_lf(buf + at, (size_t)(to - at));
            at = to;
        }
        *m[i].out = lines;
    }
    k = 0;
    apply_counts(ms->root, &k, tmp);
    free(m);
    free(tmp);
    return 0;
}

/* ---- API ----------------------------------------------------------------- */

static int needs_normalising(const unsigned char *p, size_t len)
{
    const unsigned char *end = p + len, *q = p, *lf;

    if (memchr(p, 0, len) != NULL)
        return 1;
    while (q < end && (lf = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        if (lf == p || lf[-1] != '\r')
            return 1;
        q = lf + 1;
    }
    return 0;
}

int mime_struct_parse(const void *msg, size_t len, unsigned int flags,
                      struct mime_struct **ms_r, char **error_r)
{
    struct mime_struct *ms;
    struct scan s;
    int ret = MIME_OK;

    if (error_r != NULL)
        *error_r = NULL;
    if (ms_r == NULL || (msg == NULL && len > 0))
        return MIME_ERR_INVALID_ARG;
    *ms_r = NULL;
    if ((uint64_t)len > MAX_MESSAGE_SIZE)
        return MIME_ERR_TOO_LARGE;
    ms = calloc(1, sizeof(*ms));
    if (ms == NULL)
        return MIME_ERR_NOMEM;
    if (len == 0) {
        ms->data = (const uint8_t *)"";
    } else if ((flags & MIME_STRUCT_BORROW) != 0 && !needs_normalising(msg, len)) {
        ms->data = msg;
        ms->size = len;
    } else {
        uint64_t size = mime_struct_normalized_size(msg, len);
        ms->owned = malloc(size ? (size_t)size : 1);
        if (ms->owned == NULL) {
            free(ms);
            return MIME_ERR_NOMEM;
        }
        ms->size = mime_struct_normalize(msg, len, ms->owned);
        ms->data = ms->owned;
    }

    memset(&s, 0, sizeof(s));
    s.buf = ms->data;
    s.n = ms->size;
    s.a = &ms->arena;
    s.root = ms_alloc(s.a, sizeof(*s.root));
    if (s.root == NULL) {
        ret = MIME_ERR_NOMEM;
        goto out;
    }
    s.part = s.root;
    s.state = SCAN_HEADER_INIT;
    while (s.state != SCAN_DONE && !ms->arena.failed)
        scan_step(&s);
    /* the end: close every open part */
    while (s.part != NULL && s.part->pub.parent != NULL)
        part_finish(&s);
    s.root->pub.body_size = s.root->end - s.root->pub.header_size;
    ms->root = s.root;
    ms->n_parts = s.total_parts + 1;
    if (ms->arena.failed || s.scratch.failed || s.value.failed) {
        ret = MIME_ERR_NOMEM;
        goto out;
    }
    ret = count_lines(ms);
out:
    ms_str_free(&s.scratch);
    ms_str_free(&s.value);
    if (ret != MIME_OK) {
        mime_struct_free(&ms);
        return ret;
    }
    *ms_r = ms;
    return MIME_OK;
}

static void free_fields(struct node *p)
{
    for (const struct mime_part *c = p->pub.children; c != NULL; c = c->next)
        free_fields((struct node *)c);
    ms_str_free(&p->fields);
}

void mime_struct_free(struct mime_struct **msp)
{
    struct mime_struct *ms = msp != NULL ? *msp : NULL;

    if (ms == NULL)
        return;
    if (ms->root != NULL)
        free_fields(ms->root);
    ms_arena_free(&ms->arena);
    if (ms->owned != NULL)
        OPENSSL_cleanse(ms->owned, (size_t)ms->size);
    free(ms->owned);
    free(ms);
    *msp = NULL;
}

const uint8_t *mime_struct_data(const struct mime_struct *ms)
{
    return ms->data;
}

uint64_t mime_struct_size(const struct mime_struct *ms)
{
    return ms->size;
}

const struct mime_part *mime_struct_root(const struct mime_struct *ms)
{
    return &ms->root->pub;
}

unsigned int mime_struct_part_count(const struct mime_struct *ms)
{
    return ms->n_parts;
}
