/* imap_cmd: the client command model. Pure functions over argument trees
 * (imap_parser.h): command verbs, tags, sequence sets, FETCH attributes
 * with sections and partials, LOGIN/AUTHENTICATE/ID/ENABLE arguments.
 * No I/O; errors are returned as static texts fit for "tag BAD <text>". */
#ifndef QUMAIL_IMAP_CMD_H
#define QUMAIL_IMAP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_parser.h"

enum imap_verb {
    IMAP_CMD_UNKNOWN = 0,
    /* any state */
    IMAP_CMD_CAPABILITY, IMAP_CMD_NOOP, IMAP_CMD_LOGOUT, IMAP_CMD_ID,
    /* not authenticated */
    IMAP_CMD_STARTTLS, IMAP_CMD_AUTHENTICATE, IMAP_CMD_LOGIN,
    /* authenticated */
    IMAP_CMD_ENABLE, IMAP_CMD_SELECT, IMAP_CMD_EXAMINE, IMAP_CMD_CREATE, IMAP_CMD_DELETE,
    IMAP_CMD_RENAME, IMAP_CMD_SUBSCRIBE, IMAP_CMD_UNSUBSCRIBE, IMAP_CMD_LIST, IMAP_CMD_LSUB,
    IMAP_CMD_NAMESPACE, IMAP_CMD_STATUS, IMAP_CMD_APPEND, IMAP_CMD_IDLE,
    IMAP_CMD_GETQUOTA, IMAP_CMD_GETQUOTAROOT, IMAP_CMD_SETQUOTA, IMAP_CMD_GETACL,
    IMAP_CMD_SETACL, IMAP_CMD_DELETEACL, IMAP_CMD_LISTRIGHTS, IMAP_CMD_MYRIGHTS,
    IMAP_CMD_GETMETADATA, IMAP_CMD_SETMETADATA,
    /* selected */
    IMAP_CMD_CHECK, IMAP_CMD_CLOSE, IMAP_CMD_UNSELECT, IMAP_CMD_EXPUNGE, IMAP_CMD_SEARCH,
    IMAP_CMD_FETCH, IMAP_CMD_STORE, IMAP_CMD_COPY, IMAP_CMD_MOVE, IMAP_CMD_SORT,
    IMAP_CMD_THREAD, IMAP_CMD_CANCELUPDATE,
    /* known and refused by the proxy (see README: capabilities) */
    IMAP_CMD_COMPRESS, IMAP_CMD_NOTIFY, IMAP_CMD_URLFETCH, IMAP_CMD_GENURLAUTH,
    IMAP_CMD_RESETKEY, IMAP_CMD_REPLACE, IMAP_CMD_XLIST, IMAP_CMD_CONVERT,
    IMAP_CMD_COUNT_
};

const char *imap_verb_name(enum imap_verb v);
enum imap_verb imap_verb_lookup(const char *s, size_t len);
/* Verbs valid after "UID": FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD,
 * EXPUNGE (UIDPLUS). */
bool imap_verb_uid_ok(enum imap_verb v);

/* tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 9). */
bool imap_tag_valid(const char *s, size_t len);

/* ---- sequence sets ------------------------------------------------------- */

#define IMAP_SEQ_STAR UINT32_MAX /* "*": the largest number in use */

struct imap_seq_range {
    uint32_t lo, hi; /* lo <= hi; "*" is IMAP_SEQ_STAR */
};

struct imap_seqset {
    bool saved;                  /* "$" (SEARCHRES) */
    struct imap_seq_range *ranges; /* owned; sorted as given, not merged */
    size_t count;
};

/* Parses "1,3:5,7:*" (nz-number, ranges either way round). */
int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set_r,
                      const char **error_r);
void imap_seqset_free(struct imap_seqset *set);
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n, uint32_t star);

/* ---- FETCH --------------------------------------------------------------- */

enum imap_fetch_att {
    IMAP_FA_FLAGS,
    IMAP_FA_UID,
    IMAP_FA_INTERNALDATE,
    IMAP_FA_RFC822_SIZE,
    IMAP_FA_ENVELOPE,
    IMAP_FA_BODY,          /* BODY without section: BODYSTRUCTURE sans extensions */
    IMAP_FA_BODYSTRUCTURE,
    IMAP_FA_RFC822,        /* = BODY[] (sets \Seen) */
    IMAP_FA_RFC822_HEADER, /* = BODY.PEEK[HEADER] */
    IMAP_FA_RFC822_TEXT,   /* = BODY[TEXT] (sets \Seen) */
    IMAP_FA_BODY_SECTION,  /* BODY[...] / BODY.PEEK[...] */
    IMAP_FA_BINARY,        /* BINARY[...] / BINARY.PEEK[...] (RFC 3516) */
    IMAP_FA_BINARY_SIZE,   /* BINARY.SIZE[...] */
    IMAP_FA_MODSEQ,        /* CONDSTORE */
    IMAP_FA_EMAILID,       /* OBJECTID */
    IMAP_FA_THREADID,
    IMAP_FA_SAVEDATE,
    IMAP_FA_PREVIEW,       /* PREVIEW / SNIPPET */
    IMAP_FA_OTHER,         /* anything else (X-GM-*, ...) */
};
const char *imap_fetch_att_name(enum imap_fetch_att a);

enum imap_section_spec {
    IMAP_SEC_ALL,               /* BODY[] or BODY[1.2] */
    IMAP_SEC_HEADER,
    IMAP_SEC_HEADER_FIELDS,
    IMAP_SEC_HEADER_FIELDS_NOT,
    IMAP_SEC_TEXT,
    IMAP_SEC_MIME,
};

#define IMAP_MAX_PARTS 32

struct imap_fetch_section {
    uint32_t parts[IMAP_MAX_PARTS]; /* "1.2.3" -> {1, 2, 3} */
    unsigned n_parts;
    enum imap_section_spec spec;
    const struct imap_arg *fields;  /* HEADER.FIELDS(.NOT): the list's args */
    size_t n_fields;
};

struct imap_fetch_item {
    enum imap_fetch_att att;
    bool peek;                 /* BODY.PEEK / BINARY.PEEK */
    bool has_section;
    struct imap_fetch_section section;
    bool has_partial;          /* <offset.length> or <offset> */
    uint64_t partial_offset;
    uint64_t partial_length;   /* UINT64_MAX when only <offset> was given */
    bool from_macro;           /* expanded from FAST / ALL / FULL */
    bool sets_seen;            /* the server sets \Seen when it answers */
    /* The name as the server answers it, upper case, single spaces, the
     * partial as "<offset>" (BODY.PEEK[HEADER.FIELDS (From)]<0.9> ->
     * BODY[HEADER.FIELDS (FROM)]<0>), as imap_resp assembles it. Owned. */
    char *response_name;
    size_t raw_off, raw_len;   /* the item's bytes in the command buffer */
};

struct imap_fetch {
    bool uid;                 /* UID FETCH */
    struct imap_seqset set;
    const struct imap_arg *set_arg;
    struct imap_fetch_item *items; /* owned */
    size_t n_items;
    bool list_form;           /* items given in parentheses */
    const struct imap_arg *items_arg; /* the item list or the single item */
    bool changedsince;        /* (CHANGEDSINCE n) modifier, CONDSTORE */
    uint64_t changedsince_modseq;
    bool vanished;            /* (VANISHED) modifier, QRESYNC */
    bool has_literals;        /* set by the caller: the command carried literals */
    /* Set by the caller when it has it: the command buffer that raw_off
     * values refer to, and its length without the line break. */
    const char *buf;
    size_t buf_len;
};

/* args: the arguments after the verb (and after "UID FETCH"). The result
 * points into args (fields, set_arg) and so into the command buffer. */
int imap_fetch_parse(const struct imap_arg *args, size_t count, bool uid,
                     struct imap_fetch *fetch_r, const char **error_r);
void imap_fetch_free(struct imap_fetch *fetch);
/* True when the item names content (bodies, structure, sizes, envelope). */
bool imap_fetch_att_is_content(enum imap_fetch_att a);

/* ---- other commands ------------------------------------------------------ */

/* LOGIN userid password: userid copied (for logs and identity), the
 * password located (not copied) so the caller can wipe it. */
int imap_login_parse(const struct imap_arg *args, size_t count, char *user, size_t user_size,
                     const char **error_r);

/* AUTHENTICATE mechanism [initial-response] */
int imap_authenticate_parse(const struct imap_arg *args, size_t count, char *mech,
                            size_t mech_size, const struct imap_arg **ir_r,
                            const char **error_r);

/* The identity in a SASL initial response (or first response), for logs
 * and the "who may read" check: PLAIN "authzid\0authcid\0passwd" -> authzid
 * if given else authcid; XOAUTH2 "user=U\1auth=...\1\1" -> U; OAUTHBEARER
 * gs2 header "n,a=U,..." -> U. raw is base64. Returns false when none. */
bool imap_sasl_user(const char *mech, const char *b64, size_t b64_len, char *user,
                    size_t user_size);

/* ID ( "key" "value" ... ) or ID NIL. Calls cb for each pair (value NULL
 * for NIL). Returns 0 or an error text. */
int imap_id_parse(const struct imap_arg *args, size_t count,
                  void (*cb)(void *ctx, const struct imap_arg *key, const struct imap_arg *value),
                  void *ctx, const char **error_r);

#endif
