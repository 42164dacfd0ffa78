/* qumail kme: run the ETSI GS QKD 014 KME simulator (one or two KMEs). */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "commands.h"
#include "kme_server.h"
#include "log.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail kme --config FILE [options]\n"
            "\n"
            "Runs the ETSI GS QKD 014 KME simulator: one or two KMEs serving\n"
            "status, enc_keys and dec_keys over HTTPS with mutual TLS, linked\n"
            "to their peer KME over mutual TLS. See kme/README.md.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE     configuration file (JSON; required)\n"
            "      --log-level LVL   error, warn, info (default), debug\n"
            "  -t, --check           validate the configuration and exit\n"
            "  -h, --help            this help\n"
            "\n"
            "Exit status: 0 stopped by SIGINT/SIGTERM (or --check passed), 1 invalid\n"
            "configuration or could not start, 2 usage error.\n");
}

struct run_ctx {
    uv_loop_t *loop;
    kme_server *srv;
    uv_signal_t sigint, sigterm;
};

static void stopped(void *arg)
{
    struct run_ctx *ctx = arg;
    uv_close((uv_handle_t *)&ctx->sigint, NULL);
    uv_close((uv_handle_t *)&ctx->sigterm, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct run_ctx *ctx = s->data;
    if (ctx->srv == NULL)
        return;
    qlog_info("signal %d: stopping", signum);
    kme_server_stop(&ctx->srv, stopped, ctx);
}

int cmd_kme(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool check = false;
    int c;
    qlog_set_ident("qumail-kme");
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'l': {
            enum qlog_level lvl;
            if (qlog_level_parse(optarg, &lvl) < 0) {
                fprintf(stderr, "qumail kme: unknown log level '%s'\n", optarg);
                return 2;
            }
            qlog_set_level(lvl);
            break;
        }
        case 't':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: /* getopt named the option */
            fprintf(stderr, "usage: qumail kme --help\n");
            return 2;
        }
    }
    if (config == NULL || optind != argc) {
        fprintf(stderr, "qumail kme: %s\n", config == NULL ? "--config FILE is required"
                                                            : "unexpected argument");
        fprintf(stderr, "usage: qumail kme --help\n");
        return 2;
    }
    kme_server_config *cfg = NULL;
    char *err = NULL;
    if (kme_server_config_load(config, &cfg, &err) < 0) {
        fprintf(stderr, "%s\n", err != NULL ? err : "invalid configuration");
        free(err);
        return 1;
    }
    if (check) {
        printf("%s: OK (%zu KME%s)\n", config, kme_server_config_count(cfg),
               kme_server_config_count(cfg) == 1 ? "" : "s");
        kme_server_config_free(&cfg);
        return 0;
    }
    /* A peer KME or client that vanished must not kill the simulator with
     * SIGPIPE on the next write (seen with kill -9 of the peer KME): the
     * write fails with EPIPE and the connection closes instead. */
    signal(SIGPIPE, SIG_IGN);
    struct run_ctx ctx = {.loop = uv_default_loop()};
    int ret = kme_server_start(ctx.loop, cfg, &ctx.srv, &err);
    kme_server_config_free(&cfg);
    if (ret < 0) {
        qlog_error("%s", err != NULL ? err : kme_server_strerror(ret));
        free(err);
        uv_run(ctx.loop, UV_RUN_DEFAULT);
        uv_loop_close(ctx.loop);
        return 1;
    }
    uv_signal_init(ctx.loop, &ctx.sigint);
    uv_signal_init(ctx.loop, &ctx.sigterm);
    ctx.sigint.data = ctx.sigterm.data = &ctx;
    uv_signal_start(&ctx.sigint, on_signal, SIGINT);
    uv_signal_start(&ctx.sigterm, on_signal, SIGTERM);
    uv_run(ctx.loop, UV_RUN_DEFAULT);
    uv_loop_close(ctx.loop);
    return 0;
}
