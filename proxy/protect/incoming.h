/* protect_in: incoming protection, the protocol-agnostic layer between a
 * reading protocol (the IMAP proxy's FETCH rewriter) and the crypto (vault,
 * KME, mime). It turns an encrypted message into a *view*: the decrypted,
 * normalised plaintext with its part tree and the pre-rendered IMAP
 * structures, or a readable notice message when it cannot be decrypted for
 * this reader. Details, guarantees and limits: proxy/protect/INCOMING.md.
 *
 * How a reading protocol uses it (IMAP: IMAP.md "FETCH, step by step"):
 *
 *   1. At login: protect_in_reader_new(pi, login) - the logged-in
 *      identity, mapped to the mail addresses it may read for.
 *   2. For each message the server answers, the probe's header fields
 *      (PROTECT_IN_PROBE_FIELDS) go to protect_in_classify(): plain
 *      messages pass through untouched; encrypted ones come with an
 *      identity hint (from X-QKD-Key-ID) naming the ciphertext,
 *      independent of mailbox and UID.
 *   3. Items that need no body (RFC822.SIZE, BODYSTRUCTURE, BODY,
 *      ENVELOPE, BODY[HEADER], BODY[HEADER.FIELDS (...)] of the message
 *      itself, RFC822.HEADER): protect_in_lookup(..., PROTECT_IN_SUMMARY)
 *      answers at once from the memory cache or the vault's durable
 *      metadata when it can.
 *   4. Anything else, or a miss: protect_in_open(). The protocol's fetch
 *      callback delivers the raw encrypted message (IMAP: UID FETCH uid
 *      BODY.PEEK[]) into a private memfd; keys come from the vault or else
 *      the KME (stored in the vault before use); decryption and the part
 *      tree are built on the thread pool; the view comes back through the
 *      callback. Requests for the same message coalesce.
 *   5. Every content item is answered from the one view (sizes, rendered
 *      structures, imap_render_section() on protect_in_view_struct()), so
 *      all items agree, notices included.
 *
 * Who may read: a view or metadata is given only to a reader whose
 * addresses include one the message's copy is bound to (format 2
 * Recipient lines, authenticated by decryption), unless the configuration
 * says otherwise (recipient_check, release_unbound); anyone else gets a
 * notice. Keys are not fetched from the KME for a message no waiting
 * reader may read.
 *
 * Threading: everything here runs on the loop given to protect_in_new(),
 * views included (reference counts are not atomic). Blocking work (vault
 * writes, decryption, parsing) runs on libuv's thread pool.
 *
 * Callbacks follow libuv's rule: a call that fails synchronously (negative
 * return) never calls its callback; otherwise the callback runs exactly
 * once, on the loop, never from inside the submitting call.
 *
 * Secrets: plaintext lives only in memory owned by views (and the thread
 * that builds them); it is wiped (OPENSSL_cleanse) when the last reference
 * goes, never written to a named file or to the vault. Key bytes are wiped
 * after use. Nothing logs plaintext, key bytes or header values. */
#ifndef QUMAIL_PROTECT_INCOMING_H
#define QUMAIL_PROTECT_INCOMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kme_client.h"
#include "kme_source.h"
#include "kme_vault.h"
#include "mime_struct.h"
#include "policy.h"

/* ---- errors ---------------------------------------------------------------- */

enum protect_in_error {
    PROTECT_IN_OK = 0,
    PROTECT_IN_ENOMEM = -9001,
    PROTECT_IN_EINVAL = -9002,
    PROTECT_IN_ECANCELLED = -9003, /* protect_in_cancel() or protect_in_free() */
    PROTECT_IN_ETOOBIG = -9004,    /* fetch: above max_message_size */
    PROTECT_IN_EIO = -9005,        /* fetch: writing the private file failed */
};
const char *protect_in_strerror(int error);

/* ---- why a view is a notice ---------------------------------------------------- */

enum protect_in_reason {
    PROTECT_IN_DECRYPTED = 0,    /* not a notice: the sender's message */
    PROTECT_IN_R_MALFORMED,      /* claims to be encrypted, but broken */
    PROTECT_IN_R_UNSUPPORTED,    /* format version or algorithm unknown */
    PROTECT_IN_R_AUTH_FAILED,    /* altered in transit, or wrong key */
    PROTECT_IN_R_NOT_ALLOWED,    /* bound to recipients this reader is not */
    PROTECT_IN_R_UNBOUND,        /* bound to nobody, release_unbound off */
    PROTECT_IN_R_NO_IDENTITY,    /* the login maps to no address */
    PROTECT_IN_R_NO_SENDER_RULE, /* no policy sender rule for the sender */
    PROTECT_IN_R_SENDER_MISMATCH,/* master SAE, source KME or the inner From
                                    disagree with the sender rule */
    PROTECT_IN_R_NO_LINK,        /* the rule's KME link is not configured */
    PROTECT_IN_R_KME_UNAVAILABLE,/* KME down, timed out, or failing */
    PROTECT_IN_R_KEY_UNKNOWN,    /* the KME does not know the key (used up
                                    elsewhere, expired, or never made) */
    PROTECT_IN_R_KME_REFUSED,    /* the KME refused this SAE the keys */
    PROTECT_IN_R_KEY_SOURCE,     /* keys of a kind the sender rule's link
                                    cannot give (ETSI 004 chunks on a 014
                                    link or without a key source, 014 keys
                                    on a 004 link, both kinds mixed) */
    PROTECT_IN_R_VAULT,          /* the key vault failed (read, write, or a
                                    row failed authentication) */
    PROTECT_IN_R_FETCH,          /* the message could not be read from the
                                    server */
    PROTECT_IN_R_TOO_LARGE,      /* above max_message_size */
    PROTECT_IN_R_INTERNAL,       /* out of memory, I/O error */
};
#define PROTECT_IN_REASON_COUNT (PROTECT_IN_R_INTERNAL + 1)
/* Stable short name ("kme-unavailable"), used in logs and the notice. */
const char *protect_in_reason_name(enum protect_in_reason reason);

/* ---- configuration ----------------------------------------------------------- */

enum protect_in_recipient_check {
    /* A view only for readers whose addresses include a bound recipient
     * (the site gateway: many users, one vault). */
    PROTECT_IN_CHECK_STRICT = 0,
    /* Any logged-in reader (a personal proxy, or a site where every user
     * may read every message the site received). */
    PROTECT_IN_CHECK_OFF = 1,
};

/* One extra address for a login: shared mailboxes, forwarding. */
struct protect_in_address {
    const char *login;
    const char *address;
};

struct protect_in_config {
    uint64_t cache_max_bytes;   /* plaintext + structures in memory */
    size_t cache_max_views;     /* views in memory */
    uint64_t notice_ttl_ms;     /* a notice (and a KME link found down) is
                                   reused this long; 0: retried every read */
    uint64_t max_message_size;  /* encrypted message accepted from a fetch */
    uint64_t status_ttl_ms;     /* the source-KME check per link and master
                                   SAE is reused this long */
    size_t max_header_keep;     /* largest header block kept in metadata */
    enum protect_in_recipient_check recipient_check;
    bool release_unbound;       /* unbound copies (no Recipient line) go to
                                   any logged-in reader */
    /* Login -> addresses. A login containing '@' is its own address; one
     * without gets "@default_domain" when that is set (else it has none).
     * `addresses` (n_addresses entries, copied) adds addresses per login:
     * the shared mailboxes it reads, or the addresses whose mail is
     * forwarded to it. Logins compare exactly; addresses as format 2
     * normalises them (mime_address_normalize). */
    const char *default_domain;
    const struct protect_in_address *addresses;
    size_t n_addresses;

    /* Tests only (kill -9 tests, wipe checks); NULL in production.
     * stage(arg, name) runs at: "keys-received" (loop, dec_keys answer in
     * hand), "vault-put" / "vault-put-done" (worker, around the key
     * commit), "decrypt" (worker, keys committed, before decryption),
     * "built" (worker, view complete). wiped(arg, p, len) runs on the loop
     * when a plaintext buffer was wiped, right before it is freed. */
    void (*test_stage)(void *arg, const char *stage);
    void (*test_wiped)(void *arg, const uint8_t *p, size_t len);
    void *test_arg;
};

/* The defaults: cache 256 MiB / 10000 views, notice_ttl 3 s,
 * max_message_size 64 MiB, status_ttl 10 min, max_header_keep 64 KiB,
 * strict recipient check, unbound copies refused, no default domain. */
void protect_in_config_defaults(struct protect_in_config *cfg);

/* What protect_in uses and does not own; all must outlive it. */
struct protect_in_deps {
    uv_loop_t *loop;
    kme_vault *vault;             /* open; keys and metadata */
    policy_store *policies;       /* sender rules (current snapshot per read) */
    /* The KME client of a link name (the policy's link=), NULL when none
     * (or when the link is an ETSI 004 link). */
    kme_client *(*link)(void *arg, const char *name);
    void *link_arg;
    /* Optional: the key source of a link name (the daemon's
     * proxy_daemon_kme_source), NULL when none. Messages with ETSI 004
     * Key-Chunks take their chunks from it when it is a 004 source whose
     * stream (KSID) is the message's; without it they get the notice
     * key-source-unsupported. */
    kme_source *(*source)(void *arg, const char *name);
    void *source_arg;
};

typedef struct protect_in protect_in;

/* NULL and *error_r (caller frees) on invalid configuration (a bad
 * address in `addresses`) or out of memory. */
protect_in *protect_in_new(const struct protect_in_deps *deps,
                           const struct protect_in_config *cfg,
                           char **error_r);
/* Cancels every request (callbacks get PROTECT_IN_ECANCELLED before this
 * returns) and the KME requests of this instance, drops the cache, and
 * frees; work still running on the thread pool finishes quietly and its
 * memory is released when it returns to the loop (run the loop until it
 * has no more work before uv_loop_close). Fetches handed out stay valid
 * until their protect_in_fetch_done(). Clears *pi. */
void protect_in_free(protect_in **pi);

/* ---- readers: who is logged in ---------------------------------------------- */

typedef struct protect_in_reader protect_in_reader;

/* The identity the server authenticated (the IMAP LOGIN / AUTHENTICATE
 * authorisation identity), mapped to its addresses by the configuration.
 * NULL when out of memory. A reader with no address reads no bound copy
 * (under the strict check). Reference counted: requests in flight keep
 * their reader alive. */
protect_in_reader *protect_in_reader_new(protect_in *pi, const char *login);
void protect_in_reader_free(protect_in_reader **r);
const char *protect_in_reader_login(const protect_in_reader *r);
size_t protect_in_reader_address_count(const protect_in_reader *r);
const char *protect_in_reader_address(const protect_in_reader *r, size_t i);

/* ---- recognising encrypted messages ------------------------------------------ */

/* The header fields to fetch with a message's other items so that
 * protect_in_classify() can tell an encrypted message from a plain one
 * and name it: BODY.PEEK[HEADER.FIELDS (<these>)]. The trace fields name
 * which delivered copy of a ciphertext this is (their transit fields are
 * part of its view, INCOMING.md "Transit fields"); a probe without them
 * still works, but its hints never match and every read downloads. */
#define PROTECT_IN_PROBE_FIELDS                                                     \
    "CONTENT-TYPE X-QKD-KEY-ID RETURN-PATH RECEIVED RECEIVED-SPF DELIVERED-TO "     \
    "X-ORIGINAL-TO AUTHENTICATION-RESULTS"

/* hdr: header fields of the message (the probe's answer, or any header
 * block; CRLF or LF). Returns 0 for a plain message (pass it through), 1
 * for one that claims to be QuMail-encrypted (FORMAT-SPEC.md 2.6: answer
 * it from a view, never pass it through), negative on error (ENOMEM). For
 * 1, *hint_r is a malloc'd identity hint (from X-QKD-Key-ID), or NULL when
 * the header names none (the message can then only be opened, not looked
 * up). */
int protect_in_classify(const void *hdr, size_t len, char **hint_r);

/* ---- views ---------------------------------------------------------------------- */

typedef struct protect_in_view protect_in_view;

enum protect_in_need {
    /* Size, BODYSTRUCTURE, BODY, ENVELOPE and the message's own header
     * (BODY[HEADER], [HEADER.FIELDS (...)], [HEADER.FIELDS.NOT (...)],
     * RFC822.HEADER). */
    PROTECT_IN_SUMMARY = 1,
    /* Everything, body sections included. */
    PROTECT_IN_FULL = 2,
};

/* Synchronous lookup. Returns 1 and a reference in *view_r when a view
 * that satisfies `need` is available for this reader right now: a
 * complete view or a current notice from memory, or (SUMMARY) the durable
 * metadata from the vault (one indexed read, tens of microseconds). 0
 * when not (not cached, not stored, or not for this reader): open it.
 * Negative on error. hint: from protect_in_classify(). */
int protect_in_lookup(protect_in *pi, protect_in_reader *r, const char *hint,
                      enum protect_in_need need, protect_in_view **view_r);

/* The raw encrypted message, asked of the protocol side. */
typedef struct protect_in_fetch protect_in_fetch;

/* Called on the loop (never from inside protect_in_open) when this
 * request's message must be read from the server. The protocol side
 * writes the message's bytes, exactly as the server stores them (IMAP:
 * the literal of UID FETCH uid BODY.PEEK[]), with protect_in_fetch_write()
 * (or write(2) to protect_in_fetch_fd(), from its start, no seeking), and
 * then calls protect_in_fetch_done() exactly once - also when it gives up
 * (an error), also after its own request was cancelled. f stays valid
 * until then. When several requests wait for one message, only one of
 * them is asked; if its fetch fails, the next is. */
typedef void (*protect_in_fetch_fn)(void *arg, protect_in_fetch *f);

/* Appends len bytes. 0, PROTECT_IN_ETOOBIG (above max_message_size: stop
 * and call done), PROTECT_IN_EIO. */
int protect_in_fetch_write(protect_in_fetch *f, const void *data, size_t len);
/* The private memfd behind protect_in_fetch_write(), for writing directly. */
int protect_in_fetch_fd(const protect_in_fetch *f);
/* error: 0 when every byte is written, else any negative code (the
 * message is then shown as a notice, or fetched by another request). */
void protect_in_fetch_done(protect_in_fetch *f, int error);

/* error 0: view is a reference the callee owns (protect_in_view_unref);
 * always a view, a notice when it could not be decrypted for this reader.
 * error PROTECT_IN_ECANCELLED: view NULL. */
typedef void (*protect_in_view_cb)(void *arg, int error, protect_in_view *view);

/* Starts (or joins) building the complete view of the message named by
 * hint (may be NULL: the request then stands alone) for reader r. fetch
 * and fetch_arg: how to read the message; cb and arg: the answer. arg is
 * also the handle for protect_in_cancel(). 0, or negative (ENOMEM,
 * EINVAL) without calling anything. */
int protect_in_open(protect_in *pi, protect_in_reader *r, const char *hint,
                    protect_in_fetch_fn fetch, void *fetch_arg,
                    protect_in_view_cb cb, void *arg);

/* The same for a caller that receives the message's bytes anyway (IMAP:
 * BODY.PEEK[] added to the client's own FETCH, streamed as it arrives).
 * *fetch_r: a fetch handle to write them into (protect_in_fetch_write,
 * then protect_in_fetch_done exactly once, as for a fetch callback) when
 * this request starts a build; NULL when the answer needs no bytes from
 * it (from memory, or a build in progress for the same hint, which may in
 * rare cases - all its fetches fail, or its message is not the one the
 * hint names - end in a fetch-failed notice for this request). No
 * callback runs inside the call. */
int protect_in_open_supplied(protect_in *pi, protect_in_reader *r,
                             const char *hint, protect_in_fetch **fetch_r,
                             protect_in_view_cb cb, void *arg);

/* Cancels every request opened with this arg: their callbacks get
 * PROTECT_IN_ECANCELLED before this returns. A fetch already handed out
 * for them stays valid until its protect_in_fetch_done(). Returns how
 * many were cancelled. */
size_t protect_in_cancel(protect_in *pi, void *arg);

/* Views are immutable; all pointers stay valid while a reference is held. */
protect_in_view *protect_in_view_ref(protect_in_view *v);
/* Drops a reference; the last one wipes the plaintext. Clears *v. */
void protect_in_view_unref(protect_in_view **v);

/* A complete view holds the whole message; a summary view (from durable
 * metadata) only what PROTECT_IN_SUMMARY lists. */
bool protect_in_view_complete(const protect_in_view *v);
/* PROTECT_IN_DECRYPTED, or why this is a notice message. */
enum protect_in_reason protect_in_view_reason(const protect_in_view *v);
/* The message identity ("k/<first key ID>", "c/<KSID>/<first index>",
 * prefixed "t/<tag>/" when the delivered message has trace fields: see
 * INCOMING.md), NULL when unknown (a notice for a message whose control
 * data could not be read). */
const char *protect_in_view_id(const protect_in_view *v);
/* RFC822.SIZE: octets of the normalised message (CRLF line ends). */
uint64_t protect_in_view_size(const protect_in_view *v);
/* IMAP syntax, exactly as Dovecot renders the plaintext (imap_render.h):
 * the list after "BODYSTRUCTURE ", "BODY ", "ENVELOPE ". NUL-terminated;
 * *len_r (optional) gets the length. */
const char *protect_in_view_bodystructure(const protect_in_view *v, size_t *len_r);
const char *protect_in_view_body(const protect_in_view *v, size_t *len_r);
const char *protect_in_view_envelope(const protect_in_view *v, size_t *len_r);
/* The part tree for imap_render_section(): over the whole normalised
 * message (complete views), or over the message's header block only
 * (summary views: sections with path_len 0 and kind HEADER,
 * HEADER_FIELDS, HEADER_FIELDS_NOT give the same bytes as on the whole
 * message). NULL for a summary view whose header was too large to keep:
 * open the message for header items then. */
const struct mime_struct *protect_in_view_struct(const protect_in_view *v);

/* ---- counters ------------------------------------------------------------------------ */

struct protect_in_stats {
    uint64_t opens;          /* protect_in_open calls */
    uint64_t coalesced;      /* of which joined a build in progress */
    uint64_t lookups, lookup_hits_cache, lookup_hits_meta;
    uint64_t fetches;        /* fetch callbacks made */
    uint64_t builds;         /* builds started */
    uint64_t decrypted;      /* builds that decrypted */
    uint64_t notices;        /* builds that ended in a notice */
    uint64_t keys_from_vault, keys_from_kme;
    uint64_t kme_requests;   /* dec_keys calls */
    uint64_t meta_stored;    /* metadata rows written */
    uint64_t meta_kept;      /* metadata found stored already (no write) */
    size_t cached_views;
    uint64_t cached_bytes;
    uint64_t evictions;
    size_t in_flight;        /* builds in progress */
};
void protect_in_get_stats(const protect_in *pi, struct protect_in_stats *st);

#endif
