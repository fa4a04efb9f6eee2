/* httpd.c -- see httpd.h. */
#include "httpd.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
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

void httpd_reply_now(struct evhttp_request *req, int code, const char *reason,
                     const char *ctype)
{
    /* No connection: the client has gone; httpd_reply frees req. */
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    httpd_reply(req, code, reason, ctype);
    if (fd < 0)
        return;
    /* As bufferevent_sock's write callback does: its output buffer is
     * frozen at the front (nothing drains it but that callback) and thawed
     * for the write. Then, once it is empty, its write callback (evhttp's),
     * which that write callback would call. The write event evhttp enabled
     * is disabled again in this loop turn (evhttp_start_read_ or the
     * connection's free), so the changelist makes no epoll_ctl of it. */
    struct evbuffer *out = bufferevent_get_output(bev);
    int n;
    evbuffer_unfreeze(out, 1);
    do
        n = evbuffer_write(out, fd);
    while (n > 0 && evbuffer_get_length(out) > 0);
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) == 0)
        bufferevent_trigger(bev, EV_WRITE, 0);
}

void httpd_defer(struct evhttp_request *req)
{
    /* No connection: the client has gone (evhttp detaches the request). */
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    bufferevent_data_cb write_cb;
    bufferevent_event_cb event_cb;
    void *arg;
    if (!bev)
        return;
    /* evhttp_write_buffer does the same while writing: no read callback
     * (data waits in the input buffer, which evhttp looks at again when it
     * starts reading the next request), the event callback kept (a close
     * or an error). Re-enabled in the same loop turn in which evhttp
     * disabled it, the descriptor stays in epoll. */
    bufferevent_getcb(bev, NULL, &write_cb, &event_cb, &arg);
    bufferevent_setcb(bev, NULL, write_cb, event_cb, arg);
    bufferevent_setwatermark(bev, EV_READ, 0, HTTPD_DEFER_READ_MAX);
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_enable(bev, EV_READ);
}

void httpd_resume(struct evhttp_request *req, int idle_timeout_s)
{
    struct evhttp_connection *c = evhttp_request_get_connection(req);
    if (!c)
        return;
    bufferevent_setwatermark(evhttp_connection_get_bufferevent(c), EV_READ, 0, 0);
    evhttp_connection_set_timeout(c, idle_timeout_s);
}
