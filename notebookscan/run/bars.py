"""Progress bars of a run, fed by its events.

In a Jupyter kernel with ipywidgets the bar is a ``tqdm.notebook`` widget: it shows in
the cell that started the run and is updated there (widget messages), so nothing of it
spills into the cells run later. In a kernel without ipywidgets a text line is updated
in place in that cell (a display with an id). Elsewhere (a terminal, a script) it is
tqdm's text bar on stderr, as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .events import Events

__all__ = ["execution_count", "feed_bar", "in_kernel", "make_bar", "progress_bar"]


def in_kernel() -> bool:
    """True in a Jupyter kernel (an IPython shell that has a kernel, already imported)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def execution_count() -> int | None:
    """The number of the cell running now in a kernel, else None."""
    if not in_kernel():
        return None
    return sys.modules["IPython"].get_ipython().execution_count


class _DisplayLine:
    """A file for tqdm's text bar that rewrites one display of the current cell."""

    def __init__(self) -> None:
        from IPython.display import Pretty, display

        self._pretty = Pretty
        self._handle = display(Pretty(""), display_id=True)

    def write(self, text: str) -> None:
        line = text.rstrip("\r\n").split("\r")[-1].strip()
        if line:
            self._handle.update(self._pretty(line))

    def flush(self) -> None:
        pass


def _has_widgets() -> bool:
    """True when ipywidgets imports (what tqdm.notebook draws its bar with)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def make_bar(**options: Any) -> Any:
    """A tqdm bar fitting where this runs: a notebook widget, a line updated in its
    cell, or text on stderr (see the module's docstring)."""
    if in_kernel() and _has_widgets():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**options)
    from tqdm.std import tqdm

    if in_kernel():
        return tqdm(file=_DisplayLine(), ascii=True, ncols=100, **options)
    return tqdm(dynamic_ncols=True, **options)


def progress_bar(events: Events) -> Any:
    """A progress bar of points, fed by the scan's events (see :func:`make_bar`)."""
    bar = make_bar(total=0, unit="pt", desc="scan", leave=True, mininterval=0.5)

    def started(total: int, skipped: int, **_: Any) -> None:
        bar.reset(total=total)
        if skipped:
            bar.set_postfix_str(f"{skipped} already stored")

    def progress(done: int, failed: int, total: int, **_: Any) -> None:
        if total != bar.total:
            bar.reset(total=total)  # a notebook bar's widget learns its length so
        bar.n = done + failed
        if failed:
            bar.set_postfix_str(f"{failed} failed", refresh=False)
        bar.refresh()

    return feed_bar(bar, events, started, progress)


def feed_bar(bar: Any, events: Events, started: Callable[..., None],
             progress: Callable[..., None]) -> Any:
    """Subscribe a progress bar's ``started`` and ``progress`` handlers; close the bar
    and unsubscribe everything when the run finishes."""
    def finished(**_: Any) -> None:
        bar.close()
        for name, callback in (("started", started), ("progress", progress),
                               ("finished", finished)):
            events.off(name, callback)

    events.on("started", started)
    events.on("progress", progress)
    events.on("finished", finished)
    return bar
