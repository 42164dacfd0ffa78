/* protect_in against the real KME simulator, vault and mime: first read
 * from the KME, second from the cache, after a restart from the vault and
 * the durable metadata; KME down -> notice -> recovery; tampered
 * ciphertext, unknown key, wrong user, no sender rule -> notices;
 * coalescing; eviction wipes. */
#include "pi_test.h"

static struct pi_env env;

static int setup(void **state)
{
    (void)state;
    pi_suite_begin(&env, "incoming", 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pi_suite_end(&env);
    return 0;
}

/* ---- classification ---------------------------------------------------------- */

static void test_classify(void **state)
{
    (void)state;
    char *hint = (char *)1;
    const char plain[] = "Content-Type: text/plain\r\nX-QKD-Key-ID: abc\r\n\r\n";
    assert_int_equal(protect_in_classify(plain, strlen(plain), &hint), 0);
    assert_null(hint);
    assert_int_equal(protect_in_classify("", 0, &hint), 0);

    const char enc[] = "Content-Type: multipart/encrypted;\r\n"
                       "\tprotocol=\"application/x-qkd-encrypted\";\r\n"
                       "\tboundary=\"=_qkd_1\"\r\n"
                       "X-QKD-Key-ID: 3f2a1c9e-0b7d-4e58-9a61-2c4d8e0f1a2b\r\n\r\n";
    assert_int_equal(protect_in_classify(enc, strlen(enc), &hint), 1);
    assert_string_equal(hint, "k/3f2a1c9e-0b7d-4e58-9a61-2c4d8e0f1a2b");
    free(hint);

    /* LF only, folded value, other case, no blank line */
    const char lf[] = "x-qkd-key-id:\n  abc-1\ncontent-type: Multipart/Encrypted; "
                      "boundary=x; protocol=\"Application/X-QKD-Encrypted\"\n";
    assert_int_equal(protect_in_classify(lf, strlen(lf), &hint), 1);
    assert_string_equal(hint, "k/abc-1");
    free(hint);

    /* claims QKD-MIME but names no key: encrypted, no hint */
    const char nokey[] = "Content-Type: multipart/encrypted; "
                         "protocol=\"application/x-qkd-encrypted\"\r\n\r\n";
    assert_int_equal(protect_in_classify(nokey, strlen(nokey), &hint), 1);
    assert_null(hint);
    /* a broken Content-Type that mentions the protocol still claims it */
    const char broken[] = "Content-Type: multipart/encrypted; protocol=\"application/"
                          "x-qkd-encrypted\r\n\r\n";
    assert_int_equal(protect_in_classify(broken, strlen(broken), &hint), 1);
    free(hint);
    /* PGP/MIME is not ours */
    const char pgp[] = "Content-Type: multipart/encrypted; "
                       "protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n";
    assert_int_equal(protect_in_classify(pgp, strlen(pgp), &hint), 0);
}

/* ---- first read, cache, restart, metadata ----------------------------------------- */

static void test_kme_cache_vault_meta(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_OTP_POLY1305, PI_TO_ALICE);
    pm.m.chunk = 1000;

    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    assert_non_null(alice);
    protect_in_view *v = NULL;

    /* nothing known yet */
    assert_int_equal(protect_in_lookup(env.pi, alice, pm.hint, PROTECT_IN_SUMMARY, &v), 0);

    /* 1. first read: keys from the KME */
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    assert_string_equal(protect_in_view_id(v), pm.hint);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(pm.m.fetches, 1);
    assert_true(st.keys_from_kme > 0);
    assert_int_equal(st.keys_from_vault, 0);
    assert_int_equal(st.decrypted, 1);
    protect_in_view_unref(&v);

    /* 2. second read: from memory, no fetch */
    assert_int_equal(protect_in_lookup(env.pi, alice, pm.hint, PROTECT_IN_FULL, &v), 1);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    assert_int_equal(pm.m.fetches, 1);
    protect_in_view_unref(&v);
    /* let the metadata reach the vault */
    while (protect_in_get_stats(env.pi, &st), st.meta_stored == 0)
        uv_run(&env.loop, UV_RUN_NOWAIT);
    pi_reader_close_as(&env, &alice);

    /* 3. restart: new process state, same vault. The KME deleted the keys
     * when it delivered them (no redelivery grace here): only the vault
     * can have them. */
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    /* a summary from the durable metadata, without fetching */
    assert_int_equal(protect_in_lookup(env.pi, alice, pm.hint, PROTECT_IN_FULL, &v), 0);
    assert_int_equal(protect_in_lookup(env.pi, alice, pm.hint, PROTECT_IN_SUMMARY, &v), 1);
    assert_false(protect_in_view_complete(v));
    protect_in_view *full = pi_open_wait(&env, alice, pm.hint, &pm.m);
    assert_int_equal(pm.m.fetches, 2);
    pi_expect_plain(full, PI_MSG_MIXED);
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 0);
    assert_true(st.keys_from_vault > 0);
    /* the metadata is there already: not written again */
    while (protect_in_get_stats(env.pi, &st), st.meta_kept == 0)
        uv_run(&env.loop, UV_RUN_NOWAIT);
    assert_int_equal(st.meta_stored, 0);
    /* the summary agrees with the full view, item by item */
    assert_int_equal(protect_in_view_size(v), protect_in_view_size(full));
    assert_string_equal(protect_in_view_bodystructure(v, NULL),
                        protect_in_view_bodystructure(full, NULL));
    assert_string_equal(protect_in_view_body(v, NULL), protect_in_view_body(full, NULL));
    assert_string_equal(protect_in_view_envelope(v, NULL),
                        protect_in_view_envelope(full, NULL));
    const char *specs[] = {"HEADER", "HEADER.FIELDS (Subject From Content-Type)",
                           "HEADER.FIELDS.NOT (Subject)", "HEADER.FIELDS (X-None)"};
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        struct imap_section sec;
        uint32_t path[4];
        const char *fields[8];
        char names[128];
        assert_int_equal(imap_render_section_parse(specs[i], &sec, path, 4, fields, 8,
                                                   names), 0);
        struct imap_section_data a = {0}, b = {0};
        assert_int_equal(imap_render_section(protect_in_view_struct(v), &sec, &a), 0);
        assert_int_equal(imap_render_section(protect_in_view_struct(full), &sec, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.ptr, b.ptr, a.len);
        imap_section_data_free(&a);
        imap_section_data_free(&b);
    }
    protect_in_view_unref(&v);
    protect_in_view_unref(&full);

    /* the summary is for readers the message was sent to only */
    protect_in_reader *bob = protect_in_reader_new(env.pi, "bob@example.org");
    assert_int_equal(protect_in_lookup(env.pi, bob, pm.hint, PROTECT_IN_SUMMARY, &v), 0);
    protect_in_reader_free(&bob);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm);
}

/* ---- KME down, then up ------------------------------------------------------------------ */

static void test_kme_down_then_recovery(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");

    pi_kme_kill(&env);
    protect_in_view *v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_KME_UNAVAILABLE);
    assert_true(protect_in_view_complete(v));
    /* a consistent notice: outer headers, prefixed Subject, text */
    const struct mime_struct *ms = protect_in_view_struct(v);
    const char *data = (const char *)mime_struct_data(ms);
    assert_int_equal(protect_in_view_size(v), mime_struct_size(ms));
    assert_non_null(strstr(data, "From: Sam Sender <sam@example.org>\r\n"));
    assert_non_null(strstr(data, "Message-ID: <m1@example.org>\r\n"));
    assert_non_null(strstr(data, "Subject: [QuMail: not decrypted] "
                                 "Encrypted message (QuMail QKD)\r\n"));
    assert_non_null(strstr(data, "kme-unavailable"));
    assert_non_null(strstr(data, pm.hint + 2)); /* the key ID is named */
    assert_null(strstr(data, "The real subject"));
    assert_null(strstr(data, "Hello Alice"));
    assert_non_null(strstr(protect_in_view_envelope(v, NULL),
                           "\"[QuMail: not decrypted] Encrypted message (QuMail QKD)\""));
    protect_in_view_unref(&v);
    /* notices are not kept: nothing durable for it */
    assert_int_equal(protect_in_lookup(env.pi, alice, pm.hint, PROTECT_IN_SUMMARY, &v), 0);

    /* recovery: the next read decrypts, nothing was lost */
    pi_kme_start(&env);
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm);
}

/* Within notice_ttl a notice is reused (one FETCH of many messages does not
 * hammer a KME that is down), and the link is held down for that time. */
static void test_notice_ttl(void **state)
{
    (void)state;
    struct pi_mail p1, p2;
    pi_mail_make(&env, &p1, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    pi_mail_make(&env, &p2, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct protect_in_config cfg;
    protect_in_config_defaults(&cfg);
    cfg.notice_ttl_ms = 600000;
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    pi_kme_kill(&env);
    protect_in_view *v = pi_open_wait(&env, alice, p1.hint, &p1.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_KME_UNAVAILABLE);
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    uint64_t kme_before = st.kme_requests;
    /* the same message: the cached notice, no fetch */
    assert_int_equal(protect_in_lookup(env.pi, alice, p1.hint, PROTECT_IN_FULL, &v), 1);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_KME_UNAVAILABLE);
    protect_in_view_unref(&v);
    /* another message: the link is known down, no KME request */
    v = pi_open_wait(&env, alice, p2.hint, &p2.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_KME_UNAVAILABLE);
    protect_in_view_unref(&v);
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, kme_before);
    assert_int_equal(p1.m.fetches, 1);
    pi_kme_start(&env);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&p1);
    pi_mail_free(&p2);
}

/* ---- failures that become notices ----------------------------------------------------- */

static void test_tampered(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_OTP_POLY1305, PI_TO_ALICE);
    /* one base64 character of the ciphertext changed into another */
    uint8_t *t = malloc(pm.len);
    memcpy(t, pm.bytes, pm.len);
    const char *ct = strstr((const char *)t, "filename=\"encrypted.qkd\"");
    assert_non_null(ct);
    char *b64 = strstr(ct, "\r\n\r\n") + 4 + 10;
    *b64 = *b64 == 'A' ? 'B' : 'A';
    struct pi_msg tm = {t, pm.len, 0, false, 0};
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, pm.hint, &tm);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_AUTH_FAILED);
    const char *data = (const char *)mime_struct_data(protect_in_view_struct(v));
    assert_null(strstr(data, "Hello Alice"));
    assert_null(strstr(data, "The real subject"));
    protect_in_view_unref(&v);
    /* the keys were stored before use: the genuine copy still decrypts */
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 1);
    pi_reader_close_as(&env, &alice);
    free(t);
    pi_mail_free(&pm);
}

static void test_unknown_key(void **state)
{
    (void)state;
    /* keys the KME never issued */
    uint8_t key[32 + 64];
    memset(key, 7, sizeof(key));
    struct mime_key k = {.key_id = "0b7d3f2a-1c9e-4e58-9a61-2c4d8e0f1a2b", .key = key,
                         .key_len = 32};
    struct mime_encrypt_params p = {.algorithm = MIME_ALG_AES_256_GCM,
                                    .source_kme_id = "kme-a", .master_sae_id = "sae-a",
                                    .slave_sae_id = "sae-b", .recipients = PI_TO_ALICE,
                                    .n_recipients = 1};
    struct pi_mail pm = {0};
    assert_int_equal(mime_encrypt_mem(PI_MSG_MIXED, strlen(PI_MSG_MIXED), &p, &k, 1,
                                      &pm.bytes, &pm.len, NULL), 0);
    pm.hint = pi_hint(pm.bytes, pm.len);
    pm.m = (struct pi_msg){pm.bytes, pm.len, 0, false, 0};
    pi_expect_notice_as(&env, "alice@example.org", &pm, PROTECT_IN_R_KEY_UNKNOWN,
                        "0b7d3f2a-1c9e-4e58-9a61-2c4d8e0f1a2b", NULL);
    pi_mail_free(&pm);
}

/* Two users through one proxy: bob holds a copy of alice's message. */
static void test_wrong_user(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct protect_in_config cfg;
    pi_config(&cfg);
    const struct protect_in_address map[] = {{"carol", "Alice@Example.org"}};
    cfg.default_domain = "example.org";
    cfg.addresses = map;
    cfg.n_addresses = 1;
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice");
    protect_in_reader *bob = protect_in_reader_new(env.pi, "bob@example.org");
    protect_in_reader *carol = protect_in_reader_new(env.pi, "carol");
    assert_int_equal(protect_in_reader_address_count(alice), 1);
    assert_string_equal(protect_in_reader_address(alice, 0), "alice@example.org");
    assert_int_equal(protect_in_reader_address_count(carol), 2);

    /* bob first: a notice, and no key is fetched for him */
    protect_in_view *v = pi_open_wait(&env, bob, pm.hint, &pm.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_NOT_ALLOWED);
    const char *data = (const char *)mime_struct_data(protect_in_view_struct(v));
    assert_null(strstr(data, "Hello Alice"));
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 0);
    /* alice reads it (keys now in the vault, view in memory) */
    v = pi_open_wait(&env, alice, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    /* bob again: still a notice, not the cached view */
    assert_int_equal(protect_in_lookup(env.pi, bob, pm.hint, PROTECT_IN_FULL, &v), 0);
    v = pi_open_wait(&env, bob, pm.hint, &pm.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_NOT_ALLOWED);
    protect_in_view_unref(&v);
    /* carol reads alice's mail (a shared mailbox in the address map) */
    v = pi_open_wait(&env, carol, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    protect_in_reader_free(&alice);
    protect_in_reader_free(&bob);
    pi_reader_close_as(&env, &carol);

    /* recipient_check off: anyone logged in */
    pi_config(&cfg);
    cfg.recipient_check = PROTECT_IN_CHECK_OFF;
    bob = pi_reader_open_as(&env, &cfg, "bob");
    assert_int_equal(protect_in_reader_address_count(bob), 0);
    v = pi_open_wait(&env, bob, pm.hint, &pm.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &bob);
    pi_mail_free(&pm);
}

static void test_unbound_and_no_rule(void **state)
{
    (void)state;
    struct pi_mail unbound, norule;
    pi_mail_make(&env, &unbound, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, NULL);
    const char *stranger_msg = "From: x@elsewhere.example\r\nTo: alice@example.org\r\n"
                               "Subject: s\r\n\r\nbody\r\n";
    pi_mail_make(&env, &norule, stranger_msg, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v = pi_open_wait(&env, alice, unbound.hint, &unbound.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_UNBOUND);
    protect_in_view_unref(&v);
    v = pi_open_wait(&env, alice, norule.hint, &norule.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_NO_SENDER_RULE);
    protect_in_view_unref(&v);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.kme_requests, 0); /* never a guess */
    pi_reader_close_as(&env, &alice);
    /* release_unbound: the unbound copy is read */
    pi_config(&cfg);
    cfg.release_unbound = true;
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v = pi_open_wait(&env, alice, unbound.hint, &unbound.m);
    pi_expect_plain(v, PI_MSG_MIXED);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&unbound);
    pi_mail_free(&norule);
}

/* The outer From names a sender whose rule allows this master SAE, but the
 * From inside the (authenticated) message is someone else's. */
static void test_inner_sender_mismatch(void **state)
{
    (void)state;
    const char *msg = "From: boss@evil.example\r\nTo: alice@example.org\r\n"
                      "Subject: pay now\r\n\r\nbody\r\n";
    struct pi_mail pm;
    pi_mail_make(&env, &pm, msg, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    /* the outer From rewritten to a sender of the right rule */
    char *f = strstr((char *)pm.bytes, "From: boss@evil.example");
    assert_non_null(f);
    memcpy(f, "From: bossy@example.org", strlen("From: bossy@example.org"));
    static const char *const hidden[] = {"pay now", NULL};
    pi_expect_notice_as(&env, "alice@example.org", &pm, PROTECT_IN_R_SENDER_MISMATCH, NULL,
                        hidden);
    pi_mail_free(&pm);
}

/* ---- coalescing, fetch failures ------------------------------------------------------------ */

static void test_coalescing(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_OTP_POLY1305, PI_TO_ALICE);
    /* the first asked fails its fetch: the next one is asked */
    struct pi_msg bad = pm.m;
    bad.fail = true;
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_reader *bob = protect_in_reader_new(env.pi, "bob@example.org");
    enum { N = 6 };
    struct pi_answer a[N];
    memset(a, 0, sizeof(a));
    for (int i = 0; i < N; i++)
        assert_int_equal(protect_in_open(env.pi, i == N - 1 ? bob : alice, pm.hint,
                                         pi_fetch, i == 0 ? &bad : &pm.m, pi_answer_cb,
                                         &a[i]), 0);
    /* one of them is cancelled while waiting */
    assert_int_equal(protect_in_cancel(env.pi, &a[2]), 1);
    assert_true(a[2].done);
    assert_int_equal(a[2].error, PROTECT_IN_ECANCELLED);
    for (int i = 0; i < N; i++)
        pi_run_until(&env.loop, &a[i].done);
    assert_int_equal(bad.fetches, 1);
    assert_int_equal(pm.m.fetches, 1); /* one download for all */
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.builds, 1);
    assert_int_equal(st.decrypted, 1);
    assert_int_equal(st.coalesced, N - 1);
    const protect_in_view *one = a[0].view;
    for (int i = 0; i < N - 1; i++) {
        if (i == 2)
            continue;
        assert_int_equal(a[i].error, 0);
        assert_ptr_equal(a[i].view, one); /* the one view */
        protect_in_view_unref(&a[i].view);
    }
    assert_int_equal(protect_in_view_reason(a[N - 1].view), PROTECT_IN_R_NOT_ALLOWED);
    protect_in_view_unref(&a[N - 1].view);

    /* every fetch fails: a notice for each, nothing cached */
    struct pi_mail pm2;
    pi_mail_make(&env, &pm2, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct pi_msg bad2 = pm2.m;
    bad2.fail = true;
    protect_in_view *v = pi_open_wait(&env, alice, pm2.hint, &bad2);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_FETCH);
    protect_in_view_unref(&v);
    /* a message larger than max_message_size */
    protect_in_reader_free(&alice);
    pi_reader_close_as(&env, &bob);
    pi_config(&cfg);
    cfg.max_message_size = 100;
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v = pi_open_wait(&env, alice, pm2.hint, &pm2.m);
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_R_TOO_LARGE);
    protect_in_view_unref(&v);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm2);
    pi_mail_free(&pm);
}

/* The bytes arrive with the client's own FETCH: the caller supplies them. */
static void test_supplied(void **state)
{
    (void)state;
    struct pi_mail pm;
    pi_mail_make(&env, &pm, PI_MSG_MIXED, MIME_ALG_OTP_POLY1305, PI_TO_ALICE);
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    struct pi_answer a1 = {0}, a2 = {0}, a3 = {0};
    protect_in_fetch *f1 = NULL, *f2 = (protect_in_fetch *)1;
    assert_int_equal(protect_in_open_supplied(env.pi, alice, pm.hint, &f1, pi_answer_cb, &a1), 0);
    assert_non_null(f1);
    /* a second request while the first streams: joins, needs no bytes */
    assert_int_equal(protect_in_open_supplied(env.pi, alice, pm.hint, &f2, pi_answer_cb, &a2), 0);
    assert_null(f2);
    /* the literal arrives in pieces, across loop turns */
    for (size_t off = 0; off < pm.len; off += 700) {
        size_t n = pm.len - off < 700 ? pm.len - off : 700;
        assert_int_equal(protect_in_fetch_write(f1, pm.bytes + off, n), 0);
        uv_run(&env.loop, UV_RUN_NOWAIT);
        assert_false(a1.done);
    }
    protect_in_fetch_done(f1, 0);
    pi_run_until(&env.loop, &a1.done);
    pi_run_until(&env.loop, &a2.done);
    pi_expect_plain(a1.view, PI_MSG_MIXED);
    assert_ptr_equal(a1.view, a2.view);
    protect_in_view_unref(&a1.view);
    protect_in_view_unref(&a2.view);
    /* from memory now: no handle, the answer through the loop */
    f2 = (protect_in_fetch *)1;
    assert_int_equal(protect_in_open_supplied(env.pi, alice, pm.hint, &f2, pi_answer_cb, &a3), 0);
    assert_null(f2);
    assert_false(a3.done);
    pi_run_until(&env.loop, &a3.done);
    pi_expect_plain(a3.view, PI_MSG_MIXED);
    protect_in_view_unref(&a3.view);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.builds, 1);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&pm);
}

/* A message whose X-QKD-Key-ID header names another message: each reader
 * gets the message its own mailbox holds, never the other one. */
static void test_mislabeled_hint(void **state)
{
    (void)state;
    const char *other = "From: sam@example.org\r\nTo: alice@example.org\r\n"
                        "Subject: other\r\n\r\nthe other message\r\n";
    struct pi_mail p1, p2;
    pi_mail_make(&env, &p1, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    pi_mail_make(&env, &p2, other, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    struct pi_answer a1 = {0}, a2 = {0};
    /* c2 presented under c1's hint, first: its fetch supplies the bytes */
    assert_int_equal(protect_in_open(env.pi, alice, p1.hint, pi_fetch, &p2.m, pi_answer_cb, &a2),
                     0);
    assert_int_equal(protect_in_open(env.pi, alice, p1.hint, pi_fetch, &p1.m, pi_answer_cb, &a1),
                     0);
    pi_run_until(&env.loop, &a1.done);
    pi_run_until(&env.loop, &a2.done);
    pi_expect_plain(a2.view, other);
    pi_expect_plain(a1.view, PI_MSG_MIXED);
    assert_int_equal(p1.m.fetches, 1); /* asked again, for its own bytes */
    protect_in_view_unref(&a1.view);
    protect_in_view_unref(&a2.view);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&p1);
    pi_mail_free(&p2);
}

/* ---- the cache: limits, eviction wipes ---------------------------------------------------- */

struct wipes {
    int count;
    size_t bytes;
    bool all_zero;
};

static void on_wiped(void *arg, const uint8_t *p, size_t len)
{
    struct wipes *w = arg;
    w->count++;
    w->bytes += len;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0)
            w->all_zero = false;
    }
}

static void test_eviction_wipes(void **state)
{
    (void)state;
    struct pi_mail p1, p2;
    pi_mail_make(&env, &p1, PI_MSG_MIXED, MIME_ALG_AES_256_GCM, PI_TO_ALICE);
    /* LF-only: normalised into its own buffer (the decrypted one is wiped) */
    const char *lf = "From: sam@example.org\nTo: alice@example.org\nSubject: lf\n\nline\n";
    pi_mail_make(&env, &p2, lf, MIME_ALG_OTP_POLY1305, PI_TO_ALICE);
    struct wipes w = {0, 0, true};
    struct protect_in_config cfg;
    pi_config(&cfg);
    cfg.cache_max_views = 1;
    cfg.test_wiped = on_wiped;
    cfg.test_arg = &w;
    protect_in_reader *alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    protect_in_view *v1 = pi_open_wait(&env, alice, p1.hint, &p1.m);
    size_t size1 = (size_t)protect_in_view_size(v1);
    /* held by us: evicting it does not wipe it yet */
    protect_in_view *v2 = pi_open_wait(&env, alice, p2.hint, &p2.m);
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.cached_views, 1);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(w.count, 0);
    pi_expect_plain(v1, PI_MSG_MIXED); /* still intact */
    protect_in_view_unref(&v1);        /* the last reference: wiped */
    assert_int_equal(w.count, 1);
    assert_int_equal(w.bytes, size1);
    assert_true(w.all_zero);
    assert_int_equal(protect_in_lookup(env.pi, alice, p1.hint, PROTECT_IN_FULL, &v1), 0);
    assert_int_equal(protect_in_view_size(v2), strlen(lf) + 5); /* CRLF */
    protect_in_view_unref(&v2);
    assert_int_equal(w.count, 1); /* still cached */
    /* byte limit: a view larger than the whole cache is not kept */
    pi_reader_close_as(&env, &alice);
    assert_int_equal(w.count, 2); /* freeing the cache wiped the last one */
    assert_true(w.all_zero);
    pi_config(&cfg);
    cfg.cache_max_bytes = 100;
    alice = pi_reader_open_as(&env, &cfg, "alice@example.org");
    v1 = pi_open_wait(&env, alice, p1.hint, &p1.m);
    protect_in_get_stats(env.pi, &st);
    assert_int_equal(st.cached_views, 0);
    protect_in_view_unref(&v1);
    pi_reader_close_as(&env, &alice);
    pi_mail_free(&p1);
    pi_mail_free(&p2);
}

/* ---- the simulator's redelivery grace (kme/README.md) ------------------------------------ */

static void test_kme_redelivery(void **state)
{
    (void)state;
    pi_kme_restart(&env, 60000);
    struct kme_keys *enc = NULL, *d1 = NULL, *d2 = NULL;
    for (int i = 0; i < 100 && enc == NULL; i++) {
        char *err = NULL;
        if (kme_sync_enc_keys(&env.sa_cfg, "sae-b", 2, 256, &enc, &err) < 0) {
            free(err);
            usleep(50 * 1000);
        }
    }
    assert_non_null(enc);
    const char *ids[2] = {enc->keys[0].key_id, enc->keys[1].key_id};
    char *err = NULL;
    assert_int_equal(kme_sync_dec_keys(&env.sb_cfg, "sae-a", ids, 2, &d1, &err), 0);
    /* the reader died before storing them: it asks again */
    assert_int_equal(kme_sync_dec_keys(&env.sb_cfg, "sae-a", ids, 2, &d2, &err), 0);
    assert_memory_equal(d1->material, d2->material, d1->total_len);
    assert_memory_equal(d1->material, enc->material, enc->total_len);
    kme_keys_free(&d2);
    /* still there after a restart of the KME (kept in its store) */
    pi_kme_kill(&env);
    pi_kme_start(&env);
    assert_int_equal(kme_sync_dec_keys(&env.sb_cfg, "sae-a", ids, 1, &d2, &err), 0);
    kme_keys_free(&d2);
    /* after the grace: gone */
    pi_kme_restart(&env, 200);
    assert_int_equal(kme_sync_dec_keys(&env.sb_cfg, "sae-a", ids, 1, &d2, &err), 0);
    kme_keys_free(&d2);
    usleep(800 * 1000);
    assert_true(kme_sync_dec_keys(&env.sb_cfg, "sae-a", ids, 1, &d2, &err) < 0);
    free(err);
    kme_keys_free(&d1);
    kme_keys_free(&enc);
    pi_kme_restart(&env, 0);
}

int main(void)
{
    pi_test_options();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_kme_cache_vault_meta),
        cmocka_unit_test(test_kme_down_then_recovery),
        cmocka_unit_test(test_notice_ttl),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_user),
        cmocka_unit_test(test_unbound_and_no_rule),
        cmocka_unit_test(test_inner_sender_mismatch),
        cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_supplied),
        cmocka_unit_test(test_mislabeled_hint),
        cmocka_unit_test(test_eviction_wipes),
        cmocka_unit_test(test_kme_redelivery),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
