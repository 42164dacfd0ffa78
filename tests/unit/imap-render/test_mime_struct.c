/* mime_struct: normalisation, offsets and sizes with Dovecot's semantics,
 * Content-* data, envelope fields, limits, CTE decoding, threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <string.h>
#include <dirent.h>

#include "mime.h"
#include "mime_struct.h"
#include "test_util.h"

static struct mime_struct *parse(const char *msg)
{
    struct mime_struct *ms = NULL;
    assert_int_equal(mime_struct_parse(msg, strlen(msg), 0, &ms, NULL), 0);
    assert_non_null(ms);
    return ms;
}

static void slice_eq(const struct mime_struct *ms, uint64_t off, uint64_t len,
                     const char *want)
{
    assert_int_equal(len, strlen(want));
    assert_memory_equal(mime_struct_data(ms) + off, want, len);
}

static void test_normalise(void **state)
{
    (void)state;
    const char in[] = "a\nb\r\nc\rd\0e\n";
    char out[32];
    size_t n = mime_struct_normalize(in, sizeof(in) - 1, out);
    assert_int_equal(mime_struct_normalized_size(in, sizeof(in) - 1), 13);
    assert_int_equal(n, 13);
    assert_memory_equal(out, "a\r\nb\r\nc\rd\x80" "e\r\n", 13);
    /* a leading LF gets its CR too; a final CR stays */
    assert_int_equal(mime_struct_normalize("\nx\r", 3, out), 4);
    assert_memory_equal(out, "\r\nx\r", 4);
}

static void test_borrow(void **state)
{
    (void)state;
    const char *crlf = "Subject: x\r\n\r\nbody\r\n";
    struct mime_struct *ms = NULL;
    assert_int_equal(mime_struct_parse(crlf, strlen(crlf), MIME_STRUCT_BORROW,
                                       &ms, NULL), 0);
    assert_ptr_equal(mime_struct_data(ms), (const uint8_t *)crlf);
    mime_struct_free(&ms);
    assert_null(ms);
    /* LF input cannot be borrowed: a normalised copy is made */
    assert_int_equal(mime_struct_parse("a: b\n\nc\n", 8, MIME_STRUCT_BORROW,
                                       &ms, NULL), 0);
    assert_int_equal(mime_struct_size(ms), 11);
    mime_struct_free(&ms);
    assert_int_equal(mime_struct_parse(NULL, 0, 0, NULL, NULL),
                     MIME_ERR_INVALID_ARG);
}

static void test_simple(void **state)
{
    (void)state;
    struct mime_struct *ms = parse("Subject: hi\nFrom: a@b\n\nline1\nline2\n");
    const struct mime_part *r = mime_struct_root(ms);
    assert_int_equal(mime_struct_size(ms), 40);
    assert_int_equal(r->header_size, 26);
    assert_int_equal(r->header_lines, 3);
    assert_int_equal(r->body_size, 14);
    assert_int_equal(r->body_lines, 2);
    assert_true(r->flags & MIME_PART_TEXT);
    assert_int_equal(r->n_fields, 2);
    assert_int_equal(r->fields[1].name_len, 4);
    slice_eq(ms, r->fields[1].offset, r->fields[1].size, "From: a@b\r\n");
    assert_string_equal(r->envelope->subject, "hi");
    assert_string_equal(r->envelope->from->mailbox, "a");
    assert_string_equal(r->envelope->from->domain, "b");
    mime_struct_free(&ms);
}

static void test_header_only(void **state)
{
    (void)state;
    /* no blank line: all header, empty body; a line without a colon is a
     * header field, not the body */
    struct mime_struct *ms = parse("Subject: x\r\nno colon here\r\nlast");
    const struct mime_part *r = mime_struct_root(ms);
    assert_int_equal(r->header_size, mime_struct_size(ms));
    assert_int_equal(r->body_size, 0);
    assert_int_equal(r->n_fields, 3);
    assert_int_equal(r->fields[1].name_len, 13);
    assert_int_equal(r->fields[2].size, 4);
    mime_struct_free(&ms);
}

static void test_multipart_offsets(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                    "pre\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                    "--b\r\nContent-Type: text/html\r\n--b--\r\nepi\r\n";
    struct mime_struct *ms = parse(m);
    const struct mime_part *r = mime_struct_root(ms), *p1, *p2;
    assert_true(r->flags & MIME_PART_MULTIPART);
    assert_int_equal(r->n_children, 2);
    p1 = r->children;
    p2 = p1->next;
    slice_eq(ms, p1->offset, p1->header_size, "Content-Type: text/plain\r\n\r\n");
    slice_eq(ms, p1->offset + p1->header_size, p1->body_size, "hello");
    /* a header cut by the next boundary gives its last CRLF away */
    slice_eq(ms, p2->offset, p2->header_size, "Content-Type: text/html");
    assert_int_equal(p2->body_size, 0);
    assert_string_equal(p2->content_subtype, "html");
    /* the multipart's body is everything after its header */
    assert_int_equal(r->header_size + r->body_size, mime_struct_size(ms));
    assert_string_equal(r->content_type_params[0].name, "boundary");
    assert_string_equal(r->content_type_params[0].value, "b");
    mime_struct_free(&ms);
}

static void test_outer_boundary_closes_inner(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\n"
                    "Content-Type: multipart/mixed; boundary=abc\r\n\r\n--abc\r\n"
                    "\r\ninner\r\n--ab\r\n\r\nouter\r\n--ab--\r\n";
    struct mime_struct *ms = parse(m);
    const struct mime_part *r = mime_struct_root(ms);
    assert_int_equal(r->n_children, 2);
    assert_int_equal(r->children->n_children, 1);
    slice_eq(ms, r->children->children->offset + r->children->children->header_size,
             r->children->children->body_size, "inner");
    mime_struct_free(&ms);
}

static void test_digest_and_rfc822(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                    "Subject: inner\r\nCc: x@y\r\n\r\nbody\r\n--d--\r\n";
    struct mime_struct *ms = parse(m);
    const struct mime_part *c = mime_struct_root(ms)->children;
    assert_true(c->flags & MIME_PART_MESSAGE_RFC822);
    assert_int_equal(c->n_children, 1);
    assert_string_equal(c->children->envelope->subject, "inner");
    assert_string_equal(c->children->envelope->cc->mailbox, "x");
    assert_null(c->envelope);
    mime_struct_free(&ms);
}

static void test_content_fields(void **state)
{
    (void)state;
    const char *m = "MIME-Version: 1.0\r\nContent-Type: text/plain; a*1=\"b\"; a*0=\"a\";\r\n"
                    " name*=UTF-8''%C3%A9\r\nContent-Transfer-Encoding: base64 (c)\r\n"
                    "Content-Disposition: inline\r\nContent-Disposition: attachment; x=y\r\n"
                    "Content-Language: en, de-CH\r\nContent-ID: <i@d>\r\n\r\nQUJD\r\n";
    struct mime_struct *ms = parse(m);
    const struct mime_part *r = mime_struct_root(ms);
    assert_int_equal(r->n_content_type_params, 2);
    assert_string_equal(r->content_type_params[0].name, "a");
    assert_string_equal(r->content_type_params[0].value, "ab");
    assert_string_equal(r->content_type_params[1].name, "name*");
    assert_string_equal(r->content_type_params[1].value, "UTF-8''%C3%A9");
    assert_string_equal(r->content_transfer_encoding, "base64");
    /* the first Content-Disposition had no parameters: the second wins */
    assert_string_equal(r->content_disposition, "attachment");
    assert_string_equal(r->content_language[1], "de-CH");
    assert_null(r->content_language[2]);
    assert_string_equal(r->content_id, "<i@d>");
    {
        uint8_t *out = NULL;
        size_t n = 0;
        assert_int_equal(mime_struct_decode(ms, r, &out, &n, NULL), 0);
        assert_int_equal(n, 3);
        assert_memory_equal(out, "ABC", 3);
        free(out);
    }
    mime_struct_free(&ms);
}

static void test_not_mime(void **state)
{
    (void)state;
    /* no Mime-Version and no Content-Type: Content-* fields do not count */
    struct mime_struct *ms = parse("Content-Transfer-Encoding: base64\r\n\r\nx\r\n");
    const struct mime_part *r = mime_struct_root(ms);
    assert_null(r->content_transfer_encoding);
    assert_int_equal(r->flags, MIME_PART_TEXT);
    mime_struct_free(&ms);
}

static void test_nesting_limit(void **state)
{
    (void)state;
    char *m = malloc(200000), *p = m;
    struct mime_struct *ms;
    const struct mime_part *r;
    unsigned int depth = 0;

    p += sprintf(p, "Subject: deep\r\n");
    for (int i = 0; i < 150; i++)
        p += sprintf(p, "Content-Type: message/rfc822\r\n\r\n");
    sprintf(p, "\r\nbottom\r\n");
    ms = parse(m);
    for (r = mime_struct_root(ms); r->children != NULL; r = r->children)
        depth++;
    /* Dovecot: 100 levels, the last one a leaf marked overflow */
    assert_int_equal(depth, MIME_STRUCT_MAX_NESTING - 1);
    assert_true(r->flags & MIME_PART_OVERFLOW);
    assert_false(r->flags & MIME_PART_MESSAGE_RFC822);
    mime_struct_free(&ms);
    free(m);
}

/* Every corpus message parses; sizes add up; no part runs past the end. */
static void check_tree(const struct mime_struct *ms, const struct mime_part *p)
{
    assert_true(p->offset + p->header_size + p->body_size <= mime_struct_size(ms));
    for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
        assert_ptr_equal(c->parent, p);
        assert_true(c->offset >= p->offset + p->header_size);
        check_tree(ms, c);
    }
}

static void corpus_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len;
        char *msg;
        struct mime_struct *ms = NULL;
        if (strstr(e->d_name, ".eml") == NULL)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        msg = read_file(path, &len);
        assert_non_null(msg);
        assert_int_equal(mime_struct_parse(msg, len, 0, &ms, NULL), 0);
        assert_int_equal(mime_struct_size(ms), mime_struct_normalized_size(msg, len));
        check_tree(ms, mime_struct_root(ms));
        assert_int_equal(mime_struct_root(ms)->header_size +
                         mime_struct_root(ms)->body_size, mime_struct_size(ms));
        mime_struct_free(&ms);
        free(msg);
    }
    closedir(d);
}

static void test_corpus(void **state)
{
    (void)state;
    corpus_dir(RENDER_CORPUS_DIR);
    corpus_dir(MIME_CORPUS_DIR);
}

/* Garbage of every length: never a crash, always a consistent tree. */
static void test_garbage(void **state)
{
    (void)state;
    const char alphabet[] = "-\r\n:; =\"bB\t(";
    char buf[300];
    unsigned int seed = 12345;
    for (int round = 0; round < 3000; round++) {
        struct mime_struct *ms = NULL;
        size_t n = (size_t)(round % 300);
        int mode = round % 3;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = mode == 0 ? alphabet[(seed >> 16) % (sizeof(alphabet) - 1)]
                               : (char)(seed >> 16);
        }
        if (mode == 2 && n > 60)
            memcpy(buf, "Content-Type: multipart/x; boundary=b\r\n\r\n--b\r\n", 47);
        assert_int_equal(mime_struct_parse(buf, n, 0, &ms, NULL), 0);
        check_tree(ms, mime_struct_root(ms));
        mime_struct_free(&ms);
    }
}

static void *thread_main(void *arg)
{
    const char *m = arg;
    for (int i = 0; i < 200; i++) {
        struct mime_struct *ms = NULL;
        if (mime_struct_parse(m, strlen(m), 0, &ms, NULL) != 0)
            return (void *)1;
        if (mime_struct_root(ms)->n_children != 2)
            return (void *)1;
        mime_struct_free(&ms);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n"
                    "--b\nContent-Transfer-Encoding: quoted-printable\n\nt=C3=A9\n--b--\n";
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, (void *)m), 0);
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        assert_null(ret);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_borrow),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_header_only),
        cmocka_unit_test(test_multipart_offsets),
        cmocka_unit_test(test_outer_boundary_closes_inner),
        cmocka_unit_test(test_digest_and_rfc822),
        cmocka_unit_test(test_content_fields),
        cmocka_unit_test(test_not_mime),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
