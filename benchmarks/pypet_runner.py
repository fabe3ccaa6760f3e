"""The storage workloads with pypet; run inside benchmarks/.venv-pypet (numpy < 2).

    benchmarks/.venv-pypet/bin/python benchmarks/pypet_runner.py WORKLOAD N PHASE WORKDIR [NCORES]

PHASE is ``run``, ``load_all`` or ``load_each``; ``load_*`` read the file that ``run``
wrote into WORKDIR. The result is printed as one JSON line (see workloads.emit).

pypet idioms used:

- with NCORES > 1 (bench_peers.py): ``multiproc=True, ncores=NCORES, use_pool=True``,
  pypet's own multiprocessing with its default ``wrap_mode`` (workers store under a lock);
- otherwise an ``Environment`` (single process, pypet's default HDF5 storage service and its
  default compression) with logging and progress reports off; a trajectory with one
  parameter ``i`` explored over ``range(N)`` with ``f_explore``;
- ``end``: the run function *returns* its float; a post-processing function (called by
  the environment with the list of all returned values) adds them as one result
  ``summary.x``, stored with the trajectory at the end;
- ``per_run_float`` and ``array``: the run function calls ``traj.f_add_result('x', ...)``;
  the environment stores each run's results right after the run;
- load all: ``Trajectory.f_load(load_parameters=2, load_results=2)``, then the values
  are collected with ``f_get_from_runs('x', fast_access=True)``;
- load one by one: ``f_load(load_results=1)`` (the tree skeleton, no data), then
  ``traj.f_load_item(result)`` for each run's ``x``.
"""

from __future__ import annotations

import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

T_IMPORT = time.perf_counter()
import numpy as np  # noqa: E402
import pypet  # noqa: E402
import tables  # noqa: E402
import workloads as wl  # noqa: E402
from pypet import Environment, Trajectory  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T_IMPORT
TRAJ = "bench"


def versions():
    return {"pypet": pypet.__version__, "numpy": np.__version__, "tables": tables.__version__,
            "hdf5": tables.hdf5_version, "python": sys.version.split()[0]}


# The run functions live at module level so that pypet's pool can pickle them (by
# reference); the timed function they call is set before the run and inherited by the
# forked workers.
FN = None


def run_end(traj):
    return FN(traj.i, traj.i)


def run_per_run_float(traj):
    traj.f_add_result("x", FN(traj.i, traj.i), comment="random float")


def run_array(traj):
    traj.f_add_result("x", FN(traj.i, traj.i)["x"], comment="random array")


def postproc_end(traj, result_list):
    values = np.empty(len(result_list))
    for idx, value in result_list:
        values[idx] = value
    traj.f_add_result("summary.x", values, comment="one float per run")


def do_run(workload, n, path, ncores=1):
    global FN
    timer = wl.FunctionTimer()
    FN = timer.wrap(wl.function_for(workload))
    run_fn = globals()[f"run_{workload}"]

    t0 = time.perf_counter()
    env = Environment(trajectory=TRAJ, filename=path, overwrite_file=True, add_time=False,
                      log_config=None, report_progress=False, **_multiproc(ncores))
    traj = env.trajectory
    traj.f_add_parameter("i", 0, comment="point index")
    traj.f_explore({"i": list(range(n))})
    if workload == "end":
        env.add_postprocessing(postproc_end)
    env.run(run_fn)
    env.disable_logging()
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "fn_seconds": timer.total, "fn_calls": timer.calls}


def _multiproc(ncores):
    if ncores <= 1:
        return {"multiproc": False}
    return {"multiproc": True, "ncores": ncores, "use_pool": True}


def load_trajectory(path, load_results):
    traj = Trajectory(TRAJ, add_time=False, filename=path)
    traj.f_load(load_parameters=2, load_derived_parameters=2, load_results=load_results,
                load_other_data=2)
    return traj


def do_load_all(workload, n, path):
    t0 = time.perf_counter()
    traj = load_trajectory(path, load_results=2)
    t_open = time.perf_counter() - t0
    if workload == "end":
        values = np.asarray(traj.f_get("results.summary.x").f_get())
    else:
        by_run = traj.f_get_from_runs("x", fast_access=True, use_indices=True)
        values = np.stack([by_run[i] for i in range(n)])
    seconds = time.perf_counter() - t0
    wl.check_values(workload, values, n)
    return {"load_all_seconds": seconds, "open_seconds": t_open}


def do_load_each(workload, n, path):
    t0 = time.perf_counter()
    traj = load_trajectory(path, load_results=1)
    t_open = time.perf_counter() - t0
    values = []
    if workload == "end":
        item = traj.f_get("results.summary.x")
        traj.f_load_item(item)
        column = item.f_get()
        values = [column[i] for i in range(n)]
    else:
        for i in range(n):
            item = traj.f_get(f"results.runs.{traj.f_idx_to_run(i)}.x")
            traj.f_load_item(item)
            values.append(item.f_get())
    seconds = time.perf_counter() - t0
    wl.check_values(workload, np.asarray(values), n)
    return {"load_each_seconds": seconds, "open_seconds": t_open}


def main(argv):
    workload, n, phase, workdir = argv[0], int(argv[1]), argv[2], argv[3]
    ncores = int(argv[4]) if len(argv) > 4 else 1
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    path = os.path.join(workdir, "pypet.hdf5")
    out = {"tool": "pypet", "workload": workload, "n": n, "phase": phase,
           "import_seconds": IMPORT_SECONDS, "rss_after_import": wl.rss_bytes(),
           "versions": versions()}
    if phase == "run":
        out.update(do_run(workload, n, path, ncores))
        out["self_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["fn_standalone_seconds"] = wl.standalone_function_time(workload, n)
        out["store_bytes"], out["store_allocated_bytes"], out["store_files"] = wl.tree_size(path)
    elif phase == "load_all":
        out.update(wl.first_and_steady(do_load_all, workload, n, path))
    elif phase == "load_each":
        load_trajectory(path, load_results=1)  # untimed warm-up, as for the other tools
        out.update(do_load_each(workload, n, path))
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    wl.emit(out)


if __name__ == "__main__":
    main(sys.argv[1:])
