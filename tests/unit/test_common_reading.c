/* test_common_reading.c -- unit tests for common/reading: unit conversion,
 * the HTTP body and legacy parsers, and the MQTT batch message both ways.
 *
 * Every rejection is checked the way a caller sees it: -1, err.index and
 * err.field, and the output batch exactly as it was (it is pre-filled with a
 * sentinel reading that owns tags, so ASan also sees any leak or double free
 * on the error paths). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>
#include <jansson.h>

#include "reading.h"
#include "ts.h"

#define US 1000000LL
#define NOW 1795341600123000LL            /* 2026-11-22T10:00:00.123Z */
#define T_MIN (-62135596800LL * US)       /* 0001-01-01T00:00:00Z */
#define T_MAX (253402300799LL * US + 999999)

static const struct reading_limits LIM = { 1000, 300 * US };

/* --- helpers ------------------------------------------------------------- */

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void assert_close(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("got %.17g, want %.17g (+-%g)", got, want, tol);
}

static void assert_same_double(double got, double want, const char *what)
{
    if (memcmp(&got, &want, sizeof got) != 0)
        fail_msg("%s: got %.17g, want %.17g (not bit-identical)", what, got, want);
}

static void assert_i64(int64_t got, int64_t want, const char *what)
{
    if (got != want)
        fail_msg("%s: got %lld, want %lld", what, (long long)got, (long long)want);
}

/* Two tag objects (JSON text or NULL) hold the same pairs. */
static void assert_same_tags(const char *got, const char *want)
{
    if (!want) {
        if (got)
            fail_msg("tags: got %s, want none", got);
        return;
    }
    if (!got)
        fail_msg("tags: got none, want %s", want);
    json_error_t je;
    json_t *g = json_loads(got, 0, &je), *w = json_loads(want, 0, &je);
    assert_non_null(g);
    assert_non_null(w);
    int same = json_equal(g, w);
    json_decref(g);
    json_decref(w);
    if (!same)
        fail_msg("tags: got %s, want %s", got, want);
}

static int64_t ts(const char *s)
{
    int64_t v;
    const char *why;
    if (ts_parse_rfc3339(s, &v, &why) < 0)
        fail_msg("test bug: bad time %s (%s)", s, why);
    return v;
}

/* The sentinel every error test starts from: one reading that owns tags. */
static const char SENTINEL[] =
    "{\"sensor_id\":\"sentinel\",\"type\":\"humidity\",\"value\":50,\"tags\":{\"k\":\"v\"}}";

static void prefill(struct reading_batch *b)
{
    struct reading_error err;
    memset(b, 0, sizeof *b);
    assert_int_equal(reading_parse_body(SENTINEL, strlen(SENTINEL), &LIM, NOW - 1, b, &err), 0);
    assert_int_equal(b->n, 1);
}

static void assert_sentinel_only(const struct reading_batch *b, const char *tags_before)
{
    if (b->n != 1)
        fail_msg("batch has %zu readings after a failure, want 1 (unchanged)", b->n);
    assert_string_equal(b->v[0].sensor_id, "sentinel");
    assert_int_equal(b->v[0].type, READING_HUMIDITY);
    assert_true(b->v[0].value == 50.0);
    assert_true(b->v[0].tags_json == tags_before);   /* the same, still owned */
    assert_string_equal(b->v[0].tags_json, "{\"k\":\"v\"}");
    assert_i64(b->v[0].received_at_us, NOW - 1, "sentinel received_at_us");
}

static struct reading_error last_err;

/* What a helper owns while it may fail: cmocka leaves a failing test by
 * longjmp, so the teardown frees these and a leak report means a real leak. */
static struct reading_batch t_batch, t_batch2;
static struct reading_msg t_msg;
static char *t_buf;

static int teardown(void **state)
{
    (void)state;
    reading_batch_free(&t_batch);
    reading_batch_free(&t_batch2);
    reading_msg_free(&t_msg);
    free(t_buf);
    t_buf = NULL;
    return 0;
}

enum parser { BODY, LEGACY };

/* Parses body (len bytes) that must be rejected at index/field; checks the
 * batch is left as it was. Returns the message. */
static const char *expect_reject_n(enum parser p, const char *body, size_t len,
                                   const struct reading_limits *lim, long index,
                                   const char *field)
{
    struct reading_batch *b = &t_batch;
    prefill(b);
    const char *tags_before = b->v[0].tags_json;
    memset(&last_err, 0x55, sizeof last_err);
    int rc = p == BODY ? reading_parse_body(body, len, lim, NOW, b, &last_err)
                       : reading_parse_legacy(body, len, lim, NOW, b, &last_err);
    if (rc != -1)
        fail_msg("accepted (rc %d, %zu readings): %.*s", rc, b->n, (int)len, body);
    assert_sentinel_only(b, tags_before);
    assert_non_null(memchr(last_err.field, '\0', sizeof last_err.field));
    assert_non_null(memchr(last_err.message, '\0', sizeof last_err.message));
    if (last_err.index != index || strcmp(last_err.field, field) != 0)
        fail_msg("rejected at index %ld field \"%s\" (%s), want index %ld field \"%s\": %.*s",
                 last_err.index, last_err.field, last_err.message, index, field, (int)len, body);
    assert_true(strlen(last_err.message) > 0);
    reading_batch_free(b);
    return last_err.message;
}

static const char *reject(const char *body, long index, const char *field)
{
    return expect_reject_n(BODY, body, strlen(body), &LIM, index, field);
}

static const char *reject_legacy(const char *body, long index, const char *field)
{
    return expect_reject_n(LEGACY, body, strlen(body), &LIM, index, field);
}

/* Parses a body that must be accepted into a fresh batch (caller frees). */
static void accept_into(const char *body, const struct reading_limits *lim,
                        struct reading_batch *b)
{
    struct reading_error err;
    memset(b, 0, sizeof *b);
    memset(&err, 0, sizeof err);
    if (reading_parse_body(body, strlen(body), lim, NOW, b, &err) != 0)
        fail_msg("rejected at index %ld field \"%s\": %s -- body %s", err.index, err.field,
                 err.message, body);
}

/* A one-reading body that must be accepted; returns the reading by value
 * (tags are checked against want_tags, then freed). */
static struct reading accept_one(const char *body, const char *want_tags)
{
    struct reading_batch b;
    accept_into(body, &LIM, &b);
    assert_int_equal(b.n, 1);
    struct reading r = b.v[0];
    assert_same_tags(r.tags_json, want_tags);
    r.tags_json = NULL;
    reading_batch_free(&b);
    return r;
}

/* --- types, units, conversion -------------------------------------------- */

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(reading_type_name(READING_TEMPERATURE), "temperature");
    assert_string_equal(reading_type_name(READING_HUMIDITY), "humidity");
    assert_string_equal(reading_type_name(READING_PRESSURE), "pressure");
    assert_string_equal(reading_canonical_unit(READING_TEMPERATURE), "C");
    assert_string_equal(reading_canonical_unit(READING_HUMIDITY), "%");
    assert_string_equal(reading_canonical_unit(READING_PRESSURE), "hPa");
    enum reading_type t = (enum reading_type)99;
    assert_int_equal(reading_type_parse("temperature", &t), 0);
    assert_int_equal(t, READING_TEMPERATURE);
    assert_int_equal(reading_type_parse("humidity", &t), 0);
    assert_int_equal(t, READING_HUMIDITY);
    assert_int_equal(reading_type_parse("pressure", &t), 0);
    assert_int_equal(t, READING_PRESSURE);
    assert_int_equal(reading_type_parse("Temperature", &t), -1);
    assert_int_equal(reading_type_parse("wind", &t), -1);
    assert_int_equal(reading_type_parse("", &t), -1);
}

static void convert_ok(enum reading_type t, const char *unit, double raw, double want, double tol)
{
    double v = NAN;
    const char *u = NULL;
    if (reading_convert(t, unit, raw, &v, &u) != 0)
        fail_msg("%s %.17g %s rejected", reading_type_name(t), raw, unit);
    assert_close(v, want, tol);
    assert_non_null(u);
    assert_string_equal(u, unit);
}

static void convert_bad(enum reading_type t, const char *unit, double raw)
{
    double v = 12345.0;
    const char *u = NULL;
    if (reading_convert(t, unit, raw, &v, &u) != -1)
        fail_msg("%s %.17g %s accepted as %.17g", reading_type_name(t), raw, unit, v);
}

static void test_convert(void **state)
{
    (void)state;
    convert_ok(READING_TEMPERATURE, "F", 71.6, 22.0, 1e-9);
    convert_ok(READING_TEMPERATURE, "F", 32.0, 0.0, 1e-9);
    convert_ok(READING_TEMPERATURE, "F", 212.0, 100.0, 1e-9);
    convert_ok(READING_TEMPERATURE, "F", -40.0, -40.0, 1e-9);
    convert_ok(READING_TEMPERATURE, "F", -459.67, -273.15, 1e-9);   /* absolute zero */
    convert_ok(READING_TEMPERATURE, "K", 300.0, 26.85, 1e-9);
    convert_ok(READING_TEMPERATURE, "K", 273.15, 0.0, 1e-9);
    convert_ok(READING_TEMPERATURE, "K", 0.0, -273.15, 1e-9);        /* absolute zero */
    convert_ok(READING_TEMPERATURE, "C", -273.15, -273.15, 0);
    convert_ok(READING_PRESSURE, "Pa", 101325.0, 1013.25, 1e-9);
    convert_ok(READING_PRESSURE, "kPa", 101.3, 1013.0, 1e-9);
    convert_ok(READING_PRESSURE, "hPa", 1013.25, 1013.25, 0);
    convert_ok(READING_PRESSURE, "hPa", 0.0, 0.0, 0);
    convert_ok(READING_HUMIDITY, "%", 0.0, 0.0, 0);
    convert_ok(READING_HUMIDITY, "%", 100.0, 100.0, 0);

    /* Canonical units are the identity, bit for bit. */
    static const double ident[] = { 0.1, 55.5, 1e-300, 5e-324, 1.0 / 3.0, 99.99999999999999 };
    for (size_t i = 0; i < sizeof ident / sizeof ident[0]; i++) {
        double v;
        const char *u;
        assert_int_equal(reading_convert(READING_HUMIDITY, "%", ident[i], &v, &u), 0);
        assert_same_double(v, ident[i], "humidity identity");
        assert_int_equal(reading_convert(READING_TEMPERATURE, "C", -ident[i], &v, &u), 0);
        assert_same_double(v, -ident[i], "temperature identity");
        assert_int_equal(reading_convert(READING_PRESSURE, "hPa", ident[i], &v, &u), 0);
        assert_same_double(v, ident[i], "pressure identity");
    }
}

static void test_convert_impossible(void **state)
{
    (void)state;
    convert_bad(READING_TEMPERATURE, "C", -300.0);
    convert_bad(READING_TEMPERATURE, "C", -273.16);
    convert_bad(READING_TEMPERATURE, "K", -0.01);
    convert_bad(READING_TEMPERATURE, "K", -1.0);
    convert_bad(READING_TEMPERATURE, "F", -460.0);
    convert_bad(READING_HUMIDITY, "%", 101.0);
    convert_bad(READING_HUMIDITY, "%", 100.001);
    convert_bad(READING_HUMIDITY, "%", -0.5);
    convert_bad(READING_PRESSURE, "hPa", -1.0);
    convert_bad(READING_PRESSURE, "Pa", -1.0);
    convert_bad(READING_PRESSURE, "kPa", -0.001);
    convert_bad(READING_TEMPERATURE, "C", NAN);
    convert_bad(READING_TEMPERATURE, "C", INFINITY);
    convert_bad(READING_PRESSURE, "hPa", INFINITY);
    convert_bad(READING_HUMIDITY, "%", NAN);
}

/* What reading_convert accepts is stored as it returns it: the stored value
 * itself must be physically possible, also at the edges where the code
 * allows for rounding. */
static void test_convert_result_is_possible(void **state)
{
    (void)state;
    static const struct {
        enum reading_type t;
        const char *unit;
        double raw;
        int must_accept;
    } cases[] = {
        { READING_TEMPERATURE, "F", -459.67, 1 },          /* absolute zero */
        { READING_TEMPERATURE, "K", 0.0, 1 },
        { READING_TEMPERATURE, "C", -273.15, 1 },
        { READING_PRESSURE, "Pa", 0.0, 1 },
        { READING_PRESSURE, "kPa", 0.0, 1 },
        { READING_HUMIDITY, "%", 0.0, 1 },
        { READING_HUMIDITY, "%", 100.0, 1 },
        { READING_TEMPERATURE, "C", -273.1500000005, 0 },
        { READING_TEMPERATURE, "K", -1e-10, 0 },
        { READING_HUMIDITY, "%", 100.0000000005, 0 },
        { READING_HUMIDITY, "%", -5e-10, 0 },
        { READING_PRESSURE, "hPa", -9e-10, 0 },
        { READING_PRESSURE, "Pa", -1e-8, 0 },
    };
    static const double lo[] = { -273.15, 0.0, 0.0 }, hi_h = 100.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = NAN;
        const char *u = NULL;
        int rc = reading_convert(cases[i].t, cases[i].unit, cases[i].raw, &v, &u);
        if (rc != 0) {
            if (cases[i].must_accept)
                fail_msg("%.17g %s rejected", cases[i].raw, cases[i].unit);
            continue;
        }
        if (v < lo[cases[i].t] || (cases[i].t == READING_HUMIDITY && v > hi_h))
            fail_msg("%s %.17g %s accepted as %.17g, which is not physically possible",
                     reading_type_name(cases[i].t), cases[i].raw, cases[i].unit, v);
    }
}

static void test_convert_unknown_unit(void **state)
{
    (void)state;
    convert_bad(READING_TEMPERATURE, "%", 20.0);
    convert_bad(READING_TEMPERATURE, "hPa", 20.0);
    convert_bad(READING_TEMPERATURE, "c", 20.0);      /* case matters */
    convert_bad(READING_TEMPERATURE, "", 20.0);
    convert_bad(READING_TEMPERATURE, "degC", 20.0);
    convert_bad(READING_HUMIDITY, "C", 20.0);
    convert_bad(READING_HUMIDITY, "hPa", 20.0);
    convert_bad(READING_PRESSURE, "psi", 20.0);
    convert_bad(READING_PRESSURE, "C", 20.0);
    convert_bad(READING_PRESSURE, "HPA", 20.0);
    convert_bad((enum reading_type)7, "C", 20.0);
}

static void test_sensor_id_valid(void **state)
{
    (void)state;
    char id[80];
    memset(id, 'a', sizeof id);
    assert_true(reading_sensor_id_valid(id, 1));
    assert_true(reading_sensor_id_valid(id, 64));
    assert_false(reading_sensor_id_valid(id, 65));
    assert_false(reading_sensor_id_valid(id, 0));
    assert_true(reading_sensor_id_valid("AZaz09._:-", 10));
    assert_false(reading_sensor_id_valid("a b", 3));
    assert_false(reading_sensor_id_valid("a/b", 3));
    assert_false(reading_sensor_id_valid("a\"b", 3));
    assert_false(reading_sensor_id_valid("a\0b", 3));
    assert_false(reading_sensor_id_valid("caf\xc3\xa9", 5));
    /* Only len bytes are looked at. */
    assert_true(reading_sensor_id_valid("ab cd", 2));
    /* Every byte value, against the alphabet written out. */
    for (int c = 0; c < 256; c++) {
        char one = (char)c;
        int want = c && strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789._:-", c) != NULL;
        if (reading_sensor_id_valid(&one, 1) != want)
            fail_msg("byte 0x%02x: valid %d, expected %d", c, !want, want);
    }
}

/* --- parse_body: good input ---------------------------------------------- */

static void test_body_single_object(void **state)
{
    (void)state;
    struct reading r = accept_one(
        "{\"sensor_id\":\"s-1\",\"type\":\"temperature\",\"value\":71.6,\"unit\":\"F\","
        "\"ts\":\"2026-11-22T09:59:00.5Z\",\"tags\":{\"room\":\"a\"}}",
        "{\"room\":\"a\"}");
    assert_string_equal(r.sensor_id, "s-1");
    assert_int_equal(r.type, READING_TEMPERATURE);
    assert_close(r.value, 22.0, 1e-9);
    assert_same_double(r.raw_value, 71.6, "raw_value");
    assert_string_equal(r.raw_unit, "F");
    assert_i64(r.ts_us, ts("2026-11-22T09:59:00.5Z"), "ts_us");
    assert_i64(r.received_at_us, NOW, "received_at_us");
}

static void test_body_every_conversion(void **state)
{
    (void)state;
    static const struct {
        const char *type, *unit;
        double raw, want, tol;
        enum reading_type t;
        const char *raw_unit;
    } cases[] = {
        { "temperature", "\"F\"", 71.6, 22.0, 1e-9, READING_TEMPERATURE, "F" },
        { "temperature", "\"K\"", 300, 26.85, 1e-9, READING_TEMPERATURE, "K" },
        { "temperature", "\"C\"", 21.5, 21.5, 0, READING_TEMPERATURE, "C" },
        { "temperature", NULL, 21.5, 21.5, 0, READING_TEMPERATURE, "C" },
        { "temperature", "null", -273.15, -273.15, 0, READING_TEMPERATURE, "C" },
        { "humidity", "\"%\"", 45.25, 45.25, 0, READING_HUMIDITY, "%" },
        { "humidity", NULL, 45.25, 45.25, 0, READING_HUMIDITY, "%" },
        { "pressure", "\"Pa\"", 101325, 1013.25, 1e-9, READING_PRESSURE, "Pa" },
        { "pressure", "\"kPa\"", 101.3, 1013.0, 1e-9, READING_PRESSURE, "kPa" },
        { "pressure", "\"hPa\"", 1013.25, 1013.25, 0, READING_PRESSURE, "hPa" },
        { "pressure", NULL, 987.5, 987.5, 0, READING_PRESSURE, "hPa" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        if (cases[i].unit)
            snprintf(body, sizeof body,
                     "{\"sensor_id\":\"s\",\"type\":\"%s\",\"value\":%.17g,\"unit\":%s}",
                     cases[i].type, cases[i].raw, cases[i].unit);
        else
            snprintf(body, sizeof body, "{\"sensor_id\":\"s\",\"type\":\"%s\",\"value\":%.17g}",
                     cases[i].type, cases[i].raw);
        struct reading r = accept_one(body, NULL);
        assert_int_equal(r.type, cases[i].t);
        assert_close(r.value, cases[i].want, cases[i].tol);
        assert_same_double(r.raw_value, cases[i].raw, body);
        assert_non_null(r.raw_unit);
        assert_string_equal(r.raw_unit, cases[i].raw_unit);
        if (cases[i].tol == 0)
            assert_same_double(r.value, cases[i].raw, "canonical is the identity");
    }
}

static void test_body_integer_value(void **state)
{
    (void)state;
    struct reading r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":42}", NULL);
    assert_true(r.value == 42.0);
    assert_true(r.raw_value == 42.0);
}

static void test_body_array_appends_in_order(void **state)
{
    (void)state;
    struct reading_batch b;
    struct reading_error err;
    prefill(&b);
    const char *body =
        "[{\"sensor_id\":\"a\",\"type\":\"temperature\",\"value\":1},"
        " {\"sensor_id\":\"b\",\"type\":\"humidity\",\"value\":2,\"tags\":{\"x\":\"1\"}},"
        " {\"sensor_id\":\"c\",\"type\":\"pressure\",\"value\":3,\"unit\":\"kPa\"}]";
    assert_int_equal(reading_parse_body(body, strlen(body), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 4);
    assert_string_equal(b.v[0].sensor_id, "sentinel");
    assert_string_equal(b.v[0].tags_json, "{\"k\":\"v\"}");
    assert_string_equal(b.v[1].sensor_id, "a");
    assert_string_equal(b.v[2].sensor_id, "b");
    assert_string_equal(b.v[3].sensor_id, "c");
    assert_int_equal(b.v[1].type, READING_TEMPERATURE);
    assert_int_equal(b.v[2].type, READING_HUMIDITY);
    assert_int_equal(b.v[3].type, READING_PRESSURE);
    assert_true(b.v[3].value == 30.0);
    assert_null(b.v[1].tags_json);
    assert_same_tags(b.v[2].tags_json, "{\"x\":\"1\"}");
    assert_null(b.v[3].tags_json);
    for (size_t i = 1; i < 4; i++) {
        assert_i64(b.v[i].ts_us, NOW, "ts defaults to now");
        assert_i64(b.v[i].received_at_us, NOW, "received_at");
    }
    reading_batch_free(&b);
}

static void test_body_max_readings(void **state)
{
    (void)state;
    const struct reading_limits two = { 2, 300 * US };
    const char *r = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}";
    const char *r2 = "{\"sensor_id\":\"t\",\"type\":\"humidity\",\"value\":1}";
    char body[512];
    snprintf(body, sizeof body, "[%s,%s]", r, r2);
    struct reading_batch b;
    accept_into(body, &two, &b);
    assert_int_equal(b.n, 2);
    reading_batch_free(&b);
    snprintf(body, sizeof body, "[%s,%s,%s]", r, r2, r);
    expect_reject_n(BODY, body, strlen(body), &two, -1, "");
}

static void test_body_out_of_range_names_the_value(void **state)
{
    (void)state;
    const char *m = reject("{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":100.0000001}",
                           0, "value");
    assert_non_null(strstr(m, "100.0000001 % is out of range for humidity"));
}

static void *no_memory(size_t n)
{
    (void)n;
    return NULL;
}

/* Out of memory is not the input's fault: flagged, so that ingestion
 * answers 503 (not 400) and storage retries (no dead letter). */
static void test_out_of_memory_is_flagged(void **state)
{
    (void)state;
    struct reading_batch b = { 0 };
    struct reading_error err;
    /* An unknown member: past the plain reader, so through jansson. */
    const char *body = "{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1,\"x\":2}";
    json_set_alloc_funcs(no_memory, free);
    int rc = reading_parse_body(body, strlen(body), &LIM, NOW, &b, &err);
    json_set_alloc_funcs(malloc, free);
    assert_int_equal(rc, -1);
    assert_int_equal(err.out_of_memory, 1);
    assert_int_equal(b.n, 0);
    assert_int_equal(reading_parse_body("[]", 2, &LIM, NOW, &b, &err), -1);
    assert_int_equal(err.out_of_memory, 0);
    reading_batch_free(&b);
}

static void test_body_same_key_twice(void **state)
{
    (void)state;
    struct reading_batch b;
    /* Without ts both get the time of receipt: one row for two readings. */
    const char *m = reject("[{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1},"
                           " {\"sensor_id\":\"b\",\"type\":\"humidity\",\"value\":2},"
                           " {\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":3}]",
                           2, "ts");
    assert_non_null(strstr(m, "reading 0"));
    /* ts equal once truncated to the microsecond; the lowest pair is named. */
    m = reject("[{\"sensor_id\":\"c\",\"type\":\"humidity\",\"value\":1},"
               " {\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1,"
               "\"ts\":\"2026-01-01T00:00:00.0000001Z\"},"
               " {\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":2,"
               "\"ts\":\"2026-01-01T00:00:00.0000002Z\"},"
               " {\"sensor_id\":\"c\",\"type\":\"humidity\",\"value\":2}]", 2, "ts");
    assert_non_null(strstr(m, "reading 1"));
    /* Another type, sensor or ts is another reading. */
    accept_into("[{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1},"
                " {\"sensor_id\":\"a\",\"type\":\"temperature\",\"value\":1},"
                " {\"sensor_id\":\"b\",\"type\":\"humidity\",\"value\":1},"
                " {\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1,"
                "\"ts\":\"2026-01-01T00:00:00.000001Z\"}]", &LIM, &b);
    assert_int_equal(b.n, 4);
    reading_batch_free(&b);
}

static void test_body_large_array(void **state)
{
    (void)state;
    /* 1000 readings (the limit): the batch grows well past its first size. */
    size_t cap = 1000 * 80 + 16, len = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    body[len++] = '[';
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"sensor_id\":\"s%d\",\"type\":\"humidity\",\"value\":%d}",
                                i ? "," : "", i, i % 101);
    body[len++] = ']';
    body[len] = '\0';
    struct reading_batch b;
    accept_into(body, &LIM, &b);
    assert_int_equal(b.n, 1000);
    assert_string_equal(b.v[999].sensor_id, "s999");
    assert_true(b.v[999].value == 999 % 101);
    /* One more is one too many. */
    body[len - 1] = ',';
    len += (size_t)snprintf(body + len, cap - len,
                            "{\"sensor_id\":\"x\",\"type\":\"humidity\",\"value\":1}]");
    expect_reject_n(BODY, body, len, &LIM, -1, "");
    reading_batch_free(&b);
    free(body);
}

static void test_body_len_is_honoured(void **state)
{
    (void)state;
    /* The body is not NUL-terminated (an HTTP buffer): only len bytes count. */
    const char text[] = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}";
    size_t n = sizeof text - 1;
    char *body = malloc(n);
    assert_non_null(body);
    memcpy(body, text, n);
    struct reading_batch b = { 0 };
    struct reading_error err;
    assert_int_equal(reading_parse_body(body, n, &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    reading_batch_free(&b);
    free(body);
    /* Bytes after len are not looked at; a len cutting the object is truncated JSON. */
    const char more[] = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}garbage";
    assert_int_equal(reading_parse_body(more, n, &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    reading_batch_free(&b);
    expect_reject_n(BODY, more, n - 1, &LIM, -1, "");
}

static void test_body_unknown_fields_ignored(void **state)
{
    (void)state;
    struct reading r = accept_one(
        "{\"sensor_id\":\"s\",\"extra\":{\"a\":[1,2,{\"b\":null}]},\"type\":\"humidity\","
        "\"value\":10,\"battery\":3.3,\"fw\":\"1.2\"}",
        NULL);
    assert_string_equal(r.sensor_id, "s");
    assert_true(r.value == 10.0);
}

/* --- parse_body: the body as a whole ------------------------------------- */

static void test_body_not_object_or_array(void **state)
{
    (void)state;
    reject("42", -1, "");
    reject("\"a string\"", -1, "");
    reject("null", -1, "");
    reject("true", -1, "");
    reject("[]", -1, "");
    reject("  [ ]  ", -1, "");
}

static void test_body_not_json(void **state)
{
    (void)state;
    reject("", -1, "");
    reject("hello", -1, "");
    reject("sensor_id=s&value=1", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1", -1, "");  /* truncated */
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":", -1, "");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1} {}", -1, "");
    reject("{'sensor_id':'s','type':'humidity','value':1}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,}", -1, "");
}

static void test_body_duplicate_keys(void **state)
{
    (void)state;
    reject("{\"sensor_id\":\"a\",\"sensor_id\":\"b\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1,\"value\":2}", -1, "");
    reject("[{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1},"
           "{\"sensor_id\":\"b\",\"type\":\"humidity\",\"value\":1,\"type\":\"humidity\"}]",
           -1, "");
    reject("{\"sensor_id\":\"a\",\"type\":\"humidity\",\"value\":1,"
           "\"tags\":{\"k\":\"1\",\"k\":\"2\"}}", -1, "");
}

static void test_body_non_finite_numbers(void **state)
{
    (void)state;
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":NaN}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":Infinity}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-Infinity}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":nan}", -1, "");
    /* Too large for a double. */
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1e999}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-1e999}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1e999,\"x\":1}", -1, "");
    /* Too large for an integer, and out of range as a number anyway. */
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":99999999999999999999999}",
           -1, "");
}

static void test_body_bad_bytes(void **state)
{
    (void)state;
    /* "\u0000" in sensor_id: never becomes a truncated C string. */
    reject("{\"sensor_id\":\"ab\\u0000cd\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"\\u0000\",\"type\":\"humidity\",\"value\":1}", -1, "");
    /* A raw NUL byte inside the body (len counts it). */
    static const char raw_nul[] = "{\"sensor_id\":\"ab\0cd\",\"type\":\"humidity\",\"value\":1}";
    expect_reject_n(BODY, raw_nul, sizeof raw_nul - 1, &LIM, -1, "");
    /* Invalid UTF-8: a lone continuation byte, 0xff, an overlong '/', a
     * truncated sequence, a lone surrogate escape. */
    reject("{\"sensor_id\":\"s\\u00e9\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"s\x80\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"s\xff\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"s\xc0\xaf\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"s\xe2\x82\",\"type\":\"humidity\",\"value\":1}", -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"k\":\"\xff\"}}",
           -1, "");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"note\":\"\xed\xa0\x80\"}",
           -1, "");
    reject("{\"sensor_id\":\"s\\ud800\",\"type\":\"humidity\",\"value\":1}", -1, "");
}

/* --- parse_body: one field at a time ------------------------------------- */

static void test_body_missing_fields(void **state)
{
    (void)state;
    reject("{\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"s\",\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\"}", 0, "value");
    reject("{}", 0, "sensor_id");
    /* null is not a value for a required field */
    reject("{\"sensor_id\":null,\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"s\",\"type\":null,\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":null}", 0, "value");
    /* In an array the index is the reading's position. */
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},"
           " {\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},"
           " {\"sensor_id\":\"s\",\"type\":\"humidity\"}]", 2, "value");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},"
           " {\"type\":\"humidity\",\"value\":1}]", 1, "sensor_id");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},"
           " {\"sensor_id\":\"s\",\"value\":1}]", 1, "type");
}

static void test_body_wrong_types(void **state)
{
    (void)state;
    reject("{\"sensor_id\":5,\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":[\"s\"],\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"s\",\"type\":1,\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":\"22\"}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":true}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":[1]}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"unit\":5}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":1795341600}", 0, "ts");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":{}}", 0, "ts");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":\"a=b\"}", 0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":[\"a\"]}", 0, "tags");
    /* An array element that is not an object. */
    reject("[1]", 0, "");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},\"s\"]", 1, "");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},null]", 1, "");
    reject("[[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}]]", 0, "");
}

static void test_body_sensor_id(void **state)
{
    (void)state;
    char id[70], body[200];
    memset(id, 'x', sizeof id);
    id[64] = '\0';
    snprintf(body, sizeof body, "{\"sensor_id\":\"%s\",\"type\":\"humidity\",\"value\":1}", id);
    struct reading r = accept_one(body, NULL);
    assert_string_equal(r.sensor_id, id);
    assert_int_equal(strlen(r.sensor_id), 64);

    id[64] = 'x';
    id[65] = '\0';
    snprintf(body, sizeof body, "{\"sensor_id\":\"%s\",\"type\":\"humidity\",\"value\":1}", id);
    reject(body, 0, "sensor_id");

    r = accept_one("{\"sensor_id\":\"Az09._:-\",\"type\":\"humidity\",\"value\":1}", NULL);
    assert_string_equal(r.sensor_id, "Az09._:-");
    /* An escaped letter is still the letter. */
    r = accept_one("{\"sensor_id\":\"\\u0041b\",\"type\":\"humidity\",\"value\":1}", NULL);
    assert_string_equal(r.sensor_id, "Ab");

    reject("{\"sensor_id\":\"a b\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\" s\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"a/b\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"a\\\"b\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"a\\nb\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
    reject("{\"sensor_id\":\"caf\xc3\xa9\",\"type\":\"humidity\",\"value\":1}", 0, "sensor_id");
}

static void test_body_unknown_type_or_unit(void **state)
{
    (void)state;
    reject("{\"sensor_id\":\"s\",\"type\":\"wind\",\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"Temperature\",\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"\",\"value\":1}", 0, "type");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1,\"unit\":\"%\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1,\"unit\":\"hPa\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1,\"unit\":\"c\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":1,\"unit\":\"\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"unit\":\"C\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"pressure\",\"value\":1,\"unit\":\"psi\"}", 0, "unit");
    reject("{\"sensor_id\":\"s\",\"type\":\"pressure\",\"value\":1,\"unit\":\"F\"}", 0, "unit");
}

static void test_body_impossible_values(void **state)
{
    (void)state;
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-300}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-300,\"unit\":\"C\"}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-1,\"unit\":\"K\"}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-500,\"unit\":\"F\"}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":101}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":-1}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"pressure\",\"value\":-1}", 0, "value");
    reject("{\"sensor_id\":\"s\",\"type\":\"pressure\",\"value\":-5,\"unit\":\"Pa\"}", 0, "value");
    reject("[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":100},"
           " {\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":100.5}]", 1, "value");
    /* The limits themselves are possible. */
    accept_one("{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":0,\"unit\":\"K\"}", NULL);
    accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":0}", NULL);
    accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":100}", NULL);
    accept_one("{\"sensor_id\":\"s\",\"type\":\"pressure\",\"value\":0}", NULL);
}

static void test_body_ts(void **state)
{
    (void)state;
    struct reading r;
    /* Absent or null: now. */
    r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}", NULL);
    assert_i64(r.ts_us, NOW, "ts absent");
    r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":null}", NULL);
    assert_i64(r.ts_us, NOW, "ts null");
    /* With Z and with an offset: the same instant. */
    r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                   "\"ts\":\"2026-11-22T09:00:00.123456789Z\"}", NULL);
    assert_i64(r.ts_us, NOW - 3600 * US + 456, "ts Z");
    r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                   "\"ts\":\"2026-11-22T14:30:00.123+05:30\"}", NULL);
    assert_i64(r.ts_us, NOW - 3600 * US, "ts +05:30");
    assert_i64(r.received_at_us, NOW, "received_at is still now");
    /* Old readings are fine. */
    r = accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                   "\"ts\":\"1969-07-20T20:17:40Z\"}", NULL);
    assert_i64(r.ts_us, -14182940LL * US, "1969");
    /* Without an offset: rejected, saying why. */
    const char *msg = reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                             "\"ts\":\"2026-11-22T10:00:00\"}", 0, "ts");
    assert_contains(msg, "offset");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"yesterday\"}", 0, "ts");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"\"}", 0, "ts");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
           "\"ts\":\"2023-02-29T00:00:00Z\"}", 0, "ts");
}

static void test_body_ts_future_limit(void **state)
{
    (void)state;
    char body[200], t[TS_TEXT_MAX];
    /* Exactly now + max_future is still fine... */
    ts_format(NOW + LIM.max_future_us, t);
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"%s\"}", t);
    struct reading r = accept_one(body, NULL);
    assert_i64(r.ts_us, NOW + LIM.max_future_us, "ts at the limit");
    /* ...one microsecond more is not. */
    ts_format(NOW + LIM.max_future_us + 1, t);
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"%s\"}", t);
    reject(body, 0, "ts");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
           "\"ts\":\"9999-12-31T23:59:59Z\"}", 0, "ts");
    /* The limit is the caller's. */
    const struct reading_limits strict = { 10, 0 };
    ts_format(NOW + 1, t);
    snprintf(body, sizeof body,
             "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1},"
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"%s\"}]", t);
    expect_reject_n(BODY, body, strlen(body), &strict, 1, "ts");
}

static void test_ts_huge_future_limit(void **state)
{
    (void)state;
    /* A caller that means "no limit" may pass INT64_MAX: every valid time is
     * then accepted (and nothing overflows: UBSan would abort here). */
    const struct reading_limits nolimit = { 10, INT64_MAX };
    const char *body = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                       "\"ts\":\"9999-12-31T23:59:59.999999Z\"}";
    struct reading_batch b;
    accept_into(body, &nolimit, &b);
    assert_i64(b.v[0].ts_us, T_MAX, "ts in year 9999");
    const char *legacy = "{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                         "\"time_of_measurement\":\"9999-12-31T23:59:59.999999\"}}";
    struct reading_error err;
    if (reading_parse_legacy(legacy, strlen(legacy), &nolimit, NOW, &b, &err) != 0)
        fail_msg("legacy rejected with max_future_us INT64_MAX: %s %s", err.field, err.message);
    assert_int_equal(b.n, 2);
    assert_i64(b.v[1].ts_us, T_MAX, "legacy ts in year 9999");
    reading_batch_free(&b);
}

static void test_body_tags(void **state)
{
    (void)state;
    struct reading_batch b;
    accept_into("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
                "\"tags\":{ \"room\" : \"a\", \"floor\":\"2\", \"q\":\"x\\\"y\\\\z\","
                "\"unicode\":\"caf\xc3\xa9\"}}", &LIM, &b);
    assert_int_equal(b.n, 1);
    assert_non_null(b.v[0].tags_json);
    /* A compact JSON object of the same string pairs. */
    assert_same_tags(b.v[0].tags_json,
                     "{\"room\":\"a\",\"floor\":\"2\",\"q\":\"x\\\"y\\\\z\","
                     "\"unicode\":\"caf\xc3\xa9\"}");
    assert_null(strstr(b.v[0].tags_json, ": "));
    assert_null(strstr(b.v[0].tags_json, ", "));
    assert_null(strchr(b.v[0].tags_json, '\n'));
    reading_batch_free(&b);

    /* null tags or no tags: none. */
    accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":null}", NULL);
    accept_one("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1}", NULL);

    /* 16 tags are fine, 17 are not. */
    char body[1024], tags[700];
    size_t n = 0;
    for (int i = 0; i < 17; i++)
        n += (size_t)snprintf(tags + n, sizeof tags - n, "%s\"k%d\":\"v%d\"", i ? "," : "", i, i);
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{%s}}", tags);
    reject(body, 0, "tags");
    *strrchr(tags, ',') = '\0';
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{%s}}", tags);
    accept_into(body, &LIM, &b);
    json_error_t je;
    json_t *t = json_loads(b.v[0].tags_json, 0, &je);
    assert_non_null(t);
    assert_int_equal(json_object_size(t), 16);
    json_decref(t);
    reading_batch_free(&b);

    /* Values must be strings. */
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":{\"b\":\"c\"}}}",
           0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":1}}", 0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":true}}", 0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":null}}", 0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":[\"b\"]}}",
           0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"\":\"b\"}}", 0, "tags");
    reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":5}", 0, "tags");
}

/* The tags' compact JSON is byte for byte what json_dumps(JSON_COMPACT)
 * writes (reading.c serialises them itself, for speed): every control
 * character, quotes, backslashes, '/', DEL and UTF-8 of each length, in
 * keys and values, in the order sent. */
static void test_body_tags_as_jansson_writes_them(void **state)
{
    (void)state;
    char tags[4096];
    size_t n = 0;
    n += (size_t)snprintf(tags + n, sizeof tags - n, "{\"z\":\"last\",\"ctl\":\"");
    for (int c = 1; c < 0x20; c++)
        n += (size_t)snprintf(tags + n, sizeof tags - n, "\\u%04x", c);
    n += (size_t)snprintf(tags + n, sizeof tags - n,
                          "\",\"q\\\"k\\\\\":\"a\\\"b\\\\c\\/d/e\x7f\","
                          "\"caf\xc3\xa9\":\"\xe2\x82\xac \xf0\x9f\x8c\xa1 \\u00e9\\ud83c\\udf21\","
                          "\"a\":\"\"}");
    char body[5000];
    snprintf(body, sizeof body, "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
             "\"tags\":%s}", tags);
    struct reading_batch b;
    accept_into(body, &LIM, &b);
    json_error_t je;
    json_t *t = json_loads(tags, 0, &je);
    assert_non_null(t);
    char *want = json_dumps(t, JSON_COMPACT);
    assert_non_null(want);
    assert_string_equal(b.v[0].tags_json, want);
    /* And what storage decodes from ingestion's message is the same again. */
    struct reading_msg m;
    assert_int_equal(reading_msg_init(&m, "ing-1"), 0);
    assert_int_equal(reading_msg_add(&m, &b.v[0]), 0);
    assert_int_equal(reading_msg_finish(&m), 0);
    struct reading_batch out = { 0 };
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    assert_int_equal(reading_decode_message(m.buf, m.len, by, sizeof by, NULL, 0, &out, &err), 0);
    assert_string_equal(out.v[0].tags_json, want);
    reading_batch_free(&out);
    reading_msg_free(&m);
    free(want);
    json_decref(t);
    reading_batch_free(&b);
}

static void test_body_tag_lengths(void **state)
{
    (void)state;
    char k[300], v[300], body[1024];
    memset(k, 'k', sizeof k);
    memset(v, 'v', sizeof v);
    k[256] = v[256] = '\0';
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"%s\":\"%s\"}}", k, v);
    struct reading_batch b;
    accept_into(body, &LIM, &b);
    assert_non_null(b.v[0].tags_json);
    reading_batch_free(&b);
    k[256] = 'k';
    k[257] = '\0';
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"%s\":\"v\"}}", k);
    reject(body, 0, "tags");
    v[256] = 'v';
    v[257] = '\0';
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"k\":\"%s\"}}", v);
    reject(body, 0, "tags");
}

static void test_body_all_or_nothing(void **state)
{
    (void)state;
    /* A valid reading (with tags, so a leak would show) then an invalid one:
     * nothing is appended, and the error points at the second. */
    reject("[{\"sensor_id\":\"ok\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":\"b\"}},"
           " {\"sensor_id\":\"bad id\",\"type\":\"humidity\",\"value\":1}]", 1, "sensor_id");
    reject("[{\"sensor_id\":\"ok\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":\"b\"}},"
           " {\"sensor_id\":\"ok\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":\"b\"}},"
           " {\"sensor_id\":\"ok\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"a\":1}}]",
           2, "tags");

    /* Also when the batch has to grow past its capacity on the way. */
    struct reading_batch b;
    prefill(&b);
    const char *tags_before = b.v[0].tags_json;
    size_t cap = 64 * 100 + 200, len = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    body[len++] = '[';
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "{\"sensor_id\":\"s%d\",\"type\":\"humidity\",\"value\":1,"
                                "\"tags\":{\"i\":\"%d\"}},", i, i);
    len += (size_t)snprintf(body + len, cap - len, "{\"sensor_id\":\"s\",\"type\":\"humidity\"}]");
    struct reading_error err;
    assert_int_equal(reading_parse_body(body, len, &LIM, NOW, &b, &err), -1);
    assert_int_equal(err.index, 40);
    assert_string_equal(err.field, "value");
    assert_sentinel_only(&b, tags_before);
    /* The batch is still usable afterwards. */
    const char *ok = "{\"sensor_id\":\"after\",\"type\":\"humidity\",\"value\":3}";
    assert_int_equal(reading_parse_body(ok, strlen(ok), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.v[0].sensor_id, "sentinel");
    assert_string_equal(b.v[1].sensor_id, "after");
    free(body);
    reading_batch_free(&b);
}

static void test_batch_clear_and_free(void **state)
{
    (void)state;
    struct reading_batch b;
    prefill(&b);
    reading_batch_clear(&b);
    assert_int_equal(b.n, 0);
    /* Still usable after clear. */
    struct reading_error err;
    assert_int_equal(reading_parse_body(SENTINEL, strlen(SENTINEL), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    assert_string_equal(b.v[0].tags_json, "{\"k\":\"v\"}");
    reading_batch_free(&b);
    assert_int_equal(b.n, 0);
    assert_null(b.v);
    reading_batch_free(&b);    /* twice is fine */
    reading_batch_free(NULL);
    /* Still usable after free, too. */
    assert_int_equal(reading_parse_body(SENTINEL, strlen(SENTINEL), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    reading_batch_free(&b);
}

/* --- legacy -------------------------------------------------------------- */

#define LEGACY_ID "c4a1b6d2-1f3e-4b5a-9c8d-7e6f5a4b3c2d"
static const char LEGACY_PLAIN[] =
    "{\"type\":\"Sensor\",\"id\":\"" LEGACY_ID "\",\"content\":{\"temperature_f\":71.6,"
    "\"time_of_measurement\":\"2019-08-30T12:00:00.123456\"}}";

static void check_legacy_reading(const struct reading_batch *b, size_t i)
{
    const struct reading *r = &b->v[i];
    assert_string_equal(r->sensor_id, LEGACY_ID);
    assert_int_equal(r->type, READING_TEMPERATURE);
    assert_close(r->value, 22.0, 1e-9);
    assert_same_double(r->raw_value, 71.6, "legacy raw_value");
    assert_string_equal(r->raw_unit, "F");
    assert_i64(r->ts_us, ts("2019-08-30T12:00:00.123456Z"), "legacy ts (naive is UTC)");
    assert_i64(r->received_at_us, NOW, "legacy received_at");
    assert_null(r->tags_json);
}

static void test_legacy_plain(void **state)
{
    (void)state;
    struct reading_batch b;
    struct reading_error err;
    prefill(&b);
    assert_int_equal(reading_parse_legacy(LEGACY_PLAIN, strlen(LEGACY_PLAIN), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.v[0].sensor_id, "sentinel");
    check_legacy_reading(&b, 1);
    reading_batch_free(&b);
}

/* JSON-encodes s as a JSON string (malloc'ed). */
static char *json_string_of(const char *s)
{
    json_t *str = json_string(s);
    assert_non_null(str);
    char *out = json_dumps(str, JSON_ENCODE_ANY);
    json_decref(str);
    assert_non_null(out);
    return out;
}

static void test_legacy_double_encoded(void **state)
{
    (void)state;
    char *twice = json_string_of(LEGACY_PLAIN);
    assert_int_equal(twice[0], '"');
    struct reading_batch b = { 0 };
    struct reading_error err;
    assert_int_equal(reading_parse_legacy(twice, strlen(twice), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    check_legacy_reading(&b, 0);
    reading_batch_free(&b);
    free(twice);
}

static void test_legacy_variants(void **state)
{
    (void)state;
    struct reading_batch b = { 0 };
    struct reading_error err;
    /* No time: now. */
    const char *no_time = "{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":32}}";
    assert_int_equal(reading_parse_legacy(no_time, strlen(no_time), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    assert_i64(b.v[0].ts_us, NOW, "legacy without time");
    assert_close(b.v[0].value, 0.0, 1e-9);
    reading_batch_clear(&b);
    /* An explicit offset is honoured. */
    const char *offset = "{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":50,"
                         "\"time_of_measurement\":\"2019-08-30T14:00:00.5+02:00\"}}";
    assert_int_equal(reading_parse_legacy(offset, strlen(offset), &LIM, NOW, &b, &err), 0);
    assert_i64(b.v[0].ts_us, ts("2019-08-30T12:00:00.5Z"), "legacy with offset");
    assert_close(b.v[0].value, 10.0, 1e-9);
    reading_batch_free(&b);
}

static void test_legacy_rejected(void **state)
{
    (void)state;
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"bad id\",\"content\":{\"temperature_f\":1}}", 0, "id");
    reject_legacy("{\"type\":\"Sensor\",\"content\":{\"temperature_f\":1}}", 0, "id");
    reject_legacy("{\"type\":\"Sensor\",\"id\":7,\"content\":{\"temperature_f\":1}}", 0, "id");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"\",\"content\":{\"temperature_f\":1}}", 0, "id");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\"}", 0, "content");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":null}", 0, "content");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":\"71.6\"}", 0, "content");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{}}", 0, "content.temperature_f");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":\"71.6\"}}",
                  0, "content.temperature_f");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":-500}}",
                  0, "content.temperature_f");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                  "\"time_of_measurement\":\"yesterday\"}}", 0, "content.time_of_measurement");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                  "\"time_of_measurement\":1567166400}}", 0, "content.time_of_measurement");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                  "\"time_of_measurement\":\"2023-02-29T00:00:00\"}}", 0, "content.time_of_measurement");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                  "\"time_of_measurement\":\"2030-01-01T00:00:00\"}}", 0, "content.time_of_measurement");
    reject_legacy("{\"type\":\"Thermostat\",\"id\":\"abc\",\"content\":{\"temperature_f\":1}}",
                  0, "type");
    /* The body as a whole. */
    reject_legacy("", -1, "");
    reject_legacy("not json", -1, "");
    reject_legacy("42", -1, "");
    reject_legacy("null", -1, "");
    reject_legacy("[]", -1, "");
    reject_legacy("{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1}", -1, "");
    reject_legacy("{\"id\":\"a\",\"id\":\"b\",\"content\":{\"temperature_f\":1}}", -1, "");
    reject_legacy("\"{not json\"", -1, "");
    reject_legacy("\"42\"", -1, "");
    reject_legacy("\"[1]\"", -1, "");
}

static void test_legacy_double_encoded_rejected(void **state)
{
    (void)state;
    char *twice = json_string_of("{\"type\":\"Sensor\",\"id\":\"bad id\",\"content\":{}}");
    reject_legacy(twice, 0, "id");
    free(twice);
    twice = json_string_of("{\"type\":\"Sensor\",\"id\":\"abc\"}");
    reject_legacy(twice, 0, "content");
    free(twice);
    /* Encoded three times is one time too many. */
    char *inner = json_string_of(LEGACY_PLAIN);
    twice = json_string_of(inner);
    reject_legacy(twice, -1, "");
    free(twice);
    free(inner);
}

/* --- MQTT batch message -------------------------------------------------- */

static struct reading mk(const char *id, enum reading_type t, double value, double raw,
                         const char *raw_unit, int64_t ts_us, int64_t recv_us, const char *tags)
{
    struct reading r;
    memset(&r, 0, sizeof r);
    snprintf(r.sensor_id, sizeof r.sensor_id, "%s", id);
    r.type = t;
    r.value = value;
    r.raw_value = raw;
    r.raw_unit = raw_unit;
    r.ts_us = ts_us;
    r.received_at_us = recv_us;
    r.tags_json = (char *)tags;   /* read only by reading_msg_add */
    return r;
}

static void assert_same_reading(const struct reading *got, const struct reading *want, size_t i)
{
    char what[64];
    if (strcmp(got->sensor_id, want->sensor_id) != 0)
        fail_msg("reading %zu: sensor_id %s, want %s", i, got->sensor_id, want->sensor_id);
    assert_int_equal(got->type, want->type);
    snprintf(what, sizeof what, "reading %zu value", i);
    assert_same_double(got->value, want->value, what);
    snprintf(what, sizeof what, "reading %zu raw_value", i);
    assert_same_double(got->raw_value, want->raw_value, what);
    assert_non_null(got->raw_unit);
    assert_string_equal(got->raw_unit, want->raw_unit);
    snprintf(what, sizeof what, "reading %zu ts_us", i);
    assert_i64(got->ts_us, want->ts_us, what);
    snprintf(what, sizeof what, "reading %zu received_at_us", i);
    assert_i64(got->received_at_us, want->received_at_us, what);
    assert_same_tags(got->tags_json, want->tags_json);
}

/* Builds a message of rs, decodes it into a pre-filled batch and checks every
 * field of every reading comes back exactly. */
static void round_trip(const char *by, const struct reading *rs, size_t n)
{
    struct reading_msg *m = &t_msg;
    assert_int_equal(reading_msg_init(m, by), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(reading_msg_add(m, &rs[i]), 0);
    size_t predicted = reading_msg_size(m);
    assert_int_equal(reading_msg_finish(m), 0);
    assert_int_equal(m->len, predicted);
    assert_int_equal(m->count, n);
    assert_non_null(m->buf);
    assert_int_equal(strlen(m->buf), m->len);

    /* It is one JSON object with v 1 and the readings. */
    json_error_t je;
    json_t *root = json_loadb(m->buf, m->len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        fail_msg("message is not JSON: %s -- %s", je.text, m->buf);
    assert_true(json_is_object(root));
    assert_int_equal(json_integer_value(json_object_get(root, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(root, "by")), by);
    assert_int_equal(json_array_size(json_object_get(root, "readings")), n);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(json_object_get(root, "readings"), i);
        assert_true(json_is_integer(json_object_get(o, "ts_us")));
        assert_true(json_is_integer(json_object_get(o, "received_at_us")));
        assert_string_equal(json_string_value(json_object_get(o, "unit")),
                            reading_canonical_unit(rs[i].type));
    }
    json_decref(root);

    /* Decoded from a buffer that is exactly the payload, not NUL-terminated. */
    char *payload = t_buf = malloc(m->len);
    assert_non_null(payload);
    memcpy(payload, m->buf, m->len);
    struct reading_batch *b = &t_batch;
    struct reading_error err;
    char got_by[READING_INSTANCE_MAX + 1];
    prefill(b);
    memset(got_by, 'x', sizeof got_by);
    if (reading_decode_message(payload, m->len, got_by, sizeof got_by, NULL, 0, b, &err) != 0)
        fail_msg("decode failed at %ld %s: %s -- %s", err.index, err.field, err.message, m->buf);
    assert_string_equal(got_by, by);
    assert_int_equal(b->n, n + 1);
    assert_string_equal(b->v[0].sensor_id, "sentinel");
    for (size_t i = 0; i < n; i++)
        assert_same_reading(&b->v[i + 1], &rs[i], i);
    reading_batch_free(b);
    free(payload);
    t_buf = NULL;
    reading_msg_free(m);
}

static void test_msg_round_trip(void **state)
{
    (void)state;
    double f;
    const char *u;
    assert_int_equal(reading_convert(READING_TEMPERATURE, "F", 71.6, &f, &u), 0);
    const struct reading rs[] = {
        mk("s-1", READING_TEMPERATURE, f, 71.6, "F", 1795341600123000, 1795341600200000,
           "{\"room\":\"a\"}"),
        mk("s-2", READING_HUMIDITY, 45.5, 45.5, "%", 1795341600123456, 1795341600200000, NULL),
        mk("s.3:x_y-z", READING_PRESSURE, 1013.25, 101325, "Pa", 1795341600000001,
           1795341600200001, "{\"floor\":\"2\",\"q\":\"x\\\"y\\\\z\",\"u\":\"caf\xc3\xa9\"}"),
        mk("s-4", READING_PRESSURE, 1013.0000000000001, 101.30000000000001, "kPa", 0, 1, "{}"),
        mk("s-5", READING_TEMPERATURE, 26.850000000000023, 300, "K", -1, -1, NULL),
    };
    round_trip("ingestion-1", rs, sizeof rs / sizeof rs[0]);
    round_trip("i", rs, 1);
    round_trip("Az09._:-", rs + 1, 1);
}

/* Both decoders on the same bytes: the same readings, by and rids, or the
 * same error. */
static void decoders_agree(const char *buf, size_t len)
{
    struct reading_batch fast = { 0 }, ref = { 0 };
    struct reading_error ferr, rerr;
    char fby[READING_INSTANCE_MAX + 1] = "", rby[READING_INSTANCE_MAX + 1] = "";
    char frids[40] = "", rrids[40] = "";
    memset(&ferr, 0, sizeof ferr);
    memset(&rerr, 0, sizeof rerr);
    int frc = reading_decode_message(buf, len, fby, sizeof fby, frids, sizeof frids, &fast,
                                     &ferr);
    int rrc = reading_decode_message_jansson(buf, len, rby, sizeof rby, rrids, sizeof rrids,
                                             &ref, &rerr);
    if (frc != rrc)
        fail_msg("decoders disagree (%d, jansson %d: %s) on %.*s", frc, rrc, rerr.message,
                 (int)len, buf);
    if (frc == 0) {
        assert_string_equal(fby, rby);
        assert_string_equal(frids, rrids);
        assert_int_equal(fast.n, ref.n);
        for (size_t i = 0; i < fast.n; i++)
            assert_same_reading(&fast.v[i], &ref.v[i], i);
    } else {
        assert_int_equal(ferr.index, rerr.index);
        assert_string_equal(ferr.field, rerr.field);
        assert_string_equal(ferr.message, rerr.message);
    }
    reading_batch_free(&fast);
    reading_batch_free(&ref);
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* reading_decode_message reads ingestion's own form without jansson, and
 * leaves the rest to reading_decode_message_jansson: for random messages as
 * reading_msg_* write them (tags with escapes and UTF-8 too, request ids
 * cut to fit), and for thousands of one-byte changes of them, the two
 * agree. */
static void test_msg_decoders_agree(void **state)
{
    (void)state;
    static const char *units[][3] = { { "C", "F", "K" }, { "%", "%", "%" },
                                      { "hPa", "Pa", "kPa" } };
    /* As JSON string contents: escapes, UTF-8 raw and escaped, DEL, '/'. */
    static const char *tagtext[] = { "a", "room", "x\\\"y", "b\\\\s", "nl\\n",
                                     "caf\xc3\xa9", "", "\x7f", "k/v", "e\xf0\x9f\x98\x80",
                                     "\\u00e9", "\\u001f" };
    static const char mut[] = "0123456789-+.eE\",:{}[] \\nul\x80\xff";
    uint64_t x = 0x2545F4914F6CDD1DULL;
#define NEXT() xorshift(&x)
    for (int round = 0; round < 300; round++) {
        struct reading_msg m;
        assert_int_equal(reading_msg_init(&m, round % 2 ? "ingestion-1" : "i.2"), 0);
        size_t n = 1 + NEXT() % 5;
        char tags[5][256];
        for (size_t i = 0; i < n; i++) {
            struct reading r;
            memset(&r, 0, sizeof r);
            snprintf(r.sensor_id, sizeof r.sensor_id, "s-%llu", (unsigned long long)(NEXT() % 1000));
            r.type = (enum reading_type)(NEXT() % 3);
            const char *unit = units[r.type][NEXT() % 3];
            switch (NEXT() % 3) {
            case 0: r.raw_value = (double)(int64_t)(NEXT() % 100000) / 100.0; break;
            case 1: r.raw_value = (double)(NEXT() % 1000) / 7.0; break;
            default: r.raw_value = (double)(NEXT() % 50); break;
            }
            if (reading_convert(r.type, unit, r.raw_value, &r.value, &r.raw_unit) < 0) {
                r.raw_value = r.value = 0;
                r.raw_unit = reading_canonical_unit(r.type);
            }
            r.ts_us = (int64_t)(NEXT() % 4000000000000000ULL) - 1000000000000000LL;
            r.received_at_us = 1795341600000000LL + (int64_t)(NEXT() % 1000000);
            if (NEXT() % 3) {
                size_t k = NEXT() % 3, len = 1;
                tags[i][0] = '{';
                for (size_t j = 0; j < k; j++)
                    len += (size_t)snprintf(tags[i] + len, sizeof tags[i] - len,
                                            "%s\"k%zu%s\":\"%s\"", j ? "," : "", j,
                                            NEXT() % 4 ? "" : "\\t",
                                            tagtext[NEXT() % 12]);
                snprintf(tags[i] + len, sizeof tags[i] - len, "}");
                /* Through the HTTP parser, so that tags_json is what it makes. */
                char body[1400];
                snprintf(body, sizeof body, "{\"sensor_id\":\"s\",\"type\":\"humidity\","
                         "\"value\":1,\"tags\":%s}", tags[i]);
                struct reading_batch b = { 0 };
                struct reading_error err;
                if (reading_parse_body(body, strlen(body), &LIM, NOW, &b, &err) == 0) {
                    r.tags_json = b.v[0].tags_json;
                    b.v[0].tags_json = NULL;
                }
                reading_batch_free(&b);
            }
            assert_int_equal(reading_msg_add(&m, &r), 0);
            free(r.tags_json);
            for (unsigned long long j = NEXT() % 4; j > 0; j--) {
                char rid[32];
                snprintf(rid, sizeof rid, "%08llx-%llu", (unsigned long long)(NEXT() & 0xffffffff),
                         j);
                assert_int_equal(reading_msg_add_rid(&m, rid), 0);
            }
        }
        assert_int_equal(reading_msg_finish(&m), 0);
        decoders_agree(m.buf, m.len);
        char *buf = malloc(m.len + 1);
        assert_non_null(buf);
        for (int k = 0; k < 40; k++) {
            size_t at = NEXT() % m.len, len = m.len;
            memcpy(buf, m.buf, m.len);
            switch (NEXT() % 3) {
            case 0: buf[at] = mut[NEXT() % (sizeof mut - 1)]; break;
            case 1: memmove(buf + at, buf + at + 1, m.len - at - 1); len--; break;
            default:
                memmove(buf + at + 1, buf + at, m.len - at);
                buf[at] = mut[NEXT() % (sizeof mut - 1)];
                len++;
                break;
            }
            decoders_agree(buf, len);
        }
        free(buf);
        reading_msg_free(&m);
    }
#undef NEXT
    /* And the edges of what the form allows, one by one. */
#define R0 "{\"v\":1,\"by\":\"i\",\"readings\":[{\"sensor_id\":\"s\",\"type\":\"humidity\"," \
    "\"ts_us\":1,\"value\":50,\"unit\":\"%\",\"raw_value\":50,\"raw_unit\":\"%\"," \
    "\"received_at_us\":2"
    char big[2048], key[300];
    memset(key, 'k', sizeof key);
    static const char *edges[] = {
        R0 "}]}", R0 ",\"tags\":{}}]}", R0 ",\"tags\":null}]}", R0 ",\"tags\":{\"a\":\"1\",\"a\":\"2\"}}]}",
        R0 ",\"tags\":{\"\":\"1\"}}]}", R0 ",\"tags\":{\"a\":1}}]}", R0 "}],\"rids\":[]}",
        R0 "}],\"rids\":[\"a\",\"b c\"]}", R0 "}],\"rids\":null}", R0 "} ]}", R0 "}]} ",
        R0 "}]}x", R0 "},]}", R0 "}],\"x\":1}", "{\"v\":1,\"by\":\"i\",\"readings\":[]}",
        R0 ",\"tags\":{\"a\":\"\\u0041\"}}]}",
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        decoders_agree(edges[i], strlen(edges[i]));
    for (int keylen = 255; keylen <= 258; keylen++) {   /* 256 bytes, at most */
        snprintf(big, sizeof big, "%s,\"tags\":{\"%.*s\":\"%.*s\"}}]}", R0, keylen, key,
                 keylen, key);
        decoders_agree(big, strlen(big));
    }
    for (int ntags = 16; ntags <= 17; ntags++) {       /* 16 tags, at most */
        size_t len = (size_t)snprintf(big, sizeof big, "%s,\"tags\":{", R0);
        for (int t = 0; t < ntags; t++)
            len += (size_t)snprintf(big + len, sizeof big - len, "%s\"k%d\":\"v\"", t ? "," : "", t);
        snprintf(big + len, sizeof big - len, "}}]}");
        decoders_agree(big, strlen(big));
    }
#undef R0
}

/* Both body parsers on the same bytes: the same readings, or the same
 * error. (Under a limit of 4 readings, so that "too many" is reached.) */
static void body_parsers_agree(const char *buf, size_t len, int *accepted)
{
    static const struct reading_limits lim4 = { 4, 300 * US };
    struct reading_batch fast = { 0 }, ref = { 0 };
    struct reading_error ferr, rerr;
    memset(&ferr, 0, sizeof ferr);
    memset(&rerr, 0, sizeof rerr);
    int frc = reading_parse_body(buf, len, &lim4, NOW, &fast, &ferr);
    int rrc = reading_parse_body_jansson(buf, len, &lim4, NOW, &ref, &rerr);
    if (frc != rrc)
        fail_msg("body parsers disagree (%d, jansson %d: %s) on %.*s", frc, rrc, rerr.message,
                 (int)len, buf);
    if (frc == 0) {
        assert_int_equal(fast.n, ref.n);
        for (size_t i = 0; i < fast.n; i++)
            assert_same_reading(&fast.v[i], &ref.v[i], i);
        ++*accepted;
    } else {
        assert_int_equal(ferr.index, rerr.index);
        assert_string_equal(ferr.field, rerr.field);
        assert_string_equal(ferr.message, rerr.message);
        assert_int_equal(fast.n, 0);
    }
    reading_batch_free(&fast);
    reading_batch_free(&ref);
}

/* reading_parse_body reads plain readings without jansson and leaves the
 * rest to reading_parse_body_jansson: for random bodies as sensors write
 * them (members in any order, whitespace, null, unknown members, escapes,
 * UTF-8, numbers of every form, times with offsets) and thousands of
 * one-byte changes of them, the two agree; and most random bodies are
 * accepted, so that agreement is not only on refusals. */
static void test_body_parsers_agree(void **state)
{
    (void)state;
    static const char *types[] = { "temperature", "humidity", "pressure", "wind", "Temperature" };
    static const char *units[] = { "C", "F", "K", "%", "hPa", "Pa", "kPa", "mbar", "c" };
    static const char *values[] = { "21.5", "-3", "0", "-0", "-0.0", "1e2", "2.5E-1", "45",
                                    "1013.25", "101325", "99.99999999999999", "1e400", "-1e-400",
                                    "9223372036854775807", "9223372036854775808", "01", "1.",
                                    "\"20\"", "null", "true", "-273.15", "-274" };
    static const char *stamps[] = { "2026-11-22T09:59:00Z", "2026-11-22T10:00:00.123456Z",
                                    "2026-11-22T11:59:00+02:00", "2026-11-22T10:00:00.1234567Z",
                                    "2026-11-22 10:00:00Z", "2030-01-01T00:00:00Z", "yesterday",
                                    "2026-11-22T09:00:00\\u005a" };
    static const char *tagtext[] = { "a", "room", "x\\\"y", "caf\xc3\xa9", "", "\x7f", "k/v",
                                     "\\u00e9", "lab 2" };
    static const char *ws[] = { "", "", "", " ", "\n  ", "\t", "\r\n" };
    static const char mut[] = "0123456789-+.eE\",:{}[] \\nul\x80\xff\t";
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int accepted = 0, valid = 0;
#define NEXT() xorshift(&x)
#define WS() ws[NEXT() % (sizeof ws / sizeof ws[0])]
    for (int round = 0; round < 400; round++) {
        char body[4096];
        size_t len = 0, n = NEXT() % 10 ? 1 + NEXT() % 4 : 5;   /* 5: over lim4 */
        int array = n > 1 || NEXT() % 2;
#define PUT(...) (len += (size_t)snprintf(body + len, sizeof body - len, __VA_ARGS__))
        PUT("%s%s", WS(), array ? "[" : "");
        for (size_t i = 0; i < n; i++) {
            int typ = NEXT() % 16 ? (int)(NEXT() % 3) : (int)(NEXT() % 5);
            char member[8][600];   /* at most 8: sensor_id .. tags, note, value again */
            int m = 0;
            snprintf(member[m++], sizeof member[0], "\"sensor_id\":%s\"%s-%zu\"", WS(),
                     NEXT() % 20 ? "s" : "bad id", NEXT() % 8 ? i : 0);
            snprintf(member[m++], sizeof member[0], "\"type\":\"%s\"", types[typ]);
            static const char *fitting[3][6] = {
                { "21.5", "-3", "0", "-0", "1e1", "2.5E-1" },
                { "45", "0", "100", "-0.0", "99.99999999999999", "1e2" },
                { "1013.25", "0", "101325", "950", "1E3", "0.5e4" } };
            snprintf(member[m++], sizeof member[0], "\"value\":%s",
                     NEXT() % 6 ? fitting[typ < 3 ? typ : 0][NEXT() % 6] : values[NEXT() % 22]);
            if (NEXT() % 2) {
                static const char *fit[3][3] = { { "C", "F", "K" }, { "%", "%", "%" },
                                                 { "hPa", "Pa", "kPa" } };
                const char *u = NEXT() % 6 ? fit[typ < 3 ? typ : 0][NEXT() % 3]
                                           : units[NEXT() % 9];
                if (NEXT() % 10)
                    snprintf(member[m++], sizeof member[0], "\"unit\":\"%s\"", u);
                else
                    snprintf(member[m++], sizeof member[0], "\"unit\":null");
            }
            if (NEXT() % 3) {
                unsigned pick = (unsigned)(NEXT() % 12);
                if (pick == 0)
                    snprintf(member[m++], sizeof member[0], "\"ts\":null");
                else if (pick == 1)
                    snprintf(member[m++], sizeof member[0], "\"ts\":%s", stamps[0]);
                else
                    snprintf(member[m++], sizeof member[0], "\"ts\":%s\"%s\"", WS(),
                             stamps[pick < 8 ? NEXT() % 3 : NEXT() % 8]);
            }
            if (NEXT() % 3) {
                size_t k = NEXT() % 3, tl = 0;
                char *t = member[m++];
                tl += (size_t)snprintf(t, 600, "\"tags\":{%s", WS());
                for (size_t j = 0; j < k; j++)
                    tl += (size_t)snprintf(t + tl, 600 - tl, "%s\"k%zu\"%s:%s\"%s\"",
                                           j ? "," : "", NEXT() % 5 ? j : 0, WS(), WS(),
                                           tagtext[NEXT() % 9]);
                snprintf(t + tl, 600 - tl, "%s}", WS());
            }
            if (NEXT() % 10 == 0)
                snprintf(member[m++], sizeof member[0], "\"note\":\"x\"");
            if (NEXT() % 15 == 0)
                snprintf(member[m++], sizeof member[0], "\"value\":1");
            for (int j = m - 1; j > 0; j--) {   /* any order */
                int o = (int)(NEXT() % (uint64_t)(j + 1));
                char tmp[600];
                memcpy(tmp, member[j], sizeof tmp);
                memcpy(member[j], member[o], sizeof tmp);
                memcpy(member[o], tmp, sizeof tmp);
            }
            PUT("%s%s{%s", i ? "," : "", WS(), WS());
            for (int j = 0; j < m; j++)
                PUT("%s%s%s", j ? "," : "", member[j], WS());
            PUT("}");
        }
        PUT("%s%s%s", WS(), array ? "]" : "", WS());
#undef PUT
        assert_true(len < sizeof body);
        int before = accepted;
        body_parsers_agree(body, len, &accepted);
        valid += accepted - before;
        char buf[4200];
        for (int k = 0; k < 30; k++) {
            size_t at = NEXT() % len, blen = len;
            memcpy(buf, body, len);
            switch (NEXT() % 3) {
            case 0: buf[at] = mut[NEXT() % (sizeof mut - 1)]; break;
            case 1: memmove(buf + at, buf + at + 1, len - at - 1); blen--; break;
            default:
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = mut[NEXT() % (sizeof mut - 1)];
                blen++;
                break;
            }
            body_parsers_agree(buf, blen, &accepted);
        }
    }
#undef WS
#undef NEXT
    /* Not only refusals: many generated bodies are valid. */
    if (valid < 100)
        fail_msg("only %d of 400 generated bodies accepted", valid);
    /* And the edges, one by one. */
    static const char *edges[] = {
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50}",
        " {\"value\":50 , \"type\" : \"humidity\",\"sensor_id\":\"s\"}\n",
        "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50}]",
        "[]", "{}", "[{}]", "", " ", "null", "1", "\"s\"",
        "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50},]",
        "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50}]]",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50}x",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"sensor_id\":\"t\"}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"unit\":null,\"ts\":null,"
        "\"tags\":null}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"unit\":nul}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"tags\":{}}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"tags\":{\"a\":\"1\",\"a\":\"2\"}}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"tags\":{\"\":\"1\"}}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"tags\":{\"a\":1}}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"tags\":{ \"a\" : \"1\" , \"b\":\"2\" }}",
        "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"ts\":\"2026-11-22T10:00:00Z\"},"
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":51,\"ts\":\"2026-11-22T10:00:00Z\"}]",
        "[{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50},"
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":51}]",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":-0}",
        "{\"sensor_id\":\"s\",\"type\":\"temperature\",\"value\":-0.0,\"unit\":\"C\"}",
        "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50,\"ts\":\"2026-11-22T10:06:00Z\"}",
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        body_parsers_agree(edges[i], strlen(edges[i]), &accepted);
    static const char nul[] = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":50}\0";
    body_parsers_agree(nul, sizeof nul - 1, &accepted);   /* a NUL after the object */
    char big[8192], key[300];
    memset(key, 'k', sizeof key);
    for (int keylen = 255; keylen <= 258; keylen++) {   /* 256 bytes, at most */
        snprintf(big, sizeof big, "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":5,"
                 "\"tags\":{\"%.*s\":\"%.*s\"}}", keylen, key, keylen, key);
        body_parsers_agree(big, strlen(big), &accepted);
    }
    for (int ntags = 16; ntags <= 17; ntags++) {       /* 16 tags, at most */
        size_t len = (size_t)snprintf(big, sizeof big, "{\"sensor_id\":\"s\",\"type\":"
                                      "\"humidity\",\"value\":5,\"tags\":{");
        for (int t = 0; t < ntags; t++)
            len += (size_t)snprintf(big + len, sizeof big - len, "%s\"k%d\":\"v\"", t ? "," : "", t);
        snprintf(big + len, sizeof big - len, "}}");
        body_parsers_agree(big, strlen(big), &accepted);
    }
    for (int idlen = 64; idlen <= 65; idlen++) {       /* ids of 64 characters, at most */
        snprintf(big, sizeof big, "{\"sensor_id\":\"%.*s\",\"type\":\"humidity\",\"value\":5}",
                 idlen, key);
        body_parsers_agree(big, strlen(big), &accepted);
    }
}

static void test_msg_awkward_doubles(void **state)
{
    (void)state;
    const struct reading rs[] = {
        mk("a", READING_TEMPERATURE, 0.1, 0.1, "C", 1, 2, NULL),
        mk("b", READING_TEMPERATURE, 1e-300, 1e-300, "C", 1, 2, NULL),
        mk("c", READING_TEMPERATURE, 5e-324, 5e-324, "C", 1, 2, NULL),          /* subnormal */
        mk("d", READING_TEMPERATURE, -273.15, -273.15, "C", 1, 2, NULL),
        mk("e", READING_TEMPERATURE, 1.0 / 3.0, 1.0 / 3.0, "C", 1, 2, NULL),
        mk("f", READING_TEMPERATURE, 9999.999999999998, 9999.999999999998, "C", 1, 2, NULL),
        mk("g", READING_HUMIDITY, 99.99999999999999, 99.99999999999999, "%", 1, 2, NULL),
        mk("h", READING_HUMIDITY, 100, 100, "%", 1, 2, NULL),
        mk("i", READING_PRESSURE, 1e5, 1e7, "Pa", 1, 2, NULL),
        mk("j", READING_PRESSURE, 2.2250738585072014e-308, 2.2250738585072014e-308, "hPa", 1, 2, NULL),
        mk("k", READING_TEMPERATURE, -1e-300, -1e-300, "C", 1, 2, NULL),
        mk("l", READING_TEMPERATURE, 123456.789e-2, 1234.56789, "C", 1, 2, NULL),
    };
    round_trip("ingestion-1", rs, sizeof rs / sizeof rs[0]);
}

/* reading_format_number: the shortest decimal for whole millionths, and
 * text that reads back as exactly the same double for everything. */
static void test_format_number(void **state)
{
    (void)state;
    static const struct { double v; const char *text; } cases[] = {
        { 0, "0" }, { -0.0, "0" }, { 21.53, "21.53" }, { -273.15, "-273.15" },
        { 0.1, "0.1" }, { 1e-6, "0.000001" }, { -0.000123, "-0.000123" },
        { 100, "100" }, { 1013.25, "1013.25" }, { 123456.789, "123456.789" },
        { 1234567.123456, "1234567.123456" }, { -99999999.5, "-99999999.5" },
        /* Not whole millionths: printf's %.17g. */
        { 1e-7, "9.9999999999999995e-08" }, { 1.0 / 3.0, "0.33333333333333331" },
        { 1e300, "1.0000000000000001e+300" }, { 0.1 + 0.2, "0.30000000000000004" },
    };
    char buf[READING_NUMBER_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = reading_format_number(cases[i].v, buf);
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(n, strlen(cases[i].text));
    }
    /* Round trips: random bit patterns, and whole millionths and hundredths
     * (what sensors send) near the edges of the integer path. */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        switch (i % 4) {
        case 0:
            memcpy(&v, &x, sizeof v);
            if (!isfinite(v))
                continue;
            break;
        case 1:
            v = (double)(int64_t)(x % 20000000000000000ULL) / 1e6 * (x & 1 ? -1 : 1);
            break;
        case 2:
            v = (double)(int64_t)(x % 200000) / 100.0;
            break;
        default:
            v = (double)(int64_t)(x % 2000000000) / 1e6 + 1e-9 * (double)(x % 3);
            break;
        }
        size_t n = reading_format_number(v, buf);
        assert_true(n > 0 && n < READING_NUMBER_MAX);
        char *end;
        double back = strtod(buf, &end);
        assert_true(*end == '\0');
        if (back != v && !(v == 0 && back == 0))
            fail_msg("%.17g written as %s reads back as %.17g", v, buf, back);
    }
}

static void test_msg_digest(void **state)
{
    (void)state;
    /* FNV-1a 64: storage and ingestion must agree on it bit for bit. */
    assert_true(reading_msg_digest("", 0) == 0xcbf29ce484222325ULL);
    assert_true(reading_msg_digest("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(reading_msg_digest("foobar", 6) == 0x85944171f73967e8ULL);
    assert_true(reading_msg_digest("{\"v\":1}", 7) != reading_msg_digest("{\"v\":2}", 7));
}

/* What storage publishes for a message, and what ingestion reads from it:
 * the id of its Correlation Data when it has one, else its digest (a
 * message from an ingestion older than ids). */
static void test_confirm_format_and_parse(void **state)
{
    (void)state;
    char out[READING_CONFIRM_MAX];
    uint64_t v = 0;
    const unsigned char id[READING_MSG_ID_LEN] = { 0x01, 0x23, 0x45, 0x67,
                                                   0x89, 0xab, 0xcd, 0xef };
    assert_int_equal(reading_confirm_format(out, id, sizeof id, "foobar", 6), 19);
    assert_string_equal(out, "id:0123456789abcdef");
    assert_int_equal(reading_confirm_parse(out, 19, &v), READING_CONFIRM_ID);
    assert_true(v == 0x0123456789abcdefULL);
    /* ingestion writes the id as storage reads it back. */
    unsigned char bytes[READING_MSG_ID_LEN];
    reading_msg_id_bytes(0x0123456789abcdefULL, bytes);
    assert_memory_equal(bytes, id, sizeof id);
    reading_msg_id_bytes(UINT64_MAX - 1, bytes);
    assert_int_equal(reading_confirm_format(out, bytes, sizeof bytes, "", 0), 19);
    assert_string_equal(out, "id:fffffffffffffffe");

    /* No Correlation Data, or one that is not an id of ours: the digest. */
    assert_int_equal(reading_confirm_format(out, NULL, 0, "foobar", 6), 16);
    assert_string_equal(out, "85944171f73967e8");
    assert_int_equal(reading_confirm_parse(out, 16, &v), READING_CONFIRM_DIGEST);
    assert_true(v == 0x85944171f73967e8ULL);
    assert_int_equal(reading_confirm_format(out, "abc", 3, "foobar", 6), 16);
    assert_string_equal(out, "85944171f73967e8");
    assert_int_equal(reading_confirm_format(out, id, sizeof id, "", 0), 19);

    /* Anything else is no confirmation. */
    v = 7;
    assert_int_equal(reading_confirm_parse("", 0, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("85944171f73967e", 15, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("85944171F73967E8", 16, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("85944171f73967e8 ", 17, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("id:0123456789abcdeg", 19, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("ID:0123456789abcdef", 19, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("id:0123456789abcdef0", 20, &v), READING_CONFIRM_NONE);
    assert_int_equal(reading_confirm_parse("id:\0" "123456789abcdef", 19, &v),
                     READING_CONFIRM_NONE);
    assert_true(v == 7);
}

static void test_msg_negative_zero(void **state)
{
    (void)state;
    /* JSON cannot carry -0.0 as a double ("-0" reads back as integer 0), so
     * the parser turns -0 into +0: what is parsed is what storage decodes. */
    const char *body = "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":-0.0}";
    struct reading_batch b = { 0 };
    struct reading_error err;
    assert_int_equal(reading_parse_body(body, strlen(body), &LIM, NOW, &b, &err), 0);
    assert_int_equal(b.n, 1);
    assert_false(signbit(b.v[0].raw_value));
    assert_false(signbit(b.v[0].value));
    round_trip("ingestion-1", b.v, b.n);
    reading_batch_free(&b);
}

/* Found by fuzz/fuzz_mqtt_message.c: a message carrying -0.0 (not one
 * ingestion writes, but anything may sit on the topic) decoded to -0.0, and
 * sending that reading again gave +0. The decoder turns -0 into +0 too. */
static void test_msg_decode_negative_zero(void **state)
{
    (void)state;
    const char *msg = "{\"v\":1,\"by\":\"i\",\"readings\":[{\"sensor_id\":\"s\","
                      "\"type\":\"temperature\",\"ts_us\":1,\"value\":-0.0,\"unit\":\"C\","
                      "\"raw_value\":-0.0,\"raw_unit\":\"C\",\"received_at_us\":2}]}";
    struct reading_batch b = { 0 };
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    assert_int_equal(reading_decode_message(msg, strlen(msg), by, sizeof by, NULL, 0, &b, &err), 0);
    assert_int_equal(b.n, 1);
    assert_false(signbit(b.v[0].value));
    assert_false(signbit(b.v[0].raw_value));
    round_trip("i", b.v, b.n);
    reading_batch_free(&b);
}

static void test_msg_timestamp_range(void **state)
{
    (void)state;
    const struct reading rs[] = {
        mk("a", READING_HUMIDITY, 1, 1, "%", T_MIN, T_MIN, NULL),
        mk("b", READING_HUMIDITY, 1, 1, "%", T_MAX, T_MAX, NULL),
        mk("c", READING_HUMIDITY, 1, 1, "%", -14182940LL * US, NOW, NULL),
    };
    round_trip("ingestion-1", rs, sizeof rs / sizeof rs[0]);
}

static void test_msg_many_readings(void **state)
{
    (void)state;
    /* Enough to make the message buffer grow several times. */
    enum { N = 2000 };
    struct reading *rs = calloc(N, sizeof *rs);
    assert_non_null(rs);
    static const char *const tagsv[] = { NULL, "{\"a\":\"b\"}", "{\"long\":\""
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}" };
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "sensor-%d", i);
        rs[i] = mk(id, (enum reading_type)(i % 3), (i % 100) + 0.1, (i % 100) + 0.1,
                   i % 3 == 0 ? "C" : i % 3 == 1 ? "%" : "hPa", NOW + i, NOW + 2 * i,
                   tagsv[i % 3]);
    }
    round_trip("ingestion-2", rs, N);
    free(rs);
}

/* A reading built by parse_body survives the trip to storage unchanged. */
static void test_msg_from_parsed_body(void **state)
{
    (void)state;
    struct reading_batch *in = &t_batch2;
    accept_into("[{\"sensor_id\":\"s-1\",\"type\":\"temperature\",\"value\":71.6,\"unit\":\"F\","
                "\"ts\":\"2026-11-22T09:59:00.123456789+01:00\",\"tags\":{\"room\":\"a\"}},"
                " {\"sensor_id\":\"s-2\",\"type\":\"pressure\",\"value\":101.3,\"unit\":\"kPa\"},"
                " {\"sensor_id\":\"s-3\",\"type\":\"humidity\",\"value\":0.1,\"tags\":null}]",
                &LIM, in);
    round_trip("ingestion-1", in->v, in->n);
    reading_batch_free(in);
}

/* Whatever the HTTP parsers accept, decode_message must accept after the
 * trip: otherwise a reading answered 202 becomes a dead letter in storage. */
static void check_parsed_then_decoded(enum parser p, const char *body, const char *what)
{
    struct reading_batch *in = &t_batch, *out = &t_batch2;
    struct reading_error err;
    memset(in, 0, sizeof *in);
    memset(out, 0, sizeof *out);
    int rc = p == BODY ? reading_parse_body(body, strlen(body), &LIM, NOW, in, &err)
                       : reading_parse_legacy(body, strlen(body), &LIM, NOW, in, &err);
    if (rc != 0) {
        reading_batch_free(in);   /* a failed parse may leave capacity behind */
        return;                   /* rejecting it up front is fine too */
    }
    struct reading_msg *m = &t_msg;
    assert_int_equal(reading_msg_init(m, "ingestion-1"), 0);
    assert_int_equal(reading_msg_add(m, &in->v[0]), 0);
    assert_int_equal(reading_msg_finish(m), 0);
    char by[READING_INSTANCE_MAX + 1];
    if (reading_decode_message(m->buf, m->len, by, sizeof by, NULL, 0, out, &err) != 0)
        fail_msg("%s \"%s\" (ts_us %lld) is accepted by reading_parse_%s but its message is "
                 "rejected by reading_decode_message: %s %s", p == BODY ? "ts" : "legacy time",
                 what, (long long)in->v[0].ts_us, p == BODY ? "body" : "legacy", err.field,
                 err.message);
    assert_i64(out->v[0].ts_us, in->v[0].ts_us, what);
    reading_msg_free(m);
    reading_batch_free(in);
    reading_batch_free(out);
}

static void test_msg_accepts_every_parsed_timestamp(void **state)
{
    (void)state;
    static const char *const times[] = {
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00-23:59",
        "0001-01-01T23:00:00+23:59",
        "0001-01-01T00:00:00+00:01",      /* 0000-12-31T23:59Z in UTC */
        "0001-01-01T00:00:00.5+23:59",
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"ts\":\"%s\"}", times[i]);
        check_parsed_then_decoded(BODY, body, times[i]);
        snprintf(body, sizeof body,
                 "{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"temperature_f\":1,"
                 "\"time_of_measurement\":\"%s\"}}", times[i]);
        check_parsed_then_decoded(LEGACY, body, times[i]);
    }
}

static void test_msg_init_rejects_bad_instance(void **state)
{
    (void)state;
    char long_name[80];
    memset(long_name, 'a', sizeof long_name);
    long_name[65] = '\0';
    static const char *const bad[] = { "", "bad instance", "a\"b", "a\\b", "a}b", "caf\xc3\xa9",
                                       "x\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct reading_msg m;
        if (reading_msg_init(&m, bad[i]) != -1)
            fail_msg("reading_msg_init accepted instance \"%s\"", bad[i]);
        reading_msg_free(&m);
    }
    struct reading_msg m;
    assert_int_equal(reading_msg_init(&m, long_name), -1);
    reading_msg_free(&m);
    long_name[64] = '\0';
    assert_int_equal(reading_msg_init(&m, long_name), 0);
    reading_msg_free(&m);
    reading_msg_free(NULL);
}

/* Room made at once changes nothing of the message: the same bytes as one
 * grown a step at a time, and no buffer replaced while it fills. */
static void test_msg_reserve(void **state)
{
    (void)state;
    const struct reading r = mk("a", READING_HUMIDITY, 1, 1, "%", 1, 2, NULL);
    struct reading_msg grown, reserved;
    assert_int_equal(reading_msg_init(&grown, "ingestion-1"), 0);
    assert_int_equal(reading_msg_init(&reserved, "ingestion-1"), 0);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(reading_msg_add(&grown, &r), 0);
    assert_int_equal(reading_msg_finish(&grown), 0);
    assert_int_equal(reading_msg_reserve(&reserved, 0), 0);        /* less than it has */
    assert_int_equal(reading_msg_reserve(&reserved, grown.len), 0);
    assert_true(reserved.cap > grown.len);
    const char *buf = reserved.buf;
    for (int i = 0; i < 2000; i++)
        assert_int_equal(reading_msg_add(&reserved, &r), 0);
    assert_int_equal(reading_msg_finish(&reserved), 0);
    assert_ptr_equal(reserved.buf, buf);
    assert_int_equal(reserved.len, grown.len);
    assert_memory_equal(reserved.buf, grown.buf, grown.len);
    reading_msg_free(&grown);
    reading_msg_free(&reserved);
}

/* The by buffer must hold the instance and its NUL. */
static void test_msg_decode_by_buffer(void **state)
{
    (void)state;
    const struct reading r = mk("a", READING_HUMIDITY, 1, 1, "%", 1, 2, NULL);
    struct reading_msg m;
    assert_int_equal(reading_msg_init(&m, "ingestion-1"), 0);   /* 11 characters */
    assert_int_equal(reading_msg_add(&m, &r), 0);
    assert_int_equal(reading_msg_finish(&m), 0);
    struct reading_batch b = { 0 };
    struct reading_error err;
    char by[16];
    memset(by, 'x', sizeof by);
    assert_int_equal(reading_decode_message(m.buf, m.len, by, 12, NULL, 0, &b, &err), 0);
    assert_string_equal(by, "ingestion-1");
    assert_int_equal(by[12], 'x');
    reading_batch_clear(&b);
    assert_int_equal(reading_decode_message(m.buf, m.len, by, 11, NULL, 0, &b, &err), -1);
    assert_int_equal(b.n, 0);
    reading_batch_free(&b);
    reading_msg_free(&m);
}

/* Request ids travel with the message, each once per run of equal ids,
 * and come back comma-separated; a bad one is refused on both sides. */
static void test_msg_request_ids(void **state)
{
    (void)state;
    const struct reading r = mk("a", READING_HUMIDITY, 1, 1, "%", 1, 2, NULL);
    struct reading_msg m;
    assert_int_equal(reading_msg_init(&m, "ingestion-1"), 0);
    assert_int_equal(reading_msg_add(&m, &r), 0);
    assert_int_equal(reading_msg_add_rid(&m, "req-1"), 0);
    assert_int_equal(reading_msg_add_rid(&m, "req-1"), 0);   /* same request, again */
    assert_int_equal(reading_msg_add_rid(&m, "7F000001-2"), 0);
    assert_int_equal(reading_msg_add_rid(&m, "2"), 0);        /* a suffix of the last */
    assert_int_equal(reading_msg_add_rid(&m, "bad id"), -1);
    assert_int_equal(reading_msg_add_rid(&m, "x\"y"), -1);
    assert_int_equal(m.nrids, 3);
    /* A reading and an id added after a mark are taken back whole. */
    struct reading_msg_mark mark = reading_msg_mark(&m);
    assert_int_equal(reading_msg_add(&m, &r), 0);
    assert_int_equal(reading_msg_add_rid(&m, "req-9"), 0);
    reading_msg_rollback(&m, mark);
    assert_int_equal(m.count, 1);
    assert_int_equal(m.nrids, 3);
    size_t predicted = reading_msg_size(&m);
    assert_int_equal(reading_msg_finish(&m), 0);
    assert_int_equal(m.len, predicted);
    assert_non_null(strstr(m.buf, "],\"rids\":[\"req-1\",\"7F000001-2\",\"2\"]}"));
    struct reading_batch b = { 0 };
    struct reading_error err;
    char by[32], rids[64];
    assert_int_equal(reading_decode_message(m.buf, m.len, by, sizeof by, rids, sizeof rids,
                                            &b, &err), 0);
    assert_string_equal(rids, "req-1,7F000001-2,2");
    assert_int_equal(b.n, 1);
    reading_batch_clear(&b);
    /* A buffer too small for all of them ends with "...". */
    assert_int_equal(reading_decode_message(m.buf, m.len, by, sizeof by, rids, 14, &b, &err), 0);
    assert_string_equal(rids, "req-1...");
    reading_batch_clear(&b);
    /* No rids member: "" (messages from before, the spool of an older version). */
    const char *plain = "{\"v\":1,\"by\":\"i\",\"readings\":[{\"sensor_id\":\"a\","
                        "\"type\":\"humidity\",\"ts_us\":1000000,\"value\":1,\"unit\":\"%\","
                        "\"raw_value\":1,\"raw_unit\":\"%\",\"received_at_us\":2000000}]}";
    assert_int_equal(reading_decode_message(plain, strlen(plain), by, sizeof by, rids,
                                            sizeof rids, &b, &err), 0);
    assert_string_equal(rids, "");
    reading_batch_clear(&b);
    /* A malformed id makes the message a dead letter naming the member. */
    char bad[512];
    snprintf(bad, sizeof bad, "%.*s,\"rids\":[\"ok\",\"not ok\"]}", (int)strlen(plain) - 1,
             plain);
    assert_int_equal(reading_decode_message(bad, strlen(bad), by, sizeof by, rids, sizeof rids,
                                            &b, &err), -1);
    assert_string_equal(err.field, "rids");
    assert_int_equal(b.n, 0);
    reading_batch_free(&b);
    reading_msg_free(&m);
}

/* A message around one reading object given as JSON text. */
static char *msg_with(const char *by_json, const char *reading_json)
{
    char *s = NULL;
    assert_true(asprintf(&s, "{\"v\":1,\"by\":%s,\"readings\":[%s]}", by_json, reading_json) > 0);
    return s;
}

#define GOOD_R "{\"sensor_id\":\"s-1\",\"type\":\"temperature\",\"ts_us\":1795341600123000," \
               "\"value\":22,\"unit\":\"C\",\"raw_value\":71.6,\"raw_unit\":\"F\"," \
               "\"received_at_us\":1795341600200000,\"tags\":{\"room\":\"a\"}}"

/* Decoding payload must fail at index/field (field NULL: any) and leave the
 * batch as it was. */
static void expect_decode_reject(const char *payload, size_t len, long index, const char *field)
{
    struct reading_batch *b = &t_batch;
    prefill(b);
    const char *tags_before = b->v[0].tags_json;
    char by[READING_INSTANCE_MAX + 1];
    memset(&last_err, 0x55, sizeof last_err);
    int rc = reading_decode_message(payload, len, by, sizeof by, NULL, 0, b, &last_err);
    if (rc != -1)
        fail_msg("decoded (rc %d, %zu readings): %.*s", rc, b->n, (int)len, payload);
    assert_sentinel_only(b, tags_before);
    assert_non_null(memchr(last_err.field, '\0', sizeof last_err.field));
    assert_non_null(memchr(last_err.message, '\0', sizeof last_err.message));
    if (last_err.index != index || (field && strcmp(last_err.field, field) != 0))
        fail_msg("rejected at index %ld field \"%s\" (%s), want index %ld field \"%s\": %.*s",
                 last_err.index, last_err.field, last_err.message, index, field ? field : "(any)",
                 (int)len, payload);
    assert_true(strlen(last_err.message) > 0);
    reading_batch_free(b);
}

static void decode_reject(const char *payload, long index, const char *field)
{
    expect_decode_reject(payload, strlen(payload), index, field);
}

/* Replaces the first "from" in GOOD_R with "to" and expects the message
 * with that reading (after a good one) to be rejected at index 1. */
static void decode_reject_mutation(const char *from, const char *to, const char *field)
{
    const char *good = GOOD_R;
    const char *at = strstr(good, from);
    if (!at)
        fail_msg("test bug: \"%s\" not in the reading", from);
    char r[1024];
    snprintf(r, sizeof r, "%s,%.*s%s%s", GOOD_R, (int)(at - good), good, to, at + strlen(from));
    char *msg = msg_with("\"ingestion-1\"", r);
    expect_decode_reject(msg, strlen(msg), 1, field);
    free(msg);
}

static void test_msg_decode_good_template(void **state)
{
    (void)state;
    /* The template the rejections below start from is itself fine. */
    char *msg = msg_with("\"ingestion-1\"", GOOD_R "," GOOD_R);
    struct reading_batch b = { 0 };
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    assert_int_equal(reading_decode_message(msg, strlen(msg), by, sizeof by, NULL, 0, &b, &err), 0);
    assert_int_equal(b.n, 2);
    assert_string_equal(by, "ingestion-1");
    assert_string_equal(b.v[1].sensor_id, "s-1");
    assert_true(b.v[1].value == 22.0);
    assert_same_double(b.v[1].raw_value, 71.6, "raw_value");
    assert_string_equal(b.v[1].raw_unit, "F");
    assert_i64(b.v[1].ts_us, 1795341600123000, "ts_us");
    assert_i64(b.v[1].received_at_us, 1795341600200000, "received_at_us");
    assert_same_tags(b.v[1].tags_json, "{\"room\":\"a\"}");
    reading_batch_free(&b);
    free(msg);
    /* Unknown members are ignored, tags may be absent or null. */
    msg = msg_with("\"i\"", "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"ts_us\":1,\"value\":1,"
                            "\"unit\":\"%\",\"raw_value\":1,\"raw_unit\":\"%\",\"received_at_us\":2,"
                            "\"tags\":null,\"extra\":[1]}");
    assert_int_equal(reading_decode_message(msg, strlen(msg), by, sizeof by, NULL, 0, &b, &err), 0);
    assert_null(b.v[0].tags_json);
    reading_batch_free(&b);
    free(msg);
}

static void test_msg_decode_rejects_message(void **state)
{
    (void)state;
    decode_reject("", -1, "");
    decode_reject("garbage", -1, "");
    decode_reject("\x01\x02\xff", -1, "");
    decode_reject("[]", -1, NULL);
    decode_reject("[" GOOD_R "]", -1, NULL);
    decode_reject("{}", -1, "v");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":["
                  "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"ts_us\":1,\"value\":1e999,"
                  "\"unit\":\"%\",\"raw_value\":1,\"raw_unit\":\"%\",\"received_at_us\":2}]}",
                  -1, "");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]", -1, "");  /* cut */
    decode_reject("{\"v\":2,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "v");
    decode_reject("{\"v\":0,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "v");
    decode_reject("{\"v\":\"1\",\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "v");
    decode_reject("{\"v\":1.0,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "v");
    decode_reject("{\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "v");
    decode_reject("{\"v\":1,\"readings\":[" GOOD_R "]}", -1, "by");
    decode_reject("{\"v\":1,\"by\":null,\"readings\":[" GOOD_R "]}", -1, "by");
    decode_reject("{\"v\":1,\"by\":\"\",\"readings\":[" GOOD_R "]}", -1, "by");
    decode_reject("{\"v\":1,\"by\":\"bad by\",\"readings\":[" GOOD_R "]}", -1, "by");
    decode_reject("{\"v\":1,\"by\":7,\"readings\":[" GOOD_R "]}", -1, "by");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":[]}", -1, "readings");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\"}", -1, "readings");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":" GOOD_R "}", -1, "readings");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":null}", -1, "readings");
    decode_reject("{\"v\":1,\"v\":1,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R "]}", -1, "");
    decode_reject("{\"v\":1,\"by\":\"ingestion-1\",\"readings\":[" GOOD_R ",7]}", 1, "");

    /* A message with no readings, as reading_msg_* would build it. */
    struct reading_msg m;
    assert_int_equal(reading_msg_init(&m, "ingestion-1"), 0);
    size_t predicted = reading_msg_size(&m);
    assert_int_equal(reading_msg_finish(&m), 0);
    assert_int_equal(m.len, predicted);
    expect_decode_reject(m.buf, m.len, -1, "readings");
    reading_msg_free(&m);
}

static void test_msg_decode_rejects_reading(void **state)
{
    (void)state;
    decode_reject_mutation("\"unit\":\"C\"", "\"unit\":\"F\"", "unit");
    decode_reject_mutation("\"unit\":\"C\"", "\"unit\":\"K\"", "unit");
    decode_reject_mutation("\"unit\":\"C\",", "", "unit");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":1795341600123000.0", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":1.795341600123e15", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":\"1795341600123000\"", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":null", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000,", "", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":253402300800000000", "ts_us");
    decode_reject_mutation("\"ts_us\":1795341600123000", "\"ts_us\":-62135596800000001", "ts_us");
    decode_reject_mutation("\"received_at_us\":1795341600200000",
                           "\"received_at_us\":1795341600200000.5", "received_at_us");
    decode_reject_mutation("\"received_at_us\":1795341600200000", "\"received_at_us\":\"x\"",
                           "received_at_us");
    decode_reject_mutation("\"tags\":{\"room\":\"a\"}", "\"tags\":{\"room\":1}", "tags");
    decode_reject_mutation("\"tags\":{\"room\":\"a\"}", "\"tags\":{\"room\":{\"x\":\"y\"}}", "tags");
    decode_reject_mutation("\"tags\":{\"room\":\"a\"}", "\"tags\":[\"a\"]", "tags");
    decode_reject_mutation("\"tags\":{\"room\":\"a\"}", "\"tags\":\"room=a\"", "tags");
    decode_reject_mutation("\"sensor_id\":\"s-1\"", "\"sensor_id\":\"s 1\"", "sensor_id");
    decode_reject_mutation("\"sensor_id\":\"s-1\"", "\"sensor_id\":5", "sensor_id");
    decode_reject_mutation("\"sensor_id\":\"s-1\",", "", "sensor_id");
    decode_reject_mutation("\"type\":\"temperature\"", "\"type\":\"wind\"", "type");
    decode_reject_mutation("\"type\":\"temperature\",", "", "type");
    decode_reject_mutation("\"value\":22", "\"value\":\"22\"", "value");
    decode_reject_mutation("\"value\":22", "\"value\":-300", "value");
    decode_reject_mutation("\"raw_value\":71.6", "\"raw_value\":null", NULL);
    decode_reject_mutation("\"raw_unit\":\"F\"", "\"raw_unit\":\"%\"", "raw_unit");
    decode_reject_mutation("\"raw_unit\":\"F\"", "\"raw_unit\":7", "raw_unit");
    decode_reject_mutation("\"raw_value\":71.6", "\"raw_value\":-500", NULL);
}

/* Found by fuzz/fuzz_http_body.c: the message quotes bounded pieces of the
 * input (%.40s, jansson's "near '...'"), and a bound could cut a UTF-8
 * character in two; ingestion then failed to build its JSON 400 answer and
 * sent an empty body. What is left of a cut character becomes '?'. */
static void assert_utf8_message(const char *msg, const char *want)
{
    json_t *j = json_string(msg);
    if (!j)
        fail_msg("error message is not valid UTF-8: %s", msg);
    json_decref(j);
    assert_contains(msg, want);
}

static void test_error_message_is_utf8(void **state)
{
    (void)state;
    assert_utf8_message(
        reject("{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,"
               "\"unit\":\"%\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}", 0, "unit"),
        "'%\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9?'");
    char body[256];
    char e20[64] = "x";
    for (int i = 0; i < 20; i++)
        strcat(e20, "\xc3\xa9");
    snprintf(body, sizeof body, "{\"sensor_id\":\"s\",\"type\":\"%s\",\"value\":1}", e20);
    assert_utf8_message(reject(body, 0, "type"), "\xc3\xa9?'");
    snprintf(body, sizeof body,
             "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"value\":1,\"tags\":{\"%s\":1}}", e20);
    assert_utf8_message(reject(body, 0, "tags"), "\xc3\xa9?'");
    /* jansson's own text: "invalid escape near '"\u00e<first byte of U+030C>'". */
    assert_utf8_message(reject("{\"\\u00e\xcc\x8c\":1}", -1, ""), "near '\"\\u00e?'");
    snprintf(body, sizeof body,
             "{\"type\":\"Sensor\",\"id\":\"abc\",\"content\":{\"\\u00e\xcc\x8c\":1}}");
    assert_utf8_message(reject_legacy(body, -1, ""), "?");
    /* The decoder's reasons end up in dead_letters.reason: the same rule. */
    char *msg = msg_with("\"i\"", "{\"sensor_id\":\"s\",\"type\":\"humidity\",\"ts_us\":1,"
                                  "\"value\":1,\"unit\":\"%\",\"raw_value\":1,\"raw_unit\":\"%\","
                                  "\"received_at_us\":2,\"tags\":{\"x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                  "\xc3\xa9\xc3\xa9\":1}}");
    expect_decode_reject(msg, strlen(msg), 0, "tags");
    free(msg);
    assert_utf8_message(last_err.message, "\xc3\xa9?'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_type_names, teardown),
        cmocka_unit_test_teardown(test_convert, teardown),
        cmocka_unit_test_teardown(test_convert_impossible, teardown),
        cmocka_unit_test_teardown(test_convert_result_is_possible, teardown),
        cmocka_unit_test_teardown(test_convert_unknown_unit, teardown),
        cmocka_unit_test_teardown(test_sensor_id_valid, teardown),
        cmocka_unit_test_teardown(test_body_single_object, teardown),
        cmocka_unit_test_teardown(test_body_every_conversion, teardown),
        cmocka_unit_test_teardown(test_body_integer_value, teardown),
        cmocka_unit_test_teardown(test_body_array_appends_in_order, teardown),
        cmocka_unit_test_teardown(test_body_max_readings, teardown),
        cmocka_unit_test_teardown(test_body_same_key_twice, teardown),
        cmocka_unit_test(test_out_of_memory_is_flagged),
        cmocka_unit_test_teardown(test_body_out_of_range_names_the_value, teardown),
        cmocka_unit_test_teardown(test_body_large_array, teardown),
        cmocka_unit_test_teardown(test_body_len_is_honoured, teardown),
        cmocka_unit_test_teardown(test_body_unknown_fields_ignored, teardown),
        cmocka_unit_test_teardown(test_body_not_object_or_array, teardown),
        cmocka_unit_test_teardown(test_body_not_json, teardown),
        cmocka_unit_test_teardown(test_body_duplicate_keys, teardown),
        cmocka_unit_test_teardown(test_body_non_finite_numbers, teardown),
        cmocka_unit_test_teardown(test_body_bad_bytes, teardown),
        cmocka_unit_test_teardown(test_body_missing_fields, teardown),
        cmocka_unit_test_teardown(test_body_wrong_types, teardown),
        cmocka_unit_test_teardown(test_body_sensor_id, teardown),
        cmocka_unit_test_teardown(test_body_unknown_type_or_unit, teardown),
        cmocka_unit_test_teardown(test_body_impossible_values, teardown),
        cmocka_unit_test_teardown(test_body_ts, teardown),
        cmocka_unit_test_teardown(test_body_ts_future_limit, teardown),
        cmocka_unit_test_teardown(test_ts_huge_future_limit, teardown),
        cmocka_unit_test_teardown(test_body_tags, teardown),
        cmocka_unit_test_teardown(test_body_tags_as_jansson_writes_them, teardown),
        cmocka_unit_test_teardown(test_body_tag_lengths, teardown),
        cmocka_unit_test_teardown(test_body_all_or_nothing, teardown),
        cmocka_unit_test_teardown(test_batch_clear_and_free, teardown),
        cmocka_unit_test_teardown(test_legacy_plain, teardown),
        cmocka_unit_test_teardown(test_legacy_double_encoded, teardown),
        cmocka_unit_test_teardown(test_legacy_variants, teardown),
        cmocka_unit_test_teardown(test_legacy_rejected, teardown),
        cmocka_unit_test_teardown(test_legacy_double_encoded_rejected, teardown),
        cmocka_unit_test_teardown(test_msg_round_trip, teardown),
        cmocka_unit_test_teardown(test_msg_decoders_agree, teardown),
        cmocka_unit_test_teardown(test_body_parsers_agree, teardown),
        cmocka_unit_test_teardown(test_msg_awkward_doubles, teardown),
        cmocka_unit_test_teardown(test_format_number, teardown),
        cmocka_unit_test_teardown(test_msg_digest, teardown),
        cmocka_unit_test(test_confirm_format_and_parse),
        cmocka_unit_test_teardown(test_msg_negative_zero, teardown),
        cmocka_unit_test_teardown(test_msg_decode_negative_zero, teardown),
        cmocka_unit_test_teardown(test_msg_timestamp_range, teardown),
        cmocka_unit_test_teardown(test_msg_many_readings, teardown),
        cmocka_unit_test_teardown(test_msg_from_parsed_body, teardown),
        cmocka_unit_test_teardown(test_msg_accepts_every_parsed_timestamp, teardown),
        cmocka_unit_test_teardown(test_msg_init_rejects_bad_instance, teardown),
        cmocka_unit_test_teardown(test_msg_reserve, teardown),
        cmocka_unit_test_teardown(test_msg_decode_by_buffer, teardown),
        cmocka_unit_test_teardown(test_msg_request_ids, teardown),
        cmocka_unit_test_teardown(test_msg_decode_good_template, teardown),
        cmocka_unit_test_teardown(test_msg_decode_rejects_message, teardown),
        cmocka_unit_test_teardown(test_msg_decode_rejects_reading, teardown),
        cmocka_unit_test_teardown(test_error_message_is_utf8, teardown),
    };
    return cmocka_run_group_tests_name("common/reading", tests, NULL, NULL);
}
