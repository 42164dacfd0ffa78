/* The IMAP protocol entry: the settings of imap.*, the upstream TLS
 * context per configuration generation, and an imap_session for each
 * accepted connection. Pass-through only: the FETCH hooks (decryption,
 * issue 12) are not set yet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_session.h"
#include "log.h"
#include "services.h"

/* One configuration generation. */
struct imap_gen {
    net_tls *upstream_tls; /* NULL with upstream tls none */
};

/* One session: the registry handle, ended from the closed hook. */
struct imap_svc_session {
    proxy_session *handle;
};

static void imap_settings(const struct qumail_config *cfg,
                          const struct qumail_listener **listeners_r, size_t *n_r,
                          const struct qumail_conn_limits **limits_r)
{
    *listeners_r = cfg->imap.enabled ? cfg->imap.listeners : NULL;
    *n_r = cfg->imap.enabled ? cfg->imap.n_listeners : 0;
    *limits_r = &cfg->imap.limits.conn;
}

static int imap_gen_new(void *arg, const struct qumail_config *cfg, void **gen_r,
                        char **error_r)
{
    (void)arg;
    const struct qumail_imap *imap = &cfg->imap;
    struct imap_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        *error_r = strdup("out of memory");
        return -1;
    }
    bool on = imap->enabled && imap->n_listeners > 0;
    if (on && imap->upstream.tls != QUMAIL_UPSTREAM_TLS_NONE) {
        struct net_tls_config tc = {
            .server = false,
            .cert_file = imap->upstream.client_cert_file,
            .key_file = imap->upstream.client_key_file,
            .ca_file = imap->upstream.ca_file,
            .verify_peer = imap->upstream.verify,
        };
        char *err = NULL;
        if (!(g->upstream_tls = net_tls_new(&tc, &err))) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "imap upstream TLS: %s", err ? err : "TLS setup failed");
            free(err);
            free(g);
            *error_r = strdup(msg);
            return -1;
        }
        if (!imap->upstream.verify)
            qlog_warn("imap upstream TLS certificate verification is OFF (imap.upstream.verify)");
    }
    if (on)
        qlog_info("imap: upstream %s:%u (%s)%s", imap->upstream.host, imap->upstream.port,
                  qumail_upstream_tls_name(imap->upstream.tls),
                  imap->upstream.trust_id ? ", client address sent in ID" : "");
    *gen_r = g;
    return 0;
}

static void imap_gen_free(void *arg)
{
    struct imap_gen *g = arg;
    net_tls_free(&g->upstream_tls);
    free(g);
}

static enum imap_upstream_tls upstream_tls_mode(enum qumail_upstream_tls t)
{
    switch (t) {
    case QUMAIL_UPSTREAM_TLS_STARTTLS: return IMAP_UPSTREAM_STARTTLS;
    case QUMAIL_UPSTREAM_TLS_IMPLICIT: return IMAP_UPSTREAM_IMPLICIT;
    default: return IMAP_UPSTREAM_PLAIN;
    }
}

static void session_closed(void *ctx, imap_session *s)
{
    struct imap_svc_session *ss = ctx;
    (void)s;
    proxy_session_end(&ss->handle);
    free(ss);
}

static const struct imap_session_hooks hooks = {.closed = session_closed};

static void *imap_accept(const struct proxy_accept *a)
{
    const struct imap_gen *g = a->gen;
    const struct qumail_imap *imap = &a->cfg->imap;
    const struct qumail_listener *l = a->listener;
    net_conn *conn = a->conn;
    struct imap_svc_session *ss = calloc(1, sizeof(*ss));
    if (!ss) {
        net_conn_close(&conn);
        return NULL;
    }
    ss->handle = a->session;
    /* where the client connected, for the upstream's x-connected-ip */
    char local[80] = "";
    if (l->port != 0)
        snprintf(local, sizeof(local), strchr(l->address, ':') ? "[%s]:%u" : "%s:%u",
                 l->address, l->port);
    struct imap_session_config sc = {
        .listener = l->name,
        .tls_ctx = a->tls,
        .implicit_tls = l->tls == QUMAIL_LISTEN_TLS_IMPLICIT,
        .require_tls_for_auth = l->require_tls_for_auth,
        .login_timeout_ms = imap->limits.login_timeout_ms,
        .idle_timeout_ms = imap->limits.idle_timeout_ms,
        .command_timeout_ms = imap->limits.command_timeout_ms,
        .max_line = imap->limits.max_line_length,
        .max_append = imap->limits.max_literal_size,
        .upstream = {
            .host = imap->upstream.host,
            .port = imap->upstream.port,
            .tls = upstream_tls_mode(imap->upstream.tls),
            .tls_ctx = g->upstream_tls,
            .server_name = imap->upstream.server_name,
            .setup_timeout_ms = imap->upstream.timeout_ms,
            .command_timeout_ms = imap->upstream.timeout_ms,
            .send_client_id = imap->upstream.trust_id,
            .local_addr = local[0] ? local : NULL,
            .limits = {.max_token = imap->limits.max_line_length},
        },
    };
    imap_session *s = imap_session_new(a->loop, conn, &sc, &hooks, ss);
    if (!s) {
        /* the connection is closed and the hooks never ran */
        free(ss);
        return NULL;
    }
    return s;
}

static void imap_close(void *session)
{
    imap_session_close(session, "Server shutting down.");
}

static void imap_refuse(net_conn *conn, const char *reason)
{
    net_conn_printf(conn, "* BYE %s\r\n", reason);
}

const struct proxy_protocol proxy_imap_protocol = {
    .name = "imap",
    .settings = imap_settings,
    .gen_new = imap_gen_new,
    .gen_free = imap_gen_free,
    .accept = imap_accept,
    .close = imap_close,
    .refuse = imap_refuse,
};
