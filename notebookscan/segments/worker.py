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

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import ResultError, Value, normalize_result
from ..run.worker import guarded_call, load_function, worker_name
from ..store.checkpoints import StateError, decode_state, encode_state, read_files, write_files
from .protocol import Segment, SegmentContext, Segments, open_model

__all__ = ["SegmentOutcome", "SegmentTask", "recording_values", "run_segment"]

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


def run_segment(function: Callable[..., Any] | bytes, task: SegmentTask) -> SegmentOutcome:
    """Run one segment of one point and return its :class:`SegmentOutcome`.

    The model runs inside :func:`~notebookscan.run.worker.guarded_call` (timeout, every
    failure caught) as each point of a plain scan does.

    Parameters
    ----------
    function
        The model (generator function or class), or its cloudpickle bytes.
    task
        The point, the segment and the checkpoint to start from.
    """
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="notebookscan-segment-")
    try:
        out, failure = guarded_call(_segment, (load_function(function), task, workdir),
                                    task.timeout, (SegmentError, StateError, ResultError))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if failure is not None:
        return SegmentOutcome("failed", error=failure[0], traceback=failure[1],
                              started=started, finished=time.time(), host=_HOST,
                              worker=worker_name())
    out.started = started
    return out


def _segment(fn: Any, task: SegmentTask, workdir: str) -> SegmentOutcome:
    """The user's segment and what is made of it (all of it inside the guarded call)."""
    restore_dir = None
    if task.files:
        restore_dir = os.path.join(workdir, "restore")
        os.makedirs(restore_dir)
        write_files(restore_dir, task.files)
    save_dir = os.path.join(workdir, "save")
    os.makedirs(save_dir)
    state = decode_state(task.state) if task.state is not None else None
    context = SegmentContext(task.index, task.link, task.seed, task.point_seed, task.key,
                             task.duration, save_dir, restore_dir)
    plan = Segments([context], state=state, first=task.index, restore_dir=restore_dir)
    kwargs = {**task.point, "seed": task.point_seed} if task.pass_seed else task.point
    out = _one_segment(fn, task.form, kwargs, plan)
    recordings = recording_values(out.recordings, out.time)
    summary = normalize_result(dict(out.summary or {}))
    clash = sorted(set(summary) & set(recordings))
    if clash:
        raise SegmentError(f"the names {clash} are both recordings and summary values; "
                           "rename one of them")
    if out.state is None:
        raise SegmentError("the segment handed over no state; return Segment(..., state="
                           "{...}) (an empty dict when the model keeps its state in files)")
    return SegmentOutcome("done", recordings, summary, encode_state(out.state),
                          read_files(save_dir), "", "", 0.0, time.time(), _HOST, worker_name())


def _one_segment(fn: Any, form: str, kwargs: dict[str, Any], plan: Segments) -> Segment:
    iterator = open_model(fn, form, kwargs, plan)
    if not hasattr(iterator, "__next__"):
        raise SegmentError(f"the model returned a {type(iterator).__name__}, not a generator; "
                           "write it as a generator: for segment in segments: ... yield "
                           "Segment(...)")
    try:
        out = next(iterator)
    except StopIteration:
        raise SegmentError(
            f"the model stopped before segment {plan.first} (its generator returned); a "
            "segmented model runs as many segments as the scan asks for — loop over "
            "`segments` and yield one Segment per item."
        ) from None
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if plan.taken != 1:
        raise SegmentError(
            "the model yielded a Segment before taking a segment from `segments`; write "
            "`for segment in segments: ... yield Segment(...)`" if plan.taken == 0 else
            "the model took several segments from `segments` before yielding one Segment; "
            "yield exactly one Segment per segment"
        )
    if not isinstance(out, Segment):
        raise SegmentError(f"the model yielded a {type(out).__name__}; yield "
                           "Segment(recordings, state=...) once per segment")
    return out
