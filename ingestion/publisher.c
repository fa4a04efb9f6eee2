/* publisher.c -- readings to the MQTT broker, QoS 1, answered on PUBACK.
 *
 * One thread: the MQTT client is libmosquitto driven by the event loop
 * (mosquitto_loop_read/_write when its socket is ready, _misc every tick),
 * not a library with threads of its own. A POST's PUBLISH is written by the
 * loop that parsed it, and its PUBACK is read by the loop that answers it:
 * no hand-over between threads on the way (README: Performance). The
 * library's callbacks only record what came (a PUBACK, a confirmation, the
 * connection's end); the loop acts on it once the library has returned,
 * since libmosquitto must not be re-entered from a callback (it only queues
 * what is published there) and must not be destroyed in one. */
#include "publisher.h"
#include "imetrics.h"
#include "log.h"
#include "net.h"
#include "spool.h"
#include "ts.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* A broker that stopped answering is noticed after one keepalive without
 * traffic (a PINGREQ then goes) and one more without its PINGRESP: about
 * 10 s, and the requests waiting for its PUBACK are answered then (spooled,
 * else 503), well within HAProxy's `timeout server` (30 s). A connection
 * attempt gets as long. libmosquitto takes no less than 5. */
#define KEEPALIVE_S 5

struct waiter {
    publisher_done_fn done;
    void *ctx;
};

/* A confirmation from storage: the id (or digest) of a message it
 * committed, and when it arrived, for confirm_wait_us(). */
struct confirm {
    uint64_t value;
    enum reading_confirm_kind kind;
    int64_t at_us;
};

struct pub_msg {
    struct reading_msg body;
    struct waiter *w;
    size_t nw, capw;
    size_t readings;
    int ok;                  /* set by its PUBACK (or the connection's end) */
    const char *why;
    struct publisher *p;
    struct pub_msg *next;    /* in the finished list, then the retained one */
    uint64_t id;             /* its Correlation Data, what storage's
                              * confirmation names */
    uint64_t digest;         /* reading_msg_digest(), worked out only when a
                              * storage older than ids confirms by digest */
    int digested;            /* digest is set */
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

/* A PUBLISH awaiting its PUBACK, by packet id: m is a new message of ours,
 * or NULL for a republication (its retained message may be confirmed, and
 * freed, before the PUBACK comes). */
struct flight {
    int mid;
    struct pub_msg *m;
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
    char *host;                  /* of cfg.url */
    int port;
    unsigned addr_turn;          /* which of host's addresses to try next */
    struct evdns_base *dns;
    char *username, *password;   /* NULL: anonymous */
    struct mosquitto *mosq;      /* NULL between connections */
    struct event *read_ev;       /* mosq's socket, persistent */
    struct event *write_ev;      /* armed while libmosquitto has bytes to write */
    int dead;                    /* the connection ended inside a library call:
                                  * torn down once it has returned */
    int dead_errno;              /* errno as it ended */
    int refused_logged;          /* this attempt's CONNACK refusal was logged */
    int refusal_logged;          /* a PUBACK refusal on this connection was */
    struct event_base *base;
    struct event *flush_ev;      /* the open message is due: linger_ms after
                                  * its first reading (0: end of loop turn) */
    struct event *tick_ev;       /* connects (again), keepalive, forwards,
                                  * republishes */
    struct event *hold_ev;       /* the open message waits for storage */

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
    int64_t last_confirm_us;     /* when the last confirmation arrived */
    uint64_t next_id;            /* the next message's id (random start, so
                                  * that a restart does not reuse ids) */
    int fwd_failed, spooling, spool_full_logged;
    struct flight *flights;      /* in publication order */
    size_t nflights, capflights;
    size_t inflight;             /* messages sent, not yet done */
    size_t re_inflight;          /* republications awaiting PUBACK */
    size_t outstanding;          /* readings submitted, not yet done */

    int state;                   /* enum conn_state */
    int connect_backoff_s;       /* wait before the next connect */
    int64_t connect_at_us;       /* not before this (monotonic) */
    /* The broker's Maximum Packet Size (its CONNACK; 0: it named none). It
     * drops the connection of a client sending a larger packet, so no
     * message may be larger: see payload_limit(). */
    size_t max_packet;

    /* PUBACKed or failed, in that order, not yet answered (collect()). */
    struct pub_msg *fin_head, *fin_tail;
    struct confirm *confirms;    /* from storage, not yet applied */
    size_t nconfirms, capconfirms;

    /* The length of the last message sent: the next one starts with room
     * for as much (a message grown from 4 KiB by doubling page-faulted in
     * each new buffer: bench/NOTES.md, 2026-12-07 from 11:46). */
    size_t last_len;

    /* Acknowledged, not yet confirmed by storage: oldest first. */
    struct pub_msg *ret_head, *ret_tail;
    size_t retained, retained_bytes;
    /* The retained messages younger than confirm_wait_us(): storage is
     * expected to confirm them soon. young_head is the oldest of them. */
    struct pub_msg *young_head;
    size_t young;
    int draining;                /* nothing waits for storage any more */
    int destroying;              /* failures are final: nothing is spooled */
    int resend_all;              /* set on reconnection */
    int due_left;                /* republish_due() ran out of slots */
    size_t round_sent;           /* republished in this round, not yet logged */
    int ever_connected;
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

/* --- libmosquitto's callbacks: they record, the loop acts (after_io) ----- */

static void finished(struct publisher *p, struct pub_msg *m, int ok, const char *why)
{
    m->ok = ok;
    m->why = why;
    m->next = NULL;
    if (p->fin_tail)
        p->fin_tail->next = m;
    else
        p->fin_head = m;
    p->fin_tail = m;
}

static void on_publish(struct mosquitto *mosq, void *ctx, int mid, int reason,
                       const mosquitto_property *props)
{
    struct publisher *p = ctx;
    (void)mosq;
    (void)props;
    /* PUBACKs come in the order of their PUBLISHes (MQTT 4.6): the first
     * flight is nearly always the one. */
    size_t i = 0;
    while (i < p->nflights && p->flights[i].mid != mid)
        i++;
    if (i == p->nflights)
        return;   /* a PUBLISH we already counted as failed */
    struct pub_msg *m = p->flights[i].m;
    memmove(&p->flights[i], &p->flights[i + 1], (p->nflights - i - 1) * sizeof *p->flights);
    p->nflights--;
    if (!m) {   /* a republication: acknowledged or not, a slot is free */
        p->re_inflight--;
        return;
    }
    /* A reason code >= 0x80 is a refusal (not authorised, quota exceeded):
     * it would be refused again from the spool, so it is not lost but
     * failed. Below is success, 0x10 "no matching subscribers" included:
     * storage's shared subscription is not there, and the message stays
     * retained until storage confirms it (republished when it announces
     * itself on @online). */
    m->lost = 0;
    if (reason >= 0x80) {
        if (!p->refusal_logged)   /* once a connection: an ACL refuses them all */
            log_warn("mqtt.publish_refused", "topic=%s reason=\"%s\" msg=\"the broker "
                     "refuses our messages: check its ACL\"", p->topic,
                     mosquitto_reason_string(reason));
        p->refusal_logged = 1;
        finished(p, m, 0, "broker did not acknowledge the readings");
    } else {
        finished(p, m, 1, NULL);
    }
}

static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    struct publisher *p = ctx;
    (void)mosq;
    (void)mid;
    (void)props;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 0x80)
            log_warn("mqtt.subscribe_failed", "topic=%s reason=\"%s\" msg=\"no confirmations: "
                     "unconfirmed messages will be republished\"",
                     i ? p->online_topic : p->stored_topic, mosquitto_reason_string(granted[i]));
}

static void on_connect(struct mosquitto *mosq, void *ctx, int reason, int flags,
                       const mosquitto_property *props)
{
    struct publisher *p = ctx;
    (void)flags;
    if (reason) {
        /* A refused CONNACK names its reason (bad user name or password, not
         * authorized): the operator's fix is in the credentials, not the
         * network. The library then ends the connection (on_disconnect). */
        log_warn("mqtt.connect_failed", "broker=%s rc=%d reason=\"%s\" user=%s", p->cfg.url,
                 reason, mosquitto_reason_string(reason), p->username ? p->username : "-");
        p->refused_logged = 1;
        return;
    }
    uint32_t max = 0;
    mosquitto_property_read_int32(props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &max, false);
    p->max_packet = max;
    /* Clean start: the subscriptions are made again on every connection.
     * Queued here, written when the library returns. */
    char *topics[2] = { p->stored_topic, p->online_topic };
    int rc = mosquitto_subscribe_multiple(mosq, NULL, 2, topics, 0, 0, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        log_warn("mqtt.subscribe_failed", "topic=%s rc=%d reason=\"%s\"", p->cfg.stored_topic,
                 rc, mosquitto_strerror(rc));
    p->state = CONN_UP;
    /* Whatever the broker held for storage may be gone (a restart or a
     * crash): send again everything not yet confirmed. */
    if (p->ever_connected)
        p->resend_all = 1;
    p->ever_connected = 1;
    if (max)
        log_info("mqtt.connected", "broker=%s client_id=%s max_packet_bytes=%u", p->cfg.url,
                 p->client_id, max);
    else
        log_info("mqtt.connected", "broker=%s client_id=%s", p->cfg.url, p->client_id);
}

static void on_disconnect(struct mosquitto *mosq, void *ctx, int rc,
                          const mosquitto_property *props)
{
    struct publisher *p = ctx;
    (void)mosq;
    (void)props;
    p->dead = rc ? rc : MOSQ_ERR_CONN_LOST;
    p->dead_errno = errno;   /* what MOSQ_ERR_ERRNO means, before anything changes it */
}

/* A confirmation from storage (reading_confirm_parse); or a storage
 * announcing it has (re)subscribed. */
static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct publisher *p = ctx;
    uint64_t value = 0;
    enum reading_confirm_kind kind = READING_CONFIRM_NONE;
    (void)mosq;
    (void)props;
    if (!strcmp(msg->topic, p->online_topic))
        p->resend_all = 1;
    else if (msg->payloadlen > 0)
        kind = reading_confirm_parse(msg->payload, (size_t)msg->payloadlen, &value);
    if (kind == READING_CONFIRM_NONE)
        return;
    int64_t now = ts_mono_us();
    p->last_confirm_us = now;
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
        p->confirms[p->nconfirms++] = (struct confirm){ value, kind, now };
}

static void forwarded_done(struct publisher *p, int ok);


/* The largest payload the broker takes in one PUBLISH: its Maximum Packet
 * Size less our packet's header: fixed header (5 bytes at most), topic
 * (2 + its length), packet id (2), properties (their length, 1 byte, and
 * the Correlation Data: identifier, 2-byte length, the id); SIZE_MAX when
 * it named no limit, or before the first connection. */
static size_t payload_limit(const struct publisher *p)
{
    size_t max = p->max_packet;
    size_t head = 5 + 2 + strlen(p->topic) + 2 + 1 + (1 + 2 + READING_MSG_ID_LEN);
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
        x->id = p->next_id++;
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

/* Whether c confirms m: by its id, or from a storage older than ids by its
 * digest, worked out once (as every message was hashed before ids). */
static int confirms(struct pub_msg *m, const struct confirm *c)
{
    if (c->kind == READING_CONFIRM_ID)
        return m->id == c->value;
    if (!m->digested) {
        m->digest = reading_msg_digest(m->body.buf, m->body.len);
        m->digested = 1;
    }
    return m->digest == c->value;
}

/* Drops the retained messages storage has confirmed. Confirmations come
 * about in publication order, so the scan is short. */
static void apply_confirms(struct publisher *p, const struct confirm *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct pub_msg *prev = NULL;
        for (struct pub_msg *m = p->ret_head; m; prev = m, m = m->next) {
            if (confirms(m, &c[i])) {
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

static int publish(struct publisher *p, struct pub_msg *m, const struct reading_msg *body,
                   uint64_t id);

/* Publishes again what is due; lets go of what is past the retention. */
static void republish_due(struct publisher *p)
{
    int64_t now = ts_mono_us(), keep = (int64_t)p->cfg.retention_s * 1000000;
    int all = p->resend_all;
    p->resend_all = 0;
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
        if (due && p->re_inflight + p->inflight >= p->cfg.max_inflight)
            p->due_left = 1;   /* carried on as acknowledgements free slots */
        else if (due) {
            if (publish(p, NULL, &m->body, m->id) == MOSQ_ERR_SUCCESS) {
                m->copies++;
                sent++;
                /* Doubling: a storage that is merely slow is not flooded. */
                unsigned shift = m->copies < 16 ? m->copies : 16;
                m->next_us = now + ((int64_t)p->cfg.republish_after_s * 1000000 << shift);
            }
        }
        prev = m;
        m = next;
    }
    p->st.republished += sent;
    p->st.expired += expired;
    /* One line per round, when nothing due is left: a round larger than the
     * in-flight cap goes on one message per acknowledgement. */
    p->round_sent += sent;
    if (p->round_sent && !p->due_left) {
        log_info("retention.republished", "messages=%zu retained=%zu", p->round_sent,
                 p->retained);
        p->round_sent = 0;
    }
    if (cut)
        log_info("retention.cut", "messages=%zu max_payload_bytes=%zu msg=\"larger than the "
                 "broker takes now: sent again in pieces\"", cut, payload_limit(p));
    if (expired)
        log_warn("retention.expired", "messages=%zu msg=\"not confirmed by storage within "
                 "%d s: let go\"", expired, p->cfg.retention_s);
}

/* --- the connection ------------------------------------------------------- */

static void io_arm(struct publisher *p)
{
    if (p->mosq && !p->dead && mosquitto_want_write(p->mosq) &&
        !event_pending(p->write_ev, EV_WRITE, NULL))
        event_add(p->write_ev, NULL);
}

/* Remembers a PUBLISH until its PUBACK. Returns -1 when out of memory. */
static int flight_add(struct publisher *p, int mid, struct pub_msg *m)
{
    if (p->nflights == p->capflights) {
        size_t cap = p->capflights ? p->capflights * 2 : 32;
        struct flight *f = realloc(p->flights, cap * sizeof *f);
        if (!f)
            return -1;
        p->flights = f;
        p->capflights = cap;
    }
    p->flights[p->nflights++] = (struct flight){ mid, m };
    if (m)
        p->inflight++;
    else
        p->re_inflight++;
    return 0;
}

/* Publishes one payload at QoS 1, with id as its Correlation Data (for
 * storage's confirmation): the library writes it at once when the socket
 * takes it (we are not in one of its callbacks), else when the socket is
 * writable (io_arm). Returns the library's code. */
static int publish(struct publisher *p, struct pub_msg *m, const struct reading_msg *body,
                   uint64_t id)
{
    int mid;
    unsigned char corr[READING_MSG_ID_LEN];
    mosquitto_property *props = NULL;
    if (!p->mosq || p->dead || p->state != CONN_UP)
        return MOSQ_ERR_NO_CONN;
    reading_msg_id_bytes(id, corr);
    int rc = mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr,
                                           sizeof corr);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_publish_v5(p->mosq, &mid, p->topic, (int)body->len, body->buf, 1, false,
                                  props);
    mosquitto_property_free_all(&props);
    if (rc == MOSQ_ERR_SUCCESS && flight_add(p, mid, m) < 0)
        rc = MOSQ_ERR_NOMEM;   /* its PUBACK will find no flight: ignored */
    io_arm(p);
    return rc;
}

/* The connection ended (p->dead, or a failed start): everything in flight
 * failed for want of it (to the spool, see spool_lost), and the client is
 * freed; tick_cb makes a new one. A fresh client per connection: libmosquitto
 * would otherwise send its own copies of the lost PUBLISHes after the
 * reconnect, beside ours from the spool. */
static void conn_end(struct publisher *p, int rc)
{
    int was = p->state, err = p->dead ? p->dead_errno : errno;
    if (p->read_ev)
        event_free(p->read_ev);
    if (p->write_ev)
        event_free(p->write_ev);
    p->read_ev = p->write_ev = NULL;
    if (p->mosq)
        mosquitto_destroy(p->mosq);
    p->mosq = NULL;
    p->dead = 0;
    if (was != CONN_UP)
        p->addr_turn++;   /* the next attempt tries the host's next address */
    p->state = CONN_IDLE;
    for (size_t i = 0; i < p->nflights; i++) {
        struct pub_msg *m = p->flights[i].m;
        if (m) {
            m->lost = 1;
            finished(p, m, 0, "broker did not acknowledge the readings");
        }
    }
    p->nflights = 0;
    p->re_inflight = 0;
    if (p->destroying)
        return;
    if (was == CONN_UP) {
        imetrics_connection_lost();
        log_warn("mqtt.connection_lost", "broker=%s cause=\"%s\"", p->cfg.url,
                 rc == MOSQ_ERR_ERRNO ? strerror(err) : mosquitto_strerror(rc));
    } else if (!p->refused_logged) {
        log_warn("mqtt.connect_failed", "broker=%s rc=%d reason=\"%s\" user=%s", p->cfg.url, rc,
                 rc == MOSQ_ERR_ERRNO ? strerror(err) : mosquitto_strerror(rc),
                 p->username ? p->username : "-");
    }
}

static void after_io(struct publisher *p);

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    if (p->mosq && (what & EV_READ))
        mosquitto_loop_read(p->mosq, 1);
    if (p->mosq && !p->dead && (what & EV_WRITE))
        mosquitto_loop_write(p->mosq, 1);
    after_io(p);
}

/* Connects to addr (numeric): a fresh client, its socket in the loop. */
static void connect_to(struct publisher *p, const char *addr)
{
    int rc = MOSQ_ERR_NOMEM;
    p->mosq = mosquitto_new(p->client_id, true, p);   /* clean start: no session */
    if (!p->mosq)
        goto fail;
    mosquitto_int_option(p->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    /* Our messages are small and answered one by one: no Nagle. */
    mosquitto_int_option(p->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (p->username && (rc = mosquitto_username_pw_set(p->mosq, p->username, p->password)))
        goto fail;
    mosquitto_connect_v5_callback_set(p->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(p->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(p->mosq, on_publish);
    mosquitto_message_v5_callback_set(p->mosq, on_message);
    mosquitto_subscribe_v5_callback_set(p->mosq, on_subscribe);
    rc = mosquitto_connect_async(p->mosq, addr, p->port, KEEPALIVE_S);   /* does not wait */
    if (rc)
        goto fail;
    int fd = mosquitto_socket(p->mosq);
    p->read_ev = event_new(p->base, fd, EV_READ | EV_PERSIST, io_cb, p);
    p->write_ev = event_new(p->base, fd, EV_WRITE, io_cb, p);
    if (!p->read_ev || !p->write_ev || event_add(p->read_ev, NULL) < 0) {
        rc = MOSQ_ERR_NOMEM;
        goto fail;
    }
    io_arm(p);
    return;
fail:
    conn_end(p, rc);
}

/* The broker's host resolved (or not): connects to one of its addresses, a
 * different one after each failed attempt. libmosquitto's non-blocking
 * connect would take the first address whose connect() is under way, so a
 * name that resolves to ::1 before 127.0.0.1 would fail for ever against a
 * broker listening on IPv4 only. */
static void resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct publisher *p = arg;
    char addr[NI_MAXHOST];
    if (p->destroying || result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    if (result) {
        p->state = CONN_IDLE;   /* the tick tries again */
        log_warn("mqtt.connect_failed", "broker=%s reason=\"cannot resolve %s: %s\"",
                 p->cfg.url, p->host, evutil_gai_strerror(result));
        return;
    }
    unsigned n = 0;
    struct evutil_addrinfo *a;
    for (a = res; a; a = a->ai_next)
        n++;
    a = res;
    for (unsigned i = p->addr_turn % n; i; i--)
        a = a->ai_next;
    int gai = getnameinfo(a->ai_addr, (socklen_t)a->ai_addrlen, addr, sizeof addr, NULL, 0,
                          NI_NUMERICHOST);
    evutil_freeaddrinfo(res);
    if (gai) {
        p->state = CONN_IDLE;
        log_warn("mqtt.connect_failed", "broker=%s reason=\"%s\"", p->cfg.url,
                 gai_strerror(gai));
        return;
    }
    connect_to(p, addr);
    after_io(p);
}

/* Resolves the broker's host without blocking the loop (libevent's evdns:
 * /etc/hosts, then the servers of /etc/resolv.conf; a numeric address or a
 * hosts entry answers at once), then connects (resolved()). */
static void start_connect(struct publisher *p)
{
    struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    p->refused_logged = p->refusal_logged = 0;
    p->state = CONN_CONNECTING;
    /* An answer still coming when we are destroyed is cancelled there
     * (evdns_base_free), and resolved() then does nothing. */
    evdns_getaddrinfo(p->dns, p->host, NULL, &hints, resolved, p);
}

/* Publishes one finished message; on refusal, completes it at once (to
 * the spool when it was refused for want of a connection). */
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
    m->id = p->next_id++;
    m->first_us = ts_mono_us();
    m->timed = m->first_us - p->last_confirm_us <= 1000000;
    /* The library copies the payload; m stays ours until its PUBACK. */
    int rc = publish(p, m, &m->body, m->id);
    if (rc != MOSQ_ERR_SUCCESS) {
        log_debug("mqtt.publish_failed", "rc=%d readings=%zu", rc, m->readings);
        /* Not connected, or the write failed (the connection is going: the
         * read event ends it), or over the broker's limit after all: to the
         * spool, which sends it in pieces that fit. */
        m->lost = rc != MOSQ_ERR_NOMEM;
        msg_complete(p, m, 0, "broker unavailable");
    }
}

/* The hold, by what storage is doing:
 * - silent for over a second: taken for stopped; base_us (confirm_wait_ms)
 *   spaces the messages it will find queued when it is back;
 * - confirming, but a message has waited over a second: it may sit in the
 *   queue of a storage that left for good, whose client id mosquitto keeps
 *   sending a share of the messages to (README: Known limits); from base_us,
 *   since a 5 ms hold would queue ten times as many messages there as 50 ms,
 *   towards mosquitto's max_queued_messages;
 * - confirming everything within a second: from PUBLISHER_HOLD_MIN_US (or
 *   base_us, if lower). At moderate rates storage confirms in 1-3 ms, and
 *   with confirm_wait_ms a commit that stalls for a moment (its fsync behind
 *   the kernel's writeback of the table's pages, every 30 s) held every
 *   client for up to 50 ms, though the readings were safe in the broker
 *   and in our retention (that second's POST p99 42-53 ms, 11-40 with 5 ms:
 *   bench/NOTES.md, 2026-12-07 from 14:47).
 * In the last two, twice storage's recent time to confirm when that is
 * longer: a storage slow but working (large messages, each commit queued
 * behind the other replicas') keeps pacing us (a fixed 50 ms let commits of
 * 22-35 ms go, and ingestion answered 14-31% more than storage stored, its
 * memory growing with the unconfirmed messages). At most
 * PUBLISHER_HOLD_MAX_US: while storage works through a backlog (after a
 * restart, its persistent session's queue) its confirmations come late, and
 * a longer hold would stall every client meanwhile. */
int64_t publisher_hold_us(int64_t base_us, int64_t avg_us, int64_t silent_us,
                          int64_t oldest_us)
{
    if (silent_us > 1000000)
        return base_us;
    int64_t lo = base_us;
    if (oldest_us <= 1000000 && PUBLISHER_HOLD_MIN_US < base_us)
        lo = PUBLISHER_HOLD_MIN_US;
    int64_t wait = 2 * avg_us;
    if (wait > PUBLISHER_HOLD_MAX_US)
        wait = PUBLISHER_HOLD_MAX_US;
    return wait > lo ? wait : lo;
}

static int64_t confirm_wait_us(const struct publisher *p, int64_t now)
{
    return publisher_hold_us((int64_t)p->cfg.confirm_wait_ms * 1000, p->confirm_avg_us,
                             now - p->last_confirm_us,
                             p->ret_head ? now - p->ret_head->first_us : 0);
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
 * (ingestion's MQTT client, the broker, storage, a commit: README,
 * Performance), so
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
        if (reading_msg_finish(&m->body) < 0) {
            msg_complete(p, m, 0, "out of memory");
        } else {
            p->last_len = m->body.len;
            send_msg(p, m);
        }
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

/* Answers the acknowledged (or failed) messages' requests, in order, then
 * drops what storage confirmed. */
static void collect(struct publisher *p)
{
    struct pub_msg *list = p->fin_head;
    p->fin_head = p->fin_tail = NULL;
    /* Acknowledgements first, so that a confirmation finds its message. */
    while (list) {
        struct pub_msg *next = list->next;
        p->inflight--;
        msg_complete(p, list, list->ok, list->why);
        list = next;
    }
    size_t n = p->nconfirms;
    p->nconfirms = 0;
    apply_confirms(p, p->confirms, n);
}

/* After every call into the library: writes what its callbacks queued (a
 * SUBSCRIBE after the CONNACK), ends a connection that ended, then acts on
 * what came. */
static void after_io(struct publisher *p)
{
    if (p->mosq && !p->dead && mosquitto_want_write(p->mosq))
        mosquitto_loop_write(p->mosq, 1);
    if (p->dead)
        conn_end(p, p->dead);
    io_arm(p);
    collect(p);
    forward_spool(p);   /* on a reconnect: the spool first, ahead of newer readings */
    pump(p);            /* a slot may have freed up for a waiting message */
    if (p->due_left || p->resend_all)
        republish_due(p);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    int64_t now = ts_mono_us();
    if (p->state == CONN_UP) {
        p->connect_backoff_s = 0;
    } else if (p->state == CONN_IDLE && now >= p->connect_at_us) {
        /* At the next tick after a loss, then about 1, 2, 4, 8, 8 ... s
         * apart. */
        p->connect_at_us = now + (int64_t)p->connect_backoff_s * 1000000;
        p->connect_backoff_s = p->connect_backoff_s ? (p->connect_backoff_s < 8 ?
                                                       p->connect_backoff_s * 2 : 8) : 1;
        start_connect(p);
    }
    if (p->mosq && !p->dead)
        mosquitto_loop_misc(p->mosq);   /* keepalive: a PINGREQ, or the end */
    after_io(p);
    republish_due(p);
}

/* cfg->url, tcp://host:port or mqtt://host[:port] (an IPv6 host in [...]),
 * into p->host and p->port. Returns -1 saying why in err. */
static int parse_url(struct publisher *p, const char *url, char *err, size_t errlen)
{
    const char *h = NULL;
    if (!strncmp(url, "tcp://", 6))
        h = url + 6;
    else if (!strncmp(url, "mqtt://", 7))
        h = url + 7;
    if (!h) {
        snprintf(err, errlen, "MQTT_URL '%s': not tcp://host:port (nor mqtt://)", url);
        return -1;
    }
    size_t n = strcspn(h, "/?#");
    const char *rest = h + n;
    const char *colon = NULL;
    for (const char *q = h; q < h + n; q++)   /* the last ':' outside [v6] */
        if (*q == ':')
            colon = q;
        else if (*q == ']')
            colon = NULL;
    size_t hl = colon ? (size_t)(colon - h) : n;
    /* The port as storage reads it (common/net.h): -1 when one is written
     * but is not a port. */
    p->port = net_url_port(url, colon ? -1 : 1883);
    if (p->port < 0) {
        snprintf(err, errlen, "MQTT_URL '%s': the port is not a number in 1..65535", url);
        return -1;
    }
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    /* A trailing '/' is taken, as storage (paho) takes it. */
    if (!hl || (*rest && strcmp(rest, "/"))) {
        snprintf(err, errlen, "MQTT_URL '%s': %s", url, hl ? "nothing may follow host:port"
                                                          : "no host");
        return -1;
    }
    if (!(p->host = strndup(h, hl))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

struct publisher *publisher_create(struct event_base *base, const struct publisher_config *cfg,
                                   char *err, size_t errlen)
{
    struct publisher *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    mosquitto_lib_init();   /* counted: publisher_destroy undoes it */
    p->cfg = *cfg;
    p->base = base;
    if (parse_url(p, cfg->url, err, errlen) < 0)
        goto err;
    /* Ids start at random: a confirmation meant for a message of this
     * instance's previous run (late, or republished by it) must not name
     * one of ours. */
    if (getrandom(&p->next_id, sizeof p->next_id, 0) != sizeof p->next_id)
        p->next_id = (uint64_t)ts_now_us() << 20 ^ (uint64_t)getpid();
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
    p->flush_ev = evtimer_new(base, flush_cb, p);
    p->hold_ev = evtimer_new(base, flush_cb, p);
    p->sync_ev = evtimer_new(base, sync_cb, p);
    p->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, p);
    /* Without /etc/resolv.conf, evdns refuses to start: then /etc/hosts and
     * numeric addresses only. */
    p->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!p->dns && (p->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE)))
        evdns_base_load_hosts(p->dns, NULL);
    if (!p->client_id || !p->dns || !p->topic || !p->instance || !p->stored_topic ||
        !p->online_topic || !p->flush_ev || !p->sync_ev || !p->tick_ev || !p->hold_ev) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    p->cfg.client_id = p->client_id;
    p->cfg.topic = p->topic;
    p->cfg.instance = p->instance;
    p->cfg.stored_topic = p->stored_topic;
    struct timeval one_s = { 1, 0 };
    event_add(p->tick_ev, &one_s);
    start_connect(p);
    after_io(p);
    return p;
err:
    publisher_destroy(p, 0);
    return NULL;
}

int publisher_connected(const struct publisher *p)
{
    return p->state == CONN_UP;
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
        if (!m || reading_msg_init(&m->body, p->instance) < 0 ||
            reading_msg_reserve(&m->body, p->last_len) < 0) {
            if (m)
                reading_msg_free(&m->body);
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
         * linger_ms (linger()). A message that waits for storage needs no
         * timer of its own: the confirmation's pump (after_io) sends it, or
         * arms the rest of its linger. */
        if (p->draining)
            flush_in(p, 0);
        else if (!hold_for_storage(p))
            flush_in(p, (int64_t)p->cfg.linger_ms * 1000);
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
    pump(p);
}

/* Waits up to timeout_ms for what is in flight to be acknowledged, reading
 * the socket directly: the event loop has stopped. */
static void flush_inflight(struct publisher *p, int timeout_ms)
{
    int64_t end = ts_mono_us() + (int64_t)timeout_ms * 1000;
    while (p->mosq && !p->dead && p->state == CONN_UP && p->nflights) {
        int64_t left = end - ts_mono_us();
        if (left <= 0)
            break;
        struct pollfd pfd = { mosquitto_socket(p->mosq),
                              POLLIN | (mosquitto_want_write(p->mosq) ? POLLOUT : 0), 0 };
        int n = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            mosquitto_loop_read(p->mosq, 1);
        if (n > 0 && !p->dead && (pfd.revents & POLLOUT))
            mosquitto_loop_write(p->mosq, 1);
    }
}

void publisher_destroy(struct publisher *p, int timeout_ms)
{
    if (!p)
        return;
    p->destroying = 1;
    if (p->dns)   /* a resolution under way ends here (resolved() does nothing) */
        evdns_base_free(p->dns, 1);
    p->dns = NULL;
    if (p->mosq) {
        flush_inflight(p, timeout_ms);
        if (!p->dead && p->state == CONN_UP) {
            mosquitto_disconnect_v5(p->mosq, 0, NULL);   /* written at once if it can be */
        }
        conn_end(p, MOSQ_ERR_SUCCESS);   /* what is still in flight: finished, failed */
    }
    /* Whatever is left was never acknowledged. */
    struct pub_msg *list = p->fin_head;
    p->fin_head = p->fin_tail = NULL;
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
    free(p->flights);
    free(p->stored_topic);
    free(p->online_topic);
    if (p->flush_ev)
        event_free(p->flush_ev);
    if (p->sync_ev)
        event_free(p->sync_ev);
    if (p->tick_ev)
        event_free(p->tick_ev);
    if (p->hold_ev)
        event_free(p->hold_ev);
    free(p->client_id);
    free(p->username);
    if (p->password) {   /* not left behind in freed memory */
        explicit_bzero(p->password, strlen(p->password));
        free(p->password);
    }
    free(p->host);
    free(p->topic);
    free(p->instance);
    free(p);
    mosquitto_lib_cleanup();
}
