/* Shared internals of protect_in (incoming*.c). Not a public header. */
#ifndef QUMAIL_PROTECT_INCOMING_INTERNAL_H
#define QUMAIL_PROTECT_INCOMING_INTERNAL_H

#include "incoming.h"
#include "mime.h"
#include "viewcache.h"

/* Identities: "k/<key_ID>" for a first key entry of ETSI 014, "c/<KSID>/
 * <first index>" for an ETSI 004 first entry. Also the vault metadata key
 * (visible ASCII, KME_VAULT_MAX_MSG_ID_LEN). */
#define PI_ID_MAX (PI_TRANSIT_TAG_LEN + 3 + 2 + MIME_MAX_ID_LEN + 1 + 20)

/* ---- transit fields (incoming_transit.c) ---------------------------------- */

/* A message's identity and hint carry a tag of its outer trace fields,
 * "t/<tag>/" + identity, when it has any: one ciphertext delivered twice
 * (a list copy, two mailboxes) has different transit fields, so different
 * views. 32 hex digits (128 bits of SHA-256). */
#define PI_TRANSIT_TAG_LEN 32

/* Is this field name (len bytes) on the transit allow-list? */
bool pi_transit_allowed(const uint8_t *name, size_t len);
/* The tag of the allow-listed fields of a header block (a whole header or
 * a probe's answer; in order, line ends ignored). 1 and tag set; 0 when
 * it has none (tag ""); PROTECT_IN_ENOMEM. */
int pi_transit_tag(const uint8_t *hdr, size_t len, char tag[PI_TRANSIT_TAG_LEN + 1]);
/* The transit fields of a delivered message: the allow-listed fields of
 * the outer header block above the writer's own block, found by matching
 * against the decrypted original's header. Exact octets, in order;
 * *out_r malloc'd (NULL and *len_r 0 when none). 0 or PROTECT_IN_ENOMEM. */
int pi_transit_fields(const uint8_t *outer, size_t outer_len, const uint8_t *plain,
                      size_t plain_len, uint8_t **out_r, size_t *len_r);
/* "t/<tag>/<id>" (malloc'd), or a copy of id when tag is empty; NULL when
 * id is NULL or out of memory. */
char *pi_id_tagged(const char *id, const char *tag);

/* The binding a view or metadata carries: the copy's normalised
 * recipients (authenticated by decryption). count 0: an unbound copy. */
struct pi_binding {
    char **addrs;
    size_t count;
};
void pi_binding_clear(struct pi_binding *b);
int pi_binding_copy(struct pi_binding *dst, const struct pi_binding *src);
int pi_binding_from_info(struct pi_binding *dst, const struct mime_info *info);

/* ---- readers and access (incoming_access.c) ------------------------------- */

struct pi_addrmap_entry {
    char *login;
    char *address; /* normalised */
};

struct protect_in_reader {
    int refs;
    char *login;
    char **addrs;   /* normalised, distinct */
    size_t n_addrs;
};

/* Builds the address map of the configuration; -1 with *error_r. */
int pi_addrmap_build(const struct protect_in_config *cfg,
                     struct pi_addrmap_entry **map_r, size_t *n_r,
                     char **error_r);
void pi_addrmap_free(struct pi_addrmap_entry *map, size_t n);
protect_in_reader *pi_reader_ref(protect_in_reader *r);

/* PROTECT_IN_DECRYPTED when r may read a copy bound as b, else the reason
 * of the notice it gets (NO_IDENTITY, UNBOUND, NOT_ALLOWED). */
enum protect_in_reason pi_access(const protect_in *pi,
                                 const protect_in_reader *r,
                                 const struct pi_binding *b);

/* ---- views (incoming_view.c) ------------------------------------------------ */

struct pi_view_hooks {
    void (*wiped)(void *arg, const uint8_t *p, size_t len);
    void *arg;
};

struct protect_in_view {
    int refs;
    bool complete;
    enum protect_in_reason reason;
    char *id;                      /* NULL: unknown */
    uint8_t *data;                 /* owned: normalised message (complete)
                                      or header block (summary); wiped */
    size_t data_len;
    struct mime_struct *ms;        /* over data (BORROW); NULL: no header */
    uint64_t size;                 /* RFC822.SIZE */
    char *bodystructure, *body, *envelope; /* owned, wiped */
    size_t bodystructure_len, body_len, envelope_len;
    struct pi_binding binding;
    uint64_t footprint;            /* bytes charged to the cache */
    struct pi_view_hooks hooks;
};

/* Builds a complete view from a message in memory. Takes over plain
 * (malloc'd, len bytes): it becomes the view's data, or is wiped and freed
 * (normalised copy, or failure). binding may be NULL (notices). Runs on any
 * thread. 0 or a negative MIME_ERR_* / PROTECT_IN_ENOMEM. */
int pi_view_build(uint8_t *plain, size_t len, enum protect_in_reason reason,
                  const char *id, const struct pi_binding *binding,
                  const struct pi_view_hooks *hooks, protect_in_view **v_r);

/* Frees a view whatever its state (wipes data and strings). */
void pi_view_destroy(protect_in_view *v);
/* Bytes a view costs in memory (cache accounting). */
uint64_t pi_view_footprint(const protect_in_view *v);

/* The ENVELOPE From of a part tree's root as "mailbox@domain" (malloc'd),
 * NULL when it has none. */
char *pi_struct_from_address(const struct mime_struct *ms);

/* ---- metadata (incoming_meta.c) --------------------------------------------- */

/* Serialises what a summary needs from a complete decrypted view: size,
 * BODYSTRUCTURE, BODY, ENVELOPE, the header block (when at most
 * max_header bytes), the binding and the identity. *blob_r malloc'd; the
 * caller wipes it (it holds header values). */
int pi_meta_encode(const protect_in_view *v, size_t max_header,
                   uint8_t **blob_r, size_t *len_r);
/* The summary view of a blob; PROTECT_IN_EINVAL for a damaged blob or one
 * of another identity. */
int pi_meta_decode(const uint8_t *blob, size_t len, const char *id,
                   const struct pi_view_hooks *hooks, protect_in_view **v_r);

/* ---- notices (incoming_notice.c) ------------------------------------------------ */

struct pi_notice_facts {
    enum protect_in_reason reason;
    const char *detail;            /* error text, may be NULL */
    const uint8_t *outer;          /* the encrypted message's header block */
    size_t outer_len;              /* 0: unknown */
    const struct mime_info *info;  /* control data, NULL when unreadable */
    const char *link;              /* KME link asked, or NULL */
    const char *login;             /* reader, for access notices */
};
/* The notice message (CRLF, UTF-8 text/plain) in *msg_r (malloc'd). */
int pi_notice_text(const struct pi_notice_facts *f, uint8_t **msg_r,
                   size_t *len_r);
/* A complete notice view. */
int pi_notice_view(const struct pi_notice_facts *f, const char *id,
                   const struct pi_view_hooks *hooks, protect_in_view **v_r);

/* ---- the instance and its builds (incoming.c, incoming_build.c) ----------- */

enum pi_state {
    PI_S_FETCH,      /* waiting for the raw message from a waiter's fetch */
    PI_S_INSPECT,    /* worker: control data and outer header */
    PI_S_CHECK,      /* loop: who may read, sender rule */
    PI_S_VAULT,      /* worker: keys from the vault */
    PI_S_STATUS,     /* KME status: the message's source KME is the link's peer */
    PI_S_KME,        /* dec_keys for the keys the vault lacks */
    PI_S_STORE,      /* worker: the keys from the KME committed to the vault */
    PI_S_DECRYPT,    /* worker: decrypt, part tree, rendered structures */
    PI_S_DONE,       /* loop: answers given; the build is freed */
};

struct pi_waiter {
    struct pi_waiter *next;
    protect_in_reader *reader;     /* a reference */
    protect_in_fetch_fn fetch;
    void *fetch_arg;
    protect_in_view_cb cb;
    void *arg;
    bool asked;                    /* its fetch was called for this build */
    bool supplied;                 /* its fetch delivered the build's bytes */
};

/* A cache hit from protect_in_open, answered from the kick. */
struct pi_ready {
    struct pi_ready *next;
    struct pi_waiter *w;
    protect_in_view *view;         /* a reference */
};

struct pi_unsaved;                 /* keys the vault refused: retried */
struct pi_link;                    /* per KME link: down time, status cache */
struct pi_build;

struct protect_in {
    uv_loop_t *loop;
    kme_vault *vault;
    policy_store *policies;
    kme_client *(*link_fn)(void *arg, const char *name);
    void *link_arg;
    kme_source *(*source_fn)(void *arg, const char *name);
    void *source_arg;
    struct protect_in_config cfg;  /* strings below are ours */
    char *default_domain;
    struct pi_addrmap_entry *map;
    size_t n_map;
    viewcache *cache;
    struct pi_build *builds;       /* in progress (list) */
    struct pi_ready *ready;        /* answers due from the kick */
    uv_timer_t kick;               /* deferred calls: fetches, answers */
    bool kick_closed;
    struct pi_link *links;
    struct pi_unsaved *unsaved;
    size_t workers;                /* thread-pool jobs not yet returned,
                                      and callbacks running (a pin) */
    bool closing;                  /* protect_in_free called: free when
                                      workers reach 0 */
    struct protect_in_stats stats;
    struct pi_view_hooks hooks;
};

/* incoming_build.c */
/* supplied_r NULL: the first waiter's fetch callback is asked (deferred);
 * else the caller gets the fetch handle at once. */
int pi_build_start(protect_in *pi, const char *hint, struct pi_waiter *w,
                   protect_in_fetch **supplied_r);
struct pi_build *pi_build_find(protect_in *pi, const char *hint);
void pi_build_join(struct pi_build *b, struct pi_waiter *w);
size_t pi_build_cancel(protect_in *pi, const void *arg);
void pi_builds_close(protect_in *pi);
size_t pi_builds_count(const protect_in *pi);
void pi_cancel_all(protect_in *pi); /* every waiter gets ECANCELLED */
void pi_kick(protect_in *pi);
void pi_links_free(protect_in *pi);
void pi_unsaved_free(protect_in *pi);

/* incoming.c */
uint64_t pi_now(const protect_in *pi);
void pi_waiter_free(struct pi_waiter *w);
void pi_cache_put(protect_in *pi, const char *key, protect_in_view *v,
                  uint64_t ttl_ms);
void pi_free_final(protect_in *pi); /* when closing and no worker is left */

#endif
