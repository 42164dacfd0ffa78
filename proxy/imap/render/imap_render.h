/* imap_render: pure functions from a mime_struct part tree to IMAP FETCH
 * data, byte for byte what Dovecot 2.3 answers for the same message:
 * BODYSTRUCTURE (with extension data), BODY (without), ENVELOPE, and the
 * bytes of every BODY[section]<partial>.
 *
 * No I/O, no global state, no allocation except into the caller's buffer
 * or result; thread-safe. The wire syntax follows Dovecot's quoting:
 * strings are quoted unless they hold CR, LF, 8-bit bytes or more than four
 * '"'/'\\' (then a {N} literal, N counted exactly); NIL for absent values;
 * list elements of BODYSTRUCTURE parts and address lists are joined without
 * a space: "(...)(...)"; Subject and display names are cleaned for humans
 * (tabs and runs of spaces to one space, CR/LF dropped) as Dovecot does;
 * encoded words are left as they are.
 *
 * Errors: 0 or a negative IMAP_RENDER_ERR_* code.
 */
#ifndef QUMAIL_IMAP_RENDER_H
#define QUMAIL_IMAP_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include "mime_struct.h"

enum imap_render_error {
    IMAP_RENDER_OK = 0,
    IMAP_RENDER_ERR_NOMEM = -1,
    IMAP_RENDER_ERR_INVALID = -2, /* a section spec IMAP does not allow */
};

/* Output buffer: data is malloc'd, grows as needed, holds len bytes plus a
 * NUL after them (not counted). Start with {0}; free with
 * imap_render_buf_free(). Rendering appends. */
struct imap_render_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: the content is incomplete */
};

void imap_render_buf_free(struct imap_render_buf *buf);

/* "(...)" as after "BODYSTRUCTURE " (extended != 0) or "BODY " (0). */
int imap_render_bodystructure(const struct mime_struct *ms, int extended,
                              struct imap_render_buf *out);

/* "(...)" as after "ENVELOPE ". */
int imap_render_envelope(const struct mime_struct *ms,
                         struct imap_render_buf *out);

/* ---- sections ------------------------------------------------------------ */

enum imap_section_kind {
    IMAP_SECTION_BODY,              /* [] (whole message) or [n]: the body */
    IMAP_SECTION_HEADER,            /* [HEADER] or [n.HEADER] */
    IMAP_SECTION_HEADER_FIELDS,     /* [HEADER.FIELDS (...)] */
    IMAP_SECTION_HEADER_FIELDS_NOT, /* [HEADER.FIELDS.NOT (...)] */
    IMAP_SECTION_TEXT,              /* [TEXT] or [n.TEXT] */
    IMAP_SECTION_MIME,              /* [n.MIME] (a path is required) */
};

/* What FETCH BODY[...]<...> asks for. path: the part numbers ("1.2" ->
 * {1, 2}, each >= 1), path_len 0 for the message itself. fields: header
 * field names for HEADER.FIELDS[.NOT], compared case-insensitively.
 * partial: <partial_offset.partial_size> when has_partial. */
struct imap_section {
    const uint32_t *path;
    size_t path_len;
    enum imap_section_kind kind;
    const char *const *fields;
    size_t n_fields;
    int has_partial;
    uint64_t partial_offset, partial_size;
};

/* The answer: len bytes at ptr. Either a range of the normalised message
 * (synthesized == 0: ptr = mime_struct_data(ms) + offset, valid as long as
 * ms) or bytes built for HEADER.FIELDS[.NOT] (synthesized != 0: owned by
 * this result, release with imap_section_data_free()). A part that does
 * not exist, or HEADER/TEXT of a part that is not message/rfc822, is empty
 * (len 0), as Dovecot answers; a partial at or past the end is empty. The
 * IMAP answer is a literal of exactly these bytes ({len}\r\n...). */
struct imap_section_data {
    const uint8_t *ptr;
    uint64_t len;
    uint64_t offset;
    int synthesized;
    uint8_t *owned;
};

int imap_render_section(const struct mime_struct *ms,
                        const struct imap_section *sec,
                        struct imap_section_data *out);
void imap_section_data_free(struct imap_section_data *d);

/* Convenience for tools and tests: parse the text between [ and ] of a
 * section spec ("", "1.2.MIME", "HEADER.FIELDS (From To)") into sec, with
 * storage in path (max_path numbers) and fields (max_fields pointers into
 * names, a copy of spec's field list with NULs written in). names must
 * hold strlen(spec) + 1 bytes. Returns 0 or IMAP_RENDER_ERR_INVALID. */
int imap_render_section_parse(const char *spec, struct imap_section *sec,
                              uint32_t *path, size_t max_path,
                              const char **fields, size_t max_fields,
                              char *names);

#endif
