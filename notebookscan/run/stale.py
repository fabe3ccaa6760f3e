"""Stored results that came from other code than the function scanned now.

A point's key depends on its parameters only, so after the model is edited a run reuses
every stored point. Each run's provenance holds the function's source hash, and each
point the id of the run that stored it: the points whose shown version was stored by a
run with another source hash came from other code. :meth:`Scan.run` reports them and
lets the user choose (``stale="reuse"``, ``"recompute"`` or ``"error"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ScanError
from ..keys import KEY_DTYPE
from .provenance import function_identity

__all__ = ["STALE_CHOICES", "StaleReport", "check_stale_choice", "find_stale"]

#: What ``Scan.run(stale=...)`` accepts (``None``: reuse, with a warning).
STALE_CHOICES = ("reuse", "recompute", "error")


@dataclass
class StaleReport:
    """Stored done points of a space that other code computed.

    Attributes
    ----------
    count
        How many points of the space are stored as done by a run whose function source
        differs from the current one.
    other_function
        How many of them a function of another name (or module) computed.
    functions
        ``module:name`` of the functions that computed them.
    latest
        When the latest of those runs started (its provenance's ``created``).
    keys
        Their keys (20-byte ASCII).
    """

    count: int = 0
    other_function: int = 0
    functions: list[str] = field(default_factory=list)
    latest: str = ""
    current: str = ""
    runs: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=KEY_DTYPE))

    def __bool__(self) -> bool:
        return self.count > 0

    def message(self) -> str:
        """One sentence for a warning, the command line or the widgets."""
        if not self.count:
            return ""
        text = (f"{self.count} stored point(s) came from other code than {self.current} "
                f"has now (stored by {self.runs} run(s) with another source, the latest "
                f"started {self.latest or 'at an unknown time'})")
        if self.other_function:
            text += (f"; {self.other_function} of them were computed by another function "
                     f"({', '.join(self.functions)}): this store seems to hold another model")
        return text + "."


def check_stale_choice(stale: str | None) -> None:
    """Raise ScanError unless ``stale`` is None or one of :data:`STALE_CHOICES`."""
    if stale is not None and stale not in STALE_CHOICES:
        raise ScanError(f"stale must be one of {', '.join(map(repr, STALE_CHOICES))} (or None: "
                        f"reuse with a warning), got {stale!r}")


def _name(record: dict[str, Any]) -> str:
    return f"{record.get('module') or '?'}:{record.get('function') or '?'}"


def find_stale(store: Any, function: Callable[..., Any], keys: np.ndarray) -> StaleReport:
    """Which of ``keys`` the store shows as done from runs of other code than ``function``.

    Reads the runs' provenance (shard attributes) first, and the per-point ``key``,
    ``status`` and ``run`` columns only when some run used other code.
    The version of a point looked at is the one every reader shows.
    """
    from ..store.index import sorted_isin
    from ..store.table import combine_shards

    current = function_identity(function)
    report = StaleReport(current=f"{current['module'] or '?'}:{current['function']}")
    runs = {rid: rec for rid, rec in store.runs().items() if isinstance(rec, dict)}
    other = {rid: rec for rid, rec in runs.items()
             if rec.get("source_sha256") != current["source_sha256"]}
    if not other:
        return report
    shards = store._read_all(None, ["status", "run"], text_as_bytes=True)
    # the version every reader shows: the store's run order decides (see store.versions)
    table = combine_shards(shards, (), rules=store.read_rules())
    status = table.bookkeeping.get("status")
    run = table.bookkeeping.get("run")
    if status is None or run is None or not len(status):
        return report
    done = status == (b"done" if status.dtype.kind == "S" else "done")
    # a few distinct run ids: test those, not every row's text
    ids, which = np.unique(run, return_inverse=True)
    names = [i.decode("ascii", "replace") if isinstance(i, bytes) else str(i)
             for i in ids.tolist()]
    from_other = np.array([n in other for n in names], dtype=bool)[which.reshape(-1)]
    stale = done & from_other
    rows = np.flatnonzero(stale)
    stale[rows] = sorted_isin(table.bookkeeping["key"][rows].astype(KEY_DTYPE), np.sort(keys))
    if not stale.any():
        return report
    per_run = np.bincount(which.reshape(-1)[stale], minlength=len(names))
    used = [n for n, count in zip(names, per_run.tolist(), strict=True) if count]
    # another function name (not module: a file imported under two names is one model)
    renamed = {rid for rid in used if other[rid].get("function") != current["function"]}
    report.count = int(stale.sum())
    report.other_function = int(sum(c for n, c in zip(names, per_run.tolist(), strict=True)
                                    if n in renamed))
    report.functions = sorted({_name(other[rid]) for rid in renamed})
    report.runs = len(used)
    report.latest = max((str(other[rid].get("created", "")) for rid in used), default="")
    report.keys = table.bookkeeping["key"][stale].astype(KEY_DTYPE)
    return report
