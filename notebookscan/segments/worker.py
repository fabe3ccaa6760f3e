"""What runs on a worker: one segment of one point.

A task carries the point, the segment's index and seed, and the state (NetCDF bytes)
and files of the previous checkpoint. The worker decodes the state, puts the files
into a fresh ``restore_dir``, runs the model for exactly one segment, encodes the new
state, collects what the model wrote into ``save_dir``, and sends everything back. It
never touches the store: the client stays its single writer.

Nothing the model raises escapes :func:`run_segment` (it runs inside
:func:`notebookscan.run.worker.guarded_call`); a failure comes back as a ``failed``
:class:`SegmentOutcome` with its traceback.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..results import ResultError, Value, normalize_result
from ..run.worker import guarded_call, load_function, worker_name
from ..store.checkpoints import StateError, decode_state, encode_state, read_files, write_files
from .protocol import Segment, SegmentContext, Segments, open_model, segment_seed

__all__ = ["BATCH_BYTES", "LIVE_MODELS", "SegmentOutcome", "SegmentTask", "drop_live_models",
           "live_models", "recording_values", "run_segment", "run_segments"]

_HOST = socket.gethostname()


@dataclass
class SegmentTask:
    """One segment of one point, as sent to a worker."""

    point: dict[str, Any]  # keyword arguments (hidden parameters already removed)
    pass_seed: bool
    point_seed: int
    key: str
    link: int
    index: int
    seed: int
    state: bytes | None
    files: Mapping[str, bytes]
    duration: float | None
    form: str  # "generator" or "class"
    timeout: float | None
    keep: bool = False  # another segment of this link follows: keep the model alive
    # run_segments: up to `count` consecutive segments (index, index + 1, ...; the link
    # ends after the last), going on to the next only while the task has run < `budget` s
    count: int = 1
    budget: float = 0.0


@dataclass
class SegmentOutcome:
    """What comes back from a worker after one segment."""

    status: str  # "done" or "failed"
    recordings: dict[str, Value] = field(default_factory=dict)
    summary: dict[str, Value] = field(default_factory=dict)
    state: bytes = b""
    files: dict[str, bytes] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""
    started: float = 0.0
    finished: float = 0.0
    host: str = ""
    worker: str = ""

    def forget(self) -> None:
        """Drop the data once the scan holds it elsewhere (see `ChunkResult.forget`:
        ipyparallel may keep this object alive until a full garbage collection)."""
        self.recordings, self.summary, self.state, self.files = {}, {}, b"", {}

    @property
    def nbytes(self) -> int:
        """Approximate size in memory (recordings, state and files)."""
        size = len(self.state) + sum(len(b) for b in self.files.values())
        for value in (*self.recordings.values(), *self.summary.values()):
            size += getattr(value.data, "nbytes", 8)
        return size


class SegmentError(ResultError, ValueError):
    """A model handed over something a segment cannot hold (recorded as a failure)."""


def recording_values(recordings: Mapping[str, Any], time_coord: Any) -> dict[str, Value]:
    """Normalise a segment's recordings: each gets dims (first one concatenated) and coords.

    Examples
    --------
    >>> v = recording_values({"v": np.zeros((3, 2))}, [0.0, 0.1, 0.2])["v"]
    >>> v.dims, v.coords["time"].tolist()
    (('time', 'v_index'), [0.0, 0.1, 0.2])
    """
    if not isinstance(recordings, Mapping):
        raise SegmentError(f"Segment.recordings must be a dict of arrays, got "
                           f"{type(recordings).__name__}")
    time = None if time_coord is None else np.asarray(time_coord)
    if time is not None and time.ndim != 1:
        raise SegmentError(f"Segment.time must be 1-D, got shape {time.shape}")
    out: dict[str, Value] = {}
    for name, raw in recordings.items():
        value = normalize_result({name: raw})[name]
        data = value.data
        if not value.dims or np.ndim(data) == 0:
            raise SegmentError(
                f"recording {name!r} is a single value; recordings need a first dimension "
                "along which segments are joined (e.g. time). Put per-segment numbers into "
                "Segment(summary=...) instead."
            )
        if type(raw).__module__.split(".")[0] != "xarray":
            if time is None:
                raise SegmentError(
                    f"recording {name!r} is a plain array, so its time axis needs "
                    "coordinates: pass Segment(..., time=t) with one value per row, or "
                    "return an xarray.DataArray with named dims (a Recorder does that)."
                )
            if data.shape[0] != len(time):
                raise SegmentError(f"recording {name!r} has {data.shape[0]} rows but "
                                   f"Segment.time has {len(time)} values; give one time per row")
            rest = ((f"{name}_index",) if data.ndim == 2
                    else tuple(f"{name}_dim_{i}" for i in range(1, data.ndim)))
            value = Value(data, ("time", *rest), {"time": time})
        out[name] = value
    _check_dims(out)
    return out


def _check_dims(values: Mapping[str, Value]) -> None:
    sizes: dict[str, tuple[int, str]] = {}
    coords: dict[str, np.ndarray] = {}
    for name, value in values.items():
        for dim, size in zip(value.dims, np.shape(value.data), strict=False):
            known = sizes.setdefault(dim, (size, name))
            if known[0] != size:
                raise SegmentError(
                    f"dim {dim!r} has size {size} in {name!r} but {known[0]} in {known[1]!r}; "
                    "recordings sampled differently need different dim names (e.g. "
                    "Recorder(time_dim='time_slow'))."
                )
            if dim in value.coords:
                other = coords.setdefault(dim, value.coords[dim])
                if not np.array_equal(other, value.coords[dim]):
                    raise SegmentError(f"dim {dim!r} has different coordinates in {name!r} and "
                                       "another recording; use different dim names")


#: How many points' live models one worker keeps. One: a live model continues only if
#: its process ran nothing else since its last segment (simulators keep process-global
#: state — numpy's and Brian2's global random generator, NEURON's whole model — that
#: another point's segment would have changed), so a second one could never continue.
LIVE_MODELS = 1
#: Segments this process has run: a live model is valid while it is the same as after
#: its own last segment.
_RUN_COUNT = [0]


@dataclass
class _Live:
    """A point's model kept running in this worker after its latest segment.

    It runs the point's next segment only when nothing else ran in this process since
    (``ran``), the task starts from exactly the checkpoint it handed over (``state``,
    ``files``) and the model and point are the same (``identity``); else it is closed
    and the model opened from the task's checkpoint.
    """

    iterator: Any  # the model's generator, suspended after its latest yield
    plan: Segments
    feed: collections.deque[SegmentContext]
    identity: tuple[Any, ...]  # model, key, link, seeds, duration: what must match
    index: int  # the next segment it can run
    state: bytes  # the checkpoint it handed over last: a task must start from exactly it
    files: dict[str, bytes]
    workdir: str  # holds its restore_dir: the files of the checkpoint it continues from
    restore_dir: str | None
    ran: int = -1  # _RUN_COUNT after its last segment

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a model failing to close only loses memory
            self.iterator.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


#: (key, link) -> the live model of that point in this worker process.
_LIVE: collections.OrderedDict[tuple[str, int], _Live] = collections.OrderedDict()


class _Feed:
    """The contexts a live model takes from ``segments``: one is put in before each
    resumption, so its ``for segment in segments`` loop never ends on its own."""

    def __init__(self, queue: collections.deque[SegmentContext]):
        self.queue = queue

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> SegmentContext:
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()


def live_models() -> list[tuple[str, int, int]]:
    """(key, link, next segment) of the models this worker keeps alive (for tests)."""
    return [(key, link, live.index) for (key, link), live in _LIVE.items()]


def drop_live_models() -> None:
    """Close every model this worker keeps alive."""
    while _LIVE:
        _LIVE.popitem(last=False)[1].close()


def run_segment(function: Callable[..., Any] | bytes, task: SegmentTask) -> SegmentOutcome:
    """Run one segment of one point and return its :class:`SegmentOutcome`.

    The model runs inside :func:`~notebookscan.run.worker.guarded_call` (timeout, every
    failure caught) as each point of a plain scan does.

    When this worker ran the point's previous segment and still holds its model, suspended
    after the segment that produced exactly the checkpoint the task starts from, the model
    continues from memory; otherwise it is opened from the task's checkpoint. Either way
    the new state is encoded and sent back, so the checkpoint is written as always.

    Parameters
    ----------
    function
        The model (generator function or class), or its cloudpickle bytes.
    task
        The point, the segment and the checkpoint to start from.
    """
    started = time.time()
    fn = load_function(function)
    if isinstance(function, bytes):
        _warm_up()
    out, failure = guarded_call(_segment, (fn, task), task.timeout,
                                (SegmentError, StateError, ResultError))
    if failure is not None:
        _forget((task.key, task.link))  # a model that failed mid-segment cannot go on
        return SegmentOutcome("failed", error=failure[0], traceback=failure[1],
                              started=started, finished=time.time(), host=_HOST,
                              worker=worker_name())
    out.started = started
    return out


#: A task running segments back to back returns once its outcomes hold this many bytes
#: (recordings, states, files), so that a worker never holds much more than one segment's.
BATCH_BYTES = 64 * 2**20


def run_segments(function: Callable[..., Any] | bytes,
                 task: SegmentTask) -> list[SegmentOutcome]:
    """Run a point's next segments back to back, each exactly as :func:`run_segment` does.

    The first is ``task``; each further one (up to ``task.count`` in all) starts from the
    state and files the previous one handed back, so it continues the model this worker
    holds alive, and produces its own outcome (state, files: its checkpoint). It goes on
    only while the previous segment was done, the task has run less than
    ``task.budget`` seconds and its outcomes hold less than :data:`BATCH_BYTES`: the
    worker then skips the round trip through the client between segments, and every
    segment still comes back with its own checkpoint, in order.

    Parameters
    ----------
    function
        The model (generator function or class), or its cloudpickle bytes.
    task
        The point, its first segment and the checkpoint to start from.
    """
    started = time.monotonic()
    end = task.index + task.count
    outcomes = [run_segment(function, task)]
    held = outcomes[0].nbytes
    while (outcomes[-1].status == "done" and task.index + len(outcomes) < end
           and time.monotonic() - started < task.budget and held < BATCH_BYTES):
        index, last = task.index + len(outcomes), outcomes[-1]
        step = replace(task, index=index, seed=segment_seed(task.point_seed, index, task.link),
                       state=last.state, files=last.files, keep=index + 1 < end, count=1)
        outcomes.append(run_segment(function, step))
        held += outcomes[-1].nbytes
    return outcomes


def _warm_up() -> None:
    """Once per worker process, after the model's module is loaded (its imports done):
    move what is alive into the permanent generation of the garbage collector
    (:func:`gc.freeze`), so that full collections — Brian2 runs one at every
    ``net.run`` — no longer walk every imported library (~0.1 s a collection in a worker
    with xarray and Brian2 loaded). Not in the client's own process (serial executor):
    what a user holds there must stay collectable.

    Only the young generations are collected first (well under 1 ms), not all of them:
    a full collection walks every imported library once more (0.08-0.26 s with Brian2
    loaded), to find the few cyclic garbage objects the imports left (about 100, a few
    kB), which the freeze now keeps for the worker's lifetime instead. Everything the
    model creates afterwards is collected as usual."""
    if not _FROZEN:
        gc.collect(1)
        gc.freeze()
        _FROZEN.append(True)


_FROZEN: list[bool] = []


def _forget(slot: tuple[str, int]) -> None:
    live = _LIVE.pop(slot, None)
    if live is not None:
        live.close()


def _identity(fn: Any, task: SegmentTask) -> tuple[Any, ...]:
    return (id(fn), task.form, task.key, task.link, task.point_seed, task.pass_seed,
            task.duration)


def _take_live(fn: Any, task: SegmentTask) -> _Live | None:
    """The point's live model when it can run exactly this task, else None (and closed)."""
    slot = (task.key, task.link)
    live = _LIVE.pop(slot, None)
    if live is None:
        return None
    if (live.ran == _RUN_COUNT[0] and live.identity == _identity(fn, task)
            and live.index == task.index
            and task.state is not None and live.state == task.state
            and live.files == dict(task.files)):
        return live
    live.close()  # another run, an older checkpoint, or another model: start over
    return None


def _open_live(fn: Any, task: SegmentTask) -> _Live:
    """Open the model from the task's checkpoint (as after a crash)."""
    workdir = tempfile.mkdtemp(prefix="notebookscan-live-")
    restore_dir = None
    if task.files:
        restore_dir = os.path.join(workdir, "restore")
        os.makedirs(restore_dir)
        write_files(restore_dir, task.files)
    state = decode_state(task.state) if task.state is not None else None
    feed: collections.deque[SegmentContext] = collections.deque()
    plan = Segments(_Feed(feed), state=state, first=task.index, restore_dir=restore_dir)
    kwargs = {**task.point, "seed": task.point_seed} if task.pass_seed else task.point
    try:
        iterator = open_model(fn, task.form, kwargs, plan)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return _Live(iterator, plan, feed, _identity(fn, task), task.index, b"", {}, workdir,
                 restore_dir)


def _segment(fn: Any, task: SegmentTask) -> SegmentOutcome:
    """The user's segment and what is made of it (all of it inside the guarded call)."""
    live = _take_live(fn, task) or _open_live(fn, task)
    _RUN_COUNT[0] += 1  # whatever happens next, other live models are out of date
    try:
        save_dir = os.path.join(live.workdir, f"save-{task.index}")
        os.makedirs(save_dir)
        live.feed.append(SegmentContext(task.index, task.link, task.seed, task.point_seed,
                                        task.key, task.duration, save_dir, live.restore_dir))
        out = _next_segment(live, task.index)
        recordings = recording_values(out.recordings, out.time)
        summary = normalize_result(dict(out.summary or {}))
        clash = sorted(set(summary) & set(recordings))
        if clash:
            raise SegmentError(f"the names {clash} are both recordings and summary values; "
                               "rename one of them")
        if out.state is None:
            raise SegmentError("the segment handed over no state; return Segment(..., state="
                               "{...}) (an empty dict when the model keeps its state in files)")
        state, files = encode_state(out.state), read_files(save_dir)
    except BaseException:
        live.close()
        raise
    if task.keep:
        # what it saved is the next segment's restore_dir, as the checkpoint would give it
        if live.restore_dir is not None:
            shutil.rmtree(live.restore_dir, ignore_errors=True)
        live.restore_dir = save_dir if files else None
        live.index, live.state, live.files = task.index + 1, state, files
        live.ran = _RUN_COUNT[0]
        _keep(live, (task.key, task.link))
    else:
        live.close()
    return SegmentOutcome("done", recordings, summary, state, files, "", "", 0.0, time.time(),
                          _HOST, worker_name())


def _keep(live: _Live, slot: tuple[str, int]) -> None:
    _LIVE[slot] = live
    while len(_LIVE) > LIVE_MODELS:
        _LIVE.popitem(last=False)[1].close()


def _next_segment(live: _Live, index: int) -> Segment:
    """Resume the model for one more segment and check what it yields."""
    iterator, plan = live.iterator, live.plan
    if not hasattr(iterator, "__next__"):
        raise SegmentError(f"the model returned a {type(iterator).__name__}, not a generator; "
                           "write it as a generator: for segment in segments: ... yield "
                           "Segment(...)")
    before = plan.taken
    try:
        out = next(iterator)
    except StopIteration:
        raise SegmentError(
            f"the model stopped before segment {index} (its generator returned); a "
            "segmented model runs as many segments as the scan asks for — loop over "
            "`segments` and yield one Segment per item."
        ) from None
    if plan.taken != before + 1:
        raise SegmentError(
            "the model yielded a Segment before taking a segment from `segments`; write "
            "`for segment in segments: ... yield Segment(...)`" if plan.taken == before else
            "the model took several segments from `segments` before yielding one Segment; "
            "yield exactly one Segment per segment"
        )
    if not isinstance(out, Segment):
        raise SegmentError(f"the model yielded a {type(out).__name__}; yield "
                           "Segment(recordings, state=...) once per segment")
    return out
