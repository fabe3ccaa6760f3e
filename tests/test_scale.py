"""Big stores: a lazy open reads only what a slice needs; a 1M-point grid is checked fast.

The lazy measurements run in a fresh Python process, so its byte counters and peak RSS
belong to the open and the slice alone. Bytes read are counted with ``rchar`` of
``/proc/self/io`` (psutil ``read_chars``): every byte handed out by ``read``/``pread``,
whether it came from the disk or the page cache, so a store just written (and therefore
cached) is measured the same as a cold one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.store import Store
from notebookscan.store.dataset import label_excluded, load_dataset, store_records, to_dataset
from notebookscan.store.maintenance import table_to_shard
from notebookscan.store.schema import Layout

POINT_VALUES = 131_072  # float64s per point: 1 MiB, one HDF5 chunk


def big(a: int, b: int) -> dict:
    """Random floats (barely compressible), reproducible from the parameters alone."""
    return {"y": np.random.default_rng(1000 * a + b).random(POINT_VALUES),
            "s": float(1000 * a + b)}


def _disk_bytes(path: str) -> int:
    """What ``du`` counts: allocated blocks of every file under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def _build(path: str, na: int, nb: int) -> int:
    ns.Scan(big, ns.grid(a=range(na), b=range(nb)), store=path).run(
        executor="serial", progress=False)
    return _disk_bytes(path)


# Peak memory from /proc: VmHWM is this process's own peak, whereas ru_maxrss carries the
# parent's (pytest's) over fork and exec on Linux.
_MEMORY = textwrap.dedent("""
    def vm(field):  # bytes
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) * 1024 for x in f if x.startswith(field + ":"))

    def reset_peak():  # VmHWM := the current RSS, so what follows is measured alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
""")

_PROBE = _MEMORY + textwrap.dedent("""
    import json, sys, time
    import numpy as np, psutil
    import dask.array, netCDF4, xarray  # imported before any counter is read
    import notebookscan as ns

    path, a, b, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out = {"base_rss": vm("VmRSS")}
    reset_peak()
    proc = psutil.Process()
    r0 = proc.io_counters().read_chars
    t0 = time.perf_counter()
    ds = ns.open_store(path, lazy=True)
    out["open_s"] = time.perf_counter() - t0
    r1 = proc.io_counters().read_chars
    out["open_read"] = r1 - r0
    out["chunked"] = ds.y.chunks is not None
    out["shape"] = list(ds.y.shape)
    t0 = time.perf_counter()
    row = ds.y.sel(a=a).values  # one parameter value: a whole row of the grid
    out["row_s"] = time.perf_counter() - t0
    r2 = proc.io_counters().read_chars
    out["row_read"] = r2 - r1
    # one point of another row: bytes that the row's read did not already bring in
    a2 = (a + 1) % ds.sizes["a"]
    point = ds.sel(a=a2, b=b)[["y", "s", "ns_status"]].load()
    out["point_read"] = proc.io_counters().read_chars - r2
    # peak RSS of the open and the loads, before the check below builds its own arrays
    out["peak_rss"] = vm("VmHWM")
    out["row_bytes"] = row.nbytes
    out["row_ok"] = all(np.array_equal(row[j], np.random.default_rng(1000 * a + j).random(n))
                        for j in range(row.shape[0]))
    out["point_ok"] = bool(
        np.array_equal(point.y.values, np.random.default_rng(1000 * a2 + b).random(n))
        and float(point.s) == 1000 * a2 + b and str(point.ns_status.values) == "done")
    print(json.dumps(out))
""")


def _probe(path: str, a: int, b: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _PROBE, path, str(a), str(b),
                          str(POINT_VALUES)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check_lazy_slice(tmp_path, na: int, nb: int, min_bytes: int) -> dict:
    path = str(tmp_path / "big")
    try:
        t0 = time.perf_counter()
        size = _build(path, na, nb)
        build_s = time.perf_counter() - t0
        assert size >= min_bytes, f"the store is only {size / 1e9:.2f} GB"
        shards = len(ns.Store(path).shard_files())
        out = _probe(path, a=na // 2, b=nb // 3)
    finally:  # pytest keeps the last few tmp dirs: do not leave gigabytes behind
        shutil.rmtree(path, ignore_errors=True)
    out.update(store_bytes=size, build_s=build_s, shards=shards)
    print("\nlazy slice of a big store:", json.dumps(out))

    assert out["chunked"] and out["shape"] == [na, nb, POINT_VALUES]
    assert out["row_ok"] and out["point_ok"]
    assert out["open_s"] < 10, out
    # opening reads the small index columns and HDF5 metadata, not the results; netCDF-C
    # reads up to the first 4 MiB of a file to find its format, hence the allowance (and
    # 4.5 MiB more for one shard opened once to check the store's parameter names)
    assert out["open_read"] < shards * 9 * 2**20 + 4.5 * 2**20, out
    # the row is 1/na of the store: reading it touches about that many bytes
    row_share = size / na
    assert out["row_read"] < 1.1 * row_share + 2**20, out
    # one 1 MiB point (and its small columns)
    assert 0.5 * size / (na * nb) < out["point_read"] < 4 * 2**20, out
    # what was read in all, and what the process ever held, is far below the store (big
    # results reach the store one shard per received group of chunks, each journalled
    # commit of 1 MiB or more being a shard: a few more headers to read than one shard)
    assert out["open_read"] + out["row_read"] < size / 2, out
    return out


def test_lazy_slice_of_a_200mb_store_reads_only_the_slice(tmp_path):
    out = _check_lazy_slice(tmp_path, na=5, nb=40, min_bytes=150_000_000)
    assert out["peak_rss"] < 2.5 * out["row_bytes"] + 300e6


@pytest.mark.slow
def test_lazy_slice_of_a_5gb_store_reads_only_the_slice(tmp_path):
    # 20 x 280 points of 1 MiB of random floats: ~5.9 GB of data, ~5.2 GB on disk after
    # blosc (random floats shrink ~12 % with byte shuffle)
    out = _check_lazy_slice(tmp_path, na=20, nb=280, min_bytes=5_000_000_000)
    # the row (294 MB) and dask's chunks of it; no HDF5 chunk cache per shard
    assert out["peak_rss"] < 2.5 * out["row_bytes"] + 300e6


# -- a million-point grid against a store of 100 000 -----------------------------------------


def double(i: int) -> float:
    return 2.0 * i


def test_million_point_grid_skips_100k_stored_points_fast(tmp_path):
    path = str(tmp_path / "store")
    ns.Scan(double, ns.grid(i=range(100_000)), store=path).run(executor="serial",
                                                                progress=False)
    t0 = time.perf_counter()
    space = ns.grid(i=range(1_000_000))
    keys = space.keys()
    scan = ns.Scan(double, space, store=path)
    plan = scan.plan()
    status = scan.status()
    elapsed = time.perf_counter() - t0
    print(f"\n1M-point grid, keys and skip-done check against 100k stored: {elapsed:.2f} s")
    assert len(keys) == len(set(keys)) == 1_000_000
    assert plan.stored == 100_000 and len(plan.to_run) == 900_000
    assert status["done"] == 100_000 and status["missing"] == 900_000
    assert elapsed < 10, f"took {elapsed:.1f} s"


# -- eager loading holds each array once --------------------------------------------------


def _same_as_through_the_table(path, layout=None, **kwargs):
    """load_dataset gives exactly what to_dataset(store.table()) gives, dtypes included."""
    store = Store(path)
    layout = layout or store.layout()
    expected = to_dataset(store.table(layout.dims), layout, **kwargs)
    if layout.kind == "grid":  # the store's own labels: excluded where no run scanned
        expected = label_excluded(expected, layout.dims, store_records(store, store.runs()))
    got = load_dataset(store, layout, **kwargs)
    xr.testing.assert_identical(got, expected)
    for name, var in expected.variables.items():
        assert got[name].dtype == var.dtype, name
    assert list(got.data_vars) == list(expected.data_vars)
    return got


def mixed(x: int, y: float):
    if x == 3 and y == 0.5:
        raise ValueError("a failed point")
    t = np.arange(x + 1) * 0.1
    return {
        "times": np.sort(np.random.default_rng(x).random(x + 1)),  # ragged floats
        "ids": np.arange(x, dtype=np.int32),  # ragged ints
        "trace": xr.DataArray(np.sin(t * y), dims="t", coords={"t": t}),
        "wave": xr.DataArray(np.cos(np.arange(3) * y), dims="u",  # per-point coordinate
                             coords={"u": np.arange(3) * y}),
        "f": x * y,
    }


def test_eager_load_equals_the_table_path_for_ragged_failed_missing_and_duplicates(tmp_path):
    path = tmp_path / "s"
    space = ns.grid(x=range(5), y=[0.5, 1.0, 2.0]).where(
        lambda p: not (p["x"] == 4 and p["y"] == 2.0))  # one cell dropped: excluded
    ns.Scan(mixed, space, store=path).run(executor="serial", progress=False, flush_every=4)
    store = Store(path)
    store.write(table_to_shard(store.table()))  # every point twice (a killed compaction)
    assert len(store.shard_files()) >= 4
    ds = _same_as_through_the_table(path)
    _same_as_through_the_table(path, extra_coords={"x": [7]})
    assert ds.ns_status.sel(x=4, y=2.0) == "excluded" and ds.ns_status.sel(x=3, y=0.5) == "failed"
    assert np.isnan(ds.times.sel(x=3, y=0.5)).all()
    np.testing.assert_array_equal(ds.times.sel(x=2, y=1.0)[:3],
                                  np.sort(np.random.default_rng(2).random(3)))
    assert ds.u_coord.dims == ("x", "y", "u")  # per-point coordinate
    points = _same_as_through_the_table(path, Layout("points", ("x", "y")), pending={
        "x": [9], "y": [9.5], "key": [ns.point_key({"x": 9, "y": 9.5})], "seed": [1]})
    assert points.ns_status.values[-1] == "missing" and np.isnan(points.times.values[-1]).all()


def float_and_int_on_one_dim(x: int):
    return {"a": xr.DataArray(np.arange(3.0) * x, dims="t"),
            "b": xr.DataArray(np.arange(3) + x, dims="t"),
            "c": np.full(2, x, dtype=np.float32 if x < 2 else np.float64)}


def changed_type(x: int):
    return np.arange(3) * x if x < 2 else np.arange(3) * 0.5 * x


def test_eager_load_equals_the_table_path_for_shared_dims_and_mixed_dtypes(tmp_path):
    ns.Scan(float_and_int_on_one_dim, ns.grid(x=range(4)), store=tmp_path / "a").run(
        executor="serial", progress=False, flush_every=2)
    ds = _same_as_through_the_table(tmp_path / "a")
    assert ds.b.dtype == np.int64 and ds.c.dtype == np.float64
    ns.Scan(changed_type, ns.grid(x=range(4)), store=tmp_path / "b").run(
        executor="serial", progress=False, flush_every=2)
    _same_as_through_the_table(tmp_path / "b")
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    assert len(_same_as_through_the_table(tmp_path / "empty", Layout("points", ("x",))).point) == 0


_EAGER = _MEMORY + textwrap.dedent("""
    import sys, time
    import numpy as np, netCDF4, xarray  # imported before the baseline
    import notebookscan as ns
    from notebookscan.store.dataset import label_excluded, load_dataset, store_records, to_dataset
    from notebookscan.store import Store

    store = Store(sys.argv[1])
    base = vm("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    if sys.argv[2] == "table":  # the way through a Table, for comparison
        ds = to_dataset(store.table(), store.layout())
    else:
        ds = load_dataset(store, store.layout())
    seconds = time.perf_counter() - t0
    peak = vm("VmHWM")
    assert np.array_equal(ds.y.values[1, 2], np.random.default_rng(1002).random(131_072))
    print(seconds, peak - base, ds.y.nbytes)
""")


def test_eager_load_of_arrays_holds_them_about_once(tmp_path):
    path = str(tmp_path / "s")
    # 3 x 40 points of 1 MiB in four shards
    ns.Scan(big, ns.grid(a=range(3), b=range(40)), store=path).run(
        executor="serial", progress=False, flush_every=30, chunk_size=10)
    shards = len(Store(path).shard_files())
    assert shards >= 4
    measured = {}
    for how in ("table", "direct"):
        res = subprocess.run([sys.executable, "-c", _EAGER, path, how], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        measured[how] = [float(v) for v in res.stdout.split()]
        seconds, grew, nbytes = measured[how]
        print(f"\neager load ({how}) of {nbytes / 1e6:.0f} MB of arrays in {shards} shards: "
              f"{seconds:.2f} s, peak RSS +{grew / 1e6:.0f} MB ({grew / nbytes:.2f} x)")
    grew, nbytes = measured["direct"][1:]
    assert grew < nbytes * (1 + 1.5 / shards) + 50e6
