/* http_api.c -- the HTTP API of ingestion (v1): routes, validation, answers. */
#include "http_api.h"
#include "apikeys.h"
#include "httpd.h"
#include "imetrics.h"
#include "metrics.h"
#include "log.h"
#include "publisher.h"
#include "ratelimit.h"
#include "ts.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#define RID_MAX 64   /* request ids: 1..64 of [A-Za-z0-9._:-] */

struct http_api {
    struct http_api_config cfg;
    struct publisher *pub;
    struct reading_batch batch;  /* reused by every request: one thread */
    struct apikeys *keys;        /* NULL: no authentication */
    int draining;
    int in_handler;              /* inside evhttp's request callback (handle) */
    uint64_t requests;
    uint32_t rid_prefix;         /* random per process: ids unique across replicas */
    uint64_t rid_seq;
};

/* A request waiting for the broker's PUBACK. */
struct pending {
    struct http_api *api;
    struct evhttp_request *req;
    size_t n;
    char rid[RID_MAX + 1];
};

/* The route label of a request's path for the metrics (NULL: other). */
static const char *route_label(struct evhttp_request *req)
{
    static const char *const known[] = { "/v1/readings", "/", "/healthz", "/readyz",
                                         "/metrics" };
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    for (size_t i = 0; path && i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(path, known[i]))
            return known[i];
    return NULL;
}

/* Every answer but /metrics: a line of JSON (json: NULL, an empty body
 * when out of memory), written into the request's own buffer. Undoes
 * httpd_defer first, for the POSTs that waited (harmless for the rest). */
static void reply_text(struct http_api *api, struct evhttp_request *req, int code,
                       const char *reason, const char *json)
{
    httpd_resume(req, api->cfg.idle_timeout_s);
    imetrics_response(route_label(req), code);
    if (json) {   /* not evbuffer_add_printf: printf's cost, on every answer */
        struct evbuffer *out = evhttp_request_get_output_buffer(req);
        evbuffer_add(out, json, strlen(json));
        evbuffer_add(out, "\n", 1);
    }
    /* Answers given later (on the PUBACK) are written at once; those given
     * in evhttp's callback go its usual way (httpd.h). */
    if (api->in_handler)
        httpd_reply(req, code, reason, "application/json");
    else
        httpd_reply_now(req, code, reason, "application/json");
    api->requests++;
}

static void reply_json(struct http_api *api, struct evhttp_request *req, int code,
                       const char *reason, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    reply_text(api, req, code, reason, text);
    free(text);
    json_decref(body);
}

/* The 202, the answer to nearly every request: no JSON object to build and
 * dump for it. */
static void reply_accepted(struct http_api *api, struct evhttp_request *req, size_t n)
{
    char text[40];
    snprintf(text, sizeof text, "{\"accepted\":%zu}", n);
    reply_text(api, req, 202, "Accepted", text);
}

/* Every refusal has one shape, HAProxy's included (haproxy.cfg.in):
 * {"error": message, "index": the reading at fault or null, "field": the
 * field at fault or null}. */
static void reply_error_at(struct http_api *api, struct evhttp_request *req, int code,
                           const char *reason, const char *message, long index,
                           const char *field)
{
    reply_json(api, req, code, reason,
               json_pack("{s:s, s:o, s:o}", "error", message,
                         "index", index >= 0 ? json_integer(index) : json_null(),
                         "field", field && *field ? json_string(field) : json_null()));
}

static void reply_error(struct http_api *api, struct evhttp_request *req, int code,
                        const char *reason, const char *message)
{
    reply_error_at(api, req, code, reason, message, -1, NULL);
}

/* The index of the reading whose sensor_id is sensor (a pointer into b, as
 * apikeys_check and ratelimit_take give it), or -1. */
static long index_of_sensor(const struct reading_batch *b, const char *sensor)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->v[i].sensor_id == sensor)
            return (long)i;
    return -1;
}

/* The field naming a sensor, in the body's own terms: "id" in the legacy
 * payload. NULL when no reading is named. */
static const char *sensor_field(long index, int legacy)
{
    return index < 0 ? NULL : legacy ? "id" : "sensor_id";
}

static void reply_unavailable(struct http_api *api, struct evhttp_request *req, const char *why)
{
    char ra[16];
    snprintf(ra, sizeof ra, "%d", api->cfg.retry_after_s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
    reply_error(api, req, 503, "Service Unavailable", why);
}

/* The request's API key: X-API-Key, else Authorization: Bearer <key>. */
static const char *api_key(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(in, "X-API-Key");
    if (k)
        return k;
    const char *auth = evhttp_find_header(in, "Authorization");
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        return auth;
    }
    return NULL;
}

static void reply_unauthorized(struct http_api *api, struct evhttp_request *req,
                               enum apikey_result r, const char *rid)
{
    const char *msg = r == APIKEY_MISSING
                          ? "missing API key: send it in the X-API-Key header"
                          : "unknown API key";
    log_debug("http.rejected", "rid=%s status=401 error=\"%s\"", rid, msg);
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer realm=\"sensorflow\"");
    reply_error(api, req, 401, "Unauthorized", msg);
}

static void publish_done(void *ctx, int ok, const char *why)
{
    struct pending *pd = ctx;
    if (ok) {
        log_debug("http.accepted", "rid=%s readings=%zu", pd->rid, pd->n);
        imetrics_accepted(pd->n);
        reply_accepted(pd->api, pd->req, pd->n);
    } else {
        log_debug("http.rejected", "rid=%s status=503 error=\"%s\"", pd->rid, why);
        reply_unavailable(pd->api, pd->req, why);
    }
    free(pd);
}

/* The request's id: the client's (HAProxy sets one when absent) when it is
 * valid, else one of ours; echoed in every answer's X-Request-Id. */
static void request_id(struct http_api *api, struct evhttp_request *req,
                       char rid[RID_MAX + 1])
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (h && reading_request_id_valid(h, strlen(h)))
        memcpy(rid, h, strlen(h) + 1);
    else
        snprintf(rid, RID_MAX + 1, "%08" PRIx32 "-%" PRIx64, api->rid_prefix, ++api->rid_seq);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id", rid);
}

int http_api_is_json(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen("application/json");
    return !strncasecmp(ct, "application/json", n) &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

enum http_route http_api_route(const char *path, int method, const char **allow)
{
    int get = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;
    if (!path)
        return ROUTE_NOT_FOUND;
    if (!strcmp(path, "/v1/readings") || !strcmp(path, "/")) {
        if (method == EVHTTP_REQ_POST)
            return path[1] ? ROUTE_READINGS : ROUTE_LEGACY;
        *allow = "POST";
        return ROUTE_BAD_METHOD;
    }
    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics")) {
        if (get)
            return path[1] == 'h' ? ROUTE_HEALTHZ : path[1] == 'r' ? ROUTE_READYZ
                                                                   : ROUTE_METRICS;
        *allow = "GET, HEAD";
        return ROUTE_BAD_METHOD;
    }
    return ROUTE_NOT_FOUND;
}

static void handle_post(struct http_api *api, struct evhttp_request *req, int legacy,
                        const char *rid)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!http_api_is_json(ct)) {
        reply_error(api, req, 415, "Unsupported Media Type",
                    ct ? "Content-Type must be application/json"
                       : "missing Content-Type: send application/json");
        return;
    }
    if (api->draining || !publisher_accepting(api->pub)) {
        reply_unavailable(api, req, api->draining ? "shutting down"
                                                  : "broker unreachable and the spool full or "
                                                    "failed");
        return;
    }
    /* The key before the body: an unknown client's body is not even parsed. */
    const char *key = api->keys ? api_key(req) : NULL;
    enum apikey_result auth = APIKEY_OK;
    if (api->keys && (auth = apikeys_check(api->keys, key, NULL, NULL)) != APIKEY_OK) {
        reply_unauthorized(api, req, auth, rid);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    struct reading_error rerr;
    int64_t now = ts_now_us();
    reading_batch_clear(&api->batch);
    int rc = legacy ? reading_parse_legacy(body, len, &api->cfg.limits, now, &api->batch, &rerr)
                    : reading_parse_body(body, len, &api->cfg.limits, now, &api->batch, &rerr);
    /* The batch holds copies: the body goes now, not when the broker
     * answers (else clients posting large bodies to a slow broker would
     * hold a body each: memory bounded by connections, not readings). */
    evbuffer_drain(in, len);
    if (rc < 0 && rerr.out_of_memory) {   /* not the client's fault: retry */
        reply_unavailable(api, req, "out of memory");
        return;
    }
    if (rc < 0) {
        log_debug("http.rejected", "rid=%s status=400 index=%ld field=%s error=\"%s\"", rid,
                  rerr.index, rerr.field, rerr.message);
        reply_error_at(api, req, 400, "Bad Request", rerr.message, rerr.index, rerr.field);
        return;
    }
    const char *sensor = NULL;
    if (api->keys && apikeys_check(api->keys, key, &api->batch, &sensor) == APIKEY_FORBIDDEN) {
        char msg[160];
        snprintf(msg, sizeof msg, "this API key may not write sensor %s", sensor);
        long at = index_of_sensor(&api->batch, sensor);
        log_debug("http.rejected", "rid=%s status=403 index=%ld sensor=%s", rid, at, sensor);
        reply_error_at(api, req, 403, "Forbidden", msg, at, sensor_field(at, legacy));
        return;
    }
    long retry_s = 0;
    if (api->cfg.limit &&
        ratelimit_take(api->cfg.limit, &api->batch, ts_mono_us(), &sensor, &retry_s) < 0) {
        char msg[200];
        long at = index_of_sensor(&api->batch, sensor);
        if (retry_s <= 0) {
            /* More than the whole burst: waiting would never let it pass. */
            snprintf(msg, sizeof msg, "more readings for sensor %s in one request than "
                     "INGESTION_BURST_PER_SENSOR allows: send fewer per request", sensor);
            log_debug("http.rejected", "rid=%s status=413 index=%ld sensor=%s", rid, at, sensor);
            reply_error_at(api, req, 413, "Payload Too Large", msg, at, sensor_field(at, legacy));
            return;
        }
        snprintf(msg, sizeof msg, "too many readings for sensor %s: retry later", sensor);
        char ra[24];
        snprintf(ra, sizeof ra, "%ld", retry_s);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
        log_debug("http.rejected", "rid=%s status=429 index=%ld sensor=%s retry_after_s=%s", rid,
                  at, sensor, ra);
        reply_error_at(api, req, 429, "Too Many Requests", msg, at, sensor_field(at, legacy));
        return;
    }
    struct pending *pd = malloc(sizeof *pd);
    if (!pd) {
        reply_unavailable(api, req, "out of memory");
        return;
    }
    pd->api = api;
    pd->req = req;
    pd->n = api->batch.n;
    memcpy(pd->rid, rid, strlen(rid) + 1);
    const char *why;
    httpd_defer(req);   /* the answer comes later: keep the connection in epoll */
    rc = publisher_submit(api->pub, &api->batch, rid, publish_done, pd, &why);
    if (rc == PUBLISHER_TOO_LARGE) {
        log_debug("http.rejected", "rid=%s status=413 error=\"%s\"", rid, why);
        free(pd);
        reply_error(api, req, 413, "Payload Too Large", why);
    } else if (rc < 0) {
        log_debug("http.rejected", "rid=%s status=503 error=\"%s\"", rid, why);
        free(pd);
        reply_unavailable(api, req, why);
    }
    /* Otherwise publish_done answers, perhaps already did: req is not ours. */
}

static void route(struct http_api *api, struct evhttp_request *req)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    const char *allow = NULL;
    char rid[RID_MAX + 1];
    int up;

    request_id(api, req, rid);
    if (!api->pub) {   /* shutting down: see http_api_detach */
        reply_unavailable(api, req, "shutting down");
        return;
    }

    switch (http_api_route(path, (int)evhttp_request_get_command(req), &allow)) {
    case ROUTE_READINGS:
        handle_post(api, req, 0, rid);
        return;
    case ROUTE_LEGACY:
        handle_post(api, req, 1, rid);
        return;
    case ROUTE_HEALTHZ:
        reply_json(api, req, 200, "OK", json_pack("{s:s}", "status", "ok"));
        return;
    case ROUTE_READYZ: {
        /* Ready while readings can be taken: broker up, or spool not full
         * (then every replica keeps serving through a broker outage). */
        struct publisher_stats st;
        publisher_stats(api->pub, &st);
        up = publisher_connected(api->pub);
        int ready = !api->draining && publisher_accepting(api->pub);
        const char *status = api->draining ? "draining" : !ready ? "not ready"
                             : up ? "ready" : "spooling";
        reply_json(api, req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable",
                   json_pack("{s:s,s:s,s:I,s:I}", "status", status, "broker",
                             up ? "up" : "down", "spool_bytes", (json_int_t)st.spool_bytes,
                             "unconfirmed_messages", (json_int_t)st.retained));
        return;
    }
    case ROUTE_METRICS: {
        struct publisher_stats st;
        publisher_stats(api->pub, &st);
        imetrics_set_state(publisher_connected(api->pub), st.spool_bytes,
                           publisher_outstanding(api->pub), st.retained);
        imetrics_response("/metrics", 200);
        size_t len;
        char *text = metrics_render(&len);
        if (metrics_reply(req, text, len) < 0) {
            reply_unavailable(api, req, "out of memory");
            return;
        }
        api->requests++;
        return;
    }
    case ROUTE_BAD_METHOD:
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        reply_error(api, req, 405, "Method Not Allowed", "method not allowed here");
        return;
    case ROUTE_NOT_FOUND:
        break;
    }
    reply_error(api, req, 404, "Not Found", "no such path");
}

/* evhttp's request callback. */
static void handle(struct evhttp_request *req, void *arg)
{
    struct http_api *api = arg;
    api->in_handler = 1;
    route(api, req);
    api->in_handler = 0;
}

struct http_api *http_api_create(struct evhttp *http, struct publisher *pub,
                                 const struct http_api_config *cfg)
{
    struct http_api *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->cfg = *cfg;
    api->pub = pub;
    if (getrandom(&api->rid_prefix, sizeof api->rid_prefix, 0) != sizeof api->rid_prefix)
        api->rid_prefix = (uint32_t)getpid() ^ (uint32_t)ts_now_us();
    /* Let every method reach us, so that the 405s are ours (JSON, Allow). */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                         EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(http, (ev_ssize_t)cfg->max_body_bytes);
    evhttp_set_default_content_type(http, "application/json");
    evhttp_set_gencb(http, handle, api);
    return api;
}

struct apikeys *http_api_set_keys(struct http_api *api, struct apikeys *keys)
{
    struct apikeys *old = api->keys;
    api->keys = keys;
    return old;
}

void http_api_set_draining(struct http_api *api)
{
    api->draining = 1;
}

void http_api_detach(struct http_api *api)
{
    if (!api)
        return;
    api->draining = 1;
    api->pub = NULL;
}

uint64_t http_api_requests(const struct http_api *api)
{
    return api->requests;
}

void http_api_destroy(struct http_api *api)
{
    if (!api)
        return;
    reading_batch_free(&api->batch);
    free(api);
}
