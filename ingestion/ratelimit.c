/* ratelimit.c -- per-sensor token buckets in an open-addressing table
 * (linear probing). None of our libraries has a hash table for this one
 * use; it is small enough to keep here, with its own tests. */
#include "ratelimit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct bucket {
    char id[READING_SENSOR_ID_MAX + 1];   /* "" = free slot */
    double tokens;
    int64_t last_us;
    uint32_t want;                        /* readings of the current request */
};

struct ratelimit {
    double rate, burst;
    size_t max, used, mask;   /* slots = mask + 1 >= 2 * max */
    struct bucket *slot;
    size_t *touched;          /* slots of the current request */
    size_t ntouched, captouched;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

struct ratelimit *ratelimit_new(double rate, double burst, size_t max_sensors)
{
    if (!(rate > 0) || max_sensors == 0)
        return NULL;
    struct ratelimit *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    size_t slots = 16;
    while (slots < 2 * max_sensors)
        slots *= 2;
    r->rate = rate;
    r->burst = burst < 1 ? 1 : burst;
    r->max = max_sensors;
    r->mask = slots - 1;
    r->slot = calloc(slots, sizeof *r->slot);
    if (!r->slot) {
        free(r);
        return NULL;
    }
    return r;
}

void ratelimit_free(struct ratelimit *r)
{
    if (!r)
        return;
    free(r->slot);
    free(r->touched);
    free(r);
}

size_t ratelimit_sensors(const struct ratelimit *r)
{
    return r ? r->used : 0;
}

static void refill(const struct ratelimit *r, struct bucket *b, int64_t now)
{
    if (now > b->last_us) {
        b->tokens = fmin(r->burst, b->tokens + r->rate * (double)(now - b->last_us) / 1e6);
        b->last_us = now;
    }
}

/* Rebuilds the table without the buckets that are full again (idle
 * sensors): they behave exactly like absent ones. */
static void sweep(struct ratelimit *r, int64_t now)
{
    size_t slots = r->mask + 1;
    struct bucket *old = r->slot, *fresh = calloc(slots, sizeof *fresh);
    if (!fresh)
        return;
    r->used = 0;
    for (size_t i = 0; i < slots; i++) {
        if (!old[i].id[0])
            continue;
        refill(r, &old[i], now);
        if (old[i].tokens >= r->burst && old[i].want == 0)
            continue;
        size_t j = hash(old[i].id) & r->mask;
        while (fresh[j].id[0])
            j = (j + 1) & r->mask;
        fresh[j] = old[i];
        r->used++;
    }
    free(old);
    r->slot = fresh;
}

/* The bucket of id, made (full) when absent; NULL when the table is full. */
static struct bucket *get(struct ratelimit *r, const char *id, int64_t now)
{
    for (int pass = 0; pass < 2; pass++) {
        size_t i = hash(id) & r->mask;
        while (r->slot[i].id[0]) {
            if (!strcmp(r->slot[i].id, id))
                return &r->slot[i];
            i = (i + 1) & r->mask;
        }
        if (r->used < r->max) {
            struct bucket *b = &r->slot[i];
            memcpy(b->id, id, strlen(id) + 1);
            b->tokens = r->burst;
            b->last_us = now;
            b->want = 0;
            r->used++;
            return b;
        }
        if (pass == 0 && r->ntouched == 0)
            sweep(r, now);   /* never while slots of this request are held */
        else
            break;
    }
    return NULL;
}

int ratelimit_take(struct ratelimit *r, const struct reading_batch *b, int64_t now_us,
                   const char **sensor, long *retry_after_s)
{
    int rc = 0;
    if (r->captouched < b->n) {
        size_t *t = realloc(r->touched, b->n * sizeof *t);
        if (!t)
            return 0;   /* out of memory: let it through */
        r->touched = t;
        r->captouched = b->n;
    }
    r->ntouched = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct bucket *bk = get(r, b->v[i].sensor_id, now_us);
        if (!bk)
            continue;   /* table full of busy sensors: not limited */
        if (bk->want++ == 0) {
            refill(r, bk, now_us);
            r->touched[r->ntouched++] = (size_t)(bk - r->slot);
        }
    }
    for (size_t i = 0; i < r->ntouched && rc == 0; i++) {
        struct bucket *bk = &r->slot[r->touched[i]];
        if (bk->tokens < bk->want) {
            *sensor = NULL;
            for (size_t j = 0; j < b->n && !*sensor; j++)
                if (!strcmp(b->v[j].sensor_id, bk->id))
                    *sensor = b->v[j].sensor_id;
            *retry_after_s = bk->want > r->burst ? 0
                             : (long)ceil((bk->want - bk->tokens) / r->rate);
            if (bk->want <= r->burst && *retry_after_s < 1)
                *retry_after_s = 1;
            rc = -1;
        }
    }
    for (size_t i = 0; i < r->ntouched; i++) {
        struct bucket *bk = &r->slot[r->touched[i]];
        if (rc == 0)
            bk->tokens -= bk->want;
        bk->want = 0;
    }
    r->ntouched = 0;
    return rc;
}
