/* publisher.c -- readings to the MQTT broker, QoS 1, answered on PUBACK.
 *
 * Threads: paho runs its callbacks on its own thread; evhttp may only be
 * touched from the event loop's thread (FACTS.md). So the paho callbacks do
 * nothing but move a finished message onto a locked list and wake the loop
 * with event_active(); all request bookkeeping happens on the loop thread.
 * The lock is never held while calling paho (paho issue #1222). */
#include "publisher.h"
#include "log.h"

#include <MQTTAsync.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct waiter {
    publisher_done_fn done;
    void *ctx;
};

struct pub_msg {
    struct reading_msg body;
    struct waiter *w;
    size_t nw, capw;
    size_t readings;
    int ok;                  /* set by the paho callback */
    const char *why;
    struct publisher *p;
    struct pub_msg *next;
};

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_UP, CONN_RECONNECTING };

struct publisher {
    struct publisher_config cfg;
    char *client_id, *topic, *instance;
    MQTTAsync client;
    struct event_base *base;
    struct event *flush_ev;      /* zero timeout: end of this loop turn */
    struct event *done_ev;       /* activated from paho's thread */
    struct event *tick_ev;       /* retries a failed first connect */

    struct pub_msg *open;        /* being filled */
    size_t inflight;             /* messages sent, not yet done */
    size_t outstanding;          /* readings submitted, not yet done */

    atomic_int state;            /* enum conn_state */
    atomic_int connected;
    int64_t reconnects;

    pthread_mutex_t lock;        /* guards finished */
    struct pub_msg *finished;
};

static void msg_free(struct pub_msg *m)
{
    if (!m)
        return;
    reading_msg_free(&m->body);
    free(m->w);
    free(m);
}

/* Runs every waiter of m on the loop thread, then frees m. */
static void msg_complete(struct publisher *p, struct pub_msg *m, int ok, const char *why)
{
    for (size_t i = 0; i < m->nw; i++)
        m->w[i].done(m->w[i].ctx, ok, why);
    p->outstanding -= m->readings;
    msg_free(m);
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
    (void)resp;
    /* Connection lost with the message in flight (-11), or a PUBACK reason
     * code >= 0x80 (e.g. not authorised): either way not acknowledged. */
    hand_back(ctx, 0, "broker did not acknowledge the readings");
}

static void on_connected(void *ctx, char *cause)
{
    struct publisher *p = ctx;
    (void)cause;
    atomic_store(&p->state, CONN_UP);
    atomic_store(&p->connected, 1);
    log_info("mqtt.connected", "broker=%s client_id=%s", p->cfg.url, p->client_id);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct publisher *p = ctx;
    atomic_store(&p->connected, 0);
    atomic_store(&p->state, CONN_RECONNECTING);   /* paho reconnects by itself */
    log_warn("mqtt.connection_lost", "broker=%s cause=\"%s\"", p->cfg.url,
             cause ? cause : "unknown");
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    struct publisher *p = ctx;
    atomic_store(&p->state, CONN_IDLE);           /* the tick tries again */
    log_warn("mqtt.connect_failed", "broker=%s rc=%d reason=\"%s\"", p->cfg.url,
             resp ? resp->code : 0, resp && resp->message ? resp->message : "unreachable");
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    /* Never subscribed: nothing should arrive. */
    (void)ctx;
    (void)topic_len;
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

/* --- the loop's thread --------------------------------------------------- */

static void start_connect(struct publisher *p)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    co.keepAliveInterval = 20;
    co.cleanstart = 1;              /* publishers keep no session */
    co.automaticReconnect = 1;
    co.minRetryInterval = 1;
    co.maxRetryInterval = 8;
    co.connectTimeout = 5;
    co.onFailure5 = on_connect_fail;
    co.context = p;
    atomic_store(&p->state, CONN_CONNECTING);
    int rc = MQTTAsync_connect(p->client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        atomic_store(&p->state, CONN_IDLE);
        log_warn("mqtt.connect_failed", "broker=%s rc=%d", p->cfg.url, rc);
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    if (atomic_load(&p->state) == CONN_IDLE)
        start_connect(p);
}

/* Sends the open message. Returns after handing it to paho, or after
 * failing its requests if paho refused it. */
static void send_open(struct publisher *p)
{
    struct pub_msg *m = p->open;
    if (!m || p->inflight >= p->cfg.max_inflight)
        return;
    p->open = NULL;
    if (reading_msg_finish(&m->body) < 0) {
        msg_complete(p, m, 0, "out of memory");
        return;
    }
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
        log_warn("mqtt.publish_refused", "rc=%d readings=%zu", rc, m->readings);
        msg_complete(p, m, 0, "broker unavailable");
        return;
    }
    /* The body is no longer needed: free it now, keep the waiters. */
    reading_msg_free(&m->body);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_open(arg);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->lock);
    struct pub_msg *list = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        struct pub_msg *next = list->next;
        p->inflight--;
        msg_complete(p, list, list->ok, list->why);
        list = next;
    }
    send_open(p);   /* a slot may have freed up for a waiting message */
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
    p->flush_ev = evtimer_new(base, flush_cb, p);
    p->done_ev = event_new(base, -1, 0, done_cb, p);
    p->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, p);
    if (!p->client_id || !p->topic || !p->instance || !p->flush_ev || !p->done_ev ||
        !p->tick_ev) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    p->cfg.client_id = p->client_id;
    p->cfg.topic = p->topic;
    p->cfg.instance = p->instance;

    MQTTAsync_createOptions opts = MQTTAsync_createOptions_initializer5;
    /* Only our own in-flight cap limits what is queued; paho's buffer must
     * be larger than it, or sendMessage fails (-12) while connected. */
    opts.maxBufferedMessages = (int)cfg->max_inflight * 2 + 16;
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

int publisher_submit(struct publisher *p, const struct reading_batch *b,
                     publisher_done_fn done, void *ctx, const char **why)
{
    if (!publisher_connected(p)) {
        *why = "not connected to the broker";
        return -1;
    }
    if (p->outstanding + b->n > p->cfg.max_pending_readings) {
        *why = "too many readings waiting for the broker";
        return -1;
    }
    struct pub_msg *m = p->open;
    int fresh = 0;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || reading_msg_init(&m->body, p->instance) < 0) {
            free(m);
            *why = "out of memory";
            return -1;
        }
        m->p = p;
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
    size_t mark = m->body.len, count = m->body.count;
    for (size_t i = 0; i < b->n; i++) {
        if (reading_msg_add(&m->body, &b->v[i]) < 0) {
            m->body.len = mark;
            m->body.count = count;
            goto oom;
        }
    }
    m->w[m->nw].done = done;
    m->w[m->nw].ctx = ctx;
    m->nw++;
    m->readings += b->n;
    p->outstanding += b->n;
    p->open = m;
    if (m->body.len >= p->cfg.max_message_bytes) {
        send_open(p);
    } else if (fresh) {
        /* Collect whatever else arrives in this turn of the loop. */
        struct timeval now = { 0, 0 };
        evtimer_add(p->flush_ev, &now);
    }
    return 0;
oom:
    if (fresh) {
        p->open = NULL;
        msg_free(m);
    }
    *why = "out of memory";
    return -1;
}

void publisher_flush(struct publisher *p)
{
    send_open(p);
}

void publisher_destroy(struct publisher *p, int timeout_ms)
{
    if (!p)
        return;
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
    if (p->open)
        msg_complete(p, p->open, 0, "shutting down");
    if (p->flush_ev)
        event_free(p->flush_ev);
    if (p->done_ev)
        event_free(p->done_ev);
    if (p->tick_ev)
        event_free(p->tick_ev);
    pthread_mutex_destroy(&p->lock);
    free(p->client_id);
    free(p->topic);
    free(p->instance);
    free(p);
}
