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

import importlib as _importlib
import importlib.util as _importlib_util
from typing import TYPE_CHECKING

from .errors import (
    ArgumentError,
    ArgumentTypeError,
    ExecutorError,
    NotebookscanError,
    PartialResultsWarning,
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

if TYPE_CHECKING:  # what type checkers and editors see; at run time _LAZY imports these
    from .adaptive import AdaptiveScan, Goal
    from .executors.cluster import ClusterHandle, connect, start_cluster
    from .keys import point_key, point_seed
    from .run.detached import DetachedRun, attach
    from .run.events import Events
    from .scan import DryRun as DryRun
    from .scan import Plan, Scan, ScanRun
    from .segments import Segment, SegmentedScan, merge_segmented, open_recordings
    from .space import Layout, Space, grid, points, sample, trials, zip_
    from .store import Store, compact, merge, open_store, to_grid, verify

    __version__: str

# Public names imported on first use (PEP 562): ``import notebookscan`` stays cheap and
# pulls in numpy, xarray, netCDF4 or the run engine only for the path that needs them.
_LAZY = {
    "AdaptiveScan": ".adaptive",
    "Goal": ".adaptive",
    "ClusterHandle": ".executors.cluster",
    "connect": ".executors.cluster",
    "start_cluster": ".executors.cluster",
    "point_key": ".keys",
    "point_seed": ".keys",
    "DetachedRun": ".run.detached",
    "attach": ".run.detached",
    "Events": ".run.events",
    "DryRun": ".scan",  # the name of Plan before Scan.plan()
    "Plan": ".scan",
    "Scan": ".scan",
    "ScanRun": ".scan",
    "Segment": ".segments",
    "SegmentedScan": ".segments",
    "merge_segmented": ".segments",
    "open_recordings": ".segments",
    "Layout": ".space",
    "Space": ".space",
    "grid": ".space",
    "points": ".space",
    "sample": ".space",
    "trials": ".space",
    "zip_": ".space",
    "Store": ".store",
    "compact": ".store",
    "merge": ".store",
    "open_store": ".store",
    "to_grid": ".store",
    "verify": ".store",
}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("notebookscan")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _is_submodule(name: str) -> bool:
    return (name.isidentifier() and not name.startswith("_")
            and _importlib_util.find_spec(f"{__name__}.{name}") is not None)


def __getattr__(name: str):
    """Import a public name, a submodule or ``__version__`` the first time it is used."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    elif name == "__version__":
        value = _version()
    elif _is_submodule(name):
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later uses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"DryRun"})


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
    "PartialResultsWarning",
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
