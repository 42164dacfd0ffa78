/* bench_imap_search: what SEARCH BODY costs the proxy per encrypted
 * message, and what APPEND encryption costs.
 *   append:  protect_append_run of N messages (vault fsync off: the
 *            figure is CPU; production adds one fsync per APPEND)
 *   cold:    decrypt (keys from the vault) + part tree + SEARCH BODY
 *   warm:    SEARCH BODY on views already built (the view cache)
 *   header:  SEARCH SUBJECT on the header block only (what the durable
 *            metadata answers without decrypting)
 * usage: bench_imap_search [--quick] [--count N] [--size BYTES] */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "append.h"
#include "imap_search.h"

/* A step failed: the benchmark stops (exit: nothing to free). */
__attribute__((noreturn)) static void die(const char *what)
{
    fprintf(stderr, "bench_imap_search: %s failed\n", what);
    exit(1);
}

/* A count or size option: a positive number, else the run stops. */
static unsigned long number(const char *s)
{
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *end != '\0' || v == 0)
        die("a number option");
    return v;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *make_msg(size_t size, unsigned i, size_t *len_r)
{
    char *m = malloc(size + 1024);
    size_t o = (size_t)snprintf(m, 1024,
                                "From: Sender %u <s%u@example.org>\r\nTo: bob@example.org\r\n"
                                "Subject: message number %u about things\r\n"
                                "Date: Mon, 7 Dec 2026 10:%02u:00 +0000\r\nMIME-Version: 1.0\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                                i, i, i, i % 60);
    static const char *const words[] = {"lorem", "ipsum", "dolor", "sit", "amet", "gr=C3=BC=C3=9Fe",
                                        "consectetur", "adipiscing", "elit", "sed"};
    unsigned col = 0, w = i;
    while (o < size) {
        const char *word = words[(w = w * 1103515245u + 12345u) % 10];
        size_t n = strlen(word);
        memcpy(m + o, word, n);
        o += n;
        col += (unsigned)n + 1;
        if (col > 70) {
            memcpy(m + o, "\r\n", 2);
            o += 2;
            col = 0;
        } else {
            m[o++] = ' ';
        }
    }
    if (i % 100 == 7) { /* one in a hundred holds the needle */
        memcpy(m + o, "needle\r\n", 8);
        o += 8;
    }
    *len_r = o;
    return m;
}

static int rm_one(const char *p, const struct stat *st, int f, struct FTW *ftw)
{
    (void)st;
    (void)f;
    (void)ftw;
    return remove(p);
}

int main(int argc, char **argv)
{
    unsigned count = 1000;
    size_t size = (size_t)10 * 1000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            count = 50;
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = (unsigned)number(argv[++i]);
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = (size_t)number(argv[++i]);
    }
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/bench-XXXXXX", QUMAIL_TEST_TMP);
    if (mkdtemp(dir) == NULL)
        die("mkdtemp");
    char db[600], key[600];
    snprintf(db, sizeof(db), "%s/v/vault.sqlite", dir);
    snprintf(key, sizeof(key), "%s/k/vault.key", dir);
    struct kme_vault_config vc = {.path = db, .key_file = key, .create_key = true,
                                  .sync = KME_VAULT_SYNC_NORMAL};
    kme_vault *v = NULL;
    char *err = NULL;
    if (kme_vault_open(&vc, &v, &err) != 0) {
        fprintf(stderr, "vault: %s\n", err);
        return 1;
    }
    uint8_t **enc = calloc(count, sizeof(*enc));
    size_t *enc_len = calloc(count, sizeof(*enc_len));
    if (enc == NULL || enc_len == NULL)
        die("calloc");
    struct protect_append_params p = {.vault = v, .owner = "bob@example.org"};
    double t0 = now_s();
    for (unsigned i = 0; i < count; i++) {
        size_t len;
        char *m = make_msg(size, i, &len);
        int fd = memfd_create("b", 0);
        if (write(fd, m, len) != (ssize_t)len)
            die("write");
        struct protect_append_result r;
        if (protect_append_run(&p, fd, len, &r, &err) != 0) {
            fprintf(stderr, "append: %s\n", err);
            die("protect_append_run");
        }
        enc[i] = malloc(r.size);
        enc_len[i] = r.size;
        if (enc[i] == NULL || pread(r.fd, enc[i], r.size, 0) != (ssize_t)r.size)
            die("reading the encrypted copy");
        protect_append_result_clear(&r);
        close(fd);
        free(m);
    }
    double t_append = now_s() - t0;

    const char *crit = "BODY needle";
    struct imap_search_in *in = NULL;
    size_t n_in = 0;
    const char *perr = NULL;
    struct imap_search *s = NULL, *sh = NULL;
    imap_search_in_parse(crit, strlen(crit), &in, &n_in, &perr);
    imap_search_parse(in, n_in, NULL, &s, &perr);
    imap_search_in_free(&in);
    imap_search_in_parse("SUBJECT \"number 7 \"", 19, &in, &n_in, &perr);
    imap_search_parse(in, n_in, NULL, &sh, &perr);
    imap_search_in_free(&in);

    struct mime_struct **views = calloc(count, sizeof(struct mime_struct *));
    if (views == NULL)
        die("calloc");
    unsigned hits = 0;
    t0 = now_s();
    for (unsigned i = 0; i < count; i++) {
        struct mime_info *info = NULL;
        mime_inspect_mem(enc[i], enc_len[i], &info, NULL);
        const char *id = mime_info_key_id(info, 0);
        uint8_t *kb = NULL;
        size_t kl = 0;
        if (kme_vault_key_get(v, KME_VAULT_LOCAL_SOURCE, mime_info_master_sae_id(info), id, &kb,
                              &kl, NULL) != 0)
            die("kme_vault_key_get");
        struct mime_key k = {.key_id = id, .key = kb, .key_len = kl};
        struct mime_key_list list = {&k, 1};
        unsigned char *plain = NULL;
        size_t plain_len = 0;
        if (mime_decrypt_mem(enc[i], enc_len[i], mime_key_list_lookup, &list, &plain,
                             &plain_len, NULL, NULL) != 0)
            die("mime_decrypt_mem");
        kme_vault_bytes_free(&kb, kl);
        mime_info_free(&info);
        if (mime_struct_parse(plain, plain_len, 0, &views[i], NULL) != 0)
            die("mime_struct_parse");
        mime_plaintext_free(&plain, plain_len);
        struct imap_search_msg m = {.ms = views[i], .seq = i + 1, .uid = i + 1};
        hits += (unsigned)imap_search_eval(s, &m);
    }
    double t_cold = now_s() - t0;
    t0 = now_s();
    unsigned hits2 = 0;
    for (unsigned i = 0; i < count; i++) {
        struct imap_search_msg m = {.ms = views[i], .seq = i + 1, .uid = i + 1};
        hits2 += (unsigned)imap_search_eval(s, &m);
    }
    double t_warm = now_s() - t0;
    t0 = now_s();
    unsigned hits3 = 0;
    for (unsigned i = 0; i < count; i++) {
        struct imap_search_msg m = {.ms = views[i], .seq = i + 1, .uid = i + 1};
        hits3 += (unsigned)imap_search_eval(sh, &m);
    }
    double t_hdr = now_s() - t0;
    printf("%u messages of %zu bytes (plaintext)\n", count, size);
    printf("append (AES, vault without fsync): %8.3f ms total, %7.1f us/message\n",
           t_append * 1e3, t_append * 1e6 / count);
    printf("SEARCH BODY cold (decrypt + tree + eval): %8.3f ms, %7.1f us/message, %u hits\n",
           t_cold * 1e3, t_cold * 1e6 / count, hits);
    printf("SEARCH BODY warm (eval on views):         %8.3f ms, %7.1f us/message, %u hits\n",
           t_warm * 1e3, t_warm * 1e6 / count, hits2);
    printf("SEARCH SUBJECT (header only):             %8.3f ms, %7.1f us/message, %u hits\n",
           t_hdr * 1e3, t_hdr * 1e6 / count, hits3);
    for (unsigned i = 0; i < count; i++) {
        mime_struct_free(&views[i]);
        free(enc[i]);
    }
    free(views);
    free(enc);
    free(enc_len);
    imap_search_free(&s);
    imap_search_free(&sh);
    kme_vault_close(&v);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return hits == hits2 && hits > 0 ? 0 : 1;
}
