/* Internals of the imap_render library. */
#ifndef QUMAIL_IMAP_RENDER_INTERNAL_H
#define QUMAIL_IMAP_RENDER_INTERNAL_H

#include "imap_render.h"

void rb_add(struct imap_render_buf *b, const void *p, size_t n);
void rb_str(struct imap_render_buf *b, const char *s);
void rb_c(struct imap_render_buf *b, char c);
void rb_u64(struct imap_render_buf *b, uint64_t v);

/* Dovecot's imap_append_nstring, _nolf and _string_for_humans. */
void q_nstring(struct imap_render_buf *b, const char *s);
void q_nstring_nolf(struct imap_render_buf *b, const char *s);
void q_for_humans(struct imap_render_buf *b, const char *s);

#endif
