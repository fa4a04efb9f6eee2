/* main.c -- storage's lifecycle: configuration, logging, signals, startup
 * (database first), then the MQTT consumer until SIGTERM/SIGINT.
 *
 * Exit status: 0 after a requested stop, 1 when storage cannot work (the
 * database is not UTF8, a migration fails, the broker refuses the
 * subscription), 2 on bad configuration. The work itself is in consumer.c
 * and db.c. */
#include "config.h"
#include "consumer.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "smetrics.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define STARTUP_RETRY_FIRST_MS 100
#define STARTUP_RETRY_MAX_MS 5000
#define DISCONNECT_TIMEOUT_MS 2000
/* --retire: the session has given what it held once no message came for
 * this long after the UNSUBACK (mosquitto sends what it queued at once). */
#define RETIRE_IDLE_MS 2000

/* Self-pipe: the signal handler and the consumer's fatal callback write one
 * byte ('T' SIGTERM, 'I' SIGINT, 'F' fatal); only main reads it. */
static int wake_pipe[2] = { -1, -1 };

static void wake(char why)
{
    int saved = errno;   /* write(2) is async-signal-safe; errno is not ours */
    ssize_t n = write(wake_pipe[1], &why, 1);
    (void)n;             /* pipe full: a wake-up is already pending */
    errno = saved;
}

static void on_signal(int sig)
{
    wake(sig == SIGINT ? 'I' : 'T');
}

static void on_fatal(void *ctx)
{
    (void)ctx;
    wake('F');
}

/* Waits up to timeout_ms (-1: for ever) for a wake-up. Returns its byte, or
 * 0 on timeout. */
static char wait_wake(int timeout_ms)
{
    struct pollfd p = { .fd = wake_pipe[0], .events = POLLIN };
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;   /* our own handler ran: the byte is in the pipe */
        if (n <= 0)
            return 0;
        char c;
        if (read(wake_pipe[0], &c, 1) == 1)
            return c;
    }
}

static const char *wake_name(char c)
{
    return c == 'T' ? "SIGTERM" : c == 'I' ? "SIGINT" : "fatal";
}

static int setup_signals(char *err, size_t errlen)
{
    struct sigaction sa;

    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "pipe2: %s", strerror(errno));
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) {
        snprintf(err, errlen, "sigaction: %s", strerror(errno));
        return -1;
    }
    /* A peer closing a socket must be an error code, not the end of us. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Connects and migrates before consuming anything: without the schema every
 * message would only be retried. Returns 0 when up, 1 when the database
 * cannot serve us (DB_FATAL), -1 when a stop signal arrived first (wake
 * byte in *why). */
static int start_database(struct db *db, char *why)
{
    char err[512];
    long delay = STARTUP_RETRY_FIRST_MS;

    for (int attempt = 1;; attempt++) {
        int rc = consumer_db_ensure(db, err, sizeof err);
        if (rc == DB_OK)
            return 0;
        char qb[sizeof err];
        storage_log_value(err, qb, sizeof qb);
        if (rc == DB_FATAL) {
            log_error("db.unusable", "err=\"%s\"", qb);
            return 1;
        }
        log_warn("db.connect_failed", "attempt=%d retry_in_ms=%ld err=\"%s\"", attempt, delay, qb);
        if ((*why = wait_wake((int)delay)) != 0)
            return -1;
        delay = delay * 2 > STARTUP_RETRY_MAX_MS ? STARTUP_RETRY_MAX_MS : delay * 2;
    }
}

/* --retire stopped (a signal, a fatal error) before the session was drained
 * and ended: not retired, whatever was stored; returns the exit status. */
static int retire_interrupted(const struct storage_config *cfg, int why)
{
    log_error("storage.retire_failed", "client_id=%s cause=%s msg=\"stopped before the "
              "session gave all it held and ended: run --retire again\"", cfg->client_id,
              wake_name(why));
    return 1;
}

int main(int argc, char **argv)
{
    struct storage_config cfg;
    struct db *db = NULL;
    struct consumer *consumer = NULL;
    struct shttp *http = NULL;
    struct consumer_stats st = { 0 };
    char err[512];
    char why = 0;
    int status = 1;

    switch (storage_config_load(&cfg, argc, argv, err, sizeof err)) {
    case STORAGE_CONFIG_OK:
        break;
    case STORAGE_CONFIG_HELP:
        return 0;
    default:
        fprintf(stderr, "storage: %s\n", err);
        return 2;
    }
    log_init("storage", cfg.client_id, cfg.log_level);
    log_set_format(cfg.log_format);   /* checked by storage_config_load */
    smetrics_init();
    if (setup_signals(err, sizeof err) < 0) {
        log_error("storage.start_failed", "err=\"%s\"", err);
        return 1;
    }
    /* Up before the database is: /healthz answers and /readyz says why not. */
    if (cfg.http_port && !(http = shttp_start(cfg.http_listen, (int)cfg.http_port, err,
                                              sizeof err))) {
        log_error("storage.start_failed", "err=\"%s\"", err);
        return 1;
    }
    log_info("storage.starting", "broker=%s filter=%s client_id=%s session_expiry_s=%ld "
             "migrations=%zu http=%s:%ld", cfg.mqtt_url, cfg.topic_filter, cfg.client_id,
             cfg.session_expiry_s, storage_migrations_count, cfg.http_port ? cfg.http_listen : "-",
             cfg.http_port);

    if (!(db = db_create(cfg.database_url, cfg.database_owner_url, cfg.client_id))) {
        log_error("storage.start_failed", "err=\"out of memory\"");
        goto out;
    }
    switch (start_database(db, &why)) {
    case 0: break;
    case -1:   /* stopped while waiting for the database: nothing to undo */
        if (*cfg.retire) {
            status = retire_interrupted(&cfg, why);
        } else {
            log_info("storage.stopping", "cause=%s", wake_name(why));
            status = 0;
        }
        goto out;
    default: goto out;
    }

    if (!(consumer = consumer_create(&cfg, db, on_fatal, NULL, err, sizeof err))) {
        log_error("storage.start_failed", "err=\"%s\"", err);
        goto out;
    }
    /* Paho's threads start now and inherit this mask: with the signals
     * blocked there, the handler always runs on this thread. */
    sigset_t stop_signals, old;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old);
    int rc = consumer_start(consumer, err, sizeof err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        log_error("storage.start_failed", "err=\"%s\"", err);
        goto out;
    }

    if (*cfg.retire) {
        /* Until the session has given what it held; a signal ends it
         * early (what is left stays in the session for another try). */
        while ((why = wait_wake(200)) == 0 && !consumer_drained(consumer, RETIRE_IDLE_MS))
            ;
        if (!why) {
            int ended = consumer_stop(consumer, DISCONNECT_TIMEOUT_MS, 1);
            consumer_get_stats(consumer, &st);
            if (ended)
                log_info("storage.retired", "client_id=%s messages=%llu inserted=%llu "
                         "msg=\"session ended: the broker hands this id nothing more\"",
                         cfg.client_id, st.messages, st.readings_inserted);
            else
                log_error("storage.retire_failed", "client_id=%s messages=%llu "
                          "msg=\"the DISCONNECT that ends the session did not go through "
                          "(connection lost?): run --retire again\"", cfg.client_id,
                          st.messages);
            status = ended ? 0 : 1;
            goto out;
        }
        status = retire_interrupted(&cfg, why);
    } else {
        while ((why = wait_wake(-1)) == 0)
            ;
        status = why == 'F' ? 1 : 0;
    }
    log_info("storage.stopping", "cause=%s", wake_name(why));
    consumer_stop(consumer, DISCONNECT_TIMEOUT_MS, 0);
out:
    if (consumer) {
        consumer_get_stats(consumer, &st);
        consumer_destroy(consumer);   /* no callback runs after this: db is ours */
    }
    db_destroy(db);
    shttp_stop(http);
    log_info("storage.stopped", "status=%d messages=%llu inserted=%llu duplicates=%llu "
             "rejected=%llu dead_letters=%llu db_failures=%llu", status, st.messages,
             st.readings_inserted, st.readings_duplicate, st.readings_rejected,
             st.dead_letters, st.db_failures);
    return status;
}
