/* API contract: levels and the key budget, key-list checks on encrypt,
 * parameter validation, error texts, the recipients helper, inspect, and
 * concurrent use from several threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "mime_test_util.h"

static const char msg[] =
    "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n";

static void test_levels_and_bits(void **s)
{
    (void)s;
    uint64_t bits;
    assert_int_equal(mime_level_algorithm(MIME_LEVEL_NONE, 0, 10),
                     MIME_ALG_NONE);
    assert_int_equal(mime_level_algorithm(MIME_LEVEL_OTP, 0, 1u << 30),
                     MIME_ALG_OTP_POLY1305);
    assert_int_equal(mime_level_algorithm(MIME_LEVEL_AES, 0, 1),
                     MIME_ALG_AES_256_GCM);
    assert_int_equal(mime_level_algorithm(MIME_LEVEL_AUTO, 1000, 1000),
                     MIME_ALG_OTP_POLY1305);
    assert_int_equal(mime_level_algorithm(MIME_LEVEL_AUTO, 1000, 1001),
                     MIME_ALG_AES_256_GCM);
    assert_int_equal(mime_key_bits_needed(MIME_ALG_OTP_POLY1305, 1000, &bits),
                     0);
    assert_int_equal(bits, 8256);
    assert_int_equal(mime_key_bits_needed(MIME_ALG_OTP_POLY1305, 0, &bits), 0);
    assert_int_equal(bits, 256);
    assert_int_equal(mime_key_bits_needed(MIME_ALG_AES_256_GCM, 1u << 30,
                                          &bits), 0);
    assert_int_equal(bits, 256);
    assert_int_equal(mime_key_bits_needed(MIME_ALG_NONE, 5, &bits), 0);
    assert_int_equal(bits, 0);
    assert_int_equal(mime_key_bits_needed(MIME_ALG_OTP_POLY1305,
                                          MIME_MAX_MESSAGE_SIZE + 1, &bits),
                     MIME_ERR_TOO_LARGE);
    enum mime_level lv;
    enum mime_alg alg;
    assert_int_equal(mime_level_parse("auto", &lv), 0);
    assert_int_equal(lv, MIME_LEVEL_AUTO);
    assert_int_not_equal(mime_level_parse("AUTO!", &lv), 0);
    assert_int_equal(mime_alg_parse("AES-256-GCM", &alg), 0);
    assert_int_equal(alg, MIME_ALG_AES_256_GCM);
    assert_int_equal(mime_alg_parse("otp", &alg), 0);
    assert_int_equal(alg, MIME_ALG_OTP_POLY1305);
    assert_int_equal(mime_alg_parse("rot13", &alg),
                     MIME_ERR_UNSUPPORTED_ALGORITHM);
    assert_string_equal(mime_alg_name(MIME_ALG_OTP_POLY1305), "OTP-POLY1305");
}

static void test_strerror(void **s)
{
    (void)s;
    for (int e = 0; e >= MIME_ERR_NOMEM; e--) {
        const char *t = mime_strerror(e);
        assert_non_null(t);
        assert_string_not_equal(t, "unknown mime error");
    }
    assert_string_equal(mime_strerror(-1000), "unknown mime error");
    assert_string_equal(mime_strerror(5), "unknown mime error");
}

static int enc_with(const struct mime_key *keys, size_t n, enum mime_alg alg,
                    char **err)
{
    struct mime_encrypt_params p = tu_params(alg);
    unsigned char *out = NULL;
    size_t out_len;
    int rc = mime_encrypt_mem(msg, strlen(msg), &p, keys, n, &out, &out_len,
                              err);
    if (rc != 0)
        assert_null(out);
    free(out);
    return rc;
}

static void test_encrypt_key_checks(void **s)
{
    (void)s;
    size_t need = strlen(msg) + 32;
    unsigned char *pool = calloc(1, need + 64);
    struct mime_key k[3];
    char *err = NULL;
    /* exact: ok */
    k[0] = (struct mime_key){.key_id = "a", .key = pool, .key_len = 10};
    k[1] = (struct mime_key){.key_id = "b", .key = pool + 10, .key_len = need - 10};
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, NULL), 0);
    /* short by one octet */
    k[1].key_len = need - 11;
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, &err),
                     MIME_ERR_KEY_SHORT);
    assert_non_null(strstr(err, "needs"));
    free(err);
    err = NULL;
    /* surplus by one octet */
    k[1].key_len = need - 9;
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, &err),
                     MIME_ERR_KEY_SURPLUS);
    assert_non_null(strstr(err, "waste"));
    free(err);
    err = NULL;
    /* duplicate ids */
    k[1] = (struct mime_key){.key_id = "a", .key = pool + 10, .key_len = need - 10};
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, NULL),
                     MIME_ERR_KEY_DUPLICATE);
    /* bad ids */
    k[1].key_id = "has space";
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, NULL),
                     MIME_ERR_INVALID_ARG);
    k[1].key_id = "";
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, NULL),
                     MIME_ERR_INVALID_ARG);
    /* empty key */
    k[1] = (struct mime_key){.key_id = "b", .key = pool, .key_len = 0};
    assert_int_equal(enc_with(k, 2, MIME_ALG_OTP_POLY1305, NULL),
                     MIME_ERR_INVALID_ARG);
    /* no keys */
    assert_int_equal(enc_with(k, 0, MIME_ALG_OTP_POLY1305, NULL),
                     MIME_ERR_KEY_SHORT);
    /* AES: one 256-bit key, or two keys summing 256 bits is fine too */
    k[0] = (struct mime_key){.key_id = "x", .key = pool, .key_len = 32};
    assert_int_equal(enc_with(k, 1, MIME_ALG_AES_256_GCM, NULL), 0);
    k[0].key_len = 33;
    assert_int_equal(enc_with(k, 1, MIME_ALG_AES_256_GCM, NULL),
                     MIME_ERR_KEY_SURPLUS);
    k[0].key_len = 16;
    assert_int_equal(enc_with(k, 1, MIME_ALG_AES_256_GCM, NULL),
                     MIME_ERR_KEY_SHORT);
    free(pool);
}

static void test_param_checks(void **s)
{
    (void)s;
    unsigned char key[32] = {0};
    struct mime_key k = {.key_id = "k", .key = key, .key_len = 32};
    unsigned char *out = NULL;
    size_t out_len;
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    p.source_kme_id = NULL;
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL), MIME_ERR_INVALID_ARG);
    p = tu_params(MIME_ALG_AES_256_GCM);
    p.subject_placeholder = "bad\r\nInjected: yes";
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL), MIME_ERR_INVALID_ARG);
    p = tu_params(MIME_ALG_AES_256_GCM);
    p.fixed_boundary = "no spaces allowed";
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL), MIME_ERR_INVALID_ARG);
    p = tu_params(MIME_ALG_NONE);
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL),
                     MIME_ERR_UNSUPPORTED_ALGORITHM);
    assert_null(out);
    /* a pipe is not a seekable input */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p = tu_params(MIME_ALG_AES_256_GCM);
    assert_int_equal(mime_encrypt_fd(fds[0], fds[1], &p, &k, 1, NULL, NULL),
                     MIME_ERR_INVALID_ARG);
    close(fds[0]);
    close(fds[1]);
}

static void test_utf8_placeholder(void **s)
{
    (void)s;
    unsigned char key[32] = {1};
    struct mime_key k = {.key_id = "k", .key = key, .key_len = 32};
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    p.subject_placeholder = "Verschlüsselte Nachricht";
    unsigned char *out;
    size_t out_len;
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL), 0);
    assert_non_null(memmem(out, out_len, "Subject: =?", 11));
    assert_null(memmem(out, out_len, "Subject: hi", 11));
    free(out);
    p.protect_subject = 0;
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, &k, 1, &out,
                                      &out_len, NULL), 0);
    assert_non_null(memmem(out, out_len, "Subject: hi\r\n", 13));
    free(out);
}

static void test_recipients(void **s)
{
    (void)s;
    const char *m =
        "To: \"Doe, Jane\" <Jane.Doe@Example.COM>, undisclosed-recipients:;\r\n"
        "Cc: team: a@x.org, B@X.org;, c@y.org (comment)\r\n"
        "bcc: Hidden <hidden@Z.org>\r\n"
        "Bcc:\r\n"
        "Resent-To: not@listed.org\r\n"
        "Subject: x\r\n\r\nTo: body@not.header\r\n";
    struct mime_rcpt_list *l = NULL;
    assert_int_equal(mime_recipients_mem(m, strlen(m), &l, NULL), 0);
    assert_int_equal(mime_rcpt_count(l), 5);
    const char *want[] = {"jane.doe@example.com", "a@x.org", "b@x.org",
                          "c@y.org", "hidden@z.org"};
    enum mime_rcpt_kind kinds[] = {MIME_RCPT_TO, MIME_RCPT_CC, MIME_RCPT_CC,
                                   MIME_RCPT_CC, MIME_RCPT_BCC};
    for (int i = 0; i < 5; i++) {
        assert_string_equal(mime_rcpt_address(l, (size_t)i), want[i]);
        assert_int_equal(mime_rcpt_kind_at(l, (size_t)i), kinds[i]);
    }
    assert_null(mime_rcpt_address(l, 5));
    mime_rcpt_list_free(&l);
    /* fd variant reads only headers */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], m, strlen(m)), (ssize_t)strlen(m));
    close(fds[1]);
    assert_int_equal(mime_recipients_fd(fds[0], &l, NULL), 0);
    assert_int_equal(mime_rcpt_count(l), 5);
    mime_rcpt_list_free(&l);
    close(fds[0]);
}

static void test_inspect_plain_and_pipe(void **s)
{
    (void)s;
    struct mime_info *info = NULL;
    char *err = NULL;
    assert_int_equal(mime_inspect_mem(msg, strlen(msg), &info, &err),
                     MIME_ERR_NOT_ENCRYPTED);
    assert_null(info);
    free(err);
    /* a plain message with a 100 kB header line, or 300 kB of headers, is
     * "not encrypted", not "malformed" */
    size_t big = 300000;
    char *m = malloc(big + 64);
    memcpy(m, "X-Long: ", 8);
    memset(m + 8, 'a', 100000);
    memcpy(m + 100008, "\r\n\r\nbody\r\n", 10);
    err = NULL;
    assert_int_equal(mime_inspect_mem(m, 100018, &info, &err),
                     MIME_ERR_NOT_ENCRYPTED);
    assert_non_null(strstr(err, "header line beyond"));
    free(err);
    err = NULL;
    /* 100-octet header lines (3000 of them) */
    for (size_t i = 0; i < big; i += 100)
        memcpy(m + i, i + 100 < big ? "X-H: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                      "aaaaaaaaaaaaaaaaaaa\r\n"
                                    : "\r\n\r\n", i + 100 < big ? 100 : 4);
    assert_int_equal(mime_inspect_mem(m, big, &info, &err),
                     MIME_ERR_NOT_ENCRYPTED);
    assert_non_null(strstr(err, "header block beyond"));
    free(err);
    free(m);
    /* inspect and decrypt read from a pipe (non-seekable) */
    struct tu_keys k;
    tu_keys_for(&k, MIME_ALG_OTP_POLY1305, strlen(msg), 7, "pipe");
    struct mime_encrypt_params p = tu_params(MIME_ALG_OTP_POLY1305);
    unsigned char *enc;
    size_t enc_len;
    assert_int_equal(mime_encrypt_mem(msg, strlen(msg), &p, k.keys, k.n, &enc,
                                      &enc_len, NULL), 0);
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    assert_true(enc_len < 60000);
    assert_int_equal(write(in[1], enc, enc_len), (ssize_t)enc_len);
    close(in[1]);
    struct mime_key_list kl = {k.keys, k.n};
    assert_int_equal(mime_decrypt_fd(in[0], out[1], NULL, mime_key_list_lookup,
                                     &kl, &info, NULL), 0);
    close(out[1]);
    char buf[512];
    ssize_t n = read(out[0], buf, sizeof(buf));
    assert_int_equal(n, (ssize_t)strlen(msg));
    assert_memory_equal(buf, msg, strlen(msg));
    assert_int_equal(mime_info_key_count(info), k.n);
    assert_int_equal(mime_info_key_bits(info, 0), 56);
    assert_int_equal(mime_info_key_bits(info, k.n), 0);
    assert_null(mime_info_key_id(info, k.n));
    mime_info_free(&info);
    assert_null(info);
    close(in[0]);
    close(out[0]);
    free(enc);
    tu_keys_free(&k);
}

/* Huge header fields stay inside only; the outer message stays readable. */
static void test_huge_headers(void **s)
{
    (void)s;
    size_t to_len = 100000, refs = 40, cap = to_len + refs * 8200 + 1024;
    char *m = malloc(cap);
    size_t n = 0;
    n += (size_t)sprintf(m + n, "From: a@example.org\r\nTo: ");
    for (size_t i = 0; n < to_len; i++)
        n += (size_t)sprintf(m + n, "user%zu@example.org, ", i);
    n += (size_t)sprintf(m + n, "last@example.org\r\n");
    for (size_t r = 0; r < refs; r++) { /* 40 x 8 kB References: 320 kB */
        n += (size_t)sprintf(m + n, "References:");
        for (int j = 0; j < 200; j++)
            n += (size_t)sprintf(m + n, " <%03zu.%03d.msgid@ex.org>\r\n", r, j);
    }
    n += (size_t)sprintf(m + n, "Subject: big\r\n\r\nbody\r\n");
    assert_true(n < cap);
    unsigned char key[32] = {7};
    struct mime_key k = {.key_id = "k", .key = key, .key_len = 32};
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    unsigned char *enc, *dec;
    size_t enc_len, dec_len;
    assert_int_equal(mime_encrypt_mem(m, n, &p, &k, 1, &enc, &enc_len, NULL),
                     0);
    size_t hl = tu_header_len(enc, enc_len);
    assert_true(hl < (size_t)80 * 1024);
    assert_null(memmem(enc, hl, "user1@", 6)); /* the 100 kB To: is inside */
    struct mime_key_list kl = {&k, 1};
    assert_int_equal(mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl,
                                      &dec, &dec_len, NULL, NULL), 0);
    assert_int_equal(dec_len, n);
    assert_memory_equal(dec, m, n);
    mime_plaintext_free(&dec, dec_len);
    /* the recipients helper reads a long To line from an fd */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], m, 60000), 60000);
    close(fds[1]);
    struct mime_rcpt_list *l = NULL;
    assert_int_equal(mime_recipients_fd(fds[0], &l, NULL), 0);
    assert_true(mime_rcpt_count(l) > 1000);
    mime_rcpt_list_free(&l);
    close(fds[0]);
    free(enc);
    free(m);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        struct tu_keys k;
        tu_keys_for(&k, i % 2 ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305,
                    strlen(msg), 33, "thr");
        struct mime_encrypt_params p =
            tu_params(i % 2 ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305);
        unsigned char *enc = NULL, *dec = NULL;
        size_t enc_len = 0, dec_len = 0;
        struct mime_key_list kl = {k.keys, k.n};
        if (mime_encrypt_mem(msg, strlen(msg), &p, k.keys, k.n, &enc, &enc_len,
                             NULL) != 0 ||
            mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl, &dec,
                             &dec_len, NULL, NULL) != 0 ||
            dec_len != strlen(msg) || memcmp(dec, msg, dec_len) != 0) {
            mime_plaintext_free(&dec, dec_len);
            free(enc);
            tu_keys_free(&k);
            return (void *)1;
        }
        mime_plaintext_free(&dec, dec_len);
        free(enc);
        tu_keys_free(&k);
    }
    return NULL;
}

static void test_threads(void **s)
{
    (void)s;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_and_bits),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_encrypt_key_checks),
        cmocka_unit_test(test_param_checks),
        cmocka_unit_test(test_utf8_placeholder),
        cmocka_unit_test(test_recipients),
        cmocka_unit_test(test_inspect_plain_and_pipe),
        cmocka_unit_test(test_huge_headers),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
