/* apikeys.h -- sensor API keys (INGESTION_API_KEYS_FILE): which key may
 * write which sensors.
 *
 * The file: one key per line, then its sensors, comma-separated; `*` is any
 * sensor. `#` starts a comment; blank lines are ignored.
 *
 *     # gateway in hall 1
 *     hall1-3f9a2c61d0b84e7f  hall1-t1,hall1-t2,hall1-h1
 *     ops-7c2e9b04a1f35d68    *
 *
 * Keys are 16..128 characters of [A-Za-z0-9._~+/=-]; sensor ids follow the
 * reading rules. Nothing here logs or keeps global state; one thread. */
#ifndef SF_INGESTION_APIKEYS_H
#define SF_INGESTION_APIKEYS_H

#include "reading.h"

#include <stddef.h>

struct apikeys;

/* Reads and checks the whole file. Returns NULL with err naming the file and
 * line (never a key) on any problem: unreadable, malformed, duplicate key. */
struct apikeys *apikeys_load(const char *path, char *err, size_t errlen);
void apikeys_free(struct apikeys *k);
size_t apikeys_count(const struct apikeys *k);

enum apikey_result {
    APIKEY_OK = 0,
    APIKEY_MISSING,     /* no key given: 401 */
    APIKEY_UNKNOWN,     /* not in the file: 401 */
    APIKEY_FORBIDDEN    /* known, but not for one of the sensors: 403 */
};

/* Whether key (NULL: none given) may write every reading of b (b NULL: only
 * whether the key is known). On APIKEY_FORBIDDEN, *sensor points at the
 * first sensor id it may not write (inside b). The key is compared in time
 * independent of its bytes. */
enum apikey_result apikeys_check(const struct apikeys *k, const char *key,
                                 const struct reading_batch *b, const char **sensor);

#endif
