"""One count of a scan's points for every widget, and failures grouped by error.

The app's header, the monitor's progress line and the live plot's count line all show
:func:`point_counts`: the points of the scan's space in its store (done, failed,
missing, of the total), whichever run stored them. Failures are grouped by
:func:`error_group`: the error's first line with the values that vary from point to
point (numbers, quoted text, addresses) replaced, so ``x=3 too big`` and ``x=5 too big``
are one group.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import socket
from typing import Any

import numpy as np

__all__ = ["counts_text", "describe_runner", "error_group", "in_this_process", "point_counts",
           "store_failures", "user_name"]

HOSTNAME = socket.gethostname()

_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![A-Za-z_0-9.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_])")
MAX_GROUP_TEXT = 200


def point_counts(scan: Any, store: Any = None) -> dict[str, int]:
    """Points of ``scan``'s space in its store: ``done``, ``failed``, ``missing``, ``total``.

    ``store``: another :class:`~notebookscan.Store` object of the same directory, for a
    reader in another thread than the scan's run (a Store caches what its index read,
    and a run decides what is new from that cache).
    """
    index = (store if store is not None else scan.store).index()
    if _chooses_points(scan):  # its points are the store's; the goal's number the total
        done, failed = len(index.done_keys), len(index.failed_keys)
        total = max(scan.goal.points or 0, done + failed)
        return {"done": done, "failed": failed, "missing": total - done - failed,
                "total": total}
    keys = scan.space.key_array()
    done = int(index.is_done(keys).sum())
    failed = int(index.is_failed(keys).sum())
    return {"done": done, "failed": failed, "missing": len(keys) - done - failed,
            "total": len(keys)}


def _chooses_points(scan: Any) -> bool:
    """An adaptive scan: its learner chooses the points, its space is only an example."""
    from ..adaptive import AdaptiveScan

    return isinstance(scan, AdaptiveScan)


def counts_text(counts: dict[str, int]) -> str:
    """``"3 done, 1 failed of 10 points"``: the words every widget uses for the counts."""
    total = counts.get("total", 0)
    return (f"{counts.get('done', 0):,} done, {counts.get('failed', 0):,} failed of "
            f"{total:,} point{'s' if total != 1 else ''}")


def error_group(error: str) -> str:
    """The group of an error message: its first line, the varying values replaced.

    Examples
    --------
    >>> error_group("ValueError: x=3 too big") == error_group("ValueError: x=5 too big")
    True
    >>> error_group("KeyError: 'tau' at 0x7f3a9c2b1d30, float64")
    'KeyError: … at 0x…, float64'
    """
    line = (error or "failed").strip().splitlines()[0] if (error or "").strip() else "failed"
    line = _HEX.sub("0x…", line)
    line = _QUOTED.sub("…", line)
    line = _NUMBER.sub("#", line)
    return line[:MAX_GROUP_TEXT]


def store_failures(scan: Any, limit: int, store: Any = None
                   ) -> list[tuple[dict[str, Any], str, str]]:
    """Up to ``limit`` failed points of ``scan``'s space in its store, read from the
    shards: (parameters, error, traceback) each (for runs this process did not start).
    ``store``: as for :func:`point_counts`."""
    table = (store if store is not None else scan.store).table()
    if not len(table):
        return []
    book = table.bookkeeping
    failed = np.asarray(book["status"]).astype(str) == "failed"
    keys = np.asarray(book["key"])
    if not _chooses_points(scan):
        wanted = scan.space.key_array()
        failed &= np.isin(keys.astype(wanted.dtype, copy=False), wanted)
    rows = np.flatnonzero(failed)[:limit]
    names = [n for n in table.names if n in table.params]
    error = book.get("error")
    trace = book.get("traceback")
    return [({n: table.params[n][i].item() if hasattr(table.params[n][i], "item")
              else table.params[n][i] for n in names},
             _text(error[i]) if error is not None else "failed",
             _text(trace[i]) if trace is not None else "") for i in rows]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def describe_runner(runner: str, record: dict[str, Any]) -> dict[str, Any]:
    """What the monitor shows of a runner of the store, from its record (data only: a
    value of the wrong type reads as 0 or empty)."""
    def number(name: str) -> float:
        value = record.get(name)
        return value if type(value) in (int, float) and math.isfinite(value) else 0
    return {"runner": runner, "host": str(record.get("host", "")),
            "pid": record.get("pid") if type(record.get("pid")) is int else None,
            "user": str(record.get("user", "")), "detached": False,
            **{n: int(number(n)) for n in ("done", "failed", "total", "running", "workers")},
            "rate": float(number("rate"))}


def in_this_process(runner: dict[str, Any]) -> bool:
    """True for a runner (as :func:`describe_runner` gives it) of this very process."""
    return runner["pid"] == os.getpid() and runner["host"] == HOSTNAME


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return ""
