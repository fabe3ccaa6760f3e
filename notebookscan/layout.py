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
from .table import Table, _combine_coordinate, _concat_column, _missing_for, combine_shards

__all__ = ["Layout", "load_dataset", "to_dataset", "to_grid"]

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


class _Blocks:
    """A float result left in its shards' blocks until it is placed in the Dataset.

    ``scatter`` allocates the output once and drops each block as soon as its rows are
    in, so the result is held about once (plus one shard) instead of once per step.
    """

    def __init__(self, dims: tuple[str, ...], shape: tuple[int, ...], dtype: np.dtype,
                 blocks: list[np.ndarray | None], offsets: np.ndarray):
        self.dims, self.shape, self.dtype = dims, shape, dtype
        self.blocks, self.offsets = blocks, offsets

    def scatter(self, rows: np.ndarray, dest: np.ndarray, size: int) -> np.ndarray:
        """``(size, *shape)``: table row ``i`` (concatenated row ``rows[i]``) at ``dest[i]``,
        NaN in every cell and padding no row fills."""
        # np.empty commits no memory: pages appear as rows land, while blocks are freed
        out = np.empty((size, *self.shape), dtype=self.dtype)
        filled = np.zeros(size, dtype=bool)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        row_bytes = max(1, int(np.prod(self.shape)) * self.dtype.itemsize)
        step = max(1, 2**26 // row_bytes)  # fancy indexing copies: at most 64 MiB at a time
        for k in range(len(self.blocks)):
            block, self.blocks[k] = self.blocks[k], None
            if block is None:
                continue
            pick = np.flatnonzero(shard_of == k)
            src, cells = rows[pick] - self.offsets[k], dest[pick]
            inner = tuple(slice(0, n) for n in block.shape[1:])
            if block.shape[1:] != self.shape:  # shorter than the longest: NaN padding
                out[cells] = np.nan
            for i in range(0, len(pick), step):
                out[(cells[i:i + step], *inner)] = block[src[i:i + step]]
            filled[cells] = True
            del block
        out[~filled] = np.nan
        return out


def _variables(table: Table, direct: Mapping[str, _Blocks] | None = None,
               order: Sequence[str] | None = None) -> dict[str, tuple[tuple[str, ...], Any,
                                                                       dict[str, Any]]]:
    """Every per-point variable as ``name -> (own dims, data (n, ...), attrs)``.

    ``direct`` results (still in their shards' blocks) come as :class:`_Blocks`, in
    ``order`` among the others.
    """
    out: dict[str, tuple[tuple[str, ...], Any, dict[str, Any]]] = {}
    direct = direct or {}
    for name in order or table.results:
        attrs = table.result_attrs.get(name, {})
        if name in direct:
            out[name] = (direct[name].dims, direct[name], _public_attrs(attrs))
            continue
        data = table.results[name]
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
                  extra_coords: Mapping[str, Sequence[Any]] | None,
                  direct: Mapping[str, _Blocks] | None = None, rows: Any = None,
                  order: Sequence[str] | None = None) -> Any:
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
    # rows sorted by parameters are already in grid order (the usual case): no copy
    in_order = complete and bool((flat == np.arange(size)).all())
    for name, (own, data, attrs) in _variables(table, direct, order).items():
        if isinstance(data, _Blocks):
            full = data.scatter(rows, flat, size)
            data_vars[name] = ((*dims, *own), full.reshape(*shape, *full.shape[1:]), attrs)
            continue
        if complete:
            if in_order:
                full = data
            else:
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


def _points_dataset(table: Table, pending: Mapping[str, Sequence[Any]] | None,
                    direct: Mapping[str, _Blocks] | None = None, rows: Any = None,
                    order: Sequence[str] | None = None) -> Any:
    import xarray as xr

    variables = _variables(table, direct, order)
    params = dict(table.params)
    extra = 0 if not pending else len(pending["key"])
    for name, (own, data, attrs) in variables.items():
        if isinstance(data, _Blocks):  # placed once, pending rows (NaN) included
            variables[name] = (own, data.scatter(rows, np.arange(len(table)),
                                                 len(table) + extra), attrs)
    if extra:
        for name in table.names:
            params[name] = (np.concatenate([params[name], np.asarray(pending[name])])
                            if len(table) else np.asarray(pending[name]))
        grown = {}
        for name, (own, data, attrs) in variables.items():
            if name in (direct or {}):
                grown[name] = (own, data, attrs)
                continue
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


_ROW = "__row__"


def load_dataset(store: Any, layout: Layout, *,
                 extra_coords: Mapping[str, Sequence[Any]] | None = None,
                 pending: Mapping[str, Sequence[Any]] | None = None) -> Any:
    """``to_dataset(store.table(layout.dims), layout, ...)``, holding each array once.

    Through a Table, an array result exists three times at the peak of a read (the
    shards' blocks, their concatenation, the de-duplicated rows), and the grid adds one
    more. Here float results with their own dims skip the table: each shard's block is
    scattered straight into the Dataset's array and dropped, so a load peaks at about
    one copy plus one shard. Everything else goes through the table as before.
    """
    if layout.kind == "grid" and not layout.dims:
        layout = Layout("points", ())
    names = store.metadata().get("names") or list(layout.dims)
    shards = [s for s in store._read_all(None) if s.n]
    order = list(dict.fromkeys(name for s in shards for name in s.result_dims))
    dim_order = list(dict.fromkeys(d for s in shards for dims in s.result_dims.values()
                                   for d in dims))
    offsets = np.cumsum([0, *(s.n for s in shards)])
    chosen = _direct_results(shards)
    dim_sizes: dict[str, int] = {}
    for s in shards:
        for name in chosen:
            if name in s.results:
                for axis, dim in enumerate(s.result_dims[name]):
                    dim_sizes[dim] = max(dim_sizes.get(dim, 0), s.results[name].shape[1 + axis])
    direct: dict[str, _Blocks] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for name in chosen:
        first = next(s for s in shards if name in s.results)
        dims, attrs[name] = first.result_dims[name], first.result_attrs.get(name, {})
        blocks = [s.results.pop(name, None) for s in shards]
        for s in shards:
            s.result_dims.pop(name, None)
            s.result_attrs.pop(name, None)
        dtype = np.result_type(*(b.dtype for b in blocks if b is not None))
        direct[name] = _Blocks(dims, tuple(dim_sizes[d] for d in dims), dtype, blocks,
                               offsets[:-1])
    # the table's rows are told apart by their position in the concatenated shards
    for k, s in enumerate(shards):
        s.results[_ROW] = np.arange(offsets[k], offsets[k + 1])
        s.result_dims[_ROW] = ()
    table = combine_shards(shards, names)
    rows = table.results.pop(_ROW, np.array([], dtype=np.int64))
    table.result_dims.pop(_ROW, None)
    table.result_attrs.pop(_ROW, None)
    table.result_attrs.update(attrs)
    # lengths and coordinates of the dims only direct results have, as combine_shards
    # would have built them
    sizes = [s.n for s in shards]
    for dim, size in dim_sizes.items():
        lengths = _concat_column([s.lengths.get(dim) for s in shards], sizes)
        if lengths.dtype.kind == "i":
            lengths[lengths < 0] = 0
        table.lengths[dim] = lengths[rows]
        coord = _combine_coordinate(dim, shards, size)
        if coord is not None:
            table.coords[dim] = coord[rows] if coord.ndim == 2 else coord
    # variables in the order the table gives them
    table.lengths = {d: table.lengths[d] for d in dim_order if d in table.lengths}
    table.coords = {d: table.coords[d] for d in dim_order if d in table.coords}
    del shards  # only the blocks are left, and scatter drops them one by one
    if layout.kind == "grid":
        ds = _grid_dataset(table, layout.dims, extra_coords, direct, rows, order)
    else:
        ds = _points_dataset(table, pending, direct, rows, order)
    ds.attrs.update(_dataset_attrs(table, layout))
    return ds


def _direct_results(shards: Sequence[Any]) -> list[str]:
    """Results that can skip the table: float with own dims, the same dims in every
    shard, and no dim shared with a result that goes through the table (its size and
    coordinate come from all results of the dim)."""
    dims_of: dict[str, set[tuple[str, ...]]] = {}
    kinds: dict[str, set[str]] = {}
    for s in shards:
        for name, dims in s.result_dims.items():
            dims_of.setdefault(name, set()).add(tuple(dims))
            kinds.setdefault(name, set()).add(s.results[name].dtype.kind)
    direct = {name for name, dims in dims_of.items()
              if len(dims) == 1 and next(iter(dims)) and kinds[name] == {"f"}}
    while True:
        table_dims = {dim for name, dims in dims_of.items() if name not in direct
                      for d in dims for dim in d}
        drop = {name for name in direct if table_dims.intersection(*dims_of[name])}
        if not drop:
            return [name for name in dims_of if name in direct]
        direct -= drop


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
