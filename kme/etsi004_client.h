/* etsi004_client: asynchronous ETSI GS QKD 004 (V2.1.1) client on the libuv
 * loop, over proxy/net's net_conn (TCP + mutual TLS).
 *
 * One client talks to one KME's 004 listener. It keeps up to
 * max_connections connections, each carrying one request at a time (the
 * framing has no request IDs: answers come in request order); requests
 * beyond wait in a FIFO queue. The wire model is kme/etsi004.h; the
 * framing, byte order and the variants accepted from peers are in
 * kme/ETSI004.md.
 *
 * The primitives (open, get_key, close) report the KME's 004 status; the
 * chunk operations (next_chunks, fetch_chunks) build on get_key and return
 * whole lists of chunks as struct kme_keys (kme_client.h), with each key's
 * ksid and index set, for the key sources and `qumail mime`.
 *
 * Callbacks follow libuv's rule (as kme_client.h): a call that fails
 * synchronously (negative return) never calls its callback; otherwise the
 * callback is called exactly once, on the loop, never from inside the
 * submitting call. etsi004_client_free() and etsi004_client_cancel() call
 * the callbacks of the requests they cancel, synchronously, with
 * KME_ECANCELLED.
 *
 * Errors: transport and response problems are the KME_E* codes of
 * kme_client.h (KME_ETIMEDOUT, KME_ECONNREFUSED, KME_ETLS, KME_EIO,
 * KME_EBADRESPONSE, ...); a well-formed answer has error 0 and the KME's
 * status in status. The chunk operations turn a non-zero status into an
 * error (etsi004_status_error()).
 *
 * Secrets: key bytes are never logged or put in messages; every buffer that
 * held key material is wiped before it is freed. */
#ifndef QUMAIL_ETSI004_CLIENT_H
#define QUMAIL_ETSI004_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "etsi004.h"
#include "kme_client.h"

struct etsi004_client_config {
    const char *host;              /* name or numeric address */
    uint16_t port;                 /* 0: ETSI004_DEFAULT_PORT (25575) */
    const char *cert_file;         /* SAE client certificate (mutual TLS) */
    const char *key_file;
    const char *ca_file;           /* trust anchors for the KME; NULL: system */
    const char *server_name;       /* checked against the certificate and
                                      sent as SNI; NULL: host */
    const char *expect_kme_id;     /* when set, the KME certificate's CN */
    unsigned max_connections;      /* 0: 2 */
    uint64_t connect_timeout_ms;   /* TCP + TLS; 0: 5000 */
    /* One exchange, beyond the time the KME may legitimately wait (an
     * OPEN_CONNECT up to its QoS Timeout, a GET_KEY up to the stream's):
     * 0: 10000. */
    uint64_t request_timeout_ms;
    uint64_t idle_timeout_ms;      /* idle pooled connections; 0: 60000 */
};

/* "etsi004://host[:port]" or "host[:port]" (IPv6 in brackets) into host and
 * port (ETSI004_DEFAULT_PORT when absent). *host_r is malloc'd. 0 or
 * KME_EINVAL/KME_ENOMEM. */
int etsi004_parse_address(const char *text, char **host_r, uint16_t *port_r);

typedef struct etsi004_client etsi004_client;

etsi004_client *etsi004_client_new(uv_loop_t *loop,
                                   const struct etsi004_client_config *cfg,
                                   char **error_r);
/* Cancels everything (callbacks with KME_ECANCELLED before it returns),
 * closes the connections, clears *c. Run the loop once more before closing
 * it. Safe inside a callback of this client. */
void etsi004_client_free(etsi004_client **c);
/* Cancels every operation submitted with arg; returns how many. */
size_t etsi004_client_cancel(etsi004_client *c, void *arg);

/* The outcome of one primitive. Valid during the callback only. */
struct etsi004_result {
    int error;           /* KME_OK, or a KME_E* code (then status is 0) */
    uint32_t status;     /* the KME's 004 status when error is KME_OK */
    const char *message; /* never NULL; never key bytes */
};

/* OPEN_CONNECT. ksid NULL asks the KME to assign one. On status 0, 1 and 7
 * qos/ksid are what the KME returned (7: the counter-proposal); otherwise
 * NULL. wait_ms: how long the KME may block (0: qos->timeout, or 60000
 * when that is 0 too). */
typedef void (*etsi004_open_cb)(const struct etsi004_result *res,
                                const struct etsi004_qos *qos,
                                const uint8_t *ksid, void *arg);
int etsi004_client_open(etsi004_client *c, const char *source,
                        const char *destination, const struct etsi004_qos *qos,
                        const uint8_t *ksid, uint64_t wait_ms,
                        etsi004_open_cb cb, void *arg);

/* GET_KEY. index ETSI004_INDEX_NEXT: the KME chooses. On status 0, chunk
 * holds the key (wiped after the callback) and the metadata; on 8,
 * chunk->metadata_needed. wait_ms as for open (the stream's Timeout). */
struct etsi004_chunk {
    uint32_t index;
    const uint8_t *key;
    size_t len;
    const char *metadata;      /* not NUL-terminated */
    size_t metadata_len;
    uint32_t metadata_needed;  /* status 8 */
};
typedef void (*etsi004_get_cb)(const struct etsi004_result *res,
                               const struct etsi004_chunk *chunk, void *arg);
int etsi004_client_get_key(etsi004_client *c, const uint8_t *ksid, uint32_t index,
                           uint32_t metadata_size, uint64_t wait_ms,
                           etsi004_get_cb cb, void *arg);

typedef void (*etsi004_close_cb)(const struct etsi004_result *res, void *arg);
int etsi004_client_close(etsi004_client *c, const uint8_t *ksid,
                         etsi004_close_cb cb, void *arg);

/* ---- chunk lists ---------------------------------------------------------- */

/* The KME_E* error for a 004 status the caller did not want: 2 and 6 are
 * temporary (KME_ESERVER, KME_ETIMEDOUT), 3 and 4 too (KME_ENOTFOUND: the
 * peer application or link may come), 5 KME_EUNAUTHORIZED, others
 * KME_EBADRESPONSE. */
int etsi004_status_error(uint32_t status);

/* count chunks of the stream at KME-chosen indices (GET_KEY with
 * ETSI004_INDEX_NEXT), each exactly chunk_len bytes (the stream's
 * Key_chunk_size, as OPEN_CONNECT granted it), in ascending index order.
 * keys->keys[i].ksid/index name each chunk. All or nothing: on the first
 * failure the callback gets the error (chunks already taken are lost to
 * this end, never handed out again). A KME that does not choose indices
 * (answers index 2^32-1) is KME_EBADRESPONSE: never used twice. */
int etsi004_client_next_chunks(etsi004_client *c, const uint8_t *ksid,
                               size_t count, size_t chunk_len, uint64_t wait_ms,
                               kme_keys_cb cb, void *arg);

/* Chunks first .. first+count-1 (GET_KEY by index), in index order, each
 * chunk_len bytes (0: any size, all equal). All or nothing. */
int etsi004_client_fetch_chunks(etsi004_client *c, const uint8_t *ksid,
                                uint32_t first, size_t count, size_t chunk_len,
                                uint64_t wait_ms, kme_keys_cb cb, void *arg);

/* The KME certificate's CN and ours (the SAE ID), learnt from the TLS
 * session and our certificate; NULL until a connection was established
 * (ours: at once). For the control data of messages. */
const char *etsi004_client_kme_id(const etsi004_client *c);
const char *etsi004_client_sae_id(const etsi004_client *c);
uv_loop_t *etsi004_client_loop(const etsi004_client *c);

/* ---- blocking convenience (CLI: a private loop) --------------------------- */

struct etsi004_sync_open {
    uint32_t status;
    bool has_qos;
    struct etsi004_qos qos;
    uint8_t ksid[ETSI004_KSID_LEN];
};
/* Returns KME_OK (see r->status) or a KME_E* code with *error_r. */
int etsi004_sync_open(const struct etsi004_client_config *cfg, const char *source,
                      const char *destination, const struct etsi004_qos *qos,
                      const uint8_t *ksid, struct etsi004_sync_open *r,
                      char **error_r);
struct etsi004_sync_get {
    uint32_t status;
    uint32_t index;
    uint8_t *key;              /* malloc'd: etsi004_sync_get_clear() wipes */
    size_t len;
    char *metadata;            /* malloc'd, NUL-terminated */
    uint32_t metadata_needed;
};
int etsi004_sync_get_key(const struct etsi004_client_config *cfg,
                         const uint8_t *ksid, uint32_t index,
                         uint32_t metadata_size, uint64_t wait_ms,
                         struct etsi004_sync_get *r, char **error_r);
void etsi004_sync_get_clear(struct etsi004_sync_get *r);
int etsi004_sync_close(const struct etsi004_client_config *cfg, const uint8_t *ksid,
                       uint32_t *status_r, char **error_r);
/* Reattaches to the stream (OPEN_CONNECT with its KSID: status 0 or 1
 * accepted) and fetches chunks first..first+count-1, for decryption. */
int etsi004_sync_fetch_chunks(const struct etsi004_client_config *cfg,
                              const uint8_t *ksid, uint32_t first, size_t count,
                              size_t chunk_len, struct kme_keys **keys_r,
                              char **error_r);

/* Reattaches to the stream (OPEN_CONNECT with its KSID; 0 or 1 accepted:
 * the stream's QoS gives the chunk size) and takes ceil(bits / chunk bits)
 * chunks at KME-chosen indices, for encryption (the last chunk may be used
 * in part). *kme_id_r and *sae_id_r (malloc'd, may be NULL) name the KME
 * (its certificate's CN) and this application (our certificate's CN). */
int etsi004_sync_take_bits(const struct etsi004_client_config *cfg,
                           const uint8_t *ksid, uint64_t bits,
                           struct kme_keys **keys_r, char **kme_id_r,
                           char **sae_id_r, char **error_r);

#endif
