/* config: JSON configuration files with positions, and the daemon's settings.
 *
 * Part 1, the generic reader (prefix qcfg_). A file is parsed with jansson
 * (duplicate keys rejected, NUL in strings rejected, at most
 * QCFG_MAX_FILE_SIZE bytes) and then scanned once more by a small scanner
 * that records the line:column of every key and value (jansson keeps no
 * positions after parsing). The caller reads it like a schema, top-down:
 *
 *     struct qcfg *doc;
 *     if (qcfg_load_file(path, &doc, &err) < 0) ...          // syntax error
 *     qcfg_node *root = qcfg_object(qcfg_root(doc));
 *     qcfg_string(qcfg_member(root, "host", QCFG_REQUIRED), &s->host);
 *     qcfg_port(qcfg_member(root, "port", 0), 0, &s->port);
 *     qcfg_node *l = qcfg_array(qcfg_member(root, "listeners", 0));
 *     for (size_t i = 0; i < qcfg_array_len(l); i++) {
 *         qcfg_node *e = qcfg_object(qcfg_array_at(l, i));
 *         ...
 *         qcfg_done(e);                          // unknown keys are errors
 *     }
 *     qcfg_done(root);
 *     if (qcfg_error_count(doc) > 0) ...         // every problem, in order
 *
 * A node stands for one JSON value. NULL is the "absent" node: every
 * function accepts it and does nothing (typed readers return 0), so
 * optional sections need no branches. Typed readers store into *out only
 * when the value is present and valid; pre-fill the defaults. On a bad
 * value they record an error and leave *out untouched. Nodes belong to the
 * document and live until qcfg_free().
 *
 * Every problem is recorded, not just the first, as
 *     FILE:LINE:COL: key 'a.b[2].c': message
 * Keys in paths that are not plain words ([A-Za-z0-9_-]) are written
 * ["quoted"]. Lines and columns start at 1; columns count characters
 * (UTF-8 code points), like jansson's own syntax errors.
 *
 * Part 2, the daemon configuration (prefix qumail_config_): a plain struct
 * read from the file described in config/README.md. */
#ifndef QUMAIL_CONFIG_H
#define QUMAIL_CONFIG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ======================================================================
 * Part 1: the generic reader
 * ====================================================================== */

#define QCFG_MAX_FILE_SIZE (4u * 1024u * 1024u)

/* Return codes of the loaders. */
enum {
    QCFG_OK = 0,
    QCFG_EIO = -1,     /* file could not be read (or is too large) */
    QCFG_ESYNTAX = -2, /* not valid JSON, or a duplicate key */
    QCFG_ENOMEM = -3,
    QCFG_EINVALID = -4 /* loaded, but the reader recorded errors */
};
const char *qcfg_strerror(int code);

struct qcfg;                  /* a loaded document and its error list */
typedef struct qcfg_node qcfg_node; /* one JSON value of a document */

/* Loads and parses a file. On failure returns a negative code, *doc_r is
 * NULL and *error_r (caller frees) is "FILE:LINE:COL: message" for syntax
 * errors or "FILE: message" for I/O errors. */
int qcfg_load_file(const char *path, struct qcfg **doc_r, char **error_r);
/* The same for text in memory; name is used in messages in place of a file
 * name, and relative paths (qcfg_path) resolve against base_dir (NULL: the
 * current directory). */
int qcfg_load_buffer(const char *name, const char *base_dir, const char *text,
                     size_t len, struct qcfg **doc_r, char **error_r);
void qcfg_free(struct qcfg **doc);

const char *qcfg_file_name(const struct qcfg *doc);

/* The top-level value (never NULL for a loaded document). */
qcfg_node *qcfg_root(struct qcfg *doc);

/* ---- structure ---- */

/* Type assertions: return the node when it is of that type; otherwise
 * record "expected an object" (etc.) and return NULL. NULL in, NULL out. */
qcfg_node *qcfg_object(qcfg_node *node);
qcfg_node *qcfg_array(qcfg_node *node);

enum {
    QCFG_REQUIRED = 1u << 0, /* qcfg_member: absent is an error */
    QCFG_NONEMPTY = 1u << 1, /* strings and paths: "" is an error */
    QCFG_ZERO_OK = 1u << 2   /* qcfg_port: accept 0 (pick a free port) */
};

/* The member `key` of an object node (which must have passed qcfg_object,
 * or be NULL). Marks the key as known for qcfg_done(). Absent: NULL, and
 * with QCFG_REQUIRED an error "missing required key" at the object. The
 * same node is returned when a member is asked for twice. */
qcfg_node *qcfg_member(qcfg_node *obj, const char *key, unsigned flags);

/* Iterates over every member of an object (for maps with names chosen by
 * the user, e.g. "kme_links": {"site-b": {...}}). Marks each as known.
 * Start with *iter = 0; returns NULL at the end. */
qcfg_node *qcfg_object_next(qcfg_node *obj, size_t *iter, const char **key_r);
size_t qcfg_object_size(const qcfg_node *obj);

/* Records "unknown key" for every member of obj not asked for with
 * qcfg_member/qcfg_object_next. Returns the number of unknown keys. */
size_t qcfg_done(qcfg_node *obj);

size_t qcfg_array_len(const qcfg_node *arr);
qcfg_node *qcfg_array_at(qcfg_node *arr, size_t index);

/* ---- typed values. Return 1 stored, 0 absent (node NULL), -1 invalid
 * (error recorded, *out untouched). ---- */

/* A JSON string. *out (heap, or NULL) is freed and replaced by a copy. */
int qcfg_string(qcfg_node *node, unsigned flags, char **out);
/* A file or directory path: a non-empty string; a relative path is
 * resolved against the directory of the configuration file. Stored like
 * qcfg_string. */
int qcfg_path(qcfg_node *node, unsigned flags, char **out);
int qcfg_bool(qcfg_node *node, bool *out);
/* A JSON integer (not 1.0, not "1") within [min, max]. */
int qcfg_int(qcfg_node *node, int64_t min, int64_t max, int64_t *out);
/* A TCP port 1..65535 (0 too with QCFG_ZERO_OK). */
int qcfg_port(qcfg_node *node, unsigned flags, uint16_t *out);
/* One of the strings in `names` (NULL-terminated); stores its index. */
int qcfg_enum(qcfg_node *node, const char *const *names, int *out);
/* A duration: an integer number of seconds, or a string of a number and a
 * unit: "250ms", "30s", "5m", "2h", "1d". Stored in milliseconds, checked
 * against [min_ms, max_ms]. */
int qcfg_duration(qcfg_node *node, uint64_t min_ms, uint64_t max_ms,
                  uint64_t *out_ms);
/* A size: an integer number of bytes, or a string of a number and a unit:
 * "512", "64k", "10M", "1G" (K/M/G powers of 1024; case-insensitive,
 * optionally followed by "B" or "iB": "10MiB", "64KB"). Checked against
 * [min, max]. */
int qcfg_size(qcfg_node *node, uint64_t min, uint64_t max, uint64_t *out);

/* The unit parsers behind qcfg_duration/qcfg_size, for other callers
 * (command-line options). Return 0, or -1 with a static reason. */
int qcfg_parse_duration(const char *text, uint64_t *ms_r, const char **why_r);
int qcfg_parse_size(const char *text, uint64_t *bytes_r, const char **why_r);

/* ---- positions and errors ---- */

/* "listeners[0].port"; "" for the root. */
const char *qcfg_node_path(const qcfg_node *node);
/* Position of the value (and of its key, for object members; the value's
 * position otherwise). */
void qcfg_node_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r);
void qcfg_node_key_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r);

/* Records a caller's own error at a node ("FILE:L:C: key 'path': ...").
 * node NULL: at the document ("FILE: ..."). */
void qcfg_error_at(struct qcfg *doc, const qcfg_node *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void qcfg_verror_at(struct qcfg *doc, const qcfg_node *node, const char *fmt,
                    va_list ap);
/* The same, but pointing at the node's key rather than its value. */
void qcfg_error_at_key(struct qcfg *doc, const qcfg_node *node,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct qcfg *qcfg_node_doc(const qcfg_node *node);

size_t qcfg_error_count(const struct qcfg *doc);
/* The i-th error line, in the order found (borrowed). */
const char *qcfg_error(const struct qcfg *doc, size_t i);
/* All errors joined with '\n' (caller frees); NULL when there are none. */
char *qcfg_errors_join(const struct qcfg *doc);

/* ======================================================================
 * Part 2: the daemon configuration (qumail proxy)
 *
 * A plain struct, read-only after loading: every field is documented in
 * config/README.md with its JSON key, type and default. Strings are owned
 * by the struct (NULL when unset and optional); paths are absolute or
 * relative to the directory of the configuration file; durations are in
 * milliseconds and sizes in bytes.
 * ====================================================================== */

/* Values equal enum qlog_level of proxy/net/log.h. */
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

/* TLS towards the upstream server. */
enum qumail_upstream_tls {
    QUMAIL_UPSTREAM_TLS_NONE = 0,               /* "none" */
    QUMAIL_UPSTREAM_TLS_STARTTLS,               /* "starttls": required */
    QUMAIL_UPSTREAM_TLS_STARTTLS_OPPORTUNISTIC, /* "starttls-opportunistic":
                                                   when the server offers it */
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

struct qumail_smtp_listener {
    char *name;                  /* unique among listeners */
    char *address;               /* numeric IP; default "127.0.0.1" */
    uint16_t port;               /* required; 0 = pick a free port (tests) */
    enum qumail_listen_tls tls;  /* default none */
    char *cert_file, *key_file;  /* required unless tls is none */
    bool require_tls_for_auth;   /* default: false on loopback addresses,
                                    true otherwise */
};

struct qumail_smtp_upstream {
    char *host;                    /* default "127.0.0.1" */
    uint16_t port;                 /* default 25 in gateway mode, 587 in
                                      submission mode (465 when implicit) */
    enum qumail_upstream_tls tls;  /* default starttls */
    bool verify;                   /* default true: chain and host name */
    char *ca_file;                 /* NULL: the system trust store */
    char *server_name;             /* SNI and name checked; default: host */
    char *client_cert_file;        /* optional client certificate ... */
    char *client_key_file;         /* ... and its key (both or neither) */
    uint64_t timeout_ms;           /* connect and each reply; default 5m */
};

struct qumail_smtp_limits {
    uint64_t max_message_size;   /* bytes; default 25 MiB */
    uint32_t max_recipients;     /* per transaction; default 100 */
    uint32_t max_line_length;    /* incl. CRLF; default 4096 (min 1000) */
    uint64_t command_timeout_ms; /* idle wait for a command; default 5m */
    uint64_t data_timeout_ms;    /* idle wait during DATA; default 10m */
    uint32_t max_connections;    /* concurrent client sessions; default 100 */
};

struct qumail_smtp {
    enum qumail_smtp_mode mode;         /* default submission */
    char *hostname;                     /* EHLO/banner name; default: the
                                           system host name */
    struct qumail_smtp_listener *listeners; /* default: one, "submission",
                                               127.0.0.1:2587, tls none */
    size_t n_listeners;
    struct qumail_smtp_upstream upstream;
    struct qumail_cidr *trusted_networks; /* gateway mode: default
                                             127.0.0.0/8 and ::1/128 */
    size_t n_trusted_networks;
    struct qumail_smtp_limits limits;
    bool trace_header;                  /* add a Received: line; default true */
};

/* One ETSI GS QKD 014 KME this side talks to, as an SAE (mutual TLS). */
struct qumail_kme_link {
    char *name;          /* the key in "kme_links"; used by the policy */
    char *url;           /* "https://host[:port][/prefix]" as written,
                            without a trailing slash */
    char *host;          /* parsed from url */
    uint16_t port;       /* parsed from url; 443 when absent */
    char *path_prefix;   /* parsed from url; "" when absent */
    char *ca_file;       /* trust anchors for the KME; NULL: system store */
    char *cert_file;     /* our SAE client certificate (required) */
    char *key_file;      /* its private key (required) */
    uint64_t timeout_ms; /* per request; default 10s */
    uint32_t connections; /* keep-alive pool size; default 4 (1..64) */
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
    char *state_path;               /* SQLite file; default
                                       <state_dir>/kme-sim.sqlite */
    uint64_t key_rate;              /* secret key rate, bits/s; default 100000 */
    uint32_t max_key_count;         /* pool size in keys; default 10000 */
    uint32_t key_size;              /* default key size in bits; default 256 */
    uint32_t min_key_size;          /* default 64 */
    uint32_t max_key_size;          /* default 65536 */
    uint32_t max_keys_per_request;  /* default 128 */
    uint64_t key_expiry_ms;         /* uncollected keys; default 1h */
};

struct qumail_vault {
    char *path;      /* SQLite file; default <state_dir>/vault.sqlite */
    char *key_file;  /* at-rest key; default <state_dir>/vault.key */
};

struct qumail_config {
    char *file;                       /* path loaded; NULL for built-ins */
    enum qumail_log_level log_level;  /* default info */
    char *state_dir;                  /* default "/var/lib/qumail" */
    struct qumail_smtp smtp;
    struct qumail_kme_link *kme_links; /* in file order */
    size_t n_kme_links;
    struct qumail_kme_simulator kme_simulator;
    struct qumail_vault vault;
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
