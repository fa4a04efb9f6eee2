/* test_storage_rowfmt.c -- unit tests for storage/rowfmt: COPY text escaping
 * of tricky strings, the row layout, exact numbers and timestamps, and the
 * UTF-8 cleaning used for dead letters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../storage/rowfmt.h"

/* Formats one field into a fresh NUL-terminated string (caller frees). */
static char *field(const char *s)
{
    struct rowbuf b = { 0 };
    rowfmt_copy_field(&b, s);
    assert_int_equal(b.oom, 0);
    char *out = malloc(b.len + 1);
    assert_non_null(out);
    if (b.len)
        memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    rowbuf_free(&b);
    return out;
}

static void expect_field(const char *in, const char *want)
{
    char *got = field(in);
    assert_string_equal(got, want);
    free(got);
}

/* What PostgreSQL's COPY text reader does with a field (the subset of
 * escapes rowfmt produces), to check that escaping round-trips. */
static char *unescape(const char *s)
{
    char *out = malloc(strlen(s) + 1), *w = out;
    assert_non_null(out);
    for (; *s; s++) {
        if (*s != '\\') {
            *w++ = *s;
            continue;
        }
        s++;
        switch (*s) {
        case 't': *w++ = '\t'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case '\\': *w++ = '\\'; break;
        default: fail_msg("unexpected escape \\%c", *s);
        }
    }
    *w = '\0';
    return out;
}

static void test_plain_and_unicode_pass_through(void **state)
{
    (void)state;
    expect_field("", "");
    expect_field("s-1", "s-1");
    /* Quotes mean nothing in text format; UTF-8 (2, 3 and 4 bytes) is copied. */
    expect_field("it's \"quoted\"", "it's \"quoted\"");
    const char *uni = "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80";
    expect_field(uni, uni);
    expect_field("a,b;c|d", "a,b;c|d");
}

static void test_specials_are_escaped(void **state)
{
    (void)state;
    expect_field("a\tb", "a\\tb");
    expect_field("a\nb", "a\\nb");
    expect_field("a\rb", "a\\rb");
    expect_field("a\\b", "a\\\\b");
    /* A lone "\." line would end the COPY data; "\N" would read as NULL. */
    expect_field("\\.", "\\\\.");
    expect_field("\\N", "\\\\N");
    expect_field("\\\\", "\\\\\\\\");
    expect_field("\t\n\r\\", "\\t\\n\\r\\\\");
    expect_field("end\\", "end\\\\");
}

static void test_null_marker(void **state)
{
    (void)state;
    expect_field(NULL, "\\N");
}

static void test_escaping_round_trips(void **state)
{
    (void)state;
    const char *cases[] = {
        "", "x", "\\", "\\\\t", "tab\there", "nl\nhere", "cr\r\n", "\\N", "\\.",
        "{\"room\": \"a\\tb\\\\c\\nd\\\"e'f\", \"uni\": \"\xc3\xa9\xe2\x98\x83\"}",
        "\x01\x02\x1f\x7f",   /* other control bytes pass through raw */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *esc = field(cases[i]);
        /* No raw separator or line end may survive escaping. */
        assert_null(strpbrk(esc, "\t\n\r"));
        char *back = unescape(esc);
        assert_string_equal(back, cases[i]);
        free(back);
        free(esc);
    }
}

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

static char *line_of(const struct reading *r, const char *by)
{
    struct rowbuf b = { 0 };
    assert_int_equal(rowfmt_copy_line(&b, r, by), 0);
    char *out = strndup(b.data, b.len);
    assert_non_null(out);
    rowbuf_free(&b);
    return out;
}

static void test_line_layout(void **state)
{
    (void)state;
    struct reading r = sample();
    char *line = line_of(&r, "ingestion-1");
    assert_string_equal(line,
        "s-1\ttemperature\t2026-11-22T10:00:00.123456Z\t21.999999999999996\tC\t"
        "71.599999999999994\tF\t\\N\t2026-11-22T10:00:00.200000Z\tingestion-1\n");
    free(line);

    /* Tags are JSON text: its backslashes must be doubled, its tabs escaped. */
    char tags[] = "{\"k\":\"a\\tb\\\\c\",\"raw\":\"x\ty\"}";
    r.tags_json = tags;
    line = line_of(&r, "i");
    assert_non_null(strstr(line, "\t{\"k\":\"a\\\\tb\\\\\\\\c\",\"raw\":\"x\\ty\"}\t"));
    /* Exactly ROWFMT_NCOLS fields. */
    int tabs = 0;
    for (char *p = line; *p; p++)
        tabs += *p == '\t';
    assert_int_equal(tabs, ROWFMT_NCOLS - 1);
    free(line);
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

static void test_params_match_line(void **state)
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
    struct rowbuf b = { 0 };
    struct reading r = sample();
    for (int i = 0; i < 5000; i++)   /* grows past the first allocation */
        assert_int_equal(rowfmt_copy_line(&b, &r, "i"), 0);
    size_t one = b.len / 5000;
    assert_int_equal(b.len % 5000, 0);
    rowbuf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(rowfmt_copy_line(&b, &r, "i"), 0);
    assert_int_equal(b.len, one);
    rowbuf_free(&b);
    assert_null(b.data);
    rowbuf_free(&b);   /* twice is fine */
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
        cmocka_unit_test(test_plain_and_unicode_pass_through),
        cmocka_unit_test(test_specials_are_escaped),
        cmocka_unit_test(test_null_marker),
        cmocka_unit_test(test_escaping_round_trips),
        cmocka_unit_test(test_line_layout),
        cmocka_unit_test(test_doubles_round_trip),
        cmocka_unit_test(test_params_match_line),
        cmocka_unit_test(test_timestamps_exact),
        cmocka_unit_test(test_buffer_reuse),
        cmocka_unit_test(test_utf8_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
