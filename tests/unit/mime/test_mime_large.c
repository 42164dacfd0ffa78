/* A 50 MB message round trip through the fd API at both algorithms, with
 * the peak resident set checked: encryption and decryption stream, so the
 * growth must stay far below one copy of the message (AES) and below the
 * key plus a small working set (OTP, whose key is as large as the message
 * and is held by the caller). */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "mime_test_util.h"

#define MSG_SIZE ((size_t)50 * 1000 * 1000)
#define MB (1024.0 * 1024.0)

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int tmp_fd(void)
{
    const char *dir = getenv("TMPDIR");
    int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR, 0600);
    assert_true(fd >= 0);
    return fd;
}

/* Writes a realistic 50 MB message: headers and a base64 attachment. */
static int make_message(unsigned char digest[32])
{
    int fd = tmp_fd();
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    const char *head =
        "From: Big <big@example.org>\r\nTo: r@example.net\r\n"
        "Subject: 50 MB\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n";
    size_t off = 0, hl = strlen(head);
    unsigned char *buf = malloc(1u << 20);
    memcpy(buf, head, hl);
    size_t fill = hl;
    unsigned char raw[57];
    uint64_t ctr = 0;
    while (off < MSG_SIZE) {
        while (fill + 78 <= (1u << 20) && off + fill + 78 <= MSG_SIZE) {
            memcpy(raw, &ctr, sizeof(ctr));
            ctr++;
            memset(raw + 8, (int)(ctr & 0xff), sizeof(raw) - 8);
            EVP_EncodeBlock(buf + fill, raw, sizeof(raw));
            memcpy(buf + fill + 76, "\r\n", 2);
            fill += 78;
        }
        if (fill == 0 || off + fill + 78 > MSG_SIZE) {
            while (off + fill < MSG_SIZE) {
                buf[fill] = off + fill + 1 >= MSG_SIZE ? '\n' : 'A';
                fill++;
            }
        }
        assert_int_equal(write(fd, buf, fill), (ssize_t)fill);
        EVP_DigestUpdate(md, buf, fill);
        off += fill;
        fill = 0;
    }
    EVP_DigestFinal_ex(md, digest, NULL);
    EVP_MD_CTX_free(md);
    free(buf);
    return fd;
}

static void digest_fd(int fd, unsigned char digest[32], off_t *size_r)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    unsigned char *buf = malloc(1u << 20);
    off_t off = 0;
    ssize_t n;
    while ((n = pread(fd, buf, 1u << 20, off)) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += n;
    }
    EVP_DigestFinal_ex(md, digest, NULL);
    EVP_MD_CTX_free(md);
    free(buf);
    *size_r = off;
}

/* Copies a file into a pipe from a thread. */
struct feeder {
    int from, to;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    char *buf = malloc(1u << 16);
    off_t off = 0;
    ssize_t n;
    while ((n = pread(f->from, buf, 1u << 16, off)) > 0) {
        if (write(f->to, buf, (size_t)n) != n)
            break;
        off += n;
    }
    free(buf);
    close(f->to);
    return NULL;
}

static void roundtrip(enum mime_alg alg, int via_pipe, double limit_mb)
{
    unsigned char want[32], got[32];
    int in = make_message(want);
    struct tu_keys k;
    tu_keys_for(&k, alg, MSG_SIZE, 8u << 20, "large");
    long before = maxrss_kb();

    int enc = tmp_fd();
    struct mime_encrypt_params p = tu_params(alg);
    uint64_t enc_size = 0;
    char *err = NULL;
    int rc = mime_encrypt_fd(in, enc, &p, k.keys, k.n, &enc_size, &err);
    if (rc != 0)
        fail_msg("encrypt: %s (%s)", mime_strerror(rc), err);
    assert_true(enc_size > MSG_SIZE * 4ull / 3);

    assert_int_equal(lseek(enc, 0, SEEK_SET), 0);
    int dec = tmp_fd();
    struct mime_key_list kl = {k.keys, k.n};
    if (via_pipe) {
        /* Non-seekable input: one pass, ciphertext spilled to a file. */
        int pp[2];
        assert_int_equal(pipe(pp), 0);
        struct feeder f = {enc, pp[1]};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, feed, &f), 0);
        rc = mime_decrypt_fd(pp[0], dec, NULL, mime_key_list_lookup, &kl, NULL,
                             &err);
        char sink[512];
        while (read(pp[0], sink, sizeof(sink)) > 0)
            ;
        pthread_join(t, NULL);
        close(pp[0]);
    } else {
        /* Seekable input: verify pass, then a second decrypting pass. */
        rc = mime_decrypt_fd(enc, dec, NULL, mime_key_list_lookup, &kl, NULL,
                             &err);
    }
    if (rc != 0)
        fail_msg("decrypt: %s (%s)", mime_strerror(rc), err);
    long after = maxrss_kb();
    off_t size;
    digest_fd(dec, got, &size);
    assert_int_equal(size, MSG_SIZE);
    assert_memory_equal(got, want, 32);
    double grew = (double)(after - before) / 1024.0;
    print_message("%s%s: 50 MB round trip, peak RSS grew %.1f MiB (limit %.0f)\n",
                  mime_alg_name(alg), via_pipe ? " via pipe + spill" : "",
                  grew, limit_mb);
    assert_true(grew < limit_mb);
    close(in);
    close(enc);
    close(dec);
    tu_keys_free(&k);
}

/* Limits: far below one 50 MB copy - a few MiB of buffers, plus the
 * 4 MiB in-memory spill on the pipe path, plus sanitizer slack. For OTP the
 * 50 MB key is the caller's and was allocated before the baseline. */
static void test_large_aes(void **s)
{
    (void)s;
    roundtrip(MIME_ALG_AES_256_GCM, 0, 16.0);
}

static void test_large_otp(void **s)
{
    (void)s;
    roundtrip(MIME_ALG_OTP_POLY1305, 0, 16.0);
}

static void test_large_aes_pipe(void **s)
{
    (void)s;
    roundtrip(MIME_ALG_AES_256_GCM, 1, 24.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_aes),
        cmocka_unit_test(test_large_otp),
        cmocka_unit_test(test_large_aes_pipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
