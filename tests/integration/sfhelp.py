"""sfhelp.py -- helpers for the integration tests: a small HTTP client, polling
with a deadline, RFC 3339 parsing, and the readings table as Python values.

Checks look at effects in the database and poll for them with a deadline;
nothing here sleeps a fixed time in place of waiting for a condition."""

import calendar
import http.client
import itertools
import json
import os
import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTANCES = {"ingestion-1", "ingestion-2"}


def bin_dir():
    """Where the services under test are: $SF_BIN, else build/bin."""
    return Path(os.environ.get("SF_BIN") or REPO / "build" / "bin").resolve()


# --- HTTP ----------------------------------------------------------------------

class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # {lower-case name: value}
        self.body = body
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def __repr__(self):
        text = self.body[:300].decode("utf-8", "replace")
        return f"<{self.status} {self.content_type!r} {text!r}>"


class Api:
    """One new connection per request, so that HAProxy's round robin spreads
    a test's requests over the replicas."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    def request(self, method, path, body=None, content_type="application/json",
                headers=None, timeout=30):
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = dict(headers or {})
        if content_type is not None and body is not None:
            h["Content-Type"] = content_type
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=h)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (413) and close before reading the
                # whole body; its answer can still be waiting for us.
                pass
            r = conn.getresponse()
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def post(self, path, body, content_type="application/json", **kw):
        return self.request("POST", path, body, content_type, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


# --- waiting -------------------------------------------------------------------

def wait_for(fn, timeout=30.0, what="condition"):
    """Calls fn() until it returns something truthy and returns that; raises
    AssertionError naming `what` and the last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay, last = 0.05, None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {what} (last: {last!r})")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# --- time ---------------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))$")


def ts_us(text):
    """RFC 3339 with an offset -> microseconds since the epoch (finer digits
    truncated, as ingestion does)."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time with an offset: {text!r}")
    y, mo, d, h, mi, s = (int(m[i]) for i in range(1, 7))
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    if m[9]:
        off = (int(m[10]) * 60 + int(m[11])) * 60
        secs -= off if m[9] == "+" else -off
    frac = int(((m[7] or "") + "000000")[:6])
    return secs * 1_000_000 + frac


def now_us():
    return time.time_ns() // 1000


def rfc3339(us):
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


# --- the readings table ---------------------------------------------------------

COLUMNS = ("sensor_id", "type", "ts_us", "value", "unit", "raw_value", "raw_unit",
           "tags", "received_at_us", "ingested_by", "stored_at_us")
_SEP = "\x1f"


def rows(stack, where="true"):
    """Rows of readings matching the SQL condition, as dicts (times in µs,
    tags as a dict or None), ordered by key."""
    sql = ("select sensor_id, type, (extract(epoch from ts) * 1000000)::bigint, value, unit, "
           "raw_value, raw_unit, tags::text, (extract(epoch from received_at) * 1000000)::bigint, "
           f"ingested_by, (extract(epoch from stored_at) * 1000000)::bigint from readings "
           f"where {where} order by 1, 2, 3")
    out = []
    for r in stack.psql(sql, sep=_SEP):
        d = dict(zip(COLUMNS, r))
        for k in ("ts_us", "received_at_us", "stored_at_us"):
            d[k] = int(d[k])
        for k in ("value", "raw_value"):
            d[k] = float(d[k])
        d["tags"] = json.loads(d["tags"]) if d["tags"] else None
        out.append(d)
    return out


def sql_list(values):
    """A SQL list literal of strings: ('a', 'b')."""
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


_barrier_seq = itertools.count(1)


def barrier(stack, api, requests=2, timeout=30):
    """Posts `requests` fresh readings (one request each, so every replica
    gets one) and waits until they are stored: whatever was posted before
    has then had its chance to be stored too."""
    ids = []
    for _ in range(requests):
        sid = f"it-barrier-{next(_barrier_seq)}-{now_us()}"
        a = api.post("/v1/readings", {"sensor_id": sid, "type": "humidity", "value": 50})
        assert a.status == 202, f"barrier reading refused: {a!r}"
        ids.append(sid)
    wait_for(lambda: len(rows(stack, f"sensor_id in {sql_list(ids)}")) == len(ids), timeout,
             f"barrier readings {ids} stored")


# --- sensor-sim runs and the exact check ------------------------------------------

def read_accepted(path):
    """{(sensor_id, type, ts_us): (value, unit)} from sensor-sim's accepted
    log (lines sensor_id,type,ts,value,unit); {} when the file is missing."""
    out = {}
    try:
        f = open(path)
    except FileNotFoundError:
        return out
    with f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("sensor_id,"):
                continue
            fields = line.split(",")
            assert len(fields) == 5, f"{path}:{n}: not sensor_id,type,ts,value,unit: {line!r}"
            out[(fields[0], fields[1], ts_us(fields[2]))] = (float(fields[3]), fields[4])
    return out


def sim_summary(output):
    """The key=value fields of sensor-sim's last sim.summary line ({} if none)."""
    lines = [ln for ln in output.splitlines() if " sim.summary " in ln]
    if not lines:
        return {}
    return dict(kv.split("=", 1) for kv in lines[-1].split(" sim.summary ", 1)[1].split()
                if "=" in kv)


def run_rows(stack, tag, sensors):
    """{(sensor_id, type, ts_us): row} of the readings carrying tags.run=tag
    or belonging to one of the sensors."""
    where = f"tags->>'run' = '{tag}'"
    if sensors:
        where += f" or sensor_id in {sql_list(sorted(sensors))}"
    return {(x["sensor_id"], x["type"], x["ts_us"]): x for x in rows(stack, where)}


def _sabotage(stack, accepted, tag):
    """SF_BREAK=delete|insert: spoil the database just before the exact
    check, to see that check fail (a test that cannot fail proves nothing).
    delete: one accepted reading's row goes; insert: a row the sensors were
    never answered 202 for appears."""
    how = os.environ.get("SF_BREAK", "")
    if not how or not accepted:
        return
    sid, type_, ts = sorted(accepted)[len(accepted) // 2]
    if how == "delete":
        stack.psql(f"delete from readings where sensor_id = '{sid}' and type = '{type_}' "
                   f"and ts = timestamptz 'epoch' + {ts} * interval '1 microsecond'")
    elif how == "insert":
        stack.psql("insert into readings (sensor_id, type, ts, value, unit, raw_value, raw_unit, "
                   "tags, received_at, ingested_by) values "
                   f"('{sid}', '{type_}', timestamptz 'epoch' + ({ts} - 1) * interval '1 microsecond', "
                   "1, 'C', 1, 'C', null, now(), 'sabotage')")
    else:
        raise AssertionError(f"SF_BREAK={how!r}: use delete or insert")


def check_exactly_accepted(stack, api, acc_paths, tag, results, timeout=120):
    """The promise, checked in the database: every reading sensor-sim logged
    as accepted (202) is stored -- once: the primary key is (sensor_id, type,
    ts) -- with the value and unit it was sent with, and the run's sensors
    (and tags.run=tag) have no other row, except for at most as many as the
    sims gave up on (a reading given up may have been stored). results are
    the sims' CompletedProcess. Returns (accepted, stored)."""
    accepted = {}
    for p in acc_paths:
        accepted.update(read_accepted(p))
    failed = 0
    for r in results:
        s = sim_summary(r.stdout)
        assert r.returncode in (0, 1) and s, \
            f"sensor-sim ended with status {r.returncode}:\n{r.stdout[-2500:]}"
        failed += int(s.get("failed", 0)) + int(s.get("unsent", 0))
    assert accepted, f"no reading was accepted at all ({acc_paths})"
    sensors = {k[0] for k in accepted}

    def all_stored():
        got = run_rows(stack, tag, sensors)
        return got if set(accepted) <= set(got) else None

    try:
        wait_for(all_stored, timeout, f"the {len(accepted)} accepted readings stored")
    except AssertionError:
        pass  # reported below, with the missing keys
    barrier(stack, api)
    _sabotage(stack, accepted, tag)
    got = run_rows(stack, tag, sensors)
    missing = sorted(set(accepted) - set(got))
    extra = sorted(set(got) - set(accepted))
    assert not missing, (f"{len(missing)} of {len(accepted)} readings answered 202 are not stored, "
                         f"e.g. {[(s, t, rfc3339(u)) for s, t, u in missing[:5]]}")
    assert len(extra) <= failed, (
        f"{len(extra)} stored readings of the run were never answered 202 (the sims gave up on "
        f"{failed}), e.g. {[(s, t, rfc3339(u), got[(s, t, u)]['ingested_by']) for s, t, u in extra[:5]]}")
    for key, (value, unit) in accepted.items():
        row = got[key]
        assert row["raw_value"] == value and row["raw_unit"] == unit, \
            f"{key}: stored {row['raw_value']} {row['raw_unit']}, sent {value} {unit}"
    return accepted, got
