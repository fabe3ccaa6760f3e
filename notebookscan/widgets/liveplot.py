"""A plot of one result that redraws while the scan runs.

Each time the scan writes a batch (the ``flushed`` event) the plot is marked stale; at
most every ``interval`` seconds (default 0.5 s, so at most two redraws a second) the
results are read — in the scan-loop thread, between two writes, so reading never races
the writer — and a background thread renders the figure to PNG for the ``Output``
widget. The kernel's thread only swaps the finished image in.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as w
import traitlets as t

from ..plotting import parameters, plot_result, result_variables
from ..scan import Scan
from ._counts import counts_text, point_counts
from ._figures import LatestWorker, figure_output, message_output
from ._ui import MUTED_COLOR, UiThread, error_html

__all__ = ["LivePlot"]

NONE = "—"


def scalar_results(ds: Any) -> list[str]:
    """Result variables with one value per point (no dimensions of their own)."""
    params = set(parameters(ds))
    own_ok = {"point"} | params
    return [v for v in result_variables(ds) if set(ds[v].dims) <= own_ok]


class LivePlot(w.VBox):
    """A result over one parameter (a line) or two (a heatmap), redrawn as batches land.

    Other parameters (and trials) are averaged; missing points show as gaps or hatched
    cells. Choose what to plot with the drop-downs.

    Parameters
    ----------
    scan
        The scan to follow (or call :meth:`attach` later).
    var, x, y
        Initial result and axes; by default the first scalar result, the first
        parameter with several values, and no ``y``.
    interval
        Minimum seconds between redraws.

    Examples
    --------
    >>> import tempfile, notebookscan as ns
    >>> scan = ns.Scan(lambda k: {"y": k * k}, ns.grid(k=[1, 2, 3]), store=tempfile.mkdtemp())
    >>> live = LivePlot(scan)
    >>> _ = scan.run(executor="serial", progress=False)
    >>> live.redraw()
    >>> live.var.value, live.x.value, "image/png" in live.output.outputs[0]["data"]
    ('y', 'k', True)
    """

    renders = t.Int(0)

    def __init__(self, scan: Scan | None = None, *, var: str | None = None, x: str | None = None,
                 y: str | None = None, interval: float = 0.5,
                 figsize: tuple[float, float] = (6.4, 3.6)) -> None:
        self.scan: Scan | None = None
        self.interval = interval
        self.figsize = figsize
        self.ui = UiThread(on_error=self._show_error)
        self._wanted = {"var": var, "x": x, "y": y}
        self._ds: Any = None
        self._lock = threading.Lock()
        self._stale = False
        self._last_read = 0.0
        self._worker = LatestWorker("notebookscan-liveplot")
        self._build()
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="900px"))
        self.add_class("nbscan-liveplot")
        self._wire()
        self.output.outputs = (message_output("waiting for the first results…"),)
        if scan is not None:
            self.attach(scan)

    # ------------------------------------------------------------------ widgets

    def _build(self) -> None:
        def dropdown(label: str) -> w.Dropdown:
            return w.Dropdown(options=[], description=label, style={"description_width": "40px"},
                              layout=w.Layout(width="200px"))

        self.var = dropdown("plot")
        self.var.add_class("nbscan-live-var")
        self.x = dropdown("x")
        self.y = dropdown("y")
        self.note = w.HTML()
        self.error = w.HTML()
        self.output = w.Output(layout=w.Layout(min_height="120px"))
        self.output.add_class("nbscan-live-output")

    def _layout(self) -> list[w.Widget]:
        return [w.HBox([self.var, self.x, self.y, self.note],
                       layout=w.Layout(align_items="center", grid_gap="4px")),
                self.error, self.output]

    def _wire(self) -> None:
        for control in (self.var, self.x, self.y):
            control.observe(self._on_choice, names="value")

    # ------------------------------------------------------------------ following a scan

    def attach(self, scan: Scan) -> None:
        """Follow ``scan`` (its events); the previous scan, if any, is let go."""
        if self.scan is scan:
            return
        if self.scan is not None:
            for name in ("flushed", "progress", "finished"):
                self.scan.events.off(name, self._make_handler(name))
        self.scan = scan
        for name in ("flushed", "progress", "finished"):
            scan.events.on(name, self._make_handler(name))
        self._ds = None

    def _make_handler(self, name: str) -> Any:
        # one bound handler per event name, remembered so that off() finds it
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            def handler(**_: Any) -> None:
                self._on_loop_event(name)
            setattr(self, f"_on_{name}", handler)
        return handler

    def _on_loop_event(self, name: str) -> None:
        """Scan-loop thread: read the results when stale and due, then render elsewhere."""
        scan = self.scan
        if scan is None:
            return
        now = time.monotonic()
        with self._lock:
            if name == "flushed":
                self._stale = True
            due = self._stale and (name == "finished" or now - self._last_read >= self.interval)
            if not due:
                return
            self._stale = False
            self._last_read = now
        try:
            ds = scan.results()  # in the loop thread: never concurrent with its writes
            self._counts = point_counts(scan)  # what the header and the monitor show
        except Exception as exc:  # shown in the widget; raising would unsubscribe us
            text = f"cannot read the results: {type(exc).__name__}: {exc}"
            self.ui.call(lambda: self._show_error(text))
            return
        self._render_async(ds)

    # ------------------------------------------------------------------ drawing

    def redraw(self) -> None:
        """Read the results now and redraw, in this thread (not while a run writes)."""
        if self.scan is None:
            return
        ds = self.scan.results()
        self._counts = point_counts(self.scan)
        self._render(ds)

    def refresh_async(self) -> None:
        """Read the results and redraw in the background (a run seen on the store, which
        sends this process no events); never while this process's own run writes."""
        scan = self.scan
        if scan is None:
            return

        def read_and_render() -> None:
            try:
                ds = scan.results()
                self._counts = point_counts(scan)
            except Exception as exc:  # shown in the widget, never raised
                text = f"cannot read the results: {type(exc).__name__}: {exc}"
                self.ui.call(lambda: self._show_error(text))
                return
            self._render(ds)
        self._worker.submit(read_and_render)

    def _on_choice(self, change: Any) -> None:
        if getattr(self, "_updating", False):
            return
        self._wanted[{id(self.var): "var", id(self.x): "x", id(self.y): "y"}[
            id(change["owner"])]] = change["new"]
        if self._ds is not None:
            self._render_async(self._ds)

    def _render_async(self, ds: Any) -> None:
        self._worker.submit(lambda: self._render(ds))

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Block until a pending redraw has been shown (for tests and scripts)."""
        return self._worker.wait_idle(timeout)

    def _choose(self, ds: Any) -> tuple[list[str], list[str], str | None, str | None,
                                         str | None]:
        variables = scalar_results(ds)
        params = [p for p in parameters(ds) if p != "trial" or "point" in ds.dims]
        if "point" not in ds.dims:
            varying = [p for p in params if ds.sizes.get(p, 1) > 1] or params
        else:
            varying = params
        wanted = self._wanted
        var = wanted["var"] if wanted["var"] in variables else (variables[0] if variables
                                                                 else None)
        x = wanted["x"] if wanted["x"] in params else (varying[0] if varying else None)
        y = wanted["y"] if wanted["y"] in params and wanted["y"] != x else None
        return variables, params, var, x, y

    def _render(self, ds: Any) -> None:
        self._ds = ds
        variables, params, var, x, y = self._choose(ds)
        self.ui.call(lambda: self._set_options(variables, params, var, x, y))
        counts = counts_text(getattr(self, "_counts", None) or {})
        if var is None or x is None:
            output = message_output("waiting for the first results…")
        else:
            over = [p for p in parameters(ds) if p not in (x, y)]
            if "point" in ds.dims:
                over = []
            try:
                fig = plot_result(ds, var, x, y, over=over or None, figsize=self.figsize)
                output = figure_output(fig)
            except Exception as exc:
                output = message_output(f"cannot plot {var} over {x}: {exc}")
        stamp = time.strftime("%H:%M:%S")

        def show() -> None:
            self.output.outputs = (output,)
            self.renders += 1
            self.error.value = ""
            self.note.value = (f'<span style="color:{MUTED_COLOR};font-size:0.9em">'
                               f"{counts} · updated {html.escape(stamp)}"
                               "</span>")
        self.ui.call(show)

    def _set_options(self, variables: list[str], params: list[str], var: str | None,
                     x: str | None, y: str | None) -> None:
        self._updating = True
        try:
            if list(self.var.options) != variables:
                self.var.options = variables
            if list(self.x.options) != params:
                self.x.options = params
            y_options = [NONE, *params]
            if list(self.y.options) != y_options:
                self.y.options = y_options
            self.var.value = var
            self.x.value = x
            self.y.value = y if y is not None else NONE
        finally:
            self._updating = False

    def _show_error(self, text: str) -> None:
        self.error.value = error_html(text)

    def close(self) -> None:
        self._worker.close()
        super().close()
