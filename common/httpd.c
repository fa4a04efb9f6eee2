/* httpd.c -- see httpd.h. */
#include "httpd.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>

void httpd_reply(struct evhttp_request *req, int code, const char *reason, const char *ctype)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        struct evbuffer *body = evhttp_request_get_output_buffer(req);
        size_t len = evbuffer_get_length(body);
        char cl[24];
        snprintf(cl, sizeof cl, "%zu", len);
        evhttp_add_header(h, "Content-Length", cl);
        evbuffer_drain(body, len);
    }
    evhttp_send_reply(req, code, reason, NULL);
}
