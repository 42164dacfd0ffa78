/* Upstream responses as events over the tokenizer. Tokens that make up one
 * event but arrive in several reads stay in the caller's buffer (nothing
 * is consumed until the event is complete); `off` is how far into the
 * caller's input the pending event's tokens reach. */
#include "imap_resp.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum rstate {
    R_LINE_START,
    R_TAGGED_STATUS,   /* after the tag */
    R_TEXT,            /* line event: the text */
    R_TEXT_EOL,        /* line event: its line break */
    R_UNTAGGED,        /* after '*': number, status or name */
    R_UNTAGGED_NAME,   /* after '* n' */
    R_DATA,            /* generic untagged data up to the line end */
    R_FETCH_OPEN,      /* after '* n FETCH': '(' */
    R_FETCH_ITEM,      /* an item name or ')' */
    R_FETCH_NAME_LIST, /* `BODY[HEADER.FIELDS`: '(' of the field list */
    R_FETCH_NAME_FIELDS,
    R_FETCH_NAME_CLOSE, /* the `]...` atom after the field list */
    R_FETCH_VALUE,
    R_FETCH_EOL,       /* after the FETCH list's ')' */
    R_RAW_LINE,        /* relay_rest: scanning for the line end */
    R_RAW_LITERAL,     /* relay_rest: literal bytes */
};

/* relay_rest keeps this many bytes of a line unrelayed until its end is
 * seen: enough for "~{" 20 digits "+}\r" */
#define RAW_TAIL 26

struct imap_resp {
    imap_parser *p;
    enum rstate st;
    size_t off;              /* pending bytes of the current event */
    struct imap_resp_event pending; /* fields collected so far */
    /* Offsets into the caller's input of the pending event's strings: the
     * caller's buffer may move between calls (only its content stays). */
    size_t tag_off, text_off, name_off;
    /* FETCH item name being assembled / current */
    char item[IMAP_FETCH_ITEM_MAX + 1];
    size_t item_len;
    unsigned item_index;
    bool in_fetch;
    unsigned value_depth;    /* list depth at the start of the value */
    bool value_started;
    bool field_literal;      /* a field name given as literal */
    size_t raw_scan;         /* R_RAW_LINE: bytes of `in` already searched */
    uint64_t raw_left;       /* R_RAW_LITERAL */
};

static const char *const status_names[] = {
    [IMAP_STATUS_NONE] = "", [IMAP_STATUS_OK] = "OK", [IMAP_STATUS_NO] = "NO",
    [IMAP_STATUS_BAD] = "BAD", [IMAP_STATUS_BYE] = "BYE", [IMAP_STATUS_PREAUTH] = "PREAUTH",
};

const char *imap_status_name(enum imap_status st)
{
    return (unsigned)st < sizeof(status_names) / sizeof(status_names[0]) ? status_names[st]
                                                                          : "";
}

static enum imap_status status_of(const struct imap_token *t)
{
    if (t->type != IMAP_TOK_ATOM)
        return IMAP_STATUS_NONE;
    for (unsigned i = IMAP_STATUS_OK; i <= IMAP_STATUS_PREAUTH; i++)
        if (t->len == strlen(status_names[i]) &&
            strncasecmp(t->str, status_names[i], t->len) == 0)
            return (enum imap_status)i;
    return IMAP_STATUS_NONE;
}

imap_resp *imap_resp_new(const struct imap_parser_limits *limits)
{
    imap_resp *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->p = imap_parser_new(IMAP_PARSER_RESPONSES, limits);
    if (!r->p) {
        free(r);
        return NULL;
    }
    return r;
}

void imap_resp_free(imap_resp **rp)
{
    imap_resp *r = *rp;
    if (!r)
        return;
    imap_parser_free(&r->p);
    free(r);
    *rp = NULL;
}

void imap_resp_reset(imap_resp *r)
{
    imap_parser_reset(r->p);
    r->st = R_LINE_START;
    r->off = 0;
    r->in_fetch = false;
    memset(&r->pending, 0, sizeof(r->pending));
}

bool imap_resp_at_line_start(const imap_resp *r)
{
    return r->st == R_LINE_START && r->off == 0;
}

static bool parse_number(const char *s, size_t len, uint32_t *n_r)
{
    if (len == 0 || len > 10)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    if (n > UINT32_MAX)
        return false;
    *n_r = (uint32_t)n;
    return true;
}

static bool item_append(imap_resp *r, const char *s, size_t len)
{
    if (len > IMAP_FETCH_ITEM_MAX - r->item_len)
        return false;
    for (size_t i = 0; i < len; i++)
        r->item[r->item_len++] = (char)toupper((unsigned char)s[i]);
    r->item[r->item_len] = '\0';
    return true;
}

/* Emits the pending event covering in[0, end). */
static int emit(imap_resp *r, const char *in, size_t end, enum imap_resp_kind kind,
                size_t *used_r, struct imap_resp_event *ev)
{
    *ev = r->pending;
    ev->kind = kind;
    if (ev->tag_len)
        ev->tag = in + r->tag_off;
    if (kind == IMAP_RESP_TAGGED || kind == IMAP_RESP_STATUS || kind == IMAP_RESP_CONTINUATION)
        ev->text = in + r->text_off;
    if (ev->name_len)
        ev->name = in + r->name_off;
    ev->raw = in;
    ev->raw_len = end;
    ev->fetch = r->in_fetch;
    if (r->in_fetch && (kind == IMAP_RESP_FETCH_ITEM || kind == IMAP_RESP_DATA_TOKEN)) {
        ev->item = r->item;
        ev->item_len = r->item_len;
        ev->item_index = r->item_index;
    }
    memset(&r->pending, 0, sizeof(r->pending));
    r->off = 0;
    *used_r = end;
    return IMAP_PARSE_TOKEN;
}

static int bad(imap_resp *r, const char *msg, const char **error_r, size_t *used_r)
{
    (void)r;
    *error_r = msg;
    *used_r = 0;
    return IMAP_PARSE_ERROR;
}

/* The atom of an item name: `BODY[HEADER.FIELDS` needs a field list. */
static bool needs_field_list(const char *s, size_t len)
{
    const char *lb = memchr(s, '[', len);
    return lb && !memchr(lb, ']', len - (size_t)(lb - s));
}

void imap_resp_relay_rest(imap_resp *r)
{
    if (r->st != R_DATA && r->st != R_FETCH_OPEN)
        return;
    r->st = R_RAW_LINE;
    r->raw_scan = 0;
}

/* "...{N}" / "~{N}" / "{N+}" ending at p[0, n) (the line without its
 * break): the literal size. */
static bool literal_at_end(const char *p, size_t n, uint64_t *size_r)
{
    if (n < 3 || p[n - 1] != '}')
        return false;
    size_t i = n - 1;
    if (i > 0 && p[i - 1] == '+')
        i--;
    size_t end = i;
    while (i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9')
        i--;
    if (i == end || i == 0 || p[i - 1] != '{' || end - i > 20)
        return false;
    uint64_t v = 0;
    for (size_t k = i; k < end; k++) {
        unsigned d = (unsigned)(p[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *size_r = v;
    return true;
}

/* The rest of a data response as bytes: a line whose end is not a literal
 * header ends the response. A valid response cannot end a line with
 * "{N}" other than as a literal header (quoted strings do not span lines,
 * atoms hold no '{'), and literal data is counted, never scanned. */
static int raw_next(imap_resp *r, const char *in, size_t len, size_t *used_r,
                    struct imap_resp_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->fetch = r->in_fetch;
    ev->raw = in;
    if (r->st == R_RAW_LITERAL) {
        if (len == 0) {
            *used_r = 0;
            return IMAP_PARSE_MORE;
        }
        size_t n = r->raw_left < len ? (size_t)r->raw_left : len;
        r->raw_left -= n;
        ev->kind = IMAP_RESP_DATA_TOKEN;
        ev->tok.type = IMAP_TOK_LITERAL_DATA;
        ev->tok.str = in;
        ev->tok.len = n;
        ev->tok.literal_size = r->raw_left;
        ev->raw_len = n;
        if (r->raw_left == 0) {
            r->st = R_RAW_LINE;
            r->raw_scan = 0;
        }
        *used_r = n;
        return IMAP_PARSE_TOKEN;
    }
    const char *lf = r->raw_scan < len ? memchr(in + r->raw_scan, '\n', len - r->raw_scan) : NULL;
    if (!lf) {
        /* relay all but a tail that could still become a literal header */
        if (len > RAW_TAIL) {
            ev->kind = IMAP_RESP_DATA_TOKEN;
            ev->tok.type = IMAP_TOK_TEXT;
            ev->tok.str = in;
            ev->tok.len = ev->raw_len = len - RAW_TAIL;
            r->raw_scan = RAW_TAIL;
            *used_r = ev->raw_len;
            return IMAP_PARSE_TOKEN;
        }
        r->raw_scan = len;
        *used_r = 0;
        return IMAP_PARSE_MORE;
    }
    size_t end = (size_t)(lf - in) + 1;
    size_t n = end - 1;
    if (n > 0 && in[n - 1] == '\r')
        n--;
    uint64_t size;
    r->raw_scan = 0;
    ev->raw_len = end;
    *used_r = end;
    if (literal_at_end(in, n, &size)) {
        ev->kind = IMAP_RESP_DATA_TOKEN;
        ev->tok.type = IMAP_TOK_LITERAL;
        ev->tok.str = in;
        ev->tok.len = end;
        ev->tok.literal_size = size;
        if (size > 0) {
            r->st = R_RAW_LITERAL;
            r->raw_left = size;
        }
        return IMAP_PARSE_TOKEN;
    }
    ev->kind = IMAP_RESP_DATA_END;
    r->st = R_LINE_START;
    r->in_fetch = false;
    imap_parser_reset(r->p);
    return IMAP_PARSE_TOKEN;
}

int imap_resp_next(imap_resp *r, const char *in, size_t len, size_t *used_r,
                   struct imap_resp_event *ev, const char **error_r)
{
    if (r->st == R_RAW_LINE || r->st == R_RAW_LITERAL)
        return raw_next(r, in, len, used_r, ev);
    for (;;) {
        struct imap_token t;
        size_t used = 0;
        int rc;
        bool text = r->st == R_TEXT;
        if (text)
            rc = imap_parser_text_next(r->p, in + r->off, len - r->off, &used, &t, error_r);
        else
            rc = imap_parser_next(r->p, in + r->off, len - r->off, &used, &t, error_r);
        if (rc == IMAP_PARSE_MORE) {
            *used_r = 0;
            return IMAP_PARSE_MORE;
        }
        if (rc == IMAP_PARSE_ERROR) {
            *used_r = 0;
            return IMAP_PARSE_ERROR;
        }
        size_t end = r->off + used;

        switch (r->st) {
        case R_LINE_START:
            if (t.type == IMAP_TOK_EOL) /* empty line: tolerated, relayed */
                return bad(r, "Empty response line", error_r, used_r);
            if (t.type != IMAP_TOK_ATOM)
                return bad(r, "Response does not start with a tag", error_r, used_r);
            if (t.len == 1 && t.str[0] == '*') {
                r->st = R_UNTAGGED;
            } else if (t.len == 1 && t.str[0] == '+') {
                r->st = R_TEXT;
                r->pending.kind = IMAP_RESP_CONTINUATION;
            } else {
                r->tag_off = (size_t)(t.str - in);
                r->pending.tag_len = t.len;
                r->st = R_TAGGED_STATUS;
            }
            r->off = end;
            continue;
        case R_TAGGED_STATUS: {
            enum imap_status st = status_of(&t);
            if (st != IMAP_STATUS_OK && st != IMAP_STATUS_NO && st != IMAP_STATUS_BAD)
                return bad(r, "Tagged response without OK, NO or BAD", error_r, used_r);
            r->pending.kind = IMAP_RESP_TAGGED;
            r->pending.status = st;
            r->st = R_TEXT;
            r->off = end;
            continue;
        }
        case R_TEXT:
            /* the text token, possibly empty */
            r->text_off = (size_t)(t.str - in);
            r->pending.text_len = t.len;
            r->st = R_TEXT_EOL;
            r->off = end;
            continue;
        case R_TEXT_EOL: {
            if (t.type != IMAP_TOK_EOL)
                return bad(r, "Response text not ended", error_r, used_r);
            enum imap_resp_kind kind = r->pending.kind;
            r->st = R_LINE_START;
            return emit(r, in, end, kind, used_r, ev);
        }
        case R_UNTAGGED: {
            if (t.type != IMAP_TOK_ATOM)
                return bad(r, "Untagged response without a name", error_r, used_r);
            enum imap_status st = status_of(&t);
            if (st != IMAP_STATUS_NONE) {
                r->pending.kind = IMAP_RESP_STATUS;
                r->pending.status = st;
                r->st = R_TEXT;
                r->off = end;
                continue;
            }
            uint32_t n;
            if (parse_number(t.str, t.len, &n)) {
                r->pending.has_number = true;
                r->pending.number = n;
                r->st = R_UNTAGGED_NAME;
                r->off = end;
                continue;
            }
            r->name_off = (size_t)(t.str - in);
            r->pending.name_len = t.len;
            r->st = R_DATA;
            return emit(r, in, end, IMAP_RESP_DATA_BEGIN, used_r, ev);
        }
        case R_UNTAGGED_NAME:
            if (t.type != IMAP_TOK_ATOM)
                return bad(r, "Untagged response without a name", error_r, used_r);
            r->name_off = (size_t)(t.str - in);
            r->pending.name_len = t.len;
            if (t.len == 5 && strncasecmp(t.str, "FETCH", 5) == 0) {
                r->st = R_FETCH_OPEN;
                r->item_index = 0;
                r->item_len = 0;
                r->item[0] = '\0';
                rc = emit(r, in, end, IMAP_RESP_DATA_BEGIN, used_r, ev);
                r->in_fetch = true;
                ev->fetch = true;
                return rc;
            }
            r->st = R_DATA;
            return emit(r, in, end, IMAP_RESP_DATA_BEGIN, used_r, ev);
        case R_DATA:
            if (t.type == IMAP_TOK_EOL) {
                r->st = R_LINE_START;
                return emit(r, in, end, IMAP_RESP_DATA_END, used_r, ev);
            }
            r->pending.tok = t;
            return emit(r, in, end, IMAP_RESP_DATA_TOKEN, used_r, ev);
        case R_FETCH_OPEN:
            if (t.type != IMAP_TOK_LIST_BEGIN || t.depth != 1)
                return bad(r, "FETCH response without a list", error_r, used_r);
            r->st = R_FETCH_ITEM;
            r->off = end; /* '(' goes with the first item (or the end) */
            continue;
        case R_FETCH_ITEM:
            if (t.type == IMAP_TOK_LIST_END && t.depth == 0) {
                r->st = R_FETCH_EOL;
                r->off = end;
                continue;
            }
            if (t.type != IMAP_TOK_ATOM)
                return bad(r, "FETCH item name expected", error_r, used_r);
            r->item_len = 0;
            r->item[0] = '\0';
            if (!item_append(r, t.str, t.len))
                return bad(r, "FETCH item name too long", error_r, used_r);
            r->off = end;
            if (needs_field_list(t.str, t.len)) {
                r->st = R_FETCH_NAME_LIST;
                continue;
            }
            goto item_named;
        case R_FETCH_NAME_LIST:
            if (t.type != IMAP_TOK_LIST_BEGIN)
                return bad(r, "FETCH item section without ']'", error_r, used_r);
            if (!item_append(r, " (", 2))
                return bad(r, "FETCH item name too long", error_r, used_r);
            r->st = R_FETCH_NAME_FIELDS;
            r->field_literal = false;
            r->off = end;
            continue;
        case R_FETCH_NAME_FIELDS: {
            bool first = r->item[r->item_len - 1] == '(';
            bool ok = true;
            if (t.type == IMAP_TOK_LIST_END) {
                ok = item_append(r, ")", 1);
                r->st = R_FETCH_NAME_CLOSE;
            } else if (t.type == IMAP_TOK_ATOM || t.type == IMAP_TOK_QUOTED) {
                ok = (first || item_append(r, " ", 1)) && item_append(r, t.str, t.len);
            } else if (t.type == IMAP_TOK_LITERAL) {
                ok = first || item_append(r, " ", 1);
            } else if (t.type == IMAP_TOK_LITERAL_DATA) {
                ok = item_append(r, t.str, t.len);
            } else {
                ok = false;
            }
            if (!ok)
                return bad(r, "Invalid FETCH item section", error_r, used_r);
            r->off = end;
            continue;
        }
        case R_FETCH_NAME_CLOSE:
            if (t.type != IMAP_TOK_ATOM || t.str[0] != ']' || !item_append(r, t.str, t.len))
                return bad(r, "FETCH item section without ']'", error_r, used_r);
            r->off = end;
        item_named:
            r->st = R_FETCH_VALUE;
            r->value_depth = imap_parser_depth(r->p);
            r->value_started = false;
            {
                int erc = emit(r, in, r->off, IMAP_RESP_FETCH_ITEM, used_r, ev);
                return erc;
            }
        case R_FETCH_VALUE: {
            if (t.type == IMAP_TOK_EOL)
                return bad(r, "FETCH item without a value", error_r, used_r);
            if (!r->value_started && t.type == IMAP_TOK_LIST_END)
                return bad(r, "FETCH item without a value", error_r, used_r);
            r->value_started = true;
            bool done = t.depth == r->value_depth && t.type != IMAP_TOK_LIST_BEGIN &&
                        !imap_parser_in_literal(r->p);
            r->pending.tok = t;
            r->pending.item_end = done;
            /* the event belongs to the item it ends: emit, then move on */
            rc = emit(r, in, end, IMAP_RESP_DATA_TOKEN, used_r, ev);
            if (done) {
                r->st = R_FETCH_ITEM;
                r->item_index++;
            }
            return rc;
        }
        case R_RAW_LINE:
        case R_RAW_LITERAL:
            return bad(r, "internal: raw state", error_r, used_r);
        case R_FETCH_EOL:
            if (t.type != IMAP_TOK_EOL)
                return bad(r, "Data after the FETCH list", error_r, used_r);
            r->st = R_LINE_START;
            rc = emit(r, in, end, IMAP_RESP_DATA_END, used_r, ev);
            r->in_fetch = false;
            return rc;
        }
    }
}

bool imap_resp_code(const char *text, size_t len, const char **code_r, size_t *code_len_r,
                    const char **args_r, size_t *args_len_r)
{
    if (len < 2 || text[0] != '[')
        return false;
    const char *close = memchr(text, ']', len);
    if (!close)
        return false;
    const char *p = text + 1;
    size_t n = (size_t)(close - p);
    const char *sp = memchr(p, ' ', n);
    *code_r = p;
    *code_len_r = sp ? (size_t)(sp - p) : n;
    *args_r = sp ? sp + 1 : close;
    *args_len_r = sp ? (size_t)(close - sp - 1) : 0;
    return *code_len_r > 0;
}
