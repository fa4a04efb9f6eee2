/* main.c -- ingestion: HTTP readings in, MQTT QoS 1 out. Lifecycle only:
 * configuration, the event loop, the listener, signals and the drain.
 *
 * Exit status: 0 after --help or a requested stop (also when the drain ran
 * out of time: shutdown.drain_timeout says so), 1 when it cannot start
 * (startup.failed), 2 on bad configuration. */
#include "cfg.h"
#include "apikeys.h"
#include "http_api.h"
#include "imetrics.h"
#include "log.h"
#include "publisher.h"
#include "ratelimit.h"
#include "reading.h"
#include "spool.h"
#include "ts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

static const char SUMMARY[] =
    "sensorflow ingestion: takes sensor readings over HTTP (POST /v1/readings),\n"
    "validates and enriches them, and publishes them to MQTT with QoS 1; answers\n"
    "202 only once the broker has acknowledged them (or, while the broker is\n"
    "unreachable, once they are synced to the local spool).";

struct config {
    const char *listen, *instance, *mqtt_url, *topic_prefix, *stored_prefix, *log_level;
    const char *log_format;
    const char *mqtt_username, *mqtt_password, *mqtt_password_file;
    const char *api_keys_file;
    double rate_per_sensor, burst_per_sensor;
    long rate_max_sensors;
    const char *spool_dir;
    long spool_max_mib;
    long port, max_body, max_readings, max_future_s, idle_timeout_s, drain_timeout_s;
    long max_inflight, max_pending, max_message_kib, retry_after_s;
    long retention_s, republish_after_s, retention_max_mib;
    long max_unconfirmed, confirm_wait_ms, linger_ms;
    int sched_batch;
};

static struct config C;

static const struct cfg_opt OPTIONS[] = {
    { "listen", "INGESTION_LISTEN", CFG_STR, &C.listen, "0.0.0.0", 1, 255,
      "address the HTTP server binds" },
    { "port", "INGESTION_PORT", CFG_INT, &C.port, "8081", 1, 65535,
      "HTTP port" },
    { "instance-id", "INGESTION_INSTANCE_ID", CFG_STR, &C.instance, "", 0, 48,
      "this replica's name in logs and rows ([A-Za-z0-9._:-]); empty = <hostname>-<pid>" },
    { "mqtt-url", "MQTT_URL", CFG_STR, &C.mqtt_url, "tcp://127.0.0.1:1883", 1, 255,
      "MQTT broker" },
    { "mqtt-username", "MQTT_USERNAME", CFG_STR, &C.mqtt_username, "", 0, 128,
      "MQTT user name; empty = anonymous" },
    { "mqtt-password", "MQTT_PASSWORD", CFG_STR, &C.mqtt_password, "", 0, 256,
      "MQTT password (prefer MQTT_PASSWORD_FILE: the environment is visible in /proc)" },
    { "mqtt-password-file", "MQTT_PASSWORD_FILE", CFG_STR, &C.mqtt_password_file, "", 0, 4096,
      "file whose first line is the MQTT password (wins over MQTT_PASSWORD)" },
    { "topic-prefix", "MQTT_TOPIC_PREFIX", CFG_STR, &C.topic_prefix,
      "sensorflow/v1/readings", 1, 128,
      "readings are published to <prefix>/<instance-id>" },
    { "stored-prefix", "MQTT_STORED_PREFIX", CFG_STR, &C.stored_prefix,
      "sensorflow/v1/stored", 1, 128,
      "storage confirms committed messages on <prefix>/<instance-id>" },
    { "retention-s", "INGESTION_RETENTION_S", CFG_INT, &C.retention_s, "600", 0, 86400,
      "keep published messages until storage confirms them, at most this long "
      "(seconds; 0 = off, and with it the pacing by storage)" },
    { "republish-after-s", "INGESTION_REPUBLISH_AFTER_S", CFG_INT, &C.republish_after_s, "60",
      1, 86400, "publish again what storage has not confirmed after this long, then at "
      "doubling intervals (seconds)" },
    { "retention-max-mib", "INGESTION_RETENTION_MAX_MIB", CFG_INT, &C.retention_max_mib, "64",
      1, 65536, "memory for unconfirmed messages; beyond, the oldest are let go" },
    { "max-unconfirmed", "INGESTION_MAX_UNCONFIRMED", CFG_INT, &C.max_unconfirmed, "1", 0, 1000,
      "while this many messages wait for the broker or for storage's confirmation, readings "
      "gather into the next message: larger messages while storage is behind (0 = off)" },
    { "confirm-wait-ms", "INGESTION_CONFIRM_WAIT_MS", CFG_INT, &C.confirm_wait_ms, "50", 1,
      10000, "how long a message unconfirmed by storage holds the next one back while storage "
      "confirms nothing (for a second: stopped or away); while it confirms, twice its recent "
      "time to confirm, up to 250 ms, and at least 5 ms (or this, if lower) while it confirms "
      "every message within a second, at least this otherwise (milliseconds)" },
    { "linger-ms", "INGESTION_LINGER_MS", CFG_INT, &C.linger_ms, "1", 0, 1000,
      "a message waits this long for more readings before it is sent: fewer, larger "
      "messages at moderate rates, for at most this much latency (milliseconds, 0 = off)" },
    { "sched-batch", "INGESTION_SCHED_BATCH", CFG_BOOL, &C.sched_batch, "1", 0, 1,
      "run under Linux's SCHED_BATCH: a request that wakes ingestion does not preempt the "
      "process running (HAProxy, say) but waits for it to sleep or for the next tick, so "
      "each wake-up reads more requests; no effect while a CPU is idle (0 = SCHED_OTHER)" },
    { "spool-dir", "INGESTION_SPOOL_DIR", CFG_STR, &C.spool_dir, "spool", 1, 3900,
      "while the broker is unreachable, readings are fsync'd to <dir>/<instance-id> and "
      "answered 202; keep the instance id stable so a restart finds them" },
    { "spool-max-mib", "INGESTION_SPOOL_MAX_MIB", CFG_INT, &C.spool_max_mib, "256", 0,
      1048576, "size of the spool; when full, 503 (0 = no spool: 503 while the broker is away)" },
    { "max-body-bytes", "INGESTION_MAX_BODY_BYTES", CFG_INT, &C.max_body, "1048576", 256,
      64 * 1048576, "largest request body; larger gets 413" },
    { "max-readings", "INGESTION_MAX_READINGS", CFG_INT, &C.max_readings, "1000", 1, 100000,
      "most readings in one request" },
    { "max-future-s", "INGESTION_MAX_FUTURE_S", CFG_INT, &C.max_future_s, "300", 0, 86400 * 365,
      "a ts further than this in the future is rejected (seconds)" },
    { "idle-timeout-s", "INGESTION_IDLE_TIMEOUT_S", CFG_INT, &C.idle_timeout_s, "30", 1, 3600,
      "close a connection silent for this long (seconds)" },
    { "drain-timeout-s", "INGESTION_DRAIN_TIMEOUT_S", CFG_INT, &C.drain_timeout_s, "10", 0, 600,
      "on SIGTERM, wait at most this long for the broker's acknowledgements and storage's "
      "confirmations" },
    { "max-inflight", "INGESTION_MAX_INFLIGHT", CFG_INT, &C.max_inflight, "16", 1, 1000,
      "MQTT messages published and not yet acknowledged" },
    { "max-pending", "INGESTION_MAX_PENDING", CFG_INT, &C.max_pending, "100000", 1, 10000000,
      "readings waiting for the broker; beyond it requests get 503" },
    { "max-message-kib", "INGESTION_MAX_MESSAGE_KIB", CFG_INT, &C.max_message_kib, "256", 1,
      65536, "an MQTT message is closed once it holds this much; readings then go into the "
      "next one (the broker's maximum packet size, if lower, caps it)" },
    { "retry-after-s", "INGESTION_RETRY_AFTER_S", CFG_INT, &C.retry_after_s, "1", 1, 3600,
      "Retry-After of 503 answers (seconds)" },
    { "api-keys-file", "INGESTION_API_KEYS_FILE", CFG_STR, &C.api_keys_file, "", 0, 4096,
      "sensor API keys: a file of `<key> <sensor>[,<sensor>...]|*` lines; POSTs then need "
      "X-API-Key (401 without, 403 for another sensor); SIGHUP reloads it; empty = off" },
    { "rate-per-sensor", "INGESTION_RATE_PER_SENSOR", CFG_DOUBLE, &C.rate_per_sensor, "100", 0,
      1e9, "readings/s one sensor may send to this replica, on average; beyond, 429 "
      "(0 = no limit)" },
    { "burst-per-sensor", "INGESTION_BURST_PER_SENSOR", CFG_DOUBLE, &C.burst_per_sensor,
      "2000", 1, 1e9, "readings one sensor may send at once above that rate" },
    { "rate-max-sensors", "INGESTION_RATE_MAX_SENSORS", CFG_INT, &C.rate_max_sensors, "100000",
      1, 100000000, "sensors the rate limit tracks at once (memory: up to ~400 bytes each, "
      "twice that while idle ones are swept)" },
    { "log-level", "LOG_LEVEL", CFG_STR, &C.log_level, "info", 1, 5,
      "debug, info, warn or error" },
    { "log-format", "LOG_FORMAT", CFG_STR, &C.log_format, "text", 1, 8,
      "text (one line per event, key=value) or json (one object per line)" },
};
#define NOPTIONS (sizeof OPTIONS / sizeof OPTIONS[0])

struct app {
    struct event_base *base;
    struct event *accept_pause;  /* re-enables the listener after EMFILE */
    struct evhttp *http;
    struct evconnlistener *listener;
    struct publisher *pub;
    struct http_api *api;
    struct event *sigterm, *sigint, *sighup, *drain_tick;
    struct apikeys *keys;
    struct ratelimit *limit;
    struct spool *spool;
    int64_t drain_deadline_us;
};

static void drain_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void)fd;
    (void)what;
    /* Done when the broker acknowledged everything and storage confirmed
     * it: after that, even a broker crash cannot lose what we answered 202. */
    struct publisher_stats st;
    size_t left = publisher_outstanding(a->pub);
    publisher_stats(a->pub, &st);
    if ((left == 0 && st.retained == 0) || ts_mono_us() >= a->drain_deadline_us) {
        if (left || st.retained)
            log_warn("shutdown.drain_timeout", "unacknowledged_readings=%zu "
                     "unconfirmed_messages=%zu", left, st.retained);
        event_base_loopbreak(a->base);
    }
}

/* SIGTERM: fail /readyz and refuse new readings at once, so the proxy moves
 * away; answer what we hold once the broker has acknowledged it; then exit. */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct app *a = arg;
    (void)what;
    if (a->drain_tick && evtimer_pending(a->drain_tick, NULL)) {
        log_warn("shutdown.forced", "signal=%d", (int)sig);
        event_base_loopbreak(a->base);
        return;
    }
    log_info("shutdown.draining", "signal=%d outstanding_readings=%zu", (int)sig,
             publisher_outstanding(a->pub));
    http_api_set_draining(a->api);
    publisher_drain(a->pub);
    a->drain_deadline_us = ts_mono_us() + C.drain_timeout_s * 1000000;
    struct timeval tick = { 0, 50000 };
    a->drain_tick = event_new(a->base, -1, EV_PERSIST, drain_tick_cb, a);
    if (!a->drain_tick) {
        event_base_loopbreak(a->base);
        return;
    }
    event_add(a->drain_tick, &tick);
}

/* SIGHUP: read INGESTION_API_KEYS_FILE again. A bad file keeps the keys
 * in force: a typo must not lock every sensor out. */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    struct app *a = arg;
    char err[512];
    (void)sig;
    (void)what;
    if (!*C.api_keys_file) {
        log_info("auth.reload_skipped", "msg=\"INGESTION_API_KEYS_FILE is not set\"");
        return;
    }
    struct apikeys *k = apikeys_load(C.api_keys_file, err, sizeof err);
    if (!k) {
        log_error("auth.reload_failed", "err=\"%s\" keys=%zu msg=\"the keys loaded before "
                  "stay in force\"", err, apikeys_count(a->keys));
        return;
    }
    apikeys_free(http_api_set_keys(a->api, k));
    a->keys = k;
    log_info("auth.reloaded", "file=%s keys=%zu", C.api_keys_file, apikeys_count(k));
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(a->listener);
}

/* accept() failed. Out of descriptors (thousands of idle clients) would
 * otherwise spin: the listening socket stays readable. Pause accepting for
 * a moment; the connections we have keep being served and the idle ones
 * time out (INGESTION_IDLE_TIMEOUT_S). */
static struct app *g_app;

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct app *a = g_app;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    static int64_t last_log_us;
    int64_t now = ts_mono_us();
    if (now - last_log_us > 10 * 1000000) {
        last_log_us = now;
        log_warn("http.accept_failed", "err=\"%s\" msg=\"pausing accept for 100 ms\"",
                 evutil_socket_error_to_string(err));
    }
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        struct timeval pause = { 0, 100000 };
        evconnlistener_disable(l);
        evtimer_add(a->accept_pause, &pause);
    }
}

/* Idle keep-alive connections are cheap, descriptors are the limit: take
 * all the process may have. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_debug("startup.fd_limit", "from=%llu to=%llu", (unsigned long long)before,
                      (unsigned long long)rl.rlim_max);
    }
}

/* SCHED_BATCH (INGESTION_SCHED_BATCH): the kernel does not let a woken
 * batch task preempt the running one. Behind HAProxy on the same CPUs, each
 * request HAProxy forwarded woke a replica that preempted HAProxy to read
 * that one request (make bench, single: 2 readings per wake-up, 5 000
 * preemptions of HAProxy a second); now the replica runs when HAProxy
 * sleeps, and reads what gathered meanwhile: single passes 20% more
 * (README: Performance). Called before any thread starts, so that one
 * would inherit it. Returns 0, or -1 with errno. */
static int set_sched_batch(void)
{
    struct sched_param sp = { .sched_priority = 0 };
    return sched_setscheduler(0, SCHED_BATCH, &sp);
}

static int default_instance(char *buf, size_t len)
{
    char host[64] = "host";
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    /* Keep only the id alphabet: hostnames may hold other characters. */
    for (char *c = host; *c; c++)
        if (!reading_sensor_id_valid(c, 1))
            *c = '-';
    host[32] = '\0';
    snprintf(buf, len, "%s-%ld", host, (long)getpid());
    return 0;
}

static struct evconnlistener *bind_listener(struct event_base *base, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    char addr[300];
    memset(&ss, 0, sizeof ss);
    /* "[::]:port" or "1.2.3.4:port" for evutil_parse_sockaddr_port. */
    snprintf(addr, sizeof addr, strchr(C.listen, ':') ? "[%s]:%ld" : "%s:%ld", C.listen, C.port);
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) < 0) {
        snprintf(err, errlen, "INGESTION_LISTEN: '%s' is not an IP address", C.listen);
        return NULL;
    }
    /* No SO_REUSEPORT: a second process on the same port must fail loudly. */
    struct evconnlistener *l = evconnlistener_new_bind(
        base, NULL, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&ss, sslen);
    if (!l)
        snprintf(err, errlen, "cannot listen on %s:%ld: %s (INGESTION_PORT busy?)", C.listen,
                 C.port, strerror(errno));
    return l;
}

int main(int argc, char **argv)
{
    struct app a;
    char err[512], instance[64], client_id[96], topic[256], stored_topic[256];
    int rc = 1;
    memset(&a, 0, sizeof a);

    switch (cfg_load(OPTIONS, NOPTIONS, argc, argv, "ingestion", SUMMARY, err, sizeof err)) {
    case CFG_HELP:
        return 0;
    case CFG_ERR:
        fprintf(stderr, "ingestion: %s\n", err);
        return 2;
    }
    enum log_level level;
    if (log_level_parse(C.log_level, &level) < 0) {
        fprintf(stderr, "ingestion: LOG_LEVEL (--log-level): '%s' is not debug, info, warn "
                        "or error\n", C.log_level);
        return 2;
    }
    if (log_set_format(C.log_format) < 0) {
        fprintf(stderr, "ingestion: LOG_FORMAT (--log-format): '%s' is not text or json\n",
                C.log_format);
        return 2;
    }
    if (*C.instance) {
        if (!reading_sensor_id_valid(C.instance, strlen(C.instance))) {
            fprintf(stderr, "ingestion: INGESTION_INSTANCE_ID (--instance-id): '%s' must be "
                            "characters of [A-Za-z0-9._:-]\n", C.instance);
            return 2;
        }
        snprintf(instance, sizeof instance, "%s", C.instance);
    } else {
        default_instance(instance, sizeof instance);
    }
    /* A random suffix: two replicas given the same instance id (one .env
     * for all of them) must still never share an MQTT client id, or the
     * broker disconnects one whenever the other connects. */
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint32_t)getpid() ^ (uint32_t)ts_now_us();
    snprintf(client_id, sizeof client_id, "%s-%08x", instance, rnd);
    snprintf(topic, sizeof topic, "%s/%s", C.topic_prefix, instance);
    snprintf(stored_topic, sizeof stored_topic, "%s/%s", C.stored_prefix, instance);
    log_init("ingestion", instance, level);
    imetrics_init();
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (C.sched_batch && set_sched_batch() < 0) {
        log_warn("startup.sched", "policy=SCHED_BATCH error=\"%s\" msg=\"running under "
                 "SCHED_OTHER\"", strerror(errno));
        C.sched_batch = 0;
    }

    /* The changelist folds the epoll_ctl calls an fd's changes need between
     * two epoll_wait calls into one: evhttp turns reading and writing on
     * and off for every request (make bench, single: 7.0k -> 7.5k/s). Our
     * descriptors are never dup()ed, which is the flag's one caveat. */
    struct event_config *ecfg = event_config_new();
    if (ecfg) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        /* Without it libevent 2.1 keeps time with CLOCK_MONOTONIC_COARSE,
         * which moves once per scheduler tick (4 ms at HZ=250): the 1 ms
         * linger took 1-8 ms, the loop waking every millisecond meanwhile
         * (epoll_wait with a 1 ms timeout, the timer never due) until the
         * clock moved (strace at 20 requests/s: the PUBLISH 3.7-7.3 ms
         * after its request). vDSO clock_gettime: no system call. */
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        /* No evthread_use_pthreads(): ingestion has one thread (its MQTT
         * client is on this loop too, publisher.c), and libevent's locks
         * would only cost every evbuffer call a mutex (callgrind: 2-3% of
         * ingestion's instructions a request). */
        a.base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    if (!a.base) {
        log_error("startup.failed", "reason=\"cannot create the event loop\"");
        goto out;
    }
    char spool_dir[4096];
    if (C.spool_max_mib > 0) {
        snprintf(spool_dir, sizeof spool_dir, "%s/%s", C.spool_dir, instance);
        if (!(a.spool = spool_open(spool_dir, (size_t)C.spool_max_mib * 1048576, err,
                                   sizeof err))) {
            log_error("startup.failed", "reason=\"%s\" msg=\"set INGESTION_SPOOL_DIR\"", err);
            goto out;
        }
        if (spool_bytes(a.spool))
            log_warn("spool.found", "dir=%s bytes=%zu msg=\"sent once the broker answers\"",
                     spool_dir, spool_bytes(a.spool));
    } else {
        snprintf(spool_dir, sizeof spool_dir, "-");
    }
    char mqtt_password[257];
    snprintf(mqtt_password, sizeof mqtt_password, "%s", C.mqtt_password);
    if (*C.mqtt_password_file &&
        cfg_read_secret(C.mqtt_password_file, mqtt_password, sizeof mqtt_password, err,
                        sizeof err) < 0) {
        log_error("startup.failed", "reason=\"MQTT_PASSWORD_FILE: %s\"", err);
        goto out;
    }
    struct publisher_config pc = {
        .url = C.mqtt_url,
        .username = C.mqtt_username,
        .password = mqtt_password,
        .client_id = client_id,
        .topic = topic,
        .instance = instance,
        .max_message_bytes = (size_t)C.max_message_kib * 1024,
        .max_inflight = (size_t)C.max_inflight,
        .max_pending_readings = (size_t)C.max_pending,
        .stored_topic = stored_topic,
        .retention_s = (int)C.retention_s,
        .republish_after_s = (int)C.republish_after_s,
        .retention_max_bytes = (size_t)C.retention_max_mib * 1048576,
        .max_unconfirmed = C.retention_s > 0 ? (size_t)C.max_unconfirmed : 0,
        .confirm_wait_ms = (int)C.confirm_wait_ms,
        .linger_ms = (int)C.linger_ms,
        .spool = a.spool,
        .spool_dir = spool_dir,
    };
    if (!(a.pub = publisher_create(a.base, &pc, err, sizeof err))) {
        log_error("startup.failed", "reason=\"%s\"", err);
        goto out;
    }
    if (!(a.http = evhttp_new(a.base))) {
        log_error("startup.failed", "reason=\"cannot create the HTTP server\"");
        goto out;
    }
    evhttp_set_timeout(a.http, (int)C.idle_timeout_s);
    evhttp_set_max_headers_size(a.http, 64 * 1024);
    /* On 413, read the rest of the body before closing: a reset would lose
     * the answer (and behind HAProxy, the client would see none at all). */
    evhttp_set_flags(a.http, EVHTTP_SERVER_LINGERING_CLOSE);
    struct http_api_config hc = {
        .max_body_bytes = (size_t)C.max_body,
        .limits = { .max_readings = (size_t)C.max_readings,
                    .max_future_us = (int64_t)C.max_future_s * 1000000 },
        .retry_after_s = (int)C.retry_after_s,
        .idle_timeout_s = (int)C.idle_timeout_s,
    };
    if (C.rate_per_sensor > 0 &&
        !(hc.limit = a.limit = ratelimit_new(C.rate_per_sensor, C.burst_per_sensor,
                                             (size_t)C.rate_max_sensors))) {
        log_error("startup.failed", "reason=\"out of memory (INGESTION_RATE_MAX_SENSORS)\"");
        goto out;
    }
    if (*C.api_keys_file && !(a.keys = apikeys_load(C.api_keys_file, err, sizeof err))) {
        log_error("startup.failed", "reason=\"INGESTION_API_KEYS_FILE: %s\"", err);
        goto out;
    }
    if (!(a.api = http_api_create(a.http, a.pub, &hc))) {
        log_error("startup.failed", "reason=\"out of memory\"");
        goto out;
    }
    http_api_set_keys(a.api, a.keys);
    /* Before the listener: once it listens, a client (or a supervisor
     * that waits for the port) may connect and send SIGTERM at once, which
     * must drain and exit as always, not kill us by the default action.
     * libevent runs these callbacks only in event_base_dispatch(). */
    a.sigterm = evsignal_new(a.base, SIGTERM, on_signal, &a);
    a.sigint = evsignal_new(a.base, SIGINT, on_signal, &a);
    a.sighup = evsignal_new(a.base, SIGHUP, on_reload, &a);
    if (!a.sigterm || !a.sigint || !a.sighup || event_add(a.sigterm, NULL) < 0 ||
        event_add(a.sigint, NULL) < 0 || event_add(a.sighup, NULL) < 0) {
        log_error("startup.failed", "reason=\"cannot install signal handlers\"");
        goto out;
    }
    if (!(a.listener = bind_listener(a.base, err, sizeof err)) ||
        !evhttp_bind_listener(a.http, a.listener)) {
        if (a.listener)
            snprintf(err, sizeof err, "cannot serve HTTP on the listener");
        log_error("startup.failed", "reason=\"%s\"", err);
        /* evhttp owns the listener once bound; unbound, we free it. */
        if (a.listener)
            evconnlistener_free(a.listener);
        goto out;
    }
    if (!(a.accept_pause = evtimer_new(a.base, accept_resume_cb, &a))) {
        log_error("startup.failed", "reason=\"out of memory\"");
        goto out;
    }
    g_app = &a;   /* the listener's user data is evhttp's, not ours */
    evconnlistener_set_error_cb(a.listener, accept_error_cb);
    log_info("startup.listening", "addr=%s port=%ld broker=%s topic=%s client_id=%s spool=%s "
             "api_keys=%s rate_per_sensor=%g sched=%s", C.listen, C.port, C.mqtt_url, topic,
             client_id, spool_dir, a.keys ? C.api_keys_file : "off", C.rate_per_sensor,
             C.sched_batch ? "batch" : "other");
    if (a.keys)
        log_info("auth.loaded", "file=%s keys=%zu", C.api_keys_file, apikeys_count(a.keys));

    event_base_dispatch(a.base);

    struct publisher_stats st;
    publisher_stats(a.pub, &st);
    log_info("shutdown.done", "requests=%llu unacknowledged_readings=%zu "
             "unconfirmed_messages=%zu confirmed=%llu republished=%llu expired=%llu",
             (unsigned long long)http_api_requests(a.api), publisher_outstanding(a.pub),
             st.retained, (unsigned long long)st.confirmed,
             (unsigned long long)st.republished, (unsigned long long)st.expired);
    rc = 0;
out:
    /* The timer and the signals use the publisher: gone before it is. */
    if (a.drain_tick)
        event_free(a.drain_tick);
    if (a.sigterm)
        event_free(a.sigterm);
    if (a.sigint)
        event_free(a.sigint);
    if (a.sighup)
        event_free(a.sighup);
    /* The publisher first: it answers (503) requests still waiting, which
     * must happen while evhttp still owns them. */
    publisher_destroy(a.pub, 2000);
    if (a.http && a.base) {
        /* Those answers, and any the loop's last turn gave (the drain ends
         * in the turn that answers the last request), are only queued: a
         * few turns of the loop write them before evhttp_free closes the
         * connections. A request arriving meanwhile gets 503. */
        http_api_detach(a.api);
        for (int i = 0; i < 4; i++)
            event_base_loop(a.base, EVLOOP_NONBLOCK);
    }
    if (a.http)
        evhttp_free(a.http);   /* the connections and the listener it was given */
    if (a.accept_pause)
        event_free(a.accept_pause);
    http_api_destroy(a.api);
    apikeys_free(a.keys);
    ratelimit_free(a.limit);
    spool_close(a.spool);
    if (a.base)
        event_base_free(a.base);
    libevent_global_shutdown();
    return rc;
}
