"""Durability benchmark: what the journal costs (each received chunk fsynced before it
counts), the same scans run by this code and by an earlier commit without a journal.

Cases (each in its own child process, ``REPEATS`` runs, best and median reported):

- ``trivial``: ``double`` (one multiplication), N = 10 000 — the overhead per point;
- ``per_run_float``: one random float per point, N = 10 000 (workloads.py);
- ``array``: one 1 MB array per point, N = 100 (workloads.py);

each with ``executor="serial"`` and with 2 local ipyparallel engines. The child reports
the wall time of ``Scan(...).run()``, the time spent inside the function (serial only:
the engines' is not seen by the client), the number of shards and, for the journal,
how many records and fsyncs the run made (counted by wrapping ``Journal.sync``).

    python benchmarks/bench_durability.py                  # -> results/durability.json
    python benchmarks/bench_durability.py --quick          # smaller N, one repeat
    python benchmarks/bench_durability.py --before <ref>   # the commit to compare with

The earlier code is taken with ``git archive <ref>`` into ``_work/durability/before``
and imported through ``PYTHONPATH`` (the engines inherit it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_parallel as bp  # noqa: E402
import bench_storage as bs  # noqa: E402
import workloads as wl  # noqa: E402

NAME = "durability"
BEFORE = "1d5ab98"  # the last commit before the journal
CASES = (("trivial", 10_000), ("per_run_float", 10_000), ("array", 100))
QUICK_CASES = (("trivial", 2_000), ("per_run_float", 2_000), ("array", 20))
MODES = ("serial", "engines")
REPEATS = 5
WORK = os.path.join(HERE, "_work", NAME)
CASE_TIMEOUT = 1800.0


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _function(workload):
    return bp.double if workload == "trivial" else wl.function_for(workload)


def _count_syncs(ns):
    """Count journal fsyncs (a no-op on code without a journal)."""
    counter = {"syncs": 0}
    try:
        from notebookscan.store import journal
    except ImportError:
        return counter
    original = journal.Journal.sync

    def sync(self):
        if self._dirty:
            counter["syncs"] += 1
        original(self)

    journal.Journal.sync = sync
    return counter


def child(workload, n, mode, repeats, workdir):
    os.chdir(workdir)
    # the engines import bench_parallel / workloads (the functions) like any user module
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    os.environ[bp.MARKER] = "1"
    ns = bs._import_notebookscan()
    cluster = bp.Cluster() if mode == "engines" else None
    executor = None if cluster else "serial"
    counter = _count_syncs(ns)
    fn = _function(workload)
    bp._scan_once(ns, fn, 10, os.path.join(workdir, "warmup"), executor)
    times, fn_times, shards, syncs = [], [], [], []
    for rep in range(repeats):
        timer = wl.FunctionTimer()
        timed = timer.wrap(fn) if executor == "serial" else fn
        counter["syncs"] = 0
        seconds, n_shards = bp._scan_once(ns, timed, n, os.path.join(workdir, f"s{rep}"),
                                          executor)
        times.append(seconds)
        fn_times.append(timer.total)
        shards.append(n_shards)
        syncs.append(counter["syncs"])
        shutil.rmtree(os.path.join(workdir, f"s{rep}"), ignore_errors=True)
    if cluster:
        cluster.stop()
    best = min(range(repeats), key=times.__getitem__)
    return {"best_seconds": times[best], "median_seconds": statistics.median(times),
            "seconds": times, "function_seconds": fn_times, "shards": shards,
            "journal_syncs": syncs, "wall_us_per_point": times[best] / n * 1e6,
            # serial: what the scan adds to the function, per point
            "overhead_us_per_point": (times[best] - fn_times[best]) / n * 1e6
            if executor == "serial" else None,
            "code": ns.__file__}


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def before_code(ref):
    """A copy of the package at ``ref`` (git archive), for PYTHONPATH."""
    target = os.path.join(WORK, "before")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "notebookscan"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return target


def run_case(code, workload, n, mode, repeats):
    workdir = os.path.join(WORK, f"{os.path.basename(code)}-{workload}-{n}-{mode}")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    env = {**os.environ, "PYTHONPATH": code, "NOTEBOOKSCAN_WORKERS": str(bp.ENGINES)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", workload, str(n), mode, str(repeats), workdir],
        env=env, capture_output=True, text=True, timeout=CASE_TIMEOUT)
    for line in proc.stdout.splitlines():
        if line.startswith(wl.RESULT_MARK):
            return json.loads(line[len(wl.RESULT_MARK):])
    raise RuntimeError(f"case {workload} {n} {mode} failed:\n{proc.stderr[-3000:]}")


def render(doc, figdir, md_dir):
    """The section of RESULTS.md (``report.SECTIONS["durability"]``)."""
    import report

    rows = []
    for r in doc["results"]:
        before, after = r["before"], r["after"]
        rows.append([r["workload"], f"{r['n']:,}", r["mode"],
                     report.fmt_s(before["best_seconds"]), report.fmt_s(after["best_seconds"]),
                     f"{(after['best_seconds'] - before['best_seconds']) / r['n'] * 1e6:+.1f}",
                     f"{r['cost'] * 100:+.0f} %", str(max(after["journal_syncs"]))])
    return "\n".join([
        "## Durability: the cost of the journal", "",
        f"The same scans by this code and by `{doc['before']}` (no journal: received points "
        "were written every 2 s, and a killed client recomputed everything since). Best "
        f"of {doc['repeats']} runs; fsyncs of the journal per run in the last column.", "",
        report.md_table(["workload", "N", "executor", "before [s]", "after [s]",
                         "added µs/point", "cost", "journal fsyncs"], rows, left=3), ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", default=BEFORE, help="commit without the journal")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", nargs=5, metavar=("WORKLOAD", "N", "MODE", "REPEATS", "DIR"))
    args = parser.parse_args(argv)
    if args.child:
        workload, n, mode, repeats, workdir = args.child
        wl.emit(child(workload, int(n), mode, int(repeats), workdir))
        return None
    cases = QUICK_CASES if args.quick else CASES
    repeats = 1 if args.quick else REPEATS
    codes = {"before": before_code(args.before), "after": ROOT}
    results = []
    for workload, n in cases:
        for mode in args.modes.split(","):
            row = {"workload": workload, "n": n, "mode": mode}
            for label, code in codes.items():
                started = time.monotonic()
                row[label] = run_case(code, workload, n, mode, repeats)
                print(f"{workload:>14} N={n:<6} {mode:<8} {label:<6} "
                      f"best {row[label]['best_seconds']:.3f} s  "
                      f"wall {row[label]['wall_us_per_point']:.1f} µs/pt  "
                      f"syncs {row[label]['journal_syncs']}  "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
            row["cost"] = row["after"]["best_seconds"] / row["before"]["best_seconds"] - 1
            results.append(row)
    out_dir = os.path.join(WORK, "results-quick") if args.quick else os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{NAME}.json")
    doc = {"benchmark": NAME, "when": _dt.datetime.now().isoformat(timespec="seconds"),
           "machine": bs.machine_info(), "before": args.before, "repeats": repeats,
           "results": results}
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2)
    return path


if __name__ == "__main__":
    main()
