/* fleet.c -- virtual sensors: ids, random-walk values, schedule heap. */
#include "fleet.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fleet {
    size_t n;
    struct fleet_sensor *s;
    size_t *heap;                 /* sensor indices, min-heap on due_us */
    size_t heap_n;
    double interval_us;
};

/* What each kind of sensor reports; ranges are an ordinary indoor climate. */
struct kind {
    enum reading_type type;
    const char *unit;
    double lo, hi, step, scale;
};

static const struct kind KINDS[] = {
    { READING_TEMPERATURE, "C",   18.0,   26.0,   0.15, 100.0 },
    { READING_TEMPERATURE, "F",   18.0,   26.0,   0.15, 100.0 },
    { READING_TEMPERATURE, "K",   18.0,   26.0,   0.15, 100.0 },
    { READING_HUMIDITY,    "%",   30.0,   70.0,   0.50,  10.0 },
    { READING_PRESSURE,    "hPa", 990.0,  1030.0, 0.30, 100.0 },
    { READING_PRESSURE,    "Pa",  990.0,  1030.0, 0.30,   1.0 },
    { READING_PRESSURE,    "kPa", 990.0,  1030.0, 0.30, 1000.0 },
};

/* Cumulative weights in per-mille for KINDS, in order: temperature 50%
 * (C 22.5, F 22.5, K 5), humidity 25%, pressure 25% (hPa 17.5, Pa 3.75,
 * kPa 3.75). */
static const unsigned KIND_CUM[] = { 225, 450, 500, 750, 925, 962, 1000 };

static const struct kind *pick_kind(struct rng *r)
{
    unsigned x = (unsigned)rng_below(r, 1000);
    for (size_t k = 0; k < sizeof KIND_CUM / sizeof KIND_CUM[0]; k++)
        if (x < KIND_CUM[k])
            return &KINDS[k];
    return &KINDS[0];
}

static void format_id(char out[FLEET_ID_LEN + 1], const unsigned char b[16])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char u[16];
    memcpy(u, b, 16);
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);    /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);    /* RFC 4122 variant */
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u[i] >> 4];
        out[o++] = hex[u[i] & 0x0f];
    }
    out[o] = '\0';
}

struct fleet *fleet_create(size_t n, uint64_t seed, int ids_from_os,
                           char *err, size_t errlen)
{
    struct fleet *f = NULL;
    unsigned char *osbytes = NULL;

    if (n < 1 || n > FLEET_MAX_SENSORS) {
        snprintf(err, errlen, "fleet size %zu is out of range 1..%d", n, FLEET_MAX_SENSORS);
        return NULL;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->n = n;
    f->s = calloc(n, sizeof *f->s);
    f->heap = calloc(n, sizeof *f->heap);
    if (!f->s || !f->heap)
        goto oom;
    if (ids_from_os) {
        osbytes = malloc(n * 16);
        if (!osbytes)
            goto oom;
        if (rng_os_bytes(osbytes, n * 16) != 0) {
            snprintf(err, errlen, "cannot read random bytes for sensor ids: %s",
                     strerror(errno));
            goto err;
        }
    }

    /* One master stream hands out every sensor's seeds and (with a seed)
     * its id, in sensor order: sensor i is the same whatever n is. */
    struct rng master;
    rng_seed(&master, rng_mix(seed));
    for (size_t i = 0; i < n; i++) {
        struct fleet_sensor *s = &f->s[i];
        unsigned char idb[16];
        uint64_t a = rng_next(&master), b = rng_next(&master);
        if (ids_from_os) {
            memcpy(idb, osbytes + i * 16, 16);
        } else {
            memcpy(idb, &a, 8);
            memcpy(idb + 8, &b, 8);
        }
        format_id(s->id, idb);
        rng_seed(&s->vrng, rng_next(&master));
        rng_seed(&s->srng, rng_next(&master));
        const struct kind *k = pick_kind(&s->vrng);
        s->type = k->type;
        s->unit = k->unit;
        s->lo = k->lo;
        s->hi = k->hi;
        s->step = k->step;
        s->scale = k->scale;
        /* Start in the middle half so the first steps do not hit a bound. */
        s->value = rng_between(&s->vrng, k->lo + (k->hi - k->lo) * 0.25,
                               k->hi - (k->hi - k->lo) * 0.25);
        s->due_us = INT64_MAX;
    }
    free(osbytes);
    return f;

oom:
    snprintf(err, errlen, "out of memory for %zu sensors", n);
err:
    free(osbytes);
    fleet_destroy(f);
    return NULL;
}

void fleet_destroy(struct fleet *f)
{
    if (!f)
        return;
    free(f->s);
    free(f->heap);
    free(f);
}

size_t fleet_size(const struct fleet *f)
{
    return f->n;
}

const struct fleet_sensor *fleet_sensor(const struct fleet *f, size_t i)
{
    return &f->s[i];
}

static double to_unit(const struct fleet_sensor *s, double canonical)
{
    const char *u = s->unit;
    if (s->type == READING_TEMPERATURE) {
        if (u[0] == 'F')
            return canonical * 1.8 + 32.0;
        if (u[0] == 'K')
            return canonical + 273.15;
    } else if (s->type == READING_PRESSURE) {
        if (u[0] == 'P')
            return canonical * 100.0;
        if (u[0] == 'k')
            return canonical / 10.0;
    }
    return canonical;
}

void fleet_measure(struct fleet *f, size_t i, int64_t now_us,
                   struct sim_reading *out)
{
    struct fleet_sensor *s = &f->s[i];

    /* Sum of three uniforms: a cheap bell-shaped step; a weak pull to the
     * middle keeps a long run from sitting on a bound. */
    double noise = rng_unit(&s->vrng) + rng_unit(&s->vrng) + rng_unit(&s->vrng) - 1.5;
    double v = s->value + noise * 2.0 * s->step + 0.02 * ((s->lo + s->hi) / 2 - s->value);
    if (v < s->lo)
        v = 2 * s->lo - v;
    if (v > s->hi)
        v = 2 * s->hi - v;
    s->value = v;

    int64_t ts = now_us > s->last_ts_us ? now_us : s->last_ts_us + 1;
    s->last_ts_us = ts;

    out->sensor_id = s->id;
    out->type = s->type;
    out->unit = s->unit;
    /* Divide by the scale rather than multiply by its inverse: 7160 / 100
     * is the double nearest 71.6, 7160 * 0.01 is not. */
    out->value = round(to_unit(s, v) * s->scale) / s->scale;
    out->ts_us = ts;
}

/* --- schedule ------------------------------------------------------------ */

static int before(const struct fleet *f, size_t a, size_t b)
{
    return f->s[f->heap[a]].due_us < f->s[f->heap[b]].due_us;
}

static void swap(struct fleet *f, size_t a, size_t b)
{
    size_t t = f->heap[a];
    f->heap[a] = f->heap[b];
    f->heap[b] = t;
}

static void sift_down(struct fleet *f, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < f->heap_n && before(f, l, m))
            m = l;
        if (r < f->heap_n && before(f, r, m))
            m = r;
        if (m == i)
            return;
        swap(f, i, m);
        i = m;
    }
}

int64_t fleet_jittered_us(struct fleet *f, size_t i)
{
    double j = rng_between(&f->s[i].srng, 0.8, 1.2);
    int64_t us = (int64_t)(f->interval_us * j);
    return us > 0 ? us : 1;
}

void fleet_schedule_start(struct fleet *f, double interval_s, int64_t now_mono_us)
{
    f->interval_us = interval_s * 1e6;
    for (size_t i = 0; i < f->n; i++) {
        f->s[i].due_us = now_mono_us +
            (int64_t)(f->interval_us * rng_unit(&f->s[i].srng));
        f->heap[i] = i;
    }
    f->heap_n = f->n;
    for (size_t i = f->n / 2; i-- > 0;)
        sift_down(f, i);
}

int64_t fleet_next_due(const struct fleet *f)
{
    return f->heap_n ? f->s[f->heap[0]].due_us : INT64_MAX;
}

long fleet_pop_due(struct fleet *f, int64_t now_mono_us)
{
    if (!f->heap_n)
        return -1;
    size_t i = f->heap[0];
    struct fleet_sensor *s = &f->s[i];
    if (s->due_us > now_mono_us)
        return -1;
    int64_t next = s->due_us + fleet_jittered_us(f, i);
    if (next <= now_mono_us)
        next = now_mono_us + fleet_jittered_us(f, i);
    s->due_us = next;
    sift_down(f, 0);
    return (long)i;
}
