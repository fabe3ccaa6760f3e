"""The Brian2 model of docs/segments.md, run as the docs print it, in Brian2's own venv:
SIGKILLed mid-scan and resumed, it gives the spikes of one straight ``net.run``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.brian2

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- example: skip, needs Brian2"

DRIVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import notebookscan as ns
    from brian2 import second
    from notebookscan.segments import SegmentedScan
    from brian_example import brian_model, build_network

    RATES, SEGMENTS, DURATION = [50.0, 70.0], 4, 0.05
    mode, path = sys.argv[2], sys.argv[3]
    scan = SegmentedScan(brian_model, ns.grid(rate=RATES), path, segments=SEGMENTS,
                         segment_duration=DURATION)
    if mode == "run":
        scan.events.on("segment_done", lambda point, segment, **_: print(
            "done", point["rate"], segment, flush=True))
        scan.run(executor="serial", progress=False, flush_interval=1e-9)
    else:  # compare with one straight run of each point's network
        recordings, report = scan.recordings(), {}
        for rate in RATES:
            seed = ns.point_seed(ns.point_key({"rate": rate}))
            net, spikes, namespace = build_network(rate, seed)
            net.run(SEGMENTS * DURATION * second, namespace=namespace)
            times = recordings.spike_time.sel(rate=rate).values.ravel()
            neurons = recordings.spike_neuron.sel(rate=rate).values.ravel()
            kept = ~np.isnan(times)
            report[rate] = {
                "n": int(spikes.num_spikes),
                "same_times": bool(np.array_equal(times[kept], np.asarray(spikes.t_[:]))),
                "same_neurons": bool(np.array_equal(neurons[kept].astype(int),
                                                    np.asarray(spikes.i[:]))),
                "status": scan.status()["complete"]}
        print(json.dumps(report))
""")


def example_code() -> str:
    """The Python block that follows the marker in docs/segments.md."""
    text = (ROOT / "docs" / "segments.md").read_text(encoding="utf-8")
    assert MARK in text, "docs/segments.md lost its Brian2 example"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARK):], re.S)
    assert block is not None
    return block.group(1)


def _has_brian2(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import brian2, notebookscan"],
                           capture_output=True, cwd="/")
    return probe.returncode == 0


@pytest.fixture(scope="session")
def brian2_python() -> str:
    """Python of a venv with Brian2 and this notebookscan: $NOTEBOOKSCAN_BRIAN2_PYTHON, or
    .venv-brian2 (made by `make brian2-env` when missing). Skips with pip's error where
    Brian2 cannot be installed."""
    given = os.environ.get("NOTEBOOKSCAN_BRIAN2_PYTHON")
    if given:
        return given
    python = ROOT / ".venv-brian2" / "bin" / "python"
    if not (python.exists() and _has_brian2(str(python))):
        if shutil.which("make") is None:
            pytest.skip("make is not installed: cannot create .venv-brian2")
        made = subprocess.run(["make", "-s", "brian2-env", f"PYTHON={sys.executable}"],
                              cwd=ROOT, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip("Brian2 could not be installed: " + (made.stderr or made.stdout)[-800:])
    return str(python)


def _run(python: str, code_dir: Path, store: Path, *, kill_after: int | None = None) -> None:
    driver = code_dir / "driver.py"
    process = subprocess.Popen([python, str(driver), str(code_dir), "run", str(store)],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    done = 0
    for line in process.stdout:
        done += line.startswith("done ")
        if kill_after is not None and done == kill_after:
            time.sleep(0.2)  # let the flush after it start; the kill may land anywhere
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=300)
    if kill_after is None:
        assert process.returncode == 0
    else:
        assert process.returncode == -signal.SIGKILL, "the scan ended before it was killed"


def test_the_documented_brian2_model_resumes_bit_identically_after_sigkill(
        brian2_python, tmp_path):
    (tmp_path / "brian_example.py").write_text(example_code())
    (tmp_path / "driver.py").write_text(DRIVER)
    store = tmp_path / "store"
    _run(brian2_python, tmp_path, store, kill_after=3)  # mid-way through the first point
    _run(brian2_python, tmp_path, store)  # resumes from the checkpoints
    compared = subprocess.run(
        [brian2_python, str(tmp_path / "driver.py"), str(tmp_path), "compare", str(store)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert compared.returncode == 0, compared.stderr[-3000:]
    report = json.loads(compared.stdout.strip().splitlines()[-1])
    for rate, point in report.items():
        assert point["n"] > 20, (rate, point)  # the network does spike
        assert point["same_times"] and point["same_neurons"], (rate, point)
        assert point["status"] == 2
