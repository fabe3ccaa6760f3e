"""What the browser tests read from a JupyterLab page and how they wait for it."""

from __future__ import annotations

import time


def progress(page) -> dict[str, int | str]:
    """The first progress bar's state and counts: done, failed, running, total (the
    store's points of the scan) and run-done, run-total (the last run's)."""
    bar = page.locator(".nbscan-progress").first
    out: dict[str, int | str] = {"state": bar.get_attribute("data-state") or ""}
    for name in ("done", "failed", "running", "total", "run-done", "run-total"):
        out[name] = int(bar.get_attribute(f"data-{name}") or 0)
    return out


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll ``predicate`` until true; after ``timeout`` seconds fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def explorer_canvas(nb):
    """Run the notebook's cells and wait for its explorer's ipympl canvas:
    ``(explorer, canvas)`` locators."""
    from playwright.sync_api import expect

    nb.run_all()
    explorer = nb.panel.locator(".nbscan-explorer")
    canvas = explorer.locator(".nbscan-explore-output canvas").last
    expect(canvas).to_be_visible(timeout=90_000)
    return explorer, canvas
