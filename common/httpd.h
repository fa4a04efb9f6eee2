/* httpd.h -- answering an evhttp request, with what libevent 2.1 leaves out.
 *
 * evhttp 2.1 sends a request's output buffer to a HEAD as well, without a
 * Content-Length: a keep-alive client then reads that body as the start of
 * its next answer. Every service answers through httpd_reply, so a HEAD
 * gets the headers of GET and no body. Call from req's event loop thread. */
#ifndef SF_HTTPD_H
#define SF_HTTPD_H

struct evhttp_request;

/* Answers req with what its output buffer holds, as Content-Type ctype;
 * to a HEAD, that body's Content-Length and no body. */
void httpd_reply(struct evhttp_request *req, int code, const char *reason, const char *ctype);

#endif
