/* qumail proxy --config FILE: the SMTP proxy daemon (proxy/README.md). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "settings.h"
#include "daemon.h"
#include "log.h"
#include "mime.h"
#include "services.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail proxy --config FILE [--log-level LEVEL]\n"
            "\n"
            "Runs the mail proxy: SMTP listeners that protect outgoing mail with\n"
            "quantum keys and relay it to the upstream server (proxy/README.md).\n"
            "\n"
            "  -c, --config FILE     daemon configuration (JSON, config/README.md)\n"
            "  -l, --log-level LEVEL error, warn, info (default) or debug;\n"
            "                        overrides the configuration's log_level\n"
            "  -h, --help            this text\n"
            "\n"
            "Signals: SIGHUP reloads the configuration and the policy file\n"
            "(listeners, upstream, limits; KME links need a restart);\n"
            "SIGINT/SIGTERM stop.\n");
}

int cmd_proxy(int argc, char **argv)
{
    const char *config_path = NULL;
    const char *level_name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        } else if ((strcmp(argv[i], "-l") == 0 || strcmp(argv[i], "--log-level") == 0) &&
                   i + 1 < argc) {
            level_name = argv[++i];
        } else {
            fprintf(stderr, "qumail proxy: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!config_path) {
        fprintf(stderr, "qumail proxy: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    qlog_set_ident("qumail-proxy");
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    if (qumail_config_load(config_path, &cfg, &err) < 0) {
        fprintf(stderr, "qumail proxy: %s\n", err ? err : "cannot load the configuration");
        free(err);
        return 1;
    }
    qlog_set_level((enum qlog_level)cfg->log_level);
    if (level_name) {
        enum qlog_level lv;
        if (qlog_level_parse(level_name, &lv) < 0) {
            fprintf(stderr, "qumail proxy: unknown log level '%s'\n", level_name);
            qumail_config_free(&cfg);
            return 2;
        }
        qlog_set_level(lv);
    }
    signal(SIGPIPE, SIG_IGN);
    /* The thread pool runs encryption and the embedded KME's SQLite commits
     * (fsync): libuv's default of 4 threads lets a few commits hold up
     * every encryption. The operator's own setting wins. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);
    if (mime_init() < 0) {
        qlog_error("cannot initialise the MIME engine");
        qumail_config_free(&cfg);
        return 1;
    }

    /* The protocols this binary serves. */
    static const struct proxy_protocol *const protocols[] = {&proxy_smtp_protocol};
    if (cfg->imap.enabled)
        qlog_warn("imap: configured, but this build has no IMAP proxy yet: "
                  "its listeners are not opened");

    uv_loop_t loop;
    uv_loop_init(&loop);
    proxy_daemon *d = proxy_daemon_new(&loop, cfg, protocols,
                                       sizeof(protocols) / sizeof(protocols[0]), &err);
    int status = 0;
    if (!d) {
        qlog_error("%s", err ? err : "cannot start");
        free(err);
        status = 1;
    } else {
        qlog_info("qumail proxy ready (pid %d)", (int)getpid());
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    proxy_daemon_free(&d);
    uv_loop_close(&loop);
    qumail_config_free(&cfg);
    return status;
}
