"""The live plot and the explorer: what they average, what they fix, and refining by
selecting a region or a cell of the explorer's plot (the logic the mouse callbacks call)."""

from __future__ import annotations

import numpy as np
import pytest

import notebookscan as ns

pytest.importorskip("ipywidgets")
matplotlib = pytest.importorskip("matplotlib")

from notebookscan.widgets import Explorer, LivePlot  # noqa: E402


def noisy(k: float, tau: float, g: float = 1.0, seed: int = 0):
    """``k * tau * 1000 * g`` plus small noise (0.01): trials scatter little, tau a lot."""
    return {"rate": k * tau * 1000 * g + np.random.default_rng(seed).normal() * 0.01}


def _lines(fig):
    return [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]


def _error_sizes(fig):
    """Half-lengths of every error bar drawn."""
    sizes = []
    for container in fig.axes[0].containers:
        for segments in container.lines[2]:
            for seg in segments.get_segments():
                sizes.append(abs(seg[1][1] - seg[0][1]) / 2)
    return np.array(sizes)


# --------------------------------------------------------------------------- live plot

def test_live_plot_averages_over_trials_only_and_hues_by_the_second_parameter(tmp_path):
    scan = ns.Scan(noisy, ns.grid(k=[1.0, 2.0, 3.0], tau=[0.01, 0.02]) * ns.trials(4),
                   tmp_path / "s")
    live = LivePlot(scan)
    scan.run(executor="serial", progress=False)
    live.redraw()
    assert (live.x.value, live.hue.value) == ("k", "tau")
    fig = live.last_figure
    lines = _lines(fig)
    assert len(lines) == 2, "one line per tau, not tau averaged away"
    ds = scan.results()
    for line, tau in zip(lines, [0.01, 0.02], strict=True):
        np.testing.assert_allclose(line.get_ydata(), ds.rate.sel(tau=tau).mean("trial"))
    assert _error_sizes(fig).max() < 0.05, "error bars show the trials' noise, not tau"
    assert "mean over 4 trials" in fig.axes[0].get_ylabel()
    live.close()


def test_live_plot_fixes_other_parameters_at_a_chosen_value(tmp_path):
    space = ns.grid(k=[1.0, 2.0], tau=[0.01, 0.02], g=[1.0, 2.0, 3.0]) * ns.trials(2)
    scan = ns.Scan(noisy, space, tmp_path / "s")
    live = LivePlot(scan)
    scan.run(executor="serial", progress=False)
    live.redraw()
    assert sorted(live.selectors) == ["g"]
    live.selectors["g"].value = 3.0
    assert live.wait_idle(10)
    fig = live.last_figure
    assert "g=3" in fig.axes[0].get_title()
    ds = scan.results()
    np.testing.assert_allclose(_lines(fig)[0].get_ydata(),
                               ds.rate.sel(tau=0.01, g=3.0).mean("trial"))
    live.hue.value = "—"             # no hue: tau gets a selector too
    assert live.wait_idle(10)
    assert sorted(live.selectors) == ["g", "tau"]
    assert len(_lines(live.last_figure)) == 1
    live.y.value = "tau"             # a heatmap over k × tau at g=3
    assert live.wait_idle(10)
    assert sorted(live.selectors) == ["g"]
    assert live.last_figure.axes[0].get_ylabel() == "tau"
    live.close()


def test_live_plot_redraws_after_a_run_with_nothing_to_do(tmp_path):
    space = ns.grid(k=[1.0, 2.0, 3.0], tau=[0.01, 0.02])
    ns.Scan(noisy, space, tmp_path / "s").run(executor="serial", progress=False)
    scan = ns.Scan(noisy, space, tmp_path / "s")
    live = LivePlot(scan)
    scan.run(executor="serial", progress=False)  # every point is stored: nothing runs
    assert live.wait_idle(10)
    assert live.renders >= 1, "the plot shows the store, not 'waiting for results'"
    assert "image/png" in live.output.outputs[0]["data"]
    live.close()


# --------------------------------------------------------------------------- explorer

@pytest.fixture
def heat_scan(tmp_path):
    space = ns.grid(k=[0.0, 1.0, 2.0, 3.0, 4.0], tau=[0.01, 0.02, 0.03]) * ns.trials(2)
    scan = ns.Scan(noisy, space, tmp_path / "s")
    scan.run(executor="serial", progress=False)
    return scan


def test_log_axes_toggle_and_a_refined_axis_stays_log(tmp_path):
    scan = ns.Scan(noisy, ns.grid(k=np.geomspace(0.01, 10, 7), tau=[0.01, 0.02]),
                   tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ex = Explorer(scan, x="k", y="tau", interactive=False)
    assert (ex.logx.value, ex.logy.value) == (True, False)
    assert ex.figure().axes[0].get_xscale() == "log"
    ex.logx.value = False
    assert ex.figure().axes[0].get_xscale() == "linear"
    ex.logx.value = True
    scan.refine(k=np.geomspace(0.5, 2, 9))
    scan.run(executor="serial", progress=False)
    ex.reload()
    assert ex.view.sizes["k"] == 15
    assert ex.logx.value and ex.figure().axes[0].get_xscale() == "log"
    assert ex.refine.axes["k"]["scale"].value == "log", "a refinement keeps the axis's scale"


def test_select_region_fills_the_refine_panel(heat_scan):
    ex = Explorer(heat_scan, x="k", y="tau", interactive=False)
    ex.select_region(x=(3.2, 0.8), y=(0.015, 0.5))       # any corner order; clipped
    k, tau = ex.refine.axes["k"], ex.refine.axes["tau"]
    assert k["use"].value and tau["use"].value
    np.testing.assert_allclose(k["span"].value, (0.8, 3.2))
    np.testing.assert_allclose(tau["span"].value, (0.015, 0.03))
    assert (k["low"].value, k["high"].value) == ("0.8", "3.2"), "typed fields follow"
    axes = ex.refine.refinement()
    assert min(axes["k"]) == pytest.approx(0.8) and max(axes["k"]) == pytest.approx(3.2)
    assert ex.refine.preview > 0
    heat_scan.refine(**axes)
    heat_scan.run(executor="serial", progress=False)
    ex.reload()
    assert ex.view.sizes["k"] > 5


def test_select_point_refines_around_the_clicked_cell(heat_scan):
    ex = Explorer(heat_scan, x="k", y="tau", interactive=False)
    ex.select_point(x=2.2, y=0.0205)
    assert ex.selected == {"k": 2.0, "tau": 0.02}
    np.testing.assert_allclose(ex.refine.axes["k"]["span"].value, (1.0, 3.0))
    np.testing.assert_allclose(ex.refine.axes["tau"]["span"].value, (0.01, 0.03))
    assert "k = 2" in ex.picked.value and "tau = 0.02" in ex.picked.value
    ex.y.value = "—"                                    # a line: the point picks k only
    ex.refine.axes["tau"]["use"].value = False
    ex.select_point(x=0.1)
    assert ex.selected == {"k": 0.0}
    np.testing.assert_allclose(ex.refine.axes["k"]["span"].value, (0.0, 1.0))
    assert not ex.refine.axes["tau"]["use"].value


def test_typed_range_values_set_the_slider(heat_scan):
    ex = Explorer(heat_scan, interactive=False)
    row = ex.refine.axes["k"]
    row["low"].value = "1.25"
    row["high"].value = "2.5e0"
    assert row["span"].value == (1.25, 2.5)
    row["high"].value = "9"                              # beyond the range: clipped
    assert row["span"].value == (1.25, 4.0) and row["high"].value == "4"
    row["low"].value = "inf"
    assert "not a number" in ex.refine.preview_html.value
    row["low"].value = "abc"
    assert "not a number" in ex.refine.preview_html.value
    row["low"].value = "1"
    assert "not a number" not in ex.refine.preview_html.value


def test_slice_values_can_be_typed(heat_scan):
    ex = Explorer(heat_scan, x="k", interactive=False)
    ex.slice_fields["tau"].value = "0.021"               # the nearest stored value
    assert ex.sliders["tau"].value == 0.02
    assert "tau=0.02" in ex.figure().axes[0].get_title()


def test_mouse_drag_and_click_on_the_canvas_call_the_selection(heat_scan):
    """Real matplotlib mouse events through the canvas's callbacks (no browser)."""
    from matplotlib.backend_bases import MouseEvent
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ex = Explorer(heat_scan, x="k", y="tau", interactive=False)
    fig = ex.figure()
    FigureCanvasAgg(fig)
    ex.connect_mouse(fig)
    ax = fig.axes[0]
    fig.canvas.draw()

    def at(name, x, y, button=1):
        px, py = ax.transData.transform((x, y))
        event = MouseEvent(name, fig.canvas, px, py, button)
        fig.canvas.callbacks.process(name, event)

    at("button_press_event", 0.9, 0.012)
    at("motion_notify_event", 2.0, 0.02)
    at("motion_notify_event", 3.1, 0.028)
    at("button_release_event", 3.1, 0.028)
    pixel = 0.02, 2e-4                                      # what one pixel spans, at most
    np.testing.assert_allclose(ex.refine.axes["k"]["span"].value, (0.9, 3.1), atol=pixel[0])
    np.testing.assert_allclose(ex.refine.axes["tau"]["span"].value, (0.012, 0.028),
                               atol=pixel[1])
    at("button_press_event", 1.1, 0.0295)
    at("button_release_event", 1.1, 0.0295)
    assert ex.selected == {"k": 1.0, "tau": 0.03}
    at("button_press_event", 2.5, 0.02)                  # a drag that ends past the plot
    at("button_release_event", 40.0, 0.5)
    np.testing.assert_allclose(ex.refine.axes["k"]["span"].value, (2.5, 4.0), atol=pixel[0])
    np.testing.assert_allclose(ex.refine.axes["tau"]["span"].value, (0.02, 0.03),
                               atol=pixel[1])


def test_selecting_without_a_scan_or_on_a_fixed_axis(heat_scan):
    ex = Explorer(heat_scan.results(), x="k", y="tau", interactive=False)   # no Refine
    assert ex.select_point(x=3.9, y=0.011) == {"k": 4.0, "tau": 0.01}
    with pytest.raises(ns.errors.ArgumentError, match="open the explorer on the Scan"):
        ex.select_region(x=(1, 2))
    typed = Explorer(heat_scan, x="k", interactive=False)
    typed.refine.axes["tau"]["high"].value = "0.025"                       # typing ticks it
    assert typed.refine.axes["tau"]["use"].value
