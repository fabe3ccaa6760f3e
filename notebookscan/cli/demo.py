"""``demo``: a quick scan of the firing-rate model, with a plot."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..errors import NotebookscanError
from .common import UsageError, echo
from .running import check_executor_options, execute


def demo_space(quick: bool) -> Any:
    """The demo's points: the quick scan is a subset of the full one (same store)."""
    from .. import grid, trials
    from ..models import FIRING_RATE_PARAMETERS as UNITS

    if quick:
        space = grid(k=[2, 6, 10, 14, 18], tau=[0.005, 0.01]) * trials(2)
    else:
        space = grid(k=list(range(1, 21)), tau=[0.005, 0.01, 0.02]) * trials(5)
    return space.with_attrs(k=UNITS["k"], tau=UNITS["tau"])  # axis labels with units


def cmd_demo(args: argparse.Namespace) -> int:
    """``notebookscan demo``."""
    from .. import Scan
    from ..models import firing_rate

    settings = {"executor": args.executor, "engines": args.engines}
    check_executor_options(settings)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError("--out", f"{args.out!r} is a file; give a directory")
    os.makedirs(out, exist_ok=True)
    store = os.path.join(out, "store")
    t0 = time.perf_counter()
    try:
        scan = Scan(firing_rate, demo_space(args.quick), store)
    except NotebookscanError as exc:
        raise UsageError("--out", f"{exc} (choose a new --out directory)") from None
    echo(f"scanning notebookscan.models.firing_rate over {scan.space!r}")
    code = execute(scan, args, settings, retry_failed=False, dry_run=False)
    ds = scan.results()
    png = os.path.join(out, "firing_rate.png")
    plot_rates(ds, png)
    echo(f"plot:  {png}")
    echo(f"total: {time.perf_counter() - t0:.1f} s. Open the results in Python with "
          f"notebookscan.open_store({store!r})")
    return code


def plot_rates(ds: Any, path: str) -> None:
    """Save rate against k as a PNG: mean ± standard error over trials, one line per tau.

    Uses :func:`notebookscan.plotting.plot_result`, like the notebooks do.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    try:
        from ..plotting import plot_result
    except ImportError:
        fig = _plot_rates_fallback(ds)
    else:
        fig = plot_result(ds, "rate", x="k", hue="tau", over="trial", logx=False,
                          title="leaky integrate-and-fire neurons: firing rate")
        ax = fig.axes[0]
        ax.set_xlabel("input strength k")
        ax.set_ylabel("firing rate (Hz), mean ± s.e.m. over trials")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)


def _plot_rates_fallback(ds: Any) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    rate = ds["rate"]
    count = rate.notnull().sum("trial")
    mean, sem = rate.mean("trial"), rate.std("trial", ddof=1) / count ** 0.5
    for tau in ds["tau"].values:
        ax.errorbar(ds["k"].values, mean.sel(tau=tau).values, yerr=sem.sel(tau=tau).values,
                    marker="o", ms=3, capsize=2, label=f"tau={float(tau):g}")
    ax.set_xlabel("input strength k")
    ax.set_ylabel("firing rate (Hz), mean ± s.e.m. over trials")
    ax.set_title("leaky integrate-and-fire neurons: firing rate", fontsize="medium")
    ax.legend()
    return fig

