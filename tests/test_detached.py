"""Detached scans outlive the process that started them; any process can attach."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import notebookscan as ns
from notebookscan.run.loop import Progress

STARTER = textwrap.dedent("""
    import sys, time
    import notebookscan as ns

    def slow_square(x: int):
        time.sleep(0.05)
        return x * x

    scan = ns.Scan(slow_square, ns.grid(x=range(40)), store=sys.argv[1])
    run = scan.run(executor="processes", detach=True, flush_interval=0.2)
    print("started", run.run_id, flush=True)
    time.sleep(60)   # killed by the test long before
""")


def test_a_detached_scan_survives_its_starter_and_is_attached_from_another_process(tmp_path):
    script = tmp_path / "starter.py"
    script.write_text(STARTER)
    store = tmp_path / "store"
    starter = subprocess.Popen([sys.executable, str(script), str(store)],
                               stdout=subprocess.PIPE, text=True)
    line = starter.stdout.readline()
    assert line.startswith("started"), line
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    run = ns.attach(store)
    assert run.run_id == line.split()[1]
    progress = run.wait(timeout=120)
    assert isinstance(progress, Progress)
    assert run.done() and not progress.stopped and progress.finished_at, run.log()
    assert progress.done == 40
    ds = ns.open_store(store)
    assert ds.result.values.tolist() == [x * x for x in range(40)]
    assert not any(name.endswith(".pkl") for _, _, names in os.walk(store) for name in names)


def test_a_detached_scan_can_be_stopped_and_resumed(tmp_path):
    def slow(x: int):
        time.sleep(0.1)
        return x

    scan = ns.Scan(slow, ns.grid(x=range(60)), store=tmp_path / "s")
    run = scan.run(executor="serial", detach=True, flush_interval=0.2)
    deadline = time.monotonic() + 60
    while run.progress.done < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = run.stop()
    assert isinstance(stopped, Progress) and run.done()
    status = run.wait(timeout=60)
    assert status.stopped, (status, run.log())
    stored = scan.status()["done"]
    assert 3 <= stored < 60
    # the runner had no source file for `slow` (pickled by value), yet recorded the
    # identity it has here: its points are not "from other code"
    assert scan.stale().count == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ns.StaleResultsWarning)
        progress = scan.run(executor="serial", progress=False).progress
    assert progress.done == 60 - stored


def test_attach_without_runs_says_how_to_start_one(tmp_path):
    with pytest.raises(ns.ScanError, match="detach=True"):
        ns.attach(tmp_path)


def test_detach_refuses_executors_it_cannot_recreate(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    scan = ns.Scan(lambda x: x, ns.grid(x=[1]), store=tmp_path / "s")
    with ThreadPoolExecutor() as pool, pytest.raises(ns.ScanError, match="detach=True needs"):
        scan.run(executor=pool, detach=True)
