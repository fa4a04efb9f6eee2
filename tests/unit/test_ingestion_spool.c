/* test_ingestion_spool.c -- the disk spool: bound, rotation, crash survival. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../ingestion/spool.h"

static char dir[256];
static char err[256];

/* fdatasync as the disk would answer it: after pass_syncs more calls, this
 * many next calls fail with EIO, as Linux reports a lost write (once), then
 * they succeed. Defined here, it is the one spool.c calls. */
static int fail_syncs, pass_syncs;

int fdatasync(int fd)
{
    if (pass_syncs > 0)
        pass_syncs--;
    else if (fail_syncs > 0) {
        fail_syncs--;
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sf-spool-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    strcat(dir, "/a/b");   /* spool_open creates missing folders */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strlen(dir) - 4), dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void take_expect(struct spool *s, const char *want)
{
    char *buf;
    size_t len;
    assert_int_equal(spool_take(s, &buf, &len), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void test_append_take_delete(void **state)
{
    (void)state;
    const char *why;
    struct spool *s = spool_open(dir, 1 << 20, err, sizeof err);
    assert_non_null(s);
    char *buf;
    size_t len;
    assert_int_equal(spool_take(s, &buf, &len), 1);   /* empty: nothing to send */
    assert_int_equal(spool_append(s, "{\"a\":1}", 7, &why), 0);
    assert_int_equal(spool_append(s, "{\"b\":2}", 7, &why), 0);
    assert_int_equal(spool_sync(s), 0);
    assert_int_equal(spool_bytes(s), 16);
    take_expect(s, "{\"a\":1}\n{\"b\":2}\n");
    /* Appends during a round go to a fresh active file. */
    assert_int_equal(spool_append(s, "{\"c\":3}", 7, &why), 0);
    assert_int_equal(spool_taken(s, 1), 0);
    assert_int_equal(spool_bytes(s), 8);
    take_expect(s, "{\"c\":3}\n");
    assert_int_equal(spool_taken(s, 1), 0);
    assert_int_equal(spool_bytes(s), 0);
    assert_int_equal(spool_take(s, &buf, &len), 1);
    spool_close(s);
}

/* A spool whose round "one" was not all acknowledged (forward.spool is
 * kept), with "two" appended since. */
static struct spool *spool_with_kept_round(void)
{
    const char *why;
    struct spool *s = spool_open(dir, 1 << 20, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_append(s, "one", 3, &why), 0);
    take_expect(s, "one\n");
    assert_int_equal(spool_taken(s, 0), 0);
    assert_int_equal(spool_append(s, "two", 3, &why), 0);
    return s;
}

static void test_failed_round_is_kept_and_merged(void **state)
{
    (void)state;
    struct spool *s = spool_with_kept_round();
    take_expect(s, "one\ntwo\n");             /* nothing lost, order kept */
    assert_int_equal(spool_taken(s, 1), 0);
    assert_int_equal(spool_bytes(s), 0);
    spool_close(s);
}

/* A merge whose copy is not known durable is taken back whole: the next
 * round's copy starts where the kept file ended. */
static void test_failed_merge_leaves_no_stray_copy(void **state)
{
    (void)state;
    struct spool *s = spool_with_kept_round();
    char *buf = NULL;
    size_t len;
    pass_syncs = 1;   /* active.spool's sync passes, forward.spool's fails */
    fail_syncs = 1;
    assert_int_equal(spool_take(s, &buf, &len), -1);
    take_expect(s, "one\ntwo\n");
    char path[300];
    snprintf(path, sizeof path, "%s/forward.spool", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    assert_int_equal(ftell(f), 8);                 /* not "one\ntwo\ntwo\n" */
    fclose(f);
    spool_close(s);
}

static void test_survives_reopen(void **state)
{
    (void)state;
    const char *why;
    struct spool *s = spool_open(dir, 1 << 20, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_append(s, "kept", 4, &why), 0);
    assert_int_equal(spool_sync(s), 0);
    spool_close(s);   /* as after a crash or a stop with the broker away */
    s = spool_open(dir, 1 << 20, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_bytes(s), 5);
    take_expect(s, "kept\n");
    spool_close(s);   /* crash mid-round: forward.spool stays */
    s = spool_open(dir, 1 << 20, err, sizeof err);
    assert_non_null(s);
    take_expect(s, "kept\n");
    spool_close(s);
}

static void test_bound(void **state)
{
    (void)state;
    const char *why = NULL;
    struct spool *s = spool_open(dir, 10, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_append(s, "12345678", 8, &why), 0);   /* 9 bytes */
    assert_false(spool_full(s, 0));
    assert_int_equal(spool_append(s, "x", 1, &why), -1);          /* 11 > 10 */
    assert_non_null(strstr(why, "full"));
    assert_true(spool_full(s, 2));
    assert_int_equal(spool_bytes(s), 9);
    spool_close(s);
}

/* A failed fdatasync is not forgotten: a later one would say 0 for pages
 * that never reached the disk, and requests would get 202 for them. */
static void test_failed_sync_is_final(void **state)
{
    (void)state;
    const char *why = NULL;
    struct spool *s = spool_open(dir, 1000, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_append(s, "m1", 2, &why), 0);
    fail_syncs = 1;
    assert_int_equal(spool_sync(s), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(spool_sync(s), -1);   /* the disk would now say 0 */
    assert_int_equal(errno, EIO);
    assert_int_equal(spool_append(s, "m2", 2, &why), -1);
    assert_non_null(strstr(why, "restart"));
    assert_true(spool_full(s, 0));   /* /readyz: not ready on the spool's account */
    spool_close(s);

    /* The same when spool_take's sync of the turn's appends is the one
     * that fails. */
    s = spool_open(dir, 1000, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_append(s, "m3", 2, &why), 0);
    char *buf = NULL;
    size_t len;
    fail_syncs = 1;
    assert_int_equal(spool_take(s, &buf, &len), -1);
    assert_null(buf);
    assert_int_equal(spool_sync(s), -1);
    /* From then on active.spool stays for a restart: nothing to send, and
     * no error at every try (the caller logs each -1). */
    assert_int_equal(spool_take(s, &buf, &len), 1);
    spool_close(s);
    fail_syncs = 0;
    /* ... which finds it: nothing of the spool was lost by the refusal. */
    s = spool_open(dir, 1000, err, sizeof err);
    assert_non_null(s);
    take_expect(s, "m1\nm3\n");
    spool_close(s);
}

static void test_unusable_dir(void **state)
{
    (void)state;
    assert_null(spool_open("/proc/sf-cannot-create", 100, err, sizeof err));
    assert_non_null(strstr(err, "/proc/sf-cannot-create"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_take_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_round_is_kept_and_merged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_merge_leaves_no_stray_copy, setup, teardown),
        cmocka_unit_test(test_unusable_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
