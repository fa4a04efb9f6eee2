/* fuzz_http_body.c -- libFuzzer target: a POST /v1/readings body, from the
 * network, through reading_parse_body().
 *
 * Besides ASan/UBSan and leaks it checks the contract: a rejection leaves the
 * batch as it was and says why; whatever is accepted is valid, converted
 * exactly, and survives the MQTT message to storage bit for bit (else a
 * reading answered 202 would become a dead letter, or change on the way);
 * and the plain reader and jansson's give the same answer. */
#include <stddef.h>
#include <stdint.h>

#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reading_batch b;
    struct reading_error err;
    fuzz_batch_init(&b);
    if (reading_parse_body((const char *)data, size, &fuzz_limits, FUZZ_NOW_US, &b, &err) < 0) {
        fuzz_check_rejected(&b, &err);
    } else {
        fuzz_check_sentinel_kept(&b);
        CHECK(b.n >= 2 && b.n - 1 <= fuzz_limits.max_readings, "accepted %zu readings",
              b.n - 1);
        for (size_t i = 1; i < b.n; i++)
            fuzz_check_parsed_reading(&b.v[i]);
        fuzz_check_message_round_trip(FUZZ_INSTANCE, b.v + 1, b.n - 1);
    }
    reading_batch_free(&b);
    fuzz_check_body_parsers_agree(data, size);
    return 0;
}
