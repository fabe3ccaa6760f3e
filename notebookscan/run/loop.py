"""The run loop: submit tasks, collect results, flush, retry lost tasks, stop.

One loop runs every kind of scan. What it runs comes from a *source* of work
(:class:`Source`): the point-chunk source of a plain scan
(:class:`notebookscan.run.points.PointSource`) or the segment source of a segmented scan
(:class:`notebookscan.segments.source.SegmentSource`). The loop never knows what a
task computes; it owns what every scan needs alike:

* keeping about two tasks per worker in flight, re-counting the workers every
  :data:`WORKER_CHECK_INTERVAL` seconds (engines join a cluster late) and warning when
  there have been none for :data:`NO_WORKERS_WARNING` seconds;
* a task whose worker died: split in two (bisect: which item killed it is unknown)
  while the source can split it, else re-submitted up to ``max_retries`` times, else
  recorded as failed;
* a task running past its deadline (``timeout`` per item, plus
  :data:`DEADLINE_GRACE`): its worker is ended (:meth:`ScanExecutor.end_worker`), for
  code stuck where the worker's own timer cannot interrupt it (inside a C call);
* ``request_stop(now)``; the executor's back-end gone; flush timing; progress events;
  finishing and compaction;
* every store read and write of the source under :data:`FORK_LOCK` (a pool worker
  forked while this thread is inside HDF5 would hang).

The loop runs in the calling thread (scripts, the serial executor) or in a background
thread (a Jupyter kernel, ``wait=False``); only :class:`~notebookscan.scan.ScanRun`
decides where.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ExecutorError, ScanError
from ..executors.base import FORK_LOCK, ScanExecutor
from .events import Events

__all__ = ["LoopSettings", "Progress", "RunLoop", "Source", "Task"]

# seconds between progress events: bars and widgets redraw at most this often
PROGRESS_INTERVAL = 0.2
ENDS_SOON_SECONDS = 0.25  # a scan with less work left than this skips the early first flush
WORKER_CHECK_INTERVAL = 2.0  # seconds between looks at how many workers there are
NO_WORKERS_WARNING = 60.0  # warn when no worker has been there this long
DEADLINE_GRACE = 5.0  # seconds past its timeout before a task's worker is ended


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
    keep_checkpoints: int | None = 1  # segmented scans: newest checkpoints kept per point


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


@dataclass(frozen=True)
class Task:
    """One piece of work for a worker: ``fn(*args)``, and the source's own ``tag`` for it.

    ``size`` is how many items (points, segments) it holds: what ``progress.running``
    counts, and how many ``timeout`` s the task may run before its worker is ended.
    ``worker`` names the worker it should go to (a ``worker_name()``, e.g. the one
    holding a segmented point's live model); only its first attempt goes there.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    tag: Any
    size: int = 1
    worker: str | None = None


class Source(Protocol):
    """What a run loop runs: the work of one scan, handed out as :class:`Task` s.

    The loop calls it from its own thread only (docs/architecture.md has a table of the
    methods). A source may have no task now and more later (a sampler that picks points
    from the results so far): the loop asks again after every result, and ends when
    nothing is in flight and no task comes. ``start``, ``next_tasks``, ``commit``,
    ``flush``, ``refresh`` and ``compact`` run under :data:`FORK_LOCK` (they may read or
    write the store), so they must neither submit work nor take that lock.
    """

    progress: Progress
    task_name: str  # for errors: "a chunk of points", "a segment"
    early_first_flush: bool  # write the first results at once (unless the run ends soon)
    flush_when_drained: bool  # write what is buffered once its last tasks are out

    def start(self) -> dict[str, Any]: ...  # set-up; extra fields of the "started" event
    def next_tasks(self, slots: int, workers: int) -> list[Task]: ...  # at most `slots`
    def pending(self) -> bool: ...  # work not handed out yet (a stop leaves it for later)
    def receive(self, tag: Any, result: Any) -> None: ...
    def split(self, tag: Any) -> list[Task]: ...  # after its worker died; [] for one item
    def fail(self, tag: Any, error: str) -> None: ...  # record the task's items as failed
    def commit(self) -> None: ...  # make what was received durable (a journal record)
    def buffered(self) -> tuple[int, int]: ...  # items and bytes not yet flushed
    def seconds_left(self) -> float: ...  # estimated work left (inf when unknown)
    def flush(self) -> None: ...  # write what is buffered into the store
    def refresh(self) -> None: ...  # after a flush: catch up with other writers
    def compact(self) -> None: ...  # end of a run without error
    def close(self) -> None: ...  # after the last flush, also after an error
    def summary(self) -> dict[str, Any]: ...  # extra fields of the "finished" event
    # other runs on the store: nothing in flight and no task now, but worth asking again
    # after this many seconds (0: the run is over); a heartbeat due in seconds_to_beat()
    def waiting(self) -> float: ...
    def seconds_to_beat(self) -> float: ...  # inf: the source keeps no heartbeat
    def heartbeat(self) -> None: ...


@dataclass
class _Flight:
    """A submitted task: its retries so far and its deadline."""

    task: Task
    attempt: int
    started: float | None = None  # when a worker became free for it (estimated)
    ended: bool = False  # its worker was ended: it ran past its deadline
    tried_end: bool = False  # end_worker was asked (once)


class RunLoop:
    """Runs the tasks of one :class:`Source` on one executor until the source is done."""

    def __init__(self, source: Source, executor: ScanExecutor, settings: LoopSettings,
                 events: Events):
        self.source = source
        self.executor = executor
        self.settings = settings
        self.events = events
        self._stop = threading.Event()
        self._stop_now = threading.Event()
        self._workers = 1
        self._last_flush = time.monotonic()
        self._last_progress = 0.0
        self._last_workers_check = time.monotonic()
        self._no_workers_since: float | None = None
        self._warned_no_workers = False
        self._drain_flushed = False

    @property
    def progress(self) -> Progress:
        """The source's counters (with ``running`` and ``workers`` kept by the loop)."""
        return self.source.progress

    # ---------------------------------------------------------------- stopping

    def request_stop(self, now: bool = False) -> None:
        """Submit nothing more; with ``now``, also cancel and interrupt what runs."""
        self._stop.set()
        if now:
            self._stop_now.set()
            self.executor.cancel_pending()
            self.executor.interrupt_running()

    def _obey_stop_request(self) -> None:
        """Stop when asked through the store (another process: an app that did not start
        this run); a source that keeps no heartbeat has no ``stop_request``."""
        ask = getattr(self.source, "stop_request", None)
        now = ask() if ask is not None else None
        if now is None or self._stop_now.is_set() or (self.stopping and not now):
            return
        self.request_stop(now)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ---------------------------------------------------------------- main loop

    def run(self) -> Progress:
        progress = self.progress
        self._workers = max(1, self._count_workers())
        with FORK_LOCK:
            extra = self.source.start()
        self.events.emit("started", total=progress.total, skipped=progress.skipped,
                         to_run=progress.total, failed_before=progress.failed_before,
                         workers=progress.workers, **extra)
        inflight: dict[Future, _Flight] = {}
        try:
            while not (self._stop_now.is_set() and not inflight):
                self._fill(inflight)
                if not inflight:
                    if self._wait_for_source():
                        continue
                    break
                finished, _ = wait(list(inflight), timeout=self._wait_time(inflight),
                                   return_when=FIRST_COMPLETED)
                for future in finished:
                    self._collect(future, inflight.pop(future), inflight)
                    if self._full():  # however many tasks finished at once
                        self._fill_before_flush(inflight)
                        self._flush()
                finished = set()  # a done future may hold a big result: drop it
                self._locked(self.source.commit)
                self._maybe_emit_progress()
                if self._flush_due() or self._drained(inflight):
                    self._fill_before_flush(inflight)
                    self._flush()
                    self._locked(self.source.refresh)
                self._end_overdue(inflight)
                self._check_alive(inflight)
                if time.monotonic() - self._last_workers_check >= WORKER_CHECK_INTERVAL:
                    self._workers = max(1, self._count_workers())
                self._locked(self.source.heartbeat)
                self._obey_stop_request()
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
                self.source.close()
            self._finish()
        return progress

    def _locked(self, step: Callable[[], Any]) -> Any:
        with FORK_LOCK:  # no pool worker is forked while this thread is inside HDF5
            return step()

    def _fill(self, inflight: dict[Future, _Flight]) -> None:
        """Submit tasks until every worker has two (one running, one queued)."""
        while not self.stopping:
            slots = 2 * self._workers - len(inflight)
            if slots <= 0:
                return
            with FORK_LOCK:  # a source may read the store to make its tasks
                tasks = self.source.next_tasks(slots, self._workers)
            if not tasks:
                return
            for task in tasks:
                self._submit(task, 0, inflight)

    def _wait_for_source(self) -> bool:
        """Nothing in flight and no task, but the source expects some (points another run
        holds): flush what is buffered (others may wait for it), wait, ask again. False
        when the run is over."""
        delay = 0.0 if self.stopping else self.source.waiting()
        if delay <= 0:
            return False
        if self.source.buffered()[0]:
            self._flush()
        self._stop.wait(delay)
        self._locked(self.source.heartbeat)
        self._obey_stop_request()
        self._maybe_emit_progress()
        return True

    def _fill_before_flush(self, inflight: dict[Future, _Flight]) -> None:
        """Give workers their next tasks, so they compute while this thread writes; not
        when submitting computes them here (that would only hold more results in memory)."""
        if not self.executor.runs_tasks_in_submit:
            self._fill(inflight)

    def _submit(self, task: Task, attempt: int, inflight: dict[Future, _Flight]) -> None:
        if task.worker is not None and attempt == 0:
            future = self.executor.submit_to(task.worker, task.fn, *task.args)
        else:  # a retry goes anywhere: the preferred worker may be the one that died
            future = self.executor.submit(task.fn, *task.args)
        inflight[future] = _Flight(task, attempt)
        self.progress.running += task.size
        self._start_clocks(inflight)

    def _collect(self, future: Future, flight: _Flight, inflight: dict[Future, _Flight]) -> None:
        self.progress.running -= flight.task.size
        self._start_clocks(inflight)
        try:
            result = future.result()
        except (CancelledError, KeyboardInterrupt):
            if self.stopping:
                return  # stopped: this work stays pending and runs next time
            raise
        except BaseException as exc:
            if self._stop_now.is_set():
                return
            if flight.ended:
                self._lost(flight, inflight, self._timeout_error(flight), retry=False)
                return
            if not self.executor.is_worker_lost(exc):
                raise ScanError(
                    f"the executor {self.executor.description!r} could not run "
                    f"{self.source.task_name}: {type(exc).__name__}: {exc}. Nothing of the "
                    "user's code ran; everything finished so far is stored. Check that the "
                    "function can be pickled and that notebookscan is installed where the "
                    "workers run."
                ) from exc
            self._lost(flight, inflight, f"WorkerLost: the worker died {flight.attempt + 1} "
                       f"time(s) while running it ({exc})", retry=True)
            return
        self.source.receive(flight.task.tag, result)

    def _lost(self, flight: _Flight, inflight: dict[Future, _Flight], error: str,
              retry: bool) -> None:
        """A task whose worker died (or was ended): split, retry, or record it failed."""
        parts = self.source.split(flight.task.tag)
        if parts:
            # which item killed the worker (if any) is unknown: run each part on its
            # own, charging no retry, until the item is found alone
            for part in parts:
                self._submit(part, flight.attempt, inflight)
            return
        if retry and flight.attempt < self.settings.max_retries:
            self._submit(flight.task, flight.attempt + 1, inflight)
            return
        self.source.fail(flight.task.tag, error)

    # ---------------------------------------------------------------- deadlines

    def _start_clocks(self, inflight: dict[Future, _Flight]) -> None:
        """Start the clocks of the oldest waiting tasks while workers are free for them
        (workers take tasks in the order they were submitted)."""
        if not self.settings.timeout or self.executor.runs_tasks_in_submit:
            return
        free = self._workers - sum(f.started is not None for f in inflight.values())
        now = time.monotonic()
        for flight in inflight.values():
            if free <= 0:
                break
            if flight.started is None:
                flight.started, free = now, free - 1

    def _deadline(self, flight: _Flight) -> float:
        assert self.settings.timeout and flight.started is not None
        return (flight.started + flight.task.size * self.settings.timeout
                + max(DEADLINE_GRACE, self.settings.timeout))

    def _end_overdue(self, inflight: dict[Future, _Flight]) -> None:
        """End the workers of tasks past their deadline (stuck outside Python, where the
        worker's own timer cannot interrupt them); their futures then fail."""
        if not self.settings.timeout:
            return
        now = time.monotonic()
        for future, flight in list(inflight.items()):
            if flight.started is None or flight.tried_end or now < self._deadline(flight):
                continue
            flight.tried_end = True
            flight.ended = bool(self.executor.end_worker(future))

    def _timeout_error(self, flight: _Flight) -> str:
        return (f"PointTimeout: timed out: ran longer than timeout={self.settings.timeout} s "
                f"and did not return to Python; its worker was ended")

    def _wait_time(self, inflight: dict[Future, _Flight]) -> float:
        """Until the next flush or the next deadline, whichever comes first."""
        now = time.monotonic()
        until = min(self.settings.flush_interval - (now - self._last_flush),
                    self.source.seconds_to_beat())
        if self.settings.timeout:
            deadlines = [self._deadline(f) for f in inflight.values()
                         if f.started is not None and not f.tried_end]
            if deadlines:
                until = min(until, min(deadlines) - now)
        return max(0.0, until)

    # ---------------------------------------------------------------- workers

    def _count_workers(self) -> int:
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
        return workers

    def _check_alive(self, inflight: dict[Future, _Flight]) -> None:
        """Stop with the executor's error when its back-end is gone (a dead controller
        never answers, so the loop would otherwise wait forever); work that finished is
        collected first, and stored by the final flush."""
        try:
            self.executor.check_alive()
        except ExecutorError:
            for future in [f for f in inflight if f.done()]:
                with contextlib.suppress(Exception):  # the executor's error is the one to report
                    self._collect(future, inflight.pop(future), {})
            raise

    # ---------------------------------------------------------------- flushing

    def _full(self) -> bool:
        """True when the source holds ``flush_every`` items or ``flush_bytes`` unwritten."""
        items, nbytes = self.source.buffered()
        return items > 0 and (items >= self.settings.flush_every
                              or nbytes >= self.settings.flush_bytes)

    def _flush_due(self) -> bool:
        items, _ = self.source.buffered()
        if not items:
            return False
        # the first results reach the disk at once, unless the whole run is about to end
        first = (self.source.early_first_flush and self.progress.shards == 0
                 and self.source.seconds_left() > ENDS_SOON_SECONDS)
        return (self._full() or first
                or time.monotonic() - self._last_flush >= self.settings.flush_interval)

    def _drained(self, inflight: dict[Future, _Flight]) -> bool:
        """Once per run, for a source that asks (``flush_when_drained``): its last tasks
        are out, so write what is buffered while they run; the final flush, which nothing
        overlaps, then holds only what they bring back."""
        if (self._drain_flushed or self.executor.runs_tasks_in_submit
                or not self.source.flush_when_drained):
            return False
        self._fill(inflight)
        if self.source.pending() or not inflight or not self.source.buffered()[0]:
            return False
        self._drain_flushed = True
        return True

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        self._locked(self.source.flush)
        self._emit_progress()

    def _maybe_emit_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self._emit_progress()

    def _emit_progress(self) -> None:
        if self.events.wants("progress"):
            self.events.emit("progress", **self.progress.as_dict())

    def _finish(self) -> None:
        progress = self.progress
        progress.finished_at = time.time()
        progress.stopped = progress.stopped or (self.stopping and (
            self.source.pending() or progress.remaining > 0))
        if progress.error is None:
            self._locked(self.source.compact)
        self.events.emit("finished", done=progress.done, failed=progress.failed,
                         stopped=progress.stopped, elapsed=progress.elapsed,
                         **self.source.summary())
