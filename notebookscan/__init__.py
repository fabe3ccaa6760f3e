"""notebookscan: parameter scans of numerical simulations, from a notebook to a cluster.

Describe the points (``grid``, ``zip_``, ``points``, ``sample``, ``trials``, ``+``,
``*``, ``where``), run a function over them (``Scan(...).run()``) on local cores or a
cluster, and get a labelled :class:`xarray.Dataset` back — persisted as NetCDF batch by
batch, never computing a stored point twice.

>>> import notebookscan as ns
>>> ns.grid(k=[1, 2, 3], tau=[0.005, 0.01]) * ns.trials(5)
<Space: 30 points, grid k(3) × tau(2) × trial(5)>
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .adaptive import AdaptiveScan, Goal
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    ExecutorError,
    NotebookscanError,
    ResultError,
    ScanError,
    SpaceError,
    StaleResultsWarning,
    StoreError,
    StoreFormatError,
    StoreWarning,
    UnknownNameError,
    WaitTimeout,
)
from .executors.cluster import ClusterHandle, connect, start_cluster
from .keys import point_key, point_seed
from .run.detached import DetachedRun, attach
from .run.events import Events
from .scan import DryRun as DryRun  # the name of Plan before Scan.plan()
from .scan import Plan, Scan, ScanRun
from .segments import Segment, SegmentedScan, merge_segmented, open_recordings
from .space import Layout, Space, grid, points, sample, trials, zip_
from .store import Store, compact, merge, open_store, to_grid, verify

try:
    __version__ = _metadata.version("notebookscan")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AdaptiveScan",
    "ArgumentError",
    "ArgumentTypeError",
    "ClusterHandle",
    "DetachedRun",
    "Events",
    "ExecutorError",
    "Goal",
    "Layout",
    "NotebookscanError",
    "Plan",
    "ResultError",
    "Scan",
    "ScanError",
    "ScanRun",
    "Segment",
    "SegmentedScan",
    "Space",
    "SpaceError",
    "StaleResultsWarning",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreWarning",
    "UnknownNameError",
    "WaitTimeout",
    "__version__",
    "attach",
    "compact",
    "connect",
    "grid",
    "merge",
    "merge_segmented",
    "open_recordings",
    "open_store",
    "point_key",
    "point_seed",
    "points",
    "sample",
    "start_cluster",
    "to_grid",
    "trials",
    "verify",
    "zip_",
]
