"""Merging stores: copying one store's shards into another."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from .attrs import merge_attrs
from .checkpoints import copy_checkpoints
from .directory import Store, existing_store
from .files import ForeignFile, copy_into
from .scanned import copy_records
from .schema import SEGMENTS_DIR, SHARDS, Layout
from .table import Conflict
from .versions import adopt_runs

__all__ = ["MergeReport", "merge"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.nc$")


@dataclass
class MergeReport:
    """What :func:`merge` did: shards copied, and points stored as done with different
    values (both versions kept; see :meth:`Store.resolve`)."""

    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # keys whose values differ
    details: list[Conflict] = field(default_factory=list)  # each conflict, with its runs
    #: a segmented store's parts: its recordings (a store of their own) and checkpoints
    recordings: MergeReport | None = None
    checkpoints_copied: list[str] = field(default_factory=list)
    checkpoints_present: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"merged {len(self.copied)} shard(s), {len(self.already_present)} already "
                f"present, {len(self.conflicts)} conflicting point(s)")
        if self.details:
            text += (" (both versions of each are kept; a read shows the one of the run "
                     "merged or started last; pick one with Store(dest).resolve(keep=run)): "
                     + "; ".join(str(c) for c in self.details[:5])
                     + ("…" if len(self.details) > 5 else ""))
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
        self.details += other.details


def merge(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
          dest: str | os.PathLike[str]) -> MergeReport:
    """Copy the shards of one or more stores into ``dest``.

    This is all merging takes: shard names never collide, and reading de-duplicates
    points by key. The runs of each source join ``dest``'s run order after its own (in
    the order of ``sources``), so a read shows the version merged last, whatever the
    clocks of the machines that computed them. Points held by both with different
    values are conflicts: listed in the report, both versions kept in the shards until
    :meth:`Store.resolve` picks one.

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
            merge_attrs(target, meta)  # units agree, or nothing is copied
        else:
            os.makedirs(target.shards_dir, exist_ok=True)
        files, foreign = source._listing()  # the source is only read: nothing is moved
        for name, reason in foreign.items():
            raise StoreError(f"refusing to copy {os.path.join(source.shards_dir, name)}: it "
                             f"is {reason}, and a store holds only its own regular files. "
                             "Move it out of the source store and merge again.")
        # the source's runs get their places in dest's order before its shards arrive
        adopt_runs(target, source, _run_ids(source))
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
        copy_records(source.path, target.path)  # so the merged runs' cells stay labelled
        if os.path.isdir(os.path.join(source.path, SEGMENTS_DIR, SHARDS)):
            _merge_segment_parts(source.path, target.path, report)
    report.details = target.conflicts()
    report.conflicts = list(dict.fromkeys(c.key for c in report.details))
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


def _run_ids(store: Store) -> set[str]:
    """The run ids of a store's rows (reads the ``run`` columns only)."""
    ids: set[str] = set()
    for shard in store._read_all(None, ["status", "run"], text_as_bytes=True):
        column = shard.bookkeeping.get("run")
        if column is not None:
            ids.update(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                       for v in np.unique(column).tolist())
    return ids
