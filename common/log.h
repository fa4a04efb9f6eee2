/* log.h -- one line per event on stderr, for people and for grep.
 *
 *   2026-11-22T10:00:00.123Z INFO ingestion ingestion-1 mqtt.connected broker=tcp://127.0.0.1:1883
 *
 * Fields: UTC time (ms), level, service, instance, an event name (dotted,
 * stable, grep-able), then key=value fields; a control character in a
 * value (a newline in a client's text) becomes a space, so an event is one
 * line. Each line is written with a single write(2), so lines from several
 * threads never interleave.
 * Process-wide state: call log_init() once, before any thread starts. */
#ifndef SF_LOG_H
#define SF_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 if unknown. */
int log_level_parse(const char *name, enum log_level *out);

/* Sets the service, instance (both copied) and minimum level. */
void log_init(const char *service, const char *instance, enum log_level min);

/* LOG_FORMAT: "text" (the line above) or "json", one object per line for
 * log shippers:
 *   {"ts":"2026-11-22T10:00:00.123Z","level":"info","service":"ingestion",
 *    "instance":"ingestion-1","event":"mqtt.connected","broker":"tcp://..."}
 * The key=value fields become string members (a quoted value loses its
 * quotes); text that is not key=value goes into "extra".
 * Returns 0, or -1 when name is neither (nothing changes then). */
int log_set_format(const char *name);

/* The JSON form of one line (what log_emit writes in json format, without
 * the newline), into out (always NUL-terminated). Returns the length, cut
 * at outlen - 1. For tests; log_emit calls it. */
size_t log_json_line(char *out, size_t outlen, const char *ts, const char *level,
                     const char *service, const char *instance, const char *event,
                     const char *fields);

/* Changes the instance shown on every later line (copied). */
void log_set_instance(const char *instance);

int log_enabled(enum log_level level);

/* Writes one line: event, then the printf-formatted fields (may be ""). */
void log_emit(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_DEBUG_(ev, ...) do { if (log_enabled(LOG_DEBUG)) log_emit(LOG_DEBUG, ev, __VA_ARGS__); } while (0)
#define log_debug(ev, ...) LOG_DEBUG_(ev, __VA_ARGS__)
#define log_info(ev, ...)  log_emit(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_emit(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_emit(LOG_ERROR, ev, __VA_ARGS__)

#endif
