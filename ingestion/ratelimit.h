/* ratelimit.h -- a token bucket per sensor id (INGESTION_RATE_PER_SENSOR,
 * INGESTION_BURST_PER_SENSOR): each reading takes a token; a sensor's bucket
 * refills at `rate` tokens/s up to `burst`.
 *
 * Memory is bounded: at most max_sensors buckets. A full bucket is the same
 * as none, so when the table fills up the full ones are dropped; if every
 * bucket is in use the request is let through (a limiter must not become
 * the outage). One thread; nothing here logs. */
#ifndef SF_INGESTION_RATELIMIT_H
#define SF_INGESTION_RATELIMIT_H

#include "reading.h"

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* NULL on out of memory or rate <= 0 (then there is no limit). */
struct ratelimit *ratelimit_new(double rate, double burst, size_t max_sensors);
void ratelimit_free(struct ratelimit *r);

/* Takes one token per reading of b, for every sensor, or none at all.
 * Returns 0 when taken; else -1 with *sensor the first sensor short of
 * tokens (inside b) and *retry_after_s the whole seconds until it would
 * have them (>= 1; 0 when this request alone is more than the burst and
 * can never pass). now_us: a monotonic clock. */
int ratelimit_take(struct ratelimit *r, const struct reading_batch *b, int64_t now_us,
                   const char **sensor, long *retry_after_s);

size_t ratelimit_sensors(const struct ratelimit *r);   /* buckets in use */

#endif
