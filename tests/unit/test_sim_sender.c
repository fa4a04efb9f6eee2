/* test_sim_sender.c -- unit tests for sensor-sim/sender against an
 * in-process evhttp server that answers from a script: a retry carries the
 * very same body (so the same ts), 503 / dropped connections are retried
 * and 400 is not, max_attempts gives up, accepted readings reach the
 * accepted log, give_up_all cancels what is on the wire, and the due latency
 * of an accepted request spans every wait since it was due. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "../../sensor-sim/acclog.h"
#include "../../sensor-sim/sender.h"
#include "../../sensor-sim/stats.h"
#include "log.h"
#include "ts.h"

/* What the fake server does with the next requests, in order; after the
 * script it answers 202. */
enum act { A202 = 0, A503, A429, A408, A400, A501, ADROP, AHANG };

struct fake {
    struct event_base *base;
    struct evhttp *http;
    int port;
    enum act script[16];
    int nscript, next;
    char bodies[16][512];          /* bodies seen, in order */
    int nbodies;
    struct evhttp_request *hung;
};

static void fake_cb(struct evhttp_request *req, void *arg)
{
    struct fake *f = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    if (f->nbodies < 16) {
        size_t n = evbuffer_get_length(in);
        if (n > 511)
            n = 511;
        evbuffer_copyout(in, f->bodies[f->nbodies], n);
        f->bodies[f->nbodies][n] = '\0';
        f->nbodies++;
    }
    enum act a = f->next < f->nscript ? f->script[f->next] : A202;
    f->next++;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    switch (a) {
    case A202:
        evbuffer_add_printf(out, "{\"accepted\":1}");
        evhttp_send_reply(req, 202, "Accepted", NULL);
        break;
    case A503:
    case A429:
        evhttp_add_header(oh, "Retry-After", "0");
        evhttp_send_reply(req, a == A503 ? 503 : 429, "Busy", NULL);
        break;
    case A408:   /* HAProxy's "send it again, whole" */
        evhttp_send_reply(req, 408, "Request Timeout", NULL);
        break;
    case A501:
        evhttp_send_reply(req, 501, "Not Implemented", NULL);
        break;
    case A400:
        evbuffer_add_printf(out, "{\"error\":\"bad \\\"thing\\\"\"}");
        evhttp_send_reply(req, 400, "Bad Request", NULL);
        break;
    case ADROP: {
        /* No answer: the client sees the connection close. */
        struct evhttp_connection *c = evhttp_request_get_connection(req);
        shutdown(bufferevent_getfd(evhttp_connection_get_bufferevent(c)), SHUT_RDWR);
        break;
    }
    case AHANG:
        f->hung = req;
        break;
    }
}

static void fake_start(struct fake *f, struct event_base *base)
{
    memset(f, 0, sizeof *f);
    f->base = base;
    f->http = evhttp_new(base);
    assert_non_null(f->http);
    evhttp_set_gencb(f->http, fake_cb, f);
    struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
    assert_non_null(h);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(h), (struct sockaddr *)&ss, &len), 0);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

struct env {
    struct event_base *base;
    struct fake fake;
    struct sim_stats *stats;
    struct sender *snd;
    struct acclog *acclog;
    char acc_path[64];
};

static void on_resolved(void *arg)
{
    struct env *e = arg;
    if (sender_outstanding(e->snd) == 0)
        event_base_loopbreak(e->base);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static void env_start(struct env *e, unsigned max_attempts, double timeout_s)
{
    char url[100], err[200];
    memset(e, 0, sizeof *e);
    e->base = event_base_new();
    assert_non_null(e->base);
    fake_start(&e->fake, e->base);
    e->stats = calloc(1, sizeof *e->stats);
    assert_non_null(e->stats);
    strcpy(e->acc_path, "/tmp/test_sim_sender_XXXXXX");
    int fd = mkstemp(e->acc_path);
    assert_true(fd >= 0);
    close(fd);
    e->acclog = acclog_open(e->acc_path, err, sizeof err);
    assert_non_null(e->acclog);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/readings", e->fake.port);
    struct sender_cfg cfg = { url, 2, max_attempts, timeout_s, e->acclog, 1, NULL };
    e->snd = sender_create(e->base, &cfg, e->stats, err, sizeof err);
    if (!e->snd)
        fail_msg("sender_create: %s", err);
    sender_on_resolved(e->snd, on_resolved, e);
}

/* Runs the loop until nothing is outstanding (or 10 s). */
static void env_run(struct env *e)
{
    struct event *t = evtimer_new(e->base, timeout_cb, e->base);
    struct timeval tv = { 10, 0 };
    evtimer_add(t, &tv);
    event_base_dispatch(e->base);
    event_free(t);
}

/* A request of one reading, not yet submitted. */
static struct sender_req *one_reading(struct env *e, const char *body, const char *csv)
{
    struct sender_req *r = sender_req_new(e->snd);
    sbuf_adds(&r->body, body);
    sbuf_adds(&r->csv, csv);
    r->n = 1;
    return r;
}

static void submit(struct env *e, const char *body, const char *csv)
{
    sender_submit(e->snd, one_reading(e, body, csv));
}

static char *acc_contents(struct env *e)
{
    static char buf[4096];
    char err[200];
    assert_int_equal(acclog_flush(e->acclog, err, sizeof err), 0);
    FILE *fp = fopen(e->acc_path, "r");
    assert_non_null(fp);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void env_stop(struct env *e)
{
    char err[200];
    sender_destroy(e->snd);
    acclog_close(e->acclog, err, sizeof err);
    unlink(e->acc_path);
    evhttp_free(e->fake.http);
    event_base_free(e->base);
    free(e->stats);
}

static const char BODY[] =
    "{\"sensor_id\":\"s-1\",\"type\":\"temperature\",\"unit\":\"C\",\"value\":21.5,"
    "\"ts\":\"2026-11-22T10:00:00.123456Z\"}";
static const char CSV[] = "s-1,temperature,2026-11-22T10:00:00.123456Z,21.5,C\n";

static void test_retries_resend_the_same_body(void **state)
{
    (void)state;
    struct env e;
    env_start(&e, 8, 5);
    enum act script[] = { A503, ADROP, A429, A408, A202 };
    memcpy(e.fake.script, script, sizeof script);
    e.fake.nscript = 5;
    submit(&e, BODY, CSV);
    env_run(&e);

    assert_int_equal(e.fake.nbodies, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(e.fake.bodies[i], BODY);
    struct counters *c = &e.stats->c;
    assert_true(c->sent == 1 && c->accepted == 1 && c->failed == 0 && c->retried == 4);
    assert_true(c->requests == 5 && c->http_5xx == 1 && c->http_4xx == 2 &&
                c->conn_errors == 1);
    assert_string_equal(acc_contents(&e), CSV);
    env_stop(&e);
}

static void final_answer(enum act a, int is_5xx)
{
    struct env e;
    env_start(&e, 8, 5);
    e.fake.script[0] = a;
    e.fake.nscript = 1;
    submit(&e, BODY, CSV);
    env_run(&e);
    assert_int_equal(e.fake.nbodies, 1);
    struct counters *c = &e.stats->c;
    assert_true(c->sent == 1 && c->accepted == 0 && c->failed == 1 && c->retried == 0);
    assert_true(is_5xx ? c->http_5xx == 1 : c->http_4xx == 1);
    /* Answered, so an attempt latency; not accepted, so no due latency. */
    assert_true(e.stats->interval.count == 1 && e.stats->due_interval.count == 0);
    assert_string_equal(acc_contents(&e), "");
    env_stop(&e);
}

/* stderr, captured into a file for the test that reads its log line;
 * restored by the teardown even when an assertion jumped out. */
static int saved_stderr = -1;
static FILE *captured;

static int capture_stderr(void **state)
{
    (void)state;
    captured = tmpfile();
    assert_non_null(captured);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(captured), STDERR_FILENO);
    log_init("test", "sender", LOG_WARN);
    return 0;
}

static int restore_stderr(void **state)
{
    (void)state;
    log_init("test", "sender", LOG_ERROR);
    if (saved_stderr >= 0) {
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
    }
    if (captured)
        fclose(captured);
    captured = NULL;
    return 0;
}

static void test_400_is_final(void **state)
{
    (void)state;
    final_answer(A400, 0);
    /* ... and logged with the server's answer, whose quotes become ' so
     * that the value ends at its own closing quote (LOG_FORMAT=json too). */
    char buf[2048];
    rewind(captured);
    size_t n = fread(buf, 1, sizeof buf - 1, captured);
    buf[n] = '\0';
    assert_non_null(strstr(buf, " sim.rejected status=400 "));
    assert_non_null(strstr(buf, " body=\"{'error':'bad \\'thing\\''}\"\n"));
}

/* 501: the method itself is refused; sending it again cannot help. */
static void test_501_is_final(void **state)
{
    (void)state;
    final_answer(A501, 1);
}

static void test_gives_up_after_max_attempts(void **state)
{
    (void)state;
    struct env e;
    env_start(&e, 3, 5);
    for (int i = 0; i < 10; i++)
        e.fake.script[i] = A503;
    e.fake.nscript = 10;
    submit(&e, BODY, CSV);
    env_run(&e);
    assert_int_equal(e.fake.nbodies, 3);
    struct counters *c = &e.stats->c;
    assert_true(c->sent == 1 && c->accepted == 0 && c->failed == 1 && c->retried == 2);
    assert_true(sender_outstanding(e.snd) == 0);
    env_stop(&e);
}

static void test_timeout_is_retried(void **state)
{
    (void)state;
    struct env e;
    env_start(&e, 4, 0.2);
    e.fake.script[0] = AHANG;
    e.fake.nscript = 1;
    submit(&e, BODY, CSV);
    env_run(&e);
    assert_int_equal(e.fake.nbodies, 2);
    assert_string_equal(e.fake.bodies[1], BODY);
    assert_true(e.stats->c.accepted == 1 && e.stats->c.conn_errors == 1);
    env_stop(&e);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)fd;
    (void)what;
    /* One on the wire (hung), one waiting for its first post: the first
     * fails, the second was never sent. */
    assert_true(sender_outstanding(e->snd) == 3);
    assert_true(sender_unposted(e->snd) == 1);
    uint64_t failed = sender_give_up_all(e->snd, "shutdown");
    assert_true(failed == 2);
    assert_true(sender_outstanding(e->snd) == 0);
    event_base_loopbreak(e->base);
}

static void test_give_up_all_cancels(void **state)
{
    (void)state;
    struct env e;
    env_start(&e, 8, 30);
    e.fake.script[0] = AHANG;
    e.fake.script[1] = AHANG;
    e.fake.nscript = 2;
    submit(&e, BODY, CSV);
    submit(&e, BODY, CSV);
    submit(&e, BODY, CSV);        /* 2 connections: this one waits */
    struct event *t = evtimer_new(e.base, stop_cb, &e);
    struct timeval tv = { 0, 300000 };
    evtimer_add(t, &tv);
    event_base_dispatch(e.base);
    event_free(t);
    struct counters *c = &e.stats->c;
    assert_true(c->sent == 2 && c->failed == 2 && c->unsent == 1 && c->accepted == 0);
    env_stop(&e);
}

/* A request due 200 ms before it was submitted, refused once (503, a
 * backoff) and then accepted: two attempt latencies, one due latency, and
 * the due latency covers the 200 ms and both attempts. */
static void test_due_latency_spans_every_wait(void **state)
{
    (void)state;
    struct env e;
    env_start(&e, 8, 5);
    e.fake.script[0] = A503;
    e.fake.nscript = 1;
    struct sender_req *r = one_reading(&e, BODY, CSV);
    r->due_mono_us = ts_mono_us() - 200000;
    sender_submit(e.snd, r);
    env_run(&e);
    assert_true(e.stats->c.accepted == 1 && e.stats->c.requests == 2);
    const struct hist *att = &e.stats->interval, *due = &e.stats->due_interval;
    assert_int_equal(att->count, 2);
    assert_int_equal(due->count, 1);
    assert_true(due->max >= 200000);
    assert_true(due->max >= att->max);
    env_stop(&e);
}

int main(void)
{
    log_init("test", "sender", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retries_resend_the_same_body),
        cmocka_unit_test_setup_teardown(test_400_is_final, capture_stderr, restore_stderr),
        cmocka_unit_test(test_501_is_final),
        cmocka_unit_test(test_gives_up_after_max_attempts),
        cmocka_unit_test(test_timeout_is_retried),
        cmocka_unit_test(test_give_up_all_cancels),
        cmocka_unit_test(test_due_latency_spans_every_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
