/* test_sim_payload.c -- unit tests for sensor-sim/payload: bodies are valid
 * JSON (checked with jansson) and accepted by the ingestion's own parser,
 * numbers read back exactly, accepted-log lines match the body, and the
 * SIM_TAGS grammar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "../../sensor-sim/fleet.h"
#include "../../sensor-sim/payload.h"
#include "reading.h"
#include "ts.h"

#define T0 1795341600123456LL       /* 2026-11-22T10:00:00.123456Z */

static json_t *parse(const struct sbuf *b)
{
    json_error_t e;
    json_t *j = json_loadb(b->p, b->len, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        fail_msg("invalid JSON (%s at %d): %.*s", e.text, e.position, (int)b->len, b->p);
    return j;
}

static void tags_or_fail(const char *spec, struct sbuf *out)
{
    char err[200];
    if (payload_tags(spec, out, err, sizeof err) != 0)
        fail_msg("payload_tags(\"%s\"): %s", spec, err);
}

static void test_single_object(void **state)
{
    (void)state;
    struct sbuf json = { 0 }, csv = { 0 }, tags = { 0 };
    tags_or_fail("site=sim", &tags);
    struct payload_fmt fmt = { tags.p, tags.len };
    struct sim_reading r = { "3f2a9c1e-8b7d-4c2e-9a1f-0b5e6d7c8a90", READING_TEMPERATURE,
                             "F", 71.6, T0 };
    payload_add(&json, &csv, &r, NULL, 0, &fmt);

    json_t *j = parse(&json);
    assert_true(json_is_object(j));
    assert_string_equal(json_string_value(json_object_get(j, "sensor_id")), r.sensor_id);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "temperature");
    assert_string_equal(json_string_value(json_object_get(j, "unit")), "F");
    assert_true(json_real_value(json_object_get(j, "value")) == 71.6);
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-11-22T10:00:00.123456Z");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "tags"), "site")), "sim");
    assert_int_equal(json_object_size(j), 6);
    json_decref(j);

    /* Short number text, and the log line carries the very same ts and value. */
    assert_non_null(strstr(json.p, "\"value\":71.6,"));
    assert_string_equal(csv.p,
        "3f2a9c1e-8b7d-4c2e-9a1f-0b5e6d7c8a90,temperature,2026-11-22T10:00:00.123456Z,71.6,F\n");
    sbuf_free(&json);
    sbuf_free(&csv);
    sbuf_free(&tags);
}

/* A batch as gen.c builds it, from a seeded fleet with precomputed prefixes,
 * parsed by jansson and by the ingestion's reading_parse_body(). */
static void test_batch_from_fleet(void **state)
{
    (void)state;
    char err[200];
    enum { N = 300 };
    struct fleet *f = fleet_create(N, 11, 0, err, sizeof err);
    assert_non_null(f);
    struct sbuf json = { 0 }, csv = { 0 }, tags = { 0 };
    tags_or_fail("site=sim,room=b \"2\",path=a\\b", &tags);
    struct payload_fmt fmt = { tags.p, tags.len };
    struct sim_reading rs[N];

    sbuf_addc(&json, '[');
    for (size_t i = 0; i < N; i++) {
        char prefix[PAYLOAD_PREFIX_MAX];
        const struct fleet_sensor *s = fleet_sensor(f, i);
        size_t plen = payload_prefix(prefix, s->id, s->type, s->unit);
        fleet_measure(f, i, T0 + (int64_t)i, &rs[i]);
        if (i)
            sbuf_addc(&json, ',');
        payload_add(&json, &csv, &rs[i], prefix, plen, &fmt);
    }
    sbuf_addc(&json, ']');

    json_t *j = parse(&json);
    assert_int_equal(json_array_size(j), N);
    char *line = csv.p;
    for (size_t i = 0; i < N; i++) {
        json_t *o = json_array_get(j, i);
        assert_string_equal(json_string_value(json_object_get(o, "sensor_id")), rs[i].sensor_id);
        assert_string_equal(json_string_value(json_object_get(o, "type")), reading_type_name(rs[i].type));
        assert_string_equal(json_string_value(json_object_get(o, "unit")), rs[i].unit);
        assert_true(json_number_value(json_object_get(o, "value")) == rs[i].value);
        int64_t ts;
        const char *why;
        assert_int_equal(ts_parse_rfc3339(json_string_value(json_object_get(o, "ts")), &ts, &why), 0);
        assert_true(ts == rs[i].ts_us);
        json_t *t = json_object_get(o, "tags");
        assert_string_equal(json_string_value(json_object_get(t, "room")), "b \"2\"");
        assert_string_equal(json_string_value(json_object_get(t, "path")), "a\\b");

        /* The CSV line: same id, type, ts text and value text. */
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char want[256];
        char num[READING_NUMBER_MAX];
        reading_format_number(rs[i].value, num);
        snprintf(want, sizeof want, "%s,%s,%s,%s,%s", rs[i].sensor_id,
                 reading_type_name(rs[i].type), json_string_value(json_object_get(o, "ts")),
                 num, rs[i].unit);
        assert_string_equal(line, want);
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    json_decref(j);

    /* What ingestion will make of it. */
    struct reading_limits lim = { 1000, 3600LL * 1000000 };
    struct reading_batch out = { 0 };
    struct reading_error rerr;
    int rc = reading_parse_body(json.p, json.len, &lim, T0, &out, &rerr);
    if (rc != 0)
        fail_msg("reading_parse_body: #%ld %s: %s", rerr.index, rerr.field, rerr.message);
    assert_int_equal(out.n, N);
    for (size_t i = 0; i < N; i++) {
        assert_string_equal(out.v[i].sensor_id, rs[i].sensor_id);
        assert_true(out.v[i].ts_us == rs[i].ts_us);
        assert_true(out.v[i].raw_value == rs[i].value);
    }
    reading_batch_free(&out);
    fleet_destroy(f);
    sbuf_free(&json);
    sbuf_free(&csv);
    sbuf_free(&tags);
}

static void test_number_shortest_and_exact(void **state)
{
    (void)state;
    const double vs[] = { 71.6, 0.1, 1013.25, 101325, 22, -40, 1e-7, 0.30000000000000004,
                          123456789.123, 1.7976931348623157e308, 5e-324 };
    char buf[READING_NUMBER_MAX];
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        size_t n = reading_format_number(vs[i], buf);
        assert_int_equal(n, strlen(buf));
        assert_true(strtod(buf, NULL) == vs[i]);
    }
    reading_format_number(71.6, buf);
    assert_string_equal(buf, "71.6");
    reading_format_number(101325, buf);
    assert_string_equal(buf, "101325");
    reading_format_number(0.30000000000000004, buf);
    assert_string_equal(buf, "0.30000000000000004");
}

static void tags_bad(const char *spec, const char *why)
{
    char err[200] = "";
    struct sbuf out = { 0 };
    if (payload_tags(spec, &out, err, sizeof err) != -1)
        fail_msg("payload_tags(\"%s\") accepted", spec);
    if (!strstr(err, why))
        fail_msg("payload_tags(\"%s\"): \"%s\" does not say \"%s\"", spec, err, why);
    sbuf_free(&out);
}

static void test_tags(void **state)
{
    (void)state;
    struct sbuf out = { 0 };
    tags_or_fail("", &out);
    assert_int_equal(out.len, 0);
    tags_or_fail("a=1,b=,c=x=y", &out);
    assert_string_equal(out.p, ",\"tags\":{\"a\":\"1\",\"b\":\"\",\"c\":\"x=y\"}");
    sbuf_free(&out);

    tags_bad("novalue", "key=value");
    tags_bad("=v", "key=value");
    tags_bad("a=1,", "key=value");
    tags_bad("a=1,,b=2", "key=value");
    tags_bad("a=1,a=2", "twice");
    tags_bad("a=\x01", "control");
    tags_bad("site=caf\xe9", "UTF-8");            /* Latin-1: the server refuses it */
    tags_bad("b=1,\xc3\x28=1", "tag 2");            /* a broken sequence, in the key */
    struct sbuf ok = { 0 };
    tags_or_fail("site=caf\xc3\xa9", &ok);         /* UTF-8 is fine */
    assert_string_equal(ok.p, ",\"tags\":{\"site\":\"caf\xc3\xa9\"}");
    sbuf_free(&ok);
    tags_bad("a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1,l=1,m=1,n=1,o=1,p=1,q=1", "at most 16");
    char big[400];
    memset(big, 'x', sizeof big);
    big[0] = 'k';
    big[1] = '=';
    big[sizeof big - 1] = '\0';
    tags_bad(big, "at most 256");
}

static void test_prefix(void **state)
{
    (void)state;
    char p[PAYLOAD_PREFIX_MAX];
    size_t n = payload_prefix(p, "s-1", READING_PRESSURE, "hPa");
    assert_string_equal(p, "{\"sensor_id\":\"s-1\",\"type\":\"pressure\",\"unit\":\"hPa\",\"value\":");
    assert_int_equal(n, strlen(p));
    char id[65];
    memset(id, 'a', 64);
    id[64] = '\0';
    n = payload_prefix(p, id, READING_TEMPERATURE, "C");
    assert_int_equal(n, strlen(p));
    assert_non_null(strstr(p, id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_object),
        cmocka_unit_test(test_batch_from_fleet),
        cmocka_unit_test(test_number_shortest_and_exact),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
