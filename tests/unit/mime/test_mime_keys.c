/* Wrong key octets anywhere in the key stream are caught by the tag: for
 * OTP-POLY1305 (several keys) and AES-256-GCM, a changed octet in the
 * first, a middle and the last key - at its first, middle and last octet,
 * as a one-bit change and as a whole different octet - and a wholly
 * different key give MIME_ERR_AUTH_FAILED and no output, through every
 * kind of input (memory, memfd, named regular file, pipe) and output
 * (memory, memfd, O_TMPFILE, named regular file, pipe), with the default
 * spill threshold and with a tiny one (second pass / spill file). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "mime_test_util.h"

static const char sample[] =
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: key positions\r\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    "Message-ID: <keys@example.org>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Every key bit the message consumes is bound by the tag. This line\r\n"
    "makes the message long enough for several 64-octet keys.\r\n";

enum in_kind { IN_MEMFD, IN_NAMED, IN_PIPE, IN_KINDS };
enum out_kind { OUT_MEMFD, OUT_TMPFILE, OUT_NAMED, OUT_PIPE, OUT_KINDS };
static const char *const in_names[] = {"memfd", "named file", "pipe"};
static const char *const out_names[] = {"memfd", "O_TMPFILE", "named file",
                                        "pipe"};

static const char *tmpdir(void)
{
    const char *d = getenv("TMPDIR");
    return d != NULL && *d != '\0' ? d : "/tmp";
}

static int make_input(enum in_kind kind, const unsigned char *m, size_t len,
                      char *path, size_t cap)
{
    int fd = -1;
    path[0] = '\0';
    if (kind == IN_PIPE) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        assert_true(len < 65536); /* fits the pipe buffer: no feeder */
        assert_int_equal(write(p[1], m, len), (ssize_t)len);
        close(p[1]);
        return p[0];
    }
    if (kind == IN_MEMFD) {
        fd = memfd_create("in", MFD_CLOEXEC);
    } else {
        snprintf(path, cap, "%s/mime-keys-in-XXXXXX", tmpdir());
        fd = mkstemp(path);
    }
    assert_true(fd >= 0);
    assert_int_equal(write(fd, m, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* Returns the output fd; for a pipe, *peer_r is the read end. */
static int make_output(enum out_kind kind, char *path, size_t cap,
                       int *peer_r)
{
    int fd = -1;
    path[0] = '\0';
    *peer_r = -1;
    switch (kind) {
    case OUT_MEMFD: fd = memfd_create("out", MFD_CLOEXEC); break;
    case OUT_TMPFILE:
        fd = open(tmpdir(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        break;
    case OUT_NAMED:
        snprintf(path, cap, "%s/mime-keys-out-XXXXXX", tmpdir());
        fd = mkstemp(path);
        break;
    case OUT_PIPE: {
        int p[2];
        assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
        *peer_r = p[0];
        fd = p[1];
        break;
    }
    default: break;
    }
    assert_true(fd >= 0);
    return fd;
}

/* The output holds exactly want (want NULL: nothing at all). */
static void check_output(enum out_kind kind, int fd, int peer,
                         const char *want, const char *what)
{
    size_t wl = want != NULL ? strlen(want) : 0;
    char *got = malloc(wl + 2);
    assert_non_null(got);
    ssize_t n;
    if (kind == OUT_PIPE) {
        n = read(peer, got, wl + 1);
        if (n < 0 && errno == EAGAIN)
            n = 0;
    } else {
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        if ((size_t)st.st_size != wl)
            fail_msg("%s: output has %lld octets, want %zu", what,
                     (long long)st.st_size, wl);
        n = pread(fd, got, wl + 1, 0);
    }
    if (n != (ssize_t)wl || (wl > 0 && memcmp(got, want, wl) != 0))
        fail_msg("%s: output differs (%zd octets)", what, n);
    free(got);
}

struct setup {
    enum mime_alg alg;
    unsigned char *enc;
    size_t enc_len;
    struct tu_keys keys;
};

static void setup_make(struct setup *s, enum mime_alg alg, size_t max_key)
{
    struct mime_encrypt_params p = tu_params(alg);
    s->alg = alg;
    tu_keys_for(&s->keys, alg, strlen(sample), max_key, "kp");
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, s->keys.keys,
                                      s->keys.n, &s->enc, &s->enc_len, NULL),
                     0);
}

/* Decrypts s->enc with keys through every path; every one must give
 * want_rc, and exactly the plaintext (want_rc 0) or no output at all. */
static void through_every_path(const struct setup *s,
                               const struct mime_key *keys, int want_rc,
                               const char *what)
{
    struct mime_key_list kl = {keys, s->keys.n};
    const char *want_out = want_rc == 0 ? sample : NULL;
    char label[256];

    unsigned char *out = NULL;
    size_t out_len = 0;
    int rc = mime_decrypt_mem(s->enc, s->enc_len, mime_key_list_lookup, &kl,
                              &out, &out_len, NULL, NULL);
    if (rc != want_rc)
        fail_msg("%s, memory: %s, want %s", what, mime_strerror(rc),
                 mime_strerror(want_rc));
    if (want_rc == 0) {
        assert_int_equal(out_len, strlen(sample));
        assert_memory_equal(out, sample, out_len);
        mime_plaintext_free(&out, out_len);
    } else {
        assert_null(out);
    }

    size_t thresholds[] = {0, 64};
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < IN_KINDS; i++) {
            for (int o = 0; o < OUT_KINDS; o++) {
                char inpath[4096], outpath[4096];
                int peer;
                int in = make_input((enum in_kind)i, s->enc, s->enc_len,
                                    inpath, sizeof(inpath));
                int of = make_output((enum out_kind)o, outpath,
                                     sizeof(outpath), &peer);
                struct mime_decrypt_params dp = {NULL, thresholds[t]};
                rc = mime_decrypt_fd(in, of, &dp, mime_key_list_lookup, &kl,
                                     NULL, NULL);
                snprintf(label, sizeof(label), "%s, %s -> %s, threshold %zu",
                         what, in_names[i], out_names[o], thresholds[t]);
                if (rc != want_rc)
                    fail_msg("%s: %s, want %s", label, mime_strerror(rc),
                             mime_strerror(want_rc));
                check_output((enum out_kind)o, of, peer, want_out, label);
                close(in);
                close(of);
                if (peer >= 0)
                    close(peer);
                if (inpath[0] != '\0')
                    unlink(inpath);
                if (outpath[0] != '\0')
                    unlink(outpath);
            }
        }
    }
}

/* One wrong octet (xor mask) at offset off of key k. */
static void wrong_octet(const struct setup *s, size_t k, size_t off,
                        unsigned char mask)
{
    unsigned char *pool = malloc(s->keys.pool_len);
    struct mime_key *keys = calloc(s->keys.n, sizeof(*keys));
    assert_non_null(pool);
    assert_non_null(keys);
    memcpy(pool, s->keys.pool, s->keys.pool_len);
    for (size_t i = 0; i < s->keys.n; i++) {
        keys[i] = s->keys.keys[i];
        keys[i].key = pool + (s->keys.keys[i].key - s->keys.pool);
    }
    unsigned char *octet = pool + (keys[k].key - pool) + off;
    *octet ^= mask;
    char what[128];
    snprintf(what, sizeof(what), "%s key %zu of %zu, octet %zu, mask %02x",
             mime_alg_name(s->alg), k, s->keys.n, off, mask);
    through_every_path(s, keys, MIME_ERR_AUTH_FAILED, what);
    free(keys);
    free(pool);
}

/* Key k replaced by other octets of the same size and key_ID. */
static void wrong_key(const struct setup *s, size_t k)
{
    struct mime_key *keys = calloc(s->keys.n, sizeof(*keys));
    assert_non_null(keys);
    memcpy(keys, s->keys.keys, s->keys.n * sizeof(*keys));
    unsigned char *other = malloc(keys[k].key_len);
    assert_non_null(other);
    tu_fill(other, keys[k].key_len, "another key");
    keys[k].key = other;
    char what[128];
    snprintf(what, sizeof(what), "%s key %zu of %zu wholly different",
             mime_alg_name(s->alg), k, s->keys.n);
    through_every_path(s, keys, MIME_ERR_AUTH_FAILED, what);
    free(other);
    free(keys);
}

static void every_position(enum mime_alg alg, size_t max_key)
{
    struct setup s;
    setup_make(&s, alg, max_key);
    /* the right keys work through every path (the test can fail) */
    through_every_path(&s, s.keys.keys, 0, "right keys");
    size_t which[3] = {0, s.keys.n / 2, s.keys.n - 1};
    for (int w = 0; w < 3; w++) {
        size_t k = which[w], len = s.keys.keys[k].key_len;
        size_t offs[3] = {0, len / 2, len - 1};
        for (int o = 0; o < 3; o++) {
            wrong_octet(&s, k, offs[o], 0x01); /* one bit */
            wrong_octet(&s, k, offs[o], 0xa5); /* another octet */
        }
        wrong_key(&s, k);
    }
    free(s.enc);
    tu_keys_free(&s.keys);
}

static void test_otp_every_key_position(void **st)
{
    (void)st;
    /* 64-octet keys: the first holds the Poly1305 key and 32 pad octets */
    every_position(MIME_ALG_OTP_POLY1305, 64);
}

static void test_aes_every_key_position(void **st)
{
    (void)st;
    every_position(MIME_ALG_AES_256_GCM, 32);
}

/* 1 for the 22 bits of r that Poly1305 clamps to zero (RFC 8439 2.5):
 * they enter neither the tag nor the plaintext. */
static int clamped(size_t bit)
{
    size_t octet = bit / 8, b = bit % 8;
    if (octet >= 16)
        return 0;
    if (octet % 4 == 3 && b >= 4)
        return 1;
    return octet % 4 == 0 && octet > 0 && b < 2;
}

/* The first key's Poly1305 part, r (octets 0-15) and s (16-31), bit by
 * bit: every bit that enters the computation is bound by the tag; a
 * clamped bit of r changes nothing at all (the right plaintext comes
 * out), so no wrong octet can ever be released. */
static void test_otp_every_mac_key_bit(void **st)
{
    (void)st;
    struct setup s;
    setup_make(&s, MIME_ALG_OTP_POLY1305, 64);
    struct mime_key_list kl;
    unsigned char *pool = malloc(s.keys.pool_len);
    struct mime_key *keys = calloc(s.keys.n, sizeof(*keys));
    for (size_t bit = 0; bit < 256; bit++) {
        memcpy(pool, s.keys.pool, s.keys.pool_len);
        for (size_t i = 0; i < s.keys.n; i++) {
            keys[i] = s.keys.keys[i];
            keys[i].key = pool + (s.keys.keys[i].key - s.keys.pool);
        }
        pool[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        kl = (struct mime_key_list){keys, s.keys.n};
        unsigned char *out = NULL;
        size_t out_len = 0;
        int rc = mime_decrypt_mem(s.enc, s.enc_len, mime_key_list_lookup, &kl,
                                  &out, &out_len, NULL, NULL);
        if (clamped(bit)) {
            if (rc != 0)
                fail_msg("clamped bit %zu: %s", bit, mime_strerror(rc));
            assert_int_equal(out_len, strlen(sample));
            assert_memory_equal(out, sample, out_len);
            mime_plaintext_free(&out, out_len);
            continue;
        }
        if (rc != MIME_ERR_AUTH_FAILED)
            fail_msg("MAC key bit %zu: %s", bit, mime_strerror(rc));
        assert_null(out);
    }
    free(keys);
    free(pool);
    free(s.enc);
    tu_keys_free(&s.keys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_otp_every_key_position),
        cmocka_unit_test(test_aes_every_key_position),
        cmocka_unit_test(test_otp_every_mac_key_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
