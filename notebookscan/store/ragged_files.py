"""The rows of a padded view that sit in shard files: read only when asked
(:class:`FileRows`), or all at once into memory (:func:`load_source`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .ragged import Ragged, RowSource, missing_value
from .shards import open_dataset, unwritten_as_nan

__all__ = ["FileRows", "file_source", "load_source"]


class FileRows(RowSource):
    """A :class:`~notebookscan.store.ragged.RowSource` whose rows are in shard files."""

    def rows(self, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``(len(rows), hi - lo, *rest)`` raw values, read from the shards (missing
        marker as padding)."""
        out = np.full((len(rows), hi - lo, *self.rest), missing_value(self.dtype),
                      dtype=self.dtype)
        wanted = [(j, r) for j, r in enumerate(np.asarray(rows).tolist())
                  if r >= 0 and self.file[r] >= 0 and self.counts[r] > lo]
        if not wanted:
            return out
        with self.lock or contextlib.nullcontext():
            for k in sorted({int(self.file[r]) for _, r in wanted}):
                with open_dataset(self.paths[k]) as nc:
                    var = nc.variables[self.name]
                    var.set_auto_maskandscale(False)
                    for j, r in wanted:
                        if self.file[r] != k:
                            continue
                        n = min(hi, int(self.counts[r])) - lo
                        p = int(self.position[r])
                        data = (var[p + lo:p + lo + n] if self.ragged_file[k] else
                                var[p, lo:lo + n])
                        data = np.asarray(data)
                        out[(j, slice(0, n), *(slice(0, s) for s in data.shape[1:]))] = data
        return out


def file_source(name: str, paths: Sequence[str], extents: Sequence[Any], shard_of: np.ndarray,
                position: np.ndarray, longest: int, rest: tuple[int, ...], dtype: np.dtype,
                lock: Any = None) -> RowSource:
    """The rows of result ``name``: table row ``i`` is row ``position[i]`` of shard
    ``shard_of[i]`` (``extents[k]`` is :func:`shard_extents`'s entry there, or None)."""
    counts = np.zeros(len(shard_of), dtype=np.int64)
    file = np.full(len(shard_of), -1, dtype=np.int64)
    start = np.zeros(len(shard_of), dtype=np.int64)
    flags = []
    for k, extent in enumerate(extents):
        flags.append(bool(extent and extent[3]))
        pick = np.flatnonzero(shard_of == k)
        if extent is None or not len(pick):
            continue
        shard_counts = extent[2]
        pos = position[pick]
        counts[pick] = shard_counts[pos]
        file[pick] = k
        if extent[3]:  # ragged: where the point's samples start
            offsets = np.concatenate([[0], np.cumsum(shard_counts)])
            start[pick] = offsets[pos]
        else:
            start[pick] = pos
    return FileRows(rest, dtype, counts, paths=paths, name=name, ragged_file=flags,
                    file=file, position=start, lock=lock, longest=longest)


def load_source(source: RowSource) -> RowSource:
    """``source`` with every row read into memory (:class:`Ragged`, about the bytes the
    rows hold), a shard at a time."""
    n = len(source.counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    counts = np.where(source.file >= 0, source.counts, 0)
    np.cumsum(counts, out=offsets[1:])
    values = np.full((int(offsets[-1]), *source.rest), missing_value(source.dtype),
                     dtype=source.dtype)
    for k, path in enumerate(source.paths):
        pick = np.flatnonzero(source.file == k)
        if not len(pick):
            continue
        with open_dataset(path) as nc:
            var = nc.variables[source.name]
            var.set_auto_maskandscale(False)
            if source.ragged_file[k]:
                part = _read_ragged_rows(var, source.position[pick], counts[pick])
            else:
                part = _read_dense_rows(var, source.position[pick], counts[pick])
            part = unwritten_as_nan(var, part)
        dest = (np.repeat(offsets[pick] - np.concatenate([[0], np.cumsum(counts[pick])[:-1]]),
                          counts[pick]) + np.arange(len(part)))
        values[(dest, *(slice(0, s) for s in part.shape[1:]))] = part
    memory = Ragged(values, counts)
    return RowSource(source.rest, source.dtype, counts, memory=memory, name=source.name,
                     longest=source.longest)


_SLAB = 32 * 2**20


def _read_ragged_rows(var: Any, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The samples of the rows starting at ``starts`` (``counts`` each), one after another."""
    order = np.argsort(starts, kind="stable")
    lo = int(starts.min())
    hi = int((starts + counts).max())
    if hi - lo <= 2 * max(int(counts.sum()), 1):  # mostly wanted: one read
        block = np.asarray(var[lo:hi])
        gather = _gather_index(starts - lo, counts)
        return block[gather]
    parts = [None] * len(starts)
    for j in order.tolist():
        parts[j] = np.asarray(var[int(starts[j]):int(starts[j] + counts[j])])
    return np.concatenate(parts) if parts else np.asarray(var[0:0])


def _gather_index(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    firsts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=firsts[1:])
    return np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - firsts, counts)


def _read_dense_rows(var: Any, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a padded variable cut to ``counts``, in that order, a slab at a time."""
    width = int(counts.max()) if len(counts) else 0
    row_bytes = max(1, width * int(np.prod(var.shape[2:])) * var.dtype.itemsize)
    step = max(1, _SLAB // row_bytes)
    parts = []
    for i in range(0, len(rows), step):
        r, c = rows[i:i + step], counts[i:i + step]
        lo, hi = int(r.min()), int(r.max()) + 1
        w = int(c.max())  # read no padding beyond these rows' longest
        if hi - lo <= 2 * len(r):
            block = np.asarray(var[lo:hi, :w])[r - lo]
        else:
            block = np.stack([np.asarray(var[int(x), :w]) for x in r])
        parts.append(block[np.arange(w) < c[:, None]])
    return np.concatenate(parts) if parts else np.asarray(var[0:0, 0:0]).reshape(
        0, *var.shape[2:])
