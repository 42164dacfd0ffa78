/* kme_server: one or two KMEs on one loop (public API of kme_server.h). */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

struct kme_server {
    uv_loop_t *loop;
    struct kme kmes[2];
    size_t count;
    uv_timer_t stop_timer;
    void (*done)(void *arg);
    void *done_arg;
};

const char *kme_server_strerror(int code)
{
    switch (code) {
    case KME_SERVER_OK: return "success";
    case KME_SERVER_ECONFIG: return "invalid configuration";
    case KME_SERVER_ESTORE: return "key store (SQLite) failure";
    case KME_SERVER_ELISTEN: return "cannot listen";
    case KME_SERVER_ETLS: return "cannot load certificates";
    case KME_SERVER_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

void kme_server_peer_addr(struct kme_server *srv, const char *kme_id,
                          const char **host_r, uint16_t *port_r)
{
    *host_r = NULL;
    *port_r = 0;
    for (size_t i = 0; i < srv->count; i++) {
        struct kme *k = &srv->kmes[i];
        if (strcmp(k->cfg.kme_id, kme_id) == 0 && k->link_listener != NULL) {
            *host_r = k->cfg.link_host;
            *port_r = net_listener_port(k->link_listener);
        }
    }
}

int kme_server_start(uv_loop_t *loop, const kme_server_config *cfg,
                     kme_server **srv_r, char **error_r)
{
    *srv_r = NULL;
    if (error_r != NULL)
        *error_r = NULL;
    struct kme_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return KME_SERVER_ENOMEM;
    srv->loop = loop;
    for (size_t i = 0; i < cfg->count; i++) {
        int ret = kme_init(&srv->kmes[i], srv, loop, &cfg->kmes[i], error_r);
        if (ret < 0) {
            /* Listeners of the KMEs already up close asynchronously. */
            for (size_t j = 0; j < i; j++) {
                net_listener_close(&srv->kmes[j].api_listener);
                net_listener_close(&srv->kmes[j].link_listener);
                kme_destroy(&srv->kmes[j]);
            }
            free(srv);
            return ret;
        }
        srv->count = i + 1;
    }
    for (size_t i = 0; i < srv->count; i++)
        kme_run(&srv->kmes[i]);
    *srv_r = srv;
    return 0;
}

uint16_t kme_server_port(const kme_server *srv, size_t i)
{
    if (srv == NULL || i >= srv->count || srv->kmes[i].api_listener == NULL)
        return 0;
    return net_listener_port(srv->kmes[i].api_listener);
}

uint16_t kme_server_link_port(const kme_server *srv, size_t i)
{
    if (srv == NULL || i >= srv->count || srv->kmes[i].link_listener == NULL)
        return 0;
    return net_listener_port(srv->kmes[i].link_listener);
}

uint16_t kme_server_004_port(const kme_server *srv, size_t i)
{
    return srv != NULL && i < srv->count ? kme_e4_port(&srv->kmes[i]) : 0;
}

static void stop_timer_closed(uv_handle_t *h)
{
    struct kme_server *srv = h->data;
    void (*done)(void *) = srv->done;
    void *arg = srv->done_arg;
    free(srv);
    if (done != NULL)
        done(arg);
}

static void stop_poll(uv_timer_t *t)
{
    struct kme_server *srv = t->data;
    for (size_t i = 0; i < srv->count; i++) {
        if (!kme_stopped(&srv->kmes[i]))
            return;
    }
    for (size_t i = 0; i < srv->count; i++) {
        qlog_info("kme %s: stopped", srv->kmes[i].cfg.kme_id);
        kme_destroy(&srv->kmes[i]);
    }
    uv_close((uv_handle_t *)&srv->stop_timer, stop_timer_closed);
}

void kme_server_stop(kme_server **srvp, void (*done)(void *arg), void *arg)
{
    struct kme_server *srv = *srvp;
    if (srv == NULL)
        return;
    *srvp = NULL;
    srv->done = done;
    srv->done_arg = arg;
    for (size_t i = 0; i < srv->count; i++)
        kme_stop(&srv->kmes[i]);
    uv_timer_init(srv->loop, &srv->stop_timer);
    srv->stop_timer.data = srv;
    uv_timer_start(&srv->stop_timer, stop_poll, 0, 5);
}
