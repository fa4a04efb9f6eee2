/* rowfmt.c -- readings as database rows (array literals or parameters). */
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

static void putc1(struct rowbuf *b, char c)
{
    put(b, &c, 1);
}

/* Appends s as one double-quoted array element: inside quotes only the
 * backslash and the double quote are special (array_in); NULL is the
 * unquoted marker. */
static void array_elem(struct rowbuf *b, const char *s)
{
    putc1(b, b->len ? ',' : '{');
    if (!s) {
        put(b, "NULL", 4);
        return;
    }
    putc1(b, '"');
    while (*s) {
        size_t run = strcspn(s, "\\\"");
        put(b, s, run);
        s += run;
        if (!*s)
            break;
        putc1(b, '\\');
        putc1(b, *s++);
    }
    putc1(b, '"');
}

void rowfmt_arrays_reset(struct rowfmt_arrays *a)
{
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        rowbuf_reset(&a->col[i]);
    a->n = 0;
}

void rowfmt_arrays_free(struct rowfmt_arrays *a)
{
    for (int i = 0; i < ROWFMT_NARRAYS; i++)
        rowbuf_free(&a->col[i]);
    a->n = 0;
}

int rowfmt_arrays_add(struct rowfmt_arrays *a, const struct reading *r)
{
    struct rowfmt_params p;
    int oom = 0;
    rowfmt_params(&p, r, "");
    for (int i = 0; i < ROWFMT_NARRAYS; i++) {
        array_elem(&a->col[i], p.values[i]);
        oom |= a->col[i].oom;
    }
    a->n++;
    return oom ? -1 : 0;
}

int rowfmt_arrays_finish(struct rowfmt_arrays *a, const char *values[ROWFMT_NARRAYS])
{
    int oom = 0;
    for (int i = 0; i < ROWFMT_NARRAYS; i++) {
        struct rowbuf *b = &a->col[i];
        if (b->len)
            put(b, "}", 2);    /* with the NUL, which len then leaves out */
        else
            put(b, "{}", 3);
        if (b->oom) {
            oom = 1;
            values[i] = NULL;
            continue;
        }
        b->len--;
        values[i] = b->data;
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
