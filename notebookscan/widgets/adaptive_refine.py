"""Refining an adaptive scan: a new learner over a region drawn on the explorer's plot.

:class:`AdaptiveRefinePanel` sits below the :class:`~notebookscan.widgets.Explorer`
when it shows an :class:`~notebookscan.adaptive.AdaptiveScan`; a region selected on the
plot fills its bounds, *Refine adaptively* runs a new adaptive scan of the same function
into the same store, over that region, until it has added the points asked for.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as w

from ..adaptive import AdaptiveScan, Goal, rebuild
from ..errors import ArgumentError, NotebookscanError
from ._ui import error_html, format_value, heading_html, muted_html

__all__ = ["AdaptiveRefinePanel"]


class AdaptiveRefinePanel(w.VBox):
    """Add points to an adaptive scan where a region says: a new learner over it.

    The region's bounds (``low``/``high`` per continuous parameter, the scan's own
    bounds until a region is drawn) and the number of points to add are typed or set by
    :meth:`set_region`. *Refine adaptively* (:meth:`apply`) builds an
    :class:`~notebookscan.adaptive.AdaptiveScan` of the same function, store, learner and
    value over that region — restricted to ``cells`` (the grid cells shown) — whose goal
    is the points it finds stored in the region plus the points to add: the stored
    points are told to its learner, never run again.

    Attributes
    ----------
    executor, wait
        Passed to the new scan's ``run`` when there is no monitor (default: local
        engines, in the background).
    refined
        The last adaptive scan run from the panel.
    """

    def __init__(self, scan: AdaptiveScan, *, monitor: Any = None,
                 on_run: Callable[[], None] | None = None) -> None:
        self.scan = scan
        self.monitor = monitor
        self.on_run = on_run
        self.executor: Any = None
        self.wait = False
        self.cells: dict[str, Any] = {}
        self.refined: AdaptiveScan | None = None
        self._run: Any = None  # the handle of the refinement run without a monitor
        #: no grid ranges to refine (the explorer's click-to-refine skips this panel)
        self.axes: dict[str, Any] = {}
        self.bounds: dict[str, tuple[w.FloatText, w.FloatText]] = {}
        for name, (low, high) in scan.spec.bounds.items():
            pair = (w.FloatText(value=float(low), description=f"{name} from",
                                style={"description_width": "70px"},
                                layout=w.Layout(width="190px")),
                    w.FloatText(value=float(high), description="to",
                                style={"description_width": "24px"},
                                layout=w.Layout(width="140px")))
            pair[0].add_class(f"nbscan-adaptive-low-{name}")
            pair[1].add_class(f"nbscan-adaptive-high-{name}")
            self.bounds[name] = pair
        self.points = w.BoundedIntText(value=50, min=0, max=10_000_000,
                                       description="points to add",
                                       style={"description_width": "90px"},
                                       layout=w.Layout(width="190px"))
        self.points.add_class("nbscan-adaptive-points")
        self.button = w.Button(description="Refine adaptively", icon="crosshairs",
                               button_style="primary", layout=w.Layout(width="170px"))
        self.button.add_class("nbscan-adaptive-refine")
        self.error = w.HTML()
        self.message = w.HTML()
        self.note = w.HTML()
        rows = [w.HBox(list(pair)) for pair in self.bounds.values()]
        super().__init__([w.HTML(heading_html("Refine adaptively",
                                              "a new learner over a region of the plot")),
                          *rows, w.HBox([self.points, self.button]), self.note, self.error,
                          self.message], layout=w.Layout(margin="8px 0 0 0"))
        self.add_class("nbscan-adaptive-refine-panel")
        self.button.on_click(lambda _: self.apply())
        self._show_cells()

    def update_ranges(self, view: Any) -> None:
        """Nothing to update: the bounds are the scan's until a region is drawn."""

    def set_cells(self, cells: Mapping[str, Any]) -> None:
        """Refine only the grid cells with these values (the explorer's slider choices)."""
        names = set(self.scan.spec.cell_names)
        self.cells = {k: v for k, v in cells.items() if k in names}
        self._show_cells()

    def _show_cells(self) -> None:
        text = ", ".join(f"{k} = {format_value(v)}" for k, v in self.cells.items())
        self.note.value = muted_html(f"in the grid cell {html.escape(text)}") if text else ""

    def set_region(self, name: str, span: tuple[float, float]) -> tuple[float, float]:
        """Set the region along ``name`` to ``span`` (either order), clipped to the scan's
        bounds; returns the region set.

        Raises
        ------
        ArgumentError
            When ``name`` is not a continuous parameter of the scan, or ``span`` lies
            outside its bounds.
        """
        if name not in self.scan.spec.bounds:
            raise ArgumentError(f"{name!r} is not a continuous parameter of the adaptive "
                                f"scan; its bounds are {dict(self.scan.spec.bounds)}")
        low, high = (float(v) for v in self.scan.spec.bounds[name])
        a, b = sorted(float(v) for v in span)
        a, b = max(a, low), min(b, high)
        if not a < b:
            raise ArgumentError(f"the region {format_value(span[0])}–{format_value(span[1])} "
                                f"of {name} is outside the scan's bounds "
                                f"{format_value(low)}–{format_value(high)}: draw it inside")
        self.bounds[name][0].value, self.bounds[name][1].value = a, b
        return a, b

    def region(self) -> dict[str, tuple[float, float]]:
        """``{parameter: (low, high)}`` as the fields say."""
        return {name: (lo.value, hi.value) for name, (lo, hi) in self.bounds.items()}

    def refinement(self) -> AdaptiveScan:
        """The adaptive scan *Refine adaptively* runs (nothing runs here).

        Raises
        ------
        ArgumentError
            When a region is empty or the number of points to add is below 1.
        """
        if self.points.value < 1:
            raise ArgumentError("points to add must be at least 1")
        region = self.region()
        spec = self.scan.spec
        for name, (low, high) in region.items():
            if not low < high:
                raise ArgumentError(f"the region of {name} is empty ({format_value(low)} to "
                                    f"{format_value(high)}): its low end must be below its "
                                    "high end")
            # outside, the scan's own learner would not see the new points
            first, last = spec.bounds[name]
            if low < first or high > last:
                raise ArgumentError(
                    f"the region of {name} ({format_value(low)} to {format_value(high)}) "
                    f"must lie inside the scan's bounds {format_value(first)} to "
                    f"{format_value(last)}; for a wider range run an AdaptiveScan with "
                    "wider bounds on the same store")
        cells = [c for c in spec.cells
                 if all(c.get(k) == v for k, v in self.cells.items())] or None
        new = AdaptiveScan(self.scan.function, region, self.scan.store.path,
                           goal=Goal(points=1), grid=cells, trials=spec.trials,
                           value=self.scan.value, learner=spec.factory,
                           learner_options=spec.options,
                           points_per_task=self.scan.points_per_task, balance=spec.balance)
        # the goal counts the stored points of the new scan: those in the region
        stored = rebuild(new.spec, new.store, new.value)[2]
        new.goal = Goal(points=stored + int(self.points.value))
        return new

    def apply(self) -> None:
        """Build the refinement and run it (in the background unless :attr:`wait`)."""
        self.error.value = ""
        if self._run is not None and not self._run.done():
            self.error.value = error_html("a refinement is running: wait until it ends")
            return
        try:
            new = self.refinement()
            self.refined = new
            if self.monitor is not None:
                self.monitor._factory = lambda: new  # the monitor runs the refinement
                self.monitor.start()
            else:
                self._run = new.run(executor=self.executor, wait=self.wait, progress=False)
        except (ValueError, NotebookscanError) as exc:
            self.error.value = error_html(str(exc))
            return
        self.message.value = muted_html(
            f"refining adaptively: {self.points.value} points in " + ", ".join(
                f"{k} {format_value(a)}–{format_value(b)}" for k, (a, b) in
                self.region().items()))
        if self.on_run is not None:
            self.on_run()
