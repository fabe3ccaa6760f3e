"""The scan app: define, run, watch and explore a scan in one widget.

Three labelled tabs share one scan: *Define* (the sweep builder), *Run* (run control,
progress, workers, failures and a live plot) and *Explore* (the explorer with its
*Refine* section). Opening an app on a store that already holds results shows what is
done and offers to resume.
"""

from __future__ import annotations

import contextlib
import html
import os
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import NotebookscanError
from ..scan import Scan
from ._counts import counts_text
from ._ui import MUTED_COLOR, error_html
from .builder import SweepBuilder
from .explorer import Explorer
from .liveplot import LivePlot
from .monitor import RunMonitor

__all__ = ["ScanApp"]

TAB_TITLES = ("1 · Define", "2 · Run", "3 · Explore")
LIVE_INTERVAL = 2.0  # s between live-plot reads while a run of another process is watched


class ScanApp(w.VBox):
    """Builder, run control, live plot and explorer for one scan, in labelled tabs.

    Parameters
    ----------
    scan_or_function
        A :class:`~notebookscan.Scan` (its function, space and store fill the form), or
        the function to scan (then give ``store``).
    store
        The result store directory. If it already holds results of this function, the
        form is filled from its last run and *Resume* runs what is missing.
    executor
        Where points run (``"local"`` ipyparallel engines, ``"processes"``,
        ``"serial"``, or any executor ``Scan.run`` accepts); changeable in the *Run* tab.
    interactive
        Zoomable ipympl figures in the *Explore* tab; default: when ipympl is installed
        (``False``: static PNG images).

    Attributes
    ----------
    builder : SweepBuilder
    monitor : RunMonitor
    live : LivePlot
    explorer : Explorer
    tabs : ipywidgets.Tab

    Examples
    --------
    >>> import tempfile
    >>> def model(k: float, tau: float = 0.01, seed: int = 0) -> float:
    ...     return k * tau
    >>> app = ScanApp(model, store=tempfile.mkdtemp(), executor="serial")
    >>> app.builder.rows["k"].count.value = 4
    >>> app.monitor.run_button.click()
    >>> app.monitor.wait().done
    4
    >>> app.tabs.selected_index, app.explorer.var.value
    (1, 'result')
    """

    def __init__(self, scan_or_function: Scan | Callable[..., Any], store: str | os.PathLike[str]
                 | None = None, *, executor: Any = "local",
                 interactive: bool | None = None) -> None:
        scan = scan_or_function if isinstance(scan_or_function, Scan) else None
        function = scan.function if scan is not None else scan_or_function
        if scan is not None:
            store = _shown_path(scan.store.path)
        self.builder = SweepBuilder(function, store=store,
                                    space=scan.space if scan is not None else None)
        if scan is not None:
            self.builder.adopt(scan)
        self._live_read = -float("inf")
        self.monitor = RunMonitor(scan_factory=self.builder.scan, executor=executor)
        self.live = LivePlot(figsize=(6.4, 3.2))  # the Run tab fits a 900 px window
        first = self._initial_scan()
        self.monitor.follow_store(first)  # a run going on the store shows at once
        self.explorer = Explorer(first, monitor=self.monitor, interactive=interactive)
        if first is not None and self.builder.spec.stored:  # results from an earlier session
            self.live.attach(first)
            with contextlib.suppress(NotebookscanError, OSError, ValueError):
                self.live.redraw()
        self._build()
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="940px"))
        self.add_class("nbscan-app")
        self._wire()

    def _initial_scan(self) -> Scan | None:
        try:
            return self.builder.scan()
        except (NotebookscanError, ValueError):
            return None

    # ------------------------------------------------------------------ widgets

    def _build(self) -> None:
        name = getattr(self.builder.function, "__name__", "scan")
        self.header = w.HTML()
        self._name = name
        self.run_shortcut = w.Button(description="Run this scan", icon="play",
                                     button_style="primary", layout=w.Layout(width="150px"))
        self.run_shortcut.add_class("nbscan-run-shortcut")
        self.tabs = w.Tab(children=[
            w.VBox([self.builder, w.HBox([self.run_shortcut],
                                         layout=w.Layout(margin="8px 0 0 0"))]),
            w.VBox([self.monitor, w.HTML("<b>Live plot</b>", layout=w.Layout(
                margin="10px 0 0 0")), self.live]),
            self.explorer,
        ])
        self.tabs.titles = TAB_TITLES
        self.tabs.add_class("nbscan-tabs")

    def _layout(self) -> list[w.Widget]:
        return [self.header, self.tabs]

    # ------------------------------------------------------------------ wiring

    def _wire(self) -> None:
        w.dlink((self.monitor, "workers"), (self.builder.spec, "workers"))
        self.run_shortcut.on_click(lambda _: self._run_from_builder())
        self.monitor.on_start(self._on_start)
        self.monitor.on_end(self._on_end)
        self.builder.spec.observe(self._on_counts, names=["stored", "size", "failed_before",
                                                          "space", "store"])
        # during a run (the form's counts are paused) the monitor's counts are the header's
        self.monitor.observe(self._on_monitor_counts, names="counts")
        self.monitor.observe(self._on_monitor_state, names="state")
        self._on_counts()

    def _run_from_builder(self) -> None:
        self.tabs.selected_index = 1
        self.monitor.start()

    def _on_counts(self, change: Any = None) -> None:
        spec = self.builder.spec
        missing = spec.size - spec.stored - spec.failed_before
        self.monitor.offer_resume(spec.stored + spec.failed_before, missing)
        self.run_shortcut.disabled = spec.space is None and spec.adaptive is None
        status = {"done": spec.stored, "failed": spec.failed_before, "missing": max(0, missing),
                  "total": spec.size}
        scan = self._initial_scan()
        self.monitor.follow_store(scan)
        if scan is not None and not spec.paused:
            # the scan the form describes (perhaps refined since), counted as the monitor
            # and the live plot count it
            self.monitor.refresh_counts()
            if self.monitor.watched_scan() is scan and self.monitor.counts:
                status = dict(self.monitor.counts)
        self._show_header(status)

    def _on_monitor_counts(self, change: Any = None) -> None:
        if self.monitor.counts and self.monitor.watched_scan() is self._initial_scan():
            self._show_header(dict(self.monitor.counts))
        scan = self.monitor.watched_scan()
        if self.monitor.state == "watching" and scan is not None and (
                time.monotonic() - self._live_read >= LIVE_INTERVAL):
            # a run of another process writes the store: the live plot follows it
            self._live_read = time.monotonic()
            self.live.attach(scan)
            self.live.refresh_async()

    def _on_monitor_state(self, change: Any) -> None:
        """A run seen on the store has ended: the live plot shows what it left."""
        if change["old"] in ("watching", "stopping") and change["new"] in ("stopped",
                                                                            "finished"):
            scan = self.monitor.watched_scan()
            if scan is not None:
                self.live.attach(scan)
                self.live.refresh_async()

    def _show_header(self, status: dict[str, int]) -> None:
        """Title, store and the scan's counts (done, failed of all points, missing)."""
        spec = self.builder.spec
        full = os.path.abspath(spec.store) if spec.store else ""
        where = html.escape(_shown_path(full) if full else "no store")
        full = html.escape(full)
        total = status.get("total", status["done"] + status["failed"] + status["missing"])
        counts = (f'<span class="nbscan-header-counts" data-done="{status["done"]}" '
                  f'data-failed="{status["failed"]}" data-total="{total}" '
                  f'style="color:{MUTED_COLOR}">· {counts_text({**status, "total": total})}, '
                  f'{status["missing"]:,} missing</span>')
        self.header.value = (
            '<div style="display:flex;align-items:baseline;gap:10px;margin-bottom:4px">'
            f'<span style="font-size:1.15em;font-weight:600">{html.escape(self._name)}</span>'
            f'<span style="color:{MUTED_COLOR}" title="{full}">scan into <code>{where}</code>'
            "</span>"
            f"{counts}</div>")

    def _on_start(self, monitor: RunMonitor) -> None:
        scan = monitor.scan
        if scan is None:
            return
        self.builder.spec.paused = True  # the run writes the store: read it afterwards
        self.live.attach(scan)
        self.explorer.set_scan(scan)
        if self.tabs.selected_index == 0:
            self.tabs.selected_index = 1

    def _on_end(self, monitor: RunMonitor) -> None:
        self.builder.spec.paused = False
        self.builder.spec.measure_from_store()
        self._on_counts()
        try:
            self.explorer.reload()
        except Exception as exc:  # shown, never raised into the kernel
            self.explorer.error.value = error_html(str(exc))

    @property
    def scan(self) -> Scan | None:
        """The scan of the last run (or the one the form describes)."""
        return self.monitor.scan or self._initial_scan()


def _shown_path(path: str) -> str:
    """``path`` as the header shows it: relative to the working directory when inside it
    (a scan's store path is absolute, the user typed ``results/rates``)."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
