/* libFuzzer target: the KME's HTTP/1.1 request parser (kme/server/
 * http_parse.c, llhttp inside), as the 014 listener drives it: input in
 * chunks, several requests per connection (keep-alive), limits answered
 * with their status. Input: byte 0 = chunk size - 1 (mod 32) and, in bit 7,
 * a small body limit (1 KiB instead of 64 KiB); the rest is the byte
 * stream of one connection. Invariants: the parser consumes what it is
 * given (less only at a request's end), a complete request has a
 * NUL-terminated target within the limit and a body within max_body, a
 * refusal carries 400/413/414/431/503. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                            \
        }                                                                       \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 31) + 1;
    uint64_t max_body = (data[0] & 0x80) ? 1024 : 64 * 1024;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, off = 0, requests = 0;
    struct kme_http_parser p;
    kme_http_parser_init(&p, max_body);
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        /* every chunk in its own exact-size block: ASan sees over-reads */
        char *chunk = malloc(n);
        CHECK(chunk != NULL);
        memcpy(chunk, in + off, n);
        size_t used = 0;
        enum kme_http_parse r = kme_http_parser_feed(&p, chunk, n, &used);
        free(chunk);
        CHECK(used <= n);
        if (r == KME_HTTP_MORE) {
            CHECK(used == n);
            off += n;
            continue;
        }
        if (r == KME_HTTP_BAD) {
            int st = p.limit_status;
            CHECK(st == 400 || st == 413 || st == 414 || st == 431 || st == 503);
            break;
        }
        CHECK(r == KME_HTTP_REQUEST);
        CHECK(p.target_len <= KME_HTTP_MAX_TARGET);
        CHECK(p.target[p.target_len] == '\0');
        CHECK(p.body_len <= max_body);
        CHECK(p.body == NULL || p.body[p.body_len] == '\0');
        CHECK(memchr(p.method, '\0', sizeof(p.method)) != NULL);
        requests++;
        off += used;
        kme_http_parser_next(&p);
    }
    kme_http_parser_clear(&p);
    (void)requests;
    return 0;
}
