/* metrics: declaration rules, series, the text format byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_render_exact(void **state)
{
    metrics *reg = metrics_new();
    metric *c = metrics_counter(reg, "q_msgs_total", "Messages.", 2, "outcome", "level");
    metric *g = metrics_gauge(reg, "q_sessions", "Sessions\\open\nnow.", 0);
    const double b[] = {0.25, 1};
    metric *h = metrics_histogram(reg, "q_lat_seconds", "Latency.", b, 2, 1, "link");
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);
    metric_add(c, 2, "protected", "otp");
    metric_add(c, 1, "refused", "a\"b\\c\nd");
    metric_add(c, 1, "protected", "otp");
    metric_set(g, 5);
    metric_add(g, -2);
    metric_observe(h, 0.125, "x");
    metric_observe(h, 0.25, "x");  /* le is inclusive */
    metric_observe(h, 0.5, "x");
    metric_observe(h, 7, "x");
    size_t len;
    char *text = metrics_render(reg, &len);
    const char *want =
        "# HELP q_msgs_total Messages.\n"
        "# TYPE q_msgs_total counter\n"
        "q_msgs_total{outcome=\"protected\",level=\"otp\"} 3\n"
        "q_msgs_total{outcome=\"refused\",level=\"a\\\"b\\\\c\\nd\"} 1\n"
        "# HELP q_sessions Sessions\\\\open\\nnow.\n"
        "# TYPE q_sessions gauge\n"
        "q_sessions 3\n"
        "# HELP q_lat_seconds Latency.\n"
        "# TYPE q_lat_seconds histogram\n"
        "q_lat_seconds_bucket{link=\"x\",le=\"0.25\"} 2\n"
        "q_lat_seconds_bucket{link=\"x\",le=\"1\"} 3\n"
        "q_lat_seconds_bucket{link=\"x\",le=\"+Inf\"} 4\n"
        "q_lat_seconds_sum{link=\"x\"} 7.875\n"
        "q_lat_seconds_count{link=\"x\"} 4\n"
        "# HELP qumail_metrics_dropped_series_total Updates dropped because a metric "
        "reached its series limit.\n"
        "# TYPE qumail_metrics_dropped_series_total counter\n"
        "qumail_metrics_dropped_series_total 0\n";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    assert_true(metric_value(c, "protected", "otp") == 3);
    assert_true(metric_value(h, "x") == 4);
    assert_true(metric_value(c, "nope", "none") == 0);
    free(text);
    metrics_free(&reg);
    assert_null(reg);
}

static void test_declaration_rules(void **state)
{
    metrics *reg = metrics_new();
    assert_null(metrics_counter(reg, "9bad", "", 0));
    assert_null(metrics_counter(reg, "bad-name", "", 0));
    assert_null(metrics_counter(reg, "ok", "", 1, "bad label"));
    assert_null(metrics_counter(reg, "ok", "", 1, "__reserved"));
    const double b[] = {1, 1};
    assert_null(metrics_histogram(reg, "h", "", b, 2, 0));
    assert_null(metrics_histogram(reg, "h", "", b, 1, 1, "le"));
    assert_null(metrics_counter(reg, "ok", "", 5, "a", "b", "c", "d", "e"));
    metric *m = metrics_counter(reg, "ns:ok_total", "", 1, "a");
    assert_non_null(m);
    /* the same declaration again: the same metric; a clash: NULL */
    assert_ptr_equal(metrics_counter(reg, "ns:ok_total", "again", 1, "a"), m);
    assert_null(metrics_gauge(reg, "ns:ok_total", "", 1, "a"));
    assert_null(metrics_counter(reg, "ns:ok_total", "", 1, "b"));
    /* wrong operations are ignored: counters only go up */
    metric_add(m, -1, "x");
    metric_set(m, 5, "x");
    metric_observe(m, 5, "x");
    assert_true(metric_value(m, "x") == 0);
    metric_add(NULL, 1, "x"); /* no registry: no effect, no crash */
    metrics_free(&reg);
}

static void test_series_bound(void **state)
{
    metrics *reg = metrics_new();
    metric *m = metrics_counter(reg, "many_total", "", 1, "id");
    char id[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(id, sizeof(id), "%d", i);
        metric_add(m, 1, id);
    }
    metric_add(m, 1, "0"); /* an existing series still counts */
    assert_true(metric_value(m, "0") == 2);
    char *text = metrics_render(reg, NULL);
    assert_non_null(strstr(text, "qumail_metrics_dropped_series_total 10\n"));
    free(text);
    metrics_free(&reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_declaration_rules),
        cmocka_unit_test(test_series_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
