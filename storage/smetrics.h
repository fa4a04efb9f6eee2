/* smetrics.h -- storage's metrics and readiness, shared by paho's thread
 * (which updates them) and the HTTP listener's thread (which reads them).
 * All updates are atomics (common/metrics.h). */
#ifndef SF_STORAGE_SMETRICS_H
#define SF_STORAGE_SMETRICS_H

#include <stddef.h>
#include <stdint.h>

/* Registers every metric, so that a scrape shows them all from the start. */
void smetrics_init(void);

/* One message committed: its rows inserted and already there, how long the
 * commit took, and the newest received_at among its readings. */
void smetrics_committed(long inserted, long duplicates, size_t rows, double seconds,
                        int64_t newest_received_at_us);
void smetrics_dead_letter(void);
void smetrics_db_state(int up);
void smetrics_mqtt_state(int connected);   /* connection lost: 0 (counted) */
void smetrics_subscribed(int yes);

/* 1 when connected to the database and subscribed on the broker; else 0
 * with why set to a static text. */
int smetrics_ready(const char **why);

/* Sets the scrape-time gauges (lag), then renders everything: malloc'd. */
char *smetrics_render(size_t *len);

#endif
