/* metrics: a registry of counters, gauges and histograms with labels,
 * rendered in the Prometheus text exposition format (version 0.0.4).
 *
 * The daemon owns one registry and passes it explicitly to the code that
 * counts (SMTP and IMAP sessions, the key links, the admin listener that
 * renders it); there is no global registry. Metrics are declared once at
 * start with their label names; updating a series names its label values
 * in the same order, as arguments:
 *
 *     metric *m = metrics_counter(reg, "qumail_smtp_messages_total",
 *                                 "Messages by outcome and level.",
 *                                 2, "outcome", "level");
 *     metric_add(m, 1, "protected", "otp");
 *
 * A series is created on first use. Thread-safe: every call takes the
 * registry's mutex (updates come from the loop and from the thread pool).
 * Bounded: at most METRICS_MAX_SERIES series per metric; updates of further
 * label combinations are dropped and counted in
 * qumail_metrics_dropped_series_total. Names must match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (checked at
 * declaration: NULL is returned otherwise); label values are any text and
 * are escaped when rendered. */
#ifndef QUMAIL_METRICS_H
#define QUMAIL_METRICS_H

#include <stddef.h>

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_SERIES 1000
#define METRICS_MAX_BUCKETS 32

typedef struct metrics metrics;
typedef struct metric metric;

metrics *metrics_new(void);
void metrics_free(metrics **reg);

/* Declarations; the registry owns the result (valid until metrics_free).
 * Declaring the same name twice with the same kind and labels returns the
 * first declaration (so modules may declare what they update). NULL on a
 * bad name, a clash with another kind or labels, or out of memory. */
metric *metrics_counter(metrics *reg, const char *name, const char *help,
                        int n_labels, ...);
metric *metrics_gauge(metrics *reg, const char *name, const char *help,
                      int n_labels, ...);
/* buckets: strictly increasing upper bounds (+Inf is implicit). */
metric *metrics_histogram(metrics *reg, const char *name, const char *help,
                          const double *buckets, size_t n_buckets,
                          int n_labels, ...);

/* Updates, each followed by exactly the metric's number of label values
 * (const char *; NULL is rendered as ""). A NULL metric is ignored, so a
 * caller without a registry needs no checks. */
void metric_add(metric *m, double value, ...);     /* counter (value >= 0), gauge */
void metric_set(metric *m, double value, ...);     /* gauge */
void metric_observe(metric *m, double value, ...); /* histogram */

/* Reads one series (tests, /status): the value of a counter or gauge, the
 * count of a histogram; 0 when the series does not exist. */
double metric_value(metric *m, ...);

/* The whole registry in the text format, metrics in declaration order,
 * series in creation order. Returns a NUL-terminated buffer (caller frees)
 * and its length in *len_r; NULL when out of memory. */
char *metrics_render(metrics *reg, size_t *len_r);

/* Default latency buckets in seconds, 1 ms .. 30 s. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_count;

#endif
