"""Units and long names: declared once (returned DataArrays, Space.with_attrs), kept in
the store (shards and notebookscan.json), given back on open, refused when they change,
and shown on plot axes."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import matplotlib
import netCDF4
import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.errors import ScanError, SpaceError, StoreError
from notebookscan.plotting import plot_result

matplotlib.use("Agg")

RATE = {"units": "Hz", "long_name": "firing rate"}
TAU = {"units": "s", "long_name": "membrane time constant"}


def model(tau: float, k: int) -> dict[str, xr.DataArray]:
    return {"rate": xr.DataArray(k / tau, attrs=RATE),
            "v": xr.DataArray(np.arange(3.0) * k, dims="time",
                              coords={"time": ("time", [0.0, 1.0, 2.0], {"units": "ms"})},
                              attrs={"units": "mV"}),
            "plain": float(k)}


def as_dataset(tau: float, k: int) -> xr.Dataset:
    return xr.Dataset({"rate": xr.DataArray(k / tau, attrs=RATE)})


def space() -> ns.Space:
    return ns.grid(tau=[0.01, 0.02], k=[1, 2, 3]).with_attrs(tau=TAU)


def run(fn, sp, store, **kw):
    return ns.Scan(fn, sp, store=store).run(executor="serial", progress=False, **kw)


def check_opened(ds: xr.Dataset) -> None:
    assert ds.rate.attrs["units"] == "Hz" and ds.rate.attrs["long_name"] == "firing rate"
    assert ds.v.attrs["units"] == "mV" and ds.time.attrs["units"] == "ms"
    assert ds.tau.attrs["units"] == "s"
    assert ds.tau.attrs["long_name"] == "membrane time constant"
    assert "units" not in ds.k.attrs and "units" not in ds.plain.attrs


def meta(store: Path) -> dict:
    return json.loads((store / "notebookscan.json").read_text())


def test_units_round_trip_through_shards_and_open_eager_and_lazy(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(model, space(), store)
    for lazy in (False, True):
        check_opened(ns.open_store(store, lazy=lazy))
    check_opened(ns.Scan(model, space(), store=store).results())
    # each shard's result variable carries them too (any NetCDF tool shows them)
    shard = next((store / "shards").glob("*.nc"))
    with netCDF4.Dataset(shard) as nc:
        assert nc["rate"].getncattr("units") == "Hz" and nc["time"].getncattr("units") == "ms"
        assert nc["rate"].getncattr("long_name") == "firing rate"
    recorded = meta(store)
    assert recorded["parameter_attrs"] == {"tau": TAU}
    assert recorded["result_attrs"]["rate"] == RATE
    assert recorded["result_attrs"]["time"] == {"units": "ms"}


def test_a_returned_dataset_keeps_its_variables_units(tmp_path: Path) -> None:
    run(as_dataset, ns.grid(tau=[0.01], k=[1, 2]), tmp_path / "s")
    assert ns.open_store(tmp_path / "s").rate.attrs == RATE


def test_units_survive_compaction_and_a_refined_second_run(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(model, space(), store)
    refined = space().refine(tau=[0.01, 0.015, 0.02])
    assert refined.attrs == {"tau": TAU}
    # units are no part of a point's key: only the new tau values are computed
    assert set(space().keys()) == set(ns.grid(tau=[0.01, 0.02], k=[1, 2, 3]).keys())
    assert ns.Scan(model, space(), store=store).refine(tau=[0.3]).space.attrs == {"tau": TAU}
    scan = ns.Scan(model, refined, store=store)
    assert len(scan.plan().to_run) == 3
    scan.run(executor="serial", progress=False)
    assert len(os.listdir(store / "shards")) == 2
    ns.compact(store)
    assert len(os.listdir(store / "shards")) == 1
    for lazy in (False, True):
        ds = ns.open_store(store, lazy=lazy)
        check_opened(ds)
        assert ds.sizes["tau"] == 3


def test_a_space_keeps_its_units_through_its_algebra_and_pickling() -> None:
    sp = space()
    combined = (sp * ns.trials(2)).where(lambda p: p["k"] < 3)
    assert combined.attrs == {"tau": TAU} and len(combined) == 8
    assert (sp + ns.grid(tau=[0.5], k=[1])).attrs == {"tau": TAU}
    assert pickle.loads(pickle.dumps(sp)).attrs == {"tau": TAU}
    assert sp.describe()["attrs"] == {"tau": TAU}
    zipped = ns.zip_(tau=xr.DataArray([0.01, 0.02], dims="tau", attrs={"units": "s", "x": 1}),
                     k=[1, 2])
    assert zipped.attrs == {"tau": {"units": "s"}}
    assert ns.grid(tau=xr.DataArray([1.0, 2.0], dims="tau", attrs=TAU)).attrs == {"tau": TAU}


def test_a_space_refuses_two_units_for_one_parameter_and_bad_declarations() -> None:
    with pytest.raises(SpaceError, match="declared with units 's' and with units 'ms'"):
        _ = space() + ns.grid(tau=[0.5], k=[1]).with_attrs(tau={"units": "ms"})
    with pytest.raises(SpaceError, match="declared with units"):
        space().with_attrs(tau={"units": "ms"})
    with pytest.raises(SpaceError, match="declared with units"):
        space().refine(tau=xr.DataArray([1.0], dims="tau", attrs={"units": "ms"}))
    with pytest.raises(SpaceError, match="'speed' is not a parameter"):
        space().with_attrs(speed={"units": "m/s"})
    with pytest.raises(SpaceError, match="not text"):
        space().with_attrs(k={"units": 3})
    with pytest.raises(SpaceError, match="'scale' is not an attribute the store keeps"):
        space().with_attrs(k={"scale": "log"})
    # a second long_name is a label, not other values: the first declared is kept
    assert space().with_attrs(tau={"long_name": "tau"}).attrs == {"tau": TAU}


def test_a_store_refuses_a_space_declaring_other_units_before_running(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(model, space(), store)
    shards = sorted(os.listdir(store / "shards"))
    other = ns.grid(tau=[10.0, 20.0, 30.0], k=[1, 2, 3]).with_attrs(tau={"units": "ms"})
    for detach in (False, True):
        with pytest.raises(StoreError, match=r"'tau' has units 's'.*declares units 'ms'"):
            ns.Scan(model, other, store=store).run(executor="serial", progress=False,
                                                    detach=detach)
    assert sorted(os.listdir(store / "shards")) == shards
    assert meta(store)["parameter_attrs"] == {"tau": TAU}
    # declaring nothing, or the same units, is fine
    run(model, ns.grid(tau=[0.03], k=[1]), store)
    run(model, space().refine(tau=[0.04]), store)
    assert ns.open_store(store).tau.attrs["units"] == "s"


def test_a_point_returning_other_units_fails_and_nothing_is_mixed(tmp_path: Path) -> None:
    def unsteady(tau: float, k: int) -> xr.DataArray:
        units = "kHz" if k == 3 else "Hz"
        return xr.DataArray(k / tau, attrs={"units": units})

    store = tmp_path / "s"
    run(unsteady, ns.grid(tau=[0.01], k=[1, 2, 3]), store)
    ds = ns.open_store(store)
    # the first stored units win; which point is stored first is up to the executor
    kept = ds.result.attrs["units"]
    assert kept in ("Hz", "kHz")
    status = dict(zip([1, 2, 3], ds.ns_status.values.ravel(), strict=True))
    for k, state in status.items():
        units = "kHz" if k == 3 else "Hz"
        assert state == ("done" if units == kept else "failed"), (k, kept, status)
        if state == "failed":
            error = str(ds.ns_error.sel(k=k).values.ravel()[0])
            assert f"units {units!r}" in error and f"{kept!r}" in error


def test_a_point_whose_coordinate_has_other_units_fails(tmp_path: Path) -> None:
    def trace(k: int) -> xr.DataArray:
        units = "ms" if k == 2 else "s"
        return xr.DataArray([0.0, 1.0], dims="time",
                            coords={"time": ("time", [0.0, 1.0], {"units": units})})

    run(trace, ns.grid(k=[1, 2]), tmp_path / "s")
    ds = ns.open_store(tmp_path / "s")
    kept = ds.time.attrs["units"]  # the first stored wins, the other point fails
    done_k = 2 if kept == "ms" else 1
    other_k, other_units = 3 - done_k, "s" if kept == "ms" else "ms"
    assert str(ds.ns_status.sel(k=done_k).values) == "done"
    assert str(ds.ns_status.sel(k=other_k).values) == "failed"
    assert f"'time' has units {other_units!r}" in str(ds.ns_error.sel(k=other_k).values)


def test_a_later_run_returning_other_units_stops_and_keeps_the_store(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(model, space(), store)
    shards = sorted(os.listdir(store / "shards"))

    def in_khz(tau: float, k: int) -> xr.DataArray:
        return {"rate": xr.DataArray(k / tau / 1000, attrs={"units": "kHz"})}

    with pytest.raises(ScanError, match=r"result 'rate' is stored .* with units 'Hz'"):
        run(in_khz, space().refine(tau=[0.05]), store)
    assert sorted(os.listdir(store / "shards")) == shards
    assert ns.open_store(store).rate.attrs["units"] == "Hz"


def test_a_declared_attribute_the_store_cannot_keep_fails_the_point(tmp_path: Path) -> None:
    run(lambda k: xr.DataArray(1.0, attrs={"units": 5}), ns.grid(k=[1]), tmp_path / "s")
    ds = ns.open_store(tmp_path / "s")
    assert "'units' is the int 5, not text" in str(ds.ns_error.values.ravel()[0])


def test_a_store_without_units_opens_and_takes_the_first_declared(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(lambda tau, k: k / tau, ns.grid(tau=[0.01], k=[1, 2]), store)
    assert "parameter_attrs" not in meta(store)
    assert ns.open_store(store).result.attrs == {}
    run(lambda tau, k: xr.DataArray(k / tau, attrs={"units": "Hz"}),
        ns.grid(tau=[0.01, 0.02], k=[1, 2]).with_attrs(tau={"units": "s"}), store,
        stale="reuse")
    ds = ns.open_store(store, lazy=True)
    assert ds.result.attrs["units"] == "Hz" and ds.tau.attrs["units"] == "s"


def test_merge_joins_units_and_refuses_two_units(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run(model, space(), a)
    run(lambda tau, k: {"extra": xr.DataArray(1.0, attrs={"units": "m"})},
        ns.grid(tau=[0.5], k=[1]), b)
    ns.merge(b, a)
    ds = ns.open_store(a)
    check_opened(ds)
    assert ds.extra.attrs["units"] == "m"
    run(model, ns.grid(tau=[5.0], k=[1]).with_attrs(tau={"units": "ms"}), c)
    before = sorted(os.listdir(a / "shards"))
    with pytest.raises(StoreError, match="cannot merge: the parameter 'tau'"):
        ns.merge(c, a)
    assert sorted(os.listdir(a / "shards")) == before


def test_plots_label_axes_and_colorbars_with_long_names_and_units(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run(model, space(), store)
    ds = ns.open_store(store)
    line = plot_result(ds, "rate", x="tau", slice={"k": 1})
    assert line.axes[0].get_xlabel() == "membrane time constant [s]"
    assert line.axes[0].get_ylabel().startswith("firing rate [Hz]")
    heat = plot_result(ds, "rate", x="tau", y="k")
    assert heat.axes[0].get_xlabel() == "membrane time constant [s]"
    assert heat.axes[0].get_ylabel() == "k"
    assert heat.axes[1].get_ylabel().startswith("firing rate [Hz]")  # the colorbar
    # plain xarray plotting reads the same attributes
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ds.rate.sel(k=1).plot(ax=ax)
    assert ax.get_xlabel() == "membrane time constant [s]"
    assert ax.get_ylabel() == "firing rate [Hz]"
    mesh = ds.rate.plot(ax=Figure().add_subplot())
    assert mesh.colorbar.ax.get_ylabel() == "firing rate [Hz]"
    ax = Figure().add_subplot()
    ds.v.sel(tau=0.01, k=2).plot(ax=ax)  # a result's own dim: its coordinate's units
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time [ms]", "v [mV]")


def test_the_package_models_declare_their_units(tmp_path: Path) -> None:
    from notebookscan.cli.demo import demo_space
    from notebookscan.models import firing_rate

    space = demo_space(True).refine(k=[10], trials=1)
    run(lambda k, tau: firing_rate(k, tau, n_neurons=5, duration=0.01), space,
        tmp_path / "s")
    ds = ns.open_store(tmp_path / "s")
    assert ds.rate.attrs == RATE and ds.cv.attrs["units"] == "1"
    assert ds.v.attrs["units"] == "threshold" and ds.time.attrs["units"] == "s"
    assert ds.tau.attrs["units"] == "s" and ds.k.attrs["long_name"] == "input strength"
