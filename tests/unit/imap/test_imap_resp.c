/* imap_resp: event streams for every kind of response, fed whole and one
 * byte at a time; raw bytes of the events reproduce the input; FETCH item
 * names and value ends; errors; response codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_resp.h"

struct trace {
    char out[16384];
    size_t n;
    char raw[16384];
    size_t raw_n;
    bool in_data;
};

static void put(struct trace *t, const char *s, size_t len)
{
    assert_true(t->n + len < sizeof(t->out));
    memcpy(t->out + t->n, s, len);
    t->n += len;
    t->out[t->n] = '\0';
}

__attribute__((format(printf, 2, 3))) static void putf(struct trace *t, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    put(t, tmp, (size_t)n);
}

static void describe(struct trace *t, const struct imap_resp_event *ev)
{
    assert_true(t->raw_n + ev->raw_len < sizeof(t->raw));
    memcpy(t->raw + t->raw_n, ev->raw, ev->raw_len);
    t->raw_n += ev->raw_len;
    if (ev->kind == IMAP_RESP_DATA_TOKEN && ev->tok.type == IMAP_TOK_LITERAL_DATA) {
        if (!t->in_data)
            put(t, "D(", 2);
        t->in_data = true;
        put(t, ev->tok.str, ev->tok.len);
        if (ev->tok.literal_size == 0) {
            put(t, ")", 1);
            t->in_data = false;
            if (ev->item_end)
                putf(t, "!%u", ev->item_index);
        }
        return;
    }
    switch (ev->kind) {
    case IMAP_RESP_TAGGED:
        putf(t, "TAG(%.*s %s [%.*s])", (int)ev->tag_len, ev->tag, imap_status_name(ev->status),
             (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_CONTINUATION:
        putf(t, "CONT[%.*s]", (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_STATUS:
        putf(t, "ST(%s [%.*s])", imap_status_name(ev->status), (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_DATA_BEGIN:
        if (ev->has_number)
            putf(t, "BEGIN(%u %.*s%s)", ev->number, (int)ev->name_len, ev->name,
                 ev->fetch ? "*" : "");
        else
            putf(t, "BEGIN(%.*s)", (int)ev->name_len, ev->name);
        break;
    case IMAP_RESP_FETCH_ITEM:
        putf(t, "ITEM(%s#%u)", ev->item, ev->item_index);
        break;
    case IMAP_RESP_DATA_TOKEN:
        switch (ev->tok.type) {
        case IMAP_TOK_ATOM:
            putf(t, "A(%.*s)", (int)ev->tok.len, ev->tok.str);
            break;
        case IMAP_TOK_QUOTED:
            putf(t, "Q(%.*s)", (int)ev->tok.len, ev->tok.str);
            break;
        case IMAP_TOK_LITERAL:
            putf(t, "L(%llu)", (unsigned long long)ev->tok.literal_size);
            break;
        case IMAP_TOK_LIST_BEGIN:
            put(t, "(", 1);
            break;
        case IMAP_TOK_LIST_END:
            put(t, ")", 1);
            break;
        default:
            put(t, "?", 1);
        }
        if (ev->item_end)
            putf(t, "!%u", ev->item_index);
        break;
    case IMAP_RESP_DATA_END:
        put(t, "END;", 4);
        break;
    }
}

static int run(const char *in, size_t len, size_t step, struct trace *t, const char **err)
{
    imap_resp *r = imap_resp_new(NULL);
    memset(t, 0, sizeof(*t));
    size_t pos = 0, avail = step ? (step < len ? step : len) : len;
    int rc = 0;
    for (;;) {
        char *copy = malloc(avail - pos + 1);
        memcpy(copy, in + pos, avail - pos);
        struct imap_resp_event ev;
        size_t used;
        int x = imap_resp_next(r, copy, avail - pos, &used, &ev, err);
        if (x == IMAP_PARSE_TOKEN) {
            assert_int_equal(used, ev.raw_len);
            assert_ptr_equal(ev.raw, copy);
            describe(t, &ev);
        }
        free(copy);
        if (x == IMAP_PARSE_ERROR) {
            rc = -1;
            break;
        }
        if (x == IMAP_PARSE_MORE) {
            assert_int_equal(used, 0);
            if (avail == len)
                break;
            avail = step ? (avail + step < len ? avail + step : len) : len;
            continue;
        }
        pos += used;
        if (avail < pos)
            avail = pos;
    }
    if (rc == 0) {
        assert_true(imap_resp_at_line_start(r));
        /* every byte was relayed exactly once */
        assert_int_equal(t->raw_n, len);
        assert_memory_equal(t->raw, in, len);
    }
    imap_resp_free(&r);
    assert_null(r);
    return rc;
}

static const char stream[] =
    "* OK [CAPABILITY IMAP4rev1 LITERAL+] Dovecot ready.\r\n"
    "+ idling\r\n"
    "+\r\n"
    "a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n"
    "* 3 EXISTS\r\n"
    "* CAPABILITY IMAP4rev1 IDLE\r\n"
    "* LIST (\\HasNoChildren) \"/\" {5}\r\nINBOX\r\n"
    "* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (From \"To\")] {11}\r\nFrom: a\r\n\r\n "
    "BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0) BODY[]<0> {0}\r\n "
    "ENVELOPE (NIL {3}\r\nx\"y NIL))\r\n"
    "* 2 fetch (FLAGS ())\r\n"
    "* BYE bye\r\n"
    "a2 NO [TRYCREATE] no {5}\r\n";

static const char want[] =
    "ST(OK [[CAPABILITY IMAP4rev1 LITERAL+] Dovecot ready.])"
    "CONT[idling]"
    "CONT[]"
    "TAG(a1 OK [[CAPABILITY IMAP4rev1 MOVE] Logged in])"
    "BEGIN(3 EXISTS)END;"
    "BEGIN(CAPABILITY)A(IMAP4rev1)A(IDLE)END;"
    "BEGIN(LIST)(A(\\HasNoChildren))Q(/)L(5)D(INBOX)END;"
    "BEGIN(1 FETCH*)ITEM(UID#0)A(7)!0ITEM(FLAGS#1)(A(\\Seen))!1"
    "ITEM(BODY[HEADER.FIELDS (FROM TO)]#2)L(11)D(From: a\r\n\r\n)!2"
    "ITEM(BODYSTRUCTURE#3)(Q(text)Q(plain)A(NIL)A(NIL)A(NIL)Q(7bit)A(0)A(0))!3"
    "ITEM(BODY[]<0>#4)L(0)!4"
    "ITEM(ENVELOPE#5)(A(NIL)L(3)D(x\"y)A(NIL))!5END;"
    "BEGIN(2 fetch*)ITEM(FLAGS#0)()!0END;"
    "ST(BYE [bye])"
    "TAG(a2 NO [[TRYCREATE] no {5}])";

static void test_stream(void **state)
{
    (void)state;
    for (size_t step = 0; step <= 3; step++) {
        static struct trace t;
        const char *err = NULL;
        int rc = run(stream, sizeof(stream) - 1, step, &t, &err);
        if (rc != 0)
            print_error("step %zu: %s after %s\n", step, err, t.out);
        assert_int_equal(rc, 0);
        if (strcmp(t.out, want) != 0)
            print_error("step %zu\ngot  %s\nwant %s\n", step, t.out, want);
        assert_string_equal(t.out, want);
    }
}

static void test_big_literal_streams(void **state)
{
    (void)state;
    /* a 1 MiB literal arrives as chunks; nothing waits for all of it */
    size_t n = 1 << 20;
    char head[] = "* 9 FETCH (UID 1 BODY[] {1048576}\r\n";
    imap_resp *r = imap_resp_new(NULL);
    struct imap_resp_event ev;
    size_t used;
    const char *err;
    char *buf = malloc(sizeof(head) + 70000);
    memcpy(buf, head, sizeof(head) - 1);
    memset(buf + sizeof(head) - 1, 'x', 70000);
    size_t pos = 0, len = sizeof(head) - 1 + 65536, data = 0;
    int events = 0;
    while (pos < len) {
        int x = imap_resp_next(r, buf + pos, len - pos, &used, &ev, &err);
        assert_int_equal(x, IMAP_PARSE_TOKEN);
        if (ev.kind == IMAP_RESP_DATA_TOKEN && ev.tok.type == IMAP_TOK_LITERAL_DATA) {
            data += ev.tok.len;
            assert_int_equal(ev.tok.literal_size, n - data);
            assert_false(ev.item_end);
        }
        pos += used;
        events++;
    }
    assert_int_equal(data, 65536);
    assert_int_equal(events, 6); /* BEGIN, ITEM, 1, ITEM, L, data */
    free(buf);
    imap_resp_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "a1 BYE x\r\n",            "a1\r\n",
        "\r\n",                    "* 1 FETCH UID 1\r\n",
        "* 1 FETCH (UID)\r\n",     "* 1 FETCH (\"UID\" 1)\r\n",
        "* 1 FETCH (UID 1) x\r\n", "* 1 FETCH (BODY[HEADER.FIELDS X] {1}\r\nx)\r\n",
        "* 1 FETCH (BODY[HEADER.FIELDS (A) x] {1}\r\nx)\r\n",
        "(a) OK\r\n",              "* (x)\r\n",
        "* 1 (x)\r\n",             "a OK x\rx\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        static struct trace t;
        const char *err = NULL;
        int rc = run(bad[i], strlen(bad[i]), 0, &t, &err);
        if (rc != -1)
            print_error("accepted: %s -> %s\n", bad[i], t.out);
        assert_int_equal(rc, -1);
        assert_non_null(err);
    }
}

/* The relay fast path: after DATA_BEGIN, lines and literals by their
 * ends and sizes; the same bytes, the same response ends, however cut. */
static void test_relay_rest(void **state)
{
    (void)state;
    static const char in[] =
        "* 1 FETCH (UID 7 BODY[HEADER.FIELDS (FROM)] {11}\r\nFrom: a\r\n\r\n ENVELOPE "
        "(NIL \"x{5}\" {3}\r\nabc NIL) BODY[]<0> {0}\r\n)\r\n"
        "* 2 EXISTS\r\n"
        "* SEARCH 1 2 3\n"
        "t OK done\r\n";
    for (size_t step = 0; step <= 3; step++) {
        imap_resp *r = imap_resp_new(NULL);
        size_t len = sizeof(in) - 1, pos = 0, avail = step ? step : len;
        char raw[512];
        size_t raw_n = 0;
        int ends = 0, begins = 0, lits = 0, tagged = 0;
        for (;;) {
            char *copy = malloc(avail - pos + 1);
            memcpy(copy, in + pos, avail - pos);
            struct imap_resp_event ev;
            size_t used;
            const char *err;
            int x = imap_resp_next(r, copy, avail - pos, &used, &ev, &err);
            assert_int_not_equal(x, IMAP_PARSE_ERROR);
            if (x == IMAP_PARSE_TOKEN) {
                memcpy(raw + raw_n, ev.raw, ev.raw_len);
                raw_n += ev.raw_len;
                if (ev.kind == IMAP_RESP_DATA_BEGIN) {
                    begins++;
                    imap_resp_relay_rest(r);
                }
                assert_int_not_equal(ev.kind, IMAP_RESP_FETCH_ITEM);
                if (ev.kind == IMAP_RESP_DATA_END)
                    ends++;
                if (ev.kind == IMAP_RESP_TAGGED)
                    tagged++;
                if (ev.kind == IMAP_RESP_DATA_TOKEN && ev.tok.type == IMAP_TOK_LITERAL)
                    lits++;
            }
            free(copy);
            if (x == IMAP_PARSE_MORE) {
                if (avail == len)
                    break;
                avail = step ? (avail + step < len ? avail + step : len) : len;
                continue;
            }
            pos += used;
            if (avail < pos)
                avail = pos;
        }
        assert_int_equal(raw_n, len);
        assert_memory_equal(raw, in, len);
        assert_int_equal(begins, 3);
        assert_int_equal(ends, 3);
        assert_int_equal(lits, 3);  /* {11}, {3}, {0}: "x{5}" is a string */
        assert_int_equal(tagged, 1);
        assert_true(imap_resp_at_line_start(r));
        imap_resp_free(&r);
    }
}

static void test_resp_code(void **state)
{
    (void)state;
    const char *code, *args;
    size_t cl, al;
    const char *t = "[CAPABILITY IMAP4rev1 IDLE] Logged in";
    assert_true(imap_resp_code(t, strlen(t), &code, &cl, &args, &al));
    assert_memory_equal(code, "CAPABILITY", cl);
    assert_int_equal(al, strlen("IMAP4rev1 IDLE"));
    assert_memory_equal(args, "IMAP4rev1 IDLE", al);
    t = "[ALERT] x";
    assert_true(imap_resp_code(t, strlen(t), &code, &cl, &args, &al));
    assert_int_equal(cl, 5);
    assert_int_equal(al, 0);
    assert_false(imap_resp_code("no code", 7, &code, &cl, &args, &al));
    assert_false(imap_resp_code("[unclosed", 9, &code, &cl, &args, &al));
    assert_false(imap_resp_code("[] x", 4, &code, &cl, &args, &al));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_big_literal_streams),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_relay_rest),
        cmocka_unit_test(test_resp_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
