/* The generic JSON reader: positions, every error path, unknown keys,
 * duplicates, types, ranges, units. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "qcfg.h"

static struct qcfg *load(const char *text)
{
    struct qcfg *doc = NULL;
    char *err = NULL;
    int rc = qcfg_load_buffer("t.json", "/base", text, strlen(text), &doc, &err);
    if (rc != 0)
        fail_msg("load failed: %s", err ? err : "?");
    free(err);
    return doc;
}

static void expect_errors(struct qcfg *doc, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    if (qcfg_error_count(doc) != n) {
        char *all = qcfg_errors_join(doc);
        fail_msg("expected %zu errors, got %zu:\n%s", n, qcfg_error_count(doc),
                 all ? all : "");
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(qcfg_error(doc, i), want[i]);
}

static void test_syntax_error(void **state)
{
    struct qcfg *doc = NULL;
    char *err = NULL;
    const char *text = "{\n  \"a\": 1,\n  \"b\": tru\n}\n";
    assert_int_equal(qcfg_load_buffer("x.json", NULL, text, strlen(text), &doc, &err),
                     QCFG_ESYNTAX);
    assert_null(doc);
    assert_non_null(strstr(err, "x.json:3:"));
    assert_non_null(strstr(err, "invalid token"));
    free(err);

    text = "";
    assert_int_equal(qcfg_load_buffer("e.json", NULL, text, 0, &doc, &err), QCFG_ESYNTAX);
    assert_non_null(strstr(err, "e.json:1:1:"));
    free(err);

    text = "{\"a\": \"\\u0000\"}";
    assert_int_equal(qcfg_load_buffer("n.json", NULL, text, strlen(text), &doc, &err),
                     QCFG_ESYNTAX);
    free(err);
}

static void test_io_error(void **state)
{
    struct qcfg *doc = NULL;
    char *err = NULL;
    assert_int_equal(qcfg_load_file("/nonexistent/q.json", &doc, &err), QCFG_EIO);
    assert_string_equal(err, "/nonexistent/q.json: No such file or directory");
    free(err);
    assert_int_equal(qcfg_load_file("/", &doc, &err), QCFG_EIO);
    assert_non_null(strstr(err, "not a regular file"));
    free(err);
}

static void test_load_file_and_paths(void **state)
{
    char dir[] = "/tmp/qcfg-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[256];
    snprintf(file, sizeof(file), "%s/c.json", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("{\"rel\": \"./certs/a.pem\", \"abs\": \"/etc/x\", \"dot\": \"sub/b\"}", f);
    fclose(f);
    struct qcfg *doc = NULL;
    char *err = NULL;
    assert_int_equal(qcfg_load_file(file, &doc, &err), 0);
    qcfg_node *root = qcfg_object(qcfg_root(doc));
    char *p = NULL;
    assert_int_equal(qcfg_path(qcfg_member(root, "rel", 0), 0, &p), 1);
    char want[300];
    char *real = realpath(dir, NULL);
    snprintf(want, sizeof(want), "%s/certs/a.pem", real);
    assert_string_equal(p, want);
    assert_int_equal(qcfg_path(qcfg_member(root, "abs", 0), 0, &p), 1);
    assert_string_equal(p, "/etc/x");
    assert_int_equal(qcfg_path(qcfg_member(root, "dot", 0), 0, &p), 1);
    snprintf(want, sizeof(want), "%s/sub/b", real);
    assert_string_equal(p, want);
    free(p);
    free(real);
    qcfg_done(root);
    assert_int_equal(qcfg_error_count(doc), 0);
    qcfg_free(&doc);
    assert_null(doc);
    unlink(file);
    rmdir(dir);
}

static void test_positions(void **state)
{
    struct qcfg *doc = load("{\n"
                            "  \"a\": {\"b\": [1, {\"c\": true}]},\n"
                            "  \"é\": \"x\", \"d e\": 5\n"
                            "}");
    qcfg_node *root = qcfg_object(qcfg_root(doc));
    qcfg_node *a = qcfg_object(qcfg_member(root, "a", 0));
    qcfg_node *b = qcfg_array(qcfg_member(a, "b", 0));
    qcfg_node *c = qcfg_member(qcfg_object(qcfg_array_at(b, 1)), "c", 0);
    unsigned l, col;
    qcfg_node_pos(c, &l, &col);
    assert_int_equal(l, 2);
    assert_int_equal(col, 24);
    qcfg_node_key_pos(c, &l, &col);
    assert_int_equal(col, 19);
    assert_string_equal(qcfg_node_path(c), "a.b[1].c");
    qcfg_node *e = qcfg_member(root, "é", 0);
    assert_string_equal(qcfg_node_path(e), "[\"é\"]");
    qcfg_node *de = qcfg_member(root, "d e", 0);
    qcfg_node_pos(de, &l, &col);
    assert_int_equal(l, 3);
    assert_int_equal(col, 20); /* é counts as one column */
    assert_ptr_equal(qcfg_member(root, "a", 0), a);
    qcfg_free(&doc);
}

static void test_unknown_and_missing(void **state)
{
    struct qcfg *doc = load("{\n"
                            "  \"host\": \"h\",\n"
                            "  \"prot\": 25,\n"
                            "  \"sub\": {\"x\": 1, \"zzz\": 2}\n"
                            "}");
    qcfg_node *root = qcfg_object(qcfg_root(doc));
    char *host = NULL;
    uint16_t port = 587;
    assert_int_equal(qcfg_string(qcfg_member(root, "host", QCFG_REQUIRED), 0, &host), 1);
    assert_int_equal(qcfg_port(qcfg_member(root, "port", 0), 0, &port), 0);
    assert_int_equal(port, 587);
    qcfg_node *sub = qcfg_object(qcfg_member(root, "sub", 0));
    int64_t x = 0;
    assert_int_equal(qcfg_int(qcfg_member(sub, "x", 0), 0, 10, &x), 1);
    assert_null(qcfg_member(sub, "needed", QCFG_REQUIRED));
    assert_int_equal(qcfg_done(sub), 1);
    assert_int_equal(qcfg_done(root), 1);
    static const char *const want[] = {
        "t.json:3:3: key 'prot': unknown key (did you mean 'port'?)",
        "t.json:4:10: key 'sub.needed': missing required key",
        "t.json:4:19: key 'sub.zzz': unknown key",
        NULL,
    };
    expect_errors(doc, want);
    char *all = qcfg_errors_join(doc);
    assert_non_null(strstr(all, "\nt.json:4:10"));
    free(all);
    free(host);
    qcfg_free(&doc);
}

static void test_duplicates(void **state)
{
    struct qcfg *doc = load("{\"a\": 1,\n"
                            " \"b\": {\"x\": 1, \"x\": 2},\n"
                            " \"a\": {\"y\": 1, \"y\": 2}}");
    static const char *const want[] = {
        "t.json:2:16: key 'b.x': duplicate key (first defined at 2:8)",
        "t.json:3:2: key 'a': duplicate key (first defined at 1:2)",
        NULL,
    };
    expect_errors(doc, want);
    qcfg_free(&doc);
}

static void test_types(void **state)
{
    struct qcfg *doc = load("{\"s\": 1, \"b\": \"yes\", \"i\": 1.5, \"o\": [], \"a\": {},\n"
                            " \"p\": \"25\", \"e\": 3, \"n\": null, \"ctl\": \"a\\nb\",\n"
                            " \"empty\": \"\", \"d\": true, \"z\": [1]}");
    qcfg_node *r = qcfg_object(qcfg_root(doc));
    char *s = NULL;
    bool b = false;
    int64_t i = 7;
    uint16_t p = 1;
    int e = 0;
    uint64_t d = 0;
    static const char *const names[] = {"x", "y", NULL};
    assert_int_equal(qcfg_string(qcfg_member(r, "s", 0), 0, &s), -1);
    assert_int_equal(qcfg_bool(qcfg_member(r, "b", 0), &b), -1);
    assert_int_equal(qcfg_int(qcfg_member(r, "i", 0), 0, 9, &i), -1);
    assert_int_equal(i, 7);
    assert_null(qcfg_object(qcfg_member(r, "o", 0)));
    assert_null(qcfg_array(qcfg_member(r, "a", 0)));
    assert_int_equal(qcfg_port(qcfg_member(r, "p", 0), 0, &p), -1);
    assert_int_equal(qcfg_enum(qcfg_member(r, "e", 0), names, &e), -1);
    assert_int_equal(qcfg_string(qcfg_member(r, "n", 0), 0, &s), -1);
    assert_int_equal(qcfg_string(qcfg_member(r, "ctl", 0), 0, &s), -1);
    assert_int_equal(qcfg_string(qcfg_member(r, "empty", 0), QCFG_NONEMPTY, &s), -1);
    assert_int_equal(qcfg_duration(qcfg_member(r, "d", 0), 0, 1000, &d), -1);
    qcfg_node *z = qcfg_array(qcfg_member(r, "z", 0));
    assert_int_equal(qcfg_array_len(z), 1);
    assert_null(qcfg_array_at(z, 1));
    assert_int_equal(qcfg_string(qcfg_array_at(z, 0), 0, &s), -1);
    assert_null(s);
    assert_int_equal(qcfg_done(r), 0);
    static const char *const want[] = {
        "t.json:1:7: key 's': expected a string, got an integer",
        "t.json:1:15: key 'b': expected true or false, got a string",
        "t.json:1:27: key 'i': expected an integer, got a number with a fraction",
        "t.json:1:37: key 'o': expected an object, got an array",
        "t.json:1:46: key 'a': expected an array, got an object",
        "t.json:2:7: key 'p': expected a port number, got a string",
        "t.json:2:18: key 'e': expected one of: x, y (a string), got an integer",
        "t.json:2:26: key 'n': expected a string, got null",
        "t.json:2:39: key 'ctl': control characters are not allowed",
        "t.json:3:11: key 'empty': must not be empty",
        "t.json:3:20: key 'd': expected a duration (seconds, or a string like \"30s\"), got a boolean",
        "t.json:3:32: key 'z[0]': expected a string, got an integer",
        NULL,
    };
    expect_errors(doc, want);
    qcfg_free(&doc);
}

static void test_ranges(void **state)
{
    struct qcfg *doc = load("{\"i\": 11, \"neg\": -1, \"p0\": 0, \"p\": 65536, \"e\": \"z\",\n"
                            " \"big\": 9223372036854775807}");
    qcfg_node *r = qcfg_object(qcfg_root(doc));
    int64_t i = 0;
    uint16_t p = 5;
    int e = -1;
    uint64_t sz = 0;
    static const char *const names[] = {"x", "y", NULL};
    assert_int_equal(qcfg_int(qcfg_member(r, "i", 0), 0, 10, &i), -1);
    assert_int_equal(qcfg_size(qcfg_member(r, "neg", 0), 0, 100, &sz), -1);
    assert_int_equal(qcfg_port(qcfg_member(r, "p0", 0), 0, &p), -1);
    assert_int_equal(qcfg_port(qcfg_member(r, "p0", 0), QCFG_ZERO_OK, &p), 1);
    assert_int_equal(p, 0);
    assert_int_equal(qcfg_port(qcfg_member(r, "p", 0), QCFG_ZERO_OK, &p), -1);
    assert_int_equal(qcfg_enum(qcfg_member(r, "e", 0), names, &e), -1);
    assert_int_equal(qcfg_duration(qcfg_member(r, "big", 0), 0, UINT64_MAX, &sz), -1);
    static const char *const want[] = {
        "t.json:1:7: key 'i': 11 is out of range (0..10)",
        "t.json:1:18: key 'neg': must not be negative",
        "t.json:1:28: key 'p0': port 0 is out of range (1..65535)",
        "t.json:1:36: key 'p': port 65536 is out of range (0..65535)",
        "t.json:1:48: key 'e': 'z' is not one of: x, y",
        "t.json:2:9: key 'big': number too large",
        NULL,
    };
    expect_errors(doc, want);
    qcfg_free(&doc);
}

static void test_units(void **state)
{
    uint64_t v;
    const char *why;
    assert_int_equal(qcfg_parse_duration("250ms", &v, &why), 0);
    assert_int_equal(v, 250);
    assert_int_equal(qcfg_parse_duration("30s", &v, &why), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(qcfg_parse_duration("30", &v, &why), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(qcfg_parse_duration("5m", &v, &why), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(qcfg_parse_duration("2h", &v, &why), 0);
    assert_int_equal(v, 7200000);
    assert_int_equal(qcfg_parse_duration("1d", &v, &why), 0);
    assert_int_equal(v, 86400000);
    assert_int_equal(qcfg_parse_duration("5x", &v, &why), -1);
    assert_non_null(strstr(why, "unknown unit"));
    assert_int_equal(qcfg_parse_duration("", &v, &why), -1);
    assert_int_equal(qcfg_parse_duration("-5s", &v, &why), -1);
    assert_int_equal(qcfg_parse_duration("99999999999999999999", &v, &why), -1);
    assert_string_equal(why, "number too large");
    assert_int_equal(qcfg_parse_duration("18446744073709552s", &v, &why), -1);
    assert_int_equal(qcfg_parse_size("10M", &v, &why), 0);
    assert_int_equal(v, 10u << 20);
    assert_int_equal(qcfg_parse_size("64kib", &v, &why), 0);
    assert_int_equal(v, 64u << 10);
    assert_int_equal(qcfg_parse_size("1GB", &v, &why), 0);
    assert_int_equal(v, 1u << 30);
    assert_int_equal(qcfg_parse_size("512", &v, &why), 0);
    assert_int_equal(v, 512);
    assert_int_equal(qcfg_parse_size("1T", &v, &why), -1);
    assert_int_equal(qcfg_parse_size("17179869184G", &v, &why), -1);

    struct qcfg *doc = load("{\"t\": \"1m\", \"n\": 2, \"s\": \"4k\", \"bad\": \"4q\",\n"
                            " \"low\": \"1ms\"}");
    qcfg_node *r = qcfg_object(qcfg_root(doc));
    assert_int_equal(qcfg_duration(qcfg_member(r, "t", 0), 0, UINT64_MAX, &v), 1);
    assert_int_equal(v, 60000);
    assert_int_equal(qcfg_duration(qcfg_member(r, "n", 0), 0, UINT64_MAX, &v), 1);
    assert_int_equal(v, 2000);
    assert_int_equal(qcfg_size(qcfg_member(r, "s", 0), 0, UINT64_MAX, &v), 1);
    assert_int_equal(v, 4096);
    assert_int_equal(qcfg_size(qcfg_member(r, "bad", 0), 0, UINT64_MAX, &v), -1);
    assert_int_equal(qcfg_duration(qcfg_member(r, "low", 0), 1000, 2000, &v), -1);
    static const char *const want[] = {
        "t.json:1:39: key 'bad': invalid size '4q': unknown unit (use k, M or G, optionally with B or iB)",
        "t.json:2:9: key 'low': duration out of range (1000ms..2000ms)",
        NULL,
    };
    expect_errors(doc, want);
    qcfg_free(&doc);
}

static void test_map_iteration(void **state)
{
    struct qcfg *doc = load("{\"links\": {\"b\": {\"url\": \"u\"}, \"a\": {\"url\": \"v\", \"x\": 1}}}");
    qcfg_node *r = qcfg_object(qcfg_root(doc));
    qcfg_node *links = qcfg_object(qcfg_member(r, "links", 0));
    size_t it = 0;
    const char *name;
    qcfg_node *l;
    int count = 0;
    const char *order[2] = {"", ""};
    while ((l = qcfg_object_next(links, &it, &name))) {
        if (count < 2)
            order[count] = name;
        count++;
        qcfg_node *o = qcfg_object(l);
        char *url = NULL;
        qcfg_string(qcfg_member(o, "url", 0), 0, &url);
        free(url);
        qcfg_done(o);
    }
    assert_int_equal(count, 2);
    assert_string_equal(order[0], "b"); /* file order */
    assert_string_equal(order[1], "a");
    assert_int_equal(qcfg_object_size(links), 2);
    qcfg_done(links);
    qcfg_done(r);
    static const char *const want[] = {
        "t.json:1:49: key 'links.a.x': unknown key", NULL,
    };
    expect_errors(doc, want);
    qcfg_error_at(doc, NULL, "semantic %d", 1);
    qcfg_error_at(doc, links, "link missing");
    assert_string_equal(qcfg_error(doc, 0), "t.json: semantic 1");
    assert_string_equal(qcfg_error(doc, 1), "t.json:1:11: key 'links': link missing");
    qcfg_free(&doc);
}

static void test_absent_node_is_noop(void **state)
{
    char *s = NULL;
    bool b = true;
    assert_null(qcfg_member(NULL, "x", QCFG_REQUIRED));
    assert_null(qcfg_object(NULL));
    assert_int_equal(qcfg_string(NULL, 0, &s), 0);
    assert_int_equal(qcfg_bool(NULL, &b), 0);
    assert_int_equal(qcfg_done(NULL), 0);
    assert_int_equal(qcfg_array_len(NULL), 0);
    qcfg_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_io_error),
        cmocka_unit_test(test_load_file_and_paths),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_map_iteration),
        cmocka_unit_test(test_absent_node_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
