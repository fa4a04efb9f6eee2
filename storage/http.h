/* http.h -- storage's small HTTP listener, on a thread of its own:
 * GET /metrics (Prometheus text), /healthz (200 while the process runs) and
 * /readyz (200 while connected to the database and subscribed; else 503). */
#ifndef SF_STORAGE_HTTP_H
#define SF_STORAGE_HTTP_H

#include <stddef.h>

struct shttp;

/* Binds listen:port and starts the thread. Returns NULL with err filled
 * when the address cannot be bound or on out of memory. */
struct shttp *shttp_start(const char *listen, int port, char *err, size_t errlen);

/* Stops the thread, closes the listener and frees h (NULL is fine). */
void shttp_stop(struct shttp *h);

#endif
