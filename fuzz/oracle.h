/* oracle.h -- what the fuzz targets check: the contracts of common/reading.h
 * and common/ts.h turned into abort() on any breach, so that libFuzzer
 * reports a wrong answer the way it reports a crash.
 *
 * Every target parses under the same fixed clock and limits, so a crash file
 * replays the same way on any machine and any day. */
#ifndef SF_FUZZ_ORACLE_H
#define SF_FUZZ_ORACLE_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"

#define FUZZ_NOW_US 1795341600123000LL   /* 2026-11-22T10:00:00.123Z */
#define FUZZ_INSTANCE "ingestion-1"       /* the "by" of the messages we build */

/* 16 readings (not 1000), so that "too many" is within reach of the fuzzer. */
extern const struct reading_limits fuzz_limits;

/* Prints where and why on stderr, then abort(): libFuzzer saves the input. */
void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* Unlike assert(), never compiled out. */
#define CHECK(cond, ...) \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, "CHECK(" #cond ") " __VA_ARGS__))

/* Empties b (zeroed) and puts one sentinel reading into it. The sentinel owns
 * tags, so ASan sees a leak or a double free on the parsers' error paths. */
void fuzz_batch_init(struct reading_batch *b);

/* After a failed parse or decode: b holds exactly the sentinel, and err is
 * filled (a message, NUL-terminated strings, index >= -1). */
void fuzz_check_rejected(const struct reading_batch *b, const struct reading_error *err);

/* After a successful one: the sentinel is still first and untouched. */
void fuzz_check_sentinel_kept(const struct reading_batch *b);

/* What both the HTTP parsers and the decoder promise of every reading they
 * return: a valid id, a known type and unit, a finite value in range, times
 * in TS_MIN_US..TS_MAX_US, tags a small object of strings or NULL. */
void fuzz_check_reading(const struct reading *r);

/* What the HTTP parsers promise on top: value is exactly raw_value converted
 * from raw_unit, no -0, received_at_us is now, ts_us at most max_future_us
 * ahead of it. */
void fuzz_check_parsed_reading(const struct reading *r);

/* Builds the MQTT message of v[0..n) as ingestion does (reading_msg_*),
 * decodes it as storage does, and aborts unless reading_decode_message
 * accepts it and gives back "by" and every field bit for bit. */
void fuzz_check_message_round_trip(const char *instance, const struct reading *v, size_t n);

/* reading_decode_message (which reads ingestion's own form without jansson)
 * and reading_decode_message_jansson give the same answer for these bytes:
 * the same readings, by and rids, or the same error. */
void fuzz_check_decoders_agree(const uint8_t *data, size_t size);

/* reading_parse_body (which reads plain readings without jansson) and
 * reading_parse_body_jansson give the same answer for these bytes: the same
 * readings or the same error. */
void fuzz_check_body_parsers_agree(const uint8_t *data, size_t size);

#endif
