/* test_sim_fleet.c -- unit tests for sensor-sim/fleet: ids valid and
 * unique (also across fleets), the same seed gives the same fleet and the
 * same values, the type/unit mix, plausible values the API accepts, unique
 * increasing ts, and the jittered schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../sensor-sim/fleet.h"
#include "../../sensor-sim/payload.h"
#include "reading.h"

#define N 20000
#define T0 1795341600000000LL      /* 2026-11-22T10:00:00Z */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static struct fleet *make(size_t n, uint64_t seed, int os)
{
    char err[200];
    struct fleet *f = fleet_create(n, seed, os, err, sizeof err);
    if (!f)
        fail_msg("fleet_create: %s", err);
    return f;
}

static void assert_ids_valid_and_unique(struct fleet **fs, size_t nf)
{
    size_t total = 0;
    for (size_t k = 0; k < nf; k++)
        total += fleet_size(fs[k]);
    const char **ids = malloc(total * sizeof *ids);
    assert_non_null(ids);
    size_t o = 0;
    for (size_t k = 0; k < nf; k++) {
        for (size_t i = 0; i < fleet_size(fs[k]); i++) {
            const char *id = fleet_sensor(fs[k], i)->id;
            /* The API's rule, and the UUID-like shape. */
            assert_true(reading_sensor_id_valid(id, strlen(id)));
            assert_int_equal(strlen(id), FLEET_ID_LEN);
            assert_true(id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
            assert_true(id[14] == '4');
            ids[o++] = id;
        }
    }
    qsort(ids, total, sizeof *ids, cmp_str);
    for (size_t i = 1; i < total; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("duplicate id %s", ids[i]);
    free(ids);
}

static void test_random_ids_valid_and_unique(void **state)
{
    (void)state;
    /* Two fleets with the same seed but kernel ids, as two containers
     * started with the same settings would be. */
    struct fleet *fs[2] = { make(N, 1, 1), make(N, 1, 1) };
    assert_ids_valid_and_unique(fs, 2);
    fleet_destroy(fs[0]);
    fleet_destroy(fs[1]);
}

static void test_seeded_ids_valid_unique_repeatable(void **state)
{
    (void)state;
    struct fleet *a = make(N, 42, 0), *b = make(N, 42, 0), *c = make(N, 43, 0);
    struct fleet *fs[2] = { a, c };
    assert_ids_valid_and_unique(fs, 2);
    for (size_t i = 0; i < N; i++) {
        const struct fleet_sensor *x = fleet_sensor(a, i), *y = fleet_sensor(b, i);
        assert_string_equal(x->id, y->id);
        assert_int_equal(x->type, y->type);
        assert_string_equal(x->unit, y->unit);
    }
    /* Sensor i does not depend on the fleet size. */
    struct fleet *small = make(10, 42, 0);
    for (size_t i = 0; i < 10; i++)
        assert_string_equal(fleet_sensor(small, i)->id, fleet_sensor(a, i)->id);
    fleet_destroy(a);
    fleet_destroy(b);
    fleet_destroy(c);
    fleet_destroy(small);
}

static void test_seeded_values_repeatable(void **state)
{
    (void)state;
    struct fleet *a = make(50, 7, 0), *b = make(50, 7, 0);
    /* Different interleavings: a goes sensor by sensor, b round-robin. A
     * sensor's values must not depend on the others. */
    double va[50][20], vb[50][20];
    for (size_t i = 0; i < 50; i++)
        for (int k = 0; k < 20; k++) {
            struct sim_reading r;
            fleet_measure(a, i, T0 + k, &r);
            va[i][k] = r.value;
        }
    for (int k = 0; k < 20; k++)
        for (size_t i = 0; i < 50; i++) {
            struct sim_reading r;
            fleet_measure(b, i, T0 + k, &r);
            vb[i][k] = r.value;
        }
    assert_memory_equal(va, vb, sizeof va);
    fleet_destroy(a);
    fleet_destroy(b);
}

static void test_mix_and_plausible_values(void **state)
{
    (void)state;
    struct fleet *f = make(N, 5, 0);
    size_t by_type[3] = { 0 }, c = 0, fa = 0, k = 0, pct = 0, hpa = 0, pa = 0, kpa = 0;
    for (size_t i = 0; i < N; i++) {
        const struct fleet_sensor *s = fleet_sensor(f, i);
        by_type[s->type]++;
        c += !strcmp(s->unit, "C");
        fa += !strcmp(s->unit, "F");
        k += !strcmp(s->unit, "K");
        pct += !strcmp(s->unit, "%");
        hpa += !strcmp(s->unit, "hPa");
        pa += !strcmp(s->unit, "Pa");
        kpa += !strcmp(s->unit, "kPa");
        for (int m = 0; m < 200; m++) {
            struct sim_reading r;
            fleet_measure(f, i, T0, &r);
            double canon;
            const char *u;
            /* The API's own conversion accepts it ... */
            assert_int_equal(reading_convert(r.type, r.unit, r.value, &canon, &u), 0);
            assert_true(u == r.unit || strcmp(u, r.unit) == 0);
            /* ... and it is an indoor climate. */
            switch (r.type) {
            case READING_TEMPERATURE: assert_true(canon >= 17.99 && canon <= 26.01); break;
            case READING_HUMIDITY:    assert_true(canon >= 29.9 && canon <= 70.1); break;
            case READING_PRESSURE:    assert_true(canon >= 989.9 && canon <= 1030.1); break;
            }
        }
    }
    assert_true(by_type[READING_TEMPERATURE] > N * 45 / 100 && by_type[READING_TEMPERATURE] < N * 55 / 100);
    assert_true(by_type[READING_HUMIDITY] > N * 20 / 100 && by_type[READING_PRESSURE] > N * 20 / 100);
    assert_true(c > N / 10 && fa > N / 10 && k > N / 100 && k < c / 2);
    assert_true(pct == by_type[READING_HUMIDITY]);
    assert_true(hpa > pa && hpa > kpa && pa > 0 && kpa > 0);
    fleet_destroy(f);
}

static void test_walk_moves_and_values_are_short(void **state)
{
    (void)state;
    struct fleet *f = make(20, 9, 0);
    for (size_t i = 0; i < 20; i++) {
        struct sim_reading r;
        double first = 0;
        int changed = 0;
        for (int m = 0; m < 50; m++) {
            fleet_measure(f, i, T0, &r);
            if (m == 0)
                first = r.value;
            else if (r.value != first)
                changed = 1;
            /* Rounded to the unit's resolution: short decimal text. */
            char buf[READING_NUMBER_MAX];
            assert_true(reading_format_number(r.value, buf) <= 8);
        }
        assert_true(changed);
    }
    fleet_destroy(f);
}

static void test_ts_unique_and_increasing(void **state)
{
    (void)state;
    struct fleet *f = make(3, 1, 0);
    int64_t last = 0;
    for (int m = 0; m < 1000; m++) {
        struct sim_reading r;
        /* The clock does not move: load mode at thousands per second. */
        fleet_measure(f, 1, T0, &r);
        assert_true(r.ts_us > last);
        last = r.ts_us;
    }
    struct sim_reading r;
    fleet_measure(f, 1, T0 + 5000000, &r);
    assert_true(r.ts_us == T0 + 5000000);
    fleet_destroy(f);
}

static void test_schedule_jitter_and_spread(void **state)
{
    (void)state;
    const size_t n = 1000;
    const int64_t iv = 10000000, now = 5000000;
    struct fleet *f = make(n, 3, 0);
    assert_true(fleet_next_due(f) == INT64_MAX);
    assert_true(fleet_pop_due(f, INT64_MAX - 1) == -1);
    fleet_schedule_start(f, 10.0, now);

    /* First measurements spread over [now, now + interval). */
    size_t first_half = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t d = fleet_sensor(f, i)->due_us;
        assert_true(d >= now && d < now + iv);
        first_half += d < now + iv / 2;
    }
    assert_true(first_half > n * 4 / 10 && first_half < n * 6 / 10);

    /* Popping in time order, each sensor once per interval +-20%. */
    int64_t t = now, prev_due = now;
    size_t pops = 0;
    int64_t *last = calloc(n, sizeof *last);
    assert_non_null(last);
    while (t < now + 5 * iv) {
        t = fleet_next_due(f);
        assert_true(t >= prev_due);
        prev_due = t;
        long i = fleet_pop_due(f, t);
        assert_true(i >= 0 && (size_t)i < n);
        if (last[i]) {
            int64_t gap = t - last[i];
            assert_true(gap >= iv * 8 / 10 && gap <= iv * 12 / 10);
        }
        last[i] = t;
        int64_t next = fleet_sensor(f, (size_t)i)->due_us;
        assert_true(next - t >= iv * 8 / 10 && next - t <= iv * 12 / 10);
        pops++;
    }
    assert_true(pops > 4 * n && pops < 6 * n);
    assert_true(fleet_pop_due(f, fleet_next_due(f) - 1) == -1);

    /* A sensor far behind skips its missed slots instead of bursting. */
    int64_t late = fleet_next_due(f) + 100 * iv;
    long i = fleet_pop_due(f, late);
    assert_true(i >= 0);
    assert_true(fleet_sensor(f, (size_t)i)->due_us > late);
    free(last);
    fleet_destroy(f);
}

static void test_bad_size(void **state)
{
    (void)state;
    char err[200] = "";
    assert_null(fleet_create(0, 1, 0, err, sizeof err));
    assert_true(strstr(err, "out of range") != NULL);
    assert_null(fleet_create(FLEET_MAX_SENSORS + 1, 1, 0, err, sizeof err));
    fleet_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_ids_valid_and_unique),
        cmocka_unit_test(test_seeded_ids_valid_unique_repeatable),
        cmocka_unit_test(test_seeded_values_repeatable),
        cmocka_unit_test(test_mix_and_plausible_values),
        cmocka_unit_test(test_walk_moves_and_values_are_short),
        cmocka_unit_test(test_ts_unique_and_increasing),
        cmocka_unit_test(test_schedule_jitter_and_spread),
        cmocka_unit_test(test_bad_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
