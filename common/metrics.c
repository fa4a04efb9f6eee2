/* metrics.c -- the registry behind metrics.h.
 *
 * Values are doubles kept as their bit patterns in _Atomic uint64_t, so that
 * paho's thread, the event loop and the scraper never take a lock to update
 * or read one: add is a compare-and-swap loop (contention is two or three
 * threads at most). The registry itself is a list in registration order,
 * guarded by one mutex that updates never touch. */
#include "metrics.h"
#include "httpd.h"

#include <event2/buffer.h>
#include <event2/http.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { M_COUNTER, M_GAUGE, M_HISTOGRAM };

struct metric {
    char *name, *help, *labels;
    enum metric_type type;
    _Atomic uint64_t value;       /* counter/gauge: a double's bits */
    size_t nbounds;
    double *bounds;
    _Atomic uint64_t *buckets;    /* nbounds + 1 (the last is +Inf), not cumulative */
    _Atomic uint64_t sum;         /* a double's bits */
    _Atomic uint64_t count;
    struct metric *next;
};

const double METRICS_LATENCY_BOUNDS[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
const size_t METRICS_LATENCY_NBOUNDS = sizeof METRICS_LATENCY_BOUNDS /
                                       sizeof METRICS_LATENCY_BOUNDS[0];

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric *reg_head, *reg_tail;

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *cell, double v)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, d2u(u2d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static int name_valid(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
            return 0;
    return 1;
}

/* k="v",k2="v2": names valid, values quoted with \ " and newline escaped. */
static int labels_valid(const char *s)
{
    while (*s) {
        const char *k = s;
        while (*s && *s != '=')
            s++;
        if (*s != '=' || s == k)
            return 0;
        char key[128];
        if ((size_t)(s - k) >= sizeof key)
            return 0;
        memcpy(key, k, (size_t)(s - k));
        key[s - k] = '\0';
        if (!name_valid(key) || *++s != '"')
            return 0;
        for (s++; *s && *s != '"'; s++) {
            if (*s == '\n')
                return 0;
            if (*s == '\\' && !*++s)
                return 0;
        }
        if (*s++ != '"')
            return 0;
        if (*s == ',')
            s++;
        else if (*s)
            return 0;
    }
    return 1;
}

static struct metric *reg(const char *name, const char *help, const char *labels,
                          enum metric_type type, const double *bounds, size_t n)
{
    if (!labels)
        labels = "";
    if (!name_valid(name) || !labels_valid(labels))
        return NULL;
    if (type == M_HISTOGRAM) {
        if (!bounds || n == 0)
            return NULL;
        for (size_t i = 1; i < n; i++)
            if (!(bounds[i] > bounds[i - 1]))
                return NULL;
    }
    struct metric *m = NULL;
    pthread_mutex_lock(&reg_lock);
    for (struct metric *it = reg_head; it; it = it->next) {
        if (strcmp(it->name, name) != 0)
            continue;
        if (it->type != type)
            goto out;                  /* one name, one type */
        if (strcmp(it->labels, labels) == 0) {
            m = it;
            goto out;
        }
    }
    m = calloc(1, sizeof *m);
    if (!m)
        goto out;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->labels = strdup(labels);
    m->type = type;
    if (type == M_HISTOGRAM) {
        m->nbounds = n;
        m->bounds = malloc(n * sizeof *m->bounds);
        m->buckets = calloc(n + 1, sizeof *m->buckets);
        if (m->bounds)
            memcpy(m->bounds, bounds, n * sizeof *m->bounds);
    }
    if (!m->name || !m->help || !m->labels ||
        (type == M_HISTOGRAM && (!m->bounds || !m->buckets))) {
        free(m->name);
        free(m->help);
        free(m->labels);
        free(m->bounds);
        free((void *)m->buckets);
        free(m);
        m = NULL;
        goto out;
    }
    if (reg_tail)
        reg_tail->next = m;
    else
        reg_head = m;
    reg_tail = m;
out:
    pthread_mutex_unlock(&reg_lock);
    return m;
}

struct metric *metrics_counter(const char *name, const char *help, const char *labels)
{
    return reg(name, help, labels, M_COUNTER, NULL, 0);
}

struct metric *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return reg(name, help, labels, M_GAUGE, NULL, 0);
}

struct metric *metrics_histogram(const char *name, const char *help, const char *labels,
                                 const double *bounds, size_t n)
{
    return reg(name, help, labels, M_HISTOGRAM, bounds, n);
}

void metric_inc(struct metric *m)
{
    metric_add(m, 1);
}

void metric_add(struct metric *m, double v)
{
    if (!m || m->type == M_HISTOGRAM || (m->type == M_COUNTER && !(v >= 0)))
        return;
    atomic_add_double(&m->value, v);
}

void metric_set(struct metric *m, double v)
{
    if (m && m->type == M_GAUGE)
        atomic_store_explicit(&m->value, d2u(v), memory_order_relaxed);
}

void metric_observe(struct metric *m, double v)
{
    if (!m || m->type != M_HISTOGRAM)
        return;
    size_t i = 0;
    while (i < m->nbounds && v > m->bounds[i])
        i++;
    atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&m->sum, v);
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
}

double metric_value(const struct metric *m)
{
    if (!m)
        return 0;
    if (m->type == M_HISTOGRAM)
        return (double)atomic_load_explicit(&m->count, memory_order_relaxed);
    return u2d(atomic_load_explicit(&m->value, memory_order_relaxed));
}

char *metrics_escape(const char *value, char *out, size_t outlen)
{
    size_t o = 0;
    if (!outlen)
        return out;
    for (; *value; value++) {
        const char *rep = NULL;
        char one[2] = { *value, '\0' };
        if (*value == '\\')
            rep = "\\\\";
        else if (*value == '"')
            rep = "\\\"";
        else if (*value == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        if (o + n >= outlen)
            break;
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

/* --- rendering ------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    while (!b->oom) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A sample value as Prometheus reads it: integers without a fraction. */
static void sb_value(struct sbuf *b, double v)
{
    if (v == (double)(long long)v && v < 9e15 && v > -9e15)
        sb_printf(b, "%lld\n", (long long)v);
    else
        sb_printf(b, "%.17g\n", v);
}

static void render_one(struct sbuf *b, const struct metric *m)
{
    const char *sep = m->labels[0] ? "," : "";
    if (m->type != M_HISTOGRAM) {
        if (m->labels[0])
            sb_printf(b, "%s{%s} ", m->name, m->labels);
        else
            sb_printf(b, "%s ", m->name);
        sb_value(b, u2d(atomic_load_explicit(&m->value, memory_order_relaxed)));
        return;
    }
    /* Read the buckets first and derive the count from them, so that a
     * scrape racing an observe is still consistent (+Inf == _count). */
    uint64_t cum = 0;
    for (size_t i = 0; i <= m->nbounds; i++) {
        cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
        if (i < m->nbounds)
            sb_printf(b, "%s_bucket{%s%sle=\"%.17g\"} %llu\n", m->name, m->labels, sep,
                      m->bounds[i], (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name, m->labels, sep,
                      (unsigned long long)cum);
    }
    if (m->labels[0])
        sb_printf(b, "%s_sum{%s} ", m->name, m->labels);
    else
        sb_printf(b, "%s_sum ", m->name);
    sb_value(b, u2d(atomic_load_explicit(&m->sum, memory_order_relaxed)));
    if (m->labels[0])
        sb_printf(b, "%s_count{%s} %llu\n", m->name, m->labels, (unsigned long long)cum);
    else
        sb_printf(b, "%s_count %llu\n", m->name, (unsigned long long)cum);
}

char *metrics_render(size_t *len)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    struct sbuf b = { 0 };
    sb_printf(&b, "%s", "");   /* an empty registry still renders "" */
    pthread_mutex_lock(&reg_lock);
    for (struct metric *m = reg_head; m; m = m->next) {
        int first = 1;   /* the first of its name: its family is rendered here */
        for (struct metric *e = reg_head; e != m; e = e->next)
            if (strcmp(e->name, m->name) == 0) {
                first = 0;
                break;
            }
        if (!first)
            continue;
        sb_printf(&b, "# HELP %s ", m->name);
        for (const char *h = m->help; *h; h++)   /* HELP escapes \ and newline */
            sb_printf(&b, "%s", *h == '\\' ? "\\\\" : *h == '\n' ? "\\n" : (char[2]){ *h, 0 });
        sb_printf(&b, "\n# TYPE %s %s\n", m->name, type_names[m->type]);
        for (struct metric *e = m; e; e = e->next)
            if (strcmp(e->name, m->name) == 0)
                render_one(&b, e);
    }
    pthread_mutex_unlock(&reg_lock);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}

static void free_text(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

int metrics_reply(struct evhttp_request *req, char *text, size_t len)
{
    if (!text || evbuffer_add_reference(evhttp_request_get_output_buffer(req), text, len,
                                        free_text, NULL) < 0) {
        free(text);
        return -1;
    }
    httpd_reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8");
    return 0;
}
