/* The IMAP protocol entry: the settings of imap.*, the key vault and the
 * incoming protection (protect_in) for the daemon's life, the upstream TLS
 * context and the protected mailboxes per configuration generation, and
 * for each accepted connection an imap_session with the FETCH rewriter
 * (imap_decrypt) and the APPEND encryption (imap_append_glue) on its hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_append_glue.h"
#include "imap_decrypt.h"
#include "imap_session.h"
#include "incoming.h"
#include "kme_vault.h"
#include "log.h"
#include "services.h"
#include "upstream_tls.h"

/* Daemon-lifetime state: made at start when the imap section is on. */
struct imap_svc {
    proxy_daemon *d;
    kme_vault *vault;
    protect_in *pi;
    /* protect_in's counters into the metrics, every few seconds */
    uv_timer_t stats_timer;
    bool timer_on;
    struct protect_in_stats last;
    metric *m_builds, *m_keys, *m_kme_requests, *m_views, *m_view_bytes, *m_in_flight;
};

#define STATS_MS 5000

static void add_delta(metric *m, uint64_t now, uint64_t before, const char *label)
{
    if (now > before)
        metric_add(m, (double)(now - before), label);
}

static void stats_tick(uv_timer_t *t)
{
    struct imap_svc *svc = t->data;
    struct protect_in_stats st;
    protect_in_get_stats(svc->pi, &st);
    add_delta(svc->m_builds, st.decrypted, svc->last.decrypted, "decrypted");
    add_delta(svc->m_builds, st.notices, svc->last.notices, "notice");
    add_delta(svc->m_keys, st.keys_from_vault, svc->last.keys_from_vault, "vault");
    add_delta(svc->m_keys, st.keys_from_kme, svc->last.keys_from_kme, "kme");
    add_delta(svc->m_kme_requests, st.kme_requests, svc->last.kme_requests, NULL);
    metric_set(svc->m_views, (double)st.cached_views);
    metric_set(svc->m_view_bytes, (double)st.cached_bytes);
    metric_set(svc->m_in_flight, (double)st.in_flight);
    svc->last = st;
}

static void metrics_init(struct imap_svc *svc)
{
    metrics *reg = proxy_daemon_metrics(svc->d);
    imap_decrypt_set_metrics(reg);
    svc->m_builds = metrics_counter(reg, "qumail_imap_decrypt_builds_total",
                                    "Encrypted messages opened: decrypted, or a notice.", 1,
                                    "outcome");
    svc->m_keys = metrics_counter(reg, "qumail_imap_keys_total",
                                  "Keys used to decrypt, by where they came from.", 1, "source");
    svc->m_kme_requests = metrics_counter(reg, "qumail_imap_kme_requests_total",
                                          "dec_keys requests to the receiving KME.", 0);
    svc->m_views = metrics_gauge(reg, "qumail_imap_cached_views",
                                 "Decrypted messages held in memory.", 0);
    svc->m_view_bytes = metrics_gauge(reg, "qumail_imap_cached_bytes",
                                      "Bytes of decrypted messages held in memory.", 0);
    svc->m_in_flight = metrics_gauge(reg, "qumail_imap_builds_in_flight",
                                     "Encrypted messages being opened now.", 0);
    uv_timer_init(proxy_daemon_loop(svc->d), &svc->stats_timer);
    svc->stats_timer.data = svc;
    uv_timer_start(&svc->stats_timer, stats_tick, STATS_MS, STATS_MS);
    uv_unref((uv_handle_t *)&svc->stats_timer); /* never keeps the loop alive */
    svc->timer_on = true;
}

/* One configuration generation. */
struct imap_gen {
    net_tls *upstream_tls; /* NULL with upstream tls none */
    struct imap_append_gen *append; /* imap.protect_mailboxes, imap.append */
};

/* One session: the registry handle, ended from the closed hook, and its
 * FETCH rewriter (NULL when decryption is off). */
struct imap_svc_session {
    proxy_session *handle;
    imap_decrypt *dec;
    const struct imap_svc *svc;
    struct imap_append_sess *app; /* NULL: no mailbox protected */
};

static kme_client *link_of(void *arg, const char *name)
{
    struct imap_svc *svc = arg;
    return proxy_daemon_kme_link(svc->d, name);
}

static kme_source *source_of(void *arg, const char *name)
{
    struct imap_svc *svc = arg;
    return proxy_daemon_kme_source(svc->d, name);
}

static int imap_init(proxy_daemon *d, void **svc_r, char **error_r)
{
    const struct qumail_config *cfg = proxy_daemon_start_config(d);
    struct imap_svc *svc = calloc(1, sizeof(*svc));
    if (!svc) {
        *error_r = strdup("out of memory");
        return -1;
    }
    svc->d = d;
    *svc_r = svc;
    if (!cfg->imap.enabled || cfg->imap.n_listeners == 0)
        return 0;
    struct kme_vault_config vc = {
        .path = cfg->vault.path,
        .key_file = cfg->vault.key_file,
        .create_key = true,
    };
    char *err = NULL;
    int rc = kme_vault_open(&vc, &svc->vault, &err);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "key vault %s: %s", cfg->vault.path ? cfg->vault.path : "",
                 err ? err : kme_vault_strerror(rc));
        free(err);
        *error_r = strdup(msg);
        return -1;
    }
    const struct qumail_imap_decrypt *dc = &cfg->imap.decrypt;
    struct protect_in_config pc;
    protect_in_config_defaults(&pc);
    if (dc->cache_size)
        pc.cache_max_bytes = dc->cache_size;
    if (dc->cache_views)
        pc.cache_max_views = dc->cache_views;
    pc.notice_ttl_ms = dc->notice_ttl_ms;
    if (dc->max_message_size)
        pc.max_message_size = dc->max_message_size;
    pc.recipient_check = dc->recipient_check ? PROTECT_IN_CHECK_STRICT : PROTECT_IN_CHECK_OFF;
    pc.release_unbound = dc->release_unbound;
    pc.default_domain = dc->default_domain;
    struct protect_in_address *addrs = NULL;
    if (dc->n_addresses) {
        if (!(addrs = calloc(dc->n_addresses, sizeof(*addrs)))) {
            *error_r = strdup("out of memory");
            return -1;
        }
        for (size_t i = 0; i < dc->n_addresses; i++) {
            addrs[i].login = dc->addresses[i].login;
            addrs[i].address = dc->addresses[i].address;
        }
    }
    pc.addresses = addrs;
    pc.n_addresses = dc->n_addresses;
    struct protect_in_deps deps = {
        .loop = proxy_daemon_loop(d),
        .vault = svc->vault,
        .policies = proxy_daemon_policies(d),
        .link = link_of,
        .link_arg = svc,
        .source = source_of, /* ETSI 004 links */
        .source_arg = svc,
    };
    svc->pi = protect_in_new(&deps, &pc, &err);
    free(addrs);
    if (!svc->pi) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "imap.decrypt: %s", err ? err : "out of memory");
        free(err);
        *error_r = strdup(msg);
        return -1;
    }
    metrics_init(svc);
    qlog_info("imap: decrypt on FETCH, key vault %s", cfg->vault.path);
    return 0;
}

static void imap_free(void *arg)
{
    struct imap_svc *svc = arg;
    if (!svc)
        return;
    if (svc->timer_on)
        uv_close((uv_handle_t *)&svc->stats_timer, NULL);
    if (svc->pi) {
        protect_in_free(&svc->pi);
        /* the main loop has ended: let protect_in's handles close and its
         * work on the thread pool return before the vault goes */
        uv_run(proxy_daemon_loop(svc->d), UV_RUN_DEFAULT);
    }
    kme_vault_close(&svc->vault);
    free(svc);
}

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
    const struct imap_svc *svc = arg;
    const struct qumail_imap *imap = &cfg->imap;
    struct imap_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        *error_r = strdup("out of memory");
        return -1;
    }
    bool on = imap->enabled && imap->n_listeners > 0;
    if (on && imap->upstream.tls != QUMAIL_UPSTREAM_TLS_NONE &&
        !(g->upstream_tls = services_upstream_tls_new(&imap->upstream, "imap upstream",
                                                      "imap.upstream.verify", error_r))) {
        free(g);
        return -1;
    }
    /* no vault (cannot happen with the imap section on): protected
     * APPENDs are refused, never stored in plaintext */
    if (on && imap_append_gen_new(imap, svc ? svc->vault : NULL, &g->append, error_r) < 0) {
        net_tls_free(&g->upstream_tls);
        free(g);
        return -1;
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
    imap_append_gen_free(&g->append);
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
    imap_decrypt_free(&ss->dec);
    imap_append_sess_free(&ss->app);
    proxy_session_end(&ss->handle);
    free(ss);
}

static void session_login(void *ctx, imap_session *s, const char *user)
{
    struct imap_svc_session *ss = ctx;
    (void)s;
    if (ss->dec)
        imap_decrypt_login(ss->dec, user);
    if (ss->app) {
        /* the owner of the copies it APPENDs: its first address, from the
         * same login -> address mapping the reading side uses */
        protect_in_reader *r =
            ss->svc && ss->svc->pi ? protect_in_reader_new(ss->svc->pi, user) : NULL;
        const char *owner = r && protect_in_reader_address_count(r) > 0
                                ? protect_in_reader_address(r, 0)
                                : NULL;
        imap_append_sess_set_owner(ss->app, owner);
        protect_in_reader_free(&r);
    }
}

/* The APPEND hooks, forwarded to the session's imap_append_sess. */
static enum imap_append_verdict ah_mailbox(void *ctx, imap_session *s, const char *name,
                                           bool listed)
{
    (void)s;
    return imap_append_glue_mailbox(((struct imap_svc_session *)ctx)->app, name, listed);
}
static void ah_list(void *ctx, imap_session *s, const char *name, const char *const *attrs,
                    size_t n, bool own)
{
    (void)s;
    imap_append_glue_list(((struct imap_svc_session *)ctx)->app, name, attrs, n, own);
}
static void *ah_protect(void *ctx, imap_session *s, int fd, uint64_t len, const char **code_r,
                        const char **text_r)
{
    return imap_append_glue_protect(((struct imap_svc_session *)ctx)->app, s, fd, len, code_r,
                                    text_r);
}
static void ah_cancel(void *ctx, imap_session *s, void *job)
{
    (void)s;
    imap_append_glue_cancel(((struct imap_svc_session *)ctx)->app, job);
}

/* The FETCH hooks, forwarded to the session's rewriter. */
static void *fh_command(void *ctx, imap_session *s, const struct imap_fetch *f, char **rewrite_r,
                        bool *prepare_r)
{
    struct imap_svc_session *ss = ctx;
    return ss->dec ? imap_decrypt_command(ss->dec, s, f, rewrite_r, prepare_r) : NULL;
}
static void fh_prepare(void *ctx, imap_session *s, void *cmd)
{
    imap_decrypt_prepare(((struct imap_svc_session *)ctx)->dec, s, cmd);
}
static void fh_begin(void *ctx, imap_session *s, void *cmd, uint32_t seq)
{
    imap_decrypt_response_begin(((struct imap_svc_session *)ctx)->dec, s, cmd, seq);
}
static enum imap_fetch_verdict fh_item(void *ctx, imap_session *s, void *cmd, const char *name,
                                       unsigned index)
{
    return imap_decrypt_item(((struct imap_svc_session *)ctx)->dec, s, cmd, name, index);
}
static void fh_value(void *ctx, imap_session *s, void *cmd, const struct imap_token *tok,
                     bool last)
{
    imap_decrypt_value(((struct imap_svc_session *)ctx)->dec, s, cmd, tok, last);
}
static enum imap_fetch_flow fh_end(void *ctx, imap_session *s, void *cmd)
{
    return imap_decrypt_response_end(((struct imap_svc_session *)ctx)->dec, s, cmd);
}
static void fh_command_end(void *ctx, imap_session *s, void *cmd, enum imap_status status)
{
    imap_decrypt_command_end(((struct imap_svc_session *)ctx)->dec, s, cmd, status);
}

static void fh_own_data(void *ctx, imap_session *s, void *own, const struct imap_resp_event *ev)
{
    imap_decrypt_own_data(((struct imap_svc_session *)ctx)->dec, s, own, ev);
}
static void *sh_command(void *ctx, imap_session *s, enum imap_verb verb, bool uid,
                        const struct imap_args *args, size_t first, bool *prepare_r)
{
    struct imap_svc_session *ss = ctx;
    return ss->dec ? imap_decrypt_search_command(ss->dec, s, verb, uid, args, first, prepare_r)
                   : NULL;
}
static void sh_prepare(void *ctx, imap_session *s, void *cmd)
{
    imap_decrypt_search_prepare(((struct imap_svc_session *)ctx)->dec, s, cmd);
}

static const struct imap_session_hooks hooks = {
    .login = session_login,
    .fetch = {.command = fh_command,
              .prepare = fh_prepare,
              .response_begin = fh_begin,
              .item = fh_item,
              .value = fh_value,
              .response_end = fh_end,
              .command_end = fh_command_end,
              .own_data = fh_own_data},
    .search = {.command = sh_command, .prepare = sh_prepare, .command_end = fh_command_end},
    .closed = session_closed,
};

/* Added for sessions with protected mailboxes (the session copies its hooks). */
static const struct imap_append_hooks append_hooks = {
    .mailbox = ah_mailbox, .list = ah_list, .protect = ah_protect, .cancel = ah_cancel};

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
    const struct imap_svc *svc = a->svc;
    if (svc && svc->pi && !(ss->dec = imap_decrypt_new(svc->pi, a->cfg->imap.search.max_decrypt))) {
        free(ss);
        net_conn_close(&conn);
        return NULL;
    }
    ss->svc = svc;
    if (imap_append_gen_active(g->append) &&
        !(ss->app = imap_append_sess_new(g->append, a->loop))) {
        imap_decrypt_free(&ss->dec);
        free(ss);
        net_conn_close(&conn);
        return NULL;
    }
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
        .max_protected_append = imap->append.max_size,
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
    struct imap_session_hooks h = hooks;
    if (ss->app)
        h.append = append_hooks;
    imap_session *s = imap_session_new(a->loop, conn, &sc, &h, ss);
    if (!s) {
        /* the connection is closed and the hooks never ran */
        imap_append_sess_free(&ss->app);
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
    .init = imap_init,
    .free = imap_free,
    .gen_new = imap_gen_new,
    .gen_free = imap_gen_free,
    .accept = imap_accept,
    .close = imap_close,
    .refuse = imap_refuse,
};
