"""A scan: a function, a space of parameter points, and a store that keeps the results.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> import notebookscan as ns
>>> def square(x: float, seed: int = 0):
...     return {"y": x * x, "noise": np.random.default_rng(seed).normal()}
>>> scan = ns.Scan(square, ns.grid(x=[1.0, 2.0, 3.0]), store=tempfile.mkdtemp())
>>> run = scan.run(executor="serial", progress=False)
>>> print(run.progress)
finished: 3 done, 0 failed, 0 running, 0 remaining of 3 (0 already stored)
>>> scan.results().y.values.tolist()
[1.0, 4.0, 9.0]
>>> print(scan.refine(x=[3.0, 4.0]).run(executor="serial", progress=False).progress)
finished: 1 done, 0 failed, 0 running, 0 remaining of 1 (3 already stored)
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import PartialResultsWarning, ScanError, StaleResultsWarning
from .executors import resolve_executor
from .run import detached
from .run.bars import progress_bar
from .run.detached import DetachedRun
from .run.events import Events
from .run.handle import RunControl, ScanRun, in_event_loop
from .run.loop import LoopSettings, RunLoop
from .run.points import PointSource
from .run.provenance import collect, run_id
from .run.stale import StaleReport, check_stale_choice, find_stale
from .space import PASSED_IF_ACCEPTED
from .store import Store, StoreIndex
from .store.attrs import check_parameter_attrs
from .store.dataset import broadcast_excluded, label_excluded, store_records
from .store.journal import fold_journals
from .store.scanned import space_record, write_record
from .store.schema import STATUS, Layout

__all__ = ["Plan", "Scan", "ScanRun"]


@dataclass
class Plan:
    """What :meth:`Scan.run` would do, without doing it (returned by :meth:`Scan.plan`)."""

    total: int
    stored: int
    failed_before: int
    to_run: Any  # pandas.DataFrame of the points that would run (parameters, key, seed)
    stale: StaleReport | None = None  # stored points that other code computed

    def __repr__(self) -> str:
        stale = f", {self.stale.count} from other code" if self.stale else ""
        return (f"<Plan: {len(self.to_run)} of {self.total} point(s) would run; "
                f"{self.stored} already stored{stale}, {self.failed_before} failed before>")


DryRun = Plan  # the name before Scan.plan() replaced run(dry_run=True)

#: the module :meth:`Scan.widget` opens (``scan_app(scan, **kwargs)``): the widgets sit
#: above the scan and import it, so the scan names them instead of importing them
FRONT_END = "notebookscan.widgets"

#: seconds :meth:`Scan.results` waits, during a run, for its first stored batch
FIRST_BATCH_WAIT = 60.0


class Scan(RunControl):
    """Run ``function`` over every point of ``space``, keeping the results in ``store``.

    Parameters
    ----------
    function
        Called as ``function(**point)`` (plus ``seed=`` when it takes a ``seed``
        argument). Returns a scalar, an array, an ``xarray.DataArray`` or a dict of these.
    space
        The parameter points (:func:`notebookscan.grid`, ``sample``, ``trials``, …).
        Checked against ``function``'s signature before anything runs.
    store
        Directory of the result store. Points already in it are never run again.
    segments, segment_duration, keep_checkpoints
        Only for segmented models — a generator function that yields one
        :class:`~notebookscan.segments.Segment` at a time, or a class with ``init`` and
        ``advance``: ``Scan(model, space, store, segments=N)`` then returns a
        :class:`~notebookscan.segments.SegmentedScan`, a ``Scan`` that runs each point
        in ``N`` segments (the one way to make one; see docs/segments.md).
    """

    #: subclasses that take over some functions: ``Scan(f, ...)`` makes the first whose
    #: ``handles(f)`` is true (a segmented model makes a SegmentedScan), registered by
    #: subclassing with ``handles`` defined (the scan itself knows none of them)
    _kinds: ClassVar[list[type[Scan]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "handles" in vars(cls):
            Scan._kinds.append(cls)

    @classmethod
    def handles(cls, function: Any) -> bool:
        """True when ``Scan(function, ...)`` should make this class."""
        return False

    def __new__(cls, function: Callable[..., Any], space: Any, store: str | os.PathLike[str],
                **options: Any) -> Any:
        # Python then calls the chosen class's __init__ with the same arguments
        if cls is Scan:
            kind = next((k for k in Scan._kinds if k.handles(function)), Scan)
            return super().__new__(kind)
        return super().__new__(cls)

    def __init__(self, function: Callable[..., Any], space: Any, store: str | os.PathLike[str],
                 **segmented: Any):
        if segmented:
            raise ScanError(
                f"{', '.join(segmented)} only apply to segmented models (a generator function "
                "or a class with init/advance); this function returns its result at once"
            )
        if not callable(function):
            raise ScanError(f"function must be callable, got {type(function).__name__}")
        self._bind(function, space, store, Events())

    def _bind(self, function: Any, space: Any, store: str | os.PathLike[str],
              events: Events) -> None:
        """Check the space against the function and keep the scan's parts."""
        self.function = function
        space.validate(self._signature())
        self.space = space
        self.store = Store(store)
        self._decided_from: frozenset[str] | None = None  # see _pending
        self.events = events
        self._run: ScanRun | None = None
        self._check_store_fits()

    def __reduce__(self) -> tuple[Any, ...]:
        """What a copy in another process gets (a detached run): the scan, without this
        process's run and event subscribers (made without calling ``__new__`` again)."""
        state = dict(self.__dict__)
        state["_run"] = None
        state["events"] = type(self.events)()
        return (object.__new__, (type(self),), state)

    def _signature(self) -> Any:
        """What the space's parameters are checked against (the function itself)."""
        return self.function

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"<Scan {name} over {self.space!r} into {self.store.path}>"

    # ------------------------------------------------------------ the space

    def _check_store_fits(self) -> None:
        stored = self.store.metadata().get("names")
        if stored is not None and sorted(stored) != sorted(self.space.names):
            raise ScanError(
                f"the store {self.store.path} holds parameters {stored}, but the space has "
                f"{list(self.space.names)}; use another store or the same parameters"
            )

    @property
    def layout(self) -> Layout:
        """How results are laid out: the store's grid or point layout, else the space's."""
        stored = self.store.layout()
        space_layout = Layout(self.space.layout.kind, tuple(self.space.layout.dims))
        if self.store.metadata() and stored.dims:
            if stored.kind == "grid" and space_layout.kind == "grid":
                return stored
            return Layout("points", stored.dims)
        return space_layout

    def refine(self, space: Any = None, **axes: Any) -> Scan:
        """Add points: the same space with some axes' values replaced, or another space.

        Only points not in the store run next time. Returns the scan, so
        ``scan.refine(k=np.linspace(5, 8, 31)).run()`` works.
        """
        if space is not None and axes:
            raise ScanError("refine() takes a space or axes=values, not both")
        extra = space if space is not None else self.space.refine(**axes)
        extra.validate(self._signature())
        self.space = self.space + extra
        return self

    def _pending(self, retry_failed: bool) -> tuple[np.ndarray, int, int]:
        """Positions of the points to run, how many are stored, how many failed before.

        Keeps the shards it decided from (``_decided_from``): the run reads any other
        for points stored meanwhile, however many readers index the store in between."""
        keys = self.space.key_array()
        index = self.store.index()
        self._decided_from = index.shards
        failed = index.is_failed(keys)
        skip = index.is_done(keys) if retry_failed else index.is_done(keys) | failed
        todo = np.flatnonzero(~skip)
        return todo, len(keys) - len(todo), int(failed.sum())

    def _to_run(self, retry_failed: bool, stale: str | None
                ) -> tuple[np.ndarray, int, int, StaleReport]:
        """What a run would compute: positions of the points, how many are stored, how
        many failed before, and the stored points other code computed (run again with
        ``stale="recompute"``)."""
        # what a killed writer had received is in its journal: store it before deciding
        # what to compute
        fold_journals(self.store)
        todo, stored, failed_before = self._pending(retry_failed)
        report = self.stale() if stored else StaleReport()
        if report and stale == "recompute":
            again = np.flatnonzero(np.isin(self.space.key_array(), report.keys))
            todo = np.union1d(todo, again)
            stored -= len(again)
        return todo, stored, failed_before, report

    def _accepts(self, name: str) -> bool:
        try:
            parameters = inspect.signature(self.function).parameters
        except (TypeError, ValueError):
            return True
        return name in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def _pass_seed(self) -> bool:
        return "seed" not in self.space.names and self._accepts("seed")

    def _hidden(self) -> frozenset[str]:
        return frozenset(n for n in PASSED_IF_ACCEPTED
                         if n in self.space.names and not self._accepts(n))

    # ------------------------------------------------------------ running

    def run(self, executor: Any = None, *, progress: bool | None = None,
            wait: bool | None = None, detach: bool = False, retry_failed: bool = False,
            flush_every: int = 10_000, flush_interval: float = 2.0,
            flush_bytes: int = 256 * 2**20, max_retries: int = 2,
            timeout: float | None = None, chunk_size: int | None = None,
            writer: str = "auto", stale: str | None = None) -> ScanRun | DetachedRun:
        """Run every point of the space that the store does not hold yet.

        :meth:`plan` tells what this would run, without running it.

        Parameters
        ----------
        executor
            ``None`` — local ipyparallel engines, one per core (started once, reused);
            ``"serial"`` — in this process, one point after another (debugging);
            ``"processes"`` — a process pool; or any ``concurrent.futures.Executor``,
            ipyparallel ``Client``/``View``/``Cluster``.
        progress
            Show a text progress bar (default: yes, on a terminal or in a notebook).
        wait
            Block until the scan ends. Default: block, except inside a running event
            loop (a Jupyter kernel) with a parallel executor, where ``run`` returns at
            once and ``await scan`` waits.
        detach
            Run the scan loop in a background process that outlives this one (closing
            the notebook or the ssh session does not stop it). Returns a
            :class:`~notebookscan.run.detached.DetachedRun`; any process attaches with
            ``ns.attach(store)``. ``executor`` must then be ``None``, a name, or
            :func:`notebookscan.executors.cluster.connect` arguments as a dict.
        retry_failed
            Also run points that failed before (by default they are kept as failed).
        flush_every, flush_interval, flush_bytes
            Write a shard every this many finished points, seconds or bytes of results,
            whichever comes first. The first results are written at once, unless the
            whole scan is about to end (less than a quarter second of work left). In
            between, each received chunk is appended to the store's journal and fsynced
            before it counts as done: a killed process recomputes only the points that
            were running; the next run (or ``ns.compact``) folds the journal into a shard.
        max_retries
            How often a chunk whose worker died is re-submitted before its points are
            recorded as failed.
        timeout
            Seconds after which a point is stopped and recorded as failed ("timed out").
            It holds when the function catches ``Exception`` (the timeout is raised as a
            ``BaseException``, again until the call returns); a point stuck where Python
            cannot interrupt it (inside a C call) has its worker ended and replaced a
            few seconds later, on executors that manage their workers.
        chunk_size
            Points per task; default adapts to the measured time per point.
        writer
            Who writes shards. ``"client"``: this process, the single writer (results
            travel back from the workers). ``"workers"``: each worker writes its own
            chunks into the store — only for workers that see the store's directory
            (same machine or a shared file system). ``"auto"`` (default): workers write
            chunks of 1 MiB of results or more when they run on this machine, the client
            writes the rest. Every shard is written atomically either way.
        stale
            What to do with stored points that other code computed (the function's
            source changed since they were stored; keys depend on parameters only):
            ``"reuse"`` keeps them, ``"recompute"`` runs them again (the new results are
            the ones read afterwards), ``"error"`` raises :class:`ScanError` before
            anything runs (then use a new store, or choose). ``None`` (default) reuses
            them with a :class:`~notebookscan.errors.StaleResultsWarning` saying how
            many there are; :meth:`stale` tells without running.
        """
        self._check_run(flush_every=flush_every, flush_interval=flush_interval,
                        flush_bytes=flush_bytes, timeout=timeout, chunk_size=chunk_size,
                        max_retries=max_retries, writer=writer, stale=stale)
        todo, stored, failed_before, report = self._to_run(retry_failed, stale)
        if report:
            settle_stale(report, stale)
        # units that differ from the store's are refused here, before a detached run starts
        check_parameter_attrs(self.store, self.store.metadata(), self.space.attrs)
        if detach:
            return detached.start(self, executor, {
                "retry_failed": retry_failed, "flush_every": flush_every,
                "flush_bytes": flush_bytes,
                "flush_interval": flush_interval, "max_retries": max_retries,
                "timeout": timeout, "chunk_size": chunk_size, "writer": writer,
                "stale": "reuse" if stale is None else stale})
        if failed_before and not retry_failed:
            warnings.warn(f"{failed_before} point(s) failed in earlier runs and are not run "
                          "again; pass retry_failed=True to run them.", stacklevel=2)
        executor_obj, owned = resolve_executor(executor)
        settings = LoopSettings(flush_every=flush_every, flush_interval=flush_interval,
                                flush_bytes=flush_bytes, writer=writer,
                                max_retries=max_retries, timeout=timeout, chunk_size=chunk_size)
        self.store.prepare(self.layout if self.store.metadata() else self.space_layout(),
                           self.space.names, self.space.attrs)
        record = collect(self.function, executor=executor_obj.description, space=self.space)
        if self.space.layout.kind == "grid" and self.layout.kind == "grid":
            # which grid cells this run's space holds: readers tell dropped from missing
            record["scanned"] = write_record(self.store.path, self._space_record())
        # the space's own arrays: no per-point Python objects held for the run
        source = PointSource(
            payload=self._payload(executor_obj), names=list(self.space.names),
            columns=self.space.column_arrays(), keys=self.space.key_array(),
            seeds=self.space.seed_array(), todo=todo, pass_seed=self._pass_seed(),
            hidden=self._hidden(), store=self.store, settings=settings, events=self.events,
            provenance=record, run_id=run_id(record), skipped=stored,
            failed_before=0 if retry_failed else failed_before,
            in_process=not executor_obj.needs_pickled_function,
            shares_filesystem=executor_obj.shares_filesystem, decided_from=self._decided_from)
        del record  # the source keeps it as JSON; the dict lists every axis value
        return self._launch(source, executor_obj, owned, settings, wait, progress)

    def _check_run(self, *, max_retries: int, writer: str, stale: str | None,
                   **positive: float | None) -> None:
        """Refuse a second run at once and run options out of range."""
        if self._run is not None and not self._run.done():
            raise ScanError("this scan is already running; call scan.stop() or await it first")
        _check_positive(**positive)
        if max_retries < 0:
            raise ScanError(f"max_retries must be >= 0, got {max_retries}")
        if writer not in ("auto", "client", "workers"):
            raise ScanError(f"writer must be 'auto', 'client' or 'workers', got {writer!r}")
        check_stale_choice(stale)

    def _payload(self, executor: Any) -> Any:
        """The function as workers receive it (cloudpickle bytes for other processes)."""
        if not executor.needs_pickled_function:
            return self.function
        import cloudpickle

        return cloudpickle.dumps(self.function)

    def _launch(self, source: Any, executor: Any, owned: bool, settings: LoopSettings,
                wait: bool | None, progress: bool | None) -> ScanRun:
        """Run ``source`` on ``executor``: here, or in a background thread."""
        loop = RunLoop(source, executor, settings, self.events)
        background = wait is False or (wait is None and in_event_loop() and
                                       executor.max_workers > 1 and
                                       executor.description != "serial (in this process)")
        if settings.timeout and background and not executor.needs_pickled_function:
            warnings.warn("timeout= needs the worker's main thread; this run executes points in "
                          "a background thread of this process, where it cannot stop them. Use "
                          "executor='processes' or engines for timeouts.", stacklevel=3)
        bar = self._progress_bar() if (progress or progress is None) else None
        self._run = ScanRun(loop, owned, bar)
        try:
            self._run.start(background)
        finally:
            if bar is not None and not background:
                bar.close()
        return self._run

    def plan(self, retry_failed: bool = False, stale: str | None = None) -> Plan:
        """What :meth:`run` with these arguments would do; runs nothing.

        Points a killed run left in the store's journal are folded into a shard first,
        as :meth:`run` does, so they count as stored.

        Parameters
        ----------
        retry_failed, stale
            As for :meth:`run`. ``stale="error"`` does not raise here: the returned
            plan's ``stale`` report says which stored points other code computed.

        Returns
        -------
        Plan
            ``total``, ``stored`` and ``failed_before`` point counts, ``to_run`` (a
            pandas DataFrame of the points that would run: parameters, ``key``,
            ``seed``) and ``stale`` (a :class:`~notebookscan.run.stale.StaleReport`).
        """
        check_stale_choice(stale)
        todo, stored, failed_before, report = self._to_run(retry_failed, stale)
        return Plan(len(self.space), stored, failed_before, self.space.table().iloc[todo],
                    report)

    def _progress_bar(self) -> Any:
        return progress_bar(self.events)

    def widget(self, **kwargs: Any) -> Any:
        """Builder, run control, live plot and explorer for this scan, in JupyterLab.

        The widgets live in :mod:`notebookscan.widgets`, a front end above the scan,
        imported by name (:data:`FRONT_END`) only when asked for; see
        :class:`~notebookscan.widgets.ScanApp` for the options.
        """
        return importlib.import_module(FRONT_END).scan_app(self, **kwargs)

    def attach(self, run_id: str | None = None) -> DetachedRun:
        """The latest detached run of this scan's store (see ``run(detach=True)``)."""
        from .run.detached import attach

        return attach(self.store.path, run_id)

    def space_layout(self) -> Layout:
        """The layout of this scan's space alone (grid dims, or a flat list of points)."""
        return Layout(self.space.layout.kind, tuple(self.space.layout.dims))


    # ------------------------------------------------------------ results

    def results(self, broadcast: str | Sequence[str] | None = None) -> Any:
        """The scan's results as a labelled :class:`xarray.Dataset`.

        Every point of the space appears: stored ones with their values, the others as
        NaN with ``status == "missing"``. Grid cells that no run's space holds (dropped
        by ``where``, or between the values of a refinement) have
        ``status == "excluded"``, as :func:`~notebookscan.open_store` shows them. A grid
        space gives one dimension per parameter; other spaces a ``point`` dimension with
        the parameters as coordinates.

        Parameters
        ----------
        broadcast
            A grid dimension (or several) the results do not depend on where the space
            dropped cells: each excluded cell gets the result computed for the one cell
            of its line along it that the space kept (``status`` stays ``"excluded"``).
            See :func:`~notebookscan.store.dataset.broadcast_excluded`.

        Examples
        --------
        >>> import tempfile, notebookscan as ns
        >>> def drive(amp: float, freq: float):
        ...     return amp * freq + 1        # at amp == 0 freq does not matter
        >>> space = ns.grid(amp=[0.0, 1.0], freq=[1.0, 2.0]).where(
        ...     lambda p: p["amp"] > 0 or p["freq"] == 1.0)
        >>> scan = ns.Scan(drive, space, store=tempfile.mkdtemp())
        >>> _ = scan.run(executor="serial", progress=False)
        >>> scan.results().ns_status.values.tolist()
        [['done', 'excluded'], ['done', 'done']]
        >>> scan.results(broadcast="freq").result.values.tolist()
        [[1.0, 1.0], [2.0, 3.0]]

        While a run of this scan goes on in this process (``run()`` returned at once in a
        notebook, or ``wait=False``), the Dataset holds the points stored so far, the
        others missing, with every result variable present: before the first batch is
        stored (so no result's name is known yet) this waits for it, at most
        :data:`FIRST_BATCH_WAIT` seconds. A :class:`~notebookscan.errors.PartialResultsWarning`
        and the attribute ``ns_in_progress`` say how many points are in ("12 of 200
        points so far, the run continues; ..."); ``scan.wait()`` or ``await scan`` waits
        for them all.
        """
        run = self._run
        if run is None or run.done() or run._is_loop_thread():
            return self._read_results(broadcast)
        return self._results_so_far(run, broadcast)

    def _results_so_far(self, run: ScanRun, broadcast: Any) -> Any:
        """The results of a run still going on: after its first stored batch, noted."""
        landed = threading.Event()

        def note_flush(**_: Any) -> None:
            landed.set()

        self.events.on("flushed", note_flush)  # before reading: no batch slips between
        try:
            ds = self._read_results(broadcast)
            if _nothing_stored(ds) and not run.done():
                ds = self._wait_first_batch(run, broadcast, landed, ds)
        finally:
            self.events.off("flushed", note_flush)
        if run.done():  # it ended meanwhile: everything is stored
            return self._read_results(broadcast)
        stored = int(ds["ns_status"].isin(["done", "failed"]).sum())
        note = (f"{stored} of {self._planned_total()} points so far, the run continues; "
                "scan.wait() (or `await scan` in a notebook) waits for all of them")
        ds.attrs["ns_in_progress"] = note
        warnings.warn(note, PartialResultsWarning, stacklevel=3)
        return ds

    def _planned_total(self) -> str:
        """The number of points this scan's run aims at, as the progress note says it."""
        return str(len(self.space))

    def _wait_first_batch(self, run: ScanRun, broadcast: Any, landed: threading.Event,
                          ds: Any) -> Any:
        """Read again each time a batch lands, until results show, the run ends or
        :data:`FIRST_BATCH_WAIT` seconds pass."""
        warnings.warn(f"no result of this run is stored yet; waiting for the first batch "
                      f"(at most {FIRST_BATCH_WAIT:g} s)", PartialResultsWarning, stacklevel=4)
        deadline = time.monotonic() + FIRST_BATCH_WAIT
        while _nothing_stored(ds) and not run.done() and time.monotonic() < deadline:
            if landed.wait(0.25):
                landed.clear()
                ds = self._read_results(broadcast)
        return ds

    def _read_results(self, broadcast: Any) -> Any:
        """The store's results laid out over this scan's space (see :meth:`results`)."""
        layout = self.layout
        if layout.kind == "grid":
            ds = self.store.dataset(lazy=False, layout=layout,
                                    extra_coords=self.space.grid_coords())
            records = store_records(self.store, json.loads(ds.attrs.get("provenance") or "{}"))
            # this scan's own space counts as scanned, recorded or not (yet)
            ds = label_excluded(ds, layout.dims, [*(records or []), self._space_record()])
            return ds if broadcast is None else _broadcast(ds, broadcast)
        if broadcast is not None:
            raise ScanError("broadcast= needs a grid layout; this scan's points form a list "
                            "(zip_, points or sample)")
        pending = pending_columns(self.space, self.store.index())
        if not self.store.exists:
            os.makedirs(self.store.shards_dir, exist_ok=True)
        return self.store.dataset(lazy=False, layout=layout, pending=pending)

    def _space_record(self) -> dict[str, Any]:
        """The scan record of this scan's space (see :mod:`notebookscan.store.scanned`)."""
        cached = getattr(self, "_record_cache", None)
        if cached is not None and cached[0] is self.space:
            return cached[1]
        record = space_record(self.layout.dims, self.space.column_arrays())
        self._record_cache = (self.space, record)
        return record

    def stale(self) -> StaleReport:
        """Stored points of this scan's space that other code computed (the function's
        source differs from the run's that stored them); see ``run(stale=...)``."""
        return find_stale(self.store, self.function, self.space.key_array())

    def status(self) -> dict[str, int]:
        """Counts of the space's points by status: done, failed, missing."""
        keys = self.space.key_array()
        index = self.store.index()
        done = int(index.is_done(keys).sum())
        failed = int(index.is_failed(keys).sum())
        return {"done": done, "failed": failed, "missing": len(keys) - done - failed}


def _result_names(ds: Any) -> list[str]:
    """The result variables of a scan Dataset (not the ``ns_*`` bookkeeping)."""
    return [name for name in ds.data_vars if not str(name).startswith("ns_")]


def _nothing_stored(ds: Any) -> bool:
    """No result variable and no stored point yet: a run's first batch (points that all
    failed are a batch too: their results' names may never come)."""
    if _result_names(ds):
        return False
    return STATUS not in ds or not bool(ds[STATUS].isin(["done", "failed"]).any())


def pending_columns(space: Any, index: StoreIndex) -> dict[str, list[Any]]:
    """Parameters, ``key`` and ``seed`` of the points of ``space`` that ``index`` does not
    hold, column by column (what ``Store.dataset(pending=...)`` shows as missing)."""
    keys = space.key_array()
    missing = np.flatnonzero(~(index.is_done(keys) | index.is_failed(keys)))
    columns = space.column_arrays()
    pending: dict[str, list[Any]] = {name: columns[name][missing].tolist()
                                     for name in space.names}
    pending["key"] = keys[missing].astype(str).tolist()
    pending["seed"] = space.seed_array()[missing].tolist()
    return pending


def settle_stale(report: StaleReport, stale: str | None) -> None:
    """Warn about (``None``) or refuse (``"error"``) stored points from other code."""
    choices = ("stale='reuse' keeps them, stale='recompute' runs them again, or give the "
               "scan a new store")
    if stale == "error":
        raise ScanError(f"{report.message()} Nothing was run. Choose: {choices}.")
    if stale is None:
        warnings.warn(f"{report.message()} They are reused; {choices}.", StaleResultsWarning,
                      stacklevel=3)


def _broadcast(ds: Any, dims: str | Sequence[str]) -> Any:
    from .errors import StoreError

    try:
        return broadcast_excluded(ds, dims)
    except StoreError as exc:
        raise ScanError(str(exc)) from None


def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ScanError(f"{name} must be a positive number, got {value!r}")
