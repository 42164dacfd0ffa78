/* imap_search: IMAP SEARCH criteria and SORT keys evaluated by the proxy
 * for messages the server cannot read (our encrypted ones), exactly as
 * Dovecot 2.3 (without FTS) evaluates them on the plaintext; and the plan
 * that splits one SEARCH/SORT over a mailbox of plain and encrypted
 * messages between the server and the proxy. Pure: no I/O, no globals,
 * thread-safe (a parsed search may be evaluated from several threads).
 * Rules, evidence and limits: README.md beside this file.
 *
 *   criteria (argument tree) --imap_search_parse--> struct imap_search
 *   imap_search_eval(search, message)        -> 1 match / 0 no match
 *   imap_search_plan(search)                 -> server queries + proxy part
 *   imap_sort_parse / imap_sort_keys / imap_sort_compare -> SORT order
 *
 * A message is given as its plaintext part tree (mime_struct, the same the
 * FETCH side answers from) plus what only the server knows: sequence
 * number, UID, flags, INTERNALDATE, MODSEQ.
 *
 * Errors: negative IMAP_SEARCH_E* codes with a static text fit for
 * "tag BAD <text>" / "tag NO [BADCHARSET] <text>" in *error_r. */
#ifndef QUMAIL_IMAP_SEARCH_H
#define QUMAIL_IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mime_struct.h"

enum imap_search_error {
    IMAP_SEARCH_OK = 0,
    IMAP_SEARCH_ESYNTAX = -9301,     /* "tag BAD <text>" */
    IMAP_SEARCH_EBADCHARSET = -9302, /* "tag NO [BADCHARSET (UTF-8 US-ASCII)] <text>" */
    IMAP_SEARCH_ENOMEM = -9303,
    IMAP_SEARCH_ELIMIT = -9304,      /* nesting or size limit: "tag BAD" */
};

/* ---- the criteria as the command carries them ---------------------------- */

/* The command's arguments after SEARCH / UID SEARCH (and after SORT's
 * sort criteria and charset), as an argument tree: the same shape as
 * imap_parser.h's struct imap_arg (atoms, strings - quoted or literal,
 * already unescaped - and lists), so the session converts one to the other
 * field by field. Strings are bytes (len), not necessarily NUL-terminated. */
enum imap_search_in_type {
    IMAP_SEARCH_IN_ATOM,
    IMAP_SEARCH_IN_STRING,
    IMAP_SEARCH_IN_LIST,
};
struct imap_search_in {
    enum imap_search_in_type type;
    const char *str;
    size_t len;
    const struct imap_search_in *list; /* LIST: children */
    size_t count;
};

/* A criteria text as a client writes it ("OR FROM x (SUBJECT \"a b\")",
 * {n} literals inline after their CRLF) -> argument tree; for tests and
 * tools. *in_r is one allocation; free with imap_search_in_free. */
int imap_search_in_parse(const char *text, size_t len, struct imap_search_in **in_r,
                         size_t *count_r, const char **error_r);
void imap_search_in_free(struct imap_search_in **in);

/* ---- parsed criteria ----------------------------------------------------- */

enum imap_search_op {
    IMAP_SEARCH_ALL,
    IMAP_SEARCH_AND,        /* children; a parenthesised list or the top level */
    IMAP_SEARCH_OR,         /* two children */
    IMAP_SEARCH_NOT,        /* one child */
    IMAP_SEARCH_SEQSET,     /* ranges: message sequence numbers */
    IMAP_SEARCH_UIDSET,     /* ranges: UIDs */
    IMAP_SEARCH_SAVED,      /* "$" (SEARCHRES): resolved by the session */
    IMAP_SEARCH_FLAG,       /* value: "\\Seen" ... or a keyword; set when */
    IMAP_SEARCH_BEFORE,     /* INTERNALDATE (server): date */
    IMAP_SEARCH_ON,
    IMAP_SEARCH_SINCE,
    IMAP_SEARCH_OLDER,      /* WITHIN (RFC 5032): number = seconds */
    IMAP_SEARCH_YOUNGER,
    IMAP_SEARCH_MODSEQ,     /* CONDSTORE: number */
    IMAP_SEARCH_SENTBEFORE, /* Date header (content): date */
    IMAP_SEARCH_SENTON,
    IMAP_SEARCH_SENTSINCE,
    IMAP_SEARCH_LARGER,     /* RFC822.SIZE (content: the plaintext's): number */
    IMAP_SEARCH_SMALLER,
    IMAP_SEARCH_HEADER,     /* field, value */
    IMAP_SEARCH_SUBJECT,    /* value */
    IMAP_SEARCH_FROM,
    IMAP_SEARCH_TO,
    IMAP_SEARCH_CC,
    IMAP_SEARCH_BCC,
    IMAP_SEARCH_BODY,
    IMAP_SEARCH_TEXT,
};

#define IMAP_SEARCH_STAR UINT32_MAX /* "*" in a set */

struct imap_search_range {
    uint32_t lo, hi; /* lo <= hi after parsing ("5:2" = 2:5); "*" = STAR */
};

struct imap_search_node {
    enum imap_search_op op;
    const struct imap_search_node *const *children;
    size_t n_children;
    const struct imap_search_range *ranges; /* SEQSET / UIDSET */
    size_t n_ranges;
    const char *field;   /* HEADER: the field name; FLAG: "KEYWORD" for a
                            keyword, NULL for a system flag */
    const char *value;   /* UTF-8 (converted from the CHARSET); FLAG: name */
    bool set;            /* FLAG: true for SEEN etc., false for UNSEEN etc. */
    uint64_t number;     /* LARGER/SMALLER/MODSEQ/OLDER/YOUNGER */
    int64_t date;        /* dates: the day at 00:00 UTC, seconds since 1970 */
};

struct imap_search;

/* Parses the criteria (args[0..count)). charset: the CHARSET argument or
 * NULL; values are converted from it to UTF-8 (iconv). Keys the proxy does
 * not know (X-GM-RAW, FUZZY, ...) are ESYNTAX: the session then answers
 * BAD or, for a mailbox without encrypted messages, relays the command. */
int imap_search_parse(const struct imap_search_in *args, size_t count, const char *charset,
                      struct imap_search **search_r, const char **error_r);
void imap_search_free(struct imap_search **search);
const struct imap_search_node *imap_search_root(const struct imap_search *s);

/* Writes the criteria back in IMAP syntax (values as quoted strings or,
 * when they hold 8-bit or CR/LF, as literals "{n}\r\n..."; the server then
 * needs CHARSET UTF-8). Returns a malloc'd NUL-terminated string. */
char *imap_search_write(const struct imap_search_node *n);

/* True when the criteria need the message content (headers, body, size):
 * the ones the server cannot evaluate for an encrypted message. */
bool imap_search_node_is_content(const struct imap_search_node *n);
bool imap_search_needs_content(const struct imap_search *s);
/* What of the content: IMAP_SEARCH_NEED_* bits. */
enum {
    IMAP_SEARCH_NEED_SIZE = 1 << 0,   /* LARGER / SMALLER */
    IMAP_SEARCH_NEED_HEADER = 1 << 1, /* header criteria, SENT* */
    IMAP_SEARCH_NEED_BODY = 1 << 2,   /* BODY / TEXT: the whole message */
    IMAP_SEARCH_NEED_FLAGS = 1 << 3,  /* server attributes to fetch */
    IMAP_SEARCH_NEED_INTERNALDATE = 1 << 4,
    IMAP_SEARCH_NEED_MODSEQ = 1 << 5,
};
unsigned imap_search_needs(const struct imap_search *s);

/* ---- one message --------------------------------------------------------- */

struct imap_search_msg {
    const struct mime_struct *ms; /* the plaintext (for an encrypted message:
                                     the decrypted view); NULL only when the
                                     criteria need no content */
    uint32_t seq, uid;
    uint32_t max_seq, max_uid;    /* "*" in sets: the mailbox's EXISTS and
                                     its largest UID */
    const char *const *flags;     /* as FETCH FLAGS gives them, incl. \Recent */
    size_t n_flags;
    int64_t internaldate;         /* seconds since 1970, UTC */
    int internaldate_tz;          /* the INTERNALDATE's zone, minutes east
                                     (the server compares in its own zone) */
    int64_t now;                  /* for OLDER / YOUNGER: current time */
    uint64_t modseq;
};

/* 1: the message matches; 0: not. Never fails (a broken message is
 * evaluated the way Dovecot reads broken messages). */
int imap_search_eval(const struct imap_search *s, const struct imap_search_msg *m);

/* ---- the plan: one SEARCH over a mixed mailbox ---------------------------- */

/* How the session answers SEARCH / UID SEARCH / SORT when the mailbox may
 * hold encrypted messages (README.md "Merge plan"):
 *   1. content == false: relay the command unchanged (flags, UIDs, dates
 *      of arrival, sequence sets, MODSEQ: the server knows them all).
 *   2. Otherwise send upstream, pipelined:
 *        UID SEARCH [CHARSET UTF-8] <plain_query>   -> plain matches
 *        UID SEARCH [CHARSET UTF-8] <enc_query>     -> encrypted candidates
 *      plain_query is (C) with NOT HEADER X-QKD-Key-ID "" (the server's own
 *      answer for its plaintext); enc_query is an over-approximation U(C) of
 *      C on server attributes only, with HEADER X-QKD-Key-ID "" (a message
 *      without that header is not ours: FORMAT-SPEC.md 2.2).
 *   3. For each candidate (UID order), fetch the server attributes `needs`
 *      names (FLAGS, INTERNALDATE, MODSEQ; sequence numbers from the FETCH
 *      response) and the content: metadata / summary view when only the
 *      header is needed, else the full decrypted view (incoming); evaluate
 *      C with imap_search_eval. At most a configured number of messages is
 *      decrypted per command (README.md "Cost and limits").
 *   4. Merge: plain matches + encrypted matches (disjoint), ascending, in the
 *      form the client asked (sequence numbers or UIDs); ESEARCH MIN, MAX,
 *      COUNT, ALL over the merged set (imap_search_result_*). */
struct imap_search_plan {
    bool content;        /* false: relay the client's command unchanged */
    char *plain_query;   /* malloc'd criteria text (without "UID SEARCH") */
    char *enc_query;     /* malloc'd */
    bool utf8;           /* queries need CHARSET UTF-8 */
    unsigned needs;      /* IMAP_SEARCH_NEED_* for the encrypted candidates */
    bool enc_all_candidates; /* U(C) is ALL: every encrypted message */
};
int imap_search_plan(const struct imap_search *s, struct imap_search_plan *plan_r);
void imap_search_plan_clear(struct imap_search_plan *plan);

/* The merged result and its ESEARCH forms. ids: ascending numbers (sorted
 * and deduplicated here). */
struct imap_search_result {
    uint32_t *ids;
    size_t count;
};
int imap_search_result_merge(const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
                             struct imap_search_result *r_out);
void imap_search_result_clear(struct imap_search_result *r);
/* "1:3,5,7:9" (RFC 4731 ALL); malloc'd; "" for an empty set. */
char *imap_search_result_set(const struct imap_search_result *r);

/* ---- SORT (RFC 5256, as Dovecot 2.3) ------------------------------------- */

enum imap_sort_key {
    IMAP_SORT_ARRIVAL,
    IMAP_SORT_CC,
    IMAP_SORT_DATE,
    IMAP_SORT_FROM,
    IMAP_SORT_SIZE,
    IMAP_SORT_SUBJECT,
    IMAP_SORT_TO,
    IMAP_SORT_DISPLAYFROM, /* RFC 5957 */
    IMAP_SORT_DISPLAYTO,
};
struct imap_sort_crit {
    enum imap_sort_key key;
    bool reverse;
};
#define IMAP_SORT_MAX_CRIT 16

/* The sort criteria list "(REVERSE DATE SUBJECT)". */
int imap_sort_parse(const struct imap_search_in *list, struct imap_sort_crit *crit,
                    size_t *n_crit, const char **error_r);

/* The sort keys of one message, computed once (from its header only: the
 * metadata's header block is enough). Strings are in Dovecot's sort form
 * (casemapped). */
struct imap_sort_keys {
    char *subject;       /* RFC 5256 base subject */
    char *from, *to, *cc;/* first mailbox's local part (addr-mailbox) */
    char *display_from, *display_to;
    int64_t date;        /* Date header in UTC; INTERNALDATE when missing */
    int64_t arrival;     /* INTERNALDATE */
    uint64_t size;       /* RFC822.SIZE */
    uint32_t seq;        /* ties */
};
int imap_sort_keys_compute(const struct imap_search_msg *m, struct imap_sort_keys *k);
void imap_sort_keys_clear(struct imap_sort_keys *k);
/* <0, 0, >0 as a sorts before, with, after b (never 0 for different
 * messages: the sequence number breaks ties). */
int imap_sort_compare(const struct imap_sort_crit *crit, size_t n_crit,
                      const struct imap_sort_keys *a, const struct imap_sort_keys *b);

/* ---- pieces exposed for tests and other users ----------------------------- */

/* Dovecot's i;unicode-casemap normaliser (titlecase + one decomposition
 * level; invalid UTF-8 -> one U+FFFD per run). Appends to *out (malloc'd,
 * grown; *out_len updated). Returns 0 or ENOMEM. */
int imap_search_casemap(const void *in, size_t len, char **out, size_t *out_len,
                        size_t *out_cap);
/* RFC 5256 base subject of a raw Subject value, casemapped. malloc'd. */
char *imap_sort_base_subject(const char *value, size_t len);
/* RFC 2822 date as Dovecot reads it: 1 with *t_r (UTC) and *tz_r
 * (minutes), or 0. */
int imap_search_date_parse(const char *value, size_t len, int64_t *t_r, int *tz_r);

#endif
