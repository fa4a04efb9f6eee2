/* test_ingestion_http.c -- ingestion's routing and Content-Type rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <event2/http.h>
#include <string.h>

#include "../../ingestion/http_api.h"

static void test_routes(void **state)
{
    (void)state;
    const char *allow = NULL;
    assert_int_equal(http_api_route("/v1/readings", EVHTTP_REQ_POST, &allow), ROUTE_READINGS);
    assert_int_equal(http_api_route("/", EVHTTP_REQ_POST, &allow), ROUTE_LEGACY);
    assert_int_equal(http_api_route("/healthz", EVHTTP_REQ_GET, &allow), ROUTE_HEALTHZ);
    assert_int_equal(http_api_route("/healthz", EVHTTP_REQ_HEAD, &allow), ROUTE_HEALTHZ);
    assert_int_equal(http_api_route("/readyz", EVHTTP_REQ_GET, &allow), ROUTE_READYZ);
    assert_null(allow);
}

static void test_wrong_methods_say_what_is_allowed(void **state)
{
    (void)state;
    const char *allow = NULL;
    assert_int_equal(http_api_route("/v1/readings", EVHTTP_REQ_GET, &allow), ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    allow = NULL;
    assert_int_equal(http_api_route("/", EVHTTP_REQ_PUT, &allow), ROUTE_BAD_METHOD);
    assert_string_equal(allow, "POST");
    allow = NULL;
    assert_int_equal(http_api_route("/readyz", EVHTTP_REQ_POST, &allow), ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD");
    allow = NULL;
    assert_int_equal(http_api_route("/healthz", EVHTTP_REQ_DELETE, &allow), ROUTE_BAD_METHOD);
    assert_string_equal(allow, "GET, HEAD");
}

static void test_unknown_paths(void **state)
{
    (void)state;
    const char *allow = NULL;
    static const char *const paths[] = { "/nope", "/v1/readings/", "/v1", "/v2/readings",
                                         "/V1/READINGS", "/healthz/x", "", "//" };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        assert_int_equal(http_api_route(paths[i], EVHTTP_REQ_POST, &allow), ROUTE_NOT_FOUND);
    assert_int_equal(http_api_route(NULL, EVHTTP_REQ_GET, &allow), ROUTE_NOT_FOUND);
}

static void test_content_type(void **state)
{
    (void)state;
    assert_true(http_api_is_json("application/json"));
    assert_true(http_api_is_json("Application/JSON"));
    assert_true(http_api_is_json("application/json; charset=utf-8"));
    assert_true(http_api_is_json("application/json;charset=UTF-8"));
    assert_true(http_api_is_json("  application/json"));
    assert_false(http_api_is_json(NULL));
    assert_false(http_api_is_json(""));
    assert_false(http_api_is_json("text/plain"));
    assert_false(http_api_is_json("application/jsonx"));
    assert_false(http_api_is_json("application/json-patch+json"));
    assert_false(http_api_is_json("application/x-www-form-urlencoded"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_wrong_methods_say_what_is_allowed),
        cmocka_unit_test(test_unknown_paths),
        cmocka_unit_test(test_content_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
