/* test_ingestion_publisher.c -- how long a message waits for storage's
 * confirmation of the one before (publisher_hold_us). The rest of the
 * publisher needs a broker: tests/integration. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../ingestion/publisher.h"

#define MS 1000
#define BASE (50 * MS)   /* INGESTION_CONFIRM_WAIT_MS's default */

/* A storage that confirms keeps pacing: twice its recent time to confirm. */
static void test_follows_a_working_storage(void **state)
{
    (void)state;
    assert_int_equal(publisher_hold_us(BASE, 10 * MS, 2 * MS, 0), 20 * MS);
    assert_int_equal(publisher_hold_us(BASE, 40 * MS, 0, 0), 80 * MS);   /* slower than base */
    assert_int_equal(publisher_hold_us(BASE, 30 * MS, 1000 * MS, 0), 60 * MS);
}

/* Quick confirmations (moderate rates) do not stretch the hold to base: a
 * commit that stalls for a moment lets the next message go after the floor,
 * not after confirm_wait_ms. */
static void test_floor_below_base(void **state)
{
    (void)state;
    assert_int_equal(publisher_hold_us(BASE, 1500, 10 * MS, 0), PUBLISHER_HOLD_MIN_US);
    assert_int_equal(publisher_hold_us(BASE, 0, 0, 0), PUBLISHER_HOLD_MIN_US);
    assert_true(PUBLISHER_HOLD_MIN_US < BASE);
    /* An operator's shorter confirm_wait_ms is the floor then. */
    assert_int_equal(publisher_hold_us(2 * MS, 500, 0, 0), 2 * MS);
}

/* A message unconfirmed for over a second may be queued for a storage that
 * is gone for good (README: Known limits): the floor is base again, so that
 * its queue gets messages no more often than before. */
static void test_overdue_message(void **state)
{
    (void)state;
    assert_int_equal(publisher_hold_us(BASE, 1500, 10 * MS, 1000 * MS + 1), BASE);
    assert_int_equal(publisher_hold_us(BASE, 1500, 10 * MS, 1000 * MS), PUBLISHER_HOLD_MIN_US);
    assert_int_equal(publisher_hold_us(BASE, 40 * MS, 10 * MS, 60000 * MS), 80 * MS);
    assert_int_equal(publisher_hold_us(2 * MS, 500, 0, 5000 * MS), 2 * MS);
}

static void test_ceiling(void **state)
{
    (void)state;
    assert_int_equal(publisher_hold_us(BASE, 400 * MS, 0, 0), PUBLISHER_HOLD_MAX_US);
}

/* Silent for more than a second: taken for stopped, back to base, whatever
 * it took before. */
static void test_stopped_storage(void **state)
{
    (void)state;
    assert_int_equal(publisher_hold_us(BASE, 1500, 1000 * MS + 1, 0), BASE);
    assert_int_equal(publisher_hold_us(BASE, 400 * MS, 5000 * MS, 0), BASE);
    assert_int_equal(publisher_hold_us(1000 * MS, 1500, INT64_MAX / 2, 0), 1000 * MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follows_a_working_storage),
        cmocka_unit_test(test_floor_below_base),
        cmocka_unit_test(test_overdue_message),
        cmocka_unit_test(test_ceiling),
        cmocka_unit_test(test_stopped_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
