/* A growable byte buffer for fuzz targets that compare what two runs of
 * a parser produced (whole input vs chunked): traces, outputs. Out of
 * memory is a CHECK failure. */
#ifndef FUZZ_BYTES_H
#define FUZZ_BYTES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

struct bytes {
    char *p;
    size_t len, cap;
};

static inline void bytes_put(struct bytes *b, const void *d, size_t n)
{
    if (n == 0)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (n > cap - b->len) {
            CHECK(cap <= SIZE_MAX / 2);
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        CHECK(np != NULL);
        b->p = np;
        b->cap = cap;
    }
    CHECK(b->p != NULL);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static inline void bytes_free(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static inline bool bytes_eq(const struct bytes *a, const struct bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

#endif
