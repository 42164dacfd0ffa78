/* libFuzzer target for the SMTP wire parsers (qumail_smtp): command
 * parser, reply parser, DATA reader (dot-unstuffing), dot-stuffer and the
 * Bcc header filter. Every input drives all five.
 *
 * Input layout:
 *   byte 0      flags: bits 0-1 pick the DATA reader's max_line
 *               (0, 1, 78, 1000), bits 2-3 the header capture size
 *               (none, 16, 256, 64 KiB); bit 4 set: also run the DATA
 *               reader and header filter with sinks that fail after
 *               9 * (bits 5-7) bytes
 *   byte 1      n = number of chunk sizes (0..15, low 4 bits)
 *   2n bytes    chunk sizes, little-endian u16 each, used cyclically to
 *               cut the payload into pieces (size 0 counts as 1)
 *   rest        the payload
 *
 * Each streaming parser is fed the payload whole and in those pieces
 * (each piece copied into its own exact-size heap block so that ASan sees
 * any read past it); results must agree with each other and with a
 * plain reference implementation written here from the RFC rules.
 * A broken invariant abort()s with a message on stderr. */
#include "smtp_hdrfilter.h"
#include "smtp_proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/fuzz_bytes.h"

static int sink_bytes(void *arg, const char *data, size_t len)
{
    CHECK(len > 0 || data != NULL);
    bytes_put(arg, data, len);
    return 0;
}

/* ---- chunking ------------------------------------------------------------ */

struct chunker {
    const uint8_t *sizes; /* n little-endian u16 */
    size_t n, next;
};

static size_t chunk_len(struct chunker *c, size_t left)
{
    size_t sz = 1;
    if (c->n > 0) {
        const uint8_t *s = c->sizes + 2 * (c->next++ % c->n);
        sz = (size_t)s[0] | (size_t)s[1] << 8;
        if (sz == 0)
            sz = 1;
    } else {
        sz = 7;
    }
    return sz < left ? sz : left;
}

/* A copy of [p, p+n) in its own heap block (ASan catches over-reads). */
static char *dup_exact(const char *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* ---- command parser -------------------------------------------------------- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static void check_cmd_result(const char *line, size_t len, int rc,
                             const struct smtp_cmd *cmd, const char *err)
{
    CHECK(rc == 0 || rc < 0);
    if (rc < 0) {
        /* A ready-to-send reply: "5xx d.d.d text" (or 4xx). */
        CHECK(err != NULL);
        size_t el = strlen(err);
        CHECK(el > 6);
        CHECK((err[0] == '4' || err[0] == '5') && is_digit(err[1]) &&
              is_digit(err[2]) && err[3] == ' ' && err[4] == err[0] &&
              err[5] == '.');
        return;
    }
    CHECK(smtp_verb_name(cmd->verb) != NULL);
    if (len > 0) {
        CHECK(cmd->arg >= line && cmd->arg <= line + len);
        CHECK(cmd->arg_len <= (size_t)(line + len - cmd->arg));
    }
    CHECK(memchr(cmd->path, '\0', sizeof(cmd->path)) != NULL);
    CHECK(memchr(cmd->dsn, '\0', sizeof(cmd->dsn)) != NULL);
    CHECK(cmd->body == SMTP_BODY_UNSPEC || cmd->body == SMTP_BODY_7BIT ||
          cmd->body == SMTP_BODY_8BITMIME);
    if (!cmd->has_size)
        CHECK(cmd->size == 0);
}

static void cmp_cmd(const struct smtp_cmd *a, const struct smtp_cmd *b)
{
    CHECK(a->verb == b->verb);
    CHECK(a->arg_len == b->arg_len);
    CHECK(a->arg_len == 0 || memcmp(a->arg, b->arg, a->arg_len) == 0);
    CHECK(strcmp(a->path, b->path) == 0);
    CHECK(strcmp(a->dsn, b->dsn) == 0);
    CHECK(a->path_utf8 == b->path_utf8 && a->size == b->size &&
          a->has_size == b->has_size && a->body == b->body &&
          a->smtputf8 == b->smtputf8 && a->chunk_size == b->chunk_size &&
          a->last == b->last);
}

/* Parses one line, and again with CRLF appended: trailing line ends are
 * ignored, so both must agree. */
static void fuzz_cmd_line(const char *p, size_t n)
{
    static struct smtp_cmd c1, c2;
    const char *e1 = NULL, *e2 = NULL;
    char *line = dup_exact(p, n);
    int r1 = smtp_cmd_parse(line, n, &c1, &e1);
    check_cmd_result(line, n, r1, &c1, e1);

    char *crlf = malloc(n + 2);
    CHECK(crlf != NULL);
    if (n)
        memcpy(crlf, p, n);
    crlf[n] = '\r';
    crlf[n + 1] = '\n';
    int r2 = smtp_cmd_parse(crlf, n + 2, &c2, &e2);
    check_cmd_result(crlf, n + 2, r2, &c2, e2);
    CHECK(r1 == r2);
    if (r1 < 0)
        CHECK(strcmp(e1, e2) == 0);
    else
        cmp_cmd(&c1, &c2);
    free(crlf);
    free(line);
}

static void fuzz_cmd(const char *d, size_t len)
{
    fuzz_cmd_line(d, len); /* the whole payload as one (odd) line */
    size_t i = 0, lines = 0;
    while (i < len && lines++ < 256) {
        const char *nl = memchr(d + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (d + i)) + 1 : len - i;
        fuzz_cmd_line(d + i, n);
        i += n;
    }
}

/* ---- reply parser ---------------------------------------------------------- */

static void check_reply(const struct smtp_reply *r, const char *last,
                        size_t last_len)
{
    CHECK(r->code >= 200 && r->code <= 599);
    /* The code is the last line's first three digits. */
    CHECK(last_len >= 3);
    CHECK(r->code == (last[0] - '0') * 100 + (last[1] - '0') * 10 + (last[2] - '0'));
    CHECK(r->lines >= 1);
    CHECK(r->text_len <= SMTP_REPLY_MAX);
    CHECK(r->text[r->text_len] == '\0');
    CHECK(memchr(r->enh, '\0', sizeof(r->enh)) != NULL);
    size_t el = strlen(r->enh);
    if (el > 0) {
        CHECK(el >= 5 && r->enh[0] == (char)('0' + r->code / 100) &&
              r->enh[1] == '.');
        size_t dots = 0;
        for (size_t i = 1; i < el; i++) {
            if (r->enh[i] == '.')
                dots++;
            else
                CHECK(is_digit(r->enh[i]));
        }
        CHECK(dots == 2);
    }
    /* The line iterator visits every line and, rejoined with '\n', gives
     * back the text. */
    struct bytes j = {0};
    size_t pos = 0, ln, count = 0;
    const char *l;
    while ((l = smtp_reply_line(r, &pos, &ln)) != NULL) {
        CHECK(l >= r->text && ln <= r->text_len &&
              (size_t)(l - r->text) <= r->text_len - ln);
        CHECK(memchr(l, '\n', ln) == NULL);
        if (count++ > 0)
            bytes_put(&j, "\n", 1);
        bytes_put(&j, l, ln);
        CHECK(count <= r->lines);
    }
    CHECK(count == r->lines);
    CHECK(j.len == r->text_len &&
          (j.len == 0 || memcmp(j.p, r->text, j.len) == 0));
    bytes_free(&j);
}

static void fuzz_reply(const char *d, size_t len)
{
    smtp_reply_parser *p = smtp_reply_parser_new();
    CHECK(p != NULL);
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(d + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (d + i)) + 1 : len - i;
        char *line = dup_exact(d + i, n);
        const struct smtp_reply *r = NULL;
        const char *err = NULL;
        enum smtp_parse_result res = smtp_reply_feed(p, line, n, &r, &err);
        CHECK(res == SMTP_ERR || res == SMTP_MORE || res == SMTP_DONE);
        if (res == SMTP_ERR)
            CHECK(err != NULL);
        if (res == SMTP_DONE) {
            CHECK(r != NULL);
            size_t sl = n;
            while (sl > 0 && (line[sl - 1] == '\n' || line[sl - 1] == '\r'))
                sl--;
            check_reply(r, line, sl);
        }
        free(line);
        i += n;
    }
    smtp_reply_parser_free(&p);
    CHECK(p == NULL);
    smtp_reply_parser_free(&p); /* idempotent */
}

/* ---- DATA reader and stuffer ---------------------------------------------- */

struct data_result {
    enum smtp_parse_result res;
    size_t used; /* total input consumed */
    struct bytes out;
    bool too_long;
    uint64_t bytes;
};

/* Reference unstuffing (RFC 5321 4.5.2, with a bare LF as a line end). */
static void ref_unstuff(const char *d, size_t len, uint64_t max_line,
                        struct data_result *res)
{
    size_t i = 0;
    memset(res, 0, sizeof(*res));
    res->res = SMTP_MORE;
    while (i < len) {
        const char *nl = memchr(d + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (d + i)) + 1 : len - i;
        const char *l = d + i;
        i += n;
        if (l[0] == '.') {
            if ((n == 2 && l[1] == '\n') ||
                (n == 3 && l[1] == '\r' && l[2] == '\n')) {
                res->res = SMTP_DONE;
                break;
            }
            if (!nl && (n == 1 || (n == 2 && l[1] == '\r')))
                break; /* undecided: terminator or stuffed, held back */
            bytes_put(&res->out, l + 1, n - 1);
        } else {
            bytes_put(&res->out, l, n);
        }
        if (max_line && n > max_line)
            res->too_long = true;
    }
    res->used = i;
    res->bytes = res->out.len;
}

static void run_reader(const char *d, size_t len, uint64_t max_line,
                       struct chunker *ck, struct data_result *res)
{
    struct smtp_data_reader r;
    memset(res, 0, sizeof(*res));
    smtp_data_reader_init(&r, max_line, sink_bytes, &res->out);
    res->res = SMTP_MORE;
    size_t i = 0;
    do {
        size_t n = ck ? chunk_len(ck, len - i) : len - i;
        char *piece = dup_exact(d + i, n);
        size_t used = SIZE_MAX;
        const char *err = NULL;
        enum smtp_parse_result pr = smtp_data_feed(&r, piece, n, &used, &err);
        free(piece);
        CHECK(pr != SMTP_ERR); /* our sink never fails */
        CHECK(used <= n);
        if (pr == SMTP_MORE)
            CHECK(used == n);
        i += used;
        res->res = pr;
        if (pr == SMTP_DONE) {
            /* Feeding after the end is refused. */
            size_t u2 = 0;
            CHECK(smtp_data_feed(&r, "x", 1, &u2, &err) == SMTP_ERR && err);
            break;
        }
    } while (i < len);
    res->used = i;
    res->too_long = r.line_too_long;
    res->bytes = r.bytes;
    CHECK(res->bytes == res->out.len);
}

static void cmp_data(const struct data_result *a, const struct data_result *b,
                     bool cmp_too_long)
{
    CHECK(a->res == b->res);
    CHECK(a->used == b->used);
    CHECK(bytes_eq(&a->out, &b->out));
    CHECK(a->bytes == b->bytes);
    if (cmp_too_long)
        CHECK(a->too_long == b->too_long);
}

static void fuzz_data(const char *d, size_t len, uint64_t max_line,
                      struct chunker *ck)
{
    struct data_result whole, pieces, ref, one;
    ref_unstuff(d, len, max_line, &ref);
    run_reader(d, len, max_line, NULL, &whole);
    run_reader(d, len, max_line, ck, &pieces);
    cmp_data(&whole, &ref, true);
    cmp_data(&pieces, &ref, true);
    if (len <= 1024) { /* byte by byte: every state at every boundary */
        struct chunker byte1 = {(const uint8_t *)"\x01\x00", 1, 0};
        run_reader(d, len, max_line, &byte1, &one);
        cmp_data(&one, &ref, true);
        bytes_free(&one.out);
    }
    bytes_free(&whole.out);
    bytes_free(&pieces.out);
    bytes_free(&ref.out);
}

/* Reference stuffing: every line end becomes CRLF (CRLF, bare CR, bare LF),
 * a '.' at a line start is doubled, a missing final line end is added,
 * then ".\r\n". With dots false: only the line-end normalisation (and
 * the added final line end), i.e. what unstuffing must give back. */
static void ref_stuff(const char *d, size_t len, bool dots, struct bytes *out)
{
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        char c = d[i];
        if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < len && d[i + 1] == '\n')
                i++;
            bytes_put(out, "\r\n", 2);
            bol = true;
            continue;
        }
        if (dots && bol && c == '.')
            bytes_put(out, ".", 1);
        bytes_put(out, &c, 1);
        bol = false;
    }
    if (!bol)
        bytes_put(out, "\r\n", 2);
    if (dots)
        bytes_put(out, ".\r\n", 3);
}

static void run_stuffer(const char *d, size_t len, struct chunker *ck,
                        struct bytes *out)
{
    struct smtp_stuffer s;
    smtp_stuffer_init(&s);
    size_t i = 0;
    while (i < len) {
        size_t n = ck ? chunk_len(ck, len - i) : len - i;
        char *piece = dup_exact(d + i, n);
        char *o = malloc(2 * n + 2); /* exactly the documented bound */
        CHECK(o != NULL);
        size_t w = smtp_stuff(&s, piece, n, o);
        CHECK(w <= 2 * n + 2);
        bytes_put(out, o, w);
        free(o);
        free(piece);
        i += n;
    }
    char *end = malloc(5);
    CHECK(end != NULL);
    size_t w = smtp_stuff_end(&s, end);
    CHECK(w >= 3 && w <= 5);
    bytes_put(out, end, w);
    free(end);
}

static void fuzz_stuff(const char *d, size_t len, struct chunker *ck)
{
    struct bytes ref = {0}, whole = {0}, pieces = {0}, normal = {0};
    ref_stuff(d, len, true, &ref);
    ref_stuff(d, len, false, &normal); /* what unstuffing must give back */
    run_stuffer(d, len, NULL, &whole);
    run_stuffer(d, len, ck, &pieces);
    CHECK(bytes_eq(&whole, &ref));
    CHECK(bytes_eq(&pieces, &ref));

    /* Round trip: unstuffing the stuffed stream gives back the message
     * with normalised line ends, and ends exactly at the terminator. */
    struct data_result rt;
    run_reader(whole.p, whole.len, 0, ck, &rt);
    CHECK(rt.res == SMTP_DONE);
    CHECK(rt.used == whole.len);
    CHECK(bytes_eq(&rt.out, &normal));
    bytes_free(&rt.out);
    bytes_free(&normal);
    bytes_free(&ref);
    bytes_free(&whole);
    bytes_free(&pieces);
}

/* ---- header filter --------------------------------------------------------- */

static const char *const drop_names[] = {"Bcc", NULL};

/* Is this (non-fold) header line a Bcc field? name *WSP ":" anywhere. */
static bool line_is_bcc(const char *l, size_t n)
{
    const char *colon = memchr(l, ':', n);
    if (!colon)
        return false;
    size_t k = (size_t)(colon - l);
    while (k > 0 && (l[k - 1] == ' ' || l[k - 1] == '\t'))
        k--;
    return k == 3 && strncasecmp(l, "bcc", 3) == 0;
}

static bool is_blank(const char *l, size_t n, bool complete)
{
    return complete && (n == 1 || (n == 2 && l[0] == '\r'));
}

/* Reference filter on whole lines. Returns false when a header line is
 * longer than SMTP_HDRFILTER_LINE_MAX (the filter then decides on the
 * first LINE_MAX bytes only; the reference does not model that). */
static bool ref_filter(const char *d, size_t len, struct bytes *out,
                       size_t *hdr_len_r, bool *saw_bcc_r)
{
    size_t i = 0;
    bool dropping = false;
    *saw_bcc_r = false;
    *hdr_len_r = SIZE_MAX;
    while (i < len) {
        const char *nl = memchr(d + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (d + i)) + 1 : len - i;
        const char *l = d + i;
        i += n;
        if (n > SMTP_HDRFILTER_LINE_MAX)
            return false;
        if (is_blank(l, n, nl != NULL)) {
            bytes_put(out, l, n);
            *hdr_len_r = out->len;
            bytes_put(out, d + i, len - i);
            return true;
        }
        if (l[0] != ' ' && l[0] != '\t')
            dropping = line_is_bcc(l, n);
        if (dropping)
            *saw_bcc_r = true;
        else
            bytes_put(out, l, n);
    }
    return true;
}

/* The output's header block must hold no Bcc field. */
static void check_no_bcc(const struct bytes *o)
{
    size_t i = 0;
    while (i < o->len) {
        const char *nl = memchr(o->p + i, '\n', o->len - i);
        size_t n = nl ? (size_t)(nl - (o->p + i)) + 1 : o->len - i;
        const char *l = o->p + i;
        i += n;
        if (is_blank(l, n, nl != NULL))
            return;
        if (l[0] == ' ' || l[0] == '\t')
            continue;
        /* Field names are decided on the first LINE_MAX bytes. */
        size_t m = n < SMTP_HDRFILTER_LINE_MAX ? n : SMTP_HDRFILTER_LINE_MAX;
        CHECK(!line_is_bcc(l, m));
    }
}

struct filter_result {
    struct bytes out;
    bool in_body, overflow;
    char *cap;
    size_t cap_len;
};

static void run_filter(const char *d, size_t len, struct chunker *ck,
                       size_t capsz, struct filter_result *res)
{
    struct smtp_hdrfilter *f = malloc(sizeof(*f));
    CHECK(f != NULL);
    memset(res, 0, sizeof(*res));
    smtp_hdrfilter_init(f, drop_names, sink_bytes, &res->out);
    if (capsz) {
        /* Small captures get an exact heap block (ASan sees overruns);
         * the large one, which never overflows, a reused static one. */
        static char big[2][65536];
        res->cap = capsz <= 256 ? malloc(capsz) : big[ck != NULL];
        CHECK(res->cap != NULL && capsz <= sizeof(big[0]));
        smtp_hdrfilter_capture(f, res->cap, capsz);
    }
    size_t i = 0;
    while (i < len) {
        size_t n = ck ? chunk_len(ck, len - i) : len - i;
        char *piece = dup_exact(d + i, n);
        CHECK(smtp_hdrfilter_feed(f, piece, n) == 0);
        free(piece);
        i += n;
    }
    CHECK(smtp_hdrfilter_finish(f) == 0);
    res->in_body = f->in_body;
    res->overflow = f->capture_overflow;
    res->cap_len = f->capture_len;
    CHECK(!capsz || res->cap_len <= capsz);
    free(f);
}

static void fuzz_filter(const char *d, size_t len, struct chunker *ck,
                        size_t capsz)
{
    struct filter_result whole, pieces;
    struct bytes ref = {0};
    size_t hdr_len;
    bool saw_bcc;
    run_filter(d, len, NULL, capsz, &whole);
    run_filter(d, len, ck, capsz, &pieces);
    CHECK(bytes_eq(&whole.out, &pieces.out));
    CHECK(whole.in_body == pieces.in_body);
    check_no_bcc(&whole.out);
    if (ref_filter(d, len, &ref, &hdr_len, &saw_bcc)) {
        CHECK(bytes_eq(&whole.out, &ref));
        if (!saw_bcc) /* nothing to drop: output is the input */
            CHECK(whole.out.len == len &&
                  (len == 0 || memcmp(whole.out.p, d, len) == 0));
        CHECK(whole.in_body == (hdr_len != SIZE_MAX));
        /* The capture is the kept header block, when it fitted. */
        if (capsz && !whole.overflow) {
            size_t h = hdr_len != SIZE_MAX ? hdr_len : ref.len;
            CHECK(whole.cap_len == h);
            CHECK(h == 0 || memcmp(whole.cap, ref.p, h) == 0);
        }
        if (capsz) {
            size_t h = hdr_len != SIZE_MAX ? hdr_len : ref.len;
            CHECK(whole.overflow == (h > capsz));
            CHECK(pieces.overflow == whole.overflow);
        }
    }
    if (capsz <= 256) {
        free(whole.cap);
        free(pieces.cap);
    }
    bytes_free(&whole.out);
    bytes_free(&pieces.out);
    bytes_free(&ref);
}

/* ---- failing sinks ------------------------------------------------------- */

/* A sink that accepts `limit` bytes, then fails (returns -5) on the call
 * that would pass the limit: the error must surface iff the reference
 * output is longer than the limit, and nothing is delivered after it. */
struct failing {
    size_t limit, got;
    bool failed;
};

static int sink_failing(void *arg, const char *data, size_t len)
{
    struct failing *f = arg;
    (void)data;
    CHECK(!f->failed); /* never called again after a failure */
    if (len > f->limit - f->got) {
        f->failed = true;
        return -5;
    }
    f->got += len;
    return 0;
}

static void fuzz_sink_fail(const char *d, size_t len, size_t limit,
                           struct chunker *ck)
{
    struct data_result ref;
    ref_unstuff(d, len, 0, &ref);

    struct failing fs = {limit, 0, false};
    struct smtp_data_reader r;
    smtp_data_reader_init(&r, 0, sink_failing, &fs);
    size_t i = 0;
    enum smtp_parse_result pr = SMTP_MORE;
    do {
        size_t n = chunk_len(ck, len - i);
        char *piece = dup_exact(d + i, n);
        size_t used = 0;
        const char *err = NULL;
        pr = smtp_data_feed(&r, piece, n, &used, &err);
        free(piece);
        if (pr == SMTP_ERR) {
            CHECK(err != NULL && strcmp(err, "sink failed") == 0);
            break;
        }
        i += used;
    } while (pr == SMTP_MORE && i < len);
    CHECK((pr == SMTP_ERR) == (ref.out.len > limit));
    CHECK(fs.failed == (pr == SMTP_ERR));
    bytes_free(&ref.out);

    struct bytes fref = {0};
    size_t hdr_len;
    bool saw_bcc;
    if (!ref_filter(d, len, &fref, &hdr_len, &saw_bcc)) {
        bytes_free(&fref);
        return;
    }
    struct failing ff = {limit, 0, false};
    struct smtp_hdrfilter *f = malloc(sizeof(*f));
    CHECK(f != NULL);
    smtp_hdrfilter_init(f, drop_names, sink_failing, &ff);
    int rc = 0;
    i = 0;
    while (i < len && rc == 0) {
        size_t n = chunk_len(ck, len - i);
        char *piece = dup_exact(d + i, n);
        rc = smtp_hdrfilter_feed(f, piece, n);
        free(piece);
        i += n;
    }
    if (rc == 0)
        rc = smtp_hdrfilter_finish(f);
    CHECK(rc == 0 || rc == -5);
    CHECK((rc == -5) == (fref.len > limit));
    free(f);
    bytes_free(&fref);
}

/* ---- entry ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t max_lines[4] = {0, 1, 78, 1000};
    static const size_t caps[4] = {0, 16, 256, 65536};
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t n = data[1] & 0x0f;
    if (size < 2 + 2 * n)
        return 0;
    struct chunker ck = {data + 2, n, 0};
    const char *payload = (const char *)data + 2 + 2 * n;
    size_t plen = size - 2 - 2 * n;

    fuzz_cmd(payload, plen);
    fuzz_reply(payload, plen);
    ck.next = 0;
    fuzz_data(payload, plen, max_lines[flags & 3], &ck);
    ck.next = 0;
    fuzz_stuff(payload, plen, &ck);
    ck.next = 0;
    fuzz_filter(payload, plen, &ck, caps[(flags >> 2) & 3]);
    if (flags & 0x10) {
        ck.next = 0;
        fuzz_sink_fail(payload, plen, (size_t)(flags >> 5) * 9, &ck);
    }
    return 0;
}
