/* Input generator for common/fuzz_driver.c, for targets whose input is
 * fuzz_imap_common.h's / fuzz_smtp_proto.c's layout: a flags byte, a
 * count k (0..3) and k little-endian 16-bit chunk sizes, then a payload
 * of the target's tokens (fuzz_driver_tokens, NULL-terminated; "\0"
 * stands for one NUL byte) mixed with random bytes and, rarely, a long
 * run without a line end. Inputs up to 12000 bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

extern const char *const fuzz_driver_tokens[];
uint64_t fuzz_driver_rng(void);

#define TOKEN_GEN_MAX 12000u

size_t fuzz_driver_generate(uint8_t *buf, size_t cap);

size_t fuzz_driver_generate(uint8_t *buf, size_t cap)
{
    static size_t n_tokens;
    while (fuzz_driver_tokens[n_tokens] != NULL)
        n_tokens++;
    if (cap > TOKEN_GEN_MAX)
        cap = TOKEN_GEN_MAX;
    size_t n = 0;
    buf[n++] = (uint8_t)fuzz_driver_rng(); /* flags */
    size_t k = fuzz_driver_rng() % 4;
    buf[n++] = (uint8_t)k;
    for (size_t i = 0; i < k; i++) {
        uint16_t sz = (uint16_t)(fuzz_driver_rng() % 3 == 0 ? fuzz_driver_rng() % 9000
                                                            : fuzz_driver_rng() % 16);
        buf[n++] = (uint8_t)sz;
        buf[n++] = (uint8_t)(sz >> 8);
    }
    size_t target = fuzz_driver_rng() % 100 == 0 ? cap : (size_t)(fuzz_driver_rng() % 600);
    while (n < target && n < cap) {
        uint64_t r = fuzz_driver_rng();
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
        const char *t = fuzz_driver_tokens[(r >> 8) % n_tokens];
        size_t tl = t[0] ? strlen(t) : 1;
        for (size_t i = 0; i < tl && n < cap; i++)
            buf[n++] = (uint8_t)t[i];
    }
    return n;
}
