"""Plots of scan results: a labelled Dataset in, a matplotlib Figure out.

Both functions take what :meth:`notebookscan.Scan.results` or
:func:`notebookscan.open_store` return — a grid-layout Dataset (one dimension per
parameter) or a points-layout one (a ``point`` dimension, the parameters as
coordinates) — and return a :class:`matplotlib.figure.Figure`. They never call
``display()`` and never touch pyplot's global state, so they are safe in scripts, in
threads (the live plot renders in the background) and in notebooks, where a returned
Figure shows itself.

Missing points stay visibly missing: lines break at them, heatmap cells without a value
are hatched grey, and failed points are marked with a red ×.

matplotlib is imported when a plot is made, not when this module is imported.

Examples
--------
>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset(
...     {"rate": (("k", "trial"), [[1.0, 1.2], [2.0, np.nan], [2.9, 3.1]]),
...      "ns_status": (("k", "trial"), [["done", "done"], ["done", "missing"],
...                                     ["done", "failed"]])},
...     coords={"k": [1.0, 2.0, 3.0], "trial": [0, 1]})
>>> fig = plot_result(ds, "rate", x="k")          # mean over trials, with error bars
>>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
('k', 'rate (mean over 2 trials)')
>>> fig = plot_status(ds, x="k")
>>> fig.axes[0].get_title()
'status: 4 done, 1 failed, 1 missing'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ArgumentError
from .results import DIM_SUFFIXES
from .store.schema import KEY, STATUS, is_reserved

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["looks_log", "parameters", "plot_result", "plot_status", "result_variables"]

#: Colours of the point states (colour-blind safe: green/red/grey differ in lightness);
#: ``excluded`` (grid cells no scan space holds) is a plain, near-white neutral.
STATUS_COLORS = {"done": "#3a923a", "failed": "#d0342c", "missing": "#d9d9d9",
                 "excluded": "#f3f3f3"}
_MISSING_HATCH = "////"
_MAX_ANNOTATED_CELLS = 400
#: Tick labels per axis at most (ticks sit at the parameter values, thinned to this).
_MOST_TICKS = 10
#: Values without a regular run are drawn log when they span at least this ratio.
_LOG_SPAN = 10.0
_MAX_SEQUENCE_CHECKS = 20


# --------------------------------------------------------------------------- inspecting

def parameters(ds: xr.Dataset) -> list[str]:
    """The parameter names of a scan Dataset, in scan order.

    Read from the ``notebookscan_layout`` attribute when present; otherwise the
    dimensions of ``ns_status`` (grid layout) or the 1-D coordinates along ``point``.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"y": (("a", "b"), [[1.0]])}, coords={"a": [0], "b": [1]})
    >>> parameters(ds)
    ['a', 'b']
    """
    layout = ds.attrs.get("notebookscan_layout")
    if layout:
        try:
            dims = json.loads(layout).get("dims") or []
        except (TypeError, ValueError):
            dims = []
        dims = [d for d in dims if d in ds.coords or d in ds.dims]
        if dims:
            return list(dims)
    if "point" in ds.dims:
        return [name for name, coord in ds.coords.items()
                if coord.dims == ("point",) and name != KEY]
    if STATUS in ds:
        return list(ds[STATUS].dims)
    return [str(d) for d in ds.dims]


def result_variables(ds: xr.Dataset) -> list[str]:
    """Names of the numeric result variables (bookkeeping and ``*_length`` left out).

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"y": ("k", [1.0]), "ns_status": ("k", ["done"])}, coords={"k": [0]})
    >>> result_variables(ds)
    ['y']
    """
    out = []
    for name, var in ds.data_vars.items():
        name = str(name)
        if is_reserved(name) or name.endswith(DIM_SUFFIXES):
            continue
        if var.dtype.kind in "biufc":
            out.append(name)
    return out


def _is_points(ds: xr.Dataset) -> bool:
    return "point" in ds.dims


def try_grid(ds: xr.Dataset) -> xr.Dataset | None:
    """A points-layout Dataset reshaped onto its parameters, when they form a grid."""
    import pandas as pd

    from .store.dataset import to_grid

    params = parameters(ds)
    if not params:
        return None
    # scattered samples: a grid would be mostly holes (and, for many points, too big
    # to allocate), so its size is known before it is built
    size = math.prod(len(pd.unique(np.asarray(ds[p].values).ravel())) for p in params)
    if size > 4 * ds.sizes["point"]:
        return None
    try:
        return to_grid(ds, params)
    except (ValueError, KeyError):
        return None


def _status(ds: xr.Dataset, template: xr.DataArray | None = None) -> xr.DataArray:
    """The ``ns_status`` variable, or one derived from NaNs in ``template``."""
    if STATUS in ds:
        return ds[STATUS].astype(str)
    if template is None:
        raise ArgumentError("the Dataset has no 'ns_status' variable; pass a result variable")
    finite = template.notnull()
    extra = [d for d in template.dims if d not in parameters(ds)]
    if extra:
        finite = finite.any(extra)
    return finite.where(finite, "missing").where(~finite, "done").astype(str)


def _check_dims(ds: xr.Dataset, var: str, dims: Sequence[str | None]) -> xr.DataArray:
    if var not in ds:
        raise ArgumentError(f"the Dataset has no variable {var!r}; its results are "
                            f"{', '.join(result_variables(ds)) or 'none'}")
    array = ds[var]
    for dim in dims:
        if dim is not None and dim not in array.dims:
            raise ArgumentError(f"{var!r} has no dimension {dim!r}; its dimensions are "
                                f"{', '.join(map(str, array.dims))}")
    return array


def _select(array: xr.DataArray, selection: Mapping[str, Any]) -> xr.DataArray:
    for dim, value in selection.items():
        if dim not in array.dims:
            continue
        coord = array[dim] if dim in array.coords else None
        if coord is not None and coord.dtype.kind in "iuf":
            array = array.sel({dim: value}, method="nearest")
        elif coord is not None:
            array = array.sel({dim: value})
        else:
            array = array.isel({dim: int(value)})
    return array


def _reduce(array: xr.DataArray, over: Sequence[str]) -> tuple[xr.DataArray,
                                                                 xr.DataArray | None, int]:
    """Mean over ``over`` (NaN skipped), its standard error, and the count reduced."""
    over = [d for d in over if d in array.dims]
    if not over:
        return array, None, 1
    count = array.notnull().sum(over)
    mean = array.mean(over, skipna=True)
    std = array.std(over, skipna=True, ddof=1) if math.prod(array.sizes[d] for d in over) > 1 \
        else None
    sem = None if std is None else std / np.sqrt(count.where(count > 0))
    return mean, sem, math.prod(array.sizes[d] for d in over)


def _leftover(array: xr.DataArray, keep: Sequence[str | None]) -> list[str]:
    return [str(d) for d in array.dims if d not in keep]


def _explain_leftover(var: str, left: Sequence[str], array: xr.DataArray) -> ArgumentError:
    hints = ", ".join(f"{d!r}: {array[d].values[0].tolist()!r}" if d in array.coords
                      else f"{d!r}: 0"
                      for d in left)
    return ArgumentError(f"{var!r} still varies along {', '.join(map(repr, left))}; pick a value "
                         f"with slice={{{hints}}}, average with over=[...], or use it as x/y")


def _coord_values(array: xr.DataArray, dim: str) -> tuple[np.ndarray, list[str] | None]:
    """Numeric positions along ``dim`` and, for non-numeric coords, tick labels."""
    if dim in array.coords and array[dim].dtype.kind in "iuf":
        return np.asarray(array[dim].values, dtype=float), None
    if dim in array.coords:
        labels = [str(v) for v in array[dim].values]
        return np.arange(len(labels), dtype=float), labels
    return np.arange(array.sizes[dim], dtype=float), None


def _sequence_in(values: np.ndarray, log: bool) -> np.ndarray | None:
    """The longest evenly spaced run from ``values[0]`` to ``values[-1]`` (3+ values, evenly
    in log when ``log``) that ``values`` contain: the coarse grid of a refined axis."""
    a, b = values[0], values[-1]
    with np.errstate(all="ignore"):
        if log:
            counts = 1 + np.log(b / a) / np.log(values[1:] / a)
        else:
            counts = 1 + (b - a) / (values[1:] - a)
    # a run of n values fits only n <= len(values); near-integer n only (up to rounding)
    near = (np.isfinite(counts) & (counts <= len(values) + 0.5)
            & (np.abs(counts - np.round(counts)) < 1e-7 * counts))
    candidates = np.unique(np.round(counts[near]).astype(int))
    def held(run: np.ndarray) -> bool:
        at = np.clip(np.searchsorted(values, run), 1, len(values) - 1)
        close = (np.isclose(values[at], run, rtol=1e-8, atol=0)
                 | np.isclose(values[at - 1], run, rtol=1e-8, atol=0))
        return bool(close.all())

    for n in candidates[candidates >= 3][::-1][:_MAX_SEQUENCE_CHECKS]:
        probe = np.array([1, n // 2, n - 2]) / (n - 1)  # a few of its values first: cheap
        if not held(a * (b / a) ** probe if log else a + (b - a) * probe):
            continue
        run = np.geomspace(a, b, n) if log else np.linspace(a, b, n)
        if held(run):
            return run
    return None


def _spine(values: np.ndarray) -> tuple[bool, np.ndarray | None]:
    """Whether sorted distinct ``values`` want a log axis, and the coarse grid they hold."""
    values = np.unique(np.asarray(values, dtype=float))
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return False, None
    linear = _sequence_in(values, log=False)
    if not values[0] > 0:
        return False, linear
    geometric = _sequence_in(values, log=True)
    if geometric is not None or linear is not None:
        if geometric is not None and (linear is None or len(geometric) > len(linear)):
            return True, geometric
        return False, linear
    if values[-1] / values[0] < _LOG_SPAN:
        return False, None
    if len(values) == 2:
        return True, None
    even = np.linspace(0.0, 1.0, len(values))
    lin = (values - values[0]) / (values[-1] - values[0])
    logs = np.log(values)
    lg = (logs - logs[0]) / (logs[-1] - logs[0])
    return bool(np.abs(lg - even).max() < np.abs(lin - even).max()), None


def looks_log(values: Any) -> bool:
    """Whether a parameter's values are best drawn on a log axis (the plots' default).

    All values must be positive. A grid (refined or not) keeps the scale of its coarse
    grid: when the values hold a geometric run from the smallest to the largest value
    (3+ values) the axis is log, an evenly spaced run makes it linear (the longer run
    wins). Other values — typed lists, two values, random samples — are log when they
    span at least a decade (×10) and are spread more evenly in log than linearly.

    Examples
    --------
    >>> looks_log([0.01, 0.1, 1.0]), looks_log([0.005, 0.01]), looks_log([0.001, 0.1])
    (True, False, True)
    >>> coarse, fine = np.geomspace(0.01, 10, 7), np.geomspace(0.5, 2, 9)
    >>> looks_log(np.concatenate([coarse, fine]))       # refined: still log
    True
    >>> looks_log([0.0, 1.0, 2.0]), looks_log([1, 2, 5, 10, 20, 50, 100])
    (False, True)
    """
    return _spine(np.asarray(values, dtype=float))[0]


def _value_ticks(axis: Any, values: np.ndarray, log: bool, labels: list[str] | None = None,
                 most: int = _MOST_TICKS) -> None:
    """Ticks at the parameter's own values (not round numbers between them), thinned so
    labels do not overlap: the coarse grid's values first, then the most isolated ones."""
    from matplotlib.ticker import NullLocator

    values = np.asarray(values, dtype=float)
    order = np.argsort(values)
    values = values[order]
    if labels is not None:
        labels = [labels[i] for i in order]
    _, spine = _spine(values) if labels is None else (False, None)
    where = np.log(values) if log and (values > 0).all() else values
    span = float(where[-1] - where[0]) if len(where) > 1 else 0.0
    gaps = np.diff(where)
    isolation = np.maximum(np.concatenate([gaps, [0.0]]), np.concatenate([[0.0], gaps]))
    first = np.zeros(len(values), dtype=bool)
    if spine is not None:
        at = np.clip(np.searchsorted(values, spine), 0, len(values) - 1)
        first[at] = True
    priority = np.lexsort((-isolation, ~first))  # coarse grid first, then the most isolated
    chosen: list[int] = []
    min_gap = span / most * 0.999
    for i in priority:
        if all(abs(where[i] - where[j]) >= min_gap for j in chosen):
            chosen.append(int(i))
    chosen.sort()
    texts = [labels[i] for i in chosen] if labels is not None else [_fmt(values[i])
                                                                     for i in chosen]
    axis.set_ticks(values[chosen], texts)
    axis.set_minor_locator(NullLocator())  # the cells sit at the values: no ticks between


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; geometric midpoints on a log axis)."""
    v = np.log(values) if log else values.astype(float)
    if len(v) == 1:  # a cell of the value's own size (±half of it; ±0.5 around zero)
        half = 0.3 if log else (abs(v[0]) / 2 or 0.5)
        mid = np.array([v[0] - half, v[0] + half])
    else:
        inner = (v[1:] + v[:-1]) / 2
        mid = np.concatenate([[v[0] - (inner[0] - v[0])], inner, [v[-1] + (v[-1] - inner[-1])]])
    return np.exp(mid) if log else mid


def _figure(figsize: tuple[float, float] | None) -> Figure:
    from matplotlib.figure import Figure

    class ShownFigure(Figure):
        """A Figure that Jupyter shows as a picture even when no pyplot backend is set up
        (a fresh kernel without ``%matplotlib inline``)."""

        def _repr_png_(self) -> bytes:
            import io

            buffer = io.BytesIO()
            self.savefig(buffer, format="png", bbox_inches="tight")
            return buffer.getvalue()

    return ShownFigure(figsize=figsize or (6.0, 3.8), layout="constrained", dpi=100)


def _label(array: xr.DataArray, name: str) -> str:
    """An axis or colorbar label as xarray makes it: the ``long_name`` (else the
    ``standard_name``, else ``name``) and the ``units`` in brackets.

    >>> import xarray as xr
    >>> _label(xr.DataArray(1.0, attrs={"units": "Hz", "long_name": "firing rate"}), "rate")
    'firing rate [Hz]'
    >>> _label(xr.DataArray(1.0), "rate")
    'rate'
    """
    attrs = getattr(array, "attrs", None) or {}
    text = attrs.get("long_name") or attrs.get("standard_name") or name
    units = attrs.get("units")
    return f"{text} [{units}]" if units else str(text)


def _axis_label(source: xr.Dataset | xr.DataArray, name: str) -> str:
    """The label of the axis ``name`` (a coordinate or variable of ``source``, with its
    units when declared); ``name`` itself when ``source`` does not hold it."""
    try:
        return _label(source[name], name)
    except KeyError:
        return name


# --------------------------------------------------------------------------- results

def plot_result(ds: xr.Dataset, var: str, x: str, y: str | None = None, *,
                over: str | Sequence[str] | None = "trial",
                slice: Mapping[str, Any] | None = None,
                hue: str | None = None, logx: bool | None = None, logy: bool | None = None,
                figsize: tuple[float, float] | None = None, title: str | None = None,
                ) -> Figure:
    """Plot one result against one parameter (a line) or two (a heatmap).

    Parameters
    ----------
    ds
        A scan Dataset (``scan.results()``, ``open_store(path)``), grid or points layout.
    var
        The result variable to plot.
    x, y
        Dimension(s) to plot along. With ``y`` a heatmap (grid), or for points that do
        not form a grid (random or adaptive samples) the values linearly interpolated on
        the points' Delaunay triangulation (``tripcolor``) with the points on top,
        coloured on the same scale. Without ``y`` a line with markers (for scattered
        points the line through them sorted by ``x``).
    over
        Dimension(s) averaged over (NaN skipped); the line gets error bars of one
        standard error of the mean. Default ``"trial"`` (ignored when absent).
        ``None`` averages nothing.
    slice
        ``{dim: value}`` for the other dimensions (nearest value for numeric ones).
        Every dimension of ``var`` must be plotted, averaged or sliced.
    hue
        For a line plot: one line per value of this dimension.
    logx, logy
        Log (``True``) or linear (``False``) x and y axes. ``None`` (default) decides from
        the parameter's values (:func:`looks_log`: a refined axis keeps its coarse grid's
        scale); the values axis of a line plot stays linear unless ``logy=True``.
    figsize, title
        Figure size in inches and title.

    Returns
    -------
    matplotlib.figure.Figure
        Not shown and not registered with pyplot; a notebook shows it when it is the
        value of a cell.

    Raises
    ------
    ValueError
        When ``var``, ``x`` or ``y`` are not in ``ds``, or a dimension is left over.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"rate": (("k", "tau"), [[1.0, 2.0], [np.nan, 4.0]])},
    ...                 coords={"k": [1, 2], "tau": [0.1, 0.2]})
    >>> fig = plot_result(ds, "rate", x="k", slice={"tau": 0.1})   # gap at k=2
    >>> fig = plot_result(ds, "rate", x="k", y="tau")              # hatched empty cell
    >>> len(fig.axes)   # the plot and its colour bar
    2
    """
    if _is_points(ds):
        grid = try_grid(ds)
        if grid is None:
            return _scatter_result(ds, var, x, y, slice=slice or {}, logx=logx, logy=logy,
                                   figsize=figsize, title=title)
        ds = grid
    over_dims = [over] if isinstance(over, str) else list(over or [])
    over_dims = [d for d in over_dims if d not in (x, y, hue)]
    array = _check_dims(ds, var, [x, y, hue])
    selection = {k: v for k, v in (slice or {}).items() if k not in (x, y, hue)}
    array = _select(array, selection)
    status = _select(_status(ds, ds[var]), selection) if STATUS in ds else None
    mean, sem, n = _reduce(array, over_dims)
    single = [d for d in _leftover(mean, [x, y, hue]) if mean.sizes[d] == 1]
    if single:  # one value only: nothing to choose
        mean = mean.squeeze(single, drop=False)
        sem = None if sem is None else sem.squeeze(single, drop=False)
        if status is not None:
            status = status.squeeze([d for d in single if d in status.dims], drop=False)
    left = _leftover(mean, [x, y, hue])
    if left:
        raise _explain_leftover(var, left, mean)
    fig = _figure(figsize)
    ax = fig.add_subplot()
    averaged = [d for d in over_dims if d in array.dims and array.sizes[d] > 1]
    ylabel = _label(array, var)
    if averaged == ["trial"]:
        ylabel += f" (mean over {n} trials)"
    elif averaged:
        ylabel += f" (mean over {'×'.join(averaged)}, {n} points)"
    if y is None:
        _line(ax, mean, sem, x, hue, status, over_dims, logx, logy)
        ax.set_xlabel(_axis_label(ds, x))
        ax.set_ylabel(ylabel)
    else:
        failed = None
        if status is not None and x in status.dims and y in status.dims:
            others = [d for d in status.dims if d not in (x, y)]
            failed = (status == "failed")
            failed = (failed.any(others) if others else failed) & mean.isnull()
            failed = failed.transpose(y, x)
        _heatmap(fig, ax, mean.transpose(y, x), x, y, ylabel, logx, logy, failed)
    if title is None:
        fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in selection.items() if k in array.coords
                          or k in ds.coords)
        title = f"{var}" + (f" at {fixed}" if fixed else "")
    ax.set_title(title, fontsize="medium")
    return fig


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _line(ax: Any, mean: xr.DataArray, sem: xr.DataArray | None, x: str, hue: str | None,
          status: xr.DataArray | None, over: Sequence[str], logx: bool | None,
          logy: bool | None) -> None:
    positions, labels = _coord_values(mean, x)
    groups = [(None, mean, sem)] if hue is None else [
        (value, mean.isel({hue: i}), None if sem is None else sem.isel({hue: i}))
        for i, value in enumerate(mean[hue].values if hue in mean.coords
                                  else range(mean.sizes[hue]))
    ]
    for value, line, err in groups:
        order = np.argsort(positions)
        yv = np.asarray(line.transpose(x).values, dtype=float)[order]
        xv = positions[order]
        label = None if value is None else f"{hue}={_fmt(value)}"
        if err is not None and np.isfinite(np.asarray(err.values, dtype=float)).any():
            ev = np.asarray(err.transpose(x).values, dtype=float)[order]
            ax.errorbar(xv, yv, yerr=np.where(np.isfinite(ev), ev, 0.0), marker="o",
                        markersize=4, capsize=3, linewidth=1.5, label=label)
        else:
            ax.plot(xv, yv, marker="o", markersize=4, linewidth=1.5, label=label)
    if status is not None and x in status.dims:
        _mark_status_on_line(ax, status, x, positions, over)
    _include_x(ax, positions)
    if labels is not None:
        ax.set_xticks(positions, labels)
    if logx is None:
        logx = labels is None and looks_log(positions)
    if logx and labels is None and (positions > 0).all():
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    labelled = [c for c in ax.collections if c.get_label() in ("missing", "failed")]
    if hue is not None:
        # beside the plot: one entry per line never hides data, and no costly "best" search
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1),
                  borderaxespad=0, title=hue, title_fontsize="small")
    elif labelled:
        ax.legend(fontsize="small", frameon=False)
    ax.grid(True, alpha=0.3)


def _mark_status_on_line(ax: Any, status: xr.DataArray, x: str, positions: np.ndarray,
                         over: Sequence[str]) -> None:
    """Rug marks along the bottom: grey | where points are missing, red × where failed."""
    others = [d for d in status.dims if d != x]
    failed = (status == "failed")
    missing = (status == "missing")
    if others:
        failed = failed.any(others)
        missing = missing.any(others)
    _rug(ax, positions[np.asarray(missing.transpose(x).values, dtype=bool)],
         positions[np.asarray(failed.transpose(x).values, dtype=bool)])


def _include_x(ax: Any, positions: np.ndarray) -> None:
    """Keep every x position in view, also where the values are missing (NaN)."""
    finite = positions[np.isfinite(positions)]
    if len(finite):
        ax.dataLim.update_from_data_x(finite, ignore=False)
        ax.autoscale_view()


def _rug(ax: Any, mx: np.ndarray, fx: np.ndarray) -> None:
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    if len(mx):
        ax.scatter(mx, np.full(len(mx), 0.02), marker="|", s=80, color="#999999",
                   transform=trans, clip_on=False, label="missing", zorder=3)
    if len(fx):
        ax.scatter(fx, np.full(len(fx), 0.05), marker="x", s=30, color=STATUS_COLORS["failed"],
                   transform=trans, clip_on=False, label="failed", zorder=3)


def _cell_axis(values: xr.DataArray, dim: str, log: bool | None
               ) -> tuple[np.ndarray, np.ndarray, list[str] | None, np.ndarray, bool]:
    """One axis of a cell map: sorted centres, their order, labels (non-numeric), the cell
    edges halfway between the centres (geometric midpoints on a log axis), and log-ness
    (``log=None``: :func:`looks_log` of the values)."""
    positions, labels = _coord_values(values, dim)
    order = np.argsort(positions)
    centres = positions[order]
    if labels is not None:
        labels = [labels[i] for i in order]
    if log is None:
        log = labels is None and looks_log(centres)
    log = bool(log) and labels is None and bool((centres > 0).all())
    return centres, order, labels, _edges(centres, log), log


def _cell_ticks(ax: Any, xs: np.ndarray, xlabels: list[str] | None, xe: np.ndarray, logx: bool,
                ys: np.ndarray, ylabels: list[str] | None, ye: np.ndarray, logy: bool) -> None:
    """Scales, limits (the outer cell edges) and ticks at the values of a cell map."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    _value_ticks(ax.xaxis, xs, logx, xlabels)
    _value_ticks(ax.yaxis, ys, logy, ylabels)


def _heatmap(fig: Any, ax: Any, values: xr.DataArray, x: str, y: str, label: str,
             logx: bool | None, logy: bool | None, failed: xr.DataArray | None) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    xs, xo, xlabels, xe, logx = _cell_axis(values, x, logx)
    ys, yo, ylabels, ye, logy = _cell_axis(values, y, logy)
    data = np.asarray(values.values, dtype=float)[np.ix_(yo, xo)]
    ax.add_patch(Rectangle((xe[0], ye[0]), xe[-1] - xe[0], ye[-1] - ye[0], facecolor="#f2f2f2",
                           edgecolor="#b0b0b0", hatch=_MISSING_HATCH, linewidth=0, zorder=0))
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(data), shading="flat", cmap="viridis",
                         zorder=1)
    _cell_ticks(ax, xs, xlabels, xe, logx, ys, ylabels, ye, logy)
    ax.set_xlabel(_axis_label(values, x))
    ax.set_ylabel(_axis_label(values, y))
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(label)
    handles = []
    if np.isnan(data).any():
        handles.append(Patch(facecolor="#f2f2f2", edgecolor="#b0b0b0", hatch=_MISSING_HATCH,
                             label="no value"))
    if failed is not None:
        bad = np.asarray(failed.values, dtype=bool)[np.ix_(yo, xo)]
        if bad.any():
            rows, cols = np.nonzero(bad)
            ax.scatter(xs[cols], ys[rows], marker="x", s=36, color=STATUS_COLORS["failed"],
                       zorder=2)
            handles.append(Line2D([], [], marker="x", linestyle="", color=STATUS_COLORS["failed"],
                                  label="failed"))
    if handles:
        fig.legend(handles=handles, fontsize="small", frameon=False, ncols=len(handles),
                   loc="outside lower center")


def _points_filter(ds: xr.Dataset, selection: Mapping[str, Any]) -> np.ndarray:
    keep = np.ones(ds.sizes["point"], dtype=bool)
    for dim, value in selection.items():
        if dim not in ds.coords or ds[dim].dims != ("point",):
            continue
        column = ds[dim].values
        if column.dtype.kind in "iuf":
            keep &= np.isclose(column.astype(float), float(value), rtol=1e-9, atol=0)
        else:
            keep &= column.astype(str) == str(value)
    return keep


def _scatter_result(ds: xr.Dataset, var: str, x: str, y: str | None, *,
                    slice: Mapping[str, Any], logx: bool | None,
                    logy: bool | None, figsize: tuple[float, float] | None,
                    title: str | None) -> Figure:
    if var not in ds:
        raise ArgumentError(f"the Dataset has no variable {var!r}; its results are "
                            f"{', '.join(result_variables(ds)) or 'none'}")
    for dim in (x, y):
        if dim is not None and dim not in ds.coords:
            raise ArgumentError(f"{dim!r} is not a parameter of this Dataset; its parameters are "
                                f"{', '.join(parameters(ds))}")
    array = ds[var]
    own = [d for d in array.dims if d != "point"]
    array = _select(array, {k: v for k, v in slice.items() if k in own})
    left = [d for d in array.dims if d != "point"]
    if left:
        raise _explain_leftover(var, left, array)
    keep = _points_filter(ds, slice)
    status = _status(ds, ds[var]).values[keep]
    values = np.asarray(array.values, dtype=float)[keep]
    xv = np.asarray(ds[x].values, dtype=float)[keep]
    fig = _figure(figsize)
    ax = fig.add_subplot()
    ok = np.isfinite(values)
    failed = status == "failed"
    if y is None:
        order = np.argsort(xv[ok], kind="stable")
        ax.plot(xv[ok][order], values[ok][order], "o-", markersize=4, linewidth=1)
        ax.set_ylabel(_label(ds[var], var))
        _rug(ax, xv[~ok & ~failed], xv[failed])
        _include_x(ax, xv)
    else:
        yv = np.asarray(ds[y].values, dtype=float)[keep]
        points = ax.scatter(xv[ok], yv[ok], c=values[ok], cmap="viridis", s=30,
                            edgecolors="white", linewidths=0.5, zorder=3)
        _triangulation(ax, xv[ok], yv[ok], values[ok], points)
        ax.scatter(xv[~ok & ~failed], yv[~ok & ~failed], facecolors="none",
                   edgecolors="#999999", s=30, label="missing")
        ax.scatter(xv[failed], yv[failed], marker="x", color=STATUS_COLORS["failed"], s=30,
                   label="failed")
        fig.colorbar(points, ax=ax).set_label(_label(ds[var], var))
        ax.set_ylabel(_axis_label(ds, y))
        if logy or (logy is None and looks_log(yv)):
            ax.set_yscale("log")
    if logx or (logx is None and looks_log(xv)):
        ax.set_xscale("log")
    if logy and y is None:
        ax.set_yscale("log")
    ax.set_xlabel(_axis_label(ds, x))
    if (~ok).any():
        ax.legend(fontsize="small", frameon=False)
    ax.grid(True, alpha=0.3)
    ax.set_title(title if title is not None else f"{var} ({keep.sum()} points)",
                 fontsize="medium")
    return fig


def _triangulation(ax: Any, xv: np.ndarray, yv: np.ndarray, values: np.ndarray,
                   points: Any) -> None:
    """The values linearly interpolated on the Delaunay triangulation of the samples,
    below them and on their colour scale (nothing when they span no triangle)."""
    from matplotlib.tri import Triangulation

    if len(xv) < 3:
        return
    try:
        tri = Triangulation(xv, yv)
    except (ValueError, RuntimeError):  # collinear or repeated points: no triangle
        return
    ax.tripcolor(tri, values, shading="gouraud", cmap=points.get_cmap(),
                 norm=points.norm, zorder=1)


# --------------------------------------------------------------------------- status

def plot_status(ds: xr.Dataset, x: str | None = None, y: str | None = None, *,
                slice: Mapping[str, Any] | None = None, logx: bool | None = None,
                logy: bool | None = None,
                figsize: tuple[float, float] | None = None) -> Figure:
    """Map which points are done, failed or missing, over one or two parameters.

    Parameters
    ----------
    ds
        A scan Dataset with an ``ns_status`` variable (``scan.results()``, ``open_store``).
    x, y
        Parameters to map over; by default the first two. Other parameters are sliced
        (``slice``) or counted: with one parameter, stacked bars of the counts per value;
        with two, one cell per pair coloured done (all done), failed (any failed) or
        partly/all missing (hatched), labelled ``done/total`` when it holds several points.
        Points-layout Datasets that do not form a grid give a scatter coloured by status.
    slice
        ``{parameter: value}`` to fix some of the other parameters.
    logx, logy
        Log or linear parameter axes; ``None`` decides from the values (as
        :func:`plot_result` does).
    figsize
        Figure size in inches.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"ns_status": (("a", "b"), [["done", "failed"], ["missing", "done"]])},
    ...                 coords={"a": [0, 1], "b": [10, 20]})
    >>> plot_status(ds).axes[0].get_title()
    'status: 2 done, 1 failed, 1 missing'
    """
    if STATUS not in ds:
        raise ArgumentError("plot_status needs a Dataset with a 'status' variable, such as "
                            "scan.results() or open_store(path)")
    if _is_points(ds):
        grid = try_grid(ds)
        if grid is None:
            return _scatter_status(ds, x, y, slice=slice or {}, figsize=figsize)
        ds = grid
    params = [p for p in parameters(ds) if p in ds[STATUS].dims]
    if not params:
        raise ArgumentError("the Dataset's status has no parameter dimensions")
    if x is None and y is None and len(params) > 1:
        x, y = params[0], params[1]
    x = x or params[0]
    status = _select(ds[STATUS].astype(str), {k: v for k, v in (slice or {}).items()
                                                if k not in (x, y)})
    for dim in (x, y):
        if dim is not None and dim not in status.dims:
            raise ArgumentError(f"{dim!r} is not a parameter of this Dataset; its parameters "
                                f"are {', '.join(params)}")
    counts = {s: (status == s) for s in ("done", "failed", "missing", "excluded")}
    totals = {s: int(c.sum()) for s, c in counts.items()}
    fig = _figure(figsize)
    ax = fig.add_subplot()
    keep = [d for d in (x, y) if d is not None]
    others = [d for d in status.dims if d not in keep]
    per_cell = {s: (c.sum(others) if others else c.astype(int)) for s, c in counts.items()}
    if y is None:
        positions, labels = _coord_values(status, x)
        order = np.argsort(positions)
        bottom = np.zeros(len(positions))
        width = _bar_width(positions[order]) if labels is None else 0.8
        xs = positions[order]
        if logx or (logx is None and labels is None and looks_log(xs)):
            ax.set_xscale("log")
            width = xs * 0.25
        for name in ("done", "failed", "missing", "excluded"):
            if name == "excluded" and not totals[name]:
                continue
            heights = np.asarray(per_cell[name].transpose(x).values, dtype=float)[order]
            ax.bar(xs, heights, width=width, bottom=bottom, color=STATUS_COLORS[name],
                   hatch=_MISSING_HATCH if name == "missing" else None,
                   edgecolor="#b0b0b0" if name == "missing" else "white", linewidth=0.5,
                   label=name)
            bottom += heights
        if labels is not None:
            ax.set_xticks(positions, labels)
        ax.set_xlabel(_axis_label(status, x))
        ax.set_ylabel("points" + (f" (over {'×'.join(others)})" if others else ""))
        fig.legend(fontsize="small", frameon=False, ncols=4, loc="outside lower center")
    else:
        _status_cells(fig, ax, per_cell, x, y, logx, logy)
    excluded = f", {totals['excluded']} excluded" if totals["excluded"] else ""
    ax.set_title(f"status: {totals['done']} done, {totals['failed']} failed, "
                 f"{totals['missing']} missing{excluded}", fontsize="medium")
    return fig


def _bar_width(positions: np.ndarray) -> float:
    if len(positions) < 2:
        return 0.8
    return float(np.min(np.diff(positions))) * 0.8


def _status_cells(fig: Any, ax: Any, per_cell: Mapping[str, xr.DataArray], x: str, y: str,
                  logx: bool | None = None, logy: bool | None = None) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    done = np.asarray(per_cell["done"].transpose(y, x).values, dtype=float)
    failed = np.asarray(per_cell["failed"].transpose(y, x).values, dtype=float)
    missing = np.asarray(per_cell["missing"].transpose(y, x).values, dtype=float)
    total = done + failed + missing
    # 0 done, 1 failed, 2 partly missing, 3 all missing, 4 excluded (no point of a scan)
    category = np.where(total == 0, 4, np.where(failed > 0, 1, np.where(
        missing == 0, 0, np.where(done > 0, 2, 3))))
    xs, xo, xlabels, xe, logx = _cell_axis(per_cell["done"], x, logx)
    ys, yo, ylabels, ye, logy = _cell_axis(per_cell["done"], y, logy)
    category = category[np.ix_(yo, xo)]
    cmap = ListedColormap([STATUS_COLORS["done"], STATUS_COLORS["failed"], "#a6cfa6",
                           STATUS_COLORS["missing"], STATUS_COLORS["excluded"]])
    ax.pcolormesh(xe, ye, category, cmap=cmap, vmin=-0.5, vmax=4.5, shading="flat")
    rows, cols = np.nonzero((category == 2) | (category == 3))
    if len(rows):
        from matplotlib.collections import PatchCollection
        from matplotlib.patches import Rectangle

        ax.add_collection(PatchCollection(
            [Rectangle((xe[c], ye[r]), xe[c + 1] - xe[c], ye[r + 1] - ye[r])
             for r, c in zip(rows, cols, strict=True)],
            facecolor="none", hatch=_MISSING_HATCH, edgecolor="#8c8c8c", linewidth=0))
    if category.size <= _MAX_ANNOTATED_CELLS and total.max() > 1:
        d, t = done[np.ix_(yo, xo)], total[np.ix_(yo, xo)]
        for (row, col), value in np.ndenumerate(d):
            if not t[row, col]:  # excluded: no point there
                continue
            ax.text(xs[col], ys[row], f"{int(value)}/{int(t[row, col])}", ha="center",
                    va="center", fontsize="x-small", color="white"
                    if category[row, col] in (0, 1) else "#333333")
    _cell_ticks(ax, xs, xlabels, xe, logx, ys, ylabels, ye, logy)
    ax.set_xlabel(_axis_label(per_cell["done"], x))
    ax.set_ylabel(_axis_label(per_cell["done"], y))
    handles = [Patch(color=STATUS_COLORS["done"], label="done"),
               Patch(color=STATUS_COLORS["failed"], label="failed"),
               Patch(facecolor="#a6cfa6", hatch=_MISSING_HATCH, edgecolor="#777777",
                     label="partly missing"),
               Patch(facecolor=STATUS_COLORS["missing"], hatch=_MISSING_HATCH,
                     edgecolor="#777777", label="missing"),
               Patch(facecolor=STATUS_COLORS["excluded"], edgecolor="#cccccc",
                     label="excluded")]
    present = [handles[i] for i in range(5) if (category == i).any()]
    fig.legend(handles=present, fontsize="small", frameon=False, ncols=len(present),
               loc="outside lower center")


def _scatter_status(ds: xr.Dataset, x: str | None, y: str | None, *,
                    slice: Mapping[str, Any],
                    figsize: tuple[float, float] | None) -> Figure:
    params = parameters(ds)
    x = x or params[0]
    if y is None and len(params) > 1:
        y = next(p for p in params if p != x)
    keep = _points_filter(ds, slice)
    status = ds[STATUS].values.astype(str)[keep]
    fig = _figure(figsize)
    ax = fig.add_subplot()
    xv = np.asarray(ds[x].values, dtype=float)[keep]
    yv = np.asarray(ds[y].values, dtype=float)[keep] if y else np.zeros(len(xv))
    for name in ("missing", "done", "failed"):
        mask = status == name
        style = ({"marker": "x"} if name == "failed" else
                 {"marker": "o", "edgecolors": "#999999" if name == "missing" else "none"})
        ax.scatter(xv[mask], yv[mask], s=28, label=f"{name} ({mask.sum()})",
                   color=STATUS_COLORS[name], **style)
    ax.set_xlabel(_axis_label(ds, x))
    if y:
        ax.set_ylabel(_axis_label(ds, y))
    else:
        ax.set_yticks([])
    fig.legend(fontsize="small", frameon=False, ncols=3, loc="outside lower center")
    ax.set_title(f"status: {(status == 'done').sum()} done, {(status == 'failed').sum()} "
                 f"failed, {(status == 'missing').sum()} missing", fontsize="medium")
    return fig
