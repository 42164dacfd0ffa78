/* BODY[section]<partial>: part lookup, MIME/HEADER/TEXT, header filters,
 * partials at the edges, and the section spec parser. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "imap_render.h"

static const char *MSG =
    "From: a@b\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    "--x\r\nContent-Type: text/plain\r\n\r\none\r\n"
    "--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\nFrom: c@d\r\n\r\ninner\r\n"
    "--x--\r\n";

static void expect(const struct mime_struct *ms, const char *spec,
                   int partial, uint64_t o, uint64_t n, const char *want)
{
    struct imap_section sec;
    struct imap_section_data d;
    uint32_t path[16];
    const char *fields[16];
    char names[256];

    assert_int_equal(imap_render_section_parse(spec, &sec, path, 16, fields, 16,
                                               names), 0);
    sec.has_partial = partial;
    sec.partial_offset = o;
    sec.partial_size = n;
    assert_int_equal(imap_render_section(ms, &sec, &d), 0);
    assert_int_equal(d.len, strlen(want));
    assert_memory_equal(d.ptr, want, d.len);
    if (!d.synthesized)
        assert_ptr_equal(d.ptr, mime_struct_data(ms) + d.offset);
    imap_section_data_free(&d);
}

static struct mime_struct *parse(const char *m)
{
    struct mime_struct *ms = NULL;
    assert_int_equal(mime_struct_parse(m, strlen(m), 0, &ms, NULL), 0);
    return ms;
}

static void test_sections(void **state)
{
    (void)state;
    struct mime_struct *ms = parse(MSG);
    expect(ms, "HEADER", 0, 0, 0,
           "From: a@b\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
    expect(ms, "1", 0, 0, 0, "one");
    expect(ms, "1.MIME", 0, 0, 0, "Content-Type: text/plain\r\n\r\n");
    expect(ms, "2", 0, 0, 0, "Subject: in\r\nFrom: c@d\r\n\r\ninner");
    expect(ms, "2.HEADER", 0, 0, 0, "Subject: in\r\nFrom: c@d\r\n\r\n");
    expect(ms, "2.TEXT", 0, 0, 0, "inner");
    expect(ms, "2.1", 0, 0, 0, "inner");
    expect(ms, "2.MIME", 0, 0, 0, "Content-Type: message/rfc822\r\n\r\n");
    expect(ms, "2.HEADER.FIELDS (from)", 0, 0, 0, "From: c@d\r\n\r\n");
    expect(ms, "HEADER.FIELDS (Subject X-None)", 0, 0, 0, "Subject: s\r\n\r\n");
    expect(ms, "HEADER.FIELDS.NOT (Subject Content-Type)", 0, 0, 0, "From: a@b\r\n\r\n");
    /* parts that do not exist, HEADER of a non-message part: empty */
    expect(ms, "3", 0, 0, 0, "");
    expect(ms, "1.HEADER", 0, 0, 0, "");
    expect(ms, "1.2", 0, 0, 0, "");
    mime_struct_free(&ms);
}

static void test_single_part(void **state)
{
    (void)state;
    struct mime_struct *ms = parse("Subject: s\nX: y\n\nbody\n");
    /* [1] of a non-multipart message is its body, [1.MIME] its header */
    expect(ms, "1", 0, 0, 0, "body\r\n");
    expect(ms, "1.MIME", 0, 0, 0, "Subject: s\r\nX: y\r\n\r\n");
    expect(ms, "TEXT", 0, 0, 0, "body\r\n");
    expect(ms, "", 0, 0, 0, "Subject: s\r\nX: y\r\n\r\nbody\r\n");
    mime_struct_free(&ms);
}

static void test_partials(void **state)
{
    (void)state;
    struct mime_struct *ms = parse("Subject: s\r\n\r\n0123456789");
    uint64_t size = mime_struct_size(ms);
    expect(ms, "", 1, 0, 1, "S");
    expect(ms, "TEXT", 1, 3, 4, "3456");
    expect(ms, "TEXT", 1, 9, 10, "9");
    expect(ms, "TEXT", 1, 10, 10, "");
    expect(ms, "TEXT", 1, 15, 10, "");
    expect(ms, "", 1, size - 1, 10, "9");
    expect(ms, "HEADER.FIELDS (Subject)", 1, 2, 100, "bject: s\r\n\r\n");
    mime_struct_free(&ms);
}

static void test_no_blank_line(void **state)
{
    (void)state;
    struct mime_struct *ms = parse("From: a\r\nSubject: b");
    expect(ms, "TEXT", 0, 0, 0, "");
    expect(ms, "HEADER", 0, 0, 0, "From: a\r\nSubject: b");
    /* Dovecot's answers: the header cache form adds one CRLF, the filter
     * form passes the header as it is */
    expect(ms, "HEADER.FIELDS (Subject)", 0, 0, 0, "Subject: b\r\n");
    expect(ms, "HEADER.FIELDS (From)", 0, 0, 0, "From: a\r\n\r\n");
    expect(ms, "HEADER.FIELDS.NOT (From)", 0, 0, 0, "Subject: b");
    mime_struct_free(&ms);
}

static void test_parse_spec(void **state)
{
    (void)state;
    struct imap_section sec;
    uint32_t path[4];
    const char *fields[4];
    char names[64];
    static const char *bad[] = {
        "MIME", "1.", "0", "1..2", "HEADER.FIELDS", "HEADER.FIELDS ()",
        "HEADER.FIELDS (a", "1.FOO", "1.2.3.4.5", "HEADER.FIELDS (a b c d e)",
        "99999999999", "HEADER.FIELDS (a) x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(imap_render_section_parse(bad[i], &sec, path, 4, fields,
                                                   4, names),
                         IMAP_RENDER_ERR_INVALID);
    assert_int_equal(imap_render_section_parse("3.2.header.fields.not (A B)", &sec,
                                               path, 4, fields, 4, names), 0);
    assert_int_equal(sec.path_len, 2);
    assert_int_equal(path[0], 3);
    assert_int_equal(sec.kind, IMAP_SECTION_HEADER_FIELDS_NOT);
    assert_int_equal(sec.n_fields, 2);
    assert_string_equal(fields[1], "B");
    {
        struct mime_struct *ms = parse("a: b\r\n\r\nc");
        struct imap_section mime = {.kind = IMAP_SECTION_MIME};
        struct imap_section_data d;
        assert_int_equal(imap_render_section(ms, &mime, &d), IMAP_RENDER_ERR_INVALID);
        mime_struct_free(&ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_single_part),
        cmocka_unit_test(test_partials),
        cmocka_unit_test(test_no_blank_line),
        cmocka_unit_test(test_parse_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
