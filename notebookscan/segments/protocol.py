"""How a segmented simulation talks to the scan: segments in, recordings and state out.

A *segmented* model runs a long simulation one segment at a time. After each segment it
hands over

* the segment's **recordings** (arrays with a time-like first dimension; the store
  concatenates the segments along it),
* the **state** needed to continue (arrays, scalars and nested dicts of them; kept as
  NetCDF, never pickled), and optionally
* **files** its simulator wrote into ``segment.save_dir`` (e.g. Brian2's
  ``Network.store(filename=...)``, which also holds the queue of delayed spikes, or
  NEURON's ``SaveState``). The store keeps them as opaque bytes and puts them into
  ``segment.restore_dir`` for the next segment.

Two ways to write one:

A generator function taking ``segments``::

    def model(g: float, seed: int, segments: Segments):
        net = build(g, seed) if segments.state is None else restore(segments.state)
        for segment in segments:              # one SegmentContext per segment
            recordings = net.run(segment.duration, rng=segment.rng())
            yield Segment(recordings, state=net.state())

A class built from the point's parameters, with ``init()`` and ``advance()``::

    class Model:
        def __init__(self, g: float, seed: int): ...
        def init(self) -> dict: ...                                    # the initial state
        def advance(self, state: dict, segment: SegmentContext) -> Segment: ...

The scan runs **one segment per task**, and checkpoints the state and files after each.
The worker that ran a point's segment keeps its model alive (the suspended generator,
or the class instance) and gets the point's next segment, which then continues from
memory; a point whose worker changed or died — or a resumed run — opens the model from
the checkpoint instead (``segments.state``, ``segments.restore_dir``). Only ``state``
and files survive that path, so a model must put everything it needs into them (then
both paths give identical results); :func:`check_resumable` finds what a model forgot.
Nothing new is needed to write a model: both forms are kept alive as they are.

Examples
--------
>>> import numpy as np
>>> def counter(rate: float, segments: Segments):
...     total = 0.0 if segments.state is None else float(segments.state["total"])
...     for segment in segments:
...         steps = total + rate * np.arange(1, 4)
...         total = float(steps[-1])
...         yield Segment({"x": steps}, state={"total": total},
...                       time=segment.index * 3 + np.arange(3))
>>> [s.recordings["x"].tolist() for s in iterate(counter, {"rate": 2.0}, segments=2)]
[[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ScanError
from ..store.schema import SEGMENT_RESERVED_PARAMETERS

__all__ = [
    "INJECTED",
    "RESERVED_PARAMETERS",
    "Segment",
    "SegmentContext",
    "Segments",
    "call_kwargs",
    "is_segmented_model",
    "iterate",
    "model_form",
    "model_target",
    "segment_seed",
]

#: Parameter names a segmented scan uses itself (a space cannot set them).
RESERVED_PARAMETERS = SEGMENT_RESERVED_PARAMETERS
#: Arguments the scan passes to a generator model besides the point's parameters.
INJECTED = ("segments",)


def segment_seed(point_seed: int, index: int, link: int = 0) -> int:
    """The 32-bit seed of one segment, derived from the point's seed and the segment index.

    The same point, link and index always give the same seed, on any machine, so a
    resumed segment draws the same random numbers as the one that was interrupted.

    Examples
    --------
    >>> segment_seed(12345, 0) == segment_seed(12345, 0)
    True
    >>> len({segment_seed(12345, i) for i in range(100)})
    100
    """
    text = f"segment:{int(point_seed)}:{int(link)}:{int(index)}"
    digest = hashlib.blake2b(text.encode("ascii"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@dataclass
class Segment:
    """What a model hands over after one segment.

    Parameters
    ----------
    recordings
        Name -> :class:`xarray.DataArray` (its first dimension is the one segments are
        concatenated along, e.g. ``time`` or ``spike``) or numpy array (first axis
        along ``time``, which then must be given).
    state
        What the next segment needs to continue: a dict of numpy arrays, numbers,
        strings, bools and nested dicts of these. ``{}`` when a model keeps all its
        state in files.
    time
        The time coordinate of numpy-array recordings (1-D, one value per row).
    summary
        Per-segment scalars or small arrays (a rate, a mean weight). Every segment's
        summary is kept with its recordings; the last one also goes into the point's
        row of ``scan.results()``.

    Examples
    --------
    >>> s = Segment({"v": np.zeros((3, 2))}, state={"v": np.zeros(2)}, time=[0.0, 0.1, 0.2])
    >>> s.recordings["v"].shape
    (3, 2)
    """

    recordings: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] | None = None
    time: Any = None
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SegmentContext:
    """Everything a model needs to know about the segment it is about to run.

    Attributes
    ----------
    index
        The segment's index within its link (0, 1, ...).
    link
        Which run of a chain this is (0 for a plain scan; see ``SegmentedScan.chain``).
    seed
        This segment's seed (:func:`segment_seed` of the point's seed, link and index).
    point_seed
        The point's seed (for what is drawn once per point, e.g. connectivity).
    key
        The point's key.
    duration, t_start, t_stop
        The segment's model-time span when the scan has ``segment_duration``; else None.
    save_dir
        An empty directory: files written here are kept with the checkpoint.
    restore_dir
        The files the previous segment left in its ``save_dir`` (None when there are none).
    """

    index: int
    link: int = 0
    seed: int = 0
    point_seed: int = 0
    key: str = ""
    duration: float | None = None
    save_dir: str = ""
    restore_dir: str | None = None

    @property
    def t_start(self) -> float | None:
        """Simulated time at which this segment starts (``None`` without a duration)."""
        return None if self.duration is None else self.index * self.duration

    @property
    def t_stop(self) -> float | None:
        """Simulated time at which this segment ends (``None`` without a duration)."""
        return None if self.duration is None else (self.index + 1) * self.duration

    def rng(self) -> np.random.Generator:
        """A numpy Generator seeded with this segment's seed."""
        return np.random.default_rng(self.seed)

    def recorder(self, dt: float, *, every: int | None = None,
                 interval: float | None = None, time_dim: str = "time") -> Any:
        """A :class:`~notebookscan.segments.Recorder` covering this segment.

        Needs the scan's ``segment_duration`` (the recorder must know how many steps
        the segment has and where its time axis starts).
        """
        from .recording import Recorder

        if self.duration is None:
            raise ScanError(
                "segment.recorder() needs the segment's duration, but the scan has no "
                "segment_duration; pass SegmentedScan(..., segment_duration=...) or build "
                "Recorder(dt=..., steps=..., start_step=...) yourself."
            )
        steps = _whole_steps(self.duration, dt, "segment_duration")
        return Recorder(dt=dt, steps=steps, start_step=self.index * steps, every=every,
                        interval=interval, time_dim=time_dim)


def _whole_steps(duration: float, dt: float, what: str) -> int:
    steps = round(duration / dt)
    if steps < 1 or abs(steps * dt - duration) > 1e-9 * max(abs(duration), dt):
        raise ScanError(f"{what}={duration!r} is not a whole number of time steps dt={dt!r}; "
                        "choose a duration that is a multiple of dt.")
    return int(steps)


class Segments:
    """The segments a generator model is asked to run, and where to start from.

    Iterate over it to get one :class:`SegmentContext` per segment. The scan gives each
    task exactly one segment; :func:`iterate` gives all of them in one go.

    Attributes
    ----------
    state
        The state to continue from (None for a fresh start).
    restore_dir
        The directory holding the files handed over with ``state`` (or None).
    first
        The index of the first segment to run.
    """

    def __init__(self, contexts: Iterator[SegmentContext] | list[SegmentContext], *,
                 state: Mapping[str, Any] | None, first: int, restore_dir: str | None):
        self._contexts = iter(contexts)
        self.state = state
        self.first = first
        self.restore_dir = restore_dir
        self.taken = 0

    def __iter__(self) -> Iterator[SegmentContext]:
        for context in self._contexts:
            self.taken += 1
            yield context

    def __repr__(self) -> str:
        start = "fresh" if self.state is None else "from a checkpoint"
        return f"<Segments starting at {self.first} ({start})>"


# ---------------------------------------------------------------------- model forms


def model_target(function: Any) -> Any:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.unwrap(function)


def model_form(function: Any) -> str:
    """``"generator"`` or ``"class"``; raises :class:`ScanError` for anything else.

    Examples
    --------
    >>> def g(x, segments):
    ...     yield Segment()
    >>> model_form(g)
    'generator'
    >>> model_form(len)
    Traceback (most recent call last):
    ...
    notebookscan.errors.ScanError: a segmented scan needs a generator function ...
    """
    target = model_target(function)
    if inspect.isclass(target):
        missing = [m for m in ("init", "advance") if not callable(getattr(target, m, None))]
        if missing:
            raise ScanError(
                f"the class {target.__name__} has no {' or '.join(missing)}() method; a "
                "segmented model class needs init(self) -> state and advance(self, state, "
                "segment) -> Segment."
            )
        return "class"
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and "segments" in params and callable(function):
        return "generator"  # a generator function, or a function returning a generator
    if inspect.isgeneratorfunction(target):
        takes_kwargs = params is None or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not takes_kwargs:
            name = getattr(target, "__name__", repr(target))
            raise ScanError(
                f"the generator function {name}() takes no 'segments' argument; add one "
                f"(def {name}(..., segments): ... for segment in segments: ... yield "
                "Segment(...)) — it says where to start and which segments to run."
            )
        return "generator"
    name = getattr(target, "__name__", type(target).__name__)
    raise ScanError(
        f"a segmented scan needs a generator function (def model(..., segments): ... yield "
        f"Segment(...)) or a class with init() and advance(state, segment); got {name!r} "
        f"({type(target).__name__}). For functions that return once, use ns.Scan."
    )


def is_segmented_model(function: Any) -> bool:
    """True for what :class:`SegmentedScan` runs: a generator function, a function taking
    ``segments``, or a class with ``init`` and ``advance`` (for ``ns.Scan`` to dispatch).

    Examples
    --------
    >>> def g(x, segments):
    ...     yield Segment()
    >>> is_segmented_model(g), is_segmented_model(lambda x: x)
    (True, False)
    """
    try:
        model_form(function)
    except ScanError:
        target = model_target(function)  # near misses go to SegmentedScan, which says what to fix
        return inspect.isgeneratorfunction(target) or (
            inspect.isclass(target) and callable(getattr(target, "advance", None)))
    return True


def signature_for_space(function: Any) -> Callable[..., Any]:
    """A stand-in with the parameters the *space* must fit (without ``segments``).

    ``Space.validate`` checks it exactly as it checks a plain scan's function.
    """
    form = model_form(function)
    signature = inspect.signature(function)
    if form == "generator":
        params = [p for name, p in signature.parameters.items() if name not in INJECTED]
        signature = signature.replace(parameters=params)

    def stand_in(*args: Any, **kwargs: Any) -> None:
        return None

    stand_in.__signature__ = signature  # type: ignore[attr-defined]
    stand_in.__name__ = getattr(model_target(function), "__name__", "model")
    return stand_in


def open_model(function: Any, form: str, kwargs: dict[str, Any], segments: Segments
               ) -> Iterator[Segment]:
    """The model's segments as an iterator, whatever its form."""
    if form == "generator":
        return function(**kwargs, segments=segments)
    return _class_segments(function, kwargs, segments)


def _class_segments(cls: Any, kwargs: dict[str, Any], segments: Segments
                    ) -> Iterator[Segment]:
    model = cls(**kwargs)
    state = segments.state
    if state is None:
        state = model.init()
    for context in segments:
        out = model.advance(state, context)
        yield out
        state = out.state if isinstance(out, Segment) else None


# ---------------------------------------------------------------------- local runs


def iterate(function: Any, point: Mapping[str, Any], *, segments: int, seed: int | None = None,
            segment_duration: float | None = None, link: int = 0,
            state: Mapping[str, Any] | None = None) -> Iterator[Segment]:
    """Run one point straight through in this process, without a store (for notebooks).

    The model keeps running between segments (nothing is checkpointed), as it would in
    a plain loop; files written to ``save_dir`` are handed to the next segment.

    Parameters
    ----------
    function
        A generator function taking ``segments`` or a class with ``init``/``advance``.
    point
        The point's parameters.
    segments
        How many segments to run.
    seed
        The point's seed (default: the scan's seed of this point).
    segment_duration
        Model time per segment (sets ``t_start``/``t_stop``/``duration`` of each segment).
    link, state
        Run a chained link from a given state.

    Yields
    ------
    Segment
        What the model handed over after each segment. Its arrays may be the model's
        own, changed by the next segment: copy what you keep.
    """
    from ..keys import point_key, point_seed

    form = model_form(function)
    key = point_key(point)
    seed = point_seed(key) if seed is None else seed
    kwargs = call_kwargs(function, point, seed)
    workdir = tempfile.mkdtemp(prefix="notebookscan-segments-")
    try:
        previous: list[str | None] = [None]

        def contexts() -> Iterator[SegmentContext]:
            for index in range(segments):
                save = os.path.join(workdir, f"save-{index}")
                os.makedirs(save)
                yield SegmentContext(index, link, segment_seed(seed, index, link), seed, key,
                                     segment_duration, save, previous[0])
                previous[0] = save

        plan = Segments(contexts(), state=state, first=0, restore_dir=None)
        for produced, out in enumerate(open_model(function, form, kwargs, plan), start=1):
            yield out
            if produced >= segments:
                break
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def call_kwargs(function: Any, point: Mapping[str, Any], seed: int) -> dict[str, Any]:
    kwargs = dict(point)
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        params = {}
    takes = "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if takes and "seed" not in kwargs:
        kwargs["seed"] = seed
    return kwargs
