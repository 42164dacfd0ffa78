/* Internals shared by daemon.c (process, listeners, sessions) and
 * pipeline.c (what happens to a message). */
#ifndef QUMAIL_PROXY_DAEMON_INTERNAL_H
#define QUMAIL_PROXY_DAEMON_INTERNAL_H

#include <stdbool.h>

#include "settings.h"
#include "daemon.h"
#include "kme_client.h"
#include "kme_server.h"
#include "net.h"
#include "policy.h"
#include "smtp_session.h"

struct link_state {
    const struct qumail_kme_link *cfg;
    kme_client *client;
};

/* Cached KME identities per (link, slave SAE): the encryption's control
 * part names the source KME and the master SAE. */
struct kme_ids {
    struct kme_ids *next;
    char *link, *slave, *source_kme_id, *master_sae_id;
};

struct listener_state {
    proxy_daemon *d;
    struct listener_state *next;        /* in configuration order */
    const struct qumail_listener *cfg;
    net_listener *listener;
    net_tls *tls;
};

/* Things sessions may still point at after a reload replaced them: kept
 * until the daemon is freed. */
struct retired {
    struct retired *next;
    net_tls *tls;
    struct qumail_config *cfg;
};

struct job; /* pipeline.c */

/* One per client session: the policy snapshot it started with and the
 * message job in flight. */
struct session_ctx {
    proxy_daemon *d;
    struct session_ctx *prev, *next;
    smtp_session *session;
    policy *pol;
    struct job *job;
};

struct proxy_daemon {
    uv_loop_t *loop;
    const struct qumail_config *cfg;
    struct listener_state *listeners;
    net_tls *upstream_tls;
    struct retired *retired;
    struct qumail_config *owned_cfg;   /* loaded by a reload (else NULL) */
    struct link_state *links;
    size_t n_links;
    const char **link_names;   /* NULL-terminated, for the policy loader */
    struct kme_ids *ids;
    policy_store *policies;
    kme_server *kme_sim;
    uv_signal_t sig_hup, sig_int, sig_term;
    struct session_ctx *sessions;
    size_t n_sessions;
    bool stopping;
    uint64_t messages;
};

struct link_state *proxy_daemon_link(proxy_daemon *d, const char *name);
const struct kme_ids *proxy_daemon_ids(proxy_daemon *d, const char *link, const char *slave);
int proxy_daemon_ids_store(proxy_daemon *d, const char *link, const char *slave,
                     const char *source_kme_id, const char *master_sae_id);

/* pipeline.c: the session hooks. */
extern const struct smtp_session_hooks proxy_pipeline_hooks;

#endif
