/* test_common_log.c -- the JSON form of log lines (LOG_FORMAT=json). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"

#include <string.h>

static const char TS[] = "2026-11-22T10:00:00.123Z";

static void test_fields_become_members(void **state)
{
    (void)state;
    char out[1024];
    size_t n = log_json_line(out, sizeof out, TS, "warn", "storage", "storage-1",
                             "storage.dead_letter",
                             "topic=sensorflow/v1/readings/i-1 bytes=12 reason=\"bad \\ value\"");
    assert_int_equal(n, strlen(out));
    assert_string_equal(out,
        "{\"ts\":\"2026-11-22T10:00:00.123Z\",\"level\":\"warn\",\"service\":\"storage\","
        "\"instance\":\"storage-1\",\"event\":\"storage.dead_letter\","
        "\"topic\":\"sensorflow/v1/readings/i-1\",\"bytes\":\"12\","
        "\"reason\":\"bad \\\\ value\"}");
}

static void test_no_fields_and_odd_text(void **state)
{
    (void)state;
    char out[512];
    log_json_line(out, sizeof out, TS, "info", "ingestion", "i", "http.listening", "");
    assert_string_equal(out, "{\"ts\":\"2026-11-22T10:00:00.123Z\",\"level\":\"info\","
                             "\"service\":\"ingestion\",\"instance\":\"i\","
                             "\"event\":\"http.listening\"}");
    /* Not key=value, an unclosed quote, a control character: kept in "extra". */
    log_json_line(out, sizeof out, TS, "info", "x", "i", "e", "a=1 free text\tb=2");
    assert_non_null(strstr(out, ",\"a\":\"1\",\"extra\":\"free text\\u0009b=2\"}"));
    log_json_line(out, sizeof out, TS, "info", "x", "i", "e", "a=\"open");
    assert_non_null(strstr(out, ",\"extra\":\"a=\\\"open\"}"));
}

static void test_cut_lines_stay_one_object(void **state)
{
    (void)state;
    char out[120];
    size_t n = log_json_line(out, sizeof out, TS, "info", "ingestion", "ingestion-1", "e",
                             "k=0123456789012345678901234567890123456789012345678901234567890");
    assert_int_equal(n, sizeof out - 1);
    assert_int_equal(out[n - 1], '}');
    assert_int_equal(out[n - 2], '"');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_become_members),
        cmocka_unit_test(test_no_fields_and_odd_text),
        cmocka_unit_test(test_cut_lines_stay_one_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
