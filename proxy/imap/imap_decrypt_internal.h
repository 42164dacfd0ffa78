/* Internals shared by the FETCH rewriter (imap_decrypt.c) and the SEARCH /
 * SORT side (imap_decrypt_search.c). */
#ifndef QUMAIL_IMAP_DECRYPT_INTERNAL_H
#define QUMAIL_IMAP_DECRYPT_INTERNAL_H

#include "imap_decrypt.h"
#include "imap_render.h"

/* What a hook's `cmd` points at: a client FETCH or one of its own
 * commands (the first member of both says which). */
enum dkind { K_CLIENT = 1, K_PROBE, K_BODY, K_SEARCH, K_SEARCH_OWN };

struct dcmd;

struct own {
    enum dkind kind;
    struct dcmd *cmd;
};

/* One message of a prepared FETCH. */
struct entry {
    struct dcmd *cmd;
    uint32_t seq, uid;
    bool encrypted;
    char *hint;            /* owned; NULL when the header names none */
    protect_in_view *view; /* a reference, once there */
    bool waiting;          /* a protect_in request is out for it */
    bool asked;            /* its bytes were asked for */
    /* server attributes, when the probe asked for them (SEARCH) */
    char **flags;          /* owned strings */
    size_t n_flags;
    char *internaldate;    /* owned: the quoted value's content */
    uint64_t modseq;
};

/* One content item the client asked for, answered from a view. */
struct want {
    enum imap_fetch_att att;
    char *name;            /* the server's name for it (owned) */
    struct imap_section sec;  /* for sections (render form) */
    uint32_t path[IMAP_MAX_PARTS];
    char **fields;         /* owned strings, n = sec.n_fields */
    uint64_t answered;     /* the response that last used it */
    char *opt_name;        /* owned: the server's name for it in the
                              optimised command (NULL: unchanged) */
};

enum taking { T_NONE, T_UID, T_PROBE, T_BODY, T_FLAGS, T_IDATE, T_MODSEQ };

struct dcmd {
    enum dkind kind; /* K_CLIENT; first (see resolve) */
    enum protect_in_need need;
    enum taking taking;    /* the item being read */
    uint32_t cur_seq;
    unsigned own_inflight;
    unsigned busy;         /* inside one of its callbacks: not freed yet */
    bool uid_fetch;
    bool body_ended;
    bool client_ended;
    bool released;
    bool dying;
    bool optimized;
    imap_decrypt *d;
    imap_session *s;
    struct dcmd *next, *prev;
    char *set;             /* owned: the client's sequence set text */
    struct want *wants;
    size_t n_wants;
    struct entry **ents;   /* in the probe's order */
    size_t n_ents, cap_ents;
    size_t hit;            /* where the next lookup starts */
    struct own probe, body;
    size_t waiting;        /* views still to come */
    /* the response being read (own and client responses never overlap) */
    struct entry *cur;
    uint64_t responses;    /* client responses begun (1-based) */
    char *pbuf;            /* probe answer (owned) */
    size_t plen;
    char uidbuf[16];
    size_t uidlen;
    protect_in_fetch *fetch; /* the body being supplied */
    /* a preparation for the proxy itself (SEARCH): no client FETCH */
    const char *extra;     /* more probe items ("FLAGS INTERNALDATE") */
    void (*done)(struct dcmd *c, void *arg); /* instead of the release */
    void *done_arg;
    size_t max_read;       /* messages it may read and decrypt; 0: any */
    size_t over;           /* > max_read: how many it would have read */
    char *opt_rewrite;     /* owned: the FETCH with 1-octet partials for
                              bodies, used when every message is ours */
    uint64_t changes;      /* imap_session_mailbox_changes at the command */
};

struct imap_decrypt {
    uint32_t max_decrypt;  /* imap.search.max_decrypt */
    protect_in *pi;
    protect_in_reader *reader;
    struct dcmd *cmds;
};

extern struct imap_decrypt_stats g_stats;
extern metric *g_m_messages, *g_m_prepared, *g_m_refused;

/* A preparation run for the proxy itself: views for the messages of `set`
 * (UIDs) with their server attributes (extra probe items), then done(c,
 * arg) on the loop; the caller ends it with dcmd_finish(). NULL when out
 * of memory. */
struct dcmd *dcmd_new_internal(imap_decrypt *d, imap_session *s, const char *uid_set,
                               enum protect_in_need need, const char *extra,
                               void (*done)(struct dcmd *c, void *arg), void *arg);
void dcmd_start(struct dcmd *c);
void dcmd_finish(struct dcmd *c);
protect_in *imap_decrypt_pi(const imap_decrypt *d);
protect_in_reader *imap_decrypt_reader(const imap_decrypt *d);

/* imap_decrypt_search.c: the hooks of its own contexts */
void *imap_decrypt_search_new(imap_decrypt *d, imap_session *s, enum imap_verb verb, bool uid,
                              const struct imap_args *args, size_t first, bool *prepare_r);
void imap_decrypt_search_start(void *sc);
void imap_decrypt_search_end(void *sc, enum imap_status status);
void imap_decrypt_search_own_end(void *own, enum imap_status status);
void imap_decrypt_search_own_data(void *own, const struct imap_resp_event *ev);
void imap_decrypt_search_begin(void *own, uint32_t seq);
enum imap_fetch_verdict imap_decrypt_search_item(void *own, const char *name);
void imap_decrypt_search_value(void *own, const struct imap_token *tok, bool last);
void imap_decrypt_search_response_end(void *own);

#endif
