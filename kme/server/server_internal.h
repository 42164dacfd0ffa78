/* Internals shared by the KME simulator's files (kme/server/). Not public.
 *
 *   config.c   configuration file -> struct kme_cfg (qcfg reader)
 *   pool.c     in-memory state: key streams, held keys, outbox
 *   store.c    SQLite schema, load, batch commit (runs on the committer)
 *   commit.c   group commit: batches, the committer thread, completions
 *   kme.c      one KME: generation timer, expiry sweep, lifecycle
 *   http.c     HTTPS connections: llhttp parsing, limits, keep-alive
 *   api.c      the three ETSI 014 endpoints
 *   link.c     the KME-to-KME link: shared helpers (link_internal.h)
 *   link_out.c its sender (master side), link_in.c its receiver
 *   server.c   kme_server_start/stop over one or two KMEs */
#ifndef QUMAIL_KME_SERVER_INTERNAL_H
#define QUMAIL_KME_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <llhttp.h>
#include <uv.h>

#include "etsi014.h"
#include "kme_server.h"
#include "net.h"

typedef struct sqlite3 sqlite3;

/* ---- configuration of one KME (config.c) ------------------------------ */

struct kme_cfg {
    char *kme_id;
    char *listen_host;          /* HTTPS (014) listener */
    uint16_t listen_port;
    char *cert_file, *key_file, *ca_file;
    char *sae_id_field;         /* certificate subject field, "CN" */
    char **sae_ids;             /* SAEs allowed to call; count 0: any */
    size_t sae_count;
    char *database;             /* SQLite file */
    char *link_host;            /* link listener */
    uint16_t link_port;
    char *peer_kme_id;
    char *peer_host;            /* NULL: the peer is in this config */
    uint16_t peer_port;
    int64_t key_size, min_key_size, max_key_size;
    int64_t max_key_per_request, max_key_count, max_sae_id_count;
    uint64_t rate_bps;          /* secret key rate, bits per second */
    uint64_t key_expiry_ms;     /* held keys; 0: never expire */
    uint64_t dec_wait_ms;       /* dec_keys wait for keys in transit */
    uint64_t redeliver_ms;      /* a collected key stays collectable by
                                   the same slave this long; 0: deleted */
    bool sync_full;             /* PRAGMA synchronous=FULL (else NORMAL) */
    uint64_t idle_timeout_ms;
    uint64_t max_body;          /* request body limit, bytes */
    uint64_t max_connections;   /* authenticated (TLS done) connections */
    uint64_t handshake_timeout_ms; /* a TLS handshake must end within */
    uint64_t max_handshakes;    /* handshakes at once; the oldest goes */
    struct kme_e4_cfg {         /* the ETSI 004 listener (kme/ETSI004.md) */
        bool enabled;           /* an "etsi004" object is configured */
        char *host;
        uint16_t port;
        uint32_t chunk_default, chunk_min, chunk_max;   /* bytes */
        uint32_t timeout_default_ms, timeout_max_ms;
        uint32_t ttl_default_s, ttl_max_s;
        uint64_t max_streams, max_connections;
        uint64_t handshake_timeout_ms, idle_timeout_ms;
    } e4;
};

struct kme_server_config {
    struct kme_cfg kmes[2];
    size_t count;
};

int kme_cfg_copy(struct kme_cfg *dst, const struct kme_cfg *src);
void kme_cfg_clear(struct kme_cfg *c);
/* Pool capacity in bytes: max_key_count keys of key_size bits. */
uint64_t kme_cfg_pool_bytes(const struct kme_cfg *c);

/* ---- key stream (pool.c) ----------------------------------------------- */

/* A byte stream of shared key material with absolute offsets: bytes
 * [head, tail) are held, in buf starting at offset base. Sizes are served
 * in whole bytes, so a bit-exact draw is a byte-exact draw. Consumed bytes
 * are wiped. */
struct kme_stream {
    uint8_t *buf;
    size_t cap;
    uint64_t base, head, tail;
};

void kme_stream_init(struct kme_stream *s, uint64_t off);
void kme_stream_clear(struct kme_stream *s);
uint64_t kme_stream_len(const struct kme_stream *s);
/* Appends bytes at offset off, which must equal tail. 0 or -1 (offset
 * mismatch or out of memory). */
int kme_stream_append(struct kme_stream *s, uint64_t off, const uint8_t *data,
                      size_t len);
/* Copies [head, head+len) to out (may be NULL to discard), wipes it and
 * advances head. -1 when fewer than len bytes are held. */
int kme_stream_take(struct kme_stream *s, size_t len, uint8_t *out);
/* Pointer to bytes [off, off+len) (must be held). */
const uint8_t *kme_stream_at(const struct kme_stream *s, uint64_t off,
                             size_t len);

/* ---- keys held for slave SAEs (pool.c) --------------------------------- */

struct kme_held {
    char key_id[ETSI014_UUID_LEN + 1];
    uint64_t off;               /* stream offset: its row key in the store */
    char *master;
    char **slaves;              /* slaves that have not collected it yet */
    size_t slave_count;
    /* Slaves that collected it within the redelivery grace (redeliver_ms):
     * they may collect it again until delivered_ms + redeliver_ms. */
    char **delivered;
    uint64_t *delivered_ms;     /* unix ms */
    size_t delivered_count;
    uint8_t *key;
    size_t key_len;             /* bytes */
    uint64_t expires_ms;        /* unix ms; 0: never */
    struct kme_held *next;      /* hash chain */
};

struct kme_held_table {
    struct kme_held **buckets;
    size_t bucket_count, count;
};

int kme_held_init(struct kme_held_table *t);
void kme_held_free_all(struct kme_held_table *t);
struct kme_held *kme_held_find(const struct kme_held_table *t,
                               const char *key_id);
/* Takes ownership of h (allocated with kme_held_new). -1 if the ID exists. */
int kme_held_insert(struct kme_held_table *t, struct kme_held *h);
struct kme_held *kme_held_new(const char *key_id, const char *master,
                              const char *const *slaves, size_t slave_count,
                              const uint8_t *key, size_t key_len,
                              uint64_t expires_ms);
/* Index of slave in h->slaves or -1. */
int kme_held_slave_index(const struct kme_held *h, const char *slave);
/* Moves slave slave_index of h to the delivered list at now_ms (the
 * redelivery grace). -1 when out of memory (nothing changed). */
int kme_held_deliver(struct kme_held *h, size_t slave_index, uint64_t now_ms);
/* Index of slave in h->delivered or -1. */
int kme_held_delivered_index(const struct kme_held *h, const char *slave);
/* Drops delivered entry i (its grace ended); when no slave remains,
 * unlinks and frees h. Returns true when h was freed. The slave string is
 * handed to *slave_r (caller frees) when slave_r is not NULL. */
bool kme_held_undeliver(struct kme_held_table *t, struct kme_held *h, size_t i,
                        char **slave_r);
/* Removes slave from h (collected); when none remain (delivered ones
 * included), unlinks and frees h (key wiped). Returns true when h was
 * freed. */
bool kme_held_collect(struct kme_held_table *t, struct kme_held *h,
                      size_t slave_index);
void kme_held_destroy(struct kme_held_table *t, struct kme_held *h);
/* Frees an entry that is in no table. */
void kme_held_free(struct kme_held *h);

/* ---- reservations sent to the peer, not yet acknowledged (pool.c) ------ */

struct kme_reservation {
    uint64_t off;
    uint32_t len;               /* bytes */
    char key_id[ETSI014_UUID_LEN + 1]; /* 004: the KSID */
    char *master;               /* 004: NULL */
    char *slaves_json;          /* JSON array of slave SAE IDs; 004: NULL */
    bool e4;                    /* an ETSI 004 chunk (kme/ETSI004.md) */
    uint32_t e4_index;
    uint64_t e4_at, e4_exp;
};

struct kme_outbox {
    struct kme_reservation *items; /* ring */
    size_t cap, first, count;
};

void kme_outbox_clear(struct kme_outbox *q);
/* Makes room for n more entries: pushes after it cannot fail. */
int kme_outbox_reserve(struct kme_outbox *q, size_t n);
/* Takes ownership of r->master and r->slaves_json. 0 or -1 (no memory). */
int kme_outbox_push(struct kme_outbox *q, struct kme_reservation *r);
struct kme_reservation *kme_outbox_at(struct kme_outbox *q, size_t i);
/* Drops entries that end at or before applied. */
void kme_outbox_drop_until(struct kme_outbox *q, uint64_t applied);

/* ---- durable store (store.c) ------------------------------------------- */

enum kme_op_kind {
    KME_OP_OUT_MATERIAL, /* off, data: generated material (outgoing stream) */
    KME_OP_IN_MATERIAL,  /* off, data: material received from the peer */
    KME_OP_OUTBOX_ADD,   /* reservation */
    KME_OP_HELD_ADD,     /* key held for one slave (off, key_id, ...) */
    KME_OP_HELD_DEL,     /* key collected by (or expired for) one slave
                            (off, slave) */
    /* ETSI 004 (e4_store.c); key_id holds the KSID text. */
    KME_OP_E4_STREAM,    /* master: the stream's state (JSON) */
    KME_OP_E4_STREAM_DEL, /* the stream and its chunks */
    KME_OP_E4_CHUNK,     /* e4_index, data/len (NULL: used here), e4_at,
                            expires_ms */
    KME_OP_E4_CHUNK_TRIM, /* chunk rows below e4_index (the floor) */
    KME_OP_E4_OUTBOX_ADD, /* off, len, e4_index, e4_at, expires_ms */
};

struct kme_op {
    enum kme_op_kind kind;
    uint64_t off;
    uint8_t *data;           /* owned, wiped */
    size_t len;
    char key_id[ETSI014_UUID_LEN + 1];
    char *master, *slave, *slaves_json; /* owned */
    uint64_t expires_ms;
    uint64_t e4_index, e4_at;  /* ETSI 004 ops */
};

/* Counters persisted with every batch (snapshot at submit time). */
struct kme_meta {
    uint64_t out_head, out_acked, out_applied, in_head;
};

typedef void (*kme_done_fn)(void *arg, int status);

struct kme_batch {
    struct kme_op *ops;
    size_t op_count, op_cap;
    struct kme_meta meta;
    uint64_t out_tail, in_tail; /* stream tails at submit time */
    struct {
        kme_done_fn fn;
        void *arg;
    } *done;
    size_t done_count, done_cap;
    int result;              /* 0 committed, <0 failed */
    char *error;             /* detail on failure */
    struct kme_batch *next;  /* committed, waiting for the loop */
};

struct kme_store;
/* Opens (creating) the database, applies pragmas and schema. */
int kme_store_open(const char *path, bool sync_full, struct kme_store **st_r,
                   char **error_r);
void kme_store_close(struct kme_store **st);
/* Loads the state into the (initialised, empty) structures. */
int kme_store_load(struct kme_store *st, struct kme_meta *meta,
                   struct kme_stream *out, struct kme_stream *in,
                   struct kme_outbox *outbox, struct kme_held_table *held,
                   char **error_r);
/* Runs one batch in one transaction (committer thread). */
void kme_store_commit(struct kme_store *st, struct kme_batch *b);

void kme_batch_free(struct kme_batch **b);

/* ---- one KME (kme.c) ---------------------------------------------------- */

struct kme;
struct http_conn;
struct link_out;
struct link_in;
struct kme_parked;

struct kme {
    struct kme_server *server;
    uv_loop_t *loop;
    struct kme_cfg cfg;
    net_tls *tls_server, *tls_client;
    net_listener *api_listener, *link_listener;
    struct kme_store *store;

    struct kme_stream out;    /* my outgoing stream: I am the master side */
    uint64_t out_committed;   /* generated material durable here */
    uint64_t out_head_committed; /* draws durable here (sendable) */
    uint64_t out_acked;       /* material durable at the peer */
    uint64_t out_applied;     /* reservations applied at the peer */
    struct kme_outbox outbox;
    struct kme_stream in;     /* the peer's stream, for my slave SAEs */
    struct kme_held_table held;
    uint64_t in_committed_tail, in_committed_head; /* what we may ack */
    uint64_t link_retry_ms;   /* next connection attempt (uv_now) */
    bool link_down_logged;    /* the current outage was logged */

    uv_timer_t gen_timer, sweep_timer, flush_timer;
    int timers_open;
    uint64_t gen_last_ms;
    uint64_t gen_carry;       /* bits generated but not yet a whole byte */

    /* Group commit (commit.c): the loop collects changes in pending and
     * merges them into ready; the committer thread commits ready, one
     * transaction at a time, back to back, and hands committed batches
     * back through commit_async. */
    struct kme_batch *pending;   /* loop only: collecting */
    size_t in_commit;            /* loop only: batches handed over, not back */
    bool committer_started;
    uv_thread_t committer;
    uv_async_t commit_async;
    uv_mutex_t mu;               /* guards the fields below */
    uv_cond_t cv;
    struct kme_batch *ready;     /* next to commit; grows until taken */
    struct kme_batch *done, **done_tail; /* committed, for the loop */
    bool commit_quit, committer_exited;
    bool failed;                 /* a commit failed: answer 503 */
    bool stopping;

    struct link_out *lo;
    struct link_in *li;          /* the verified incoming link */
    struct link_in *li_all;      /* every incoming link connection */
    struct kme_parked *parked;   /* dec_keys waiting for keys (api.c) */
    size_t parked_count;
    struct kme_e4 *e4;           /* the ETSI 004 server (e4*.c), or NULL */
    struct http_conn *conns;     /* list of open HTTPS connections */
    size_t conn_count;           /* authenticated ones (max_connections) */
    /* Connections still in the TLS handshake, oldest first: they hold no
     * authenticated slot, and when max_handshakes are under way the
     * oldest is dropped for a newcomer (a flood of half-open handshakes
     * cannot lock real SAEs out). */
    struct http_conn *hs_first, *hs_last;
    size_t hs_count;
    uint64_t hs_evicted;         /* handshakes dropped, for the log */
    uint64_t next_conn_id;
};

int kme_init(struct kme *k, struct kme_server *srv, uv_loop_t *loop,
             const struct kme_cfg *cfg, char **error_r);
/* Starts timers and the link after every KME of the server is bound. */
void kme_run(struct kme *k);
/* Begins stopping; returns the number of handles still closing. */
void kme_stop(struct kme *k);
bool kme_stopped(const struct kme *k);
void kme_destroy(struct kme *k);

/* commit.c: starts the committer thread (kme_run), asks it to stop after
 * the commit in progress (kme_stop; the batch not yet started is answered
 * 503), frees what is left (kme_destroy). */
int kme_commit_start(struct kme *k);
void kme_commit_stop(struct kme *k);
void kme_commit_destroy(struct kme *k);

/* Current batch to add ops/completions to (allocated on demand); NULL when
 * out of memory. Call kme_flush() after adding. */
struct kme_batch *kme_batch(struct kme *k);
/* Makes room for n more ops: kme_batch_op cannot fail after it. */
int kme_batch_reserve(struct kme_batch *b, size_t n);
/* Appends a zeroed op of that kind; NULL when out of memory. */
struct kme_op *kme_batch_op(struct kme_batch *b, enum kme_op_kind kind);
int kme_batch_on_done(struct kme_batch *b, kme_done_fn fn, void *arg);
/* Removes the not yet committed HELD_ADD of (off, slave) from b, when it is
 * there: a key collected in the batch that stores it is never written.
 * True when one was removed. */
bool kme_batch_cancel_held_add(struct kme_batch *b, uint64_t off,
                               const char *slave);
/* Hands the pending changes to the committer: they are committed with the
 * transaction that starts next. */
void kme_flush(struct kme *k);
/* For changes nobody is waiting on (link material and reservations, acks,
 * generation, expiry): commits them with the next batch that carries an
 * answer, or after a few milliseconds, so that a dec_keys arriving just
 * after its reservation shares one commit with it. */
void kme_flush_lazy(struct kme *k);

uint64_t kme_now_ms(void);
/* Bytes the master side may draw now: acknowledged by the peer. */
uint64_t kme_out_available(const struct kme *k);

/* Called by the server when another KME of the same process binds its
 * link listener (peer_host NULL in the config). */
void kme_server_peer_addr(struct kme_server *srv, const char *kme_id,
                          const char **host_r, uint16_t *port_r);

/* ---- HTTP request parser (http_parse.c) -------------------------------- */

#define KME_HTTP_MAX_TARGET 4096
#define KME_HTTP_MAX_HEADERS 64
#define KME_HTTP_MAX_HEADER_BYTES 16384 /* field names and values together */

enum kme_http_parse {
    KME_HTTP_MORE,    /* all input consumed, the request goes on */
    KME_HTTP_REQUEST, /* a request is complete: handle it, then _next() */
    KME_HTTP_BAD,     /* malformed or over a limit: answer limit_status, close */
};

/* One request at a time; the strings are NUL-terminated. */
struct kme_http_parser {
    llhttp_t parser;          /* first: its data points back here */
    uint64_t max_body;
    char target[KME_HTTP_MAX_TARGET + 1];
    size_t target_len;
    char *body;               /* owned; NULL until a body byte came */
    size_t body_len, body_cap;
    char method[16];
    int limit_status;         /* 413/414/431/503, or 400 when malformed */
    size_t header_count, header_bytes;
    char hname[16], hvalue[16]; /* current field, only to spot Expect */
    size_t hname_len, hvalue_len;
    bool expect_continue;
    bool continue_due;        /* headers asked for 100 Continue: send it */
    bool keep_alive;
};

void kme_http_parser_init(struct kme_http_parser *hp, uint64_t max_body);
void kme_http_parser_clear(struct kme_http_parser *hp);
/* Consumes input (*used_r bytes; less than len only at a request's end). */
enum kme_http_parse kme_http_parser_feed(struct kme_http_parser *hp, const char *data,
                                         size_t len, size_t *used_r);
/* After a request was handled: parse the next one (keep-alive). */
void kme_http_parser_next(struct kme_http_parser *hp);

/* ---- HTTPS (http.c) ---------------------------------------------------- */

void kme_http_accept(net_listener *l, net_conn *conn, void *arg);
void kme_http_close_all(struct kme *k);

/* A parsed request handed to the API. Pointers valid until responded. */
struct kme_request {
    const char *method;       /* "GET", "POST", ... */
    const char *target;       /* path and query */
    size_t target_len;
    const char *body;
    size_t body_len;
    const char *sae_id;       /* caller, from the client certificate */
};

/* Sends the response (JSON body, copied; wiped after use when secret). */
void kme_http_respond(struct http_conn *hc, int status, const char *body,
                      size_t len, bool secret);
/* Records the per-request log fields. */
void kme_http_log_keys(struct http_conn *hc, size_t keys, uint64_t bits);
/* Error response {"message": ...}. */
void kme_http_error(struct http_conn *hc, int status, const char *message);

/* ---- API (api.c) -------------------------------------------------------- */

void kme_api_handle(struct kme *k, struct http_conn *hc,
                    const struct kme_request *req);
/* Re-examines parked dec_keys requests (after keys arrived, on the sweep
 * timer); all: answer every one now (stopping). */
void kme_api_wake(struct kme *k, bool all);

/* ---- link (link.c) ------------------------------------------------------ */

void kme_link_accept(net_listener *l, net_conn *conn, void *arg);
/* Connects to the peer when not connected (called by the sweep timer). */
void kme_link_tick(struct kme *k);
/* New committed material or reservations to send. */
void kme_link_kick(struct kme *k);
void kme_link_close_all(struct kme *k);
/* The link's sender to the peer is connected and past its hello. */
bool kme_link_out_ready(const struct kme *k);
bool kme_link_in_ready(const struct kme *k);

/* ---- ETSI GS QKD 004 (e4*.c, e4_internal.h) ----------------------------- */

/* Binds the 004 listener and loads the 004 state (no-op when not
 * configured). */
int kme_e4_init(struct kme *k, char **error_r);
void kme_e4_tick(struct kme *k);            /* sweep: deadlines, TTL */
void kme_e4_wake(struct kme *k);            /* state changed: retry waiters */
void kme_e4_stop(struct kme *k);
bool kme_e4_stopped(const struct kme *k);
void kme_e4_destroy(struct kme *k);
uint16_t kme_e4_port(const struct kme *k);  /* 0: no 004 listener */
/* The link: a direction became ready / went down. */
void kme_e4_link_up(struct kme *k);
void kme_e4_link_down(struct kme *k);
/* Writes the 004 stream messages due to the peer (link_out pump). */
void kme_e4_link_pump(struct kme *k, net_conn *conn);
/* A link message of type t: 1 handled, 0 not a 004 message, -1 protocol
 * error (the link is closed). *changed: state changed (flush). */
int kme_e4_link_msg(struct kme *k, const char *t, json_t *msg, bool *changed);
/* The "c" line of a 004 reservation into buf; its length (0: too small). */
size_t kme_e4_reservation_line(const struct kme_reservation *r, char *buf,
                               size_t cap);
/* store.c hooks */
struct kme_e4_store;
struct kme_e4_store *kme_store_e4(struct kme_store *st);

#endif
