/* proxy_daemon: the qumail proxy process, protocol-neutral.
 *
 * The core owns what every protocol shares and names none of them:
 *  - the process: signals (SIGHUP reloads, SIGINT/SIGTERM stop), reload of
 *    the configuration and the policy;
 *  - listeners, built from a table of protocols (struct proxy_protocol:
 *    which listeners a configuration gives it, and its accept);
 *  - one session registry: every live client session of every protocol,
 *    with the connection limits (max_connections and
 *    max_connections_per_address of the protocol) enforced at accept, and
 *    ONE unlink place (proxy_session_end);
 *  - the KME links (one kme_client per configured link), the embedded KME
 *    simulator, the policy store.
 *
 * Configuration generations. Each reload builds a new generation: the new
 * configuration and each protocol's state for it (gen_new: e.g. its
 * upstream TLS context). New sessions start in the current generation; a
 * session keeps the one it started in (and its listener's TLS context)
 * until proxy_session_end, so nothing it points at is freed under it. A
 * generation is freed when it is neither current nor used by a session.
 * Listeners whose settings are unchanged stay bound across a reload; KME
 * links and the simulator need a restart.
 *
 * A protocol plugs in with one table entry:
 *
 *     static const struct proxy_protocol imap = {
 *         .name = "imap",
 *         .settings = imap_settings,   // cfg->imap.listeners, limits.conn
 *         .gen_new = imap_gen_new,     // optional: upstream TLS context
 *         .gen_free = imap_gen_free,
 *         .accept = imap_accept,       // starts a session on a->conn
 *         .close = imap_close,         // shutdown: close a session now
 *         .refuse = imap_refuse,       // "* BYE Too many connections"
 *     };
 *
 * and the front end passes the table to proxy_daemon_new(). */
#ifndef QUMAIL_PROXY_DAEMON_H
#define QUMAIL_PROXY_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "kme_client.h"
#include "kme_source.h"
#include "metrics.h"
#include "net.h"
#include "policy.h"
#include "settings.h"

typedef struct proxy_daemon proxy_daemon;
typedef struct proxy_session proxy_session;

/* What a protocol's accept gets. Every pointer stays valid until the
 * session calls proxy_session_end (the generation and the listener's TLS
 * context are kept alive for it). */
struct proxy_accept {
    proxy_daemon *daemon;
    uv_loop_t *loop;
    void *svc;                              /* the protocol's init state */
    void *gen;                              /* its gen_new state for cfg */
    const struct qumail_config *cfg;        /* the session's configuration */
    const struct qumail_listener *listener; /* in cfg */
    net_tls *tls;                 /* the listener's server context; NULL
                                     when its tls is none */
    net_conn *conn;               /* the accepted connection (plain; the
                                     protocol owns it now and starts TLS
                                     itself on implicit-TLS listeners) */
    const struct sockaddr *peer;  /* the client's address */
    proxy_session *session;       /* the registry handle */
};

struct proxy_protocol {
    const char *name;   /* "smtp", "imap": logs */
    /* The protocol's listeners and connection limits in a configuration;
     * no listeners: the protocol is off. */
    void (*settings)(const struct qumail_config *cfg,
                     const struct qumail_listener **listeners_r, size_t *n_r,
                     const struct qumail_conn_limits **limits_r);
    /* Optional: daemon-lifetime state, made at start (after the KME links)
     * and freed by proxy_daemon_free (after the loop ended, so after the
     * last session and anything it left on the thread pool). */
    int (*init)(proxy_daemon *d, void **svc_r, char **error_r);
    void (*free)(void *svc);
    /* Optional: state for one configuration generation, made at start and
     * at each reload (an error refuses the reload), freed when the
     * generation is. */
    int (*gen_new)(void *svc, const struct qumail_config *cfg, void **gen_r,
                   char **error_r);
    void (*gen_free)(void *gen);
    /* Takes over a->conn. Returns the protocol's session, which calls
     * proxy_session_end(a->session) exactly once, when it is gone; or NULL
     * when it could not start: the connection is then closed and
     * proxy_session_end is not called. */
    void *(*accept)(const struct proxy_accept *a);
    /* Shutdown: close a session now. Its proxy_session_end follows, at
     * once or on a later loop turn. */
    void (*close)(void *session);
    /* Optional: the session is in the middle of something closing would
     * cut (an SMTP transaction). SIGTERM waits for busy sessions (up to
     * PROXY_DRAIN_MS) and closes the idle ones at once. */
    bool (*busy)(void *session);
    /* A connection over a limit, on a plain listener: queue the protocol's
     * goodbye ("421 4.7.0 <reason>", "* BYE <reason>"); the core closes
     * after the write. */
    void (*refuse)(net_conn *conn, const char *reason);
};

/* ---- the process (the front end) ---------------------------------------- */

/* Sets everything up on loop (binds every protocol's listeners, loads the
 * policy, starts the simulator and the KME links). The table (n entries)
 * and cfg must outlive the daemon; cfg->file is re-read on SIGHUP, and
 * configurations loaded by reloads are the daemon's own. NULL + *error_r
 * (caller frees) on failure; then run the loop (handles close) and call
 * nothing else. */
proxy_daemon *proxy_daemon_new(uv_loop_t *loop, const struct qumail_config *cfg,
                               const struct proxy_protocol *const *protocols,
                               size_t n, char **error_r);
/* Bound port of the i-th listener of a protocol (useful with port 0), 0
 * when there is none. */
uint16_t proxy_daemon_listener_port(const proxy_daemon *d, const char *protocol,
                                    size_t i);
/* Stops: closes listeners, every session (the protocols' close), the KME
 * clients, the simulator, the signal handles. The loop then ends by
 * itself. */
void proxy_daemon_stop(proxy_daemon *d);
/* What SIGTERM does: stops accepting (listeners closed, systemd told
 * STOPPING=1, /readyz says stopping), closes idle sessions, lets busy ones
 * finish what they are doing, and stops once none is busy or after
 * PROXY_DRAIN_MS. A second SIGTERM, or SIGINT, stops at once. */
#define PROXY_DRAIN_MS 30000
void proxy_daemon_drain(proxy_daemon *d);
/* Frees after the loop has ended. Clears *d. */
void proxy_daemon_free(proxy_daemon **d);
/* Reloads the configuration and policy now (what SIGHUP does). 0, or -1
 * when refused (logged; nothing changed). */
int proxy_daemon_reload(proxy_daemon *d);

/* ---- for protocols -------------------------------------------------------- */

/* The session is gone: unlinks it from the registry, releases its
 * connection slot, its generation and its listener. The one unlink place;
 * call it exactly once. Clears *s. */
void proxy_session_end(proxy_session **s);

uv_loop_t *proxy_daemon_loop(const proxy_daemon *d);
/* A new reference to the current policy snapshot (policy_unref it). */
policy *proxy_daemon_policy(proxy_daemon *d);
/* The store behind it, for layers that take a snapshot per request. */
policy_store *proxy_daemon_policies(proxy_daemon *d);
/* The configuration the daemon started with (a protocol's init reads
 * daemon-lifetime settings from it: the vault; those need a restart). */
const struct qumail_config *proxy_daemon_start_config(const proxy_daemon *d);
/* The KME client of a configured ETSI 014 link; NULL when there is no
 * such link, when it is an ETSI 004 link, or after stop. */
kme_client *proxy_daemon_kme_link(proxy_daemon *d, const char *name);
/* The key source of a configured link of either kind (kme/kme_source.h);
 * NULL when there is no such link (or after stop). */
kme_source *proxy_daemon_kme_source(proxy_daemon *d, const char *name);
/* Live sessions of a protocol (all protocols: NULL). */
size_t proxy_daemon_sessions(const proxy_daemon *d, const char *protocol);
/* The process's metrics registry (proxy/admin/metrics.h): protocols
 * declare and update their metrics in it; /metrics renders it. */
metrics *proxy_daemon_metrics(proxy_daemon *d);
/* Bound port of the admin listener, 0 when there is none. */
uint16_t proxy_daemon_admin_port(const proxy_daemon *d);

#endif
