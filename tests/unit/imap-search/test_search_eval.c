/* imap_search: criteria parsing (valid forms and a table of invalid ones),
 * writing back, evaluation of server attributes and content on small
 * messages, the plan for mixed mailboxes, merged results and their
 * ESEARCH set, SORT criteria and ordering, and concurrent evaluation. The
 * content rules themselves are proven against Dovecot by the e2e oracle. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_search.h"

static struct imap_search *parse_ok(const char *text)
{
    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    assert_int_equal(imap_search_in_parse(text, strlen(text), &in, &n, &err), 0);
    struct imap_search *s = NULL;
    int rc = imap_search_parse(in, n, NULL, &s, &err);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", text, err);
    assert_int_equal(rc, 0);
    imap_search_in_free(&in);
    return s;
}

static int parse_err(const char *text, const char *charset)
{
    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    int rc = imap_search_in_parse(text, strlen(text), &in, &n, &err);
    if (rc != 0)
        return rc;
    struct imap_search *s = NULL;
    rc = imap_search_parse(in, n, charset, &s, &err);
    imap_search_in_free(&in);
    if (rc == 0)
        imap_search_free(&s);
    else
        assert_non_null(err);
    return rc;
}

static void test_parse_and_write(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"ALL", "ALL"},
        {"subject \"a b\" from x", "SUBJECT \"a b\" FROM \"x\""},
        {"OR (SEEN FLAGGED) NOT UID 1:5,7,9:*", "OR (SEEN FLAGGED) NOT UID 1:5,7,9:*"},
        {"5:2", "2:5"},
        {"NEW", "(RECENT UNSEEN)"},
        {"OLD UNKEYWORD $x KEYWORD Junk", "OLD UNKEYWORD $x KEYWORD Junk"},
        {"KEYWORD \\Seen", "KEYWORD \\Seen"},
        {"SENTSINCE 1-Feb-1994 BEFORE 01-Jan-2021", "SENTSINCE 1-Feb-1994 BEFORE 1-Jan-2021"},
        {"LARGER 100 SMALLER 200 MODSEQ 7 OLDER 60 YOUNGER 5",
         "LARGER 100 SMALLER 200 MODSEQ 7 OLDER 60 YOUNGER 5"},
        {"MODSEQ \"/flags/\\\\seen\" all 9", "MODSEQ 9"},
        {"HEADER X-A \"q\\\"uote\"", "HEADER \"X-A\" \"q\\\"uote\""},
        {"BODY {5}\r\ncaf\xc3\xa9", "BODY {5}\r\ncaf\xc3\xa9"},
        {"$ UID $", "$ $"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct imap_search *s = parse_ok(cases[i].in);
        char *w = imap_search_write(imap_search_root(s));
        assert_string_equal(w, cases[i].out);
        /* and the written form parses to the same again */
        struct imap_search *s2 = parse_ok(w);
        char *w2 = imap_search_write(imap_search_root(s2));
        assert_string_equal(w, w2);
        free(w);
        free(w2);
        imap_search_free(&s);
        imap_search_free(&s2);
    }
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "FOO", "SUBJECT", "HEADER X", "OR SEEN", "NOT", "BEFORE 32-Jan-2020",
        "BEFORE 1-Foo-2020", "SINCE 1-Jan-20", "LARGER x", "LARGER -1", "UID x", "UID 0",
        "0", "1:0", "(SEEN", "SEEN)", "KEYWORD", "X-GM-RAW foo", "FUZZY BODY x",
        "SMALLER 99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse_err(bad[i], NULL);
        if (rc == 0)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        assert_true(rc < 0);
    }
    assert_int_equal(parse_err("BODY x", "X-NO-SUCH-CHARSET"), IMAP_SEARCH_EBADCHARSET);
    assert_int_equal(parse_err("BODY x", "ISO-8859-1"), 0);
    /* nesting limit */
    char deep[1200];
    size_t o = 0;
    for (int i = 0; i < 150; i++)
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, "NOT ");
    snprintf(deep + o, sizeof(deep) - o, "ALL");
    assert_int_equal(parse_err(deep, NULL), IMAP_SEARCH_ELIMIT);
}

static const char msg1[] = "From: \"Alice\" <alice@example.org>\r\n"
                           "To: bob@example.org\r\n"
                           "Subject: =?ISO-8859-1?Q?Caf=E9?= report\r\n"
                           "Date: Mon, 7 Dec 2026 23:30:00 -0300\r\n"
                           "Content-Type: text/plain; charset=iso-8859-1\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n"
                           "\r\n"
                           "Gr=FC=DFe, na=EFve soft=\r\nbreak\r\n";

struct fixture {
    struct mime_struct *ms;
    const char *flags[3];
    struct imap_search_msg m;
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(mime_struct_parse(msg1, sizeof(msg1) - 1, 0, &f->ms, NULL), 0);
    f->flags[0] = "\\Seen";
    f->flags[1] = "$Label1";
    f->m.ms = f->ms;
    f->m.seq = 3;
    f->m.uid = 30;
    f->m.max_seq = 5;
    f->m.max_uid = 50;
    f->m.flags = f->flags;
    f->m.n_flags = 2;
    f->m.internaldate = 1796688000; /* 2026-12-08 00:00:00 UTC */
    f->m.internaldate_tz = -60;     /* server shows 07-Dec-2026 23:00:00 -0100 */
    f->m.now = 1796688000 + 3600;
    f->m.modseq = 12;
}

static int eval(const struct fixture *f, const char *criteria)
{
    struct imap_search *s = parse_ok(criteria);
    int r = imap_search_eval(s, &f->m);
    imap_search_free(&s);
    return r;
}

static void test_eval(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f);
    static const struct {
        const char *c;
        int want;
    } cases[] = {
        {"ALL", 1}, {"SEEN", 1}, {"UNSEEN", 0}, {"KEYWORD $label1", 1}, {"FLAGGED", 0},
        {"KEYWORD \\Seen", 0}, {"UNKEYWORD \\Seen", 1},
        {"3", 1}, {"4:*", 0}, {"*", 0}, {"UID 30", 1}, {"UID 31:*", 0}, {"UID 50:*", 0},
        {"ON 7-Dec-2026", 1}, {"ON 8-Dec-2026", 0}, /* the server's zone decides */
        {"BEFORE 8-Dec-2026", 1}, {"SINCE 8-Dec-2026", 0},
        {"SENTON 7-Dec-2026", 1}, /* the sender's zone decides */
        {"SENTSINCE 8-Dec-2026", 0}, {"SENTBEFORE 7-Dec-2026", 0},
        {"YOUNGER 3600", 1}, {"YOUNGER 3599", 0}, {"OLDER 3600", 1}, {"OLDER 3601", 0},
        {"MODSEQ 12", 1}, {"MODSEQ 13", 0},
        {"SUBJECT café", 1}, {"SUBJECT CAFE", 1} /* E + U+0301 */, {"SUBJECT cafx", 0}, {"SUBJECT \"é report\"", 1},
        {"FROM alice", 1}, {"FROM \"alice <alice@\"", 1}, {"FROM \"\\\"alice\"", 0}, {"TO BOB@", 1}, {"CC x", 0},
        {"HEADER content-type ISO", 1}, {"HEADER X-None \"\"", 0}, {"HEADER From \"\"", 1},
        {"BODY grüße", 1}, {"BODY NAÏVE", 1}, {"BODY softbreak", 1}, {"BODY report", 0},
        {"TEXT report", 1}, {"TEXT \"date: mon\"", 1}, {"BODY \"\"", 1},
        {"LARGER 100", 1}, {"SMALLER 100", 0},
        {"OR FLAGGED BODY grüße", 1}, {"NOT (SEEN BODY grüße)", 0}, {"$", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = eval(&f, cases[i].c);
        if (r != cases[i].want)
            fprintf(stderr, "%s: got %d\n", cases[i].c, r);
        assert_int_equal(r, cases[i].want);
    }
    mime_struct_free(&f.ms);
}

static void test_plan(void **state)
{
    (void)state;
    struct imap_search_plan p;
    struct imap_search *s = parse_ok("SEEN UID 1:100 SINCE 1-Jan-2020");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_false(p.content); /* relay unchanged */
    assert_null(p.plain_query);
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    s = parse_ok("SEEN BODY x");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_true(p.content);
    assert_string_equal(p.plain_query, "(SEEN BODY \"x\") NOT HEADER X-QKD-Key-ID \"\"");
    assert_string_equal(p.enc_query, "SEEN HEADER X-QKD-Key-ID \"\"");
    assert_false(p.enc_all_candidates);
    assert_true(p.needs & IMAP_SEARCH_NEED_BODY);
    assert_true(p.needs & IMAP_SEARCH_NEED_FLAGS);
    assert_false(p.utf8);
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    /* NOT of content: the over-approximation of NOT BODY x is ALL */
    s = parse_ok("NOT BODY x");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_string_equal(p.enc_query, "HEADER X-QKD-Key-ID \"\"");
    assert_true(p.enc_all_candidates);
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    /* NOT (SEEN OR-with-content): lower bound of (OR SEEN BODY x) is SEEN */
    s = parse_ok("NOT (OR SEEN BODY x) FLAGGED");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_string_equal(p.enc_query, "(NOT SEEN FLAGGED) HEADER X-QKD-Key-ID \"\"");
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    s = parse_ok("OR SUBJECT a UID 5");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_true(p.enc_all_candidates); /* content in an OR: anything */
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    s = parse_ok("SUBJECT {5}\r\ncaf\xc3\xa9 LARGER 10");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_true(p.utf8);
    assert_true(p.needs & IMAP_SEARCH_NEED_SIZE);
    assert_true(p.needs & IMAP_SEARCH_NEED_HEADER);
    assert_false(p.needs & IMAP_SEARCH_NEED_BODY);
    imap_search_plan_clear(&p);
    imap_search_free(&s);

    /* BODY "" needs nothing */
    s = parse_ok("BODY \"\"");
    assert_int_equal(imap_search_plan(s, &p), 0);
    assert_false(p.content);
    imap_search_plan_clear(&p);
    imap_search_free(&s);
}

static void test_result(void **state)
{
    (void)state;
    uint32_t a[] = {9, 1, 2, 3}, b[] = {5, 3, 7, 8, 10};
    struct imap_search_result r;
    assert_int_equal(imap_search_result_merge(a, 4, b, 5, &r), 0);
    assert_int_equal(r.count, 8);
    assert_int_equal(r.ids[0], 1);
    assert_int_equal(r.ids[7], 10);
    char *set = imap_search_result_set(&r);
    assert_string_equal(set, "1:3,5,7:10");
    free(set);
    imap_search_result_clear(&r);
    assert_int_equal(imap_search_result_merge(NULL, 0, NULL, 0, &r), 0);
    set = imap_search_result_set(&r);
    assert_string_equal(set, "");
    free(set);
}

static void test_sort(void **state)
{
    (void)state;
    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    struct imap_sort_crit crit[IMAP_SORT_MAX_CRIT];
    size_t nc = 0;
    assert_int_equal(imap_search_in_parse("(REVERSE DATE subject)", 22, &in, &n, &err), 0);
    assert_int_equal(imap_sort_parse(&in[0], crit, &nc, &err), 0);
    assert_int_equal(nc, 2);
    assert_true(crit[0].reverse);
    assert_int_equal(crit[0].key, IMAP_SORT_DATE);
    assert_false(crit[1].reverse);
    imap_search_in_free(&in);
    static const char *const bad[] = {"(REVERSE)", "()", "(FOO)", "DATE", "(DATE REVERSE)"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(imap_search_in_parse(bad[i], strlen(bad[i]), &in, &n, &err), 0);
        assert_true(imap_sort_parse(&in[0], crit, &nc, &err) < 0);
        imap_search_in_free(&in);
    }

    struct fixture f;
    fixture_init(&f);
    struct imap_sort_keys k1, k2;
    assert_int_equal(imap_sort_keys_compute(&f.m, &k1), 0);
    assert_string_equal(k1.subject, "CAFE\xcc\x81 REPORT");
    assert_string_equal(k1.from, "ALICE");
    assert_string_equal(k1.to, "BOB");
    assert_string_equal(k1.cc, "");
    assert_string_equal(k1.display_from, "ALICE");
    assert_int_equal(k1.date, 1796697000); /* 2026-12-08 02:30 UTC */
    struct imap_search_msg m2 = f.m;
    m2.ms = NULL;
    m2.seq = 4;
    assert_int_equal(imap_sort_keys_compute(&m2, &k2), 0);
    assert_int_equal(k2.date, f.m.internaldate); /* no Date: INTERNALDATE */
    struct imap_sort_crit subj = {IMAP_SORT_SUBJECT, false};
    assert_true(imap_sort_compare(&subj, 1, &k2, &k1) < 0); /* "" first */
    subj.reverse = true;
    assert_true(imap_sort_compare(&subj, 1, &k2, &k1) > 0);
    struct imap_sort_crit arr = {IMAP_SORT_ARRIVAL, false};
    assert_true(imap_sort_compare(&arr, 1, &k1, &k2) < 0); /* tie: sequence */
    imap_sort_keys_clear(&k1);
    imap_sort_keys_clear(&k2);
    mime_struct_free(&f.ms);
}

static struct imap_search *g_search;
static struct fixture g_fix;

static void *thread_main(void *arg)
{
    (void)arg;
    int ok = 1;
    for (int i = 0; i < 200; i++)
        ok &= imap_search_eval(g_search, &g_fix.m) == 1;
    return (void *)(intptr_t)ok;
}

static void test_threads(void **state)
{
    (void)state;
    fixture_init(&g_fix);
    g_search = parse_ok("OR BODY nothing (TEXT naïve SUBJECT café FROM alice)");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_int_equal((intptr_t)r, 1);
    }
    imap_search_free(&g_search);
    mime_struct_free(&g_fix.ms);
}

/* Every prefix of criteria with literals, each in a buffer of exactly its
 * length (no NUL after it): the reader stays inside (ASan), and a cut
 * literal is a syntax error, never a read past the end. */
static void test_parse_prefixes_exact(void **state)
{
    (void)state;
    static const char text[] = "SUBJECT {3+}\r\nabc BODY {12}\r\nhello world! {99999999999999999999}";
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        char *exact = malloc(cut ? cut : 1);
        assert_non_null(exact);
        memcpy(exact, text, cut);
        struct imap_search_in *in = NULL;
        size_t n = 0;
        const char *err = NULL;
        if (imap_search_in_parse(exact, cut, &in, &n, &err) == 0)
            imap_search_in_free(&in);
        free(exact);
    }
    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    assert_int_equal(imap_search_in_parse(text, 41, &in, &n, &err), 0); /* up to "!" */
    assert_int_equal(n, 4);
    assert_string_equal(in[3].str, "hello world!");
    imap_search_in_free(&in);
    assert_int_not_equal(imap_search_in_parse(text, len, &in, &n, &err), 0); /* huge size */
    assert_int_not_equal(imap_search_in_parse("{3", 2, &in, &n, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_write), cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_eval),            cmocka_unit_test(test_plan),
        cmocka_unit_test(test_result),          cmocka_unit_test(test_sort),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_parse_prefixes_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
