/* publisher.h -- readings to the MQTT broker, QoS 1, answered on PUBACK.
 *
 * Readings of every request that arrives in the same turn of the event loop
 * are coalesced into one MQTT message (common/reading.h's batch layout), so
 * the broker sees few large messages instead of one per reading. A request's
 * done callback runs once, on the event loop's thread, after the broker has
 * acknowledged (PUBACK) the message holding its readings, or after that
 * message failed. A message that failed because the connection went goes
 * to the spool instead, and its requests are done once the spool has it on
 * disk (not while draining or shutting down, nor when the spool refuses
 * it). The broker connection is kept up by itself: connection state is
 * readable at any time from any thread.
 *
 * A PUBACK is not the end: a broker can lose what it acknowledged (kill -9
 * between snapshots; after a restart, until storage subscribes again, since
 * mosquitto does not persist shared subscriptions). So every acknowledged
 * message is retained until storage confirms it (the message's id, sent as
 * its Correlation Data, on stored_topic; see reading_confirm_format()). What
 * is not confirmed after
 * republish_after_s is published again, then at doubling intervals, and at
 * once after every reconnection; after retention_s it is let go. The primary
 * key makes a republished reading harmless. */
#ifndef SF_PUBLISHER_H
#define SF_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"

struct event_base;
struct publisher;

struct publisher_config {
    const char *url;             /* tcp://host:port */
    const char *client_id;       /* unique per process */
    const char *username;        /* "" or NULL: anonymous */
    const char *password;        /* with username; copied */
    const char *topic;           /* where every message goes */
    const char *instance;        /* the "by" of each message */
    size_t max_message_bytes;    /* a message this big is closed; it is sent
                                  * when the pacing below allows */
    size_t max_inflight;         /* messages sent and not yet acknowledged */
    size_t max_pending_readings; /* waiting for a slot: beyond this, refuse */
    const char *stored_topic;    /* storage's confirmations for us */
    int retention_s;             /* keep unconfirmed messages this long */
    int republish_after_s;       /* first republish of an unconfirmed message */
    size_t retention_max_bytes;  /* beyond, the oldest are let go */
    /* Pacing by storage: while this many messages are in flight or
     * unconfirmed and younger than publisher_hold_us() (twice storage's
     * recent time to confirm while it confirms at all, confirm_wait_ms while
     * it does not), readings gather into the next message instead of making
     * more, and full messages wait (0: off). */
    size_t max_unconfirmed;
    int confirm_wait_ms;
    /* A message not yet full waits until it is this old, gathering the
     * readings that come meanwhile (0: sent as soon as pacing allows). */
    int linger_ms;
    struct spool *spool;         /* NULL: none; else borrowed, outlives us */
    const char *spool_dir;       /* for log lines */
};

struct publisher_stats {
    size_t retained, retained_bytes;  /* unconfirmed, kept for republishing */
    uint64_t confirmed, republished, expired, overflowed;
    uint64_t spooled;                 /* readings taken into the spool */
    size_t spool_bytes;
};

/* ok is 1 when the readings are safe: the broker acknowledged them, or the
 * spool has them on disk; otherwise 0 and why says what failed (static
 * string). */
typedef void (*publisher_done_fn)(void *ctx, int ok, const char *why);

/* Creates the client and starts connecting in the background. Returns NULL
 * with err filled on a bad URL or out of memory. Logs its connection events. */
struct publisher *publisher_create(struct event_base *base, const struct publisher_config *cfg,
                                   char *err, size_t errlen);

/* 1 when connected to the broker. */
int publisher_connected(const struct publisher *p);

/* 1 when readings can be taken: connected, or the spool has room. */
int publisher_accepting(const struct publisher *p);

/* Takes responsibility for the readings of one request (copies them);
 * rid, the request's id (valid per reading_request_id_valid, or NULL), goes
 * with them in the MQTT message for storage's log.
 * Returns 0 and calls done(ctx, ...) later, exactly once; or returns -1
 * without calling done when it cannot take them now (broker disconnected,
 * too many pending, out of memory), or PUBLISHER_TOO_LARGE when it never
 * can: alone in a message they would be larger than the broker's Maximum
 * Packet Size (its CONNACK), for which it drops the connection. A static
 * reason in *why either way. No message is made larger than that limit
 * nor, beyond one request's readings, than max_message_bytes. */
#define PUBLISHER_TOO_LARGE (-2)
int publisher_submit(struct publisher *p, const struct reading_batch *b, const char *rid,
                     publisher_done_fn done, void *ctx, const char **why);

/* Readings submitted whose done has not run yet. */
size_t publisher_outstanding(const struct publisher *p);

void publisher_stats(const struct publisher *p, struct publisher_stats *out);

/* The drain (SIGTERM): sends what is buffered now rather than at the end of
 * this loop turn, and from now on never holds a message back for storage. */
void publisher_drain(struct publisher *p);

/* How long an unconfirmed message holds the next one back, in
 * microseconds. While storage confirms (silent_us, the time since its last
 * confirmation, at most a second): twice avg_us, its recent time to confirm
 * a message, from PUBLISHER_HOLD_MIN_US (or base_us, if lower) to
 * PUBLISHER_HOLD_MAX_US; from base_us instead while a message has been
 * unconfirmed for over a second (oldest_us, the age of the oldest; 0: none).
 * A storage silent for longer is taken for stopped: base_us
 * (confirm_wait_ms). Pure: exposed for its unit test. */
#define PUBLISHER_HOLD_MIN_US 5000
#define PUBLISHER_HOLD_MAX_US 250000
int64_t publisher_hold_us(int64_t base_us, int64_t avg_us, int64_t silent_us,
                          int64_t oldest_us);

/* Disconnects (waiting at most timeout_ms) and frees. Requests still
 * outstanding get done(ctx, 0, ...). Accepts NULL. */
void publisher_destroy(struct publisher *p, int timeout_ms);

#endif
