"""The explorer's plot in a real JupyterLab: a mouse click picks a cell, a mouse drag
selects a region that fills the Refine section, and the refinement runs from it.

The figure is the zoomable ipympl canvas (``interactive`` left at its default); the
mouse is Chromium's (Playwright ``page.mouse``), so the events go through ipympl's
canvas, the comm to the kernel and matplotlib's event handling, as a user's would.
"""

from __future__ import annotations

import json
import time

import pytest

import notebookscan as ns

from . import notebooks
from .page import explorer_canvas

pytestmark = pytest.mark.browser

pytest.importorskip("ipympl")

K = [2.0, 5.0, 8.0, 11.0, 14.0, 17.0, 20.0]
TAU = [0.005, 0.01, 0.02]


def explorer_notebook(path, store: str):
    return notebooks.write(path, [
        notebooks.MODEL,
        f"""
        import ipywidgets as w
        scan = ns.Scan(firing_rate, ns.grid(k={K!r}, tau={TAU!r}) * ns.trials(2),
                       store={store!r})
        scan.run(executor="serial", progress=False)
        monitor = nsw.RunMonitor(scan, executor="serial")
        ex = nsw.Explorer(scan, x="k", y="tau", monitor=monitor)   # ipympl canvas
        w.VBox([ex, monitor])
        """,
    ])


def _where(nb, canvas, points, tmp_name: str):
    """Page coordinates of data points ``(k, tau)`` on the explorer's canvas, from the
    figure's own transform (written by the kernel to a file next to the notebook)."""
    nb.execute_ms(
        "import json\n"
        "fig = ex._mouse['canvas'].figure\n"
        "fig.canvas.draw()  # the layout of the size shown\n"
        "ax = fig.axes[0]\n"
        f"pts = ax.transData.transform({points!r})\n"
        "W, H = fig.bbox.width, fig.bbox.height\n"
        f"json.dump([[x / W, 1 - y / H] for x, y in pts], open({tmp_name!r}, 'w'))\n")
    fractions = json.loads((nb.lab.root / tmp_name).read_text())
    box = canvas.bounding_box()
    size = nb.execute_ms("assert tuple(ex._mouse['canvas'].figure.bbox.size) == "
                         f"({box['width']}, {box['height']}), 'canvas and figure sizes differ'")
    assert size >= 0
    return [(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            for fx, fy in fractions]


def _value(row, which: str) -> float:
    return float(row.locator(f".nbscan-refine-{which} input").input_value())


def test_drag_on_the_plot_fills_refine_and_runs_it(lab, open_notebook, artifacts):
    from playwright.sync_api import expect

    explorer_notebook(lab.root / "explore.ipynb", "results/explore")
    nb = open_notebook("explore.ipynb")
    page = nb.panel
    explorer, canvas = explorer_canvas(nb)
    expect(explorer.locator(".nbscan-explore-logy input")).to_be_checked()  # tau is ×2 apart
    canvas.scroll_into_view_if_needed()
    mouse = nb.page.mouse

    # a click on the cell at k=11, tau=0.01 (a little off its centre) picks that point
    ((cx, cy),) = _where(nb, canvas, [(11.4, 0.0104)], "click.json")
    mouse.click(cx, cy)
    picked = explorer.locator(".nbscan-explore-picked")
    expect(picked).to_contain_text("selected k = 11, tau = 0.01", timeout=15_000)
    refine = page.locator(".nbscan-refine")
    k_row, tau_row = refine.locator(".nbscan-refine-k"), refine.locator(".nbscan-refine-tau")
    expect(k_row.locator(".nbscan-refine-low input")).to_have_value("8")
    expect(k_row.locator(".nbscan-refine-high input")).to_have_value("14")

    # a drag from (k=5, tau=0.007) to (k=15, tau=0.015): the refine ranges follow it
    (x0, y0), (x1, y1) = _where(nb, canvas, [(5.0, 0.007), (15.0, 0.015)], "drag.json")
    mouse.move(x0, y0)
    mouse.down()
    for step in range(1, 11):
        mouse.move(x0 + (x1 - x0) * step / 10, y0 + (y1 - y0) * step / 10)
        time.sleep(0.03)
    mouse.up()
    expect(k_row.locator(".nbscan-refine-low input")).not_to_have_value("8", timeout=15_000)
    deadline = time.monotonic() + 15
    while abs(_value(k_row, "high") - 15.0) > 0.3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert abs(_value(k_row, "low") - 5.0) < 0.3 and abs(_value(k_row, "high") - 15.0) < 0.3
    assert abs(_value(tau_row, "low") / 0.007 - 1) < 0.05
    assert abs(_value(tau_row, "high") / 0.015 - 1) < 0.05
    expect(k_row.locator("input[type=checkbox]")).to_be_checked()
    expect(tau_row.locator("input[type=checkbox]")).to_be_checked()
    expect(tau_row.locator("select")).to_have_value("log")   # the axis is drawn log
    preview = refine.locator(".nbscan-preview")
    expect(preview).to_have_attribute("data-new", "42")        # 7 k × 3 tau × 2 trials
    page.locator(".nbscan-explorer").screenshot(path=artifacts / "explorer-drag.png")

    # Refine and run: the store gets exactly the new points, and the plot redraws
    refine.locator(".nbscan-refine-run").click()
    store = lab.root / "results" / "explore"
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline:
        data = ns.open_store(store)
        done = int((data.ns_status.isin(["done", "failed"])).sum())
        if done >= 42 + 42:
            break
        time.sleep(0.5)
    assert done == 84
    data = ns.open_store(store)
    low, high = _value(k_row, "low"), _value(k_row, "high")
    added = sorted(set(data.k.values.tolist()) - set(K))
    assert len(added) in (6, 7)          # 7 values from the drag, k=5 perhaps among K
    assert low - 1e-9 <= added[0] and added[-1] <= high + 1e-9
    assert float(data.k.min()) == 2.0 and float(data.k.max()) == 20.0
    expect(monitor_finished(page)).to_be_visible(timeout=30_000)
    explorer.locator(".nbscan-explore-output canvas").last.wait_for()


def monitor_finished(page):
    return page.locator(".nbscan-progress[data-state=finished]").first
