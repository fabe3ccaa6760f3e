"""Open a big store without loading it: dask arrays, one chunk per point and shard.

Only the small index columns (keys, status, parameters) are read to de-duplicate and
order the points; result arrays stay on disk until a slice of them is computed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import ragged, ragged_files
from .dataset import label_excluded, public_attrs, to_grid, view_results
from .scanned import records_for_runs
from .schema import (
    BOOKKEEPING,
    DTYPE_ATTR,
    FINISHED,
    FORMAT_ATTR,
    KEY,
    ROLE,
    STARTED,
    VARIABLE,
    Layout,
)
from .shards import close_cached_handles, hdf5_lock
from .table import combine_shards, runs_of

__all__ = ["lazy_dataset"]


class _NoChunkCacheLock:
    """The HDF5 lock, holding HDF5's chunk cache at zero while it is held.

    Each point is one chunk and a lazy read fetches it once, so a chunk cache only costs
    memory: netCDF-C gives every variable of every open file 64 MiB of it, and a reduction
    over a 5 GB store of 17 shards peaked at 1.3 GB RSS (0.28 GB without). The cache size
    is taken from the process-wide default when xarray (re)opens a file, which it does
    under this lock, so files reopened after leaving xarray's file cache get none either.
    """

    def __init__(self) -> None:
        self._lock = hdf5_lock()
        self._saved: list[tuple[int, int, float]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        import netCDF4

        if not self._lock.acquire(blocking, timeout):
            return False
        self._saved.append(netCDF4.get_chunk_cache())
        netCDF4.set_chunk_cache(0)
        return True

    def release(self) -> None:
        import netCDF4

        netCDF4.set_chunk_cache(*self._saved.pop())
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_lazy_lock, ())  # one per process, wherever a dask graph is unpickled


def _lazy_lock() -> _NoChunkCacheLock:
    return _LOCK


_LOCK = _NoChunkCacheLock()


def _open_lazily(path: str) -> Any:
    import xarray as xr

    with _LOCK:
        # a file open twice in this process (another lazy Dataset, a user's xarray) can
        # crash HDF5 as handles come and go: the cached handles of other readers go first
        close_cached_handles(path)
        ds = xr.open_dataset(path, engine="netcdf4", chunks=None, decode_times=False,
                             cache=False, lock=_LOCK)
    if int(ds.attrs.get(FORMAT_ATTR, 1)) < 3:  # bookkeeping named without the ns_ prefix
        ds = ds.rename({name: VARIABLE[name] for name in BOOKKEEPING if name in ds.variables})
    return _as_dask(ds)


def _as_dask(ds: Any) -> Any:
    """``ds`` (lazily indexed) as dask arrays, a chunk per HDF5 chunk of each variable
    (as ``open_dataset(chunks={})`` makes them) or the whole variable when it has none —
    but a chunk per point for a result stored contiguously one row per point (a plain
    big result, see :func:`~notebookscan.store.shards.write_shard`): a slice reads only
    its points, not the whole block."""
    data, coords = {}, {}
    for name, var in ds.variables.items():
        if name in ds.indexes:
            continue
        preferred = var.encoding.get("preferred_chunks") or {}
        if var.encoding.get("contiguous") and var.ndim > 1 and var.dims[0] == "point":
            preferred = {"point": 1}
        chunked = var.chunk({dim: preferred.get(dim, -1) for dim in var.dims})
        (coords if name in ds.coords else data)[name] = chunked
    return ds.assign(data).assign_coords(coords)


def lazy_dataset(store: Any, layout: Layout) -> Any:
    """The store as a dask-backed Dataset, de-duplicated and sorted like the eager one."""
    import xarray as xr

    files = store.shard_files()
    index_parts = []
    datasets = []
    names = store.metadata().get("names")
    paths, metas = [], []
    for name in files:
        part = store.read_shard(name, ["status", "run", *(names or [])])
        if part is None:  # unreadable: already reported and set aside
            continue
        path = os.path.join(store.shards_dir, name)
        index_parts.append(part)
        paths.append(path)
        datasets.append(_open_lazily(path))
        metas.append(_extents(datasets[-1]))
    # results of very different lengths: padded views built from the rows on demand
    views = view_results(metas, always=True)
    for k, meta in enumerate(metas):
        drop = [v for v in views if v in meta]
        drop += [meta[v][4][ragged.COUNT_ATTR] for v in drop
                 if ragged.COUNT_ATTR in meta[v][4]]
        datasets[k] = datasets[k].drop_vars(drop)
    sizes: dict[str, int] = {}
    for ds in datasets:
        for dim, size in ds.sizes.items():
            if dim != "point":
                sizes[dim] = max(sizes.get(dim, 0), size)
    padded = []
    for ds in datasets:
        widths = {dim: (0, sizes[dim] - ds.sizes[dim]) for dim in ds.dims
                  if dim != "point" and ds.sizes[dim] < sizes[dim]}
        padded.append(ds.pad(widths) if widths else ds)
    combined = xr.concat(padded, dim="point", data_vars="all", coords="minimal",
                         compat="override", join="outer") if len(padded) > 1 else padded[0]
    order = _row_order(index_parts, names, store.read_rules())
    if not (len(order) == combined.sizes["point"] and (order == np.arange(len(order))).all()):
        # a dask take over thousands of one-point chunks costs a noticeable part of the
        # open; shards written in order with no point twice need none
        combined = combined.isel(point=order)
    _add_views(combined, views, paths, metas, index_parts, order)
    for name in (STARTED, FINISHED):
        if name in combined:
            combined[name] = (combined[name] * 1e9).astype("datetime64[ns]")
    combined = combined.set_coords([n for n in (names or []) if n in combined] + [KEY])
    for var in combined.data_vars.values():
        for attr in [a for a in var.attrs if a.startswith("notebookscan_")]:
            del var.attrs[attr]
    if layout.kind == "grid":
        grid = to_grid(combined, list(layout.dims)).transpose(*layout.dims, ...)
        # the runs' provenance came with the index columns: no second open of every shard
        runs = runs_of(index_parts)
        return label_excluded(grid, layout.dims, records_for_runs(store.path, runs))
    return combined


def _extents(ds: Any) -> dict[str, tuple[Any, ...]]:
    """:func:`.dataset._shard_variables` of the results of a lazily opened shard, read
    through the open file (a second open reads up to 4 MiB of it again)."""
    out = {}
    for name, var in ds.data_vars.items():
        attrs = dict(var.attrs)
        if attrs.get(ROLE) != "result":
            continue
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        dims, shape, extent = tuple(var.dims[1:]), tuple(var.shape[1:]), None
        if ragged.RAGGED_ATTR in attrs:
            counts = np.asarray(ds[attrs[ragged.COUNT_ATTR]].values, dtype=np.int64)
            dims = (str(attrs[ragged.RAGGED_ATTR]), *var.dims[1:])
            shape = (int(counts.max()) if len(counts) else 0, *var.shape[1:])
            extent = (dims, shape, counts, True)
        elif dims:
            length = ds.get(f"{dims[0]}_length")
            counts = (np.full(var.shape[0], shape[0], dtype=np.int64) if length is None else
                      np.clip(np.nan_to_num(length.values).astype(np.int64), 0, shape[0]))
            extent = (dims, shape, counts, False)
        out[name] = ("result", dims, shape, dtype, attrs, extent)
    return out


def _add_views(combined: Any, views: dict[str, Any], paths: list[str],
               metas: list[dict[str, Any]], parts: list[Any], order: np.ndarray) -> None:
    """Add each of ``views`` to ``combined`` as a padded view over its points, read from
    the shards only for the chunks computed."""
    offsets = np.cumsum([0, *(p.n for p in parts)])
    shard_of = np.searchsorted(offsets, order, side="right") - 1
    for v, (dims, rest, dtype) in views.items():
        longest = max(m[v][2][0] for m in metas if v in m)
        if dims[0] in combined.sizes:
            longest = max(longest, combined.sizes[dims[0]])
        source = ragged_files.file_source(v, paths, [m[v][5] if v in m else None for m in metas],
                                    shard_of, order - offsets[shard_of], longest, rest, dtype,
                                    lock=_LOCK)
        attrs = next(m[v][4] for m in metas if v in m)
        decode, out_dtype = ragged.decoder(dtype, attrs.get(DTYPE_ATTR) == "bool")
        data = ragged.padded_view(source, np.arange(len(order)), decode, out_dtype)
        combined[v] = (("point", *dims), data, public_attrs(attrs))


def _row_order(parts: list[Any], names: list[str] | None, rules: Any) -> np.ndarray:
    """Positions (in the concatenated shards) of the rows the eager reader would keep."""
    offset = 0
    for part in parts:
        part.bookkeeping["row"] = np.arange(offset, offset + part.n)
        offset += part.n
    for part in parts:
        part.results["__row__"] = part.bookkeeping.pop("row")
        part.result_dims["__row__"] = ()
    table = combine_shards(parts, names, rules=rules)
    return table.results["__row__"].astype(np.int64)
