"""The failures of a run, shown in place: a group per kind of error, a row per point.

Each failed point is a row of its own (a ``<details>``: its parameters; opened, its
parameters, error and traceback) that is made once and never changed, so a traceback
opened in the browser stays open while more failures come in; only a group's count and
the summary line change.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from ._counts import error_group
from ._ui import MUTED_COLOR, format_value

__all__ = ["COLORS", "Failure", "FailureView"]

COLORS = {"done": "#3a923a", "failed": "#d0342c", "running": "#4a90d9", "idle": "#cfd8dc"}
MAX_TRACEBACK = 4000  # characters of a traceback kept
MAX_GROUPS = 20  # error groups shown; further kinds of error are counted only


class Failure:
    """A failed point: its parameters, error, traceback and error group."""

    __slots__ = ("error", "group", "point", "traceback")

    def __init__(self, point: dict[str, Any], error: str, traceback: str) -> None:
        self.point = point
        self.error = error
        self.group = error_group(error)
        self.traceback = traceback[-MAX_TRACEBACK:]

    @property
    def ident(self) -> str:
        return repr(sorted((k, repr(v)) for k, v in self.point.items()))


class FailureView:
    """The summary line (:attr:`summary`) and the groups of rows (:attr:`groups`)."""

    def __init__(self) -> None:
        self.summary = w.HTML()
        self.summary.add_class("nbscan-failures")
        self.groups = w.VBox(layout=w.Layout(max_height="320px", overflow="auto"))
        self.groups.add_class("nbscan-failure-groups")
        self._groups: dict[str, tuple[w.HTML, w.VBox]] = {}
        self._rows: set[str] = set()

    def show(self, failures: list[Failure], counts: dict[str, int], total: int) -> None:
        """Show ``failures`` (rows kept), ``counts`` by group and ``total`` failed."""
        if not total:
            self.summary.value = ""
            self.clear()
            return
        more = total - len(failures)
        tail = (f"<div style='color:{MUTED_COLOR}'>… and {more:,} more: "
                "<code>scan.results().where(lambda d: d.ns_status == 'failed')</code></div>"
                if more > 0 else "")
        kinds = len(counts)
        self.summary.value = (
            f'<div class="nbscan-failure-table" data-count="{total}" data-groups="{kinds}">'
            f'<span style="color:{COLORS["failed"]};font-weight:600">{total:,} failed '
            f'point{"s" if total != 1 else ""}</span> <span style="color:{MUTED_COLOR}">· '
            f'{kinds} kind{"s" if kinds != 1 else ""} of error; click a point for its '
            f"parameters and traceback</span>{tail}</div>")
        if not {f.ident for f in failures} >= self._rows:  # a new run: start again
            self.clear()
        for failure in failures:
            self._add_row(failure)
        for group, (head, _) in self._groups.items():
            head.value = _group_head(group, counts.get(group, 0))

    def clear(self) -> None:
        self._groups.clear()
        self._rows.clear()
        self.groups.children = ()

    def _add_row(self, failure: Failure) -> None:
        """A failed point's row in its group (made once; never changed after)."""
        if failure.ident in self._rows:
            return
        group = self._groups.get(failure.group)
        if group is None:
            if len(self._groups) >= MAX_GROUPS:
                return
            head, rows = w.HTML(), w.VBox(layout=w.Layout(margin="0 0 0 14px"))
            box = w.VBox([head, rows])
            box.add_class("nbscan-failure-group")
            group = self._groups[failure.group] = (head, rows)
            self.groups.children = (*self.groups.children, box)
        self._rows.add(failure.ident)
        row = w.HTML(_point_row(failure))
        row.add_class("nbscan-failed-point")
        group[1].children = (*group[1].children, row)


def _group_head(group: str, count: int) -> str:
    return (f'<div class="nbscan-failure-group-head" data-count="{count}" '
            f'style="margin-top:4px"><code>{html.escape(group)}</code> '
            f'<b style="color:{COLORS["failed"]}">×{count:,}</b></div>')


def _point_row(failure: Failure) -> str:
    """A failed point: its parameters; opened, its parameters, error and traceback."""
    short = ", ".join(f"{html.escape(str(k))}={html.escape(format_value(v))}"
                      for k, v in failure.point.items())
    table = "".join(f"<tr><td style='padding:0 8px 0 0'>{html.escape(str(k))}</td>"
                    f"<td>{html.escape(format_value(v))}</td></tr>"
                    for k, v in failure.point.items())
    trace = (f"<pre style='white-space:pre-wrap;font-size:0.85em;margin:2px 0'>"
             f"{html.escape(failure.traceback)}</pre>") if failure.traceback else ""
    return (f'<details data-point="{html.escape(short)}"><summary style="cursor:pointer">'
            f"{short}</summary><table style='font-size:0.9em;margin:2px 0'>{table}</table>"
            f"<div>{html.escape(failure.error)}</div>{trace}</details>")
