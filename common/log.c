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
static int g_json;

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

int log_set_format(const char *name)
{
    if (!strcmp(name, "text"))
        g_json = 0;
    else if (!strcmp(name, "json"))
        g_json = 1;
    else
        return -1;
    return 0;
}

/* --- JSON lines ----------------------------------------------------------- */

struct jbuf {
    char *p;
    size_t len, cap;   /* cap - 1 usable: p[len] is always NUL */
};

static void j_raw(struct jbuf *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap)
        n = b->cap - 1 - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* A JSON string of s[0..n), escaped; never cut inside an escape. */
static void j_str(struct jbuf *b, const char *s, size_t n)
{
    j_raw(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t k;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            k = 2;
        } else if (c < 0x20) {
            k = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            k = 1;
        }
        if (b->len + k + 2 >= b->cap)   /* room for this, the quote and NUL */
            break;
        j_raw(b, esc, k);
    }
    j_raw(b, "\"", 1);
}

static void j_member(struct jbuf *b, const char *key, size_t klen, const char *val, size_t vlen)
{
    j_raw(b, ",", 1);
    j_str(b, key, klen);
    j_raw(b, ":", 1);
    j_str(b, val, vlen);
}

size_t log_json_line(char *out, size_t outlen, const char *ts, const char *level,
                     const char *service, const char *instance, const char *event,
                     const char *fields)
{
    if (!outlen)
        return 0;
    struct jbuf b = { out, 0, outlen };
    out[0] = '\0';
    j_raw(&b, "{\"ts\":", 6);
    j_str(&b, ts, strlen(ts));
    j_member(&b, "level", 5, level, strlen(level));
    j_member(&b, "service", 7, service, strlen(service));
    j_member(&b, "instance", 8, instance, strlen(instance));
    j_member(&b, "event", 5, event, strlen(event));
    const char *extra = NULL;   /* the first text that is not key=value: kept whole */
    const char *p = fields ? fields : "";
    while (*p && !extra) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
               (*p >= '0' && *p <= '9') || *p == '_' || *p == '.')
            p++;
        if (p == k || *p != '=') {
            extra = k;
            break;
        }
        size_t klen = (size_t)(p - k);
        const char *v = ++p;
        size_t vlen;
        if (*v == '"') {   /* "quoted value": up to the closing quote */
            const char *e = strchr(v + 1, '"');
            if (!e) {
                extra = k;
                break;
            }
            v++;
            vlen = (size_t)(e - v);
            p = e + 1;
        } else {
            while (*p && *p != ' ')
                p++;
            vlen = (size_t)(p - v);
        }
        j_member(&b, k, klen, v, vlen);
    }
    if (extra)
        j_member(&b, "extra", 5, extra, strlen(extra));
    if (b.len + 1 >= b.cap)   /* cut (fields of 2 KB of control characters): end it anyway */
        b.len = b.cap - 2;
    j_raw(&b, "}", 1);
    return b.len;
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
    char json[4096];
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
    char *outp = line;
    if (!g_json) {
        /* One event, one line, whatever a value held (a client's text in
         * a debug line): control characters become spaces. The JSON form
         * escapes them instead. */
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                line[i] = ' ';
    } else {
        static const char *const lower[] = { "debug", "info", "warn", "error" };
        line[len] = '\0';
        line[24] = '\0';   /* the time: "YYYY-MM-DDTHH:MM:SS.mmmZ" */
        const char *fields = line + len;
        size_t head = 24 + 1 + strlen(level_names[level]) + 1 + strlen(g_service) + 1 +
                      strlen(g_instance) + 1 + strlen(event);
        if (head < len)
            fields = line + head + 1;
        len = log_json_line(json, sizeof json - 1, line, lower[level], g_service, g_instance,
                            event, fields);
        outp = json;
    }
    outp[len++] = '\n';
    /* One write(2) per line: lines of several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, outp, len);
    (void)w;
}
