"""Refining a scan from a form: a finer sub-range of some parameters, or more trials.

:class:`RefinePanel` sits below the :class:`~notebookscan.widgets.Explorer` (given a scan);
the explorer fills it when a region or a cell of its plot is selected.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import numpy as np
import traitlets as t

from ..errors import ArgumentError, NotebookscanError
from ..plotting import looks_log, parameters
from ..scan import Scan
from ._ui import MUTED_COLOR, error_html, format_value, heading_html, muted_html

__all__ = ["RefinePanel"]


class RefinePanel(w.VBox):
    """Add points to a scan: a finer sub-range of some parameters, or more trials.

    For each numeric parameter of a grid scan: tick it, choose a sub-range with the
    range slider or type its ends (``low``/``high`` fields; values outside the scanned
    range are clipped to it), and a count (linear or log spaced; log by default where
    the values are). :meth:`set_range` does the same from code (the explorer calls it
    when a region of its plot is selected). ``trials`` sets the number of
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
        self.axes: dict[str, dict[str, Any]] = {}
        self._typed_errors: dict[str, str] = {}
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
            values = np.unique(np.asarray(view[name].values, dtype=float))
            if len(values) < 2:
                continue
            row = self._row(name, values, view[name].dtype.kind in "iu")
            axes[name] = row
            rows.append(row["box"])
        self.axes = axes
        self._typed_errors = {k: v for k, v in self._typed_errors.items() if k in axes}
        self.rows.children = tuple(rows)
        self._check()

    def _row(self, name: str, values: np.ndarray, integer: bool) -> dict[str, Any]:
        """The controls of one parameter (keeping the old choices on the same range)."""
        low, high = float(values[0]), float(values[-1])
        old = self.axes.get(name)
        if old is not None and (old["span"].min, old["span"].max) != (low, high):
            old = None  # another range (a new scan): start from the full range
        use = w.Checkbox(value=old["use"].value if old else False, description=name,
                         indent=False, layout=w.Layout(width="90px"))
        span = w.FloatRangeSlider(value=old["span"].value if old else (low, high),
                                  min=low, max=high, step=(high - low) / 1000,
                                  readout=False, continuous_update=False,
                                  layout=w.Layout(width="240px"))
        typed = [w.Text(value=_typed(v), continuous_update=False,
                        layout=w.Layout(width="80px")) for v in span.value]
        typed[0].add_class("nbscan-refine-low")
        typed[1].add_class("nbscan-refine-high")
        count = w.BoundedIntText(value=old["count"].value if old else 2 * len(values) - 1,
                                 min=1, max=100_000, description="count",
                                 style={"description_width": "40px"},
                                 layout=w.Layout(width="120px"))
        count.add_class("nbscan-refine-count")
        scale = w.Dropdown(options=["linear", "log"], value=old["scale"].value if old
                           else ("log" if looks_log(values) else "linear"),
                           layout=w.Layout(width="80px"))
        for widget in (use, span, count, scale):
            widget.observe(self._check, names="value")
        span.observe(lambda change: self._show_span(name), names="value")
        for i, field in enumerate(typed):
            field.observe(lambda change, i=i: self._on_typed(name, i, change["new"]),
                          names="value")
        box = w.HBox([use, typed[0], span, typed[1], count, scale],
                     layout=w.Layout(align_items="center", grid_gap="2px"))
        box.add_class(f"nbscan-refine-{name}")
        return {"use": use, "span": span, "count": count, "scale": scale, "low": typed[0],
                "high": typed[1], "integer": integer, "values": values, "box": box}

    def _show_span(self, name: str) -> None:
        row = self.axes.get(name)
        if row is None:
            return
        for field, value in zip((row["low"], row["high"]), row["span"].value, strict=True):
            field.value = _typed(value)

    def _on_typed(self, name: str, end: int, text: str) -> None:
        """A typed range end: the slider takes it (sorted, clipped to the scanned range)."""
        row = self.axes.get(name)
        if row is None:
            return
        value = _number(text)
        if value is None:
            self._typed_errors[name] = (f"{name}: {text!r} is not a number; type a value such "
                                        f"as {_typed(row['span'].min)} or 1e-3")
            self._check()
            return
        self._typed_errors.pop(name, None)
        span = list(row["span"].value)
        span[end] = value
        before = row["span"].value
        self.set_range(name, (span[0], span[1]), count=None)  # typing a range means using it
        if row["span"].value == before:  # nothing changed: show the clipped ends again
            self._show_span(name)
            self._check()

    def set_range(self, name: str, span: tuple[float, float], *, use: bool = True,
                  count: int | None = -1, scale: str | None = None) -> tuple[float, float]:
        """Refine ``name`` over ``span`` (any order; clipped to the scanned range).

        ``count=-1`` (default) takes twice the values the range holds now, minus one (at
        least 3), so the region's resolution doubles; ``None`` keeps the count. ``scale``
        ``"linear"``/``"log"`` (``None`` keeps it). Returns the range set.
        """
        row = self.axes.get(name)
        if row is None:
            raise ArgumentError(f"{name!r} cannot be refined by range here; the panel offers "
                                f"{', '.join(self.axes) or 'no parameter'} (numeric grid axes "
                                "with 2+ values)")
        slider = row["span"]
        low, high = sorted(float(v) for v in span)
        low, high = min(max(low, slider.min), slider.max), min(max(high, slider.min),
                                                               slider.max)
        if scale is not None:
            row["scale"].value = scale
        if count is not None and count < 0:
            values = row["values"]
            inside = int(((values >= low) & (values <= high)).sum())
            count = max(3, 2 * inside - 1)
        if count is not None:
            row["count"].value = count
        row["use"].value = use
        slider.value = (low, high)
        return (low, high)

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
        if self._typed_errors:
            self.error_text = next(iter(self._typed_errors.values()))
            self.preview = 0
            self._show_preview()
            return
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


def _typed(value: float) -> str:
    """A range end as the typed field shows it (12 digits: what refinement() uses)."""
    return f"{float(value):.12g}"


def _number(text: str) -> float | None:
    """The finite number ``text`` spells, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None
