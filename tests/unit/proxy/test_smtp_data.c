/* DATA reader (dot-unstuffing), stuffer, header filter and spool: whole
 * buffers, one byte at a time, and at every split point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "smtp_hdrfilter.h"
#include "smtp_proto.h"
#include "smtp_spool.h"

struct sink {
    char buf[65536];
    size_t len;
    int fail_after; /* -1: never */
};

static int sink_cb(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;
    if (s->fail_after >= 0 && s->len + len > (size_t)s->fail_after)
        return -1;
    assert_true(s->len + len <= sizeof(s->buf));
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

static const struct {
    const char *wire;   /* what the client sends after 354 */
    const char *body;   /* what the spool must get */
    size_t rest;        /* bytes after the terminator */
} vectors[] = {
    {".\r\n", "", 0},
    {"hello\r\n.\r\n", "hello\r\n", 0},
    {"..leading dot\r\n.\r\n", ".leading dot\r\n", 0},
    {"a\r\n..\r\n.\r\nQUIT\r\n", "a\r\n.\r\n", 6},
    {"x\r\n.x\r\n.\r\n", "x\r\nx\r\n", 0},
    {"bare\nlf\n.\n", "bare\nlf\n", 0},
    {"a.b\r\n.\r\n", "a.b\r\n", 0},
    {"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", 0},
    {"\r\n\r\n.\r\n", "\r\n\r\n", 0},
    {"...\r\n.\r\nMAIL", "..\r\n", 4},
};

static void run_vector(size_t i, size_t step)
{
    struct sink s = {.len = 0, .fail_after = -1};
    struct smtp_data_reader r;
    smtp_data_reader_init(&r, 0, sink_cb, &s);
    const char *wire = vectors[i].wire;
    size_t len = strlen(wire), off = 0;
    enum smtp_parse_result pr = SMTP_MORE;
    while (off < len && pr == SMTP_MORE) {
        size_t n = len - off < step ? len - off : step;
        size_t used = 0;
        const char *err = NULL;
        pr = smtp_data_feed(&r, wire + off, n, &used, &err);
        assert_int_not_equal(pr, SMTP_ERR);
        if (pr == SMTP_MORE)
            assert_int_equal(used, n);
        off += used;
    }
    if (pr != SMTP_DONE)
        fail_msg("vector %zu step %zu: no end", i, step);
    assert_int_equal(len - off, vectors[i].rest);
    if (s.len != strlen(vectors[i].body) || memcmp(s.buf, vectors[i].body, s.len) != 0)
        fail_msg("vector %zu step %zu: got '%.*s'", i, step, (int)s.len, s.buf);
    assert_int_equal(r.bytes, s.len);
}

static void test_reader_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        for (size_t step = 1; step <= strlen(vectors[i].wire); step++)
            run_vector(i, step);
}

static void test_reader_line_limit_and_sink_error(void **state)
{
    (void)state;
    struct sink s = {.len = 0, .fail_after = -1};
    struct smtp_data_reader r;
    smtp_data_reader_init(&r, 10, sink_cb, &s);
    size_t used;
    const char *err;
    const char *wire = "short\r\n0123456789abcdef\r\n.\r\n";
    assert_int_equal(smtp_data_feed(&r, wire, strlen(wire), &used, &err), SMTP_DONE);
    assert_true(r.line_too_long);
    /* Feeding after the end is an error. */
    assert_int_equal(smtp_data_feed(&r, "x", 1, &used, &err), SMTP_ERR);

    struct sink f = {.len = 0, .fail_after = 3};
    smtp_data_reader_init(&r, 0, sink_cb, &f);
    assert_int_equal(smtp_data_feed(&r, "abcdef\r\n", 8, &used, &err), SMTP_ERR);
    assert_string_equal(err, "sink failed");
}

/* stuff(x) then unstuff must give x with CRLF line ends, for random
 * inputs made of the interesting bytes, fed one byte at a time. */
static void test_stuff_roundtrip(void **state)
{
    (void)state;
    static const char alphabet[] = {'.', '\r', '\n', 'a', ' '};
    srand(42);
    for (int round = 0; round < 2000; round++) {
        char in[64], norm[160], out[200];
        size_t n = (size_t)(rand() % 40);
        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[rand() % 5];
        /* expected: line ends normalised to CRLF */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (in[i] == '\r') {
                norm[m++] = '\r';
                norm[m++] = '\n';
                if (i + 1 < n && in[i + 1] == '\n')
                    i++;
            } else if (in[i] == '\n') {
                norm[m++] = '\r';
                norm[m++] = '\n';
            } else {
                norm[m++] = in[i];
            }
        }
        /* whole buffer (fast path), byte by byte, and split in two */
        struct smtp_stuffer st;
        smtp_stuffer_init(&st);
        size_t o = smtp_stuff(&st, in, n, out);
        o += smtp_stuff_end(&st, out + o);
        char out1[200], out2[200];
        smtp_stuffer_init(&st);
        size_t o1 = 0;
        for (size_t i = 0; i < n; i++)
            o1 += smtp_stuff(&st, in + i, 1, out1 + o1);
        o1 += smtp_stuff_end(&st, out1 + o1);
        size_t cut = n ? (size_t)rand() % (n + 1) : 0;
        smtp_stuffer_init(&st);
        size_t o2 = smtp_stuff(&st, in, cut, out2);
        o2 += smtp_stuff(&st, in + cut, n - cut, out2 + o2);
        o2 += smtp_stuff_end(&st, out2 + o2);
        if (o1 != o || memcmp(out1, out, o) != 0 || o2 != o || memcmp(out2, out, o) != 0)
            fail_msg("round %d: stuffing depends on how the input is split", round);
        struct sink s = {.len = 0, .fail_after = -1};
        struct smtp_data_reader r;
        smtp_data_reader_init(&r, 0, sink_cb, &s);
        size_t used;
        const char *err;
        assert_int_equal(smtp_data_feed(&r, out, o, &used, &err), SMTP_DONE);
        assert_int_equal(used, o);
        /* The terminator adds a CRLF when the input did not end a line. */
        bool ended = m == 0 || (m >= 2 && norm[m - 1] == '\n');
        if (!ended) {
            norm[m++] = '\r';
            norm[m++] = '\n';
        }
        if (s.len != m || memcmp(s.buf, norm, m) != 0)
            fail_msg("round %d: mismatch", round);
    }
}

struct hsink {
    char buf[65536];
    size_t len;
};
static int hsink_cb(void *arg, const char *data, size_t len)
{
    struct hsink *s = arg;
    assert_true(s->len + len <= sizeof(s->buf));
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

static void test_hdrfilter(void **state)
{
    (void)state;
    static const char *const drop[] = {"Bcc", NULL};
    const char *in = "From: a@x\r\nBcc: secret@y,\r\n\tother@z\r\nTo: b@y\r\n"
                     "BCC : loud@y\r\nSubject: hi\r\n\r\nBcc: body line\r\n";
    const char *want = "From: a@x\r\nTo: b@y\r\nSubject: hi\r\n\r\nBcc: body line\r\n";
    for (size_t step = 1; step <= strlen(in); step++) {
        struct hsink s = {.len = 0};
        struct smtp_hdrfilter f;
        smtp_hdrfilter_init(&f, drop, hsink_cb, &s);
        for (size_t off = 0; off < strlen(in); off += step) {
            size_t n = strlen(in) - off < step ? strlen(in) - off : step;
            assert_int_equal(smtp_hdrfilter_feed(&f, in + off, n), 0);
        }
        assert_int_equal(smtp_hdrfilter_finish(&f), 0);
        if (s.len != strlen(want) || memcmp(s.buf, want, s.len) != 0)
            fail_msg("step %zu: got '%.*s'", step, (int)s.len, s.buf);
    }
    /* The kept header block is captured; too small a buffer overflows. */
    {
        struct hsink s2 = {.len = 0};
        struct smtp_hdrfilter f2;
        char cap[256];
        smtp_hdrfilter_init(&f2, drop, hsink_cb, &s2);
        smtp_hdrfilter_capture(&f2, cap, sizeof(cap));
        assert_int_equal(smtp_hdrfilter_feed(&f2, in, strlen(in)), 0);
        const char *hdr = "From: a@x\r\nTo: b@y\r\nSubject: hi\r\n\r\n";
        assert_false(f2.capture_overflow);
        assert_int_equal(f2.capture_len, strlen(hdr));
        assert_memory_equal(cap, hdr, f2.capture_len);
        smtp_hdrfilter_init(&f2, drop, hsink_cb, &s2);
        smtp_hdrfilter_capture(&f2, cap, 10);
        assert_int_equal(smtp_hdrfilter_feed(&f2, in, strlen(in)), 0);
        assert_true(f2.capture_overflow);
    }
    /* An overlong header line is streamed, and dropped when it is Bcc. */
    static char big[3 * SMTP_HDRFILTER_LINE_MAX];
    memset(big, 'b', sizeof(big));
    memcpy(big, "Bcc: ", 5);
    memcpy(big + sizeof(big) - 2, "\r\n", 2);
    struct hsink s = {.len = 0};
    struct smtp_hdrfilter f;
    smtp_hdrfilter_init(&f, drop, hsink_cb, &s);
    assert_int_equal(smtp_hdrfilter_feed(&f, "To: b@y\r\n", 9), 0);
    assert_int_equal(smtp_hdrfilter_feed(&f, big, sizeof(big)), 0);
    assert_int_equal(smtp_hdrfilter_feed(&f, "\r\nbody", 6), 0);
    assert_int_equal(s.len, 9 + 6);
    assert_memory_equal(s.buf, "To: b@y\r\n\r\nbody", 15);
}

static void test_spool(void **state)
{
    (void)state;
    char *err = NULL;
    smtp_spool *sp = smtp_spool_new(NULL, 100000, &err);
    assert_non_null(sp);
    assert_int_equal(smtp_spool_fd(sp), -1); /* no file until a message starts */
    assert_int_equal(smtp_spool_open(sp, &err), 0);
    assert_true(smtp_spool_fd(sp) >= 0);
    static char chunk[70000];
    memset(chunk, 'q', sizeof(chunk));
    assert_int_equal(smtp_spool_write(sp, chunk, sizeof(chunk)), 0);
    assert_false(smtp_spool_overflow(sp));
    assert_int_equal(smtp_spool_write(sp, chunk, sizeof(chunk)), 0);
    assert_true(smtp_spool_overflow(sp));
    assert_int_equal(smtp_spool_size(sp), 140000);
    assert_int_equal(smtp_spool_finish(sp), 0);
    assert_int_equal(lseek(smtp_spool_fd(sp), 0, SEEK_END), 100000);
    /* the next message in the same file (not closed in between): empty */
    assert_int_equal(smtp_spool_open(sp, &err), 0);
    assert_int_equal(smtp_spool_write(sp, "abc", 3), 0);
    assert_int_equal(smtp_spool_finish(sp), 0);
    char back[4] = {0};
    assert_int_equal(pread(smtp_spool_fd(sp), back, 3, 0), 3);
    assert_string_equal(back, "abc");
    assert_int_equal(lseek(smtp_spool_fd(sp), 0, SEEK_END), 3);
    smtp_spool_close(sp);
    assert_int_equal(smtp_spool_fd(sp), -1);
    /* and after a close, a new file */
    assert_int_equal(smtp_spool_open(sp, &err), 0);
    assert_int_equal(lseek(smtp_spool_fd(sp), 0, SEEK_END), 0);
    smtp_spool_free(&sp);
    assert_null(sp);
    /* a folder that does not exist: said when a message starts */
    sp = smtp_spool_new("/nonexistent/dir", 10, &err);
    assert_non_null(sp);
    assert_true(smtp_spool_open(sp, &err) < 0);
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/dir"));
    free(err);
    smtp_spool_free(&sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_vectors),
        cmocka_unit_test(test_reader_line_limit_and_sink_error),
        cmocka_unit_test(test_stuff_roundtrip),
        cmocka_unit_test(test_hdrfilter),
        cmocka_unit_test(test_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
