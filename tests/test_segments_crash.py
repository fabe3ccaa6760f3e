"""A segmented scan killed with SIGKILL mid-segment resumes bit for bit, on another executor."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import xarray as xr

import notebookscan as ns
from notebookscan.segments import SegmentedScan, open_recordings, states_equal

SCRIPT = textwrap.dedent("""
    import os, sys, time
    import notebookscan as ns
    from notebookscan.demo_network import lif_network
    from notebookscan.segments import SegmentedScan

    HANG_AT = int(os.environ.get("HANG_AT", "-1"))

    def model(g: float, seed: int, segments):
        inner = lif_network(g=g, n=60, seed=seed, segments=segments)
        while True:
            # the next segment, whether the model was just opened or continues from memory
            if segments.first + segments.taken == HANG_AT and g == 4.0:  # the 7th of one point
                open(os.environ["HANG_MARK"], "w").close()
                time.sleep(600)                      # ... until the process is killed
            try:
                out = next(inner)
            except StopIteration:
                return
            yield out

    space = ns.grid(g=[3.0, 4.0, 5.0])

    def scan(path):
        return SegmentedScan(model, space, path, segments=10, segment_duration=0.06)

    if __name__ == "__main__":
        scan(sys.argv[1]).run(executor=sys.argv[2], progress=False, flush_interval=1e-9)
""")

TIMING = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run",
          "compute_seconds"]


def _comparable(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([v for v in TIMING if v in ds.variables]).drop_attrs()


def test_sigkill_in_the_seventh_segment_resumes_identically(tmp_path):
    script = tmp_path / "segmented_script.py"
    script.write_text(SCRIPT)
    killed, mark = tmp_path / "killed", tmp_path / "hanging"
    env = {**os.environ, "HANG_AT": "6", "HANG_MARK": str(mark)}
    process = subprocess.Popen([sys.executable, str(script), str(killed), "serial"], env=env)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert process.poll() is None, f"the scan exited early with {process.returncode}"
        assert time.monotonic() < deadline, "the scan never reached the 7th segment"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()

    module = runpy.run_path(str(script))
    key = ns.point_key({"g": 4.0})
    partial = module["scan"](killed)
    assert partial.checkpoints.counts(key, 0) == [6]  # the checkpoint after segment 6
    assert partial.status()["complete"] < 3

    # resume on another kind of executor (a process pool), in another process
    subprocess.run([sys.executable, str(script), str(killed), "processes"], check=True,
                   env={k: v for k, v in os.environ.items() if k != "HANG_AT"})
    segments = ns.open_store(killed / "segments")  # one row per point, link and segment
    of_g4 = segments.where(segments.g == 4.0, drop=True)
    runs = {int(s): str(r) for s, r in zip(of_g4.segment.values, of_g4.ns_run.values, strict=True)}
    assert len({runs[s] for s in range(6)}) == 1 and runs[6] != runs[5]  # only 6..9 re-ran
    assert len({runs[s] for s in range(6, 10)}) == 1

    clean_path = tmp_path / "clean"
    clean = module["scan"](clean_path)
    clean.run(executor="serial", progress=False)
    resumed = module["scan"](killed)
    xr.testing.assert_identical(open_recordings(killed).drop_attrs(),
                                open_recordings(clean_path).drop_attrs())
    xr.testing.assert_identical(_comparable(resumed.results()), _comparable(clean.results()))
    for g in (3.0, 4.0, 5.0):
        assert states_equal(resumed.state({"g": g}), clean.state({"g": g})) == ""
    ring = resumed.state({"g": 4.0})["ring"]
    assert np.count_nonzero(ring) > 0  # delayed spikes were in flight at the boundary
    assert ns.verify(killed).healthy and ns.verify(killed / "segments").healthy


def test_the_demo_network_needs_its_spike_queue(tmp_path):
    """Dropping the ring buffer at segment boundaries changes the result: the test above
    would catch a resume that lost pending spikes."""
    from notebookscan.demo_network import lif_network

    def forgetful(g: float, n: int, seed: int, segments):
        if segments.state is not None:
            segments.state = {**segments.state,
                              "ring": np.zeros_like(segments.state["ring"])}
        yield from lif_network(g=g, n=n, seed=seed, segments=segments)

    space = ns.grid(g=[4.0], n=[60])
    a = SegmentedScan(lif_network, space, tmp_path / "a", segments=3, segment_duration=0.06)
    b = SegmentedScan(forgetful, space, tmp_path / "b", segments=3, segment_duration=0.06,
                      keep_models=False)  # every segment restores (and forgets)
    a.run(executor="serial", progress=False)
    b.run(executor="serial", progress=False)
    va, vb = a.recordings().v.values, b.recordings().v.values
    per_segment = va.shape[-2] // 3
    np.testing.assert_array_equal(va[..., :per_segment, :], vb[..., :per_segment, :])
    assert not np.array_equal(va, vb)
