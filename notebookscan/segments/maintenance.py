"""Merging segmented stores: copy shards, recordings and checkpoints, never overwrite.

A segmented store is a plain store (``shards/``) plus a second plain store for the
per-segment recordings (``segments/shards/``) plus checkpoint directories. Merging
copies all three; names never collide, and a checkpoint present in both stores is the
same state (segments are deterministic), so the one already there is kept.

Examples
--------
Merging the stores of two machines (a shown example, not run by the doctests):

.. code-block:: python

    from notebookscan.segments import merge_segmented
    print(merge_segmented(["run-laptop", "run-cluster"], "all"))
    # merged 2 shard(s) of points, 14 of recordings, 6 checkpoint(s) (0 already present)
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import StoreError
from ..store import MergeReport, merge
from ..store.shards import fsync_directory

__all__ = ["SegmentedMergeReport", "merge_segmented"]


@dataclass
class SegmentedMergeReport:
    """What :func:`merge_segmented` did."""

    points: MergeReport = field(default_factory=MergeReport)
    recordings: MergeReport = field(default_factory=MergeReport)
    checkpoints_copied: list[str] = field(default_factory=list)
    checkpoints_present: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"merged {len(self.points.copied)} shard(s) of points, "
                f"{len(self.recordings.copied)} of recordings, {len(self.checkpoints_copied)} "
                f"checkpoint(s) ({len(self.checkpoints_present)} already present)")


def _copy_checkpoint(source: str, parent: str, name: str) -> None:
    tmp = os.path.join(parent, f".tmp-merge-{uuid.uuid4().hex}")
    try:
        shutil.copytree(source, tmp, symlinks=True)
        for directory, dirs, files in os.walk(tmp):
            for entry in (*dirs, *files):
                if os.path.islink(os.path.join(directory, entry)):
                    raise StoreError(f"refusing to copy {source}: it holds the symbolic link "
                                     f"{entry!r}; a store holds only its own files")
            for entry in files:
                with open(os.path.join(directory, entry), "rb") as f:
                    os.fsync(f.fileno())
            fsync_directory(directory)
        os.rename(tmp, os.path.join(parent, name))
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_directory(parent)


def merge_segmented(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                    dest: str | os.PathLike[str]) -> SegmentedMergeReport:
    """Copy one or more segmented stores into ``dest`` (created if needed).

    Points' rows and recordings are merged like :func:`notebookscan.merge` (reading
    de-duplicates by key); checkpoint directories missing from ``dest`` are copied
    atomically (temporary name, fsync, rename). A scan on ``dest`` then continues every
    point from the newest checkpoint either store had.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    report = SegmentedMergeReport()
    dest_root = os.path.abspath(os.fspath(dest))
    for source in sources:
        root = os.path.abspath(os.fspath(source))
        if not os.path.isdir(os.path.join(root, "segments", "shards")):
            raise StoreError(f"{root!r} is not a segmented store (no segments/shards in it); "
                             "use notebookscan.merge for plain stores")
        part = merge(root, dest_root)
        report.points.copied += part.copied
        report.points.already_present += part.already_present
        report.points.conflicts += part.conflicts
        part = merge(os.path.join(root, "segments"), os.path.join(dest_root, "segments"))
        report.recordings.copied += part.copied
        report.recordings.already_present += part.already_present
        report.recordings.conflicts += part.conflicts
        origin = os.path.join(root, "segments", "checkpoints")
        target = os.path.join(dest_root, "segments", "checkpoints")
        if not os.path.isdir(origin):
            continue
        for key in sorted(os.listdir(origin)):
            for link in sorted(os.listdir(os.path.join(origin, key))):
                if not link.startswith("link-"):
                    continue
                parent = os.path.join(target, key, link)
                for name in sorted(os.listdir(os.path.join(origin, key, link))):
                    if not name.startswith("after-"):
                        continue
                    label = f"{key}/{link}/{name}"
                    if os.path.exists(os.path.join(parent, name)):
                        report.checkpoints_present.append(label)
                        continue
                    os.makedirs(parent, exist_ok=True)
                    _copy_checkpoint(os.path.join(origin, key, link, name), parent, name)
                    report.checkpoints_copied.append(label)
    return report
