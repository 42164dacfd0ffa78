/* Listening sockets: accept, wrap each connection in a net_conn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"
#include "net_internal.h"

struct net_listener {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    net_accept_cb cb;
    void *arg;
    uint16_t port;
};

static void on_connection(uv_stream_t *server, int status)
{
    net_listener *l = server->data;
    if (status < 0)
        return; /* e.g. EMFILE: the next accept may succeed */
    int err = 0;
    net_conn *c = net_conn_new_accepted(l->loop, server, &err);
    if (c == NULL)
        return;
    l->cb(l, c, l->arg);
}

static char *errorf(const char *host, uint16_t port, const char *what, int rc)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "listen on %s port %u: %s: %s", host, port, what, uv_strerror(rc));
    return strdup(msg);
}

net_listener *net_listen(uv_loop_t *loop, const char *host, uint16_t port,
                         net_accept_cb cb, void *arg, char **error_r)
{
    return net_listen_backlog(loop, host, port, NET_LISTEN_BACKLOG, cb, arg, error_r);
}

net_listener *net_listen_backlog(uv_loop_t *loop, const char *host, uint16_t port,
                                 int backlog, net_accept_cb cb, void *arg,
                                 char **error_r)
{
    struct sockaddr_storage ss;
    int rc;
    *error_r = NULL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "listen: '%s' is not a numeric IPv4 or IPv6 address", host);
        *error_r = strdup(msg);
        return NULL;
    }
    net_listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) < 0) {
        *error_r = errorf(host, port, "bind", rc);
        goto fail;
    }
    if ((rc = uv_listen((uv_stream_t *)&l->tcp, backlog > 0 ? backlog : NET_LISTEN_BACKLOG,
                        on_connection)) < 0) {
        *error_r = errorf(host, port, "listen", rc);
        goto fail;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &len);
    l->port = bound.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                  : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return l;
fail:
    uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
    return NULL;
}

uint16_t net_listener_port(const net_listener *l) { return l->port; }

void net_listener_close(net_listener **lp)
{
    net_listener *l = *lp;
    if (l == NULL)
        return;
    *lp = NULL;
    /* tcp is the first member: the handle's address is the struct's. */
    uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
}
