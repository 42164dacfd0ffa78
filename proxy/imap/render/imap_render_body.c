/* BODYSTRUCTURE, BODY and ENVELOPE from the part tree, in the order and
 * with the defaults of Dovecot 2.3 (imap-bodystructure, imap-envelope). */
#include <string.h>
#include <strings.h>

#include "imap_render_internal.h"

#define DEFAULT_CHARSET "\"charset\" \"us-ascii\""
#define EMPTY_BODY "(\"text\" \"plain\" (" DEFAULT_CHARSET ") NIL NIL \"7bit\" 0 0)"
#define EMPTY_BODYSTRUCTURE \
    "(\"text\" \"plain\" (" DEFAULT_CHARSET ") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"

static void part_write(struct imap_render_buf *b, const struct mime_part *p,
                       int ext);

static void params_write(struct imap_render_buf *b, const struct mime_param *pa,
                         size_t n, int default_charset)
{
    int seen_charset = 0;

    if (!default_charset && n == 0) {
        rb_str(b, "NIL");
        return;
    }
    rb_c(b, '(');
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            rb_c(b, ' ');
        if (default_charset && strcasecmp(pa[i].name, "charset") == 0)
            seen_charset = 1;
        q_nstring(b, pa[i].name);
        rb_c(b, ' ');
        q_nstring(b, pa[i].value);
    }
    if (default_charset && !seen_charset) {
        if (n > 0)
            rb_c(b, ' ');
        rb_str(b, DEFAULT_CHARSET);
    }
    rb_c(b, ')');
}

static void addresses_write(struct imap_render_buf *b,
                            const struct mime_address *a)
{
    if (a == NULL) {
        rb_str(b, "NIL");
        return;
    }
    rb_c(b, '(');
    for (; a != NULL; a = a->next) {
        rb_c(b, '(');
        if (a->name == NULL)
            rb_str(b, "NIL");
        else
            q_for_humans(b, a->name);
        rb_c(b, ' ');
        q_nstring(b, a->route);
        rb_c(b, ' ');
        q_nstring(b, a->mailbox);
        rb_c(b, ' ');
        q_nstring(b, a->domain);
        rb_c(b, ')');
    }
    rb_c(b, ')');
}

static void envelope_write(struct imap_render_buf *b,
                           const struct mime_envelope *e)
{
    if (e == NULL) {
        rb_str(b, "NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL");
        return;
    }
    q_nstring_nolf(b, e->date);
    rb_c(b, ' ');
    if (e->subject == NULL)
        rb_str(b, "NIL");
    else
        q_for_humans(b, e->subject);
    rb_c(b, ' ');
    addresses_write(b, e->from);
    rb_c(b, ' ');
    addresses_write(b, e->sender != NULL ? e->sender : e->from);
    rb_c(b, ' ');
    addresses_write(b, e->reply_to != NULL ? e->reply_to : e->from);
    rb_c(b, ' ');
    addresses_write(b, e->to);
    rb_c(b, ' ');
    addresses_write(b, e->cc);
    rb_c(b, ' ');
    addresses_write(b, e->bcc);
    rb_c(b, ' ');
    q_nstring_nolf(b, e->in_reply_to);
    rb_c(b, ' ');
    q_nstring_nolf(b, e->message_id);
}

static void common_write(struct imap_render_buf *b, const struct mime_part *p)
{
    rb_c(b, ' ');
    if (p->content_disposition == NULL) {
        rb_str(b, "NIL");
    } else {
        rb_c(b, '(');
        q_nstring(b, p->content_disposition);
        rb_c(b, ' ');
        params_write(b, p->content_disposition_params,
                     p->n_content_disposition_params, 0);
        rb_c(b, ')');
    }
    rb_c(b, ' ');
    if (p->content_language == NULL) {
        rb_str(b, "NIL");
    } else {
        rb_c(b, '(');
        for (const char *const *l = p->content_language; *l != NULL; l++) {
            if (l != p->content_language)
                rb_c(b, ' ');
            q_nstring(b, *l);
        }
        rb_c(b, ')');
    }
    rb_c(b, ' ');
    q_nstring_nolf(b, p->content_location);
}

static void siblings_write(struct imap_render_buf *b, const struct mime_part *p,
                           int ext)
{
    for (; p != NULL; p = p->next) {
        rb_c(b, '(');
        part_write(b, p, ext);
        rb_c(b, ')');
    }
}

static void multipart_write(struct imap_render_buf *b, const struct mime_part *p,
                            int ext)
{
    if (p->children != NULL)
        siblings_write(b, p->children, ext);
    else
        rb_str(b, ext ? EMPTY_BODYSTRUCTURE : EMPTY_BODY);
    rb_c(b, ' ');
    q_nstring(b, p->content_subtype != NULL ? p->content_subtype : "");
    if (!ext)
        return;
    rb_c(b, ' ');
    params_write(b, p->content_type_params, p->n_content_type_params, 0);
    common_write(b, p);
}

static void leaf_write(struct imap_render_buf *b, const struct mime_part *p,
                       int ext)
{
    int text;

    if ((p->flags & MIME_PART_MESSAGE_RFC822) != 0) {
        rb_str(b, "\"message\" \"rfc822\"");
        text = 0;
    } else if ((p->flags & MIME_PART_OVERFLOW) != 0) {
        /* nested too deep: Dovecot hides the multipart/message type */
        rb_str(b, "\"application\" \"octet-stream\"");
        text = 0;
    } else if (p->content_type == NULL) {
        text = 1;
        rb_str(b, "\"text\" \"plain\"");
    } else {
        text = strcasecmp(p->content_type, "text") == 0;
        q_nstring(b, p->content_type);
        rb_c(b, ' ');
        q_nstring(b, p->content_subtype != NULL ? p->content_subtype : "");
    }
    rb_c(b, ' ');
    params_write(b, p->content_type_params, p->n_content_type_params, text);
    rb_c(b, ' ');
    q_nstring_nolf(b, p->content_id);
    rb_c(b, ' ');
    q_nstring_nolf(b, p->content_description);
    rb_c(b, ' ');
    if (p->content_transfer_encoding != NULL)
        q_nstring(b, p->content_transfer_encoding);
    else
        rb_str(b, "\"7bit\"");
    rb_c(b, ' ');
    rb_u64(b, p->body_size);
    if (text) {
        rb_c(b, ' ');
        rb_u64(b, p->body_lines);
    } else if ((p->flags & MIME_PART_MESSAGE_RFC822) != 0 && p->children != NULL) {
        rb_str(b, " (");
        envelope_write(b, p->children->envelope);
        rb_str(b, ") ");
        siblings_write(b, p->children, ext);
        rb_c(b, ' ');
        rb_u64(b, p->body_lines);
    }
    if (!ext)
        return;
    rb_c(b, ' ');
    q_nstring_nolf(b, p->content_md5);
    common_write(b, p);
}

static void part_write(struct imap_render_buf *b, const struct mime_part *p,
                       int ext)
{
    if ((p->flags & MIME_PART_MULTIPART) != 0)
        multipart_write(b, p, ext);
    else
        leaf_write(b, p, ext);
}

int imap_render_bodystructure(const struct mime_struct *ms, int extended,
                              struct imap_render_buf *out)
{
    rb_c(out, '(');
    part_write(out, mime_struct_root(ms), extended);
    rb_c(out, ')');
    return out->failed ? IMAP_RENDER_ERR_NOMEM : IMAP_RENDER_OK;
}

int imap_render_envelope(const struct mime_struct *ms,
                         struct imap_render_buf *out)
{
    rb_c(out, '(');
    envelope_write(out, mime_struct_root(ms)->envelope);
    rb_c(out, ')');
    return out->failed ? IMAP_RENDER_ERR_NOMEM : IMAP_RENDER_OK;
}
