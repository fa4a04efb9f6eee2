/* imetrics.c -- ingestion's metrics: names, help, labels. */
#include "imetrics.h"
#include "metrics.h"

#include <stdio.h>
#include <string.h>

static const char *const ROUTES[] = { "/v1/readings", "/", "/healthz", "/readyz", "/metrics",
                                      "other" };
#define NROUTES (sizeof ROUTES / sizeof ROUTES[0])
#define NSTATUS 16   /* distinct statuses cached per route; more still count */

static struct {
    int status[NROUTES][NSTATUS];
    struct metric *requests[NROUTES][NSTATUS];
    struct metric *rejected[REJECT_REASONS];
    struct metric *accepted, *latency, *lost;
    struct metric *connected, *spool, *inflight, *unconfirmed;
} M;

static const char *const REASONS[REJECT_REASONS] = {
    [REJECT_INVALID] = "invalid",
    [REJECT_UNAUTHORIZED] = "unauthorized",
    [REJECT_FORBIDDEN] = "forbidden",
    [REJECT_TOO_LARGE] = "too_large",
    [REJECT_UNSUPPORTED_MEDIA] = "unsupported_media_type",
    [REJECT_RATE_LIMITED] = "rate_limited",
    [REJECT_UNAVAILABLE] = "unavailable",
};

void imetrics_init(void)
{
    char labels[64];
    for (int r = 0; r < REJECT_REASONS; r++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", REASONS[r]);
        M.rejected[r] = metrics_counter("sf_rejected_requests_total",
                                        "POST requests refused, by reason: invalid (400), "
                                        "unauthorized (401), forbidden (403), too_large (413), "
                                        "unsupported_media_type (415), rate_limited (429), "
                                        "unavailable (503)", labels);
    }
    M.accepted = metrics_counter("sf_readings_accepted_total",
                                 "Readings answered 202 (acknowledged by the broker or spooled)",
                                 NULL);
    M.latency = metrics_histogram("sf_publish_latency_seconds",
                                  "MQTT message publication to the broker's PUBACK", NULL,
                                  METRICS_LATENCY_BOUNDS, METRICS_LATENCY_NBOUNDS);
    M.lost = metrics_counter("sf_mqtt_connection_lost_total",
                             "Connections to the broker lost (each followed by reconnects)",
                             NULL);
    M.connected = metrics_gauge("sf_mqtt_connected", "1 while connected to the broker", NULL);
    M.spool = metrics_gauge("sf_spool_bytes",
                            "Bytes in the disk spool (readings taken while the broker was "
                            "unreachable, not yet forwarded)", NULL);
    M.inflight = metrics_gauge("sf_inflight_readings",
                               "Readings taken and not yet answered (awaiting the broker)",
                               NULL);
    M.unconfirmed = metrics_gauge("sf_unconfirmed_messages",
                                  "Published messages storage has not yet confirmed as "
                                  "committed (kept for republishing)", NULL);
    imetrics_response("/metrics", 200);   /* the family exists before any request */
}

static struct metric *request_counter(const char *route, int status)
{
    size_t r = NROUTES - 1;
    for (size_t i = 0; route && i + 1 < NROUTES; i++)
        if (!strcmp(route, ROUTES[i])) {
            r = i;
            break;
        }
    for (size_t i = 0; i < NSTATUS; i++) {
        if (M.status[r][i] == status)
            return M.requests[r][i];
        if (M.status[r][i] == 0) {
            char labels[64];
            snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", ROUTES[r], status);
            M.status[r][i] = status;
            M.requests[r][i] = metrics_counter("sf_http_requests_total",
                                               "HTTP answers, by route and status", labels);
            return M.requests[r][i];
        }
    }
    char labels[64];   /* past the cache: a lookup in the registry */
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", ROUTES[r], status);
    return metrics_counter("sf_http_requests_total", "HTTP answers, by route and status",
                           labels);
}

void imetrics_response(const char *route, int status)
{
    metric_inc(request_counter(route, status));
    if (!route || (strcmp(route, "/v1/readings") && strcmp(route, "/")))
        return;
    int reason = -1;
    switch (status) {
    case 400: reason = REJECT_INVALID; break;
    case 401: reason = REJECT_UNAUTHORIZED; break;
    case 403: reason = REJECT_FORBIDDEN; break;
    case 413: reason = REJECT_TOO_LARGE; break;
    case 415: reason = REJECT_UNSUPPORTED_MEDIA; break;
    case 429: reason = REJECT_RATE_LIMITED; break;
    case 503: reason = REJECT_UNAVAILABLE; break;
    default: break;
    }
    if (reason >= 0)
        metric_inc(M.rejected[reason]);
}

void imetrics_accepted(size_t readings)
{
    metric_add(M.accepted, (double)readings);
}

void imetrics_publish_latency(double seconds)
{
    metric_observe(M.latency, seconds);
}

void imetrics_connection_lost(void)
{
    metric_inc(M.lost);
}

void imetrics_set_state(int connected, size_t spool_bytes, size_t inflight_readings,
                        size_t unconfirmed_messages)
{
    metric_set(M.connected, connected);
    metric_set(M.spool, (double)spool_bytes);
    metric_set(M.inflight, (double)inflight_readings);
    metric_set(M.unconfirmed, (double)unconfirmed_messages);
}
