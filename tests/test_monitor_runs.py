"""The run monitor sees every run on its store, stops it and joins it (real processes).

Runs started in this process (another Scan object), in another process (a Python
script), and detached (``scan.run(detach=True)``) are each shown live by a new
:class:`RunMonitor` on the store; Stop stops them through the store's stop request, and
Run joins them without computing any point twice (every call of the function is logged
to a file, so a point computed twice would show).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

import notebookscan as ns
from notebookscan.store.leases import Watch, live_runners, request_stop

pytest.importorskip("ipywidgets")

from notebookscan.widgets import RunMonitor

POINTS = 120
MODULE = textwrap.dedent("""
    import os, time

    def slow(x: int):
        with open(os.environ["NS_CALLS_LOG"], "a") as f:
            f.write(f"{x}\\n")
        time.sleep(0.08)
        if x % 7 == 3:
            raise ValueError(f"x={x} too big")
        return {"y": float(x)}
""")
SCRIPT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, sys.argv[2])
    import notebookscan as ns
    from monitored import slow
    scan = ns.Scan(slow, ns.grid(x=range({POINTS})), store=sys.argv[1])
    scan.run(executor="serial", progress=False, flush_interval=0.3)
""")


@pytest.fixture
def slow(tmp_path, monkeypatch):
    """The scanned function, importable here and in other processes; calls logged."""
    (tmp_path / "monitored.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NS_CALLS_LOG", str(tmp_path / "calls.log"))
    # a detached runner imports it too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.getcwd()]))
    sys.modules.pop("monitored", None)
    return importlib.import_module("monitored").slow


def scan_of(slow, tmp_path) -> ns.Scan:
    return ns.Scan(slow, ns.grid(x=range(POINTS)), store=tmp_path / "s")


def start_script(tmp_path) -> subprocess.Popen:
    script = tmp_path / "runner.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "s"), str(tmp_path)],
                            env={**os.environ, "PYTHONPATH": os.getcwd()},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def calls(tmp_path) -> Counter:
    log = tmp_path / "calls.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def runner_of(store, pid: int, timeout: float = 60) -> str:
    watch = Watch(30.0)
    found: list[str] = []

    def seen() -> bool:
        found[:] = [r.runner for r in live_runners(str(store), watch)
                    if r.record.get("pid") == pid and r.record.get("done", 0) >= 2]
        return bool(found)
    wait_for(seen, timeout, f"the runner of pid {pid}")
    return found[0]


# --------------------------------------------------------------- the store's stop request

def test_a_stop_request_through_the_store_stops_a_runner_of_another_process(slow, tmp_path):
    process = start_script(tmp_path)
    try:
        runner = runner_of(tmp_path / "s", process.pid)
        request_stop(str(tmp_path / "s"), runner)
        assert process.wait(timeout=30) == 0, process.stdout.read()
    finally:
        process.kill()
    status = scan_of(slow, tmp_path).status()
    assert 2 <= status["done"] + status["failed"] < POINTS
    assert not os.path.exists(tmp_path / "s" / "leases" / f"{runner}.stop")  # cleaned up


def test_a_stop_request_not_made_by_the_runners_user_is_ignored(slow, tmp_path):
    process = start_script(tmp_path)
    store = tmp_path / "s"
    try:
        runner = runner_of(store, process.pid)
        stop = store / "leases" / f"{runner}.stop"
        planted = tmp_path / "now.txt"
        planted.write_text("now")
        attempts = [lambda: os.symlink(planted, stop),  # a link to our own file
                    lambda: os.link(planted, stop)]  # a hard link (two names)
        if os.geteuid() == 0:  # another user's file (only root can make one here)
            def foreign() -> None:
                stop.write_text("now")
                os.chown(stop, 65534, 65534)
            attempts.append(foreign)
        for plant in attempts:
            plant()
            time.sleep(2.5)  # two beats at least
            assert process.poll() is None, "a stop request not of its user stopped the run"
            stop.unlink()
        request_stop(str(store), runner, now=True)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    with pytest.raises(ns.NotebookscanError, match="not a runner id"):
        request_stop(str(store), "../../etc/passwd")


# --------------------------------------------------------------- the monitor, each kind of run

def test_the_monitor_shows_and_stops_a_run_of_another_process(slow, tmp_path):
    process = start_script(tmp_path)
    try:
        runner_of(tmp_path / "s", process.pid)
        monitor = RunMonitor(scan_of(slow, tmp_path), executor="serial")
        wait_for(lambda: monitor.state == "watching", 20, "the monitor to see the run")
        assert [o["pid"] for o in monitor.others] == [process.pid]
        assert not monitor.others[0]["detached"]
        assert "running elsewhere" in monitor.state_label.value
        wait_for(lambda: monitor.counts.get("done", 0) >= 2, 20, "stored points counted")
        assert 'data-state="watching"' in monitor.progress_html.value
        assert monitor.workers == 1 and monitor.busy == 1  # the other run's serial worker
        assert not monitor.stop_button.disabled and monitor.resume_button.disabled
        monitor.stop_button.click()
        assert process.wait(timeout=30) == 0
        wait_for(lambda: monitor.state == "stopped", 20, "the monitor to show it stopped")
        assert not monitor.resume_button.disabled
        stored = monitor.counts["done"] + monitor.counts["failed"]
        assert 2 <= stored < POINTS and monitor.counts["total"] == POINTS
    finally:
        process.kill()
        monitor.close()


def test_the_monitor_shows_and_stops_a_run_started_in_this_process(slow, tmp_path):
    first = scan_of(slow, tmp_path)
    run = first.run(executor="serial", wait=False, progress=False, flush_interval=0.3)
    monitor = RunMonitor(scan_of(slow, tmp_path), executor="serial")  # another Scan object
    try:
        wait_for(lambda: monitor.state == "watching", 20, "the monitor to see the run")
        assert [o["pid"] for o in monitor.others] == [os.getpid()]
        assert "running in this kernel" in monitor.state_label.value
        monitor.stop_button.click()
        progress = run.wait(timeout=30)
        assert progress.stopped and progress.completed < POINTS
        wait_for(lambda: monitor.state == "stopped", 20, "the monitor to show it stopped")
    finally:
        run.stop()
        monitor.close()


def test_a_new_monitor_attaches_to_a_detached_run_and_run_joins_it(slow, tmp_path):
    detached = scan_of(slow, tmp_path).run(executor="serial", detach=True, flush_interval=0.3)
    monitor = None
    try:
        try:
            wait_for(lambda: detached.progress.done >= 2, 60, "the detached run to start")
        except AssertionError:
            raise AssertionError(detached.log()) from None
        # what a restarted kernel does: a new monitor, nothing of the old one kept
        monitor = RunMonitor(scan_of(slow, tmp_path), executor="serial")
        wait_for(lambda: monitor.state == "watching", 20, "the monitor to see the run")
        assert monitor.others[0]["detached"]
        assert "detached" in monitor.state_label.value
        assert monitor.resume_button.disabled and "Resume runs" not in monitor.message
        # Run joins: both share the rest, no point is computed twice
        monitor.run_button.click()
        assert monitor.state == "running"
        monitor.wait(timeout=120)
        detached.wait(timeout=120)
        log = calls(tmp_path)
        assert len(log) == POINTS and max(log.values()) == 1, log.most_common(3)
        status = scan_of(slow, tmp_path).status()
        assert status["missing"] == 0
        wait_for(lambda: monitor.counts.get("missing") == 0, 10, "the final counts")
    finally:
        detached.stop()
        if monitor is not None:
            monitor.close()


# --------------------------------------------------------------- one truth per screen

def too_big(x: int):
    if x >= 3:
        raise ValueError(f"x={x} too big for '{'a' * x}' at {hex(id(x))}")
    return {"y": float(x)}


def always_fails(x: int):
    raise RuntimeError(f"diverged at step {x * 10}")


def test_failures_are_grouped_by_error_with_values_stripped_one_row_per_point(tmp_path):
    from notebookscan.widgets._counts import error_group

    assert error_group("ValueError: x=3 too big") == error_group("ValueError: x=5 too big")
    assert error_group("ValueError: x=3 too big") != error_group("KeyError: x=3 too big")
    scan = ns.Scan(too_big, ns.grid(x=range(6)), tmp_path / "s")
    monitor = RunMonitor(scan, executor="serial")
    monitor.run_button.click()
    monitor.wait(timeout=30)
    groups = monitor.failure_groups.children
    assert len(groups) == 1, [g.children[0].value for g in groups]
    head, rows = groups[0].children
    assert 'data-count="3"' in head.value and "×3" in head.value
    assert len(rows.children) == 3
    # a row per point: its parameters; opened, its error and traceback
    row = {r.value.split('data-point="')[1].split('"')[0]: r.value for r in rows.children}
    assert sorted(row) == ["x=3", "x=4", "x=5"]
    assert "x=4 too big" in row["x=4"] and "Traceback" in row["x=4"]
    assert 'data-groups="1"' in monitor.failures_html.value
    monitor.close()


def slow_too_big(x: int):
    time.sleep(0.01)
    return too_big(x)


def test_failure_rows_are_made_once_and_never_rewritten(tmp_path):
    """Rows shown stay the same widgets with the same HTML while more failures come (a
    traceback opened in the browser stays open), and nothing is redrawn without change."""
    scan = ns.Scan(slow_too_big, ns.grid(x=range(60)), tmp_path / "s")
    monitor = RunMonitor(scan, executor="serial")
    rows: dict[int, tuple[object, str]] = {}
    changed = []

    def look() -> None:
        for group in monitor.failure_groups.children:
            for row in group.children[1].children:
                seen = rows.setdefault(id(row), (row, row.value))
                if seen[1] != row.value:
                    changed.append(row.value)
    monitor.run_button.click()
    while monitor.state in ("starting", "running"):
        look()
        time.sleep(0.02)
    monitor.wait(timeout=60)
    look()
    assert not changed
    assert len(rows) == 50  # the rows kept (MAX_FAILURE_ROWS); all 57 counted
    assert monitor.failures_total == 57
    before = monitor.failures_html.value
    monitor._show_failures()  # nothing changed: nothing redrawn
    assert monitor.failures_html.value == before
    monitor.close()


def test_finished_with_every_point_failed_is_red_and_says_so(tmp_path):
    scan = ns.Scan(always_fails, ns.grid(x=range(4)), tmp_path / "s")
    monitor = RunMonitor(scan, executor="serial")
    monitor.run_button.click()
    monitor.wait(timeout=30)
    assert monitor.state == "finished"
    assert "finished: all 4 points failed" in monitor.state_label.value
    assert "#3a923a" not in monitor.state_label.value  # not green
    assert 'data-done="0" data-failed="4"' in monitor.progress_html.value
    monitor.close()


def test_header_progress_line_and_live_plot_count_the_stores_points(slow, tmp_path):
    from notebookscan.widgets import ScanApp
    from notebookscan.widgets._counts import counts_text

    half = ns.Scan(slow, ns.grid(x=range(10)), tmp_path / "s")
    half.run(executor="serial", progress=False)  # 10 of the 20 points, 1 failed (x=3)
    app = ScanApp(ns.Scan(slow, ns.grid(x=range(20)), tmp_path / "s"), executor="serial")
    seen_running: list[tuple[str, int]] = []

    def watch(change):
        if app.monitor.state == "running":
            seen_running.append((change["name"], change["new"]))
    app.monitor.observe(watch, names=["running", "busy"])
    app.monitor.run_button.click()
    app.monitor.wait(timeout=60)
    app.live.wait_idle(20)
    counts = app.monitor.counts
    assert counts == {"done": 17, "failed": 3, "missing": 0, "total": 20}
    bar = app.monitor.progress_html.value
    assert 'data-done="17" data-failed="3"' in bar and 'data-total="20"' in bar
    assert 'data-run-total="10"' in bar  # this run ran the other 10
    assert counts_text(counts) in app.header.value
    assert counts_text(counts) in app.live.note.value
    # the serial executor's worker is shown busy while the run has work left
    assert ("running", 1) in seen_running and ("busy", 1) in seen_running
    app.monitor.close()


def test_a_runner_of_another_machine_is_shown_while_it_beats_and_asked_to_stop(
        slow, tmp_path, monkeypatch):
    """A record of another host (its beat counter moved by hand here, as that machine's
    runner would): shown while its counter moves, gone once it stops for the ttl."""
    import json

    monkeypatch.setenv("NOTEBOOKSCAN_LEASE_TTL", "2")
    scan = scan_of(slow, tmp_path)
    scan.run(executor="serial", progress=False, chunk_size=1, flush_interval=0.1,
             wait=False).stop(wait=True)  # the store exists, a few points in it
    leases = tmp_path / "s" / "leases"
    leases.mkdir(exist_ok=True)
    runner = "far-away-node.4242.0123456789ab"

    def beat(n: int) -> None:
        record = {"format": 1, "runner": runner, "run": "r", "beat": n, "host": "far.away",
                  "user": "someone", "pid": 4242, "done": 5, "failed": 1, "total": 100,
                  "running": 4, "workers": 4, "rate": 2.5, "state": "running"}
        (leases / f"{runner}.runner").write_text(json.dumps(record))
    beat(1)
    monitor = RunMonitor(scan, executor="serial")
    try:
        assert monitor.state == "watching"  # at once: a reopened app shows it running
        assert "running elsewhere (far.away)" in monitor.state_label.value
        assert monitor.workers == 4 and monitor.busy == 4
        assert "far.away pid 4242" in monitor.engines_html.value
        monitor.stop_button.click()
        assert (leases / f"{runner}.stop").read_text() == "finish"
        assert monitor.state == "stopping"
        for n in range(2, 6):  # it goes on beating: still shown
            beat(n)
            time.sleep(0.3)
            assert monitor.others
        # no beat for the ttl: taken for gone
        wait_for(lambda: monitor.state == "stopped", 10, "the silent runner to be gone")
    finally:
        monitor.close()
