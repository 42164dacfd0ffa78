/* Byte-exact round trips of every corpus message at both algorithms,
 * through the memory and the fd APIs (fd decrypt forced to spill to a
 * temporary file), plus checks on the outer message a non-QuMail client
 * sees. */
#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>

#include <cmocka.h>
#include <gmime/gmime.h>

#include "mime_test_util.h"

#ifndef MIME_CORPUS_DIR
#error "MIME_CORPUS_DIR not defined"
#endif

static const unsigned char fixed_nonce[12] = "QuMailNonce!";

static int mem_fd(const void *data, size_t len)
{
    int fd = memfd_create("mime-test", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    return fd;
}

static unsigned char *fd_slurp(int fd, size_t *len_r)
{
    off_t end = lseek(fd, 0, SEEK_END);
    assert_true(end >= 0);
    unsigned char *buf = malloc((size_t)end + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)end, 0), end);
    *len_r = (size_t)end;
    return buf;
}

/* Feeds a buffer into a pipe from a thread (so the reader sees a
 * non-seekable input of any size). */
struct feeder {
    int fd;
    const unsigned char *data;
    size_t len;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    size_t off = 0;
    while (off < f->len) {
        ssize_t n = write(f->fd, f->data + off, f->len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    close(f->fd);
    return NULL;
}

/* Decrypts from a pipe: one pass, ciphertext spilled to a temporary file
 * beyond 1000 octets. */
static void decrypt_via_pipe(const char *path, const unsigned char *enc,
                             size_t enc_len, const unsigned char *orig,
                             size_t len, struct mime_key_list *kl)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct feeder f = {p[1], enc, enc_len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feed, &f), 0);
    int plain = memfd_create("dec", MFD_CLOEXEC);
    struct mime_decrypt_params dp = {.tmp_dir = NULL, .spill_threshold = 1000};
    char *err = NULL;
    int rc = mime_decrypt_fd(p[0], plain, &dp, mime_key_list_lookup, kl, NULL,
                             &err);
    if (rc != 0)
        fail_msg("%s: decrypt from pipe: %s (%s)", path, mime_strerror(rc),
                 err);
    /* drain whatever the decoder did not need (epilogue) */
    char sink[4096];
    while (read(p[0], sink, sizeof(sink)) > 0)
        ;
    pthread_join(t, NULL);
    close(p[0]);
    size_t dec_len;
    unsigned char *dec = fd_slurp(plain, &dec_len);
    assert_int_equal(dec_len, len);
    assert_memory_equal(dec, orig, len);
    free(dec);
    close(plain);
}

/* The outer message as a plain MIME client sees it. */
static void check_outer(const unsigned char *orig, size_t orig_len,
                        const unsigned char *enc, size_t enc_len,
                        enum mime_alg alg)
{
    size_t ohl = tu_header_len(orig, orig_len);
    size_t hl = tu_header_len(enc, enc_len);
    assert_false(tu_has_field(enc, hl, "Bcc"));
    assert_false(tu_has_field(enc, hl, "Content-Transfer-Encoding"));
    assert_false(tu_has_field(enc, hl, "User-Agent"));
    assert_true(tu_has_field(enc, hl, "X-QKD-Key-ID"));
    assert_true(tu_has_field(enc, hl, "X-QKD-Algorithm"));
    if (tu_has_field(orig, ohl, "Subject"))
        assert_non_null(memmem(enc, hl, "\nSubject: " MIME_DEFAULT_SUBJECT, strlen("\nSubject: " MIME_DEFAULT_SUBJECT)));
    /* Line ending follows the original's first line. */
    const unsigned char *nl = memchr(orig, '\n', orig_len);
    int crlf = nl == NULL || (nl > orig && nl[-1] == '\r');
    const unsigned char *enl = memchr(enc, '\n', enc_len);
    assert_non_null(enl);
    assert_int_equal(crlf, enl > enc && enl[-1] == '\r');
    if (crlf)
        for (size_t i = 0; i < enc_len; i++)
            if (enc[i] == '\n')
                assert_int_equal(enc[i - 1], '\r');

    GMimeStream *s = g_mime_stream_mem_new_with_buffer((const char *)enc,
                                                       enc_len);
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
    assert_non_null(m);
    GMimeObject *body = g_mime_message_get_mime_part(m);
    assert_true(GMIME_IS_MULTIPART_ENCRYPTED(body));
    assert_int_equal(g_mime_multipart_get_count(GMIME_MULTIPART(body)), 2);
    GMimeObject *ctl = g_mime_multipart_get_part(GMIME_MULTIPART(body), 0);
    GMimeObject *data = g_mime_multipart_get_part(GMIME_MULTIPART(body), 1);
    assert_true(g_mime_content_type_is_type(
        g_mime_object_get_content_type(ctl), "application", "x-qkd-encrypted"));
    assert_string_equal(g_mime_part_get_filename(GMIME_PART(data)),
                        "encrypted.qkd");
    /* The attachment decodes to Length + 16 octets. */
    GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(data));
    GMimeStream *out = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(dw, out);
    assert_int_equal(g_mime_stream_length(out), (gint64)orig_len + 16);
    g_object_unref(out);
    const char *alg_hdr = g_mime_object_get_header(GMIME_OBJECT(m),
                                                   "X-QKD-Algorithm");
    assert_string_equal(alg_hdr, mime_alg_name(alg));
    g_object_unref(m);
    g_object_unref(p);
    g_object_unref(s);
}

static void roundtrip_one(const char *path, enum mime_alg alg)
{
    size_t len = 0;
    unsigned char *orig = tu_read_file(path, &len);
    assert_non_null(orig);
    struct tu_keys k;
    /* OTP: odd key sizes so the key stream crosses key boundaries. */
    tu_keys_for(&k, alg, len, alg == MIME_ALG_OTP_POLY1305 ? 1021 : 32, "k");
    struct mime_encrypt_params p = tu_params(alg);
    p.fixed_boundary = "=_qkd_test_boundary";
    p.fixed_nonce = fixed_nonce;
    char *err = NULL;

    /* memory API */
    unsigned char *enc = NULL, *dec = NULL;
    size_t enc_len = 0, dec_len = 0;
    int rc = mime_encrypt_mem(orig, len, &p, k.keys, k.n, &enc, &enc_len, &err);
    if (rc != 0)
        fail_msg("%s: encrypt: %s (%s)", path, mime_strerror(rc), err);
    check_outer(orig, len, enc, enc_len, alg);

    struct mime_key_list kl = {k.keys, k.n};
    struct mime_info *info = NULL;
    rc = mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl, &dec,
                          &dec_len, &info, &err);
    if (rc != 0)
        fail_msg("%s: decrypt: %s (%s)", path, mime_strerror(rc), err);
    assert_int_equal(dec_len, len);
    assert_memory_equal(dec, orig, len);
    assert_int_equal(mime_info_algorithm(info), alg);
    assert_int_equal(mime_info_plaintext_length(info), len);
    assert_int_equal(mime_info_key_count(info), k.n);
    assert_string_equal(mime_info_key_id(info, k.n - 1), k.ids[k.n - 1]);
    mime_info_free(&info);
    mime_plaintext_free(&dec, dec_len);

    /* fd API: same bytes out; decrypt in two passes over the memfd. */
    int in = mem_fd(orig, len);
    int out = memfd_create("enc", MFD_CLOEXEC);
    uint64_t written = 0;
    rc = mime_encrypt_fd(in, out, &p, k.keys, k.n, &written, &err);
    assert_int_equal(rc, 0);
    assert_int_equal(written, enc_len);
    size_t fenc_len;
    unsigned char *fenc = fd_slurp(out, &fenc_len);
    assert_int_equal(fenc_len, enc_len);
    assert_memory_equal(fenc, enc, enc_len);
    free(fenc);

    assert_int_equal(lseek(out, 0, SEEK_SET), 0);
    int plain = memfd_create("dec", MFD_CLOEXEC);
    struct mime_decrypt_params dp = {.tmp_dir = NULL, .spill_threshold = 1000};
    rc = mime_decrypt_fd(out, plain, &dp, mime_key_list_lookup, &kl, NULL,
                         &err);
    if (rc != 0)
        fail_msg("%s: decrypt_fd: %s (%s)", path, mime_strerror(rc), err);
    unsigned char *fdec = fd_slurp(plain, &dec_len);
    assert_int_equal(dec_len, len);
    assert_memory_equal(fdec, orig, len);
    free(fdec);

    decrypt_via_pipe(path, enc, enc_len, orig, len, &kl);

    /* inspect_fd */
    assert_int_equal(lseek(out, 0, SEEK_SET), 0);
    assert_int_equal(mime_inspect_fd(out, &info, &err), 0);
    assert_int_equal(mime_info_key_count(info), k.n);
    assert_string_equal(mime_info_source_kme_id(info), "KME_A");
    assert_string_equal(mime_info_master_sae_id(info), "SAE_ALICE");
    assert_string_equal(mime_info_slave_sae_id(info), "SAE_BOB");
    mime_info_free(&info);

    close(in);
    close(out);
    close(plain);
    free(enc);
    free(orig);
    free(err);
    tu_keys_free(&k);
}

static int corpus_files(char ***names_r)
{
    DIR *d = opendir(MIME_CORPUS_DIR);
    assert_non_null(d);
    char **names = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".eml") != 0)
            continue;
        char **grown = realloc(names, (size_t)(n + 1) * sizeof(char *));
        assert_non_null(grown);
        names = grown;
        assert_true(asprintf(&names[n], "%s/%s", MIME_CORPUS_DIR,
                             e->d_name) > 0);
        n++;
    }
    closedir(d);
    *names_r = names;
    return n;
}

static void run_corpus(enum mime_alg alg)
{
    char **names;
    int n = corpus_files(&names);
    assert_true(n >= 15);
    for (int i = 0; i < n; i++) {
        roundtrip_one(names[i], alg);
        free(names[i]);
    }
    free(names);
}

static void test_corpus_otp(void **state)
{
    (void)state;
    run_corpus(MIME_ALG_OTP_POLY1305);
}

static void test_corpus_aes(void **state)
{
    (void)state;
    run_corpus(MIME_ALG_AES_256_GCM);
}

/* Bcc recipients are listed (so the proxy can split them) but never kept
 * on the outer message; the plaintext keeps the original bytes. */
static void test_bcc_hidden(void **state)
{
    (void)state;
    size_t len = 0;
    unsigned char *orig = tu_read_file(MIME_CORPUS_DIR
                                       "/17-large-attachment-lf.eml", &len);
    assert_non_null(orig);
    struct mime_rcpt_list *rl = NULL;
    assert_int_equal(mime_recipients_mem(orig, len, &rl, NULL), 0);
    assert_int_equal(mime_rcpt_count(rl), 3);
    assert_string_equal(mime_rcpt_address(rl, 2), "victor@example.org");
    assert_int_equal(mime_rcpt_kind_at(rl, 2), MIME_RCPT_BCC);
    assert_true(mime_rcpt_has(rl, "Victor@Example.ORG", MIME_RCPT_BCC));
    assert_false(mime_rcpt_has(rl, "victor@example.org",
                               MIME_RCPT_TO | MIME_RCPT_CC));
    mime_rcpt_list_free(&rl);
    assert_null(rl);

    struct tu_keys k;
    tu_keys_for(&k, MIME_ALG_AES_256_GCM, len, 32, "bcc");
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    unsigned char *enc;
    size_t enc_len;
    assert_int_equal(mime_encrypt_mem(orig, len, &p, k.keys, k.n, &enc,
                                      &enc_len, NULL), 0);
    assert_null(memmem(enc, tu_header_len(enc, enc_len), "victor", 6));
    assert_int_equal(mime_recipients_mem(enc, enc_len, &rl, NULL), 0);
    assert_int_equal(mime_rcpt_count(rl), 2);
    mime_rcpt_list_free(&rl);
    free(enc);
    free(orig);
    tu_keys_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_otp),
        cmocka_unit_test(test_corpus_aes),
        cmocka_unit_test(test_bcc_hidden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
