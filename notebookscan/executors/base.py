"""The executor contract the scan loop relies on.

Anything that can ``submit(fn, *args)`` and return a :class:`concurrent.futures.Future`
runs a scan. Adapters bring each back-end (in-process, process pools, ipyparallel) to
this one shape, so the scan loop never asks which one it has.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


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
    #: A short human-readable description used in progress messages and provenance.
    description: str = "executor"
    #: True when the workers see this machine's files (same host, or a shared file
    #: system): workers may then write big results into the store themselves.
    shares_filesystem: bool = False

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        """Run ``fn(*args)`` somewhere and return a Future of its result."""

    def is_worker_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` means the worker died (the chunk is re-submitted elsewhere),
        False for any other failure of a task (which stops the scan with a clear error)."""
        return False

    def cancel_pending(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Best effort: drop tasks submitted but not started (used by ``stop()``)."""

    def interrupt_running(self) -> None:  # noqa: B027 - optional hook
        """Best effort: interrupt tasks that are running (used by ``stop(now=True)``)."""

    def worker_count(self) -> int:
        """Workers available now (engines may come and go); defaults to ``max_workers``."""
        return self.max_workers

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release what this adapter created itself (never a cluster the user passed in)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}, {self.max_workers} worker(s)>"
