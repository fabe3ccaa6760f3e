"""The result store: a directory of immutable NetCDF-4 shards.

Guarantees
----------
* Every flush writes a new shard under a temporary name and renames it into place, so a
  shard is whole or absent, whatever gets killed. No file is appended or rewritten.
* Writers never collide: a shard's name holds user, host, process id and a random part.
  No lock is needed to write; two processes can scan into one store at once.
* Reading combines all shards and keeps one row per point key (``done`` beats
  ``failed``), so overlapping shards — from two writers, a merge, or a compaction
  killed half-way — never show a point twice.
* Merging two stores is copying shards from one directory into the other.
* Compaction writes many shards into one new shard *before* deleting them: at every
  moment each point is in at least one shard.
* A shard that cannot be read is moved to ``quarantine/`` with the reason, reported by
  name, and the rest loads.
* A store holds data only. Nothing in it is unpickled or executed when it is read.

Modules: :mod:`.schema` (every name the store uses), :mod:`.shards` (one file),
:mod:`.table` (shards combined into one row per point), :mod:`.index` (which keys are
stored), :mod:`.dataset` and :mod:`.lazy` (the labelled Dataset view),
:mod:`.directory` (the :class:`Store`), :mod:`.maintenance` (compaction, verification),
:mod:`.merging` and :mod:`.files` (file operations inside the store's directory).
Nothing here imports the scan loop, the executors or the widgets.
"""

from __future__ import annotations

from .dataset import padded, series, to_grid
from .directory import Store, compact, open_store, verify
from .index import StoreIndex
from .maintenance import CompactReport, VerifyReport
from .merging import MergeReport, merge
from .schema import Layout

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
