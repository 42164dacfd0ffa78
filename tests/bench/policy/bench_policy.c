/* Policy lookups per second with a large table (default 100,000 rules:
 * addresses, domains and *.suffixes mixed), hits of every kind and misses.
 * Baseline in the same run: a linear scan over the same rules with the same
 * precedence (what a naive table would do), checked to give the same
 * answers on a sample.
 *
 * usage: bench_policy [--rules N] [--lookups M] [--seed S] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    if (f)
        fclose(f);
    return kib;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

struct pat {
    char text[96];
    int kind; /* 0 address, 1 domain, 2 suffix */
};

/* The naive baseline: scan every rule, keep the most specific. */
static const char *scan_lookup(const struct pat *pats, size_t n, const char *addr)
{
    const char *at = strrchr(addr, '@');
    const char *dom = at ? at + 1 : "";
    size_t dlen = strlen(dom);
    const char *best = "*";
    int best_rank = 0;
    size_t best_len = 0;
    for (size_t i = 0; i < n; i++) {
        const struct pat *p = &pats[i];
        if (p->kind == 0 && strcmp(p->text, addr) == 0)
            return p->text;
        if (p->kind == 1 && best_rank < 3 && strcmp(p->text, dom) == 0) {
            best = p->text;
            best_rank = 3;
        } else if (p->kind == 2 && best_rank < 3) {
            size_t sl = strlen(p->text) - 2; /* after "*." */
            if (dlen > sl && dom[dlen - sl - 1] == '.' &&
                strcmp(dom + dlen - sl, p->text + 2) == 0 && sl > best_len) {
                best = p->text;
                best_rank = 2;
                best_len = sl;
            }
        }
    }
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t n_rules = 100000, n_lookups = 2000000;
    rng_state = 0x9e3779b97f4a7c15ull;
    static const struct option opts[] = {
        {"rules", required_argument, NULL, 'r'},
        {"lookups", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "r:l:s:", opts, NULL)) != -1) {
        switch (c) {
        case 'r': n_rules = strtoul(optarg, NULL, 10); break;
        case 'l': n_lookups = strtoul(optarg, NULL, 10); break;
        case 's': rng_state = strtoull(optarg, NULL, 10) | 1; break;
        default: fprintf(stderr, "usage: %s [--rules N] [--lookups M] [--seed S]\n", argv[0]);
                 return 2;
        }
    }
    if (n_rules < 10 || n_lookups < 100) {
        fprintf(stderr, "need at least 10 rules and 100 lookups\n");
        return 2;
    }

    /* ---- the table: 40% addresses, 30% domains, 30% suffixes ---- */
    struct pat *pats = calloc(n_rules, sizeof(*pats));
    size_t cap = n_rules * 128 + 64;
    char *text = malloc(cap);
    if (!pats || !text) {
        free(pats);
        free(text);
        return 1;
    }
    size_t off = 0;
    for (size_t i = 0; i < n_rules; i++) {
        struct pat *p = &pats[i];
        p->kind = i % 10 < 4 ? 0 : i % 10 < 7 ? 1 : 2;
        if (p->kind == 0)
            snprintf(p->text, sizeof(p->text), "user%zu@mail%zu.example", i, i % 997);
        else if (p->kind == 1)
            snprintf(p->text, sizeof(p->text), "dom%zu.test", i);
        else
            snprintf(p->text, sizeof(p->text), "*.sub%zu.example.org", i);
        off += (size_t)snprintf(text + off, cap - off,
                                "%s action=require link=l slave_sae=SAE_%zu level=%s\n",
                                p->text, i % 50, i % 3 ? "aes" : "auto");
    }
    off += (size_t)snprintf(text + off, cap - off, "* action=none\n");

    static const char *const links[] = {"l", NULL};
    long rss0 = rss_kib();
    double t0 = now();
    policy *pol = NULL;
    char *err = NULL;
    if (policy_load_buffer("bench.policy", text, off, links, &pol, &err) != 0) {
        fprintf(stderr, "load failed: %s\n", err ? err : "?");
        return 1;
    }
    double t_load = now() - t0;
    long rss1 = rss_kib();

    /* ---- queries: 1/4 address hits, 1/4 domain hits, 1/4 suffix hits
     * (one to three labels below the suffix), 1/4 misses ---- */
    size_t n_q = n_lookups < 200000 ? n_lookups : 200000; /* distinct queries */
    char (*q)[128] = malloc(n_q * sizeof(*q));
    if (!q)
        return 1;
    for (size_t i = 0; i < n_q; i++) {
        size_t r = (size_t)(rnd() % n_rules);
        switch (i % 4) {
        case 0: /* address hit: pick an address rule */
            r -= r % 10;
            snprintf(q[i], sizeof(q[i]), "%s", pats[r].text);
            break;
        case 1: /* domain hit */
            r = r - r % 10 + 5;
            if (r >= n_rules)
                r = 5;
            snprintf(q[i], sizeof(q[i]), "bob@%s", pats[r].text);
            break;
        case 2: /* suffix hit, 1-3 labels deeper */
            r = r - r % 10 + 8;
            if (r >= n_rules)
                r = 8;
            snprintf(q[i], sizeof(q[i]), "carol@%s%s%s", i % 3 ? "x." : "", i % 5 ? "y." : "",
                     pats[r].text + 2);
            break;
        default: /* miss: the default rule */
            snprintf(q[i], sizeof(q[i]), "dave@nowhere%zu.example.net", (size_t)(rnd() % 1000000));
            break;
        }
    }

    /* ---- throughput ---- */
    size_t hits = 0;
    t0 = now();
    for (size_t i = 0; i < n_lookups; i++) {
        const struct policy_rule *r = policy_lookup(pol, q[i % n_q]);
        hits += r->kind != POLICY_KIND_DEFAULT;
    }
    double t_lookup = now() - t0;

    /* ---- latency: each lookup timed (includes ~20-30 ns of clock reads) ---- */
    size_t n_lat = n_q < 100000 ? n_q : 100000;
    double *lat = malloc(n_lat * sizeof(*lat));
    if (!lat)
        return 1;
    for (size_t i = 0; i < n_lat; i++) {
        double a = now();
        const struct policy_rule *r = policy_lookup(pol, q[i]);
        lat[i] = now() - a;
        hits += r->line == 0;
    }
    qsort(lat, n_lat, sizeof(*lat), cmp_double);

    /* ---- baseline: linear scan, and agreement on a sample ---- */
    size_t n_base = n_rules >= 50000 ? 2000 : 20000;
    if (n_base > n_q)
        n_base = n_q;
    size_t mismatch = 0;
    t0 = now();
    for (size_t i = 0; i < n_base; i++) {
        const char *want = scan_lookup(pats, n_rules, q[i]);
        const struct policy_rule *r = policy_lookup(pol, q[i]);
        mismatch += strcmp(want, r->pattern) != 0;
    }
    double t_base = now() - t0;

    printf("policy lookup benchmark: %zu rules (40%% addresses, 30%% domains, 30%% *.suffixes) + '*'\n",
           n_rules);
    printf("  load:        %.3f s (%.0f rules/s), RSS +%ld KiB\n", t_load,
           (double)n_rules / t_load, rss1 - rss0);
    printf("  hash lookup: %zu lookups (1/4 address, 1/4 domain, 1/4 suffix, 1/4 miss): "
           "%.0f lookups/s\n", n_lookups, (double)n_lookups / t_lookup);
    printf("  latency:     p50 %.0f ns, p99 %.0f ns, max %.0f ns (per call, clock overhead included)\n",
           lat[n_lat / 2] * 1e9, lat[n_lat * 99 / 100] * 1e9, lat[n_lat - 1] * 1e9);
    printf("  baseline:    linear scan of the same rules: %.0f lookups/s (%zu lookups)\n",
           (double)n_base / t_base, n_base);
    printf("  speed-up:    %.0fx; answers agree on %zu/%zu sampled lookups\n",
           ((double)n_lookups / t_lookup) / ((double)n_base / t_base), n_base - mismatch,
           n_base);
    free(lat);
    free(q);
    free(pats);
    free(text);
    policy_unref(&pol);
    (void)hits;
    return mismatch ? 1 : 0;
}
