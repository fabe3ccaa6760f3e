"""Combine shards into one de-duplicated table of points.

Shards are immutable and may overlap (two writers computed the same point, a merge
copied a store in, compaction was killed between writing and deleting). Combining
keeps one row per key: a ``done`` row wins over a ``failed`` one, and otherwise the
row that finished last. Rows are then sorted by their parameter values, so the table
does not depend on which shard holds which point.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StoreWarning
from . import ragged
from .schema import BOOKKEEPING, BOOKKEEPING_DTYPES
from .shards import ShardData

__all__ = ["Table", "combine_shards"]

@dataclass
class Table:
    """Points column by column, one row per key."""

    names: tuple[str, ...]
    params: dict[str, np.ndarray]
    bookkeeping: dict[str, np.ndarray]
    results: dict[str, np.ndarray]
    result_dims: dict[str, tuple[str, ...]]
    result_attrs: dict[str, dict[str, Any]]
    lengths: dict[str, np.ndarray]
    coords: dict[str, np.ndarray]
    runs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.bookkeeping["key"])

    def take(self, index: np.ndarray) -> Table:
        def pick(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: column[index] for name, column in columns.items()}

        coords = {
            dim: (c[index] if c.ndim == 2 else c) for dim, c in self.coords.items()
        }
        return Table(self.names, pick(self.params), pick(self.bookkeeping), pick(self.results),
                     self.result_dims, self.result_attrs, pick(self.lengths), coords, self.runs)


def _missing_for(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "M":
        return np.datetime64("NaT")
    if dtype.kind == "i":
        return np.iinfo(dtype).min
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    if dtype.kind == "O":
        return ""
    if dtype.kind == "S":
        return b""
    return 0


def _target_dtype(dtypes: list[np.dtype]) -> np.dtype:
    if any(d.kind == "O" for d in dtypes):
        return np.dtype(object)
    return np.result_type(*dtypes)


def _convert_block(block: np.ndarray, target: np.dtype) -> np.ndarray:
    if block.dtype == target:
        return block
    if target.kind == "f" and block.dtype.kind in "iu":
        out = block.astype(target)
        out[block == _missing_for(block.dtype)] = np.nan
        return out
    if target.kind == "O":
        if block.dtype.kind == "S":  # text read as UTF-8 bytes
            return np.char.decode(block, "utf-8").astype(object)
        return block.astype(str).astype(object)
    return block.astype(target)


def _concat_column(blocks: list[np.ndarray | None], sizes: list[int],
                   inner: tuple[int, ...] = ()) -> np.ndarray:
    """Concatenate per-shard blocks along points, padding inner dims and absent blocks."""
    present = [b for b in blocks if b is not None]
    dtype = _target_dtype([b.dtype for b in present]) if present else np.dtype(np.float64)
    if not inner and all(b is not None and b.dtype == dtype for b in blocks):
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    out = np.full((sum(sizes), *inner), _missing_for(dtype), dtype=dtype)
    start = 0
    for block, size in zip(blocks, sizes, strict=True):
        if block is not None:
            region = (slice(start, start + size), *(slice(0, s) for s in block.shape[1:]))
            out[region] = _convert_block(block, dtype)
        start += size
    return out


def _combine_coordinate(dim: str, shards: Sequence[ShardData], size: int) -> np.ndarray | None:
    shared = [s.coords[dim] for s in shards if dim in s.coords and s.coords[dim].ndim == 1]
    per_point = [s for s in shards if dim in s.coords and s.coords[dim].ndim == 2]
    if not shared and not per_point:
        return None
    if not per_point:
        longest = max(shared, key=len)
        if all(np.array_equal(c, longest[: len(c)]) for c in shared) and len(longest) == size:
            return longest
    total = sum(s.n for s in shards)
    out = np.full((total, size), np.nan)
    start = 0
    for s in shards:
        c = s.coords.get(dim)
        if c is not None:
            if c.ndim == 1:
                out[start:start + s.n, : len(c)] = c
            else:
                out[start:start + s.n, : c.shape[1]] = c
        start += s.n
    return out


def _runs_of(shards: Sequence[ShardData]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for s in shards:
        text = s.attrs.get("provenance")
        if not isinstance(text, str):
            continue
        try:
            runs.update(json.loads(text))
        except ValueError:
            continue
    return runs


def combine_shards(shards: Sequence[ShardData], names: Sequence[str] | None = None, *,
                   consume: bool = False) -> Table:
    """Concatenate shards, keep one row per key, sort rows by parameter values.

    With ``consume``, each shard's columns are dropped from it as soon as they are
    combined, so the memory needed stays near one copy of the data (compaction).
    """
    shards = [s for s in shards if s.n]
    if names is None:
        names = list(dict.fromkeys(n for s in shards for n in s.params))
    names = tuple(names)
    sizes = [s.n for s in shards]
    if not shards:
        empty = np.array([], dtype=object)
        bookkeeping = {b: np.array([], dtype=BOOKKEEPING_DTYPES.get(b, object))
                       for b in BOOKKEEPING}
        return Table(names, dict.fromkeys(names, empty), bookkeeping, {}, {}, {}, {}, {})

    def blocks(part: str, name: str) -> list[np.ndarray | None]:
        found = [getattr(s, part).get(name) for s in shards]
        if consume:
            for s in shards:
                getattr(s, part).pop(name, None)
        return found

    params = {n: _concat_column(blocks("params", n), sizes) for n in names}
    bookkeeping = {
        b: _concat_column(blocks("bookkeeping", b), sizes)
        for b in BOOKKEEPING
        if any(b in s.bookkeeping for s in shards)
    }
    best = _best_rows(bookkeeping, params, names)
    for columns in (params, bookkeeping):
        for name in list(columns):  # one column copied at a time
            columns[name] = columns[name][best]
    result_dims: dict[str, tuple[str, ...]] = {}
    result_attrs: dict[str, dict[str, Any]] = {}
    for s in shards:
        for name, dims in s.result_dims.items():
            known = result_dims.setdefault(name, dims)
            if known != dims:
                warnings.warn(
                    f"result {name!r} has dims {dims} in some shards and {known} in others "
                    "(did the function change?); only the rows with dims "
                    f"{known} are kept. Store the other version under another name.",
                    StoreWarning, stacklevel=3,
                )
            result_attrs.setdefault(name, s.result_attrs.get(name, {}))
    dim_sizes: dict[str, int] = {}
    for s in shards:
        for name, dims in s.result_dims.items():
            if result_dims[name] != dims:
                continue
            for axis, dim in enumerate(dims):
                dim_sizes[dim] = max(dim_sizes.get(dim, 0), s.results[name].shape[1 + axis])
    results = {}
    for name, dims in result_dims.items():
        found = [
            s.results.get(name) if s.result_dims.get(name) == dims else None for s in shards
        ]
        if consume:
            for s in shards:
                s.results.pop(name, None)
        inner = tuple(dim_sizes[d] for d in dims)
        # results whose lengths differ a lot stay flat values + counts (see ragged.py)
        combined = ragged.concat(
            found, sizes, [s.lengths.get(dims[0]) if dims else None for s in shards], inner,
            _target_dtype([b.dtype for b in found if b is not None] or [np.dtype("f8")]),
            _convert_block)
        if combined is None:
            combined = _concat_column(found, sizes, inner)
        results[name] = combined[best]
        del found
    lengths = {dim: _concat_column([s.lengths.get(dim) for s in shards], sizes)[best]
               for dim in dim_sizes}
    for column in lengths.values():
        if column.dtype.kind == "i":
            column[column < 0] = 0
    coords = {}
    for dim, size in dim_sizes.items():
        coord = _combine_coordinate(dim, shards, size)
        if coord is not None:
            coords[dim] = coord[best] if coord.ndim == 2 else coord
    return Table(names, params, bookkeeping, results, result_dims, result_attrs, lengths,
                 coords, _runs_of(shards))


def _best_rows(bookkeeping: dict[str, np.ndarray], params: dict[str, np.ndarray],
               names: Sequence[str]) -> np.ndarray:
    """Indices of one row per key (done beats failed, then latest finished), sorted by params."""
    keys = bookkeeping["key"]
    status = bookkeeping.get("status")
    rank = (np.ones(len(keys), dtype=np.int8) if status is None else
            (status == (b"done" if status.dtype.kind == "S" else "done")).astype(np.int8))
    finished = bookkeeping.get("finished", np.zeros(len(keys)))
    order = np.lexsort((finished, rank, keys))
    sorted_keys = keys[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    best = order[last]
    return best[_param_order(keys, params, names, best)]


def _param_order(keys: np.ndarray, params: dict[str, np.ndarray], names: Sequence[str],
                 rows: np.ndarray) -> np.ndarray:
    """Order of ``rows`` by parameter values (first name most significant), then key."""
    columns = [keys[rows]]
    for name in reversed(names):
        column = params[name][rows]
        if column.dtype == object:
            column = column.astype(str)
        columns.append(column)
    return np.lexsort(columns)
