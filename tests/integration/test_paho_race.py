"""test_paho_race.py -- paho's lost wake-up, made to happen all the time.

paho 1.3.12's send thread looks at its queue, then waits up to a second for
more; a message queued between the two waits in paho for that second (README:
Performance, the one-second stall). bench/paho_race.c, preloaded into the
services, widens that window from microseconds to WIDEN_US, so that it is hit
again and again. Only storage runs paho (ingestion's MQTT client is libmosquitto
on its event loop): its PUBACKs to the broker and its confirmations to
ingestion then wait in paho for up to a second. Ingestion holds a message for
storage's confirmation only so long (twice storage's pace, from 5 ms, or from
INGESTION_CONFIRM_WAIT_MS while a message has waited over a second; that alone
once storage is silent), and republishes what stays unconfirmed; every reading answered 202 must still be stored, once, and none
twice."""

import atexit
import concurrent.futures
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sfhelp import Api, bin_dir, now_us, rfc3339, rows, wait_for

REPO = Path(__file__).resolve().parents[2]
_dir = tempfile.mkdtemp(prefix="sensorflow-paho-race-")
atexit.register(shutil.rmtree, _dir, True)
_LIB = Path(_dir) / "paho_race.so"
subprocess.run(["cc", "-shared", "-fPIC", "-o", str(_LIB), str(REPO / "bench" / "paho_race.c"),
                "-ldl"], check=True)

# Every service gets it; only storage, which runs paho, has a thread it slows
# down.
STACK_ENV = {"LD_PRELOAD": str(_LIB), "WIDEN_US": "3000"}

pytestmark = pytest.mark.skipif(
    b"__asan_init" in (bin_dir() / "ingestion").read_bytes(),
    reason="ASan wants its runtime first in the library list: no LD_PRELOAD under it")


def test_readings_land_once_while_storages_paho_misses_its_wakeups(own_stack):
    st = own_stack
    api = Api("127.0.0.1", st.ports.http)
    tag, t0, n = f"it-race-{now_us()}", now_us() - 10_000_000, 300

    def post(i):
        return api.post("/v1/readings", {"sensor_id": f"{tag}-{i % 30}", "type": "humidity",
                                         "value": i % 100, "ts": rfc3339(t0 + i * 1000)}).status

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(n)))
    assert statuses == [202] * n, {s: statuses.count(s) for s in set(statuses)}

    where = f"sensor_id like '{tag}-%'"
    wait_for(lambda: len(rows(st, where)) >= n, 60, f"{n} readings stored")
    got = rows(st, where)
    assert len(got) == n and len({(r["sensor_id"], r["ts_us"]) for r in got}) == n
    assert sorted(r["value"] for r in got) == sorted(float(i % 100) for i in range(n))
