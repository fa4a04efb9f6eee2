/* consumer.c -- paho MQTTAsync subscriber: store each batch, then acknowledge. */
#include "consumer.h"
#include "log.h"
#include "net.h"
#include "reading.h"
#include "smetrics.h"
#include "ts.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEEPALIVE_S 20
#define RECONNECT_MIN_S 1
#define RECONNECT_MAX_S 16
#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS 5000

struct consumer {
    MQTTAsync client;
    const struct storage_config *cfg;
    struct db *db;
    consumer_fatal_fn *on_fatal;
    void *fatal_ctx;

    /* mu guards stop and disconnected. It is never held while calling paho
     * (a thread holding it inside paho while a callback waits for it would
     * deadlock, paho #1222). cv uses CLOCK_MONOTONIC. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int disconnected;

    /* Paho's receive thread only. */
    int first_session_present;  /* from the first connect's onSuccess5; -1 unknown */
    int was_connected;          /* some connection succeeded before */
    /* Retiring only (consumer_drained): when the UNSUBACK came (0: not
     * yet), when the last message was handled, whether one is (retries
     * included). */
    atomic_llong left_us, last_message_us;
    atomic_int in_message;
    int db_up;                  /* last known state, to log transitions once */
    struct reading_batch batch; /* reused from message to message */

    atomic_ullong messages, inserted, duplicates, rejected, dead_letters, db_failures;
};

/* --- logging --------------------------------------------------------------- */

const char *storage_log_value(const char *s, char *buf, size_t len)
{
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = c < 0x20 || c == 0x7f ? ' ' : c == '"' ? '\'' : (char)c;
    }
    buf[i] = '\0';
    return buf;
}

/* --- database, with the log lines ------------------------------------------- */

static void log_db_event(void *ctx, const struct db_ensure_info *info,
                         const struct migration *m)
{
    (void)ctx;
    if (m)
        log_info("db.migrated", "version=%d name=%s", m->version, m->name);
    else
        log_info("db.connected", "%s server_version=%d %s", info->where, info->server_version,
                 info->settings);
}

int consumer_db_ensure(struct db *db, char *err, size_t errlen)
{
    struct db_ensure_info info;
    int rc = db_ensure(db, log_db_event, NULL, &info, err, errlen);
    if (rc != DB_OK || !info.connected)
        return rc;
    int newest = storage_migrations[storage_migrations_count - 1].version;
    if (info.schema_version > newest)
        /* A newer storage migrated this database; ours still works as long
         * as migrations only add, which is the rule for writing them. */
        log_warn("db.schema_newer", "version=%d known=%d", info.schema_version, newest);
    else if (!info.applied)
        log_info("db.schema_current", "version=%d", info.schema_version);
    return rc;
}

/* --- stopping --------------------------------------------------------------- */

/* Sleeps ms unless a stop is (or gets) requested. Returns 1 if stopping. */
static int sleep_unless_stopped(struct consumer *c, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
        ;
    int stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

/* The message is neither stored nor acknowledged and the database keeps
 * failing, but we were asked to stop. See consumer.h: leaving the process
 * is the one exit that neither acknowledges nor hangs. _exit, not exit:
 * the main thread may be inside paho or libpq right now. */
static _Noreturn void exit_unacknowledged(const struct consumer *c, const char *topic,
                                          size_t len, const char *while_what)
{
    log_warn("storage.exit_unacked",
             "topic=%s bytes=%zu client_id=%s msg=\"stop requested while %s: exiting "
             "without acknowledging; the broker redelivers the message to this client id\"",
             topic, len, c->cfg->client_id, while_what);
    _exit(0);
}

/* Between two attempts at one message: waits *delay ms, then doubles it (up
 * to RETRY_MAX_MS). A stop requested meanwhile exits, unacknowledged. */
static void back_off(struct consumer *c, long *delay, const char *topic, size_t len,
                     const char *while_what)
{
    if (sleep_unless_stopped(c, *delay))
        exit_unacknowledged(c, topic, len, while_what);
    *delay = *delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : *delay * 2;
}

/* --- storing one message ---------------------------------------------------- */

enum job_kind { JOB_BATCH, JOB_ROWS, JOB_DEAD_LETTER };

static const char *const job_names[] = { "store_batch", "store_rows", "dead_letter" };

struct job {
    enum job_kind kind;
    const char *topic;
    const void *payload;
    size_t len;
    const char *by;               /* JOB_BATCH, JOB_ROWS */
    const char *reason;           /* JOB_DEAD_LETTER */
    struct db_batch_result res;
    char detail[512];             /* the final answer's message, if any */
};

static int attempt(struct consumer *c, struct job *j, char *err, size_t errlen)
{
    switch (j->kind) {
    case JOB_BATCH:
        return db_store_batch(c->db, &c->batch, j->by, &j->res, err, errlen);
    case JOB_ROWS:
        return db_store_rows(c->db, &c->batch, j->by, j->topic, j->payload, j->len,
                             &j->res, err, errlen);
    case JOB_DEAD_LETTER:
        return db_dead_letter(c->db, j->topic, j->reason, j->payload, j->len, err, errlen);
    }
    return DB_RETRY;
}

/* Runs the job until the database gives a final answer (DB_OK or
 * DB_REJECTED), reconnecting and backing off in between. One warn line per
 * failed attempt. Does not return if a stop is requested meanwhile. */
static int run_job(struct consumer *c, struct job *j)
{
    char err[512];
    long delay = RETRY_FIRST_MS;

    for (int n = 1;; n++) {
        int rc = consumer_db_ensure(c->db, err, sizeof err);
        if (rc == DB_FATAL) {
            /* On reconnect, the database can no longer serve us (now not
             * UTF8, or a migration failed): retrying cannot help, so as at
             * startup, exit 1, here without acknowledging; the broker
             * redelivers the message. _exit: see exit_unacknowledged. */
            char qb[sizeof err];
            log_error("db.unusable", "topic=%s err=\"%s\" msg=\"exiting without acknowledging\"",
                      j->topic, storage_log_value(err, qb, sizeof qb));
            _exit(1);
        }
        if (rc == DB_OK) {
            c->db_up = 1;
            smetrics_db_state(1);
            err[0] = '\0';
            rc = attempt(c, j, err, sizeof err);
            if (rc != DB_RETRY) {
                memcpy(j->detail, err, sizeof j->detail);
                return rc;
            }
        }
        char qb[sizeof err];
        if (c->db_up && !db_is_up(c->db)) {
            c->db_up = 0;
            smetrics_db_state(0);
            log_warn("db.connection_lost", "err=\"%s\"", storage_log_value(err, qb, sizeof qb));
        }
        atomic_fetch_add(&c->db_failures, 1);
        log_warn("storage.store_failed", "op=%s topic=%s attempt=%d retry_in_ms=%ld err=\"%s\"",
                 job_names[j->kind], j->topic, n, delay, storage_log_value(err, qb, sizeof qb));
        back_off(c, &delay, j->topic, j->len, "the database fails");
    }
}

static void dead_letter(struct consumer *c, const char *topic, const void *payload, size_t len,
                        const char *reason)
{
    struct job j = { .kind = JOB_DEAD_LETTER, .topic = topic, .payload = payload, .len = len,
                     .reason = reason };
    char qb[512];
    log_warn("storage.dead_letter", "topic=%s bytes=%zu reason=\"%s\"", topic, len,
             storage_log_value(reason, qb, sizeof qb));
    if (run_job(c, &j) == DB_OK) {
        atomic_fetch_add(&c->dead_letters, 1);
        smetrics_dead_letter();
        return;
    }
    /* Only a data-class error on dead_letters itself gets here (topic and
     * reason were made valid UTF-8): blocking the queue for ever would be
     * worse than dropping this one message, loudly. */
    log_error("storage.message_dropped", "topic=%s bytes=%zu reason=\"%s\" "
              "msg=\"the database refused even the dead letter\"", topic, len,
              storage_log_value(reason, qb, sizeof qb));
}

/* Everything for one message; returns once it may be acknowledged. by gets
 * the ingestion instance that sent it (of a message that did not decode:
 * the one its topic names), "" when unknown. */
static void handle_message(struct consumer *c, const char *topic, const void *payload,
                           size_t len, int dup, char by[READING_INSTANCE_MAX + 1])
{
    struct reading_error rerr;
    int64_t t0 = ts_mono_us();

    atomic_fetch_add(&c->messages, 1);
    reading_batch_clear(&c->batch);
    by[0] = '\0';
    char rids[1024];   /* for the log line; cut with "..." past its size */
    int rc;
    long delay = RETRY_FIRST_MS;
    /* Out of memory says nothing about the message: not a dead letter, try
     * again (as when the database fails) until it decodes or a stop comes. */
    while ((rc = reading_decode_message(payload, len, by, READING_INSTANCE_MAX + 1, rids,
                                        sizeof rids, &c->batch, &rerr)) < 0 &&
           rerr.out_of_memory) {
        log_error("storage.out_of_memory", "topic=%s bytes=%zu retry_in_ms=%ld", topic, len,
                  delay);
        back_off(c, &delay, topic, len, "out of memory");
    }
    if (rc < 0) {
        by[0] = '\0';
        char reason[400];
        if (rerr.index >= 0)
            snprintf(reason, sizeof reason, "undecodable: reading %ld%s%s: %s", rerr.index,
                     *rerr.field ? " field " : "", rerr.field, rerr.message);
        else
            snprintf(reason, sizeof reason, "undecodable: %s%s%s", rerr.field,
                     *rerr.field ? ": " : "", rerr.message);
        dead_letter(c, topic, payload, len, reason);
        /* Dead-lettered, the message is stored as far as its sender goes:
         * confirm it to the instance the topic names (<prefix>/<instance>,
         * as ingestion publishes), or ingestion would publish it again at
         * each republish interval, one more dead letter each time. */
        size_t np = strlen(c->cfg->topic_prefix);
        if (!strncmp(topic, c->cfg->topic_prefix, np) && topic[np] == '/') {
            const char *inst = topic + np + 1;
            size_t n = strlen(inst);
            if (n <= READING_INSTANCE_MAX && reading_sensor_id_valid(inst, n))
                memcpy(by, inst, n + 1);
        }
        return;
    }

    int64_t t1 = ts_mono_us();
    struct job j = { .kind = JOB_BATCH, .topic = topic, .payload = payload, .len = len,
                     .by = by };
    char qb[512];
    if (run_job(c, &j) == DB_REJECTED) {
        /* Some reading is refused (the message decoded fine, so this is
         * rare): store the others one by one, dead-letter the rest. */
        log_warn("storage.batch_refused", "topic=%s readings=%zu err=\"%s\" msg=\"retrying "
                 "reading by reading\"", topic, c->batch.n,
                 storage_log_value(j.detail, qb, sizeof qb));
        j.kind = JOB_ROWS;
        run_job(c, &j);   /* DB_OK: store_rows never refuses as a whole */
    }
    if (j.res.rejected) {
        atomic_fetch_add(&c->rejected, (unsigned long long)j.res.rejected);
        if (j.res.dead_letter_refused)
            log_error("storage.readings_lost", "topic=%s refused=%ld of=%zu err=\"%s\" "
                      "msg=\"the database refused the readings and their dead letter\"",
                      topic, j.res.rejected, c->batch.n,
                      storage_log_value(j.detail, qb, sizeof qb));
        else {
            atomic_fetch_add(&c->dead_letters, 1);
            smetrics_dead_letter();
            log_warn("storage.readings_refused", "topic=%s refused=%ld of=%zu first=\"%s\" "
                     "msg=\"stored the others; the message is in dead_letters\"",
                     topic, j.res.rejected, c->batch.n,
                     storage_log_value(j.detail, qb, sizeof qb));
        }
    }
    atomic_fetch_add(&c->inserted, (unsigned long long)j.res.inserted);
    atomic_fetch_add(&c->duplicates, (unsigned long long)j.res.duplicates);
    int64_t newest = 0;
    for (size_t i = 0; i < c->batch.n; i++)
        if (c->batch.v[i].received_at_us > newest)
            newest = c->batch.v[i].received_at_us;
    smetrics_committed(j.res.inserted, j.res.duplicates, c->batch.n,
                       (double)(ts_mono_us() - t1) / 1e6, newest);
    log_debug("storage.batch", "topic=%s by=%s readings=%zu inserted=%ld duplicates=%ld "
              "redelivered=%d decode_ms=%.1f store_ms=%.1f rids=%s", topic, by, c->batch.n,
              j.res.inserted, j.res.duplicates, dup, (double)(t1 - t0) / 1000.0,
              (double)(ts_mono_us() - t1) / 1000.0, rids[0] ? rids : "-");
    reading_batch_clear(&c->batch);
}

/* --- paho callbacks (all on paho's receive thread) -------------------------- */

/* Tells the ingestion instance that sent it that the message is committed,
 * so that it stops keeping it for a republish: by the id in its Correlation
 * Data, or without one by its digest (reading_confirm_format). QoS 0: a
 * lost confirmation only costs a harmless republish. */
static void confirm(struct consumer *c, const char *by, MQTTAsync_message *msg, size_t len)
{
    char topic[512], body[READING_CONFIRM_MAX];
    int n = snprintf(topic, sizeof topic, "%s/%s", c->cfg->stored_prefix, by);
    if (n < 0 || (size_t)n >= sizeof topic)
        return;
    MQTTProperty *corr = MQTTProperties_getProperty(&msg->properties,
                                                    MQTTPROPERTY_CODE_CORRELATION_DATA);
    int clen = corr ? corr->value.data.len : 0;
    size_t blen = reading_confirm_format(body, corr ? corr->value.data.data : NULL,
                                         clen > 0 ? (size_t)clen : 0, msg->payload, len);
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = body;
    m.payloadlen = (int)blen;
    m.qos = 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(c->client, topic, &m, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        log_debug("storage.confirm_failed", "topic=%s rc=%d", topic, rc);
}

/* Returning 1 makes paho send the PUBACK; we get here only when the message
 * is committed (readings or dead letter), see handle_message. */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct consumer *c = ctx;
    char by[READING_INSTANCE_MAX + 1];
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    (void)topic_len;   /* a topic with an embedded NUL is used up to it */
    int retiring = *c->cfg->retire;   /* only then does consumer_drained look */
    if (retiring)
        atomic_store(&c->in_message, 1);
    handle_message(c, topic, msg->payload, len, msg->dup, by);
    if (*by)
        confirm(c, by, msg, len);
    if (retiring) {
        atomic_store(&c->last_message_us, ts_mono_us());
        atomic_store(&c->in_message, 0);
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

/* Paho tells the CONNACK's session-present flag only to the first
 * MQTTAsync_connect's onSuccess5: automatic reconnects null that callback.
 * Its protocol trace does show it: "<- CONNACK" for every CONNACK, then,
 * with clean start off, "Cleaning session state on connect because
 * sessionPresent is 0" exactly when the broker had no session (paho 1.3.10
 * to 1.3.13, MQTTAsyncUtils.c). Should that text change, we say "unknown"
 * rather than guess.
 *
 * The trace is at PROTOCOL level only from a connection's loss (or the
 * first connect) to its CONNACK: at that level paho formats a line for
 * every packet under one lock shared by its threads, each with
 * localtime(), which stats /etc/localtime (Log.c): three lines, a stat and
 * a getenv per message stored. Paho calls on_connection_lost before it
 * schedules its automatic reconnect (MQTTAsync_startConnectRetry, at least
 * RECONNECT_MIN_S later), so the level is up before the next CONNACK. */
static atomic_int trace_connack_seen, trace_session_absent;

static void trace_connack(int on)
{
    MQTTAsync_setTraceLevel(on ? MQTTASYNC_TRACE_PROTOCOL : MQTTASYNC_TRACE_ERROR);
}

static void on_trace(enum MQTTASYNC_TRACE_LEVELS level, char *message)
{
    if (strstr(message, "<- CONNACK")) {
        atomic_store(&trace_session_absent, 0);
        atomic_store(&trace_connack_seen, 1);
    } else if (strstr(message, "sessionPresent is 0")) {
        atomic_store(&trace_session_absent, 1);
    } else if (level >= MQTTASYNC_TRACE_ERROR) {
        char qb[512];
        log_warn("mqtt.paho", "level=%d msg=\"%s\"", (int)level,
                 storage_log_value(message, qb, sizeof qb));
    }
}

/* "1", "0" or "unknown" for the connection that just succeeded. */
static const char *session_present(struct consumer *c)
{
    int v = -1;
    if (c->first_session_present >= 0)
        v = c->first_session_present;
    else if (atomic_load(&trace_connack_seen))
        v = !atomic_load(&trace_session_absent);
    c->first_session_present = -1;
    atomic_store(&trace_connack_seen, 0);
    return v < 0 ? "unknown" : v ? "1" : "0";
}

static void on_connect_ok(void *ctx, MQTTAsync_successData5 *r)
{
    struct consumer *c = ctx;
    c->first_session_present = r->alt.connect.sessionPresent ? 1 : 0;
}

/* Only for the first attempt (paho nulls it afterwards), but it keeps
 * trying every 1..16 s: say so once. */
static void on_connect_failed(void *ctx, MQTTAsync_failureData5 *r)
{
    struct consumer *c = ctx;
    log_warn("mqtt.connect_failed", "broker=%s code=%d reason=\"%s\" user=%s msg=\"%s; "
             "retrying every %d..%d s\"", c->cfg->mqtt_url, r->code,
             r->reasonCode ? MQTTReasonCode_toString(r->reasonCode) : "-",
             *c->cfg->mqtt_username ? c->cfg->mqtt_username : "-",
             r->message ? r->message : MQTTAsync_strerror(r->code), RECONNECT_MIN_S,
             RECONNECT_MAX_S);
}

static void on_subscribed(void *ctx, MQTTAsync_successData5 *r)
{
    struct consumer *c = ctx;
    /* For one filter the reason code is the granted QoS. */
    int qos = (int)r->reasonCode;
    if (qos < 1)
        log_warn("mqtt.subscribed", "filter=%s qos=%d msg=\"broker downgraded to QoS 0: "
                 "messages can be lost\"", c->cfg->topic_filter, qos);
    else
        log_info("mqtt.subscribed", "filter=%s qos=%d", c->cfg->topic_filter, qos);
    smetrics_subscribed(1);
    /* Tell every ingestion we are (again) subscribed: what the broker
     * dropped while no storage was (mosquitto does not persist shared
     * subscriptions over a restart) is then republished at once. */
    char topic[512];
    int n = snprintf(topic, sizeof topic, "%s/@online", c->cfg->stored_prefix);
    if (n > 0 && (size_t)n < sizeof topic) {
        MQTTAsync_message m = MQTTAsync_message_initializer;
        m.payload = (void *)c->cfg->client_id;
        m.payloadlen = (int)strlen(c->cfg->client_id);
        m.qos = 0;
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        MQTTAsync_sendMessage(c->client, topic, &m, &ro);
    }
}

static void on_subscribe_failed(void *ctx, MQTTAsync_failureData5 *r)
{
    struct consumer *c = ctx;
    if ((int)r->reasonCode >= 0x80) {
        /* The broker said no (not authorised, shared subscriptions not
         * supported...): a storage that consumes nothing must not look
         * healthy. */
        log_error("mqtt.subscribe_refused", "filter=%s reason=%d (%s)", c->cfg->topic_filter,
                  (int)r->reasonCode, MQTTReasonCode_toString(r->reasonCode));
        c->on_fatal(c->fatal_ctx);
        return;
    }
    /* The connection went away meanwhile: the next connect subscribes again. */
    log_warn("mqtt.subscribe_failed", "filter=%s code=%d msg=\"%s\"", c->cfg->topic_filter,
             r->code, MQTTAsync_strerror(r->code));
}

static void on_left(void *ctx, MQTTAsync_successData5 *r)
{
    struct consumer *c = ctx;
    (void)r;
    log_info("mqtt.unsubscribed", "filter=%s client_id=%s msg=\"out of the shared "
             "subscription: storing what the session holds\"", c->cfg->topic_filter,
             c->cfg->client_id);
    atomic_store(&c->left_us, ts_mono_us());
}

static void on_leave_failed(void *ctx, MQTTAsync_failureData5 *r)
{
    struct consumer *c = ctx;
    /* The connection went away meanwhile: the next one tries again. */
    log_warn("mqtt.unsubscribe_failed", "filter=%s code=%d msg=\"%s\"", c->cfg->topic_filter,
             r->code, MQTTAsync_strerror(r->code));
}

/* Every connection, first or automatic reconnect: subscribe again, since the
 * broker may have lost the session (and with it the subscription). Retiring:
 * unsubscribe instead. */
static void on_connected(void *ctx, char *cause)
{
    struct consumer *c = ctx;
    const char *sp = session_present(c);
    trace_connack(0);
    log_info("mqtt.connected", "broker=%s client_id=%s session_present=%s reconnect=%d",
             c->cfg->mqtt_url, c->cfg->client_id, sp,
             cause && !strcmp(cause, "automatic reconnect"));
    if (c->was_connected && !strcmp(sp, "0"))
        log_warn("mqtt.session_lost", "client_id=%s msg=\"the broker had no session for us: "
                 "messages queued while we were away are gone (broker restart without "
                 "persistence, kill -9, or session expiry)\"", c->cfg->client_id);
    c->was_connected = 1;
    smetrics_mqtt_state(1);
    /* PUBACKs and confirmations are small: no Nagle delay on them (net.h). */
    net_nodelay_to_port(net_url_port(c->cfg->mqtt_url, 1883));

    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = c;
    if (*c->cfg->retire) {
        /* Out of the group first, so that no new message is handed to this
         * session; what it already holds still comes (consumer_drained). */
        ro.onSuccess5 = on_left;
        ro.onFailure5 = on_leave_failed;
        int rc = MQTTAsync_unsubscribe(c->client, c->cfg->topic_filter, &ro);
        if (rc != MQTTASYNC_SUCCESS)
            log_warn("mqtt.unsubscribe_failed", "filter=%s code=%d msg=\"%s\"",
                     c->cfg->topic_filter, rc, MQTTAsync_strerror(rc));
        return;
    }
    ro.onSuccess5 = on_subscribed;
    ro.onFailure5 = on_subscribe_failed;
    int rc = MQTTAsync_subscribe(c->client, c->cfg->topic_filter, 1, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        log_warn("mqtt.subscribe_failed", "filter=%s code=%d msg=\"%s\"", c->cfg->topic_filter,
                 rc, MQTTAsync_strerror(rc));
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct consumer *c = ctx;
    trace_connack(1);   /* before paho's reconnect: see on_trace */
    smetrics_mqtt_state(0);
    log_warn("mqtt.connection_lost", "broker=%s cause=\"%s\" msg=\"reconnecting every %d..%d s\"",
             c->cfg->mqtt_url, cause ? cause : "unknown", RECONNECT_MIN_S, RECONNECT_MAX_S);
}

static void disconnect_done(struct consumer *c)
{
    pthread_mutex_lock(&c->mu);
    c->disconnected = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_disconnect_ok(void *ctx, MQTTAsync_successData5 *r)
{
    (void)r;
    disconnect_done(ctx);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData5 *r)
{
    log_warn("mqtt.disconnect_failed", "code=%d", r->code);
    disconnect_done(ctx);
}

/* --- lifecycle -------------------------------------------------------------- */

struct consumer *consumer_create(const struct storage_config *cfg, struct db *db,
                                 consumer_fatal_fn *on_fatal, void *fatal_ctx,
                                 char *err, size_t errlen)
{
    struct consumer *c = calloc(1, sizeof *c);
    pthread_condattr_t ca;
    int rc;

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->db = db;
    c->on_fatal = on_fatal;
    c->fatal_ctx = fatal_ctx;
    c->first_session_present = -1;
    c->db_up = 1;   /* the caller connected it before starting us */
    smetrics_db_state(1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);

    /* Process-wide in paho; PROTOCOL level until the first CONNACK (see
     * on_trace). */
    MQTTAsync_setTraceCallback(on_trace);
    trace_connack(1);

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
    rc = MQTTAsync_createWithOptions(&c->client, cfg->mqtt_url, cfg->client_id,
                                     MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "MQTTAsync_createWithOptions: %s", MQTTAsync_strerror(rc));
        goto fail;
    }
    rc = MQTTAsync_setCallbacks(c->client, c, on_connection_lost, on_message, NULL);
    if (rc == MQTTASYNC_SUCCESS)
        rc = MQTTAsync_setConnected(c->client, c, on_connected);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "MQTTAsync_setCallbacks: %s", MQTTAsync_strerror(rc));
        goto fail;
    }
    return c;
fail:
    consumer_destroy(c);
    return NULL;
}

int consumer_start(struct consumer *c, char *err, size_t errlen)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    MQTTProperties props = MQTTProperties_initializer;
    MQTTProperty expiry = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };
    int rc;

    /* v5 keeps a session only with an expiry > 0; clean start off resumes it.
     * Together: what was sent to us while we were away waits for us. */
    expiry.value.integer4 = (unsigned int)c->cfg->session_expiry_s;
    if (MQTTProperties_add(&props, &expiry) != 0) {
        snprintf(err, errlen, "MQTTProperties_add failed");
        return -1;
    }
    co.cleanstart = 0;
    co.connectProperties = &props;   /* paho copies it */
    co.keepAliveInterval = KEEPALIVE_S;
    co.connectTimeout = 10;
    co.automaticReconnect = 1;
    co.minRetryInterval = RECONNECT_MIN_S;
    co.maxRetryInterval = RECONNECT_MAX_S;
    co.onSuccess5 = on_connect_ok;
    co.onFailure5 = on_connect_failed;
    co.context = c;
    if (*c->cfg->mqtt_username) {
        co.username = c->cfg->mqtt_username;
        co.password = c->cfg->mqtt_password;
    }
    rc = MQTTAsync_connect(c->client, &co);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "MQTTAsync_connect: %s", MQTTAsync_strerror(rc));
        return -1;
    }
    return 0;
}

int consumer_stop(struct consumer *c, int timeout_ms, int end_session)
{
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv);   /* wakes a retry sleep: it exits */
    pthread_mutex_unlock(&c->mu);

    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    MQTTProperties props = MQTTProperties_initializer;
    MQTTProperty expiry = { .identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL };
    d.timeout = timeout_ms;
    d.reasonCode = MQTTREASONCODE_SUCCESS;   /* normal: the session is kept */
    d.onSuccess5 = on_disconnect_ok;
    d.onFailure5 = on_disconnect_failed;
    d.context = c;
    /* An expiry of 0 in the DISCONNECT ends the session at once. */
    expiry.value.integer4 = 0;
    if (end_session && MQTTProperties_add(&props, &expiry) == 0)
        d.properties = props;
    int rc = MQTTAsync_disconnect(c->client, &d);
    MQTTProperties_free(&props);
    if (rc != MQTTASYNC_SUCCESS) {
        /* Not connected (e.g. reconnecting): this also stops the retries. */
        log_info("mqtt.disconnected", "connected=0 code=%d", rc);
        return 0;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000 + 1;
    pthread_mutex_lock(&c->mu);
    while (!c->disconnected && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT)
        ;
    int done = c->disconnected;
    pthread_mutex_unlock(&c->mu);
    log_info("mqtt.disconnected", "connected=1 clean=%d", done);
    return done;
}

void consumer_destroy(struct consumer *c)
{
    if (!c)
        return;
    if (c->client)
        MQTTAsync_destroy(&c->client);
    reading_batch_free(&c->batch);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void consumer_get_stats(const struct consumer *c, struct consumer_stats *out)
{
    /* atomic_load wants a non-const pointer in C11. */
    struct consumer *m = (struct consumer *)c;
    out->messages = atomic_load(&m->messages);
    out->readings_inserted = atomic_load(&m->inserted);
    out->readings_duplicate = atomic_load(&m->duplicates);
    out->readings_rejected = atomic_load(&m->rejected);
    out->dead_letters = atomic_load(&m->dead_letters);
    out->db_failures = atomic_load(&m->db_failures);
}

int consumer_drained(const struct consumer *c, int idle_ms)
{
    struct consumer *m = (struct consumer *)c;
    int64_t left = atomic_load(&m->left_us), last = atomic_load(&m->last_message_us);
    if (!left || atomic_load(&m->in_message))
        return 0;
    return ts_mono_us() - (last > left ? last : left) >= (int64_t)idle_ms * 1000;
}
