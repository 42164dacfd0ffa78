/* protect_in benchmark: time to a view for 10 kB and 1 MB encrypted
 * messages (OTP and AES), per read path:
 *   first    keys from the KME (simulator over loopback TLS), stored in the
 *            vault (fsync), decrypted, part tree and structures built
 *   cache    protect_in_lookup() of a view in memory (synchronous)
 *   cached   protect_in_open() answered from memory (through the loop)
 *   summary  after a restart: protect_in_lookup(SUMMARY) from the vault's
 *            durable metadata (no download, no decryption)
 *   vault    after a restart: keys from the vault, decrypted, built
 * Every figure comes with the load average (the machine is shared).
 *
 * usage: bench_protect_incoming [--quick] [--n N]
 * The fetch callback hands over the encrypted bytes from memory: the
 * figures are protect_in's own cost, without an IMAP server. */
#include <time.h>

#include "../../unit/protect-incoming/pi_test.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void load(char *out, size_t n)
{
    double l[3] = {-1, -1, -1};
    if (getloadavg(l, 3) < 0)
        l[0] = l[1] = l[2] = -1;
    snprintf(out, n, "load %.2f %.2f %.2f", l[0], l[1], l[2]);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, const char *phase, double *t, int n, size_t size)
{
    qsort(t, (size_t)n, sizeof(double), cmp);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += t[i];
    char l[64];
    load(l, sizeof(l));
    double med = t[n / 2];
    printf("%-9s %-8s n=%-4d median %9.3f ms  mean %9.3f ms  max %9.3f ms  %8.1f MB/s  (%s)\n",
           name, phase, n, med, sum / n, t[n - 1],
           med > 0 ? (double)size / 1e6 / (med / 1e3) : 0.0, l);
    fflush(stdout);
}

/* A realistic message of about `size` bytes: text and a base64 attachment. */
static char *make_message(size_t size, int seq)
{
    char *m = malloc(size + 4096);
    size_t n = (size_t)sprintf(m,
        "From: Sam Sender <sam@example.org>\r\nTo: Alice <alice@example.org>\r\n"
        "Subject: Quarterly figures %d\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
        "Message-ID: <bench-%d@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThe figures are attached.\r\n"
        "--b\r\nContent-Type: application/pdf; name=\"q.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n", seq, seq);
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned x = (unsigned)seq * 2654435761u + 1;
    while (n + 80 < size) {
        for (int i = 0; i < 76; i++) {
            x = x * 1103515245u + 12345u;
            m[n++] = b64[(x >> 16) & 63];
        }
        m[n++] = '\r';
        m[n++] = '\n';
    }
    n += (size_t)sprintf(m + n, "--b--\r\n");
    m[n] = '\0';
    return m;
}

struct item {
    char *plain;
    uint8_t *c;
    size_t clen;
    char *hint;
    struct pi_msg m;
};

static double open_one(struct pi_env *e, protect_in_reader *r, struct item *it)
{
    double t0 = now_ms();
    protect_in_view *v = pi_open_wait(e, r, it->hint, &it->m);
    double t = now_ms() - t0;
    if (protect_in_view_reason(v) != PROTECT_IN_DECRYPTED) {
        fprintf(stderr, "not decrypted: %s\n",
                protect_in_reason_name(protect_in_view_reason(v)));
        exit(1);
    }
    protect_in_view_unref(&v);
    return t;
}

static void run_case(struct pi_env *e, const char *name, size_t size, enum mime_alg alg,
                     int n)
{
    struct item *items = calloc((size_t)n, sizeof(*items));
    double *t = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        items[i].plain = make_message(size, i);
        items[i].c = pi_encrypt(e, items[i].plain, alg, PI_TO_ALICE, &items[i].clen);
        items[i].hint = pi_hint(items[i].c, items[i].clen);
        items[i].m = (struct pi_msg){items[i].c, items[i].clen, 0, false, 65536};
    }
    struct protect_in_config cfg;
    protect_in_config_defaults(&cfg);
    pi_reader_open(e, &cfg, KME_VAULT_SYNC_FULL);
    protect_in_reader *alice = protect_in_reader_new(e->pi, "alice@example.org");

    for (int i = 0; i < n; i++)
        t[i] = open_one(e, alice, &items[i]);
    report(name, "first", t, n, size);

    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        protect_in_view *v = NULL;
        if (protect_in_lookup(e->pi, alice, items[i].hint, PROTECT_IN_FULL, &v) != 1)
            exit(2);
        t[i] = now_ms() - t0;
        protect_in_view_unref(&v);
    }
    report(name, "cache", t, n, size);

    for (int i = 0; i < n; i++)
        t[i] = open_one(e, alice, &items[i]);
    report(name, "cached", t, n, size);

    /* wait for the metadata to be stored, then restart */
    struct protect_in_stats st;
    while (protect_in_get_stats(e->pi, &st), st.meta_stored < (uint64_t)n)
        uv_run(&e->loop, UV_RUN_ONCE);
    protect_in_reader_free(&alice);
    pi_reader_close(e);
    pi_reader_open(e, &cfg, KME_VAULT_SYNC_FULL);
    alice = protect_in_reader_new(e->pi, "alice@example.org");

    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        protect_in_view *v = NULL;
        if (protect_in_lookup(e->pi, alice, items[i].hint, PROTECT_IN_SUMMARY, &v) != 1)
            exit(3);
        t[i] = now_ms() - t0;
        protect_in_view_unref(&v);
    }
    report(name, "summary", t, n, size);

    for (int i = 0; i < n; i++)
        t[i] = open_one(e, alice, &items[i]);
    report(name, "vault", t, n, size);
    protect_in_get_stats(e->pi, &st);
    if (st.kme_requests != 0)
        exit(4);

    protect_in_reader_free(&alice);
    pi_reader_close(e);
    for (int i = 0; i < n; i++) {
        free(items[i].plain);
        free(items[i].c);
        free(items[i].hint);
    }
    free(items);
    free(t);
}

int main(int argc, char **argv)
{
    int n = 50;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = (int)strtol(argv[++i], NULL, 10); /* < 1: 1, below */
    }
    if (quick)
        n = 3;
    if (n < 1)
        n = 1;
    pi_test_options(); /* PI_TEST_DEBUG=1: state changes with times */
    static struct pi_env env;
    pi_env_init(&env, "bench");
    env.rate_bps = 100000000;
    env.max_key_count = 400000;
    env.dec_wait_ms = 1000; /* the KME's default: park until the keys arrive */
    pi_kme_start(&env);
    printf("protect_in: time to a view, per read path (fetch from memory)\n");
    run_case(&env, "10kB-otp", (size_t)10 * 1024, MIME_ALG_OTP_POLY1305, n);
    run_case(&env, "10kB-aes", (size_t)10 * 1024, MIME_ALG_AES_256_GCM, n);
    run_case(&env, "1MB-aes", (size_t)1024 * 1024, MIME_ALG_AES_256_GCM, quick ? 2 : n / 5 + 1);
    run_case(&env, "1MB-otp", (size_t)1024 * 1024, MIME_ALG_OTP_POLY1305, quick ? 1 : 5);
    pi_kme_kill(&env);
    pi_rmrf(env.dir);
    return 0;
}
