"""Finished chunks waiting to be flushed, and their conversion into one shard.

The scan loop keeps whole chunk results (columns) rather than one object per point, so
a point that takes microseconds costs microseconds of bookkeeping, not tens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .results import Value
from .shards import DTYPE_ATTR, ShardData, _column_for, add_results
from .worker import ChunkResult

__all__ = ["Batch"]

_SCALAR_FILL = {"f": np.nan, "i": np.iinfo(np.int64).min}


class Batch:
    """Chunk results (with the positions of their points in the scan) not yet written."""

    def __init__(self) -> None:
        self.parts: list[tuple[list[int], ChunkResult]] = []
        self.points = 0
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self.parts)

    def add(self, indices: list[int], chunk: ChunkResult) -> None:
        self.parts.append((indices, chunk))
        self.points += len(indices)
        self.nbytes += sum(np.asarray(v.data).nbytes for values in chunk.arrays.values()
                           for v in values if v is not None)
        self.nbytes += sum(data.nbytes for data, _ in chunk.scalars.values())

    def to_shard(self, names: Sequence[str], columns: dict[str, list[Any]], keys: list[str],
                 seeds: list[int], run_id: str, attrs: dict[str, Any]) -> ShardData:
        """One shard holding every point of the batch."""
        index = [i for indices, _ in self.parts for i in indices]
        chunks = [chunk for _, chunk in self.parts]
        n = len(index)
        done = np.concatenate([c.done for c in chunks])
        error = np.full(n, "", dtype=object)
        trace = np.full(n, "", dtype=object)
        offset = 0
        for chunk in chunks:
            for i, (message, traceback) in chunk.failures.items():
                error[offset + i], trace[offset + i] = message, traceback
            offset += len(chunk)
        sizes = [len(c) for c in chunks]
        bookkeeping = {
            "key": np.array([keys[i] for i in index], dtype=object),
            "status": np.where(done, "done", "failed").astype(object),
            "error": error,
            "traceback": trace,
            "host": np.repeat(np.array([c.host for c in chunks], dtype=object), sizes),
            "worker": np.repeat(np.array([c.worker for c in chunks], dtype=object), sizes),
            "run": np.full(n, run_id, dtype=object),
            "seed": np.array([seeds[i] for i in index], dtype=np.int64),
            "started": np.concatenate([c.started for c in chunks]),
            "finished": np.concatenate([c.finished for c in chunks]),
        }
        bookkeeping["duration"] = bookkeeping["finished"] - bookkeeping["started"]
        params = {name: _column_for([columns[name][i] for i in index]) for name in names}
        shard = ShardData(n, params, bookkeeping, {}, {}, {}, {}, {}, dict(attrs))
        self._add_scalars(shard, chunks)
        return shard

    @staticmethod
    def _add_scalars(shard: ShardData, chunks: list[ChunkResult]) -> None:
        names = dict.fromkeys(n for c in chunks for n in (*c.scalars, *c.arrays))
        as_values: dict[str, list[Value | None]] = {}
        for name in names:
            kinds = {c.scalars[name][0].dtype.kind for c in chunks if name in c.scalars}
            stacked = not any(name in c.arrays for c in chunks) and len(kinds) == 1
            if stacked and kinds != {"b"}:
                kind = kinds.pop()
                dtype = np.float64 if kind == "f" else np.int64
                parts = []
                for c in chunks:
                    if name in c.scalars:
                        data, present = c.scalars[name]
                        part = data.astype(dtype, copy=True)
                        part[~present] = _SCALAR_FILL[kind]
                    else:
                        part = np.full(len(c), _SCALAR_FILL[kind], dtype=dtype)
                    parts.append(part)
                shard.results[name] = np.concatenate(parts)
                shard.result_dims[name] = ()
                shard.result_attrs[name] = {}
            elif stacked:  # bools: int8 with -1 where missing
                parts = []
                for c in chunks:
                    if name in c.scalars:
                        data, present = c.scalars[name]
                        part = data.astype(np.int8)
                        part[~present] = -1
                    else:
                        part = np.full(len(c), -1, dtype=np.int8)
                    parts.append(part)
                shard.results[name] = np.concatenate(parts)
                shard.result_dims[name] = ()
                shard.result_attrs[name] = {DTYPE_ATTR: "bool"}
            else:
                column: list[Value | None] = []
                for c in chunks:
                    if name in c.arrays:
                        column.extend(c.arrays[name])
                    elif name in c.scalars:
                        data, present = c.scalars[name]
                        column.extend(Value(d.item()) if p else None
                                      for d, p in zip(data, present, strict=True))
                    else:
                        column.extend([None] * len(c))
                as_values[name] = column
        if as_values:
            add_results(shard, as_values)
