"""SegmentedScan: long simulations in segments, with checkpoints, resume, extend and chains.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> import notebookscan as ns
>>> from notebookscan.segments import Segment
>>> def ramp(rate: float, segments):
...     total = 0.0 if segments.state is None else segments.state["total"]
...     for segment in segments:
...         x = total + rate * np.arange(1, 5)
...         total = float(x[-1])
...         yield Segment({"x": x}, state={"total": total}, time=4 * segment.index + np.arange(4))
>>> scan = ns.Scan(ramp, ns.grid(rate=[1.0, 2.0]), tempfile.mkdtemp(), segments=3)
>>> type(scan).__name__, isinstance(scan, ns.Scan)
('SegmentedScan', True)
>>> print(scan.run(executor="serial", progress=False).progress)
finished: 6/6 segments; 2 done, 0 failed, 0 running, 0 remaining of 2 points (0 already complete)
>>> scan.recordings().x.sel(rate=2.0).values[-3:].tolist()
[20.0, 22.0, 24.0]
>>> print(scan.extend(segments=1, executor="serial", progress=False).progress)
finished: 2/2 segments; 2 done, 0 failed, 0 running, 0 remaining of 2 points (0 already complete)
>>> scan.results().segments.values.tolist()
[4, 4]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ScanError
from ..executors import resolve_executor
from ..keys import point_key
from ..run import detached
from ..run.bars import feed_bar, make_bar
from ..run.detached import DetachedRun
from ..run.handle import ScanRun
from ..run.loop import LoopSettings
from ..run.provenance import collect, run_id
from ..scan import Scan, settle_stale
from ..store import Store
from ..store.checkpoints import Checkpoint
from ..store.schema import SEGMENT_PARAMETERS, Layout
from .protocol import RESERVED_PARAMETERS, is_segmented_model, model_form, signature_for_space
from .source import (
    Link,
    SegmentEvents,
    SegmentSource,
    Work,
    point_row,
    recording_key,
    summary_from_json,
)

__all__ = ["SegmentedScan"]

SEGMENTS_DIR = "segments"


class SegmentedScan(Scan):
    """Run a segmented model over every point of a space, segment by segment.

    Made by ``ns.Scan(model, space, store, segments=N)`` when ``model`` is segmented; it
    is a :class:`~notebookscan.Scan` (``refine``, ``results``, ``stale``, ``widget``,
    ``stop``/``wait``/``await`` work as there) with segments, checkpoints, recordings,
    ``extend`` and ``chain`` added.

    Parameters
    ----------
    function
        A generator function taking ``segments`` (``def model(..., segments): ... for
        segment in segments: ... yield Segment(...)``), or a class built from the
        point's parameters with ``init()`` and ``advance(state, segment)`` (see
        :mod:`notebookscan.segments.protocol`).
    space
        The parameter points (``ns.grid``, ``ns.sample``, ...).
    store
        The store directory. Points' rows go to ``shards/`` as in a plain scan;
        per-segment recordings to ``segments/shards/``; checkpoints to
        ``segments/checkpoints/``.
    segments
        How many segments each point runs.
    segment_duration
        Model time per segment; the model sees ``segment.t_start``/``t_stop`` and
        :meth:`extend` accepts ``duration=``.
    keep_checkpoints
        How many of each point's newest checkpoints to keep (``None``: all). The final
        checkpoint of every link is always kept.
    keep_models
        Keep each point's model alive in its worker between segments (default): the next
        segment goes to the same worker (ipyparallel engines; serial trivially; a process
        pool's process uses it when it gets the point again) and continues from memory.
        A point whose worker changed or died restores from its checkpoint, which is still
        written after every segment. Both paths give identical results for a model whose
        ``state`` and files hold everything it needs (:func:`check_resumable`). A task
        then runs a point's next segments back to back in its worker (for up to 1 s and
        half the ``flush_interval``), each still handed back with its own recordings and
        checkpoint. False:
        every segment is a task of its own and restores from the checkpoint.

    Examples
    --------
    >>> import tempfile
    >>> import notebookscan as ns
    >>> from notebookscan.demo_network import lif_network, rebalance
    >>> scan = ns.Scan(lif_network, ns.grid(g=[3.0, 5.0]), tempfile.mkdtemp(),
    ...                segments=3, segment_duration=0.01)
    >>> scan.run(executor="serial", progress=False).progress.done
    2
    >>> scan.recordings().v.sizes["time"]
    30
    """

    @classmethod
    def handles(cls, function: Any) -> bool:
        """A generator function or a class with ``init``/``advance`` runs in segments."""
        return is_segmented_model(function)

    def __init__(self, function: Any, space: Any, store: str | os.PathLike[str], *,
                 segments: int | None = None, segment_duration: float | None = None,
                 keep_checkpoints: int | None = 1, keep_models: bool = True):
        self.form = model_form(function)
        if segments is None:
            raise ScanError("a segmented model needs the number of segments per point: "
                            "ns.Scan(model, space, store, segments=N)")
        _check_count("segments", segments)
        if segment_duration is not None and not segment_duration > 0:
            raise ScanError(f"segment_duration must be a positive model time, got "
                            f"{segment_duration!r}")
        if keep_checkpoints is not None:
            _check_count("keep_checkpoints", keep_checkpoints)
        clash = sorted(RESERVED_PARAMETERS & set(space.names))
        if clash:
            raise ScanError(f"the space sets {clash}, which a segmented scan uses itself "
                            f"({', '.join(sorted(RESERVED_PARAMETERS))}); rename them, e.g. "
                            f"{clash[0]}_.")
        self._bind(function, space, store, SegmentEvents())
        self.recordings_store = Store(os.path.join(self.store.path, SEGMENTS_DIR))
        self.checkpoints = self.store.checkpoints
        self.segment_duration = None if segment_duration is None else float(segment_duration)
        self.keep_checkpoints = keep_checkpoints
        self.keep_models = bool(keep_models)
        self.links = [Link(int(segments))]

    def _signature(self) -> Any:
        return signature_for_space(self.function)

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        plan = " → ".join(str(link.segments) for link in self.links)
        return (f"<SegmentedScan {name} over {self.space!r}, {plan} segment(s) into "
                f"{self.store.path}>")

    @property
    def segments(self) -> int:
        """Segments of the first run (link 0)."""
        return self.links[0].segments

    # ------------------------------------------------------------ planning

    def _done_rows(self) -> dict[str, tuple[int, int]]:
        """Key -> (link, segments) of the points' rows in the main store."""
        if not self.store.shard_files():
            return {}
        table = self.store.table()
        status = table.bookkeeping.get("status")
        links = table.results.get("link")
        counts = table.results.get("segments")
        if links is None or counts is None or status is None:
            return {}
        return {key: (int(links[i]), int(counts[i]))
                for i, key in enumerate(table.bookkeeping["key"].tolist())
                if status[i] == "done"}

    def _position(self, key: str) -> tuple[int, int]:
        """(link, segments done in it) from the checkpoints on disk (not yet verified)."""
        for link in range(len(self.links) - 1, -1, -1):
            counts = self.checkpoints.counts(key, link)
            if counts:
                return link, counts[-1]
        return 0, 0

    def _plan(self, retry_failed: bool) -> tuple[list[Work], int, int, list[Any]]:
        keys = self.space.keys()
        seeds = self.space.seeds()
        columns = self.space.columns()
        names = list(self.space.names)
        hidden = self._hidden()
        failed_rows = self.recordings_store.index().failed if self.recordings_store.exists \
            else set()
        rows = self._done_rows()
        works: list[Work] = []
        repaired = []
        complete = failed_before = 0
        last = len(self.links) - 1
        for i, key in enumerate(keys):
            params = {name: columns[name][i] for name in names}
            link, count = self._position(key)
            work = Work(key, params, {k: v for k, v in params.items() if k not in hidden},
                        seeds[i], link, count)
            if count >= self.links[link].segments:
                if link == last:
                    complete += 1
                    if rows.get(key) != (link, count):
                        record = self._row_from_checkpoint(work)
                        if record is not None:
                            repaired.append(record)
                    continue
                work.needs_transform = True
            next_key = (recording_key(key, params, link + 1, 0) if work.needs_transform
                        else recording_key(key, params, link, count))
            if next_key in failed_rows and not retry_failed:
                failed_before += 1
                continue
            works.append(work)
        return works, complete, failed_before, repaired

    def _row_from_checkpoint(self, work: Work) -> Any:
        checkpoint = self.checkpoints.latest(work.key, work.link, verify=False)
        if checkpoint is None:
            return None
        meta = checkpoint.meta
        work.count = checkpoint.count
        work.started = float(meta.get("started", 0.0))
        work.compute = float(meta.get("compute_seconds", 0.0))
        return point_row(work, summary_from_json(meta.get("summary", {})),
                         float(meta.get("finished", 0.0)), meta.get("host", ""),
                         meta.get("worker", ""), meta.get("run", ""), self.space.names)

    # ------------------------------------------------------------ running

    def run(self, executor: Any = None, *,  # type: ignore[override]
            progress: bool | None = None, wait: bool | None = None, detach: bool = False,
            retry_failed: bool = False, flush_every: int = 10_000, flush_interval: float = 2.0,
            flush_bytes: int = 8 * 2**20, max_retries: int = 2, timeout: float | None = None,
            chunk_size: int | None = None, writer: str = "auto",
            stale: str | None = None) -> ScanRun | DetachedRun:
        """Bring every point of the space to its target number of segments.

        Points continue from their newest checkpoint (after a crash, a ``stop()``, or on
        another machine); complete points are skipped. The options are those of
        :meth:`notebookscan.Scan.run`, with these differences:

        Parameters
        ----------
        progress
            Show a progress bar counting segments.
        retry_failed
            Also run points whose next segment failed before.
        flush_every, flush_interval, flush_bytes
            Write recordings, checkpoints and finished points every this many segments,
            seconds, or as soon as this many bytes are buffered (the client holds at most
            about that much, or one segment if it is bigger).
        max_retries
            How often a segment whose worker died is re-submitted.
        timeout
            Seconds after which a segment is stopped and its point recorded as failed
            (as for :meth:`notebookscan.Scan.run`).
        detach
            As for :meth:`notebookscan.Scan.run`: the run goes on in a background process
            that outlives this one; ``ns.attach(store)`` gives its handle.
        chunk_size, writer, stale
            Not available for segmented scans: a ``chunk_size`` (a task is one segment),
            ``writer="workers"`` (the client writes everything) and
            ``stale="recompute"`` raise :class:`ScanError`.
        """
        self._check_run(flush_every=flush_every, flush_interval=flush_interval,
                        flush_bytes=flush_bytes, timeout=timeout, chunk_size=chunk_size,
                        max_retries=max_retries, writer=writer, stale=stale)
        refused = {"chunk_size": chunk_size is not None,
                   "writer='workers'": writer == "workers", "stale='recompute'":
                   stale == "recompute"}
        if any(refused.values()):
            raise ScanError(f"{', '.join(k for k, v in refused.items() if v)}: not available "
                            "for segmented scans; run without it (scan.run())")
        if detach:
            return detached.start(self, executor, {
                "retry_failed": retry_failed, "flush_every": flush_every,
                "flush_interval": flush_interval, "flush_bytes": flush_bytes,
                "max_retries": max_retries, "timeout": timeout,
                "stale": "reuse" if stale is None else stale})
        if stale != "reuse" and self.store.shard_files():
            report = self.stale()
            if report:
                settle_stale(report, stale)
        self.store.prepare(self.layout, self.space.names, self.space.attrs)
        self.recordings_store.prepare(Layout("points", (*self.space.names, *SEGMENT_PARAMETERS)),
                                      [*self.space.names, *SEGMENT_PARAMETERS],
                                      self.space.attrs)
        self.checkpoints.remove_dead_temporaries()
        works, complete, failed_before, repaired = self._plan(retry_failed)
        if failed_before:
            warnings.warn(f"{failed_before} point(s) failed in earlier runs and are not run "
                          "again; pass retry_failed=True to run them.", stacklevel=2)
        executor_obj, owned = resolve_executor(executor)
        record = collect(self.function, executor=executor_obj.description, space=self.space)
        record["segments"] = {"links": [link.segments for link in self.links],
                              "segment_duration": self.segment_duration,
                              "transforms": [getattr(link.transform, "__qualname__", "")
                                             for link in self.links]}
        settings = LoopSettings(flush_every=flush_every, flush_interval=flush_interval,
                                flush_bytes=int(flush_bytes),
                                max_retries=max_retries, timeout=timeout, compact_above=8,
                                keep_checkpoints=self.keep_checkpoints)
        source = SegmentSource(
            payload=self._payload(executor_obj), form=self.form, names=self.space.names,
            works=works, links=self.links, pass_seed=self._pass_seed(),
            duration=self.segment_duration, store=self.store,
            recordings=self.recordings_store, checkpoints=self.checkpoints,
            settings=settings, events=self.events, provenance=record,
            run_id=run_id(record), skipped=complete, repaired=repaired,
            keep_models=self.keep_models)
        return self._launch(source, executor_obj, owned, settings, wait, progress)

    def _progress_bar(self) -> Any:
        return _progress_bar(self.events)

    def extend(self, segments: int | None = None, *, duration: float | None = None,
               **run_options: Any) -> ScanRun:
        """Add segments to the last run of every point and run only those.

        Points continue from their final checkpoint. If the extension is interrupted,
        :meth:`run` (or calling ``extend`` with the same numbers on a fresh scan object
        built like this one) resumes it.

        Parameters
        ----------
        segments
            How many segments to add.
        duration
            Model time to add (a whole number of ``segment_duration``), instead of
            ``segments``.
        **run_options
            Passed to :meth:`run` (``executor=``, ``progress=``, ...).
        """
        if (segments is None) == (duration is None):
            raise ScanError(f"extend() takes segments= or duration=, got segments={segments!r}, "
                            f"duration={duration!r}")
        if duration is not None:
            if self.segment_duration is None:
                raise ScanError("extend(duration=...) needs the scan's segment_duration; pass "
                                "SegmentedScan(..., segment_duration=...) or use segments=")
            segments = round(duration / self.segment_duration)
            if segments < 1 or abs(segments * self.segment_duration - duration) > \
                    1e-9 * max(duration, self.segment_duration):
                raise ScanError(f"duration={duration!r} is not a whole number of segments of "
                                f"{self.segment_duration!r}; pass a multiple of it.")
        assert segments is not None
        _check_count("segments", segments)
        self.links[-1].segments += int(segments)
        return self.run(**run_options)

    def chain(self, transform: Callable[..., Any] | None, runs: int, *,
              segments: int | None = None, **run_options: Any) -> ScanRun:
        """Run each point again from its final state, transformed, ``runs`` times in all.

        Run ``k + 1`` (link ``k + 1``) of a point starts from the final state of run
        ``k``, passed through ``transform(state)`` in this process (it may also take
        ``point=`` and ``link=``), e.g. to halve the strongest weight. Files handed over
        with the state carry over unchanged. Every run's recordings are kept; see
        :meth:`recordings` (``link=``). Calling ``chain`` again with the same ``runs``
        resumes an interrupted chain; a larger ``runs`` adds links.

        Parameters
        ----------
        transform
            ``state -> state`` between runs (``None``: continue unchanged).
        runs
            The number of runs in the chain, the first one included.
        segments
            Segments per added run (default: as many as the first run).
        """
        _check_count("runs", runs)
        size = int(segments if segments is not None else self.links[0].segments)
        _check_count("segments", size)
        while len(self.links) < runs:
            self.links.append(Link(size, transform))
        return self.run(**run_options)

    # ------------------------------------------------------------ results

    def recordings(self, *, link: int | None = None,
                   variables: list[str] | None = None) -> Any:
        """The points' recordings, each segment joined to the next along its time axis.

        See :func:`notebookscan.segments.open_recordings`.
        """
        from ..store.recordings import open_recordings

        return open_recordings(self.store.path, link=link, variables=variables)

    def checkpoint(self, point: Mapping[str, Any] | str, *, link: int | None = None
                   ) -> Checkpoint | None:
        """The newest checkpoint of a point (a parameter dict or its key), or None.

        ``checkpoint.state()`` decodes the state; ``checkpoint.file_paths()`` lists the
        files the model handed over.
        """
        key = point if isinstance(point, str) else point_key(point)
        if link is None:
            links = self.checkpoints.links(key)
            if not links:
                return None
            link = links[-1]
        return self.checkpoints.latest(key, link)

    def state(self, point: Mapping[str, Any] | str, *, link: int | None = None
              ) -> dict[str, Any]:
        """The newest state of a point, decoded (raises if it has none yet)."""
        checkpoint = self.checkpoint(point, link=link)
        if checkpoint is None:
            raise ScanError(f"no checkpoint of the point {point!r}"
                            f"{'' if link is None else f' in link {link}'} in "
                            f"{self.store.path}; run the scan first")
        return checkpoint.state()

    def status(self) -> dict[str, int]:
        """Counts of the space's points: complete, partial, failed, not started; segments."""
        failed = self.recordings_store.index().failed if self.recordings_store.exists else set()
        out = {"complete": 0, "partial": 0, "failed": 0, "not_started": 0, "segments_done": 0,
               "segments_total": 0}
        columns = self.space.columns()
        total = sum(link.segments for link in self.links)
        for i, key in enumerate(self.space.keys()):
            params = {name: columns[name][i] for name in self.space.names}
            link, count = self._position(key)
            done = sum(lk.segments for lk in self.links[:link]) + min(
                count, self.links[link].segments)
            out["segments_done"] += done
            out["segments_total"] += total
            if done >= total:
                out["complete"] += 1
            elif recording_key(key, params, link, count) in failed:
                out["failed"] += 1
            elif done or link:
                out["partial"] += 1
            else:
                out["not_started"] += 1
        return out


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScanError(f"{name} must be a positive int, got {value!r}")


def _progress_bar(events: SegmentEvents) -> Any:
    """A tqdm bar counting segments, fed by the scan's events."""
    bar = make_bar(total=0, unit="seg", desc="segments", leave=True, mininterval=0.5)

    def started(segments: int = 0, skipped: int = 0, **_: Any) -> None:
        bar.reset(total=segments)
        if skipped:
            bar.set_postfix_str(f"{skipped} point(s) already complete")

    def progress(segments_done: int = 0, segments_total: int = 0, done: int = 0,
                 failed: int = 0, total: int = 0, **_: Any) -> None:
        if segments_total != bar.total:
            bar.reset(total=segments_total)  # a notebook bar's widget learns its length so
        bar.n = segments_done
        text = f"points {done}/{total}" + (f", {failed} failed" if failed else "")
        bar.set_postfix_str(text, refresh=False)
        bar.refresh()

    return feed_bar(bar, events, started, progress)
