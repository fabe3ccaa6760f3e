"""Bad input: hostile spaces, results and functions.

Each case gets a clear error before any work starts, or a recorded failure for the
points concerned; none crashes the scan or damages the store, and the other points are
stored.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import notebookscan as ns
from notebookscan.space import RESERVED_NAMES
from notebookscan.store import Store

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def _store():
    path = tempfile.mkdtemp(prefix="ns-bad-")
    try:
        yield os.path.join(path, "store")
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _no_shards(store: str) -> bool:
    return not Store(store).exists or not Store(store).shard_files()


def _healthy(store: str) -> None:
    report = ns.verify(store)
    assert report.healthy, str(report)


# ----------------------------------------------------------------------------- spaces

weird_values = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                         st.just(np.float64("nan")))


@SETTINGS
@given(bad=weird_values, good=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=4))
def test_non_finite_parameter_values_are_refused_before_work(bad, good):
    calls = []
    with _store() as store:
        with pytest.raises(ns.NotebookscanError, match=r"finite|nan|inf|NaN"):
            ns.Scan(lambda x: calls.append(x) or x, ns.grid(x=[*good, bad]),
                    store=store).run(executor="serial", progress=False)
        assert not calls and _no_shards(store)


@SETTINGS
@given(name=st.sampled_from(sorted(RESERVED_NAMES)))
def test_reserved_parameter_names_are_refused_by_name(name):
    with _store() as store:
        with pytest.raises(ns.NotebookscanError, match=name):
            def f(**p):
                return 1.0
            ns.Scan(f, ns.grid(**{name: [1, 2]}), store=store).run(executor="serial",
                                                                    progress=False)
        assert _no_shards(store)


@SETTINGS
@given(name=st.text(min_size=1, max_size=400))
def test_unicode_and_long_parameter_names_work_or_are_refused_up_front(name):
    def f(**p):  # a function taking **kwargs also receives `seed`
        return float(sum(v for k, v in p.items() if k != "seed"))

    with _store() as store:
        try:
            scan = ns.Scan(f, ns.grid(**{name: [1, 2, 3]}), store=store)
            scan.run(executor="serial", progress=False)
        except ns.NotebookscanError as exc:
            assert _no_shards(store), "refused after work started"
            assert str(exc)
            return
        _healthy(store)
        ds = ns.open_store(store)
        assert (ds.ns_status == "done").all()
        assert sorted(ds.result.values.ravel().tolist()) == [1.0, 2.0, 3.0]


def test_empty_axis_is_a_clear_error():
    with pytest.raises(ns.SpaceError, match="empty"):
        ns.grid(x=[])


# ----------------------------------------------------------------------------- results

def _unpicklable():
    return lambda: None


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)
result_values = st.one_of(
    finite_or_not,
    st.integers(-(2**62), 2**62),
    st.booleans(),
    st.text(max_size=30),
    arrays(np.float64, st.integers(0, 6), elements=finite_or_not),
    arrays(np.int32, st.tuples(st.integers(0, 3), st.integers(0, 3))),
    st.builds(object),
    st.builds(_unpicklable),
    st.none(),
    st.just({"nested": {"dict": 1}}),
)
# names NetCDF refuses, names too long once the store appends '_index_length', names
# of parameters, bookkeeping variables and of other results' dims, lengths, coordinates
BAD_NAMES = [":", "/", "a/b", "", " a", "a ", "-a", "a\x01", "a\x7f", "\x00", "e\u0301",
             "a" * 256, "λ" * 128, "a" * 250, "x", "ns_seed", "point", "y_index",
             "y_index_length", "y_index_coord", "result_index"]
result_names = st.one_of(
    st.sampled_from(["y", "x_index", "y_length", "λ", "name with spaces", "_y", "a:b",
                     *BAD_NAMES, *sorted(RESERVED_NAMES)]),
    st.from_regex(r"[A-Za-z\u00c0-\u024f][A-Za-z0-9_\u00c0-\u024f]{0,250}", fullmatch=True),
    st.text(max_size=300),
)
per_point = st.dictionaries(result_names, result_values, min_size=1, max_size=3)


@SETTINGS
@given(returns=st.lists(st.one_of(per_point, result_values), min_size=2, max_size=5))
def test_any_returned_values_fail_only_their_point(returns):
    """Whatever each point returns (any value, any result name), the scan ends normally,
    the store stays healthy and every point is done or failed with an error."""
    def f(x: int):
        return returns[x]

    with _store() as store:
        progress = ns.Scan(f, ns.grid(x=list(range(len(returns)))), store=store).run(
            executor="serial", progress=False).progress
        assert progress.done + progress.failed == len(returns)
        _healthy(store)
        ds = ns.open_store(store)
        status = ds.ns_status.values.ravel().tolist()
        assert set(status) <= {"done", "failed"} and len(status) == len(returns)
        errors = ds.ns_error.values.ravel().tolist()
        assert all(e for s, e in zip(status, errors, strict=True) if s == "failed")


@pytest.mark.parametrize("returns", [
    [{"y": 1.0}, {"ns_status": np.zeros(2)}],
    [{"y": 1.0}, {"ns_key": np.zeros(2)}],
    [{}, 0.0, np.array([])],
    [{"y": 1.0}, {":": 0.0}],
    [0.0, ""],
], ids=["status-array", "key-array", "dims-after-empty", "illegal-netcdf-name",
        "float-then-string"])
def test_rejected_results_fail_only_their_point(tmp_path, returns):
    store = tmp_path / "s"
    ns.Scan(lambda x: returns[x], ns.grid(x=list(range(len(returns)))), store=store).run(
        executor="serial", progress=False)
    ds = ns.open_store(store)
    assert ds.ns_status.sel(x=0).item() == "done"


@pytest.mark.parametrize("name", ["ns_status", "x"])
def test_reserved_result_name_as_a_scalar_fails_only_its_point(tmp_path, name):
    store = tmp_path / "s"
    ns.Scan(lambda x: {name: 0.0} if x == 1 else {"y": 1.0}, ns.grid(x=[0, 1, 2]),
            store=store).run(executor="serial", progress=False)
    ds = ns.open_store(store)
    assert ds.ns_status.sel(x=1).item() == "failed"
    assert (ds.ns_status.sel(x=[0, 2]) == "done").all()


@pytest.mark.parametrize("name", BAD_NAMES[:14], ids=repr)
def test_result_names_netcdf_refuses_fail_their_point_with_a_clear_error(tmp_path, name):
    store = tmp_path / "s"
    returns = [{"y": 1.0}, {name: 0.0}, {"y": np.arange(3.0), name: np.zeros(2)}, 2.0]
    progress = ns.Scan(lambda x: returns[x], ns.grid(x=[0, 1, 2, 3]), store=store).run(
        executor="serial", progress=False).progress
    # 250 bytes is a valid name, too long only once the store appends '_index_length'
    bad = [2] if name == "a" * 250 else [1, 2]
    assert (progress.done, progress.failed) == (4 - len(bad), len(bad))
    _healthy(store)
    ds = ns.open_store(store)
    assert [x for x in range(4) if ds.ns_status.sel(x=x).item() == "failed"] == bad
    for x in bad:
        error = ds.ns_error.sel(x=x).item()
        assert error.startswith("ResultError") and repr(name) in error, error
        assert "names must be" in error, error


@pytest.mark.parametrize("name", ["y_index", "y_index_length", "y_index_coord", "t"])
def test_result_named_like_another_points_dim_fails_only_its_point(tmp_path, name):
    import xarray as xr

    def f(x: int):
        if x == 1:
            return {name: 1.0}
        if x == 2:
            return {"z": xr.DataArray(np.ones(2), dims="t", coords={"t": [0.0, 1.0]})}
        return {"y": np.arange(3.0)}

    store = tmp_path / "s"
    ns.Scan(f, ns.grid(x=[0, 1, 2]), store=store).run(executor="serial", progress=False,
                                                        chunk_size=3, flush_every=10)
    _healthy(store)
    ds = ns.open_store(store)
    assert ds.ns_status.values.tolist() == ["done", "failed", "done"]
    assert repr(name) in ds.ns_error.sel(x=1).item()
    np.testing.assert_array_equal(ds.y.sel(x=0), [0.0, 1.0, 2.0])


def test_result_named_like_its_own_dim_fails_its_point(tmp_path):
    import xarray as xr

    store = tmp_path / "s"
    returns = [{"a": np.zeros(2), "a_index_length": 1.0},
               {"t": xr.DataArray(np.ones(2), dims="t")}, {"y": 1.0}]
    ns.Scan(lambda x: returns[x], ns.grid(x=[0, 1, 2]), store=store).run(
        executor="serial", progress=False)
    ds = ns.open_store(store)
    assert ds.ns_status.values.tolist() == ["failed", "failed", "done"]
    assert "'a_index_length'" in ds.ns_error.sel(x=0).item()


@SETTINGS
@given(values=st.lists(finite_or_not, min_size=1, max_size=6))
def test_nan_and_inf_results_round_trip(values):
    with _store() as store:
        ns.Scan(lambda i: values[i], ns.grid(i=list(range(len(values)))), store=store).run(
            executor="serial", progress=False)
        got = ns.open_store(store).result.values
        np.testing.assert_array_equal(got, np.array(values))


def test_huge_and_empty_arrays(tmp_path):
    def f(i: int):
        if i == 0:
            return {"a": np.zeros((2, 3)), "e": np.array([])}
        if i == 2:
            return {"a": np.zeros((5, 1)), "huge": np.ones(3_000_000)}
        return {"a": np.ones((1, 2))}

    store = tmp_path / "s"
    ns.Scan(f, ns.grid(i=[0, 1, 2, 3]), store=store).run(executor="serial", progress=False)
    _healthy(store)
    ds = ns.open_store(store)
    assert (ds.ns_status == "done").all()
    assert int(ds.huge_index_length.sel(i=2)) == 3_000_000


# ----------------------------------------------------------------------------- functions

def _hang(x: int):
    if x == 2:
        time.sleep(3600)
    return x


def _chatty(x: int):
    sys.stdout.write("x" * 2**20 * 3 + "\n")  # 3 MiB
    return x


def _exits(x: int):
    if x == 2:
        sys.exit(3)
    return x


def _os_exit(x: int):
    if x == 2:
        os._exit(9)
    return x


def _segfault(x: int):
    if x == 2:
        import ctypes

        ctypes.string_at(0)
    return x


CASES = {
    "hang": (_hang, "PointTimeout"),
    "sys.exit": (_exits, "SystemExit"),
    "os._exit": (_os_exit, "WorkerLost"),
    "segfault": (_segfault, "WorkerLost"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dangerous_function_on_processes(tmp_path, case):
    """The bad point is recorded failed with a clear error; every other point is stored."""
    fn, error = CASES[case]
    store = tmp_path / "s"
    progress = ns.Scan(fn, ns.grid(x=list(range(6))), store=store).run(
        executor="processes", progress=False, timeout=2, max_retries=1, chunk_size=1
    ).progress
    _healthy(store)
    ds = ns.open_store(store)
    assert ds.ns_status.sel(x=2).item() == "failed"
    assert error in str(ds.ns_error.sel(x=2).item())
    assert set(ds.ns_status.values.tolist()) <= {"done", "failed"}  # every point recorded
    assert progress.done + progress.failed == 6 and progress.done >= 1


def test_megabytes_of_output_do_not_disturb_the_scan(tmp_path, capfd):
    store = tmp_path / "s"
    ns.Scan(_chatty, ns.grid(x=[0, 1, 2]), store=store).run(executor="processes",
                                                            progress=False)
    capfd.readouterr()
    _healthy(store)
    assert (ns.open_store(store).ns_status == "done").all()


def test_os_exit_on_an_engine_is_recorded_and_the_rest_runs(tmp_path, ipp_executor):
    def bad(x: int):  # defined here: pickled by value, engines need not import this module
        if x == 2:
            os._exit(9)
        return x

    store = tmp_path / "s"
    ns.Scan(bad, ns.grid(x=list(range(6))), store=store).run(
        executor=ipp_executor, progress=False, max_retries=0, chunk_size=1)
    _healthy(store)
    ds = ns.open_store(store)
    assert ds.ns_status.sel(x=2).item() == "failed"
    assert "WorkerLost" in str(ds.ns_error.sel(x=2).item())
    assert (ds.ns_status.sel(x=[0, 1, 3, 4, 5]) == "done").all()
