/* smtp_proto: the SMTP wire grammar without I/O.
 *
 * Three push parsers used by both sides of the proxy:
 *  - smtp_cmd_parse(): one client command line -> verb, argument, and for
 *    MAIL/RCPT the path and the ESMTP parameters (RFC 5321 4.1.2, RFC 1870,
 *    6152, 3461, 6531, 3030).
 *  - smtp_reply_parser: reply lines from a server -> one (possibly
 *    multi-line) reply with code, enhanced status code (RFC 3463) and text.
 *  - smtp_data_reader: the DATA byte stream -> dot-unstuffed message bytes
 *    handed to a sink, end detected on CRLF.CRLF; resumable at any byte.
 *
 * Parsers return SMTP_DONE / SMTP_MORE / SMTP_ERR; detail of an error
 * through error_r (static text, not freed). Nothing here allocates except
 * the reply parser's text buffer, bounded by SMTP_REPLY_MAX. */
#ifndef QUMAIL_SMTP_PROTO_H
#define QUMAIL_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_parse_result { SMTP_ERR = -1, SMTP_MORE = 0, SMTP_DONE = 1 };

/* ---- commands ----------------------------------------------------------- */

enum smtp_verb {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO, SMTP_CMD_EHLO, SMTP_CMD_STARTTLS, SMTP_CMD_AUTH,
    SMTP_CMD_MAIL, SMTP_CMD_RCPT, SMTP_CMD_DATA, SMTP_CMD_BDAT,
    SMTP_CMD_RSET, SMTP_CMD_NOOP, SMTP_CMD_QUIT, SMTP_CMD_VRFY,
    SMTP_CMD_EXPN, SMTP_CMD_HELP,
};
const char *smtp_verb_name(enum smtp_verb verb);

/* MAIL parameters the proxy understands; anything else is refused with
 * 555 5.5.4 by the session. */
enum smtp_body_type { SMTP_BODY_UNSPEC = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

#define SMTP_PATH_MAX 512  /* RFC 5321 4.5.3.1.3: 256, with room for UTF-8 */
#define SMTP_PARAM_MAX 1024 /* passed-through DSN parameters, raw */

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;   /* points into the caller's line (after the verb) */
    size_t arg_len;
    /* MAIL / RCPT */
    char path[SMTP_PATH_MAX + 1];   /* without < >; "" for the null path */
    bool path_utf8;                 /* non-ASCII in the path */
    uint64_t size;                  /* MAIL SIZE=, 0 when absent */
    bool has_size;
    enum smtp_body_type body;
    bool smtputf8;
    /* DSN parameters (RET= ENVID= on MAIL, NOTIFY= ORCPT= on RCPT), kept
     * raw, space separated, for the upstream command. */
    char dsn[SMTP_PARAM_MAX + 1];
    /* BDAT */
    uint64_t chunk_size;
    bool last;
};

/* Parses one command line (CRLF or LF already stripped or not: trailing
 * CR/LF is ignored). Returns 0, or a negative value with *error_r set to
 * "code enh text" (e.g. "501 5.5.4 Syntax: MAIL FROM:<address>"), ready to
 * be sent as the reply. A line with an unknown verb parses with
 * SMTP_CMD_UNKNOWN and returns 0. */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd,
                   const char **error_r);

/* ---- replies ------------------------------------------------------------ */

#define SMTP_REPLY_MAX 8192 /* total text of one multi-line reply */

struct smtp_reply {
    int code;            /* 200..599 */
    char enh[16];        /* "2.1.0" or "" when the server sent none */
    char *text;          /* every line's text after code[-/ ][enh ],
                            joined with '\n'; owned by the parser */
    size_t text_len;
    unsigned lines;
};

typedef struct smtp_reply_parser smtp_reply_parser;

smtp_reply_parser *smtp_reply_parser_new(void);
void smtp_reply_parser_free(smtp_reply_parser **p);
/* Feeds one line (with or without CRLF). SMTP_MORE after a continuation
 * line ("250-"), SMTP_DONE after the last one, when *reply_r is valid until
 * the next feed; SMTP_ERR on a malformed line or an oversized reply. */
enum smtp_parse_result smtp_reply_feed(smtp_reply_parser *p, const char *line,
                                       size_t len,
                                       const struct smtp_reply **reply_r,
                                       const char **error_r);

/* Iterates over the lines of a parsed reply's text: returns the next line
 * start and its length, NULL at the end. *pos starts at 0. */
const char *smtp_reply_line(const struct smtp_reply *r, size_t *pos,
                            size_t *len_r);

/* ---- DATA reader -------------------------------------------------------- */

/* Receives unstuffed message bytes; returns 0 or a negative value to stop
 * (the reader then returns SMTP_ERR with "sink failed"). */
typedef int (*smtp_data_sink)(void *arg, const char *data, size_t len);

struct smtp_data_reader {
    int state;             /* internal */
    uint64_t line_len;     /* current line length, for the limit */
    uint64_t max_line;     /* 0: no limit */
    bool line_too_long;    /* sticky: a line exceeded max_line */
    uint64_t bytes;        /* unstuffed bytes delivered so far */
    smtp_data_sink sink;
    void *sink_arg;
};

void smtp_data_reader_init(struct smtp_data_reader *r, uint64_t max_line,
                           smtp_data_sink sink, void *sink_arg);
/* Consumes up to len bytes; *used_r tells how many (less than len only when
 * the end marker was found: the rest belongs to the next command).
 * SMTP_DONE at "CRLF.CRLF" (a bare LF is accepted as line end), SMTP_MORE
 * when more input is needed. */
enum smtp_parse_result smtp_data_feed(struct smtp_data_reader *r,
                                      const char *data, size_t len,
                                      size_t *used_r, const char **error_r);

/* ---- output: dot-stuffing for DATA to upstream ------------------------- */

struct smtp_stuffer {
    int state; /* internal: at line start, in line, after CR */
};
void smtp_stuffer_init(struct smtp_stuffer *s);
/* Copies in to out with CRLF line ends (bare LF and bare CR become CRLF)
 * and a '.' doubled at line starts. out must hold 2 * len + 2 bytes.
 * Returns the bytes written. */
size_t smtp_stuff(struct smtp_stuffer *s, const char *in, size_t len, char *out);
/* Writes the terminator (".\r\n", preceded by "\r\n" when the message did
 * not end with a line end) into out (5 bytes). Returns its length. */
size_t smtp_stuff_end(struct smtp_stuffer *s, char *out);

#endif
