/* test_ingestion_apikeys.c -- the API keys file and the checks on it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../ingestion/apikeys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static struct apikeys *load(const char *text, char *err, size_t errlen)
{
    snprintf(path, sizeof path, "/tmp/sf-apikeys-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct apikeys *k = apikeys_load(path, err, errlen);
    unlink(path);
    return k;
}

static struct reading_batch batch_of(const char *const *sensors, size_t n)
{
    struct reading_batch b = { calloc(n, sizeof(struct reading)), n, n };
    for (size_t i = 0; i < n; i++)
        snprintf(b.v[i].sensor_id, sizeof b.v[i].sensor_id, "%s", sensors[i]);
    return b;
}

static void test_checks(void **state)
{
    (void)state;
    char err[256] = "";
    struct apikeys *k = load("# keys\n"
                             "\n"
                             "gateway-hall1-0123456789  hall1-t1,hall1-h1   # the gateway\n"
                             "ops-key-abcdefghijklmnop *\r\n", err, sizeof err);
    assert_non_null(k);
    assert_int_equal(apikeys_count(k), 2);
    const char *own[] = { "hall1-t1", "hall1-h1", "hall1-t1" };
    const char *mixed[] = { "hall1-t1", "hall2-t1" };
    struct reading_batch b1 = batch_of(own, 3), b2 = batch_of(mixed, 2);
    const char *sensor = NULL;
    assert_int_equal(apikeys_check(k, "gateway-hall1-0123456789", &b1, &sensor), APIKEY_OK);
    assert_int_equal(apikeys_check(k, "gateway-hall1-0123456789", &b2, &sensor),
                     APIKEY_FORBIDDEN);
    assert_string_equal(sensor, "hall2-t1");
    assert_int_equal(apikeys_check(k, "ops-key-abcdefghijklmnop", &b2, &sensor), APIKEY_OK);
    assert_int_equal(apikeys_check(k, NULL, &b1, &sensor), APIKEY_MISSING);
    assert_int_equal(apikeys_check(k, "", &b1, &sensor), APIKEY_MISSING);
    assert_int_equal(apikeys_check(k, "gateway-hall1-012345678", &b1, &sensor), APIKEY_UNKNOWN);
    assert_int_equal(apikeys_check(k, "gateway-hall1-0123456789x", &b1, &sensor),
                     APIKEY_UNKNOWN);
    assert_int_equal(apikeys_check(k, "gateway-hall1-0123456789", NULL, NULL), APIKEY_OK);
    free(b1.v);
    free(b2.v);
    apikeys_free(k);
}

static void test_bad_files_name_the_line(void **state)
{
    (void)state;
    static const struct { const char *text, *want; } cases[] = {
        { "short s1\n", ":1: a key must be 16..128 characters" },
        { "# ok\nkey-with-a-space-in-it!! s1\n", ":2: the key has a character" },
        { "aaaaaaaaaaaaaaaaaaaa\n", ":1: expected: <key> <sensor>" },
        { "aaaaaaaaaaaaaaaaaaaa s1 s2\n", ":1: expected: <key> <sensor>" },
        { "aaaaaaaaaaaaaaaaaaaa s1,,s2\n", ":1: a sensor id must be" },
        { "aaaaaaaaaaaaaaaaaaaa s1\naaaaaaaaaaaaaaaaaaaa s2\n", ": a key is listed twice" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        struct apikeys *k = load(cases[i].text, err, sizeof err);
        assert_null(k);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].want);
        assert_null(strstr(err, "aaaaaaaaaaaaaaaaaaaa"));   /* never the key */
    }
    char err[256];
    assert_null(apikeys_load("/nonexistent/keys", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/keys: No such file"));
    /* An empty file is valid: no key works. */
    struct apikeys *k = load("# nobody yet\n", err, sizeof err);
    assert_non_null(k);
    assert_int_equal(apikeys_check(k, "aaaaaaaaaaaaaaaaaaaa", NULL, NULL), APIKEY_UNKNOWN);
    apikeys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_bad_files_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
