"""Polish of the scan app, checked in JupyterLab in Chromium at 1400×900 with real
geometry: the zoomable (ipympl) figure's toolbar beside the axes' labels, no "Loading
widget…" flash on a change, disabled buttons that look disabled, an inline error for
every invalid field without moving the others, and a Run tab that fits the window.

The app runs with ``interactive`` left at its default, so with ipympl installed the
Explore tab shows the zoomable canvas (the other browser tests force PNG images).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import notebooks
from .conftest import ROOT
from .page import wait_for as _wait_for

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1400, "height": 900}

#: counts text nodes saying "Loading widget" added to the page (the widget renderer's
#: placeholder while a new widget view is built)
WATCH_LOADING = """() => {
    window.__nbscanLoading = [];
    const seen = (node) => (node.textContent || '').includes('Loading widget');
    window.__nbscanObserver?.disconnect();
    window.__nbscanObserver = new MutationObserver((mutations) => {
        for (const m of mutations) {
            if (m.type === 'characterData' && seen(m.target)) {
                window.__nbscanLoading.push(m.target.textContent);
            }
            for (const node of m.addedNodes) {
                if (seen(node)) { window.__nbscanLoading.push(node.textContent.slice(0, 80)); }
            }
        }
    });
    window.__nbscanObserver.observe(document.body,
        {childList: true, subtree: true, characterData: true});
}"""


def _prefilled_store(path: Path) -> None:
    """The default form's scan of the package's model, run once (the app restores it).

    In a fresh Python: Playwright's event loop runs in this thread, and the widgets would
    hand their updates to it."""
    code = ("import sys; from notebookscan.models import firing_rate; "
            "from notebookscan.widgets import SweepBuilder; "
            "scan = SweepBuilder(firing_rate, store=sys.argv[1]).scan(); "
            "scan.run(executor='serial', progress=False); "
            "assert scan.status()['done'] == 5, scan.status()")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _polish_notebook(root: Path, store: str) -> None:
    notebooks.write(root / "polish.ipynb", [
        """
        import json
        import notebookscan.widgets as nsw
        from notebookscan.models import firing_rate
        """,
        f"app = nsw.ScanApp(firing_rate, store={store!r}, executor='serial')\napp",
    ])


def _open(open_notebook, lab, tmp_name: str):
    from playwright.sync_api import expect

    store = lab.root / "results" / tmp_name
    _prefilled_store(store)
    _polish_notebook(lab.root, f"results/{tmp_name}")
    nb = open_notebook("polish.ipynb")
    nb.page.set_viewport_size(VIEWPORT)
    nb.run_all()
    app = nb.panel.locator(".nbscan-app")
    expect(app).to_be_visible(timeout=90_000)
    return nb, app


def _rect(locator) -> dict[str, float]:
    return locator.evaluate("e => { const r = e.getBoundingClientRect(); return "
                            "{left: r.left, top: r.top, right: r.right, bottom: r.bottom, "
                            "width: r.width, height: r.height}; }")


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"]
            and b["top"] < a["bottom"])


def _greyish(color: str) -> bool:
    """An ``rgb(…)``/``rgba(…)`` colour with (almost) equal channels."""
    channels = [float(c) for c in color[color.index("(") + 1:-1].split(",")[:3]]
    return max(channels) - min(channels) <= 24


def _watch_loading(page) -> None:
    page.evaluate(WATCH_LOADING)


def _loading_seen(page) -> list[str]:
    return page.evaluate("window.__nbscanLoading")


def test_form_errors_disabled_buttons_and_run_tab_fit(lab, open_notebook, artifacts):
    from playwright.sync_api import expect

    nb, app = _open(open_notebook, lab, "polish-form")
    page = nb.panel

    # a form change updates the summary in place: no widget is re-created
    _watch_loading(nb.page)
    k = page.locator(".nbscan-param-k")
    k.locator(".nbscan-count input").fill("7")
    k.locator(".nbscan-count input").press("Enter")
    expect(page.locator(".nbscan-counts")).to_have_attribute("data-size", "7")
    time.sleep(0.5)
    assert _loading_seen(nb.page) == []

    # every invalid field shows its own error; the fields stay in their columns
    rows = ["k", "tau", "n_neurons", "duration"]

    def columns() -> dict[str, tuple[float, float]]:
        out = {}
        for name in rows:
            row = page.locator(f".nbscan-param-{name}")
            out[name] = (_rect(row.locator(".nbscan-mode"))["left"],
                         _rect(row.locator(".nbscan-mode"))["right"])
        return out

    before = columns()
    k.locator(".nbscan-max input").fill("-5")
    k.locator(".nbscan-max input").press("Enter")
    tau = page.locator(".nbscan-param-tau")
    tau.locator(".nbscan-value input").fill("a very long text that is not a number at all")
    tau.locator(".nbscan-value input").press("Enter")
    neurons = page.locator(".nbscan-param-n_neurons")
    neurons.locator(".nbscan-value input").fill("1.5")
    neurons.locator(".nbscan-value input").press("Enter")
    for name in ("k", "tau", "n_neurons"):
        error = page.locator(f".nbscan-param-{name} .nbscan-field-error .nbscan-error")
        expect(error).to_be_visible()
    expect(page.locator(".nbscan-run-shortcut")).to_be_disabled()
    after = columns()
    for name in rows:
        assert abs(after[name][0] - before[name][0]) < 1, (name, before, after)
        assert abs(after[name][1] - before[name][1]) < 1, (name, before, after)
    # each error sits beside or below its own fields, overlapping no other row's fields
    fields = {name: [_rect(f) for f in page.locator(f".nbscan-param-{name} input, "
                                                    f".nbscan-param-{name} select").all()
                     if f.is_visible()] for name in rows}
    for name in ("k", "tau", "n_neurons"):
        error = _rect(page.locator(f".nbscan-param-{name} .nbscan-error"))
        assert error["width"] > 0 and error["height"] > 0
        for other, rects in fields.items():
            for field in rects:
                assert not _overlap(error, field), (name, other, error, field)
        for field in fields[name]:
            assert error["left"] >= field["right"] - 1 or error["top"] >= field["bottom"] - 1
    app.scroll_into_view_if_needed()
    nb.page.screenshot(path=artifacts / "polish-errors.png")

    # back to a valid form; a disabled button looks disabled (grey, not its colour)
    k.locator(".nbscan-max input").fill("1")
    k.locator(".nbscan-max input").press("Enter")
    tau.locator(".nbscan-value input").fill("0.01")
    tau.locator(".nbscan-value input").press("Enter")
    neurons.locator(".nbscan-value input").fill("100")
    neurons.locator(".nbscan-value input").press("Enter")
    expect(page.locator(".nbscan-counts")).to_have_attribute("data-size", "7")

    page.locator(".lm-TabBar-tab", has_text="2 · Run").click()
    stop = page.locator(".nbscan-stop")
    expect(stop).to_be_disabled()
    colour = stop.evaluate("e => getComputedStyle(e).backgroundColor")
    assert _greyish(colour), f"the disabled Stop button is {colour}"
    # … while an enabled one keeps its colour
    run = page.locator(".nbscan-run")
    expect(run).to_be_enabled()
    assert not _greyish(run.evaluate("e => getComputedStyle(e).backgroundColor"))

    # the Run tab after a run, with its results drawn, fits in the window: no scrolling
    run.click()
    expect(page.locator(".nbscan-progress").first).to_have_attribute(
        "data-state", "finished", timeout=120_000)
    expect(stop).to_be_disabled()
    assert _greyish(stop.evaluate("e => getComputedStyle(e).backgroundColor"))
    expect(page.locator(".nbscan-live-output img")).to_be_visible(timeout=30_000)
    time.sleep(1.0)  # the last redraw of the live plot
    cell = page.locator(".jp-Cell:has(.nbscan-app)")
    cell.evaluate("e => e.scrollIntoView({block: 'start'})")
    time.sleep(0.3)
    scroller = page.locator(".jp-WindowedPanel-outer").first
    area = _rect(scroller)
    app_rect = _rect(app)
    nb.page.screenshot(path=artifacts / "polish-run-tab.png")
    (artifacts / "polish-run-tab.json").write_text(json.dumps(
        {"app_height": app_rect["height"], "cell_height": _rect(cell)["height"],
         "notebook_height": area["height"]}))
    assert app_rect["height"] <= area["height"], (
        f"the app is {app_rect['height']:.0f} px tall in a {area['height']:.0f} px notebook")
    # with the cell's own input above it, too: nothing to scroll to run and watch
    cell_rect = _rect(cell)
    assert cell_rect["height"] <= area["height"], (
        f"the cell is {cell_rect['height']:.0f} px tall in a {area['height']:.0f} px notebook")


def test_ipympl_explorer_toolbar_and_no_loading_flash(lab, open_notebook, artifacts):
    from playwright.sync_api import expect

    nb, _ = _open(open_notebook, lab, "polish-explore")
    page = nb.panel
    page.locator(".lm-TabBar-tab", has_text="3 · Explore").click()
    explorer = page.locator(".nbscan-explorer")
    figure = explorer.locator(".jupyter-matplotlib-figure")
    expect(figure).to_be_visible(timeout=60_000)
    canvas = figure.locator("canvas").first
    expect(canvas).to_be_visible()
    time.sleep(1.0)  # the first image arrives after the view

    # the axes' tick labels and label, in page pixels (from the figure, in the kernel)
    geometry = lab.root / "geometry.json"
    nb.execute_ms(
        "fig = app.explorer.output._nbscan_canvas.figure\n"
        "renderer = fig.canvas.get_renderer()\n"
        "ax = fig.axes[0]\n"
        "box = ax.yaxis.get_tightbbox(renderer)\n"
        "json.dump({'x0': box.x0, 'x1': box.x1, 'y0': box.y0, 'y1': box.y1,\n"
        "           'width': fig.bbox.width, 'height': fig.bbox.height},\n"
        f"          open({str(geometry)!r}, 'w'))")
    g = json.loads(geometry.read_text())
    canvas_rect = _rect(canvas)
    sx, sy = canvas_rect["width"] / g["width"], canvas_rect["height"] / g["height"]
    labels = {"left": canvas_rect["left"] + g["x0"] * sx,
              "right": canvas_rect["left"] + g["x1"] * sx,
              "top": canvas_rect["top"] + (g["height"] - g["y1"]) * sy,
              "bottom": canvas_rect["top"] + (g["height"] - g["y0"]) * sy}
    figure.hover()  # the toolbar shows while the mouse is over the figure
    toolbar = figure.locator(".jupyter-matplotlib-toolbar")
    expect(toolbar).to_be_visible()
    time.sleep(0.6)  # fade-in
    bar = _rect(toolbar)
    nb.page.screenshot(path=artifacts / "polish-ipympl.png")
    assert bar["width"] > 0 and bar["height"] > 0
    assert not _overlap(bar, labels), f"the toolbar {bar} covers the y labels {labels}"

    # a change redraws the same canvas: no "Loading widget…" placeholder, no new view
    _watch_loading(nb.page)
    first = nb.page.evaluate("() => document.querySelectorAll("
                             "'.nbscan-explore-output .jupyter-matplotlib-figure').length")
    assert first == 1
    marker = canvas.evaluate("e => { e.dataset.nbscanMarker = '1'; return 1; }")
    explorer.locator(".nbscan-explore-var select").select_option("cv")
    nb.page.wait_for_timeout(2000)
    explorer.locator(".nbscan-explore-mode button", has_text="status").click()
    nb.page.wait_for_timeout(2000)
    assert _loading_seen(nb.page) == []
    assert marker and explorer.locator("canvas[data-nbscan-marker='1']").count() == 1
    _wait_for(lambda: nb.page.evaluate("() => document.querySelectorAll('.nbscan-explore-"
                                       "output .jupyter-matplotlib-figure').length") == 1,
              5, "one figure")
