/* stats.h -- what the simulator counts: reading counters and two latency
 * histograms.
 *
 * The histogram is log-linear (HdrHistogram's layout with 32 sub-buckets
 * per power of two): exact below 64 µs, within 3.2% above, fixed size, and
 * recording is one increment, so the hot path can afford it for every
 * response. Single-threaded; nothing here logs. */
#ifndef SIM_STATS_H
#define SIM_STATS_H

#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_MAX_US ((1ULL << 40) - 1)          /* ~12.7 days; larger is clamped */
#define HIST_BUCKETS (64 + (40 - 6) * 32)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t us);
void hist_merge(struct hist *dst, const struct hist *src);

/* The value at quantile q (0 < q <= 1), as the highest value its bucket can
 * hold (never above the recorded max), in µs; 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* Bucket index of a value, and the highest value of a bucket: exposed for
 * tests. */
unsigned hist_index(uint64_t us);
uint64_t hist_bucket_high(unsigned idx);

/* Reading counters. A reading the simulator makes is either never posted
 * (unsent: still waiting for a connection when a signal or --duration
 * stopped the run) or counted in sent when first posted, and then ends in
 * exactly one of accepted or failed (failed: rejected with a 4xx, given up
 * after max attempts or at the end of the drain). retried counts re-posts,
 * so one reading can add several. */
struct counters {
    uint64_t sent;        /* readings posted at least once */
    uint64_t unsent;      /* readings dropped at stop before their first post */
    uint64_t accepted;    /* readings answered 2xx */
    uint64_t retried;     /* reading re-posts */
    uint64_t failed;      /* readings rejected or given up */
    uint64_t requests;    /* HTTP attempts */
    uint64_t conn_errors; /* attempts without an HTTP answer */
    uint64_t http_5xx;    /* attempts answered 5xx */
    uint64_t http_4xx;    /* attempts answered 4xx (or 1xx/3xx) */
};

/* Two latencies:
 * - an attempt's: from the request's write to its answer, each HTTP attempt
 *   that got one (the server's time, as the client's connection sees it);
 * - a reading's due latency: from when it was due (the --rate schedule, or
 *   when it was made) to its 2xx, every wait on the way included (for a free
 *   connection, retries, a generator running late). An open-loop run's
 *   latency: a server that falls behind shows here even when each attempt,
 *   once written, is quick (no coordinated omission). Per request: the due
 *   time of its first reading. */
struct sim_stats {
    struct counters c;        /* totals since start */
    struct counters prev;     /* totals at the last interval report */
    struct hist interval;     /* attempt latencies since the last interval report */
    struct hist total;        /* all attempt latencies before that */
    struct hist due_interval; /* due latencies since the last interval report */
    struct hist due_total;    /* all due latencies before that */
};

/* Latency of one HTTP attempt that got an answer. */
static inline void stats_latency(struct sim_stats *s, uint64_t us)
{
    hist_add(&s->interval, us);
}

/* Due latency of one request answered 2xx. */
static inline void stats_due_latency(struct sim_stats *s, uint64_t us)
{
    hist_add(&s->due_interval, us);
}

/* Ends an interval: delta = totals - previous snapshot; the interval
 * histograms are copied to *ih and *due_ih (either may be NULL), merged into
 * the totals and reset. */
void stats_roll(struct sim_stats *s, struct counters *delta, struct hist *ih,
                struct hist *due_ih);

#endif
