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
from ._ui import MUTED_COLOR, UiThread, error_html, format_value

__all__ = ["LivePlot"]

NONE = "—"
#: A parameter with at most this many values can be the hue (one line per value).
_MAX_HUES = 8


def scalar_results(ds: Any) -> list[str]:
    """Result variables with one value per point (no dimensions of their own)."""
    params = set(parameters(ds))
    own_ok = {"point"} | params
    return [v for v in result_variables(ds) if set(ds[v].dims) <= own_ok]


class LivePlot(w.VBox):
    """A result over one parameter (a line) or two (a heatmap), redrawn as batches land.

    Only trials are averaged (the error bars are their standard error). A second
    parameter gives one line per value (*hue*; by default the second parameter with at
    most 8 values), and every other parameter is held at the value its selector shows
    (the first by default). Missing points show as gaps or hatched cells. Choose what to
    plot with the drop-downs.

    Parameters
    ----------
    scan
        The scan to follow (or call :meth:`attach` later).
    var, x, y, hue
        Initial result, axes and hue parameter; by default the first scalar result, the
        first parameter with several values, no ``y``, and the next parameter with at
        most 8 values as hue.
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
                 y: str | None = None, hue: str | None = None, interval: float = 0.5,
                 figsize: tuple[float, float] = (6.4, 3.6)) -> None:
        self.scan: Scan | None = None
        self.interval = interval
        self.figsize = figsize
        self.ui = UiThread(on_error=self._show_error)
        self._wanted = {"var": var, "x": x, "y": y, "hue": hue}
        self._fixed_wanted: dict[str, Any] = {}
        self.selectors: dict[str, w.Dropdown] = {}
        self.last_figure: Any = None
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
        self.hue = dropdown("hue")
        self.hue.add_class("nbscan-live-hue")
        self.selector_box = w.HBox(layout=w.Layout(flex_flow="row wrap", grid_gap="4px"))
        self.selector_box.add_class("nbscan-live-fixed")
        self.note = w.HTML()
        self.error = w.HTML()
        self.output = w.Output(layout=w.Layout(min_height="120px"))
        self.output.add_class("nbscan-live-output")

    def _layout(self) -> list[w.Widget]:
        return [w.HBox([self.var, self.x, self.y, self.hue, self.note],
                       layout=w.Layout(align_items="center", grid_gap="4px",
                                       flex_flow="row wrap")),
                self.selector_box, self.error, self.output]

    def _wire(self) -> None:
        for control in (self.var, self.x, self.y, self.hue):
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
            # a run ends with a fresh read, even when it wrote nothing (all points stored)
            due = name == "finished" or (self._stale and now - self._last_read >= self.interval)
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
        self.wait_idle()  # a background render of older results must not land after this one
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
        self._wanted[{id(self.var): "var", id(self.x): "x", id(self.y): "y",
                      id(self.hue): "hue"}[id(change["owner"])]] = change["new"]
        if self._ds is not None:
            self._render_async(self._ds)

    def _render_async(self, ds: Any) -> None:
        self._worker.submit(lambda: self._render(ds))

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Block until a pending redraw has been shown (for tests and scripts)."""
        return self._worker.wait_idle(timeout)

    def _choose(self, ds: Any) -> dict[str, Any]:
        """What to plot: the result, the axes, the hue, and each other parameter's value."""
        variables = scalar_results(ds)
        points = "point" in ds.dims
        params = [p for p in parameters(ds) if p != "trial" or points]
        varying = params if points else ([p for p in params if ds.sizes.get(p, 1) > 1]
                                         or params)
        wanted = self._wanted
        var = wanted["var"] if wanted["var"] in variables else (variables[0] if variables
                                                                 else None)
        x = wanted["x"] if wanted["x"] in params else (varying[0] if varying else None)
        y = wanted["y"] if wanted["y"] in params and wanted["y"] != x else None
        hue = None
        if not points and y is None:
            if wanted["hue"] in params and wanted["hue"] != x:
                hue = wanted["hue"]
            elif wanted["hue"] is None:  # not chosen yet: the next parameter with few values
                hue = next((p for p in varying if p != x and ds.sizes.get(p, 1) <= _MAX_HUES),
                           None)
        fixed: dict[str, tuple[list[Any], Any]] = {}
        if not points:
            for name in params:
                if name in (x, y, hue) or name not in ds.coords or ds.sizes.get(name, 1) < 2:
                    continue
                values = ds[name].values.tolist()
                chosen = self._fixed_wanted.get(name)
                fixed[name] = (values, chosen if chosen in values else values[0])
        return {"variables": variables, "params": params, "var": var, "x": x, "y": y,
                "hue": hue, "fixed": fixed}

    def figure(self, ds: Any) -> Any:
        """The plot of ``ds`` as the controls choose it (a matplotlib Figure, or None)."""
        choice = self._choose(ds)
        var, x = choice["var"], choice["x"]
        if var is None or x is None:
            return None
        if "point" in ds.dims:
            return plot_result(ds, var, x, choice["y"], over=None, figsize=self.figsize)
        return plot_result(ds, var, x, choice["y"], hue=choice["hue"], over="trial",
                           slice={k: v for k, (_, v) in choice["fixed"].items()},
                           figsize=self.figsize)

    def _render(self, ds: Any) -> None:
        self._ds = ds
        choice = self._choose(ds)
        var, x = choice["var"], choice["x"]
        self.ui.call(lambda: self._set_options(choice))
        counts = counts_text(getattr(self, "_counts", None) or {})
        if var is None or x is None:
            output = message_output("waiting for the first results…")
        else:
            try:
                fig = self.figure(ds)
                self.last_figure = fig
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

    def _set_options(self, choice: dict[str, Any]) -> None:
        variables, params = choice["variables"], choice["params"]
        self._updating = True
        try:
            if list(self.var.options) != variables:
                self.var.options = variables
            if list(self.x.options) != params:
                self.x.options = params
            y_options = [NONE, *params]
            if list(self.y.options) != y_options:
                self.y.options = y_options
            if list(self.hue.options) != y_options:
                self.hue.options = y_options
            self.var.value = choice["var"]
            self.x.value = choice["x"]
            self.y.value = choice["y"] if choice["y"] is not None else NONE
            self.hue.value = choice["hue"] if choice["hue"] is not None else NONE
            self.hue.layout.display = "none" if choice["y"] is not None or "point" in (
                self._ds.dims if self._ds is not None else ()) else None
            self._set_selectors(choice["fixed"])
        finally:
            self._updating = False

    def _set_selectors(self, fixed: dict[str, tuple[list[Any], Any]]) -> None:
        """One drop-down per parameter held fixed (rebuilt only when they change)."""
        same = (list(self.selectors) == list(fixed)
                and all([v for _, v in self.selectors[n].options] == fixed[n][0] for n in fixed))
        if not same:
            selectors = {}
            for name, (values, _) in fixed.items():
                widget = w.Dropdown(options=[(format_value(v), v) for v in values],
                                    description=name, style={"description_width": "60px"},
                                    layout=w.Layout(width="200px"))
                widget.add_class("nbscan-live-select")
                widget.observe(self._make_selector_handler(name), names="value")
                selectors[name] = widget
            for old in self.selectors.values():
                old.close()
            self.selectors = selectors
            self.selector_box.children = tuple(selectors.values())
        for name, (_, value) in fixed.items():
            self.selectors[name].value = value

    def _make_selector_handler(self, name: str) -> Any:
        def on_select(change: Any) -> None:
            if getattr(self, "_updating", False):
                return
            self._fixed_wanted[name] = change["new"]
            if self._ds is not None:
                self._render_async(self._ds)
        return on_select

    def _show_error(self, text: str) -> None:
        self.error.value = error_html(text)

    def close(self) -> None:
        self._worker.close()
        super().close()
