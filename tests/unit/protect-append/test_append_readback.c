/* An APPENDed copy read back through the real reading layer (protect_in,
 * proxy/protect/incoming.h) with the real vault: the view is byte for
 * byte what the server would serve for the plaintext stored directly
 * (the canonical form), for AES and OTP copies, for the owner, again after
 * a "restart" (a new protect_in over the same vault file), and not for
 * another user (a notice, no plaintext). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "../vault/vault_test.h"
#include "append.h"
#include "incoming.h"
#include "mime_struct.h"

static const char copy[] =
    "From: Alice <alice@example.org>\n"
    "To: Bob <bob@example.org>\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the Sent folder\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0100\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "a bare CR\rand a NUL \0 inside\n"
    "--b\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAwQF\n"
    "--b--\n";

struct answer {
    int calls;
    int error;
    protect_in_view *view;
};

static void on_view(void *arg, int error, protect_in_view *view)
{
    struct answer *a = arg;
    a->calls++;
    a->error = error;
    a->view = view;
}

static protect_in_view *read_back(uv_loop_t *loop, protect_in *pi, const char *login,
                                  const uint8_t *enc, size_t enc_len)
{
    char *hint = NULL;
    assert_int_equal(protect_in_classify(enc, enc_len, &hint), 1);
    assert_non_null(hint);
    protect_in_reader *r = protect_in_reader_new(pi, login);
    assert_non_null(r);
    struct answer a = {0, 0, NULL};
    protect_in_fetch *f = NULL;
    assert_int_equal(protect_in_open_supplied(pi, r, hint, &f, on_view, &a), 0);
    if (f != NULL) {
        assert_int_equal(protect_in_fetch_write(f, enc, enc_len), 0);
        protect_in_fetch_done(f, 0);
    }
    while (a.calls == 0)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(a.error, 0);
    protect_in_reader_free(&r);
    free(hint);
    return a.view;
}

static uint8_t *append_copy(kme_vault *v, enum mime_level level, size_t *len_r)
{
    int in = memfd_create("in", MFD_CLOEXEC);
    assert_int_equal(write(in, copy, sizeof(copy) - 1), (ssize_t)(sizeof(copy) - 1));
    struct protect_append_params p = {.vault = v, .owner = "alice@example.org", .level = level};
    struct protect_append_result r;
    assert_int_equal(protect_append_run(&p, in, sizeof(copy) - 1, &r, NULL), 0);
    assert_int_equal(r.outcome, PROTECT_APPEND_ENCRYPTED);
    uint8_t *enc = malloc(r.size);
    assert_int_equal(pread(r.fd, enc, r.size, 0), (ssize_t)r.size);
    *len_r = r.size;
    protect_append_result_clear(&r);
    close(in);
    return enc;
}

static protect_in *new_pi(uv_loop_t *loop, kme_vault *v)
{
    struct protect_in_config cfg;
    protect_in_config_defaults(&cfg);
    struct protect_in_deps deps = {.loop = loop, .vault = v};
    char *err = NULL;
    protect_in *pi = protect_in_new(&deps, &cfg, &err);
    if (pi == NULL)
        fprintf(stderr, "protect_in_new: %s\n", err);
    assert_non_null(pi);
    return pi;
}

static void test_readback(void **state)
{
    (void)state;
    struct vt t;
    vt_init(&t, "readback");
    t.cfg.sync = KME_VAULT_SYNC_NORMAL;
    kme_vault *v = NULL;
    assert_int_equal(kme_vault_open(&t.cfg, &v, NULL), 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);

    uint64_t want_len = mime_struct_normalized_size(copy, sizeof(copy) - 1);
    uint8_t *want = malloc(want_len);
    assert_int_equal(mime_struct_normalize(copy, sizeof(copy) - 1, want), want_len);

    enum mime_level levels[] = {MIME_LEVEL_AES, MIME_LEVEL_OTP};
    for (size_t l = 0; l < 2; l++) {
        size_t enc_len = 0;
        uint8_t *enc = append_copy(v, levels[l], &enc_len);
        for (int round = 0; round < 2; round++) { /* round 1: after a restart */
            protect_in *pi = new_pi(&loop, v);
            protect_in_view *view = read_back(&loop, pi, "alice@example.org", enc, enc_len);
            assert_true(protect_in_view_complete(view));
            assert_int_equal(protect_in_view_reason(view), PROTECT_IN_DECRYPTED);
            assert_int_equal(protect_in_view_size(view), want_len);
            const struct mime_struct *ms = protect_in_view_struct(view);
            assert_int_equal(mime_struct_size(ms), want_len);
            assert_memory_equal(mime_struct_data(ms), want, want_len);
            protect_in_view_unref(&view);

            /* another user gets a notice, never the plaintext */
            view = read_back(&loop, pi, "mallory@example.org", enc, enc_len);
            assert_int_equal(protect_in_view_reason(view), PROTECT_IN_R_NOT_ALLOWED);
            const struct mime_struct *nms = protect_in_view_struct(view);
            assert_null(memmem(mime_struct_data(nms), mime_struct_size(nms), "bare CR", 7));
            protect_in_view_unref(&view);
            protect_in_free(&pi);
            while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
                ;
        }
        free(enc);
    }
    free(want);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    assert_int_equal(uv_loop_close(&loop), 0);
    kme_vault_close(&v);
    vt_cleanup(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
