/* test_common_cfg.c -- unit tests for common/cfg: defaults, environment,
 * flags, bounds, and --help, through one table like a service would have. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cfg.h"

/* Destinations, reset before each test to values no default uses. */
static const char *o_name;
static long o_port;
static double o_ratio;
static int o_verbose;
static const char *o_url;

static const struct cfg_opt opts[] = {
    { "name", "SFTEST_NAME", CFG_STR, &o_name, "node-1", 1, 8, "instance name" },
    { "port", "SFTEST_PORT", CFG_INT, &o_port, "8080", 1, 65535, "TCP port" },
    { "ratio", "SFTEST_RATIO", CFG_DOUBLE, &o_ratio, "0.5", 0, 1, "sampling ratio" },
    { "verbose", "SFTEST_VERBOSE", CFG_BOOL, &o_verbose, "false", 0, 1, "more logs" },
    { "url", "SFTEST_URL", CFG_STR, &o_url, "", 0, 64, "optional URL" },
};
#define NOPTS (sizeof opts / sizeof opts[0])

static char errbuf[256];

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < NOPTS; i++)
        unsetenv(opts[i].env);
    o_name = "(unset)";
    o_port = -7;
    o_ratio = -7.0;
    o_verbose = -7;
    o_url = "(unset)";
    memset(errbuf, 0, sizeof errbuf);
    return 0;
}

/* Runs cfg_load on a NULL-terminated list of arguments (program name added). */
static int load_argv(const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"svc";
    for (; *args; args++) {
        assert_true(argc < 31);
        argv[argc++] = (char *)*args;   /* cfg_load does not write to argv */
    }
    argv[argc] = NULL;
    return cfg_load(opts, NOPTS, argc, argv, "svc", "a test service", errbuf, sizeof errbuf);
}
#define LOAD(...) load_argv((const char *const[]){ __VA_ARGS__, NULL })
#define LOAD0() load_argv((const char *const[]){ NULL })

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* The load must fail, naming both the variable and the flag of opt i. */
static void expect_err_naming(int rc, size_t i)
{
    assert_int_equal(rc, CFG_ERR);
    assert_contains(errbuf, opts[i].env);
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", opts[i].flag);
    assert_contains(errbuf, flag);
}

enum { I_NAME, I_PORT, I_RATIO, I_VERBOSE, I_URL };

/* --- precedence ---------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    assert_int_equal(LOAD0(), CFG_OK);
    assert_string_equal(o_name, "node-1");
    assert_int_equal(o_port, 8080);
    assert_true(o_ratio == 0.5);
    assert_int_equal(o_verbose, 0);
    assert_string_equal(o_url, "");
}

static void test_env_overrides_default(void **state)
{
    (void)state;
    setenv("SFTEST_NAME", "from-env", 1);
    setenv("SFTEST_PORT", "9090", 1);
    setenv("SFTEST_RATIO", "0.25", 1);
    setenv("SFTEST_VERBOSE", "true", 1);
    assert_int_equal(LOAD0(), CFG_OK);
    assert_string_equal(o_name, "from-env");
    assert_int_equal(o_port, 9090);
    assert_true(o_ratio == 0.25);
    assert_int_equal(o_verbose, 1);
    assert_string_equal(o_url, "");   /* untouched ones keep their default */
}

static void test_empty_env_is_unset(void **state)
{
    (void)state;
    /* .env files write VAR= for "the default": no type may reject that. */
    for (size_t i = 0; i < NOPTS; i++)
        setenv(opts[i].env, "", 1);
    assert_int_equal(LOAD0(), CFG_OK);
    assert_string_equal(o_name, "node-1");
    assert_int_equal(o_port, 8080);
    assert_true(o_ratio == 0.5);
    assert_int_equal(o_verbose, 0);
    assert_string_equal(o_url, "");
}

static void test_flag_overrides_env(void **state)
{
    (void)state;
    setenv("SFTEST_NAME", "from-env", 1);
    setenv("SFTEST_PORT", "9090", 1);
    setenv("SFTEST_RATIO", "0.25", 1);
    setenv("SFTEST_VERBOSE", "true", 1);
    assert_int_equal(LOAD("--name", "flag", "--port", "1234", "--ratio", "0.75",
                          "--verbose", "false"), CFG_OK);
    assert_string_equal(o_name, "flag");
    assert_int_equal(o_port, 1234);
    assert_true(o_ratio == 0.75);
    assert_int_equal(o_verbose, 0);
}

static void test_flag_with_equals_overrides_env(void **state)
{
    (void)state;
    setenv("SFTEST_NAME", "from-env", 1);
    setenv("SFTEST_PORT", "9090", 1);
    setenv("SFTEST_RATIO", "0.25", 1);
    setenv("SFTEST_VERBOSE", "yes", 1);
    setenv("SFTEST_URL", "http://env", 1);
    assert_int_equal(LOAD("--name=eq", "--port=4321", "--ratio=0.125", "--verbose=off",
                          "--url=a=b"), CFG_OK);
    assert_string_equal(o_name, "eq");
    assert_int_equal(o_port, 4321);
    assert_true(o_ratio == 0.125);
    assert_int_equal(o_verbose, 0);
    assert_string_equal(o_url, "a=b");   /* only the first '=' splits */
}

static void test_flag_overrides_default_without_env(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--port", "1"), CFG_OK);
    assert_int_equal(o_port, 1);
    assert_string_equal(o_name, "node-1");
}

/* --- numbers ------------------------------------------------------------- */

static void test_int_bounds(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--port", "1"), CFG_OK);
    assert_int_equal(o_port, 1);
    assert_int_equal(LOAD("--port", "65535"), CFG_OK);
    assert_int_equal(o_port, 65535);

    expect_err_naming(LOAD("--port", "0"), I_PORT);
    expect_err_naming(LOAD("--port", "65536"), I_PORT);
    expect_err_naming(LOAD("--port=-1"), I_PORT);
    expect_err_naming(LOAD("--port", "70000"), I_PORT);
    assert_contains(errbuf, "70000");

    setenv("SFTEST_PORT", "70000", 1);
    expect_err_naming(LOAD0(), I_PORT);
    assert_contains(errbuf, "70000");
}

static void test_double_bounds(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--ratio", "0"), CFG_OK);
    assert_true(o_ratio == 0.0);
    assert_int_equal(LOAD("--ratio", "1"), CFG_OK);
    assert_true(o_ratio == 1.0);
    assert_int_equal(LOAD("--ratio", "1e-3"), CFG_OK);
    assert_true(o_ratio == 1e-3);

    expect_err_naming(LOAD("--ratio", "1.5"), I_RATIO);
    expect_err_naming(LOAD("--ratio", "-0.001"), I_RATIO);
    setenv("SFTEST_RATIO", "2", 1);
    expect_err_naming(LOAD0(), I_RATIO);
}

static void test_int_not_a_number(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "12abc", "abc", "", "1.5", "0x10", "12 ", "1e3", "99999999999999999999999", "--",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--port=%s", bad[i]);
        int rc = LOAD(arg);
        if (rc != CFG_ERR)
            fail_msg("--port='%s' accepted (port %ld)", bad[i], o_port);
        expect_err_naming(rc, I_PORT);
    }
    setenv("SFTEST_PORT", "12abc", 1);
    expect_err_naming(LOAD0(), I_PORT);
}

static void test_double_not_a_number(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "12abc", "0.5x", "abc", "", "nan", "NaN", "inf", "-inf", "infinity", "1e999", ".",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--ratio=%s", bad[i]);
        int rc = LOAD(arg);
        if (rc != CFG_ERR)
            fail_msg("--ratio='%s' accepted (ratio %g)", bad[i], o_ratio);
        expect_err_naming(rc, I_RATIO);
    }
    setenv("SFTEST_RATIO", "0.5abc", 1);
    expect_err_naming(LOAD0(), I_RATIO);
}

/* --- booleans ------------------------------------------------------------ */

static void test_bools(void **state)
{
    (void)state;
    static const char *const yes[] = { "1", "true", "yes", "on", "TRUE", "Yes", "ON" };
    static const char *const no[] = { "0", "false", "no", "off", "FALSE", "No", "Off" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        setenv("SFTEST_VERBOSE", yes[i], 1);
        o_verbose = -7;
        assert_int_equal(LOAD0(), CFG_OK);
        if (o_verbose != 1)
            fail_msg("SFTEST_VERBOSE=%s gave %d", yes[i], o_verbose);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        setenv("SFTEST_VERBOSE", no[i], 1);
        o_verbose = -7;
        assert_int_equal(LOAD0(), CFG_OK);
        if (o_verbose != 0)
            fail_msg("SFTEST_VERBOSE=%s gave %d", no[i], o_verbose);
    }
    unsetenv("SFTEST_VERBOSE");
    static const char *const bad[] = { "2", "maybe", "", "tru", "yess", "-1", "y" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--verbose=%s", bad[i]);
        int rc = LOAD(arg);
        if (rc != CFG_ERR)
            fail_msg("--verbose='%s' accepted (%d)", bad[i], o_verbose);
        expect_err_naming(rc, I_VERBOSE);
    }
}

static void test_bare_bool_flag(void **state)
{
    (void)state;
    /* A bare boolean switches it on, at the end or before another flag. */
    assert_int_equal(LOAD("--verbose"), CFG_OK);
    assert_int_equal(o_verbose, 1);
    o_verbose = -7;
    assert_int_equal(LOAD("--verbose", "--port", "99"), CFG_OK);
    assert_int_equal(o_verbose, 1);
    assert_int_equal(o_port, 99);
    /* and wins over the environment. */
    setenv("SFTEST_VERBOSE", "no", 1);
    assert_int_equal(LOAD("--verbose"), CFG_OK);
    assert_int_equal(o_verbose, 1);
    assert_int_equal(LOAD("--verbose", "off"), CFG_OK);
    assert_int_equal(o_verbose, 0);
}

/* --- strings ------------------------------------------------------------- */

static void test_string_length_bounds(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--name", "a"), CFG_OK);
    assert_string_equal(o_name, "a");
    assert_int_equal(LOAD("--name", "12345678"), CFG_OK);
    assert_string_equal(o_name, "12345678");
    expect_err_naming(LOAD("--name", "123456789"), I_NAME);
    expect_err_naming(LOAD("--name="), I_NAME);
    setenv("SFTEST_NAME", "much-too-long", 1);
    expect_err_naming(LOAD0(), I_NAME);
    unsetenv("SFTEST_NAME");
    /* min 0 allows an empty value. */
    assert_int_equal(LOAD("--url="), CFG_OK);
    assert_string_equal(o_url, "");
    char long_url[80];
    memset(long_url, 'u', 65);
    long_url[65] = '\0';
    expect_err_naming(LOAD("--url", long_url), I_URL);
    long_url[64] = '\0';
    assert_int_equal(LOAD("--url", long_url), CFG_OK);
    assert_int_equal(strlen(o_url), 64);
}

/* --- bad command lines --------------------------------------------------- */

static void test_unknown_flag(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--nope", "1"), CFG_ERR);
    assert_contains(errbuf, "nope");
    assert_int_equal(LOAD("--nope=1"), CFG_ERR);
    assert_contains(errbuf, "nope");
    assert_int_equal(LOAD("--por", "1"), CFG_ERR);   /* no prefix matching */
    assert_contains(errbuf, "por");
    assert_int_equal(LOAD("--portx=1"), CFG_ERR);
    assert_int_equal(LOAD("--SFTEST_PORT=1"), CFG_ERR);
    assert_int_equal(LOAD("-p", "1"), CFG_ERR);       /* no short options but -h */
    assert_int_equal(LOAD("stray"), CFG_ERR);
    assert_contains(errbuf, "stray");
    assert_int_equal(LOAD("--port", "1", "extra"), CFG_ERR);
    assert_contains(errbuf, "extra");
}

static void test_missing_value(void **state)
{
    (void)state;
    assert_int_equal(LOAD("--port"), CFG_ERR);
    assert_contains(errbuf, "port");
    assert_int_equal(LOAD("--name"), CFG_ERR);
    assert_contains(errbuf, "name");
    assert_int_equal(LOAD("--ratio"), CFG_ERR);
    assert_contains(errbuf, "ratio");
    assert_int_equal(LOAD("--verbose", "--port"), CFG_ERR);
    assert_contains(errbuf, "port");
}

static void test_bad_default_is_an_error(void **state)
{
    (void)state;
    long port;
    const struct cfg_opt bad[] = {
        { "port", "SFTEST_PORT", CFG_INT, &port, "0", 1, 65535, "TCP port" },
    };
    char *argv[] = { (char *)"svc", NULL };
    assert_int_equal(cfg_load(bad, 1, 1, argv, "svc", "s", errbuf, sizeof errbuf), CFG_ERR);
    assert_contains(errbuf, "SFTEST_PORT");
}

static void test_error_fits_small_buffer(void **state)
{
    (void)state;
    char small[12];
    memset(small, 'x', sizeof small);
    char *argv[] = { (char *)"svc", (char *)"--port", (char *)"70000", NULL };
    assert_int_equal(cfg_load(opts, NOPTS, 3, argv, "svc", "s", small, sizeof small), CFG_ERR);
    assert_true(memchr(small, '\0', sizeof small) != NULL);
    assert_true(strlen(small) > 0);
}

/* --- help ---------------------------------------------------------------- */

/* Runs LOAD with stdout sent to a temporary file; returns what was printed
 * (malloc'ed) through *out. */
static int load_capturing_stdout(const char *const *args, char **out)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDOUT_FILENO) >= 0);
    int rc = load_argv(args);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    assert_int_equal(fseek(tmp, 0, SEEK_END), 0);
    long size = ftell(tmp);
    assert_true(size >= 0);
    rewind(tmp);
    char *text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, tmp), (size_t)size);
    fclose(tmp);
    *out = text;
    return rc;
}

static void check_usage_text(const char *text)
{
    assert_contains(text, "svc");
    assert_contains(text, "a test service");
    for (size_t i = 0; i < NOPTS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", opts[i].flag);
        assert_contains(text, flag);
        assert_contains(text, opts[i].env);
        assert_contains(text, opts[i].help);
        if (opts[i].def[0])
            assert_contains(text, opts[i].def);
    }
    assert_contains(text, "65535");   /* bounds are shown */
}

static void test_help(void **state)
{
    (void)state;
    char *text = NULL;
    assert_int_equal(load_capturing_stdout((const char *const[]){ "--help", NULL }, &text),
                     CFG_HELP);
    check_usage_text(text);
    free(text);

    assert_int_equal(load_capturing_stdout((const char *const[]){ "-h", NULL }, &text),
                     CFG_HELP);
    check_usage_text(text);
    free(text);

    /* --help wins over bad values and unknown flags around it. */
    setenv("SFTEST_PORT", "70000", 1);
    assert_int_equal(load_capturing_stdout(
                         (const char *const[]){ "--nope", "--help", "--port=x", NULL }, &text),
                     CFG_HELP);
    free(text);
}

static void test_usage_to_any_stream(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg_usage(f, "svc", "a test service", opts, NOPTS);
    fclose(f);
    check_usage_text(text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_env_overrides_default, setup),
        cmocka_unit_test_setup(test_empty_env_is_unset, setup),
        cmocka_unit_test_setup(test_flag_overrides_env, setup),
        cmocka_unit_test_setup(test_flag_with_equals_overrides_env, setup),
        cmocka_unit_test_setup(test_flag_overrides_default_without_env, setup),
        cmocka_unit_test_setup(test_int_bounds, setup),
        cmocka_unit_test_setup(test_double_bounds, setup),
        cmocka_unit_test_setup(test_int_not_a_number, setup),
        cmocka_unit_test_setup(test_double_not_a_number, setup),
        cmocka_unit_test_setup(test_bools, setup),
        cmocka_unit_test_setup(test_bare_bool_flag, setup),
        cmocka_unit_test_setup(test_string_length_bounds, setup),
        cmocka_unit_test_setup(test_unknown_flag, setup),
        cmocka_unit_test_setup(test_missing_value, setup),
        cmocka_unit_test_setup(test_bad_default_is_an_error, setup),
        cmocka_unit_test_setup(test_error_fits_small_buffer, setup),
        cmocka_unit_test_setup(test_help, setup),
        cmocka_unit_test_setup(test_usage_to_any_stream, setup),
    };
    return cmocka_run_group_tests_name("common/cfg", tests, NULL, NULL);
}
