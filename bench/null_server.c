/* null_server.c -- the benchmark's "ceiling" backend: an evhttp server that
 * does nothing. POST anything: 202 with a fixed JSON body, the body unread
 * beyond what evhttp already buffered; GET /healthz and /readyz: 200 (so
 * HAProxy's checks pass). It stands where ingestion stands, to measure what
 * the load generator and HAProxy alone can pass on this machine.
 *
 *   bench-null-server PORT
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void handle(struct evhttp_request *req, void *arg)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    (void)arg;
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

int main(int argc, char **argv)
{
    int rc = 1;
    long port = argc == 2 ? strtol(argv[1], NULL, 10) : 0;
    if (port < 1 || port > 65535) {
        fprintf(stderr, "usage: bench-null-server PORT\n");
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
    evhttp_set_gencb(http, handle, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)port) != 0) {
        fprintf(stderr, "bench-null-server: cannot listen on 127.0.0.1:%ld\n", port);
        goto out;
    }
    rc = event_base_dispatch(base) == 0 ? 0 : 1;
out:
    if (http)
        evhttp_free(http);
    if (base)
        event_base_free(base);
    return rc;
}
