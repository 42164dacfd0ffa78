/* Test environment for protect_in: the real KME simulator (two KMEs,
 * kme-a for the sending SAE sae-a, kme-b for the reading SAE sae-b) in a
 * child process so that it can be killed and restarted like a real one,
 * a real vault, real mime encryption through kme-a, and a protect_in on a
 * loop of the test's own, reading through kme-b. */
#ifndef PI_TEST_H
#define PI_TEST_H

/* Each test binary uses a part of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "incoming.h"
#include "log.h"
#include "kme_client.h"
#include "kme_source.h"
#include "kme_server.h"
#include "kme_vault.h"
#include "mime.h"
#include "mime_struct.h"
#include "imap_render.h"
#include "policy.h"

#define DIR_LEN 400
#define PATH_LEN 500

struct pi_env {
    char dir[DIR_LEN];
    char certs[DIR_LEN];
    char ca[PATH_LEN];
    pid_t kme_pid;
    uint16_t port_a, port_b, link_a, link_b;
    uint64_t redeliver_ms;
    uint64_t rate_bps;          /* simulated key rate; 0: 20 Mbit/s */
    int64_t max_key_count;      /* pool bound; 0: 100000 */
    uint64_t dec_wait_ms;       /* the KME's dec_keys_wait (0: answer at once) */
    bool e004;                  /* the KMEs also serve ETSI 004 (e4_port_a/b) */
    uint16_t e4_port_a, e4_port_b;
    char url_a[64], url_b[64];
    char sa_cert[PATH_LEN], sa_key[PATH_LEN], sb_cert[PATH_LEN], sb_key[PATH_LEN];
    struct kme_client_config sa_cfg;   /* the sender (enc_keys at kme-a) */
    struct kme_client_config sb_cfg;   /* the reader (dec_keys at kme-b) */
    char vault_path[PATH_LEN], vault_key[PATH_LEN];
    /* the reading side, on the test thread */
    uv_loop_t loop;
    kme_client *kme;
    kme_source *src004;         /* e004: the reader's 004 source for "site" */
    const char *ksid004;        /* its stream */
    kme_vault *vault;
    policy_store *policies;
    protect_in *pi;
};

/* PI_TEST_FILTER=name runs one test; PI_TEST_DEBUG=1 logs at debug level. */
static void pi_test_options(void)
{
    if (getenv("PI_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("PI_TEST_FILTER"));
    if (getenv("PI_TEST_DEBUG") != NULL)
        qlog_set_level(QLOG_DEBUG);
}

static void pi_rmrf(const char *dir)
{
    char cmd[PATH_LEN + 20];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", dir);
}

/* A fresh folder for one test binary, with certificates. */
static void pi_env_init(struct pi_env *e, const char *name)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "%s/%s-%d", QUMAIL_TEST_TMP, name, (int)getpid());
    pi_rmrf(e->dir);
    assert_int_equal(mkdir(e->dir, 0700), 0);
    snprintf(e->certs, sizeof(e->certs), "%s/certs", QUMAIL_TEST_TMP);
    char cmd[2 * PATH_LEN];
    /* shared by the binaries of this folder; mkcerts keeps what exists */
    snprintf(cmd, sizeof(cmd),
             "flock %s/.certs.lock sh %s/certs/mkcerts.sh -o %s -k kme-a -k kme-b "
             "-s sae-a -s sae-b >/dev/null 2>&1",
             QUMAIL_TEST_TMP, QUMAIL_SRC_DIR, e->certs);
    assert_int_equal(system(cmd), 0);
    snprintf(e->ca, sizeof(e->ca), "%s/ca.pem", e->certs);
    snprintf(e->sa_cert, sizeof(e->sa_cert), "%s/sae-a.pem", e->certs);
    snprintf(e->sa_key, sizeof(e->sa_key), "%s/sae-a.key", e->certs);
    snprintf(e->sb_cert, sizeof(e->sb_cert), "%s/sae-b.pem", e->certs);
    snprintf(e->sb_key, sizeof(e->sb_key), "%s/sae-b.key", e->certs);
    snprintf(e->vault_path, sizeof(e->vault_path), "%s/vault/vault.db", e->dir);
    snprintf(e->vault_key, sizeof(e->vault_key), "%s/vault/vault.key", e->dir);
}

/* ---- the KME simulator in a child process ----------------------------------- */

static char *kme_json(const struct pi_env *e)
{
    char *s = malloc(10000);
    assert_non_null(s);
    char kme[2][4900];
    for (int i = 0; i < 2; i++) {
        const char *id = i == 0 ? "kme-a" : "kme-b";
        const char *peer = i == 0 ? "kme-b" : "kme-a";
        snprintf(kme[i], sizeof(kme[i]),
                 "{\"kme_id\":\"%s\",\"port\":%u,"
                 "\"tls\":{\"cert\":\"%s/%s.pem\",\"key\":\"%s/%s.key\",\"ca\":\"%s\"},"
                 "\"database\":\"%s/%s.db\",\"link\":{\"port\":%u,\"peer_kme_id\":\"%s\"},"
                 "\"secret_key_rate\":%llu,\"max_key_count\":%lld,"
                 "\"dec_keys_wait\":\"%llums\",\"dec_keys_redeliver\":\"%llums\","
                 "\"sqlite_synchronous\":\"normal\"%s}",
                 id, (unsigned)(i == 0 ? e->port_a : e->port_b), e->certs, id, e->certs, id,
                 e->ca, e->dir, id, (unsigned)(i == 0 ? e->link_a : e->link_b), peer,
                 (unsigned long long)(e->rate_bps ? e->rate_bps : 20000000),
                 (long long)(e->max_key_count ? e->max_key_count : 100000),
                 (unsigned long long)e->dec_wait_ms,
                 (unsigned long long)e->redeliver_ms,
                 e->e004 ? ",\"etsi004\":{\"port\":0,\"chunk_size\":32,"
                           "\"handshake_timeout\":\"2s\"}"
                         : "");
    }
    snprintf(s, 10000, "{\"kmes\":[%s,%s]}", kme[0], kme[1]);
    return s;
}

/* Starts both KMEs in a child (ports 0 the first time, then the same
 * ports again) and waits until they answer. */
static void pi_kme_start(struct pi_env *e)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char *json = kme_json(e);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        uv_loop_t loop;
        uv_loop_init(&loop);
        kme_server_config *cfg = NULL;
        char *err = NULL;
        kme_server *srv = NULL;
        if (kme_server_config_parse("pi-test", NULL, json, strlen(json), &cfg, &err) < 0 ||
            kme_server_start(&loop, cfg, &srv, &err) < 0) {
            fprintf(stderr, "kme: %s\n", err != NULL ? err : "?");
            _exit(3);
        }
        uint16_t ports[6] = {kme_server_port(srv, 0), kme_server_port(srv, 1),
                             kme_server_link_port(srv, 0), kme_server_link_port(srv, 1),
                             kme_server_004_port(srv, 0), kme_server_004_port(srv, 1)};
        if (write(fds[1], ports, sizeof(ports)) != (ssize_t)sizeof(ports))
            _exit(4);
        close(fds[1]);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(0);
    }
    free(json);
    close(fds[1]);
    uint16_t ports[6];
    ssize_t n = read(fds[0], ports, sizeof(ports));
    close(fds[0]);
    assert_int_equal(n, (ssize_t)sizeof(ports));
    e->kme_pid = pid;
    e->port_a = ports[0];
    e->port_b = ports[1];
    e->link_a = ports[2];
    e->link_b = ports[3];
    e->e4_port_a = ports[4];
    e->e4_port_b = ports[5];
    snprintf(e->url_a, sizeof(e->url_a), "https://127.0.0.1:%u", e->port_a);
    snprintf(e->url_b, sizeof(e->url_b), "https://127.0.0.1:%u", e->port_b);
    e->sa_cfg = (struct kme_client_config){.url = e->url_a, .cert_file = e->sa_cert,
                                           .key_file = e->sa_key, .ca_file = e->ca,
                                           .expect_kme_id = "kme-a"};
    e->sb_cfg = (struct kme_client_config){.url = e->url_b, .cert_file = e->sb_cert,
                                           .key_file = e->sb_key, .ca_file = e->ca,
                                           .expect_kme_id = "kme-b",
                                           .connect_timeout_ms = 2000,
                                           .request_timeout_ms = 5000,
                                           .retry_initial_ms = 20,
                                           .retry_max_ms = 100,
                                           .dec_deadline_ms = 400};
}

/* kill -9 of the KME process (its state is durable). */
static void pi_kme_kill(struct pi_env *e)
{
    if (e->kme_pid <= 0)
        return;
    kill(e->kme_pid, SIGKILL);
    int st;
    waitpid(e->kme_pid, &st, 0);
    e->kme_pid = 0;
}

/* The KME process again with another redelivery grace (same ports, same
 * durable state). */
static void pi_kme_restart(struct pi_env *e, uint64_t redeliver_ms)
{
    pi_kme_kill(e);
    e->redeliver_ms = redeliver_ms;
    pi_kme_start(e);
}

/* A test binary's group setup: its folder, certificates and the KME
 * simulator with the given redelivery grace; pi_suite_end undoes it. */
static void pi_suite_begin(struct pi_env *e, const char *name, uint64_t redeliver_ms)
{
    pi_env_init(e, name);
    e->redeliver_ms = redeliver_ms;
    pi_kme_start(e);
}

static void pi_suite_end(struct pi_env *e)
{
    pi_kme_kill(e);
    pi_rmrf(e->dir);
}

/* ---- sending: real encryption with keys from kme-a ----------------------------- */

/* Encrypts msg for the given envelope recipients (NULL-terminated) with
 * keys from kme-a (retrying while the link fills the pool). *ids_r
 * (optional) gets the first key ID. Returns the message (malloc'd). */
static uint8_t *pi_encrypt(struct pi_env *e, const char *msg, enum mime_alg alg,
                           const char *const *rcpts, size_t *len_r)
{
    size_t mlen = strlen(msg);
    uint64_t bits = 0;
    assert_int_equal(mime_key_bits_needed(alg, mlen, &bits), 0);
    struct kme_keys *keys = NULL;
    for (int i = 0; i < 200 && keys == NULL; i++) {
        char *err = NULL;
        if (kme_sync_enc_bits(&e->sa_cfg, "sae-b", bits, &keys, &err) < 0) {
            free(err);
            usleep(50 * 1000);
        }
    }
    assert_non_null(keys);
    struct mime_key *mk = calloc(keys->count, sizeof(*mk));
    assert_non_null(mk);
    for (size_t i = 0; i < keys->count; i++) {
        mk[i].key_id = keys->keys[i].key_id;
        mk[i].key = keys->keys[i].bytes;
        mk[i].key_len = keys->keys[i].len;
    }
    size_t nr = 0;
    while (rcpts != NULL && rcpts[nr] != NULL)
        nr++;
    struct mime_encrypt_params p = {
        .algorithm = alg,
        .source_kme_id = "kme-a",
        .master_sae_id = "sae-a",
        .slave_sae_id = "sae-b",
        .protect_subject = 1,
        .recipients = rcpts,
        .n_recipients = nr,
    };
    unsigned char *out = NULL;
    char *err = NULL;
    int ret = mime_encrypt_mem(msg, mlen, &p, mk, keys->count, &out, len_r, &err);
    if (ret < 0)
        fail_msg("encrypt: %s", err);
    free(mk);
    kme_keys_free(&keys);
    return out;
}

/* ---- the reading side --------------------------------------------------------------- */

static kme_client *pi_link(void *arg, const char *name)
{
    struct pi_env *e = arg;
    return strcmp(name, "site") == 0 ? e->kme : NULL;
}

/* The ETSI 004 client configuration for kme-a (slot 0, sae-a) or kme-b
 * (slot 1, sae-b). */
static struct etsi004_client_config pi_e4_config(const struct pi_env *e, int slot)
{
    return (struct etsi004_client_config){
        .host = "127.0.0.1", .port = slot == 0 ? e->e4_port_a : e->e4_port_b,
        .server_name = "localhost", .cert_file = slot == 0 ? e->sa_cert : e->sb_cert,
        .key_file = slot == 0 ? e->sa_key : e->sb_key, .ca_file = e->ca,
        .request_timeout_ms = 10000};
}

static kme_source *pi_source(void *arg, const char *name)
{
    struct pi_env *e = arg;
    return strcmp(name, "site") == 0 ? e->src004 : NULL;
}

static const char PI_POLICY[] =
    "sender example.org link=site master_sae=sae-a\n"
    "sender evil.example link=site master_sae=sae-x\n";

/* Without cmocka asserts, for forked children: 0, or -1 with *err_r. */
static int pi_reader_try_open(struct pi_env *e, const struct protect_in_config *cfg,
                              enum kme_vault_sync sync, char **err_r)
{
    *err_r = NULL;
    if (uv_loop_init(&e->loop) != 0)
        return -1;
    e->kme = kme_client_new(&e->loop, &e->sb_cfg, err_r);
    if (e->kme == NULL)
        return -1;
    char vdir[PATH_LEN];
    if (strlen(e->dir) + 7 >= sizeof(vdir))
        return -1;
    snprintf(vdir, sizeof(vdir), "%s/vault", e->dir);
    mkdir(vdir, 0700);
    struct kme_vault_config vc = {.path = e->vault_path, .key_file = e->vault_key,
                                  .create_key = true, .sync = sync};
    if (kme_vault_open(&vc, &e->vault, err_r) < 0)
        return -1;
    const char *links[] = {"site", NULL};
    policy *pol = NULL;
    if (policy_load_buffer("test.policy", PI_POLICY, strlen(PI_POLICY), links, &pol,
                           err_r) < 0)
        return -1;
    e->policies = policy_store_new(pol);
    struct protect_in_deps deps = {.loop = &e->loop, .vault = e->vault,
                                   .policies = e->policies, .link = pi_link,
                                   .link_arg = e};
    if (e->e004 && e->ksid004 != NULL) {
        struct etsi004_client_config c4 = pi_e4_config(e, 1);
        etsi004_client *c = etsi004_client_new(&e->loop, &c4, err_r);
        struct kme_source_stream st = {.ksid = e->ksid004, .chunk_size = 32};
        if (c == NULL || (e->src004 = kme_source_new_004(c, true, &st, err_r)) == NULL)
            return -1;
        deps.source = pi_source;
        deps.source_arg = e;
    }
    e->pi = protect_in_new(&deps, cfg, err_r);
    return e->pi != NULL ? 0 : -1;
}

static void pi_reader_open(struct pi_env *e, struct protect_in_config *cfg,
                           enum kme_vault_sync sync)
{
    char *err = NULL;
    if (pi_reader_try_open(e, cfg, sync, &err) < 0)
        fail_msg("reader: %s", err != NULL ? err : "?");
}

/* Frees the reading side; without cmocka asserts (forked children): what
 * uv_loop_close says (0: no handle was left behind). */
static int pi_reader_try_close(struct pi_env *e)
{
    qlog_debug("test: reader close");
    protect_in_free(&e->pi);
    kme_client_free(&e->kme);
    kme_source_free(&e->src004);
    while (uv_run(&e->loop, UV_RUN_DEFAULT) != 0) {
    }
    kme_vault_close(&e->vault);
    policy_store_free(&e->policies);
    return uv_loop_close(&e->loop);
}

/* Frees the reading side and checks that no handle was left behind. */
static void pi_reader_close(struct pi_env *e)
{
    assert_int_equal(pi_reader_try_close(e), 0);
}

/* The tests' configuration: the defaults, but a notice is never reused
 * (every read asks again: deterministic tests). */
static void pi_config(struct protect_in_config *cfg)
{
    protect_in_config_defaults(cfg);
    cfg->notice_ttl_ms = 0;
}

/* pi_reader_open (vault sync normal) and a reader for login. */
static protect_in_reader *pi_reader_open_as(struct pi_env *e, struct protect_in_config *cfg,
                                            const char *login)
{
    pi_reader_open(e, cfg, KME_VAULT_SYNC_NORMAL);
    protect_in_reader *r = protect_in_reader_new(e->pi, login);
    assert_non_null(r);
    return r;
}

/* Frees the reader *r and closes the reading side. */
static void pi_reader_close_as(struct pi_env *e, protect_in_reader **r)
{
    protect_in_reader_free(r);
    pi_reader_close(e);
}

/* ---- a mailbox message and the fetch callback ------------------------------------- */

struct pi_msg {
    const uint8_t *bytes;
    size_t len;
    int fetches;        /* fetch callbacks received */
    bool fail;          /* answer the fetch with an error */
    size_t chunk;       /* write in pieces of this size (0: at once) */
};

static void pi_fetch(void *arg, protect_in_fetch *f)
{
    struct pi_msg *m = arg;
    m->fetches++;
    if (m->fail) {
        protect_in_fetch_done(f, -1);
        return;
    }
    size_t step = m->chunk > 0 ? m->chunk : m->len;
    int ret = 0;
    for (size_t off = 0; off < m->len && ret == 0; off += step)
        ret = protect_in_fetch_write(f, m->bytes + off,
                                     m->len - off < step ? m->len - off : step);
    protect_in_fetch_done(f, ret);
}

/* Runs the loop until *flag. NOWAIT first: work due now (a timer of 0)
 * runs without blocking in poll for unrelated handles (idle KME
 * connections). */
static void pi_run_until(uv_loop_t *loop, const bool *flag)
{
    while (!*flag) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (!*flag)
            uv_run(loop, UV_RUN_ONCE);
    }
}

struct pi_answer {
    bool done;
    int error;
    protect_in_view *view;
};

static void pi_answer_cb(void *arg, int error, protect_in_view *view)
{
    struct pi_answer *a = arg;
    assert_false(a->done);
    a->done = true;
    a->error = error;
    a->view = view;
}

/* Opens the message for reader r and runs the loop until the answer. */
static protect_in_view *pi_open_wait(struct pi_env *e, protect_in_reader *r,
                                     const char *hint, struct pi_msg *m)
{
    struct pi_answer a = {0};
    qlog_debug("test: open %s for %s", hint, protect_in_reader_login(r));
    assert_int_equal(protect_in_open(e->pi, r, hint, pi_fetch, m, pi_answer_cb, &a), 0);
    assert_false(a.done); /* never from inside the call */
    pi_run_until(&e->loop, &a.done);
    assert_int_equal(a.error, 0);
    assert_non_null(a.view);
    return a.view;
}

/* The hint of an encrypted message, from its header as a probe would. */
static char *pi_hint(const uint8_t *msg, size_t len)
{
    char *hint = NULL;
    assert_int_equal(protect_in_classify(msg, len, &hint), 1);
    assert_non_null(hint);
    return hint;
}

/* One encrypted message as a mailbox holds it: its bytes, its hint and
 * the fetch state for protect_in_open (all owned here: pi_mail_free). */
struct pi_mail {
    uint8_t *bytes;
    size_t len;
    char *hint;
    struct pi_msg m;
};

/* msg encrypted with keys from kme-a for rcpts (pi_encrypt). */
static void pi_mail_make(struct pi_env *e, struct pi_mail *pm, const char *msg,
                         enum mime_alg alg, const char *const *rcpts)
{
    memset(pm, 0, sizeof(*pm));
    pm->bytes = pi_encrypt(e, msg, alg, rcpts, &pm->len);
    pm->hint = pi_hint(pm->bytes, pm->len);
    pm->m = (struct pi_msg){pm->bytes, pm->len, 0, false, 0};
}

static void pi_mail_free(struct pi_mail *pm)
{
    free(pm->hint);
    free(pm->bytes);
    memset(pm, 0, sizeof(*pm));
}

/* Reads pm once as a new reader login (the test configuration) and checks
 * that the answer is a notice for `reason` which does not show `hidden`
 * (optional, NULL-terminated: texts of the plaintext) and names `shown`
 * (optional). */
static void pi_expect_notice_as(struct pi_env *e, const char *login, struct pi_mail *pm,
                                enum protect_in_reason reason, const char *shown,
                                const char *const *hidden)
{
    struct protect_in_config cfg;
    pi_config(&cfg);
    protect_in_reader *r = pi_reader_open_as(e, &cfg, login);
    protect_in_view *v = pi_open_wait(e, r, pm->hint, &pm->m);
    assert_int_equal(protect_in_view_reason(v), reason);
    const char *data = (const char *)mime_struct_data(protect_in_view_struct(v));
    if (shown != NULL)
        assert_non_null(strstr(data, shown));
    for (size_t i = 0; hidden != NULL && hidden[i] != NULL; i++)
        assert_null(strstr(data, hidden[i]));
    protect_in_view_unref(&v);
    pi_reader_close_as(e, &r);
}

/* The view must be exactly what the plaintext gives when parsed and
 * rendered directly. */
static void pi_expect_plain(const protect_in_view *v, const char *plain)
{
    struct mime_struct *ms = NULL;
    assert_int_equal(mime_struct_parse(plain, strlen(plain), 0, &ms, NULL), 0);
    assert_true(protect_in_view_complete(v));
    assert_int_equal(protect_in_view_reason(v), PROTECT_IN_DECRYPTED);
    assert_int_equal(protect_in_view_size(v), mime_struct_size(ms));
    const struct mime_struct *vs = protect_in_view_struct(v);
    assert_memory_equal(mime_struct_data(vs), mime_struct_data(ms), mime_struct_size(ms));
    struct imap_render_buf bs = {0}, env = {0};
    imap_render_bodystructure(ms, 1, &bs);
    imap_render_envelope(ms, &env);
    assert_string_equal(protect_in_view_bodystructure(v, NULL), bs.data);
    assert_string_equal(protect_in_view_envelope(v, NULL), env.data);
    imap_render_buf_free(&bs);
    imap_render_buf_free(&env);
    struct imap_render_buf body = {0};
    imap_render_bodystructure(ms, 0, &body);
    assert_string_equal(protect_in_view_body(v, NULL), body.data);
    imap_render_buf_free(&body);
    mime_struct_free(&ms);
}

static const char *const PI_TO_ALICE[] = {"alice@example.org", NULL};

static const char PI_MSG_MIXED[] =
    "From: Sam Sender <sam@example.org>\r\n"
    "To: Alice <alice@example.org>\r\n"
    "Subject: The real subject\r\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Alice, the plan is attached.\r\n"
    "--b1\r\n"
    "Content-Type: application/octet-stream; name=\"plan.bin\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename=\"plan.bin\"\r\n"
    "\r\n"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n"
    "--b1--\r\n";

#endif
