"""test_faults.py -- the promise under faults: a reading answered 202 is
stored exactly once, whatever single thing fails.

Each test runs a known set of readings through the real stack (two
sensor-sims with --seed, one posting single readings and one posting
batches, both through HAProxy, with --accepted-log and retries enough to
outlast the fault), injects one fault once rows are arriving, heals it, and
then checks in the database that the run's rows are exactly the readings
answered 202 (sfhelp.check_exactly_accepted). Every reading of a run carries
the tag run=<test>, so a row of the run that was never accepted shows up too.

The module has a stack of its own (`own_stack`), since every test here
kills, stops or restarts some service of it; each test leaves it running
(`healed` restarts whatever a failed test left down).

SF_BREAK=delete (or insert) spoils the database just before each exact
check: every fault test must then fail."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import stack as stackmod
from sfhelp import (Api, barrier, check_exactly_accepted, now_us, rfc3339, rows,
                    sim_summary, sql_list, wait_for)

# A shorter drain than the default 10 s keeps the SIGTERM tests quick; the
# drain's logic is the same.
DRAIN_S = 5
STACK_ENV = {"INGESTION_DRAIN_TIMEOUT_S": DRAIN_S}

OUTAGE_S = 10       # PostgreSQL or mosquitto away: longer than storage's first
                    # retries (0.1+0.2+...+3.2 s) and than HAProxy's checks
SIM_RATE = 300      # readings/s of one run, both sims together
SIM_ATTEMPTS = 60   # backoff doubles up to 5 s: minutes of retrying


@pytest.fixture
def st(own_stack):
    return own_stack


@pytest.fixture
def api(own_stack):
    return Api("127.0.0.1", own_stack.ports.http)


@pytest.fixture(autouse=True)
def healed(own_stack):
    """Before each test: every service runs and HAProxy sends to both
    replicas (a failed test may have left something down)."""
    st = own_stack
    for name, svc in st.services.items():
        if not svc.alive():
            st.start_service(name)
    for i in range(1, st.replicas + 1):
        st.wait_ready(f"ingestion-{i}")
        st.wait_haproxy_sees(f"ingestion-{i}", "UP", timeout=30)
    yield


class Run:
    """Two sensor-sims through HAProxy: `singles` posts one reading per
    request, `batches` arrays of up to 25; together SIM_RATE readings/s,
    `seconds` long. Accepted logs and outputs in the stack's state dir."""

    def __init__(self, st, name, seed, seconds=10, rate=SIM_RATE):
        self.st, self.name = st, name
        self.tag = f"{name}-{now_us()}"
        self.dir = st.state_dir / "runs" / self.tag
        self.dir.mkdir(parents=True)
        self.sims = []
        self.acc_paths = []
        self.probes = self.dir / "probes.csv"   # readings the test posted itself
        self.acc_paths.append(self.probes)
        for i, (label, batch, share) in enumerate((("singles", 1, 0.4), ("batches", 25, 0.6))):
            acc = self.dir / f"{label}.csv"
            r = max(1, int(rate * share))
            args = ["--seed", seed * 10 + i, "--sensors", 100, "--rate", r, "--count", r * seconds,
                    "--batch", batch, "--connections", 4, "--max-attempts", SIM_ATTEMPTS,
                    "--accepted-log", acc, "--tags", f"run={self.tag}", "--stats-interval", 1]
            self.acc_paths.append(acc)
            self.sims.append(st.start_sim(args))
        self.results = None

    def stored(self):
        return int(self.st.psql(f"select count(*) from readings where tags->>'run' = '{self.tag}'")[0][0])

    def wait_stored(self, n, timeout=60):
        """Waits until n readings of the run are stored (the fault then hits
        a pipeline in motion)."""
        def enough():
            for s in self.sims:
                if not s.running() and s.proc.returncode not in (0, 1):
                    raise AssertionError(f"sensor-sim exited {s.proc.returncode}:\n{s.output()[-2000:]}")
            return self.stored() >= n
        wait_for(enough, timeout, f"{n} readings of run {self.tag} stored")

    def probe(self, port, what):
        """Posts one reading of the run straight to an ingestion replica;
        returns the answer. A 202 joins the readings that must be stored."""
        ts = rfc3339(now_us())
        body = {"sensor_id": f"probe-{self.tag}"[:64], "type": "humidity", "value": 50,
                "ts": ts, "tags": {"run": self.tag}}
        a = Api("127.0.0.1", port).post("/v1/readings", body, timeout=15)
        if a.status == 202:
            with open(self.probes, "a") as f:
                f.write(f"{body['sensor_id']},humidity,{ts},50,%\n")
        return a

    def probe_each_replica(self, ports, what):
        """probe() on every replica; each must answer 202 (the fault is one
        the replicas ride out)."""
        for port in ports:
            a = self.probe(port, what)
            assert a.status == 202, f"replica on {port} while {what}: {a!r}"

    def finish(self, timeout=240):
        self.results = [s.wait(timeout) for s in self.sims]
        return self.results

    def kill(self):
        for s in self.sims:
            s.kill()

    def check(self, api):
        assert self.results is not None, "finish() first"
        return check_exactly_accepted(self.st, api, self.acc_paths, self.tag, self.results)

    def exits(self):
        return [(r.returncode, {k: sim_summary(r.stdout).get(k) for k in
                                ("accepted", "failed", "retried", "http_5xx", "conn_errors")})
                for r in self.results]


@pytest.fixture
def run_factory(own_stack):
    runs = []

    def make(name, seed, **kw):
        r = Run(own_stack, name, seed, **kw)
        runs.append(r)
        return r
    yield make
    for r in runs:  # a test that failed half way
        r.kill()


def log_has(st, name, pattern, since=0):
    try:
        with open(st.log_path(name), "rb") as f:
            f.seek(since)
            return pattern in f.read().decode("utf-8", "replace")
    except OSError:
        return False


def log_size(st, name):
    try:
        return st.log_path(name).stat().st_size
    except OSError:
        return 0


def inflight_readings(port):
    """sf_inflight_readings of a replica: readings taken, not yet answered."""
    page = Api("127.0.0.1", port).get("/metrics", timeout=5).body.decode()
    m = re.search(r"^sf_inflight_readings (\S+)$", page, re.M)
    return float(m[1]) if m else 0.0


def readyz(port):
    """(status, JSON body) of GET /readyz on a replica."""
    a = Api("127.0.0.1", port).get("/readyz", timeout=5)
    return a.status, a.json


def wait_connected(st):
    """Every replica is connected to the broker again (not just spooling)."""
    for i, port in enumerate(st.ports.ingestion, 1):
        wait_for(lambda: (lambda s, j: s == 200 and (j or {}).get("broker") == "up")(*readyz(port)),
                 60, f"ingestion-{i} reconnected to the broker")


# --- 1. kill -9 of one ingestion replica ----------------------------------------

def test_kill9_ingestion_replica(st, api, run_factory):
    run = run_factory("kill9-ingestion", 11)
    run.wait_stored(300)
    rc = st.kill_service("ingestion-1")
    assert rc == -9, f"ingestion-1 status {rc} after kill -9"
    st.wait_haproxy_sees("ingestion-1", "DOWN", timeout=30)
    # Traffic goes on through ingestion-2 alone.
    before = run.stored()
    wait_for(lambda: run.stored() > before + 200, 60, "readings stored with ingestion-1 gone")
    st.start_service("ingestion-1")
    st.wait_haproxy_sees("ingestion-1", "UP", timeout=30)
    run.finish()
    run.check(api)


# --- 2. kill -9 of storage ------------------------------------------------------

def test_kill9_storage(st, api, run_factory):
    run = run_factory("kill9-storage", 12)
    run.wait_stored(300)
    rc = st.kill_service("storage")
    assert rc == -9, f"storage status {rc} after kill -9"
    # Readings keep being accepted meanwhile: they wait in storage's session.
    run.probe_each_replica(st.ports.ingestion, "storage killed")
    st.start_service("storage")
    run.finish()
    run.check(api)


# --- 3. PostgreSQL stopped ------------------------------------------------------

def test_postgres_stopped(st, api, run_factory):
    run = run_factory("postgres-stopped", 13)
    run.wait_stored(300)
    since = log_size(st, "storage")
    t0 = time.monotonic()
    rc = st.stop_service("postgres")
    assert rc == 0, f"postgres status {rc} after pg_ctl stop -m fast"
    # storage notices and retries without acknowledging (it must not give up
    # nor exit); the readings keep being answered 202 meanwhile.
    wait_for(lambda: log_has(st, "storage", "storage.store_failed", since), 30,
             "storage's store_failed line while PostgreSQL is down")
    run.probe_each_replica(st.ports.ingestion, "postgres down")
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))  # the outage itself
    assert st.services["storage"].alive(), \
        f"storage exited while PostgreSQL was down:\n{st.log_tail('storage', 20)}"
    st.start_service("postgres")
    run.finish()
    run.check(api)


# --- 4. mosquitto stopped (SIGTERM) -----------------------------------------------

def test_broker_stopped(st, api, run_factory):
    """ingestion keeps answering 202 by spooling to disk while the broker is
    away, /readyz says so, and the spool is forwarded when it is back. So no
    reading fails at all: the sims exit 0."""
    run = run_factory("broker-stopped", 14, seconds=15)
    run.wait_stored(300)
    since = st.mosquitto_log_size()
    storage_since = log_size(st, "storage")
    t0 = time.monotonic()
    rc = st.stop_service("mosquitto")
    assert rc == 0, f"mosquitto status {rc} after SIGTERM"
    for i, port in enumerate(st.ports.ingestion, 1):
        got = wait_for(lambda: (lambda s, j: (s, j) if j and j.get("broker") == "down" else None)(
            *readyz(port)), 30, f"ingestion-{i} /readyz to report the broker down")
        assert got[0] == 200 and got[1].get("status") == "spooling", \
            f"ingestion-{i} /readyz with the broker stopped: {got}"
        a = run.probe(port, "broker down")
        assert a.status == 202, f"ingestion-{i} with the broker stopped: {a!r}"
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
    st.start_service("mosquitto")
    st.wait_storage_subscribed(since, timeout=60)
    # mosquitto saved storage's session when it stopped: the reconnect finds
    # it (paho says so only in its protocol trace: consumer.c, on_trace).
    assert log_has(st, "storage", "session_present=1 reconnect=1", storage_since), \
        "storage's reconnect did not find its session:\n" + st.log_tail("storage", 10)
    assert not log_has(st, "storage", "mqtt.session_lost", storage_since)
    wait_connected(st)
    run.finish()
    for r in run.results:
        assert r.returncode == 0, \
            f"sensor-sim gave up on readings while the broker was stopped:\n{r.stdout[-2500:]}"
    run.check(api)


def test_broker_lost_its_sessions(st, api, run_factory):
    """A broker back without its saved state (its disk lost, or persistence
    off): storage's reconnect sees no session and says so (mqtt.session_lost:
    what it had queued is gone), and what ingestion had not had confirmed is
    republished, so every reading answered 202 is stored once."""
    run = run_factory("broker-lost-sessions", 19)
    run.wait_stored(300)
    since = st.mosquitto_log_size()
    storage_since = log_size(st, "storage")
    rc = st.stop_service("mosquitto")
    assert rc == 0, f"mosquitto status {rc} after SIGTERM"
    for f in (st.mq_dir / "data").glob("*.db"):
        f.unlink()
    st.start_service("mosquitto")
    st.wait_storage_subscribed(since, timeout=60)
    assert log_has(st, "storage", "session_present=0 reconnect=1", storage_since), \
        "storage's reconnect to a broker without its session:\n" + st.log_tail("storage", 10)
    assert log_has(st, "storage", "mqtt.session_lost", storage_since)
    wait_connected(st)
    run.finish()
    run.check(api)


# --- 5. kill -9 of mosquitto ----------------------------------------------------

def test_broker_killed(st, api, run_factory):
    """mosquitto loses everything since its last snapshot although it sent the
    PUBACKs; ingestion republishes what storage has not confirmed."""
    run = run_factory("broker-killed", 15)
    run.wait_stored(300)
    since = st.mosquitto_log_size()
    rc = st.kill_service("mosquitto")
    assert rc == -9, f"mosquitto status {rc} after kill -9"
    for i, port in enumerate(st.ports.ingestion, 1):
        a = run.probe(port, "broker killed")
        assert a.status == 202, f"ingestion-{i} with the broker killed: {a!r}"
    st.start_service("mosquitto")
    st.wait_storage_subscribed(since, timeout=60)
    wait_connected(st)
    run.finish()
    run.check(api)


# --- 6. SIGTERM: ingestion drains, storage disconnects cleanly ---------------------

def wait_exit(st, name, timeout):
    rc = st.services[name].wait(timeout)
    assert rc is not None, f"{name} still running {timeout}s after SIGTERM:\n{st.log_tail(name, 20)}"
    return rc


def test_sigterm_ingestion(st, api, run_factory):
    run = run_factory("sigterm-ingestion", 16, seconds=12)
    run.wait_stored(300)
    port1 = st.ports.ingestion[0]

    # a) ingestion-2 with everything up: drains and exits 0.
    svc2 = st.services["ingestion-2"]
    svc2.expect_exit = True
    svc2.signal(15)
    rc = wait_exit(st, "ingestion-2", DRAIN_S + 15)
    assert rc == 0, f"ingestion-2 exited {rc} on SIGTERM:\n{st.log_tail('ingestion-2', 20)}"
    assert log_has(st, "ingestion-2", "shutdown.draining"), st.log_tail("ingestion-2", 20)
    st.start_service("ingestion-2")
    st.wait_haproxy_sees("ingestion-2", "UP", timeout=30)

    # b) ingestion-1 while storage is away, so it holds messages storage has
    # not confirmed: its drain must wait, and meanwhile it is not ready and
    # refuses new readings (503, Retry-After); it exits 0 after the drain
    # timeout at the latest. Nothing is lost: the broker keeps storage's share.
    assert st.stop_service("storage") == 0
    a = run.probe(port1, "storage stopped")
    assert a.status == 202, f"ingestion-1 with storage stopped: {a!r}"
    wait_for(lambda: (readyz(port1)[1] or {}).get("unconfirmed_messages", 0) > 0, 30,
             "ingestion-1 holding unconfirmed messages")
    svc1 = st.services["ingestion-1"]
    svc1.expect_exit = True
    svc1.signal(15)
    seen = wait_for(lambda: (lambda s, j: (s, j) if s == 503 else None)(*readyz(port1)), 10,
                    "ingestion-1 /readyz to fail after SIGTERM")
    assert seen[1] and seen[1].get("status") == "draining", f"/readyz while draining: {seen}"
    a = Api("127.0.0.1", port1).post("/v1/readings", {"sensor_id": f"drain-{run.tag}"[:64],
                                                      "type": "humidity", "value": 50})
    assert a.status == 503 and a.headers.get("retry-after"), f"a POST while draining: {a!r}"
    st.wait_haproxy_sees("ingestion-1", "DOWN", timeout=30)
    rc = wait_exit(st, "ingestion-1", DRAIN_S + 15)
    assert rc == 0, f"ingestion-1 exited {rc} on SIGTERM:\n{st.log_tail('ingestion-1', 20)}"
    st.start_service("storage")
    st.start_service("ingestion-1")
    st.wait_haproxy_sees("ingestion-1", "UP", timeout=30)
    run.finish()
    run.check(api)
    assert not rows(st, f"sensor_id = '{f'drain-{run.tag}'[:64]}'"), "a reading answered 503 was stored"


def test_sigterm_answers_what_waits(st):
    """A request still waiting for the broker's PUBACK when the drain times
    out is answered 503 with Retry-After (the client or HAProxy sends it
    again), not left to a closed connection."""
    wait_connected(st)   # ready includes spooling: the POST must reach the broker
    port1 = st.ports.ingestion[0]
    mq, svc1 = st.services["mosquitto"], st.services["ingestion-1"]
    body = {"sensor_id": f"frozen-{now_us()}"[:64], "type": "humidity", "value": 50,
            "ts": rfc3339(now_us())}
    out = {}

    def post():
        try:
            out["answer"] = Api("127.0.0.1", port1).post("/v1/readings", body,
                                                         timeout=DRAIN_S + 30)
        except Exception as e:  # the defect: a reset or an empty answer
            out["error"] = repr(e)

    mq.signal(signal.SIGSTOP)   # the broker takes the PUBLISH and never answers
    try:
        t = threading.Thread(target=post)
        t.start()
        wait_for(lambda: inflight_readings(port1) > 0, 10, "the POST waiting for its PUBACK")
        svc1.expect_exit = True
        svc1.signal(15)
        rc = wait_exit(st, "ingestion-1", DRAIN_S + 15)
        t.join(30)
    finally:
        mq.signal(signal.SIGCONT)
    assert rc == 0, f"ingestion-1 exited {rc}:\n{st.log_tail('ingestion-1', 20)}"
    assert log_has(st, "ingestion-1", "shutdown.drain_timeout"), st.log_tail("ingestion-1", 20)
    a = out.get("answer")
    assert a is not None, (f"the waiting POST got no answer: {out.get('error')}\n"
                           + st.log_tail("ingestion-1", 20))
    assert a.status == 503 and a.headers.get("retry-after"), f"the waiting POST: {a!r}"
    st.start_service("ingestion-1")


def test_frozen_broker_answers_waiting(st):
    """A broker that stops answering without closing the connection (frozen,
    or a network gone quiet): once ingestion's keepalive gives up on it,
    sooner than HAProxy's `timeout server` (30 s) would cut them off, the
    requests waiting for its PUBACK go to the spool and get their 202; so do
    new readings. The broker may have read that PUBLISH before it froze: the
    forwarded copy lands on the same row."""
    wait_connected(st)   # ready includes spooling: the POST must reach the broker
    port1 = st.ports.ingestion[0]
    mq = st.services["mosquitto"]
    sensor = f"frozen2-{now_us()}"[:64]
    first = {"sensor_id": sensor, "type": "humidity", "value": 50, "ts": rfc3339(now_us())}
    since = log_size(st, "ingestion-1")   # earlier tests spooled too
    mq.signal(signal.SIGSTOP)
    try:
        a = Api("127.0.0.1", port1).post("/v1/readings", first, timeout=28)
        assert a.status == 202, f"the waiting POST: {a!r}\n{st.log_tail('ingestion-1', 10)}"
        assert log_has(st, "ingestion-1", "spool.active", since), st.log_tail("ingestion-1", 10)
        # paho fails the in-flight publish before it reports the connection
        # lost: until then a new POST would still be handed to paho.
        wait_for(lambda: log_has(st, "ingestion-1", "mqtt.connection_lost", since), 10,
                 "ingestion-1 to log the connection lost")
        second = dict(first, value=51, ts=rfc3339(now_us()))
        a = Api("127.0.0.1", port1).post("/v1/readings", second, timeout=28)
        assert a.status == 202, f"a POST once the broker is known gone: {a!r}"
    finally:
        mq.signal(signal.SIGCONT)
    wait_connected(st)
    wait_for(lambda: len(rows(st, f"sensor_id = '{sensor}'")) >= 2, 30,
             "the spooled readings stored")
    barrier(st, Api("127.0.0.1", st.ports.http))
    got = sorted(r["value"] for r in rows(st, f"sensor_id = '{sensor}'"))
    assert got == [50, 51], f"both readings answered 202 are stored: {got}"


def test_sigterm_storage(st, api, run_factory):
    run = run_factory("sigterm-storage", 17)
    run.wait_stored(300)
    since = st.mosquitto_log_size()
    rc = st.stop_service("storage")
    assert rc == 0, f"storage exited {rc} on SIGTERM:\n{st.log_tail('storage', 20)}"
    assert st._mosquitto_log_has(since, r"Client storage-1 disconnected\."), \
        "storage did not send DISCONNECT (mosquitto log): " + stackmod.tail(st.log_path("mosquitto"), 10)
    run.probe_each_replica(st.ports.ingestion, "storage stopped")
    st.start_service("storage")
    run.finish()
    run.check(api)


# --- 7. malformed MQTT messages: dead letters ---------------------------------------

def publish(st, topic, payload, corr=None):
    """mosquitto_pub -V mqttv5 -q 1 of raw bytes (from a file: any byte), as
    the broker's user `ingestion` (the only one that may publish readings);
    corr: the PUBLISH's Correlation Data (bytes mosquitto_pub takes as an
    argument: no NUL)."""
    path = st.state_dir / "runs" / f"payload-{now_us()}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    props = ["-D", "publish", "correlation-data", os.fsdecode(corr)] if corr else []
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(st.ports.mqtt), "-V", "mqttv5",
                        "-u", "ingestion", "-P", st.secrets["MQTT_INGESTION_PASSWORD"],
                        "-q", "1", "-t", topic, "-f", str(path)] + props, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0 and not r.stderr, f"mosquitto_pub failed: {r.stdout}{r.stderr}"


def dead_letters(st, since_id):
    out = []
    for i, topic, reason, payload in st.psql(
            f"select id, topic, reason, encode(payload, 'hex') from dead_letters where id > {since_id} "
            "order by id", sep="\x1f"):
        out.append({"id": int(i), "topic": topic, "reason": reason, "payload": bytes.fromhex(payload)})
    return out


def test_waiting_requests_do_not_hold_their_bodies(st):
    """A request waiting for the broker holds its readings, not its body:
    40 one-reading bodies of 1000 KiB (padded) waiting on a frozen broker
    leave ingestion's memory far from 40 MiB larger."""
    if b"__asan_init" in (st.bin_dir / "ingestion").read_bytes():
        pytest.skip("under ASan freed memory waits in quarantine: RSS shows nothing here")
    wait_connected(st)   # ready includes spooling: the POSTs must wait for the broker
    port1, n = st.ports.ingestion[0], 40
    mq = st.services["mosquitto"]
    pid = st.services["ingestion-1"].proc.pid

    def rss_mib():
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)[1]) / 1024

    answers = []

    def post(i):
        body = json.dumps({"sensor_id": f"big-{i}-{now_us()}"[:64], "type": "humidity",
                           "value": 50, "ts": rfc3339(now_us())})
        body += " " * (1000 * 1024 - len(body))
        try:
            answers.append(Api("127.0.0.1", port1).post("/v1/readings", body, timeout=40).status)
        except Exception as e:
            answers.append(repr(e))

    before = rss_mib()
    mq.signal(signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        wait_for(lambda: inflight_readings(port1) >= n, 20, f"{n} requests waiting for the broker")
        grown = rss_mib() - before
    finally:
        mq.signal(signal.SIGCONT)
    for t in threads:
        t.join(60)
    assert len(answers) == n and all(isinstance(a, int) for a in answers), answers
    assert grown < n / 2, f"ingestion grew {grown:.1f} MiB with {n} bodies of 1000 KiB waiting"


def test_storage_raises_synchronous_commit(st):
    """Ack-after-commit needs the COMMIT on disk: a role default of
    synchronous_commit = off is raised to on for storage's session (and
    said in db.connected)."""
    role = stackmod.DB_STORAGE
    st.psql(f"ALTER ROLE {role} SET synchronous_commit = off")
    try:
        # A session of storage's role does start with it off.
        r = subprocess.run([str(stackmod.PG_BIN / "psql"), "-X", "-At", st.database_url,
                            "-c", "SHOW synchronous_commit"], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ,
                                                PGPASSFILE=str(st.state_dir / "secrets" / "pgpass")))
        assert r.returncode == 0 and r.stdout.strip() == "off", (r.stdout, r.stderr)
        since = log_size(st, "storage")
        assert st.stop_service("storage") == 0
        st.start_service("storage")
        wait_for(lambda: log_has(st, "storage", "db.connected", since), 30, "storage reconnected")
        with open(st.log_path("storage"), "rb") as f:
            f.seek(since)
            line = [ln for ln in f.read().decode().splitlines() if "db.connected" in ln][0]
        assert "synchronous_commit=on" in line and "lock_timeout=10s" in line, line
    finally:
        st.psql(f"ALTER ROLE {role} RESET synchronous_commit")
        st.stop_service("storage")
        st.start_service("storage")


def test_storage_refuses_a_database_not_utf8(st):
    """Ingestion accepts any Unicode text; a LATIN1 database cannot store
    "\u20ac" and would refuse readings already answered 202. storage says so at
    startup and exits 1 (cannot work), instead of dead-lettering them later."""
    st.psql(f"CREATE DATABASE sf_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            f"TEMPLATE template0 OWNER {stackmod.DB_OWNER}", db="postgres")
    # The pgpass file names the database: the same passwords, for this one.
    pgpass = st.state_dir / "secrets" / "pgpass-latin1"
    pgpass.write_text("".join(
        ":".join(f[:2] + ["sf_latin1"] + f[3:]) + "\n"
        for f in (ln.split(":") for ln in (st.state_dir / "secrets" / "pgpass").read_text().split())))
    pgpass.chmod(0o600)
    try:
        env = dict(st.services["storage"].env, PGPASSFILE=str(pgpass),
                   DATABASE_URL=st.database_url.rsplit("/", 1)[0] + "/sf_latin1",
                   DATABASE_OWNER_URL=st.owner_url.rsplit("/", 1)[0] + "/sf_latin1",
                   STORAGE_CLIENT_ID="storage-latin1", STORAGE_HTTP_PORT="0")
        r = subprocess.run([str(st.bin_dir / "storage")], env=env, capture_output=True,
                           text=True, timeout=60, cwd=st.state_dir)
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        line = [ln for ln in out.splitlines() if "db.unusable" in ln]
        assert line and "sf_latin1 is encoded LATIN1, not UTF8" in line[0], out
        # Nothing was set up in it: it stopped before migrating.
        assert st.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'readings'",
                       db="sf_latin1") == [["0"]]
    finally:
        st.psql("DROP DATABASE sf_latin1", db="postgres")


def test_refused_at_commit_is_not_acknowledged(st, api):
    """A refusal that only comes at COMMIT (here a deferred constraint
    trigger) is a problem of the system, not of the reading: storage retries
    without acknowledging, and the reading is stored once the cause is gone."""
    sensor = f"commit-refused-{now_us()}"[:64]
    st.psql(f"""
        CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.sensor_id = '{sensor}' THEN
                RAISE check_violation USING MESSAGE = 'refused at commit (test)';
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON readings
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();""")
    try:
        since = log_size(st, "storage")
        a = api.post("/v1/readings", {"sensor_id": sensor, "type": "humidity", "value": 50,
                                      "ts": rfc3339(now_us())})
        assert a.status == 202, a
        wait_for(lambda: log_has(st, "storage", "op=store_rows", since), 30,
                 "storage retrying the refused-at-commit reading")
        assert not rows(st, f"sensor_id = '{sensor}'")
    finally:
        st.psql("DROP TRIGGER IF EXISTS refuse_at_commit ON readings;"
                " DROP FUNCTION IF EXISTS refuse_at_commit()")
    wait_for(lambda: rows(st, f"sensor_id = '{sensor}'"), 60, "the reading stored after the fix")
    assert not st.psql("SELECT id FROM dead_letters WHERE"
                       f" position(convert_to('{sensor}', 'UTF8') in payload) > 0"), \
        "the reading was dead-lettered"


def test_malformed_mqtt_messages_dead_lettered(st, api):
    tag = f"evil-{now_us()}"
    last = int(st.psql("select coalesce(max(id), 0) from dead_letters")[0][0])
    ts = now_us()
    good = {"sensor_id": f"ok-{tag}", "type": "humidity", "ts_us": ts, "value": 40,
            "unit": "%", "raw_value": 40, "raw_unit": "%", "received_at_us": ts}
    bad_id = dict(good, sensor_id="evil sensor/id!")
    payloads = {
        "garbage": b"\x00\xff\xfe garbage, not JSON \x80",
        "empty": b"",
        "json-array": b"[1, 2, 3]",
        "wrong-shape": json.dumps({"hello": "world"}).encode(),
        "wrong-version": json.dumps({"v": 2, "by": "evil", "readings": [good]}).encode(),
        "readings-not-array": json.dumps({"v": 1, "by": "evil", "readings": "nope"}).encode(),
        "bad-sensor_id": json.dumps({"v": 1, "by": "evil", "readings": [bad_id]}).encode(),
        "good-and-bad": json.dumps({"v": 1, "by": "evil",
                                    "readings": [dict(good, sensor_id=f"ok2-{tag}"), bad_id]}).encode(),
    }
    topics = {}
    for name, payload in payloads.items():
        topic = f"sensorflow/v1/readings/evil/{tag}/{name}"
        topics[topic] = payload
        publish(st, topic, payload)
    got = wait_for(lambda: (lambda d: d if len(d) >= len(payloads) else None)(dead_letters(st, last)),
                   30, f"{len(payloads)} dead letters")
    by_topic = {d["topic"]: d for d in got}
    for topic, payload in topics.items():
        assert topic in by_topic, f"no dead letter for {topic}; got {sorted(by_topic)}"
        d = by_topic[topic]
        assert d["payload"] == payload, f"{topic}: payload {d['payload']!r} != {payload!r}"
        assert d["reason"], f"{topic}: empty reason"
    assert "sensor_id" in by_topic[f"sensorflow/v1/readings/evil/{tag}/bad-sensor_id"]["reason"]
    assert st.services["storage"].alive(), "storage died on malformed messages"
    # The queue goes on: a good message published the same way, and readings
    # through the API, are stored.
    publish(st, f"sensorflow/v1/readings/evil/{tag}/good", json.dumps(
        {"v": 1, "by": "evil", "readings": [good]}).encode())
    wait_for(lambda: rows(st, f"sensor_id = 'ok-{tag}'"), 30, "the good message stored")
    barrier(st, api)
    assert not rows(st, f"sensor_id like 'evil%' or sensor_id = 'ok2-{tag}'"), \
        "a reading of a dead-lettered message was stored"
    assert len(dead_letters(st, last)) == len(payloads), "the good message was dead-lettered too"


def fnv1a64(data):
    """The digest storage confirms a message without an id with
    (reading_msg_digest)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"


def watch_stored(st, topic, count):
    """A mosquitto_sub, as ingestion's user, on storage's confirmations
    (topic), listening once this returns; .communicate() gives what it saw:
    -d prints each PUBLISH's properties too, the payload on a line of its
    own."""
    # stdbuf: mosquitto_sub's lines as they come, not when it exits.
    sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1",
                            "-p", str(st.ports.mqtt), "-V", "mqttv5", "-u", "ingestion",
                            "-P", st.secrets["MQTT_INGESTION_PASSWORD"], "-d",
                            "-t", topic, "-C", str(count), "-W", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in sub.stdout:   # -d: the SUBACK says it listens
        lines.append(line.strip())
        if "SUBACK" in line:
            return sub, lines
    sub.kill()
    raise AssertionError(f"mosquitto_sub did not subscribe: {lines[-10:]}")


@pytest.mark.parametrize("corr", [None, b"\x01\x23\x45\x67\x89\xab\xcd\xef"],
                         ids=["by-digest", "by-id"])
def test_dead_letter_is_confirmed_to_its_sender(st, corr):
    """A message storage could only dead-letter is still confirmed to the
    ingestion instance its topic names, so that ingestion does not publish
    it again (one more dead letter each time): by the id of its Correlation
    Data, as ingestion sends them, or, from an ingestion older than ids,
    by its digest."""
    inst = f"evil-{now_us()}"
    payload = b"not a message at all"
    sub, lines = watch_stored(st, f"sensorflow/v1/stored/{inst}", 1)
    try:
        publish(st, f"sensorflow/v1/readings/{inst}", payload, corr=corr)
        out, _ = sub.communicate(timeout=60)
        lines += out.splitlines()
    finally:
        sub.kill()
    want = "id:0123456789abcdef" if corr else fnv1a64(payload)
    assert want in lines, f"no confirmation {want}: {lines[-10:]}"


def test_confirmations_name_message_ids(st, api):
    """ingestion's messages carry ids, storage confirms by them (no digest
    of every byte on either side), and ingestion lets go of what storage
    confirmed: nothing stays unconfirmed once the readings are stored."""
    sub, lines = watch_stored(st, "sensorflow/v1/stored/#", 4)
    try:
        tag = now_us()
        for i in range(4):
            a = api.post("/v1/readings", {"sensor_id": f"conf-{tag}-{i}", "type": "humidity",
                                          "value": 40 + i})
            assert a.status == 202, a
            time.sleep(0.05)   # each its own message, most likely
        out, _ = sub.communicate(timeout=60)
        lines += out.splitlines()
    finally:
        sub.kill()
    got = [ln for ln in lines if re.fullmatch(r"id:[0-9a-f]{16}|[0-9a-f]{16}", ln)]
    assert got and all(ln.startswith("id:") for ln in got), f"confirmations: {lines[-12:]}"
    wait_for(lambda: rows(st, f"sensor_id like 'conf-{tag}-%'") and
             all((readyz(port)[1] or {}).get("unconfirmed_messages", 1) == 0
                 for port in st.ports.ingestion), 30,
             "every replica to hold no unconfirmed message")


# --- 8. the whole stack restarted ---------------------------------------------------

def test_whole_stack_restart(st, api, run_factory):
    """Everything stopped in order mid-run and started again on the same
    state: nothing lost, and the migrations are a no-op the second time."""
    migrations = st.psql("select version, name, applied_at from schema_migrations order by version")
    assert migrations, "schema_migrations is empty"
    # Every row there before the run (nothing is in flight now), by content.
    t_before = st.psql("select clock_timestamp()")[0][0]
    snapshot = ("select count(*), md5(coalesce(string_agg(sensor_id || '|' || type || '|' || ts::text "
                "|| '|' || value::text, ',' order by sensor_id, type, ts), '')) from readings "
                f"where stored_at <= '{t_before}'")
    before = st.psql(snapshot)
    run = run_factory("whole-restart", 18, seconds=12)
    run.wait_stored(300)
    storage_since = log_size(st, "storage")
    statuses = st.stop()
    bad = {n: c for n, c in statuses.items() if n.startswith(("ingestion", "storage")) and c != 0}
    assert not bad, f"exit statuses on the orderly stop: {statuses}"
    st.start()
    assert st.psql("select version, name, applied_at from schema_migrations order by version") \
        == migrations, "schema_migrations changed on the second start"
    assert not log_has(st, "storage", "db.migrated", storage_since), \
        "storage migrated again on the second start"
    run.finish()
    run.check(api)
    assert st.psql(snapshot) == before, "rows stored before the restart changed or went missing"
