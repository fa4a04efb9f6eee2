/* test_sim_backoff.c -- unit tests for sensor-sim/backoff: the ceiling
 * doubles from 100 ms to 5 s, full jitter stays inside [0, ceiling] and
 * covers it, Retry-After is a floor, Retry-After parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../sensor-sim/backoff.h"
#include "../../sensor-sim/rng.h"

#define MS 1000LL
#define S 1000000LL

static void test_ceiling_doubles_then_caps(void **state)
{
    (void)state;
    const int64_t want[] = { 100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS,
                             3200 * MS, 5 * S, 5 * S, 5 * S };
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_true(backoff_ceiling_us(i + 1) == want[i]);
    assert_true(backoff_ceiling_us(0) == 100 * MS);
    assert_true(backoff_ceiling_us(1000) == 5 * S);
}

static void test_full_jitter_bounds(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 1);
    for (unsigned f = 1; f <= 12; f++) {
        int64_t ceil = backoff_ceiling_us(f), lo = INT64_MAX, hi = -1;
        for (int i = 0; i < 20000; i++) {
            int64_t d = backoff_delay_us(f, rng_next(&r), -1);
            assert_true(d >= 0 && d <= ceil);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* Full jitter: the whole range is used, from near 0 to near the top. */
        assert_true(lo < ceil / 50);
        assert_true(hi > ceil - ceil / 50);
    }
}

static void test_retry_after_is_a_floor(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < 20000; i++) {
        unsigned f = 1 + (unsigned)(i % 10);
        int64_t d = backoff_delay_us(f, rng_next(&r), 2 * S);
        assert_true(d >= 2 * S);
        int64_t top = backoff_ceiling_us(f) > 2 * S + 2 * S / 5 ? backoff_ceiling_us(f)
                                                                : 2 * S + 2 * S / 5;
        assert_true(d <= top);
    }
    /* Retry-After: 0 means "now", jitter only. */
    int64_t d = backoff_delay_us(1, rng_next(&r), 0);
    assert_true(d >= 0 && d <= 100 * MS);
    /* A server asking for an hour is trusted for a minute. */
    d = backoff_delay_us(1, rng_next(&r), 3600 * S);
    assert_true(d >= BACKOFF_RETRY_AFTER_MAX_US &&
                d <= BACKOFF_RETRY_AFTER_MAX_US + BACKOFF_RETRY_AFTER_MAX_US / 5);
}

static void test_parse_retry_after(void **state)
{
    (void)state;
    /* 2026-11-22T10:00:00Z */
    const int64_t now = 1795341600LL * S;
    assert_true(backoff_parse_retry_after("3", now) == 3 * S);
    assert_true(backoff_parse_retry_after(" 0 ", now) == 0);
    assert_true(backoff_parse_retry_after("120", now) == 60 * S);
    assert_true(backoff_parse_retry_after(NULL, now) == -1);
    assert_true(backoff_parse_retry_after("", now) == -1);
    assert_true(backoff_parse_retry_after("soon", now) == -1);
    assert_true(backoff_parse_retry_after("-1", now) == -1);
    assert_true(backoff_parse_retry_after("1.5", now) == -1);
    assert_true(backoff_parse_retry_after("Sun, 22 Nov 2026 10:00:05 GMT", now) == 5 * S);
    assert_true(backoff_parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now) == 0);
    assert_true(backoff_parse_retry_after("Sun, 22 Nov 2026 10:00:05", now) == -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceiling_doubles_then_caps),
        cmocka_unit_test(test_full_jitter_bounds),
        cmocka_unit_test(test_retry_after_is_a_floor),
        cmocka_unit_test(test_parse_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
