"""Adaptive scans: points a learner needs against a uniform grid, and the time per point
against python-adaptive's own runner on the same learner and executor.

1. Points to reach an interpolation error: a 1-D step ``tanh((x - 0.3) / 0.01)`` on
   [0, 1] (the learner's default loss, and the curvature loss adaptive offers for
   interpolation) and a 2-D ring ``x + exp(-(x² + y² - 0.75²)² / a⁴)`` on [-1, 1]² (a = 0.2, the
   ring of adaptive's tutorial, and a sharper a = 0.1). The error is the mean absolute
   difference between the function and the linear interpolation of the points (1-D:
   ``np.interp``; 2-D: on their Delaunay triangulation, as ``notebookscan.adaptive.on_grid``)
   on a fine grid. One ``AdaptiveScan`` (serial) runs to a large goal; the error after
   its first ``n`` points (in the order the learner was told them) is searched for the
   least ``n`` below each target, and compared with the least uniform grid (``n`` or
   ``n × n`` points) that reaches it.
2. Time per point: ``AdaptiveScan(...).run(executor=ex)`` against
   ``adaptive.BlockingRunner(learner, executor=ex)`` with the same learner class, goal
   (N points) and executor (a 2-process pool; with ``--engines`` also 2 ipyparallel
   engines of a cluster started for it), for a function of
   ~0 and of 5 ms. notebookscan also stores every point (journal, shards); adaptive
   keeps them in memory.

    python benchmarks/bench_adaptive.py            # -> results/adaptive.json
    python benchmarks/bench_adaptive.py --quick    # smaller, -> _work/adaptive/
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

NAME = "adaptive"
WORK = os.path.join(HERE, "_work", NAME)
TARGETS_1D = (1e-3, 1e-4, 1e-5)
TARGETS_2D = (1e-2, 5e-3, 3e-3)
RINGS = (0.2, 0.1)


# ------------------------------------------------------------------ the functions

def step(x: float):
    return {"y": float(np.tanh((x - 0.3) / 0.01))}


def step_5ms(x: float):
    time.sleep(0.005)
    return {"y": float(np.tanh((x - 0.3) / 0.01))}


def step_plain(x):
    return float(np.tanh((x - 0.3) / 0.01))


def step_plain_5ms(x):
    time.sleep(0.005)
    return float(np.tanh((x - 0.3) / 0.01))


def ring_value(x, y, a):
    return x + np.exp(-((x ** 2 + y ** 2 - 0.75 ** 2) ** 2) / a ** 4)


def ring_02(x: float, y: float):
    return {"z": float(ring_value(x, y, 0.2))}


def ring_01(x: float, y: float):
    return {"z": float(ring_value(x, y, 0.1))}


# ------------------------------------------------------------------ errors

FINE_1D = np.linspace(0, 1, 100_001)


def error_1d(xs, ys):
    order = np.argsort(xs)
    return float(np.mean(np.abs(np.interp(FINE_1D, xs[order], ys[order])
                                - np.tanh((FINE_1D - 0.3) / 0.01))))


def error_2d(xs, ys, zs, a, fine=201):
    from scipy.interpolate import LinearNDInterpolator

    g = np.linspace(-1, 1, fine)
    gx, gy = np.meshgrid(g, g)
    inside = LinearNDInterpolator(np.column_stack([xs, ys]), zs)(gx, gy)
    return float(np.nanmean(np.abs(inside - ring_value(gx, gy, a))))


def least(n_max, error, target, n_min=2):
    """The least n in [n_min, n_max] with error(n) <= target (errors fall with n, roughly:
    bisection, then a few steps down to be safe); None if even n_max misses it."""
    if error(n_max) > target:
        return None
    lo, hi = n_min, n_max
    while lo < hi:
        mid = (lo + hi) // 2
        if error(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def told_order(ds):
    """Positions of the stored points in the order the learner was told them."""
    return np.lexsort((ds.ns_key.values.astype(str), ds.ns_finished.values.astype(float)))


def points_needed_1d(n_max, loss):
    import notebookscan as ns

    options = {}
    if loss == "curvature":
        from adaptive.learner.learner1D import curvature_loss_function

        options = {"loss_per_interval": curvature_loss_function()}
    store = tempfile.mkdtemp(dir=WORK)
    ns.AdaptiveScan(step, {"x": (0, 1)}, store, goal=ns.Goal(points=n_max),
                    learner_options=options).run(executor="serial", progress=False)
    ds = ns.open_store(store)
    order = told_order(ds)
    xs, ys = ds.x.values[order], ds.y.values[order]
    rows = []
    for target in TARGETS_1D:
        adaptive_n = least(len(xs), lambda n: error_1d(xs[:n], ys[:n]), target, 3)
        def uniform_error(n):
            grid = np.linspace(0, 1, n)
            return error_1d(grid, np.tanh((grid - 0.3) / 0.01))
        uniform_n = least(200_000, uniform_error, target, 3)
        rows.append({"case": f"1-D step, width 0.01 ({loss} loss)", "target": target,
                     "adaptive": adaptive_n, "uniform": uniform_n})
        print(rows[-1], flush=True)
    shutil.rmtree(store)
    return rows


def points_needed_2d(n_max, a):
    import notebookscan as ns

    store = tempfile.mkdtemp(dir=WORK)
    fn = ring_02 if a == 0.2 else ring_01
    ns.AdaptiveScan(fn, {"x": (-1, 1), "y": (-1, 1)}, store,
                    goal=ns.Goal(points=n_max)).run(executor="serial", progress=False)
    ds = ns.open_store(store)
    order = told_order(ds)
    xs, ys, zs = ds.x.values[order], ds.y.values[order], ds.z.values[order]
    rows = []
    for target in TARGETS_2D:
        adaptive_n = least(len(xs), lambda n: error_2d(xs[:n], ys[:n], zs[:n], a), target, 4)
        def uniform_error(k):
            g = np.linspace(-1, 1, k)
            gx, gy = (v.ravel() for v in np.meshgrid(g, g))
            return error_2d(gx, gy, ring_value(gx, gy, a), a)
        side = least(300, uniform_error, target, 2)
        rows.append({"case": f"2-D ring, a = {a} (default loss)", "target": target,
                     "adaptive": adaptive_n, "uniform": None if side is None else side * side})
        print(rows[-1], flush=True)
    shutil.rmtree(store)
    return rows


# ------------------------------------------------------------------ time per point

def time_notebookscan(fn, n, executor, points_per_task=None):
    import notebookscan as ns

    store = tempfile.mkdtemp(dir=WORK)
    started = time.perf_counter()
    run = ns.AdaptiveScan(fn, {"x": (0, 1)}, store, goal=ns.Goal(points=n),
                          points_per_task=points_per_task).run(
        executor=executor, progress=False)
    seconds = time.perf_counter() - started
    assert run.progress.done == n, run.progress
    shutil.rmtree(store)
    return seconds


def time_runner(fn, n, executor):
    import adaptive

    learner = adaptive.Learner1D(fn, (0, 1))
    started = time.perf_counter()
    adaptive.BlockingRunner(learner, npoints_goal=n, executor=executor, log=False)
    seconds = time.perf_counter() - started
    assert learner.npoints >= n, learner.npoints
    return seconds


# (function cost, points per task): automatic sizing (the default) for both costs, and
# one point per task (adaptive's own runner's choice, the default before) for ~0
VARIANTS = (("~0", None), ("~0", 1), ("5 ms", None))
FUNCTIONS = {"~0": (step, step_plain), "5 ms": (step_5ms, step_plain_5ms)}


def per_point(n, repeats, engines, variants=VARIANTS):
    rows = []
    pool = ProcessPoolExecutor(2)
    pool.submit(int).result()  # started before timing
    executors = [("2-process pool", pool, pool)]
    cluster = None
    if engines:
        import notebookscan as ns

        # notebookscan's own start: its watchdog stops the engines if this process dies
        cluster = ns.start_cluster(2, quiet=True)
        executors.append(("2 ipyparallel engines", cluster.client, cluster.client))
    try:
        for label, ns_ex, ad_ex in executors:
            for cost, points_per_task in variants:
                ns_fn, ad_fn = FUNCTIONS[cost]
                # interleaved repeats, medians: a shared machine's noise hits both
                ours, theirs = [], []
                for _ in range(repeats):
                    ours.append(time_notebookscan(ns_fn, n, ns_ex, points_per_task))
                    theirs.append(time_runner(ad_fn, n, ad_ex))
                ours, theirs = float(np.median(ours)), float(np.median(theirs))
                rows.append({"executor": label, "cost": cost, "n": n,
                             "points_per_task": points_per_task or "auto",
                             "notebookscan_ms": ours / n * 1e3,
                             "runner_ms": theirs / n * 1e3, "ratio": ours / theirs})
                print(rows[-1], flush=True)
    finally:
        pool.shutdown()
        if cluster is not None:
            cluster.stop()
    return rows


# ------------------------------------------------------------------ report

def _n(value):
    return "not reached" if value is None else f"{value:,}"


def render(doc, figdir, md_dir):
    """The section of RESULTS.md (``report.SECTIONS["adaptive"]``)."""
    import report

    rows = [[r["case"], f"{r['target']:g}", _n(r["adaptive"]), _n(r["uniform"]),
             "–" if not (r["adaptive"] and r["uniform"])
             else f"{r['uniform'] / r['adaptive']:.1f}×"] for r in doc["points"]]
    times = [[r["executor"], r["cost"], str(r.get("points_per_task", 1)), f"{r['n']:,}",
              f"{r['notebookscan_ms']:.2f}",
              f"{r['runner_ms']:.2f}", f"{r['ratio']:.2f}×"] for r in doc["times"]]
    return "\n".join([
        "## Adaptive scans: points needed, and time per point", "",
        "Points a learner (`AdaptiveScan`; the loss in brackets) needs to bring "
        "the mean absolute error of the linear interpolation of its points below a target, "
        "against the least uniform grid that does (target: ≥ 5× fewer). "
        f"Learner runs of {doc['n_1d']:,} (1-D, default loss), {doc['n_1d'] // 2:,} (1-D, "
        f"curvature loss) and {doc['n_2d']:,} (2-D) points; \"not reached\": not within "
        "them." + (f" ({doc['points_note']}.)" if doc.get("points_note") else ""), "",
        report.md_table(["function", "error target", "adaptive points", "uniform points",
                         "uniform / adaptive"], rows, left=2), "",
        "Time per point of `AdaptiveScan.run` (every point journalled and stored in "
        "shards) against adaptive's `BlockingRunner` (points in memory) on the same "
        f"learner (`Learner1D`, step function) and executor; median of "
        f"{doc.get('times_repeats', doc['repeats'])}, repeats interleaved (target: ≤ 1.5×). "
        "A function of ~0 measures the overhead: notebookscan fsyncs its journal once per "
        "loop turn, adaptive keeps the points in memory. With one point per task that is "
        "about one fsync per point; by default (`points_per_task=None`, \"auto\") a task "
        "holds as many points as take ~2 ms at the measured time per point (at most 32 and "
        "1/16 of the points so far), so a fast function's points share a turn, and a "
        "function of 2 ms or more keeps one point per task." + (
            f" Measured {doc['times_when']}." if doc.get("times_when") else ""), "",
        report.md_table(["executor", "function cost", "points per task", "N",
                         "notebookscan ms/point",
                         "adaptive Runner ms/point", "ratio"], times, left=3), ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--times-only", action="store_true",
                        help="only the time per point, into the existing results file")
    parser.add_argument("--engines", action="store_true",
                        help="also time on 2 ipyparallel engines (a cluster of its own)")
    args = parser.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    n_1d, n_2d = (300, 600) if args.quick else (1_500, 3_000)
    n_time, repeats = (100, 1) if args.quick else (400, 3)
    out_dir = os.path.join(WORK, "results-quick") if args.quick else os.path.join(HERE, "results")
    path = os.path.join(out_dir, f"{NAME}.json")
    if args.times_only:
        with open(path) as fh:
            doc = json.load(fh)
        doc["times"] = per_point(n_time, repeats, engines=args.engines)
        doc["times_repeats"] = repeats
        doc["times_when"] = _dt.datetime.now().isoformat(timespec="seconds")
        with open(path, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {path}")
        return path
    points = points_needed_1d(n_1d, "default") + points_needed_1d(n_1d // 2, "curvature")
    for a in RINGS:
        points += points_needed_2d(n_2d, a)
    times = per_point(n_time, repeats, engines=args.engines)
    doc = {"benchmark": NAME, "when": _dt.datetime.now().isoformat(timespec="seconds"),
           "n_1d": n_1d, "n_2d": n_2d, "repeats": repeats, "points": points,
           "times": times}
    try:
        import bench_storage as bs

        doc["machine"] = bs.machine_info()
    except Exception:  # the machine section is a courtesy
        pass
    doc["times_repeats"] = repeats
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
