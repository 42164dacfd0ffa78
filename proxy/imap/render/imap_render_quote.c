/* Dovecot 2.3's string output rules (imap-quote): quoted or literal,
 * NIL, the "no LF" variant and the "for humans" variant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_render_internal.h"

/* Dovecot switches to a literal after this many '"' or '\\'. */
#define QUOTED_MAX_ESCAPE_CHARS 4

void imap_render_buf_free(struct imap_render_buf *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof(*buf));
}

void rb_add(struct imap_render_buf *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void rb_str(struct imap_render_buf *b, const char *s)
{
    rb_add(b, s, strlen(s));
}

void rb_c(struct imap_render_buf *b, char c)
{
    rb_add(b, &c, 1);
}

void rb_u64(struct imap_render_buf *b, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    rb_add(b, num, (size_t)n);
}

static void literal(struct imap_render_buf *b, const char *s, size_t n)
{
    rb_c(b, '{');
    rb_u64(b, n);
    rb_str(b, "}\r\n");
    rb_add(b, s, n);
}

static void quoted(struct imap_render_buf *b, const char *s)
{
    rb_c(b, '"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\r' || c == '\n' || c >= 0x80)
            continue;
        if (c == '"' || c == '\\')
            rb_c(b, '\\');
        rb_c(b, (char)c);
    }
    rb_c(b, '"');
}

void q_nstring(struct imap_render_buf *b, const char *s)
{
    unsigned int escapes = 0;

    if (s == NULL) {
        rb_str(b, "NIL");
        return;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            if (escapes++ < QUOTED_MAX_ESCAPE_CHARS)
                continue;
            literal(b, s, strlen(s));
            return;
        }
        if (c == '\r' || c == '\n' || c >= 0x80) {
            literal(b, s, strlen(s));
            return;
        }
    }
    quoted(b, s);
}

void q_nstring_nolf(struct imap_render_buf *b, const char *s)
{
    struct imap_render_buf t = {0};

    if (s == NULL || strpbrk(s, "\r\n") == NULL) {
        q_nstring(b, s);
        return;
    }
    /* drop CR/LF; a space where the next line does not start with one */
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i], n = s[i + 1];
        if (c != '\r' && c != '\n')
            rb_c(&t, c);
        else if (n != ' ' && n != '\t' && n != '\r' && n != '\n' && n != '\0')
            rb_c(&t, ' ');
    }
    if (t.failed)
        b->failed = 1;
    q_nstring(b, t.data != NULL ? t.data : "");
    imap_render_buf_free(&t);
}

void q_for_humans(struct imap_render_buf *b, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t size = strlen(src), i, remove = 0, pos;
    int ws_prefix = 1, last_lwsp = 1, modify = 0;

    for (i = 0; i < size; i++) {
        switch (s[i]) {
        case 0:
            last_lwsp = 0;
            modify = 1;
            break;
        case '\t':
        case '\r': /* a bare CR reads as white space, like a tab */
            modify = 1;
            /* fall through */
        case ' ':
            if (last_lwsp) {
                modify = 1;
                remove++;
            }
            last_lwsp = 1;
            break;
        case '\n':
            remove++;
            modify = 1;
            break;
        case '"':
        case '\\':
            modify = 1;
            last_lwsp = 0;
            break;
        default:
            if (s[i] & 0x80)
                modify = 1;
            last_lwsp = 0;
            break;
        }
        if (!last_lwsp)
            ws_prefix = 0;
    }
    if (last_lwsp && i > 0 && !ws_prefix) {
        modify = 1;
        remove++;
    }
    if (!modify) {
        rb_c(b, '"');
        rb_add(b, s, size);
        rb_c(b, '"');
        return;
    }
    if (size == remove) {
        rb_str(b, "\"\"");
        return;
    }
    rb_c(b, '{');
    rb_u64(b, size - remove);
    rb_str(b, "}\r\n");
    pos = b->len;
    last_lwsp = 1;
    ws_prefix = 1;
    for (i = 0; i < size; i++) {
        switch (s[i]) {
        case 0:
            rb_c(b, (char)0x80);
            last_lwsp = 0;
            break;
        case '\t':
        case '\r':
        case ' ':
            if (!last_lwsp)
                rb_c(b, ' ');
            last_lwsp = 1;
            break;
        case '\n':
            break;
        default:
            last_lwsp = 0;
            rb_c(b, (char)s[i]);
            break;
        }
        if (!last_lwsp)
            ws_prefix = 0;
    }
    if (last_lwsp && i > 0 && !ws_prefix && !b->failed && b->len > pos)
    {
        b->len--; /* the trailing space */
        b->data[b->len] = '\0';
    }
}
