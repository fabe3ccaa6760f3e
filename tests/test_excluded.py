"""Grid cells a scan's space drops are `excluded`, not `missing`, for every reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.store.dataset import broadcast_excluded
from notebookscan.store.scanned import read_records, space_record
from notebookscan.store.schema import SCANNED, Layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def drive(amp: float, freq: float):
    return amp * freq + 1.0  # at amp == 0 the frequency does not matter


def _space(keep_freq: float = 1.0):
    """amp × freq with one frequency kept at amp == 0 (the singular dimension)."""
    return ns.grid(amp=[0.0, 0.5, 1.0], freq=[1.0, 2.0, 3.0, 4.0]).where(
        lambda p: p["amp"] > 0 or p["freq"] == keep_freq)


def _status_json(path) -> dict:
    out = subprocess.run([sys.executable, "-m", "notebookscan", "status", str(path), "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _counts(ds) -> dict[str, int]:
    values, counts = np.unique(ds.ns_status.values.astype(str), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def test_every_reader_labels_dropped_cells_excluded(tmp_path):
    store = tmp_path / "s"
    scan = ns.Scan(drive, _space(), store=store)
    scan.run(executor="serial", progress=False)
    expected = {"done": 9, "excluded": 3}
    assert _counts(scan.results()) == expected
    eager, lazy = ns.open_store(store), ns.open_store(store, lazy=True)
    assert _counts(eager) == expected and _counts(lazy) == expected
    assert eager.ns_status.sel(amp=0.0, freq=2.0).item() == "excluded"
    assert (eager.ns_status.values == scan.results().ns_status.values).all()
    assert ns.Store(store).dataset(lazy=False).ns_status.sel(amp=0.0, freq=4.0) == "excluded"
    summary = _status_json(store)
    assert (summary["missing"], summary["excluded"], summary["grid_size"]) == (0, 3, 12)
    text = subprocess.run([sys.executable, "-m", "notebookscan", "status", str(store)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT}).stdout
    assert "0 missing, 3 excluded" in text


def test_a_cell_dropped_by_one_run_and_scanned_by_another_is_missing(tmp_path):
    store = tmp_path / "s"
    ns.Scan(drive, _space(keep_freq=1.0), store=store).run(executor="serial", progress=False)
    # a second run keeps freq=2 at amp=0 but is killed before its first shard: its cell
    # was scanned (missing), freq=3 and 4 no run holds (excluded)
    before = set(os.listdir(store / "shards"))
    ns.Scan(drive, ns.grid(amp=0.0, freq=2.0), store=store).run(executor="serial",
                                                                  progress=False)
    for name in set(os.listdir(store / "shards")) - before:
        os.remove(store / "shards" / name)
    ds = ns.open_store(store)
    assert ds.ns_status.sel(amp=0.0).values.tolist() == ["done", "missing", "excluded", "excluded"]
    assert (_status_json(store)["missing"], _status_json(store)["excluded"]) == (1, 2)
    # run it now: done; the union of both spaces leaves two cells excluded
    ns.Scan(drive, ns.grid(amp=0.0, freq=2.0), store=store).run(executor="serial",
                                                                  progress=False)
    assert ns.open_store(store).ns_status.sel(amp=0.0).values.tolist() == [
        "done", "done", "excluded", "excluded"]


def test_stores_without_records_keep_showing_missing(tmp_path):
    """A store written before records existed (or whose record is unreadable) cannot
    tell dropped from missing: it says missing, as it always did."""
    store = tmp_path / "s"
    ns.Scan(drive, _space(), store=store).run(executor="serial", progress=False)
    (rid,) = read_records(str(store))
    record = store / SCANNED / f"{rid}.json"
    record.write_text("{not json")
    with pytest.warns(ns.StoreWarning, match="cannot be read"):
        ds = ns.open_store(store)
    assert _counts(ds) == {"done": 9, "missing": 3}
    os.remove(record)
    assert _counts(ns.open_store(store)) == {"done": 9, "missing": 3}


def test_records_are_read_safely(tmp_path):
    """Symlinks and FIFOs in scanned/ are not followed or opened; a record that lies
    about its size is refused; reading never blocks."""
    store = tmp_path / "s"
    ns.Scan(drive, _space(), store=store).run(executor="serial", progress=False)
    scanned = store / SCANNED
    os.mkfifo(scanned / ("a" * 32 + ".json"))
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"format": 1}))
    os.symlink(outside, scanned / ("b" * 32 + ".json"))
    bomb = space_record(["amp", "freq"], {"amp": np.zeros(1), "freq": np.zeros(1)})
    bomb.pop("_cells")
    bomb["axes"] = {"amp": list(range(10**6)), "freq": list(range(10**6))}
    (scanned / ("c" * 32 + ".json")).write_text(json.dumps(bomb))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_records(str(store))
        ds = ns.open_store(store)
    assert len(records) == 1 and _counts(ds) == {"done": 9, "excluded": 3}
    assert sum("cannot be read" in str(w.message) for w in caught) >= 3


def test_space_records_stay_small(tmp_path):
    """One bit a cell: a 250 000-cell grid costs kilobytes on disk, not a key a point."""
    axes = {"a": np.arange(500.0), "b": np.arange(500.0)}
    space = ns.grid(**axes)
    record = space_record(["a", "b"], space.column_arrays())
    size = len(json.dumps({k: v for k, v in record.items() if k != "_cells"}))
    assert record["encoding"] == "mask" and size < 64 * 1024
    sparse = space_record(["a", "b"], {"a": np.arange(1000.0), "b": np.arange(1000.0)})
    assert sparse["encoding"] == "cells"  # a diagonal: indices, not a 10**6-bit mask
    from notebookscan.store.scanned import covered_cells

    covered = covered_cells([sparse], {"a": np.arange(1000.0), "b": np.arange(1000.0)},
                            ["a", "b"])
    assert covered.sum() == 1000 and covered[np.arange(1000), np.arange(1000)].all()


def test_broadcast_fills_excluded_cells_along_the_named_dimension(tmp_path):
    store = tmp_path / "s"
    scan = ns.Scan(drive, _space(), store=store)
    scan.run(executor="serial", progress=False)
    filled = scan.results(broadcast="freq")
    assert filled.result.sel(amp=0.0).values.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert filled.ns_status.sel(amp=0.0, freq=3.0).item() == "excluded"  # not computed there
    np.testing.assert_array_equal(filled.result.sel(amp=1.0), [2.0, 3.0, 4.0, 5.0])
    assert ns.open_store(store, broadcast="freq").identical(
        broadcast_excluded(ns.open_store(store), "freq"))
    # along amp the lines hold several computed cells: nothing is made up
    assert np.isnan(scan.results(broadcast="amp").result.sel(amp=0.0, freq=2.0).item())
    with pytest.raises(ns.ScanError, match="grid dimensions are"):
        scan.results(broadcast="phase")
    with pytest.raises(ns.StoreError, match="grid dimensions are"):
        ns.open_store(store, broadcast="phase")


def test_broadcast_leaves_lines_whose_one_cell_is_not_done(tmp_path):
    def fails_at_zero(amp: float, freq: float):
        if amp == 0:
            raise ValueError("no drive")
        return amp * freq

    scan = ns.Scan(fails_at_zero, _space(), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    filled = scan.results(broadcast="freq")
    assert np.isnan(filled.result.sel(amp=0.0).values).all()


def test_status_of_a_store_whose_run_has_not_written_yet(tmp_path):
    store = tmp_path / "s"
    ns.Store(store).prepare(Layout("grid", ("amp", "freq")), ["amp", "freq"])  # a run starts
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-m", "notebookscan", "status", str(store)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "none stored yet" in out.stdout and "does not exist" not in out.stdout
    assert _status_json(store)["started"] is True
    os.rmdir(store / "shards")  # metadata written, shard directory not (yet)
    out = subprocess.run([sys.executable, "-m", "notebookscan", "status", str(store)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "none stored yet" in out.stdout
    gone = subprocess.run([sys.executable, "-m", "notebookscan", "status",
                           str(tmp_path / "nowhere")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert gone.returncode == 2 and "does not exist" in gone.stderr


def test_merge_carries_the_records(tmp_path):
    ns.Scan(drive, _space(), store=tmp_path / "a").run(executor="serial", progress=False)
    ns.merge(tmp_path / "a", tmp_path / "b")
    assert _counts(ns.open_store(tmp_path / "b")) == {"done": 9, "excluded": 3}


def test_plot_status_shows_excluded_cells_apart(tmp_path):
    from notebookscan.plotting import STATUS_COLORS, plot_status

    scan = ns.Scan(drive, _space(), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    fig = plot_status(ns.open_store(tmp_path / "s"))
    assert fig.axes[0].get_title() == "status: 9 done, 0 failed, 0 missing, 3 excluded"
    assert "excluded" in STATUS_COLORS
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "excluded" in labels and "missing" not in labels
