"""A detached run belongs to the user who started it: another user who can write the store
(a group-writable store, umask 002) cannot make it run their code, nor confuse attach()."""

from __future__ import annotations

import grp
import json
import os
import pickle
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

import notebookscan as ns

# the other user: renames every new run directory away and plants its own in its place
# (a pickle that creates the marker, a status with pid 1, a stop request), and plants a
# run directory with a higher ordinal; it runs until the test kills it
ATTACKER = textwrap.dedent("""
    import json, os, sys, time
    runs, payload = sys.argv[1], bytes.fromhex(sys.argv[2])
    os.umask(0)

    def plant(directory, ordinal):
        os.mkdir(directory, 0o777)
        for name in ("run.pkl", "spec.pkl"):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(payload)
        with open(os.path.join(directory, "run.json"), "w") as f:
            json.dump({"run_id": os.path.basename(directory), "ordinal": ordinal}, f)
        with open(os.path.join(directory, "status.json"), "w") as f:
            json.dump({"state": "running", "pid": 1, "done": 0, "total": 5}, f)
        with open(os.path.join(directory, "stop"), "w") as f:
            f.write("now")

    if not os.path.isdir(runs):  # made by the other user: the owner's runs go in it
        os.mkdir(runs, 0o777)
    plant(os.path.join(runs, "999-mallory"), 999)
    seen = {"999-mallory"}
    print("ready", flush=True)
    while True:
        for name in os.listdir(runs):
            if name in seen:
                continue
            seen.add(name)
            try:
                os.rename(os.path.join(runs, name), os.path.join(runs, name + ".moved"))
                seen.add(name + ".moved")
                plant(os.path.join(runs, name), 1000)
            except OSError:
                pass
        time.sleep(0.002)
""")


class _Payload:
    """Unpickling this creates the marker file: proof that the other user's code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def other_user():
    """A temporary Unix user (and its group); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a second Unix user needs root (CI runs as root)")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    name = f"nbs{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)
        with_group = [g for g in grp.getgrall() if g.gr_name == name]
        if with_group:
            subprocess.run(["groupdel", name], check=False)


def _python_for(user) -> str:
    """A Python interpreter ``user`` may execute (the attacker needs the standard library
    only; a virtual environment under /root is out of its reach)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            probe = subprocess.run([candidate, "-c", "pass"], user=user.pw_uid,
                                   group=user.pw_gid, extra_groups=[], capture_output=True,
                                   cwd="/", check=False)
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip("no Python interpreter the second user may execute")


def _slow_function():
    def slow(x: int):  # defined here: pickled by value for the runner
        time.sleep(0.05)
        return x * 10

    return slow


@pytest.mark.parametrize("runs_made_by", ["owner", "other user"])
def test_another_user_who_can_write_the_store_cannot_run_code_as_the_owner(
        other_user, tmp_path, runs_made_by):
    base = tempfile.mkdtemp(prefix="nbs-shared-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        store = os.path.join(base, "store")
        os.mkdir(store)
        os.chown(store, 0, other_user.pw_gid)
        os.chmod(store, 0o2775)  # shared with the group, as under umask 002
        marker = tmp_path / "ran-as-owner"  # tmp_path: only the owner can create it here
        payload = pickle.dumps(_Payload(str(marker)), protocol=2).hex()
        runs = os.path.join(store, ".runs")
        if runs_made_by == "owner":
            os.mkdir(runs)
            os.chmod(runs, 0o2775)
        attacker = subprocess.Popen(
            [_python_for(other_user), "-c", ATTACKER, runs, payload], user=other_user.pw_uid,
            group=other_user.pw_gid, extra_groups=[], stdout=subprocess.PIPE, text=True,
            cwd="/", env={"PATH": os.environ.get("PATH", "")})
        try:
            assert attacker.stdout.readline().strip() == "ready"
            old = os.umask(0o002)
            try:
                scan = ns.Scan(_slow_function(), ns.grid(x=range(20)), store=store)
                run = scan.run(executor="serial", detach=True, flush_interval=0.2)
            finally:
                os.umask(old)
            attached = ns.attach(store)
            assert attached.run_id == run.run_id  # not the planted 999-mallory nor 1000
            progress = attached.wait(timeout=120)
            assert progress.done == 20 and not progress.stopped, run.log()
        finally:
            attacker.kill()
            attacker.wait()
        assert not marker.exists()
        ds = ns.open_store(store)
        assert ds.result.values.tolist() == [x * 10 for x in range(20)]
        moved = [n for n in os.listdir(runs) if n.endswith(".moved")]
        assert moved, "the other user's process never saw the run directory"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_planted_status_with_a_live_pid_does_not_make_wait_hang(tmp_path):
    scan = ns.Scan(_slow_function(), ns.grid(x=range(4)), store=tmp_path / "s")
    run = scan.run(executor="serial", detach=True, flush_interval=0.2)
    run.wait(timeout=60)
    for pid in (1, os.getpid()):  # pid 1, and a pid reused by an unrelated process
        with open(os.path.join(run.directory, "status.json"), "w") as f:
            f.write(f'{{"state": "running", "pid": {pid}, "done": 0, "total": 4}}')
        again = ns.attach(tmp_path / "s")
        t0 = time.monotonic()
        assert again.done()
        with pytest.raises(ns.ScanError, match="without a final status"):
            again.wait(timeout=10)
        assert time.monotonic() - t0 < 5


def test_attach_picks_the_newest_run_by_ordinal_not_by_clock(tmp_path, monkeypatch):
    scan = ns.Scan(_slow_function(), ns.grid(x=range(2)), store=tmp_path / "s")
    try:
        # the first run two hours ahead; then the time zone changes (a flight, summer
        # time ending): local clock time goes back
        monkeypatch.setenv("TZ", "UTC-2")
        time.tzset()
        first = scan.run(executor="serial", detach=True)
        first.wait(timeout=60)
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
        second = scan.refine(x=[5, 6]).run(executor="serial", detach=True, stale="reuse")
        assert ns.attach(tmp_path / "s").run_id == second.run_id != first.run_id
        assert ns.attach(tmp_path / "s", first.run_id).run_id == first.run_id
        assert second.wait(timeout=60).done == 2
    finally:
        monkeypatch.undo()
        time.tzset()


def test_sigterm_to_the_runner_stops_the_run_keeping_every_finished_point(tmp_path):
    scan = ns.Scan(_slow_function(), ns.grid(x=range(200)), store=tmp_path / "s")
    run = scan.run(executor="serial", detach=True, flush_interval=0.2)
    deadline = time.monotonic() + 60
    while run.progress.done < 3:
        assert time.monotonic() < deadline and not run.done(), run.log()
        time.sleep(0.1)
    with open(os.path.join(run.directory, "status.json")) as f:
        pid = json.load(f)["pid"]
    os.kill(pid, signal.SIGTERM)
    progress = run.wait(timeout=60)
    assert progress.stopped and 3 <= progress.done < 200, run.log()
    assert scan.plan().stored == progress.done
