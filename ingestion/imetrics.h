/* imetrics.h -- ingestion's metrics (GET /metrics), on top of common/metrics.
 *
 * Everything runs on the event loop's thread, the scrape included; the
 * values themselves are atomics (metrics.h), as common/metrics wants. */
#ifndef SF_INGESTION_IMETRICS_H
#define SF_INGESTION_IMETRICS_H

#include <stddef.h>

/* Why a POST was refused: the `reason` label of sf_rejected_requests_total. */
enum imetrics_reason {
    REJECT_INVALID = 0,        /* 400 */
    REJECT_UNAUTHORIZED,       /* 401 */
    REJECT_FORBIDDEN,          /* 403 */
    REJECT_TOO_LARGE,          /* 413 (ours: not evhttp's own for the body) */
    REJECT_UNSUPPORTED_MEDIA,  /* 415 */
    REJECT_RATE_LIMITED,       /* 429 */
    REJECT_UNAVAILABLE,        /* 503 */
    REJECT_REASONS
};

/* Registers every metric, so that a scrape shows them all from the start. */
void imetrics_init(void);

/* One answer: sf_http_requests_total{route,status}. route is the matched
 * route ("/v1/readings", "/", "/healthz", "/readyz", "/metrics") or NULL
 * for anything else ("other"). POSTs answered 400/401/403/415/429/503 also
 * count in sf_rejected_requests_total{reason}. */
void imetrics_response(const char *route, int status);
void imetrics_accepted(size_t readings);
void imetrics_publish_latency(double seconds);   /* publish -> PUBACK */
void imetrics_connection_lost(void);             /* any thread */

/* The gauges, set from the publisher's state when a scrape comes. */
void imetrics_set_state(int connected, size_t spool_bytes, size_t inflight_readings,
                        size_t unconfirmed_messages);

#endif
