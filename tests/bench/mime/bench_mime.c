/* mime throughput: whole-message encrypt and decrypt (fd API over memfds,
 * the way the proxy calls it from a uv_queue_work thread) at 10 kB, 1 MB
 * and 25 MB for each algorithm, beside OpenSSL's raw EVP AES-256-GCM over
 * the same bytes in the same run.
 *
 * usage: bench_mime [--quick] [--spill-mb N] [--size OCTETS]...
 *   --quick     one short round per case (smoke test)
 *   --spill-mb  decrypt spill threshold (default: the library's 4 MiB)
 *   --size      only this message size (repeatable; for profiling) */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "mime.h"

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

/* Best throughput of a case: by CPU time (user + system of this process,
 * immune to other load on a shared machine) and by wall time. */
struct rate {
    double cpu, wall;
};

static int quick;
static size_t spill_threshold;

/* A message: headers and a base64 attachment body of total size n. */
static unsigned char *make_message(size_t n)
{
    static const char head[] = "From: a@example.org\r\nTo: b@example.net\r\n"
                               "Subject: bench\r\nMIME-Version: 1.0\r\n"
                               "Content-Type: application/octet-stream\r\n"
                               "Content-Transfer-Encoding: base64\r\n\r\n";
    unsigned char *m = malloc(n);
    size_t hl = sizeof(head) - 1;
    memcpy(m, head, hl);
    unsigned char raw[57];
    for (size_t off = hl; off < n;) {
        RAND_bytes(raw, sizeof(raw));
        unsigned char line[80];
        EVP_EncodeBlock(line, raw, sizeof(raw));
        line[76] = '\r';
        line[77] = '\n';
        size_t take = n - off < 78 ? n - off : 78;
        memcpy(m + off, line, take);
        off += take;
    }
    return m;
}

/* Runs fn until at least min_time has passed; returns the best MB/s. Each
 * sample times a batch of calls worth >= 4 MB, so that small messages are
 * not measured mostly as clock reads (the process CPU clock is a system
 * call here). */
typedef int (*bench_fn)(void *ctx);
static struct rate measure(bench_fn fn, void *ctx, size_t bytes)
{
    double min_time = quick ? 0.0 : 0.6, start = now();
    struct rate best = {0, 0};
    int rounds = 0;
    size_t batch = quick || bytes >= 4000000u ? 1 : 4000000u / bytes;
    do {
        double w0 = now(), c0 = cpu();
        for (size_t i = 0; i < batch; i++) {
            if (fn(ctx) != 0) {
                fprintf(stderr, "bench: operation failed\n");
                exit(1);
            }
        }
        double c = cpu() - c0, w = now() - w0;
        double mb = (double)bytes * (double)batch / 1e6;
        if (c > 0 && mb / c > best.cpu)
            best.cpu = mb / c;
        if (w > 0 && mb / w > best.wall)
            best.wall = mb / w;
        rounds++;
    } while (now() - start < min_time || rounds < (quick ? 1 : 5));
    return best;
}

/* ---- raw AES-256-GCM baseline -------------------------------------------------- */

struct raw_ctx {
    const unsigned char *in;
    unsigned char *out;
    size_t n;
};

static int raw_gcm(void *p)
{
    struct raw_ctx *c = p;
    unsigned char key[32] = {1}, iv[12] = {2}, tag[16];
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int outl, ok = EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, key, iv);
    for (size_t off = 0; ok && off < c->n;) {
        size_t chunk = c->n - off < (1u << 20) ? c->n - off : (1u << 20);
        ok = EVP_EncryptUpdate(x, c->out + off, &outl, c->in + off, (int)chunk);
        off += chunk;
    }
    ok = ok && EVP_EncryptFinal_ex(x, tag, &outl) &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(x);
    return ok ? 0 : -1;
}

/* ---- mime ---------------------------------------------------------------------- */

struct mime_ctx {
    int plain_fd, enc_fd, out_fd;
    size_t plain_len;
    struct mime_key *keys;
    size_t n_keys;
    struct mime_encrypt_params params;
};

static int reset_fd(int fd)
{
    return ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0 ? 0 : -1;
}

static int do_encrypt(void *p)
{
    struct mime_ctx *c = p;
    if (reset_fd(c->enc_fd) != 0)
        return -1;
    return mime_encrypt_fd(c->plain_fd, c->enc_fd, &c->params, c->keys,
                           c->n_keys, NULL, NULL);
}

static int do_decrypt(void *p)
{
    struct mime_ctx *c = p;
    if (reset_fd(c->out_fd) != 0 || lseek(c->enc_fd, 0, SEEK_SET) != 0)
        return -1;
    struct mime_key_list kl = {c->keys, c->n_keys};
    struct mime_decrypt_params dp = {NULL, spill_threshold};
    return mime_decrypt_fd(c->enc_fd, c->out_fd, &dp, mime_key_list_lookup,
                           &kl, NULL, NULL);
}

/* The fd API's floor: the kernel I/O of a decryption alone, no crypto -
 * read the encrypted message from its memfd and write as many octets as the
 * plaintext has to a truncated memfd, in 256 KiB pieces. */
static int do_io_only(void *p)
{
    struct mime_ctx *c = p;
    static unsigned char buf[256 * 1024];
    if (reset_fd(c->out_fd) != 0)
        return -1;
    off_t end = lseek(c->enc_fd, 0, SEEK_END);
    size_t left = c->plain_len;
    for (off_t off = 0; off < end;) {
        ssize_t n = pread(c->enc_fd, buf, sizeof(buf), off);
        if (n <= 0)
            return -1;
        off += n;
        size_t w = left < (size_t)n ? left : (size_t)n;
        if (w > 0 && write(c->out_fd, buf, w) != (ssize_t)w)
            return -1;
        left -= w;
    }
    return 0;
}

/* Memory API: no kernel I/O, the engine alone. */
struct mem_ctx {
    const unsigned char *msg;
    size_t len;
    unsigned char *enc;
    size_t enc_len;
    struct mime_ctx *c;
};

static int do_encrypt_mem(void *p)
{
    struct mem_ctx *m = p;
    free(m->enc);
    m->enc = NULL;
    return mime_encrypt_mem(m->msg, m->len, &m->c->params, m->c->keys,
                            m->c->n_keys, &m->enc, &m->enc_len, NULL);
}

static int do_decrypt_mem(void *p)
{
    struct mem_ctx *m = p;
    struct mime_key_list kl = {m->c->keys, m->c->n_keys};
    unsigned char *out;
    size_t out_len;
    int rc = mime_decrypt_mem(m->enc, m->enc_len, mime_key_list_lookup, &kl,
                              &out, &out_len, NULL, NULL);
    if (rc == 0) {
        rc = out_len == m->len && memcmp(out, m->msg, m->len) == 0 ? 0 : -1;
        mime_plaintext_free(&out, out_len);
    }
    return rc;
}

static void run_case(size_t size, const char *label)
{
    unsigned char *msg = make_message(size);
    unsigned char *scratch = malloc(size);
    struct raw_ctx raw = {msg, scratch, size};
    for (int a = 0; a < 2; a++) {
        /* raw is measured before and after the row's cases and the better
         * figure kept, so that a burst of load on the shared machine during
         * one raw measurement does not flatter the ratios */
        struct rate raw_mbs = measure(raw_gcm, &raw, size);
        enum mime_alg alg = a ? MIME_ALG_AES_256_GCM : MIME_ALG_OTP_POLY1305;
        uint64_t bits;
        mime_key_bits_needed(alg, size, &bits);
        size_t key_bytes = (size_t)(bits / 8);
        /* KME-like key sizes: OTP in 1 MiB keys, AES one 256-bit key. */
        size_t per = alg == MIME_ALG_AES_256_GCM ? 32 : (1u << 20);
        size_t n_keys = (key_bytes + per - 1) / per;
        unsigned char *pool = malloc(key_bytes);
        RAND_bytes(pool, (int)key_bytes);
        struct mime_key *keys = calloc(n_keys, sizeof(*keys));
        char (*ids)[32] = calloc(n_keys, 32);
        for (size_t i = 0, off = 0; i < n_keys; i++) {
            size_t len = key_bytes - off < per ? key_bytes - off : per;
            snprintf(ids[i], 32, "key-%zu", i);
            keys[i] = (struct mime_key){.key_id = ids[i], .key = pool + off, .key_len = len};
            off += len;
        }
        struct mime_ctx c = {
            .plain_fd = memfd_create("plain", MFD_CLOEXEC),
            .enc_fd = memfd_create("enc", MFD_CLOEXEC),
            .out_fd = memfd_create("out", MFD_CLOEXEC),
            .plain_len = size, .keys = keys, .n_keys = n_keys,
            .params = {.algorithm = alg, .source_kme_id = "KME_A",
                       .master_sae_id = "SAE_A", .slave_sae_id = "SAE_B",
                       .protect_subject = 1},
        };
        if (write(c.plain_fd, msg, size) != (ssize_t)size)
            exit(1);
        struct rate enc = measure(do_encrypt, &c, size);
        struct rate dec = measure(do_decrypt, &c, size);
        /* check the last decrypt */
        unsigned char *back = malloc(size);
        if (pread(c.out_fd, back, size, 0) != (ssize_t)size ||
            memcmp(back, msg, size) != 0) {
            fprintf(stderr, "bench: round trip mismatch\n");
            exit(1);
        }
        free(back);
        struct rate io = {0, 0};
        if (a == 1)
            io = measure(do_io_only, &c, size);
        struct mem_ctx mc = {msg, size, NULL, 0, &c};
        struct rate menc = measure(do_encrypt_mem, &mc, size);
        struct rate mdec = measure(do_decrypt_mem, &mc, size);
        free(mc.enc);
        struct rate raw2 = measure(raw_gcm, &raw, size);
        if (raw2.cpu > raw_mbs.cpu)
            raw_mbs.cpu = raw2.cpu;
        if (raw2.wall > raw_mbs.wall)
            raw_mbs.wall = raw2.wall;
        printf("%-6s %-13s %8.0f %8.0f %8.0f %7.2f %7.2f | %8.0f %8.0f %8.0f"
               "  (mem API)\n",
               label, mime_alg_name(alg), menc.cpu, mdec.cpu, raw_mbs.cpu,
               menc.cpu / raw_mbs.cpu, mdec.cpu / raw_mbs.cpu, menc.wall,
               mdec.wall, raw_mbs.wall);
        printf("%-6s %-13s %8.0f %8.0f %8.0f %7.2f %7.2f | %8.0f %8.0f %8.0f"
               "  (fd API, memfds)\n",
               label, mime_alg_name(alg), enc.cpu, dec.cpu, raw_mbs.cpu,
               enc.cpu / raw_mbs.cpu, dec.cpu / raw_mbs.cpu, enc.wall,
               dec.wall, raw_mbs.wall);
        if (a == 1)
            printf("%-6s %-13s %17s %8.0f %15.2f | %17s %8.0f"
                   "  (fd I/O alone, no crypto: the fd API's ceiling)\n",
                   label, "memfd I/O", "", io.cpu, io.cpu / raw_mbs.cpu, "",
                   io.wall);
        close(c.plain_fd);
        close(c.enc_fd);
        close(c.out_fd);
        free(ids);
        free(keys);
        free(pool);
    }
    free(scratch);
    free(msg);
}

int main(int argc, char **argv)
{
    size_t sizes[8];
    int n_sizes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--spill-mb") == 0 && i + 1 < argc)
            spill_threshold = (size_t)strtoul(argv[++i], NULL, 10) << 20;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc && n_sizes < 8 &&
                 (sizes[n_sizes] = strtoul(argv[++i], NULL, 10)) >= 4096)
            n_sizes++;
        else {
            fprintf(stderr, "usage: bench_mime [--quick] [--spill-mb N] "
                            "[--size OCTETS]...\n");
            return 2;
        }
    }
    /* Keep freed memory in the heap for reuse, as a long-running daemon's
     * allocator ends up doing: otherwise every 25 MB buffer is a fresh
     * mmap and the run measures page-fault cost (high on this VM). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
    mime_init();
    printf("mime throughput, MB/s = 10^6 octets of original message per "
           "second,\nbest of >= 5 samples (each a batch of calls worth >= "
           "4 MB) and >= 0.6 s per case;\nleft: by process CPU time, right: "
           "by wall time.\n");
    printf("raw = OpenSSL EVP AES-256-GCM over the same message bytes, in "
           "1 MiB updates,\nmeasured before and after each row (the better "
           "kept).\n");
    printf("decrypt spill threshold: %s\n\n",
           spill_threshold ? "custom" : "library default (4 MiB)");
    printf("%-6s %-13s %8s %8s %8s %7s %7s | %8s %8s %8s\n", "size",
           "algorithm", "enc", "dec", "raw", "enc/raw", "dec/raw", "enc-wall",
           "dec-wall", "raw-wall");
    for (int i = 0; i < n_sizes; i++) {
        char label[32];
        snprintf(label, sizeof(label), "%zu", sizes[i]);
        run_case(sizes[i], label);
    }
    if (n_sizes == 0) {
        run_case((size_t)10 * 1000, "10kB");
        run_case((size_t)1000 * 1000, "1MB");
        if (!quick)
            run_case((size_t)25 * 1000 * 1000, "25MB");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.1f MiB (includes the benchmark's own message, key "
           "and scratch copies)\n", (double)ru.ru_maxrss / 1024.0);
    return 0;
}
