"""Two workers each: notebookscan, pypet, psweep and a raw ipyparallel floor side by side.

The storage workloads (``per_run_float`` and ``array``, see workloads.py) run with two
workers per tool on this 2-core machine, each case in its own child process:

- ``notebookscan``: ``ns.Scan(fn, ns.grid(i=range(N)), store).run()`` on 2 local
  ipyparallel engines (``local_executor(2)``, started and warmed up before the clock
  starts; its start-up time is recorded separately), results persisted to the store;
- ``notebookscan_processes``: the same with ``executor="processes"`` (a 2-process
  ``ProcessPoolExecutor``, started inside the clock);
- ``pypet``: an ``Environment(multiproc=True, ncores=2, use_pool=True)``, pypet's own
  multiprocessing (its default ``wrap_mode``: workers write to the HDF5 file under a lock),
  in its own venv (numpy < 2);
- ``psweep``: ``ps.run(func, params, poolsize=2)`` (a ``multiprocessing.Pool``);
- ``floor``: ``lv.map_sync(fn, range(N), chunksize=ceil(N / 2))`` on the same 2 engines,
  results returned to the client and kept in memory: no persistence at all.

Each tool's serial numbers are in the storage benchmark (same workloads, same machine),
and are repeated here for the ratio ``serial / two workers`` (the speed-up).

Peak memory: ``getrusage(RUSAGE_SELF).ru_maxrss`` read at the end of the child (the
process that runs the scan and holds its results: the client; the workers are not
counted).

    python benchmarks/bench_peers.py            # -> results/peers.json
    python benchmarks/bench_peers.py --quick    # -> _work/results-quick/peers.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "peers"
WORKERS = 2
TOOLS = ("notebookscan", "notebookscan_processes", "pypet", "psweep", "floor")
SERIAL_OF = {"notebookscan": "notebookscan", "notebookscan_processes": "notebookscan",
             "pypet": "pypet", "psweep": "psweep"}
CASES = (("per_run_float", 1_000), ("per_run_float", 10_000), ("array", 100),
         ("array", 1_000))
QUICK_CASES = (("per_run_float", 200), ("array", 20))
WORK = os.path.join(HERE, "_work", NAME)
CASE_TIMEOUT = 3600.0


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _self_peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_notebookscan(workload, n, workdir, executor_name):
    ns = bs._import_notebookscan()
    fn = wl.function_for(workload)
    extra = {}
    if executor_name == "engines":
        from notebookscan.executors.local_cluster import local_executor

        t0 = time.perf_counter()
        executor = local_executor(WORKERS, quiet=True)
        extra["cluster_start_seconds"] = time.perf_counter() - t0
        # warm-up: the engines import numpy and notebookscan's worker before the clock
        ns.Scan(fn, ns.grid(i=range(4)), store=os.path.join(workdir, "warmup")).run(
            executor=executor, progress=False)
    else:
        executor = "processes"
    path = os.path.join(workdir, "store")
    t0 = time.perf_counter()
    scan = ns.Scan(fn, ns.grid(i=range(n)), store=path)
    scan.run(executor=executor, progress=False)
    wall = time.perf_counter() - t0
    peak = _self_peak_rss()
    values = ns.open_store(path)[bs._result_var(workload)].values
    wl.check_values(workload, values, n)
    apparent, _, files = wl.tree_size(path)
    if executor_name == "engines":
        from notebookscan.executors.local_cluster import shutdown_local_executor

        shutdown_local_executor()
    return {"wall_seconds": wall, "store_bytes": apparent, "store_files": files,
            "client_peak_rss": peak, **extra}


def psweep_float(pset):
    """psweep's worker function (module level, so its pool can pickle it)."""
    return {"x": wl.random_float(pset["i"], pset["i"])}


def psweep_array(pset):
    """psweep's idiom for big data: the worker writes <calc_dir>/<pset_id>/x.npy itself."""
    import numpy as np

    out = os.path.join(pset["_calc_dir"], pset["_pset_id"])
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "x.npy"), wl.random_array(pset["i"], pset["i"])["x"])
    return {}


def _run_psweep(workload, n, workdir):
    import psweep as ps

    calc_dir = os.path.join(workdir, "calc")
    func = psweep_array if workload == "array" else psweep_float
    t0 = time.perf_counter()
    ps.run(func, ps.pgrid([ps.plist("i", range(n))]), calc_dir=calc_dir,
           tmpsave=workload == "per_run_float", poolsize=WORKERS)
    wall = time.perf_counter() - t0
    apparent, _, files = wl.tree_size(calc_dir)
    return {"wall_seconds": wall, "store_bytes": apparent, "store_files": files,
            "client_peak_rss": _self_peak_rss()}


def _run_floor(workload, n, workdir):
    import ipyparallel as ipp

    fn = wl.function_for(workload)
    cluster = ipp.Cluster(n=WORKERS, profile_dir=os.path.join(workdir, "profile"),
                          log_level=40)
    t0 = time.perf_counter()
    client = cluster.start_and_connect_sync(activate=False)
    start = time.perf_counter() - t0
    try:
        lv = client.load_balanced_view()
        lv.map_sync(fn, range(4), range(4))  # warm-up: the engines import numpy
        chunk = math.ceil(n / WORKERS)
        t0 = time.perf_counter()
        values = lv.map_sync(fn, range(n), range(n), chunksize=chunk)
        wall = time.perf_counter() - t0
        peak = _self_peak_rss()
        if workload == "array":
            values = [v["x"] for v in values]
        wl.check_values(workload, values, n)
    finally:
        client.close()
        cluster.stop_cluster_sync()
    return {"wall_seconds": wall, "store_bytes": 0, "store_files": 0,
            "client_peak_rss": peak, "cluster_start_seconds": start, "chunksize": chunk}


def child_main(tool, workload, n, workdir):
    # engines are child processes: they must find workloads.py to unpickle the function
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, bs.ROOT, os.environ.get("PYTHONPATH")) if p)
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    if tool == "notebookscan":
        out = _run_notebookscan(workload, n, workdir, "engines")
    elif tool == "notebookscan_processes":
        out = _run_notebookscan(workload, n, workdir, "processes")
    elif tool == "psweep":
        out = _run_psweep(workload, n, workdir)
    elif tool == "floor":
        out = _run_floor(workload, n, workdir)
    else:
        raise SystemExit(f"unknown tool {tool!r}")
    out.update({"tool": tool, "workload": workload, "n": n})
    wl.emit(out)


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def _command(tool, workload, n, workdir):
    if tool == "pypet":
        return [bs.PYPET_PYTHON, os.path.join(HERE, "pypet_runner.py"), workload, str(n),
                "run", workdir, str(WORKERS)]
    return [sys.executable, os.path.abspath(__file__), "--child", tool, workload, str(n),
            workdir]


def run_case(tool, workload, n, logdir):
    workdir = os.path.join(WORK, f"{tool}-{workload}-{n}")
    shutil.rmtree(workdir, ignore_errors=True)
    log = os.path.join(logdir, f"{tool}-{workload}-{n}.log")
    result, tree_peak, seconds, error = bs.run_child(_command(tool, workload, n, workdir),
                                                     timeout=CASE_TIMEOUT, log=log)
    shutil.rmtree(workdir, ignore_errors=True)
    if error:
        return {"tool": tool, "workload": workload, "n": n, "error": error}
    result.pop("phase", None)
    if tool == "pypet":
        # pypet_runner reports the run of its main process; its RSS is the client's
        result["client_peak_rss"] = result.pop("self_peak_rss", None)
    result["largest_process_peak_rss"] = tree_peak
    result["process_seconds"] = seconds
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "WORKLOAD", "N", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tool, workload, n, workdir = args.child
        child_main(tool, workload, int(n), workdir)
        return None

    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    tools = [t for t in args.tools.split(",") if t]
    unavailable = {}
    if "pypet" in tools:
        ok, msg = bs.ensure_pypet(os.path.join(logdir, "setup_pypet_venv.log"))
        if not ok:
            unavailable["pypet"] = msg
    results = []
    t_start = time.perf_counter()
    for workload, n in (QUICK_CASES if args.quick else CASES):
        for tool in tools:
            if tool in unavailable:
                continue
            rec = run_case(tool, workload, n, logdir)
            results.append(rec)
            if "error" in rec:
                print(f"[{NAME}] {tool:24s} {workload:14s} N={n:<6d} FAILED {rec['error']}",
                      flush=True)
            else:
                print(f"[{NAME}] {tool:24s} {workload:14s} N={n:<6d} "
                      f"run {rec['wall_seconds']:8.3f}s  client peak "
                      f"{rec['client_peak_rss'] / 2**20:6.0f}MiB", flush=True)
    doc = {"benchmark": NAME, "quick": args.quick, "machine": bs.machine_info(),
           "workers": WORKERS, "tools": tools, "unavailable": unavailable,
           "total_seconds": time.perf_counter() - t_start, "results": results}
    out_path = bs.default_out(args.quick, NAME)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{NAME}] wrote {os.path.relpath(out_path)}", flush=True)
    return out_path


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------

LABELS = {"notebookscan": "notebookscan, 2 ipyparallel engines",
          "notebookscan_processes": "notebookscan, 2-process pool",
          "pypet": "pypet, multiproc ncores=2", "psweep": "psweep, poolsize=2",
          "floor": "raw ipyparallel map, 2 engines (no persistence)"}
STYLE = {"notebookscan": {"color": "#d62728", "marker": "o"},
         "notebookscan_processes": {"color": "#ff9896", "marker": "o", "linestyle": "--"},
         "pypet": {"color": "#2ca02c", "marker": "^"},
         "psweep": {"color": "#1f77b4", "marker": "s"},
         "floor": {"color": "#7f7f7f", "marker": "v", "linestyle": ":"}}


def _serial_index(storage):
    if not storage:
        return {}
    return {(r["tool"], r["workload"], r["n"]): r for r in storage["results"]
            if "wall_seconds" in r}


def figure(doc, figdir):
    """Runtime and client peak memory against N, one line per tool, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in doc["results"] if "wall_seconds" in r]
    workloads = sorted({r["workload"] for r in ok}, reverse=True)
    fig, axes = plt.subplots(1, 2 * len(workloads), figsize=(3.6 * 2 * len(workloads), 3.4),
                             constrained_layout=True, squeeze=False)
    for col, workload in enumerate(workloads):
        ax_t, ax_m = axes[0][2 * col], axes[0][2 * col + 1]
        for tool in doc["tools"]:
            pts = sorted((r["n"], r["wall_seconds"], r["client_peak_rss"]) for r in ok
                         if r["tool"] == tool and r["workload"] == workload)
            if not pts:
                continue
            ns_, walls, rss = zip(*pts, strict=True)
            ax_t.plot(ns_, walls, label=LABELS[tool], **STYLE[tool])
            ax_m.plot(ns_, [b / 2**20 for b in rss], label=LABELS[tool], **STYLE[tool])
        ax_t.set_ylabel("runtime, 2 workers [s]")
        ax_m.set_ylabel("client peak RSS [MiB]")
        for ax in (ax_t, ax_m):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("number of runs N")
            ax.set_title(workload, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    os.makedirs(figdir, exist_ok=True)
    path = os.path.join(figdir, "peers_two_workers.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(doc, figdir, md_dir, others=None):
    """The section of RESULTS.md (``report.SECTIONS["peers"]``)."""
    import report

    serial = _serial_index((others or {}).get("storage"))
    rows = []
    for workload, n in sorted({(r["workload"], r["n"]) for r in doc["results"]},
                              key=lambda c: (c[0] != "per_run_float", c[1])):
        recs = {r["tool"]: r for r in doc["results"]
                if r["workload"] == workload and r["n"] == n}
        floor = recs.get("floor", {}).get("wall_seconds")
        for tool in doc["tools"]:
            r = recs.get(tool)
            if r is None:
                continue
            if "wall_seconds" not in r:
                rows.append([workload, f"{n:,}", LABELS[tool], f"failed: {r['error']}"]
                            + [""] * 5)
                continue
            wall = r["wall_seconds"]
            ser = serial.get((SERIAL_OF.get(tool), workload, n), {}).get("wall_seconds")
            rows.append([
                workload, f"{n:,}", LABELS[tool], report.fmt_s(wall),
                report.fmt_s(ser) if ser else "–",
                report.fmt_x(ser / wall) if ser else "–",
                report.fmt_x(wall / floor) if floor and tool != "floor" else "–",
                report.fmt_mib(r["client_peak_rss"]),
                report.fmt_mb(r["store_bytes"]) if r["store_bytes"] else "–"])
    fig = figure(doc, figdir)
    out = ["## Two workers: notebookscan, pypet, psweep and a raw ipyparallel map", ""]
    if doc.get("quick"):
        out += ["> **Quick smoke run** (small N): not the numbers to quote.", ""]
    out += [
        "The storage workloads with two workers per tool on the 2-core machine; each case "
        "in a fresh process. Serial times are the storage benchmark's (same machine, same "
        "session). *vs floor*: wall time over the raw ipyparallel map's, which returns "
        "the results to memory and persists nothing.", "",
        report.md_table(["workload", "N", "tool", "2 workers [s]", "serial [s]",
                         "speed-up", "vs floor", "client peak RSS [MiB]", "store [MB]"],
                        rows, left=3), "",
        f"![two workers]({os.path.relpath(fig, md_dir)})", "",
        "- notebookscan on engines: `local_executor(2)` started and warmed up before the "
        "clock; the 2-process pool (`executor=\"processes\"`) and pypet's and psweep's "
        "pools start inside the clock.",
        "- pypet: `Environment(multiproc=True, ncores=2, use_pool=True)` (its default "
        "`wrap_mode`, LOCK: the workers write the HDF5 file under a lock). psweep: "
        "`ps.run(..., poolsize=2)`; for arrays its function writes one `.npy` per point.",
        "- Client peak RSS: `ru_maxrss` of the process that runs the scan (the workers "
        "are separate processes and not counted).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
