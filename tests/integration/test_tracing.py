"""Following one reading: the request id (X-Request-Id) in every service's log.

A stack of its own at LOG_LEVEL=debug, the level that writes a line per
request (ingestion) and per stored message (storage)."""

import re
import uuid

from sfhelp import Api, now_us, rfc3339, rows, wait_for

STACK_ENV = {"LOG_LEVEL": "debug"}


def reading(sensor):
    return {"sensor_id": sensor, "type": "humidity", "value": 40, "unit": "%",
            "ts": rfc3339(now_us())}


def logs_naming(st, rid):
    """{service: [lines]} of the logs that name rid as a whole word."""
    pat = re.compile(rf"(?<![A-Za-z0-9._:-]){re.escape(rid)}(?![A-Za-z0-9._:-])")
    out = {}
    for name in st.names:
        try:
            text = st.log_path(name).read_text(errors="replace")
        except OSError:
            continue
        lines = [ln for ln in text.splitlines() if pat.search(ln)]
        if lines:
            out[name] = lines
    return out


def follow(st, rid, sensor):
    wait_for(lambda: rows(st, f"sensor_id = '{sensor}'"), what=f"{sensor} stored")

    def both():
        found = logs_naming(st, rid)
        ing = [n for n in found if n.startswith("ingestion-")]
        return found if ing and "storage" in found else None
    found = wait_for(both, what=f"{rid} in an ingestion log and in storage's log")
    (ing,) = [n for n in found if n.startswith("ingestion-")]   # exactly one replica
    assert any("http.accepted" in ln for ln in found[ing]), found[ing]
    assert any("storage.batch" in ln for ln in found["storage"]), found["storage"]
    return found


def test_client_request_id_is_returned_and_followed_to_storage(own_stack):
    api = Api("127.0.0.1", own_stack.ports.http)
    rid = f"trace-{uuid.uuid4().hex}"
    sensor = f"trace-{uuid.uuid4().hex[:8]}"
    a = api.post("/v1/readings", reading(sensor), headers={"X-Request-Id": rid})
    assert a.status == 202, a
    assert a.headers.get("x-request-id") == rid
    follow(own_stack, rid, sensor)


def test_haproxy_made_request_id_is_followed_too(own_stack):
    api = Api("127.0.0.1", own_stack.ports.http)
    sensor = f"trace-{uuid.uuid4().hex[:8]}"
    a = api.post("/v1/readings", [reading(sensor), {**reading(sensor), "type": "temperature",
                                                    "unit": "C", "value": 1}])
    assert a.status == 202, a
    rid = a.headers["x-request-id"]
    follow(own_stack, rid, sensor)


def test_invalid_request_id_is_replaced_and_rejections_name_it(own_stack):
    replica = Api("127.0.0.1", own_stack.ports.ingestion[0])
    a = replica.post("/v1/readings", {"sensor_id": "x", "type": "nope"},
                     headers={"X-Request-Id": "has spaces and \"quotes\""})
    assert a.status == 400, a
    rid = a.headers.get("x-request-id", "")
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", rid), a.headers
    found = wait_for(lambda: logs_naming(own_stack, rid).get("ingestion-1"),
                     what="the rejection's log line")
    assert any("http.rejected" in ln and "status=400" in ln for ln in found), found
