/* test_common_net.c -- net_url_port and net_nodelay_to_port. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "net.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_url_port(void **state)
{
    (void)state;
    assert_int_equal(net_url_port("tcp://127.0.0.1:1883", 0), 1883);
    assert_int_equal(net_url_port("tcp://mosquitto:11883/", 0), 11883);
    assert_int_equal(net_url_port("mqtt://[::1]:2000", 0), 2000);
    assert_int_equal(net_url_port("tcp://[::1]", 7), 7);
    assert_int_equal(net_url_port("tcp://host", 1883), 1883);
    assert_int_equal(net_url_port("tcp://host:", 1883), 1883);
    assert_int_equal(net_url_port("tcp://host:99999", 1883), 1883);
    assert_int_equal(net_url_port("tcp://host:12x", 1883), 1883);
    assert_int_equal(net_url_port("host:42", 1), 42);
}

/* A connected loopback socket gets TCP_NODELAY when its peer port matches,
 * and keeps Nagle when it does not. */
static void test_nodelay(void **state)
{
    (void)state;
    int lsn = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lsn >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    assert_int_equal(bind(lsn, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lsn, 1), 0);
    assert_int_equal(getsockname(lsn, (struct sockaddr *)&a, &al), 0);
    int cli = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(cli, (struct sockaddr *)&a, sizeof a), 0);
    int port = ntohs(a.sin_port), v = -1;
    socklen_t vl = sizeof v;

    assert_int_equal(net_nodelay_to_port(port == 1 ? 2 : port - 1), 0);
    assert_int_equal(getsockopt(cli, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    assert_int_equal(v, 0);

    assert_int_equal(net_nodelay_to_port(port), 1);
    assert_int_equal(getsockopt(cli, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    assert_true(v != 0);
    close(cli);
    close(lsn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_port),
        cmocka_unit_test(test_nodelay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
