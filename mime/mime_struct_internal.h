/* Internals shared by the mime_struct_*.c files (not part of the API). */
#ifndef QUMAIL_MIME_STRUCT_INTERNAL_H
#define QUMAIL_MIME_STRUCT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mime_struct.h"

/* ---- arena: every string and node of one tree, freed at once ----------- */

struct ms_arena_chunk;
struct ms_arena {
    struct ms_arena_chunk *head;
    int failed; /* an allocation failed: the whole parse fails */
};

void *ms_alloc(struct ms_arena *a, size_t size); /* zeroed; NULL on OOM */
char *ms_strndup(struct ms_arena *a, const void *s, size_t len);
void ms_arena_free(struct ms_arena *a);

/* ---- growable byte string (scratch, malloc'd) --------------------------- */

struct ms_str {
    char *data;
    size_t len, cap;
    int failed;
};

void ms_str_add(struct ms_str *s, const void *p, size_t n);
void ms_str_addc(struct ms_str *s, char c);
const char *ms_str_c(struct ms_str *s); /* NUL-terminated view */
void ms_str_free(struct ms_str *s);

/* ---- RFC 822 tokenizer with Dovecot's rules (mime_struct_rfc822.c) ------ */

struct ms_tok {
    const unsigned char *data, *end;
    struct ms_str *last_comment; /* NULL: comments are not kept */
};

int ms_tok_skip_lwsp(struct ms_tok *t);
int ms_tok_atom(struct ms_tok *t, struct ms_str *out);
int ms_tok_dot_atom(struct ms_tok *t, struct ms_str *out);
int ms_tok_mime_token(struct ms_tok *t, struct ms_str *out);
int ms_tok_quoted(struct ms_tok *t, struct ms_str *out);
int ms_tok_phrase(struct ms_tok *t, struct ms_str *out);
int ms_tok_domain(struct ms_tok *t, struct ms_str *out);
int ms_tok_content_type(struct ms_tok *t, struct ms_str *out);

/* Parameters after a Content-Type or Content-Disposition value, RFC 2231
 * continuations merged (not decoded). Returns the count (pairs) stored in
 * a new arena array through params_r (NULL when 0); -1 on OOM. */
long ms_parse_params(struct ms_tok *t, struct ms_arena *a,
                     const struct mime_param **params_r);

/* Address list (Dovecot message_address_parse with fill_missing off). */
const struct mime_address *ms_parse_addresses(struct ms_arena *a,
                                              const char *value, size_t len);

#endif
