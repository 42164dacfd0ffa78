/* ETSI GS QKD 004 keys on the reading side, against the KME simulator's
 * 004 servers (kme/server/e4*: kme-a for the sender sae-a, kme-b for the
 * reader sae-b, one predefined stream registered at both): a message
 * encrypted with chunks of the stream decrypts into a view, its chunks
 * taken through the link's key source (kme_source_dec) and committed to
 * the vault first; a second read after a restart takes them from the
 * vault (the KME hands a chunk out once per end). A message naming
 * another stream than the link's, and a reader without a 004 source, get
 * notices and no chunk is taken. */
#include "pi_test.h"
#include "etsi004_client.h"

static struct pi_env env;

static const char KSID[] = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f";
static const char KSID_OTHER[] = "0b0c0d0e-1111-4222-8333-444455556666";

static int setup(void **state)
{
    (void)state;
    pi_env_init(&env, "incoming004");
    env.e004 = true;
    pi_kme_start(&env);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pi_suite_end(&env);
    return 0;
}

/* Registers both ends of stream ksid (the operators' `qumail kme-client
 * open`): sae-a at kme-a (peer not there yet: status 1), sae-b at kme-b. */
static void register_stream(const char *ksid_text)
{
    uint8_t ksid[ETSI004_KSID_LEN];
    assert_int_equal(etsi004_ksid_from_text(ksid_text, ksid), 0);
    struct etsi004_qos q = {.key_chunk_size = 32, .timeout = 200, .ttl = 3600};
    const char *src[2] = {"qkd://sae-a", "qkd://sae-b"};
    for (int slot = 0; slot < 2; slot++) {
        struct etsi004_client_config c = pi_e4_config(&env, slot);
        struct etsi004_sync_open r;
        char *err = NULL;
        int rc = etsi004_sync_open(&c, src[slot], "qkd://peer", &q, ksid, &r, &err);
        if (rc != KME_OK)
            fail_msg("open at %d: %s", slot, err != NULL ? err : "?");
        assert_true(r.status == ETSI004_SUCCESS || r.status == ETSI004_PEER_NOT_CONNECTED);
    }
}

/* msg encrypted with chunks of stream ksid taken at kme-a (as the sending
 * proxy's 004 source does); *n_chunks_r: how many. */
static uint8_t *encrypt004(const char *ksid_text, const char *msg, size_t *len_r,
                           size_t *n_chunks_r)
{
    uint8_t ksid[ETSI004_KSID_LEN];
    assert_int_equal(etsi004_ksid_from_text(ksid_text, ksid), 0);
    uint64_t bits = 0;
    assert_int_equal(mime_key_bits_needed(MIME_ALG_OTP_POLY1305, strlen(msg), &bits), 0);
    struct etsi004_client_config c = pi_e4_config(&env, 0);
    struct kme_keys *keys = NULL;
    char *kme_id = NULL, *sae_id = NULL;
    for (int i = 0; i < 200 && keys == NULL; i++) {
        char *err = NULL;
        if (etsi004_sync_take_bits(&c, ksid, bits, &keys, &kme_id, &sae_id, &err) < 0) {
            free(err);
            usleep(50 * 1000); /* the link is still filling the pool */
        }
    }
    assert_non_null(keys);
    assert_string_equal(kme_id, "kme-a");
    assert_string_equal(sae_id, "sae-a");
    struct mime_key *mk = calloc(keys->count, sizeof(*mk));
    assert_non_null(mk);
    for (size_t i = 0; i < keys->count; i++) {
        mk[i].key = keys->keys[i].bytes;
        mk[i].key_len = keys->keys[i].len;
        mk[i].ksid = keys->keys[i].ksid;
        mk[i].index = keys->keys[i].index;
    }
    struct mime_encrypt_params p = {
        .algorithm = MIME_ALG_OTP_POLY1305,
        .source_kme_id = kme_id,
        .master_sae_id = sae_id,
        .slave_sae_id = "sae-b",
        .protect_subject = 1,
        .recipients = PI_TO_ALICE,
        .n_recipients = 1,
    };
    unsigned char *out = NULL;
    char *err = NULL;
    if (mime_encrypt_mem(msg, strlen(msg), &p, mk, keys->count, &out, len_r, &err) < 0)
        fail_msg("encrypt: %s", err);
    *n_chunks_r = keys->count;
    free(mk);
    kme_keys_free(&keys);
    free(kme_id);
    free(sae_id);
    return out;
}

static void test_004_view_then_vault(void **state)
{
    (void)state;
    register_stream(KSID);
    size_t clen, n;
    uint8_t *c = encrypt004(KSID, PI_MSG_MIXED, &clen, &n);
    assert_true(n > 1); /* several chunks: ranges, not single keys */
    char *hint = pi_hint(c, clen);
    struct pi_msg m = {c, clen, 0, false, 0};
    env.ksid004 = KSID;

    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, hint, &m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_DECRYPTED);
    pi_expect_plain(v, PI_MSG_MIXED);
    assert_int_equal(strncmp(protect_in_view_id(v), "c/", 2), 0);
    assert_non_null(strstr(protect_in_view_id(v), KSID));
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.keys_from_kme, n);
    assert_int_equal(st.keys_from_vault, 0);
    assert_int_equal(st.kme_requests, 1);
    /* committed under the stream, the sender's SAE and "<KSID>/<index>" */
    uint8_t *bytes = NULL;
    size_t blen = 0;
    char name[80];
    struct mime_info *info = NULL;
    assert_int_equal(mime_inspect_mem(c, clen, &info, NULL), 0);
    struct mime_key_entry e;
    assert_int_equal(mime_info_key_entry(info, 0, &e), 0);
    snprintf(name, sizeof(name), "%s/%llu", KSID, (unsigned long long)e.first_index);
    mime_info_free(&info);
    assert_int_equal(kme_vault_key_get(env.vault, KSID, "sae-a", name, &bytes, &blen, NULL),
                     0);
    assert_int_equal(blen, 32);
    kme_vault_bytes_free(&bytes, blen);
    pi_reader_close_as(&env, &alice);

    /* restart: the KME will not hand the chunks to this end again; the
     * vault has them */
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v = pi_open_wait(&env, alice, hint, &m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 0);
    assert_int_equal(st.keys_from_vault, n);
    pi_reader_close_as(&env, &alice);
    env.ksid004 = NULL;

    /* the chunks really are used up at kme-b: fetching them again fails */
    uint8_t ksid[ETSI004_KSID_LEN];
    etsi004_ksid_from_text(KSID, ksid);
    struct etsi004_client_config cb = pi_e4_config(&env, 1);
    struct kme_keys *again = NULL;
    char *err = NULL;
    assert_true(etsi004_sync_fetch_chunks(&cb, ksid, (uint32_t)e.first_index, 1, 32, &again,
                                          &err) < 0);
    free(err);
    kme_keys_free(&again);
    free(hint);
    free(c);
}

/* A message naming a stream that is not the link's: a notice, and not a
 * chunk taken (they stay for the reader of that stream). Without a 004
 * source: key-source-unsupported. */
static void test_004_other_stream_and_no_source(void **state)
{
    (void)state;
    register_stream(KSID);
    register_stream(KSID_OTHER);
    size_t clen, n;
    uint8_t *c = encrypt004(KSID_OTHER, PI_MSG_MIXED, &clen, &n);
    char *hint = pi_hint(c, clen);
    struct pi_msg m = {c, clen, 0, false, 0};

    struct protect_in_config cfg;
    pi_config(&cfg);
    env.ksid004 = KSID;
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, hint, &m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_SENDER_MISMATCH);
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 0);
    pi_reader_close_as(&env, &alice);

    env.ksid004 = NULL; /* no 004 source */
    pi_expect_notice_as(&env, "alice@example.org",
                        &(struct pi_mail){.bytes = c, .len = clen, .hint = hint, .m = m},
                        PROTECT_IN_R_KEY_SOURCE, NULL, NULL);

    /* the reader of that stream still gets them */
    env.ksid004 = KSID_OTHER;
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v = pi_open_wait(&env, alice, hint, &m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    env.ksid004 = NULL;
    free(hint);
    free(c);
}

int main(void)
{
    pi_test_options();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_004_view_then_vault),
        cmocka_unit_test(test_004_other_stream_and_no_source),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
