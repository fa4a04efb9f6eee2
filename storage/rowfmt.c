/* rowfmt.c -- a reading as a database row (COPY text line or parameters). */
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

void rowfmt_copy_field(struct rowbuf *b, const char *s)
{
    if (!s) {
        put(b, "\\N", 2);
        return;
    }
    /* Copy runs of ordinary bytes at once; only these four need escaping in
     * text format (a backslash must be doubled, or "\." would end the data
     * and "\N" would read as NULL). */
    while (*s) {
        size_t run = strcspn(s, "\\\t\n\r");
        put(b, s, run);
        s += run;
        switch (*s) {
        case '\\': put(b, "\\\\", 2); break;
        case '\t': put(b, "\\t", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        default: return;   /* '\0' */
        }
        s++;
    }
}

void rowfmt_params(struct rowfmt_params *p, const struct reading *r, const char *by)
{
    ts_format(r->ts_us, p->ts);
    ts_format(r->received_at_us, p->received_at);
    snprintf(p->value, sizeof p->value, "%.17g", r->value);
    snprintf(p->raw_value, sizeof p->raw_value, "%.17g", r->raw_value);
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

int rowfmt_copy_line(struct rowbuf *b, const struct reading *r, const char *by)
{
    struct rowfmt_params p;
    rowfmt_params(&p, r, by);
    for (int i = 0; i < ROWFMT_NCOLS; i++) {
        if (i)
            putc1(b, '\t');
        rowfmt_copy_field(b, p.values[i]);
    }
    putc1(b, '\n');
    return b->oom ? -1 : 0;
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
