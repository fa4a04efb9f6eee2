/* null_server.c -- the benchmark's "ceiling" backend: an evhttp server that
 * does nothing. POST anything: 202 with a fixed JSON body, the body unread
 * beyond what evhttp already buffered; GET /healthz and /readyz: 200 (so
 * HAProxy's checks pass). It stands where ingestion stands, to measure what
 * the load generator and HAProxy alone can pass on this machine.
 *
 *   bench-null-server PORT [DELAY_US]
 *
 * With DELAY_US, a POST is answered as ingestion answers, later: all that
 * arrived since the first one waiting get their 202 together, DELAY_US after
 * it (ingestion answers a message's readings together on the broker's
 * PUBACK). What answering later costs evhttp and HAProxy, apart from all
 * the pipeline's work (bench.py --null-delay-us; bench/NOTES.md, "Why 0.6 was hard").
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAITING_MAX 4096

static struct {
    struct event *timer;
    struct timeval delay;
    struct evhttp_request *req[WAITING_MAX];
    int n;
} waiting;

static void answer(struct evhttp_request *req)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        evbuffer_add_printf(out, "{\"accepted\":1}");
        evhttp_send_reply(req, 202, "Accepted", out);
    } else {
        evbuffer_add_printf(out, "{\"status\":\"ok\"}");
        evhttp_send_reply(req, 200, "OK", out);
    }
}

static void answer_waiting(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    for (int i = 0; i < waiting.n; i++)
        answer(waiting.req[i]);
    waiting.n = 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    if (!waiting.timer || evhttp_request_get_command(req) != EVHTTP_REQ_POST ||
        waiting.n == WAITING_MAX) {
        answer(req);
        return;
    }
    if (waiting.n++ == 0)
        evtimer_add(waiting.timer, &waiting.delay);
    waiting.req[waiting.n - 1] = req;
}

int main(int argc, char **argv)
{
    int rc = 1;
    long port = argc == 2 || argc == 3 ? strtol(argv[1], NULL, 10) : 0;
    long delay_us = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    if (port < 1 || port > 65535 || delay_us < 0 || delay_us > 1000000) {
        fprintf(stderr, "usage: bench-null-server PORT [DELAY_US (0..1000000)]\n");
        return 2;
    }
    /* As sensor-sim and ingestion: one epoll_ctl per fd per loop turn. */
    struct event_config *ecfg = event_config_new();
    struct event_base *base = NULL;
    if (ecfg) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        fprintf(stderr, "bench-null-server: out of memory\n");
        goto out;
    }
    if (delay_us) {
        waiting.delay.tv_sec = delay_us / 1000000;
        waiting.delay.tv_usec = delay_us % 1000000;
        if (!(waiting.timer = evtimer_new(base, answer_waiting, NULL))) {
            fprintf(stderr, "bench-null-server: out of memory\n");
            goto out;
        }
    }
    evhttp_set_gencb(http, handle, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)port) != 0) {
        fprintf(stderr, "bench-null-server: cannot listen on 127.0.0.1:%ld\n", port);
        goto out;
    }
    rc = event_base_dispatch(base) == 0 ? 0 : 1;
out:
    if (waiting.timer)
        event_free(waiting.timer);
    if (http)
        evhttp_free(http);
    if (base)
        event_base_free(base);
    return rc;
}
