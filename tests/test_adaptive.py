"""Adaptive scans: a python-adaptive learner chooses the points, the store keeps them.

Kill and resume, deterministic next points and grid × learner run on the session's real
ipyparallel engines; the rest in-process. Skipped only when ``adaptive`` is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("adaptive", reason="python-adaptive is not installed "
                    "(pip install 'notebookscan[adaptive]')")

import notebookscan as ns
from notebookscan.adaptive import AdaptiveScan, Goal, line, on_grid, rebuild
from notebookscan.errors import ScanError

ROOT = Path(__file__).resolve().parents[1]


def step(x: float):
    return {"y": float(np.tanh((x - 0.3) / 0.01))}


def slow_step(x: float):
    time.sleep(0.02)
    return {"y": float(np.tanh((x - 0.3) / 0.01)), "twice": 2.0}


def test_1d_concentrates_points_at_the_step(tmp_path):
    scan = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=60))
    run = scan.run(executor="serial", progress=False)
    assert run.progress.done == 60 and run.progress.points == 60
    xs = scan.results().x.values
    near = np.sum(np.abs(xs - 0.3) < 0.05)
    assert near > 30, xs  # a uniform grid would put 6 of 60 there
    data = line(scan.results(), "y", "x")
    assert np.all(np.diff(data.x.values) > 0) and data.sizes["x"] == 60


def test_resume_tells_the_store_back_and_asks_what_the_live_learner_asks(tmp_path):
    """An uninterrupted serial run's learner and one rebuilt from its store ask the same
    next points (told in the order they finished, as the live run told them)."""
    scan = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=30))
    scan.run(executor="serial", progress=False)
    live = scan.learner.ask(6, tell_pending=False)[0]
    first = scan.learner.ask(1, tell_pending=False)[0][0]  # what one more point would be
    rebuilt, known, stored, value = rebuild(scan.spec, scan.store, None)
    assert (stored, value, len(known)) == (30, "y", 30)
    assert rebuilt.ask(6, tell_pending=False)[0] == live
    # a second run continues to the goal without recomputing a stored point
    more = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=45))
    assert more.next_points(1)[0]["x"] == first
    run = more.run(executor="serial", progress=False)
    assert run.progress.done == 15 and run.progress.skipped == 30
    ds = more.results()
    assert ds.sizes["point"] == 45 and len(set(ds.ns_key.values.tolist())) == 45


def test_points_per_task_follow_the_measured_time_unless_given(tmp_path):
    """A fast function's points share tasks (the per-task overhead, a journal fsync per
    loop turn, is paid per task); a slow one's stay one per task; a given number stays."""
    fast = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "a", goal=Goal(points=200))
    fast.run(executor="serial", progress=False)
    sizes = fast._source.task_sizes
    assert max(sizes) > 1 and sum(n * k for n, k in sizes.items()) == 200, sizes
    assert fast.results().sizes["point"] == 200
    # a lost task's points (worker died, timeout) are not instant work: no bigger tasks
    source = fast._source
    source._chunker.seconds_per_point = 0.01  # as measured for a 10 ms function
    source.fail(np.arange(4), "WorkerLost: the worker died")
    assert source.task_points() == 1 and source._chunker.seconds_per_point == 0.01
    slow = AdaptiveScan(slow_step, {"x": (0, 1)}, tmp_path / "b", value="y",
                        goal=Goal(points=8))
    slow.run(executor="serial", progress=False)
    assert dict(slow._source.task_sizes) == {1: 8}
    fixed = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "c", goal=Goal(points=30),
                         points_per_task=3)
    fixed.run(executor="serial", progress=False)
    assert dict(fixed._source.task_sizes) == {3: 10}
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ScanError, match="points_per_task"):
            AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "d", goal=Goal(points=3),
                         points_per_task=bad)


def test_goals_loss_and_time(tmp_path):
    by_loss = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "a", goal=Goal(loss=0.05))
    run = by_loss.run(executor="serial", progress=False)
    assert run.progress.loss <= 0.05 and by_loss.learner.loss() <= 0.05
    by_time = AdaptiveScan(slow_step, {"x": (0, 1)}, tmp_path / "b", value="y",
                           goal=Goal(seconds=0.5))
    started = time.monotonic()
    run = by_time.run(executor="serial", progress=False)
    assert time.monotonic() - started < 3 and 5 < run.progress.done < 40
    assert "loss" in str(run.progress)


def test_failed_points_are_stored_and_never_asked_again(tmp_path):
    def fragile(x: float):
        if 0.6 < x < 0.8:
            raise ValueError("no convergence")
        return {"y": float(np.tanh((x - 0.3) / 0.01))}

    scan = AdaptiveScan(fragile, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=40))
    run = scan.run(executor="serial", progress=False)
    assert run.progress.failed >= 1 and run.progress.done + run.progress.failed == 40
    failed = set(scan.results().x.values[scan.results().ns_status.values == "failed"])
    rebuilt, *_ = rebuild(scan.spec, scan.store, "y")
    assert failed <= set(rebuilt.pending_points)  # pending: never asked again
    again = AdaptiveScan(fragile, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=50))
    again.run(executor="serial", progress=False)
    keys = again.results().ns_key.values.tolist()
    assert len(keys) == len(set(keys)) == 50


def test_progress_events_carry_the_loss_and_the_points(tmp_path):
    scan = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=25))
    seen = []
    scan.events.on("progress", lambda **fields: seen.append(fields))
    finished = []
    scan.events.on("finished", lambda **fields: finished.append(fields))
    scan.run(executor="serial", progress=False, flush_interval=0.01)
    assert seen and all("loss" in f and "points" in f for f in seen)
    assert seen[-1]["points"] == 25 and finished[0]["points"] == 25
    assert finished[0]["loss"] == scan.learner.loss()


def test_trials_average_learner_per_grid_cell(tmp_path):
    def noisy(k: int, seed: int):
        return {"m": float(np.random.default_rng(seed).normal(k, 1.0))}

    scan = AdaptiveScan(noisy, {}, tmp_path / "s", trials=True, grid={"k": [1, 5]},
                        goal=Goal(points=40))
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    assert set(ds.k.values.tolist()) == {1, 5} and ds.sizes["point"] == 40
    for i in range(ds.sizes["point"]):
        point = {"k": int(ds.k.values[i]), "trial": int(ds.trial.values[i])}
        assert ds.ns_key.values[i] == ns.point_key(point)
        assert ds.ns_seed.values[i] == ns.point_seed(ds.ns_key.values[i])


def test_wrong_input_says_what_to_do(tmp_path):
    with pytest.raises(ScanError, match="goal needs"):
        AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "a", goal={})
    with pytest.raises(ScanError, match="low < high"):
        AdaptiveScan(step, {"x": (1, 0)}, tmp_path / "a", goal=Goal(points=3))
    with pytest.raises(ScanError, match="value="):
        AdaptiveScan(slow_step, {"x": (0, 1)}, tmp_path / "b",
                     goal=Goal(points=3)).run(executor="serial", progress=False)
    with pytest.raises(ScanError, match="value="):
        AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "d", value="z",
                     goal=Goal(points=3)).run(executor="serial", progress=False)
    for goal in ({"points": True}, {"points": 2.5}, {"loss": -1}, {"seconds": "1"}):
        with pytest.raises(ScanError, match="goal"):
            AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "e", goal=goal)
    with pytest.raises(ns.SpaceError):
        AdaptiveScan(step, {"z": (0, 1)}, tmp_path / "c", goal=Goal(points=3))


# --------------------------------------------------------------------------- engines

KILLED = """
import sys, time
import numpy as np
import ipyparallel as ipp
from notebookscan.adaptive import AdaptiveScan, Goal

def slow_step(x: float):
    time.sleep(0.02)
    return {"y": float(np.tanh((x - 0.3) / 0.01))}

client = ipp.Client(sys.argv[2])
scan = AdaptiveScan(slow_step, {"x": (0, 1)}, sys.argv[1], goal=Goal(points=10_000))
scan.run(client, progress=False, flush_interval=0.1)
"""


@pytest.mark.cluster
def test_sigkill_then_resume_on_engines(tmp_path, ipp_cluster, ipp_executor):
    def slow_step(x: float):  # defined here: engines get it by value, not by module
        time.sleep(0.02)
        return {"y": float(np.tanh((x - 0.3) / 0.01))}

    store = tmp_path / "s"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(store),
                             ipp_cluster.connection_file], env=env)
    try:
        deadline = time.monotonic() + 120  # a loaded machine imports slowly
        while time.monotonic() < deadline:
            if store.exists() and len(ns.Store(store).index()) >= 20:
                break
            assert proc.poll() is None, "the scan process ended before it was killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed = AdaptiveScan(slow_step, {"x": (0, 1)}, store, value="y", goal=Goal(points=60))
    before = resumed.results().sizes["point"]  # shards only; the journal is folded by run
    slots = 2 * ipp_cluster.n  # the loop's first fill: two tasks per engine
    first = resumed.next_points(slots)  # what the rebuilt learner asks first
    assert resumed.next_points(slots) == first  # the same store: the same points
    stored = resumed.status()["done"] + resumed.status()["failed"]
    assert stored >= before >= 20
    run = resumed.run(ipp_executor, progress=False)
    # the engines' two slots each were filled with exactly the predicted points
    assert resumed.asked_points()[:slots] == first
    ds = resumed.results()
    assert ds.sizes["point"] == 60 and len(set(ds.ns_key.values.tolist())) == 60
    assert run.progress.skipped == stored and run.progress.done == 60 - stored
    # the resumed learner was told every stored point: its next points are new ones
    assert resumed.learner.npoints == 60


@pytest.mark.cluster
def test_grid_times_learner_on_engines(tmp_path, ipp_executor):
    def ring(x: float, y: float, kind: str, seed: int):
        scale = 2.0 if kind == "b" else 1.0
        return {"z": scale * float(np.exp(-((x * x + y * y) ** 0.5 - 0.5) ** 2 / 0.01)),
                "seed_seen": seed}

    scan = AdaptiveScan(ring, {"x": (-1, 1), "y": (-1, 1)}, tmp_path / "s", value="z",
                        grid=ns.grid(kind=["a", "b"]), goal=Goal(points=80),
                        balance="npoints")
    run = scan.run(ipp_executor, progress=False)
    assert run.progress.done == 80
    ds = scan.results()
    kinds = ds.kind.values.astype(str)
    assert {"a", "b"} == set(kinds.tolist()) and min(np.sum(kinds == "a"),
                                                     np.sum(kinds == "b")) >= 30
    # every point stored with its key and seed, and the function got that seed
    np.testing.assert_array_equal(ds.seed_seen.values, ds.ns_seed.values)
    assert str(ds.ns_key.values[0]) == ns.point_key(
        {"kind": str(kinds[0]), "x": float(ds.x.values[0]), "y": float(ds.y.values[0])})
    grid = on_grid(ds, "z", "x", "y", n=20, kind="b")
    assert grid.shape == (20, 20) and np.nanmax(grid.values) > 1.0
    # rebuilt: the balancing learner holds every point in its own cell
    learner, *_ = rebuild(scan.spec, scan.store, "z")
    assert [len(child.data) for child in learner.learners] == [
        int(np.sum(kinds == "a")), int(np.sum(kinds == "b"))]


def test_bad_balance_and_learner_options_fail_before_running(tmp_path):
    with pytest.raises(ScanError, match="strategy"):
        AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "a", grid={"k": [1, 2]},
                     balance="fastest", goal=Goal(points=3))
    with pytest.raises(ScanError, match="learner_options"):
        AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "a", learner_options={"los": 1},
                     goal=Goal(points=3))
    assert not (tmp_path / "a").exists()
