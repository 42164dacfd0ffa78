/* A real admin listener for tests/unit/admin/test_admin_http.py: the admin
 * module and the metrics registry exactly as the daemon uses them, with
 * test-chosen metrics and mail settings. Prints "port N" once listening;
 * SIGUSR1 toggles readiness, SIGUSR2 counts one more message; SIGTERM stops
 * and the exit status says whether the loop ended with no handle left.
 *
 *   admin_testd [TIMEOUT_MS [MAX_CONNECTIONS]] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "admin.h"

struct ctx {
    admin_server *srv;
    metrics *reg;
    metric *messages, *sessions, *latency;
    bool ready;
    uv_signal_t term, usr1, usr2;
};

static bool ready(void *arg, char **why_r)
{
    struct ctx *c = arg;
    if (!c->ready)
        *why_r = strdup("kme link 'site': unreachable (connection refused)\n"
                        "listener 'submission': not bound");
    return c->ready;
}

static json_t *status(void *arg)
{
    struct ctx *c = arg;
    return json_pack("{s:b, s:{s:i}}", "ready", c->ready, "kme_links", "site", 42);
}

static void access_line(void *arg, const char *peer, const char *method, const char *path,
                        int code, size_t bytes)
{
    fprintf(stderr, "access %s %s %s %d %zu\n", peer, method, path, code, bytes);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct ctx *c = s->data;
    if (signum == SIGUSR1) {
        c->ready = !c->ready;
        return;
    }
    if (signum == SIGUSR2) {
        metric_add(c->messages, 1, "protected", "otp");
        return;
    }
    admin_stop(&c->srv);
    uv_close((uv_handle_t *)&c->term, NULL);
    uv_close((uv_handle_t *)&c->usr1, NULL);
    uv_close((uv_handle_t *)&c->usr2, NULL);
}

int main(int argc, char **argv)
{
    struct admin_config cfg = {.address = "127.0.0.1", .port = 0};
    if (argc > 1)
        cfg.timeout_ms = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        cfg.max_connections = (unsigned)strtoul(argv[2], NULL, 10);
    struct ctx c = {.ready = true};
    c.reg = metrics_new();
    c.messages = metrics_counter(c.reg, "qumail_smtp_messages_total",
                                 "Messages by outcome and protection level.", 2, "outcome",
                                 "level");
    c.sessions = metrics_gauge(c.reg, "qumail_sessions", "Open client sessions.", 1,
                               "protocol");
    c.latency = metrics_histogram(c.reg, "qumail_kme_request_seconds",
                                  "KME request latency.", metrics_latency_buckets,
                                  metrics_latency_buckets_count, 2, "link", "call");
    metric *odd = metrics_counter(c.reg, "qumail_test_odd_labels_total",
                                  "Label values needing escapes: \\ and\nnewline.", 1, "v");
    metric_add(c.messages, 3, "protected", "aes");
    metric_add(c.messages, 1, "refused", "none");
    metric_set(c.sessions, 2, "smtp");
    metric_observe(c.latency, 0.004, "site", "enc_keys");
    metric_observe(c.latency, 0.2, "site", "enc_keys");
    metric_observe(c.latency, 45, "site", "enc_keys");
    metric_add(odd, 1, "quote\" backslash\\ newline\n end");

    static struct admin_mail mail = {
        .display_name = "QuMail Gateway test",
        .default_domain = "example.org",
        .servers = {
            {"imap", "127.0.0.1", 2143, ADMIN_SEC_STARTTLS, true},
            {"smtp", "127.0.0.1", 2587, ADMIN_SEC_STARTTLS, true},
            {"smtp", "mail.example.org", 465, ADMIN_SEC_TLS, true},
        },
        .n_servers = 3,
    };
    struct admin_hooks hooks = {.ready = ready, .status = status, .access = access_line,
                                .arg = &c};
    uv_loop_t loop;
    uv_loop_init(&loop);
    char *err = NULL;
    c.srv = admin_start(&loop, &cfg, c.reg, &mail, &hooks, &err);
    if (c.srv == NULL) {
        fprintf(stderr, "admin_start: %s\n", err ? err : "?");
        free(err);
        return 1;
    }
    uv_signal_init(&loop, &c.term);
    uv_signal_init(&loop, &c.usr1);
    uv_signal_init(&loop, &c.usr2);
    c.term.data = c.usr1.data = c.usr2.data = &c;
    uv_signal_start(&c.term, on_signal, SIGTERM);
    uv_signal_start(&c.usr1, on_signal, SIGUSR1);
    uv_signal_start(&c.usr2, on_signal, SIGUSR2);
    printf("port %u\n", (unsigned)admin_port(c.srv));
    fflush(stdout);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    metrics_free(&c.reg);
    if (rc != 0) {
        fprintf(stderr, "admin_testd: handles left on the loop\n");
        return 3;
    }
    return 0;
}
