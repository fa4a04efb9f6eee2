/* http.c -- storage's HTTP listener: one event_base on one thread, apart
 * from paho's, so a scrape never waits for a commit and a slow scraper never
 * delays one. */
#include "http.h"
#include "httpd.h"
#include "metrics.h"
#include "smetrics.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shttp {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    int running;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  const char *body)
{
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    httpd_reply(req, code, reason, ctype);
}

static void handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply(req, 405, "Method Not Allowed", "application/json",
              "{\"error\":\"method not allowed here\"}\n");
        return;
    }
    if (path && !strcmp(path, "/healthz")) {
        reply(req, 200, "OK", "application/json", "{\"status\":\"ok\"}\n");
    } else if (path && !strcmp(path, "/readyz")) {
        const char *why = "";
        char body[160];
        int ready = smetrics_ready(&why);
        snprintf(body, sizeof body, "{\"status\":\"%s\"%s%s%s}\n", ready ? "ready" : "not ready",
                 ready ? "" : ",\"reason\":\"", ready ? "" : why, ready ? "" : "\"");
        reply(req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", "application/json",
              body);
    } else if (path && !strcmp(path, "/metrics")) {
        size_t len;
        char *text = smetrics_render(&len);
        if (metrics_reply(req, text, len) < 0)
            reply(req, 503, "Service Unavailable", "application/json",
                  "{\"error\":\"out of memory\"}\n");
    } else {
        reply(req, 404, "Not Found", "application/json", "{\"error\":\"no such path\"}\n");
    }
}

static void *run(void *arg)
{
    struct shttp *h = arg;
    /* Stop signals are for the main thread's handler. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    event_base_dispatch(h->base);
    return NULL;
}

struct shttp *shttp_start(const char *listen, int port, char *err, size_t errlen)
{
    /* loopexit comes from another thread: libevent must lock. */
    if (evthread_use_pthreads() < 0) {
        snprintf(err, errlen, "libevent without thread support");
        return NULL;
    }
    struct shttp *h = calloc(1, sizeof *h);
    if (!h || !(h->base = event_base_new()) || !(h->http = evhttp_new(h->base))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_body_size(h->http, 4096);
    evhttp_set_max_headers_size(h->http, 16384);
    evhttp_set_timeout(h->http, 10);
    evhttp_set_gencb(h->http, handle, h);
    if (!evhttp_bind_socket_with_handle(h->http, listen, (ev_uint16_t)port)) {
        snprintf(err, errlen, "STORAGE_HTTP_LISTEN/STORAGE_HTTP_PORT: cannot listen on %s:%d "
                 "(in use, or not an address of this host)", listen, port);
        goto fail;
    }
    if (pthread_create(&h->thread, NULL, run, h) != 0) {
        snprintf(err, errlen, "cannot start the HTTP thread");
        goto fail;
    }
    h->running = 1;
    return h;
fail:
    shttp_stop(h);
    return NULL;
}

void shttp_stop(struct shttp *h)
{
    if (!h)
        return;
    if (h->running) {
        event_base_loopexit(h->base, NULL);
        pthread_join(h->thread, NULL);
    }
    if (h->http)
        evhttp_free(h->http);
    if (h->base)
        event_base_free(h->base);
    free(h);
}
