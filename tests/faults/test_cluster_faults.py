"""Engines and controllers of a real local ipyparallel cluster SIGKILLed under a running scan."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

import notebookscan as ns
from notebookscan.store import Store

from .conftest import SCALE, VARIANTS
from .harness import ScanProcess, check_and_finish, clean_store, kill, rng_for

N = 60


def _cluster_processes(kind: str) -> list[psutil.Process]:
    """This process's engines (not their nannies) or controller, found as its children."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            engine = kind == "engine" and "nanny" not in cmdline
            if f"ipyparallel.{kind}" in cmdline and (engine or kind == "controller"):
                found.append(child)
    return found


@contextlib.contextmanager
def _cluster():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    handle = ns.start_cluster(2, quiet=True, heartbeat=0.5)
    try:
        yield handle
    finally:
        with contextlib.suppress(Exception):
            handle.stop()
        # what a killed controller cannot stop any more: engines and nannies it started
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=10)


def _sigkill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_engines_killed_at_random_moments(tmp_path, counts, variant):
    """One engine or all of them SIGKILLed while a scan (in a client process) runs on them;
    replacements start; the scan finishes with every point, none lost."""
    rng = rng_for(f"engines-{variant}")
    clean = clean_store(tmp_path, N)
    with _cluster() as handle:
        for campaign in range(SCALE[variant]):
            scan = ScanProcess(tmp_path, f"eng{campaign}", n=N, sleep=0.1,
                               executor=f"connect:{handle.connection_file}")
            proc = scan.start()
            counts.runs += 1
            for kind in ("one", "one", "all", "one", "all", "one"):
                time.sleep(rng.uniform(0.5, 2.0))
                if proc.poll() is not None:
                    break
                engines = _cluster_processes("engine")
                victims = engines if kind == "all" else [rng.choice(engines)] if engines else []
                if not victims:
                    continue
                _sigkill(victims)
                counts.fault(f"sigkill {kind} engine(s)")
                time.sleep(rng.uniform(0.0, 1.0))
                handle.cluster.start_engines_sync(n=len(victims))
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                kill(proc)
                pytest.fail("the scan did not finish within 180 s of its engines being killed")
            with open(f"{scan.store}.log") as log:
                assert proc.returncode == 0, log.read()[-3000:]
            check_and_finish(scan, clean, counts)


def _kill_controller_under_a_scan(tmp_path, name, rng, counts, wait=20.0):
    """Run a scan on a fresh cluster, SIGKILL its controller; True if the client ended
    by itself within ``wait`` seconds (it is killed otherwise)."""
    with _cluster() as handle:
        scan = ScanProcess(tmp_path, name, n=N, sleep=0.1,
                           executor=f"connect:{handle.connection_file}")
        proc = scan.start()
        counts.runs += 1
        deadline = time.monotonic() + 60
        while not os.path.exists(scan.cfg["ack"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the client is connected and has stored something
        time.sleep(rng.uniform(0.0, 1.5))
        _sigkill(_cluster_processes("controller"))
        killed = time.monotonic()
        counts.fault("sigkill controller")
        try:
            proc.wait(timeout=wait)
            ended = True
            counts.ended_after.append(round(time.monotonic() - killed, 1))
        except subprocess.TimeoutExpired:
            ended = False
            counts.notes.append(f"client still running {wait:.0f} s after its controller died")
            kill(proc)
    return scan, ended


@pytest.mark.parametrize("variant", VARIANTS)
def test_controller_killed_under_a_scan(tmp_path, counts, variant):
    """The controller SIGKILLed mid-scan: the store stays healthy with everything
    acknowledged, and a later run elsewhere completes."""
    rng = rng_for(f"controller-{variant}")
    clean = clean_store(tmp_path, N)
    for campaign in range(SCALE[variant]):
        scan, _ = _kill_controller_under_a_scan(tmp_path, f"ctl{campaign}", rng, counts)
        assert ns.verify(scan.store).healthy if Store(scan.store).exists else True
        lost = scan.lost()
        counts.lost += len(lost)
        assert not lost
        scan.cfg["executor"] = "processes"
        check_and_finish(scan, clean, counts)


def test_client_ends_when_its_controller_dies(tmp_path, counts):
    """A SIGKILLed controller never answers again: the client notices within its
    controller_timeout, stores what finished, and ends with a clear error."""
    scan, ended = _kill_controller_under_a_scan(tmp_path, "hang", rng_for("hang"), counts,
                                              wait=20.0)
    assert ended, "the client still runs 20 s after its controller died"
    with open(f"{scan.store}.log") as log:
        text = log.read()
    assert "ExecutorError" in text and "stopped answering" in text, text[-3000:]
    assert "run() again to resume" in text
    assert not scan.lost()


# --------------------------------------------------------------------------- process pools


def _dies_at_13(x: int) -> dict[str, int]:
    """Innocent everywhere but at x == 13, where it kills its worker process."""
    time.sleep(0.02)
    if x == 13:
        os._exit(1)
    return {"y": x * x}


def _segfaults_at_13(x: int) -> dict[str, int]:
    time.sleep(0.02)
    if x == 13:
        import ctypes

        ctypes.string_at(0)
    return {"y": x * x}


@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize(("model", "how"), [(_dies_at_13, "exit code 1"),
                                             (_segfaults_at_13, "killed by SIGSEGV")])
def test_a_worker_killed_by_one_point_costs_no_other_point(tmp_path, counts, chunk_size,
                                                            model, how):
    """A real process pool, one point killing its worker (os._exit(1), a segfault) among
    60 innocent ones and max_retries=1: each time the pool breaks every task in it fails,
    yet only the guilty point may be charged. Every innocent point is stored done; the
    guilty one failed, with the worker's exit code or signal in its error."""
    store = tmp_path / "pool"
    run = ns.Scan(model, ns.grid(x=list(range(61))), store=store).run(
        executor="processes", progress=False, max_retries=1, chunk_size=chunk_size)
    counts.runs += 1
    executor = run.executor
    counts.fault(f"pool worker killed by its point ({how})", executor.workers_killed_by_tasks)
    ds = ns.open_store(store)
    failed = ds.x.values[ds.ns_status.values != "done"].tolist()
    assert failed == [13]
    error = str(ds.ns_error.sel(x=13).item())
    assert "WorkerLost" in error and how in error, error
    assert (ds.y.sel(x=[x for x in range(61) if x != 13]).values
            == [x * x for x in range(61) if x != 13]).all()
    # found alone max_retries + 1 times (plus once per halving of a bigger chunk)
    assert executor.workers_killed_by_tasks >= 2
    if chunk_size == 1:
        assert executor.workers_killed_by_tasks == 2
    assert run.progress.done == 60 and run.progress.failed == 1


def test_pool_workers_end_when_their_client_is_killed(tmp_path, counts):
    """A client running a scan on the `processes` executor SIGKILLed while its workers are
    inside a long point: the workers notice their parent is gone and exit within ~10 s
    (without the watch they would finish the point, and a stuck one would run forever)."""
    scan = ScanProcess(tmp_path, "orphans", n=8, sleep=600.0, executor="processes")
    proc = scan.start()
    counts.runs += 1
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            workers = psutil.Process(proc.pid).children()
        if workers and sum(scan.calls().values()) >= len(workers):
            break  # every worker is inside the model
        time.sleep(0.05)
    assert workers and proc.poll() is None, Path(f"{scan.store}.log").read_text()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    counts.fault("sigkill client of a process pool")

    def running(p: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(running, workers)):
        time.sleep(0.1)
    left = [p for p in workers if running(p)]
    counts.orphans += len(left)
    kill(proc)  # whatever is left in its session
    assert not left, f"{len(left)} pool worker(s) still run 10 s after their client died"
