"""conftest.py -- one real stack for the integration tests.

The `stack` fixture (session scope) starts scripts/stack.py's Stack with 2
ingestion replicas and storage, no sensor-sim, on free ports in a fresh
temporary directory, so it runs beside `make run`; it is always torn down.
`own_stack` (module scope) is the same, one per module that asks for it: for
tests that kill, stop or restart services (test_faults.py). The services
come from $SF_BIN (default build/bin).

    SF_KEEP=1        keep the whole state directory (logs, data); by default
                     it is removed, and after a failure only its logs stay
    SF_LOG_LEVEL=debug  the services' log level (default info)

When a test fails, the tail of every service's log is attached to its
report."""

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import stack as stackmod  # noqa: E402
from sfhelp import Api, bin_dir  # noqa: E402

_STACKS = []  # the stacks running now, for the log tails of failed tests


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def pytest_configure(config):
    # A CI timeout or a kill sends SIGTERM: tear the stack down as on Ctrl-C
    # (the children would also get their parent-death signal, but orderly is
    # better).
    signal.signal(signal.SIGTERM, _interrupt)


def _stack_lifecycle(request, prefix, extra_env=None, mosquitto_extra="", storages=1):
    """Starts a Stack (2 replicas, `storages` storage processes, free ports,
    fresh temp dir), yields it,
    then stops it, checks how our services ended and removes its state
    (logs kept after a failure, everything with SF_KEEP=1)."""
    env = {k: v for k, v in os.environ.items() if k not in stackmod.SERVICE_VARS}
    env["LOG_LEVEL"] = os.environ.get("SF_LOG_LEVEL", "info")
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    state = tempfile.mkdtemp(prefix=prefix)
    st = stackmod.Stack(state, stackmod.Ports.free(2, storages=storages), bin_dir=bin_dir(), env=env,
                        mosquitto_extra=mosquitto_extra)
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    try:
        st.start()
    except stackmod.StackError as e:
        pytest.fail(f"the stack did not start (state kept in {state}): {e}", pytrace=False)
    _STACKS.append(st)
    failed_before = request.session.testsfailed
    try:
        yield st
    finally:
        _STACKS.remove(st)
        problems = _our_services_misbehaved(st, st.stop())
        if problems:
            request.session.testsfailed += 1
        if os.environ.get("SF_KEEP"):
            kept = "state and logs"
        elif request.session.testsfailed > failed_before:
            # The logs (and configs) are what one reads after a failure; the
            # database and broker files are tens of MB per run.
            kept = "logs"
            for sub in ("postgres", "mosquitto/data", "spool"):
                shutil.rmtree(os.path.join(state, sub), ignore_errors=True)
        else:
            kept = None
            shutil.rmtree(state, ignore_errors=True)
        if kept and report:
            report.write_line(f"integration: stack {kept} kept in {state} (SF_KEEP=1 keeps everything)")
    if problems:
        pytest.fail("our services misbehaved: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def stack(request):
    """The stack shared by the tests that leave it as they found it."""
    yield from _stack_lifecycle(request, "sensorflow-it-")


@pytest.fixture(scope="module")
def own_stack(request):
    """A stack of the module's own, for tests that disturb it (kill, stop,
    restart services): one per module that asks for it, beside the shared
    one. The module's STACK_ENV dict, if any, adds service settings, its
    STACK_MOSQUITTO text, if any, lines to mosquitto.conf, and its
    STACK_STORAGES number (default 1) says how many storage processes run."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    yield from _stack_lifecycle(request, f"sensorflow-{name}-",
                                getattr(request.module, "STACK_ENV", None),
                                getattr(request.module, "STACK_MOSQUITTO", ""),
                                getattr(request.module, "STACK_STORAGES", 1))


# What ASan, UBSan and LeakSanitizer print: under `make SANITIZE=...` a report
# must fail the run even when it only shows at exit.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _our_services_misbehaved(st, statuses):
    """Exit statuses other than 0 on a clean stop, exits nobody asked for,
    and sanitizer reports, of our own services (not the servers)."""
    ours = lambda n: n.startswith(("ingestion", "storage", "sensor-sim"))
    problems = [f"{n} exited with status {c} when stopped"
                for n, c in statuses.items() if ours(n) and c != 0]
    problems += [f"{n} exited by itself with status {c}"
                 for n, c in st.unexpected_exits() if ours(n)]
    for name in st.names:
        if not ours(name):
            continue
        try:
            with open(st.log_path(name), errors="replace") as f:
                bad = [line.strip() for line in f if any(m in line for m in SANITIZER_MARKS)]
        except OSError:
            continue
        if bad:
            problems.append(f"{name} log: {bad[0]}")
    return problems


@pytest.fixture(scope="session")
def api(stack):
    """Requests through HAProxy."""
    return Api("127.0.0.1", stack.ports.http)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {}) or {}
    for st in _STACKS:
        if not any(v is st for v in funcargs.values()):
            continue
        for name in st.names:
            text = st.log_tail(name, 12)
            if text:
                rep.sections.append((f"log tail: {name} ({st.state_dir.name})", text))
