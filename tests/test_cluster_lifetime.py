"""Nothing left running: the local engines and controller of a process die with it,
whether it is SIGKILLed or interrupted twice with Ctrl-C while it stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import describe, session_processes, wait_for_no_session_processes

pytestmark = pytest.mark.cluster

SCAN = textwrap.dedent(
    """
    import sys, time
    import notebookscan as ns

    def f(x):
        import os, time
        open(os.path.join(__TMP__, "started"), "a").close()
        time.sleep(__SLEEP__)
        return {"y": x}

    if __name__ == "__main__":
        scan = ns.Scan(f, ns.grid(x=range(__N__)), store=sys.argv[1])
        try:
            scan.run(progress=False)  # the default executor: local engines
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
        else:
            print("DONE", flush=True)
            time.sleep(120)
    """
)


def start_script(tmp_path, code: str) -> subprocess.Popen:
    script = tmp_path / "script.py"
    script.write_text(code.replace("__TMP__", repr(str(tmp_path))))
    env = {**os.environ, "NOTEBOOKSCAN_WORKERS": "2"}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(child: subprocess.Popen, word: str, timeout: float = 60.0) -> None:
    timer = threading.Timer(timeout, child.kill)  # never hang on a child that stays silent
    timer.start()
    try:
        for line in child.stdout:
            if line.strip() == word:
                return
    finally:
        timer.cancel()
    raise AssertionError(f"the child ended before printing {word}: {child.stderr.read()}")


def new_processes(before: set[int], child: subprocess.Popen) -> list:
    return [p for p in session_processes() if p.pid not in before and p.pid != child.pid]


def watchdogs_of(profile_dirs: set[str]) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "ipp_watchdog.py" in cmdline and any(d in cmdline for d in profile_dirs):
            found.append(proc)
    return found


def running(proc) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def profile_dirs_of(processes: list) -> set[str]:
    """The profile directories of these cluster processes (each must carry the marker the
    watchdog finds them by)."""
    from notebookscan.executors.ipp_watchdog import MARKER

    tokens = {proc.environ().get(MARKER) for proc in processes}
    assert None not in tokens, describe(processes)
    return {os.path.dirname(token) for token in tokens}


def test_sigkilled_scan_leaves_no_engine_or_controller(tmp_path):
    before = {p.pid for p in session_processes()}
    child = start_script(tmp_path, SCAN.replace("__SLEEP__", "0.05").replace("__N__", "8"))
    try:
        wait_for_line(child, "DONE")
        cluster = new_processes(before, child)
        assert len(cluster) >= 3, describe(cluster)  # a controller, two engines (+ nannies)
        dirs = profile_dirs_of(cluster)
        assert dirs and all(os.path.isdir(d) for d in dirs)
    finally:
        child.kill()  # SIGKILL: no exit hook runs
        child.wait()
    t0 = time.monotonic()
    left = wait_for_no_session_processes(timeout=10, ignore=before)
    assert not left, describe(left)
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 5
    while (watchdogs_of(dirs) or any(os.path.exists(d) for d in dirs)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not watchdogs_of(dirs)
    assert not any(os.path.exists(d) for d in dirs)  # the temporary profile is removed
    child.stdout.close()
    child.stderr.close()


def test_sigkilled_start_cluster_leaves_nothing_running(tmp_path):
    before = {p.pid for p in session_processes()}
    code = textwrap.dedent(
        """
        import time
        import notebookscan as ns
        handle = ns.start_cluster(1, quiet=True, profile_dir=__PROFILE__)
        print("READY", flush=True)
        time.sleep(120)
        """
    ).replace("__PROFILE__", repr(str(tmp_path / "profile")))
    child = start_script(tmp_path, code)
    try:
        wait_for_line(child, "READY")
        assert new_processes(before, child)
    finally:
        child.kill()
        child.wait()
    left = wait_for_no_session_processes(timeout=10, ignore=before)
    assert not left, describe(left)
    assert os.path.isdir(tmp_path / "profile")  # the user's profile directory stays
    child.stdout.close()
    child.stderr.close()


@pytest.mark.parametrize("second", ["during clean-up", "right after the first"])
def test_ctrl_c_twice_prints_no_traceback_and_leaves_nothing(tmp_path, second):
    before = {p.pid for p in session_processes()}
    child = start_script(tmp_path, SCAN.replace("__SLEEP__", "2").replace("__N__", "40"))
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():  # points are running on the engines
        assert time.monotonic() < deadline and child.poll() is None, "no point started"
        time.sleep(0.05)
    assert new_processes(before, child)
    child.send_signal(signal.SIGINT)
    if second == "during clean-up":
        wait_for_line(child, "INTERRUPTED")  # the exit hooks stop the engines now
        time.sleep(0.05)
    else:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert second == "during clean-up" or "INTERRUPTED" in out  # the scan was interrupted
    assert "DONE" not in out
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    left = wait_for_no_session_processes(timeout=10, ignore=before)
    assert not left, describe(left)


def test_a_stop_is_not_cut_short_by_ctrl_c_and_the_interrupt_comes_after():
    from notebookscan.executors.local_cluster import run_to_the_end

    steps = []

    def slow_stop():
        for i in range(10):
            time.sleep(0.05)
            steps.append(i)

    timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_to_the_end(slow_stop)
    timer.join()
    assert steps == list(range(10))  # it ran to its end, then the interrupt was raised


def test_the_watchdog_kills_what_carries_its_token_when_the_owner_dies(tmp_path):
    """The mechanism alone, without ipyparallel: a process started with the watch's
    environment (and its own child) dies within seconds of its owner's SIGKILL."""
    import psutil

    code = textwrap.dedent(
        """
        import os, subprocess, sys, time
        from notebookscan.executors.local_cluster import OwnerWatch
        watch = OwnerWatch(sys.argv[1], "c1", remove_dir=False)
        env = {**os.environ, **watch.environment}
        worker = subprocess.Popen([sys.executable, "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(120)']); time.sleep(120)"], env=env)
        print(worker.pid, watch.pid, flush=True)
        time.sleep(120)
        """
    )
    (tmp_path / "profile").mkdir()
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "profile")],
                             stdout=subprocess.PIPE, text=True)
    worker_pid, watchdog_pid = map(int, owner.stdout.readline().split())
    worker = psutil.Process(worker_pid)
    deadline = time.monotonic() + 10
    while not worker.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = worker.children()[0]
    owner.kill()
    owner.wait()
    owner.stdout.close()
    procs = [worker, grandchild, psutil.Process(watchdog_pid)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(running(p) for p in procs):
        time.sleep(0.05)
    assert not [p for p in procs if running(p)]
    assert not (tmp_path / "profile" / "notebookscan-watch-c1").exists()
    assert (tmp_path / "profile").is_dir()  # not a temporary directory: kept


def test_a_released_watch_ends_its_watchdog_and_never_inherits_a_token(tmp_path,
                                                                      monkeypatch):
    import psutil

    from notebookscan.executors.ipp_watchdog import MARKER
    from notebookscan.executors.local_cluster import OwnerWatch

    monkeypatch.setenv(MARKER, "token-of-the-cluster-this-process-is-an-engine-of")
    watch = OwnerWatch(str(tmp_path), "c2", remove_dir=False)
    process = psutil.Process(watch.pid)
    assert MARKER not in process.environ()
    assert watch.environment[MARKER] != os.environ[MARKER]
    watch.release()
    watch.release()  # idempotent
    assert not running(process)
    assert not (tmp_path / "notebookscan-watch-c2").exists()
    assert watch.pid is None
