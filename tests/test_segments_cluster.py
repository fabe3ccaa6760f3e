"""Segmented scans on real ipyparallel engines: an engine killed mid-segment costs one segment."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.segments import Segment, SegmentedScan

pytestmark = pytest.mark.cluster
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def logged(x: int, log: str, segments):
    """Counts up by ``x``; logs which process ran which segment; slow enough to be killed."""
    state = segments.state or {"n": 0}
    for segment in segments:
        with open(log, "a") as f:
            f.write(f"{x} {segment.index} {os.getpid()}\n")
        time.sleep(0.15)
        state = {"n": state["n"] + x}
        yield Segment({"n": np.array([state["n"]])}, state=state, time=[segment.index])


#: the budget of segments run back to back in one task (see the segment source)
SEGMENTS_AT_ONCE = "notebookscan.segments.source.BATCH_SECONDS"


def test_engine_killed_mid_segment_resumes_from_the_last_checkpoint(ipp_cluster, ipp_client,
                                                                    tmp_path, monkeypatch):
    monkeypatch.setattr(SEGMENTS_AT_ONCE, 0.0)  # one segment per task: one re-runs
    pids = ipp_cluster.engine_pids()
    victim = pids[min(pids)]
    log = str(tmp_path / "calls.log")
    space = ns.grid(x=[1, 2, 3, 4], log=[log])
    scan = SegmentedScan(logged, space, tmp_path / "s", segments=5)
    run = scan.run(executor=ipp_client, progress=False, wait=False)

    def calls() -> list[tuple[int, int, int]]:
        if not os.path.exists(log):
            return []
        with open(log) as f:
            return [tuple(map(int, line.split())) for line in f.read().split("\n")[:-1]]

    deadline = time.monotonic() + 60
    while not any(pid == victim and seg >= 2 for _, seg, pid in calls()):
        assert time.monotonic() < deadline, "no segment ran on the engine to kill"
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
    progress = run.wait(timeout=120)
    assert (progress.done, progress.failed) == (4, 0), progress
    killed = [(x, seg) for x, seg, pid in calls() if pid == victim]
    rerun = [c for c in killed if sum(1 for x, s, _ in calls() if (x, s) == c) > 1]
    assert rerun, "the segment running on the killed engine was not run again"
    # only that segment ran twice: the point resumed from its last checkpoint
    repeats = [c for c in {(x, s) for x, s, _ in calls()}
               if sum(1 for x, s, _ in calls() if (x, s) == c) > 1]
    assert len(repeats) == 1

    clean = SegmentedScan(logged, ns.grid(x=[1, 2, 3, 4], log=[str(tmp_path / "other.log")]),
                          tmp_path / "clean", segments=5)
    clean.run(executor="serial", progress=False)
    np.testing.assert_array_equal(scan.recordings().n.values.reshape(4, 5),
                                  clean.recordings().n.values.reshape(4, 5))
    xr.testing.assert_equal(scan.recordings().n.squeeze("log", drop=True),
                            clean.recordings().n.squeeze("log", drop=True))


def test_a_segmented_scan_ends_when_its_controller_dies(tmp_path):
    """The local controller SIGKILLed under a segmented scan: the scan stops with an
    ExecutorError, keeping the segments that finished; a fresh cluster resumes from the
    checkpoints and completes the scan with the values of an uninterrupted one."""
    import contextlib

    import psutil
    from conftest import kill_new_controllers, session_processes, wait_for_no_session_processes

    from notebookscan.errors import ExecutorError
    from notebookscan.executors.local_cluster import local_executor, shutdown_local_executor

    before = {p.pid for p in session_processes()}
    log = str(tmp_path / "calls.log")
    space = ns.grid(x=[1, 2, 3, 4], log=[log])
    try:
        executor = local_executor(2, quiet=True)
        executor.controller_timeout = 2.0
        scan = SegmentedScan(logged, space, tmp_path / "s", segments=12)
        run = scan.run(executor=executor, progress=False, wait=False, flush_interval=0.2)
        deadline = time.monotonic() + 60
        while run.progress.segments_done < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not run.done()
        kill_new_controllers(before)
        with pytest.raises(ExecutorError, match="stopped answering"):
            run.wait(timeout=30)
        progress = scan.run(executor=None, progress=False).progress
        assert progress.error is None
        assert (ns.open_store(tmp_path / "s").ns_status == "done").all()
        n = scan.recordings().n.values.reshape(4, 12)
        np.testing.assert_array_equal(n, np.outer([1, 2, 3, 4], np.arange(1, 13)))
    finally:
        shutdown_local_executor()
        for proc in wait_for_no_session_processes(timeout=5, ignore=before):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def opened(x: int, log: str, segments):
    """Counts up by ``x``; logs every open of the model and every segment, with the pid."""
    with open(log, "a") as f:
        f.write(f"open {x} {segments.first} {os.getpid()}\n")
    state = segments.state or {"n": 0}
    for segment in segments:
        with open(log, "a") as f:
            f.write(f"run {x} {segment.index} {os.getpid()}\n")
        time.sleep(0.05)
        state = {"n": state["n"] + x}
        yield Segment({"n": np.array([state["n"]])}, state=state, time=[segment.index])


def test_segments_follow_their_engine_and_an_engine_killed_between_segments_restores(
        ipp_cluster, ipp_client, tmp_path, monkeypatch):
    """Each point's next segment goes to the engine holding its live model (one open per
    point); killing that engine between two segments makes the point restore from its
    checkpoint on another engine, with the same results."""
    monkeypatch.setattr(SEGMENTS_AT_ONCE, 0.0)  # one segment per task: the kill lands between
    pids = {f"engine {eid}": pid for eid, pid in ipp_cluster.engine_pids().items()}
    log = str(tmp_path / "calls.log")
    space = ns.grid(x=[1, 2, 3, 4], log=[log])
    killed: list[int] = []

    def kill_between(point, segment, worker, **_):
        if point["x"] == 2 and segment == 1 and not killed:
            killed.append(pids[worker])
            os.kill(pids[worker], signal.SIGKILL)

    scan = SegmentedScan(opened, space, tmp_path / "s", segments=5)
    scan.events.on("segment_done", kill_between)
    progress = scan.run(executor=ipp_client, progress=False, wait=False).wait(timeout=120)
    assert (progress.done, progress.failed) == (4, 0), progress
    with open(log) as f:
        calls = [(k, int(x), int(i), int(pid)) for k, x, i, pid in map(str.split, f)]
    for x in (1, 2, 3, 4):
        mine = [(k, i, pid) for k, px, i, pid in calls if px == x]
        runs = [(i, pid) for k, i, pid in mine if k == "run"]
        assert sorted({i for i, _ in runs}) == [0, 1, 2, 3, 4]
        # a segment ran twice only when the engine running it was killed
        assert all(pid == killed[0] for i, pid in runs if [j for j, _ in runs].count(i) > 1)
        # opened again only where its worker changed: never by the engine that ran its
        # previous segment (that one continued from memory)
        for before, (kind, _, pid) in itertools.pairwise(mine):
            if kind == "open":
                assert before[2] == killed[0] != pid, (x, mine)
        if mine[0][2] != killed[0]:  # started on the engine that lived: opened once
            assert sum(1 for k, _, _ in mine if k == "open") == 1, (x, mine)
    assert ("open", 2, 2) in {(k, px, i) for k, px, i, _ in calls}  # restored from its 2nd
    results = scan.recordings()
    assert results.n.sel(log=log).values[:, -1].tolist() == [5, 10, 15, 20]
