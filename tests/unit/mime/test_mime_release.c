/* mime: how decryption releases plaintext to an output fd, per kind of
 * output - private file (memfd: decrypted in the verifying pass, taken back
 * on failure), named regular file (second pass or spill; taken back if that
 * pass fails; from a pipe: the spill), pipe (nothing written on
 * failure) - and that a failure
 * leaves every kind of output exactly as it was. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "mime_test_util.h"

#define MSG_LEN ((size_t)3 << 20) /* above the 64 KiB threshold below */

struct sample {
    unsigned char *plain, *enc, *bad;
    size_t enc_len;
    struct tu_keys keys;
};

static void sample_make(struct sample *s, enum mime_alg alg)
{
    s->plain = malloc(MSG_LEN);
    assert_non_null(s->plain);
    memcpy(s->plain, "Subject: release\r\n\r\n", 20);
    tu_fill(s->plain + 20, MSG_LEN - 20, "release");
    tu_keys_for(&s->keys, alg, MSG_LEN, 1u << 20, "release");
    struct mime_encrypt_params p = tu_params(alg);
    p.fixed_boundary = "BOUNDARY";
    /* a failing cmocka assertion does not return (longjmp): nothing leaks */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    assert_int_equal(mime_encrypt_mem(s->plain, MSG_LEN, &p, s->keys.keys,
                                      s->keys.n, &s->enc, &s->enc_len, NULL),
                     0);
    /* the same message with one base64 character of the last line changed */
    s->bad = malloc(s->enc_len);
    assert_non_null(s->bad);
    memcpy(s->bad, s->enc, s->enc_len);
    unsigned char *end = memmem(s->bad, s->enc_len, "--BOUNDARY--", 12);
    assert_non_null(end);
    end[-6] = end[-6] == 'A' ? 'B' : 'A';
}

static void sample_free(struct sample *s)
{
    free(s->plain);
    free(s->enc);
    free(s->bad);
    tu_keys_free(&s->keys);
}

static int mem_in(const unsigned char *data, size_t len)
{
    int fd = memfd_create("in", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* A regular file with a name (st_nlink 1), removed at close. */
static int named_file(char *path, size_t cap)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, cap, "%s/mime-release-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    return fd;
}

static int decrypt(const struct sample *s, const unsigned char *msg, int out,
                   size_t threshold)
{
    int in = mem_in(msg, s->enc_len);
    struct mime_key_list kl = {s->keys.keys, s->keys.n};
    struct mime_decrypt_params dp = {NULL, threshold};
    int rc = mime_decrypt_fd(in, out, &dp, mime_key_list_lookup, &kl, NULL,
                             NULL);
    close(in);
    return rc;
}

/* out holds prefix followed by the plaintext (or nothing), offset at end. */
static void check_out(int out, const char *prefix, const struct sample *s,
                      int with_plain)
{
    size_t pl = strlen(prefix);
    size_t want = pl + (with_plain ? MSG_LEN : 0);
    struct stat st;
    assert_int_equal(fstat(out, &st), 0);
    assert_int_equal((size_t)st.st_size, want);
    assert_int_equal(lseek(out, 0, SEEK_CUR), (off_t)want);
    unsigned char *got = malloc(want + 1);
    assert_non_null(got);
    assert_int_equal(pread(out, got, want, 0), (ssize_t)want);
    assert_memory_equal(got, prefix, pl);
    if (with_plain)
        assert_memory_equal(got + pl, s->plain, MSG_LEN);
    free(got);
}

static void run_regular(int out, const char *prefix, const struct sample *s,
                        size_t threshold)
{
    size_t pl = strlen(prefix);
    assert_int_equal(ftruncate(out, 0), 0);
    assert_int_equal(pwrite(out, prefix, pl, 0), (ssize_t)pl);
    assert_int_equal(lseek(out, (off_t)pl, SEEK_SET), (off_t)pl);
    assert_int_equal(decrypt(s, s->bad, out, threshold), MIME_ERR_AUTH_FAILED);
    check_out(out, prefix, s, 0);
    assert_int_equal(decrypt(s, s->enc, out, threshold), MIME_OK);
    check_out(out, prefix, s, 1);
}

static void test_outputs(enum mime_alg alg)
{
    struct sample s;
    sample_make(&s, alg);
    /* 64 KiB threshold: a named file gets the second pass; 0 (4 MiB): it
     * gets the in-memory spill. A memfd takes the one-pass path either
     * way. Each with and without octets already in the file. */
    size_t thresholds[] = {(size_t)64 * 1024, 0};
    const char *prefixes[] = {"", "kept\r\n"};
    for (int t = 0; t < 2; t++) {
        for (int p = 0; p < 2; p++) {
            int mfd = memfd_create("out", MFD_CLOEXEC);
            assert_true(mfd >= 0);
            run_regular(mfd, prefixes[p], &s, thresholds[t]);
            close(mfd);
            char path[4096];
            int nfd = named_file(path, sizeof(path));
            run_regular(nfd, prefixes[p], &s, thresholds[t]);
            close(nfd);
            unlink(path);
        }
    }
    /* A pipe: nothing at all written on failure. */
    int pp[2];
    assert_int_equal(pipe2(pp, O_NONBLOCK), 0);
    assert_int_equal(decrypt(&s, s.bad, pp[1], (size_t)64 * 1024),
                     MIME_ERR_AUTH_FAILED);
    char c;
    assert_int_equal(read(pp[0], &c, 1), -1);
    assert_int_equal(errno, EAGAIN);
    close(pp[0]);
    close(pp[1]);
    sample_free(&s);
}

static void test_outputs_otp(void **st)
{
    (void)st;
    test_outputs(MIME_ALG_OTP_POLY1305);
}

static void test_outputs_aes(void **st)
{
    (void)st;
    test_outputs(MIME_ALG_AES_256_GCM);
}

struct feeder {
    int fd;
    const unsigned char *data;
    size_t len;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    for (size_t off = 0; off < f->len;) {
        ssize_t n = write(f->fd, f->data + off, f->len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    close(f->fd);
    return NULL;
}

/* From a pipe to a named file: the ciphertext is spilled to a temporary
 * file (threshold 64 KiB) and released from there after the check. */
static int decrypt_piped(const struct sample *s, const unsigned char *msg,
                         int out)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct feeder f = {p[1], msg, s->enc_len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feed, &f), 0);
    struct mime_key_list kl = {s->keys.keys, s->keys.n};
    struct mime_decrypt_params dp = {NULL, (size_t)64 * 1024};
    int rc = mime_decrypt_fd(p[0], out, &dp, mime_key_list_lookup, &kl, NULL,
                             NULL);
    char sink[4096];
    while (read(p[0], sink, sizeof(sink)) > 0)
        ;
    pthread_join(t, NULL);
    close(p[0]);
    return rc;
}

static void test_pipe_to_named_file(void **st)
{
    (void)st;
    for (int a = 0; a < 2; a++) {
        struct sample s;
        sample_make(&s, a ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305);
        char path[4096];
        int out = named_file(path, sizeof(path));
        assert_int_equal(decrypt_piped(&s, s.bad, out), MIME_ERR_AUTH_FAILED);
        check_out(out, "", &s, 0);
        assert_int_equal(decrypt_piped(&s, s.enc, out), MIME_OK);
        check_out(out, "", &s, 1);
        close(out);
        unlink(path);
        sample_free(&s);
    }
}

/* A memfd output whose offset is not at its end is not treated as a fresh
 * private output: the decryption still verifies before writing. */
static void test_offset_inside(void **st)
{
    (void)st;
    struct sample s;
    sample_make(&s, MIME_ALG_AES_256_GCM);
    int out = memfd_create("out", MFD_CLOEXEC);
    assert_int_equal(write(out, "0123456789", 10), 10);
    assert_int_equal(lseek(out, 4, SEEK_SET), 4);
    assert_int_equal(decrypt(&s, s.bad, out, (size_t)64 * 1024),
                     MIME_ERR_AUTH_FAILED);
    char buf[11] = {0};
    assert_int_equal(pread(out, buf, 10, 0), 10);
    assert_string_equal(buf, "0123456789");
    assert_int_equal(lseek(out, 0, SEEK_CUR), 4);
    close(out);
    sample_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outputs_otp),
        cmocka_unit_test(test_outputs_aes),
        cmocka_unit_test(test_offset_inside),
        cmocka_unit_test(test_pipe_to_named_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
