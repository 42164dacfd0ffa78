/* mime: OTP-POLY1305 with many small keys - decrypt against encrypt in the
 * same run. 256-bit keys (the ETSI 014 default size) at 10 kB, 1 MB and
 * 20 MB: a 20 MB message takes 625,001 keys. Goal: decrypt within 1.5x of
 * encrypt (key lookup is a hash index, FORMAT-SPEC.md / mime.h).
 *
 * usage: bench_mime_keys [--quick] [--size OCTETS]...
 * Prints, per size and API (memory, fd over memfds), the best time of
 * several runs for encrypt and decrypt (CPU and wall) and decrypt/encrypt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "mime.h"

#define KEY_OCTETS 32

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct best {
    double cpu, wall;
};

static void keep(struct best *b, double cpu, double wall)
{
    if (b->cpu == 0 || cpu < b->cpu)
        b->cpu = cpu;
    if (b->wall == 0 || wall < b->wall)
        b->wall = wall;
}

struct keys {
    struct mime_key *k;
    char **ids;
    unsigned char *pool;
    size_t n;
};

static void keys_make(struct keys *ks, size_t msg)
{
    size_t total = msg + 32; /* OTP: 8 * size + 256 bits */
    ks->n = (total + KEY_OCTETS - 1) / KEY_OCTETS;
    ks->k = calloc(ks->n, sizeof(*ks->k));
    ks->ids = calloc(ks->n, sizeof(char *));
    ks->pool = malloc(ks->n * KEY_OCTETS);
    RAND_bytes(ks->pool, (int)(ks->n * KEY_OCTETS));
    for (size_t i = 0; i < ks->n; i++) {
        unsigned char u[16];
        RAND_bytes(u, sizeof(u));
        /* UUID-shaped key_IDs, as an ETSI 014 KME gives */
        if (asprintf(&ks->ids[i],
                     "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x"
                     "%02x%02x%02x", u[0], u[1], u[2], u[3], u[4], u[5], u[6],
                     u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                     u[15]) < 0)
            abort();
        size_t len = i + 1 < ks->n ? KEY_OCTETS : total - i * KEY_OCTETS;
        ks->k[i] = (struct mime_key){.key_id = ks->ids[i],
                                     .key = ks->pool + i * KEY_OCTETS,
                                     .key_len = len};
    }
}

static void keys_free(struct keys *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->ids[i]);
    free(ks->ids);
    free(ks->k);
    free(ks->pool);
}

static int fd_with(const unsigned char *data, size_t len)
{
    int fd = memfd_create("bench", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len ||
        lseek(fd, 0, SEEK_SET) != 0)
        abort();
    return fd;
}

static void run(size_t size, int rounds)
{
    unsigned char *msg = malloc(size);
    memcpy(msg, "Subject: bench\r\n\r\n", 18);
    RAND_bytes(msg + 18, (int)(size - 18));
    struct keys ks;
    keys_make(&ks, size);
    struct mime_encrypt_params p = {
        .algorithm = MIME_ALG_OTP_POLY1305, .source_kme_id = "KME_A",
        .master_sae_id = "SAE_A", .slave_sae_id = "SAE_B",
        .protect_subject = 1,
    };
    struct mime_key_list kl = {ks.k, ks.n};
    struct best em = {0}, dm = {0}, ef = {0}, df = {0};
    unsigned char *enc = NULL;
    size_t enc_len = 0;
    /* small messages: batches worth >= 2 MB per sample */
    int batch = size < 2000000 ? (int)(2000000 / size) : 1;
    for (int r = 0; r < rounds; r++) {
        double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w0 = clock_s(CLOCK_MONOTONIC);
        for (int b = 0; b < batch; b++) {
            free(enc);
            if (mime_encrypt_mem(msg, size, &p, ks.k, ks.n, &enc, &enc_len,
                                 NULL) != 0)
                abort();
        }
        double c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w1 = clock_s(CLOCK_MONOTONIC);
        keep(&em, (c1 - c0) / batch, (w1 - w0) / batch);
        for (int b = 0; b < batch; b++) {
            unsigned char *dec;
            size_t dec_len;
            if (mime_decrypt_mem(enc, enc_len, mime_key_list_lookup, &kl, &dec,
                                 &dec_len, NULL, NULL) != 0 ||
                dec_len != size)
                abort();
            mime_plaintext_free(&dec, dec_len);
        }
        double c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w2 = clock_s(CLOCK_MONOTONIC);
        keep(&dm, (c2 - c1) / batch, (w2 - w1) / batch);

        int in = fd_with(msg, size), ein = fd_with(enc, enc_len);
        double c3 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w3 = clock_s(CLOCK_MONOTONIC);
        for (int b = 0; b < batch; b++) {
            int out = memfd_create("out", MFD_CLOEXEC);
            if (mime_encrypt_fd(in, out, &p, ks.k, ks.n, NULL, NULL) != 0)
                abort();
            close(out);
        }
        double c4 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w4 = clock_s(CLOCK_MONOTONIC);
        keep(&ef, (c4 - c3) / batch, (w4 - w3) / batch);
        for (int b = 0; b < batch; b++) {
            int out = memfd_create("out", MFD_CLOEXEC);
            if (lseek(ein, 0, SEEK_SET) != 0 ||
                mime_decrypt_fd(ein, out, NULL, mime_key_list_lookup, &kl, NULL,
                                NULL) != 0)
                abort();
            close(out);
        }
        double c5 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w5 = clock_s(CLOCK_MONOTONIC);
        keep(&df, (c5 - c4) / batch, (w5 - w4) / batch);
        close(in);
        close(ein);
    }
    printf("%9zu %8zu  mem  %9.2f %9.2f  %9.2f %9.2f  %5.2f %5.2f\n", size,
           ks.n, em.cpu * 1e3, em.wall * 1e3, dm.cpu * 1e3, dm.wall * 1e3,
           dm.cpu / em.cpu, dm.wall / em.wall);
    printf("%9s %8s  fd   %9.2f %9.2f  %9.2f %9.2f  %5.2f %5.2f\n", "", "",
           ef.cpu * 1e3, ef.wall * 1e3, df.cpu * 1e3, df.wall * 1e3,
           df.cpu / ef.cpu, df.wall / ef.wall);
    fflush(stdout);
    free(enc);
    free(msg);
    keys_free(&ks);
}

int main(int argc, char **argv)
{
    size_t sizes[8] = {10000, 1000000, 20000000};
    size_t n_sizes = 3, given = 0;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc && given < 8)
            sizes[given++] = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_mime_keys [--quick] [--size N]...\n");
            return 2;
        }
    }
    if (given > 0)
        n_sizes = given;
    if (quick) {
        sizes[0] = 10000;
        sizes[1] = 300000;
        n_sizes = 2;
    }
    printf("OTP-POLY1305, %d-bit keys, best of %d runs (ms per message)\n",
           KEY_OCTETS * 8, quick ? 1 : 5);
    printf("%9s %8s  api  %9s %9s  %9s %9s  %11s\n", "octets", "keys",
           "enc cpu", "enc wall", "dec cpu", "dec wall", "dec/enc c w");
    for (size_t i = 0; i < n_sizes; i++)
        run(sizes[i], quick ? 1 : (sizes[i] > 5000000 ? 3 : 5));
    return 0;
}
