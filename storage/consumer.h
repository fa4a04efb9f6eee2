/* consumer.h -- storage's MQTT side: a paho MQTTAsync (MQTT v5) subscriber
 * with a persistent session that stores each batch message in PostgreSQL
 * and acknowledges it only after the COMMIT.
 *
 * Delivery contract, built on paho >= 1.3.10 sending the PUBACK only when
 * messageArrived returns (see FACTS.md):
 *  - a message is acknowledged after its readings are committed, or after
 *    it was committed as a dead letter (undecodable, or data the database
 *    refuses), never before;
 *  - while the database fails for any other reason the callback keeps the
 *    message and retries (100 ms doubling to 5 s) for as long as it takes;
 *    other messages wait behind it (paho delivers one at a time);
 *  - a stop requested during such retries ends the process at once with
 *    _exit(0) from paho's thread, without acknowledging: the broker keeps the
 *    message in this client id's session and redelivers it on restart. That
 *    and the next point are the only ways out: returning 0 from
 *    messageArrived is not a nack, and paho's global mutex, held by the
 *    blocked callback, would make MQTTAsync_disconnect/destroy wait for ever;
 *  - a reconnect that finds the database unusable for good (DB_FATAL: not
 *    UTF8, a migration failing) ends the process the same way, with
 *    _exit(1) after db.unusable: retrying could not help.
 * Duplicates (redeliveries, retries after a lost COMMIT reply) are harmless:
 * the insert skips rows whose (sensor_id, type, ts) exists. */
#ifndef SF_STORAGE_CONSUMER_H
#define SF_STORAGE_CONSUMER_H

#include "config.h"
#include "db.h"

#include <stddef.h>

struct consumer;

struct consumer_stats {
    unsigned long long messages;            /* batch messages handled */
    unsigned long long readings_inserted;
    unsigned long long readings_duplicate;  /* already stored */
    unsigned long long readings_rejected;   /* refused by the database */
    unsigned long long dead_letters;        /* messages recorded as dead letters */
    unsigned long long db_failures;         /* failed attempts that were retried */
};

/* Called from paho's thread when the consumer cannot go on (the broker
 * refused the subscription). It must only wake the main thread. */
typedef void consumer_fatal_fn(void *ctx);

/* db_ensure() plus the log lines storage writes about it: db.connected,
 * db.migrated for each migration applied, db.schema_current when none was.
 * Returns what db_ensure() returned, err filled on failure. */
int consumer_db_ensure(struct db *db, char *err, size_t errlen);

/* Creates the paho client (MQTT v5, no client-side persistence: with
 * ack-after-commit nothing needs to survive in paho). Does not connect.
 * cfg and db must outlive the consumer; from consumer_start() until
 * consumer_destroy() returns, db belongs to paho's thread. Returns NULL
 * with err filled on failure. */
struct consumer *consumer_create(const struct storage_config *cfg, struct db *db,
                                 consumer_fatal_fn *on_fatal, void *fatal_ctx,
                                 char *err, size_t errlen);

/* Starts connecting (clean start off, session expiry from cfg, automatic
 * reconnect 1..16 s, keepalive 20 s); every connection subscribes to
 * cfg->topic_filter at QoS 1 again (retiring: unsubscribes from it).
 * Returns 0, or -1 with err filled when paho refuses the options; an
 * unreachable broker is not an error: paho keeps trying. Signals that the
 * caller wants to see on its own thread must be blocked before this call:
 * paho's threads inherit the mask. */
int consumer_start(struct consumer *c, char *err, size_t errlen);

/* Asks the consumer to stop: a message being retried is abandoned (see the
 * contract above: the process exits), then MQTTAsync_disconnect with
 * timeout_ms for in-flight acknowledgements, waiting at most about that
 * long. The session stays on the broker, unless end_session (a session
 * expiry of 0 in the DISCONNECT: what it still holds is dropped). Returns 1
 * when the broker took the DISCONNECT, 0 when it was not sent or not
 * confirmed in time. */
int consumer_stop(struct consumer *c, int timeout_ms, int end_session);

/* Destroys the paho client (waits for a running callback to finish) and
 * frees the consumer. NULL is fine. The db is not touched. */
void consumer_destroy(struct consumer *c);

/* s made fit for a log field key="value": control characters become spaces,
 * double quotes single ones, cut to len-1 bytes. Errors and reasons can
 * quote the garbage they complain about; a log line must stay one line.
 * Returns buf. Shared with main.c. */
const char *storage_log_value(const char *s, char *buf, size_t len);

/* Retiring (cfg->retire): whether the shared subscription is left, no
 * message is being handled (a database outage's retries included) and none
 * came for idle_ms: the session has given what it held (a message still
 * queued for it follows the last one at once). */
int consumer_drained(const struct consumer *c, int idle_ms);

/* A consistent-enough snapshot of the counters (each read atomically). */
void consumer_get_stats(const struct consumer *c, struct consumer_stats *out);

#endif
