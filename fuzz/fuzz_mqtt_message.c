/* fuzz_mqtt_message.c -- libFuzzer target: an MQTT payload as storage
 * receives it, through reading_decode_message().
 *
 * Anything may sit on the broker's topic, so the decoder must never crash or
 * leak; a rejection leaves the batch as it was and says why (it becomes a
 * dead letter); an accepted message holds only valid readings, and encoding
 * them again (reading_msg_*) and decoding that gives the same fields. The
 * decoder's own reading of ingestion's form agrees with jansson's on every
 * input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reading_batch b;
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    char rids[48];   /* small: the "..." cut is exercised too */
    fuzz_batch_init(&b);
    if (reading_decode_message(data, size, by, sizeof by, rids, sizeof rids, &b, &err) < 0) {
        fuzz_check_rejected(&b, &err);
    } else {
        fuzz_check_sentinel_kept(&b);
        CHECK(b.n >= 2, "accepted an empty message");
        CHECK(reading_sensor_id_valid(by, strlen(by)), "by '%s'", by);
        CHECK(strlen(rids) < sizeof rids, "rids overran its buffer");
        for (size_t i = 1; i < b.n; i++)
            fuzz_check_reading(&b.v[i]);
        fuzz_check_message_round_trip(by, b.v + 1, b.n - 1);
    }
    reading_batch_free(&b);
    fuzz_check_decoders_agree(data, size);
    return 0;
}
