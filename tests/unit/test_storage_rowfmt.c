/* test_storage_rowfmt.c -- unit tests for storage/rowfmt: array-literal
 * quoting of tricky strings, the column layout, exact numbers and
 * timestamps, and the UTF-8 cleaning used for dead letters. (That
 * PostgreSQL reads the arrays back the same is checked against the real
 * server by tests/integration/test_ingest_valid.py: its TRICKY tags.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../storage/rowfmt.h"

static struct reading sample(void)
{
    struct reading r;
    memset(&r, 0, sizeof r);
    snprintf(r.sensor_id, sizeof r.sensor_id, "s-1");
    r.type = READING_TEMPERATURE;
    r.value = (71.6 - 32.0) * 5.0 / 9.0;   /* 21.999999999999996: needs 17 digits */
    r.raw_value = 71.6;
    r.raw_unit = "F";
    r.ts_us = 1795341600123456LL;          /* 2026-11-22T10:00:00.123456Z */
    r.received_at_us = 1795341600200000LL;
    r.tags_json = NULL;
    return r;
}

/* What PostgreSQL's array_in does with a literal of quoted elements (all
 * rowfmt produces) and NULLs: the elements, NULL as a null pointer. */
static size_t parse_array(const char *lit, char **out, size_t max)
{
    size_t n = 0;
    assert_int_equal(*lit++, '{');
    if (*lit == '}')
        return 0;
    for (;;) {
        assert_true(n < max);
        if (strncmp(lit, "NULL", 4) == 0) {
            out[n++] = NULL;
            lit += 4;
        } else {
            assert_int_equal(*lit++, '"');
            char *e = malloc(strlen(lit) + 1), *w = e;
            assert_non_null(e);
            while (*lit != '"') {
                assert_int_not_equal(*lit, '\0');
                if (*lit == '\\')
                    lit++;
                *w++ = *lit++;
            }
            *w = '\0';
            out[n++] = e;
            lit++;
        }
        if (*lit == '}')
            break;
        assert_int_equal(*lit++, ',');
    }
    assert_int_equal(lit[1], '\0');
    return n;
}

static void free_elems(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

static void test_array_quoting_round_trips(void **state)
{
    (void)state;
    const char *cases[] = {
        "", "x", "\\", "\"", "\\\"", "a,b", "{x}", "NULL", "null", " lead", "trail ",
        "tab\there", "nl\nhere", "cr\r\n",
        "{\"room\": \"a\\tb\\\\c\\nd\\\"e'f\", \"uni\": \"\xc3\xa9\xe2\x98\x83\"}",
        "\x01\x02\x1f\x7f",   /* control bytes pass through raw */
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    struct rowfmt_arrays a = { 0 };
    struct reading *rs = calloc(ncases + 1, sizeof *rs);
    assert_non_null(rs);
    for (size_t i = 0; i < ncases; i++) {
        rs[i] = sample();
        snprintf(rs[i].sensor_id, sizeof rs[i].sensor_id, "%s", cases[i]);
        rs[i].tags_json = (char *)cases[i];
        assert_int_equal(rowfmt_arrays_add(&a, &rs[i]), 0);
    }
    rs[ncases] = sample();   /* and one without tags */
    assert_int_equal(rowfmt_arrays_add(&a, &rs[ncases]), 0);

    const char *v[ROWFMT_NARRAYS];
    assert_int_equal(rowfmt_arrays_finish(&a, v), 0);
    char *ids[32], *tags[32];
    assert_int_equal(parse_array(v[0], ids, 32), ncases + 1);
    assert_int_equal(parse_array(v[7], tags, 32), ncases + 1);
    for (size_t i = 0; i < ncases; i++) {
        assert_string_equal(ids[i], cases[i]);
        assert_string_equal(tags[i], cases[i]);
    }
    assert_string_equal(ids[ncases], "s-1");
    assert_null(tags[ncases]);   /* SQL NULL, not the string "NULL" */
    free_elems(ids, ncases + 1);
    free_elems(tags, ncases + 1);
    rowfmt_arrays_free(&a);
    free(rs);
}

static void test_arrays_layout(void **state)
{
    (void)state;
    struct rowfmt_arrays a = { 0 };
    const char *v[ROWFMT_NARRAYS];
    struct reading r = sample();
    assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    char tags[] = "{\"k\":\"a\\\"b\"}";
    r.tags_json = tags;
    r.type = READING_PRESSURE;
    r.raw_unit = "Pa";
    r.value = 1013.25;
    r.raw_value = 101325;
    r.ts_us += 1;
    assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(a.n, 2);
    assert_int_equal(rowfmt_arrays_finish(&a, v), 0);
    /* ROWFMT_COLUMNS order, ingested_by left out. */
    assert_string_equal(v[0], "{\"s-1\",\"s-1\"}");
    assert_string_equal(v[1], "{\"temperature\",\"pressure\"}");
    assert_string_equal(v[2], "{\"2026-11-22T10:00:00.123456Z\",\"2026-11-22T10:00:00.123457Z\"}");
    assert_string_equal(v[3], "{\"21.999999999999996\",\"1013.25\"}");
    assert_string_equal(v[4], "{\"C\",\"hPa\"}");
    assert_string_equal(v[5], "{\"71.6\",\"101325\"}");
    assert_string_equal(v[6], "{\"F\",\"Pa\"}");
    assert_string_equal(v[7], "{NULL,\"{\\\"k\\\":\\\"a\\\\\\\"b\\\"}\"}");
    assert_string_equal(v[8], "{\"2026-11-22T10:00:00.200000Z\",\"2026-11-22T10:00:00.200000Z\"}");

    /* An empty batch is a valid empty array. */
    rowfmt_arrays_reset(&a);
    assert_int_equal(rowfmt_arrays_finish(&a, v), 0);
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        assert_string_equal(v[i], "{}");
    rowfmt_arrays_free(&a);
}

static void test_doubles_round_trip(void **state)
{
    (void)state;
    const double vals[] = { 0.1, 1.0 / 3.0, -0.0, 1e-300, 123456789.123456789, -273.15,
                            5e-324, 1.7976931348623157e308, 21.999999999999996 };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        struct reading r = sample();
        struct rowfmt_params p;
        r.value = vals[i];
        r.raw_value = -vals[i];
        rowfmt_params(&p, &r, "i");
        assert_true(strtod(p.values[3], NULL) == vals[i]);
        assert_true(strtod(p.values[5], NULL) == -vals[i]);
        assert_null(strchr(p.values[3], ','));   /* never a locale's decimal comma */
    }
}

static void test_params_layout(void **state)
{
    (void)state;
    struct reading r = sample();
    char tags[] = "{\"room\":\"a\"}";
    r.tags_json = tags;
    r.type = READING_PRESSURE;
    r.raw_unit = "Pa";
    struct rowfmt_params p;
    rowfmt_params(&p, &r, "ing-2");
    assert_string_equal(p.values[0], "s-1");
    assert_string_equal(p.values[1], "pressure");
    assert_string_equal(p.values[2], "2026-11-22T10:00:00.123456Z");
    assert_string_equal(p.values[4], "hPa");
    assert_string_equal(p.values[6], "Pa");
    assert_string_equal(p.values[7], tags);
    assert_string_equal(p.values[8], "2026-11-22T10:00:00.200000Z");
    assert_string_equal(p.values[9], "ing-2");

    r.tags_json = NULL;
    rowfmt_params(&p, &r, "ing-2");
    assert_null(p.values[7]);   /* SQL NULL for PQexecParams */
}

static void test_timestamps_exact(void **state)
{
    (void)state;
    struct reading r = sample();
    struct rowfmt_params p;
    r.ts_us = 0;
    r.received_at_us = -1;   /* one microsecond before the epoch */
    rowfmt_params(&p, &r, "i");
    assert_string_equal(p.values[2], "1970-01-01T00:00:00.000000Z");
    assert_string_equal(p.values[8], "1969-12-31T23:59:59.999999Z");
}

static void test_buffer_reuse(void **state)
{
    (void)state;
    struct rowfmt_arrays a = { 0 };
    const char *v[ROWFMT_NARRAYS];
    struct reading r = sample();
    for (int i = 0; i < 5000; i++)   /* grows past the first allocation */
        assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(rowfmt_arrays_finish(&a, v), 0);
    size_t big = strlen(v[0]);
    assert_int_equal(big, 1 + 5000 * strlen("\"s-1\","));   /* "{" + 5000 of them, "}" for the last "," */
    rowfmt_arrays_reset(&a);
    assert_int_equal(a.n, 0);
    assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(rowfmt_arrays_finish(&a, v), 0);
    assert_string_equal(v[0], "{\"s-1\"}");
    rowfmt_arrays_free(&a);
    assert_null(a.col[0].data);
    rowfmt_arrays_free(&a);   /* twice is fine */
}

static void expect_clean(const char *in, const char *want, size_t fixed)
{
    char *s = strdup(in);
    assert_non_null(s);
    assert_int_equal(rowfmt_utf8_clean(s), fixed);
    assert_string_equal(s, want);
    free(s);
}

static void test_utf8_clean(void **state)
{
    (void)state;
    expect_clean("plain", "plain", 0);
    const char *uni = "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80";
    expect_clean(uni, uni, 0);
    expect_clean("garbage \xff\xfe", "garbage ??", 2);
    expect_clean("\xc3", "?", 1);                 /* truncated at the end */
    expect_clean("\xe2\x98", "??", 2);
    expect_clean("\xc0\xaf", "??", 2);            /* overlong '/' */
    expect_clean("\xe0\x80\xaf", "???", 3);       /* overlong, 3 bytes */
    expect_clean("\xed\xa0\x80", "???", 3);       /* UTF-16 surrogate */
    expect_clean("\xf4\x90\x80\x80", "????", 4);  /* above U+10FFFF */
    expect_clean("\x80x", "?x", 1);               /* lone continuation */
    expect_clean("a\xc3(b", "a?(b", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_quoting_round_trips),
        cmocka_unit_test(test_arrays_layout),
        cmocka_unit_test(test_doubles_round_trip),
        cmocka_unit_test(test_params_layout),
        cmocka_unit_test(test_timestamps_exact),
        cmocka_unit_test(test_buffer_reuse),
        cmocka_unit_test(test_utf8_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
