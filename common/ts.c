/* ts.c -- time as int64 microseconds since the epoch, and RFC 3339 text. */
#include "ts.h"

#include <stdio.h>
#include <time.h>

int64_t ts_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int64_t ts_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): exact for every year we accept, no time zone involved. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Reads exactly n digits. Returns the number, or -1. */
static int digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

/* Parses the date, time and fraction; stops at the offset. */
static int parse_local(const char **sp, int64_t *out_us, const char **why)
{
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    const char *p = *sp;
    int y, mo, d, h, mi, s;

    if ((y = digits(&p, 4)) < 1 || *p++ != '-' || (mo = digits(&p, 2)) < 0 ||
        *p++ != '-' || (d = digits(&p, 2)) < 0) {
        *why = "expected a date YYYY-MM-DD";
        return -1;
    }
    if (*p != 'T' && *p != 't' && *p != ' ') {
        *why = "expected 'T' between date and time";
        return -1;
    }
    p++;
    if ((h = digits(&p, 2)) < 0 || *p++ != ':' || (mi = digits(&p, 2)) < 0 ||
        *p++ != ':' || (s = digits(&p, 2)) < 0) {
        *why = "expected a time HH:MM:SS";
        return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && is_leap(y)) || h > 23 || mi > 59 || s > 59) {
        /* Leap second 60 is refused: PostgreSQL has none either. */
        *why = "date or time out of range";
        return -1;
    }
    int64_t frac_us = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 6)
                frac_us = frac_us * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0) {
            *why = "expected digits after '.'";
            return -1;
        }
        for (; n < 6; n++)
            frac_us *= 10;
    }
    int64_t days = days_from_civil(y, mo, d);
    *out_us = ((days * 86400) + h * 3600 + mi * 60 + s) * 1000000 + frac_us;
    *sp = p;
    return 0;
}

int ts_parse_rfc3339(const char *s, int64_t *out_us, const char **why)
{
    const char *p = s;
    int64_t us;
    if (parse_local(&p, &us, why) < 0)
        return -1;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh, om;
        if ((oh = digits(&p, 2)) < 0 || *p++ != ':' || (om = digits(&p, 2)) < 0 ||
            oh > 23 || om > 59) {
            *why = "offset must be Z or +HH:MM/-HH:MM";
            return -1;
        }
        us -= sign * ((int64_t)oh * 3600 + om * 60) * 1000000;
        if (us < TS_MIN_US || us > TS_MAX_US) {
            *why = "outside years 0001..9999 once the offset is applied";
            return -1;
        }
    } else {
        *why = *p ? "offset must be Z or +HH:MM/-HH:MM" : "missing offset (Z or +HH:MM)";
        return -1;
    }
    if (*p != '\0') {
        *why = "trailing characters after the offset";
        return -1;
    }
    *out_us = us;
    return 0;
}

int ts_parse_naive_utc(const char *s, int64_t *out_us, const char **why)
{
    const char *p = s;
    int64_t us;
    if (parse_local(&p, &us, why) < 0)
        return -1;
    if (*p != '\0') {
        *why = "expected a time without offset";
        return -1;
    }
    *out_us = us;
    return 0;
}

/* v as exactly n decimal digits, zero-padded (v < 10^n). */
static void put_digits(char *out, unsigned v, int n)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

void ts_format(int64_t us, char buf[TS_TEXT_MAX])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {   /* outside what is accepted: as printf has it */
        snprintf(buf, TS_TEXT_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                 (int)y, m, d, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60),
                 (int)frac);
        return;
    }
    /* By hand: storage writes two of these per reading, and snprintf
     * took 3 650 instructions for each (callgrind), this 340. */
    put_digits(buf, (unsigned)y, 4);
    buf[4] = '-';
    put_digits(buf + 5, (unsigned)m, 2);
    buf[7] = '-';
    put_digits(buf + 8, (unsigned)d, 2);
    buf[10] = 'T';
    put_digits(buf + 11, (unsigned)(rem / 3600), 2);
    buf[13] = ':';
    put_digits(buf + 14, (unsigned)(rem / 60 % 60), 2);
    buf[16] = ':';
    put_digits(buf + 17, (unsigned)(rem % 60), 2);
    buf[19] = '.';
    put_digits(buf + 20, (unsigned)frac, 6);
    buf[26] = 'Z';
    buf[27] = '\0';
}
