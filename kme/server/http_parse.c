/* HTTP/1.1 request parsing for the KME's 014 listener: llhttp into one
 * bounded request (target, method, body), no I/O (http.c does that). The
 * limits answer with their status: 414 target, 431 header fields, 413
 * body (refused at the headers when Content-Length says so), 503 out of
 * memory, 400 anything malformed. Fuzzed by tests/fuzz/kme-server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_internal.h"

static llhttp_settings_t settings;
static bool settings_ready;

static struct kme_http_parser *of(llhttp_t *p) { return p->data; }

static int on_message_begin(llhttp_t *p)
{
    struct kme_http_parser *hp = of(p);
    hp->target_len = 0;
    hp->target[0] = '\0';
    hp->body_len = 0;
    if (hp->body != NULL)
        hp->body[0] = '\0'; /* a request without a body after one with */
    hp->header_count = 0;
    hp->header_bytes = 0;
    hp->method[0] = '\0';
    hp->limit_status = 0;
    hp->expect_continue = false;
    hp->continue_due = false;
    hp->hname_len = hp->hvalue_len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct kme_http_parser *hp = of(p);
    if (len > KME_HTTP_MAX_TARGET - hp->target_len) {
        hp->limit_status = 414;
        return -1;
    }
    memcpy(hp->target + hp->target_len, at, len);
    hp->target_len += len;
    hp->target[hp->target_len] = '\0';
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct kme_http_parser *hp = of(p);
    if (++hp->header_count > KME_HTTP_MAX_HEADERS) {
        hp->limit_status = 431;
        return -1;
    }
    return 0;
}

static void add_short(char *buf, size_t cap, size_t *len, const char *at, size_t n)
{
    /* Keeps at most cap-1 bytes; longer values cannot match anyway (the
     * length is still counted so that they do not). */
    for (size_t i = 0; i < n; i++, (*len)++) {
        if (*len < cap - 1)
            buf[*len] = at[i];
    }
}

static int count_header_bytes(struct kme_http_parser *hp, size_t len)
{
    if (len > KME_HTTP_MAX_HEADER_BYTES - hp->header_bytes) {
        hp->limit_status = 431;
        return -1;
    }
    hp->header_bytes += len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct kme_http_parser *hp = of(p);
    if (count_header_bytes(hp, len) < 0)
        return -1;
    add_short(hp->hname, sizeof(hp->hname), &hp->hname_len, at, len);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct kme_http_parser *hp = of(p);
    if (count_header_bytes(hp, len) < 0)
        return -1;
    add_short(hp->hvalue, sizeof(hp->hvalue), &hp->hvalue_len, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct kme_http_parser *hp = of(p);
    if (hp->hname_len == 6 && strncasecmp(hp->hname, "expect", 6) == 0 &&
        hp->hvalue_len == 12 && strncasecmp(hp->hvalue, "100-continue", 12) == 0)
        hp->expect_continue = true;
    hp->hname_len = hp->hvalue_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct kme_http_parser *hp = of(p);
    snprintf(hp->method, sizeof(hp->method), "%s",
             llhttp_method_name((llhttp_method_t)p->method));
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > hp->max_body) {
        hp->limit_status = 413; /* refused before the body is sent */
        return -1;
    }
    hp->continue_due = hp->expect_continue;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct kme_http_parser *hp = of(p);
    if (len > hp->max_body - hp->body_len) {
        hp->limit_status = 413;
        return -1;
    }
    if (hp->body_len + len + 1 > hp->body_cap) {
        size_t cap = (hp->body_len + len + 1) * 2;
        if (cap > hp->max_body + 1)
            cap = hp->max_body + 1;
        char *n = realloc(hp->body, cap);
        if (n == NULL) {
            hp->limit_status = 503;
            return -1;
        }
        hp->body = n;
        hp->body_cap = cap;
    }
    memcpy(hp->body + hp->body_len, at, len);
    hp->body_len += len;
    hp->body[hp->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct kme_http_parser *hp = of(p);
    snprintf(hp->method, sizeof(hp->method), "%s",
             llhttp_method_name((llhttp_method_t)p->method));
    hp->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    if (settings_ready)
        return;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    settings_ready = true;
}

void kme_http_parser_init(struct kme_http_parser *hp, uint64_t max_body)
{
    settings_init();
    memset(hp, 0, sizeof(*hp));
    hp->max_body = max_body;
    llhttp_init(&hp->parser, HTTP_REQUEST, &settings);
    hp->parser.data = hp;
}

void kme_http_parser_clear(struct kme_http_parser *hp)
{
    free(hp->body);
    hp->body = NULL;
    hp->body_len = hp->body_cap = 0;
}

enum kme_http_parse kme_http_parser_feed(struct kme_http_parser *hp, const char *data,
                                         size_t len, size_t *used_r)
{
    llhttp_errno_t err = llhttp_execute(&hp->parser, data, len);
    if (err == HPE_OK) {
        *used_r = len;
        return KME_HTTP_MORE;
    }
    if (err == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&hp->parser);
        *used_r = pos != NULL && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        return KME_HTTP_REQUEST;
    }
    *used_r = len;
    if (hp->method[0] == '\0')
        snprintf(hp->method, sizeof(hp->method), "-");
    hp->keep_alive = false;
    if (hp->limit_status == 0)
        hp->limit_status = 400;
    return KME_HTTP_BAD;
}

void kme_http_parser_next(struct kme_http_parser *hp)
{
    llhttp_resume(&hp->parser);
}
