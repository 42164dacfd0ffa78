/* Internals shared by the files of the KME client (the .c files in kme/client/).
 * Not a public header: the module's interface is kme/kme_client.h. */
#ifndef QUMAIL_KME_CLIENT_INTERNAL_H
#define QUMAIL_KME_CLIENT_INTERNAL_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "etsi014.h"
#include "kme_client.h"
#include "net.h"

/* ---- split.c: request splitting math ------------------------------------ */

/* The limits the splitter needs (bits, from the KME's Status). */
struct kme_split_limits {
    uint64_t min_key_size;
    uint64_t max_key_size;
    uint64_t max_key_per_request;
};

/* A plan is at most three groups of equal-sized keys: some keys of the
 * largest allowed size, at most one key of an intermediate size and at most
 * one of the smallest; their sizes sum to exactly the requested bits. */
#define KME_SPLIT_MAX_GROUPS 3
struct kme_split_group {
    uint64_t count;
    uint64_t size_bits; /* multiple of 8 */
};
struct kme_split_plan {
    struct kme_split_group groups[KME_SPLIT_MAX_GROUPS];
    size_t ngroups;
    uint64_t keys;  /* total number of keys */
    uint64_t calls; /* enc_keys calls needed (per max_key_per_request) */
};

/* Largest total the client accepts in one kme_client_enc_bits() (bits). */
#define KME_SPLIT_MAX_TOTAL_BITS ((uint64_t)1 << 33) /* 1 GiB of key */

/* Fills plan for exactly total_bits. Returns 0, KME_EINVAL (total not a
 * positive multiple of 8, or above KME_SPLIT_MAX_TOTAL_BITS) or
 * KME_ELIMITS (no allowed sizes sum to total_bits, or limits unusable). */
int kme_split(const struct kme_split_limits *lim, uint64_t total_bits,
              struct kme_split_plan *plan);

/* ---- http_resp.c: HTTP/1.1 response parser (llhttp), no I/O ------------- */

struct kme_http_resp {
    llhttp_t parser;
    llhttp_settings_t settings;
    int status;           /* HTTP status code once known */
    bool complete;        /* a whole response was parsed */
    bool keep_alive;      /* the connection may carry the next request */
    bool started;         /* at least one byte was fed */
    char *body;           /* owned; wiped when freed (may hold keys) */
    size_t body_len;
    size_t body_cap;
    size_t max_body;
    const char *error;    /* static text after a failure */
};

/* Initialises for one response; max_body limits the body length. */
void kme_http_resp_init(struct kme_http_resp *r, size_t max_body);
/* Parses up to len bytes. Returns 1 when the response is complete (with
 * *consumed_r bytes used; the rest belongs to no response), 0 when more is
 * needed (all consumed), or KME_EBADRESPONSE (r->error says why). */
int kme_http_resp_feed(struct kme_http_resp *r, const char *data, size_t len,
                       size_t *consumed_r);
/* The peer closed: completes a body delimited by the connection's end.
 * Returns 1 when the response is complete, else KME_EBADRESPONSE/KME_EIO. */
int kme_http_resp_eof(struct kme_http_resp *r);
/* Wipes and frees the body; r may be reused after kme_http_resp_init(). */
void kme_http_resp_clear(struct kme_http_resp *r);

/* ---- errors.c ----------------------------------------------------------- */

enum kme_op_kind { KME_OP_STATUS, KME_OP_ENC, KME_OP_DEC };

/* Maps a non-200 HTTP answer to a KME_E* code and a message (malloc'd
 * into *message_r: the "message" of a JSON error body, else a printable
 * excerpt of the body, else the status line text; NULL when out of
 * memory). Tolerates non-spec codes and non-JSON bodies. */
int kme_map_http_error(enum kme_op_kind op, int status, const char *body,
                       size_t len, char **message_r);
/* Maps a net_conn failure (its error text; net.h offers no code) to a
 * KME_E* code. connecting: the failure happened before the connection was
 * ready (connect or TLS handshake). */
/* Maps a net_conn_error_code() to a KME_E* code. */
int kme_map_net_error(int net_code, bool connecting);

/* ---- url.c -------------------------------------------------------------- */

struct kme_url {
    char *host;        /* without brackets */
    uint16_t port;
    char *host_header; /* "host[:port]" with brackets for IPv6 */
    char *prefix;      /* path prefix without trailing '/', may be "" */
};
/* Parses "https://host[:port][/prefix]". 0 or KME_EINVAL/KME_ENOMEM with
 * *error_r (caller frees). */
int kme_url_parse(const char *url, struct kme_url *u, char **error_r);
void kme_url_clear(struct kme_url *u);

/* ---- timer.c: one-shot timers that free themselves --------------------- */

typedef struct kme_timer kme_timer;
typedef void (*kme_timer_cb)(void *arg);
/* NULL when out of memory. Not running until kme_timer_restart(). */
kme_timer *kme_timer_new(uv_loop_t *loop, kme_timer_cb cb, void *arg);
/* (Re)arms: the callback runs once, ms from now. */
void kme_timer_restart(kme_timer *t, uint64_t ms);
void kme_timer_stop(kme_timer *t);
/* kme_timer_new() + kme_timer_restart(). */
kme_timer *kme_timer_start(uv_loop_t *loop, uint64_t ms, kme_timer_cb cb, void *arg);
/* Stops (the callback is not called any more) and frees on the loop. */
void kme_timer_free(kme_timer **t);

/* ---- pool.c: keep-alive HTTPS connections and the request queue --------- */

typedef struct kme_pool kme_pool;
struct kme_http_req;

/* Completion of one HTTP exchange. error is KME_OK when an HTTP response
 * was received (any status); body/len valid during the call only (wiped
 * afterwards). detail: transport error text when error != 0. */
typedef void (*kme_http_done_cb)(int error, int status, const char *body, size_t len,
                                 const char *detail, void *arg);

struct kme_pool_config {
    const struct kme_url *url;
    net_tls *tls;
    const char *server_name;
    const char *expect_kme_id;
    unsigned max_connections;
    uint64_t connect_timeout_ms;
    uint64_t request_timeout_ms;
    uint64_t idle_timeout_ms;
    size_t max_response_bytes;
};

kme_pool *kme_pool_new(uv_loop_t *loop, const struct kme_pool_config *cfg);
/* Closes every connection; pending exchanges complete with KME_ECANCELLED
 * (callbacks called before this returns). */
void kme_pool_free(kme_pool **pool);
/* Queues "METHOD path" with an optional JSON body (copied; wiped after
 * sending). Returns the exchange (for cancellation) or NULL when out of
 * memory. done is called exactly once, never from inside this call. */
struct kme_http_req *kme_pool_submit(kme_pool *pool, const char *method,
                                     const char *path, const char *body,
                                     size_t body_len, kme_http_done_cb done,
                                     void *arg);
/* Cancels one exchange: done is not called. A queued exchange is freed at
 * once; one in flight stays on its connection until its answer arrives
 * (then dropped, connection kept) or its request timeout. */
void kme_pool_cancel(kme_pool *pool, struct kme_http_req *req);
void kme_pool_stats(const kme_pool *pool, struct kme_client_stats *st);

#endif
