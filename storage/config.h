/* config.h -- storage's settings: one table (common/cfg.h) plus the values
 * derived from it (the client id, a checked conninfo). */
#ifndef SF_STORAGE_CONFIG_H
#define SF_STORAGE_CONFIG_H

#include "log.h"

#include <stddef.h>

#define STORAGE_CLIENT_ID_MAX 128

struct storage_config {
    const char *database_url;   /* libpq conninfo or URI; checked */
    const char *database_owner_url;  /* "" or the tables' owner: migrations run with it */
    const char *mqtt_url;
    const char *mqtt_username;  /* "": anonymous */
    const char *mqtt_password_opt, *mqtt_password_file;
    const char *topic_prefix;   /* no trailing '/', no wildcard */
    const char *stored_prefix;  /* confirmations go to <stored_prefix>/<by> */
    const char *share_group;
    const char *client_id_opt;  /* as configured: "" means the default */
    long session_expiry_s;
    const char *log_level_name;
    const char *log_format;     /* "text" or "json" */
    const char *http_listen;    /* /metrics, /healthz, /readyz */
    long http_port;             /* 0: no HTTP listener */
    const char *retire;         /* "": serve; else the client id to retire (one-shot) */

    /* Derived by storage_config_load(). */
    /* Never empty. It names the broker-side session, so it must be stable
     * across restarts (a restarted storage finds the messages queued for it)
     * and unique per replica: two clients with one id kick each other off,
     * and paho's automatic reconnect turns that into endless flapping. The
     * hostname default is only as stable as the hostname (a re-created
     * container gets a new one and leaves its old session behind: compose
     * names storage by slot instead, compose/entrypoint.sh). */
    char client_id[STORAGE_CLIENT_ID_MAX + 1];   /* retire, when set */
    char topic_filter[512];     /* "$share/<group>/<prefix>/#" */
    char mqtt_password[257];    /* from MQTT_PASSWORD_FILE, else MQTT_PASSWORD */
    enum log_level log_level;
};

enum { STORAGE_CONFIG_OK = 0, STORAGE_CONFIG_HELP = 1, STORAGE_CONFIG_ERR = -1 };

/* Fills c from defaults, environment and argv (see the table in config.c),
 * then checks what the table cannot and derives client_id, topic_filter and
 * log_level. Returns STORAGE_CONFIG_OK; STORAGE_CONFIG_HELP when --help was
 * printed to stdout; STORAGE_CONFIG_ERR with a message naming the variable
 * in err. The strings in c point into argv, the environment or static
 * defaults: c must not outlive them. Never logs, never exits. */
int storage_config_load(struct storage_config *c, int argc, char **argv,
                        char *err, size_t errlen);

/* The client id to use: configured when non-empty, else "storage-<host>"
 * where host is hostname (gethostname() when NULL). Host characters other
 * than [A-Za-z0-9._-] become '-', so the id is safe in logs and topics.
 * Returns 0, or -1 when the result does not fit in outlen. */
int storage_client_id(const char *configured, const char *hostname,
                      char *out, size_t outlen);

/* Builds "$share/<group>/<prefix>/#". Returns 0, or -1 with a reason in err
 * when group or prefix is empty or holds a character MQTT forbids there
 * ('+', '#', and '/' in the group), or the result does not fit. */
int storage_topic_filter(const char *group, const char *prefix,
                         char *out, size_t outlen, char *err, size_t errlen);

#endif
