/* test_sim_rng.c -- unit tests for sensor-sim/rng: splitmix64 against the
 * reference outputs, repeatability from a seed, ranges, kernel bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../sensor-sim/rng.h"

/* First outputs of the reference splitmix64.c (Vigna) seeded with 0. */
static void test_reference_sequence(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 0);
    assert_true(rng_next(&r) == 0xe220a8397b1dcdafULL);
    assert_true(rng_next(&r) == 0x6e789e6aa1b965f4ULL);
    assert_true(rng_next(&r) == 0x06c45d188009454fULL);
}

static void test_same_seed_same_sequence(void **state)
{
    (void)state;
    struct rng a, b, c;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_next(&a);
        assert_true(x == rng_next(&b));
        if (x != rng_next(&c))
            differs++;
    }
    assert_true(differs > 990);
}

static void test_unit_and_between_ranges(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 7);
    double lo = 1, hi = 0, sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_unit(&r);
        assert_true(u >= 0.0 && u < 1.0);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        sum += u;
        double b = rng_between(&r, -3.0, 5.0);
        assert_true(b >= -3.0 && b < 5.0);
    }
    assert_true(lo < 0.001 && hi > 0.999);
    assert_true(sum / 100000 > 0.49 && sum / 100000 < 0.51);
}

static void test_below_bounds_and_spread(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 99);
    unsigned hist[7] = { 0 };
    for (int i = 0; i < 70000; i++) {
        uint64_t x = rng_below(&r, 7);
        assert_true(x < 7);
        hist[x]++;
    }
    for (int i = 0; i < 7; i++)
        assert_true(hist[i] > 9000 && hist[i] < 11000);
    for (int i = 0; i < 100; i++)
        assert_true(rng_below(&r, 1) == 0);
}

static void test_mix_is_a_pure_hash(void **state)
{
    (void)state;
    assert_true(rng_mix(12345) == rng_mix(12345));
    assert_true(rng_mix(1) != rng_mix(2));
}

static void test_os_bytes(void **state)
{
    (void)state;
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_int_equal(rng_os_bytes(a, sizeof a), 0);
    assert_int_equal(rng_os_bytes(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_sequence),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_unit_and_between_ranges),
        cmocka_unit_test(test_below_bounds_and_spread),
        cmocka_unit_test(test_mix_is_a_pure_hash),
        cmocka_unit_test(test_os_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
