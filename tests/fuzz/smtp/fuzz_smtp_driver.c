/* Regression driver for fuzz_smtp_proto.c without libFuzzer: runs the
 * entry point over every file in a seed directory, then over pseudo-random
 * inputs built from SMTP-ish tokens (fixed xorshift seed, so a failure is
 * reproducible). Usage: fuzz_smtp_proto_regress ITERATIONS SEED_DIR
 * (the argument order of tests/fuzz/common/fuzz_driver.c).
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
    ".", "\r", "\n", "\r\n", ".\r\n", "..", ".\r", "\r\n.\r\n", " ", "\t",
    "Bcc:", "bcc :", "BCC\t:", "Bcc: a@b\r\n", " folded\r\n", "To: x\r\n",
    "Subject: s\r\n", "\r\n\r\n", "250-", "250 ", "550 ", "2.1.0 ",
    "5.7.1 ", "354 ", "251-", "MAIL FROM:<a@b.c>", "MAIL FROM:<>",
    "RCPT TO:<x@y>", " SIZE=1000", " BODY=8BITMIME", " SMTPUTF8",
    " RET=HDRS", " ENVID=a+2Bb", " NOTIFY=SUCCESS,FAILURE", " ORCPT=rfc822;a@b",
    "BDAT 10 LAST", "BDAT 0", "EHLO host", "HELO h", "AUTH PLAIN AGVm",
    "DATA", "QUIT", "RSET", "NOOP", "STARTTLS", "VRFY u", "<", ">", ":",
    "\xc3\xa9", "\0", "=", "@",
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
    if (argc < 3) {
        fprintf(stderr, "usage: %s ITERATIONS SEED_DIR\n", argv[0]);
        return 2;
    }
    long iters = strtol(argv[1], NULL, 10);
    const char *seed_dir = argv[2];
    DIR *dir = opendir(seed_dir);
    if (!dir) {
        fprintf(stderr, "cannot open %s\n", seed_dir);
        return 2;
    }
    struct dirent *e;
    int seeds = 0;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", seed_dir, e->d_name);
        if (run_file(path) < 0) {
            fprintf(stderr, "cannot read %s\n", path);
            closedir(dir);
            return 2;
        }
        seeds++;
    }
    closedir(dir);
    if (seeds == 0) {
        fprintf(stderr, "no seeds in %s\n", seed_dir);
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
    printf("fuzz_smtp_proto_regress: %d seeds, %ld random inputs, all invariants held\n",
           seeds, iters);
    return 0;
}
