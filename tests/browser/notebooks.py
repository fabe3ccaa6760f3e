"""Notebooks the browser tests open in JupyterLab (written with nbformat, per test).

Each notebook defines a small model, builds a widget and displays it. The models run
in worker processes (``executor="processes"``), so they are plain module-level
functions of the notebook, sent to the workers by cloudpickle.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

MODEL = textwrap.dedent('''
    import time
    import numpy as np
    import notebookscan as ns
    import notebookscan.widgets as nsw
    import xarray as xr

    def firing_rate(k: float, tau: float = 0.01, delay: float = 0.0, seed: int = 0):
        """A toy neuron: a noisy sigmoid of the drive k; fails for large drive and tau."""
        time.sleep(delay)
        if k > 18 and tau > 0.015:
            raise FloatingPointError(f"diverged at k={k}, tau={tau}")
        rng = np.random.default_rng(seed)
        rate = 40 / (1 + np.exp(-(k - 10) * tau * 60)) + rng.normal(0, 1.5)
        cv = 1 / np.sqrt(1 + k) + rng.normal(0, 0.02)
        return {"rate": xr.DataArray(rate, attrs={"units": "Hz", "long_name": "firing rate"}),
                "cv": xr.DataArray(cv, attrs={"long_name": "ISI coefficient of variation"})}

    UNITS = {"k": {"units": "nA", "long_name": "input drive"},
             "tau": {"units": "s", "long_name": "membrane time constant"}}
''').strip()


def write(path: Path, cells: list[str]) -> Path:
    """Write a notebook with one code cell per string (no outputs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source).strip()) for source in cells]
    nbformat.write(nb, path)
    return path


def app_notebook(path: Path, store: str, *, executor: str = "processes") -> Path:
    """The full app over ``firing_rate``: define, run, watch, explore."""
    return write(path, [
        MODEL,
        f"""
        # a scan whose space declares the parameters' units: the form keeps them
        space = ns.grid(k=np.linspace(0, 1, 5), tau=0.01).with_attrs(**UNITS)
        app = nsw.ScanApp(ns.Scan(firing_rate, space, store={store!r}), executor={executor!r},
                          interactive=False)  # PNG plots: the test compares their sources
        app.builder.rows["tau"].mode.value = "list"
        app.builder.rows["tau"].values.value = "0.005, 0.01, 0.02"
        app.builder.trials.value = 3
        app
        """,
    ])


def slow_notebook(path: Path, store: str, *, points: int, delay: float,
                  executor: str = "processes") -> Path:
    """A monitor over a slow scan (``delay`` seconds a point), for Stop and responsiveness."""
    return write(path, [
        MODEL,
        f"""
        import ipywidgets as w

        space = ns.grid(k=np.linspace(1, 20, {points}), tau=0.01, delay={delay}).with_attrs(
            **UNITS)
        scan = ns.Scan(firing_rate, space, store={store!r})
        monitor = nsw.RunMonitor(scan, executor={executor!r})
        live = nsw.LivePlot(scan)
        w.VBox([monitor, live])
        """,
    ])


def explorer_notebook(path: Path, store: str) -> Path:
    """A new kernel re-attaching to a store: the app restores the form and offers Resume."""
    return write(path, [
        MODEL,
        f"""
        app = nsw.ScanApp(firing_rate, store={store!r}, executor="processes",
                          interactive=False)
        app
        """,
    ])
