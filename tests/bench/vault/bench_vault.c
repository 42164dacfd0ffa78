/* Key vault benchmark: put and get of 256-bit keys one at a time and in
 * batches of 1,000 (and one batch of 100,000), metadata put and get, the
 * cost of fsync (synchronous FULL versus NORMAL), and reads from several
 * threads with a reader pool versus one shared connection, also while a
 * writer commits. Every figure is printed with the load average.
 *
 * usage: bench_vault [--dir DIR] [--quick] [--prefill N]
 *   --dir      where the vaults go (default: a new folder in $TMPDIR//tmp;
 *              use a folder on the disk you deploy to: fsync cost is the
 *              disk's)
 *   --quick    small counts (smoke test)
 *   --prefill  keys stored before the put/get figures (default 0; e.g.
 *              1000000 to see a large vault's page cache misses) */
#include <ftw.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kme_vault.h"

static bool quick;
static unsigned long prefill;
static char base[512];
static unsigned vault_no;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void load(char *out, size_t n)
{
    double l[3] = {0, 0, 0};
    if (getloadavg(l, 3) < 0)
        l[0] = l[1] = l[2] = -1;
    snprintf(out, n, "load %.2f %.2f %.2f", l[0], l[1], l[2]);
}

static void report(const char *what, unsigned long ops, unsigned long units,
                   const char *unit, double secs)
{
    char l[64];
    load(l, sizeof(l));
    printf("%-44s %9.1f us/call %11.0f %s/s   (%lu calls, %s)\n", what,
           secs * 1e6 / (double)ops, (double)units / secs, unit, ops, l);
    fflush(stdout);
}

static void die(const char *what, int ret, char *err)
{
    fprintf(stderr, "%s: %s: %s\n", what, kme_vault_errname(ret),
            err != NULL ? err : "");
    exit(1);
}

static kme_vault *open_vault(enum kme_vault_sync sync, unsigned readers)
{
    char path[600], key[600];
    snprintf(path, sizeof(path), "%s/v%u/vault.sqlite", base, vault_no);
    snprintf(key, sizeof(key), "%s/v%u/vault.key", base, vault_no);
    vault_no++;
    struct kme_vault_config cfg = {
        .path = path, .key_file = key, .create_key = true,
        .readers = readers, .sync = sync,
    };
    kme_vault *v = NULL;
    char *err = NULL;
    int ret = kme_vault_open(&cfg, &v, &err);
    if (ret != 0)
        die("open", ret, err);
    return v;
}

static void key_id(char *out, size_t n, const char *prefix, unsigned long i)
{
    snprintf(out, n, "%s-%08lx-0000-4000-8000-000000000000", prefix, i);
}

static void key_bytes(const char *id, uint8_t out[32])
{
    SHA256((const unsigned char *)id, strlen(id), out);
}

/* Stores keys prefix-[from, from+n) in calls of batch keys. */
static double put_keys(kme_vault *v, const char *prefix, unsigned long from,
                       unsigned long n, unsigned long batch)
{
    struct kme_vault_key_in *in = calloc(batch, sizeof(*in));
    char (*ids)[64] = calloc(batch, sizeof(*ids));
    uint8_t (*bytes)[32] = calloc(batch, sizeof(*bytes));
    double t0 = now_s();
    for (unsigned long done = 0; done < n; done += batch) {
        for (unsigned long j = 0; j < batch; j++) {
            key_id(ids[j], sizeof(ids[j]), prefix, from + done + j);
            key_bytes(ids[j], bytes[j]);
            in[j] = (struct kme_vault_key_in){ids[j], bytes[j], 32};
        }
        char *err = NULL;
        int ret = kme_vault_keys_put(v, KME_VAULT_RECEIVED, "KME_B", "sae-a",
                                     in, batch, &err);
        if (ret != 0)
            die("put", ret, err);
    }
    double secs = now_s() - t0;
    free(in);
    free(ids);
    free(bytes);
    return secs;
}

/* Gets calls batches of batch keys, chosen pseudo-randomly among
 * prefix-[0, stored). */
static double get_keys(kme_vault *v, const char *prefix, unsigned long stored,
                       unsigned long calls, unsigned long batch,
                       unsigned *seed)
{
    char (*ids)[64] = calloc(batch, sizeof(*ids));
    const char **p = calloc(batch, sizeof(*p));
    double secs = 0;
    for (unsigned long c = 0; c < calls; c++) {
        for (unsigned long j = 0; j < batch; j++) {
            key_id(ids[j], sizeof(ids[j]), prefix,
                   batch == stored ? j : (unsigned long)rand_r(seed) % stored);
            p[j] = ids[j];
        }
        struct kme_vault_keys *k = NULL;
        char *err = NULL;
        double t0 = now_s();
        int ret = kme_vault_keys_get(v, "KME_B", "sae-a", p, batch, &k, &err);
        secs += now_s() - t0;
        if (ret != 0)
            die("get", ret, err);
        if (k->found != batch) {
            fprintf(stderr, "get: %zu of %lu found\n", k->found, batch);
            exit(1);
        }
        kme_vault_keys_free(&k);
    }
    free(ids);
    free(p);
    return secs;
}

static void bench_keys(enum kme_vault_sync sync, const char *name)
{
    kme_vault *v = open_vault(sync, 4);
    unsigned long singles = quick ? 50 : 1000;
    unsigned long batches = quick ? 3 : 50;
    char what[96];
    if (prefill > 0) {
        double s = put_keys(v, "pre", 0, prefill, 1000);
        snprintf(what, sizeof(what), "[%s] prefill %lu keys", name, prefill);
        report(what, prefill / 1000, prefill, "keys", s);
    }
    snprintf(what, sizeof(what), "[%s] put 1 key", name);
    report(what, singles, singles, "keys", put_keys(v, "one", 0, singles, 1));
    snprintf(what, sizeof(what), "[%s] put batch of 1000 keys", name);
    report(what, batches, batches * 1000, "keys",
           put_keys(v, "bat", 0, batches * 1000, 1000));
    if (sync == KME_VAULT_SYNC_NORMAL) {
        kme_vault_close(&v);
        return;
    }
    unsigned seed = 1;
    unsigned long stored = batches * 1000;
    unsigned long gets = quick ? 500 : 50000;
    snprintf(what, sizeof(what), "[%s] get 1 key", name);
    report(what, gets, gets, "keys", get_keys(v, "bat", stored, gets, 1, &seed));
    unsigned long bgets = quick ? 5 : 200;
    snprintf(what, sizeof(what), "[%s] get batch of 1000 keys", name);
    report(what, bgets, bgets * 1000, "keys",
           get_keys(v, "bat", stored, bgets, 1000, &seed));

    unsigned long big = quick ? 5000 : 100000;
    double s = put_keys(v, "huge", 0, big, big);
    snprintf(what, sizeof(what), "[%s] put batch of %lu keys", name, big);
    report(what, 1, big, "keys", s);
    snprintf(what, sizeof(what), "[%s] get batch of %lu keys", name, big);
    report(what, 1, big, "keys", get_keys(v, "huge", big, 1, big, &seed));
    kme_vault_close(&v);
}

static void bench_local(void)
{
    kme_vault *v = open_vault(KME_VAULT_SYNC_FULL, 4);
    unsigned long n = quick ? 50 : 1000;
    double t0 = now_s();
    for (unsigned long i = 0; i < n; i++) {
        struct kme_vault_keys *k = NULL;
        char *err = NULL;
        int ret = kme_vault_local_new(v, "alice@example.org", 1, 32, &k, &err);
        if (ret != 0)
            die("local_new", ret, err);
        kme_vault_keys_free(&k);
    }
    report("[full] local_new 1 key of 256 bits", n, n, "keys", now_s() - t0);
    kme_vault_close(&v);
}

static void bench_meta(void)
{
    kme_vault *v = open_vault(KME_VAULT_SYNC_FULL, 4);
    unsigned long n = quick ? 50 : 1000;
    uint8_t blob[2048];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 31);
    char id[64];
    double t0 = now_s();
    for (unsigned long i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "msg-%lu", i);
        char *err = NULL;
        int ret = kme_vault_meta_put(v, id, blob, sizeof(blob), &err);
        if (ret != 0)
            die("meta_put", ret, err);
    }
    report("[full] metadata put 2 kB", n, n * sizeof(blob) / 1024, "kB",
           now_s() - t0);
    unsigned long gets = quick ? 500 : 50000;
    unsigned seed = 7;
    t0 = now_s();
    for (unsigned long i = 0; i < gets; i++) {
        snprintf(id, sizeof(id), "msg-%lu", (unsigned long)rand_r(&seed) % n);
        uint8_t *b = NULL;
        size_t len = 0;
        char *err = NULL;
        int ret = kme_vault_meta_get(v, id, &b, &len, &err);
        if (ret != 0)
            die("meta_get", ret, err);
        kme_vault_bytes_free(&b, len);
    }
    report("[full] metadata get 2 kB", gets, gets, "gets", now_s() - t0);
    kme_vault_close(&v);
}

/* ---- threads ---------------------------------------------------------------- */

struct reader_arg {
    kme_vault *v;
    unsigned long calls;
    unsigned long stored;
    unsigned seed;
    double *lat; /* seconds, one per call */
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    for (unsigned long i = 0; i < a->calls; i++)
        a->lat[i] = get_keys(a->v, "bat", a->stored, 1, 1, &a->seed);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile int writer_stop;
static unsigned long writer_commits;

/* Commits batches of 10 keys until stopped. */
static void *writer(void *p)
{
    kme_vault *v = p;
    unsigned long i = 0;
    for (; !writer_stop; i++)
        put_keys(v, "w", i * 10, 10, 10);
    writer_commits = i;
    return NULL;
}

static void bench_threads(unsigned readers, bool with_writer)
{
    kme_vault *v = open_vault(KME_VAULT_SYNC_FULL, readers);
    unsigned long stored = quick ? 2000 : 20000;
    put_keys(v, "bat", 0, stored, 1000);
    enum { T = 4 };
    struct reader_arg a[T];
    pthread_t th[T], w;
    writer_stop = 0;
    double w0 = now_s();
    if (with_writer)
        pthread_create(&w, NULL, writer, v);
    unsigned long per = quick ? 500 : 20000, calls = per * T;
    double *lat = calloc(calls, sizeof(*lat));
    double t0 = now_s();
    for (int i = 0; i < T; i++) {
        a[i] = (struct reader_arg){v, per, stored, (unsigned)i + 1,
                                   lat + per * (unsigned long)i};
        pthread_create(&th[i], NULL, reader, &a[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    qsort(lat, calls, sizeof(*lat), cmp_double);
    writer_stop = 1;
    if (with_writer)
        pthread_join(w, NULL);
    double wsecs = now_s() - w0;
    char what[96];
    snprintf(what, sizeof(what), "[full] %d threads get 1 key, %s%s", T,
             readers != KME_VAULT_READERS_NONE ? "4 readers" : "1 connection",
             with_writer ? " + writer" : "");
    report(what, calls, calls, "keys", secs);
    printf("%-44s get latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n", "",
           lat[calls / 2] * 1e6, lat[calls * 99 / 100] * 1e6,
           lat[calls * 999 / 1000] * 1e6);
    if (with_writer)
        printf("%-44s meanwhile the writer committed %.0f times/s\n", "",
               (double)writer_commits / wsecs);
    free(lat);
    kme_vault_close(&v);
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--prefill") == 0 && i + 1 < argc)
            prefill = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--dir DIR] [--quick] [--prefill N]\n",
                    argv[0]);
            return 2;
        }
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof(base), "%s/bench-vault-XXXXXX",
             dir != NULL ? dir : (tmp != NULL ? tmp : "/tmp"));
    if (mkdtemp(base) == NULL) {
        perror(base);
        return 1;
    }
    char l[64];
    load(l, sizeof(l));
    printf("# vault benchmark in %s, %s, 256-bit keys\n", base, l);
    bench_keys(KME_VAULT_SYNC_FULL, "full");
    bench_keys(KME_VAULT_SYNC_NORMAL, "normal");
    bench_local();
    bench_meta();
    bench_threads(4, false);
    bench_threads(KME_VAULT_READERS_NONE, false);
    bench_threads(4, true);
    bench_threads(KME_VAULT_READERS_NONE, true);
    load(l, sizeof(l));
    printf("# done, %s\n", l);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
