/* config.c -- storage's settings table and the values derived from it. */
#include "config.h"
#include "cfg.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char SUMMARY[] =
    "storage: subscribes to the readings ingestion publishes on MQTT and writes\n"
    "them to PostgreSQL, acknowledging each message only after its COMMIT.";

int storage_client_id(const char *configured, const char *hostname,
                      char *out, size_t outlen)
{
    char host[256];
    int n;

    if (configured && *configured) {
        n = snprintf(out, outlen, "%s", configured);
        return n < 0 || (size_t)n >= outlen ? -1 : 0;
    }
    if (!hostname) {
        /* POSIX leaves truncation unspecified: terminate it ourselves. */
        if (gethostname(host, sizeof host - 1) < 0)
            snprintf(host, sizeof host, "unknown");
        host[sizeof host - 1] = '\0';
        hostname = host;
    }
    n = snprintf(out, outlen, "storage-%s", *hostname ? hostname : "unknown");
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    for (char *p = out + strlen("storage-"); *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            *p = '-';
    }
    return 0;
}

int storage_topic_filter(const char *group, const char *prefix,
                         char *out, size_t outlen, char *err, size_t errlen)
{
    if (!*group || strpbrk(group, "/+#")) {
        snprintf(err, errlen, "STORAGE_SHARE_GROUP (--share-group): must be non-empty "
                 "without '/', '+' or '#'");
        return -1;
    }
    size_t plen = strlen(prefix);
    /* The prefix is a topic *name* prefix; a wildcard or an empty level
     * would subscribe to something else than what ingestion publishes. */
    if (!plen || strpbrk(prefix, "+#") || prefix[0] == '/' || prefix[plen - 1] == '/' ||
        strstr(prefix, "//")) {
        snprintf(err, errlen, "MQTT_TOPIC_PREFIX (--topic-prefix): '%s' must be topic "
                 "levels without wildcards, empty levels or a leading/trailing '/'",
                 prefix);
        return -1;
    }
    int n = snprintf(out, outlen, "$share/%s/%s/#", group, prefix);
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "MQTT_TOPIC_PREFIX/STORAGE_SHARE_GROUP: topic filter too long");
        return -1;
    }
    return 0;
}

/* libpq checks the port only when connecting, and that failure would look
 * like a database that is down. "" entries mean the default port. */
static int ports_valid(const char *list)
{
    for (const char *p = list;;) {
        size_t n = strcspn(p, ",");
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9' || (v = v * 10 + (p[i] - '0')) > 65535)
                return 0;
        }
        if (n && v < 1)
            return 0;
        if (!p[n])
            return 1;
        p += n + 1;
    }
}

/* A conninfo libpq can parse, with valid ports. Returns 0, or -1 with err
 * naming the setting (never the value: it may hold a password). */
static int check_conninfo(const char *value, const char *name, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *ci = PQconninfoParse(value, &perr);
    if (!ci) {
        size_t n = perr ? strcspn(perr, "\n") : 0;
        snprintf(err, errlen, "%s: %.*s", name, (int)n, perr ? perr : "out of memory");
        PQfreemem(perr);
        return -1;
    }
    const char *bad_port = NULL;
    for (const PQconninfoOption *o = ci; o->keyword; o++)
        if (!strcmp(o->keyword, "port") && o->val && !ports_valid(o->val))
            bad_port = "port must be 1..65535 (or a comma-separated list of them)";
    PQconninfoFree(ci);
    if (bad_port) {
        snprintf(err, errlen, "%s: %s", name, bad_port);
        return -1;
    }
    return 0;
}

int storage_config_load(struct storage_config *c, int argc, char **argv,
                        char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    /* The one table: flag, variable, type, destination, default, bounds, help. */
    const struct cfg_opt opts[] = {
        { "database-url", "DATABASE_URL", CFG_STR, &c->database_url,
          "postgresql://sensorflow@127.0.0.1:5432/sensorflow", 1, 4096,
          "libpq connection URI or key=value conninfo, of a UTF8 database" },
        { "database-owner-url", "DATABASE_OWNER_URL", CFG_STR, &c->database_owner_url, "", 0,
          4096, "connection of the role that owns the tables: migrations run with it, then "
          "grant DATABASE_URL's role INSERT; empty = migrate over DATABASE_URL" },
        { "mqtt-url", "MQTT_URL", CFG_STR, &c->mqtt_url,
          "tcp://127.0.0.1:1883", 7, 1024, "MQTT broker, tcp://host:port" },
        { "mqtt-username", "MQTT_USERNAME", CFG_STR, &c->mqtt_username, "", 0, 128,
          "MQTT user name; empty = anonymous" },
        { "mqtt-password", "MQTT_PASSWORD", CFG_STR, &c->mqtt_password_opt, "", 0, 256,
          "MQTT password (prefer MQTT_PASSWORD_FILE: the environment is visible in /proc)" },
        { "mqtt-password-file", "MQTT_PASSWORD_FILE", CFG_STR, &c->mqtt_password_file, "", 0,
          4096, "file whose first line is the MQTT password (wins over MQTT_PASSWORD)" },
        { "topic-prefix", "MQTT_TOPIC_PREFIX", CFG_STR, &c->topic_prefix,
          "sensorflow/v1/readings", 1, 200,
          "ingestion publishes to <prefix>/<instance>" },
        { "stored-prefix", "MQTT_STORED_PREFIX", CFG_STR, &c->stored_prefix,
          "sensorflow/v1/stored", 1, 200,
          "after each commit, the message's id (or digest) goes to <prefix>/<instance> "
          "(ingestion republishes what is not confirmed)" },
        { "share-group", "STORAGE_SHARE_GROUP", CFG_STR, &c->share_group,
          "storage", 1, 100,
          "shared-subscription group: replicas split the messages" },
        { "client-id", "STORAGE_CLIENT_ID", CFG_STR, &c->client_id_opt,
          "", 0, STORAGE_CLIENT_ID_MAX,
          "MQTT client id, \"\" = storage-<hostname>; stable across restarts, "
          "one per replica (never shared)" },
        { "session-expiry", "STORAGE_SESSION_EXPIRY_S", CFG_INT, &c->session_expiry_s,
          "604800", 1, 4294967295.0,
          "seconds the broker keeps the session (and queues messages) while "
          "storage is away" },
        { "log-level", "LOG_LEVEL", CFG_STR, &c->log_level_name,
          "info", 1, 16, "debug, info, warn or error" },
        { "log-format", "LOG_FORMAT", CFG_STR, &c->log_format, "text", 1, 8,
          "text (one line per event, key=value) or json (one object per line)" },
        { "http-listen", "STORAGE_HTTP_LISTEN", CFG_STR, &c->http_listen,
          "0.0.0.0", 1, 255, "address of the HTTP listener (/metrics, /healthz, /readyz)" },
        { "http-port", "STORAGE_HTTP_PORT", CFG_INT, &c->http_port,
          "8090", 0, 65535, "port of the HTTP listener; 0 = none" },
        { "retire", "STORAGE_RETIRE", CFG_STR, &c->retire, "", 0, STORAGE_CLIENT_ID_MAX,
          "one-shot, for a client id no storage will use again: resume its session, "
          "leave the shared subscription, store what the session holds, end it, exit "
          "(no HTTP listener)" },
    };
    const size_t nopts = sizeof opts / sizeof opts[0];

    int rc = cfg_load(opts, nopts, argc, argv, argc > 0 ? argv[0] : "storage", SUMMARY,
                      err, errlen);
    if (rc == CFG_HELP)
        return STORAGE_CONFIG_HELP;
    if (rc != CFG_OK)
        return STORAGE_CONFIG_ERR;

    if (log_level_parse(c->log_level_name, &c->log_level) < 0) {
        snprintf(err, errlen, "LOG_LEVEL (--log-level): '%s' is not one of "
                 "debug, info, warn, error", c->log_level_name);
        return STORAGE_CONFIG_ERR;
    }
    if (strcmp(c->log_format, "text") && strcmp(c->log_format, "json")) {
        snprintf(err, errlen, "LOG_FORMAT (--log-format): '%s' is not text or json",
                 c->log_format);
        return STORAGE_CONFIG_ERR;
    }
    /* Debian's libpaho-mqtt3a is built without TLS, so only plain TCP works. */
    if (strncmp(c->mqtt_url, "tcp://", 6) && strncmp(c->mqtt_url, "mqtt://", 7)) {
        snprintf(err, errlen, "MQTT_URL (--mqtt-url): '%s' must start with tcp:// or mqtt://",
                 c->mqtt_url);
        return STORAGE_CONFIG_ERR;
    }
    /* Parse without connecting, so a typo fails now with exit 2 instead of
     * being retried forever as if the database were down. The URL is not
     * echoed: it may hold a password. */
    if (check_conninfo(c->database_url, "DATABASE_URL (--database-url)", err, errlen) < 0 ||
        (*c->database_owner_url &&
         check_conninfo(c->database_owner_url, "DATABASE_OWNER_URL (--database-owner-url)", err,
                        errlen) < 0))
        return STORAGE_CONFIG_ERR;
    if (storage_topic_filter(c->share_group, c->topic_prefix, c->topic_filter,
                             sizeof c->topic_filter, err, errlen) < 0)
        return STORAGE_CONFIG_ERR;
    /* Under the readings prefix, storage would receive its own confirmations. */
    size_t rp = strlen(c->topic_prefix);
    if (strpbrk(c->stored_prefix, "+#") ||
        (!strncmp(c->stored_prefix, c->topic_prefix, rp) &&
         (c->stored_prefix[rp] == '\0' || c->stored_prefix[rp] == '/'))) {
        snprintf(err, errlen, "MQTT_STORED_PREFIX (--stored-prefix): '%s' must have no "
                 "wildcard and not lie under MQTT_TOPIC_PREFIX", c->stored_prefix);
        return STORAGE_CONFIG_ERR;
    }
    snprintf(c->mqtt_password, sizeof c->mqtt_password, "%s", c->mqtt_password_opt);
    if (*c->mqtt_password_file) {
        char e[300];
        if (cfg_read_secret(c->mqtt_password_file, c->mqtt_password, sizeof c->mqtt_password,
                            e, sizeof e) < 0) {
            snprintf(err, errlen, "MQTT_PASSWORD_FILE (--mqtt-password-file): %s", e);
            return STORAGE_CONFIG_ERR;
        }
    }
    /* Retiring, the session to end is the id; beside a running storage,
     * whose HTTP port is taken, there is no listener. */
    if (*c->retire)
        c->http_port = 0;
    if (storage_client_id(*c->retire ? c->retire : c->client_id_opt, NULL, c->client_id,
                          sizeof c->client_id) < 0) {
        snprintf(err, errlen, "STORAGE_CLIENT_ID (--client-id): the default "
                 "storage-<hostname> is longer than %d bytes: set it", STORAGE_CLIENT_ID_MAX);
        return STORAGE_CONFIG_ERR;
    }
    return STORAGE_CONFIG_OK;
}
