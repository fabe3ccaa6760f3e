"""Run scans on ipyparallel engines: the executor itself.

:class:`IPyParallelExecutor` adapts a load-balanced view to the executor contract of
:class:`~notebookscan.executors.base.ScanExecutor`. Engines import this module by name
(it holds the task wrapper). Where the engines come from lives elsewhere:

- :mod:`notebookscan.executors.local_cluster`: the shared local cluster behind
  ``executor="local"`` (:func:`~notebookscan.executors.local_cluster.local_executor`), its
  start, reuse and stop, and that its processes never outlive their owner;
- :mod:`notebookscan.executors.cluster`: joining a running cluster (``connect``) and starting one
  through a launcher (``start_cluster``).

ipyparallel is imported only when an executor is built, so :func:`is_worker_lost` can be
used without paying for it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorError
from .base import ScanExecutor
from .ipp_loop import LoopThread
from .ipp_purge import TaskPurging

if TYPE_CHECKING:
    import ipyparallel as ipp

__all__ = ["IPyParallelExecutor", "is_worker_lost"]

log = logging.getLogger(__name__)

# ipyparallel exception names that mean "the engine running this task is gone".
_LOST_NAMES = frozenset({"EngineError"})

#: Seconds the controller may stay silent (a liveness query unanswered, no task
#: finishing) before a scan gives up on it; see :meth:`IPyParallelExecutor.check_alive`.
#: ``NOTEBOOKSCAN_CONTROLLER_TIMEOUT`` in the environment overrides it; 0 turns it off.
CONTROLLER_TIMEOUT = 10.0
#: Seconds between two liveness queries to the controller while a scan runs.
CONTROLLER_CHECK_INTERVAL = 1.0
#: Seconds between two interrupts of an engine whose task has not ended yet, and how long
#: :meth:`IPyParallelExecutor.interrupt_running` keeps trying.
INTERRUPT_RETRY = 2.0
INTERRUPT_PATIENCE = 60.0


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
        # on the engine: can it import the package, the task wrapper (here) and the
        # worker side? A check there, not a dependency of this module (this function
        # travels by value: it imports what it uses itself)
        import importlib

        import cloudpickle  # noqa: F401 - functions defined in a notebook need it

        package = importlib.import_module("notebookscan")
        importlib.import_module("notebookscan.executors.ipyparallel")
        importlib.import_module("notebookscan.run.worker")

        report["notebookscan"] = os.path.dirname(package.__file__ or "")
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


def _cloudpickle_dumps(obj: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- executor


@functools.cache
def _this_host() -> str:
    return socket.gethostname()  # asked once per submitted chunk: a system call each time


class IPyParallelExecutor(TaskPurging, ScanExecutor):
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
        self._pids: dict[int, int] = {}  # engine id -> pid, from the engine check
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
                if isinstance(report.get("pid"), int):
                    self._pids[eid] = report["pid"]

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
        return self._send(fn, args, None)

    def submit_to(self, worker: str, fn: Callable[..., Any], /, *args: Any) -> Future:
        """Run ``fn(*args)`` on the engine ``worker`` names (``"engine 3"``) while that
        engine is registered and among this executor's targets; else on a free engine."""
        return self._send(fn, args, self._engine_of(worker))

    def _engine_of(self, worker: str) -> int | None:
        prefix = "engine "
        if not worker.startswith(prefix) or not worker[len(prefix):].isdigit():
            return None
        eid = int(worker[len(prefix):])
        allowed = self.view.targets
        if allowed is not None and eid not in (allowed if isinstance(allowed, list | tuple)
                                               else [allowed]):
            return None
        return eid if eid in self.client.ids else None

    def _send(self, fn: Callable[..., Any], args: tuple[Any, ...], engine: int | None) -> Future:
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
                if engine is None:
                    ar = self.view.apply_async(_call_cloudpickled, payload)
                else:
                    with self.view.temp_flags(targets=[engine]):
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
        ``KeyboardInterrupt``; queued tasks are aborted. An engine on this host is
        signalled directly (its pid is known from the engine check), others through the
        controller and the engine's nanny. Under load the client may not know yet which
        engine runs a task, and a signal may come before the task has started: a
        background thread asks the controller and repeats the interrupt every
        ``INTERRUPT_RETRY`` s for tasks still running, for up to ``INTERRUPT_PATIENCE`` s
        (an idle engine ignores SIGINT, so a late repeat does no harm).
        """
        with self._lock:
            ids = set(self._pending)
        if not ids or self._controller_lost:
            return
        engines = self._engines_running(ids, ask_hub=False)
        self._signal_engines(signal.SIGINT, engines)
        self.cancel_pending()
        now = time.monotonic()
        threading.Thread(
            target=self._keep_interrupting, args=(ids, dict.fromkeys(engines, now)),
            name="notebookscan-ipp-interrupt", daemon=True,
        ).start()

    def _keep_interrupting(self, ids: set[str], signalled: dict[int, float]) -> None:
        deadline = time.monotonic() + INTERRUPT_PATIENCE
        while time.monotonic() < deadline and not self._closed and not self._controller_lost:
            time.sleep(0.25)
            with self._lock:
                left = ids & self._pending
            if not left:
                return
            now = time.monotonic()
            due = [e for e in self._engines_running(left, ask_hub=True)
                   if now - signalled.get(e, -INTERRUPT_RETRY) >= INTERRUPT_RETRY]
            if due:
                self._signal_engines(signal.SIGINT, due)
                signalled.update(dict.fromkeys(due, now))

    def _engine_of(self, msg_id: str) -> int | None:
        md = self.client.metadata.get(msg_id)  # .get: never create entries in the defaultdict
        return None if md is None else md.get("engine_id")

    def _engines_running(self, ids: set[str], *, ask_hub: bool) -> list[int]:
        """The registered engines running (or holding) these tasks; the controller is asked
        about tasks the client has no engine for yet (``ask_hub``)."""
        engines = {self._engine_of(mid) for mid in ids}
        unknown = {mid for mid in ids if self._engine_of(mid) is None}
        if unknown and ask_hub:
            engines.update(self._hub_task_engines(unknown).values())
        registered = set(self.client.ids)
        return sorted(e for e in engines if e is not None and e in registered)

    def _hub_task_engines(self, ids: set[str], wait: float = 5.0) -> dict[str, int]:
        """Ask the controller which engine each of these tasks was sent to."""
        try:
            with self._lock:
                reply = self.client._send(self.client._query_stream, "queue_request",
                                          content={"targets": None, "verbose": True})
            if not reply.wait(wait):
                return {}
            content = reply.result()["content"]
        except Exception:
            log.debug("asking the controller where tasks run failed", exc_info=True)
            return {}
        found = {}
        for key, queues in content.items():
            if key.isdigit() and isinstance(queues, dict):
                for mid in (*queues.get("tasks", ()), *queues.get("queue", ())):
                    if mid in ids:
                        found[mid] = int(key)
        return found

    def _signal_engines(self, sig: int, engines: list[int]) -> None:
        """Signal engines: by pid when they run on this host, else through the controller
        (the engine's nanny delivers it, even while the engine is stuck in native code)."""
        remote = []
        here = _this_host()
        for eid in engines:
            pid = self._pids.get(eid)
            if pid is None or self._hosts.get(eid) != here:
                remote.append(eid)
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # gone already
            except OSError:
                remote.append(eid)
        if remote:
            with contextlib.suppress(Exception), self._lock:  # the controller may be gone
                self.client.send_signal(sig, targets=remote, block=False)

    # ------------------------------------------------------------------ ending workers

    def engine_of(self, future: Any) -> int | None:
        """The id of the engine running ``future`` (returned by :meth:`submit`), if known.

        Asks the controller when the client has not heard from the engine yet.
        """
        ids = list(getattr(future, "msg_ids", None) or [])
        for mid in ids:
            engine = self._engine_of(mid)
            if engine is not None:
                return engine
        return next(iter(self._hub_task_engines(set(ids)).values()), None) if ids else None

    def end_worker(self, future: Any) -> bool:
        """End the engine running ``future``: a task past its timeout that is stuck where
        Python cannot interrupt it (native code, ``ctypes``, a long numpy call).

        The engine gets SIGKILL: directly when it runs on this host, else through the
        controller and the engine's nanny (ipyparallel starts one per engine; without a
        nanny the engine itself must handle the request, which a stuck engine may not).
        The future then fails with an error for which :func:`is_worker_lost` is true
        once the controller notices the engine is gone. The shared local cluster
        (``executor="local"``) starts a new engine in its place; other clusters lose one
        engine (start another with ``cluster.start_engines_sync(n=1)``).

        Returns
        -------
        bool
            True when the kill was sent; False when the future is done, not from this
            executor, its engine is not known, or the controller is gone.
        """
        if self._closed or self._controller_lost or future.done():
            return False
        if not set(getattr(future, "msg_ids", None) or ()) & self._pending:
            return False
        engine = self.engine_of(future)
        if engine is None or engine not in self.client.ids:
            return False
        self._signal_engines(signal.SIGKILL, [engine])
        self._engine_ended(engine)
        return True

    def _engine_ended(self, engine: int) -> None:
        """Hook run after :meth:`end_worker` killed ``engine`` (the local cluster replaces it)."""

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
    loop = LoopThread("notebookscan-ipp-connect")
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
