"""Explore a scan's results, and refine it where it is interesting.

:class:`Explorer` shows one result over one or two dimensions (a line with error bars
over trials, or a heatmap) with a slider or drop-down for every other dimension, or the
status map of done/failed/missing points. Given a scan, its *Refine* section adds a
finer sub-range of some parameters (or more trials): only the new points run, into the
same store, and the explorer then shows old and new together.

Selecting on the plot fills the *Refine* section: drag a rectangle (a heatmap) or a span
(a line) with the mouse on the zoomable ipympl figure, or click a cell or point to refine
around it. The mouse calls :meth:`Explorer.select_region` and
:meth:`Explorer.select_point`, which work from code too (and without ipympl).

An :class:`~notebookscan.adaptive.AdaptiveScan`'s samples are drawn as they are (a line
through them, or their triangulation) and a selected region is refined adaptively: its
*Refine adaptively* section (:class:`AdaptiveRefinePanel`) runs a new learner over the
region into the same store.
"""

from __future__ import annotations

import os
from typing import Any

import ipywidgets as w
import numpy as np

from ..adaptive import AdaptiveScan
from ..errors import ArgumentError, NotebookscanError
from ..plotting import looks_log, parameters, plot_result, plot_status, result_variables, try_grid
from ..scan import Scan
from ..store import open_store
from ..store.schema import STATUS
from ._figures import figure_output, has_ipympl, message_output, show_interactive
from ._ui import error_html, format_value, muted_html
from .adaptive_refine import AdaptiveRefinePanel
from .refine import RefinePanel

__all__ = ["AdaptiveRefinePanel", "Explorer", "RefinePanel"]

NONE = "—"
#: A mouse press and release closer than this (pixels) is a click, not a drag.
_CLICK_PIXELS = 5


def _grid_view(ds: Any, samples: bool = False) -> Any:
    """The dataset with one dimension per parameter when its points fill that grid.

    Points that would leave holes in it (an adaptive scan's samples, random samples)
    are shown as they are: a line through them, or their triangulation. ``samples``
    keeps them so always (an adaptive scan).
    """
    if "point" not in ds.dims or samples:
        return ds
    gridded = try_grid(ds)
    if gridded is None or STATUS not in gridded or STATUS not in ds:
        return ds if gridded is None else gridded
    filled = int(gridded[STATUS].size) == int(ds.sizes["point"])
    return gridded if filled else ds


def _few_values(column: Any) -> bool:
    """A points-layout parameter of grid cells or trials (repeated values: strings,
    integers, or floats taking at most a quarter as many values as there are points),
    which a slider picks; continuous samples are drawn, not sliced."""
    values = np.asarray(column)
    distinct = len(np.unique(values if values.dtype.kind in "biuf" else values.astype(str)))
    if values.dtype.kind == "f":
        return 4 * distinct <= len(values)
    return distinct < len(values)


class Explorer(w.VBox):
    """Look at a scan's results: pick a variable and axes, slice the rest.

    Parameters
    ----------
    source
        A store path, an :class:`xarray.Dataset` (e.g. ``scan.results()``), or a
        :class:`~notebookscan.Scan` (then missing points show too, and the *Refine*
        section can add points; for an :class:`~notebookscan.adaptive.AdaptiveScan`,
        *Refine adaptively* runs a new learner over a region).
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
        self.slice_fields: dict[str, w.Text] = {}
        #: The grid values of the last clicked cell or point, ``{dimension: value}``.
        self.selected: dict[str, Any] = {}
        self._log: dict[str, bool] = {}  # the user's log/linear choice per axis
        self._mouse: Any = None
        self._updating = False
        self._build()
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="900px"))
        self.add_class("nbscan-explorer")
        self._wire()
        self._wanted = {"var": var, "x": x, "y": y}
        self.refine: Any = None
        if self.scan is not None:
            self.refine = self._refine_panel(self.scan)
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
        self.logx = w.Checkbox(value=False, description="log x", indent=False,
                               layout=w.Layout(width="64px"))
        self.logx.add_class("nbscan-explore-logx")
        self.logy = w.Checkbox(value=False, description="log y", indent=False,
                               layout=w.Layout(width="64px"))
        self.logy.add_class("nbscan-explore-logy")
        self.picked = w.HTML()
        self.picked.add_class("nbscan-explore-picked")
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
            w.HBox([self.mode, self.average, self.logx, self.logy, self.reload_button,
                    self.note], layout=w.Layout(align_items="center", grid_gap="8px")),
            self.slice_box, self.error, self.output, self.picked,
        ]

    def _wire(self) -> None:
        self.var.observe(self._on_var, names="value")
        for control in (self.x, self.y, self.average):
            control.observe(self._on_axes, names="value")
        self.mode.observe(lambda _: self._on_axes(), names="value")
        for box in (self.logx, self.logy):
            box.observe(self._on_log, names="value")
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
        self.view = _grid_view(ds, samples=isinstance(self.scan, AdaptiveScan))
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
        if self.view is not None and "point" in self.view.dims:  # samples first, cells after
            params = sorted(params, key=self._is_cell)
            choices = sorted(choices, key=self._is_cell)
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
        self._show_log()
        self.draw()

    # ------------------------------------------------------------------ log axes

    def _log_keys(self) -> tuple[str | None, str | None]:
        """What the two log boxes scale: the x parameter, and the y parameter (a map) or
        the plotted values (a line; no box for status bars)."""
        x, y = self._axes()
        if y is not None:
            return x, y
        if self.mode.value == "status":
            return x, None
        return x, f"{self.var.value} (values)" if self.var.value else None

    def _auto_log(self, key: str | None) -> bool:
        view = self.view
        if view is None or key not in view.coords or view[key].dtype.kind not in "iuf":
            return False
        return looks_log(view[key].values)

    def _loggable(self, key: str | None) -> bool:
        view = self.view
        if key is None or view is None:
            return False
        if key in view.coords:
            return view[key].dtype.kind in "iuf" and bool((view[key].values > 0).all())
        return True  # the values axis of a line

    def _show_log(self) -> None:
        """Boxes show the scale drawn: the user's choice, else the guess from the values."""
        self._updating = True
        try:
            for box, key in zip((self.logx, self.logy), self._log_keys(), strict=True):
                usable = self._loggable(key)
                box.layout.display = None if usable else "none"
                box.value = usable and self._log.get(key, self._auto_log(key))
        finally:
            self._updating = False

    def _on_log(self, change: Any) -> None:
        if self._updating:
            return
        key = self._log_keys()[0 if change["owner"] is self.logx else 1]
        if key is not None:
            self._log[key] = bool(change["new"])
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
            wanted: list[str] = [d for d in self._dims() if d not in keep and (
                d not in parameters(view) or self._is_cell(d))]
        else:
            wanted = [d for d in self._dims() if d not in keep]
        old = self.sliders
        sliders: dict[str, w.Widget] = {}
        fixed = []
        self._fixed = {}
        for dim in wanted:
            if dim in view.coords and len(np.unique(view[dim].values)) == 1:  # no choice
                self._fixed[dim] = np.asarray(view[dim].values)[:1].tolist()[0]
                fixed.append(f"{dim} = {format_value(self._fixed[dim])}")
                continue
            current = getattr(old.get(dim), "value", None)
            sliders[dim] = self._slider(dim, current)
        self.sliders = sliders
        self.slice_fields = {}
        rows = []
        for dim, slider in sliders.items():
            field = self._slice_field(dim, slider)
            if field is None:
                rows.append(slider)
                continue
            self.slice_fields[dim] = field
            rows.append(w.HBox([slider, field], layout=w.Layout(align_items="center")))
        note = [w.HTML(muted_html("fixed: " + ", ".join(fixed)))] if fixed else []
        self.slice_box.children = (*rows, *note)

    def _is_cell(self, dim: str) -> bool:
        """A parameter of scattered points that a slider picks (a grid cell, a trial):
        an adaptive scan's grid parameters, else those with few repeated values."""
        spec = getattr(self.scan, "spec", None)
        if isinstance(self.scan, AdaptiveScan) and spec is not None:
            return dim in spec.cell_names or dim == "trial"
        return dim in self.view.coords and _few_values(self.view[dim].values)

    def _slider(self, dim: str, current: Any) -> w.Widget:
        view = self.view
        style = {"description_width": "90px"}
        layout = w.Layout(width="520px")
        if dim in view.coords:
            values = (np.unique(view[dim].values) if "point" in view[dim].dims
                      else view[dim].values).tolist()
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

    def _slice_field(self, dim: str, slider: w.Widget) -> w.Text | None:
        """A text field beside a numeric slider: type a value, the nearest one is shown."""
        if not isinstance(slider, w.SelectionSlider):
            return None
        field = w.Text(value=format_value(slider.value), continuous_update=False,
                       layout=w.Layout(width="90px"))
        field.add_class("nbscan-slice-value")

        def typed(change: Any) -> None:
            try:
                wanted = float(change["new"])
            except ValueError:
                self.error.value = error_html(f"{dim}: {change['new']!r} is not a number")
                return
            values = np.asarray([v for _, v in slider.options], dtype=float)
            nearest = [v for _, v in slider.options][int(np.argmin(np.abs(values - wanted)))]
            if slider.value == nearest:
                field.value = format_value(nearest)
            slider.value = nearest

        def moved(change: Any) -> None:
            field.value = format_value(change["new"])

        field.observe(typed, names="value")
        slider.observe(moved, names="value")
        return field

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
            return plot_status(view, sx, sy, slice=self.selection(), figsize=(6.4, 3.8),
                               logx=self.logx.value, logy=self.logy.value if sy else None)
        if var is None:
            return None
        over = "trial" if self.average.value else None
        return plot_result(view, var, x, y, over=over, slice=self.selection(),
                           logx=self.logx.value, logy=self.logy.value, figsize=(6.4, 3.8))

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
            self.connect_mouse(fig)
            return
        self.output.outputs = (figure_output(fig),)

    # ------------------------------------------------------------------ selecting

    def select_region(self, x: tuple[float, float] | None = None,
                      y: tuple[float, float] | None = None) -> dict[str, tuple[float, float]]:
        """Refine the plotted parameters over a region of the plot (what a mouse drag does).

        Parameters
        ----------
        x, y
            ``(low, high)`` along the plot's x and y axes, in data values (either order;
            clipped to the scanned range). ``y`` is ignored on a line plot (its y axis
            holds values, not a parameter).

        Returns
        -------
        dict
            ``{parameter: (low, high)}`` as set in the *Refine* section: ticked, with the
            count doubling the values inside, log spaced where the axis is drawn log.

            For an adaptive scan: ``{parameter: (low, high)}`` set as the region of
            *Refine adaptively* (clipped to the scan's bounds), in the grid cell the
            sliders show.

        Raises
        ------
        ArgumentError
            Without a scan (no *Refine* section), or when no plotted parameter can be
            refined by range (non-numeric, or one value only), or (adaptive) when the
            region lies outside the scan's bounds.

        Examples
        --------
        >>> import tempfile, notebookscan as ns
        >>> space = ns.grid(k=[1.0, 2.0, 3.0], tau=[0.1, 0.2, 0.4])
        >>> scan = ns.Scan(lambda k, tau: {"y": k * tau}, space, store=tempfile.mkdtemp())
        >>> _ = scan.run(executor="serial", progress=False)
        >>> ex = Explorer(scan, x="k", y="tau", interactive=False)
        >>> ex.select_region(x=(2.5, 1.5), y=(0.1, 0.2))       # tau is drawn log
        {'k': (1.5, 2.5), 'tau': (0.1, 0.2)}
        >>> ex.refine.axes["tau"]["scale"].value, ex.refine.preview   # 3 k × 3 tau, 2 stored
        ('log', 7)
        >>> ex.select_point(x=2.9, y=0.35)                     # a click on a cell
        {'k': 3.0, 'tau': 0.4}
        """
        if self.refine is None:
            raise ArgumentError("selecting a region refines a scan: open the explorer on the "
                                "Scan (Explorer(scan)), not on a store path or Dataset")
        xdim, ydim = self._axes()
        if isinstance(self.refine, AdaptiveRefinePanel):
            return self._select_adaptive(x if xdim else None, y if ydim else None)
        chosen: dict[str, tuple[float, float]] = {}
        for dim, span, box in ((xdim, x, self.logx), (ydim, y, self.logy)):
            if dim is None or span is None or dim not in self.refine.axes:
                continue
            scale = "log" if box.value and min(span) > 0 else "linear"
            chosen[dim] = self.refine.set_range(dim, (span[0], span[1]), scale=scale)
        if not chosen:
            plotted = ", ".join(d for d in (xdim, ydim) if d) or "nothing"
            raise ArgumentError(f"the plot shows {plotted}; the Refine section takes ranges "
                                f"of {', '.join(self.refine.axes) or 'no parameter'}: plot "
                                "one of those to select a region of it")
        return chosen

    def _select_adaptive(self, x: tuple[float, float] | None,
                         y: tuple[float, float] | None) -> dict[str, tuple[float, float]]:
        """:meth:`select_region` for an adaptive scan: the region's bounds (clipped to
        the scan's), in the grid cell the sliders show."""
        panel = self.refine
        xdim, ydim = self._axes()
        spans = {d: s for d, s in ((xdim, x), (ydim, y))
                 if d is not None and s is not None and d in panel.scan.spec.bounds}
        if not panel.scan.spec.bounds:
            raise ArgumentError("this adaptive scan has no continuous parameter to draw a "
                                "region of (it learns over trials): run it with a larger "
                                "goal to add points")
        if not spans:
            plotted = ", ".join(d for d in (xdim, ydim) if d) or "nothing"
            raise ArgumentError(f"the plot shows {plotted}; an adaptive refinement takes a "
                                f"region of {', '.join(panel.scan.spec.bounds)}: plot those "
                                "to draw it")
        chosen = {dim: panel.set_region(dim, span) for dim, span in spans.items()}
        panel.set_cells(self.selection())
        return chosen

    def select_point(self, x: float, y: float | None = None) -> dict[str, Any]:
        """Select the grid point nearest to ``(x, y)`` (what a click on a cell does).

        The point's values go to :attr:`selected` and show below the plot; with a scan,
        the *Refine* section gets the range between the point's neighbours on each
        plotted parameter (so a refinement fills in around it).

        Returns
        -------
        dict
            :attr:`selected`, ``{parameter: value}``.
        """
        xdim, ydim = self._axes()
        picked: dict[str, Any] = {}
        around: dict[str, tuple[float, float]] = {}
        for dim, value, box in ((xdim, x, self.logx), (ydim, y, self.logy)):
            if dim is None or value is None or self.view is None or dim not in self.view.coords:
                continue
            coord = self.view[dim]
            if coord.dtype.kind not in "iuf":
                continue
            values = np.unique(np.asarray(coord.values))
            where = np.log(values) if box.value and (values > 0).all() else values
            at = float(np.log(value)) if box.value and value > 0 and (values > 0).all() \
                else float(value)
            i = int(np.argmin(np.abs(where - at)))
            picked[dim] = values[i].item()
            around[dim] = (float(values[max(i - 1, 0)]), float(values[min(i + 1,
                                                                          len(values) - 1)]))
        if not picked:
            raise ArgumentError("no numeric parameter is plotted to pick a point of")
        self.selected = picked
        text = ", ".join(f"{k} = {format_value(v)}" for k, v in picked.items())
        if self.refine is not None and any(d in self.refine.axes for d in around):
            spans = self.select_region(x=around.get(xdim) if xdim else None,
                                       y=around.get(ydim) if ydim else None)
            text += " · refine " + ", ".join(f"{k} {format_value(a)}–{format_value(b)}"
                                             for k, (a, b) in spans.items())
        self.picked.value = muted_html("selected " + text)
        return picked

    def connect_mouse(self, fig: Any) -> None:
        """Let the mouse select on ``fig``'s plot: a drag selects a region, a click a point.

        Called for each figure shown on an ipympl canvas; the rubber band is a matplotlib
        ``RectangleSelector`` (a map) or ``SpanSelector`` (a line)."""
        from matplotlib.widgets import RectangleSelector, SpanSelector

        if self._mouse is not None:
            self._mouse["canvas"].mpl_disconnect(self._mouse["press"])
            self._mouse["canvas"].mpl_disconnect(self._mouse["release"])
        ax = fig.axes[0]
        two_d = self._axes()[1] is not None
        style = {"facecolor": "#1976d2", "alpha": 0.15, "edgecolor": "#1976d2"}
        band = (RectangleSelector(ax, lambda *_: None, useblit=False, props=style)
                if two_d else SpanSelector(ax, lambda *_: None, "horizontal", useblit=False,
                                           props=style))
        state: dict[str, Any] = {}

        def press(event: Any) -> None:
            state.clear()
            if event.inaxes is ax and event.button == 1 and not _toolbar_busy(fig):
                state.update(x=event.x, y=event.y, data=(event.xdata, event.ydata))

        def release(event: Any) -> None:
            if not state:
                return
            x0, y0 = state["data"]
            # a drag may end outside the plot: its corner is clamped to the plot's edge
            px = min(max(event.x, ax.bbox.x0), ax.bbox.x1)
            py = min(max(event.y, ax.bbox.y0), ax.bbox.y1)
            x1, y1 = ax.transData.inverted().transform((px, py))
            try:
                if abs(event.x - state["x"]) + abs(event.y - state["y"]) < _CLICK_PIXELS:
                    self.select_point(x1, y1 if two_d else None)
                else:
                    xs = _mouse_round((x0, x1), ax.get_xlim(), ax.get_xscale())
                    ys = _mouse_round((y0, y1), ax.get_ylim(), ax.get_yscale())
                    self.select_region(xs, ys if two_d else None)
                self.error.value = ""
            except NotebookscanError as exc:
                self.error.value = error_html(str(exc))

        canvas = fig.canvas
        self._mouse = {"canvas": canvas, "band": band,
                       "press": canvas.mpl_connect("button_press_event", press),
                       "release": canvas.mpl_connect("button_release_event", release)}

    def set_scan(self, scan: Scan) -> None:
        """Show (and refine) ``scan`` from now on."""
        if scan is self.scan:
            return
        self.source = self.scan = scan
        self.error.value = ""
        if self.refine is None or isinstance(scan, AdaptiveScan) or isinstance(
                self.refine, AdaptiveRefinePanel):
            panel = self._refine_panel(scan)
            kept = [c for c in self.children if c is not self.refine]
            self.refine = panel
            self.children = (*kept, panel)
        else:
            self.refine.set_scan(scan)

    def _refine_panel(self, scan: Scan) -> Any:
        """The *Refine* section: a new learner over a region for an adaptive scan, a
        finer grid for the others."""
        kind = AdaptiveRefinePanel if isinstance(scan, AdaptiveScan) else RefinePanel
        return kind(scan, monitor=self.monitor, on_run=self._after_refine)

    def _after_refine(self) -> None:
        if self.monitor is None:
            self.reload()


def _toolbar_busy(fig: Any) -> bool:
    """True while the figure's toolbar pans or zooms (the mouse is the toolbar's then)."""
    toolbar = getattr(fig.canvas, "toolbar", None)
    return bool(getattr(toolbar, "mode", "") or "")


def _mouse_round(ends: tuple[float, float], view: tuple[float, float],
                 scale: str) -> tuple[float, float]:
    """Range ends from the mouse, rounded to what a pixel can tell apart: 3 significant
    digits on a log axis, a few hundredths of the visible span on a linear one."""
    if scale == "log":
        return tuple(float(f"{v:.3g}") for v in ends)  # type: ignore[return-value]
    span = abs(view[1] - view[0]) or 1.0
    digits = max(0, -int(np.floor(np.log10(span / 500))))
    return tuple(round(float(v), digits) for v in ends)  # type: ignore[return-value]
