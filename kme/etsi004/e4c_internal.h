/* Internals of the ETSI 004 client (the files of kme/etsi004/). Not public: the
 * interface is kme/etsi004_client.h.
 *
 *   e4c_pool.c    connections (TCP + TLS), one request at a time each,
 *                 the FIFO queue, deadlines, frames in and out
 *   e4c_client.c  the primitives (open, get_key, close), configuration
 *   e4c_chunks.c  chunk lists (next_chunks, fetch_chunks) as kme_keys
 *   e4c_sync.c    blocking wrappers for command-line tools */
#ifndef QUMAIL_KME_E4C_INTERNAL_H
#define QUMAIL_KME_E4C_INTERNAL_H

#include "../client/client_internal.h"
#include "etsi004_client.h"
#include "net.h"

struct e4c_req;
struct e4c_pool;

/* Completion of one exchange: error KME_OK with the answer's service type
 * and payload (valid during the call; wiped afterwards), or a KME_E* code
 * with a detail text. */
typedef void (*e4c_done_fn)(struct e4c_req *req, int error, uint8_t service,
                            const uint8_t *payload, size_t len, const char *detail);

struct e4c_req {
    struct e4c_req *next;       /* queue */
    uint8_t *frame;             /* request frame (owned, wiped) */
    size_t frame_len;
    uint8_t want;               /* the response service type expected */
    uint64_t wait_ms;           /* the KME may block this long */
    e4c_done_fn done;
    void *op;                   /* the operation it belongs to */
    void *arg;                  /* the caller's arg (cancellation) */
    bool cancelled;             /* in flight, answer to be dropped */
    bool in_flight;
};

struct e4c_pool_config {
    const char *host;
    uint16_t port;
    net_tls *tls;
    const char *server_name;
    const char *expect_kme_id;
    unsigned max_connections;
    uint64_t connect_timeout_ms;
    uint64_t request_timeout_ms;
    uint64_t idle_timeout_ms;
};

struct e4c_pool *e4c_pool_new(uv_loop_t *loop, const struct e4c_pool_config *cfg);
/* Pending requests complete with KME_ECANCELLED (before it returns). */
void e4c_pool_free(struct e4c_pool **pool);
/* Queues req (the pool owns it from now; done is called exactly once,
 * never from inside this call, then the pool frees req). */
void e4c_pool_submit(struct e4c_pool *pool, struct e4c_req *req);
/* Cancels req: done is not called. Queued: freed now; in flight: its
 * answer is dropped when it comes (the connection is kept). */
void e4c_pool_cancel(struct e4c_pool *pool, struct e4c_req *req);
/* The KME certificate's CN as seen on the last connection, or NULL. */
const char *e4c_pool_kme_id(const struct e4c_pool *pool);

void e4c_req_free(struct e4c_req *req);

/* ---- the client (e4c_client.c) and its chunk lists (e4c_chunks.c) -------- */

struct e4c_batch;

struct etsi004_client {
    uv_loop_t *loop;
    net_tls *tls;
    struct e4c_pool *pool;
    char sae_id[ETSI014_ID_MAX + 1];
    struct op *ops;             /* primitives in progress (cancellation) */
    struct e4c_batch *batches;  /* chunk lists in progress */
    bool freeing;
};

/* One primitive in progress. */
struct op {
    struct op *next;
    etsi004_client *c;
    struct e4c_req *req;
    void *arg;
    uint8_t service;
    union {
        etsi004_open_cb open;
        etsi004_get_cb get;
        etsi004_close_cb close;
    } cb;
};

/* Cancels the chunk lists submitted with arg (their callbacks get
 * KME_ECANCELLED); returns how many. */
size_t e4c_batches_cancel(etsi004_client *c, void *arg);

#endif
