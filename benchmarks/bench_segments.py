"""Segmented runs: peak memory stays flat as recordings grow; checkpoint cost per segment.

Two measurements, every case in its own child process (peak RSS from ``os.wait4``):

``memory``
    One point whose recording is one float64 array of ``R`` bytes per segment, run
    with the serial executor (model, scan loop and store writer share one process).
    ``1 segment`` records ``R`` in total; ``10 segments`` records ``10 R``. The claim:
    the second peaks within 20 % of the first. For scale, ``plain Scan`` returns the
    same ``10 R`` from one function call, as a non-segmented scan must.
``overhead``
    Wall time per segment of a ``SegmentedScan`` minus that of running the same model
    straight through in one process with no store (``segments.iterate``): what
    encoding the state, writing recordings, checkpointing (fsync) and pruning cost per
    segment, for states of 1 KB, 1 MB and 16 MB, and with a 1 MB simulator file handed
    over each segment. The encode/decode and checkpoint-write parts are also timed alone.
``straight``
    Segmented with a checkpoint after every segment against the straight run, for the
    package's numpy LIF network and for the real Brian2 network of docs/segments.md
    (numpy code generation, extracted from the docs and run in Brian2's own venv:
    ``make brian2-env`` or ``--brian-python``), each a 2×2 grid × 10 segments on the
    serial executor: the straight run (each point built once and run through, no
    store), the segmented scan restoring every segment (``keep_models=False``, what every
    segment did before live models) and the segmented scan keeping each point's model
    alive (``keep_models=True``, the default); the segmented scans on a process pool of
    one worker, started and with the model's imports done before the clock starts, as
    the straight run has them (also netCDF4 and xarray's first DataArray, which imports
    dask; and the client's store libraries, xarray and netCDF4). Each case in a fresh
    process; code generation and the first run are in the time.

    python benchmarks/bench_segments.py            # -> results/segments.json
    python benchmarks/bench_segments.py --quick    # -> _work/results-quick/segments.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import workloads as wl  # noqa: E402
from bench_storage import machine_info, run_child  # noqa: E402

NAME = "segments"
WORK = os.path.join(HERE, "_work", NAME)
MEMORY_LIMIT = 1.20  # 10 segments may peak at most 20 % above 1 segment
STRAIGHT_LIMIT = 1.30  # segmented, checkpoint every segment, at most 1.3x the straight run
STRAIGHT_SEGMENTS = 10
LIF_GRID = {"g": [3.0, 5.0], "drive": [1.1, 1.3]}
LIF_POINT = {"n": 400}
LIF_SEGMENT = 0.2  # model seconds per segment
BRIAN_GRID = {"rate": [40.0, 60.0], "trial": [0, 1]}
BRIAN_SEGMENT = 0.1
BRIAN_MARK = "<!-- example: skip, needs Brian2"


# --------------------------------------------------------------------------------------
# models (imported by the children)
# --------------------------------------------------------------------------------------


def recording_model(rows: int, cols: int, segments):
    """Each segment records a (rows, cols) float64 array; the state is tiny."""
    import numpy as np

    from notebookscan.segments import Segment

    for segment in segments:
        data = segment.rng().random((rows, cols))
        yield Segment({"x": data}, state={"i": segment.index},
                      time=segment.index * rows + np.arange(rows))


def plain_model(rows: int, cols: int, segments_: int, seed: int = 0):
    """What a plain scan must do: return the whole recording at once."""
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(seed)
    data = np.concatenate([rng.random((rows, cols)) for _ in range(segments_)])
    return {"x": xr.DataArray(data, dims=("time", "x_index"),
                              coords={"time": np.arange(len(data))})}


def state_model(state_bytes: int, file_bytes: int, segments):
    """Cheap compute, a state of ``state_bytes`` and optionally a simulator file."""
    import numpy as np

    from notebookscan.segments import Segment

    n = max(1, state_bytes // 8)
    state = segments.state
    v = np.zeros(n) if state is None else state["v"]
    for segment in segments:
        v = v + 1.0
        if file_bytes:
            with open(os.path.join(segment.save_dir, "sim.bin"), "wb") as f:
                f.write(segment.rng().bytes(file_bytes))
        yield Segment({"m": np.full(1000, v[0])}, state={"v": v, "step": segment.index},
                      time=segment.index * 1000 + np.arange(1000))


def brian_example_code() -> str:
    """The Brian2 model of docs/segments.md, as the docs print it."""
    import re

    with open(os.path.join(ROOT, "docs", "segments.md"), encoding="utf-8") as fh:
        text = fh.read()
    block = re.search(r"```python\n(.*?)```", text[text.index(BRIAN_MARK):], re.S)
    assert block is not None, "docs/segments.md has no Brian2 example"
    return block.group(1)


def brian_grid_model(rate: float, trial: int, seed: int, segments):
    """The docs' model over a 2x2 grid (``trial`` only changes the point's seed)."""
    from brian_example import brian_model

    return brian_model(rate, seed, segments)


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _import_notebookscan():
    try:
        import notebookscan as ns
    except ImportError:
        sys.path.insert(0, ROOT)
        import notebookscan as ns
    return ns


def child_memory(case: str, segments: int, rows: int, cols: int, workdir: str) -> None:
    ns = _import_notebookscan()
    from notebookscan.segments import SegmentedScan

    store = os.path.join(workdir, "store")
    space = ns.grid(rows=[rows], cols=[cols])
    t0 = time.perf_counter()
    if case == "floor":
        import xarray  # noqa: F401 - the interpreter with everything imported, nothing run
    elif case == "plain":
        ns.Scan(plain_model, space * ns.grid(segments_=[segments]), store).run(
            executor="serial", progress=False)
    else:
        SegmentedScan(recording_model, space, store, segments=segments).run(
            executor="serial", progress=False)
    wl.emit({"seconds": time.perf_counter() - t0})


def child_overhead(state_bytes: int, file_bytes: int, segments: int, workdir: str) -> None:
    ns = _import_notebookscan()
    from notebookscan.segments import SegmentedScan, decode_state, encode_state, iterate
    from notebookscan.store.checkpoints import CheckpointDirectory

    point = {"state_bytes": state_bytes, "file_bytes": file_bytes}
    list(iterate(state_model, point, segments=2))  # warm up imports
    t0 = time.perf_counter()
    outs = iterate(state_model, point, segments=segments)
    for out in outs:
        del out
    bare = (time.perf_counter() - t0) / segments

    store = os.path.join(workdir, "store")
    scan = SegmentedScan(state_model, ns.grid(**{k: [v] for k, v in point.items()}), store,
                         segments=segments)
    t0 = time.perf_counter()
    scan.run(executor="serial", progress=False)
    scanned = (time.perf_counter() - t0) / segments

    import numpy as np

    state = {"v": np.zeros(max(1, state_bytes // 8)), "step": 3}
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        encoded = encode_state(state)
    encode = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        decode_state(encoded)
    decode = (time.perf_counter() - t0) / reps
    directory = CheckpointDirectory(os.path.join(workdir, "ck"), os.path.join(workdir, "q"))
    files = {"sim.bin": os.urandom(file_bytes)} if file_bytes else {}
    t0 = time.perf_counter()
    for count in range(1, reps + 1):
        directory.write("k", 0, count, encoded, files, {})
        directory.prune("k", 0, 1)
    write = (time.perf_counter() - t0) / reps
    wl.emit({"bare_s": bare, "scan_s": scanned, "overhead_s": scanned - bare,
             "encode_s": encode, "decode_s": decode, "checkpoint_write_s": write,
             "state_nc_bytes": len(encoded)})


def child_straight(model: str, case: str, workdir: str) -> None:
    ns = _import_notebookscan()
    from notebookscan.segments import SegmentedScan, iterate

    if model == "brian":
        sys.path.insert(0, workdir)
        with open(os.path.join(workdir, "brian_example.py"), "w") as fh:
            fh.write(brian_example_code())
        import brian_example  # noqa: F401 - Brian2 imported before the clock starts
        from brian2 import second

        fn, grid, duration = brian_grid_model, BRIAN_GRID, BRIAN_SEGMENT
    else:
        from notebookscan.demo_network import lif_network

        fn, grid, duration = lif_network, {**LIF_GRID, **{k: [v] for k, v in
                                                          LIF_POINT.items()}}, LIF_SEGMENT
    space = ns.grid(**grid)
    executor = None
    if case in ("restored", "kept"):
        from notebookscan.executors.futures import process_pool

        # one worker process, started and with the model's imports done before the clock,
        # as the straight run has them: what is timed is the run
        executor = process_pool(1)
        executor.submit(_import_model, model, workdir).result()
        # the client's own imports for writing the store (xarray, netCDF4), as the
        # straight run has its model's: a notebook has them long before it runs a scan
        import netCDF4  # noqa: F401
        import xarray  # noqa: F401

        import notebookscan.store.checkpoints  # noqa: F401
    if case == "loop":
        import gc

        gc.collect()
        gc.freeze()  # as the workers do after their warm-up
    t0 = time.perf_counter()
    if case == "loop":  # Brian2 alone, segmented: 10 x (net.run + net.store), no scan
        from brian_example import build_network

        for point, seed in zip(space, space.seeds(), strict=True):
            net, _, namespace = build_network(point["rate"], seed)
            for index in range(STRAIGHT_SEGMENTS):
                net.run(duration * second, namespace=namespace)
                net.store("segment", filename=os.path.join(workdir, f"net-{index}.brian"))
    elif case == "straight":
        for point, seed in zip(space, space.seeds(), strict=True):
            if model == "brian":
                from brian_example import build_network

                net, _, namespace = build_network(point["rate"], seed)
                net.run(STRAIGHT_SEGMENTS * duration * second, namespace=namespace)
            else:
                for out in iterate(fn, point, segments=STRAIGHT_SEGMENTS, seed=seed,
                                   segment_duration=duration):
                    del out
    else:
        scan = SegmentedScan(fn, space, os.path.join(workdir, "store"),
                             segments=STRAIGHT_SEGMENTS, segment_duration=duration,
                             keep_models=case == "kept")
        progress = scan.run(executor=executor, progress=False).progress
        assert progress.done == len(space), progress
    seconds = time.perf_counter() - t0
    if executor is not None:
        executor.shutdown()
    wl.emit({"seconds": seconds})


def _import_model(model: str, workdir: str) -> None:
    """In the worker: import what the model needs (Brian2, the network module), and the
    state's encoder (netCDF4)."""
    _import_notebookscan()
    import netCDF4  # noqa: F401
    if model == "brian":
        sys.path.insert(0, workdir)
        import brian_example  # noqa: F401
        import numpy as np
        import xarray as xr

        # the model returns DataArrays: xarray's first one imports dask (0.5 s) if installed
        xr.DataArray(np.zeros(1))
    else:
        import notebookscan.demo_network  # noqa: F401


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def _child(args: list[str], log: str, python: str | None = None
           ) -> tuple[dict | None, int, float, str | None]:
    workdir = tempfile.mkdtemp(prefix="bench-seg-", dir=WORK)
    try:
        cmd = [python or sys.executable, os.path.abspath(__file__), "--child", *args, workdir]
        return run_child(cmd, timeout=1800, log=log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure_memory(mb: int, repeats: int, logdir: str) -> dict:
    cols = 1000
    rows = mb * 2**20 // (8 * cols)
    cases = [("floor", 1), ("segmented", 1), ("segmented", 10), ("plain", 10)]
    out = {"segment_mb": mb, "rows": rows, "cols": cols, "cases": []}
    for case, segments in cases:
        peaks, seconds = [], []
        for rep in range(repeats):
            log = os.path.join(logdir, f"memory-{case}-{segments}-{rep}.log")
            result, peak, _, error = _child(["memory", case, str(segments), str(rows),
                                             str(cols)], log)
            if error:
                raise SystemExit(f"[{NAME}] memory case {case}/{segments} failed: {error}")
            peaks.append(peak)
            seconds.append(result["seconds"] if result else float("nan"))
        entry = {"case": case, "segments": segments, "recorded_bytes": 8 * rows * cols *
                 segments if case != "floor" else 0, "peak_rss": int(statistics.median(peaks)),
                 "peaks": peaks, "seconds": statistics.median(seconds)}
        out["cases"].append(entry)
        print(f"[{NAME}] memory {case:10s} {segments:3d} segment(s): recorded "
              f"{entry['recorded_bytes'] / 2**20:7.0f} MiB, peak {entry['peak_rss'] / 2**20:7.0f}"
              f" MiB, {entry['seconds']:.2f} s", flush=True)
    one = next(c for c in out["cases"] if c["case"] == "segmented" and c["segments"] == 1)
    ten = next(c for c in out["cases"] if c["case"] == "segmented" and c["segments"] == 10)
    out["ratio_10_to_1"] = ten["peak_rss"] / one["peak_rss"]
    out["passed"] = out["ratio_10_to_1"] <= MEMORY_LIMIT
    return out


def measure_overhead(segments: int, logdir: str) -> list[dict]:
    cases = [(1024, 0), (2**20, 0), (16 * 2**20, 0), (1024, 2**20)]
    rows = []
    for state_bytes, file_bytes in cases:
        log = os.path.join(logdir, f"overhead-{state_bytes}-{file_bytes}.log")
        result, peak, _, error = _child(["overhead", str(state_bytes), str(file_bytes),
                                         str(segments)], log)
        if error or result is None:
            raise SystemExit(f"[{NAME}] overhead case {state_bytes}/{file_bytes} failed: {error}")
        rows.append({"state_bytes": state_bytes, "file_bytes": file_bytes,
                     "segments": segments, "peak_rss": peak, **result})
        print(f"[{NAME}] overhead state {state_bytes / 2**10:8.0f} KiB file "
              f"{file_bytes / 2**10:6.0f} KiB: {result['overhead_s'] * 1e3:7.2f} ms/segment "
              f"(encode {result['encode_s'] * 1e3:.2f}, decode {result['decode_s'] * 1e3:.2f}, "
              f"checkpoint write {result['checkpoint_write_s'] * 1e3:.2f} ms)", flush=True)
    return rows


STRAIGHT_CASES = (("straight", "straight run (no store)"),
                  ("loop", "Brian2 alone in segments (no scan)"),
                  ("restored", "segmented, restored every segment (before)"),
                  ("kept", "segmented, model kept alive (after)"))


def brian_python(given: str | None) -> str | None:
    """Brian2's venv: --brian-python, $NOTEBOOKSCAN_BRIAN2_PYTHON or .venv-brian2."""
    for python in (given, os.environ.get("NOTEBOOKSCAN_BRIAN2_PYTHON"),
                   os.path.join(ROOT, ".venv-brian2", "bin", "python")):
        if python and os.path.exists(python):
            return python
    return None


def measure_straight(repeats: int, logdir: str, brian: str | None) -> list[dict]:
    rows = []
    models = [("lif", None)] + ([("brian", brian)] if brian else [])
    for model, python in models:
        entry: dict = {"model": model, "points": 4, "segments": STRAIGHT_SEGMENTS}
        for case, _ in STRAIGHT_CASES:
            if case == "loop" and model != "brian":
                continue  # the LIF's straight run already runs segment by segment
            times = []
            for rep in range(repeats):
                log = os.path.join(logdir, f"straight-{model}-{case}-{rep}.log")
                result, _, _, error = _child(["straight", model, case], log, python)
                if error or result is None:
                    raise SystemExit(f"[{NAME}] straight {model}/{case} failed: {error}")
                times.append(result["seconds"])
            entry[case] = statistics.median(times)
            entry[f"{case}_runs"] = times
            print(f"[{NAME}] {model:5s} {case:9s} {entry[case]:7.2f} s", flush=True)
        entry["ratio_before"] = entry["restored"] / entry["straight"]
        entry["ratio_after"] = entry["kept"] / entry["straight"]
        entry["passed"] = entry["ratio_after"] <= STRAIGHT_LIMIT
        rows.append(entry)
    return rows


def straight_table(rows: list[dict], brian_missing: bool) -> list[str]:
    names = {"lif": f"numpy LIF network ({LIF_POINT['n']} neurons, {LIF_SEGMENT} s a segment)",
             "brian": f"Brian2 network of docs/segments.md (numpy codegen, {BRIAN_SEGMENT} s "
                      "a segment)"}
    lines = ["Segmented with a checkpoint after every segment vs the straight run: 2×2 grid "
             f"× {STRAIGHT_SEGMENTS} segments; straight in the client's process, segmented "
             "on a process pool of one worker; a fresh process per case, seconds after the "
             "imports (median of runs):", "",
             "| model | straight | simulator alone in segments | segmented before "
             "(restore every segment) | segmented after (model kept alive) | "
             "before / straight | after / straight |",
             "|:---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        alone = f"{r['loop']:.2f}" if "loop" in r else "–"
        lines.append(f"| {names[r['model']]} | {r['straight']:.2f} | {alone} | "
                     f"{r['restored']:.2f} | {r['kept']:.2f} | {r['ratio_before']:.2f} | "
                     f"{r['ratio_after']:.2f} |")
    verdicts = [f"{r['model']}: {r['ratio_after']:.2f} "
                f"({'within' if r['passed'] else 'NOT within'} the {STRAIGHT_LIMIT:.1f} limit)"
                for r in rows]
    lines += ["", "After / straight: " + "; ".join(verdicts) + "."]
    if brian_missing:
        lines.append("Brian2 was not measured: no Brian2 venv (`make brian2-env`).")
    else:
        lines += ["", "*Simulator alone in segments*: each point built once and run as 10 × "
                  "(`net.run` + `net.store`) in one process with `gc.freeze()` after the "
                  "imports, no scan: Brian2's own cost of running in segments (every "
                  "`net.run` prepares its code objects again and runs a full garbage "
                  "collection), the floor any segmented scan of this network pays."]
    return lines


def table(doc: dict) -> str:
    """The results as a short plain-text / markdown table."""
    mem = doc["memory"]
    lines = [f"Peak memory, one point, {mem['segment_mb']} MiB recorded per segment "
             "(serial executor, median of runs):", "",
             "| case | segments | recorded (MiB) | peak RSS (MiB) | seconds |",
             "|:---|---:|---:|---:|---:|"]
    for c in mem["cases"]:
        lines.append(f"| {c['case']} | {c['segments']} | {c['recorded_bytes'] / 2**20:.0f} | "
                     f"{c['peak_rss'] / 2**20:.0f} | {c['seconds']:.2f} |")
    verdict = "within" if mem["passed"] else "NOT within"
    lines += ["", f"10 segments / 1 segment peak: {mem['ratio_10_to_1']:.3f} ({verdict} the "
              f"{MEMORY_LIMIT:.2f} limit).", "",
              "Checkpoint overhead per segment (SegmentedScan minus the same model run "
              "straight through without a store):", "",
              "| state | file | overhead (ms/segment) | encode (ms) | decode (ms) | "
              "checkpoint write (ms) | state.nc (KiB) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["overhead"]:
        lines.append(
            f"| {_size(r['state_bytes'])} | {_size(r['file_bytes'])} | "
            f"{r['overhead_s'] * 1e3:.2f} | {r['encode_s'] * 1e3:.2f} | "
            f"{r['decode_s'] * 1e3:.2f} | {r['checkpoint_write_s'] * 1e3:.2f} | "
            f"{r['state_nc_bytes'] / 2**10:.0f} |")
    if doc.get("straight"):
        lines += ["", *straight_table(doc["straight"], doc.get("brian_missing", False))]
    if doc.get("note"):
        lines += ["", doc["note"]]
    return "\n".join(lines)


def _size(n: int) -> str:
    if not n:
        return "–"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def render(doc: dict, figdir: str, md_dir: str) -> str:
    """The section of RESULTS.md (for ``report.SECTIONS["segments"]``)."""
    return "## Segmented runs\n\n" + table(doc) + "\n"


def main(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--out", default=None, help="results JSON path")
    parser.add_argument("--brian-python", default=None,
                        help="python of a venv with Brian2 and notebookscan")
    parser.add_argument("--only", choices=["straight"], default=None,
                        help="measure only the straight-vs-segmented comparison")
    parser.add_argument("--note", default="", help="a sentence on the machine's load")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "memory":
            child_memory(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        elif kind == "straight":
            child_straight(rest[0], rest[1], rest[2])
        else:
            child_overhead(int(rest[0]), int(rest[1]), int(rest[2]), rest[3])
        return None
    os.makedirs(WORK, exist_ok=True)
    logdir = os.path.join(WORK, "logs")
    os.makedirs(logdir, exist_ok=True)
    t0 = time.perf_counter()
    out = args.out or (os.path.join(WORK, "..", "results-quick", f"{NAME}.json") if args.quick
                       else os.path.join(HERE, "results", f"{NAME}.json"))
    out = os.path.normpath(out)
    brian = brian_python(args.brian_python)
    straight = measure_straight(1 if args.quick else 3, logdir, brian)
    if args.only == "straight" and os.path.exists(out):
        with open(out) as fh:  # the other measurements as they were
            doc = json.load(fh)
    else:
        doc = {"memory": measure_memory(16 if args.quick else 64, 1 if args.quick else 3,
                                        logdir),
               "overhead": measure_overhead(10 if args.quick else 50, logdir)}
    doc.update({"benchmark": NAME, "quick": args.quick, "machine": machine_info(),
                "peak_rss_method": "ru_maxrss from os.wait4() of each child process",
                "memory_limit_ratio": MEMORY_LIMIT, "straight_limit_ratio": STRAIGHT_LIMIT,
                "straight": straight, "brian_missing": brian is None, "note": args.note,
                "total_seconds": time.perf_counter() - t0})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(table(doc))
    print(f"[{NAME}] wrote {os.path.relpath(out)}", flush=True)
    return out


if __name__ == "__main__":
    main()
