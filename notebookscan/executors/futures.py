"""Adapt any :class:`concurrent.futures.Executor` (process pools, dask, mpi4py.futures).

A process pool that notebookscan creates itself (``executor="processes"``) gets two
extra guarantees:

* **A dying worker costs only its own task.** When one worker process dies (``os._exit``,
  a segfault, the OOM killer) a ``ProcessPoolExecutor`` breaks and fails *every* task in
  it. The pool is rebuilt and the tasks that were in it are re-run one at a time, each in
  a pool of its own, so only the task that kills its worker again fails (with
  :class:`WorkerDied`, naming the exit code or signal); the others get their results.
* **Workers do not outlive the scan's process.** Each worker watches its parent and exits
  when it is gone (a SIGKILLed kernel or script cannot shut its pool down).
* **A stuck task can be ended.** Each worker records in shared memory which task it
  runs, so :meth:`FuturesExecutor.end_worker` kills exactly that worker (a task stuck in
  native code ignores every Python-level interrupt); its future fails with
  :class:`WorkerEnded` and the pool is replaced, the pool's other tasks re-run in it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from .base import FORK_LOCK, ScanExecutor, usable_cores

__all__ = ["FuturesExecutor", "WorkerDied", "WorkerEnded", "process_pool"]

log = logging.getLogger(__name__)

#: seconds between two looks of a pool worker at whether its parent process still lives
PARENT_CHECK_INTERVAL = 0.5


class WorkerDied(BrokenProcessPool):
    """The worker process running this task died while running it alone (the task's own
    doing: ``os._exit``, a crash in native code, running out of memory)."""


class WorkerEnded(BrokenProcessPool):
    """The worker process running this task was killed on purpose by
    :meth:`FuturesExecutor.end_worker` (the task was stuck past its timeout)."""


# --------------------------------------------------------------------------- worker side


def _exit_with_parent(interval: float = PARENT_CHECK_INTERVAL) -> None:
    """Pool initializer: exit this worker as soon as the process that started it dies.

    A worker only notices a dead parent after its current task (when it next reads the
    task queue), so a SIGKILLed client would leave workers computing long tasks for
    nothing. A daemon thread compares ``os.getppid()`` with the parent seen at start
    (an orphan is re-parented to init or a subreaper) and ends the process at once.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="notebookscan-parent-watch", daemon=True).start()


# worker side of the task table: (shared array, this worker's slot)
_slot: tuple[Any, int] | None = None


def _init_worker(slots: Any, taken: Any) -> None:
    """Pool initializer: watch the parent, take a slot of the task table, record the pid.

    ``slots`` holds two integers per worker: its pid and the id of the task it runs
    (0 when idle); ``taken`` counts the slots handed out.
    """
    global _slot
    _exit_with_parent()
    with taken.get_lock():
        index = taken.value
        taken.value += 1
    if 2 * index + 1 < len(slots):
        slots[2 * index] = os.getpid()
        _slot = (slots, index)


def _tracked_call(task_id: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` with ``task_id`` in this worker's slot, so it can be ended."""
    if _slot is None:
        return fn(*args)
    slots, index = _slot
    slots[2 * index + 1] = task_id
    try:
        return fn(*args)
    finally:
        slots[2 * index + 1] = 0


class _TrackedPool(ProcessPoolExecutor):
    """A process pool whose workers record the task they run (see :func:`_tracked_call`)."""

    def __init__(self, workers: int):
        #: set by end_worker: this pool broke because a worker was killed on purpose
        self.ended = False
        self.slots = multiprocessing.Array("q", 2 * workers, lock=False)
        taken = multiprocessing.Value("i", 0)
        super().__init__(max_workers=workers, initializer=_init_worker,
                         initargs=(self.slots, taken))

    def pid_running(self, task_id: int) -> int | None:
        """The pid of the worker running task ``task_id`` now, or None."""
        values = list(self.slots)
        for pid, running in zip(values[::2], values[1::2], strict=True):
            if running == task_id and pid > 0:
                return pid
        return None


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return _TrackedPool(workers)


def _how_it_died(pool: Executor) -> str:
    """'exit code 1' / 'killed by SIGSEGV' for the worker of a broken one-worker pool."""
    processes = list(getattr(pool, "_processes", {}).values())  # private; best effort
    for _ in range(50):  # the broken pool reaps its workers itself, shortly
        codes = [p.exitcode for p in processes]
        if codes and all(code is not None for code in codes):
            break
        time.sleep(0.01)
    # the pool SIGTERMs its other workers once one died: the odd one out is the one
    died = [p for p in processes if p.exitcode not in (None, -signal.SIGTERM)]
    for proc in died or [p for p in processes if p.exitcode is not None]:
        code = proc.exitcode
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"pid {proc.pid}, killed by {signal.Signals(-code).name}"
            return f"pid {proc.pid}, killed by signal {-code}"
        return f"pid {proc.pid}, exit code {code}"
    return "exit code unknown"


# --------------------------------------------------------------------------- adapter


@dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    outer: Future  # what submit() returned
    tid: int = 0  # its id in the workers' task table
    ended: str = ""  # set by end_worker: how its worker was ended


def _settle(outer: Future, inner: Future) -> None:
    """Copy the outcome of the pool's future onto the one handed out (unless cancelled)."""
    if outer.done():
        return
    if inner.cancelled():
        outer.cancel()
        return
    exc = inner.exception()
    with contextlib.suppress(Exception):  # InvalidStateError: cancelled meanwhile
        if exc is None:
            outer.set_result(inner.result())
        else:
            outer.set_exception(exc)


class FuturesExecutor(ScanExecutor):
    """Wraps a :class:`concurrent.futures.Executor` such as a ``ProcessPoolExecutor``,
    ``distributed.Client.get_executor()`` or ``mpi4py.futures.MPIPoolExecutor``.

    Parameters
    ----------
    executor
        The executor to submit to. It is shut down at the end only if ``owned``.
    max_workers
        Tasks that run at once; read from the executor when it says, else the CPU count.
    owned
        True when this adapter created ``executor`` and must shut it down.
    factory
        Builds a new pool of ``n`` workers (only for pools this adapter owns). With it, a
        pool broken by a dying worker is rebuilt and its tasks re-run one at a time, so
        only the task that kills its worker fails (see the module docstring).
    """

    def __init__(self, executor: Executor, *, max_workers: int | None = None, owned: bool = False,
                 factory: Callable[[int], Executor] | None = None):
        self.executor = executor
        self.max_workers = int(
            max_workers or getattr(executor, "_max_workers", None) or usable_cores()
        )
        self.owned = owned
        # a private subclass (the tracked pool) is named by its public base
        self.description = next(cls.__name__ for cls in type(executor).__mro__
                                if not cls.__name__.startswith("_"))
        # a process pool runs on this machine; other executors (dask, MPI) may not
        self.shares_filesystem = isinstance(executor, ProcessPoolExecutor)
        self.factory = factory if owned else None
        self._futures: set[Future] = set()
        self._lock = threading.RLock()
        self._live: dict[Future, _Task] = {}  # pool future -> task, in the current pool
        self._casualties: list[_Task] = []  # tasks failed by the pool breaking
        self._held: collections.deque[_Task] = collections.deque()  # wait for a recovery
        self._recovering = False  # new tasks wait in _held while this is true
        self._recovery: threading.Thread | None = None
        self._closed = False
        self._ids = itertools.count(1)
        self._alone: tuple[_Task, Executor] | None = None  # the task recovery runs alone
        #: pools rebuilt after a worker died, and tasks found to kill their worker
        self.pool_breaks = 0
        self.workers_killed_by_tasks = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        if self.factory is None:
            future = self.executor.submit(fn, *args)
        else:
            future = Future()
            task = _Task(fn, args, future, next(self._ids))
            with self._lock:
                if self._recovering:
                    self._held.append(task)
                else:
                    self._start(task)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def _start(self, task: _Task) -> None:
        """Submit ``task`` to the current pool (under ``_lock``)."""
        if task.outer.done():  # cancelled while held back
            return
        try:
            inner = _submit_tracked(self.executor, task)
        except BrokenExecutor:
            if self._live:  # their failures start the recovery, which runs this task too
                self._held.append(task)
                self._recovering = True
                return
            # a worker died while idle: nobody else will notice, rebuild now
            self._replace_pool()
            inner = _submit_tracked(self.executor, task)
        self._live[inner] = task
        task.outer.add_done_callback(lambda outer, inner=inner: outer.cancelled()
                                     and inner.cancel())
        inner.add_done_callback(self._pool_task_done)

    def _pool_task_done(self, inner: Future) -> None:
        # runs in the pool's manager thread: bookkeeping only, the recovery has its own
        with self._lock:
            task = self._live.pop(inner, None)
            if task is None:
                return
            if inner.cancelled() or not isinstance(inner.exception(), BrokenExecutor):
                _settle(task.outer, inner)
                return
            self._casualties.append(task)
            self._recovering = True
            if self._recovery is not None:
                return  # it waits for the rest of the broken pool's tasks
            self._recovery = threading.Thread(target=self._recover, daemon=True,
                                              name="notebookscan-pool-recovery")
            self._recovery.start()

    def _replace_pool(self, workers: int | None = None) -> Executor:
        old, self.executor = self.executor, self.factory(workers or self.max_workers)
        old.shutdown(wait=False, cancel_futures=True)
        return self.executor

    def _recover(self) -> None:
        """After the pool broke: find which task(s) killed a worker, re-run the others."""
        try:
            while not self._recover_once():
                pass
        except Exception:  # never leave the futures hanging
            log.exception("recovering the broken process pool failed")
            with self._lock:
                tasks = [*self._casualties, *self._held]
                self._casualties.clear()
                self._held.clear()
                self._recovering = False
                self._recovery = None
            for task in tasks:
                with contextlib.suppress(Exception):
                    task.outer.set_exception(BrokenProcessPool(
                        "the process pool broke and could not be rebuilt"))

    def _recover_once(self) -> bool:
        """One round of recovery; False when more tasks failed meanwhile (go again)."""
        # the broken pool fails all its pending futures in one go; wait for the last
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if not self._live:
                    break
            time.sleep(0.01)
        with self._lock:
            suspects, self._casualties = self._casualties, []
            broken = self.executor
            self.pool_breaks += 1
        if getattr(broken, "ended", False):
            # end_worker broke it: the ended task is known, the others simply run again
            for task in suspects:
                if task.ended:
                    with contextlib.suppress(Exception):
                        task.outer.set_exception(WorkerEnded(task.ended))
            with self._lock:
                self._held.extendleft(reversed([t for t in suspects if not t.ended]))
            suspects = []
        elif len(suspects) == 1:
            # the pool ran this task alone: it is the one that killed its worker
            self._blame(suspects[0], broken)
            suspects = []
        # re-run each suspect alone in a one-worker pool: a task that breaks it is guilty
        for task in suspects:
            if self._closed:
                break
            if not task.outer.done():
                self._run_alone(task)
        with self._lock:
            if self._closed:
                self._recovery = None
                return True
            self._replace_pool()
            if self._casualties:
                return False
            self._recovering = False
            self._recovery = None  # from here on, a new break starts a new recovery
            held, self._held = self._held, collections.deque()
            for task in held:
                self._start(task)
        return True

    def _run_alone(self, task: _Task) -> None:
        pool = self.factory(1)
        try:
            with self._lock:
                inner = _submit_tracked(pool, task)
                self._alone = (task, pool)
            task.outer.add_done_callback(lambda outer: outer.cancelled() and inner.cancel())
            while not inner.done() and not self._closed:
                with contextlib.suppress(TimeoutError):
                    inner.exception(timeout=0.5)
            if not inner.done():
                return
            if not inner.cancelled() and isinstance(inner.exception(), BrokenExecutor):
                self._blame(task, pool)
            else:
                _settle(task.outer, inner)
        finally:
            with self._lock:
                self._alone = None
            pool.shutdown(wait=False, cancel_futures=True)

    def _blame(self, task: _Task, pool: Executor) -> None:
        if task.ended:  # killed on purpose by end_worker, not by its own doing
            with contextlib.suppress(Exception):
                task.outer.set_exception(WorkerEnded(task.ended))
            return
        self.workers_killed_by_tasks += 1
        with contextlib.suppress(Exception):
            task.outer.set_exception(WorkerDied(
                f"worker process died ({_how_it_died(pool)}) while running this point"))

    def is_worker_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenExecutor)

    def end_worker(self, future: Future) -> bool:
        """Kill the worker process running ``future`` (SIGKILL) and replace the pool.

        For a task stuck past its timeout where Python cannot interrupt it. The future
        fails with :class:`WorkerEnded` (a lost worker); the other tasks of the pool run
        again in a new pool, their futures untouched. Returns False when the task is not
        running (queued, done), or for pools this adapter did not create.
        """
        if self.factory is None or future.done():
            return False
        with self._lock:
            task = next((t for t in self._live.values() if t.outer is future), None)
            pool = self.executor
            if task is None and self._alone is not None and self._alone[0].outer is future:
                task, pool = self._alone  # re-run alone while recovering from a break
            pid = pool.pid_running(task.tid) if task and isinstance(pool, _TrackedPool) else None
            if task is None or pid is None:
                return False
            task.ended = (f"worker process (pid {pid}) ended by end_worker: the task did not "
                          "return in time")
            pool.ended = True
        with contextlib.suppress(ProcessLookupError):  # died meanwhile: the pool breaks too
            os.kill(pid, signal.SIGKILL)
        return True

    def cancel_pending(self) -> None:
        for future in list(self._futures):
            # the handed-out futures are plain Futures: cancel() alone leaves them CANCELLED
            # but not notified, and concurrent.futures.wait() never counts them as done
            if future.cancel():
                future.set_running_or_notify_cancel()

    def shutdown(self) -> None:
        if not self.owned:
            return
        with self._lock:
            self._closed = True
            held = list(self._held)
            self._held.clear()
        for task in held:
            task.outer.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _submit_tracked(pool: Executor, task: _Task) -> Future:
    """Submit a task to a pool, through :func:`_tracked_call` when the pool tracks tasks."""
    with FORK_LOCK:  # the first submit to a pool forks its workers
        if isinstance(pool, _TrackedPool):
            return pool.submit(_tracked_call, task.tid, task.fn, *task.args)
        return pool.submit(task.fn, *task.args)


def process_pool(max_workers: int | None = None) -> FuturesExecutor:
    """A process pool with one worker per core, shut down when the scan ends.

    Its workers exit when this process dies, and a worker killed by one task does not
    fail the other tasks (see the module docstring).
    """
    workers = max_workers or usable_cores()
    return FuturesExecutor(_new_pool(workers), owned=True, factory=_new_pool)
