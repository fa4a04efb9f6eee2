/* test_sim_replay.c -- unit tests for sensor-sim/replay: good rows, the
 * optional header, blank lines, CRLF and BOM, and bad rows reported with
 * their line number. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../sensor-sim/replay.h"
#include "reading.h"

#define T0 1795341600123456LL       /* 2026-11-22T10:00:00.123456Z */

static char path[64];

static struct replay *open_text(const char *text)
{
    strcpy(path, "/tmp/test_sim_replay_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_true(write(fd, text, n) == (ssize_t)n);
    close(fd);
    char err[200];
    struct replay *r = replay_open(path, err, sizeof err);
    if (!r)
        fail_msg("replay_open: %s", err);
    return r;
}

static void done(struct replay *r)
{
    replay_close(r);
    unlink(path);
}

static void test_parse_line_good(void **state)
{
    (void)state;
    char line[] = " 2026-11-22T10:00:00.123456Z , sensor-1 ,temperature, 71.6 ,F";
    struct sim_reading r;
    char why[200];
    assert_int_equal(replay_parse_line(line, 0, &r, why, sizeof why), 1);
    assert_string_equal(r.sensor_id, "sensor-1");
    assert_int_equal(r.type, READING_TEMPERATURE);
    assert_true(r.value == 71.6);
    assert_string_equal(r.unit, "F");
    assert_true(r.ts_us == T0);

    /* An offset is converted; fractions beyond µs are cut as ingestion does. */
    char l2[] = "2026-11-22T12:00:00.1234569+02:00,a.b:c_d-9,pressure,-0,kPa";
    assert_int_equal(replay_parse_line(l2, 0, &r, why, sizeof why), 1);
    assert_true(r.ts_us == T0);
    assert_string_equal(r.unit, "kPa");
    char l3[] = "2026-11-22T10:00:00Z,h,humidity,1e1,%";
    assert_int_equal(replay_parse_line(l3, 0, &r, why, sizeof why), 1);
    assert_true(r.value == 10.0);
}

static void test_header_and_blank(void **state)
{
    (void)state;
    struct sim_reading r;
    char why[200];
    char h[] = "ts,sensor_id,type,value,unit";
    assert_int_equal(replay_parse_line(h, 1, &r, why, sizeof why), 0);
    char h2[] = "TS, Sensor_ID ,type,value,unit";
    assert_int_equal(replay_parse_line(h2, 1, &r, why, sizeof why), 0);
    char h3[] = "ts,sensor_id,type,value,unit";
    /* Only the first line may be a header. */
    assert_int_equal(replay_parse_line(h3, 0, &r, why, sizeof why), -1);
    char blank[] = "   \t ";
    assert_int_equal(replay_parse_line(blank, 0, &r, why, sizeof why), 0);
}

static void bad(const char *text, const char *want)
{
    char line[1200];
    struct sim_reading r;
    char why[200] = "";
    snprintf(line, sizeof line, "%s", text);
    if (replay_parse_line(line, 1, &r, why, sizeof why) != -1)
        fail_msg("accepted: %s", text);
    if (!strstr(why, want))
        fail_msg("\"%s\": reason \"%s\" does not say \"%s\"", text, why, want);
}

static void test_bad_rows(void **state)
{
    (void)state;
    bad("2026-11-22T10:00:00Z,s1,temperature,20", "expected 5 fields");
    bad("2026-11-22T10:00:00Z,s1,temperature,20,C,extra", "got 6");
    bad("2026-11-22T10:00:00,s1,temperature,20,C", "bad ts");
    bad("yesterday,s1,temperature,20,C", "bad ts");
    bad("2026-11-22T10:00:00Z,,temperature,20,C", "bad sensor_id");
    bad("2026-11-22T10:00:00Z,s 1,temperature,20,C", "bad sensor_id");
    bad("2026-11-22T10:00:00Z,s/1,temperature,20,C", "bad sensor_id");
    bad("2026-11-22T10:00:00Z,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,temperature,20,C",
        "bad sensor_id");
    bad("2026-11-22T10:00:00Z,s1,temp,20,C", "bad type");
    bad("2026-11-22T10:00:00Z,s1,temperature,,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,20x,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,nan,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,inf,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,0x10,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,1e999,C", "bad value");
    bad("2026-11-22T10:00:00Z,s1,temperature,20,hPa", "bad unit");
    bad("2026-11-22T10:00:00Z,s1,temperature,-300,C", "bad unit or value");
    bad("2026-11-22T10:00:00Z,s1,humidity,101,%", "bad unit or value");
    bad("\"2026-11-22T10:00:00Z\",s1,temperature,20,C", "bad ts");
}

static void test_file_good(void **state)
{
    (void)state;
    struct replay *r = open_text(
        "\xef\xbb\xbfts,sensor_id,type,value,unit\r\n"
        "2026-11-22T10:00:00.123456Z,s1,temperature,71.6,F\r\n"
        "\n"
        "2026-11-22T10:00:01Z,s2,humidity,45,%\n"
        "2026-11-22T10:00:02Z,s3,pressure,101325,Pa");      /* no final newline */
    struct sim_reading rd;
    char err[300];
    const char *ids[] = { "s1", "s2", "s3" };
    const long lines[] = { 2, 4, 5 };
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 3; i++) {
            assert_int_equal(replay_next(r, &rd, err, sizeof err), 1);
            assert_string_equal(rd.sensor_id, ids[i]);
            assert_int_equal(replay_line(r), lines[i]);
        }
        assert_int_equal(replay_next(r, &rd, err, sizeof err), 0);
        assert_int_equal(replay_rewind(r, err, sizeof err), 0);
    }
    done(r);
}

static void test_file_bad_row_has_line_number(void **state)
{
    (void)state;
    struct replay *r = open_text(
        "2026-11-22T10:00:00Z,s1,temperature,20,C\n"
        "2026-11-22T10:00:01Z,s2,temperature,21,C\n"
        "\n"
        "2026-11-22T10:00:02Z,s3,temperature,warm,C\n"
        "2026-11-22T10:00:03Z,s4,temperature,22,C\n");
    struct sim_reading rd;
    char err[300];
    assert_int_equal(replay_next(r, &rd, err, sizeof err), 1);
    assert_int_equal(replay_next(r, &rd, err, sizeof err), 1);
    assert_int_equal(replay_next(r, &rd, err, sizeof err), -1);
    if (strncmp(err, "line 4: bad value", 17) != 0)
        fail_msg("error \"%s\"", err);
    done(r);
}

static void test_file_long_line_and_nul(void **state)
{
    (void)state;
    char *text = malloc(3000);
    assert_non_null(text);
    strcpy(text, "2026-11-22T10:00:00Z,s1,temperature,20,C\n2026-11-22T10:00:00Z,");
    size_t n = strlen(text);
    memset(text + n, 'a', 1500);
    strcpy(text + n + 1500, ",temperature,20,C\n");
    struct replay *r = open_text(text);
    struct sim_reading rd;
    char err[300];
    assert_int_equal(replay_next(r, &rd, err, sizeof err), 1);
    assert_int_equal(replay_next(r, &rd, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2: longer than"));
    done(r);
    free(text);

    char err2[200];
    assert_null(replay_open("/nonexistent/x.csv", err2, sizeof err2));
    assert_non_null(strstr(err2, "/nonexistent/x.csv"));
    replay_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_line_good),
        cmocka_unit_test(test_header_and_blank),
        cmocka_unit_test(test_bad_rows),
        cmocka_unit_test(test_file_good),
        cmocka_unit_test(test_file_bad_row_has_line_number),
        cmocka_unit_test(test_file_long_line_and_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
