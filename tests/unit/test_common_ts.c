/* test_common_ts.c -- unit tests for common/ts: RFC 3339 parsing, the naive
 * UTC form, formatting, and the clocks. gmtime_r() serves as an independent
 * oracle for the calendar arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ts.h"

#define US 1000000LL
/* 2026-11-22T10:00:00.123Z, the example of the contracts. */
#define T_EXAMPLE 1795341600123000LL
/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z. */
#define T_MIN (-62135596800LL * US)
#define T_MAX (253402300799LL * US + 999999)

/* Parses s as RFC 3339, requiring success, and returns the value. */
static int64_t ok3339(const char *s)
{
    int64_t v = 0x5a5a5a5a;
    const char *why = NULL;
    int rc = ts_parse_rfc3339(s, &v, &why);
    if (rc != 0)
        fail_msg("ts_parse_rfc3339(\"%s\") failed: %s", s, why ? why : "(no reason)");
    return v;
}

/* Requires s to be rejected with a non-empty reason; returns the reason. */
static const char *bad3339(const char *s)
{
    int64_t v = 0x5a5a5a5a;
    const char *why = NULL;
    int rc = ts_parse_rfc3339(s, &v, &why);
    if (rc != -1)
        fail_msg("ts_parse_rfc3339(\"%s\") returned %d (value %lld), expected -1", s, rc,
                 (long long)v);
    if (why == NULL || why[0] == '\0')
        fail_msg("ts_parse_rfc3339(\"%s\") failed without a reason", s);
    return why;
}

static int64_t oknaive(const char *s)
{
    int64_t v = 0x5a5a5a5a;
    const char *why = NULL;
    if (ts_parse_naive_utc(s, &v, &why) != 0)
        fail_msg("ts_parse_naive_utc(\"%s\") failed: %s", s, why ? why : "(no reason)");
    return v;
}

static const char *badnaive(const char *s)
{
    int64_t v = 0x5a5a5a5a;
    const char *why = NULL;
    int rc = ts_parse_naive_utc(s, &v, &why);
    if (rc != -1)
        fail_msg("ts_parse_naive_utc(\"%s\") returned %d (value %lld), expected -1", s, rc,
                 (long long)v);
    if (why == NULL || why[0] == '\0')
        fail_msg("ts_parse_naive_utc(\"%s\") failed without a reason", s);
    return why;
}

static void assert_i64(int64_t got, int64_t want, const char *what)
{
    if (got != want)
        fail_msg("%s: got %lld, want %lld", what, (long long)got, (long long)want);
}

/* --- RFC 3339 ------------------------------------------------------------ */

static void test_epoch_and_example(void **state)
{
    (void)state;
    assert_i64(ok3339("1970-01-01T00:00:00Z"), 0, "epoch");
    assert_i64(ok3339("2026-11-22T10:00:00.123Z"), T_EXAMPLE, "example");
    assert_i64(ok3339("2000-01-01T00:00:00Z"), 946684800LL * US, "Y2K");
    assert_i64(ok3339("2038-01-19T03:14:08Z"), 2147483648LL * US, "past 2^31 s");
    assert_i64(ok3339("1969-12-31T23:59:59Z"), -1 * US, "one second before the epoch");
    assert_i64(ok3339("1900-01-01T00:00:00Z"), -2208988800LL * US, "1900");
    assert_i64(ok3339("0001-01-01T00:00:00Z"), T_MIN, "year 1");
    assert_i64(ok3339("9999-12-31T23:59:59.999999Z"), T_MAX, "year 9999");
}

static void test_z_lowercase_and_separators(void **state)
{
    (void)state;
    assert_i64(ok3339("2026-11-22T10:00:00.123z"), T_EXAMPLE, "lower-case z");
    assert_i64(ok3339("2026-11-22t10:00:00.123Z"), T_EXAMPLE, "lower-case t");
    assert_i64(ok3339("2026-11-22 10:00:00.123Z"), T_EXAMPLE, "space separator");
    assert_i64(ok3339("2026-11-22t10:00:00.123z"), T_EXAMPLE, "both lower case");
}

static void test_offsets(void **state)
{
    (void)state;
    /* The same instant written in several zones. */
    assert_i64(ok3339("2026-11-22T12:00:00.123+02:00"), T_EXAMPLE, "+02:00");
    assert_i64(ok3339("2026-11-22T04:30:00.123-05:30"), T_EXAMPLE, "-05:30");
    assert_i64(ok3339("2026-11-22T10:00:00.123+00:00"), T_EXAMPLE, "+00:00");
    assert_i64(ok3339("2026-11-22T10:00:00.123-00:00"), T_EXAMPLE, "-00:00");
    assert_i64(ok3339("2026-11-23T09:59:00.123+23:59"), T_EXAMPLE, "+23:59");
    assert_i64(ok3339("2026-11-21T10:01:00.123-23:59"), T_EXAMPLE, "-23:59");
    /* An offset moves the instant across midnight, a month and a year. */
    assert_i64(ok3339("1970-01-01T01:00:00+01:00"), 0, "epoch in +01:00");
    assert_i64(ok3339("1969-12-31T19:00:00-05:00"), 0, "epoch in -05:00");
    assert_i64(ok3339("2025-01-01T00:30:00+05:30"),
               ok3339("2024-12-31T19:00:00Z"), "across the new year");
}

static void test_fractions_1_to_9_digits(void **state)
{
    (void)state;
    static const struct { const char *s; int64_t us; } cases[] = {
        { "2026-11-22T10:00:00.1Z", 100000 },
        { "2026-11-22T10:00:00.12Z", 120000 },
        { "2026-11-22T10:00:00.123Z", 123000 },
        { "2026-11-22T10:00:00.1234Z", 123400 },
        { "2026-11-22T10:00:00.12345Z", 123450 },
        { "2026-11-22T10:00:00.123456Z", 123456 },
        { "2026-11-22T10:00:00.1234567Z", 123456 },    /* truncated, not rounded */
        { "2026-11-22T10:00:00.12345678Z", 123456 },
        { "2026-11-22T10:00:00.123456789Z", 123456 },
        { "2026-11-22T10:00:00.999999999Z", 999999 },  /* never rolls into the next second */
        { "2026-11-22T10:00:00.000001Z", 1 },
        { "2026-11-22T10:00:00.0000009Z", 0 },
        { "2026-11-22T10:00:00.0Z", 0 },
        { "2026-11-22T10:00:00.000000000000000000001Z", 0 },
        { "2026-11-22T10:00:00.5+02:00", 500000 - 2 * 3600 * US },
    };
    const int64_t base = T_EXAMPLE - 123000;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_i64(ok3339(cases[i].s), base + cases[i].us, cases[i].s);
    /* Before the epoch the fraction still counts forward from the second. */
    assert_i64(ok3339("1969-12-31T23:59:59.5Z"), -500000, "pre-epoch fraction");
    assert_i64(ok3339("1969-12-31T23:59:59.9999999Z"), -1, "pre-epoch truncation");
}

static void test_calendar_ranges(void **state)
{
    (void)state;
    /* Leap days: every 4 years, not every 100, yet every 400. */
    assert_i64(ok3339("2024-02-29T00:00:00Z"), ok3339("2024-02-28T00:00:00Z") + 86400 * US,
               "2024-02-29");
    assert_i64(ok3339("2024-03-01T00:00:00Z"), ok3339("2024-02-29T00:00:00Z") + 86400 * US,
               "day after the leap day");
    assert_i64(ok3339("2000-02-29T12:00:00Z"), 951825600LL * US, "2000-02-29");
    bad3339("2023-02-29T00:00:00Z");
    bad3339("1900-02-29T00:00:00Z");
    bad3339("2100-02-29T00:00:00Z");
    bad3339("2024-02-30T00:00:00Z");
    /* Month and day bounds. */
    bad3339("2024-13-01T00:00:00Z");
    bad3339("2024-00-01T00:00:00Z");
    bad3339("2024-01-00T00:00:00Z");
    bad3339("2024-01-32T00:00:00Z");
    bad3339("2024-04-31T00:00:00Z");
    bad3339("2024-06-31T00:00:00Z");
    bad3339("2024-09-31T00:00:00Z");
    bad3339("2024-11-31T00:00:00Z");
    ok3339("2024-12-31T00:00:00Z");
    ok3339("2024-01-31T00:00:00Z");
    /* Time bounds; a leap second is refused on purpose. */
    bad3339("2024-01-01T24:00:00Z");
    bad3339("2024-01-01T23:60:00Z");
    bad3339("2024-01-01T23:59:60Z");
    ok3339("2024-01-01T23:59:59Z");
    /* Years 1..9999 only. */
    bad3339("0000-01-01T00:00:00Z");
}

static void test_missing_offset_is_named(void **state)
{
    (void)state;
    const char *why = bad3339("2026-11-22T10:00:00");
    assert_non_null(strstr(why, "offset"));
    why = bad3339("2026-11-22T10:00:00.123456");
    assert_non_null(strstr(why, "offset"));
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026",
        "2026-11-22",
        "2026-11-22T",
        "2026-11-22T10",
        "2026-11-22T10:00",
        "2026-11-22T10:00Z",
        "2026-11-22X10:00:00Z",
        "2026-11-22T10:00:00.Z",         /* a dot needs digits */
        "2026-11-22T10:00:00,5Z",        /* comma fraction is not RFC 3339 */
        "26-11-22T10:00:00Z",
        "2026-1-22T10:00:00Z",
        "2026-11-2T10:00:00Z",
        "2026-11-22T1:00:00Z",
        "2026/11/22T10:00:00Z",
        "+2026-11-22T10:00:00Z",
        " 2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00+2:00",
        "2026-11-22T10:00:00+0200",
        "2026-11-22T10:00:00+02",
        "2026-11-22T10:00:00+02:0",
        "2026-11-22T10:00:00+24:00",
        "2026-11-22T10:00:00+02:60",
        "2026-11-22T10:00:00UTC",
        "2026-11-22T10:00:00 Z",
        "abcd-ef-ghTij:kl:mnZ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad3339(bad[i]);
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    bad3339("2026-11-22T10:00:00ZZ");
    bad3339("2026-11-22T10:00:00Zx");
    bad3339("2026-11-22T10:00:00Z ");
    bad3339("2026-11-22T10:00:00+02:00x");
    bad3339("2026-11-22T10:00:00+02:00:00");
    bad3339("2026-11-22T10:00:00.123Z\n");
}

/* --- naive UTC ----------------------------------------------------------- */

static void test_naive(void **state)
{
    (void)state;
    assert_i64(oknaive("2019-08-30T12:00:00.123456"), 1567166400LL * US + 123456, "legacy sample");
    assert_i64(oknaive("1970-01-01T00:00:00"), 0, "epoch");
    assert_i64(oknaive("2026-11-22T10:00:00.123"), T_EXAMPLE, "example");
    assert_i64(oknaive("2026-11-22 10:00:00.123456789"), T_EXAMPLE + 456, "space, 9 digits");
    assert_i64(oknaive("2024-02-29T00:00:00"), ok3339("2024-02-29T00:00:00Z"), "leap day");
    /* No offset allowed, and the calendar is checked as strictly. */
    badnaive("2019-08-30T12:00:00Z");
    badnaive("2019-08-30T12:00:00z");
    badnaive("2019-08-30T12:00:00+00:00");
    badnaive("2019-08-30T12:00:00.1-05:00");
    badnaive("2019-08-30T12:00:00 ");
    badnaive("2019-08-30T12:00:00x");
    badnaive("2023-02-29T12:00:00");
    badnaive("2019-13-30T12:00:00");
    badnaive("2019-08-30T24:00:00");
    badnaive("2019-08-30");
    badnaive("");
}

/* --- formatting ---------------------------------------------------------- */

static void expect_format(int64_t us, const char *want)
{
    char buf[TS_TEXT_MAX];
    memset(buf, 'x', sizeof buf);
    ts_format(us, buf);
    if (strcmp(buf, want) != 0)
        fail_msg("ts_format(%lld) = \"%s\", want \"%s\"", (long long)us, buf, want);
}

static void test_format_known(void **state)
{
    (void)state;
    expect_format(0, "1970-01-01T00:00:00.000000Z");
    expect_format(T_EXAMPLE, "2026-11-22T10:00:00.123000Z");
    expect_format(1, "1970-01-01T00:00:00.000001Z");
    expect_format(-1, "1969-12-31T23:59:59.999999Z");
    expect_format(-US, "1969-12-31T23:59:59.000000Z");
    expect_format(-US - 1, "1969-12-31T23:59:58.999999Z");
    expect_format(-86400 * US, "1969-12-31T00:00:00.000000Z");
    expect_format(951782400LL * US, "2000-02-29T00:00:00.000000Z");
    expect_format(1567166400LL * US + 123456, "2019-08-30T12:00:00.123456Z");
    expect_format(T_MIN, "0001-01-01T00:00:00.000000Z");
    expect_format(T_MAX, "9999-12-31T23:59:59.999999Z");
}

/* Compares ts_format's calendar fields with gmtime_r's for the same second. */
static void check_against_gmtime(int64_t us)
{
    char buf[TS_TEXT_MAX], want[TS_TEXT_MAX];
    int64_t secs = us / US, frac = us % US;
    if (frac < 0) {
        frac += US;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    assert_non_null(gmtime_r(&t, &tm));
    snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    ts_format(us, buf);
    if (strcmp(buf, want) != 0)
        fail_msg("ts_format(%lld) = \"%s\", gmtime says \"%s\"", (long long)us, buf, want);
}

/* Format, then parse back with both parsers: the exact same value. */
static void check_round_trip(int64_t us)
{
    char buf[TS_TEXT_MAX];
    ts_format(us, buf);
    if (strlen(buf) != 27)
        fail_msg("ts_format(%lld) = \"%s\": not 27 characters", (long long)us, buf);
    int64_t back = ok3339(buf);
    if (back != us)
        fail_msg("round trip %lld -> \"%s\" -> %lld", (long long)us, buf, (long long)back);
    buf[26] = '\0';   /* drop the Z: the naive form of the same instant */
    back = oknaive(buf);
    if (back != us)
        fail_msg("naive round trip %lld -> \"%s\" -> %lld", (long long)us, buf, (long long)back);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void test_format_round_trip(void **state)
{
    (void)state;
    static const int64_t fixed[] = {
        0, 1, -1, 999999, -999999, US, -US, US - 1, -US + 1, -US - 1,
        86400 * US - 1, 86400 * US, -86400 * US, -86400 * US - 1, -86400 * US + 1,
        T_EXAMPLE, T_MIN, T_MIN + 1, T_MAX, T_MAX - 1,
        951782400LL * US, 951868799LL * US + 999999,         /* 2000-02-29 */
        -2208988800LL * US, -2208988800LL * US - 1,          /* 1900-01-01 */
        -12219292800LL * US,                                 /* 1582-10-15 */
        -62135596800LL * US + 86400 * US * 59,               /* 0001-03-01 */
        2147483647LL * US, 2147483648LL * US, -2147483648LL * US,
        4102444800LL * US,                                   /* 2100-01-01 */
        253402214400LL * US,                                 /* 9999-12-31 */
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        check_round_trip(fixed[i]);
        check_against_gmtime(fixed[i]);
    }
    /* Every day boundary (and its neighbours) of 1968..2032 and 1896..1904. */
    for (int64_t day = -365 * 2 - 1; day < 365 * 63; day++) {
        for (int64_t d = -1; d <= 1; d++) {
            check_round_trip(day * 86400 * US + d);
            check_against_gmtime(day * 86400 * US + d);
        }
    }
    for (int64_t day = -27000; day < -24000; day++)
        check_round_trip(day * 86400 * US);
    /* Random instants across the whole of years 1..9999. */
    uint64_t span = (uint64_t)(T_MAX - T_MIN) + 1;
    for (int i = 0; i < 200000; i++) {
        int64_t us = T_MIN + (int64_t)(rng() % span);
        check_round_trip(us);
        if (i % 10 == 0)
            check_against_gmtime(us);
    }
}

static void test_format_extremes_are_safe(void **state)
{
    (void)state;
    /* Outside years 1..9999 the text is not promised, but it must stay a
     * terminated string inside the buffer (and be free of UB under UBSan). */
    static const int64_t v[] = { INT64_MIN, INT64_MIN + 1, INT64_MAX, T_MIN - 1, T_MAX + 1 };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char buf[TS_TEXT_MAX + 8];
        memset(buf, 'x', sizeof buf);
        ts_format(v[i], buf);
        assert_true(memchr(buf, '\0', TS_TEXT_MAX) != NULL);
        assert_int_equal(buf[TS_TEXT_MAX], 'x');
    }
}

/* --- clocks -------------------------------------------------------------- */

static int64_t clock_us(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (int64_t)t.tv_sec * US + t.tv_nsec / 1000;
}

/* Each clock read between two reads of the clock it should be, in
 * microseconds. Not time(): glibc's comes from the kernel's coarse clock,
 * up to a scheduler tick behind CLOCK_REALTIME, so a precise reading just
 * past a second could land after time()'s "after" (it did, once in CI). */
static void test_clocks(void **state)
{
    (void)state;
    int64_t before = clock_us(CLOCK_REALTIME);
    int64_t now = ts_now_us();
    int64_t after = clock_us(CLOCK_REALTIME);
    assert_true(before <= now && now <= after);

    before = clock_us(CLOCK_MONOTONIC);
    int64_t m0 = ts_mono_us();
    struct timespec d = { 0, 20 * 1000 * 1000 };
    nanosleep(&d, NULL);
    int64_t m1 = ts_mono_us();
    after = clock_us(CLOCK_MONOTONIC);
    assert_true(before <= m0 && m1 <= after);
    assert_true(m1 - m0 >= 20000);   /* nanosleep sleeps at least that long */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_and_example),
        cmocka_unit_test(test_z_lowercase_and_separators),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_fractions_1_to_9_digits),
        cmocka_unit_test(test_calendar_ranges),
        cmocka_unit_test(test_missing_offset_is_named),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_naive),
        cmocka_unit_test(test_format_known),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_format_extremes_are_safe),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests_name("common/ts", tests, NULL, NULL);
}
