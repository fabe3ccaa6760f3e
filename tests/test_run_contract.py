"""The run loop's contract, the same for every source of work: a plain function (the
point-chunk source) and a segmented generator model (the segment source).

Every test counts what really ran from marker files the user's code writes (one per
call, with its start and end time), so "nothing recomputed" and "several workers at
once" are observed, not assumed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.executors import FuturesExecutor
from notebookscan.run.loop import Progress
from notebookscan.segments import Segment, SegmentedScan

KINDS = ["plain", "segmented"]
SEGMENTS = 3


# ------------------------------------------------------------------ user code


def _mark(marks: str, name: str, started: float) -> None:
    path = os.path.join(marks, f"{name}@{uuid.uuid4().hex}")
    with open(path, "w") as f:
        f.write(f"{started} {time.time()}")


def _die_once(marks: str, name: str) -> None:
    """SIGKILL this worker process the first time ``name`` runs."""
    try:
        os.close(os.open(os.path.join(marks, f"died-{name}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _behave(how: str, marks: str, name: str, x: int) -> None:
    if how == "die" and x == 2:
        _die_once(marks, name)
    elif how == "swallow" and x == 1:
        while True:  # a retry loop that swallows every Exception
            try:  # noqa: SIM105 - the user's code, as written
                time.sleep(0.05)
            except Exception:
                pass
    elif how == "stuck_in_c" and x == 1:
        # native code that never returns to Python: signals stay blocked in the C call
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
        try:
            ctypes.CDLL(None).sleep(30)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM, signal.SIGINT})


def plain(x: int, marks: str, delay: float, how: str):
    started = time.time()
    _behave(how, marks, f"{x}", x)
    time.sleep(delay)
    _mark(marks, f"{x}", started)
    return {"y": 2.0 * x}


def stepped(x: int, marks: str, delay: float, how: str, segments):
    total = 0.0 if segments.state is None else segments.state["total"]
    for segment in segments:
        started = time.time()
        _behave(how, marks, f"{x}-{segment.index}", x if segment.index == 1 else -1)
        time.sleep(delay)
        total += x
        _mark(marks, f"{x}-{segment.index}", started)
        yield Segment({"v": np.array([total])}, state={"total": total},
                      time=np.array([float(segment.index)]))


def _scan(kind: str, tmp_path, n: int, delay: float = 0.0, how: str = "") -> ns.Scan:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    space = ns.grid(x=list(range(n)), marks=[str(marks)], delay=[delay], how=[how])
    if kind == "plain":
        return ns.Scan(plain, space, tmp_path / "store")
    return ns.Scan(stepped, space, tmp_path / "store", segments=SEGMENTS)


def _calls(tmp_path) -> list[tuple[str, float, float]]:
    out = []
    for name in os.listdir(tmp_path / "marks"):
        if "@" in name:
            with open(tmp_path / "marks" / name) as f:
                started, ended = map(float, f.read().split())
            out.append((name.split("@")[0], started, ended))
    return out


def _items(kind: str, n: int) -> list[str]:
    if kind == "plain":
        return [f"{x}" for x in range(n)]
    return [f"{x}-{s}" for x in range(n) for s in range(SEGMENTS)]


def _check_complete(scan: ns.Scan, kind: str, n: int) -> None:
    """Every point done, with the right results."""
    ds = scan.results()
    assert (ds.ns_status.values == "done").all(), ds.ns_status.values
    x = ds.x.values
    if kind == "plain":
        assert ds.y.squeeze().values.tolist() == (2.0 * x).tolist()
    else:
        assert ds.segments.squeeze().values.tolist() == [SEGMENTS] * n
        for i in range(n):
            assert scan.state(scan.space.keys()[i])["total"] == SEGMENTS * i


# ------------------------------------------------------------------ the contract


@pytest.mark.parametrize("kind", KINDS)
def test_a_scan_is_a_scan(kind, tmp_path):
    scan = _scan(kind, tmp_path, 2)
    assert isinstance(scan, ns.Scan)
    assert isinstance(scan, SegmentedScan) == (kind == "segmented")


@pytest.mark.parametrize("kind", KINDS)
def test_a_detached_run_completes_and_its_handle_is_the_same(kind, tmp_path):
    import sys

    import cloudpickle

    scan = _scan(kind, tmp_path, 4)
    # the runner cannot import this test module: its functions travel by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        run = scan.run(executor="serial", detach=True, flush_interval=0.2)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    progress = run.wait(timeout=60)
    assert isinstance(progress, Progress) and run.done(), run.log()
    assert progress.done == 4 and not progress.stopped, run.log()
    assert ns.attach(scan.store.path).run_id == run.run_id
    _check_complete(scan, kind, 4)
    assert sorted(name for name, _, _ in _calls(tmp_path)) == sorted(_items(kind, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_stop_and_resume_lose_nothing_and_recompute_nothing(kind, tmp_path):
    n = 6
    scan = _scan(kind, tmp_path, n)
    seen = []

    def stop_after_two(**_):
        seen.append(1)
        if len(seen) == 2:
            scan.stop(wait=False)

    scan.events.on("segment_done" if kind == "segmented" else "point_done", stop_after_two)
    first = scan.run(executor="serial", progress=False, chunk_size=1) if kind == "plain" \
        else scan.run(executor="serial", progress=False)
    assert first.progress.stopped
    ran_first = len(_calls(tmp_path))
    assert 0 < ran_first < len(_items(kind, n))
    fresh = _scan(kind, tmp_path, n)  # a new process would build the scan again
    second = fresh.run(executor="serial", progress=False)
    assert not second.progress.stopped
    names = sorted(name for name, _, _ in _calls(tmp_path))
    assert names == sorted(_items(kind, n))  # each item ran exactly once
    _check_complete(fresh, kind, n)


@pytest.mark.parametrize("kind", KINDS)
def test_a_worker_killed_mid_run_costs_nothing(kind, tmp_path):
    n = 5
    scan = _scan(kind, tmp_path, n, how="die")
    run = scan.run(executor="processes", progress=False)
    assert run.progress.failed == 0
    assert os.path.exists(tmp_path / "marks" / ("died-2" if kind == "plain" else "died-2-1"))
    _check_complete(scan, kind, n)


@pytest.mark.parametrize("kind", KINDS)
def test_workers_that_join_late_are_used(kind, tmp_path):
    """Engines that join a cluster late show in ``worker_count()``: the loop looks again
    every 2 s and keeps them busy (here: a pool of 3 processes that reports 1 at first)."""
    n = 18 if kind == "plain" else 12
    scan = _scan(kind, tmp_path, n, delay=0.3)
    executor = FuturesExecutor(ProcessPoolExecutor(max_workers=3), max_workers=1)
    workers_seen = []

    def join(workers, **_):
        workers_seen.append(workers)
        executor.max_workers = 3  # two more engines connected

    scan.events.on("progress", join)
    try:
        run = scan.run(executor=executor, progress=False, **(
            {"chunk_size": 1} if kind == "plain" else {}))
    finally:
        executor.executor.shutdown()
    assert run.progress.workers == 3 and workers_seen[0] == 1
    calls = _calls(tmp_path)
    most = max(sum(1 for _, s, e in calls if s <= t < e) for _, t, _ in calls)
    assert most == 3, most  # 1 worker x 2 tasks in flight at first; then 3 at once
    _check_complete(scan, kind, n)


def test_workers_write_their_own_shards(tmp_path):
    n = 8
    scan = _scan("plain", tmp_path, n)
    shards = []
    scan.events.on("flushed", lambda shard, **_: shards.append(shard))
    run = scan.run(executor="processes", progress=False, writer="workers", chunk_size=2)
    assert run.progress.shards == len(shards) >= n // 2
    assert sorted(os.listdir(scan.store.shards_dir)) == sorted(set(shards)) or \
        run.progress.shards > 16  # compacted
    _check_complete(scan, "plain", n)


# ------------------------------------------------------------------ timeouts


@pytest.mark.parametrize("executor", ["serial", "processes"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_timeout_holds_when_the_code_swallows_exceptions(kind, executor, tmp_path):
    scan = _scan(kind, tmp_path, 3, how="swallow")
    started = time.monotonic()
    run = scan.run(executor=executor, progress=False, timeout=1.0)
    assert time.monotonic() - started < 8
    assert run.progress.failed == 1 and run.progress.done == 2
    error = str(scan.results().ns_error.sel(x=1).squeeze().item())
    assert "timed out" in error and "PointTimeout" in error, error


@pytest.mark.parametrize("kind", KINDS)
def test_a_point_stuck_in_c_is_ended_and_recorded_as_timed_out(kind, tmp_path):
    scan = _scan(kind, tmp_path, 3, how="stuck_in_c")
    started = time.monotonic()
    run = scan.run(executor="processes", progress=False, timeout=1.0,
                   **({"chunk_size": 1} if kind == "plain" else {}))
    assert time.monotonic() - started < 12
    assert run.progress.failed == 1 and run.progress.done == 2
    error = str(scan.results().ns_error.sel(x=1).squeeze().item())
    assert "timed out" in error, error


# ------------------------------------------------------------------ one scan class


def exiting(x: int):
    if x == 1:
        raise SystemExit(3)
    return {"y": float(x)}


def exiting_model(x: int, segments):
    for segment in segments:
        if x == 1:
            raise SystemExit(3)
        yield Segment({"v": np.array([1.0])}, state={}, time=np.array([float(segment.index)]))


@pytest.mark.parametrize("executor", ["serial", "processes"])
@pytest.mark.parametrize("kind", KINDS)
def test_sys_exit_in_user_code_fails_only_its_point(kind, executor, tmp_path):
    space = ns.grid(x=[0, 1, 2])
    scan = ns.Scan(exiting, space, tmp_path / "s") if kind == "plain" else \
        ns.Scan(exiting_model, space, tmp_path / "s", segments=2)
    run = scan.run(executor=executor, progress=False)
    assert (run.progress.done, run.progress.failed) == (2, 1)
    assert "SystemExit" in str(scan.results().ns_error.sel(x=1).item())


@pytest.mark.parametrize("kind", KINDS)
def test_refine_adds_points_and_only_they_run(kind, tmp_path):
    scan = _scan(kind, tmp_path, 2)
    scan.run(executor="serial", progress=False)
    before = len(_calls(tmp_path))
    run = scan.refine(x=[0, 1, 2, 3]).run(executor="serial", progress=False)
    assert run.progress.skipped == 2 and run.progress.done == 2
    per_point = 1 if kind == "plain" else SEGMENTS
    assert len(_calls(tmp_path)) == before + 2 * per_point
    _check_complete(scan, kind, 4)


def test_segments_is_the_only_spelling(tmp_path):
    assert not hasattr(ns, "segmented")
    with pytest.raises(ns.ScanError, match="segments=N"):
        ns.Scan(stepped, ns.grid(x=[1], marks=["m"], delay=[0.0], how=[""]), tmp_path / "s")
    with pytest.raises(ns.ScanError, match="only apply to segmented models"):
        ns.Scan(plain, ns.grid(x=[1], marks=["m"], delay=[0.0], how=[""]), tmp_path / "s",
                segments=2)


# ------------------------------------------------------------------ a third source


def halve(x: float) -> float:
    return x / 2


class HalvingSource:
    """A sampler: each result decides the next point (none known in advance), until
    the value is small. What python-adaptive's learners look like to the loop."""

    task_name = "a point"
    early_first_flush = False
    flush_when_drained = False

    def __init__(self, starts):
        from notebookscan.run.loop import Progress

        self.progress = Progress()
        self.ready = list(starts)
        self.seen: list[float] = []

    def start(self):
        return {}

    def next_tasks(self, slots, workers):
        from notebookscan.run.loop import Task

        tasks = [Task(halve, (x,), x) for x in self.ready[:slots]]
        self.ready = self.ready[slots:]
        self.progress.total += len(tasks)  # the total is only known as it grows
        return tasks

    def pending(self):
        return bool(self.ready)

    def receive(self, tag, result):
        self.seen.append(result)
        self.progress.done += 1
        if result > 1e-3:
            self.ready.append(result)

    def split(self, tag):
        return []

    def fail(self, tag, error):
        self.progress.failed += 1

    def commit(self):
        pass

    def buffered(self):
        return 0, 0

    def seconds_left(self):
        return float("inf")

    def flush(self):
        pass

    refresh = compact = close = heartbeat = flush

    def summary(self):
        return {}

    def waiting(self):
        return 0.0

    seconds_to_beat = seconds_left


def test_a_source_with_no_task_until_results_arrive_runs_to_its_end():
    from notebookscan.executors import process_pool
    from notebookscan.run.loop import LoopSettings, RunLoop

    source = HalvingSource([1.0, 3.0])
    executor = process_pool(2)
    try:
        progress = RunLoop(source, executor, LoopSettings(), ns.Events()).run()
    finally:
        executor.shutdown()
    assert progress.done == progress.total == len(source.seen) == 22  # 10 + 12 halvings
    assert min(source.seen) <= 1e-3 and not progress.stopped
