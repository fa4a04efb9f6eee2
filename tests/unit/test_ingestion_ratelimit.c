/* test_ingestion_ratelimit.c -- per-sensor token buckets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../ingestion/ratelimit.h"

#include <stdio.h>
#include <stdlib.h>

static struct reading_batch batch(const char *sensor, size_t n)
{
    struct reading_batch b = { calloc(n, sizeof(struct reading)), n, n };
    for (size_t i = 0; i < n; i++)
        snprintf(b.v[i].sensor_id, sizeof b.v[i].sensor_id, "%s", sensor);
    return b;
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct ratelimit *r = ratelimit_new(10, 20, 100);   /* 10/s, burst 20 */
    assert_non_null(r);
    struct reading_batch b15 = batch("s1", 15), b5 = batch("s1", 5), b1 = batch("s1", 1);
    struct reading_batch other = batch("s2", 20);
    const char *sensor = NULL;
    long ra = -1;
    int64_t t = 1000000;
    assert_int_equal(ratelimit_take(r, &b15, t, &sensor, &ra), 0);
    assert_int_equal(ratelimit_take(r, &b5, t, &sensor, &ra), 0);
    assert_int_equal(ratelimit_take(r, &b1, t, &sensor, &ra), -1);
    assert_string_equal(sensor, "s1");
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(r, &other, t, &sensor, &ra), 0);   /* its own bucket */
    assert_int_equal(ratelimit_take(r, &b5, t + 100000, &sensor, &ra), -1);   /* 1 token */
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(r, &b5, t + 500000, &sensor, &ra), 0);   /* 5 tokens */
    /* 15 at once after 1 s: 10 tokens, refused as a whole, 1 s to wait. */
    assert_int_equal(ratelimit_take(r, &b15, t + 1500000, &sensor, &ra), -1);
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(r, &b5, t + 1500000, &sensor, &ra), 0);   /* nothing taken */
    /* More than the burst in one request can never pass. */
    struct reading_batch b30 = batch("s3", 30);
    assert_int_equal(ratelimit_take(r, &b30, t, &sensor, &ra), -1);
    assert_int_equal(ra, 0);
    free(b15.v);
    free(b5.v);
    free(b1.v);
    free(other.v);
    free(b30.v);
    ratelimit_free(r);
}

static void test_all_or_nothing_across_sensors(void **state)
{
    (void)state;
    struct ratelimit *r = ratelimit_new(1, 2, 100);
    struct reading_batch a2 = batch("a", 2);
    const char *sensor;
    long ra;
    assert_int_equal(ratelimit_take(r, &a2, 0, &sensor, &ra), 0);   /* a is empty now */
    struct reading_batch mix = { calloc(2, sizeof(struct reading)), 2, 2 };
    snprintf(mix.v[0].sensor_id, sizeof mix.v[0].sensor_id, "b");
    snprintf(mix.v[1].sensor_id, sizeof mix.v[1].sensor_id, "a");
    assert_int_equal(ratelimit_take(r, &mix, 0, &sensor, &ra), -1);
    assert_string_equal(sensor, "a");
    struct reading_batch b2 = batch("b", 2);   /* b kept both its tokens */
    assert_int_equal(ratelimit_take(r, &b2, 0, &sensor, &ra), 0);
    free(a2.v);
    free(mix.v);
    free(b2.v);
    ratelimit_free(r);
}

/* A full table drops the idle (full) buckets; busy ones stay limited. */
static void test_bounded_table(void **state)
{
    (void)state;
    struct ratelimit *r = ratelimit_new(1, 1, 4);
    const char *sensor;
    long ra;
    char id[16];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "busy-%d", i);
        struct reading_batch b = batch(id, 1);
        assert_int_equal(ratelimit_take(r, &b, 0, &sensor, &ra), 0);
        free(b.v);
    }
    assert_int_equal(ratelimit_sensors(r), 4);
    struct reading_batch n = batch("new", 1);   /* table full of busy: let through */
    assert_int_equal(ratelimit_take(r, &n, 0, &sensor, &ra), 0);
    assert_int_equal(ratelimit_sensors(r), 4);
    /* 2 s later every bucket is full again: swept, "new" gets one. */
    assert_int_equal(ratelimit_take(r, &n, 2000000, &sensor, &ra), 0);
    assert_int_equal(ratelimit_sensors(r), 1);
    assert_int_equal(ratelimit_take(r, &n, 2000000, &sensor, &ra), -1);
    free(n.v);
    ratelimit_free(r);
    assert_null(ratelimit_new(0, 10, 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_all_or_nothing_across_sensors),
        cmocka_unit_test(test_bounded_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
