"""The run monitor in a real JupyterLab: runs it did not start, and the failures table.

* A detached run started from a kernel that is then restarted: the app opened again on
  the store shows the run in progress (attached, "running (detached)"), not "ready"
  with Resume offered, and its Stop stops the run.
* Failures come in while a traceback is open: the fold stays open across refreshes,
  the errors are one group (values stripped), and a point's row shows its parameters
  and traceback.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

import notebookscan as ns

from . import notebooks
from .page import progress as _progress
from .page import wait_for as _wait_for

pytestmark = pytest.mark.browser

STORE = "results/detached"
START = f"""
space = ns.grid(k=np.linspace(1, 20, 120), tau=0.01, delay=0.25)
scan = ns.Scan(firing_rate, space, store={STORE!r})
run = scan.run(executor="serial", detach=True, flush_interval=0.3)
"""
FLAKY = '''
import time
import notebookscan as ns
import notebookscan.widgets as nsw

def flaky(x: int, delay: float = 0.3):
    time.sleep(delay)
    if x % 2:
        raise ValueError(f"x={x} too big for 'limit {x * 3}'")
    return {"y": float(x)}

scan = ns.Scan(flaky, ns.grid(x=range(40)), store="results/flaky")
monitor = nsw.RunMonitor(scan, executor="serial")
monitor
'''


def _restart_kernel(nb) -> None:
    nb.page.evaluate("""async () => {
        const session = window.jupyterapp.shell.currentWidget.sessionContext.session;
        await session.kernel.restart();
    }""")
    nb.page.wait_for_function(
        "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel"
        "?.status === 'idle'", timeout=90_000)


def test_a_detached_run_is_seen_after_a_kernel_restart_and_stopped(lab, open_notebook,
                                                                  artifacts):
    from playwright.sync_api import expect

    notebooks.write(lab.root / "detached.ipynb", [
        notebooks.MODEL,
        f"""
        app = nsw.ScanApp(firing_rate, store={STORE!r}, executor="serial",
                          interactive=False)
        app
        """])
    shutil.rmtree(lab.root / STORE, ignore_errors=True)  # from an earlier try
    nb = open_notebook("detached.ipynb")
    nb.execute_ms(notebooks.MODEL + "\n" + START)  # in the kernel, no widget yet
    store = lab.root / STORE
    started = time.monotonic()
    while ns.attach(store).progress.done < 3:
        assert time.monotonic() - started < 90, ns.attach(store).log()
        time.sleep(0.2)
    _restart_kernel(nb)  # the starter's kernel is gone; the run goes on

    nb.run_all()
    app = nb.panel.locator(".nbscan-app")
    expect(app).to_be_visible(timeout=60_000)
    nb.panel.locator(".lm-TabBar-tab", has_text="2 · Run").click()
    state = nb.panel.locator(".nbscan-state")
    expect(state).to_contain_text("running (detached)", timeout=30_000)
    expect(nb.panel.locator(".nbscan-resume")).to_be_disabled()
    expect(nb.panel.locator(".nbscan-message")).not_to_contain_text("Resume runs")
    expect(nb.panel.locator(".nbscan-stop")).to_be_enabled()
    first = _progress(nb.panel)
    assert first["state"] == "watching" and first["total"] == 120
    _wait_for(lambda: _progress(nb.panel)["done"] > first["done"], 30,
              "the detached run's points to show up live")
    header = nb.panel.locator(".nbscan-header-counts")
    expect(header).to_have_attribute("data-total", "120")
    busy = nb.panel.locator(".nbscan-engines-row")
    expect(busy).to_have_attribute("data-busy", "1")
    expect(busy).to_contain_text("(detached)")
    app.screenshot(path=artifacts / "monitor-detached.png")

    nb.panel.locator(".nbscan-stop").click()
    _wait_for(lambda: _progress(nb.panel)["state"] == "stopped", 30, "the run to stop")
    run = ns.attach(store)
    assert run.wait(timeout=30).stopped  # its record goes first, then its process
    done = _progress(nb.panel)["done"]
    assert 3 <= done < 120
    space = ns.grid(k=np.linspace(1, 20, 120), tau=0.01, delay=0.25)
    assert ns.Scan(firing_rate, space, store).status()["done"] == done
    expect(nb.panel.locator(".nbscan-resume")).to_be_enabled()  # now there is a rest
    # header, progress line and live plot: the same count of the store's points
    expect(header).to_have_attribute("data-done", str(done))
    expect(nb.panel.locator(".nbscan-liveplot")).to_contain_text(
        f"{done} done, 0 failed of 120 points", timeout=20_000)


def firing_rate(k: float, tau: float = 0.01, delay: float = 0.0, seed: int = 0):
    """Same parameters as the notebooks' model (keys depend on parameters only)."""
    return {"rate": k * tau}


def test_an_open_traceback_stays_open_while_failures_come_in(lab, open_notebook,
                                                            artifacts):
    from playwright.sync_api import expect

    shutil.rmtree(lab.root / "results" / "flaky", ignore_errors=True)
    notebooks.write(lab.root / "flaky.ipynb", [FLAKY])
    nb = open_notebook("flaky.ipynb")
    nb.run_all()
    monitor = nb.panel.locator(".nbscan-monitor")
    expect(monitor).to_be_visible(timeout=60_000)
    monitor.locator(".nbscan-run").click()
    rows = monitor.locator(".nbscan-failed-point details")
    expect(rows.first).to_be_visible(timeout=60_000)
    rows.first.locator("summary").click()  # open the first failed point
    opened = rows.first
    expect(opened).to_have_attribute("open", "")
    expect(opened).to_contain_text("Traceback")
    expect(opened).to_contain_text("x=1 too big")
    # more failures come in (the table refreshes): the fold stays open
    _wait_for(lambda: rows.count() >= 5, 60, "more failures")
    expect(rows.first).to_have_attribute("open", "")
    assert rows.first.evaluate("el => el.open") is True
    # one group for ValueError: x=… too big for …, counted ×n
    groups = monitor.locator(".nbscan-failure-group")
    expect(groups).to_have_count(1)
    head = monitor.locator(".nbscan-failure-group-head")
    count = int(head.get_attribute("data-count") or 0)
    assert count >= 5
    expect(head).to_contain_text(f"×{count}")
    monitor.screenshot(path=artifacts / "monitor-failures.png")
    monitor.locator(".nbscan-stop").click()
    _wait_for(lambda: _progress(nb.panel)["state"] == "stopped", 30, "the run to stop")
    expect(rows.first).to_have_attribute("open", "")
