"""test_sensor_sim.py -- sensor-sim end to end: every reading it reports as
accepted (its --accepted-log) is a row in readings, and its sensors have no
other rows; its due latency counts the wait for a free connection."""

import http.server
import os
import subprocess
import threading
import time

import pytest

from sfhelp import barrier, bin_dir, rows, sim_summary, sql_list, ts_us, wait_for


def read_accepted(path):
    """{(sensor_id, type, ts_us): (value, unit)} from lines
    sensor_id,type,ts,value,unit (a header line is skipped)."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("sensor_id,"):
                continue
            fields = line.split(",")
            assert len(fields) >= 3, f"{path}:{n}: {line!r}"
            key = (fields[0], fields[1], ts_us(fields[2]))
            out[key] = (float(fields[3]) if len(fields) > 3 else None,
                        fields[4] if len(fields) > 4 else None)
    return out


def test_sensor_sim_end_to_end(stack, api):
    sim = stack.bin_dir / "sensor-sim"
    if not os.access(sim, os.X_OK):
        pytest.fail(f"{sim} is missing: build it (make)")
    acc = stack.state_dir / "sim-accepted.csv"
    r = stack.run_sim(["--seed", "42", "--sensors", "5", "--count", "50", "--interval", "0.2",
                       "--accepted-log", acc], timeout=180)
    assert r.returncode == 0, f"sensor-sim exited {r.returncode}:\n{r.stdout[-3000:]}"
    accepted = read_accepted(acc)
    assert accepted, f"{acc} is empty; sensor-sim said:\n{r.stdout[-2000:]}"
    sensors = sorted({k[0] for k in accepted})
    scope = f"sensor_id in {sql_list(sensors)}"

    def stored():
        return {(x["sensor_id"], x["type"], x["ts_us"]): x for x in rows(stack, scope)}

    wait_for(lambda: set(accepted) <= set(stored()), 60,
             f"the {len(accepted)} accepted readings of sensor-sim stored")
    barrier(stack, api)
    got = stored()
    assert set(got) == set(accepted), f"rows not in the accepted log: {sorted(set(got) - set(accepted))[:10]}"
    for key, (value, unit) in accepted.items():
        if value is not None:
            assert got[key]["raw_value"] == pytest.approx(value, rel=1e-9, abs=1e-6), key
        if unit:
            assert got[key]["raw_unit"] == unit, key


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST 202 after 50 ms, one keep-alive connection at a
    time: 20 requests/s at most."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.05)
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_due_latency_counts_the_wait_for_a_connection(tmp_path):
    """Load mode at 100 readings/s over one connection to a server that
    takes 50 ms a request: each attempt takes about 50 ms, but the requests
    queue behind each other, and the k-th is answered no sooner than
    (k + 1) x 50 ms after the start while it was due at k x 10 ms. The due
    latency must show that wait (at the median, request 20 of 40: >= 850 ms);
    the attempt latency alone would hide it."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _SlowHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1/readings"
        r = subprocess.run([str(bin_dir() / "sensor-sim"), "--url", url, "--rate", "100",
                            "--count", "40", "--connections", "1", "--sensors", "1",
                            "--stats-interval", "0"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={k: v for k, v in os.environ.items() if not k.startswith("SIM_")})
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 0, r.stderr[-2000:]
    s = sim_summary(r.stderr)
    assert s.get("accepted") == "40", r.stderr[-2000:]
    attempt_p50, due_p50 = float(s["p50_ms"]), float(s["due_p50_ms"])
    assert due_p50 >= 500, s
    assert due_p50 >= 5 * attempt_p50, s
