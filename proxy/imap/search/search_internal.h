/* Internals shared by the imap_search files (not part of the API). */
#ifndef QUMAIL_IMAP_SEARCH_INTERNAL_H
#define QUMAIL_IMAP_SEARCH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_search.h"

/* Growable byte string; `failed` sticks after an allocation failure. */
struct sbuf {
    char *d;
    size_t len, cap;
    bool failed;
};
void sbuf_add(struct sbuf *b, const void *p, size_t n);
void sbuf_addc(struct sbuf *b, char c);
bool sbuf_reserve(struct sbuf *b, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
const char *sbuf_c(struct sbuf *b); /* NUL-terminated view ("" on failure) */
void sbuf_free(struct sbuf *b);
/* Valid UTF-8 of in appended as is, invalid bytes as U+FFFD (one per run). */
void search_utf8_valid(struct sbuf *b, const void *in, size_t len);
/* Casemapped append (imap_search_casemap into b). */
void sbuf_casemap(struct sbuf *b, const void *p, size_t n);

/* Decoded, casemapped text of a header value as Dovecot's message decoder
 * gives it: RFC 2047 words decoded (white space between two words
 * dropped), charsets converted to UTF-8, everything casemapped. */
void search_header_decode(struct sbuf *out, const char *value, size_t len);
/* Bytes in charset -> UTF-8, casemapped, into out (invalid input: U+FFFD;
 * unknown charset: treated as UTF-8). */
void search_charset_to_casemap(struct sbuf *out, const char *charset, const void *in,
                               size_t len);
/* Plain bytes in charset -> UTF-8 (not casemapped); false: unknown charset. */
bool search_charset_to_utf8(struct sbuf *out, const char *charset, const void *in, size_t len);
bool search_charset_is_utf8(const char *charset);

/* A header field of a part: name, and its value unfolded like Dovecot's
 * header parser with CLEAN_ONELINE (each line break of a folded value
 * removed and the continuation's first white-space character kept as a
 * space); middle is ":" plus the white space Dovecot puts in it. */
struct search_field {
    const char *name;
    size_t name_len;
    const char *middle;
    size_t middle_len;
    char *value;     /* malloc'd, NUL-terminated */
    size_t value_len;
    bool no_newline; /* the field ends the message without a line end */
};
/* Field i of part (i < part->n_fields). Returns false on ENOMEM. */
bool search_field_get(const struct mime_struct *ms, const struct mime_part *part, size_t i,
                      struct search_field *f);
void search_field_free(struct search_field *f);

/* Dovecot's message_address_write() of a parsed list. */
void search_address_write(struct sbuf *out, const struct mime_address *a);
/* Field i of part parsed as an address list (Dovecot's parser, with its
 * fill-ins, as mime_struct's envelope has it) and written back with
 * search_address_write into out. False on ENOMEM. */
bool search_field_addresses(const struct mime_struct *ms, const struct mime_part *part,
                            size_t i, struct sbuf *out);
/* The first address of field i of part (parsed as above) as a small tree
 * the caller frees with mime_struct_free; *addr_r is NULL when the field
 * holds none. */
bool search_field_first_address(const struct mime_struct *ms, const struct mime_part *part,
                                size_t i, struct mime_struct **tmp_r,
                                const struct mime_address **addr_r);

/* Body text of a leaf part as message-search reads it (NULL: the part's
 * body is not searched: not text/ or message/, or an unknown transfer
 * encoding), decoded and casemapped. */
bool search_part_body_text(const struct mime_struct *ms, const struct mime_part *part,
                           struct sbuf *out);

/* Parses an IMAP date "1-Feb-1994" -> 00:00 UTC of that day. */
bool search_imap_date(const char *s, size_t len, int64_t *t_r);
int64_t search_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
