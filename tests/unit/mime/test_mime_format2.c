/* Format 2 as FORMAT-SPEC.md settles it: what readers accept in the outer
 * Content-Type (2.6), the multipart structure (2.7) and part headers (2.8);
 * the control text rules (3.2-3.5) and which error wins (5); recipient
 * binding, ETSI 004 chunks and the lookup names; mime_escape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "mime_test_util.h"

static const char sample[] =
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: format two\r\n"
    "\r\n"
    "Every rule of the spec, one by one.\r\n";

struct enc {
    unsigned char *msg;
    size_t len;
    struct tu_keys keys;
};

static void make(struct enc *e, enum mime_alg alg, const char *boundary)
{
    struct mime_encrypt_params p = tu_params(alg);
    static const char *const rcpts[] = {"Bob@Example.NET"};
    p.fixed_boundary = boundary;
    p.recipients = rcpts;
    p.n_recipients = 1;
    tu_keys_for(&e->keys, alg, strlen(sample), 40, "f2");
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, e->keys.keys,
                                      e->keys.n, &e->msg, &e->len, NULL), 0);
}

static void unmake(struct enc *e)
{
    free(e->msg);
    tu_keys_free(&e->keys);
}

/* A copy of m with every occurrence of from replaced by to. */
static unsigned char *subst(const unsigned char *m, size_t len,
                            const char *from, const char *to, size_t *len_r)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    unsigned char *out = malloc(len * 2 + 4096);
    int found = 0;
    for (size_t i = 0; i < len;) {
        if (i + fl <= len && memcmp(m + i, from, fl) == 0) {
            memcpy(out + n, to, tl);
            n += tl;
            i += fl;
            found = 1;
        } else {
            out[n++] = m[i++];
        }
    }
    if (!found)
        fail_msg("\"%s\" not in the message", from);
    *len_r = n;
    return out;
}

static int lookups;

static int counting_lookup(void *ctx, const char *name,
                           const unsigned char **k, size_t *l)
{
    lookups++;
    return mime_key_list_lookup(ctx, name, k, l);
}

/* Decrypts m; on success the plaintext must be the sample. */
static int try_dec(const struct enc *e, const unsigned char *m, size_t len)
{
    struct mime_key_list kl = {e->keys.keys, e->keys.n};
    unsigned char *out = NULL;
    size_t out_len = 0;
    int rc = mime_decrypt_mem(m, len, counting_lookup, &kl, &out, &out_len,
                              NULL, NULL);
    if (rc == 0) {
        assert_int_equal(out_len, strlen(sample));
        assert_memory_equal(out, sample, out_len);
        mime_plaintext_free(&out, out_len);
    } else {
        assert_null(out);
    }
    return rc;
}

/* Applies one substitution and expects rc. */
static void expect(const struct enc *e, const char *from, const char *to,
                   int want)
{
    size_t len;
    unsigned char *m = subst(e->msg, e->len, from, to, &len);
    int rc = try_dec(e, m, len);
    if (rc != want)
        fail_msg("\"%s\" -> \"%s\": %s, want %s", from, to, mime_strerror(rc),
                 mime_strerror(want));
    free(m);
}

#define CT_LINES                                                               \
    "Content-Type: multipart/encrypted;\r\n"                                   \
    "\tprotocol=\"application/x-qkd-encrypted\";\r\n"                          \
    "\tboundary=\"BOUNDARY\"\r\n"

static void test_outer_content_type(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_AES_256_GCM, "BOUNDARY");
    static const struct {
        const char *ct;
        int want;
    } cases[] = {
        /* accepted: case, spacing, comments, token values, folding */
        {"content-type: Multipart/Encrypted; PROTOCOL=\"Application/X-QKD-Encrypted\"; BOUNDARY=BOUNDARY\r\n", 0},
        {"Content-Type: (c) multipart (x) / (y) encrypted (z) ;\r\n protocol = \"application/x-qkd-encrypted\" ; boundary = \"BOUNDARY\" ; \r\n", 0},
        {"Content-Type: multipart/encrypted; boundary=\"BOUNDARY\"; protocol=\"application/x-qkd-encrypted\"; x-other=\"a;b\"; charset*=utf-8''x\r\n", 0},
        {"Content-Type: multipart/encrypted; protocol=\"application\\/x-qkd-encrypted\"; boundary=\"BOUND\\ARY\"\r\n", 0},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\" (a comment (nested))\r\n", 0},
        /* not encrypted: another type or protocol, no Content-Type, 2231 */
        {"Content-Type: multipart/mixed; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\"\r\n", MIME_ERR_NOT_ENCRYPTED},
        {"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"BOUNDARY\"\r\n", MIME_ERR_NOT_ENCRYPTED},
        {"X-Content-Type: multipart/encrypted\r\n", MIME_ERR_NOT_ENCRYPTED},
        {"Content-Type: multipart/encrypted; protocol*=us-ascii''application%2Fx-qkd-encrypted; boundary=\"BOUNDARY\"\r\n", MIME_ERR_NOT_ENCRYPTED},
        {"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\"\r\n", MIME_ERR_NOT_ENCRYPTED},
        /* malformed: QKD-MIME claimed, something wrong */
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\"; boundary=\"BOUNDARY\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\" junk\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\";; boundary=\"BOUNDARY\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted; boundary=\"BOUNDARY\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=application/x-qkd-encrypted; boundary=\"BOUNDARY\"\r\n", MIME_ERR_MALFORMED},
        {"Content-Type: multipart/encrypted; protocol=\"application/x-qkd-encrypted\"; boundary=\"BOUNDARY\" (open\r\n", MIME_ERR_MALFORMED},
        {CT_LINES "Content-Type: text/plain\r\n", MIME_ERR_MALFORMED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        unsigned char *m = subst(e.msg, e.len, CT_LINES, cases[i].ct, &len);
        int rc = try_dec(&e, m, len);
        if (rc != cases[i].want)
            fail_msg("case %zu (%s): %s, want %s", i, cases[i].ct,
                     mime_strerror(rc), mime_strerror(cases[i].want));
        free(m);
    }
    unmake(&e);
}

static void test_boundaries(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_AES_256_GCM, "BOUNDARY");
    /* every RFC 2046 bchar, SP inside; 70 characters */
    static const char *const good[] = {
        "a'b(c)+_,-./:=?z", "with space inside",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    };
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        unsigned char *m = subst(e.msg, e.len, "BOUNDARY", good[i], &len);
        int rc = try_dec(&e, m, len);
        if (rc != 0)
            fail_msg("boundary \"%s\": %s", good[i], mime_strerror(rc));
        free(m);
    }
    static const char *const bad[] = {
        "ends with space ", "has\"quote",
        "01234567890123456789012345678901234567890123456789012345678901234567890",
        "percent%", "",
    };
    for (size_t i = 0; i < 5; i++) {
        char ct[256];
        snprintf(ct, sizeof(ct),
                 "Content-Type: multipart/encrypted;\r\n"
                 "\tprotocol=\"application/x-qkd-encrypted\";\r\n"
                 "\tboundary=\"%s\"\r\n", bad[i]);
        size_t len;
        unsigned char *m = subst(e.msg, e.len, CT_LINES, ct, &len);
        assert_int_equal(try_dec(&e, m, len), MIME_ERR_MALFORMED);
        free(m);
    }
    unmake(&e);
}

static void test_structure(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_OTP_POLY1305, "BOUNDARY");
    /* transport padding after every delimiter */
    expect(&e, "\r\n--BOUNDARY\r\n", "\r\n--BOUNDARY \t \r\n", 0);
    expect(&e, "--BOUNDARY--\r\n", "--BOUNDARY-- \t\r\n", 0);
    /* LF line ends, and a mix */
    expect(&e, "\r\n", "\n", 0);
    expect(&e, "Content-Type: application/x-qkd-encrypted\r\n",
           "Content-Type: application/x-qkd-encrypted\n", 0);
    /* preamble: anything, look-alike delimiters included */
    expect(&e, "the keys that unlock it.\r\n",
           "--BOUNDARYX\r\n--BOUNDARY--x\r\n\x01\xff\r\n", 0);
    /* epilogue: never read */
    expect(&e, "--BOUNDARY--\r\n", "--BOUNDARY--\r\nepilogue \x00\xff --BOUNDARY\r\n",
           0);
    /* a close delimiter first, a third part, no close delimiter */
    expect(&e, "the keys that unlock it.\r\n", "--BOUNDARY--\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, "--BOUNDARY--\r\n", "--BOUNDARY\r\n\r\nx\r\n--BOUNDARY--\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, "--BOUNDARY--\r\n", "", MIME_ERR_MALFORMED);
    /* base64: trailing white space is not transport padding */
    size_t len;
    unsigned char *m = subst(e.msg, e.len, "\r\n--BOUNDARY--", " \r\n--BOUNDARY--",
                             &len);
    assert_int_equal(try_dec(&e, m, len), MIME_ERR_MALFORMED);
    free(m);
    unmake(&e);
}

static void test_part_headers(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_AES_256_GCM, "BOUNDARY");
    const char *ctl = "Content-Type: application/x-qkd-encrypted\r\n";
    const char *dat = "Content-Transfer-Encoding: base64\r\n";
    /* folding, case, parameters, comments, unknown fields */
    expect(&e, ctl, "content-type:\r\n Application/X-QKD-Encrypted ; x=1\r\n"
                    "X-Unknown: whatever\r\n", 0);
    expect(&e, ctl, "Content-Type: application/x-qkd-encrypted\r\n"
                    "Content-Transfer-Encoding: 7BIT (identity)\r\n", 0);
    expect(&e, ctl, "Content-Type: application/x-qkd-encrypted\r\n"
                    "Content-Transfer-Encoding: binary\r\n", 0);
    expect(&e, dat, "content-transfer-encoding: (c) BASE64\r\n", 0);
    /* a transfer encoding on the control part, repeated fields */
    expect(&e, ctl, "Content-Type: application/x-qkd-encrypted\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, ctl, "Content-Type: application/x-qkd-encrypted\r\n"
                    "Content-Type: application/x-qkd-encrypted\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, dat, "Content-Transfer-Encoding: base64\r\n"
                    "Content-Transfer-Encoding: base64\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, dat, "Content-Transfer-Encoding: base64 x\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, ctl, "Content-Type: text/plain\r\n", MIME_ERR_MALFORMED);
    expect(&e, ctl, "", MIME_ERR_MALFORMED);
    unmake(&e);
}

static void test_control_rules(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_OTP_POLY1305, "BOUNDARY");
    /* Version: syntax errors are malformed, other numbers unsupported */
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: 02\r\n", MIME_ERR_MALFORMED);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: +2\r\n", MIME_ERR_MALFORMED);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion:  2\r\n", MIME_ERR_MALFORMED);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: 2 \r\n", MIME_ERR_MALFORMED);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVERSION: 2\r\n", MIME_ERR_MALFORMED);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: 0\r\n",
           MIME_ERR_UNSUPPORTED_VERSION);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: 1\r\n",
           MIME_ERR_UNSUPPORTED_VERSION);
    expect(&e, "\r\nVersion: 2\r\n", "\r\nVersion: 9999999999999999999\r\n",
           MIME_ERR_UNSUPPORTED_VERSION);
    /* unknown algorithm (any case variant) */
    expect(&e, "\r\nAlgorithm: OTP-POLY1305", "\r\nAlgorithm: otp-poly1305",
           MIME_ERR_UNSUPPORTED_ALGORITHM);
    /* no Nonce for OTP */
    expect(&e, "\r\nRecipient-Count:",
           "\r\nNonce: 000102030405060708090a0b\r\nRecipient-Count:",
           MIME_ERR_MALFORMED);
    /* Key-Count equals the number of key lines */
    expect(&e, "\r\nKey-Count: ", "\r\nKey-Count: 1", MIME_ERR_MALFORMED);
    /* recipients: canonical encoding, no duplicates, count */
    expect(&e, "Recipient: bob@example.net", "Recipient: Bob@example.net",
           MIME_ERR_MALFORMED);
    expect(&e, "Recipient: bob@example.net", "Recipient: b%6Fb@example.net",
           MIME_ERR_MALFORMED);
    expect(&e, "Recipient-Count: 1\r\nRecipient: bob@example.net\r\n",
           "Recipient-Count: 2\r\nRecipient: bob@example.net\r\n"
           "Recipient: bob@example.net\r\n",
           MIME_ERR_MALFORMED);
    expect(&e, "Recipient-Count: 1", "Recipient-Count: 0", MIME_ERR_MALFORMED);
    /* which error wins: version over base64, keys not looked up for a
     * broken structure, key missing over base64 */
    size_t l1, l2;
    unsigned char *m1 = subst(e.msg, e.len, "\r\nVersion: 2\r\n",
                              "\r\nVersion: 3\r\n", &l1);
    unsigned char *m2 = subst(m1, l1, "base64\r\n\r\n", "base64\r\n\r\n!!!!\r\n",
                              &l2);
    assert_int_equal(try_dec(&e, m2, l2), MIME_ERR_UNSUPPORTED_VERSION);
    free(m1);
    free(m2);
    lookups = 0;
    expect(&e, "Content-Transfer-Encoding: base64",
           "Content-Transfer-Encoding: 8bit", MIME_ERR_MALFORMED);
    assert_int_equal(lookups, 0);
    m1 = subst(e.msg, e.len, "Key: f2-0 ", "Key: unknown ", &l1);
    m2 = subst(m1, l1, "base64\r\n\r\n", "base64\r\n\r\n!!!!\r\n", &l2);
    assert_int_equal(try_dec(&e, m2, l2), MIME_ERR_KEY_MISSING);
    free(m1);
    free(m2);
    unmake(&e);
}

/* ETSI 004 chunks: grouping, a last chunk used in part, the lookup names,
 * the entry accessors, duplicates and surplus. */
static const char *seen_names[64];
static size_t n_seen;

static int recording_lookup(void *ctx, const char *name,
                            const unsigned char **k, size_t *l)
{
    if (n_seen < 64)
        seen_names[n_seen++] = strdup(name);
    return mime_key_list_lookup(ctx, name, k, l);
}

static void test_etsi004_chunks(void **st)
{
    (void)st;
    const char *ksid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    size_t need = strlen(sample) + 32, chunk = 16;
    size_t n_chunks = (need - 10 + chunk - 1) / chunk;
    unsigned char pool[1024];
    tu_fill(pool, sizeof(pool), "chunks");
    struct mime_key keys[64];
    keys[0] = (struct mime_key){.key_id = "first-014", .key = pool,
                                .key_len = 10};
    for (size_t i = 0; i < n_chunks; i++)
        keys[1 + i] = (struct mime_key){.key = pool + 10 + i * chunk,
                                        .key_len = chunk, .ksid = ksid,
                                        .index = 100 + i};
    size_t nk = 1 + n_chunks;
    assert_true((10 + n_chunks * chunk) > need); /* the last in part */
    struct mime_encrypt_params p = tu_params(MIME_ALG_OTP_POLY1305);
    unsigned char *enc, *dec;
    size_t enc_len, dec_len;
    char *err = NULL;
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, nk,
                                      &enc, &enc_len, &err), 0);
    struct mime_info *info = NULL;
    assert_int_equal(mime_inspect_mem(enc, enc_len, &info, NULL), 0);
    assert_int_equal(mime_info_key_count(info), 2);
    assert_int_equal(mime_info_lookup_count(info), nk);
    assert_string_equal(mime_info_key_id(info, 0), "first-014");
    assert_null(mime_info_key_id(info, 1));
    struct mime_key_entry ent;
    assert_int_equal(mime_info_key_entry(info, 1, &ent), 0);
    assert_int_equal(ent.kind, MIME_KEY_ETSI004);
    assert_string_equal(ent.ksid, ksid);
    assert_int_equal(ent.first_index, 100);
    assert_int_equal(ent.count, n_chunks);
    assert_int_equal(ent.chunk_bits, chunk * 8);
    assert_int_equal(ent.bits, (need - 10) * 8);
    assert_int_equal(mime_info_key_entry(info, 2, &ent), MIME_ERR_INVALID_ARG);
    mime_info_free(&info);

    /* the lookup is asked for "<KSID> <index>", in key-stream order */
    struct mime_key_list kl = {keys, nk};
    n_seen = 0;
    assert_int_equal(mime_decrypt_mem(enc, enc_len, recording_lookup, &kl, &dec,
                                      &dec_len, NULL, NULL), 0);
    assert_int_equal(dec_len, strlen(sample));
    assert_memory_equal(dec, sample, dec_len);
    mime_plaintext_free(&dec, dec_len);
    assert_int_equal(n_seen, nk);
    assert_string_equal(seen_names[0], "first-014");
    char want[64], ks[MIME_KSID_LEN + 1];
    uint64_t index;
    for (size_t i = 1; i < nk; i++) {
        snprintf(want, sizeof(want), "%s %zu", ksid, 99 + i);
        assert_string_equal(seen_names[i], want);
        assert_int_equal(mime_key_name_parse(seen_names[i], ks, &index), 1);
        assert_string_equal(ks, ksid);
        assert_int_equal(index, 99 + i);
    }
    for (size_t i = 0; i < n_seen; i++)
        free((void *)seen_names[i]);
    assert_int_equal(mime_key_name_parse("first-014", ks, &index), 0);
    assert_int_equal(mime_key_name_parse("6BA7B810-9dad-11d1-80b4-00c04fd430c8 1",
                                         ks, &index), MIME_ERR_INVALID_ARG);
    assert_int_equal(mime_key_name_parse("x 1", ks, &index),
                     MIME_ERR_INVALID_ARG);

    /* a wrong chunk: authentication failed; a short chunk: wrong size */
    unsigned char other[16];
    memcpy(other, keys[nk - 1].key, 16);
    other[15] ^= 1; /* beyond the part used: must not matter */
    const unsigned char *saved = keys[nk - 1].key;
    keys[nk - 1].key = other;
    size_t used_last = need - 10 - (n_chunks - 1) * chunk;
    int want_rc = used_last < 16 ? 0 : MIME_ERR_AUTH_FAILED;
    assert_int_equal(mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl,
                                      &dec, &dec_len, NULL, NULL), want_rc);
    if (want_rc == 0)
        mime_plaintext_free(&dec, dec_len);
    other[0] ^= 1;
    assert_int_equal(mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl,
                                      &dec, &dec_len, NULL, NULL),
                     MIME_ERR_AUTH_FAILED);
    keys[nk - 1].key = saved;
    keys[2].key_len = 15;
    assert_int_equal(mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl,
                                      &dec, &dec_len, NULL, NULL),
                     MIME_ERR_KEY_WRONG_SIZE);
    keys[2].key_len = 16;
    free(enc);

    /* writer rules: a chunk twice; surplus of a whole chunk; a 014 key as
     * the last one may not be used in part */
    keys[2].index = keys[1].index;
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, nk,
                                      &enc, &enc_len, NULL),
                     MIME_ERR_KEY_DUPLICATE);
    keys[2].index = keys[1].index + 1;
    keys[nk] = (struct mime_key){.key = pool + 900, .key_len = chunk,
                                 .ksid = ksid, .index = 1000};
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, nk + 1,
                                      &enc, &enc_len, NULL),
                     MIME_ERR_KEY_SURPLUS);
    keys[nk] = (struct mime_key){.key_id = "last-014", .key = pool + 900,
                                 .key_len = 1};
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, nk + 1,
                                      &enc, &enc_len, NULL),
                     MIME_ERR_KEY_SURPLUS);
    keys[1].ksid = "not-a-uuid";
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, nk,
                                      &enc, &enc_len, NULL),
                     MIME_ERR_INVALID_ARG);
    free(err);
}

static void test_overlapping_ranges(void **st)
{
    (void)st;
    const char *ksid = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
    unsigned char pool[64];
    tu_fill(pool, sizeof(pool), "aes chunks");
    /* AES with two 128-bit chunks from one stream, given apart */
    struct mime_key keys[2] = {
        {.key = pool, .key_len = 16, .ksid = ksid, .index = 5},
        {.key = pool + 16, .key_len = 16, .ksid = ksid, .index = 9},
    };
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    unsigned char *enc;
    size_t enc_len;
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, keys, 2, &enc,
                                      &enc_len, NULL), 0);
    struct enc e = {enc, enc_len, {0}};
    e.keys.keys = keys;
    e.keys.n = 2;
    char from[128], to[128];
    snprintf(from, sizeof(from), "Key-Chunks: %s 9 1", ksid);
    snprintf(to, sizeof(to), "Key-Chunks: %s 5 1", ksid);
    expect(&e, from, to, MIME_ERR_KEY_DUPLICATE);
    /* a partly used entry that is not the last */
    snprintf(from, sizeof(from), "Key-Chunks: %s 5 1 128 128", ksid);
    snprintf(to, sizeof(to), "Key-Chunks: %s 5 1 136 128", ksid);
    expect(&e, from, to, MIME_ERR_MALFORMED);
    free(enc);
}

static void test_recipient_binding(void **st)
{
    (void)st;
    struct enc e;
    make(&e, MIME_ALG_AES_256_GCM, "BOUNDARY");
    struct mime_key_list kl = {e.keys.keys, e.keys.n};
    unsigned char *dec;
    size_t dec_len;
    struct mime_info *info = NULL;
    assert_int_equal(mime_decrypt_mem(e.msg, e.len, mime_key_list_lookup, &kl,
                                      &dec, &dec_len, &info, NULL), 0);
    mime_plaintext_free(&dec, dec_len);
    assert_int_equal(mime_info_recipient_count(info), 1);
    assert_string_equal(mime_info_recipient(info, 0), "bob@example.net");
    assert_null(mime_info_recipient(info, 1));
    assert_int_equal(mime_info_bound_to(info, "bob@example.net"), 1);
    assert_int_equal(mime_info_bound_to(info, "BOB@EXAMPLE.NET"), 1);
    assert_int_equal(mime_info_bound_to(info, "bob@example.org"), 0);
    assert_int_equal(mime_info_bound_to(info, "bob@example.net "),
                     MIME_ERR_INVALID_ARG);
    assert_int_equal(mime_info_bound_to(info, "a\x01@b"), MIME_ERR_INVALID_ARG);
    mime_info_free(&info);
    /* the binding is authenticated: editing it fails the tag */
    expect(&e, "Recipient: bob@example.net", "Recipient: eve@example.net",
           MIME_ERR_AUTH_FAILED);
    unmake(&e);

    /* unbound copies, non-ASCII addresses, bad ones */
    struct tu_keys k;
    tu_keys_for(&k, MIME_ALG_AES_256_GCM, strlen(sample), 32, "rb");
    struct mime_encrypt_params p = tu_params(MIME_ALG_AES_256_GCM);
    unsigned char *enc;
    size_t enc_len;
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, k.keys, k.n,
                                      &enc, &enc_len, NULL), 0);
    assert_int_equal(mime_inspect_mem(enc, enc_len, &info, NULL), 0);
    assert_int_equal(mime_info_recipient_count(info), 0);
    assert_int_equal(mime_info_bound_to(info, "bob@example.net"), 0);
    mime_info_free(&info);
    free(enc);
    static const char *const utf8[] = {"J\xc3\xbcrgen@B\xc3\xbc" "cher.example",
                                       "\"john doe\"@example.org"};
    p.recipients = utf8;
    p.n_recipients = 2;
    assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, k.keys, k.n,
                                      &enc, &enc_len, NULL), 0);
    static const char r1[] = "Recipient: j%C3%BCrgen@b%C3%BCcher.example\r\n";
    static const char r2[] = "Recipient: \"john%20doe\"@example.org\r\n";
    assert_non_null(memmem(enc, enc_len, r1, strlen(r1)));
    assert_non_null(memmem(enc, enc_len, r2, strlen(r2)));
    assert_int_equal(mime_inspect_mem(enc, enc_len, &info, NULL), 0);
    assert_int_equal(mime_info_bound_to(info, "j\xc3\xbcrgen@b\xc3\xbc" "cher.EXAMPLE"), 1);
    assert_int_equal(mime_info_bound_to(info, "\"John Doe\"@example.org"), 1);
    mime_info_free(&info);
    free(enc);
    static const char *const bad[] = {"", " lead@x", "a\x1b@x", "a\xff@x",
                                      "a\xc2\x85@x", NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p.recipients = &bad[i];
        p.n_recipients = 1;
        assert_int_equal(mime_encrypt_mem(sample, strlen(sample), &p, k.keys,
                                          k.n, &enc, &enc_len, NULL),
                         MIME_ERR_INVALID_ARG);
    }
    char *norm = NULL;
    assert_int_equal(mime_address_normalize("Bob@Example.NET", &norm), 0);
    assert_string_equal(norm, "bob@example.net");
    free(norm);
    tu_keys_free(&k);
}

static void test_escape(void **st)
{
    (void)st;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain text", 10, "plain text"},
        {"a\x1b[31m\x07z", 8, "a\\x1b[31m\\x07z"},
        {"back\\slash", 10, "back\\\\slash"},
        {"\xff\xfe", 2, "\\xff\\xfe"},
        {"nul\0x", 5, "nul\\x00x"},
        {"J\xc3\xbcrgen", 7, "J\xc3\xbcrgen"},        /* UTF-8 kept */
        {"c1\xc2\x9b" "x", 5, "c1\\xc2\\x9bx"},          /* C1 CSI */
        {"bidi\xe2\x80\xae", 7, "bidi\\xe2\\x80\\xae"},   /* U+202E */
        {"\xc3", 1, "\\xc3"},                              /* truncated */
        {"\xc0\xaf", 2, "\\xc0\\xaf"},                     /* overlong */
        {"del\x7f", 4, "del\\x7f"},
        {"cr\r\nlf", 6, "cr\\x0d\\x0alf"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = mime_escape(cases[i].in, cases[i].len);
        assert_non_null(e);
        if (strcmp(e, cases[i].out) != 0)
            fail_msg("case %zu: \"%s\", want \"%s\"", i, e, cases[i].out);
        free(e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outer_content_type),
        cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_part_headers),
        cmocka_unit_test(test_control_rules),
        cmocka_unit_test(test_etsi004_chunks),
        cmocka_unit_test(test_overlapping_ranges),
        cmocka_unit_test(test_recipient_binding),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
