/* rowfmt.h -- a reading as a database row: a line of COPY text format, or
 * the text parameters of a one-row INSERT. Also makes arbitrary bytes safe
 * for a PostgreSQL text column. Pure functions: no I/O, no logging. */
#ifndef SF_STORAGE_ROWFMT_H
#define SF_STORAGE_ROWFMT_H

#include "reading.h"
#include "ts.h"

#include <stddef.h>

/* The columns, in the order both forms use. */
#define ROWFMT_COLUMNS \
    "sensor_id, type, ts, value, unit, raw_value, raw_unit, tags, received_at, ingested_by"
#define ROWFMT_NCOLS 10
/* The same columns with their types, for the per-session stage table (not
 * LIKE readings: that needs SELECT on readings, which storage's role has
 * not). Keep in step with ROWFMT_COLUMNS and the migrations. */
#define ROWFMT_STAGE_COLUMNS \
    "sensor_id text, type text, ts timestamptz, value double precision, unit text, " \
    "raw_value double precision, raw_unit text, tags jsonb, received_at timestamptz, " \
    "ingested_by text"

/* A growing byte buffer. Zero-initialise. An allocation failure is sticky:
 * later appends do nothing and oom stays set, so a whole batch can be
 * formatted and checked once. */
struct rowbuf {
    char *data;
    size_t len, cap;
    int oom;
};

/* Empties the buffer (len = 0, oom = 0) and keeps its memory for reuse. */
void rowbuf_reset(struct rowbuf *b);
/* Frees the memory; the buffer is then empty and reusable. */
void rowbuf_free(struct rowbuf *b);

/* Appends s as one COPY text-format field: backslash, tab, newline and
 * carriage return are escaped, everything else (UTF-8 included) is copied.
 * s == NULL appends the NULL marker \N. */
void rowfmt_copy_field(struct rowbuf *b, const char *s);

/* Appends one complete COPY line (ROWFMT_COLUMNS, tab separated, '\n'
 * terminated) for r, ingested by `by`. Timestamps go as RFC 3339 text with
 * microseconds and 'Z' (exact, independent of the session TimeZone), doubles
 * as "%.17g" (round-trips exactly; we never call setlocale, so '.' is the
 * decimal point). Returns 0, or -1 once the buffer is out of memory. */
int rowfmt_copy_line(struct rowbuf *b, const struct reading *r, const char *by);

/* The same row as text parameters for PQexecParams. values[] point into p
 * and r (and by): p and r must outlive their use. */
struct rowfmt_params {
    char ts[TS_TEXT_MAX], received_at[TS_TEXT_MAX];
    char value[32], raw_value[32];
    const char *values[ROWFMT_NCOLS];
};
void rowfmt_params(struct rowfmt_params *p, const struct reading *r, const char *by);

/* Makes s valid UTF-8 in place, for text columns (topics, reasons): every
 * byte that does not start a well-formed sequence (overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences included)
 * becomes '?'. The length never changes. Returns how many bytes were
 * replaced. */
size_t rowfmt_utf8_clean(char *s);

#endif
