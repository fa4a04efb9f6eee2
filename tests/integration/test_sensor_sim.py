"""test_sensor_sim.py -- sensor-sim end to end: every reading it reports as
accepted (its --accepted-log) is a row in readings, and its sensors have no
other rows."""

import os

import pytest

from sfhelp import barrier, rows, sql_list, ts_us, wait_for


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
