"""The segment source: one task per segment, recordings and checkpoints written by the client.

The run loop (:mod:`notebookscan.run.loop`) runs it, as it runs a plain scan's points.

With ``keep_models``, a task runs a point's next segments back to back in its worker
(:func:`~notebookscan.segments.worker.run_segments`, up to :data:`BATCH_SECONDS`), each
handed back with its own recordings and checkpoint; the point's next task is submitted
as soon as the previous one comes back (with the new state in hand), to the worker that
ran it, where the point's model is still alive (one task per worker in flight, so
nothing runs in between). Without ``keep_models`` a task is one segment, and up to two
segments per worker are in flight, each of a different point. What comes back is
buffered and flushed in this order (the run loop decides when):

1. the recordings of the buffered segments, as one shard of ``segments/shards/``
   (one row per point, link and segment);
2. the checkpoints those segments produced (each an atomic directory), older ones
   pruned;
3. the rows of points that finished (``shards/``, so ``scan.results()`` sees them).

A checkpoint is written only after its segment's recordings are safely stored, so a
resumed point never misses a segment's recordings; at worst a segment runs twice and
its identical rows are de-duplicated by key. The client is the single writer of all of it.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError, ScanError
from ..keys import point_key
from ..results import Value
from ..run.events import EVENTS, Events
from ..run.loop import LoopSettings, Progress, Task
from ..run.points import ResultNames
from ..store import Store
from ..store.checkpoints import CheckpointDirectory, StateError, encode_state
from ..store.schema import (
    SEGMENT_PARAMETERS,
    SEGMENT_POINT_VALUES,
    SEGMENT_ROLE_ATTR,
)
from ..store.shards import Record, shard_from_records
from .protocol import segment_seed
from .worker import SegmentOutcome, SegmentTask, run_segments

__all__ = ["SEGMENT_EVENTS", "SegmentEvents", "SegmentProgress", "SegmentSource"]

SEGMENT_EVENTS = (*EVENTS, "segment_done")
#: With live models, a task runs a point's next segments back to back for up to this
#: many seconds, and at most half the run's ``flush_interval`` (then returns; the point's
#: next task goes back to the same worker). Every segment still comes back with its own
#: checkpoint; it reaches the client at most this much later than one segment at a time
#: would (``flush_interval=0``: every segment is written as soon as it is done, as
#: before). Below the run loop's DEADLINE_GRACE, so a ``timeout`` still ends a task
#: stuck in one segment in time.
BATCH_SECONDS = 1.0


class SegmentEvents(Events):
    """The scan's events plus ``segment_done`` (``point``, ``key``, ``link``, ``segment``,
    ``seconds``, ``worker``), emitted when a segment's recordings and state arrive."""

    def on(self, name: str, callback: Callable[..., Any]) -> None:
        if name not in SEGMENT_EVENTS:
            raise ArgumentError(f"unknown event {name!r}; the events are "
                                f"{', '.join(SEGMENT_EVENTS)}")
        self._subscribers[name].append(callback)


@dataclass
class SegmentProgress(Progress):
    """Counters of a segmented run: points (as for a scan) and segments."""

    segments_total: int = 0
    segments_done: int = 0
    segments_failed: int = 0
    segments_stored: int = 0  # of the running points, already in the store before this run

    @property
    def segment_rate(self) -> float:
        """Segments per second since the run started."""
        return self.segments_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        left = self.segments_total - self.segments_done
        rate = self.segment_rate
        return left / rate if rate > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The counters as a dict (what ``progress`` events carry)."""
        return {**super().as_dict(), "segments_done": self.segments_done,
                "segments_total": self.segments_total, "segment_rate": self.segment_rate}

    def __str__(self) -> str:
        state = "stopped" if self.stopped else ("finished" if self.finished_at else "running")
        return (f"{state}: {self.segments_done}/{self.segments_total} segments; {self.done} "
                f"done, {self.failed} failed, {self.running} running, {self.remaining} "
                f"remaining of {self.total} points ({self.skipped} already complete)")


@dataclass
class Work:
    """One point's way through its links: where it is, and the state to continue from."""

    key: str
    params: dict[str, Any]  # every parameter (stored)
    call: dict[str, Any]  # what the model receives (hidden parameters removed)
    seed: int
    link: int
    count: int  # segments done in ``link``
    state: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    loaded: bool = False  # state/files hold the checkpoint of (link, count)
    needs_transform: bool = False  # link is complete; start link + 1 first
    started: float = 0.0  # when the link's first segment started
    compute: float = 0.0  # seconds spent in the link's segments so far
    worker: str = ""  # the worker that ran its latest segment (and may hold its model)


@dataclass
class Link:
    """One run of a chain: how many segments, and how its start state is made."""

    segments: int
    transform: Callable[..., Any] | None = None


def recording_key(key: str, params: dict[str, Any], link: int, index: int) -> str:
    """The key of one segment's row in the recordings store."""
    return point_key({**params, "link": link, "segment": index})


def summary_to_json(summary: dict[str, Value]) -> dict[str, Any]:
    out = {}
    for name, value in summary.items():
        data = np.asarray(value.data)
        out[name] = {"dims": list(value.dims), "dtype": data.dtype.str if data.dtype.kind != "U"
                     else "str", "data": data.tolist()}
    return out


def summary_from_json(data: dict[str, Any]) -> dict[str, Value]:
    out = {}
    for name, entry in data.items():
        if entry["dtype"] == "str":
            array = np.asarray(entry["data"], dtype=str)
        else:
            array = np.asarray(entry["data"], dtype=np.dtype(entry["dtype"]))
        out[name] = Value(array.item() if array.ndim == 0 else array, tuple(entry["dims"]))
    return out


class SegmentSource:
    """The pending segments of one segmented scan, as tasks for the run loop (a
    ``Source``): one task per segment, a point's next segment handed out as soon as its
    previous one came back. A task's tag is the point's :class:`Work`."""

    task_name = "a segment"
    early_first_flush = False
    # the run's last tasks are out: write what came back while they run (a point's
    # segments come back in batches of up to BATCH_SECONDS, so the final flush of a short
    # run would otherwise write every checkpoint after the last segment)
    flush_when_drained = True

    def __init__(self, *, payload: Any, form: str, names: Sequence[str], works: list[Work],
                 links: list[Link], pass_seed: bool, duration: float | None, store: Store,
                 recordings: Store, checkpoints: CheckpointDirectory,
                 settings: LoopSettings, events: Events, provenance: dict[str, Any],
                 run_id: str, skipped: int, repaired: list[Record], keep_models: bool = True):
        self.payload, self.form = payload, form
        self.names = tuple(names)
        self.links = links
        self.pass_seed, self.duration = pass_seed, duration
        self.store, self.recordings, self.checkpoints = store, recordings, checkpoints
        self.settings, self.events = settings, events
        self.run_id = run_id
        self.keep_models = keep_models
        self.attrs = {"provenance": json.dumps({run_id: provenance}, sort_keys=True)}
        self.progress = SegmentProgress(total=len(works), skipped=skipped)
        self.progress.segments_total = sum(self._remaining(w) for w in works)
        self.progress.segments_stored = sum(w.count for w in works)
        self._ready: deque[Work] = deque(works)
        self._rows: list[Record] = []
        self._checkpoints: list[tuple[str, int, int, bytes, dict[str, bytes], dict[str, Any]]] = []
        self._points: list[Record] = list(repaired)
        self._bytes = 0
        self._handed = 0  # tasks handed out and not received yet
        self._names = ResultNames({*self.names, *SEGMENT_PARAMETERS, "point_key",
                                   *SEGMENT_POINT_VALUES})

    def _remaining(self, work: Work) -> int:
        left = 0 if work.needs_transform else max(0, self.links[work.link].segments - work.count)
        return left + sum(link.segments for link in self.links[work.link + 1:])

    # ---------------------------------------------------------------- handing out

    def start(self) -> dict[str, Any]:
        return {"segments": self.progress.segments_total}

    def pending(self) -> bool:
        return bool(self._ready)

    def next_tasks(self, slots: int, workers: int) -> list[Task]:
        if self.keep_models:
            # one point per worker at a time: a worker's next task is then its point's next
            # segment, which continues the live model there (a second point queued behind
            # it would run in between and put the model out of date)
            slots = min(slots, workers - self._handed)
        tasks: list[Task] = []
        while self._ready and len(tasks) < slots:
            task = self._task(self._ready.popleft())
            if task is not None:
                tasks.append(task)
        self._handed += len(tasks)
        return tasks

    def _task(self, work: Work) -> Task | None:
        """The task of a point's next segment (None: the point failed before it)."""
        try:
            if not work.loaded:
                self._locate(work)
            if work.needs_transform:
                self._start_next_link(work)
        except _PointFailed as failure:
            self._fail_point(work, failure.error, failure.traceback)
            return None
        left = self.links[work.link].segments - work.count
        # a live model may run the rest of its link back to back (see run_segments)
        count = left if self.keep_models else 1
        task = SegmentTask(work.call, self.pass_seed, work.seed, work.key, work.link, work.count,
                           segment_seed(work.seed, work.count, work.link), work.state,
                           work.files, self.duration, self.form, self.settings.timeout,
                           keep=self.keep_models and left > 1, count=count,
                           budget=min(BATCH_SECONDS, self.settings.flush_interval / 2))
        # to the worker that holds the point's live model (it continues from memory)
        worker = work.worker if self.keep_models and work.worker else None
        return Task(run_segments, (self.payload, task), work, worker=worker)

    def split(self, work: Work) -> list[Task]:
        return []  # one segment: nothing to split

    def fail(self, work: Work, error: str) -> None:
        now = time.time()
        self.receive(work, SegmentOutcome("failed", error=error, started=now, finished=now))

    def seconds_left(self) -> float:
        return math.inf

    def _locate(self, work: Work) -> None:
        """Load the checkpoint a resumed point continues from (just before it runs).

        Reading verifies checksums; a corrupt checkpoint is set aside and the point falls
        back to the one before it (or to the previous link, or to a fresh start).
        """
        before = self._remaining(work)
        planned = work.link
        work.state, work.files, work.loaded = None, {}, True
        work.link, work.count, work.needs_transform = 0, 0, False
        for link in range(planned, -1, -1):
            checkpoint = self.checkpoints.latest(work.key, link)
            if checkpoint is None:
                continue
            work.link, work.count = link, checkpoint.count
            work.state, work.files = checkpoint.state_bytes(), checkpoint.files()
            work.started = float(checkpoint.meta.get("started", time.time()))
            work.compute = float(checkpoint.meta.get("compute_seconds", 0.0))
            work.needs_transform = (checkpoint.count >= self.links[link].segments and
                                    link + 1 < len(self.links))
            break
        self.progress.segments_total += self._remaining(work) - before

    def _start_next_link(self, work: Work) -> None:
        """Make the start of ``work.link + 1`` from the final state of ``work.link``."""
        from ..store.checkpoints import decode_state

        link = work.link + 1
        transform = self.links[link].transform
        assert work.state is not None
        try:
            state = decode_state(work.state)
            new = _call_transform(transform, state, work.params, link) if transform else state
            encoded = encode_state(new)
        except StateError as exc:
            raise _PointFailed(f"StateError: the state made for link {link} by "
                               f"{_name(transform)}() cannot be kept: {exc}", "") from None
        except Exception as exc:
            import traceback

            raise _PointFailed(f"TransformError: {_name(transform)}() raised "
                               f"{type(exc).__name__}: {exc} while making the start of link "
                               f"{link}", traceback.format_exc()) from None
        now = time.time()
        meta = {"params": _jsonable(work.params), "point_seed": work.seed, "started": now,
                "finished": now, "compute_seconds": 0.0, "summary": {}, "run": self.run_id,
                "from": {"link": work.link, "count": work.count},
                "transform": _name(transform) if transform else ""}
        self._checkpoints.append((work.key, link, 0, encoded, dict(work.files), meta))
        self._bytes += len(encoded)
        work.link, work.count, work.state = link, 0, encoded
        work.needs_transform, work.loaded = False, True
        work.started, work.compute = now, 0.0

    def receive(self, work: Work, out: SegmentOutcome | list[SegmentOutcome]) -> None:
        """Keep the rows and checkpoint of each segment a task ran, in order; hand out
        the point's next segment."""
        self._handed -= 1
        going_on = False
        for one in out if isinstance(out, list) else [out]:
            going_on = self._accept(work, one)
            one.forget()  # its rows and the work's state hold what is still needed
            if not going_on:
                break  # the point failed or its link is complete: nothing after counts
        if going_on:
            self._ready.appendleft(work)  # depth first: finish started points before new ones

    def _accept(self, work: Work, out: SegmentOutcome) -> bool:
        """Keep one segment's row and checkpoint; True when the point's link goes on."""
        index = work.count
        if out.status == "done":
            problem = self._check_schema(out)
            if problem:
                out = SegmentOutcome("failed", error=problem, started=out.started,
                                     finished=out.finished, host=out.host, worker=out.worker)
        row_params = {**work.params, "link": work.link, "segment": index}
        values: dict[str, Value] = {"point_key": Value(work.key)}
        if out.status == "done":
            values.update(out.recordings)
            values.update(out.summary)
        self._rows.append(Record(
            recording_key(work.key, work.params, work.link, index), row_params,
            segment_seed(work.seed, index, work.link), out.status, values, out.error,
            out.traceback, out.started, out.finished, out.host, out.worker, self.run_id))
        if out.status != "done":
            self.progress.segments_failed += 1
            self._fail_point(work, f"segment {index} (link {work.link}) failed: {out.error}",
                             out.traceback, out)
            return False
        self.progress.segments_done += 1
        self._bytes += out.nbytes
        if index == 0:
            work.started = out.started
        work.compute += out.finished - out.started
        work.count = index + 1
        work.state, work.files, work.loaded = out.state, out.files, True
        work.worker = out.worker
        meta = {"params": _jsonable(work.params), "point_seed": work.seed,
                "started": work.started, "finished": out.finished,
                "compute_seconds": work.compute, "summary": summary_to_json(out.summary),
                "host": out.host, "worker": out.worker, "run": self.run_id}
        self._checkpoints.append((work.key, work.link, work.count, out.state, out.files, meta))
        if self.events.wants("segment_done"):
            self.events.emit("segment_done", point=work.params, key=work.key, link=work.link,
                             segment=index, seconds=out.finished - out.started,
                             worker=out.worker)
        if work.count < self.links[work.link].segments:
            return True
        record = point_row(work, out.summary, out.finished, out.host, out.worker, self.run_id,
                           self.names)
        self._points.append(record)
        if work.link + 1 < len(self.links):
            work.needs_transform = True
            self._ready.appendleft(work)
            return False
        self.progress.done += 1
        work.state, work.files = None, {}
        if self.events.wants("point_done"):
            self.events.emit("point_done", point=work.params, key=work.key, record=record)
        return False

    def _fail_point(self, work: Work, error: str, traceback: str,
                    out: SegmentOutcome | None = None) -> None:
        now = time.time()
        record = Record(work.key, {n: work.params[n] for n in self.names}, work.seed, "failed",
                        {}, error, traceback, out.started if out else now,
                        out.finished if out else now, out.host if out else "",
                        out.worker if out else "", self.run_id)
        self._points.append(record)
        self.progress.failed += 1
        self.progress.segments_total -= self._remaining(work)
        work.state, work.files, work.worker = None, {}, ""
        if self.events.wants("point_failed"):
            self.events.emit("point_failed", point=work.params, key=work.key, record=record)

    def _check_schema(self, out: SegmentOutcome) -> str:
        for role, values in (("recording", out.recordings), ("summary", out.summary)):
            for name, value in values.items():
                problem = self._names.problem(name, value.dims, role)
                if problem:
                    return problem
        return ""

    # ---------------------------------------------------------------- flushing

    def buffered(self) -> tuple[int, int]:
        return len(self._rows) + len(self._checkpoints) + len(self._points), self._bytes

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        checkpoints, self._checkpoints = self._checkpoints, []
        points, self._points = self._points, []
        self._bytes = 0
        n_rows, n_checkpoints = len(rows), len(checkpoints)
        shard = None
        if rows:
            data = shard_from_records((*self.names, *SEGMENT_PARAMETERS), rows, self.attrs)
            for name in data.results:
                data.result_attrs[name][SEGMENT_ROLE_ATTR] = self._names.roles.get(name, "point")
            shard = self.recordings.write(data)
            del data
        for key, link, count, state, files, meta in checkpoints:
            self.checkpoints.write(key, link, count, state, files, meta)
            self.checkpoints.prune(key, link, self.settings.keep_checkpoints)
        del rows, checkpoints
        if points:
            # a point whose links finished since the last flush: one row, as reading
            # would choose it (done beats failed, then the later); a shard holds each key once
            best: dict[str, Record] = {}
            for record in points:
                held = best.get(record.key)
                if held is None or record.status == "done" or held.status != "done":
                    best[record.key] = record
            points = list(best.values())
            self.store.write(shard_from_records(self.names, points, self.attrs))
            self.progress.shards += 1
        if shard is not None or points:
            self.events.emit("flushed", shard=shard, points=len(points), segments=n_rows,
                             checkpoints=n_checkpoints)

    def refresh(self) -> None:
        pass  # segmented stores have one writer

    def commit(self) -> None:
        pass  # no journal yet: a killed client re-runs the segments since the last flush

    def compact(self) -> None:
        if len(self.store.shard_files()) > self.settings.compact_above:
            self.store.compact()
        if len(self.recordings.shard_files()) > 8 * self.settings.compact_above:
            # only small shards, so compaction never holds much in memory
            self.recordings.compact(max_shard_bytes=2 * 2**20,
                                    max_total_bytes=self.settings.flush_bytes)

    def close(self) -> None:
        pass

    def waiting(self) -> float:
        return 0.0  # segmented runs take no leases: nothing held elsewhere to wait for

    def seconds_to_beat(self) -> float:
        return math.inf

    def heartbeat(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {"segments": self.progress.segments_done}


class _PointFailed(ScanError):
    def __init__(self, error: str, traceback: str):
        super().__init__(error)
        self.error, self.traceback = error, traceback


def point_row(work: Work, summary: dict[str, Value], finished: float, host: str, worker: str,
              run_id: str, names: Sequence[str]) -> Record:
    """The row of a point whose link reached its target (into the main store)."""
    values = dict(summary)
    values["segments"] = Value(int(work.count))
    values["link"] = Value(int(work.link))
    values["compute_seconds"] = Value(float(work.compute))
    return Record(work.key, {n: work.params[n] for n in names}, work.seed, "done", values, "",
                  "", work.started, finished, host, worker, run_id)


def _call_transform(transform: Callable[..., Any], state: dict[str, Any],
                    params: dict[str, Any], link: int) -> Any:
    kwargs: dict[str, Any] = {}
    try:
        accepted = inspect.signature(transform).parameters
    except (TypeError, ValueError):
        accepted = {}
    if "point" in accepted:
        kwargs["point"] = dict(params)
    if "link" in accepted:
        kwargs["link"] = link
    return transform(state, **kwargs)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
