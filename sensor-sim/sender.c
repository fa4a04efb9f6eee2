/* sender.c -- HTTP connection pool, request lifecycle, retries, backoff. */
#include "sender.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "backoff.h"
#include "log.h"
#include "rng.h"
#include "ts.h"

enum { REQ_FREE = 0, REQ_QUEUED, REQ_WIRE, REQ_BACKOFF };

/* Bodies above this may span several TCP segments: see dispatch(). */
#define NODELAY_BODY_BYTES 1200

/* Log lines per second allowed for sim.gave_up and sim.rejected: a dead
 * server under load would otherwise make thousands a second. */
#define LOG_BURST 20

struct sender_conn {
    struct evhttp_connection *evcon;
    struct sender_req *req;          /* on the wire, or NULL when idle */
};

struct sender {
    struct event_base *base;
    struct evdns_base *dns;
    struct sim_stats *stats;
    struct acclog *acclog;
    const char *api_key;         /* borrowed from the config; NULL: none */
    unsigned max_attempts;
    struct rng rng;

    char *host;                      /* for connecting: no brackets */
    char *host_header;               /* Host: value */
    char *path;                      /* path and query */
    int port;

    struct sender_conn *conns;
    unsigned nconns;
    unsigned *idle;                  /* stack of idle connection indices */
    unsigned nidle;

    struct sender_req *qhead, *qtail;    /* waiting for a connection */
    uint64_t unposted;                   /* readings never posted yet */
    struct sender_req *free_list;
    struct sender_req *live;             /* all non-free requests */
    uint64_t outstanding;

    struct event *pump_ev;           /* deferred dispatch, see on_done() */
    void (*on_resolved)(void *);
    void *on_resolved_arg;

    int64_t log_window_us;
    unsigned log_in_window;
    uint64_t log_suppressed;
};

static void pump(struct sender *s);

/* --- setup --------------------------------------------------------------- */

static char *xstrdup(const char *p)
{
    char *d = strdup(p);
    if (!d) {
        fputs("sensor-sim: out of memory\n", stderr);
        abort();
    }
    return d;
}

static int parse_url(struct sender *s, const char *url, char *err, size_t errlen)
{
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    int rc = -1;
    if (!u) {
        snprintf(err, errlen, "cannot parse URL \"%s\"", url);
        return -1;
    }
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    const char *path = evhttp_uri_get_path(u);
    const char *query = evhttp_uri_get_query(u);
    int port = evhttp_uri_get_port(u);

    if (!scheme || strcasecmp(scheme, "http") != 0) {
        snprintf(err, errlen, "URL \"%s\": only http:// is supported", url);
        goto out;
    }
    if (!host || !*host) {
        snprintf(err, errlen, "URL \"%s\" has no host", url);
        goto out;
    }
    if (evhttp_uri_get_userinfo(u)) {
        snprintf(err, errlen, "URL \"%s\": user info is not supported", url);
        goto out;
    }
    s->port = port < 0 ? 80 : port;
    if (s->port < 1 || s->port > 65535) {
        snprintf(err, errlen, "URL \"%s\": bad port", url);
        goto out;
    }
    /* libevent keeps the brackets of an IPv6 literal; connect() must not. */
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        s->host = xstrdup(host + 1);
        s->host[hl - 2] = '\0';
    } else {
        s->host = xstrdup(host);
    }
    /* Sized to fit: SIM_URL may be 2048 bytes long. */
    size_t cap = strlen(url) + 16;
    char *tmp = malloc(cap);
    if (!tmp) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (port < 0)
        snprintf(tmp, cap, "%s", host);
    else
        snprintf(tmp, cap, "%s:%d", host, port);
    s->host_header = xstrdup(tmp);
    snprintf(tmp, cap, "%s%s%s", path && *path ? path : "/", query ? "?" : "",
             query ? query : "");
    s->path = xstrdup(tmp);
    free(tmp);
    rc = 0;
out:
    evhttp_uri_free(u);
    return rc;
}

static int is_numeric_host(const char *h)
{
    return strspn(h, "0123456789.") == strlen(h) || strchr(h, ':') != NULL;
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

struct sender *sender_create(struct event_base *base, const struct sender_cfg *cfg,
                             struct sim_stats *stats, char *err, size_t errlen)
{
    struct sender *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->stats = stats;
    s->acclog = cfg->acclog;
    s->api_key = cfg->api_key && *cfg->api_key ? cfg->api_key : NULL;
    s->max_attempts = cfg->max_attempts ? cfg->max_attempts : 1;
    rng_seed(&s->rng, rng_mix(cfg->seed ^ 0x5e4de7ULL));
    if (parse_url(s, cfg->url, err, errlen) != 0)
        goto err;

    /* Names are resolved without blocking the loop; a literal needs no
     * resolver. Without /etc/resolv.conf evdns fails, and libevent's
     * blocking getaddrinfo is the fallback (connections are long-lived). */
    if (!is_numeric_host(s->host))
        s->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                      EVDNS_BASE_DISABLE_WHEN_INACTIVE);

    s->nconns = cfg->connections ? cfg->connections : 1;
    s->conns = calloc(s->nconns, sizeof *s->conns);
    s->idle = calloc(s->nconns, sizeof *s->idle);
    s->pump_ev = event_new(base, -1, 0, pump_cb, s);
    if (!s->conns || !s->idle || !s->pump_ev) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    struct timeval tv;
    tv.tv_sec = (time_t)cfg->timeout_s;
    tv.tv_usec = (suseconds_t)((cfg->timeout_s - (double)tv.tv_sec) * 1e6);
    for (unsigned i = 0; i < s->nconns; i++) {
        struct evhttp_connection *c =
            evhttp_connection_base_new(base, s->dns, s->host, (unsigned short)s->port);
        if (!c) {
            snprintf(err, errlen, "cannot create HTTP connection to %s:%d", s->host, s->port);
            goto err;
        }
        s->conns[i].evcon = c;
        evhttp_connection_set_timeout_tv(c, &tv);
        /* Our retry loop, with backoff and the same body, does this job. */
        evhttp_connection_set_retries(c, 0);
        /* A server may answer 413 and close before reading the whole body:
         * read that answer instead of failing on the write. */
        evhttp_connection_set_flags(c, EVHTTP_CON_READ_ON_WRITE_ERROR);
        evhttp_connection_set_max_headers_size(c, 64 * 1024);
        evhttp_connection_set_max_body_size(c, 1024 * 1024);
        /* The stack is IPv4 (Docker networks, loopback). "localhost" can
         * resolve to ::1 first, where nothing listens. */
        if (!strchr(s->host, ':'))
            evhttp_connection_set_family(c, AF_INET);
        s->idle[s->nidle++] = i;
    }
    return s;
err:
    sender_destroy(s);
    return NULL;
}

static void req_free(struct sender_req *r)
{
    sbuf_free(&r->body);
    sbuf_free(&r->csv);
    if (r->retry_ev)
        event_free(r->retry_ev);
    free(r);
}

void sender_destroy(struct sender *s)
{
    if (!s)
        return;
    /* Connections first: evhttp_connection_free() frees the evhttp
     * requests on them without calling back into us. */
    for (unsigned i = 0; s->conns && i < s->nconns; i++)
        if (s->conns[i].evcon)
            evhttp_connection_free(s->conns[i].evcon);
    while (s->live) {
        struct sender_req *r = s->live;
        s->live = r->lnext;
        req_free(r);
    }
    while (s->free_list) {
        struct sender_req *r = s->free_list;
        s->free_list = r->next;
        req_free(r);
    }
    if (s->dns)
        evdns_base_free(s->dns, 0);
    if (s->pump_ev)
        event_free(s->pump_ev);
    free(s->conns);
    free(s->idle);
    free(s->host);
    free(s->host_header);
    free(s->path);
    free(s);
}

/* --- request bookkeeping ------------------------------------------------- */

static void retry_cb(evutil_socket_t fd, short what, void *arg);

struct sender_req *sender_req_new(struct sender *s)
{
    struct sender_req *r = s->free_list;
    if (r) {
        s->free_list = r->next;
    } else {
        r = calloc(1, sizeof *r);
        if (r)
            r->retry_ev = event_new(s->base, -1, 0, retry_cb, r);
        if (!r || !r->retry_ev) {
            fputs("sensor-sim: out of memory\n", stderr);
            abort();
        }
        r->s = s;
    }
    r->next = NULL;
    r->n = 0;
    r->attempts = 0;
    r->err = -1;
    r->state = REQ_FREE;
    r->due_mono_us = ts_mono_us();
    sbuf_clear(&r->body);
    sbuf_clear(&r->csv);
    return r;
}

void sender_req_discard(struct sender *s, struct sender_req *r)
{
    r->n = 0;
    r->next = s->free_list;
    s->free_list = r;
}

static void queue_push(struct sender *s, struct sender_req *r, int front)
{
    r->state = REQ_QUEUED;
    r->next = NULL;
    if (!s->qhead) {
        s->qhead = s->qtail = r;
    } else if (front) {
        r->next = s->qhead;
        s->qhead = r;
    } else {
        s->qtail->next = r;
        s->qtail = r;
    }
    if (!r->attempts)
        s->unposted += r->n;
}

static struct sender_req *queue_pop(struct sender *s)
{
    struct sender_req *r = s->qhead;
    if (r) {
        s->qhead = r->next;
        if (!s->qhead)
            s->qtail = NULL;
        r->next = NULL;
        if (!r->attempts)
            s->unposted -= r->n;
    }
    return r;
}

/* The request is done with: take it off the live list and recycle it. */
static void resolve(struct sender *s, struct sender_req *r)
{
    s->outstanding -= r->n;
    if (r->lprev)
        r->lprev->lnext = r->lnext;
    else
        s->live = r->lnext;
    if (r->lnext)
        r->lnext->lprev = r->lprev;
    r->state = REQ_FREE;
    r->n = 0;
    r->http = NULL;
    r->conn = NULL;
    r->next = s->free_list;
    s->free_list = r;
    if (s->on_resolved)
        s->on_resolved(s->on_resolved_arg);
}

static int log_allowed(struct sender *s)
{
    int64_t now = ts_mono_us();
    if (now - s->log_window_us >= 1000000) {
        s->log_window_us = now;
        s->log_in_window = 0;
    }
    if (s->log_in_window < LOG_BURST) {
        s->log_in_window++;
        return 1;
    }
    s->log_suppressed++;
    return 0;
}

static void give_up(struct sender *s, struct sender_req *r, const char *reason)
{
    s->stats->c.failed += r->n;
    if (log_allowed(s))
        log_warn("sim.gave_up", "reason=%s attempts=%u readings=%u", reason,
                 r->attempts, r->n);
    resolve(s, r);
}

static void retry_later(struct sender *s, struct sender_req *r, const char *reason,
                        int64_t retry_after_us)
{
    if (r->attempts >= s->max_attempts) {
        give_up(s, r, reason);
        return;
    }
    int64_t d = backoff_delay_us(r->attempts, rng_next(&s->rng), retry_after_us);
    struct timeval tv = { (time_t)(d / 1000000), (suseconds_t)(d % 1000000) };
    r->state = REQ_BACKOFF;
    log_debug("sim.retry", "reason=%s attempts=%u readings=%u delay_ms=%.1f",
              reason, r->attempts, r->n, (double)d / 1000.0);
    event_add(r->retry_ev, &tv);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sender_req *r = arg;
    (void)fd;
    (void)what;
    /* Retries go first: their readings are the oldest. */
    queue_push(r->s, r, 1);
    pump(r->s);
}

/* --- the wire ------------------------------------------------------------ */

static const char *error_name(int e)
{
    switch (e) {
    case EVREQ_HTTP_TIMEOUT:        return "timeout";
    case EVREQ_HTTP_EOF:            return "connection_closed";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid_response";
    case EVREQ_HTTP_BUFFER_ERROR:   return "connection_error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG:  return "response_too_long";
    default:                        return "connect_failed";
    }
}

/* Copies up to max bytes of the response body into out as a quoted log
 * value, the services' way (storage_log_value): " becomes ', control
 * characters spaces, so the line stays one grep-able key="value" line and
 * LOG_FORMAT=json finds the value's end (log.c ends it at the next "). */
static void body_excerpt(struct evhttp_request *h, char *out, size_t max)
{
    char raw[256];
    struct evbuffer *b = evhttp_request_get_input_buffer(h);
    ev_ssize_t n = evbuffer_copyout(b, raw, sizeof raw);
    size_t o = 0;
    for (ev_ssize_t i = 0; i < n && o + 1 < max; i++) {
        unsigned char c = (unsigned char)raw[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : c == '"' ? '\'' : (char)c;
    }
    out[o] = '\0';
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    struct sender_req *r = arg;
    r->err = (int)e;
}

static void on_done(struct evhttp_request *h, void *arg)
{
    struct sender_req *r = arg;
    struct sender *s = r->s;
    int code = h ? evhttp_request_get_response_code(h) : 0;

    /* The connection is idle again. Dispatching from here would recurse
     * (a refused connect calls back from inside evhttp_make_request), so
     * the next dispatch runs from the loop, right after this callback. */
    if (r->conn) {
        r->conn->req = NULL;
        s->idle[s->nidle++] = (unsigned)(r->conn - s->conns);
        r->conn = NULL;
        event_active(s->pump_ev, 0, 0);
    }
    r->http = NULL;

    if (code == 0) {
        /* No HTTP answer. h != NULL here means the connect failed (evhttp
         * calls back with the request and no error callback then). */
        s->stats->c.conn_errors++;
        retry_later(s, r, h ? "connect_failed" : error_name(r->err), -1);
        return;
    }

    int64_t now = ts_mono_us(), lat = now - r->sent_mono_us;
    stats_latency(s->stats, lat > 0 ? (uint64_t)lat : 0);

    if (code >= 200 && code < 300) {
        int64_t due = now - r->due_mono_us;
        stats_due_latency(s->stats, due > 0 ? (uint64_t)due : 0);
        s->stats->c.accepted += r->n;
        if (s->acclog && r->csv.len)
            acclog_append(s->acclog, r->csv.p, r->csv.len);
        resolve(s, r);
        return;
    }
    if (code >= 500)   /* by class, whether retried or not */
        s->stats->c.http_5xx++;
    else
        s->stats->c.http_4xx++;
    /* Worth sending again: a 408 (HAProxy: the request did not arrive in
     * time, "send it again, whole"), a 429 and the 5xx of a server that is
     * busy or away. Not 501 or 505: the method or the HTTP version itself
     * is refused, and would be again. */
    if (code == 408 || code == 429 || (code >= 500 && code != 501 && code != 505)) {
        char reason[24];
        snprintf(reason, sizeof reason, "http_%d", code);
        const char *ra = evhttp_find_header(evhttp_request_get_input_headers(h),
                                            "Retry-After");
        retry_later(s, r, reason, backoff_parse_retry_after(ra, ts_now_us()));
        return;
    }
    /* Another 4xx, 501, 505 (and anything odd like 3xx): the request itself
     * is wrong, the same bytes would be refused again. */
    s->stats->c.failed += r->n;
    if (log_allowed(s)) {
        char body[520];
        body_excerpt(h, body, sizeof body);
        log_warn("sim.rejected", "status=%d readings=%u attempts=%u body=\"%s\"",
                 code, r->n, r->attempts, body);
    }
    resolve(s, r);
}

static void dispatch(struct sender *s, struct sender_conn *c, struct sender_req *r)
{
    r->attempts++;
    if (r->attempts > 1)
        s->stats->c.retried += r->n;
    else
        s->stats->c.sent += r->n;
    s->stats->c.requests++;
    r->err = -1;
    r->state = REQ_WIRE;
    r->conn = c;
    c->req = r;
    r->sent_mono_us = ts_mono_us();

    struct evhttp_request *h = evhttp_request_new(on_done, r);
    if (!h) {
        fputs("sensor-sim: out of memory\n", stderr);
        abort();
    }
    evhttp_request_set_error_cb(h, on_error);
    struct evkeyvalq *hd = evhttp_request_get_output_headers(h);
    evhttp_add_header(hd, "Host", s->host_header);
    evhttp_add_header(hd, "Content-Type", "application/json");
    if (s->api_key)
        evhttp_add_header(hd, "X-API-Key", s->api_key);
    evbuffer_add(evhttp_request_get_output_buffer(h), r->body.p, r->body.len);
    r->http = h;
    /* From here on r may already be resolved (a synchronous failure calls
     * on_done inside evhttp_make_request): do not touch it afterwards. */
    size_t len = r->body.len;
    if (evhttp_make_request(c->evcon, h, EVHTTP_REQ_POST, s->path) != 0) {
        /* Only on allocation or socket setup failure, without callback;
         * libevent may or may not have freed h, so it is not touched. */
        r->http = NULL;
        on_done(NULL, r);
        return;
    }
    /* A body that spans segments would have its last, partial segment held
     * by Nagle until the server ACKs, and servers delay ACKs (40 ms). evhttp
     * has no hook at connect time, so big bodies pay one setsockopt each;
     * small ones fit one segment and Nagle never waits (the previous request
     * was answered, so nothing is unacknowledged). */
    if (len > NODELAY_BODY_BYTES) {
        int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon));
        int one = 1;
        if (fd >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

static void pump(struct sender *s)
{
    while (s->nidle && s->qhead) {
        struct sender_req *r = queue_pop(s);
        struct sender_conn *c = &s->conns[s->idle[--s->nidle]];
        dispatch(s, c, r);
    }
}

/* --- API ----------------------------------------------------------------- */

void sender_submit(struct sender *s, struct sender_req *r)
{
    r->lprev = NULL;
    r->lnext = s->live;
    if (s->live)
        s->live->lprev = r;
    s->live = r;
    s->outstanding += r->n;
    queue_push(s, r, 0);
    pump(s);
}

uint64_t sender_outstanding(const struct sender *s)
{
    return s->outstanding;
}

uint64_t sender_unposted(const struct sender *s)
{
    return s->unposted;
}

uint64_t sender_drop_unposted(struct sender *s)
{
    uint64_t readings = 0;
    struct sender_req **pp = &s->qhead, *prev = NULL;
    /* One pass over the queue: retries (attempts > 0) stay. */
    while (*pp) {
        struct sender_req *r = *pp;
        if (r->attempts) {
            prev = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        if (s->qtail == r)
            s->qtail = prev;
        s->unposted -= r->n;
        readings += r->n;
        s->stats->c.unsent += r->n;
        resolve(s, r);
    }
    return readings;
}

void sender_on_resolved(struct sender *s, void (*cb)(void *arg), void *arg)
{
    s->on_resolved = cb;
    s->on_resolved_arg = arg;
}

uint64_t sender_take_suppressed(struct sender *s)
{
    uint64_t n = s->log_suppressed;
    s->log_suppressed = 0;
    return n;
}

uint64_t sender_give_up_all(struct sender *s, const char *reason)
{
    uint64_t readings = 0, requests = 0;
    void (*cb)(void *) = s->on_resolved;

    s->on_resolved = NULL;           /* one notification at the end */
    while (queue_pop(s))
        ;                            /* all of them are on the live list */
    while (s->live) {
        struct sender_req *r = s->live;
        if (r->state == REQ_BACKOFF)
            event_del(r->retry_ev);
        if (r->state == REQ_WIRE && r->http) {
            struct sender_conn *c = r->conn;
            /* Cancelling resets the connection and calls only on_error. */
            evhttp_cancel_request(r->http);
            c->req = NULL;
            s->idle[s->nidle++] = (unsigned)(c - s->conns);
        }
        if (r->attempts) {
            readings += r->n;
            requests++;
            s->stats->c.failed += r->n;
        } else {
            s->stats->c.unsent += r->n;
        }
        resolve(s, r);
    }
    s->on_resolved = cb;
    if (requests)
        log_warn("sim.gave_up", "reason=%s requests=%" PRIu64 " readings=%" PRIu64,
                 reason, requests, readings);
    if (cb)
        cb(s->on_resolved_arg);
    return readings;
}
