"""Results whose length differs from point to point cost what they hold.

300 points, one returning 2·10⁶ float64 samples and the others 10: padded to the
longest that is 4.5 GiB; stored ragged it is 16 MB. Writing, opening (eager and lazy),
compacting and exporting such a store run here in subprocesses whose address space is
limited far below the padded size, and must give the stored values back exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.store import Store
from notebookscan.store.shards import open_dataset, read_shard, write_shard
from notebookscan.store.varying import padded, series

LONG_K, LONG_N, SHORT_N, POINTS = 7, 2_000_000, 10, 300
PADDED_BYTES = POINTS * LONG_N * 8  # 4.5 GiB
# imports of numpy + netCDF4 + xarray + dask take ~350 MB of address space; the stored
# data is 16 MB: 1.5 GiB leaves room for both, and none for the padded 4.5 GiB
LIMIT = 1536 * 2**20


def values_of(k: int) -> np.ndarray:
    n = LONG_N if k == LONG_K else SHORT_N
    return np.random.default_rng(k).random(n)


def model(k: int):
    return {"v": xr.DataArray(values_of(k), dims=("time",))}


@pytest.fixture(scope="module")
def ragged_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ragged") / "store")
    # several flushes: several shards, one of them holding the long series
    ns.Scan(model, ns.grid(k=list(range(POINTS))), path).run(
        executor="serial", progress=False, flush_every=64, flush_interval=3600)
    return path


def run_limited(code: str | tuple[str, ...], *args: str) -> dict:
    """Run ``code`` in a fresh interpreter limited to LIMIT bytes of address space."""
    script = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        import numpy as np
        import notebookscan as ns
        from notebookscan.store.varying import series
        LONG_K, LONG_N, SHORT_N = {long_k}, {long_n}, {short_n}
        def values_of(k):
            n = LONG_N if k == LONG_K else SHORT_N
            return np.random.default_rng(k).random(n)
        path = sys.argv[1]
        out = {{}}
    """).format(limit=LIMIT, long_k=LONG_K, long_n=LONG_N, short_n=SHORT_N)
    for part in (code,) if isinstance(code, str) else code:
        script += textwrap.dedent(part)
    script += "\nprint(json.dumps(out))\n"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CHECK_DATASET = """
    v = ds.v
    long = v.sel(k=LONG_K).values
    out["long_equal"] = bool(np.array_equal(long, values_of(LONG_K)))
    short = v.sel(k=3).values
    out["short_equal"] = bool(np.array_equal(short[:SHORT_N], values_of(3)))
    out["short_padding_nan"] = bool(np.isnan(short[SHORT_N:]).all())
    out["series_long"] = bool(np.array_equal(series(ds, "v", k=LONG_K).values,
                                             values_of(LONG_K)))
    out["series_short"] = bool(np.array_equal(series(ds, "v", k=3).values, values_of(3)))
    head = v.isel(time=slice(0, 10)).values  # every point's first samples
    out["head_equal"] = bool(all(np.array_equal(head[k], values_of(k)[:10])
                                 for k in range(v.sizes["k"])))
    out["mean_head"] = float(v.isel(time=slice(0, 10)).mean())
    out["shape"] = list(v.shape)
"""


def check_dataset(out: dict) -> None:
    assert out["shape"] == [POINTS, LONG_N]
    for name in ("long_equal", "short_equal", "short_padding_nan", "series_long",
                 "series_short", "head_equal"):
        assert out[name], name
    expected = np.mean([values_of(k)[:10] for k in range(POINTS)])
    assert out["mean_head"] == pytest.approx(expected)


def test_store_on_disk_scales_with_the_samples(ragged_store):
    stored = (LONG_N + (POINTS - 1) * SHORT_N) * 8
    assert Store(ragged_store).size_bytes() < 1.3 * stored + 2**20
    shards = Store(ragged_store).shard_files()
    assert len(shards) >= 3
    layouts = []
    for name in shards:
        with open_dataset(os.path.join(ragged_store, "shards", name)) as nc:
            layouts.append(nc.variables["v"].dimensions)
            if nc.variables["v"].dimensions == ("v_sample",):
                count = nc.variables["v_count"]
                assert count.getncattr("sample_dimension") == "v_sample"
                assert int(count[...].sum()) == len(nc.dimensions["v_sample"])
    # the shard with the long series is ragged; the others (all 10 long) stay dense
    assert ("v_sample",) in layouts and ("point", "time") in layouts


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_open_store_needs_memory_for_the_samples_only(ragged_store, lazy):
    out = run_limited((f"""
        ds = ns.open_store(path, lazy={lazy})
        out["dask"] = type(ds.v.data).__module__.startswith("dask")
    """, CHECK_DATASET), ragged_store)
    check_dataset(out)
    assert out["dask"]  # padded, it would be 4.5 GiB: a lazy view


def test_compaction_keeps_the_ragged_form(ragged_store, tmp_path):
    path = str(tmp_path / "copy")
    shutil.copytree(ragged_store, path)
    before = Store(path).size_bytes()
    # the long series is noise, stored plain (16.8 MB): above compaction's default
    # limit for small shards, so the limit is raised to take it in
    out = run_limited(("""
        from notebookscan.store import Store
        report = Store(path).compact(max_shard_bytes=32 * 2**20)
        out["after"] = report.shards_after
        ds = ns.open_store(path)
    """, CHECK_DATASET), path)
    check_dataset(out)
    assert out["after"] == 1
    assert Store(path).size_bytes() < 1.1 * before + 2**20


def test_export_writes_the_ragged_form(ragged_store, tmp_path):
    target = str(tmp_path / "out.nc")
    out = run_limited("""
        from notebookscan.cli import main
        out["code"] = main(["export", path, sys.argv[2]])
    """, ragged_store, target)
    assert out["code"] == 0
    assert os.path.getsize(target) < 1.3 * (LONG_N + POINTS * SHORT_N) * 8 + 2**20
    ds = xr.open_dataset(target)
    assert ds.v.dims == ("v_sample",)
    assert ds.v_count.attrs["sample_dimension"] == "v_sample"
    counts = ds.v_count.values
    assert counts.tolist() == [LONG_N if k == LONG_K else SHORT_N for k in ds.k.values]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = ds.v.values
    for k in (0, 3, LONG_K, POINTS - 1):
        i = int(np.flatnonzero(ds.k.values == k)[0])
        assert np.array_equal(flat[offsets[i]:offsets[i + 1]], values_of(k))
    ds.close()


def test_dense_padded_stores_of_earlier_versions_open_the_same(ragged_store, tmp_path):
    """A store written before ragged shards existed: every result padded in its shard."""
    path = tmp_path / "old"
    store = Store(path)
    os.makedirs(store.shards_dir)
    shutil.copy(os.path.join(ragged_store, "notebookscan.json"), path)
    for name in Store(ragged_store).shard_files():
        data = read_shard(os.path.join(ragged_store, "shards", name))
        data.results["v"] = np.asarray(data.results["v"])  # padded, as before
        write_shard(os.path.join(store.shards_dir, name), data)
    with open_dataset(os.path.join(store.shards_dir, Store(path).shard_files()[0])) as nc:
        assert nc.variables["v"].dimensions == ("point", "time")
    for lazy in (False, True):
        out = run_limited((f"""
            ds = ns.open_store(path, lazy={lazy})
        """, CHECK_DATASET), str(path))
        check_dataset(out)


def test_equal_lengths_keep_the_dense_layout_and_a_numpy_dataset(tmp_path):
    def equal(k):
        return {"v": xr.DataArray(np.full(1000, float(k)), dims=("time",))}

    path = tmp_path / "eq"
    ns.Scan(equal, ns.grid(k=list(range(1000))), path).run(executor="serial", progress=False)
    for name in Store(path).shard_files():
        with open_dataset(os.path.join(path, "shards", name)) as nc:
            assert nc.variables["v"].dimensions == ("point", "time")
            assert "v_count" not in nc.variables
    ds = ns.open_store(path)
    assert isinstance(ds.v.data, np.ndarray) and ds.v.shape == (1000, 1000)
    assert "time_length" not in ds
    assert (ds.v.values == np.arange(1000)[:, None]).all()


def test_small_waste_stays_padded_and_eager(tmp_path):
    def short(k):
        return {"v": np.arange(float(k % 5 + 1))}

    path = tmp_path / "short"
    ns.Scan(short, ns.grid(k=list(range(20))), path).run(executor="serial", progress=False)
    ds = ns.open_store(path)
    assert isinstance(ds.v.data, np.ndarray)
    assert ds.v_index_length.values.tolist() == [k % 5 + 1 for k in range(20)]
    assert series(ds, "v", k=3).values.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert series(str(path), "v", k=3).values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_ints_bools_failed_points_and_shared_dims_round_trip_ragged(tmp_path):
    def mixed(k):
        if k == 2:
            raise ValueError("boom")
        n = 300_000 if k == 1 else k + 1
        return {"i": xr.DataArray(np.arange(n, dtype=np.int32) + k, dims=("t",)),
                "b": xr.DataArray(np.arange(n) % 3 == 0, dims=("t",)),
                "f": xr.DataArray(np.ones((n, 2)) * k, dims=("t", "c"))}

    path = tmp_path / "mixed"
    ns.Scan(mixed, ns.grid(k=list(range(40))), path).run(executor="serial", progress=False,
                                                          flush_interval=3600)
    ns.compact(path)  # the big point may have its own shard (1 MiB commits go straight in)
    layouts = set()
    for name in Store(path).shard_files():
        with open_dataset(os.path.join(path, "shards", name)) as nc:
            if "i" in nc.variables:
                layouts.add((nc.variables["i"].dimensions, nc.variables["f"].dimensions))
    assert (("i_sample",), ("f_sample", "c")) in layouts
    for lazy in (False, True):
        ds = ns.open_store(path, lazy=lazy)
        assert str(ds.ns_status.sel(k=2).values) == "failed"
        for k in (0, 1, 5, 39):
            n = 300_000 if k == 1 else k + 1
            assert np.array_equal(series(ds, "i", k=k).values, np.arange(n) + k)
            assert np.array_equal(series(ds, "b", k=k).values, np.arange(n) % 3 == 0)
            assert np.array_equal(series(ds, "f", k=k).values, np.ones((n, 2)) * k)
        assert series(ds, "i", k=2).size == 0
        assert np.isnan(padded(ds, "i", k=2).values).all()
        assert padded(ds, "i", k=5).values[:6].tolist() == list(range(5, 11))


def test_points_layout_series_and_padded_view(tmp_path):
    def fn(a, b):
        return {"v": np.arange(float(a * 1000 + b))}

    space = ns.points([{"a": 300, "b": 0}, {"a": 0, "b": 3}, {"a": 0, "b": 4}])
    path = tmp_path / "pts"
    ns.Scan(fn, space, path).run(executor="serial", progress=False)
    ds = ns.open_store(path)
    assert series(ds, "v", a=0, b=3).values.tolist() == [0.0, 1.0, 2.0]
    assert len(series(ds, "v", a=300).values) == 300_000
    assert series(ds, "v", point=0).size in (3, 4, 300_000)
    with pytest.raises(ns.errors.StoreError, match="matches 2 points"):
        series(ds, "v", a=0)


def test_merge_compares_ragged_points_by_their_values(tmp_path):
    def fn(k, shift=0.0):
        n = 200_000 if k == 1 else 3
        return {"v": np.arange(float(n)) + shift * (k == 2)}

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ns.Scan(fn, ns.grid(k=list(range(20))), a).run(executor="serial", progress=False)
    ns.Scan(fn, ns.grid(k=list(range(20))), b).run(executor="serial", progress=False)
    ns.Scan(lambda k: fn(k, 1.0), ns.grid(k=list(range(20))), c).run(
        executor="serial", progress=False)
    assert not ns.merge(a, b).conflicts
    assert len(ns.merge(c, b).conflicts) == 1
