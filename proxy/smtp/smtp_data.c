/* DATA stream: dot-unstuffing reader and dot-stuffing writer. No I/O. */
#include "smtp_proto.h"

#include <string.h>

/* Reader states. At a line start we do not yet know whether a '.' begins
 * the terminator or a stuffed line, so the dot is held back one byte. */
enum {
    RD_LINE_START = 0, /* after LF (or at the very beginning) */
    RD_IN_LINE,
    RD_DOT,            /* '.' at line start seen */
    RD_DOT_CR,         /* ".\r" at line start seen */
    RD_DONE,
};

void smtp_data_reader_init(struct smtp_data_reader *r, uint64_t max_line,
                           smtp_data_sink sink, void *sink_arg)
{
    memset(r, 0, sizeof(*r));
    r->state = RD_LINE_START;
    r->max_line = max_line;
    r->sink = sink;
    r->sink_arg = sink_arg;
}

static int emit(struct smtp_data_reader *r, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    r->bytes += n;
    return r->sink(r->sink_arg, p, n);
}

static void count_line(struct smtp_data_reader *r, size_t n)
{
    r->line_len += n;
    if (r->max_line && r->line_len > r->max_line)
        r->line_too_long = true;
}

enum smtp_parse_result smtp_data_feed(struct smtp_data_reader *r,
                                      const char *data, size_t len,
                                      size_t *used_r, const char **error_r)
{
    size_t i = 0;
    size_t run = 0; /* start of a pending run of plain bytes to emit */
    *used_r = 0;
    if (r->state == RD_DONE) {
        *error_r = "data already complete";
        return SMTP_ERR;
    }
    while (i < len) {
        char c = data[i];
        switch (r->state) {
        case RD_LINE_START:
            if (c == '.') {
                if (emit(r, data + run, i - run) < 0)
                    goto sink_failed;
                r->state = RD_DOT;
                i++;
                run = i; /* the dot itself is held back */
                continue;
            }
            r->line_len = 0;
            r->state = RD_IN_LINE;
            continue; /* re-dispatch this byte in RD_IN_LINE */
        case RD_IN_LINE: {
            /* Fast path: scan to the next LF. */
            const char *nl = memchr(data + i, '\n', len - i);
            size_t upto = nl ? (size_t)(nl - data) + 1 : len;
            count_line(r, upto - i);
            i = upto;
            if (nl) {
                r->state = RD_LINE_START;
                r->line_len = 0;
            }
            continue;
        }
        case RD_DOT:
            if (c == '\r') {
                r->state = RD_DOT_CR;
                i++;
                continue;
            }
            if (c == '\n') { /* ".\n": lenient terminator */
                i++;
                goto done;
            }
            /* Stuffed dot: drop it, the byte is line content. */
            r->line_len = 1;
            r->state = RD_IN_LINE;
            run = i;
            continue;
        case RD_DOT_CR:
            if (c == '\n') {
                i++;
                goto done;
            }
            /* ".\r" followed by something else: the dot was stuffed. */
            if (emit(r, "\r", 1) < 0)
                goto sink_failed;
            r->line_len = 2; /* the dot and the CR */
            r->state = RD_IN_LINE;
            run = i;
            continue;
        default:
            break;
        }
    }
    if (r->state != RD_DOT && r->state != RD_DOT_CR &&
        emit(r, data + run, i - run) < 0)
        goto sink_failed;
    *used_r = i;
    return SMTP_MORE;
done:
    r->state = RD_DONE;
    *used_r = i;
    return SMTP_DONE;
sink_failed:
    *error_r = "sink failed";
    return SMTP_ERR;
}

/* ---- stuffer ------------------------------------------------------------ */

enum { ST_LINE_START = 0, ST_IN_LINE, ST_CR };

void smtp_stuffer_init(struct smtp_stuffer *s) { s->state = ST_LINE_START; }

/* One byte, the general case (bare CR, CR at a chunk end, ...). */
static size_t stuff_byte(struct smtp_stuffer *s, char c, char *out)
{
    size_t o = 0;
    if (s->state == ST_CR) {
        out[o++] = '\n';
        s->state = ST_LINE_START;
        if (c == '\n')
            return o; /* CRLF complete */
    }
    if (c == '\r') {
        out[o++] = '\r';
        s->state = ST_CR;
        return o;
    }
    if (c == '\n') {
        out[o++] = '\r';
        out[o++] = '\n';
        s->state = ST_LINE_START;
        return o;
    }
    if (s->state == ST_LINE_START && c == '.')
        out[o++] = '.';
    out[o++] = c;
    s->state = ST_IN_LINE;
    return o;
}

/* Whole lines are copied with memcpy; only lines holding a bare CR, and a
 * CR at the end of a chunk, go byte by byte. */
size_t smtp_stuff(struct smtp_stuffer *s, const char *in, size_t len, char *out)
{
    const char *p = in, *end = in + len;
    size_t o = 0;
    if (p < end && s->state == ST_CR)
        o += stuff_byte(s, *p++, out + o);
    while (p < end) {
        if (s->state == ST_CR) {
            o += stuff_byte(s, *p++, out + o);
            continue;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        const char *cr = memchr(p, '\r', (size_t)(stop - p));
        if (cr && !(nl && cr == nl - 1)) {
            /* a bare CR (or a CR ending the chunk) in this line */
            const char *upto = nl ? nl + 1 : end;
            while (p < upto)
                o += stuff_byte(s, *p++, out + o);
            continue;
        }
        size_t n = (size_t)(stop - p);
        if (n > 0 && s->state == ST_LINE_START && *p == '.')
            out[o++] = '.';
        if (cr) { /* CRLF: copy through the CR, then LF */
            memcpy(out + o, p, n);
            o += n;
            out[o++] = '\n';
            s->state = ST_LINE_START;
            p = nl + 1;
        } else if (nl) { /* bare LF */
            memcpy(out + o, p, n);
            o += n;
            out[o++] = '\r';
            out[o++] = '\n';
            s->state = ST_LINE_START;
            p = nl + 1;
        } else { /* the chunk ends inside a line */
            memcpy(out + o, p, n);
            o += n;
            if (n > 0)
                s->state = ST_IN_LINE;
            p = end;
        }
    }
    return o;
}

size_t smtp_stuff_end(struct smtp_stuffer *s, char *out)
{
    size_t o = 0;
    if (s->state == ST_CR)
        out[o++] = '\n';
    else if (s->state == ST_IN_LINE) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    s->state = ST_LINE_START;
    return o + 3;
}
