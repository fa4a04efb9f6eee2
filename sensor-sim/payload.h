/* payload.h -- the text the simulator sends and records: JSON reading
 * objects for POST /v1/readings, CSV lines for the accepted log, the tags
 * fragment from SIM_TAGS.
 *
 * Hand-formatted, not built with jansson: this is the load generator's hot
 * path. Sensor ids are not escaped, so callers pass only ids that match
 * [A-Za-z0-9._:-]{1,64} (fleet ids and validated replay ids do). */
#ifndef SIM_PAYLOAD_H
#define SIM_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"
#include "sbuf.h"

/* One reading as the simulator sends it. */
struct sim_reading {
    const char *sensor_id;   /* [A-Za-z0-9._:-]{1,64}; not owned */
    enum reading_type type;
    const char *unit;        /* a static unit name ("C", "%", "hPa" ...) */
    double value;            /* in unit; finite */
    int64_t ts_us;           /* time of measurement, µs since the epoch */
};

/* The per-request formatting context, computed once at start. */
struct payload_fmt {
    const char *tags;        /* ,"tags":{...} fragment or "" */
    size_t tags_len;
};

#define PAYLOAD_PREFIX_MAX 192

/* Writes the part of a reading object that never changes for one sensor,
 *   {"sensor_id":"<id>","type":"<type>","unit":"<unit>","value":
 * into buf and returns its length. Fleet mode computes it once per sensor. */
size_t payload_prefix(char buf[PAYLOAD_PREFIX_MAX], const char *sensor_id,
                      enum reading_type type, const char *unit);

/* Appends one reading object to json (no separator; the caller writes ','
 * and brackets), and, when csv is not NULL, the accepted-log line
 *   sensor_id,type,ts,value,unit\n
 * with the very same ts and value text. prefix is payload_prefix() of the
 * reading's sensor, or NULL to build it here (replay). */
void payload_add(struct sbuf *json, struct sbuf *csv,
                 const struct sim_reading *r,
                 const char *prefix, size_t prefix_len,
                 const struct payload_fmt *fmt);

/* Parses SIM_TAGS, "k=v,k2=v2" (empty: no tags), into the JSON fragment
 *   ,"tags":{"k":"v","k2":"v2"}
 * appended to out. Keys are non-empty; keys and values at most
 * READING_TAG_LEN_MAX bytes, no control characters; at most
 * READING_TAGS_MAX tags, no key twice. Returns 0, or -1 with a message in
 * err (out then holds an unspecified prefix). */
int payload_tags(const char *spec, struct sbuf *out, char *err, size_t errlen);

#endif
