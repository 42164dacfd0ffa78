/* libFuzzer target for the ETSI GS QKD 004 frame parser and payload
 * decoders (kme/etsi004.c), as the KME simulator's 004 server reads
 * requests and as the 004 client reads responses.
 *
 * Input layout:
 *   byte 0   bit 0: the stream holds responses (client side) instead of
 *            requests (server side); bits 1-7: the piece size the stream is
 *            cut into (0 counts as 1)
 *   rest     the byte stream: frames back to back
 *
 * The stream is read the way the connection code reads it: bytes arrive in
 * pieces, each piece appended to a buffer, and etsi004_frame_parse() is
 * asked after each arrival. Invariants (a broken one abort()s):
 *   - frames are recognised at the same offsets whether the stream arrives
 *     whole or in pieces; "need more" never turns into an error by more
 *     bytes arriving, and an oversized length is refused as soon as the
 *     8 header bytes are in;
 *   - a payload that decodes, re-encoded and decoded again, gives the same
 *     decoded value (and the encoder writes the length it claims);
 *   - decoded pointers (URIs, key, metadata) lie inside the payload. */
#include "etsi004.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fuzz_check.h"

#define INSIDE(ptr, len, base, n) \
    ((const uint8_t *)(ptr) >= (base) && (const uint8_t *)(ptr) + (len) <= (base) + (n))

/* Re-encodes a whole frame: the header must say what follows. */
static const uint8_t *frame_payload(const uint8_t *f, size_t len, uint8_t service,
                                    size_t *n_r)
{
    struct etsi004_header h;
    CHECK(f != NULL);
    CHECK(etsi004_frame_parse(f, len, UINT32_MAX, &h) == 1);
    CHECK(h.service == service);
    CHECK((size_t)h.length + ETSI004_HEADER_LEN == len);
    *n_r = h.length;
    return f + ETSI004_HEADER_LEN;
}

static void request(uint8_t service, const uint8_t *p, size_t n)
{
    size_t len, m;
    uint8_t *f;
    const uint8_t *q;
    switch (service) {
    case ETSI004_OPEN_CONNECT_REQ: {
        struct etsi004_open_req r, r2;
        if (etsi004_open_req_decode(p, n, &r) != 0)
            return;
        CHECK(INSIDE(r.source, strlen(r.source) + 1, p, n));
        CHECK(INSIDE(r.destination, strlen(r.destination) + 1, p, n));
        CHECK(strlen(r.source) <= ETSI004_URI_MAX);
        f = etsi004_open_req_encode(r.source, r.destination, &r.qos, r.ksid, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(m <= n);
        CHECK(etsi004_open_req_decode(q, m, &r2) == 0);
        CHECK(strcmp(r.source, r2.source) == 0 && strcmp(r.destination, r2.destination) == 0);
        CHECK(memcmp(&r.qos, &r2.qos, sizeof(r.qos)) == 0);
        CHECK(memcmp(r.ksid, r2.ksid, ETSI004_KSID_LEN) == 0);
        free(f);
        return;
    }
    case ETSI004_GET_KEY_REQ: {
        struct etsi004_get_req r, r2;
        if (etsi004_get_req_decode(p, n, &r) != 0)
            return;
        f = etsi004_get_req_encode(&r, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(m == n && memcmp(p, q, n) == 0); /* the layout is canonical */
        CHECK(etsi004_get_req_decode(q, m, &r2) == 0);
        CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
        free(f);
        return;
    }
    case ETSI004_CLOSE_REQ: {
        uint8_t k[ETSI004_KSID_LEN];
        if (etsi004_close_req_decode(p, n, k) != 0)
            return;
        f = etsi004_close_req_encode(k, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(m == n && memcmp(p, q, n) == 0);
        free(f);
        return;
    }
    default:
        CHECK(etsi004_service_name(service) == NULL ||
              (service & 1) == 1); /* a response type sent as a request */
        return;
    }
}

static void response(uint8_t service, const uint8_t *p, size_t n)
{
    size_t len, m;
    uint8_t *f;
    const uint8_t *q;
    switch (service) {
    case ETSI004_OPEN_CONNECT_RESP: {
        struct etsi004_open_resp r, r2;
        if (etsi004_open_resp_decode(p, n, &r) != 0)
            return;
        f = etsi004_open_resp_encode(&r, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(etsi004_open_resp_decode(q, m, &r2) == 0);
        CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
        free(f);
        return;
    }
    case ETSI004_GET_KEY_RESP: {
        struct etsi004_get_resp r, r2;
        if (etsi004_get_resp_decode(p, n, &r) != 0)
            return;
        if (r.status == ETSI004_SUCCESS) {
            CHECK(INSIDE(r.key, r.key_len, p, n));
            CHECK(r.metadata_len == 0 || INSIDE(r.metadata, r.metadata_len, p, n));
            CHECK(12 + (size_t)r.key_len + 4 + r.metadata_len == n);
        }
        f = etsi004_get_resp_encode(&r, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(etsi004_get_resp_decode(q, m, &r2) == 0);
        CHECK(r.status == r2.status && r.index == r2.index && r.key_len == r2.key_len &&
              r.metadata_len == r2.metadata_len && r.metadata_needed == r2.metadata_needed);
        CHECK(r.key_len == 0 || memcmp(r.key, r2.key, r.key_len) == 0);
        CHECK(r.metadata_len == 0 || memcmp(r.metadata, r2.metadata, r.metadata_len) == 0);
        if (r.status == ETSI004_SUCCESS)
            CHECK(m == n && memcmp(p, q, n) == 0);
        etsi004_free_secret(f, len);
        return;
    }
    case ETSI004_CLOSE_RESP: {
        uint32_t st;
        if (etsi004_close_resp_decode(p, n, &st) != 0)
            return;
        f = etsi004_close_resp_encode(st, &len);
        q = frame_payload(f, len, service, &m);
        CHECK(m == 4 && memcmp(p, q, 4) == 0);
        free(f);
        return;
    }
    default:
        return;
    }
}

/* Offsets where frames end when the stream is read in pieces of `piece`
 * bytes; stops at the first error or at the end. Returns the count. */
static size_t scan(const uint8_t *s, size_t n, size_t piece, uint32_t max, bool resp,
                   size_t *ends, size_t cap, int *error_r)
{
    size_t start = 0, have = 0, count = 0;
    *error_r = 0;
    while (have < n || have == 0) {
        size_t add = n - have < piece ? n - have : piece;
        have += add;
        /* Each arrival: copy the unread bytes into an exact-size block so
         * that ASan reports any read past them. */
        for (;;) {
            size_t avail = have - start;
            uint8_t *blk = malloc(avail ? avail : 1);
            CHECK(blk != NULL);
            memcpy(blk, s + start, avail);
            struct etsi004_header h;
            int rc = etsi004_frame_parse(blk, avail, max, &h);
            if (rc < 0) {
                CHECK(rc == ETSI004_ETOOBIG && avail >= ETSI004_HEADER_LEN && h.length > max);
                free(blk);
                *error_r = rc;
                return count;
            }
            if (rc == 0) {
                free(blk);
                break;
            }
            size_t flen = ETSI004_HEADER_LEN + h.length;
            if (resp)
                response(h.service, blk + ETSI004_HEADER_LEN, h.length);
            else
                request(h.service, blk + ETSI004_HEADER_LEN, h.length);
            free(blk);
            start += flen;
            if (count < cap)
                ends[count] = start;
            count++;
        }
        if (add == 0)
            break;
    }
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool resp = data[0] & 1;
    size_t piece = data[0] >> 1;
    if (piece == 0)
        piece = 1;
    const uint8_t *s = data + 1;
    size_t n = size - 1;
    uint32_t max = resp ? ETSI004_MAX_GET_RESPONSE : ETSI004_MAX_REQUEST;
    enum { CAP = 256 };
    size_t whole[CAP], parts[CAP];
    int e1, e2;
    size_t c1 = scan(s, n, n ? n : 1, max, resp, whole, CAP, &e1);
    size_t c2 = scan(s, n, piece, max, resp, parts, CAP, &e2);
    CHECK(c1 == c2 && e1 == e2);
    for (size_t i = 0; i < c1 && i < CAP; i++)
        CHECK(whole[i] == parts[i]);
    return 0;
}
