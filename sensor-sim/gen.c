/* gen.c -- fleet, load and replay generators: schedule, batching, bounds. */
#include "gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "ts.h"

/* A partly filled batch in load mode goes out after this long, so a low
 * rate with a big batch still posts regularly. */
#define LINGER_US 50000
/* How long to sleep when waiting for room, or between load ticks. Room
 * normally arrives through gen_kick(); the sleep is the safety net. */
#define POLL_US 1000
#define MIN_TICK_US 100
#define MAX_SLEEP_US 100000

struct gen {
    struct event_base *base;
    struct gen_cfg cfg;
    struct fleet *fleet;
    struct replay *rp;
    struct sender *snd;

    struct event *tick_ev;
    struct sender_req *cur;        /* batch being filled */
    int64_t cur_first_us;          /* monotonic time of its first reading */

    char *prefixes;                /* every sensor's prefix, packed */
    uint32_t *prefix_off;          /* sensor i: prefixes + off[i], up to off[i+1] */
    size_t rr;                     /* load mode: next sensor */

    int64_t tick_us;               /* paced modes: shortest sleep */
    int64_t start_us;              /* monotonic */
    uint64_t generated;
    uint64_t behind;
    int running, finished, waiting_room;

    void (*on_finished)(void *, int);
    void *on_finished_arg;
};

static void tick_cb(evutil_socket_t fd, short what, void *arg);

struct gen *gen_create(struct event_base *base, const struct gen_cfg *cfg,
                       struct fleet *fleet, struct replay *rp,
                       struct sender *snd, char *err, size_t errlen)
{
    struct gen *g = calloc(1, sizeof *g);
    if (!g)
        goto oom;
    g->base = base;
    g->cfg = *cfg;
    g->fleet = fleet;
    g->rp = rp;
    g->snd = snd;
    /* Paced modes post in small groups, about 4 requests per tick: 1 ms
     * ticks at 40 000 requests/s would fire 40 at once, and the server's
     * queueing of that burst would show in every latency. */
    g->tick_us = POLL_US;
    if (cfg->rate > 0) {
        double t = 4.0 * cfg->batch * 1e6 / cfg->rate;
        g->tick_us = t < MIN_TICK_US ? MIN_TICK_US : t > POLL_US ? POLL_US : (int64_t)t;
    }
    g->tick_ev = event_new(base, -1, 0, tick_cb, g);
    if (!g->tick_ev)
        goto oom;
    if (fleet) {
        /* The constant head of every sensor's JSON object, formatted once:
         * in load mode this is most of each body. */
        size_t n = fleet_size(fleet), used = 0, cap = n * 96 + PAYLOAD_PREFIX_MAX;
        /* Packed (about 90 bytes each): a million sensors cost 90 MB, not
         * the 192 MB of fixed-size slots. */
        g->prefixes = malloc(cap);
        g->prefix_off = malloc((n + 1) * sizeof *g->prefix_off);
        if (!g->prefixes || !g->prefix_off)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            const struct fleet_sensor *s = fleet_sensor(fleet, i);
            char tmp[PAYLOAD_PREFIX_MAX];
            size_t len = payload_prefix(tmp, s->id, s->type, s->unit);
            if (cap - used < len) {
                char *p = realloc(g->prefixes, cap * 2);
                if (!p)
                    goto oom;
                g->prefixes = p;
                cap *= 2;
            }
            memcpy(g->prefixes + used, tmp, len);
            g->prefix_off[i] = (uint32_t)used;
            used += len;
        }
        g->prefix_off[n] = (uint32_t)used;
    }
    return g;
oom:
    snprintf(err, errlen, "out of memory");
    gen_destroy(g);
    return NULL;
}

void gen_destroy(struct gen *g)
{
    if (!g)
        return;
    if (g->tick_ev)
        event_free(g->tick_ev);
    if (g->cur)
        sender_req_discard(g->snd, g->cur);
    free(g->prefixes);
    free(g->prefix_off);
    free(g);
}

void gen_on_finished(struct gen *g, void (*cb)(void *, int), void *arg)
{
    g->on_finished = cb;
    g->on_finished_arg = arg;
}

uint64_t gen_generated(const struct gen *g)
{
    return g->generated;
}

uint64_t gen_behind(const struct gen *g)
{
    return g->behind;
}

/* --- batching ------------------------------------------------------------ */

/* Paced modes: when the next reading is due by the schedule (reading k at
 * start + k / rate, as scheduled() counts them). */
static int64_t next_due(const struct gen *g)
{
    return g->start_us + (int64_t)ceil((double)g->generated * 1e6 / g->cfg.rate);
}

/* When the next reading was due, for the due latency (stats.h): by the
 * schedule in the paced modes, so that a generator running late counts;
 * else now. */
static int64_t due_us(const struct gen *g, int64_t now_mono)
{
    if (g->cfg.mode == GEN_FLEET || g->cfg.rate <= 0)
        return now_mono;
    int64_t due = next_due(g);
    return due < now_mono ? due : now_mono;
}

static void flush(struct gen *g)
{
    struct sender_req *r = g->cur;
    if (!r)
        return;
    g->cur = NULL;
    if (g->cfg.batch > 1)
        sbuf_addc(&r->body, ']');
    sender_submit(g->snd, r);
}

static void add(struct gen *g, const struct sim_reading *rd, const char *prefix,
                size_t prefix_len, int64_t now_mono)
{
    struct sender_req *r = g->cur;
    if (!r) {
        r = g->cur = sender_req_new(g->snd);
        g->cur_first_us = now_mono;
        r->due_mono_us = due_us(g, now_mono);
        /* batch 1: a single object, as a plain sensor posts; else an array,
         * even when fewer readings are due. */
        if (g->cfg.batch > 1)
            sbuf_addc(&r->body, '[');
    } else {
        sbuf_addc(&r->body, ',');
    }
    payload_add(&r->body, g->cfg.with_csv ? &r->csv : NULL, rd, prefix, prefix_len,
                &g->cfg.fmt);
    r->n++;
    g->generated++;
    if (r->n >= g->cfg.batch)
        flush(g);
}

/* A reading of fleet sensor i, with its precomputed prefix. */
static void add_sensor(struct gen *g, size_t i, const struct sim_reading *rd, int64_t now_mono)
{
    add(g, rd, g->prefixes + g->prefix_off[i], g->prefix_off[i + 1] - g->prefix_off[i],
        now_mono);
}

/* Readings that may still be made now: the memory bound and the count. */
static uint64_t room(const struct gen *g)
{
    uint64_t held = sender_outstanding(g->snd) + (g->cur ? g->cur->n : 0);
    uint64_t r = held < g->cfg.max_outstanding ? g->cfg.max_outstanding - held : 0;
    if (g->cfg.count) {
        uint64_t left = g->cfg.count - g->generated;
        if (left < r)
            r = left;
    }
    return r;
}

static void finish(struct gen *g, int failed)
{
    if (g->finished)
        return;
    gen_stop(g);
    g->finished = 1;
    if (g->on_finished)
        g->on_finished(g->on_finished_arg, failed);
}

static void sleep_us(struct gen *g, int64_t us)
{
    if (us < 0)
        us = 0;
    if (us > MAX_SLEEP_US)
        us = MAX_SLEEP_US;
    struct timeval tv = { (time_t)(us / 1000000), (suseconds_t)(us % 1000000) };
    event_add(g->tick_ev, &tv);
}

/* --- the three modes ----------------------------------------------------- */

/* Readings made per tick at most, about half a millisecond of work: a
 * catch-up of 50 000 readings in one go would hold the loop for tens of ms,
 * and every response waiting meanwhile would carry that delay in its
 * latency. */
#define MAX_PER_TICK 512

/* After a tick that made n of the want readings it wanted, with room for
 * left: go on at once when only the per-tick cap stopped it; wait for room
 * (gen_kick, or a short poll) when the bound did. Returns 1 when it
 * scheduled the next tick. */
static int continue_or_wait(struct gen *g, uint64_t want, uint64_t left, uint64_t n)
{
    if (want <= n)
        return 0;
    if (left > n) {
        sleep_us(g, 0);
    } else {
        g->waiting_room = 1;
        sleep_us(g, POLL_US);
    }
    return 1;
}

static void tick_fleet(struct gen *g, int64_t now)
{
    uint64_t left = room(g), n = 0;
    long i;
    while (n < left && n < MAX_PER_TICK && (i = fleet_pop_due(g->fleet, now)) >= 0) {
        struct sim_reading rd;
        fleet_measure(g->fleet, (size_t)i, ts_now_us(), &rd);
        add_sensor(g, (size_t)i, &rd, now);
        n++;
    }
    flush(g);                                  /* batch what is due */
    int64_t due = fleet_next_due(g->fleet);
    if (due > now)
        sleep_us(g, due - now);
    else
        continue_or_wait(g, n + 1, left, n);   /* more are due */
}

/* How many readings the clock says should exist by now. */
static uint64_t scheduled(const struct gen *g, int64_t now)
{
    double want = floor(g->cfg.rate * (double)(now - g->start_us) / 1e6) + 1;
    uint64_t w = (uint64_t)want;
    if (g->cfg.count && w > g->cfg.count)
        w = g->cfg.count;
    return w;
}

/* Paced modes: sleep until the next reading is due, waking for the linger
 * of a partial batch. */
static void sleep_paced(struct gen *g, int64_t now)
{
    int64_t wake = next_due(g) - now;
    if (g->cur && g->cur_first_us + LINGER_US - now < wake)
        wake = g->cur_first_us + LINGER_US - now;
    sleep_us(g, wake < g->tick_us ? g->tick_us : wake);
}

static void tick_load(struct gen *g, int64_t now)
{
    uint64_t target = scheduled(g, now);
    uint64_t want = target > g->generated ? target - g->generated : 0;
    uint64_t left = room(g);
    uint64_t n = want < left ? want : left;
    size_t nsensors = fleet_size(g->fleet);
    if (n > MAX_PER_TICK)
        n = MAX_PER_TICK;

    for (uint64_t k = 0; k < n; k++) {
        struct sim_reading rd;
        size_t i = g->rr;
        g->rr = (g->rr + 1) % nsensors;
        fleet_measure(g->fleet, i, ts_now_us(), &rd);
        add_sensor(g, i, &rd, now);
    }
    g->behind = target - g->generated;
    if (g->cur && now - g->cur_first_us >= LINGER_US)
        flush(g);
    if (g->cfg.count && g->generated >= g->cfg.count) {
        finish(g, 0);
        return;
    }
    if (!continue_or_wait(g, want, left, n))
        sleep_paced(g, now);
}

static void tick_replay(struct gen *g, int64_t now)
{
    uint64_t left = room(g);
    uint64_t want = left;
    if (g->cfg.rate > 0) {
        uint64_t target = scheduled(g, now);
        want = target > g->generated ? target - g->generated : 0;
    }
    uint64_t n = want < left ? want : left;
    if (n > MAX_PER_TICK)
        n = MAX_PER_TICK;
    for (uint64_t k = 0; k < n; k++) {
        struct sim_reading rd;
        char err[300];
        int rc = replay_next(g->rp, &rd, err, sizeof err);
        if (rc <= 0) {
            if (rc < 0)
                log_error("sim.replay_failed", "error=\"%s\"", err);
            finish(g, rc < 0);
            return;
        }
        add(g, &rd, NULL, 0, now);
    }
    if (g->cfg.count && g->generated >= g->cfg.count) {
        finish(g, 0);
        return;
    }
    if (g->cfg.rate <= 0) {
        /* The connections set the pace: post what was read, then read more
         * as soon as there is room. */
        flush(g);
        if (n < left) {
            sleep_us(g, 0);
        } else {
            g->waiting_room = 1;
            sleep_us(g, MAX_SLEEP_US);
        }
        return;
    }
    uint64_t target = scheduled(g, now);
    g->behind = target > g->generated ? target - g->generated : 0;
    if (g->cur && now - g->cur_first_us >= LINGER_US)
        flush(g);
    if (!continue_or_wait(g, want, left, n))
        sleep_paced(g, now);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gen *g = arg;
    (void)fd;
    (void)what;
    if (!g->running)
        return;
    int64_t now = ts_mono_us();
    switch (g->cfg.mode) {
    case GEN_FLEET:  tick_fleet(g, now);  break;
    case GEN_LOAD:   tick_load(g, now);   break;
    case GEN_REPLAY: tick_replay(g, now); break;
    }
    if (g->running && g->cfg.count && g->generated >= g->cfg.count && !g->cur)
        finish(g, 0);
}

void gen_start(struct gen *g)
{
    g->start_us = ts_mono_us();
    g->running = 1;
    if (g->cfg.mode == GEN_FLEET)
        fleet_schedule_start(g->fleet, g->cfg.interval_s, g->start_us);
    event_active(g->tick_ev, 0, 0);
}

void gen_stop(struct gen *g)
{
    if (!g->running)
        return;
    g->running = 0;
    g->waiting_room = 0;
    event_del(g->tick_ev);
    flush(g);
}

void gen_kick(struct gen *g)
{
    if (g->waiting_room && g->running) {
        g->waiting_room = 0;
        event_del(g->tick_ev);
        event_active(g->tick_ev, 0, 0);
    }
}
