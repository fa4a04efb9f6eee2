/* acclog.c -- buffered, append-only CSV of accepted readings. */
#include "acclog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbuf.h"

struct acclog {
    int fd;
    struct sbuf buf;
    int last_errno;      /* of a failed automatic flush, until reported */
};

struct acclog *acclog_open(const char *path, char *err, size_t errlen)
{
    struct acclog *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (a->fd < 0) {
        snprintf(err, errlen, "cannot open accepted log %s: %s", path, strerror(errno));
        free(a);
        return NULL;
    }
    return a;
}

static int write_all(struct acclog *a)
{
    size_t off = 0;
    int rc = 0;
    while (off < a->buf.len) {
        ssize_t k = write(a->fd, a->buf.p + off, a->buf.len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            a->last_errno = k < 0 ? errno : EIO;
            rc = -1;
            break;
        }
        off += (size_t)k;
    }
    sbuf_clear(&a->buf);
    return rc;
}

int acclog_append(struct acclog *a, const char *data, size_t len)
{
    sbuf_add(&a->buf, data, len);
    if (a->buf.len >= ACCLOG_FLUSH_BYTES)
        return write_all(a);
    return 0;
}

int acclog_flush(struct acclog *a, char *err, size_t errlen)
{
    if (a->buf.len)
        write_all(a);
    if (a->last_errno) {
        snprintf(err, errlen, "%s", strerror(a->last_errno));
        a->last_errno = 0;
        return -1;
    }
    return 0;
}

int acclog_close(struct acclog *a, char *err, size_t errlen)
{
    if (!a)
        return 0;
    int rc = acclog_flush(a, err, errlen);
    if (close(a->fd) != 0 && rc == 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        rc = -1;
    }
    sbuf_free(&a->buf);
    free(a);
    return rc;
}
