"""Big results: the array workload (1 MB per point) against psweep and a netCDF4 floor.

Issue 16, target 1. Every case runs in a fresh child process, three times; the report
gives the medians. Tools, serial and on two workers (``--workers``):

- ``notebookscan``: ``ns.Scan(fn, ns.grid(i=range(N)), store).run(executor=...)`` with
  ``"serial"``, or ``"processes"`` (a 2-process pool started inside the clock);
- ``psweep``: ``ps.run(func, params)`` (serial) or ``poolsize=2``; its idiom for big
  data: the function writes ``<calc_dir>/<pset_id>/x.npy`` itself;
- ``netcdf4``: the floor a netCDF4 user writes by hand: one file, one variable
  ``x(point, row, col)`` chunked one point per chunk, uncompressed, each array written
  as it is computed (with two workers: a 2-process ``multiprocessing.Pool`` computes,
  the parent writes in arrival order), closed and fsynced at the end;
- ``loop``: the function alone in a loop (or the pool), results dropped: no storage.

Client peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of the process that runs the
scan (pool workers are not counted, for any tool).

    python benchmarks/bench_bigresults.py            # -> results/bigresults.json
    python benchmarks/bench_bigresults.py --quick    # -> _work/results-quick/bigresults.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "bigresults"
TOOLS = ("notebookscan", "psweep", "netcdf4", "loop")
WORKERS = (1, 2)
SIZES = (100, 1_000)
QUICK_SIZES = (20,)
REPEATS = 3
WORK = os.path.join(HERE, "_work", NAME)
CASE_TIMEOUT = 1800.0


def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _notebookscan(n, workers, workdir):
    ns = bs._import_notebookscan()
    path = os.path.join(workdir, "store")
    t0 = time.perf_counter()
    ns.Scan(wl.random_array, ns.grid(i=range(n)), store=path).run(
        executor="serial" if workers == 1 else "processes", progress=False)
    wall = time.perf_counter() - t0
    peak = _peak()
    values = ns.open_store(path)["x"].values
    wl.check_values("array", values, n)
    return wall, peak, wl.tree_size(path)[0]


def psweep_array(pset):
    """psweep's idiom for big data: the worker writes <calc_dir>/<pset_id>/x.npy itself."""
    import numpy as np

    out = os.path.join(pset["_calc_dir"], pset["_pset_id"])
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "x.npy"), wl.random_array(pset["i"], pset["i"])["x"])
    return {}


def _psweep(n, workers, workdir):
    import psweep as ps

    calc_dir = os.path.join(workdir, "calc")
    t0 = time.perf_counter()
    ps.run(psweep_array, ps.pgrid([ps.plist("i", range(n))]), calc_dir=calc_dir,
           poolsize=None if workers == 1 else workers)
    wall = time.perf_counter() - t0
    return wall, _peak(), wl.tree_size(calc_dir)[0]


def _array_of(i):
    return wl.random_array(i, i)["x"]


def _netcdf4(n, workers, workdir):
    import multiprocessing

    import netCDF4

    path = os.path.join(workdir, "floor.nc")
    t0 = time.perf_counter()
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("point", n)
        for dim, size in zip(wl.ARRAY_DIMS, wl.ARRAY_SHAPE, strict=True):
            nc.createDimension(dim, size)
        var = nc.createVariable("x", "f8", ("point", *wl.ARRAY_DIMS),
                                chunksizes=(1, *wl.ARRAY_SHAPE))
        if workers == 1:
            for i in range(n):
                var[i] = _array_of(i)
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for i, x in enumerate(pool.imap(_array_of, range(n))):
                    var[i] = x
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    wall = time.perf_counter() - t0
    return wall, _peak(), wl.tree_size(path)[0]


def _loop(n, workers, workdir):
    import multiprocessing

    t0 = time.perf_counter()
    if workers == 1:
        for i in range(n):
            _array_of(i)
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap(_array_of, range(n)):
                pass
    wall = time.perf_counter() - t0
    return wall, _peak(), 0


RUNNERS = {"notebookscan": _notebookscan, "psweep": _psweep, "netcdf4": _netcdf4,
           "loop": _loop}


def child_main(tool, n, workers, workdir):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, bs.ROOT, os.environ.get("PYTHONPATH")) if p)
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    wall, peak, nbytes = RUNNERS[tool](n, workers, workdir)
    wl.emit({"tool": tool, "n": n, "workers": workers, "wall_seconds": wall,
             "client_peak_rss": peak, "store_bytes": nbytes})


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def run_case(tool, n, workers, logdir, repeat):
    workdir = os.path.join(WORK, f"{tool}-{n}-{workers}-{repeat}")
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", tool, str(n), str(workers),
           workdir]
    log = os.path.join(logdir, f"{tool}-{n}-{workers}-{repeat}.log")
    result, _, _, error = bs.run_child(cmd, timeout=CASE_TIMEOUT, log=log)
    shutil.rmtree(workdir, ignore_errors=True)
    if error:
        return {"tool": tool, "n": n, "workers": workers, "error": error}
    result.pop("phase", None)
    with open(log) as fh:  # what the child printed on stderr (codec errors would show)
        result["stderr_lines"] = sum(1 for line in fh if line.strip())
    return result


def median_of(runs):
    ok = [r for r in runs if "wall_seconds" in r]
    if not ok:
        return runs[0]
    out = dict(ok[0])
    for key in ("wall_seconds", "client_peak_rss"):
        out[key] = statistics.median(r[key] for r in ok)
        out[f"{key}_all"] = [r[key] for r in ok]
    out["stderr_lines"] = max(r["stderr_lines"] for r in ok)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--sizes", default="")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--out", default="")
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "N", "WORKERS", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tool, n, workers, workdir = args.child
        child_main(tool, int(n), int(workers), workdir)
        return None
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    sizes = ([int(s) for s in args.sizes.split(",") if s]
             or (QUICK_SIZES if args.quick else SIZES))
    tools = [t for t in args.tools.split(",") if t]
    workers_list = [int(w) for w in args.workers.split(",") if w]
    t_start = time.perf_counter()
    results = []
    for n in sizes:
        for workers in workers_list:
            # repeats interleaved across tools: a burst of load hits every tool alike
            runs = {tool: [] for tool in tools}
            for repeat in range(args.repeats):
                for tool in tools:
                    runs[tool].append(run_case(tool, n, workers, logdir, repeat))
            for tool in tools:
                rec = median_of(runs[tool])
                results.append(rec)
                if "error" in rec:
                    print(f"[{NAME}] {tool:13s} N={n:<5d} w={workers} FAILED {rec['error']}",
                          flush=True)
                else:
                    print(f"[{NAME}] {tool:13s} N={n:<5d} w={workers} "
                          f"{rec['wall_seconds']:7.3f}s  peak "
                          f"{rec['client_peak_rss'] / 2**20:6.0f}MiB  "
                          f"stderr lines {rec['stderr_lines']}", flush=True)
    doc = {"benchmark": NAME, "quick": args.quick, "machine": bs.machine_info(),
           "load_average_at_end": os.getloadavg(), "repeats": args.repeats,
           "tools": tools, "total_seconds": time.perf_counter() - t_start,
           "results": results}
    out_path = args.out or bs.default_out(args.quick, NAME)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{NAME}] wrote {os.path.relpath(out_path)}", flush=True)
    return out_path


if __name__ == "__main__":
    main()
