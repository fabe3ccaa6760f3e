"""Adapt any :class:`concurrent.futures.Executor` (process pools, dask, mpi4py.futures)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from typing import Any

from .base import ScanExecutor, usable_cores


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
    """

    def __init__(self, executor: Executor, *, max_workers: int | None = None, owned: bool = False):
        self.executor = executor
        self.max_workers = int(
            max_workers or getattr(executor, "_max_workers", None) or usable_cores()
        )
        self.owned = owned
        self.description = type(executor).__name__
        # a process pool runs on this machine; other executors (dask, MPI) may not
        self.shares_filesystem = isinstance(executor, ProcessPoolExecutor)
        self._futures: set[Future] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        try:
            future = self.executor.submit(fn, *args)
        except BrokenExecutor:
            if not self.owned or not isinstance(self.executor, ProcessPoolExecutor):
                raise
            # a worker process died and broke the pool: start a fresh one and go on
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = ProcessPoolExecutor(max_workers=self.max_workers)
            future = self.executor.submit(fn, *args)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def is_worker_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenExecutor)

    def cancel_pending(self) -> None:
        for future in list(self._futures):
            future.cancel()

    def shutdown(self) -> None:
        if self.owned:
            self.executor.shutdown(wait=True, cancel_futures=True)


def process_pool(max_workers: int | None = None) -> FuturesExecutor:
    """A process pool with one worker per core, shut down when the scan ends."""
    workers = max_workers or usable_cores()
    return FuturesExecutor(ProcessPoolExecutor(max_workers=workers), owned=True)
