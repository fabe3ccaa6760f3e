"""connect() and start_cluster(): finding running clusters, starting engines through
launchers, their errors, and the permissions of connection files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import time

import pytest

from notebookscan.errors import ExecutorError
from notebookscan.executors.cluster import ClusterHandle, connect, engine_launchers, start_cluster
from notebookscan.executors.ipyparallel import IPyParallelExecutor

pytestmark = pytest.mark.cluster


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def run_one(executor: IPyParallelExecutor) -> int:
    try:
        return executor.submit(pow, 3, 3).result(timeout=30)
    finally:
        executor.shutdown()


# --------------------------------------------------------------------------- connect


def test_connect_by_profile_and_cluster_id(ipp_cluster, ipp_client):
    executor = connect(profile=ipp_cluster.profile, cluster_id=ipp_cluster.cluster.cluster_id)
    assert executor.worker_count() == 2
    assert ipp_cluster.cluster.cluster_id in executor.description
    assert run_one(executor) == 27
    assert executor.client._closed  # shutdown closes the client it created


def test_connect_by_profile_dir_and_by_connection_file(ipp_cluster, ipp_client):
    cid = ipp_cluster.cluster.cluster_id
    assert run_one(connect(profile_dir=ipp_cluster.profile_dir, cluster_id=cid)) == 27
    from pathlib import Path

    assert run_one(connect(connection_file=Path(ipp_cluster.connection_file))) == 27
    assert run_one(connect(connection_file=ipp_cluster.connection_file, min_engines=2)) == 27


def test_connection_files_are_readable_by_the_owner_only(ipp_cluster):
    security = os.path.dirname(ipp_cluster.connection_file)
    assert mode(security) == 0o700
    for name in os.listdir(security):
        if name.startswith("ipcontroller-"):
            assert mode(os.path.join(security, name)) == 0o600, name


def test_connect_errors_name_the_argument_and_the_fix(ipp_cluster, ipp_client, tmp_path):
    with pytest.raises(ExecutorError, match=r"profile='nope'.*does not exist.*'nbtest'"):
        connect(profile="nope")
    with pytest.raises(ExecutorError) as info:
        connect(profile=ipp_cluster.profile, timeout=1)  # a cluster id is needed here
    assert f"cluster_id={ipp_cluster.cluster.cluster_id!r}" in str(info.value)
    assert "ipcluster start" in str(info.value)
    with pytest.raises(ExecutorError, match=r"connection_file=.*does not exist.*scp"):
        connect(connection_file=tmp_path / "ipcontroller-client.json")
    with pytest.raises(ExecutorError, match="is a directory"):
        connect(connection_file=tmp_path)
    with pytest.raises(ExecutorError, match="either the connection file alone"):
        connect(profile="nbtest", connection_file=ipp_cluster.connection_file)
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=r"only 2 of min_engines=5.*min_engines=0"):
        connect(connection_file=ipp_cluster.connection_file, min_engines=5, timeout=1.5)
    assert time.monotonic() - t0 < 15


def test_connect_to_a_stopped_controller_fails_within_the_timeout(ipp_cluster, tmp_path):
    with open(ipp_cluster.connection_file) as f:
        info = json.load(f)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    for key in ("registration", "control", "mux", "task", "iopub", "notification",
                "broadcast", "hb_ping", "hb_pong"):
        if isinstance(info.get(key), int):
            info[key] = free
    stale = tmp_path / "ipcontroller-stale-client.json"
    stale.write_text(json.dumps(info))
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=r"could not reach the controller.*ipcluster list"):
        connect(connection_file=stale, timeout=2)
    assert time.monotonic() - t0 < 20


def test_a_dead_controller_is_noticed_and_shutdown_does_not_hang(tmp_path):
    """check_alive() raises within controller_timeout of the controller being SIGKILLed,
    naming its address and what to do; shutdown() and handle.stop() then return."""
    import psutil
    from conftest import session_processes, wait_for_no_session_processes

    before = {p.pid for p in session_processes()}
    handle = start_cluster(1, quiet=True, heartbeat=0.5)
    try:
        ex = connect(connection_file=handle.connection_file, controller_timeout=2)
        assert ex.submit(pow, 2, 5).result(timeout=30) == 32
        for _ in range(15):  # a live controller answers every query
            ex.check_alive()
            time.sleep(0.1)
        controllers = [p for p in session_processes() if p.pid not in before
                       and "ipyparallel.controller" in " ".join(p.cmdline())]
        assert controllers
        for proc in controllers:
            proc.kill()
        psutil.wait_procs(controllers, timeout=10)
        killed = time.monotonic()
        with pytest.raises(ExecutorError, match="stopped answering") as info:
            while time.monotonic() - killed < 10:
                ex.check_alive()
                time.sleep(0.1)
        assert time.monotonic() - killed < 5
        message = str(info.value)
        assert ex.controller_address in message and "run() again" in message
        assert ex.controller_lost
        with pytest.raises(ExecutorError, match="stopped answering"):
            ex.submit(pow, 2, 5)
        started = time.monotonic()
        ex.shutdown()
        handle.stop()
        assert time.monotonic() - started < 30
    finally:
        handle.stop()
        for proc in wait_for_no_session_processes(timeout=5, ignore=before):
            with contextlib.suppress(psutil.Error):
                proc.kill()


# --------------------------------------------------------------------------- start_cluster


def test_start_cluster_local_context_manager(tmp_path, monkeypatch):
    from conftest import describe, session_processes, wait_for_no_session_processes

    monkeypatch.chdir(tmp_path)
    before = {p.pid for p in session_processes()}
    with start_cluster(1, quiet=True) as handle:
        assert isinstance(handle, ClusterHandle)
        assert handle.executor.submit(pow, 2, 6).result(timeout=30) == 64
        assert handle.executor.worker_count() == 1
        assert mode(handle.connection_file) == 0o600
        # another process (or notebook) joins the same cluster through the file
        assert run_one(connect(connection_file=handle.connection_file)) == 27
        assert "1 engine(s) registered" in repr(handle)
        profile_dir = handle.profile_dir
    assert handle.stopped and "stopped" in repr(handle)
    handle.stop()  # twice is fine
    assert not os.path.exists(profile_dir)  # a temporary profile is removed
    assert os.listdir(tmp_path) == []  # nothing written into the current directory
    left = wait_for_no_session_processes(timeout=1, ignore=before)
    assert not left, describe(left)


def test_start_cluster_keeps_a_given_profile_private(tmp_path):
    profile_dir = tmp_path / "profile"
    (profile_dir / "security").mkdir(parents=True)
    os.chmod(profile_dir / "security", 0o755)  # as a careless mkdir would leave it
    handle = start_cluster(1, profile_dir=profile_dir, cluster_id="private", quiet=True)
    try:
        assert handle.connection_file == str(
            profile_dir / "security" / "ipcontroller-private-client.json"
        )
        assert mode(profile_dir / "security") == 0o700
        for name in os.listdir(profile_dir / "security"):
            if name.startswith("ipcontroller-"):
                assert mode(profile_dir / "security" / name) == 0o600, name
        assert run_one(connect(profile_dir=profile_dir, cluster_id="private")) == 27
    finally:
        handle.stop()
    assert profile_dir.exists()  # the user's directory is kept


def test_start_cluster_reports_engines_that_never_register(tmp_path):
    from conftest import describe, session_processes, wait_for_no_session_processes

    before = {p.pid for p in session_processes()}
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=r"0 of 1 registered within 3 s"):
        start_cluster(1, launcher_options={"engine_cmd": ["false"]}, timeout=3, quiet=True)
    assert time.monotonic() - t0 < 30
    left = wait_for_no_session_processes(timeout=5, ignore=before)
    assert not left, describe(left)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engines": "condor"}, r"engines='condor' is not a known.*'slurm'"),
        ({"engines": "no.such.Launcher"}, r"engines='no.such.Launcher' cannot be imported"),
        ({"engines": "slurm"}, r"n=None with engines='slurm'.*start_cluster\(32"),
        ({"n": 2, "account": "proj"}, r"account='proj' is not an option of the 'local'.*slurm"),
        ({"n": 2, "engines": "slurm", "mpi_args": ["-x"]}, r"mpi_args=.*applies to: mpi"),
        ({"n": 2, "launcher_options": {"nodes": 3}}, r"has no option 'nodes'.*engine_cmd"),
        ({"n": 0}, r"n=0: start at least one engine"),
        ({"n": 2, "min_engines": 3}, r"min_engines=3: pass a number from 0 to n=2"),
        ({"n": 2, "heartbeat": 0}, r"heartbeat=0: pass a period in seconds"),
        ({"n": 2, "controller": "nowhere"}, r"controller='nowhere' is not a known"),
    ],
)
def test_start_cluster_argument_errors(kwargs, message):
    with pytest.raises(ExecutorError, match=message):
        start_cluster(**kwargs, quiet=True)


@pytest.mark.parametrize(("engines", "command"), [("pbs", "qsub"), ("sge", "qsub"),
                                                  ("lsf", "bsub"), ("mpi", "mpiexec")])
def test_start_cluster_names_a_missing_launcher_command(engines, command, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which(command) is None
    with pytest.raises(ExecutorError, match=rf"engines='{engines}' runs `{command}`.*not on PATH"):
        start_cluster(2, engines=engines, quiet=True)


def test_engine_launchers_lists_the_batch_systems():
    names = engine_launchers()
    assert {"local", "mpi", "slurm", "pbs", "sge", "lsf", "ssh"} <= set(names)
