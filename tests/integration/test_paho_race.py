"""test_paho_race.py -- paho's lost wake-up, made to happen all the time.

paho 1.3.12's send thread looks at its queue, then waits up to a second for
more; a message queued between the two waits in paho for that second (README:
Performance, the one-second stall). bench/paho_race.c, preloaded into the
services, widens that window from microseconds to WIDEN_US, so that it is hit
again and again. ingestion must then wake paho itself (an UNSUBSCRIBE when no
PUBACK came for 20 ms, counted in sf_mqtt_send_wakeups_total), and every
reading answered 202 must still be stored, once. Without the wake-up this test
still passes its first assertions, only slowly; the counter is what tells."""

import atexit
import concurrent.futures
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sfhelp import Api, bin_dir, now_us, rfc3339, rows, wait_for
from test_metrics import ingestion_sum

REPO = Path(__file__).resolve().parents[2]
_dir = tempfile.mkdtemp(prefix="sensorflow-paho-race-")
atexit.register(shutil.rmtree, _dir, True)
_LIB = Path(_dir) / "paho_race.so"
subprocess.run(["cc", "-shared", "-fPIC", "-o", str(_LIB), str(REPO / "bench" / "paho_race.c"),
                "-ldl"], check=True)

# Every service gets it; only the ones running paho (ingestion, storage) have
# a thread it slows down.
STACK_ENV = {"LD_PRELOAD": str(_LIB), "WIDEN_US": "3000"}

pytestmark = pytest.mark.skipif(
    b"__asan_init" in (bin_dir() / "ingestion").read_bytes(),
    reason="ASan wants its runtime first in the library list: no LD_PRELOAD under it")


def test_readings_land_once_while_paho_misses_its_wakeups(own_stack):
    st = own_stack
    api = Api("127.0.0.1", st.ports.http)
    before = ingestion_sum(st, "sf_mqtt_send_wakeups_total")
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

    woken = ingestion_sum(st, "sf_mqtt_send_wakeups_total") - before
    assert woken >= 1, "ingestion never woke paho's send thread although its window was widened"
