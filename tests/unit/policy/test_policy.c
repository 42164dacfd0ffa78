/* Policy tables: parsing, every error path with its line, precedence,
 * defaults and inheritance, reload valid and invalid, reference lifetime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy.h"

static const char *const links2[] = {"site-b", "site-c", NULL};
static const char *const links1[] = {"only", NULL};

static policy *load_ok(const char *text, const char *const *links)
{
    policy *p = NULL;
    char *err = NULL;
    int rc = policy_load_buffer("p.txt", text, strlen(text), links, &p, &err);
    if (rc != 0)
        fail_msg("unexpected errors:\n%s", err ? err : "?");
    assert_non_null(p);
    return p;
}

/* Expects exactly these error lines (in order). */
static void expect_errors(const char *text, const char *const *links, const char *const *want)
{
    policy *p = NULL;
    char *err = NULL;
    int rc = policy_load_buffer("p.txt", text, strlen(text), links, &p, &err);
    assert_int_equal(rc, POLICY_EINVALID);
    assert_null(p);
    assert_non_null(err);
    const char *s = err;
    size_t i = 0;
    for (; want[i]; i++) {
        if (!s) {
            fail_msg("missing error %zu '%s'; got:\n%s", i, want[i], err);
            return;
        }
        size_t len = strcspn(s, "\n");
        if (strlen(want[i]) != len || strncmp(s, want[i], len) != 0)
            fail_msg("error %zu:\n got  %.*s\n want %s\nall:\n%s", i, (int)len, s, want[i], err);
        s = s[len] ? s + len + 1 : NULL;
    }
    if (s)
        fail_msg("extra errors:\n%s", s);
    free(err);
}

static const char table[] =
    "# comment\n"
    "\n"
    "*                   action=none\n"
    "alice@example.org   action=require level=otp link=site-b slave_sae=SAE_B\n"
    "example.org         action=require link=site-b slave_sae=SAE_B on_no_key=refuse\n"
    "*.example.org       action=prefer link=site-c slave_sae=SAE_C subject=keep\n"
    "*.deep.example.org  action=refuse\n"
    "partner.test        link=site-b slave_sae=P level=auto otp_max=16k\n"
    "   placeholder=\"Encrypted \\\"mail\\\"\"   # trailing comment\n"
    "Bob@Example.NET.    action=none\n"
    "recipient x.test    action=none\n"
    "sender *            link=site-b master_sae=SAE_B\n"
    "sender c.test       link=site-c master_sae=SAE_C\n"
    "sender *.c.test     master_sae=SAE_C2\n";

static void test_parse_and_settings(void **state)
{
    policy *p = load_ok(table, links2);
    assert_int_equal(policy_rule_count(p), 8);
    assert_int_equal(policy_sender_rule_count(p), 3);
    assert_string_equal(policy_source(p), "p.txt");

    const struct policy_rule *r = policy_lookup(p, "alice@example.org");
    assert_int_equal(r->kind, POLICY_KIND_ADDRESS);
    assert_int_equal(r->line, 4);
    assert_int_equal(r->action, POLICY_REQUIRE);
    assert_int_equal(r->level, POLICY_LEVEL_OTP);
    assert_string_equal(r->link, "site-b");
    assert_string_equal(r->slave_sae, "SAE_B");
    assert_true(r->protect_subject);
    assert_string_equal(r->placeholder, "Protected message");
    assert_int_equal(r->on_no_key, POLICY_DEFER);
    assert_true(policy_rule_protects(r));
    assert_true(policy_rule_uses_otp(r, 1 << 30));

    r = policy_lookup(p, "carol@example.org");
    assert_int_equal(r->kind, POLICY_KIND_DOMAIN);
    assert_int_equal(r->on_no_key, POLICY_FAIL);
    assert_int_equal(r->level, POLICY_LEVEL_AES);
    assert_false(policy_rule_uses_otp(r, 1));

    r = policy_lookup(p, "x@partner.test");
    assert_int_equal(r->action, POLICY_NONE); /* inherited from "*" */
    assert_int_equal(r->level, POLICY_LEVEL_AUTO);
    assert_int_equal(r->otp_max, 16384);
    assert_true(policy_rule_uses_otp(r, 16384));
    assert_false(policy_rule_uses_otp(r, 16385));
    assert_string_equal(r->placeholder, "Encrypted \"mail\"");

    r = policy_lookup(p, "dave@mail.example.org");
    assert_int_equal(r->kind, POLICY_KIND_SUFFIX);
    assert_int_equal(r->action, POLICY_PREFER);
    assert_false(r->protect_subject);
    assert_string_equal(r->pattern, "*.example.org");

    r = policy_lookup(p, "bob@example.net");
    assert_int_equal(r->kind, POLICY_KIND_ADDRESS);
    assert_string_equal(r->pattern, "bob@example.net");
    assert_int_equal(r->action, POLICY_NONE);

    r = policy_lookup(p, "q@x.test");
    assert_int_equal(r->line, 11);

    const struct policy_sender_rule *s = policy_lookup_sender(p, "news@c.test");
    assert_string_equal(s->link, "site-c");
    assert_string_equal(s->master_sae, "SAE_C");
    s = policy_lookup_sender(p, "news@a.c.test");
    assert_int_equal(s->kind, POLICY_KIND_SUFFIX);
    assert_string_equal(s->link, "site-b"); /* inherited from sender * */
    assert_string_equal(s->master_sae, "SAE_C2");
    s = policy_lookup_sender(p, "someone@elsewhere.org");
    assert_int_equal(s->kind, POLICY_KIND_DEFAULT);
    policy_unref(&p);
    assert_null(p);
}

static void test_precedence(void **state)
{
    policy *p = load_ok(table, links2);
    struct {
        const char *addr;
        enum policy_kind kind;
        unsigned line;
    } cases[] = {
        {"alice@example.org", POLICY_KIND_ADDRESS, 4},     /* address beats domain */
        {"ALICE@EXAMPLE.ORG", POLICY_KIND_ADDRESS, 4},     /* case-insensitive */
        {"alice@example.org.", POLICY_KIND_ADDRESS, 4},    /* trailing dot */
        {"alice@sub.example.org", POLICY_KIND_SUFFIX, 6},  /* address is exact */
        {"bob@example.org", POLICY_KIND_DOMAIN, 5},        /* domain beats suffix */
        {"bob@a.example.org", POLICY_KIND_SUFFIX, 6},
        {"bob@a.b.example.org", POLICY_KIND_SUFFIX, 6},
        {"bob@deep.example.org", POLICY_KIND_SUFFIX, 6},   /* *.deep is subdomains only */
        {"bob@x.deep.example.org", POLICY_KIND_SUFFIX, 7}, /* longest suffix wins */
        {"bob@y.x.deep.example.org", POLICY_KIND_SUFFIX, 7},
        {"bob@example.com", POLICY_KIND_DEFAULT, 3},
        {"bob@org", POLICY_KIND_DEFAULT, 3},
        {"postmaster", POLICY_KIND_DEFAULT, 3},
        {"", POLICY_KIND_DEFAULT, 3},
        {"@", POLICY_KIND_DEFAULT, 3},
        {"a@.", POLICY_KIND_DEFAULT, 3},
        {"\"a@b\"@example.org", POLICY_KIND_DOMAIN, 5},    /* last '@' splits */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct policy_rule *r = policy_lookup(p, cases[i].addr);
        if (r->kind != cases[i].kind || r->line != cases[i].line)
            fail_msg("%s: got %s line %u", cases[i].addr, policy_kind_name(r->kind), r->line);
    }
    char longaddr[700];
    memset(longaddr, 'a', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    assert_int_equal(policy_lookup(p, longaddr)->kind, POLICY_KIND_DEFAULT);
    policy_unref(&p);

    /* no "*" rule: no match means refuse */
    p = load_ok("example.org action=none\n", NULL);
    const struct policy_rule *r = policy_lookup(p, "x@other.org");
    assert_int_equal(r->kind, POLICY_KIND_BUILTIN);
    assert_int_equal(r->action, POLICY_REFUSE);
    assert_int_equal(r->line, 0);
    assert_null(policy_lookup_sender(p, "x@other.org"));
    policy_unref(&p);

    /* an empty file: every recipient refused */
    p = load_ok("# nothing\n", NULL);
    assert_int_equal(policy_rule_count(p), 0);
    assert_int_equal(policy_lookup(p, "a@b.c")->action, POLICY_REFUSE);
    policy_unref(&p);
}

static void test_defaults_and_inheritance(void **state)
{
    /* one configured link is the default link */
    policy *p = load_ok("* slave_sae=S level=auto\n"
                        "a.test action=prefer\n"
                        "b.test level=otp slave_sae=T\n"
                        "sender * master_sae=M\n",
                        links1);
    const struct policy_rule *r = policy_lookup(p, "x@a.test");
    assert_int_equal(r->action, POLICY_PREFER);
    assert_int_equal(r->level, POLICY_LEVEL_AUTO); /* from "*" */
    assert_int_equal(r->otp_max, 65536);           /* built-in */
    assert_string_equal(r->link, "only");
    assert_string_equal(r->slave_sae, "S");
    r = policy_lookup(p, "x@b.test");
    assert_int_equal(r->level, POLICY_LEVEL_OTP);
    assert_string_equal(r->slave_sae, "T");
    assert_int_equal(r->action, POLICY_REQUIRE);
    r = policy_lookup(p, "x@c.test");
    assert_int_equal(r->kind, POLICY_KIND_DEFAULT);
    assert_int_equal(r->action, POLICY_REQUIRE);
    assert_true(r->protect_subject);
    assert_int_equal(r->on_no_key, POLICY_DEFER);
    assert_string_equal(policy_lookup_sender(p, "a@b")->link, "only");
    policy_unref(&p);

    assert_string_equal(policy_action_name(POLICY_REFUSE), "refuse");
    assert_string_equal(policy_level_name(POLICY_LEVEL_AUTO), "auto");
    assert_string_equal(policy_on_no_key_name(POLICY_FAIL), "refuse");
    assert_string_equal(policy_strerror(POLICY_EINVALID), "invalid policy");
}

static void test_errors_settings(void **state)
{
    static const char *const want[] = {
        "p.txt:1: unknown setting 'colour'",
        "p.txt:2: action: 'maybe' is not one of: require, prefer, none, refuse",
        "p.txt:3: level: 'rot13' is not one of: aes, otp, auto",
        "p.txt:4: on_no_key: 'bounce' is not one of: defer, refuse",
        "p.txt:5: subject: 'hide' is not one of: keep, protect",
        "p.txt:6: otp_max: '10q': unknown unit (use k, M or G, optionally with B or iB)",
        "p.txt:7: otp_max: '2G' is more than 1G",
        "p.txt:8: link: 'nowhere' is not a configured KME link (configured: site-b, site-c)",
        "p.txt:9: slave_sae: 'a/b' is not a valid SAE ID (letters, digits, '-', '_', '.', '~'; at most 255)",
        "p.txt:10: placeholder: must be 1 to 200 bytes of UTF-8 text without control characters",
        "p.txt:11: 'action' is set twice",
        "p.txt:12: expected key=value, got 'require'",
        "p.txt:13: expected key=value, got '=x'",
        "p.txt:14: action: empty value",
        "p.txt:15: 'master_sae' is not a recipient setting",
        "p.txt:16: 'slave_sae' is not a sender setting",
        "p.txt:17: 'action' is not a sender setting",
        "p.txt:18: otp_max applies to level=auto only (level is aes)",
        "p.txt:19: placeholder applies to subject=protect only",
        "p.txt:20: placeholder: must be 1 to 200 bytes of UTF-8 text without control characters",
        NULL,
    };
    expect_errors("a1.test action=none colour=blue\n"
                  "a2.test action=maybe\n"
                  "a3.test action=none level=rot13\n"
                  "a4.test action=none on_no_key=bounce\n"
                  "a5.test action=none subject=hide\n"
                  "a6.test action=none otp_max=10q\n"
                  "a7.test action=none level=auto otp_max=2G\n"
                  "a8.test action=none link=nowhere\n"
                  "a9.test action=none slave_sae=a/b\n"
                  "a10.test action=none placeholder=\"\"\n"
                  "a11.test action=none action=refuse\n"
                  "a12.test require\n"
                  "a13.test action=none =x\n"
                  "a14.test action=\n"
                  "a15.test action=none master_sae=M\n"
                  "sender a16.test link=site-b master_sae=M slave_sae=S\n"
                  "sender a17.test link=site-b master_sae=M action=none\n"
                  "a18.test action=none otp_max=1k\n"
                  "a19.test action=none subject=keep placeholder=x\n"
                  "a20.test action=none placeholder=\"\xff\xfe\"\n",
                  links2, want);
}

static void test_errors_patterns(void **state)
{
    static const char *const want[] = {
        "p.txt:1: '@example.org': write the domain alone ('example.org')",
        "p.txt:2: 'ex*ample.org': '*' is only allowed as '*' or at the start of '*.domain'",
        "p.txt:3: 'a@b@c.test': more than one '@'",
        "p.txt:4: 'bad..domain' is not a valid domain",
        "p.txt:5: '*.' is not a valid domain pattern",
        "p.txt:6: 'x@bad_dom%ain' is not a valid address",
        "p.txt:7: a rule starts with a pattern, got 'action=none'",
        "p.txt:8: rule 'lonely.test' has no settings",
        "p.txt:9: 'sender' needs a pattern",
        "p.txt:11: duplicate pattern 'dup.test' (first at line 10)",
        "p.txt:12: duplicate pattern 'dup.test' (first at line 10)",
        "p.txt:14: duplicate suffix '*.dup.test' (first at line 13)",
        "p.txt:16: duplicate default '*' (first at line 15)",
        "p.txt:18: duplicate pattern 'u@dup.test' (first at line 17)",
        "p.txt:20: duplicate sender pattern 'dup.test' (first at line 19)",
        NULL,
    };
    expect_errors("@example.org action=none\n"
                  "ex*ample.org action=none\n"
                  "a@b@c.test action=none\n"
                  "bad..domain action=none\n"
                  "*. action=none\n"
                  "x@bad_dom%ain action=none\n"
                  "action=none\n"
                  "lonely.test\n"
                  "sender\n"
                  "dup.test action=none\n"
                  "DUP.test action=refuse\n"
                  "dup.test. action=refuse\n"
                  "*.dup.test action=none\n"
                  "*.dup.test action=none\n"
                  "* action=none\n"
                  "* action=refuse\n"
                  "u@dup.test action=none\n"
                  "U@Dup.Test action=none\n"
                  "sender dup.test link=site-b master_sae=M\n"
                  "sender dup.test link=site-b master_sae=M\n",
                  links2, want);
}

static void test_errors_lines_and_resolution(void **state)
{
    char longline[POLICY_MAX_LINE + 20];
    memset(longline, 'x', sizeof(longline));
    memcpy(longline + sizeof(longline) - 2, "\n", 2);
    char text[POLICY_MAX_LINE + 1024];
    snprintf(text, sizeof(text),
             "  continued.test action=none\n"                  /* 1 */
             "a.test action=none placeholder=\"open\n"         /* 2 */
             "b.test action=none\x01\n"                        /* 3 */
             "%s"                                              /* 4 */
             "c.test w1=1 w2=2 w3=3 w4=4 w5=5 w6=6 w7=7 w8=8 w9=9 w10=1 w11=1 w12=1\n"
             "  w13=1 w14=1 w15=1 w16=1 w17=1 w18=1 w19=1 w20=1 w21=1 w22=1 w23=1\n"
             "  w24=1 w25=1 w26=1 w27=1 w28=1 w29=1 w30=1 w31=1 w32=1\n" /* 7 */
             "d.test action=require\n"                         /* 8 */
             "e.test action=prefer link=site-b\n"              /* 9 */
             "f.test slave_sae=X\n"                            /* 10 */
             "g.test action=none\n"                            /* 11 */
             "   link=site-b\n"                                /* 12 */
             "   bogus=1\n"                                    /* 13 */
             "sender h.test link=site-b\n"                     /* 14 */
             "sender i.test master_sae=M\n",                   /* 15 */
             longline);
    static const char *const want[] = {
        "p.txt:1: continuation line (starts with a blank) without a rule",
        "p.txt:2: unterminated quoted string",
        "p.txt:3: control character in line",
        "p.txt:4: line longer than 8192 bytes",
        "p.txt:5: unknown setting 'w1'",
        "p.txt:7: more than 32 words in one rule",
        "p.txt:8: action=require needs link= and slave_sae= (on this rule or on the '*' rule)",
        "p.txt:9: action=prefer needs slave_sae= (on this rule or on the '*' rule)",
        "p.txt:10: action=require needs link= (on this rule or on the '*' rule)",
        "p.txt:13: unknown setting 'bogus'",
        "p.txt:14: sender rule needs master_sae= (on this rule or on 'sender *')",
        "p.txt:15: sender rule needs link= (on this rule or on 'sender *')",
        NULL,
    };
    /* every unknown w<N> setting is reported too; check the set without them */
    policy *p = NULL;
    char *err = NULL;
    assert_int_equal(policy_load_buffer("p.txt", text, strlen(text), links2, &p, &err),
                     POLICY_EINVALID);
    size_t cap = strlen(err) + 1, fl = 0;
    char *filtered = calloc(1, cap);
    assert_non_null(filtered);
    for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "unknown setting 'w") && !strstr(line, "'w1'"))
            continue;
        fl += (size_t)snprintf(filtered + fl, cap - fl, "%s%s", fl ? "\n" : "", line);
    }
    free(err);
    const char *s = filtered;
    for (size_t i = 0; want[i]; i++) {
        size_t len = strcspn(s, "\n");
        if (strlen(want[i]) != len || strncmp(s, want[i], len) != 0)
            fail_msg("error %zu:\n got  %.*s\n want %s\nall:\n%s", i, (int)len, s, want[i],
                     filtered);
        s += len + (s[len] ? 1 : 0);
    }
    assert_string_equal(s, "");
    free(filtered);
}

static void test_error_cap(void **state)
{
    size_t n = POLICY_MAX_ERRORS + 5;
    char *text = calloc(n, 32);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        memcpy(text + i * 13, "x.test bad=1\n", 13);
    policy *p = NULL;
    char *err = NULL;
    assert_int_equal(policy_load_buffer("p.txt", text, strlen(text), NULL, &p, &err),
                     POLICY_EINVALID);
    assert_non_null(strstr(err, "more errors not shown"));
    size_t lines = 1;
    for (const char *c = err; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, POLICY_MAX_ERRORS + 1);
    free(err);
    free(text);
}

static char tmpdir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load_file_and_reload(void **state)
{
    strcpy(tmpdir, "/tmp/qpol-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char path[128];
    snprintf(path, sizeof(path), "%s/policy", tmpdir);

    policy *p = NULL;
    char *err = NULL;
    assert_int_equal(policy_load_file(path, NULL, &p, &err), POLICY_EIO);
    assert_non_null(strstr(err, "No such file or directory"));
    free(err);

    write_file(path, "* action=none\nexample.org action=refuse\n");
    assert_int_equal(policy_load_file(path, NULL, &p, &err), 0);
    assert_null(err);
    policy_store *store = policy_store_new(p);
    p = NULL;

    /* a session takes its snapshot */
    policy *session = policy_store_get(store);
    const struct policy_rule *held = policy_lookup(session, "a@example.org");
    assert_int_equal(held->action, POLICY_REFUSE);

    /* a valid reload swaps; the session keeps the old snapshot alive */
    write_file(path, "* action=none\nexample.org action=none\n");
    assert_int_equal(policy_store_reload(store, path, NULL, &err), 0);
    policy *now = policy_store_get(store);
    assert_ptr_not_equal(now, session);
    assert_int_equal(policy_lookup(now, "a@example.org")->action, POLICY_NONE);
    assert_int_equal(held->action, POLICY_REFUSE); /* still readable (ASan) */
    assert_string_equal(held->pattern, "example.org");
    policy_unref(&session);
    assert_null(session);

    /* an invalid reload keeps the current snapshot and says why */
    write_file(path, "* action=none\nexample.org action=sometimes\n");
    assert_int_equal(policy_store_reload(store, path, NULL, &err), POLICY_EINVALID);
    char want[200];
    snprintf(want, sizeof(want), "%s:2: action: 'sometimes' is not one of: require, prefer, none, refuse", path);
    assert_string_equal(err, want);
    free(err);
    policy *after = policy_store_get(store);
    assert_ptr_equal(after, now);
    assert_int_equal(policy_lookup(after, "a@example.org")->action, POLICY_NONE);
    policy_unref(&after);

    /* a missing file is a failed reload too */
    unlink(path);
    assert_int_equal(policy_store_reload(store, path, NULL, &err), POLICY_EIO);
    free(err);
    after = policy_store_get(store);
    assert_ptr_equal(after, now);
    policy_unref(&after);

    /* the store's reference goes with the store; ours lives on */
    policy_store_free(&store);
    assert_null(store);
    assert_int_equal(policy_lookup(now, "a@example.org")->action, POLICY_NONE);
    policy_unref(&now);
    policy_unref(&now); /* NULL: no-op */
    rmdir(tmpdir);
}

static void test_refcount(void **state)
{
    policy *p = load_ok("* action=none\n", NULL);
    policy *a = policy_ref(p);
    policy *b = policy_ref(p);
    assert_ptr_equal(a, p);
    policy_unref(&p);
    policy_unref(&a);
    assert_int_equal(policy_lookup(b, "x@y")->action, POLICY_NONE);
    policy_unref(&b); /* last: freed (LeakSanitizer checks) */
    assert_null(policy_ref(NULL));
}

static void test_syntax_details(void **state)
{
    /* CRLF line ends, tabs, trailing comments, quoted '#', address literal,
     * a continuation after a comment line, the recipient keyword */
    policy *p = load_ok("*\taction=none\r\n"
                        "[192.0.2.1]  action=refuse   # literal\r\n"
                        "q.test action=require link=site-b slave_sae=S\r\n"
                        "# a comment between\r\n"
                        "\tplaceholder=\"Re: #1 \\\\ done\"\r\n"
                        "recipient  r.test  action=prefer link=site-c slave_sae=T\n",
                        links2);
    assert_int_equal(policy_lookup(p, "x@[192.0.2.1]")->action, POLICY_REFUSE);
    const struct policy_rule *r = policy_lookup(p, "x@q.test");
    assert_string_equal(r->placeholder, "Re: #1 \\ done");
    r = policy_lookup(p, "x@r.test");
    assert_int_equal(r->action, POLICY_PREFER);
    assert_int_equal(r->line, 6);
    assert_int_equal(policy_rule_count(p), 4);
    policy_unref(&p);

    /* a continuation line's errors carry its own line number */
    static const char *const want[] = {
        "p.txt:3: unknown setting 'colour'",
        "p.txt:5: level: 'best' is not one of: aes, otp, auto",
        NULL,
    };
    expect_errors("a.test action=none\n"
                  "b.test action=none\n"
                  "  colour=red\n"
                  "c.test action=none\n"
                  "\tlevel=best\n",
                  links2, want);

    /* no links configured at all */
    static const char *const empty[] = {NULL};
    static const char *const want2[] = {
        "p.txt:1: link: 'x' is not a configured KME link (none configured)", NULL,
    };
    expect_errors("a.test action=none link=x\n", empty, want2);
}

/* Random edits of a valid table must never crash or leak: every result is
 * either a snapshot or a list of errors (run under ASan/UBSan). */
static void test_mutations(void **state)
{
    static const char alphabet[] = "*.@=\" \t\n#\\abcz019-_~\r\x01\xc3\xa9";
    uint64_t x = 88172645463325252ull;
    size_t base = strlen(table);
    char *buf = malloc(base + 64);
    for (int round = 0; round < 3000; round++) {
        memcpy(buf, table, base);
        size_t len = base;
        int edits = 1 + (int)(x % 4);
        for (int e = 0; e < edits; e++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            size_t pos = (size_t)(x % len);
            char c = alphabet[(x >> 20) % (sizeof(alphabet) - 1)];
            switch ((x >> 40) % 3) {
            case 0: buf[pos] = c; break;                    /* replace */
            case 1: memmove(buf + pos, buf + pos + 1, len - pos - 1); len--; break;
            default:                                         /* insert */
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = c;
                len++;
                break;
            }
        }
        policy *p = NULL;
        char *err = NULL;
        int rc = policy_load_buffer("m.txt", buf, len, (round & 1) ? links2 : NULL, &p, &err);
        if (rc == 0) {
            assert_non_null(p);
            assert_null(err);
            (void)policy_lookup(p, "alice@example.org");
            (void)policy_lookup_sender(p, "x@a.c.test");
            policy_unref(&p);
        } else {
            assert_int_equal(rc, POLICY_EINVALID);
            assert_null(p);
            assert_non_null(err);
            assert_int_equal(strncmp(err, "m.txt:", 6), 0);
            free(err);
        }
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_settings),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_defaults_and_inheritance),
        cmocka_unit_test(test_errors_settings),
        cmocka_unit_test(test_errors_patterns),
        cmocka_unit_test(test_errors_lines_and_resolution),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_load_file_and_reload),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_syntax_details),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
