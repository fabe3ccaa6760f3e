"""Jupyter widgets: define, run, watch, explore and refine a scan in a notebook.

The core never imports this package; the widgets use the public API only
(``Scan.run(wait=False)``, ``scan.events``, ``scan.results()``, ``scan.refine``).

- :class:`SweepBuilder` (or :func:`builder`) — a form from the function's signature
  that makes a Space, with live counts and a time estimate;
- :class:`RunMonitor` — Run, Stop, Resume; progress, workers and failures;
- :class:`LivePlot` — a result plot redrawn as batches land;
- :class:`Explorer` — variables, axes, slices, trial averages, status map, refine
  (an adaptive scan: its samples, and :class:`AdaptiveRefinePanel` over a region);
- :class:`ScanApp` (or :func:`scan_app`) — all of them in labelled tabs.

Examples
--------
>>> import tempfile
>>> import notebookscan.widgets as nsw
>>> def model(k: float, tau: float = 0.01) -> float:
...     return k * tau
>>> app = nsw.scan_app(model, store=tempfile.mkdtemp(), executor="serial")
>>> app.tabs.titles
('1 · Define', '2 · Run', '3 · Explore')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .app import ScanApp
from .builder import SweepBuilder
from .explorer import AdaptiveRefinePanel, Explorer, RefinePanel
from .liveplot import LivePlot
from .monitor import RunMonitor

__all__ = ["AdaptiveRefinePanel", "Explorer", "LivePlot", "RefinePanel", "RunMonitor",
           "ScanApp", "SweepBuilder", "builder", "scan_app"]


def builder(function: Callable[..., Any], store: str | os.PathLike[str] | None = None,
            **kwargs: Any) -> SweepBuilder:
    """A :class:`SweepBuilder` for ``function`` (see there for the arguments)."""
    return SweepBuilder(function, store=store, **kwargs)


def scan_app(scan_or_function: Any, store: str | os.PathLike[str] | None = None,
             **kwargs: Any) -> ScanApp:
    """A :class:`ScanApp` for a Scan, or for a function and a store (see there)."""
    return ScanApp(scan_or_function, store=store, **kwargs)
