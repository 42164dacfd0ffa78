/* kme_server: the ETSI GS QKD 014 KME simulator, embeddable on a libuv loop.
 *
 * A configuration holds one or two KMEs. Each KME serves the three 014
 * endpoints over HTTPS with mutual TLS and is linked to its peer KME over
 * its own mutual-TLS link (kme/README.md, "Link protocol"), which carries
 * the simulated QKD key stream and the key reservations. With two KMEs in
 * one configuration both run in this process and are linked over loopback
 * (the demo and the proxy's embedded default); with one, the peer is
 * another process (another organisation).
 *
 * Durable state (pools, reservations not yet acknowledged by the peer, keys
 * held for slave SAEs) lives in one SQLite file per KME, written on libuv's
 * thread pool with group commit. Nothing is answered before it is
 * committed. See kme/README.md for the configuration keys and guarantees. */
#ifndef QUMAIL_KME_SERVER_H
#define QUMAIL_KME_SERVER_H

#include <stdint.h>
#include <uv.h>

enum {
    KME_SERVER_OK = 0,
    KME_SERVER_ECONFIG = -7001, /* configuration invalid (detail in error_r) */
    KME_SERVER_ESTORE = -7002,  /* SQLite state could not be opened/loaded */
    KME_SERVER_ELISTEN = -7003, /* a listener could not be bound */
    KME_SERVER_ETLS = -7004,    /* certificate/key/CA could not be loaded */
    KME_SERVER_ENOMEM = -7005,
};
const char *kme_server_strerror(int code);

typedef struct kme_server_config kme_server_config;
typedef struct kme_server kme_server;

/* Loads a configuration file (JSON, kme/README.md). Errors name
 * FILE:LINE:COL and the key; all of them, joined by newlines, in *error_r
 * (caller frees). */
int kme_server_config_load(const char *path, kme_server_config **cfg_r,
                           char **error_r);
/* The same from text in memory (name used in messages; relative paths
 * resolve against base_dir, NULL: current directory). */
int kme_server_config_parse(const char *name, const char *base_dir,
                            const char *text, size_t len,
                            kme_server_config **cfg_r, char **error_r);
void kme_server_config_free(kme_server_config **cfg);

/* Builds the two-KME in-process configuration (the proxy's embedded
 * simulator) from parameters instead of a file; the same validation
 * applies. NULL strings and zero numbers take the defaults of
 * kme/README.md. Errors name "embedded-kme-simulator" and the key. */
struct kme_server_kme_params {
    const char *kme_id;        /* required */
    const char *host;          /* numeric listen address; "127.0.0.1" */
    uint16_t port;             /* 014 HTTPS port; 0: any free port */
    uint16_t link_port;        /* link port; 0: any free port */
    const char *cert_file;     /* required: CN = kme_id */
    const char *key_file;      /* required */
    const char *database;      /* required: one SQLite file per KME */
};
struct kme_server_pair_params {
    struct kme_server_kme_params a, b;
    const char *ca_file;       /* required: verifies SAE and KME certs */
    uint64_t secret_key_rate;  /* bits/s */
    int64_t max_key_count, key_size, min_key_size, max_key_size;
    int64_t max_key_per_request;
    uint64_t key_expiry_ms;    /* 0: default (never) */
    uint64_t redeliver_ms;     /* dec_keys_redeliver; 0: off (ETSI 014) */
};
int kme_server_config_pair(const struct kme_server_pair_params *p,
                           kme_server_config **cfg_r, char **error_r);

/* Number of KMEs in the configuration and the i-th one's ID. */
size_t kme_server_config_count(const kme_server_config *cfg);
const char *kme_server_config_kme_id(const kme_server_config *cfg, size_t i);

/* Opens the stores, binds the listeners and starts serving on loop. The
 * configuration is copied; it may be freed after the call. Returns 0 and
 * *srv_r, or a negative code with *error_r. */
int kme_server_start(uv_loop_t *loop, const kme_server_config *cfg,
                     kme_server **srv_r, char **error_r);

/* Port of the i-th KME's HTTPS listener / link listener (useful with port
 * 0 in the configuration); 0 when i is out of range. */
uint16_t kme_server_port(const kme_server *srv, size_t i);
uint16_t kme_server_link_port(const kme_server *srv, size_t i);
/* Port of the i-th KME's ETSI GS QKD 004 listener; 0 when it has none
 * (no "etsi004" object in its configuration) or i is out of range. */
uint16_t kme_server_004_port(const kme_server *srv, size_t i);

/* Stops accepting, closes every connection, waits for the commit in
 * flight, closes the stores, and calls done(arg) on the loop when every
 * handle is closed (done may be NULL). Clears *srv. */
void kme_server_stop(kme_server **srv, void (*done)(void *arg), void *arg);

#endif
