/* log.c -- one line per event on stderr, for people and for grep. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_service[32] = "?";
static char g_instance[80] = "-";
static enum log_level g_min = LOG_INFO;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

int log_level_parse(const char *name, enum log_level *out)
{
    static const char *const lower[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++) {
        if (!strcmp(name, lower[i])) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_init(const char *service, const char *instance, enum log_level min)
{
    snprintf(g_service, sizeof g_service, "%s", service);
    log_set_instance(instance);
    g_min = min;
}

void log_set_instance(const char *instance)
{
    snprintf(g_instance, sizeof g_instance, "%s", instance && *instance ? instance : "-");
}

int log_enabled(enum log_level level)
{
    return level >= g_min;
}

void log_emit(enum log_level level, const char *event, const char *fmt, ...)
{
    if (level < g_min)
        return;
    char line[2048];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s %s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000L,
                     level_names[level], g_service, g_instance, event);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fmt && *fmt && len < sizeof line - 2) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + len, sizeof line - len, fmt, ap);
        va_end(ap);
        if (m > 0)
            len += (size_t)m < sizeof line - len ? (size_t)m : sizeof line - len - 1;
    }
    /* Lines are cut rather than split so that each stays one event. */
    if (len >= sizeof line - 1)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write(2) per line: lines of several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
