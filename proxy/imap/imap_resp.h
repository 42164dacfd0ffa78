/* imap_resp: upstream responses as a stream of events, for relaying.
 *
 * Pull model over the tokenizer, with its contract: imap_resp_next() returns
 * one event covering exactly in[0, used); IMAP_PARSE_MORE consumes nothing
 * (call again with the same bytes plus more); IMAP_PARSE_ERROR gives a
 * static text (the upstream is then not understood: close it). The raw
 * bytes of consecutive events are consecutive input, so relaying every
 * event's raw bytes reproduces the input exactly; a relay copies spans of
 * input, not tokens.
 *
 * Events:
 *   TAGGED         `tag OK|NO|BAD resp-text` (the whole line)
 *   CONTINUATION   `+ text` (the whole line)
 *   STATUS         `* OK|NO|BAD|BYE|PREAUTH resp-text` (the whole line)
 *   DATA_BEGIN     `* [n] NAME` of any other untagged response
 *   DATA_TOKEN     one token of it (spaces before it included); literal
 *                  data comes in chunks as it arrives, never buffered
 *   FETCH_ITEM     in `* n FETCH (...)`: an item's name, assembled from
 *                  its tokens (`BODY[HEADER.FIELDS (FROM TO)]<0>`); its
 *                  value follows as DATA_TOKEN events, the last of which
 *                  has item_end set
 *   DATA_END       the line end (with the FETCH list's `)`)
 * Line events (TAGGED, CONTINUATION, STATUS) need the whole line in the
 * input (at most max_token of text); data responses stream. */
#ifndef QUMAIL_IMAP_RESP_H
#define QUMAIL_IMAP_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_parser.h"

typedef struct imap_resp imap_resp;

enum imap_resp_kind {
    IMAP_RESP_TAGGED,
    IMAP_RESP_CONTINUATION,
    IMAP_RESP_STATUS,
    IMAP_RESP_DATA_BEGIN,
    IMAP_RESP_DATA_TOKEN,
    IMAP_RESP_FETCH_ITEM,
    IMAP_RESP_DATA_END,
};

enum imap_status {
    IMAP_STATUS_NONE = 0,
    IMAP_STATUS_OK,
    IMAP_STATUS_NO,
    IMAP_STATUS_BAD,
    IMAP_STATUS_BYE,
    IMAP_STATUS_PREAUTH,
};
const char *imap_status_name(enum imap_status st);

#define IMAP_FETCH_ITEM_MAX 1024 /* assembled item name, bytes */

struct imap_resp_event {
    enum imap_resp_kind kind;
    const char *raw; /* in[0, raw_len): exactly the bytes consumed */
    size_t raw_len;
    /* TAGGED */
    const char *tag;
    size_t tag_len;
    /* TAGGED, STATUS */
    enum imap_status status;
    /* TAGGED, STATUS, CONTINUATION: text after the status atom (or '+'),
     * `[code ...]` included, without the line break */
    const char *text;
    size_t text_len;
    /* DATA_*, FETCH_ITEM */
    bool fetch;          /* part of a `* n FETCH` response */
    const char *name;    /* DATA_BEGIN: response name (FETCH, CAPABILITY) */
    size_t name_len;
    bool has_number;     /* DATA_BEGIN: `* n NAME` */
    uint32_t number;
    /* DATA_TOKEN */
    struct imap_token tok;
    bool item_end;       /* FETCH: last token of the item's value */
    /* FETCH_ITEM, and DATA_TOKEN in a FETCH: the item (upper case,
     * NUL-terminated, valid until the next FETCH_ITEM) and its index */
    const char *item;
    size_t item_len;
    unsigned item_index;
};

imap_resp *imap_resp_new(const struct imap_parser_limits *limits);
/* Right after a DATA_BEGIN: the rest of that response is wanted as bytes
 * only (a relay that passes it on unchanged). It then comes as DATA_TOKEN
 * events of whole line pieces (TEXT), literal headers (LITERAL, the piece
 * of line ending with it) and literal data, then DATA_END - found by line
 * ends and literal sizes alone, at memchr speed. No FETCH_ITEM events. */
void imap_resp_relay_rest(imap_resp *r);
void imap_resp_free(imap_resp **r);
/* Back to the start of a response line (a fresh connection). */
void imap_resp_reset(imap_resp *r);
int imap_resp_next(imap_resp *r, const char *in, size_t len, size_t *used_r,
                   struct imap_resp_event *ev, const char **error_r);
/* True between responses (a line has ended). */
bool imap_resp_at_line_start(const imap_resp *r);

/* The response code of a resp-text: for "[CAPABILITY A B] text" returns
 * the code's atom ("CAPABILITY") and its arguments ("A B"); false when the
 * text has no code. Pointers into text. */
bool imap_resp_code(const char *text, size_t len, const char **code_r, size_t *code_len_r,
                    const char **args_r, size_t *args_len_r);

#endif
