"""The sweep builder: a form, read from the function's signature, that makes a Space.

One row per parameter — a fixed value, a list, a linear or log range (min, max,
count) or random samples — plus trials, sampling options, exclusions and the store.
Under it, a live line: how many points, how many the store already holds, and how long
the rest should take once a time per point is known. Invalid input is shown in red next
to its field; the form never raises.
"""

from __future__ import annotations

import html
import inspect
import os
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import ArgumentError, ArgumentTypeError
from ..scan import Scan
from ..space import Space
from ..store import Store
from ._model import KIND_MODES, MODE_LABELS, ParameterSpec, SweepSpec, last_run_space
from ._ui import (
    MUTED_COLOR,
    error_html,
    fixed,
    format_duration,
    format_value,
    heading_html,
    inline_error,
    muted_html,
    style_widget,
)

__all__ = ["ParameterRow", "SweepBuilder"]

NAME_WIDTH = "150px"
MODE_WIDTH = "150px"
FIELD_WIDTH = "136px"
WIDE_WIDTH = "412px"
_NUMBER_STYLE = {"description_width": "42px"}


class ParameterRow(w.HBox):
    """The widgets of one parameter, linked both ways to its :class:`ParameterSpec`."""

    def __init__(self, spec: ParameterSpec) -> None:
        self.spec = spec
        self._build()
        super().__init__(self._layout(), layout=w.Layout(align_items="center",
                                                         margin="1px 0"))
        self.add_class("nbscan-param")
        self.add_class(f"nbscan-param-{spec.name}")
        self._wire()

    def show_attrs(self, attrs: dict[str, str]) -> None:
        """Name, type and the declared units (``[s]``, the long name as its tooltip)."""
        spec = self.spec
        kind = html.escape(spec.annotation or spec.kind)
        units = f" [{html.escape(attrs['units'])}]" if attrs.get("units") else ""
        title = html.escape(attrs.get("long_name", ""), quote=True)
        self.label.value = (f'<span title="{title}"><b>{html.escape(spec.name)}</b>{units} '
                            f'<span style="color:{MUTED_COLOR}">{kind}</span></span>')

    # -- widgets
    def _build(self) -> None:
        spec = self.spec
        self.label = w.HTML(layout=w.Layout(width=NAME_WIDTH))
        self.show_attrs({})
        self.mode = w.Dropdown(options=[(MODE_LABELS[m], m) for m in KIND_MODES[spec.kind]],
                               value=spec.mode, layout=w.Layout(width=MODE_WIDTH))
        self.mode.add_class("nbscan-mode")
        self.value = w.Text(value=spec.value, placeholder="value",
                            layout=w.Layout(width=FIELD_WIDTH))
        self.value.add_class("nbscan-value")
        self.values = w.Text(value=spec.values, placeholder="values, separated by commas",
                             layout=w.Layout(width=WIDE_WIDTH))
        self.values.add_class("nbscan-values")
        self.low = w.FloatText(value=spec.low, description="min", style=_NUMBER_STYLE,
                               layout=w.Layout(width=FIELD_WIDTH))
        self.low.add_class("nbscan-min")
        self.high = w.FloatText(value=spec.high, description="max", style=_NUMBER_STYLE,
                                layout=w.Layout(width=FIELD_WIDTH))
        self.high.add_class("nbscan-max")
        self.count = w.IntText(value=spec.count, description="count", style=_NUMBER_STYLE,
                               layout=w.Layout(width=FIELD_WIDTH))
        self.count.add_class("nbscan-count")
        self.error = inline_error()
        self.error.value = error_html(spec.error)
        self.fields = w.HBox([self.value, self.values, self.low, self.high, self.count],
                             layout=w.Layout(width="430px"))
        for column in (self.label, self.mode, self.fields):
            fixed(column)

    # -- layout
    def _layout(self) -> list[w.Widget]:
        return [self.label, self.mode, self.fields, self.error]

    # -- wiring
    def _wire(self) -> None:
        spec = self.spec
        self._links = [w.link((self.mode, "value"), (spec, "mode")),
                       w.link((self.value, "value"), (spec, "value")),
                       w.link((self.values, "value"), (spec, "values")),
                       w.link((self.low, "value"), (spec, "low")),
                       w.link((self.high, "value"), (spec, "high")),
                       w.link((self.count, "value"), (spec, "count"))]
        spec.observe(self._show_error, names="error")
        spec.observe(self._show_fields, names="mode")
        self._show_fields()

    def _show_error(self, change: Any = None) -> None:
        self.error.value = error_html(self.spec.error)

    def _show_fields(self, change: Any = None) -> None:
        mode = self.spec.mode
        visible = {"fixed": {self.value}, "list": {self.values},
                   "linear": {self.low, self.high, self.count},
                   "log": {self.low, self.high, self.count},
                   "random": {self.low, self.high},
                   "adaptive": {self.low, self.high}}[mode]
        for field in (self.value, self.values, self.low, self.high, self.count):
            field.layout.display = None if field in visible else "none"


class SweepBuilder(w.VBox):
    """Define a parameter space for ``function`` with a form.

    Parameters
    ----------
    function
        The simulation. Its signature gives the rows: annotations (``float``, ``int``,
        ``bool``, ``str``) pick the kind of field, defaults the starting values.
        ``seed`` and ``trial`` are supplied by the scan and get no row.
    store
        Directory of the result store. When it already holds a scan, the form is filled
        from the space of its last run (if the form can express it; otherwise that
        space is kept as is until the form is edited) and the counts show what is done.
    space
        Start from this space instead of the signature's defaults.
    workers
        Workers assumed for the time estimate (the run control keeps it up to date).

    Attributes
    ----------
    spec : SweepSpec
        The form's model: ``spec.space``, ``spec.size``, ``spec.stored``, ``spec.error``…

    Examples
    --------
    >>> import tempfile
    >>> def decay(k: float, tau: float = 0.01, seed: int = 0) -> float:
    ...     return k * tau
    >>> b = SweepBuilder(decay, store=tempfile.mkdtemp())
    >>> b.rows["k"].count.value = 3
    >>> b.rows["tau"].mode.value = "list"
    >>> b.rows["tau"].values.value = "0.01, 0.02"
    >>> b.trials.value = 2
    >>> b.space
    <Space: 12 points, grid k(3) × tau(2) × trial(2)>
    >>> b.rows["k"].high.value = -1          # invalid: shown next to the field
    >>> b.space is None, b.rows["k"].error.value != ""
    (True, True)
    """

    def __init__(self, function: Callable[..., Any], store: str | os.PathLike[str] | None = None,
                 *, space: Space | None = None, workers: int | None = None) -> None:
        if not callable(function):
            raise ArgumentTypeError(f"SweepBuilder needs the function to scan, got {function!r}")
        self.function = function
        default_store = os.path.join("results", getattr(function, "__name__", "scan"))
        self.spec = SweepSpec.for_function(
            function, store=os.fspath(store) if store is not None else default_store,
            workers=workers or os.cpu_count() or 1)
        self.restored = ""
        self._build()
        super().__init__(self._layout(), layout=w.Layout(width="100%", max_width="900px"))
        self.add_class("nbscan-builder")
        self._wire()
        self._scan: Scan | None = None
        if space is not None and not self.spec.show_space(space):
            self.restored = "The scan's space is more than the form can show; it runs as is:"
        elif store is not None:
            self._restore_from_store()
        self.spec.measure_from_store()
        self._show_summary()
        self._show_attrs()
        self.spec.observe(lambda _: self._show_attrs(), names="attrs")

    def _show_attrs(self) -> None:
        for name, row in self.rows.items():
            row.show_attrs(self.spec.attrs.get(name, {}))

    # ------------------------------------------------------------------ widgets

    def _build(self) -> None:
        spec = self.spec
        try:
            signature = f"{self.function.__name__}{inspect.signature(self.function)}"
        except (TypeError, ValueError, AttributeError):
            signature = repr(self.function)
        self.title = w.HTML(heading_html("Parameters", signature))
        self.rows = {p.name: ParameterRow(p) for p in spec.parameters}
        self.trials = w.BoundedIntText(value=spec.trials, min=0, max=100_000,
                                       layout=w.Layout(width="90px"))
        self.trials.add_class("nbscan-trials")
        self.trials_note = w.HTML(muted_html("repeats of each point, each with its own seed"))
        self.trials_error = inline_error()
        self.samples = w.BoundedIntText(value=spec.samples, min=0, max=10_000_000,
                                        description="samples", style={"description_width":
                                                                      "52px"},
                                        layout=w.Layout(width="150px"))
        self.method = w.Dropdown(options=[("uniform random", "random"),
                                          ("Latin hypercube", "lhs"), ("Sobol'", "sobol")],
                                 value=spec.method, layout=w.Layout(width="150px"))
        self.seed = w.BoundedIntText(value=spec.seed, min=0, max=2**32 - 1, description="seed",
                                     style=_NUMBER_STYLE, layout=w.Layout(width=FIELD_WIDTH))
        self.samples_error = inline_error()
        self.sampling = w.HBox([fixed(w.HTML("<b>random samples</b>",
                                             layout=w.Layout(width=NAME_WIDTH))),
                                *map(fixed, (self.samples, self.method, self.seed)),
                                self.samples_error],
                               layout=w.Layout(align_items="center"))
        self.goal_points = w.BoundedIntText(value=spec.goal_points, min=0, max=10_000_000,
                                            description="points", style=_NUMBER_STYLE,
                                            layout=w.Layout(width="150px"))
        self.goal_points.add_class("nbscan-goal-points")
        self.goal_loss = w.BoundedFloatText(value=spec.goal_loss, min=0.0, max=1e300,
                                            description="loss", style=_NUMBER_STYLE,
                                            layout=w.Layout(width=FIELD_WIDTH))
        self.goal_loss.add_class("nbscan-goal-loss")
        self.goal = w.HBox([fixed(w.HTML("<b>adaptive goal</b>",
                                         layout=w.Layout(width=NAME_WIDTH))),
                            *map(fixed, (self.goal_points, self.goal_loss)),
                            w.HTML(muted_html("stop at whichever comes first (0: none)"))],
                           layout=w.Layout(align_items="center"))
        self.goal.add_class("nbscan-goal")
        self.exclusions = w.Textarea(value=spec.exclusions, rows=2,
                                     placeholder="one rule per line, e.g.  k > 10 and tau < 0.01",
                                     layout=w.Layout(width="570px"))
        self.exclusions.add_class("nbscan-exclusions")
        self.exclusions_error = inline_error()
        self.store = w.Text(value=spec.store, layout=w.Layout(width="570px"))
        self.store.add_class("nbscan-store")
        self.summary = w.HTML()
        self.summary.add_class("nbscan-summary")
        self.message = w.HTML()
        self.message.add_class("nbscan-builder-error")

    # ------------------------------------------------------------------ layout

    def _layout(self) -> list[w.Widget]:
        def labelled(text: str, *widgets: w.Widget) -> w.HBox:
            # errors (the last widget) wrap in the room left; the rest keep their width
            *columns, last = widgets
            return w.HBox([fixed(w.HTML(f"<b>{html.escape(text)}</b>",
                                        layout=w.Layout(width=NAME_WIDTH))),
                           *map(fixed, columns),
                           last if "nbscan-field-error" in last._dom_classes else fixed(last)],
                          layout=w.Layout(align_items="center", margin="2px 0"))

        header = w.HBox([w.HTML("<b>name</b>", layout=w.Layout(width=NAME_WIDTH)),
                         w.HTML("<b>values</b>", layout=w.Layout(width=MODE_WIDTH))])
        header.layout.border_bottom = "1px solid #e0e0e0"
        return [
            self.title, header, *self.rows.values(),
            labelled("trials", self.trials, self.trials_note, self.trials_error),
            self.sampling, self.goal,
            labelled("exclude", self.exclusions, self.exclusions_error),
            labelled("store", self.store),
            self.summary, self.message, style_widget(),
        ]

    # ------------------------------------------------------------------ wiring

    def _wire(self) -> None:
        spec = self.spec
        self._links = [w.link((self.trials, "value"), (spec, "trials")),
                       w.link((self.samples, "value"), (spec, "samples")),
                       w.link((self.method, "value"), (spec, "method")),
                       w.link((self.seed, "value"), (spec, "seed")),
                       w.link((self.exclusions, "value"), (spec, "exclusions")),
                       w.link((self.store, "value"), (spec, "store")),
                       w.link((self.goal_points, "value"), (spec, "goal_points")),
                       w.link((self.goal_loss, "value"), (spec, "goal_loss"))]
        spec.observe(self._show_summary, names=["space", "size", "stored", "failed_before",
                                                 "estimate", "error", "base_space",
                                                 "adaptive"])
        spec.observe(self._show_errors, names=["trials_error", "samples_error",
                                                "exclusions_error"])
        for p in spec.parameters:
            p.observe(self._show_sampling, names="mode")
        self._show_sampling()
        self._show_errors()

    def _show_errors(self, change: Any = None) -> None:
        self.trials_error.value = error_html(self.spec.trials_error)
        self.samples_error.value = error_html(self.spec.samples_error)
        self.exclusions_error.value = error_html(self.spec.exclusions_error)

    def _show_sampling(self, change: Any = None) -> None:
        random = any(p.mode == "random" for p in self.spec.parameters)
        self.sampling.layout.display = None if random else "none"
        adaptive = any(p.mode == "adaptive" for p in self.spec.parameters)
        self.goal.layout.display = None if adaptive else "none"

    def _show_summary(self, change: Any = None) -> None:
        spec = self.spec
        self.message.value = error_html(spec.error)
        if spec.adaptive is not None:
            self.summary.value = _adaptive_summary(spec.adaptive, spec.stored,
                                                   spec.failed_before)
            return
        if spec.space is None:
            self.summary.value = muted_html("no valid space yet")
            return
        to_run = spec.size - spec.stored - spec.failed_before
        parts = [f"<b>{spec.size:,}</b> point{'s' if spec.size != 1 else ''}",
                 f"<b>{spec.stored:,}</b> already in the store"]
        if spec.failed_before:
            parts.append(f"{spec.failed_before:,} failed before")
        parts.append(f"<b>{to_run:,}</b> to run")
        if to_run and spec.estimate == spec.estimate:  # not nan
            parts.append(f"≈ {format_duration(spec.estimate)} with {spec.workers} "
                         f"worker{'s' if spec.workers != 1 else ''} "
                         f"({format_duration(spec.seconds_per_point)} per point, measured)")
        elif to_run:
            parts.append("time per point not measured yet")
        layout = spec.space.layout
        shape = f"{layout.kind} layout: {', '.join(layout.dims)}"
        restored = ""
        if spec.base_space is not None:
            restored = (f'<div style="color:{MUTED_COLOR}">{html.escape(self.restored)} '
                        f"{html.escape(repr(spec.base_space))} — edit the form to replace it."
                        "</div>")
        self.summary.value = (
            '<div class="nbscan-counts" style="padding:6px 8px;margin-top:6px;'
            'background:#f5f7fa;border-radius:4px;border:1px solid #e3e8ef" '
            f'data-size="{spec.size}" data-stored="{spec.stored}" data-to-run="{to_run}">'
            + " · ".join(parts)
            + f' <span style="color:{MUTED_COLOR}">({html.escape(shape)})</span>'
            + restored + "</div>"
        )

    # ------------------------------------------------------------------ re-attach

    def _restore_from_store(self) -> None:
        store = Store(self.spec.store)
        try:
            space, node = last_run_space(store)
        except Exception:  # an unreadable store: the counts say the rest
            return
        if space is None:
            return
        names = set(space.names) - {"trial"}
        required = {p.name for p in self.spec.parameters if p.default is None}
        if not required <= names <= {p.name for p in self.spec.parameters}:
            return  # another function's store: the counts will say nothing is stored
        filled = self.spec.show_space(space, node)
        self.restored = ("Form filled from the store's last run." if filled else
                         "Using the space of the store's last run:")

    # ------------------------------------------------------------------ API

    @property
    def space(self) -> Space | None:
        """The space the form describes (``None`` while the form has an error)."""
        return self.spec.space

    def scan(self) -> Scan:
        """A :class:`~notebookscan.Scan` of the function over :attr:`space` into the store.

        The same Scan is returned while the space and store do not change (so a scan
        refined from the explorer keeps its refinements).

        Raises
        ------
        ArgumentError
            When the form has an error (the message says which field).
        """
        if self.spec.adaptive is not None:
            return self._adaptive_scan(self.spec.adaptive)
        space = self.spec.space
        if space is None:
            raise ArgumentError(f"the form has an error: {self.spec.error or 'no space'}")
        scan = self._scan
        if (scan is None or not _same_space(getattr(self, "_scan_space", None), space) or
                os.path.abspath(self.spec.store) != scan.store.path):
            scan = Scan(self.function, space, self.spec.store)
            self._scan, self._scan_space = scan, space
        return scan

    def _adaptive_scan(self, plan: dict[str, Any]) -> Scan:
        """The AdaptiveScan of the form's adaptive axes (the same one while unchanged)."""
        from ..adaptive import AdaptiveScan

        made = (plan["bounds"], None if plan["grid"] is None else plan["grid"].describe(),
                plan["goal"], os.path.abspath(self.spec.store))
        scan = self._scan
        if isinstance(scan, AdaptiveScan) and getattr(self, "_scan_space", None) == made:
            return scan
        scan = AdaptiveScan(self.function, plan["bounds"], self.spec.store, grid=plan["grid"],
                            goal=plan["goal"])
        self._scan, self._scan_space = scan, made
        return scan

    def adopt(self, scan: Scan) -> None:
        """Make :meth:`scan` return ``scan`` (an existing Scan) while the form is unchanged."""
        self._scan, self._scan_space = scan, self.spec.space

    def refresh(self) -> None:
        """Re-count what the store holds (the run control calls this after a run)."""
        self.spec.refresh()


def _adaptive_summary(plan: dict[str, Any], stored: int, failed: int) -> str:
    """The summary line of an adaptive form: bounds, grid cells, goal, store counts."""
    bounds = ", ".join(f"{name} {format_value(lo)}–{format_value(hi)}"
                       for name, (lo, hi) in plan["bounds"].items())
    cells = plan["grid"]
    parts = [f"<b>adaptive</b> over {html.escape(bounds)}"]
    if cells is not None:
        parts.append(f"× {len(cells):,} grid cell{'s' if len(cells) != 1 else ''} "
                     f"({html.escape(', '.join(cells.names))})")
    goal = plan["goal"]
    wanted = [f"{goal.points:,} points" if goal.points else "",
              f"loss ≤ {format_value(goal.loss)}" if goal.loss else ""]
    parts.append("goal: " + " or ".join(x for x in wanted if x))
    parts.append(f"<b>{stored:,}</b> already in the store"
                 + (f", {failed:,} failed" if failed else ""))
    return ('<div class="nbscan-counts" style="padding:6px 8px;margin-top:6px;'
            'background:#f5f7fa;border-radius:4px;border:1px solid #e3e8ef">'
            + " · ".join(parts) + "</div>")


def _same_space(a: Space | None, b: Space | None) -> bool:
    """The same object, or spaces built the same way (same description)."""
    if a is None or b is None:
        return a is b
    return a is b or a.describe() == b.describe()
