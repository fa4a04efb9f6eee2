/* test_storage_db.c -- what storage/db.c decides without a server: which
 * errors are retried and which dead-letter a message, and that a handle
 * that never connected fails safely. (The SQL itself is exercised against
 * a real PostgreSQL by the integration tests.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../storage/db.h"

static void test_data_errors_are_rejected(void **state)
{
    (void)state;
    /* The data itself: retrying can never help, so dead-letter it. */
    const char *rejected[] = {
        "22P02",  /* invalid_text_representation (e.g. bad json) */
        "22021",  /* character_not_in_repertoire (invalid UTF-8) */
        "22P05",  /* untranslatable_character (\u0000 in jsonb) */
        "22003",  /* numeric_value_out_of_range */
        "22008",  /* datetime_field_overflow */
        "23502",  /* not_null_violation */
        "23514",  /* check_violation */
        "23505",  /* unique_violation on another index (the PK is ON CONFLICT) */
        "54000",  /* program_limit_exceeded (index row too big) */
    };
    for (size_t i = 0; i < sizeof rejected / sizeof rejected[0]; i++)
        assert_int_equal(db_classify_sqlstate(rejected[i]), DB_REJECTED);
}

static void test_system_errors_are_retried(void **state)
{
    (void)state;
    /* Problems around the data: keep the message, retry, let someone fix it. */
    const char *retried[] = {
        "08006",  /* connection_failure */
        "40001",  /* serialization_failure */
        "40P01",  /* deadlock_detected */
        "53100",  /* disk_full */
        "53300",  /* too_many_connections */
        "57P01",  /* admin_shutdown */
        "57P03",  /* cannot_connect_now (starting up) */
        "57014",  /* query_canceled (statement_timeout) */
        "42P01",  /* undefined_table: someone dropped it; do not dead-letter all */
        "42501",  /* insufficient_privilege: a revoked grant */
        "25P02",  /* in_failed_sql_transaction */
        "XX000",  /* internal_error */
        "58030",  /* io_error */
    };
    for (size_t i = 0; i < sizeof retried / sizeof retried[0]; i++)
        assert_int_equal(db_classify_sqlstate(retried[i]), DB_RETRY);
    /* No SQLSTATE at all (connection gone, client-side error): retry. */
    assert_int_equal(db_classify_sqlstate(NULL), DB_RETRY);
    assert_int_equal(db_classify_sqlstate(""), DB_RETRY);
    assert_int_equal(db_classify_sqlstate("22"), DB_RETRY);
}

static void test_unconnected_handle(void **state)
{
    (void)state;
    struct db *db = db_create("postgresql://nobody@127.0.0.1:1/none", NULL, "test");
    assert_non_null(db);
    assert_int_equal(db_is_up(db), 0);

    struct reading_batch b = { 0 };
    struct db_batch_result res;
    char err[256];
    assert_int_equal(db_store_batch(db, &b, "i", &res, err, sizeof err), DB_RETRY);
    assert_string_equal(err, "not connected");
    assert_int_equal(db_store_rows(db, &b, "i", "t", "", 0, &res, err, sizeof err), DB_RETRY);
    assert_int_equal(db_dead_letter(db, "t", "r", "x", 1, err, sizeof err), DB_RETRY);
    db_destroy(db);
    db_destroy(NULL);
}

static void test_unreachable_server_is_retry(void **state)
{
    (void)state;
    /* Port 1 on loopback: refused at once, no server needed. */
    struct db *db = db_create("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", NULL, "test");
    struct db_ensure_info info;
    char err[512];
    assert_int_equal(db_ensure(db, NULL, NULL, &info, err, sizeof err), DB_RETRY);
    assert_int_equal(info.connected, 0);
    assert_non_null(strstr(err, "connect: "));
    assert_null(strchr(err, '\n'));   /* one line, for the log */
    assert_int_equal(db_is_up(db), 0);
    db_destroy(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_errors_are_rejected),
        cmocka_unit_test(test_system_errors_are_retried),
        cmocka_unit_test(test_unconnected_handle),
        cmocka_unit_test(test_unreachable_server_is_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
