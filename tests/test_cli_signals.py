"""``notebookscan run`` under SIGTERM (Slurm's time limit, scancel, kill, timeout) and
Ctrl-C: it stops as one Ctrl-C does, keeps every finished point, stops the engines it
started, says so, and exits 143 / 130 without a traceback. And the detached-run
commands: ``run --detach``, ``attach``/``watch``, ``stop``; ``--min-engines``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import notebookscan as ns
from notebookscan import cli

COMMAND = [sys.executable, "-m", "notebookscan"]

MODEL = textwrap.dedent('''\
    import time

    def slow(x: int):
        time.sleep(0.25)
        return x * 3
''')
POINTS = 60


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    return tmp_path


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _stored(store: Path) -> int:
    """Points done in the store, the journal folded in (as the next run sees them)."""
    scan = ns.Scan(_model(store.parent), ns.grid(x=list(range(POINTS))), store=store)
    return scan.plan().stored


def _model(workdir: Path):
    sys.path.insert(0, str(workdir))
    try:
        import model
    finally:
        sys.path.remove(str(workdir))
    return model.slow


def _done_in_store(store: Path) -> int:
    if not (store / "shards").is_dir():
        return 0
    try:
        return int((ns.open_store(store).ns_status == "done").sum())
    except Exception:
        return 0


def _start_and_signal(workdir: Path, executor: list[str], signals: list[int],
                      ) -> tuple[subprocess.Popen, str, str, list[psutil.Process]]:
    """Start `run`, wait for its first stored points, capture its process tree, signal it."""
    store = workdir / "store"
    proc = subprocess.Popen([*COMMAND, "run", "model.py:slow", "--store", str(store),
                             "--axis", f"x=0:{POINTS - 1}:{POINTS}", *executor],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while _done_in_store(store) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no point was stored within 120 s"
        time.sleep(0.2)
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert tree, "the run started no worker processes"
    for signum in signals:
        proc.send_signal(signum)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    return proc, out, err, tree


def _reported_done(out: str) -> int:
    match = re.search(r"computed \d+ point\(s\) in .*?: (\d+) done, (\d+) failed", out)
    assert match, out
    return int(match.group(1))


def _assert_gone(tree: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(tree, timeout=20)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


@pytest.mark.parametrize("executor", [
    pytest.param(["--executor", "processes", "--engines", "2"], id="processes"),
    pytest.param(["--engines", "2"], id="local-engines", marks=pytest.mark.cluster),
])
def test_sigterm_stops_like_ctrl_c_keeps_every_finished_point_and_exits_143(
        workdir: Path, executor: list[str]) -> None:
    proc, out, err, tree = _start_and_signal(workdir, executor, [signal.SIGTERM])
    assert proc.returncode == cli.EXIT_TERMINATED == 143, (out, err)
    assert "terminated (SIGTERM)" in err and "stopped the scan" in err, err
    assert "Traceback" not in err
    reported = _reported_done(out)
    assert 2 <= reported < POINTS
    assert _stored(workdir / "store") == reported  # all it reported, nothing more
    _assert_gone(tree)


@pytest.mark.parametrize("executor", [
    pytest.param(["--executor", "processes", "--engines", "2"], id="processes"),
    pytest.param(["--engines", "2"], id="local-engines", marks=pytest.mark.cluster),
])
def test_ctrl_c_twice_in_quick_succession_leaves_no_traceback_and_no_processes(
        workdir: Path, executor: list[str]) -> None:
    proc, out, err, tree = _start_and_signal(workdir, executor,
                                             [signal.SIGINT, signal.SIGINT])
    assert proc.returncode == cli.EXIT_INTERRUPTED == 130, (out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "interrupted (SIGINT)" in err, err
    _assert_gone(tree)
    assert "stopped the scan" in err and "still stopping" in err, err
    reported = _reported_done(out)
    assert 2 <= reported < POINTS
    assert _stored(workdir / "store") == reported


def test_sigterm_before_the_run_starts_exits_143(workdir: Path) -> None:
    # a function whose import takes a while: the signal arrives before any point runs
    (workdir / "slowimport.py").write_text(
        "import sys, time\nprint('importing', file=sys.stderr, flush=True)\ntime.sleep(30)\n"
        "def f(x: int):\n    return x\n")
    proc = subprocess.Popen([*COMMAND, "run", "slowimport.py:f", "--store", "s", "--axis",
                             "x=1,2", "--executor", "serial"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().strip() == "importing"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    assert "terminated (SIGTERM)" in err and "Traceback" not in err


def test_detach_attach_stop_from_the_command_line(workdir: Path) -> None:
    result = _cli("run", "model.py:slow", "--store", "store", "--axis",
                  f"x=0:{POINTS - 1}:{POINTS}", "--executor", "serial", "--detach",
                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    run_id = re.search(r"started detached run (\S+)", result.stdout).group(1)
    assert "notebookscan attach store" in result.stdout
    assert "notebookscan stop store" in result.stdout
    deadline = time.monotonic() + 60
    while ns.attach(workdir / "store").progress.done < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stopped = _cli("stop", "store", "--now", cwd=workdir)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped:" in stopped.stdout
    watched = _cli("watch", "store", "--run", run_id, cwd=workdir)
    assert watched.returncode == cli.EXIT_STOPPED == 3, (watched.stdout, watched.stderr)
    done = int(re.search(r"stopped: (\d+) done", watched.stdout).group(1))
    assert _stored(workdir / "store") == done
    # resume with the same command; attach then reports the finished run
    again = _cli("run", "model.py:slow", "--store", "store", "--axis",
                 f"x=0:{POINTS - 1}:{POINTS}", "--executor", "serial", "--detach",
                 cwd=workdir)
    assert again.returncode == 0, again.stderr
    final = _cli("attach", "store", "--interval", "0.5", cwd=workdir)
    assert final.returncode == 0, (final.stdout, final.stderr)
    assert f"finished: {POINTS - done} done, 0 failed" in final.stdout
    assert _stored(workdir / "store") == POINTS


def test_attach_and_stop_without_a_run_exit_2(workdir: Path) -> None:
    for command in ("attach", "stop"):
        result = _cli(command, str(workdir), cwd=workdir)
        assert result.returncode == 2, result
        assert "no detached run" in result.stderr and "--detach" in result.stderr


def test_min_engines_and_engine_timeout_need_a_running_cluster(workdir: Path) -> None:
    result = _cli("run", "model.py:slow", "--store", "s", "--axis", "x=1", "--min-engines",
                  "0", cwd=workdir)
    assert result.returncode == 2 and "--min-engines" in result.stderr
    result = _cli("run", "model.py:slow", "--store", "s", "--axis", "x=1",
                  "--engine-timeout", "-1", "--profile", "p", cwd=workdir)
    assert result.returncode == 2 and "--engine-timeout" in result.stderr


@pytest.mark.cluster
def test_waiting_for_engines_names_the_command_line_flags(workdir: Path, ipp_cluster) -> None:
    connection = ipp_cluster.connection_file
    result = _cli("run", "model.py:slow", "--store", "s", "--axis", "x=1,2",
                  "--connection-file", connection, "--min-engines", "50",
                  "--engine-timeout", "2", cwd=workdir)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "--min-engines 0" in result.stderr and "min_engines=" not in result.stderr
    assert "within 2 s" in result.stderr
    result = _cli("run", "model.py:slow", "--store", "s", "--axis", "x=1,2",
                  "--connection-file", connection, "--min-engines", "0", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert os.path.isdir(workdir / "s" / "shards")
