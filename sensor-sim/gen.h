/* gen.h -- where readings come from and when: the three modes that feed
 * the sender.
 *
 *  - fleet:  each virtual sensor measures once per interval (±20%); what is
 *            due at one moment goes out together, up to batch per POST.
 *  - load:   rate readings/s, round-robin over the fleet, scheduled by the
 *            clock, not by responses (open loop: a slow server makes the
 *            backlog grow, it does not slow the offered load).
 *  - replay: the rows of a CSV, as fast as the connections take them, or
 *            paced at rate when rate > 0.
 *
 * Memory is bounded: no more than max_outstanding readings are held (queued,
 * on the wire or waiting for a retry). At the bound the generator waits;
 * in load mode the schedule then falls behind (reported by gen_behind)
 * and catches up when room comes back. Runs on the caller's event_base. */
#ifndef SIM_GEN_H
#define SIM_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "fleet.h"
#include "payload.h"
#include "replay.h"
#include "sender.h"

struct event_base;

enum gen_mode { GEN_FLEET, GEN_LOAD, GEN_REPLAY };

struct gen_cfg {
    enum gen_mode mode;
    double rate;               /* readings/s: load mode; replay pacing if > 0 */
    double interval_s;         /* fleet mode */
    unsigned batch;            /* readings per POST, 1..1000 */
    uint64_t count;            /* stop after this many readings; 0: no limit */
    uint64_t max_outstanding;  /* memory bound, in readings */
    int with_csv;              /* build accepted-log lines */
    struct payload_fmt fmt;    /* tags; the pointed-to text must outlive gen */
};

struct gen;

/* fleet is required in fleet and load mode, rp in replay mode (already
 * validated and rewound); neither is owned. Returns NULL with err filled
 * on out of memory. */
struct gen *gen_create(struct event_base *base, const struct gen_cfg *cfg,
                       struct fleet *fleet, struct replay *rp,
                       struct sender *snd, char *err, size_t errlen);
void gen_destroy(struct gen *g);   /* accepts NULL */

/* Paced modes (rate > 0) tick down to every 100 µs; the event base should
 * have EVENT_BASE_FLAG_PRECISE_TIMER, or libevent rounds that to 1 ms. */

/* Starts the schedule now. */
void gen_start(struct gen *g);

/* Stops generating; a partly filled batch is posted. Idempotent. */
void gen_stop(struct gen *g);

/* Called once when the generator ran out by itself (count reached, end of
 * the replay file, or a replay read error: then failed is set). */
void gen_on_finished(struct gen *g, void (*cb)(void *arg, int failed), void *arg);

/* Tells a generator that waits for room that some may be free (the
 * caller's sender resolve callback). Cheap when not waiting. */
void gen_kick(struct gen *g);

uint64_t gen_generated(const struct gen *g);

/* Load/paced replay: readings the schedule is behind the clock. */
uint64_t gen_behind(const struct gen *g);

#endif
