/* fleet.h -- the virtual sensors: who they are, what they measure, and
 * when each one is due.
 *
 * A fleet is N sensors with UUID-like ids, a type/unit mix close to a real
 * building (about half temperature in C, F and a few K; humidity in %;
 * pressure mostly hPa, some Pa and kPa) and a bounded random walk per
 * sensor. With a seed, everything (ids, mix, values, schedule jitter) is a
 * pure function of the seed, so runs repeat. Without one, ids come from the
 * kernel so that fleets in different processes and containers never share
 * an id. Each sensor owns its random streams: its values do not depend on
 * how other sensors are interleaved, nor on fleet or load mode.
 *
 * Times: ts values are wall clock µs (ts_now_us), schedules are monotonic
 * µs (ts_mono_us). Nothing here logs, exits or keeps global state. */
#ifndef SIM_FLEET_H
#define SIM_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "payload.h"
#include "reading.h"
#include "rng.h"

#define FLEET_ID_LEN 36           /* 8-4-4-4-12 hex, like a v4 UUID */
#define FLEET_MAX_SENSORS 1000000

struct fleet_sensor {
    char id[FLEET_ID_LEN + 1];
    enum reading_type type;
    const char *unit;             /* static unit name as reported */
    double value;                 /* current value, canonical unit (C, %, hPa) */
    double lo, hi, step;          /* walk bounds and typical step, canonical */
    double scale;                 /* reported value is rounded to 1/scale */
    struct rng vrng;              /* values */
    struct rng srng;              /* schedule jitter */
    int64_t last_ts_us;           /* ts of the previous reading */
    int64_t due_us;               /* next measurement (monotonic), fleet mode */
};

struct fleet;

/* Builds n sensors (1..FLEET_MAX_SENSORS). ids_from_os != 0: ids from the
 * kernel's random bytes (seed still drives the mix and values); else ids
 * derived from seed too. Returns NULL with a message in err on a bad n,
 * out of memory or a failing random source. Free with fleet_destroy(). */
struct fleet *fleet_create(size_t n, uint64_t seed, int ids_from_os,
                           char *err, size_t errlen);
void fleet_destroy(struct fleet *f);   /* accepts NULL */

size_t fleet_size(const struct fleet *f);
const struct fleet_sensor *fleet_sensor(const struct fleet *f, size_t i);

/* Takes a measurement of sensor i at wall time now_us: advances the walk and
 * fills *out (out->sensor_id points into the fleet). ts is now_us, but always
 * at least 1 µs after the sensor's previous ts, so (sensor_id, type, ts) is
 * unique even at thousands of readings per sensor per second. */
void fleet_measure(struct fleet *f, size_t i, int64_t now_us,
                   struct sim_reading *out);

/* Fleet mode: every sensor measures once per interval_s, jittered by ±20%;
 * the first measurements are spread over [now, now + interval) so a fleet
 * does not post in one burst. */
void fleet_schedule_start(struct fleet *f, double interval_s, int64_t now_mono_us);

/* Earliest due time (monotonic µs); INT64_MAX before fleet_schedule_start. */
int64_t fleet_next_due(const struct fleet *f);

/* If some sensor is due at now_mono_us, reschedules it and returns its index;
 * else returns -1. A sensor that fell more than one interval behind skips
 * the missed slots (a real sensor does not measure twice to catch up). */
long fleet_pop_due(struct fleet *f, int64_t now_mono_us);

/* The next schedule gap for sensor i: interval * U[0.8, 1.2). Exposed for
 * tests. */
int64_t fleet_jittered_us(struct fleet *f, size_t i);

#endif
