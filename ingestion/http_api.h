/* http_api.h -- the HTTP API of ingestion (v1), on libevent's evhttp.
 *
 *   POST /v1/readings   one reading or an array; 202 {"accepted":n} after PUBACK
 *   POST /              the legacy sensor payload
 *   GET  /healthz       process alive
 *   GET  /readyz        ready to accept: broker connected and not draining
 *
 * Every answer has a JSON body. All handlers run on the event loop thread. */
#ifndef SF_HTTP_API_H
#define SF_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"

struct evhttp;
struct publisher;

struct http_api_config {
    size_t max_body_bytes;
    struct reading_limits limits;
    int retry_after_s;           /* in 503 answers */
};

struct http_api;

/* Installs the routes on http. Returns NULL on out of memory. */
struct http_api *http_api_create(struct evhttp *http, struct publisher *pub,
                                 const struct http_api_config *cfg);

/* From now on /readyz answers 503 and new readings get 503: used while
 * draining before exit. */
void http_api_set_draining(struct http_api *api);

/* Requests answered so far, for the shutdown log line. */
uint64_t http_api_requests(const struct http_api *api);

void http_api_destroy(struct http_api *api);

#endif
