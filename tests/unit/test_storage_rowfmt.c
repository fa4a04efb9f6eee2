/* test_storage_rowfmt.c -- unit tests for storage/rowfmt: the binary
 * arrays (header, element bytes, tricky strings passed as they are, NULL
 * tags, the empty batch), the text parameters' exact numbers and
 * timestamps, and the UTF-8 cleaning used for dead letters. (That
 * PostgreSQL reads the arrays back the same is checked against the real
 * server by tests/integration/test_ingest_valid.py: every type and unit,
 * its TRICKY tags.) */
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

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* What PostgreSQL's array_recv reads: a one-dimensional array of elem_oid
 * from 1, or the empty array; returns the element count and points
 * elems[i] at each element's bytes (NULL for SQL NULL), lens[i] at its
 * length. has_null is the header's flag. */
static size_t parse_array(const char *v, int len, uint32_t elem_oid, const unsigned char **elems,
                          uint32_t *lens, size_t max, int *has_null)
{
    const unsigned char *p = (const unsigned char *)v, *end = p + len;
    assert_true(len >= 12);
    uint32_t ndim = be32(p);
    *has_null = (int)be32(p + 4);
    assert_true(*has_null == 0 || *has_null == 1);
    assert_int_equal(be32(p + 8), elem_oid);
    if (ndim == 0) {
        assert_int_equal(len, 12);
        return 0;
    }
    assert_int_equal(ndim, 1);
    assert_true(len >= 20);
    size_t n = be32(p + 12);
    assert_int_equal(be32(p + 16), 1);   /* lower bound */
    assert_true(n <= max);
    p += 20;
    for (size_t i = 0; i < n; i++) {
        assert_true(end - p >= 4);
        uint32_t l = be32(p);
        p += 4;
        if (l == UINT32_MAX) {
            elems[i] = NULL;
            lens[i] = 0;
            continue;
        }
        assert_true((size_t)(end - p) >= l);
        elems[i] = p;
        lens[i] = l;
        p += l;
    }
    assert_true(p == end);   /* nothing after the last element */
    return n;
}

static void assert_elem_string(const unsigned char *e, uint32_t len, const char *want)
{
    assert_non_null(e);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(e, want, len);
}

static void test_array_strings_pass_as_they_are(void **state)
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
    int len[ROWFMT_NARRAYS], has_null;
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    const unsigned char *ids[32], *tags[32];
    uint32_t idl[32], tagl[32];
    assert_int_equal(parse_array(v[0], len[0], 25, ids, idl, 32, &has_null), ncases + 1);
    assert_int_equal(has_null, 0);
    assert_int_equal(parse_array(v[7], len[7], 3802, tags, tagl, 32, &has_null), ncases + 1);
    assert_int_equal(has_null, 1);
    for (size_t i = 0; i < ncases; i++) {
        assert_elem_string(ids[i], idl[i], cases[i]);
        assert_int_equal(tags[i][0], 1);   /* jsonb's format version */
        assert_elem_string(tags[i] + 1, tagl[i] - 1, cases[i]);
    }
    assert_elem_string(ids[ncases], idl[ncases], "s-1");
    assert_null(tags[ncases]);   /* SQL NULL, not the string "NULL" */
    rowfmt_arrays_free(&a);
    free(rs);
}

static double elem_double(const unsigned char *e, uint32_t len)
{
    assert_int_equal(len, 8);
    uint64_t bits = be64(e);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* timestamptz: microseconds since 2000-01-01T00:00:00Z. */
static int64_t elem_unix_us(const unsigned char *e, uint32_t len)
{
    assert_int_equal(len, 8);
    return (int64_t)be64(e) + 946684800LL * 1000000;
}

static void test_arrays_layout(void **state)
{
    (void)state;
    struct rowfmt_arrays a = { 0 };
    const char *v[ROWFMT_NARRAYS];
    int len[ROWFMT_NARRAYS], has_null;
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
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);

    /* ROWFMT_COLUMNS order, ingested_by left out, each of its type. */
    const uint32_t oid[ROWFMT_NARRAYS] = { 25, 25, 1184, 701, 25, 701, 25, 3802, 1184 };
    const unsigned char *e[ROWFMT_NARRAYS][2];
    uint32_t l[ROWFMT_NARRAYS][2];
    for (int i = 0; i < ROWFMT_NARRAYS; i++) {
        assert_int_equal(parse_array(v[i], len[i], oid[i], e[i], l[i], 2, &has_null), 2);
        assert_int_equal(has_null, i == 7);
    }
    assert_elem_string(e[0][0], l[0][0], "s-1");
    assert_elem_string(e[0][1], l[0][1], "s-1");
    assert_elem_string(e[1][0], l[1][0], "temperature");
    assert_elem_string(e[1][1], l[1][1], "pressure");
    assert_true(elem_unix_us(e[2][0], l[2][0]) == 1795341600123456LL);
    assert_true(elem_unix_us(e[2][1], l[2][1]) == 1795341600123457LL);
    /* The exact bytes: 2026-11-22T10:00:00.123456Z is 848656800123456 us
     * after 2000-01-01, 0x000303D94F1B8A40. */
    assert_memory_equal(e[2][0], "\x00\x03\x03\xd9\x4f\x1b\x8a\x40", 8);
    assert_true(elem_double(e[3][0], l[3][0]) == (71.6 - 32.0) * 5.0 / 9.0);
    assert_true(elem_double(e[3][1], l[3][1]) == 1013.25);
    assert_memory_equal(e[3][1], "\x40\x8f\xaa\x00\x00\x00\x00\x00", 8);   /* 1013.25 */
    assert_elem_string(e[4][0], l[4][0], "C");
    assert_elem_string(e[4][1], l[4][1], "hPa");
    assert_true(elem_double(e[5][0], l[5][0]) == 71.6);
    assert_true(elem_double(e[5][1], l[5][1]) == 101325);
    assert_elem_string(e[6][0], l[6][0], "F");
    assert_elem_string(e[6][1], l[6][1], "Pa");
    assert_null(e[7][0]);
    assert_int_equal(e[7][1][0], 1);
    assert_elem_string(e[7][1] + 1, l[7][1] - 1, tags);
    assert_true(elem_unix_us(e[8][0], l[8][0]) == 1795341600200000LL);
    assert_true(elem_unix_us(e[8][1], l[8][1]) == 1795341600200000LL);

    /* An empty batch is the empty array (no dimensions). */
    rowfmt_arrays_reset(&a);
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    for (int i = 0; i < ROWFMT_NARRAYS; i++) {
        assert_int_equal(parse_array(v[i], len[i], oid[i], e[i], l[i], 2, &has_null), 0);
        assert_int_equal(has_null, 0);
    }
    /* and a batch after it is whole again */
    r.tags_json = NULL;
    assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    assert_int_equal(parse_array(v[7], len[7], 3802, e[7], l[7], 2, &has_null), 1);
    assert_int_equal(has_null, 1);
    assert_null(e[7][0]);
    rowfmt_arrays_free(&a);
}

static void test_timestamps_around_the_epochs(void **state)
{
    (void)state;
    const int64_t cases[] = { 0, -1, 946684800LL * 1000000, 946684800LL * 1000000 - 1,
                              TS_MIN_US, TS_MAX_US };
    struct rowfmt_arrays a = { 0 };
    const char *v[ROWFMT_NARRAYS];
    int len[ROWFMT_NARRAYS], has_null;
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        struct reading r = sample();
        r.ts_us = cases[i];
        r.received_at_us = -cases[i];
        assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    }
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    const unsigned char *ts[8], *ra[8];
    uint32_t tl[8], rl[8];
    assert_int_equal(parse_array(v[2], len[2], 1184, ts, tl, 8, &has_null), n);
    assert_int_equal(parse_array(v[8], len[8], 1184, ra, rl, 8, &has_null), n);
    for (size_t i = 0; i < n; i++) {
        assert_true(elem_unix_us(ts[i], tl[i]) == cases[i]);
        assert_true(elem_unix_us(ra[i], rl[i]) == -cases[i]);
    }
    /* 2000-01-01 itself is PostgreSQL's zero */
    assert_memory_equal(ts[2], "\0\0\0\0\0\0\0\0", 8);
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
    int len[ROWFMT_NARRAYS], has_null;
    const unsigned char *e[1];
    uint32_t l[1];
    struct reading r = sample();
    for (int i = 0; i < 5000; i++)   /* grows past the first allocation */
        assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    assert_int_equal(len[0], 20 + 5000 * (4 + strlen("s-1")));   /* header, then length and bytes */
    assert_int_equal(len[2], 20 + 5000 * (4 + 8));
    rowfmt_arrays_reset(&a);
    assert_int_equal(a.n, 0);
    assert_int_equal(rowfmt_arrays_add(&a, &r), 0);
    assert_int_equal(rowfmt_arrays_finish(&a, v, len), 0);
    assert_int_equal(parse_array(v[0], len[0], 25, e, l, 1, &has_null), 1);
    assert_elem_string(e[0], l[0], "s-1");
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
        cmocka_unit_test(test_array_strings_pass_as_they_are),
        cmocka_unit_test(test_arrays_layout),
        cmocka_unit_test(test_doubles_round_trip),
        cmocka_unit_test(test_params_layout),
        cmocka_unit_test(test_timestamps_exact),
        cmocka_unit_test(test_timestamps_around_the_epochs),
        cmocka_unit_test(test_buffer_reuse),
        cmocka_unit_test(test_utf8_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
