/* payload.c -- JSON bodies, accepted-log lines and the tags fragment. */
#include "payload.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts.h"

size_t payload_prefix(char buf[PAYLOAD_PREFIX_MAX], const char *sensor_id,
                      enum reading_type type, const char *unit)
{
    int k = snprintf(buf, PAYLOAD_PREFIX_MAX,
                     "{\"sensor_id\":\"%s\",\"type\":\"%s\",\"unit\":\"%s\",\"value\":",
                     sensor_id, reading_type_name(type), unit);
    /* ids are at most 64 bytes, type and unit names are short: the bound
     * cannot be reached, but never report more than was written. */
    if (k < 0)
        return 0;
    return (size_t)k < PAYLOAD_PREFIX_MAX ? (size_t)k : PAYLOAD_PREFIX_MAX - 1;
}

void payload_add(struct sbuf *json, struct sbuf *csv,
                 const struct sim_reading *r,
                 const char *prefix, size_t prefix_len,
                 const struct payload_fmt *fmt)
{
    char num[READING_NUMBER_MAX], ts[TS_TEXT_MAX], pbuf[PAYLOAD_PREFIX_MAX];
    size_t nlen = reading_format_number(r->value, num);
    ts_format(r->ts_us, ts);
    size_t tlen = strlen(ts);

    if (!prefix) {
        prefix_len = payload_prefix(pbuf, r->sensor_id, r->type, r->unit);
        prefix = pbuf;
    }
    /* One reservation for the whole object keeps this to a few memcpy. */
    sbuf_reserve(json, prefix_len + nlen + tlen + fmt->tags_len + 16);
    sbuf_add(json, prefix, prefix_len);
    sbuf_add(json, num, nlen);
    sbuf_add(json, ",\"ts\":\"", 7);
    sbuf_add(json, ts, tlen);
    sbuf_addc(json, '"');
    if (fmt->tags_len)
        sbuf_add(json, fmt->tags, fmt->tags_len);
    sbuf_addc(json, '}');

    if (csv) {
        sbuf_adds(csv, r->sensor_id);
        sbuf_addc(csv, ',');
        sbuf_adds(csv, reading_type_name(r->type));
        sbuf_addc(csv, ',');
        sbuf_add(csv, ts, tlen);
        sbuf_addc(csv, ',');
        sbuf_add(csv, num, nlen);
        sbuf_addc(csv, ',');
        sbuf_adds(csv, r->unit);
        sbuf_addc(csv, '\n');
    }
}

static void add_json_string(struct sbuf *out, const char *s, size_t n)
{
    sbuf_addc(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            sbuf_addc(out, '\\');
        sbuf_addc(out, s[i]);
    }
    sbuf_addc(out, '"');
}

/* No control character, and valid UTF-8: the server (jansson) refuses
 * anything else, so every request would be refused. jansson says which. */
static int tag_text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

int payload_tags(const char *spec, struct sbuf *out, char *err, size_t errlen)
{
    const char *keys[READING_TAGS_MAX];
    size_t klens[READING_TAGS_MAX];
    size_t ntags = 0;

    if (!spec || !*spec)
        return 0;
    sbuf_adds(out, ",\"tags\":{");
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        size_t klen = eq ? (size_t)(eq - p) : 0;
        if (!eq || klen == 0) {
            snprintf(err, errlen, "tag \"%.*s\" is not key=value with a non-empty key",
                     (int)(end - p), p);
            return -1;
        }
        const char *v = eq + 1;
        size_t vlen = (size_t)(end - v);
        if (klen > READING_TAG_LEN_MAX || vlen > READING_TAG_LEN_MAX) {
            snprintf(err, errlen, "tag \"%.*s\": key and value are at most %d bytes",
                     (int)(klen > 40 ? 40 : klen), p, READING_TAG_LEN_MAX);
            return -1;
        }
        if (!tag_text_ok(p, klen) || !tag_text_ok(v, vlen)) {
            snprintf(err, errlen, "tag %d contains a control character or is not UTF-8",
                     (int)ntags + 1);
            return -1;
        }
        if (ntags == READING_TAGS_MAX) {
            snprintf(err, errlen, "at most %d tags", READING_TAGS_MAX);
            return -1;
        }
        for (size_t i = 0; i < ntags; i++) {
            if (klens[i] == klen && memcmp(keys[i], p, klen) == 0) {
                snprintf(err, errlen, "tag \"%.*s\" given twice", (int)klen, p);
                return -1;
            }
        }
        keys[ntags] = p;
        klens[ntags] = klen;
        if (ntags++)
            sbuf_addc(out, ',');
        add_json_string(out, p, klen);
        sbuf_addc(out, ':');
        add_json_string(out, v, vlen);
        if (!*end)
            break;
        p = end + 1;
    }
    sbuf_addc(out, '}');
    return 0;
}
