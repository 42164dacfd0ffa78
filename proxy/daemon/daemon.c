/* The proxy process: setup from the protocol table, signals, stop, free. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

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
        proxy_daemon_reload(d);
        return;
    }
    qlog_info("signal %d: stopping", signum);
    proxy_daemon_stop(d);
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
    if (load_policy(d, error_r) < 0 || proxy_kme__start(d, error_r) < 0 ||
        init_protocols(d, error_r) < 0 || !(d->gen = proxy_gen__new(d, cfg, NULL, error_r)) ||
        proxy_listener__open_all(d, error_r) < 0) {
        /* Handles close on the next loop run; the caller runs it. */
        proxy_daemon_stop(d);
        proxy_daemon_free(&d);
        return NULL;
    }
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
    proxy_registry__close_all(d);
    proxy_kme__stop(d);
    if (d->signals_on) {
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
    free(d);
}
