/* The link's hand-written parser for key material lines: the exact form,
 * every byte offset of truncation, and a table of malformed lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "link_internal.h"

#define S(x) (x), strlen(x)

static void test_material_ok(void **state)
{
    (void)state;
    uint64_t off = 1;
    const char *b64 = NULL;
    size_t blen = 0;
    const char *line = "{\"t\":\"m\",\"off\":123456789,\"data\":\"QUJD\"}\n";
    assert_int_equal(link_parse_material(S(line), &off, &b64, &blen), 0);
    assert_int_equal(off, 123456789);
    assert_int_equal(blen, 4);
    assert_memory_equal(b64, "QUJD", 4);
    const char *empty = "{\"t\":\"m\",\"off\":0,\"data\":\"\"}\n";
    assert_int_equal(link_parse_material(S(empty), &off, &b64, &blen), 0);
    assert_int_equal(off, 0);
    assert_int_equal(blen, 0);

    /* Every truncation of a valid line is refused (no reads past n). */
    for (size_t n = 0; n < strlen(line); n++)
        assert_int_equal(link_parse_material(line, n, &off, &b64, &blen), -1);
}

static void test_material_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"t\":\"m\",\"off\":,\"data\":\"QUJD\"}\n",
        "{\"t\":\"m\",\"off\":-1,\"data\":\"QUJD\"}\n",
        "{\"t\":\"m\",\"off\":1234567890123456789,\"data\":\"QUJD\"}\n",
        "{\"t\":\"m\",\"off\":1,\"data\":\"QUJD\"}",
        "{\"t\":\"m\",\"off\":1,\"data\":\"QUJD\"} \n",
        "{\"t\":\"m\",\"off\":1,\"data\":\"QU\"JD\"}\n",
        "{\"t\":\"m\", \"off\":1,\"data\":\"QUJD\"}\n",
        "{\"t\":\"m\",\"off\":1,\"dat\":\"QUJD\"}\n",
        "{\"t\":\"r\",\"off\":1,\"data\":\"QUJD\"}\n",
        "{\"t\":\"m\",\"off\":1x,\"data\":\"QUJD\"}\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t off;
        const char *b64;
        size_t blen;
        if (link_parse_material(S(bad[i]), &off, &b64, &blen) != -1)
            fail_msg("accepted: %s", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_material_ok),
        cmocka_unit_test(test_material_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
