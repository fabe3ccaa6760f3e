"""Results whose length differs from point to point: flat values plus per-point counts.

A result with its own dims (``time``, ...) whose first own dim varies in length costs,
padded to the longest, points × longest: one point of 2·10⁶ samples among 300 of 10
would be a 4.5 GiB array. Such a result is kept as a *contiguous ragged array* (CF
conventions, section 9.3.3): the points' values one after the other along a sample
dim, plus how many samples each point has.

On disk (in a shard)
    ``<name>`` over ``(<name>_sample, *other own dims)`` with the attributes
    ``notebookscan_ragged`` (the own dim it stands for), ``notebookscan_count`` (the
    count variable) and ``notebookscan_longest``; ``<name>_count`` over ``point`` with
    CF's ``sample_dimension = "<name>_sample"``. Other own dims are padded to the
    longest (they rarely differ). The dense padded layout is kept whenever padding
    costs little (:func:`wasteful`): equal lengths, short arrays.
In memory
    :class:`Ragged` (``values`` + ``counts``), wherever a padded ``(n, longest, ...)``
    array would otherwise be: in :class:`~.shards.ShardData` and the combined table.
In the Dataset
    :func:`padded_view`: a dask array of the padded shape whose chunks are built from
    the flat values only when computed (see :mod:`.dataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import StoreError

__all__ = ["Ragged", "wasteful"]

#: on disk and in a table, padding must waste more than this (and more than the data)
#: before a result is kept ragged: below it the dense layout is as cheap and faster
DISK_MIN_WASTE = 2**20
#: in a Dataset, a padded result above this size (and over twice its data) is lazy
VIEW_MIN_BYTES = 64 * 2**20
CHUNK_BYTES = 4 * 2**20  # target bytes of one chunk of a padded view
COUNT_SUFFIX = "_count"
SAMPLE_SUFFIX = "_sample"
RAGGED_ATTR = "notebookscan_ragged"
COUNT_ATTR = "notebookscan_count"
LONGEST_ATTR = "notebookscan_longest"


def wasteful(counts: np.ndarray, longest: int, row_bytes: int,
             min_waste: int = DISK_MIN_WASTE) -> bool:
    """True when padding ``counts`` to ``longest`` rows of ``row_bytes`` wastes more than
    ``min_waste`` bytes and more than the data itself (padded > 2 × stored)."""
    counts = np.asarray(counts, dtype=np.int64)
    stored = int(counts.sum()) * row_bytes
    padded = len(counts) * int(longest) * row_bytes
    return padded - stored > max(min_waste, stored)


def missing_value(dtype: np.dtype) -> Any:
    """The value that marks a missing element of ``dtype`` in the store."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "i":
        return np.iinfo(dtype).min
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    return 0


class Ragged:
    """Per-point arrays of one result, their first dim of varying length.

    ``values`` holds the points' rows one after another (``(sum(counts), *rest)``);
    point ``i`` is ``values[offsets[i]:offsets[i + 1]]``. It stands in for the padded
    ``(n, longest, *rest)`` array: ``shape``, ``dtype``, ``len``, row selection
    (``ragged[index]`` with an index array or slice gives a Ragged) and
    ``np.asarray`` (the padded array, filled with the missing value) work as there.
    """

    def __init__(self, values: np.ndarray, counts: np.ndarray, fill: Any = None):
        self.values = values
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.offsets[1:])
        self.fill = missing_value(values.dtype) if fill is None else fill

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray | None], dtype: np.dtype,
                  rest: tuple[int, ...], fill: Any = None) -> Ragged:
        """Rows (``None`` for a point without the result) of ``(count, *≤rest)``."""
        fill = missing_value(dtype) if fill is None else fill
        counts = np.array([0 if r is None else len(r) for r in rows], dtype=np.int64)
        values = np.full((int(counts.sum()), *rest), fill, dtype=dtype)
        start = 0
        for row in rows:
            if row is not None and len(row):
                inner = tuple(slice(0, s) for s in row.shape[1:])
                values[(slice(start, start + len(row)), *inner)] = row
                start += len(row)
        return cls(values, counts, fill)

    @classmethod
    def from_padded(cls, block: np.ndarray, counts: np.ndarray | None) -> Ragged:
        """The rows of a padded ``(n, longest, ...)`` block cut to ``counts``."""
        block = np.asarray(block)
        longest = block.shape[1]
        counts = (np.full(len(block), longest, dtype=np.int64) if counts is None else
                  np.clip(np.asarray(counts, dtype=np.int64), 0, longest))
        keep = np.arange(longest) < counts[:, None]
        return cls(block[keep], counts)

    @property
    def shape(self) -> tuple[int, ...]:
        longest = int(self.counts.max()) if len(self.counts) else 0
        return (len(self.counts), longest, *self.values.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return self.values.ndim + 1

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.counts.nbytes)

    @property
    def padded_nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.counts)

    def row(self, i: int) -> np.ndarray:
        """Point ``i``'s own values, unpadded."""
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def take(self, index: Any) -> Ragged:
        """The rows ``index`` (an index array, a boolean mask or a slice), in that order."""
        rows = np.arange(len(self))[index]
        counts = self.counts[rows]
        starts = self.offsets[:-1][rows]
        new_starts = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(counts[:-1], out=new_starts[1:])
        gather = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - new_starts,
                                                                          counts)
        return Ragged(self.values[gather], counts, self.fill)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, tuple) and index and isinstance(index[0], (int, np.integer)):
            return self.padded_rows(np.array([index[0]]))[0][index[1:]]
        if isinstance(index, (int, np.integer)):
            return self.padded_rows(np.array([index]))[0]
        return self.take(index)

    def padded_rows(self, rows: np.ndarray, lo: int = 0, hi: int | None = None,
                    dtype: Any = None, fill: Any = None) -> np.ndarray:
        """Rows ``rows`` (-1: none) padded, samples ``lo:hi`` of each."""
        hi = self.shape[1] if hi is None else hi
        out = np.full((len(rows), hi - lo, *self.values.shape[1:]),
                      self.fill if fill is None else fill, dtype=dtype or self.dtype)
        for j, r in enumerate(np.asarray(rows).tolist()):
            if r < 0:
                continue
            a, b = self.offsets[r] + lo, min(self.offsets[r] + hi, self.offsets[r + 1])
            if b > a:
                out[j, : b - a] = self.values[a:b]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.padded_rows(np.arange(len(self)), dtype=dtype)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def with_dtype(self, dtype: np.dtype, convert: Callable[[np.ndarray, np.dtype], np.ndarray]
                   ) -> Ragged:
        if self.dtype == dtype:
            return self
        return Ragged(convert(self.values, dtype), self.counts)


def concat(blocks: Sequence[Any], sizes: Sequence[int],
           lengths: Sequence[np.ndarray | None], inner: tuple[int, ...],
           target: np.dtype, convert: Callable[[np.ndarray, np.dtype], np.ndarray]
           ) -> Ragged | None:
    """Per-shard blocks of one result (Ragged, padded arrays or None) as one Ragged.

    ``lengths`` are each shard's per-point lengths of the result's first own dim (what
    cuts a padded block's rows). Returns None when the dense padded layout serves as
    well (no block is ragged and padding wastes little, or the result is text).
    """
    if not inner or target.kind not in "fiub":
        return None
    counts = []
    for block, size, length in zip(blocks, sizes, lengths, strict=True):
        if block is None:
            counts.append(np.zeros(size, dtype=np.int64))
        elif isinstance(block, Ragged):
            counts.append(block.counts)
        else:
            full = np.full(size, block.shape[1], dtype=np.int64)
            counts.append(full if length is None else np.clip(length, 0, block.shape[1]))
    all_counts = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    row_bytes = int(np.prod(inner[1:])) * target.itemsize
    if not any(isinstance(b, Ragged) for b in blocks) and not wasteful(
            all_counts, inner[0], row_bytes):
        return None
    parts = []
    for block, count in zip(blocks, counts, strict=True):
        if block is None:
            continue
        if not isinstance(block, Ragged):
            block = Ragged.from_padded(block, count)
        values = convert(block.values, target)
        if values.shape[1:] != inner[1:]:  # other own dims shorter here: pad them
            grown = np.full((len(values), *inner[1:]), missing_value(target), dtype=target)
            grown[(slice(None), *(slice(0, s) for s in values.shape[1:]))] = values
            values = grown
        parts.append(values)
    values = (np.concatenate(parts) if parts else
              np.zeros((0, *inner[1:]), dtype=target))
    return Ragged(values, all_counts)


# ------------------------------------------------------------------ a lazy padded view


class RowSource:
    """Where each row of a padded view comes from: a :class:`Ragged` in memory, or
    shard files (one variable of each, ragged or dense), read only when asked.

    ``files`` holds per row the file index (-1: no value), the position (the row's
    first sample in a ragged variable, the row itself in a dense one) and the count.
    """

    def __init__(self, rest: tuple[int, ...], dtype: np.dtype, counts: np.ndarray, *,
                 memory: Ragged | None = None, paths: Sequence[str] = (), name: str = "",
                 ragged_file: Sequence[bool] = (), file: np.ndarray | None = None,
                 position: np.ndarray | None = None, lock: Any = None,
                 longest: int | None = None):
        self.rest, self.dtype, self.counts = rest, np.dtype(dtype), counts
        self._longest = longest
        self.memory, self.paths, self.name = memory, list(paths), name
        self.ragged_file, self.file, self.position = list(ragged_file), file, position
        self.lock = lock

    @property
    def longest(self) -> int:
        """Samples of the padded view: the given size (the dim's, over all results that
        share it), else the longest row."""
        if self._longest is not None:
            return self._longest
        return int(self.counts.max()) if len(self.counts) else 0

    def rows(self, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``(len(rows), hi - lo, *rest)`` raw values (missing marker as padding).

        Rows in memory are answered here; rows in shard files by the subclass that reads
        them (:class:`notebookscan.store.ragged_files.FileRows`).
        """
        if self.memory is None:
            raise StoreError("these rows are in shard files: read them with "
                             "notebookscan.store.ragged_files.file_source")
        return self.memory.padded_rows(rows, lo, hi)


class _Blocks:
    """The padded array ``(*cells, longest, *rest)`` that dask slices chunk by chunk."""

    def __init__(self, source: RowSource, cell_rows: np.ndarray,
                 decode: Callable[[np.ndarray], np.ndarray], dtype: np.dtype):
        self.source, self.cell_rows, self.decode = source, cell_rows, decode
        self.dtype = np.dtype(dtype)
        self.shape = (*cell_rows.shape, source.longest, *source.rest)
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ncell = self.cell_rows.ndim
        rows = self.cell_rows[key[:ncell]]
        own = key[ncell]
        lo, hi, _ = own.indices(self.shape[ncell])
        block = self.source.rows(rows.reshape(-1), lo, max(lo, hi))
        block = self.decode(block)[(slice(None), slice(None), *key[ncell + 1:])]
        return block.reshape(*rows.shape, *block.shape[1:])


def padded_view(source: RowSource, cell_rows: np.ndarray,
                decode: Callable[[np.ndarray], np.ndarray], dtype: np.dtype) -> Any:
    """A dask array of the padded values: cell ``c`` holds row ``cell_rows[c]`` (-1:
    none, all missing). Chunks of about :data:`CHUNK_BYTES`, built when computed."""
    import dask.array as da

    blocks = _Blocks(source, cell_rows, decode, dtype)
    row_bytes = int(np.prod(source.rest)) * blocks.dtype.itemsize
    longest = max(source.longest, 1)
    own = max(1, min(longest, CHUNK_BYTES // max(row_bytes, 1)))
    per_cell = own * row_bytes
    chunks: list[Any] = [1] * cell_rows.ndim
    if cell_rows.ndim:
        chunks[-1] = max(1, CHUNK_BYTES // max(per_cell, 1))
    chunks += [own, *source.rest]
    return da.from_array(blocks, chunks=tuple(chunks), asarray=False, fancy=False,
                         name=f"ragged-{source.name}-{id(blocks):x}", meta=np.empty(
                             (0,) * blocks.ndim, dtype=blocks.dtype))


# ------------------------------------------------------------------ reading a store's rows


def shard_extents(nc: Any, role_attr: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...],
                                                               np.ndarray, bool]]:
    """Per result with own dims of an open shard: ``(own dims, own shape, per-point counts
    of the first own dim, stored ragged)``, from metadata and the small count columns."""
    out = {}
    for name, var in nc.variables.items():
        attrs = var.ncattrs()
        if role_attr not in attrs or var.getncattr(role_attr) != "result":
            continue
        if RAGGED_ATTR in attrs:
            counts = _ints(nc.variables[var.getncattr(COUNT_ATTR)])
            longest = int(counts.max()) if len(counts) else 0
            out[name] = ((str(var.getncattr(RAGGED_ATTR)), *var.dimensions[1:]),
                         (longest, *var.shape[1:]), counts, True)
        elif var.ndim > 1:
            dims, shape = tuple(var.dimensions[1:]), tuple(var.shape[1:])
            length = nc.variables.get(f"{dims[0]}_length")
            counts = (np.full(var.shape[0], shape[0], dtype=np.int64) if length is None else
                      np.clip(_ints(length), 0, shape[0]))
            out[name] = (dims, shape, counts, False)
    return out


def _ints(var: Any) -> np.ndarray:
    var.set_auto_maskandscale(False)
    return np.asarray(var[...], dtype=np.int64)


def decoder(dtype: np.dtype, is_bool: bool) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                     np.dtype]:
    """How a view turns raw blocks (missing markers as padding) into what a Dataset
    shows: NaN where missing, so integers and bools become float64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (lambda block: block), dtype
    marker = -1 if is_bool else missing_value(dtype)

    def decode(block: np.ndarray) -> np.ndarray:
        out = block.astype(np.float64)
        out[block == marker] = np.nan
        return out

    return decode, np.dtype(np.float64)


def flat_parts(data: Any, lengths: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """The flat values and per-cell counts of a padded (possibly dask) array
    ``(*cells, longest, *rest)``, cells in C order; ``lengths`` (cells) cut each row.

    Reads one chunk of cells at a time (dask) and keeps only the samples.
    """
    cells = int(np.prod(lengths.shape))
    counts = np.clip(np.nan_to_num(np.asarray(lengths, dtype=np.float64)).astype(np.int64),
                     0, longest).reshape(-1)
    flat = data.reshape((cells, *data.shape[lengths.ndim:]))
    parts = []
    step = max(1, CHUNK_BYTES * 4 // max(1, longest * int(np.prod(flat.shape[2:])) * 8))
    for lo in range(0, cells, step):
        c = counts[lo:lo + step]
        w = int(c.max()) if len(c) else 0
        block = np.asarray(flat[lo:lo + step, :w])
        parts.append(block[np.arange(w) < c[:, None]])
    values = (np.concatenate(parts) if parts else
              np.zeros((0, *flat.shape[2:]), dtype=data.dtype))
    return values, counts


def row_fingerprint(column: Any, i: int) -> bytes:
    """A digest of point ``i``'s values of a result, the same whether the column holds
    them padded or ragged: trailing missing values along the first own dim (padding)
    are left out."""
    import hashlib

    row = column.row(i) if isinstance(column, Ragged) else np.asarray(column[i])
    if row.ndim and row.dtype.kind in "fiu" and len(row):
        missing = np.isnan(row) if row.dtype.kind == "f" else row == missing_value(row.dtype)
        if row.ndim > 1:
            missing = missing.reshape(len(row), -1).all(axis=1)
        present = np.flatnonzero(~missing)
        row = row[: int(present[-1]) + 1 if len(present) else 0]
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()
