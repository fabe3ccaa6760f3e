"""Finished chunks waiting to be flushed, and their conversion into one shard.

The scan loop keeps whole chunk results (columns) rather than one object per point, so
a point that takes microseconds costs microseconds of bookkeeping, not tens.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..results import Value, attrs_conflict, derived_names, joined_attrs
from ..store.directory import Store
from ..store.schema import DTYPE_ATTR, is_reserved
from ..store.shards import (
    ShardData,
    add_results,
    column_for,
    new_shard_name,
    write_shard_atomically,
    write_shard_unpublished,
)
from .worker import ChunkResult, PointColumns, attrs_mismatch

__all__ = ["Batch"]

_SCALAR_FILL = {"f": np.nan, "i": np.iinfo(np.int64).min}


class Batch:
    """Chunk results (with the positions of their points in the scan) not yet written."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ChunkResult]] = []
        self.points = 0
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self.parts)

    def add(self, indices: np.ndarray, chunk: ChunkResult) -> None:
        """Keep ``chunk``, the results of the points at ``indices`` of the scan's columns."""
        self.parts.append((indices, chunk))
        self.points += len(indices)
        self.nbytes += sum(np.asarray(v.data).nbytes for values in chunk.arrays.values()
                           for v in values if v is not None)
        self.nbytes += sum(data.nbytes for data, _ in chunk.scalars.values())

    def forget(self) -> None:
        """Empty the batch's chunk results (see `ChunkResult.forget`) once it is stored."""
        for _, chunk in self.parts:
            chunk.forget()

    def to_shard(self, names: Sequence[str], columns: Mapping[str, np.ndarray],
                 keys: np.ndarray, seeds: np.ndarray, run_id: str,
                 attrs: dict[str, Any]) -> ShardData:
        """One shard holding every point of the batch.

        ``columns``, ``keys`` (``keys.KEY_DTYPE``) and ``seeds`` are the scan's arrays,
        indexed by the positions the chunks were added with: the shard's columns are
        gathered with numpy, not point by point.
        """
        chunks = [chunk for _, chunk in self.parts]
        fail_clashes(names, chunks)
        index = np.concatenate([np.asarray(indices, dtype=np.int64)
                                for indices, _ in self.parts])
        n = len(index)
        done = np.concatenate([c.done for c in chunks])
        sizes = [len(c) for c in chunks]
        bookkeeping = {
            "key": keys[index],
            "status": np.where(done, b"done", b"failed"),
            "error": _failure_text(chunks, 0),
            "traceback": _failure_text(chunks, 1),
            "host": np.repeat(_ascii_or_text([c.host for c in chunks]), sizes),
            "worker": np.repeat(_ascii_or_text([c.worker for c in chunks]), sizes),
            "run": np.repeat(_ascii_or_text([run_id]), n),
            "seed": np.asarray(seeds)[index].astype(np.int64),
            "started": np.concatenate([c.started for c in chunks]),
            "finished": np.concatenate([c.finished for c in chunks]),
        }
        bookkeeping["duration"] = bookkeeping["finished"] - bookkeeping["started"]
        params = {name: column_for(columns[name][index]) for name in names}
        shard = ShardData(n, params, bookkeeping, {}, {}, {}, {}, {}, dict(attrs))
        self._add_scalars(shard, chunks)
        for name, declared in _declared(chunks).items():
            if name in shard.result_attrs:
                shard.result_attrs[name] = {**shard.result_attrs[name], **declared}
            elif name in shard.lengths:  # an own dim: its coordinate's units
                shard.coord_attrs[name] = declared
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


def _declared(chunks: Sequence[ChunkResult]) -> dict[str, dict[str, str]]:
    """Each result's attributes as the chunks declare them, the first declared winning
    (their units agree: see :func:`fail_clashes`)."""
    out: dict[str, dict[str, str]] = {}
    for chunk in chunks:
        for name, attrs in chunk.attrs.items():
            out[name] = joined_attrs(out.get(name, {}), attrs)
    return out


def _declaring(chunk: ChunkResult, name: str) -> list[int]:
    """The points of ``chunk`` that return the result ``name``, or a result whose own
    dim ``name`` has a coordinate with attributes."""
    column = chunk.scalars.get(name)
    if column is not None:
        return np.flatnonzero(column[1]).tolist()
    return sorted({i for values in chunk.arrays.values() for i, v in enumerate(values)
                   if v is not None and (values is chunk.arrays.get(name)
                                         or (v.coord_attrs and name in v.coord_attrs))})


def _ascii_or_text(values: Sequence[str]) -> np.ndarray:
    """A few strings as fixed-width bytes when they are ASCII (cheap to repeat and write),
    else as objects."""
    if all(v.isascii() for v in values):
        return np.array([v.encode("ascii") for v in values], dtype=bytes)
    return np.array(values, dtype=object)


def _failure_text(chunks: Sequence[ChunkResult], which: int) -> np.ndarray:
    """The error (``which=0``) or traceback (1) of each point; empty bytes for the
    points that did not fail, so a batch without failures builds no per-point objects."""
    n = sum(len(c) for c in chunks)
    if not any(c.failures for c in chunks):
        return np.zeros(n, dtype="S1")
    text = np.full(n, "", dtype=object)
    offset = 0
    for chunk in chunks:
        for i, failure in chunk.failures.items():
            text[offset + i] = failure[which]
        offset += len(chunk)
    return text


def fail_clashes(names: Sequence[str], chunks: Sequence[ChunkResult]) -> int:
    """Fail the points whose results one shard cannot hold next to the others'.

    A result may not share its name with a parameter, a bookkeeping variable, or a dim
    (or its ``_length``/``_coord`` variable) of another result in the same shard, and
    keeps the dims and the attributes (units, ...) it first had. Such points become
    failed with the reason; writing them would make the whole flush fail. Returns how
    many points were failed.
    """
    taken = set(names)  # and every name is_reserved() refuses: the store's own
    dims_of: dict[str, tuple[str, ...]] = {}
    for chunk in chunks:
        for name, (_, present) in chunk.scalars.items():
            if present.any():
                dims_of.setdefault(name, ())
        for name, values in chunk.arrays.items():
            first = next((v for v in values if v is not None), None)
            if first is not None:
                dims_of.setdefault(name, first.dims)
    owner = {d: name for name, dims in dims_of.items() for d in derived_names(dims)}

    def problem(name: str, dims: tuple[str, ...]) -> str:
        if name in taken or is_reserved(name):
            return (f"ResultError: the result name {name!r} is also a parameter or a "
                    "reserved name; rename it in the returned dict")
        if name in owner:
            return (f"ResultError: result name {name!r} is also the name the store gives "
                    f"a dim (or its length or coordinate) of result {owner[name]!r} of "
                    "another point; rename one of them")
        clash = next((d for d in dims if d in taken or is_reserved(d)), None)
        if clash is not None:
            return (f"ResultError: result {name!r} has a dim named {clash!r}, which is a "
                    "parameter or a reserved name; rename the dim")
        if dims != dims_of[name]:
            return (f"ResultError: result {name!r} has dims {dims}, but other points "
                    f"returned {dims_of[name]}; return the same dims for every point")
        return ""

    declared: dict[str, dict[str, str]] = {}
    failed = 0
    for chunk in chunks:
        bad: dict[int, str] = {}
        for name, attrs in list(chunk.attrs.items()):
            if not attrs_conflict(declared.get(name, {}), attrs):
                declared[name] = joined_attrs(declared.get(name, {}), attrs)
            else:  # the whole chunk declares other units
                reason = attrs_mismatch(name, attrs, declared[name], "another point")
                bad.update((i, reason) for i in _declaring(chunk, name) if i not in bad)
                del chunk.attrs[name]
        for name, (_, present) in chunk.scalars.items():
            reason = problem(name, ())
            if reason:
                bad.update((int(i), reason) for i in np.flatnonzero(present) if int(i) not in bad)
        for name, values in chunk.arrays.items():
            for i, v in enumerate(values):
                if v is not None and i not in bad:
                    reason = problem(name, v.dims)
                    if reason:
                        bad[i] = reason
        for i, reason in bad.items():
            chunk.fail(i, reason)
        failed += len(bad)
        # a column no point holds any more must not reach the shard (its name clashes)
        for name in [n for n, (_, present) in chunk.scalars.items() if not present.any()]:
            del chunk.scalars[name]
        for name in [n for n, vs in chunk.arrays.items() if all(v is None for v in vs)]:
            del chunk.arrays[name]
    return failed


def point_columns(points: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(points, PointColumns):
        return points.columns
    columns = {}
    for name in names:
        column = np.empty(len(points), dtype=object)
        column[:] = [p[name] for p in points]
        columns[name] = column
    return columns


@dataclass(frozen=True)
class ShardSink:
    """Lets a worker write its chunk into the store itself instead of sending it back.

    Used when the worker sees the store's directory (same host or a shared file system)
    and the chunk's results are big: they then cross no network and no pickling, and
    the shard is written atomically like any other (temporary name, fsync, rename).
    """

    shards_dir: str
    names: tuple[str, ...]
    keys: np.ndarray  # the chunk's keys (``keys.KEY_DTYPE``)
    run_id: str
    attrs: dict[str, Any]
    min_bytes: int
    # the client's host and pid: a worker on that host leaves the fsync and the rename
    # to the client (done while the worker goes on), under a temporary name that
    # carries the client's pid (a cleaner sees it alive as long as the client runs,
    # whichever worker wrote it); a worker elsewhere does them itself. The shard's own
    # name carries the worker's pid, as any shard's names its writer.
    client: tuple[str, int] = ("", 0)

    def write(self, points: Sequence[dict[str, Any]], seeds: Sequence[int],
              chunk: ChunkResult) -> str:
        """Write the chunk as a shard; returns its name, or the name of the temporary file
        holding it (see :func:`~notebookscan.store.shards.published_name`) when the client
        publishes it, or ``""`` when nothing was written."""
        batch = Batch()
        batch.add(np.arange(len(points)), chunk)
        shard = batch.to_shard(self.names, point_columns(points, self.names), self.keys,
                               np.asarray(seeds), self.run_id, self.attrs)
        if Store(os.path.dirname(self.shards_dir)).check_forms(shard):
            return ""  # a result changed form: the client refuses it, nothing is written
        name = new_shard_name()
        host, pid = self.client
        if host and host == socket.gethostname():
            return os.path.basename(
                write_shard_unpublished(self.shards_dir, name, shard, publisher=pid))
        write_shard_atomically(self.shards_dir, name, shard)
        return name
