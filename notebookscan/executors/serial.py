"""Run every chunk at once, in the calling thread: for debugging and tiny scans."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .base import ScanExecutor


class SerialExecutor(ScanExecutor):
    """Runs each submitted task immediately in the calling thread.

    Exceptions in the user's function never reach here (the worker catches them), so a
    failing point is recorded and the scan goes on, exactly as on a cluster.

    Examples
    --------
    >>> SerialExecutor().submit(sum, [1, 2, 3]).result()
    6
    """

    max_workers = 1
    needs_pickled_function = False
    runs_tasks_in_submit = True
    description = "serial (in this process)"

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # the scan loop decides what a broken task means
            future.set_exception(exc)
        return future
