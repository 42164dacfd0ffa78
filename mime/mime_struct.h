/* mime_struct: a plaintext message -> its MIME part tree, with the byte
 * offsets, sizes, line counts and Content-* data an IMAP server answers
 * FETCH from (protocol-agnostic; the IMAP syntax is rendered elsewhere).
 *
 * The reference is Dovecot 2.3's message parser, because the IMAP proxy
 * must answer for a decrypted message exactly what Dovecot answers for the
 * same plaintext stored directly (rules and evidence: mime/STRUCT.md):
 *
 *  - The message is first normalised the way Dovecot stores and serves it:
 *    every LF not preceded by CR becomes CRLF, every NUL becomes 0x80; bare
 *    CRs, a missing final line end and 8-bit bytes stay. All offsets refer
 *    to these normalised bytes (mime_struct_data()), so RFC822.SIZE is
 *    mime_struct_size() and every section is a byte range of them.
 *  - A part's header runs from its first byte through the blank line; a
 *    part's body from there to the CRLF before the next boundary line (the
 *    CRLF belongs to the boundary). Boundary lines match by prefix, the
 *    longest boundary of any open multipart wins, and a boundary of an outer
 *    multipart closes the inner parts. A header without a blank line ends at
 *    the end of the message (empty body) or at a boundary line.
 *  - A line without a colon inside a header is a header field, not the
 *    start of the body. Content-* fields count only in MIME parts (a
 *    Mime-Version or Content-Type field, or any part inside a multipart).
 *  - Nesting is limited like Dovecot's (100 levels, 10000 parts): a
 *    multipart or message/rfc822 below the limit becomes a leaf.
 *  - Parameters are split as Dovecot does, RFC 2231 continuations merged
 *    but not decoded (key "name*", value "charset'lang'%XX.."), encoded
 *    words left as they are.
 *
 * GMime: the byte-level structure and the Content-* values above follow
 * Dovecot, not GMime (GMime ends a header at a line without a colon,
 * decodes RFC 2047/2231 values and frames boundaries differently, so its
 * offsets and values would not be Dovecot's). GMime does what it does well
 * here: decoding a part's content transfer encoding (mime_struct_decode(),
 * for IMAP BINARY), with its base64 and quoted-printable filters.
 *
 * Threading: no global mutable state; a tree may be built on any thread
 * (e.g. a uv_queue_work worker) and read concurrently once built.
 *
 * Errors: 0 or a negative enum mime_error code (mime.h); error_r as there.
 */
#ifndef QUMAIL_MIME_STRUCT_H
#define QUMAIL_MIME_STRUCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Dovecot's defaults (message-parser.h). */
#define MIME_STRUCT_MAX_NESTING 100
#define MIME_STRUCT_MAX_PARTS 10000

enum mime_part_flag {
    MIME_PART_MULTIPART = 1 << 0,      /* has children separated by a boundary */
    MIME_PART_MESSAGE_RFC822 = 1 << 1, /* has exactly one child: the message */
    MIME_PART_TEXT = 1 << 2,           /* text/..., or the default type */
    MIME_PART_IS_MIME = 1 << 3,        /* Content-* fields apply */
    MIME_PART_DIGEST = 1 << 4,         /* multipart/digest: children default
                                          to message/rfc822 */
    MIME_PART_OVERFLOW = 1 << 5,       /* a multipart or message/rfc822 below
                                          the nesting limit, kept as a leaf
                                          (IMAP shows application/octet-stream) */
};

struct mime_param {
    const char *name;
    const char *value;
};

/* One header field as it stands in the message: from the first byte of its
 * name through the line end of its last (folded) line, or through the end
 * of the message when the header ends without a line end. */
struct mime_field {
    uint64_t offset;   /* of the first byte of the name, in the message */
    uint64_t size;     /* whole field, folded lines and final CRLF included */
    uint32_t name_len; /* name without the spaces before ':'; a line without
                          ':' is all name */
};

/* One element of an address list, as Dovecot's address parser gives it:
 * a mailbox (name, route, mailbox, domain; name and route may be NULL;
 * broken syntax leaves "" or the parts that could be read), a group start
 * (only mailbox set: the group's display name) or a group end (all NULL).
 * Encoded words are left as they are; quoted strings are unquoted. */
struct mime_address {
    const struct mime_address *next;
    const char *name, *route, *mailbox, *domain;
};

/* The fields ENVELOPE is made of, as Dovecot reads them. Date, Subject,
 * In-Reply-To, Message-ID: the value after the colon with leading spaces
 * and tabs skipped, folded lines joined with "\n" (the CRs dropped, each
 * continuation line's leading white space kept). Address fields: the
 * parsed list (NULL when the field is absent or holds no address). The
 * last occurrence of a field counts. */
struct mime_envelope {
    const char *date, *subject, *in_reply_to, *message_id;
    const struct mime_address *from, *sender, *reply_to, *to, *cc, *bcc;
};

/* One part. Everything is owned by the struct mime_struct it came from and
 * lives until mime_struct_free(). */
struct mime_part {
    const struct mime_part *parent;
    const struct mime_part *next;     /* next sibling */
    const struct mime_part *children; /* first child */
    unsigned int n_children;
    unsigned int flags; /* enum mime_part_flag */

    uint64_t offset;      /* first byte of the header */
    uint64_t header_size; /* header incl. the blank line (if any) */
    uint64_t body_size;   /* body: offset + header_size .. + body_size */
    uint32_t header_lines;
    uint32_t body_lines;

    /* Header fields of this part's header, in order. */
    const struct mime_field *fields;
    size_t n_fields;

    /* Content-* data, NULL/0 when absent (or when not a MIME part). A
     * broken Content-Type keeps what could be read: type without subtype
     * is possible. Values of ID, Description, MD5 and Location are raw
     * (folded lines joined with "\n"). */
    const char *content_type, *content_subtype;
    const struct mime_param *content_type_params;
    size_t n_content_type_params;
    const char *content_id;
    const char *content_description;
    const char *content_transfer_encoding;
    const char *content_md5;
    const char *content_disposition;
    const struct mime_param *content_disposition_params;
    size_t n_content_disposition_params;
    const char *const *content_language; /* NULL-terminated, or NULL */
    const char *content_location;

    /* For the root and for the child of a message/rfc822 part: the fields
     * of its header ENVELOPE uses; NULL for other parts. */
    const struct mime_envelope *envelope;
};

struct mime_struct;

enum mime_struct_flags {
    /* When the input needs no normalisation (CRLF only, no NUL), refer to
     * the caller's bytes instead of copying them: the caller keeps them
     * unchanged and alive until mime_struct_free(). */
    MIME_STRUCT_BORROW = 1 << 0,
};

/* Normalised size of a message (what RFC822.SIZE says) without building a
 * tree. */
uint64_t mime_struct_normalized_size(const void *msg, size_t len);

/* Normalise msg into out (which must hold mime_struct_normalized_size()
 * bytes); returns the bytes written. out must not overlap msg. */
size_t mime_struct_normalize(const void *msg, size_t len, void *out);

/* Build the tree of msg (len bytes, any content: malformed MIME is parsed
 * the way Dovecot does, never refused). flags: enum mime_struct_flags.
 * Fails only for MIME_ERR_NOMEM, MIME_ERR_INVALID_ARG (NULL out) or
 * MIME_ERR_TOO_LARGE (a message over 2^40 bytes). */
int mime_struct_parse(const void *msg, size_t len, unsigned int flags,
                      struct mime_struct **ms_r, char **error_r);

void mime_struct_free(struct mime_struct **ms);

/* The normalised message the offsets refer to, and its size. */
const uint8_t *mime_struct_data(const struct mime_struct *ms);
uint64_t mime_struct_size(const struct mime_struct *ms);

/* The root part (the message itself). */
const struct mime_part *mime_struct_root(const struct mime_struct *ms);

/* Total number of parts in the tree (root included). */
unsigned int mime_struct_part_count(const struct mime_struct *ms);

/* Decode part's body from its Content-Transfer-Encoding (base64,
 * quoted-printable; 7bit/8bit/binary/unknown: as is) into a malloc'd
 * buffer (GMime filters). *out_r gets the bytes, *len_r their number. */
int mime_struct_decode(const struct mime_struct *ms,
                       const struct mime_part *part, uint8_t **out_r,
                       size_t *len_r, char **error_r);

#endif
