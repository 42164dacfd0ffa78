/* The pure pieces of imap_search against Dovecot's own functions, loaded
 * from the installed libdovecot (dlopen; skipped when absent): the
 * casemap of every code point and of broken UTF-8, RFC 2047 header
 * decoding, the RFC 5256 base subject, and RFC 2822 date parsing. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "search_internal.h"

/* Dovecot's buffer_t starts with { const void *data; const size_t used; }. */
struct dv_buffer {
    const void *data;
    size_t used;
};
typedef void *pool_t;
typedef int normalizer_fn(const void *, size_t, struct dv_buffer *);

static void *lib;
static pool_t *dv_default_pool;
static struct dv_buffer *(*dv_buffer_create_dynamic)(pool_t, size_t);
static void (*dv_buffer_set_used_size)(struct dv_buffer *, size_t);
static void (*dv_buffer_free)(struct dv_buffer **);
static normalizer_fn *dv_casemap;
static void (*dv_header_decode)(const unsigned char *, size_t, struct dv_buffer *,
                                normalizer_fn *);
static const char *(*dv_base_subject)(pool_t, const char *, bool *);
static pool_t (*dv_pool_datastack_create)(void);
static bool (*dv_date_parse)(const unsigned char *, size_t, time_t *, int *);
static void (*dv_lib_init)(void);
static unsigned (*dv_t_push)(const char *);
static unsigned (*dv_t_pop)(unsigned *);

#define SYM(var, name)                                   \
    do {                                                 \
        *(void **)&(var) = dlsym(lib, name);             \
        if ((var) == NULL) {                             \
            fprintf(stderr, "libdovecot lacks %s\n", name); \
            return false;                                \
        }                                                \
    } while (0)

static bool load(void)
{
    lib = dlopen("/usr/lib/dovecot/libdovecot.so.0", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return false;
    SYM(dv_default_pool, "default_pool");
    SYM(dv_buffer_create_dynamic, "buffer_create_dynamic");
    SYM(dv_buffer_set_used_size, "buffer_set_used_size");
    SYM(dv_buffer_free, "buffer_free");
    SYM(dv_casemap, "uni_utf8_to_decomposed_titlecase");
    SYM(dv_header_decode, "message_header_decode_utf8");
    SYM(dv_base_subject, "imap_get_base_subject_cased");
    SYM(dv_pool_datastack_create, "pool_datastack_create");
    SYM(dv_date_parse, "message_date_parse");
    SYM(dv_lib_init, "lib_init");
    SYM(dv_t_push, "t_push");
    SYM(dv_t_pop, "t_pop");
    dv_lib_init();
    return true;
}

static void check_casemap(const void *in, size_t len, struct dv_buffer *b)
{
    dv_buffer_set_used_size(b, 0);
    (void)dv_casemap(in, len, b);
    struct sbuf mine = {0};
    sbuf_casemap(&mine, in, len);
    if (mine.len != b->used || (mine.len > 0 && memcmp(mine.d, b->data, mine.len) != 0)) {
        fprintf(stderr, "casemap differs for");
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", ((const unsigned char *)in)[i]);
        fprintf(stderr, "\n");
        fail();
    }
    sbuf_free(&mine);
}

static void put_utf8(uint32_t c, unsigned char *u, size_t *n)
{
    if (c < 0x80) {
        u[0] = (unsigned char)c;
        *n = 1;
    } else if (c < 0x800) {
        u[0] = (unsigned char)(0xc0 | (c >> 6));
        u[1] = (unsigned char)(0x80 | (c & 0x3f));
        *n = 2;
    } else if (c < 0x10000) {
        u[0] = (unsigned char)(0xe0 | (c >> 12));
        u[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (c & 0x3f));
        *n = 3;
    } else {
        u[0] = (unsigned char)(0xf0 | (c >> 18));
        u[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
        u[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        u[3] = (unsigned char)(0x80 | (c & 0x3f));
        *n = 4;
    }
}

static void test_casemap_every_code_point(void **state)
{
    (void)state;
    struct dv_buffer *b = dv_buffer_create_dynamic(*dv_default_pool, 64);
    unsigned char u[8];
    size_t n;
    for (uint32_t c = 1; c < 0x110000; c++) {
        if (c >= 0xd800 && c <= 0xdfff)
            continue;
        put_utf8(c, u, &n);
        check_casemap(u, n, b);
    }
    /* broken UTF-8: lone continuation bytes, truncated sequences, C0/C1,
     * F5-FF, runs of invalid bytes (one U+FFFD per run), NUL ends it */
    static const char *const broken[] = {
        "\x80", ("a\x80" "b"), "\xc3", "\xc3(", "\xe2\x82", "\xe2\x82(", "\xf0\x9f\x98",
        "\xc0\x80", "\xc1\xbf", "\xf5\x80\x80\x80", "\xff\xfe", "x\x80\x80\x80y",
        "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xed\xa0\x80", "ab\0cd",
        "\xef\xbf\xbd\x80", "\xe9t\xe9", "caf\xc3\xa9 CR\xc3\x88ME \xef\xac\x81",
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
        check_casemap(broken[i], strlen(broken[i]) + (i == 15 ? 3 : 0), b);
    /* random byte strings */
    unsigned seed = 7;
    unsigned char r[24];
    for (int k = 0; k < 20000; k++) {
        size_t len = (size_t)rand_r(&seed) % sizeof(r);
        for (size_t i = 0; i < len; i++)
            r[i] = (unsigned char)(rand_r(&seed) % 3 == 0 ? rand_r(&seed) % 128 + 128
                                                          : rand_r(&seed) % 128 + 1);
        check_casemap(r, len, b);
    }
    dv_buffer_free(&b);
}

static const char *const headers[] = {
    "=?ISO-8859-1?Q?Caf=E9_cr=E8me?= =?UTF-8?Q?_und_mehr?=",
    "Hello =?utf-8?q?w=C3=B6rld?=  tail",
    "=?utf-8?b?zpXOu867zrfOvc65zrrOrA==?=",
    "=?utf-8?q?a?=   \t =?utf-8?q?b?=",
    "plain text only",
    "=?unknown-charset?q?abc=E9?= x",
    "=?utf-8?x?bad?= =? not =?utf-8?q?ok?=",
    "=?utf-8?q?broken=ZZ?= =?utf-8?b?!!!?=",
    "=?windows-1252?q?=80=93=94?=",
    "=?utf-8*en?q?lang?=",
    "raw 8bit \xe9 latin",
    ("=?utf-8?q?" "?="), /* split: no trigraph */
    "  leading =?utf-8?q?x?=",
    "=?iso-2022-jp?b?GyRCJUYlOSVIGyhC?=",
};

static void test_header_decode(void **state)
{
    (void)state;
    struct dv_buffer *b = dv_buffer_create_dynamic(*dv_default_pool, 64);
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        dv_buffer_set_used_size(b, 0);
        dv_header_decode((const unsigned char *)headers[i], strlen(headers[i]), b, dv_casemap);
        struct sbuf mine = {0};
        search_header_decode(&mine, headers[i], strlen(headers[i]));
        if (mine.len != b->used || memcmp(mine.d != NULL ? mine.d : "", b->data, b->used) != 0) {
            fprintf(stderr, "decode %s:\n dovecot [%.*s]\n ours    [%s]\n", headers[i],
                    (int)b->used, (const char *)b->data, sbuf_c(&mine));
            fail();
        }
        sbuf_free(&mine);
    }
    dv_buffer_free(&b);
}

static const char *const subjects[] = {
    "Re: [list] Fwd: hello (fwd)", "re: RE: Re:  hello   world", "[foo]", "[Fwd: test]",
    " Re [x] : y", "(fwd)", "Re:", "", "Fw: =?utf-8?q?J=C3=B6rg?=", "[a][b] re: c",
    "Re: [fwd: Re: nested] (fwd) (FWD)", "[fwd: x", "Subject\twith\ttabs",
    "FWD : spaced", "re[x]: y", "[x] [y] base subject", "Re: Re: RE: Fw: [x] [y] base subject",
    "[ unclosed blob", "[[x]] y", "Fwd: [fwd: Hello world]", "Ελληνικά Re:",
};

static void test_base_subject(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        unsigned id = dv_t_push("test");
        bool fw = false;
        const char *theirs = dv_base_subject(dv_pool_datastack_create(), subjects[i], &fw);
        char *mine = imap_sort_base_subject(subjects[i], strlen(subjects[i]));
        assert_non_null(mine);
        if (strcmp(theirs, mine) != 0) {
            fprintf(stderr, "base subject of [%s]: dovecot [%s] ours [%s]\n", subjects[i],
                    theirs, mine);
            fail();
        }
        free(mine);
        dv_t_pop(&id);
    }
}

static const char *const dates[] = {
    "Mon, 7 Dec 2026 10:00:00 +0100", "7 Dec 2026 10:00 -0500", "garbage",
    "Mon, 7 Dec 26 10:00:00 EST", "Tue, 1 Jan 2030 00:00:00 +1400", "3 Feb 99 13:14 EST",
    "Wed, 2 Jan 2019 03:04:05 GMT", "Fri, 31 Dec 2021 23:59:59 -0800",
    "Mon (comment), 7 Dec 2026 10:00:00 +0000 (UTC)", "7 Dec 2026 10.00.01 PDT",
    "Mon, 7 December 2026 10:00:00 z", "Mon 7 Dec 2026 10:00:00 +0000", "7 Dec 1899 10:00",
    "31 Feb 2021 10:00", "7 Dec 2026 25:00", "7 Dec 2026 1:02:03 CDT", "07 Dec 2026 10:00 x",
    "", "Thu, 29 Feb 2024 12:00:00 +0000", "Sat, 29 Feb 2025 12:00:00 +0000",
};

static void test_dates(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
        time_t t = 0;
        int tz = 0;
        bool ok = dv_date_parse((const unsigned char *)dates[i], strlen(dates[i]), &t, &tz);
        int64_t mt = 0;
        int mtz = 0;
        int mok = imap_search_date_parse(dates[i], strlen(dates[i]), &mt, &mtz);
        if (ok != (mok == 1) || (ok && (mt != (int64_t)t || mtz != tz))) {
            fprintf(stderr, "date [%s]: dovecot %d %lld %d, ours %d %lld %d\n", dates[i], ok,
                    (long long)t, tz, mok, (long long)mt, mtz);
            fail();
        }
    }
}

int main(void)
{
    if (!load()) {
        printf("skipped: no usable /usr/lib/dovecot/libdovecot.so.0\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_casemap_every_code_point),
        cmocka_unit_test(test_header_decode),
        cmocka_unit_test(test_base_subject),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
