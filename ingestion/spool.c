/* spool.c -- readings kept on local disk while the broker is away. */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct spool {
    char *dir, *active_path, *forward_path;
    int active_fd, dir_fd;
    size_t active_bytes, forward_bytes, max_bytes;
    /* The errno of a failed fdatasync of active.spool, for good. Linux
     * reports a writeback error once per file: the next fdatasync says 0
     * although the pages it had are gone, so a later spool_sync must not
     * vouch for them (PostgreSQL's "fsyncgate"). */
    int sync_errno;
};

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *c = tmp + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
            return -1;
        *c = '/';
    }
    return mkdir(tmp, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

static size_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

struct spool *spool_open(const char *dir, size_t max_bytes, char *err, size_t errlen)
{
    struct spool *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->active_fd = s->dir_fd = -1;
    s->max_bytes = max_bytes;
    s->dir = strdup(dir);
    s->active_path = join(dir, "active.spool");
    s->forward_path = join(dir, "forward.spool");
    if (!s->dir || !s->active_path || !s->forward_path) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    if (make_dirs(dir) < 0) {
        snprintf(err, errlen, "cannot create spool folder %s: %s", dir, strerror(errno));
        goto err;
    }
    s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s->active_fd = open(s->active_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (s->dir_fd < 0 || s->active_fd < 0) {
        snprintf(err, errlen, "cannot open spool %s: %s", s->active_path, strerror(errno));
        goto err;
    }
    s->active_bytes = file_size(s->active_path);
    s->forward_bytes = file_size(s->forward_path);
    return s;
err:
    spool_close(s);
    return NULL;
}

size_t spool_bytes(const struct spool *s)
{
    return s->active_bytes + s->forward_bytes;
}

int spool_full(const struct spool *s, size_t more)
{
    return s->sync_errno || spool_bytes(s) + more > s->max_bytes;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fdatasync of active.spool; once failed, fails for good. */
static int sync_active(struct spool *s)
{
    if (!s->sync_errno && fdatasync(s->active_fd) < 0)
        s->sync_errno = errno ? errno : EIO;
    errno = s->sync_errno;
    return s->sync_errno ? -1 : 0;
}

int spool_append(struct spool *s, const char *msg, size_t len, const char **why)
{
    if (s->sync_errno) {
        *why = "the local spool could not be synced to disk: restart ingestion";
        return -1;
    }
    if (spool_full(s, len + 1)) {
        *why = "the local spool is full";
        return -1;
    }
    /* One write for message and newline: a crash leaves at worst a torn
     * last line, which the reader skips. */
    char *line = malloc(len + 1);
    if (!line) {
        *why = "out of memory";
        return -1;
    }
    memcpy(line, msg, len);
    line[len] = '\n';
    int rc = write_all(s->active_fd, line, len + 1);
    free(line);
    if (rc < 0) {
        *why = "cannot write the local spool";
        /* Cut what a short write left, so the next line starts clean. */
        if (ftruncate(s->active_fd, (off_t)s->active_bytes) < 0)
            s->active_bytes = file_size(s->active_path);
        return -1;
    }
    s->active_bytes += len + 1;
    return 0;
}

int spool_sync(struct spool *s)
{
    return sync_active(s);
}

/* Appends the whole of active.spool to forward.spool and empties it. */
static int merge_active(struct spool *s)
{
    /* Appends of this loop turn wait for spool_sync, which will sync the
     * emptied file: their pages must have reached the disk before. */
    if (sync_active(s) < 0)
        return -1;
    int rc = -1, in = open(s->active_path, O_RDONLY | O_CLOEXEC);
    int out = open(s->forward_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    char buf[65536];
    if (in < 0 || out < 0)
        goto out;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (write_all(out, buf, (size_t)n) < 0)
            goto out;
    }
    /* Durable in forward.spool before it leaves active.spool. */
    if (fdatasync(out) < 0 || ftruncate(s->active_fd, 0) < 0 || fdatasync(s->active_fd) < 0)
        goto out;
    s->forward_bytes += s->active_bytes;
    s->active_bytes = 0;
    rc = 0;
out:
    /* A copy cut short (or not known durable) is taken back: the next try
     * appends the whole of active.spool again, and spool_take reads
     * forward_bytes from the start, so a stray partial copy would shift
     * what it reads and leave the end of the new copy unread, then deleted
     * with the round. */
    if (rc < 0 && out >= 0 && ftruncate(out, (off_t)s->forward_bytes) < 0)
        s->forward_bytes = file_size(s->forward_path);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

int spool_take(struct spool *s, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (spool_bytes(s) == 0)
        return 1;
    /* After a failed sync, active.spool is left as it is (a restart sends
     * it); forward.spool, synced before, still goes. */
    if (s->active_bytes && !s->sync_errno) {
        if (s->forward_bytes == 0 && access(s->forward_path, F_OK) < 0) {
            /* The common case: a rename, then a fresh active file. Appends
             * of this loop turn are not synced yet (their requests wait
             * for spool_sync, which will sync the new file): sync them
             * before the descriptor goes. */
            if (sync_active(s) < 0 || rename(s->active_path, s->forward_path) < 0 ||
                fsync(s->dir_fd) < 0)
                return -1;
            int fd = open(s->active_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
            if (fd < 0)
                return -1;
            close(s->active_fd);
            s->active_fd = fd;
            s->forward_bytes = s->active_bytes;
            s->active_bytes = 0;
        } else if (merge_active(s) < 0) {
            return -1;
        }
    }
    if (s->forward_bytes == 0)
        return 1;
    int fd = open(s->forward_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char *b = malloc(s->forward_bytes + 1);
    size_t got = 0;
    while (b && got < s->forward_bytes) {
        ssize_t n = read(fd, b + got, s->forward_bytes - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!b || got != s->forward_bytes) {
        free(b);
        return -1;
    }
    b[got] = '\0';
    *buf = b;
    *len = got;
    return 0;
}

int spool_taken(struct spool *s, int ok)
{
    if (!ok)
        return 0;
    if (unlink(s->forward_path) < 0 && errno != ENOENT)
        return -1;
    s->forward_bytes = 0;
    return fsync(s->dir_fd);
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    if (s->active_fd >= 0)
        close(s->active_fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    free(s->dir);
    free(s->active_path);
    free(s->forward_path);
    free(s);
}
