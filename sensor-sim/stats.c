/* stats.c -- log-linear latency histogram and interval bookkeeping. */
#include "stats.h"

#include <string.h>

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof *h);
}

unsigned hist_index(uint64_t us)
{
    if (us > HIST_MAX_US)
        us = HIST_MAX_US;
    if (us < 64)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);      /* 6..39 */
    unsigned sub = (unsigned)(us >> (e - HIST_SUB_BITS));  /* 32..63 */
    return 64u + (e - 6u) * 32u + (sub - 32u);
}

uint64_t hist_bucket_high(unsigned idx)
{
    if (idx < 64)
        return idx;
    unsigned k = idx - 64u;
    unsigned e = k / 32u + 6u;
    uint64_t sub = k % 32u + 32u;
    return ((sub + 1) << (e - HIST_SUB_BITS)) - 1;
}

void hist_add(struct hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->count++;
    if (us > h->max)
        h->max = us;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;                                   /* ceil */
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_high(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

void stats_roll(struct sim_stats *s, struct counters *delta, struct hist *ih,
                struct hist *due_ih)
{
    delta->sent = s->c.sent - s->prev.sent;
    delta->unsent = s->c.unsent - s->prev.unsent;
    delta->accepted = s->c.accepted - s->prev.accepted;
    delta->retried = s->c.retried - s->prev.retried;
    delta->failed = s->c.failed - s->prev.failed;
    delta->requests = s->c.requests - s->prev.requests;
    delta->conn_errors = s->c.conn_errors - s->prev.conn_errors;
    delta->http_5xx = s->c.http_5xx - s->prev.http_5xx;
    delta->http_4xx = s->c.http_4xx - s->prev.http_4xx;
    s->prev = s->c;
    if (ih)
        *ih = s->interval;
    hist_merge(&s->total, &s->interval);
    hist_reset(&s->interval);
    if (due_ih)
        *due_ih = s->due_interval;
    hist_merge(&s->due_total, &s->due_interval);
    hist_reset(&s->due_interval);
}
