/* smetrics.c -- storage's metrics: names, help, and the readiness flags. */
#include "smetrics.h"
#include "metrics.h"
#include "ts.h"

#include <stdatomic.h>

/* Rows per committed message: 1 (one reading per request, no pacing) up to
 * a full 256 KiB message (~1000 readings). */
static const double ROWS_BOUNDS[] = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000 };

static struct {
    struct metric *inserted, *duplicates, *dead_letters, *rows, *commit;
    struct metric *lag, *db_up, *mqtt_up, *lost, *subscribed;
    _Atomic int64_t newest_us;
    atomic_int db, mqtt, sub;
} M;

void smetrics_init(void)
{
    M.inserted = metrics_counter("sf_rows_inserted_total", "Readings inserted", NULL);
    M.duplicates = metrics_counter("sf_rows_duplicate_total",
                                   "Readings received again and skipped (already stored)", NULL);
    M.dead_letters = metrics_counter("sf_dead_letters_total",
                                     "Messages (or readings of one) stored in dead_letters",
                                     NULL);
    M.rows = metrics_histogram("sf_batch_rows", "Readings per committed message", NULL,
                               ROWS_BOUNDS, sizeof ROWS_BOUNDS / sizeof ROWS_BOUNDS[0]);
    M.commit = metrics_histogram("sf_commit_latency_seconds",
                                 "Storing one message: the transaction up to its COMMIT", NULL,
                                 METRICS_LATENCY_BOUNDS, METRICS_LATENCY_NBOUNDS);
    M.lag = metrics_gauge("sf_lag_seconds",
                          "Now minus received_at of the newest reading committed (grows "
                          "while nothing arrives, too)", NULL);
    M.db_up = metrics_gauge("sf_db_connected", "1 while the database answers", NULL);
    M.mqtt_up = metrics_gauge("sf_mqtt_connected", "1 while connected to the broker", NULL);
    M.subscribed = metrics_gauge("sf_mqtt_subscribed",
                                 "1 while the shared subscription is in place", NULL);
    M.lost = metrics_counter("sf_mqtt_connection_lost_total",
                             "Connections to the broker lost (each followed by reconnects)",
                             NULL);
}

void smetrics_committed(long inserted, long duplicates, size_t rows, double seconds,
                        int64_t newest_received_at_us)
{
    metric_add(M.inserted, (double)inserted);
    metric_add(M.duplicates, (double)duplicates);
    metric_observe(M.rows, (double)rows);
    metric_observe(M.commit, seconds);
    int64_t cur = atomic_load(&M.newest_us);
    while (newest_received_at_us > cur &&
           !atomic_compare_exchange_weak(&M.newest_us, &cur, newest_received_at_us))
        ;
}

void smetrics_dead_letter(void)
{
    metric_inc(M.dead_letters);
}

void smetrics_db_state(int up)
{
    atomic_store(&M.db, up);
    metric_set(M.db_up, up);
}

void smetrics_mqtt_state(int connected)
{
    if (!connected) {
        metric_inc(M.lost);
        smetrics_subscribed(0);
    }
    atomic_store(&M.mqtt, connected);
    metric_set(M.mqtt_up, connected);
}

void smetrics_subscribed(int yes)
{
    atomic_store(&M.sub, yes);
    metric_set(M.subscribed, yes);
}

int smetrics_ready(const char **why)
{
    if (!atomic_load(&M.db)) {
        *why = "database unreachable";
        return 0;
    }
    if (!atomic_load(&M.mqtt) || !atomic_load(&M.sub)) {
        *why = "not subscribed on the broker";
        return 0;
    }
    return 1;
}

char *smetrics_render(size_t *len)
{
    int64_t newest = atomic_load(&M.newest_us);
    if (newest)
        metric_set(M.lag, (double)(ts_now_us() - newest) / 1e6);
    return metrics_render(len);
}
