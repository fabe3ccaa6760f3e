"""Storage benchmark: notebookscan, psweep, pypet and a plain-netCDF4 floor side by side.

The three workloads of the pypet paper's Figure 5 (see workloads.py), at N = 100, 1 000,
10 000 points (the array workload to 1 000). For each tool, workload and N three child
processes run one after the other:

- ``run``: the scan itself; wall time, the time spent inside the user's function (so the
  per-point overhead of the tool is (wall - function time) / N), the store's size;
- ``load_all``: time to load every result into memory;
- ``load_each``: time to fetch the results point by point (what that means per tool is
  in the docstring of each ``load_each_*`` function and in RESULTS.md).

Peak memory is each child's own peak resident set size: the ``ru_maxrss`` that
``os.wait4`` returns for that child (the per-child form of
``getrusage(RUSAGE_CHILDREN).ru_maxrss``), so it includes the interpreter and the
tool's imports; each child also reports its RSS right after its imports.

    python benchmarks/bench_storage.py            # full run -> results/storage.json
    python benchmarks/bench_storage.py --quick    # small smoke run -> _work/results-quick/
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import workloads as wl  # noqa: E402

NAME = "storage"
TOOLS = ("notebookscan", "psweep", "pypet", "floor")
PHASES = ("run", "load_all", "load_each")
PYPET_PYTHON = os.path.join(HERE, ".venv-pypet", "bin", "python")
PYPET_SETUP = os.path.join(HERE, "setup_pypet_venv.sh")
WORK = os.path.join(HERE, "_work", NAME)
CASE_TIMEOUT = 3600.0


# --------------------------------------------------------------------------------------
# child side: one tool, one workload, one N, one phase
# --------------------------------------------------------------------------------------


def _import_notebookscan():
    try:
        import notebookscan as ns
    except ImportError:
        sys.path.insert(0, ROOT)
        import notebookscan as ns
    return ns


def _result_var(workload):
    # a bare float return value becomes the variable "result"; the array is named "x"
    return "x" if workload == "array" else "result"


# notebookscan ---------------------------------------------------------------------------


def run_notebookscan(workload, n, workdir):
    ns = _import_notebookscan()
    path = os.path.join(workdir, "store")
    timer = wl.FunctionTimer()
    fn = timer.wrap(wl.function_for(workload))
    run_kwargs = {"executor": "serial", "progress": False}
    params = inspect.signature(ns.Scan.run).parameters
    flush = {}
    if workload == "end":
        # notebookscan persists as it goes; "end" = flush as rarely as the API allows
        if "flush_every" in params:
            flush["flush_every"] = n + 1
        if "flush_interval" in params:
            flush["flush_interval"] = 1e9
        if "flush_bytes" in params:
            flush["flush_bytes"] = 2**60
    run_kwargs.update(flush)
    t0 = time.perf_counter()
    scan = ns.Scan(fn, ns.grid(i=range(n)), store=path)
    scan.run(**run_kwargs)
    wall = time.perf_counter() - t0
    apparent, allocated, files = wl.tree_size(path)
    shards = len(os.listdir(os.path.join(path, "shards")))
    return {"wall_seconds": wall, "fn_seconds": timer.total, "fn_calls": timer.calls,
            "store_bytes": apparent, "store_allocated_bytes": allocated, "store_files": files,
            "shards": shards, "run_kwargs": dict(run_kwargs),
            "flush_settings": flush or "default"}


def load_all_notebookscan(workload, n, workdir):
    """``ds = ns.open_store(path); ds.load()``, then the values of the result variable."""
    ns = _import_notebookscan()
    t0 = time.perf_counter()
    ds = ns.open_store(os.path.join(workdir, "store"))
    t_open = time.perf_counter() - t0
    ds = ds.load()
    values = ds[_result_var(workload)].values
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    out = {"load_all_seconds": seconds, "open_seconds": t_open}
    if "duration" in ds:
        # notebookscan's own per-point timing (function + result conversion), summed
        out["stored_duration_seconds"] = float(ds["duration"].sum())
    return out


def open_notebookscan(workload, workdir):
    ns = _import_notebookscan()
    ns.open_store(os.path.join(workdir, "store"))


def load_each_notebookscan(workload, n, workdir):
    """Open the store once (``ns.open_store``), then ``ds[var].sel(i=i).values`` per point:
    xarray label-based selection on the Dataset open_store returns, one point at a time."""
    ns = _import_notebookscan()
    t0 = time.perf_counter()
    ds = ns.open_store(os.path.join(workdir, "store"))
    t_open = time.perf_counter() - t0
    var = ds[_result_var(workload)]
    values = [var.sel(i=i).values for i in range(n)]
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_each_seconds": seconds, "open_seconds": t_open}


# psweep -------------------------------------------------------------------------------


def _psweep_func(workload, fn):
    if workload == "array":
        def func(pset):
            # psweep's idiom for big data: a file per pset in <calc_dir>/<pset_id>/
            out = os.path.join(pset["_calc_dir"], pset["_pset_id"])
            os.makedirs(out, exist_ok=True)
            import numpy as np

            np.save(os.path.join(out, "x.npy"), fn(pset["i"], pset["i"])["x"])
            return {}
    else:
        def func(pset):
            return {"x": fn(pset["i"], pset["i"])}
    return func


def run_psweep(workload, n, workdir):
    import psweep as ps

    calc_dir = os.path.join(workdir, "calc")
    timer = wl.FunctionTimer()
    func = _psweep_func(workload, timer.wrap(wl.function_for(workload)))
    t0 = time.perf_counter()
    params = ps.pgrid([ps.plist("i", range(n))])
    # end: the database is written once at the end (psweep's default);
    # per_run_float: tmpsave=True also pickles each pset's result as soon as it is done
    ps.run(func, params, calc_dir=calc_dir, tmpsave=workload == "per_run_float")
    wall = time.perf_counter() - t0
    apparent, allocated, files = wl.tree_size(calc_dir)
    return {"wall_seconds": wall, "fn_seconds": timer.total, "fn_calls": timer.calls,
            "store_bytes": apparent, "store_allocated_bytes": allocated, "store_files": files}


def _psweep_db(workdir):
    import psweep as ps

    return ps.df_read(os.path.join(workdir, "calc", ps.DATABASE_BASENAME))


def open_psweep(workload, workdir):
    _psweep_db(workdir)


def load_all_psweep(workload, n, workdir):
    """The pickled database (``ps.df_read``); for arrays also every ``x.npy``, stacked."""
    import numpy as np

    t0 = time.perf_counter()
    df = _psweep_db(workdir).sort_values("i")
    t_open = time.perf_counter() - t0
    if workload == "array":
        calc = os.path.join(workdir, "calc")
        values = np.stack([np.load(os.path.join(calc, pid, "x.npy")) for pid in df["_pset_id"]])
    else:
        values = df["x"].to_numpy(dtype=float)
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_all_seconds": seconds, "open_seconds": t_open}


def load_each_psweep(workload, n, workdir):
    """end: the database read once, indexed by ``i``, then ``df.at[i, "x"]`` per point;
    per_run_float: each pset's own ``tmpsave`` pickle (``ps.pickle_read``), one by one;
    array: the database read once for the pset ids, then ``np.load`` of each ``x.npy``."""
    import numpy as np
    import psweep as ps

    t0 = time.perf_counter()
    df = _psweep_db(workdir).set_index("i")
    t_open = time.perf_counter() - t0
    calc = os.path.join(workdir, "calc")
    if workload == "end":
        values = [df.at[i, "x"] for i in range(n)]
    elif workload == "per_run_float":
        run_id = df["_run_id"].iloc[0]
        tmp = os.path.join(calc, "tmpsave", run_id)
        values = [ps.pickle_read(os.path.join(tmp, df.at[i, "_pset_id"] + ".pk"))["x"]
                  for i in range(n)]
    else:
        values = [np.load(os.path.join(calc, df.at[i, "_pset_id"], "x.npy")) for i in range(n)]
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_each_seconds": seconds, "open_seconds": t_open}


# floor --------------------------------------------------------------------------------


def run_floor(workload, n, workdir):
    """A plain loop and one NetCDF file written with netCDF4.

    Floats: the loop collects the values, the file is written once at the end.
    Array: the file is created before the loop and each array written into its slot
    (one chunk per point, blosc-lz4 + byte shuffle, as in notebookscan's shards) of the
    open variable; the file is closed at the end (so the loop never holds 1 GB)."""
    import netCDF4
    import numpy as np

    path = os.path.join(workdir, "floor.nc")
    timer = wl.FunctionTimer()
    fn = timer.wrap(wl.function_for(workload))
    t0 = time.perf_counter()
    if workload == "array":
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("i", n)
            for dim, size in zip(wl.ARRAY_DIMS, wl.ARRAY_SHAPE, strict=True):
                nc.createDimension(dim, size)
            nc.createVariable("i", "i8", ("i",))[:] = np.arange(n)
            var = nc.createVariable("x", "f8", ("i", *wl.ARRAY_DIMS), compression="blosc_lz4",
                                    shuffle=True, chunksizes=(1, *wl.ARRAY_SHAPE))
            for i in range(n):
                var[i] = fn(i, i)["x"]
    else:
        values = np.array([fn(i, i) for i in range(n)])
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("i", n)
            nc.createVariable("i", "i8", ("i",))[:] = np.arange(n)
            nc.createVariable("x", "f8", ("i",))[:] = values
    wall = time.perf_counter() - t0
    apparent, allocated, files = wl.tree_size(path)
    with netCDF4.Dataset(path) as nc:
        filters = nc["x"].filters()
    return {"wall_seconds": wall, "fn_seconds": timer.total, "fn_calls": timer.calls,
            "store_bytes": apparent, "store_allocated_bytes": allocated, "store_files": files,
            "filters": {k: v for k, v in filters.items() if v}}


def open_floor(workload, workdir):
    import netCDF4

    with netCDF4.Dataset(os.path.join(workdir, "floor.nc")) as nc:
        nc["x"][0]


def load_all_floor(workload, n, workdir):
    """``netCDF4.Dataset(path)["x"][:]``."""
    import netCDF4

    t0 = time.perf_counter()
    with netCDF4.Dataset(os.path.join(workdir, "floor.nc")) as nc:
        nc.set_auto_mask(False)
        t_open = time.perf_counter() - t0
        values = nc["x"][:]
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_all_seconds": seconds, "open_seconds": t_open}


def load_each_floor(workload, n, workdir):
    """The file opened once, then ``var[i]`` per point (netCDF4 indexing)."""
    import netCDF4

    t0 = time.perf_counter()
    with netCDF4.Dataset(os.path.join(workdir, "floor.nc")) as nc:
        nc.set_auto_mask(False)
        t_open = time.perf_counter() - t0
        var = nc["x"]
        values = [var[i] for i in range(n)]
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_each_seconds": seconds, "open_seconds": t_open}


# --------------------------------------------------------------------------------------


def _versions(tool):
    import importlib.metadata as md

    names = {"notebookscan": ("numpy", "xarray", "netCDF4", "pandas"),
             "psweep": ("psweep", "numpy", "pandas"),
             "floor": ("numpy", "netCDF4")}[tool]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    if tool == "notebookscan":
        ns = _import_notebookscan()
        out["notebookscan"] = getattr(ns, "__version__", None)
    if tool in ("notebookscan", "floor"):
        import netCDF4

        out["netcdf-c"] = netCDF4.__netcdf4libversion__
        out["hdf5"] = netCDF4.__hdf5libversion__
    return out


def child_main(tool, workload, n, phase, workdir):
    t0 = time.perf_counter()
    # the tool's imports happen before any timing
    if tool == "notebookscan":
        _import_notebookscan()
        import xarray  # noqa: F401
    elif tool == "psweep":
        import psweep  # noqa: F401
    else:
        import netCDF4  # noqa: F401
    import numpy  # noqa: F401

    out = {"tool": tool, "workload": workload, "n": n, "phase": phase,
           "import_seconds": time.perf_counter() - t0, "rss_after_import": wl.rss_bytes(),
           "versions": _versions(tool)}
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    func = globals()[f"{phase}_{tool}"]
    if phase == "run":
        out.update(func(workload, n, workdir))
        out["fn_standalone_seconds"] = wl.standalone_function_time(workload, n)
    elif phase == "load_all":
        out.update(wl.first_and_steady(func, workload, n, workdir))
    else:
        # untimed warm-up: open the store once, so that modules the tool imports lazily
        # on its first open are loaded; then the timed pass (which opens it again)
        globals()[f"open_{tool}"](workload, workdir)
        out.update(func(workload, n, workdir))
    wl.emit(out)


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def run_child(cmd, timeout=CASE_TIMEOUT, log=None):
    """Run one child; return (its result dict or None, peak RSS bytes, seconds, error)."""
    t0 = time.perf_counter()
    with open(log or os.devnull, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    result = None
    for line in out.splitlines():
        if line.startswith(wl.RESULT_MARK):
            result = json.loads(line[len(wl.RESULT_MARK):])
    error = None
    if proc.returncode != 0 or result is None:
        tail = ""
        if log and os.path.exists(log):
            with open(log) as fh:
                tail = fh.read()[-2000:]
        error = f"exit code {proc.returncode}: {tail.strip().splitlines()[-1:] or ''}"
    return result, peak, seconds, error


def child_command(tool, workload, n, phase, workdir):
    if tool == "pypet":
        return [PYPET_PYTHON, os.path.join(HERE, "pypet_runner.py"), workload, str(n), phase,
                workdir]
    return [sys.executable, os.path.abspath(__file__), "--child", tool, workload, str(n),
            phase, workdir]


def ensure_pypet(log):
    """Create the pypet venv if needed; return (available, message)."""
    if os.path.exists(PYPET_PYTHON):
        check = subprocess.run([PYPET_PYTHON, "-c", "import pypet, tables"],
                               capture_output=True, text=True)
        if check.returncode == 0:
            return True, "ok"
    with open(log, "w") as fh:
        proc = subprocess.run(["bash", PYPET_SETUP], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log) as fh:
            tail = fh.read().strip().splitlines()[-3:]
        return False, "pypet could not be installed: " + " | ".join(tail)
    return True, "ok"


def notebookscan_available():
    """notebookscan's Scan importable in a child of the project's interpreter?"""
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); import notebookscan as ns; "
            "ns.Scan; ns.grid; ns.open_store")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return True, "ok"
    lines = proc.stderr.strip().splitlines()
    return False, "notebookscan.Scan not importable: " + (lines[-1] if lines else "?")


def repeats_for(workload, n, quick):
    if quick:
        return 1
    return 3 if workload != "array" and n <= 1_000 else 1


def machine_info():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as fh:
            rel = dict(line.rstrip().split("=", 1) for line in fh if "=" in line)
        os_name = f"{rel.get('PRETTY_NAME', '').strip(chr(34))} ({platform.platform()})"
    except OSError:
        pass
    disk = None
    try:
        import psutil

        part = max((p for p in psutil.disk_partitions(all=True) if HERE.startswith(p.mountpoint)),
                   key=lambda p: len(p.mountpoint), default=None)
        disk = f"{part.device} ({part.fstype})" if part else None
    except Exception:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram, "os": os_name,
            "python": sys.version.split()[0], "disk": disk,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}


def _median_record(reps):
    """Median over repetitions of each numeric field, other fields from the first."""
    out = dict(reps[0])
    for key, value in reps[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in reps if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(vals)
    return out


def run_case(tool, workload, n, repeats, logdir):
    workdir = os.path.join(WORK, f"{tool}-{workload}-{n}")
    reps, errors = [], []
    for rep in range(repeats):
        shutil.rmtree(workdir, ignore_errors=True)
        record = {"tool": tool, "workload": workload, "n": n}
        for phase in PHASES:
            log = os.path.join(logdir, f"{tool}-{workload}-{n}-{phase}-{rep}.log")
            res, peak, seconds, err = run_child(child_command(tool, workload, n, phase, workdir),
                                                log=log)
            if err:
                errors.append(f"{phase}: {err}")
                break
            record[f"{phase}_peak_rss"] = peak
            record[f"{phase}_process_seconds"] = seconds
            record[f"{phase}_rss_after_import"] = res.pop("rss_after_import")
            record[f"{phase}_import_seconds"] = res.pop("import_seconds")
            if "open_seconds" in res:
                record[f"{phase}_open_seconds"] = res.pop("open_seconds")
            for key in ("tool", "workload", "n", "phase"):
                res.pop(key, None)
            record.update(res)
        else:
            reps.append(record)
        shutil.rmtree(workdir, ignore_errors=True)
        if errors:
            break
    if not reps:
        return {"tool": tool, "workload": workload, "n": n, "error": "; ".join(errors)}
    out = _median_record(reps)
    out["repeats"] = len(reps)
    out["repetitions"] = [{k: r[k] for k in ("wall_seconds", "load_all_seconds",
                                              "load_each_seconds") if k in r} for r in reps]
    out["raw_bytes"] = wl.raw_bytes(workload, n)
    out["overhead_per_point_seconds"] = (out["wall_seconds"] - out["fn_seconds"]) / n
    if errors:
        out["error"] = "; ".join(errors)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--workloads", default=",".join(wl.WORKLOADS))
    parser.add_argument("--sizes", default="", help="comma-separated N, overrides defaults")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--child", nargs=5, metavar=("TOOL", "WORKLOAD", "N", "PHASE", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tool, workload, n, phase, workdir = args.child
        child_main(tool, workload, int(n), phase, workdir)
        return None

    out_path = args.out or default_out(args.quick)
    tools = [t for t in args.tools.split(",") if t]
    workloads = [w for w in args.workloads.split(",") if w]
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)

    unavailable = {}
    if "pypet" in tools:
        ok, msg = ensure_pypet(os.path.join(logdir, "setup_pypet_venv.log"))
        if not ok:
            unavailable["pypet"] = msg
    if "notebookscan" in tools:
        ok, msg = notebookscan_available()
        if not ok:
            unavailable["notebookscan"] = msg
    for tool, msg in unavailable.items():
        print(f"[{NAME}] skipping {tool}: {msg}", flush=True)

    sizes = wl.QUICK_SIZES if args.quick else wl.SIZES
    cases = []
    for workload in workloads:
        ns_ = [int(s) for s in args.sizes.split(",") if s] or sizes[workload]
        if workload == "array" and args.sizes:
            ns_ = [n for n in ns_ if n <= max(sizes["array"])]
        for n in ns_:
            for tool in tools:
                if tool not in unavailable:
                    cases.append((tool, workload, n))

    results = []
    t_start = time.perf_counter()
    for tool, workload, n in cases:
        reps = repeats_for(workload, n, args.quick)
        t0 = time.perf_counter()
        rec = run_case(tool, workload, n, reps, logdir)
        results.append(rec)
        if "error" in rec and "wall_seconds" not in rec:
            print(f"[{NAME}] {tool:12s} {workload:14s} N={n:<6d} FAILED {rec['error']}",
                  flush=True)
        else:
            print(f"[{NAME}] {tool:12s} {workload:14s} N={n:<6d} run {rec['wall_seconds']:8.3f}s"
                  f"  overhead {rec['overhead_per_point_seconds'] * 1e6:9.1f}µs/pt"
                  f"  store {rec['store_bytes'] / 1e6:9.3f}MB"
                  f"  load all {rec.get('load_all_seconds', float('nan')):7.3f}s"
                  f"  each {rec.get('load_each_seconds', float('nan')):7.3f}s"
                  f"  peak {rec['run_peak_rss'] / 2**20:7.0f}MiB"
                  f"  ({time.perf_counter() - t0:.0f}s, x{reps})", flush=True)

    doc = {"benchmark": NAME, "quick": args.quick, "machine": machine_info(),
           "tools": tools, "unavailable": unavailable, "workloads": wl.WORKLOADS,
           "array_shape": list(wl.ARRAY_SHAPE),
           "peak_rss_method": "ru_maxrss from os.wait4() of each child process (per child)",
           "total_seconds": time.perf_counter() - t_start, "results": results}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"[{NAME}] wrote {os.path.relpath(out_path)}", flush=True)
    return out_path


def default_out(quick, name=NAME):
    """Where a benchmark's results go: results/, or _work/results-quick/ with --quick."""
    if quick:
        return os.path.join(HERE, "_work", "results-quick", f"{name}.json")
    return os.path.join(HERE, "results", f"{name}.json")


if __name__ == "__main__":
    main()
