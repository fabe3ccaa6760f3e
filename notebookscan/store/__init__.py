"""The result store: a directory of immutable NetCDF-4 shards.

Guarantees
----------
* Every flush writes a new shard under a temporary name and renames it into place, so a
  shard is whole or absent, whatever gets killed; no shard is appended or rewritten.
* What a writer received is appended to its journal (checksummed records, one fsync per
  turn of the loop) before it counts as done; the next run or compaction folds the
  journal of a writer that is gone into a shard. A killed client recomputes at most
  the points that were in flight.
* Writers never collide: a shard's name holds user, host, process id and a random part.
  No lock is needed to write; two processes can scan into one store at once.
* Runs on one store share the work: each leases the keys it computes and beats a
  heartbeat counter (``leases/``, :mod:`.leases`); the others skip leased keys and take
  them over once the runner is dead — its counter unchanged for the ttl on the
  observer's own clock, never comparing two machines' clocks.
* Reading combines all shards and keeps one row per point key (``done`` beats
  ``failed``, then the run that started last in the store, by ordinal, never by
  clock), so overlapping shards — from two writers, a merge, or a compaction killed
  half-way — never show a point twice. Done versions with different values are
  conflicts: reported, kept, and resolved only by :meth:`Store.resolve`.
* A result keeps one form (dims, value family) per store: a run returning another is
  refused before writing it; shards that hold several show each form under its name.
* A read lists the shards again after reading them, until a listing holds nothing it
  has not read: a shard compacted away meanwhile never hides its points.
* Merging two stores is copying shards (and a segmented store's recordings and
  checkpoints) from one directory into the other, fsynced before it returns.
* Compaction writes many shards into one new shard and checks it *before* deleting
  them: at every moment each point is in at least one shard.
* Only regular files the store can parse are read, in bounded time and memory; nothing
  outside the store's directory is written, moved or deleted (links are not followed).
  A file that cannot be read is moved to ``quarantine/`` with the reason, reported by
  name, and the rest loads.
* A store holds data only. Nothing in it is unpickled or executed when it is read.

Modules: :mod:`.schema` (every name the store uses), :mod:`.shards` (one file),
:mod:`.table` (shards combined into one row per point), :mod:`.index` (which keys are
stored), :mod:`.dataset` and :mod:`.lazy` (the labelled Dataset view),
:mod:`.directory` (the :class:`Store`), :mod:`.maintenance` (compaction, verification),
:mod:`.merging`, :mod:`.files` (file operations inside the store's directory) and
:mod:`.leases` (runners sharing a store).
Nothing here imports the scan loop, the executors or the widgets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .dataset import to_grid
from .directory import Store, compact, open_store, verify
from .index import StoreIndex
from .maintenance import CompactReport, VerifyReport
from .schema import Layout

if TYPE_CHECKING:
    from .merging import MergeReport, merge
    from .varying import padded, series

# imported on first use: opening a store needs neither
_LAZY = {"MergeReport": ".merging", "merge": ".merging", "padded": ".varying",
         "series": ".varying"}

__all__ = [
    "CompactReport",
    "Layout",
    "MergeReport",
    "Store",
    "StoreIndex",
    "VerifyReport",
    "compact",
    "merge",
    "open_store",
    "padded",
    "series",
    "to_grid",
    "verify",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
