"""GET /metrics on ingestion and storage: the numbers move as readings flow
and as the broker goes away and comes back (README: Operations).

Counters are compared before and after, summed over the two replicas (HAProxy
spreads the requests)."""

import http.client
import json
import re
import uuid

from sfhelp import Api, now_us, rfc3339, rows, wait_for

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(host, port):
    """{(name, frozenset of label pairs): value} of one /metrics page, and
    checks the page's form on the way (content type, TYPE before samples)."""
    a = Api(host, port).get("/metrics")
    assert a.status == 200, a
    assert a.content_type.startswith("text/plain; version=0.0.4"), a.content_type
    out, typed = {}, set()
    for line in a.body.decode().splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        name = m[1]
        assert any(name == t or name.startswith(t + "_") for t in typed), f"no TYPE for {name}"
        out[(name, frozenset(_LABEL.findall(m[3] or "")))] = float(m[4])
    return out


def val(sample, name, **labels):
    return sample.get((name, frozenset(labels.items())), 0.0)


def ingestion_sum(st, name, **labels):
    return sum(val(scrape("127.0.0.1", p), name, **labels) for p in st.ports.ingestion)


def storage(st):
    return scrape("127.0.0.1", st.ports.storage_http)


T0 = now_us()


def reading(sensor, i):
    """Reading i of a sensor: its own ts, a millisecond apart."""
    return {"sensor_id": sensor, "type": "pressure", "value": 1000 + i, "unit": "hPa",
            "ts": rfc3339(T0 - i * 1000)}


def test_metrics_move_as_readings_flow(stack, api):
    sensor = f"metrics-{uuid.uuid4().hex[:8]}"
    before = {n: ingestion_sum(stack, n) for n in ("sf_readings_accepted_total",
                                                   "sf_publish_latency_seconds_count")}
    req202 = ingestion_sum(stack, "sf_http_requests_total", route="/v1/readings", status="202")
    invalid = ingestion_sum(stack, "sf_rejected_requests_total", reason="invalid")
    s0 = storage(stack)

    bodies = [[reading(sensor, i) for i in range(k, k + n)] for k, n in ((0, 1), (1, 2), (3, 3))]
    for b in bodies:
        a = api.post("/v1/readings", b)
        assert a.status == 202, a
    bad = api.post("/v1/readings", {"sensor_id": sensor, "type": "pressure"})
    assert bad.status == 400, bad
    wait_for(lambda: len(rows(stack, f"sensor_id = '{sensor}'")) == 6, what="6 rows stored")

    assert ingestion_sum(stack, "sf_readings_accepted_total") - before[
        "sf_readings_accepted_total"] == 6
    assert ingestion_sum(stack, "sf_http_requests_total", route="/v1/readings",
                         status="202") - req202 == 3
    assert ingestion_sum(stack, "sf_rejected_requests_total", reason="invalid") - invalid == 1
    assert ingestion_sum(stack, "sf_publish_latency_seconds_count") > before[
        "sf_publish_latency_seconds_count"]
    wait_for(lambda: val(storage(stack), "sf_rows_inserted_total")
             - val(s0, "sf_rows_inserted_total") >= 6, what="storage counted 6 rows inserted")
    s1 = storage(stack)
    assert val(s1, "sf_batch_rows_count") > val(s0, "sf_batch_rows_count")
    assert val(s1, "sf_commit_latency_seconds_count") > val(s0, "sf_commit_latency_seconds_count")
    assert 0 <= val(s1, "sf_lag_seconds") < 3600
    assert val(s1, "sf_db_connected") == 1 and val(s1, "sf_mqtt_connected") == 1

    # The same readings again: stored once, counted as duplicates.
    for b in bodies:
        assert api.post("/v1/readings", b).status == 202
    wait_for(lambda: val(storage(stack), "sf_rows_duplicate_total")
             - val(s1, "sf_rows_duplicate_total") >= 6, what="6 duplicates counted")
    assert len(rows(stack, f"sensor_id = '{sensor}'")) == 6


def test_storage_health_endpoints(stack):
    s = Api("127.0.0.1", stack.ports.storage_http)
    assert s.get("/healthz").status == 200
    r = s.get("/readyz")
    assert r.status == 200 and r.json == {"status": "ready"}, r
    assert s.get("/nope").status == 404
    assert s.post("/metrics", b"x").status == 405


def test_broker_outage_shows_in_state_and_reconnects(own_stack):
    st = own_stack
    lost_i = ingestion_sum(st, "sf_mqtt_connection_lost_total")
    lost_s = val(storage(st), "sf_mqtt_connection_lost_total")
    # Ready includes spooling: a replica may still be connecting.
    wait_for(lambda: ingestion_sum(st, "sf_mqtt_connected") == 2, 30,
             what="both replicas connected to the broker")
    st.stop_service("mosquitto")
    try:
        wait_for(lambda: ingestion_sum(st, "sf_mqtt_connected") == 0,
                 what="both replicas report sf_mqtt_connected 0")
        wait_for(lambda: val(storage(st), "sf_mqtt_connected") == 0,
                 what="storage reports sf_mqtt_connected 0")
        r = Api("127.0.0.1", st.ports.storage_http).get("/readyz")
        assert r.status == 503 and "broker" in r.json["reason"], r
        # Readings taken meanwhile wait in the spool, and the gauge says so.
        sensor = f"outage-{uuid.uuid4().hex[:8]}"
        a = Api("127.0.0.1", st.ports.ingestion[0]).post("/v1/readings", reading(sensor, 0))
        assert a.status == 202, a
        assert val(scrape("127.0.0.1", st.ports.ingestion[0]), "sf_spool_bytes") > 0
    finally:
        st.start_service("mosquitto")
    wait_for(lambda: ingestion_sum(st, "sf_mqtt_connected") == 2, what="replicas reconnected")
    wait_for(lambda: val(storage(st), "sf_mqtt_connected") == 1, what="storage reconnected")
    assert ingestion_sum(st, "sf_mqtt_connection_lost_total") >= lost_i + 2
    assert val(storage(st), "sf_mqtt_connection_lost_total") >= lost_s + 1
    wait_for(lambda: rows(st, f"sensor_id = '{sensor}'"), what="the spooled reading stored")
    wait_for(lambda: val(scrape("127.0.0.1", st.ports.ingestion[0]), "sf_spool_bytes") == 0,
             what="the spool forwarded")
    wait_for(lambda: Api("127.0.0.1", st.ports.storage_http).get("/readyz").status == 200,
             what="storage ready again")


def test_head_answers_have_no_body(stack):
    """HEAD on /healthz, /readyz and /metrics, straight to a replica and to
    storage: the headers of GET (Content-Length included) and no body, so the
    next answer on the same keep-alive connection reads cleanly."""
    for port in (stack.ports.ingestion[0], stack.ports.storage_http):
        _head_then_get(port)


def _head_then_get(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            conn.request("GET", path)
            g = conn.getresponse()
            body = g.read()
            conn.request("HEAD", path)
            h = conn.getresponse()
            assert h.read() == b""
            assert h.status == g.status, (path, h.status, g.status)
            # /metrics changes between two scrapes: only its presence counts
            assert h.getheader("Content-Length"), path
            if path != "/metrics":
                assert int(h.getheader("Content-Length")) == len(body), path
        conn.request("GET", "/healthz")
        last = conn.getresponse()
        assert last.status == 200 and json.loads(last.read()) == {"status": "ok"}
    finally:
        conn.close()
