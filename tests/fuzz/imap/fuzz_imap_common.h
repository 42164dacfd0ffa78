/* Shared pieces of the IMAP fuzz targets: input layout, chunked feeding
 * and the tokenizer invariants (both directions).
 *
 * Input layout:
 *   byte 0      flags: bits 0-1 pick max_token (16, 64, 1000, 65536),
 *               bits 2-3 max_literal (0, 10, 5000, unlimited), bit 4
 *               max_line 200 (else unlimited), bits 5-6 max_depth
 *               (2, 8, 100, 100)
 *   byte 1      n = number of chunk sizes (low 4 bits)
 *   2n bytes    chunk sizes (u16 little-endian), used cyclically
 *   rest        the payload
 *
 * The tokenizer is run over the payload revealed whole, in those chunks
 * and (up to 4 KiB) one byte at a time, recovering from errors with
 * imap_parser_skip_line() as a session does; the traces (tokens with data
 * chunks merged, errors, positions) must be equal. Every revealed prefix
 * is an exact-size heap copy so ASan sees reads past it. */
#ifndef FUZZ_IMAP_COMMON_H
#define FUZZ_IMAP_COMMON_H

#include "imap_parser.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/fuzz_bytes.h"

/* An exact-size heap copy of n bytes (ASan sees a read past them). */
static inline char *fuzz_copy(const char *src, size_t n)
{
    char *copy = malloc(n ? n : 1);
    CHECK(copy != NULL);
    if (n)
        memcpy(copy, src, n);
    return copy;
}

/* A token in the trace: kind, "(", its bytes, ")". */
static inline void trace_token(struct bytes *trace, char kind, const char *s, size_t n)
{
    const char open[2] = {kind, '('};
    bytes_put(trace, open, 2);
    bytes_put(trace, s, n);
    bytes_put(trace, ")", 1);
}

struct fuzz_input {
    struct imap_parser_limits lim;
    const uint8_t *sizes;
    size_t n_sizes;
    const char *payload;
    size_t len;
};

static inline bool fuzz_input_parse(const uint8_t *data, size_t size, struct fuzz_input *in)
{
    if (size < 2)
        return false;
    static const size_t tokens[] = {16, 64, 1000, 65536};
    static const uint64_t lits[] = {0, 10, 5000, UINT64_MAX};
    static const unsigned depths[] = {2, 8, 100, 100};
    memset(in, 0, sizeof(*in));
    in->lim.max_token = tokens[data[0] & 3];
    in->lim.max_literal = lits[(data[0] >> 2) & 3];
    if (in->lim.max_literal == 0)
        in->lim.max_literal = 1; /* 0 would mean "unlimited" */
    in->lim.max_line = (data[0] & 0x10) ? 200 : 0;
    in->lim.max_depth = depths[(data[0] >> 5) & 3];
    in->n_sizes = data[1] & 15;
    if (size < 2 + 2 * in->n_sizes)
        return false;
    in->sizes = data + 2;
    in->payload = (const char *)data + 2 + 2 * in->n_sizes;
    in->len = size - 2 - 2 * in->n_sizes;
    return true;
}

/* How many more bytes to reveal: mode 0 all, 1 chunks, 2 one byte. */
static inline size_t fuzz_next_chunk(const struct fuzz_input *in, int mode, size_t *k,
                                     size_t left)
{
    size_t sz = left;
    if (mode == 2) {
        sz = 1;
    } else if (mode == 1) {
        sz = 7;
        if (in->n_sizes) {
            const uint8_t *s = in->sizes + 2 * ((*k)++ % in->n_sizes);
            sz = (size_t)s[0] | (size_t)s[1] << 8;
            if (sz == 0)
                sz = 1;
        }
    }
    return sz < left ? sz : left;
}

/* Which tokens start text mode: the response grammar's status responses
 * and continuations (token 1 after a tag or '*', token 0 '+'). */
static inline bool fuzz_text_after(enum imap_parser_role role, size_t index,
                                   const struct imap_token *t)
{
    if (role != IMAP_PARSER_RESPONSES || t->type != IMAP_TOK_ATOM || t->depth != 0)
        return false;
    if (index == 0)
        return t->len == 1 && t->str[0] == '+';
    if (index != 1)
        return false;
    static const char *const st[] = {"OK", "NO", "BAD", "BYE", "PREAUTH"};
    for (size_t i = 0; i < 5; i++)
        if (t->len == strlen(st[i]) && strncasecmp(t->str, st[i], t->len) == 0)
            return true;
    return false;
}

/* Runs the tokenizer; writes a trace. Returns the number of lines ended. */
static inline size_t fuzz_tokenize(enum imap_parser_role role, const struct fuzz_input *in,
                                   int mode, struct bytes *trace)
{
    imap_parser *p = imap_parser_new(role, &in->lim);
    CHECK(p != NULL);
    size_t pos = 0, avail = 0, k = 0, index = 0, lines = 0;
    bool text = false, in_data = false, skipping = false;
    uint64_t lit_expect = 0;
    avail = fuzz_next_chunk(in, mode, &k, in->len);
    for (;;) {
        size_t n = avail - pos;
        char *copy = fuzz_copy(in->payload + pos, n);
        size_t used = (size_t)-1;
        if (skipping) {
            bool done = imap_parser_skip_line(p, copy, n, &used);
            CHECK(used <= n);
            free(copy);
            pos += used;
            if (done) {
                skipping = false;
                bytes_put(trace, "|", 1);
                index = 0;
                text = false;
                continue;
            }
            if (avail == in->len)
                break;
            avail += fuzz_next_chunk(in, mode, &k, in->len - avail);
            continue;
        }
        struct imap_token t;
        const char *err = NULL;
        int r = text ? imap_parser_text_next(p, copy, n, &used, &t, &err)
                     : imap_parser_next(p, copy, n, &used, &t, &err);
        if (r == IMAP_PARSE_MORE) {
            CHECK(used == 0);
            free(copy);
            if (avail == in->len)
                break;
            avail += fuzz_next_chunk(in, mode, &k, in->len - avail);
            continue;
        }
        if (r == IMAP_PARSE_ERROR) {
            free(copy);
            CHECK(err != NULL && *err);
            enum imap_parse_error kind = imap_parser_error_kind(p);
            CHECK(kind != IMAP_PARSE_ERR_NONE);
            CHECK(used <= n);
            char buf[160];
            int bl = snprintf(buf, sizeof(buf), "E[%d %s @%zu]", (int)kind, err, pos + used);
            bytes_put(trace, buf, (size_t)bl);
            pos += used;
            if (in_data)
                CHECK(0); /* no error inside literal data */
            if (kind == IMAP_PARSE_ERR_LITERAL_TOO_BIG) {
                uint64_t sz;
                bool nonsync;
                imap_parser_error_literal(p, &sz, &nonsync);
                CHECK(sz > in->lim.max_literal || sz == UINT64_MAX);
                if (nonsync)
                    break; /* a server disconnects here */
                CHECK(used > 0);
            }
            skipping = true;
            continue;
        }
        CHECK(r == IMAP_PARSE_TOKEN);
        CHECK(used > 0 || t.type == IMAP_TOK_TEXT);
        CHECK(used <= n);
        if (t.str && t.type != IMAP_TOK_EOL)
            CHECK(t.str >= copy && t.str + t.len <= copy + n);
        CHECK(t.depth <= in->lim.max_depth);
        char buf[96];
        int bl = 0;
        switch (t.type) {
        case IMAP_TOK_LITERAL_DATA:
            CHECK(lit_expect >= t.len && t.len > 0);
            lit_expect -= t.len;
            CHECK(t.literal_size == lit_expect);
            if (!in_data)
                bytes_put(trace, "D(", 2);
            in_data = true;
            bytes_put(trace, t.str, t.len);
            if (lit_expect == 0) {
                bytes_put(trace, ")", 1);
                in_data = false;
            }
            break;
        case IMAP_TOK_LITERAL:
            CHECK(!in_data && lit_expect == 0);
            CHECK(t.literal_size <= in->lim.max_literal);
            CHECK(imap_parser_in_literal(p) == (t.literal_size > 0));
            lit_expect = t.literal_size;
            bl = snprintf(buf, sizeof(buf), "L(%llu%s%s)", (unsigned long long)t.literal_size,
                          t.literal_nonsync ? "+" : "", t.literal8 ? "8" : "");
            break;
        case IMAP_TOK_ATOM:
            CHECK(t.len > 0);
            CHECK(memchr(t.str, ' ', t.len) == NULL && memchr(t.str, '\n', t.len) == NULL);
            trace_token(trace, 'A', t.str, t.len);
            break;
        case IMAP_TOK_QUOTED:
            CHECK(memchr(t.str, '\n', t.len) == NULL && memchr(t.str, '\0', t.len) == NULL);
            trace_token(trace, 'Q', t.str, t.len);
            break;
        case IMAP_TOK_TEXT:
            CHECK(memchr(t.str, '\n', t.len) == NULL && memchr(t.str, '\r', t.len) == NULL);
            trace_token(trace, 'T', t.str, t.len);
            break;
        case IMAP_TOK_LIST_BEGIN:
            bl = snprintf(buf, sizeof(buf), "(");
            break;
        case IMAP_TOK_LIST_END:
            bl = snprintf(buf, sizeof(buf), ")");
            break;
        case IMAP_TOK_EOL:
            CHECK(t.depth == 0);
            CHECK(imap_parser_at_line_start(p));
            bl = snprintf(buf, sizeof(buf), "$");
            lines++;
            break;
        }
        if (bl > 0)
            bytes_put(trace, buf, (size_t)bl);
        if (t.type == IMAP_TOK_EOL) {
            index = 0;
            text = false;
        } else if (t.type == IMAP_TOK_LITERAL_DATA) {
            /* part of the literal's argument */
        } else {
            text = !text && fuzz_text_after(role, index, &t);
            index++;
        }
        free(copy);
        pos += used;
    }
    char buf[48];
    int bl = snprintf(buf, sizeof(buf), "#%zu", pos);
    bytes_put(trace, buf, (size_t)bl);
    imap_parser_free(&p);
    CHECK(p == NULL);
    return lines;
}

/* The tokenizer agrees with itself however the input is cut. */
static inline void fuzz_tokenizer(enum imap_parser_role role, const struct fuzz_input *in)
{
    struct bytes whole = {0}, chunks = {0}, bytes1 = {0};
    fuzz_tokenize(role, in, 0, &whole);
    fuzz_tokenize(role, in, 1, &chunks);
    if (!bytes_eq(&whole, &chunks))
        fprintf(stderr, "whole: %.*s\nchunks: %.*s\n", (int)whole.len, whole.p,
                (int)chunks.len, chunks.p);
    CHECK(bytes_eq(&whole, &chunks));
    if (in->len <= 4096) {
        fuzz_tokenize(role, in, 2, &bytes1);
        if (!bytes_eq(&whole, &bytes1))
            fprintf(stderr, "whole: %.*s\nbytes: %.*s\n", (int)whole.len, whole.p,
                    (int)bytes1.len, bytes1.p);
        CHECK(bytes_eq(&whole, &bytes1));
    }
    bytes_free(&whole);
    bytes_free(&chunks);
    bytes_free(&bytes1);
}

/* imap_args_parse on the first line agrees with the tokenizer: it parses
 * iff the tokenizer ends that line without error. */
static inline void fuzz_args_first_line(enum imap_parser_role role, const struct fuzz_input *in)
{
    struct imap_args args;
    const char *err = NULL;
    char *copy = fuzz_copy(in->payload, in->len);
    int rc = imap_args_parse(role, &in->lim, copy, in->len, &args, &err);
    CHECK(rc == 0 || rc == IMAP_PARSE_MORE || rc == IMAP_PARSE_ERROR);
    if (rc == 0) {
        CHECK(args.line_len > 0 && args.line_len <= in->len);
        CHECK(copy[args.line_len - 1] == '\n');
        for (size_t i = 0; i < args.count; i++)
            CHECK(args.args[i].raw_off + args.args[i].raw_len <= args.line_len);
        imap_args_free(&args);
    } else if (rc == IMAP_PARSE_ERROR) {
        CHECK(err != NULL);
    }
    free(copy);
}

#endif
