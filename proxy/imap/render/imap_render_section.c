/* BODY[section]<partial> -> bytes, with Dovecot 2.3's part lookup
 * (imap-msgpart) and header filtering (istream-header-filter). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_render_internal.h"

/* Part by IMAP number path. [1] of a part that is not a multipart is the
 * part itself; inside a message/rfc822 part the numbers continue in the
 * message it holds. NULL when there is no such part. */
static const struct mime_part *find_part(const struct mime_part *part,
                                         const uint32_t *path, size_t n)
{
    for (size_t i = 0; i < n && part != NULL; i++) {
        uint32_t num = path[i];
        int more = i + 1 < n;

        if ((part->flags & MIME_PART_MULTIPART) != 0) {
            part = part->children;
            for (; num > 1 && part != NULL; num--)
                part = part->next;
        } else if (num != 1 ||
                   (more && (part->flags & MIME_PART_MESSAGE_RFC822) == 0)) {
            /* [1] only, and deeper only inside a message/rfc822 */
            part = NULL;
        }
        if (part != NULL && (part->flags & MIME_PART_MESSAGE_RFC822) != 0 && more)
            part = part->children;
    }
    return part;
}

static int field_listed(const uint8_t *name, size_t len,
                        const struct imap_section *sec)
{
    for (size_t i = 0; i < sec->n_fields; i++) {
        if (strlen(sec->fields[i]) == len &&
            strncasecmp((const char *)name, sec->fields[i], len) == 0)
            return 1;
    }
    return 0;
}

/* The header at [start, end of message): the listed fields (or all but
 * them), each as it stands, then the blank line if the header has one. */
/* Dovecot answers HEADER.FIELDS of the message itself from its header
 * cache, which ends with one CRLF more when the header has no blank line
 * (root_fields). Other filters (HEADER.FIELDS.NOT, and
 * HEADER.FIELDS of an attached message) pass the header through as it is. */
static int header_filter(const uint8_t *msg, uint64_t size, uint64_t start,
                         const struct imap_section *sec, int include,
                         int root_fields, struct imap_render_buf *out)
{
    uint64_t pos = start;
    int eoh = 0;

    while (pos < size) {
        uint64_t end = pos, name_len;
        const uint8_t *lf, *colon;
        size_t first;

        if (msg[pos] == '\n' || (msg[pos] == '\r' && pos + 1 < size &&
                                 msg[pos + 1] == '\n')) {
            rb_add(out, msg + pos, msg[pos] == '\n' ? 1 : 2);
            eoh = 1;
            break;
        }
        for (;;) {
            lf = memchr(msg + end, '\n', (size_t)(size - end));
            if (lf == NULL) {
                end = size;
                break;
            }
            end = (uint64_t)(lf - msg) + 1;
            if (end >= size || (msg[end] != ' ' && msg[end] != '\t'))
                break;
        }
        lf = memchr(msg + pos, '\n', (size_t)(end - pos));
        first = lf != NULL ? (size_t)(lf - (msg + pos)) : (size_t)(end - pos);
        if (lf != NULL && first > 0 && msg[pos + first - 1] == '\r')
            first--;
        colon = memchr(msg + pos, ':', first);
        if (colon != NULL) {
            name_len = (uint64_t)(colon - (msg + pos));
            while (name_len > 0 && (msg[pos + name_len - 1] == ' ' ||
                                    msg[pos + name_len - 1] == '\t'))
                name_len--;
        } else {
            name_len = first;
        }
        if (field_listed(msg + pos, (size_t)name_len, sec) == include)
            rb_add(out, msg + pos, (size_t)(end - pos));
        pos = end;
    }
    if (root_fields && !eoh)
        rb_add(out, "\r\n", 2);
    return out->failed ? IMAP_RENDER_ERR_NOMEM : IMAP_RENDER_OK;
}

void imap_section_data_free(struct imap_section_data *d)
{
    free(d->owned);
    memset(d, 0, sizeof(*d));
}

static void apply_partial(const struct imap_section *sec,
                          struct imap_section_data *out)
{
    if (!sec->has_partial)
        return;
    if (sec->partial_offset >= out->len) {
        out->ptr += out->len;
        out->offset += out->len;
        out->len = 0;
        return;
    }
    out->ptr += sec->partial_offset;
    out->offset += sec->partial_offset;
    out->len -= sec->partial_offset;
    if (sec->partial_size < out->len)
        out->len = sec->partial_size;
}

int imap_render_section(const struct mime_struct *ms,
                        const struct imap_section *sec,
                        struct imap_section_data *out)
{
    const uint8_t *msg = mime_struct_data(ms);
    uint64_t size = mime_struct_size(ms);
    const struct mime_part *root = mime_struct_root(ms), *part = root;
    uint64_t off = 0, len = 0;

    memset(out, 0, sizeof(*out));
    out->ptr = msg;
    if (sec->kind == IMAP_SECTION_MIME && sec->path_len == 0)
        return IMAP_RENDER_ERR_INVALID;
    for (size_t i = 0; i < sec->path_len; i++)
        if (sec->path[i] == 0)
            return IMAP_RENDER_ERR_INVALID;
    if (sec->path_len > 0) {
        part = find_part(root, sec->path, sec->path_len);
        if (part != NULL && sec->kind != IMAP_SECTION_BODY &&
            sec->kind != IMAP_SECTION_MIME) {
            /* HEADER, TEXT, HEADER.FIELDS of a part: only of a message */
            if ((part->flags & MIME_PART_MESSAGE_RFC822) == 0 ||
                part->children == NULL)
                part = NULL;
            else
                part = part->children;
        }
        if (part == NULL)
            return IMAP_RENDER_OK; /* empty, as Dovecot */
    }
    switch (sec->kind) {
    case IMAP_SECTION_BODY:
        if (sec->path_len == 0) {
            off = 0;
            len = size;
        } else {
            off = part->offset + part->header_size;
            len = part->body_size;
        }
        break;
    case IMAP_SECTION_MIME:
    case IMAP_SECTION_HEADER:
        off = part->offset;
        len = part->header_size;
        break;
    case IMAP_SECTION_TEXT:
        off = part->offset + part->header_size;
        len = part->body_size;
        break;
    case IMAP_SECTION_HEADER_FIELDS:
    case IMAP_SECTION_HEADER_FIELDS_NOT: {
        struct imap_render_buf b = {0};
        int include = sec->kind == IMAP_SECTION_HEADER_FIELDS;
        int ret = header_filter(msg, size, part->offset, sec, include,
                                include && sec->path_len == 0, &b);
        if (ret != IMAP_RENDER_OK) {
            imap_render_buf_free(&b);
            return ret;
        }
        out->owned = (uint8_t *)b.data;
        out->ptr = out->owned != NULL ? out->owned : msg;
        out->len = b.len;
        out->synthesized = 1;
        apply_partial(sec, out);
        return IMAP_RENDER_OK;
    }
    default:
        return IMAP_RENDER_ERR_INVALID;
    }
    out->ptr = msg + off;
    out->offset = off;
    out->len = len;
    apply_partial(sec, out);
    return IMAP_RENDER_OK;
}

/* ---- section spec text (tools and tests) ---------------------------------- */

int imap_render_section_parse(const char *spec, struct imap_section *sec,
                              uint32_t *path, size_t max_path,
                              const char **fields, size_t max_fields,
                              char *names)
{
    const char *p = spec;

    memset(sec, 0, sizeof(*sec));
    sec->path = path;
    sec->fields = fields;
    while (*p >= '0' && *p <= '9') {
        unsigned long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (unsigned long)(*p - '0');
            if (v > UINT32_MAX)
                return IMAP_RENDER_ERR_INVALID;
            p++;
        }
        if (v == 0 || sec->path_len >= max_path)
            return IMAP_RENDER_ERR_INVALID;
        path[sec->path_len++] = (uint32_t)v;
        if (*p == '.')
            p++;
        else if (*p != '\0')
            return IMAP_RENDER_ERR_INVALID;
    }
    if (*p == '\0') {
        if (p > spec && p[-1] == '.')
            return IMAP_RENDER_ERR_INVALID;
        sec->kind = IMAP_SECTION_BODY;
        return IMAP_RENDER_OK;
    }
    if (strcasecmp(p, "MIME") == 0) {
        sec->kind = IMAP_SECTION_MIME;
        return sec->path_len > 0 ? IMAP_RENDER_OK : IMAP_RENDER_ERR_INVALID;
    }
    if (strcasecmp(p, "TEXT") == 0) {
        sec->kind = IMAP_SECTION_TEXT;
        return IMAP_RENDER_OK;
    }
    if (strcasecmp(p, "HEADER") == 0) {
        sec->kind = IMAP_SECTION_HEADER;
        return IMAP_RENDER_OK;
    }
    if (strncasecmp(p, "HEADER.FIELDS.NOT (", 19) == 0) {
        sec->kind = IMAP_SECTION_HEADER_FIELDS_NOT;
        p += 19;
    } else if (strncasecmp(p, "HEADER.FIELDS (", 15) == 0) {
        sec->kind = IMAP_SECTION_HEADER_FIELDS;
        p += 15;
    } else {
        return IMAP_RENDER_ERR_INVALID;
    }
    memcpy(names, p, strlen(p) + 1); /* names holds strlen(spec) + 1 */
    for (char *n = names; *n != '\0';) {
        char *e;
        while (*n == ' ')
            n++;
        if (*n == ')') {
            if (n[1] != '\0')
                return IMAP_RENDER_ERR_INVALID;
            return sec->n_fields > 0 ? IMAP_RENDER_OK : IMAP_RENDER_ERR_INVALID;
        }
        e = n;
        while (*e != '\0' && *e != ' ' && *e != ')')
            e++;
        if (e == n || sec->n_fields >= max_fields)
            return IMAP_RENDER_ERR_INVALID;
        fields[sec->n_fields++] = n;
        if (*e == ')') {
            *e = '\0';
            return e[1] == '\0' && sec->n_fields > 0 ? IMAP_RENDER_OK
                                                     : IMAP_RENDER_ERR_INVALID;
        }
        if (*e == '\0')
            return IMAP_RENDER_ERR_INVALID;
        *e = '\0';
        n = e + 1;
    }
    return IMAP_RENDER_ERR_INVALID;
}
