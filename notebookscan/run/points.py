"""The point-chunk source: a plain scan's points, run in chunks by the run loop.

Points go out in chunks whose size adapts to the measured time per point
(:class:`_Chunker`); a chunk's results come back as columns
(:class:`~notebookscan.run.worker.ChunkResult`) and wait in a :class:`~notebookscan.run.batch.Batch`
for the next shard.

A received chunk counts (progress, ``point_done`` events, the batch of the next shard)
only once it is durable: the chunks that arrive together are appended to the writer's
journal as one record and fsynced (:mod:`notebookscan.store.journal`), so a killed
client recomputes only the points that were still in flight. The shard written at the
next flush empties the journal.

Runs on one store share the work (:mod:`notebookscan.store.leases`): a chunk's keys are
leased before it is handed out and released once its points are in a shard; the points
another live run holds wait for it, and are taken over when its runner dies.
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import ScanError, StoreWarning
from ..store import Store
from ..store.journal import Journal, JournalUnsupported, fold_journals
from ..store.leases import LEASE_KEYS, Runner
from ..store.schema import is_reserved
from ..store.shards import Record, publish_shard, published_name
from .batch import Batch, ShardSink
from .events import Events
from .loop import LoopSettings, Progress, Task
from .worker import ChunkResult, PointColumns, run_chunk

__all__ = ["PointSource", "ResultNames"]

MIN_CHUNK_SECONDS = 0.01  # tasks shipped to workers hold at least this much work
MAX_CHUNK = 5_000  # points per task at most, so a chunk's points and results stay small in memory
CHUNK_BYTES = 32 * 2**20  # results per task at most (big arrays: fewer points per task;
# more than compaction's small shards, so a big-results run is not rewritten at its end)
IN_PROCESS_CHUNK_BYTES = 24 * 2**20  # the loop runs two at submit: one shard of ~48 MB
RUN_COMPACT_BYTES = 4 * 2**20  # shards the end of a run compacts, at most
# shard data combined per pass at the end of a run (one shard written per pass): the
# client still holds the run's memory, and a pass adds ~2x this (see store/compaction.py);
# 100 000 scalar points end in ~3 shards (8 MiB: 2 shards, ~4 MiB more at the peak)
RUN_COMPACT_MEMORY = 4 * 2**20
WORKER_WRITE_BYTES = 2**20  # with writer="auto", workers write chunks of results this big


class _Chunker:
    """Chunk sizes that adapt to the measured time per point (aiming at ~0.2 s a chunk)."""

    def __init__(self, settings: LoopSettings, workers: int, min_seconds: float = 0.0,
                 max_bytes: int = CHUNK_BYTES):
        self.target = settings.chunk_seconds
        self.max_bytes = max_bytes
        self.min_seconds = min_seconds  # the least work worth a task (shipping costs)
        self.fixed = settings.chunk_size
        self.workers = max(1, workers)
        self.seconds_per_point: float | None = None
        self.bytes_per_point = 0.0

    def observe(self, results: ChunkResult) -> None:
        if not len(results):
            return
        elapsed = max(float(results.finished[-1] - results.started[0]), 1e-7)
        per_point = elapsed / len(results)
        old = self.seconds_per_point
        self.seconds_per_point = per_point if old is None else 0.5 * (old + per_point)
        self.bytes_per_point = max(self.bytes_per_point, results.nbytes / len(results))

    def seconds_left(self, points: int) -> float:
        """Estimated time the workers need for ``points`` more points (inf until measured)."""
        if self.seconds_per_point is None:
            return math.inf
        return self.seconds_per_point * points / self.workers

    def next_size(self, remaining: int) -> int:
        if self.fixed:
            return self.fixed
        if self.seconds_per_point is None:
            return 1
        per_point = max(self.seconds_per_point, 1e-7)
        size = int(self.target / per_point)
        fair = math.ceil(remaining / (2 * self.workers))  # keep every worker busy to the end
        # ...but a task of less work than min_seconds costs more to ship than it saves
        fair = max(fair, math.ceil(self.min_seconds / per_point))
        by_bytes = int(self.max_bytes / self.bytes_per_point) if self.bytes_per_point else size
        return max(1, min(size, fair, by_bytes, MAX_CHUNK, remaining))


class _Pending:
    """Positions of the points not yet submitted, taken from the front a chunk at a time."""

    def __init__(self, positions: np.ndarray):
        self._positions = positions
        self._next = 0

    def __len__(self) -> int:
        return len(self._positions) - self._next

    def __bool__(self) -> bool:
        return len(self) > 0

    def take(self, size: int) -> np.ndarray:
        chunk = self._positions[self._next:self._next + size]
        self._next += len(chunk)
        return chunk

    def rest(self) -> np.ndarray:
        return self._positions[self._next:]

    def add(self, positions: np.ndarray) -> None:
        """Put ``positions`` back (points to run after all)."""
        self._positions, self._next = np.concatenate([self.rest(), positions]), 0

    def drop(self, mask: np.ndarray) -> int:
        """Forget the remaining points where ``mask`` (aligned with :meth:`rest`) is true."""
        dropped = int(mask.sum())
        if dropped:
            self._positions, self._next = self.rest()[~mask], 0
        return dropped


class ResultNames:
    """The names and dims of a run's results so far, checked as results arrive.

    A result keeps its dims (and its role: result, recording, summary) from one point
    or segment to the next; neither it nor its dims may be named like a parameter
    (``taken``) or a reserved name.
    """

    def __init__(self, taken: Iterable[str]):
        self.taken = frozenset(taken)
        self.dims: dict[str, tuple[str, ...]] = {}
        self.roles: dict[str, str] = {}

    def problem(self, name: str, dims: tuple[str, ...], role: str = "result") -> str:
        """Why ``name`` with ``dims`` cannot be stored ("" when it can)."""
        if name in self.taken or is_reserved(name):
            return (f"ResultError: the {role} name {name!r} is also a parameter or a "
                    "reserved name; rename it in what the function returns")
        if self.roles.setdefault(name, role) != role:
            return (f"ResultError: {name!r} is a {role} here but was a {self.roles[name]} "
                    "before; keep each name in one role")
        known = self.dims.setdefault(name, dims)
        if known != dims:
            return (f"ResultError: {role} {name!r} has dims {dims}, but it had {known} "
                    "before; return the same dims every time")
        for dim in dims:
            if dim in self.taken or is_reserved(dim):
                return (f"ResultError: {role} {name!r} has a dim named {dim!r}, which is a "
                        "parameter or a reserved name; rename the dim")
        return ""


class PointSource:
    """The pending points of one plain scan, as chunks for the run loop (a ``Source``).

    A task's tag is the positions of its points in the space's arrays.
    """

    task_name = "a chunk of points"
    early_first_flush = True
    flush_when_drained = False  # its final flush is short: the last chunks' rows

    def __init__(self, *, payload: Callable[..., Any] | bytes, names: Sequence[str],
                 columns: Mapping[str, np.ndarray], keys: np.ndarray, seeds: np.ndarray,
                 todo: np.ndarray, pass_seed: bool, hidden: frozenset[str], store: Store,
                 settings: LoopSettings, events: Events, provenance: dict[str, Any],
                 run_id: str, skipped: int, failed_before: int = 0, in_process: bool = False,
                 shares_filesystem: bool = False, decided_from: Iterable[str] | None = None):
        self.payload = payload
        self.names = tuple(names)
        # the space's own arrays (columns, 20-byte keys, uint32 seeds) and the positions
        # of the points to run: chunks are slices of these, shipped as columns, so the
        # client holds no Python object per point
        self.columns, self.keys, self.seeds = columns, keys, seeds
        self.pass_seed = pass_seed
        self.hidden = hidden  # parameters stored but not passed (e.g. `trial`)
        self.store = store
        self.settings = settings
        self.events = events
        self.run_id = run_id
        self.in_process, self.shares_filesystem = in_process, shares_filesystem
        self.attrs = {"provenance": json.dumps({run_id: provenance}, sort_keys=True)}
        # once a shard holds the run's provenance, workers' shards need not carry it (it
        # lists every axis value, and would travel with every chunk)
        self._provenance_stored = False
        self.progress = Progress(total=len(todo), skipped=skipped, failed_before=failed_before)
        self._todo = _Pending(np.asarray(todo, dtype=np.int64))
        # in this process, the loop's two tasks (one running, one queued) both run at
        # submit and go into one shard: smaller chunks keep the client's memory low
        self._chunker = (_Chunker(settings, 1, 0.0, IN_PROCESS_CHUNK_BYTES) if in_process
                         else _Chunker(settings, 1, MIN_CHUNK_SECONDS))
        self._names = ResultNames(self.names)
        self._batch = Batch()
        self._journal = Journal(store.path)
        self._journal_warned = False
        # chunks received but not yet durable (see commit), with their positions
        self._received: list[tuple[np.ndarray, ChunkResult]] = []
        # shards whose points are known to this run: from start, those ``todo`` was
        # decided from (``StoreIndex.shards``); None (a learner's points, decided from
        # what it was told): the shards listed at start, none of them read again
        self._decided_from = None if decided_from is None else set(decided_from)
        self._seen_shards: set[str] = set()
        # runs sharing the store: this run's runner, the leases it holds [sorted
        # positions, lease file, points not yet in a shard], the chunks counted since the
        # last flush, and the points other runners hold
        self._runner = Runner(store.path, run_id)
        self._held: list[list[Any]] = []
        self._unflushed: list[np.ndarray] = []
        self._elsewhere = np.empty(0, dtype=np.int64)
        self._leases_warned = False
        # big results: the shards being fsynced in a thread while the next points run,
        # and the chunks whose shards workers on this host wrote but did not publish
        self._publisher: ThreadPoolExecutor | None = None
        self._publishing: collections.deque[tuple[Any, ...]] = collections.deque()
        self._unpublished: list[tuple[np.ndarray, ChunkResult]] = []

    # ---------------------------------------------------------------- handing out

    def start(self) -> dict[str, Any]:
        # the shards the points to run were decided from: any other is read for points
        # another writer stored meanwhile (a shard may land between that and this)
        self._seen_shards = (set(self.store.shard_files()) if self._decided_from is None
                             else set(self._decided_from))
        # a run that started and ended since then holds no lease to tell of its shard
        self._drop_done_elsewhere()
        self.store.register_run(self.run_id)  # its place in the store's order of runs
        self._runner.start(self._runner_status())  # `notebookscan status` shows it at once
        return {}

    def pending(self) -> bool:
        return bool(self._todo)

    def next_tasks(self, slots: int, workers: int) -> list[Task]:
        self._chunker.workers = max(1, workers)
        tasks = []
        while len(tasks) < slots and self._todo:
            chunk = self._choose(self._chunker.next_size(len(self._todo)))
            if len(chunk):
                tasks.append(self._task(chunk))
        return tasks

    def _choose(self, size: int) -> np.ndarray:
        """The positions of the next chunk's points: at most ``size`` taken from the
        pending ones, less those another run holds or stored (possibly none)."""
        return self._claim(self._todo.take(size))

    def _task(self, chunk: np.ndarray) -> Task:
        points = PointColumns({name: self.columns[name][chunk] for name in self.names})
        return Task(run_chunk, (self.payload, points, self.seeds[chunk], self.pass_seed,
                                self.settings.timeout, self.hidden, self._sink(chunk)),
                    chunk, len(chunk))

    def _sink(self, chunk: np.ndarray) -> ShardSink | None:
        """Where the worker writes its results itself, if it should (see ``writer``)."""
        writer = self.settings.writer
        if writer == "client" or self.in_process:
            return None  # in-process workers gain nothing from writing themselves
        if writer == "auto" and not self.shares_filesystem:
            return None
        return ShardSink(self.store.shards_dir, self.names, self.keys[chunk],
                         self.run_id, {} if self._provenance_stored else self.attrs,
                         0 if writer == "workers" else WORKER_WRITE_BYTES,
                         (socket.gethostname(), os.getpid()))

    def split(self, chunk: np.ndarray) -> list[Task]:
        if len(chunk) < 2:
            return []
        half = len(chunk) // 2
        return [self._task(chunk[:half]), self._task(chunk[half:])]

    def fail(self, chunk: np.ndarray, error: str) -> None:
        self.receive(chunk, ChunkResult.failed(len(chunk), error, time.time()))

    def seconds_left(self) -> float:
        return self._chunker.seconds_left(len(self._todo) + self.progress.running)

    # ---------------------------------------------------------------- receiving

    def point(self, index: int) -> dict[str, Any]:
        """The parameters of the point at ``index`` of the space, as plain Python values."""
        return {name: self.columns[name].item(index) for name in self.names}

    def receive(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """Check a chunk's results; count them at once when the worker stored them, else
        keep them until :meth:`commit` has made them durable."""
        self._chunker.observe(results)
        for i, problem in self._schema_problems(results):
            results.fail(i, problem)
        # a column no point still holds (its name clashes, its dims changed) is dropped
        for name in [n for n, (_, present) in results.scalars.items() if not present.any()]:
            del results.scalars[name]
        for name in [n for n, values in results.arrays.items()
                     if all(v is None for v in values)]:
            del results.arrays[name]
        if results.written and published_name(results.written):
            # written by a worker on this host, not yet durable: published with the
            # next commit, counted once it is
            self._unpublished.append((chunk, results))
        elif results.written:
            self._count(chunk, results)
            self._announce(chunk, results)
            results.forget()  # the worker stored it: only the counts were needed
        else:
            self._received.append((chunk, results))

    def commit(self) -> None:
        """Append the chunks received since the last commit to the journal as one record,
        fsync it, then count them. Chunks of 1 MiB of results or more, and chunks the
        journal cannot hold (a column of objects other than text; a journal that cannot
        be written) are written as a shard at once instead."""
        self._settle(wait=False)  # count the shards published meanwhile
        if self._received and (sum(results.nbytes for _, results in self._received)
                               >= WORKER_WRITE_BYTES):
            self._write_big()  # big results: written once into a shard, not journal then shard
            return
        self._publish_in_background([], None)  # the workers' shards, if any
        if not self._received:
            return
        # a pending shard of this process empties the journal once published: the
        # record below must not be appended before that
        self._settle(wait=True, own_only=True)
        received = self._received
        batch = Batch()
        for chunk, results in received:
            batch.add(chunk, results)
        try:
            # the record carries the run's provenance until a shard holds it
            shard = batch.to_shard(self.names, self.columns, self.keys, self.seeds,
                                   self.run_id, {} if self._provenance_stored else self.attrs)
            self._journal.append(shard)
            self._journal.sync()
        except (JournalUnsupported, OSError) as exc:
            self._warn_journal(exc)
            self.flush()  # takes the received chunks into a shard
            return
        self._received = []
        for chunk, results in received:
            self._count(chunk, results)
            self._announce(chunk, results)

    def _warn_journal(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and not self._journal_warned:
            self._journal_warned = True
            warnings.warn(f"the journal of the store {self.store.path} cannot be written "
                          f"({exc}); this run writes a shard for every group of chunks it "
                          "receives instead (slower, as safe).", StoreWarning, stacklevel=5)

    def _count(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """Count a received chunk: progress, and the batch of the next shard."""
        done = int(results.done.sum())
        self.progress.done += done
        self.progress.failed += len(chunk) - done
        self._lease_counted(chunk, stored=bool(results.written))
        if results.written:  # the worker stored this chunk itself
            self._seen_shards.add(results.written)
            self._provenance_stored = True  # the first chunks' sinks carry it
            self.progress.shards += 1
            self.events.emit("flushed", shard=results.written, points=len(chunk))
        else:
            self._batch.add(chunk, results)

    def _announce(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """``point_done``/``point_failed`` events of a durable chunk."""
        want_done, want_failed = self.events.wants("point_done"), self.events.wants("point_failed")
        if not (want_done or want_failed):
            return
        for i, index in enumerate(chunk.tolist()):
            result = results[i]
            record = Record(self.keys[index].decode(), self.point(index), int(self.seeds[index]),
                            result.status, result.values, result.error, result.traceback,
                            result.started, result.finished, result.host, result.worker,
                            self.run_id)
            if result.status == "done" and want_done:
                self.events.emit("point_done", point=record.params, key=record.key, record=record)
            elif result.status != "done" and want_failed:
                self.events.emit("point_failed", point=record.params, key=record.key,
                                 record=record)

    def _schema_problems(self, results: ChunkResult) -> list[tuple[int, str]]:
        """Points whose results clash with parameters or with earlier points' dims."""
        problems: list[tuple[int, str]] = []
        for name, (_, present) in results.scalars.items():
            problem = self._names.problem(name, ())
            if problem:
                problems.extend((int(i), problem) for i in np.flatnonzero(present))
        for i in range(len(results)):
            if not results.done[i] or not results.arrays:
                continue
            sizes: dict[str, int] = {}
            for name, values in results.arrays.items():
                value = values[i]
                if value is None:
                    continue
                problem = self._names.problem(name, value.dims)
                for dim, size in zip(value.dims, np.shape(value.data), strict=False):
                    if not problem and sizes.setdefault(dim, size) != size:
                        problem = (f"ResultError: dim {dim!r} has size {size} in {name!r} but "
                                   f"{sizes[dim]} in another result of the same point")
                if problem:
                    problems.append((i, problem))
                    break
        return problems

    # ---------------------------------------------------------------- flushing

    def buffered(self) -> tuple[int, int]:
        points = self._batch.points + sum(len(chunk) for chunk, _ in self._received)
        nbytes = self._batch.nbytes + sum(r.nbytes for _, r in self._received)
        return points, nbytes

    def _write_big(self) -> None:
        """Write the batch and the chunks just received as one shard, and let a thread
        make it durable (fsync, rename) while the next points run.

        The shard's HDF5 writing happens here, in the loop's thread under the HDF5 lock;
        only the fsyncs and the rename run in the publishing thread (no HDF5 there). The
        received chunks count (progress, events, leases) and the journal is emptied only
        in :meth:`_settle`, once the shard is durable: a process killed before that
        loses only points it never reported. At most one shard is pending, so memory
        holds the results of one shard being synced and of the points running.
        """
        self._settle(wait=True, own_only=True)
        received, self._received = self._received, []
        batch, self._batch = self._batch, Batch()  # journaled chunks go into it too
        for chunk, results in received:
            batch.add(chunk, results)
        data = batch.to_shard(self.names, self.columns, self.keys, self.seeds, self.run_id,
                              self.attrs)
        problem = self.store.check_forms(data)  # a result whose form changed: stop first
        if problem:
            raise ScanError(problem)
        name, tmp = self.store.write_unpublished(data)
        del data
        if not (self.events.wants("point_done") or self.events.wants("point_failed")):
            # written: the arrays need not wait for the fsync (only the counts do)
            for _, results in received:
                results.arrays = {}
        self._publish_in_background([(tmp, name)], (received, batch))

    def _publish_in_background(self, own: list[tuple[str, str]],
                               mine: tuple[list[Any], Batch] | None) -> None:
        """Publish (fsync, rename) the shards the workers of this host left unpublished
        and ``own`` (temporary path, name) in the publishing thread; :meth:`_settle`
        counts their chunks (and ``mine``: this process's chunks and batch)."""
        workers, self._unpublished = self._unpublished, []
        jobs = list(own)
        for _, results in workers:
            jobs.append((os.path.join(self.store.shards_dir, results.written),
                         published_name(results.written)))
        if not jobs:
            return
        if self._publisher is None:
            self._publisher = ThreadPoolExecutor(1, thread_name_prefix="notebookscan-publish")
        future = self._publisher.submit(_publish_all, self.store.shards_dir, jobs)
        self._publishing.append((future, workers, mine, [name for _, name in own]))

    def _settle(self, wait: bool = True, own_only: bool = False) -> None:
        """Count the chunks of the shards :meth:`_publish_in_background` made durable
        (in the order they were handed over; a failed fsync or rename raises here, and
        nothing of that shard was counted). ``wait``: wait for every pending one (with
        ``own_only``, until none holds this process's own chunks); else only count those
        done already. Workers' shards may pile up (their data is in files, not here);
        this process's own are one at a time (see :meth:`_write_big`)."""
        while self._publishing:
            if own_only and not any(job[2] is not None for job in self._publishing):
                return
            if not wait and not self._publishing[0][0].done():
                return
            self._settle_one(*self._publishing.popleft())

    def _settle_one(self, future: Any, workers: list[tuple[np.ndarray, ChunkResult]],
                    mine: tuple[list[Any], Batch] | None, names: list[str]) -> None:
        future.result()
        for chunk, results in workers:
            results.written = published_name(results.written)
            self._count(chunk, results)
            self._announce(chunk, results)
            results.forget()
        if mine is None:
            return
        received, batch = mine
        for chunk, results in received:
            ok = int(results.done.sum())
            self.progress.done += ok
            self.progress.failed += len(chunk) - ok
            self._lease_counted(chunk, stored=False)
        self._journal.discard()  # its records are in this shard (or earlier ones)
        self._lease_flushed()
        for chunk, results in received:
            self._announce(chunk, results)
        batch.forget()
        self._seen_shards.update(names)
        self._provenance_stored = True
        self.progress.shards += len(names)
        for name in names:
            self.events.emit("flushed", shard=name, points=batch.points)

    def flush(self) -> None:
        """Write the batch, with the chunks received since the last commit (the shard
        makes them durable: they need no journal record), as one shard."""
        self._settle()
        self._publish_in_background([], None)  # the workers' shards, if any
        self._settle()
        received, self._received = self._received, []
        for chunk, results in received:
            self._count(chunk, results)
        if not self._batch:
            return
        batch, self._batch = self._batch, Batch()
        data = batch.to_shard(self.names, self.columns, self.keys, self.seeds, self.run_id,
                              self.attrs)
        problem = self.store.check_forms(data)  # a result whose form changed: stop first
        if problem:
            raise ScanError(problem)
        shard = self.store.write(data)
        self._journal.discard()  # its records are in this shard (or earlier ones)
        self._lease_flushed()  # these points are in a shard now
        for chunk, results in received:
            self._announce(chunk, results)
        batch.forget()
        self._seen_shards.add(shard)
        self._provenance_stored = True
        self.progress.shards += 1
        self.events.emit("flushed", shard=shard, points=batch.points)

    def refresh(self) -> None:
        self._drop_done_elsewhere()

    def _drop_done_elsewhere(self, chunk: np.ndarray | None = None) -> np.ndarray:
        """Skip points that another writer stored meanwhile (two scans, one store), done
        or failed.

        Only shards new since the last look are read (this run's own are known). The
        points other runners held go when stored done or failed; returns which points of
        ``chunk`` (taken from the pending ones to be handed out) are stored done.
        """
        stored = np.zeros(0 if chunk is None else len(chunk), dtype=bool)
        if not (self._todo or len(self._elsewhere) or len(stored)):
            return stored
        new = self.store.new_shards(self._seen_shards)
        if not new:
            return stored
        self._seen_shards.update(new)
        elsewhere = self.store.index_of(new)

        def computed(keys: np.ndarray) -> np.ndarray:
            # a point another run computed during this one, done or failed, is not run
            # again: failing once is its result (retry_failed retries earlier failures)
            return elsewhere.is_done(keys) | elsewhere.is_failed(keys)
        dropped = self._todo.drop(computed(self.keys[self._todo.rest()]))
        if len(self._elsewhere):
            gone = computed(self.keys[self._elsewhere])
            self._elsewhere = self._elsewhere[~gone]
            dropped += int(gone.sum())
        if chunk is not None:
            stored = computed(self.keys[chunk])
            dropped += int(stored.sum())
        if dropped:
            self.progress.total -= dropped
            self.progress.skipped += dropped
        return stored

    def compact(self) -> None:
        """Compact the run's small shards at its end, those of at most
        :data:`RUN_COMPACT_BYTES` (opening one costs more than reading it): shards of
        big results are as cheap to read as one file and are not rewritten here."""
        if self.store.small_shards(RUN_COMPACT_BYTES) > self.settings.compact_above:
            self.store.compact(max_shard_bytes=RUN_COMPACT_BYTES,
                               max_memory_bytes=RUN_COMPACT_MEMORY)

    def close(self) -> None:
        try:
            self._close_publisher()
            self._journal.close()  # removed when empty; else the next run folds it
        finally:
            self._runner.close()  # its leases and record go

    def _close_publisher(self) -> None:
        """Settle a shard still pending (the loop's last flush did, unless it failed)."""
        try:
            if self._publishing and self.progress.error is None:
                self._settle()
        finally:
            if self._publisher is not None:
                self._publisher.shutdown(wait=True)  # a pending rename ends before we do
                self._publisher = None

    def summary(self) -> dict[str, Any]:
        return {}

    # ---------------------------------------------------------------- leases
    # Runs on one store share the work (see notebookscan.store.leases): a chunk's keys
    # are claimed before it is handed out, released once its points are in a shard; the
    # points other live runners hold wait until they are stored, or their runner dies.

    def waiting(self) -> float:
        """Seconds to wait before asking for tasks again while other runners hold points
        of this run and nothing of it is in flight (0: nothing to wait for)."""
        return min(self._runner.period, 0.25) if len(self._elsewhere) else 0.0

    def seconds_to_beat(self) -> float:
        return self._runner.seconds_to_beat()

    def stop_request(self) -> bool | None:
        """A stop asked through the store: True (now), False (finish), None (none)."""
        return self._runner.stop_request

    def heartbeat(self) -> None:
        """Beat when due (the loop wakes at least this often); then take over the points
        of runners found dead (every call while waiting for them)."""
        try:
            beaten = self._runner.beat(self._runner_status())
        except OSError:  # a missed beat: other runners may compute our points too
            beaten = False
        if len(self._elsewhere) and (beaten or not self.progress.running):
            self._take_back()

    def _claim(self, chunk: np.ndarray) -> np.ndarray:
        """The points of ``chunk`` this runner now holds a lease on, and no one stored;
        the points other runners hold are kept aside (``_elsewhere``)."""
        if not len(chunk):
            return chunk
        try:
            free, names = self._runner.claim(self.keys[chunk])
        except OSError as exc:  # leases/ cannot be written (full, read-only): run anyway
            self._warn_leases(exc)
            return chunk
        mine = chunk[free]
        for i, name in enumerate(names):  # a lease file per LEASE_KEYS keys
            part = np.sort(mine[i * LEASE_KEYS:(i + 1) * LEASE_KEYS])
            self._held.append([part, name, len(part)])
        if not free.all():
            self._elsewhere = np.concatenate([self._elsewhere, chunk[~free]])
        if not self._runner.others:
            return mine  # no other runner seen this run: no shard to look for
        # leases first, then shards: a runner releases a lease only after its shard is
        # in place, so a point not leased any more is found stored here
        self._fold_taken_over()
        stored = self._drop_done_elsewhere(mine)
        if stored.any():
            self._lease_stored(mine[stored])
            mine = mine[~stored]
        return mine

    def _warn_leases(self, exc: OSError) -> None:
        if not self._leases_warned:
            self._leases_warned = True
            warnings.warn(f"the leases of the store {self.store.path} cannot be written "
                          f"({exc}); this run computes its points without telling other "
                          "runs on the store, which may compute some of them too.",
                          StoreWarning, stacklevel=5)

    def _lease_counted(self, chunk: np.ndarray, stored: bool) -> None:
        """A chunk is durable: in a shard already (``stored``) or in the next one."""
        if stored:
            self._lease_stored(chunk)
        else:
            self._unflushed.append(chunk)

    def _lease_flushed(self) -> None:
        """The shard just written holds the chunks counted since the last flush."""
        unflushed, self._unflushed = self._unflushed, []
        for chunk in unflushed:
            self._lease_stored(chunk)

    def _lease_stored(self, positions: np.ndarray) -> None:
        """Release the leases all of whose points are now in shards."""
        released = []
        for entry in self._held:
            held = entry[0]
            at = np.searchsorted(held, positions).clip(0, max(len(held) - 1, 0))
            entry[2] -= int(np.sum(held[at] == positions)) if len(held) else 0
            if entry[2] <= 0:
                released.append(entry[1])
        if released:
            self._held = [e for e in self._held if e[2] > 0]
            self._runner.release(released)

    def _runner_status(self) -> dict[str, Any]:
        """What this runner's heartbeat record carries (``notebookscan status`` shows it)."""
        progress = self.progress
        return {**progress.as_dict(), "skipped": progress.skipped,
                "elapsed": progress.elapsed, "held_elsewhere": len(self._elsewhere)}

    def _take_back(self) -> None:
        """Drop the held points other runners stored; take back those no live runner
        holds any more (their runner died: its leases expired and were removed)."""
        held = self._runner.held_elsewhere()  # leases first, then shards (see _claim)
        self._fold_taken_over()
        self._drop_done_elsewhere()
        free = ~np.isin(self.keys[self._elsewhere], held)
        if free.any():
            self._todo.add(self._elsewhere[free])
            self._elsewhere = self._elsewhere[~free]

    def _fold_taken_over(self) -> None:
        """A runner found dead may have received points it never wrote to a shard: its
        journal (on this host) is folded into a shard, so they are not computed again."""
        if self._runner.pop_taken_over():
            fold_journals(self.store)


def _publish_all(shards_dir: str, jobs: list[tuple[str, str]]) -> None:
    """Publish each (temporary path, shard name) of ``jobs`` (the publishing thread)."""
    for tmp, name in jobs:
        publish_shard(tmp, os.path.join(shards_dir, name))
