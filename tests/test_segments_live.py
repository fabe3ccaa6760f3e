"""A point's model stays alive in its worker between segments, and a point whose worker
changed or died restores from its checkpoint: identical results either way."""

from __future__ import annotations

import os
import signal

import numpy as np
import xarray as xr

import notebookscan as ns
from notebookscan.executors.futures import process_pool
from notebookscan.segments import Segment, SegmentedScan, open_recordings, states_equal


def noisy(x: float, seed: int, segments):
    """A noisy leaky variable, resumable from ``state``; logs every open and every segment
    (into the file $NS_TEST_CALLS names: not a parameter, so both scans have the same seeds)."""
    log = os.environ["NS_TEST_CALLS"]
    with open(log, "a") as f:
        f.write(f"open {x} {segments.first} {os.getpid()}\n")
    v = (np.full(4, x) if segments.state is None else np.asarray(segments.state["v"]))
    for segment in segments:
        with open(log, "a") as f:
            f.write(f"run {x} {segment.index} {os.getpid()}\n")
        rng = segment.rng()
        trace = np.empty((5, 4))
        for step in range(5):
            v = 0.9 * v + rng.normal(size=4)
            trace[step] = v
        yield Segment({"v": trace}, state={"v": v}, time=segment.index * 5 + np.arange(5))


def _calls(log) -> list[tuple[str, float, int, int]]:
    with open(log) as f:
        return [(kind, float(x), int(i), int(pid))
                for kind, x, i, pid in (line.split() for line in f.read().splitlines())]


def _run(path, log, monkeypatch, points=(1.0, 2.0), segments=5, executor="serial",
         keep_models=True, events=None) -> SegmentedScan:
    monkeypatch.setenv("NS_TEST_CALLS", str(log))
    scan = SegmentedScan(noisy, ns.grid(x=list(points)), path, segments=segments,
                         keep_checkpoints=None, keep_models=keep_models)
    for name, callback in (events or {}).items():
        scan.events.on(name, callback)
    progress = scan.run(executor=executor, progress=False).progress
    assert (progress.done, progress.failed) == (len(points), 0)
    return scan


def _assert_same(a: SegmentedScan, b: SegmentedScan, points) -> None:
    xr.testing.assert_identical(open_recordings(a.store.path).drop_attrs(),
                                open_recordings(b.store.path).drop_attrs())
    for x in points:
        assert states_equal(a.state({"x": x}), b.state({"x": x})) == ""


def test_serial_continues_from_memory_and_matches_restoring_every_segment(tmp_path,
                                                                          monkeypatch):
    live_log, restore_log = tmp_path / "live.log", tmp_path / "restore.log"
    live = _run(tmp_path / "live", live_log, monkeypatch)
    restoring = _run(tmp_path / "restore", restore_log, monkeypatch, keep_models=False)
    opens = [c for c in _calls(live_log) if c[0] == "open"]
    assert sorted((x, first) for _, x, first, _ in opens) == [(1.0, 0), (2.0, 0)]  # once each
    assert len([c for c in _calls(restore_log) if c[0] == "open"]) == 10  # every segment
    # the checkpoint is still written after every segment
    for x in (1.0, 2.0):
        key = ns.point_key({"x": x})
        assert live.checkpoints.counts(key, 0) == [1, 2, 3, 4, 5]
    _assert_same(live, restoring, (1.0, 2.0))


def test_extend_after_a_run_restores_and_matches(tmp_path, monkeypatch):
    """The model of a link's last segment is not kept: extend() restores from the checkpoint."""
    log = tmp_path / "calls.log"
    scan = _run(tmp_path / "s", log, monkeypatch, points=(1.0,), segments=3)
    scan.extend(segments=2, executor="serial", progress=False)
    opens = [(x, first) for kind, x, first, _ in _calls(log) if kind == "open"]
    assert opens == [(1.0, 0), (1.0, 3)]
    clean = _run(tmp_path / "clean", tmp_path / "clean.log", monkeypatch, points=(1.0,),
                 keep_models=False)
    xr.testing.assert_identical(open_recordings(scan.store.path).v.drop_attrs(),
                                open_recordings(clean.store.path).v.drop_attrs())


def test_pool_processes_keep_models_and_a_worker_killed_between_segments_restores(
        tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    points = (1.0, 2.0, 3.0)
    killed: list[int] = []

    def kill_after_second(key, segment, worker, point, **_):
        if point["x"] == 2.0 and segment == 1 and not killed:  # between its 2nd and 3rd
            pid = int(worker.split()[-1])
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    # one segment per task, so that the kill lands between two segments of the point
    monkeypatch.setattr("notebookscan.segments.source.BATCH_SECONDS", 0.0)
    scan = _run(tmp_path / "pool", log, monkeypatch, points=points, segments=6,
                executor="processes", events={"segment_done": kill_after_second})
    calls = _calls(log)
    assert killed and not any(pid == killed[0] and i >= 2 and x == 2.0
                              for _, x, i, pid in calls)
    # the point whose process died restored from the checkpoint after its 2nd segment
    assert ("open", 2.0, 2) in {(k, x, first) for k, x, first, _ in calls}
    runs = sum(1 for c in calls if c[0] == "run")
    opens = sum(1 for c in calls if c[0] == "open")
    assert opens < runs, "no segment continued from memory in a pool process"
    clean = _run(tmp_path / "clean", tmp_path / "clean.log", monkeypatch, points=points,
                 segments=6, keep_models=False)
    _assert_same(scan, clean, points)


def dies_once(x: float, seed: int, segments):
    """``noisy``, whose process is SIGKILLed at its segment 3 the first time only (the file
    $NS_TEST_KILLED marks that it happened)."""
    marker = os.environ["NS_TEST_KILLED"]
    for segment, out in enumerate(noisy(x, seed, segments), start=segments.first):
        if segment == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        yield out


def test_a_pool_task_runs_a_points_segments_back_to_back_each_with_its_checkpoint(
        tmp_path, monkeypatch):
    """A live point's next segments run in one task (no round trip through the client in
    between), each still handed back with its own checkpoint; on 2 processes that cannot
    be chosen, every point is then opened once."""
    log = tmp_path / "calls.log"
    points = (1.0, 2.0, 3.0)
    done: list[int] = []
    pool = process_pool(2)
    try:
        scan = _run(tmp_path / "pool", log, monkeypatch, points=points, segments=6,
                    executor=pool,
                    events={"segment_done": lambda segment, **_: done.append(segment)})
    finally:
        pool.shutdown()
    opens = sorted((x, first) for kind, x, first, _ in _calls(log) if kind == "open")
    assert opens == [(x, 0) for x in points]
    assert sorted(done) == sorted(list(range(6)) * 3)  # every segment reported
    for x in points:
        assert scan.checkpoints.counts(ns.point_key({"x": x}), 0) == [1, 2, 3, 4, 5, 6]
    clean = _run(tmp_path / "clean", tmp_path / "clean.log", monkeypatch, points=points,
                 segments=6, keep_models=False)
    _assert_same(scan, clean, points)


def test_what_came_back_is_written_while_the_last_point_runs(tmp_path, monkeypatch):
    """Once the last point is handed out, the points already back are written while it
    runs, so the final flush (after its last segment) writes only its own checkpoints."""
    monkeypatch.setenv("NS_TEST_CALLS", str(tmp_path / "calls.log"))
    order: list[tuple[str, float]] = []
    scan = SegmentedScan(noisy, ns.grid(x=[1.0, 2.0, 3.0]), tmp_path / "pool", segments=3)
    scan.events.on("segment_done", lambda point, **_: order.append(("segment", point["x"])))
    scan.events.on("flushed", lambda checkpoints, **_: order.append(("flushed", checkpoints)))
    pool = process_pool(1)
    try:
        progress = scan.run(executor=pool, progress=False, flush_interval=600).progress
    finally:
        pool.shutdown()
    assert (progress.done, progress.failed) == (3, 0)
    last = order.index(("segment", 3.0))
    assert ("flushed", 6) in order[:last]  # points 1 and 2, while point 3 ran
    assert order[-1] == ("flushed", 3)  # the final flush: point 3's checkpoints only


def test_a_worker_killed_inside_a_run_of_segments_reruns_them_identically(
        tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("NS_TEST_KILLED", str(tmp_path / "killed"))
    monkeypatch.setenv("NS_TEST_CALLS", str(log))
    scan = SegmentedScan(dies_once, ns.grid(x=[1.0]), tmp_path / "pool", segments=6,
                         keep_checkpoints=None)
    pool = process_pool(1)
    try:
        progress = scan.run(executor=pool, progress=False).progress
    finally:
        pool.shutdown()
    assert (progress.done, progress.failed) == (1, 0)
    assert (tmp_path / "killed").exists()
    runs = [i for kind, _, i, _ in _calls(log) if kind == "run"]
    assert runs.count(3) == 2  # segment 3 ran again after its worker died
    assert scan.checkpoints.counts(ns.point_key({"x": 1.0}), 0) == [1, 2, 3, 4, 5, 6]
    clean = _run(tmp_path / "clean", tmp_path / "clean.log", monkeypatch, points=(1.0,),
                 segments=6, keep_models=False)
    _assert_same(scan, clean, (1.0,))


def test_a_live_model_is_not_continued_once_another_point_ran_in_its_process(
        tmp_path, monkeypatch):
    """Simulators keep process-global state (numpy's or Brian2's global random generator):
    after another point's segment, a kept model restores from its checkpoint instead."""
    from notebookscan.segments.worker import SegmentTask, drop_live_models, run_segment

    log = tmp_path / "calls.log"
    monkeypatch.setenv("NS_TEST_CALLS", str(log))

    def task(x, index, state):
        return SegmentTask({"x": x}, True, 7, f"key{x}", 0, index, index, state, {}, None,
                           "generator", None, keep=True)

    try:
        a0 = run_segment(noisy, task(1.0, 0, None))
        run_segment(noisy, task(2.0, 0, None))
        a1 = run_segment(noisy, task(1.0, 1, a0.state))  # B ran in between: restores
        run_segment(noisy, task(1.0, 2, a1.state))  # nothing in between: from memory
        run_segment(noisy, task(1.0, 3, a0.state))  # an older checkpoint: restores
    finally:
        drop_live_models()
    opens = [(x, first) for kind, x, first, _ in _calls(log) if kind == "open"]
    assert opens == [(1.0, 0), (2.0, 0), (1.0, 1), (1.0, 3)]
