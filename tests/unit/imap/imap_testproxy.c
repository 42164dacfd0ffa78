/* A test-only IMAP proxy: one listener, one upstream, the imap_session as
 * the daemon will run it, without the daemon. For trying real clients and
 * imaptest against a real Dovecot before (and besides) `qumail proxy`.
 *
 *   imap_testproxy [-d] -l PORT -u HOST:PORT [-t plain|starttls|implicit]
 *                  [-a CAFILE] [-n SERVERNAME] [-c CERT -k KEY [-i]] [-r] [-x]
 *   -l  listen on 127.0.0.1:PORT (0: a free port)
 *   -u  upstream; -t its TLS (default plain), -a its trust anchors,
 *       -n the name checked in its certificate
 *   -c/-k  offer TLS to clients (STARTTLS, or implicit with -i)
 *   -r  require TLS before authentication (LOGINDISABLED)
 *   -x  send the client address upstream (ID x-originating-ip)
 *   -d  debug log
 * Prints "listening PORT" on stdout once bound; stops on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imap_session.h"
#include "log.h"

static struct imap_session_config cfg;
static unsigned live;

static void on_closed(void *ctx, imap_session *s)
{
    (void)ctx;
    (void)s;
    live--;
}

static const struct imap_session_hooks hooks = {.closed = on_closed};

static void on_accept(net_listener *l, net_conn *conn, void *arg)
{
    (void)l;
    uv_loop_t *loop = arg;
    if (imap_session_new(loop, conn, &cfg, &hooks, NULL))
        live++;
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    uv_stop(h->loop);
}

int main(int argc, char **argv)
{
    int port = -1, opt;
    char *up = NULL, *cert = NULL, *key = NULL, *ca = NULL, *sni = NULL;
    const char *uptls = "plain";
    bool implicit = false;
    cfg.listener = "testproxy";
    while ((opt = getopt(argc, argv, "dl:u:t:a:n:c:k:irx")) != -1) {
        switch (opt) {
        case 'd': qlog_set_level(QLOG_DEBUG); break;
        case 'l': port = (int)strtol(optarg, NULL, 10); break;
        case 'u': up = optarg; break;
        case 't': uptls = optarg; break;
        case 'a': ca = optarg; break;
        case 'n': sni = optarg; break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'i': implicit = true; break;
        case 'r': cfg.require_tls_for_auth = true; break;
        case 'x': cfg.upstream.send_client_id = true; break;
        default:
            fprintf(stderr, "usage: see the comment at the top of imap_testproxy.c\n");
            return 2;
        }
    }
    char *colon = up ? strrchr(up, ':') : NULL;
    if (port < 0 || !colon) {
        fprintf(stderr, "usage: imap_testproxy -l PORT -u HOST:PORT ...\n");
        return 2;
    }
    *colon = '\0';
    cfg.upstream.host = up;
    cfg.upstream.port = (uint16_t)strtol(colon + 1, NULL, 10);
    cfg.upstream.server_name = sni;
    cfg.upstream.tls = strcmp(uptls, "starttls") == 0   ? IMAP_UPSTREAM_STARTTLS
                       : strcmp(uptls, "implicit") == 0 ? IMAP_UPSTREAM_IMPLICIT
                                                        : IMAP_UPSTREAM_PLAIN;
    char *err = NULL;
    if (cfg.upstream.tls != IMAP_UPSTREAM_PLAIN) {
        struct net_tls_config tc = {.server = false, .ca_file = ca, .verify_peer = true};
        cfg.upstream.tls_ctx = net_tls_new(&tc, &err);
        if (!cfg.upstream.tls_ctx) {
            fprintf(stderr, "upstream TLS: %s\n", err);
            return 1;
        }
    }
    if (cert) {
        struct net_tls_config tc = {.server = true, .cert_file = cert, .key_file = key};
        cfg.tls_ctx = net_tls_new(&tc, &err);
        if (!cfg.tls_ctx) {
            fprintf(stderr, "TLS: %s\n", err);
            return 1;
        }
        cfg.implicit_tls = implicit;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    net_listener *l = net_listen(loop, "127.0.0.1", (uint16_t)port, on_accept, loop, &err);
    if (!l) {
        fprintf(stderr, "listen: %s\n", err);
        return 1;
    }
    uv_signal_t sint, sterm;
    uv_signal_init(loop, &sint);
    uv_signal_init(loop, &sterm);
    uv_signal_start(&sint, on_signal, SIGINT);
    uv_signal_start(&sterm, on_signal, SIGTERM);
    printf("listening %u\n", net_listener_port(l));
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    net_listener_close(&l);
    uv_close((uv_handle_t *)&sint, NULL);
    uv_close((uv_handle_t *)&sterm, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    net_tls_free(&cfg.tls_ctx);
    net_tls_free(&cfg.upstream.tls_ctx);
    return 0;
}
