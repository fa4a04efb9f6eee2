/* test_storage_migrations.c -- the migrations compiled into storage (by
 * scripts/embed-migrations.sh from storage/migrations/NNNN_name.sql): sorted, unique,
 * non-empty, and the first one creates what db.c relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "../../storage/migrations.h"

static void test_present_sorted_unique(void **state)
{
    (void)state;
    assert_true(storage_migrations_count >= 1);
    for (size_t i = 0; i < storage_migrations_count; i++) {
        const struct migration *m = &storage_migrations[i];
        assert_true(m->version >= 1);
        if (i > 0)   /* strictly increasing: sorted and no duplicates */
            assert_true(m->version > storage_migrations[i - 1].version);
    }
}

static void test_names_and_sql(void **state)
{
    (void)state;
    for (size_t i = 0; i < storage_migrations_count; i++) {
        const struct migration *m = &storage_migrations[i];
        assert_non_null(m->name);
        assert_true(strlen(m->name) > 0);
        assert_int_equal(strspn(m->name, "abcdefghijklmnopqrstuvwxyz0123456789_"),
                         strlen(m->name));
        assert_non_null(m->sql);
        assert_true(strlen(m->sql) > 0);
        /* They run inside the migration transaction: no transaction control. */
        assert_null(strcasestr(m->sql, "COMMIT;"));
        assert_null(strcasestr(m->sql, "CONCURRENTLY"));
    }
}

static void test_first_is_init(void **state)
{
    (void)state;
    const struct migration *m = &storage_migrations[0];
    assert_int_equal(m->version, 1);
    assert_string_equal(m->name, "init");
    /* What db.c's statements and the dedup rely on. */
    assert_non_null(strstr(m->sql, "CREATE TABLE readings ("));
    assert_non_null(strstr(m->sql, "PRIMARY KEY (sensor_id, type, ts)"));
    assert_non_null(strstr(m->sql, "USING brin (ts)"));
    assert_non_null(strstr(m->sql, "CREATE TABLE dead_letters ("));
    assert_non_null(strstr(m->sql, "payload   bytea"));
    /* The text survived the C escaping: quotes, backslash-free lines, the
     * trailing newline of each line. */
    assert_non_null(strstr(m->sql, "clock_timestamp()"));
    assert_true(m->sql[strlen(m->sql) - 1] == '\n');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_present_sorted_unique),
        cmocka_unit_test(test_names_and_sql),
        cmocka_unit_test(test_first_is_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
