"""The store's schema: every name the store gives to files, variables and attributes.

This module is the one place these names are defined; the space, the scan loop, the
segment machinery, plotting and the widgets import them from here. It imports nothing
of the package, so any layer may use it.

A store directory::

    notebookscan.json        store metadata (META_FILE): format, parameter names, layout,
                             the form of each result variable ("results"), the units
                             and long names declared ("parameter_attrs", "result_attrs")
    runs.json                the store's runs in the order they started (RUNS_FILE)
    scanned/*.json           which grid cells each run's space held (SCANNED)
    shards/*.nc              one NetCDF-4 file per flush (SHARDS)
    quarantine/              unreadable shards set aside, a .reason.txt beside each
    superseded/              shards rewritten by Store.resolve, kept for recovery
    journal/*.journal        chunks a running writer received since its last shard
                             (JOURNAL; see store/journal.py)
    leases/                  the runners working on the store now: one heartbeat record
                             each (*.runner) and the keys of their chunks in flight
                             (*.lease) (LEASES; see store/leases.py)

A shard holds one row per point along the ``point`` dimension: the parameters, the
bookkeeping variables and the results.

The bookkeeping variables (what the store records about each point: key, seed, status,
error, timings, host, ...) live in a namespace of their own: in a shard and in the
Dataset a reader sees, their names start with ``ns_`` (:data:`PREFIX`): ``ns_status``,
``ns_error``, ``ns_duration``. Parameters and results may take any other name, so a
model's ``duration`` or ``error`` is the user's own. Shards of formats 1 and 2 named
them without the prefix; readers rename them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "BOOKKEEPING",
    "DESCRIPTIONS",
    "PREFIX",
    "RESERVED_PARAMETERS",
    "RESERVED_RESULTS",
    "VARIABLE",
    "Layout",
    "is_reserved",
]

# ------------------------------------------------------------------ the directory
META_FILE = "notebookscan.json"
SHARDS = "shards"
QUARANTINE = "quarantine"
SCANNED = "scanned"  # which grid cells the runs scanned (see store/scanned.py)
JOURNAL = "journal"  # chunks received since the last shard (see store/journal.py)
LEASES = "leases"  # runners' heartbeats and the keys they compute now (see store/leases.py)
RUNNER_SUFFIX = ".runner"  # leases/<runner>.runner: a runner's heartbeat record (JSON)
LEASE_SUFFIX = ".lease"  # leases/<runner>.<n>.lease: keys in flight (raw 20-byte keys)
LEASES_LOCK = ".lock"  # leases/.lock: held while a runner claims keys
STOP_SUFFIX = ".stop"  # leases/<runner>.stop: a stop request ("finish" or "now")
LOCK_FILE = ".compact.lock"
RUNS_FILE = "runs.json"  # run id -> ordinal: the order of the store's runs, clock-free
RUNS_LOCK = ".runs.lock"
META_LOCK = ".meta.lock"
SUPERSEDED = "superseded"  # shards replaced by Store.resolve, kept for recovery
DETACHED_RUNS = ".runs"  # a detached run's spec, status and log (see notebookscan.run.detached)
FORM_SUFFIX = "__form"  # <name>__form2: rows of a result stored in another form
STORE_FORMAT = 1  # the "format" of notebookscan.json
# 2: bookkeeping text as char arrays, 1-D columns compressed; 3: bookkeeping under PREFIX.
# Readers accept 1 and 2 too.
SHARD_FORMAT = 3

# ------------------------------------------------------------------ a shard's variables
POINT_DIM = "point"
MISSING = "missing"  # status of a grid cell no stored point fills
EXCLUDED = "excluded"  # status of a grid cell no scan space of the store holds
#: What the store records about each point, by its short name (``Table.bookkeeping``).
BOOKKEEPING = (
    "key", "seed", "status", "error", "traceback", "started", "finished",
    "duration", "host", "worker", "run",
)
PREFIX = "ns_"  # bookkeeping variables' names in shards and Datasets start with this
#: short bookkeeping name -> the variable's name in shards and Datasets
VARIABLE = {name: PREFIX + name for name in BOOKKEEPING}
KEY, SEED, STATUS, ERROR, TRACEBACK = (VARIABLE[n] for n in
                                       ("key", "seed", "status", "error", "traceback"))
STARTED, FINISHED, DURATION, HOST, WORKER, RUN = (VARIABLE[n] for n in (
    "started", "finished", "duration", "host", "worker", "run"))
STRING_BOOKKEEPING = ("key", "status", "error", "traceback", "host", "worker", "run")
BOOKKEEPING_DTYPES = {"seed": np.int64, "started": np.float64, "finished": np.float64,
                      "duration": np.float64}
DESCRIPTIONS = {
    "status": "done, failed, missing or excluded",
    "error": "error of a failed point",
    "traceback": "traceback of a failed point",
    "seed": "seed the point received",
    "started": "when the point started",
    "finished": "when the point finished",
    "duration": "seconds spent in the function",
    "host": "host that ran the point",
    "worker": "engine or process that ran the point",
    "run": "id of the run that stored the point (see attrs['provenance'])",
    "key": "stable key of the point",
}
CHARS_SUFFIX = "_nchars"  # <name>_nchars: the char dim of fixed-width text



def is_reserved(name: str) -> bool:
    """True for a name no parameter or result can take: the ``point`` dimension, and
    every name starting with ``ns_`` (the store's bookkeeping)."""
    return name == POINT_DIM or name.startswith(PREFIX)


#: What :func:`is_reserved` refuses, in words (for error messages).
RESERVED_RULE = f"'{POINT_DIM}' and names starting with '{PREFIX}' are the store's"
#: The reserved names that exist today (the rule is :func:`is_reserved`).
RESERVED_PARAMETERS: frozenset[str] = frozenset({POINT_DIM, *VARIABLE.values()})
RESERVED_RESULTS = RESERVED_PARAMETERS

# ------------------------------------------------------------------ attributes
#: Keys of ``notebookscan.json``: the units and names declared for parameters (by the
#: space) and results (by the returned DataArrays), ``{name: {"units": ..., ...}}``.
PARAMETER_ATTRS = "parameter_attrs"
RESULT_ATTRS = "result_attrs"
ROLE = "notebookscan_role"
DTYPE_ATTR = "notebookscan_dtype"
MISSING_ATTR = "notebookscan_missing"
FORMAT_ATTR = "notebookscan_format"
TIME_UNITS = "seconds since 1970-01-01 00:00:00"

# ------------------------------------------------------------------ segmented scans
#: Extra parameters of a segmented scan's recordings store.
SEGMENT_PARAMETERS = ("link", "segment")
#: Values added to each finished point's row of a segmented scan.
SEGMENT_POINT_VALUES = ("segments", "link", "compute_seconds")
#: Attribute saying whether a segmented scan's result is per point or per segment.
SEGMENT_ROLE_ATTR = "notebookscan_segment_role"
SEGMENTS_DIR = "segments"  # a segmented store's recordings: a plain store inside it
CHECKPOINTS_DIR = "checkpoints"  # inside SEGMENTS_DIR: one directory per point and link
#: Every entry a store's directory may hold: a directory holding anything else is not a store.
OWN_ENTRIES = frozenset({META_FILE, SHARDS, QUARANTINE, SCANNED, JOURNAL, LEASES, LOCK_FILE,
                         RUNS_FILE, RUNS_LOCK, META_LOCK, SUPERSEDED, DETACHED_RUNS,
                         SEGMENTS_DIR})
#: Names a segmented scan's parameters cannot take (the protocol passes them).
SEGMENT_RESERVED_PARAMETERS: frozenset[str] = frozenset(
    {"segment", "segments", "link", "state", "point_key"})


class Layout(NamedTuple):
    """How a space's points are arranged, and how the store shows them.

    ``kind="grid"``: the points lie on a product of per-parameter values, so results can
    be unstacked onto the dimensions `dims` (missing combinations become NaN).
    ``kind="points"``: the points form a list along one ``point`` dimension.
    """

    kind: Literal["grid", "points"]
    dims: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The layout as JSON-ready data (kept in ``notebookscan.json``)."""
        return {"kind": self.kind, "dims": list(self.dims)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        """The layout :meth:`to_json` wrote."""
        return cls(str(data["kind"]), tuple(data["dims"]))  # type: ignore[arg-type]
