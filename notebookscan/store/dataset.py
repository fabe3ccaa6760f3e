"""Turn a table of points into a labelled :class:`xarray.Dataset`.

Two layouts:

``grid``
    one dimension per parameter (``k``, ``tau``, ``trial``), coordinates the sorted
    distinct values; cells with no stored point are NaN and have ``status == "missing"``
    when a run's space holds them, ``"excluded"`` when none does (dropped by ``where``;
    see :mod:`.scanned`). :func:`broadcast_excluded` fills excluded cells along a
    dimension the results do not depend on there.
``points``
    one dimension ``point``, the parameters and ``key`` as coordinates along it.

A points-layout Dataset whose points do form a grid can be reshaped with
:func:`to_grid`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, StoreError, StoreFormatError
from ..keys import canonical_unique
from . import ragged, ragged_files, xrbuild
from .scanned import covered_cells, records_for_runs
from .schema import (
    DESCRIPTIONS,
    EXCLUDED,
    KEY,
    MISSING,
    ROLE,
    SEED,
    STATUS,
    STRING_BOOKKEEPING,
    VARIABLE,
    Layout,
    is_reserved,
)
from .shards import ShardVanished, hdf5_lock, open_dataset, unwritten_as_nan
from .table import Table, combine_coordinate, combine_shards, concat_column, missing_for

__all__ = ["broadcast_excluded", "grid_counts", "label_excluded", "load_dataset", "to_dataset",
           "to_grid"]

_STRING_VARS = STRING_BOOKKEEPING
_DESCRIPTIONS = DESCRIPTIONS


def _times(seconds: np.ndarray) -> np.ndarray:
    seconds = np.asarray(seconds, dtype=np.float64)
    out = np.full(seconds.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(seconds)
    out[ok] = (seconds[ok] * 1e9).astype(np.int64).astype("datetime64[ns]")
    return out


def decode_result(data: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Missing ints/bools become NaN floats only when something is really missing."""
    if attrs.get("notebookscan_dtype") == "bool" and data.dtype.kind in "iu":
        if (data < 0).any():
            out = data.astype(np.float64)
            out[data < 0] = np.nan
            return out
        return data.astype(bool)
    if data.dtype.kind in "iu":
        missing = data == missing_for(data.dtype)
        if missing.any():
            out = data.astype(np.float64)
            out[missing] = np.nan
            return out
    return data


def public_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if not k.startswith(("notebookscan_", "_Fill"))}


class _Direct:
    """Float array results left in their shards until the Dataset's cells are known.

    ``place`` allocates each output once, then reads the shards one at a time and
    scatters their rows into it, so a result is held about once (plus one shard's
    block) instead of once per step of the table path.
    """

    def __init__(self, variables: dict[str, tuple[tuple[str, ...], tuple[int, ...], Any]],
                 paths: list[str], present: list[set[str]], offsets: np.ndarray,
                 sources: Mapping[str, ragged.RowSource] | None = None):
        self.variables = variables  # name -> (own dims, own shape, dtype)
        self.paths, self.present, self.offsets = paths, present, offsets
        self.sources = dict(sources or {})  # results shown as lazy padded views

    def views(self, cell_rows: np.ndarray, attrs: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, Any]:
        """``name -> dask array (*cells, longest, ...)``: cell ``c`` shows table row
        ``cell_rows[c]`` (-1: none), padded only in the chunks that are computed."""
        out = {}
        for name, source in self.sources.items():
            is_bool = attrs.get(name, {}).get("notebookscan_dtype") == "bool"
            decode, dtype = ragged.decoder(source.dtype, is_bool)
            out[name] = ragged.padded_view(source, cell_rows, decode, dtype)
        return out

    def place(self, rows: np.ndarray, dest: np.ndarray, size: int) -> dict[str, np.ndarray]:
        """``name -> (size, *shape)``: table row ``i`` (concatenated row ``rows[i]``) at
        ``dest[i]``; NaN in the cells and padding that no row fills."""
        # np.empty commits no memory: pages appear as rows land
        outs = {name: np.empty((size, *shape), dtype=dtype)
                for name, (_, shape, dtype) in self.variables.items()}
        filled = {name: np.zeros(size, dtype=bool) for name in self.variables}
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for k, path in enumerate(self.paths):
            pick = np.flatnonzero(shard_of == k)
            names = [n for n in self.variables if n in self.present[k]]
            if not len(pick) or not names:  # every row of it superseded: not even read
                continue
            src = rows[pick] - self.offsets[k]
            by_src = np.argsort(src, kind="stable")
            src, cells = src[by_src], dest[pick][by_src]
            try:
                _read_rows_into(path, names, src, cells, outs)
            except OSError as exc:
                if not os.path.exists(path):  # compacted away meanwhile: load again
                    raise _Gone(path) from exc
                raise
            for name in names:
                filled[name][cells] = True
        for name, out in outs.items():
            out[~filled[name]] = np.nan
        return outs


_SLAB = 32 * 2**20  # bytes of one result read from a shard at a time


def _read_rows_into(path: str, names: Sequence[str], src: np.ndarray, cells: np.ndarray,
                    outs: dict[str, np.ndarray]) -> None:
    """``outs[name][cells[i]] = shard row src[i]`` (``src`` sorted), a slab at a time.

    Each slab is read straight from the file: neither a whole shard's block nor HDF5's
    chunk cache (64 MiB per variable, useless for chunks read once) is ever held.
    """
    with _no_chunk_cache(), open_dataset(path) as nc:
        for name in names:
            var = nc.variables[name]
            var.set_auto_maskandscale(False)
            out = outs[name]
            inner = tuple(slice(0, n) for n in var.shape[1:])
            if var.shape[1:] != out.shape[1:]:  # shorter than the longest: NaN pad
                out[cells] = np.nan
            step = max(1, _SLAB // max(1, int(np.prod(var.shape[1:])) * out.itemsize))
            for start in range(0, var.shape[0], step):
                i0, i1 = np.searchsorted(src, [start, start + step])
                if i0 == i1:
                    continue
                lo, hi = int(src[i0]), int(src[i1 - 1]) + 1
                slab = unwritten_as_nan(var, np.asarray(var[lo:hi]))
                if hi - lo != i1 - i0:  # rows superseded elsewhere in between
                    slab = slab[src[i0:i1] - lo]
                out[(cells[i0:i1], *inner)] = slab
                del slab


@contextlib.contextmanager
def _no_chunk_cache() -> Iterator[None]:
    """HDF5 files opened meanwhile (under :func:`hdf5_lock`) keep no chunk cache.

    Loading reads each chunk once: a cache (64 MiB per variable) only adds a copy of
    every chunk, and memory the allocator rarely gives back."""
    import netCDF4

    with hdf5_lock():
        saved = netCDF4.get_chunk_cache()
        netCDF4.set_chunk_cache(0)
        try:
            yield
        finally:
            netCDF4.set_chunk_cache(*saved)


class _Gone(StoreError):
    """A shard vanished between two reads of one load (compaction): load again."""


def _variables(table: Table, placed: Mapping[str, np.ndarray] | None = None,
               order: Sequence[str] | None = None) -> dict[str, tuple[tuple[str, ...], Any,
                                                                       dict[str, Any]]]:
    """Every per-point variable as ``name -> (own dims, data (n, ...), attrs)``.

    ``placed`` results (already in the Dataset's layout, see :class:`_Direct`) come in
    ``order`` among the others.
    """
    out: dict[str, tuple[tuple[str, ...], Any, dict[str, Any]]] = {}
    placed = placed or {}
    for name in order or table.results:
        attrs = table.result_attrs.get(name, {})
        if name in placed:
            out[name] = (table.result_dims[name], placed[name], public_attrs(attrs))
            continue
        data = np.asarray(table.results[name])  # a Ragged: padding is cheap here
        out[name] = (table.result_dims[name], decode_result(data, attrs), public_attrs(attrs))
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
        out[VARIABLE[name]] = ((), data, attrs)
    return out


def _dataset_attrs(table: Table, layout: Layout) -> dict[str, Any]:
    return {
        "notebookscan_layout": json.dumps(layout.to_json()),
        "provenance": json.dumps(table.runs, sort_keys=True),
    }


def _with_extra(column: np.ndarray, extra: list[Any]) -> np.ndarray:
    """A parameter's stored values followed by ``extra`` ones, each kept as itself."""
    if not extra:
        return column
    values = column.tolist() + extra
    kinds = {bool if type(v) is bool else str if type(v) is str else float for v in values}
    # stored objects that are not text mix types (see table._exact_dtype): kept as objects
    mixed = column.dtype.kind == "O" and len(column) and kinds != {str}
    if len(kinds) == 1 and not mixed:
        typed = np.asarray(values)
        if typed.dtype.kind in "biufU":
            return typed
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _empty_like(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if data.dtype.kind in "iub":
        return np.full(shape, np.nan)
    return np.full(shape, missing_for(data.dtype), dtype=data.dtype)


def grid_axes(params: Mapping[str, np.ndarray], dims: Sequence[str],
              extra_coords: Mapping[str, Sequence[Any]] | None = None
              ) -> tuple[dict[str, np.ndarray], list[np.ndarray], tuple[int, ...]]:
    """The grid spanned by the points' values (plus ``extra_coords``): each dimension's
    sorted distinct values, each point's position along it, and the grid's shape."""
    coords: dict[str, np.ndarray] = {}
    positions: list[np.ndarray] = []
    for dim in dims:
        column = params[dim]
        combined = _with_extra(column, list((extra_coords or {}).get(dim, [])))
        unique, inverse = canonical_unique(combined)
        coords[dim] = unique
        positions.append(inverse[: len(column)])
    return coords, positions, tuple(len(coords[d]) for d in dims)


def grid_counts(params: Mapping[str, np.ndarray], dims: Sequence[str],
                records: Sequence[Mapping[str, Any]] | None) -> dict[str, int]:
    """Cells of the grid spanned by the stored points, and how many of them have no row:
    ``missing`` (a scan space holds them) and ``excluded`` (none does) — the counts
    :func:`open_store` shows. Without ``records`` every empty cell is missing."""
    coords, positions, shape = grid_axes(params, dims)
    has_row = np.zeros(shape, dtype=bool)
    if len(positions[0]):
        has_row[tuple(positions)] = True
    covered = (np.ones(shape, dtype=bool) if records is None
               else covered_cells(records, coords, dims))
    return {"cells": int(has_row.size), "missing": int((~has_row & covered).sum()),
            "excluded": int((~has_row & ~covered).sum())}


def label_excluded(ds: Any, dims: Sequence[str],
                   records: Sequence[Mapping[str, Any]] | None) -> Any:
    """Cells with no row get ``status == "excluded"`` when no scan record holds them and
    ``"missing"`` when one does; with ``records=None`` (unknown) they are left as they are.
    """
    if records is None or STATUS not in ds or not dims:
        return ds
    status = ds[STATUS].transpose(*dims).values
    empty = (status == MISSING) | (status == EXCLUDED)
    if not empty.any():
        return ds
    covered = covered_cells(records, {d: ds[d].values for d in dims}, dims)
    labelled = status.astype(object)
    labelled[empty & covered] = MISSING
    labelled[empty & ~covered] = EXCLUDED
    # text only: a Variable as it is, not passed through pandas again (see xrbuild)
    ds[STATUS] = xrbuild.variable(tuple(dims), labelled, ds[STATUS].attrs)
    return ds


def store_records(store: Any, runs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The scan records of ``store`` when every one of ``runs`` names one (else None)."""
    return records_for_runs(store.path, runs)


def broadcast_excluded(ds: Any, dims: str | Sequence[str]) -> Any:
    """Fill excluded cells with the value computed along dimensions it does not depend on.

    A space like ``grid(amp=..., freq=...).where(lambda p: p["amp"] > 0 or p["freq"] ==
    1)`` computes one frequency at zero amplitude, because the frequency does not matter
    there. For each line along ``dims`` (the other parameters fixed) that holds exactly
    one cell which is not excluded, and that cell is ``done``, the line's excluded cells
    get that cell's results. Several dims are filled one after the other (cells filled
    along the first count as computed for the next). ``status`` stays ``"excluded"``
    (nothing was computed there) and bookkeeping stays empty; lines with several
    computed cells, or whose one cell is missing or failed, are left alone.

    Parameters
    ----------
    ds
        A grid-layout Dataset (``open_store``, ``Scan.results``), loaded (not lazy).
    dims
        The dimension (or dimensions) the results do not depend on where cells were
        dropped, e.g. ``"freq"``.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"y": (("amp", "freq"), [[5.0, np.nan], [1.0, 2.0]]),
    ...                  "ns_status": (("amp", "freq"), [["done", "excluded"],
    ...                                                  ["done", "done"]])},
    ...                 coords={"amp": [0.0, 1.0], "freq": [1.0, 2.0]})
    >>> broadcast_excluded(ds, "freq").y.values.tolist()
    [[5.0, 5.0], [1.0, 2.0]]
    """
    import xarray as xr

    names = [dims] if isinstance(dims, str) else list(dims)
    if STATUS not in ds:
        raise StoreError("broadcast needs a Dataset with a status variable (from open_store "
                         "or Scan.results)")
    grid = tuple(ds[STATUS].dims)
    unknown = [d for d in names if d not in grid]
    if unknown or not names:
        raise StoreError(f"cannot broadcast along {unknown or names}: the grid dimensions "
                         f"are {list(grid)}; name one of them (e.g. broadcast={grid[-1]!r})"
                         if grid else "cannot broadcast: this Dataset has a point layout")
    status = ds[STATUS].values
    excluded = status == EXCLUDED
    filled = np.zeros(status.shape, dtype=bool)
    out = ds.copy()
    targets = [name for name, var in ds.data_vars.items()
               if not is_reserved(name) and set(grid) <= set(var.dims)]
    for dim in names:
        axis = grid.index(dim)
        kept = ~excluded | filled
        valued = (status == "done") | filled
        source = np.argmax(kept, axis=axis)[(slice(None),) * axis + (None,)]
        ok = (kept.sum(axis=axis, keepdims=True) == 1) & np.take_along_axis(valued, source, axis)
        fill = ~kept & ok
        if not fill.any():
            continue
        for name in targets:
            var = out[name].transpose(*grid, ...)
            data = var.values
            extra = data.ndim - len(grid)
            index = source.reshape(source.shape + (1,) * extra)
            taken = np.take_along_axis(data, index, axis)
            where = fill.reshape(fill.shape + (1,) * extra)
            out[name] = xr.Variable(var.dims, np.where(where, taken, data), var.attrs)
        filled |= fill
    out.attrs["broadcast_along"] = ",".join(names)
    return out


def _grid_dataset(table: Table, dims: Sequence[str],
                  extra_coords: Mapping[str, Sequence[Any]] | None,
                  direct: _Direct | None = None, rows: Any = None,
                  order: Sequence[str] | None = None, consume: bool = False,
                  records: Sequence[Mapping[str, Any]] | None = None) -> Any:
    """The grid Dataset of ``table``; ``consume`` empties the table's per-point columns
    on the way, each freed once its grid array is built (the table is not used after).
    ``records`` label the empty cells as :func:`label_excluded` does, before the Dataset
    exists (no second status array)."""

    coords, positions, shape = grid_axes(table.params, dims, extra_coords)
    flat = np.ravel_multi_index(positions, shape) if len(table) else np.array([], dtype=int)
    del positions
    if consume:
        table.params = {}
    size = int(np.prod(shape))
    has_row = np.zeros(size, dtype=bool)
    has_row[flat] = True
    if np.count_nonzero(has_row) != len(flat):
        raise StoreFormatError("the stored points do not form the grid the store's layout "
                               "says: two points share a cell")
    for dim in dims:
        if coords[dim].dtype.kind not in "biuf":
            coords[dim] = coords[dim].astype(str)
    data_vars = {}
    complete = len(flat) == size  # every cell has a point: no NaN needed, dtypes stay
    # rows sorted by parameters are already in grid order (the usual case): no copy
    in_order = complete and bool((flat == np.arange(size)).all())
    placed = direct.place(rows, flat, size) if direct else {}
    views = {}
    if direct and direct.sources:
        cell_rows = np.full(size, -1, dtype=np.int64)
        cell_rows[flat] = np.arange(len(flat))
        views = direct.views(cell_rows.reshape(shape), table.result_attrs)
        del cell_rows
    variables = _variables(table, {**placed, **views}, order)
    if consume:
        table.results, table.bookkeeping, table.lengths = {}, {}, {}
    for name in list(variables):
        own, data, attrs = variables.pop(name)
        if name in views:
            data_vars[name] = ((*dims, *own), data, attrs)
            continue
        if name in placed:
            data_vars[name] = ((*dims, *own), data.reshape(*shape, *data.shape[1:]), attrs)
            continue
        if complete:
            if in_order:
                full = data
            else:
                full = np.empty((size, *data.shape[1:]), dtype=data.dtype)
                full[flat] = data
        else:
            full = _empty_like(data, (size, *data.shape[1:]))
            if name == STATUS:
                full[:] = MISSING
            full[flat] = data  # ints and bools become floats here, NaN where no row
        if name == STATUS and records is not None:
            full = _labelled(full, full is data, has_row, flat, data,
                             lambda: covered_cells(records, coords, dims).reshape(-1))
        del data
        data_vars[name] = ((*dims, *own), full.reshape(*shape, *full.shape[1:]), attrs)
        del full
    del flat, has_row
    for dim, coord in table.coords.items():
        if coord.ndim == 1:
            coords[dim] = coord
    return xrbuild.dataset(data_vars, coords)


def _labelled(status: np.ndarray, shared: bool, has_row: np.ndarray, flat: np.ndarray,
              stored: np.ndarray, covered: Any) -> np.ndarray:
    """The status of each cell (flat) with the empty ones (no row, or a stored row that
    says missing or excluded) labelled ``missing`` where ``covered()`` holds them,
    ``excluded`` elsewhere; ``shared``: ``status`` is the table's column, copied first."""
    empty = ~has_row
    empty[flat[(stored == MISSING) | (stored == EXCLUDED)]] = True
    if not empty.any():
        return status
    held = covered()
    out = status.astype(object, copy=shared or status.dtype != object)
    out[empty & held] = MISSING
    out[empty & ~held] = EXCLUDED
    return out


def _points_dataset(table: Table, pending: Mapping[str, Sequence[Any]] | None,
                    direct: _Direct | None = None, rows: Any = None,
                    order: Sequence[str] | None = None) -> Any:

    extra = 0 if not pending else len(pending["key"])
    # direct results are placed once, their pending rows (NaN) included
    placed = direct.place(rows, np.arange(len(table)), len(table) + extra) if direct else {}
    if direct and direct.sources:
        cell_rows = np.concatenate([np.arange(len(table)), np.full(extra, -1)])
        placed.update(direct.views(cell_rows, table.result_attrs))
    variables = _variables(table, placed, order)
    params = dict(table.params)
    if extra:
        for name in table.names:
            params[name] = (np.concatenate([params[name], np.asarray(pending[name])])
                            if len(table) else np.asarray(pending[name]))
        grown = {}
        for name, (own, data, attrs) in variables.items():
            if name in placed:
                grown[name] = (own, data, attrs)
                continue
            pad = _empty_like(data, (extra, *data.shape[1:]))
            if name == STATUS:
                pad[:] = MISSING
            elif name == KEY:
                pad = np.asarray(pending["key"], dtype=object)
            elif name == SEED:
                pad = np.asarray(pending["seed"], dtype=float)
            if data.dtype.kind in "iub" and pad.dtype.kind == "f":
                data = data.astype(np.float64)
            grown[name] = (own, np.concatenate([data, pad.astype(data.dtype, copy=False)]),
                           attrs)
        variables = grown
    coords = {name: ("point", params[name]) for name in table.names}
    coords[KEY] = ("point", variables.pop(KEY)[1])
    data_vars = {name: (("point", *own), data, attrs) for name, (own, data, attrs) in
                 variables.items()}
    indexed = {dim: coord for dim, coord in table.coords.items() if coord.ndim == 1}
    return xrbuild.dataset(data_vars, indexed, coords)


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
_VANISH_RETRIES = 100  # loads restarted while compaction replaces shards


def load_dataset(store: Any, layout: Layout, *,
                 extra_coords: Mapping[str, Sequence[Any]] | None = None,
                 pending: Mapping[str, Sequence[Any]] | None = None) -> Any:
    """``to_dataset(store.table(layout.dims), layout, ...)``, holding each array once.

    Through a Table, an array result exists three times at the peak of a read (the
    shards' blocks, their concatenation, the de-duplicated rows), and the grid can add
    one more. Here float results with their own dims skip the table: the small columns
    are combined first, then each shard's arrays are read and scattered straight into
    the Dataset's (see :class:`_Direct`). Shards that vanish meanwhile (a compaction)
    restart the load; unreadable ones are set aside as :meth:`Store.table` does.
    """
    if layout.kind == "grid" and not layout.dims:
        layout = Layout("points", ())
    for _ in range(_VANISH_RETRIES):
        try:
            return _load(store, layout, extra_coords, pending)
        except _Gone:
            continue
    raise StoreError(f"shards of {store.path} kept vanishing while being read; try again")


def _load(store: Any, layout: Layout, extra_coords: Mapping[str, Sequence[Any]] | None,
          pending: Mapping[str, Sequence[Any]] | None) -> Any:
    names = store.metadata().get("names") or list(layout.dims)
    files = store.shard_files()
    metas = [_shard_variables(os.path.join(store.shards_dir, f)) for f in files]
    views = view_results([m for m in metas if m is not None])
    chosen = _direct_results([{n: v for n, v in m.items() if n not in views}
                              for m in metas if m is not None])
    shards, paths, present, kept = _read_shards(store, files, metas, chosen, views)
    order = list(dict.fromkeys(v for m in kept for v, (role, *_) in m.items()
                               if role == "result"))
    dim_order = list(dict.fromkeys(d for m in kept for role, dims, *_ in m.values()
                                   if role == "result" for d in dims))
    variables: dict[str, tuple[tuple[str, ...], tuple[int, ...], Any]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    dim_sizes: dict[str, int] = {}
    for v in chosen:
        found = [m[v] for m in kept if v in m]
        if not found:
            continue
        dims = found[0][1]
        for _, _, shape, *_ in found:
            for dim, n in zip(dims, shape, strict=True):
                dim_sizes[dim] = max(dim_sizes.get(dim, 0), n)
        variables[v] = (dims, (), np.result_type(*(f[3] for f in found)))
        attrs[v] = found[0][4]
    for dims, rest, _ in views.values():
        dim_sizes.setdefault(dims[0], 0)
        dim_sizes.update(zip(dims[1:], rest, strict=True))
    for v, (dims, _, _) in views.items():
        dim_sizes[dims[0]] = max(dim_sizes[dims[0]], max(
            m[v][2][0] for m in kept if v in m))
    variables = {v: (dims, tuple(dim_sizes[d] for d in dims), dtype)
                 for v, (dims, _, dtype) in variables.items()}
    offsets = np.cumsum([0, *(s.n for s in shards)])
    # the table's rows are told apart by their position in the concatenated shards
    for k in range(len(shards)):
        shards[k].results[_ROW] = np.arange(offsets[k], offsets[k + 1])
        shards[k].result_dims[_ROW] = ()
    # consume: each shard column goes once combined (nothing else refers to the shards)
    table = combine_shards(shards, names, consume=True, rules=store.read_rules())
    order += [v for v in table.results if v not in order and v != _ROW]  # other forms
    rows = table.results.pop(_ROW, np.array([], dtype=np.int64))
    table.result_dims.pop(_ROW, None)
    table.result_attrs.pop(_ROW, None)
    for v, (dims, _, _) in variables.items():
        table.result_dims[v] = dims
        table.result_attrs[v] = attrs[v]
    shard_of = np.searchsorted(offsets, rows, side="right") - 1
    sources = {}
    for v, (dims, rest, dtype) in views.items():
        table.result_dims[v] = dims
        table.result_attrs[v] = next(m[v][4] for m in kept if v in m)
        source = ragged_files.file_source(v, paths, [m[v][5] if v in m else None for m in kept],
                                    shard_of, rows - offsets[shard_of], dim_sizes[dims[0]],
                                    rest, dtype)
        sources[v] = ragged_files.load_source(source)  # the rows' samples, not the padding
    # lengths and coordinates of the dims only direct results have, as combine_shards
    # would have built them, in the order it gives them
    sizes = [s.n for s in shards]
    for dim, size in dim_sizes.items():
        lengths = concat_column([s.lengths.get(dim) for s in shards], sizes)
        if lengths.dtype.kind == "i":
            lengths[lengths < 0] = 0
        table.lengths[dim] = lengths[rows]
        coord = combine_coordinate(dim, shards, size)
        if coord is not None:
            table.coords[dim] = coord[rows] if coord.ndim == 2 else coord
    table.lengths = {d: table.lengths[d] for d in dim_order if d in table.lengths}
    table.coords = {d: table.coords[d] for d in dim_order if d in table.coords}
    direct = (_Direct(variables, paths, present, offsets[:-1], sources)
              if variables or sources else None)
    del shards
    if layout.kind == "grid":
        ds = _grid_dataset(table, layout.dims, extra_coords, direct, rows, order,
                           consume=True, records=store_records(store, table.runs))
    else:
        ds = _points_dataset(table, pending, direct, rows, order)
    ds.attrs.update(_dataset_attrs(table, layout))
    return ds


def _read_shards(store: Any, files: Sequence[str], metas: Sequence[Mapping[str, Any] | None],
                 chosen: set[str], views: Mapping[str, Any]
                 ) -> tuple[list[Any], list[str], list[set[str]], list[Mapping[str, Any]]]:
    """The shards' table columns (not the direct or view results), with each kept shard's
    path, direct results and metadata; empty or unreadable shards are left out."""
    shards, paths, present, kept = [], [], [], []
    with _no_chunk_cache():
        for name, meta in zip(files, metas, strict=True):
            wanted = None if meta is None else [v for v in meta
                                                if v not in chosen and v not in views]
            try:  # a shard whose metadata could not be read is read whole: _read reports it
                shard = store.read_shard(name, wanted)
            except ShardVanished as exc:
                raise _Gone(name) from exc
            if shard is None or not shard.n:
                continue
            if meta is None:  # read whole after all (a passing failure): start again
                raise _Gone(name)
            shards.append(shard)
            paths.append(os.path.join(store.shards_dir, name))
            present.append({v for v in chosen if v in meta})
            kept.append(meta)
    return shards, paths, present, kept


def _shard_variables(path: str) -> dict[str, tuple[Any, ...]] | None:
    """``name -> (role, own dims, own shape, dtype, attrs, extent)`` of every variable of a
    shard, from its metadata and small count columns (``extent``: see
    :func:`.ragged.shard_extents`); None when it cannot be opened (the read that follows
    reports it)."""
    out: dict[str, tuple[Any, ...]] = {}
    try:
        with open_dataset(path) as nc:
            extents = ragged.shard_extents(nc, ROLE)
            for name, var in nc.variables.items():
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                dtype = var.dtype if isinstance(var.dtype, np.dtype) else np.dtype(object)
                dims, shape, *_extent = extents.get(
                    name, (tuple(var.dimensions[1:]), tuple(var.shape[1:])))
                out[name] = (attrs.get(ROLE), dims, shape, dtype, attrs, extents.get(name))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        if not os.path.exists(path):  # compacted away
            raise _Gone(path) from exc
        return None
    return out


def view_results(metas: Sequence[Mapping[str, tuple[Any, ...]]], always: bool = False
                  ) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], np.dtype]]:
    """Results shown as lazy padded views (``name -> (own dims, other own dims' sizes,
    stored dtype)``): numeric, with own dims, whose padding to the longest would cost
    over :data:`.ragged.VIEW_MIN_BYTES` and more than their data. Every result whose
    first own dim is such a result's is a view too (one size per dim), unless one of
    them cannot be (text): then none is. With ``always``, results stored ragged in some
    shard are views whatever their size (a lazy Dataset cannot show them otherwise)."""
    dims_of: dict[str, tuple[str, ...]] = {}
    counts: dict[str, list[np.ndarray]] = {}
    rest: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, list[np.dtype]] = {}
    longest: dict[str, int] = {}
    for meta in metas:
        for name, (role, dims, shape, dtype, _, extent) in meta.items():
            if role != "result" or dims_of.setdefault(name, dims) != dims:
                continue
            dtypes.setdefault(name, []).append(dtype)
            if not dims:
                continue
            counts.setdefault(name, []).append(extent[2] if extent else
                                               np.zeros(0, dtype=np.int64))
            rest[name] = tuple(max(a, b) for a, b in zip(rest.get(name, shape[1:]), shape[1:],
                                                           strict=True))
            longest[dims[0]] = max(longest.get(dims[0], 0), shape[0])
    numeric = {n for n, ds in dtypes.items() if dims_of[n] and all(d.kind in "fiub" for d in ds)}
    big = set()
    if always:
        big = {dims_of[n][0] for m in metas for n, (_, _, _, _, attrs, _) in m.items()
               if ragged.RAGGED_ATTR in attrs and n in numeric}
    for name in numeric:
        row_bytes = int(np.prod(rest[name])) * 8
        if ragged.wasteful(np.concatenate(counts[name]), longest[dims_of[name][0]], row_bytes,
                           ragged.VIEW_MIN_BYTES):
            big.add(dims_of[name][0])
    views = {}
    for dim in big:
        sharing = [n for n, dims in dims_of.items() if dim in dims]
        if all(n in numeric and dims_of[n][0] == dim for n in sharing):
            views.update({n: (dims_of[n], rest[n], np.result_type(*dtypes[n])) for n in sharing})
    return views


def _direct_results(metas: Sequence[Mapping[str, tuple[Any, ...]]]) -> set[str]:
    """Results that can skip the table: float with own dims, the same dims in every
    shard, and no dim shared with a result that goes through the table (the dim's size
    and coordinate come from all its results)."""
    dims_of: dict[str, set[tuple[str, ...]]] = {}
    kinds: dict[str, set[str]] = {}
    for meta in metas:
        for name, (role, dims, _, dtype, attrs, _) in meta.items():
            if role == "result":
                dims_of.setdefault(name, set()).add(dims)
                # stored ragged somewhere: rows are not a block of the file
                kinds.setdefault(name, set()).add("R" if ragged.RAGGED_ATTR in attrs else
                                                  dtype.kind)
    direct = {name for name, dims in dims_of.items()
              if len(dims) == 1 and next(iter(dims)) and kinds[name] == {"f"}}
    while True:
        table_dims = {dim for name, dims in dims_of.items() if name not in direct
                      for d in dims for dim in d}
        drop = {name for name in direct if table_dims.intersection(*dims_of[name])}
        if not drop:
            return direct
        direct -= drop


def to_grid(ds: Any, dims: Sequence[str] | None = None) -> Any:
    """Reshape a ``point``-layout Dataset into one dimension per parameter.

    Cells with no point become NaN (``ns_status == "missing"``). Raises
    :class:`~notebookscan.errors.ArgumentError` (a ``ValueError``) when two points fall
    into the same cell (the parameters do not form a grid).

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
            name for name, c in ds.coords.items() if c.dims == ("point",) and name != KEY
        ]
    dims = list(dims)
    if len(dims) == 1:  # one parameter: no MultiIndex to unstack, just rename the dim
        out = ds.swap_dims({"point": dims[0]})
        if not out.indexes[dims[0]].is_unique:
            raise ArgumentError(f"the points do not form a grid over {dims}: values repeat")
        return out.sortby(dims[0])
    index = ds.set_index(point=dims)
    if not index.indexes["point"].is_unique:
        raise ArgumentError(
            f"the points do not form a grid over {dims}: some share all of these values. "
            "Add the parameter that tells them apart to dims."
        )
    out = index.unstack("point")
    if STATUS in out:
        out[STATUS] = out[STATUS].fillna(MISSING)
    return out
