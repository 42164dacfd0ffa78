/* ETSI 004 benchmark: chunk deliveries per second against a real qumail kme
 * (two KMEs with 004 listeners). One delivery = GET_KEY with a KME-chosen
 * index at KME A (the owner) and GET_KEY of that index at KME B, bytes
 * compared: what a message's sender and reader cost the KMEs. Clients run
 * concurrently on one libuv loop through the 004 client library
 * (kme/etsi004_client.h), each with its own connections.
 *
 * usage: bench_e4 --port-a N --port-b N --certs DIR [--seconds S]
 *                 [--warmup S] [--clients 1,16,64] [--chunk BYTES]
 * Prints one line per concurrency: deliveries/s, p50/p99 latency (ms),
 * chunk bytes/s, and the load average when the run ended. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "etsi004_client.h"

static uint16_t port_a, port_b;
static const char *certs;
static double seconds = 3, warmup = 0.5;
static uint32_t chunk = 32;

struct worker;

struct run {
    uv_loop_t *loop;
    etsi004_client *a, *b;
    uint8_t ksid[ETSI004_KSID_LEN];
    uint64_t t_start, t_measure, t_end; /* uv_hrtime */
    double *lat;
    size_t n_lat, cap_lat;
    uint64_t deliveries, mismatches, errors;
    int active;
};

struct worker {
    struct run *r;
    uint64_t t0;
    uint8_t key[ETSI004_MAX_CHUNK];
    size_t len;
    uint32_t index;
};

static void start_one(struct worker *w);

static void got_b(const struct etsi004_result *res, const struct etsi004_chunk *ch, void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    uint64_t now = uv_hrtime();
    if (res->error != KME_OK || res->status != 0 || ch == NULL) {
        r->errors++;
    } else if (ch->len != w->len || memcmp(ch->key, w->key, w->len) != 0) {
        r->mismatches++;
    } else if (now >= r->t_measure) {
        r->deliveries++;
        if (r->n_lat == r->cap_lat) {
            r->cap_lat = r->cap_lat ? 2 * r->cap_lat : 4096;
            r->lat = realloc(r->lat, r->cap_lat * sizeof(*r->lat));
        }
        r->lat[r->n_lat++] = (double)(now - w->t0) / 1e6;
    }
    start_one(w);
}

static void got_a(const struct etsi004_result *res, const struct etsi004_chunk *ch, void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;
    if (res->error != KME_OK || res->status != 0 || ch == NULL) {
        r->errors++;
        start_one(w);
        return;
    }
    memcpy(w->key, ch->key, ch->len);
    w->len = ch->len;
    w->index = ch->index;
    if (etsi004_client_get_key(r->b, r->ksid, w->index, 0, 5000, got_b, w) < 0) {
        r->errors++;
        r->active--;
    }
}

static void start_one(struct worker *w)
{
    struct run *r = w->r;
    if (uv_hrtime() >= r->t_end) {
        r->active--;
        return;
    }
    w->t0 = uv_hrtime();
    if (etsi004_client_get_key(r->a, r->ksid, ETSI004_INDEX_NEXT, 0, 5000, got_a, w) < 0) {
        r->errors++;
        r->active--;
    }
}

static etsi004_client *client(uv_loop_t *loop, uint16_t port, const char *sae, unsigned conns)
{
    static char buf[4][600];
    static int slot;
    char *cert = buf[slot++ % 4], *key = buf[slot++ % 4], *ca = buf[slot++ % 4];
    snprintf(cert, 600, "%s/%s.pem", certs, sae);
    snprintf(key, 600, "%s/%s.key", certs, sae);
    snprintf(ca, 600, "%s/ca.pem", certs);
    struct etsi004_client_config cfg = {.host = "127.0.0.1", .port = port,
                                        .server_name = "localhost", .cert_file = cert,
                                        .key_file = key, .ca_file = ca,
                                        .max_connections = conns};
    char *err = NULL;
    etsi004_client *c = etsi004_client_new(loop, &cfg, &err);
    if (c == NULL) {
        fprintf(stderr, "bench_e4: %s\n", err);
        exit(1);
    }
    return c;
}

struct open_wait {
    bool done;
    uint32_t status;
    uint8_t ksid[ETSI004_KSID_LEN];
};

static void open_cb(const struct etsi004_result *res, const struct etsi004_qos *q,
                    const uint8_t *ksid, void *arg)
{
    struct open_wait *o = arg;
    (void)q;
    o->done = true;
    o->status = res->error == KME_OK ? res->status : 99;
    if (ksid != NULL)
        memcpy(o->ksid, ksid, ETSI004_KSID_LEN);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void run_level(int clients)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    unsigned conns = clients < 64 ? (unsigned)clients : 64;
    struct run r = {.loop = &loop, .a = client(&loop, port_a, "sae-a", conns),
                    .b = client(&loop, port_b, "sae-b", conns)};
    struct etsi004_qos q = {.key_chunk_size = chunk, .timeout = 5000};
    struct open_wait oa = {0}, ob = {0};
    etsi004_client_open(r.a, "qkd://sae-a", "qkd://sae-b", &q, NULL, 0, open_cb, &oa);
    while (!oa.done && uv_run(&loop, UV_RUN_ONCE))
        ;
    etsi004_client_open(r.b, "qkd://sae-b", "qkd://sae-a", &q, oa.ksid, 0, open_cb, &ob);
    while (!ob.done && uv_run(&loop, UV_RUN_ONCE))
        ;
    if (oa.status != 1 || ob.status != 0) {
        fprintf(stderr, "bench_e4: the stream did not open (%u, %u)\n", oa.status, ob.status);
        exit(1);
    }
    memcpy(r.ksid, oa.ksid, ETSI004_KSID_LEN);
    struct worker *w = calloc((size_t)clients, sizeof(*w));
    r.t_start = uv_hrtime();
    r.t_measure = r.t_start + (uint64_t)(warmup * 1e9);
    r.t_end = r.t_measure + (uint64_t)(seconds * 1e9);
    r.active = clients;
    for (int i = 0; i < clients; i++) {
        w[i].r = &r;
        start_one(&w[i]);
    }
    while (r.active > 0 && uv_run(&loop, UV_RUN_ONCE))
        ;
    etsi004_client_free(&r.a);
    etsi004_client_free(&r.b);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    qsort(r.lat, r.n_lat, sizeof(*r.lat), cmp_double);
    double p50 = r.n_lat ? r.lat[r.n_lat / 2] : 0, p99 = r.n_lat ? r.lat[r.n_lat * 99 / 100] : 0;
    double load[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(f);
    }
    printf("clients %3d: %8.0f deliveries/s  p50 %6.2f ms  p99 %6.2f ms  %9.0f key bytes/s"
           "  errors %llu mismatches %llu  (load %.2f %.2f %.2f)\n",
           clients, (double)r.deliveries / seconds, p50, p99,
           (double)r.deliveries * chunk / seconds, (unsigned long long)r.errors,
           (unsigned long long)r.mismatches, load[0], load[1], load[2]);
    free(r.lat);
    free(w);
    if (r.mismatches != 0)
        exit(1);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port-a", required_argument, NULL, 'a'}, {"port-b", required_argument, NULL, 'b'},
        {"certs", required_argument, NULL, 'c'}, {"seconds", required_argument, NULL, 's'},
        {"warmup", required_argument, NULL, 'w'}, {"clients", required_argument, NULL, 'n'},
        {"chunk", required_argument, NULL, 'k'}, {NULL, 0, NULL, 0},
    };
    const char *levels = "1,16,64";
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'a': port_a = (uint16_t)atoi(optarg); break;
        case 'b': port_b = (uint16_t)atoi(optarg); break;
        case 'c': certs = optarg; break;
        case 's': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'n': levels = optarg; break;
        case 'k': chunk = (uint32_t)atoi(optarg); break;
        default: return 2;
        }
    }
    if (port_a == 0 || port_b == 0 || certs == NULL || chunk == 0 || chunk > ETSI004_MAX_CHUNK) {
        fprintf(stderr, "usage: bench_e4 --port-a N --port-b N --certs DIR [--seconds S] "
                        "[--warmup S] [--clients 1,16,64] [--chunk BYTES]\n");
        return 2;
    }
    char *copy = strdup(levels);
    for (char *t = strtok(copy, ","); t != NULL; t = strtok(NULL, ","))
        run_level(atoi(t));
    free(copy);
    return 0;
}
