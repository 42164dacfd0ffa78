/* The proxy daemon: listeners, TLS contexts, KME links, the embedded KME
 * simulator, policy reload, signals and the list of live sessions. */
#include <arpa/inet.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

/* ---- KME identities cache --------------------------------------------------- */

const struct kme_ids *proxy_daemon_ids(proxy_daemon *d, const char *link, const char *slave)
{
    for (struct kme_ids *i = d->ids; i; i = i->next)
        if (strcmp(i->link, link) == 0 && strcmp(i->slave, slave) == 0)
            return i;
    return NULL;
}

int proxy_daemon_ids_store(proxy_daemon *d, const char *link, const char *slave,
                     const char *source_kme_id, const char *master_sae_id)
{
    if (proxy_daemon_ids(d, link, slave))
        return 0;
    struct kme_ids *i = calloc(1, sizeof(*i));
    if (!i)
        return -1;
    i->link = strdup(link);
    i->slave = strdup(slave);
    i->source_kme_id = strdup(source_kme_id ? source_kme_id : "");
    i->master_sae_id = strdup(master_sae_id ? master_sae_id : "");
    if (!i->link || !i->slave || !i->source_kme_id || !i->master_sae_id) {
        free(i->link);
        free(i->slave);
        free(i->source_kme_id);
        free(i->master_sae_id);
        free(i);
        return -1;
    }
    i->next = d->ids; /* existing nodes never change: workers may read them */
    d->ids = i;
    return 0;
}

struct link_state *proxy_daemon_link(proxy_daemon *d, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < d->n_links; i++)
        if (strcmp(d->links[i].cfg->name, name) == 0)
            return &d->links[i];
    return NULL;
}

/* ---- sessions ------------------------------------------------------------------ */

/* "1.2.3.4:25" or "[::1]:25" -> sockaddr. */
static int peer_sockaddr(const char *peer, struct sockaddr_storage *ss)
{
    char host[64];
    if (peer[0] == '[') {
        const char *end = strchr(peer, ']');
        if (!end || (size_t)(end - peer - 1) >= sizeof(host))
            return -1;
        memcpy(host, peer + 1, (size_t)(end - peer - 1));
        host[end - peer - 1] = '\0';
        return uv_ip6_addr(host, 0, (struct sockaddr_in6 *)ss);
    }
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    if (n >= sizeof(host))
        return -1;
    memcpy(host, peer, n);
    host[n] = '\0';
    return uv_ip4_addr(host, 0, (struct sockaddr_in *)ss);
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

static void on_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct listener_state *ls = arg;
    proxy_daemon *d = ls->d;
    const struct qumail_smtp *smtp = &d->cfg->smtp;
    (void)l;
    if (d->stopping) {
        net_conn_close(&conn);
        return;
    }
    if (d->n_sessions >= smtp->limits.max_connections) {
        qlog_warn("smtp: connection from %s refused: %zu sessions (max_connections)",
                  net_conn_peer_addr(conn), d->n_sessions);
        if (ls->cfg->tls == QUMAIL_LISTEN_TLS_IMPLICIT) {
            net_conn_close(&conn);
        } else {
            net_conn_write(conn, "421 4.7.0 Too many connections, try again later\r\n", 50);
            net_conn_close_after_write(&conn);
        }
        return;
    }
    struct session_ctx *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        net_conn_close(&conn);
        return;
    }
    sc->d = d;
    sc->pol = policy_store_get(d->policies);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    bool trusted = peer_sockaddr(net_conn_peer_addr(conn), &ss) == 0 &&
                   qumail_config_trusted(d->cfg, (const struct sockaddr *)&ss);
    struct smtp_session_config sc_cfg = {
        .hostname = smtp->hostname,
        .listener = ls->cfg->name,
        .tls_ctx = ls->tls,
        .implicit_tls = ls->cfg->tls == QUMAIL_LISTEN_TLS_IMPLICIT,
        .gateway = smtp->mode == QUMAIL_SMTP_GATEWAY,
        .trusted = trusted,
        .require_tls_for_auth = ls->cfg->require_tls_for_auth,
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
            .tls_ctx = d->upstream_tls,
            .server_name = smtp->upstream.server_name,
            .helo_name = smtp->hostname,
            .timeout_ms = smtp->upstream.timeout_ms,
        },
    };
    /* Link first: the closed hook (also on failure) unlinks. */
    sc->next = d->sessions;
    if (d->sessions)
        d->sessions->prev = sc;
    d->sessions = sc;
    d->n_sessions++;
    sc->session = smtp_session_new(d->loop, conn, &sc_cfg, &proxy_pipeline_hooks, sc);
    if (!sc->session) {
        if (sc->prev)
            sc->prev->next = sc->next;
        else
            d->sessions = sc->next;
        if (sc->next)
            sc->next->prev = sc->prev;
        d->n_sessions--;
        policy_unref(&sc->pol);
        free(sc);
    }
}

/* ---- embedded KME simulator -------------------------------------------------------- */

static json_t *sim_node(const struct qumail_kme_simulator *sim,
                        const struct qumail_kme_sim_node *n,
                        const struct qumail_kme_sim_node *peer, const char *state_path)
{
    char db[4096];
    snprintf(db, sizeof(db), "%s.%s", state_path, n->kme_id);
    return json_pack("{s:s, s:s, s:i, s:{s:s, s:s, s:s}, s:s, s:{s:i, s:s},"
                     " s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                     "kme_id", n->kme_id, "host", sim->address ? sim->address : "127.0.0.1",
                     "port", (int)n->port, "tls", "cert", n->cert_file, "key", n->key_file,
                     "ca", sim->ca_file, "database", db, "link", "port", 0, "peer_kme_id",
                     peer->kme_id, "key_size", (json_int_t)sim->key_size, "min_key_size",
                     (json_int_t)sim->min_key_size, "max_key_size",
                     (json_int_t)sim->max_key_size, "max_key_per_request",
                     (json_int_t)sim->max_keys_per_request, "max_key_count",
                     (json_int_t)sim->max_key_count, "secret_key_rate",
                     (json_int_t)sim->key_rate, "key_expiry",
                     (json_int_t)(sim->key_expiry_ms / 1000));
}

static int start_simulator(proxy_daemon *d, char **error_r)
{
    const struct qumail_kme_simulator *sim = &d->cfg->kme_simulator;
    if (!sim->enabled)
        return 0;
    if (sim->config_file) {
        kme_server_config *kcfg = NULL;
        char *err = NULL;
        int rc = kme_server_config_load(sim->config_file, &kcfg, &err);
        if (rc == 0)
            rc = kme_server_start(d->loop, kcfg, &d->kme_sim, &err);
        kme_server_config_free(&kcfg);
        if (rc < 0) {
            char msg[2048];
            snprintf(msg, sizeof(msg), "KME simulator (%s): %s", sim->config_file,
                     err ? err : kme_server_strerror(rc));
            free(err);
            *error_r = strdup(msg);
            return -1;
        }
        qlog_info("embedded KME simulator from %s on port %u", sim->config_file,
                  kme_server_port(d->kme_sim, 0));
        return 0;
    }
    char path[4096];
    if (sim->state_path)
        snprintf(path, sizeof(path), "%s", sim->state_path);
    else
        snprintf(path, sizeof(path), "%s/kme-sim.sqlite", d->cfg->state_dir);
    json_t *a = sim_node(sim, &sim->a, &sim->b, path);
    json_t *b = sim_node(sim, &sim->b, &sim->a, path);
    json_t *root = a && b ? json_pack("{s:[o,o]}", "kmes", a, b) : NULL;
    if (!root) {
        json_decref(a);
        json_decref(b);
        *error_r = strdup("KME simulator: cannot build its configuration");
        return -1;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) {
        *error_r = strdup("out of memory");
        return -1;
    }
    kme_server_config *kcfg = NULL;
    char *err = NULL;
    int rc = kme_server_config_parse("kme_simulator", NULL, text, strlen(text), &kcfg, &err);
    free(text);
    if (rc == 0)
        rc = kme_server_start(d->loop, kcfg, &d->kme_sim, &err);
    kme_server_config_free(&kcfg);
    if (rc < 0) {
        char msg[2048];
        snprintf(msg, sizeof(msg), "KME simulator: %s", err ? err : kme_server_strerror(rc));
        free(err);
        *error_r = strdup(msg);
        return -1;
    }
    qlog_info("embedded KME simulator: %s on port %u, %s on port %u", sim->a.kme_id,
              kme_server_port(d->kme_sim, 0), sim->b.kme_id, kme_server_port(d->kme_sim, 1));
    return 0;
}

/* ---- signals -------------------------------------------------------------------------- */

/* ---- reload (SIGHUP) ---------------------------------------------------------------- */

static net_tls *make_tls(const struct net_tls_config *tc, const char *what, char **error_r);
static struct listener_state *listener_open(proxy_daemon *d,
                                            const struct qumail_smtp_listener *lc,
                                            char **error_r);
static void listener_close(proxy_daemon *d, struct listener_state *ls);
static void retire(proxy_daemon *d, net_tls *tls, struct qumail_config *cfg);

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_listener(const struct qumail_smtp_listener *a,
                          const struct qumail_smtp_listener *b)
{
    return same_str(a->name, b->name) && same_str(a->address, b->address) &&
           a->port == b->port && a->tls == b->tls && same_str(a->cert_file, b->cert_file) &&
           same_str(a->key_file, b->key_file);
}

static bool same_upstream_tls(const struct qumail_smtp_upstream *a,
                              const struct qumail_smtp_upstream *b)
{
    return (a->tls == QUMAIL_UPSTREAM_TLS_NONE) == (b->tls == QUMAIL_UPSTREAM_TLS_NONE) &&
           a->verify == b->verify && same_str(a->ca_file, b->ca_file) &&
           same_str(a->client_cert_file, b->client_cert_file) &&
           same_str(a->client_key_file, b->client_key_file);
}

static bool same_links(const struct qumail_config *a, const struct qumail_config *b)
{
    if (a->n_kme_links != b->n_kme_links)
        return false;
    for (size_t i = 0; i < a->n_kme_links; i++) {
        const struct qumail_kme_link *x = &a->kme_links[i], *y = &b->kme_links[i];
        if (!same_str(x->name, y->name) || !same_str(x->url, y->url) ||
            !same_str(x->cert_file, y->cert_file) || !same_str(x->key_file, y->key_file) ||
            !same_str(x->ca_file, y->ca_file) || x->timeout_ms != y->timeout_ms ||
            x->connections != y->connections)
            return false;
    }
    return a->kme_simulator.enabled == b->kme_simulator.enabled;
}

/* Re-reads the configuration file: listeners (added, removed, or re-bound
 * when their address, port or certificate changed), upstream, limits,
 * mode, trusted networks, hostname, log level and the policy apply to new
 * sessions; sessions in flight keep what they started with. KME links and
 * the simulator need a restart. A configuration or policy with errors, or a
 * listener that cannot be bound, leaves everything as it was. */
int proxy_daemon_reload(proxy_daemon *d)
{
    char *err = NULL;
    if (!d->cfg->file) {
        if (!d->cfg->policy_file)
            return 0;
        if (policy_store_reload(d->policies, d->cfg->policy_file, d->link_names, &err) < 0) {
            qlog_error("reload: policy %s refused, the previous one stays in force:\n%s",
                       d->cfg->policy_file, err ? err : "");
            free(err);
            return -1;
        }
        qlog_info("reload: policy %s loaded; new sessions use it", d->cfg->policy_file);
        return 0;
    }
    struct qumail_config *nc = NULL;
    if (qumail_config_load(d->cfg->file, &nc, &err) < 0) {
        qlog_error("reload: %s refused, the running configuration stays:\n%s", d->cfg->file,
                   err ? err : "");
        free(err);
        return -1;
    }
    if (!same_links(d->cfg, nc))
        qlog_warn("reload: kme_links / kme_simulator changes take effect after a restart");

    /* New upstream TLS context, when its settings changed. */
    net_tls *up = NULL;
    bool new_up = !same_upstream_tls(&d->cfg->smtp.upstream, &nc->smtp.upstream);
    if (new_up && nc->smtp.upstream.tls != QUMAIL_UPSTREAM_TLS_NONE) {
        struct net_tls_config tc = {
            .server = false,
            .cert_file = nc->smtp.upstream.client_cert_file,
            .key_file = nc->smtp.upstream.client_key_file,
            .ca_file = nc->smtp.upstream.ca_file,
            .verify_peer = nc->smtp.upstream.verify,
        };
        if (!(up = make_tls(&tc, "upstream TLS", &err))) {
            qlog_error("reload refused: %s", err);
            free(err);
            qumail_config_free(&nc);
            return -1;
        }
    }

    /* Listeners: keep the unchanged ones, open the new ones first. */
    struct listener_state *kept = NULL, *opened = NULL;
    bool failed = false;
    for (size_t i = 0; i < nc->smtp.n_listeners && !failed; i++) {
        const struct qumail_smtp_listener *lc = &nc->smtp.listeners[i];
        struct listener_state **pp = &d->listeners;
        while (*pp && !same_listener((*pp)->cfg, lc))
            pp = &(*pp)->next;
        struct listener_state *ls = *pp;
        if (ls) {
            *pp = ls->next;         /* move to the kept list */
            ls->cfg = lc;
            ls->next = kept;
            kept = ls;
            continue;
        }
        ls = listener_open(d, lc, &err);
        if (!ls) {
            qlog_error("reload refused: %s", err);
            free(err);
            failed = true;
            break;
        }
        ls->next = opened;
        opened = ls;
    }
    if (!failed && nc->policy_file &&
        policy_store_reload(d->policies, nc->policy_file, d->link_names, &err) < 0) {
        qlog_error("reload: policy %s refused, the running configuration stays:\n%s",
                   nc->policy_file, err ? err : "");
        free(err);
        failed = true;
    }
    if (failed) {
        /* Undo: close what was opened, give the kept ones back. */
        while (opened) {
            struct listener_state *ls = opened;
            opened = ls->next;
            listener_close(d, ls);
        }
        for (struct listener_state *ls = kept; ls; ls = ls->next)
            for (size_t i = 0; i < d->cfg->smtp.n_listeners; i++)
                if (same_listener(&d->cfg->smtp.listeners[i], ls->cfg))
                    ls->cfg = &d->cfg->smtp.listeners[i];
        while (kept) {
            struct listener_state *ls = kept;
            kept = ls->next;
            ls->next = d->listeners;
            d->listeners = ls;
        }
        net_tls_free(&up);
        qumail_config_free(&nc);
        return -1;
    }
    /* Close the listeners the new configuration no longer has. */
    while (d->listeners) {
        struct listener_state *ls = d->listeners;
        d->listeners = ls->next;
        listener_close(d, ls);
    }
    /* The new list, in configuration order. */
    struct listener_state **tail = &d->listeners;
    for (size_t i = 0; i < nc->smtp.n_listeners; i++) {
        const struct qumail_smtp_listener *lc = &nc->smtp.listeners[i];
        struct listener_state **src[2] = {&kept, &opened};
        for (int k = 0; k < 2; k++) {
            for (struct listener_state **pp = src[k]; *pp; pp = &(*pp)->next) {
                if ((*pp)->cfg == lc) {
                    struct listener_state *ls = *pp;
                    *pp = ls->next;
                    ls->next = NULL;
                    *tail = ls;
                    tail = &ls->next;
                    goto next;
                }
            }
        }
    next:;
    }
    if (new_up) {
        retire(d, d->upstream_tls, NULL);
        d->upstream_tls = up;
    }
    /* The old configuration stays alive: sessions and KME links use it. */
    retire(d, NULL, d->owned_cfg);
    d->owned_cfg = nc;
    d->cfg = nc;
    qlog_set_level((enum qlog_level)nc->log_level);
    qlog_info("reload: %s applied (%zu listeners%s%s); new sessions use it", nc->file,
              nc->smtp.n_listeners, new_up ? ", new upstream TLS context" : "",
              nc->policy_file ? ", policy reloaded" : "");
    return 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    proxy_daemon *d = h->data;
    if (signum == SIGHUP) {
        proxy_daemon_reload(d);
        return;
    }
    qlog_info("signal %d: stopping", signum);
    proxy_daemon_stop(d);
}

/* ---- setup and teardown --------------------------------------------------------------------- */

static net_tls *make_tls(const struct net_tls_config *tc, const char *what, char **error_r)
{
    char *err = NULL;
    net_tls *t = net_tls_new(tc, &err);
    if (!t) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s: %s", what, err ? err : "TLS setup failed");
        free(err);
        *error_r = strdup(msg);
    }
    return t;
}

static void retire(proxy_daemon *d, net_tls *tls, struct qumail_config *cfg)
{
    if (!tls && !cfg)
        return;
    struct retired *r = calloc(1, sizeof(*r));
    if (!r) {
        /* Cannot keep it safely for sessions still using it: leak it
         * rather than free it under them. */
        qlog_error("out of memory retiring a TLS context or configuration");
        return;
    }
    r->tls = tls;
    r->cfg = cfg;
    r->next = d->retired;
    d->retired = r;
}

static void log_listener(proxy_daemon *d, const struct listener_state *ls)
{
    const struct qumail_smtp *smtp = &d->cfg->smtp;
    const struct qumail_smtp_listener *lc = ls->cfg;
    qlog_info("smtp listener %s on %s:%u (%s, %s mode) -> upstream %s:%u (%s)", lc->name,
              lc->address, net_listener_port(ls->listener), qumail_listen_tls_name(lc->tls),
              qumail_smtp_mode_name(smtp->mode), smtp->upstream.host, smtp->upstream.port,
              qumail_upstream_tls_name(smtp->upstream.tls));
}

/* Binds one listener (with its TLS context). NULL + *error_r on failure. */
static struct listener_state *listener_open(proxy_daemon *d,
                                            const struct qumail_smtp_listener *lc,
                                            char **error_r)
{
    struct listener_state *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    ls->d = d;
    ls->cfg = lc;
    if (lc->tls != QUMAIL_LISTEN_TLS_NONE) {
        struct net_tls_config tc = {
            .server = true, .cert_file = lc->cert_file, .key_file = lc->key_file};
        char what[256];
        snprintf(what, sizeof(what), "listener %s", lc->name);
        if (!(ls->tls = make_tls(&tc, what, error_r))) {
            free(ls);
            return NULL;
        }
    }
    char *err = NULL;
    ls->listener = net_listen(d->loop, lc->address, lc->port, 0, on_accept, ls, &err);
    if (!ls->listener) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "listener %s (%s:%u): %s", lc->name, lc->address, lc->port,
                 err ? err : "cannot listen");
        free(err);
        *error_r = strdup(msg);
        net_tls_free(&ls->tls);
        free(ls);
        return NULL;
    }
    log_listener(d, ls);
    return ls;
}

/* Closes a listener; its TLS context stays alive for its sessions. */
static void listener_close(proxy_daemon *d, struct listener_state *ls)
{
    qlog_info("smtp listener %s closed", ls->cfg->name);
    net_listener_close(&ls->listener);
    retire(d, ls->tls, NULL);
    ls->tls = NULL;
    free(ls);
}

proxy_daemon *proxy_daemon_new(uv_loop_t *loop, const struct qumail_config *cfg,
                               char **error_r)
{
    proxy_daemon *d = calloc(1, sizeof(*d));
    if (!d) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    d->loop = loop;
    d->cfg = cfg;
    const struct qumail_smtp *smtp = &cfg->smtp;

    /* Policy. */
    d->link_names = calloc(cfg->n_kme_links + 1, sizeof(char *));
    if (!d->link_names)
        goto nomem;
    for (size_t i = 0; i < cfg->n_kme_links; i++)
        d->link_names[i] = cfg->kme_links[i].name;
    policy *pol = NULL;
    char *err = NULL;
    int rc;
    if (cfg->policy_file)
        rc = policy_load_file(cfg->policy_file, d->link_names, &pol, &err);
    else {
        /* Fail closed: without a policy nothing says how to protect, so
         * every recipient is refused at RCPT with that reason. */
        qlog_warn("no policy_file configured: every recipient will be refused");
        rc = policy_load_buffer("(no policy file)", "", 0, d->link_names, &pol, &err);
    }
    if (rc < 0) {
        char msg[4096];
        snprintf(msg, sizeof(msg), "policy: %s", err ? err : policy_strerror(rc));
        free(err);
        *error_r = strdup(msg);
        goto fail;
    }
    d->policies = policy_store_new(pol);

    /* Upstream TLS. */
    if (smtp->upstream.tls != QUMAIL_UPSTREAM_TLS_NONE) {
        struct net_tls_config tc = {
            .server = false,
            .cert_file = smtp->upstream.client_cert_file,
            .key_file = smtp->upstream.client_key_file,
            .ca_file = smtp->upstream.ca_file,
            .verify_peer = smtp->upstream.verify,
        };
        if (!(d->upstream_tls = make_tls(&tc, "upstream TLS", error_r)))
            goto fail;
        if (!smtp->upstream.verify)
            qlog_warn("upstream TLS certificate verification is OFF (smtp.upstream.verify)");
    }

    /* Simulator before the links that may point at it. */
    if (start_simulator(d, error_r) < 0)
        goto fail;

    d->links = calloc(cfg->n_kme_links ? cfg->n_kme_links : 1, sizeof(*d->links));
    if (!d->links)
        goto nomem;
    for (size_t i = 0; i < cfg->n_kme_links; i++) {
        const struct qumail_kme_link *lk = &cfg->kme_links[i];
        struct kme_client_config kc = {
            .url = lk->url,
            .cert_file = lk->cert_file,
            .key_file = lk->key_file,
            .ca_file = lk->ca_file,
            .max_connections = lk->connections,
            .connect_timeout_ms = lk->timeout_ms,
            .request_timeout_ms = lk->timeout_ms,
        };
        d->links[i].cfg = lk;
        d->links[i].client = kme_client_new(loop, &kc, &err);
        if (!d->links[i].client) {
            char msg[2048];
            snprintf(msg, sizeof(msg), "kme_links.%s: %s", lk->name, err ? err : "invalid");
            free(err);
            *error_r = strdup(msg);
            goto fail;
        }
        d->n_links++;
    }

    /* Listeners. */
    struct listener_state **tail = &d->listeners;
    for (size_t i = 0; i < smtp->n_listeners; i++) {
        struct listener_state *ls = listener_open(d, &smtp->listeners[i], error_r);
        if (!ls)
            goto fail;
        *tail = ls;
        tail = &ls->next;
    }

    uv_signal_init(loop, &d->sig_hup);
    uv_signal_init(loop, &d->sig_int);
    uv_signal_init(loop, &d->sig_term);
    d->sig_hup.data = d->sig_int.data = d->sig_term.data = d;
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    return d;

nomem:
    *error_r = strdup("out of memory");
fail:
    d->stopping = true;
    for (struct listener_state *ls = d->listeners; ls; ls = ls->next)
        net_listener_close(&ls->listener);
    for (size_t i = 0; i < d->n_links; i++)
        kme_client_free(&d->links[i].client);
    if (d->kme_sim)
        kme_server_stop(&d->kme_sim, NULL, NULL);
    /* handles close on the next loop run; the caller runs it, then frees */
    d->n_links = 0;
    proxy_daemon_free(&d);
    return NULL;
}

uint16_t proxy_daemon_listener_port(const proxy_daemon *d, size_t i)
{
    for (const struct listener_state *ls = d->listeners; ls; ls = ls->next, i--)
        if (i == 0)
            return ls->listener ? net_listener_port(ls->listener) : 0;
    return 0;
}

void proxy_daemon_stop(proxy_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    for (struct listener_state *ls = d->listeners; ls; ls = ls->next)
        net_listener_close(&ls->listener);
    while (d->sessions)
        smtp_session_close(d->sessions->session); /* unlinks via the hook */
    for (size_t i = 0; i < d->n_links; i++)
        kme_client_free(&d->links[i].client);
    if (d->kme_sim)
        kme_server_stop(&d->kme_sim, NULL, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
}

void proxy_daemon_free(proxy_daemon **dp)
{
    if (!dp || !*dp)
        return;
    proxy_daemon *d = *dp;
    *dp = NULL;
    while (d->listeners) {
        struct listener_state *ls = d->listeners;
        d->listeners = ls->next;
        net_tls_free(&ls->tls);
        free(ls);
    }
    while (d->retired) {
        struct retired *r = d->retired;
        d->retired = r->next;
        net_tls_free(&r->tls);
        qumail_config_free(&r->cfg);
        free(r);
    }
    qumail_config_free(&d->owned_cfg);
    free(d->links);
    net_tls_free(&d->upstream_tls);
    while (d->ids) {
        struct kme_ids *i = d->ids;
        d->ids = i->next;
        free(i->link);
        free(i->slave);
        free(i->source_kme_id);
        free(i->master_sae_id);
        free(i);
    }
    policy_store_free(&d->policies);
    free(d->link_names);
    free(d);
}
