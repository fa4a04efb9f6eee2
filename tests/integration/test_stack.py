"""test_stack.py -- the stack itself: health endpoints through HAProxy and
on each replica, graceful stops (exit status 0 on SIGTERM) with traffic going
on, storage away while readings arrive, the busy-port message, the
`stack.py run` CLI behind `make run`, and ingestion's scheduling policy.
Runs last: it restarts services."""

import os
import shutil
import time
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

import stack as stackmod
from sfhelp import REPO, Api, barrier, bin_dir, now_us, rows, sql_list, wait_for


def processes_mentioning(text):
    """Pids whose command line contains text."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(d))
            except OSError:
                pass
    return out


def test_healthz_and_readyz(stack, api):
    a = api.get("/healthz")
    assert a.status == 200, a
    for i in range(1, stack.replicas + 1):
        port = stack.ports.ingestion[i - 1]
        for path in ("/healthz", "/readyz"):
            a = Api("127.0.0.1", port).get(path)
            assert a.status == 200, f"ingestion-{i} {path}: {a!r}"
    servers = stack.haproxy_servers()
    assert sorted(servers) == ["ingestion-1", "ingestion-2"]
    assert all(s.startswith("UP") for s in servers.values()), servers


def test_replica_stopped_traffic_goes_on(stack, api):
    rc = stack.stop_service("ingestion-2")
    assert rc == 0, f"ingestion-2 exited with status {rc} on SIGTERM (expected 0)"
    try:
        # HAProxy has not noticed yet (checks every 1 s, 2 failures): its
        # retries must send these to ingestion-1.
        ids = [f"it-failover-{i}-{now_us()}" for i in range(8)]
        for sid in ids:
            a = api.post("/v1/readings", {"sensor_id": sid, "type": "temperature", "value": 20})
            assert a.status == 202, f"with ingestion-2 stopped: {a!r}"
        got = wait_for(lambda: (lambda x: x if len(x) == len(ids) else None)(
            rows(stack, f"sensor_id in {sql_list(ids)}")), 30, "failover readings stored")
        assert {x["ingested_by"] for x in got} == {"ingestion-1"}
        stack.wait_haproxy_sees("ingestion-2", "DOWN")
    finally:
        stack.start_service("ingestion-2")
    stack.wait_haproxy_sees("ingestion-2", "UP")


def test_storage_away_readings_wait_in_broker(stack, api):
    rc = stack.stop_service("storage")
    assert rc == 0, f"storage exited with status {rc} on SIGTERM (expected 0)"
    ids = [f"it-storage-away-{i}-{now_us()}" for i in range(5)]
    try:
        for sid in ids:
            a = api.post("/v1/readings", {"sensor_id": sid, "type": "pressure", "value": 1000})
            assert a.status == 202, f"with storage stopped: {a!r}"
        assert rows(stack, f"sensor_id in {sql_list(ids)}") == []
    finally:
        stack.start_service("storage")
    wait_for(lambda: len(rows(stack, f"sensor_id in {sql_list(ids)}")) == len(ids), 30,
             "readings posted while storage was away stored after its restart")


def test_busy_port_names_the_variable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        free = stackmod.Ports.free(2)
        ports = stackmod.Ports(free.http, busy, free.pg, free.ingestion)
        with pytest.raises(stackmod.StackError, match=f"port {busy} is busy: set MQTT_PORT"):
            ports.check_free()


def test_run_cli_starts_streams_and_stops_cleanly():
    """`stack.py run` as `make run` uses it, on free ports (environment
    overrides .env), with two storage processes: banner, then Ctrl-C stops
    everything, exit 0."""
    # Runs of free ports: replica 2 and storage 2 take base+1 (make run's numbering).
    p = stackmod.Ports.free(2, storages=2)
    state = tempfile.mkdtemp(prefix="sensorflow-run-")
    env = {k: v for k, v in os.environ.items() if k not in stackmod.SERVICE_VARS}
    env.update(HTTP_PORT=str(p.http), MQTT_PORT=str(p.mqtt), PG_PORT=str(p.pg),
               INGESTION_BASE_PORT=str(p.ingestion[0]), INGESTION_REPLICAS="2",
               STORAGE_HTTP_PORT=str(p.storage_http), STORAGE_REPLICAS="2",
               HAPROXY_STATS_PORT=str(p.stats),
               LOG_LEVEL="info", SIM_SENSORS="3", SIM_INTERVAL_S="1")
    storage_ports = tuple(p.storages)
    have_sim = os.access(bin_dir() / "sensor-sim", os.X_OK)
    cmd = [sys.executable, str(REPO / "scripts" / "stack.py"), "run", "--bin", str(bin_dir()),
           "--state", state] + ([] if have_sim else ["--no-sim"])
    out_path = os.path.join(state, "run-output.txt")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        def output():
            with open(out_path, errors="replace") as f:
                return f.read()

        def banner():
            if proc.poll() is not None:
                raise AssertionError(f"stack.py run exited {proc.returncode}:\n{output()}")
            return "Ctrl-C stops everything" in output()

        wait_for(banner, 90, "the banner of stack.py run")
        a = Api("127.0.0.1", p.http).get("/healthz")
        assert a.status == 200, a
        assert f"storage-2  http://127.0.0.1:{storage_ports[1]}/metrics" in output(), output()
        for port in storage_ports:
            a = Api("127.0.0.1", port).get("/readyz")
            assert a.status == 200, (port, a)
        if have_sim:  # sensor-sim's readings reach the database
            st = stackmod.Stack(state, p, bin_dir=bin_dir())
            wait_for(lambda: st.psql("select count(*) from readings")[0][0] != "0", 30,
                     "rows from sensor-sim under stack.py run")
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(60)
        text = output()
        assert rc == 0, text
        for line in text.splitlines():
            if not line.startswith("stack:"):
                assert " | " in line, f"launcher line without 'stack:': {line!r}"
        assert "stack: stopped" in text
        assert "exit statuses other than 0" not in text, text
        for port in (p.http, p.mqtt, p.pg, *p.ingestion, *storage_ports):
            assert not stackmod.port_accepts(port), f"port {port} still served after the stop"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Nothing left behind (the children also die with a killed launcher).
    wait_for(lambda: not processes_mentioning(state), 15, f"no process left under {state}")
    shutil.rmtree(state, ignore_errors=True)


def test_broker_restart_readings_before_storage_resubscribes(stack, api):
    # mosquitto 2.0 does not persist shared subscriptions (persist__subs_save
    # writes node->subs, not node->shared): after a broker restart, readings
    # published before storage subscribes again are dropped although
    # acknowledged (with a PUBACK saying "no matching subscribers", which
    # ingestion takes as success). ingestion keeps every message until storage confirms it
    # and republishes on storage's @online: whatever got 202 is stored.
    since = stack.mosquitto_log_size()
    assert stack.stop_service("mosquitto") == 0
    stack.start_service("mosquitto")
    try:
        for i in range(1, stack.replicas + 1):
            stack.wait_ready(f"ingestion-{i}")
            stack.wait_haproxy_sees(f"ingestion-{i}", "UP")
        ids = [f"it-broker-restart-{i}-{now_us()}" for i in range(5)]
        for sid in ids:
            body = {"sensor_id": sid, "type": "humidity", "value": 55}
            deadline = time.monotonic() + 60
            while True:
                a = api.post("/v1/readings", body)
                if a.status != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert a.status == 202, a
    finally:
        stack.wait_storage_subscribed(since, timeout=60)
    # Readings answered 202 while the broker was away went to the spool and
    # are forwarded after the reconnect: give them the time a republish
    # takes, not just a barrier.
    barrier(stack, api)
    where = f"sensor_id in {sql_list(ids)}"
    try:
        wait_for(lambda: len(rows(stack, where)) >= len(ids), 30, "the readings stored")
    except AssertionError:
        pass
    got = rows(stack, where)
    assert len(got) == len(ids), (
        f"{len(ids) - len(got)} of {len(ids)} readings answered 202 after the broker restart "
        "were never stored")


def test_compose_haproxy_cfg_is_the_template_rendered():
    # compose/haproxy.cfg is committed (compose mounts it) but made from
    # haproxy/haproxy.cfg.in: a change to one without the other fails here.
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "stack.py"), "compose-config",
                        "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([stackmod.HAPROXY, "-c", "-f", str(REPO / "compose" / "haproxy.cfg")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _policies(pid):
    """The scheduling policy of each of a process's threads (storage's paho
    threads included), by thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            out.setdefault(f.read().strip(), set()).add(os.sched_getscheduler(int(tid)))
    return out


def test_ingestion_runs_under_sched_batch_unless_told_not_to(stack, tmp_path):
    """INGESTION_SCHED_BATCH (default 1): every thread of a replica under
    SCHED_BATCH, said in its startup line; 0: SCHED_OTHER (a replica of its
    own, with no broker to reach: it starts and spools)."""
    pid = stack.services["ingestion-1"].pid
    got = _policies(pid)
    assert got, f"no thread found for ingestion-1 (pid {pid})"
    assert all(p == {os.SCHED_BATCH} for p in got.values()), got
    assert "sched=batch" in stack.log_path("ingestion-1").read_text()

    port = stackmod.Ports.free(1).ingestion[0]
    env = {k: v for k, v in os.environ.items() if k not in stackmod.SERVICE_VARS}
    p = subprocess.Popen([str(bin_dir() / "ingestion"), "--port", str(port), "--listen",
                          "127.0.0.1", "--sched-batch", "0", "--mqtt-url", "tcp://127.0.0.1:1",
                          "--spool-dir", str(tmp_path)],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: stackmod.port_accepts(port), 15, "ingestion with --sched-batch 0 listening")
        got = _policies(p.pid)
        assert all(x == {os.SCHED_OTHER} for x in got.values()), got
    finally:
        p.terminate()
        out = p.communicate(timeout=30)[0]
    assert "sched=other" in out, out


def test_ingestion_finds_the_broker_by_name(stack, tmp_path):
    """MQTT_URL may name the broker's host (compose: tcp://mosquitto:1883),
    which ingestion resolves with libevent's evdns (not a getaddrinfo that
    would block its event loop; this machine's nameserver answers too fast
    to show the difference). A name from /etc/hosts (localhost) connects,
    and what is posted to it is stored; a name that does not resolve leaves
    it answering (202 from the spool) and saying why."""
    sd = stack.state_dir
    good_port, bad_port = stackmod.Ports.free(2).ingestion
    env = {k: v for k, v in os.environ.items() if k not in stackmod.SERVICE_VARS}
    env.update(MQTT_USERNAME="ingestion", MQTT_PASSWORD_FILE=str(sd / "secrets" / "mqtt-ingestion"),
               INGESTION_LISTEN="127.0.0.1")
    procs, logs = [], {}
    try:
        for name, port, url in (("byname", good_port, f"tcp://localhost:{stack.ports.mqtt}"),
                                ("noname", bad_port, "tcp://sensorflow-no-such-host.invalid:1883")):
            logs[name] = tmp_path / f"{name}.log"
            (tmp_path / name).mkdir()
            with open(logs[name], "w") as out:
                procs.append(subprocess.Popen(
                    [str(bin_dir() / "ingestion"), "--port", str(port), "--instance-id",
                     f"it-{name}", "--mqtt-url", url, "--spool-dir", str(tmp_path / name)],
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        wait_for(lambda: "mqtt.connected" in logs["byname"].read_text(), 15,
                 "ingestion connected to tcp://localhost:<port>")
        sid = f"it-byname-{now_us()}"
        r = Api("127.0.0.1", good_port).post("/v1/readings", {"sensor_id": sid,
                                                              "type": "temperature", "value": 1.5})
        assert r.status == 202, r.body
        wait_for(lambda: rows(stack, f"sensor_id = '{sid}'"), 30, "the reading stored")

        # Its loop answers while the name is still being looked up (the
        # nameserver may take its time to say no): the spool takes it.
        wait_for(lambda: stackmod.port_accepts(bad_port), 15, "ingestion listening")
        r = Api("127.0.0.1", bad_port).post("/v1/readings", {"sensor_id": f"{sid}-x",
                                                             "type": "temperature", "value": 1})
        assert r.status == 202, r.body
        assert "spool.active" in logs["noname"].read_text()
        wait_for(lambda: "cannot resolve sensorflow-no-such-host.invalid"
                 in logs["noname"].read_text(), 90, "the failed lookup logged")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
