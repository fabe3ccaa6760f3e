"""Results of varying length, one point at a time: :func:`series` (a point's samples
without padding), :func:`padded` (as stored, padded), :func:`to_ragged` (a Dataset's
padded results as flat values plus lengths). Each takes a Dataset or a store's path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import StoreError
from . import ragged
from .directory import open_store

__all__ = ["padded", "series", "to_ragged"]



def _cell_dims(ds: Any) -> list[str]:
    """The dims that tell points apart (grid parameters, or ``point``)."""
    layout = json.loads(ds.attrs.get("notebookscan_layout", "{}") or "{}")
    if layout.get("kind") == "grid" and layout.get("dims"):
        return [d for d in layout["dims"] if d in ds.dims]
    return ["point"] if "point" in ds.dims else []


def _open(data: Any) -> Any:
    if hasattr(data, "data_vars"):
        return data
    return open_store(data, lazy=True)  # reads only the cells asked for


def _point_index(ds: Any, point: Mapping[str, Any]) -> dict[str, Any]:
    """``isel`` indexers of the cell(s) ``point`` (parameter values) names."""
    cells = _cell_dims(ds)
    unknown = sorted(set(point) - set(cells) - {n for n in ds.coords if n != "key"})
    if unknown:
        raise StoreError(f"{unknown} are not parameters of this Dataset; give values of "
                         f"{[n for n in ds.coords if n not in ds.dims or n in cells]}")
    if cells != ["point"]:
        return {d: int(ds.get_index(d).get_loc(v)) for d, v in point.items()}
    mask = np.ones(ds.sizes["point"], dtype=bool)
    for name, value in point.items():
        column = np.arange(ds.sizes["point"]) if name == "point" else ds[name].values
        mask &= column == value
    found = np.flatnonzero(mask)
    if len(found) != 1:
        raise StoreError(f"{dict(point)} matches {len(found)} points; give parameter values "
                         "that pick exactly one (or point=<position>)")
    return {"point": int(found[0])}


def series(data: Any, var: str, **point: Any) -> Any:
    """One point's values of a result with its own dims, without padding.

    In a Dataset, a result whose length differs from point to point is padded with NaN
    to the longest (lazily, when padding would be big). ``series`` gives one point's
    stored values only: the result cut to the point's ``<dim>_length``.

    Parameters
    ----------
    data
        A Dataset (:func:`~notebookscan.open_store`, ``Scan.results()``) or a store path
        (opened lazily: only this point is read).
    var
        The result's name.
    **point
        The point's parameter values (every parameter of a grid; on a ``point``
        layout, enough to pick one point, or ``point=<position>``).

    Returns
    -------
    xarray.DataArray
        Over the result's own dims, loaded.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np, xarray as xr, notebookscan as ns
    >>> def f(n):
    ...     return {"v": xr.DataArray(np.arange(float(n)), dims=("time",))}
    >>> path = tempfile.mkdtemp()
    >>> _ = ns.Scan(f, ns.grid(n=[2, 5]), path).run(executor="serial", progress=False)
    >>> series(path, "v", n=2).values.tolist()
    [0.0, 1.0]
    >>> padded(path, "v").sel(n=2).values.tolist()   # the padded view
    [0.0, 1.0, nan, nan, nan]
    """
    ds = _open(data)
    if var not in ds.data_vars:
        raise StoreError(f"no result {var!r} in the Dataset; it has {sorted(ds.data_vars)}")
    index = _point_index(ds, point)
    one = ds[var].isel(index)
    left = [d for d in _cell_dims(ds) if d in one.dims]
    if left:
        raise StoreError(f"give a value for {left} too: series() returns one point's values")
    if one.dims and f"{one.dims[0]}_length" in ds:
        n = float(ds[f"{one.dims[0]}_length"].isel(index).values)
        one = one.isel({one.dims[0]: slice(0, int(n) if np.isfinite(n) else 0)})
    return one.load()


def padded(data: Any, var: str, **point: Any) -> Any:
    """A result padded with NaN to the longest, loaded into memory.

    Needs (points × longest) in memory: select first (``**point`` with some
    parameters' values, or ``ds.v.sel(...)``) when the result is big. A result shown
    lazily is a dask array; this computes it.

    Parameters
    ----------
    data
        A Dataset or a store path.
    var
        The result's name.
    **point
        Parameter values to select first (``sel``); none: every point.
    """
    ds = _open(data)
    if var not in ds.data_vars:
        raise StoreError(f"no result {var!r} in the Dataset; it has {sorted(ds.data_vars)}")
    return ds[var].isel(_point_index(ds, point) if point else {}).load()


def to_ragged(ds: Any) -> Any:
    """``ds`` with each result whose padding would waste stored as a CF contiguous ragged
    array (for writing to a file): ``<name>`` over ``<name>_sample`` (the cells' values
    one after another, cells in C order of the parameter dims) and ``<name>_count`` over
    the parameter dims (its ``sample_dimension`` attribute names ``<name>_sample``)."""
    cells = _cell_dims(ds)
    out = ds
    for name, var in ds.data_vars.items():
        own = [d for d in var.dims if d not in cells]
        if not own or var.dtype.kind not in "fiub" or f"{own[0]}_length" not in ds:
            continue
        lengths = ds[f"{own[0]}_length"].broadcast_like(var.isel(dict.fromkeys(own, 0)))
        lengths = lengths.transpose(*cells).values
        counts = np.nan_to_num(np.asarray(lengths, dtype=np.float64)).astype(np.int64)
        row_bytes = int(np.prod([ds.sizes[d] for d in own[1:]])) * var.dtype.itemsize
        if not ragged.wasteful(counts.reshape(-1), ds.sizes[own[0]], row_bytes):
            continue
        values, counts = ragged.flat_parts(var.transpose(*cells, *own).data, lengths,
                                           ds.sizes[own[0]])
        count, sample = f"{name}{ragged.COUNT_SUFFIX}", f"{name}{ragged.SAMPLE_SUFFIX}"
        while count in out.variables or sample in out.dims:
            count, sample = f"{count}_", f"{sample}_"
        out = out.drop_vars(name)
        out[name] = ((sample, *own[1:]), values, dict(var.attrs))
        out[count] = (tuple(cells), counts.reshape(lengths.shape), {
            "sample_dimension": sample,
            "long_name": f"number of {own[0]} samples of {name} for the point"})
    return out
