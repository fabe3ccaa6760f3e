"""Merging stores: copying one store's shards into another."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import StoreError
from .checkpoints import copy_checkpoints
from .directory import Store, existing_store
from .ragged import row_fingerprint
from .schema import SEGMENTS_DIR, SHARDS, Layout

__all__ = ["MergeReport", "merge"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.nc$")


@dataclass
class MergeReport:
    """What :func:`merge` did: shards copied, and points stored differently in both."""

    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # keys whose values differ
    #: a segmented store's parts: its recordings (a store of their own) and checkpoints
    recordings: MergeReport | None = None
    checkpoints_copied: list[str] = field(default_factory=list)
    checkpoints_present: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"merged {len(self.copied)} shard(s), {len(self.already_present)} already "
                f"present, {len(self.conflicts)} conflicting point(s)")
        if self.conflicts:
            text += " (kept the newest done result of each; keys: " + \
                ", ".join(self.conflicts[:5]) + ("…" if len(self.conflicts) > 5 else "") + ")"
        if self.recordings is not None:
            text += (f"; recordings: {len(self.recordings.copied)} shard(s) copied; "
                     f"{len(self.checkpoints_copied)} checkpoint(s) copied "
                     f"({len(self.checkpoints_present)} already present)")
        return text

    def add(self, other: MergeReport) -> None:
        """Add what another merge did (of more sources, or of recordings) to this report."""
        self.copied += other.copied
        self.already_present += other.already_present
        self.conflicts += other.conflicts



def merge(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
          dest: str | os.PathLike[str]) -> MergeReport:
    """Copy the shards of one or more stores into ``dest``.

    This is all merging takes: shard names never collide, and reading de-duplicates
    points by key. The report lists points held by both with different results
    (e.g. computed with different code); the newest ``done`` result is shown.

    A segmented store is merged whole: its points, its recordings (``segments/``) and
    its checkpoints (each copied atomically; one present in both stores is kept).
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
        for name in source.shard_files():
            if not _SAFE_NAME.match(name):
                raise StoreError(f"refusing to copy the shard name {name!r}: not a plain file name")
            origin = os.path.join(source.shards_dir, name)
            if os.path.islink(origin):
                raise StoreError(f"refusing to copy {origin}: it is a symbolic link, and a store "
                                 "holds only its own files")
            destination = os.path.join(target.shards_dir, name)
            if os.path.exists(destination):
                report.already_present.append(name)
                continue
            tmp = os.path.join(target.shards_dir, f".tmp-merge-{uuid.uuid4().hex}")
            shutil.copyfile(origin, tmp)
            os.replace(tmp, destination)
            report.copied.append(name)
        after = _values_by_key(source)
        report.conflicts.extend(
            key for key, value in after.items() if key in before and before[key] != value
        )
        if os.path.isdir(os.path.join(source.path, SEGMENTS_DIR, SHARDS)):
            _merge_segment_parts(source.path, target.path, report)
    return report


def _merge_segment_parts(source: str, dest: str, report: MergeReport) -> None:
    """Merge a segmented store's recordings and checkpoints (its points are merged)."""
    if report.recordings is None:
        report.recordings = MergeReport()
    report.recordings.add(merge(os.path.join(source, SEGMENTS_DIR),
                                os.path.join(dest, SEGMENTS_DIR)))
    copied, present = copy_checkpoints(source, dest)
    report.checkpoints_copied += copied
    report.checkpoints_present += present


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
        out[key] = tuple(row_fingerprint(table.results[n], i) for n in sorted(table.results))
    return out
