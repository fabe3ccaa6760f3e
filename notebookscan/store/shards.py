"""One shard: a batch of points written as a single NetCDF-4 file, and read back.

Layout of a shard (dimension ``point`` plus the results' own dims):

================= ============================ =============================================
variable          dims                         meaning
================= ============================ =============================================
``ns_key``        point                        the point's stable key (see :mod:`keys`)
parameters        point                        one variable per parameter
``ns_seed``       point                        the seed the point received
``ns_status``     point                        ``done`` or ``failed``
``ns_error``      point                        one-line error, ``""`` when done
``ns_traceback``  point                        the worker's traceback
``ns_started``    point                        epoch seconds
``ns_finished``   point                        epoch seconds
``ns_duration``   point                        seconds spent in the function
``ns_host``       point                        host name of the worker
``ns_worker``     point                        ``engine 3`` / ``pid 1234``
``ns_run``        point                        id of the run (its provenance is in attrs)
results           point[, own dims]            padded to the longest in the shard, or:
results           <name>_sample[, own dims]    ragged: the points' rows one after another
<name>_count      point                        ragged: rows of each point (CF count var)
<dim>_length      point                        per-point size of each own dim
<dim>             <dim>                        coordinate of an own dim (when shared)
<dim>_coord       point, <dim>                 per-point coordinate (when points differ)
================= ============================ =============================================

A result with own dims whose first dim's length differs so much between the shard's
points that padding would waste more than 1 MiB and more than the data is written as a
CF contiguous ragged array (see :mod:`.ragged`): ``<name>`` over ``<name>_sample``
with the attribute ``notebookscan_ragged = "<own dim>"``, and ``<name>_count``
(``sample_dimension = "<name>_sample"``). In memory it is a :class:`.ragged.Ragged`
where a padded array would be. Equal or nearly equal lengths keep the padded layout.

Bools are stored as int8 with the attribute ``notebookscan_dtype = "bool"``; missing
integers hold the smallest value of their type (``notebookscan_missing`` attribute).
No pickle, no code: a shard is plain NetCDF data that any NetCDF tool can read.

Format 3 names the bookkeeping variables ``ns_key``, ``ns_status``, ... (role
``bookkeeping``), so parameters and results can take any other name; formats 1 and 2
named them ``key``, ``status``, ... and are read the same.

Format 2 (``notebookscan_format`` attribute) keeps the bookkeeping text (``ns_key``,
``ns_status``, ``ns_host``, ...) as fixed-width char arrays with an ``<name>_nchars``
dim and ``_Encoding = "utf-8"`` (netCDF4 and xarray read them as strings) when every
value fits in 64 bytes, else as variable-length strings like format 1; 1-D columns of
256 points or more are zlib-compressed. A run's provenance is in the attributes of the
first shard the run wrote (see :meth:`~notebookscan.store.Store.write`), not every
one. Readers accept formats 1, 2 and 3.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StoreError, StoreFormatError
from ..keys import key_array, legacy_key_array
from ..results import Value
from .files import json_nesting_problem, name_part, open_regular
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
    FORMAT_ATTR,
    PREFIX,
    ROLE,
    SHARD_FORMAT,
    TIME_UNITS,
    VARIABLE,
)
from .schema import STRING_BOOKKEEPING as _STRING_BOOKKEEPING

__all__ = [
    "BOOKKEEPING",
    "MalformedShard",
    "Record",
    "ShardData",
    "check_rows",
    "publish_shard",
    "published_name",
    "read_shard",
    "shard_from_records",
    "shard_variables",
    "write_shard",
    "write_shard_atomically",
    "write_shard_unpublished",
]

FORMAT_VERSION = SHARD_FORMAT
COMPRESS_MIN = 4096  # bytes per point below which compression costs more than it saves
# Bookkeeping text up to this many bytes is stored as a fixed-width char array (plus
# "_nchars" dim), not as variable-length strings: HDF5 keeps each vlen string as a
# global-heap object (~50 bytes a point for a 4-byte "done"). Longer text stays vlen.
CHAR_MAX = 64
COLUMN_COMPRESS_MIN = 256  # points from which 1-D columns are zlib-compressed
ROWS_DIRECT = 2**16  # per-point arrays this big are written row by row, never stacked
SAMPLE_BYTES = 2**14  # bytes of a variable's first row that decide its codec
COMPRESSED_AT_MOST = 0.8  # compress when the sample shrinks to this fraction or less


class ShardVanished(StoreError):
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
    #: own dim -> the kept attributes of its coordinate (units: see store/attrs.py);
    #: written on the coordinate variable, recorded in notebookscan.json
    coord_attrs: dict[str, dict[str, str]] = field(default_factory=dict)

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


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogate escapes)
        return False
    return True


def close_cached_handles(path: str) -> None:
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

    Read mode opens only a regular file, never through a link and never blocking (a
    FIFO named ``*.nc`` raises :class:`~notebookscan.store.files.ForeignFile` at once).
    """
    with _opened(path, mode, **kwargs) as (nc, _):
        yield nc


@contextlib.contextmanager
def _opened(path: str, mode: str = "r", **kwargs: Any) -> Iterator[tuple[Any, int]]:
    """:func:`open_dataset`, also giving the size of the file opened (reading only)."""
    import netCDF4

    fd, size, where = -1, 0, path
    proc = os.path.isdir("/proc/self/fd")
    if mode == "r":
        fd = open_regular(path)  # O_NOFOLLOW | O_NONBLOCK, then fstat: a regular file
        size = os.fstat(fd).st_size
        if proc:  # netCDF opens this very file, not the name
            where = f"/proc/self/fd/{fd}"
    elif proc and not _utf8(path):  # netCDF takes UTF-8 names only: go through the directory
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        where = f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    try:
        with hdf5_lock():  # netCDF4.Dataset() itself runs HDF5 code
            close_cached_handles(path)
            try:
                nc = netCDF4.Dataset(where, mode, **kwargs)
            except OSError as exc:  # name the file, not /proc/self/fd/N
                raise OSError(exc.errno, exc.strerror or str(exc), path) from None
            ok = False
            try:
                yield nc, size
                ok = True
            finally:
                try:
                    nc.close()
                except BaseException:
                    with contextlib.suppress(Exception):
                        nc._close(False)  # nc_close once more, ignore its error, mark closed
                    if ok:
                        raise  # the file is incomplete: the caller must know
    finally:
        if fd >= 0:
            os.close(fd)


# ---------------------------------------------------------------- writing


def column_for(values: Sequence[Any]) -> np.ndarray:
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

    def write_into(self, var: Any, *, every_row: bool = False) -> None:
        """Write the rows into ``var``; rows of points without a value are skipped
        (they read as the variable's fill value), or with ``every_row`` written as
        missing (a variable without fill, whose unwritten bytes are undefined)."""
        missing = None
        for i, row in enumerate(self.rows):
            if row is None and not every_row:
                continue
            if row is not None and row.shape == self.shape[1:]:
                var[i] = row
            elif row is None:
                if missing is None:
                    missing = np.full(self.shape[1:], self.fill, dtype=self.dtype)
                var[i] = missing
            else:
                padded = np.full(self.shape[1:], self.fill, dtype=self.dtype)
                padded[tuple(slice(0, s) for s in row.shape)] = row
                var[i] = padded


Writes = list[tuple[Any, Any]]  # (variable, data) to write once every variable is defined


def _write_all(writes: Writes) -> None:
    """Write the data of variables defined before: netCDF-4 leaves define mode (and
    writes every variable's metadata to HDF5) at a variable's first write, so writing
    each variable as it is defined costs that again for every variable."""
    for var, data in writes:
        if isinstance(data, RowStack):
            data.write_into(var, every_row=var.chunking() == "contiguous")
        else:
            var[...] = data


def _put_strings(nc: Any, name: str, dims: tuple[str, ...], data: np.ndarray,
                 writes: Writes) -> Any:
    var = nc.createVariable(name, str, dims)
    if data.size:
        writes.append((var, np.asarray(data, dtype=object)))
    return var


def _put_text(nc: Any, name: str, column: np.ndarray, writes: Writes) -> Any:
    """A per-point text column: a char array when every value is short, else vlen.

    Char arrays carry ``_Encoding`` so netCDF4 and xarray decode them to strings.
    A column of fixed-width bytes (numpy ``S``, UTF-8) is written as it is.
    """
    if column.dtype.kind != "S":
        encoded = [str(v).encode("utf-8") for v in column]
        width = max((len(b) for b in encoded), default=0)
        if width > CHAR_MAX or any(b.endswith(b"\0") for b in encoded):
            return _put_strings(nc, name, ("point",), column, writes)  # NULs would be stripped
        column = np.array(encoded, dtype=f"S{max(width, 1)}")
    elif column.dtype.itemsize > CHAR_MAX:
        return _put_strings(nc, name, ("point",),
                            np.char.decode(column, "utf-8").astype(object), writes)
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
        writes.append((var, column.view("S1").reshape(n, -1)))
    return var


def _sample_of(data: np.ndarray | RowStack) -> np.ndarray | None:
    """The first row of ``data`` a point wrote (its first one when none did)."""
    if isinstance(data, RowStack):
        return next((row for row in data.rows if row is not None), None)
    return data[0] if len(data) else None


def worth_compressing(sample: np.ndarray | None) -> bool:
    """Whether blosc-lz4 with byte shuffle is worth using for a variable, judged from one
    row: its first :data:`SAMPLE_BYTES`, byte-shuffled, must shrink by zlib (level 1) to
    at most :data:`COMPRESSED_AT_MOST` of their size.

    Noise (random floats shrink ~15 %, random integers not at all) is stored plain:
    compressing it costs more time than the bytes it saves, and blosc refuses a chunk it
    cannot shrink (netCDF-C then prints "Blosc_Filter Error" for every chunk and the
    shard is written a second time uncompressed).
    """
    if sample is None:
        return False
    flat = np.ascontiguousarray(sample).reshape(-1)
    flat = flat[: max(1, SAMPLE_BYTES // max(flat.dtype.itemsize, 1))]
    if flat.nbytes < 64:
        return False
    shuffled = np.ascontiguousarray(
        flat.view(np.uint8).reshape(len(flat), flat.dtype.itemsize).T).tobytes()
    return len(zlib.compress(shuffled, 1)) <= COMPRESSED_AT_MOST * len(shuffled)


def _put_array(nc: Any, name: str, dims: tuple[str, ...], data: np.ndarray | RowStack,
               compress: bool, writes: Writes) -> Any:
    if data.dtype == object:
        return _put_strings(nc, name, dims, data, writes)
    kwargs: dict[str, Any] = {}
    row_bytes = int(np.prod(data.shape[1:])) * data.dtype.itemsize
    per_point = data.ndim > 1 and data.dtype.kind in "fiu" and row_bytes >= COMPRESS_MIN
    if per_point and compress and worth_compressing(_sample_of(data)):
        kwargs = {"chunksizes": (1, *data.shape[1:]),  # one chunk per point
                  "compression": "blosc_lz4", "complevel": 1, "shuffle": True}
    elif per_point:
        # plain: one contiguous block, each row a single write at its offset (chunks
        # would add an index and a write per chunk); a point still reads alone
        kwargs = {"contiguous": True}
    elif data.ndim == 1 and len(data) >= COLUMN_COMPRESS_MIN and data.dtype.kind in "fiub":
        # zlib, not blosc: blosc refuses data it cannot shrink (random seeds)
        kwargs = {"zlib": True, "complevel": 1, "shuffle": True,
                  "chunksizes": (min(len(data), 2**18),)}
    fill = None
    if data.dtype.kind in "iuf":
        # rows of failed points are never written (RowStack): they must read as missing,
        # not as netCDF's default fill (9.97e36 for floats)
        fill = _missing_value(data.dtype)
    if kwargs.get("contiguous"):
        # HDF5 would write the fill value over the whole block before the rows: every
        # row is written instead (a failed point's as missing, see RowStack.write_into)
        nc.set_fill_off()
        var = nc.createVariable(name, data.dtype, dims, fill_value=fill, **kwargs)
        nc.set_fill_on()
    else:
        var = nc.createVariable(name, data.dtype, dims, fill_value=fill, **kwargs)
    if "chunksizes" in kwargs and per_point:
        # each chunk is written once, whole: caching it (64 MiB per variable by default)
        # only holds memory and copies it
        var.set_var_chunk_cache(size=0, nelems=1, preemption=1.0)
    if isinstance(data, RowStack) or data.size:
        writes.append((var, data))
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
    params = {name: column_for([r.params[name] for r in records]) for name in names}
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
        declared = next((v.attrs for v in values if v is not None and v.attrs), None)
        shard.result_attrs[name] = {**({DTYPE_ATTR: "bool"} if is_bool else {}),
                                    **(declared or {})}
        for dim in dims:
            by_dim.setdefault(dim, []).extend(values)
    for dim, values in by_dim.items():
        lengths = np.zeros(n, dtype=np.int32)
        for i in range(n):
            for v in values[i::n]:  # point i's value of each variable with this dim
                if v is not None:
                    lengths[i] = max(lengths[i], np.shape(v.data)[v.dims.index(dim)])
        shard.lengths[dim] = lengths
        declared = next((v.coord_attrs[dim] for v in values
                         if v is not None and v.coord_attrs and dim in v.coord_attrs), None)
        if declared:
            shard.coord_attrs[dim] = declared
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

    Result arrays of at least 4 KiB per point are stored one chunk per point, compressed
    with blosc-lz4 and byte shuffle, when a sample of the first row says it pays
    (:func:`worth_compressing`); else plain and contiguous (noise: random floats, random
    integers).
    """
    point = ("point",)
    writes: Writes = []  # every variable is defined first, then written
    with open_dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({**shard.attrs, FORMAT_ATTR: FORMAT_VERSION})
        nc.createDimension("point", shard.n)
        for name, column in shard.params.items():
            if column.dtype == bool:
                var = _put_array(nc, name, point, column.astype(np.int8), False, writes)
                var.setncattr(DTYPE_ATTR, "bool")
            else:
                var = _put_array(nc, name, point, column, False, writes)
            var.setncattr(ROLE, "parameter")
        for name, column in shard.bookkeeping.items():
            stored = VARIABLE[name] if FORMAT_VERSION >= 3 else name  # formats 1, 2: bare
            if name in _STRING_BOOKKEEPING and column.dtype.kind in "OS":
                _put_text(nc, stored, column, writes).setncattr(ROLE, "bookkeeping")
                continue
            var = _put_array(nc, stored, point, column, False, writes)
            var.setncattr(ROLE, "bookkeeping")
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
                var = _put_ragged(nc, name, dims, data, compress, writes)
            else:
                var = _put_array(nc, name, ("point", *dims), data, compress, writes)
            # attributes such as _FillValue belong to the library, set at creation
            # the ragged layout's own attributes describe the file it was read from
            attrs = {k: v for k, v in shard.result_attrs.get(name, {}).items()
                     if not k.startswith("_") and k not in _RAGGED_ATTRS}
            var.setncatts({**attrs, ROLE: "result"})
        for dim, lengths in shard.lengths.items():
            _put_array(nc, f"{dim}_length", point, lengths, False, writes).setncattr(
                ROLE, "length")
        for dim, coord in shard.coords.items():
            if coord.ndim == 1:
                var = _put_array(nc, dim, (dim,), coord, False, writes)
                var.setncattr(ROLE, "coord")
            else:
                var = _put_array(nc, f"{dim}_coord", ("point", dim), coord, False, writes)
                var.setncattr(ROLE, "coord2d")
            var.setncatts(shard.coord_attrs.get(dim, {}))
        _write_all(writes)


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
                compress: bool, writes: Writes) -> Any:
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
        if (compress and values.nbytes >= COMPRESS_MIN
                and worth_compressing(values[: max(1, SAMPLE_BYTES // max(row_bytes, 1))])):
            kwargs.update(compression="blosc_lz4", complevel=1, shuffle=True)
    var = nc.createVariable(name, values.dtype, (sample, *dims[1:]),
                            fill_value=data.fill, **kwargs)
    if len(values):
        writes.append((var, values))
    count_name = f"{name}{COUNT_SUFFIX}"
    count = _put_array(nc, count_name, ("point",), data.counts, False, writes)
    count.setncatts({ROLE: "count", "sample_dimension": sample,
                     "long_name": f"number of {dims[0]} samples of {name} for the point"})
    var.setncatts({RAGGED_ATTR: dims[0], COUNT_ATTR: count_name,
                   LONGEST_ATTR: np.int64(data.shape[1])})
    return var


def new_shard_name() -> str:
    """A shard name no other writer can produce: user.host.pid.time.random.nc."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = f"uid{os.getuid()}"
    return (f"{name_part(user)}.{name_part(socket.gethostname())}.{os.getpid()}."
            f"{time.time_ns():x}.{uuid.uuid4().hex[:8]}.nc")


def write_shard_atomically(directory: str, name: str, shard: ShardData) -> str:
    """Write a shard under a temporary name, fsync it, and rename it into place.

    A reader sees the shard whole or not at all; a killed writer leaves only a
    ``.tmp-*`` file, which readers ignore and :func:`~notebookscan.store.compact` removes.
    """
    final = os.path.join(directory, name)
    publish_shard(write_shard_unpublished(directory, name, shard), final)
    return final


def write_shard_unpublished(directory: str, name: str, shard: ShardData,
                            publisher: int = 0) -> str:
    """Write ``shard`` under a temporary name in ``directory`` (not fsynced, not renamed:
    no reader sees it); returns that path, for :func:`publish_shard`.

    ``publisher``: the pid of another process of this host that will publish it; the
    temporary name then carries that pid (``.tmp-user.host.<publisher>.pub.<name>``), so
    a cleaner of dead writers' files leaves it alone while the publisher runs, even
    when the process that wrote it is gone.
    """
    if publisher:
        user = name.split(".", 1)[0]
        name = f"{user}.{name_part(socket.gethostname())}.{publisher}{PUBLISHED_BY}{name}"
    tmp = os.path.join(directory, f".tmp-{name}")
    try:
        try:
            write_shard(tmp, shard)
        except RuntimeError as exc:
            if shutil.disk_usage(directory).free < 2**20:  # not blosc: the disk is full
                raise OSError(errno.ENOSPC, f"No space left on device in {directory} while "
                              "writing a shard; free space and run the scan again "
                              "(everything stored so far is kept)") from exc
            # blosc refused a chunk its sample said it could shrink (a later point's
            # data is noise): write this shard again without compression, fresh name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            tmp = os.path.join(directory, f".tmp-plain-{name}")
            write_shard(tmp, shard, compress=False)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


TMP_PREFIXES = (".tmp-plain-", ".tmp-")  # a shard being written (the longer one first)
PUBLISHED_BY = ".pub."  # in a temporary name: the publisher's user.host.pid before it


def published_name(tmp_name: str) -> str:
    """The shard name a temporary file of :func:`write_shard_unpublished` is published
    under; ``""`` for a name that is no such file (a path, another prefix)."""
    if os.sep in tmp_name or (os.altsep and os.altsep in tmp_name):
        return ""
    for prefix in TMP_PREFIXES:
        if tmp_name.startswith(prefix):
            name = tmp_name[len(prefix):].split(PUBLISHED_BY, 1)[-1]
            return name if name.endswith(".nc") and not name.startswith(".") else ""
    return ""


def publish_shard(tmp: str, final: str) -> None:
    """Make a shard written by :func:`write_shard_unpublished` durable and visible:
    fsync it, rename it to ``final``, fsync the directory. Touches no HDF5: any thread
    may call it. The temporary file is removed if this fails."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(os.path.dirname(final))


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
    if var.dtype == "S1" and var.ndim == 2 and "_Encoding" in var.ncattrs():
        var.set_auto_chartostring(False)  # fixed-width bytes: no Python str per point
        chars = np.ascontiguousarray(var[...])
        raw = chars.view(f"S{chars.shape[1]}").reshape(len(chars))
        encoding = str(var.getncattr("_Encoding"))
        if text_as_bytes or encoding.lower() in ("none", "bytes"):
            return raw
        return _decoded_text(raw, encoding)
    data = var[...]
    if isinstance(data, np.ma.MaskedArray):
        data = data.filled()
    data = unwritten_as_nan(var, np.asarray(data))
    if var.dtype is str or data.dtype.kind == "U":  # vlen, or a char array (_Encoding)
        data = data.astype(object)
    return data


def _decoded_text(raw: np.ndarray, encoding: str) -> np.ndarray:
    """Fixed-width text as an object array of str, each distinct value decoded once and
    shared by its rows: status, host, worker and run repeat over 10^5 rows, and a str
    per row (plus netCDF4's ``<U`` copy) cost ~100 bytes a row and column."""
    unique, inverse = np.unique(raw, return_inverse=True)
    words = np.empty(len(unique), dtype=object)
    words[:] = [value.decode(encoding) for value in unique.tolist()]
    return words[inverse.reshape(-1)]


class MalformedShard(StoreFormatError):
    """A file named like a shard whose content breaks the shard format (the reason)."""


# Bounded memory: a shard may declare no more data than its file can hold. An
# uncompressed variable's bytes are in the file (plus this slack for fill values); all
# variables together may expand to at most MAX_EXPANSION times the file's size (zlib
# reaches ~1000:1, blosc-lz4 ~255:1), or DECLARED_FLOOR for small files.
DECLARED_FLOOR = 256 * 2**20
MAX_EXPANSION = 1024
_VLEN_IN_FILE = 16  # bytes a variable-length string takes in the file at least (heap id)
_VLEN_IN_MEMORY = 64  # bytes one takes in memory at least (a Python str)
_COMPRESSORS = ("zlib", "szip", "zstd", "bzip2", "blosc")
_TEXT_KINDS = {"key", "status", "error", "traceback", "host", "worker", "run"}
_KINDS = {"seed": "iu", "started": "fiu", "finished": "fiu", "duration": "fiu",
          "length": "iu", "parameter": "biufS", "result": "biufS", "coord": "biufS",
          "coord2d": "biufS"}
_STATUSES = ("done", "failed")


def _check_declared(nc: Any, file_size: int) -> None:
    """Refuse a file whose variables declare more data than it can hold (see above)."""
    total = 0
    for name, var in nc.variables.items():
        count = 1
        for size in var.shape:
            count *= int(size)
        dtype = var.datatype
        vlen = not isinstance(dtype, np.dtype)
        in_file = count * (_VLEN_IN_FILE if vlen else dtype.itemsize)
        total += count * (max(_VLEN_IN_MEMORY, 8) if vlen else dtype.itemsize)
        filters = var.filters() or {}
        compressed = any(filters.get(f) for f in _COMPRESSORS)
        if not compressed and in_file > file_size + DECLARED_FLOOR:
            raise MalformedShard(
                f"variable {name!r} declares {var.shape} values ({in_file} bytes) but the "
                f"file holds {file_size} bytes")
    allowed = max(DECLARED_FLOOR, MAX_EXPANSION * file_size)
    if total > allowed:
        raise MalformedShard(
            f"its variables declare {total} bytes, more than {allowed} for a file of "
            f"{file_size} bytes (a compression bomb or a forged dimension)")


def _check_variable(name: str, var: Any, role: str | None, nc: Any,
                    bookkeeping: bool = False) -> None:
    """Refuse a variable of a type or shape no shard writer makes (before reading it)."""
    dtype = var.dtype  # str for variable-length text
    if not (dtype is str or isinstance(var.datatype, np.dtype)):
        raise MalformedShard(f"variable {name!r} has the user-defined type {var.datatype!r}")
    if role == "result" and RAGGED_ATTR in var.ncattrs():
        _check_ragged(name, var, nc)
        return
    if var.dimensions[:1] != ("point",):
        raise MalformedShard(f"variable {name!r} has the dims {var.dimensions}, not "
                             "('point', ...): its rows would not line up with the points")
    kind = "O" if dtype is str else dtype.kind
    if bookkeeping and name in _TEXT_KINDS:
        char = kind == "S" and dtype.itemsize == 1 and var.ndim == 2
        if not ((kind == "O" and var.ndim == 1) or char):
            raise MalformedShard(f"bookkeeping variable {name!r} is not text ({dtype}, "
                                 f"{var.ndim}-D)")
        return
    expected = _KINDS.get(name if bookkeeping else role or "")
    if (bookkeeping or role in ("parameter", "length")) and var.ndim != 1:
        raise MalformedShard(f"variable {name!r} has {var.ndim} dims; it has one per point")
    if expected and kind not in expected and not (kind == "O" and "S" in expected):
        raise MalformedShard(f"variable {name!r} has the type {dtype}, not one of "
                             f"{sorted(expected)}")
    if role == "length":
        dim = name[: -len("_length")]
        limit = len(nc.dimensions[dim]) if dim in nc.dimensions else 0
        if var.ndim == 1 and var.size:
            values = np.asarray(var[...])
            if values.min() < 0 or values.max() > limit:
                raise MalformedShard(f"{name!r} holds lengths outside 0..{limit}")


def read_shard(path: str, variables: Sequence[str] | None = None, *,
               text_as_bytes: bool = False, parameters: bool = True) -> ShardData:
    """Read a shard into numpy columns (only ``variables`` plus ``key`` when given).

    Text is read as Python strings (object arrays), or with ``text_as_bytes`` short text
    as fixed-width UTF-8 bytes (numpy ``S``): a tenth of the memory, for compaction and
    the store index, which only compare and copy it. The parameters are always read (a
    row's key is checked against them, see :func:`check_rows`), unless ``parameters``
    is false (a reader that has them already: only ``variables`` and ``key`` are read).

    Only a regular file is opened (never a link, FIFO or device), and nothing is read
    before the file's declared sizes are checked against its size. A file that breaks
    the format raises :class:`MalformedShard` (a ``ValueError``) with the reason.
    """
    with _opened(path, "r") as (nc, file_size):
        nc.set_auto_maskandscale(False)
        if "point" not in nc.dimensions:
            raise MalformedShard("it has no 'point' dimension")
        _check_declared(nc, file_size)
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        text = attrs.get("provenance")
        problem = json_nesting_problem(text) if isinstance(text, str) else None
        if problem:
            raise MalformedShard(f"its provenance attribute is not plain data: {problem}")
        n = len(nc.dimensions["point"])
        shard = ShardData(n, {}, {}, {}, {}, {}, {}, {}, attrs)
        wanted = None if variables is None else {"key", *variables}
        legacy = _format_of(attrs) < 3  # bookkeeping named without the ns_ prefix
        for stored, var in nc.variables.items():
            role = var.getncattr(ROLE) if ROLE in var.ncattrs() else None
            name = _short_name(stored, role)
            if (wanted is not None and name not in wanted and stored not in wanted
                    and (role != "parameter" or not parameters)):
                continue
            bookkeeping = role == "bookkeeping" or (legacy and name in BOOKKEEPING)
            if bookkeeping or role in ("parameter", "result", "length", "coord2d"):
                _check_variable(name if bookkeeping else stored, var, role, nc, bookkeeping)
            elif role == "coord" and (var.ndim != 1 or var.dimensions[0] != stored):
                raise MalformedShard(f"coordinate {stored!r} has the dims {var.dimensions}")
            data = _read_var(var, text_as_bytes)
            if DTYPE_ATTR in var.ncattrs() and var.getncattr(DTYPE_ATTR) == "bool":
                data = data.astype(np.int8)  # keep the -1 marker; decoded when combined
            var_attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            if bookkeeping:
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
    for name in ("key", "status"):
        if name in shard.bookkeeping or (name == "status" and wanted is not None
                                         and name not in wanted):
            continue
        raise MalformedShard(f"it lacks the variable {name!r}")
    return shard


_PART_OF_ROLE = {"parameter": "params", "result": "results", "length": "lengths",
                 "coord": "coords", "coord2d": "coords"}


def shard_variables(path: str) -> dict[str, dict[str, str]]:
    """Which variables a shard holds, without reading any: for each part of
    :class:`ShardData` (``params``, ``bookkeeping``, ``results``, ``lengths``,
    ``coords``), its names there mapped to the name :func:`read_shard`'s ``variables``
    takes. Lets a reader read a big shard back a few variables at a time."""
    parts: dict[str, dict[str, str]] = {part: {} for part in (
        "params", "bookkeeping", "results", "lengths", "coords")}
    with _opened(path, "r") as (nc, _):
        legacy = _format_of({k: nc.getncattr(k) for k in nc.ncattrs()}) < 3
        for stored, var in nc.variables.items():
            role = var.getncattr(ROLE) if ROLE in var.ncattrs() else None
            name = _short_name(stored, role)
            if role == "bookkeeping" or (legacy and name in BOOKKEEPING):
                parts["bookkeeping"][name] = name
            elif role == "length":
                parts["lengths"][name[: -len("_length")]] = stored
            elif role == "coord2d":
                parts["coords"][name[: -len("_coord")]] = stored
            elif role in _PART_OF_ROLE:
                parts[_PART_OF_ROLE[role]][name] = stored
    return parts


def _format_of(attrs: dict[str, Any]) -> int:
    try:
        return int(attrs.get(FORMAT_ATTR, 1))
    except (TypeError, ValueError):
        return 1


def _short_name(stored: str, role: str | None) -> str:
    """A variable's name in ``ShardData``: bookkeeping by its short name (``status``)."""
    if role == "bookkeeping" and stored.startswith(PREFIX):
        return stored[len(PREFIX):]
    return stored


def _check_ragged(name: str, var: Any, nc: Any) -> None:
    """Refuse a ragged result (flat values + per-point counts) whose counts do not add
    up to its values, or that does not name its count variable along ``point``."""
    sample = f"{name}{SAMPLE_SUFFIX}"
    count_name = var.getncattr(COUNT_ATTR) if COUNT_ATTR in var.ncattrs() else None
    if var.dimensions[:1] != (sample,) or count_name not in nc.variables:
        raise MalformedShard(f"ragged result {name!r} has the dims {var.dimensions} and the "
                             f"count variable {count_name!r}; expected ({sample!r}, ...) "
                             "and a count variable along 'point'")
    count = nc.variables[count_name]
    if count.dimensions != ("point",) or count.dtype.kind not in "iu":
        raise MalformedShard(f"the counts of ragged result {name!r} are not integers along "
                             "'point'")
    values = np.asarray(count[...])
    if len(values) and (values.min() < 0 or int(values.sum()) != var.shape[0]):
        raise MalformedShard(f"the counts of ragged result {name!r} add up to "
                             f"{int(values.sum())}, not its {var.shape[0]} values")


def _as_bytes(column: np.ndarray) -> np.ndarray:
    """A text column (str objects or UTF-8 bytes) as a numpy bytes array (no truncation)."""
    if column.dtype.kind == "S":
        return column
    try:
        return column.astype("S")  # ASCII, the common case: no Python object per row
    except UnicodeEncodeError:
        return np.char.encode(column.astype(str), "utf-8")


def check_rows(shard: ShardData, *, keys: bool = True) -> None:
    """Refuse a shard whose rows contradict themselves (:class:`MalformedShard`).

    A shard holds each key once per run (compaction keeps one row per key, and the
    versions of runs that conflict: see :mod:`.table`), with the status
    ``done`` or ``failed``, and each row's key is the key of the row's parameters
    (:func:`notebookscan.keys.key_array`): a row carrying one point's key with other
    parameter values would hide that point and show a wrong one. ``keys=False`` skips
    the key check (the caller remembers it passed for this very file).
    """
    stored = _as_bytes(shard.bookkeeping["key"])
    if len(stored) != shard.n:
        raise MalformedShard(f"its key column has {len(stored)} rows for {shard.n} points")
    for name, column in shard.params.items():
        if len(column) != shard.n:
            raise MalformedShard(f"parameter {name!r} has {len(column)} rows for "
                                 f"{shard.n} points")
    # each (key, run) once: a compacted shard keeps the versions of conflicting runs
    # side by side (see store.table), but never two rows of one run
    runs = shard.bookkeeping.get("run")
    pairs = (stored if runs is None else
             np.char.add(np.char.add(stored, b"|"), _as_bytes(runs)))
    ordered = np.sort(pairs)
    twice = ordered[1:] == ordered[:-1]
    if twice.any():
        key = ordered[1:][twice][0].split(b"|")[0]
        raise MalformedShard(f"the key {key.decode('utf-8', 'replace')} is stored "
                             f"{int(np.sum(pairs == ordered[1:][twice][0]))} times in it "
                             "for one run (a shard holds each point once per run)")
    status = shard.bookkeeping.get("status")
    if status is not None and len(status):
        status = _as_bytes(status)
        odd = (status != b"done") & (status != b"failed")
        if odd.any():
            raise MalformedShard(f"row {int(np.argmax(odd))} has the status "
                                 f"{status[odd][0].decode('utf-8', 'replace')!r}, not done "
                                 "or failed")
    if keys and shard.params and shard.n:
        bad = np.flatnonzero(_key_mismatches(shard, stored))
        if len(bad):
            row = int(bad[0])
            values = ", ".join(f"{k}={v[row]!r}" for k, v in sorted(shard.params.items()))
            raise MalformedShard(
                f"{len(bad)} row(s) carry a key that is not their parameters' key (row "
                f"{row}: key {stored[row].decode('utf-8', 'replace')} with {values})")


def _key_mismatches(shard: ShardData, stored: np.ndarray) -> np.ndarray:
    """A bool per row: its stored key (bytes) differs from its parameters' key."""
    names = sorted(shard.params)
    bad = key_array(names, shard.params) != stored
    # a parameter of mixed values is stored as one type: (1, "a") as text, whose numbers
    # and bools give their own keys; (2**60, 0.5) as floats, whose big integers do
    text = [n for n in names if shard.params[n].dtype.kind in "OU"]
    floats = [n for n in names if shard.params[n].dtype.kind == "f"]
    for parsed in (text, floats, text + floats):
        if not parsed or not bad.any():
            continue
        rows = np.flatnonzero(bad)
        columns = {n: shard.params[n][rows] for n in names}
        for n in parsed:
            columns[n] = np.array([_parsed(v) for v in columns[n].tolist()], dtype=object)
        bad[rows] = key_array(names, columns) != stored[rows]
    if text and bad.any():  # text holding the key separator, keyed before it was doubled
        rows = np.flatnonzero(bad)
        columns = {n: shard.params[n][rows] for n in names}
        bad[rows] = legacy_key_array(names, columns) != stored[rows]
    return bad


def _parsed(text: Any) -> Any:
    """A value of a mixed parameter as it was before being stored as text or float."""
    if isinstance(text, float):
        return int(text) if text.is_integer() else text
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        with contextlib.suppress(ValueError, TypeError):
            return kind(text)
    return text


def decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Parse the JSON-valued attributes of a shard (provenance)."""
    out = dict(attrs)
    for name in ("provenance",):
        if isinstance(out.get(name), str):
            with contextlib.suppress(ValueError):
                out[name] = json.loads(out[name])
    return out


def unreadable_reason(exc: BaseException) -> str:
    """Why a shard cannot be read, for its ``.reason.txt`` and reports."""
    if isinstance(exc, MalformedShard):
        return f"malformed shard: {exc}"
    return f"not a notebookscan shard: {type(exc).__name__}: {exc}"
