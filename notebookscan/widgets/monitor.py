"""Run control and monitor: Run, Stop, Resume; progress, engines and failures, live.

The scan runs in a background thread (``scan.run(wait=False)``), so the notebook stays
free while it runs. The monitor listens to the scan's events; the callbacks only note
that something changed, and the display is redrawn on the kernel's thread at most a few
times a second. Failures are kept in a bounded list and grouped by error (the varying
values stripped), so a flood of errors cannot flood the notebook; each failed point is a
row of its own that never changes once shown, so a traceback opened stays open.

Runs the monitor did not start are seen through the store: every runner keeps a record
with live counters in ``leases/`` (:mod:`notebookscan.store.leases`), which a watcher
thread reads twice a second. A run in another kernel, on another machine or detached is
shown as *running elsewhere* (or *running (detached)*); Stop writes the store's stop
request for it (obeyed only when made by the run's own user), and Run starts a run of
this kernel alongside, which computes only what no live run holds.

Progress, header and live plot count the same thing: the points of the scan's space in
the store (:func:`~notebookscan.widgets._counts.point_counts`).
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from ..errors import ArgumentTypeError, NotebookscanError, WaitTimeout
from ..executors import resolve_executor
from ..executors.registry import WIDGET_OPTIONS
from ..run.handle import ScanRun
from ..scan import Scan
from ..store.directory import Store
from ..store.leases import Watch, lease_ttl, live_runners, request_stop
from ._counts import (
    HOSTNAME,
    describe_runner,
    error_group,
    in_this_process,
    point_counts,
    store_failures,
    user_name,
)
from ._failures import COLORS, Failure, FailureView
from ._ui import (
    MUTED_COLOR,
    Throttle,
    UiThread,
    error_html,
    format_duration,
    format_rate,
    muted_html,
    style_widget,
)

__all__ = ["RunMonitor"]

#: Executors offered in the drop-down (label, value passed to ``Scan.run``).
EXECUTORS = WIDGET_OPTIONS
PROGRESS_INTERVAL = 0.25  # s between progress redraws
FAILURES_INTERVAL = 1.0  # s between failure-table redraws
MAX_FAILURE_ROWS = 50  # rows shown; the rest are counted
WATCH_INTERVAL = 0.5  # s between looks at the store's runners and counts
FAILURES_READ_INTERVAL = 3.0  # s between reads of the failures of runs seen on the store

AMBER = "#e69500"
#: What Run does with stored points computed by other code (``Scan.run(stale=...)``).
STALE_OPTIONS = (("reuse them", "reuse"), ("recompute them", "recompute"),
                 ("stop (use a new store)", "error"))
STATE_LABELS = {"idle": "ready", "starting": "starting…", "running": "running",
                "stopping": "stopping…", "stopped": "stopped", "finished": "finished",
                "error": "error", "watching": "running elsewhere"}
ACTIVE = ("starting", "running", "stopping")


class RunMonitor(w.VBox):
    """Run a scan without blocking the notebook, and watch it.

    Parameters
    ----------
    scan
        The :class:`~notebookscan.Scan` to run; or give ``scan_factory``.
    scan_factory
        Called at each Run/Resume to get the scan (the app passes the builder's
        ``scan``), so edits made since the last run take effect.
    executor
        Where points run: ``"local"`` (local ipyparallel engines, the default),
        ``"processes"``, ``"serial"``, or any executor ``Scan.run`` accepts.

    Attributes
    ----------
    state : str
        ``idle``, ``starting``, ``running``, ``stopping``, ``stopped``, ``finished``,
        ``error``, or ``watching`` (a run this monitor did not start is running on the
        store: Stop stops it, Run joins it).
    done, failed, running, remaining, total, skipped : int
        The current run's counters (``skipped``: points already stored).
    counts : dict
        The points of the scan's space in the store: ``done``, ``failed``, ``missing``,
        ``total`` (what the progress line, the app's header and the live plot show).
    others : list of dict
        The live runs on the store this monitor did not start: ``runner``, ``host``,
        ``pid``, ``user``, ``detached`` and their counters (``done``, ``failed``,
        ``running``, ``workers``, ``rate``).
    rate, eta : float
        Points per second and seconds left (``nan`` when unknown).
    workers, busy : int
        Workers of the executor and how many are busy now.
    stale_count : int
        Stored points of the scan that other code computed (its source changed since);
        when there are any, a notice and ``stale_choice`` (reuse, recompute, or stop
        and use a new store) are shown, and Run passes the choice as ``Scan.run(stale=)``.

    Examples
    --------
    >>> import tempfile, notebookscan as ns
    >>> scan = ns.Scan(lambda x: x * x, ns.grid(x=[1, 2, 3]), store=tempfile.mkdtemp())
    >>> monitor = RunMonitor(scan, executor="serial")
    >>> monitor.run_button.click()          # returns at once; the scan runs in a thread
    >>> monitor.wait().done                 # block (headless use) until the run ends
    3
    >>> monitor.state
    'finished'
    """

    state = t.Unicode("idle")
    done = t.Int(0)
    failed = t.Int(0)
    running = t.Int(0)
    remaining = t.Int(0)
    total = t.Int(0)
    skipped = t.Int(0)
    rate = t.Float(math.nan)
    eta = t.Float(math.nan)
    elapsed = t.Float(0.0)
    workers = t.Int(0)
    busy = t.Int(0)
    failures_total = t.Int(0)
    message = t.Unicode("")
    stale_count = t.Int(0)
    counts = t.Dict()
    others = t.List()

    def __init__(self, scan: Scan | None = None, *,
                 scan_factory: Callable[[], Scan] | None = None,
                 executor: Any = "local") -> None:
        if scan is None and scan_factory is None:
            raise ArgumentTypeError("RunMonitor needs a scan (or a scan_factory that makes one)")
        self._factory = scan_factory if scan_factory is not None else (lambda: scan)
        self.scan: Scan | None = scan
        self.run_handle: ScanRun | None = None
        self._executor_obj: Any = None
        self._owned = False
        self._subscribed: Scan | None = None
        self._failures: list[Failure] = []
        self._failure_counts: Counter[str] = Counter()  # by error group
        self._failures_version = 0  # bumped at every change of the failures
        self._unread_failures = 0
        self._failures_shown = -1
        self._store_scan: Scan | None = scan  # whose store is watched
        self._runner_watch = Watch(lease_ttl())
        self._watching = False  # the state shows runs this monitor did not start
        self._stop_asked = False
        self._watching_ended = False  # "finished" tells of runs seen, not of this one's
        self._failures_read = -math.inf
        self._store_failed = -1  # failed count of the store when its failures were read
        self._detached: Any = None  # the newest detached run of this user on the store
        self._store_reader: Store | None = None  # this monitor's own reader of the store
        # (scan, its shards), their counts, when counted and how long it took
        self._counted: tuple[Any, dict[str, int], float, float] = (None, {}, 0.0, 0.0)
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()
        self._resumable = False
        self._ended = threading.Event()
        self._ended.set()
        self._end_callbacks: list[Callable[[RunMonitor], None]] = []
        self._start_callbacks: list[Callable[[RunMonitor], None]] = []
        self.ui = UiThread(on_error=self._display_error)
        self._progress_throttle = Throttle(self._show_progress, PROGRESS_INTERVAL, self.ui)
        self._failures_throttle = Throttle(self._show_failures, FAILURES_INTERVAL, self.ui)
        self._build(executor)
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="900px"))
        self.add_class("nbscan-monitor")
        self.children = (*self.children, style_widget())  # disabled buttons look disabled
        self._wire()
        self._show_state()
        self._show_progress()
        self._show_failures()
        if scan is not None:
            self._offer_resume(scan)
        self._watch_stop = threading.Event()
        self._look()  # a run already going shows at once (a restarted kernel)
        self._start_watching()

    # ------------------------------------------------------------------ widgets

    def _build(self, executor: Any) -> None:
        options = list(EXECUTORS)
        values = [v for _, v in options]
        if executor is None:
            executor = "local"
        if executor not in values:
            label = getattr(executor, "description", None) or type(executor).__name__
            options.insert(0, (str(label), executor))
        self.executor = w.Dropdown(options=options, value=executor, description="run on",
                                   style={"description_width": "48px"},
                                   layout=w.Layout(width="260px"))
        self.executor.add_class("nbscan-executor")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run the points the store does not hold yet",
                                   layout=w.Layout(width="90px"))
        self.run_button.add_class("nbscan-run")
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop",
                                    tooltip="finish the running points, store them, stop",
                                    layout=w.Layout(width="100px"))
        self.stop_button.add_class("nbscan-stop")
        self.resume_button = w.Button(description="Resume", icon="forward",
                                      tooltip="run what is left (finished points are kept)",
                                      layout=w.Layout(width="110px"))
        self.resume_button.add_class("nbscan-resume")
        self.retry = w.Checkbox(value=False, description="retry failed", indent=False,
                                layout=w.Layout(width="105px"))
        # shown only when stored points came from other code than the function now
        self.stale_html = w.HTML()
        self.stale_html.add_class("nbscan-stale")
        self.stale_choice = w.Dropdown(options=STALE_OPTIONS, value="reuse",
                                       description="stored by other code",
                                       style={"description_width": "initial"},
                                       layout=w.Layout(width="380px"))
        self.stale_choice.add_class("nbscan-stale-choice")
        self.stale_box = w.VBox([self.stale_html, self.stale_choice],
                                layout=w.Layout(display="none"))
        self.state_label = w.HTML()
        self.state_label.add_class("nbscan-state")
        self.progress_html = w.HTML()
        self.progress_html.add_class("nbscan-progress-box")
        self.engines_html = w.HTML()
        self.engines_html.add_class("nbscan-engines")
        self.message_html = w.HTML()
        self.message_html.add_class("nbscan-message")
        # one box per error group, one row per failed point: rows never change, so a
        # traceback opened stays open while the others come in
        self._failure_view = FailureView()
        self.failures_html = self._failure_view.summary
        self.failure_groups = self._failure_view.groups

    # ------------------------------------------------------------------ layout

    def _layout(self) -> list[w.Widget]:
        controls = w.HBox([self.run_button, self.stop_button, self.resume_button,
                           self.executor, self.retry, self.state_label],
                          layout=w.Layout(align_items="center", flex_flow="row wrap",
                                          grid_gap="6px"))
        return [controls, self.stale_box, self.progress_html, self.engines_html,
                self.message_html, self.failures_html, self.failure_groups]

    # ------------------------------------------------------------------ wiring

    def _wire(self) -> None:
        self.run_button.on_click(lambda _: self.start())
        self.resume_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.observe(self._show_state, names="state")
        self.observe(lambda _: self._show_message(), names="message")
        self.executor.observe(self._guess_workers, names="value")
        self._guess_workers()

    def on_start(self, callback: Callable[[RunMonitor], None]) -> None:
        """Call ``callback(monitor)`` on the kernel's thread when a run starts."""
        self._start_callbacks.append(callback)

    def on_end(self, callback: Callable[[RunMonitor], None]) -> None:
        """Call ``callback(monitor)`` on the kernel's thread when a run ends (or stops)."""
        self._end_callbacks.append(callback)

    def _guess_workers(self, change: Any = None) -> None:
        import os

        spec = self.executor.value
        if spec == "serial":
            self.workers = 1
        elif spec in ("local", "processes", None):
            self.workers = os.cpu_count() or 1
        else:
            self.workers = int(getattr(spec, "max_workers", 0) or os.cpu_count() or 1)
        self._show_engines()

    def _subscribe(self, scan: Scan) -> None:
        if self._subscribed is scan:
            return
        if self._subscribed is not None:
            for name, callback in self._callbacks():
                self._subscribed.events.off(name, callback)
        for name, callback in self._callbacks():
            scan.events.on(name, callback)
        self._subscribed = scan

    def _callbacks(self) -> list[tuple[str, Callable[..., None]]]:
        if not hasattr(self, "_cb"):
            self._cb = [("started", self._on_event), ("progress", self._on_event),
                        ("flushed", self._on_event), ("point_failed", self._on_failed),
                        ("finished", self._on_finished)]
        return self._cb

    # -- scan-loop thread: note, never draw
    def _on_event(self, **_: Any) -> None:
        self._progress_throttle.request()

    def _on_failed(self, point: dict[str, Any], record: Any, **_: Any) -> None:
        error = str(getattr(record, "error", "") or "failed")
        with self._lock:
            self._failure_counts[error_group(error)] += 1
            self._failures_version += 1
            if len(self._failures) < MAX_FAILURE_ROWS:
                self._failures.append(Failure(dict(point), error,
                                               str(getattr(record, "traceback", "") or "")))
        self._failures_throttle.request()
        self._progress_throttle.request()

    def _on_finished(self, **_: Any) -> None:
        self._progress_throttle.now()
        self._failures_throttle.now()

    # ------------------------------------------------------------------ the store's runs

    def _start_watching(self) -> None:
        """Look at the store every WATCH_INTERVAL s, in a thread that ends with the widget."""
        ref, stop = weakref.ref(self), self._watch_stop

        def loop() -> None:
            while not stop.wait(WATCH_INTERVAL):
                monitor = ref()
                if monitor is None:
                    return
                with contextlib.suppress(Exception):  # a look that fails is the next one's
                    monitor._look()
                del monitor
        threading.Thread(target=loop, name="notebookscan-monitor-watch", daemon=True).start()

    def close(self) -> None:
        """Stop watching the store and close the widget (its views in the notebook go)."""
        self._watch_stop.set()
        super().close()

    def watched_scan(self) -> Scan | None:
        """The scan whose store is watched: the last run's, or the one the app's form
        describes (set by :meth:`follow_store`)."""
        return self.scan or self._store_scan

    def _reader(self, path: str) -> Store:
        """This monitor's own Store object of ``path`` (never the running scan's: see
        :func:`~notebookscan.widgets._counts.point_counts`)."""
        reader = self._store_reader
        if reader is None or reader.path != path:
            reader = self._store_reader = Store(path)
        return reader

    def _store_counts(self, scan: Scan, path: str) -> dict[str, int]:
        """:func:`point_counts` of the store, counted again only when its shards changed
        (a count of 100 000 points takes ~0.5 s; listing the shards ~1 ms)."""
        reader = self._reader(path)
        listing = (scan, frozenset(reader.shard_files()))
        last, counts, at, took = self._counted
        # a big store is counted again at most every 4x the time a count takes (the
        # watcher shares the kernel's CPU)
        if listing != last and (last is None or last[0] is not scan
                                or time.monotonic() - at >= 4 * took):
            start = time.monotonic()
            counts = point_counts(scan, reader)
            self._counted = (listing, counts, start, time.monotonic() - start)
        return counts

    def _own_runner(self) -> str | None:
        """The runner id of this monitor's run while it runs (not shown as another)."""
        run = self.run_handle
        if run is None or run.done():
            return None
        runner = getattr(getattr(getattr(run, "_loop", None), "source", None), "_runner", None)
        return getattr(runner, "id", None)

    def _look(self) -> None:
        """Watcher thread: read the store's live runners and counts, then show them."""
        scan = self.watched_scan()
        if scan is None:
            return
        path = scan.store.path
        own = self._own_runner()
        runners = [r for r in live_runners(path, self._runner_watch) if r.runner != own]
        counts = self._store_counts(scan, path) if os.path.isdir(path) else {}
        others = [describe_runner(r.runner, r.record) for r in runners]
        if any(o["pid"] is not None for o in others):
            detached = self._detached_pid(path)
            for other in others:
                other["detached"] = detached is not None and other["pid"] == detached \
                    and other["host"] == HOSTNAME
        failures = None
        if (others and counts.get("failed", 0) != self._store_failed
                and time.monotonic() - self._failures_read >= FAILURES_READ_INTERVAL):
            # the table of the store is read (all shards): not more often than this
            self._store_failed = counts.get("failed", 0)
            self._failures_read = time.monotonic()
            failures = store_failures(scan, MAX_FAILURE_ROWS, self._reader(path))
        self.ui.call(lambda: self._show_watch(scan, others, counts, failures))

    def _detached_pid(self, path: str) -> int | None:
        """The pid of this user's newest detached run on the store, while it runs."""
        from ..run.detached import attach

        try:
            run = attach(path)
        except (NotebookscanError, OSError):
            return None
        self._detached = run
        return None if run.done() else run.pid

    def _show_watch(self, scan: Scan, others: list[dict[str, Any]], counts: dict[str, int],
                    failures: list[tuple[dict[str, Any], str, str]] | None) -> None:
        """UI thread: the counts, and the runs this monitor did not start."""
        if scan is not self.watched_scan():
            return  # the form changed meanwhile: the next look is of the new store
        self.others = others
        if counts:
            self.counts = counts
        if failures is not None and not self._own_active():
            self._replace_failures(failures)
        if self._watching and not others:  # the runs seen have ended
            self._watching, self._watching_ended = False, True
            missing = self.counts.get("missing", 0)
            self._resumable = bool(missing)
            self.state = "stopped" if missing else "finished"
        elif others and not self._own_active() and self.state != "stopping":
            self._watching = True
            if self.state != "watching":
                self._stop_asked = False
                self.message = ""
                self.state = "watching"
            self._show_state()
        self._show_progress()

    def refresh_counts(self) -> None:
        """Count the store's points of the watched scan now (:attr:`counts`)."""
        scan = self.watched_scan()
        if scan is not None:
            with contextlib.suppress(NotebookscanError, OSError, ValueError):
                self.counts = point_counts(scan, self._reader(scan.store.path))

    def _own_active(self) -> bool:
        return self.state in ACTIVE and not self._watching

    def _replace_failures(self, failures: list[tuple[dict[str, Any], str, str]]) -> None:
        """The failures of the runs watched, as the store holds them."""
        with self._lock:
            self._failures = [Failure(p, e, tb) for p, e, tb in failures]
            self._failure_counts = Counter(f.group for f in self._failures)
            # failed points counted in the store but not read: shown as "more"
            self._unread_failures = max(0, self.counts.get("failed", 0) - len(self._failures))
            self._failures_version += 1
        self._show_failures()

    # ------------------------------------------------------------------ actions

    def start(self) -> None:
        """Run (or resume) the scan in the background; returns at once."""
        if self.state in ("starting", "running", "stopping"):
            return
        self.message = ""
        try:
            scan = self._factory()
        except (NotebookscanError, ValueError, TypeError) as exc:
            self.state = "error"  # shown as an error, not as a note on the last run
            self.message = str(exc)
            return
        if scan is None:
            self.state = "error"
            self.message = "there is no scan to run"
            return
        spec = self.executor.value
        self.state = "starting"
        if spec in ("local", None):
            self.message = "starting local engines (a few seconds the first time)…"
            threading.Thread(target=self._resolve_in_background, args=(scan, spec),
                             name="notebookscan-engines", daemon=True).start()
            return
        try:
            executor, owned = resolve_executor(spec)
        except NotebookscanError as exc:
            self.state = "error"
            self.message = str(exc)
            return
        self._launch(scan, executor, owned)

    def _resolve_in_background(self, scan: Scan, spec: Any) -> None:
        try:
            if spec in ("local", None):  # the shared local cluster; the message says so
                from ..executors.local_cluster import local_executor

                executor, owned = local_executor(quiet=True), False
            else:
                executor, owned = resolve_executor(spec)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, NotebookscanError) \
                else str(exc)

            def failed() -> None:
                self.state = "error"
                self.message = text
            self.ui.call(failed)
            return
        self.ui.call(lambda: self._launch(scan, executor, owned))

    def _launch(self, scan: Scan, executor: Any, owned: bool) -> None:
        self.scan = scan
        self._executor_obj, self._owned = executor, owned
        self._subscribe(scan)
        with self._lock:
            self._failures.clear()
            self._failure_counts.clear()
            self._unread_failures = 0
            self._failures_version += 1
        self._watching = self._watching_ended = False
        self.message = ""
        self._ended.clear()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run = scan.run(executor=executor, wait=False, progress=False,
                               **self._run_options(scan))
        except Exception as exc:
            self._ended.set()
            if owned:
                executor.shutdown()
            self.state = "error"
            self.message = str(exc) if isinstance(exc, NotebookscanError) else \
                f"{type(exc).__name__}: {exc}"
            return
        notes = [str(c.message) for c in caught]
        self.run_handle = run
        self.refresh_counts()
        self.state = "running"
        if notes:
            self.message = " ".join(notes).replace("pass retry_failed=True",
                                                   "tick 'retry failed'")
        self._show_progress()
        self._show_failures()
        for callback in self._start_callbacks:
            self.ui.guarded(lambda cb=callback: cb(self))()
        threading.Thread(target=self._watch, args=(run,), name="notebookscan-watch",
                         daemon=True).start()

    def _run_options(self, scan: Scan) -> dict[str, Any]:
        """Retry and stale-run choices, for the scans they apply to (an adaptive scan
        chooses its points: a failed one stays failed)."""
        from ..adaptive import AdaptiveScan

        if isinstance(scan, AdaptiveScan):
            return {}
        return {"retry_failed": self.retry.value, "stale": self.stale_choice.value}

    def _watch(self, run: ScanRun) -> None:
        error: BaseException | None = None
        try:
            run.wait()
        except BaseException as exc:
            error = exc
        if self._owned and self._executor_obj is not None:
            with contextlib.suppress(Exception):
                self._executor_obj.shutdown()
        self.ui.call(lambda: self._run_ended(run, error))

    def _run_ended(self, run: ScanRun, error: BaseException | None) -> None:
        progress = run.progress
        if error is not None:
            self.state = "error"
            self.message = str(error) if isinstance(error, NotebookscanError) else \
                f"{type(error).__name__}: {error}"
        else:
            self.state = "stopped" if progress.stopped else "finished"
        self.refresh_counts()
        self._show_state()
        self._show_progress()
        self._show_failures()
        self._resumable = False
        if self.scan is not None:
            self.show_stale(self.scan)
        for callback in self._end_callbacks:  # already on the UI thread
            self.ui.guarded(lambda cb=callback: cb(self))()
        self._ended.set()

    def stop(self, now: bool = False) -> None:
        """Stop: running points finish and everything finished is stored. A second call
        (the "Stop now" button) cancels the running points; they stay pending."""
        if self._watching:
            self._stop_others(now or self.state == "stopping")
            return
        run = self.run_handle
        if run is None or self.state not in ("running", "stopping"):
            return
        now = now or self.state == "stopping"
        run.stop(now=now, wait=False)
        self.state = "stopping"
        if now:
            self.stop_button.disabled = True
            self.message = "cancelling the running points…"

    def _stop_others(self, now: bool) -> None:
        """Ask the runs this monitor did not start to stop, through the store (each obeys
        a request of its own user only: the runs of other users go on)."""
        scan = self.watched_scan()
        if scan is None:
            return
        asked, refused = 0, []
        for other in self.others:
            try:
                request_stop(scan.store.path, other["runner"], now=now)
                asked += 1
            except (NotebookscanError, OSError) as exc:
                refused.append(f"{other['host']} pid {other['pid']}: {exc}")
        mine = user_name()
        foreign = [o for o in self.others if mine and o["user"] and o["user"] != mine]
        self._stop_asked = True
        self.state = "stopping"
        notes = [f"asked {asked} run{'s' if asked != 1 else ''} on the store to "
                 f"{'stop now' if now else 'stop (running points finish and are stored)'}"]
        if foreign:
            notes.append("runs of other users (" + ", ".join(sorted({o['user'] for o in foreign}))
                         + ") go on: only their own user can stop them")
        if refused:
            notes.append("could not ask " + "; ".join(refused))
        self.message = "; ".join(notes)
        if now:
            self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the current run has ended and the display is updated (for scripts
        and tests; in a notebook, use ``await monitor.run_handle``).

        Returns the run's :class:`~notebookscan.run.loop.Progress`; raises
        :class:`~notebookscan.errors.WaitTimeout` (a ``TimeoutError``) after ``timeout``
        seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state == "starting":
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"the run did not start within {timeout:g} s; call wait() "
                                  "again, or stop()")
            time.sleep(0.01)
        if not self._ended.wait(timeout if deadline is None else
                                max(0.0, deadline - time.monotonic())):
            raise WaitTimeout(f"the run did not end within {timeout:g} s; it goes on: call "
                              "wait() again, or stop()")
        return None if self.run_handle is None else self.run_handle.progress

    # ------------------------------------------------------------------ display

    def _display_error(self, text: str) -> None:
        self.message_html.value = error_html(f"display error: {text}")

    def _show_message(self) -> None:
        text = self.message
        if not text:
            self.message_html.value = ""
        elif self.state == "error":
            self.message_html.value = error_html(text)
        else:
            self.message_html.value = muted_html(text)

    def _offer_resume(self, scan: Scan) -> None:
        try:
            status = scan.status()
        except Exception:
            return
        self.offer_resume(status["done"] + status["failed"], status["missing"])
        self.show_stale(scan)

    def show_stale(self, scan: Scan) -> int:
        """Show (or hide) the notice that stored points came from other code, with the
        choice of what Run does with them; returns how many there are."""
        try:
            report = scan.stale()
        except Exception:  # an unreadable store says so when it runs
            return 0
        self.stale_count = report.count
        self.stale_html.value = (muted_html(html.escape(report.message())) if report else "")
        self.stale_box.layout.display = "flex" if report else "none"
        return report.count

    def follow_store(self, scan: Scan | None) -> None:
        """Watch the store of ``scan`` for runs (the app gives the form's scan)."""
        if scan is not None and scan is not self._store_scan:
            self._store_scan = scan
            self._runner_watch = Watch(lease_ttl())
            self._store_failed = -1

    def offer_resume(self, stored: int, missing: int) -> None:
        """Enable Resume when the store holds part of the scan (the app calls this)."""
        self._resumable = bool(stored and missing)
        if self.state in ("idle", "error") and self.run_handle is None:
            self.message = (f"the store holds {stored:,} of {stored + missing:,} points; "
                            f"Resume runs the other {missing:,}" if self._resumable else "")
        self._show_state()

    def _show_state(self, change: Any = None) -> None:
        state = self.state
        active = state in ACTIVE and not self._watching
        watching = self._watching
        self.run_button.disabled = active
        # joining a run seen on the store: Run computes what no live run holds
        self.run_button.description = "Join" if watching and state == "watching" else "Run"
        self.resume_button.disabled = watching or not (state == "stopped" or (
            state in ("idle", "error") and self._resumable))
        self.stop_button.disabled = state not in ("running", "stopping", "watching")
        self.stop_button.description = "Stop now" if state == "stopping" else "Stop"
        self.executor.disabled = active
        label, color = self._state_label()
        where = ", ".join(f"{o['host']} pid {o['pid']}" for o in self.others)
        self.state_label.value = (
            f'<span data-state="{state}" title="{html.escape(where)}" '
            'style="display:inline-block;padding:1px 8px;'
            f'border-radius:10px;border:1px solid {color};color:{color};font-size:0.9em">'
            f"{html.escape(label)}</span>")
        self._show_message()

    def _state_label(self) -> tuple[str, str]:
        """The state's words and colour: a finished run whose points all failed is red,
        one with some failed amber; a run seen on the store says where it runs."""
        state = self.state
        label = STATE_LABELS.get(state, state)
        color = {"running": COLORS["running"], "watching": COLORS["running"],
                 "finished": COLORS["done"], "error": COLORS["failed"],
                 "stopped": AMBER, "stopping": AMBER}.get(state, MUTED_COLOR)
        if state == "watching" and any(o["detached"] for o in self.others):
            label = "running (detached)"
        elif state == "watching" and all(in_this_process(o) for o in self.others):
            label = "running in this kernel"
        elif state == "watching" and self.others:
            hosts = sorted({o["host"] for o in self.others})
            label = f"running elsewhere ({', '.join(hosts)})"
        if state == "finished":
            run = self.run_handle
            done, failed = ((run.progress.done, run.progress.failed) if run is not None
                            and not self._watching_ended else
                            (self.counts.get("done", 0), self.counts.get("failed", 0)))
            if failed and not done:
                label, color = f"finished: all {failed:,} points failed", COLORS["failed"]
            elif failed:
                label, color = f"finished: {failed:,} failed", AMBER
        return label, color

    def _show_progress(self) -> None:
        run = self.run_handle
        if run is not None and not self._watching:
            p = run.progress
            self.set_trait("done", p.done)
            self.set_trait("failed", p.failed)
            self.set_trait("remaining", max(0, p.remaining))
            self.set_trait("total", p.total)
            self.set_trait("skipped", p.skipped)
            self.set_trait("rate", p.rate if p.completed else math.nan)
            self.set_trait("eta", p.eta)
            self.set_trait("elapsed", p.elapsed)
            executor = self._executor_obj
            if executor is not None:
                with contextlib.suppress(Exception):
                    self.workers = int(executor.worker_count())
            # a run with work left keeps a worker busy, also one whose executor runs
            # each task inside submit (serial), where the loop never sees it in flight
            busy = max(0, p.running)
            if self.state == "running" and p.remaining > 0:
                busy = max(busy, 1)
            self.set_trait("running", busy if self.state in ACTIVE else 0)
            self.busy = min(self.workers, self.running)
        elif self._watching:
            self._progress_of_others()
        self.progress_html.value = self._progress_html()
        self._show_engines()

    def _progress_of_others(self) -> None:
        """The counters of the runs seen on the store (summed over them)."""
        others = self.others
        workers = sum(o["workers"] for o in others)
        running = sum(max(o["running"], 1 if o["total"] > o["done"] + o["failed"] else 0)
                      for o in others)
        rate = sum(o["rate"] for o in others)
        missing = self.counts.get("missing", 0)
        self.workers = workers
        self.set_trait("running", running)
        self.set_trait("rate", rate if rate > 0 else math.nan)
        self.set_trait("eta", missing / rate if rate > 0 else math.nan)
        self.busy = min(workers, running) if workers else running

    def _progress_html(self) -> str:
        """The bar and line: the store's points (the same counts as the header and the
        live plot), then the rate and time of the run going on (or the last one)."""
        counts = self.counts or {"done": 0, "failed": 0, "missing": 0, "total": 0}
        done, failed, total = counts["done"], counts["failed"], counts["total"]
        running = min(self.running, counts.get("missing", 0)) if self.state in (
            *ACTIVE, "watching") else 0
        whole = max(total, 1)
        share = {"done": 100.0 * done / whole, "failed": 100.0 * failed / whole,
                 "running": 100.0 * running / whole}
        bar = "".join(
            f'<div title="{name}" style="width:{share[name]:.3f}%;background:{COLORS[name]}">'
            "</div>" for name in ("done", "failed", "running") if share[name] > 0)
        failed_color = COLORS["failed"] if failed else "inherit"
        text = (f"<b>{done:,}</b> done · "
                f'<b style="color:{failed_color}">{failed:,}</b> failed · '
                f"{running:,} running · of <b>{total:,}</b> points")
        tail = self._timing_text()
        if tail:
            text += f' <span style="color:{MUTED_COLOR}">— {tail}</span>'
        run = self.run_handle
        run_done = self.done if run is not None and not self._watching else 0
        run_total = self.total if run is not None and not self._watching else 0
        return (
            f'<div class="nbscan-progress" data-state="{self.state}" data-done="{done}" '
            f'data-failed="{failed}" data-running="{running}" data-total="{total}" '
            f'data-run-done="{run_done}" data-run-total="{run_total}" '
            'style="margin:6px 0 2px 0">'
            '<div style="display:flex;height:14px;border-radius:4px;overflow:hidden;'
            f'background:#eceff1;border:1px solid #dde3e7">{bar}</div>'
            f'<div class="nbscan-progress-text" style="margin-top:3px">{text}</div></div>')

    def _timing_text(self) -> str:
        """Rate and ETA of the run going on (this one or those seen), or what the last
        run of this monitor did."""
        if self._watching:
            return f"{format_rate(self.rate)} · ETA {format_duration(self.eta)}"
        if self.run_handle is None:
            return "not started"
        finished = self.state in ("finished", "stopped", "error")
        timing = (f"took {format_duration(self.elapsed)}" if finished else
                  f"ETA {format_duration(self.eta)}")
        this_run = f"this run: {self.done + self.failed:,} of {self.total:,}"
        stored = f" · {self.skipped:,} already stored" if self.skipped else ""
        return f"{format_rate(self.rate)} · {timing} · {this_run}{stored}"

    def _show_engines(self) -> None:
        workers, busy = self.workers, min(self.busy, self.workers)
        shown = min(workers, 64)
        boxes = "".join(
            f'<span style="display:inline-block;width:10px;height:10px;margin-right:2px;'
            f'border-radius:2px;background:{COLORS["running"] if i < busy else COLORS["idle"]}">'
            "</span>" for i in range(shown))
        more = f" +{workers - shown}" if workers > shown else ""
        where = ""
        if self.others:
            runs = "; ".join(
                f"{html.escape(o['host'])} pid {o['pid']}"
                + (" (detached)" if o["detached"] else "")
                + f": {o['done'] + o['failed']:,} of {o['total']:,}" for o in self.others)
            where = f" · runs on this store: {runs}"
        self.engines_html.value = (
            f'<div class="nbscan-engines-row" data-workers="{workers}" data-busy="{busy}" '
            f'data-others="{len(self.others)}" style="font-size:0.92em;color:{MUTED_COLOR}">'
            f"workers {boxes}{more} {busy} busy · {workers - busy} idle{where}</div>")

    # ------------------------------------------------------------------ failures

    def _show_failures(self) -> None:
        """The summary line, and the groups updated in place (only when changed)."""
        with self._draw_lock:  # outside a kernel, timers call this from their threads
            self._draw_failures()

    def _draw_failures(self) -> None:
        with self._lock:
            version = self._failures_version
            failures = list(self._failures)
            counts = dict(self._failure_counts)
            unread = self._unread_failures
        self.failures_total = sum(counts.values()) + unread
        if version != self._failures_shown:
            self._failures_shown = version
            self._failure_view.show(failures, counts, self.failures_total)
