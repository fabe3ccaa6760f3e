"""What runs on a worker: call the user's function on a chunk of points.

This module is imported on engines and pool processes, so it stays small and imports
nothing heavy. Nothing the user's function raises escapes :func:`run_chunk`: every
point comes back as a :class:`PointResult`, done or failed with its traceback.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import threading
import time
import traceback as tb
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .results import ResultError, Value, normalize_result

__all__ = ["PointResult", "PointTimeout", "run_chunk"]

_HOST = socket.gethostname()
_FUNCTION_CACHE: dict[str, Callable[..., Any]] = {}


class PointTimeout(Exception):
    """A point ran longer than the scan's ``timeout``."""


@dataclass(slots=True)
class PointResult:
    """The outcome of one point, as sent back from the worker."""

    status: str  # "done" or "failed"
    values: dict[str, Value]
    error: str
    traceback: str
    started: float  # epoch seconds
    finished: float
    host: str
    worker: str


def worker_name() -> str:
    """How this worker appears in the store: an ipyparallel engine id when there is one."""
    engine_id = os.environ.get("NOTEBOOKSCAN_ENGINE_ID")
    if engine_id is None:
        engine = sys.modules.get("ipyparallel.engine.app")
        app = getattr(getattr(engine, "IPEngine", None), "_instance", None) if engine else None
        if app is not None and getattr(app, "id", None) is not None:
            engine_id = str(app.id)
    return f"engine {engine_id}" if engine_id is not None else f"pid {os.getpid()}"


def load_function(function: Callable[..., Any] | bytes) -> Callable[..., Any]:
    """Return the callable, unpickling cloudpickle bytes once per worker."""
    if callable(function):
        return function
    digest = hashlib.blake2b(function, digest_size=16).hexdigest()
    cached = _FUNCTION_CACHE.get(digest)
    if cached is None:
        import cloudpickle

        cached = _FUNCTION_CACHE[digest] = cloudpickle.loads(function)
    return cached


def _raise_timeout(signum: int, frame: Any) -> None:
    raise PointTimeout()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the function called sys.exit({exc.code!r})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_chunk(
    function: Callable[..., Any] | bytes,
    points: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    pass_seed: bool,
    timeout: float | None = None,
) -> list[PointResult]:
    """Run ``function(**point)`` for each point and return one :class:`PointResult` each.

    Parameters
    ----------
    function
        The user's function, or its cloudpickle bytes (unpickled once per worker).
    points, seeds
        The chunk's parameter dicts and their seeds (same length).
    pass_seed
        Whether to add ``seed=`` to each call (the function takes a ``seed`` argument
        and the space does not set it).
    timeout
        Seconds after which a point is stopped and recorded as failed. Needs the
        worker's main thread (engines and pool processes); ignored elsewhere.

    Examples
    --------
    >>> out = run_chunk(lambda x: 1 / x, [{"x": 2}, {"x": 0}], [1, 2], False)
    >>> [r.status for r in out], out[1].error
    (['done', 'failed'], 'ZeroDivisionError: division by zero')
    """
    fn = load_function(function)
    worker = worker_name()
    use_alarm = bool(timeout) and threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout) if use_alarm else None
    results = []
    clock = time.time
    try:
        for point, seed in zip(points, seeds, strict=True):
            kwargs = {**point, "seed": seed} if pass_seed else point
            started = clock()
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    returned = fn(**kwargs)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                values = normalize_result(returned)
            except KeyboardInterrupt:
                raise  # a stop(now=True): the chunk is abandoned, not recorded as failed
            except PointTimeout:
                finished = clock()
                results.append(
                    PointResult("failed", {}, f"PointTimeout: the point ran longer than "
                                f"timeout={timeout} s", "", started, finished, _HOST, worker)
                )
                continue
            except ResultError as exc:
                results.append(
                    PointResult("failed", {}, _describe(exc), "", started, clock(), _HOST, worker)
                )
                continue
            except BaseException as exc:  # every other failure of the user's code
                finished = clock()
                results.append(
                    PointResult("failed", {}, _describe(exc), tb.format_exc(), started,
                                finished, _HOST, worker)
                )
                continue
            results.append(PointResult("done", values, "", "", started, clock(), _HOST, worker))
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous_handler)
    return results
