"""test_ingest_invalid.py -- requests that must be refused, through HAProxy:
each gets its status and a JSON error body naming the problem, and nothing
of them is stored. One table (CASES) holds every case of issue 3's "Bad
input (HTTP)" list; requests that http.client cannot make (chunked bodies,
huge headers, unknown methods) go out as raw bytes (Raw).

Every reading here uses a sensor_id starting with "bad-" or the ts
2020-02-02T02:02:02Z, so the last test can look for any trace of them."""

import http.client
import json
import re
import socket

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


class Raw:
    """A whole request as bytes, sent on its own connection."""

    def __init__(self, data):
        self.data = data


def raw_request(head, body=b""):
    """head: request line and headers without the final CRLF (Host and
    Connection: close are added)."""
    return Raw(head.encode() + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" + body)


def chunked_over_limit():
    """A valid JSON body of 1 MiB + 1 KiB, chunked: no Content-Length to
    refuse it by, so the limit must hold while reading."""
    body = json.dumps(r("bad-chunked")).encode()
    body += b" " * (1024 * 1024 + 1024 - len(body))
    step = 64 * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                      for i in range(0, len(body), step))
    return raw_request("POST /v1/readings HTTP/1.1\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked", chunks + b"0\r\n\r\n")


def huge_headers(one_header):
    body = json.dumps(r("bad-huge-headers")).encode()
    if one_header:
        extra = "X-Huge: " + "a" * (70 * 1024)
    else:
        extra = "\r\n".join(f"X-Many-{i}: " + "b" * 100 for i in range(700))  # 75 KiB
    return raw_request(f"POST /v1/readings HTTP/1.1\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n{extra}", body)


def send_raw(host, port, raw, timeout=30):
    """Sends raw.data; returns the answer, or None when the server closed
    the connection without one."""
    from sfhelp import Answer
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        try:
            sock.sendall(raw.data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered before reading everything
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        sock.close()


def j(text):
    """A body with raw bytes where json.dumps would escape them."""
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


READING = '{"sensor_id":"%s","type":"temperature","value":%s,"unit":"C","ts":"%s"%s}'


def reading_text(sensor="bad-x", value="21.5", ts=TS, extra=""):
    return READING % (sensor, value, ts, extra)


# Answers that cannot be JSON: HAProxy 2.6 answers a request its parser
# refuses (oversized headers) with a fixed HTML page that neither http-error
# nor errorfile reaches, and libevent's evhttp (2.1) does the same behind it.
NOT_JSON = {"json": False}
# evhttp 2.1 answers a method it does not know with its own HTML 501 (it has
# no hook for methods outside its list; evhttp_set_ext_method_cmp is 2.2):
# HAProxy turns it into JSON (haproxy/haproxy.cfg.in).

J = "application/json"
# id, method, path, body (a str/bytes/object, a function making it, or Raw),
# content type, status (or a tuple of acceptable ones; 0: the connection
# closed without an answer), expected field, expected index (None: not
# checked)[, options: {"error": regex the error message must match,
# "json": False when the answer cannot be JSON}]
CASES = [
    ("not-json", "POST", "/v1/readings", "hello, sensor", J, 400, None, None),
    ("truncated-json", "POST", "/v1/readings", '{"sensor_id":"bad-trunc","type":"temperature","value":2', J, 400, None, None),
    ("top-level-number", "POST", "/v1/readings", "42", J, 400, None, None),
    ("top-level-string", "POST", "/v1/readings", '"bad-reading"', J, 400, None, None),
    ("empty-array", "POST", "/v1/readings", "[]", J, 400, None, None),
    ("1001-readings", "POST", "/v1/readings", too_many, J, 400, None, None),
    ("expect-unknown", "POST", "/v1/readings",
     lambda: raw_request("POST /v1/readings HTTP/1.1\r\nContent-Type: application/json\r\n"
                         "Expect: something-else\r\nContent-Length: 2", b"{}"),
     J, 417, None, None),
    # Two readings with one key would be one row for "accepted": 2.
    ("same-key-twice-without-ts", "POST", "/v1/readings",
     [without("ts", sensor="bad-twice"), r("bad-twice-b"), without("ts", sensor="bad-twice", value=22)],
     J, 400, "ts", 2, {"error": "same sensor_id, type and ts as reading 0"}),
    ("same-key-twice", "POST", "/v1/readings", [r("bad-twice-ts"), r("bad-twice-ts", value=22)],
     J, 400, "ts", 1, {"error": "same sensor_id, type and ts"}),
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
    # --- numbers JSON and doubles cannot hold
    ("value-Infinity-literal", "POST", "/v1/readings", reading_text("bad-inf", "Infinity"), J, 400, None, None,
     {"error": "Infinity|invalid"}),
    ("value-minus-Infinity", "POST", "/v1/readings", reading_text("bad-ninf", "-Infinity"), J, 400, None, None,
     {"error": "Infinity|invalid"}),
    ("value-1e400", "POST", "/v1/readings", reading_text("bad-1e400", "1e400"), J, 400, None, None,
     {"error": "overflow|too (big|large)|range"}),
    ("value-minus-1e400", "POST", "/v1/readings", reading_text("bad-m1e400", "-1e400"), J, 400, None, None,
     {"error": "overflow|too (big|large)|range"}),
    ("value-integer-10e30", "POST", "/v1/readings", reading_text("bad-bigint", "1" + "0" * 30), J, 400, None, None,
     {"error": "too big|overflow|range"}),
    # --- strings: invalid UTF-8, NUL, lone surrogates
    ("sensor_id-invalid-utf8", "POST", "/v1/readings", j(b'{"sensor_id":"bad-\xff\xfe","type":"temperature","value":1,"ts":"2020-02-02T02:02:02Z"}'),
     J, 400, None, None, {"error": "UTF-8|decode|byte"}),
    ("tag-invalid-utf8", "POST", "/v1/readings", reading_text("bad-utf8-tag", "1", TS, ',"tags":{"a":"\xc3\x28"}').encode("latin-1"),
     J, 400, None, None, {"error": "UTF-8|decode|byte"}),
    ("unknown-field-utf8-surrogate-bytes", "POST", "/v1/readings",
     reading_text("bad-utf8-extra", "1", TS, ',"note":"\xed\xa0\x80"').encode("latin-1"), J, 400, None, None,
     {"error": "UTF-8|decode|byte"}),
    ("tag-value-NUL", "POST", "/v1/readings", reading_text("bad-nul-tag", "1", TS, ',"tags":{"a":"x\\u0000y"}'), J, 400, None, None,
     {"error": "u0000|NUL"}),
    ("sensor_id-NUL", "POST", "/v1/readings", reading_text("bad-nul\\u0000", "1"), J, 400, None, None,
     {"error": "u0000|NUL"}),
    ("tag-key-NUL", "POST", "/v1/readings", reading_text("bad-nul-key", "1", TS, ',"tags":{"a\\u0000":"y"}'), J, 400, None, None,
     {"error": "u0000|NUL"}),
    ("tag-lone-surrogate", "POST", "/v1/readings", reading_text("bad-surrogate", "1", TS, ',"tags":{"a":"\\ud800"}'), J, 400, None, None,
     {"error": "Unicode|surrogate|UTF"}),
    # --- duplicate keys
    ("duplicate-key-value", "POST", "/v1/readings", reading_text("bad-dup", "1", TS, ',"value":2'), J, 400, None, None,
     {"error": "duplicate"}),
    ("duplicate-key-in-tags", "POST", "/v1/readings", reading_text("bad-dup-tag", "1", TS, ',"tags":{"a":"1","a":"2"}'), J, 400, None, None,
     {"error": "duplicate"}),
    ("duplicate-key-second-reading", "POST", "/v1/readings",
     "[" + reading_text("bad-dup-ok", "1") + "," + reading_text("bad-dup-2", "1", TS, ',"type":"humidity"') + "]",
     J, 400, None, None, {"error": "duplicate"}),
    # --- each field of the wrong type
    ("sensor_id-number", "POST", "/v1/readings", r(5), J, 400, "sensor_id", 0),
    ("sensor_id-null", "POST", "/v1/readings", r(None), J, 400, "sensor_id", 0),
    ("sensor_id-empty", "POST", "/v1/readings", r(""), J, 400, "sensor_id", 0),
    ("type-number", "POST", "/v1/readings", r("bad-type-num", type_=1), J, 400, "type", 0),
    ("type-null", "POST", "/v1/readings", r("bad-type-null", type_=None), J, 400, "type", 0),
    ("value-true", "POST", "/v1/readings", r("bad-bool", value=True), J, 400, "value", 0),
    ("value-null", "POST", "/v1/readings", r("bad-null", value=None), J, 400, "value", 0),
    ("value-array", "POST", "/v1/readings", r("bad-arr", value=[1]), J, 400, "value", 0),
    ("value-object", "POST", "/v1/readings", r("bad-obj", value={"v": 1}), J, 400, "value", 0),
    ("unit-number", "POST", "/v1/readings", r("bad-unit-num", unit=1), J, 400, "unit", 0),
    ("ts-number", "POST", "/v1/readings", r("bad-ts-num", ts=1580608922), J, 400, "ts", 0),
    ("ts-object", "POST", "/v1/readings", r("bad-ts-obj", ts={"s": 1}), J, 400, "ts", 0),
    ("tags-array", "POST", "/v1/readings", r("bad-tags-arr", tags=["a"]), J, 400, "tags", 0),
    ("tags-string", "POST", "/v1/readings", r("bad-tags-str", tags="room=lab"), J, 400, "tags", 0),
    ("tags-true-value", "POST", "/v1/readings", r("bad-tags-bool", tags={"a": True}), J, 400, "tags", 0),
    ("tags-null-value", "POST", "/v1/readings", r("bad-tags-null", tags={"a": None}), J, 400, "tags", 0),
    ("tags-array-value", "POST", "/v1/readings", r("bad-tags-av", tags={"a": ["b"]}), J, 400, "tags", 0),
    # --- out of range, unknown units, forbidden characters
    ("pressure-negative", "POST", "/v1/readings", r("bad-p-neg", type_="pressure", value=-1, unit="hPa"), J, 400, "value", 0),
    ("humidity-negative", "POST", "/v1/readings", r("bad-h-neg", type_="humidity", value=-0.1, unit="%"), J, 400, "value", 0),
    ("kelvin-negative", "POST", "/v1/readings", r("bad-k-neg", value=-1, unit="K"), J, 400, "value", 0),
    ("unit-unknown-R", "POST", "/v1/readings", r("bad-unit-r", unit="R"), J, 400, "unit", 0),
    ("unit-lowercase-c", "POST", "/v1/readings", r("bad-unit-c", unit="c"), J, 400, "unit", 0),
    ("sensor_id-slash", "POST", "/v1/readings", r("bad/slash"), J, 400, "sensor_id", 0),
    ("sensor_id-non-ascii", "POST", "/v1/readings", r("bad-\u00e9t\u00e9"), J, 400, "sensor_id", 0),
    # --- ts malformed
    ("ts-garbage", "POST", "/v1/readings", r("bad-ts-1", ts="yesterday"), J, 400, "ts", 0),
    ("ts-empty", "POST", "/v1/readings", r("bad-ts-2", ts=""), J, 400, "ts", 0),
    ("ts-month-13", "POST", "/v1/readings", r("bad-ts-3", ts="2020-13-02T02:02:02Z"), J, 400, "ts", 0),
    ("ts-february-30", "POST", "/v1/readings", r("bad-ts-4", ts="2020-02-30T02:02:02Z"), J, 400, "ts", 0),
    ("ts-hour-25", "POST", "/v1/readings", r("bad-ts-5", ts="2020-02-02T25:02:02Z"), J, 400, "ts", 0),
    ("ts-minute-60", "POST", "/v1/readings", r("bad-ts-6", ts="2020-02-02T02:60:02Z"), J, 400, "ts", 0),
    ("ts-offset-25h", "POST", "/v1/readings", r("bad-ts-7", ts="2020-02-02T02:02:02+25:00"), J, 400, "ts", 0),
    ("ts-offset-without-colon", "POST", "/v1/readings", r("bad-ts-8", ts="2020-02-02T02:02:02+0200"), J, 400, "ts", 0),
    ("ts-without-seconds", "POST", "/v1/readings", r("bad-ts-9", ts="2020-02-02T02:02Z"), J, 400, "ts", 0),
    ("ts-date-only", "POST", "/v1/readings", r("bad-ts-10", ts="2020-02-02"), J, 400, "ts", 0),
    ("ts-dot-without-digits", "POST", "/v1/readings", r("bad-ts-11", ts="2020-02-02T02:02:02.Z"), J, 400, "ts", 0),
    ("ts-trailing-garbage", "POST", "/v1/readings", r("bad-ts-12", ts="2020-02-02T02:02:02Zjunk"), J, 400, "ts", 0),
    ("ts-leading-space", "POST", "/v1/readings", r("bad-ts-13", ts=" 2020-02-02T02:02:02Z"), J, 400, "ts", 0),
    ("ts-year-0000", "POST", "/v1/readings", r("bad-ts-14", ts="0000-01-01T00:00:00Z"), J, 400, "ts", 0),
    # --- shapes
    ("body-null", "POST", "/v1/readings", "null", J, 400, None, None),
    ("body-empty", "POST", "/v1/readings", "", J, 400, None, None),
    ("array-of-numbers", "POST", "/v1/readings", "[1]", J, 400, None, 0),
    ("nested-array", "POST", "/v1/readings", [[r("bad-nested")]], J, 400, None, 0),
    ("legacy-temperature-string", "POST", "/",
     {"type": "Sensor", "id": "bad-legacy", "content": {"temperature_f": "hot", "time_of_measurement": "2020-02-02T02:02:02"}},
     J, 400, None, None),
    ("legacy-not-an-object", "POST", "/", "[1, 2]", J, 400, None, None),
    # --- limits and transfer
    ("body-over-1MiB-chunked", "POST", "/v1/readings", chunked_over_limit, J, 413, None, None),
    ("content-type-jsonx", "POST", "/v1/readings", r("bad-ct-jsonx"), "application/jsonx", 415, None, None),
    ("content-type-text-json", "POST", "/v1/readings", r("bad-ct-text-json"), "text/json", 415, None, None),
    ("content-type-empty", "POST", "/v1/readings", r("bad-ct-empty"), "", 415, None, None),
    ("one-header-70KiB", "POST", "/v1/readings", lambda: huge_headers(True), J, (400, 431, 0), None, None, NOT_JSON),
    ("headers-75KiB-in-700", "POST", "/v1/readings", lambda: huge_headers(False), J, (400, 431, 0), None, None, NOT_JSON),
    # --- methods
    ("PUT-readings", "PUT", "/v1/readings", r("bad-put"), J, 405, None, None),
    ("DELETE-readings", "DELETE", "/v1/readings", None, None, 405, None, None),
    ("PATCH-readings", "PATCH", "/v1/readings", r("bad-patch"), J, 405, None, None),
    ("OPTIONS-readings", "OPTIONS", "/v1/readings", None, None, 405, None, None),
    ("POST-healthz", "POST", "/healthz", r("bad-healthz"), J, 405, None, None),
    pytest.param(("unknown-method-FOO", "FOO", "/v1/readings",
                  lambda: raw_request("FOO /v1/readings HTTP/1.1\r\nContent-Type: application/json\r\n"
                                      "Content-Length: 2", b"{}"),
                  J, (405, 501), None, None), id="unknown-method-FOO"),
]


def _id(case):
    return case.id if hasattr(case, "id") and hasattr(case, "marks") else case[0]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_refused(api, case):
    name, method, path, body, ctype, status, field, index = case[:8]
    opts = case[8] if len(case) > 8 else {}
    statuses = status if isinstance(status, tuple) else (status,)
    if callable(body):
        body = body()
    try:
        if isinstance(body, Raw):
            a = send_raw(api.host, api.port, body)
        else:
            a = api.request(method, path, body, content_type=ctype)
    except (http.client.HTTPException, ConnectionError) as e:
        a = None
        err = f"{type(e).__name__}: {e}"
    else:
        err = "no answer"
    if a is None:
        assert 0 in statuses, (f"{method} {path} ({name}): no HTTP answer, the connection was closed "
                               f"({err}); expected {status}")
        return
    assert a.status in statuses, f"{method} {path} ({name}): expected {status}, got {a!r}"
    assert a.status >= 400, f"{method} {path} ({name}): not an error: {a!r}"
    if opts.get("json", True):
        assert a.content_type.startswith("application/json"), f"error body is not JSON: {a!r}"
        assert isinstance(a.json, dict) and isinstance(a.json.get("error"), str) and a.json["error"], \
            f"expected a JSON body {{\"error\": \"...\"}}, got {a!r}"
        if "error" in opts:
            assert re.search(opts["error"], a.json["error"], re.I), \
                f"the error does not name the problem (/{opts['error']}/): {a!r}"
    if opts.get("json", True):
        # One shape for every refusal, whoever answers (ingestion or HAProxy).
        assert "index" in a.json and "field" in a.json, f"{a.status} without index/field: {a!r}"
    if a.status == 400 and opts.get("json", True):
        if field is not None:
            assert (a.json["field"] or "").split(".")[0].split("[")[0] == field, \
                f"expected field {field!r}: {a!r}"
        if index is not None:
            # A single object is index 0; the API may also say null for it.
            ok = (index, None) if index == 0 else (index,)
            assert a.json["index"] in ok, f"expected index {index}: {a!r}"
    if a.status == 405:
        want = "GET" if path in ("/healthz", "/readyz") else "POST"
        assert want in a.headers.get("allow", ""), f"405 without Allow: {want}: {a!r}"


def test_nothing_of_them_stored(stack, api):
    barrier(stack, api)
    left = rows(stack, f"sensor_id like 'bad%' or ts = '{TS}' or ts::date = '2020-02-02'")
    assert not left, f"refused readings were stored: {[(x['sensor_id'], x['ts_us']) for x in left]}"
