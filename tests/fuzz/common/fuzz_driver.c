/* Regression driver for a libFuzzer entry point without libFuzzer (any
 * compiler, the sanitizer build of the test suite): runs the entry point
 * over every file of the seed folders given, then over ITERATIONS inputs
 * mutated from those seeds (byte flips, insertions, deletions, splices of
 * two seeds, truncations) with a fixed xorshift seed, so a failure is
 * reproducible. Usage: DRIVER ITERATIONS SEED_DIR...
 * An invariant failure or a sanitizer report aborts (non-zero exit). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

#define DRIVER_MAX_INPUT (1u << 20)

struct seed {
    uint8_t *data;
    size_t len;
};

static struct seed *seeds;
static size_t n_seeds, cap_seeds;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
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
    if (f == NULL)
        return;
    uint8_t *buf = malloc(DRIVER_MAX_INPUT);
    size_t len = buf ? fread(buf, 1, DRIVER_MAX_INPUT, f) : 0;
    fclose(f);
    if (buf == NULL)
        return;
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

static void load_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            load_file(path);
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
}

static size_t mutate(uint8_t *out, size_t cap)
{
    const struct seed *a = &seeds[rng() % n_seeds];
    size_t len = a->len < cap ? a->len : cap;
    memcpy(out, a->data, len);
    unsigned rounds = 1 + (unsigned)(rng() % 8);
    for (unsigned r = 0; r < rounds; r++) {
        switch (rng() % 6) {
        case 0: /* flip a byte */
            if (len > 0)
                out[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
            break;
        case 1: /* random byte */
            if (len > 0)
                out[rng() % len] = (uint8_t)rng();
            break;
        case 2: /* insert a few bytes */
            if (len + 4 < cap) {
                size_t at = len ? rng() % (len + 1) : 0;
                memmove(out + at + 4, out + at, len - at);
                for (int i = 0; i < 4; i++)
                    out[at + i] = (uint8_t)rng();
                len += 4;
            }
            break;
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
        default: /* truncate */
            if (len > 0)
                len = rng() % len;
            break;
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ITERATIONS SEED_DIR...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    unsigned long iterations = strtoul(argv[1], NULL, 10);
    for (int i = 2; i < argc; i++)
        load_dir(argv[i]);
    for (size_t i = 0; i < n_seeds; i++)
        run(seeds[i].data, seeds[i].len);
    run((const uint8_t *)"", 0);
    uint8_t *buf = malloc(DRIVER_MAX_INPUT + 64);
    if (buf == NULL)
        return 1;
    for (unsigned long i = 0; n_seeds > 0 && i < iterations; i++)
        run(buf, mutate(buf, DRIVER_MAX_INPUT + 64));
    free(buf);
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].data);
    free(seeds);
    printf("%zu seeds and %lu mutated inputs: no failure\n", n_seeds, iterations);
    return 0;
}
