"""The store: round trips, de-duplication, corrupt shards, merge, compaction, verify."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.store import Store


def run_serial(fn, space, path, **kwargs):
    scan = ns.Scan(fn, space, store=path)
    scan.run(executor="serial", progress=False, **kwargs)
    return scan


def test_scalars_arrays_dataarrays_strings_bools_round_trip(tmp_path):
    def model(x: int):
        t = np.arange(4) * 0.5
        return {
            "f": x / 3,
            "i": x * 10,
            "b": x % 2 == 0,
            "s": f"x is {x} ✓",
            "arr": np.arange(3) + x,
            "trace": xr.DataArray(np.sin(t * x), dims="time", coords={"time": t}),
            "flags": np.array([True, x > 1]),
        }

    scan = run_serial(model, ns.grid(x=[1, 2, 3]), tmp_path / "s")
    ds = ns.open_store(tmp_path / "s")
    assert ds.f.dtype == np.float64 and ds.f.values.tolist() == [1 / 3, 2 / 3, 1.0]
    assert ds.i.dtype == np.int64 and ds.i.values.tolist() == [10, 20, 30]
    assert ds.b.dtype == bool and ds.b.values.tolist() == [False, True, False]
    assert ds.s.values.tolist() == ["x is 1 ✓", "x is 2 ✓", "x is 3 ✓"]
    assert ds.arr.sel(x=2).values.tolist() == [2, 3, 4]
    assert ds.time.values.tolist() == [0.0, 0.5, 1.0, 1.5]
    np.testing.assert_array_equal(ds.trace.sel(x=3).values, np.sin(np.arange(4) * 0.5 * 3))
    assert ds.flags.dtype == bool and ds.flags.sel(x=1).values.tolist() == [True, False]
    xr.testing.assert_identical(scan.results(), ds)


def test_variable_length_results_round_trip_exactly(tmp_path):
    def spikes(n: int):
        rng = np.random.default_rng(n)
        return {"times": np.sort(rng.random(n)), "ids": np.arange(n, dtype=np.int32)}

    run_serial(spikes, ns.grid(n=[0, 1, 5, 3]), tmp_path / "s", flush_every=2)
    ds = ns.open_store(tmp_path / "s")
    assert "times_index_length" in ds
    for n in [0, 1, 5, 3]:
        row = ds.sel(n=n)
        length = int(row.times_index_length)
        assert length == n
        expected = np.sort(np.random.default_rng(n).random(n))
        np.testing.assert_array_equal(row.times.values[:length], expected)
        assert np.isnan(row.times.values[length:]).all()
        assert row.ids_index_length == n


def test_failures_are_recorded_with_traceback_and_the_scan_goes_on(tmp_path):
    def fragile(x: int):
        if x == 2:
            raise ValueError("x=2 is singular")
        return x * 1.5

    scan = run_serial(fragile, ns.grid(x=[1, 2, 3]), tmp_path / "s")
    ds = scan.results()
    assert ds.ns_status.values.tolist() == ["done", "failed", "done"]
    assert ds.ns_error.sel(x=2).item() == "ValueError: x=2 is singular"
    assert "raise ValueError" in ds.ns_traceback.sel(x=2).item()
    assert np.isnan(ds.result.sel(x=2))
    assert ds.result.sel(x=3) == 4.5


def test_unstorable_results_fail_only_that_point(tmp_path):
    def odd(x: int):
        if x == 1:
            return {"y": object()}
        if x == 2:
            return {"y": 1 + 2j}
        return {"y": float(x)}

    scan = run_serial(odd, ns.grid(x=[1, 2, 3]), tmp_path / "s")
    ds = scan.results()
    assert ds.ns_status.values.tolist() == ["failed", "failed", "done"]
    assert "cannot be stored" in ds.ns_error.sel(x=1).item()
    assert "complex" in ds.ns_error.sel(x=2).item()


def test_provenance_is_kept(tmp_path):
    def model(x: int):
        return x

    run_serial(model, ns.grid(x=[1, 2]), tmp_path / "s")
    ds = ns.open_store(tmp_path / "s")
    runs = json.loads(ds.attrs["provenance"])
    (run_id, record), = runs.items()
    assert set(ds.ns_run.values.tolist()) == {run_id}
    assert record["function"].endswith("model")
    assert len(record["source_sha256"]) == 64
    assert record["packages"]["numpy"] == np.__version__
    from importlib import metadata
    assert record["packages"] == {p: metadata.version(p) for p in record["packages"]}
    assert {"notebookscan", "numpy", "xarray", "netCDF4"} <= set(record["packages"])
    assert record["host"] and record["created"]
    assert (ds.ns_duration >= 0).all() and ds.ns_host.values.tolist()[0]
    assert ds.ns_finished.dtype.kind == "M"


def _shard_paths(path):
    store = Store(path)
    return [os.path.join(store.shards_dir, n) for n in store.shard_files()]


def test_a_truncated_shard_is_reported_set_aside_and_the_rest_loads(tmp_path):
    def model(x: int):
        return x * 2

    path = tmp_path / "s"
    run_serial(model, ns.grid(x=range(6)), path, flush_every=2)
    shards = _shard_paths(path)
    assert len(shards) >= 2
    victim = shards[1]
    from notebookscan.store.shards import read_shard

    lost = read_shard(victim).n
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    with pytest.warns(ns.StoreWarning, match=os.path.basename(victim)):
        ds = ns.open_store(path)
    assert (ds.ns_status == "done").sum() == 6 - lost
    quarantined = sorted(os.listdir(os.path.join(path, "quarantine")))
    assert quarantined == [os.path.basename(victim), os.path.basename(victim) + ".reason.txt"]
    # re-running computes exactly the lost points
    scan = ns.Scan(model, ns.grid(x=range(6)), store=path)
    progress = scan.run(executor="serial", progress=False).progress
    assert progress.done == lost
    assert ns.open_store(path).result.values.tolist() == [0, 2, 4, 6, 8, 10]


def test_garbage_file_is_reported_by_verify(tmp_path):
    path = tmp_path / "s"
    run_serial(lambda x: x, ns.grid(x=[1, 2]), path)
    bad = os.path.join(path, "shards", "someone.elsewhere.1.0.deadbeef.nc")
    with open(bad, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    report = ns.verify(path)
    assert not report.healthy and list(report.corrupt) == [os.path.basename(bad)]
    assert report.points == 2


def test_compaction_keeps_everything_and_survives_a_kill_between_write_and_delete(tmp_path):
    def model(x: int):
        return {"y": x * 0.5, "v": np.arange(x + 1.0)}

    path = tmp_path / "s"
    run_serial(model, ns.grid(x=range(10)), path, flush_every=3)
    before = ns.open_store(path)
    assert len(Store(path).shard_files()) >= 2
    # a compaction killed after writing the compacted shard: old shards still present
    store = Store(path)
    from notebookscan.store.maintenance import table_to_shard

    store.write(table_to_shard(store.table()))
    xr.testing.assert_identical(ns.open_store(path), before)
    report = ns.compact(path)
    assert report.shards_after == 1, report
    xr.testing.assert_identical(ns.open_store(path), before)


def test_compaction_in_passes_bounded_by_memory(tmp_path):
    def model(x: int):
        return {"y": x * 0.5, "status_text": "ok" if x % 3 else "a longer text"}

    path = tmp_path / "s"
    run_serial(model, ns.grid(x=range(60)), path, flush_every=5)
    before = ns.open_store(path)
    store = Store(path)
    sizes = [store.read_shard(name, ["status"]).n for name in store.shard_files()]
    n = len(sizes)
    assert n >= 4
    # a budget smaller than any shard: each pass reads just two shards and writes one
    report = store.compact(max_memory_bytes=1)
    assert (report.shards_before, report.shards_after, report.points) == (
        n, (n + 1) // 2, sum(sizes[: n - n % 2])), report
    xr.testing.assert_identical(ns.open_store(path), before)
    assert Store(path).compact().shards_after == 1
    xr.testing.assert_identical(ns.open_store(path), before)


def test_merge_copies_shards_and_reports_conflicts(tmp_path):
    def model(x: int):
        return x * 1.0

    def other(x: int):
        return x * 1.0 + (x == 2)

    run_serial(model, ns.grid(x=[1, 2, 3]), tmp_path / "a")
    run_serial(other, ns.grid(x=[2, 3, 4]), tmp_path / "b")
    report = ns.merge(tmp_path / "b", tmp_path / "a")
    shards_of_b = Store(tmp_path / "b").shard_files()
    assert sorted(report.copied) == shards_of_b
    assert report.conflicts == [ns.point_key({"x": 2})]
    assert "1 conflicting" in str(report)
    ds = ns.open_store(tmp_path / "a")
    assert ds.x.values.tolist() == [1, 2, 3, 4]
    again = ns.merge(tmp_path / "b", tmp_path / "a")
    assert again.copied == [] and sorted(again.already_present) == shards_of_b


def test_merge_refuses_path_escaping_names(tmp_path):
    src = tmp_path / "src"
    run_serial(lambda x: x, ns.grid(x=[1]), src)
    os.rename(_shard_paths(src)[0], os.path.join(src, "shards", "evil name;rm -rf.nc"))
    with pytest.raises(ns.StoreError, match="refusing"):
        ns.merge(src, tmp_path / "dest")
    os.rename(os.path.join(src, "shards", "evil name;rm -rf.nc"), tmp_path / "elsewhere.nc")
    os.symlink(tmp_path / "elsewhere.nc", os.path.join(src, "shards", "link.nc"))
    with pytest.raises(ns.StoreError, match="symbolic link"):
        ns.merge(src, tmp_path / "dest")


def test_opening_a_non_store_names_the_path(tmp_path):
    with pytest.raises(ns.StoreError, match="not a notebookscan store"):
        ns.open_store(tmp_path / "nothing")


def test_store_files_are_plain_netcdf_without_pickles(tmp_path):
    import netCDF4

    run_serial(lambda x: {"y": x}, ns.grid(x=[1, 2]), tmp_path / "s")
    for shard in _shard_paths(tmp_path / "s"):
        with open(shard, "rb") as f:
            assert f.read(8) == b"\x89HDF\r\n\x1a\n"
        with netCDF4.Dataset(shard) as nc:
            assert {"ns_key", "ns_status", "ns_seed", "x", "y"} <= set(nc.variables)


def test_lazy_open_equals_eager_open(tmp_path):
    def model(x: int, y: str):
        return {"v": np.full(x + 1, float(x)), "z": len(y) * x}

    path = tmp_path / "s"
    run_serial(model, ns.grid(x=[1, 2, 3], y=["a", "bb"]), path, flush_every=2)
    eager = ns.open_store(path, lazy=False)
    lazy = ns.open_store(path, lazy=True)
    assert lazy.v.chunks is not None
    np.testing.assert_array_equal(lazy.z.values, eager.z.values)
    np.testing.assert_array_equal(lazy.v.values, eager.v.values)
    assert lazy.ns_status.values.tolist() == eager.ns_status.values.tolist()


def test_warnings_do_not_fire_for_a_healthy_store(tmp_path):
    run_serial(lambda x: x, ns.grid(x=[1, 2]), tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ns.open_store(tmp_path / "s")


def test_incompressible_and_small_noisy_arrays_are_stored(tmp_path):
    def noisy(i: int):
        rng = np.random.default_rng(i)
        return {"small": rng.normal(size=(10, 10)),
                "entropy": rng.integers(0, 2**62, size=2000),
                "big": rng.normal(size=5000)}

    scan = ns.Scan(noisy, ns.grid(i=range(4)), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ds = ns.open_store(tmp_path / "s")
    assert (ds.ns_status == "done").all()
    for i in range(4):
        rng = np.random.default_rng(i)
        np.testing.assert_array_equal(ds.small.sel(i=i).values, rng.normal(size=(10, 10)))
        np.testing.assert_array_equal(ds.entropy.sel(i=i).values, rng.integers(0, 2**62, size=2000))
        np.testing.assert_array_equal(ds.big.sel(i=i).values, rng.normal(size=5000))


def test_runs_reads_provenance_without_loading_results(tmp_path):
    path = tmp_path / "s"
    run_serial(lambda x: np.zeros(1000) + x, ns.grid(x=[1, 2]), path)
    run_serial(lambda x: np.zeros(1000) + x, ns.grid(x=[3]), path)
    runs = Store(path).runs()
    assert len(runs) == 2 and all("source_sha256" in r for r in runs.values())
    assert set(runs) == set(ns.open_store(path).ns_run.values.tolist())


def _scalar_model(a: float, b: int):
    if a == 0.5 and b == 1:
        raise ValueError("a failure with a message longer than sixty-four bytes, kept whole")
    return {"y": a * b, "label": f"b={b}"}


def test_shards_in_the_first_format_still_load_next_to_new_ones(tmp_path, monkeypatch):
    """Format 1 kept bookkeeping text as variable-length strings and compressed no 1-D
    column; stores holding such shards read, open lazily and compact as before."""
    import notebookscan.store.shards as shards

    path = tmp_path / "s"
    space = ns.grid(a=[0.0, 0.5, 1.0], b=range(300))
    with monkeypatch.context() as m:  # write the first half like format 1 did
        m.setattr(shards, "CHAR_MAX", -1)
        m.setattr(shards, "COLUMN_COMPRESS_MIN", 10**9)
        m.setattr(shards, "FORMAT_VERSION", 1)
        run_serial(_scalar_model, space.where(lambda p: p["b"] < 150), path)
    with pytest.warns(UserWarning, match="failed in earlier runs"):
        run_serial(_scalar_model, space, path)
    files = _shard_paths(path)
    import netCDF4

    with netCDF4.Dataset(files[0]) as old, netCDF4.Dataset(files[-1]) as new:
        assert old.variables["status"].dtype is str and old.notebookscan_format == 1
        assert new.variables["ns_status"].dtype == "S1" and new.notebookscan_format == 3
    ds = ns.open_store(path)
    assert (ds.ns_status == "failed").sum() == 1
    assert ds.ns_error.sel(a=0.5, b=1).item().startswith("ValueError: a failure")
    assert ds.label.sel(a=1.0, b=299).item() == "b=299"
    assert ds.ns_key.dtype == object and len(set(ds.ns_key.values.ravel())) == 900
    assert set(ds.ns_host.values.ravel()) == {ds.ns_host.values.ravel()[0]}
    lazy = ns.open_store(path, lazy=True)
    np.testing.assert_array_equal(lazy.y.values, ds.y.values)
    for name in ("ns_status", "ns_error", "label", "ns_key", "ns_host"):
        assert lazy[name].values.tolist() == ds[name].values.tolist(), name
    ns.compact(path)
    xr.testing.assert_identical(ns.open_store(path), ds)


def test_a_scalar_scan_stores_few_bytes_per_point(tmp_path):
    path = tmp_path / "s"
    run_serial(lambda a, b: a * b, ns.grid(a=[i * 0.01 for i in range(100)], b=range(100)),
               path)
    size = sum(os.path.getsize(p) for p in _shard_paths(path))
    assert size / 10_000 < 60, f"{size / 10_000:.1f} bytes per point"  # 460 in format 1


def test_provenance_is_stored_once_per_run(tmp_path):
    import netCDF4

    path = tmp_path / "s"
    scan = run_serial(lambda x: x * 2.0, ns.grid(x=range(40)), path, flush_every=10)
    run_serial(lambda x: x * 2.0, ns.grid(x=range(40, 60)), path, flush_every=10)
    held = []
    for file in _shard_paths(path):
        with netCDF4.Dataset(file) as nc:
            if "provenance" in nc.ncattrs():
                held.append(json.loads(nc.provenance))
    assert len(_shard_paths(path)) > 2 and len(held) == 2  # several shards a run, one with it
    runs = Store(path).runs()
    assert set(runs) == set(ns.open_store(path).ns_run.values.tolist()) and len(runs) == 2
    assert json.loads(ns.open_store(path).attrs["provenance"]).keys() == runs.keys()
    assert scan.store.runs() == runs


@pytest.mark.parametrize("lazy", [False, True])
def test_big_float_results_of_a_failed_point_read_as_nan(tmp_path, lazy):
    """Rows of big arrays are written point by point; a failed point's row is never
    written and must read as missing, not as netCDF's default fill value."""
    def f(x: int):
        if x == 1:
            raise ValueError("no result for this point")
        return {"trace": np.full(20_000, float(x))}

    path = tmp_path / "s"
    run_serial(f, ns.grid(x=range(3)), path)
    ds = ns.open_store(path, lazy=lazy).load()
    assert ds.ns_status.values.tolist() == ["done", "failed", "done"]
    trace = ds.trace.values
    assert np.isnan(trace[1]).all()
    assert (trace[0] == 0.0).all() and (trace[2] == 2.0).all()


def test_bookkeeping_leaves_the_users_names_free(tmp_path):
    # the package's own model scans `duration`; results may be called status or error, a
    # space may set `seed` itself: none of them clashes with the store's ns_* bookkeeping
    from notebookscan.models import firing_rate

    path = tmp_path / "rates"
    space = ns.grid(k=[0.0, 10.0], duration=[0.05, 0.1], n_neurons=5)
    run_serial(firing_rate, space, path)
    ds = ns.open_store(path)
    assert ds.duration.values.tolist() == [0.05, 0.1]  # the parameter
    assert (ds.ns_duration >= 0).all() and ds.ns_duration.attrs["units"] == "s"
    assert (ds.ns_status == "done").all() and ds.rate.shape == (2, 2, 1)
    other = tmp_path / "names"
    run_serial(lambda x, seed: {"status": x + seed, "error": -x},
               ns.grid(x=[1, 2], seed=[7]), other)
    named = ns.open_store(other)
    assert (named.ns_status == "done").all()
    assert named.status.values.ravel().tolist() == [8, 9]  # the user's result
    assert named.error.values.ravel().tolist() == [-1, -2]
    assert named.seed.values.tolist() == [7]  # a parameter called seed is stored too
    with pytest.raises(ns.SpaceError, match="'ns_status' is reserved"):
        ns.Scan(lambda ns_status: 0, ns.grid(ns_status=[1]), store=tmp_path / "x")


def test_a_shard_of_every_kind_of_variable_reads_back_as_written(tmp_path):
    # every variable is defined before any is written: each must still hold its data
    import time

    from notebookscan.results import Value
    from notebookscan.store.maintenance import check_written
    from notebookscan.store.shards import Record, read_shard, shard_from_records

    now = time.time()
    records = []
    for i, n in enumerate([200_000, 10, 3]):  # lengths this different: stored ragged
        values = {"wave": Value(np.arange(n, dtype=np.float64), ("t",)),
                  "trace": Value(np.arange(4.0) * i, ("s",), {"s": np.arange(4.0) + i}),
                  "flag": Value(bool(i % 2)), "label": Value(f"p{i}"),
                  "big": Value(np.full((8, 1024), float(i)), ("r", "c"))}
        records.append(Record(f"{i:032x}", {"a": i * 0.5, "on": bool(i), "who": f"w{i}"},
                              i, "failed" if i == 2 else "done",
                              {} if i == 2 else values, "E" * (100 * i), "tb", now, now + 1,
                              "host", f"pid {i}", "run"))
    shard = shard_from_records(["a", "on", "who"], records, {})
    store = Store(tmp_path / "s")
    store.prepare(ns.Layout("points", ("a", "on", "who")), ["a", "on", "who"])
    name = store.write(shard, register_runs=False)
    path = os.path.join(store.shards_dir, name)
    found = read_shard(path, text_as_bytes=True)
    assert type(found.results["wave"]).__name__ == "Ragged"
    assert found.coords["s"].ndim == 2  # the points' coordinates differ
    assert found.results["big"][1].tolist() == np.full((8, 1024), 1.0).tolist()
    assert np.isnan(found.results["big"][2]).all()  # the failed point's rows read as missing
    assert check_written(store, name, found) == ""
    assert check_written(store, name, read_shard(path)) == ""


def test_read_shard_can_leave_the_parameters_out(tmp_path):
    from notebookscan.store.shards import read_shard

    path = tmp_path / "s"
    ns.Scan(lambda x: {"y": 2.0 * x}, ns.grid(x=[1.0, 2.0]), store=path).run(
        executor="serial", progress=False)
    store = Store(path)
    shard = os.path.join(store.shards_dir, store.shard_files()[0])
    alone = read_shard(shard, ["y"], parameters=False)
    assert alone.params == {} and sorted(alone.results) == ["y"]
    assert sorted(alone.results["y"].tolist()) == [2.0, 4.0]
    assert len(alone.bookkeeping["key"]) == 2
    assert list(read_shard(shard, ["y"]).params) == ["x"]
