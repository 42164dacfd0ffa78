/* Internals of the simulator's ETSI GS QKD 004 server (kme/server/e4_*.c).
 * Not public; kme/ETSI004.md describes the behaviour and the link
 * messages.
 *
 *   e4.c         lifecycle per KME: listener, load, sweep, stop
 *   e4_qos.c     QoS negotiation and the counter-proposal (pure)
 *   e4_stream.c  streams and chunks in memory, their durable rows
 *   e4_ops.c     OPEN_CONNECT, GET_KEY and CLOSE: decisions, waiting
 *   e4_conn.c    the TLS connections of the 004 listener, framing
 *   e4_link.c    stream messages between the two KMEs (over the link)
 *   e4_store.c   SQLite tables and statements of the 004 state
 *
 * The model. A key stream (KSID) has two ends: one at this KME, one at the
 * peer KME. Exactly one of the two KMEs, the *owner* (the one whose kme_id
 * sorts first), registers streams and allocates chunks: it draws each
 * chunk from its outgoing key stream exactly like a 014 enc_keys draw
 * (acknowledged material only) and sends the peer a reservation "chunk i
 * of KSID = bytes [off, off+len)" in the same ordered reservation flow as
 * 014 keys. So 014 and 004 never hand out the same bytes, and both ends
 * hold the same bytes for the same index. The other KME asks the owner
 * (open requests, chunk requests, closes); the owner answers and keeps it
 * informed of each stream's state. Each KME delivers a chunk to its own
 * end's application at most once (GET_KEY), durably, and keeps an index
 * it has delivered or expired as "used" until the stream goes. */
#ifndef QUMAIL_KME_E4_INTERNAL_H
#define QUMAIL_KME_E4_INTERNAL_H

#include <jansson.h>

#include "etsi004.h"
#include "server_internal.h"

/* ---- streams and chunks (e4_stream.c) ------------------------------------- */

enum e4_end_state { E4_END_NONE = 0, E4_END_OPEN = 1, E4_END_CLOSED = 2 };
enum { E4_HERE = 0, E4_THERE = 1 }; /* index of the two ends in a stream */

/* One chunk known at this KME, for this KME's end. */
struct e4_chunk {
    struct e4_chunk *next;     /* hash chain */
    uint32_t index;
    uint8_t *key;              /* owned, wiped; NULL once used here */
    uint32_t len;
    uint64_t at_ms;            /* allocated (unix ms, the owner's clock) */
    uint64_t exp_ms;           /* erased after this (TTL) */
};

struct e4_stream {
    struct e4_stream *next;    /* hash chain */
    struct e4_stream *dirty_next;
    bool dirty;                /* in the dirty list: the peer should hear */
    uint8_t ksid[ETSI004_KSID_LEN];
    char text[ETSI004_KSID_TEXT_LEN + 1];
    bool registered;           /* non-owner: the owner confirmed it */
    struct etsi004_qos qos;
    char *src, *dst;           /* URIs of the registration (owned) */
    enum e4_end_state end[2];
    char *sae[2];              /* SAE that opened each end (owned) */
    uint32_t next_index;       /* owner: first index never allocated */
    uint32_t floor;            /* every index below it is used here */
    uint64_t last_ms;          /* last open/close/allocation (unix ms) */
    /* Chunks at or above floor known here, by index. */
    struct e4_chunk **chunks;
    size_t chunk_buckets, chunk_count;
    /* Committed view, for the peer (the owner's "s", the non-owner's
     * "x"): only what is durable is announced. */
    enum e4_end_state sent_end[2];
    uint32_t sent_next;
    /* Non-owner: the owner's last word on our end (reconciliation). */
    enum e4_end_state owner_view_here;
    bool seen;                 /* non-owner: mentioned in the owner's sync */
};

struct kme_e4;

struct e4_stream *e4_stream_find(struct kme_e4 *e, const uint8_t *ksid);
/* A new, empty stream entered in the table (NULL when out of memory). */
struct e4_stream *e4_stream_add(struct kme_e4 *e, const uint8_t *ksid);
/* Unlinks and frees a stream (keys wiped). */
void e4_stream_remove(struct kme_e4 *e, struct e4_stream *s);
struct e4_chunk *e4_chunk_find(const struct e4_stream *s, uint32_t index);
/* Enters a chunk (takes ownership of key). -1 out of memory. */
int e4_chunk_add(struct e4_stream *s, uint32_t index, uint8_t *key, uint32_t len,
                 uint64_t at_ms, uint64_t exp_ms);
/* True when index is used here: below floor, or known with no key. */
bool e4_chunk_used(const struct e4_stream *s, uint32_t index);

/* Durable rows: queue the stream's state / a chunk row / the floor trim
 * into the current batch. -1 out of memory (nothing queued). */
int e4_stream_save(struct kme *k, struct e4_stream *s);
int e4_chunk_save(struct kme *k, struct e4_stream *s, const struct e4_chunk *c);
/* Marks chunk c used (key wiped), advances floor over used chunks and
 * queues the rows. */
int e4_chunk_use(struct kme *k, struct e4_stream *s, struct e4_chunk *c);
/* Queues the deletion of the stream's rows and removes it. */
void e4_stream_drop(struct kme *k, struct e4_stream *s);

/* The stream state as stored and loaded (JSON text). */
char *e4_stream_state_json(const struct e4_stream *s);
int e4_stream_state_load(struct e4_stream *s, const char *json);

/* QoS <-> JSON array [chunk, max_bps, min_bps, jitter, priority, timeout,
 * ttl, "mimetype"] (link messages and stored state). */
json_t *e4_qos_to_json(const struct etsi004_qos *q);
/* any: zero fields allowed (a QoS as asked); else a granted QoS. */
int e4_qos_from_json(json_t *a, struct etsi004_qos *q, bool any);

/* After the commit of the current batch: the stream's committed view is
 * what it is now; the peer is told. */
void e4_stream_changed(struct kme *k, struct e4_stream *s);
void e4_dirty_push(struct kme_e4 *e, struct e4_stream *s);

/* ---- QoS (e4_qos.c) --------------------------------------------------------- */

struct kme_e4_cfg;
/* Fills out with the QoS this KME grants for a new stream. Returns 0 (out
 * is the negotiated QoS) or ETSI004_QOS_NOT_MET (out is the
 * counter-proposal: every field that cannot be met replaced by the
 * nearest value that can). rate_bps: the link's secret key rate. */
uint32_t e4_qos_negotiate(const struct kme_e4_cfg *cfg, uint64_t rate_bps,
                          const struct etsi004_qos *in, struct etsi004_qos *out);

/* Owner: draws chunk index of s (acknowledged material only, like a 014
 * draw), queues its reservation for the peer and its rows (the key row only
 * when keep_row: a chunk handed to this end's application in the same
 * batch never reaches the file). NULL when the material is short. */
struct e4_chunk *e4_allocate(struct kme *k, struct e4_stream *s, uint32_t index,
                             bool keep_row);

/* ---- the 004 state of one KME (e4.c) ---------------------------------------- */

struct e4_conn;
struct e4_wait;
struct e4_ctl;

#define E4_RECENT 1024 /* owner: remembered "next" allocations by request */

struct kme_e4 {
    struct kme *k;
    bool owner;                  /* this KME registers and allocates */
    net_listener *listener;
    struct e4_stream **buckets;
    size_t bucket_count, count;
    struct e4_stream *dirty_first, **dirty_tail;
    struct e4_conn *conns;
    size_t conn_count;           /* authenticated */
    size_t hs_count;             /* in the TLS handshake */
    uint64_t next_conn_id;
    struct e4_wait *waits;       /* requests waiting for something */
    size_t wait_count;
    struct e4_ctl *ctl_first, **ctl_tail; /* lines for the peer KME */
    size_t ctl_bytes;
    uint64_t next_req;           /* non-owner: ids of requests to the owner */
    bool sync_pending;           /* owner: a full sync is due ("sa" .. "se") */
    bool sync_open;              /* owner: "sa" sent, "se" not yet */
    struct { uint64_t req; uint8_t ksid[ETSI004_KSID_LEN]; uint32_t index; }
        recent[E4_RECENT];       /* owner: answers to "next" requests */
    size_t recent_pos;
    uint64_t last_ttl_sweep;     /* uv_now() */
};

/* The current time for timestamps (unix ms) and deadlines (uv_now). */
uint64_t e4_now(void);
/* The link to the peer is up in both directions. */
bool e4_link_up(struct kme *k);

/* ---- requests (e4_ops.c) -------------------------------------------------------- */

struct e4_wait {
    struct e4_wait *next;
    struct e4_conn *conn;        /* cleared when the connection goes */
    uint8_t service;             /* OPEN_CONNECT or GET_KEY request */
    uint8_t ksid[ETSI004_KSID_LEN];
    bool assigned;               /* OPEN: the KSID was NULL, assigned here */
    char *src, *dst;             /* OPEN (owned) */
    struct etsi004_qos qos;      /* OPEN: negotiated */
    uint32_t index;              /* GET (ETSI004_INDEX_NEXT until known) */
    uint32_t metadata_size;      /* GET */
    uint64_t req;                /* non-owner: id of the request to the owner */
    bool asked;                  /* non-owner: the request went out */
    bool answered;               /* non-owner: the owner answered */
    uint32_t owner_status;       /* non-owner: the owner's answer */
    uint64_t t0;                 /* uv_now() at arrival */
    uint64_t deadline;           /* uv_now() */
    uint64_t retry_at;           /* uv_now(): ask the owner again */
    char sae[ETSI014_ID_MAX + 1];
};

/* A request decoded from a frame: answered now or parked (then answered
 * by e4_wake or at its deadline). The connection gets exactly one answer
 * through e4_conn_answer. 0, or -1 when the payload is malformed (the
 * connection is closed; nothing was answered). */
int e4_handle(struct kme *k, struct e4_conn *c, const char *sae, uint8_t service,
              const uint8_t *payload, size_t len);
/* Re-examines every waiting request (something changed, or time passed);
 * all: answer every one now (stopping). */
void e4_wake(struct kme *k, bool all);
/* The connection of w went away: w is dropped at the next wake. */
void e4_wait_orphan(struct e4_wait *w);
void e4_wait_free(struct e4_wait *w);

/* ---- connections (e4_conn.c) --------------------------------------------------- */

void e4_accept(net_listener *l, net_conn *conn, void *arg);
/* Answers the connection's request with frame (taken over; wiped when
 * secret). After the commit of the current batch when anything is
 * uncommitted, else now. c may have closed meanwhile (then dropped). */
void e4_conn_answer(struct kme *k, struct e4_conn *c, uint8_t *frame, size_t len,
                    bool secret, const char *what);
/* The request's waiter went or came (a connection holds at most one). */
void e4_conn_set_wait(struct e4_conn *c, struct e4_wait *w);
void e4_conn_close_all(struct kme *k);
/* For log lines: "conn=N addr". */
const char *e4_conn_name(const struct e4_conn *c);

/* ---- the link (e4_link.c) ------------------------------------------------------- */

/* Queues a line (JSON object, consumed) for the peer KME. */
void e4_ctl_send(struct kme *k, json_t *msg);
void e4_ctl_clear(struct kme_e4 *e);
/* Non-owner: asks the owner for what w waits for (open or chunk). */
void e4_ask_owner(struct kme *k, struct e4_wait *w);

/* ---- store (e4_store.c) ---------------------------------------------------------- */

struct kme_e4_store;
/* SQL creating the 004 tables (run with the store's schema). */
extern const char kme_e4_schema[];
int kme_e4_store_open(sqlite3 *db, struct kme_e4_store **st_r);
void kme_e4_store_close(struct kme_e4_store **st);
int kme_e4_store_apply(struct kme_e4_store *st, const struct kme_op *op);
/* Deletes 004 reservations the peer has applied (off + len <= applied). */
int kme_e4_store_trim(struct kme_e4_store *st, uint64_t applied);
/* Loads streams and chunks into e, and the 004 reservations into the
 * KME's outbox in offset order. */
int kme_e4_store_load(struct kme_e4_store *st, struct kme *k, char **error_r);

#endif
