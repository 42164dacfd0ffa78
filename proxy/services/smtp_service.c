/* The SMTP protocol entry: the settings of smtp.*, the upstream TLS
 * context per configuration generation, and smtp_session with the
 * outgoing protection hooks for each accepted connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "outgoing.h"
#include "services.h"
#include "smtp_session.h"
#include "upstream_tls.h"

/* Daemon lifetime. */
struct smtp_svc {
    proxy_daemon *d;
    protect_out *po;
};

/* One configuration generation. */
struct smtp_gen {
    net_tls *upstream_tls; /* NULL with upstream tls none */
};

/* One session: the registry handle, ended from the closed hook. */
struct smtp_svc_session {
    proxy_session *handle;
};

static void smtp_settings(const struct qumail_config *cfg,
                          const struct qumail_listener **listeners_r, size_t *n_r,
                          const struct qumail_conn_limits **limits_r)
{
    *listeners_r = cfg->smtp.listeners;
    *n_r = cfg->smtp.n_listeners;
    *limits_r = &cfg->smtp.limits.conn;
}

static kme_source *find_link(void *arg, const char *name)
{
    struct smtp_svc *svc = arg;
    return proxy_daemon_kme_source(svc->d, name);
}

static int smtp_init(proxy_daemon *d, void **svc_r, char **error_r)
{
    struct smtp_svc *svc = calloc(1, sizeof(*svc));
    if (!svc || !(svc->po = protect_out_new(proxy_daemon_loop(d), find_link, svc))) {
        free(svc);
        *error_r = strdup("out of memory");
        return -1;
    }
    svc->d = d;
    protect_out_set_metrics(svc->po, proxy_daemon_metrics(d));
    *svc_r = svc;
    return 0;
}

static void smtp_free(void *arg)
{
    struct smtp_svc *svc = arg;
    protect_out_free(&svc->po);
    free(svc);
}

static int smtp_gen_new(void *arg, const struct qumail_config *cfg, void **gen_r,
                        char **error_r)
{
    (void)arg;
    const struct qumail_smtp *smtp = &cfg->smtp;
    struct smtp_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        *error_r = strdup("out of memory");
        return -1;
    }
    if (smtp->n_listeners > 0 && smtp->upstream.tls != QUMAIL_UPSTREAM_TLS_NONE &&
        !(g->upstream_tls = services_upstream_tls_new(&smtp->upstream, "upstream",
                                                      "smtp.upstream.verify", error_r))) {
        free(g);
        return -1;
    }
    if (smtp->n_listeners > 0)
        qlog_info("smtp: %s mode, upstream %s:%u (%s)", qumail_smtp_mode_name(smtp->mode),
                  smtp->upstream.host, smtp->upstream.port,
                  qumail_upstream_tls_name(smtp->upstream.tls));
    *gen_r = g;
    return 0;
}

static void smtp_gen_free(void *arg)
{
    struct smtp_gen *g = arg;
    net_tls_free(&g->upstream_tls);
    free(g);
}

static enum smtp_upstream_tls upstream_tls_mode(enum qumail_upstream_tls t)
{
    switch (t) {
    case QUMAIL_UPSTREAM_TLS_STARTTLS: return SMTP_UPSTREAM_STARTTLS;
    case QUMAIL_UPSTREAM_TLS_STARTTLS_OPPORTUNISTIC: return SMTP_UPSTREAM_STARTTLS_OPPORTUNISTIC;
    case QUMAIL_UPSTREAM_TLS_IMPLICIT: return SMTP_UPSTREAM_IMPLICIT;
    default: return SMTP_UPSTREAM_PLAIN;
    }
}

/* The session is gone (the protection layer's closed callback). */
static void session_closed(void *arg)
{
    struct smtp_svc_session *ss = arg;
    proxy_session_end(&ss->handle);
    free(ss);
}

static void *smtp_accept(const struct proxy_accept *a)
{
    struct smtp_svc *svc = a->svc;
    const struct smtp_gen *g = a->gen;
    const struct qumail_smtp *smtp = &a->cfg->smtp;
    net_conn *conn = a->conn;
    struct smtp_svc_session *ss = calloc(1, sizeof(*ss));
    protect_out_session *ps = ss ? protect_out_session_new(svc->po, proxy_daemon_policy(a->daemon),
                                                           session_closed, ss)
                                 : NULL;
    if (!ps) {
        free(ss);
        net_conn_close(&conn);
        return NULL;
    }
    ss->handle = a->session;
    struct smtp_session_config sc = {
        .hostname = smtp->hostname,
        .listener = a->listener->name,
        .tls_ctx = a->tls,
        .implicit_tls = a->listener->tls == QUMAIL_LISTEN_TLS_IMPLICIT,
        .gateway = smtp->mode == QUMAIL_SMTP_GATEWAY,
        .trusted = qumail_config_trusted(a->cfg, a->peer),
        .require_tls_for_auth = a->listener->require_tls_for_auth,
        .trace_header = smtp->trace_header,
        .max_message_size = smtp->limits.max_message_size,
        .max_recipients = smtp->limits.max_recipients,
        .max_line_length = smtp->limits.max_line_length,
        .command_timeout_ms = smtp->limits.command_timeout_ms,
        .data_timeout_ms = smtp->limits.data_timeout_ms,
        .spool_dir = NULL,
        .upstream = {
            .host = smtp->upstream.host,
            .port = smtp->upstream.port,
            .tls = upstream_tls_mode(smtp->upstream.tls),
            .tls_ctx = g->upstream_tls,
            .server_name = smtp->upstream.server_name,
            .helo_name = smtp->hostname,
            .timeout_ms = smtp->upstream.timeout_ms,
        },
    };
    smtp_session *s = smtp_session_new(a->loop, conn, &sc, &protect_out_hooks, ps);
    if (!s) {
        /* The connection is closed and the hooks never ran. */
        protect_out_session_free(&ps);
        free(ss);
        return NULL;
    }
    return s;
}

static void smtp_close(void *session)
{
    smtp_session_close(session);
}

static bool smtp_busy(void *session)
{
    return smtp_session_busy(session);
}

static void smtp_refuse(net_conn *conn, const char *reason)
{
    net_conn_printf(conn, "421 4.7.0 %s\r\n", reason);
}

const struct proxy_protocol proxy_smtp_protocol = {
    .name = "smtp",
    .settings = smtp_settings,
    .init = smtp_init,
    .free = smtp_free,
    .gen_new = smtp_gen_new,
    .gen_free = smtp_gen_free,
    .accept = smtp_accept,
    .close = smtp_close,
    .busy = smtp_busy,
    .refuse = smtp_refuse,
};
