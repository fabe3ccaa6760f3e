"""The widgets on adaptive scans: the explorer draws the samples and refines a drawn
region adaptively; the sweep builder offers "adaptive" as a kind of axis."""

from __future__ import annotations

import matplotlib.collections
import matplotlib.tri
import numpy as np
import pytest

pytest.importorskip("adaptive", reason="python-adaptive is not installed")

import notebookscan as ns
from notebookscan.adaptive import AdaptiveScan, Goal
from notebookscan.errors import ArgumentError
from notebookscan.plotting import plot_result
from notebookscan.widgets import Explorer, SweepBuilder

CALLS: list[tuple[float, ...]] = []


def step(x: float):
    CALLS.append((x,))
    return {"y": float(np.tanh((x - 0.3) / 0.05))}


def ring(x: float, y: float):
    CALLS.append((x, y))
    return {"z": float(np.exp(-((x * x + y * y - 0.5) ** 2) / 0.01))}


def mixed(x: float, kind: str = "a"):
    return {"y": float(x if kind == "a" else -x)}


@pytest.fixture
def ring_scan(tmp_path):
    scan = AdaptiveScan(ring, {"x": (-1, 1), "y": (-1, 1)}, tmp_path / "ring",
                        goal=Goal(points=40))
    scan.run(executor="serial", progress=False)
    return scan


def _tri(fig):
    return [c for c in fig.axes[0].collections
            if isinstance(c, (matplotlib.collections.TriMesh, matplotlib.tri.TriContourSet))
            or type(c).__name__ == "TriMesh"]


# ------------------------------------------------------------------ plots and explorer

def test_2d_samples_drawn_as_a_triangulation_with_the_points_on_top(ring_scan):
    ds = ring_scan.results()
    ds["x"].attrs["units"] = "mm"
    fig = plot_result(ds, "z", x="x", y="y")
    ax = fig.axes[0]
    assert len(_tri(fig)) == 1, ax.collections
    points = ax.collections[0]  # the samples, above the triangulation
    assert len(points.get_offsets()) == 40
    assert points.get_zorder() > _tri(fig)[0].get_zorder()
    assert ax.get_xlabel() == "x [mm]" and ax.get_ylabel() == "y"


def test_1d_samples_drawn_as_the_line_through_the_sorted_points(tmp_path):
    scan = AdaptiveScan(step, {"x": (0, 1)}, tmp_path / "s", goal=Goal(points=25))
    scan.run(executor="serial", progress=False)
    ex = Explorer(str(tmp_path / "s"), interactive=False)  # a points-layout store
    line = next(ln for ln in ex.figure().axes[0].get_lines() if ln.get_marker() == "o")
    xs = line.get_xdata()
    assert len(xs) == 25 and line.get_linestyle() == "-"
    assert (np.diff(xs) > 0).all()


def test_explorer_on_an_adaptive_scan_draws_its_samples_not_a_gappy_grid(tmp_path):
    scan = AdaptiveScan(mixed, {"x": (0, 1)}, tmp_path / "m", grid={"kind": ["a", "b"]},
                        goal=Goal(points=30), balance="npoints")
    scan.run(executor="serial", progress=False)
    ex = Explorer(scan, interactive=False)
    assert "point" in ex.view.dims  # the samples as they are
    assert ex.x.value == "x" and set(ex.sliders) == {"kind"}
    ex.sliders["kind"].value = "b"
    line = next(ln for ln in ex.figure().axes[0].get_lines() if ln.get_marker() == "o")
    assert (line.get_ydata() <= 0).all() and 10 <= len(line.get_xdata()) <= 20


def test_explorer_on_2d_adaptive_scan_shows_the_triangulation(ring_scan):
    ex = Explorer(ring_scan, x="x", y="y", interactive=False)
    assert len(_tri(ex.figure())) == 1
    assert ex.error.value == ""


# ------------------------------------------------------------------ refine adaptively

def test_drawn_region_refines_adaptively_into_the_same_store(ring_scan):
    ex = Explorer(ring_scan, x="x", y="y", interactive=False)
    panel = ex.refine
    panel.executor, panel.wait = "serial", True
    before = set(ring_scan.store.index().done_keys)
    chosen = ex.select_region(x=(0.5, 0.0), y=(0.0, 2.0))  # y clipped to the bounds
    assert chosen == {"x": (0.0, 0.5), "y": (0.0, 1.0)}
    panel.points.value = 15
    CALLS.clear()
    panel.button.click()
    assert panel.error.value == "", panel.error.value
    assert len(CALLS) == 15  # only new points ran
    assert all(0 <= x <= 0.5 and 0 <= y <= 1 for x, y in CALLS)
    after = set(ring_scan.store.index().done_keys)
    assert before < after and len(after) == len(before) + 15
    assert int(ex.ds.sizes["point"]) == 55  # the explorer shows old and new


def test_refine_adaptively_refuses_an_empty_goal_and_a_region_off_the_bounds(ring_scan):
    ex = Explorer(ring_scan, x="x", y="y", interactive=False)
    with pytest.raises(ArgumentError, match="bounds"):
        ex.select_region(x=(2.0, 3.0), y=(0.0, 0.5))
    ex.select_region(x=(0.0, 0.5), y=(0.0, 0.5))
    ex.refine.points.value = 0
    ex.refine.button.click()
    assert "at least 1" in ex.refine.error.value


def test_refine_adaptively_stays_in_the_grid_cell_shown_and_inside_the_bounds(tmp_path):
    scan = AdaptiveScan(mixed, {"x": (0, 1)}, tmp_path / "m", grid={"kind": ["a", "b"]},
                        goal=Goal(points=10), balance="npoints")
    scan.run(executor="serial", progress=False)
    ex = Explorer(scan, interactive=False)
    ex.sliders["kind"].value = "b"
    ex.select_region(x=(0.2, 0.4))
    panel = ex.refine
    panel.executor, panel.wait, panel.points.value = "serial", True, 6
    panel.bounds["x"][0].value = -1.0  # typed outside the scan's bounds: refused
    panel.button.click()
    assert "must lie inside the scan" in panel.error.value
    panel.bounds["x"][0].value = 0.2
    panel.button.click()
    assert panel.error.value == ""
    ds = scan.results()
    new = ds.isel(point=~np.isin(ds["x"].values, [0, 0.25, 0.5, 0.75, 1.0]))
    assert new.sizes["point"] == 6 and set(new["kind"].values) == {"b"}
    assert ((new["x"] >= 0.2) & (new["x"] <= 0.4)).all()


# ------------------------------------------------------------------ the builder

def test_builder_adaptive_axis_builds_and_runs_an_adaptive_scan(tmp_path):
    b = SweepBuilder(mixed, store=str(tmp_path / "b"))
    assert "adaptive" in b.rows["x"].mode.options[-1]
    b.rows["x"].mode.value = "adaptive"
    b.rows["x"].low.value, b.rows["x"].high.value = 0.0, 2.0
    b.rows["kind"].mode.value = "list"
    b.rows["kind"].values.value = "a, b"
    b.goal_points.value = 12
    assert b.spec.error == "", b.spec.error
    scan = b.scan()
    assert isinstance(scan, AdaptiveScan)
    assert scan.spec.bounds == {"x": (0.0, 2.0)} and scan.goal.points == 12
    assert "adaptive" in b.summary.value
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    assert ds.sizes["point"] == 12 and set(ds["kind"].values) == {"a", "b"}
    assert b.scan() is scan  # the same scan while the form does not change
    b.refresh()
    assert b.spec.stored == 12 and "<b>12</b> already in the store" in b.summary.value


def test_builder_refuses_adaptive_with_random_samples_trials_or_no_goal(tmp_path):
    b = SweepBuilder(ring, store=str(tmp_path / "b"))
    b.rows["x"].mode.value = "adaptive"
    b.rows["y"].mode.value = "random"
    assert "random" in b.spec.error and b.space is None
    with pytest.raises(ArgumentError):
        b.scan()
    b.rows["y"].mode.value = "linear"
    b.trials.value = 3
    assert "trials" in b.spec.error
    b.trials.value = 1
    b.goal_points.value = 0
    assert "goal" in b.spec.error
    b.goal_loss.value = 0.01
    assert b.spec.error == ""
    b.rows["x"].mode.value = "linear"  # back to a grid: a Scan as before
    assert isinstance(b.scan(), ns.Scan) and not isinstance(b.scan(), AdaptiveScan)


def test_app_run_runs_the_adaptive_scan_of_the_form(tmp_path):
    from notebookscan.widgets import ScanApp

    app = ScanApp(mixed, store=str(tmp_path / "a"), executor="serial")
    app.builder.rows["x"].mode.value = "adaptive"
    app.builder.goal_points.value = 9
    assert not app.run_shortcut.disabled
    app.run_shortcut.click()
    app.monitor.wait(timeout=30)
    assert app.monitor.state == "finished", app.monitor.message
    assert isinstance(app.monitor.scan, AdaptiveScan)
    assert ns.open_store(tmp_path / "a").sizes["point"] == 9
    assert app.monitor.counts["done"] == 9 and app.monitor.counts["total"] == 9
    assert 'data-done="9"' in app.header.value


def test_refine_adaptively_on_a_trials_scan_says_there_is_no_region(tmp_path):
    def noisy(kind: str = "a", seed: int = 0):
        return {"y": float(np.random.default_rng(seed).normal())}

    scan = AdaptiveScan(noisy, {}, tmp_path / "t", grid={"kind": ["a", "b"]}, trials=True,
                        goal=Goal(points=6))
    scan.run(executor="serial", progress=False)
    ex = Explorer(scan, interactive=False)
    with pytest.raises(ArgumentError, match="no continuous parameter"):
        ex.select_region(x=(0, 1))
