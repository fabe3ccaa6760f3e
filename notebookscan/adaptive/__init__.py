"""Scans whose points a python-adaptive learner chooses, into the same store.

``AdaptiveScan(fn, {"x": (0, 1)}, store, goal=Goal(loss=0.01))`` runs ``fn`` where the
learner asks, on any executor, storing every point with its key and seed; a killed scan
is rebuilt from its store (no pickles). ``line`` and ``on_grid`` put the results on a
grid for plotting. Needs ``pip install 'notebookscan[adaptive]'``.
"""

from __future__ import annotations

from .grids import line, on_grid
from .scan import AdaptiveScan, rebuild
from .source import Goal

__all__ = ["AdaptiveScan", "Goal", "line", "on_grid", "rebuild"]
