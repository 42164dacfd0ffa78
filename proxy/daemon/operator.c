/* What the operator sees of the process: the metrics registry, the admin
 * HTTP listener (proxy/admin) with its readiness and status hooks, the
 * mail settings it announces to clients, and the reachability probes of
 * the KME links and the upstream servers behind /readyz (also run once at
 * start: a link that does not answer is a warning in the log then, not a
 * surprise at the first message).
 *
 * Probes run at start and then on demand: when /readyz or /status is asked
 * and the last round is older than PROBE_TTL_MS, a new round starts and the
 * answer is the previous round's (the hooks are synchronous). Nothing polls
 * an upstream server when nobody asks. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "daemon_internal.h"
#include "log.h"

#define PROBE_TTL_MS 15000u
#define MAX_PROBES 64

enum probe_kind { PROBE_KME, PROBE_UPSTREAM };

struct probe {
    struct proxy_ops *ops;
    enum probe_kind kind;
    char *name;         /* link name, or "smtp"/"imap" for an upstream */
    char *target;       /* slave SAE ID, or "host:port" */
    char *host;         /* upstream */
    uint16_t port;
    bool inflight, done, ok;
    char error[256];
    int64_t stored, max, key_size;
    net_conn *conn;     /* upstream probe in flight */
};

struct proxy_ops {
    proxy_daemon *d;
    admin_server *admin;
    metric *sessions, *connections, *link_up, *stored_keys, *upstream_up, *reloads;
    struct probe probes[MAX_PROBES];
    size_t n_probes;
    uint64_t round_at;  /* uv_now of the last round's start */
    bool first_round;
    struct admin_mail mail;
    char *mail_hosts[ADMIN_MAX_MAIL_SERVERS]; /* owned strings of mail */
    uint64_t started_at;
};

metrics *proxy_daemon_metrics(proxy_daemon *d)
{
    return d->metrics;
}

/* ---- metrics of the core ----------------------------------------------------- */

void proxy_ops__session_count(proxy_daemon *d, size_t proto, bool accepted, bool refused)
{
    struct proxy_ops *ops = d->ops;
    if (!ops)
        return;
    const char *name = d->protos[proto].p->name;
    if (accepted || refused)
        metric_add(ops->connections, 1, name, refused ? "refused" : "accepted");
    metric_set(ops->sessions, (double)d->protos[proto].n_sessions, name);
}

void proxy_ops__reload_count(proxy_daemon *d, bool ok)
{
    if (d->ops)
        metric_add(d->ops->reloads, 1, ok ? "applied" : "refused");
}

/* ---- probes -------------------------------------------------------------------- */

static void probe_result(struct probe *p, bool ok, const char *error)
{
    bool changed = !p->done || p->ok != ok;
    p->inflight = false;
    p->done = true;
    p->ok = ok;
    snprintf(p->error, sizeof(p->error), "%s", ok ? "" : error);
    struct proxy_ops *ops = p->ops;
    if (p->kind == PROBE_KME)
        metric_set(ops->link_up, ok ? 1 : 0, p->name, p->target);
    else
        metric_set(ops->upstream_up, ok ? 1 : 0, p->name);
    if (!changed)
        return;
    if (p->kind == PROBE_KME && ok)
        qlog_info("kme link '%s': reachable; slave SAE '%s': %lld keys stored (of %lld), "
                  "key size %lld bits", p->name, p->target, (long long)p->stored,
                  (long long)p->max, (long long)p->key_size);
    else if (p->kind == PROBE_KME)
        qlog_warn("kme link '%s': status for slave SAE '%s' failed: %s; mail protected "
                  "with it is deferred (or refused, per on_no_key) until the KME answers",
                  p->name, p->target, error);
    else if (ok)
        qlog_info("%s upstream %s: reachable", p->name, p->target);
    else
        qlog_warn("%s upstream %s: unreachable: %s", p->name, p->target, error);
}

static void on_status(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    struct probe *p = arg;
    if (res->error == KME_ECANCELLED) {
        p->inflight = false;
        return;
    }
    if (res->error != KME_OK || st == NULL) {
        probe_result(p, false, res->message);
        return;
    }
    p->stored = st->stored_key_count;
    p->max = st->max_key_count;
    p->key_size = st->key_size;
    metric_set(p->ops->stored_keys, (double)st->stored_key_count, p->name, p->target);
    /* The one slave SAE typo a KME cannot refuse: our own ID. */
    if (st->master_sae_id && strcmp(st->master_sae_id, p->target) == 0) {
        char why[200];
        snprintf(why, sizeof(why), "slave_sae '%s' is this side's own SAE ID (the master); "
                 "the policy must name the receiving SAE", p->target);
        probe_result(p, false, why);
        return;
    }
    probe_result(p, true, NULL);
}

static void on_upstream(net_conn *conn, enum net_event ev, void *arg)
{
    struct probe *p = arg;
    if (ev == NET_EV_CONNECTED) {
        net_conn_close(&p->conn);
        probe_result(p, true, NULL);
    } else if (ev == NET_EV_ERROR || ev == NET_EV_TIMEOUT || ev == NET_EV_EOF) {
        char err[200];
        snprintf(err, sizeof(err), "%s", ev == NET_EV_TIMEOUT ? "connect timed out"
                                         : net_conn_error(conn) ? net_conn_error(conn)
                                                                : "connection failed");
        net_conn_close(&p->conn);
        probe_result(p, false, err);
    }
}

/* An ETSI 004 link: its stream opens (reattaches) at its KME. */
static void on_identity(const struct kme_result *res, const char *kme_id, const char *sae_id,
                        void *arg)
{
    struct probe *p = arg;
    (void)kme_id;
    (void)sae_id;
    if (res->error == KME_ECANCELLED) {
        p->inflight = false;
        return;
    }
    probe_result(p, res->error == KME_OK, res->message);
}

static void probe_start(struct probe *p)
{
    proxy_daemon *d = p->ops->d;
    if (p->inflight || d->stopping)
        return;
    if (p->kind == PROBE_KME) {
        kme_client *c = proxy_daemon_kme_link(d, p->name);
        kme_source *s = c ? NULL : proxy_daemon_kme_source(d, p->name);
        if (s) { /* ETSI 004 */
            p->inflight = true;
            if (kme_source_identity(s, p->target, on_identity, p) < 0) {
                p->inflight = false;
                probe_result(p, false, "cannot open the key stream");
            }
            return;
        }
        if (!c)
            return;
        p->inflight = true;
        if (kme_client_status(c, p->target, on_status, p) < 0) {
            p->inflight = false;
            probe_result(p, false, "cannot start the status request");
        }
        return;
    }
    p->conn = net_connect(d->loop, p->host, p->port, on_upstream, p);
    if (!p->conn)
        return;
    p->inflight = true;
    net_conn_set_timeout(p->conn, 10000);
}

static void probes_round(struct proxy_ops *ops, bool force)
{
    uint64_t now = uv_now(ops->d->loop);
    if (!force && ops->round_at && now - ops->round_at < PROBE_TTL_MS)
        return;
    ops->round_at = now;
    for (size_t i = 0; i < ops->n_probes; i++)
        probe_start(&ops->probes[i]);
}

static void add_probe(struct proxy_ops *ops, enum probe_kind kind, const char *name,
                      const char *target, const char *host, uint16_t port)
{
    for (size_t i = 0; i < ops->n_probes; i++)
        if (strcmp(ops->probes[i].name, name) == 0 && strcmp(ops->probes[i].target, target) == 0)
            return;
    if (ops->n_probes >= MAX_PROBES)
        return;
    struct probe *p = &ops->probes[ops->n_probes];
    *p = (struct probe){.ops = ops, .kind = kind, .port = port};
    p->name = strdup(name);
    p->target = strdup(target);
    p->host = host ? strdup(host) : NULL;
    if (!p->name || !p->target || (host && !p->host)) {
        free(p->name);
        free(p->target);
        free(p->host);
        return;
    }
    ops->n_probes++;
}

/* Every (link, slave SAE) the policy protects with, and each upstream. */
static void plan_probes(struct proxy_ops *ops)
{
    proxy_daemon *d = ops->d;
    const struct qumail_config *cfg = proxy_daemon__cfg(d);
    policy *pol = proxy_daemon_policy(d);
    for (size_t i = 0; pol && i < policy_rule_count(pol); i++) {
        const struct policy_rule *r = policy_rule_at(pol, i);
        if (r && policy_rule_protects(r) && r->link && r->slave_sae)
            add_probe(ops, PROBE_KME, r->link, r->slave_sae, NULL, 0);
    }
    policy_unref(&pol);
    for (size_t i = 0; i < cfg->n_kme_links; i++) {
        bool used = false;
        for (size_t j = 0; j < ops->n_probes; j++)
            used |= strcmp(ops->probes[j].name, cfg->kme_links[i].name) == 0;
        if (!used)
            qlog_info("kme link '%s': no policy rule protects with it", cfg->kme_links[i].name);
    }
    char hp[300];
    snprintf(hp, sizeof(hp), "%s:%u", cfg->smtp.upstream.host, cfg->smtp.upstream.port);
    add_probe(ops, PROBE_UPSTREAM, "smtp", hp, cfg->smtp.upstream.host, cfg->smtp.upstream.port);
    bool imap_served = false;
    for (size_t i = 0; i < d->n_protos; i++)
        imap_served |= strcmp(d->protos[i].p->name, "imap") == 0;
    if (cfg->imap.enabled && imap_served) {
        snprintf(hp, sizeof(hp), "%s:%u", cfg->imap.upstream.host, cfg->imap.upstream.port);
        add_probe(ops, PROBE_UPSTREAM, "imap", hp, cfg->imap.upstream.host,
                  cfg->imap.upstream.port);
    }
}

/* ---- admin hooks ----------------------------------------------------------- */

static bool ready(void *arg, char **why_r)
{
    struct proxy_ops *ops = arg;
    proxy_daemon *d = ops->d;
    probes_round(ops, false);
    char buf[4096];
    size_t off = 0;
    buf[0] = '\0';
#define WHY(...)                                                                          \
    do {                                                                                  \
        if (off < sizeof(buf))                                                            \
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, __VA_ARGS__);          \
    } while (0)
    if (d->stopping || d->draining)
        WHY("stopping\n");
    for (const struct proxy_listener *l = d->listeners; l; l = l->next)
        if (!l->listener)
            WHY("%s listener '%s': not bound\n", d->protos[l->proto].p->name, l->name);
    for (size_t i = 0; i < ops->n_probes; i++) {
        const struct probe *p = &ops->probes[i];
        if (!p->done)
            WHY("%s %s '%s' %s: not probed yet\n", p->name,
                p->kind == PROBE_KME ? "kme link" : "upstream", p->name, p->target);
        else if (!p->ok && p->kind == PROBE_KME)
            WHY("kme link '%s', slave SAE '%s': %s\n", p->name, p->target, p->error);
        else if (!p->ok)
            WHY("%s upstream %s: %s\n", p->name, p->target, p->error);
    }
#undef WHY
    if (buf[0] == '\0')
        return true;
    *why_r = strdup(buf);
    return false;
}

static json_t *status(void *arg)
{
    struct proxy_ops *ops = arg;
    proxy_daemon *d = ops->d;
    probes_round(ops, false);
    json_t *sessions = json_object();
    for (size_t i = 0; i < d->n_protos; i++)
        json_object_set_new(sessions, d->protos[i].p->name,
                            json_integer((json_int_t)d->protos[i].n_sessions));
    json_t *listeners = json_array();
    for (const struct proxy_listener *l = d->listeners; l; l = l->next)
        json_array_append_new(listeners,
                              json_pack("{s:s, s:s, s:s, s:i, s:b}", "protocol",
                                        d->protos[l->proto].p->name, "name", l->name,
                                        "address", l->cfg->address, "port",
                                        l->listener ? (int)net_listener_port(l->listener) : 0,
                                        "bound", l->listener != NULL));
    json_t *links = json_object(), *upstreams = json_object();
    for (size_t i = 0; i < ops->n_probes; i++) {
        const struct probe *p = &ops->probes[i];
        json_t *o = json_pack("{s:b, s:b}", "probed", p->done, "reachable", p->done && p->ok);
        if (p->done && !p->ok)
            json_object_set_new(o, "error", json_string(p->error));
        if (p->kind == PROBE_UPSTREAM) {
            json_object_set_new(o, "address", json_string(p->target));
            json_object_set_new(upstreams, p->name, o);
            continue;
        }
        if (p->done && p->ok) {
            json_object_set_new(o, "stored_key_count", json_integer(p->stored));
            json_object_set_new(o, "max_key_count", json_integer(p->max));
            json_object_set_new(o, "key_size", json_integer(p->key_size));
        }
        json_t *link = json_object_get(links, p->name);
        if (!link) {
            link = json_object();
            json_object_set_new(links, p->name, link);
        }
        json_object_set_new(link, p->target, o);
    }
    const struct qumail_config *cfg = proxy_daemon__cfg(d);
    return json_pack("{s:i, s:I, s:b, s:s?, s:o, s:o, s:o, s:o}", "pid", (int)getpid(),
                     "uptime_seconds", (json_int_t)((uv_now(d->loop) - ops->started_at) / 1000),
                     "stopping", d->stopping || d->draining, "config", cfg->file, "sessions", sessions,
                     "listeners", listeners, "kme_links", links, "upstreams", upstreams);
}

static void access_line(void *arg, const char *peer, const char *method, const char *path,
                        int code, size_t bytes)
{
    qlog_debug("admin: %s %s %s -> %d (%zu bytes)", peer, method, path, code, bytes);
}

/* The servers mail clients should use: every IMAP, then every SMTP
 * listener, with the port actually bound. */
static void build_mail(struct proxy_ops *ops)
{
    proxy_daemon *d = ops->d;
    const struct qumail_config *cfg = proxy_daemon__cfg(d);
    for (size_t i = 0; i < ADMIN_MAX_MAIL_SERVERS; i++) {
        free(ops->mail_hosts[i]);
        ops->mail_hosts[i] = NULL;
    }
    memset(&ops->mail, 0, sizeof(ops->mail));
    ops->mail.display_name = "QuMail Gateway";
    for (int pass = 0; pass < 2; pass++) {
        const char *want = pass == 0 ? "imap" : "smtp";
        for (const struct proxy_listener *l = d->listeners; l; l = l->next) {
            const char *proto = d->protos[l->proto].p->name;
            if (strcmp(proto, want) != 0 || !l->listener ||
                ops->mail.n_servers >= ADMIN_MAX_MAIL_SERVERS)
                continue;
            const char *host = cfg->admin.mail_host;
            if (!host)
                host = strcmp(l->cfg->address, "0.0.0.0") == 0 || strcmp(l->cfg->address, "::") == 0
                           ? cfg->smtp.hostname
                           : l->cfg->address;
            size_t k = ops->mail.n_servers++;
            ops->mail_hosts[k] = strdup(host ? host : "127.0.0.1");
            ops->mail.servers[k] = (struct admin_mail_server){
                .protocol = want,
                .hostname = ops->mail_hosts[k] ? ops->mail_hosts[k] : "127.0.0.1",
                .port = net_listener_port(l->listener),
                .security = l->cfg->tls == QUMAIL_LISTEN_TLS_IMPLICIT   ? ADMIN_SEC_TLS
                            : l->cfg->tls == QUMAIL_LISTEN_TLS_STARTTLS ? ADMIN_SEC_STARTTLS
                                                                        : ADMIN_SEC_PLAIN,
                /* gateway mode relays for trusted networks without AUTH */
                .auth = pass == 0 || cfg->smtp.mode == QUMAIL_SMTP_SUBMISSION,
            };
        }
    }
}

/* ---- lifecycle ---------------------------------------------------------------- */

int proxy_ops__init(proxy_daemon *d)
{
    d->metrics = metrics_new();
    struct proxy_ops *ops = calloc(1, sizeof(*ops));
    if (!d->metrics || !ops) {
        free(ops);
        return -1;
    }
    ops->d = d;
    d->ops = ops;
    metrics *m = d->metrics;
    ops->sessions = metrics_gauge(m, "qumail_sessions", "Open client sessions.", 1, "protocol");
    ops->connections = metrics_counter(m, "qumail_connections_total",
                                       "Client connections, accepted or refused at a limit.",
                                       2, "protocol", "outcome");
    ops->link_up = metrics_gauge(m, "qumail_kme_link_up",
                                 "1 when the last status call to the KME link for the slave "
                                 "SAE succeeded.", 2, "link", "slave_sae");
    ops->stored_keys = metrics_gauge(m, "qumail_kme_stored_keys",
                                     "Keys the KME reported stored for the slave SAE (last "
                                     "status call).", 2, "link", "slave_sae");
    ops->upstream_up = metrics_gauge(m, "qumail_upstream_up",
                                     "1 when the last TCP connection probe to the upstream "
                                     "server succeeded.", 1, "protocol");
    ops->reloads = metrics_counter(m, "qumail_reloads_total",
                                   "Configuration reloads (SIGHUP), applied or refused.", 1,
                                   "outcome");
    return 0;
}

int proxy_ops__start(proxy_daemon *d, char **error_r)
{
    struct proxy_ops *ops = d->ops;
    const struct qumail_config *cfg = proxy_daemon__cfg(d);
    ops->started_at = uv_now(d->loop);
    for (size_t i = 0; i < d->n_protos; i++)
        proxy_ops__session_count(d, i, false, false);
    plan_probes(ops);
    probes_round(ops, true); /* the start-up reachability check (warns) */
    if (!cfg->admin.enabled)
        return 0;
    build_mail(ops);
    struct admin_config ac = {.address = cfg->admin.address, .port = cfg->admin.port};
    struct admin_hooks hooks = {.ready = ready, .status = status, .access = access_line,
                                .arg = ops};
    char *err = NULL;
    ops->admin = admin_start(d->loop, &ac, d->metrics, &ops->mail, &hooks, &err);
    if (!ops->admin) {
        char msg[512];
        snprintf(msg, sizeof(msg), "admin listener %s:%u: %s", cfg->admin.address,
                 cfg->admin.port, err ? err : "cannot listen");
        free(err);
        *error_r = strdup(msg);
        return -1;
    }
    qlog_info("admin listener on %s:%u (/healthz /readyz /metrics /status, autoconfig)",
              cfg->admin.address, (unsigned)admin_port(ops->admin));
    return 0;
}

uint16_t proxy_daemon_admin_port(const proxy_daemon *d)
{
    return d->ops && d->ops->admin ? admin_port(d->ops->admin) : 0;
}

void proxy_ops__reloaded(proxy_daemon *d, const struct qumail_config *old)
{
    struct proxy_ops *ops = d->ops;
    const struct qumail_config *cfg = proxy_daemon__cfg(d);
    if (!ops)
        return;
    if (old && (old->admin.enabled != cfg->admin.enabled || old->admin.port != cfg->admin.port ||
                (old->admin.address && cfg->admin.address &&
                 strcmp(old->admin.address, cfg->admin.address) != 0)))
        qlog_warn("reload: admin listener changes need a restart");
    if (ops->admin) {
        build_mail(ops);
        admin_set_mail(ops->admin, &ops->mail);
    }
}

void proxy_ops__stop(proxy_daemon *d)
{
    struct proxy_ops *ops = d->ops;
    if (!ops)
        return;
    admin_stop(&ops->admin);
    for (size_t i = 0; i < ops->n_probes; i++) {
        struct probe *p = &ops->probes[i];
        if (p->kind == PROBE_UPSTREAM && p->conn) {
            net_conn_close(&p->conn);
            p->inflight = false;
        }
        /* KME probes: the links are freed right after, which cancels them */
    }
}

void proxy_ops__free(proxy_daemon *d)
{
    struct proxy_ops *ops = d->ops;
    if (ops) {
        for (size_t i = 0; i < ops->n_probes; i++) {
            free(ops->probes[i].name);
            free(ops->probes[i].target);
            free(ops->probes[i].host);
        }
        for (size_t i = 0; i < ADMIN_MAX_MAIL_SERVERS; i++)
            free(ops->mail_hosts[i]);
        free(ops);
        d->ops = NULL;
    }
    metrics_free(&d->metrics);
}
