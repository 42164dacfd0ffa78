/* settings: the daemon's configuration schema (qumail proxy), prefix
 * qumail_config_.
 *
 * A plain struct, read-only after loading, read from the JSON file
 * described key by key in config/README.md with the generic reader of
 * config/qcfg.h (every problem reported as FILE:LINE:COL: key '...': ...).
 * Strings are owned by the struct (NULL when unset and optional); paths
 * are absolute or relative to the directory of the configuration file;
 * durations are in milliseconds and sizes in bytes. */
#ifndef QUMAIL_SETTINGS_H
#define QUMAIL_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "qcfg.h" /* QCFG_E* return codes */

/* Values equal enum qlog_level of the logging module (log.h). */
enum qumail_log_level {
    QUMAIL_LOG_ERROR = 0,
    QUMAIL_LOG_WARN,
    QUMAIL_LOG_INFO,
    QUMAIL_LOG_DEBUG
};

/* TLS on a listener. */
enum qumail_listen_tls {
    QUMAIL_LISTEN_TLS_NONE = 0,  /* "none": plain (STARTTLS not offered) */
    QUMAIL_LISTEN_TLS_STARTTLS,  /* "starttls": plain, STARTTLS offered */
    QUMAIL_LISTEN_TLS_IMPLICIT   /* "implicit": TLS from the first byte */
};

/* TLS towards an upstream server. */
enum qumail_upstream_tls {
    QUMAIL_UPSTREAM_TLS_NONE = 0,               /* "none" */
    QUMAIL_UPSTREAM_TLS_STARTTLS,               /* "starttls": required */
    QUMAIL_UPSTREAM_TLS_STARTTLS_OPPORTUNISTIC, /* "starttls-opportunistic":
                                                   when the server offers it
                                                   (SMTP only) */
    QUMAIL_UPSTREAM_TLS_IMPLICIT                /* "implicit" */
};

enum qumail_smtp_mode {
    QUMAIL_SMTP_SUBMISSION = 0, /* "submission": clients authenticate
                                   (AUTH relayed to upstream) */
    QUMAIL_SMTP_GATEWAY         /* "gateway": relay for trusted_networks */
};

/* An address block "192.0.2.0/24", "2001:db8::/32", or one address. */
struct qumail_cidr {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];  /* network address, host bits cleared */
    uint8_t prefix;    /* 0..32 or 0..128 */
};
/* Parses text; returns 0, or -1 with a static reason. */
int qumail_cidr_parse(const char *text, struct qumail_cidr *cidr_r,
                      const char **why_r);
/* Does the block contain the address? IPv4-mapped IPv6 addresses
 * (::ffff:a.b.c.d) match IPv4 blocks. */
bool qumail_cidr_contains(const struct qumail_cidr *cidr,
                          const struct sockaddr *addr);

/* A listening socket of any protocol (smtp.listeners[], imap.listeners[]). */
struct qumail_listener {
    char *name;                  /* unique among the protocol's listeners */
    char *address;               /* numeric IP; default "127.0.0.1" */
    uint16_t port;               /* required; 0 = pick a free port (tests) */
    enum qumail_listen_tls tls;  /* default none */
    char *cert_file, *key_file;  /* required unless tls is none */
    bool require_tls_for_auth;   /* default: false on loopback addresses,
                                    true otherwise. SMTP: AUTH refused and
                                    not offered before TLS. IMAP:
                                    LOGINDISABLED, no AUTH= before TLS */
};

/* An upstream server (smtp.upstream, imap.upstream). */
struct qumail_upstream {
    char *host;                    /* default "127.0.0.1" */
    uint16_t port;                 /* SMTP: 25 in gateway mode, 587 in
                                      submission mode, 465 when implicit;
                                      IMAP: 143, 993 when implicit */
    enum qumail_upstream_tls tls;  /* default starttls */
    bool verify;                   /* default true: chain and host name */
    char *ca_file;                 /* NULL: the system trust store */
    char *server_name;             /* SNI and name checked; default: host */
    char *client_cert_file;        /* optional client certificate ... */
    char *client_key_file;         /* ... and its key (both or neither) */
    uint64_t timeout_ms;           /* connect, TLS, greeting, and each reply
                                      awaited; default 5m */
    bool trust_id;                 /* IMAP only: upstream trusts this proxy
                                      (Dovecot login_trusted_networks): send
                                      the client's address in ID as
                                      x-originating-ip; default false */
};

/* Connection limits every protocol has (in smtp.limits, imap.limits). */
struct qumail_conn_limits {
    uint32_t max_connections;      /* concurrent sessions of the protocol */
    uint32_t max_connections_per_address; /* from one client address;
                                      0: only max_connections applies */
    uint32_t listen_backlog;       /* listen(2) backlog; default 511 */
};

struct qumail_smtp_limits {
    struct qumail_conn_limits conn; /* max_connections default 100, per
                                       address 50 */
    uint64_t max_message_size;   /* bytes; default 25 MiB */
    uint32_t max_recipients;     /* per transaction; default 100 */
    uint32_t max_line_length;    /* incl. CRLF; default 4096 (min 1000) */
    uint64_t command_timeout_ms; /* idle wait for a command; default 5m */
    uint64_t data_timeout_ms;    /* idle wait during DATA; default 10m */
};

struct qumail_smtp {
    enum qumail_smtp_mode mode;         /* default submission */
    char *hostname;                     /* EHLO/banner name; default: the
                                           system host name */
    struct qumail_listener *listeners;  /* default: one, "submission",
                                           127.0.0.1:2587, tls none */
    size_t n_listeners;
    struct qumail_upstream upstream;
    struct qumail_cidr *trusted_networks; /* gateway mode: default
                                             127.0.0.0/8 and ::1/128 */
    size_t n_trusted_networks;
    struct qumail_smtp_limits limits;
    bool trace_header;                  /* add a Received: line; default true */
};

struct qumail_imap_limits {
    struct qumail_conn_limits conn; /* max_connections default 1000, per
                                       address 100 */
    uint32_t max_line_length;      /* a command or response line without its
                                      literals, incl. CRLF; default 64 KiB
                                      (min 1000) */
    uint64_t max_literal_size;     /* one literal (APPEND, a FETCH body
                                      part); default 64 MiB */
    uint64_t login_timeout_ms;     /* connect until authenticated; default 3m */
    uint64_t command_timeout_ms;   /* idle wait inside a command (the rest of
                                      a line or literal); default 5m */
    uint64_t idle_timeout_ms;      /* authenticated client idle between
                                      commands and in IDLE; default 30m, at
                                      least 30m (RFC 3501 5.4) */
};

/* imap.decrypt: decrypt on read (proxy/protect/INCOMING.md). */
struct qumail_imap_address {
    char *login;                   /* as the IMAP server accepts it */
    char *address;                 /* a mail address this login reads for */
};
struct qumail_imap_decrypt {
    uint64_t cache_size;           /* decrypted views in memory; default 256 MiB */
    uint32_t cache_views;          /* default 10000 */
    uint64_t notice_ttl_ms;        /* notice reuse, KME link hold-off;
                                      default 3s; 0: every read retries */
    uint64_t max_message_size;     /* encrypted message; default 64 MiB */
    bool recipient_check;          /* "strict" (true, default) or "off" */
    bool release_unbound;          /* default false */
    char *default_domain;          /* logins without '@'; default NULL */
    struct qumail_imap_address *addresses; /* login -> extra address */
    size_t n_addresses;
};

/* imap.append: what an APPEND to a protected mailbox stores
 * (proxy/protect/APPEND.md). */
enum qumail_append_algorithm {
    QUMAIL_APPEND_AES = 0, /* AES-256-GCM with a local key (default) */
    QUMAIL_APPEND_OTP,     /* one-time pad with local key bytes */
    QUMAIL_APPEND_AUTO,    /* OTP up to otp_max_size, else AES */
};
struct qumail_imap_append {
    enum qumail_append_algorithm algorithm;
    uint64_t otp_max_size;         /* auto: OTP up to this size; default 64 KiB */
    uint64_t max_size;             /* larger APPENDs to a protected mailbox:
                                      NO [TOOBIG]; default 64 MiB */
};

/* imap.search: SEARCH / SORT over encrypted messages (proxy/imap/README.md). */
struct qumail_imap_search {
    uint32_t max_decrypt;          /* encrypted messages one command may have
                                      to read and decrypt (not cached, not
                                      answered by metadata); default 2000 */
};

/* The IMAP side. Absent from the file: enabled false, no listeners. */
struct qumail_imap {
    bool enabled;                       /* the file has an "imap" section */
    struct qumail_listener *listeners;  /* default (when enabled): one,
                                           "imap", 127.0.0.1:2143, tls none */
    size_t n_listeners;
    struct qumail_upstream upstream;    /* tls none, starttls or implicit */
    struct qumail_imap_limits limits;
    struct qumail_imap_decrypt decrypt;
    /* imap.protect_mailboxes: names, SPECIAL-USE attributes ("\\Sent") or
     * "all" (proxy/protect/mailboxes.h); NULL: the default, Sent, Drafts,
     * \Sent, \Drafts. An empty array protects nothing. */
    char **protect_mailboxes;
    size_t n_protect_mailboxes;
    bool protect_mailboxes_set;         /* the key was given */
    struct qumail_imap_append append;
    struct qumail_imap_search search;
};

/* The interface a KME link speaks. */
enum qumail_kme_kind {
    QUMAIL_KME_ETSI014 = 0, /* REST key delivery (keys by key_ID) */
    QUMAIL_KME_ETSI004 = 1, /* key streams (chunks of a KSID by index) */
};

/* One KME this side talks to, as an SAE (mutual TLS). */
struct qumail_kme_link {
    char *name;          /* the key in "kme_links"; used by the policy */
    enum qumail_kme_kind kind; /* "kind": "etsi014" (default) or "etsi004" */
    char *url;           /* "https://host[:port][/prefix]" (014) or
                            "etsi004://host[:port]" (004) as written,
                            without a trailing slash */
    char *host;          /* parsed from url */
    uint16_t port;       /* parsed from url; 443 (014) / 25575 (004) when
                            absent */
    char *path_prefix;   /* parsed from url; "" when absent */
    char *ca_file;       /* trust anchors for the KME; NULL: system store */
    char *cert_file;     /* our SAE client certificate (required) */
    char *key_file;      /* its private key (required) */
    uint64_t timeout_ms; /* per request; default 10s */
    uint32_t connections; /* keep-alive pool size; default 4 (1..64) */
    /* ETSI 004 only: the key stream, agreed with the peer organisation. */
    char *ksid;          /* predefined Key_stream_ID (UUID); required */
    char *source;        /* OPEN_CONNECT source URI; NULL: qkd://<our SAE> */
    char *destination;   /* NULL: qkd://peer */
    uint32_t chunk_size; /* Key_chunk_size asked, bytes; 0: the KME's */
    uint64_t ttl_ms;     /* TTL asked; 0: the KME's */
    uint64_t qos_timeout_ms; /* Timeout asked; 0: the KME's */
};

/* One KME of the embedded simulator. */
struct qumail_kme_sim_node {
    char *kme_id;                /* default "kme-a" / "kme-b" */
    uint16_t port;               /* default 8481 / 8482; 0 = free port */
    char *cert_file, *key_file;  /* its server certificate (required when
                                    the simulator is enabled) */
};

/* The embedded KME simulator: two KMEs joined by a simulated QKD link,
 * served by the daemon's own process (the demo and single-machine use). */
struct qumail_kme_simulator {
    bool enabled;                   /* default false */
    char *config_file;              /* a `qumail kme` configuration file to
                                       run in-process instead of the keys
                                       below (kme/README.md); default NULL */
    char *address;                  /* listen address; default "127.0.0.1" */
    struct qumail_kme_sim_node a, b;
    char *ca_file;                  /* verifies SAE client certificates
                                       (required when enabled) */
    char *state_path;               /* SQLite file prefix; default
                                       <state_dir>/kme-sim.sqlite (each KME
                                       adds ".<kme_id>") */
    uint64_t key_rate;              /* secret key rate, bits/s; default 100000 */
    uint32_t max_key_count;         /* pool size in keys; default 10000 */
    uint32_t key_size;              /* default key size in bits; default 256 */
    uint32_t min_key_size;          /* default 64 */
    uint32_t max_key_size;          /* default 65536 */
    uint32_t max_keys_per_request;  /* default 128 */
    uint64_t key_expiry_ms;         /* uncollected keys; default 1h */
    uint64_t redeliver_ms;          /* dec_keys_redeliver: a collected key
                                       stays collectable by its reader this
                                       long (kill -9 safety); default 5m */
};

struct qumail_vault {
    char *path;      /* SQLite file; default <state_dir>/vault.sqlite */
    char *key_file;  /* at-rest key; default <state_dir>/vault.key */
};

/* The operator's HTTP listener (proxy/admin): /healthz, /readyz,
 * /metrics, /status, mail client autoconfiguration. Absent from the file:
 * no admin listener. */
struct qumail_admin {
    bool enabled;        /* the file has an "admin" section */
    char *address;       /* numeric IP; default "127.0.0.1" */
    uint16_t port;       /* default 9587; 0 = a free port (tests) */
    char *mail_host;     /* the host name the autoconfig documents give mail
                            clients for the SMTP and IMAP listeners; NULL:
                            each listener's address (smtp.hostname for a
                            wildcard address) */
};

struct qumail_config {
    char *file;                       /* path loaded; NULL for built-ins */
    enum qumail_log_level log_level;  /* default info */
    char *state_dir;                  /* default "/var/lib/qumail" */
    struct qumail_smtp smtp;
    struct qumail_imap imap;
    struct qumail_kme_link *kme_links; /* in file order */
    size_t n_kme_links;
    struct qumail_kme_simulator kme_simulator;
    struct qumail_vault vault;
    struct qumail_admin admin;
    char *policy_file;                /* NULL: the daemon refuses every
                                         recipient (fail closed) */
};

/* Loads and validates a daemon configuration file. On failure returns a
 * negative QCFG_E* code and *error_r (caller frees) lists every problem,
 * one "FILE:LINE:COL: key '...': message" per line. */
int qumail_config_load(const char *path, struct qumail_config **cfg_r,
                       char **error_r);
/* The same for text in memory (tests); name and base_dir as for
 * qcfg_load_buffer. */
int qumail_config_load_buffer(const char *name, const char *base_dir,
                              const char *text, size_t len,
                              struct qumail_config **cfg_r, char **error_r);
/* The built-in defaults (no file); NULL when out of memory. */
struct qumail_config *qumail_config_defaults(void);
void qumail_config_free(struct qumail_config **cfg);

/* The link with that name, or NULL. */
const struct qumail_kme_link *qumail_config_link(const struct qumail_config *cfg,
                                                 const char *name);
/* Is the client address inside smtp.trusted_networks? */
bool qumail_config_trusted(const struct qumail_config *cfg,
                           const struct sockaddr *addr);

/* Names for logs and messages: "starttls", "gateway", ... */
const char *qumail_listen_tls_name(enum qumail_listen_tls tls);
const char *qumail_upstream_tls_name(enum qumail_upstream_tls tls);
const char *qumail_smtp_mode_name(enum qumail_smtp_mode mode);

#endif
