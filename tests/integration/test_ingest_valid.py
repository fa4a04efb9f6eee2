"""test_ingest_valid.py -- a fixed data set posted through HAProxy lands in
readings exactly as expected: every type and unit (and the unit omitted),
single and array posts, tags, ts with Z, with an offset and absent, the legacy
payload on POST / (plain and JSON-encoded twice); posting it again changes
nothing; both replicas took part."""

import json

import pytest

from sfhelp import INSTANCES, barrier, now_us, rows, sql_list, ts_us, wait_for

CANONICAL = {"temperature": "C", "humidity": "%", "pressure": "hPa"}
TO_CANONICAL = {
    ("temperature", "C"): lambda v: v,
    ("temperature", "F"): lambda v: (v - 32) * 5 / 9,
    ("temperature", "K"): lambda v: v - 273.15,
    ("humidity", "%"): lambda v: v,
    ("pressure", "Pa"): lambda v: v / 100,
    ("pressure", "hPa"): lambda v: v,
    ("pressure", "kPa"): lambda v: v * 10,
}
TOL = 1e-6


def rd(sensor, type_, value, unit=None, ts=None, tags=None):
    r = {"sensor_id": sensor, "type": type_, "value": value}
    if unit is not None:
        r["unit"] = unit
    if ts is not None:
        r["ts"] = ts
    if tags is not None:
        r["tags"] = tags
    return r


T0 = "2026-01-15T10:00:00Z"
T1 = "2026-01-15T10:01:00Z"
T2 = "2026-01-15T10:02:00Z"
T3 = "2026-01-15T10:03:00Z"
LAB1 = {"room": "lab-1", "floor": "2"}
NORTH = {"site": "north", "rack": "r1", "note": "spaces & ünïcode ok"}
# What storage's array literals must quote: quotes, backslashes, commas,
# braces, the word NULL, blanks, control characters.
TRICKY = {"q": 'say "hi"', "bs": "C:\\dir\\", "arr": "{a,b}", "n": "NULL", "blank": " ",
          "ws": "tab\tand\nnewline", "emoji": "\U0001f600"}

# (path, body, readings it carries) -- bodies alternate single and array.
V1 = "/v1/readings"
POSTS = [
    (V1, rd("ds-1", "temperature", 21.5, "C", T0, LAB1)),
    (V1, rd("ds-1", "temperature", 71.6, "F", T1)),
    (V1, [rd("ds-2", "temperature", 300, "K", T0),
          rd("ds-2", "temperature", 19.25, None, T1),
          rd("ds-2", "humidity", 45.5, "%", T0, {"room": "lab-2"}),
          rd("ds-2", "humidity", 50, None, T1)]),
    (V1, rd("ds-3", "pressure", 101325, "Pa", T0)),
    (V1, [rd("ds-3", "pressure", 101.3, "kPa", T1),
          rd("ds-3", "pressure", 1000.5, "hPa", T2),
          rd("ds-3", "pressure", 1009, None, T3)]),
    (V1, rd("ds-4", "temperature", 20, "C", "2026-01-15T12:30:00.250+02:00")),
    (V1, rd("ds-4", "humidity", 61.2, "%", "2026-01-15T10:30:00.123456Z")),
    (V1, [rd("ds-5", "temperature", -5.5, "C", "2026-01-15T11:00:00Z", NORTH),
          rd("ds-5", "humidity", 0, "%", "2026-01-15T11:00:00Z", NORTH),
          rd("ds-5", "pressure", 950, "hPa", "2026-01-15T11:00:00Z", NORTH)]),
    (V1, rd("ds-6", "temperature", 1.5, "C", T0, TRICKY)),
]

LEGACY_1 = "3f2b9c1e-8a4d-4c7b-9e1f-0a1b2c3d4e5f"
LEGACY_2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
LEGACY_OBJ = {"type": "Sensor", "id": LEGACY_1,
              "content": {"temperature_f": 71.6, "time_of_measurement": "2019-08-30T12:00:00.123456"}}
LEGACY_OBJ_2 = {"type": "Sensor", "id": LEGACY_2,
                "content": {"temperature_f": 32.0, "time_of_measurement": "2019-08-30T12:05:00.5"}}
LEGACY_POSTS = [
    ("/", LEGACY_OBJ),
    ("/", json.dumps(json.dumps(LEGACY_OBJ_2))),  # the object, JSON-encoded a second time
]


def expected_rows():
    out = {}
    for _, body in POSTS:
        for r in body if isinstance(body, list) else [body]:
            unit = r.get("unit", CANONICAL[r["type"]])
            key = (r["sensor_id"], r["type"], ts_us(r["ts"]))
            out[key] = {"value": TO_CANONICAL[(r["type"], unit)](r["value"]),
                        "unit": CANONICAL[r["type"]], "raw_value": float(r["value"]),
                        "raw_unit": unit, "tags": r.get("tags")}
    for sid, obj in ((LEGACY_1, LEGACY_OBJ), (LEGACY_2, LEGACY_OBJ_2)):
        c = obj["content"]
        key = (sid, "temperature", ts_us(c["time_of_measurement"] + "Z"))
        out[key] = {"value": (c["temperature_f"] - 32) * 5 / 9, "unit": "C",
                    "raw_value": c["temperature_f"], "raw_unit": "F", "tags": None}
    return out


EXPECTED = expected_rows()
SCOPE = f"sensor_id like 'ds-%' or sensor_id in {sql_list([LEGACY_1, LEGACY_2])}"


def post_all(api):
    answers = []
    for path, body in POSTS + LEGACY_POSTS:
        n = len(body) if isinstance(body, list) else 1
        answers.append((path, body, n, api.post(path, body)))
    return answers


@pytest.fixture(scope="module")
def posted(stack, api):
    t0 = now_us()
    answers = post_all(api)
    return {"answers": answers, "t0": t0, "t1": now_us()}


@pytest.fixture(scope="module")
def stored(stack, posted):
    """The data set's rows, once as many as expected are there."""
    wait_for(lambda: len(rows(stack, SCOPE)) >= len(EXPECTED), 30,
             f"{len(EXPECTED)} rows of the data set in readings")
    return {(r["sensor_id"], r["type"], r["ts_us"]): r for r in rows(stack, SCOPE)}


def test_every_post_answered_202_with_count(posted):
    bad = [(p, b, a) for p, b, n, a in posted["answers"]
           if a.status != 202 or not isinstance(a.json, dict) or a.json.get("accepted") != n]
    assert not bad, "expected 202 {\"accepted\": n}; got:\n" + "\n".join(
        f"POST {p} {json.dumps(b)[:120]} -> {a!r}" for p, b, a in bad)
    for p, b, n, a in posted["answers"]:
        assert a.content_type.startswith("application/json"), f"POST {p}: {a!r}"


def test_exactly_the_expected_rows(stored):
    assert set(stored) == set(EXPECTED), (
        f"missing: {sorted(set(EXPECTED) - set(stored))}\nunexpected: {sorted(set(stored) - set(EXPECTED))}")


def test_values_units_and_tags(stored):
    problems = []
    for key, exp in EXPECTED.items():
        got = stored.get(key)
        if got is None:
            problems.append(f"{key}: missing")
            continue
        if abs(got["value"] - exp["value"]) > TOL:
            problems.append(f"{key}: value {got['value']} != {exp['value']}")
        if abs(got["raw_value"] - exp["raw_value"]) > TOL:
            problems.append(f"{key}: raw_value {got['raw_value']} != {exp['raw_value']}")
        for col in ("unit", "raw_unit"):
            if got[col] != exp[col]:
                problems.append(f"{key}: {col} {got[col]!r} != {exp[col]!r}")
        if (got["tags"] or None) != exp["tags"]:
            problems.append(f"{key}: tags {got['tags']!r} != {exp['tags']!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("sensor,type_,ts,canonical", [
    ("ds-1", "temperature", T1, 22.0),        # 71.6 F
    ("ds-2", "temperature", T0, 26.85),       # 300 K
    ("ds-3", "pressure", T0, 1013.25),        # 101325 Pa
    ("ds-3", "pressure", T1, 1013.0),         # 101.3 kPa
    (LEGACY_1, "temperature", "2019-08-30T12:00:00.123456Z", 22.0),  # legacy 71.6 F
])
def test_conversion(stored, sensor, type_, ts, canonical):
    got = stored.get((sensor, type_, ts_us(ts)))
    assert got is not None, f"no row for {sensor} {type_} {ts}"
    assert got["value"] == pytest.approx(canonical, abs=TOL)


def test_offset_and_fraction_of_ts(stored):
    # 12:30:00.250+02:00 is 10:30:00.250Z; microseconds are kept.
    assert ("ds-4", "temperature", ts_us("2026-01-15T10:30:00.25Z")) in stored
    assert ("ds-4", "humidity", ts_us("2026-01-15T10:30:00.123456Z")) in stored
    assert (LEGACY_2, "temperature", ts_us("2019-08-30T12:05:00.5Z")) in stored


def test_received_ingested_stored_columns(stored, posted):
    t0, t1 = posted["t0"], posted["t1"]
    slack = 5_000_000  # clocks are the same machine's; allow for rounding
    for key, r in stored.items():
        assert r["ingested_by"] in INSTANCES, f"{key}: ingested_by {r['ingested_by']!r}"
        assert t0 - slack <= r["received_at_us"] <= t1 + slack, f"{key}: received_at not during the post"
        assert r["stored_at_us"] >= r["received_at_us"] - 1_000_000, f"{key}: stored before received"


def test_both_replicas_served(stored):
    assert {r["ingested_by"] for r in stored.values()} == INSTANCES


def test_posting_again_changes_nothing(stack, api, stored):
    before = rows(stack, SCOPE)
    again = post_all(api)
    bad = [(p, a) for p, b, n, a in again if a.status != 202 or (a.json or {}).get("accepted") != n]
    assert not bad, f"second post not accepted: {bad}"
    barrier(stack, api)
    after = rows(stack, SCOPE)
    assert len(after) == len(before)
    assert after == before, "rows changed when the same readings were posted again"


def test_new_readings_beside_stored_ones_are_stored(stack, api):
    """Storage inserts a message with a plain INSERT first and, when a key is
    already there, again with ON CONFLICT DO NOTHING: the readings that are
    new must not go down with the ones that are not, nor those of the
    messages after it (stored the deduplicating way for a while)."""
    sid = f"it-mixed-{now_us()}"
    first = [rd(sid, "temperature", 1, "C", T0), rd(sid, "temperature", 2, "C", T1)]
    assert api.post(V1, first).status == 202
    wait_for(lambda: len(rows(stack, f"sensor_id = '{sid}'")) == 2, 30, f"2 rows of {sid}")
    # One already stored beside two new ones; then one of those again, at
    # once (often in the same MQTT message, since ingestion gathers them).
    mixed = [rd(sid, "temperature", 2, "C", T1), rd(sid, "temperature", 3, "C", T2),
             rd(sid, "humidity", 40, "%", T0)]
    a = api.post(V1, mixed)
    assert a.status == 202 and a.json["accepted"] == 3, a
    assert api.post(V1, mixed[2]).status == 202
    later = [rd(sid, "pressure", 1000 + i, "hPa", f"2026-01-15T11:{i // 60:02d}:{i % 60:02d}Z")
             for i in range(150)]
    for r in later:   # one POST each: many messages after the duplicate
        assert api.post(V1, r).status == 202
    barrier(stack, api)
    got = {(r["type"], r["ts_us"]): r["raw_value"] for r in rows(stack, f"sensor_id = '{sid}'")}
    want = {("temperature", ts_us(T0)): 1.0, ("temperature", ts_us(T1)): 2.0,
            ("temperature", ts_us(T2)): 3.0, ("humidity", ts_us(T0)): 40.0}
    want.update({("pressure", ts_us(r["ts"])): float(r["value"]) for r in later})
    assert got == want


def test_a_run_of_duplicates_logs_one_error(stack, api):
    """A plain INSERT that meets a stored key fails (PostgreSQL logs an
    ERROR); storage then stores the next messages with ON CONFLICT straight
    away, so a run of duplicates leaves one such line at most, not one a
    message (README: Schema)."""
    def errors():
        with open(stack.log_path("postgres"), "rb") as f:
            return f.read().count(b"duplicate key value violates unique constraint")

    sid = f"it-dups-{now_us()}"
    r = rd(sid, "temperature", 1, "C", T0)
    assert api.post(V1, r).status == 202
    wait_for(lambda: len(rows(stack, f"sensor_id = '{sid}'")) == 1, 30, f"the row of {sid}")
    before = errors()
    for _ in range(20):   # one POST each: many messages, each a duplicate
        assert api.post(V1, r).status == 202
    barrier(stack, api)
    assert len(rows(stack, f"sensor_id = '{sid}'")) == 1
    # At most one: none if an earlier test's duplicate left storage on
    # ON CONFLICT within the last 100 messages.
    assert errors() - before <= 1


def test_ts_absent_is_receipt_time(stack, api):
    sid = f"it-now-{now_us()}"
    t0 = now_us()
    a = api.post("/v1/readings", {"sensor_id": sid, "type": "temperature", "value": 20.5})
    t1 = now_us()
    assert a.status == 202, a
    got = wait_for(lambda: rows(stack, f"sensor_id = '{sid}'"), 30, f"row of {sid}")
    assert len(got) == 1
    r = got[0]
    assert r["ts_us"] == r["received_at_us"], "without ts, ts must be the time of receipt"
    assert t0 - 2_000_000 <= r["ts_us"] <= t1 + 2_000_000


def test_content_type_with_charset_is_json(stack, api):
    sid = f"it-charset-{now_us()}"
    a = api.post("/v1/readings", {"sensor_id": sid, "type": "humidity", "value": 40},
                 content_type="application/json; charset=utf-8")
    assert a.status == 202, a
    wait_for(lambda: rows(stack, f"sensor_id = '{sid}'"), 30, f"row of {sid}")
