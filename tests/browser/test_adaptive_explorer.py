"""An adaptive scan in the explorer of a real JupyterLab: its samples over their
triangulation, a mouse drag fills *Refine adaptively*, and the click runs a new learner
over that region into the same store."""

from __future__ import annotations

import time

import pytest

import notebookscan as ns

from . import notebooks
from .page import explorer_canvas
from .test_explorer import _where

pytestmark = pytest.mark.browser

pytest.importorskip("ipympl")
pytest.importorskip("adaptive")


def adaptive_notebook(path, store: str):
    return notebooks.write(path, [
        notebooks.MODEL,
        f"""
        from notebookscan.adaptive import AdaptiveScan, Goal

        def ring(x: float, y: float):
            return {{"z": float(np.exp(-((x * x + y * y - 0.5) ** 2) / 0.01))}}

        scan = AdaptiveScan(ring, {{"x": (-1, 1), "y": (-1, 1)}}, {store!r},
                            goal=Goal(points=40))
        scan.run(executor="serial", progress=False)
        ex = nsw.Explorer(scan, x="x", y="y")   # ipympl canvas
        ex.refine.executor = "serial"
        ex
        """,
    ])


def _value(page, name: str) -> float:
    return float(page.locator(f".{name} input").input_value())


def test_drag_on_adaptive_samples_refines_adaptively(lab, open_notebook, artifacts):
    from playwright.sync_api import expect

    adaptive_notebook(lab.root / "adaptive.ipynb", "results/adaptive")
    nb = open_notebook("adaptive.ipynb")
    page = nb.panel
    _, canvas = explorer_canvas(nb)
    assert nb.execute_ms("assert any(type(c).__name__ == 'TriMesh' "
                         "for c in ex._mouse['canvas'].figure.axes[0].collections)") >= 0
    canvas.scroll_into_view_if_needed()

    # a drag from (x=0.1, y=0.2) to (x=0.6, y=0.7) sets the region
    (x0, y0), (x1, y1) = _where(nb, canvas, [(0.1, 0.2), (0.6, 0.7)], "drag.json")
    mouse = nb.page.mouse
    mouse.move(x0, y0)
    mouse.down()
    for step in range(1, 11):
        mouse.move(x0 + (x1 - x0) * step / 10, y0 + (y1 - y0) * step / 10)
        time.sleep(0.03)
    mouse.up()
    low_x = page.locator(".nbscan-adaptive-low-x input")
    expect(low_x).not_to_have_value("-1", timeout=15_000)
    deadline = time.monotonic() + 15
    while abs(_value(page, "nbscan-adaptive-high-y") - 0.7) > 0.05 and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    region = {n: _value(page, f"nbscan-adaptive-{n}")
              for n in ("low-x", "high-x", "low-y", "high-y")}
    # within 5 % of the axis span (2): the drag's ends as the canvas maps them
    assert abs(region["low-x"] - 0.1) < 0.1 and abs(region["high-x"] - 0.6) < 0.1, region
    assert abs(region["low-y"] - 0.2) < 0.1 and abs(region["high-y"] - 0.7) < 0.1, region
    points = page.locator(".nbscan-adaptive-points input")
    points.fill("12")
    points.press("Enter")
    page.locator(".nbscan-explorer").screenshot(path=artifacts / "explorer-adaptive.png")

    page.locator(".nbscan-adaptive-refine").click()
    store = lab.root / "results" / "adaptive"
    deadline = time.monotonic() + 90
    n = 0
    while time.monotonic() < deadline:
        n = int(ns.open_store(store).sizes["point"])
        if n >= 52:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # nothing more arrives
    data = ns.open_store(store)
    assert data.sizes["point"] == 52
    inside = ((data.x >= region["low-x"] - 1e-9) & (data.x <= region["high-x"] + 1e-9)
              & (data.y >= region["low-y"] - 1e-9) & (data.y <= region["high-y"] + 1e-9))
    assert int(inside.sum()) >= 12
