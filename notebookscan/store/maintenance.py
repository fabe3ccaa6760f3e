"""Keeping a store in shape: compaction, verification, leftovers of dead writers.

Every function here takes a :class:`~notebookscan.store.directory.Store` and acts only
inside its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .files import exclusive_lock, pid_alive
from .schema import LOCK_FILE
from .shards import ShardData, ShardVanished, _clean, read_shard
from .table import Table, combine_shards

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["CompactReport", "VerifyReport", "compact_store", "verify_store"]

SMALL_SHARD = 16 * 2**20  # shards up to this size are worth compacting
COMPACT_MEMORY = 32 * 2**20  # shard data read per compaction pass (the pass needs ~2x)


@dataclass
class CompactReport:
    """What :func:`compact` did."""

    shards_before: int = 0
    shards_after: int = 0
    points: int = 0
    removed_temporary: int = 0
    folded: int = 0  # points folded in from the journals of dead writers
    skipped: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"compaction skipped: {self.skipped}"
        return (f"compacted {self.shards_before} shard(s) into {self.shards_after}, "
                f"{self.points} point(s)")


@dataclass
class VerifyReport:
    """What :func:`verify` found: readable shards and corrupt ones (with reasons)."""

    ok: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    points: int = 0

    @property
    def healthy(self) -> bool:
        return not self.corrupt

    def __str__(self) -> str:
        text = f"{len(self.ok)} shard(s) ok, {self.points} point(s)"
        for name, reason in self.corrupt.items():
            text += f"\ncorrupt: {name}: {reason}"
        return text



def compact_store(store: Store, *, max_shard_bytes: int = SMALL_SHARD,
            max_total_bytes: int = 512 * 2**20,
            max_memory_bytes: int = COMPACT_MEMORY) -> CompactReport:
    """Rewrite the small shards into as few as possible (see :func:`compact`).

    Big shards stay as they are: reading them costs the same in one file or many.
    Each pass reads shards until they hold ``max_memory_bytes`` in memory, so
    compacting a million points needs no more memory than a fraction of them.
    """
    report = CompactReport()
    if not store.exists:
        report.skipped = "the store has no shards"
        return report
    with exclusive_lock(os.path.join(store.path, LOCK_FILE)) as locked:
        if not locked:
            report.skipped = "another process is compacting this store"
            return report
        report.removed_temporary = remove_dead_temporaries(store)
        from .journal import fold_journals  # journal.py builds on this module

        report.folded = fold_journals(store)
        files = store.shard_files()
        report.shards_before = len(files)
        candidates, total = [], 0
        for name in files:
            try:
                size = os.path.getsize(os.path.join(store.shards_dir, name))
            except FileNotFoundError:
                continue
            if size <= max_shard_bytes and total + size <= max_total_bytes:
                candidates.append(name)
                total += size
        while len(candidates) >= 2:
            done = _compact_pass(store, candidates, max_memory_bytes)
            report.points += done
            if not done:
                break
        if not report.points:
            report.skipped = "nothing to compact"
        report.shards_after = len(store.shard_files())
        store._index_cache.clear()
    return report

def _compact_pass(store: Store, candidates: list[str], max_memory_bytes: int) -> int:
    """Combine shards from the front of ``candidates`` (removed from it) into one,
    reading them until they hold ``max_memory_bytes``; returns the points written."""
    shards, chosen, held = [], [], 0
    while candidates and (len(chosen) < 2 or held < max_memory_bytes):
        name = candidates.pop(0)
        try:
            # text as bytes: a million points' bookkeeping as Python strings is ~0.5 GB
            shard = store.read_shard(name, text_as_bytes=True)
        except ShardVanished:
            continue
        if shard is not None:
            shards.append(shard)
            chosen.append(name)
            held += shard.nbytes
    if len(chosen) < 2:
        return 0
    table = combine_shards(shards, store.metadata().get("names"), consume=True)
    del shards
    store.write(table_to_shard(table))
    for name in chosen:  # only after the compacted shard is safely in place
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(store.shards_dir, name))
    return len(table)

def remove_dead_temporaries(store: Store) -> int:
    """Delete ``.tmp-*`` files left by writers of this host that no longer run."""
    removed = 0
    host = _clean(socket.gethostname())
    for name in os.listdir(store.shards_dir):
        if not name.startswith(".tmp-"):
            continue
        parts = name[len(".tmp-"):].split(".")
        if len(parts) < 4 or parts[1] != host:
            continue
        try:
            pid = int(parts[2])
        except ValueError:
            continue
        if not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store.shards_dir, name))
                removed += 1
    return removed

def verify_store(store: Store) -> VerifyReport:
    """Open every shard and report the ones that cannot be read (nothing is moved)."""
    report = VerifyReport()
    for name in store.shard_files():
        path = os.path.join(store.shards_dir, name)
        try:
            shard = read_shard(path)
            if "key" not in shard.bookkeeping or "status" not in shard.bookkeeping:
                raise KeyError("no key/status variables")
        except FileNotFoundError:
            continue
        except Exception as exc:
            report.corrupt[name] = f"{type(exc).__name__}: {exc}"
            continue
        report.ok.append(name)
        report.points += shard.n
    return report



def table_to_shard(table: Table) -> ShardData:
    """A combined table as one shard (used by compaction)."""
    result_attrs = {
        name: {k: v for k, v in attrs.items() if k != "notebookscan_role"}
        for name, attrs in table.result_attrs.items()
    }
    return ShardData(
        len(table), dict(table.params), dict(table.bookkeeping), dict(table.results),
        dict(table.result_dims), result_attrs, dict(table.lengths), dict(table.coords),
        {"provenance": json.dumps(table.runs, sort_keys=True)},
    )


