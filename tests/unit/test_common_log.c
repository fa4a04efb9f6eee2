/* test_common_log.c -- the JSON form of log lines (LOG_FORMAT=json). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"

#include <string.h>
#include <unistd.h>

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

/* The text form: a value with a newline (a client's text) stays on the
 * event's one line. */
static void test_text_line_is_one_line(void **state)
{
    (void)state;
    int fds[2], saved = dup(STDERR_FILENO);
    assert_int_equal(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    log_init("ingestion", "i-1", LOG_DEBUG);
    log_debug("http.rejected", "error=\"unknown type 'temp\nFAKE LINE'\"\r");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "http.rejected error=\"unknown type 'temp FAKE LINE'\" "));
    assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_become_members),
        cmocka_unit_test(test_no_fields_and_odd_text),
        cmocka_unit_test(test_cut_lines_stay_one_object),
        cmocka_unit_test(test_text_line_is_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
