/* Views: a decrypted (or notice) message, normalised as Dovecot serves it,
 * with its part tree and the rendered BODYSTRUCTURE / BODY / ENVELOPE.
 * Built on any thread, then used on the loop only. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_render.h"
#include "incoming_internal.h"

/* ---- bindings --------------------------------------------------------------- */

void pi_binding_clear(struct pi_binding *b)
{
    for (size_t i = 0; i < b->count; i++)
        free(b->addrs[i]);
    free(b->addrs);
    b->addrs = NULL;
    b->count = 0;
}

int pi_binding_copy(struct pi_binding *dst, const struct pi_binding *src)
{
    dst->addrs = NULL;
    dst->count = 0;
    if (src == NULL || src->count == 0)
        return 0;
    dst->addrs = calloc(src->count, sizeof(char *));
    if (dst->addrs == NULL)
        return PROTECT_IN_ENOMEM;
    for (size_t i = 0; i < src->count; i++) {
        dst->addrs[i] = strdup(src->addrs[i]);
        if (dst->addrs[i] == NULL) {
            dst->count = i;
            pi_binding_clear(dst);
            return PROTECT_IN_ENOMEM;
        }
    }
    dst->count = src->count;
    return 0;
}

int pi_binding_from_info(struct pi_binding *dst, const struct mime_info *info)
{
    size_t n = mime_info_recipient_count(info);
    struct pi_binding tmp = {0};
    if (n == 0) {
        *dst = tmp;
        return 0;
    }
    tmp.addrs = calloc(n, sizeof(char *));
    if (tmp.addrs == NULL)
        return PROTECT_IN_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *a = mime_info_recipient(info, i);
        tmp.addrs[i] = strdup(a != NULL ? a : "");
        tmp.count = i + 1;
        if (tmp.addrs[i] == NULL) {
            pi_binding_clear(&tmp);
            return PROTECT_IN_ENOMEM;
        }
    }
    *dst = tmp;
    return 0;
}

/* ---- building ---------------------------------------------------------------- */

static void wipe_str(char **s, size_t len)
{
    if (*s != NULL) {
        OPENSSL_cleanse(*s, len);
        free(*s);
        *s = NULL;
    }
}

/* The rendered buffer's bytes become a plain NUL-terminated string. */
static int take_render(struct imap_render_buf *buf, char **out_r, size_t *len_r)
{
    if (buf->failed || buf->data == NULL) {
        if (buf->data != NULL)
            OPENSSL_cleanse(buf->data, buf->len);
        imap_render_buf_free(buf);
        return PROTECT_IN_ENOMEM;
    }
    *out_r = buf->data;
    *len_r = buf->len;
    buf->data = NULL;
    buf->len = buf->cap = 0;
    return 0;
}

void pi_view_destroy(protect_in_view *v)
{
    mime_struct_free(&v->ms);
    if (v->data != NULL) {
        OPENSSL_cleanse(v->data, v->data_len);
        if (v->hooks.wiped != NULL)
            v->hooks.wiped(v->hooks.arg, v->data, v->data_len);
        free(v->data);
    }
    wipe_str(&v->bodystructure, v->bodystructure_len);
    wipe_str(&v->body, v->body_len);
    wipe_str(&v->envelope, v->envelope_len);
    pi_binding_clear(&v->binding);
    free(v->id);
    free(v);
}

uint64_t pi_view_footprint(const protect_in_view *v)
{
    /* The plaintext, the rendered strings, and an estimate for the tree
     * (a few hundred bytes per part). */
    uint64_t n = sizeof(*v) + v->data_len + v->bodystructure_len +
                 v->body_len + v->envelope_len;
    if (v->ms != NULL)
        n += (uint64_t)mime_struct_part_count(v->ms) * 512;
    return n;
}

int pi_view_build(uint8_t *plain, size_t len, enum protect_in_reason reason,
                  const char *id, const struct pi_binding *binding,
                  const struct pi_view_hooks *hooks, protect_in_view **v_r)
{
    *v_r = NULL;
    protect_in_view *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        if (plain != NULL)
            OPENSSL_cleanse(plain, len);
        free(plain);
        return PROTECT_IN_ENOMEM;
    }
    v->refs = 1;
    v->complete = true;
    v->reason = reason;
    if (hooks != NULL)
        v->hooks = *hooks;
    v->data = plain;
    v->data_len = len;

    /* Normalise into a buffer we own (so that it is wiped), unless the
     * message is already in Dovecot's form: then the tree borrows it. */
    uint64_t nsize = mime_struct_normalized_size(plain, len);
    if (nsize != len || (len > 0 && memchr(plain, 0, len) != NULL)) {
        uint8_t *norm = malloc(nsize > 0 ? (size_t)nsize : 1);
        if (norm == NULL) {
            pi_view_destroy(v);
            return PROTECT_IN_ENOMEM;
        }
        mime_struct_normalize(plain, len, norm);
        OPENSSL_cleanse(plain, len);
        free(plain);
        v->data = norm;
        v->data_len = (size_t)nsize;
    }
    int ret = mime_struct_parse(v->data, v->data_len, MIME_STRUCT_BORROW, &v->ms,
                                NULL);
    if (ret < 0) {
        pi_view_destroy(v);
        return ret;
    }
    v->size = mime_struct_size(v->ms);

    struct imap_render_buf bs = {0}, body = {0}, env = {0};
    imap_render_bodystructure(v->ms, 1, &bs);
    imap_render_bodystructure(v->ms, 0, &body);
    imap_render_envelope(v->ms, &env);
    int r1 = take_render(&bs, &v->bodystructure, &v->bodystructure_len);
    int r2 = take_render(&body, &v->body, &v->body_len);
    int r3 = take_render(&env, &v->envelope, &v->envelope_len);
    if (r1 < 0 || r2 < 0 || r3 < 0 ||
        (id != NULL && (v->id = strdup(id)) == NULL) ||
        pi_binding_copy(&v->binding, binding) < 0) {
        pi_view_destroy(v);
        return PROTECT_IN_ENOMEM;
    }
    v->footprint = pi_view_footprint(v);
    *v_r = v;
    return 0;
}

char *pi_struct_from_address(const struct mime_struct *ms)
{
    const struct mime_part *root = ms != NULL ? mime_struct_root(ms) : NULL;
    if (root == NULL || root->envelope == NULL)
        return NULL;
    for (const struct mime_address *a = root->envelope->from; a != NULL;
         a = a->next) {
        if (a->mailbox == NULL || a->domain == NULL || a->mailbox[0] == '\0' ||
            a->domain[0] == '\0')
            continue; /* group markers, broken entries */
        size_t n = strlen(a->mailbox) + 1 + strlen(a->domain) + 1;
        char *s = malloc(n);
        if (s != NULL)
            snprintf(s, n, "%s@%s", a->mailbox, a->domain);
        return s;
    }
    return NULL;
}

/* ---- public accessors ------------------------------------------------------------ */

protect_in_view *protect_in_view_ref(protect_in_view *v)
{
    v->refs++;
    return v;
}

void protect_in_view_unref(protect_in_view **vp)
{
    protect_in_view *v = *vp;
    if (v == NULL)
        return;
    *vp = NULL;
    if (--v->refs == 0)
        pi_view_destroy(v);
}

bool protect_in_view_complete(const protect_in_view *v) { return v->complete; }
enum protect_in_reason protect_in_view_reason(const protect_in_view *v)
{
    return v->reason;
}
const char *protect_in_view_id(const protect_in_view *v) { return v->id; }
uint64_t protect_in_view_size(const protect_in_view *v) { return v->size; }

const char *protect_in_view_bodystructure(const protect_in_view *v, size_t *len_r)
{
    if (len_r != NULL)
        *len_r = v->bodystructure_len;
    return v->bodystructure;
}

const char *protect_in_view_body(const protect_in_view *v, size_t *len_r)
{
    if (len_r != NULL)
        *len_r = v->body_len;
    return v->body;
}

const char *protect_in_view_envelope(const protect_in_view *v, size_t *len_r)
{
    if (len_r != NULL)
        *len_r = v->envelope_len;
    return v->envelope;
}

const struct mime_struct *protect_in_view_struct(const protect_in_view *v)
{
    return v->ms;
}
