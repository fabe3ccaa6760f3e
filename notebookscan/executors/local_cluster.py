"""The shared local cluster behind ``executor="local"``, and the life of local clusters.

:func:`local_executor` starts (once per process) a private cluster with one engine per
core and reuses it for every later scan. This module also holds what every cluster
started on this machine needs (:func:`notebookscan.executors.cluster.start_cluster` uses it too):

- :class:`LoopThread`, a private event loop that drives ipyparallel's async API;
- :func:`stop_and_wait`: stop a cluster and wait until its processes are gone;
- :class:`OwnerWatch`: its processes die with the process that started them, even when
  that one is SIGKILLed (a watchdog process, see :mod:`.ipp_watchdog`);
- :func:`reap_orphan_clusters`: the next run cleans up what a killed one left;
- :func:`run_to_the_end`: exit clean-up that a second Ctrl-C cannot cut short.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorError
from .base import usable_cores
from .ipp_loop import LoopThread
from .ipp_watchdog import MARKER
from .ipyparallel import IPyParallelExecutor

if TYPE_CHECKING:
    import ipyparallel as ipp

__all__ = [
    "LOCAL_HEARTBEAT_MS",
    "TEMP_PROFILE_PREFIXES",
    "LoopThread",
    "OwnerWatch",
    "claim",
    "engine_logs",
    "local_executor",
    "reap_orphan_clusters",
    "run_to_the_end",
    "shutdown_local_executor",
    "stop_and_wait",
]

log = logging.getLogger(__name__)

#: Heartbeat period (ms) of the clusters notebookscan starts on this machine. The
#: default (3000 ms) makes engines wait ~6 s to register; 500 ms brings a 2-engine
#: start-up from ~7 s down to ~3 s. Keep the default on busy shared HPC nodes.
LOCAL_HEARTBEAT_MS = 500


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError:
        return ""


def engine_logs(profile_dir: str | None, lines: int = 15) -> str:
    """The end of the newest engine/controller logs of a profile, for error messages."""
    if not profile_dir:
        return ""
    log_dir = os.path.join(profile_dir, "log")
    try:
        names = sorted(
            (os.path.join(log_dir, n) for n in os.listdir(log_dir) if n.endswith(".log")),
            key=os.path.getmtime,
        )[-3:]
    except OSError:
        return ""
    parts = [f"--- {p}\n{_tail(p, lines)}" for p in names if os.path.getsize(p)]
    return "\n".join(parts)


def _process_tree(cluster: Any) -> list[Any]:
    """The local processes of a cluster (controller, engines, nannies, mpiexec), if any."""
    import psutil

    pids = []
    launchers = [cluster.controller] if cluster.controller is not None else []
    for engine_set in cluster.engines.values():
        launchers.append(engine_set)
        launchers.extend(getattr(engine_set, "launchers", {}).values())
    for launcher in launchers:
        pid = getattr(launcher, "pid", -1)
        if isinstance(pid, int) and pid > 0:
            pids.append(pid)
    procs: dict[int, Any] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs[pid] = proc
            for child in proc.children(recursive=True):
                procs[child.pid] = child
    return list(procs.values())


def stop_and_wait(cluster: Any, loop: LoopThread, timeout: float = 10.0) -> None:
    """Stop a cluster and wait until its local processes are gone (SIGKILL stragglers).

    ipyparallel's stop only signals local processes; waiting here means a stopped
    cluster really leaves nothing running, even when the interpreter exits right after.
    """
    import psutil

    procs = _process_tree(cluster)
    nannies = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if "ipyparallel.engine.nanny" in " ".join(proc.cmdline()):
                nannies.append(proc)
    with contextlib.suppress(Exception):
        loop.run(cluster.stop_cluster(), timeout=60)
    alive = _wait_gone([p for p in procs if p not in nannies], timeout)
    # a nanny outlives its engine by ~4 s (and relays SIGTERM to it); once the engine has
    # exited it has nothing left to do, so it is killed like any straggler
    for proc in [*alive, *nannies]:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone([*alive, *nannies], 5)


def _wait_gone(procs: list[Any], timeout: float) -> list[Any]:
    """Wait until processes have exited; zombies count as gone (init reaps them later)."""
    import psutil

    def running(proc: Any) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        psutil.wait_procs(alive, timeout=0.05)  # reaps our own children
        alive = [p for p in alive if running(p)]
    return alive


# --------------------------------------------------------------------------- owner watch


class OwnerWatch:
    """Make a cluster's local processes die with this process, even on SIGKILL.

    Starts the watchdog script (:mod:`.ipp_watchdog`) and hands out :attr:`environment`,
    which the cluster's launchers must pass to the controller and engines: the watchdog
    finds them by it (engines restarted later and processes they start carry it too).
    :meth:`release` (a normal stop) ends the watchdog without it touching anything.

    Parameters
    ----------
    profile_dir
        The cluster's profile directory (the lease file lives there).
    cluster_id
        The cluster's id in that directory.
    remove_dir
        Remove ``profile_dir`` once the processes are killed (a temporary directory).
    """

    def __init__(self, profile_dir: str, cluster_id: str, *, remove_dir: bool):
        self.lease = os.path.join(profile_dir, f"notebookscan-watch-{cluster_id}")
        with open(self.lease, "w") as f:
            f.write(f"{os.getpid()}\n")
        self.token = self.lease  # unique per cluster
        self.environment = {MARKER: self.token}
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipp_watchdog.py")
        # this process may itself be an engine of another cluster (a scan inside a scan):
        # its watchdog must not carry that cluster's token, or it would die with it first
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, script, str(os.getpid()), self.token, self.lease, profile_dir,
             "remove" if remove_dir else "keep"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is not for it
            close_fds=True, env=env,
        )

    @property
    def pid(self) -> int | None:
        """The watchdog's pid (None once released)."""
        return None if self._process is None else self._process.pid

    def release(self) -> None:
        """The cluster is stopped: end the watchdog (and reap it). Idempotent."""
        process, self._process = self._process, None
        with contextlib.suppress(OSError):
            os.unlink(self.lease)
        if process is not None:  # its owner lives: it has nothing to do, end it now
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def forget_watch_in_child(watch: OwnerWatch | None) -> None:
    """A forked child must neither reap nor release its parent's watchdog."""
    if watch is not None:
        watch._process = None


# --------------------------------------------------------------------------- exit


def run_to_the_end(fn: Callable[[], None], *, at_exit: bool = False) -> None:
    """Run ``fn()`` to its end even when Ctrl-C is pressed meanwhile.

    Stopping a cluster takes a second or two; a KeyboardInterrupt raised half-way would
    leave engines running and, in an atexit hook, print a traceback. So ``fn`` runs in
    a thread (signals only interrupt the main thread) and the caller waits for it; an
    interrupt meanwhile is raised once ``fn`` is done. ``at_exit``: the interpreter is
    exiting, so SIGINT is ignored from here on and interrupts are swallowed (the exit
    goes ahead; nothing is left to interrupt). Errors of ``fn`` are logged, never raised.
    """
    done = threading.Event()
    once = threading.Lock()
    interrupted = False

    def target() -> None:
        if not once.acquire(blocking=False):
            return  # started twice: an interrupt came between start() and the break
        try:
            fn()
        except Exception:
            log.debug("clean-up failed", exc_info=True)
        finally:
            done.set()

    while True:  # an interrupt may land anywhere in here, even before the wait
        try:
            if at_exit and threading.current_thread() is threading.main_thread():
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
            thread = threading.Thread(target=target, name="notebookscan-cleanup", daemon=True)
            thread.start()
            break
        except KeyboardInterrupt:
            interrupted = True
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted and not at_exit:
        raise KeyboardInterrupt


# --------------------------------------------------------------------------- orphans

#: prefixes of the temporary profile directories of clusters notebookscan starts
TEMP_PROFILE_PREFIXES = ("notebookscan-ipp-", "notebookscan-cluster-")
_OWNER_FILE = "notebookscan-owner.json"


def claim(profile_dir: str) -> None:
    """Record which process owns a temporary cluster, for :func:`reap_orphan_clusters`."""
    import json

    import psutil

    me = psutil.Process()
    with open(os.path.join(profile_dir, _OWNER_FILE), "w") as f:
        json.dump({"pid": me.pid, "create_time": me.create_time(),
                   "host": socket.gethostname()}, f)


def _owner_alive(info: dict[str, Any]) -> bool:
    import psutil

    if info.get("host") != socket.gethostname():
        return True  # another machine or container sharing this directory: not ours to judge
    try:
        return abs(psutil.Process(int(info["pid"])).create_time() - info["create_time"]) < 1
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def reap_orphan_clusters(loop: LoopThread | None = None) -> list[str]:
    """Stop clusters whose notebookscan process died without stopping them.

    A killed kernel (``kill -9``, out of memory) cannot run its exit hooks, so its
    private local cluster keeps running. Each temporary profile directory records its
    owner process; when that process is gone, its cluster is stopped and the directory
    removed. Only this user's directories with an owner record are considered; clusters
    started with ``stop_at_exit=False`` have none. Returns the directories cleaned up.
    """
    import glob
    import json

    import ipyparallel as ipp

    cleaned = []
    for prefix in TEMP_PROFILE_PREFIXES:
        for directory in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
            owner = os.path.join(directory, _OWNER_FILE)
            try:
                if os.stat(directory).st_uid != os.getuid():
                    continue
                with open(owner) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if _owner_alive(info):
                continue
            own_loop = loop or LoopThread("notebookscan-reaper")
            try:
                for state in glob.glob(os.path.join(directory, "security", "cluster-*.json")):
                    with contextlib.suppress(Exception):
                        cluster = ipp.Cluster.from_file(state, log_level=logging.ERROR)
                        cluster.shutdown_atexit = False
                        stop_and_wait(cluster, own_loop)
            finally:
                if loop is None:
                    own_loop.close()
            shutil.rmtree(directory, ignore_errors=True)
            cleaned.append(directory)
    return cleaned


# --------------------------------------------------------------------------- local cluster


class _LocalExecutor(IPyParallelExecutor):
    """The executor of the shared local cluster: replaces engines that died."""

    _local: _LocalCluster

    def _maintain(self) -> None:
        self._local.replace_lost_engines(wait=False)

    def _engine_ended(self, engine: int) -> None:
        self._local.replace_when_gone(engine)  # the cluster keeps its n engines


class _LocalCluster:
    """The process-wide local cluster behind :func:`local_executor`."""

    #: seconds between two attempts to replace dead engines during a scan
    replace_interval = 10.0

    def __init__(self, n: int):
        import ipyparallel as ipp

        self.n = n
        self.profile_dir = tempfile.mkdtemp(prefix=TEMP_PROFILE_PREFIXES[0])
        claim(self.profile_dir)
        self.loop = LoopThread("notebookscan-local-cluster")
        self.cluster = ipp.Cluster(
            n=n,
            profile_dir=self.profile_dir,
            controller_ip="127.0.0.1",
            log_level=logging.ERROR,
            controller_args=[f"--HeartMonitor.period={LOCAL_HEARTBEAT_MS}"],
            shutdown_atexit=False,  # stopped by our own atexit hook, on our own loop
            parent=None,  # never inherit the user's IPython profile configuration
        )
        # its processes die with this one, even when it is SIGKILLed
        self.watch: OwnerWatch | None = OwnerWatch(
            self.profile_dir, self.cluster.cluster_id, remove_dir=True
        )
        # the engines' IPython would otherwise create ~/.ipython/profile_default
        self.cluster.config.LocalEngineSetLauncher.environment = {
            "IPYTHONDIR": os.path.join(self.profile_dir, "ipython"), **self.watch.environment
        }
        self.cluster.config.LocalControllerLauncher.environment = dict(self.watch.environment)
        self.client: ipp.Client | None = None
        self.executor: _LocalExecutor | None = None
        self.started_in = 0.0
        self._last_replace = 0.0
        self._replace_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self.stopped = False

    def start(self, quiet: bool = False, timeout: float = 120.0) -> None:
        word = "engine" if self.n == 1 else "engines"
        if not quiet:
            print(f"Starting {self.n} local ipyparallel {word}… (a few seconds)",
                  file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            self.loop.run(self.cluster.start_cluster(self.n), timeout=timeout)
            self.client = self.loop.run(self.cluster.connect_client(), timeout=timeout)
            self.client.wait_for_engines(self.n, timeout=timeout, interactive=False)
        except BaseException as exc:
            logs = engine_logs(self.profile_dir)
            self.stop()
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ExecutorError(
                f"could not start {self.n} local ipyparallel {word} within {timeout:.0f} s: "
                f"{type(exc).__name__}: {exc}. Check that `{sys.executable} -m "
                "ipyparallel.engine --help` works, or pass executor='processes'."
                + (f"\nLast log lines:\n{logs}" if logs else "")
            ) from exc
        self.started_in = time.perf_counter() - t0
        executor = _LocalExecutor(self.client.load_balanced_view(), cluster=self.cluster)
        executor._local = self
        executor.description = f"ipyparallel (local, {self.n} {word})"
        self.executor = executor
        if not quiet:
            print(f"{self.n} local {word} ready in {self.started_in:.1f} s.",
                  file=sys.stderr, flush=True)

    def alive(self) -> bool:
        controller = self.cluster.controller
        return (
            self.client is not None
            and not self.client._closed
            and controller is not None
            and getattr(controller, "running", False)
            # a scan found it silent: the next scan starts a fresh cluster
            and not (self.executor is not None and self.executor.controller_lost)
        )

    def replace_lost_engines(self, wait: bool) -> None:
        """Start engines for those that died, so the cluster keeps ``n`` engines."""
        if self.client is None:
            return
        with self._replace_lock:
            missing = self.n - len(self.client.ids)
            now = time.monotonic()
            if missing <= 0 or (not wait and now - self._last_replace < self.replace_interval):
                return
            self._last_replace = now
            future = asyncio.run_coroutine_threadsafe(
                self.cluster.start_engines(n=missing), self.loop.loop
            )
        if wait:
            future.result(60)
            self.client.wait_for_engines(self.n, timeout=60, interactive=False)

    def replace_when_gone(self, engine_id: int, timeout: float = 30.0) -> None:
        """In the background: once ``engine_id`` has left the cluster, start a new engine."""

        def replace() -> None:
            deadline = time.monotonic() + timeout
            while not self.stopped and time.monotonic() < deadline:
                client = self.client
                if client is None or client._closed:
                    return
                if engine_id not in client.ids or len(client.ids) < self.n:
                    with self._replace_lock:
                        self._last_replace = 0.0  # now, not after replace_interval
                    with contextlib.suppress(Exception):
                        self.replace_lost_engines(wait=False)
                    return
                time.sleep(0.1)

        threading.Thread(target=replace, name="notebookscan-engine-replace", daemon=True).start()

    def stop(self) -> None:
        """Stop the engines and the controller, remove the profile; safe to call twice,
        and a Ctrl-C meanwhile does not cut it short (see :func:`run_to_the_end`)."""
        with self._stop_lock:
            if self.stopped:
                return
            self.stopped = True
        run_to_the_end(self._stop)

    def _stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        stop_and_wait(self.cluster, self.loop)
        self.loop.close()
        shutil.rmtree(self.profile_dir, ignore_errors=True)
        if self.watch is not None:
            self.watch.release()


_local_lock = threading.Lock()
_local: _LocalCluster | None = None
_atexit_registered = False


def local_executor(n: int | None = None, *, quiet: bool = False) -> IPyParallelExecutor:
    """The shared local cluster's executor: one engine per core, started on first use.

    The first call starts an ipyparallel controller and ``n`` engines on this machine
    (a few seconds; a message says so) in a private temporary profile directory, never
    the user's ``~/.ipython/profile_default``. Later calls in the same process reuse it,
    restarting engines that died; it is stopped when the interpreter exits. Works in
    scripts and inside a running event loop (a Jupyter kernel).

    Parameters
    ----------
    n
        Engines to start; default: the cores this process may use
        (:func:`~notebookscan.executors.base.usable_cores`, which honours CPU affinity,
        container quotas and ``NOTEBOOKSCAN_WORKERS``). Only used when the cluster starts.
    quiet
        Do not print the start-up message.

    Raises
    ------
    ExecutorError
        The engines did not start (the message has the end of their logs).

    Examples
    --------
    .. code-block:: python

        ex = local_executor()
        # Starting 8 local ipyparallel engines… (a few seconds)
        # 8 local engines ready in 3.1 s.
    """
    global _local, _atexit_registered
    with _local_lock:
        if _local is not None and _local.alive() and _local.executor is not None:
            _local.replace_lost_engines(wait=True)
            return _local.executor
        if _local is not None:
            _local.stop()
            _local = None
        count = int(n or usable_cores())
        if count < 1:
            raise ExecutorError(
                f"n={n!r} engines: pass a positive number, or None for one per core."
            )
        with contextlib.suppress(Exception):
            orphans = reap_orphan_clusters()
            if orphans and not quiet:
                print(f"Stopped {len(orphans)} local cluster(s) left running by a process "
                      "that ended without stopping them.", file=sys.stderr, flush=True)
        cluster = _LocalCluster(count)
        if not _atexit_registered:
            atexit.register(_shutdown_at_exit)
            _atexit_registered = True
        cluster.start(quiet=quiet)
        _local = cluster
        assert cluster.executor is not None
        return cluster.executor


def shutdown_local_executor() -> None:
    """Stop the shared local cluster now (it is also stopped at interpreter exit)."""
    global _local
    with _local_lock:
        if _local is not None:
            _local.stop()
            _local = None


def _shutdown_at_exit() -> None:
    run_to_the_end(shutdown_local_executor, at_exit=True)


def _forget_in_child() -> None:
    # a forked child shares the parent's cluster but not its sockets or threads: it must
    # neither use it nor stop it at its own exit
    global _local, _local_lock
    if _local is not None:
        forget_watch_in_child(_local.watch)
    _local = None
    _local_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
