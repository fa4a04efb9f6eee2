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

/* httpd_reply, then the answer written to the socket now, not on the next
 * loop turn: evhttp writes only when epoll says the socket is writable,
 * which costs two epoll_ctl calls (EPOLLOUT on, then off) and a loop turn
 * per answer. Written whole (nearly always: an answer is a few hundred
 * bytes), evhttp then finishes the request here as it would have there (frees
 * req, reads the next request, or closes the connection); written in part or
 * not at all (a full socket buffer, an error), evhttp's own write finishes it
 * or reports it. Not from inside evhttp's request callback, whose read path
 * does not expect the request, or the connection, to be gone when the
 * callback returns: from another event (ingestion: the broker's PUBACK).
 * req is gone when this returns. */
void httpd_reply_now(struct evhttp_request *req, int code, const char *reason,
                     const char *ctype);

/* For a request answered later, from another event (ingestion: on the
 * broker's PUBACK): call in its callback, then httpd_resume() just before
 * answering it. evhttp stops reading a connection when a request is
 * complete, so its descriptor leaves epoll (DEL) and comes back for the
 * answer (ADD), a loop turn or more later: two costly epoll_ctl calls per
 * request. This keeps it reading, as evhttp itself does while it writes
 * an answer: at most HTTPD_DEFER_READ_MAX bytes of whatever the client
 * sends meanwhile wait, unread, until the answer is out (evhttp's read
 * callback, which would take them for a new request, is off); a client
 * that closes is noticed at once: evhttp frees the connection and the
 * answer is dropped. The idle timeout does not run while the request
 * waits, as it does not without this. */
#define HTTPD_DEFER_READ_MAX (16 * 1024)
void httpd_defer(struct evhttp_request *req);
/* Undoes httpd_defer() for req: idle_timeout_s is the timeout evhttp was
 * given (evhttp_set_timeout), which httpd_defer() took off. Harmless on a
 * request that was not deferred and on one whose client has gone. */
void httpd_resume(struct evhttp_request *req, int idle_timeout_s);

#endif
