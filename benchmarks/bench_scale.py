"""Scale benchmark: a 1 000 000-point grid against a store that holds 100 000 of them.

In a fresh child process (its imports happen before any clock starts):

1. ``ns.grid(i=range(N_GRID))``: the grid definition;
2. ``space.keys()`` and ``space.seeds()``: every point's key and seed;
3. ``ns.Scan(fn, space, store)`` and ``scan.plan()``: the skip-done check, which
   reads the store's index and returns the points that would run (a pandas table),
   ``scan.status()`` (the same check, counted).

The store is filled beforehand, in another child, by a serial scan of the first
``N_STORED`` points (compacted into one shard, as a long-lived store would be). Each
measurement is repeated ``REPEATS`` times in new processes; the table shows the median.

    python benchmarks/bench_scale.py            # full run -> results/scale.json
    python benchmarks/bench_scale.py --quick    # 100 000 / 10 000 -> _work/results-quick/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "scale"
N_GRID, N_STORED = 1_000_000, 100_000
QUICK_N_GRID, QUICK_N_STORED = 100_000, 10_000
REPEATS = 3
TARGET_SECONDS = 10.0
STAGES = ("grid", "keys", "seeds", "scan", "dry_run", "status")
WORK = os.path.join(HERE, "_work", NAME)


def double(i, seed=0):
    return 2.0 * i


def child_fill(n_stored, store):
    ns = bs._import_notebookscan()
    t0 = time.perf_counter()
    ns.Scan(double, ns.grid(i=range(n_stored)), store=store).run(executor="serial",
                                                                 progress=False)
    ns.compact(store)
    return {"fill_seconds": time.perf_counter() - t0,
            "shards": len(os.listdir(os.path.join(store, "shards")))}


def child_check(n_grid, store):
    ns = bs._import_notebookscan()
    import pandas  # noqa: F401 - the dry run's table; imported before the clock starts
    import xarray  # noqa: F401

    out = {"rss_after_import": wl.rss_bytes()}
    t = {}
    t0 = time.perf_counter()
    space = ns.grid(i=range(n_grid))
    t["grid"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    keys = space.keys()
    t["keys"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    space.seeds()
    t["seeds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    scan = ns.Scan(double, space, store=store)
    t["scan"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    dry = scan.plan()
    t["dry_run"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    status = scan.status()
    t["status"] = time.perf_counter() - t1
    if len(keys) != n_grid or dry.stored != len(space) - len(dry.to_run):
        raise AssertionError("dry run does not add up")
    out.update({"seconds": t, "total_seconds": total, "to_run": len(dry.to_run),
                "stored": dry.stored, "status": status})
    return out


def child_main(kind, n, store):
    out = {"kind": kind}
    out.update(child_fill(n, store) if kind == "fill" else child_check(n, store))
    wl.emit(out)


def _run(kind, n, store, logdir, tag):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(n), store]
    res, peak, seconds, err = bs.run_child(cmd, log=os.path.join(logdir, f"{tag}.log"))
    if err:
        raise SystemExit(f"[{NAME}] {tag} failed: {err}")
    res["peak_rss"] = peak
    res["process_seconds"] = seconds
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "N", "STORE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, n, store = args.child
        child_main(kind, int(n), store)
        return None

    n_grid, n_stored = (QUICK_N_GRID, QUICK_N_STORED) if args.quick else (N_GRID, N_STORED)
    repeats = 1 if args.quick else REPEATS
    out_path = args.out or (os.path.join(HERE, "_work", "results-quick", f"{NAME}.json")
                            if args.quick else os.path.join(HERE, "results", f"{NAME}.json"))
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    store = os.path.join(WORK, "store")
    shutil.rmtree(store, ignore_errors=True)
    fill = _run("fill", n_stored, store, logdir, "fill")
    print(f"[{NAME}] store of {n_stored:,} points in {fill['fill_seconds']:.2f} s "
          f"({fill['shards']} shard(s))", flush=True)
    reps = []
    for rep in range(repeats):
        res = _run("check", n_grid, store, logdir, f"check-{rep}")
        reps.append(res)
        print(f"[{NAME}] {n_grid:,}-point grid vs {n_stored:,} stored: "
              f"{res['total_seconds']:.2f} s ("
              + ", ".join(f"{k} {v:.2f}" for k, v in res["seconds"].items())
              + f"), peak RSS {res['peak_rss'] / 2**20:.0f} MiB", flush=True)
    shutil.rmtree(store, ignore_errors=True)
    doc = {"benchmark": NAME, "quick": args.quick, "machine": bs.machine_info(),
           "n_grid": n_grid, "n_stored": n_stored, "target_seconds": TARGET_SECONDS,
           "fill": fill, "repetitions": reps,
           "median_seconds": {k: statistics.median(r["seconds"][k] for r in reps)
                              for k in STAGES},
           "median_total_seconds": statistics.median(r["total_seconds"] for r in reps),
           "peak_rss_method": "ru_maxrss from os.wait4() of the child process",
           "load_average": list(os.getloadavg())}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{NAME}] wrote {os.path.relpath(out_path)}", flush=True)
    return out_path


if __name__ == "__main__":
    main()
