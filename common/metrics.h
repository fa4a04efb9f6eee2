/* metrics.h -- process-wide counters, gauges and histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * A metric is one name + one fixed label set, registered once (typically at
 * start, or the first time a label combination is seen) and then updated
 * through its handle. Updates are lock-free (C11 atomics) and safe from any
 * thread, including paho's callbacks; registration and rendering take one
 * mutex. Handles stay valid until the process exits.
 *
 *   static struct metric *req_202;
 *   req_202 = metrics_counter("sf_http_requests_total", "HTTP requests answered",
 *                             "route=\"/v1/readings\",status=\"202\"");
 *   metric_inc(req_202);
 *
 * Names follow Prometheus conventions: prefix sf_, unit suffixes (_seconds,
 * _bytes), _total for counters. Metrics of one name share help and type;
 * registering a name again with another type fails (NULL).
 *
 * Nothing here logs or exits. */
#ifndef SF_METRICS_H
#define SF_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metric;
struct evhttp_request;

/* Registers (or finds: same name and labels give the same handle) a metric.
 * labels is the inside of {...}, already quoted (`k="v",k2="v2"`), or NULL/""
 * for none; label values must be escaped by the caller (metrics_escape).
 * Returns NULL when the name or labels are malformed, the type conflicts
 * with an earlier registration of the name, or memory runs out; every
 * update function accepts NULL and does nothing, so a failed registration
 * never crashes a service. */
struct metric *metrics_counter(const char *name, const char *help, const char *labels);
struct metric *metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: n strictly increasing upper bounds (the +Inf bucket is implicit). */
struct metric *metrics_histogram(const char *name, const char *help, const char *labels,
                                 const double *bounds, size_t n);

void metric_inc(struct metric *m);                 /* counter or gauge: +1 */
void metric_add(struct metric *m, double v);       /* counter: v >= 0; gauge: any */
void metric_set(struct metric *m, double v);       /* gauge */
void metric_observe(struct metric *m, double v);   /* histogram */
double metric_value(const struct metric *m);       /* counter/gauge; histogram: count */

/* The whole registry as Prometheus text (# HELP, # TYPE, samples; histograms
 * with _bucket{le=...}, _sum, _count). Returns a malloc'd NUL-terminated
 * string (caller frees) and its length in *len, or NULL on allocation failure. */
char *metrics_render(size_t *len);

/* Escapes a label value (\ " and newline) into out; returns out, truncated
 * to outlen - 1 bytes when too long. */
char *metrics_escape(const char *value, char *out, size_t outlen);

/* Default latency buckets in seconds: 0.5 ms .. 10 s. */
extern const double METRICS_LATENCY_BOUNDS[];
extern const size_t METRICS_LATENCY_NBOUNDS;

/* Answers req 200 with text (from metrics_render) as the Prometheus text
 * format; takes text, which is freed once sent. Returns 0, or -1 with text
 * freed and nothing sent when out of memory (text NULL counts as that): the
 * caller answers the error its own way. Call from req's event loop thread. */
int metrics_reply(struct evhttp_request *req, char *text, size_t len);

#endif
