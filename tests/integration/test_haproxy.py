"""HAProxy in front of the replicas: request ids, its stats page and
Prometheus exporter, the per-address rate limit and TLS on the public port.

The request id and stats tests use the shared stack. The rate limit and TLS
need a stack of their own (own_stack, configured by STACK_ENV): its public
port speaks TLS with a certificate this module makes, and it lets one address
make RATE_LIMIT requests per 10 s. The flood test comes last, since the
address stays limited for a while after it."""

import http.client
import socket
import time
import json
import re
import ssl
import subprocess
import tempfile
import uuid
from pathlib import Path

from sfhelp import Api, now_us, rfc3339, rows, wait_for

RATE_LIMIT = 40

_CERT_DIR = Path(tempfile.mkdtemp(prefix="sensorflow-tls-"))
CERT = _CERT_DIR / "haproxy.pem"


def _make_cert():
    """A self-signed certificate for 127.0.0.1, as README: Security says."""
    key, crt = _CERT_DIR / "key.pem", _CERT_DIR / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    CERT.write_bytes(crt.read_bytes() + key.read_bytes())
    return crt


CA = _make_cert()
STACK_ENV = {"HAPROXY_TLS_CERT": str(CERT), "RATE_LIMIT_PER_ADDRESS": str(RATE_LIMIT)}


def reading(sensor):
    return {"sensor_id": sensor, "type": "temperature", "value": 20.5, "unit": "C",
            "ts": rfc3339(now_us())}


def https_post(port, body, headers=None):
    ctx = ssl.create_default_context(cafile=str(CA))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
    try:
        h = {"Content-Type": "application/json", **(headers or {})}
        conn.request("POST", "/v1/readings", body=json.dumps(body), headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# --- request ids (shared stack) ---------------------------------------------------

def test_request_id_is_set_when_absent_and_kept_when_sent(stack, api):
    a = api.post("/v1/readings", reading(f"rid-{uuid.uuid4().hex[:8]}"))
    assert a.status == 202, a
    rid = a.headers.get("x-request-id", "")
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", rid), a.headers
    b = api.post("/v1/readings", reading(f"rid-{uuid.uuid4().hex[:8]}"))
    assert b.headers.get("x-request-id") not in (None, rid), "two requests got the same id"
    mine = f"client-{uuid.uuid4().hex}"
    c = api.post("/v1/readings", reading(f"rid-{uuid.uuid4().hex[:8]}"),
                 headers={"X-Request-Id": mine})
    assert c.status == 202, c
    assert c.headers.get("x-request-id") == mine


def test_haproxy_errors_carry_a_request_id(stack, api):
    # A 404 from ingestion and a JSON error page: both name the request.
    a = api.get("/no/such/route")
    assert a.status == 404, a
    assert a.headers.get("x-request-id"), a.headers


# --- stats page and exporter (shared stack) ---------------------------------------

def test_stats_port_serves_prometheus_metrics_and_the_stats_page(stack):
    s = Api("127.0.0.1", stack.ports.stats)
    m = s.get("/metrics")
    assert m.status == 200, m
    text = m.body.decode()
    assert "# TYPE haproxy_frontend_http_requests_total counter" in text
    # Both replicas are known to the exporter, and up.
    for i in (1, 2):
        assert re.search(rf'haproxy_server_status{{proxy="ingestion",server="ingestion-{i}",'
                         rf'state="UP"}} 1', text), f"ingestion-{i} not UP in /metrics"
    page = s.get("/stats")
    assert page.status == 200 and b"ingestion-1" in page.body, page
    # The public port does not serve them.
    pub = Api("127.0.0.1", stack.ports.http).get("/stats")
    assert pub.status == 404, pub


# --- TLS and the per-address limit (own stack) ---------------------------------------

def test_tls_public_port_accepts_https_and_stores(own_stack):
    sensor = f"tls-{uuid.uuid4().hex[:8]}"
    status, headers, body = https_post(own_stack.ports.http, reading(sensor))
    assert status == 202, body
    assert headers.get("x-request-id")
    wait_for(lambda: rows(own_stack, f"sensor_id = '{sensor}'"), what="the HTTPS reading stored")
    # Plain HTTP on the TLS port is not served.
    try:
        plain = Api("127.0.0.1", own_stack.ports.http).post("/v1/readings", reading(sensor),
                                                             timeout=5)
    except (http.client.HTTPException, OSError):
        plain = None
    assert plain is None or plain.status >= 400, plain


def test_flood_from_one_address_gets_429_and_nothing_of_it_is_stored(own_stack):
    prefix = f"flood-{uuid.uuid4().hex[:6]}"
    answers = []
    for i in range(RATE_LIMIT + 20):
        answers.append(https_post(own_stack.ports.http, reading(f"{prefix}-{i}")))
    codes = [a[0] for a in answers]
    assert 429 in codes, codes
    assert codes.count(202) <= RATE_LIMIT, codes
    limited = [a for a in answers if a[0] == 429]
    for status, headers, body in limited:
        assert int(headers["retry-after"]) >= 1, headers
        assert headers["content-type"].startswith("application/json"), headers
        assert "too many requests" in json.loads(body)["error"]
        assert headers.get("x-request-id")
    # Barrier: a reading straight to a replica (not through HAProxy), stored
    # after everything posted before it.
    barrier = f"{prefix}-barrier"
    b = Api("127.0.0.1", own_stack.ports.ingestion[0]).post("/v1/readings", reading(barrier))
    assert b.status == 202, b
    wait_for(lambda: rows(own_stack, f"sensor_id = '{barrier}'"), what="the barrier reading")
    accepted = {f"{prefix}-{i}" for i, a in enumerate(answers) if a[0] == 202}
    wait_for(lambda: len(rows(own_stack, f"sensor_id like '{prefix}-%' and sensor_id <> '{barrier}'"))
             == len(accepted), what="every accepted flood reading stored")
    stored = {r["sensor_id"] for r in rows(own_stack, f"sensor_id like '{prefix}-%'")}
    assert stored == accepted | {barrier}


def test_slow_body_is_cut_by_haproxy(stack):
    """A client trickling its body (slowloris) gets 408 from HAProxy once
    `timeout http-request` (10 s) is up, rather than holding a replica's
    connection for as long as it keeps sending."""
    body = json.dumps({"sensor_id": f"slow-{now_us()}", "type": "humidity", "value": 50})
    head = (f"POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", stack.ports.http), timeout=60)
    answer = b""
    try:
        s.sendall(head)
        for ch in body[:-1]:   # never the last byte
            s.sendall(ch.encode())
            time.sleep(1)
            s.settimeout(0.01)
            try:
                answer = s.recv(4096)
            except socket.timeout:
                continue
            finally:
                s.settimeout(60)
            break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408"), f"a trickled body: {answer[:200]!r}"
    assert b"application/json" in answer and b'"error"' in answer, answer
    assert not rows(stack, f"sensor_id = '{json.loads(body)['sensor_id']}'")
