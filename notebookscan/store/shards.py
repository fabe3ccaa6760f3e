"""One shard: a batch of points written as a single NetCDF-4 file, and read back.

Layout of a shard (dimension ``point`` plus the results' own dims):

============== ============================ =============================================
variable       dims                         meaning
============== ============================ =============================================
``key``        point                        the point's stable key (see :mod:`keys`)
parameters     point                        one variable per parameter
``seed``       point                        the seed the point received
``status``     point                        ``done`` or ``failed``
``error``      point                        one-line error, ``""`` when done
``traceback``  point                        the worker's traceback
``started``    point                        epoch seconds
``finished``   point                        epoch seconds
``duration``   point                        seconds spent in the function
``host``       point                        host name of the worker
``worker``     point                        ``engine 3`` / ``pid 1234``
``run``        point                        id of the run (its provenance is in attrs)
results        point[, own dims]            padded to the longest in the shard, or:
results        <name>_sample[, own dims]    ragged: the points' rows one after another
<name>_count   point                        ragged: rows of each point (CF count var)
<dim>_length   point                        per-point size of each own dim
<dim>          <dim>                        coordinate of an own dim (when shared)
<dim>_coord    point, <dim>                 per-point coordinate (when points differ)
============== ============================ =============================================

A result with own dims whose first dim's length differs so much between the shard's
points that padding would waste more than 1 MiB and more than the data is written as a
CF contiguous ragged array (see :mod:`.ragged`): ``<name>`` over ``<name>_sample``
with the attribute ``notebookscan_ragged = "<own dim>"``, and ``<name>_count``
(``sample_dimension = "<name>_sample"``). In memory it is a :class:`.ragged.Ragged`
where a padded array would be. Equal or nearly equal lengths keep the padded layout.

Bools are stored as int8 with the attribute ``notebookscan_dtype = "bool"``; missing
integers hold the smallest value of their type (``notebookscan_missing`` attribute).
No pickle, no code: a shard is plain NetCDF data that any NetCDF tool can read.

Format 2 (``notebookscan_format`` attribute) keeps the bookkeeping text (``key``,
``status``, ``host``, ...) as fixed-width char arrays with an ``<name>_nchars`` dim and
``_Encoding = "utf-8"`` (netCDF4 and xarray read them as strings) when every value
fits in 64 bytes, else as variable-length strings like format 1; 1-D columns of 256
points or more are zlib-compressed. A run's provenance is in the attributes of the
first shard the run wrote (see :meth:`~notebookscan.store.Store.write`), not every
one. Readers accept both formats.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import Value
from .ragged import (
    COUNT_ATTR,
    COUNT_SUFFIX,
    LONGEST_ATTR,
    RAGGED_ATTR,
    SAMPLE_SUFFIX,
    Ragged,
    wasteful,
)
from .schema import (
    BOOKKEEPING,
    CHARS_SUFFIX,
    DTYPE_ATTR,
    ROLE,
    SHARD_FORMAT,
    TIME_UNITS,
)
from .schema import STRING_BOOKKEEPING as _STRING_BOOKKEEPING

__all__ = [
    "BOOKKEEPING",
    "Record",
    "ShardData",
    "read_shard",
    "shard_from_records",
    "write_shard",
    "write_shard_atomically",
]

FORMAT_VERSION = SHARD_FORMAT
COMPRESS_MIN = 4096  # bytes per point below which compression costs more than it saves
# Bookkeeping text up to this many bytes is stored as a fixed-width char array (plus
# "_nchars" dim), not as variable-length strings: HDF5 keeps each vlen string as a
# global-heap object (~50 bytes a point for a 4-byte "done"). Longer text stays vlen.
CHAR_MAX = 64
COLUMN_COMPRESS_MIN = 256  # points from which 1-D columns are zlib-compressed
ROWS_DIRECT = 2**16  # per-point arrays this big are written row by row, never stacked


class ShardVanished(Exception):
    """A shard disappeared while being read (compacted away): restart the read."""


@dataclass(slots=True)
class Record:
    """One point ready to be stored."""

    key: str
    params: dict[str, Any]
    seed: int
    status: str
    values: dict[str, Value]
    error: str
    traceback: str
    started: float
    finished: float
    host: str
    worker: str
    run: str


@dataclass
class ShardData:
    """The content of one shard, column by column, as numpy arrays."""

    n: int
    params: dict[str, np.ndarray]
    bookkeeping: dict[str, np.ndarray]
    results: dict[str, np.ndarray]  # name -> (n, *own shape)
    result_dims: dict[str, tuple[str, ...]]  # name -> own dims
    result_attrs: dict[str, dict[str, Any]]
    lengths: dict[str, np.ndarray]  # own dim -> (n,) sizes
    coords: dict[str, np.ndarray]  # own dim -> 1-D (shared) or 2-D (n, size) coordinate
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the columns in memory (text in object arrays counted as pointers)."""
        return sum(int(column.nbytes) for part in (
            self.params, self.bookkeeping, self.results, self.lengths, self.coords)
            for column in part.values())


class NetCDFLock:
    """A re-entrant lock that also serves as xarray's netCDF locks (see :func:`hdf5_lock`)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # changed only by the thread holding self._lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout if blocking else -1):
            return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        self._lock.release()

    def __enter__(self) -> NetCDFLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        if self._lock.acquire(blocking=False):
            try:
                return self._depth > 0  # held by this very thread
            finally:
                self._lock.release()
        return True

    def __reduce__(self) -> tuple[Any, ...]:
        return (hdf5_lock, ())  # one lock per process, wherever it is unpickled


_HDF5_LOCK = NetCDFLock()
_shared_with_xarray = False


def _share_with_xarray() -> None:
    """Make xarray's ``HDF5_LOCK`` and ``NETCDFC_LOCK`` this same re-entrant lock.

    xarray opens and reads files under its own locks: a user's ``xr.open_dataset`` in
    one thread would otherwise race with a shard written in another. Sharing one
    re-entrant lock (rather than taking xarray's inside ours) also lets code holding
    ours call xarray without deadlocking on xarray's non-re-entrant locks.
    """
    global _shared_with_xarray
    module = sys.modules.get("xarray.backends.locks")
    if module is None:  # not loaded: nothing can be using xarray's locks yet
        return
    with _HDF5_LOCK:
        for lock in (module.HDF5_LOCK, module.NETCDFC_LOCK):
            # wait until no thread holds xarray's own lock before replacing it
            if lock.lock is not _HDF5_LOCK:
                with lock.lock:
                    pass
                lock.lock = _HDF5_LOCK
                with contextlib.suppress(TypeError, AttributeError):
                    type(lock)._locks[lock.token] = _HDF5_LOCK  # for unpickled copies
        _shared_with_xarray = True


_share_with_xarray()  # xarray loaded first: share now, before any thread uses its locks


def hdf5_lock() -> NetCDFLock:
    """The process-wide lock around notebookscan's HDF5 calls.

    The HDF5 inside the netCDF4 wheels is not thread-safe, and netCDF4 releases the GIL:
    a notebook cell reading a store while the scan loop writes a shard would race. Every
    shard read and write takes this lock, and lazy (dask) reads are given it too. Once
    xarray is loaded, xarray's own netCDF locks are this lock as well. Code that opens
    a store's files with xarray itself should hold it while opening: xarray reads a
    file's metadata outside any lock.
    """
    if not _shared_with_xarray:
        _share_with_xarray()
    return _HDF5_LOCK


def _close_xarray_handles(path: str) -> None:
    """Close the handles xarray keeps open on ``path`` (its file cache; lazy opens).

    The HDF5 in the netCDF4 wheels crashes when one file is open twice and handles come
    and go: open A, open/read strings/close B, open C, close A, open D segfaults in
    ``H5T__conv_vlen`` reading a string variable's fill value. A lazily opened store
    keeps every shard open in xarray's file cache, and reading the store again opened
    them a second time. xarray reopens a file it finds closed, so closing is safe; files
    xarray has in use right now (pinned) are left alone. Call with the lock held.
    """
    module = sys.modules.get("xarray.backends.file_manager")
    if module is None:
        return
    try:
        cache = module.FILE_CACHE
        pinned = getattr(module, "_PIN_COUNTS", {})
        target = os.path.realpath(path)
        for key in list(cache.keys()):
            args = key[1] if isinstance(key, (list, tuple)) and len(key) > 1 else ()
            if (args and isinstance(args[0], str) and os.path.realpath(args[0]) == target
                    and not pinned.get(key)):
                handle = cache.pop(key, None)
                if handle is not None:
                    handle.close()
    except Exception:  # xarray's internals changed: the crash above is possible again
        return


@contextlib.contextmanager
def open_dataset(path: str, mode: str = "r", **kwargs: Any) -> Iterator[Any]:
    """A ``netCDF4.Dataset`` opened, used and closed for good inside :func:`hdf5_lock`.

    When ``close()`` fails (blosc refusing a chunk it flushes, a full disk), netCDF4
    leaves the Dataset marked open, and its ``__dealloc__`` closes it again later — from
    whichever thread drops the last reference, without the lock, racing with other
    threads' HDF5 calls (a segfault). Here the failed close is finished under the lock
    and the Dataset marked closed. Never let the Dataset escape the ``with`` block.
    """
    import netCDF4

    with hdf5_lock():  # netCDF4.Dataset() itself runs HDF5 code
        _close_xarray_handles(path)
        nc = netCDF4.Dataset(path, mode, **kwargs)
        ok = False
        try:
            yield nc
            ok = True
        finally:
            try:
                nc.close()
            except BaseException:
                with contextlib.suppress(Exception):
                    nc._close(False)  # nc_close once more, ignore its error, mark closed
                if ok:
                    raise  # the file is incomplete: the caller must know


# ---------------------------------------------------------------- writing


def _column_for(values: Sequence[Any]) -> np.ndarray:
    """A numpy column for parameter values (bool, int, float, str, or a mix)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "bf":
            return values
        if values.dtype.kind in "iu":
            return values.astype(np.int64, copy=False)
        values = values.tolist()
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return np.array(values, dtype=bool)
    if kinds <= {int}:
        return np.array(values, dtype=np.int64)
    if kinds <= {int, float}:
        return np.array(values, dtype=np.float64)
    return np.array([str(v) for v in values], dtype=object)


def _missing_value(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return np.iinfo(dtype).min if dtype.kind == "i" else np.iinfo(dtype).max
    if dtype.kind == "b":
        return -1  # stored as int8
    return ""


def _stack_values(name: str, values: list[Value | None]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Stack one result variable of every point of a batch into one padded array."""
    present = [v for v in values if v is not None]
    dims = present[0].dims
    if not dims:
        scalars = [v.data for v in present]
        kinds = {type(s) for s in scalars}
        if len(kinds) == 1:
            dtype = np.asarray(scalars).dtype
        elif str in kinds:  # strings mixed with numbers: keep everything as text
            dtype = np.dtype(object)
        else:
            dtype = np.result_type(*[np.asarray(s).dtype for s in scalars])
    else:
        dtype = np.result_type(*[np.asarray(v.data).dtype for v in present])
    if dtype.kind == "U":
        dtype = np.dtype(object)
    shape = tuple(max(np.shape(v.data)[i] for v in present) for i in range(len(dims)))
    n = len(values)
    row_bytes = int(np.prod(shape)) * dtype.itemsize
    if dims and dtype.kind in "fiub":
        counts = np.array([0 if v is None else np.shape(v.data)[0] for v in values])
        if wasteful(counts, shape[0], int(np.prod(shape[1:])) * dtype.itemsize):
            # lengths differ a lot: flat values + counts, not points x longest
            return _ragged_values(values, dtype, shape[1:]), dims
    if dims and dtype.kind in "fiu" and row_bytes >= ROWS_DIRECT:
        # big arrays go to the file row by row: no padded copy of the whole batch
        rows = [None if v is None else np.asarray(v.data, dtype=dtype) for v in values]
        return RowStack(rows, (n, *shape), dtype, _missing_value(dtype)), dims
    if dtype.kind == "b":
        out = np.full((n, *shape), -1, dtype=np.int8)
    else:
        out = np.full((n, *shape), _missing_value(dtype), dtype=dtype)
    for i, value in enumerate(values):
        if value is None:
            continue
        data = value.data
        if dims:
            region = (i, *(slice(0, s) for s in np.shape(data)))
            out[region] = data
        else:
            out[i] = str(data) if dtype.kind == "O" else data  # a mix with strings: text
    return out, dims


def _ragged_values(values: list[Value | None], dtype: np.dtype,
                   rest: tuple[int, ...]) -> Ragged:
    if dtype.kind == "b":  # bools as int8, -1 where missing (as in the padded layout)
        rows = [None if v is None else np.asarray(v.data).astype(np.int8) for v in values]
        return Ragged.from_rows(rows, np.dtype(np.int8), rest, fill=-1)
    rows = [None if v is None else np.asarray(v.data, dtype=dtype) for v in values]
    return Ragged.from_rows(rows, dtype, rest)


class RowStack:
    """One variable's per-point arrays, stacked only when asked (``np.asarray``).

    Writing a batch of big arrays row by row into their one-chunk-per-point variable
    avoids building (and page-faulting) a padded copy of the whole batch.
    """

    def __init__(self, rows: list[np.ndarray | None], shape: tuple[int, ...],
                 dtype: np.dtype, fill: Any):
        self.rows, self.shape, self.dtype, self.fill = rows, shape, np.dtype(dtype), fill

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.full(self.shape, self.fill, dtype=self.dtype)
        for i, row in enumerate(self.rows):
            if row is not None:
                out[(i, *(slice(0, s) for s in row.shape))] = row
        return out if dtype is None else out.astype(dtype)

    def write_into(self, var: Any) -> None:
        for i, row in enumerate(self.rows):
            if row is None:
                continue
            if row.shape == self.shape[1:]:
                var[i] = row
            else:
                padded = np.full(self.shape[1:], self.fill, dtype=self.dtype)
                padded[tuple(slice(0, s) for s in row.shape)] = row
                var[i] = padded


def _put_strings(nc: Any, name: str, dims: tuple[str, ...], data: np.ndarray) -> Any:
    var = nc.createVariable(name, str, dims)
    if data.size:
        var[...] = np.asarray(data, dtype=object)
    return var


def _put_text(nc: Any, name: str, column: np.ndarray) -> Any:
    """A per-point text column: a char array when every value is short, else vlen.

    Char arrays carry ``_Encoding`` so netCDF4 and xarray decode them to strings.
    A column of fixed-width bytes (numpy ``S``, UTF-8) is written as it is.
    """
    if column.dtype.kind != "S":
        encoded = [str(v).encode("utf-8") for v in column]
        width = max((len(b) for b in encoded), default=0)
        if width > CHAR_MAX or any(b.endswith(b"\0") for b in encoded):
            return _put_strings(nc, name, ("point",), column)  # NULs would be stripped
        column = np.array(encoded, dtype=f"S{max(width, 1)}")
    elif column.dtype.itemsize > CHAR_MAX:
        return _put_strings(nc, name, ("point",), np.char.decode(column, "utf-8").astype(object))
    width = column.dtype.itemsize
    dim = f"{name}{CHARS_SUFFIX}"
    nc.createDimension(dim, max(width, 1))
    n = len(column)
    kwargs: dict[str, Any] = {}
    if n >= COLUMN_COMPRESS_MIN:  # host, worker, run, status repeat: a few bytes a point
        kwargs = {"zlib": True, "complevel": 1, "chunksizes": (min(n, 2**16), max(width, 1))}
    var = nc.createVariable(name, "S1", ("point", dim), **kwargs)
    var.setncattr("_Encoding", "utf-8")
    if n:
        var.set_auto_chartostring(False)  # write the bytes as they are
        var[...] = column.view("S1").reshape(n, -1)
    return var


def _put_array(nc: Any, name: str, dims: tuple[str, ...], data: np.ndarray | RowStack,
               compress: bool) -> Any:
    if data.dtype == object:
        return _put_strings(nc, name, dims, data)
    kwargs: dict[str, Any] = {}
    row_bytes = int(np.prod(data.shape[1:])) * data.dtype.itemsize
    if compress and data.ndim > 1 and data.dtype.kind in "fiu" and row_bytes >= COMPRESS_MIN:
        kwargs = {
            "compression": "blosc_lz4", "complevel": 1, "shuffle": True,
            "chunksizes": (1, *data.shape[1:]),
        }
    elif data.ndim == 1 and len(data) >= COLUMN_COMPRESS_MIN and data.dtype.kind in "fiub":
        # zlib, not blosc: blosc refuses data it cannot shrink (random seeds)
        kwargs = {"zlib": True, "complevel": 1, "shuffle": True,
                  "chunksizes": (min(len(data), 2**18),)}
    fill = None
    if data.dtype.kind in "iuf":
        # rows of failed points are never written (RowStack): they must read as missing,
        # not as netCDF's default fill (9.97e36 for floats)
        fill = _missing_value(data.dtype)
    var = nc.createVariable(name, data.dtype, dims, fill_value=fill, **kwargs)
    if isinstance(data, RowStack):
        data.write_into(var)
    elif data.size:
        var[...] = data
    return var


def _shared_coordinate(values: list[Value | None], dim: str) -> np.ndarray | bool | None:
    """The coordinate of ``dim`` if every point that has one agrees (as a prefix), else False."""
    coords = [v.coords[dim] for v in values if v is not None and dim in v.coords]
    if not coords:
        return None
    longest = max(coords, key=len)
    for c in coords:
        if not np.array_equal(c, longest[: len(c)]):
            return False
    return longest


def shard_from_records(names: Sequence[str], records: Sequence[Record],
                       attrs: dict[str, Any]) -> ShardData:
    """Turn a batch of records into columns (results padded to the longest in the batch)."""
    n = len(records)
    params = {name: _column_for([r.params[name] for r in records]) for name in names}
    bookkeeping: dict[str, np.ndarray] = {
        name: np.array([getattr(r, name) for r in records], dtype=object)
        for name in _STRING_BOOKKEEPING
    }
    bookkeeping["seed"] = np.array([r.seed for r in records], dtype=np.int64)
    bookkeeping["started"] = np.array([r.started for r in records], dtype=np.float64)
    bookkeeping["finished"] = np.array([r.finished for r in records], dtype=np.float64)
    bookkeeping["duration"] = bookkeeping["finished"] - bookkeeping["started"]
    shard = ShardData(n, params, bookkeeping, {}, {}, {}, {}, {}, dict(attrs))
    names_in_order = dict.fromkeys(name for r in records for name in r.values)
    add_results(shard, {name: [r.values.get(name) for r in records] for name in names_in_order})
    return shard


def add_results(shard: ShardData, columns: dict[str, list[Value | None]]) -> None:
    """Add result variables given per point (``None`` where a point has none) to ``shard``:
    padded arrays, the per-point lengths of their own dims, and their coordinates."""
    n = shard.n
    by_dim: dict[str, list[Value | None]] = {}
    for name, values in columns.items():
        data, dims = _stack_values(name, values)
        shard.results[name] = data
        shard.result_dims[name] = dims
        is_bool = data.dtype == np.int8 and any(
            v is not None and np.asarray(v.data).dtype == bool for v in values)
        shard.result_attrs[name] = {DTYPE_ATTR: "bool"} if is_bool else {}
        for dim in dims:
            by_dim.setdefault(dim, []).extend(values)
    for dim, values in by_dim.items():
        lengths = np.zeros(n, dtype=np.int32)
        for i in range(n):
            for v in values[i::n]:  # point i's value of each variable with this dim
                if v is not None:
                    lengths[i] = max(lengths[i], np.shape(v.data)[v.dims.index(dim)])
        shard.lengths[dim] = lengths
        size = int(lengths.max()) if n else 0
        shared = _shared_coordinate(values, dim)
        if shared is None:
            continue
        if shared is not False and len(shared) == size:
            shard.coords[dim] = np.asarray(shared)
            continue
        coord = np.full((n, size), np.nan)
        for i in range(n):
            for v in values[i::n]:
                if v is not None and dim in v.coords:
                    coord[i, : len(v.coords[dim])] = v.coords[dim]
        shard.coords[dim] = coord


def write_shard(path: str, shard: ShardData, *, compress: bool = True) -> None:
    """Write ``shard`` as one NetCDF-4 file at ``path`` (the caller makes it atomic).

    Result arrays of at least 4 KiB per point are compressed with blosc-lz4 and byte
    shuffle (fast, and ~12 % smaller even for random floats), one chunk per point.
    """
    point = ("point",)
    with open_dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({**shard.attrs, "notebookscan_format": FORMAT_VERSION})
        nc.createDimension("point", shard.n)
        for name, column in shard.params.items():
            if column.dtype == bool:
                var = _put_array(nc, name, point, column.astype(np.int8), False)
                var.setncattr(DTYPE_ATTR, "bool")
            else:
                var = _put_array(nc, name, point, column, False)
            var.setncattr(ROLE, "parameter")
        for name, column in shard.bookkeeping.items():
            if name in _STRING_BOOKKEEPING and column.dtype.kind in "OS":
                var = _put_text(nc, name, column)
                continue
            var = _put_array(nc, name, point, column, False)
            if name in ("started", "finished"):
                var.setncattr("units", TIME_UNITS)
            elif name == "duration":
                var.setncattr("units", "s")
        for name, data in shard.results.items():
            dims = shard.result_dims[name]
            if isinstance(data, Ragged) and not _write_ragged(shard, name, data):
                data = np.asarray(data)  # padding costs little (or names are taken)
            for axis, dim in enumerate(dims):
                if dim not in nc.dimensions:
                    nc.createDimension(dim, data.shape[1 + axis])
            if isinstance(data, Ragged):
                var = _put_ragged(nc, name, dims, data, compress)
            else:
                var = _put_array(nc, name, ("point", *dims), data, compress=compress)
            # attributes such as _FillValue belong to the library, set at creation
            # the ragged layout's own attributes describe the file it was read from
            attrs = {k: v for k, v in shard.result_attrs.get(name, {}).items()
                     if not k.startswith("_") and k not in _RAGGED_ATTRS}
            var.setncatts({**attrs, ROLE: "result"})
        for dim, lengths in shard.lengths.items():
            _put_array(nc, f"{dim}_length", point, lengths, False).setncattr(ROLE, "length")
        for dim, coord in shard.coords.items():
            if coord.ndim == 1:
                _put_array(nc, dim, (dim,), coord, False).setncattr(ROLE, "coord")
            else:
                var = _put_array(nc, f"{dim}_coord", ("point", dim), coord, False)
                var.setncattr(ROLE, "coord2d")


_RAGGED_ATTRS = (RAGGED_ATTR, COUNT_ATTR, LONGEST_ATTR)


def _write_ragged(shard: ShardData, name: str, data: Ragged) -> bool:
    """Whether ``name`` goes to disk ragged: padding would waste, and its count variable
    and sample dim are names no other variable or dim of the shard has."""
    if not wasteful(data.counts, data.shape[1],
                    int(np.prod(data.shape[2:])) * data.dtype.itemsize):
        return False
    taken = {*shard.params, *shard.bookkeeping, *shard.results, *shard.coords,
             *(d for dims in shard.result_dims.values() for d in dims),
             *(f"{d}_length" for d in shard.lengths), *(f"{d}_coord" for d in shard.coords),
             *(f"{b}{CHARS_SUFFIX}" for b in shard.bookkeeping)}
    return not taken & {f"{name}{COUNT_SUFFIX}", f"{name}{SAMPLE_SUFFIX}"}


def _put_ragged(nc: Any, name: str, dims: tuple[str, ...], data: Ragged,
                compress: bool) -> Any:
    """``name`` as a CF contiguous ragged array: the points' rows one after another
    along ``<name>_sample``, and ``<name>_count`` (per point) saying how many each has."""
    sample = f"{name}{SAMPLE_SUFFIX}"
    nc.createDimension(sample, len(data.values))
    values = data.values
    row_bytes = int(np.prod(values.shape[1:])) * values.dtype.itemsize
    kwargs: dict[str, Any] = {}
    if len(values):  # chunks of ~1 MiB: reading one point's samples reads little more
        kwargs["chunksizes"] = (max(1, min(len(values), 2**20 // max(row_bytes, 1))),
                                *values.shape[1:])
        if compress and values.nbytes >= COMPRESS_MIN:
            kwargs.update(compression="blosc_lz4", complevel=1, shuffle=True)
    var = nc.createVariable(name, values.dtype, (sample, *dims[1:]),
                            fill_value=data.fill, **kwargs)
    if len(values):
        var[...] = values
    count_name = f"{name}{COUNT_SUFFIX}"
    count = _put_array(nc, count_name, ("point",), data.counts, False)
    count.setncatts({ROLE: "count", "sample_dimension": sample,
                     "long_name": f"number of {dims[0]} samples of {name} for the point"})
    var.setncatts({RAGGED_ATTR: dims[0], COUNT_ATTR: count_name,
                   LONGEST_ATTR: np.int64(data.shape[1])})
    return var


def _clean(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_+-]", "-", part) or "x"


def new_shard_name() -> str:
    """A shard name no other writer can produce: user.host.pid.time.random.nc."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = f"uid{os.getuid()}"
    return (f"{_clean(user)}.{_clean(socket.gethostname())}.{os.getpid()}."
            f"{time.time_ns():x}.{uuid.uuid4().hex[:8]}.nc")


def write_shard_atomically(directory: str, name: str, shard: ShardData) -> str:
    """Write a shard under a temporary name, fsync it, and rename it into place.

    A reader sees the shard whole or not at all; a killed writer leaves only a
    ``.tmp-*`` file, which readers ignore and :func:`~notebookscan.store.compact` removes.
    """
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".tmp-{name}")
    try:
        try:
            write_shard(tmp, shard)
        except RuntimeError as exc:
            if shutil.disk_usage(directory).free < 2**20:  # not blosc: the disk is full
                raise OSError(errno.ENOSPC, f"No space left on device in {directory} while "
                              "writing a shard; free space and run the scan again "
                              "(everything stored so far is kept)") from exc
            # blosc refuses data it cannot shrink (pure noise, e.g. random int64):
            # write this shard again without compression, under a fresh name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            tmp = os.path.join(directory, f".tmp-plain-{name}")
            write_shard(tmp, shard, compress=False)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(directory)
    return final


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading


def unwritten_as_nan(var: Any, data: np.ndarray) -> np.ndarray:
    """NaN where a float variable created without a fill value (older shards) holds
    netCDF's default fill, i.e. rows that were never written."""
    if data.dtype.kind == "f" and "_FillValue" not in var.ncattrs():
        import netCDF4

        default = netCDF4.default_fillvals[f"f{data.dtype.itemsize}"]
        unwritten = data == np.asarray(default, dtype=data.dtype)
        if unwritten.any():
            data = np.where(unwritten, np.nan, data)
    return data


def _read_var(var: Any, text_as_bytes: bool = False) -> np.ndarray:
    if text_as_bytes and var.dtype == "S1" and var.ndim == 2 and "_Encoding" in var.ncattrs():
        var.set_auto_chartostring(False)  # fixed-width bytes: no Python str per point
        chars = np.ascontiguousarray(var[...])
        return chars.view(f"S{chars.shape[1]}").reshape(len(chars))
    data = var[...]
    if isinstance(data, np.ma.MaskedArray):
        data = data.filled()
    data = unwritten_as_nan(var, np.asarray(data))
    if var.dtype is str or data.dtype.kind == "U":  # vlen, or a char array (_Encoding)
        data = data.astype(object)
    return data


def read_shard(path: str, variables: Sequence[str] | None = None, *,
               text_as_bytes: bool = False) -> ShardData:
    """Read a shard into numpy columns (only ``variables`` plus ``key`` when given).

    Text is read as Python strings (object arrays), or with ``text_as_bytes`` short text
    as fixed-width UTF-8 bytes (numpy ``S``): a tenth of the memory, for compaction and
    the store index, which only compare and copy it.
    """
    with open_dataset(path, "r") as nc:
        nc.set_auto_maskandscale(False)
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        n = len(nc.dimensions["point"])
        shard = ShardData(n, {}, {}, {}, {}, {}, {}, {}, attrs)
        wanted = None if variables is None else {"key", *variables}
        for name, var in nc.variables.items():
            if wanted is not None and name not in wanted:
                continue
            role = var.getncattr(ROLE) if ROLE in var.ncattrs() else None
            data = _read_var(var, text_as_bytes)
            if DTYPE_ATTR in var.ncattrs() and var.getncattr(DTYPE_ATTR) == "bool":
                data = data.astype(np.int8)  # keep the -1 marker; decoded when combined
            var_attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            if name in BOOKKEEPING:
                shard.bookkeeping[name] = data
            elif role == "parameter":
                shard.params[name] = data.astype(bool) if DTYPE_ATTR in var_attrs else data
            elif role == "result" and RAGGED_ATTR in var_attrs:
                count = _read_var(nc.variables[var_attrs[COUNT_ATTR]])
                shard.results[name] = Ragged(data, count)
                shard.result_dims[name] = (str(var_attrs[RAGGED_ATTR]),
                                           *var.dimensions[1:])
                shard.result_attrs[name] = var_attrs
            elif role == "result":
                shard.results[name] = data
                shard.result_dims[name] = tuple(var.dimensions[1:])
                shard.result_attrs[name] = var_attrs
            elif role == "length":
                shard.lengths[name[: -len("_length")]] = data
            elif role == "coord":
                shard.coords[name] = data
            elif role == "coord2d":
                shard.coords[name[: -len("_coord")]] = data
    return shard


def decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Parse the JSON-valued attributes of a shard (provenance)."""
    out = dict(attrs)
    for name in ("provenance",):
        if isinstance(out.get(name), str):
            with contextlib.suppress(ValueError):
                out[name] = json.loads(out[name])
    return out
