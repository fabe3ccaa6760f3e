"""Turn a table of points into a labelled :class:`xarray.Dataset`.

Two layouts:

``grid``
    one dimension per parameter (``k``, ``tau``, ``trial``), coordinates the sorted
    distinct values; cells with no stored point are NaN and have ``status == "missing"``.
``points``
    one dimension ``point``, the parameters and ``key`` as coordinates along it.

A points-layout Dataset whose points do form a grid can be reshaped with
:func:`to_grid`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .keys import canonical_token
from .table import Table, _missing_for

__all__ = ["Layout", "to_dataset", "to_grid"]

MISSING = "missing"
_STRING_VARS = ("key", "status", "error", "traceback", "host", "worker", "run")
_DESCRIPTIONS = {
    "status": "done, failed or missing",
    "error": "error of a failed point",
    "traceback": "traceback of a failed point",
    "seed": "seed the point received",
    "started": "when the point started",
    "finished": "when the point finished",
    "duration": "seconds spent in the function",
    "host": "host that ran the point",
    "worker": "engine or process that ran the point",
    "run": "id of the run that stored the point (see attrs['provenance'])",
    "key": "stable key of the point",
}


@dataclass(frozen=True)
class Layout:
    """How points map to dimensions: ``kind`` is ``"grid"`` or ``"points"``."""

    kind: str
    dims: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "dims": list(self.dims)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        return cls(str(data["kind"]), tuple(data["dims"]))


def _times(seconds: np.ndarray) -> np.ndarray:
    seconds = np.asarray(seconds, dtype=np.float64)
    out = np.full(seconds.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(seconds)
    out[ok] = (seconds[ok] * 1e9).astype(np.int64).astype("datetime64[ns]")
    return out


def _decode_result(data: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Missing ints/bools become NaN floats only when something is really missing."""
    if attrs.get("notebookscan_dtype") == "bool" and data.dtype.kind in "iu":
        if (data < 0).any():
            out = data.astype(np.float64)
            out[data < 0] = np.nan
            return out
        return data.astype(bool)
    if data.dtype.kind in "iu":
        missing = data == _missing_for(data.dtype)
        if missing.any():
            out = data.astype(np.float64)
            out[missing] = np.nan
            return out
    return data


def _public_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if not k.startswith(("notebookscan_", "_Fill"))}


def _variables(table: Table) -> dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]:
    """Every per-point variable as ``name -> (own dims, data (n, ...), attrs)``."""
    out: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = {}
    for name, data in table.results.items():
        attrs = table.result_attrs.get(name, {})
        out[name] = (table.result_dims[name], _decode_result(data, attrs), _public_attrs(attrs))
    for dim, lengths in table.lengths.items():
        if len(lengths) and (lengths != lengths.max()).any():  # ragged: keep the true lengths
            out[f"{dim}_length"] = ((), lengths, {"long_name": f"length of {dim} for the point"})
    for dim, coord in table.coords.items():
        if coord.ndim == 2:
            out[f"{dim}_coord"] = ((dim,), coord, {"long_name": f"{dim} of each point"})
    for name, data in table.bookkeeping.items():
        if name in ("started", "finished"):
            data = _times(data)
        attrs = {"long_name": _DESCRIPTIONS.get(name, name)}
        if name == "duration":
            attrs["units"] = "s"
        out[name] = ((), data, attrs)
    return out


def _dataset_attrs(table: Table, layout: Layout) -> dict[str, Any]:
    return {
        "notebookscan_layout": json.dumps(layout.to_json()),
        "provenance": json.dumps(table.runs, sort_keys=True),
    }


def _canonical_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each value's index, merging float noise (0.1 vs 0.1+1e-17)."""
    if values.dtype.kind in "OU":
        values = values.astype(str)
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.dtype.kind != "f" or len(unique) < 2:
        return unique, inverse.reshape(-1)
    tokens = [canonical_token(v) for v in unique.tolist()]
    first: dict[str, int] = {}
    remap = np.array([first.setdefault(t, len(first)) for t in tokens])
    keep = np.unique(remap, return_index=True)[1]
    return unique[keep], remap[inverse.reshape(-1)]


def _empty_like(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if data.dtype.kind in "iub":
        return np.full(shape, np.nan)
    return np.full(shape, _missing_for(data.dtype), dtype=data.dtype)


def _grid_dataset(table: Table, dims: Sequence[str],
                  extra_coords: Mapping[str, Sequence[Any]] | None) -> Any:
    import xarray as xr

    coords: dict[str, np.ndarray] = {}
    positions: list[np.ndarray] = []
    for dim in dims:
        column = table.params[dim]
        extra = list((extra_coords or {}).get(dim, []))
        combined = np.asarray(column.tolist() + extra) if extra else column
        unique, inverse = _canonical_unique(combined)
        coords[dim] = unique
        positions.append(inverse[: len(column)])
    shape = tuple(len(coords[d]) for d in dims)
    flat = np.ravel_multi_index(positions, shape) if len(table) else np.array([], dtype=int)
    size = int(np.prod(shape))
    if len(set(flat.tolist())) != len(flat):
        raise ValueError("points do not form a grid: two points share a cell")
    data_vars = {}
    complete = len(flat) == size  # every cell has a point: no NaN needed, dtypes stay
    for name, (own, data, attrs) in _variables(table).items():
        if complete:
            full = np.empty((size, *data.shape[1:]), dtype=data.dtype)
            full[flat] = data
            data_vars[name] = ((*dims, *own), full.reshape(*shape, *data.shape[1:]), attrs)
            continue
        full = _empty_like(data, (size, *data.shape[1:]))
        if name == "status":
            full[:] = MISSING
        if data.dtype.kind in "iub" and full.dtype.kind == "f":
            data = data.astype(np.float64)
        full[flat] = data
        data_vars[name] = ((*dims, *own), full.reshape(*shape, *data.shape[1:]), attrs)
    for dim, coord in table.coords.items():
        if coord.ndim == 1:
            coords[dim] = coord
    ds = xr.Dataset(data_vars, coords=coords)
    for dim in dims:
        if coords[dim].dtype.kind not in "biuf":
            ds[dim] = ds[dim].astype(str)
    return ds


def _points_dataset(table: Table, pending: Mapping[str, Sequence[Any]] | None) -> Any:
    import xarray as xr

    variables = _variables(table)
    params = dict(table.params)
    extra = 0 if not pending else len(pending["key"])
    if extra:
        for name in table.names:
            params[name] = (np.concatenate([params[name], np.asarray(pending[name])])
                            if len(table) else np.asarray(pending[name]))
        grown = {}
        for name, (own, data, attrs) in variables.items():
            pad = _empty_like(data, (extra, *data.shape[1:]))
            if name == "status":
                pad[:] = MISSING
            elif name == "key":
                pad = np.asarray(pending["key"], dtype=object)
            elif name == "seed":
                pad = np.asarray(pending["seed"], dtype=float)
            if data.dtype.kind in "iub" and pad.dtype.kind == "f":
                data = data.astype(np.float64)
            grown[name] = (own, np.concatenate([data, pad.astype(data.dtype, copy=False)]),
                           attrs)
        variables = grown
    coords = {name: ("point", params[name]) for name in table.names}
    coords["key"] = ("point", variables.pop("key")[1])
    data_vars = {name: (("point", *own), data, attrs) for name, (own, data, attrs) in
                 variables.items()}
    for dim, coord in table.coords.items():
        if coord.ndim == 1:
            coords[dim] = (dim, coord)
    return xr.Dataset(data_vars, coords=coords)


def to_dataset(table: Table, layout: Layout, *,
               extra_coords: Mapping[str, Sequence[Any]] | None = None,
               pending: Mapping[str, Sequence[Any]] | None = None) -> Any:
    """Build the labelled Dataset of ``table`` in ``layout``.

    ``extra_coords`` (grid) adds coordinate values with no stored point yet (shown as
    missing); ``pending`` (points) adds rows for points not stored yet.
    """
    if layout.kind == "grid":
        ds = _grid_dataset(table, layout.dims, extra_coords)
    else:
        ds = _points_dataset(table, pending)
    ds.attrs.update(_dataset_attrs(table, layout))
    return ds


def to_grid(ds: Any, dims: Sequence[str] | None = None) -> Any:
    """Reshape a ``point``-layout Dataset into one dimension per parameter.

    Cells with no point become NaN (``status == "missing"``). Raises ``ValueError``
    when two points fall into the same cell (the parameters do not form a grid).

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"y": ("point", [1.0, 2.0, 3.0])},
    ...                 coords={"a": ("point", [0, 0, 1]), "b": ("point", [0, 1, 0])})
    >>> to_grid(ds, ["a", "b"]).y.values.tolist()
    [[1.0, 2.0], [3.0, nan]]
    """
    if dims is None:
        layout = json.loads(ds.attrs.get("notebookscan_layout", "{}"))
        dims = layout.get("dims") or [
            name for name, c in ds.coords.items() if c.dims == ("point",) and name != "key"
        ]
    dims = list(dims)
    if len(dims) == 1:  # one parameter: no MultiIndex to unstack, just rename the dim
        out = ds.swap_dims({"point": dims[0]})
        if not out.indexes[dims[0]].is_unique:
            raise ValueError(f"the points do not form a grid over {dims}: values repeat")
        return out.sortby(dims[0])
    index = ds.set_index(point=dims)
    if not index.indexes["point"].is_unique:
        raise ValueError(
            f"the points do not form a grid over {dims}: some share all of these values. "
            "Add the parameter that tells them apart to dims."
        )
    out = index.unstack("point")
    if "status" in out:
        out["status"] = out["status"].fillna(MISSING)
    return out
