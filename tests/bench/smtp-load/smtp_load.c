/* smtp_load: an SMTP load generator on libuv.
 *
 * N concurrent connections each send messages of a given size over ESMTP
 * without pipelining (EHLO once; MAIL, RCPT.., DATA per message; RSET
 * between), for a count of messages or a duration, and print messages/s,
 * MB/s (10^6 bytes), latency percentiles and errors. See README.md. */
#include "smtp_load.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

bool sl_run_more(const struct sl_run *r)
{
    if (r->fatal)
        return false;
    if (r->deadline_ms != 0)
        return uv_now(r->loop) < r->deadline_ms;
    return r->claimed < r->opts->count;
}

bool sl_run_claim(struct sl_run *r)
{
    if (!sl_run_more(r))
        return false;
    r->claimed++;
    return true;
}

static int resolve(uv_loop_t *loop, const char *host, int port,
                   struct sockaddr_storage *out)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char service[8];
    snprintf(service, sizeof(service), "%d", port);
    uv_getaddrinfo_t req;
    int rc = uv_getaddrinfo(loop, &req, NULL, host, service, &hints);
    if (rc < 0)
        return rc;
    if (req.addrinfo == NULL || req.addrinfo->ai_addrlen > sizeof(*out)) {
        uv_freeaddrinfo(req.addrinfo);
        return UV_EAI_NONAME;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    uv_freeaddrinfo(req.addrinfo);
    return 0;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void report_text(struct sl_run *run, const struct sl_opts *o, double secs)
{
    double rate = secs > 0 ? (double)run->ok / secs : 0;
    uint64_t errors = 0;
    for (int i = 0; i < SL_ERR__COUNT; i++)
        errors += run->errors[i];
    printf("smtp_load %s:%d concurrency %u, message %zu bytes, %u recipient(s)\n",
           o->host, o->port, o->concurrency, run->msg->size, (unsigned)o->nto);
    printf("messages: %llu accepted, %llu failed in %.3f s\n",
           (unsigned long long)run->ok, (unsigned long long)run->failed, secs);
    printf("throughput: %.1f msg/s, %.2f MB/s\n", rate,
           rate * (double)run->msg->size / 1e6);
    printf("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f\n",
           ms(sl_stats_percentile(&run->stats, 50)),
           ms(sl_stats_percentile(&run->stats, 90)),
           ms(sl_stats_percentile(&run->stats, 99)),
           ms(sl_stats_percentile(&run->stats, 100)),
           sl_stats_mean(&run->stats) / 1e6);
    printf("errors: %llu", (unsigned long long)errors);
    for (int i = 0; i < SL_ERR__COUNT; i++)
        if (run->errors[i])
            printf(" %s=%llu", sl_err_names[i], (unsigned long long)run->errors[i]);
    printf("\n");
    if (run->first_error[0])
        printf("first error: %s\n", run->first_error);
}

static int report_json(struct sl_run *run, const struct sl_opts *o, double secs)
{
    double rate = secs > 0 ? (double)run->ok / secs : 0;
    json_t *errs = json_object();
    json_t *lat = json_object();
    json_t *root = json_object();
    uint64_t errors = 0;
    if (errs == NULL || lat == NULL || root == NULL)
        goto fail;
    for (int i = 0; i < SL_ERR__COUNT; i++) {
        errors += run->errors[i];
        if (json_object_set_new(errs, sl_err_names[i],
                                json_integer((json_int_t)run->errors[i])) < 0)
            goto fail;
    }
    static const struct { const char *name; double pct; } pcts[] = {
        {"p50", 50}, {"p90", 90}, {"p99", 99}, {"max", 100},
    };
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        if (json_object_set_new(lat, pcts[i].name,
                json_real(ms(sl_stats_percentile(&run->stats, pcts[i].pct)))) < 0)
            goto fail;
    if (json_object_set_new(lat, "mean", json_real(sl_stats_mean(&run->stats) / 1e6)) < 0)
        goto fail;
    if (json_object_set_new(root, "host", json_string(o->host)) < 0
        || json_object_set_new(root, "port", json_integer(o->port)) < 0
        || json_object_set_new(root, "concurrency", json_integer(o->concurrency)) < 0
        || json_object_set_new(root, "size", json_integer((json_int_t)run->msg->size)) < 0
        || json_object_set_new(root, "recipients", json_integer((json_int_t)o->nto)) < 0
        || json_object_set_new(root, "accepted", json_integer((json_int_t)run->ok)) < 0
        || json_object_set_new(root, "failed", json_integer((json_int_t)run->failed)) < 0
        || json_object_set_new(root, "errors", json_integer((json_int_t)errors)) < 0
        || json_object_set_new(root, "seconds", json_real(secs)) < 0
        || json_object_set_new(root, "msgs_per_s", json_real(rate)) < 0
        || json_object_set_new(root, "mb_per_s",
                               json_real(rate * (double)run->msg->size / 1e6)) < 0
        || json_object_set(root, "latency_ms", lat) < 0
        || json_object_set(root, "errors_by_kind", errs) < 0
        || json_object_set_new(root, "first_error", run->first_error[0]
                               ? json_string(run->first_error) : json_null()) < 0)
        goto fail;
    char *text = json_dumps(root, JSON_COMPACT);
    if (text == NULL)
        goto fail;
    puts(text);
    free(text);
    json_decref(root);
    json_decref(lat);
    json_decref(errs);
    return 0;
fail:
    json_decref(root);
    json_decref(lat);
    json_decref(errs);
    return -1;
}

int main(int argc, char **argv)
{
    struct sl_opts opts;
    struct sl_msg msg;
    struct sl_run run;
    struct sl_client **clients = NULL;
    const char *error = NULL;
    unsigned nclients = 0;
    int status = 1;
    int rc;
    uv_loop_t loop;

    memset(&msg, 0, sizeof(msg));
    memset(&run, 0, sizeof(run));
    if (sl_opts_parse(&opts, argc, argv, &error) < 0) {
        if (error != NULL)
            fprintf(stderr, "smtp_load: %s\n", error);
        sl_opts_usage(error != NULL ? stderr : stdout);
        sl_opts_clear(&opts);
        return error != NULL ? 2 : 0;
    }
    if (uv_loop_init(&loop) < 0) {
        fprintf(stderr, "smtp_load: cannot create the event loop\n");
        sl_opts_clear(&opts);
        return 1;
    }
    if (sl_msg_build(&msg, &opts, &error) < 0) {
        fprintf(stderr, "smtp_load: %s\n", error);
        goto out;
    }
    run.loop = &loop;
    run.opts = &opts;
    run.msg = &msg;
    rc = resolve(&loop, opts.host, opts.port, &run.addr);
    if (rc < 0) {
        fprintf(stderr, "smtp_load: %s: %s\n", opts.host, uv_strerror(rc));
        goto out;
    }

    nclients = opts.concurrency;
    if (opts.count != 0 && opts.count < nclients)
        nclients = (unsigned)opts.count;
    clients = calloc(nclients, sizeof(struct sl_client *));
    if (clients == NULL) {
        fprintf(stderr, "smtp_load: out of memory\n");
        goto out;
    }
    uv_update_time(&loop);
    if (opts.seconds > 0)
        run.deadline_ms = uv_now(&loop) + (uint64_t)(opts.seconds * 1000);
    run.t_start_ns = uv_hrtime();
    run.t_last_ns = run.t_start_ns;
    for (unsigned i = 0; i < nclients; i++) {
        rc = sl_client_start(&run, i, &clients[i]);
        if (rc < 0) {
            fprintf(stderr, "smtp_load: client %u: %s\n", i, uv_strerror(rc));
            run.fatal = true;
            break;
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);

    if (run.fatal)
        fprintf(stderr, "smtp_load: out of memory during the run\n");
    double secs = (double)(run.t_last_ns - run.t_start_ns) / 1e9;
    uint64_t errors = 0;
    if (opts.json) {
        if (report_json(&run, &opts, secs) < 0) {
            fprintf(stderr, "smtp_load: cannot format JSON\n");
            goto out;
        }
    } else {
        report_text(&run, &opts, secs);
    }
    for (int i = 0; i < SL_ERR__COUNT; i++)
        errors += run.errors[i];
    status = run.fatal ? 1 : errors ? 3 : 0;

out:
    if (clients != NULL) {
        for (unsigned i = 0; i < nclients; i++)
            sl_client_free(&clients[i]);
        free(clients);
    }
    /* every handle is closed when uv_run returns; this must succeed */
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "smtp_load: handles left open at exit\n");
        status = 1;
    }
    sl_stats_clear(&run.stats);
    sl_msg_clear(&msg);
    sl_opts_clear(&opts);
    return status;
}
