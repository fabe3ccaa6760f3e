"""Merging stores: copying one store's shards into another."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from .directory import Store, existing_store
from .files import ForeignFile, copy_into
from .schema import Layout

__all__ = ["MergeReport", "merge"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.nc$")


@dataclass
class MergeReport:
    """What :func:`merge` did: shards copied, and points stored differently in both."""

    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # keys whose values differ

    def __str__(self) -> str:
        text = (f"merged {len(self.copied)} shard(s), {len(self.already_present)} already "
                f"present, {len(self.conflicts)} conflicting point(s)")
        if self.conflicts:
            text += " (kept the newest done result of each; keys: " + \
                ", ".join(self.conflicts[:5]) + ("…" if len(self.conflicts) > 5 else "") + ")"
        return text



def merge(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
          dest: str | os.PathLike[str]) -> MergeReport:
    """Copy the shards of one or more stores into ``dest``.

    This is all merging takes: shard names never collide, and reading de-duplicates
    points by key. The report lists points held by both with different results
    (e.g. computed with different code); the newest ``done`` result is shown.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    target = Store(dest)
    report = MergeReport()
    for source_path in sources:
        source = existing_store(source_path)
        meta = source.metadata()
        if meta:
            target.prepare(Layout.from_json(meta["layout"]), meta.get("names", []))
        else:
            os.makedirs(target.shards_dir, exist_ok=True)
        before = _values_by_key(target)
        files, foreign = source._listing()  # the source is only read: nothing is moved
        for name, reason in foreign.items():
            raise StoreError(f"refusing to copy {os.path.join(source.shards_dir, name)}: it "
                             f"is {reason}, and a store holds only its own regular files. "
                             "Move it out of the source store and merge again.")
        for name in files:
            if not _SAFE_NAME.match(name):
                raise StoreError(f"refusing to copy the shard name {name!r}: not a plain file name")
            origin = os.path.join(source.shards_dir, name)
            try:
                # a regular file only, copied, fsynced and renamed into place, then the
                # directory fsynced: the report's shards are on disk when merge returns
                copied = copy_into(origin, target.shards_dir, name)
            except ForeignFile as exc:
                raise StoreError(f"refusing to copy {origin}: it is {exc.strerror}, and a "
                                 "store holds only its own regular files") from None
            except FileNotFoundError:
                continue  # compacted away in the source meanwhile: its points are copied too
            (report.copied if copied else report.already_present).append(name)
        after = _values_by_key(source)
        report.conflicts.extend(
            key for key, value in after.items() if key in before and before[key] != value
        )
    return report


def _values_by_key(store: Store) -> dict[str, tuple]:
    """A comparable fingerprint of each done point's results (for merge conflicts)."""
    if not store.shard_files():
        return {}
    table = store.table()
    status = table.bookkeeping.get("status")
    out = {}
    for i, key in enumerate(table.bookkeeping["key"].tolist()):
        if status is not None and status[i] != "done":
            continue
        out[key] = tuple(np.asarray(table.results[n][i]).tobytes() for n in sorted(table.results))
    return out
