/* IMAP tokenizer: one state per partially read token, a scan offset so
 * that bytes are looked at once, no buffering (tokens point into input). */
#include "imap_parser.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_TOKEN 65536
#define DEFAULT_MAX_DEPTH 100

enum tstate {
    T_NONE,       /* between tokens */
    T_CR,         /* CR seen, LF expected */
    T_ATOM,
    T_TILDE,      /* '~': literal8 or an atom */
    T_QUOTED,
    T_LIT_DIGITS, /* after '{' */
    T_LIT_BREAK,  /* after '}': CRLF or LF expected */
    T_LIT_DATA,   /* literal bytes to come */
    T_TEXT,
    T_ERROR,      /* until imap_parser_skip_line / reset */
};

struct imap_parser {
    enum imap_parser_role role;
    struct imap_parser_limits lim;
    enum tstate st;
    size_t scan;      /* bytes of `in` already examined for this token */
    size_t tok_start; /* offset of the token after leading spaces */
    unsigned depth;
    size_t line_size;
    bool line_start;
    uint64_t lit_size;
    bool lit_nonsync, lit8, lit_digits;
    uint64_t lit_left;
    enum imap_parse_error err;
    bool err_line_ended; /* the error consumed the line's end */
};

imap_parser *imap_parser_new(enum imap_parser_role role,
                             const struct imap_parser_limits *limits)
{
    imap_parser *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->role = role;
    if (limits)
        p->lim = *limits;
    if (p->lim.max_token == 0)
        p->lim.max_token = DEFAULT_MAX_TOKEN;
    if (p->lim.max_literal == 0)
        p->lim.max_literal = UINT64_MAX;
    if (p->lim.max_depth == 0)
        p->lim.max_depth = DEFAULT_MAX_DEPTH;
    imap_parser_reset(p);
    return p;
}

void imap_parser_free(imap_parser **pp)
{
    free(*pp);
    *pp = NULL;
}

void imap_parser_reset(imap_parser *p)
{
    p->st = T_NONE;
    p->scan = p->tok_start = 0;
    p->depth = 0;
    p->line_size = 0;
    p->line_start = true;
    p->lit_left = 0;
    p->err = IMAP_PARSE_ERR_NONE;
    p->err_line_ended = false;
}

void imap_parser_set_max_literal(imap_parser *p, uint64_t max_literal)
{
    p->lim.max_literal = max_literal ? max_literal : UINT64_MAX;
}

bool imap_parser_at_line_start(const imap_parser *p)
{
    return p->line_start && p->st == T_NONE && p->scan == 0;
}
bool imap_parser_in_literal(const imap_parser *p) { return p->st == T_LIT_DATA; }
uint64_t imap_parser_literal_left(const imap_parser *p) { return p->lit_left; }
unsigned imap_parser_depth(const imap_parser *p) { return p->depth; }
size_t imap_parser_line_size(const imap_parser *p) { return p->line_size; }
enum imap_parse_error imap_parser_error_kind(const imap_parser *p) { return p->err; }

void imap_parser_error_literal(const imap_parser *p, uint64_t *size_r, bool *nonsync_r)
{
    *size_r = p->lit_size;
    *nonsync_r = p->lit_nonsync;
}

static int fail(imap_parser *p, enum imap_parse_error kind, const char *msg,
                const char **error_r, size_t *used_r)
{
    p->st = T_ERROR;
    p->err = kind;
    p->scan = p->tok_start = 0;
    *used_r = 0;
    *error_r = msg;
    return IMAP_PARSE_ERROR;
}

/* A token of `used` bytes (leading spaces included) is complete. */
static int emit(imap_parser *p, struct imap_token *tok, enum imap_token_type type,
                const char *str, size_t len, size_t used, size_t *used_r,
                const char **error_r)
{
    if (p->lim.max_line && p->line_size + used > p->lim.max_line)
        return fail(p, IMAP_PARSE_ERR_LINE_TOO_LONG, "IMAP command line too large",
                    error_r, used_r);
    tok->type = type;
    tok->str = str;
    tok->len = len;
    tok->depth = p->depth;
    p->line_size += used;
    p->line_start = false;
    p->scan = p->tok_start = 0;
    *used_r = used;
    return IMAP_PARSE_TOKEN;
}

static int need_more(imap_parser *p, size_t scan, size_t *used_r)
{
    p->scan = scan;
    *used_r = 0;
    return IMAP_PARSE_MORE;
}

/* One past the last index of `in` where a byte of the current token may
 * be (token_extra: bytes allowed beyond max_token, e.g. quotes), so that
 * limits are decided at the same byte however the input is cut. */
static size_t token_cap(const imap_parser *p, size_t token_extra)
{
    size_t cap = p->tok_start + p->lim.max_token + token_extra;
    if (p->lim.max_line) {
        size_t room = p->lim.max_line > p->line_size ? p->lim.max_line - p->line_size : 0;
        if (room < cap)
            cap = room;
    }
    return cap;
}

static int too_long(imap_parser *p, const char **error_r, size_t *used_r)
{
    return fail(p, IMAP_PARSE_ERR_LINE_TOO_LONG, "IMAP command line too large", error_r,
                used_r);
}

static bool atom_char_ok(const imap_parser *p, unsigned char c, const char **why)
{
    if (c == '(' || c == ')' || c == '{' || c == '"' || c <= 32 || c == 0x7f) {
        *why = "Invalid characters in atom";
        return false;
    }
    if ((c & 0x80) && p->role == IMAP_PARSER_COMMANDS) {
        *why = "8bit data in atom";
        return false;
    }
    return true;
}

static int end_of_line(imap_parser *p, struct imap_token *tok, size_t used,
                       size_t *used_r, const char **error_r)
{
    if (p->depth > 0)
        return fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing ')'", error_r, used_r);
    int rc = emit(p, tok, IMAP_TOK_EOL, NULL, 0, used, used_r, error_r);
    if (rc == IMAP_PARSE_TOKEN) {
        p->line_size = 0;
        p->line_start = true;
    }
    return rc;
}

static int literal_data(imap_parser *p, const char *in, size_t len, size_t *used_r,
                        struct imap_token *tok)
{
    if (len == 0) {
        *used_r = 0;
        return IMAP_PARSE_MORE;
    }
    size_t n = p->lit_left < len ? (size_t)p->lit_left : len;
    p->lit_left -= n;
    tok->type = IMAP_TOK_LITERAL_DATA;
    tok->str = in;
    tok->len = n;
    tok->literal_size = p->lit_left;
    tok->depth = p->depth;
    if (p->lit_left == 0)
        p->st = T_NONE;
    *used_r = n;
    return IMAP_PARSE_TOKEN;
}

/* Starts a token at the first non-space byte; leaves p->st for the kinds
 * that need more than one byte. */
static int start_token(imap_parser *p, const char *in, size_t len, size_t *used_r,
                       struct imap_token *tok, const char **error_r, bool text)
{
    size_t i = p->scan;
    size_t cap = p->lim.max_token;
    if (p->lim.max_line && p->lim.max_line - p->line_size < cap)
        cap = p->lim.max_line - p->line_size;
    while (i < len && i <= cap && in[i] == ' ')
        i++;
    if (i > cap)
        return too_long(p, error_r, used_r);
    if (i == len) {
        p->tok_start = i;
        return need_more(p, i, used_r);
    }
    p->tok_start = i;
    if (text) {
        p->st = T_TEXT;
        p->scan = i;
        return IMAP_PARSE_MORE; /* caller continues in the state loop */
    }
    unsigned char c = (unsigned char)in[i];
    const char *why;
    switch (c) {
    case '\r':
        p->st = T_CR;
        p->scan = i + 1;
        return IMAP_PARSE_MORE;
    case '\n':
        return end_of_line(p, tok, i + 1, used_r, error_r);
    case '"':
        p->st = T_QUOTED;
        p->scan = i + 1;
        return IMAP_PARSE_MORE;
    case '{':
        p->st = T_LIT_DIGITS;
        p->lit_size = 0;
        p->lit_nonsync = p->lit8 = p->lit_digits = false;
        p->scan = i + 1;
        return IMAP_PARSE_MORE;
    case '~':
        p->st = T_TILDE;
        p->scan = i + 1;
        return IMAP_PARSE_MORE;
    case '(':
        if (p->depth >= p->lim.max_depth)
            return fail(p, IMAP_PARSE_ERR_DEPTH, "Too deep list nesting", error_r, used_r);
        p->depth++;
        return emit(p, tok, IMAP_TOK_LIST_BEGIN, in + i, 1, i + 1, used_r, error_r);
    case ')':
        if (p->depth == 0)
            return fail(p, IMAP_PARSE_ERR_SYNTAX, "Unexpected ')'", error_r, used_r);
        p->depth--;
        return emit(p, tok, IMAP_TOK_LIST_END, in + i, 1, i + 1, used_r, error_r);
    default:
        if (!atom_char_ok(p, c, &why))
            return fail(p, IMAP_PARSE_ERR_SYNTAX, why, error_r, used_r);
        p->st = T_ATOM;
        p->scan = i + 1;
        return IMAP_PARSE_MORE;
    }
}

static int step(imap_parser *p, const char *in, size_t len, size_t *used_r,
                struct imap_token *tok, const char **error_r, bool text)
{
    memset(tok, 0, sizeof(*tok));
    for (;;) {
        size_t j = p->scan;
        const char *why;
        switch (p->st) {
        case T_ERROR:
            *used_r = 0;
            *error_r = "Parser in error state";
            return IMAP_PARSE_ERROR;
        case T_LIT_DATA:
            return literal_data(p, in, len, used_r, tok);
        case T_NONE: {
            int rc = start_token(p, in, len, used_r, tok, error_r, text);
            if (rc != IMAP_PARSE_MORE || p->st == T_NONE)
                return rc;
            continue;
        }
        case T_CR:
            if (j == len)
                return need_more(p, j, used_r);
            if (in[j] != '\n')
                return fail(p, IMAP_PARSE_ERR_SYNTAX, "CR sent without LF", error_r, used_r);
            p->st = T_NONE;
            return end_of_line(p, tok, j + 1, used_r, error_r);
        case T_TILDE:
            if (j == len)
                return need_more(p, j, used_r);
            if (in[j] == '{') {
                p->st = T_LIT_DIGITS;
                p->lit_size = 0;
                p->lit_nonsync = p->lit_digits = false;
                p->lit8 = true;
                p->scan = j + 1;
            } else {
                p->st = T_ATOM; /* "~foo" is an atom */
            }
            continue;
        case T_ATOM: {
            size_t cap = token_cap(p, 0); /* the delimiter may be at cap */
            for (; j < len; j++) {
                if (j > cap)
                    return too_long(p, error_r, used_r);
                unsigned char c = (unsigned char)in[j];
                if (c == ' ' || c == '\r' || c == '\n')
                    break;
                if (c == ')') {
                    if (p->depth > 0)
                        break;
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "Unexpected ')'", error_r, used_r);
                }
                if (!atom_char_ok(p, c, &why))
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, why, error_r, used_r);
            }
            if (j == len)
                return need_more(p, j, used_r);
            p->st = T_NONE;
            return emit(p, tok, IMAP_TOK_ATOM, in + p->tok_start, j - p->tok_start, j,
                        used_r, error_r);
        }
        case T_QUOTED: {
            /* content of max_token bytes: the closing quote at most at
             * tok_start + max_token + 1; used (j + 1) within the line */
            size_t cap = token_cap(p, 2);
            for (; j < len; j++) {
                if (j + 1 > cap)
                    return too_long(p, error_r, used_r);
                unsigned char c = (unsigned char)in[j];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (j + 2 > cap)
                        return too_long(p, error_r, used_r);
                    if (j + 1 == len)
                        break; /* look at the escaped byte next time */
                    j++;
                    c = (unsigned char)in[j];
                }
                if (c == '\0')
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "NULs not allowed in strings",
                                error_r, used_r);
                if (c == '\r' || c == '\n')
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing '\"'", error_r, used_r);
            }
            if (j >= len || in[j] != '"') /* end of input, or a trailing '\\' */
                return need_more(p, j >= len ? len : j, used_r);
            p->st = T_NONE;
            return emit(p, tok, IMAP_TOK_QUOTED, in + p->tok_start + 1,
                        j - p->tok_start - 1, j + 1, used_r, error_r);
        }
        case T_LIT_DIGITS: {
            size_t cap = token_cap(p, 0);
            for (; j < len; j++) {
                if (j >= cap)
                    return too_long(p, error_r, used_r);
                unsigned char c = (unsigned char)in[j];
                if (c == '}')
                    break;
                if (p->lit_nonsync)
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "Expecting '}' after '+'",
                                error_r, used_r);
                if (c == '+' && p->lit_digits) {
                    p->lit_nonsync = true;
                    continue;
                }
                if (c < '0' || c > '9')
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "Invalid literal size", error_r,
                                used_r);
                unsigned d = c - '0';
                if (p->lit_size > (UINT64_MAX - d) / 10) {
                    p->lit_nonsync = true; /* unknowable: data may follow */
                    p->lit_size = UINT64_MAX;
                    return fail(p, IMAP_PARSE_ERR_LITERAL_TOO_BIG, "Literal size too large",
                                error_r, used_r);
                }
                p->lit_size = p->lit_size * 10 + d;
                p->lit_digits = true;
            }
            if (j == len)
                return need_more(p, j, used_r);
            if (!p->lit_digits)
                return fail(p, IMAP_PARSE_ERR_SYNTAX, "Invalid literal size", error_r, used_r);
            p->st = T_LIT_BREAK;
            p->scan = j + 1;
            continue;
        }
        case T_LIT_BREAK: {
            if (j == len)
                return need_more(p, j, used_r);
            size_t end;
            if (in[j] == '\n') {
                end = j + 1;
            } else if (in[j] == '\r') {
                if (j + 1 == len)
                    return need_more(p, j, used_r);
                if (in[j + 1] != '\n')
                    return fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing LF after literal size",
                                error_r, used_r);
                end = j + 2;
            } else {
                return fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing LF after literal size",
                            error_r, used_r);
            }
            if (p->lit_size > p->lim.max_literal) {
                fail(p, IMAP_PARSE_ERR_LITERAL_TOO_BIG, "Literal size too large", error_r,
                     used_r);
                p->err_line_ended = true;
                *used_r = end;
                return IMAP_PARSE_ERROR;
            }
            const char *hdr = in + p->tok_start;
            size_t hdr_len = end - p->tok_start;
            int rc = emit(p, tok, IMAP_TOK_LITERAL, hdr, hdr_len, end, used_r, error_r);
            if (rc != IMAP_PARSE_TOKEN)
                return rc;
            tok->literal_size = p->lit_size;
            tok->literal_nonsync = p->lit_nonsync;
            tok->literal8 = p->lit8;
            p->lit_left = p->lit_size;
            p->st = p->lit_size > 0 ? T_LIT_DATA : T_NONE;
            return rc;
        }
        case T_TEXT: {
            size_t cap = token_cap(p, 0);
            for (; j < len; j++) {
                if (j > cap)
                    return too_long(p, error_r, used_r);
                if (in[j] == '\r' || in[j] == '\n')
                    break;
            }
            if (j == len)
                return need_more(p, j, used_r);
            p->st = T_NONE;
            return emit(p, tok, IMAP_TOK_TEXT, in + p->tok_start, j - p->tok_start, j,
                        used_r, error_r);
        }
        }
    }
}

int imap_parser_next(imap_parser *p, const char *in, size_t len, size_t *used_r,
                     struct imap_token *tok, const char **error_r)
{
    return step(p, in, len, used_r, tok, error_r, false);
}

int imap_parser_text_next(imap_parser *p, const char *in, size_t len, size_t *used_r,
                          struct imap_token *tok, const char **error_r)
{
    if (p->st != T_NONE && p->st != T_TEXT)
        return step(p, in, len, used_r, tok, error_r, false);
    return step(p, in, len, used_r, tok, error_r, true);
}

bool imap_parser_skip_line(imap_parser *p, const char *in, size_t len, size_t *used_r)
{
    if (p->err_line_ended) {
        *used_r = 0;
        imap_parser_reset(p);
        return true;
    }
    const char *lf = memchr(in, '\n', len);
    if (!lf) {
        *used_r = len;
        p->st = T_ERROR;
        return false;
    }
    *used_r = (size_t)(lf - in) + 1;
    imap_parser_reset(p);
    return true;
}

/* ---- argument trees ------------------------------------------------------ */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(void **arena, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    struct arena_block *b = *arena;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        struct arena_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *arena = b = nb;
    }
    void *r = (char *)b->data + b->used;
    b->used += size;
    return r;
}

void imap_args_free(struct imap_args *args)
{
    struct arena_block *b = args->arena_;
    while (b) {
        struct arena_block *n = b->next;
        free(b);
        b = n;
    }
    memset(args, 0, sizeof(*args));
}

/* Growable vector of args for one open list. */
struct argvec {
    struct imap_arg *v;
    size_t n, cap;
    size_t raw_off; /* of the '(' */
};

static struct imap_arg *argvec_push(struct argvec *av)
{
    if (av->n == av->cap) {
        size_t cap = av->cap ? av->cap * 2 : 8;
        struct imap_arg *nv = realloc(av->v, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        av->v = nv;
        av->cap = cap;
    }
    struct imap_arg *a = &av->v[av->n++];
    memset(a, 0, sizeof(*a));
    return a;
}

static char *arena_strndup(void **arena, const char *s, size_t len)
{
    char *d = arena_alloc(arena, len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static char *unescape(void **arena, const char *s, size_t len, size_t *len_r)
{
    char *d = arena_alloc(arena, len + 1);
    if (!d)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len)
            i++;
        d[n++] = s[i];
    }
    d[n] = '\0';
    *len_r = n;
    return d;
}

int imap_args_parse(enum imap_parser_role role, const struct imap_parser_limits *limits,
                    const char *buf, size_t len, struct imap_args *args_r,
                    const char **error_r)
{
    memset(args_r, 0, sizeof(*args_r));
    imap_parser *p = imap_parser_new(role, limits);
    if (!p) {
        *error_r = "Out of memory";
        return IMAP_PARSE_ERROR;
    }
    unsigned max_depth = p->lim.max_depth;
    struct argvec *stack = calloc((size_t)max_depth + 1, sizeof(*stack));
    void *arena = NULL;
    int rc = IMAP_PARSE_ERROR;
    size_t pos = 0;
    unsigned depth = 0;
    struct imap_arg *lit = NULL;
    *error_r = "Out of memory";
    if (!stack)
        goto out;
    for (;;) {
        struct imap_token tok;
        size_t used;
        int r = imap_parser_next(p, buf + pos, len - pos, &used, &tok, error_r);
        if (r == IMAP_PARSE_MORE) {
            rc = IMAP_PARSE_MORE;
            goto out;
        }
        if (r == IMAP_PARSE_ERROR)
            goto out;
        size_t off = pos;
        pos += used;
        /* raw range without leading spaces */
        size_t raw_off = off;
        while (raw_off < pos && buf[raw_off] == ' ' && tok.type != IMAP_TOK_LITERAL_DATA)
            raw_off++;
        if (tok.type == IMAP_TOK_EOL) {
            args_r->line_len = pos;
            break;
        }
        if (tok.type == IMAP_TOK_LITERAL_DATA) {
            if (lit) {
                lit->len += tok.len;
                lit->raw_len = pos - lit->raw_off;
            }
            continue;
        }
        if (tok.type == IMAP_TOK_LIST_END) {
            struct argvec *av = &stack[depth];
            struct imap_arg *children = NULL;
            if (av->n) {
                children = arena_alloc(&arena, av->n * sizeof(*children));
                if (!children)
                    goto out;
                memcpy(children, av->v, av->n * sizeof(*children));
            }
            size_t n = av->n, lo = av->raw_off;
            av->n = 0;
            depth--;
            struct imap_arg *a = argvec_push(&stack[depth]);
            if (!a)
                goto out;
            a->type = IMAP_ARG_LIST;
            a->list = children;
            a->count = n;
            a->raw_off = lo;
            a->raw_len = pos - lo;
            lit = NULL;
            continue;
        }
        if (tok.type == IMAP_TOK_LIST_BEGIN) {
            depth++;
            stack[depth].n = 0;
            stack[depth].raw_off = raw_off;
            lit = NULL;
            continue;
        }
        struct imap_arg *a = argvec_push(&stack[depth]);
        if (!a)
            goto out;
        a->raw_off = raw_off;
        a->raw_len = pos - raw_off;
        lit = NULL;
        switch (tok.type) {
        case IMAP_TOK_ATOM:
            a->type = (tok.len == 3 && strncasecmp(tok.str, "NIL", 3) == 0) ? IMAP_ARG_NIL
                                                                          : IMAP_ARG_ATOM;
            a->str = arena_strndup(&arena, tok.str, tok.len);
            a->len = tok.len;
            if (!a->str)
                goto out;
            break;
        case IMAP_TOK_QUOTED:
            a->type = IMAP_ARG_STRING;
            a->str = unescape(&arena, tok.str, tok.len, &a->len);
            if (!a->str)
                goto out;
            break;
        case IMAP_TOK_LITERAL:
            a->type = IMAP_ARG_LITERAL;
            a->literal8 = tok.literal8;
            a->str = buf + pos;
            a->len = 0;
            lit = a;
            if (tok.literal_size > len - pos) {
                rc = IMAP_PARSE_MORE;
                goto out;
            }
            break;
        default:
            break;
        }
    }
    {
        struct argvec *root = &stack[0];
        struct imap_arg *top = NULL;
        if (root->n) {
            top = arena_alloc(&arena, root->n * sizeof(*top));
            if (!top)
                goto out;
            memcpy(top, root->v, root->n * sizeof(*top));
        }
        args_r->args = top;
        args_r->count = root->n;
        args_r->arena_ = arena;
        arena = NULL;
        rc = 0;
    }
out:
    if (stack) {
        for (unsigned i = 0; i <= max_depth; i++)
            free(stack[i].v);
        free(stack);
    }
    if (arena) {
        struct imap_args tmp = {.arena_ = arena};
        imap_args_free(&tmp);
    }
    imap_parser_free(&p);
    if (rc != 0 && rc != IMAP_PARSE_ERROR)
        *error_r = NULL;
    return rc;
}

bool imap_arg_is_astring(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_STRING ||
           a->type == IMAP_ARG_LITERAL;
}

bool imap_arg_atom_eq(const struct imap_arg *a, const char *atom)
{
    return a->type == IMAP_ARG_ATOM && strcasecmp(a->str, atom) == 0;
}

bool imap_arg_copy(const struct imap_arg *a, char *buf, size_t size)
{
    if (a->type == IMAP_ARG_NIL) {
        if (size == 0)
            return false;
        buf[0] = '\0';
        return true;
    }
    if (!imap_arg_is_astring(a) || a->len >= size || memchr(a->str, '\0', a->len))
        return false;
    memcpy(buf, a->str, a->len);
    buf[a->len] = '\0';
    return true;
}

size_t imap_quote(char *out, size_t size, const char *s, size_t len)
{
    size_t n = 0;
    if (size < 3)
        return 0;
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return 0;
        if (c == '"' || c == '\\') {
            if (n + 1 >= size)
                return 0;
            out[n++] = '\\';
        }
        if (n + 1 >= size)
            return 0;
        out[n++] = c;
    }
    if (n + 2 > size)
        return 0;
    out[n++] = '"';
    out[n] = '\0';
    return n;
}
