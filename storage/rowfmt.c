/* rowfmt.c -- readings as database rows (binary arrays or text parameters). */
#include "rowfmt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rowbuf_reset(struct rowbuf *b)
{
    b->len = 0;
    b->oom = 0;
}

void rowbuf_free(struct rowbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Makes room for n more bytes. Returns 0, or -1 (and sets oom) on failure. */
static int reserve(struct rowbuf *b, size_t n)
{
    if (b->oom)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2)
            goto oom;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p)
        goto oom;
    b->data = p;
    b->cap = cap;
    return 0;
oom:
    b->oom = 1;
    return -1;
}

static void put(struct rowbuf *b, const char *s, size_t n)
{
    /* n == 0 with data still NULL: memcpy(NULL, s, 0) is undefined. */
    if (n && reserve(b, n) == 0) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
    }
}

static void put_be32(struct rowbuf *b, uint32_t v)
{
    unsigned char x[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v };
    put(b, (const char *)x, sizeof x);
}

static void put_be64(struct rowbuf *b, uint64_t v)
{
    put_be32(b, (uint32_t)(v >> 32));
    put_be32(b, (uint32_t)v);
}

/* The element types' pg_type OIDs (stable since forever), in ROWFMT_COLUMNS
 * order, which rowfmt_arrays_add follows. */
#define COL_TAGS 7   /* the only column with NULLs */
static const uint32_t elem_oid[ROWFMT_NARRAYS] = {
    25, 25, 1184, 701, 25, 701, 25, 3802, 1184,   /* text, timestamptz, float8, jsonb */
};

/* Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01T00:00:00Z. */
#define PG_EPOCH_US (946684800LL * 1000000)
#define ARRAY_HEADER 20   /* ndim, flags, element type, then length and lower bound */

/* A NULL element: length -1. */
static void elem_null(struct rowbuf *b)
{
    put_be32(b, UINT32_MAX);
}

static void elem_text(struct rowbuf *b, const char *s)
{
    size_t n = strlen(s);
    put_be32(b, (uint32_t)n);   /* at most a message's size: well under 2^31 */
    put(b, s, n);
}

/* timestamptz_recv: int64 microseconds since PostgreSQL's epoch. */
static void elem_ts(struct rowbuf *b, int64_t unix_us)
{
    put_be32(b, 8);
    put_be64(b, (uint64_t)(unix_us - PG_EPOCH_US));
}

/* float8recv: the IEEE 754 bits, most significant byte first. */
static void elem_float8(struct rowbuf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_be32(b, 8);
    put_be64(b, bits);
}

/* jsonb_recv: format version 1, then the JSON text. */
static void elem_jsonb(struct rowbuf *b, const char *s)
{
    size_t n = strlen(s);
    put_be32(b, (uint32_t)n + 1);
    put(b, "\1", 1);
    put(b, s, n);
}

void rowfmt_arrays_reset(struct rowfmt_arrays *a)
{
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        rowbuf_reset(&a->col[i]);
    a->n = 0;
    a->tags_null = 0;
}

void rowfmt_arrays_free(struct rowfmt_arrays *a)
{
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        rowbuf_free(&a->col[i]);
    a->n = 0;
    a->tags_null = 0;
}

int rowfmt_arrays_add(struct rowfmt_arrays *a, const struct reading *r)
{
    static const char header[ARRAY_HEADER];   /* filled in by rowfmt_arrays_finish */
    struct rowbuf *c = a->col;
    int oom = 0;
    if (a->n == 0)   /* (dropping an empty array's header, if finished empty) */
        for (int i = 0; i < ROWFMT_NARRAYS; i++) {
            rowbuf_reset(&c[i]);
            put(&c[i], header, sizeof header);
        }
    elem_text(&c[0], r->sensor_id);
    elem_text(&c[1], reading_type_name(r->type));
    elem_ts(&c[2], r->ts_us);
    elem_float8(&c[3], r->value);
    elem_text(&c[4], reading_canonical_unit(r->type));
    elem_float8(&c[5], r->raw_value);
    elem_text(&c[6], r->raw_unit);
    if (r->tags_json) {
        elem_jsonb(&c[COL_TAGS], r->tags_json);
    } else {
        elem_null(&c[COL_TAGS]);
        a->tags_null = 1;
    }
    elem_ts(&c[8], r->received_at_us);
    a->n++;
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        oom |= c[i].oom;
    return oom ? -1 : 0;
}

/* Writes v at p, most significant byte first. */
static void set_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

int rowfmt_arrays_finish(struct rowfmt_arrays *a, const char *values[ROWFMT_NARRAYS],
                         int lengths[ROWFMT_NARRAYS])
{
    int oom = 0;
    for (int i = 0; i < ROWFMT_NARRAYS; i++) {
        struct rowbuf *b = &a->col[i];
        if (a->n == 0) {   /* no dimensions: the empty array */
            rowbuf_reset(b);
            put_be64(b, 0);
            put_be32(b, elem_oid[i]);
        }
        if (b->oom || b->len > INT32_MAX) {
            oom = 1;
            values[i] = NULL;
            lengths[i] = 0;
            continue;
        }
        if (a->n) {
            set_be32(b->data, 1);
            set_be32(b->data + 4, i == COL_TAGS && a->tags_null);
            set_be32(b->data + 8, elem_oid[i]);
            set_be32(b->data + 12, (uint32_t)a->n);
            set_be32(b->data + 16, 1);
        }
        values[i] = b->data;
        lengths[i] = (int)b->len;
    }
    return oom ? -1 : 0;
}

void rowfmt_params(struct rowfmt_params *p, const struct reading *r, const char *by)
{
    ts_format(r->ts_us, p->ts);
    ts_format(r->received_at_us, p->received_at);
    reading_format_number(r->value, p->value);
    reading_format_number(r->raw_value, p->raw_value);
    p->values[0] = r->sensor_id;
    p->values[1] = reading_type_name(r->type);
    p->values[2] = p->ts;
    p->values[3] = p->value;
    p->values[4] = reading_canonical_unit(r->type);
    p->values[5] = p->raw_value;
    p->values[6] = r->raw_unit;
    p->values[7] = r->tags_json;   /* NULL: SQL NULL */
    p->values[8] = p->received_at;
    p->values[9] = by;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if s does not
 * start one (RFC 3629 table: no overlongs, no surrogates, <= U+10FFFF). */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 &&
               (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

size_t rowfmt_utf8_clean(char *s)
{
    size_t fixed = 0;
    unsigned char *p = (unsigned char *)s;
    /* A NUL continuation byte fails the (x & 0xC0) == 0x80 tests before
     * anything past it is read, so this never runs off the string. */
    while (*p) {
        size_t n = utf8_seq(p);
        if (n) {
            p += n;
        } else {
            *p++ = '?';
            fixed++;
        }
    }
    return fixed;
}
