/* main.c -- sensor-sim: a fleet of virtual sensors posting readings over
 * HTTP, and the benchmarks' load generator.
 *
 * Lifecycle: read the config table, build the fleet or open the replay
 * file (validating every row first), start the generator and the sender on
 * one event loop, print sim.stats every interval, stop on count, duration,
 * end of replay or SIGINT/SIGTERM, wait (bounded) for outstanding readings,
 * print sim.summary.
 *
 * Exit status: 0 when every reading was accepted, 1 when some were given up
 * or rejected (or the accepted log could not be written), 2 for a bad
 * configuration or replay file. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "acclog.h"
#include "cfg.h"
#include "fleet.h"
#include "gen.h"
#include "log.h"
#include "payload.h"
#include "replay.h"
#include "rng.h"
#include "sender.h"
#include "stats.h"
#include "ts.h"

#define ACCLOG_FLUSH_US 200000
/* Memory bound: readings held at once (about 300 bytes each). */
#define MAX_OUTSTANDING_CAP 200000

struct config {
    const char *url;
    long sensors;
    double interval_s;
    long seed;
    long count;
    double duration_s;
    double rate;
    long connections;
    long batch;
    const char *replay;
    long max_attempts;
    double stats_interval_s;
    const char *accepted_log;
    const char *tags;
    double timeout_s;
    double drain_s;
    const char *log_level;
    const char *log_format;
    const char *api_key;
};

static struct config C;

static const struct cfg_opt OPTS[] = {
    { "url", "SIM_URL", CFG_STR, &C.url, "http://127.0.0.1:8080/v1/readings", 1, 2048,
      "where readings are POSTed (http:// only)" },
    { "sensors", "SIM_SENSORS", CFG_INT, &C.sensors, "10", 1, FLEET_MAX_SENSORS,
      "virtual sensors in the fleet" },
    { "interval", "SIM_INTERVAL_S", CFG_DOUBLE, &C.interval_s, "10", 0.001, 86400,
      "fleet mode: seconds between two readings of one sensor (jittered +-20%)" },
    { "seed", "SIM_SEED", CFG_INT, &C.seed, "0", 0, 1e15,
      "0: random ids; else ids and values derived from it (repeatable runs)" },
    { "count", "SIM_COUNT", CFG_INT, &C.count, "0", 0, 1e15,
      "stop after this many readings (0: no limit)" },
    { "duration", "SIM_DURATION_S", CFG_DOUBLE, &C.duration_s, "0", 0, 31536000,
      "stop after this many seconds (0: no limit)" },
    { "rate", "SIM_RATE", CFG_DOUBLE, &C.rate, "0", 0, 10000000,
      "load mode: readings/s on an open-loop clock (0: fleet mode); paces --replay" },
    { "connections", "SIM_CONNECTIONS", CFG_INT, &C.connections, "4", 1, 1024,
      "keep-alive HTTP connections (one request in flight each)" },
    { "batch", "SIM_BATCH", CFG_INT, &C.batch, "1", 1, 1000,
      "readings per POST (1: a JSON object, more: an array)" },
    { "replay", "SIM_REPLAY", CFG_STR, &C.replay, "", 0, 4096,
      "post the rows of this CSV (ts,sensor_id,type,value,unit) instead of the fleet" },
    { "max-attempts", "SIM_MAX_ATTEMPTS", CFG_INT, &C.max_attempts, "8", 1, 100,
      "attempts per request, the first included, before giving up" },
    { "stats-interval", "SIM_STATS_INTERVAL_S", CFG_DOUBLE, &C.stats_interval_s, "5", 0, 3600,
      "seconds between sim.stats lines (0: none)" },
    { "accepted-log", "SIM_ACCEPTED_LOG", CFG_STR, &C.accepted_log, "", 0, 4096,
      "append sensor_id,type,ts,value,unit for each reading answered 2xx" },
    { "tags", "SIM_TAGS", CFG_STR, &C.tags, "", 0, 4096,
      "k=v,k2=v2 tags added to every reading" },
    { "timeout", "SIM_TIMEOUT_S", CFG_DOUBLE, &C.timeout_s, "10", 0.01, 600,
      "per-attempt HTTP timeout (connect, send, answer)" },
    { "drain-timeout", "SIM_DRAIN_S", CFG_DOUBLE, &C.drain_s, "8", 0, 600,
      "after a signal or --duration, wait this long for outstanding readings" },
    { "api-key", "SIM_API_KEY", CFG_STR, &C.api_key, "", 0, 128,
      "sent as X-API-Key on every request (ingestion's INGESTION_API_KEYS_FILE); empty = none" },
    { "log-level", "LOG_LEVEL", CFG_STR, &C.log_level, "info", 1, 16,
      "debug, info, warn or error" },
    { "log-format", "LOG_FORMAT", CFG_STR, &C.log_format, "text", 1, 8,
      "text (one line per event, key=value) or json (one object per line)" },
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

static const char SUMMARY[] =
    "sensor-sim -- simulate a fleet of sensors posting readings, or generate load.\n"
    "Modes: fleet (default), load (--rate > 0), replay (--replay FILE.csv).";

struct app {
    struct event_base *base;
    struct sim_stats stats;
    struct fleet *fleet;
    struct replay *rp;
    struct acclog *acclog;
    struct sender *snd;
    struct gen *gen;
    struct sbuf tags;

    struct event *sigint_ev, *sigterm_ev, *stats_ev, *flush_ev, *duration_ev, *drain_ev;
    int64_t start_us, last_stats_us;
    uint64_t last_behind;        /* gen_behind() at the last sim.stats */
    int stopping;            /* no more readings are made */
    int draining;            /* bounded: the drain deadline is armed */
    int exit_code_extra;     /* 1 when something besides readings failed */
    const char *mode_name;
};

/* --- libevent's own messages -------------------------------------------- */

static void libevent_log(int severity, const char *msg)
{
    /* evhttp warns on every refused connect; our sim.gave_up and sim.stats
     * already say that, once, so its lines are debug. */
    if (severity >= EVENT_LOG_ERR)
        log_warn("libevent.error", "msg=\"%s\"", msg);
    else
        log_debug("libevent.msg", "severity=%d msg=\"%s\"", severity, msg);
}

/* --- stopping ------------------------------------------------------------ */

static void check_done(void *arg)
{
    struct app *a = arg;
    if (a->gen)
        gen_kick(a->gen);
    if (a->stopping && sender_outstanding(a->snd) == 0)
        event_base_loopbreak(a->base);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void)fd;
    (void)what;
    sender_give_up_all(a->snd, "shutdown");
    event_base_loopbreak(a->base);
}

/* Stops making readings. bounded (a signal, --duration): also stop
 * sending, so what never left is dropped (unsent, not a failure), and what
 * was posted gets its answer or its retries until the drain deadline.
 * Unbounded (count reached, end of the replay): everything made is
 * delivered, max_attempts bounds how long that takes. A bounded stop may
 * follow an unbounded one. */
static void begin_stop(struct app *a, const char *reason, int bounded)
{
    if (a->draining || (a->stopping && !bounded))
        return;
    a->stopping = 1;
    gen_stop(a->gen);
    uint64_t dropped = 0;
    if (bounded) {
        a->draining = 1;
        dropped = sender_drop_unposted(a->snd);
        struct timeval tv = { (time_t)C.drain_s,
                              (suseconds_t)((C.drain_s - floor(C.drain_s)) * 1e6) };
        event_add(a->drain_ev, &tv);
    }
    log_info("sim.stopping", "reason=%s in_flight=%" PRIu64 " unsent=%" PRIu64 " drain_s=%g",
             reason, sender_outstanding(a->snd), dropped, bounded ? C.drain_s : -1.0);
    check_done(a);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct app *a = arg;
    (void)what;
    if (a->draining) {
        /* A second signal: the operator does not want to wait. */
        log_info("sim.stopping", "reason=second_signal in_flight=%" PRIu64,
                 sender_outstanding(a->snd));
        drain_cb(-1, 0, a);
        return;
    }
    begin_stop(a, sig == SIGINT ? "sigint" : "sigterm", 1);
}

static void duration_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    begin_stop(arg, "duration", 1);
}

static void gen_finished(void *arg, int failed)
{
    struct app *a = arg;
    if (failed)
        a->exit_code_extra = 1;
    /* Count or end of file: what was made is delivered, however long the
     * retries take (max_attempts bounds it). */
    begin_stop(a, failed ? "replay_error" : (a->rp ? "replay_done" : "count"), 0);
}

/* --- stats --------------------------------------------------------------- */

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

static void flush_acclog(struct app *a)
{
    char err[200];
    if (a->acclog && acclog_flush(a->acclog, err, sizeof err) != 0) {
        log_error("sim.accepted_log_failed", "path=%s error=\"%s\"", C.accepted_log, err);
        a->exit_code_extra = 1;
    }
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_acclog(arg);
}

static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct counters d;
    struct hist h, dh;
    (void)fd;
    (void)what;
    int64_t now = ts_mono_us();
    double secs = (double)(now - a->last_stats_us) / 1e6;
    a->last_stats_us = now;
    if (secs <= 0)
        secs = 1e-6;
    stats_roll(&a->stats, &d, &h, &dh);
    uint64_t suppressed = sender_take_suppressed(a->snd);
    /* Offered: what the schedule asked for in the interval, made or not
     * (a generator out of room falls behind instead of making them). */
    uint64_t behind = gen_behind(a->gen);
    double offered = (double)d.sent + (double)behind - (double)a->last_behind;
    a->last_behind = behind;
    log_info("sim.stats",
             "sent=%" PRIu64 " accepted=%" PRIu64 " retried=%" PRIu64 " failed=%" PRIu64
             " in_flight=%" PRIu64 " queued=%" PRIu64 " behind=%" PRIu64
             " offered_rate=%.1f rate=%.1f req_rate=%.1f p50_ms=%.3f p99_ms=%.3f"
             " due_p50_ms=%.3f due_p99_ms=%.3f"
             " conn_errors=%" PRIu64 " http_5xx=%" PRIu64 " http_4xx=%" PRIu64
             " total_accepted=%" PRIu64 " log_suppressed=%" PRIu64,
             d.sent, d.accepted, d.retried, d.failed,
             sender_outstanding(a->snd) - sender_unposted(a->snd), sender_unposted(a->snd),
             behind, (offered > 0 ? offered : 0) / secs, (double)d.accepted / secs,
             (double)d.requests / secs,
             ms(hist_quantile(&h, 0.50)), ms(hist_quantile(&h, 0.99)),
             ms(hist_quantile(&dh, 0.50)), ms(hist_quantile(&dh, 0.99)),
             d.conn_errors, d.http_5xx, d.http_4xx, a->stats.c.accepted, suppressed);
}

static int summary(struct app *a)
{
    struct counters d;
    stats_roll(&a->stats, &d, NULL, NULL);
    const struct counters *t = &a->stats.c;
    const struct hist *h = &a->stats.total, *dh = &a->stats.due_total;
    double secs = (double)(ts_mono_us() - a->start_us) / 1e6;
    int code = (t->failed || a->exit_code_extra) ? 1 : 0;
    log_info("sim.summary",
             "mode=%s elapsed_s=%.3f sent=%" PRIu64 " accepted=%" PRIu64
             " retried=%" PRIu64 " failed=%" PRIu64 " unsent=%" PRIu64 " requests=%" PRIu64
             " conn_errors=%" PRIu64 " http_5xx=%" PRIu64 " http_4xx=%" PRIu64
             " rate=%.1f req_rate=%.1f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f"
             " due_p50_ms=%.3f due_p99_ms=%.3f due_p999_ms=%.3f exit=%d",
             a->mode_name, secs, t->sent, t->accepted, t->retried, t->failed, t->unsent,
             t->requests,
             t->conn_errors, t->http_5xx, t->http_4xx,
             secs > 0 ? (double)t->accepted / secs : 0.0,
             secs > 0 ? (double)t->requests / secs : 0.0,
             ms(hist_quantile(h, 0.50)), ms(hist_quantile(h, 0.99)),
             ms(hist_quantile(h, 0.999)), ms(h->max),
             ms(hist_quantile(dh, 0.50)), ms(hist_quantile(dh, 0.99)),
             ms(hist_quantile(dh, 0.999)), code);
    return code;
}

/* --- setup --------------------------------------------------------------- */

/* The whole replay file is read once before anything is sent: a bad row on
 * line 90 000 must not leave 89 999 readings posted. */
static int validate_replay(struct replay *rp, uint64_t *rows)
{
    char err[300];
    struct sim_reading rd;
    int rc;
    *rows = 0;
    while ((rc = replay_next(rp, &rd, err, sizeof err)) > 0)
        (*rows)++;
    if (rc < 0 || replay_rewind(rp, err, sizeof err) != 0) {
        fprintf(stderr, "sensor-sim: %s: %s\n", C.replay, err);
        return -1;
    }
    if (*rows == 0) {   /* a run that posts nothing is a mistake, not a success */
        fprintf(stderr, "sensor-sim: %s: no readings in it\n", C.replay);
        return -1;
    }
    return 0;
}

static uint64_t max_outstanding(enum gen_mode mode)
{
    uint64_t keep_busy = 4 * (uint64_t)C.batch * (uint64_t)C.connections;
    uint64_t want = keep_busy;
    if (mode == GEN_FLEET)
        want = 2 * (uint64_t)C.sensors;
    else if (C.rate > 0)
        /* A quarter second of load absorbs hiccups; a longer queue would
         * only hide the wait (it is not in the latency) and cost memory.
         * Past it, the open-loop schedule records how far behind it is
         * and catches up when the server does. A rate beyond what the
         * server takes (a saturating benchmark run) would make that a huge
         * backlog: 16 times what keeps every connection busy is plenty. */
        want = (uint64_t)(C.rate / 4) < 16 * keep_busy ? (uint64_t)(C.rate / 4) : 16 * keep_busy;
    if (want < keep_busy)
        want = keep_busy;
    return want < MAX_OUTSTANDING_CAP ? want : MAX_OUTSTANDING_CAP;
}

static struct event *timer(struct app *a, event_callback_fn fn, int persist, double secs)
{
    struct event *ev = event_new(a->base, -1, persist ? EV_PERSIST : 0, fn, a);
    if (!ev) {
        fputs("sensor-sim: out of memory\n", stderr);
        exit(1);
    }
    if (secs > 0) {
        struct timeval tv = { (time_t)secs, (suseconds_t)((secs - floor(secs)) * 1e6) };
        event_add(ev, &tv);
    }
    return ev;
}

int main(int argc, char **argv)
{
    struct app a;
    char err[400];
    int code = 2;
    uint64_t seed;
    enum log_level level;
    enum gen_mode mode;
    uint64_t replay_rows = 0;

    memset(&a, 0, sizeof a);
    int rc = cfg_load(OPTS, NOPTS, argc, argv, "sensor-sim", SUMMARY, err, sizeof err);
    if (rc == CFG_HELP)
        return 0;
    if (rc != CFG_OK) {
        fprintf(stderr, "sensor-sim: %s\n", err);
        return 2;
    }
    if (log_level_parse(C.log_level, &level) != 0) {
        fprintf(stderr, "sensor-sim: LOG_LEVEL (--log-level): \"%s\" is not debug, info, warn or error\n",
                C.log_level);
        return 2;
    }
    if (log_set_format(C.log_format) < 0) {
        fprintf(stderr, "sensor-sim: LOG_FORMAT (--log-format): \"%s\" is not text or json\n",
                C.log_format);
        return 2;
    }
    /* evhttp drops a header value it cannot send (CR, LF) without a word:
     * every request would then go without its key. */
    for (const char *k = C.api_key; *k; k++)
        if (*k < 0x21 || *k > 0x7e) {
            fprintf(stderr, "sensor-sim: SIM_API_KEY (--api-key): only visible ASCII characters "
                    "(no spaces) can go in the X-API-Key header\n");
            return 2;
        }
    if (payload_tags(C.tags, &a.tags, err, sizeof err) != 0) {
        fprintf(stderr, "sensor-sim: SIM_TAGS (--tags): %s\n", err);
        goto out;
    }

    if (C.seed) {
        seed = (uint64_t)C.seed;
    } else if (rng_os_bytes(&seed, sizeof seed) != 0) {
        fprintf(stderr, "sensor-sim: cannot read random bytes: %s\n", strerror(errno));
        goto out;
    }
    char instance[40];
    if (C.seed)
        snprintf(instance, sizeof instance, "sim-%ld", C.seed);
    else
        snprintf(instance, sizeof instance, "sim-%06" PRIx64, seed & 0xffffff);
    log_init("sensor-sim", instance, level);
    event_set_log_callback(libevent_log);
    /* A peer that closes while we write must be an error, not a death. */
    signal(SIGPIPE, SIG_IGN);

    mode = C.replay[0] ? GEN_REPLAY : C.rate > 0 ? GEN_LOAD : GEN_FLEET;
    a.mode_name = mode == GEN_REPLAY ? "replay" : mode == GEN_LOAD ? "load" : "fleet";

    if (mode == GEN_REPLAY) {
        a.rp = replay_open(C.replay, err, sizeof err);
        if (!a.rp) {
            fprintf(stderr, "sensor-sim: SIM_REPLAY (--replay): %s\n", err);
            goto out;
        }
        if (validate_replay(a.rp, &replay_rows) != 0)
            goto out;
    } else {
        a.fleet = fleet_create((size_t)C.sensors, seed, C.seed == 0, err, sizeof err);
        if (!a.fleet) {
            fprintf(stderr, "sensor-sim: %s\n", err);
            goto out;
        }
    }
    if (C.accepted_log[0]) {
        a.acclog = acclog_open(C.accepted_log, err, sizeof err);
        if (!a.acclog) {
            fprintf(stderr, "sensor-sim: SIM_ACCEPTED_LOG (--accepted-log): %s\n", err);
            goto out;
        }
    }

    /* The changelist folds evhttp's per-request read/write toggles into one
     * epoll_ctl per change between two epoll_wait calls: 2 per request
     * instead of 6 (measured with strace -c), the largest syscall cost of
     * the load generator. */
    struct event_config *ecfg = event_config_new();
    if (ecfg) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        /* Paced modes tick at sub-millisecond intervals (see gen.h). */
        if (C.rate > 0)
            event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        a.base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    if (!a.base)
        a.base = event_base_new();
    if (!a.base) {
        fprintf(stderr, "sensor-sim: cannot create the event loop\n");
        goto out;
    }
    struct sender_cfg scfg = {
        .url = C.url,
        .connections = (unsigned)C.connections,
        .max_attempts = (unsigned)C.max_attempts,
        .timeout_s = C.timeout_s,
        .api_key = C.api_key,
        .acclog = a.acclog,
        .seed = seed,
    };
    a.snd = sender_create(a.base, &scfg, &a.stats, err, sizeof err);
    if (!a.snd) {
        fprintf(stderr, "sensor-sim: SIM_URL (--url): %s\n", err);
        goto out;
    }
    struct gen_cfg gcfg = {
        .mode = mode,
        .rate = C.rate,
        .interval_s = C.interval_s,
        .batch = (unsigned)C.batch,
        .count = (uint64_t)C.count,
        .max_outstanding = max_outstanding(mode),
        .with_csv = a.acclog != NULL,
        .fmt = { a.tags.p ? a.tags.p : "", a.tags.len },
    };
    a.gen = gen_create(a.base, &gcfg, a.fleet, a.rp, a.snd, err, sizeof err);
    if (!a.gen) {
        fprintf(stderr, "sensor-sim: %s\n", err);
        goto out;
    }
    sender_on_resolved(a.snd, check_done, &a);
    gen_on_finished(a.gen, gen_finished, &a);

    a.sigint_ev = evsignal_new(a.base, SIGINT, signal_cb, &a);
    a.sigterm_ev = evsignal_new(a.base, SIGTERM, signal_cb, &a);
    if (!a.sigint_ev || !a.sigterm_ev || event_add(a.sigint_ev, NULL) || event_add(a.sigterm_ev, NULL)) {
        fprintf(stderr, "sensor-sim: cannot install signal handlers\n");
        goto out;
    }
    a.drain_ev = timer(&a, drain_cb, 0, 0);
    a.stats_ev = timer(&a, stats_cb, 1, C.stats_interval_s);
    if (a.acclog)
        a.flush_ev = timer(&a, flush_cb, 1, ACCLOG_FLUSH_US / 1e6);
    if (C.duration_s > 0)
        a.duration_ev = timer(&a, duration_cb, 0, C.duration_s);

    log_info("sim.started",
             "mode=%s url=%s sensors=%ld interval_s=%g rate=%g batch=%ld connections=%ld"
             " count=%ld duration_s=%g max_attempts=%ld seed=%" PRIu64 " replay=%s"
             " replay_rows=%" PRIu64 " accepted_log=%s max_outstanding=%" PRIu64,
             a.mode_name, C.url, mode == GEN_REPLAY ? 0L : C.sensors, C.interval_s, C.rate,
             C.batch, C.connections, C.count, C.duration_s, C.max_attempts, seed,
             C.replay[0] ? C.replay : "-", replay_rows,
             C.accepted_log[0] ? C.accepted_log : "-", gcfg.max_outstanding);

    a.start_us = a.last_stats_us = ts_mono_us();
    gen_start(a.gen);
    event_base_dispatch(a.base);

    if (sender_outstanding(a.snd))             /* loop ended another way */
        sender_give_up_all(a.snd, "shutdown");
    flush_acclog(&a);
    code = summary(&a);

out:
    if (a.acclog && acclog_close(a.acclog, err, sizeof err) != 0) {
        log_error("sim.accepted_log_failed", "path=%s error=\"%s\"", C.accepted_log, err);
        if (code == 0)
            code = 1;
    }
    gen_destroy(a.gen);
    sender_destroy(a.snd);
    struct event *evs[] = { a.sigint_ev, a.sigterm_ev, a.stats_ev, a.flush_ev,
                            a.duration_ev, a.drain_ev };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (a.base)
        event_base_free(a.base);
    fleet_destroy(a.fleet);
    replay_close(a.rp);
    sbuf_free(&a.tags);
    return code;
}
