"""Explore a scan's results, and refine it where it is interesting.

:class:`Explorer` shows one result over one or two dimensions (a line with error bars
over trials, or a heatmap) with a slider or drop-down for every other dimension, or the
status map of done/failed/missing points. Given a scan, its *Refine* section adds a
finer sub-range of some parameters (or more trials): only the new points run, into the
same store, and the explorer then shows old and new together.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t

from ..errors import ArgumentError, NotebookscanError
from ..plotting import parameters, plot_result, plot_status, result_variables, try_grid
from ..scan import Scan
from ..store import open_store
from ..store.schema import STATUS
from ._figures import figure_output, has_ipympl, message_output, show_interactive
from ._ui import MUTED_COLOR, error_html, format_value, heading_html, muted_html

__all__ = ["Explorer", "RefinePanel"]

NONE = "—"


def _grid_view(ds: Any) -> Any:
    """The dataset with one dimension per parameter when possible."""
    if "point" in ds.dims:
        gridded = try_grid(ds)
        return gridded if gridded is not None else ds
    return ds


class Explorer(w.VBox):
    """Look at a scan's results: pick a variable and axes, slice the rest.

    Parameters
    ----------
    source
        A store path, an :class:`xarray.Dataset` (e.g. ``scan.results()``), or a
        :class:`~notebookscan.Scan` (then missing points show too, and the *Refine*
        section can add points).
    var, x, y
        Initial choices (default: the first result, the first parameter, no ``y``).
    monitor
        A :class:`~notebookscan.widgets.RunMonitor` that runs refinements; without one,
        *Refine and run* runs ``scan.run(wait=False)`` itself.
    interactive
        Show zoomable ipympl figures; default: when ipympl is installed.

    Examples
    --------
    >>> import tempfile, numpy as np, notebookscan as ns
    >>> def f(k: float, tau: float = 0.1, seed: int = 0):
    ...     return {"y": k * tau + np.random.default_rng(seed).normal()}
    >>> scan = ns.Scan(f, ns.grid(k=[1.0, 2.0, 3.0], tau=[0.1, 0.2]) * ns.trials(3),
    ...                store=tempfile.mkdtemp())
    >>> _ = scan.run(executor="serial", progress=False)
    >>> ex = Explorer(scan, interactive=False)
    >>> ex.var.value, ex.x.value, sorted(ex.sliders), ex.average.value
    ('y', 'k', ['tau'], True)
    >>> ex.y.value = "tau"                     # heatmap of the trial mean
    >>> "image/png" in ex.output.outputs[0]["data"]
    True
    """

    def __init__(self, source: Any, *, var: str | None = None, x: str | None = None,
                 y: str | None = None, monitor: Any = None,
                 interactive: bool | None = None) -> None:
        self.source = source
        self.scan: Scan | None = source if isinstance(source, Scan) else None
        self.monitor = monitor
        self.interactive = has_ipympl() if interactive is None else interactive
        self.ds: Any = None
        self.view: Any = None
        self.sliders: dict[str, w.Widget] = {}
        self._updating = False
        self._build()
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="900px"))
        self.add_class("nbscan-explorer")
        self._wire()
        self._wanted = {"var": var, "x": x, "y": y}
        self.refine: RefinePanel | None = None
        if self.scan is not None:
            self.refine = RefinePanel(self.scan, monitor=monitor, on_run=self._after_refine)
            self.children = (*self.children, self.refine)
        self.reload()

    # ------------------------------------------------------------------ widgets

    def _build(self) -> None:
        def dropdown(label: str, width: str = "210px") -> w.Dropdown:
            return w.Dropdown(options=[], description=label,
                              style={"description_width": "56px"}, layout=w.Layout(width=width))

        self.var = dropdown("variable", "250px")
        self.var.add_class("nbscan-explore-var")
        self.x = dropdown("x")
        self.x.add_class("nbscan-explore-x")
        self.y = dropdown("y")
        self.y.add_class("nbscan-explore-y")
        self.average = w.Checkbox(value=True, description="average over trials", indent=False,
                                  layout=w.Layout(width="170px"))
        self.average.add_class("nbscan-explore-average")
        self.mode = w.ToggleButtons(options=[("values", "values"), ("status", "status")],
                                    value="values", style={"button_width": "70px"})
        self.mode.add_class("nbscan-explore-mode")
        self.reload_button = w.Button(description="Reload", icon="refresh",
                                      tooltip="read the store again",
                                      layout=w.Layout(width="100px"))
        self.slice_box = w.VBox(layout=w.Layout(margin="2px 0"))
        self.slice_box.add_class("nbscan-explore-slices")
        self.note = w.HTML()
        self.error = w.HTML()
        self.output = w.Output(layout=w.Layout(min_height="120px"))
        self.output.add_class("nbscan-explore-output")

    def _layout(self) -> list[w.Widget]:
        return [
            w.HBox([self.var, self.x, self.y], layout=w.Layout(grid_gap="4px")),
            w.HBox([self.mode, self.average, self.reload_button, self.note],
                   layout=w.Layout(align_items="center", grid_gap="8px")),
            self.slice_box, self.error, self.output,
        ]

    def _wire(self) -> None:
        self.var.observe(self._on_var, names="value")
        for control in (self.x, self.y, self.average):
            control.observe(self._on_axes, names="value")
        self.mode.observe(lambda _: self.draw(), names="value")
        self.reload_button.on_click(lambda _: self.reload())

    # ------------------------------------------------------------------ data

    def _read(self) -> Any:
        source = self.source
        if source is None:
            return None
        if isinstance(source, Scan):
            return source.results()
        if isinstance(source, (str, os.PathLike)):
            return open_store(source)
        return source

    def reload(self) -> None:
        """Read the results again (a store or scan) and redraw, keeping the choices."""
        monitor = self.monitor
        if monitor is not None and getattr(monitor, "state", "") in ("running", "stopping",
                                                                     "starting"):
            self.note.value = muted_html("reloads when the run ends")
            return
        try:
            ds = self._read()
        except (NotebookscanError, OSError, ValueError) as exc:
            self.error.value = error_html(str(exc))
            return
        if ds is None:
            self.output.outputs = (message_output("no results yet: run the scan first"),)
            return
        self.set_dataset(ds)
        if self.refine is not None:
            self.refine.update_ranges(self.view)

    def set_dataset(self, ds: Any) -> None:
        """Show ``ds`` (keeping the current choices when they still apply)."""
        self.ds = ds
        self.view = _grid_view(ds)
        variables = result_variables(self.view)
        stored = int(ds[STATUS].isin(["done", "failed"]).sum()) if STATUS in ds else 0
        total = int(ds[STATUS].size) if STATUS in ds else 0
        self.note.value = muted_html(f"{stored:,} of {total:,} points stored") if total else ""
        self._updating = True
        try:
            self.var.options = variables
            wanted = self._wanted["var"] or self.var.value
            self.var.value = wanted if wanted in variables else (variables[0] if variables
                                                                  else None)
        finally:
            self._updating = False
        self._on_var()

    def _dims(self) -> list[str]:
        view, var = self.view, self.var.value
        if view is None:
            return []
        if var is None:
            return [p for p in parameters(view) if p in view.dims or p in view.coords]
        if "point" in view.dims:  # scattered points: parameters are the axes
            return [*parameters(view), *[d for d in view[var].dims if d != "point"]]
        return [str(d) for d in view[var].dims]

    def _on_var(self, change: Any = None) -> None:
        if self._updating:
            return
        if change is not None:
            self._wanted["var"] = change["new"]
        dims = self._dims()
        params = [p for p in parameters(self.view) if p in dims] if self.view is not None else []
        choices = [d for d in dims if d != "trial"] or dims
        self._updating = True
        try:
            self.x.options = choices
            wanted_x = self._wanted["x"] or self.x.value
            self.x.value = wanted_x if wanted_x in choices else (
                next((p for p in params if p in choices and self.view.sizes.get(p, 2) > 1),
                     choices[0] if choices else None))
            y_choices = [NONE, *choices]
            self.y.options = y_choices
            wanted_y = self._wanted["y"]
            self.y.value = wanted_y if wanted_y in choices and wanted_y != self.x.value else NONE
        finally:
            self._updating = False
        self._on_axes()

    def _on_axes(self, change: Any = None) -> None:
        if self._updating:
            return
        if change is not None and change["owner"] in (self.x, self.y):
            self._wanted["x" if change["owner"] is self.x else "y"] = (
                change["new"] if change["new"] != NONE else None)
        self._build_sliders()
        self.draw()

    def _axes(self) -> tuple[str | None, str | None]:
        y = self.y.value
        return self.x.value, (None if y in (NONE, None) or y == self.x.value else y)

    def _build_sliders(self) -> None:
        view = self.view
        if view is None:
            self.slice_box.children = ()
            return
        has_trials = "trial" in self._dims()
        self.average.layout.display = None if has_trials else "none"
        x, y = self._axes()
        keep = {x, y}
        if has_trials and self.average.value:
            keep.add("trial")
        if "point" in view.dims:
            wanted: list[str] = [d for d in self._dims() if d not in keep
                                 and d not in parameters(view)]
        else:
            wanted = [d for d in self._dims() if d not in keep]
        old = self.sliders
        sliders: dict[str, w.Widget] = {}
        fixed = []
        self._fixed = {}
        for dim in wanted:
            if view.sizes.get(dim, 0) == 1 and dim in view.coords:  # nothing to choose
                self._fixed[dim] = view[dim].values[0].tolist()
                fixed.append(f"{dim} = {format_value(self._fixed[dim])}")
                continue
            current = getattr(old.get(dim), "value", None)
            sliders[dim] = self._slider(dim, current)
        self.sliders = sliders
        note = [w.HTML(muted_html("fixed: " + ", ".join(fixed)))] if fixed else []
        self.slice_box.children = (*sliders.values(), *note)

    def _slider(self, dim: str, current: Any) -> w.Widget:
        view = self.view
        style = {"description_width": "90px"}
        layout = w.Layout(width="520px")
        if dim in view.coords:
            values = view[dim].values.tolist()
            if view[dim].dtype.kind in "iuf":
                options = [(format_value(v), v) for v in values]
                value = current if current in values else values[0]
                widget: w.Widget = w.SelectionSlider(options=options, value=value,
                                                     description=dim, style=style,
                                                     layout=layout, continuous_update=False)
            else:
                value = current if current in values else values[0]
                widget = w.Dropdown(options=values, value=value, description=dim, style=style,
                                    layout=w.Layout(width="320px"))
        else:
            size = view.sizes[dim]
            widget = w.IntSlider(value=current if isinstance(current, int) and current < size
                                 else 0, min=0, max=max(size - 1, 0), description=dim,
                                 style=style, layout=layout, continuous_update=False)
        widget.add_class("nbscan-slice")
        widget.observe(lambda _: self.draw(), names="value")
        return widget

    def selection(self) -> dict[str, Any]:
        """The values chosen for the sliced dimensions."""
        chosen = dict(getattr(self, "_fixed", {}))
        chosen.update({dim: widget.value for dim, widget in self.sliders.items()})
        order = [d for d in self._dims() if d in chosen]
        return {d: chosen[d] for d in order + [d for d in chosen if d not in order]}

    # ------------------------------------------------------------------ drawing

    def figure(self) -> Any:
        """The current plot as a matplotlib Figure (None when there is nothing to plot)."""
        view, var = self.view, self.var.value
        x, y = self._axes()
        if view is None or x is None:
            return None
        if self.mode.value == "status":
            params = parameters(view)
            sx = x if x in params else (params[0] if params else None)
            sy = y if y in params else None
            return plot_status(view, sx, sy, slice=self.selection(), figsize=(6.4, 3.8))
        if var is None:
            return None
        over = "trial" if self.average.value else None
        return plot_result(view, var, x, y, over=over, slice=self.selection(),
                           figsize=(6.4, 3.8))

    def draw(self) -> None:
        """Redraw the plot from the loaded data."""
        if self._updating:
            return
        try:
            fig = self.figure()
        except (ValueError, KeyError) as exc:
            self.error.value = error_html(str(exc))
            return
        self.error.value = ""
        if fig is None:
            self.output.outputs = (message_output("nothing to plot yet"),)
            return
        if self.interactive and show_interactive(self.output, fig):
            return
        self.output.outputs = (figure_output(fig),)

    def set_scan(self, scan: Scan) -> None:
        """Show (and refine) ``scan`` from now on."""
        if scan is self.scan:
            return
        self.source = self.scan = scan
        self.error.value = ""
        if self.refine is None:
            self.refine = RefinePanel(scan, monitor=self.monitor, on_run=self._after_refine)
            self.children = (*self.children, self.refine)
        else:
            self.refine.set_scan(scan)

    def _after_refine(self) -> None:
        if self.monitor is None:
            self.reload()


class RefinePanel(w.VBox):
    """Add points to a scan: a finer sub-range of some parameters, or more trials.

    For each numeric parameter of a grid scan: tick it, choose a sub-range with the
    range slider and a count (linear or log spaced). ``trials`` sets the number of
    trials. The preview counts the points that are new; *Refine and run* calls
    ``scan.refine(...)`` and runs only those, into the same store.

    Examples
    --------
    >>> import tempfile, notebookscan as ns
    >>> scan = ns.Scan(lambda k: k, ns.grid(k=[0.0, 1.0, 2.0]), store=tempfile.mkdtemp())
    >>> _ = scan.run(executor="serial", progress=False)
    >>> panel = RefinePanel(scan)
    >>> panel.update_ranges(scan.results())
    >>> panel.axes["k"]["use"].value = True
    >>> panel.axes["k"]["span"].value = (0.0, 1.0)
    >>> panel.axes["k"]["count"].value = 5          # 0, 0.25, 0.5, 0.75, 1
    >>> panel.preview, panel.refinement()
    (3, {'k': [0.0, 0.25, 0.5, 0.75, 1.0]})
    """

    preview = t.Int(0)
    error_text = t.Unicode("")

    def __init__(self, scan: Scan, *, monitor: Any = None,
                 on_run: Callable[[], None] | None = None) -> None:
        self.scan = scan
        self.monitor = monitor
        self.on_run = on_run
        self.axes: dict[str, dict[str, w.Widget]] = {}
        self._build()
        super().__init__(self._layout(), layout=w.Layout(margin="10px 0 0 0",
                                                         border_top="1px solid #e0e0e0"))
        self.add_class("nbscan-refine")
        self._wire()

    def _build(self) -> None:
        self.title = w.HTML(heading_html("Refine", "finer sub-ranges or more trials; only "
                                                   "new points run"))
        self.rows = w.VBox()
        trial_count = 0
        if "trial" in self.scan.space.names:
            trial_count = len(self.scan.space.grid_coords().get("trial", [])) \
                if self.scan.space.layout.kind == "grid" else 0
        self.trials = w.BoundedIntText(value=max(trial_count, 1), min=1, max=100_000,
                                       description="trials", style={"description_width": "90px"},
                                       layout=w.Layout(width="200px"))
        self.trials.add_class("nbscan-refine-trials")
        self.trials.layout.display = None if "trial" in self.scan.space.names else "none"
        self.preview_html = w.HTML()
        self.preview_html.add_class("nbscan-refine-preview")
        self.button = w.Button(description="Refine and run", button_style="primary",
                               icon="search-plus", layout=w.Layout(width="150px"))
        self.button.add_class("nbscan-refine-run")
        self.message = w.HTML()

    def _layout(self) -> list[w.Widget]:
        return [self.title, self.rows, self.trials,
                w.HBox([self.button, self.preview_html],
                       layout=w.Layout(align_items="center", grid_gap="10px")),
                self.message]

    def _wire(self) -> None:
        self.trials.observe(self._check, names="value")
        self.button.on_click(lambda _: self.apply())
        self.observe(self._show_preview, names=["preview", "error_text"])

    def set_scan(self, scan: Scan) -> None:
        """Refine ``scan`` from now on (shows the trials box only if it has trials)."""
        self.scan = scan
        names = scan.space.names
        self.trials.layout.display = None if "trial" in names else "none"
        if "trial" in names and scan.space.layout.kind == "grid":
            self.trials.value = max(1, len(scan.space.grid_coords().get("trial", [])))
        self._check()

    def update_ranges(self, view: Any) -> None:
        """Offer a range slider for each numeric grid parameter of ``view``."""
        if view is None or "point" in view.dims:
            self.rows.children = (w.HTML(muted_html(
                "refining sub-ranges works on grid scans; this scan's points are not on a "
                "grid (add points with scan.refine(space) in code)")),)
            self.axes = {}
            self._check()
            return
        rows, axes = [], {}
        for name in parameters(view):
            if name == "trial" or name not in view.coords or view[name].dtype.kind not in "iuf":
                continue
            values = np.asarray(view[name].values, dtype=float)
            if len(values) < 2:
                continue
            low, high = float(values.min()), float(values.max())
            old = self.axes.get(name)
            if old is not None and (old["span"].min, old["span"].max) != (low, high):
                old = None  # another range (a new scan): start from the full range
            use = w.Checkbox(value=old["use"].value if old else False, description=name,
                             indent=False, layout=w.Layout(width="90px"))
            span = w.FloatRangeSlider(value=old["span"].value if old else (low, high),
                                      min=low, max=high, step=(high - low) / 1000,
                                      readout_format=".4g", continuous_update=False,
                                      layout=w.Layout(width="330px"))
            count = w.BoundedIntText(value=old["count"].value if old else 2 * len(values) - 1,
                                     min=1, max=100_000, description="count",
                                     style={"description_width": "40px"},
                                     layout=w.Layout(width="120px"))
            scale = w.Dropdown(options=["linear", "log"], value=old["scale"].value if old
                               else "linear", layout=w.Layout(width="80px"))
            for widget in (use, span, count, scale):
                widget.observe(self._check, names="value")
            row = w.HBox([use, span, count, scale], layout=w.Layout(align_items="center"))
            row.add_class(f"nbscan-refine-{name}")
            axes[name] = {"use": use, "span": span, "count": count, "scale": scale,
                          "integer": view[name].dtype.kind in "iu"}
            rows.append(row)
        self.axes = axes
        self.rows.children = tuple(rows)
        self._check()

    def refinement(self) -> dict[str, Any]:
        """The ``scan.refine(**axes)`` arguments the form describes (may raise ArgumentError)."""
        axes: dict[str, Any] = {}
        for name, row in self.axes.items():
            if not row["use"].value:
                continue
            low, high = row["span"].value
            count, scale = row["count"].value, row["scale"].value
            if count > 1 and not low < high:
                raise ArgumentError(f"{name}: choose a range with min below max")
            if scale == "log" and low <= 0:
                raise ArgumentError(f"{name}: a log range needs min > 0")
            values = (np.geomspace(low, high, count) if scale == "log"
                      else np.linspace(low, high, count))
            if row["integer"]:
                values = np.unique(np.round(values).astype(int))
            else:
                values = np.array([float(f"{v:.12g}") for v in values])
            axes[name] = values.tolist()
        if "trial" in self.scan.space.names:
            current = len(self.scan.space.grid_coords().get("trial", [])) \
                if self.scan.space.layout.kind == "grid" else 0
            if self.trials.value != current:
                axes["trials"] = self.trials.value
        return axes

    def _check(self, change: Any = None) -> None:
        try:
            axes = self.refinement()
            if not axes:
                self.error_text = ""
                self.preview = 0
                return
            extra = self.scan.space.refine(**axes)
            known = set(self.scan.space.keys())
            candidates = extra.keys()  # a Space's point keys (iterating gives points)
            new = [k for k in candidates if k not in known]
            self.error_text = ""
            self.preview = len(new)
        except (ValueError, NotebookscanError) as exc:
            self.error_text = str(exc)
            self.preview = 0
        finally:
            self._show_preview()

    def _show_preview(self, change: Any = None) -> None:
        if self.error_text:
            self.preview_html.value = error_html(self.error_text)
            self.button.disabled = True
            return
        self.button.disabled = self.preview == 0
        self.preview_html.value = (
            f'<span class="nbscan-preview" data-new="{self.preview}">'
            f"<b>{self.preview:,}</b> new point{'s' if self.preview != 1 else ''}</span>"
            if self.preview else
            f'<span style="color:{MUTED_COLOR}">tick a parameter or change the trials</span>')

    def apply(self) -> None:
        """Refine the scan as the form says and run the new points (in the background)."""
        try:
            axes = self.refinement()
            if not axes:
                return
            self.scan.refine(**axes)
        except (ValueError, NotebookscanError) as exc:
            self.error_text = str(exc)
            return
        self.message.value = muted_html(
            "refined: " + ", ".join(f"{k}={_short(v)}" for k, v in axes.items()))
        if self.monitor is not None:
            self.monitor.start()
        else:
            self.scan.run(wait=False, progress=False)
        self._check()
        if self.on_run is not None:
            self.on_run()


def _short(values: Any) -> str:
    if isinstance(values, list):
        if len(values) > 4:
            return f"{len(values)} values {format_value(values[0])}…{format_value(values[-1])}"
        return "[" + ", ".join(format_value(v) for v in values) + "]"
    return html.escape(str(values))

