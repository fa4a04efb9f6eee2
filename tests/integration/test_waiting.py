"""test_waiting.py -- a connection whose request waits for the broker's
PUBACK. ingestion keeps such a connection reading (common/httpd.h:
httpd_defer), which saves libevent two epoll_ctl calls a request, and must
not change what a client sees: a request sent behind the waiting one is
answered after it; a client sending while it waits costs ingestion at most a
few KiB; a client that leaves does no harm; the idle timeout does not cut a
waiting request, and still closes an idle connection afterwards.

Straight to ingestion-1, not through HAProxy (which never sends a second
request on a connection before the first is answered)."""

import contextlib
import json
import re
import signal
import socket
import time

import pytest

from sfhelp import Api, now_us, rfc3339, rows, wait_for

IDLE_S = 2   # INGESTION_IDLE_TIMEOUT_S: well under the frozen broker's ~12 s
STACK_ENV = {"INGESTION_IDLE_TIMEOUT_S": IDLE_S}


@pytest.fixture
def st(own_stack):
    st = own_stack
    for port in st.ports.ingestion:   # connected, not spooling
        wait_for(lambda: (Api("127.0.0.1", port).get("/readyz", timeout=5).json or {})
                 .get("broker") == "up", 60, "ingestion connected to the broker")
    return st


def post_bytes(reading, connection="keep-alive"):
    body = json.dumps(reading).encode()
    return (b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Connection: {connection}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


def reading(sensor, value):
    return {"sensor_id": sensor, "type": "humidity", "value": value, "ts": rfc3339(now_us())}


def read_answers(sock, n, timeout=30):
    """n HTTP answers from sock: [(status, body)], each read by its
    Content-Length."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1")
            length = int(re.search(r"(?im)^content-length:\s*(\d+)", head)[1])
            if len(buf) >= head_end + 4 + length:
                out.append((int(head.split()[1]), buf[head_end + 4:head_end + 4 + length]))
                buf = buf[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {n} answers"
        buf += chunk
    return out


@contextlib.contextmanager
def frozen_broker(st):
    """mosquitto stopped (SIGSTOP) for the block: PUBACKs wait."""
    mq = st.services["mosquitto"]
    mq.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        mq.signal(signal.SIGCONT)


def wait_request_waiting(st):
    """Until ingestion-1 holds one reading not yet answered."""
    wait_for(lambda: Api("127.0.0.1", st.ports.ingestion[0]).get("/metrics", timeout=5)
             .body.decode().find("sf_inflight_readings 1") >= 0, 10, "the request waiting")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)[1])


def test_request_sent_behind_a_waiting_one_is_answered_after_it(st):
    sensor = f"pipelined-{now_us()}"
    a, b = reading(sensor, 1), reading(sensor, 2)
    b["ts"] = rfc3339(now_us() + 1000)
    with socket.create_connection(("127.0.0.1", st.ports.ingestion[0])) as s:
        s.sendall(post_bytes(a) + post_bytes(b))   # one write: both arrive together
        answers = read_answers(s, 2)
    assert [code for code, _ in answers] == [202, 202], answers
    assert [json.loads(body)["accepted"] for _, body in answers] == [1, 1]
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 2, 30, "both rows")


def test_waiting_request_outlives_the_idle_timeout(st):
    """The broker frozen: the request waits ~12 s (keepalive), six times the
    idle timeout, and still gets its answer (202, from the spool)."""
    sensor = f"waits-{now_us()}"
    with frozen_broker(st), socket.create_connection(("127.0.0.1", st.ports.ingestion[0])) as s:
        s.sendall(post_bytes(reading(sensor, 5)))
        t0 = time.monotonic()
        (code, body), = read_answers(s, 1, timeout=40)
        waited = time.monotonic() - t0
    assert code == 202, body
    assert waited > IDLE_S, f"answered in {waited:.1f} s: the broker was not frozen long enough"
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 1, 60, "the spooled row")


def test_idle_connection_still_closes_after_an_answer(st):
    with socket.create_connection(("127.0.0.1", st.ports.ingestion[0])) as s:
        s.sendall(post_bytes(reading(f"idle-{now_us()}", 7)))
        (code, _), = read_answers(s, 1)
        assert code == 202
        s.settimeout(IDLE_S * 5)
        t0 = time.monotonic()
        assert s.recv(1) == b"", "the server sent something on an idle connection"
        assert time.monotonic() - t0 < IDLE_S * 4, "the idle connection was not closed"


def test_client_sending_while_its_request_waits_costs_little(st):
    """While its request waits (broker frozen), a client keeps sending: the
    bytes wait in the kernel, not in ingestion, and what it sent is then
    taken for a request of its own (a bad one: 400) after the first is
    answered."""
    pid = st.services["ingestion-1"].proc.pid
    sensor = f"flood-{now_us()}"
    before = rss_kib(pid)
    s = socket.create_connection(("127.0.0.1", st.ports.ingestion[0]))
    with frozen_broker(st):
        s.sendall(post_bytes(reading(sensor, 9)))
        wait_request_waiting(st)
        s.setblocking(False)
        sent, t_end = 0, time.monotonic() + 3
        junk = b"x" * 65536
        while sent < 16 << 20 and time.monotonic() < t_end:
            try:
                sent += s.send(junk)
            except BlockingIOError:
                time.sleep(0.05)
        grown = rss_kib(pid) - before
        s.setblocking(True)
    try:
        assert sent > 256 * 1024, f"only {sent} bytes could be sent"
        assert grown < 1024, f"ingestion grew {grown} KiB while a client sent {sent >> 10} KiB"
        answers = read_answers(s, 2, timeout=40)
        assert answers[0][0] == 202, answers[0]
        assert answers[1][0] == 400, answers[1]   # "xxxx..." is no request line
    finally:
        s.close()
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 1, 60, "the row")


def test_client_that_leaves_while_its_request_waits(st):
    """The reading was taken: it is stored, though nobody hears the 202, and
    the replica goes on serving."""
    sensor = f"gone-{now_us()}"
    with frozen_broker(st):
        with socket.create_connection(("127.0.0.1", st.ports.ingestion[0])) as s:
            s.sendall(post_bytes(reading(sensor, 3)))
            wait_request_waiting(st)
        time.sleep(0.5)   # the close reaches ingestion while the broker is frozen
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 1, 60, "the row")
    a = Api("127.0.0.1", st.ports.ingestion[0]).post("/v1/readings", reading(f"{sensor}-after", 4))
    assert a.status == 202, a
    assert st.services["ingestion-1"].proc.poll() is None, "ingestion-1 exited"
