/* imap_cmd: verbs, tags, sequence sets, FETCH attributes (macros, sections,
 * partials, \Seen, response names), LOGIN / AUTHENTICATE / SASL user / ID. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_cmd.h"

static void test_verbs_tags(void **state)
{
    (void)state;
    assert_int_equal(imap_verb_lookup("fetch", 5), IMAP_CMD_FETCH);
    assert_int_equal(imap_verb_lookup("UID", 3), IMAP_CMD_UNKNOWN);
    assert_int_equal(imap_verb_lookup("FETC", 4), IMAP_CMD_UNKNOWN);
    assert_int_equal(imap_verb_lookup("Compress", 8), IMAP_CMD_COMPRESS);
    assert_string_equal(imap_verb_name(IMAP_CMD_AUTHENTICATE), "AUTHENTICATE");
    assert_true(imap_verb_uid_ok(IMAP_CMD_EXPUNGE));
    assert_false(imap_verb_uid_ok(IMAP_CMD_APPEND));
    assert_true(imap_tag_valid("a1", 2));
    assert_true(imap_tag_valid("A.b]-", 5));
    assert_false(imap_tag_valid("a+", 2));
    assert_false(imap_tag_valid("*", 1));
    assert_false(imap_tag_valid("a%", 2));
    assert_false(imap_tag_valid("", 0));
    assert_false(imap_tag_valid("a\\", 2));
}

static void test_seqset(void **state)
{
    (void)state;
    struct imap_seqset s;
    const char *err;
    assert_int_equal(imap_seqset_parse("1,3:5,9:7,10:*", 14, &s, &err), 0);
    assert_int_equal(s.count, 4);
    assert_int_equal(s.ranges[2].lo, 7);
    assert_int_equal(s.ranges[2].hi, 9);
    assert_int_equal(s.ranges[3].hi, IMAP_SEQ_STAR);
    assert_true(imap_seqset_contains(&s, 4, 20));
    assert_false(imap_seqset_contains(&s, 6, 20));
    assert_true(imap_seqset_contains(&s, 20, 20));
    assert_false(imap_seqset_contains(&s, 2, 20));
    imap_seqset_free(&s);
    assert_int_equal(imap_seqset_parse("*:4", 3, &s, &err), 0);
    assert_true(imap_seqset_contains(&s, 3, 3)); /* "*:4" with * = 3 is 3:4 */
    imap_seqset_free(&s);
    assert_int_equal(imap_seqset_parse("$", 1, &s, &err), 0);
    assert_true(s.saved);
    imap_seqset_free(&s);
    const char *bad[] = {"0", "1:", ",1", "1,,2", "a", "4294967295", "1:0", "01", "", "1,", "$1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(imap_seqset_parse(bad[i], strlen(bad[i]), &s, &err), -1);
        assert_string_equal(err, "Invalid messageset");
    }
}

/* Parses "tag [UID] FETCH args..." */
static int fetch(const char *line, struct imap_args *args, struct imap_fetch *f, const char **err)
{
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), args, err),
                     0);
    bool uid = imap_arg_atom_eq(&args->args[1], "UID");
    size_t skip = uid ? 3 : 2;
    return imap_fetch_parse(args->args + skip, args->count - skip, uid, f, err);
}

static void test_fetch_sweep(void **state)
{
    (void)state;
    struct imap_args a;
    struct imap_fetch f;
    const char *err;
    const char *line = "t UID FETCH 1:* (UID RFC822.SIZE FLAGS "
                       "BODY.PEEK[HEADER.FIELDS (From \"To\" {2}\r\nCc)])\r\n";
    assert_int_equal(fetch(line, &a, &f, &err), 0);
    assert_true(f.uid);
    assert_true(f.list_form);
    assert_int_equal(f.n_items, 4);
    assert_int_equal(f.items[0].att, IMAP_FA_UID);
    assert_int_equal(f.items[1].att, IMAP_FA_RFC822_SIZE);
    assert_int_equal(f.items[2].att, IMAP_FA_FLAGS);
    const struct imap_fetch_item *it = &f.items[3];
    assert_int_equal(it->att, IMAP_FA_BODY_SECTION);
    assert_true(it->peek);
    assert_false(it->sets_seen);
    assert_int_equal(it->section.spec, IMAP_SEC_HEADER_FIELDS);
    assert_int_equal(it->section.n_fields, 3);
    assert_string_equal(it->response_name, "BODY[HEADER.FIELDS (FROM TO CC)]");
    assert_memory_equal(line + it->raw_off, "BODY.PEEK[", 10);
    assert_int_equal(line[it->raw_off + it->raw_len - 1], ']');
    assert_false(imap_fetch_att_is_content(IMAP_FA_UID));
    assert_true(imap_fetch_att_is_content(it->att));
    imap_fetch_free(&f);
    imap_args_free(&a);
}

static void test_fetch_items(void **state)
{
    (void)state;
    struct imap_args a;
    struct imap_fetch f;
    const char *err;
    assert_int_equal(fetch("t FETCH 2 (BODY[1.2.MIME]<0.100> BODY[] body.peek[] RFC822 "
                           "RFC822.HEADER RFC822.TEXT BODY[HEADER] BODY[TEXT]<5.10> "
                           "BODY[3.HEADER.FIELDS.NOT (X-A)] BINARY.PEEK[1] BINARY.SIZE[1] "
                           "BODY BODYSTRUCTURE ENVELOPE INTERNALDATE MODSEQ EMAILID "
                           "BODY[]<7>)\r\n",
                           &a, &f, &err),
                     0);
    assert_int_equal(f.n_items, 18);
    const struct imap_fetch_item *it = f.items;
    assert_int_equal(it[0].section.n_parts, 2);
    assert_int_equal(it[0].section.parts[1], 2);
    assert_int_equal(it[0].section.spec, IMAP_SEC_MIME);
    assert_true(it[0].has_partial);
    assert_int_equal(it[0].partial_offset, 0);
    assert_int_equal(it[0].partial_length, 100);
    assert_string_equal(it[0].response_name, "BODY[1.2.MIME]<0>");
    assert_true(it[0].sets_seen);
    assert_true(it[1].sets_seen);
    assert_string_equal(it[1].response_name, "BODY[]");
    assert_false(it[2].sets_seen);
    assert_string_equal(it[2].response_name, "BODY[]");
    assert_int_equal(it[3].att, IMAP_FA_RFC822);
    assert_true(it[3].sets_seen);
    assert_false(it[4].sets_seen);
    assert_true(it[5].sets_seen);
    assert_true(it[6].sets_seen);
    assert_int_equal(it[6].section.spec, IMAP_SEC_HEADER);
    assert_string_equal(it[7].response_name, "BODY[TEXT]<5>");
    assert_int_equal(it[8].section.spec, IMAP_SEC_HEADER_FIELDS_NOT);
    assert_int_equal(it[8].section.parts[0], 3);
    assert_string_equal(it[8].response_name, "BODY[3.HEADER.FIELDS.NOT (X-A)]");
    assert_int_equal(it[9].att, IMAP_FA_BINARY);
    assert_true(it[9].peek);
    assert_string_equal(it[9].response_name, "BINARY[1]");
    assert_int_equal(it[10].att, IMAP_FA_BINARY_SIZE);
    assert_false(it[10].sets_seen);
    assert_int_equal(it[11].att, IMAP_FA_BODY);
    assert_int_equal(it[12].att, IMAP_FA_BODYSTRUCTURE);
    assert_int_equal(it[15].att, IMAP_FA_MODSEQ);
    assert_int_equal(it[16].att, IMAP_FA_EMAILID);
    assert_int_equal(it[17].partial_length, UINT64_MAX);
    imap_fetch_free(&f);
    imap_args_free(&a);
}

static void test_fetch_forms(void **state)
{
    (void)state;
    struct imap_args a;
    struct imap_fetch f;
    const char *err;
    /* macros */
    const char *m[] = {"FAST", "all", "Full"};
    size_t n[] = {3, 4, 5};
    for (int i = 0; i < 3; i++) {
        char line[64];
        snprintf(line, sizeof(line), "t FETCH 1 %s\r\n", m[i]);
        assert_int_equal(fetch(line, &a, &f, &err), 0);
        assert_int_equal(f.n_items, n[i]);
        assert_false(f.list_form);
        assert_true(f.items[0].from_macro);
        assert_int_equal(f.items[2].att, IMAP_FA_RFC822_SIZE);
        if (i == 2)
            assert_int_equal(f.items[4].att, IMAP_FA_BODY);
        imap_fetch_free(&f);
        imap_args_free(&a);
    }
    /* a single item without parentheses, with a field list */
    assert_int_equal(fetch("t FETCH 1 BODY.PEEK[HEADER.FIELDS (DATE)]<0.10>\r\n", &a, &f, &err), 0);
    assert_int_equal(f.n_items, 1);
    assert_string_equal(f.items[0].response_name, "BODY[HEADER.FIELDS (DATE)]<0>");
    imap_fetch_free(&f);
    imap_args_free(&a);
    /* modifiers */
    assert_int_equal(fetch("t UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n", &a, &f,
                           &err),
                     0);
    assert_true(f.changedsince);
    assert_int_equal(f.changedsince_modseq, 12345);
    assert_true(f.vanished);
    imap_fetch_free(&f);
    imap_args_free(&a);
    /* unknown items parse as OTHER: the caller decides */
    assert_int_equal(fetch("t FETCH 1 (X-GM-LABELS PREVIEW (LAZY) FLAGS)\r\n", &a, &f, &err), 0);
    assert_int_equal(f.items[0].att, IMAP_FA_OTHER);
    assert_int_equal(f.items[1].att, IMAP_FA_PREVIEW);
    assert_int_equal(f.items[2].att, IMAP_FA_FLAGS);
    imap_fetch_free(&f);
    imap_args_free(&a);
}

static const char too_deep[] =
    "t FETCH 1 BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26.27.28."
    "29.30.31.32.33]\r\n";

static void test_fetch_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "t FETCH 1 BODY[0]\r\n",
        "t FETCH 1 BODY[1.]\r\n",
        "t FETCH 1 BODY[MIME]\r\n",
        "t FETCH 1 BODY[X]\r\n",
        "t FETCH 1 BODY[HEADER.FIELDS]\r\n",
        "t FETCH 1 (BODY[HEADER.FIELDS ()])\r\n",
        "t FETCH 1 BODY[]<>\r\n",
        "t FETCH 1 BODY[]<1.0>\r\n",
        "t FETCH 1 BODY[]<1.2\r\n",
        "t FETCH 1 BODY[]x\r\n",
        "t FETCH 1 BINARY[HEADER]\r\n",
        "t FETCH 1 BINARY.SIZE[1]<0.1>\r\n",
        "t FETCH 1 FOO[1]\r\n",
        "t FETCH 1 ()\r\n",
        "t FETCH 1\r\n",
        "t FETCH x FLAGS\r\n",
        "t FETCH 1 FLAGS (CHANGEDSINCE x)\r\n",
        "t FETCH 1 FLAGS (PARTIAL 1:2)\r\n",
        "t FETCH 1 FLAGS (CHANGEDSINCE 1) x\r\n",
        "t FETCH 1 (\"FLAGS\")\r\n",
        too_deep,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct imap_args a;
        struct imap_fetch f;
        const char *err = NULL;
        int rc = fetch(bad[i], &a, &f, &err);
        if (rc != -1)
            print_error("accepted: %s", bad[i]);
        assert_int_equal(rc, -1);
        assert_non_null(err);
        imap_args_free(&a);
    }
}

static void test_login_authenticate(void **state)
{
    (void)state;
    struct imap_args a;
    const char *err;
    char user[64], mech[32];
    const char *line = "a LOGIN {5}\r\nalice \"se cret\"\r\n";
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &a, &err), 0);
    assert_int_equal(imap_login_parse(a.args + 2, a.count - 2, user, sizeof(user), &err), 0);
    assert_string_equal(user, "alice");
    assert_int_equal(imap_login_parse(a.args + 2, 1, user, sizeof(user), &err), -1);
    assert_int_equal(imap_login_parse(a.args + 2, a.count - 2, user, 3, &err), -1);
    imap_args_free(&a);

    line = "a authenticate plain AGFsaWNlAHNlY3JldA==\r\n";
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &a, &err), 0);
    const struct imap_arg *ir;
    assert_int_equal(
        imap_authenticate_parse(a.args + 2, a.count - 2, mech, sizeof(mech), &ir, &err), 0);
    assert_string_equal(mech, "PLAIN");
    assert_non_null(ir);
    assert_true(imap_sasl_user(mech, ir->str, ir->len, user, sizeof(user)));
    assert_string_equal(user, "alice");
    imap_args_free(&a);
}

static void b64(const char *in, size_t len, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < len ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static void test_sasl_user(void **state)
{
    (void)state;
    char enc[512], user[64];
    b64("admin\0bob\0pw", 12, enc);
    assert_true(imap_sasl_user("PLAIN", enc, strlen(enc), user, sizeof(user)));
    assert_string_equal(user, "admin"); /* authzid: the identity acted as */
    b64("\0bob\0pw", 7, enc);
    assert_true(imap_sasl_user("PLAIN", enc, strlen(enc), user, sizeof(user)));
    assert_string_equal(user, "bob");
    b64("bob", 3, enc);
    assert_true(imap_sasl_user("LOGIN", enc, strlen(enc), user, sizeof(user)));
    assert_string_equal(user, "bob");
    const char xo[] = "user=carol@example.org\1auth=Bearer tok\1\1";
    b64(xo, sizeof(xo) - 1, enc);
    assert_true(imap_sasl_user("XOAUTH2", enc, strlen(enc), user, sizeof(user)));
    assert_string_equal(user, "carol@example.org");
    const char ob[] = "n,a=d=3Dx=2Cy@example.org,\1host=h\1auth=Bearer t\1\1";
    b64(ob, sizeof(ob) - 1, enc);
    assert_true(imap_sasl_user("OAUTHBEARER", enc, strlen(enc), user, sizeof(user)));
    assert_string_equal(user, "d=x,y@example.org");
    const char ob2[] = "n,,\1auth=Bearer t\1\1";
    b64(ob2, sizeof(ob2) - 1, enc);
    assert_false(imap_sasl_user("OAUTHBEARER", enc, strlen(enc), user, sizeof(user)));
    assert_false(imap_sasl_user("PLAIN", "!!!!", 4, user, sizeof(user)));
    assert_false(imap_sasl_user("PLAIN", "abc", 3, user, sizeof(user)));
    b64("bo\nb", 4, enc);
    assert_false(imap_sasl_user("LOGIN", enc, strlen(enc), user, sizeof(user)));
    assert_false(imap_sasl_user("CRAM-MD5", enc, strlen(enc), user, sizeof(user)));
}

struct id_seen {
    char keys[8][32];
    int n, nils;
};

static void id_cb(void *ctx, const struct imap_arg *k, const struct imap_arg *v)
{
    struct id_seen *s = ctx;
    imap_arg_copy(k, s->keys[s->n++], sizeof(s->keys[0]));
    if (!v)
        s->nils++;
}

static void test_id(void **state)
{
    (void)state;
    struct imap_args a;
    const char *err;
    const char *line = "i ID (\"name\" \"x\" \"version\" NIL {2}\r\nk3 \"v\")\r\n";
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &a, &err), 0);
    struct id_seen s = {0};
    assert_int_equal(imap_id_parse(a.args + 2, a.count - 2, id_cb, &s, &err), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.nils, 1);
    assert_string_equal(s.keys[2], "k3");
    imap_args_free(&a);
    line = "i ID NIL\r\n";
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &a, &err), 0);
    assert_int_equal(imap_id_parse(a.args + 2, a.count - 2, id_cb, &s, &err), 0);
    imap_args_free(&a);
    line = "i ID (\"a\")\r\n";
    assert_int_equal(imap_args_parse(IMAP_PARSER_COMMANDS, NULL, line, strlen(line), &a, &err), 0);
    assert_int_equal(imap_id_parse(a.args + 2, a.count - 2, id_cb, &s, &err), -1);
    imap_args_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs_tags),     cmocka_unit_test(test_seqset),
        cmocka_unit_test(test_fetch_sweep),    cmocka_unit_test(test_fetch_items),
        cmocka_unit_test(test_fetch_forms),    cmocka_unit_test(test_fetch_invalid),
        cmocka_unit_test(test_login_authenticate), cmocka_unit_test(test_sasl_user),
        cmocka_unit_test(test_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
