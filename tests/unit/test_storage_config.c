/* test_storage_config.c -- storage's settings: the table's defaults and
 * bounds, environment vs flags, the derived client id and topic filter, and
 * the checks that turn a typo into exit 2 instead of endless retries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../storage/config.h"

static const char *const VARS[] = {
    "DATABASE_URL", "MQTT_URL", "MQTT_TOPIC_PREFIX", "STORAGE_SHARE_GROUP",
    "STORAGE_CLIENT_ID", "STORAGE_SESSION_EXPIRY_S", "LOG_LEVEL",
};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++)
        unsetenv(VARS[i]);
    return 0;
}

/* Loads with argv = {"storage", args..., NULL}. */
static int load(struct storage_config *c, char *err, size_t errlen, int n, ...)
{
    static char prog[] = "storage";
    char *argv[16] = { prog };
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        argv[i + 1] = va_arg(ap, char *);
    va_end(ap);
    err[0] = '\0';
    return storage_config_load(c, n + 1, argv, err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, 0), STORAGE_CONFIG_OK);
    assert_string_equal(c.database_url, "postgresql://sensorflow@127.0.0.1:5432/sensorflow");
    assert_string_equal(c.mqtt_url, "tcp://127.0.0.1:1883");
    assert_string_equal(c.topic_prefix, "sensorflow/v1/readings");
    assert_string_equal(c.share_group, "storage");
    assert_string_equal(c.topic_filter, "$share/storage/sensorflow/v1/readings/#");
    assert_int_equal(c.session_expiry_s, 604800);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_string_equal(c.client_id_opt, "");
    assert_int_equal(strncmp(c.client_id, "storage-", 8), 0);
    assert_true(strlen(c.client_id) > 8);
}

static void test_env_then_flags(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    setenv("STORAGE_CLIENT_ID", "storage-a", 1);
    setenv("STORAGE_SHARE_GROUP", "g1", 1);
    setenv("LOG_LEVEL", "debug", 1);
    assert_int_equal(load(&c, err, sizeof err, 3, "--share-group", "g2",
                          "--topic-prefix=x/y"), STORAGE_CONFIG_OK);
    assert_string_equal(c.client_id, "storage-a");
    assert_string_equal(c.topic_filter, "$share/g2/x/y/#");
    assert_int_equal(c.log_level, LOG_DEBUG);
}

static void test_session_expiry_bounds(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, 2, "--session-expiry", "4294967295"),
                     STORAGE_CONFIG_OK);
    assert_int_equal(c.session_expiry_s, 4294967295L);
    assert_int_equal(load(&c, err, sizeof err, 2, "--session-expiry", "1"), STORAGE_CONFIG_OK);
    /* 0 would make a v5 session end with the connection: refused. */
    assert_int_equal(load(&c, err, sizeof err, 2, "--session-expiry", "0"), STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "STORAGE_SESSION_EXPIRY_S"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--session-expiry", "4294967296"),
                     STORAGE_CONFIG_ERR);
    setenv("STORAGE_SESSION_EXPIRY_S", "1w", 1);
    assert_int_equal(load(&c, err, sizeof err, 0), STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "not an integer"));
}

static void test_bad_values_name_the_key(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, 2, "--log-level", "loud"), STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "LOG_LEVEL"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--mqtt-url", "ssl://h:8883"),
                     STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "MQTT_URL"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url", "postgresql://a@b:x/c"),
                     STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "DATABASE_URL"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url", "host=a port=70000"),
                     STORAGE_CONFIG_ERR);
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url", "nonsense=1"),
                     STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "DATABASE_URL"));
    /* The password never shows in the message. */
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url",
                          "postgresql://u:s3cret@h:99999/d"), STORAGE_CONFIG_ERR);
    assert_null(strstr(err, "s3cret"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--topic-prefix", "a/+/b"),
                     STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "MQTT_TOPIC_PREFIX"));
    assert_int_equal(load(&c, err, sizeof err, 2, "--share-group", "a/b"), STORAGE_CONFIG_ERR);
    assert_non_null(strstr(err, "STORAGE_SHARE_GROUP"));
    assert_int_equal(load(&c, err, sizeof err, 1, "--nope"), STORAGE_CONFIG_ERR);
}

static void test_good_conninfo_forms(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url",
                          "host=127.0.0.1 port=5432,5433 dbname=x user=y"), STORAGE_CONFIG_OK);
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url",
                          "postgres://u@h1:5432,h2/d?connect_timeout=3"), STORAGE_CONFIG_OK);
    assert_int_equal(load(&c, err, sizeof err, 2, "--database-url", "host=/run/pg"),
                     STORAGE_CONFIG_OK);
}

static void test_help(void **state)
{
    (void)state;
    struct storage_config c;
    char err[256];
    assert_int_equal(load(&c, err, sizeof err, 1, "--help"), STORAGE_CONFIG_HELP);
}

static void test_client_id(void **state)
{
    (void)state;
    char id[STORAGE_CLIENT_ID_MAX + 1];
    assert_int_equal(storage_client_id("mine", "host", id, sizeof id), 0);
    assert_string_equal(id, "mine");
    assert_int_equal(storage_client_id("", "db-host.example", id, sizeof id), 0);
    assert_string_equal(id, "storage-db-host.example");
    assert_int_equal(storage_client_id(NULL, "a b/c+#", id, sizeof id), 0);
    assert_string_equal(id, "storage-a-b-c--");
    assert_int_equal(storage_client_id("", "", id, sizeof id), 0);
    assert_string_equal(id, "storage-unknown");
    /* The real host name: stable across calls (a restart finds its session). */
    char a[STORAGE_CLIENT_ID_MAX + 1], b[STORAGE_CLIENT_ID_MAX + 1];
    assert_int_equal(storage_client_id("", NULL, a, sizeof a), 0);
    assert_int_equal(storage_client_id("", NULL, b, sizeof b), 0);
    assert_string_equal(a, b);
    /* Too long for the buffer: refused, not truncated into another id. */
    char small[12];
    assert_int_equal(storage_client_id("", "a-long-host", small, sizeof small), -1);
    assert_int_equal(storage_client_id("0123456789ab", NULL, small, sizeof small), -1);
}

static void test_topic_filter(void **state)
{
    (void)state;
    char f[64], err[256];
    assert_int_equal(storage_topic_filter("storage", "a/b", f, sizeof f, err, sizeof err), 0);
    assert_string_equal(f, "$share/storage/a/b/#");
    assert_int_equal(storage_topic_filter("", "a", f, sizeof f, err, sizeof err), -1);
    assert_int_equal(storage_topic_filter("g+", "a", f, sizeof f, err, sizeof err), -1);
    assert_int_equal(storage_topic_filter("g", "a/#", f, sizeof f, err, sizeof err), -1);
    assert_int_equal(storage_topic_filter("g", "/a", f, sizeof f, err, sizeof err), -1);
    assert_int_equal(storage_topic_filter("g", "a/", f, sizeof f, err, sizeof err), -1);
    assert_int_equal(storage_topic_filter("g", "a//b", f, sizeof f, err, sizeof err), -1);
    char tiny[8];
    assert_int_equal(storage_topic_filter("g", "abc", tiny, sizeof tiny, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_env_then_flags, clear_env),
        cmocka_unit_test_setup(test_session_expiry_bounds, clear_env),
        cmocka_unit_test_setup(test_bad_values_name_the_key, clear_env),
        cmocka_unit_test_setup(test_good_conninfo_forms, clear_env),
        cmocka_unit_test_setup(test_help, clear_env),
        cmocka_unit_test(test_client_id),
        cmocka_unit_test(test_topic_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
