"""The learner source: points chosen by a python-adaptive learner, for the run loop.

It is the point source (:class:`~notebookscan.run.points.PointSource`: chunks shipped
as columns, the journal, shards, leases) over arrays that grow as the learner asks:
``next_tasks`` asks the learner for as many points as there are free slots, and every
result is told back to the learner in the order the points finished, once per loop turn
(:meth:`commit`). The run ends when the :class:`Goal` is reached.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ScanError
from ..keys import KEY_DTYPE, key_array, seed_array
from ..run.loop import Progress, Task
from ..run.points import PointSource
from ..run.worker import ChunkResult
from .learners import Plan

__all__ = ["AdaptiveProgress", "AdaptiveSource", "Goal", "check_points_per_task"]

# Automatic points per task: a task holds about AUTO_TASK_SECONDS of measured work, so a
# point that costs less than the per-task overhead (shipping, a loop turn, the journal's
# fsync: ~1–2 ms) shares it with others; a point of AUTO_TASK_SECONDS or more stays
# alone in its task (every result informs the next ask, as adaptive's own runner).
AUTO_TASK_SECONDS = 0.002
AUTO_MAX_POINTS = 32  # at most, so the learner is still asked (and told) often
# ...and at most 1/AUTO_KNOWN_SHARE of the points it knows: asking many points at once
# before results come back would spread a young learner's points almost evenly
AUTO_KNOWN_SHARE = 16


def check_points_per_task(value: Any) -> int | None:
    """``value`` as points per task: a positive integer, or ``None`` (sized by time)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScanError(f"points_per_task= must be a positive integer or None (sized "
                        f"from the measured time per point), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Goal:
    """When an adaptive scan stops: whichever of these comes first.

    Parameters
    ----------
    loss
        Stop once the learner's loss is at most this (``learner.loss()``).
    points
        Stop once the store holds this many points of the scan (done or failed, earlier
        runs included: a resumed scan runs only the rest).
    seconds
        Stop after this many seconds of this run (points in flight are finished).
    """

    loss: float | None = None
    points: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.loss is None and self.points is None and self.seconds is None:
            raise ScanError("a goal needs loss=, points= or seconds= (or several); "
                            "e.g. Goal(loss=0.01, points=1000)")
        for name in ("loss", "points", "seconds"):
            value = getattr(self, name)
            kinds = (int, np.integer) if name == "points" else (int, float, np.number)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                      or not value > 0):
                what = "a positive integer" if name == "points" else "a positive number"
                raise ScanError(f"goal {name}= must be {what}, got {value!r}")


@dataclass
class AdaptiveProgress(Progress):
    """A run's counters, with the learner's loss and the scan's points so far."""

    loss: float = math.inf
    points: int = 0  # points of the scan in the store and this run (done or failed)

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "loss": self.loss, "points": self.points}

    def __str__(self) -> str:
        return f"{super().__str__()}; loss {self.loss:.4g} after {self.points} point(s)"


class _Growing:
    """Columns, keys and seeds of the points asked so far, grown by doubling."""

    def __init__(self, names: list[str], dtypes: dict[str, Any]):
        self.names = names
        self.size = 0
        self.columns = {n: np.empty(16, dtype=dtypes[n]) for n in names}
        self.keys = np.empty(16, dtype=KEY_DTYPE)
        self.seeds = np.empty(16, dtype=np.uint32)

    def append(self, points: list[dict[str, Any]]) -> np.ndarray:
        """Add points; their positions."""
        n = len(points)
        while self.size + n > len(self.keys):
            grow = len(self.keys)
            self.columns = {k: np.concatenate([v, np.empty(grow, v.dtype)])
                            for k, v in self.columns.items()}
            self.keys = np.concatenate([self.keys, np.empty(grow, KEY_DTYPE)])
            self.seeds = np.concatenate([self.seeds, np.empty(grow, np.uint32)])
        at = np.arange(self.size, self.size + n)
        new = {name: np.array([p[name] for p in points], dtype=self.columns[name].dtype)
               for name in self.names}
        for name in self.names:
            self.columns[name][at] = new[name]
        self.keys[at] = key_array(self.names, new)
        self.seeds[at] = seed_array(self.keys[at])
        self.size += n
        return at


class AdaptiveSource(PointSource):
    """A learner's points as chunks for the run loop (a ``Source``).

    Parameters
    ----------
    plan, learner
        The :class:`~notebookscan.adaptive.learners.Plan` and its learner, told the
        stored points already (see :func:`notebookscan.adaptive.scan.rebuild`).
    goal
        When to stop.
    value
        The result variable the learner is told (``None``: the only scalar result).
    known
        Keys of the points the store holds (never submitted again).
    stored
        How many of the scan's points the store holds (counted towards ``goal.points``).
    points_per_task
        Learner points per task, fixed (1: every result informs the next ask); ``None``:
        one until a point's time is measured, then :meth:`task_points`.
    **options
        As for :class:`~notebookscan.run.points.PointSource`.
    """

    task_name = "a learner's point(s)"

    def __init__(self, *, plan: Plan, learner: Any, goal: Goal, value: str | None,
                 known: set[bytes], stored: int, dtypes: dict[str, Any],
                 points_per_task: int | None = None, **options: Any):
        self._grow = _Growing(plan.names, dtypes)
        super().__init__(names=plan.names, columns=self._grow.columns, keys=self._grow.keys,
                         seeds=self._grow.seeds, todo=np.zeros(0, dtype=np.int64), **options)
        self.plan, self.learner, self.goal, self.value = plan, learner, goal, value
        self.points_per_task = check_points_per_task(points_per_task)
        self.progress = AdaptiveProgress(skipped=stored, points=stored,
                                         failed_before=options.get("failed_before", 0))
        self._known = set(known)  # keys stored or handed out
        self._learner_points: list[Any] = []  # by position: the learner's own point
        self._told: list[tuple[float, bytes, Any, float]] = []  # (finished, key, point, y)
        self._clock = time.monotonic()
        self.task_sizes: collections.Counter[int] = collections.Counter()  # points: tasks
        self._update_loss()

    # ---------------------------------------------------------------- the goal

    def _update_loss(self) -> None:
        try:
            self.progress.loss = float(self.learner.loss())
        except (ValueError, ZeroDivisionError, IndexError):  # too few points for a loss
            self.progress.loss = math.inf

    def reached(self) -> bool:
        """True when the goal is reached (nothing more is asked)."""
        goal, progress = self.goal, self.progress
        if goal.points is not None and progress.points >= goal.points:
            return True
        if goal.loss is not None and progress.loss <= goal.loss:
            return True
        return goal.seconds is not None and time.monotonic() - self._clock >= goal.seconds

    def pending(self) -> bool:
        return not self.reached()

    def seconds_left(self) -> float:
        return math.inf if not self.reached() else 0.0

    # ---------------------------------------------------------------- asking

    def task_points(self) -> int:
        """Points to ask for one task: ``points_per_task`` when given; else as many as
        fill ``AUTO_TASK_SECONDS`` at the measured time per point (the point source's
        running mean over received chunks), at most ``AUTO_MAX_POINTS`` and a
        ``1/AUTO_KNOWN_SHARE`` of the scan's points so far, at least 1 (1 until measured)."""
        if self.points_per_task is not None:
            return self.points_per_task
        per_point = self._chunker.seconds_per_point
        if per_point is None:
            return 1
        by_time = int(AUTO_TASK_SECONDS / max(per_point, 1e-7))
        return max(1, min(AUTO_MAX_POINTS, by_time, self.progress.points // AUTO_KNOWN_SHARE))

    def next_tasks(self, slots: int, workers: int) -> list[Task]:
        tasks: list[Task] = []
        while len(tasks) < slots and not self.reached():
            n = self.task_points()
            if self.goal.points is not None:
                n = min(n, self.goal.points - self.progress.points - self.progress.running
                        - sum(t.size for t in tasks))
            if n <= 0:
                break
            chunk = self._ask(n)
            if not len(chunk):
                break
            tasks.append(self._task(chunk))
            self.task_sizes[len(chunk)] += 1
        self.progress.total = self.progress.completed + self.progress.running + sum(
            t.size for t in tasks)
        return tasks

    def _ask(self, n: int) -> np.ndarray:
        """Positions of ``n`` new points the learner asks for (fewer when it repeats a
        point whose key is known: 12 significant digits tell points apart)."""
        asked, _ = self.learner.ask(n)
        fresh, params = [], []
        for point in asked:
            p = self.plan.to_params(point)
            fresh.append(point)
            params.append(p)
        if not params:
            return np.zeros(0, dtype=np.int64)
        at = self._grow.append(params)
        self._refresh_arrays()
        keep = []
        for i, position in enumerate(at.tolist()):
            self._learner_points.append(fresh[i])
            key = bytes(self._grow.keys[position])
            if key not in self._known:
                self._known.add(key)
                keep.append(position)
        return self._claim(np.asarray(keep, dtype=np.int64))

    # One learner decides what a scan computes: two runs on one store would each follow
    # their own learner, so keys are not leased (a lease file per point costs more than
    # a cheap point) and the points another run stores are simply told at the next run.

    def _claim(self, chunk: np.ndarray) -> np.ndarray:
        return chunk

    def _lease_counted(self, chunk: np.ndarray, stored: bool) -> None:
        return None

    def _lease_flushed(self) -> None:
        return None

    def _refresh_arrays(self) -> None:
        """The point source reads these names; they are new arrays after growing."""
        self.columns, self.keys, self.seeds = (self._grow.columns, self._grow.keys,
                                               self._grow.seeds)

    # ---------------------------------------------------------------- telling

    def receive(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """Keep the values to tell (before the point source may drop them), then store."""
        ys = self._values(results)
        finished = np.asarray(results.finished, dtype=float).copy()
        super().receive(chunk, results)
        self.progress.points += len(chunk)
        for i, position in enumerate(chunk.tolist()):
            told = results.written or results.done[i]  # (done[] is gone once written)
            if told and ys is not None and math.isfinite(ys[i]):
                self._told.append((float(finished[i]), bytes(self.keys[position]),
                                   self._learner_points[position], float(ys[i])))

    def fail(self, chunk: np.ndarray, error: str) -> None:
        """Record a lost task's points failed, without counting them as instant work:
        points whose worker died or overran the timeout must not grow the tasks."""
        measured = self._chunker.seconds_per_point
        super().fail(chunk, error)
        self._chunker.seconds_per_point = measured

    def _values(self, results: ChunkResult) -> np.ndarray | None:
        """The told variable of a chunk's points (NaN where absent); ``None`` if none."""
        if self.value is None:
            names = sorted(results.scalars)
            if not names:
                return None
            if len(names) > 1:
                raise ScanError(f"the function returns several scalar results {names}; name "
                                f"the one the learner learns, e.g. value={names[0]!r}")
            self.value = names[0]
        if self.value not in results.scalars:
            if self.value in results.arrays:
                raise ScanError(f"the learner's value {self.value!r} is an array; name a "
                                "scalar result with value=")
            if results.done.any():  # done points without it: the learner would learn nothing
                names = sorted([*results.scalars, *results.arrays])
                raise ScanError(f"the function returns no result {self.value!r} for the "
                                f"learner (it returns {names}); name one with value=")
            return None
        data, present = results.scalars[self.value]
        ys = np.asarray(data, dtype=float).copy()
        ys[~np.asarray(present, dtype=bool)] = np.nan
        return ys

    def commit(self) -> None:
        super().commit()
        self._tell()

    def flush(self) -> None:
        super().flush()
        self._tell()

    def _tell(self) -> None:
        """Tell the learner this turn's results in the order they finished (the order a
        resumed scan tells them again: see ``rebuild``)."""
        if not self._told:
            return
        told, self._told = sorted(self._told, key=lambda t: (t[0], t[1])), []
        for _, _, point, y in told:
            self.learner.tell(point, y)
        self._update_loss()

    def asked_points(self) -> list[dict[str, Any]]:
        """The points asked so far, in the order the learner asked them."""
        return [self.point(i) for i in range(self._grow.size)]

    def summary(self) -> dict[str, Any]:
        return {"loss": self.progress.loss, "points": self.progress.points}
