"""test_ingest_invalid.py -- requests that must be refused, through HAProxy:
each gets its status and a JSON error body, and nothing of them is stored.

Every reading here uses a sensor_id starting with "bad-" or the ts
2020-02-02T02:02:02Z, so the last test can look for any trace of them."""

import http.client
import json

import pytest

from sfhelp import barrier, now_us, rfc3339, rows

TS = "2020-02-02T02:02:02Z"


def r(sensor="bad-x", type_="temperature", value=21.5, unit="C", ts=TS, **extra):
    out = {"sensor_id": sensor, "type": type_, "value": value, "unit": unit, "ts": ts}
    out.update(extra)
    return out


def without(field, **kw):
    out = r(**kw)
    del out[field]
    return out


def future_ts():
    return rfc3339(now_us() + 3600 * 1_000_000)


def huge_body():
    body = json.dumps(r("bad-big"))
    return body + " " * (1024 * 1024 + 1024 - len(body))  # valid JSON, over 1 MiB


def too_many():
    return [r("bad-many", ts=f"2020-02-02T03:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z")
            for i in range(1001)]


J = "application/json"
# id, method, path, body (or a function making it), content type, status,
# expected field, expected index (None: not checked)
CASES = [
    ("not-json", "POST", "/v1/readings", "hello, sensor", J, 400, None, None),
    ("truncated-json", "POST", "/v1/readings", '{"sensor_id":"bad-trunc","type":"temperature","value":2', J, 400, None, None),
    ("top-level-number", "POST", "/v1/readings", "42", J, 400, None, None),
    ("top-level-string", "POST", "/v1/readings", '"bad-reading"', J, 400, None, None),
    ("empty-array", "POST", "/v1/readings", "[]", J, 400, None, None),
    ("1001-readings", "POST", "/v1/readings", too_many, J, 400, None, None),
    ("body-over-1MiB", "POST", "/v1/readings", huge_body, J, 413, None, None),
    ("content-type-text-plain", "POST", "/v1/readings", r("bad-ct-plain"), "text/plain", 415, None, None),
    ("content-type-missing", "POST", "/v1/readings", r("bad-ct-missing"), None, 415, None, None),
    ("missing-sensor_id", "POST", "/v1/readings", without("sensor_id"), J, 400, "sensor_id", 0),
    ("missing-type", "POST", "/v1/readings", without("type", sensor="bad-no-type"), J, 400, "type", 0),
    ("missing-value", "POST", "/v1/readings", without("value", sensor="bad-no-value"), J, 400, "value", 0),
    ("value-string", "POST", "/v1/readings", r("bad-str", value="21.5"), J, 400, "value", 0),
    ("value-NaN-literal", "POST", "/v1/readings",
     '{"sensor_id":"bad-nan","type":"temperature","value":NaN,"unit":"C","ts":"%s"}' % TS, J, 400, None, None),
    ("unknown-type", "POST", "/v1/readings", r("bad-type", type_="voltage", unit="V"), J, 400, "type", 0),
    ("humidity-in-F", "POST", "/v1/readings", r("bad-unit", type_="humidity", value=40, unit="F"), J, 400, "unit", 0),
    ("below-absolute-zero", "POST", "/v1/readings", r("bad-cold", value=-300, unit="C"), J, 400, "value", 0),
    ("humidity-over-100", "POST", "/v1/readings", r("bad-wet", type_="humidity", value=150, unit="%"), J, 400, "value", 0),
    ("sensor_id-with-space", "POST", "/v1/readings", r("bad-with space"), J, 400, "sensor_id", 0),
    ("sensor_id-65-chars", "POST", "/v1/readings", r("bad-" + "x" * 61), J, 400, "sensor_id", 0),
    ("ts-without-offset", "POST", "/v1/readings", r("bad-naive-ts", ts="2026-01-15T10:00:00"), J, 400, "ts", 0),
    ("ts-hour-in-future", "POST", "/v1/readings", lambda: r("bad-future", ts=future_ts()), J, 400, "ts", 0),
    ("tags-17-entries", "POST", "/v1/readings",
     r("bad-tags-many", tags={f"k{i}": "v" for i in range(17)}), J, 400, "tags", 0),
    ("tags-nested-object", "POST", "/v1/readings", r("bad-tags-nested", tags={"a": {"b": "c"}}), J, 400, "tags", 0),
    ("tags-number-value", "POST", "/v1/readings", r("bad-tags-number", tags={"a": 1}), J, 400, "tags", 0),
    ("valid-then-invalid", "POST", "/v1/readings",
     [r("bad-mixed-ok"), without("value", sensor="bad-mixed-invalid")], J, 400, "value", 1),
    ("GET-readings", "GET", "/v1/readings", None, None, 405, None, None),
    ("unknown-path", "POST", "/nope", r("bad-nope"), J, 404, None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused(api, case):
    name, method, path, body, ctype, status, field, index = case
    if callable(body):
        body = body()
    try:
        a = api.request(method, path, body, content_type=ctype)
    except (http.client.HTTPException, ConnectionError) as e:
        pytest.fail(f"{method} {path} ({name}): no HTTP answer, the connection was closed "
                    f"({type(e).__name__}: {e}); expected {status}")
    assert a.status == status, f"{method} {path} ({name}): expected {status}, got {a!r}"
    assert a.content_type.startswith("application/json"), f"error body is not JSON: {a!r}"
    assert isinstance(a.json, dict) and isinstance(a.json.get("error"), str) and a.json["error"], \
        f"expected a JSON body {{\"error\": \"...\"}}, got {a!r}"
    if status == 400:
        assert "index" in a.json and "field" in a.json, f"400 without index/field: {a!r}"
        if field is not None:
            assert (a.json["field"] or "").split(".")[0].split("[")[0] == field, \
                f"expected field {field!r}: {a!r}"
        if index is not None:
            # A single object is index 0; the API may also say null for it.
            ok = (index, None) if index == 0 else (index,)
            assert a.json["index"] in ok, f"expected index {index}: {a!r}"
    if status == 405:
        assert "POST" in a.headers.get("allow", ""), f"405 without Allow: POST: {a!r}"


def test_nothing_of_them_stored(stack, api):
    barrier(stack, api)
    left = rows(stack, f"sensor_id like 'bad%' or ts = '{TS}' or ts::date = '2020-02-02'")
    assert not left, f"refused readings were stored: {[(x['sensor_id'], x['ts_us']) for x in left]}"
