/* oracle.c -- the checks shared by the fuzz targets (see oracle.h). */
#include "oracle.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts.h"

const struct reading_limits fuzz_limits = { 16, 300 * 1000000LL };

#define SENTINEL_ID "sentinel"
#define SENTINEL_TAGS "{\"kept\":\"yes\"}"

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static int same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

void fuzz_batch_init(struct reading_batch *b)
{
    memset(b, 0, sizeof *b);
    /* The batch API has no "append one": lay the sentinel in by hand. */
    b->v = calloc(1, sizeof *b->v);
    CHECK(b->v != NULL, "out of memory");
    b->n = b->cap = 1;
    struct reading *r = &b->v[0];
    strcpy(r->sensor_id, SENTINEL_ID);
    r->type = READING_HUMIDITY;
    r->value = r->raw_value = 42.5;
    r->raw_unit = reading_canonical_unit(READING_HUMIDITY);
    r->ts_us = 1;
    r->received_at_us = 2;
    r->tags_json = strdup(SENTINEL_TAGS);
    CHECK(r->tags_json != NULL, "out of memory");
}

void fuzz_check_sentinel_kept(const struct reading_batch *b)
{
    CHECK(b->n >= 1 && b->n <= b->cap && b->v, "n %zu cap %zu", b->n, b->cap);
    const struct reading *r = &b->v[0];
    CHECK(!strcmp(r->sensor_id, SENTINEL_ID) && r->type == READING_HUMIDITY &&
          same_double(r->value, 42.5) && same_double(r->raw_value, 42.5) &&
          r->raw_unit == reading_canonical_unit(READING_HUMIDITY) && r->ts_us == 1 &&
          r->received_at_us == 2 && r->tags_json && !strcmp(r->tags_json, SENTINEL_TAGS),
          "the reading that was in the batch before the call changed");
}

void fuzz_check_rejected(const struct reading_batch *b, const struct reading_error *err)
{
    CHECK(b->n == 1, "rejected, but the batch went from 1 reading to %zu", b->n);
    fuzz_check_sentinel_kept(b);
    CHECK(err->index >= -1, "error index %ld", err->index);
    CHECK(memchr(err->field, '\0', sizeof err->field) != NULL, "field not terminated");
    CHECK(memchr(err->message, '\0', sizeof err->message) != NULL, "message not terminated");
    CHECK(err->message[0] != '\0', "rejected without a message (field '%s')", err->field);
    /* ingestion sends both back in a JSON 400 answer (json_pack "s"). */
    json_t *m = json_string(err->message), *f = json_string(err->field);
    CHECK(m && f, "error is not valid UTF-8: field '%s' message '%s'", err->field, err->message);
    json_decref(m);
    json_decref(f);
}

/* tags_json is what parse_tags writes: the compact dump of an object of at
 * most READING_TAGS_MAX strings, so parsing and dumping it again is a no-op. */
static void check_tags(const char *tags_json)
{
    json_error_t je;
    json_t *o = json_loads(tags_json, JSON_REJECT_DUPLICATES, &je);
    CHECK(o != NULL, "tags %s are not JSON: %s", tags_json, je.text);
    CHECK(json_is_object(o) && json_object_size(o) <= READING_TAGS_MAX, "tags %s", tags_json);
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        CHECK(json_is_string(val), "tag %s is not a string", key);
        CHECK(strlen(key) >= 1 && strlen(key) <= READING_TAG_LEN_MAX &&
              json_string_length(val) <= READING_TAG_LEN_MAX, "tag %s too long", key);
    }
    char *again = json_dumps(o, JSON_COMPACT);
    CHECK(again && !strcmp(again, tags_json), "tags %s dump again as %s", tags_json, again);
    free(again);
    json_decref(o);
}

void fuzz_check_reading(const struct reading *r)
{
    CHECK(memchr(r->sensor_id, '\0', sizeof r->sensor_id) &&
          reading_sensor_id_valid(r->sensor_id, strlen(r->sensor_id)), "sensor_id");
    CHECK(r->type == READING_TEMPERATURE || r->type == READING_HUMIDITY ||
          r->type == READING_PRESSURE, "type %d", (int)r->type);
    /* raw_unit is one of the static names of the type's units. */
    double v;
    const char *u = NULL;
    CHECK(r->raw_unit && reading_convert(r->type, r->raw_unit, r->raw_value, &v, &u) == 0 &&
          u == r->raw_unit, "raw %.17g %s for %s", r->raw_value,
          r->raw_unit ? r->raw_unit : "(null)", reading_type_name(r->type));
    /* value is in range: converting it from the canonical unit accepts it. */
    CHECK(reading_convert(r->type, reading_canonical_unit(r->type), r->value, &v, &u) == 0 &&
          v == r->value, "value %.17g out of range for %s", r->value,
          reading_type_name(r->type));
    CHECK(r->ts_us >= TS_MIN_US && r->ts_us <= TS_MAX_US, "ts_us %lld", (long long)r->ts_us);
    CHECK(r->received_at_us >= TS_MIN_US && r->received_at_us <= TS_MAX_US,
          "received_at_us %lld", (long long)r->received_at_us);
    if (r->tags_json)
        check_tags(r->tags_json);
}

void fuzz_check_parsed_reading(const struct reading *r)
{
    fuzz_check_reading(r);
    double v;
    const char *u;
    CHECK(reading_convert(r->type, r->raw_unit, r->raw_value, &v, &u) == 0 &&
          same_double(v, r->value), "value %.17g is not %.17g %s converted", r->value,
          r->raw_value, r->raw_unit);
    CHECK(!signbit(r->value) || r->value != 0.0, "value -0");
    CHECK(!signbit(r->raw_value) || r->raw_value != 0.0, "raw_value -0");
    CHECK(r->received_at_us == FUZZ_NOW_US, "received_at_us %lld", (long long)r->received_at_us);
    CHECK(r->ts_us - FUZZ_NOW_US <= fuzz_limits.max_future_us, "ts_us %lld too far ahead",
          (long long)r->ts_us);
}

static void check_same_reading(const struct reading *got, const struct reading *want, size_t i)
{
    CHECK(!strcmp(got->sensor_id, want->sensor_id), "[%zu] sensor_id %s != %s", i,
          got->sensor_id, want->sensor_id);
    CHECK(got->type == want->type, "[%zu] type", i);
    CHECK(same_double(got->value, want->value), "[%zu] value %.17g != %.17g", i, got->value,
          want->value);
    CHECK(same_double(got->raw_value, want->raw_value), "[%zu] raw_value %.17g != %.17g", i,
          got->raw_value, want->raw_value);
    CHECK(got->raw_unit == want->raw_unit, "[%zu] raw_unit %s != %s", i, got->raw_unit,
          want->raw_unit);
    CHECK(got->ts_us == want->ts_us, "[%zu] ts_us %lld != %lld", i, (long long)got->ts_us,
          (long long)want->ts_us);
    CHECK(got->received_at_us == want->received_at_us, "[%zu] received_at_us", i);
    CHECK((!got->tags_json && !want->tags_json) ||
          (got->tags_json && want->tags_json && !strcmp(got->tags_json, want->tags_json)),
          "[%zu] tags %s != %s", i, got->tags_json ? got->tags_json : "(none)",
          want->tags_json ? want->tags_json : "(none)");
}

void fuzz_check_message_round_trip(const char *instance, const struct reading *v, size_t n)
{
    struct reading_msg m;
    CHECK(reading_msg_init(&m, instance) == 0, "msg_init(%s)", instance);
    for (size_t i = 0; i < n; i++)
        CHECK(reading_msg_add(&m, &v[i]) == 0, "msg_add");
    CHECK(reading_msg_finish(&m) == 0, "msg_finish");
    CHECK(m.count == n, "count %zu, added %zu", m.count, n);

    struct reading_batch out;
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    fuzz_batch_init(&out);
    CHECK(reading_decode_message(m.buf, m.len, by, sizeof by, NULL, 0, &out, &err) == 0,
          "storage rejects what ingestion sent: [%ld] %s: %s\nmessage: %.*s", err.index,
          err.field, err.message, (int)m.len, m.buf);
    CHECK(!strcmp(by, instance), "by %s != %s", by, instance);
    CHECK(out.n == n + 1, "decoded %zu readings of %zu", out.n - 1, n);
    fuzz_check_sentinel_kept(&out);
    for (size_t i = 0; i < n; i++)
        check_same_reading(&out.v[i + 1], &v[i], i);
    reading_batch_free(&out);
    reading_msg_free(&m);
}

/* The plain reader's answer (fast) against jansson's (ref), whose
 * readings are both in a batch from fuzz_batch_init: the same rc, then the
 * same readings or the same error. Frees both batches. */
static void check_same_outcome(const char *what, int frc, int rrc, struct reading_batch *fast,
                               struct reading_batch *ref, const struct reading_error *ferr,
                               const struct reading_error *rerr)
{
    CHECK(frc == rrc, "%s %d, through jansson %d (%s: %s)", what, frc, rrc,
          frc ? ferr->field : rerr->field, frc ? ferr->message : rerr->message);
    if (frc == 0) {
        CHECK(fast->n == ref->n, "%zu readings, through jansson %zu", fast->n, ref->n);
        for (size_t i = 0; i < fast->n; i++)
            check_same_reading(&fast->v[i], &ref->v[i], i);
    } else {
        CHECK(ferr->index == rerr->index && !strcmp(ferr->field, rerr->field) &&
              !strcmp(ferr->message, rerr->message),
              "errors differ: [%ld] %s: %s / [%ld] %s: %s", ferr->index, ferr->field,
              ferr->message, rerr->index, rerr->field, rerr->message);
    }
    reading_batch_free(fast);
    reading_batch_free(ref);
}

void fuzz_check_decoders_agree(const uint8_t *data, size_t size)
{
    struct reading_batch fast, ref;
    struct reading_error ferr, rerr;
    char fby[READING_INSTANCE_MAX + 1] = "", rby[READING_INSTANCE_MAX + 1] = "";
    char frids[48] = "", rrids[48] = "";
    fuzz_batch_init(&fast);
    fuzz_batch_init(&ref);
    memset(&ferr, 0, sizeof ferr);
    memset(&rerr, 0, sizeof rerr);
    int frc = reading_decode_message(data, size, fby, sizeof fby, frids, sizeof frids, &fast,
                                     &ferr);
    int rrc = reading_decode_message_jansson(data, size, rby, sizeof rby, rrids, sizeof rrids,
                                             &ref, &rerr);
    if (frc == 0 && rrc == 0) {
        CHECK(!strcmp(fby, rby), "by %s != %s", fby, rby);
        CHECK(!strcmp(frids, rrids), "rids %s != %s", frids, rrids);
    }
    check_same_outcome("reading_decode_message", frc, rrc, &fast, &ref, &ferr, &rerr);
}

void fuzz_check_body_parsers_agree(const uint8_t *data, size_t size)
{
    struct reading_batch fast, ref;
    struct reading_error ferr, rerr;
    fuzz_batch_init(&fast);
    fuzz_batch_init(&ref);
    memset(&ferr, 0, sizeof ferr);
    memset(&rerr, 0, sizeof rerr);
    int frc = reading_parse_body((const char *)data, size, &fuzz_limits, FUZZ_NOW_US, &fast,
                                 &ferr);
    int rrc = reading_parse_body_jansson((const char *)data, size, &fuzz_limits, FUZZ_NOW_US,
                                         &ref, &rerr);
    check_same_outcome("reading_parse_body", frc, rrc, &fast, &ref, &ferr, &rerr);
}
