/* acclog.h -- the accepted log: one CSV line per reading answered 2xx,
 *   sensor_id,type,ts,value,unit
 * so that tests know exactly which readings must be in the database.
 *
 * Lines are buffered and written with write(2) on an O_APPEND descriptor,
 * whole lines per write, so several simulators may share one file. The
 * buffer is written when it passes ACCLOG_FLUSH_BYTES, on acclog_flush()
 * (the caller runs it on a short timer) and on close: a crash loses at most
 * the lines since the last flush, which makes the log claim less, never
 * more. Nothing here logs. */
#ifndef SIM_ACCLOG_H
#define SIM_ACCLOG_H

#include <stddef.h>

#define ACCLOG_FLUSH_BYTES 65536

struct acclog;

/* Opens (creating, mode 0644) path for appending. NULL with err filled on
 * failure. */
struct acclog *acclog_open(const char *path, char *err, size_t errlen);

/* Buffers whole lines (data must end with '\n'). Returns 0, or -1 when an
 * automatic flush failed (see acclog_flush). */
int acclog_append(struct acclog *a, const char *data, size_t len);

/* Writes what is buffered. Returns 0, or -1 with the reason in err; the
 * unwritten lines are dropped so a full disk cannot grow memory forever. */
int acclog_flush(struct acclog *a, char *err, size_t errlen);

/* Flushes, closes and frees. Returns like acclog_flush. Accepts NULL. */
int acclog_close(struct acclog *a, char *err, size_t errlen);

#endif
