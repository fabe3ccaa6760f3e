"""What runs on a worker: call the user's function on a chunk of points.

This module is imported on engines and pool processes, so it stays small and imports
nothing heavy. User code runs only inside :func:`guarded_call` (here for each point of
a chunk, in :mod:`notebookscan.segments.worker` for each segment): nothing it raises
escapes, a timeout holds, and every point comes back as a :class:`PointResult`, done or
failed with its traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sys
import threading
import time
import traceback as tb
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..results import ResultError, Value, attrs_conflict, joined_attrs, normalize_result

__all__ = ["ChunkResult", "PointColumns", "PointResult", "PointTimeout", "guarded_call",
           "run_chunk"]

_HOST = socket.gethostname()
_FUNCTION_CACHE: dict[str, Callable[..., Any]] = {}


#: seconds between repeated timeouts once the first one was swallowed by the user's code
TIMEOUT_REPEAT = 0.1


class PointTimeout(BaseException):
    """A point ran longer than the scan's ``timeout``.

    A :class:`BaseException`, so the user's ``except Exception`` (a retry loop) does not
    swallow it; one that catches everything gets it again every :data:`TIMEOUT_REPEAT`
    seconds until the call returns, and the point is recorded as timed out anyway.
    """


@dataclass(slots=True)
class PointResult:
    """The outcome of one point (a view on one row of a :class:`ChunkResult`)."""

    status: str  # "done" or "failed"
    values: dict[str, Value]
    error: str
    traceback: str
    started: float  # epoch seconds
    finished: float
    host: str
    worker: str


class ChunkResult:
    """The outcomes of a chunk of points, column by column.

    Columns pickle far faster than one object per point, which matters when a point
    takes microseconds: plain scalar results travel as one numpy array per variable,
    errors only for the points that failed, host and worker once per chunk.
    Indexing and iteration give :class:`PointResult` views.
    """

    __slots__ = ("arrays", "attrs", "done", "failures", "finished", "host", "nbytes",
                 "scalars", "started", "worker", "written")

    def __init__(self, done: np.ndarray, started: np.ndarray, finished: np.ndarray,
                 scalars: dict[str, tuple[np.ndarray, np.ndarray]],
                 arrays: dict[str, list[Value | None]], failures: dict[int, tuple[str, str]],
                 host: str, worker: str, written: str = "", nbytes: int = 0,
                 attrs: dict[str, dict[str, str]] | None = None):
        self.done = done  # bool per point
        self.started = started
        self.finished = finished
        self.scalars = scalars  # name -> (values, present mask)
        self.arrays = arrays  # name -> per point Value or None
        self.failures = failures  # index -> (error, traceback)
        self.host = host
        self.worker = worker
        self.written = written  # name of the shard the worker wrote itself ("" if none)
        self.nbytes = nbytes  # bytes of results (whether sent back or written)
        self.attrs = attrs or {}  # result name -> its units etc. (once per chunk)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChunkResult, (self.done, self.started, self.finished, self.scalars,
                              self.arrays, self.failures, self.host, self.worker,
                              self.written, self.nbytes, self.attrs or None))

    def __len__(self) -> int:
        return len(self.done)

    def values(self, i: int) -> dict[str, Value]:
        out = {name: Value(data[i].item(), attrs=self.attrs.get(name))
               for name, (data, present) in self.scalars.items() if present[i]}
        out.update({name: v[i] for name, v in self.arrays.items() if v[i] is not None})
        return out

    def __getitem__(self, i: int) -> PointResult:
        error, trace = self.failures.get(i, ("", ""))
        return PointResult("done" if self.done[i] else "failed", self.values(i), error, trace,
                           float(self.started[i]), float(self.finished[i]), self.host,
                           self.worker)

    def __iter__(self) -> Iterator[PointResult]:
        return (self[i] for i in range(len(self)))

    def fail(self, i: int, error: str) -> None:
        """Turn point ``i`` into a failure (e.g. its results clash with earlier points')."""
        self.done[i] = False
        self.failures[i] = (error, "")
        for _, present in self.scalars.values():
            present[i] = False
        for values in self.arrays.values():
            values[i] = None

    def forget(self) -> None:
        """Drop the per-point data once it is stored.

        An ipyparallel task's result stays in reference cycles (its futures' callbacks)
        that only a full garbage collection frees, which in a fast scan comes thousands
        of chunks later; emptied, a chunk left there costs a few hundred bytes.
        """
        empty = np.zeros(0)
        self.done, self.started, self.finished = np.zeros(0, dtype=bool), empty, empty
        self.scalars, self.arrays, self.failures = {}, {}, {}

    @classmethod
    def failed(cls, n: int, error: str, now: float) -> ChunkResult:
        """A chunk whose points all failed with the same error (e.g. its worker died)."""
        times = np.full(n, now)
        return cls(np.zeros(n, dtype=bool), times, times.copy(), {}, {},
                   dict.fromkeys(range(n), (error, "")), "", "")


def declared_attrs(outcomes: list[dict[str, Value] | None],
                   failures: dict[int, tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Each result's attributes (units, long_name) as the chunk's points declare them,
    the first declared winning; a point declaring other units than an earlier one is
    failed (added to ``failures``, its outcome set to ``None``): one result holds
    values in one unit."""
    found: dict[str, dict[str, str]] = {}
    for i, values in enumerate(outcomes):
        if not values:
            continue
        for value in values.values():  # most points declare nothing: look, allocate nothing
            if value.attrs is not None or value.coord_attrs is not None:
                break
        else:
            continue
        declared = [pair for value_name, value in values.items()
                    for pair in _attrs_of(value_name, value)]
        for name, attrs in declared:
            old = found.get(name, {})
            if attrs_conflict(old, attrs):
                failures[i] = (attrs_mismatch(name, attrs, old, "an earlier point"), "")
                outcomes[i] = None
                break
        else:
            for name, attrs in declared:
                found[name] = joined_attrs(found.get(name, {}), attrs)
    return found


def _attrs_of(name: str, value: Value) -> list[tuple[str, dict[str, str]]]:
    """The attributes ``value`` declares: its own (under ``name``) and its coordinates'
    (under the dim's name: a dim and a result never share a name)."""
    out = [] if value.attrs is None else [(name, value.attrs)]
    if value.coord_attrs:
        out.extend(value.coord_attrs.items())
    return out


def attrs_mismatch(name: str, new: dict[str, str], old: dict[str, str], holder: str) -> str:
    """The error of a point whose result ``name`` declares ``new`` where ``holder`` has
    ``old`` (see :func:`declared_attrs`)."""
    key = attrs_conflict(old, new)
    return (f"ResultError: {name!r} has {key} {new[key]!r}, but {holder} returned it "
            f"with {key} {old[key]!r}; one result holds values in one unit: convert the "
            "values, or return them under another result name.")


def _columns(outcomes: list[dict[str, Value] | None]) -> tuple[
        dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[Value | None]]]:
    """Split per-point values into stacked scalar columns and per-point arrays."""
    names = dict.fromkeys(name for values in outcomes if values for name in values)
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    arrays: dict[str, list[Value | None]] = {}
    for name in names:
        column = [values.get(name) if values else None for values in outcomes]
        kinds = {type(v.data) for v in column if v is not None}
        if len(kinds) == 1 and next(iter(kinds)) in (float, int, bool) and all(
                v is None or not v.dims for v in column):
            kind = next(iter(kinds))
            present = np.array([v is not None for v in column], dtype=bool)
            fill = {float: np.nan, int: 0, bool: False}[kind]
            data = np.array([fill if v is None else v.data for v in column],
                            dtype={float: np.float64, int: np.int64, bool: bool}[kind])
            scalars[name] = (data, present)
        else:
            arrays[name] = column
    return scalars, arrays


class PointColumns(Sequence):
    """A chunk's points as one numpy column per parameter: what travels to a worker.

    Pickles as a few arrays, not a dict per point; indexing and iteration give the
    point dicts (plain Python values) the function is called with.

    Examples
    --------
    >>> points = PointColumns({"k": np.array([1.5, 2.5]), "n": np.array([3, 4])})
    >>> list(points)
    [{'k': 1.5, 'n': 3}, {'k': 2.5, 'n': 4}]
    """

    __slots__ = ("columns",)

    def __init__(self, columns: dict[str, np.ndarray]):
        self.columns = columns

    def __reduce__(self) -> tuple[Any, ...]:
        return (PointColumns, (self.columns,))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, i):  # type: ignore[override]
        return {name: column.item(i) for name, column in self.columns.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = tuple(self.columns)
        for row in zip(*(column.tolist() for column in self.columns.values()), strict=True):
            yield dict(zip(names, row, strict=True))


class ChunkSink(Protocol):
    """Where a worker stores a chunk's results itself (:class:`~notebookscan.run.batch.ShardSink`):
    ``write`` returns the shard's name, or "" when it stored nothing."""

    min_bytes: int

    def write(self, points: Sequence[dict[str, Any]], seeds: Sequence[int],
              chunk: ChunkResult) -> str: ...


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the function called sys.exit({exc.code!r})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Alarm:
    """Whether the running guarded call may be interrupted, and whether it was."""

    __slots__ = ("armed", "fired")

    def __init__(self) -> None:
        self.armed = self.fired = False


_ALARM = _Alarm()


def _expire(signum: int, frame: Any) -> None:
    if _ALARM.armed:  # a signal handled after the call ended raises nothing
        _ALARM.fired = True
        raise PointTimeout()


@contextlib.contextmanager
def timeout_handler(use: bool) -> Iterator[None]:
    """Install the timeout's signal handler for a block of guarded calls (once, not per
    call: it costs microseconds)."""
    previous = signal.signal(signal.SIGALRM, _expire) if use else None
    try:
        yield
    finally:
        if use:
            signal.signal(signal.SIGALRM, previous)


def guarded_call(call: Callable[..., Any], args: tuple[Any, ...], timeout: float | None,
                 quiet: tuple[type[BaseException], ...] = (ResultError,)
                 ) -> tuple[Any, tuple[str, str] | None]:
    """Run user code ``call(*args)``: ``(value, None)``, or ``(None, (error, traceback))``.

    Everything the code raises is caught and described — ``SystemExit`` too — except
    ``KeyboardInterrupt``, which is how ``stop(now=True)`` interrupts a worker: it
    propagates and the task is abandoned, not recorded. Exceptions in ``quiet`` (the
    user's result was refused) come without a traceback.

    With ``timeout`` (seconds; needs this thread to be the main thread, as on engines
    and pool processes), :class:`PointTimeout` is raised in the code after ``timeout``
    seconds and again every :data:`TIMEOUT_REPEAT` s until the call ends; once it was
    raised, the call counts as timed out even if the code swallowed it and returned.
    Code stuck outside Python never sees it: the run loop ends such a worker.

    Examples
    --------
    >>> guarded_call(lambda x: 1 / x, (0,), None)[1][0]
    'ZeroDivisionError: division by zero'
    >>> guarded_call(lambda x: 1 / x, (4,), None)
    (0.25, None)
    """
    use_alarm = bool(timeout) and threading.current_thread() is threading.main_thread()
    if use_alarm and signal.getsignal(signal.SIGALRM) is not _expire:
        with timeout_handler(True):
            return guarded_call(call, args, timeout, quiet)
    alarm = _ALARM
    alarm.fired = False
    try:
        if use_alarm:
            alarm.armed = True
            signal.setitimer(signal.ITIMER_REAL, timeout, TIMEOUT_REPEAT)
        try:
            value = call(*args)
        finally:
            if use_alarm:
                alarm.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        raise  # a stop(now=True): the task is abandoned, not recorded as failed
    except BaseException as exc:  # every failure of the user's code
        if alarm.fired or isinstance(exc, PointTimeout):
            return None, (_timed_out(timeout), "")
        return None, (_describe(exc), "" if isinstance(exc, quiet) else tb.format_exc())
    if alarm.fired:
        return None, (_timed_out(timeout), "")
    return value, None


def _timed_out(timeout: float | None) -> str:
    return f"PointTimeout: timed out: ran longer than timeout={timeout} s"


def _call_point(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Value]:
    return normalize_result(fn(**kwargs))


def run_chunk(
    function: Callable[..., Any] | bytes,
    points: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    pass_seed: bool,
    timeout: float | None = None,
    hidden: frozenset[str] = frozenset(),
    sink: ChunkSink | None = None,
) -> ChunkResult:
    """Run ``function(**point)`` for each point; return the outcomes as a :class:`ChunkResult`.

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
    hidden
        Parameters kept with the point but not passed to the function (``trial``).
    sink
        When given and the chunk's results reach ``sink.min_bytes``, the worker writes
        them into the store and returns only the bookkeeping.

    Examples
    --------
    >>> out = run_chunk(lambda x: 1 / x, [{"x": 2}, {"x": 0}], [1, 2], False)
    >>> [r.status for r in out], out[1].error
    (['done', 'failed'], 'ZeroDivisionError: division by zero')
    """
    fn = load_function(function)
    n = len(points)
    if isinstance(seeds, np.ndarray):
        seeds = seeds.tolist()  # the function gets Python ints, as in a serial call
    done = np.zeros(n, dtype=bool)
    started = np.zeros(n)
    finished = np.zeros(n)
    outcomes: list[dict[str, Value] | None] = [None] * n
    failures: dict[int, tuple[str, str]] = {}
    clock = time.time
    use_alarm = bool(timeout) and threading.current_thread() is threading.main_thread()
    with timeout_handler(use_alarm):
        for i, (point, seed) in enumerate(zip(points, seeds, strict=True)):
            kwargs = {k: v for k, v in point.items() if k not in hidden} if hidden else point
            if pass_seed:
                kwargs = {**kwargs, "seed": seed}
            started[i] = clock()
            outcomes[i], failure = guarded_call(_call_point, (fn, kwargs), timeout)
            if failure is None:
                done[i] = True
            else:
                failures[i] = failure
            finished[i] = clock()
    attrs = declared_attrs(outcomes, failures)
    for i in failures:
        done[i] = False
    scalars, arrays = _columns(outcomes)
    nbytes = sum(data.nbytes for data, _ in scalars.values()) + sum(
        np.asarray(v.data).nbytes for values in arrays.values() for v in values if v is not None)
    chunk = ChunkResult(done, started, finished, scalars, arrays, failures, _HOST,
                        worker_name(), nbytes=nbytes, attrs=attrs)
    if sink is not None and nbytes >= sink.min_bytes:
        chunk.written = sink.write(points, seeds, chunk)
        if chunk.written:  # else the client stores (or refuses) the results itself
            chunk.scalars, chunk.arrays = {}, {}
    return chunk
