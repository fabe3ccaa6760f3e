"""Which grid cells the runs of a store scanned: the record that tells ``excluded`` cells
(never part of a scan space) from ``missing`` ones (scanned, no row yet).

A grid-layout space may drop cells (``where``, or unions whose values do not form a
full product). Each run writes, before its first point, a *scan record*: the space's
distinct values per dimension and which cells of their product it holds, as a packed bit
mask (one bit a cell) or, for a sparse space, the cells' indices (4 bytes a dimension
and point), zlib-compressed. Records are data: the space's predicate is never stored and
nothing read is executed. A record is named by the hash of its content, so runs of the
same space share one file and concurrent writers never collide::

    scanned/<32 hex digits>.json

A run's provenance names its record (``"scanned": id``). A reader labels a cell
``excluded`` only when every run that stored points names a record it could read and no
record of the store holds the cell: a cell one run dropped and another scanned is not
excluded (also when that run has stored nothing yet), and stores written before records
existed keep showing ``missing``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import stat
import uuid
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import StoreError, StoreFormatError, StoreWarning
from ..keys import canonical_token, canonical_unique
from .schema import SCANNED

__all__ = ["copy_records", "covered_cells", "read_records", "records_for_runs",
           "space_record", "write_record"]

RECORD_FORMAT = 1
MAX_RECORD_BYTES = 64 * 2**20  # a record bigger than this is not read
MAX_MASK_CELLS = 2**28  # beyond this a mask is not written or read (indices are)
_NAME = re.compile(r"^[0-9a-f]{32}\.json$")


def _unique_positions(column: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Sorted distinct values (float noise merged, as the Dataset's coordinates) and each
    point's position among them."""

    unique, inverse = canonical_unique(np.asarray(column))
    return unique.tolist(), inverse.astype(np.int64, copy=False)


def space_record(dims: Sequence[str], columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The scan record of a grid space given as columns (one value per point and dim).

    Costs one bit per cell of the product of the distinct values, or 4 bytes per point
    and dimension when that is smaller (a sparse union of grids).

    Examples
    --------
    >>> import numpy as np
    >>> r = space_record(["a", "f"], {"a": np.array([0.0, 1.0, 1.0]),
    ...                               "f": np.array([1.0, 1.0, 2.0])})
    >>> r["axes"], r["encoding"]
    ({'a': [0.0, 1.0], 'f': [1.0, 2.0]}, 'mask')
    >>> covered_cells([r], {"a": np.array([0.0, 1.0]), "f": np.array([1.0, 2.0])},
    ...               ["a", "f"]).tolist()
    [[True, False], [True, True]]
    """
    axes: dict[str, list[Any]] = {}
    positions = []
    for dim in dims:
        values, inverse = _unique_positions(columns[dim])
        axes[dim] = values
        positions.append(inverse)
    shape = tuple(len(axes[d]) for d in dims)
    cells = math.prod(shape)
    n = len(positions[0]) if positions else 0
    if cells <= MAX_MASK_CELLS and cells // 8 <= 4 * len(dims) * n:
        mask = np.zeros(cells, dtype=bool)
        if n:
            mask[np.ravel_multi_index(positions, shape)] = True
        encoding, raw, held = "mask", np.packbits(mask).tobytes(), mask.reshape(shape)
    else:
        held = np.stack(positions).astype("<u4")
        encoding, raw = "cells", held.tobytes()
    # "_cells": the decoded cells, as read_records gives them (never written)
    return {"format": RECORD_FORMAT, "dims": list(dims), "axes": axes, "points": n,
            "encoding": encoding,
            "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii"), "_cells": held}


def _stored(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def record_id(record: Mapping[str, Any]) -> str:
    """The name a record is stored under: a hash of its content."""
    text = json.dumps(_stored(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def write_record(store_path: str, record: Mapping[str, Any]) -> str:
    """Write ``record`` into the store's ``scanned/`` directory (atomically, once) and
    return its id."""
    rid = record_id(record)
    directory = os.path.join(store_path, SCANNED)
    if os.path.islink(directory):
        raise StoreError(f"{directory} is a symbolic link; a store writes only inside its own "
                         "directory. Remove the link and run again.")
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{rid}.json")
    if os.path.isfile(final) and not os.path.islink(final):
        return rid  # the same space was recorded before
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(_stored(record), f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return rid


def _read_regular(path: str) -> bytes | None:
    """The bytes of a regular file (no symlink, FIFO or device), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        return f.read(MAX_RECORD_BYTES + 1)


def _decode(rid: str, text: bytes) -> dict[str, Any]:
    """A record checked for shape and size; raises ValueError when it is not one."""
    record = json.loads(text)
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise StoreFormatError("not a scan record of a known format")
    dims, axes = record.get("dims"), record.get("axes")
    if (not isinstance(dims, list) or not isinstance(axes, dict)
            or sorted(map(str, dims)) != sorted(map(str, axes))):
        raise StoreFormatError("its dims and axes do not match")
    for dim in dims:
        values = axes[dim]
        if not isinstance(values, list) or not all(
                type(v) in (int, float, str, bool) for v in values):
            raise StoreFormatError(f"the values of {dim!r} are not a list of scalars")
    shape = tuple(len(axes[d]) for d in dims)
    cells, points = math.prod(shape), record.get("points")
    if type(points) is not int or points < 0:
        raise StoreFormatError("its point count is not a whole number")
    if record.get("encoding") == "mask":
        if cells > MAX_MASK_CELLS:
            raise StoreFormatError(f"its mask has {cells} cells, more than {MAX_MASK_CELLS}")
        expected = (cells + 7) // 8
    elif record.get("encoding") == "cells":
        expected = 4 * len(dims) * points
    else:
        raise StoreFormatError("unknown encoding")
    inflate = zlib.decompressobj()
    raw = inflate.decompress(base64.b64decode(str(record.get("data", "")), validate=True),
                             expected + 1)
    if len(raw) != expected or inflate.unconsumed_tail:
        raise StoreFormatError("its data does not have the size its axes give")
    if record["encoding"] == "mask":
        record["_cells"] = np.unpackbits(np.frombuffer(raw, np.uint8), count=cells)\
            .astype(bool).reshape(shape)
    else:
        index = np.frombuffer(raw, "<u4").reshape(len(dims), points)
        if points and any(int(index[i].max()) >= shape[i] for i in range(len(dims))):
            raise StoreFormatError("a cell index lies outside its axes")
        record["_cells"] = index
    record["_id"] = rid
    return record


def read_records(store_path: str) -> dict[str, dict[str, Any]]:
    """The store's scan records by id; unreadable ones are reported and skipped."""
    directory = os.path.join(store_path, SCANNED)
    if os.path.islink(directory):
        return {}
    try:
        names = sorted(n for n in os.listdir(directory) if _NAME.match(n))
    except OSError:
        return {}
    records = {}
    for name in names:
        rid = name[:-len(".json")]
        text = _read_regular(os.path.join(directory, name))
        try:
            if text is None:
                raise StoreFormatError("it is not a regular file of at most 64 MiB")
            records[rid] = _decode(rid, text)
        except (ValueError, TypeError, zlib.error, KeyError) as exc:
            warnings.warn(f"scan record {SCANNED}/{name} of the store {store_path} cannot be "
                          f"read ({exc}); cells it may cover are shown as missing",
                          StoreWarning, stacklevel=3)
    return records


def records_for_runs(store_path: str, runs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Every scan record of the store, or None when some run that stored points names
    no record (a run of an earlier version, a segmented scan) or one that cannot be read:
    then no cell can be called excluded.

    Records of runs that stored nothing yet (just started, or killed before their first
    shard) count too: their cells are missing, not excluded."""
    if not runs:
        return None
    wanted = set()
    for record in runs.values():
        rid = record.get("scanned") if isinstance(record, dict) else None
        if not isinstance(rid, str):
            return None
        wanted.add(rid)
    records = read_records(store_path)
    if not wanted <= set(records):
        return None
    return [records[rid] for rid in sorted(records)]


def copy_records(source_path: str, dest_path: str) -> int:
    """Copy the scan records of one store into another (merging); returns how many.

    Records are read and written again, never copied as files: only what parses as a
    record reaches the destination, under the hash of its content."""
    records = read_records(source_path)
    for record in records.values():
        write_record(dest_path, record)
    return len(records)


def _positions(values: Sequence[Any], coord: np.ndarray) -> np.ndarray:
    """Index of each value in ``coord`` (-1 where absent), compared as canonical tokens."""
    as_text = coord.dtype.kind in "OUS"
    index = {canonical_token(v): i for i, v in enumerate(coord.tolist())}
    return np.array([index.get(canonical_token(str(v) if as_text else v), -1)
                     for v in values], dtype=np.int64)


def covered_cells(records: Sequence[Mapping[str, Any]], coords: Mapping[str, np.ndarray],
                  dims: Sequence[str]) -> np.ndarray:
    """A bool per cell of the grid ``coords`` (over ``dims``): does a record hold it?"""
    shape = tuple(len(coords[d]) for d in dims)
    covered = np.zeros(shape, dtype=bool)
    for record in records:
        if sorted(record["dims"]) != sorted(dims):
            continue
        order = [record["dims"].index(d) for d in dims]
        pos = [_positions(record["axes"][d], np.asarray(coords[d])) for d in dims]
        cells = record["_cells"]
        if record["encoding"] == "mask":
            block = cells.transpose(order)
            keep = [np.flatnonzero(p >= 0) for p in pos]
            block = block[np.ix_(*keep)]
            target = np.ix_(*[p[k] for p, k in zip(pos, keep, strict=True)])
            covered[target] |= block
        else:
            at = [p[cells[i]] for p, i in zip(pos, order, strict=True)]
            inside = np.logical_and.reduce([a >= 0 for a in at]) if at else np.array([])
            covered[tuple(a[inside] for a in at)] = True
    return covered
