/* One HTTP/1.1 response, parsed with llhttp. The llhttp callbacks only fill
 * the struct; the caller feeds bytes and gets "done / need more / error".
 * The body may carry key material (base64): every buffer that held it is
 * wiped before it is released. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

static struct kme_http_resp *resp_of(llhttp_t *p)
{
    return p->data;
}

static int on_message_begin(llhttp_t *p)
{
    resp_of(p)->status = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct kme_http_resp *r = resp_of(p);
    r->status = (int)p->status_code;
    if (p->content_length != UINT64_MAX && (p->flags & F_CONTENT_LENGTH) &&
        p->content_length > r->max_body) {
        r->error = "response body exceeds the limit";
        return -1;
    }
    return 0;
}

static int body_reserve(struct kme_http_resp *r, size_t add)
{
    if (add > r->max_body || r->body_len > r->max_body - add)
        return -1;
    size_t need = r->body_len + add;
    if (need <= r->body_cap)
        return 0;
    size_t cap = r->body_cap ? r->body_cap : 1024;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > r->max_body)
        cap = r->max_body;
    char *nb = malloc(cap + 1);
    if (nb == NULL)
        return -1;
    if (r->body_len > 0)
        memcpy(nb, r->body, r->body_len);
    if (r->body != NULL) {
        OPENSSL_cleanse(r->body, r->body_cap + 1);
        free(r->body);
    }
    r->body = nb;
    r->body_cap = cap;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct kme_http_resp *r = resp_of(p);
    if (body_reserve(r, len) < 0) {
        r->error = "response body exceeds the limit";
        return -1;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct kme_http_resp *r = resp_of(p);
    if (r->status >= 100 && r->status < 200) {
        /* interim response (100 Continue...): the real one follows */
        if (r->body != NULL)
            OPENSSL_cleanse(r->body, r->body_cap + 1);
        r->body_len = 0;
        r->status = 0;
        return 0;
    }
    r->complete = true;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

void kme_http_resp_init(struct kme_http_resp *r, size_t max_body)
{
    *r = (struct kme_http_resp){0};
    llhttp_settings_init(&r->settings);
    r->settings.on_message_begin = on_message_begin;
    r->settings.on_headers_complete = on_headers_complete;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;
    r->max_body = max_body;
}

int kme_http_resp_feed(struct kme_http_resp *r, const char *data, size_t len,
                       size_t *consumed_r)
{
    *consumed_r = 0;
    if (r->complete)
        return 1;
    if (r->error != NULL)
        return KME_EBADRESPONSE;
    if (len == 0)
        return 0;
    r->started = true;
    llhttp_errno_t err = llhttp_execute(&r->parser, data, len);
    if (err == HPE_OK) {
        *consumed_r = len;
        return 0;
    }
    if (err == HPE_PAUSED && r->complete) {
        *consumed_r = (size_t)(llhttp_get_error_pos(&r->parser) - data);
        return 1;
    }
    if (r->error == NULL)
        r->error = llhttp_errno_name(err);
    return KME_EBADRESPONSE;
}

int kme_http_resp_eof(struct kme_http_resp *r)
{
    if (r->complete)
        return 1;
    if (r->error != NULL)
        return KME_EBADRESPONSE;
    if (!r->started) {
        r->error = "connection closed before any response";
        return KME_EIO;
    }
    llhttp_errno_t err = llhttp_finish(&r->parser);
    if ((err == HPE_OK || err == HPE_PAUSED) && r->complete) {
        r->keep_alive = false;
        return 1;
    }
    r->error = "connection closed in the middle of a response";
    return KME_EIO;
}

void kme_http_resp_clear(struct kme_http_resp *r)
{
    if (r->body != NULL) {
        OPENSSL_cleanse(r->body, r->body_cap + 1);
        free(r->body);
    }
    r->body = NULL;
    r->body_len = 0;
    r->body_cap = 0;
}
