/* backoff.c -- exponential backoff with full jitter, Retry-After parsing. */
#include "backoff.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t backoff_ceiling_us(unsigned failures)
{
    if (failures < 1)
        failures = 1;
    int64_t c = BACKOFF_BASE_US;
    for (unsigned i = 1; i < failures && c < BACKOFF_CAP_US; i++)
        c *= 2;
    return c < BACKOFF_CAP_US ? c : BACKOFF_CAP_US;
}

int64_t backoff_delay_us(unsigned failures, uint64_t r, int64_t retry_after_us)
{
    int64_t ceil = backoff_ceiling_us(failures);
    /* The low and high halves of r serve two draws. */
    int64_t d = (int64_t)((r & 0xffffffffULL) % (uint64_t)(ceil + 1));
    if (retry_after_us >= 0) {
        int64_t ra = retry_after_us < BACKOFF_RETRY_AFTER_MAX_US
                   ? retry_after_us : BACKOFF_RETRY_AFTER_MAX_US;
        int64_t floor = ra + (int64_t)((r >> 32) % (uint64_t)(ra / 5 + 1));
        if (floor > d)
            d = floor;
    }
    return d;
}

int64_t backoff_parse_retry_after(const char *v, int64_t now_wall_us)
{
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (isdigit((unsigned char)*v)) {
        char *end;
        errno = 0;
        long long s = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (errno || *end || s < 0)
            return -1;
        if (s > BACKOFF_RETRY_AFTER_MAX_US / 1000000)
            s = BACKOFF_RETRY_AFTER_MAX_US / 1000000;
        return (int64_t)s * 1000000;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    int64_t d = (int64_t)t * 1000000 - now_wall_us;
    return d > 0 ? d : 0;
}
