/* Regression driver for the IMAP fuzz targets without libFuzzer: runs the
 * entry point over every file in a seed directory, then over pseudo-random
 * inputs built from IMAP-ish tokens (fixed xorshift seed, so a failure is
 * reproducible). Usage: fuzz_imap_*_regress SEED_DIR [ITERATIONS]
 * An invariant failure abort()s (non-zero exit for ctest). */
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

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return -1;
    /* exact-size copy so ASan sees over-reads */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static const char *const tokens[] = {
    "\r\n", "\n", "\r", " ", "  ", "(", ")", ")(", "\"", "\\", "\\\"", "{", "}",
    "{5}\r\n", "{0}\r\n", "{3+}\r\n", "~{2}\r\n", "{12}\n", "{4096+}\r\n",
    "{99999999999999999999}\r\n", "~", "~foo", "NIL", "nil", "a1 ", "* ", "+ ", "+\r\n",
    "OK ", "NO ", "BAD ", "BYE ", "PREAUTH ", "[CAPABILITY IMAP4rev1 LITERAL+]", "[ALERT]",
    "LOGIN ", "AUTHENTICATE PLAIN ", "AGFsaWNlAHNlY3JldA==", "FETCH ", "UID ", "1:*", "1,3:5",
    "$", "BODY[]", "BODY.PEEK[HEADER.FIELDS (From To)]", "BODY[1.2.MIME]<0.100>",
    "BINARY[1]", "RFC822.SIZE", "FLAGS", "(\\Seen \\Deleted)", "ENVELOPE", "BODYSTRUCTURE",
    "APPEND INBOX ", "IDLE", "DONE", "CAPABILITY", "EXISTS", "EXPUNGE", "\"INBOX\"",
    "\xc3\xa9", "\0", "\x7f", "%", "*", "]", "[", "<0.10>",
};

static size_t gen(uint8_t *buf, size_t cap)
{
    size_t n = 0;
    buf[n++] = (uint8_t)rng();                 /* flags */
    size_t k = rng() % 4;
    buf[n++] = (uint8_t)k;
    for (size_t i = 0; i < k; i++) {
        uint16_t sz = (uint16_t)(rng() % 3 == 0 ? rng() % 9000 : rng() % 16);
        buf[n++] = (uint8_t)sz;
        buf[n++] = (uint8_t)(sz >> 8);
    }
    size_t target = rng() % 100 == 0 ? cap : (size_t)(rng() % 600);
    while (n < target && n < cap) {
        uint64_t r = rng();
        if (r % 7 == 0) {
            buf[n++] = (uint8_t)(r >> 8);
            continue;
        }
        if (r % 1499 == 1) { /* a long run without line end */
            size_t run = 8000 + (size_t)(r >> 20) % 400;
            for (size_t i = 0; i < run && n < cap; i++)
                buf[n++] = 'x';
            continue;
        }
        const char *t = tokens[(r >> 8) % (sizeof(tokens) / sizeof(tokens[0]))];
        size_t tl = t[0] ? strlen(t) : 1;
        for (size_t i = 0; i < tl && n < cap; i++)
            buf[n++] = (uint8_t)t[i];
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
    if (!dir) {
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
    enum { CAP = 12000 };
    static uint8_t buf[CAP];
    for (long i = 0; i < iters; i++) {
        size_t n = gen(buf, CAP);
        uint8_t *exact = malloc(n);
        if (!exact)
            return 2;
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
    }
    printf("%s: %d seeds, %ld random inputs, all invariants held\n",
           argv[0], seeds, iters);
    return 0;
}
