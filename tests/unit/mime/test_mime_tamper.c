/* Tamper and error tests: every single-bit flip of the control text and of
 * the ciphertext part of a small sample is detected; truncation, wrong,
 * missing, resized and duplicate keys, unsupported versions and garbage all
 * give their distinct errors, never a crash and never any plaintext. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "mime_test_util.h"

static const char sample[] =
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: the launch codes\r\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    "Message-ID: <tamper@example.org>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Meet at noon. Bring the documents.\r\n";

struct enc {
    unsigned char *msg;
    size_t len;
    struct tu_keys keys;
};

/* Format 2: bound to two recipients, so the flips cover Recipient lines */
static const char *const rcpts[] = {"bob@example.net", "J\xc3\xbcrgen@example.de"};

static void make(struct enc *e, enum mime_alg alg, size_t max_key)
{
    struct mime_encrypt_params p = tu_params(alg);
    p.fixed_boundary = "BOUNDARY";
    p.recipients = rcpts;
    p.n_recipients = 2;
    tu_keys_for(&e->keys, alg, strlen(sample), max_key, "t");
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, e->keys.keys,
                                      e->keys.n, &e->msg, &e->len, NULL), 0);
}

static void unmake(struct enc *e)
{
    free(e->msg);
    tu_keys_free(&e->keys);
}

/* Decrypts with e's keys; asserts no plaintext on failure. */
static int try_decrypt(const struct enc *e, const unsigned char *msg,
                       size_t len)
{
    struct mime_key_list kl = {e->keys.keys, e->keys.n};
    unsigned char *out = NULL;
    size_t out_len = 0;
    int rc = mime_decrypt_mem(msg, len, mime_key_list_lookup, &kl, &out,
                              &out_len, NULL, NULL);
    if (rc != 0) {
        assert_null(out);
    } else {
        assert_int_equal(out_len, strlen(sample));
        assert_memory_equal(out, sample, out_len);
        mime_plaintext_free(&out, out_len);
    }
    return rc;
}

/* [start, end) of the control text and of the base64 text. */
static void regions(const struct enc *e, size_t *cs, size_t *ce, size_t *ds,
                    size_t *de)
{
    const char *m = (const char *)e->msg;
    static const char mark[] = "(not the message itself)\r\n\r\n";
    const char *c = memmem(m, e->len, mark, sizeof(mark) - 1);
    assert_non_null(c);
    *cs = (size_t)(c - m) + sizeof(mark) - 1;
    const char *cend = memmem(m + *cs, e->len - *cs, "\r\n--BOUNDARY\r\n", 14);
    assert_non_null(cend);
    *ce = (size_t)(cend - m);
    const char *d = memmem(m, e->len, "base64\r\n\r\n", 10);
    assert_non_null(d);
    *ds = (size_t)(d - m) + 10;
    const char *dend = memmem(m + *ds, e->len - *ds, "--BOUNDARY--", 12);
    assert_non_null(dend);
    *de = (size_t)(dend - m);
}

static void flip_all(enum mime_alg alg, size_t max_key)
{
    struct enc e;
    make(&e, alg, max_key);
    assert_int_equal(try_decrypt(&e, e.msg, e.len), 0);
    size_t cs, ce, ds, de;
    regions(&e, &cs, &ce, &ds, &de);
    unsigned char *m = malloc(e.len);
    size_t flips = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t s = pass == 0 ? cs : ds, t = pass == 0 ? ce : de;
        for (size_t i = s; i < t; i++) {
            for (int b = 0; b < 8; b++) {
                memcpy(m, e.msg, e.len);
                m[i] ^= (unsigned char)(1u << b);
                int rc = try_decrypt(&e, m, e.len);
                if (rc == 0)
                    fail_msg("flip at %zu bit %d (%s) not detected", i, b,
                             pass == 0 ? "control" : "ciphertext");
                flips++;
            }
        }
    }
    assert_true(flips > 2000);
    free(m);
    unmake(&e);
}

static void test_flip_control_and_ciphertext_otp(void **s)
{
    (void)s;
    flip_all(MIME_ALG_OTP_POLY1305, 100); /* several keys */
}

/* The same with ETSI 004 chunks in the key list (Key-Chunks lines). */
static void test_flip_with_004_chunks(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_OTP_POLY1305, 100);
    /* re-encrypt with the keys after the first given as 004 chunks */
    struct mime_key *keys = calloc(e.keys.n, sizeof(*keys));
    memcpy(keys, e.keys.keys, e.keys.n * sizeof(*keys));
    for (size_t i = 1; i < e.keys.n; i++) {
        keys[i].ksid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        keys[i].index = 7 + i;
    }
    /* (the last key may be shorter: it then forms its own entry) */
    struct mime_encrypt_params p = tu_params(MIME_ALG_OTP_POLY1305);
    p.fixed_boundary = "BOUNDARY";
    p.recipients = rcpts;
    p.n_recipients = 2;
    free(e.msg);
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys,
                                      e.keys.n, &e.msg, &e.len, NULL), 0);
    assert_non_null(memmem(e.msg, e.len, "Key-Chunks: ", 12));
    memcpy(e.keys.keys, keys, e.keys.n * sizeof(*keys));
    free(keys);
    assert_int_equal(try_decrypt(&e, e.msg, e.len), 0);
    size_t cs, ce, ds, de;
    regions(&e, &cs, &ce, &ds, &de);
    unsigned char *m = malloc(e.len);
    for (size_t i = cs; i < ce; i++) {
        for (int b = 0; b < 8; b++) {
            memcpy(m, e.msg, e.len);
            m[i] ^= (unsigned char)(1u << b);
            if (try_decrypt(&e, m, e.len) == 0)
                fail_msg("flip at %zu bit %d not detected", i, b);
        }
    }
    free(m);
    unmake(&e);
}

static void test_flip_control_and_ciphertext_aes(void **s)
{
    (void)s;
    flip_all(MIME_ALG_AES_256_GCM, 32);
}

/* Flips in the decoded ciphertext and tag, re-encoded as valid base64:
 * exactly MIME_ERR_AUTH_FAILED. */
static void binary_flips(enum mime_alg alg)
{
    struct enc e;
    make(&e, alg, 64);
    size_t cs, ce, ds, de;
    regions(&e, &cs, &ce, &ds, &de);
    char *b64 = malloc(de - ds + 1);
    size_t n = 0;
    for (size_t i = ds; i < de; i++)
        if (e.msg[i] != '\r' && e.msg[i] != '\n')
            b64[n++] = (char)e.msg[i];
    assert_true(n >= 4);
    unsigned char *bin = malloc(n + 1);
    int blen = EVP_DecodeBlock(bin, (unsigned char *)b64, (int)n);
    blen -= n >= 2 ? (b64[n - 1] == '=') + (b64[n - 2] == '=') : 0;
    assert_int_equal(blen, (int)strlen(sample) + 16);
    char *re = malloc(n + 8);
    unsigned char *m = malloc(e.len + 64);
    for (int i = 0; i < blen; i++) {
        for (int b = 0; b < 8; b++) {
            bin[i] ^= (unsigned char)(1u << b);
            int rl = EVP_EncodeBlock((unsigned char *)re, bin, blen);
            bin[i] ^= (unsigned char)(1u << b);
            /* rebuild: prefix, one long base64 line, CRLF, suffix */
            size_t ml = 0;
            memcpy(m, e.msg, ds);
            ml = ds;
            memcpy(m + ml, re, (size_t)rl);
            ml += (size_t)rl;
            memcpy(m + ml, "\r\n", 2);
            ml += 2;
            memcpy(m + ml, e.msg + de, e.len - de);
            ml += e.len - de;
            assert_int_equal(try_decrypt(&e, m, ml), MIME_ERR_AUTH_FAILED);
        }
    }
    free(m);
    free(re);
    free(bin);
    free(b64);
    unmake(&e);
}

static void test_binary_flips_otp(void **s)
{
    (void)s;
    binary_flips(MIME_ALG_OTP_POLY1305);
}

static void test_binary_flips_aes(void **s)
{
    (void)s;
    binary_flips(MIME_ALG_AES_256_GCM);
}

/* Replaces the first occurrence of from with to (any lengths). */
static unsigned char *edit(const struct enc *e, const char *from,
                           const char *to, size_t *len_r)
{
    const unsigned char *at = memmem(e->msg, e->len, from, strlen(from));
    assert_non_null(at);
    size_t pre = (size_t)(at - e->msg), fl = strlen(from), tl = strlen(to);
    unsigned char *m = malloc(e->len - fl + tl);
    memcpy(m, e->msg, pre);
    memcpy(m + pre, to, tl);
    memcpy(m + pre + tl, at + fl, e->len - pre - fl);
    *len_r = e->len - fl + tl;
    return m;
}

static void expect_edit(const struct enc *e, const char *from, const char *to,
                        int want)
{
    size_t len = 0;
    unsigned char *m = edit(e, from, to, &len);
    assert_int_equal(try_decrypt(e, m, len), want);
    free(m);
}

static void test_control_edits(void **s)
{
    (void)s;
    struct enc e;
    make(&e, MIME_ALG_OTP_POLY1305, 40);
    /* authenticated identities */
    expect_edit(&e, "Source-KME-ID: KME_A", "Source-KME-ID: KME_B",
                MIME_ERR_AUTH_FAILED);
    expect_edit(&e, "Slave-SAE-ID: SAE_BOB", "Slave-SAE-ID: SAE_EVE",
                MIME_ERR_AUTH_FAILED);
    /* key order swapped (both keys 40 octets) */
    {
        size_t l1, l2;
        unsigned char *m1 = edit(&e, "Key: t-0 320", "Key: t-X 320", &l1);
        struct enc tmp = e;
        tmp.msg = m1;
        tmp.len = l1;
        unsigned char *m2 = edit(&tmp, "Key: t-1 320", "Key: t-0 320", &l2);
        tmp.msg = m2;
        tmp.len = l2;
        unsigned char *m3 = edit(&tmp, "Key: t-X 320", "Key: t-1 320", &l1);
        assert_int_equal(try_decrypt(&e, m3, l1), MIME_ERR_AUTH_FAILED);
        free(m1);
        free(m2);
        free(m3);
    }
    expect_edit(&e, "Key: t-1 320", "Key: t-0 320", MIME_ERR_KEY_DUPLICATE);
    /* (a leading CRLF skips the outer X-QKD-* look-alikes) */
    expect_edit(&e, "\nVersion: 2", "\nVersion: 3",
                MIME_ERR_UNSUPPORTED_VERSION);
    /* version 1 (its OTP tag did not bind the pad) is not read */
    expect_edit(&e, "\nVersion: 2", "\nVersion: 1",
                MIME_ERR_UNSUPPORTED_VERSION);
    expect_edit(&e, "\nAlgorithm: OTP-POLY1305", "\nAlgorithm: ML-KEM-768",
                MIME_ERR_UNSUPPORTED_ALGORITHM);
    expect_edit(&e, "\nKey-Count: ", "\nKey-Count: 0", MIME_ERR_MALFORMED);
    expect_edit(&e, "\nLength: ", "\nLength: 0", MIME_ERR_MALFORMED);
    expect_edit(&e, "\nVersion: 2", "\nversion: 2", MIME_ERR_MALFORMED);
    expect_edit(&e, "\nVersion: 2\r\n", "\nVersion: 2\r\nExtra: x\r\n",
                MIME_ERR_MALFORMED);
    expect_edit(&e, "--BOUNDARY--", "--BOUNDARY", MIME_ERR_MALFORMED);
    expect_edit(&e, "protocol=\"application/x-qkd-encrypted\"",
                "protocol=\"application/pgp-encrypted\"",
                MIME_ERR_NOT_ENCRYPTED);
    expect_edit(&e, "Content-Transfer-Encoding: base64",
                "Content-Transfer-Encoding: 7bit", MIME_ERR_MALFORMED);
    /* Outer X-QKD headers are not the authority: editing them is harmless */
    expect_edit(&e, "X-QKD-Key-ID: t-0", "X-QKD-Key-ID: other", 0);
    unmake(&e);
}

static void test_truncation(void **s)
{
    (void)s;
    for (int a = 0; a < 2; a++) {
        struct enc e;
        make(&e, a ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305, 32);
        /* Every prefix except the complete message (and the complete
         * message minus its final line break, which is still whole). */
        for (size_t cut = 0; cut + 2 < e.len; cut++) {
            int rc = try_decrypt(&e, e.msg, cut);
            if (rc == 0)
                fail_msg("truncation at %zu of %zu accepted", cut, e.len);
        }
        unmake(&e);
    }
}

static int lookup_wrong(void *ctx, const char *id, const unsigned char **k,
                        size_t *l)
{
    int rc = mime_key_list_lookup(ctx, id, k, l);
    static unsigned char other[4096];
    if (rc == 0 && *l <= sizeof(other)) {
        memcpy(other, *k, *l);
        other[*l / 2] ^= 0x80;
        *k = other;
    }
    return rc;
}

static void test_keys_on_decrypt(void **s)
{
    (void)s;
    struct enc e;
    make(&e, MIME_ALG_OTP_POLY1305, 50);
    struct mime_key_list kl = {e.keys.keys, e.keys.n};
    unsigned char *out = NULL;
    size_t out_len;
    char *err = NULL;
    struct mime_info *info = NULL;
    /* wrong key bytes */
    assert_int_equal(mime_decrypt_mem(e.msg, e.len, lookup_wrong, &kl, &out,
                                      &out_len, &info, &err),
                     MIME_ERR_AUTH_FAILED);
    assert_null(out);
    assert_non_null(info); /* control data still reported */
    mime_info_free(&info);
    free(err);
    err = NULL;
    /* one key missing */
    kl.n_keys = e.keys.n - 1;
    assert_int_equal(mime_decrypt_mem(e.msg, e.len, mime_key_list_lookup, &kl,
                                      &out, &out_len, NULL, &err),
                     MIME_ERR_KEY_MISSING);
    assert_non_null(strstr(err, e.keys.ids[e.keys.n - 1]));
    free(err);
    err = NULL;
    /* a key of the wrong size */
    struct mime_key *copy = calloc(e.keys.n, sizeof(*copy));
    memcpy(copy, e.keys.keys, e.keys.n * sizeof(*copy));
    copy[0].key_len--;
    kl = (struct mime_key_list){copy, e.keys.n};
    assert_int_equal(mime_decrypt_mem(e.msg, e.len, mime_key_list_lookup, &kl,
                                      &out, &out_len, NULL, NULL),
                     MIME_ERR_KEY_WRONG_SIZE);
    /* no keys at all */
    assert_int_equal(mime_decrypt_mem(e.msg, e.len, mime_key_list_lookup, NULL,
                                      &out, &out_len, NULL, NULL),
                     MIME_ERR_KEY_MISSING);
    assert_null(out);
    free(copy);
    unmake(&e);
}

static void test_garbage(void **s)
{
    (void)s;
    struct enc e;
    make(&e, MIME_ALG_AES_256_GCM, 32);
    unsigned char buf[4096];
    for (int i = 0; i < 200; i++) {
        char seed[16];
        snprintf(seed, sizeof(seed), "g%d", i);
        size_t n = (size_t)(i * 19) % sizeof(buf);
        tu_fill(buf, n, seed);
        assert_int_not_equal(try_decrypt(&e, buf, n), 0);
        struct mime_info *info = NULL;
        assert_int_not_equal(mime_inspect_mem(buf, n, &info, NULL), 0);
        assert_null(info);
    }
    assert_int_equal(try_decrypt(&e, (const unsigned char *)"", 0),
                     MIME_ERR_NOT_ENCRYPTED);
    assert_int_equal(try_decrypt(&e, (const unsigned char *)sample,
                                 strlen(sample)),
                     MIME_ERR_NOT_ENCRYPTED);
    /* the encrypted message with its body replaced by garbage */
    size_t hl = tu_header_len(e.msg, e.len) + 2; /* with the empty line */
    memcpy(buf, e.msg, hl);
    tu_fill(buf + hl, 1000, "body");
    assert_int_equal(try_decrypt(&e, buf, hl + 1000), MIME_ERR_MALFORMED);
    unmake(&e);
}

/* fd decryption with a spill file: a tag failure at the very end of a
 * 3 MB message writes nothing at all. */
static void test_no_partial_output(void **s)
{
    (void)s;
    size_t len = (size_t)3 * 1024 * 1024;
    unsigned char *big = malloc(len);
    memcpy(big, "Subject: big\r\n\r\n", 16);
    tu_fill(big + 16, len - 16, "big");
    for (int a = 0; a < 2; a++) {
        enum mime_alg alg = a ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305;
        struct tu_keys k;
        tu_keys_for(&k, alg, len, 1u << 20, "big");
        struct mime_encrypt_params p = tu_params(alg);
        p.fixed_boundary = "BOUNDARY";
        unsigned char *enc;
        size_t enc_len;
        assert_int_equal(mime_encrypt_mem(big, len, &p, k.keys, k.n, &enc,
                                          &enc_len, NULL), 0);
        /* flip a character in the last base64 line */
        unsigned char *end = memmem(enc, enc_len, "--BOUNDARY--", 12);
        end[-6] = end[-6] == 'A' ? 'B' : 'A';
        int in = memfd_create("in", MFD_CLOEXEC);
        int out = memfd_create("out", MFD_CLOEXEC);
        assert_int_equal(write(in, enc, enc_len), (ssize_t)enc_len);
        assert_int_equal(lseek(in, 0, SEEK_SET), 0);
        struct mime_key_list kl = {k.keys, k.n};
        /* 64 KiB: two passes over the memfd; default (4 MiB): the decoded
         * ciphertext is kept in memory. Neither writes anything. */
        size_t thresholds[] = {(size_t)64 * 1024, 0};
        for (int t = 0; t < 2; t++) {
            struct mime_decrypt_params dp = {NULL, thresholds[t]};
            assert_int_equal(lseek(in, 0, SEEK_SET), 0);
            assert_int_equal(mime_decrypt_fd(in, out, &dp,
                                             mime_key_list_lookup, &kl, NULL,
                                             NULL),
                             MIME_ERR_AUTH_FAILED);
            assert_int_equal(lseek(out, 0, SEEK_END), 0);
        }
        close(in);
        close(out);
        free(enc);
        tu_keys_free(&k);
    }
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flip_control_and_ciphertext_otp),
        cmocka_unit_test(test_flip_control_and_ciphertext_aes),
        cmocka_unit_test(test_flip_with_004_chunks),
        cmocka_unit_test(test_binary_flips_otp),
        cmocka_unit_test(test_binary_flips_aes),
        cmocka_unit_test(test_control_edits),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_keys_on_decrypt),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_no_partial_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
