/* imap_parser: token tables fed whole and one byte at a time, invalid
 * inputs, limits (literal size before any continuation, overflow, line,
 * token, depth), text mode, skipping a bad line, argument trees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_parser.h"

/* Describes tokens as text: A(atom) Q(quoted) L(size[+][8]) D(data)
 * ( ) T(text) $ for EOL. Adjacent data chunks are merged, so byte-at-a-time
 * and whole feeding describe alike. text_after: after an atom equal to
 * this (case-sensitive), read the rest of the line as text. */
struct desc {
    char out[131072];
    size_t n;
    bool in_data;
};

static void put(struct desc *d, const char *s, size_t len)
{
    assert_true(d->n + len < sizeof(d->out));
    memcpy(d->out + d->n, s, len);
    d->n += len;
    d->out[d->n] = '\0';
}

static void describe(struct desc *d, const struct imap_token *t)
{
    char tmp[64];
    if (t->type == IMAP_TOK_LITERAL_DATA) {
        if (!d->in_data)
            put(d, "D(", 2);
        d->in_data = true;
        put(d, t->str, t->len);
        if (t->literal_size == 0) {
            put(d, ")", 1);
            d->in_data = false;
        }
        return;
    }
    switch (t->type) {
    case IMAP_TOK_ATOM:
        put(d, "A(", 2);
        put(d, t->str, t->len);
        put(d, ")", 1);
        break;
    case IMAP_TOK_QUOTED:
        put(d, "Q(", 2);
        put(d, t->str, t->len);
        put(d, ")", 1);
        break;
    case IMAP_TOK_LITERAL:
        snprintf(tmp, sizeof(tmp), "L(%llu%s%s)", (unsigned long long)t->literal_size,
                 t->literal_nonsync ? "+" : "", t->literal8 ? "8" : "");
        put(d, tmp, strlen(tmp));
        break;
    case IMAP_TOK_LIST_BEGIN:
        put(d, "(", 1);
        break;
    case IMAP_TOK_LIST_END:
        put(d, ")", 1);
        break;
    case IMAP_TOK_TEXT:
        put(d, "T(", 2);
        put(d, t->str, t->len);
        put(d, ")", 1);
        break;
    case IMAP_TOK_EOL:
        put(d, "$", 1);
        break;
    default:
        break;
    }
}

/* Runs the parser over input, revealing `step` more bytes each time the
 * parser asks for more (0: all at once). Returns 0 at the end of input,
 * or -1 with the error text in *err. Each revealed prefix is a fresh heap
 * copy of exact size so ASan catches reads past it. */
static int run(enum imap_parser_role role, const struct imap_parser_limits *lim,
               const char *in, size_t len, size_t step, const char *text_after,
               struct desc *d, const char **err, enum imap_parse_error *kind)
{
    imap_parser *p = imap_parser_new(role, lim);
    assert_non_null(p);
    memset(d, 0, sizeof(*d));
    size_t pos = 0, avail = step ? (step < len ? step : len) : len;
    bool text = false;
    int rc = 0;
    while (pos < len || (avail > pos)) {
        char *copy = malloc(avail - pos + 1);
        memcpy(copy, in + pos, avail - pos);
        struct imap_token t;
        size_t used = 99;
        const char *e = NULL;
        int r = text ? imap_parser_text_next(p, copy, avail - pos, &used, &t, &e)
                     : imap_parser_next(p, copy, avail - pos, &used, &t, &e);
        bool text_start = false;
        if (r == IMAP_PARSE_TOKEN) {
            describe(d, &t);
            text_start = !text && text_after && t.type == IMAP_TOK_ATOM &&
                         t.len == strlen(text_after) && memcmp(t.str, text_after, t.len) == 0;
        }
        free(copy);
        if (r == IMAP_PARSE_ERROR) {
            *err = e;
            if (kind)
                *kind = imap_parser_error_kind(p);
            rc = -1;
            break;
        }
        if (r == IMAP_PARSE_MORE) {
            assert_int_equal(used, 0);
            if (avail == len)
                break;
            avail = step ? (avail + step < len ? avail + step : len) : len;
            continue;
        }
        pos += used;
        if (avail < pos)
            avail = pos;
        text = text_start;
    }
    imap_parser_free(&p);
    assert_null(p);
    return rc;
}

struct valid_case {
    enum imap_parser_role role;
    const char *in;
    const char *want;
    const char *text_after;
};

static const struct valid_case valid[] = {
    {IMAP_PARSER_COMMANDS, "a1 NOOP\r\n", "A(a1)A(NOOP)$", NULL},
    {IMAP_PARSER_COMMANDS, "a1 NOOP\n", "A(a1)A(NOOP)$", NULL},
    {IMAP_PARSER_COMMANDS, "a  LOGIN  \"us\\\"er\" {4}\r\npass\r\n",
     "A(a)A(LOGIN)Q(us\\\"er)L(4)D(pass)$", NULL},
    {IMAP_PARSER_COMMANDS, "a LOGIN {4+}\r\nuser {0}\r\n\r\n", "A(a)A(LOGIN)L(4+)D(user)L(0)$",
     NULL},
    {IMAP_PARSER_COMMANDS, "a APPEND INBOX (\\Seen) ~{3}\r\nx\0y\r\n",
     "A(a)A(APPEND)A(INBOX)(A(\\Seen))L(38)D(x\0y)$", NULL},
    {IMAP_PARSER_COMMANDS, "t FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (From To)]<0.100>)\r\n",
     "A(t)A(FETCH)A(1:*)(A(UID)A(BODY.PEEK[HEADER.FIELDS)(A(From)A(To))A(]<0.100>))$", NULL},
    {IMAP_PARSER_COMMANDS, "a LIST \"\" ~foo\r\n", "A(a)A(LIST)Q()A(~foo)$", NULL},
    {IMAP_PARSER_COMMANDS, "a LIST \"\" %*]\r\n", "A(a)A(LIST)Q()A(%*])$", NULL},
    {IMAP_PARSER_COMMANDS, "a X ((a)(b c))()\r\n", "A(a)A(X)((A(a))(A(b)A(c)))()$", NULL},
    {IMAP_PARSER_COMMANDS, "a X \"\"\r\n", "A(a)A(X)Q()$", NULL},
    {IMAP_PARSER_COMMANDS, "a X \"\xc3\xa9\"\r\n", "A(a)A(X)Q(\xc3\xa9)$", NULL},
    {IMAP_PARSER_COMMANDS, "a X {00003}\r\nabc {2}\nxy\r\n", "A(a)A(X)L(3)D(abc)L(2)D(xy)$",
     NULL},
    {IMAP_PARSER_COMMANDS, "a X (a {1}\r\n)b)\r\n", "A(a)A(X)(A(a)L(1)D())A(b))$", NULL},
    {IMAP_PARSER_COMMANDS, "\r\n", "$", NULL},
    {IMAP_PARSER_COMMANDS, "a X\r\nb Y\r\n", "A(a)A(X)$A(b)A(Y)$", NULL},
    {IMAP_PARSER_RESPONSES, "* OK [CAPABILITY IMAP4rev1 IDLE] Dovecot (Debian) ready.\r\n",
     "A(*)A(OK)T([CAPABILITY IMAP4rev1 IDLE] Dovecot (Debian) ready.)$", "OK"},
    {IMAP_PARSER_RESPONSES, "a OK\r\n", "A(a)A(OK)T()$", "OK"},
    {IMAP_PARSER_RESPONSES, "a NO {5}\r\n", "A(a)A(NO)T({5})$", "NO"},
    {IMAP_PARSER_RESPONSES, "* 1 FETCH (UID 7 BODY[] {5}\r\nab)\r\n)\r\n",
     "A(*)A(1)A(FETCH)(A(UID)A(7)A(BODY[])L(5)D(ab)\r\n))$", NULL},
    {IMAP_PARSER_RESPONSES, "* 1 FETCH (BODYSTRUCTURE ((\"text\" NIL)(\"a\" \"b\") \"mixed\"))\r\n",
     "A(*)A(1)A(FETCH)(A(BODYSTRUCTURE)((Q(text)A(NIL))(Q(a)Q(b))Q(mixed)))$", NULL},
    {IMAP_PARSER_RESPONSES, "* FLAGS (\\Answered \xe4\xbd\xa0)\r\n",
     "A(*)A(FLAGS)(A(\\Answered)A(\xe4\xbd\xa0))$", NULL},
    {IMAP_PARSER_RESPONSES, "+ \r\n", "A(+)T()$", "+"},
    {IMAP_PARSER_RESPONSES, "+ idling\r\n", "A(+)T(idling)$", "+"},
    {IMAP_PARSER_RESPONSES, "* 3 FETCH (BINARY[1] ~{2}\r\n\0\1)\r\n",
     "A(*)A(3)A(FETCH)(A(BINARY[1])L(28)D(\0\1))$", NULL},
};

/* Inputs with NUL bytes: lengths given explicitly via sizeof. */
static size_t case_len(const char *s)
{
    /* The two cases with NULs are the literal8 ones; compute by scanning
     * to the final "\r\n" after the data. */
    const char *lit8 = strstr(s, "~{");
    if (!lit8)
        return strlen(s);
    unsigned long n = strtoul(lit8 + 2, NULL, 10);
    const char *data = strchr(lit8, '\n') + 1;
    return (size_t)(data - s) + n + strlen(data + n);
}

static void want_equal(const struct desc *d, const char *want, size_t want_len)
{
    if (d->n != want_len || memcmp(d->out, want, want_len) != 0) {
        print_error("got  [%.*s]\nwant [%.*s]\n", (int)d->n, d->out, (int)want_len, want);
        fail();
    }
}

static void test_valid_tables(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        const struct valid_case *c = &valid[i];
        size_t len = case_len(c->in);
        const char *want = c->want;
        /* literal8 case descriptions: build them here (NUL inside) */
        char buf[256];
        size_t wl = strlen(want);
        if (strstr(want, "L(38)")) {
            wl = (size_t)snprintf(buf, sizeof(buf), "A(a)A(APPEND)A(INBOX)(A(\\Seen))L(38)D(x");
            buf[wl++] = '\0';
            wl += (size_t)snprintf(buf + wl, sizeof(buf) - wl, "y)$");
            want = buf;
        } else if (strstr(want, "L(28)")) {
            wl = (size_t)snprintf(buf, sizeof(buf), "A(*)A(3)A(FETCH)(A(BINARY[1])L(28)D(");
            buf[wl++] = '\0';
            buf[wl++] = '\1';
            wl += (size_t)snprintf(buf + wl, sizeof(buf) - wl, "))$");
            want = buf;
        }
        for (size_t step = 0; step <= 3; step++) {
            static struct desc d;
            const char *err = NULL;
            int rc = run(c->role, NULL, c->in, len, step, c->text_after, &d, &err, NULL);
            if (rc != 0)
                print_error("case %zu step %zu: error %s\n", i, step, err);
            assert_int_equal(rc, 0);
            want_equal(&d, want, wl);
        }
    }
}

struct invalid_case {
    enum imap_parser_role role;
    enum imap_parse_error kind;
    const char *in;
    const char *error;
};

static const struct invalid_case invalid[] = {
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X)\r\n", "Unexpected ')'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X )\r\n", "Unexpected ')'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X (b\r\n", "Missing ')'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X \"b\r\n", "Missing '\"'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X \"b\\\r\n", "Missing '\"'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X a(b\r\n", "Invalid characters in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X a{b\r\n", "Invalid characters in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X a\"b\r\n", "Invalid characters in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X a\tb\r\n", "Invalid characters in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X \x7f\r\n", "Invalid characters in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X \xc3\xa9\r\n", "8bit data in atom"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X\rb\r\n", "CR sent without LF"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X \r \r\n", "CR sent without LF"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {}\r\n", "Invalid literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {+}\r\n", "Invalid literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1a}\r\n", "Invalid literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {-1}\r\n", "Invalid literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1+2}\r\n", "Expecting '}' after '+'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1++}\r\n", "Expecting '}' after '+'"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1} \r\n", "Missing LF after literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1}\rx\n", "Missing LF after literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X {1}x\r\n", "Missing LF after literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_SYNTAX, "a X ~{x}\r\n", "Invalid literal size"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_LITERAL_TOO_BIG, "a X {18446744073709551616}\r\n", "Literal size too large"},
    {IMAP_PARSER_COMMANDS, IMAP_PARSE_ERR_LITERAL_TOO_BIG, "a X {99999999999999999999999}\r\n", "Literal size too large"},
    {IMAP_PARSER_RESPONSES, IMAP_PARSE_ERR_SYNTAX, "* 1 FETCH (X))\r\n", "Unexpected ')'"},
    {IMAP_PARSER_RESPONSES, IMAP_PARSE_ERR_SYNTAX, "* 1 FETCH (X \"a\0\")\r\n", "NULs not allowed in strings"},
};

static void test_invalid_tables(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        const struct invalid_case *c = &invalid[i];
        size_t len = strlen(c->in);
        if (strstr(c->in, "\"a")) /* the NUL case */
            len = 20;
        for (size_t step = 0; step <= 2; step++) {
            static struct desc d;
            const char *err = NULL;
            enum imap_parse_error kind = IMAP_PARSE_ERR_NONE;
            int rc = run(c->role, NULL, c->in, len, step, NULL, &d, &err, &kind);
            if (rc != -1)
                print_error("case %zu (%s) step %zu: no error, got %s\n", i, c->in, step,
                            d.out);
            assert_int_equal(rc, -1);
            assert_string_equal(err, c->error);
            assert_int_equal(kind, c->kind);
        }
    }
}

/* The size is checked when the header is complete, before the caller could
 * answer "+": the error consumes exactly the header and its line break. */
static void test_literal_limit(void **state)
{
    (void)state;
    struct imap_parser_limits lim = {.max_literal = 100};
    imap_parser *p = imap_parser_new(IMAP_PARSER_COMMANDS, &lim);
    struct imap_token t;
    size_t used;
    const char *err;
    const char *in = "a APPEND x {101}\r\nb NOOP\r\n";
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err),
                         IMAP_PARSE_TOKEN);
        pos += used;
    }
    assert_int_equal(imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err),
                     IMAP_PARSE_ERROR);
    assert_string_equal(err, "Literal size too large");
    assert_int_equal(imap_parser_error_kind(p), IMAP_PARSE_ERR_LITERAL_TOO_BIG);
    assert_int_equal(used, strlen(" {101}\r\n"));
    uint64_t size;
    bool nonsync;
    imap_parser_error_literal(p, &size, &nonsync);
    assert_int_equal(size, 101);
    assert_false(nonsync);
    pos += used;
    /* A synchronizing client sends nothing more for this command: the line
     * has ended, the next command parses. */
    assert_true(imap_parser_skip_line(p, in + pos, strlen(in + pos), &used));
    assert_int_equal(used, 0);
    assert_true(imap_parser_at_line_start(p));
    assert_int_equal(imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err),
                     IMAP_PARSE_TOKEN);
    assert_memory_equal(t.str, "b", 1);

    /* At the limit it is accepted; the per-command limit can change. */
    imap_parser_reset(p);
    imap_parser_set_max_literal(p, 5);
    assert_int_equal(imap_parser_next(p, "{5+}\r\n", 6, &used, &t, &err), IMAP_PARSE_TOKEN);
    assert_int_equal(t.type, IMAP_TOK_LITERAL);
    assert_true(t.literal_nonsync);
    assert_true(imap_parser_in_literal(p));
    assert_int_equal(imap_parser_literal_left(p), 5);
    assert_int_equal(imap_parser_next(p, "abc", 3, &used, &t, &err), IMAP_PARSE_TOKEN);
    assert_int_equal(t.len, 3);
    assert_int_equal(t.literal_size, 2);
    assert_int_equal(imap_parser_next(p, "", 0, &used, &t, &err), IMAP_PARSE_MORE);
    assert_int_equal(imap_parser_next(p, "de)\r\n", 5, &used, &t, &err), IMAP_PARSE_TOKEN);
    assert_int_equal(t.len, 2);
    assert_false(imap_parser_in_literal(p));
    imap_parser_free(&p);
}

static void test_line_and_token_limits(void **state)
{
    (void)state;
    struct imap_parser_limits lim = {.max_token = 16, .max_line = 40, .max_depth = 3};
    static struct desc d;
    const char *err;
    enum imap_parse_error kind;
    for (size_t step = 0; step <= 1; step++) {
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, "a X 12345678901234567\r\n", 23, step,
                             NULL, &d, &err, &kind),
                         -1);
        assert_int_equal(kind, IMAP_PARSE_ERR_LINE_TOO_LONG);
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, "a X \"12345678901234567\"\r\n", 25,
                             step, NULL, &d, &err, &kind),
                         -1);
        assert_int_equal(kind, IMAP_PARSE_ERR_LINE_TOO_LONG);
        /* 16 is fine */
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, "a X 1234567890123456\r\n", 22,
                             step, NULL, &d, &err, &kind),
                         0);
        /* many short tokens: the line limit */
        const char *many = "a X 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0\r\n";
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, many, strlen(many), step, NULL, &d,
                             &err, &kind),
                         -1);
        assert_int_equal(kind, IMAP_PARSE_ERR_LINE_TOO_LONG);
        assert_string_equal(err, "IMAP command line too large");
        /* literal data does not count towards the line */
        const char *lit = "a X {30}\r\n123456789012345678901234567890 b\r\n";
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, lit, strlen(lit), step, NULL, &d,
                             &err, &kind),
                         0);
        /* depth */
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, "a X (((a)))\r\n", 13, step, NULL,
                             &d, &err, &kind),
                         0);
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, "a X ((((a))))\r\n", 15, step, NULL,
                             &d, &err, &kind),
                         -1);
        assert_int_equal(kind, IMAP_PARSE_ERR_DEPTH);
        /* a line of spaces is bounded too */
        char spaces[64];
        memset(spaces, ' ', sizeof(spaces));
        assert_int_equal(run(IMAP_PARSER_COMMANDS, &lim, spaces, sizeof(spaces), step, NULL, &d,
                             &err, &kind),
                         -1);
    }
}

/* A peer that sends a large token one byte at a time costs linear work. */
static void test_slow_large_token(void **state)
{
    (void)state;
    size_t n = 60000;
    char *in = malloc(n + 8);
    memset(in, 'x', n);
    snprintf(in, 6, "a X \"");
    in[5] = 'x';
    snprintf(in + n, 4, "\"\r\n");
    static struct desc d;
    const char *err;
    assert_int_equal(run(IMAP_PARSER_COMMANDS, NULL, in, n + 3, 1, NULL, &d, &err, NULL), 0);
    free(in);
    in = malloc(n + 8);
    memset(in, 'y', n);
    snprintf(in, 5, "a X ");
    in[4] = 'y';
    snprintf(in + n, 3, "\r\n");
    imap_parser *p = imap_parser_new(IMAP_PARSER_COMMANDS, NULL);
    struct imap_token t;
    size_t used, pos = 0, avail = 1, tokens = 0;
    for (;;) {
        int r = imap_parser_next(p, in + pos, avail - pos, &used, &t, &err);
        assert_int_not_equal(r, IMAP_PARSE_ERROR);
        if (r == IMAP_PARSE_MORE) {
            avail++;
            assert_true(avail <= n + 2);
            continue;
        }
        pos += used;
        tokens++;
        if (t.type == IMAP_TOK_EOL)
            break;
    }
    assert_int_equal(tokens, 4);
    imap_parser_free(&p);
    free(in);
}

static void test_skip_line(void **state)
{
    (void)state;
    imap_parser *p = imap_parser_new(IMAP_PARSER_COMMANDS, NULL);
    struct imap_token t;
    size_t used;
    const char *err;
    const char *in = "a X a(b c d\r\nb NOOP\r\n";
    size_t pos = 0;
    int r;
    while ((r = imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err)) ==
           IMAP_PARSE_TOKEN)
        pos += used;
    assert_int_equal(r, IMAP_PARSE_ERROR);
    /* the parser stays in error until the line is skipped */
    assert_int_equal(imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err),
                     IMAP_PARSE_ERROR);
    /* skipping may need more input */
    assert_false(imap_parser_skip_line(p, in + pos, 3, &used));
    assert_int_equal(used, 3);
    pos += used;
    assert_true(imap_parser_skip_line(p, in + pos, strlen(in + pos), &used));
    pos += used;
    assert_string_equal(in + pos, "b NOOP\r\n");
    assert_int_equal(imap_parser_next(p, in + pos, strlen(in + pos), &used, &t, &err),
                     IMAP_PARSE_TOKEN);
    assert_memory_equal(t.str, "b", 1);
    imap_parser_free(&p);
}

static void test_text_mode(void **state)
{
    (void)state;
    imap_parser *p = imap_parser_new(IMAP_PARSER_RESPONSES, NULL);
    struct imap_token t;
    size_t used;
    const char *err;
    /* text ends at CR; CR then something else is an error */
    assert_int_equal(imap_parser_text_next(p, "  hi there\r", 11, &used, &t, &err),
                     IMAP_PARSE_TOKEN);
    assert_int_equal(t.type, IMAP_TOK_TEXT);
    assert_int_equal(t.len, 8);
    assert_int_equal(used, 10);
    assert_int_equal(imap_parser_next(p, "\r", 1, &used, &t, &err), IMAP_PARSE_MORE);
    assert_int_equal(imap_parser_next(p, "\rx", 2, &used, &t, &err), IMAP_PARSE_ERROR);
    assert_string_equal(err, "CR sent without LF");
    imap_parser_free(&p);
}

static void test_args_tree(void **state)
{
    (void)state;
    const char *line = "t UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (From \"To\")] nil "
                       "{3}\r\nx\"y)\r\nrest";
    struct imap_args args;
    const char *err;
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &args, &err),
                     0);
    assert_int_equal(args.count, 5);
    assert_int_equal(args.line_len, strlen(line) - 4);
    assert_true(imap_arg_atom_eq(&args.args[1], "uid"));
    const struct imap_arg *l = &args.args[4];
    assert_int_equal(l->type, IMAP_ARG_LIST);
    assert_int_equal(l->count, 6);
    assert_string_equal(l->list[1].str, "BODY.PEEK[HEADER.FIELDS");
    assert_int_equal(l->list[2].type, IMAP_ARG_LIST);
    assert_int_equal(l->list[2].list[1].type, IMAP_ARG_STRING);
    assert_string_equal(l->list[2].list[1].str, "To");
    assert_string_equal(l->list[3].str, "]");
    assert_int_equal(l->list[4].type, IMAP_ARG_NIL);
    assert_int_equal(l->list[5].type, IMAP_ARG_LITERAL);
    assert_int_equal(l->list[5].len, 3);
    assert_memory_equal(l->list[5].str, "x\"y", 3);
    /* raw ranges: the list from '(' to ')' */
    assert_memory_equal(line + l->raw_off, "(UID", 4);
    assert_int_equal(line[l->raw_off + l->raw_len - 1], ')');
    assert_memory_equal(line + l->list[2].raw_off, "(From \"To\")", l->list[2].raw_len);
    char buf[8];
    assert_true(imap_arg_copy(&l->list[2].list[1], buf, sizeof(buf)));
    assert_string_equal(buf, "To");
    assert_false(imap_arg_copy(&l->list[1], buf, sizeof(buf)));
    imap_args_free(&args);

    /* incomplete and invalid lines */
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, "a X {5}\r\nab", 11, &args, &err),
                     IMAP_PARSE_MORE);
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, "a X (", 5, &args, &err),
                     IMAP_PARSE_MORE);
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, "a X )\r\n", 7, &args, &err),
                     IMAP_PARSE_ERROR);
    assert_string_equal(err, "Unexpected ')'");
}

static void test_quote(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(imap_quote(out, sizeof(out), "a\"b\\c", 5), 9);
    assert_string_equal(out, "\"a\\\"b\\\\c\"");
    assert_int_equal(imap_quote(out, sizeof(out), "a\r\nb", 4), 0);
    assert_int_equal(imap_quote(out, 4, "abc", 3), 0);
    assert_int_equal(imap_quote(out, 6, "abc", 3), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_tables),
        cmocka_unit_test(test_invalid_tables),
        cmocka_unit_test(test_literal_limit),
        cmocka_unit_test(test_line_and_token_limits),
        cmocka_unit_test(test_slow_large_token),
        cmocka_unit_test(test_skip_line),
        cmocka_unit_test(test_text_mode),
        cmocka_unit_test(test_args_tree),
        cmocka_unit_test(test_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
