/* rowfmt.h -- readings as database rows: arrays in PostgreSQL's binary
 * format for a batch INSERT ... SELECT FROM unnest, or the text parameters
 * of a one-row INSERT. Also makes arbitrary bytes safe for a PostgreSQL
 * text column. Pure functions: no I/O, no logging. */
#ifndef SF_STORAGE_ROWFMT_H
#define SF_STORAGE_ROWFMT_H

#include "reading.h"
#include "ts.h"

#include <stddef.h>

/* The columns, in the order both forms use. */
#define ROWFMT_COLUMNS \
    "sensor_id, type, ts, value, unit, raw_value, raw_unit, tags, received_at, ingested_by"
#define ROWFMT_NCOLS 10
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

/* A batch as PostgreSQL arrays, one per column but the last (ingested_by
 * is the same for every reading of a message), for one
 * INSERT ... SELECT FROM unnest($1, ..., $9): one statement, one round trip
 * and one implicit transaction per message. In binary format (array_recv's:
 * a header, then each element as its length and bytes), so that the server
 * parses no text but the tags' JSON, and nothing needs escaping: text[],
 * text[], timestamptz[], float8[], text[], float8[], text[], jsonb[],
 * timestamptz[], in ROWFMT_COLUMNS order. Zero-initialise. */
#define ROWFMT_NARRAYS (ROWFMT_NCOLS - 1)
struct rowfmt_arrays {
    struct rowbuf col[ROWFMT_NARRAYS];
    size_t n;        /* readings added */
    int tags_null;   /* a reading without tags was added */
};

/* Empties the arrays and keeps their memory for reuse. */
void rowfmt_arrays_reset(struct rowfmt_arrays *a);
void rowfmt_arrays_free(struct rowfmt_arrays *a);
/* Appends r's fields, tags NULL for a reading without them. The strings
 * are sent as they are: the server checks that text is valid UTF-8 and
 * that tags are JSON. Returns 0, or -1 once out of memory. */
int rowfmt_arrays_add(struct rowfmt_arrays *a, const struct reading *r);
/* Completes the arrays; values[i] and lengths[i] are then column i's bytes
 * and their number, for PQexecPrepared with paramFormats 1 (valid until
 * the next reset). Returns 0, or -1 if any append ran out of memory. */
int rowfmt_arrays_finish(struct rowfmt_arrays *a, const char *values[ROWFMT_NARRAYS],
                         int lengths[ROWFMT_NARRAYS]);

/* The same row as text parameters for PQexecParams. values[] point into p
 * and r (and by): p and r must outlive their use. */
struct rowfmt_params {
    char ts[TS_TEXT_MAX], received_at[TS_TEXT_MAX];
    char value[READING_NUMBER_MAX], raw_value[READING_NUMBER_MAX];
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
