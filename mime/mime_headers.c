/* Header blocks: finding the end, splitting into raw fields (folding kept,
 * so the outer copy is the original bytes), which fields stay outside, and
 * the To/Cc/Bcc recipient list (parsed by GMime). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <unistd.h>

#include <gmime/gmime.h>

#include "mime_internal.h"

size_t mime_header_block_len(const char *text, size_t len, int *complete_r)
{
    /* The block ends at the first empty line; a message that starts with
     * an empty line has an empty header block. */
    *complete_r = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t line_len = (nl ? (size_t)(nl - (text + pos)) : len - pos);
        size_t content = line_len;
        if (content > 0 && text[pos + content - 1] == '\r')
            content--;
        if (content == 0 && nl != NULL) {
            *complete_r = 1;
            return pos;
        }
        if (nl == NULL)
            return len;
        pos += line_len + 1;
    }
    return len;
}

static int is_ftext(unsigned char ch)
{
    return ch >= 33 && ch <= 126 && ch != ':';
}

int mime_fields_split(const char *block, size_t len,
                      struct mime_field **fields_r, size_t *n_r)
{
    size_t cap = 16, n = 0;
    struct mime_field *f = malloc(cap * sizeof(*f));
    if (f == NULL)
        return MIME_ERR_NOMEM;
    size_t pos = 0;
    while (pos < len) {
        /* One field: this line plus continuation lines (leading SP/HT). */
        size_t start = pos, end = pos;
        for (;;) {
            const char *nl = memchr(block + end, '\n', len - end);
            size_t next = nl ? (size_t)(nl - block) + 1 : len;
            size_t line_end = nl ? (size_t)(nl - block) : len;
            if (line_end > end && block[line_end - 1] == '\r')
                line_end--;
            end = line_end;
            pos = next;
            if (pos >= len || (block[pos] != ' ' && block[pos] != '\t'))
                break;
            end = pos;
        }
        size_t name_len = 0;
        while (start + name_len < end &&
               is_ftext((unsigned char)block[start + name_len]))
            name_len++;
        /* RFC 5322 field name, then optional WSP (obsolete syntax), ':' */
        size_t colon = start + name_len;
        while (colon < end && (block[colon] == ' ' || block[colon] == '\t'))
            colon++;
        if (name_len == 0 || colon >= end || block[colon] != ':')
            continue; /* not a field (mbox From_ line, garbage): skipped */
        if (n == cap) {
            struct mime_field *nf = realloc(f, 2 * cap * sizeof(*f));
            if (nf == NULL) {
                free(f);
                return MIME_ERR_NOMEM;
            }
            f = nf;
            cap *= 2;
        }
        f[n].name = block + start;
        f[n].name_len = name_len;
        f[n].raw = block + start;
        f[n].raw_len = end - start;
        f[n].value = block + colon + 1;
        f[n].value_len = end - colon - 1;
        n++;
    }
    *fields_r = f;
    *n_r = n;
    return MIME_OK;
}

int mime_field_is(const struct mime_field *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

/* Fields the outer message keeps: what delivery, threading, list handling
 * and trace need. Everything else (Content-*, MIME-Version, X-*, User-Agent,
 * DKIM-Signature, Bcc, ...) is visible only after decryption. */
static const char *const kept_fields[] = {
    "From", "Sender", "Reply-To", "To", "Cc", "Date", "Message-ID",
    "In-Reply-To", "References", "Subject", "Return-Path", "Received",
    "Delivered-To", "Precedence", "Auto-Submitted",
};

int mime_field_kept_outside(const struct mime_field *f)
{
    for (size_t i = 0; i < sizeof(kept_fields) / sizeof(kept_fields[0]); i++)
        if (mime_field_is(f, kept_fields[i]))
            return 1;
    if (f->name_len > 5 && (strncasecmp(f->name, "List-", 5) == 0 ||
                            (f->name_len > 7 &&
                             strncasecmp(f->name, "Resent-", 7) == 0)))
        return !(f->name_len == 10 &&
                 strncasecmp(f->name, "Resent-Bcc", 10) == 0);
    return 0;
}

char *mime_field_unfold(const struct mime_field *f)
{
    char *s = malloc(f->value_len + 1);
    if (s == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < f->value_len; i++)
        if (f->value[i] != '\r' && f->value[i] != '\n')
            s[n++] = f->value[i];
    s[n] = '\0';
    return s;
}

/* ---- recipients ------------------------------------------------------------- */

struct rcpt {
    char *addr;
    enum mime_rcpt_kind kind;
};

struct mime_rcpt_list {
    struct rcpt *v;
    size_t n, cap;
};

static int rcpt_add(struct mime_rcpt_list *l, const char *addr,
                    enum mime_rcpt_kind kind)
{
    if (addr == NULL || addr[0] == '\0')
        return MIME_OK;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? 2 * l->cap : 8;
        struct rcpt *nv = realloc(l->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return MIME_ERR_NOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    char *low = g_utf8_validate(addr, -1, NULL) ? g_utf8_strdown(addr, -1)
                                                : g_ascii_strdown(addr, -1);
    if (low == NULL)
        return MIME_ERR_NOMEM;
    l->v[l->n].addr = strdup(low);
    g_free(low);
    if (l->v[l->n].addr == NULL)
        return MIME_ERR_NOMEM;
    l->v[l->n].kind = kind;
    l->n++;
    return MIME_OK;
}

static int rcpt_add_list(struct mime_rcpt_list *l, InternetAddressList *al,
                         enum mime_rcpt_kind kind)
{
    int count = internet_address_list_length(al);
    for (int i = 0; i < count; i++) {
        InternetAddress *ia = internet_address_list_get_address(al, i);
        int rc = MIME_OK;
        if (INTERNET_ADDRESS_IS_GROUP(ia))
            rc = rcpt_add_list(
                l, internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)),
                kind);
        else if (INTERNET_ADDRESS_IS_MAILBOX(ia))
            rc = rcpt_add(
                l, internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)),
                kind);
        if (rc != MIME_OK)
            return rc;
    }
    return MIME_OK;
}

static int recipients_from_block(const char *block, size_t len,
                                 struct mime_rcpt_list **list_r,
                                 char **error_r)
{
    struct mime_field *fields = NULL;
    size_t n = 0;
    int rc = mime_fields_split(block, len, &fields, &n);
    if (rc != MIME_OK)
        return rc;
    struct mime_rcpt_list *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        free(fields);
        return MIME_ERR_NOMEM;
    }
    for (size_t i = 0; i < n && rc == MIME_OK; i++) {
        enum mime_rcpt_kind kind;
        if (mime_field_is(&fields[i], "To"))
            kind = MIME_RCPT_TO;
        else if (mime_field_is(&fields[i], "Cc"))
            kind = MIME_RCPT_CC;
        else if (mime_field_is(&fields[i], "Bcc"))
            kind = MIME_RCPT_BCC;
        else
            continue;
        char *value = mime_field_unfold(&fields[i]);
        if (value == NULL) {
            rc = MIME_ERR_NOMEM;
            break;
        }
        InternetAddressList *al = internet_address_list_parse(NULL, value);
        free(value);
        if (al != NULL) {
            rc = rcpt_add_list(l, al, kind);
            g_object_unref(al);
        }
    }
    free(fields);
    if (rc != MIME_OK) {
        mime_rcpt_list_free(&l);
        return mime_fail(error_r, rc, "recipient list");
    }
    *list_r = l;
    return MIME_OK;
}

int mime_recipients_mem(const void *in, size_t in_len,
                        struct mime_rcpt_list **list_r, char **error_r)
{
    int rc = mime_init();
    if (rc != MIME_OK)
        return rc;
    size_t scan = in_len < MIME_HEADER_LIMIT ? in_len : MIME_HEADER_LIMIT;
    int complete;
    size_t hl = mime_header_block_len(in, scan, &complete);
    return recipients_from_block(in, hl, list_r, error_r);
}

int mime_recipients_fd(int in_fd, struct mime_rcpt_list **list_r,
                       char **error_r)
{
    /* Reads up to MIME_HEADER_LIMIT octets (the header block and perhaps
     * some body, which is ignored). */
    char *buf = malloc(MIME_HEADER_LIMIT);
    if (buf == NULL)
        return MIME_ERR_NOMEM;
    size_t len = 0;
    while (len < MIME_HEADER_LIMIT) {
        ssize_t n = read(in_fd, buf + len, MIME_HEADER_LIMIT - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return mime_fail(error_r, MIME_ERR_IO, "reading headers");
        }
        if (n == 0)
            break;
        len += (size_t)n;
        int complete;
        mime_header_block_len(buf, len, &complete);
        if (complete)
            break;
    }
    int rc = mime_recipients_mem(buf, len, list_r, error_r);
    free(buf);
    return rc;
}

size_t mime_rcpt_count(const struct mime_rcpt_list *l)
{
    return l->n;
}

const char *mime_rcpt_address(const struct mime_rcpt_list *l, size_t i)
{
    return i < l->n ? l->v[i].addr : NULL;
}

enum mime_rcpt_kind mime_rcpt_kind_at(const struct mime_rcpt_list *l, size_t i)
{
    return i < l->n ? l->v[i].kind : 0;
}

int mime_rcpt_has(const struct mime_rcpt_list *l, const char *addr,
                  unsigned kind_mask)
{
    if (addr == NULL)
        return 0;
    char *low = g_utf8_validate(addr, -1, NULL) ? g_utf8_strdown(addr, -1)
                                                : g_ascii_strdown(addr, -1);
    int found = 0;
    for (size_t i = 0; low != NULL && i < l->n && !found; i++)
        found = (l->v[i].kind & kind_mask) && strcmp(l->v[i].addr, low) == 0;
    g_free(low);
    return found;
}

void mime_rcpt_list_free(struct mime_rcpt_list **p)
{
    if (p == NULL || *p == NULL)
        return;
    for (size_t i = 0; i < (*p)->n; i++)
        free((*p)->v[i].addr);
    free((*p)->v);
    free(*p);
    *p = NULL;
}
