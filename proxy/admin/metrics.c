/* metrics: registry, series lookup, Prometheus text rendering. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM };
static const char *const kind_names[] = {"counter", "gauge", "histogram"};

struct series {
    char *labels[METRICS_MAX_LABELS]; /* owned copies */
    double value;                     /* counter, gauge; histogram: sum */
    uint64_t count;                   /* histogram */
    uint64_t *bucket_counts;          /* histogram: per bucket, not cumulative */
};

struct metric {
    metrics *reg;
    enum kind kind;
    char *name, *help;
    int n_labels;
    char *label_names[METRICS_MAX_LABELS];
    double *buckets;
    size_t n_buckets;
    struct series *series; /* array, in creation order */
    size_t n_series, cap_series;
    struct metric *next;
};

struct metrics {
    pthread_mutex_t lock;
    struct metric *first, *last;
    uint64_t dropped; /* updates refused by the series bound */
};

const double metrics_latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1, 2.5, 5, 10, 30};
const size_t metrics_latency_buckets_count =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

metrics *metrics_new(void)
{
    metrics *reg = calloc(1, sizeof(*reg));
    if (reg != NULL)
        pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void metric_destroy(struct metric *m)
{
    for (size_t i = 0; i < m->n_series; i++) {
        for (int l = 0; l < m->n_labels; l++)
            free(m->series[i].labels[l]);
        free(m->series[i].bucket_counts);
    }
    free(m->series);
    for (int l = 0; l < m->n_labels; l++)
        free(m->label_names[l]);
    free(m->buckets);
    free(m->name);
    free(m->help);
    free(m);
}

void metrics_free(metrics **reg)
{
    if (reg == NULL || *reg == NULL)
        return;
    struct metric *m = (*reg)->first;
    while (m != NULL) {
        struct metric *next = m->next;
        metric_destroy(m);
        m = next;
    }
    pthread_mutex_destroy(&(*reg)->lock);
    free(*reg);
    *reg = NULL;
}

static bool valid_name(const char *s, bool colon)
{
    if (s == NULL || *s == '\0')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static metric *declare(metrics *reg, enum kind kind, const char *name, const char *help,
                       const double *buckets, size_t n_buckets, int n_labels, va_list ap)
{
    if (reg == NULL || !valid_name(name, true) || n_labels < 0 ||
        n_labels > METRICS_MAX_LABELS || n_buckets > METRICS_MAX_BUCKETS)
        return NULL;
    const char *labels[METRICS_MAX_LABELS];
    for (int i = 0; i < n_labels; i++) {
        labels[i] = va_arg(ap, const char *);
        /* "le" is the histogram's own label; "__" names are reserved */
        if (!valid_name(labels[i], false) || strncmp(labels[i], "__", 2) == 0 ||
            (kind == K_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return NULL;
    }
    for (size_t i = 1; i < n_buckets; i++)
        if (!(buckets[i] > buckets[i - 1]))
            return NULL;
    pthread_mutex_lock(&reg->lock);
    metric *m;
    for (m = reg->first; m != NULL; m = m->next) {
        if (strcmp(m->name, name) != 0)
            continue;
        bool same = m->kind == kind && m->n_labels == n_labels;
        for (int i = 0; same && i < n_labels; i++)
            same = strcmp(m->label_names[i], labels[i]) == 0;
        pthread_mutex_unlock(&reg->lock);
        return same ? m : NULL;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail;
    m->reg = reg;
    m->kind = kind;
    m->n_labels = n_labels;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    if (m->name == NULL || m->help == NULL)
        goto fail;
    for (int i = 0; i < n_labels; i++)
        if ((m->label_names[i] = strdup(labels[i])) == NULL)
            goto fail;
    if (kind == K_HISTOGRAM) {
        m->n_buckets = n_buckets;
        m->buckets = malloc((n_buckets ? n_buckets : 1) * sizeof(double));
        if (m->buckets == NULL)
            goto fail;
        if (n_buckets)
            memcpy(m->buckets, buckets, n_buckets * sizeof(double));
    }
    if (reg->last != NULL)
        reg->last->next = m;
    else
        reg->first = m;
    reg->last = m;
    pthread_mutex_unlock(&reg->lock);
    return m;
fail:
    if (m != NULL)
        metric_destroy(m);
    pthread_mutex_unlock(&reg->lock);
    return NULL;
}

metric *metrics_counter(metrics *reg, const char *name, const char *help, int n_labels, ...)
{
    va_list ap;
    va_start(ap, n_labels);
    metric *m = declare(reg, K_COUNTER, name, help, NULL, 0, n_labels, ap);
    va_end(ap);
    return m;
}

metric *metrics_gauge(metrics *reg, const char *name, const char *help, int n_labels, ...)
{
    va_list ap;
    va_start(ap, n_labels);
    metric *m = declare(reg, K_GAUGE, name, help, NULL, 0, n_labels, ap);
    va_end(ap);
    return m;
}

metric *metrics_histogram(metrics *reg, const char *name, const char *help,
                          const double *buckets, size_t n_buckets, int n_labels, ...)
{
    va_list ap;
    va_start(ap, n_labels);
    metric *m = declare(reg, K_HISTOGRAM, name, help, buckets, n_buckets, n_labels, ap);
    va_end(ap);
    return m;
}

/* The series with these label values; created when absent and create is
 * set. Called with the lock held. NULL: absent, bound reached, or ENOMEM. */
static struct series *find(metric *m, const char **values, bool create)
{
    for (size_t i = 0; i < m->n_series; i++) {
        struct series *s = &m->series[i];
        int l = 0;
        while (l < m->n_labels && strcmp(s->labels[l], values[l]) == 0)
            l++;
        if (l == m->n_labels)
            return s;
    }
    if (!create)
        return NULL;
    if (m->n_series >= METRICS_MAX_SERIES) {
        m->reg->dropped++;
        return NULL;
    }
    if (m->n_series == m->cap_series) {
        size_t cap = m->cap_series ? m->cap_series * 2 : 4;
        struct series *grown = realloc(m->series, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        m->series = grown;
        m->cap_series = cap;
    }
    struct series *s = &m->series[m->n_series];
    memset(s, 0, sizeof(*s));
    for (int l = 0; l < m->n_labels; l++) {
        if ((s->labels[l] = strdup(values[l])) == NULL)
            goto fail;
    }
    if (m->kind == K_HISTOGRAM &&
        (s->bucket_counts = calloc(m->n_buckets + 1, sizeof(uint64_t))) == NULL)
        goto fail;
    m->n_series++;
    return s;
fail:
    for (int l = 0; l < m->n_labels; l++)
        free(s->labels[l]);
    return NULL;
}

static void collect(metric *m, va_list ap, const char **values)
{
    for (int i = 0; i < m->n_labels; i++) {
        values[i] = va_arg(ap, const char *);
        if (values[i] == NULL)
            values[i] = "";
    }
}

enum op { OP_ADD, OP_SET, OP_OBSERVE };

static void update(metric *m, enum op op, double v, va_list ap)
{
    const char *values[METRICS_MAX_LABELS];
    collect(m, ap, values);
    if (isnan(v) || (op == OP_ADD && m->kind == K_COUNTER && v < 0) ||
        (op == OP_SET && m->kind != K_GAUGE) ||
        (op == OP_OBSERVE && m->kind != K_HISTOGRAM) ||
        (op == OP_ADD && m->kind == K_HISTOGRAM))
        return; /* a programming error: counters only go up */
    pthread_mutex_lock(&m->reg->lock);
    struct series *s = find(m, values, true);
    if (s != NULL) {
        if (op == OP_ADD) {
            s->value += v;
        } else if (op == OP_SET) {
            s->value = v;
        } else {
            size_t b = 0;
            while (b < m->n_buckets && v > m->buckets[b])
                b++;
            s->bucket_counts[b]++;
            s->count++;
            s->value += v;
        }
    }
    pthread_mutex_unlock(&m->reg->lock);
}

void metric_add(metric *m, double value, ...)
{
    if (m == NULL)
        return;
    va_list ap;
    va_start(ap, value);
    update(m, OP_ADD, value, ap);
    va_end(ap);
}

void metric_set(metric *m, double value, ...)
{
    if (m == NULL)
        return;
    va_list ap;
    va_start(ap, value);
    update(m, OP_SET, value, ap);
    va_end(ap);
}

void metric_observe(metric *m, double value, ...)
{
    if (m == NULL)
        return;
    va_list ap;
    va_start(ap, value);
    update(m, OP_OBSERVE, value, ap);
    va_end(ap);
}

double metric_value(metric *m, ...)
{
    if (m == NULL)
        return 0;
    const char *values[METRICS_MAX_LABELS];
    va_list ap;
    va_start(ap, m);
    collect(m, ap, values);
    va_end(ap);
    pthread_mutex_lock(&m->reg->lock);
    struct series *s = find(m, values, false);
    double v = s == NULL ? 0 : m->kind == K_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&m->reg->lock);
    return v;
}

/* ---- rendering ------------------------------------------------------------ */

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (o->len + n + 1 > cap)
            cap *= 2;
        char *grown = realloc(o->buf, cap);
        if (grown == NULL) {
            o->failed = true;
            return;
        }
        o->buf = grown;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* HELP text escapes \ and newline; label values also ". */
static void put_escaped(struct out *o, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(o, "\\\\");
        else if (*s == '\n')
            puts_(o, "\\n");
        else if (quote && *s == '"')
            puts_(o, "\\\"");
        else
            put(o, s, 1);
    }
}

/* The shortest text that reads back as the same double ("0.1", not
 * "0.10000000000000001"); integers without exponent. */
static void format_double(char *buf, size_t cap, double v)
{
    if (isinf(v)) {
        snprintf(buf, cap, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void put_number(struct out *o, double v)
{
    char buf[64];
    format_double(buf, sizeof(buf), v);
    puts_(o, buf);
}

/* {a="x",b="y"[,le="0.5"]} or nothing. */
static void put_labels(struct out *o, const metric *m, const struct series *s,
                       const char *le)
{
    if (m->n_labels == 0 && le == NULL)
        return;
    puts_(o, "{");
    for (int l = 0; l < m->n_labels; l++) {
        if (l)
            puts_(o, ",");
        puts_(o, m->label_names[l]);
        puts_(o, "=\"");
        put_escaped(o, s->labels[l], true);
        puts_(o, "\"");
    }
    if (le != NULL) {
        if (m->n_labels)
            puts_(o, ",");
        puts_(o, "le=\"");
        puts_(o, le);
        puts_(o, "\"");
    }
    puts_(o, "}");
}

static void render_metric(struct out *o, const metric *m)
{
    puts_(o, "# HELP ");
    puts_(o, m->name);
    puts_(o, " ");
    put_escaped(o, m->help, false);
    puts_(o, "\n# TYPE ");
    puts_(o, m->name);
    puts_(o, " ");
    puts_(o, kind_names[m->kind]);
    puts_(o, "\n");
    for (size_t i = 0; i < m->n_series; i++) {
        const struct series *s = &m->series[i];
        if (m->kind != K_HISTOGRAM) {
            puts_(o, m->name);
            put_labels(o, m, s, NULL);
            puts_(o, " ");
            put_number(o, s->value);
            puts_(o, "\n");
            continue;
        }
        uint64_t cum = 0;
        for (size_t b = 0; b <= m->n_buckets; b++) {
            char le[64];
            cum += s->bucket_counts[b];
            if (b < m->n_buckets)
                format_double(le, sizeof(le), m->buckets[b]);
            else
                snprintf(le, sizeof(le), "+Inf");
            puts_(o, m->name);
            puts_(o, "_bucket");
            put_labels(o, m, s, le);
            puts_(o, " ");
            put_number(o, (double)cum);
            puts_(o, "\n");
        }
        puts_(o, m->name);
        puts_(o, "_sum");
        put_labels(o, m, s, NULL);
        puts_(o, " ");
        put_number(o, s->value);
        puts_(o, "\n");
        puts_(o, m->name);
        puts_(o, "_count");
        put_labels(o, m, s, NULL);
        puts_(o, " ");
        put_number(o, (double)s->count);
        puts_(o, "\n");
    }
}

char *metrics_render(metrics *reg, size_t *len_r)
{
    struct out o = {0};
    pthread_mutex_lock(&reg->lock);
    for (const metric *m = reg->first; m != NULL; m = m->next)
        render_metric(&o, m);
    puts_(&o, "# HELP qumail_metrics_dropped_series_total Updates dropped because a metric "
              "reached its series limit.\n"
              "# TYPE qumail_metrics_dropped_series_total counter\n"
              "qumail_metrics_dropped_series_total ");
    put_number(&o, (double)reg->dropped);
    puts_(&o, "\n");
    pthread_mutex_unlock(&reg->lock);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    if (len_r != NULL)
        *len_r = o.len;
    return o.buf;
}
