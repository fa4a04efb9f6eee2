/* fuzz_ts.c -- libFuzzer target: the timestamp parsers that read the "ts"
 * and "time_of_measurement" strings sensors send (ts_parse_rfc3339,
 * ts_parse_naive_utc), and ts_format.
 *
 * Whatever a parser accepts lies in TS_MIN_US..TS_MAX_US, and ts_format of it
 * parses back to the same microsecond; a naive time means the same as that
 * time with "Z". The input's first 8 bytes, read as an instant, must survive
 * ts_format and parsing back too (when in range). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "ts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_format_round_trip(int64_t us)
{
    char buf[TS_TEXT_MAX];
    int64_t back = 0;
    const char *why = "";
    ts_format(us, buf);
    CHECK(strlen(buf) == 27, "ts_format(%lld) = '%s'", (long long)us, buf);
    CHECK(ts_parse_rfc3339(buf, &back, &why) == 0 && back == us,
          "ts_format(%lld) = '%s' parses back as %lld (%s)", (long long)us, buf,
          (long long)back, why);
    buf[26] = '\0';   /* without the Z: the same instant, naive */
    CHECK(ts_parse_naive_utc(buf, &back, &why) == 0 && back == us,
          "naive '%s' parses as %lld, want %lld (%s)", buf, (long long)back, (long long)us, why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The parsers take C strings: the JSON layer has already refused NULs. */
    char *s = malloc(size + 2);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    int64_t us;
    const char *why = NULL;
    if (ts_parse_rfc3339(s, &us, &why) == 0) {
        CHECK(us >= TS_MIN_US && us <= TS_MAX_US, "'%s' gives %lld", s, (long long)us);
        check_format_round_trip(us);
    } else {
        CHECK(why && *why, "'%s' rejected without a reason", s);
    }

    why = NULL;
    if (ts_parse_naive_utc(s, &us, &why) == 0) {
        CHECK(us >= TS_MIN_US && us <= TS_MAX_US, "naive '%s' gives %lld", s, (long long)us);
        check_format_round_trip(us);
        int64_t z;
        size_t n = strlen(s);
        s[n] = 'Z';
        s[n + 1] = '\0';
        CHECK(ts_parse_rfc3339(s, &z, &why) == 0 && z == us,
              "'%s' is not the naive time %lld (%s)", s, (long long)us, why ? why : "");
    } else {
        CHECK(why && *why, "naive '%s' rejected without a reason", s);
    }
    free(s);

    int64_t raw;
    if (size >= sizeof raw) {
        memcpy(&raw, data, sizeof raw);
        if (raw >= TS_MIN_US && raw <= TS_MAX_US)
            check_format_round_trip(raw);
    }
    return 0;
}
