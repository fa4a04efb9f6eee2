/* publisher.c -- readings to the MQTT broker, QoS 1, answered on PUBACK.
 *
 * Threads: paho runs its callbacks on its own thread; evhttp may only be
 * touched from the event loop's thread (FACTS.md). So the paho callbacks do
 * nothing but move a finished message onto a locked list and wake the loop
 * with event_active(); all request bookkeeping happens on the loop thread.
 * The lock is never held while calling paho (paho issue #1222). */
#include "publisher.h"
#include "imetrics.h"
#include "log.h"
#include "net.h"
#include "spool.h"
#include "ts.h"

#include <MQTTAsync.h>
#include <event2/event.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct waiter {
    publisher_done_fn done;
    void *ctx;
};

/* A confirmation from storage: the digest of a message it committed, and
 * when it arrived (paho's thread), for confirm_wait_us(). */
struct confirm {
    uint64_t digest;
    int64_t at_us;
};

struct pub_msg {
    struct reading_msg body;
    struct waiter *w;
    size_t nw, capw;
    size_t readings;
    int ok;                  /* set by the paho callback */
    const char *why;
    struct publisher *p;
    struct pub_msg *next;    /* in the finished list, then the retained one */
    uint64_t digest;         /* what storage's confirmation names */
    int64_t first_us;        /* first publication (monotonic) */
    int64_t open_us;         /* when its first reading came (monotonic) */
    int64_t next_us;         /* next republish if still unconfirmed */
    unsigned copies;         /* republications so far */
    int forwarded;           /* read back from the spool */
    int lost;                /* failed for want of a connection (in flight
                              * when it went, or sent while it was down) */
    int young;               /* retained and counted in p->young */
    int uncuttable_logged;   /* retained, larger than the broker takes, said so */
    int timed;               /* sent while storage confirmed: its confirmation
                              * measures storage's pace (confirm_wait_us()) */
};

/* A request whose readings were written to the spool, awaiting fdatasync. */
struct sync_waiter {
    publisher_done_fn done;
    void *ctx;
    size_t readings;
};

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_UP };

struct publisher {
    struct publisher_config cfg;
    char *client_id, *topic, *instance, *stored_topic, *online_topic;
    char *wake_topic;            /* unsubscribed from to wake paho (wake_cb) */
    char *username, *password;   /* NULL: anonymous */
    MQTTAsync client;
    struct event_base *base;
    struct event *flush_ev;      /* the open message is due: linger_ms after
                                  * its first reading (0: end of loop turn) */
    struct event *done_ev;       /* activated from paho's thread */
    struct event *tick_ev;       /* connects (again), forwards, republishes */
    struct event *hold_ev;       /* the open message waits for storage */
    struct event *wake_ev;       /* paho's send thread may have missed a
                                  * wake-up: see wake_cb */

    struct pub_msg *open;        /* being filled */
    struct pub_msg *full_head, *full_tail;  /* filled, waiting for storage */
    struct pub_msg *ready_head, *ready_tail;  /* from the spool, to send */
    struct event *sync_ev;       /* zero timeout: one fdatasync per loop turn */
    struct sync_waiter *sync_w;
    size_t nsync, capsync;
    size_t fwd_pending;          /* forwarded messages not yet done */
    /* Spooled messages the broker cannot take at held_limit, put back in
     * active.spool by the last round (forward_split): no new round for
     * them alone until the limit changes. */
    size_t held_bytes, held_limit;
    int64_t confirm_avg_us;      /* storage's recent time to confirm (moving average) */
    atomic_llong last_confirm_us;  /* when the last confirmation arrived */
    int fwd_failed, spooling, spool_full_logged;
    size_t inflight;             /* messages sent, not yet done */
    size_t outstanding;          /* readings submitted, not yet done */

    atomic_int state;            /* enum conn_state */
    atomic_int connected;
    int connect_backoff_s;       /* loop thread: wait before the next connect */
    int64_t connect_at_us;       /* loop thread: not before this (monotonic) */
    /* The broker's Maximum Packet Size (its CONNACK; 0: it named none). It
     * drops the connection of a client sending a larger packet, so no
     * message may be larger: see payload_limit(). */
    atomic_size_t max_packet;

    pthread_mutex_t lock;        /* guards finished and the confirmations */
    struct pub_msg *finished;
    struct confirm *confirms;    /* from storage, not yet applied */
    size_t nconfirms, capconfirms;
    /* A message waits for storage, or the drain waits for everything to be
     * confirmed: a confirmation must wake the loop. Else confirmations are
     * only recorded, and applied at the next PUBACK or tick: the loop is not
     * woken once more per message for nothing. */
    atomic_int awaiting_confirm;

    /* Acknowledged, not yet confirmed by storage: oldest first. */
    struct pub_msg *ret_head, *ret_tail;
    size_t retained, retained_bytes;
    /* The retained messages younger than confirm_wait_us(): storage is
     * expected to confirm them soon. young_head is the oldest of them. */
    struct pub_msg *young_head;
    size_t young;
    int draining;                /* nothing waits for storage any more */
    int destroying;              /* failures are final: nothing is spooled */
    atomic_int resend_all;       /* set on reconnection */
    atomic_int re_inflight;      /* republications awaiting PUBACK */
    atomic_ullong completions;   /* PUBACKs and failures so far (paho's thread) */
    unsigned long long wake_seen;  /* completions when wake_ev was armed */
    atomic_int wake_pending;     /* our UNSUBSCRIBE awaits its UNSUBACK */
    int due_left;                /* republish_due() ran out of slots */
    int ever_connected;          /* paho thread only */
    struct publisher_stats st;
};

static void msg_free(struct pub_msg *m)
{
    if (!m)
        return;
    reading_msg_free(&m->body);
    free(m->w);
    free(m);
}

/* --- paho's thread ------------------------------------------------------- */

static void hand_back(struct pub_msg *m, int ok, const char *why)
{
    struct publisher *p = m->p;
    m->ok = ok;
    m->why = why;
    pthread_mutex_lock(&p->lock);
    m->next = p->finished;
    p->finished = m;
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_add(&p->completions, 1);
    event_active(p->done_ev, EV_READ, 0);
}

static void on_publish_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    /* paho 1.3.11 does not pass on the PUBACK's reason code here (it stays
     * 0), so a "no matching subscribers" (0x10) PUBACK cannot be told from a
     * real one: see the README's Guarantees for what that leaves open. */
    (void)resp;
    hand_back(ctx, 1, NULL);
}

static void on_publish_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct pub_msg *m = ctx;
    /* Not acknowledged. paho 1.3.11 says why in one of three ways: a PUBACK
     * reason code >= 0x80 (e.g. not authorised; code 0), the connection
     * going with the message in flight (-11, FACTS.md: lost, keepalive
     * timeout, or our own disconnect, which publisher_destroy covers), or a
     * failed write of the PUBLISH (-1, the connection going too; for a
     * partial write, resp's fields are not even set). All but the refusal
     * may go to the spool; a refusal would be refused again when the spool
     * is forwarded. */
    m->lost = !(resp && resp->code == MQTTASYNC_SUCCESS && resp->reasonCode >= 0x80);
    hand_back(m, 0, "broker did not acknowledge the readings");
}

static void on_subscribe_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct publisher *p = ctx;
    log_warn("mqtt.subscribe_failed", "topic=%s rc=%d msg=\"no confirmations: unconfirmed "
             "messages will be republished\"", p->cfg.stored_topic, resp ? resp->code : 0);
}

static void on_connected(void *ctx, char *cause)
{
    struct publisher *p = ctx;
    (void)cause;
    /* Our messages are small and answered one by one: no Nagle (net.h). */
    net_nodelay_to_port(net_url_port(p->cfg.url, 1883));
    /* Clean start: the subscriptions are made again on every connection. */
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onFailure5 = on_subscribe_fail;
    ro.context = p;
    char *topics[2] = { p->stored_topic, p->online_topic };
    int qos[2] = { 0, 0 };
    int rc = MQTTAsync_subscribeMany(p->client, 2, topics, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        log_warn("mqtt.subscribe_failed", "topic=%s rc=%d", p->cfg.stored_topic, rc);
    /* Whatever the broker held for storage may be gone (a restart or a
     * crash): send again everything not yet confirmed. */
    atomic_store(&p->state, CONN_UP);
    atomic_store(&p->connected, 1);
    /* After connected: a republish_due seeing resend_all while not yet
     * connected would clear it and send nothing until the next tick. */
    if (p->ever_connected)
        atomic_store(&p->resend_all, 1);
    p->ever_connected = 1;
    /* A wake-up UNSUBSCRIBE of the last connection gets no UNSUBACK on this
     * one: without this, were paho never to fail it, wake_cb would wait for
     * it for ever. */
    atomic_store(&p->wake_pending, 0);
    size_t max = atomic_load(&p->max_packet);
    if (max)
        log_info("mqtt.connected", "broker=%s client_id=%s max_packet_bytes=%zu", p->cfg.url,
                 p->client_id, max);
    else
        log_info("mqtt.connected", "broker=%s client_id=%s", p->cfg.url, p->client_id);
    /* Wake the loop: the spool goes out now, ahead of newer readings, not at
     * the next tick (a reading posted after the reconnect was otherwise
     * stored up to a second before older, spooled ones). */
    event_active(p->done_ev, EV_READ, 0);
}

/* The connect's onSuccess5, before on_connected(). paho (1.3.11, and
 * Debian 12's 1.3.12) calls it for a connect we start, never for its own
 * automatic reconnects (MQTTAsyncUtils.c): that is why every connect is
 * ours (tick_cb). */
static void on_connect_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    struct publisher *p = ctx;
    size_t max = 0;
    if (resp && MQTTProperties_hasProperty(&resp->properties,
                                           MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE))
        max = (uint32_t)MQTTProperties_getNumericValue(&resp->properties,
                                                       MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);
    atomic_store(&p->max_packet, max);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct publisher *p = ctx;
    atomic_store(&p->connected, 0);
    atomic_store(&p->state, CONN_IDLE);           /* the tick connects again */
    imetrics_connection_lost();
    log_warn("mqtt.connection_lost", "broker=%s cause=\"%s\"", p->cfg.url,
             cause ? cause : "unknown");
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct publisher *p = ctx;
    atomic_store(&p->state, CONN_IDLE);           /* the tick tries again */
    /* A refused CONNACK names its reason (bad user name or password, not
     * authorized): the operator's fix is in the credentials, not the network. */
    log_warn("mqtt.connect_failed", "broker=%s rc=%d reason=\"%s\" user=%s", p->cfg.url,
             resp ? resp->code : 0,
             resp && resp->reasonCode ? MQTTReasonCode_toString(resp->reasonCode)
             : resp && resp->message ? resp->message : "unreachable",
             p->username ? p->username : "-");
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A confirmation from storage: 16 hex digits, the digest of a message; or
 * a storage announcing it has (re)subscribed. */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    struct publisher *p = ctx;
    const char *d = m->payload;
    uint64_t digest = 0;
    int ok = m->payloadlen == 16;
    (void)topic_len;
    if (!strcmp(topic, p->online_topic)) {
        atomic_store(&p->resend_all, 1);
        ok = 0;
    }
    for (int i = 0; ok && i < 16; i++) {
        int v = hexval(d[i]);
        ok = v >= 0;
        digest = digest << 4 | (uint64_t)(v & 0xf);
    }
    if (ok) {
        int64_t now = ts_mono_us();
        atomic_store(&p->last_confirm_us, now);
        pthread_mutex_lock(&p->lock);
        if (p->nconfirms == p->capconfirms) {
            size_t cap = p->capconfirms ? p->capconfirms * 2 : 64;
            struct confirm *c = realloc(p->confirms, cap * sizeof *c);
            if (c) {
                p->confirms = c;
                p->capconfirms = cap;
            }
        }
        /* Out of memory drops it: the message is then republished, harmlessly. */
        if (p->nconfirms < p->capconfirms)
            p->confirms[p->nconfirms++] = (struct confirm){ digest, now };
        pthread_mutex_unlock(&p->lock);
        if (atomic_load(&p->awaiting_confirm))
            event_active(p->done_ev, EV_READ, 0);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

/* A republication was acknowledged (or failed: the message stays retained
 * and is tried again later). Either way a slot is free. */
static void on_republish_done(void *ctx, MQTTAsync_successData5 *resp)
{
    struct publisher *p = ctx;
    (void)resp;
    atomic_fetch_sub(&p->re_inflight, 1);
    atomic_fetch_add(&p->completions, 1);
    event_active(p->done_ev, EV_READ, 0);
}

static void on_republish_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct publisher *p = ctx;
    (void)resp;
    atomic_fetch_sub(&p->re_inflight, 1);
    atomic_fetch_add(&p->completions, 1);
    event_active(p->done_ev, EV_READ, 0);
}

static void forwarded_done(struct publisher *p, int ok);

/* The largest payload the broker takes in one PUBLISH: its Maximum Packet
 * Size less our packet's header (fixed header, topic, packet id, an empty
 * property list); SIZE_MAX when it named no limit, or before the first
 * connection. */
static size_t payload_limit(const struct publisher *p)
{
    size_t max = atomic_load(&p->max_packet);
    size_t head = strlen(p->topic) + 16;
    if (!max)
        return SIZE_MAX;
    return max > head ? max - head : 0;
}

/* The readings of a finished message (payload, n bytes) again, in finished
 * messages of at most limit bytes each, linked by ->next, in order; NULL
 * with a static reason in *why when that cannot be: not a message of ours,
 * a reading that alone is larger, out of memory. */
static struct pub_msg *cut_message(struct publisher *p, const char *payload, size_t n,
                                   size_t limit, const char **why)
{
    struct reading_batch b = { 0 };
    struct reading_error err;
    char by[READING_INSTANCE_MAX + 1];
    struct pub_msg *head = NULL, **tail = &head, *m = NULL;
    *why = "out of memory";
    if (reading_decode_message(payload, n, by, sizeof by, NULL, 0, &b, &err) < 0) {
        *why = "not a message of ours";
        goto fail;
    }
    size_t i = 0;
    while (i < b.n) {
        if (!m && (!(m = calloc(1, sizeof *m)) || reading_msg_init(&m->body, p->instance) < 0))
            goto fail;
        struct reading_msg_mark mark = reading_msg_mark(&m->body);
        if (reading_msg_add(&m->body, &b.v[i]) < 0)
            goto fail;
        if (reading_msg_size(&m->body) <= limit) {
            i++;
            continue;
        }
        /* Over: m is done as it was, and this reading starts the next one. */
        reading_msg_rollback(&m->body, mark);
        if (!m->body.count) {
            *why = "one reading alone is larger than the broker's maximum packet size";
            goto fail;
        }
        if (reading_msg_finish(&m->body) < 0)
            goto fail;
        m->p = p;
        *tail = m;
        tail = &m->next;
        m = NULL;
    }
    if (m && reading_msg_finish(&m->body) < 0)
        goto fail;
    if (m) {
        m->p = p;
        *tail = m;
    }
    reading_batch_free(&b);
    return head;
fail:
    msg_free(m);
    while (head) {
        struct pub_msg *next = head->next;
        msg_free(head);
        head = next;
    }
    reading_batch_free(&b);
    return NULL;
}

static void retained_unlink(struct publisher *p, struct pub_msg *prev, struct pub_msg *m)
{
    if (prev)
        prev->next = m->next;
    else
        p->ret_head = m->next;
    if (p->ret_tail == m)
        p->ret_tail = prev;
    if (p->young_head == m)
        p->young_head = m->next;
    if (m->young)
        p->young--;
    p->retained--;
    p->retained_bytes -= m->body.len;
    msg_free(m);
}

/* Replaces the retained m (after prev) with its readings cut into messages
 * that fit the broker's limit: each retained, as old as m, due at once.
 * Returns 0, leaving m as it is and saying why, when it cannot be cut. */
static int retained_cut(struct publisher *p, struct pub_msg *prev, struct pub_msg *m)
{
    const char *why;
    size_t limit = payload_limit(p);
    struct pub_msg *pieces = cut_message(p, m->body.buf, m->body.len, limit, &why);
    if (!pieces) {
        if (!m->uncuttable_logged)
            log_error("retention.uncuttable", "bytes=%zu max_payload_bytes=%zu error=\"%s\" "
                      "msg=\"larger than the broker takes: not sent again until it expires\"",
                      m->body.len, limit, why);
        m->uncuttable_logged = 1;
        return 0;
    }
    struct pub_msg *last = pieces;
    for (struct pub_msg *x = pieces; x; x = x->next) {
        x->digest = reading_msg_digest(x->body.buf, x->body.len);
        x->first_us = m->first_us;
        x->next_us = 0;
        p->retained++;
        p->retained_bytes += x->body.len;
        last = x;
    }
    last->next = m->next;
    if (p->ret_tail == m)
        p->ret_tail = last;
    m->next = pieces;          /* so that unlinking m leaves the pieces after prev */
    retained_unlink(p, prev, m);
    return 1;
}

/* Keeps an acknowledged message until storage confirms it. */
static void retain(struct publisher *p, struct pub_msg *m)
{
    free(m->w);
    m->w = NULL;
    m->nw = m->capw = 0;
    m->next = NULL;
    m->next_us = m->first_us + (int64_t)p->cfg.republish_after_s * 1000000;
    if (p->ret_tail)
        p->ret_tail->next = m;
    else
        p->ret_head = m;
    p->ret_tail = m;
    p->retained++;
    p->retained_bytes += m->body.len;
    if (p->cfg.max_unconfirmed) {
        m->young = 1;
        p->young++;
        if (!p->young_head)
            p->young_head = m;
    }
    size_t dropped = 0;
    while (p->retained_bytes > p->cfg.retention_max_bytes && p->ret_head != m) {
        retained_unlink(p, NULL, p->ret_head);
        dropped++;
    }
    if (dropped) {
        p->st.overflowed += dropped;
        log_warn("retention.overflow", "dropped_messages=%zu retained_bytes=%zu "
                 "msg=\"unconfirmed messages let go early: storage is far behind\"",
                 dropped, p->retained_bytes);
    }
}

static int spool_lost(struct publisher *p, struct pub_msg *m);

/* Runs every waiter of m on the loop thread, then retains m (acknowledged)
 * or frees it (failed: its requests were told so, or wait for the spool). */
static void msg_complete(struct publisher *p, struct pub_msg *m, int ok, const char *why)
{
    if (!ok && spool_lost(p, m)) {
        msg_free(m);
        return;
    }
    if (ok && m->first_us)
        imetrics_publish_latency((double)(ts_mono_us() - m->first_us) / 1e6);
    for (size_t i = 0; i < m->nw; i++)
        m->w[i].done(m->w[i].ctx, ok, why);
    p->outstanding -= m->readings;
    if (m->forwarded) {
        m->forwarded = 0;
        forwarded_done(p, ok);
    }
    if (ok && m->body.buf && p->cfg.retention_s > 0)
        retain(p, m);
    else
        msg_free(m);
}

/* Drops the retained messages storage has confirmed. Confirmations come
 * about in publication order, so the scan is short. */
static void apply_confirms(struct publisher *p, const struct confirm *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct pub_msg *prev = NULL;
        for (struct pub_msg *m = p->ret_head; m; prev = m, m = m->next) {
            if (m->digest == c[i].digest) {
                if (m->timed && !m->copies) {
                    /* How long storage takes (confirm_wait_us()), as it
                     * arrived. Not for what was sent while storage was
                     * away (its backlog measures the outage), and one
                     * sample at most half a second. */
                    int64_t took = c[i].at_us - m->first_us;
                    if (took > 500000)
                        took = 500000;
                    if (took > 0)
                        p->confirm_avg_us += (took - p->confirm_avg_us) / 8;
                }
                retained_unlink(p, prev, m);
                p->st.confirmed++;
                break;
            }
        }
    }
}

/* paho 1.3.12's send thread goes to sleep (for up to a second) when its
 * queue looks empty, and a command queued between its look and its sleep
 * does not wake it: the condition variable is waited on with no predicate
 * (MQTTAsync_sendThread and MQTTAsync_addCommand, MQTTAsyncUtils.c; the
 * same in 1.3.13). The message then waits in paho for that second, and with
 * it every request of this replica, since storage's pacing holds the next
 * message until this one is acknowledged. Any command queued later wakes
 * the thread, which sends its queue in order. So when messages are in
 * flight and none was acknowledged for WAKE_AFTER_US, we queue an
 * UNSUBSCRIBE from a topic we never subscribed to: the broker answers it
 * (UNSUBACK: no subscription existed) and nothing else happens. One at a
 * time, so that a broker that stopped answering gets one, not one every
 * WAKE_AFTER_US (README: Performance, the one-second stall). */
#define WAKE_AFTER_US 20000

static void wake_arm(struct publisher *p)
{
    if (evtimer_pending(p->wake_ev, NULL))
        return;
    p->wake_seen = atomic_load(&p->completions);
    struct timeval tv = { 0, WAKE_AFTER_US };
    evtimer_add(p->wake_ev, &tv);
}

static void on_wake_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    atomic_store(&((struct publisher *)ctx)->wake_pending, 0);
}

static void on_wake_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void)resp;
    atomic_store(&((struct publisher *)ctx)->wake_pending, 0);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    if (!p->inflight && !atomic_load(&p->re_inflight))
        return;   /* everything was answered: armed again by the next send */
    if (atomic_load(&p->completions) == p->wake_seen && publisher_connected(p) &&
        !atomic_exchange(&p->wake_pending, 1)) {
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        ro.onSuccess5 = on_wake_ok;
        ro.onFailure5 = on_wake_fail;
        ro.context = p;
        if (MQTTAsync_unsubscribe(p->client, p->wake_topic, &ro) == MQTTASYNC_SUCCESS) {
            p->st.wakeups++;
            imetrics_mqtt_wakeup();
            log_debug("mqtt.wakeup", "inflight=%zu msg=\"no PUBACK for %d ms: woke paho's "
                      "send thread\"", p->inflight, WAKE_AFTER_US / 1000);
        } else {
            atomic_store(&p->wake_pending, 0);
        }
    }
    wake_arm(p);
}

/* Publishes again what is due; lets go of what is past the retention. */
static void republish_due(struct publisher *p)
{
    int64_t now = ts_mono_us(), keep = (int64_t)p->cfg.retention_s * 1000000;
    int all = atomic_exchange(&p->resend_all, 0);
    size_t sent = 0, expired = 0, cut = 0;
    struct pub_msg *prev = NULL, *m = p->ret_head;
    p->due_left = 0;
    while (m) {
        struct pub_msg *next = m->next;
        if (now - m->first_us > keep) {
            retained_unlink(p, prev, m);
            expired++;
            m = next;
            continue;
        }
        if (all)
            m->next_us = now;
        int due = now >= m->next_us && publisher_connected(p);
        if (due && m->body.len > payload_limit(p)) {
            /* Larger than the broker takes now (restarted with a lower
             * maximum packet size): retained as pieces that fit instead,
             * as old as m, due now. */
            if (!retained_cut(p, prev, m)) {
                prev = m;       /* not sent again: it expires */
                m = next;
                continue;
            }
            cut++;
            m = prev ? prev->next : p->ret_head;   /* the first piece */
            continue;
        }
        if (due && (size_t)atomic_load(&p->re_inflight) + p->inflight >= p->cfg.max_inflight)
            p->due_left = 1;   /* carried on as acknowledgements free slots */
        else if (due) {
            MQTTAsync_message msg = MQTTAsync_message_initializer;
            msg.payload = m->body.buf;
            msg.payloadlen = (int)m->body.len;
            msg.qos = 1;
            MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
            ro.onSuccess5 = on_republish_done;
            ro.onFailure5 = on_republish_fail;
            ro.context = p;
            atomic_fetch_add(&p->re_inflight, 1);
            if (MQTTAsync_sendMessage(p->client, p->topic, &msg, &ro) == MQTTASYNC_SUCCESS) {
                wake_arm(p);
                m->copies++;
                sent++;
                /* Doubling: a storage that is merely slow is not flooded. */
                unsigned shift = m->copies < 16 ? m->copies : 16;
                m->next_us = now + ((int64_t)p->cfg.republish_after_s * 1000000 << shift);
            } else {
                atomic_fetch_sub(&p->re_inflight, 1);
            }
        }
        prev = m;
        m = next;
    }
    p->st.republished += sent;
    p->st.expired += expired;
    if (sent)
        log_info("retention.republished", "messages=%zu retained=%zu", sent, p->retained);
    if (cut)
        log_info("retention.cut", "messages=%zu max_payload_bytes=%zu msg=\"larger than the "
                 "broker takes now: sent again in pieces\"", cut, payload_limit(p));
    if (expired)
        log_warn("retention.expired", "messages=%zu msg=\"not confirmed by storage within "
                 "%d s: let go\"", expired, p->cfg.retention_s);
}

/* --- the loop's thread --------------------------------------------------- */

static void start_connect(struct publisher *p)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    /* paho 1.3.11 pings after keepAliveInterval without traffic either way
     * and gives up 1.5 intervals later: a broker that stopped answering
     * (frozen, or the network gone quiet) is noticed after about 12 s, and
     * the requests waiting for its PUBACK are answered then (spooled, else
     * 503), well within HAProxy's `timeout server` (30 s); with 20 s they
     * waited 50 s. */
    co.keepAliveInterval = 5;
    co.cleanstart = 1;              /* publishers keep no session */
    /* No automaticReconnect: its CONNACK would not reach us, and a broker
     * restarted with a lower maximum packet size would drop the connection
     * at every message (on_connect_ok). tick_cb reconnects instead. */
    co.connectTimeout = 5;
    co.onSuccess5 = on_connect_ok;
    co.onFailure5 = on_connect_fail;
    co.context = p;
    co.username = p->username;
    co.password = p->password;
    atomic_store(&p->state, CONN_CONNECTING);
    int rc = MQTTAsync_connect(p->client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        atomic_store(&p->state, CONN_IDLE);
        log_warn("mqtt.connect_failed", "broker=%s rc=%d", p->cfg.url, rc);
    }
}

/* Hands one finished message to paho; on refusal, completes it at once
 * (to the spool when paho refused for want of a connection). */
static void send_msg(struct publisher *p, struct pub_msg *m)
{
    if (m->body.len > payload_limit(p)) {
        /* Made before a reconnect told a lower maximum packet size: the
         * broker would drop the connection for it. As if lost with the
         * connection: to the spool, which sends it in pieces. */
        m->lost = 1;
        msg_complete(p, m, 0, "broker unavailable");
        return;
    }
    m->digest = reading_msg_digest(m->body.buf, m->body.len);
    m->first_us = ts_mono_us();
    m->timed = m->first_us - atomic_load(&p->last_confirm_us) <= 1000000;
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = m->body.buf;
    msg.payloadlen = (int)m->body.len;
    msg.qos = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_publish_ok;
    ro.onFailure5 = on_publish_fail;
    ro.context = m;
    p->inflight++;
    /* paho copies the payload; m stays ours until its callback. */
    int rc = MQTTAsync_sendMessage(p->client, p->topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        p->inflight--;
        log_debug("mqtt.publish_refused", "rc=%d readings=%zu", rc, m->readings);
        m->lost = rc == MQTTASYNC_DISCONNECTED;
        msg_complete(p, m, 0, "broker unavailable");
    } else {
        wake_arm(p);
    }
}

/* The longest the hold follows storage's pace: while storage works through
 * a backlog (after a restart, its persistent session's queue), its
 * confirmations come late, and a longer hold would stall every client
 * meanwhile (a second with 1 s). */
#define CONFIRM_WAIT_MAX_US 250000

/* How long a message holds the next one back for storage's confirmation:
 * confirm_wait_ms, or twice what storage took lately (at most
 * CONFIRM_WAIT_MAX_US), whichever is longer. A storage that is slow but
 * working (large messages, each commit queued behind the other replicas')
 * keeps pacing us: with a fixed 50 ms, commits of 22-35 ms let go, and
 * ingestion answered 14-31% more than storage stored, its memory growing
 * with the unconfirmed messages. A storage that confirmed nothing for a second is taken for
 * stopped: back to confirm_wait_ms, which is then all it delays a message. */
static int64_t confirm_wait_us(const struct publisher *p, int64_t now)
{
    int64_t base = (int64_t)p->cfg.confirm_wait_ms * 1000;
    if (now - atomic_load(&p->last_confirm_us) > 1000000)
        return base;
    int64_t wait = 2 * p->confirm_avg_us;
    if (wait > CONFIRM_WAIT_MAX_US)
        wait = CONFIRM_WAIT_MAX_US;
    return wait > base ? wait : base;
}

/* Ages the young messages: storage had its time to confirm them. */
static void age_young(struct publisher *p, int64_t now)
{
    int64_t wait = confirm_wait_us(p, now);
    struct pub_msg *m = p->young_head;
    while (m && (!m->young || now - m->first_us >= wait)) {
        if (m->young) {
            m->young = 0;
            p->young--;
        }
        m = m->next;
    }
    p->young_head = m;
}

/* Whether the next message should wait: storage has not yet confirmed
 * max_unconfirmed recent messages. Each commit in storage costs about the
 * same whatever the message holds, so while storage is behind, fewer and
 * larger messages move more readings (and cost ingestion less per reading).
 * A full message waits too (the next one fills meanwhile), so a pipeline
 * offered more than storage commits slows its clients down instead of
 * queueing without end in the broker; max_pending_readings bounds the wait
 * (then 503). The wait is bounded in time as well: a message unconfirmed
 * for confirm_wait_us() no longer counts, so an absent storage only delays
 * by that much. */
static int hold_for_storage(struct publisher *p)
{
    if (!p->cfg.max_unconfirmed || p->draining)
        return 0;
    int64_t now = ts_mono_us();
    age_young(p, now);
    if (p->inflight + p->young < p->cfg.max_unconfirmed)
        return 0;
    if (p->young_head) {   /* try again when the oldest has had its time */
        /* From now on a confirmation wakes us; one that came before did
         * not, so look (on_message sets, then reads; we store, then lock:
         * one of the two sees the other). */
        atomic_store(&p->awaiting_confirm, 1);
        pthread_mutex_lock(&p->lock);
        int pending = p->nconfirms > 0;
        pthread_mutex_unlock(&p->lock);
        if (pending)
            event_active(p->done_ev, EV_READ, 0);
        /* Armed anew each time: the wait moves with storage's pace. */
        int64_t left = p->young_head->first_us + confirm_wait_us(p, now) - now;
        struct timeval tv = { (time_t)(left / 1000000), (suseconds_t)(left % 1000000) };
        if (left < 0)
            tv.tv_sec = tv.tv_usec = 0;
        evtimer_add(p->hold_ev, &tv);
    }   /* else all of them are in flight: their PUBACKs pump again */
    return 1;
}

/* Arms flush_ev to pump again in us microseconds (0: at the end of this
 * loop turn). */
static void flush_in(struct publisher *p, int64_t us)
{
    struct timeval tv = { (time_t)(us / 1000000), (suseconds_t)(us % 1000000) };
    evtimer_add(p->flush_ev, &tv);
}

/* Whether the open message m should wait for more readings: until it is
 * linger_ms old, when flush_ev (armed as m opened) pumps again. Every
 * message costs about half a millisecond of CPU over all the services
 * (paho's threads, the broker, storage, a commit: README, Performance), so
 * at moderate rates, where storage would confirm each tiny message at once,
 * a millisecond of gathering halves the messages and the CPU they take. */
static int linger(struct publisher *p, struct pub_msg *m)
{
    if (!p->cfg.linger_ms || p->draining)
        return 0;
    int64_t left = m->open_us + (int64_t)p->cfg.linger_ms * 1000 - ts_mono_us();
    if (left <= 0)
        return 0;
    /* libevent measures from the time cached at the start of its loop turn,
     * so the timer may fire a little before m is due: arm it again. */
    if (!evtimer_pending(p->flush_ev, NULL))
        flush_in(p, left);
    return 1;
}

/* Sends what waits, as far as the in-flight cap allows: spooled messages
 * being forwarded first (they are older), then the full ones, then the open
 * message, unless it waits for storage or is still lingering. */
static void pump(struct publisher *p)
{
    while (p->ready_head && p->inflight < p->cfg.max_inflight) {
        struct pub_msg *m = p->ready_head;
        p->ready_head = m->next;
        if (!p->ready_head)
            p->ready_tail = NULL;
        m->next = NULL;
        send_msg(p, m);
    }
    /* The full messages are older than the open one: they go first. */
    for (;;) {
        struct pub_msg *m = p->full_head ? p->full_head : p->open;
        if (!m || p->inflight >= p->cfg.max_inflight || hold_for_storage(p))
            return;
        if (m == p->full_head) {
            if (!(p->full_head = m->next))
                p->full_tail = NULL;
            m->next = NULL;
        } else {
            if (linger(p, m))
                return;
            p->open = NULL;
        }
        if (reading_msg_finish(&m->body) < 0)
            msg_complete(p, m, 0, "out of memory");
        else
            send_msg(p, m);
    }
}

/* --- the spool ----------------------------------------------------------- */

/* Makes this loop turn's spool writes durable, then answers their requests. */
static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    int ok = spool_sync(p->cfg.spool) == 0;
    if (!ok)
        log_error("spool.sync_failed", "dir=%s err=\"%s\"", p->cfg.spool_dir, strerror(errno));
    struct sync_waiter *w = p->sync_w;
    size_t n = p->nsync;
    p->sync_w = NULL;
    p->nsync = p->capsync = 0;
    for (size_t i = 0; i < n; i++) {
        p->outstanding -= w[i].readings;
        w[i].done(w[i].ctx, ok, "cannot write the local spool");
    }
    free(w);
}

/* Room for n more requests awaiting this loop turn's fdatasync. */
static int sync_reserve(struct publisher *p, size_t n)
{
    if (p->nsync + n <= p->capsync)
        return 0;
    size_t cap = p->capsync ? p->capsync : 16;
    while (cap < p->nsync + n)
        cap *= 2;
    struct sync_waiter *w = realloc(p->sync_w, cap * sizeof *w);
    if (!w)
        return -1;
    p->sync_w = w;
    p->capsync = cap;
    return 0;
}

/* Appends one message (finished) to the spool. Its requests, queued by the
 * caller after a 0, are answered once this loop turn's fdatasync is done. */
static int spool_put(struct publisher *p, const struct reading_msg *m, size_t readings,
                     const char **why)
{
    if (spool_append(p->cfg.spool, m->buf, m->len, why) < 0) {
        if (!p->spool_full_logged) {
            p->spool_full_logged = 1;
            log_warn("spool.refused", "dir=%s bytes=%zu reason=\"%s\"", p->cfg.spool_dir,
                     spool_bytes(p->cfg.spool), *why);
        }
        return -1;
    }
    p->spool_full_logged = 0;
    if (!p->spooling) {
        p->spooling = 1;
        log_warn("spool.active", "dir=%s msg=\"broker unreachable: readings go to the local "
                 "spool\"", p->cfg.spool_dir);
    }
    p->st.spooled += readings;
    if (p->nsync == 0) {
        struct timeval now = { 0, 0 };
        evtimer_add(p->sync_ev, &now);   /* one fdatasync for this loop turn */
    }
    return 0;
}

/* A message that failed for want of a connection goes to the spool rather
 * than failing its requests: 202 instead of 503 when the broker goes away
 * under them. Should the broker have got it after all, the forwarded copy
 * lands on the same rows. Not while draining or shutting down: a replica
 * scaled down would strand its spool, so there its requests get 503 and
 * are retried elsewhere. Returns 1 when spooled. */
static int spool_lost(struct publisher *p, struct pub_msg *m)
{
    const char *why;
    if (!m->lost || m->forwarded || !m->body.buf || !p->cfg.spool || p->draining ||
        p->destroying)
        return 0;
    if (sync_reserve(p, m->nw) < 0 || spool_put(p, &m->body, m->readings, &why) < 0)
        return 0;   /* out of memory, or the spool is full or failed: 503 */
    /* The readings stay outstanding until sync_cb (the first request carries
     * the count for them all). */
    for (size_t i = 0; i < m->nw; i++)
        p->sync_w[p->nsync++] = (struct sync_waiter){ m->w[i].done, m->w[i].ctx,
                                                      i ? 0 : m->readings };
    log_debug("spool.took_lost", "readings=%zu requests=%zu", m->readings, m->nw);
    return 1;
}

static const char TOO_LARGE[] = "more readings than the broker takes in one message "
                                "(its maximum packet size): send fewer per request";

/* Takes responsibility for a request by writing it to the spool. */
static int spool_submit(struct publisher *p, const struct reading_batch *b, const char *rid,
                        publisher_done_fn done, void *ctx, const char **why)
{
    struct reading_msg m;
    int rc = -1;
    if (sync_reserve(p, 1) < 0) {
        *why = "out of memory";
        return -1;
    }
    if (reading_msg_init(&m, p->instance) < 0) {
        *why = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < b->n; i++)
        if (reading_msg_add(&m, &b->v[i]) < 0) {
            *why = "out of memory";
            goto out;
        }
    if (rid)
        (void)reading_msg_add_rid(&m, rid);   /* only for the logs */
    if (reading_msg_size(&m) > payload_limit(p)) {
        *why = TOO_LARGE;
        rc = PUBLISHER_TOO_LARGE;
        goto out;
    }
    if (reading_msg_finish(&m) < 0) {
        *why = "out of memory";
        goto out;
    }
    if (spool_put(p, &m, b->n, why) < 0)
        goto out;
    p->sync_w[p->nsync++] = (struct sync_waiter){ done, ctx, b->n };
    p->outstanding += b->n;
    rc = 0;
out:
    reading_msg_free(&m);
    return rc;
}

static void queue_forward(struct publisher *p, struct pub_msg *m)
{
    m->p = p;
    m->forwarded = 1;
    if (p->ready_tail)
        p->ready_tail->next = m;
    else
        p->ready_head = m;
    p->ready_tail = m;
}

/* A spooled message larger than the broker takes now (spooled before the
 * first connection said its limit, or under a larger one): the broker would
 * drop the connection for it at every round. Its readings go again in
 * messages that fit (a copy the broker did get lands on the same row).
 * Returns the messages queued. One that cannot be cut goes back to
 * active.spool, durably, so that this round can end and the rest of the
 * spool be deleted; forward_spool() leaves it there until the limit
 * changes. Only when that fails too does the round fail (and keep all). */
static size_t forward_split(struct publisher *p, const char *line, size_t n, size_t limit)
{
    const char *why;
    struct pub_msg *m = cut_message(p, line, n, limit, &why);
    size_t queued = 0;
    if (m) {
        while (m) {
            struct pub_msg *next = m->next;
            m->next = NULL;
            queue_forward(p, m);
            queued++;
            m = next;
        }
        log_info("spool.split", "bytes=%zu messages=%zu max_payload_bytes=%zu", n, queued,
                 limit);
        return queued;
    }
    const char *why2;
    if (spool_append(p->cfg.spool, line, n, &why2) == 0 && spool_sync(p->cfg.spool) == 0)
        p->held_bytes += n + 1;
    else
        p->fwd_failed = 1;
    log_error("spool.unsendable", "dir=%s bytes=%zu max_payload_bytes=%zu error=\"%s\" "
              "msg=\"kept in the spool: raise the broker's maximum packet size\"",
              p->cfg.spool_dir, n, limit, why);
    return 0;
}

/* When connected and the spool holds messages, queues all of them for
 * sending; the round ends when the last one is acknowledged or failed. */
static void forward_spool(struct publisher *p)
{
    size_t limit = payload_limit(p);
    if (!p->cfg.spool || p->fwd_pending || !publisher_connected(p) ||
        spool_bytes(p->cfg.spool) == 0)
        return;
    if (spool_bytes(p->cfg.spool) <= p->held_bytes && limit == p->held_limit)
        return;   /* nothing but what the last round could not send */
    p->held_bytes = 0;
    p->held_limit = limit;
    char *buf;
    size_t len, count = 0;
    int rc = spool_take(p->cfg.spool, &buf, &len);
    if (rc != 0) {
        if (rc < 0)
            log_error("spool.read_failed", "dir=%s err=\"%s\"", p->cfg.spool_dir,
                      strerror(errno));
        return;
    }
    for (char *line = buf, *end; (end = memchr(line, '\n', len - (size_t)(line - buf)));
         line = end + 1) {
        size_t n = (size_t)(end - line);
        if (n > limit) {
            count += forward_split(p, line, n, limit);
            continue;
        }
        struct pub_msg *m = n ? calloc(1, sizeof *m) : NULL;
        if (n && (!m || !(m->body.buf = malloc(n)))) {
            free(m);
            p->fwd_failed = 1;
            break;
        }
        if (!m)
            continue;
        memcpy(m->body.buf, line, n);
        m->body.len = m->body.cap = n;
        queue_forward(p, m);
        count++;
    }
    /* A torn last line (no newline) was never synced, so never answered. */
    free(buf);
    p->fwd_pending = count;
    if (count == 0) {
        spool_taken(p->cfg.spool, !p->fwd_failed);
        p->fwd_failed = 0;
        return;
    }
    log_info("spool.forwarding", "messages=%zu bytes=%zu", count, len);
    pump(p);
}

/* A forwarded message is done: the round ends with the last one. */
static void forwarded_done(struct publisher *p, int ok)
{
    if (!ok)
        p->fwd_failed = 1;
    if (--p->fwd_pending)
        return;
    int all = !p->fwd_failed;
    p->fwd_failed = 0;
    if (spool_taken(p->cfg.spool, all) < 0)
        log_error("spool.delete_failed", "dir=%s err=\"%s\"", p->cfg.spool_dir,
                  strerror(errno));
    if (all) {
        p->spooling = 0;
        /* What came into the spool during the round goes in the next one;
         * after a failed sync it waits for a restart (spool.h). */
        size_t left = spool_bytes(p->cfg.spool);
        log_info("spool.forwarded", "msg=\"%s\" spool_bytes=%zu",
                 left ? "sent and acknowledged; more waits in the spool"
                      : "the spool was sent and acknowledged", left);
    } else {
        log_warn("spool.forward_failed", "msg=\"kept for the next try\"");
    }
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

/* Takes what paho's thread handed over: answers the acknowledged (or
 * failed) messages' requests, then drops what storage confirmed. */
static void collect(struct publisher *p)
{
    struct confirm stack_buf[64], *confirms = stack_buf;
    size_t nconf;
    pthread_mutex_lock(&p->lock);
    struct pub_msg *list = p->finished;
    p->finished = NULL;
    nconf = p->nconfirms;
    if (nconf > 64) {
        /* Take the whole array; paho's thread starts a new one. */
        confirms = p->confirms;
        p->confirms = NULL;
        p->capconfirms = 0;
    } else if (nconf) {   /* p->confirms may still be NULL */
        memcpy(stack_buf, p->confirms, nconf * sizeof *confirms);
    }
    p->nconfirms = 0;
    pthread_mutex_unlock(&p->lock);
    /* Acknowledgements first, so that a confirmation finds its message. */
    while (list) {
        struct pub_msg *next = list->next;
        p->inflight--;
        msg_complete(p, list, list->ok, list->why);
        list = next;
    }
    apply_confirms(p, confirms, nconf);
    if (confirms != stack_buf)
        free(confirms);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    if (!p->draining)   /* pump() below sets it again if need be */
        atomic_store(&p->awaiting_confirm, 0);
    collect(p);
    forward_spool(p);   /* on a reconnect (on_connected wakes us): the spool first */
    pump(p);   /* a slot may have freed up for a waiting message */
    if (p->due_left || atomic_load(&p->resend_all))
        republish_due(p);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    int state = atomic_load(&p->state);
    int64_t now = ts_mono_us();
    if (state == CONN_UP) {
        p->connect_backoff_s = 0;
    } else if (state == CONN_IDLE && now >= p->connect_at_us &&
               !MQTTAsync_isConnected(p->client)) {
        /* At the next tick after a loss, then about 1, 2, 4, 8, 8 ... s
         * apart. MQTTAsync_isConnected takes paho's lock: on_connection_lost
         * runs under it, and paho still reads the connect options after it
         * returns, which MQTTAsync_connect rewrites without the lock. */
        p->connect_at_us = now + (int64_t)p->connect_backoff_s * 1000000;
        p->connect_backoff_s = p->connect_backoff_s ? (p->connect_backoff_s < 8 ?
                                                       p->connect_backoff_s * 2 : 8) : 1;
        start_connect(p);
    }
    collect(p);   /* confirmations recorded since the last PUBACK */
    forward_spool(p);
    republish_due(p);
}

struct publisher *publisher_create(struct event_base *base, const struct publisher_config *cfg,
                                   char *err, size_t errlen)
{
    struct publisher *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->cfg = *cfg;
    p->base = base;
    p->client_id = strdup(cfg->client_id);
    p->topic = strdup(cfg->topic);
    p->instance = strdup(cfg->instance);
    p->stored_topic = strdup(cfg->stored_topic);
    if (cfg->username && *cfg->username) {
        p->username = strdup(cfg->username);
        p->password = strdup(cfg->password ? cfg->password : "");
        if (!p->username || !p->password) {
            snprintf(err, errlen, "out of memory");
            goto err;
        }
    }
    /* <prefix>/@online next to <prefix>/<instance>: '@' is in no instance id. */
    const char *slash = strrchr(cfg->stored_topic, '/');
    size_t plen = slash ? (size_t)(slash - cfg->stored_topic) : 0;
    p->online_topic = malloc(plen + sizeof "/@online");
    if (p->online_topic)
        snprintf(p->online_topic, plen + sizeof "/@online", "%.*s/@online", (int)plen,
                 cfg->stored_topic);
    /* <prefix>/<instance>/@wake: a filter we never subscribe to (wake_cb). */
    size_t wlen = strlen(cfg->stored_topic) + sizeof "/@wake";
    if ((p->wake_topic = malloc(wlen)))
        snprintf(p->wake_topic, wlen, "%s/@wake", cfg->stored_topic);
    p->flush_ev = evtimer_new(base, flush_cb, p);
    p->hold_ev = evtimer_new(base, flush_cb, p);
    p->wake_ev = evtimer_new(base, wake_cb, p);
    p->sync_ev = evtimer_new(base, sync_cb, p);
    p->done_ev = event_new(base, -1, 0, done_cb, p);
    p->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, p);
    if (!p->client_id || !p->topic || !p->instance || !p->stored_topic || !p->online_topic ||
        !p->flush_ev || !p->sync_ev ||
        !p->done_ev || !p->tick_ev || !p->hold_ev || !p->wake_ev || !p->wake_topic) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    p->cfg.client_id = p->client_id;
    p->cfg.topic = p->topic;
    p->cfg.instance = p->instance;
    p->cfg.stored_topic = p->stored_topic;

    MQTTAsync_createOptions opts = MQTTAsync_createOptions_initializer5;
    /* Only our own in-flight cap limits what is queued; paho's buffer must
     * be larger than it, or sendMessage fails (-12) while connected. */
    opts.maxBufferedMessages = (int)cfg->max_inflight * 4 + 16;
    int rc = MQTTAsync_createWithOptions(&p->client, cfg->url, cfg->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &opts);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "MQTT_URL '%s': cannot create client (rc=%d)", cfg->url, rc);
        p->client = NULL;
        goto err;
    }
    if (MQTTAsync_setCallbacks(p->client, p, on_connection_lost, on_message, NULL) !=
            MQTTASYNC_SUCCESS ||
        MQTTAsync_setConnected(p->client, p, on_connected) != MQTTASYNC_SUCCESS) {
        snprintf(err, errlen, "cannot set MQTT callbacks");
        goto err;
    }
    struct timeval one_s = { 1, 0 };
    event_add(p->tick_ev, &one_s);
    start_connect(p);
    return p;
err:
    publisher_destroy(p, 0);
    return NULL;
}

int publisher_connected(const struct publisher *p)
{
    return atomic_load(&((struct publisher *)p)->connected);
}

size_t publisher_outstanding(const struct publisher *p)
{
    return p->outstanding;
}

int publisher_accepting(const struct publisher *p)
{
    return publisher_connected(p) || (p->cfg.spool && !spool_full(p->cfg.spool, 0));
}

void publisher_stats(const struct publisher *p, struct publisher_stats *out)
{
    *out = p->st;
    out->spool_bytes = p->cfg.spool ? spool_bytes(p->cfg.spool) : 0;
    out->retained = p->retained;
    out->retained_bytes = p->retained_bytes;
}

/* The open message is full: it waits for its turn (pump()), and the next
 * request starts another. */
static void close_open(struct publisher *p)
{
    struct pub_msg *m = p->open;
    p->open = NULL;
    if (p->full_tail)
        p->full_tail->next = m;
    else
        p->full_head = m;
    p->full_tail = m;
    pump(p);
}

int publisher_submit(struct publisher *p, const struct reading_batch *b, const char *rid,
                     publisher_done_fn done, void *ctx, const char **why)
{
    if (p->outstanding + b->n > p->cfg.max_pending_readings) {
        *why = "too many readings waiting for the broker";
        return -1;
    }
    if (!publisher_connected(p)) {
        if (p->cfg.spool)
            return spool_submit(p, b, rid, done, ctx, why);
        *why = "not connected to the broker";
        return -1;
    }
    size_t limit = payload_limit(p);
    struct pub_msg *m = p->open;
    int fresh = 0;
again:
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || reading_msg_init(&m->body, p->instance) < 0) {
            free(m);
            *why = "out of memory";
            return -1;
        }
        m->p = p;
        m->open_us = ts_mono_us();
        fresh = 1;
    }
    if (m->nw == m->capw) {
        size_t cap = m->capw ? m->capw * 2 : 8;
        struct waiter *w = realloc(m->w, cap * sizeof *w);
        if (!w)
            goto oom;
        m->w = w;
        m->capw = cap;
    }
    /* All readings of a request go into the same message, so one PUBACK
     * answers the request: no partial acceptance. */
    struct reading_msg_mark mark = reading_msg_mark(&m->body);
    for (size_t i = 0; i < b->n; i++) {
        if (reading_msg_add(&m->body, &b->v[i]) < 0) {
            reading_msg_rollback(&m->body, mark);
            goto oom;
        }
    }
    if (rid)
        (void)reading_msg_add_rid(&m->body, rid);   /* only for the logs */
    if (reading_msg_size(&m->body) > limit) {
        /* More than the broker takes in one PUBLISH: it would drop the
         * connection for it, again at every try. Take the readings back. */
        reading_msg_rollback(&m->body, mark);
        if (!fresh) {
            /* Other requests' readings fill it: it goes as it is, and this
             * request's readings start the next message. */
            close_open(p);
            m = NULL;
            goto again;
        }
        msg_free(m);
        *why = TOO_LARGE;
        return PUBLISHER_TOO_LARGE;
    }
    m->w[m->nw].done = done;
    m->w[m->nw].ctx = ctx;
    m->nw++;
    m->readings += b->n;
    p->outstanding += b->n;
    p->open = m;
    if (m->body.len >= p->cfg.max_message_bytes) {
        close_open(p);   /* full: the next request starts another */
    } else if (fresh) {
        /* Collect whatever else arrives in this turn of the loop, and for
         * linger_ms (linger()). */
        flush_in(p, p->draining ? 0 : (int64_t)p->cfg.linger_ms * 1000);
    }
    return 0;
oom:
    if (fresh)
        msg_free(m);
    *why = "out of memory";
    return -1;
}

void publisher_drain(struct publisher *p)
{
    p->draining = 1;
    /* The drain ends when storage has confirmed everything: see each
     * confirmation at once, not at the next tick. */
    atomic_store(&p->awaiting_confirm, 1);
    collect(p);   /* and those recorded before the flag was up */
    pump(p);
}

void publisher_destroy(struct publisher *p, int timeout_ms)
{
    if (!p)
        return;
    p->destroying = 1;
    if (p->client) {
        if (publisher_connected(p)) {
            MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
            d.timeout = timeout_ms;
            MQTTAsync_disconnect(p->client, &d);
        }
        /* Destroying the client ends paho's threads: no callback after this. */
        MQTTAsync_destroy(&p->client);
    }
    /* Whatever is left was never acknowledged. */
    struct pub_msg *list = p->finished;
    while (list) {
        struct pub_msg *next = list->next;
        msg_complete(p, list, list->ok, list->why);
        list = next;
    }
    while (p->full_head) {
        struct pub_msg *m = p->full_head;
        p->full_head = m->next;
        msg_complete(p, m, 0, "shutting down");
    }
    if (p->open)
        msg_complete(p, p->open, 0, "shutting down");
    if (p->nsync)
        sync_cb(-1, 0, p);
    while (p->ready_head) {   /* still in forward.spool: sent next time */
        struct pub_msg *m = p->ready_head;
        p->ready_head = m->next;
        msg_free(m);
    }
    while (p->ret_head)
        retained_unlink(p, NULL, p->ret_head);
    free(p->confirms);
    free(p->stored_topic);
    free(p->online_topic);
    free(p->wake_topic);
    if (p->flush_ev)
        event_free(p->flush_ev);
    if (p->sync_ev)
        event_free(p->sync_ev);
    if (p->done_ev)
        event_free(p->done_ev);
    if (p->tick_ev)
        event_free(p->tick_ev);
    if (p->hold_ev)
        event_free(p->hold_ev);
    if (p->wake_ev)
        event_free(p->wake_ev);
    pthread_mutex_destroy(&p->lock);
    free(p->client_id);
    free(p->username);
    if (p->password) {   /* not left behind in freed memory */
        explicit_bzero(p->password, strlen(p->password));
        free(p->password);
    }
    free(p->topic);
    free(p->instance);
    free(p);
}
