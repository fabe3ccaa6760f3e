"""Turn the benchmarks' raw results (JSON) into benchmarks/RESULTS.md and PNG figures.

    python benchmarks/report.py                       # results/*.json -> RESULTS.md, figures/
    python benchmarks/report.py --results DIR --out FILE --figures DIR

Each benchmark module writes ``<results dir>/<name>.json`` with a ``benchmark`` field;
``SECTIONS`` maps that name to the function that renders its part of the report.
A benchmark added later registers its renderer there (in the order of ``run_all.BENCHMARKS``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads as wl  # noqa: E402

TOOL_ORDER = ("notebookscan", "psweep", "pypet", "floor")
TOOL_STYLE = {
    "notebookscan": {"color": "#d62728", "marker": "o"},
    "psweep": {"color": "#1f77b4", "marker": "s"},
    "pypet": {"color": "#2ca02c", "marker": "^"},
    "floor": {"color": "#7f7f7f", "marker": "v", "linestyle": "--"},
}
WORKLOAD_TITLE = {"end": "End: one float per run, stored at the end",
                  "per_run_float": "Per run: one float stored per run",
                  "array": "Array: one 1 MB array (1000×125 float64) stored per run"}
# pypet's own numbers for this kind of machine (pypet paper, Figure 5), for scale
PYPET_PAPER = {("per_run_float", 10_000): {"wall_seconds": 156.0, "load_all_seconds": 34.0},
               ("array", 1_000): {"wall_seconds": 74.0}}
TARGETS = {"overhead_us": 30.0, "load_all_s": 0.1, "store_fraction": 0.90}


# --------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------


def fmt_s(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.4f}"


def fmt_us(x):
    if x is None:
        return "–"
    us = x * 1e6
    return f"{us:.0f}" if abs(us) >= 100 else f"{us:.1f}"


def fmt_mb(b):
    if b is None:
        return "–"
    mb = b / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.3f}"


def fmt_mib(b):
    return "–" if b is None else f"{b / 2**20:.0f}"


def fmt_x(r):
    if r is None or not math.isfinite(r):
        return "–"
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def md_table(header, rows, left=1):
    """A Markdown table; the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ok(flag):
    return "**pass**" if flag else "**FAIL**"


# --------------------------------------------------------------------------------------
# common header
# --------------------------------------------------------------------------------------


def machine_section(docs):
    m = docs[0]["machine"]
    versions = {}
    for doc in docs:
        for rec in doc.get("results", []):
            for k, v in (rec.get("versions") or {}).items():
                tool = rec["tool"]
                versions.setdefault(tool, {})[k] = v
    rows = [["CPU", m.get("cpu")], ["cores", m.get("cores")],
            ["RAM", f"{m['ram_bytes'] / 2**30:.1f} GiB" if m.get("ram_bytes") else "?"],
            ["OS", m.get("os")], ["disk", m.get("disk") or "?"],
            ["Python", m.get("python")], ["date", m.get("date")]]
    if m.get("openblas_env"):
        rows.append(["environment", ", ".join(f"{k}={v}" for k, v in m["openblas_env"].items())
                     + " (affect BLAS only; no workload here calls BLAS)"])
    out = ["## Machine", "", md_table(["", ""], rows, left=2), "", "Package versions, per tool "
           "(each tool runs in its own child processes; pypet in its own venv):", ""]
    vrows = []
    for tool in TOOL_ORDER:
        if tool in versions:
            vrows.append([tool, ", ".join(f"{k} {v}" for k, v in versions[tool].items()
                                          if v is not None)])
    out += [md_table(["tool", "versions"], vrows, left=2), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# storage benchmark
# --------------------------------------------------------------------------------------


def _index(doc):
    return {(r["tool"], r["workload"], r["n"]): r for r in doc["results"]}


def _get(idx, tool, workload, n, key):
    rec = idx.get((tool, workload, n))
    return None if rec is None else rec.get(key)


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def storage_figures(doc, figdir):
    """Figure-5-style plots: runtime, store size and load time against N, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(figdir, exist_ok=True)
    idx = _index(doc)
    tools = [t for t in TOOL_ORDER if any(r["tool"] == t for r in doc["results"])]
    paths = []
    panels = [("wall_seconds", "runtime [s]"), ("store_bytes", "store size [MB]"),
              ("load_all_seconds", "load all [s]"), ("load_each_seconds", "load one by one [s]"),
              ("run_peak_rss", "peak RSS during the run [MiB]")]
    for workload in doc["workloads"]:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4),
                                 constrained_layout=True)
        for ax, (key, label) in zip(axes, panels, strict=True):
            for tool in tools:
                pts = sorted((n, r.get(key)) for (t, w, n), r in idx.items()
                             if t == tool and w == workload and r.get(key) is not None)
                if not pts:
                    continue
                ns_, ys = zip(*pts, strict=True)
                if key == "store_bytes":
                    ys = [y / 1e6 for y in ys]
                elif key == "run_peak_rss":
                    ys = [y / 2**20 for y in ys]
                ax.plot(ns_, ys, label=tool, **TOOL_STYLE.get(tool, {}))
            if key == "store_bytes":
                pts = sorted({r["n"] for r in doc["results"] if r["workload"] == workload})
                ax.plot(pts, [wl.raw_bytes(workload, n) / 1e6 for n in pts], color="black",
                        linestyle=":", linewidth=1, label="raw data")
                ax.legend(fontsize=8, handles=ax.get_lines()[-1:])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("number of runs N")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(WORKLOAD_TITLE.get(workload, workload), fontsize=11)
        path = os.path.join(figdir, f"storage_{workload}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    linestyles = {"end": ":", "per_run_float": "-", "array": "--"}
    for tool in tools:
        for workload in doc["workloads"]:
            pts = sorted((n, r["overhead_per_point_seconds"] * 1e6)
                         for (t, w, n), r in idx.items()
                         if t == tool and w == workload and "overhead_per_point_seconds" in r)
            if pts:
                style = dict(TOOL_STYLE.get(tool, {}))
                style["linestyle"] = linestyles.get(workload, "-")
                ns_, ys = zip(*pts, strict=True)
                ax.plot(ns_, [max(y, 0.1) for y in ys], label=f"{tool}, {workload}", **style)
    ax.axhline(TARGETS["overhead_us"], color="black", linewidth=0.8)
    ax.annotate(f"target {TARGETS['overhead_us']:.0f} µs", (0.01, TARGETS["overhead_us"]),
                xycoords=("axes fraction", "data"), textcoords="offset points",
                xytext=(0, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of runs N")
    ax.set_ylabel("per-point overhead (wall − function) / N [µs]")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    path = os.path.join(figdir, "storage_overhead.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def storage_targets(doc):
    idx = _index(doc)
    rows = []
    n_float = max((r["n"] for r in doc["results"] if r["workload"] == "per_run_float"),
                  default=None)
    n_arr = max((r["n"] for r in doc["results"] if r["workload"] == "array"), default=None)

    def add(target, measured, passed, note=""):
        rows.append([target, measured, "not measured" if passed is None else ok(passed), note])

    ov = _get(idx, "notebookscan", "per_run_float", n_float, "overhead_per_point_seconds")
    add(f"per-point overhead ≤ {TARGETS['overhead_us']:.0f} µs (per-run float, serial, "
        f"N = {n_float})", f"{fmt_us(ov)} µs",
        None if ov is None else ov * 1e6 <= TARGETS["overhead_us"])
    la = _get(idx, "notebookscan", "per_run_float", n_float, "load_all_seconds")
    add(f"load all results ≤ {TARGETS['load_all_s']} s (per-run float, N = {n_float})",
        f"{fmt_s(la)} s", None if la is None else la <= TARGETS["load_all_s"],
        "open_store + .load(), second call in the process (steady state), warm page cache")
    la1 = _get(idx, "notebookscan", "per_run_float", n_float, "load_all_first_seconds")
    add(f"the same, first call in a fresh process (N = {n_float})", f"{fmt_s(la1)} s",
        None if la1 is None else la1 <= TARGETS["load_all_s"],
        "includes what xarray/notebookscan import lazily on first use")
    for n in sorted({r["n"] for r in doc["results"] if r["workload"] == "array"}):
        a = _get(idx, "notebookscan", "array", n, "wall_seconds")
        b = _get(idx, "psweep", "array", n, "wall_seconds")
        add(f"array workload: wall time ≤ psweep's (N = {n})",
            f"{fmt_s(a)} s vs psweep {fmt_s(b)} s",
            None if a is None or b is None else a <= b,
            "" if a is None or b is None else f"ratio {a / b:.2f}")
    size = _get(idx, "notebookscan", "array", n_arr, "store_bytes")
    frac = _ratio(size, wl.raw_bytes("array", n_arr)) if n_arr else None
    add(f"array workload: store ≤ {TARGETS['store_fraction']:.0%} of raw size (N = {n_arr})",
        "–" if frac is None else f"{frac:.1%} ({fmt_mb(size)} MB of "
        f"{fmt_mb(wl.raw_bytes('array', n_arr))} MB)",
        None if frac is None else frac <= TARGETS["store_fraction"])
    return md_table(["target", "measured", "result", "note"], rows, left=4)


def storage_ratios(doc):
    idx = _index(doc)
    lines = []
    for workload in doc["workloads"]:
        ns_ = sorted({r["n"] for r in doc["results"] if r["workload"] == workload})
        if not ns_:
            continue
        n = ns_[-1]
        ours = _get(idx, "notebookscan", workload, n, "overhead_per_point_seconds")
        if ours is None:
            continue
        parts = []
        for other in ("pypet", "psweep"):
            theirs = _get(idx, other, workload, n, "overhead_per_point_seconds")
            if theirs is None:
                continue
            r = _ratio(theirs, ours)
            if r is not None and r >= 1:
                parts.append(f"{fmt_x(r)} below {other}'s ({fmt_us(theirs)} µs)")
            elif r is not None:
                parts.append(f"{fmt_x(1 / r)} above {other}'s ({fmt_us(theirs)} µs)")
        floor = _get(idx, "floor", workload, n, "overhead_per_point_seconds")
        if floor is not None:
            parts.append(f"{fmt_us(ours - floor)} µs per point above the plain-netCDF4 floor "
                         f"({fmt_us(floor)} µs)")
        lines.append(f"- **{workload}, N = {n}**: notebookscan per-point overhead is "
                     f"{fmt_us(ours)} µs: " + "; ".join(parts) + ".")
        la = _get(idx, "notebookscan", workload, n, "load_all_seconds")
        pla = _get(idx, "pypet", workload, n, "load_all_seconds")
        psla = _get(idx, "psweep", workload, n, "load_all_seconds")
        bits = []
        if la is not None and pla is not None:
            bits.append(f"{fmt_x(pla / la)} faster than pypet ({fmt_s(pla)} s)"
                        if pla >= la else f"{fmt_x(la / pla)} slower than pypet ({fmt_s(pla)} s)")
        if la is not None and psla is not None:
            bits.append(f"{fmt_x(psla / la)} faster than psweep ({fmt_s(psla)} s)"
                        if psla >= la else
                        f"{fmt_x(la / psla)} slower than psweep ({fmt_s(psla)} s)")
        if bits:
            lines.append(f"  Loading all results takes {fmt_s(la)} s: " + "; ".join(bits) + ".")
    return "\n".join(lines)


def storage_paper_check(doc):
    idx = _index(doc)
    rows = []
    for (workload, n), ref in PYPET_PAPER.items():
        for key, value in ref.items():
            got = _get(idx, "pypet", workload, n, key)
            label = {"wall_seconds": "run", "load_all_seconds": "load all"}[key]
            rows.append([f"{workload}, N = {n}, {label}", f"≈ {value:.0f} s",
                         f"{fmt_s(got)} s" if got is not None else "not run"])
    return md_table(["pypet", "paper (Figure 5)", "measured here"], rows)


def storage_workload_table(doc, workload):
    idx = _index(doc)
    rows = []
    for n in sorted({r["n"] for r in doc["results"] if r["workload"] == workload}):
        raw = wl.raw_bytes(workload, n)
        for tool in TOOL_ORDER:
            r = idx.get((tool, workload, n))
            if r is None:
                continue
            if "wall_seconds" not in r:
                rows.append([n, tool, f"failed: {r.get('error', '?')}"] + [""] * 11)
                continue
            rows.append([
                n, tool, fmt_s(r["wall_seconds"]), fmt_s(r["fn_seconds"]),
                fmt_us(r["overhead_per_point_seconds"]), fmt_mb(r["store_bytes"]),
                f"{r['store_bytes'] / raw:.2f}", r.get("store_files", "–"),
                fmt_s(r.get("load_all_seconds")), fmt_s(r.get("load_all_first_seconds")),
                fmt_s(r.get("load_each_seconds")),
                fmt_mib(r.get("run_peak_rss")), fmt_mib(r.get("load_all_peak_rss")),
                fmt_mib(r.get("run_rss_after_import")),
            ])
    header = ["N", "tool", "run [s]", "function [s]", "overhead [µs/pt]", "store [MB]",
              "store / raw", "files", "load all [s]", "load all, 1st call [s]",
              "load each [s]", "peak RSS run [MiB]",
              "peak RSS load all [MiB]", "RSS after imports [MiB]"]
    return md_table(header, rows, left=2)


def storage_section(doc, figdir, md_dir):
    idx = _index(doc)
    paths = storage_figures(doc, figdir)
    out = ["## Storage: notebookscan, psweep, pypet and a plain-netCDF4 floor", ""]
    if doc.get("quick"):
        out += ["> **Quick smoke run** (small N): not the numbers to quote.", ""]
    out += [
        "The three workloads of the pypet paper's Figure 5 (Meyer & Obermayer 2016), "
        "serial, one process:",
        "",
        "- **end**: N runs, each returns one random float; the results are stored "
        "collectively at the end;",
        "- **per_run_float**: one random float stored per run;",
        f"- **array**: one {doc['array_shape'][0]}×{doc['array_shape'][1]} float64 random "
        "array (1 MB) stored per run.",
        "",
        "The function is `fn(i, seed)`: a fresh `numpy.random.default_rng(seed)` draws the "
        "float or the array (`benchmarks/workloads.py`).",
        "",
    ]
    if doc.get("unavailable"):
        for tool, msg in doc["unavailable"].items():
            out.append(f"**{tool} was not run**: {msg}")
        out.append("")
    out += ["### Targets", "", storage_targets(doc), "", "### Ratios", "",
            storage_ratios(doc), "", "For scale, pypet's own figures:", "",
            storage_paper_check(doc), ""]
    for workload in doc["workloads"]:
        if not any(r["workload"] == workload for r in doc["results"]):
            continue
        out += [f"### {WORKLOAD_TITLE.get(workload, workload)}", "",
                storage_workload_table(doc, workload), ""]
        fig = os.path.join(figdir, f"storage_{workload}.png")
        if fig in paths:
            out += [f"![{workload}]({os.path.relpath(fig, md_dir)})", ""]
    fig = os.path.join(figdir, "storage_overhead.png")
    out += ["### Per-point overhead", "", f"![overhead]({os.path.relpath(fig, md_dir)})", "",
            "### Observations", "", storage_observations(doc), ""]

    # array compression
    n_arr = max((r["n"] for r in doc["results"] if r["workload"] == "array"), default=None)
    comp = []
    for tool in TOOL_ORDER:
        b = _get(idx, tool, "array", n_arr, "store_bytes")
        if b is not None:
            comp.append(f"{tool} {b / wl.raw_bytes('array', n_arr):.1%}")
    filters = _get(idx, "floor", "array", n_arr, "filters")
    nsrun = {r["workload"]: r for r in doc["results"] if r["tool"] == "notebookscan"}
    end_flush = nsrun.get("end", {}).get("flush_settings")
    out += ["### How each number is measured", "",
            "- Each (tool, workload, N) runs in three fresh child processes, one after the "
            "other: **run**, **load all**, **load each**. Imports happen before any clock "
            "starts (their time and the RSS right after them are recorded separately).",
            "- **run [s]**: wall time from building the scan (space/trajectory/params) to the "
            "tool's return, store written. **function [s]**: time spent inside `fn`, summed "
            "by a thin timing wrapper around it during that run. **overhead** = "
            "(run − function) / N.",
            "- **store**: apparent size (sum of `st_size`) of everything the tool wrote; "
            "**raw** = 8 bytes × values (N floats, or N × 125 000 for arrays).",
            "- **peak RSS**: `ru_maxrss` returned by `os.wait4()` for that child process "
            "(the per-child form of `getrusage(RUSAGE_CHILDREN).ru_maxrss`), so it includes "
            "the interpreter and the tool's imports; the RSS right after the imports is "
            "the last column.",
            "- **Repetitions**: float workloads with N ≤ 1 000 were run 3 times and the "
            "median of each number is shown; everything else once. The raw values of every "
            "repetition are in `results/storage.json`.",
            "- **load all** is done twice in its process: the table's *load all* is the "
            "second call (steady state), *1st call* the first one, which also pays for "
            "modules imported lazily on first use. **load each** is timed after one untimed "
            "open of the store in the same process, for the same reason.",
            "- Loads run right after the write, so the files are in the page cache (warm "
            "reads). No tool except notebookscan calls `fsync`; notebookscan fsyncs every "
            "shard and its directory, which the others' run times do not pay for.",
            "",
            "What *load all* and *load each* mean per tool:",
            "",
            "- **notebookscan**: load all = `ns.open_store(path)` + `.load()`, then the "
            "variable's `.values`. Load each = `ns.open_store(path)` once, then "
            "`ds[var].sel(i=i).values` for every i: xarray label-based selection on the "
            "Dataset `open_store` returns (it measures xarray indexing, not disk access per "
            "point). The float workloads' values are the variable `result` (the function "
            "returns a bare float), the array's is `x`.",
            f"- **notebookscan, end workload**: notebookscan always persists as it goes; run "
            f"with flush settings {end_flush!s} so that it writes as few shards as it allows.",
            "- **psweep**: `ps.run(func, ps.pgrid([ps.plist('i', range(N))]), calc_dir=...)`. "
            "end: the pickled database written at the end (psweep's default). per_run_float: "
            "`tmpsave=True` (each pset's result pickled as soon as it is done) plus the "
            "database. array: the function `np.save`s its array to "
            "`<calc_dir>/<_pset_id>/x.npy` (psweep's idiom for big data). Load all = "
            "`ps.df_read` of the database (+ every `.npy`, stacked). Load each: end = the "
            "database read once, then `df.at[i, 'x']`; per_run_float = each pset's own "
            "tmpsave pickle; array = `np.load` of each `.npy`.",
            "- **pypet** (its own venv, numpy < 2): an `Environment` with its default HDF5 "
            "storage service and compression, logging and progress off, one parameter "
            "explored with `f_explore`. end: the run function returns its float and a "
            "post-processing function adds all of them as one result; per-run workloads: "
            "`traj.f_add_result('x', ...)` in the run function. Load all = "
            "`f_load(load_parameters=2, load_results=2)` + `f_get_from_runs`; load each = "
            "`f_load(load_results=1)` (skeleton) then `traj.f_load_item` per run.",
            "- **floor**: a plain loop and one NetCDF-4 file written with netCDF4: floats "
            "collected and written at the end; arrays written into the open file's variable "
            "as they come (one chunk per point, `compression='blosc_lz4', shuffle=True`), "
            "closed at the end. Load all = `var[:]`; load each = `var[i]` per point.",
            "",
            f"Compression of the random arrays (N = {n_arr}), store / raw: "
            + ", ".join(comp) + "."
            + (f" The floor's filters: `{filters}`." if filters else "")
            + " Random float64 values in [0, 1) leave only the exponent bytes and the top "
            "mantissa bits to compress (blosc-lz4 with byte shuffle), so little can be "
            "saved.",
            ""]
    return "\n".join(out)


def storage_observations(doc):
    """Plain facts computed from the numbers (no judgement)."""
    idx = _index(doc)
    lines = []
    for workload in ("per_run_float", "end"):
        ns_ = sorted({r["n"] for r in doc["results"] if r["workload"] == workload})
        if not ns_:
            continue
        n = ns_[-1]
        parts = []
        for tool in TOOL_ORDER:
            b = _get(idx, tool, workload, n, "store_bytes")
            if b is not None:
                parts.append(f"{tool} {b / n:.0f}")
        lines.append(f"- Store bytes per point, {workload}, N = {n} (the value itself is 8 "
                     "bytes): " + ", ".join(parts) + ".")
    ns_ = sorted({r["n"] for r in doc["results"] if r["workload"] == "array"})
    if ns_:
        n = ns_[-1]
        mib = wl.raw_bytes("array", n) / 2**20
        parts = []
        for tool in TOOL_ORDER:
            run = _get(idx, tool, "array", n, "run_peak_rss")
            load = _get(idx, tool, "array", n, "load_all_peak_rss")
            if run is not None:
                parts.append(f"{tool} {fmt_mib(run)} / {fmt_mib(load)}")
        lines.append(f"- Peak RSS during the run / while loading all, array workload, "
                     f"N = {n} ({mib:.0f} MiB of results), MiB: " + ", ".join(parts) + ".")
        nsr = idx.get(("notebookscan", "array", n))
        if nsr and "shards" in nsr:
            lines.append(f"- notebookscan wrote the {n} arrays into {nsr['shards']} shard(s) "
                         f"with its default flush settings.")
        parts = []
        for tool in TOOL_ORDER:
            r = idx.get((tool, "array", n))
            if r and "fn_seconds" in r:
                parts.append(f"{tool} {fmt_s(r['fn_seconds'])} s")
        sa = next((r.get("fn_standalone_seconds") for r in doc["results"]
                   if r["workload"] == "array" and r["n"] == n
                   and r.get("fn_standalone_seconds")), None)
        line = (f"- Time inside the array function during the run (N = {n}): "
                + ", ".join(parts) + f"; the same {n} calls in a bare loop whose arrays "
                f"are dropped at once: {fmt_s(sa)} s.")
        nsf = _get(idx, "notebookscan", "array", n, "fn_seconds")
        if nsf and sa and nsf > 1.5 * sa:
            line += (" A tool that keeps the arrays alive until it flushes makes each new "
                     "array land in fresh, not-yet-mapped memory (page faults), which counts "
                     "as function time here, so its overhead column understates its cost.")
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# parallel benchmark (bench_parallel.py)
# --------------------------------------------------------------------------------------

PARALLEL_STYLE = {
    "notebookscan": {"color": "#d62728", "marker": "o", "label": "notebookscan, 2 engines"},
    "notebookscan_serial": {"color": "#ff9896", "marker": "o", "linestyle": "--",
                            "label": "notebookscan, serial"},
    "ipp_map": {"color": "#9467bd", "marker": "s", "label": "ipyparallel map_sync, best chunk"},
    "loop": {"color": "#7f7f7f", "marker": "v", "linestyle": ":",
             "label": "plain loop (no persistence)"},
}


def _par_ok(rows):
    return [r for r in rows if "error" not in r]


def _par_throughput(doc):
    return {(r["method"], r["n"]): r for r in _par_ok(doc.get("throughput", []))}


def _par_rate(rec):
    return None if rec is None else rec["n"] / rec["best_seconds"]


def parallel_figure(doc, figdir):
    """Throughput (points/s) and client peak RSS against N, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(figdir, exist_ok=True)
    idx = _par_throughput(doc)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for method, style in PARALLEL_STYLE.items():
        pts = sorted((n, _par_rate(r), r.get("peak_rss")) for (m, n), r in idx.items()
                     if m == method)
        if not pts:
            continue
        ns_, rates, rss = zip(*pts, strict=True)
        ax.plot(ns_, rates, **style)
        if method != "loop":
            ax2.plot(ns_, [b / 2**20 for b in rss], **style)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("number of points N")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("points per second (best of repeats)")
    ax.set_title("trivial function fn(i, seed) = 2.0 * i", fontsize=10)
    ax.legend(fontsize=7)
    ax2.set_ylabel("client peak RSS [MiB]")
    ax2.set_ylim(bottom=0)
    ax2.set_title("memory of the client process alone", fontsize=10)
    path = os.path.join(figdir, "parallel_throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _par_stats(values):
    """(min, median, max) of the values that are not None."""
    import statistics

    values = [v for v in values if v is not None]
    return (min(values), statistics.median(values), max(values)) if values else None


def parallel_targets(doc):
    targets = doc["targets"]
    idx = _par_throughput(doc)
    rows = []

    def add(target, measured, passed, note=""):
        rows.append([target, measured, "not measured" if passed is None else ok(passed), note])

    for r in (doc.get("cost") or {}).get("rows", []):
        share = r["ipp_map_best_seconds"] / r["notebookscan"]["best_seconds"]
        add(f"a function of {r['cost_us']:g} µs: notebookscan ≥ {targets['ratio']:.0%} of "
            "the raw-map throughput, persistence included", f"{share:.0%}",
            share >= targets["ratio"],
            f"N = {r['n']:,}; raw map chunksize {r['ipp_map_chunksize']:,}")
    n = max(doc["sizes"])
    ours = idx.get(("notebookscan", n))
    if ours:
        per_point = ours["best_seconds"] / n * 1e6
        add(f"per-point overhead, 2 engines, trivial function, N = {n:,}: ≤ "
            f"{targets['overhead_us']:g} µs (key, seed, shipping, NetCDF, fsync)",
            f"{per_point:.1f} µs", per_point <= targets["overhead_us"],
            f"{_par_rate(ours):,.0f} points/s")
    sizes = sorted(n for n in doc["sizes"] if n >= 10_000)
    if len(sizes) >= 2:
        a, b = idx.get(("notebookscan", sizes[0])), idx.get(("notebookscan", sizes[-1]))
        if a and b:
            growth = b["peak_rss"] / a["peak_rss"] - 1
            add(f"client peak RSS flat within {targets['memory_growth']:.0%} from N = "
                f"{sizes[0]:,} to {sizes[-1]:,}", f"{growth:+.1%}",
                growth <= targets["memory_growth"],
                f"{fmt_mib(a['peak_rss'])} → {fmt_mib(b['peak_rss'])} MiB")
    single = {r["n"]: r for r in _par_ok(doc.get("memory", []))}
    if 10_000 in single and 100_000 in single:
        a, b = single[10_000], single[100_000]
        growth = b["peak_rss"] / a["peak_rss"] - 1
        add(f"the same, one scan per fresh process: within {targets['memory_growth']:.0%} "
            "from N = 10,000 to 100,000", f"{growth:+.1%}",
            growth <= targets["memory_growth"],
            f"{fmt_mib(a['peak_rss'])} → {fmt_mib(b['peak_rss'])} MiB")
    for workload, n, serial, engines in _par_workload_pairs(doc):
        add(f"{workload}, N = {n}: 2 engines faster than serial",
            f"{fmt_s(engines['wall_seconds'])} s vs {fmt_s(serial['wall_seconds'])} s",
            engines["wall_seconds"] < serial["wall_seconds"],
            f"speed-up {serial['wall_seconds'] / engines['wall_seconds']:.2f}×")
    cold = _par_ok(doc.get("coldstart", []))
    first = _par_stats([c.get("first_point_done_seconds") for c in cold])
    if first:
        add(f"cold start ≤ {targets['cold_start_s']:.0f} s: run() → first result in the "
            f"client (`point_done`), {len(cold)} fresh processes",
            f"max {fmt_s(first[2])} s", first[2] <= targets["cold_start_s"],
            f"min {fmt_s(first[0])} / median {fmt_s(first[1])} s")
    flushed = _par_stats([c.get("first_flushed_seconds") for c in cold])
    if flushed:
        add(f"cold start ≤ {targets['cold_start_s']:.0f} s: run() → first shard on disk "
            "(`flushed`)", f"max {fmt_s(flushed[2])} s",
            flushed[2] <= targets["cold_start_s"],
            f"min {fmt_s(flushed[0])} / median {fmt_s(flushed[1])} s")
    return md_table(["target", "measured", "result", "note"], rows, left=4)


def _par_workload_pairs(doc):
    recs = {(r["workload"], r["n"], r["mode"]): r for r in _par_ok(doc.get("workloads", []))}
    for (workload, n, mode), rec in recs.items():
        if mode == "serial" and (workload, n, "engines") in recs:
            yield workload, n, rec, recs[(workload, n, "engines")]


def _par_share(rate, raw):
    if rate is None or not raw:
        return "–"
    share = rate / raw
    return f"{share:.1%}" if share < 1 else fmt_x(share)


def _par_us(seconds, points):
    us = seconds / points * 1e6
    return f"{us:.2f}" if us < 1 else fmt_us(seconds / points)


def parallel_throughput_table(doc):
    idx = _par_throughput(doc)
    rows = []
    for n in doc["sizes"]:
        raw = _par_rate(idx.get(("ipp_map", n)))
        for method in PARALLEL_STYLE:
            r = idx.get((method, n))
            if r is None:
                failed = [x for x in doc.get("throughput", [])
                          if x.get("label") == f"{method}-{n}" and "error" in x]
                if failed:
                    rows.append([f"{n:,}", method, f"failed: {failed[0]['error']}"] + [""] * 6)
                continue
            note = ""
            if method == "ipp_map":
                note = f"chunksize {r['chunksize']}"
            elif "shards" in r:
                note = f"{max(r['shards'])} shard(s) before compaction"
            rows.append([f"{n:,}", PARALLEL_STYLE[method]["label"], fmt_s(r["best_seconds"]),
                         fmt_s(r["median_seconds"]), f"{_par_rate(r):,.0f}",
                         _par_us(r["best_seconds"], n),
                         _par_share(_par_rate(r), raw),
                         fmt_mib(r.get("peak_rss")), note])
    return md_table(["N", "method", "best [s]", "median [s]", "points/s", "µs/point",
                     "of raw map", "client peak RSS [MiB]", "note"], rows, left=2)


def parallel_map_table(doc):
    rows = []
    for r in _par_ok(doc.get("throughput", [])):
        if r["method"] != "ipp_map":
            continue
        cells = ", ".join(f"{int(c):,}: {fmt_s(v['best_seconds'])} s"
                          for c, v in sorted(r["by_chunksize"].items(), key=lambda x: int(x[0])))
        rows.append([f"{r['n']:,}", cells])
    return md_table(["N", "chunksize: best time"], rows, left=2)


def parallel_cpu_table(doc):
    rows = []
    for r in _par_ok(doc.get("throughput", [])):
        if r["method"] != "notebookscan":
            continue
        best = r["seconds"].index(r["best_seconds"])
        th, rem = r["client_thread_cpu_seconds"][best], r["remote_cpu_seconds"][best]
        rows.append([f"{r['n']:,}", fmt_s(r["best_seconds"]), fmt_s(th["main"]),
                     fmt_s(th["ipyparallel_io"]), fmt_s(th["other"]), fmt_s(rem["engine"]),
                     fmt_s(rem["controller"])])
    return md_table(["N", "wall [s]", "client: scan loop (main thread)",
                     "client: ipyparallel IO thread", "client: other threads",
                     "engines (both)", "controller"], rows)


def parallel_cost_table(doc):
    cost = doc.get("cost") or {}
    rows = []
    for r in cost.get("rows", []):
        ours = r["notebookscan"]["best_seconds"]
        rows.append([f"{r['cost_us']:g}", f"{r['n']:,}", fmt_s(r["serial_function_seconds"]),
                     fmt_s(ours), fmt_s(r["ipp_map_best_seconds"]),
                     f"{r['ipp_map_chunksize']:,}", f"{r['ipp_map_best_seconds'] / ours:.0%}"])
    return md_table(["function cost [µs/point]", "N", "function time, serial [s]",
                     "notebookscan, 2 engines [s]", "raw map, best chunk [s]",
                     "map chunksize", "notebookscan / raw-map throughput"], rows)


def parallel_workload_table(doc):
    rows = []
    for workload, n, serial, engines in _par_workload_pairs(doc):
        th = engines["client_thread_cpu_seconds"]
        rem = engines.get("remote_cpu_seconds", {})
        rows.append([workload, f"{n:,}", fmt_s(serial["wall_seconds"]),
                     fmt_s(engines["wall_seconds"]),
                     f"{serial['wall_seconds'] / engines['wall_seconds']:.2f}×",
                     fmt_s(serial["fn_standalone_seconds"]),
                     fmt_s(serial["client_thread_cpu_seconds"]["main"]),
                     f"{fmt_s(th['main'])} / {fmt_s(th['ipyparallel_io'])}",
                     fmt_s(rem.get("engine")), fmt_s(rem.get("controller")),
                     f"{fmt_mib(serial['peak_rss'])} / {fmt_mib(engines['peak_rss'])}"])
    return md_table(["workload", "N", "serial [s]", "2 engines [s]", "speed-up",
                     "function alone [s]", "serial: client CPU [s]",
                     "engines: client CPU loop / IO [s]", "engines CPU [s]",
                     "controller CPU [s]", "client peak RSS serial / engines [MiB]"], rows,
                    left=2)


def parallel_cold_table(doc):
    cold = _par_ok(doc.get("coldstart", []))
    rows = []
    for key, label in (("cluster_start_seconds", "local cluster start (2 engines)"),
                       ("loop_started_seconds", "run() → scan loop starts (`started`)"),
                       ("first_point_done_seconds", "run() → first result (`point_done`)"),
                       ("first_flushed_seconds", "run() → first shard written (`flushed`)"),
                       ("run_seconds", f"run() → return ({doc.get('cold_points', '')} points)"),
                       ("import_seconds", "import notebookscan (before run())")):
        st = _par_stats([c.get(key) for c in cold])
        if st:
            rows.append([label, fmt_s(st[0]), fmt_s(st[1]), fmt_s(st[2])])
    return md_table(["from a fresh process", "min [s]", "median [s]", "max [s]"], rows)


def parallel_breakdown(doc):
    bd = doc.get("breakdown")
    if not bd or "error" in bd:
        return "Not measured." if not bd else f"Failed: {bd['error']}"
    n = bd["n"]
    rows = [[s["stage"].replace("  ", "&nbsp;&nbsp;"), s["calls"], fmt_s(s["seconds"]),
             fmt_us(s["seconds"] / n)] for s in bd["stages"]]
    rows.append(["**whole run (wall)**", "", fmt_s(bd["wall_seconds"]),
                 fmt_us(bd["wall_seconds"] / n)])
    th, rem = bd["client_thread_cpu_seconds"], bd["remote_cpu_seconds"]
    tr = bd["transport"]
    out = [md_table(["stage (inclusive wall time, scan loop thread)", "calls", "seconds",
                     "µs/point"], rows, left=1), "",
           f"CPU time during that run: scan loop (main thread) {fmt_s(th['main'])} s, "
           f"ipyparallel's IO thread (receives and unpickles the results) "
           f"{fmt_s(th['ipyparallel_io'])} s, engines {fmt_s(rem['engine'])} s, controller "
           f"{fmt_s(rem['controller'])} s; {bd['shards']} shards were written before "
           "compaction.", "",
           f"Shipping one chunk of {tr['points']:,} points and results (in one process, with "
           "ipyparallel's own `serialize_object` / `deserialize_object`):", "",
           md_table(["what", "serialise [s]", "deserialise [s]", "bytes", "µs/point (both)"], [
               [what, fmt_s(tr[f"{key}_serialize_seconds"]),
                fmt_s(tr[f"{key}_deserialize_seconds"]), fmt_mb(tr[f"{key}_bytes"]) + " MB",
                _par_us(tr[f"{key}_serialize_seconds"] + tr[f"{key}_deserialize_seconds"],
                        tr["points"])]
               for what, key in (("the points (`PointColumns`: a numpy column per parameter, "
                                  "and the seeds)", "points"),
                                 ("their results (`ChunkResult`: numpy columns)", "results"))],
               left=1), "",
           f"`run_chunk` itself took {fmt_s(tr['run_chunk_seconds'])} s for those "
           f"{tr['points']:,} points ({fmt_us(tr['run_chunk_seconds'] / tr['points'])} µs/point)."]
    mem = bd.get("traced_memory")
    if mem:
        text = (f"Python allocations (tracemalloc) of one more run of N = {n:,} in the same "
                f"process: the space's per-point data (columns, keys, seeds) "
                f"{fmt_mib(mem['space_bytes'])} MiB; the scan loop's peak above that "
                f"{fmt_mib(mem['loop_peak_above_space_bytes'])} MiB")
        if "compaction_peak_above_loop_end_bytes" in mem:
            text += (f"; the compaction at the end of the run "
                     f"{fmt_mib(mem['compaction_peak_above_loop_end_bytes'])} MiB above what "
                     "the loop held when it started")
        out += ["", text + "."]
    return "\n".join(out)


def parallel_memory_table(doc):
    recs = sorted(_par_ok(doc.get("memory", [])), key=lambda r: r["n"])
    if not recs:
        return "One scan per process: not measured."
    first = recs[0]
    rows = []
    for r in recs:
        extra = r["peak_rss"] - first["peak_rss"]
        per_point = extra / (r["n"] - first["n"]) if r["n"] > first["n"] else None
        rows.append([f"{r['n']:,}", fmt_s(r["seconds"]), fmt_mib(r["rss_before"]),
                     fmt_mib(r["peak_rss"]), fmt_mib(r["rss_after"]),
                     "–" if per_point is None else f"{per_point:.0f}"])
    return ("One scan of the trivial function on 2 engines in a fresh process per N "
            "(cluster started and warmed up first), client RSS:\n\n" + md_table(
                ["N", "scan [s]", "before the scan [MiB]", "peak [MiB]", "after [MiB]",
                 f"peak above N = {first['n']:,}, per extra point [bytes]"], rows) +
            "\n\nWhat the client holds per point for the whole run is the space's own "
            "arrays (a 20-byte key, a 4-byte seed, 8 bytes per parameter) and the "
            "positions still to run; results leave with each flush. Runs that end with "
            "more than 16 small shards compact them, 32 MiB of shard data per pass.")


def parallel_remote_memory(doc):
    idx = _par_throughput(doc)
    parts = []
    for n in doc["sizes"]:
        rec = idx.get(("notebookscan", n))
        if not rec or "remote_memory" not in rec:
            continue
        mem = rec["remote_memory"]
        eng = ", ".join(fmt_mib(e["peak_rss"]) for e in mem.get("engine", []))
        ctl = sorted((e["peak_rss"] for e in mem.get("controller", []) if e["peak_rss"]),
                     reverse=True)
        text = f"N = {n:,}: engines {eng} MiB"
        if ctl:
            text += (f"; controller {fmt_mib(ctl[0])} MiB, and {len(ctl) - 1} processes it "
                     f"forked (schedulers) up to {fmt_mib(ctl[1])} MiB each"
                     if len(ctl) > 1 else f"; controller {fmt_mib(ctl[0])} MiB")
        parts.append(text)
    if not parts:
        return ""
    client = [f"N = {n:,}: {fmt_mib(r['rss_before_runs'])} → {fmt_mib(r['peak_rss'])} MiB"
              for n in doc["sizes"] if (r := idx.get(("notebookscan", n)))
              and r.get("rss_before_runs")]
    return (("- Client RSS after the cluster start and the warm-up scan → client peak RSS, "
             "notebookscan on 2 engines: " + "; ".join(client) + ".\n" if client else "")
            + "- Peak RSS (VmHWM) of the engines and of the controller's processes at the end "
            "of the notebookscan case (forked processes share pages, so their sum "
            "overstates the memory used): " + "; ".join(parts) + ".")


def parallel_section(doc, figdir, md_dir):
    fig = parallel_figure(doc, figdir)
    m = doc["machine"]
    out = [f"## Parallel: scans on {doc['engines']} local ipyparallel engines", ""]
    if doc.get("quick"):
        out += ["> **Quick smoke run** (small N): not the numbers to quote.", ""]
    la0, la1 = doc.get("load_average_start"), doc.get("load_average_end")
    out += [
        f"{doc['engines']} engines of a local cluster (`local_executor({doc['engines']})`, "
        f"heartbeat 500 ms) on the {m.get('cores')}-core machine above; the client (the "
        "process that runs the scan loop and writes the store) shares those cores with "
        "the engines and the controller. Versions: "
        + ", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items() if v) + ". "
        + (f"Load average (1 min) {la0[0]:.2f} at the start, {la1[0]:.2f} at the end "
           "(other work on the machine counts in every number)." if la0 and la1 else ""),
        "",
        "### Targets", "", parallel_targets(doc), "",
        "The throughput target compares a scan with a raw `map` of the same function on "
        "the same engines. For a function that does nothing (below), a raw map with a "
        "50 000-point chunk costs under 0.1 µs a point: less than hashing one point's key, "
        "which a scan must do to recognise the point later. The share of the raw map's "
        "throughput is therefore set for functions that cost something (10 µs to 1 ms); "
        "the trivial function's rows measure the scan's own per-point overhead.", "",
        f"### Throughput of a trivial function (`{doc.get('function', '')}`)", "",
        parallel_throughput_table(doc), "",
        f"![throughput]({os.path.relpath(fig, md_dir)})", "",
        "Raw `lv.map_sync(fn, range(N), chunksize=c)`, every chunk size tried (best of "
        f"{doc.get('repeats')}):", "", parallel_map_table(doc), "",
        "CPU time of each process during the best notebookscan run:", "",
        parallel_cpu_table(doc), "",
        "### Where a 2-engine scan's time goes (trivial function)", "",
        parallel_breakdown(doc), "",
        "### Function cost needed to use the engines", "",
        "A function that keeps its core busy for a fixed time per point; N is chosen so "
        "that each run holds about 2 s of function time (at least 1 000 points). Ideal "
        "on 2 engines: half the serial function time.", "",
        parallel_cost_table(doc), "",
        "### pypet workloads: 2 engines vs serial", "",
        parallel_workload_table(doc), "",
        "### Cold start", "",
        f"A fresh process builds a {doc.get('cold_points', '')}-point scan of a function that "
        f"sleeps {doc.get('cold_sleep_ms', '')} ms and calls `scan.run(progress=False)`, "
        "which starts the local cluster; times are from that call. The scan runs with the "
        "default flush settings (`flush_every=1000`, `flush_interval=2.0`).", "",
        parallel_cold_table(doc), "",
        "### Memory", "",
        parallel_memory_table(doc), "",
        parallel_remote_memory(doc), "",
        "### How each number is measured", "",
        "- Each case runs in its own child process; engine cases start their own local "
        "cluster and warm it up (a 100-point scan or map, so the engines have imported "
        "what they need) before any clock starts, and stop it at the end.",
        "- **notebookscan**: wall time from `ns.Scan(...)` to `run()` returning, every point "
        "stored (shards written, fsynced, compacted at the end when there are more than 8); "
        "a fresh store each repetition. **raw map**: `lv.map_sync` on a load-balanced view "
        "of the same engines, results kept in memory. **plain loop**: a list comprehension "
        f"in one process. Best and median of {doc.get('repeats')} repetitions in the same "
        "process.",
        f"- **Client peak RSS**: {doc.get('peak_rss_method')}. It includes the imports and "
        "the cluster client, and is the peak over the case's repetitions.",
        "- **CPU seconds** per thread of the client from `psutil.Process().threads()`, of "
        "the engines and controller from `psutil` on the client's child processes, "
        "before and after each run.",
        "- **Stage times** wrap notebookscan's methods with timers in the child process "
        "only (inclusive times: a stage contains those indented below it); the wrappers "
        "add about 1 µs per point to the per-point stages.",
        "- Scratch files in `benchmarks/_work/parallel/`; raw numbers in "
        "`results/parallel.json`.",
        ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# scale benchmark (bench_scale.py)
# --------------------------------------------------------------------------------------


def scale_section(doc, figdir, md_dir):
    med = doc["median_seconds"]
    total = doc["median_total_seconds"]
    labels = {"grid": f"`ns.grid(i=range({doc['n_grid']:_}))`",
              "keys": "`space.keys()` (every point's key)",
              "seeds": "`space.seeds()`",
              "scan": "`ns.Scan(fn, space, store)`",
              "dry_run": "`scan.plan()` (skip-done check against the store)",
              "status": "`scan.status()` afterwards (keys cached)"}
    rows = [[labels[k], fmt_s(med[k])] for k in labels if k in med]
    rows.append(["**grid + keys + seeds + Scan + dry run**", f"**{fmt_s(total)}**"])
    reps = doc["repetitions"]
    out = [f"## Scale: a {doc['n_grid']:,}-point grid against a store of "
           f"{doc['n_stored']:,} of its points", ""]
    if doc.get("quick"):
        out += ["> **Quick smoke run** (small N): not the numbers to quote.", ""]
    out += [md_table(["target", "measured", "result"], [[
        f"grid definition + keys + skip-done check under {doc['target_seconds']:.0f} s",
        f"{fmt_s(total)} s (median of {len(reps)}; max "
        f"{fmt_s(max(r['total_seconds'] for r in reps))} s)",
        ok(max(r["total_seconds"] for r in reps) <= doc["target_seconds"])]], left=3), "",
        md_table(["stage (fresh process, imports done)", "median [s]"], rows), "",
        f"The store was filled by a serial scan of the first {doc['n_stored']:,} points and "
        f"compacted ({doc['fill']['shards']} shard, {fmt_s(doc['fill']['fill_seconds'])} s). "
        f"The dry run found {reps[0]['to_run']:,} points to run and {reps[0]['stored']:,} "
        f"stored. Peak RSS of the checking process (`ru_maxrss` from `os.wait4`): "
        f"{fmt_mib(max(r['peak_rss'] for r in reps))} MiB, "
        f"{fmt_mib(reps[0]['rss_after_import'])} MiB of it after the imports.", ""]
    return "\n".join(out)


def _cell(idx, tool, workload, n, key, fmt):
    value = _get(idx, tool, workload, n, key)
    return fmt(value) if value is not None else "–"


def _vs(ours, theirs):
    """``theirs / ours`` (for times, sizes and memory: above 1 means notebookscan is ahead)."""
    if not ours or not theirs:
        return "–"
    r = theirs / ours
    return fmt_x(r) if r >= 1 else f"{r:.2f}×"


def summary_section(by_name):
    """One table of the headline numbers of every benchmark, tools side by side."""
    rows = []
    storage = by_name.get("storage")
    if storage:
        idx = _index(storage)
        for workload, n, key, label, fmt in (
                ("per_run_float", 10_000, "wall_seconds", "run, serial [s]", fmt_s),
                ("per_run_float", 10_000, "load_all_seconds", "load all [s]", fmt_s),
                ("per_run_float", 10_000, "store_bytes", "store [MB]", fmt_mb),
                ("array", 1_000, "wall_seconds", "run, serial [s]", fmt_s),
                ("array", 1_000, "load_all_seconds", "load all [s]", fmt_s),
                ("array", 1_000, "store_bytes", "store [MB]", fmt_mb),
                ("array", 1_000, "run_peak_rss", "peak RSS run [MiB]", fmt_mib)):
            if (("notebookscan", workload, n)) not in idx:
                continue
            ours = _get(idx, "notebookscan", workload, n, key)
            rows.append([f"{workload}, N = {n:,}: {label}",
                         _cell(idx, "notebookscan", workload, n, key, fmt),
                         _cell(idx, "pypet", workload, n, key, fmt),
                         _cell(idx, "psweep", workload, n, key, fmt),
                         _cell(idx, "floor", workload, n, key, fmt),
                         _vs(ours, _get(idx, "pypet", workload, n, key)),
                         _vs(ours, _get(idx, "psweep", workload, n, key))])
    peers = by_name.get("peers")
    if peers:
        idx = {(r["tool"], r["workload"], r["n"]): r for r in peers["results"]
               if "wall_seconds" in r}
        for workload, n in (("per_run_float", 10_000), ("array", 1_000)):
            if ("notebookscan", workload, n) not in idx:
                continue
            ours = _get(idx, "notebookscan", workload, n, "wall_seconds")
            rows.append([f"{workload}, N = {n:,}: run, 2 workers [s]",
                         fmt_s(ours),
                         _cell(idx, "pypet", workload, n, "wall_seconds", fmt_s),
                         _cell(idx, "psweep", workload, n, "wall_seconds", fmt_s),
                         _cell(idx, "floor", workload, n, "wall_seconds", fmt_s)
                         + " (raw map)",
                         _vs(ours, _get(idx, "pypet", workload, n, "wall_seconds")),
                         _vs(ours, _get(idx, "psweep", workload, n, "wall_seconds"))])
    parallel = by_name.get("parallel")
    if parallel:
        idx = _par_throughput(parallel)
        n = max(parallel["sizes"])
        ours, raw = idx.get(("notebookscan", n)), idx.get(("ipp_map", n))
        if ours and raw:
            rows.append([f"trivial function, N = {n:,}, 2 engines: points/s",
                         f"{_par_rate(ours):,.0f}", "–", "–",
                         f"{_par_rate(raw):,.0f} (raw map)",
                         "–", "–"])
            rows.append(["the same: client peak RSS [MiB]", fmt_mib(ours["peak_rss"]),
                         "–", "–", fmt_mib(raw["peak_rss"]) + " (raw map)", "–", "–"])
    scale = by_name.get("scale")
    if scale:
        rows.append([f"{scale['n_grid']:,}-point grid + keys + skip-done [s]",
                     fmt_s(scale["median_total_seconds"]), "–", "–", "–", "–", "–"])
    if not rows:
        return ""
    return "\n".join([
        "## Summary", "",
        "Headline numbers of the sections below, side by side. The last two columns are "
        "the other tool's number divided by notebookscan's: for times, sizes and memory, "
        "above 1× means notebookscan is ahead, below 1× behind. The floor is a plain "
        "netCDF4 loop for storage and a raw ipyparallel map for parallel runs; neither "
        "does what a scan tool does (no keys, no skip-done, no crash safety): they "
        "bound what is possible.",
        "", md_table(["measure", "notebookscan", "pypet", "psweep", "floor",
                      "pypet / notebookscan", "psweep / notebookscan"], rows), ""])


def _register_module_sections():
    """Benchmarks that render their own section (``render(doc, figdir, md_dir, ...)``)."""
    import bench_adaptive
    import bench_bigresults
    import bench_durability
    import bench_memory
    import bench_peers
    import bench_segments
    import bench_widgets

    return {"peers": bench_peers.render, "segments": bench_segments.render,
            "durability": bench_durability.render, "widgets": bench_widgets.render,
            "memory": bench_memory.render, "adaptive": bench_adaptive.render,
            "bigresults": bench_bigresults.render}


SECTIONS = {"storage": storage_section, "parallel": parallel_section,
            "scale": scale_section, **_register_module_sections()}


def write_report(results_dir=None, out=None, figdir=None, names=None):
    results_dir = results_dir or os.path.join(HERE, "results")
    out = out or os.path.join(HERE, "RESULTS.md")
    figdir = figdir or os.path.join(HERE, "figures")
    docs = []
    for name in names or SECTIONS:
        path = os.path.join(results_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as fh:
                docs.append(json.load(fh))
    if not docs:
        raise SystemExit(f"no results in {results_dir}")
    md_dir = os.path.dirname(os.path.abspath(out))
    parts = ["# notebookscan benchmarks", "",
             "Generated by `python benchmarks/run_all.py` (`make bench`); raw numbers in "
             f"`{os.path.relpath(results_dir, md_dir)}/`.", "", machine_section(docs)]
    by_name = {doc["benchmark"]: doc for doc in docs}
    parts.append(summary_section(by_name))
    for doc in docs:
        render = SECTIONS[doc["benchmark"]]
        if "others" in inspect.signature(render).parameters:
            parts.append(render(doc, figdir, md_dir, others=by_name))
        else:
            parts.append(render(doc, figdir, md_dir))
    with open(out, "w") as fh:
        fh.write("\n".join(parts).rstrip() + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--figures", default=None)
    args = parser.parse_args(argv)
    print(f"wrote {write_report(args.results, args.out, args.figures)}")


if __name__ == "__main__":
    main()
