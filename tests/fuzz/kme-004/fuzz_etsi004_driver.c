/* Regression driver for fuzz_etsi004_frames.c without libFuzzer: runs the
 * entry point over every file in a seed directory, then over pseudo-random
 * streams built from valid frames of every service, cut, spliced, with
 * flipped bytes and lying length fields (fixed xorshift seed: a failure is
 * reproducible). Usage: fuzz_etsi004_regress SEED_DIR [ITERATIONS]
 * An invariant failure abort()s (non-zero exit for ctest). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etsi004.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void run(const uint8_t *buf, size_t len)
{
    /* exact-size copy so ASan sees over-reads */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL)
        abort();
    memcpy(exact, buf, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    static uint8_t buf[1 << 20];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    run(buf, len);
    return 0;
}

/* One valid frame of a random service into out (at most cap bytes). */
static size_t frame(uint8_t *out, size_t cap, int resp)
{
    struct etsi004_qos q = {.key_chunk_size = (uint32_t)(rng() % 64),
                            .timeout = (uint32_t)rng(), .ttl = (uint32_t)rng()};
    if (rng() % 2)
        strcpy(q.metadata_mimetype, "application/json");
    uint8_t ksid[16];
    for (int i = 0; i < 16; i++)
        ksid[i] = (uint8_t)rng();
    uint8_t key[64], md[48];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)rng();
    size_t mdl = etsi004_metadata_json((uint32_t)rng(), (uint32_t)(rng() % 4), (char *)md);
    uint8_t *f = NULL;
    size_t len = 0;
    int which = (int)(rng() % 3);
    if (!resp) {
        if (which == 0) {
            char src[40], dst[40];
            snprintf(src, sizeof(src), "qkd://app-%u", (unsigned)(rng() % 1000));
            snprintf(dst, sizeof(dst), "%s", rng() % 5 ? "qkd://peer" : "");
            f = etsi004_open_req_encode(src, dst, &q, ksid, &len);
        } else if (which == 1) {
            struct etsi004_get_req g = {.index = (uint32_t)rng(),
                                        .metadata_size = (uint32_t)(rng() % 100)};
            memcpy(g.ksid, ksid, 16);
            f = etsi004_get_req_encode(&g, &len);
        } else {
            f = etsi004_close_req_encode(ksid, &len);
        }
    } else {
        uint32_t st = (uint32_t)(rng() % 10);
        if (which == 0) {
            struct etsi004_open_resp r = {.status = st, .has_qos = rng() % 2, .qos = q};
            memcpy(r.ksid, ksid, 16);
            f = etsi004_open_resp_encode(&r, &len);
        } else if (which == 1) {
            struct etsi004_get_resp r = {.status = rng() % 3 ? 0 : st,
                                         .index = (uint32_t)rng(),
                                         .key_len = q.key_chunk_size, .key = key,
                                         .metadata_len = rng() % 2 ? (uint32_t)mdl : 0,
                                         .metadata = md,
                                         .metadata_needed = (uint32_t)(rng() % 80)};
            f = etsi004_get_resp_encode(&r, &len);
        } else {
            f = etsi004_close_resp_encode(st, &len);
        }
    }
    if (f == NULL)
        return 0;
    if (len > cap)
        len = cap;
    memcpy(out, f, len);
    etsi004_free_secret(f, len);
    return len;
}

static size_t gen(uint8_t *buf, size_t cap)
{
    int resp = (int)(rng() % 2);
    buf[0] = (uint8_t)((rng() % 128) << 1 | (uint64_t)resp);
    size_t n = 1;
    size_t frames = rng() % 5;
    for (size_t i = 0; i < frames && n < cap; i++) {
        size_t start = n;
        n += frame(buf + n, cap - n, resp);
        uint64_t r = rng();
        if (r % 4 == 0 && n > start) /* flip a byte */
            buf[start + (r >> 8) % (n - start)] ^= (uint8_t)(1u << (r >> 40) % 8);
        if (r % 7 == 1 && n - start >= 8) { /* lie about the length */
            uint32_t l = (uint32_t)(r >> 16);
            if (r % 3 == 0)
                l %= 400;
            buf[start + 4] = (uint8_t)(l >> 24);
            buf[start + 5] = (uint8_t)(l >> 16);
            buf[start + 6] = (uint8_t)(l >> 8);
            buf[start + 7] = (uint8_t)l;
        }
        if (r % 11 == 2 && n > start + 1) /* cut it short */
            n = start + 1 + (r >> 24) % (n - start - 1);
        if (r % 13 == 3 && n < cap) /* the service byte of another type */
            buf[start + 3 < n ? start + 3 : n - 1] = (uint8_t)(r >> 32);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SEED_DIR [ITERATIONS]\n", argv[0]);
        return 2;
    }
    long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 3000;
    DIR *dir = opendir(argv[1]);
    if (dir == NULL) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    struct dirent *e;
    int seeds = 0;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        if (run_file(path) < 0) {
            fprintf(stderr, "cannot read %s\n", path);
            closedir(dir);
            return 2;
        }
        seeds++;
    }
    closedir(dir);
    if (seeds == 0) {
        fprintf(stderr, "no seeds in %s\n", argv[1]);
        return 2;
    }
    enum { CAP = 8192 };
    static uint8_t buf[CAP];
    for (long i = 0; i < iters; i++)
        run(buf, gen(buf, CAP));
    printf("fuzz_etsi004_regress: %d seeds, %ld random streams, all invariants held\n",
           seeds, iters);
    return 0;
}
