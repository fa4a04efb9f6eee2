#!/usr/bin/python3
"""stack.py -- run the real sensorflow stack natively, as child processes.

    PostgreSQL 15, mosquitto, storage, N ingestion replicas, HAProxy and
    (optionally) sensor-sim; each with its state under one directory and its
    output in <state>/logs/<name>.log.

Two uses:
  * a library for the integration tests: Stack(state_dir, ports, ...) with
    start()/stop(), per-service start/stop/kill -9/restart, psql(), URLs;
  * the CLI behind the Makefile:
        stack.py run [--bin build/bin] [--no-sim]   (make run)
        stack.py logs [SERVICE]                     (make logs SERVICE=...)
        stack.py psql [PSQL ARGS...]                (make psql)
        stack.py compose-config [--check]           (make compose-config)

Standard library only (Debian's /usr/bin/python3). Every line this launcher
prints itself starts with "stack:".
"""

import argparse
import atexit
import csv
import http.client
import io
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".run"
HAPROXY_TEMPLATE = REPO / "haproxy" / "haproxy.cfg.in"

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# glibc gives a backend's freed heap back to the kernel once 128 KiB are
# free at its top, and storage's every statement allocates more than that
# and frees it again: each message then page-faults its memory back in,
# which on this VM was a third of PostgreSQL's CPU (make bench: 0.047 ->
# 0.025 CPU s per 1000 rows). Keep up to 8 MiB per backend instead.
# compose/docker-compose.yml sets the same.
PG_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": "8388608", "MALLOC_MMAP_THRESHOLD_": "8388608"}
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
HAPROXY = "/usr/sbin/haproxy"
SETPRIV = "/usr/bin/setpriv"

DB_NAME = "sensorflow"
DB_USER = "sensorflow"           # the superuser: the launcher, tests, `make psql` (unix socket)
DB_OWNER = "sensorflow_owner"    # owns the tables; storage migrates with it
DB_STORAGE = "sensorflow_storage"  # storage's own role: INSERT into its tables, nothing more
MQTT_USERS = ("ingestion", "storage")
STORAGE_CLIENT_ID = "storage-1"   # storage replica k is "storage-k"

# Passwords (README: Security): from the environment (.env) when set, else
# random. `make run` keeps the ones it made in .run/secrets.env.
SECRET_VARS = ("MQTT_INGESTION_PASSWORD", "MQTT_STORAGE_PASSWORD",
               "PG_OWNER_PASSWORD", "PG_STORAGE_PASSWORD")

# The launcher's own settings, with their defaults (also in .env.example).
DEFAULTS = {
    "HTTP_PORT": "8080",
    "INGESTION_REPLICAS": "2",
    "INGESTION_BASE_PORT": "8081",
    "STORAGE_REPLICAS": "1",
    "MQTT_PORT": "1883",
    "PG_PORT": "5432",
    "STORAGE_HTTP_PORT": "8090",
    "HAPROXY_STATS_PORT": "8404",
    "LOG_LEVEL": "info",
    "SIM_SENSORS": "10",
    "SIM_INTERVAL_S": "2",
    "RATE_LIMIT_PER_ADDRESS": "20000",
    "HAPROXY_TLS_CERT": "",
}

# Variables the services read. The tests drop them from the inherited
# environment so that a developer's shell cannot change what they test.
SERVICE_VARS = (
    "LOG_LEVEL LOG_FORMAT MQTT_URL MQTT_TOPIC_PREFIX "
    "INGESTION_LISTEN INGESTION_PORT INGESTION_INSTANCE_ID "
    "INGESTION_MAX_BODY_BYTES INGESTION_MAX_READINGS INGESTION_MAX_FUTURE_S "
    "INGESTION_IDLE_TIMEOUT_S INGESTION_DRAIN_TIMEOUT_S INGESTION_MAX_INFLIGHT "
    "INGESTION_MAX_PENDING INGESTION_MAX_MESSAGE_KIB INGESTION_RETRY_AFTER_S "
    "INGESTION_SPOOL_DIR INGESTION_SPOOL_MAX_MIB INGESTION_RETENTION_S "
    "INGESTION_REPUBLISH_AFTER_S INGESTION_RETENTION_MAX_MIB MQTT_STORED_PREFIX "
    "INGESTION_MAX_UNCONFIRMED INGESTION_CONFIRM_WAIT_MS INGESTION_LINGER_MS "
    "INGESTION_SCHED_BATCH "
    "DATABASE_URL STORAGE_CLIENT_ID STORAGE_SHARE_GROUP STORAGE_SESSION_EXPIRY_S "
    "STORAGE_HTTP_LISTEN STORAGE_HTTP_PORT "
    "SIM_URL SIM_SENSORS SIM_INTERVAL_S SIM_SEED SIM_COUNT SIM_DURATION_S "
    "SIM_RATE SIM_CONNECTIONS SIM_BATCH SIM_REPLAY SIM_MAX_ATTEMPTS "
    "SIM_ACCEPTED_LOG SIM_TAGS SIM_STATS_INTERVAL_S SIM_TIMEOUT_S SIM_DRAIN_S "
    "RATE_LIMIT_PER_ADDRESS HAPROXY_TLS_CERT SIM_API_KEY "
    "INGESTION_API_KEYS_FILE INGESTION_RATE_PER_SENSOR INGESTION_BURST_PER_SENSOR "
    "INGESTION_RATE_MAX_SENSORS MQTT_USERNAME MQTT_PASSWORD MQTT_PASSWORD_FILE "
    "DATABASE_OWNER_URL PGPASSFILE"
).split()

# Bounded waits, in seconds.
START_TIMEOUT = {"postgres": 60, "mosquitto": 15, "storage": 30,
                 "ingestion": 30, "haproxy": 20, "sensor-sim": 5}
STOP_TIMEOUT = {"postgres": 30, "ingestion": 20, "default": 15}


class StackError(Exception):
    """Something in the stack could not be started, reached or stopped.
    The message is meant for a person: what failed and where to look."""


def say(msg):
    """Prints one launcher line (every line starts with "stack:")."""
    for line in str(msg).splitlines() or [""]:
        print(f"stack: {line}", flush=True)


# --- settings and ports ----------------------------------------------------

def parse_env_file(path):
    """Reads KEY=VALUE lines (optional `export `, quotes, # comments) into a
    dict. Commented-out lines are ignored."""
    out = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, val = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise StackError(f"{path}:{n}: expected KEY=VALUE, got {raw!r}")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        else:
            val = re.sub(r"\s+#.*$", "", val)  # trailing comment
        out[key] = val
    return out


def _int_setting(env, name, lo, hi):
    raw = env.get(name, DEFAULTS.get(name, ""))
    try:
        v = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number: set {name} in .env") from None
    if not lo <= v <= hi:
        raise StackError(f"{name}={v} is out of range {lo}..{hi}: set {name} in .env")
    return v


def render_haproxy(values):
    """haproxy/haproxy.cfg.in with its @NAME@ placeholders replaced by values."""
    out = ["# Generated by scripts/stack.py from haproxy/haproxy.cfg.in; edit that instead."]
    for line in HAPROXY_TEMPLATE.read_text().splitlines():
        if not line.lstrip().startswith("#"):  # comments name the placeholders
            line = re.sub(r"@([A-Z_]+)@", lambda m: str(values.get(m[1], m[0])), line)
            if re.search(r"@[A-Z_]+@", line):
                raise StackError(f"{HAPROXY_TEMPLATE}: unknown placeholder in {line.strip()!r}")
        out.append(line)
    return "\n".join(out) + "\n"


def mosquitto_acl(readings, stored):
    """The broker's ACL: ingestion publishes readings and reads storage's
    confirmations; storage reads readings (its shared subscription is
    checked against the topic without $share/<group>/) and publishes the
    confirmations. Nothing else, for anybody."""
    return (f"# Generated by scripts/stack.py; edits are overwritten.\n"
            f"user ingestion\n"
            f"topic write {readings}/#\n"
            f"topic read {stored}/#\n\n"
            f"user storage\n"
            f"topic read {readings}/#\n"
            f"topic write {stored}/#\n")


def haproxy_rate_limit(per_10s):
    """The per-address rate limit rules for @RATE_LIMIT@: past per_10s
    requests in 10 s from one address, 429 with Retry-After; "" when 0.
    per_10s may also be "env": compose's HAProxy reads the limit from its
    environment (RATE_LIMIT_PER_ADDRESS, 0 = off) when it starts."""
    if per_10s == "env":
        rules = (haproxy_rate_limit(10**9)
                 .replace(f"gt {10**9}", 'gt "${RATE_LIMIT_PER_ADDRESS-20000}"')
                 .replace(f"at most {10**9} requests", "at most that many requests"))
        return f""".if strneq("${{RATE_LIMIT_PER_ADDRESS-20000}}","0")\n{rules}\n.endif"""
    if per_10s <= 0:
        return ""
    return f"""    # Per client address: at most {per_10s} requests in any 10 s
    # (RATE_LIMIT_PER_ADDRESS). Past that, 429 with Retry-After; the requests
    # refused still count, so a client that keeps flooding stays refused.
    stick-table type ipv6 size 1m expire 60s store http_req_rate(10s)
    http-request track-sc0 src
    http-request return status 429 content-type application/json hdr Retry-After 10 string "{{\\"error\\":\\"too many requests from this address: retry later\\",\\"index\\":null,\\"field\\":null}}" if {{ sc_http_req_rate(0) gt {per_10s} }}"""


def haproxy_stats(bind):
    """The stats frontend for @STATS@, on bind; "" when bind is None."""
    if bind is None:
        return ""
    return f"""
frontend stats
    # HAProxy's own numbers, apart from the API: Prometheus scrapes /metrics,
    # people read /stats. Read-only (no admin actions on this page).
    bind {bind}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 10s
    stats show-legends"""


# compose/haproxy.cfg: HAProxy finds the replicas through Docker's DNS, which
# answers the service name with every replica's address. server-template makes
# COMPOSE_MAX_REPLICAS slots; those without an address are ignored, so this is
# the most `--scale ingestion=N` can use. init-addr none: start even while no
# replica resolves yet.
COMPOSE_HAPROXY_CFG = REPO / "compose" / "haproxy.cfg"
COMPOSE_MAX_REPLICAS = 32
COMPOSE_HAPROXY = {
    # TLS when the container gets a non-empty HAPROXY_TLS_CERT; the file
    # itself is mounted at this fixed path by docker-compose.yml.
    "BIND": """\
.if strneq("$HAPROXY_TLS_CERT","")
    bind :8080 ssl crt /usr/local/etc/haproxy/tls.pem alpn http/1.1
.else
    bind :8080
.endif""",
    "STATS_SOCKET": "/tmp/haproxy-admin.sock",
    "RESOLVERS": """
resolvers docker
    # Docker's embedded DNS, on every user-defined network (compose's default
    # network is one). Asked every second; an address that stops being
    # answered leaves its slot at once, and health checks take a dying
    # replica out before that.
    nameserver dns 127.0.0.11:53
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 10s
    hold other 10s
    hold refused 10s
    hold nx 10s
    hold timeout 10s""",
    "SERVERS": f"    server-template ingestion- 1-{COMPOSE_MAX_REPLICAS} ingestion:8081 "
               "resolvers docker init-addr none resolve-prefer ipv4",
    "RATE_LIMIT": haproxy_rate_limit("env"),
    "STATS": haproxy_stats(":8404"),
}


class Ports:
    """The TCP ports of one stack, all on 127.0.0.1."""

    def __init__(self, http, mqtt, pg, ingestion, storage_http=None, stats=None,
                 storage_more=()):
        self.http, self.mqtt, self.pg = int(http), int(mqtt), int(pg)
        self.ingestion = [int(p) for p in ingestion]
        # storage's own HTTP listener (/metrics, /healthz, /readyz) and
        # HAProxy's stats page and Prometheus exporter; None: not given.
        self.storage_http = None if storage_http is None else int(storage_http)
        self.stats = None if stats is None else int(stats)
        # The HTTP listeners of storage replicas 2..N (one storage: empty).
        self.storage_more = [int(p) for p in storage_more]

    @property
    def storages(self):
        """Every storage replica's HTTP port, storage's first (None: no
        listener for it)."""
        return [self.storage_http] + self.storage_more

    @classmethod
    def from_env(cls, env):
        """Ports for `make run`, from HTTP_PORT, INGESTION_REPLICAS,
        INGESTION_BASE_PORT, MQTT_PORT, PG_PORT (replica i gets base+i-1),
        STORAGE_REPLICAS and STORAGE_HTTP_PORT (storage k gets port+k-1)."""
        n = _int_setting(env, "INGESTION_REPLICAS", 1, 64)
        base = _int_setting(env, "INGESTION_BASE_PORT", 1, 65535 - n + 1)
        ns = _int_setting(env, "STORAGE_REPLICAS", 1, 16)
        sbase = _int_setting(env, "STORAGE_HTTP_PORT", 1, 65535 - ns + 1)
        return cls(_int_setting(env, "HTTP_PORT", 1, 65535),
                   _int_setting(env, "MQTT_PORT", 1, 65535),
                   _int_setting(env, "PG_PORT", 1, 65535),
                   [base + i for i in range(n)],
                   sbase,
                   _int_setting(env, "HAPROXY_STATS_PORT", 1, 65535),
                   [sbase + k for k in range(1, ns)])

    @classmethod
    def free(cls, replicas=2, storages=1):
        """Distinct ports that are free right now, for tests that run beside
        `make run`. Taken below the kernel's ephemeral range: a port from
        bind(0) lies inside it, and any outgoing connection made before our
        server binds (psql, health checks...) could take it meanwhile. The
        ingestion replicas' ports are one run (base, base+1, ...), and so are
        the storages', as `make run` numbers them (from_env): a test may pass
        the first of each as INGESTION_BASE_PORT and STORAGE_HTTP_PORT."""
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                eph_lo, eph_hi = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            eph_lo, eph_hi = 32768, 60999
        lo, hi = (10000, eph_lo - 1) if eph_lo > 12000 else (eph_hi + 1, 65535)
        rnd = random.SystemRandom()
        taken = set()

        def bindable(p):
            with socket.socket() as s:  # no SO_REUSEADDR: not even TIME_WAIT
                try:
                    s.bind(("127.0.0.1", p))
                    return True
                except OSError:
                    return False

        def run_of(n):
            for _ in range(1000):
                first = rnd.randint(lo, hi - n + 1)
                ports = range(first, first + n)
                if not taken.intersection(ports) and all(bindable(p) for p in ports):
                    taken.update(ports)
                    return list(ports)
            raise StackError(f"found no run of {n} free ports in {lo}..{hi}")

        (http,), (mqtt,), (pg,), (stats,) = run_of(1), run_of(1), run_of(1), run_of(1)
        storage = run_of(storages)
        return cls(http, mqtt, pg, run_of(replicas), storage[0], stats, storage[1:])

    def named(self):
        """(variable, port) pairs, for messages."""
        out = [("HTTP_PORT", self.http), ("MQTT_PORT", self.mqtt), ("PG_PORT", self.pg)]
        if self.storage_http is not None:
            out.append(("STORAGE_HTTP_PORT", self.storage_http))
        for k, p in enumerate(self.storage_more, 2):
            out.append((f"STORAGE_HTTP_PORT (storage {k} uses it+{k - 1})", p))
        if self.stats is not None:
            out.append(("HAPROXY_STATS_PORT", self.stats))
        for i, p in enumerate(self.ingestion, 1):
            out.append((f"INGESTION_BASE_PORT (replica {i} uses base+{i - 1})", p))
        return out

    def check_free(self):
        """Raises StackError naming the variable to change when a port is
        taken (or two settings collide)."""
        seen = {}
        for var, port in self.named():
            short = var.split()[0]
            if port in seen:
                raise StackError(f"port {port} is used twice ({seen[port]} and {short}): "
                                 f"set {short} in .env")
            seen[port] = short
            s = socket.socket()
            # Same option the servers use: a TIME_WAIT leftover is not "busy".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise StackError(f"port {port} is busy: set {short} in .env "
                                 f"(what holds it: ss -ltnp 'sport = :{port}')") from None
            finally:
                s.close()

    def as_dict(self):
        return {"http": self.http, "mqtt": self.mqtt, "pg": self.pg,
                "ingestion": list(self.ingestion), "storage_http": self.storage_http,
                "storage_more": list(self.storage_more), "stats": self.stats}


# --- small helpers ---------------------------------------------------------

def http_get(host, port, path, timeout=2.0, tls=False):
    """GET; returns (status, body bytes). Raises OSError when unreachable.
    tls: HTTPS without checking the certificate (our own, on loopback)."""
    if tls:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def tail(path, n=30):
    """Last n lines of a text file ("" when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if size and lines:
        lines = lines[1:]  # probably cut in the middle
    return "\n".join(lines[-n:])


def _traversable_by(path, pw):
    """Raises StackError if user pw cannot reach path (PostgreSQL runs as
    `postgres` when we are root, and its data lives under our state dir)."""
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        st = d.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise StackError(
                f"{d} is not traversable by user {pw.pw_name}; PostgreSQL refuses to run "
                f"as root, so it runs as {pw.pw_name} with its data under {path}: "
                f"chmod o+x {d}, or put the state directory elsewhere")


def _chown_tree(path, pw):
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.lchown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def _group_members(pgid):
    """Pids of the live (not zombie) processes of process group pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


# --- one child process -----------------------------------------------------

class Service:
    """One child process: its command, environment, log file and the way to
    stop it. Started in its own session (so a terminal's Ctrl-C reaches only
    the launcher, which then stops everything in order) and with a parent-
    death signal (so nothing outlives a launcher killed with -9)."""

    def __init__(self, name, argv, log_path, env=None, cwd=None, user=None,
                 stop_signal=signal.SIGTERM, death_signal="TERM"):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.user = user              # pwd entry to run as, or None
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.proc = None
        self.returncode = None        # of the last run, once reaped
        self.starts = 0
        self.expect_exit = False      # True while we are stopping it
        self.clean_status = {0}       # exit statuses of a clean stop

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.alive():
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        argv = self.argv
        if self.death_signal and os.path.exists(SETPRIV):
            argv = [SETPRIV, f"--pdeathsig={self.death_signal}", "--"] + argv
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True, close_fds=True, **kw)
        self.returncode = None
        self.expect_exit = False
        self.starts += 1
        return self.proc.pid

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill_group(self, timeout=10):
        """SIGKILL to the whole process group (postgres backends included),
        then waits until none of them runs any more: a postgres restarted
        while old backends still die finds its shared memory "in use"."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + timeout
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def wait(self, timeout):
        """Waits for the exit; returns the status or None on timeout."""
        if self.proc is None:
            return self.returncode
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode


# --- the stack ---------------------------------------------------------------

_LIVE = []  # stacks with processes, stopped at interpreter exit as a last resort


def _stop_live_stacks():
    for st in list(_LIVE):
        try:
            st.stop()
        except Exception:
            pass


atexit.register(_stop_live_stacks)


class Stack:
    """The whole pipeline, natively. Usage:

        st = Stack(tmpdir, Ports.free(2), bin_dir="build/bin")
        st.start()                       # waits until everything is ready
        st.psql("select count(*) from readings")   # -> [["0"]]
        st.kill_service("storage"); st.start_service("storage")
        st.stop()                        # also on errors; or `with Stack(...)`

    Services, in start order: postgres, mosquitto, storage (and storage-2..M
    with Ports.free(N, storages=M)), ingestion-1..N, haproxy, sensor-sim (only
    when sim=True)."""

    def __init__(self, state_dir, ports, replicas=None, bin_dir=REPO / "build" / "bin",
                 env=None, sim=False, mosquitto_extra=""):
        self.state_dir = Path(state_dir).resolve()
        # Lines appended to the generated mosquitto.conf (tests of a broker
        # configured otherwise, e.g. with a max_packet_size).
        self.mosquitto_extra = mosquitto_extra
        self.ports = ports
        if replicas is not None and replicas != len(ports.ingestion):
            raise StackError(f"{replicas} replicas but {len(ports.ingestion)} ingestion ports")
        self.replicas = len(ports.ingestion)
        self.bin_dir = Path(bin_dir).resolve()
        self.base_env = dict(os.environ if env is None else env)
        self.log_level = self.base_env.get("LOG_LEVEL", "info")
        self.secrets = {k: self.base_env.get(k) or secrets.token_urlsafe(24) for k in SECRET_VARS}
        for k, v in self.secrets.items():
            if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{12,128}", v):
                raise StackError(f"{k}: 12..128 characters of [A-Za-z0-9._~+/=-], please")
        # HAProxy's settings (README: Security): TLS on the public port when a
        # certificate is given; requests per 10 s per client address (0: off).
        self.tls_cert = self.base_env.get("HAPROXY_TLS_CERT", "")
        if self.tls_cert and not os.access(self.tls_cert, os.R_OK):
            raise StackError(f"HAPROXY_TLS_CERT={self.tls_cert}: no such readable file "
                             "(a PEM holding the certificate and its key)")
        raw = self.base_env.get("RATE_LIMIT_PER_ADDRESS", DEFAULTS["RATE_LIMIT_PER_ADDRESS"])
        try:
            self.rate_limit = int(raw)
        except ValueError:
            raise StackError(f"RATE_LIMIT_PER_ADDRESS={raw!r} is not a number") from None
        if not 0 <= self.rate_limit <= 10**9:
            raise StackError(f"RATE_LIMIT_PER_ADDRESS={raw} is out of range 0..1000000000")
        self.sim = sim
        self.logs_dir = self.state_dir / "logs"
        self.root = os.geteuid() == 0
        self.pg_user = pwd.getpwnam("postgres") if self.root else None
        self.services = {}
        self._sim_runs = 0
        self.on_wait = None  # called while waiting (the CLI streams logs with it)
        self._build_services()

    # -- addresses --
    @property
    def http_url(self):
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.ports.http}"

    @property
    def storage_url(self):
        """storage's HTTP listener: /metrics, /healthz, /readyz."""
        return f"http://127.0.0.1:{self.ports.storage_http}"

    @property
    def storage_urls(self):
        """The HTTP listeners of every storage replica, storage's first."""
        return [f"http://127.0.0.1:{p}" for p in self.ports.storages]

    @property
    def stats_url(self):
        """HAProxy's stats frontend: /stats and /metrics."""
        return f"http://127.0.0.1:{self.ports.stats}"

    @property
    def api_url(self):
        return f"{self.http_url}/v1/readings"

    @property
    def mqtt_url(self):
        return f"tcp://127.0.0.1:{self.ports.mqtt}"

    @property
    def database_url(self):
        """storage's connection (role sensorflow_storage; its password is in
        the pgpass file of the state directory)."""
        return f"postgresql://{DB_STORAGE}@127.0.0.1:{self.ports.pg}/{DB_NAME}"

    @property
    def owner_url(self):
        return f"postgresql://{DB_OWNER}@127.0.0.1:{self.ports.pg}/{DB_NAME}"

    @property
    def secrets_dir(self):
        return self.state_dir / "secrets"

    def ingestion_url(self, i):
        """Base URL of replica i (1-based), bypassing HAProxy."""
        return f"http://127.0.0.1:{self.ports.ingestion[i - 1]}"

    @property
    def names(self):
        return list(self.services)

    def log_path(self, name):
        return self.logs_dir / f"{name}.log"

    def log_tail(self, name, n=30):
        return tail(self.log_path(name), n)

    # -- construction --
    def _env(self, **extra):
        env = dict(self.base_env)
        env["LOG_LEVEL"] = self.log_level
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _build_services(self):
        sd, p = self.state_dir, self.ports
        self.pg_data = sd / "postgres" / "data"
        self.pg_socket = sd / "postgres" / "socket"
        self.mq_dir = sd / "mosquitto"
        self.hap_dir = sd / "haproxy"
        pg_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        pg_env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", **PG_MALLOC_ENV)
        self.pg_env = pg_env
        svc = [
            Service("postgres",
                    [PG_BIN / "postgres", "-D", self.pg_data, "-p", p.pg,
                     "-c", "listen_addresses=127.0.0.1",
                     "-c", f"unix_socket_directories={self.pg_socket}",
                     "-c", "fsync=on", "-c", "logging_collector=off",
                     # A fresh cluster creates each 16 MiB WAL segment as
                     # it needs it, zero-filled and fsync'd by default; the
                     # commits waiting meanwhile stalled 35-40 ms every
                     # 3-7 s in make bench (the segments' birth times), a
                     # long-running one recycles old segments instead. Off:
                     # the file is made without its zeros (the WAL it gets
                     # is fsync'd as ever). Half-rate per-second POST p99
                     # median 9.6 ms against 12.5, worst second 12-68
                     # against 37-63, single within the noise (0.96, 1.04).
                     # compose/docker-compose.yml sets the same.
                     "-c", "wal_init_zero=off"],
                    self.log_path("postgres"), env=pg_env, cwd=sd / "postgres",
                    user=self.pg_user, stop_signal=signal.SIGINT, death_signal="INT"),
            Service("mosquitto", [MOSQUITTO, "-c", self.mq_dir / "mosquitto.conf"],
                    self.log_path("mosquitto"), env=self._env(), cwd=self.mq_dir),
        ]
        # Storage replica k (service "storage" for k = 1, else "storage-k")
        # has the client id storage-k: replicas split the messages through
        # the shared subscription, and each commits on its own connection.
        for k, port in enumerate(p.storages, 1):
            name = "storage" if k == 1 else f"storage-{k}"
            svc.append(Service(
                name, [self.bin_dir / "storage"], self.log_path(name),
                env=self._env(DATABASE_URL=self.database_url, DATABASE_OWNER_URL=self.owner_url,
                              PGPASSFILE=sd / "secrets" / "pgpass",
                              MQTT_USERNAME="storage",
                              MQTT_PASSWORD_FILE=sd / "secrets" / "mqtt-storage",
                              MQTT_URL=self.mqtt_url, STORAGE_CLIENT_ID=f"storage-{k}",
                              STORAGE_HTTP_LISTEN="127.0.0.1", STORAGE_HTTP_PORT=port or 0),
                cwd=sd))
        for i, port in enumerate(p.ingestion, 1):
            svc.append(Service(
                f"ingestion-{i}", [self.bin_dir / "ingestion"], self.log_path(f"ingestion-{i}"),
                env=self._env(INGESTION_LISTEN="127.0.0.1", INGESTION_PORT=port,
                              INGESTION_INSTANCE_ID=f"ingestion-{i}", MQTT_URL=self.mqtt_url,
                              MQTT_USERNAME="ingestion",
                              MQTT_PASSWORD_FILE=sd / "secrets" / "mqtt-ingestion"),
                cwd=sd))
        hap = Service("haproxy", [HAPROXY, "-f", self.hap_dir / "haproxy.cfg", "-db"],
                      self.log_path("haproxy"), env=self._env(), cwd=self.hap_dir)
        hap.clean_status = {0, -signal.SIGTERM}  # its hard stop ends by the signal
        svc.append(hap)
        if self.sim:
            svc.append(Service("sensor-sim", [self.bin_dir / "sensor-sim"],
                               self.log_path("sensor-sim"),
                               env=self._env(SIM_URL=self.api_url), cwd=sd))
        self.services = {s.name: s for s in svc}

    def service(self, name):
        try:
            return self.services[name]
        except KeyError:
            raise StackError(f"no service {name!r}; services: {', '.join(self.services)}") from None

    # -- preparation (idempotent, run before each start of a service) --
    def _prepare_dirs(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self._write_secrets()
        if self.root:
            os.chmod(self.state_dir, 0o755)
            _traversable_by(self.state_dir, self.pg_user)
        for b in ("storage", "ingestion") + (("sensor-sim",) if self.sim else ()):
            exe = self.bin_dir / b
            if not os.access(exe, os.X_OK):
                raise StackError(f"{exe} is missing: build it first (make)")
        for exe in (PG_BIN / "postgres", MOSQUITTO, HAPROXY):
            if not os.access(exe, os.X_OK):
                raise StackError(f"{exe} is missing: run scripts/deps.sh")

    def _write_secrets(self):
        """The services' password files, readable by us only: MQTT passwords
        (MQTT_PASSWORD_FILE) and libpq's pgpass for storage's two roles."""
        d = self.secrets_dir
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        files = {"mqtt-ingestion": self.secrets["MQTT_INGESTION_PASSWORD"],
                 "mqtt-storage": self.secrets["MQTT_STORAGE_PASSWORD"],
                 "pgpass": "".join(f"127.0.0.1:{self.ports.pg}:{DB_NAME}:{role}:{pw}\n"
                                   for role, pw in ((DB_OWNER, self.secrets["PG_OWNER_PASSWORD"]),
                                                    (DB_STORAGE,
                                                     self.secrets["PG_STORAGE_PASSWORD"])))}
        for name, text in files.items():
            path = d / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            os.chmod(path, 0o600)

    def _prepare_postgres(self):
        pgdir = self.state_dir / "postgres"
        for d in (pgdir, self.pg_socket):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        if self.root:
            os.chown(pgdir, self.pg_user.pw_uid, self.pg_user.pw_gid)
            os.chown(self.pg_socket, self.pg_user.pw_uid, self.pg_user.pw_gid)
        if not (self.pg_data / "PG_VERSION").exists():
            self._initdb()
        # Passwords over TCP (storage's roles); the superuser only through
        # the unix socket, whose directory only we (or postgres) can enter.
        hba = self.pg_data / "pg_hba.conf"
        hba.write_text("# Written by scripts/stack.py at every start.\n"
                       "local all all trust\n"
                       f"host all {DB_USER} all reject\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n"
                       "host all all ::1/128 scram-sha-256\n")
        if self.root:
            os.chown(hba, self.pg_user.pw_uid, self.pg_user.pw_gid)
            os.chmod(self.pg_socket, 0o750)

    def _initdb(self):
        if self.pg_data.exists():
            shutil.rmtree(self.pg_data)  # a half-done initdb
        # --no-sync: initdb's own flush only matters if the machine crashes
        # during initdb; the server itself runs with fsync on.
        argv = [PG_BIN / "initdb", "-D", self.pg_data, "-U", DB_USER, "--auth=trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        r = self._run_as_pg(argv, timeout=120)
        if r.returncode != 0:
            raise StackError(f"initdb failed (status {r.returncode}):\n"
                             + self.log_tail("postgres", 20))

    def _run_as_pg(self, argv, timeout):
        kw = {}
        if self.root:
            kw = {"user": self.pg_user.pw_uid, "group": self.pg_user.pw_gid, "extra_groups": []}
        with open(self.log_path("postgres"), "ab") as log:
            return subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=self.pg_env,
                                  cwd=self.state_dir / "postgres", timeout=timeout, **kw)

    def _prepare_mosquitto(self):
        data = self.mq_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        user_line = ""
        if self.root:
            # Run it as `mosquitto` from the start rather than letting it drop
            # privileges itself: a setuid inside it would clear the parent-death
            # signal that stops it when the launcher dies.
            svc = self.services["mosquitto"]
            try:
                svc.user = pwd.getpwnam("mosquitto")
                os.chown(data, svc.user.pw_uid, svc.user.pw_gid)
            except KeyError:
                user_line = "user root\n"
        self._write_mosquitto_auth()
        conf = (
            "# Generated by scripts/stack.py; edits are overwritten.\n"
            f"listener {self.ports.mqtt} 127.0.0.1\n"
            "# Users and what each may do (README: Security); nobody else gets in.\n"
            "allow_anonymous false\n"
            f"password_file {self.mq_dir / 'passwd'}\n"
            f"acl_file {self.mq_dir / 'acl'}\n"
            f"{user_line}"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "# The default (1000) silently drops QoS 1 messages queued for a slow or\n"
            "# offline subscriber although the publisher got its PUBACK (FACTS.md).\n"
            "max_queued_messages 100000\n"
            "# Small packets (PUBACKs, storage's confirmations) go out at once, not\n"
            "# after the peer's delayed ACK (Nagle: up to 40 ms each).\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "# The launcher waits for storage's SUBSCRIBE line before starting ingestion.\n"
            "log_type subscribe\nlog_type unsubscribe\n"
            "connection_messages true\n"
            "log_timestamp true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
            f"{self.mosquitto_extra}")
        (self.mq_dir / "mosquitto.conf").write_text(conf)

    def _write_mosquitto_auth(self):
        """mosquitto's password file (hashed by mosquitto_passwd -U, so no
        password is ever on a command line) and ACL file."""
        readings = self.base_env.get("MQTT_TOPIC_PREFIX") or "sensorflow/v1/readings"
        stored = self.base_env.get("MQTT_STORED_PREFIX") or "sensorflow/v1/stored"
        passwd, acl = self.mq_dir / "passwd", self.mq_dir / "acl"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"ingestion:{self.secrets['MQTT_INGESTION_PASSWORD']}\n"
                    f"storage:{self.secrets['MQTT_STORAGE_PASSWORD']}\n")
        r = subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwd)], capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(f"mosquitto_passwd -U {passwd} failed: {r.stdout}{r.stderr}")
        acl.write_text(mosquitto_acl(readings, stored))
        user = self.services["mosquitto"].user
        for path in (passwd, acl):
            os.chmod(path, 0o600)
            if user is not None:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _prepare_haproxy(self):
        self.hap_dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server ingestion-{i} 127.0.0.1:{port}"
                            for i, port in enumerate(self.ports.ingestion, 1))
        cfg = self.hap_dir / "haproxy.cfg"
        stats = None if self.ports.stats is None else f"127.0.0.1:{self.ports.stats}"
        cfg.write_text(render_haproxy({
            "BIND": f"    bind 127.0.0.1:{self.ports.http}"
                    + (f" ssl crt {self.tls_cert} alpn http/1.1" if self.tls_cert else ""),
            "STATS_SOCKET": self.hap_dir / "stats.sock",
            "RATE_LIMIT": haproxy_rate_limit(self.rate_limit),
            "STATS": haproxy_stats(stats), "RESOLVERS": "", "SERVERS": servers}))
        r = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(f"haproxy rejects {cfg}:\n{r.stdout}{r.stderr}")

    # -- readiness --
    def _wait(self, svc, what, pred, timeout):
        """Polls pred() until true; fails early when svc exits."""
        deadline = time.monotonic() + timeout
        delay, last = 0.02, None
        while True:
            if self.on_wait is not None:
                self.on_wait()
            if svc is not None and not svc.alive():
                rc = svc.wait(0)
                raise StackError(f"{svc.name} exited (status {rc}) while waiting for {what}; "
                                 f"last lines of {svc.log_path}:\n{tail(svc.log_path, 25)}")
            try:
                if pred():
                    return
                last = None
            except Exception as e:  # not up yet
                last = e
            if time.monotonic() > deadline:
                msg = f"timed out after {timeout}s waiting for {what}"
                if last is not None:
                    msg += f" (last error: {last})"
                if svc is not None:
                    msg += f"; last lines of {svc.log_path}:\n{tail(svc.log_path, 25)}"
                raise StackError(msg)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _pg_ready(self):
        r = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1",
                            "-p", str(self.ports.pg), "-U", DB_USER, "-d", "postgres", "-t", "2"],
                           env=self.pg_env, capture_output=True)
        return r.returncode == 0

    def _mosquitto_log_has(self, offset, pattern):
        try:
            with open(self.log_path("mosquitto"), "rb") as f:
                f.seek(offset)
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return False
        return re.search(pattern, data, re.M) is not None

    def _ensure_roles(self):
        """The database, the owner role that migrates it and storage's role,
        with this stack's passwords (set again at every start). Tables of a
        state directory from before the roles are handed to the owner."""
        o, s = self.secrets["PG_OWNER_PASSWORD"], self.secrets["PG_STORAGE_PASSWORD"]
        self.psql(f"""
            select 'create role {DB_OWNER}' where not exists
                (select from pg_roles where rolname = '{DB_OWNER}') \\gexec
            select 'create role {DB_STORAGE}' where not exists
                (select from pg_roles where rolname = '{DB_STORAGE}') \\gexec
            alter role {DB_OWNER} login nosuperuser nocreaterole nocreatedb password '{o}';
            alter role {DB_STORAGE} login nosuperuser nocreaterole nocreatedb password '{s}';
            select 'create database {DB_NAME} owner {DB_OWNER}' where not exists
                (select from pg_database where datname = '{DB_NAME}') \\gexec
            alter database {DB_NAME} owner to {DB_OWNER};
            revoke all on database {DB_NAME} from public;
            grant connect on database {DB_NAME} to {DB_STORAGE};
            revoke temporary on database {DB_NAME} from {DB_STORAGE};
            """, db="postgres")
        self.psql(f"""
            select format('alter table %I owner to {DB_OWNER}', tablename) from pg_tables
                where schemaname = 'public' and tableowner <> '{DB_OWNER}' \\gexec
            """)

    def _readings_table_exists(self):
        return self.psql("select to_regclass('public.readings') is not null") == [["t"]]

    def haproxy_servers(self):
        """{server name: status} of the ingestion backend, from the stats socket
        (status e.g. "UP", "DOWN", "UP 1/2", "MAINT")."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(str(self.hap_dir / "stats.sock"))
            s.sendall(b"show stat\n")
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        finally:
            s.close()
        text = b"".join(chunks).decode().lstrip("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
                if row.get("pxname") == "ingestion" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_haproxy_sees(self, name, status="UP", timeout=15):
        """Waits until HAProxy's health checks report server `name` as status."""
        self._wait(self.services.get("haproxy"), f"haproxy to see {name} {status}",
                   lambda: self.haproxy_servers().get(name, "").split()[0] == status, timeout)

    def _wait_ready(self, svc, log_offset):
        t = START_TIMEOUT.get(svc.name.split("-")[0], START_TIMEOUT.get(svc.name, 30))
        if svc.name == "postgres":
            self._wait(svc, "postgres to accept connections (pg_isready)", self._pg_ready, t)
            self._ensure_roles()
        elif svc.name == "mosquitto":
            self._wait(svc, f"mosquitto to accept connections on {self.ports.mqtt}",
                       lambda: port_accepts(self.ports.mqtt), t)
        elif svc.name == "storage" or svc.name.startswith("storage-"):
            # Ingestion must not publish before storage's shared subscription
            # exists: with no subscriber the broker drops the messages. On a
            # restart the persistent session already holds it, so its
            # reconnection is enough.
            cid = re.escape(svc.env["STORAGE_CLIENT_ID"])
            port = int(svc.env["STORAGE_HTTP_PORT"])
            if svc.starts == 1:
                what, pat = "storage to subscribe (mosquitto log)", rf"^\S+: {cid} [012] \S+"
            else:
                what, pat = "storage to connect (mosquitto log)", rf"New client connected .* as {cid} "
            self._wait(svc, what, lambda: self._mosquitto_log_has(log_offset, pat), t)
            self._wait(svc, "storage's migrations (table readings)", self._readings_table_exists, t)
            if port:
                self._wait(svc, f"{svc.name} GET /readyz = 200",
                           lambda: http_get("127.0.0.1", port, "/readyz")[0] == 200, t)
        elif svc.name.startswith("ingestion-"):
            port = self.ports.ingestion[int(svc.name.split("-")[1]) - 1]
            self._wait(svc, f"{svc.name} GET /readyz = 200",
                       lambda: http_get("127.0.0.1", port, "/readyz")[0] == 200, t)
        elif svc.name == "haproxy":
            self._wait(svc, "haproxy GET /healthz = 200",
                       lambda: http_get("127.0.0.1", self.ports.http, "/healthz",
                                        tls=bool(self.tls_cert))[0] == 200, t)
            up = [f"ingestion-{i}" for i in range(1, self.replicas + 1)
                  if self.services[f"ingestion-{i}"].alive()]
            self._wait(svc, f"haproxy to see {', '.join(up)} UP",
                       lambda: all(self.haproxy_servers().get(n, "").startswith("UP") for n in up), t)

    # -- life cycle --
    def start_service(self, name, wait=True):
        """Starts one service (after its preparation) and by default waits until
        it is ready. Returns its pid."""
        svc = self.service(name)
        if name == "postgres":
            self._prepare_postgres()
        elif name == "mosquitto":
            self._prepare_mosquitto()
        elif name == "haproxy":
            self._prepare_haproxy()
        try:
            mq_offset = self.log_path("mosquitto").stat().st_size
        except OSError:
            mq_offset = 0
        pid = svc.start()
        if self not in _LIVE:
            _LIVE.append(self)
        if wait:
            self._wait_ready(svc, mq_offset)
        return pid

    def mosquitto_log_size(self):
        """Current size of mosquitto's log: pass it to wait_storage_subscribed
        to look only at what comes after."""
        try:
            return self.log_path("mosquitto").stat().st_size
        except OSError:
            return 0

    def wait_storage_subscribed(self, since=0, timeout=30):
        """Waits until mosquitto logs storage's SUBSCRIBE after byte `since`
        of its log (e.g. storage subscribing again after a broker restart)."""
        pat = rf"^\S+: {re.escape(STORAGE_CLIENT_ID)} [012] \S+"
        self._wait(self.services["storage"], "storage to subscribe (mosquitto log)",
                   lambda: self._mosquitto_log_has(since, pat), timeout)

    def wait_ready(self, name):
        """Waits until an already started service is ready again (e.g. after
        a broker restart, an ingestion replica's /readyz)."""
        self._wait_ready(self.service(name), 0)

    def start(self):
        """Starts every service in order, each waited for. On any failure
        (or Ctrl-C) stops what was started, then raises."""
        try:
            self._prepare_dirs()
            for name in self.services:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_service(self, name, timeout=None):
        """Stops one service gracefully (SIGTERM; postgres: pg_ctl stop -m fast),
        SIGKILL after the timeout. Returns its exit status (negative = signal),
        None if it was not running."""
        svc = self.service(name)
        if not svc.alive():
            return svc.wait(0) if svc.proc else None
        svc.expect_exit = True
        timeout = timeout or STOP_TIMEOUT.get(name, STOP_TIMEOUT["default"])
        if name == "postgres":
            try:
                self._run_as_pg([PG_BIN / "pg_ctl", "stop", "-D", self.pg_data, "-m", "fast",
                                 "-w", "-t", str(timeout)], timeout=timeout + 5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if svc.wait(5) is None:
                svc.signal(signal.SIGQUIT)  # immediate shutdown
        else:
            svc.signal(svc.stop_signal)
        rc = svc.wait(timeout)
        if rc is None:
            with open(svc.log_path, "ab") as f:
                f.write(f"stack: {name} did not stop within {timeout}s; SIGKILL\n".encode())
            svc.kill_group()
            rc = svc.wait(10)
        svc.kill_group()  # anything it left in its group
        return rc

    def kill_service(self, name):
        """kill -9 of the service's whole process group (for postgres: the
        postmaster and every backend, like a crash). Returns the status."""
        svc = self.service(name)
        if not svc.alive():
            return svc.wait(0) if svc.proc else None
        svc.expect_exit = True
        svc.kill_group()
        return svc.wait(10)

    def restart_service(self, name, wait=True):
        self.stop_service(name)
        return self.start_service(name, wait=wait)

    def stop(self):
        """Stops everything in reverse order. Never raises for a process that
        misbehaves; returns {name: exit status} of the services it stopped."""
        out = {}
        for name in reversed(list(self.services)):
            svc = self.services[name]
            if not svc.alive():
                continue
            try:
                out[name] = self.stop_service(name)
            except BaseException:
                svc.kill_group()
                svc.wait(5)
        for svc in self.services.values():  # last resort
            if svc.alive():
                svc.kill_group()
                svc.wait(5)
        if self in _LIVE:
            _LIVE.remove(self)
        return out

    def unexpected_exits(self):
        """Services that exited without being asked to: [(name, status)].
        Each is reported once."""
        out = []
        for svc in self.services.values():
            if svc.proc is not None and not svc.expect_exit and svc.proc.poll() is not None:
                svc.expect_exit = True
                svc.returncode = svc.proc.returncode
                out.append((svc.name, svc.returncode))
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- tools for tests --
    def psql(self, sql, db=DB_NAME, timeout=30, sep="|"):
        """Runs sql (one or more statements) with the psql CLI and returns the
        rows as lists of strings (NULL is ""). Raises StackError with psql's
        message on any error."""
        cmd = [str(PG_BIN / "psql"), "-X", "-q", "-h", str(self.pg_socket), "-p", str(self.ports.pg),
               "-U", DB_USER, "-d", db, "-At", "-F", sep, "-v", "ON_ERROR_STOP=1", "-f", "-"]
        env = dict(self.pg_env, PGCONNECT_TIMEOUT="5")
        r = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise StackError(f"psql failed ({r.returncode}): {r.stderr.strip()}\nSQL: {sql}")
        return [line.split(sep) for line in r.stdout.splitlines()]

    def run_sim(self, args, timeout=120, env=None):
        """Runs build/bin/sensor-sim against HAProxy (SIM_URL set) to the end,
        its output in logs/sensor-sim-run-<n>.log. Returns CompletedProcess
        (stdout = its output). Kills it and raises StackError on timeout."""
        return self.start_sim(args, env=env).wait(timeout)

    def start_sim(self, args, env=None):
        """Starts build/bin/sensor-sim against HAProxy (SIM_URL set) in the
        background, its output in logs/sensor-sim-run-<n>.log; returns a
        SimRun (wait(), output(), kill()). Stack.stop() does not know it:
        wait for it or kill() it."""
        self._sim_runs += 1
        log = self.logs_dir / f"sensor-sim-run-{self._sim_runs}.log"
        e = self._env(SIM_URL=self.api_url)
        e.update({k: str(v) for k, v in (env or {}).items()})
        argv = [str(self.bin_dir / "sensor-sim")] + [str(a) for a in args]
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 env=e, cwd=self.state_dir, start_new_session=True)
        return SimRun(argv, p, log)

    def state(self):
        """What `stack.py psql` / `logs` need to find this stack."""
        return {"pid": os.getpid(), "state_dir": str(self.state_dir), "ports": self.ports.as_dict(),
                "http_url": self.http_url, "database_url": self.database_url,
                "mqtt_url": self.mqtt_url, "services": self.names,
                "pids": {n: s.pid for n, s in self.services.items()}}


class SimRun:
    """A sensor-sim started by Stack.start_sim."""

    def __init__(self, argv, proc, log):
        self.argv, self.proc, self.log = argv, proc, Path(log)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def output(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout):
        """Waits for the end; returns CompletedProcess (stdout = its output).
        Kills it and raises StackError on timeout."""
        try:
            rc = self.proc.wait(timeout)
        except BaseException:
            self.kill()
            raise StackError(f"sensor-sim {' '.join(self.argv[1:])} still running after "
                             f"{timeout}s; killed. Last lines of {self.log}:\n{tail(self.log, 20)}")
        return subprocess.CompletedProcess(self.argv, rc, self.output(), "")

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


# --- CLI: logs ---------------------------------------------------------------

class LogFollower:
    """Follows <logs_dir>/*.log like tail -F: new files, truncation, partial
    lines. poll() returns [(name, line)]."""

    def __init__(self, logs_dir, want=None, from_start=False, last=0):
        self.dir = Path(logs_dir)
        self.want = want            # None = all; "ingestion" = every replica
        self.from_start = from_start
        self.last = last            # lines of history per file on first sight
        self.files = {}             # name -> [file, pos, partial bytes]

    def _match(self, name):
        if self.want is None:
            return True
        return name == self.want or re.fullmatch(re.escape(self.want) + r"-\d+", name) is not None

    def names(self):
        return sorted(p.stem for p in self.dir.glob("*.log") if self._match(p.stem))

    def poll(self):
        out = []
        for name in self.names():
            path = self.dir / f"{name}.log"
            ent = self.files.get(name)
            if ent is None:
                try:
                    f = open(path, "rb")
                except OSError:
                    continue
                if self.from_start:
                    pos = 0
                else:
                    size = f.seek(0, os.SEEK_END)
                    pos = size
                    if self.last:
                        hist = tail(path, self.last)
                        out += [(name, ln) for ln in hist.splitlines()]
                ent = self.files[name] = [f, pos, b""]
            f, pos, partial = ent
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            if size < pos:  # truncated (a new `make run`)
                pos, partial = 0, b""
            f.seek(pos)
            data = f.read(1 << 20)
            pos += len(data)
            data = partial + data
            *lines, partial = data.split(b"\n")
            out += [(name, ln.decode("utf-8", "replace")) for ln in lines]
            ent[1], ent[2] = pos, partial
        # Files seen after the first poll are new: read them from the start.
        self.from_start = True
        return out


COLORS = [36, 32, 33, 35, 34, 91, 92, 93, 94, 95, 96]


class Printer:
    def __init__(self):
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.width = 11
        self.assigned = {}

    def line(self, name, text):
        self.width = max(self.width, len(name))
        label = f"{name:<{self.width}} |"
        if self.color:
            c = self.assigned.setdefault(name, COLORS[len(self.assigned) % len(COLORS)])
            label = f"\x1b[{c}m{label}\x1b[0m"
        sys.stdout.write(f"{label} {text}\n")


def follow(follower, printer, stop_check=None, interval=0.2):
    """Prints followed lines until KeyboardInterrupt (or stop_check() is
    true)."""
    while True:
        lines = follower.poll()
        for name, text in lines:
            printer.line(name, text)
        if lines:
            sys.stdout.flush()
        if stop_check is not None:
            stop_check()
        time.sleep(interval)


def cmd_logs(args):
    logs = RUN_DIR / "logs"
    if not logs.is_dir():
        say(f"no logs in {logs}: start the stack with `make run`")
        return 1
    want = args.service or None
    fol = LogFollower(logs, want=want, last=10)
    if not fol.names():
        have = sorted({re.sub(r"-\d+$", "", p.stem) for p in logs.glob("*.log")})
        say(f"no log for {want!r} in {logs}; services: {', '.join(have)}")
        return 1
    try:
        follow(fol, Printer())
    except KeyboardInterrupt:
        pass
    return 0


# --- CLI: psql ---------------------------------------------------------------

def _read_state():
    path = RUN_DIR / "stack.json"
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(st["pid"], 0)
    except (ProcessLookupError, KeyError):
        return None
    except PermissionError:
        pass
    return st


def cmd_psql(args):
    st = _read_state()
    if st is None:
        say("no running stack (.run/stack.json missing or its launcher is gone): start it with `make run`")
        return 1
    psql = str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql"
    sock = Path(st["state_dir"]) / "postgres" / "socket"   # the superuser: unix socket only
    argv = [psql, "-h", str(sock), "-p", str(st["ports"]["pg"]), "-U", DB_USER, DB_NAME] + args.rest
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    os.execve(psql, argv, env) if os.path.isabs(psql) else os.execvpe(psql, argv, env)


# --- CLI: run ----------------------------------------------------------------

def load_run_env():
    """Defaults < .env (or .env.example) < the process environment."""
    env = dict(DEFAULTS)
    src = None
    for f in (REPO / ".env", REPO / ".env.example"):
        if f.exists():
            env.update(parse_env_file(f))
            src = f
            break
    env.update(os.environ)
    return env, src


def run_secrets(env, state_dir):
    """The passwords `make run` uses: those set in .env or the environment,
    else the ones it generated on an earlier run, kept in
    <state>/secrets.env (mode 600), else new random ones written there.
    Returns the variables it took from or wrote to that file."""
    path = Path(state_dir) / "secrets.env"
    kept = parse_env_file(path) if path.exists() else {}
    missing = [k for k in SECRET_VARS if not env.get(k)]
    new = {k: kept.get(k) or secrets.token_urlsafe(24) for k in missing}
    if any(k not in kept for k in new):
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Generated by `make run` (scripts/stack.py): the passwords not set in .env.\n"
                    "# Delete this file to get new ones at the next run.\n")
            f.writelines(f"{k}={v}\n" for k, v in {**kept, **new}.items())
        os.chmod(path, 0o600)
    env.update(new)
    return sorted(new)


def _on_signal(signum, frame):
    raise KeyboardInterrupt


def cmd_run(args):
    env, src = load_run_env()
    if src is not None:
        say(f"settings from {src.relative_to(REPO)} (environment variables override it)")
    state_dir = Path(args.state).resolve() if args.state else RUN_DIR
    other = _read_state() if state_dir == RUN_DIR else None
    if other is not None and other.get("pid") != os.getpid():
        say(f"a stack is already running from {state_dir} (launcher pid {other['pid']}): "
            f"stop it first (Ctrl-C in its terminal, or kill {other['pid']})")
        return 1
    try:
        ports = Ports.from_env(env)
        ports.check_free()
    except StackError as e:
        say(e)
        return 1
    # Each run starts with fresh log files; the database and the broker's
    # persistence are kept between runs (rm -rf .run to start from scratch).
    logs = state_dir / "logs"
    if logs.is_dir():
        for p in logs.glob("*.log"):
            p.unlink()
    # Ctrl-C (even if our parent ignored SIGINT), kill, or a closed terminal:
    # stop everything in order.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    generated = run_secrets(env, state_dir)
    if generated:
        say(f"passwords {', '.join(generated)} from {state_dir / 'secrets.env'} "
            "(generated once; set them in .env to choose your own)")
    sim = not args.no_sim
    if sim and env.get("HAPROXY_TLS_CERT"):
        say("HAPROXY_TLS_CERT is set: sensor-sim speaks plain HTTP only, so it is not started")
        sim = False
    try:
        stack = Stack(state_dir, ports, bin_dir=args.bin, env=env, sim=sim)
    except StackError as e:
        say(e)
        return 1
    state_file = state_dir / "stack.json"
    follower = LogFollower(logs, from_start=True)
    printer = Printer()

    def stream():
        for name, text in follower.poll():
            printer.line(name, text)
        sys.stdout.flush()

    try:
        say(f"starting {', '.join(stack.names)} (state in {state_dir})")
        stack.on_wait = stream  # the services' lines as they start
        try:
            stack.start()
        except StackError as e:
            stream()
            say(f"start failed: {e}")
            return 1
        stack.on_wait = None
        state_file.write_text(json.dumps(stack.state(), indent=2) + "\n")
        stream()
        last = f"{ports.ingestion[-1]}" if len(ports.ingestion) > 1 else ""
        rng = f"{ports.ingestion[0]}" + (f"..{last}" if last else "")
        say("sensorflow is up")
        say(f"  API        {stack.api_url}  (HAProxy -> ingestion-1..{stack.replicas}; legacy POST /)")
        say(f"  replicas   127.0.0.1:{rng}  (GET /healthz, /readyz)")
        for i, url in enumerate(stack.storage_urls):
            name = f"storage-{i + 1}" if i else "storage"
            say(f"  {name:<10} {url}/metrics  (/healthz, /readyz)")
        say(f"  haproxy    {stack.stats_url}/stats, {stack.stats_url}/metrics")
        say(f"  broker     {stack.mqtt_url}")
        say(f"  database   {stack.database_url}  ->  make psql")
        say(f"  logs       {logs}  ->  make logs, make logs SERVICE=ingestion")
        if stack.sim:
            say(f"  sensor-sim {env.get('SIM_SENSORS')} sensors every {env.get('SIM_INTERVAL_S')} s")
        say("following every log below; Ctrl-C stops everything")

        def check():
            for name, rc in stack.unexpected_exits():
                say(f"{name} exited unexpectedly (status {rc}); see {stack.log_path(name)}")

        try:
            follow(follower, printer, stop_check=check)
        except KeyboardInterrupt:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the shutdown finish
        if any(s.alive() for s in stack.services.values()):
            say("stopping (sim, haproxy, ingestion, storage, mosquitto, postgres)")
        codes = stack.stop()
        stream()  # what the services said while stopping
        bad = {n: c for n, c in codes.items()
               if c is not None and c not in stack.services[n].clean_status}
        try:
            state_file.unlink()
        except OSError:
            pass
        if bad:
            say("exit statuses other than 0: " + ", ".join(f"{n}={c}" for n, c in bad.items()))
        say("stopped")
    return 0


def cmd_compose_config(args):
    """Writes compose/haproxy.cfg, or with --check says whether it is current."""
    want = render_haproxy(COMPOSE_HAPROXY)
    have = COMPOSE_HAPROXY_CFG.read_text() if COMPOSE_HAPROXY_CFG.exists() else None
    if args.check:
        if have != want:
            say(f"{COMPOSE_HAPROXY_CFG.relative_to(REPO)} is not the rendering of "
                f"{HAPROXY_TEMPLATE.relative_to(REPO)}: run `make compose-config`")
            return 1
        return 0
    if have != want:
        COMPOSE_HAPROXY_CFG.write_text(want)
        say(f"wrote {COMPOSE_HAPROXY_CFG.relative_to(REPO)}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start the stack, follow its logs, Ctrl-C stops it")
    r.add_argument("--bin", default=str(REPO / "build" / "bin"), help="where the services are")
    r.add_argument("--state", default=None, help="state directory (default .run/)")
    r.add_argument("--no-sim", action="store_true", help="do not start sensor-sim")
    lg = sub.add_parser("logs", help="follow the logs of the running stack")
    lg.add_argument("service", nargs="?", default="",
                    help="one service (ingestion = every replica)")
    sub.add_parser("psql", help="psql on the running stack's database; more arguments go to psql")
    cc = sub.add_parser("compose-config", help="render compose/haproxy.cfg from haproxy/haproxy.cfg.in")
    cc.add_argument("--check", action="store_true", help="only check that it is current")
    args, rest = ap.parse_known_args(argv)
    if rest and args.cmd != "psql":
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return {"run": cmd_run, "logs": cmd_logs, "psql": cmd_psql,
            "compose-config": cmd_compose_config}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
