"""Who may do what (README: Security): the broker's users and ACLs, and the
database roles. Each check is made with the real client tools
(mosquitto_pub/mosquitto_sub, psql) against the stack's real servers."""

import json
import os
import re
import subprocess
import uuid

from sfhelp import Api, now_us, rfc3339, rows, wait_for

READINGS = "sensorflow/v1/readings"
STORED = "sensorflow/v1/stored"


def mqtt(stack, tool, *args, user=None, password=None, timeout=20):
    argv = [f"/usr/bin/{tool}", "-h", "127.0.0.1", "-p", str(stack.ports.mqtt), "-V", "mqttv5"]
    if user:
        argv += ["-u", user, "-P", password]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)


def pw(stack, user):
    return stack.secrets[f"MQTT_{user.upper()}_PASSWORD"]


def reading_message(sensor):
    """A message exactly as ingestion would publish it."""
    t = now_us()
    return json.dumps({"v": 1, "by": "intruder", "readings": [{
        "sensor_id": sensor, "type": "temperature", "ts_us": t, "value": 1.0, "unit": "C",
        "raw_value": 1.0, "raw_unit": "C", "received_at_us": t}]})


def barrier(stack):
    """Posts a reading and waits until it is stored: whatever was published
    before it has had its chance to be stored too."""
    sensor = f"barrier-{uuid.uuid4().hex[:8]}"
    a = Api("127.0.0.1", stack.ports.http).post("/v1/readings", {
        "sensor_id": sensor, "type": "humidity", "value": 50, "unit": "%",
        "ts": rfc3339(now_us())})
    assert a.status == 202, a
    wait_for(lambda: rows(stack, f"sensor_id = '{sensor}'"), what="the barrier reading stored")


# --- MQTT ---------------------------------------------------------------------

def test_anonymous_and_wrong_password_are_refused(stack):
    r = mqtt(stack, "mosquitto_pub", "-t", f"{READINGS}/x", "-m", "{}")
    assert r.returncode != 0 and "not authori" in r.stderr.lower(), r
    r = mqtt(stack, "mosquitto_pub", "-t", f"{READINGS}/x", "-m", "{}",
             user="ingestion", password="not-the-password")
    assert r.returncode != 0 and "not authori" in r.stderr.lower(), r
    r = mqtt(stack, "mosquitto_sub", "-t", "#", "-C", "1", "-W", "3")
    assert r.returncode != 0 and "not authori" in r.stderr.lower(), r


def test_storage_cannot_publish_readings(stack):
    sensor = f"forged-{uuid.uuid4().hex[:8]}"
    r = mqtt(stack, "mosquitto_pub", "-q", "1", "-t", f"{READINGS}/intruder",
             "-m", reading_message(sensor), user="storage", password=pw(stack, "storage"))
    assert "not authorized" in r.stderr.lower(), r   # the v5 PUBACK's reason code
    barrier(stack)
    assert rows(stack, f"sensor_id = '{sensor}'") == []
    # Ingestion's own credentials could (that is what they are for): the
    # same message is stored, so the check above can fail.
    r = mqtt(stack, "mosquitto_pub", "-q", "1", "-t", f"{READINGS}/intruder",
             "-m", reading_message(sensor), user="ingestion", password=pw(stack, "ingestion"))
    assert r.returncode == 0 and not r.stderr, r
    wait_for(lambda: rows(stack, f"sensor_id = '{sensor}'"), what="ingestion's publication stored")


def test_ingestion_cannot_forge_confirmations(stack):
    r = mqtt(stack, "mosquitto_pub", "-q", "1", "-t", f"{STORED}/ingestion-1", "-m",
             "0123456789abcdef", user="ingestion", password=pw(stack, "ingestion"))
    assert "not authorized" in r.stderr.lower(), r


def test_ingestion_cannot_read_readings(stack):
    """mosquitto 2.0 grants any SUBSCRIBE and filters each delivery by the
    ACL, so the proof is what arrives: a subscriber with storage's rights
    (read) gets the reading, one with ingestion's gets nothing."""
    tag = uuid.uuid4().hex[:8]
    since = stack.mosquitto_log_size()
    subs = {}
    for user in ("ingestion", "storage"):
        argv = ["/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", str(stack.ports.mqtt),
                "-V", "mqttv5", "-u", user, "-P", pw(stack, user), "-i", f"probe-{user}-{tag}",
                "-t", f"{READINGS}/#", "-C", "1", "-W", "20"]
        subs[user] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    try:
        for user in subs:   # both subscriptions are in place (mosquitto logs them)
            pat = rf"^\S+: probe-{user}-{tag} 0 {re.escape(READINGS)}/#"
            wait_for(lambda: stack._mosquitto_log_has(since, pat), what=f"{user} subscribed")
        sensor = f"probe-{tag}"
        a = Api("127.0.0.1", stack.ports.http).post("/v1/readings", {
            "sensor_id": sensor, "type": "humidity", "value": 50, "unit": "%"})
        assert a.status == 202, a
        out, err = subs["storage"].communicate(timeout=30)
        assert subs["storage"].returncode == 0 and sensor in out, (out, err)
        out, err = subs["ingestion"].communicate(timeout=30)
        assert sensor not in out, out
    finally:
        for p in subs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


# --- PostgreSQL -------------------------------------------------------------------

def psql_as(stack, role, sql):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = str(stack.secrets_dir / "pgpass")
    return subprocess.run(["/usr/lib/postgresql/15/bin/psql", "-X", "-At", "-h", "127.0.0.1",
                           "-p", str(stack.ports.pg), "-U", role, "-d", "sensorflow",
                           "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, env=env, timeout=30)


def test_storage_role_can_insert_and_nothing_more(stack):
    sensor = f"role-{uuid.uuid4().hex[:8]}"
    ins = psql_as(stack, "sensorflow_storage",
                  "insert into readings (sensor_id, type, ts, value, unit, raw_value, raw_unit, "
                  f"received_at, ingested_by) values ('{sensor}', 'humidity', now(), 1, '%', 1, "
                  "'%', now(), 'test') on conflict do nothing")
    assert ins.returncode == 0, ins.stderr
    assert len(rows(stack, f"sensor_id = '{sensor}'")) == 1
    for sql, why in ((f"delete from readings where sensor_id = '{sensor}'", "permission denied"),
                     ("update readings set value = 0", "permission denied"),
                     ("select count(*) from readings", "permission denied"),
                     ("truncate readings", "permission denied"),
                     ("drop table readings", "must be owner"),
                     ("delete from dead_letters", "permission denied"),
                     ("create table evil (x int)", "permission denied")):
        r = psql_as(stack, "sensorflow_storage", sql)
        assert r.returncode != 0 and why in r.stderr, (sql, r.stderr)
    assert len(rows(stack, f"sensor_id = '{sensor}'")) == 1


def test_superuser_is_not_reachable_over_tcp(stack):
    r = psql_as(stack, "sensorflow", "select 1")
    assert r.returncode != 0 and "rejects connection" in r.stderr, r.stderr
    r = psql_as(stack, "sensorflow_storage", "select 1")   # the role itself can log in
    assert r.returncode == 0, r.stderr


def test_no_secret_in_the_logs(stack):
    values = [v for v in stack.secrets.values()]
    for name in stack.names:
        text = stack.log_path(name).read_text(errors="replace")
        for v in values:
            assert v not in text, f"a password appears in {name}'s log"
