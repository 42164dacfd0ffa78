/* A small open-addressing hash index (value = an array position) for key
 * lookup and duplicate checks, linear in the number of keys.
 *
 * The inputs are partly attacker-chosen (key_IDs and addresses in a
 * received control part), so the hash is keyed: a polynomial over 32-bit
 * words modulo the prime 2^61 - 1, evaluated at a secret random point
 * drawn per table. For two different inputs the difference is a non-zero
 * polynomial of degree <= its number of words, so they collide with
 * probability <= words / 2^61 whatever the sender chose: no input can be
 * crafted to degrade the table (hash flooding). */
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "mime_internal.h"

#define P61 ((UINT64_C(1) << 61) - 1)

struct slot {
    uint64_t hv;      /* hash value, 0 = empty (values are >= 1) */
    size_t val;       /* the stored value */
};

struct mime_hash {
    uint64_t point;   /* secret evaluation point, 1 .. P61 - 1 */
    size_t mask;      /* slots - 1 (a power of two minus one) */
    unsigned shift;   /* 64 - log2(slots) */
    struct slot *slot;
};

static uint64_t reduce(uint64_t x)
{
    x = (x & P61) + (x >> 61);
    return x >= P61 ? x - P61 : x;
}

static uint64_t mulmod(uint64_t a, uint64_t b) /* a, b < 2^61 */
{
    __uint128_t p = (__uint128_t)a * b;
    uint64_t lo = (uint64_t)p & P61, hi = (uint64_t)(p >> 61);
    return reduce(lo + hi);
}

struct mime_hash *mime_hash_new(size_t n)
{
    struct mime_hash *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    size_t slots = 16;
    unsigned bits = 4;
    while (slots < n + n / 2 + 2 && slots < SIZE_MAX / 4) { /* load <= 2/3 */
        slots *= 2;
        bits++;
    }
    h->mask = slots - 1;
    h->shift = 64 - bits;
    h->slot = calloc(slots, sizeof(*h->slot));
    do {
        if (RAND_bytes((unsigned char *)&h->point, sizeof(h->point)) != 1)
            h->point = 0;
        h->point = reduce(h->point & P61);
    } while (h->point == 0 && h->slot != NULL && RAND_status() == 1);
    if (h->slot == NULL || h->point == 0) {
        mime_hash_free(&h);
        return NULL;
    }
    return h;
}

void mime_hash_free(struct mime_hash **p)
{
    if (p == NULL || *p == NULL)
        return;
    free((*p)->slot);
    free(*p);
    *p = NULL;
}

uint64_t mime_hash_of(const struct mime_hash *h, const void *data, size_t len,
                      uint64_t extra)
{
    const unsigned char *s = data;
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t w;
        memcpy(&w, s + i, 4);
        acc = mulmod(acc + w, h->point);
    }
    uint32_t tail = 0;
    memcpy(&tail, s + i, len - i);
    acc = mulmod(acc + tail, h->point);
    /* the length and the extra word make the encoding injective */
    acc = mulmod(acc + (uint64_t)len, h->point);
    acc = mulmod(acc + (extra & 0xffffffffu), h->point);
    acc = mulmod(acc + (extra >> 32), h->point);
    return acc + 1; /* never 0: 0 marks an empty slot */
}

/* The top bits of a multiplicative mix: the slot. */
static size_t slot_of(const struct mime_hash *h, uint64_t hv)
{
    return (size_t)((hv * UINT64_C(0x9e3779b97f4a7c15)) >> h->shift);
}

size_t mime_hash_find(const struct mime_hash *h, uint64_t hv,
                      mime_hash_eq_fn *eq, const void *ctx, const void *key)
{
    for (size_t i = slot_of(h, hv);; i = (i + 1) & h->mask) {
        const struct slot *s = &h->slot[i];
        if (s->hv == 0)
            return SIZE_MAX;
        if (s->hv == hv && eq(ctx, s->val, key))
            return s->val;
    }
}

size_t mime_hash_add(struct mime_hash *h, uint64_t hv, mime_hash_eq_fn *eq,
                     const void *ctx, const void *key, size_t value)
{
    for (size_t i = slot_of(h, hv);; i = (i + 1) & h->mask) {
        struct slot *s = &h->slot[i];
        if (s->hv == 0) {
            s->hv = hv;
            s->val = value;
            return SIZE_MAX;
        }
        if (s->hv == hv && eq(ctx, s->val, key))
            return s->val;
    }
}

void mime_hash_prefetch(const struct mime_hash *h, uint64_t hv)
{
    __builtin_prefetch(&h->slot[slot_of(h, hv)], 1);
}
