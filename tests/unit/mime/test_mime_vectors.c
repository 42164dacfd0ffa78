/* The test vectors of mime/FORMAT-SPEC.md: fixed keys, message, nonce and
 * boundary give exactly the bytes in tests/unit/mime/vectors/vN-output.eml,
 * which an independent Python implementation (vectors/make_vectors.py)
 * produced from the spec; and the spec quotes those outputs verbatim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "mime_test_util.h"

#ifndef MIME_VECTOR_DIR
#error "MIME_VECTOR_DIR not defined"
#endif
#ifndef MIME_SPEC_FILE
#error "MIME_SPEC_FILE not defined"
#endif

struct vec {
    int n;
    enum mime_alg alg;
    const char *boundary;
    const char *placeholder; /* NULL: subject kept */
    int nonce_base;          /* -1: none */
};

static unsigned char *load(int n, const char *what, size_t *len_r)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/v%d-%s", MIME_VECTOR_DIR, n, what);
    unsigned char *b = tu_read_file(path, len_r);
    if (b == NULL)
        fail_msg("cannot read %s", path);
    return b;
}

/* Same key material as make_vectors.py. */
static size_t vector_keys(int n, size_t msg_len, struct mime_key *keys,
                          unsigned char *k1, unsigned char *k2)
{
    if (n == 1) {
        for (int i = 0; i < 40; i++)
            k1[i] = (unsigned char)i;
        size_t l2 = msg_len + 32 - 40;
        for (size_t i = 0; i < l2; i++)
            k2[i] = (unsigned char)((0x80 + i * 7) & 0xff);
        keys[0] = (struct mime_key){"qkd-key-0001", k1, 40};
        keys[1] = (struct mime_key){"qkd-key-0002", k2, l2};
        return 2;
    }
    for (int i = 0; i < 32; i++)
        k1[i] = (unsigned char)(n == 2 ? i : 100 + i);
    keys[0] = (struct mime_key){n == 2 ? "qkd-key-aes-0001"
                                       : "0f6c6b1e-5d7a-4c3e-9a1b-2c3d4e5f6a7b",
                                k1, 32};
    return 1;
}

static void check_vector(const struct vec *v)
{
    size_t in_len = 0, want_len = 0;
    unsigned char *in = load(v->n, "input.eml", &in_len);
    unsigned char *want = load(v->n, "output.eml", &want_len);
    unsigned char k1[64], k2[4096], nonce[12];
    struct mime_key keys[2];
    size_t nk = vector_keys(v->n, in_len, keys, k1, k2);
    struct mime_encrypt_params p = {
        .algorithm = v->alg, .source_kme_id = "KME_A",
        .master_sae_id = "SAE_ALICE", .slave_sae_id = "SAE_BOB",
        .protect_subject = v->placeholder != NULL,
        .subject_placeholder = v->placeholder,
        .fixed_boundary = v->boundary,
    };
    if (v->nonce_base >= 0) {
        for (int i = 0; i < 12; i++)
            nonce[i] = (unsigned char)(v->nonce_base + i);
        p.fixed_nonce = nonce;
    }
    unsigned char *out;
    size_t out_len;
    char *err = NULL;
    int rc = mime_encrypt_mem(in, in_len, &p, keys, nk, &out, &out_len, &err);
    if (rc != 0)
        fail_msg("vector %d: %s (%s)", v->n, mime_strerror(rc), err);
    assert_int_equal(out_len, want_len);
    assert_memory_equal(out, want, want_len);

    struct mime_key_list kl = {keys, nk};
    unsigned char *dec;
    size_t dec_len;
    assert_int_equal(mime_decrypt_mem(want, want_len, mime_key_list_lookup,
                                      &kl, &dec, &dec_len, NULL, NULL), 0);
    assert_int_equal(dec_len, in_len);
    assert_memory_equal(dec, in, in_len);
    mime_plaintext_free(&dec, dec_len);

    /* The spec quotes the output (CRLF shown as LF). */
    size_t spec_len = 0;
    unsigned char *spec = tu_read_file(MIME_SPEC_FILE, &spec_len);
    assert_non_null(spec);
    unsigned char *lf = malloc(want_len);
    size_t lf_len = 0;
    for (size_t i = 0; i < want_len; i++)
        if (want[i] != '\r')
            lf[lf_len++] = want[i];
    if (memmem(spec, spec_len, lf, lf_len) == NULL)
        fail_msg("FORMAT-SPEC.md does not quote vector %d verbatim", v->n);
    free(lf);
    free(spec);
    free(out);
    free(in);
    free(want);
}

static void test_vector_1_otp(void **s)
{
    (void)s;
    struct vec v = {1, MIME_ALG_OTP_POLY1305, "=_qkd_vector_1", "[...]", -1};
    check_vector(&v);
}

static void test_vector_2_aes(void **s)
{
    (void)s;
    struct vec v = {2, MIME_ALG_AES_256_GCM, "=_qkd_vector_2", "[encrypted]",
                    0};
    check_vector(&v);
}

static void test_vector_3_aes_lf(void **s)
{
    (void)s;
    struct vec v = {3, MIME_ALG_AES_256_GCM, "=_qkd_vector_3", NULL, 200};
    check_vector(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_1_otp),
        cmocka_unit_test(test_vector_2_aes),
        cmocka_unit_test(test_vector_3_aes_lf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
