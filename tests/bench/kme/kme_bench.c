/* kme_bench: key deliveries per second through ETSI 014 against a real KME
 * (qumail kme), with the asynchronous KME client.
 *
 * One delivery = enc_keys on the master SAE's KME, then dec_keys of the
 * same key IDs on the slave SAE's KME (the bytes are compared). For each
 * concurrency level (default 1, 16, 64) that many workers run on keep-alive
 * mutual-TLS connections (one connection per worker and side) for a fixed
 * time after a warm-up. Reported per level: deliveries/s, latency p50/p99
 * of a whole delivery, and the KME server's VmRSS/VmHWM from /proc. The
 * baseline in the same run is the status round trip at the same
 * concurrency (HTTPS + JSON path with no key work).
 *
 * usage: kme_bench --url-a URL --url-b URL --certs DIR [--master SAE]
 *        [--slave SAE] [--server-pid PID] [--clients 1,16,64]
 *        [--seconds S] [--warmup S] [--bits N] [--threads T]
 *        [--only status|delivery] */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "kme_client.h"

struct opts {
    const char *url_a, *url_b, *certs, *master, *slave;
    long server_pid;
    int clients[16];
    int nclients;
    double seconds, warmup;
    uint64_t bits;
    int threads;
    bool no_status, no_delivery;
};

enum mode { MODE_STATUS, MODE_DELIVERY };

/* Latency samples (microseconds), one array per thread. */
struct samples {
    uint32_t *v;
    size_t n, cap;
};

static void sample_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (s->v == NULL)
            abort();
    }
    uint64_t us = ns / 1000;
    s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

struct thread_ctx;

struct worker {
    struct thread_ctx *t;
    uint64_t started_ns;
    struct kme_keys *enc;
    bool busy;
};

struct thread_ctx {
    const struct opts *o;
    enum mode mode;
    int nworkers;
    int active; /* workers still issuing requests */
    uv_loop_t loop;
    kme_client *a, *b;
    struct worker *w;
    uint64_t t_begin, t_measure, t_end; /* hrtime ns */
    uint64_t done, all_ok, errors, mismatches;
    char first_error[256];
    struct samples lat;
    struct kme_client_stats sa, sb;
    pthread_t tid;
};

static void worker_next(struct worker *w);
static void worker_stop(struct thread_ctx *t);

static void record(struct worker *w, bool ok)
{
    struct thread_ctx *t = w->t;
    uint64_t now = uv_hrtime();
    if (ok)
        t->all_ok++;
    if (!ok)
        t->errors++;
    else if (now >= t->t_measure && now <= t->t_end) {
        t->done++;
        sample_add(&t->lat, now - w->started_ns);
    }
}

static void note_error(struct thread_ctx *t, const struct kme_result *res)
{
    if (t->first_error[0] == '\0')
        snprintf(t->first_error, sizeof(t->first_error), "%s: %s",
                 kme_client_errname(res->error), res->message);
}

static void status_cb(const struct kme_result *res, const struct kme_status *st, void *arg)
{
    (void)st;
    struct worker *w = arg;
    w->busy = false;
    if (res->error)
        note_error(w->t, res);
    record(w, res->error == 0);
    if (res->error != KME_ECANCELLED)
        worker_next(w);
}

static void dec_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct worker *w = arg;
    w->busy = false;
    bool ok = res->error == 0;
    if (!ok)
        note_error(w->t, res);
    if (ok && (keys->total_len != w->enc->total_len ||
               memcmp(keys->material, w->enc->material, keys->total_len) != 0)) {
        w->t->mismatches++;
        ok = false;
    }
    kme_keys_free(&keys);
    kme_keys_free(&w->enc);
    record(w, ok);
    if (res->error != KME_ECANCELLED)
        worker_next(w);
}

static void enc_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct worker *w = arg;
    struct thread_ctx *t = w->t;
    w->busy = false;
    if (res->error != 0) {
        note_error(t, res);
        record(w, false);
        if (res->error != KME_ECANCELLED)
            worker_next(w);
        return;
    }
    w->enc = keys;
    const char *ids[64];
    size_t n = keys->count < 64 ? keys->count : 64;
    for (size_t i = 0; i < n; i++)
        ids[i] = keys->keys[i].key_id;
    if (kme_client_dec_keys(t->b, t->o->master, ids, n, dec_cb, w) == 0) {
        w->busy = true;
    } else {
        kme_keys_free(&w->enc);
        worker_stop(t);
    }
}

/* The last worker to stop takes the statistics and frees the clients,
 * which lets the loop end. */
static void worker_stop(struct thread_ctx *t)
{
    if (--t->active > 0)
        return;
    kme_client_get_stats(t->a, &t->sa);
    kme_client_get_stats(t->b, &t->sb);
    kme_client_free(&t->a);
    kme_client_free(&t->b);
}

static void worker_next(struct worker *w)
{
    struct thread_ctx *t = w->t;
    if (uv_hrtime() >= t->t_end) {
        worker_stop(t);
        return;
    }
    w->started_ns = uv_hrtime();
    int rc = t->mode == MODE_STATUS
                 ? kme_client_status(t->a, t->o->slave, status_cb, w)
                 : kme_client_enc_bits(t->a, t->o->slave, t->o->bits, enc_cb, w);
    if (rc == 0)
        w->busy = true;
    else
        worker_stop(t);
}

static kme_client *make_client(struct thread_ctx *t, const char *url, const char *sae)
{
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof(cert), "%s/%s.pem", t->o->certs, sae);
    snprintf(key, sizeof(key), "%s/%s.key", t->o->certs, sae);
    snprintf(ca, sizeof(ca), "%s/ca.pem", t->o->certs);
    struct kme_client_config cfg = {
        .url = url,
        .cert_file = cert,
        .key_file = key,
        .ca_file = ca,
        .max_connections = (unsigned)t->nworkers,
        .request_timeout_ms = 30000,
        .connect_timeout_ms = 30000,
    };
    char *err = NULL;
    kme_client *c = kme_client_new(&t->loop, &cfg, &err);
    if (c == NULL) {
        fprintf(stderr, "kme_bench: %s\n", err);
        exit(1);
    }
    return c;
}

static void *thread_main(void *arg)
{
    struct thread_ctx *t = arg;
    t->active = t->nworkers;
    for (int i = 0; i < t->nworkers; i++)
        worker_next(&t->w[i]);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void read_rss(long pid, long *rss_kb, long *hwm_kb)
{
    *rss_kb = *hwm_kb = -1;
    if (pid <= 0)
        return;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm_kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

static double cpu_seconds(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long proc_cpu_ticks(long pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    long utime = 0, stime = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14)
            utime = strtol(tok, NULL, 10); /* the kernel's digits */
        else if (field == 15) {
            stime = strtol(tok, NULL, 10);
            break;
        }
    }
    return utime + stime;
}

/* Returns the number of completed operations, or -1 on any error. */
static long run_level(const struct opts *o, enum mode mode, int clients)
{
    int nthreads = o->threads < clients ? o->threads : clients;
    struct thread_ctx *ts = calloc((size_t)nthreads, sizeof(*ts));
    uint64_t begin = uv_hrtime();
    uint64_t measure = begin + (uint64_t)(o->warmup * 1e9);
    uint64_t end = measure + (uint64_t)(o->seconds * 1e9);
    for (int i = 0; i < nthreads; i++) {
        struct thread_ctx *t = &ts[i];
        t->o = o;
        t->mode = mode;
        t->nworkers = clients / nthreads + (i < clients % nthreads);
        uv_loop_init(&t->loop);
        t->a = make_client(t, o->url_a, o->master);
        t->b = make_client(t, o->url_b, o->slave);
        t->w = calloc((size_t)t->nworkers, sizeof(*t->w));
        for (int j = 0; j < t->nworkers; j++)
            t->w[j].t = t;
        t->t_begin = begin;
        t->t_measure = measure;
        t->t_end = end;
    }
    double cpu0 = cpu_seconds(RUSAGE_SELF);
    long srv0 = proc_cpu_ticks(o->server_pid);
    for (int i = 0; i < nthreads; i++)
        pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]);
    for (int i = 0; i < nthreads; i++)
        pthread_join(ts[i].tid, NULL);
    double wall = (uv_hrtime() - begin) / 1e9;
    double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
    long srv1 = proc_cpu_ticks(o->server_pid);
    long rss, hwm;
    read_rss(o->server_pid, &rss, &hwm);

    struct samples all = {0};
    uint64_t done = 0, all_ok = 0, errors = 0, mism = 0, conns = 0, reqs = 0;
    const char *first_error = "";
    for (int i = 0; i < nthreads; i++) {
        struct thread_ctx *t = &ts[i];
        done += t->done;
        all_ok += t->all_ok;
        errors += t->errors;
        mism += t->mismatches;
        if (t->first_error[0] && !first_error[0])
            first_error = t->first_error;
        for (size_t j = 0; j < t->lat.n; j++)
            sample_add(&all, (uint64_t)t->lat.v[j] * 1000);
        conns += t->sa.connections_opened + t->sb.connections_opened;
        reqs += t->sa.http_requests + t->sb.http_requests;
    }
    if (all.n > 0)
        qsort(all.v, all.n, sizeof(*all.v), cmp_u32);
    /* the index is meant to be an integer (the median element) */
    double p50 = all.n ? all.v[all.n / 2] / 1000.0 : 0; // NOLINT(bugprone-integer-division)
    double p99 = all.n ? all.v[(size_t)((double)all.n * 0.99)] / 1000.0 : 0;
    long ticks = sysconf(_SC_CLK_TCK);
    double srv_cpu = srv0 >= 0 && srv1 >= 0 ? (double)(srv1 - srv0) / (double)ticks : -1;
    /* CPU time per operation (warm-up included on both sides): a figure
     * that holds when other load on the machine skews the rates. */
    double cli_us = all_ok ? cpu * 1e6 / (double)all_ok : 0;
    double srv_us = all_ok && srv_cpu >= 0 ? srv_cpu * 1e6 / (double)all_ok : 0;
    printf("%-8d %-9s %10.0f %8.2f %8.2f %10ld %10ld %8.0f%% %8.0f%% %7.1f %7.1f %6llu %9llu "
           "%6llu%s%s\n",
           clients, mode == MODE_STATUS ? "status" : "delivery", done / o->seconds, p50, p99,
           rss, hwm, 100.0 * cpu / wall, srv_cpu >= 0 ? 100.0 * srv_cpu / wall : -1.0, cli_us,
           srv_us,
           (unsigned long long)conns, (unsigned long long)reqs,
           (unsigned long long)errors + (unsigned long long)mism, first_error[0] ? "  first error: " : "",
           first_error);
    fflush(stdout);
    for (int i = 0; i < nthreads; i++) {
        struct thread_ctx *t = &ts[i];
        kme_client_free(&t->a);
        kme_client_free(&t->b);
        for (int j = 0; j < t->nworkers; j++)
            kme_keys_free(&t->w[j].enc);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
        free(t->w);
        free(t->lat.v);
    }
    free(all.v);
    free(ts);
    return errors + mism == 0 ? (long)done : -1;
}

__attribute__((noreturn)) static void usage(void);

/* An option's number (integer or decimal); anything else is a usage error. */
static double opt_num(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        usage();
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: kme_bench --url-a URL --url-b URL --certs DIR [--master SAE] "
                    "[--slave SAE] [--server-pid PID] [--clients 1,16,64] [--seconds S] "
                    "[--warmup S] [--bits N] [--threads T] [--only status|delivery]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = {
        .master = "sae-a", .slave = "sae-b", .seconds = 5, .warmup = 1, .bits = 256,
        .threads = 1, .clients = {1, 16, 64}, .nclients = 3,
    };
    static const struct option lopts[] = {
        {"url-a", 1, NULL, 'a'}, {"url-b", 1, NULL, 'b'}, {"certs", 1, NULL, 'c'},
        {"master", 1, NULL, 'm'}, {"slave", 1, NULL, 's'}, {"server-pid", 1, NULL, 'p'},
        {"clients", 1, NULL, 'n'}, {"seconds", 1, NULL, 'S'}, {"warmup", 1, NULL, 'W'},
        {"bits", 1, NULL, 'B'}, {"threads", 1, NULL, 'T'}, {"only", 1, NULL, 'O'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (ch) {
        case 'a': o.url_a = optarg; break;
        case 'b': o.url_b = optarg; break;
        case 'c': o.certs = optarg; break;
        case 'm': o.master = optarg; break;
        case 's': o.slave = optarg; break;
        case 'p': o.server_pid = (long)opt_num(optarg); break;
        case 'S': o.seconds = opt_num(optarg); break;
        case 'W': o.warmup = opt_num(optarg); break;
        case 'B': o.bits = strtoull(optarg, NULL, 10); break;
        case 'T': o.threads = (int)opt_num(optarg); break;
        case 'O':
            o.no_status = strcmp(optarg, "delivery") == 0;
            o.no_delivery = strcmp(optarg, "status") == 0;
            if (!o.no_status && !o.no_delivery)
                usage();
            break;
        case 'n': {
            o.nclients = 0;
            char *save = NULL;
            for (char *t = strtok_r(optarg, ",", &save); t && o.nclients < 16;
                 t = strtok_r(NULL, ",", &save))
                o.clients[o.nclients++] = (int)opt_num(t);
            break;
        }
        default: usage();
        }
    }
    if (!o.url_a || !o.url_b || !o.certs || o.seconds <= 0 || o.threads < 1 || o.bits == 0)
        usage();
    for (int i = 0; i < o.nclients; i++)
        if (o.clients[i] < 1)
            usage();
    long rss, hwm;
    read_rss(o.server_pid, &rss, &hwm);
    printf("kme_bench: %s -> %s, %llu-bit keys, %.1f s per level after %.1f s warm-up, "
           "%d client thread(s); server pid %ld VmRSS %ld kB at start\n",
           o.url_a, o.url_b, (unsigned long long)o.bits, o.seconds, o.warmup, o.threads,
           o.server_pid, rss);
    printf("%-8s %-9s %10s %8s %8s %10s %10s %9s %9s %7s %7s %6s %9s %6s\n", "clients", "mode",
           "ops/s", "p50_ms", "p99_ms", "srvRSS_kB", "srvHWM_kB", "cli_cpu", "srv_cpu",
           "cli_us", "srv_us", "conns", "http_reqs", "errors");
    bool ok = true;
    long total = 0;
    for (int i = 0; i < o.nclients; i++) {
        for (int m = 0; m < 2; m++) {
            if ((m == 0 && o.no_status) || (m == 1 && o.no_delivery))
                continue;
            long n = run_level(&o, m == 0 ? MODE_STATUS : MODE_DELIVERY, o.clients[i]);
            if (n < 0)
                ok = false;
            else
                total += n;
        }
    }
    /* exit status for smoke runs: no errors, and something got through */
    return ok && total > 0 ? 0 : 1;
}
