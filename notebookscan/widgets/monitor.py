"""Run control and monitor: Run, Stop, Resume; progress, engines and failures, live.

The scan runs in a background thread (``scan.run(wait=False)``), so the notebook stays
free while it runs. The monitor listens to the scan's events; the callbacks only note
that something changed, and the display is redrawn on the kernel's thread at most a few
times a second. Failures are kept in a bounded list and counted by message, so a flood
of errors cannot flood the notebook.
"""

from __future__ import annotations

import contextlib
import html
import math
import threading
import time
import warnings
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
from ._ui import (
    MUTED_COLOR,
    Throttle,
    UiThread,
    error_html,
    format_duration,
    format_rate,
    format_value,
    muted_html,
    style_widget,
)

__all__ = ["RunMonitor"]

#: Executors offered in the drop-down (label, value passed to ``Scan.run``).
EXECUTORS = WIDGET_OPTIONS
PROGRESS_INTERVAL = 0.25  # s between progress redraws
FAILURES_INTERVAL = 1.0  # s between failure-table redraws
MAX_FAILURE_ROWS = 50  # rows shown; the rest are counted
MAX_TRACEBACK = 4000  # characters of a traceback kept

COLORS = {"done": "#3a923a", "failed": "#d0342c", "running": "#4a90d9", "idle": "#cfd8dc"}
#: What Run does with stored points computed by other code (``Scan.run(stale=...)``).
STALE_OPTIONS = (("reuse them", "reuse"), ("recompute them", "recompute"),
                 ("stop (use a new store)", "error"))
STATE_LABELS = {"idle": "ready", "starting": "starting…", "running": "running",
                "stopping": "stopping…", "stopped": "stopped", "finished": "finished",
                "error": "error"}


class _Failure:
    __slots__ = ("error", "point", "traceback")

    def __init__(self, point: dict[str, Any], error: str, traceback: str) -> None:
        self.point = point
        self.error = error
        self.traceback = traceback[-MAX_TRACEBACK:]


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
        ``idle``, ``starting``, ``running``, ``stopping``, ``stopped``, ``finished``
        or ``error``.
    done, failed, running, remaining, total, skipped : int
        The current run's counters (``skipped``: points already stored).
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
        self._failures: list[_Failure] = []
        self._failure_counts: Counter[str] = Counter()
        self._lock = threading.Lock()
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
        self.failures_html = w.HTML()
        self.failures_html.add_class("nbscan-failures")

    # ------------------------------------------------------------------ layout

    def _layout(self) -> list[w.Widget]:
        controls = w.HBox([self.run_button, self.stop_button, self.resume_button,
                           self.executor, self.retry, self.state_label],
                          layout=w.Layout(align_items="center", flex_flow="row wrap",
                                          grid_gap="6px"))
        return [controls, self.stale_box, self.progress_html, self.engines_html,
                self.message_html, self.failures_html]

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
            self._failure_counts[error.splitlines()[0][:200] if error else "failed"] += 1
            if len(self._failures) < MAX_FAILURE_ROWS:
                self._failures.append(_Failure(dict(point), error,
                                               str(getattr(record, "traceback", "") or "")))
        self._failures_throttle.request()
        self._progress_throttle.request()

    def _on_finished(self, **_: Any) -> None:
        self._progress_throttle.now()
        self._failures_throttle.now()

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
        self.message = ""
        self._ended.clear()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run = scan.run(executor=executor, wait=False, progress=False,
                               retry_failed=self.retry.value, stale=self.stale_choice.value)
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
        run = self.run_handle
        if run is None or self.state not in ("running", "stopping"):
            return
        now = now or self.state == "stopping"
        run.stop(now=now, wait=False)
        self.state = "stopping"
        if now:
            self.stop_button.disabled = True
            self.message = "cancelling the running points…"

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

    def offer_resume(self, stored: int, missing: int) -> None:
        """Enable Resume when the store holds part of the scan (the app calls this)."""
        self._resumable = bool(stored and missing)
        if self.state in ("idle", "error") and self.run_handle is None:
            self.message = (f"the store holds {stored:,} of {stored + missing:,} points; "
                            f"Resume runs the other {missing:,}" if self._resumable else "")
        self._show_state()

    def _show_state(self, change: Any = None) -> None:
        state = self.state
        active = state in ("starting", "running", "stopping")
        self.run_button.disabled = active
        self.resume_button.disabled = not (state == "stopped" or (
            state in ("idle", "error") and self._resumable))
        self.stop_button.disabled = state not in ("running", "stopping")
        self.stop_button.description = "Stop now" if state == "stopping" else "Stop"
        self.executor.disabled = active
        color = {"running": COLORS["running"], "finished": COLORS["done"],
                 "error": COLORS["failed"], "stopped": "#e69500",
                 "stopping": "#e69500"}.get(state, MUTED_COLOR)
        self.state_label.value = (
            f'<span data-state="{state}" style="display:inline-block;padding:1px 8px;'
            f'border-radius:10px;border:1px solid {color};color:{color};font-size:0.9em">'
            f"{STATE_LABELS.get(state, state)}</span>")
        self._show_message()

    def _show_progress(self) -> None:
        run = self.run_handle
        if run is not None:
            p = run.progress
            self.set_trait("done", p.done)
            self.set_trait("failed", p.failed)
            self.set_trait("running", max(0, p.running))
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
            self.busy = min(self.workers, self.running) if self.state in (
                "running", "stopping") else 0
        total = max(self.total, 1)
        share = {k: 100.0 * v / total for k, v in
                 (("done", self.done), ("failed", self.failed), ("running", self.running))}
        bar = "".join(
            f'<div title="{name}" style="width:{share[name]:.3f}%;background:{COLORS[name]}">'
            "</div>" for name in ("done", "failed", "running") if share[name] > 0)
        if run is None:
            text = muted_html("not started")
        else:
            speed = format_rate(self.rate)
            finished = self.state in ("finished", "stopped", "error")
            timing = (f"took {format_duration(self.elapsed)}" if finished else
                      f"ETA {format_duration(self.eta)}")
            stored = f" · {self.skipped:,} already stored" if self.skipped else ""
            text = (f"<b>{self.done:,}</b> done · "
                    f'<b style="color:{COLORS["failed"] if self.failed else "inherit"}">'
                    f"{self.failed:,}</b> failed · {self.running:,} running · "
                    f"{self.remaining:,} remaining of <b>{self.total:,}</b>"
                    f' <span style="color:{MUTED_COLOR}">— {speed} · {timing}{stored}</span>')
        self.progress_html.value = (
            f'<div class="nbscan-progress" data-state="{self.state}" data-done="{self.done}" '
            f'data-failed="{self.failed}" data-running="{self.running}" '
            f'data-total="{self.total}" style="margin:6px 0 2px 0">'
            '<div style="display:flex;height:14px;border-radius:4px;overflow:hidden;'
            f'background:#eceff1;border:1px solid #dde3e7">{bar}</div>'
            f'<div class="nbscan-progress-text" style="margin-top:3px">{text}</div></div>')
        self._show_engines()

    def _show_engines(self) -> None:
        workers, busy = self.workers, min(self.busy, self.workers)
        shown = min(workers, 64)
        boxes = "".join(
            f'<span style="display:inline-block;width:10px;height:10px;margin-right:2px;'
            f'border-radius:2px;background:{COLORS["running"] if i < busy else COLORS["idle"]}">'
            "</span>" for i in range(shown))
        more = f" +{workers - shown}" if workers > shown else ""
        self.engines_html.value = (
            f'<div class="nbscan-engines-row" data-workers="{workers}" data-busy="{busy}" '
            f'style="font-size:0.92em;color:{MUTED_COLOR}">workers {boxes}{more} '
            f"{busy} busy · {workers - busy} idle</div>")

    def _show_failures(self) -> None:
        with self._lock:
            failures = list(self._failures)
            counts = self._failure_counts.most_common(3)
            total = sum(self._failure_counts.values())
        self.failures_total = total
        if not total:
            self.failures_html.value = ""
            return
        summary = "; ".join(f"{html.escape(msg)} <b>×{n:,}</b>" for msg, n in counts)
        rows = []
        for failure in failures:
            params = ", ".join(f"{html.escape(k)}={html.escape(format_value(v))}"
                               for k, v in failure.point.items())
            trace = (f"<details><summary>traceback</summary><pre style='white-space:pre-wrap;"
                     f"font-size:0.85em;margin:2px 0'>{html.escape(failure.traceback)}</pre>"
                     "</details>") if failure.traceback else ""
            rows.append(f"<tr><td style='white-space:nowrap;padding:2px 8px 2px 0'>{params}</td>"
                        f"<td style='padding:2px 0'>{html.escape(failure.error)}{trace}</td>"
                        "</tr>")
        more = total - len(failures)
        tail = (f"<div style='color:{MUTED_COLOR}'>… and {more:,} more: "
                "<code>scan.results().where(lambda d: d.ns_status == 'failed')</code></div>"
                if more > 0 else "")
        self.failures_html.value = (
            f'<details class="nbscan-failure-table" data-count="{total}" open>'
            f'<summary style="color:{COLORS["failed"]};font-weight:600">{total:,} failed '
            f'point{"s" if total != 1 else ""}</summary>'
            f'<div style="color:{MUTED_COLOR};margin:2px 0">most common: {summary}</div>'
            '<div style="max-height:260px;overflow:auto;border:1px solid #eee;padding:4px">'
            "<table style='border-collapse:collapse;font-size:0.9em'>"
            "<thead><tr><th style='text-align:left'>parameters</th>"
            "<th style='text-align:left'>error</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{tail}</div></details>")
