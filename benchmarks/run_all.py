"""Run every benchmark and rewrite benchmarks/RESULTS.md (``make bench``).

    python benchmarks/run_all.py             # full runs -> results/*.json, RESULTS.md, figures/
    python benchmarks/run_all.py --quick     # smoke run -> _work/ (committed results untouched)
    python benchmarks/run_all.py --only storage
    python benchmarks/run_all.py --report-only

A benchmark is a module in this folder with ``NAME`` and ``main(argv) -> results path``
(it writes ``results/<NAME>.json``, or ``_work/results-quick/<NAME>.json`` with
``--quick``) and a renderer registered in ``report.SECTIONS``. Add new ones (parallel
throughput on ipyparallel engines, memory of segmented runs, ...) to ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402

# module names, in the order they run and appear in RESULTS.md
BENCHMARKS = ["bench_storage", "bench_peers", "bench_bigresults", "bench_parallel",
              "bench_scale", "bench_segments", "bench_durability", "bench_widgets",
              "bench_memory", "bench_adaptive"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke runs")
    parser.add_argument("--only", default="", help="comma-separated benchmark NAMEs")
    parser.add_argument("--report-only", action="store_true",
                        help="only regenerate RESULTS.md and figures from existing results")
    args = parser.parse_args(argv)

    modules = [importlib.import_module(m) for m in BENCHMARKS]
    only = {s for s in args.only.split(",") if s}
    names = [m.NAME for m in modules]
    if not args.report_only:
        for mod in modules:
            if only and mod.NAME not in only:
                continue
            t0 = time.perf_counter()
            print(f"== {mod.NAME} ==", flush=True)
            mod.main(["--quick"] if args.quick else [])
            print(f"== {mod.NAME}: {time.perf_counter() - t0:.0f} s ==", flush=True)

    if args.quick:
        work = os.path.join(HERE, "_work")
        out = report.write_report(os.path.join(work, "results-quick"),
                                  os.path.join(work, "RESULTS-quick.md"),
                                  os.path.join(work, "figures-quick"), names)
    else:
        out = report.write_report(names=names)
    print(f"wrote {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
