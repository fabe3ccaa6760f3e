"""Build xarray objects without importing dask where no dask array can be involved.

xarray asks "is this a dask array?" while it wraps numpy data, and answering imports
``dask.array`` (and through it scipy) whenever dask is installed: 0.3–0.5 s, more than
opening a 10 000-point store takes. Nothing can be a dask array before ``dask.array`` is
imported, so :func:`defer_dask` answers from ``sys.modules`` until then, and
:func:`index_coords` hands xarray ready pandas indexes (the other place it asks).
Both are exact: once dask is imported, xarray's own answer is used.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["dataset", "defer_dask", "index_coords", "variable"]


class _DaskWhenImported:
    """xarray's record of dask as a duck-array module, importing nothing to answer
    ``type`` (the array classes); anything else loads xarray's real record."""

    @property
    def type(self) -> tuple[type, ...]:
        module = sys.modules.get("dask.array")
        array = getattr(module, "Array", None)
        return () if array is None else (array,)

    def __getattr__(self, name: str) -> Any:
        from xarray.namedarray import pycompat

        real = pycompat.DuckArrayModule("dask")
        pycompat._cached_duck_array_modules["dask"] = real
        return getattr(real, name)


def defer_dask() -> None:
    """Let xarray wrap numpy data without importing dask (no-op once dask is loaded or
    on an xarray without the cache this relies on)."""
    if "dask.array" in sys.modules:
        return
    try:
        from xarray.namedarray import pycompat

        cache = pycompat._cached_duck_array_modules
    except (ImportError, AttributeError):  # another xarray: it imports dask as it likes
        return
    if isinstance(cache, dict):
        cache.setdefault("dask", _DaskWhenImported())


def index_coords(indexed: Mapping[str, np.ndarray],
                 other: Mapping[str, tuple[Any, ...]] | None = None) -> Any:
    """``xarray.Coordinates``: one indexed dimension coordinate per ``indexed`` entry, each
    keeping its numpy dtype (a pandas index alone turns ``<U`` strings into objects),
    plus the ``other`` coordinates, ``(dims, data)`` or ``(dims, data, attrs)``."""
    import pandas as pd
    import xarray as xr

    variables: dict[str, Any] = {}
    indexes: dict[str, Any] = {}
    for dim, array in indexed.items():
        array = np.asarray(array)
        index = xr.indexes.PandasIndex(pd.Index(array), dim, coord_dtype=array.dtype)
        variables.update(index.create_variables())
        indexes[dim] = index
    for name, value in (other or {}).items():
        variables[name] = xr.Variable(*value)
    return xr.Coordinates(variables, indexes)


def dataset(data_vars: dict[str, Any], indexed: Mapping[str, np.ndarray],
            other: Mapping[str, tuple[Any, ...]] | None = None) -> Any:
    """``xarray.Dataset(data_vars, coords)`` built without importing dask: ``indexed``
    maps a dimension to its coordinate values, ``other`` holds the coordinates that are
    no index, as ``(dims, data)``.

    ``data_vars`` is emptied: each ``(dims, data, attrs)`` becomes a variable in turn.
    A numpy array is wrapped as it is: xarray would otherwise pass each object array
    through a pandas Series (to find dates in it), a transient of ~40 bytes a cell, while
    the arrays given here hold text only (and dates as ``datetime64``).
    """
    import xarray as xr

    defer_dask()
    variables = {}
    for name in list(data_vars):
        value = data_vars.pop(name)
        variables[name] = variable(*value) if isinstance(value, tuple) else value
    return xr.Dataset(variables, coords=index_coords(indexed, other))


def variable(dims: Any, data: Any, attrs: Mapping[str, Any] | None = None) -> Any:
    """``xarray.Variable(dims, data, attrs)``; a numpy array is wrapped as it is (see
    :func:`dataset`): only for arrays of numbers, dates or text."""
    import xarray as xr

    return xr.Variable(dims, data, attrs, fastpath=type(data) is np.ndarray)
