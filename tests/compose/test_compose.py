"""test_compose.py -- `docker compose up --scale ingestion=N`, for real
(`make compose-test`).

Builds the images (compose/images.sh makes debian:bookworm-slim and the
infrastructure images when they cannot be pulled), brings the compose file
users run up as its own project with `--scale ingestion=3`, and checks
against the database, with sensor-sim containers as the load:
  1. a known set of readings is stored exactly once each, all three
     replicas took traffic, every sim container had its own sensor ids, and
     `logs ingestion` shows each replica's lines naming its instance;
  2. scaling ingestion to 5 and then to 1 while sensors post loses no
     reading and fails none;
  3. SIGKILL of one ingestion replica and a restart of storage while sensors
     post lose nothing; storage recreated (a new container) resumes its
     predecessor's MQTT session under the same client id; storage scaled to
     2 and back to 1, the removed one retired as the README says
     (`storage --retire`), loses nothing and delays nothing;
  4. `down -v` leaves no container, volume or network behind.
The steps run in order on one project; a failed step shows the services'
log tails. SF_COMPOSE_KEEP=1 leaves the project up for a look."""

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import types
from pathlib import Path

import pytest

from sfhelp import Api, check_exactly_accepted, read_accepted, wait_for

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
SIM_DIR = "/var/lib/sensorflow/sim/"   # SIM_ACCEPTED_LOG inside the sim containers


def compose_cmd():
    """Compose v2 (`docker compose`) when the plugin is there, else v1."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Project:
    """One compose project of compose/docker-compose.yml, driven like a user
    would: `up`, `--scale`, `kill`, `restart`, `logs`, `down -v`."""

    def __init__(self, tmp):
        self.name = "sftest" + secrets.token_hex(3)
        self.tmp = tmp
        self.cmd = compose_cmd() + ["-p", self.name, "-f", str(COMPOSE_FILE)]
        self.http_port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not (k.startswith(("SIM_", "INGESTION_", "STORAGE_", "POSTGRES_", "MQTT_",
                                          "PG_", "RATE_LIMIT", "HAPROXY_"))
                            or k in ("HTTP_PORT", "HTTP_BIND", "LOG_LEVEL", "LOG_FORMAT"))}
        # Every password compose needs, fresh for this project.
        self.env.update({k: secrets.token_hex(12) for k in (
            "POSTGRES_PASSWORD", "PG_OWNER_PASSWORD", "PG_STORAGE_PASSWORD",
            "MQTT_INGESTION_PASSWORD", "MQTT_STORAGE_PASSWORD")})
        # Slots of storage containers gone for good are retired within 2-4 s
        # instead of 1-2 min (test_3c); with one storage nothing is retired.
        self.env.update(SF_SLOT_RETIRE_S="2")
        self.env.update(HTTP_PORT=str(self.http_port), HAPROXY_STATS_PORT=str(free_port()),
                        SIM_COUNT="", SIM_DURATION_S="", SIM_RATE="", SIM_TAGS="",
                        SIM_ACCEPTED_LOG="", SIM_OUTPUT_DIR=str(self.sim_dir("idle")))
        self.api = Api("127.0.0.1", self.http_port)
        self.scale = {"ingestion": 3, "sensor-sim": 0}

    def sim_dir(self, tag):
        d = self.tmp / f"sim-{tag}"
        d.mkdir(exist_ok=True)
        d.chmod(0o777)   # the sims run as uid 10001
        return d

    def compose(self, *args, timeout=900, check=True):
        r = subprocess.run(self.cmd + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def up(self, *extra, **scale):
        self.scale.update({k.replace("_", "-"): v for k, v in scale.items()})
        flags = [f for svc, n in self.scale.items() for f in ("--scale", f"{svc}={n}")]
        return self.compose("up", "-d", *flags, *extra)

    def containers(self, service, all_=False):
        """Container ids of one service (running ones unless all_), oldest first."""
        r = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc"] + (["-a"] if all_ else []) +
            ["--filter", f"label=com.docker.compose.project={self.name}",
             "--filter", f"label=com.docker.compose.service={service}"],
            capture_output=True, text=True, check=True)
        return list(reversed(r.stdout.split()))

    def inspect(self, cid, fmt):
        return subprocess.run(["docker", "inspect", "-f", fmt, cid], capture_output=True,
                              text=True, check=True).stdout.strip()

    def healthy(self, service, n):
        ids = self.containers(service)
        return len(ids) == n and all(self.inspect(c, "{{.State.Health.Status}}") == "healthy"
                                     for c in ids)

    def psql(self, sql, sep="|", timeout=60):
        """Like Stack.psql: rows as lists of strings, through psql in the
        postgres container."""
        (pg,) = self.containers("postgres")
        r = subprocess.run(["docker", "exec", "-i", pg, "psql", "-X", "-q", "-U", "sensorflow",
                            "-d", "sensorflow", "-At", "-F", sep, "-v", "ON_ERROR_STOP=1",
                            "-f", "-"], input=sql, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"psql failed ({r.returncode}): {r.stderr.strip()}\nSQL: {sql}")
        return [line.split(sep) for line in r.stdout.splitlines()]

    def start_sims(self, tag, n=2, **sim):
        """Starts n sensor-sim containers (recreated: new config) that log what
        was answered 202 under sim-<tag>/; returns that folder."""
        d = self.sim_dir(tag)
        self.env.update(SIM_OUTPUT_DIR=str(d), SIM_ACCEPTED_LOG=SIM_DIR, SIM_TAGS=f"run={tag}",
                        SIM_COUNT="", SIM_DURATION_S="", SIM_RATE="", SIM_SENSORS="20",
                        SIM_INTERVAL_S="1")
        self.env.update({f"SIM_{k.upper()}": str(v) for k, v in sim.items()})
        self.up("--no-deps", "sensor-sim", sensor_sim=n)
        return d

    def wait_sims(self, timeout=300):
        """Waits for every sensor-sim container to exit; returns what
        check_exactly_accepted wants of each (returncode, stdout)."""
        ids = self.containers("sensor-sim", all_=True)
        wait_for(lambda: all(self.inspect(c, "{{.State.Status}}") == "exited" for c in ids),
                 timeout, "the sensor-sim containers to finish")
        out = []
        for c in ids:
            logs = subprocess.run(["docker", "logs", c], capture_output=True, text=True)
            out.append(types.SimpleNamespace(
                returncode=int(self.inspect(c, "{{.State.ExitCode}}")),
                stdout=logs.stdout + logs.stderr))
        return out

    def log_tails(self, lines=40):
        r = self.compose("logs", "--no-color", f"--tail={lines}", check=False, timeout=120)
        return r.stdout + r.stderr

    def leftovers(self):
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, cmd in (("containers", ["docker", "ps", "-aq"]),
                          ("volumes", ["docker", "volume", "ls", "-q"]),
                          ("networks", ["docker", "network", "ls", "-q"])):
            ids = subprocess.run(cmd + ["--filter", label], capture_output=True,
                                 text=True, check=True).stdout.split()
            if ids:
                found[kind] = ids
        return found


@pytest.fixture(scope="module")
def project():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers `docker info`")
    r = subprocess.run([str(REPO / "compose" / "images.sh")], capture_output=True, text=True)
    assert r.returncode == 0, f"compose/images.sh failed:\n{r.stdout}{r.stderr}"
    tmp = Path(tempfile.mkdtemp(prefix="sensorflow-compose-"))
    p = Project(tmp)
    try:
        yield p
    finally:
        if os.environ.get("SF_COMPOSE_KEEP"):
            print(f"compose: project {p.name} left up (SF_COMPOSE_KEEP)")
        else:
            p.compose("down", "-v", "--remove-orphans", "-t", "30", check=False)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def logs_on_failure(project, request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(project.log_tails())


def check_run(project, tag, sims):
    """The promise for one run: exactly the readings answered 202 are stored."""
    paths = sorted(project.tmp.joinpath(f"sim-{tag}").glob("*.csv"))
    assert len(paths) == len(sims), f"{len(sims)} sims but accepted logs {paths}"
    return check_exactly_accepted(project, project.api, paths, tag, sims, timeout=120)


def test_1_cold_up_and_known_readings_once_each(project, logs_on_failure):
    project.up("--build")
    wait_for(lambda: project.healthy("ingestion", 3) and project.healthy("storage", 1), 180,
             "3 ingestion replicas and storage healthy")
    # The published port is HAProxy's, and the whole path answers (HAProxy
    # may still be starting: a refused connection is retried).
    def ready():
        try:
            return project.api.get("/readyz").status == 200
        except OSError:
            return False
    wait_for(ready, 60, "GET /readyz through HAProxy = 200")
    a = project.api.post("/v1/readings", {"sensor_id": "compose-smoke", "type": "temperature",
                                          "value": 21.5, "unit": "C"})
    assert a.status == 202, a

    project.start_sims("known", n=2, count=300, rate=60)
    sims = project.wait_sims()
    assert all(s.returncode == 0 for s in sims), [s.stdout[-1500:] for s in sims]
    check_run(project, "known", sims)

    # Each sim container's sensors are its own.
    per_sim = [{k[0] for k in read_accepted(p)}
               for p in project.tmp.joinpath("sim-known").glob("*.csv")]
    assert len(per_sim) == 2 and not (per_sim[0] & per_sim[1]), "two sims shared sensor ids"

    # All three replicas took traffic, each under its own instance name...
    by = project.psql("select ingested_by, count(*) from readings "
                      "where tags->>'run' = 'known' group by 1 order by 1")
    instances = {r[0] for r in by}
    # (the slots each container took: entrypoint.sh)
    assert instances == {"ingestion-1", "ingestion-2", "ingestion-3"}, f"readings by instance: {by}"
    # ... and `logs ingestion` shows each one's lines, naming it.
    logs = project.compose("logs", "--no-color", "ingestion").stdout
    for inst in instances:
        assert f" {inst} startup.listening " in logs, f"no startup line of {inst} in logs"


def test_2_scale_to_5_then_1_while_posting(project, logs_on_failure):
    project.start_sims("scale", n=2, duration_s=50, rate=40)
    time.sleep(8)
    project.up("--no-recreate", ingestion=5)
    wait_for(lambda: project.healthy("ingestion", 5), 120, "5 ingestion replicas healthy")
    time.sleep(8)
    project.up("--no-recreate", ingestion=1)
    assert len(project.containers("ingestion")) == 1
    sims = project.wait_sims()
    assert all(s.returncode == 0 for s in sims), \
        "a sim failed readings while ingestion scaled:\n" + "\n".join(s.stdout[-1500:] for s in sims)
    check_run(project, "scale", sims)
    by = {r[0] for r in project.psql(
        "select distinct ingested_by from readings where tags->>'run' = 'scale'")}
    assert len(by) >= 5, f"readings of the scaling run went through only {sorted(by)}"


def test_3_kill_an_ingestion_replica_and_restart_storage(project, logs_on_failure):
    project.up("--no-recreate", ingestion=3)
    wait_for(lambda: project.healthy("ingestion", 3), 120, "3 ingestion replicas healthy")
    project.start_sims("faults", n=2, duration_s=40, rate=40)
    time.sleep(8)
    victim = project.containers("ingestion")[0]
    subprocess.run(["docker", "kill", "-s", "KILL", victim], check=True, capture_output=True)
    time.sleep(8)
    project.compose("restart", "storage")
    sims = project.wait_sims()
    check_run(project, "faults", sims)


def storage_connected_lines(project, cid):
    logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
    return [l for l in (logs.stdout + logs.stderr).splitlines() if " mqtt.connected " in l]


def test_3b_recreated_storage_resumes_its_session(project, logs_on_failure):
    """`compose up` after a change of image or settings recreates storage's
    container (a new container id). It takes its predecessor's client id
    (storage-1, entrypoint.sh), so it resumes the MQTT session: a new id would
    leave the old session in the shared subscription, where mosquitto goes on
    queueing a share of the messages for nobody."""
    old = project.containers("storage")
    assert len(old) == 1
    before = storage_connected_lines(project, old[0])
    assert before and "client_id=storage-1 " in before[0], before
    project.start_sims("recreate", n=2, duration_s=30, rate=40)
    time.sleep(8)
    project.compose("up", "-d", "--no-deps", "--force-recreate", "storage")
    new = project.containers("storage")
    assert len(new) == 1 and new != old, (old, new)
    wait_for(lambda: project.healthy("storage", 1), 120, "the recreated storage healthy")
    after = storage_connected_lines(project, new[0])
    assert after and "client_id=storage-1 session_present=1 " in after[0], after
    sims = project.wait_sims()
    check_run(project, "recreate", sims)


def client_id(project, cid):
    lines = storage_connected_lines(project, cid)
    assert lines, f"storage {cid} never connected"
    return lines[0].split(" client_id=")[1].split()[0]


def test_3c_storage_scaled_down_and_its_id_retired(project, logs_on_failure):
    """`--scale storage=2`, then 1, while sensors post: the client id of the
    container removed stays in the shared subscription, collecting a share of
    the messages (README: Known limits), until the storage left finds its
    slot free at two checks in a row and retires it (entrypoint.sh: `storage
    --retire`, which stores what the session holds and ends it). Every
    reading answered 202 is then stored once, the ones that went to the
    departed session included, without waiting for ingestion's republish."""
    project.up("--no-recreate", storage=2)
    wait_for(lambda: project.healthy("storage", 2), 120, "2 storage containers healthy")
    both = {client_id(project, c) for c in project.containers("storage")}
    assert both == {"storage-1", "storage-2"}, both
    project.start_sims("retired", n=2, duration_s=20, rate=40)
    time.sleep(3)   # both storages take readings first
    project.up("--no-recreate", storage=1)
    left = project.containers("storage")
    assert len(left) == 1
    (gone,) = both - {client_id(project, left[0])}

    def logs():
        r = subprocess.run(["docker", "logs", left[0]], capture_output=True, text=True)
        return r.stdout + r.stderr
    wait_for(lambda: f" storage.retired client_id={gone} " in logs(), 90,
             f"the storage left retiring {gone}")
    assert f"retiring its session (storage --retire {gone})" in logs()
    sims = project.wait_sims()
    check_run(project, "retired", sims)
    # Retired once, and the slot marked so: no retire every 2 s.
    time.sleep(5)
    assert logs().count(f" storage.retired client_id={gone} ") == 1, logs()[-3000:]


def test_4_down_v_leaves_nothing(project, logs_on_failure):
    project.compose("down", "-v", "--remove-orphans", "-t", "30")
    assert project.leftovers() == {}, f"left after down -v: {project.leftovers()}"
