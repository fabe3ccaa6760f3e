"""The benchmark workloads and the helpers every benchmark child process uses.

The three workloads of the pypet paper's Figure 5 (Meyer & Obermayer 2016):

- ``end``: each run returns one random float; results are stored collectively at the end;
- ``per_run_float``: one random float is stored per run;
- ``array``: one 1000 x 125 float64 random array (1 MB) is stored per run.

This module depends on numpy and the standard library only: it is imported both by the
project's environment (numpy 2) and by the separate pypet environment (numpy < 2).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time

import numpy as np

ARRAY_SHAPE = (1000, 125)
ARRAY_DIMS = ("row", "col")
RAW_ARRAY_BYTES = ARRAY_SHAPE[0] * ARRAY_SHAPE[1] * 8
RAW_FLOAT_BYTES = 8

WORKLOADS = {
    "end": "N runs, each returns one random float; results stored collectively at the end",
    "per_run_float": "one random float stored per run",
    "array": "one 1000x125 float64 random array (1 MB) stored per run",
}
SIZES = {"end": (100, 1_000, 10_000), "per_run_float": (100, 1_000, 10_000),
         "array": (100, 1_000)}
QUICK_SIZES = {"end": (100, 500), "per_run_float": (100, 500), "array": (20, 50)}

RESULT_MARK = "BENCH-RESULT "


def random_float(i, seed):
    """One random float drawn from a generator seeded by ``seed``."""
    return float(np.random.default_rng(seed).random())


def random_array(i, seed):
    """One 1000 x 125 float64 random array (1 MB) as the variable ``x``."""
    return {"x": np.random.default_rng(seed).random(ARRAY_SHAPE)}


def function_for(workload):
    """The user function of a workload: ``fn(i, seed)``."""
    return random_array if workload == "array" else random_float


def raw_bytes(workload, n):
    """Bytes of the results themselves (float64), without parameters or metadata."""
    return n * (RAW_ARRAY_BYTES if workload == "array" else RAW_FLOAT_BYTES)


class FunctionTimer:
    """Accumulates the time spent inside the user's function during a tool's run.

    ``timer.wrap(fn)`` returns a plain function with fn's signature; each call adds its
    own duration (two ``perf_counter`` calls, about 0.1 µs) to ``timer.total``.
    """

    def __init__(self):
        self.total = 0.0
        self.calls = 0

    def wrap(self, fn):
        timer = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timer.total += time.perf_counter() - t0
                timer.calls += 1

        return timed


def standalone_function_time(workload, n):
    """Time of the bare function over all n points in a plain loop (results discarded)."""
    fn = function_for(workload)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i, i)
    return time.perf_counter() - t0


def rss_bytes():
    """Current resident set size of this process (from /proc, Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree_size(path):
    """(apparent bytes, allocated bytes, number of files) of a file or directory tree."""
    paths = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names
    ]
    apparent = allocated = 0
    for p in paths:
        st = os.stat(p)
        apparent += st.st_size
        allocated += st.st_blocks * 512
    return apparent, allocated, len(paths)


def first_and_steady(load, *args):
    """Run a load function twice in this (fresh) process; report both timings.

    The first call pays for modules a tool imports lazily on its first use (xarray, for
    one, imports dask the first time it builds a Dataset); the second is the steady
    state, reported as ``load_all_seconds``. The first is ``load_all_first_seconds``.
    """
    first = load(*args)
    gc.collect()
    steady = load(*args)
    out = dict(steady)
    out["load_all_first_seconds"] = first["load_all_seconds"]
    out["open_first_seconds"] = first.get("open_seconds")
    return out


def emit(result):
    """Print a child's result as one marked JSON line on stdout."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def check_values(workload, values, n):
    """Sanity check of loaded results: right count, finite, in [0, 1)."""
    arr = np.asarray(values, dtype=float)
    expected = (n, *ARRAY_SHAPE) if workload == "array" else (n,)
    if arr.shape != expected:
        raise AssertionError(f"loaded shape {arr.shape}, expected {expected}")
    if not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() < 1.0):
        raise AssertionError("loaded values are not random floats in [0, 1)")
