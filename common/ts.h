/* ts.h -- time as int64 microseconds since the Unix epoch (UTC), and the
 * RFC 3339 text form. Pure functions, no locale, no time zone database. */
#ifndef SF_TS_H
#define SF_TS_H

#include <stddef.h>
#include <stdint.h>

/* Every instant accepted, parsed or decoded: years 0001..9999, UTC. */
#define TS_MIN_US (-62135596800LL * 1000000)
#define TS_MAX_US (253402300799LL * 1000000 + 999999)

#define TS_TEXT_MAX 48  /* "9999-12-31T23:59:59.999999Z" + NUL, with room to spare */

/* Wall clock now (CLOCK_REALTIME), in microseconds. */
int64_t ts_now_us(void);

/* Monotonic clock (CLOCK_MONOTONIC), in microseconds: for intervals. */
int64_t ts_mono_us(void);

/* Parses RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" ('t', 'z'
 * and a space separator accepted). Fractions beyond microseconds are
 * truncated. The instant, offset applied, must lie in TS_MIN_US..TS_MAX_US.
 * Returns 0, or -1 with a short reason in *why
 * (a static string) on any malformation, including a missing offset. */
int ts_parse_rfc3339(const char *s, int64_t *out_us, const char **why);

/* Same, for a naive "YYYY-MM-DDTHH:MM:SS[.frac]" taken as UTC (no offset
 * allowed). */
int ts_parse_naive_utc(const char *s, int64_t *out_us, const char **why);

/* Writes "YYYY-MM-DDTHH:MM:SS.ffffffZ" into buf (TS_TEXT_MAX bytes). */
void ts_format(int64_t us, char buf[TS_TEXT_MAX]);

#endif
