/* The proxy process: setup from the protocol table, signals, stop, free. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"
#include "service_env.h"

const struct qumail_config *proxy_daemon__cfg(const proxy_daemon *d) { return d->gen->cfg; }

void proxy_daemon__settings(const proxy_daemon *d, size_t proto,
                            const struct qumail_config *cfg,
                            const struct qumail_listener **ls, size_t *n,
                            const struct qumail_conn_limits **limits)
{
    *ls = NULL;
    *n = 0;
    *limits = NULL;
    d->protos[proto].p->settings(cfg, ls, n, limits);
}

uv_loop_t *proxy_daemon_loop(const proxy_daemon *d) { return d->loop; }

policy *proxy_daemon_policy(proxy_daemon *d) { return policy_store_get(d->policies); }
policy_store *proxy_daemon_policies(proxy_daemon *d) { return d->policies; }
const struct qumail_config *proxy_daemon_start_config(const proxy_daemon *d) { return d->first_cfg; }

size_t proxy_daemon_sessions(const proxy_daemon *d, const char *protocol)
{
    if (!protocol)
        return d->n_sessions;
    for (size_t i = 0; i < d->n_protos; i++)
        if (strcmp(d->protos[i].p->name, protocol) == 0)
            return d->protos[i].n_sessions;
    return 0;
}

uint16_t proxy_daemon_listener_port(const proxy_daemon *d, const char *protocol, size_t i)
{
    for (const struct proxy_listener *l = d->listeners; l; l = l->next) {
        if (strcmp(d->protos[l->proto].p->name, protocol) != 0)
            continue;
        if (i-- == 0)
            return l->listener ? net_listener_port(l->listener) : 0;
    }
    return 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    proxy_daemon *d = h->data;
    if (signum == SIGHUP) {
        int rc = proxy_daemon_reload(d);
        proxy_ops__reload_count(d, rc == 0);
        if (rc == 0)
            proxy_ops__reloaded(d, d->first_cfg);
        return;
    }
    if (signum == SIGTERM && !d->draining) {
        proxy_daemon_drain(d);
        return;
    }
    qlog_info("signal %d: stopping", signum);
    proxy_daemon_stop(d);
}

static bool session_busy(const proxy_daemon *d, const proxy_session *s)
{
    const struct proxy_protocol *p = d->protos[s->proto].p;
    return p->busy && p->busy(s->impl);
}

/* Closes the idle sessions (close_idle), returns how many are busy. A
 * close may end any number of sessions: start over from the head each
 * time, as proxy_registry__close_all does. */
static size_t busy_sessions(proxy_daemon *d, bool close_idle)
{
    while (close_idle) {
        proxy_session *s = d->sessions;
        while (s && (s->close_sent || session_busy(d, s)))
            s = s->next;
        if (!s)
            break;
        s->close_sent = true;
        d->protos[s->proto].p->close(s->impl);
    }
    size_t busy = 0;
    for (const proxy_session *s = d->sessions; s; s = s->next)
        busy += !s->close_sent && session_busy(d, s);
    return busy;
}

static void drain_tick(uv_timer_t *t)
{
    proxy_daemon *d = t->data;
    /* idle again after finishing: close it too */
    size_t busy = busy_sessions(d, true);
    if (busy == 0 || uv_now(d->loop) >= d->drain_deadline) {
        if (busy)
            qlog_warn("drain: %zu session%s still busy after %u s: closing", busy,
                      busy == 1 ? "" : "s", PROXY_DRAIN_MS / 1000);
        else
            qlog_info("drain: every session finished");
        uv_timer_stop(t);
        proxy_daemon_stop(d);
    }
}

void proxy_daemon_drain(proxy_daemon *d)
{
    if (d->stopping || d->draining)
        return;
    d->draining = true;
    service_notify("STOPPING=1");
    while (d->listeners) {
        struct proxy_listener *l = d->listeners;
        d->listeners = l->next;
        proxy_listener__close(l);
    }
    size_t busy = busy_sessions(d, true);
    qlog_info("SIGTERM: no new connections; %zu session%s finishing (at most %u s)", busy,
              busy == 1 ? "" : "s", PROXY_DRAIN_MS / 1000);
    d->drain_deadline = uv_now(d->loop) + PROXY_DRAIN_MS;
    uv_timer_start(&d->drain_timer, drain_tick, 0, 100);
}

static int load_policy(proxy_daemon *d, char **error_r)
{
    const struct qumail_config *cfg = d->first_cfg;
    d->link_names = calloc(cfg->n_kme_links + 1, sizeof(char *));
    if (!d->link_names) {
        *error_r = strdup("out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_kme_links; i++)
        d->link_names[i] = cfg->kme_links[i].name;
    policy *pol = NULL;
    char *err = NULL;
    int rc;
    if (cfg->policy_file) {
        rc = policy_load_file(cfg->policy_file, d->link_names, &pol, &err);
    } else {
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
        return -1;
    }
    if (!(d->policies = policy_store_new(pol))) {
        policy_unref(&pol);
        *error_r = strdup("out of memory");
        return -1;
    }
    return 0;
}

static int init_protocols(proxy_daemon *d, char **error_r)
{
    for (size_t i = 0; i < d->n_protos; i++) {
        const struct proxy_protocol *p = d->protos[i].p;
        if (!p->init)
            continue;
        char *err = NULL;
        if (p->init(d, &d->protos[i].svc, &err) < 0) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s: %s", p->name, err ? err : "cannot start");
            free(err);
            *error_r = strdup(msg);
            return -1;
        }
    }
    return 0;
}

proxy_daemon *proxy_daemon_new(uv_loop_t *loop, const struct qumail_config *cfg,
                               const struct proxy_protocol *const *protocols, size_t n,
                               char **error_r)
{
    proxy_daemon *d = calloc(1, sizeof(*d));
    if (d)
        d->protos = calloc(n ? n : 1, sizeof(*d->protos));
    if (!d || !d->protos) {
        free(d);
        *error_r = strdup("out of memory");
        return NULL;
    }
    d->loop = loop;
    d->first_cfg = cfg;
    d->n_protos = n;
    for (size_t i = 0; i < n; i++)
        d->protos[i].p = protocols[i];
    if (proxy_ops__init(d) < 0) {
        proxy_daemon_free(&d);
        *error_r = strdup("out of memory");
        return NULL;
    }
    if (load_policy(d, error_r) < 0 || proxy_kme__start(d, error_r) < 0 ||
        init_protocols(d, error_r) < 0 || !(d->gen = proxy_gen__new(d, cfg, NULL, error_r)) ||
        proxy_listener__open_all(d, error_r) < 0 || proxy_ops__start(d, error_r) < 0) {
        /* Handles close on the next loop run; the caller runs it. */
        proxy_daemon_stop(d);
        proxy_daemon_free(&d);
        return NULL;
    }
    uv_timer_init(loop, &d->drain_timer);
    d->drain_timer.data = d;
    uv_signal_init(loop, &d->sig_hup);
    uv_signal_init(loop, &d->sig_int);
    uv_signal_init(loop, &d->sig_term);
    d->sig_hup.data = d->sig_int.data = d->sig_term.data = d;
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    d->signals_on = true;
    return d;
}

void proxy_daemon_stop(proxy_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    while (d->listeners) {
        struct proxy_listener *l = d->listeners;
        d->listeners = l->next;
        proxy_listener__close(l);
    }
    proxy_ops__stop(d);
    proxy_registry__close_all(d);
    proxy_kme__stop(d);
    if (d->signals_on) {
        uv_timer_stop(&d->drain_timer);
        uv_close((uv_handle_t *)&d->drain_timer, NULL);
        uv_close((uv_handle_t *)&d->sig_hup, NULL);
        uv_close((uv_handle_t *)&d->sig_int, NULL);
        uv_close((uv_handle_t *)&d->sig_term, NULL);
        d->signals_on = false;
    }
}

void proxy_daemon_free(proxy_daemon **dp)
{
    proxy_daemon *d = dp ? *dp : NULL;
    if (!d)
        return;
    *dp = NULL;
    while (d->listeners) {
        struct proxy_listener *l = d->listeners;
        d->listeners = l->next;
        proxy_listener__close(l);
    }
    proxy_registry__free(d);
    proxy_gen__unref(&d->gen);
    for (size_t i = 0; i < d->n_protos; i++)
        if (d->protos[i].svc && d->protos[i].p->free)
            d->protos[i].p->free(d->protos[i].svc);
    free(d->protos);
    free(d->links);
    policy_store_free(&d->policies);
    free(d->link_names);
    proxy_ops__free(d);
    free(d);
}
