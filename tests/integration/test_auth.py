"""Sensor API keys (INGESTION_API_KEYS_FILE, reloaded on SIGHUP) and the
per-sensor rate limit (INGESTION_RATE_PER_SENSOR / _BURST_PER_SENSOR), on a
stack of their own: keys on, and a low limit (2 readings/s, burst 5)."""

import re
import signal
import tempfile
import uuid
from pathlib import Path

from sfhelp import Api, now_us, rfc3339, rows, wait_for

_DIR = Path(tempfile.mkdtemp(prefix="sensorflow-keys-"))
KEYS = _DIR / "api-keys"
HALL = "hall1-key-" + uuid.uuid4().hex          # may write hall1-* sensors below
OPS = "ops-key-" + uuid.uuid4().hex             # may write any sensor
HALL_SENSORS = ["hall1-t1", "hall1-h1", "hall1-flood", "hall1-calm"]
KEYS_TEXT = (f"# test keys\n{HALL} {','.join(HALL_SENSORS)}\n"
             f"{OPS}  *   # operators\n")
KEYS.write_text(KEYS_TEXT)
STACK_ENV = {"INGESTION_API_KEYS_FILE": str(KEYS), "INGESTION_RATE_PER_SENSOR": "2",
             "INGESTION_BURST_PER_SENSOR": "5"}

_T = [now_us()]


def reading(sensor):
    _T[0] += 1000   # every reading its own ts
    return {"sensor_id": sensor, "type": "temperature", "value": 21, "unit": "C",
            "ts": rfc3339(_T[0])}


def post(st, body, key=None, port=None, headers=None):
    h = dict(headers or {})
    if key:
        h["X-API-Key"] = key
    return Api("127.0.0.1", port or st.ports.http).post("/v1/readings", body, headers=h)


def metric(st, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for p in st.ports.ingestion:
        text = Api("127.0.0.1", p).get("/metrics").body.decode()
        m = re.search(rf"^{name}{{{re.escape(want)}}} (\S+)$", text, re.M)
        total += float(m[1]) if m else 0.0
    return total


def test_keys_decide_who_writes_what(own_stack):
    st = own_stack
    before = {r: metric(st, "sf_rejected_requests_total", reason=r)
              for r in ("unauthorized", "forbidden")}
    a = post(st, reading("hall1-t1"))
    assert a.status == 401, a
    assert a.headers.get("www-authenticate", "").startswith("Bearer"), a.headers
    assert "missing API key" in a.json["error"]
    assert a.json["index"] is None and a.json["field"] is None, a
    a = post(st, reading("hall1-t1"), key="not-a-key-0123456789")
    assert a.status == 401 and a.json["error"] == "unknown API key", a
    a = Api("127.0.0.1", st.ports.http).post("/v1/readings", reading("hall1-t1"),
                                             headers={"Authorization": f"Bearer {HALL}"})
    assert a.status == 202, a
    # A key of hall 1 for another sensor, alone or inside a batch: 403, nothing stored.
    other = f"hall2-{uuid.uuid4().hex[:6]}"
    a = post(st, reading(other), key=HALL)
    assert a.status == 403 and other in a.json["error"], a
    a = post(st, [reading("hall1-h1"), reading(other)], key=HALL)
    assert a.status == 403 and a.json["index"] == 1 and a.json["field"] == "sensor_id", a
    # The legacy endpoint names the field as its body does.
    legacy = {"type": "Sensor", "id": "3f2b9c1e-8a4d-4c7b-9e1f-0a1b2c3d4e5f",
              "content": {"temperature_f": 71.6, "time_of_measurement": "2019-08-30T12:00:00"}}
    a = Api("127.0.0.1", st.ports.http).post("/", legacy, headers={"X-API-Key": HALL})
    assert a.status == 403 and a.json["index"] == 0 and a.json["field"] == "id", a
    b = post(st, reading("hall1-h1"), key=HALL)
    assert b.status == 202, b
    wait_for(lambda: rows(st, "sensor_id = 'hall1-h1'"), what="hall1-h1 stored")
    assert len(rows(st, "sensor_id = 'hall1-h1'")) == 1   # not the one of the 403 batch
    assert rows(st, f"sensor_id = '{other}'") == []
    a = post(st, reading(other), key=OPS)
    assert a.status == 202, a
    assert metric(st, "sf_rejected_requests_total", reason="unauthorized") - before[
        "unauthorized"] == 2
    assert metric(st, "sf_rejected_requests_total", reason="forbidden") - before[
        "forbidden"] == 3


def _reload(st, _since):
    for i in (1, 2):
        st.services[f"ingestion-{i}"].signal(signal.SIGHUP)


def _log_count(st, pattern):
    return sum(len(re.findall(pattern, st.log_path(f"ingestion-{i}").read_text()))
               for i in (1, 2))


def test_sighup_reloads_keys_and_a_bad_file_keeps_the_old(own_stack):
    st = own_stack
    new = "new-key-" + uuid.uuid4().hex
    sensor = f"late-{uuid.uuid4().hex[:6]}"
    assert post(st, reading(sensor), key=new).status == 401
    n = _log_count(st, r"auth\.reloaded ")
    KEYS.write_text(KEYS_TEXT + f"{new} {sensor}\n")
    _reload(st, n)
    wait_for(lambda: _log_count(st, r"auth\.reloaded .*keys=3") >= 2, what="both replicas reloaded")
    for port in st.ports.ingestion:
        a = post(st, reading(sensor), key=new, port=port)
        assert a.status == 202, a
    # A broken file: an error line, and the keys stay as they were.
    KEYS.write_text("this is not a key file\n")
    _reload(st, 0)
    wait_for(lambda: _log_count(st, r"auth\.reload_failed .*api-keys:1: ") >= 2,
             what="both replicas refused the broken file")
    for port in st.ports.ingestion:
        assert post(st, reading(sensor), key=new, port=port).status == 202
    KEYS.write_text(KEYS_TEXT)
    for i in (1, 2):
        assert new not in st.log_path(f"ingestion-{i}").read_text(), "a key in the log"


def test_sensor_sim_sends_its_key(own_stack):
    r = own_stack.run_sim(["--sensors", "3", "--count", "6", "--interval", "0.2"],
                          env={"SIM_API_KEY": OPS})
    assert r.returncode == 0, r.stdout


def test_flood_from_one_sensor_gets_429_while_others_pass(own_stack):
    st = own_stack
    port = st.ports.ingestion[0]   # the limit is per replica
    before = metric(st, "sf_rejected_requests_total", reason="rate_limited")
    answers = [post(st, reading("hall1-flood"), key=HALL, port=port) for _ in range(12)]
    codes = [a.status for a in answers]
    assert codes[:5] == [202] * 5, codes           # the burst
    limited = [a for a in answers if a.status == 429]
    assert limited, codes
    for a in limited:
        assert int(a.headers["retry-after"]) >= 1, a.headers
        assert "hall1-flood" in a.json["error"]
        assert a.json["index"] == 0 and a.json["field"] == "sensor_id", a
    # Meanwhile another sensor, same key, same replica, is not held back.
    calm = post(st, reading("hall1-calm"), key=HALL, port=port)
    assert calm.status == 202, calm
    wait_for(lambda: rows(st, "sensor_id = 'hall1-calm'"), what="hall1-calm stored")
    wait_for(lambda: len(rows(st, "sensor_id = 'hall1-flood'")) == codes.count(202),
             what="the flood's accepted readings stored")
    assert len(rows(st, "sensor_id = 'hall1-flood'")) == codes.count(202)
    assert metric(st, "sf_rejected_requests_total", reason="rate_limited") - before == len(limited)


def test_more_than_the_burst_in_one_request_gets_413(own_stack):
    """6 readings of one sensor in one request against a burst of 5: waiting
    would never let it pass, so not 429 (whose Retry-After promises it
    would) but 413, naming the sensor; a fresh sensor, so its bucket is
    full."""
    st = own_stack
    before = metric(st, "sf_rejected_requests_total", reason="too_large")
    sensor = "ops-burst-" + uuid.uuid4().hex[:8]
    a = post(st, [reading("ops-ok-" + uuid.uuid4().hex[:8])] + [reading(sensor) for _ in range(6)],
             key=OPS)
    assert a.status == 413, a
    assert "retry-after" not in a.headers, a.headers
    assert sensor in a.json["error"] and "INGESTION_BURST_PER_SENSOR" in a.json["error"], a
    assert a.json["index"] == 1 and a.json["field"] == "sensor_id", a
    assert metric(st, "sf_rejected_requests_total", reason="too_large") - before == 1
    a = post(st, [reading(sensor) for _ in range(5)], key=OPS)
    assert a.status == 202, a
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) == 5, what="the 5 stored")
