/* smtp_load: latency samples and nearest-rank percentiles. */
#include "smtp_load.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sl_stats_add(struct sl_stats *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        if (s->cap) {
            if (cap > SIZE_MAX / 2 / sizeof(*s->lat_ns))
                return -1;
            cap *= 2;
        }
        uint64_t *p = realloc(s->lat_ns, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        s->lat_ns = p;
        s->cap = cap;
    }
    s->lat_ns[s->n++] = ns;
    s->sorted = false;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

uint64_t sl_stats_percentile(struct sl_stats *s, double pct)
{
    if (s->n == 0)
        return 0;
    if (!s->sorted) {
        qsort(s->lat_ns, s->n, sizeof(*s->lat_ns), cmp_u64);
        s->sorted = true;
    }
    double rank = ceil(pct / 100.0 * (double)s->n);
    size_t idx = rank < 1 ? 0 : (size_t)rank - 1;
    if (idx >= s->n)
        idx = s->n - 1;
    return s->lat_ns[idx];
}

double sl_stats_mean(const struct sl_stats *s)
{
    if (s->n == 0)
        return 0;
    long double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->lat_ns[i];
    return (double)(sum / s->n);
}

void sl_stats_clear(struct sl_stats *s)
{
    free(s->lat_ns);
    memset(s, 0, sizeof(*s));
}
