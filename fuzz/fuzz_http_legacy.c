/* fuzz_http_legacy.c -- libFuzzer target: the old sensor container's POST /
 * payload (plain or JSON-encoded twice), through reading_parse_legacy().
 *
 * Same checks as fuzz_http_body.c; an accepted payload is exactly one
 * temperature in F. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reading_batch b;
    struct reading_error err;
    fuzz_batch_init(&b);
    if (reading_parse_legacy((const char *)data, size, &fuzz_limits, FUZZ_NOW_US, &b, &err) < 0) {
        fuzz_check_rejected(&b, &err);
    } else {
        fuzz_check_sentinel_kept(&b);
        CHECK(b.n == 2, "accepted %zu readings", b.n - 1);
        fuzz_check_parsed_reading(&b.v[1]);
        CHECK(b.v[1].type == READING_TEMPERATURE && !strcmp(b.v[1].raw_unit, "F") &&
              !b.v[1].tags_json, "not a plain temperature in F");
        fuzz_check_message_round_trip(FUZZ_INSTANCE, b.v + 1, 1);
    }
    reading_batch_free(&b);
    return 0;
}
