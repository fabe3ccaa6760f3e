"""The widgets in a real JupyterLab, driven by headless Chromium.

One Lab server and one browser serve the whole module (see conftest.py); each test
opens its own notebook (and so its own kernel), shut down at the end of the test.
Screenshots land in test-artifacts/browser/.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import notebookscan as ns

from . import notebooks
from .page import progress as _progress
from .page import wait_for as _wait_for

pytestmark = pytest.mark.browser


def _fill(row, selector: str, value: str) -> None:
    field = row.locator(selector)
    field.fill(value)
    field.press("Enter")


def _shot(locator, path: Path) -> None:
    """Screenshot one widget, whole: the viewport grows to fit it first."""
    page = locator.page
    size = page.viewport_size
    height = int(locator.evaluate("e => e.getBoundingClientRect().height"))
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 400)})
    try:
        locator.scroll_into_view_if_needed()
        locator.screenshot(path=path, animations="disabled")
    finally:
        page.set_viewport_size(size)


def _store_is_consistent(path: Path) -> int:
    """Every shard opens, every point is done, no key is stored twice; returns the count."""
    keys: list[str] = []
    for shard in sorted((path / "shards").glob("*.nc")):
        with netCDF4.Dataset(shard) as ds:
            keys += [str(k) for k in ds["ns_key"][:]]
            assert set(np.asarray(ds["ns_status"][:]).astype(str)) <= {"done"}
    duplicates = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicates, f"points stored twice: {duplicates[:5]}"
    assert ns.verify(path).healthy
    data = ns.open_store(path)
    assert int((data.ns_status == "done").sum()) == len(keys)
    assert np.isfinite(data.rate.where(data.ns_status == "done").values[
        (data.ns_status == "done").values]).all()
    return len(keys)


def test_app_define_run_watch_explore_refine(lab, open_notebook, artifacts):
    """Set a range, run, see all points done and the live plot; explore; refine."""
    from playwright.sync_api import expect

    notebooks.app_notebook(lab.root / "app.ipynb", "results/app")
    nb = open_notebook("app.ipynb")
    page = nb.panel
    nb.run_all()
    app = page.locator(".nbscan-app")
    expect(app).to_be_visible(timeout=60_000)

    # define: k from 2 to 20 in 10 steps (tau × 3 and trials × 3 are set by the notebook)
    k = page.locator(".nbscan-param-k")
    _fill(k, ".nbscan-min input", "2")
    _fill(k, ".nbscan-max input", "20")
    _fill(k, ".nbscan-count input", "10")
    counts = page.locator(".nbscan-counts")
    expect(counts).to_have_attribute("data-size", "90")
    # an invalid range is shown next to the field, and Run is refused meanwhile
    _fill(k, ".nbscan-max input", "1")
    expect(k.locator(".nbscan-field-error")).to_contain_text("min must be below max")
    expect(page.locator(".nbscan-run-shortcut")).to_be_disabled()
    _fill(k, ".nbscan-max input", "20")
    expect(k.locator(".nbscan-field-error")).to_have_text("")
    expect(counts).to_have_attribute("data-size", "90")
    _shot(app, artifacts / "app-define.png")

    # run: progress reaches all 90 points; the live plot shows an image
    page.locator(".nbscan-run-shortcut").click()
    _wait_for(lambda: _progress(page)["state"] == "finished", 60, "the run to finish")
    progress = _progress(page)
    assert progress["total"] == 90
    assert progress["done"] + progress["failed"] == 90
    assert progress["failed"] == 3  # k=20, tau=0.02: three trials diverge
    expect(page.locator(".nbscan-failure-table")).to_have_attribute("data-count", "3")
    live = page.locator(".nbscan-live-output img")
    expect(live).to_be_visible(timeout=15_000)
    assert live.evaluate("img => img.naturalWidth") > 300
    expect(page.locator(".nbscan-engines-row")).to_have_attribute("data-busy", "0")
    _shot(app, artifacts / "app-run.png")

    # explore: controls for variable, axes, slices, trial average; a rendered plot
    page.locator(".lm-TabBar-tab", has_text="3 · Explore").click()
    explorer = page.locator(".nbscan-explorer")
    expect(explorer.locator(".nbscan-explore-var select")).to_have_value("rate")
    expect(explorer.locator(".nbscan-explore-x select")).to_have_value("k")
    # tau; delay, left at its default in the builder, is no parameter of the store
    expect(explorer.locator(".nbscan-slice")).to_have_count(1)
    expect(explorer.locator(".nbscan-explore-average input")).to_be_checked()
    expect(explorer.locator(".nbscan-explore-output img")).to_be_visible()
    image = explorer.locator(".nbscan-explore-output img")
    line_plot = image.get_attribute("src")
    explorer.locator(".nbscan-explore-y select").select_option("tau")
    expect(explorer.locator(".nbscan-slice")).to_have_count(0)
    expect(explorer.locator(".nbscan-explore-slices")).not_to_contain_text("delay")
    expect(image).not_to_have_attribute("src", line_plot)  # the heatmap replaced the line
    _shot(app, artifacts / "app-explore.png")
    heatmap = image.get_attribute("src")
    explorer.locator(".nbscan-explore-mode button", has_text="status").click()
    expect(image).not_to_have_attribute("src", heatmap)

    # refine: k on the full range with 19 values adds the 9 in-between values
    refine = page.locator(".nbscan-refine")
    refine.locator(".nbscan-refine-k input[type=checkbox]").check()
    _fill(refine.locator(".nbscan-refine-k"), "input[type=number]", "19")
    expect(refine.locator(".nbscan-preview")).to_have_attribute("data-new", "81")
    _shot(app, artifacts / "app-refine.png")
    refine.locator(".nbscan-refine-run").click()
    # the progress line counts the store's points of the (refined) scan: 90 + 81
    _wait_for(lambda: _progress(page)["state"] == "finished" and _progress(page)["total"] == 171,
              60, "the refinement to finish")
    page.locator(".lm-TabBar-tab", has_text="3 · Explore").click()
    expect(explorer.locator(".nbscan-explore-output img")).to_be_visible()
    header = page.locator(".nbscan-header-counts")
    expect(header).to_have_attribute("data-total", "171")
    expect(header).to_have_attribute("data-done", "165")  # k=19, 20 at tau=0.02 fail


def test_stop_keeps_every_finished_point(lab, open_notebook, artifacts):
    """Stop a longer scan half-way: the store is consistent and holds what finished;
    Resume runs the rest."""
    from playwright.sync_api import expect

    store = lab.root / "results" / "slow"
    notebooks.slow_notebook(lab.root / "slow.ipynb", "results/slow", points=40, delay=0.25)
    nb = open_notebook("slow.ipynb")
    page = nb.panel
    nb.run_all()
    monitor = page.locator(".nbscan-monitor")
    expect(monitor).to_be_visible(timeout=60_000)
    monitor.locator(".nbscan-run").click()
    _wait_for(lambda: _progress(page)["done"] >= 6, 30, "six finished points")
    monitor.locator(".nbscan-stop").click()
    _wait_for(lambda: _progress(page)["state"] == "stopped", 30, "the run to stop")
    progress = _progress(page)
    assert 6 <= progress["done"] < 40
    assert progress["running"] == 0
    _shot(monitor.locator("xpath=.."), artifacts / "monitor-stopped.png")  # with its live plot
    assert _store_is_consistent(store) == progress["done"]
    expect(monitor.locator(".nbscan-resume")).to_be_enabled()
    monitor.locator(".nbscan-resume").click()
    _wait_for(lambda: _progress(page)["state"] == "finished", 60, "the resumed run")
    resumed = _progress(page)
    assert resumed["run-total"] == 40 - progress["done"] and resumed["total"] == 40
    assert _store_is_consistent(store) == 40
    expect(page.locator(".nbscan-live-output img")).to_be_visible()


def test_kernel_stays_responsive_while_engines_run(lab, open_notebook, artifacts):
    """While a scan runs on 2 local ipyparallel engines, cells in the same kernel answer
    in well under a second."""
    notebooks.slow_notebook(lab.root / "busy.ipynb", "results/busy", points=24, delay=0.4,
                            executor="local")
    nb = open_notebook("busy.ipynb")
    page = nb.panel
    nb.run_all()
    monitor = page.locator(".nbscan-monitor")
    monitor.wait_for(timeout=60_000)
    monitor.locator(".nbscan-run").click()
    _wait_for(lambda: _progress(page)["done"] >= 2, 60, "the engines to start")
    workers = page.locator(".nbscan-engines-row").get_attribute("data-workers")
    assert workers == str(os.cpu_count())
    timings = []
    while _progress(page)["state"] == "running" and len(timings) < 5:
        timings.append(nb.execute_ms("sum(range(1000))"))
        time.sleep(0.2)
    assert len(timings) >= 3, "the scan ended before the kernel could be probed"
    assert max(timings) < 1000, f"cells took {timings} ms while the scan ran"
    _shot(monitor.locator("xpath=.."), artifacts / "monitor-running.png")  # with its live plot
    _wait_for(lambda: _progress(page)["state"] == "finished", 60, "the run to finish")


def firing_rate(k: float, tau: float = 0.01, delay: float = 0.0, seed: int = 0):
    """Same parameters and units as the notebooks' model (keys depend on parameters only)."""
    import xarray as xr

    return {"rate": xr.DataArray(k * tau, attrs={"units": "Hz", "long_name": "firing rate"}),
            "cv": 1.0}


def test_new_kernel_reattaches_to_the_store(lab, open_notebook, artifacts):
    """A new kernel opening a store that a stopped scan left part done: the form is
    filled from the store, the counts show what is done, and Resume runs the rest."""
    from playwright.sync_api import expect

    store = lab.root / "results" / "half"
    space = ns.grid(k=np.linspace(1, 20, 8), tau=[0.005, 0.01], delay=0.0).with_attrs(
        k={"units": "nA", "long_name": "input drive"},
        tau={"units": "s", "long_name": "membrane time constant"})
    scan = ns.Scan(firing_rate, space, store)

    def stop_after_six(**_):
        if scan.progress.done >= 6:
            scan.stop(wait=False)

    scan.events.on("point_done", stop_after_six)
    scan.run(executor="serial", progress=False, chunk_size=1)
    assert scan.status() == {"done": 6, "failed": 0, "missing": 10}

    notebooks.explorer_notebook(lab.root / "again.ipynb", "results/half")
    nb = open_notebook("again.ipynb")
    page = nb.panel
    nb.run_all()
    app = page.locator(".nbscan-app")
    expect(app).to_be_visible(timeout=60_000)
    expect(app).to_contain_text("6 done, 0 failed of 16 points, 10 missing")
    k = page.locator(".nbscan-param-k")
    expect(k.locator(".nbscan-mode select")).to_have_value("linear range")
    expect(k.locator(".nbscan-count input")).to_have_value("8")
    page.locator(".lm-TabBar-tab", has_text="2 · Run").click()
    resume = page.locator(".nbscan-resume")
    expect(resume).to_be_enabled()
    expect(page.locator(".nbscan-message")).to_contain_text("Resume runs the other 10")
    expect(page.locator(".nbscan-live-output img")).to_be_visible()  # the earlier results
    _shot(app, artifacts / "app-reattach.png")
    resume.click()
    _wait_for(lambda: _progress(page)["state"] == "finished", 60, "the resumed run")
    assert _progress(page)["run-total"] == 10
    expect(app).to_contain_text("16 done, 0 failed of 16 points, 0 missing")
    assert _store_is_consistent(store) == 16
