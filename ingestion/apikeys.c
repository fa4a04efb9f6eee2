/* apikeys.c -- the API key table: a sorted array of (hash of key, key,
 * sorted sensor ids). A lookup binary-searches the hash (which tells an
 * attacker nothing about the key's bytes), then compares the key in
 * constant time. */
#include "apikeys.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MIN 16
#define KEY_MAX 128

struct key {
    uint64_t hash;
    char *key;
    size_t keylen;
    int any;           /* `*`: every sensor */
    char **sensors;    /* sorted */
    size_t nsensors;
};

struct apikeys {
    struct key *v;
    size_t n, cap;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._~+/=-", c) != NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_key(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static void key_free(struct key *k)
{
    free(k->key);
    for (size_t i = 0; i < k->nsensors; i++)
        free(k->sensors[i]);
    free(k->sensors);
}

void apikeys_free(struct apikeys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        key_free(&k->v[i]);
    free(k->v);
    free(k);
}

size_t apikeys_count(const struct apikeys *k)
{
    return k ? k->n : 0;
}

/* One line, already without comment and newline. Returns 0 (also for a
 * blank line: k->key stays NULL), or -1 with why. */
static int parse_line(char *line, struct key *k, const char **why)
{
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return 0;
    char *key = p;
    while (*p && *p != ' ' && *p != '\t') {
        if (!key_char(*p)) {
            *why = "the key has a character outside [A-Za-z0-9._~+/=-]";
            return -1;
        }
        p++;
    }
    size_t keylen = (size_t)(p - key);
    if (keylen < KEY_MIN || keylen > KEY_MAX) {
        *why = "a key must be 16..128 characters";
        return -1;
    }
    while (*p == ' ' || *p == '\t')
        *p++ = '\0';
    key[keylen] = '\0';
    char *list = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    char *rest = p;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (!*list || *rest) {
        *why = "expected: <key> <sensor>[,<sensor>...] (or *)";
        return -1;
    }
    *p = '\0';
    k->hash = fnv1a(key, keylen);
    k->keylen = keylen;
    if (!(k->key = strdup(key))) {
        *why = "out of memory";
        return -1;
    }
    if (!strcmp(list, "*")) {
        k->any = 1;
        return 0;
    }
    for (char *s = list, *end; s; s = end) {
        end = strchr(s, ',');
        if (end)
            *end++ = '\0';
        if (!reading_sensor_id_valid(s, strlen(s))) {
            *why = "a sensor id must be 1..64 characters of [A-Za-z0-9._:-] (or the list just *)";
            return -1;
        }
        char **v = realloc(k->sensors, (k->nsensors + 1) * sizeof *v);
        if (!v || !(v[k->nsensors] = strdup(s))) {
            if (v)
                k->sensors = v;
            *why = "out of memory";
            return -1;
        }
        k->sensors = v;
        k->nsensors++;
    }
    qsort(k->sensors, k->nsensors, sizeof *k->sensors, cmp_str);
    return 0;
}

struct apikeys *apikeys_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct apikeys *k = calloc(1, sizeof *k);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int ok = k != NULL;
    if (!ok)
        snprintf(err, errlen, "%s: out of memory", path);
    while (ok && getline(&line, &cap, f) >= 0) {
        lineno++;
        line[strcspn(line, "#\r\n")] = '\0';
        struct key one = { 0 };
        const char *why = NULL;
        if (parse_line(line, &one, &why) < 0) {
            snprintf(err, errlen, "%s:%ld: %s", path, lineno, why);
            key_free(&one);
            ok = 0;
            break;
        }
        if (!one.key)
            continue;
        if (k->n == k->cap) {
            size_t nc = k->cap ? k->cap * 2 : 16;
            struct key *v = realloc(k->v, nc * sizeof *v);
            if (!v) {
                snprintf(err, errlen, "%s: out of memory", path);
                key_free(&one);
                ok = 0;
                break;
            }
            k->v = v;
            k->cap = nc;
        }
        k->v[k->n++] = one;
    }
    if (ok && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        ok = 0;
    }
    if (ok) {
        if (k->n)   /* qsort(NULL, 0, ...) is undefined */
            qsort(k->v, k->n, sizeof *k->v, cmp_key);
        for (size_t i = 1; i < k->n; i++)
            if (k->v[i].hash == k->v[i - 1].hash && !strcmp(k->v[i].key, k->v[i - 1].key)) {
                snprintf(err, errlen, "%s: a key is listed twice", path);
                ok = 0;
                break;
            }
    }
    free(line);
    fclose(f);
    if (!ok) {
        apikeys_free(k);
        return NULL;
    }
    return k;
}

/* memcmp in time that depends only on the length. */
static int same(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static const struct key *find(const struct apikeys *k, const char *key)
{
    size_t n = strlen(key);
    uint64_t h = fnv1a(key, n);
    size_t lo = 0, hi = k->n;
    while (lo < hi) {   /* the first entry with this hash */
        size_t mid = lo + (hi - lo) / 2;
        if (k->v[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < k->n && k->v[i].hash == h; i++)
        if (k->v[i].keylen == n && same(k->v[i].key, key, n))
            return &k->v[i];
    return NULL;
}

static int allowed(const struct key *e, const char *sensor)
{
    return e->any || bsearch(&sensor, e->sensors, e->nsensors, sizeof *e->sensors, cmp_str);
}

enum apikey_result apikeys_check(const struct apikeys *k, const char *key,
                                 const struct reading_batch *b, const char **sensor)
{
    if (!key || !*key)
        return APIKEY_MISSING;
    const struct key *e = find(k, key);
    if (!e)
        return APIKEY_UNKNOWN;
    for (size_t i = 0; b && i < b->n; i++)
        if (!allowed(e, b->v[i].sensor_id)) {
            *sensor = b->v[i].sensor_id;
            return APIKEY_FORBIDDEN;
        }
    return APIKEY_OK;
}
