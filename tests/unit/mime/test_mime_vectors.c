/* The test vectors of mime/FORMAT-SPEC.md: the parameters and keys of
 * tests/unit/mime/vectors/vN-keys.json and vN-input.eml give exactly the
 * bytes of vN-output.eml, which an independent Python implementation
 * (vectors/make_vectors.py) produced from the spec; the spec quotes those
 * outputs verbatim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "mime_test_util.h"

#ifndef MIME_VECTOR_DIR
#error "MIME_VECTOR_DIR not defined"
#endif
#ifndef MIME_SPEC_FILE
#error "MIME_SPEC_FILE not defined"
#endif

static unsigned char *load(int n, const char *what, size_t *len_r)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/v%d-%s", MIME_VECTOR_DIR, n, what);
    unsigned char *b = tu_read_file(path, len_r);
    if (b == NULL)
        fail_msg("cannot read %s", path);
    return b;
}

static unsigned char *b64(const char *s, size_t *len_r)
{
    size_t n = strlen(s);
    unsigned char *out = malloc(n / 4 * 3 + 4);
    int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    assert_true(len >= 0);
    len -= (n > 0 && s[n - 1] == '=') + (n > 1 && s[n - 2] == '=');
    *len_r = (size_t)len;
    return out;
}

/* Encrypts vN-input.eml with the parameters and keys of vN-keys.json and
 * compares with vN-output.eml; decrypts that back; checks the spec quotes
 * it; and checks the parsed control data against the parameters. */
static void check_vector(int n)
{
    size_t in_len = 0, want_len = 0, meta_len = 0;
    unsigned char *in = load(n, "input.eml", &in_len);
    unsigned char *want = load(n, "output.eml", &want_len);
    unsigned char *meta_text = load(n, "keys.json", &meta_len);
    json_error_t jerr;
    json_t *meta = json_loadb((const char *)meta_text, meta_len, 0, &jerr);
    assert_non_null(meta);
    json_t *jkeys = json_object_get(meta, "keys");
    size_t nk = json_array_size(jkeys);
    struct mime_key *keys = calloc(nk, sizeof(*keys));
    for (size_t i = 0; i < nk; i++) {
        json_t *k = json_array_get(jkeys, i);
        keys[i].key = b64(json_string_value(json_object_get(k, "key")),
                          &keys[i].key_len);
        keys[i].key_id = json_string_value(json_object_get(k, "key_ID"));
        keys[i].ksid = json_string_value(json_object_get(k, "ksid"));
        keys[i].index = (uint64_t)json_integer_value(json_object_get(k, "index"));
    }
    json_t *jr = json_object_get(meta, "recipients");
    size_t nr = json_array_size(jr);
    const char **rcpts = calloc(nr + 1, sizeof(char *));
    for (size_t i = 0; i < nr; i++)
        rcpts[i] = json_string_value(json_array_get(jr, i));
    enum mime_alg alg;
    assert_int_equal(mime_alg_parse(json_string_value(json_object_get(
                                        meta, "algorithm")), &alg), 0);
    struct mime_encrypt_params p = {
        .algorithm = alg,
        .source_kme_id = json_string_value(json_object_get(meta, "source_kme_id")),
        .master_sae_id = json_string_value(json_object_get(meta, "master_sae_id")),
        .slave_sae_id = json_string_value(json_object_get(meta, "slave_sae_id")),
        .protect_subject = json_is_true(json_object_get(meta, "protect_subject")),
        .subject_placeholder =
            json_string_value(json_object_get(meta, "subject_placeholder")),
        .recipients = rcpts,
        .n_recipients = nr,
        .fixed_boundary = json_string_value(json_object_get(meta, "boundary")),
    };
    unsigned char nonce[12];
    const char *nhex = json_string_value(json_object_get(meta, "nonce"));
    if (nhex != NULL) {
        assert_int_equal(strlen(nhex), 24);
        for (size_t i = 0; i < 12; i++) {
            int hi = OPENSSL_hexchar2int((unsigned char)nhex[2 * i]);
            int lo = OPENSSL_hexchar2int((unsigned char)nhex[2 * i + 1]);
            assert_true(hi >= 0 && lo >= 0);
            nonce[i] = (unsigned char)(hi << 4 | lo);
        }
        p.fixed_nonce = nonce;
    }
    unsigned char *out;
    size_t out_len;
    char *err = NULL;
    int rc = mime_encrypt_mem(in, in_len, &p, keys, nk, &out, &out_len, &err);
    if (rc != 0)
        fail_msg("vector %d: %s (%s)", n, mime_strerror(rc), err);
    if (out_len != want_len || memcmp(out, want, want_len) != 0)
        fail_msg("vector %d: C output differs from the independent one", n);

    struct mime_key_list kl = {keys, nk};
    unsigned char *dec;
    size_t dec_len;
    struct mime_info *info = NULL;
    assert_int_equal(mime_decrypt_mem(want, want_len, mime_key_list_lookup,
                                      &kl, &dec, &dec_len, &info, NULL), 0);
    assert_int_equal(dec_len, in_len);
    assert_memory_equal(dec, in, in_len);
    mime_plaintext_free(&dec, dec_len);
    /* every given recipient is bound (normalised), nobody else */
    for (size_t i = 0; i < nr; i++)
        assert_int_equal(mime_info_bound_to(info, rcpts[i]), 1);
    assert_int_equal(mime_info_bound_to(info, "mallory@example.net"), 0);
    assert_int_equal(mime_info_version(info), MIME_FORMAT_VERSION);
    mime_info_free(&info);

    /* The spec quotes the output (CRLF shown as LF). */
    size_t spec_len = 0;
    unsigned char *spec = tu_read_file(MIME_SPEC_FILE, &spec_len);
    assert_non_null(spec);
    unsigned char *lf = malloc(want_len + 1);
    size_t lf_len = 0;
    for (size_t i = 0; i < want_len; i++)
        if (want[i] != '\r')
            lf[lf_len++] = want[i];
    if (memmem(spec, spec_len, lf, lf_len) == NULL)
        fail_msg("FORMAT-SPEC.md does not quote vector %d verbatim", n);
    free(lf);
    free(spec);
    free(out);
    for (size_t i = 0; i < nk; i++)
        free((void *)keys[i].key);
    free(keys);
    free(rcpts);
    json_decref(meta);
    free(meta_text);
    free(in);
    free(want);
}

static void test_vector_1_otp(void **s) { (void)s; check_vector(1); }
static void test_vector_2_aes(void **s) { (void)s; check_vector(2); }
static void test_vector_3_aes_lf(void **s) { (void)s; check_vector(3); }
static void test_vector_4_otp_several_keys(void **s) { (void)s; check_vector(4); }
static void test_vector_5_aes_several_keys(void **s) { (void)s; check_vector(5); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_1_otp),
        cmocka_unit_test(test_vector_2_aes),
        cmocka_unit_test(test_vector_3_aes_lf),
        cmocka_unit_test(test_vector_4_otp_several_keys),
        cmocka_unit_test(test_vector_5_aes_several_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
