/* Regression driver for the mime fuzz targets without libFuzzer: runs the
 * entry point over every file of a seed directory, then over mutations of
 * those seeds (bit flips, octet changes, cuts, insertions of format
 * tokens; fixed xorshift seed, so a failure is reproducible). An
 * invariant failure abort()s (non-zero exit for ctest).
 * Usage: fuzz_mime_*_regress SEED_DIR [ITERATIONS] */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct seed {
    uint8_t *data;
    size_t len;
};

static int load(const char *path, struct seed *s)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 1 << 16;
    s->data = malloc(cap);
    s->len = 0;
    size_t n;
    while (s->data != NULL &&
           (n = fread(s->data + s->len, 1, cap - s->len, f)) > 0) {
        s->len += n;
        if (s->len == cap) {
            uint8_t *nd = realloc(s->data, cap * 2);
            if (nd == NULL)
                break;
            s->data = nd;
            cap *= 2;
        }
    }
    fclose(f);
    return s->data != NULL ? 0 : -1;
}

static void run(const uint8_t *data, size_t len)
{
    uint8_t *exact = malloc(len ? len : 1); /* exact size: ASan sees over-reads */
    if (exact == NULL)
        abort();
    memcpy(exact, data, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
}

static const char *const tokens[] = {
    "\r\n", "\n", "\r", " ", "\t", "--", "=", "\"", "(", ")", ";", "%", "%C3",
    "\\", "\x1b", "\xff", "\xc3\xa9", "Version: 2\r\n", "Version: 1",
    "Key: fz-0 256\r\n", "Key-Chunks: ", " 0 2 128 256",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "Recipient-Count: 1\r\n",
    "Recipient: a@b\r\n", "Nonce: 000102030405060708090a0b\r\n",
    "Content-Type: ", "multipart/encrypted", "application/x-qkd-encrypted",
    "protocol=", "boundary=", "Content-Transfer-Encoding: base64\r\n",
    "AAAA", "====", "\r\n\r\n", "0", "18446744073709551615",
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SEED_DIR [ITERATIONS]\n", argv[0]);
        return 2;
    }
    long iterations = argc > 2 ? atol(argv[2]) : 2000;
    DIR *dir = opendir(argv[1]);
    if (dir == NULL) {
        perror(argv[1]);
        return 2;
    }
    struct seed seeds[64];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL && n < 64) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
        if (load(path, &seeds[n]) == 0)
            run(seeds[n].data, seeds[n].len), n++;
    }
    closedir(dir);
    if (n == 0) {
        fprintf(stderr, "no seeds in %s\n", argv[1]);
        return 2;
    }
    for (long it = 0; it < iterations; it++) {
        const struct seed *s = &seeds[rng() % n];
        size_t cap = s->len * 2 + 256;
        uint8_t *buf = malloc(cap);
        if (buf == NULL)
            abort();
        memcpy(buf, s->data, s->len);
        size_t len = s->len;
        int edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = len ? rng() % len : 0;
            switch (rng() % 4) {
            case 0: if (len) buf[at] ^= (uint8_t)(1u << (rng() % 8)); break;
            case 1: if (len) buf[at] = (uint8_t)rng(); break;
            case 2: len = at; break; /* cut */
            default: {
                const char *t = tokens[rng() % (sizeof(tokens) / sizeof(*tokens))];
                size_t tl = strlen(t);
                if (len + tl <= cap) {
                    memmove(buf + at + tl, buf + at, len - at);
                    memcpy(buf + at, t, tl);
                    len += tl;
                }
            }
            }
        }
        run(buf, len);
        free(buf);
    }
    printf("%zu seeds, %ld mutations: ok\n", n, iterations);
    for (size_t i = 0; i < n; i++)
        free(seeds[i].data);
    return 0;
}
