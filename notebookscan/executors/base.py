"""The executor contract the scan loop relies on.

Anything that can ``submit(fn, *args)`` and return a :class:`concurrent.futures.Future`
runs a scan. Adapters bring each back-end (in-process, process pools, ipyparallel) to
this one shape, so the scan loop never asks which one it has.
"""

from __future__ import annotations

import abc
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: Held while this process forks pool workers. fork() copies a lock that another thread
#: holds in its locked state, so a worker forked while the scan loop was inside
#: HDF5/netCDF (writing a shard) would hang at its first HDF5 call. The scan loop holds
#: it around its store reads and writes; pools are rebuilt from a helper thread.
FORK_LOCK = threading.Lock()


def usable_cores() -> int:
    """Cores this process may really use: CPU affinity and a cgroup CPU quota count, not
    just the machine's cores (a container on a 64-core host may be allowed 1).

    ``NOTEBOOKSCAN_WORKERS`` in the environment overrides it.
    """
    override = os.environ.get("NOTEBOOKSCAN_WORKERS", "").strip()
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class ScanExecutor(abc.ABC):
    """Base class of the executors a :class:`~notebookscan.Scan` can run on.

    Subclasses implement :meth:`submit` and set :attr:`max_workers`. The scan keeps
    about two chunks per worker in flight, so ``max_workers`` should be the number of
    tasks that really run at once.
    """

    #: How many tasks run at once (engines, processes, 1 for serial).
    max_workers: int = 1
    #: True when the function is passed as cloudpickle bytes (workers in other processes).
    needs_pickled_function: bool = True
    #: True when ``submit`` runs the task before it returns (nothing runs in the
    #: background while the scan loop writes the store).
    runs_tasks_in_submit: bool = False
    #: A short human-readable description used in progress messages and provenance.
    description: str = "executor"
    #: True when the workers see this machine's files (same host, or a shared file
    #: system): workers may then write big results into the store themselves.
    shares_filesystem: bool = False

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        """Run ``fn(*args)`` somewhere and return a Future of its result."""

    def submit_to(self, worker: str, fn: Callable[..., Any], /, *args: Any) -> Future:
        """Run ``fn(*args)`` preferably on ``worker`` (a name from
        :func:`~notebookscan.run.worker.worker_name`, e.g. ``"engine 3"``).

        A hint: executors that cannot choose a worker (process pools) run it anywhere,
        and so does one whose named worker is gone. The default calls :meth:`submit`.
        """
        return self.submit(fn, *args)

    def is_worker_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` means the worker died (the chunk is re-submitted elsewhere),
        False for any other failure of a task (which stops the scan with a clear error)."""
        return False

    def check_alive(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Raise :class:`~notebookscan.errors.ExecutorError` when the back-end is gone for
        good (e.g. an ipyparallel controller that stopped answering). The scan loop calls
        it on every turn, so it must be cheap and must not wait."""

    def cancel_pending(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Best effort: drop tasks submitted but not started (used by ``stop()``)."""

    def interrupt_running(self) -> None:  # noqa: B027 - optional hook
        """Best effort: interrupt tasks that are running (used by ``stop(now=True)``)."""

    def end_worker(self, future: Future) -> bool:
        """End the worker running ``future`` and start a replacement if this executor
        manages its workers.

        For a task past its timeout that is stuck where Python cannot interrupt it
        (``ctypes``, a long numpy call). The future then fails with an error for which
        :meth:`is_worker_lost` is true (the scan loop resubmits the chunk). Returns False
        when that is impossible (serial, threads): the default.
        """
        return False

    def worker_count(self) -> int:
        """Workers available now (engines may come and go); defaults to ``max_workers``."""
        return self.max_workers

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release what this adapter created itself (never a cluster the user passed in)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}, {self.max_workers} worker(s)>"
