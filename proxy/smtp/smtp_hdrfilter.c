/* Header field filter: buffers one header line at a time. */
#include "smtp_hdrfilter.h"

#include <string.h>
#include <strings.h>

void smtp_hdrfilter_init(struct smtp_hdrfilter *f, const char *const *drop,
                         smtp_hdrfilter_out out, void *out_arg)
{
    memset(f, 0, sizeof(*f));
    f->drop = drop;
    f->out = out;
    f->out_arg = out_arg;
}

void smtp_hdrfilter_capture(struct smtp_hdrfilter *f, char *buf, size_t cap)
{
    f->capture = buf;
    f->capture_cap = cap;
    f->capture_len = 0;
    f->capture_overflow = false;
}

static void capture(struct smtp_hdrfilter *f, const char *data, size_t len)
{
    if (!f->capture || f->capture_overflow)
        return;
    if (len > f->capture_cap - f->capture_len) {
        f->capture_overflow = true;
        return;
    }
    memcpy(f->capture + f->capture_len, data, len);
    f->capture_len += len;
}

static bool is_dropped(const struct smtp_hdrfilter *f, const char *line,
                       size_t len)
{
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return false;
    size_t n = (size_t)(colon - line);
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    for (size_t i = 0; f->drop && f->drop[i]; i++)
        if (strlen(f->drop[i]) == n && strncasecmp(line, f->drop[i], n) == 0)
            return true;
    return false;
}

/* A complete header line (with its line end) or an overlong piece. */
static int header_line(struct smtp_hdrfilter *f, const char *line, size_t len,
                       bool complete)
{
    bool blank = complete && (len == 1 || (len == 2 && line[0] == '\r'));
    if (blank) {
        f->in_body = true;
        f->dropping = false;
        capture(f, line, len);
        return f->out(f->out_arg, line, len);
    }
    bool fold = line[0] == ' ' || line[0] == '\t';
    if (!fold)
        f->dropping = is_dropped(f, line, len);
    if (f->dropping)
        return 0;
    capture(f, line, len);
    return f->out(f->out_arg, line, len);
}

int smtp_hdrfilter_feed(struct smtp_hdrfilter *f, const char *data, size_t len)
{
    while (len > 0) {
        if (f->in_body)
            return f->out(f->out_arg, data, len);
        if (f->mid_line) {
            f->capture_overflow = true;
            const char *end = memchr(data, '\n', len);
            size_t n = end ? (size_t)(end - data) + 1 : len;
            int r = f->dropping ? 0 : f->out(f->out_arg, data, n);
            if (r < 0)
                return r;
            if (end)
                f->mid_line = false;
            data += n;
            len -= n;
            continue;
        }
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) + 1 : len;
        if (f->line_len + take > sizeof(f->line)) {
            /* Overlong header line: decide on what we have, stream on. */
            size_t room = sizeof(f->line) - f->line_len;
            memcpy(f->line + f->line_len, data, room);
            f->line_len += room;
            data += room;
            len -= room;
            int r;
            if (f->line_len > 0 && f->line[0] != ' ' && f->line[0] != '\t')
                f->dropping = is_dropped(f, f->line, f->line_len);
            r = f->dropping ? 0 : f->out(f->out_arg, f->line, f->line_len);
            f->capture_overflow = true;
            f->line_len = 0;
            f->mid_line = true; /* the rest of the line follows the decision */
            if (r < 0)
                return r;
            continue;
        }
        memcpy(f->line + f->line_len, data, take);
        f->line_len += take;
        data += take;
        len -= take;
        if (nl) {
            int r = header_line(f, f->line, f->line_len, true);
            f->line_len = 0;
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int smtp_hdrfilter_finish(struct smtp_hdrfilter *f)
{
    if (f->in_body || f->line_len == 0)
        return 0;
    int r = header_line(f, f->line, f->line_len, false);
    f->line_len = 0;
    return r;
}
