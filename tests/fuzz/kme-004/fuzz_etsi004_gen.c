/* Input generator of fuzz_etsi004_regress (common/fuzz_driver.c runs the
 * seeds, then ITERATIONS of these): streams built from valid frames of
 * every service, cut, spliced, with flipped bytes and lying length fields,
 * up to 8192 bytes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "etsi004.h"

uint64_t fuzz_driver_rng(void);
size_t fuzz_driver_generate(uint8_t *buf, size_t cap);

#define GEN_MAX 8192u

/* One valid frame of a random service into out (at most cap bytes). */
static size_t frame(uint8_t *out, size_t cap, int resp)
{
    struct etsi004_qos q = {.key_chunk_size = (uint32_t)(fuzz_driver_rng() % 64),
                            .timeout = (uint32_t)fuzz_driver_rng(),
                            .ttl = (uint32_t)fuzz_driver_rng()};
    if (fuzz_driver_rng() % 2)
        strcpy(q.metadata_mimetype, "application/json");
    uint8_t ksid[16];
    for (int i = 0; i < 16; i++)
        ksid[i] = (uint8_t)fuzz_driver_rng();
    uint8_t key[64], md[48];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)fuzz_driver_rng();
    size_t mdl = etsi004_metadata_json((uint32_t)fuzz_driver_rng(),
                                       (uint32_t)(fuzz_driver_rng() % 4), (char *)md);
    uint8_t *f = NULL;
    size_t len = 0;
    int which = (int)(fuzz_driver_rng() % 3);
    if (!resp) {
        if (which == 0) {
            char src[40], dst[40];
            snprintf(src, sizeof(src), "qkd://app-%u", (unsigned)(fuzz_driver_rng() % 1000));
            snprintf(dst, sizeof(dst), "%s", fuzz_driver_rng() % 5 ? "qkd://peer" : "");
            f = etsi004_open_req_encode(src, dst, &q, ksid, &len);
        } else if (which == 1) {
            struct etsi004_get_req g = {.index = (uint32_t)fuzz_driver_rng(),
                                        .metadata_size = (uint32_t)(fuzz_driver_rng() % 100)};
            memcpy(g.ksid, ksid, 16);
            f = etsi004_get_req_encode(&g, &len);
        } else {
            f = etsi004_close_req_encode(ksid, &len);
        }
    } else {
        uint32_t st = (uint32_t)(fuzz_driver_rng() % 10);
        if (which == 0) {
            struct etsi004_open_resp r = {.status = st, .has_qos = fuzz_driver_rng() % 2, .qos = q};
            memcpy(r.ksid, ksid, 16);
            f = etsi004_open_resp_encode(&r, &len);
        } else if (which == 1) {
            struct etsi004_get_resp r = {.status = fuzz_driver_rng() % 3 ? 0 : st,
                                         .index = (uint32_t)fuzz_driver_rng(),
                                         .key_len = q.key_chunk_size,
                                         .key = key,
                                         .metadata_len = fuzz_driver_rng() % 2 ? (uint32_t)mdl : 0,
                                         .metadata = md,
                                         .metadata_needed = (uint32_t)(fuzz_driver_rng() % 80)};
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

size_t fuzz_driver_generate(uint8_t *buf, size_t cap)
{
    if (cap > GEN_MAX)
        cap = GEN_MAX;
    int resp = (int)(fuzz_driver_rng() % 2);
    buf[0] = (uint8_t)((fuzz_driver_rng() % 128) << 1 | (uint64_t)resp);
    size_t n = 1;
    size_t frames = fuzz_driver_rng() % 5;
    for (size_t i = 0; i < frames && n < cap; i++) {
        size_t start = n;
        n += frame(buf + n, cap - n, resp);
        uint64_t r = fuzz_driver_rng();
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
