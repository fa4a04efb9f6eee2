/* sbuf.c -- growable byte buffer.
 *
 * Allocation failure aborts: the simulator holds a few MB at most, so an
 * allocation that fails means the machine is in trouble, and carrying on with
 * half-built request bodies would post garbage or silently lose readings. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void sbuf_reserve(struct sbuf *b, size_t n)
{
    if (b->cap - b->len > n)
        return;
    size_t want = b->len + n + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fputs("sensor-sim: out of memory\n", stderr);
        abort();
    }
    b->p = p;
    b->cap = cap;
    b->p[b->len] = '\0';
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    sbuf_reserve(b, 64);
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->len, room, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;             /* encoding error: append nothing */
        if ((size_t)k < room) {
            b->len += (size_t)k;
            return;
        }
        sbuf_reserve(b, (size_t)k);
    }
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
