"""Run scans on ipyparallel engines: local cores by default, any ipcluster when asked.

:class:`IPyParallelExecutor` adapts a load-balanced view to the executor contract of
:class:`~notebookscan.executors.base.ScanExecutor`. :func:`local_executor` starts (once
per process) a private local cluster with one engine per core and reuses it for every
later scan; it is stopped when the interpreter exits.

ipyparallel is imported only when an executor is built, so :func:`is_worker_lost` can be
used without paying for it.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ExecutorError
from .base import ScanExecutor, usable_cores

if TYPE_CHECKING:
    import ipyparallel as ipp

__all__ = [
    "IPyParallelExecutor",
    "is_worker_lost",
    "local_executor",
    "reap_orphan_clusters",
    "shutdown_local_executor",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Heartbeat period (ms) of the clusters notebookscan starts on this machine. The
#: default (3000 ms) makes engines wait ~6 s to register; 500 ms brings a 2-engine
#: start-up from ~7 s down to ~3 s. Keep the default on busy shared HPC nodes.
LOCAL_HEARTBEAT_MS = 500

# ipyparallel exception names that mean "the engine running this task is gone".
_LOST_NAMES = frozenset({"EngineError"})
# seconds a finished task may wait for its engine's last output message before purging
_OUTPUT_WAIT = 60.0

#: Seconds the controller may stay silent (a liveness query unanswered, no task
#: finishing) before a scan gives up on it; see :meth:`IPyParallelExecutor.check_alive`.
#: ``NOTEBOOKSCAN_CONTROLLER_TIMEOUT`` in the environment overrides it; 0 turns it off.
CONTROLLER_TIMEOUT = 10.0
#: Seconds between two liveness queries to the controller while a scan runs.
CONTROLLER_CHECK_INTERVAL = 1.0
HUB_PURGE_TRIES = 5  # purge requests per task id before leaving it to the hub's own culling


def _default_controller_timeout() -> float:
    try:
        return float(os.environ.get("NOTEBOOKSCAN_CONTROLLER_TIMEOUT", CONTROLLER_TIMEOUT))
    except ValueError:
        return CONTROLLER_TIMEOUT


# --------------------------------------------------------------------------- engine side


def _call_cloudpickled(payload: bytes) -> Any:
    """Engine side of :meth:`IPyParallelExecutor.submit`: ``fn(*args)`` from cloudpickle bytes.

    Plain :mod:`pickle` reads what cloudpickle wrote (cloudpickle is imported on demand
    for functions sent by value).
    """
    fn, args = pickle.loads(payload)
    return fn(*args)


def _probe_engine() -> dict[str, Any]:  # pragma: no cover - runs on the engines
    """Report whether this engine can run notebookscan tasks.

    Sent with ``__module__ == "__main__"`` so that ipyparallel rebuilds it on the engine
    without importing notebookscan first: it must work exactly where that import fails.
    """
    import os
    import socket
    import sys

    report: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.executable,
        "version": list(sys.version_info[:2]),
        "cwd": os.getcwd(),
        "error": "",
    }
    try:
        import cloudpickle  # noqa: F401 - functions defined in a notebook need it

        import notebookscan
        import notebookscan.executors.ipyparallel  # the task wrapper lives here
        import notebookscan.worker

        report["notebookscan"] = os.path.dirname(notebookscan.__file__ or "")
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["sys_path"] = list(sys.path)
    return report


_probe_engine.__module__ = "__main__"


# --------------------------------------------------------------------------- helpers


def is_worker_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the engine running the task died (resubmit the task).

    ipyparallel reports a task whose engine died (killed, out of memory, node lost) as
    a ``RemoteError`` named ``EngineError``; a ``CompositeError`` counts when one of its
    parts is. Exceptions raised by the function itself, ``TaskAborted`` (a task
    cancelled by :meth:`IPyParallelExecutor.cancel_pending`) and ``KeyboardInterrupt``
    sent by :meth:`IPyParallelExecutor.interrupt_running` are not lost workers.

    Examples
    --------
    >>> is_worker_lost(ValueError("bad input"))
    False
    """
    if not type(exc).__module__.startswith("ipyparallel"):
        return False
    if type(exc).__name__ in _LOST_NAMES or getattr(exc, "ename", None) in _LOST_NAMES:
        return True
    parts = getattr(exc, "elist", None) or []  # CompositeError: (ename, evalue, tb, info)
    return any(part and part[0] in _LOST_NAMES for part in parts)


class _LoopThread:
    """A private asyncio loop in a daemon thread, to drive ipyparallel's async API.

    Starting and stopping a cluster from the same loop works the same in a script, in a
    thread and inside a running event loop (a Jupyter kernel), where blocking the
    kernel's own loop would deadlock.
    """

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=name, daemon=True)
        self.thread.start()
        started.wait(10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if self.loop.is_closed():
            coro.close()
            raise ExecutorError("the cluster's event loop is closed; start a new cluster.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def _cloudpickle_dumps(obj: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError:
        return ""


def _engine_logs(profile_dir: str | None, lines: int = 15) -> str:
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


def _stop_and_wait(cluster: Any, loop: _LoopThread, timeout: float = 10.0) -> None:
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


# --------------------------------------------------------------------------- executor


@functools.cache
def _this_host() -> str:
    return socket.gethostname()  # asked once per submitted chunk: a system call each time


class IPyParallelExecutor(ScanExecutor):
    """Runs tasks on ipyparallel engines through a load-balanced view.

    Each task goes to whichever engine is free. Functions and arguments are sent as
    cloudpickle bytes, so functions defined in a notebook cell (``__main__``), lambdas
    and closures run on engines like any other; the engines need notebookscan and
    cloudpickle importable (checked before the first task, see :meth:`check_engines`).

    Results do not pile up: once a task is done its id is removed from the client's
    caches and history and, in batches, from the controller's task database
    (:meth:`purge`).

    Parameters
    ----------
    view
        An ipyparallel ``LoadBalancedView``. Tasks always go through a new view on the
        same client and targets, with ``retries=0`` (see the note in :meth:`submit`).
    cluster
        The ``ipyparallel.Cluster`` the engines belong to, when known (for messages and
        engine logs).
    owns_client
        Close the client in :meth:`shutdown` (true when notebookscan created it).
    purge_every, purge_interval
        Purge finished tasks from the controller when this many are waiting, or at the
        latest every ``purge_interval`` seconds.
    check_timeout
        Seconds to wait for the engines' answer to the import check before the first
        task. Busy engines answer later; a failure then stops the next ``submit``.
    controller_timeout
        Seconds the controller may stay silent before a running scan stops with an
        :class:`~notebookscan.errors.ExecutorError` (default 10 s, or
        ``NOTEBOOKSCAN_CONTROLLER_TIMEOUT``; 0: wait forever). Raise it on a slow link
        (an ssh tunnel) or a heavily loaded controller; see :meth:`check_alive`.

    Examples
    --------
    Any ``Client``, ``View`` or started ``Cluster`` works (``cluster`` is a started
    ``ipyparallel.Cluster``):

    .. code-block:: python

        ex = IPyParallelExecutor.from_object(cluster)
        ex.submit(pow, 2, 10).result()    # 1024
    """

    needs_pickled_function = True

    def __init__(
        self,
        view: ipp.LoadBalancedView,
        *,
        cluster: ipp.Cluster | None = None,
        owns_client: bool = False,
        purge_every: int = 256,
        purge_interval: float = 2.0,
        check_timeout: float = 30.0,
        controller_timeout: float | None = None,
    ):
        self.client: ipp.Client = view.client
        # our own view: we trim its history and never let anyone turn retries on for it
        self.view: ipp.LoadBalancedView = self.client.load_balanced_view(targets=view.targets)
        self.view.set_flags(retries=0)
        self.cluster = cluster if cluster is not None else getattr(self.client, "cluster", None)
        self.owns_client = owns_client
        self.purge_every = int(purge_every)
        self.purge_interval = float(purge_interval)
        self.check_timeout = float(check_timeout)
        self._lock = threading.RLock()
        self._pending: set[str] = set()
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._wake = threading.Event()
        self._purger: threading.Thread | None = None
        self._closed = False
        self._checked: set[int] = set()
        self._hosts: dict[int, str] = {}  # engine id -> host name, from the engine check
        self._check_failures: dict[int, dict[str, Any]] = {}
        self._probes: set[int] = set()
        self.hub_purge_failures = 0
        self._hub_refused: dict[str, int] = {}  # task id -> purge requests the hub refused
        self.controller_timeout = float(
            _default_controller_timeout() if controller_timeout is None else controller_timeout
        )
        self._probe: Any = None  # the liveness query in flight (a MessageFuture), if any
        self._probe_sent = 0.0
        self._last_task_done = 0.0  # a task finishing is a sign of life as well
        self._controller_lost = ""  # the error message, once the controller is gone
        profile = getattr(self.cluster, "profile_dir", "") or ""
        where = f"cluster {self.cluster.cluster_id!r}" if self.cluster is not None else "ipcluster"
        self.description = f"ipyparallel ({where}{', ' + profile if profile else ''})"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_object(cls, obj: Any, **kwargs: Any) -> IPyParallelExecutor:
        """Build an executor from a ``Client``, a ``View`` or a started ``Cluster``.

        Parameters
        ----------
        obj
            ``ipyparallel.Client``: all of its engines; ``LoadBalancedView`` or
            ``DirectView``: the same engines (``view.targets``), load-balanced; a started
            ``ipyparallel.Cluster``: a client connected to it (created once per cluster
            and reused).
        **kwargs
            Passed to :class:`IPyParallelExecutor`.

        Raises
        ------
        ExecutorError
            ``obj`` is none of these, its client is closed, or the cluster is not started.
        """
        import ipyparallel as ipp

        if isinstance(obj, IPyParallelExecutor):
            return obj
        if isinstance(obj, ipp.Cluster):
            return _executor_for_cluster(obj, **kwargs)
        if isinstance(obj, ipp.Client):
            client, targets = obj, None
        elif isinstance(obj, (ipp.LoadBalancedView, ipp.DirectView)):
            client, targets = obj.client, obj.targets
        else:
            raise ExecutorError(
                f"cannot build an ipyparallel executor from {obj!r} (type {type(obj).__name__}); "
                "pass an ipyparallel Client, a LoadBalancedView or DirectView, or a started "
                "Cluster (or use notebookscan.connect(...) / notebookscan.start_cluster(...))."
            )
        if getattr(client, "_closed", False):
            raise ExecutorError(
                f"the ipyparallel client {client!r} is closed; connect a new one, e.g. "
                "notebookscan.connect(profile=..., cluster_id=...)."
            )
        if isinstance(obj, ipp.DirectView) and targets == "all":
            targets = None
        view = client.load_balanced_view(targets=targets)
        return cls(view, **kwargs)

    # ------------------------------------------------------------------ engines

    def _target_ids(self) -> list[int]:
        ids = self.client.ids
        targets = self.view.targets
        if targets is None or targets == "all":
            return ids
        wanted = {targets} if isinstance(targets, int) else set(targets)
        return [i for i in ids if i in wanted]

    def worker_count(self) -> int:
        """Engines registered right now (engines can join and die during a scan)."""
        return len(self._target_ids())

    @property  # type: ignore[override]
    def shares_filesystem(self) -> bool:
        """True when every engine checked so far runs on this host."""
        hosts = set(self._hosts.values())
        return bool(hosts) and hosts == {_this_host()}

    @property  # type: ignore[override]
    def max_workers(self) -> int:
        """Tasks that run at once: the registered engines (at least 1)."""
        return max(1, self.worker_count())

    def check_engines(self, timeout: float | None = None) -> None:
        """Check that every engine not yet checked can import notebookscan and cloudpickle.

        The first check waits up to ``timeout`` seconds (default ``check_timeout``) for
        the answers; engines that join later, or that are busy with someone else's task,
        answer in the background, and a failure they report makes the next
        :meth:`submit` raise.

        Raises
        ------
        ExecutorError
            An engine cannot import notebookscan or cloudpickle, or runs another Python
            minor version than this process.
        """
        self._raise_check_failures()
        new = [i for i in self._target_ids() if i not in self._checked and i not in self._probes]
        if not new:
            return
        first = not self._checked and not self._probes
        self._probes.update(new)
        with self._lock:
            ar = self.client.direct_view(targets=new).apply_async(_probe_engine)
        ar.add_done_callback(lambda f, ids=tuple(new): self._probe_done(f, ids))
        if timeout is None:
            timeout = self.check_timeout if first else 0.0
        if timeout > 0:
            ar.wait(timeout)  # returns False on timeout: the callback reports later
        self._raise_check_failures()

    def _probe_done(self, ar: Any, ids: tuple[int, ...]) -> None:
        now = time.monotonic()
        with self._lock:
            self._finished.extend((now, mid) for mid in ar.msg_ids)
            self._probes.difference_update(ids)
        try:
            reports = ar.result()
        except Exception as exc:
            if is_worker_lost(exc):
                return  # an engine died while being checked: nothing to say about the rest
            reports = [{"error": f"{type(exc).__name__}: {exc}"} for _ in ids]
        mine = list(sys.version_info[:2])
        for eid, report in zip(ids, reports, strict=False):
            if not report.get("error") and report.get("version") != mine:
                report["error"] = (
                    f"the engine runs Python {'.'.join(map(str, report.get('version', [])))} "
                    f"and this process Python {'.'.join(map(str, mine))}; functions "
                    "defined in a notebook travel as bytecode and need the same minor version"
                )
            if report.get("error"):
                self._check_failures[eid] = report
            else:
                self._checked.add(eid)
                self._hosts[eid] = report.get("host", "")

    def _raise_check_failures(self) -> None:
        if not self._check_failures:
            return
        eid, report = next(iter(self._check_failures.items()))
        others = len(self._check_failures) - 1
        path = report.get("sys_path")
        raise ExecutorError(
            f"ipyparallel engine {eid} (host {report.get('host', '?')}, python "
            f"{report.get('python', '?')}, cwd {report.get('cwd', '?')})"
            f"{f' and {others} other engine(s)' if others else ''} cannot run notebookscan "
            f"tasks: {report['error']}."
            + (f" Its sys.path is {path}." if path else "")
            + " Install notebookscan (and cloudpickle) in the environment the engines run in "
            "(`pip install notebookscan` there), or put the source on their PYTHONPATH "
            "before starting the engines, then start the scan again."
        )

    # ------------------------------------------------------------------ tasks

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        """Run ``fn(*args)`` on a free engine; returns the task's ``AsyncResult``.

        ``AsyncResult`` is a :class:`concurrent.futures.Future`: ``result()``,
        ``add_done_callback`` and :func:`concurrent.futures.wait` work. A task whose
        engine died fails with an error for which :func:`is_worker_lost` is true.
        """
        if self._closed:
            raise ExecutorError(f"{self!r} was shut down; build a new executor to run more tasks.")
        if self._controller_lost:
            raise ExecutorError(self._controller_lost)
        if getattr(self.client, "_closed", False):
            raise ExecutorError(
                "the ipyparallel client of this executor was closed; connect again with "
                "notebookscan.connect(...) or pass a new Client."
            )
        self.check_engines()
        try:
            payload = _cloudpickle_dumps((fn, args))
        except Exception as exc:
            raise ExecutorError(
                f"cannot send {getattr(fn, '__qualname__', fn)!r} and its arguments to the "
                f"engines: cloudpickle failed with {type(exc).__name__}: {exc}. Objects such as "
                "open files, locks or database connections cannot travel; create them "
                "inside the function instead."
            ) from exc
        self._maintain()
        with self._lock:
            # retries stays 0. ipyparallel's `retries` also re-runs tasks that raised an
            # ordinary exception, never on an engine that already failed the task, so with
            # few engines a failing task waits forever for an engine it has not failed on
            # and the scan hangs. The scan loop itself re-submits a chunk whose engine died
            # (is_worker_lost) and bounds that with its max_retries.
            try:
                ar = self.view.apply_async(_call_cloudpickled, payload)
            except (OSError, RuntimeError) as exc:
                raise ExecutorError(
                    f"ipyparallel refused the task: {type(exc).__name__}: {exc}. Is the "
                    "controller still running? Connect again with notebookscan.connect(...)."
                ) from exc
            self._pending.update(ar.msg_ids)
        ar.add_done_callback(self._task_done)
        self._start_purger()
        return ar

    def is_worker_lost(self, exc: BaseException) -> bool:
        """See :func:`is_worker_lost`."""
        return is_worker_lost(exc)

    # ------------------------------------------------------------------ controller liveness

    @property
    def controller_address(self) -> str:
        """Where the controller listens for this client (its registration address)."""
        config = getattr(self.client, "_config", None) or {}
        return str(config.get("registration") or config.get("location") or "?")

    @property
    def controller_lost(self) -> bool:
        """True once :meth:`check_alive` found the controller gone."""
        return bool(self._controller_lost)

    def check_alive(self) -> None:
        """Raise :class:`ExecutorError` when the controller has stopped answering.

        ipyparallel has no heartbeat between a client and its controller: when the
        controller dies (SIGKILL, lost node) the client's futures simply never finish.
        So this sends a cheap query (queue status) at most every
        ``CONTROLLER_CHECK_INTERVAL`` seconds and never waits for its reply; the
        controller counts as gone when a query has stayed unanswered, and no task has
        finished, for ``controller_timeout`` seconds. Cheap enough to call on every
        turn of the scan loop.
        """
        if self._controller_lost:
            raise ExecutorError(self._controller_lost)
        if self.controller_timeout <= 0 or self._closed or getattr(self.client, "_closed", False):
            return
        now = time.monotonic()
        probe = self._probe
        if probe is not None and not probe.done():
            silent = now - max(self._probe_sent, self._last_task_done)
            if silent > self.controller_timeout:
                self._controller_lost = (
                    f"the ipyparallel controller at {self.controller_address} stopped "
                    f"answering (no reply for {silent:.0f} s, controller_timeout="
                    f"{self.controller_timeout:g} s); the tasks still out on its engines are "
                    "abandoned, finished results are stored; restart the cluster (or connect to "
                    "a running one) and run() again to resume"
                )
                raise ExecutorError(self._controller_lost)
            return
        if now - self._probe_sent < CONTROLLER_CHECK_INTERVAL:
            return
        self._probe_sent = now
        try:
            with self._lock:  # the same lock as apply_async: the client is not thread-safe
                self._probe = self.client._send(
                    self.client._query_stream, "queue_request",
                    content={"targets": None, "verbose": False},
                )
        except Exception:  # a closed client: submit() says so
            log.debug("controller liveness query failed", exc_info=True)
            self._probe = None

    def _maintain(self) -> None:
        """Hook run before each task (the shared local cluster replaces dead engines)."""

    def _task_done(self, ar: Any) -> None:
        # runs on the client's IO thread: bookkeeping only, nothing that waits for a reply
        now = time.monotonic()
        self._last_task_done = now
        with self._lock:
            self._pending.difference_update(ar.msg_ids)
            self._finished.extend((now, mid) for mid in ar.msg_ids)
            for mid in ar.msg_ids:  # the AsyncResult holds the result: no second copy
                self.client.results.pop(mid, None)
            waiting = len(self._finished)
        if waiting >= self.purge_every:
            self._wake.set()

    def cancel_pending(self) -> None:
        """Abort tasks that are queued and have not started (they fail with ``TaskAborted``)."""
        with self._lock:
            ids = [mid for mid in self._pending if self._engine_of(mid) is None]
        if not ids or not self.client.ids or self._controller_lost:
            return
        with contextlib.suppress(Exception):  # best effort: the controller may be gone
            self.client.abort(jobs=ids, block=False)

    def interrupt_running(self) -> None:
        """Send SIGINT to the engines running this executor's tasks (``KeyboardInterrupt``).

        Engines stay alive; the interrupted tasks fail with a ``RemoteError`` named
        ``KeyboardInterrupt``. Tasks whose engine is not yet known are aborted instead.
        """
        with self._lock:
            engines = {self._engine_of(mid) for mid in self._pending}
        engines.discard(None)
        registered = set(self.client.ids)
        targets = sorted(e for e in engines if e in registered)
        if targets:
            with contextlib.suppress(Exception):
                self.client.send_signal(signal.SIGINT, targets=targets, block=False)
        self.cancel_pending()

    def _engine_of(self, msg_id: str) -> int | None:
        md = self.client.metadata.get(msg_id)  # .get: never create entries in the defaultdict
        return None if md is None else md.get("engine_id")

    # ------------------------------------------------------------------ purging

    def purge(self, grace: float = 0.0) -> int:
        """Forget finished tasks: client caches, histories and the controller's database.

        Runs by itself in a background thread (every ``purge_every`` tasks or
        ``purge_interval`` seconds); call it to purge now. Returns how many task ids
        were purged. ``grace`` keeps tasks finished less than that many seconds ago (their
        last output messages may still be on the way).
        """
        now = time.monotonic()
        cutoff = now - grace
        client = self.client
        # ipyparallel drops a task from its own caches once both the reply and the
        # engine's last output message ("idle") have arrived; the output can lag behind
        # the result. Removing the metadata before that would make the late message
        # recreate it, so such tasks wait for the next round (at most `_OUTPUT_WAIT` s).
        unresolved = getattr(client, "_futures", {})
        with self._lock:
            ids: list[str] = []
            later: list[tuple[float, str]] = []
            while self._finished and self._finished[0][0] <= cutoff:
                done_at, mid = self._finished.popleft()
                if mid in unresolved and now - done_at < _OUTPUT_WAIT:
                    later.append((done_at, mid))
                else:
                    ids.append(mid)
            self._finished.extendleft(reversed(later))
            retry = bool(self._hub_refused)
            drop = set(ids)
            for mid in ids:
                client.results.pop(mid, None)
                client.metadata.pop(mid, None)
                unresolved.pop(mid, None)
                getattr(client, "_output_futures", {}).pop(mid, None)
            # ipyparallel 9 records one stray entry under this key on every send
            client.metadata.pop("submitted", None)
            # in place, under the lock that also covers apply_async (which reads history)
            if drop:
                client.history[:] = [m for m in client.history if m not in drop]
                self.view.history[:] = [m for m in self.view.history if m not in drop]
        if ids or retry:
            self._purge_hub(ids)
        return len(ids)

    def _purge_hub(self, ids: list[str]) -> None:
        if getattr(self.client, "_closed", False) or self._controller_lost:
            return
        # the hub refuses ids it has not yet seen finish (it can lag behind the client
        # under load): those are tried again in the next rounds
        with self._lock:
            ids = [*ids, *self._hub_refused]
        if not ids:
            return
        try:
            if self._hub_purge(ids):
                with self._lock:
                    self._hub_refused.clear()
                return
        except TimeoutError:
            return  # the controller does not answer: check_alive() tells the scan
        except Exception:
            pass  # one id the hub still counts as pending fails the whole batch
        for mid in ids:
            try:
                purged = self._hub_purge([mid])
            except TimeoutError:
                return
            except Exception:
                purged = False
            with self._lock:
                if purged:
                    self._hub_refused.pop(mid, None)
                    continue
                tries = self._hub_refused[mid] = self._hub_refused.get(mid, 0) + 1
                if tries >= HUB_PURGE_TRIES:
                    del self._hub_refused[mid]
                    self.hub_purge_failures += 1  # the hub culls old records itself eventually

    def _hub_purge(self, ids: list[str]) -> bool:
        """``client.purge_hub_results(jobs=ids)`` with a bounded wait.

        The public call waits forever for the reply, so a dead controller would hang
        :meth:`shutdown` (and ``ClusterHandle.stop``). Returns False when the hub refused.
        """
        future = self.client._send(self.client._query_stream, "purge_request",
                                   content={"engine_ids": [], "msg_ids": list(ids)})
        wait = self.controller_timeout if self.controller_timeout > 0 else 60.0
        if not future.wait(wait):
            raise TimeoutError(f"the controller did not answer a purge request in {wait:g} s")
        return future.result()["content"].get("status") == "ok"

    def _start_purger(self) -> None:
        if self._purger is not None and self._purger.is_alive():
            return
        with self._lock:
            if self._purger is not None and self._purger.is_alive():
                return
            self._purger = threading.Thread(
                target=self._purge_loop, name="notebookscan-ipp-purge", daemon=True
            )
            self._purger.start()

    def _purge_loop(self) -> None:
        idle_since = time.monotonic()
        while not self._closed and not getattr(self.client, "_closed", False):
            self._wake.wait(self.purge_interval)
            self._wake.clear()
            if self._closed:
                break
            try:
                purged = self.purge(grace=0.5)
            except Exception:  # never let bookkeeping kill the thread silently mid-scan
                log.debug("purging finished ipyparallel tasks failed", exc_info=True)
                purged = 0
            with self._lock:
                busy = bool(self._pending or self._finished or self._hub_refused)
            if purged or busy:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 10 * self.purge_interval:
                with self._lock:  # idle: exit; the next submit starts a new thread
                    if not (self._pending or self._finished or self._hub_refused):
                        self._purger = None
                        return

    # ------------------------------------------------------------------ lifetime

    def shutdown(self) -> None:
        """Purge what is left and close the client if this executor created it.

        A cluster is never stopped here; use the handle that started it.
        """
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self.purge()
        self._closed = True
        self._wake.set()
        if self.owns_client:
            with contextlib.suppress(Exception):
                # linger=0: messages to a dead controller would otherwise block exit
                self.client.close(linger=0 if self._controller_lost else None)

    def __repr__(self) -> str:
        return f"<IPyParallelExecutor: {self.description}, {self.worker_count()} engine(s)>"


# one executor (and client) per ipyparallel.Cluster object passed in, reused across scans
_cluster_executors: weakref.WeakKeyDictionary[Any, IPyParallelExecutor] = (
    weakref.WeakKeyDictionary()
)


def _executor_for_cluster(cluster: ipp.Cluster, **kwargs: Any) -> IPyParallelExecutor:
    executor = _cluster_executors.get(cluster)
    if (executor is not None and not executor._closed and not executor.client._closed
            and not executor.controller_lost):
        return executor
    if cluster.controller is None:
        raise ExecutorError(
            f"the ipyparallel cluster {cluster!r} is not running; start it first "
            "(cluster.start_cluster_sync(), or `await cluster.start_cluster()` in a notebook), "
            "or let notebookscan start one: notebookscan.start_cluster(n=..., engines=...)."
        )
    loop = _LoopThread("notebookscan-ipp-connect")
    try:
        client = loop.run(cluster.connect_client(), timeout=60)
    except Exception as exc:
        raise ExecutorError(
            f"cannot connect to the ipyparallel cluster {cluster!r}: {type(exc).__name__}: "
            f"{exc}. Is its controller still running (`ipcluster list`)?"
        ) from exc
    finally:
        loop.close()
    executor = IPyParallelExecutor(
        client.load_balanced_view(), cluster=cluster, owns_client=True, **kwargs
    )
    _cluster_executors[cluster] = executor
    return executor


# --------------------------------------------------------------------------- orphans

#: prefixes of the temporary profile directories of clusters notebookscan starts
TEMP_PROFILE_PREFIXES = ("notebookscan-ipp-", "notebookscan-cluster-")
_OWNER_FILE = "notebookscan-owner.json"


def _claim(profile_dir: str) -> None:
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


def reap_orphan_clusters(loop: _LoopThread | None = None) -> list[str]:
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
            own_loop = loop or _LoopThread("notebookscan-reaper")
            try:
                for state in glob.glob(os.path.join(directory, "security", "cluster-*.json")):
                    with contextlib.suppress(Exception):
                        cluster = ipp.Cluster.from_file(state, log_level=logging.ERROR)
                        cluster.shutdown_atexit = False
                        _stop_and_wait(cluster, own_loop)
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


class _LocalCluster:
    """The process-wide local cluster behind :func:`local_executor`."""

    #: seconds between two attempts to replace dead engines during a scan
    replace_interval = 10.0

    def __init__(self, n: int):
        import ipyparallel as ipp

        self.n = n
        self.profile_dir = tempfile.mkdtemp(prefix=TEMP_PROFILE_PREFIXES[0])
        _claim(self.profile_dir)
        self.loop = _LoopThread("notebookscan-local-cluster")
        self.cluster = ipp.Cluster(
            n=n,
            profile_dir=self.profile_dir,
            controller_ip="127.0.0.1",
            log_level=logging.ERROR,
            controller_args=[f"--HeartMonitor.period={LOCAL_HEARTBEAT_MS}"],
            shutdown_atexit=False,  # stopped by our own atexit hook, on our own loop
            parent=None,  # never inherit the user's IPython profile configuration
        )
        # the engines' IPython would otherwise create ~/.ipython/profile_default
        self.cluster.config.LocalEngineSetLauncher.environment = {
            "IPYTHONDIR": os.path.join(self.profile_dir, "ipython")
        }
        self.client: ipp.Client | None = None
        self.executor: _LocalExecutor | None = None
        self.started_in = 0.0
        self._last_replace = 0.0
        self._replace_lock = threading.Lock()

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
            logs = _engine_logs(self.profile_dir)
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

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        _stop_and_wait(self.cluster, self.loop)
        self.loop.close()
        shutil.rmtree(self.profile_dir, ignore_errors=True)


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
            atexit.register(shutdown_local_executor)
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


def _forget_in_child() -> None:
    # a forked child shares the parent's cluster but not its sockets or threads: it must
    # neither use it nor stop it at its own exit
    global _local, _local_lock
    _local = None
    _local_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
