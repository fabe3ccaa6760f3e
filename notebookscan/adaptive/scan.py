"""AdaptiveScan: a scan whose points a python-adaptive learner chooses.

Examples
--------
>>> import tempfile, numpy as np
>>> from notebookscan.adaptive import AdaptiveScan, Goal
>>> def step(x: float):
...     return {"y": np.tanh((x - 0.3) / 0.01)}
>>> scan = AdaptiveScan(step, {"x": (0, 1)}, store=tempfile.mkdtemp(), goal=Goal(points=40))
>>> run = scan.run(executor="serial", progress=False)
>>> len(scan.results().point)
40
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ScanError
from ..executors import resolve_executor
from ..run.bars import feed_bar
from ..run.events import Events
from ..run.loop import LoopSettings
from ..run.provenance import collect, run_id
from ..scan import Scan, ScanRun
from ..space import points as points_space
from ..store.journal import fold_journals
from ..store.schema import Layout
from .learners import TRIAL, Plan
from .source import AdaptiveSource, Goal, check_points_per_task

__all__ = ["AdaptiveScan", "rebuild", "stored_points"]


class AdaptiveScan(Scan):
    """Run ``function`` where a python-adaptive learner chooses, into ``store``.

    Parameters
    ----------
    function
        Called as ``function(**point)`` (plus ``seed=`` when it takes one); returns
        named results like any scan's function.
    bounds
        ``{name: (low, high)}`` of the continuous parameters (one: ``Learner1D``, two:
        ``Learner2D``, more: ``LearnerND``). Empty with ``trials=True``: an
        ``AverageLearner`` over seeded trials.
    store
        Directory of the result store (a points layout). Its points are told to the
        learner before a run: a killed scan continues where it was.
    grid
        Discrete or categorical parameters: a space (``ns.grid(kind=["a", "b"])``) or
        ``{name: values}``. Each of its points gets its own learner; a
        ``BalancingLearner`` chooses among them (by ``balance``: its strategy,
        ``"loss_improvements"`` by default, ``"npoints"`` to keep the cells even).
    trials
        Learn the mean over seeded trials (an integer parameter ``trial``; the function
        gets each trial's own ``seed``) with an ``AverageLearner`` per grid cell.
    goal
        A :class:`~notebookscan.adaptive.Goal` (loss, points, seconds), or a dict of its
        arguments. Required.
    value
        The result variable the learner learns; default: the function's only scalar
        result.
    learner, learner_options
        Another learner class (or ``factory(function, bounds, **options)``), and keyword
        arguments of the learner (``loss_per_interval=...``, ``atol=...``).
    points_per_task
        Learner points per task, fixed (1: as adaptive's own runner). Default ``None``:
        one point per task until a point's time is measured, then as many as take about
        2 ms (at most 32 and 1/16 of the points so far), so a fast function's points
        share the per-task overhead (the journal's fsync once per loop turn); a function
        of 2 ms or more keeps one. See docs/adaptive.md ("Points per task").
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    def __init__(self, function: Callable[..., Any], bounds: Mapping[str, Sequence[float]],
                 store: str | os.PathLike[str], *, goal: Goal | Mapping[str, Any],
                 grid: Any = None, trials: bool = False, value: str | None = None,
                 learner: Callable[..., Any] | None = None,
                 learner_options: Mapping[str, Any] | None = None,
                 points_per_task: int | None = None,
                 balance: str | None = None):
        if not callable(function):
            raise ScanError(f"function must be callable, got {type(function).__name__}")
        self.spec = Plan(bounds or {}, _cells(grid), trials, learner, learner_options,
                         balance)
        self.spec.make()  # a learner's options are checked before anything runs
        self.goal = goal if isinstance(goal, Goal) else Goal(**dict(goal))
        self.value = value
        self.points_per_task = check_points_per_task(points_per_task)
        self.learner: Any = None  # the learner of the latest run (or rebuild)
        self._bind(function, points_space([self._example()]), store, Events())

    def _example(self) -> dict[str, Any]:
        """One point of the scan: what the function's signature is checked against."""
        plan = self.spec
        inner = {TRIAL: 0} if plan.trials else {n: lo for n, (lo, _) in plan.bounds.items()}
        return {**(plan.cells[0] if plan.cells else {}), **inner}

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"<AdaptiveScan {name} over {self.spec.names} into {self.store.path}>"

    @property
    def layout(self) -> Layout:
        """Always a list of points (the learner's), whatever the store held before."""
        return Layout("points", tuple(self.spec.names))

    def space_layout(self) -> Layout:
        return self.layout

    def refine(self, space: Any = None, **axes: Any) -> Scan:
        raise ScanError("an adaptive scan chooses its own points; run it with another goal "
                        "(AdaptiveScan(..., goal=...)) to add points")

    # ------------------------------------------------------------ running

    def run(self, executor: Any = None, *, progress: bool | None = None,  # type: ignore[override]
            wait: bool | None = None, flush_every: int = 10_000,
            flush_interval: float = 2.0, max_retries: int = 2, timeout: float | None = None,
            writer: str = "client", **unsupported: Any) -> ScanRun:
        """Ask, run, store and tell until the goal is reached.

        The store's points are told to a new learner first (:func:`rebuild`), so a
        killed or stopped scan continues. Arguments as for :meth:`Scan.run`; ``detach``,
        ``retry_failed``, ``chunk_size`` and ``stale`` do not apply (points are chosen
        one at a time; a failed point stays failed and the learner leaves it aside).
        """
        if unsupported:
            raise ScanError(f"{sorted(unsupported)} do not apply to an adaptive scan; it "
                            "takes executor, progress, wait, flush_every, flush_interval, "
                            "max_retries, timeout and writer")
        self._check_run(flush_every=flush_every, flush_interval=flush_interval,
                        flush_bytes=256 * 2**20, timeout=timeout, chunk_size=None,
                        max_retries=max_retries, writer=writer, stale=None)
        fold_journals(self.store)  # what a killed run received counts as stored
        self.learner, known, stored, value = rebuild(self.spec, self.store, self.value)
        self.value = value
        executor_obj, owned = resolve_executor(executor)
        settings = LoopSettings(flush_every=flush_every, flush_interval=flush_interval,
                                writer=writer, max_retries=max_retries, timeout=timeout)
        self.store.prepare(self.layout, self.spec.names)
        record = collect(self.function, executor=executor_obj.description, space=self.space)
        source = AdaptiveSource(
            plan=self.spec, learner=self.learner, goal=self.goal, value=self.value,
            known=known, stored=stored, dtypes=_dtypes(self.spec),
            points_per_task=self.points_per_task,
            payload=self._payload(executor_obj), pass_seed=self._pass_seed(),
            hidden=self._hidden(), store=self.store, settings=settings, events=self.events,
            provenance=record, run_id=run_id(record), skipped=stored,
            in_process=not executor_obj.needs_pickled_function,
            shares_filesystem=executor_obj.shares_filesystem)
        self._source = source
        return self._launch(source, executor_obj, owned, settings, wait, progress)

    def _pass_seed(self) -> bool:
        return self._accepts("seed")

    def _progress_bar(self) -> Any:
        from tqdm.std import tqdm

        bar = tqdm(total=self.goal.points, unit="pt", desc="adaptive", dynamic_ncols=True,
                   leave=True, mininterval=0.5)

        def started(skipped: int, **_: Any) -> None:
            bar.n = skipped

        def progress(points: int = 0, loss: float = float("nan"), failed: int = 0,
                     **_: Any) -> None:
            bar.n = points
            bar.set_postfix_str(f"loss {loss:.3g}" + (f", {failed} failed" if failed else ""),
                                refresh=False)
            bar.refresh()

        return feed_bar(bar, self.events, started, progress)

    def rebuild_learner(self) -> Any:
        """The learner rebuilt from the store: what the next run continues from (what a
        killed run had received, in its journal, is folded into a shard first)."""
        fold_journals(self.store)
        self.learner, _, _, self.value = rebuild(self.spec, self.store, self.value)
        return self.learner

    def plan(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise ScanError("an adaptive scan's points are chosen while it runs; "
                        "scan.next_points(n) tells which it would run first")

    def next_points(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` points a run would compute now: the learner rebuilt from the
        store asks them as a run asks (``points_per_task`` at a time, each marked
        pending; one at a time when it is ``None``, as a run's first asks, before any
        point's time is measured). Nothing runs and nothing is stored."""
        learner = self.rebuild_learner()
        asked: list[Any] = []
        while len(asked) < n:
            more, _ = learner.ask(min(self.points_per_task or 1, n - len(asked)))
            if not more:
                break
            asked.extend(more)
        return [self.spec.to_params(p) for p in asked]

    def asked_points(self) -> list[dict[str, Any]]:
        """The points the latest run asked, in the order it asked them."""
        source = getattr(self, "_source", None)
        return [] if source is None else source.asked_points()

    # ------------------------------------------------------------ results

    def results(self, broadcast: str | Sequence[str] | None = None) -> Any:
        """The stored points as a Dataset over ``point`` (parameters as coordinates).

        During a run of this scan in this process (``run()`` returned at once in a
        notebook) it gives the points stored so far and says so, as :meth:`Scan.results`.
        """
        return super().results(broadcast)

    def _planned_total(self) -> str:
        """The points a run aims at: the goal's number, when it has one."""
        return "?" if self.goal.points is None else str(self.goal.points)

    def _read_results(self, broadcast: Any) -> Any:
        if broadcast is not None:
            raise ScanError("broadcast= needs a grid layout; an adaptive scan's points "
                            "form a list")
        if not self.store.exists:
            os.makedirs(self.store.shards_dir, exist_ok=True)
        return self.store.dataset(lazy=False, layout=self.layout)

    def status(self) -> dict[str, int]:
        """Counts of the stored points by status (an adaptive scan has none missing)."""
        index = self.store.index()
        return {"done": len(index.done_keys), "failed": len(index.failed_keys), "missing": 0}


def _cells(grid: Any) -> list[dict[str, Any]]:
    """The points of ``grid`` (a space or ``{name: values}``) as dicts."""
    if grid is None:
        return []
    if isinstance(grid, Mapping):
        from ..space import grid as make_grid

        grid = make_grid(**grid)
    cells = [dict(p) for p in grid]
    if not cells:
        raise ScanError("grid= holds no points; give at least one value per parameter")
    return cells


def _dtypes(plan: Plan) -> dict[str, Any]:
    """Column types: floats for continuous parameters, int for trials, the grid's own."""
    dtypes: dict[str, Any] = dict.fromkeys(plan.bounds, np.float64)
    if plan.trials:
        dtypes[TRIAL] = np.int64
    for name in plan.cell_names:
        values = np.asarray([c[name] for c in plan.cells])
        dtypes[name] = values.dtype if values.dtype.kind in "biuf" else object
    return dtypes


def stored_points(plan: Plan, store: Any, value: str | None) -> tuple[Any, str | None]:
    """The store's points as a Dataset over ``point`` and the learner's value name."""
    if not store.exists or not store.metadata():
        return None, value
    ds = store.dataset(lazy=False, layout=Layout("points", tuple(plan.names)))
    if value is None:
        scalars = [n for n, v in ds.data_vars.items()
                   if v.dims == ("point",) and not n.startswith("ns_")
                   and v.dtype.kind in "biuf" and not n.endswith("_length")]
        if len(scalars) > 1:
            raise ScanError(f"the store holds several scalar results {sorted(scalars)}; name "
                            f"the one the learner learns, e.g. value={sorted(scalars)[0]!r}")
        value = scalars[0] if scalars else None
    return ds, value


def rebuild(plan: Plan, store: Any, value: str | None
            ) -> tuple[Any, set[bytes], int, str | None]:
    """A new learner told every stored point of the scan, no pickle involved.

    Done points are told in the order they finished (``ns_finished``, then key), the
    order the run that computed them told them; failed points are marked pending, so
    the learner never asks them again. Returns the learner, the stored keys, how many
    points of the scan the store holds, and the value name.
    """
    learner = plan.make()
    ds, value = stored_points(plan, store, value)
    if ds is None or "point" not in ds.dims or not ds.sizes["point"]:
        return learner, set(), 0, value
    keys = ds["ns_key"].values.astype("S20")
    status = ds["ns_status"].values.astype(str)
    finished = ds["ns_finished"].values.astype(float)
    ys = (ds[value].values.astype(float) if value is not None and value in ds
          else np.full(len(keys), np.nan))
    columns = {name: ds[name].values for name in plan.names}
    order = np.lexsort((keys, finished))
    told = 0
    for i in order.tolist():
        point = plan.to_point({name: columns[name][i] for name in plan.names})
        if point is None:
            continue  # outside this scan's bounds or grid: another scan's point
        told += 1
        if status[i] == "done" and np.isfinite(ys[i]):
            learner.tell(point, float(ys[i]))
        else:
            learner.tell_pending(point)
    return learner, set(keys.tolist()), told, value
