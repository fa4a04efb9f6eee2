/* test_storage_consumer.c -- the part of storage/consumer.c that needs no
 * broker: making error texts safe for one-line key="value" logs. (Delivery,
 * ack-after-commit and redelivery are checked against real servers.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../storage/consumer.h"

static void test_log_value(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(storage_log_value("plain text", buf, sizeof buf), "plain text");
    assert_string_equal(storage_log_value("a \"quoted\" word", buf, sizeof buf),
                        "a 'quoted' word");
    assert_string_equal(storage_log_value("line1\nline2\r\tx\x7f", buf, sizeof buf),
                        "line1 line2  x ");
    assert_string_equal(storage_log_value("caf\xc3\xa9", buf, sizeof buf), "caf\xc3\xa9");
    assert_string_equal(storage_log_value("", buf, sizeof buf), "");
    char small[5];
    assert_string_equal(storage_log_value("abcdefgh", small, sizeof small), "abcd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
