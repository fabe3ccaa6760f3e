"""Decimated recording inside a segment: chosen variables every n-th step, and events.

The idea of NEURON's ``batch_save``/``batch_run``: say once *what* to record, then let
the simulation loop run without returning to the scan for every step. A
:class:`Recorder` preallocates one buffer per watched variable for the whole segment,
copies the chosen elements at every n-th step (``every=``) or every ``interval``
seconds of model time, and hands the segment's recordings over as labelled arrays.

The sampling phase follows the *global* step number, so decimation runs on across
segment boundaries exactly as in one long run.

Examples
--------
>>> import numpy as np
>>> v = np.zeros(4)
>>> rec = Recorder(dt=0.1, steps=10, start_step=10, every=4)
>>> rec.watch("v", v, index=[0, 3])
>>> for _ in range(10):
...     rec.tick()           # records the state at the start of steps 12, 16 and 20
...     v += 1.0
>>> rec.recordings()["v"].values.tolist()
[[2.0, 2.0], [6.0, 6.0]]
>>> rec.recordings()["v"].time.values.round(3).tolist()
[1.2, 1.6]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ScanError

__all__ = ["Recorder"]


class Recorder:
    """Record variables at every ``every``-th step of a segment, and events as they happen.

    Parameters
    ----------
    dt
        The simulation time step (model time units, e.g. seconds).
    steps
        How many steps the segment has.
    start_step
        The global number of the segment's first step (``segment.index * steps``).
    every, interval
        Sample every ``every`` steps, or every ``interval`` of model time (a whole
        number of ``dt``). One of the two.
    time_dim
        The name of the time dimension; recorders sampling at different rates in one
        segment need different names.

    Notes
    -----
    Call :meth:`tick` once per step *before* updating the variables: the sample taken
    at global step ``s`` is the state at time ``s * dt``.
    """

    def __init__(self, dt: float, steps: int, start_step: int = 0, *, every: int | None = None,
                 interval: float | None = None, time_dim: str = "time"):
        if not dt > 0:
            raise ScanError(f"Recorder(dt={dt!r}): dt must be a positive number of time units")
        if (every is None) == (interval is None):
            raise ScanError(f"Recorder needs one of every= (steps) or interval= (time), got "
                            f"every={every!r}, interval={interval!r}")
        if interval is not None:
            every = round(interval / dt)
            if every < 1 or abs(every * dt - interval) > 1e-9 * interval:
                raise ScanError(f"Recorder(interval={interval!r}) is not a whole number of "
                                f"steps of dt={dt!r}; use a multiple of dt or every=<steps>.")
        assert every is not None
        if int(every) != every or every < 1:
            raise ScanError(f"Recorder(every={every!r}): every must be a positive int (steps)")
        if int(steps) != steps or steps < 0 or int(start_step) != start_step:
            raise ScanError(f"Recorder(steps={steps!r}, start_step={start_step!r}) must be "
                            "non-negative ints")
        self.dt = float(dt)
        self.every = int(every)
        self.steps = int(steps)
        self.start_step = int(start_step)
        self.time_dim = time_dim
        first = -(-self.start_step // self.every) * self.every
        self._sample_steps = np.arange(first, self.start_step + self.steps, self.every,
                                       dtype=np.int64)
        self._next = int(self._sample_steps[0]) if len(self._sample_steps) else -1
        self._step = self.start_step
        self._taken = 0
        self._watched: list[tuple[str, Any, Any, np.ndarray | None]] = []
        self._events: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def __repr__(self) -> str:
        names = ", ".join(w[0] for w in self._watched) or "nothing"
        return (f"<Recorder: {names} every {self.every} step(s), "
                f"{len(self._sample_steps)} sample(s) in steps {self.start_step}.."
                f"{self.start_step + self.steps - 1}>")

    @property
    def samples(self) -> int:
        """How many samples this recorder takes in its segment."""
        return len(self._sample_steps)

    def watch(self, name: str, source: np.ndarray | Callable[[], Any],
              index: Sequence[int] | np.ndarray | slice | None = None) -> None:
        """Record ``source[index]`` at every sample.

        ``source`` is an array updated in place (``v += dv``, ``v[:] = ...``) or a
        callable returning the current value (for variables that are rebound).
        """
        if self._taken:
            raise ScanError(f"watch({name!r}) after the first sample; watch everything first")
        if any(w[0] == name for w in self._watched) or name in self._events:
            raise ScanError(f"the recorder already records {name!r}; use another name")
        if not callable(source) and not isinstance(source, np.ndarray):
            raise ScanError(f"watch({name!r}, ...) needs a numpy array updated in place or a "
                            f"callable, got {type(source).__name__}")
        self._watched.append((name, source, index, None))

    def tick(self) -> None:
        """Advance one step; take a sample when this step is one to record."""
        step = self._step
        self._step = step + 1
        if step == self._next:
            self._sample()

    def advance(self, steps: int) -> None:
        """Skip ``steps`` steps without sampling (for steps the model knows are unrecorded)."""
        target = self._step + int(steps)
        if self._next != -1 and self._next < target:
            raise ScanError(f"advance({steps}) would skip the sample at step {self._next}")
        self._step = target

    def _sample(self) -> None:
        row = self._taken
        for i, (name, source, index, buffer) in enumerate(self._watched):
            value = source() if callable(source) else source
            value = np.asarray(value)
            if index is not None:
                value = value[index]
            if buffer is None:
                buffer = np.empty((len(self._sample_steps), *value.shape), dtype=value.dtype)
                self._watched[i] = (name, source, index, buffer)
            buffer[row] = value
        self._taken = row + 1
        self._next = (int(self._sample_steps[self._taken])
                      if self._taken < len(self._sample_steps) else -1)

    def event(self, name: str, time: Any, index: Any) -> None:
        """Record events (e.g. spikes): their times and the index of what emitted them."""
        times, ids = self._events.setdefault(name, ([], []))
        times.append(np.atleast_1d(np.asarray(time, dtype=np.float64)))
        index = np.atleast_1d(np.asarray(index))
        ids.append(index.astype(np.int64) if index.size == 0 else index)

    def recordings(self) -> dict[str, Any]:
        """The segment's recordings as :class:`xarray.DataArray` objects.

        Watched variables have dims ``(time_dim, <name>_index)`` (or just ``time_dim``
        for scalars) with the time coordinate; events ``name`` give ``<name>_time`` and
        ``<name>_index`` along a dim ``name``.
        """
        import xarray as xr

        taken = self._taken
        time = self._sample_steps[:taken] * self.dt
        out: dict[str, Any] = {}
        for name, _source, _index, buffer in self._watched:
            data = buffer[:taken] if buffer is not None else np.empty((0,))
            dims = (self.time_dim, *(f"{name}_index" if data.ndim == 2 else f"{name}_dim_{i}"
                                     for i in range(1, data.ndim)))
            out[name] = xr.DataArray(data, dims=dims, coords={self.time_dim: time})
        for name, (times, ids) in self._events.items():
            t = np.concatenate(times) if times else np.empty(0)
            i = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
            out[f"{name}_time"] = xr.DataArray(t, dims=(name,))
            out[f"{name}_index"] = xr.DataArray(i, dims=(name,))
        return out
