/* SMTP reply parser: multi-line replies with enhanced status codes. */
#include "smtp_proto.h"

#include <stdlib.h>
#include <string.h>

struct smtp_reply_parser {
    struct smtp_reply reply;
    bool in_reply; /* a continuation line was seen */
    char buf[SMTP_REPLY_MAX + 1];
};

smtp_reply_parser *smtp_reply_parser_new(void)
{
    smtp_reply_parser *p = calloc(1, sizeof(*p));
    if (p)
        p->reply.text = p->buf;
    return p;
}

void smtp_reply_parser_free(smtp_reply_parser **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}

/* "d.ddd.ddd" with class 2, 4 or 5 (RFC 3463). Returns its length or 0. */
static size_t enh_len(const char *s, size_t len, int code)
{
    if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
        s[0] != (char)('0' + code / 100) || s[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3)
            i++;
        if (i == start)
            return 0;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < len && s[i] != ' ')
        return 0;
    return i;
}

enum smtp_parse_result smtp_reply_feed(smtp_reply_parser *p, const char *line,
                                       size_t len,
                                       const struct smtp_reply **reply_r,
                                       const char **error_r)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
        line[1] > '9' || line[2] < '0' || line[2] > '9' ||
        (len > 3 && line[3] != ' ' && line[3] != '-')) {
        p->in_reply = false;
        *error_r = "malformed reply line";
        return SMTP_ERR;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    bool more = len > 3 && line[3] == '-';
    if (!p->in_reply) {
        p->reply.code = code;
        p->reply.enh[0] = '\0';
        p->reply.text_len = 0;
        p->reply.lines = 0;
        p->buf[0] = '\0';
    } else if (code != p->reply.code) {
        p->in_reply = false;
        *error_r = "reply code changed within a multi-line reply";
        return SMTP_ERR;
    }
    const char *text = len > 4 ? line + 4 : "";
    size_t tlen = len > 4 ? len - 4 : 0;
    size_t e = enh_len(text, tlen, code);
    if (e > 0) {
        if (p->reply.lines == 0 && e < sizeof(p->reply.enh)) {
            memcpy(p->reply.enh, text, e);
            p->reply.enh[e] = '\0';
        }
        text += e;
        tlen -= e;
        if (tlen > 0 && *text == ' ') {
            text++;
            tlen--;
        }
    }
    size_t sep = p->reply.lines > 0 ? 1 : 0;
    if (tlen + sep > SMTP_REPLY_MAX - p->reply.text_len) {
        p->in_reply = false;
        *error_r = "reply too long";
        return SMTP_ERR;
    }
    if (sep)
        p->buf[p->reply.text_len++] = '\n';
    memcpy(p->buf + p->reply.text_len, text, tlen);
    p->reply.text_len += tlen;
    p->buf[p->reply.text_len] = '\0';
    p->reply.lines++;
    if (more) {
        p->in_reply = true;
        return SMTP_MORE;
    }
    p->in_reply = false;
    *reply_r = &p->reply;
    return SMTP_DONE;
}

const char *smtp_reply_line(const struct smtp_reply *r, size_t *pos,
                            size_t *len_r)
{
    /* Lines are separated (not terminated) by '\n': text_len + 1 marks the
     * end, so an empty last line ("250-x" "250") is still visited. */
    if (*pos > r->text_len)
        return NULL;
    const char *start = r->text + *pos;
    const char *nl = memchr(start, '\n', r->text_len - *pos);
    size_t len = nl ? (size_t)(nl - start) : r->text_len - *pos;
    *len_r = len;
    *pos += len + 1;
    return start;
}
