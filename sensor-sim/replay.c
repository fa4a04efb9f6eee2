/* replay.c -- CSV replay: line reading and row validation. */
#include "replay.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ts.h"

struct replay {
    FILE *fp;
    char *line;
    size_t cap;
    long lineno;
};

struct replay *replay_open(const char *path, char *err, size_t errlen)
{
    struct replay *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->fp = fopen(path, "re");
    if (!r->fp) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        free(r);
        return NULL;
    }
    return r;
}

void replay_close(struct replay *r)
{
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    free(r->line);
    free(r);
}

long replay_line(const struct replay *r)
{
    return r->lineno;
}

int replay_rewind(struct replay *r, char *err, size_t errlen)
{
    if (fseek(r->fp, 0, SEEK_SET) != 0) {
        snprintf(err, errlen, "cannot rewind: %s", strerror(errno));
        return -1;
    }
    clearerr(r->fp);
    r->lineno = 0;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static int number_ok(const char *s)
{
    /* strtod alone would also take "inf", "nan" and hex floats, which are
     * not JSON numbers. */
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789+-.eE", *p))
            return 0;
    return 1;
}

int replay_parse_line(char *line, int allow_header, struct sim_reading *out,
                      char *why, size_t whylen)
{
    char *f[6];
    int nf = 0;
    char *p = line;

    if (!*trim(line))
        return 0;
    for (;;) {
        char *c = strchr(p, ',');
        if (nf < 6)
            f[nf] = p;
        nf++;
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    if (nf != 5) {
        snprintf(why, whylen, "expected 5 fields ts,sensor_id,type,value,unit, got %d", nf);
        return -1;
    }
    for (int i = 0; i < 5; i++)
        f[i] = trim(f[i]);

    if (allow_header && strcasecmp(f[0], "ts") == 0 && strcasecmp(f[1], "sensor_id") == 0 &&
        strcasecmp(f[2], "type") == 0 && strcasecmp(f[3], "value") == 0 &&
        strcasecmp(f[4], "unit") == 0)
        return 0;

    const char *tswhy = NULL;
    if (ts_parse_rfc3339(f[0], &out->ts_us, &tswhy) != 0) {
        snprintf(why, whylen, "bad ts \"%.40s\": %s", f[0], tswhy ? tswhy : "not RFC 3339");
        return -1;
    }
    if (!reading_sensor_id_valid(f[1], strlen(f[1]))) {
        snprintf(why, whylen, "bad sensor_id \"%.70s\": want [A-Za-z0-9._:-]{1,64}", f[1]);
        return -1;
    }
    out->sensor_id = f[1];
    if (reading_type_parse(f[2], &out->type) != 0) {
        snprintf(why, whylen, "bad type \"%.40s\": want temperature, humidity or pressure", f[2]);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(f[3], &end);
    if (!number_ok(f[3]) || !end || *end || errno == ERANGE || !isfinite(v)) {
        snprintf(why, whylen, "bad value \"%.40s\": not a finite decimal number", f[3]);
        return -1;
    }
    out->value = v;
    double canonical;
    const char *unit_static = NULL;
    if (reading_convert(out->type, f[4], v, &canonical, &unit_static) != 0 || !unit_static) {
        snprintf(why, whylen, "bad unit or value: %.40s %.40s is not a possible %s",
                 f[3], f[4], reading_type_name(out->type));
        return -1;
    }
    /* The static name, so the reading outlives the line buffer's unit. */
    out->unit = unit_static;
    return 1;
}

int replay_next(struct replay *r, struct sim_reading *out, char *err, size_t errlen)
{
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->cap, r->fp);
        if (n < 0) {
            if (ferror(r->fp)) {
                snprintf(err, errlen, "line %ld: read error: %s", r->lineno + 1,
                         strerror(errno ? errno : EIO));
                return -1;
            }
            return 0;
        }
        r->lineno++;
        char *s = r->line;
        if ((size_t)n != strlen(s)) {
            snprintf(err, errlen, "line %ld: contains a NUL byte", r->lineno);
            return -1;
        }
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
            s[--n] = '\0';
        if (r->lineno == 1 && (unsigned char)s[0] == 0xef &&
            (unsigned char)s[1] == 0xbb && (unsigned char)s[2] == 0xbf)
            s += 3;
        if (n > REPLAY_LINE_MAX) {
            snprintf(err, errlen, "line %ld: longer than %d bytes", r->lineno, REPLAY_LINE_MAX);
            return -1;
        }
        char why[200];
        int rc = replay_parse_line(s, r->lineno == 1, out, why, sizeof why);
        if (rc < 0) {
            snprintf(err, errlen, "line %ld: %s", r->lineno, why);
            return -1;
        }
        if (rc > 0)
            return 1;
    }
}
