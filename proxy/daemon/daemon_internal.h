/* Internals shared by the daemon core's files; not a public header.
 *
 *   daemon.c    process: setup, signals, stop, free, accessors
 *   reload.c    SIGHUP: a new generation, listeners reconciled
 *   listen.c    listeners from the protocol table; accept
 *   registry.c  the session registry and the per-address counts
 *   kme.c       KME links and the embedded simulator */
#ifndef QUMAIL_PROXY_DAEMON_INTERNAL_H
#define QUMAIL_PROXY_DAEMON_INTERNAL_H

#include <stdbool.h>

#include "daemon.h"
#include "kme_server.h"
#include "metrics.h"

/* A configuration generation: the configuration and each protocol's state
 * for it. Referenced by the daemon while current and by every session
 * started in it. */
struct proxy_gen {
    unsigned refs;
    proxy_daemon *d;
    const struct qumail_config *cfg;
    struct qumail_config *owned;  /* loaded by a reload; NULL: the caller's */
    void **proto_gen;             /* one per protocol (gen_new), or NULL */
};

/* A bound listener. Referenced by the daemon while open and by every
 * session accepted on it (its TLS context serves their STARTTLS). */
struct proxy_listener {
    unsigned refs;
    proxy_daemon *d;
    struct proxy_listener *next;       /* open ones, in configuration order */
    size_t proto;                      /* index in the protocol table */
    const struct qumail_listener *cfg; /* in the current generation */
    char *name;                        /* for logs (own copy) */
    net_listener *listener;            /* NULL once closed */
    net_tls *tls;
    bool fresh;                        /* opened by the reload in progress */
};

/* One live session of any protocol. */
struct proxy_session {
    proxy_daemon *d;
    struct proxy_session *prev, *next;
    size_t proto;
    void *impl;                    /* the protocol's session */
    struct proxy_gen *gen;
    struct proxy_listener *listener;
    struct addr_count *addr;       /* its client address's counter */
    bool close_sent;               /* stop asked the protocol to close it */
};

struct link_state {
    const struct qumail_kme_link *cfg; /* in the first generation (the
                                          caller's configuration) */
    kme_client *client;       /* kind etsi014, else NULL */
    kme_source *source;       /* either kind; owns a 004 link's client */
};

struct proxy_proto_state {
    const struct proxy_protocol *p;
    void *svc;                    /* init's state */
    size_t n_sessions;
};

struct proxy_daemon {
    uv_loop_t *loop;
    const struct proxy_protocol *const *table;
    struct proxy_proto_state *protos; /* n_protos */
    size_t n_protos;
    const struct qumail_config *first_cfg; /* the caller's */
    struct proxy_gen *gen;            /* current */
    struct proxy_listener *listeners; /* open */
    struct link_state *links;
    size_t n_links;
    const char **link_names;   /* NULL-terminated, for the policy loader */
    policy_store *policies;
    kme_server *kme_sim;
    uv_signal_t sig_hup, sig_int, sig_term;
    bool signals_on;
    /* registry */
    struct proxy_session *sessions;
    size_t n_sessions;
    struct addr_count **addr_buckets;
    size_t n_addr_buckets;
    size_t n_addrs;
    bool stopping;
    bool draining;
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    /* operator.c */
    metrics *metrics;
    struct proxy_ops *ops;
};

/* operator.c: metrics, the admin listener, the reachability probes. */
int proxy_ops__init(proxy_daemon *d);                   /* before protocols */
int proxy_ops__start(proxy_daemon *d, char **error_r);  /* listeners bound */
void proxy_ops__reloaded(proxy_daemon *d, const struct qumail_config *first);
void proxy_ops__reload_count(proxy_daemon *d, bool ok);
/* A session of protocol proto was accepted / refused / ended. */
void proxy_ops__session_count(proxy_daemon *d, size_t proto, bool accepted, bool refused);
void proxy_ops__stop(proxy_daemon *d);
void proxy_ops__free(proxy_daemon *d);

/* daemon.c */
const struct qumail_config *proxy_daemon__cfg(const proxy_daemon *d);
/* Shortcut to a protocol's settings in a configuration. */
void proxy_daemon__settings(const proxy_daemon *d, size_t proto,
                            const struct qumail_config *cfg,
                            const struct qumail_listener **ls, size_t *n,
                            const struct qumail_conn_limits **limits);

/* Generations (reload.c). */
struct proxy_gen *proxy_gen__new(proxy_daemon *d, const struct qumail_config *cfg,
                                 struct qumail_config *owned, char **error_r);
void proxy_gen__unref(struct proxy_gen **g);

/* listen.c */
struct proxy_listener *proxy_listener__open(proxy_daemon *d, size_t proto,
                                            const struct qumail_listener *lc,
                                            uint32_t backlog, char **error_r);
/* Stops accepting; freed when its last session ends. */
void proxy_listener__close(struct proxy_listener *l);
void proxy_listener__unref(struct proxy_listener **l);
bool proxy_listener__same(const struct qumail_listener *a,
                          const struct qumail_listener *b);
/* Opens every listener of every protocol of the current generation, in
 * order, onto d->listeners. */
int proxy_listener__open_all(proxy_daemon *d, char **error_r);

/* registry.c: admission, then the handle. reason_r: why refused. */
bool proxy_registry__admit(proxy_daemon *d, size_t proto, const struct sockaddr *peer,
                           const char **reason_r);
proxy_session *proxy_registry__add(proxy_daemon *d, size_t proto,
                                   struct proxy_listener *l,
                                   const struct sockaddr *peer);
/* Asks each protocol to close each session (stop). */
void proxy_registry__close_all(proxy_daemon *d);
void proxy_registry__free(proxy_daemon *d);
/* "1.2.3.4:25" or "[::1]:25" -> sockaddr. */
int proxy_registry__peer_sockaddr(const char *peer, struct sockaddr_storage *ss);

/* kme.c */
int proxy_kme__start(proxy_daemon *d, char **error_r);
void proxy_kme__stop(proxy_daemon *d);

#endif
