/* Listeners from the protocol table, and what happens at accept: the
 * connection limits, then the protocol's accept with a registry handle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool proxy_listener__same(const struct qumail_listener *a, const struct qumail_listener *b)
{
    return same_str(a->name, b->name) && same_str(a->address, b->address) &&
           a->port == b->port && a->tls == b->tls && same_str(a->cert_file, b->cert_file) &&
           same_str(a->key_file, b->key_file);
}

static void refuse(struct proxy_listener *l, net_conn **conn, const char *reason)
{
    const struct proxy_protocol *p = l->d->protos[l->proto].p;
    qlog_warn("%s: connection from %s on %s refused: %s", p->name,
              net_conn_peer_addr(*conn), l->name, reason);
    /* On implicit TLS the goodbye would need a handshake first: just close. */
    if (l->tls && l->cfg->tls == QUMAIL_LISTEN_TLS_IMPLICIT) {
        net_conn_close(conn);
        return;
    }
    if (p->refuse)
        p->refuse(*conn, reason);
    net_conn_close_after_write(conn);
}

static void on_accept(net_listener *nl, net_conn *conn, void *arg)
{
    struct proxy_listener *l = arg;
    proxy_daemon *d = l->d;
    (void)nl;
    if (d->stopping) {
        net_conn_close(&conn);
        return;
    }
    struct sockaddr_storage ss;
    if (proxy_registry__peer_sockaddr(net_conn_peer_addr(conn), &ss) < 0) {
        net_conn_close(&conn); /* no address, no limit: should not happen */
        return;
    }
    const struct sockaddr *peer = (const struct sockaddr *)&ss;
    const char *reason = NULL;
    if (!proxy_registry__admit(d, l->proto, peer, &reason)) {
        proxy_ops__session_count(d, l->proto, false, true);
        refuse(l, &conn, reason);
        return;
    }
    proxy_session *h = proxy_registry__add(d, l->proto, l, peer);
    if (!h) {
        refuse(l, &conn, "Insufficient system resources");
        return;
    }
    const struct proxy_protocol *p = d->protos[l->proto].p;
    struct proxy_accept a = {
        .daemon = d,
        .loop = d->loop,
        .svc = d->protos[l->proto].svc,
        .gen = d->gen->proto_gen ? d->gen->proto_gen[l->proto] : NULL,
        .cfg = d->gen->cfg,
        .listener = l->cfg,
        .tls = l->tls,
        .conn = conn,
        .peer = peer,
        .session = h,
    };
    void *impl = p->accept(&a);
    if (!impl) {
        proxy_session_end(&h); /* the protocol never saw it started */
        return;
    }
    h->impl = impl;
}

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

struct proxy_listener *proxy_listener__open(proxy_daemon *d, size_t proto,
                                            const struct qumail_listener *lc,
                                            uint32_t backlog, char **error_r)
{
    const char *pname = d->protos[proto].p->name;
    struct proxy_listener *l = calloc(1, sizeof(*l));
    if (!l || !(l->name = strdup(lc->name))) {
        free(l);
        *error_r = strdup("out of memory");
        return NULL;
    }
    l->d = d;
    l->proto = proto;
    l->cfg = lc;
    l->refs = 1;
    char what[256];
    snprintf(what, sizeof(what), "%s listener %s", pname, lc->name);
    if (lc->tls != QUMAIL_LISTEN_TLS_NONE) {
        struct net_tls_config tc = {
            .server = true, .cert_file = lc->cert_file, .key_file = lc->key_file};
        if (!(l->tls = make_tls(&tc, what, error_r))) {
            free(l->name);
            free(l);
            return NULL;
        }
    }
    char *err = NULL;
    l->listener = net_listen_backlog(d->loop, lc->address, lc->port, (int)backlog, on_accept,
                                     l, &err);
    if (!l->listener) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s (%s:%u): %s", what, lc->address, lc->port,
                 err ? err : "cannot listen");
        free(err);
        *error_r = strdup(msg);
        net_tls_free(&l->tls);
        free(l->name);
        free(l);
        return NULL;
    }
    qlog_info("%s on %s:%u (tls %s)", what, lc->address, net_listener_port(l->listener),
              qumail_listen_tls_name(lc->tls));
    return l;
}

void proxy_listener__unref(struct proxy_listener **lp)
{
    struct proxy_listener *l = *lp;
    *lp = NULL;
    if (!l || --l->refs > 0)
        return;
    net_listener_close(&l->listener);
    net_tls_free(&l->tls);
    free(l->name);
    free(l);
}

void proxy_listener__close(struct proxy_listener *l)
{
    if (l->listener)
        qlog_info("%s listener %s closed", l->d->protos[l->proto].p->name, l->name);
    net_listener_close(&l->listener);
    l->next = NULL;
    l->cfg = NULL; /* its generation may go before the last session does */
    proxy_listener__unref(&l); /* the daemon's reference */
}

int proxy_listener__open_all(proxy_daemon *d, char **error_r)
{
    struct proxy_listener **tail = &d->listeners;
    for (size_t p = 0; p < d->n_protos; p++) {
        const struct qumail_listener *ls;
        size_t n;
        const struct qumail_conn_limits *lim;
        proxy_daemon__settings(d, p, d->gen->cfg, &ls, &n, &lim);
        for (size_t i = 0; i < n; i++) {
            struct proxy_listener *l =
                proxy_listener__open(d, p, &ls[i], lim->listen_backlog, error_r);
            if (!l)
                return -1;
            *tail = l;
            tail = &l->next;
        }
    }
    return 0;
}
