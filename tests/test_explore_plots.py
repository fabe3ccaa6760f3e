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
