/* test_sim_stats.c -- unit tests for sensor-sim/stats: histogram buckets
 * (exact below 64 µs, within 1/32 above), quantiles, merging, and interval
 * deltas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../sensor-sim/rng.h"
#include "../../sensor-sim/stats.h"

static void test_buckets(void **state)
{
    (void)state;
    unsigned prev = 0;
    for (uint64_t v = 0; v < 64; v++) {
        assert_int_equal(hist_index(v), v);
        assert_true(hist_bucket_high(hist_index(v)) == v);
    }
    struct rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < 200000; i++) {
        uint64_t v = rng_next(&r) >> (24 + rng_below(&r, 40));
        unsigned idx = hist_index(v);
        assert_true(idx < HIST_BUCKETS);
        uint64_t hi = hist_bucket_high(idx);
        if (v <= HIST_MAX_US) {
            assert_true(hi >= v);
            assert_true((double)(hi - v) <= (double)v / 32.0 + 1);
        }
    }
    for (uint64_t v = 1; v < (1ULL << 39); v = v * 3 / 2 + 1) {
        assert_true(hist_index(v) >= prev);
        prev = hist_index(v);
    }
    assert_int_equal(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
}

static void test_quantiles(void **state)
{
    (void)state;
    struct hist *h = calloc(1, sizeof *h);
    assert_non_null(h);
    assert_true(hist_quantile(h, 0.5) == 0);
    for (uint64_t v = 1; v <= 10000; v++)
        hist_add(h, v * 100);          /* 100 µs .. 1 s, uniform */
    assert_true(h->count == 10000 && h->max == 1000000);
    struct { double q; uint64_t want; } cases[] = {
        { 0.5, 500000 }, { 0.99, 990000 }, { 0.999, 999000 }, { 1.0, 1000000 }, { 0.0001, 100 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = hist_quantile(h, cases[i].q);
        assert_true(got >= cases[i].want);
        assert_true((double)got <= (double)cases[i].want * (1 + 1.0 / 32));
    }
    hist_reset(h);
    hist_add(h, 7);
    assert_true(hist_quantile(h, 0.5) == 7 && hist_quantile(h, 0.999) == 7);
    free(h);
}

static void test_roll(void **state)
{
    (void)state;
    struct sim_stats *s = calloc(1, sizeof *s);
    struct hist *ih = malloc(sizeof *ih), *dh = malloc(sizeof *dh);
    assert_non_null(s);
    assert_non_null(ih);
    assert_non_null(dh);
    struct counters d;
    s->c.sent = 10;
    s->c.accepted = 8;
    s->c.failed = 1;
    s->c.unsent = 3;
    stats_latency(s, 1000);
    stats_latency(s, 3000);
    stats_roll(s, &d, ih, NULL);
    assert_true(d.sent == 10 && d.accepted == 8 && d.failed == 1 && d.unsent == 3);
    assert_true(ih->count == 2 && s->interval.count == 0 && s->total.count == 2);
    s->c.sent = 15;
    s->c.accepted = 14;
    stats_latency(s, 50000);
    stats_due_latency(s, 70000);
    stats_roll(s, &d, ih, dh);
    assert_true(d.sent == 5 && d.accepted == 6 && d.failed == 0);
    assert_true(ih->count == 1 && ih->max == 50000);
    assert_true(s->total.count == 3 && s->total.max == 50000);
    /* The due latencies roll apart from the attempts'. */
    assert_true(dh->count == 1 && dh->max == 70000 && s->due_interval.count == 0);
    assert_true(s->due_total.count == 1 && s->due_total.max == 70000);
    free(s);
    free(ih);
    free(dh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_roll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
