"""Merging segmented stores: :func:`notebookscan.merge` merges them whole.

A segmented store is a plain store (``shards/``) plus a second plain store for the
per-segment recordings (``segments/shards/``) plus checkpoint directories;
:func:`notebookscan.merge` copies all three. :func:`merge_segmented` is the same call,
refusing a source that is not segmented.

Examples
--------
Merging the stores of two machines (a shown example, not run by the doctests):

.. code-block:: python

    import notebookscan as ns
    print(ns.merge(["run-laptop", "run-cluster"], "all"))
    # merged 2 shard(s), 0 already present, 0 conflicting point(s); recordings: 14 shard(s)
    # copied; 6 checkpoint(s) copied (0 already present)
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import StoreError
from ..store.merging import MergeReport, merge
from ..store.schema import SEGMENTS_DIR, SHARDS

__all__ = ["SegmentedMergeReport", "merge_segmented"]

#: What :func:`merge_segmented` returns (the report of :func:`notebookscan.merge`).
SegmentedMergeReport = MergeReport


def merge_segmented(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                    dest: str | os.PathLike[str]) -> MergeReport:
    """Copy one or more segmented stores into ``dest``: :func:`notebookscan.merge`,
    refusing a source that is not segmented.

    Points' rows and recordings are merged like any store (reading de-duplicates by key);
    checkpoint directories missing from ``dest`` are copied atomically (temporary name,
    fsync, rename). A scan on ``dest`` then continues every point from the newest
    checkpoint either store had.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    for source in sources:
        root = os.path.abspath(os.fspath(source))
        if not os.path.isdir(os.path.join(root, SEGMENTS_DIR, SHARDS)):
            raise StoreError(f"{root!r} is not a segmented store (no segments/shards in it); "
                             "use notebookscan.merge for plain stores")
    return merge(sources, dest)
