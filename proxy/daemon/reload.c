/* Configuration generations and the reload (SIGHUP). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

struct proxy_gen *proxy_gen__new(proxy_daemon *d, const struct qumail_config *cfg,
                                 struct qumail_config *owned, char **error_r)
{
    struct proxy_gen *g = calloc(1, sizeof(*g));
    if (g)
        g->proto_gen = calloc(d->n_protos ? d->n_protos : 1, sizeof(*g->proto_gen));
    if (!g || !g->proto_gen) {
        free(g);
        *error_r = strdup("out of memory");
        return NULL;
    }
    g->refs = 1;
    g->d = d;
    g->cfg = cfg;
    for (size_t i = 0; i < d->n_protos; i++) {
        const struct proxy_protocol *p = d->protos[i].p;
        if (!p->gen_new)
            continue;
        char *err = NULL;
        if (p->gen_new(d->protos[i].svc, cfg, &g->proto_gen[i], &err) < 0) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s: %s", p->name, err ? err : "cannot start");
            free(err);
            *error_r = strdup(msg);
            g->owned = NULL; /* the caller keeps it on failure */
            proxy_gen__unref(&g);
            return NULL;
        }
    }
    g->owned = owned;
    return g;
}

void proxy_gen__unref(struct proxy_gen **gp)
{
    struct proxy_gen *g = *gp;
    *gp = NULL;
    if (!g || --g->refs > 0)
        return;
    proxy_daemon *d = g->d;
    for (size_t i = 0; i < d->n_protos; i++)
        if (g->proto_gen[i] && d->protos[i].p->gen_free)
            d->protos[i].p->gen_free(g->proto_gen[i]);
    free(g->proto_gen);
    qumail_config_free(&g->owned);
    free(g);
}

static bool same_links(const struct qumail_config *a, const struct qumail_config *b)
{
    if (a->n_kme_links != b->n_kme_links)
        return false;
    for (size_t i = 0; i < a->n_kme_links; i++) {
        const struct qumail_kme_link *x = &a->kme_links[i], *y = &b->kme_links[i];
        if (strcmp(x->name, y->name) != 0 || strcmp(x->url, y->url) != 0 ||
            strcmp(x->cert_file, y->cert_file) != 0 || strcmp(x->key_file, y->key_file) != 0 ||
            (x->ca_file == NULL) != (y->ca_file == NULL) ||
            (x->ca_file && strcmp(x->ca_file, y->ca_file) != 0) ||
            x->timeout_ms != y->timeout_ms || x->connections != y->connections)
            return false;
    }
    return a->kme_simulator.enabled == b->kme_simulator.enabled;
}

/* Gives back a list made by reconcile_listeners: the listeners it opened
 * are closed, the kept ones return to d->listeners, unchanged. */
static void listeners_undo(proxy_daemon *d, struct proxy_listener *list)
{
    while (list) {
        struct proxy_listener *l = list;
        list = l->next;
        if (l->fresh) {
            proxy_listener__close(l);
        } else {
            l->next = d->listeners;
            d->listeners = l;
        }
    }
}

/* The listeners of the new configuration, in its order, in *list_r: the
 * unchanged ones moved out of d->listeners (still pointing at their old
 * settings), the others opened (fresh). On failure nothing changed. */
static int reconcile_listeners(proxy_daemon *d, const struct qumail_config *nc,
                               struct proxy_listener **list_r, char **error_r)
{
    struct proxy_listener *list = NULL, **tail = &list;
    for (size_t p = 0; p < d->n_protos; p++) {
        const struct qumail_listener *ls;
        size_t n;
        const struct qumail_conn_limits *lim;
        proxy_daemon__settings(d, p, nc, &ls, &n, &lim);
        for (size_t i = 0; i < n; i++) {
            struct proxy_listener **pp = &d->listeners;
            while (*pp && !((*pp)->proto == p && proxy_listener__same((*pp)->cfg, &ls[i])))
                pp = &(*pp)->next;
            struct proxy_listener *l = *pp;
            if (l) {
                *pp = l->next;
                l->fresh = false;
            } else if ((l = proxy_listener__open(d, p, &ls[i], lim->listen_backlog,
                                                 error_r))) {
                l->fresh = true;
            } else {
                listeners_undo(d, list);
                return -1;
            }
            l->next = NULL;
            *tail = l;
            tail = &l->next;
        }
    }
    *list_r = list;
    return 0;
}

/* Re-reads the configuration file: listeners (added, removed, or re-bound
 * when their address, port or certificate changed), upstreams, limits,
 * modes, trusted networks, host names, log level and the policy apply to
 * new sessions; sessions in flight keep what they started with. KME links
 * and the simulator need a restart. A configuration or policy with errors,
 * a protocol that cannot start with it, or a listener that cannot be bound
 * leaves everything as it was. */
int proxy_daemon_reload(proxy_daemon *d)
{
    char *err = NULL;
    const struct qumail_config *cur = d->gen->cfg;
    if (!cur->file) {
        if (!cur->policy_file)
            return 0;
        if (policy_store_reload(d->policies, cur->policy_file, d->link_names, &err) < 0) {
            qlog_error("reload: policy %s refused, the previous one stays in force:\n%s",
                       cur->policy_file, err ? err : "");
            free(err);
            return -1;
        }
        qlog_info("reload: policy %s loaded; new sessions use it", cur->policy_file);
        return 0;
    }
    struct qumail_config *nc = NULL;
    if (qumail_config_load(cur->file, &nc, &err) < 0) {
        qlog_error("reload: %s refused, the running configuration stays:\n%s", cur->file,
                   err ? err : "");
        free(err);
        return -1;
    }
    if (!same_links(d->first_cfg, nc))
        qlog_warn("reload: kme_links / kme_simulator changes take effect after a restart");
    struct proxy_gen *g = proxy_gen__new(d, nc, nc, &err);
    if (!g) {
        qlog_error("reload refused: %s", err);
        free(err);
        qumail_config_free(&nc);
        return -1;
    }
    struct proxy_listener *list = NULL;
    if (reconcile_listeners(d, nc, &list, &err) < 0) {
        qlog_error("reload refused: %s", err);
        free(err);
        proxy_gen__unref(&g); /* frees nc */
        return -1;
    }
    if (nc->policy_file &&
        policy_store_reload(d->policies, nc->policy_file, d->link_names, &err) < 0) {
        qlog_error("reload: policy %s refused, the running configuration stays:\n%s",
                   nc->policy_file, err ? err : "");
        free(err);
        listeners_undo(d, list);
        proxy_gen__unref(&g);
        return -1;
    }
    /* Commit: close the listeners the new configuration no longer has,
     * point the kept ones at the new settings (list is in their order),
     * switch generations. */
    while (d->listeners) {
        struct proxy_listener *l = d->listeners;
        d->listeners = l->next;
        proxy_listener__close(l);
    }
    d->listeners = list;
    size_t n_listeners = 0;
    struct proxy_listener *l = list;
    for (size_t p = 0; p < d->n_protos; p++) {
        const struct qumail_listener *ls;
        size_t n;
        const struct qumail_conn_limits *lim;
        proxy_daemon__settings(d, p, nc, &ls, &n, &lim);
        for (size_t i = 0; i < n && l; i++, l = l->next, n_listeners++) {
            l->cfg = &ls[i];
            l->fresh = false;
        }
    }
    proxy_gen__unref(&d->gen);
    d->gen = g;
    qlog_set_level((enum qlog_level)nc->log_level);
    qlog_info("reload: %s applied (%zu listeners%s); new sessions use it", nc->file,
              n_listeners, nc->policy_file ? ", policy reloaded" : "");
    return 0;
}
