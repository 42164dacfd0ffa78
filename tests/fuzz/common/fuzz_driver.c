/* Regression driver for a libFuzzer entry point without libFuzzer (any
 * compiler, the sanitizer build of the test suite): runs the entry point
 * over every seed given (a folder: its files; or a file), with -p also over
 * prefixes of each seed (a truncated input is the common hostile case),
 * then over ITERATIONS inputs mutated from those seeds (byte flips,
 * insertions, deletions, splices of two seeds, truncations, and insertions
 * of the target's tokens when it defines fuzz_driver_tokens) with a fixed
 * xorshift seed, so a failure is reproducible. A target whose input layout
 * random mutation rarely hits defines fuzz_driver_generate instead: the
 * ITERATIONS inputs are then built by it (common/fuzz_token_gen.c builds
 * them from fuzz_driver_tokens; kme-004 from valid frames).
 *
 * Usage: DRIVER [-p] ITERATIONS SEED_DIR_OR_FILE...
 * An invariant failure or a sanitizer report aborts (non-zero exit); no
 * seed at all is an error (exit 2): a run over nothing proves nothing. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A target may define this (NULL-terminated): pieces of its input syntax
 * that a random mutation rarely builds (format keywords, delimiters). */
extern const char *const fuzz_driver_tokens[] __attribute__((weak));

/* A target may define this: one input into buf (at most cap bytes), its
 * randomness from fuzz_driver_rng() only, so that a run reproduces. */
extern size_t fuzz_driver_generate(uint8_t *buf, size_t cap) __attribute__((weak));
uint64_t fuzz_driver_rng(void);

#define DRIVER_MAX_INPUT (1u << 20)
/* With -p: every prefix of a seed up to this length, evenly spaced ones
 * beyond (at most this many per seed). */
#define DRIVER_PREFIXES 4096u

struct seed {
    uint8_t *data;
    size_t len;
};

static struct seed *seeds;
static size_t n_seeds, cap_seeds;
static size_t n_tokens;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

uint64_t fuzz_driver_rng(void)
{
    return rng();
}

/* Runs one input from an exact-size heap copy, so ASan sees over-reads. */
static void run(const uint8_t *data, size_t len)
{
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL)
        abort();
    memcpy(exact, data, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
}

static void load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    uint8_t *buf = malloc(DRIVER_MAX_INPUT);
    size_t len = buf ? fread(buf, 1, DRIVER_MAX_INPUT, f) : 0;
    fclose(f);
    if (buf == NULL)
        abort();
    if (n_seeds == cap_seeds) {
        cap_seeds = cap_seeds ? cap_seeds * 2 : 64;
        seeds = realloc(seeds, cap_seeds * sizeof(*seeds));
        if (seeds == NULL)
            abort();
    }
    seeds[n_seeds].data = buf;
    seeds[n_seeds].len = len;
    n_seeds++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* A folder: its files in name order (dot files aside); else one file. */
static void load(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
        load_file(path);
        return;
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, by_name);
    if (n < 0) {
        perror(path);
        exit(2);
    }
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char file[4096];
            snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
            load_file(file);
        }
        free(names[i]);
    }
    free(names);
}

static void run_prefixes(const struct seed *s)
{
    size_t step = s->len > DRIVER_PREFIXES ? s->len / DRIVER_PREFIXES : 1;
    for (size_t k = 0; k < s->len; k += step)
        run(s->data, k);
}

static size_t insert(uint8_t *out, size_t len, size_t cap, const uint8_t *p, size_t n)
{
    if (len + n > cap)
        return len;
    size_t at = len ? rng() % (len + 1) : 0;
    memmove(out + at + n, out + at, len - at);
    memcpy(out + at, p, n);
    return len + n;
}

static size_t mutate(uint8_t *out, size_t cap)
{
    const struct seed *a = &seeds[rng() % n_seeds];
    size_t len = a->len < cap ? a->len : cap;
    memcpy(out, a->data, len);
    unsigned rounds = 1 + (unsigned)(rng() % 8);
    for (unsigned r = 0; r < rounds; r++) {
        switch (rng() % (n_tokens > 0 ? 7 : 6)) {
        case 0: /* flip a bit */
            if (len > 0)
                out[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
            break;
        case 1: /* random byte */
            if (len > 0)
                out[rng() % len] = (uint8_t)rng();
            break;
        case 2: { /* insert a few random bytes */
            uint8_t b[4];
            for (int i = 0; i < 4; i++)
                b[i] = (uint8_t)rng();
            len = insert(out, len, cap, b, sizeof(b));
            break;
        }
        case 3: /* delete a run */
            if (len > 1) {
                size_t at = rng() % len, n = 1 + rng() % (len - at);
                memmove(out + at, out + at + n, len - at - n);
                len -= n;
            }
            break;
        case 4: { /* splice the tail of another seed */
            const struct seed *b = &seeds[rng() % n_seeds];
            size_t at = len ? rng() % len : 0;
            size_t from = b->len ? rng() % b->len : 0;
            size_t n = b->len - from;
            if (at + n > cap)
                n = cap - at;
            memcpy(out + at, b->data + from, n);
            len = at + n;
            break;
        }
        case 5: /* truncate */
            if (len > 0)
                len = rng() % len;
            break;
        default: { /* insert a token of the target's syntax */
            const char *t = fuzz_driver_tokens[rng() % n_tokens];
            len = insert(out, len, cap, (const uint8_t *)t, strlen(t));
            break;
        }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    int arg = 1;
    int prefixes = 0;
    if (arg < argc && strcmp(argv[arg], "-p") == 0) {
        prefixes = 1;
        arg++;
    }
    if (argc - arg < 2) {
        fprintf(stderr, "usage: %s [-p] ITERATIONS SEED_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    while (fuzz_driver_tokens != NULL && fuzz_driver_tokens[n_tokens] != NULL)
        n_tokens++;
    char *end = NULL;
    unsigned long iterations = strtoul(argv[arg], &end, 10);
    if (end == argv[arg] || *end != '\0') {
        fprintf(stderr, "%s: ITERATIONS is a number, not '%s'\n", argv[0], argv[arg]);
        return 2;
    }
    for (int i = arg + 1; i < argc; i++)
        load(argv[i]);
    if (n_seeds == 0) {
        fprintf(stderr, "%s: no seeds\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < n_seeds; i++) {
        run(seeds[i].data, seeds[i].len);
        if (prefixes)
            run_prefixes(&seeds[i]);
    }
    run((const uint8_t *)"", 0);
    uint8_t *buf = malloc(DRIVER_MAX_INPUT + 64);
    if (buf == NULL)
        return 1;
    for (unsigned long i = 0; i < iterations; i++) {
        size_t cap = DRIVER_MAX_INPUT + 64;
        run(buf, fuzz_driver_generate != NULL ? fuzz_driver_generate(buf, cap) : mutate(buf, cap));
    }
    free(buf);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].data);
    free(seeds);
    printf("%zu seeds%s and %lu %s inputs (%zu tokens): no failure\n", n_seeds,
           prefixes ? " with their prefixes" : "", iterations,
           fuzz_driver_generate != NULL ? "generated" : "mutated", n_tokens);
    return 0;
}
