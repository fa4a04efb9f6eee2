/* sender.h -- posts request bodies over a pool of keep-alive HTTP
 * connections, with retries.
 *
 * The caller fills a sender_req (a JSON body of n readings, and when the
 * accepted log is on, their CSV lines) and submits it; from then on the
 * sender owns it until it is resolved, exactly once, as accepted (2xx) or
 * failed. A request goes out on the first idle connection (evhttp allows
 * one request in flight per connection, and queueing inside evhttp would
 * hide the wait from our timeout and stats), FIFO among waiting requests,
 * retries first.
 *
 * Retried, with the very same body (so the same ts, which makes a retry
 * harmless: the database key is (sensor_id, type, ts)): connection errors,
 * timeouts, 429 and 5xx, after backoff_delay_us() (Retry-After honoured), up
 * to max_attempts attempts in all; then given up (failed, sim.gave_up).
 * Any other answer is final: 2xx accepted, else failed and logged
 * (sim.rejected, with the response body) without retry.
 *
 * Single-threaded: everything runs on the caller's event_base. */
#ifndef SIM_SENDER_H
#define SIM_SENDER_H

#include <stddef.h>
#include <stdint.h>

#include "acclog.h"
#include "sbuf.h"
#include "stats.h"

struct event_base;
struct sender;

struct sender_cfg {
    const char *url;             /* http://host[:port]/path[?query] */
    unsigned connections;        /* >= 1 */
    unsigned max_attempts;       /* >= 1, first attempt included */
    double timeout_s;            /* per attempt, connect included; > 0 */
    struct acclog *acclog;       /* NULL: no accepted log; not owned */
    uint64_t seed;               /* for backoff jitter */
    const char *api_key;         /* sent as X-API-Key; NULL or "": none */
};

struct sender_req {
    /* Filled by the caller between sender_req_new() and sender_submit(). */
    struct sbuf body;            /* the JSON body, sent as is */
    struct sbuf csv;             /* accepted-log lines, one per reading */
    unsigned n;                  /* readings in body, >= 1 */
    int64_t due_mono_us;         /* when its first reading was due (stats.h);
                                  * sender_req_new() sets now */
    /* The sender's own bookkeeping. */
    struct sender *s;
    struct sender_req *next;          /* wait queue or free list */
    struct sender_req *lnext, *lprev; /* every request not on the free list */
    struct event *retry_ev;
    struct evhttp_request *http;      /* while on the wire */
    struct sender_conn *conn;         /* while on the wire */
    unsigned attempts;
    int state;
    int err;                          /* evhttp error of the attempt, or -1 */
    int64_t sent_mono_us;
};

/* Parses the URL and opens nothing yet (connections are made on first use).
 * stats is updated as requests progress (not owned). Returns NULL with err
 * filled on a bad URL (only http://, no userinfo) or out of memory. */
struct sender *sender_create(struct event_base *base, const struct sender_cfg *cfg,
                             struct sim_stats *stats, char *err, size_t errlen);

/* Frees the connections and every request. Requests still outstanding are
 * dropped without being counted: call sender_give_up_all() first. Accepts
 * NULL. */
void sender_destroy(struct sender *s);

/* An empty request (recycled, so after warm-up no allocation). The caller
 * owns it until sender_submit() or sender_req_discard(). */
struct sender_req *sender_req_new(struct sender *s);

/* Hands r over; r->n >= 1. Its readings count as sent at the first post. */
void sender_submit(struct sender *s, struct sender_req *r);

/* Returns an unsubmitted request for reuse. */
void sender_req_discard(struct sender *s, struct sender_req *r);

/* Readings submitted and not yet resolved (waiting, on the wire or
 * waiting for a retry). */
uint64_t sender_outstanding(const struct sender *s);

/* Readings submitted but not yet posted once. */
uint64_t sender_unposted(const struct sender *s);

/* Stop sending new readings: drops every request not yet posted once,
 * counting its readings as unsent. Requests already posted carry on
 * (answers, retries). Returns the readings dropped. */
uint64_t sender_drop_unposted(struct sender *s);

/* Called (on the event loop) after each request is resolved. */
void sender_on_resolved(struct sender *s, void (*cb)(void *arg), void *arg);

/* Resolves every outstanding request with reason (one sim.gave_up line for
 * all), cancelling those on the wire: as failed when posted at least once,
 * else as unsent. Returns the number of readings given up as failed. */
uint64_t sender_give_up_all(struct sender *s, const char *reason);

/* sim.gave_up / sim.rejected lines left out by the rate limit since the
 * last call (the count restarts at 0). */
uint64_t sender_take_suppressed(struct sender *s);

#endif
