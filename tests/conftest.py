"""Shared fixtures: one real local ipyparallel cluster per test session, and hygiene.

- ``IPYTHONDIR`` points to a temporary directory for the whole session, so nothing
  touches ``~/.ipython``;
- every process the session starts inherits ``NOTEBOOKSCAN_TEST_SESSION=<id>``; at the
  end of the session no ipyparallel controller, engine or nanny carrying that id may
  be left (they are killed and the session fails if one is);
- ``PYTHONPATH`` starts with the repository, so engines import this checkout's
  notebookscan even when it is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_TAG = uuid.uuid4().hex[:16]
TAG_VAR = "NOTEBOOKSCAN_TEST_SESSION"
ENGINES = 2
HEARTBEAT_MS = 500
_PROCESS_MARKERS = ("ipyparallel.engine", "ipyparallel.controller", "ipyparallel.cluster",
                    "ipengine", "ipcontroller", "ipcluster")

_saved_env: dict[str, str | None] = {}
_ipython_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _ipython_dir
    _ipython_dir = tempfile.mkdtemp(prefix="notebookscan-test-ipython-")
    pythonpath = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    for name, value in (("IPYTHONDIR", _ipython_dir), (TAG_VAR, SESSION_TAG),
                        ("PYTHONPATH", pythonpath)):
        _saved_env[name] = os.environ.get(name)
        os.environ[name] = value


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _ipython_dir:
        shutil.rmtree(_ipython_dir, ignore_errors=True)


# --------------------------------------------------------------------------- processes


def session_processes() -> list[Any]:
    """ipyparallel processes (controller, engines, nannies) started by this session."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if not any(marker in cmdline for marker in _PROCESS_MARKERS):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG_VAR) == SESSION_TAG:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_new_controllers(before: set[int]) -> None:
    """SIGKILL the ipyparallel controllers this session started since ``before`` (pids)
    and wait for them to be gone; fails when there is none."""
    import psutil

    controllers = [p for p in session_processes() if p.pid not in before
                   and "ipyparallel.controller" in " ".join(p.cmdline())]
    assert controllers, "no new ipyparallel controller to kill"
    for proc in controllers:
        proc.kill()
    psutil.wait_procs(controllers, timeout=10)


def wait_for_no_session_processes(timeout: float = 15.0, ignore: set[int] = frozenset()
                                   ) -> list[Any]:
    """Wait until the session's ipyparallel processes (except ``ignore``) are gone."""
    deadline = time.monotonic() + timeout
    left = [p for p in session_processes() if p.pid not in ignore]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in session_processes() if p.pid not in ignore]
    return left


def describe(processes: list[Any]) -> str:
    lines = []
    for proc in processes:
        with contextlib.suppress(Exception):
            lines.append(f"{proc.pid}: {' '.join(proc.cmdline())[:120]}")
    return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def _no_cluster_processes_left() -> Iterator[None]:
    """Set up first, torn down last: fail the session if it leaves ipyparallel running."""
    yield
    local = sys.modules.get("notebookscan.executors.local_cluster")
    if local is not None:
        local.shutdown_local_executor()
    cluster_module = sys.modules.get("notebookscan.executors.cluster")
    if cluster_module is not None:
        cluster_module._stop_live_handles()
    left = wait_for_no_session_processes()
    if left:
        described = describe(left)
        for proc in left:
            with contextlib.suppress(Exception):
                proc.send_signal(signal.SIGKILL)
        pytest.fail(
            f"the test session left ipyparallel processes running (killed now):\n{described}",
            pytrace=False,
        )


# --------------------------------------------------------------------------- cluster


@dataclass
class LocalTestCluster:
    """The session's cluster: an ``ipyparallel.Cluster``, its client and profile dir."""

    cluster: Any
    client: Any
    profile_dir: str
    profile: str
    n: int = ENGINES

    @property
    def connection_file(self) -> str:
        return os.path.join(self.profile_dir, "security",
                            f"ipcontroller-{self.cluster.cluster_id}-client.json")

    def engine_pids(self) -> dict[int, int]:
        """Engine id -> process id, asked from each engine."""
        ids = self.client.ids
        pids = self.client[ids].apply_sync(os.getpid)
        return dict(zip(ids, pids, strict=True))

    def ensure_engines(self, timeout: float = 60.0) -> None:
        """Start engines for those a test killed, so every test sees ``n`` engines."""
        missing = self.n - len(self.client.ids)
        if missing > 0:
            self.cluster.start_engines_sync(n=missing)
        self.client.wait_for_engines(self.n, timeout=timeout, interactive=False)


@pytest.fixture(scope="session")
def ipp_cluster() -> Iterator[LocalTestCluster]:
    """A real local cluster: 2 engines, heartbeat 500 ms, profile in the session's IPYTHONDIR.

    The profile is ``$IPYTHONDIR/profile_nbtest`` so tests can find it by name.
    """
    import ipyparallel as ipp

    assert _ipython_dir is not None
    profile = "nbtest"
    profile_dir = os.path.join(_ipython_dir, f"profile_{profile}")
    cluster = ipp.Cluster(
        n=ENGINES,
        profile_dir=profile_dir,
        controller_ip="127.0.0.1",
        log_level=logging.ERROR,
        controller_args=[f"--HeartMonitor.period={HEARTBEAT_MS}"],
    )
    client = cluster.start_and_connect_sync()
    handle = LocalTestCluster(cluster, client, profile_dir, profile)
    try:
        yield handle
    finally:
        engines, nannies = _engines_and_nannies(handle)
        client.close()
        cluster.stop_cluster_sync()
        # a nanny outlives its stopped engine by ~4 s: end it once the engine is gone
        import psutil

        psutil.wait_procs(engines, timeout=10)
        for nanny in nannies:
            with contextlib.suppress(psutil.Error):
                nanny.kill()


def _engines_and_nannies(handle: LocalTestCluster) -> tuple[list[Any], list[Any]]:
    import psutil

    engines, nannies = [], []
    with contextlib.suppress(Exception):
        for pid in handle.engine_pids().values():
            with contextlib.suppress(psutil.Error):
                engine = psutil.Process(pid)
                engines.append(engine)
                nannies.extend(c for c in engine.children()
                               if "ipyparallel.engine.nanny" in " ".join(c.cmdline()))
    return engines, nannies


@pytest.fixture
def ipp_client(ipp_cluster: LocalTestCluster) -> Any:
    """The session cluster's client, with all engines registered (killed ones replaced)."""
    ipp_cluster.ensure_engines()
    return ipp_cluster.client


@pytest.fixture
def ipp_executor(ipp_client: Any) -> Iterator[Any]:
    """A fresh :class:`IPyParallelExecutor` on the session cluster, shut down afterwards."""
    from notebookscan.executors.ipyparallel import IPyParallelExecutor

    executor = IPyParallelExecutor.from_object(ipp_client)
    try:
        yield executor
    finally:
        executor.shutdown()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (Linux, root), unmounted afterwards: a disk that fills up, or that
    can be remounted read-only."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      check=False, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed on this machine")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode:
            # a file a failed write left open keeps it busy: detach it anyway
            subprocess.run(["umount", "-l", str(mount)], check=False)
