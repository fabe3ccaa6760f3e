"""Runners on one store share the work: leases, heartbeats, takeover, live status.

Real processes on one store: each key is computed once while both runners live; a
killed runner's points are computed by the survivor once its leases expire.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.keys import KEY_DTYPE
from notebookscan.store import Store
from notebookscan.store.leases import Runner, Watch, runner_states
from notebookscan.store.schema import LEASES, Layout

GRID = Layout("grid", ("x",))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNNER = textwrap.dedent("""
    import os, sys, time
    import notebookscan as ns

    store, calls, start, stop, pause, flush = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])

    def f(x):
        with open(calls, "a") as out:  # one line per call, appended whole
            out.write(f"{x}\\n")
        time.sleep(pause)
        return {"y": x * 2.0}

    ns.Scan(f, ns.grid(x=[float(v) for v in range(int(start), int(stop))]),
            store=store).run(executor="serial", progress=False, flush_interval=flush)
""")


def _start(tmp_path: Path, name: str, store: Path, start: int, stop: int,
           pause: float = 0.05, ttl: float = 30.0,
           flush: float = 0.2) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    calls = tmp_path / f"{name}.calls"
    env = {**os.environ, "PYTHONPATH": ROOT, "NOTEBOOKSCAN_LEASE_TTL": str(ttl)}
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(calls), str(start),
                             str(stop), str(pause), str(flush)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, calls


def _calls(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [float(line) for line in path.read_text().split()]


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _records_per_key(store: Path) -> dict[str, int]:
    """Rows of every shard, counted per key (the store keeps duplicates)."""
    counts: dict[str, int] = {}
    s = Store(store)
    for name in s.shard_files():
        shard = s.read_shard(name)
        for key in shard.bookkeeping["key"].astype(str).tolist():
            counts[key] = counts.get(key, 0) + 1
    return counts


def _finish(proc: subprocess.Popen, timeout: float = 60) -> None:
    try:
        _out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # hung: leave no process behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


def test_two_live_runners_compute_each_key_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a, calls_a = _start(tmp_path, "a", store, 0, 60)
    _wait_for(lambda: len(_calls(calls_a)) >= 3)  # a is under way when b starts
    b, calls_b = _start(tmp_path, "b", store, 20, 80)
    _finish(a)
    _finish(b)
    done_a, done_b = _calls(calls_a), _calls(calls_b)
    assert sorted(done_a + done_b) == [float(v) for v in range(80)]  # once each, all
    assert done_b  # b did share the work
    counts = _records_per_key(store)
    assert len(counts) == 80 and set(counts.values()) == {1}  # records == keys
    assert sorted(os.listdir(store / LEASES)) in ([], [".lock"])  # nothing left behind


def test_runners_waiting_for_each_other_first_store_what_they_hold(tmp_path: Path) -> None:
    # same space, started together, flushing rarely: each ends up waiting for points the
    # other holds; a runner releases its (received, unflushed) points before it waits
    store = tmp_path / "store"
    a, calls_a = _start(tmp_path, "a", store, 0, 40, pause=0.02, flush=60.0)
    b, calls_b = _start(tmp_path, "b", store, 0, 40, pause=0.02, flush=60.0)
    for proc in (a, b):
        _finish(proc, timeout=40)
    assert sorted(_calls(calls_a) + _calls(calls_b)) == [float(v) for v in range(40)]
    assert set(_records_per_key(store).values()) == {1}


def test_a_killed_runners_points_are_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a, calls_a = _start(tmp_path, "a", store, 0, 60, pause=0.1, ttl=1.0)
    _wait_for(lambda: len(_calls(calls_a)) >= 5)
    b, calls_b = _start(tmp_path, "b", store, 30, 70, pause=0.05, ttl=1.0)
    _wait_for(lambda: len(_calls(calls_b)) >= 3)
    held = {f for f in os.listdir(store / LEASES) if f.endswith(".lease")}
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=30)
    _finish(b)
    ds = ns.open_store(store)
    # b stored its own points and the points of a it overlaps: every key of 30..69 is done
    assert int((ds.ns_status.sel(x=slice(30, 69)) == "done").sum()) == 40
    assert held  # a held leases when it was killed ...
    assert not any(f.endswith(".lease") or f.endswith(".runner")
                   for f in os.listdir(store / LEASES))  # ... removed by b
    # the points a left unstored and b's space holds were computed by b
    stored_by_a = set(_calls(calls_a)) & set(range(30, 70))
    assert set(_calls(calls_b)) | stored_by_a >= set(map(float, range(30, 70)))
    # what a had received but not flushed was folded from its journal by b, not recomputed
    assert not [n for n in os.listdir(store / "journal") if f".{a.pid}." in n]


def _foreign(store: Path, runner: str, keys: np.ndarray, beat: int) -> None:
    """Write a runner record and a lease as a runner of another host would."""
    directory = store / LEASES
    directory.mkdir(exist_ok=True)
    (directory / f"{runner}.1.lease").write_bytes(keys.astype(KEY_DTYPE).tobytes())
    # its clock is far off: nothing compares it
    record = {"format": 1, "runner": runner, "run": "other", "beat": beat,
              "updated": time.time() + 86400 * 365, "started": 0.0, "host": "elsewhere",
              "pid": 1, "state": "running", "done": 1, "failed": 0, "total": 9,
              "running": 2, "workers": 2, "rate": 0.5, "ttl": 1.0, "period": 0.25}
    tmp = directory / ".tmp-x"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, directory / f"{runner}.runner")


def test_a_runner_of_another_host_is_dead_only_after_its_counter_stops_for_the_ttl(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOKSCAN_LEASE_TTL", "1.0")
    store = tmp_path / "store"
    space = ns.grid(x=[float(v) for v in range(6)])
    keys = space.key_array()
    runner = "elsewhere.1.abcdef"
    stop_beating = threading.Event()
    calls: list[tuple[float, float]] = []

    def beat() -> None:  # the other runner beats for 1.5 s, then dies
        count = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            count += 1
            _foreign(store, runner, keys[:3], count)
            time.sleep(0.2)
        stop_beating.set()

    Store(store).prepare(GRID, ["x"])
    _foreign(store, runner, keys[:3], 0)
    thread = threading.Thread(target=beat)
    start = time.monotonic()
    thread.start()
    ns.Scan(lambda x: calls.append((x, time.monotonic())) or x, space, store=store).run(
        executor="serial", progress=False)
    thread.join()
    held = [t - start for x, t in calls if x < 3]
    free = [t - start for x, t in calls if x >= 3]
    assert len(held) == 3 and len(free) == 3  # each once
    assert max(free) < 1.0  # the free points ran at once
    assert min(held) >= 1.5 + 1.0 - 0.3  # the held ones after the last beat + ttl
    assert not any(n.startswith(runner) for n in os.listdir(store / LEASES))


def test_runner_record_exists_from_start_and_counts_beats(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).prepare(GRID, ["x"])
    runner = Runner(str(store), "run-1", ttl=5.0)
    runner.start({"done": 0, "total": 4})
    name = f"{runner.id}.runner"
    first = json.loads((store / LEASES / name).read_text())
    assert first["state"] == "starting" and first["beat"] == 1
    assert runner.beat({"done": 1, "total": 4}, force=True)
    assert json.loads((store / LEASES / name).read_text())["beat"] == 2
    free, names = runner.claim(np.array([b"a" * 20, b"b" * 20], dtype=KEY_DTYPE))
    assert free.all() and (store / LEASES / names[0]).read_bytes() == b"a" * 20 + b"b" * 20
    # a second runner of this process sees the keys leased
    other = Runner(str(store), "run-2", ttl=5.0)
    other.start({})
    free2, _ = other.claim(np.array([b"b" * 20, b"c" * 20], dtype=KEY_DTYPE))
    assert free2.tolist() == [False, True]
    runner.close()
    other.close()
    assert sorted(os.listdir(store / LEASES)) == [".lock"]


def test_hostile_lease_files_are_read_as_data_or_ignored(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).prepare(GRID, ["x"])
    directory = store / LEASES
    directory.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"k" * 20)
    os.symlink(outside, directory / "elsewhere.1.aaa.1.lease")  # a link: not followed
    os.mkfifo(directory / "elsewhere.1.bbb.1.lease")  # a FIFO: never blocks
    (directory / "elsewhere.1.ccc.1.lease").write_bytes(b"x" * 21)  # not whole keys
    (directory / "elsewhere.1.ddd.runner").write_text("[" * 100000)  # deep JSON
    watch = Runner(str(store), "run", ttl=30.0)
    assert len(watch.held_elsewhere()) == 0
    assert outside.read_bytes() == b"k" * 20


def test_watch_needs_no_clock_but_its_own() -> None:
    watch = Watch(ttl=0.2)
    record = {"beat": 5, "updated": -1e12}
    assert not watch.dead("elsewhere.1.x", record)
    time.sleep(0.1)
    assert not watch.dead("elsewhere.1.x", {"beat": 6, "updated": 1e12})  # it beat
    time.sleep(0.25)
    assert watch.dead("elsewhere.1.x", {"beat": 6, "updated": 1e12})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notebookscan", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


def test_status_shows_live_progress_starting_and_stopped_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # starting: a record and no shard yet
    Store(store).prepare(GRID, ["x"])
    runner = Runner(str(store), "run-starting", ttl=30.0)
    runner.start({"done": 0, "total": 10})
    out = _cli("status", str(store))
    assert out.returncode == 0, out.stderr
    assert "starting" in out.stdout and "run-starting" in out.stdout
    runner.close()
    # running: live progress of a real run, then stopped once it is killed
    proc, calls = _start(tmp_path, "a", store, 0, 400, pause=0.02)
    _wait_for(lambda: len(_calls(calls)) >= 10)
    data = json.loads(_cli("status", str(store), "--json").stdout)
    (live,) = [r for r in data["live_runs"] if r["state"] == "running"]
    assert live["total"] == 400 and 1 <= live["done"] < 400 and live["workers"] == 1
    assert live["rate"] > 0 and live["eta_seconds"] > 0
    text = _cli("status", str(store)).stdout
    assert "live runs (1):" in text and "running" in text and "points/s, ETA" in text
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    out = _cli("status", str(store))
    assert "stopped (no heartbeat for" in out.stdout, out.stdout
    assert not any(n.endswith(".runner") or n.endswith(".lease")
                   for n in os.listdir(store / LEASES))  # cleaned
    assert "live runs" not in _cli("status", str(store)).stdout
    assert runner_states(str(store)) == []


def test_a_linked_leases_directory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).prepare(GRID, ["x"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, store / LEASES)
    calls: list[float] = []
    with pytest.raises(ns.StoreError, match="symbolic link, not a directory"):
        ns.Scan(lambda x: calls.append(x) or x, ns.grid(x=[1.0, 2.0]), store=store).run(
            executor="serial", progress=False)
    assert calls == [] and os.listdir(elsewhere) == []


def test_status_tells_a_silent_runner_of_another_host_from_a_beating_one(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).prepare(GRID, ["x"])
    keys = ns.grid(x=[1.0, 2.0]).key_array()
    _foreign(store, "elsewhere.1.silent", keys[:1], 7)
    stop = threading.Event()

    def beat() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            _foreign(store, "elsewhere.2.beating", keys[1:], count)
            time.sleep(0.1)

    thread = threading.Thread(target=beat)
    thread.start()
    _wait_for(lambda: (store / LEASES / "elsewhere.2.beating.runner").exists())
    try:
        states = {s.runner: s for s in runner_states(str(store))}
    finally:
        stop.set()
        thread.join()
    assert states["elsewhere.2.beating"].alive
    assert not states["elsewhere.1.silent"].alive
    names = os.listdir(store / LEASES)
    assert not any(n.startswith("elsewhere.1.silent") for n in names)  # cleaned
    assert any(n.startswith("elsewhere.2.beating") for n in names)  # kept


def test_leases_are_the_stores_own_and_never_merged_or_verified_as_shards(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    ns.Scan(lambda x: x, ns.grid(x=[1.0, 2.0]), store=store).run(executor="serial",
                                                                   progress=False)
    _foreign(store, "elsewhere.1.left", ns.grid(x=[1.0]).key_array(), 1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    from notebookscan.store.files import writer_tag

    host = writer_tag().rsplit(".", 1)[0]
    leftover = store / LEASES / f".tmp-user.{host}.{gone}.abc"  # a killed runner's
    leftover.write_text("{")
    report = ns.verify(store)
    assert report.healthy and report.removed_temporary == 1 and not leftover.exists()
    ns.merge(store, tmp_path / "dest")
    assert not (tmp_path / "dest" / LEASES).exists()
    # a directory holding only leases/ is taken for a store (a run is starting there)
    only = tmp_path / "only"
    (only / LEASES).mkdir(parents=True)
    Store(only).prepare(GRID, ["x"])
    assert (only / "notebookscan.json").exists()


def test_the_loop_beats_while_a_slow_point_runs_elsewhere(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # flush_interval far above the ttl: the loop still wakes for every beat while a
    # worker process computes one long point
    monkeypatch.setenv("NOTEBOOKSCAN_LEASE_TTL", "0.8")  # a beat every 0.2 s
    store = tmp_path / "store"
    beats: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name in os.listdir(store / LEASES) if (store / LEASES).exists() else []:
                if name.endswith(".runner"):
                    with contextlib.suppress(OSError, ValueError):
                        beats.append(json.loads((store / LEASES / name).read_text())["beat"])
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        ns.Scan(_slow, ns.grid(x=[1.0]), store=store).run(
            executor="processes", progress=False, flush_interval=60.0)
    finally:
        stop.set()
        thread.join()
    assert max(beats) - min(beats) >= 5  # >= 1.5 s of point at a beat per 0.2 s


def _slow(x: float) -> float:
    time.sleep(2.0)
    return x


def test_status_reads_a_hostile_record_as_data_in_bounded_time(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).prepare(GRID, ["x"])
    (store / LEASES).mkdir()
    (store / LEASES / "elsewhere.1.bad.runner").write_text(
        '{"beat": 1, "ttl": "x", "period": 1e9, "total": Infinity, "rate": NaN, '
        '"done": [1], "user": {"a": 1}, "state": "running"}')
    start = time.monotonic()
    out = _cli("status", str(store), "--json")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start < 20
    (run,) = json.loads(out.stdout)["live_runs"]
    assert run["state"] == "stopped" and run["total"] is None and run["done"] is None
