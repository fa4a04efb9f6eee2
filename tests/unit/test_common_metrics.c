/* test_common_metrics.c -- the metrics registry and its Prometheus text.
 * The registry is process-wide: each test uses names of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The lines of the rendering that start with prefix, joined by newlines. */
static char *lines_of(const char *prefix)
{
    size_t len;
    char *all = metrics_render(&len);
    assert_non_null(all);
    assert_int_equal(strlen(all), len);
    char *out = calloc(1, len + 1);
    size_t o = 0, n = strlen(prefix);
    for (char *line = all; *line;) {
        char *end = strchr(line, '\n');
        size_t l = end ? (size_t)(end - line) + 1 : strlen(line);
        const char *name = line;
        if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7))
            name = line + 7;
        if (!strncmp(name, prefix, n)) {
            memcpy(out + o, line, l);
            o += l;
        }
        line += l;
    }
    free(all);
    return out;
}

static void test_counter_and_gauge(void **state)
{
    (void)state;
    struct metric *a = metrics_counter("t1_requests_total", "Requests.",
                                       "route=\"/v1/readings\",status=\"202\"");
    struct metric *b = metrics_counter("t1_requests_total", "Requests.",
                                       "route=\"/v1/readings\",status=\"400\"");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_equal(metrics_counter("t1_requests_total", "Requests.",
                                     "route=\"/v1/readings\",status=\"202\""), a);
    metric_inc(a);
    metric_add(a, 2);
    metric_add(a, -5);          /* a counter never goes down */
    metric_inc(b);
    assert_true(metric_value(a) == 3);
    struct metric *g = metrics_gauge("t1_connected", "Connected (0/1).", NULL);
    metric_set(g, 1);
    metric_add(g, -0.5);
    char *got = lines_of("t1_");
    assert_string_equal(got,
        "# HELP t1_requests_total Requests.\n"
        "# TYPE t1_requests_total counter\n"
        "t1_requests_total{route=\"/v1/readings\",status=\"202\"} 3\n"
        "t1_requests_total{route=\"/v1/readings\",status=\"400\"} 1\n"
        "# HELP t1_connected Connected (0/1).\n"
        "# TYPE t1_connected gauge\n"
        "t1_connected 0.5\n");
    free(got);
}

static void test_histogram(void **state)
{
    (void)state;
    const double bounds[] = { 0.01, 0.1, 1 };
    struct metric *h = metrics_histogram("t2_latency_seconds", "Latency.", "", bounds, 3);
    assert_non_null(h);
    metric_observe(h, 0.005);
    metric_observe(h, 0.01);    /* le is inclusive */
    metric_observe(h, 0.5);
    metric_observe(h, 7);
    assert_true(metric_value(h) == 4);
    char *got = lines_of("t2_");
    assert_string_equal(got,
        "# HELP t2_latency_seconds Latency.\n"
        "# TYPE t2_latency_seconds histogram\n"
        "t2_latency_seconds_bucket{le=\"0.01\"} 2\n"
        "t2_latency_seconds_bucket{le=\"0.10000000000000001\"} 2\n"
        "t2_latency_seconds_bucket{le=\"1\"} 3\n"
        "t2_latency_seconds_bucket{le=\"+Inf\"} 4\n"
        "t2_latency_seconds_sum 7.5149999999999997\n"
        "t2_latency_seconds_count 4\n");
    free(got);
    const double bad[] = { 1, 1 };
    assert_null(metrics_histogram("t2_bad", "", NULL, bad, 2));
    assert_null(metrics_histogram("t2_bad", "", NULL, bounds, 0));
}

static void test_invalid_and_conflicts(void **state)
{
    (void)state;
    assert_null(metrics_counter("1abc", "", NULL));
    assert_null(metrics_counter("a-b", "", NULL));
    assert_null(metrics_counter("t3_x", "", "k=v"));              /* unquoted */
    assert_null(metrics_counter("t3_x", "", "k=\"v\"junk"));
    assert_null(metrics_counter("t3_x", "", "k=\"a\nb\""));
    assert_non_null(metrics_counter("t3_x", "", "k=\"a\\\"b\",k2=\"\""));
    assert_null(metrics_gauge("t3_x", "", NULL));                  /* counter already */
    /* Updates through a failed registration do nothing, and do not crash. */
    metric_inc(NULL);
    metric_set(NULL, 1);
    metric_observe(NULL, 1);
    assert_true(metric_value(NULL) == 0);
}

static void test_escape(void **state)
{
    (void)state;
    char out[16];
    assert_string_equal(metrics_escape("a\"b\\c\nd", out, sizeof out), "a\\\"b\\\\c\\nd");
    assert_string_equal(metrics_escape("0123456789abcdefghij", out, 8), "0123456");
    assert_string_equal(metrics_escape("ab\"", out, 4), "ab");   /* never half an escape */
}

static struct metric *shared_c, *shared_h;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        metric_add(shared_c, 0.5);
        metric_observe(shared_h, 0.002);
    }
    return NULL;
}

/* Updates from several threads at once are all counted. */
static void test_threads(void **state)
{
    (void)state;
    shared_c = metrics_counter("t4_total", "", NULL);
    shared_h = metrics_histogram("t4_seconds", "", NULL, METRICS_LATENCY_BOUNDS,
                                 METRICS_LATENCY_NBOUNDS);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(metric_value(shared_c) == 200000);
    assert_true(metric_value(shared_h) == 400000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_invalid_and_conflicts),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
