/* backoff.h -- how long to wait before retrying a request.
 *
 * Exponential backoff with full jitter ("Exponential Backoff and Jitter",
 * AWS Architecture Blog, 2015): the wait is uniform in [0, ceiling], the
 * ceiling doubling from BACKOFF_BASE_US up to BACKOFF_CAP_US. Full jitter
 * spreads a fleet that failed together (proxy restart, 503 burst) so it does
 * not come back together. A server's Retry-After is a floor. Pure functions. */
#ifndef SIM_BACKOFF_H
#define SIM_BACKOFF_H

#include <stdint.h>

#define BACKOFF_BASE_US        100000LL     /* 100 ms after the first failure */
#define BACKOFF_CAP_US        5000000LL     /* ceiling never above 5 s */
#define BACKOFF_RETRY_AFTER_MAX_US 60000000LL /* trust Retry-After up to 60 s */

/* The ceiling after `failures` failed attempts (>= 1):
 * min(BACKOFF_CAP_US, BACKOFF_BASE_US * 2^(failures-1)). */
int64_t backoff_ceiling_us(unsigned failures);

/* The wait after `failures` failed attempts, from 64 random bits r.
 * retry_after_us < 0: uniform in [0, ceiling]. Otherwise the server's value
 * (clamped to BACKOFF_RETRY_AFTER_MAX_US) plus up to 20% of it, so that
 * clients told "1" do not all return in the same millisecond, and never
 * less than the jittered exponential wait. */
int64_t backoff_delay_us(unsigned failures, uint64_t r, int64_t retry_after_us);

/* Parses a Retry-After header: delta-seconds ("3") or an IMF-fixdate
 * ("Sun, 06 Nov 1994 08:49:37 GMT", taken relative to now_wall_us).
 * Returns the wait in µs (>= 0; a date in the past gives 0), or -1 when v is
 * NULL or not understood. */
int64_t backoff_parse_retry_after(const char *v, int64_t now_wall_us);

#endif
