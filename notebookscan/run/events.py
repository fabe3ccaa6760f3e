"""A small publish/subscribe hub: the scan emits, progress bars and widgets listen.

Events (with the keyword arguments they carry):

``started``      ``total``, ``skipped``, ``to_run``, ``failed_before``, ``workers``
``point_done``   ``point``, ``key``, ``record``
``point_failed`` ``point``, ``key``, ``record``
``progress``     ``done``, ``failed``, ``running``, ``remaining``, ``total``, ``rate``,
                 ``workers``
``flushed``      ``shard``, ``points``
``finished``     ``done``, ``failed``, ``stopped``, ``elapsed``
``segment_done`` a segmented point finished one segment (see :mod:`notebookscan.segments`)

Callbacks run in the thread of the scan loop. One that raises is reported once and
unsubscribed, so a broken display never stops a scan.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError

__all__ = ["EVENTS", "Events"]

EVENTS = ("started", "point_done", "point_failed", "progress", "flushed", "finished",
          "segment_done")


class Events:
    """Subscribe with ``on(name, callback)``; ``off`` removes it.

    Examples
    --------
    >>> events = Events()
    >>> seen = []
    >>> events.on("progress", lambda **kw: seen.append(kw["done"]))
    >>> events.emit("progress", done=3)
    >>> seen
    [3]
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[..., Any]]] = defaultdict(list)

    def on(self, name: str, callback: Callable[..., Any]) -> None:
        """Call ``callback(**fields)`` on every event ``name`` (raises for unknown names)."""
        if name not in EVENTS:
            raise ArgumentError(f"unknown event {name!r}; the events are {', '.join(EVENTS)}")
        self._subscribers[name].append(callback)

    def off(self, name: str, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` on event ``name`` (no error if it was not subscribed)."""
        if callback in self._subscribers.get(name, []):
            self._subscribers[name].remove(callback)

    def wants(self, name: str) -> bool:
        """True when someone listens (lets the loop skip building per-point events)."""
        return bool(self._subscribers.get(name))

    def emit(self, name: str, **kwargs: Any) -> None:
        """Call the subscribers of ``name``; a subscriber's exception is warned, not raised."""
        for callback in list(self._subscribers.get(name, ())):
            try:
                callback(**kwargs)
            except Exception as exc:
                self.off(name, callback)
                warnings.warn(
                    f"a {name!r} event callback raised {type(exc).__name__}: {exc}; "
                    "it was unsubscribed (the scan goes on)",
                    RuntimeWarning, stacklevel=2,
                )
