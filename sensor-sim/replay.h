/* replay.h -- readings from a CSV file instead of the virtual fleet.
 *
 * Format, one reading per line:  ts,sensor_id,type,value,unit
 *   2026-11-22T10:00:00.123456Z,3f2a9c1e-8b7d-4c2e-9a1f-0b5e6d7c8a90,temperature,71.6,F
 * An optional header line with exactly those names; blank lines, a UTF-8
 * BOM and CRLF line ends are accepted; no quoting. ts is RFC 3339 with an
 * offset; sensor_id matches [A-Za-z0-9._:-]{1,64}; type/unit as the API
 * takes them (the value must be physically possible in that unit).
 *
 * The caller validates the whole file first (replay_next until 0), then
 * rewinds and sends, so a bad row stops the run before anything is posted.
 * Nothing here logs or exits. */
#ifndef SIM_REPLAY_H
#define SIM_REPLAY_H

#include <stddef.h>

#include "payload.h"
#include "reading.h"

#define REPLAY_LINE_MAX 1024

struct replay;

/* Opens path. NULL with err filled when it cannot be read. */
struct replay *replay_open(const char *path, char *err, size_t errlen);

/* Reads the next row: returns 1 with *out filled (out->sensor_id points into
 * the replay and is valid until the next call), 0 at the end of the file,
 * -1 with err "line N: <why>" on a bad row or a read error. */
int replay_next(struct replay *r, struct sim_reading *out, char *err, size_t errlen);

/* Starts again from the first line. Returns 0, or -1 with err. */
int replay_rewind(struct replay *r, char *err, size_t errlen);

/* Line number of the row last returned (1-based). */
long replay_line(const struct replay *r);

void replay_close(struct replay *r);   /* accepts NULL */

/* Parses one line (no line end; modified in place). Returns 1 for a
 * reading (*out filled, out->sensor_id points into line), 0 for a line to
 * skip (blank, or the header when allow_header), -1 with a reason in why. */
int replay_parse_line(char *line, int allow_header, struct sim_reading *out,
                      char *why, size_t whylen);

#endif
