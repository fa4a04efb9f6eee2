#!/usr/bin/python3
"""bench.py -- sensorflow's benchmark (`make bench`): what this machine can
pass, and how close the pipeline comes, measured in one run so that the
ratios compare like with like.

Scenarios (each BENCH_SECONDS long after a warm-up):
  generator  sensor-sim -> a do-nothing server, no HAProxy: what the load
             generator alone can offer
  ceiling    sensor-sim -> HAProxy -> a do-nothing server answering 202
             (--ceiling-servers: one passes 15-22% more than two)
  single     sensor-sim (1 reading per POST) -> HAProxy -> 2 ingestion ->
             mosquitto -> 2 storage (--storage) -> PostgreSQL, as fast as it
             goes
  batch      the same, 100 readings per POST
  half       single at half of single's rate, open loop (--rate): latency;
             run before batch, so that batch's burst is not in its figures
  floor      the ceiling's path (HAProxy -> do-nothing server) at half's
             rate, open loop: the latency this machine gives any service
             behind HAProxy at that rate, for comparison with half's
  paired     single and ceiling again, 5 alternating rounds of 4 s with both
             stacks up: the single / ceiling ratio the target is checked on
             (the machine's speed drifts between the two 10 s runs)
  db         batch's rows again, straight into a fresh copy of the readings
             table (a COPY of 10000 rows a transaction, one session a CPU
             at once): the database's own ceiling
  paired-db  batch and db again, 5 alternating rounds (batch for 5 s, db on
             its rows): the batch / db ratio the target is checked on (db's
             own run lasts a few seconds, and the machine's speed drifts)
  scaling    single again with 1 and 3 ingestion replicas (--replicas), each
             on a stack of its own: how throughput follows the replicas

For each: readings/s answered 202, rows/s committed, POST latency
p50/p99/p99.9 (sensor-sim; per attempt, and for half also from when each
request was due by the schedule, waits for a free connection included),
stored_at - received_at p50/p99 (the database), the lag to drain after the
load stops, CPU seconds per 1000 readings and peak RSS of each service, and
whether rows = readings answered 202.

Output: a table on stdout, bench/results/<time>.json, and
bench/results/<time>.png (gnuplot: throughput and latency over time of the
single and batch runs) when gnuplot is installed.

    bench.py [--bin build/bin] [--seconds 10] [--only single,batch]
             [--replicas 1,3] [--storage 2] [--env INGESTION_MAX_UNCONFIRMED=2 ...]
             [--keep]
             [--only half --half-rate 5000]
"""

import argparse
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import stack as stackmod  # noqa: E402

RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A fall of the dirty pages this large during half is said beside its p99
# (run_sim): PostgreSQL's WAL and the like make falls of a few MiB.
WRITEBACK_MIB = 32
TARGETS = ("single >= 0.6 x ceiling; batch >= 0.5 x db; "
           "half: p99 POST (from due) <= 10 ms, p99 stored lag <= 100 ms")


def say(msg):
    print(f"bench: {msg}", flush=True)


# --- what the processes cost -------------------------------------------------------

def _stat(pid):
    """(parent pid, CPU seconds of the process and of its reaped children)
    of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[1]), sum(int(x) for x in rest[11:15]) / CLK_TCK


def tree_cpu(root):
    """CPU seconds of a service and all its live descendants (PostgreSQL's
    backends call setsid(), so a session id does not find them). A child
    that already exited is in its parent's cutime/cstime once reaped."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(d)
            if st:
                stats[int(d)] = st
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo += children.get(pid, [])
    return total


def proc_kib(path, key):
    """The kB figure of the line `key: N kB` of a /proc file (0: none, or
    the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def dirty_kib():
    """The page cache's dirty pages, machine-wide."""
    return proc_kib("/proc/meminfo", "Dirty")


def peak_rss_kib(pid):
    return proc_kib(f"/proc/{pid}/status", "VmHWM")


def reset_peak_rss(pid):
    try:  # 5: reset the peak RSS (VmHWM) to the current RSS
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def machine_ticks():
    """(busy, all) CPU time of the whole machine so far, in clock ticks
    (/proc/stat: user, nice, system, idle, iowait, irq, softirq, steal;
    guest time is counted in user already)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


class Meter:
    """CPU and peak RSS of named processes over one scenario, and how busy
    the whole machine was meanwhile (vCPUs' worth, the kernel's interrupt
    work and every other process included). record(r) puts both in the
    scenario's result r."""

    def __init__(self, pids):
        self.pids = pids  # {name: pid}
        for pid in pids.values():
            reset_peak_rss(pid)
        self.cpu0 = {n: tree_cpu(p) for n, p in pids.items()}
        self.ticks0 = machine_ticks()

    def record(self, r):
        r["services"] = {n: {"cpu_s": tree_cpu(p) - self.cpu0[n], "peak_rss_kib": peak_rss_kib(p)}
                         for n, p in self.pids.items()}
        busy, total = (b - a for a, b in zip(self.ticks0, machine_ticks()))
        r["busy_cpus"] = (os.cpu_count() or 1) * busy / total if total else 0.0
        return r


# --- the load generator --------------------------------------------------------------

def run_sim(bin_dir, url, seconds, rate, connections, batch, stats_interval=1.0, cwd=None):
    """Runs sensor-sim in load mode to its end. Returns its sim.summary
    fields, its sim.stats lines (for the plot), its own CPU and peak RSS
    (from wait4), and the wall-clock window it ran in (run_rows).

    Its readings carry no tags, as sensor-sim's by default: the ceiling and
    the pipeline get the same requests, and a run's rows are told apart by
    when they were received instead."""
    if seconds <= 0:   # --warmup 0; sensor-sim's --duration 0 would never end
        return {"summary": {}, "stats": [], "status": 0, "cpu_s": 0.0, "peak_rss_kib": 0,
                "window": (0.0, 0.0), "writeback_kib": 0}
    argv = [str(bin_dir / "sensor-sim"), "--url", url, "--rate", str(rate),
            "--connections", str(connections), "--batch", str(batch), "--duration", str(seconds),
            "--sensors", "1000", "--stats-interval", str(stats_interval), "--drain-timeout", "30"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
    env["LOG_LEVEL"] = "info"
    with tempfile.TemporaryFile() as out:
        t0 = time.time()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             stdin=subprocess.DEVNULL)
        # The peak RSS from VmHWM while it runs: wait4's ru_maxrss also
        # counts the memory of the (Python) process it was forked from.
        # And the largest fall of the dirty pages: the kernel writes a
        # file's dirty pages back 30 s after they were first dirtied, 35-135
        # MB at once in these runs, and PostgreSQL's commits wait behind
        # them (bench/NOTES.md, 2026-12-07 from 14:47): a run that holds one
        # has a second of slower answers that a 10 s run may or may not hold.
        peak = 0
        d_max, d_fall = dirty_kib(), 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_kib(p.pid))
            d = dirty_kib()
            d_max = max(d_max, d)
            d_fall = max(d_fall, d_max - d)
            time.sleep(0.2)
        t1 = time.time()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    summary, stats = {}, []
    for line in text.splitlines():
        if " sim.summary " in line:
            summary = dict(kv.split("=", 1) for kv in line.split(" sim.summary ", 1)[1].split()
                           if "=" in kv)
        elif " sim.stats " in line:
            kv = dict(x.split("=", 1) for x in line.split(" sim.stats ", 1)[1].split() if "=" in x)
            stats.append(kv)
    if not summary:
        raise RuntimeError(f"sensor-sim gave no summary (status {p.returncode}):\n{text[-2000:]}")
    return {"summary": summary, "stats": stats, "status": p.returncode,
            "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_kib": peak, "window": (t0, t1),
            "writeback_kib": d_fall}


def run_rows(window):
    """The SQL condition for one run's rows: received (ingestion's clock, this
    machine's) while its sensor-sim ran. The runs on a stack follow one
    another, so a reading answered 202 was received inside its own run's
    window and inside no other's; a warm-up's rows were all received before
    the run after it started."""
    t0, t1 = window
    return f"received_at between to_timestamp({t0:.6f}) and to_timestamp({t1:.6f})"


def sim_result(sim, name):
    s = sim["summary"]
    accepted = int(s["accepted"])
    elapsed = float(s["elapsed_s"])
    return {
        "scenario": name,
        "accepted": accepted,
        # failed: given up on after retries; unsent: still queued in the
        # sim when its time ran out (never sent, so neither lost nor failed).
        "failed": int(s.get("failed", 0)),
        "unsent": int(s.get("unsent", 0)),
        "elapsed_s": elapsed,
        "readings_per_s": accepted / elapsed if elapsed > 0 else 0.0,
        "post_ms": {"p50": float(s["p50_ms"]), "p99": float(s["p99_ms"]),
                    "p99.9": float(s["p999_ms"])},
        # From when each request was due by the schedule to its 2xx (waits
        # for a connection included): the open-loop latency. Meaningless in
        # a saturating run, whose schedule runs ahead.
        "due_ms": {"p50": float(s["due_p50_ms"]), "p99": float(s["due_p99_ms"]),
                   "p99.9": float(s["due_p999_ms"])},
        "sim": {"cpu_s": sim["cpu_s"], "peak_rss_kib": sim["peak_rss_kib"]},
        "window": sim["window"],
        # The dirty pages written back at once while it ran (see run_sim).
        "writeback_mib": sim["writeback_kib"] / 1024,
        "series": [{"t": i + 1, "rate": float(x.get("rate", 0)), "p50_ms": float(x.get("p50_ms", 0)),
                    "p99_ms": float(x.get("p99_ms", 0))} for i, x in enumerate(sim["stats"])],
    }


# --- scenarios ---------------------------------------------------------------------------

def null_servers(bin_dir, ports, delay_us=0):
    extra = [str(delay_us)] if delay_us else []
    procs = [subprocess.Popen([str(bin_dir / "bench-null-server"), str(p), *extra])
             for p in ports]
    for p in ports:
        deadline = time.monotonic() + 10
        while not stackmod.port_accepts(p):
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench-null-server did not listen on {p}")
            time.sleep(0.05)
    return procs


def scenario_generator(args):
    """sensor-sim straight at one do-nothing server."""
    (port,) = stackmod.Ports.free(1).ingestion
    procs = null_servers(args.bin, [port])
    try:
        url = f"http://127.0.0.1:{port}/v1/readings"
        run_sim(args.bin, url, args.warmup, 1e6, args.connections, 1)
        meter = Meter({"null-server": procs[0].pid})
        r = sim_result(run_sim(args.bin, url, args.seconds, 1e6, args.connections, 1),
                       "generator")
        return meter.record(r)
    finally:
        for p in procs:
            p.kill()
            p.wait()


EXTRA_ENV = {}  # --env K=V: settings to try, given to every service


def bench_env():
    """The services' environment: the defaults, except the limits that exist
    to stop one client from flooding, which is what the benchmark does from
    one address with a few sensors."""
    env = {k: v for k, v in os.environ.items() if k not in stackmod.SERVICE_VARS}
    env.update(RATE_LIMIT_PER_ADDRESS="0", HAPROXY_TLS_CERT="",
               INGESTION_RATE_PER_SENSOR="0")
    env.update(EXTRA_ENV)
    return env


@contextlib.contextmanager
def ceiling_stack(args, state_dir):
    """HAProxy (the pipeline's configuration) in front of
    --ceiling-servers do-nothing servers; yields (stack, null server
    processes)."""
    ports = stackmod.Ports.free(args.ceiling_servers)
    st = stackmod.Stack(state_dir, ports, bin_dir=args.bin, env=bench_env())
    procs = null_servers(args.bin, ports.ingestion, args.null_delay_us)
    try:
        st.logs_dir.mkdir(parents=True, exist_ok=True)
        st.start_service("haproxy")
        yield st, procs
    finally:
        st.stop()
        for p in procs:
            p.kill()
            p.wait()


def servers(args):
    n = args.ceiling_servers
    return "a do-nothing server" if n == 1 else f"{n} do-nothing servers"


def scenario_ceiling(args, tmp, rate=1e6, name="ceiling"):
    """sensor-sim -> HAProxy -> do-nothing server(s), as fast as it goes; or,
    as floor, at the half scenario's rate, open loop: what the machine itself
    (sensor-sim, HAProxy, a server that does nothing) adds to a POST's
    latency at that rate."""
    with ceiling_stack(args, tmp / name) as (st, procs):
        run_sim(args.bin, st.api_url, args.warmup, rate, args.connections, 1)
        meter = Meter({"haproxy": st.services["haproxy"].pid,
                       **{f"null-server-{i}": p.pid for i, p in enumerate(procs, 1)}})
        r = sim_result(run_sim(args.bin, st.api_url, args.seconds, rate, args.connections, 1),
                       name)
        meter.record(r)
        r["open_loop"] = rate < 1e6
        return r


def scenario_paired(args, tmp, pipe, rounds=5, seconds=4.0):
    """single / ceiling once more, as short alternating rounds with both
    stacks up: the machine is shared, and its speed drifts by 10-25% over
    a minute or two, so two runs a minute apart compare the machine as much
    as the pipeline. Each round runs ceiling and single back to back (in turn
    first), and gives one ratio of 202s per second; single's readings are
    checked for loss like any run's."""
    out = {"rounds": [], "lost": 0, "seconds": seconds}
    with ceiling_stack(args, tmp / "paired") as (ceil, _):
        run_sim(args.bin, ceil.api_url, 1, 1e6, args.connections, 1)
        for i in range(rounds):
            got = {}
            order = ("ceiling", "single") if i % 2 == 0 else ("single", "ceiling")
            for side in order:
                url = ceil.api_url if side == "ceiling" else pipe.api_url
                got[side] = sim_result(run_sim(args.bin, url, seconds, 1e6, args.connections, 1),
                                       side)
            _, rows = wait_drained(pipe, got["single"]["window"], got["single"]["accepted"])
            out["lost"] += max(0, got["single"]["accepted"] - rows)
            c, s = got["ceiling"]["readings_per_s"], got["single"]["readings_per_s"]
            out["rounds"].append({"ceiling": c, "single": s, "ratio": s / c if c else 0.0})
    return out


def pipeline_pids(st):
    names = ["haproxy", "mosquitto", "postgres"] + \
            [n for n in st.names if n.startswith(("ingestion-", "storage"))]
    return {n: st.services[n].pid for n in names}


def wait_drained(st, window, accepted, timeout=120):
    """Seconds until the rows of the run in `window` reach `accepted` (or
    timeout); returns (seconds, rows)."""
    t0 = time.monotonic()
    rows = 0
    while time.monotonic() - t0 < timeout:
        rows = int(st.psql(f"select count(*) from readings where {run_rows(window)}")[0][0])
        if rows >= accepted:
            break
        time.sleep(0.1)
    return time.monotonic() - t0, rows


def storage_counters(st):
    """The committed messages and the seconds spent committing them, summed
    over the storage replicas' /metrics."""
    out = {"messages": 0.0, "commit_s": 0.0}
    for url in st.storage_urls:
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("sf_batch_rows_count"):
                out["messages"] += float(line.split()[-1])
            elif line.startswith("sf_commit_latency_seconds_sum"):
                out["commit_s"] += float(line.split()[-1])
    return out


def scenario_pipeline(args, st, name, batch, rate=1e6, connections=None):
    # 100 readings a POST: fewer connections carry many times the readings
    # of the single run, with sensor-sim's memory in bounds.
    conns = connections or (args.connections if batch == 1 else args.batch_connections)
    run_sim(args.bin, st.api_url, args.warmup, rate, conns, batch)
    meter = Meter(pipeline_pids(st))
    c0 = storage_counters(st)
    sim = run_sim(args.bin, st.api_url, args.seconds, rate, conns, batch)
    r = sim_result(sim, name)
    r["open_loop"] = rate < 1e6     # paced below capacity: the due latency means something
    r["drain_s"], _ = wait_drained(st, r["window"], r["accepted"])
    meter.record(r)
    c1 = storage_counters(st)
    msgs = c1["messages"] - c0["messages"]
    # How the readings travelled: MQTT messages (one commit each) and their size.
    r["messages"] = int(msgs)
    r["readings_per_message"] = r["accepted"] / msgs if msgs else 0.0
    r["commit_ms"] = 1000 * (c1["commit_s"] - c0["commit_s"]) / msgs if msgs else 0.0
    stored_figures(st, r)
    return r


def stored_figures(st, r):
    """Adds to the run r (a sim_result, drained: wait_drained) what the
    database says of its rows: rows, rows_per_s, stored_lag_ms, lost and
    extra."""
    q = st.psql(
        "select count(*), "
        "coalesce(extract(epoch from max(stored_at) - min(received_at)), 0), "
        "coalesce(1000 * extract(epoch from percentile_cont(0.5) within group "
        "(order by stored_at - received_at)), 0), "
        "coalesce(1000 * extract(epoch from percentile_cont(0.99) within group "
        "(order by stored_at - received_at)), 0) "
        f"from readings where {run_rows(r['window'])}")[0]
    rows, span, lag50, lag99 = int(q[0]), float(q[1]), float(q[2]), float(q[3])
    r["rows"] = rows
    r["rows_per_s"] = rows / span if span > 0 else 0.0
    r["stored_lag_ms"] = {"p50": lag50, "p99": lag99}
    # Nothing lost: every reading answered 202 is a row. (A reading the sim
    # gave up on may be stored too: at most `failed` more.)
    r["lost"] = max(0, r["accepted"] - rows)
    r["extra"] = max(0, rows - r["accepted"])


def scenario_scaling(args, tmp, replicas):
    """single again, on a stack of its own with `replicas` ingestion
    replicas: how throughput follows the replica count."""
    st = stackmod.Stack(tmp / f"scaling-{replicas}",
                        stackmod.Ports.free(replicas, storages=args.storage),
                        bin_dir=args.bin, env=bench_env())
    st.start()
    try:
        r = scenario_pipeline(args, st, f"single-{replicas}r", 1)
    finally:
        st.stop()
    r["replicas"] = replicas
    return r


DB_COLS = "sensor_id, type, ts, value, unit, raw_value, raw_unit, tags, received_at, ingested_by"


def db_chunks(st, source, n_rows, tag="db"):
    """The rows the run `source` (its result) stored, or n_rows made up like
    them when there is none, as CSV files of 10000 rows (one transaction
    each in db_copy) under the stack's folder, written before any clock
    starts. Returns their paths and the number of rows."""
    chunk = 10000
    src = st.state_dir / f"bench-{tag}.csv"
    if source and source["rows"]:   # counted by stored_figures when it ran
        st.psql(f"\\copy (select {DB_COLS} from readings where {run_rows(source['window'])}) "
                f"to '{src}' csv")
    else:
        t_base = time.time() - 3600
        with open(src, "w") as f:
            for i in range(n_rows):
                # One reading a microsecond, in the form PostgreSQL reads.
                ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_base + i // 1000000))
                ts += f".{i % 1000000:06d}+00"
                f.write(f"{uuid.UUID(int=i % 1000)},temperature,{ts},21.5,C,21.5,C,,{ts},bench\n")
    paths, n_lines = [], 0
    with open(src) as f:   # in chunks: the batch run's rows are 100+ MB
        while True:
            part = list(itertools.islice(f, chunk))
            if not part:
                break
            paths.append(st.state_dir / f"bench-{tag}-{len(paths)}.csv")
            paths[-1].write_text("".join(part))
            n_lines += len(part)
    src.unlink()
    return paths, n_lines


def db_copy(st, paths, n_lines):
    """The chunks in `paths` straight into a fresh copy of the readings
    table (its indexes included), shared out over one psql session a CPU,
    all sessions at once; the files are removed after. Returns the db
    result."""
    st.psql("drop table if exists bench_db; create table bench_db (like readings including all)")
    # At most 32: PostgreSQL takes 100 connections by default, and storage's
    # and psql's need some.
    sessions = min(os.cpu_count() or 1, 32)
    bodies = [["\\set ON_ERROR_STOP 1"] for _ in range(sessions)]
    for i, path in enumerate(paths):
        bodies[i % sessions] += ["begin;", f"\\copy bench_db ({DB_COLS}) from '{path}' csv",
                                 "commit;"]
    meter = Meter({"postgres": st.services["postgres"].pid})
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda b: st.psql("\n".join(b), timeout=600), bodies))
    elapsed = time.monotonic() - t0
    rows = int(st.psql("select count(*) from bench_db")[0][0])
    st.psql("drop table bench_db")
    for path in paths:
        path.unlink()
    return meter.record({"scenario": "db", "accepted": n_lines, "rows": rows,
                         "elapsed_s": elapsed, "readings_per_s": rows / elapsed,
                         "rows_per_s": rows / elapsed, "lost": n_lines - rows, "extra": 0,
                         "failed": 0})


def scenario_db(args, st, source, n_rows):
    """The same rows, straight into PostgreSQL, the fastest dedup insert we
    know: per 10000 rows one transaction with a COPY straight into a fresh
    copy of the readings table (its indexes included), the chunks shared out
    over one psql session a CPU, all sessions at once. A COPY inserts as a
    plain INSERT does, as storage tries first: the primary key refuses a
    duplicate, and only then does storage insert again with ON CONFLICT DO
    NOTHING, which probes the index once more per row (storage/db.c); these
    rows come from a table keyed on them, so they hold none, and the
    sessions' chunks hold different keys, so no session waits for another.
    One session a CPU (at most 32): the database's ceiling is what it does
    with the whole machine, as batch's two storage processes keep two
    backends at work; with one session, the pipeline's batch outran this
    "ceiling" on the AMD host (bench/NOTES.md, 2026-12-06 from 21:42). The
    rows are the ones the run `source` (its result) stored (or n_rows made
    up like them when there is none), written to CSV files before the clock
    starts."""
    return db_copy(st, *db_chunks(st, source, n_rows))


def sustained(r):
    """What a scenario moves end to end: readings answered 202 per second,
    but no more than the rows committed per second."""
    return min(r["readings_per_s"], r.get("rows_per_s", r["readings_per_s"]))


def scenario_paired_db(args, st, rounds=5, seconds=5.0):
    """batch / db once more, as short alternating rounds: db's own run lasts
    a few seconds, and the machine's speed drifts by a fifth or more within
    a minute, so one db run beside one batch run compared the minutes as
    much as the pipeline (batch / db 0.41-0.80 over ten runs on 2026-12-07,
    db itself 196-298k rows/s). Each round runs batch for `seconds` and db
    on that batch's rows, back to back, in turn first (a round that starts
    with db copies the previous round's rows, the same in kind and number);
    each gives one ratio of sustained readings per second (min of 202/s and
    rows/s), and batch's readings are checked for loss like any run's."""
    out = {"rounds": [], "lost": 0, "seconds": seconds}
    conns = args.batch_connections
    prev = None
    for i in range(rounds):
        got = {}
        # Round 0 starts with batch, so prev is set before a round starts with db.
        for side in ("batch", "db") if i % 2 == 0 else ("db", "batch"):
            if side == "db":
                got["db"] = db_copy(st, *db_chunks(st, got.get("batch") or prev, 0, "paired"))
                continue
            r = sim_result(run_sim(args.bin, st.api_url, seconds, 1e6, conns, 100), "batch")
            r["drain_s"], _ = wait_drained(st, r["window"], r["accepted"])
            stored_figures(st, r)
            out["lost"] += r["lost"]
            got["batch"] = prev = r
        b, d = sustained(got["batch"]), sustained(got["db"])
        out["rounds"].append({"batch": b, "db": d, "ratio": b / d if d else 0.0})
    return out


# --- report ---------------------------------------------------------------------------------

def fmt_table(results, ratios):
    cols = ["scenario", "readings/s", "rows/s", "POST p50/p99/p99.9 ms", "from due p50/p99 ms",
            "stored p50/p99 ms",
            "drain s", "lost", "readings/msg, commit ms", "CPU s/1000 (ingestion [do-nothing server(s)], storage, haproxy, mosquitto, postgres, sim)",
            "vCPUs busy", "peak RSS MiB (ingestion, storage, sim)"]
    lines = []
    for r in results:
        svc = r.get("services", {})
        n = max(r.get("accepted", 0), 1) / 1000.0

        def cpu(prefix):
            v = sum(x["cpu_s"] for k, x in svc.items() if k.startswith(prefix))
            return f"{v / n:.3f}" if any(k.startswith(prefix) for k in svc) else "-"

        def ingestion_cpu():
            """ingestion's, or in brackets the do-nothing server(s)' in its place
            (generator, ceiling, floor): what the pipeline's own work costs is
            the difference."""
            if any(k.startswith("ingestion") for k in svc) or \
                    not any(k.startswith("null-server") for k in svc):
                return cpu("ingestion")
            return f"[{cpu('null-server')}]"

        def rss(prefix):
            v = [x["peak_rss_kib"] for k, x in svc.items() if k.startswith(prefix)]
            return f"{max(v) / 1024:.1f}" if v else "-"
        post = r.get("post_ms")
        due = r.get("due_ms") if r.get("open_loop") else None
        lag = r.get("stored_lag_ms")
        sim = r.get("sim")
        lines.append([
            r["scenario"], f"{r['readings_per_s']:.0f}",
            f"{r['rows_per_s']:.0f}" if "rows_per_s" in r else "-",
            f"{post['p50']:.2f}/{post['p99']:.2f}/{post['p99.9']:.2f}" if post else "-",
            f"{due['p50']:.2f}/{due['p99']:.2f}" if due else "-",
            f"{lag['p50']:.1f}/{lag['p99']:.1f}" if lag else "-",
            f"{r['drain_s']:.1f}" if "drain_s" in r else "-",
            str(r.get("lost", "-")),
            f"{r['readings_per_message']:.1f}, {r['commit_ms']:.2f}" if r.get("messages") else "-",
            ", ".join([ingestion_cpu(), cpu("storage"), cpu("haproxy"), cpu("mosquitto"),
                       cpu("postgres"), f"{sim['cpu_s'] / n:.3f}" if sim else "-"]),
            f"{r['busy_cpus']:.2f}" if "busy_cpus" in r else "-",
            ", ".join([rss("ingestion"), rss("storage"),
                       f"{sim['peak_rss_kib'] / 1024:.1f}" if sim else "-"]),
        ])
    widths = [max([len(c)] + [len(x[i]) for x in lines]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(x, widths)) for x in lines]
    out.append("")
    for k, (v, target, ok) in ratios.items():
        mark = "" if ok is None else ("  ok" if ok else "  BELOW TARGET")
        out.append(f"{k}: {v}{' (target ' + target + ')' if target else ''}{mark}")
    return "\n".join(out)


def paired_median(rounds):
    """The median round's ratio, and every round's, sorted."""
    rs = sorted(x["ratio"] for x in rounds)
    return rs[len(rs) // 2], rs


def ratios_of(by, paired=None, paired_db=None):
    out = {}

    def ratio(a, b, target, name):
        if a in by and b in by and sustained(by[b]) > 0:
            v = sustained(by[a]) / sustained(by[b])
            # Three decimals, as the paired median below: 0.4991 printed as
            # 0.50 next to "BELOW TARGET" read as a bug (2026-12-06).
            out[name] = (f"{v:.3f}", f">= {target}" if target else "", v >= target if target else None)
    if paired and paired["rounds"]:
        med, rs = paired_median(paired["rounds"])
        # Three decimals: 0.597 printed as 0.60 next to "BELOW TARGET" reads as a bug.
        out["single / ceiling (paired rounds, median)"] = (
            f"{med:.3f} (rounds: {', '.join(f'{x:.3f}' for x in rs)})", ">= 0.6", med >= 0.6)
        if "single" in by and "ceiling" in by:
            ratio("single", "ceiling", None, "single / ceiling (their own runs above)")
    else:
        ratio("single", "ceiling", 0.6, "single / ceiling (sustained: min of 202/s and rows/s)")
    if paired_db and paired_db["rounds"]:
        med, rs = paired_median(paired_db["rounds"])
        out["batch / db (paired rounds, median)"] = (
            f"{med:.3f} (rounds: {', '.join(f'{x:.3f}' for x in rs)})", ">= 0.5", med >= 0.5)
        ratio("batch", "db", None, "batch / db (their own runs above)")
    else:
        ratio("batch", "db", 0.5, "batch / db (sustained)")
    ratio("generator", "single", 1.5, "generator / single (the load generator's headroom)")
    if "half" in by:
        h = by["half"]
        # Checked on the latency from when each request was due: waits for
        # a free connection count (see sensor-sim's README).
        # How busy the machine was says how much of the p99 is waiting for
        # a CPU: the pipeline's and the do-nothing path's at the same rate.
        floor = by.get("floor")
        out["half-rate p99 POST ms, from due"] = (
            f"{h['due_ms']['p99']:.2f} (per attempt: {h['post_ms']['p99']:.2f}"
            f"; vCPUs busy {h['busy_cpus']:.2f} of {os.cpu_count()}"
            + (f"; the ceiling's path at that rate: {floor['due_ms']['p99']:.2f}, "
               f"vCPUs busy {floor['busy_cpus']:.2f}" if floor else "")
            + (f"; {h['writeback_mib']:.0f} MiB of dirty pages written back at once during it"
               if h["writeback_mib"] >= WRITEBACK_MIB else "")
            + ")", "<= 10", h["due_ms"]["p99"] <= 10)
        out["half-rate p99 stored lag ms"] = (f"{h['stored_lag_ms']['p99']:.1f}", "<= 100",
                                            h["stored_lag_ms"]["p99"] <= 100)
    for name in ("single", "batch", "half"):
        if name in by:
            svc = by[name]["services"]
            ing = max(x["peak_rss_kib"] for k, x in svc.items() if k.startswith("ingestion")) / 1024
            sto = max(x["peak_rss_kib"] for k, x in svc.items() if k.startswith("storage")) / 1024
            sim = by[name]["sim"]["peak_rss_kib"] / 1024
            ok = ing <= 16 and sto <= 32 and sim <= 32
            out[f"{name}: peak RSS MiB ingestion/storage/sim"] = (
                f"{ing:.1f}/{sto:.1f}/{sim:.1f}", "<= 16/32/32", ok)
    runs = sorted([(r.get("replicas", 2), sustained(r)) for n, r in by.items()
                   if n == "single" or n.startswith("single-")])
    if len(runs) > 1:
        out["scaling: single readings/s by ingestion replicas"] = (
            ", ".join(f"{n}: {v:.0f}" for n, v in runs), "", None)
    lost = sum(r.get("lost", 0) for r in by.values()) + sum(
        p["lost"] for p in (paired, paired_db) if p)
    out["readings answered 202 and not stored"] = (str(lost), "0", lost == 0)
    return out


def plot(results, png):
    gp = shutil.which("gnuplot")
    series = [r for r in results if r["scenario"] in ("single", "batch") and r.get("series")]
    if not gp or not series:
        return False
    data = png.with_suffix(".dat")
    with open(data, "w") as f:
        for r in series:
            f.write(f"# {r['scenario']}\n")
            for p in r["series"]:
                f.write(f"{p['t']} {p['rate']} {p['p50_ms']} {p['p99_ms']}\n")
            f.write("\n\n")
    script = f"""
set terminal png size 1100,700
set output '{png}'
set multiplot layout 2,1 title 'sensorflow bench: sensor-sim -> HAProxy -> 2 ingestion -> mosquitto -> storage -> PostgreSQL'
set grid
set key outside right
set ylabel 'readings/s answered 202'
set xlabel 'seconds'
plot """ + ", ".join(f"'{data}' index {i} using 1:2 with lines lw 2 title '{r['scenario']}'"
                     for i, r in enumerate(series)) + """
set ylabel 'POST latency ms'
set logscale y
plot """ + ", ".join(
        f"'{data}' index {i} using 1:3 with lines title '{r['scenario']} p50', "
        f"'{data}' index {i} using 1:4 with lines dt 2 title '{r['scenario']} p99'"
        for i, r in enumerate(series)) + "\nunset multiplot\n"
    r = subprocess.run([gp], input=script, capture_output=True, text=True)
    return r.returncode == 0 and png.exists()


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_mib": mem,
            "kernel": os.uname().release,
            "os": next((ln.split("=", 1)[1].strip().strip('"') for ln in open("/etc/os-release")
                        if ln.startswith("PRETTY_NAME=")), "")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO / "build" / "bin"))
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 10)))
    ap.add_argument("--warmup", type=float, default=3)
    # 256: HAProxy passed no more beyond 64 connections (two servers; fewer understate
    # the ceiling), but the pipeline does: more readings wait together, so
    # its MQTT messages are larger (about 70 readings against 23 at 64) and
    # each reading pays less of a message's cost. A fleet has many more.
    ap.add_argument("--connections", type=int, default=256,
                    help="sensor-sim connections for one-reading POSTs")
    ap.add_argument("--batch-connections", type=int, default=16,
                    help="sensor-sim connections for the batch run (100 readings a POST)")
    ap.add_argument("--only", default="", help="comma-separated scenarios")
    ap.add_argument("--half-rate", type=float, default=0, metavar="READINGS_PER_S",
                    help="the half scenario's open-loop rate (default: half of single's), "
                         "so that settings can be compared at one rate: --only half")
    ap.add_argument("--replicas", default="1,3",
                    help="scaling: also run single with these ingestion replica counts")
    # 2: one storage commits one message at a time (paho runs a process's
    # callbacks on one thread, and the PUBACK follows the commit), so two
    # processes in the shared subscription overlap their commits: batch
    # passes 45-70% more, and single a few percent (bench/NOTES.md).
    ap.add_argument("--storage", type=int, default=2,
                    help="storage processes in the pipeline (shared subscription)")
    # 1: the "a do-nothing server", and the most HAProxy passes here:
    # 15-22% more than with 2 (three pairs in turn, 2026-12-04), which
    # bench runs before then used, so their single / ceiling ratios read high.
    ap.add_argument("--ceiling-servers", type=int, default=1,
                    help="do-nothing servers behind HAProxy in ceiling, floor and paired")
    ap.add_argument("--null-delay-us", type=int, default=0, metavar="US",
                    help="an experiment: the ceiling's do-nothing servers answer POSTs "
                         "together, US after the first one waiting, as ingestion answers "
                         "on a PUBACK (the single / ceiling target is then not checked)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the stacks' folders (logs, databases) and say where")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for every service (repeatable), e.g. "
                         "INGESTION_MAX_UNCONFIRMED=2")
    args = ap.parse_args(argv)
    for kv in args.env:
        name, sep, value = kv.partition("=")
        if not sep or not name:
            ap.error(f"--env {kv!r}: expected NAME=VALUE")
        EXTRA_ENV[name] = value
    try:
        replica_counts = sorted({int(x) for x in args.replicas.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--replicas {args.replicas!r}: expected numbers, e.g. 1,3")
    if any(n < 1 or n > 16 for n in replica_counts):
        ap.error(f"--replicas {args.replicas!r}: each between 1 and 16")
    if args.seconds <= 0 or args.warmup < 0:
        ap.error("--seconds must be above 0 and --warmup 0 or more")
    if not 0 <= args.null_delay_us <= 1000000:
        ap.error(f"--null-delay-us {args.null_delay_us}: between 0 and 1000000")
    if not 1 <= args.ceiling_servers <= 16:
        ap.error(f"--ceiling-servers {args.ceiling_servers}: between 1 and 16")
    if not 1 <= args.storage <= 16:
        ap.error(f"--storage {args.storage}: between 1 and 16")
    if args.half_rate < 0:
        ap.error(f"--half-rate {args.half_rate:g}: expected readings per second "
                 "(0: half of single's)")
    args.bin = Path(args.bin).resolve()
    only = set(filter(None, args.only.split(",")))
    want = lambda n: not only or n in only  # noqa: E731

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="sensorflow-bench-"))
    os.chmod(tmp, 0o755)
    results = []
    paired = paired_db = None
    t_start = time.monotonic()
    try:
        if want("generator"):
            say("generator: sensor-sim -> do-nothing server")
            results.append(scenario_generator(args))
        if want("ceiling"):
            say(f"ceiling: sensor-sim -> HAProxy -> {servers(args)}")
            results.append(scenario_ceiling(args, tmp))
        if any(want(n) for n in ("single", "batch", "half", "db", "paired-db")):
            say(f"starting the pipeline (PostgreSQL, mosquitto, {args.storage} storage, "
                "2 ingestion, HAProxy)")
            st = stackmod.Stack(tmp / "pipeline", stackmod.Ports.free(2, storages=args.storage),
                                bin_dir=args.bin, env=bench_env())
            st.start()
            try:
                by = {}
                if want("single"):
                    say("single: 1 reading per POST, as fast as it goes")
                    by["single"] = scenario_pipeline(args, st, "single", 1)
                    results.append(by["single"])
                # half before batch: it measures the latency at that rate in
                # steady state, not the aftermath of batch's 400k-row burst.
                if want("half") and ("single" in by or args.half_rate):
                    rate = args.half_rate or max(1.0, by["single"]["readings_per_s"] / 2)
                    say(f"half: one reading per POST at {rate:.0f}/s, open loop")
                    results.append(scenario_pipeline(args, st, "half", 1, rate=rate))
                    if want("floor"):
                        say(f"floor: sensor-sim -> HAProxy -> {servers(args)} at {rate:.0f}/s")
                        results.append(scenario_ceiling(args, tmp, rate, "floor"))
                if want("paired") and "single" in by:
                    say("paired: single and ceiling in 5 alternating rounds of 4 s")
                    paired = scenario_paired(args, tmp, st)
                if want("batch"):
                    say("batch: 100 readings per POST, as fast as it goes")
                    by["batch"] = scenario_pipeline(args, st, "batch", 100)
                    results.append(by["batch"])
                if want("db"):
                    say("db: the batch run's rows again, straight into a copy of the table")
                    results.append(scenario_db(args, st, by.get("batch"), 200000))
                if want("paired-db"):
                    say("paired-db: batch and db in 5 alternating rounds (batch 5 s)")
                    paired_db = scenario_paired_db(args, st)
            finally:
                st.stop()
        if want("scaling"):   # after the pipeline above is gone
            for n in replica_counts:
                say(f"scaling: single with {n} ingestion replica(s), a stack of its own")
                results.append(scenario_scaling(args, tmp, n))
    finally:
        if args.keep:
            say(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    by = {r["scenario"]: r for r in results}
    ratios = ratios_of(by, paired, paired_db)
    if args.null_delay_us:   # a ceiling that is not the machine's
        ratios = {k: (v, t, None if k.startswith("single / ceiling") else ok)
                  for k, (v, t, ok) in ratios.items()}
        ratios[f"ceiling with answers {args.null_delay_us} us late (--null-delay-us)"] = (
            "single / ceiling not checked", "", None)
    doc = {"time": stamp, "machine": machine(), "seconds": args.seconds,
           "connections": args.connections, "batch_connections": args.batch_connections,
           "storage_processes": args.storage, "ceiling_servers": args.ceiling_servers,
           "null_delay_us": args.null_delay_us,
           "paired": paired, "paired_db": paired_db,
           "targets": TARGETS, "results": results,
           "ratios": {k: {"value": v, "target": t, "ok": ok} for k, (v, t, ok) in ratios.items()},
           "wall_s": time.monotonic() - t_start}
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(fmt_table(results, ratios))
    # Figures compare only within one machine: the same machine kind has run
    # on hosts twice as fast as each other (bench/NOTES.md), so say which.
    m = doc["machine"]
    say(f"machine: {m['cpus']} CPUs ({m['cpu_model'] or 'model unknown'}), {m['mem_mib']} MiB, "
        f"kernel {m['kernel']}, {m['os']}")
    png = RESULTS / f"{stamp}.png"
    if plot(results, png):
        say(f"plot: {png.relative_to(REPO)}")
    else:
        say("no plot (gnuplot not installed, or no single/batch run)")
    say(f"results: {out.relative_to(REPO)} ({doc['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
