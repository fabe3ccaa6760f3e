"""Client memory of a real refined scan, and the first open in a new process.

The refined scan (issue 16, target 4): a coarse grid of 4 parameters × 2 trials filtered
by ``where`` (~10 000 points, ~1 ms each) is run, then refined to ~100 000 points and
run again into the same store (the coarse points are skipped). Each stage runs in its
own fresh child process, whose peak RSS (``ru_maxrss`` from ``os.wait4``) is reported
with its RSS after importing numpy and notebookscan (anything else a stage imports is
part of its cost):

``space``      build the coarse and the refined space and their keys;
``dry_run``    ``Scan(fn, refined, store).plan()`` against the coarse store;
``run``        ``Scan(fn, refined, store).run(executor="processes")`` (the client only:
               the two worker processes are not counted);
``open``       ``ns.open_store(store)`` of the finished store, eagerly.

The first open (target 3): ``import notebookscan``, ``import xarray`` and
``import xarray; import notebookscan; ns.open_store(...)`` of a 10 000-point scalar store
in fresh processes; the open's cost is the last minus ``import xarray``. Imports run
with compiled bytecode cached (as in an installed package), in a scratch
``PYTHONPYCACHEPREFIX``.

    python benchmarks/bench_memory.py            # full run -> results/memory.json
    python benchmarks/bench_memory.py --quick    # 10x smaller -> _work/results-quick/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "memory"
REPEATS = 3
STAGES = ("space", "dry_run", "run", "open")
TARGETS_MIB = {"run": 100, "open": 150}
TARGET_IMPORT_SECONDS = 0.1
TARGET_OPEN_SECONDS = 0.1  # above `import xarray`
N_OPEN = 10_000
WORK = os.path.join(HERE, "_work", NAME)
# (coarse values per parameter, refined values per parameter) of a, b; c and d keep 10
SIZES = {"full": (10, 30), "quick": (4, 10)}


def point_fn(a, b, c, d, trial, seed=0):
    """~1 ms of work a point (a sleep: the benchmark measures the client, not the CPU)."""
    time.sleep(0.001)
    return a * b + c - d + 1e-3 * trial


def inside(p):
    """The ``where`` predicate: the lower triangle of (a, b), about half of the grid."""
    return p["a"] + p["b"] <= 1.0


def spaces(ns, quick):
    import numpy as np

    coarse_n, fine_n = SIZES["quick" if quick else "full"]
    cd = {"c": np.linspace(0, 1, 10), "d": np.linspace(0, 1, 10)}
    coarse = (ns.grid(a=np.linspace(0, 1, coarse_n), b=np.linspace(0, 1, coarse_n), **cd)
              * ns.trials(2)).where(inside)
    fine = coarse.refine(a=np.linspace(0, 1, fine_n), b=np.linspace(0, 1, fine_n))
    return coarse, fine


# -- children ------------------------------------------------------------------------------
def child_stage(stage, store, quick):
    ns = bs._import_notebookscan()
    import numpy  # noqa: F401 - what every stage needs; the rest counts for the stage

    ns.Scan, ns.open_store  # noqa: B018 - resolve the lazy names before measuring
    out = {"stage": stage, "rss_after_import": wl.rss_bytes()}
    t0 = time.perf_counter()
    if stage == "fill":
        coarse, _ = spaces(ns, quick)
        ns.Scan(point_fn, coarse, store=store).run(executor="processes", progress=False)
        out["points"] = len(coarse)
    elif stage == "space":
        coarse, fine = spaces(ns, quick)
        coarse.key_array(), fine.key_array()
        out["points"] = len(fine)
    elif stage == "dry_run":
        _, fine = spaces(ns, quick)
        plan = ns.Scan(point_fn, fine, store=store).plan()
        out["points"], out["to_run"] = len(fine), len(plan.to_run)
    elif stage == "run":
        _, fine = spaces(ns, quick)
        ns.Scan(point_fn, fine, store=store).run(executor="processes", progress=False)
        out["points"] = len(fine)
    elif stage == "open":
        ds = ns.open_store(store, lazy=False)
        from notebookscan.store.schema import STATUS

        out["points"] = int((ds[STATUS] == "done").sum())
    out["seconds"] = time.perf_counter() - t0
    out["own_peak_rss"] = own_peak_rss()
    wl.emit(out)


def own_peak_rss():
    """This process's own peak RSS (``VmHWM``): ``ru_maxrss`` from ``wait4`` is the
    largest of the process and the worker processes it reaped."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def child_make_open_store(store, n):
    ns = bs._import_notebookscan()
    ns.Scan(wl_double, ns.grid(i=range(n)), store=store).run(executor="serial",
                                                              progress=False)
    wl.emit({"points": n})


def wl_double(i, seed=0):
    return 2.0 * i


_OPEN_PROBES = {
    "import_notebookscan": "import notebookscan",
    "import_xarray": "import xarray",
    "xarray_and_open": "import xarray; import notebookscan as ns; ns.open_store({store!r})",
}


def _timed_probe(code, env):
    """(wall, CPU) seconds a fresh interpreter spends in ``code`` (startup excluded); the
    CPU time is what the code costs whatever else the machine runs meanwhile."""
    probe = ("import time; t0, c0 = time.perf_counter(), time.process_time()\n" + code
             + "\nprint(time.perf_counter() - t0, time.process_time() - c0)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def measure_open(store, repeats):
    env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(WORK, "pycache"),
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE),
                                                        os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    codes = {k: v.format(store=store) for k, v in _OPEN_PROBES.items()}
    for code in codes.values():  # compile and cache the bytecode once
        _timed_probe(code, env)
    runs = {k: [] for k in codes}
    for _ in range(repeats):  # interleaved, so a load spike hits every probe alike
        for k, code in codes.items():
            runs[k].append(_timed_probe(code, env))
    median = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    return {"repetitions": runs, "median_seconds": median, "median_cpu_seconds": cpu,
            "open_above_xarray_seconds": median["xarray_and_open"] - median["import_xarray"],
            "open_above_xarray_cpu_seconds": cpu["xarray_and_open"] - cpu["import_xarray"]}


# -- parent --------------------------------------------------------------------------------
def _run(args, logdir, tag):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    res, peak, seconds, err = bs.run_child(cmd, log=os.path.join(logdir, f"{tag}.log"))
    if err:
        raise SystemExit(f"[{NAME}] {tag} failed: {err}")
    res["peak_rss"] = peak
    res["process_seconds"] = seconds
    return res


def measure_refined(quick, repeats, logdir):
    coarse_store = os.path.join(WORK, "coarse")
    shutil.rmtree(coarse_store, ignore_errors=True)
    q = "1" if quick else "0"
    fill = _run(["fill", coarse_store, q], logdir, "fill")
    print(f"[{NAME}] coarse store: {fill['points']:,} points in {fill['seconds']:.1f} s, "
          f"client peak {fill['peak_rss'] / 2**20:.0f} MiB", flush=True)
    reps = {s: [] for s in STAGES}
    for rep in range(repeats):
        store = os.path.join(WORK, f"refined-{rep}")
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(coarse_store, store, symlinks=True)
        for stage in STAGES:
            res = _run([stage, store if stage != "space" else coarse_store, q], logdir,
                       f"{stage}-{rep}")
            reps[stage].append(res)
            print(f"[{NAME}] {stage}: {res['points']:,} points, {res['seconds']:.2f} s, "
                  f"peak RSS {res['own_peak_rss'] / 2**20:.0f} MiB (after imports: "
                  f"{res['rss_after_import'] / 2**20:.0f} MiB)", flush=True)
        shutil.rmtree(store, ignore_errors=True)
    median = {s: {k: statistics.median(r[k] for r in reps[s])
                  for k in ("own_peak_rss", "peak_rss", "rss_after_import", "seconds")}
              for s in STAGES}
    return {"fill": fill, "repetitions": reps, "median": median,
            "points": reps["run"][0]["points"], "coarse_points": fill["points"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--only", default="open,refined", help="open, refined or both")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "STORE", "QUICK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, store, quick = args.child
        if stage == "make_open":
            child_make_open_store(store, int(quick))
        else:
            child_stage(stage, store, quick == "1")
        return None

    repeats = 1 if args.quick else REPEATS
    out_path = args.out or (os.path.join(HERE, "_work", "results-quick", f"{NAME}.json")
                            if args.quick else os.path.join(HERE, "results", f"{NAME}.json"))
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    doc = {"benchmark": NAME, "quick": args.quick, "machine": bs.machine_info(),
           "targets_mib": TARGETS_MIB, "target_import_seconds": TARGET_IMPORT_SECONDS,
           "target_open_seconds": TARGET_OPEN_SECONDS,
           "peak_rss_method": "ru_maxrss from os.wait4() of each child process (client only)",
           "load_average_start": list(os.getloadavg())}
    only = set(args.only.split(","))
    if "open" in only:
        store = os.path.join(WORK, "open-store")
        shutil.rmtree(store, ignore_errors=True)
        _run(["make_open", store, str(N_OPEN)], logdir, "make-open")
        doc["open"] = {"points": N_OPEN, **measure_open(store, REPEATS)}
        m = doc["open"]["median_seconds"]
        c = doc["open"]["median_cpu_seconds"]
        print(f"[{NAME}] import notebookscan {m['import_notebookscan']:.3f} s "
              f"({c['import_notebookscan']:.3f} s CPU), import xarray "
              f"{m['import_xarray']:.3f} s ({c['import_xarray']:.3f} s CPU), open "
              f"{N_OPEN:,} points {doc['open']['open_above_xarray_seconds']:.3f} s "
              f"({doc['open']['open_above_xarray_cpu_seconds']:.3f} s CPU) above it",
              flush=True)
        shutil.rmtree(store, ignore_errors=True)
    if "refined" in only:
        doc["refined"] = measure_refined(args.quick, repeats, logdir)
    doc["load_average_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{NAME}] wrote {os.path.relpath(out_path)}", flush=True)
    return out_path


if __name__ == "__main__":
    main()


# -- report --------------------------------------------------------------------------------
_STAGE_LABELS = {"space": "build the coarse and the refined space (+ keys)",
                 "dry_run": "`Scan(fn, refined, store).plan()`",
                 "run": "`Scan(fn, refined, store).run(executor=\"processes\")`",
                 "open": "`ns.open_store(store)`, eager"}


def _mib(b):
    return "–" if b is None else f"{b / 2**20:.0f}"


def _s(x):
    return "–" if x is None else f"{x:.3f}"


def _verdict(value, target):
    return "–" if value is None else ("met" if value <= target else "**missed**")


def render(doc, figdir, md_dir):
    """The RESULTS.md section of ``results/memory.json`` (``before``: the same benchmark
    on the commit before the changes, when recorded)."""
    before = doc.get("before", {})
    load = doc.get("load_average_start", [0])[0], doc.get("load_average_end", [0])[0]
    out = ["## First open and client memory of a refined scan", ""]
    if doc.get("quick"):
        out += ["> **Quick smoke run** (small N): not the numbers to quote.", ""]
    out += [f"> The machine was shared with other jobs while this ran (load average "
            f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
            f"{doc['machine'].get('cores', '?')} cores): times are inflated and noisy; "
            "memory is not affected. Medians of 3 fresh processes.", ""]
    if "open" in doc:
        o, ob = doc["open"], before.get("open", {})
        m, mb = o["median_seconds"], ob.get("median_seconds", {})
        c, cb = o.get("median_cpu_seconds", {}), ob.get("median_cpu_seconds", {})
        opened = (o["open_above_xarray_seconds"], o.get("open_above_xarray_cpu_seconds"))
        opened_b = (ob.get("open_above_xarray_seconds"),
                    ob.get("open_above_xarray_cpu_seconds"))
        rows = [["`import notebookscan`", _s(mb.get("import_notebookscan")),
                 _s(m["import_notebookscan"]), _s(cb.get("import_notebookscan")),
                 _s(c.get("import_notebookscan")), f"≤ {doc['target_import_seconds']}",
                 _verdict(c.get("import_notebookscan", m["import_notebookscan"]),
                          doc["target_import_seconds"])],
                ["`import xarray`", _s(mb.get("import_xarray")), _s(m["import_xarray"]),
                 _s(cb.get("import_xarray")), _s(c.get("import_xarray")), "", ""],
                [f"`ns.open_store` of {o['points']:,} scalar points, above `import xarray`",
                 _s(opened_b[0]), _s(opened[0]), _s(opened_b[1]), _s(opened[1]),
                 f"≤ {doc['target_open_seconds']}",
                 _verdict(opened[1] if opened[1] is not None else opened[0],
                          doc["target_open_seconds"])]]
        out += ["### First open in a fresh process", "",
                md_table(["what", "before, wall [s]", "after, wall [s]", "before, CPU [s]",
                          "after, CPU [s]", "target [s]", "result (CPU)"], rows),
                "", "Each probe is its own interpreter (bytecode cached, as in an installed "
                "package); the open's cost is `import xarray; import notebookscan; "
                "ns.open_store(...)` minus `import xarray`. The CPU time of the probe "
                "process is the load-independent figure.", ""]
    if "refined" in doc:
        r, rb = doc["refined"], before.get("refined", {})
        med, medb = r["median"], rb.get("median", {})
        rows = []
        for stage in STAGES:
            target = doc["targets_mib"].get(stage)
            peak = med[stage]["own_peak_rss"]
            peak_b = medb.get(stage, {}).get("own_peak_rss")
            rows.append([_STAGE_LABELS[stage], _mib(peak_b), _mib(peak),
                         _mib(med[stage]["rss_after_import"]), _s(med[stage]["seconds"]),
                         f"≤ {target}" if target else "",
                         _verdict(peak / 2**20, target) if target else ""])
        out += [f"### A {r['points']:,}-point grid refined from a {r['coarse_points']:,}-point "
                "coarse one", "",
                "4 parameters × 2 trials, `where` keeps about half of the grid, ~1 ms a "
                "point (a sleep); the coarse points are in the store before the refined run. "
                "Peak RSS is the client's own (`VmHWM`; the worker processes are not "
                "counted), each stage in a fresh process.", "",
                md_table(["stage", "peak before [MiB]", "peak after [MiB]",
                          "after imports [MiB]", "seconds", "target [MiB]", "result"], rows),
                "", "\"After imports\" is the RSS once numpy and notebookscan are imported; "
                "whatever else a stage imports (pandas for the dry run's table, netCDF4, "
                "xarray) counts in its peak.", ""]
    if doc.get("notes"):
        out += ["### Where the rest goes", ""] + [f"- {note}" for note in doc["notes"]] + [""]
    if "keep" in doc:
        out += _keep_section(doc["keep"])
    return "\n".join(out)


def _keep_section(keep):
    """Issue 16 target 5 before and after, from bench_parallel and bench_scale runs."""
    b, a = keep["before"], keep["after"]
    rows = [["trivial function on 2 engines, N = 100 000: best wall [s]",
             _s(b["engines_100k_best_seconds"]), _s(a["engines_100k_best_seconds"])],
            ["the same: client main-thread CPU [s] (median)",
             _s(b["engines_100k_client_main_cpu_seconds"]),
             _s(a["engines_100k_client_main_cpu_seconds"])],
            ["first result after `run()` on a cold local cluster [s] (median of 5)",
             _s(b["cold_first_point_median_seconds"]),
             _s(a["cold_first_point_median_seconds"])]]
    for n in sorted(a["memory_peak_mib"], key=int):
        rows.append([f"client peak RSS, trivial scan of N = {int(n):,} [MiB]",
                     _mib(b["memory_peak_mib"][n] * 2**20), _mib(a["memory_peak_mib"][n] * 2**20)])
    rows += [["1 000 000-point grid vs 100 000 stored: grid + keys + dry run [s]",
              _s(b["scale_1m_total_seconds"]), _s(a["scale_1m_total_seconds"])],
             ["the same: peak RSS [MiB]", _mib(b["scale_1m_peak_mib"] * 2**20),
              _mib(a["scale_1m_peak_mib"] * 2**20)]]
    return ["### Kept (issue 16, target 5): before and after these changes", "",
            f"`bench_parallel.py --parts throughput,memory,coldstart --sizes 100000` and "
            f"`bench_scale.py`, each run once on the commit before and after, on the loaded "
            f"machine (load average {b['load_average_start']:.0f} and "
            f"{a['load_average_start']:.0f} at their start): wall times are the load's; "
            "the client's CPU time and the memory are comparable.", "",
            md_table(["measure", "before", "after"], rows), ""]


def md_table(header, rows, left=1):
    import report

    return report.md_table(header, rows, left)
