/* http_api.h -- the HTTP API of ingestion (v1), on libevent's evhttp.
 *
 *   POST /v1/readings   one reading or an array; 202 {"accepted":n} after PUBACK
 *   POST /              the legacy sensor payload
 *   GET  /healthz       process alive
 *   GET  /readyz        ready to accept: broker connected and not draining
 *   GET  /metrics       Prometheus text
 *
 * Every answer has a JSON body. All handlers run on the event loop thread. */
#ifndef SF_HTTP_API_H
#define SF_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"

struct evhttp;
struct publisher;
struct apikeys;
struct ratelimit;

struct http_api_config {
    size_t max_body_bytes;
    struct reading_limits limits;
    int retry_after_s;           /* in 503 answers */
    int idle_timeout_s;          /* evhttp's (evhttp_set_timeout) */
    struct ratelimit *limit;     /* per sensor; NULL: none. Borrowed */
};

struct http_api;

/* What a request is, from its path and method alone. */
enum http_route {
    ROUTE_READINGS,        /* POST /v1/readings */
    ROUTE_LEGACY,          /* POST / */
    ROUTE_HEALTHZ,         /* GET|HEAD /healthz */
    ROUTE_READYZ,          /* GET|HEAD /readyz */
    ROUTE_METRICS,         /* GET|HEAD /metrics (Prometheus text) */
    ROUTE_BAD_METHOD,      /* known path, wrong method: 405, *allow says what */
    ROUTE_NOT_FOUND        /* 404 */
};

/* Classifies a request. method is an evhttp_cmd_type; *allow is set (a
 * static string for the Allow header) for ROUTE_BAD_METHOD. */
enum http_route http_api_route(const char *path, int method, const char **allow);

/* True for "application/json", any case, optionally with parameters
 * ("; charset=utf-8"). NULL (header absent) is false. */
int http_api_is_json(const char *content_type);

/* Installs the routes on http. Returns NULL on out of memory. */
struct http_api *http_api_create(struct evhttp *http, struct publisher *pub,
                                 const struct http_api_config *cfg);

/* From now on /readyz answers 503 and new readings get 503: used while
 * draining before exit. */
void http_api_set_draining(struct http_api *api);

/* The publisher is gone (shutdown): from now on every request gets 503
 * without touching it. api may be NULL. */
void http_api_detach(struct http_api *api);

/* Sensor authentication: from now on every POST needs a key of keys
 * (borrowed; NULL: no authentication). Returns the previous set, which the
 * caller frees (nothing refers to it any more). */
struct apikeys *http_api_set_keys(struct http_api *api, struct apikeys *keys);

/* Requests answered so far, for the shutdown log line. */
uint64_t http_api_requests(const struct http_api *api);

void http_api_destroy(struct http_api *api);

#endif
