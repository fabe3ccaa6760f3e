"""The scan loop: submit chunks, collect results, flush shards, retry lost chunks, stop.

The loop is the single writer of its shards. It runs in the calling thread (scripts,
the serial executor) or in a background thread (a Jupyter kernel, ``wait=False``) —
the code is the same; only :class:`~notebookscan.scan.ScanRun` decides where.

A received chunk counts (progress, ``point_done`` events, the batch of the next shard)
only once it is durable: the chunks that arrive together are appended to the writer's
journal as one record and fsynced (:mod:`notebookscan.store.journal`), so a killed
client recomputes only the points that were still in flight. The shard written at the
next flush empties the journal.

Runs on one store share the work (:mod:`notebookscan.store.leases`): a chunk's keys are
leased before it is submitted and released once stored; the points another live run
holds wait for it (the call sites are marked ``LEASES``).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch import Batch
from .errors import ExecutorError, ScanError, StoreWarning
from .events import Events
from .executors.base import FORK_LOCK, ScanExecutor
from .store import Store
from .store.journal import Journal, JournalUnsupported, fold_journals
from .store.leases import LEASE_KEYS, Runner
from .store.schema import is_reserved
from .store.shards import Record
from .worker import ChunkResult, PointColumns, ShardSink, run_chunk

__all__ = ["LoopSettings", "Progress", "ScanLoop"]



# seconds between progress events: bars and widgets redraw at most this often
PROGRESS_INTERVAL = 0.2
MIN_CHUNK_SECONDS = 0.01  # tasks shipped to workers hold at least this much work
MAX_CHUNK = 5_000  # points per task at most, so a chunk's points and results stay small in memory
CHUNK_BYTES = 64 * 2**20  # results per task at most (big arrays: fewer points per task)
ENDS_SOON_SECONDS = 0.25  # a scan with less work left than this skips the early first flush
WORKER_WRITE_BYTES = 2**20  # with writer="auto", workers write chunks of results this big
WORKER_CHECK_INTERVAL = 2.0  # seconds between looks at how many workers there are
NO_WORKERS_WARNING = 60.0  # warn when no worker has been there this long


@dataclass(frozen=True)
class LoopSettings:
    """How a run behaves (see :meth:`notebookscan.Scan.run` for the meaning of each)."""

    flush_every: int = 10_000
    flush_interval: float = 2.0
    flush_bytes: int = 256 * 2**20
    max_retries: int = 2
    timeout: float | None = None
    chunk_seconds: float = 0.2
    chunk_size: int | None = None
    compact_above: int = 16
    writer: str = "auto"  # who writes shards: "client", "workers", or "auto"


@dataclass
class Progress:
    """Counters of a run, updated by the loop thread (read them from anywhere)."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    stopped: bool = False
    error: BaseException | None = None
    shards: int = 0
    workers: int = 0  # workers (engines, processes) available, as last seen
    failed_before: int = 0  # points that failed in earlier runs and are not run again

    @property
    def completed(self) -> int:
        """Points finished in this run, done or failed."""
        return self.done + self.failed

    @property
    def remaining(self) -> int:
        """Points of this run neither finished nor running."""
        return self.total - self.completed - self.running

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished, once it has)."""
        return (self.finished_at or time.time()) - self.started_at

    @property
    def rate(self) -> float:
        """Points per second since the run started."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        """Seconds until every point is done, at the current rate (``nan`` when unknown)."""
        left = self.total - self.completed
        return left / self.rate if self.rate > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The counters as a dict (what ``progress`` events carry)."""
        return {"done": self.done, "failed": self.failed, "running": self.running,
                "remaining": self.remaining, "total": self.total, "rate": self.rate,
                "workers": self.workers}

    def __str__(self) -> str:
        state = "stopped" if self.stopped else ("finished" if self.finished_at else "running")
        return (f"{state}: {self.done} done, {self.failed} failed, {self.running} running, "
                f"{self.remaining} remaining of {self.total} ({self.skipped} already stored)")


class _Chunker:
    """Chunk sizes that adapt to the measured time per point (aiming at ~0.2 s a chunk)."""

    def __init__(self, settings: LoopSettings, workers: int, min_seconds: float = 0.0):
        self.target = settings.chunk_seconds
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
        by_bytes = int(CHUNK_BYTES / self.bytes_per_point) if self.bytes_per_point else size
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


class StopControl:
    """Stop requests shared by the scan loops (needs ``_stop``, ``_stop_now``, ``executor``)."""

    _stop: threading.Event
    _stop_now: threading.Event
    executor: ScanExecutor

    def request_stop(self, now: bool = False) -> None:
        self._stop.set()
        if now:
            self._stop_now.set()
            self.executor.cancel_pending()
            self.executor.interrupt_running()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _stop_if_executor_is_gone(self, inflight: dict[Future, Any],
                                  collect: Callable[[Future, Any], None]) -> None:
        """Stop with the executor's error when its back-end is gone (a dead controller
        never answers, so the loop would otherwise wait forever); work that finished is
        handed to ``collect(future, inflight[future])`` first, and stored by the final
        flush."""
        try:
            self.executor.check_alive()
        except ExecutorError:
            for future in [f for f in inflight if f.done()]:
                with contextlib.suppress(Exception):  # the executor's error is the one to report
                    collect(future, inflight.pop(future))
            raise


class ScanLoop(StopControl):
    """Runs the pending points of one scan on one executor into one store."""

    def __init__(self, *, function: Callable[..., Any], payload: Callable[..., Any] | bytes,
                 names: Sequence[str], columns: Mapping[str, np.ndarray],
                 keys: np.ndarray, seeds: np.ndarray, todo: np.ndarray,
                 pass_seed: bool, hidden: frozenset[str],
                 store: Store, executor: ScanExecutor,
                 settings: LoopSettings, events: Events, provenance: dict[str, Any],
                 run_id: str, skipped: int, failed_before: int = 0):
        self.function = function
        self.payload = payload
        self.names = tuple(names)
        # the space's own arrays (columns, 20-byte keys, uint32 seeds) and the positions
        # of the points to run: chunks are slices of these, shipped as columns, so the
        # client holds no Python object per point
        self.columns, self.keys, self.seeds = columns, keys, seeds
        self.todo = np.asarray(todo, dtype=np.int64)
        self.pass_seed = pass_seed
        self.hidden = hidden  # parameters stored but not passed (e.g. `trial`)
        self.store = store
        self.executor = executor
        self.settings = settings
        self.events = events
        self.run_id = run_id
        self.attrs = {"provenance": json.dumps({run_id: provenance}, sort_keys=True)}
        # once a shard holds the run's provenance, workers' shards need not carry it (it
        # lists every axis value, and would travel with every chunk)
        self._provenance_stored = False
        self.progress = Progress(total=len(todo), skipped=skipped, failed_before=failed_before)
        self._stop = threading.Event()
        self._stop_now = threading.Event()
        self._schema: dict[str, tuple[str, ...]] = {}
        self._batch = Batch()
        self._journal = Journal(store.path)
        self._journal_warned = False
        # chunks received but not yet durable (see _commit), with their positions
        self._received: list[tuple[np.ndarray, ChunkResult]] = []
        self._last_flush = time.monotonic()
        self._last_progress = 0.0
        self._last_workers_check = time.monotonic()
        self._no_workers_since: float | None = None
        self._warned_no_workers = False
        self._seen_shards: set[str] = set()  # shards whose points are known to this loop
        # LEASES: runners sharing the store (see store/leases.py): this run's runner,
        # the leases it holds [sorted positions, lease file, points not yet in a shard],
        # the chunks counted since the last flush, and the points other runners hold
        self._runner = Runner(store.path, run_id)
        self._held: list[list[Any]] = []
        self._unflushed: list[np.ndarray] = []
        self._elsewhere = np.empty(0, dtype=np.int64)
        self._leases_warned = False

    # ---------------------------------------------------------------- main loop

    def run(self) -> Progress:
        progress = self.progress
        progress.workers = self.executor.worker_count()
        self.events.emit("started", total=progress.total, skipped=progress.skipped,
                         to_run=progress.total, failed_before=progress.failed_before,
                         workers=progress.workers)
        todo = _Pending(self.todo)
        inflight: dict[Future, tuple[np.ndarray, int]] = {}
        chunker = _Chunker(self.settings, self.executor.worker_count(),
                           MIN_CHUNK_SECONDS if self.executor.needs_pickled_function else 0.0)
        # the shards the points to run were decided from: any other is read for points
        # another writer stored meanwhile (a shard may land between that and this)
        self._seen_shards = self.store.indexed_shards()
        self.store.register_run(self.run_id)  # its place in the store's order of runs
        self._runner.start(self._runner_status())  # LEASES: status shows the run at once
        try:
            while ((todo or inflight or len(self._elsewhere))
                   and not (self._stop_now.is_set() and not inflight)):
                self._fill(todo, inflight, chunker)
                if not inflight:
                    if self._wait_for_others(todo):  # LEASES: points other runners hold
                        continue
                    break
                timeout = max(0.0, self.settings.flush_interval -
                              (time.monotonic() - self._last_flush))
                timeout = min(timeout, self._runner.seconds_to_beat())  # LEASES
                finished, _ = wait(list(inflight), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    chunk, attempt = inflight.pop(future)
                    progress.running -= len(chunk)
                    self._collect(future, chunk, attempt, inflight, chunker)
                    if self._batch_full():  # however many chunks finished at once
                        self._fill_before_flush(todo, inflight, chunker)
                        self._flush()
                self._commit()  # one journal record and fsync for the rest
                self._maybe_emit_progress()
                if self._flush_due(chunker.seconds_left(len(todo) + progress.running)):
                    self._fill_before_flush(todo, inflight, chunker)
                    self._flush()
                    self._drop_done_elsewhere(todo)
                self._check_alive(inflight, chunker)
                if time.monotonic() - self._last_workers_check >= WORKER_CHECK_INTERVAL:
                    chunker.workers = self._check_workers()
                self._beat(todo)  # LEASES
        except KeyboardInterrupt:
            self.request_stop(now=True)
            progress.stopped = True
            raise
        except BaseException as exc:
            progress.error = exc
            raise
        finally:
            try:
                self._flush()
            finally:
                self._journal.close()  # removed when empty; else the next run folds it
                self._runner.close()  # LEASES: its leases and record go
            self._finish(todo)
        return progress

    def _fill(self, todo: _Pending, inflight: dict[Future, tuple[np.ndarray, int]],
              chunker: _Chunker) -> None:
        """Submit chunks until every worker has two (one running, one queued)."""
        while todo and not self.stopping and len(inflight) < 2 * chunker.workers:
            chunk = self._claim(todo.take(chunker.next_size(len(todo))), todo)  # LEASES
            if len(chunk):
                self._submit(chunk, 0, inflight)

    def _fill_before_flush(self, todo: _Pending, inflight: dict[Future, tuple[np.ndarray, int]],
                           chunker: _Chunker) -> None:
        """Give workers their next chunks, so they compute while this thread writes; not
        when submitting computes them here (that would only hold more results in memory)."""
        if not self.executor.runs_tasks_in_submit:
            self._fill(todo, inflight, chunker)

    def _check_alive(self, inflight: dict[Future, tuple[np.ndarray, int]],
                     chunker: _Chunker) -> None:
        def collect(future: Future, entry: tuple[np.ndarray, int]) -> None:
            chunk, attempt = entry
            self.progress.running -= len(chunk)
            self._collect(future, chunk, attempt, {}, chunker)

        self._stop_if_executor_is_gone(inflight, collect)

    def _check_workers(self) -> int:
        """Engines may join late (a queued batch job) or be replaced: keep up with them."""
        self._last_workers_check = time.monotonic()
        workers = self.progress.workers = self.executor.worker_count()
        if workers == 0:
            if self._no_workers_since is None:
                self._no_workers_since = time.monotonic()
            elif (time.monotonic() - self._no_workers_since > NO_WORKERS_WARNING
                  and not self._warned_no_workers):
                self._warned_no_workers = True
                warnings.warn(
                    f"no workers have been available for {NO_WORKERS_WARNING:.0f} s on "
                    f"{self.executor.description}; the scan waits for engines to connect. "
                    "Check the batch job (squeue / qstat) or stop with scan.stop().",
                    RuntimeWarning, stacklevel=2)
        else:
            self._no_workers_since = None
        return max(1, workers)

    def _submit(self, chunk: np.ndarray, attempt: int,
                inflight: dict[Future, tuple[np.ndarray, int]]) -> None:
        points = PointColumns({name: self.columns[name][chunk] for name in self.names})
        future = self.executor.submit(
            run_chunk, self.payload, points, self.seeds[chunk], self.pass_seed,
            self.settings.timeout, self.hidden, self._sink(chunk),
        )
        inflight[future] = (chunk, attempt)
        self.progress.running += len(chunk)

    def _sink(self, chunk: np.ndarray) -> ShardSink | None:
        """Where the worker writes its results itself, if it should (see ``writer``)."""
        writer = self.settings.writer
        if writer == "client" or not self.executor.needs_pickled_function:
            return None  # in-process workers gain nothing from writing themselves
        if writer == "auto" and not self.executor.shares_filesystem:
            return None
        return ShardSink(self.store.shards_dir, self.names, self.keys[chunk],
                         self.run_id, {} if self._provenance_stored else self.attrs,
                         0 if writer == "workers" else WORKER_WRITE_BYTES)

    def _collect(self, future: Future, chunk: np.ndarray, attempt: int,
                 inflight: dict[Future, tuple[np.ndarray, int]], chunker: _Chunker) -> None:
        try:
            results = future.result()
        except (CancelledError, KeyboardInterrupt):
            if self.stopping:
                return  # stopped: these points stay pending and run next time
            raise
        except BaseException as exc:
            if self._stop_now.is_set():
                return
            if self.executor.is_worker_lost(exc):
                if len(chunk) > 1:
                    # which point killed the worker (if any) is unknown: run each half on
                    # its own, charging no retry, until the point is found alone
                    half = len(chunk) // 2
                    self._submit(chunk[:half], attempt, inflight)
                    self._submit(chunk[half:], attempt, inflight)
                    return
                if attempt < self.settings.max_retries:
                    self._submit(chunk, attempt + 1, inflight)
                    return
                results = ChunkResult.failed(
                    len(chunk), f"WorkerLost: the worker died {attempt + 1} time(s) while "
                    f"running this point ({exc})", time.time())
            else:
                raise ScanError(
                    f"the executor {self.executor.description!r} could not run a chunk of "
                    f"points: {type(exc).__name__}: {exc}. Nothing of the user's function ran; "
                    "everything finished so far is stored. Check that the function can be "
                    "pickled and that notebookscan is installed where the workers run."
                ) from exc
        chunker.observe(results)
        self._receive(chunk, results)

    def point(self, index: int) -> dict[str, Any]:
        """The parameters of the point at ``index`` of the space, as plain Python values."""
        return {name: self.columns[name].item(index) for name in self.names}

    def _receive(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """Check a chunk's results; count them at once when the worker stored them, else
        keep them until :meth:`_commit` has made them durable."""
        for i, problem in self._schema_problems(results):
            results.fail(i, problem)
        # a column no point still holds (its name clashes, its dims changed) is dropped
        for name in [n for n, (_, present) in results.scalars.items() if not present.any()]:
            del results.scalars[name]
        for name in [n for n, values in results.arrays.items()
                     if all(v is None for v in values)]:
            del results.arrays[name]
        if results.written:
            self._count(chunk, results)
            self._announce(chunk, results)
            results.forget()  # the worker stored it: only the counts were needed
        else:
            self._received.append((chunk, results))

    def _commit(self) -> None:
        """Append the chunks received since the last commit to the journal as one record,
        fsync it, then count them. Chunks of 1 MiB of results or more, and chunks the
        journal cannot hold (a column of objects other than text; a journal that cannot
        be written) are written as a shard at once instead."""
        if not self._received:
            return
        if sum(results.nbytes for _, results in self._received) >= WORKER_WRITE_BYTES:
            self._flush()  # big results: written once into a shard, not journal then shard
            return
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
            self._flush()  # takes the received chunks into a shard
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
                          "receives instead (slower, as safe).", StoreWarning, stacklevel=4)

    def _count(self, chunk: np.ndarray, results: ChunkResult) -> None:
        """Count a received chunk: progress, and the batch of the next shard."""
        done = int(results.done.sum())
        self.progress.done += done
        self.progress.failed += len(chunk) - done
        self._lease_counted(chunk, stored=bool(results.written))  # LEASES
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
            problem = self._check_name(name, ())
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
                problem = self._check_name(name, value.dims)
                for dim, size in zip(value.dims, np.shape(value.data), strict=False):
                    if problem:
                        break
                    if dim in self.names or is_reserved(dim):
                        problem = (f"ResultError: result {name!r} has a dim named {dim!r}, "
                                   "which is a parameter or a reserved name; rename the dim")
                    elif sizes.setdefault(dim, size) != size:
                        problem = (f"ResultError: dim {dim!r} has size {size} in {name!r} but "
                                   f"{sizes[dim]} in another result of the same point")
                if problem:
                    problems.append((i, problem))
                    break
        return problems

    def _check_name(self, name: str, dims: tuple[str, ...]) -> str:
        if name in self.names or is_reserved(name):
            return (f"ResultError: the result name {name!r} is also a parameter or a "
                    "reserved name; rename it in the returned dict")
        known = self._schema.setdefault(name, dims)
        if known != dims:
            return (f"ResultError: result {name!r} has dims {dims}, but earlier "
                    f"points returned {known}; return the same dims for every point")
        return ""

    # ---------------------------------------------------------------- flushing

    def _batch_full(self) -> bool:
        """True when the batch and the chunks received since the last commit hold
        ``flush_every`` points or ``flush_bytes`` of results."""
        points = self._batch.points + sum(len(chunk) for chunk, _ in self._received)
        nbytes = self._batch.nbytes + sum(r.nbytes for _, r in self._received)
        return points > 0 and (points >= self.settings.flush_every
                               or nbytes >= self.settings.flush_bytes)

    def _flush_due(self, seconds_left: float) -> bool:
        if not self._batch:
            return False
        # the first results reach the disk at once, unless the whole scan is about to end
        first = self.progress.shards == 0 and seconds_left > ENDS_SOON_SECONDS
        return (self._batch_full() or first
                or time.monotonic() - self._last_flush >= self.settings.flush_interval)

    def _flush(self) -> None:
        """Write the batch, with the chunks received since the last commit (the shard
        makes them durable: they need no journal record), as one shard."""
        self._last_flush = time.monotonic()
        received, self._received = self._received, []
        for chunk, results in received:
            self._count(chunk, results)
        if not self._batch:
            self._emit_progress()
            return
        batch, self._batch = self._batch, Batch()
        data = batch.to_shard(self.names, self.columns, self.keys, self.seeds, self.run_id,
                              self.attrs)
        problem = self.store.check_forms(data)  # a result whose form changed: stop first
        if problem:
            raise ScanError(problem)
        with FORK_LOCK:  # no pool worker is forked while this thread is inside HDF5
            shard = self.store.write(data)
        self._journal.discard()  # its records are in this shard (or earlier ones)
        self._lease_flushed()  # LEASES: these points are in a shard now
        for chunk, results in received:
            self._announce(chunk, results)
        batch.forget()
        self._seen_shards.add(shard)
        self._provenance_stored = True
        self.progress.shards += 1
        self.events.emit("flushed", shard=shard, points=batch.points)
        self._emit_progress()

    def _maybe_emit_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self._emit_progress()

    def _emit_progress(self) -> None:
        if self.events.wants("progress"):
            self.events.emit("progress", **self.progress.as_dict())

    def _drop_done_elsewhere(self, todo: _Pending, chunk: np.ndarray | None = None) -> np.ndarray:
        """Skip points that another writer stored meanwhile (two scans, one store).

        Only shards new since the last look are read (this loop's own are known). The
        points other runners held (LEASES) go when stored done or failed; returns which
        points of ``chunk`` (taken from ``todo`` to be submitted) are stored done.
        """
        stored = np.zeros(0 if chunk is None else len(chunk), dtype=bool)
        if not (todo or len(self._elsewhere) or len(stored)):
            return stored
        new = self.store.new_shards(self._seen_shards)
        if not new:
            return stored
        self._seen_shards.update(new)
        with FORK_LOCK:
            done_elsewhere = self.store.index_of(new)
        dropped = todo.drop(done_elsewhere.is_done(self.keys[todo.rest()]))
        if len(self._elsewhere):
            keys = self.keys[self._elsewhere]
            gone = done_elsewhere.is_done(keys) | done_elsewhere.is_failed(keys)
            self._elsewhere = self._elsewhere[~gone]
            dropped += int(gone.sum())
        if chunk is not None:
            stored = done_elsewhere.is_done(self.keys[chunk])
            dropped += int(stored.sum())
        if dropped:
            self.progress.total -= dropped
            self.progress.skipped += dropped
        return stored

    # ---------------------------------------------------------------- LEASES
    # Runners on one store share the work (see notebookscan.store.leases): a chunk's keys
    # are claimed before it is submitted, released once its points are in a shard; the
    # points other live runners hold wait until they are stored, or their runner dies.

    def _claim(self, chunk: np.ndarray, todo: _Pending) -> np.ndarray:
        """The points of ``chunk`` this runner now holds a lease on, and no one stored;
        the points other runners hold are kept aside (``_elsewhere``)."""
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
        stored = self._drop_done_elsewhere(todo, mine)
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
                          StoreWarning, stacklevel=4)

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

    def _beat(self, todo: _Pending) -> None:
        """Beat when due (the loop wakes at least this often); then take over the points
        of runners found dead."""
        try:
            beaten = self._runner.beat(self._runner_status())
        except OSError:  # a missed beat: other runners may compute our points too
            beaten = False
        if beaten and len(self._elsewhere):
            self._take_back(todo)

    def _take_back(self, todo: _Pending) -> None:
        """Drop the held points other runners stored; take back those no live runner
        holds any more (their runner died: its leases expired and were removed)."""
        held = self._runner.held_elsewhere()  # leases first, then shards (see _claim)
        self._fold_taken_over()
        self._drop_done_elsewhere(todo)
        free = ~np.isin(self.keys[self._elsewhere], held)
        if free.any():
            todo.add(self._elsewhere[free])
            self._elsewhere = self._elsewhere[~free]

    def _fold_taken_over(self) -> None:
        """A runner found dead may have received points it never wrote to a shard: its
        journal (on this host) is folded into a shard, so they are not computed again."""
        if self._runner.pop_taken_over():
            with FORK_LOCK:
                fold_journals(self.store)

    def _wait_for_others(self, todo: _Pending) -> bool:
        """Nothing of this run is in flight, but other runners hold some of its points:
        wait a moment and look again. False when there is nothing to wait for."""
        if self.stopping or not len(self._elsewhere):
            return False
        if self._batch or self._received:
            self._flush()  # our leases go before we wait: the others may wait for them
        self._stop.wait(min(self._runner.period, 0.25))
        self._beat(todo)
        self._take_back(todo)
        self._maybe_emit_progress()
        return bool(todo or len(self._elsewhere))

    def _finish(self, todo: _Pending) -> None:
        progress = self.progress
        progress.finished_at = time.time()
        progress.stopped = progress.stopped or (self.stopping and (bool(todo) or
                                                                  progress.remaining > 0))
        if progress.error is None and self.store.small_shards() > self.settings.compact_above:
            self.store.compact()
        self.events.emit("finished", done=progress.done, failed=progress.failed,
                         stopped=progress.stopped, elapsed=progress.elapsed)
