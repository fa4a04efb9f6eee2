/* sbuf.h -- a growable byte buffer for request bodies and log lines.
 *
 * Buffers are reused from request to request, so after warm-up the hot path
 * does no allocation. Out of memory aborts (see sbuf.c for why). */
#ifndef SIM_SBUF_H
#define SIM_SBUF_H

#include <stddef.h>
#include <string.h>

struct sbuf {
    char *p;        /* owned; NUL-terminated when len > 0 or after sbuf_reserve */
    size_t len, cap;
};

/* Makes room for n more bytes plus a NUL. Never fails (aborts on OOM). */
void sbuf_reserve(struct sbuf *b, size_t n);

/* Appends printf-formatted text. */
void sbuf_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void sbuf_free(struct sbuf *b);

static inline void sbuf_add(struct sbuf *b, const void *data, size_t n)
{
    if (b->cap - b->len <= n)
        sbuf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void sbuf_addc(struct sbuf *b, char c)
{
    if (b->cap - b->len <= 1)
        sbuf_reserve(b, 1);
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

static inline void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

static inline void sbuf_clear(struct sbuf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

#endif
