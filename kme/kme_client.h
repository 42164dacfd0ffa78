/* kme_client: asynchronous ETSI GS QKD 014 (V1.1.1) client on the libuv loop.
 *
 * One kme_client talks to one KME (one base URL) over HTTPS with mutual TLS.
 * It keeps a pool of keep-alive connections (cfg.max_connections); requests
 * beyond that wait in a FIFO queue. Responses are parsed with llhttp and
 * decoded with the wire model of kme/etsi014.h.
 *
 * What it adds over raw 014 calls:
 *  - kme_client_enc_bits(): "give me exactly N bits". The client learns the
 *    KME's limits from status (cached per slave SAE) and splits the request
 *    into as many enc_keys calls as max_key_size and max_key_per_request
 *    require, with key sizes (multiples of 8 within min..max) whose sum is
 *    exactly N: no key material is wasted.
 *  - kme_client_dec_keys(): fetch keys by ID, batched per
 *    max_key_per_request, retrying with bounded exponential backoff while
 *    the KME says a key is not (yet) known (the handover race), up to a
 *    total deadline. Keys come back in the order of the IDs asked for.
 *  - Typed errors (KME_E*), also for peers that answer with non-spec status
 *    codes (404, 405, 409, 412, 422, 504) or non-JSON error bodies.
 *
 * Callbacks follow libuv's rule: when a call fails synchronously (negative
 * return) its callback is never called. Otherwise the callback is called
 * exactly once, on the loop, never from inside the submitting call.
 * kme_client_free() and kme_client_cancel() call the callbacks of the
 * requests they cancel, synchronously, with KME_ECANCELLED.
 *
 * Secrets: key bytes are never logged or put in error messages; every
 * buffer that held key material is wiped (OPENSSL_cleanse) before it is
 * freed, kme_keys_free() included. */
#ifndef QUMAIL_KME_CLIENT_H
#define QUMAIL_KME_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- errors ------------------------------------------------------------- */

enum kme_error {
    KME_OK = 0,
    KME_ENOMEM = -6001,        /* out of memory */
    KME_EINVAL = -6002,        /* invalid argument or configuration */
    KME_ETIMEDOUT = -6003,     /* connect, request or dec_keys deadline */
    KME_ECONNREFUSED = -6004,  /* TCP connection refused */
    KME_ECONNECT = -6005,      /* other connect failure (DNS, unreachable) */
    KME_EIO = -6006,           /* connection lost or reset mid-request */
    KME_ETLS = -6007,          /* TLS handshake/verify failure, wrong KME */
    KME_EHTTP = -6008,         /* HTTP error with the KME's message (400,
                                  405, 409, 412, 422, other 4xx) */
    KME_EBADRESPONSE = -6009,  /* not HTTP, not JSON, or invalid 014 data */
    KME_ENOTFOUND = -6010,     /* key ID not known to the KME (after any
                                  retries), or 404 */
    KME_EUNAUTHORIZED = -6011, /* 401/403: this SAE may not have the keys */
    KME_ESERVER = -6012,       /* 5xx: error on the KME's side (503, 504) */
    KME_ECANCELLED = -6013,    /* cancelled, or the client was freed */
    KME_ELIMITS = -6014,       /* request cannot be met within the KME's
                                  advertised limits (sizes, counts) */
};

/* Static text for a KME_E* code (or "unknown error"). */
const char *kme_client_strerror(int error);
/* Static name of a code, e.g. "KME_ETIMEDOUT" (for JSON output, logs). */
const char *kme_client_errname(int error);
/* True when retrying later may succeed (timeouts, connection and server
 * errors, key not found yet): the SMTP proxy answers 4xx for these and 5xx
 * for the rest. */
bool kme_client_error_is_temporary(int error);

/* The outcome handed to every callback. Valid only during the callback. */
struct kme_result {
    int error;           /* KME_OK or a KME_E* code */
    int http_status;     /* last HTTP status received, 0 if none */
    const char *message; /* never NULL: "ok", the KME's error "message",
                            or the transport error; never key bytes */
};

/* ---- configuration ------------------------------------------------------ */

struct kme_client_config {
    /* "https://host[:port][/prefix]"; host may be a name, an IPv4 address
     * or a bracketed IPv6 address. Port defaults to 443. Requests go to
     * <prefix>/api/v1/keys/... */
    const char *url;
    const char *cert_file;   /* SAE client certificate (PEM), mutual TLS */
    const char *key_file;    /* its private key (PEM) */
    const char *ca_file;     /* trust anchors for the KME (PEM); NULL: system */
    /* Name checked against the KME certificate and sent as SNI; NULL: the
     * host part of url. */
    const char *server_name;
    /* When set, the KME certificate's subject CN must equal this KME ID
     * (ETSI 014 clause 5.1: the SAE confirms the KME ID); else KME_ETLS. */
    const char *expect_kme_id;

    unsigned max_connections;      /* pool size; 0: 4 */
    uint64_t connect_timeout_ms;   /* TCP + TLS handshake; 0: 5000 */
    uint64_t request_timeout_ms;   /* one HTTP exchange incl. queueing;
                                      0: 10000 */
    uint64_t idle_timeout_ms;      /* close pooled idle connections after;
                                      0: 60000 */
    uint64_t status_ttl_ms;        /* limits cache lifetime; 0: 60000 */
    /* dec_keys handover race: retry "not found" with backoff starting at
     * retry_initial_ms, doubling up to retry_max_ms, until
     * dec_deadline_ms after the call. 0: 50, 1000, 10000. */
    uint64_t retry_initial_ms;
    uint64_t retry_max_ms;
    uint64_t dec_deadline_ms;
    size_t max_response_bytes;     /* body limit; 0: 8 MiB */
};

/* ---- keys and status ---------------------------------------------------- */

#define KME_KEY_ID_SIZE 37 /* UUID text (36) + NUL */

struct kme_key {
    char key_id[KME_KEY_ID_SIZE]; /* UUID as sent by the KME ("" for 004) */
    const uint8_t *bytes;         /* points into kme_keys.material */
    size_t len;                   /* bytes; the key has 8 * len bits */
    /* An ETSI 004 chunk (etsi004_client.h): its stream's KSID (lowercase
     * UUID text) and index; ksid is "" for a 014 key. */
    char ksid[KME_KEY_ID_SIZE];
    uint32_t index;
};

/* An ordered list of keys. material holds all key bytes concatenated in
 * list order (total_len bytes); keys[i].bytes points into it. Owned by the
 * receiver of the callback (or of *keys_r): free with kme_keys_free(),
 * which wipes the material. */
struct kme_keys {
    size_t count;
    struct kme_key *keys;
    uint8_t *material;
    size_t total_len;
};
void kme_keys_free(struct kme_keys **keys);
/* Appends src's keys after *dst's (*dst NULL: becomes src); src is
 * consumed either way. -1 when out of memory (*dst unchanged). */
int kme_keys_append(struct kme_keys **dst, struct kme_keys *src);

/* Status of the key supply between the calling SAE and slave_sae_id
 * (ETSI 014 clause 6.1; sizes in bits). */
struct kme_status {
    char *source_kme_id;
    char *target_kme_id;
    char *master_sae_id;
    char *slave_sae_id;
    int64_t key_size;
    int64_t stored_key_count;
    int64_t max_key_count;
    int64_t max_key_per_request;
    int64_t max_key_size;
    int64_t min_key_size;
    int64_t max_sae_id_count;
};
void kme_status_free(struct kme_status **status);

/* ---- the client --------------------------------------------------------- */

typedef struct kme_client kme_client;

/* Loads the certificates and checks the configuration; opens no
 * connection yet. NULL + *error_r (caller frees) on failure. */
kme_client *kme_client_new(uv_loop_t *loop, const struct kme_client_config *cfg,
                           char **error_r);
/* Cancels every pending request (callbacks get KME_ECANCELLED, called
 * before this returns), closes the connections and clears *client. Safe to
 * call from inside a kme_client callback. Handles close on the loop: run it
 * once more (uv_run) before uv_loop_close(). */
void kme_client_free(kme_client **client);

/* Cancels every pending operation submitted with this arg; their callbacks
 * get KME_ECANCELLED before this returns. Returns how many were cancelled. */
size_t kme_client_cancel(kme_client *client, void *arg);

/* status: the GET status call. status is NULL on error and valid only
 * during the callback. A successful status also refreshes the limits
 * cache for slave_sae_id. */
typedef void (*kme_status_cb)(const struct kme_result *res,
                              const struct kme_status *status, void *arg);
int kme_client_status(kme_client *client, const char *slave_sae_id,
                      kme_status_cb cb, void *arg);

/* keys: NULL on error; otherwise owned by the callback (kme_keys_free). */
typedef void (*kme_keys_cb)(const struct kme_result *res,
                            struct kme_keys *keys, void *arg);

/* Exactly total_bits of key material for slave_sae_id, in as few keys as
 * the KME's limits allow. total_bits must be a positive multiple of 8 (a
 * byte count times 8). Fails with KME_ELIMITS when no combination of
 * allowed sizes sums to total_bits (e.g. fewer bits than min_key_size):
 * returned at once when the limits are cached, else via the callback. */
int kme_client_enc_bits(kme_client *client, const char *slave_sae_id,
                        uint64_t total_bits, kme_keys_cb cb, void *arg);

/* number keys of size_bits each (size_bits 0: the KME's default key_size).
 * number above max_key_per_request is split into several calls; a size
 * outside the KME's limits is KME_ELIMITS. */
int kme_client_enc_keys(kme_client *client, const char *slave_sae_id,
                        uint64_t number, uint64_t size_bits, kme_keys_cb cb,
                        void *arg);

/* The keys with these IDs (UUID strings, either case, copied), from the KME
 * of the slave side; master_sae_id is the SAE that obtained them with
 * enc_keys. Returned in the order of key_ids (IDs in lower case); a
 * non-UUID or duplicate ID is refused (KME_EINVAL). */
int kme_client_dec_keys(kme_client *client, const char *master_sae_id,
                        const char *const *key_ids, size_t n, kme_keys_cb cb,
                        void *arg);

/* Counters for tests and benchmarks. */
struct kme_client_stats {
    uint64_t connections_opened;
    uint64_t http_requests;   /* HTTP exchanges started */
    uint64_t reused;          /* exchanges on an already used connection */
    uint64_t retries;         /* dec_keys not-found retries */
    size_t queued;            /* requests waiting for a connection now */
};
void kme_client_get_stats(const kme_client *client, struct kme_client_stats *st);

/* ---- blocking convenience (CLI use: runs its own private loop) ----------
 * Each call creates a client from cfg, runs one operation to completion and
 * frees everything. Returns KME_OK or a KME_E* code; on error *error_r
 * (caller frees, may be NULL) gets the detail message. */
int kme_sync_status(const struct kme_client_config *cfg, const char *slave_sae_id,
                    struct kme_status **status_r, char **error_r);
int kme_sync_enc_bits(const struct kme_client_config *cfg, const char *slave_sae_id,
                      uint64_t total_bits, struct kme_keys **keys_r, char **error_r);
int kme_sync_enc_keys(const struct kme_client_config *cfg, const char *slave_sae_id,
                      uint64_t number, uint64_t size_bits,
                      struct kme_keys **keys_r, char **error_r);
int kme_sync_dec_keys(const struct kme_client_config *cfg, const char *master_sae_id,
                      const char *const *key_ids, size_t n,
                      struct kme_keys **keys_r, char **error_r);

#endif
