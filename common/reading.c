/* reading.c -- the reading model: parse, validate, convert, carry over MQTT. */
#include "reading.h"
#include "ts.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct unit_def {
    const char *name;
    double scale, offset;      /* canonical = raw * scale + offset */
};

struct type_def {
    const char *name;
    const char *canonical;
    double min, max;           /* plausible range, canonical unit */
    struct unit_def units[4];  /* first one is canonical; ends at name NULL */
};

static const struct type_def types[] = {
    [READING_TEMPERATURE] = { "temperature", "C", -273.15, 10000.0,
        { { "C", 1.0, 0.0 }, { "F", 5.0 / 9.0, -32.0 * 5.0 / 9.0 },
          { "K", 1.0, -273.15 }, { NULL, 0, 0 } } },
    [READING_HUMIDITY] = { "humidity", "%", 0.0, 100.0,
        { { "%", 1.0, 0.0 }, { NULL, 0, 0 } } },
    [READING_PRESSURE] = { "pressure", "hPa", 0.0, 100000.0,
        { { "hPa", 1.0, 0.0 }, { "Pa", 0.01, 0.0 }, { "kPa", 10.0, 0.0 },
          { NULL, 0, 0 } } },
};
#define NTYPES (sizeof types / sizeof types[0])

const char *reading_type_name(enum reading_type t)
{
    return (size_t)t < NTYPES ? types[t].name : "?";
}

const char *reading_canonical_unit(enum reading_type t)
{
    return (size_t)t < NTYPES ? types[t].canonical : "?";
}

int reading_type_parse(const char *name, enum reading_type *out)
{
    for (size_t i = 0; i < NTYPES; i++) {
        if (!strcmp(name, types[i].name)) {
            *out = (enum reading_type)i;
            return 0;
        }
    }
    return -1;
}

static const struct unit_def *find_unit(enum reading_type type, const char *unit)
{
    for (const struct unit_def *u = types[type].units; u->name; u++)
        if (!strcmp(u->name, unit))
            return u;
    return NULL;
}

int reading_convert(enum reading_type type, const char *unit, double raw,
                    double *canonical, const char **unit_static)
{
    if ((size_t)type >= NTYPES)
        return -1;
    const struct unit_def *u = find_unit(type, unit);
    if (!u)
        return -1;
    if (!isfinite(raw))
        return -1;
    /* Canonical units convert as the identity, so the value is kept exactly. */
    int identity = u->scale == 1.0 && u->offset == 0.0;
    double v = identity ? raw : raw * u->scale + u->offset;
    double lo = types[type].min, hi = types[type].max;
    if (!identity) {
        /* Rounding of a conversion must not push a possible value (-459.67 F
         * is 0 K) past a bound: snap what is within rounding onto it. */
        double eps = 1e-9 * (fabs(lo) + fabs(hi) + 1.0);
        if (v < lo && v >= lo - eps)
            v = lo;
        if (v > hi && v <= hi + eps)
            v = hi;
    }
    if (!isfinite(v) || v < lo || v > hi)
        return -1;
    /* -0 would not survive JSON as a double ("-0" reads back as integer 0). */
    if (v == 0.0)
        v = 0.0;
    *canonical = v;
    *unit_static = u->name;
    return 0;
}

int reading_sensor_id_valid(const char *s, size_t len)
{
    /* [A-Za-z0-9._:-] as a bitmap of the 128 ASCII codes, one test a
     * character: this runs for every reading on both sides of MQTT (perf:
     * 2% of the machine in batch as a chain of comparisons). */
    static const uint64_t allowed[2] = {
        0x07ff600000000000ULL,   /* - . 0-9 : */
        0x07fffffe87fffffeULL,   /* A-Z _ a-z */
    };
    if (len < 1 || len > READING_SENSOR_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 128 || !(allowed[c >> 6] >> (c & 63) & 1))
            return 0;
    }
    return 1;
}

/* --- batches ------------------------------------------------------------- */

static struct reading *batch_push(struct reading_batch *b)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct reading *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return NULL;
        b->v = v;
        b->cap = cap;
    }
    struct reading *r = &b->v[b->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* Drops readings appended after 'keep' (all or nothing on errors). */
static void batch_truncate(struct reading_batch *b, size_t keep)
{
    for (size_t i = keep; i < b->n; i++) {
        free(b->v[i].tags_json);
        b->v[i].tags_json = NULL;
    }
    b->n = keep;
}

void reading_batch_clear(struct reading_batch *b)
{
    batch_truncate(b, 0);
}

void reading_batch_free(struct reading_batch *b)
{
    if (!b)
        return;
    reading_batch_clear(b);
    free(b->v);
    b->v = NULL;
    b->cap = 0;
}

/* --- errors -------------------------------------------------------------- */

/* Length of the well-formed UTF-8 character at p (the rules of RFC 3629,
 * which jansson applies too), or 0 when p does not start one. */
static size_t utf8_char_len(const unsigned char *p)
{
    size_t n;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };  /* no overlong forms */
    uint32_t c = p[0] & (0x7fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)   /* also stops at the NUL */
            return 0;
        c = c << 6 | (p[i] & 0x3fu);
    }
    return c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) ? 0 : n;
}

static int fail(struct reading_error *err, long index, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct reading_error *err, long index, const char *field, const char *fmt, ...)
{
    err->out_of_memory = 0;
    err->index = index;
    snprintf(err->field, sizeof err->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    /* The message goes back to the client in JSON, which must be UTF-8, but
     * a bound (%.40s, the buffer's end, jansson's own error text) can cut a
     * character of the quoted input in two: '?' for what is left of it. */
    for (unsigned char *p = (unsigned char *)err->message; *p;) {
        size_t n = utf8_char_len(p);
        if (n)
            p += n;
        else
            *p++ = '?';
    }
    return -1;
}

static int fail_oom(struct reading_error *err, long index, const char *field)
{
    fail(err, index, field, "out of memory");
    err->out_of_memory = 1;
    return -1;
}

static int fail_json(struct reading_error *err, const json_error_t *je)
{
    /* jansson 2.14 says nothing at all (no text, code unknown) when it
     * cannot allocate its lexer; later allocations fail with the code. */
    if (json_error_code(je) == json_error_out_of_memory || !je->text[0])
        return fail_oom(err, -1, "");
    return fail(err, -1, "", "invalid JSON: %s (line %d, column %d)",
                je->text, je->line, je->column);
}

/* --- HTTP readings ------------------------------------------------------- */

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* s (n bytes of valid UTF-8, no NUL: jansson refuses \u0000 without
 * JSON_ALLOW_NUL) as a JSON string at out, which has room for 6 * n + 2
 * bytes; escaped as jansson's json_dumps escapes (\" \\ \b \f \n \r \t,
 * other control characters as \u00XX, the rest as it is: the unit test
 * compares the two). Returns the bytes written. */
static size_t put_json_string(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char *p = out;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        }
        if (esc) {
            *p++ = esc[0];
            *p++ = esc[1];
        } else if (c < 0x20) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 15];
            p += 6;
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return (size_t)(p - out);
}

/* A validated tags object as compact JSON, in its order: what
 * json_dumps(tags, JSON_COMPACT) gives, in about a sixth of the
 * instructions (callgrind), twice per reading (ingestion parses the
 * request's tags, storage the message's). NULL on OOM. */
static char *tags_dump(const json_t *tags)
{
    const char *key;
    json_t *val;
    size_t cap = 3;   /* {} and the NUL */
    json_object_foreach((json_t *)tags, key, val)
        cap += 6 * (strlen(key) + json_string_length(val)) + 6;
    char *out = malloc(cap), *p = out;
    if (!out)
        return NULL;
    *p++ = '{';
    json_object_foreach((json_t *)tags, key, val) {
        if (p != out + 1)
            *p++ = ',';
        p += put_json_string(p, key, strlen(key));
        *p++ = ':';
        p += put_json_string(p, json_string_value(val), json_string_length(val));
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* Validates a tags object and serialises it compactly into *out. */
static int parse_tags(const json_t *tags, long idx, char **out, struct reading_error *err)
{
    if (!json_is_object(tags))
        return fail(err, idx, "tags", "must be an object of strings, got %s", json_kind(tags));
    if (json_object_size(tags) > READING_TAGS_MAX)
        return fail(err, idx, "tags", "at most %d tags, got %zu", READING_TAGS_MAX,
                    json_object_size(tags));
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)tags, key, val) {
        if (!json_is_string(val))
            return fail(err, idx, "tags", "tag '%.40s' must be a string, got %s", key,
                        json_kind(val));
        if (strlen(key) == 0 || strlen(key) > READING_TAG_LEN_MAX ||
            json_string_length(val) > READING_TAG_LEN_MAX)
            return fail(err, idx, "tags", "tag keys must be 1..%d bytes and values at most %d",
                        READING_TAG_LEN_MAX, READING_TAG_LEN_MAX);
    }
    if (!(*out = tags_dump(tags)))
        return fail_oom(err, idx, "tags");
    return 0;
}

/* An optional member: absent and JSON null are the same. */
static json_t *opt_member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* v as the shortest %g that reads back as v: how it was sent, for an
 * error message (%g alone made 100.0000001 "100"). */
static void shortest_number(double v, char buf[READING_NUMBER_MAX])
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, READING_NUMBER_MAX, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* --- a reading's fields, whichever parser read them ------------------------
 * parse_one (from jansson's tree) and scan_body_reading (from the bytes,
 * below) fill a reading through these, so that a value is accepted or
 * refused the same way by both. */

static int set_sensor_id(struct reading *r, const char *s, size_t n, long idx,
                         struct reading_error *err)
{
    if (!reading_sensor_id_valid(s, n))
        return fail(err, idx, "sensor_id", "must be 1..%d characters of [A-Za-z0-9._:-]",
                    READING_SENSOR_ID_MAX);
    memcpy(r->sensor_id, s, n);
    r->sensor_id[n] = '\0';
    return 0;
}

static int set_type(struct reading *r, const char *name, long idx, struct reading_error *err)
{
    if (reading_type_parse(name, &r->type) < 0)
        return fail(err, idx, "type", "unknown type '%.40s' (temperature, humidity, pressure)",
                    name);
    return 0;
}

static int set_raw_value(struct reading *r, double v, long idx, struct reading_error *err)
{
    if (!isfinite(v))
        return fail(err, idx, "value", "must be finite");
    r->raw_value = v == 0.0 ? 0.0 : v;   /* no -0: it does not round-trip through JSON */
    return 0;
}

/* The value in unit (NULL: the type's canonical one), converted. */
static int set_unit(struct reading *r, const char *unit, long idx, struct reading_error *err)
{
    const char *unit_name = unit ? unit : types[r->type].canonical;
    if (unit && !find_unit(r->type, unit_name))
        return fail(err, idx, "unit", "unit '%.16s' is not one of %s's units", unit_name,
                    types[r->type].name);
    if (reading_convert(r->type, unit_name, r->raw_value, &r->value, &r->raw_unit) < 0) {
        char num[READING_NUMBER_MAX];
        shortest_number(r->raw_value, num);
        return fail(err, idx, "value", "%s %s is out of range for %s", num, unit_name,
                    types[r->type].name);
    }
    return 0;
}

/* ts (NULL: absent, the time of receipt) and the time of receipt. */
static int set_times(struct reading *r, const char *ts, const struct reading_limits *lim,
                     int64_t now_us, long idx, struct reading_error *err)
{
    const char *why;
    r->ts_us = now_us;
    if (ts && ts_parse_rfc3339(ts, &r->ts_us, &why) < 0)
        return fail(err, idx, "ts", "not RFC 3339: %s", why);
    if (ts && r->ts_us - now_us > lim->max_future_us)
        return fail(err, idx, "ts", "more than %lld s in the future",
                    (long long)(lim->max_future_us / 1000000));
    r->received_at_us = now_us;
    return 0;
}

static int parse_one(const json_t *o, long idx, const struct reading_limits *lim,
                     int64_t now_us, struct reading *r, struct reading_error *err)
{
    if (!json_is_object(o))
        return fail(err, idx, "", "a reading must be an object, got %s", json_kind(o));

    const json_t *sid = json_object_get(o, "sensor_id");
    if (!sid)
        return fail(err, idx, "sensor_id", "missing");
    if (!json_is_string(sid))
        return fail(err, idx, "sensor_id", "must be a string, got %s", json_kind(sid));
    if (set_sensor_id(r, json_string_value(sid), json_string_length(sid), idx, err) < 0)
        return -1;

    const json_t *type = json_object_get(o, "type");
    if (!type)
        return fail(err, idx, "type", "missing");
    if (!json_is_string(type))
        return fail(err, idx, "type", "must be a string, got %s", json_kind(type));
    if (set_type(r, json_string_value(type), idx, err) < 0)
        return -1;

    const json_t *value = json_object_get(o, "value");
    if (!value)
        return fail(err, idx, "value", "missing");
    if (!json_is_number(value))
        return fail(err, idx, "value", "must be a number, got %s", json_kind(value));
    if (set_raw_value(r, json_number_value(value), idx, err) < 0)
        return -1;

    const json_t *unit = opt_member(o, "unit");
    if (unit && !json_is_string(unit))
        return fail(err, idx, "unit", "must be a string, got %s", json_kind(unit));
    if (set_unit(r, unit ? json_string_value(unit) : NULL, idx, err) < 0)
        return -1;

    const json_t *ts = opt_member(o, "ts");
    if (ts && !json_is_string(ts))
        return fail(err, idx, "ts", "must be an RFC 3339 string, got %s", json_kind(ts));
    if (set_times(r, ts ? json_string_value(ts) : NULL, lim, now_us, idx, err) < 0)
        return -1;

    const json_t *tags = opt_member(o, "tags");
    if (tags && parse_tags(tags, idx, &r->tags_json, err) < 0)
        return -1;
    return 0;
}

static int reading_key_cmp(const void *a, const void *b)
{
    const struct reading *x = *(const struct reading *const *)a;
    const struct reading *y = *(const struct reading *const *)b;
    if (x->ts_us != y->ts_us)
        return x->ts_us < y->ts_us ? -1 : 1;
    if (x->type != y->type)
        return x->type < y->type ? -1 : 1;
    return strcmp(x->sensor_id, y->sensor_id);
}

/* Two of the n readings at v with the same key (sensor_id, type, ts): sets
 * *first < *dup to their positions (the pair with the lowest dup) and
 * returns 1; 0 when all differ, -1 when out of memory. */
static int find_duplicate(const struct reading *v, size_t n, long *first, long *dup)
{
    const struct reading **p = malloc(n * sizeof *p);
    if (!p)
        return -1;
    for (size_t i = 0; i < n; i++)
        p[i] = &v[i];
    qsort(p, n, sizeof *p, reading_key_cmp);
    int found = 0;
    for (size_t i = 1; i < n; i++) {
        if (reading_key_cmp(&p[i - 1], &p[i]))
            continue;
        long a = p[i - 1] - v, b = p[i] - v;
        long lo = a < b ? a : b, hi = a < b ? b : a;
        if (!found || hi < *dup) {
            *first = lo;
            *dup = hi;
            found = 1;
        }
    }
    free(p);
    return found;
}

/* Parses every reading of root (an object or an array) into out. */
static int parse_root(const json_t *root, const struct reading_limits *lim, int64_t now_us,
                      struct reading_batch *out, struct reading_error *err)
{
    size_t keep = out->n;
    if (json_is_object(root)) {
        struct reading *r = batch_push(out);
        if (!r)
            return fail_oom(err, -1, "");
        if (parse_one(root, 0, lim, now_us, r, err) < 0)
            goto err;
        return 0;
    }
    if (!json_is_array(root))
        return fail(err, -1, "", "body must be a reading object or an array of readings, got %s",
                    json_kind(root));
    size_t n = json_array_size(root);
    if (n == 0)
        return fail(err, -1, "", "empty array: send 1..%zu readings", lim->max_readings);
    if (n > lim->max_readings)
        return fail(err, -1, "", "too many readings: %zu, at most %zu per request", n,
                    lim->max_readings);
    for (size_t i = 0; i < n; i++) {
        struct reading *r = batch_push(out);
        if (!r) {
            fail_oom(err, -1, "");
            goto err;
        }
        if (parse_one(json_array_get(root, i), (long)i, lim, now_us, r, err) < 0)
            goto err;
    }
    /* The key is what identifies a reading: two in one request would be
     * stored as one while the answer counted both (readings without ts all
     * get the time of receipt, so two of one sensor and type collide). */
    long first = 0, dup = 0;
    int d = n > 1 ? find_duplicate(out->v + keep, n, &first, &dup) : 0;
    if (d < 0) {
        fail_oom(err, -1, "");
        goto err;
    }
    if (d > 0) {
        fail(err, dup, "ts", "same sensor_id, type and ts as reading %ld: a reading is "
             "identified by them; give each its own ts", first);
        goto err;
    }
    return 0;
err:
    batch_truncate(out, keep);
    return -1;
}

int reading_parse_body_jansson(const char *body, size_t len, const struct reading_limits *lim,
                               int64_t now_us, struct reading_batch *out,
                               struct reading_error *err)
{
    json_error_t je;
    /* DECODE_ANY so that a bare number or string gets our clearer message. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return fail_json(err, &je);
    int rc = parse_root(root, lim, now_us, out, err);
    json_decref(root);
    return rc;
}

int reading_parse_legacy(const char *body, size_t len, const struct reading_limits *lim,
                         int64_t now_us, struct reading_batch *out, struct reading_error *err)
{
    json_error_t je;
    int rc = -1;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return fail_json(err, &je);
    /* That sensor JSON-encodes its object a second time: unwrap once. */
    if (json_is_string(root)) {
        json_t *inner = json_loadb(json_string_value(root), json_string_length(root),
                                   JSON_REJECT_DUPLICATES, &je);
        json_decref(root);
        if (!inner)
            return fail_json(err, &je);
        root = inner;
    }
    if (!json_is_object(root)) {
        fail(err, -1, "", "legacy body must be a Sensor object, got %s", json_kind(root));
        goto done;
    }
    const json_t *type = json_object_get(root, "type");
    if (type && !(json_is_string(type) && !strcmp(json_string_value(type), "Sensor"))) {
        fail(err, 0, "type", "legacy payload type must be \"Sensor\"");
        goto done;
    }
    const json_t *id = json_object_get(root, "id");
    const json_t *content = json_object_get(root, "content");
    if (!json_is_string(id) || !reading_sensor_id_valid(json_string_value(id),
                                                        json_string_length(id))) {
        fail(err, 0, "id", "must be a string of 1..%d characters of [A-Za-z0-9._:-]",
             READING_SENSOR_ID_MAX);
        goto done;
    }
    if (!json_is_object(content)) {
        fail(err, 0, "content", "missing or not an object");
        goto done;
    }
    const json_t *tf = json_object_get(content, "temperature_f");
    const json_t *tom = opt_member(content, "time_of_measurement");
    if (!json_is_number(tf)) {
        fail(err, 0, "content.temperature_f", tf ? "must be a number" : "missing");
        goto done;
    }
    size_t keep = out->n;
    struct reading *r = batch_push(out);
    if (!r) {
        fail_oom(err, -1, "");
        goto done;
    }
    memcpy(r->sensor_id, json_string_value(id), json_string_length(id) + 1);
    r->type = READING_TEMPERATURE;
    r->raw_value = json_number_value(tf);
    if (r->raw_value == 0.0)
        r->raw_value = 0.0;
    r->received_at_us = now_us;
    r->ts_us = now_us;
    if (reading_convert(r->type, "F", r->raw_value, &r->value, &r->raw_unit) < 0) {
        char num[READING_NUMBER_MAX];
        shortest_number(r->raw_value, num);
        fail(err, 0, "content.temperature_f", "%s F is out of range", num);
        batch_truncate(out, keep);
        goto done;
    }
    if (tom) {
        const char *why;
        /* Naive means UTC; an explicit offset is honoured too. */
        if (!json_is_string(tom) ||
            (ts_parse_naive_utc(json_string_value(tom), &r->ts_us, &why) < 0 &&
             ts_parse_rfc3339(json_string_value(tom), &r->ts_us, &why) < 0)) {
            fail(err, 0, "content.time_of_measurement",
                 "must be a time like 2019-08-30T12:00:00.123456");
            batch_truncate(out, keep);
            goto done;
        }
        if (r->ts_us - now_us > lim->max_future_us) {
            fail(err, 0, "content.time_of_measurement", "more than %lld s in the future",
                 (long long)(lim->max_future_us / 1000000));
            batch_truncate(out, keep);
            goto done;
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* --- MQTT batch message -------------------------------------------------- */

static int msg_reserve(struct reading_msg *m, size_t more)
{
    if (m->len + more + 1 <= m->cap)
        return 0;
    size_t cap = m->cap ? m->cap : 1024;
    while (cap < m->len + more + 1)
        cap *= 2;
    char *b = realloc(m->buf, cap);
    if (!b)
        return -1;
    m->buf = b;
    m->cap = cap;
    return 0;
}

static int msg_printf(struct reading_msg *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int msg_printf(struct reading_msg *m, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(m->buf + m->len, m->cap - m->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if ((size_t)n < m->cap - m->len) {
            m->len += (size_t)n;
            return 0;
        }
        if (msg_reserve(m, (size_t)n) < 0)
            return -1;
    }
}

/* Appends n bytes; room must have been reserved (msg_reserve). */
static void msg_put(struct reading_msg *m, const char *s, size_t n)
{
    memcpy(m->buf + m->len, s, n);
    m->len += n;
}
#define MSG_LIT(m, lit) msg_put((m), (lit), sizeof(lit) - 1)

int reading_msg_init(struct reading_msg *m, const char *instance)
{
    memset(m, 0, sizeof *m);
    /* The instance goes into JSON unescaped: only the safe id alphabet. */
    if (!reading_sensor_id_valid(instance, strlen(instance)) || msg_reserve(m, 4096) < 0)
        return -1;
    return msg_printf(m, "{\"v\":1,\"by\":\"%s\",\"readings\":[", instance);
}

int reading_msg_reserve(struct reading_msg *m, size_t len)
{
    return len > m->len ? msg_reserve(m, len - m->len) : 0;
}

/* u in decimal into out (room for 20 digits), no NUL; returns the length. */
static size_t put_u64(char *out, uint64_t u)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* v in decimal into out (room for 21 bytes), no NUL; returns the length. */
static size_t put_i64(char *out, int64_t v)
{
    if (v >= 0)
        return put_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + put_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

size_t reading_format_number(double v, char buf[READING_NUMBER_MAX])
{
    /* k / 1e6 is correctly rounded, and so is strtod of the decimal k * 1e-6:
     * both are the double nearest the same real number. So when k / 1e6 == v
     * (k below 2^53, exact), the decimal of k millionths reads back as v.
     * Written by hand (170 instructions, against 1 500 with snprintf);
     * %.17g of a double runs glibc's big-number code (perf: hack_digit,
     * __mpn_divrem). */
    double scaled = v * 1e6;
    long long k = isfinite(scaled) && fabs(scaled) < 9007199254740992.0 ? llround(scaled) : 0;
    int n;
    if ((double)k / 1e6 == v) {   /* k = 0 for v = 0 too: "0" */
        uint64_t u = k < 0 ? (uint64_t)-k : (uint64_t)k, frac = u % 1000000;
        n = 0;
        if (k < 0)
            buf[n++] = '-';
        n += (int)put_u64(buf + n, u / 1000000);
        if (frac) {   /* 21.530000 -> "21.53", 100.000000 -> "100" */
            buf[n++] = '.';
            for (uint64_t div = 100000; frac; div /= 10) {
                buf[n++] = (char)('0' + frac / div);
                frac %= div;
            }
        }
        buf[n] = '\0';
        return (size_t)n;
    }
    n = snprintf(buf, READING_NUMBER_MAX, "%.17g", v);
    return n < 0 ? 0 : (size_t)n;
}

int reading_msg_add(struct reading_msg *m, const struct reading *r)
{
    /* sensor_id, type and units come from fixed alphabets, tags_json is
     * already valid JSON: nothing here needs escaping. The numbers
     * round-trip (reading_format_number). */
    char value[READING_NUMBER_MAX], raw[READING_NUMBER_MAX], ts[24], rcv[24];
    size_t value_len = reading_format_number(r->value, value);
    size_t raw_len = reading_format_number(r->raw_value, raw);
    size_t ts_len = put_i64(ts, r->ts_us), rcv_len = put_i64(rcv, r->received_at_us);
    const char *type = types[r->type].name, *unit = types[r->type].canonical;
    size_t id_len = strlen(r->sensor_id), type_len = strlen(type), unit_len = strlen(unit);
    size_t raw_unit_len = strlen(r->raw_unit);
    size_t tags_len = r->tags_json ? strlen(r->tags_json) : 0;
    /* Piece by piece rather than snprintf: 1 500 instructions a reading
     * instead of 8 200 (callgrind), on ingestion's hot path. */
    if (msg_reserve(m, 160 + id_len + type_len + unit_len + raw_unit_len + value_len +
                       raw_len + ts_len + rcv_len + tags_len) < 0)
        return -1;
    if (m->count)
        MSG_LIT(m, ",");
    MSG_LIT(m, "{\"sensor_id\":\"");
    msg_put(m, r->sensor_id, id_len);
    MSG_LIT(m, "\",\"type\":\"");
    msg_put(m, type, type_len);
    MSG_LIT(m, "\",\"ts_us\":");
    msg_put(m, ts, ts_len);
    MSG_LIT(m, ",\"value\":");
    msg_put(m, value, value_len);
    MSG_LIT(m, ",\"unit\":\"");
    msg_put(m, unit, unit_len);
    MSG_LIT(m, "\",\"raw_value\":");
    msg_put(m, raw, raw_len);
    MSG_LIT(m, ",\"raw_unit\":\"");
    msg_put(m, r->raw_unit, raw_unit_len);
    MSG_LIT(m, "\",\"received_at_us\":");
    msg_put(m, rcv, rcv_len);
    if (r->tags_json) {
        MSG_LIT(m, ",\"tags\":");
        msg_put(m, r->tags_json, tags_len);
    }
    MSG_LIT(m, "}");
    m->buf[m->len] = '\0';
    m->count++;
    return 0;
}

int reading_request_id_valid(const char *s, size_t len)
{
    return reading_sensor_id_valid(s, len);   /* the same alphabet and length */
}

int reading_msg_add_rid(struct reading_msg *m, const char *rid)
{
    size_t n = strlen(rid);
    if (!reading_request_id_valid(rid, n))
        return -1;
    if (m->nrids >= READING_MSG_RIDS_MAX)
        return 0;
    /* The last one recorded: "...,"<rid>"" ends the buffer. */
    if (m->rids_len >= n + 2 && m->rids[m->rids_len - 1] == '"' &&
        !memcmp(m->rids + m->rids_len - 1 - n, rid, n) &&
        m->rids[m->rids_len - 2 - n] == '"' &&
        (m->rids_len == n + 2 || m->rids[m->rids_len - 3 - n] == ','))
        return 0;
    size_t need = m->rids_len + n + 4;
    if (need > m->rids_cap) {
        size_t cap = m->rids_cap ? m->rids_cap * 2 : 256;
        while (cap < need)
            cap *= 2;
        char *b = realloc(m->rids, cap);
        if (!b)
            return -1;
        m->rids = b;
        m->rids_cap = cap;
    }
    char *p = m->rids + m->rids_len;
    if (m->nrids)
        *p++ = ',';
    *p++ = '"';
    memcpy(p, rid, n);
    p += n;
    *p++ = '"';
    *p = '\0';
    m->rids_len = (size_t)(p - m->rids);
    m->nrids++;
    return 0;
}

int reading_msg_finish(struct reading_msg *m)
{
    if (m->nrids)
        return msg_printf(m, "],\"rids\":[%.*s]}", (int)m->rids_len, m->rids);
    return msg_printf(m, "]}");
}

size_t reading_msg_size(const struct reading_msg *m)
{
    /* What reading_msg_finish() appends: ],"rids":[...]} or ]} */
    return m->len + (m->nrids ? m->rids_len + 12 : 2);
}

struct reading_msg_mark reading_msg_mark(const struct reading_msg *m)
{
    return (struct reading_msg_mark){ m->len, m->count, m->rids_len, m->nrids };
}

void reading_msg_rollback(struct reading_msg *m, struct reading_msg_mark mark)
{
    m->len = mark.len;
    m->count = mark.count;
    m->rids_len = mark.rids_len;
    m->nrids = mark.nrids;
}

void reading_msg_free(struct reading_msg *m)
{
    if (!m)
        return;
    free(m->buf);
    free(m->rids);
    memset(m, 0, sizeof *m);
}

uint64_t reading_msg_digest(const void *payload, size_t len)
{
    const unsigned char *p = payload;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static const char hex_digits[] = "0123456789abcdef";
static const char CONFIRM_ID_PREFIX[] = "id:";
#define CONFIRM_ID_PREFIX_LEN (sizeof CONFIRM_ID_PREFIX - 1)
#define CONFIRM_HEX_LEN 16
_Static_assert(READING_CONFIRM_MAX == CONFIRM_ID_PREFIX_LEN + CONFIRM_HEX_LEN + 1,
               "READING_CONFIRM_MAX holds the longest confirmation");

void reading_msg_id_bytes(uint64_t id, unsigned char out[READING_MSG_ID_LEN])
{
    for (int i = READING_MSG_ID_LEN - 1; i >= 0; i--, id >>= 8)
        out[i] = (unsigned char)(id & 0xff);
}

static void put_hex64(char *out, uint64_t v)
{
    for (int i = CONFIRM_HEX_LEN - 1; i >= 0; i--, v >>= 4)
        out[i] = hex_digits[v & 0xf];
}

size_t reading_confirm_format(char *out, const void *corr, size_t corrlen,
                              const void *payload, size_t len)
{
    size_t n = 0;
    uint64_t v;
    if (corr && corrlen == READING_MSG_ID_LEN) {
        const unsigned char *b = corr;
        v = 0;
        for (size_t i = 0; i < READING_MSG_ID_LEN; i++)
            v = v << 8 | b[i];
        memcpy(out, CONFIRM_ID_PREFIX, CONFIRM_ID_PREFIX_LEN);
        n = CONFIRM_ID_PREFIX_LEN;
    } else {
        v = reading_msg_digest(payload, len);
    }
    put_hex64(out + n, v);
    out[n + CONFIRM_HEX_LEN] = '\0';
    return n + CONFIRM_HEX_LEN;
}

enum reading_confirm_kind reading_confirm_parse(const void *buf, size_t len, uint64_t *value)
{
    const char *s = buf;
    enum reading_confirm_kind kind = READING_CONFIRM_DIGEST;
    if (len == CONFIRM_ID_PREFIX_LEN + CONFIRM_HEX_LEN &&
        !memcmp(s, CONFIRM_ID_PREFIX, CONFIRM_ID_PREFIX_LEN)) {
        kind = READING_CONFIRM_ID;
        s += CONFIRM_ID_PREFIX_LEN;
    } else if (len != CONFIRM_HEX_LEN) {
        return READING_CONFIRM_NONE;
    }
    uint64_t v = 0;
    for (int i = 0; i < CONFIRM_HEX_LEN; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return READING_CONFIRM_NONE;
        v = v << 4 | (uint64_t)d;
    }
    *value = v;
    return kind;
}

static int get_i64(const json_t *o, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* What decode_one and scan_reading check alike once a reading's fields are
 * read: no -0 (as in parse_one: reading_msg_add writes it "-0", which reads
 * back as +0, so a decoded -0.0 would not survive being sent again),
 * raw_unit a unit of the type with raw_value possible in it (sets
 * r->raw_unit), value in range, both times in TS_MIN_US..TS_MAX_US.
 * Returns NULL, or the field at fault. */
static const char *check_decoded(struct reading *r, const char *raw_unit)
{
    double check;
    if (r->value == 0.0)
        r->value = 0.0;
    if (r->raw_value == 0.0)
        r->raw_value = 0.0;
    if (reading_convert(r->type, raw_unit, r->raw_value, &check, &r->raw_unit) < 0)
        return "raw_unit";
    if (!isfinite(r->value) || r->value < types[r->type].min ||
        r->value > types[r->type].max)
        return "value";
    if (r->ts_us < TS_MIN_US || r->ts_us > TS_MAX_US)
        return "ts_us";
    if (r->received_at_us < TS_MIN_US || r->received_at_us > TS_MAX_US)
        return "received_at_us";
    return NULL;
}

static int decode_one(const json_t *o, long idx, struct reading *r, struct reading_error *err)
{
    if (!json_is_object(o))
        return fail(err, idx, "", "a reading must be an object, got %s", json_kind(o));
    const json_t *sid = json_object_get(o, "sensor_id");
    if (!json_is_string(sid) ||
        !reading_sensor_id_valid(json_string_value(sid), json_string_length(sid)))
        return fail(err, idx, "sensor_id", "missing or invalid");
    memcpy(r->sensor_id, json_string_value(sid), json_string_length(sid) + 1);
    const json_t *type = json_object_get(o, "type");
    if (!json_is_string(type) || reading_type_parse(json_string_value(type), &r->type) < 0)
        return fail(err, idx, "type", "missing or unknown");
    const json_t *unit = json_object_get(o, "unit");
    if (!json_is_string(unit) || strcmp(json_string_value(unit), types[r->type].canonical))
        return fail(err, idx, "unit", "missing or not the canonical unit of %s",
                    types[r->type].name);
    const json_t *value = json_object_get(o, "value");
    const json_t *raw = json_object_get(o, "raw_value");
    if (!json_is_number(value) || !json_is_number(raw))
        return fail(err, idx, "value", "value and raw_value must be numbers");
    r->value = json_number_value(value);
    r->raw_value = json_number_value(raw);
    const json_t *raw_unit = json_object_get(o, "raw_unit");
    if (!json_is_string(raw_unit))
        return fail(err, idx, "raw_unit", "missing, unknown for the type, or value out of range");
    if (get_i64(o, "ts_us", &r->ts_us) < 0)
        return fail(err, idx, "ts_us", "missing or out of range");
    if (get_i64(o, "received_at_us", &r->received_at_us) < 0)
        return fail(err, idx, "received_at_us", "missing or out of range");
    const char *bad = check_decoded(r, json_string_value(raw_unit));
    if (bad && !strcmp(bad, "raw_unit"))
        return fail(err, idx, bad, "missing, unknown for the type, or value out of range");
    if (bad && !strcmp(bad, "value"))
        return fail(err, idx, bad, "out of range for %s", types[r->type].name);
    if (bad)
        return fail(err, idx, bad, "missing or out of range");
    const json_t *tags = opt_member(o, "tags");
    if (tags && parse_tags(tags, idx, &r->tags_json, err) < 0)
        return -1;
    return 0;
}

/* Appends request id number i (n bytes, valid) to *out (outlen bytes, used
 * so far), comma-separated. When it does not fit, "..." ends *out and *out
 * becomes NULL: the rest are only validated. */
static void rids_put(char **out, size_t outlen, size_t *used, const char *id, size_t n,
                     size_t i)
{
    if (!*out || !outlen)
        return;
    if (*used + n + (i ? 1 : 0) + 4 > outlen) {
        if (*used + 4 <= outlen) {
            memcpy(*out + *used, "...", 4);
            *used += 3;
        }
        *out = NULL;
        return;
    }
    if (i)
        (*out)[(*used)++] = ',';
    memcpy(*out + *used, id, n);
    *used += n;
    (*out)[*used] = '\0';
}

/* The "rids" member: absent, or an array of valid request ids, written to
 * out comma-separated. Returns 0, or -1 with err filled. */
static int decode_rids(const json_t *arr, char *out, size_t outlen, struct reading_error *err)
{
    size_t used = 0;
    if (out && outlen)
        out[0] = '\0';
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > READING_MSG_RIDS_MAX)
        return fail(err, -1, "rids", "not an array of request ids");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *id = json_array_get(arr, i);
        if (!json_is_string(id) ||
            !reading_request_id_valid(json_string_value(id), json_string_length(id)))
            return fail(err, -1, "rids", "not an array of request ids");
        rids_put(&out, outlen, &used, json_string_value(id), json_string_length(id), i);
    }
    return 0;
}

/* --- plain JSON, read without jansson ----------------------------------
 * jansson's lexer makes a call, a UTF-8 check and a buffer append for each
 * byte, and builds a tree to be walked and freed: about 42 000 instructions
 * a reading in storage's decode (callgrind), 25 000 in ingestion's parse of
 * a request, most of what either spent on a reading. Two readers here take
 * the common case directly: plain_message a message in the form
 * reading_msg_* writes (storage), plain_body a request of plain readings
 * (ingestion: members in any order, whitespace, strings of printable ASCII
 * without escapes). Both make the same checks as the jansson path, and both
 * decline anything else (other members or key orders, escapes, text beyond
 * ASCII, numbers out of range, anything invalid), which then goes through
 * jansson: it stays the definition of what is accepted and says what is
 * wrong. The fuzz targets and unit tests compare the two ways on every
 * input (reading_decode_message_jansson, reading_parse_body_jansson). */

struct scan {
    const char *p, *end;
};

static int scan_lit(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n))
        return 0;
    s->p += n;
    return 1;
}
#define SCAN_LIT(s, lit) scan_lit((s), (lit), sizeof(lit) - 1)

/* A string's bytes up to its closing quote (then consumed), when they are
 * all 0x20..0x7f and no backslash: text jansson would give back as it is. */
static int scan_plain_string(struct scan *s, const char **str, size_t *len)
{
    const char *q = s->p;
    while (q < s->end && *q != '"') {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c >= 0x80 || c == '\\')
            return 0;
        q++;
    }
    if (q == s->end)
        return 0;
    *str = s->p;
    *len = (size_t)(q - s->p);
    s->p = q + 1;
    return 1;
}

/* A plain string that is one of the names in a short list (type, units),
 * as a C string in buf. */
static int scan_name(struct scan *s, char *buf, size_t cap)
{
    const char *str;
    size_t n;
    if (!scan_plain_string(s, &str, &n) || n >= cap)
        return 0;
    memcpy(buf, str, n);
    buf[n] = '\0';
    return 1;
}

static int is_digit(const char *q, const char *end)
{
    return q < end && *q >= '0' && *q <= '9';
}

/* A JSON number, as jansson reads it: an integer (no fraction, no exponent)
 * through strtoll, which must not overflow, and the rest through strtod,
 * which must not overflow either (jansson refuses both). */
static int scan_number(struct scan *s, double *d, int64_t *i, int *is_int)
{
    const char *q = s->p;
    char buf[64];
    if (q < s->end && *q == '-')
        q++;
    if (!is_digit(q, s->end))
        return 0;
    if (*q == '0')
        q++;
    else
        while (is_digit(q, s->end))
            q++;
    *is_int = 1;
    if (q < s->end && *q == '.') {
        if (!is_digit(++q, s->end))
            return 0;
        while (is_digit(q, s->end))
            q++;
        *is_int = 0;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (!is_digit(q, s->end))
            return 0;
        while (is_digit(q, s->end))
            q++;
        *is_int = 0;
    }
    size_t n = (size_t)(q - s->p);
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, s->p, n);
    buf[n] = '\0';
    errno = 0;
    if (*is_int) {
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return 0;
        *i = (int64_t)v;
        *d = (double)v;
    } else {
        *d = strtod(buf, NULL);
        if (isinf(*d))
            return 0;
    }
    s->p = q;
    return 1;
}

static int scan_i64(struct scan *s, int64_t *out)
{
    double d;
    int is_int;
    return scan_number(s, &d, out, &is_int) && is_int;
}

static int scan_double(struct scan *s, double *out)
{
    int64_t i;
    int is_int;
    return scan_number(s, out, &i, &is_int);
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* After an object's member: 1 when another follows (the comma read), 0
 * at the object's end (the brace read), -1 for anything else. */
static int scan_member_end(struct scan *s)
{
    skip_ws(s);
    if (SCAN_LIT(s, "}"))
        return 0;
    if (!SCAN_LIT(s, ","))
        return -1;
    skip_ws(s);
    return 1;
}

/* A tags object of plain strings within parse_tags's limits, whitespace
 * allowed between its tokens; *out is its compact form, which is what
 * tags_dump would write for it (plain strings need no escape). */
static int scan_tags(struct scan *s, char **out)
{
    const char *key[READING_TAGS_MAX], *val[READING_TAGS_MAX];
    size_t klen[READING_TAGS_MAX], vlen[READING_TAGS_MAX], n = 0, cap = 3;
    if (!SCAN_LIT(s, "{"))
        return 0;
    skip_ws(s);
    if (!SCAN_LIT(s, "}")) {
        for (;;) {
            if (n == READING_TAGS_MAX || !SCAN_LIT(s, "\"") ||
                !scan_plain_string(s, &key[n], &klen[n]))
                return 0;
            skip_ws(s);
            if (!SCAN_LIT(s, ":"))
                return 0;
            skip_ws(s);
            if (!SCAN_LIT(s, "\"") || !scan_plain_string(s, &val[n], &vlen[n]) ||
                klen[n] == 0 || klen[n] > READING_TAG_LEN_MAX || vlen[n] > READING_TAG_LEN_MAX)
                return 0;
            for (size_t j = 0; j < n; j++)
                if (klen[j] == klen[n] && !memcmp(key[j], key[n], klen[n]))
                    return 0;   /* a duplicate key: jansson refuses it */
            cap += klen[n] + vlen[n] + 6;
            n++;
            int more = scan_member_end(s);
            if (more < 0)
                return 0;
            if (!more)
                break;
        }
    }
    char *p = malloc(cap);
    if (!(*out = p))
        return 0;
    *p++ = '{';
    for (size_t j = 0; j < n; j++) {
        if (j)
            *p++ = ',';
        *p++ = '"';
        memcpy(p, key[j], klen[j]);
        p += klen[j];
        memcpy(p, "\":\"", 3);
        p += 3;
        memcpy(p, val[j], vlen[j]);
        p += vlen[j];
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return 1;
}

/* One reading as reading_msg_add writes it, with decode_one's checks. */
static int scan_reading(struct scan *s, struct reading *r)
{
    const char *str;
    size_t n;
    char type[16], unit[8], raw_unit[8];
    if (!SCAN_LIT(s, "{\"sensor_id\":\"") || !scan_plain_string(s, &str, &n) ||
        !reading_sensor_id_valid(str, n))
        return 0;
    memcpy(r->sensor_id, str, n);
    r->sensor_id[n] = '\0';
    if (!SCAN_LIT(s, ",\"type\":\"") || !scan_name(s, type, sizeof type) ||
        reading_type_parse(type, &r->type) < 0 ||
        !SCAN_LIT(s, ",\"ts_us\":") || !scan_i64(s, &r->ts_us) ||
        !SCAN_LIT(s, ",\"value\":") || !scan_double(s, &r->value) ||
        !SCAN_LIT(s, ",\"unit\":\"") || !scan_name(s, unit, sizeof unit) ||
        strcmp(unit, types[r->type].canonical) ||
        !SCAN_LIT(s, ",\"raw_value\":") || !scan_double(s, &r->raw_value) ||
        !SCAN_LIT(s, ",\"raw_unit\":\"") || !scan_name(s, raw_unit, sizeof raw_unit) ||
        !SCAN_LIT(s, ",\"received_at_us\":") || !scan_i64(s, &r->received_at_us))
        return 0;
    if (check_decoded(r, raw_unit))
        return 0;
    if (SCAN_LIT(s, ",\"tags\":") && !scan_tags(s, &r->tags_json))
        return 0;
    return SCAN_LIT(s, "}");
}

/* The whole message in the canonical form: 1 and the readings appended, or
 * 0 and out as it was (then jansson decides). */
static int plain_message(const char *payload, size_t len, char *by, size_t bylen,
                         char *rids, size_t ridslen, struct reading_batch *out)
{
    struct scan s = { payload, payload + len };
    const char *who;
    size_t wlen, keep = out->n;
    if (!SCAN_LIT(&s, "{\"v\":1,\"by\":\"") || !scan_plain_string(&s, &who, &wlen) ||
        !reading_sensor_id_valid(who, wlen) || wlen >= bylen ||
        !SCAN_LIT(&s, ",\"readings\":["))
        return 0;
    do {
        struct reading *r = batch_push(out);
        if (!r || !scan_reading(&s, r))
            goto decline;
    } while (SCAN_LIT(&s, ","));
    if (!SCAN_LIT(&s, "]"))
        goto decline;
    if (rids && ridslen)
        rids[0] = '\0';
    if (SCAN_LIT(&s, ",\"rids\":[") && !SCAN_LIT(&s, "]")) {
        size_t used = 0, i = 0;
        char *w = rids;
        do {
            const char *id;
            size_t n;
            if (i == READING_MSG_RIDS_MAX || !SCAN_LIT(&s, "\"") ||
                !scan_plain_string(&s, &id, &n) || !reading_request_id_valid(id, n))
                goto decline;
            rids_put(&w, ridslen, &used, id, n, i++);
        } while (SCAN_LIT(&s, ","));
        if (!SCAN_LIT(&s, "]"))
            goto decline;
    }
    if (!SCAN_LIT(&s, "}") || s.p != s.end)
        goto decline;
    memcpy(by, who, wlen);
    by[wlen] = '\0';
    return 1;
decline:
    batch_truncate(out, keep);
    return 0;
}

/* A member of a reading in a request, as a bit of what was seen. */
enum { M_SENSOR_ID = 1, M_TYPE = 2, M_VALUE = 4, M_UNIT = 8, M_TS = 16, M_TAGS = 32 };

static int member_bit(const char *name, size_t n)
{
#define MEMBER(lit, bit) { lit, sizeof(lit) - 1, bit }
    static const struct { const char *name; size_t len; int bit; } members[] = {
        MEMBER("sensor_id", M_SENSOR_ID), MEMBER("type", M_TYPE), MEMBER("value", M_VALUE),
        MEMBER("unit", M_UNIT), MEMBER("ts", M_TS), MEMBER("tags", M_TAGS),
    };
#undef MEMBER
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        if (members[i].len == n && !memcmp(members[i].name, name, n))
            return members[i].bit;
    return 0;
}

/* One reading object of a request: its members in any order, each once, of
 * the kinds parse_one takes (unit, ts and tags also null), whitespace
 * between tokens, no other member; the values checked by the same set_*
 * as parse_one's. 1 and r filled, or 0. */
static int scan_body_reading(struct scan *s, const struct reading_limits *lim, int64_t now_us,
                             struct reading *r)
{
    const char *sid = NULL, *name;
    size_t sid_len = 0, n;
    char type[16], unit[8], ts[TS_TEXT_MAX];
    double value = 0;
    int seen = 0, has_unit = 0, has_ts = 0;
    struct reading_error ignored;

    if (!SCAN_LIT(s, "{"))
        return 0;
    skip_ws(s);
    for (;;) {
        if (!SCAN_LIT(s, "\"") || !scan_plain_string(s, &name, &n))
            return 0;
        int bit = member_bit(name, n);
        if (!bit || (seen & bit))
            return 0;
        seen |= bit;
        skip_ws(s);
        if (!SCAN_LIT(s, ":"))
            return 0;
        skip_ws(s);
        int ok = 1, null = (bit & (M_UNIT | M_TS | M_TAGS)) && SCAN_LIT(s, "null");
        if (bit == M_SENSOR_ID)
            ok = SCAN_LIT(s, "\"") && scan_plain_string(s, &sid, &sid_len);
        else if (bit == M_TYPE)
            ok = SCAN_LIT(s, "\"") && scan_name(s, type, sizeof type);
        else if (bit == M_VALUE)
            ok = scan_double(s, &value);
        else if (bit == M_UNIT && !null)
            ok = has_unit = SCAN_LIT(s, "\"") && scan_name(s, unit, sizeof unit);
        else if (bit == M_TS && !null)
            ok = has_ts = SCAN_LIT(s, "\"") && scan_name(s, ts, sizeof ts);
        else if (bit == M_TAGS && !null)
            ok = scan_tags(s, &r->tags_json);
        int more = ok ? scan_member_end(s) : -1;
        if (more < 0)
            return 0;
        if (!more)
            break;
    }
    if ((seen & (M_SENSOR_ID | M_TYPE | M_VALUE)) != (M_SENSOR_ID | M_TYPE | M_VALUE))
        return 0;
    return set_sensor_id(r, sid, sid_len, 0, &ignored) == 0 &&
           set_type(r, type, 0, &ignored) == 0 &&
           set_raw_value(r, value, 0, &ignored) == 0 &&
           set_unit(r, has_unit ? unit : NULL, 0, &ignored) == 0 &&
           set_times(r, has_ts ? ts : NULL, lim, now_us, 0, &ignored) == 0;
}

/* A whole request body of such readings, valid as parse_root sees it: 1
 * and the readings appended, or 0 and out as it was (then jansson decides,
 * and says what is wrong). */
static int plain_body(const char *body, size_t len, const struct reading_limits *lim,
                      int64_t now_us, struct reading_batch *out)
{
    struct scan s = { body, body + len };
    size_t keep = out->n, n = 0;
    struct reading *r;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '{') {
        if (!(r = batch_push(out)) || !scan_body_reading(&s, lim, now_us, r))
            goto decline;
    } else {
        if (!SCAN_LIT(&s, "["))
            goto decline;
        do {
            skip_ws(&s);
            if (n == lim->max_readings || !(r = batch_push(out)) ||
                !scan_body_reading(&s, lim, now_us, r))
                goto decline;
            n++;
            skip_ws(&s);
        } while (SCAN_LIT(&s, ","));
        long first, dup;
        if (!SCAN_LIT(&s, "]") || (n > 1 && find_duplicate(out->v + keep, n, &first, &dup)))
            goto decline;
    }
    skip_ws(&s);
    if (s.p == s.end)
        return 1;
decline:
    batch_truncate(out, keep);
    return 0;
}

int reading_parse_body(const char *body, size_t len, const struct reading_limits *lim,
                       int64_t now_us, struct reading_batch *out, struct reading_error *err)
{
    if (plain_body(body, len, lim, now_us, out))
        return 0;
    return reading_parse_body_jansson(body, len, lim, now_us, out, err);
}

int reading_decode_message(const void *payload, size_t len, char *by, size_t bylen,
                           char *rids, size_t ridslen,
                           struct reading_batch *out, struct reading_error *err)
{
    if (plain_message(payload, len, by, bylen, rids, ridslen, out))
        return 0;
    return reading_decode_message_jansson(payload, len, by, bylen, rids, ridslen, out, err);
}

int reading_decode_message_jansson(const void *payload, size_t len, char *by, size_t bylen,
                                   char *rids, size_t ridslen,
                                   struct reading_batch *out, struct reading_error *err)
{
    json_error_t je;
    int rc = -1;
    size_t keep = out->n;
    json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail_json(err, &je);
    const json_t *v = json_object_get(root, "v");
    const json_t *who = json_object_get(root, "by");
    const json_t *arr = json_object_get(root, "readings");
    if (!json_is_integer(v) || json_integer_value(v) != 1) {
        fail(err, -1, "v", "unsupported message version (expected 1)");
        goto done;
    }
    if (!json_is_string(who) ||
        !reading_sensor_id_valid(json_string_value(who), json_string_length(who)) ||
        json_string_length(who) >= bylen) {
        fail(err, -1, "by", "missing or invalid instance");
        goto done;
    }
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        fail(err, -1, "readings", "missing or empty");
        goto done;
    }
    if (decode_rids(json_object_get(root, "rids"), rids, ridslen, err) < 0)
        goto done;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        struct reading *r = batch_push(out);
        if (!r) {
            fail_oom(err, -1, "");
            goto done;
        }
        if (decode_one(json_array_get(arr, i), (long)i, r, err) < 0)
            goto done;
    }
    memcpy(by, json_string_value(who), json_string_length(who) + 1);
    rc = 0;
done:
    if (rc < 0)
        batch_truncate(out, keep);
    json_decref(root);
    return rc;
}
