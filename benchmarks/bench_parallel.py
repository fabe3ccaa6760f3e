"""Parallel benchmark: scans on local ipyparallel engines, side by side with their floors.

Five measurements, each case in its own child process (``python bench_parallel.py
--child KIND ...``), with 2 local engines (``local_executor(2)``; the engines' heartbeat
is 500 ms, as for every local cluster notebookscan starts):

1. **throughput** of a trivial function (``fn(i, seed) -> 2.0 * i``) for N = 1 000,
   10 000, 100 000 points:

   - ``notebookscan``: ``ns.Scan(fn, ns.grid(i=range(N)), store=...).run(progress=False)``
     on the engines, results persisted to the store (the clock starts before ``Scan()``);
   - ``notebookscan_serial``: the same with ``executor="serial"`` (all in one process);
   - ``ipp_map``: ``lv.map_sync(fn, range(N), chunksize=c)`` on a load-balanced view of the
     same engines, results kept in memory, for a few chunk sizes ``c`` (best reported);
   - ``loop``: ``[fn(i, i) for i in range(N)]`` in one process, no persistence.

   Each case starts its cluster and warms it up (the engines import what the case needs)
   before any clock starts, then repeats the timed run ``REPEATS`` times; the best and
   the median are kept. The engine cases also record the CPU time of the client's
   threads (the scan loop, ipyparallel's IO thread), of the engines and of the controller.
2. **client memory**: the peak resident set size of the client process alone
   (``getrusage(RUSAGE_SELF).ru_maxrss`` read in the child, so the engines, which are
   its child processes, are not counted), and the engines' and the controller's own
   peaks (``VmHWM`` from ``/proc/<pid>/status``).
3. **pypet workloads** (``workloads.py``): per-run float N = 1 000, 10 000 and array
   (1000 x 125 float64) N = 100, 1 000 with 2 engines and with ``executor="serial"``.
4. **cold start**: in a fresh process, the time from ``scan.run()`` (which starts the
   local cluster) to the first ``point_done`` and the first ``flushed`` event, ``COLD_REPEATS``
   times.
5. **breakdown**: one instrumented notebookscan run of the trivial function at the largest
   N: inclusive wall time of the scan's stages, plus the cost of shipping a chunk's
   points and results (serialise, deserialise).
6. **memory**: one scan of the trivial function per fresh process for N in
   ``MEMORY_SIZES`` (up to a million points): the client's RSS before it and its peak.

    python benchmarks/bench_parallel.py            # full run -> results/parallel.json
    python benchmarks/bench_parallel.py --quick    # smoke run -> _work/results-quick/
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "parallel"
ENGINES = 2
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
REPEATS = 3
QUICK_REPEATS = 2
# chunk sizes tried for the raw map: ceil(N / d) for each divisor d
CHUNK_DIVISORS = (2, 4, 8, 32, 128)
WORKLOAD_CASES = (("per_run_float", 1_000), ("per_run_float", 10_000), ("array", 100),
                  ("array", 1_000))
QUICK_WORKLOAD_CASES = (("per_run_float", 1_000), ("array", 100))
COLD_REPEATS = 5
# function-cost sweep: per-point cost [µs] of a busy function; N such that a run holds
# COST_WORK seconds of function time (at least 1 000 points)
COSTS_US = (10, 100, 1_000)
QUICK_COSTS_US = (100, 1_000)
COST_WORK = 2.0
# cold start: points of COLD_SLEEP seconds each, enough work for the first shard to be
# written by the flush interval, not by the end of the run
COLD_POINTS = 400
COLD_SLEEP = 0.01
WARMUP_POINTS = 100
# client memory: one scan per fresh process
MEMORY_SIZES = (10_000, 100_000, 1_000_000)
QUICK_MEMORY_SIZES = (1_000, 10_000)
METHODS = ("notebookscan", "notebookscan_serial", "ipp_map", "loop")
TARGETS = {"ratio": 0.5, "overhead_us": 5.0, "memory_growth": 0.10, "cold_start_s": 3.0}
WORK = os.path.join(HERE, "_work", NAME)
MARKER = "NOTEBOOKSCAN_BENCH_PARALLEL"
CASE_TIMEOUT = 1800.0


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def double(i, seed=0):
    """The trivial function: one multiplication (a float, as the storage workloads)."""
    return 2.0 * i


def busy(i, seed=0, cost=0.0):
    """A point that keeps a core busy for ``cost`` seconds (function-cost sweep)."""
    from time import perf_counter  # an ipyparallel map does not ship module globals

    end = perf_counter() + cost
    while perf_counter() < end:
        pass
    return 2.0 * i


def nap(i, seed=0):
    """Cold-start function: a short sleep, so the run lasts a few seconds."""
    time.sleep(COLD_SLEEP)
    return float(i)


def _ns():
    return bs._import_notebookscan()


def _self_peak_rss():
    """Peak RSS of this process alone (``ru_maxrss`` of RUSAGE_SELF; kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class Cluster:
    """The local engines of a case: notebookscan's shared local cluster (2 engines)."""

    def __init__(self):
        from notebookscan.executors import local_cluster as nsipp

        self._mod = nsipp
        t0 = time.perf_counter()
        self.executor = nsipp.local_executor(ENGINES, quiet=True)
        self.start_seconds = time.perf_counter() - t0
        self.client = self.executor.client

    def processes(self):
        """{role: [psutil.Process]} of the controller and the engines (no nannies)."""
        import psutil

        out = {"controller": [], "engine": []}
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(proc.cmdline())
                if "ipyparallel.controller" in cmd:
                    out["controller"].append(proc)
                elif "ipyparallel.engine" in cmd and "nanny" not in cmd:
                    out["engine"].append(proc)
        return out

    def cpu_seconds(self):
        import psutil

        out = {}
        for role, procs in self.processes().items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
            out[role] = total
        return out

    def memory(self):
        """Peak (VmHWM) and current (VmRSS) RSS of the controller and of each engine."""
        out = {}
        for role, procs in self.processes().items():
            out[role] = [{"peak_rss": _proc_status(p.pid, "VmHWM"),
                          "rss": _proc_status(p.pid, "VmRSS")} for p in procs]
        return out

    def io_thread_id(self):
        thread = getattr(self.client, "_io_thread", None)
        return getattr(thread, "native_id", None)

    def stop(self):
        self._mod.shutdown_local_executor()


def _thread_cpu(io_tid):
    """CPU seconds of this process's threads: the main thread, ipyparallel's IO thread,
    and all others."""
    import psutil

    main_tid = threading.main_thread().native_id
    out = {"main": 0.0, "ipyparallel_io": 0.0, "other": 0.0}
    for th in psutil.Process().threads():
        cpu = th.user_time + th.system_time
        if th.id == main_tid:
            out["main"] += cpu
        elif th.id == io_tid:
            out["ipyparallel_io"] += cpu
        else:
            out["other"] += cpu
    return out


def _delta(after, before):
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _summary(times):
    return {"best_seconds": min(times), "median_seconds": statistics.median(times),
            "seconds": times}


def _scan_once(ns, fn, n, store, executor):
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    run = ns.Scan(fn, ns.grid(i=range(n)), store=store).run(executor=executor, progress=False)
    seconds = time.perf_counter() - t0
    progress = run.progress
    if progress.done != n or progress.failed:
        raise AssertionError(f"{progress.done} done, {progress.failed} failed of {n}")
    return seconds, progress.shards


def child_notebookscan(n, repeats, workdir, serial=False):
    ns = _ns()
    cluster = None if serial else Cluster()
    executor = "serial" if serial else None
    _scan_once(ns, double, WARMUP_POINTS, os.path.join(workdir, "warmup"), executor)
    out = {"rss_before_runs": wl.rss_bytes(), "peak_rss_before_runs": _self_peak_rss()}
    if cluster:
        out["cluster_start_seconds"] = cluster.start_seconds
    times, shards, threads, remote = [], [], [], []
    for rep in range(repeats):
        store = os.path.join(workdir, f"store-{rep}")
        io_tid = cluster.io_thread_id() if cluster else None
        cpu0 = _thread_cpu(io_tid)
        remote0 = cluster.cpu_seconds() if cluster else {}
        seconds, n_shards = _scan_once(ns, double, n, store, executor)
        threads.append(_delta(_thread_cpu(io_tid), cpu0))
        if cluster:
            remote.append(_delta(cluster.cpu_seconds(), remote0))
        times.append(seconds)
        shards.append(n_shards)
        shutil.rmtree(store, ignore_errors=True)
    out.update(_summary(times))
    out["shards"] = shards
    out["client_thread_cpu_seconds"] = threads
    if cluster:
        out["remote_cpu_seconds"] = remote
        out["remote_memory"] = cluster.memory()
        cluster.stop()
    out["peak_rss"] = _self_peak_rss()
    return out


def chunk_sizes(n):
    return sorted({-(-n // d) for d in CHUNK_DIVISORS})


def child_ipp_map(n, repeats, workdir):
    cluster = Cluster()
    lv = cluster.client.load_balanced_view()
    lv.map_sync(double, range(WARMUP_POINTS), chunksize=WARMUP_POINTS // 2)
    out = {"cluster_start_seconds": cluster.start_seconds, "by_chunksize": {}}
    for c in chunk_sizes(n):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            values = lv.map_sync(double, range(n), chunksize=c)
            times.append(time.perf_counter() - t0)
            if len(values) != n or values[-1] != 2.0 * (n - 1):
                raise AssertionError("raw map returned wrong values")
            del values
        out["by_chunksize"][str(c)] = _summary(times)
    best = min(out["by_chunksize"], key=lambda c: out["by_chunksize"][c]["best_seconds"])
    out.update(out["by_chunksize"][best])
    out["chunksize"] = int(best)
    out["remote_memory"] = cluster.memory()
    cluster.stop()
    out["peak_rss"] = _self_peak_rss()
    return out


def child_loop(n, repeats, workdir):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        values = [double(i, i) for i in range(n)]
        times.append(time.perf_counter() - t0)
        del values
    out = _summary(times)
    out["peak_rss"] = _self_peak_rss()
    return out


def child_workload(workload, n, mode, workdir):
    """A pypet workload with 2 engines or serially, after a warm-up of the same function."""
    ns = _ns()
    executor = "serial"
    cluster = None
    if mode == "engines":
        cluster = Cluster()
        executor = None
    fn = wl.function_for(workload)
    _scan_once(ns, fn, 10, os.path.join(workdir, "warmup"), executor)
    io_tid = cluster.io_thread_id() if cluster else None
    cpu0 = _thread_cpu(io_tid)
    remote0 = cluster.cpu_seconds() if cluster else {}
    seconds, shards = _scan_once(ns, fn, n, os.path.join(workdir, "store"), executor)
    out = {"wall_seconds": seconds, "shards": shards,
           "client_thread_cpu_seconds": _delta(_thread_cpu(io_tid), cpu0),
           "fn_standalone_seconds": wl.standalone_function_time(workload, n)}
    if cluster:
        out["remote_cpu_seconds"] = _delta(cluster.cpu_seconds(), remote0)
        out["cluster_start_seconds"] = cluster.start_seconds
        cluster.stop()
    out["peak_rss"] = _self_peak_rss()
    return out


def child_coldstart(workdir):
    """Fresh process: time from run() (starting the cluster) to the first results."""
    t_import = time.perf_counter()
    ns = _ns()
    import_seconds = time.perf_counter() - t_import
    scan = ns.Scan(nap, ns.grid(i=range(COLD_POINTS)), store=os.path.join(workdir, "store"))
    seen = {}
    t0 = 0.0

    def first(name):
        def callback(**_):
            seen.setdefault(name, time.perf_counter() - t0)
        return callback

    for name in ("started", "point_done", "flushed"):
        scan.events.on(name, first(name))
    t0 = time.perf_counter()
    run = scan.run(progress=False)
    total = time.perf_counter() - t0
    from notebookscan.executors import local_cluster as nsipp

    local = getattr(nsipp, "_local", None)
    out = {"import_seconds": import_seconds, "run_seconds": total,
           "loop_started_seconds": seen.get("started"),
           "first_point_done_seconds": seen.get("point_done"),
           "first_flushed_seconds": seen.get("flushed"),
           "cluster_start_seconds": getattr(local, "started_in", None),
           "done": run.progress.done}
    nsipp.shutdown_local_executor()
    return out


def child_cost(costs_us, repeats, workdir):
    """notebookscan on the engines vs the best raw map, for functions of a given cost:
    N is chosen so that each run holds ~COST_WORK seconds of function time."""
    import functools

    ns = _ns()
    cluster = Cluster()
    lv = cluster.client.load_balanced_view()
    _scan_once(ns, double, WARMUP_POINTS, os.path.join(workdir, "warmup"), None)
    lv.map_sync(double, range(WARMUP_POINTS), chunksize=WARMUP_POINTS // 2)
    rows = []
    for cost_us in costs_us:
        fn = functools.partial(busy, cost=cost_us * 1e-6)
        n = max(1_000, int(COST_WORK / (cost_us * 1e-6)))
        ns_times = []
        for _ in range(repeats):
            seconds, _ = _scan_once(ns, fn, n, os.path.join(workdir, "store"), None)
            ns_times.append(seconds)
        by_chunk = {}
        for c in (-(-n // 2), -(-n // 8), -(-n // 32)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                lv.map_sync(fn, range(n), chunksize=c)
                times.append(time.perf_counter() - t0)
            by_chunk[str(c)] = min(times)
        best = min(by_chunk, key=by_chunk.get)
        rows.append({"cost_us": cost_us, "n": n, "notebookscan": _summary(ns_times),
                     "ipp_map_by_chunksize": by_chunk, "ipp_map_chunksize": int(best),
                     "ipp_map_best_seconds": by_chunk[best],
                     "serial_function_seconds": n * cost_us * 1e-6})
    cluster.stop()
    return {"rows": rows}


# breakdown ----------------------------------------------------------------------------


def _instrument():
    """Wrap the scan's stages with wall-clock timers (inclusive times, main thread)."""
    import notebookscan.run.batch as batch_mod
    import notebookscan.run.loop as loop_mod
    import notebookscan.run.points as sources_mod
    import notebookscan.scan as scan_mod
    import notebookscan.space as space_mod
    import notebookscan.store as store_mod

    totals = collections.Counter()
    calls = collections.Counter()

    def wrap(owner, attr, label):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - t0
                calls[label] += 1

        setattr(owner, attr, timed)

    wrap(scan_mod.Scan, "__init__", "Scan(): check the space, open the store")
    wrap(scan_mod.Scan, "_pending", "skip-done check: point keys + store index")
    wrap(space_mod.Space, "_build_keys", "  point keys (hashing)")
    wrap(space_mod.Space, "seed_array", "point seeds")
    wrap(scan_mod, "collect", "provenance record")
    wrap(loop_mod.RunLoop, "_submit", "submit chunks (columns, pickling, send)")
    wrap(loop_mod, "wait", "waiting for results (idle main thread)")
    wrap(loop_mod.RunLoop, "_collect", "collect results (incl. the next)")
    wrap(sources_mod.PointSource, "receive", "  result checks and events")
    wrap(loop_mod.RunLoop, "_flush", "flush (incl. the next two)")
    wrap(batch_mod.Batch, "to_shard", "  chunks -> shard columns")
    wrap(store_mod.Store, "write", "  shard write (NetCDF + fsync; also inside compaction)")
    wrap(sources_mod.PointSource, "_drop_done_elsewhere", "drop points stored by others")
    wrap(store_mod.Store, "compact", "compaction at the end")
    return totals, calls


def _transport(n_points):
    """Serialise/deserialise one chunk as ipyparallel does: the points going out (one
    numpy column per parameter) and the results coming back (a ``ChunkResult``)."""
    import numpy as np
    from ipyparallel.serialize import deserialize_object, serialize_object

    from notebookscan.run.worker import PointColumns, run_chunk

    points = PointColumns({"i": np.arange(n_points)})
    seeds = np.arange(n_points, dtype=np.uint32)
    t0 = time.perf_counter()
    results = run_chunk(double, points, seeds, True)
    run_chunk_s = time.perf_counter() - t0
    out = {"points": n_points, "run_chunk_seconds": run_chunk_s}
    for label, obj in (("points", (points, seeds)), ("results", results)):
        t0 = time.perf_counter()
        bufs = serialize_object(obj)
        out[f"{label}_serialize_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        deserialize_object(bufs)
        out[f"{label}_deserialize_seconds"] = time.perf_counter() - t0
        out[f"{label}_bytes"] = sum(len(memoryview(b)) for b in bufs)
    return out


def _memory_breakdown(ns, n, workdir):
    """Python-level allocations (tracemalloc) of one more run: the space's per-point data,
    the scan loop's peak above it, and the end-of-run compaction's peak above that."""
    import tracemalloc

    import notebookscan.store as store_mod

    marks = {}
    compact = store_mod.Store.compact

    def traced_compact(self, *args, **kwargs):
        current, peak = tracemalloc.get_traced_memory()
        marks["loop_peak"], marks["before_compaction"] = peak, current
        tracemalloc.reset_peak()
        try:
            return compact(self, *args, **kwargs)
        finally:
            marks["compaction_peak"] = tracemalloc.get_traced_memory()[1]

    store_mod.Store.compact = traced_compact
    try:
        tracemalloc.start()
        space = ns.grid(i=range(n))
        space.columns(), space.keys(), space.seeds()
        marks["space"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ns.Scan(double, space, store=os.path.join(workdir, "store-traced")).run(progress=False)
        if "loop_peak" not in marks:
            marks["loop_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store_mod.Store.compact = compact
    out = {"space_bytes": marks["space"],
           "loop_peak_above_space_bytes": marks["loop_peak"] - marks["space"]}
    if "compaction_peak" in marks:
        out["compaction_peak_above_loop_end_bytes"] = (marks["compaction_peak"]
                                                      - marks["before_compaction"])
    return out


def child_breakdown(n, workdir):
    ns = _ns()
    cluster = Cluster()
    _scan_once(ns, double, WARMUP_POINTS, os.path.join(workdir, "warmup"), None)
    totals, calls = _instrument()
    io_tid = cluster.io_thread_id()
    cpu0 = _thread_cpu(io_tid)
    remote0 = cluster.cpu_seconds()
    seconds, shards = _scan_once(ns, double, n, os.path.join(workdir, "store"), None)
    out = {"n": n, "wall_seconds": seconds, "shards": shards,
           "client_thread_cpu_seconds": _delta(_thread_cpu(io_tid), cpu0),
           "remote_cpu_seconds": _delta(cluster.cpu_seconds(), remote0),
           "stages": [{"stage": k, "seconds": v, "calls": calls[k]}
                      for k, v in totals.items()]}
    out["traced_memory"] = _memory_breakdown(ns, n, workdir)
    cluster.stop()
    out["transport"] = _transport(-(-n // (2 * ENGINES)))
    return out


def child_memory(n, workdir):
    """One scan of N points in a process of its own: the client's RSS before it and its
    peak, with no earlier run's freed memory in the way."""
    ns = _ns()
    cluster = Cluster()
    _scan_once(ns, double, WARMUP_POINTS, os.path.join(workdir, "warmup"), None)
    before = {"rss": wl.rss_bytes(), "peak_rss": _self_peak_rss()}
    seconds, shards = _scan_once(ns, double, n, os.path.join(workdir, "store"), None)
    out = {"n": n, "seconds": seconds, "shards": shards, "rss_before": before["rss"],
           "peak_rss_before": before["peak_rss"], "peak_rss": _self_peak_rss(),
           "rss_after": wl.rss_bytes()}
    cluster.stop()
    return out


def child_main(kind, args, workdir):
    import numpy  # noqa: F401

    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    # the engines import workloads.py (pypet workloads) like any user module on the path
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    os.environ[MARKER] = "1"  # inherited by the controller and engines (see _leftovers)
    out = {"kind": kind, "rss_at_start": wl.rss_bytes()}
    if kind == "throughput":
        method, n, repeats = args[0], int(args[1]), int(args[2])
        out.update({"method": method, "n": n})
        if method == "notebookscan":
            out.update(child_notebookscan(n, repeats, workdir))
        elif method == "notebookscan_serial":
            out.update(child_notebookscan(n, repeats, workdir, serial=True))
        elif method == "ipp_map":
            out.update(child_ipp_map(n, repeats, workdir))
        else:
            out.update(child_loop(n, repeats, workdir))
    elif kind == "workload":
        workload, n, mode = args[0], int(args[1]), args[2]
        out.update({"workload": workload, "n": n, "mode": mode})
        out.update(child_workload(workload, n, mode, workdir))
    elif kind == "coldstart":
        out.update(child_coldstart(workdir))
    elif kind == "cost":
        out.update(child_cost([float(c) for c in args[0].split(",")], int(args[1]), workdir))
    elif kind == "breakdown":
        out.update(child_breakdown(int(args[0]), workdir))
    elif kind == "memory":
        out.update(child_memory(int(args[0]), workdir))
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    wl.emit(out)


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def run_case(label, kind, *args, logdir):
    workdir = os.path.join(WORK, label)
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, workdir, *map(str, args)]
    result, tree_peak, seconds, error = bs.run_child(
        cmd, timeout=CASE_TIMEOUT, log=os.path.join(logdir, f"{label}.log"))
    shutil.rmtree(workdir, ignore_errors=True)
    if error:
        return {"label": label, "error": error, "process_seconds": seconds}
    result["label"] = label
    result["process_seconds"] = seconds
    # wait4's ru_maxrss: the largest of the child and the descendants it reaped
    result["process_tree_peak_rss"] = tree_peak
    return result


def _say(msg):
    print(f"[{NAME}] {msg}", flush=True)


def _leftovers():
    """Controllers and engines started by this benchmark that still run (should be none)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "ipyparallel" not in cmd:
            continue
        with contextlib.suppress(psutil.Error):
            if MARKER in proc.environ():
                found.append(proc.info["pid"])
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--parts",
                        default="throughput,memory,workloads,coldstart,cost,breakdown",
                        help="comma-separated parts to run")
    parser.add_argument("--sizes", default="", help="comma-separated N, overrides defaults")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, workdir, *rest = args.child
        child_main(kind, rest, workdir)
        return None

    out_path = args.out or default_out(args.quick)
    parts = {p for p in args.parts.split(",") if p}
    sizes = [int(s) for s in args.sizes.split(",") if s] or list(
        QUICK_SIZES if args.quick else SIZES)
    repeats = QUICK_REPEATS if args.quick else REPEATS
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    ok, msg = bs.notebookscan_available()
    if not ok:
        raise SystemExit(f"[{NAME}] {msg}")
    doc = {"benchmark": NAME, "quick": args.quick, "machine": bs.machine_info(),
           "engines": ENGINES, "sizes": sizes, "repeats": repeats,
           "load_average_start": list(os.getloadavg()), "versions": _versions(),
           "peak_rss_method": "client: getrusage(RUSAGE_SELF).ru_maxrss read in the child "
                              "(the client process alone); engines/controller: VmHWM from "
                              "/proc/<pid>/status",
           "function": "fn(i, seed) -> 2.0 * i",
           "cold_points": COLD_POINTS, "cold_sleep_ms": COLD_SLEEP * 1e3,
           "targets": TARGETS, "throughput": [], "workloads": [], "coldstart": [],
           "cost": None, "breakdown": None, "memory": [], "leftover_processes": []}
    t_start = time.perf_counter()

    if "throughput" in parts:
        for n in sizes:
            for method in METHODS:
                rec = run_case(f"{method}-{n}", "throughput", method, n, repeats,
                               logdir=logdir)
                doc["throughput"].append(rec)
                if "error" in rec:
                    _say(f"{method:20s} N={n:<7d} FAILED {rec['error']}")
                    continue
                extra = f" chunksize {rec['chunksize']}" if "chunksize" in rec else ""
                _say(f"{method:20s} N={n:<7d} best {rec['best_seconds']:8.4f}s "
                     f"{n / rec['best_seconds']:12.0f} pt/s  peak client RSS "
                     f"{rec['peak_rss'] / 2**20:6.0f} MiB{extra}")
    if "memory" in parts:
        for n in QUICK_MEMORY_SIZES if args.quick else MEMORY_SIZES:
            rec = run_case(f"memory-{n}", "memory", n, logdir=logdir)
            doc["memory"].append(rec)
            if "error" in rec:
                _say(f"memory N={n}: FAILED {rec['error']}")
            else:
                _say(f"memory N={n:<8d} client RSS {rec['rss_before'] / 2**20:.0f} MiB before, "
                     f"peak {rec['peak_rss'] / 2**20:.0f} MiB ({rec['seconds']:.2f} s)")
    if "workloads" in parts:
        cases = QUICK_WORKLOAD_CASES if args.quick else WORKLOAD_CASES
        for workload, n in cases:
            for mode in ("serial", "engines"):
                rec = run_case(f"{workload}-{n}-{mode}", "workload", workload, n, mode,
                               logdir=logdir)
                doc["workloads"].append(rec)
                if "error" in rec:
                    _say(f"{workload:14s} N={n:<6d} {mode:8s} FAILED {rec['error']}")
                else:
                    _say(f"{workload:14s} N={n:<6d} {mode:8s} {rec['wall_seconds']:8.3f}s")
    if "coldstart" in parts:
        for rep in range(2 if args.quick else COLD_REPEATS):
            rec = run_case(f"coldstart-{rep}", "coldstart", logdir=logdir)
            doc["coldstart"].append(rec)
            if "error" in rec:
                _say(f"cold start {rep}: FAILED {rec['error']}")
            else:
                _say(f"cold start {rep}: first point {rec['first_point_done_seconds']:.2f}s, "
                     f"first shard {rec['first_flushed_seconds']:.2f}s, cluster "
                     f"{rec['cluster_start_seconds']:.2f}s")
    if "cost" in parts:
        costs = QUICK_COSTS_US if args.quick else COSTS_US
        rec = run_case("cost", "cost", ",".join(map(str, costs)), repeats, logdir=logdir)
        doc["cost"] = rec
        if "error" in rec:
            _say(f"function-cost sweep FAILED {rec['error']}")
        else:
            for row in rec["rows"]:
                ratio = row["ipp_map_best_seconds"] / row["notebookscan"]["best_seconds"]
                _say(f"cost {row['cost_us']:>6g} µs N={row['n']:<7d} notebookscan "
                     f"{row['notebookscan']['best_seconds']:.3f}s, raw map "
                     f"{row['ipp_map_best_seconds']:.3f}s (ratio {ratio:.2f})")
    if "breakdown" in parts:
        rec = run_case("breakdown", "breakdown", max(sizes), logdir=logdir)
        doc["breakdown"] = rec
        if "error" in rec:
            _say(f"breakdown FAILED {rec['error']}")
        else:
            _say(f"breakdown N={rec['n']}: {rec['wall_seconds']:.3f}s")

    doc["leftover_processes"] = _leftovers()
    doc["load_average_end"] = list(os.getloadavg())
    doc["total_seconds"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
    _say(f"wrote {os.path.relpath(out_path)}")
    return out_path


def default_out(quick):
    if quick:
        return os.path.join(HERE, "_work", "results-quick", f"{NAME}.json")
    return os.path.join(HERE, "results", f"{NAME}.json")


def _versions():
    import importlib.metadata as md

    out = {}
    for name in ("notebookscan", "ipyparallel", "pyzmq", "cloudpickle", "netCDF4", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
