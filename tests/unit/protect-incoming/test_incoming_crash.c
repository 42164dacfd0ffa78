/* kill -9 of the reading side at every point of a first read (keys just
 * received, before / after the vault commit, during decryption, view
 * built) and at random moments during the vault write: a new process
 * state then still decrypts the message. With the KME's redelivery grace
 * (kme/README.md, dec_keys_redeliver) this holds at every instant; without
 * it (plain ETSI 014), a kill between the KME's answer and the vault
 * commit loses the keys - shown here as what it is: a key-unknown notice,
 * never garbage.
 *
 * The reader runs in forked children (no cmocka asserts there: results
 * come back as exit codes); the KME simulator in another child. */
#include <fcntl.h>
#include <poll.h>
#include <time.h>

#include "pi_test.h"

static struct pi_env env;

static int setup(void **state)
{
    (void)state;
    pi_suite_begin(&env, "crash", 60000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pi_suite_end(&env);
    return 0;
}

/* ---- the reading child ------------------------------------------------------ */

static int stage_fd = -1;
static const char *stop_at; /* block at this stage (the parent kills us) */

static void on_stage(void *arg, const char *stage)
{
    (void)arg;
    char line[64];
    int n = snprintf(line, sizeof(line), "%s\n", stage);
    if (write(stage_fd, line, (size_t)n) != n)
        _exit(90);
    if (stop_at != NULL && strcmp(stage, stop_at) == 0) {
        for (;;)
            pause();
    }
}

struct read_result {
    int reason;       /* PROTECT_IN_DECRYPTED or the notice reason */
    int plain_ok;     /* the view is the plaintext */
    uint64_t from_vault, from_kme;
};

/* One read in this (child) process; the outcome through *res. Exit codes
 * 80+ are setup failures. */
static void child_read(const uint8_t *c, size_t clen, const char *plain,
                       struct read_result *res)
{
    struct protect_in_config cfg;
    pi_config(&cfg);
    cfg.test_stage = on_stage;
    char *err = NULL;
    if (pi_reader_try_open(&env, &cfg, KME_VAULT_SYNC_FULL, &err) < 0) {
        fprintf(stderr, "child: %s\n", err != NULL ? err : "?");
        _exit(80);
    }
    protect_in_reader *alice = protect_in_reader_new(env.pi, "alice@example.org");
    char *hint = NULL;
    if (alice == NULL || protect_in_classify(c, clen, &hint) != 1)
        _exit(81);
    struct pi_msg m = {c, clen, 0, false, 0};
    struct pi_answer a = {0};
    if (protect_in_open(env.pi, alice, hint, pi_fetch, &m, pi_answer_cb, &a) < 0)
        _exit(82);
    pi_run_until(&env.loop, &a.done);
    if (a.error != 0 || a.view == NULL)
        _exit(83);
    res->reason = protect_in_view_reason(a.view);
    const struct mime_struct *ms = protect_in_view_struct(a.view);
    res->plain_ok = res->reason == PROTECT_IN_DECRYPTED &&
                    mime_struct_size(ms) == strlen(plain) &&
                    memcmp(mime_struct_data(ms), plain, strlen(plain)) == 0;
    struct protect_in_stats st;
    protect_in_get_stats(env.pi, &st);
    res->from_vault = st.keys_from_vault;
    res->from_kme = st.keys_from_kme;
    protect_in_view_unref(&a.view);
    protect_in_reader_free(&alice);
    free(hint);
    pi_reader_try_close(&env);
}

/* ---- the parent --------------------------------------------------------------- */

struct child {
    pid_t pid;
    int fd; /* stage lines */
};

static struct child spawn_reader(const uint8_t *c, size_t clen, const char *plain,
                                 const char *block_at)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        stage_fd = fds[1];
        stop_at = block_at;
        struct read_result res = {0};
        child_read(c, clen, plain, &res);
        _exit(0);
    }
    close(fds[1]);
    return (struct child){pid, fds[0]};
}

/* Reads stage lines until `stage` arrives (true) or the child ends. */
static bool wait_stage(struct child *ch, const char *stage)
{
    char buf[256];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(ch->fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            return false;
        have += (size_t)n;
        buf[have] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n')) != NULL) {
            *nl = '\0';
            if (strcmp(buf, stage) == 0)
                return true;
            memmove(buf, nl + 1, strlen(nl + 1) + 1);
            have = strlen(buf);
        }
    }
}

static void kill9(struct child *ch)
{
    kill(ch->pid, SIGKILL);
    int st;
    waitpid(ch->pid, &st, 0);
    close(ch->fd);
}

/* A fresh process reads the message; returns what it saw. */
static struct read_result verify(const uint8_t *c, size_t clen, const char *plain)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        stage_fd = open("/dev/null", O_WRONLY);
        stop_at = NULL;
        struct read_result res = {0};
        child_read(c, clen, plain, &res);
        if (write(fds[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
            _exit(91);
        _exit(0);
    }
    close(fds[1]);
    struct read_result res;
    ssize_t n = read(fds[0], &res, sizeof(res));
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("verifier exited with %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    assert_int_equal(n, (ssize_t)sizeof(res));
    return res;
}

static const char PLAIN[] =
    "From: Sam <sam@example.org>\r\nTo: alice@example.org\r\n"
    "Subject: survives kill -9\r\n\r\nThe body.\r\n";

/* Killed exactly at a stage, then read again by a new process. */
static void kill_at(const char *stage, bool keys_in_vault)
{
    size_t clen;
    uint8_t *c = pi_encrypt(&env, PLAIN, MIME_ALG_OTP_POLY1305, PI_TO_ALICE, &clen);
    struct child ch = spawn_reader(c, clen, PLAIN, stage);
    if (!wait_stage(&ch, stage))
        fail_msg("the reader never reached %s", stage);
    kill9(&ch);
    struct read_result r = verify(c, clen, PLAIN);
    if (r.reason != PROTECT_IN_DECRYPTED)
        fail_msg("after kill -9 at %s: %s", stage,
                 protect_in_reason_name((enum protect_in_reason)r.reason));
    assert_true(r.plain_ok);
    if (keys_in_vault) {
        /* committed before the kill: the vault alone */
        assert_true(r.from_vault > 0);
        assert_int_equal(r.from_kme, 0);
    } else {
        /* not committed: the KME hands them out again (grace) */
        assert_true(r.from_kme > 0);
    }
    /* and from now on from the vault */
    r = verify(c, clen, PLAIN);
    assert_true(r.plain_ok);
    assert_int_equal(r.from_kme, 0);
    free(c);
}

static void test_kill_keys_received(void **state)
{
    (void)state;
    kill_at("keys-received", false);
}

static void test_kill_before_vault_commit(void **state)
{
    (void)state;
    kill_at("vault-put", false);
}

static void test_kill_after_vault_commit(void **state)
{
    (void)state;
    kill_at("vault-put-done", true);
}

static void test_kill_during_decryption(void **state)
{
    (void)state;
    kill_at("decrypt", true);
}

static void test_kill_view_built(void **state)
{
    (void)state;
    kill_at("built", true);
}

/* Random moments from the KME's answer through the vault commit (fsync). */
static void test_kill_random_during_vault_write(void **state)
{
    (void)state;
    srand((unsigned)time(NULL));
    for (int round = 0; round < 8; round++) {
        size_t clen;
        uint8_t *c = pi_encrypt(&env, PLAIN, MIME_ALG_OTP_POLY1305, PI_TO_ALICE, &clen);
        struct child ch = spawn_reader(c, clen, PLAIN, NULL);
        assert_true(wait_stage(&ch, "keys-received"));
        usleep((useconds_t)(rand() % 4000));
        kill9(&ch);
        struct read_result r = verify(c, clen, PLAIN);
        if (r.reason != PROTECT_IN_DECRYPTED)
            fail_msg("round %d: %s", round,
                     protect_in_reason_name((enum protect_in_reason)r.reason));
        assert_true(r.plain_ok);
        free(c);
    }
}

/* Plain ETSI 014 (no grace): a kill between the KME's answer and the
 * commit loses the keys. The message then shows a notice, not garbage. */
static void test_without_grace_keys_lost(void **state)
{
    (void)state;
    pi_kme_restart(&env, 0);
    size_t clen;
    uint8_t *c = pi_encrypt(&env, PLAIN, MIME_ALG_OTP_POLY1305, PI_TO_ALICE, &clen);
    struct child ch = spawn_reader(c, clen, PLAIN, "keys-received");
    assert_true(wait_stage(&ch, "keys-received"));
    kill9(&ch);
    struct read_result r = verify(c, clen, PLAIN);
    assert_int_equal(r.reason, PROTECT_IN_R_KEY_UNKNOWN);
    free(c);
    /* after the commit it holds without the grace too */
    c = pi_encrypt(&env, PLAIN, MIME_ALG_AES_256_GCM, PI_TO_ALICE, &clen);
    ch = spawn_reader(c, clen, PLAIN, "vault-put-done");
    assert_true(wait_stage(&ch, "vault-put-done"));
    kill9(&ch);
    r = verify(c, clen, PLAIN);
    assert_int_equal(r.reason, PROTECT_IN_DECRYPTED);
    assert_true(r.plain_ok);
    free(c);
}

int main(void)
{
    pi_test_options();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_keys_received),
        cmocka_unit_test(test_kill_before_vault_commit),
        cmocka_unit_test(test_kill_after_vault_commit),
        cmocka_unit_test(test_kill_during_decryption),
        cmocka_unit_test(test_kill_view_built),
        cmocka_unit_test(test_kill_random_during_vault_write),
        cmocka_unit_test(test_without_grace_keys_lost),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
