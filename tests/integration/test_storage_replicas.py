"""test_storage_replicas.py -- two storage processes in the shared subscription.

One storage commits one message at a time (paho runs a process's callbacks on
one thread and sends the PUBACK after the commit), so throughput wants several
processes: `STORAGE_REPLICAS` in `make run`, `--scale storage=N` in compose,
two in `make bench`. The broker hands each message to one of them; every
reading answered 202 must still be stored once, also when one of them is
killed mid-stream and comes back under its client id."""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import tempfile

from sfhelp import Api, bin_dir, now_us, rfc3339, rows, wait_for
from test_metrics import scrape, val

STACK_STORAGES = 2


def inserted(st):
    """sf_rows_inserted_total of each storage process, storage's first."""
    return [val(scrape("127.0.0.1", p), "sf_rows_inserted_total") for p in st.ports.storages]


def post_all(api, tag, n, t0):
    """n readings of 20 sensors, one per POST, 16 at a time; their statuses."""
    def post(i):
        return api.post("/v1/readings", {"sensor_id": f"{tag}-{i % 20}", "type": "temperature",
                                         "value": i % 50, "ts": rfc3339(t0 + i * 1000)}).status

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(post, range(n)))


def check_stored_once(st, tag, n):
    where = f"sensor_id like '{tag}-%'"
    wait_for(lambda: len(rows(st, where)) >= n, 90, f"{n} readings stored")
    got = rows(st, where)
    assert len(got) == n, f"{len(got)} rows for {n} readings"
    assert len({(r["sensor_id"], r["ts_us"]) for r in got}) == n
    assert sorted(r["value"] for r in got) == sorted(float(i % 50) for i in range(n))
    return got


def test_both_storages_commit_and_each_reading_lands_once(own_stack):
    st = own_stack
    assert [n for n in st.names if n.startswith("storage")] == ["storage", "storage-2"]
    api = Api("127.0.0.1", st.ports.http)
    before = inserted(st)
    tag, n = f"it-2s-{now_us()}", 600
    statuses = post_all(api, tag, n, now_us() - 20_000_000)
    assert statuses == [202] * n, {s: statuses.count(s) for s in set(statuses)}
    check_stored_once(st, tag, n)
    gained = [a - b for a, b in zip(inserted(st), before)]
    assert sum(gained) == n, gained
    assert all(g > 0 for g in gained), f"one storage stored nothing: {gained}"


def test_a_storage_killed_mid_stream_loses_nothing(own_stack):
    st = own_stack
    api = Api("127.0.0.1", st.ports.http)
    tag, n = f"it-2s-kill-{now_us()}", 800
    t0 = now_us() - 20_000_000
    with concurrent.futures.ThreadPoolExecutor(1) as one:
        posting = one.submit(post_all, api, tag, n, t0)
        # Once readings flow: kill -9 (inside a commit or between two), then
        # back under the same client id, whose session kept its share. From
        # this thread: a service's parent-death signal follows the thread
        # that started it.
        wait_for(lambda: len(rows(st, f"sensor_id like '{tag}-%'")) >= 50, 60, "readings flowing")
        st.kill_service("storage-2")
        st.start_service("storage-2")
        statuses = posting.result()
    assert statuses == [202] * n, {s: statuses.count(s) for s in set(statuses)}
    check_stored_once(st, tag, n)


def test_overlapping_messages_in_opposite_orders_do_not_deadlock(own_stack):
    """Two messages holding the same readings in opposite orders (a client's
    retries gathered in another order by another replica), committed by the
    two storages at once. Each insert waits on the other's uncommitted key,
    so in message order they would deadlock: PostgreSQL notices after
    deadlock_timeout (1 s), aborts one and storage retries it. Storage
    inserts in key order instead, so one only waits for the other."""
    st = own_stack
    pg_log = st.log_path("postgres")
    pg_since = pg_log.stat().st_size
    n, rounds = 3000, 4
    t0 = now_us() - 60_000_000
    for k in range(rounds):
        tag = f"it-2s-order-{k}-{now_us()}"
        readings = [{"sensor_id": f"{tag}-{i % 100}", "type": "humidity", "ts_us": t0 + i,
                     "value": 40, "unit": "%", "raw_value": 40, "raw_unit": "%",
                     "received_at_us": t0 + i} for i in range(n)]
        paths = []
        for name, rs in (("fwd", readings), ("rev", readings[::-1])):
            paths.append(st.state_dir / f"{tag}-{name}.json")
            paths[-1].write_text(json.dumps({"v": 1, "by": "it-order", "readings": rs}))
        pubs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(st.ports.mqtt),
                                  "-V", "mqttv5", "-u", "ingestion",
                                  "-P", st.secrets["MQTT_INGESTION_PASSWORD"], "-q", "1",
                                  "-t", "sensorflow/v1/readings/it-order", "-f", str(p)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for p in paths]
        for p in pubs:
            out, _ = p.communicate(timeout=30)
            assert p.returncode == 0, out
        wait_for(lambda: len(rows(st, f"sensor_id like '{tag}-%'")) >= n, 60,
                 f"round {k}: {n} readings stored")
        assert len(rows(st, f"sensor_id like '{tag}-%'")) == n
    with open(pg_log, "rb") as f:
        f.seek(pg_since)
        log = f.read().decode("utf-8", "replace")
    assert "deadlock detected" not in log, log[-3000:]


def retire(st, client_id):
    """`storage --retire <id>`, as the README says to run for a client id no
    storage will use again, with storage-2's settings. Returns its log."""
    r = subprocess.run([str(st.bin_dir / "storage"), "--retire", client_id],
                       env=st.services["storage-2"].env, cwd=st.state_dir,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stderr


def test_a_retired_storage_id_drained_and_ended(own_stack):
    """storage-2 stopped for good, its session kept (as a SIGTERM leaves it):
    mosquitto goes on queueing every other message for it, to be stored only
    as ingestion republishes them (after INGESTION_REPUBLISH_AFTER_S, 60 s,
    and again with the same odds). `storage --retire storage-2` stores what
    the session holds and ends it; from then on storage-1 alone stores every
    reading, at once."""
    st = own_stack
    api = Api("127.0.0.1", st.ports.http)

    def first():   # storage-2's /metrics is down with it
        return val(scrape("127.0.0.1", st.ports.storages[0]), "sf_rows_inserted_total")

    assert st.stop_service("storage-2") == 0
    try:
        tag, n = f"it-2s-retired-{now_us()}", 400
        statuses = post_all(api, tag, n, now_us() - 20_000_000)
        assert statuses == [202] * n, {s: statuses.count(s) for s in set(statuses)}
        log = retire(st, "storage-2")
        m = re.search(r" storage\.retired client_id=storage-2 messages=(\d+) inserted=(\d+)", log)
        assert m and int(m[2]) > 0, f"retire stored nothing from the session:\n{log}"
        wait_for(lambda: len(rows(st, f"sensor_id like '{tag}-%'")) >= n, 15,
                 f"{n} readings stored, the retired session's share included")
        check_stored_once(st, tag, n)
        # The session is gone: everything now goes to storage-1.
        before = first()
        tag2 = f"it-2s-after-{now_us()}"
        statuses = post_all(api, tag2, n, now_us() - 10_000_000)
        assert statuses == [202] * n
        wait_for(lambda: len(rows(st, f"sensor_id like '{tag2}-%'")) >= n, 15,
                 f"{n} readings stored by storage-1 alone")
        check_stored_once(st, tag2, n)
        assert first() - before == n
    finally:
        st.start_service("storage-2")


def test_a_retire_stopped_early_exits_1():
    """`storage --retire` stopped (SIGTERM) before the session was drained and
    ended has not retired it: exit 1 and storage.retire_failed, so that a
    caller (compose's entrypoint, an operator's script) tries again instead
    of taking the id for retired. Here it never gets past the database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STORAGE_", "MQTT_", "DATABASE_"))}
    env.update(MQTT_URL="tcp://127.0.0.1:1", DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen([str(bin_dir() / "storage"), "--retire", "storage-9"], env=env,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            def out():
                log.seek(0)
                return log.read()
            # Its signal handlers are in place once it tries the database.
            wait_for(lambda: " db.connect_failed " in out(), 30, "storage --retire retrying")
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
        text = out()
    assert p.returncode == 1, text
    assert " storage.retire_failed client_id=storage-9 cause=SIGTERM " in text, text
    assert " storage.retired " not in text, text
