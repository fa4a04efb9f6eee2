/* spool.h -- readings kept on local disk while the broker is away.
 *
 * A spool is a folder holding at most two files of MQTT batch messages, one
 * per line (the messages hold no raw newline):
 *   active.spool   appended to while the broker is unreachable;
 *   forward.spool  being sent to the broker; deleted once all of it was
 *                  acknowledged, merged with active.spool for a new try
 *                  otherwise.
 * What is in either file survives a crash or a restart of the process and
 * is sent when the broker is back. Appends become durable at spool_sync()
 * (fdatasync), which callers batch: one sync for every request of a loop
 * turn. Single-threaded; never logs. */
#ifndef SF_SPOOL_H
#define SF_SPOOL_H

#include <stddef.h>

struct spool;

/* Opens (creating the folder and files as needed) a spool bounded to
 * max_bytes over both files. Returns NULL with err filled. */
struct spool *spool_open(const char *dir, size_t max_bytes, char *err, size_t errlen);

/* Appends one message and a newline. Returns 0; -1 when it would pass the
 * bound or the write failed, with a static reason in *why. Durable only
 * after spool_sync(). */
int spool_append(struct spool *s, const char *msg, size_t len, const char **why);

/* Makes every append so far durable. Returns 0, or -1 (errno set). A
 * failed sync of active.spool (here or in spool_take) fails every later
 * spool_sync and spool_append too: Linux reports a lost write once, and a
 * later fdatasync would say 0 for pages that never reached the disk. */
int spool_sync(struct spool *s);

/* Bytes in both files. */
size_t spool_bytes(const struct spool *s);

/* 1 when more bytes would not be taken: past the bound, or the spool
 * failed (see spool_sync). */
int spool_full(const struct spool *s, size_t more);

/* Starts a round of forwarding: moves what is in active.spool to
 * forward.spool and returns its whole content in *buf (malloc'd, the
 * caller frees), *len bytes. Returns 1 when there is nothing to send, 0 on
 * success, -1 on an I/O error. Once a sync failed, active.spool stays
 * where it is (sent after a restart) and only forward.spool is returned. */
int spool_take(struct spool *s, char **buf, size_t *len);

/* Ends the round: ok deletes forward.spool (all of it was acknowledged);
 * otherwise it stays for the next spool_take(). Returns 0 or -1. */
int spool_taken(struct spool *s, int ok);

void spool_close(struct spool *s);

#endif
