/* protect_append with a real vault and the real mime engine: every corpus
 * message encrypted, no plaintext in the stored bytes, the keys in the
 * vault under (local, owner), bound to the owner, decrypting to exactly
 * what Dovecot serves for the plaintext (mime_struct_normalize); already
 * encrypted and empty messages unchanged; OTP; streaming canonicalisation;
 * a 10 MB message; a failing vault write gives an error and no output;
 * the thread-pool path with cancel. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../vault/vault_test.h"
#include "append.h"
#include "mime_struct.h"

#define OWNER "Alice@Example.ORG"

static struct vt g_vt;
static kme_vault *g_vault;

static int setup(void **state)
{
    (void)state;
    vt_init(&g_vt, "append");
    g_vt.cfg.sync = KME_VAULT_SYNC_NORMAL;
    char *err = NULL;
    if (kme_vault_open(&g_vt.cfg, &g_vault, &err) != 0) {
        fprintf(stderr, "vault: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kme_vault_close(&g_vault);
    vt_cleanup(&g_vt);
    return 0;
}

static int memfd_of(const void *data, size_t len)
{
    int fd = memfd_create("test-in", MFD_CLOEXEC);
    assert_true(fd >= 0);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        assert_true(n > 0);
        p += n;
        left -= (size_t)n;
    }
    return fd; /* offset at the end, as after the session wrote a literal */
}

static uint8_t *read_fd(int fd, uint64_t len)
{
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    uint64_t off = 0;
    while (off < len) {
        ssize_t n = pread(fd, b + off, len - off, (off_t)off);
        assert_true(n > 0);
        off += (uint64_t)n;
    }
    return b;
}

static uint8_t *read_file(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len_r = (size_t)n;
    return b;
}

static uint8_t *canonical(const void *msg, size_t len, size_t *out_len)
{
    uint64_t n = mime_struct_normalized_size(msg, len);
    uint8_t *out = malloc(n + 1);
    assert_non_null(out);
    *out_len = mime_struct_normalize(msg, len, out);
    assert_int_equal(*out_len, n);
    return out;
}

/* Decrypts with keys from the vault, as the incoming side does. */
static uint8_t *decrypt_from_vault(const uint8_t *enc, size_t enc_len, size_t *out_len,
                                   struct mime_info **info_r)
{
    struct mime_info *info = NULL;
    assert_int_equal(mime_inspect_mem(enc, enc_len, &info, NULL), 0);
    assert_string_equal(mime_info_source_kme_id(info), KME_VAULT_LOCAL_SOURCE);
    size_t n = mime_info_key_count(info);
    const char **ids = calloc(n, sizeof(*ids));
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = mime_info_key_id(info, i);
    struct kme_vault_keys *vk = NULL;
    assert_int_equal(kme_vault_keys_get(g_vault, KME_VAULT_LOCAL_SOURCE,
                                        mime_info_master_sae_id(info), ids, n, &vk, NULL),
                     0);
    assert_int_equal(vk->found, n);
    struct mime_key *keys = calloc(n, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        keys[i].key_id = vk->keys[i].key_id;
        keys[i].key = vk->keys[i].bytes;
        keys[i].key_len = vk->keys[i].len;
    }
    struct mime_key_list list = {keys, n};
    unsigned char *plain = NULL;
    struct mime_info *dinfo = NULL;
    char *err = NULL;
    int rc = mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &list, &plain, out_len,
                              &dinfo, &err);
    if (rc != 0)
        fprintf(stderr, "decrypt: %s\n", err);
    assert_int_equal(rc, 0);
    free(keys);
    free(ids);
    kme_vault_keys_free(&vk);
    mime_info_free(&info);
    *info_r = dinfo;
    return plain;
}

static void check_roundtrip(const uint8_t *msg, size_t len, const struct protect_append_params *p,
                            const char *marker)
{
    int in = memfd_of(msg, len);
    struct protect_append_result r;
    char *err = NULL;
    int rc = protect_append_run(p, in, len, &r, &err);
    if (rc != 0)
        fprintf(stderr, "append: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_ENCRYPTED);
    assert_true(r.fd >= 0);
    struct stat st;
    assert_int_equal(fstat(r.fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, r.size);
    uint8_t *enc = read_fd(r.fd, r.size);
    if (marker != NULL)
        assert_null(memmem(enc, r.size, marker, strlen(marker)));
    /* The stored form is CRLF already: the server will not change it. */
    for (size_t i = 0; i < r.size; i++)
        if (enc[i] == '\n')
            assert_true(i > 0 && enc[i - 1] == '\r');
    size_t plain_len = 0;
    struct mime_info *info = NULL;
    unsigned char *plain = decrypt_from_vault(enc, r.size, &plain_len, &info);
    size_t want_len = 0;
    uint8_t *want = canonical(msg, len, &want_len);
    assert_int_equal(plain_len, want_len);
    assert_int_equal(r.plain_size, want_len);
    assert_memory_equal(plain, want, want_len);
    assert_int_equal(mime_info_recipient_count(info), 1);
    assert_int_equal(mime_info_bound_to(info, "alice@example.org"), 1);
    assert_int_equal(mime_info_bound_to(info, "bob@example.org"), 0);
    assert_string_equal(mime_info_master_sae_id(info), "alice@example.org");
    assert_string_equal(mime_info_key_id(info, 0), r.key_id);
    mime_info_free(&info);
    mime_plaintext_free(&plain, plain_len);
    free(want);
    free(enc);
    protect_append_result_clear(&r);
    assert_int_equal(r.fd, -1);
    close(in);
}

static void corpus_dir(const char *dir, const struct protect_append_params *p, int *count)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".eml") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t len = 0;
        uint8_t *msg = read_file(path, &len);
        if (len == 0) {
            free(msg);
            continue;
        }
        check_roundtrip(msg, len, p, NULL);
        free(msg);
        (*count)++;
    }
    closedir(d);
}

static void test_corpus_aes(void **state)
{
    (void)state;
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER};
    int count = 0;
    corpus_dir(QUMAIL_SRC_DIR "/tests/unit/mime/corpus", &p, &count);
    corpus_dir(QUMAIL_SRC_DIR "/tests/unit/imap-render/corpus", &p, &count);
    assert_true(count >= 40);
}

static const char sent_copy[] =
    "From: Alice <alice@example.org>\n"
    "To: Bob <bob@example.org>\n"
    "Subject: SECRET-SUBJECT-1234\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0100\n"
    "Message-ID: <sent-1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Body with SECRET-BODY-5678, a bare CR\rhere, a NUL \0 there.\n"
    "last line without end";

static void test_sent_copy(void **state)
{
    (void)state;
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER};
    check_roundtrip((const uint8_t *)sent_copy, sizeof(sent_copy) - 1, &p, "SECRET-");
    /* The subject is the placeholder unless asked to keep it. */
    p.keep_subject = true;
    int in = memfd_of(sent_copy, sizeof(sent_copy) - 1);
    struct protect_append_result r;
    assert_int_equal(protect_append_run(&p, in, sizeof(sent_copy) - 1, &r, NULL), 0);
    uint8_t *enc = read_fd(r.fd, r.size);
    assert_non_null(memmem(enc, r.size, "SECRET-SUBJECT-1234", 19));
    assert_null(memmem(enc, r.size, "SECRET-BODY", 11));
    free(enc);
    protect_append_result_clear(&r);
    close(in);
}

static void test_unchanged(void **state)
{
    (void)state;
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER};
    /* Empty: the server's own NO. */
    int in = memfd_of("", 0);
    struct protect_append_result r;
    assert_int_equal(protect_append_run(&p, in, 0, &r, NULL), 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_UNCHANGED);
    assert_int_equal(r.fd, -1);
    close(in);
    /* Already encrypted (our own output): appended unchanged. */
    in = memfd_of(sent_copy, sizeof(sent_copy) - 1);
    assert_int_equal(protect_append_run(&p, in, sizeof(sent_copy) - 1, &r, NULL), 0);
    uint8_t *enc = read_fd(r.fd, r.size);
    uint64_t enc_len = r.size;
    protect_append_result_clear(&r);
    close(in);
    in = memfd_of(enc, enc_len);
    assert_int_equal(protect_append_run(&p, in, enc_len, &r, NULL), 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_UNCHANGED);
    assert_int_equal(r.size, enc_len);
    assert_int_equal(r.fd, -1);
    close(in);
    /* A message that claims our format but is broken may be a user's
     * plaintext: encrypted. */
    const char *fake = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; "
                       "protocol=\"application/x-qkd-encrypted\"; boundary=b\r\n\r\n--b\r\n"
                       "Content-Type: application/x-qkd-encrypted\r\n\r\nVersion: 2\r\n"
                       "secret stuff\r\n--b--\r\n";
    in = memfd_of(fake, strlen(fake));
    assert_int_equal(protect_append_run(&p, in, strlen(fake), &r, NULL), 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_ENCRYPTED);
    protect_append_result_clear(&r);
    close(in);
    free(enc);
}

static void test_otp(void **state)
{
    (void)state;
    /* 150 kB: three vault keys (64 KiB, 64 KiB, remainder). */
    size_t len = (size_t)150 * 1000;
    char *msg = malloc(len);
    size_t hdr = (size_t)snprintf(msg, len, "Subject: otp\n\n");
    for (size_t i = hdr; i < len; i++)
        msg[i] = (i % 77 == 76) ? '\n' : (char)('a' + i % 26);
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER, .level = MIME_LEVEL_OTP};
    check_roundtrip((uint8_t *)msg, len, &p, NULL);
    int in = memfd_of(msg, len);
    struct protect_append_result r;
    assert_int_equal(protect_append_run(&p, in, len, &r, NULL), 0);
    assert_int_equal(r.algorithm, MIME_ALG_OTP_POLY1305);
    uint8_t *enc = read_fd(r.fd, r.size);
    struct mime_info *info = NULL;
    assert_int_equal(mime_inspect_mem(enc, r.size, &info, NULL), 0);
    assert_int_equal(mime_info_key_count(info), 3);
    uint64_t bits = 0;
    for (size_t i = 0; i < 3; i++)
        bits += mime_info_key_bits(info, i);
    assert_int_equal(bits, 8 * r.plain_size + 256);
    mime_info_free(&info);
    free(enc);
    protect_append_result_clear(&r);
    close(in);
    /* AUTO: OTP up to the threshold, AES above. */
    p.level = MIME_LEVEL_AUTO;
    p.auto_threshold = 1000;
    in = memfd_of(msg, len);
    assert_int_equal(protect_append_run(&p, in, len, &r, NULL), 0);
    assert_int_equal(r.algorithm, MIME_ALG_AES_256_GCM);
    protect_append_result_clear(&r);
    close(in);
    free(msg);
}

/* Random bytes rich in CR, LF and NUL, through the streaming
 * canonicaliser, equal mime_struct_normalize (chunk edges included). */
static void test_canonicalize(void **state)
{
    (void)state;
    unsigned seed = 12345;
    size_t sizes[] = {1, 2, 3, 65535, 65536, 65537, 200000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t len = sizes[s];
        uint8_t *msg = malloc(len);
        for (size_t i = 0; i < len; i++) {
            unsigned v = (unsigned)rand_r(&seed) % 8;
            msg[i] = v == 0 ? '\r' : v == 1 ? '\n' : v == 2 ? 0 : (uint8_t)('A' + v);
        }
        if (len > 65536) { /* a CR at the end of the first chunk, LF after */
            msg[65535] = '\r';
            msg[65536] = '\n';
        }
        int in = memfd_of(msg, len);
        int out = memfd_create("test-out", MFD_CLOEXEC);
        uint64_t out_len = 0;
        assert_int_equal(protect_append_canonicalize(in, len, out, &out_len), 0);
        size_t want_len = 0;
        uint8_t *want = canonical(msg, len, &want_len);
        assert_int_equal(out_len, want_len);
        uint8_t *got = read_fd(out, out_len);
        assert_memory_equal(got, want, want_len);
        free(got);
        free(want);
        free(msg);
        close(in);
        close(out);
    }
}

static void test_large(void **state)
{
    (void)state;
    size_t len = (size_t)10 * 1000 * 1000;
    char *msg = malloc(len);
    size_t hdr = (size_t)snprintf(msg, len,
                                  "From: a@example.org\nSubject: big\nMIME-Version: 1.0\n"
                                  "Content-Type: application/octet-stream\n"
                                  "Content-Transfer-Encoding: base64\n\n");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = hdr; i < len; i++)
        msg[i] = ((i - hdr) % 77 == 76) ? '\n' : b64[i % 64];
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER};
    check_roundtrip((uint8_t *)msg, len, &p, NULL);
    p.max_size = len - 1;
    int in = memfd_of(msg, len);
    struct protect_append_result r;
    char *err = NULL;
    assert_int_equal(protect_append_run(&p, in, len, &r, &err), PROTECT_APPEND_ETOOBIG);
    assert_string_equal(protect_append_imap_code(PROTECT_APPEND_ETOOBIG), "TOOBIG");
    free(err);
    close(in);
    free(msg);
}

static void test_owner(void **state)
{
    (void)state;
    char id[PROTECT_APPEND_OWNER_ID_MAX];
    assert_int_equal(protect_append_owner_id("Bob@Example.org", id, sizeof(id)), 0);
    assert_string_equal(id, "bob@example.org");
    assert_int_equal(protect_append_owner_id("j\xc3\xb6rg@example.org", id, sizeof(id)), 0);
    assert_int_equal(strncmp(id, "u-", 2), 0);
    assert_int_equal(strlen(id), 66);
    assert_int_equal(protect_append_owner_id("", id, sizeof(id)), PROTECT_APPEND_ENOOWNER);
    /* No owner: an error, nothing stored. */
    struct protect_append_params p = {.vault = g_vault, .owner = NULL};
    int in = memfd_of(sent_copy, 10);
    struct protect_append_result r;
    char *err = NULL;
    assert_int_equal(protect_append_run(&p, in, 10, &r, &err), PROTECT_APPEND_ENOOWNER);
    assert_int_equal(r.fd, -1);
    assert_string_equal(protect_append_imap_code(PROTECT_APPEND_ENOOWNER), "CANNOT");
    free(err);
    /* A non-ASCII owner works end to end (hashed owner ID). */
    p.owner = "j\xc3\xb6rg@example.org";
    assert_int_equal(protect_append_run(&p, in, 10, &r, NULL), 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_ENCRYPTED);
    protect_append_result_clear(&r);
    close(in);
}

/* A vault that cannot write (file size limit reached): EVAULT, no output,
 * in a child so the limit stays there. */
static void test_vault_failure(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct vt t;
        vt_init(&t, "append-fail");
        kme_vault *v = NULL;
        if (kme_vault_open(&t.cfg, &v, NULL) != 0)
            _exit(10);
        struct rlimit rl = {4096, 4096};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(11);
        struct protect_append_params p = {.vault = v, .owner = OWNER};
        int in = memfd_create("in", MFD_CLOEXEC);
        if (write(in, sent_copy, 200) != 200)
            _exit(12);
        struct protect_append_result r;
        char *err = NULL;
        int rc = protect_append_run(&p, in, 200, &r, &err);
        int ok = rc == PROTECT_APPEND_EVAULT && r.fd == -1 && err != NULL &&
                 strcmp(protect_append_imap_code(rc), "UNAVAILABLE") == 0;
        free(err);
        rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
        (void)setrlimit(RLIMIT_FSIZE, &rl);
        kme_vault_close(&v);
        vt_cleanup(&t);
        _exit(ok ? 0 : 13);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- thread pool -------------------------------------------------------- */

struct cb_state {
    int calls;
    int status;
    int fd;
    uint64_t size;
};

static void on_done(void *arg, int status, struct protect_append_result *r, const char *error)
{
    struct cb_state *s = arg;
    s->calls++;
    s->status = status;
    if (status == 0) {
        s->fd = r->fd;
        s->size = r->size;
        r->fd = -1; /* taken */
    } else if (status != PROTECT_APPEND_ECANCELED) {
        assert_non_null(error);
    }
}

static void test_async(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct protect_append_params p = {.vault = g_vault, .owner = OWNER};
    int in = memfd_of(sent_copy, sizeof(sent_copy) - 1);
    struct cb_state s = {0, 1, -1, 0};
    protect_append_job *job = NULL;
    assert_int_equal(protect_append_start(&loop, &p, in, sizeof(sent_copy) - 1, on_done, &s,
                                          &job),
                     0);
    assert_non_null(job);
    assert_int_equal(s.calls, 0); /* never from inside the call */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_true(s.fd >= 0);
    struct stat st;
    assert_int_equal(fstat(s.fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, s.size);
    close(s.fd);

    /* Cancelled jobs: the callback comes once, with ECANCELED. */
    struct cb_state c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct cb_state){0, 1, -1, 0};
        assert_int_equal(protect_append_start(&loop, &p, in, sizeof(sent_copy) - 1, on_done,
                                              &c[i], &job),
                         0);
        protect_append_cancel(job);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c[i].calls, 1);
        assert_int_equal(c[i].status, PROTECT_APPEND_ECANCELED);
    }
    /* Synchronous failure: no callback. */
    struct cb_state f = {0, 1, -1, 0};
    assert_int_equal(protect_append_start(&loop, &p, -1, 1, on_done, &f, NULL),
                     PROTECT_APPEND_EINVAL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f.calls, 0);
    close(in);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_aes),  cmocka_unit_test(test_sent_copy),
        cmocka_unit_test(test_unchanged),   cmocka_unit_test(test_otp),
        cmocka_unit_test(test_canonicalize), cmocka_unit_test(test_large),
        cmocka_unit_test(test_owner),       cmocka_unit_test(test_vault_failure),
        cmocka_unit_test(test_async),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
