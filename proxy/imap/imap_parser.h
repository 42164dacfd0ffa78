/* imap_parser: the one resumable IMAP tokenizer, for commands from clients
 * and responses from servers. No I/O and no copies: tokens point into the
 * caller's input.
 *
 * Pull model: imap_parser_next(p, in, len, &used, &tok, &err) returns
 *   IMAP_PARSE_TOKEN  one token in tok; the caller consumes `used` bytes
 *                     (spaces before the token and the token itself);
 *   IMAP_PARSE_MORE   the next token is not complete in `in`: nothing is
 *                     consumed (used == 0); call again with the same bytes
 *                     at the start of `in` plus more. Bytes already looked
 *                     at are not scanned again (linear for slow peers);
 *   IMAP_PARSE_ERROR  err is a static text (Dovecot's wording where it has
 *                     one); imap_parser_error_kind() tells what happened and
 *                     imap_parser_skip_line() discards the rest of the line.
 *
 * Grammar facts (RFC 3501/9051, RFC 7888, RFC 3516; as Dovecot's lib-imap
 * reads them): tokens are separated by any number of SP (also none between
 * lists: `(..)(..)`); atoms end at SP, CR, LF and, inside a list, ')'; `(`
 * `{` `"` and CTLs are not atom characters, 8-bit is refused in commands
 * and accepted in responses; `BODY[HEADER.FIELDS (A B)]` is the atom
 * `BODY[HEADER.FIELDS`, the list `(A B)` and the atom `]` (callers rebuild
 * it); quoted strings escape any character except CR/LF with '\' and hold
 * no NUL; literals are `{N}` (synchronizing), `{N+}` (non-synchronizing,
 * LITERAL+/LITERAL-) and `~{N}` / `~{N+}` (literal8), N one or more
 * digits, followed by CRLF or LF; the LITERAL token is returned only with
 * that line break, so its size is known and checked (overflow and
 * max_literal) before anything is answered; its bytes follow as
 * LITERAL_DATA chunks (streamed, never buffered here); CR must be followed
 * by LF. In text mode (imap_parser_text_next) the rest of the line is one
 * TEXT token (status response text, continuation text, SASL lines). */
#ifndef QUMAIL_IMAP_PARSER_H
#define QUMAIL_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct imap_parser imap_parser;

enum imap_parser_role {
    IMAP_PARSER_COMMANDS,  /* client input: strict atoms */
    IMAP_PARSER_RESPONSES, /* server input: 8-bit accepted in atoms */
};

struct imap_parser_limits {
    size_t max_token;      /* atom, quoted string or text; also bounds what
                              a caller must keep buffered (0: 65536) */
    size_t max_line;       /* bytes of a line outside literal data;
                              0: unlimited (responses: `* SEARCH` may be
                              megabytes of small atoms) */
    uint64_t max_literal;  /* largest literal accepted (0: UINT64_MAX) */
    unsigned max_depth;    /* list nesting (0: 100) */
};

enum imap_parse_result {
    IMAP_PARSE_TOKEN = 0,
    IMAP_PARSE_MORE = -2,
    IMAP_PARSE_ERROR = -1,
};

enum imap_token_type {
    IMAP_TOK_ATOM,         /* includes NIL, numbers, flags, `*`, `BODY[` */
    IMAP_TOK_QUOTED,       /* str/len: the content, escapes still in it */
    IMAP_TOK_LITERAL,      /* header `{N}` + line break; data follows */
    IMAP_TOK_LITERAL_DATA, /* str/len: a chunk of literal bytes */
    IMAP_TOK_LIST_BEGIN,
    IMAP_TOK_LIST_END,
    IMAP_TOK_TEXT,         /* text mode: rest of the line, without CRLF */
    IMAP_TOK_EOL,          /* line break ending the line (depth 0) */
};

struct imap_token {
    enum imap_token_type type;
    const char *str;        /* into the caller's input */
    size_t len;
    uint64_t literal_size;  /* LITERAL: N; LITERAL_DATA: bytes still to
                               come after this chunk */
    bool literal_nonsync;   /* LITERAL: `{N+}` */
    bool literal8;          /* LITERAL: `~{N}` */
    unsigned depth;         /* list depth after this token */
};

enum imap_parse_error {
    IMAP_PARSE_ERR_NONE = 0,
    IMAP_PARSE_ERR_SYNTAX,
    IMAP_PARSE_ERR_LINE_TOO_LONG,  /* token longer than max_token, or line */
    IMAP_PARSE_ERR_LITERAL_TOO_BIG,/* header complete: see error_literal */
    IMAP_PARSE_ERR_DEPTH,
};

imap_parser *imap_parser_new(enum imap_parser_role role,
                             const struct imap_parser_limits *limits);
void imap_parser_free(imap_parser **p);

/* Back to the start of a line, no list open (after an error the caller
 * recovered from, or a synchronizing literal that was refused: the client
 * sends no data then). */
void imap_parser_reset(imap_parser *p);
/* Limit for the next literal headers (e.g. larger for APPEND). */
void imap_parser_set_max_literal(imap_parser *p, uint64_t max_literal);

int imap_parser_next(imap_parser *p, const char *in, size_t len, size_t *used_r,
                     struct imap_token *tok, const char **error_r);
/* The rest of the line as one TEXT token (possibly empty; leading spaces
 * skipped), then EOL from imap_parser_next(). Same return values. */
int imap_parser_text_next(imap_parser *p, const char *in, size_t len,
                          size_t *used_r, struct imap_token *tok,
                          const char **error_r);

/* True at the start of a line (nothing of it parsed yet). */
bool imap_parser_at_line_start(const imap_parser *p);
/* True between a LITERAL token and the end of its data. */
bool imap_parser_in_literal(const imap_parser *p);
uint64_t imap_parser_literal_left(const imap_parser *p);
unsigned imap_parser_depth(const imap_parser *p);
/* Bytes of the current line outside literal data, consumed so far. */
size_t imap_parser_line_size(const imap_parser *p);

/* After IMAP_PARSE_ERROR. */
enum imap_parse_error imap_parser_error_kind(const imap_parser *p);
/* LITERAL_TOO_BIG: the refused literal (its header and line break were
 * consumed with the error). A non-synchronizing one is followed by its
 * data anyway; Dovecot answers BYE and disconnects. */
void imap_parser_error_literal(const imap_parser *p, uint64_t *size_r,
                               bool *nonsync_r);
/* Discards input up to and including the end of the line (nothing when
 * the error was at the line end itself). Returns true when the line end
 * was reached (parser reset), false when more input is needed (all of
 * `len` consumed). Literal headers are not honoured while skipping, as
 * Dovecot does. */
bool imap_parser_skip_line(imap_parser *p, const char *in, size_t len,
                           size_t *used_r);

/* ---- argument trees for complete lines held in memory -------------------- */

enum imap_arg_type {
    IMAP_ARG_ATOM,
    IMAP_ARG_STRING,   /* quoted (unescaped copy) */
    IMAP_ARG_LITERAL,  /* str points into the line buffer */
    IMAP_ARG_NIL,
    IMAP_ARG_LIST,
};

struct imap_arg {
    enum imap_arg_type type;
    const char *str;        /* NUL-terminated for ATOM/STRING/NIL; LITERAL:
                               len bytes in the caller's buffer */
    size_t len;
    bool literal8;
    const struct imap_arg *list; /* LIST: children */
    size_t count;                /* LIST: number of children */
    size_t raw_off, raw_len;     /* the argument's bytes in the buffer */
};

struct imap_args {
    const struct imap_arg *args; /* top-level arguments of the line */
    size_t count;
    size_t line_len;             /* bytes of the line incl. its line break */
    void *arena_;                /* private */
};

/* Parses one complete line (literals inline, as received) from buf. The
 * tree points into buf for atoms' positions and literal data, so buf must
 * outlive it. Returns 0, IMAP_PARSE_MORE when buf ends before the line,
 * or IMAP_PARSE_ERROR with *error_r. Free with imap_args_free. */
int imap_args_parse(enum imap_parser_role role, const struct imap_parser_limits *limits,
                    const char *buf, size_t len, struct imap_args *args_r,
                    const char **error_r);
void imap_args_free(struct imap_args *args);

/* Helpers over args. */
bool imap_arg_is_astring(const struct imap_arg *a);  /* atom, string, literal */
bool imap_arg_atom_eq(const struct imap_arg *a, const char *atom); /* case-insensitive */
/* Copies an astring or NIL value (NIL gives "") into buf; false when it
 * does not fit or holds a NUL. */
bool imap_arg_copy(const struct imap_arg *a, char *buf, size_t size);

/* Writes s as a quoted string ("..." with \ and " escaped, NUL-terminated)
 * into out. Returns the length, or 0 when s cannot be quoted (CR, LF or
 * NUL in it) or out is too small. */
size_t imap_quote(char *out, size_t size, const char *s, size_t len);

#endif
