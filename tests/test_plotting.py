"""Plots of scan results: grid and points layouts, missing points, status maps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.plotting import parameters, plot_result, plot_status, result_variables

matplotlib = pytest.importorskip("matplotlib")


def model(k: float, tau: float = 0.01, seed: int = 0):
    if k > 2.5 and tau > 0.015:
        raise ValueError("unstable")
    rng = np.random.default_rng(seed)
    return {"rate": k * tau * 100 + rng.normal() * 0.1, "trace": np.arange(4.0) * k}


@pytest.fixture(scope="module")
def grid_ds(tmp_path_factory):
    """k(5) × tau(2) × trial(3), refined to k(9) so every other k is missing; some failed."""
    store = tmp_path_factory.mktemp("grid")
    scan = ns.Scan(model, ns.grid(k=[0.0, 1.0, 2.0, 3.0, 4.0], tau=[0.01, 0.02]) * ns.trials(3),
                   store=store)
    scan.run(executor="serial", progress=False)
    scan.refine(k=np.linspace(0, 4, 9))
    return scan.results()


@pytest.fixture(scope="module")
def points_ds(tmp_path_factory):
    store = tmp_path_factory.mktemp("points")
    scan = ns.Scan(model, ns.sample(24, seed=3, k=(0.1, 4.0), tau=(0.005, 0.03)), store=store)
    scan.run(executor="serial", progress=False)
    return scan.results()


def _line_data(fig):
    """The data lines (with their round markers), not error bar caps or rug marks."""
    return [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]


def _mesh(fig):
    return next(c for c in fig.axes[0].collections
                if isinstance(c, matplotlib.collections.QuadMesh))


def test_dataset_helpers(grid_ds, points_ds):
    assert parameters(grid_ds) == ["k", "tau", "trial"]
    assert parameters(points_ds) == ["k", "tau"]
    assert result_variables(grid_ds) == ["rate", "trace"]


def test_line_averages_trials_with_error_bars_and_gaps(grid_ds):
    fig = plot_result(grid_ds, "rate", x="k", slice={"tau": 0.01})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "k"
    assert ax.get_ylabel() == "rate (mean over 3 trials)"
    assert ax.get_title() == "rate at tau=0.01"
    (line,) = _line_data(fig)
    y = np.asarray(line.get_ydata(), dtype=float)
    assert len(y) == 9
    assert np.isnan(y[1::2]).all(), "refined-but-not-run k values must be gaps"
    expected = grid_ds.rate.sel(tau=0.01).mean("trial").values
    np.testing.assert_allclose(y[::2], expected[::2])
    assert ax.containers, "error bars are drawn"
    assert any(c.get_label() == "missing" for c in ax.collections)


def test_failed_points_are_marked(grid_ds):
    fig = plot_result(grid_ds, "rate", x="k", hue="tau")
    ax = fig.axes[0]
    labels = [c.get_label() for c in ax.collections]
    assert "failed" in labels
    assert len(_line_data(fig)) == 2
    assert ax.get_legend() is not None


def test_heatmap_leaves_missing_cells_empty(grid_ds):
    fig = plot_result(grid_ds, "rate", x="k", y="tau")
    ax, bar = fig.axes
    data = _mesh(fig).get_array()
    assert data.shape == (2, 9)
    assert data.mask[:, 1::2].all()
    assert not data.mask[0, ::2].any()
    assert any(p.get_hatch() for p in ax.patches), "missing cells show a hatched background"
    assert "mean over 3 trials" in bar.get_ylabel()
    legend = fig.legends[0]
    assert {t.get_text() for t in legend.get_texts()} == {"no value", "failed"}


def test_result_with_its_own_dimension(grid_ds):
    fig = plot_result(grid_ds, "trace", x="trace_index", slice={"k": 2, "tau": 0.01})
    (line,) = _line_data(fig)
    np.testing.assert_allclose(line.get_ydata(), [0, 2, 4, 6])


def test_leftover_dimension_is_explained(grid_ds):
    with pytest.raises(ValueError, match=r"still varies along 'tau'.*slice=\{'tau'"):
        plot_result(grid_ds, "rate", x="k")
    with pytest.raises(ValueError, match="no variable 'nope'; its results are rate, trace"):
        plot_result(grid_ds, "nope", x="k")
    with pytest.raises(ValueError, match="no dimension 'q'"):
        plot_result(grid_ds, "rate", x="q")


def test_status_map_two_parameters(grid_ds):
    fig = plot_status(grid_ds)
    ax = fig.axes[0]
    counts = {s: int((grid_ds.ns_status == s).sum()) for s in ("done", "failed", "missing")}
    assert ax.get_title() == (f"status: {counts['done']} done, {counts['failed']} failed, "
                              f"{counts['missing']} missing")
    assert ax.get_xlabel() == "k" and ax.get_ylabel() == "tau"
    cells = _mesh(fig).get_array()  # cells drawn at the k and tau values
    assert cells.shape == (2, 9)
    assert (cells[:, 1::2] == 3).all()  # all missing
    assert cells[1, 8] == 1  # k=4, tau=0.02 failed
    assert "3/3" in [t.get_text() for t in ax.texts]


def test_status_bars_one_parameter(grid_ds):
    fig = plot_status(grid_ds, x="k")
    ax = fig.axes[0]
    heights = np.array([p.get_height() for p in ax.patches]).reshape(3, 9)  # done, failed, miss
    np.testing.assert_array_equal(heights.sum(axis=0), 6)  # tau(2) × trial(3) per k
    assert heights[0, 0] == 6 and heights[2, 1] == 6
    assert heights[1, 8] == 3


def test_points_layout_scatter(points_ds):
    fig = plot_result(points_ds, "rate", x="k", y="tau")
    ax = fig.axes[0]
    done = int((points_ds.ns_status == "done").sum())
    assert len(ax.collections[0].get_offsets()) == done
    assert ax.get_title() == "rate (24 points)"
    status = plot_status(points_ds)
    assert status.axes[0].get_title().startswith(f"status: {done} done")
    line = plot_result(points_ds, "rate", x="k", slice={})
    assert line.axes[0].get_xlabel() == "k"


def test_points_layout_on_a_grid_is_reshaped(tmp_path):
    space = ns.zip_(k=[1.0, 2.0, 1.0, 2.0], tau=[0.01, 0.01, 0.02, 0.02])
    scan = ns.Scan(model, space, store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    fig = plot_result(scan.results(), "rate", x="k", y="tau")
    assert _mesh(fig).get_array().shape == (2, 2)


def test_log_spaced_axis_is_log(tmp_path):
    scan = ns.Scan(model, ns.grid(k=np.geomspace(0.01, 1, 5), tau=0.01), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    fig = plot_result(scan.results(), "rate", x="k", slice={"tau": 0.01})
    assert fig.axes[0].get_xscale() == "log"


def test_string_parameter_and_no_status():
    ds = xr.Dataset({"y": (("method", "n"), [[1.0, 2.0], [3.0, np.nan]])},
                    coords={"method": ["euler", "rk4"], "n": [10, 20]})
    fig = plot_result(ds, "y", x="method", slice={"n": 10})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["euler", "rk4"]
    heat = plot_result(ds, "y", x="n", y="method")
    assert heat.axes[0].collections
    with pytest.raises(ValueError, match="needs a Dataset with a 'status'"):
        plot_status(ds)


def test_figures_are_not_registered_with_pyplot(grid_ds):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_result(grid_ds, "rate", x="k", y="tau")
    plot_status(grid_ds)
    assert plt.get_fignums() == before


def test_import_does_not_import_matplotlib():
    code = ("import sys, notebookscan.plotting; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- axes drawn at the grid values

def _heat(x_values, y_values, fill=None):
    """A heatmap Dataset over k × tau (values ``k * tau`` unless ``fill``)."""
    k, tau = np.asarray(x_values, float), np.asarray(y_values, float)
    data = np.outer(tau, k) if fill is None else fill
    return xr.Dataset({"rate": (("tau", "k"), data)}, coords={"k": k, "tau": tau})


def _visible_ticks(axis):
    """Major tick positions whose label shows, inside the view."""
    low, high = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks()
    return [float(t.get_loc()) for t in ticks
            if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high]


def _cell_edges(fig):
    mesh = _mesh(fig)
    coords = mesh.get_coordinates()
    return coords[0, :, 0], coords[:, 0, 1]


def test_two_values_are_two_cells_ticked_at_the_values():
    fig = plot_result(_heat([1.0, 2.0, 3.0], [0.005, 0.01]), "rate", x="k", y="tau")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_yscale() == "linear"
    np.testing.assert_allclose(_visible_ticks(ax.yaxis), [0.005, 0.01])
    assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()] == ["0.005", "0.01"]
    _, ye = _cell_edges(fig)
    np.testing.assert_allclose(ye, [0.0025, 0.0075, 0.0125])
    np.testing.assert_allclose(_visible_ticks(ax.xaxis), [1, 2, 3])


def test_log_spaced_heatmap_cells_have_geometric_edges_and_value_ticks():
    k = np.geomspace(0.01, 10, 4)
    fig = plot_result(_heat(k, [0.005, 0.01]), "rate", x="k", y="tau")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    xe, _ = _cell_edges(fig)
    np.testing.assert_allclose(xe[1:-1], np.sqrt(k[1:] * k[:-1]))
    np.testing.assert_allclose(_visible_ticks(ax.xaxis), k)
    assert not any(t.label1.get_visible() and t.label1.get_text()
                   for t in ax.xaxis.get_minor_ticks()), "no stray minor labels"


def test_refined_log_axis_keeps_its_log_scale(tmp_path):
    scan = ns.Scan(model, ns.grid(k=np.geomspace(0.01, 10, 7), tau=[0.005, 0.01]) * ns.trials(2),
                   store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    scan.refine(k=np.geomspace(0.5, 2, 9))
    ds = scan.results()
    assert ds.sizes["k"] == 15
    assert plot_result(ds, "rate", x="k", y="tau").axes[0].get_xscale() == "log"
    assert plot_result(ds, "rate", x="k", slice={"tau": 0.01}).axes[0].get_xscale() == "log"
    assert plot_status(ds, x="k", y="tau").axes[0].get_xscale() == "log"


def test_refined_linear_axis_stays_linear():
    k = np.unique(np.concatenate([np.linspace(1, 10, 10), np.linspace(1, 2, 21)]))
    fig = plot_result(_heat(k, [0.005, 0.01]), "rate", x="k", y="tau")
    assert fig.axes[0].get_xscale() == "linear"


def test_merged_axis_ticks_do_not_crowd():
    k = np.unique(np.concatenate([np.geomspace(0.01, 10, 7), np.geomspace(0.5, 2, 41)]))
    fig = plot_result(_heat(k, [0.005, 0.01]), "rate", x="k", y="tau")
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = np.log10(_visible_ticks(ax.xaxis))
    assert 5 <= len(ticks) <= 14
    assert np.min(np.diff(ticks)) >= (np.log10(k[-1]) - np.log10(k[0])) / 20
    assert set(np.round(np.geomspace(0.01, 10, 7), 9)) <= set(np.round(10 ** ticks, 9)), \
        "the coarse grid keeps its ticks"


def test_log_toggle_overrides_the_guess():
    k = np.geomspace(0.01, 10, 5)
    tau = np.geomspace(1e-4, 1e-1, 4)
    ds = _heat(k, tau)
    ax = plot_result(ds, "rate", x="k", y="tau").axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    ax = plot_result(ds, "rate", x="k", y="tau", logx=False, logy=False).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    lin = _heat([1.0, 2.0, 3.0], [1.0, 2.0])
    ax = plot_result(lin, "rate", x="k", y="tau", logx=True, logy=True).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    line = plot_result(ds, "rate", x="k", slice={"tau": 1e-3}, logx=False).axes[0]
    assert (line.get_xscale(), line.get_yscale()) == ("linear", "linear")


def test_two_values_a_decade_or_more_apart_are_log():
    ax = plot_result(_heat([1.0, 2.0], [0.001, 0.1]), "rate", x="k", y="tau").axes[0]
    assert ax.get_yscale() == "log"


def test_status_map_cells_sit_at_the_values():
    k = np.array([0.0, 1.0, 1.5, 4.0])
    status = np.full((2, 4), "done", dtype=object)
    ds = xr.Dataset({"ns_status": (("tau", "k"), status)},
                    coords={"k": k, "tau": [0.005, 0.01]})
    fig = plot_status(ds, x="k", y="tau")
    ax = fig.axes[0]
    fig.canvas.draw()
    np.testing.assert_allclose(_visible_ticks(ax.xaxis), k)
    xe, _ = _cell_edges(fig)
    np.testing.assert_allclose(xe, [-0.5, 0.5, 1.25, 2.75, 5.25])


def test_one_value_is_one_cell_around_it():
    fig = plot_result(_heat([1.0, 2.0], [0.01]), "rate", x="k", y="tau")
    _, ye = _cell_edges(fig)
    assert ye[0] < 0.01 < ye[1] and ye[0] > 0, "a cell of the value's own size, not ±0.5"
    np.testing.assert_allclose(_visible_ticks(fig.axes[0].yaxis), [0.01])
