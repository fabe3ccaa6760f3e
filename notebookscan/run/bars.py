"""Text progress bars of a run, fed by its events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import Events

__all__ = ["feed_bar", "progress_bar"]


def progress_bar(events: Events) -> Any:
    """A tqdm bar fed by the scan's events (plain text: works in terminals and notebooks)."""
    from tqdm.std import tqdm

    bar = tqdm(total=0, unit="pt", desc="scan", dynamic_ncols=True, leave=True, mininterval=0.5)

    def started(total: int, skipped: int, **_: Any) -> None:
        bar.reset(total=total)
        if skipped:
            bar.set_postfix_str(f"{skipped} already stored")

    def progress(done: int, failed: int, total: int, **_: Any) -> None:
        bar.total = total
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
