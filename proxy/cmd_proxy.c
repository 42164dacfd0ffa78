/* qumail proxy --config FILE: the SMTP proxy daemon (proxy/README.md). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "settings.h"
#include "daemon.h"
#include "log.h"
#include "statefile.h"
#include "mime.h"
#include "service_env.h"
#include "services.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail proxy --config FILE [--log-level LEVEL] [--log-target TARGET]\n"
            "\n"
            "Runs the mail proxy: SMTP listeners that protect outgoing mail with\n"
            "quantum keys and relay it to the upstream server (proxy/README.md).\n"
            "\n"
            "  -c, --config FILE     daemon configuration (JSON, config/README.md)\n"
            "      --log-target T    auto (default: journal when stderr is the journal,\n"
            "                        else stderr), stderr, journal (<N> priority\n"
            "                        prefixes) or syslog (facility mail)\n"
            "      --log-level LEVEL error, warn, info (default) or debug;\n"
            "                        overrides the configuration's log_level\n"
            "  -h, --help            this text\n"
            "\n"
            "Signals: SIGHUP reloads the configuration and the policy file\n"
            "(listeners, upstream, limits; KME links need a restart);\n"
            "SIGINT/SIGTERM stop.\n"
            "Exit status: 0 stopped by a signal, 1 could not start (reason on\n"
            "stderr), 2 usage error.\n");
}

int cmd_proxy(int argc, char **argv)
{
    const char *config_path = NULL;
    const char *level_name = NULL;
    const char *target_name = "auto";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            level_name = argv[++i];
        } else if (strcmp(argv[i], "--log-target") == 0 && i + 1 < argc) {
            target_name = argv[++i];
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
    enum qlog_target target;
    if (qlog_target_parse(target_name, &target) < 0) {
        fprintf(stderr, "qumail proxy: --log-target: '%s' is not auto, stderr, journal or "
                "syslog\n", target_name);
        return 2;
    }
    qlog_set_target(target);
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

    /* State files (simulator pools, vault) are the daemon's alone, however
     * it was started (the unit says UMask=0077 too). */
    umask(077);
    if (service_prepare_state_dir(cfg->state_dir, &err) < 0) {
        qlog_error("%s", err);
        free(err);
        qumail_config_free(&cfg);
        return 1;
    }
    /* Key material lives under state_dir: a folder others can write into
     * is refused, one they can list is reported (SECURITY.md). */
    char *warning = NULL;
    if (statefile_dir(cfg->state_dir, &warning, &err) < 0) {
        qlog_error("state_dir: %s", err ? err : "out of memory");
        free(err);
        qumail_config_free(&cfg);
        return 1;
    }
    if (warning)
        qlog_warn("state_dir: %s", warning);
    free(warning);

    /* The protocols this binary serves. */
    static const struct proxy_protocol *const protocols[] = {&proxy_smtp_protocol,
                                                             &proxy_imap_protocol};

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
        service_notify("READY=1"); /* listeners are bound: Type=notify */
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    proxy_daemon_free(&d);
    uv_loop_close(&loop);
    qumail_config_free(&cfg);
    return status;
}
