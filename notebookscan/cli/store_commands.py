"""``status``, ``merge``, ``compact``, ``verify`` and ``export``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from typing import Any

from .common import EXIT_FAILED, EXIT_OK, UsageError, echo


def _existing_store(path: str, argument: str = "DIR") -> Any:
    from ..store import Store

    if not os.path.exists(path):
        raise UsageError(argument, f"{path!r} does not exist; give the directory of a store "
                                   "(a run creates one with --store DIR)")
    store = Store(path)
    if not store.exists:
        raise UsageError(argument, f"{path!r} is not a notebookscan store (it has no shards/ "
                                   "directory); check the path")
    return store


def _human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def _point_label(table: Any, i: int) -> str:
    return ", ".join(f"{name}={_format_scalar(table.params[name][i])}" for name in table.names)


def _format_scalar(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def store_summary(store: Any, failures: int = 10) -> dict[str, Any]:
    """Counts, failures, runs and size of a store, as JSON-able data."""
    import numpy as np

    from ..store.table import combine_shards

    meta = store.metadata()
    names = list(meta.get("names", []))
    layout = store.layout()
    light = [*names, "status", "error", "run", "finished"]
    shards = store._read_all(None, light)  # parameters and bookkeeping only, not results
    table = combine_shards(shards, names or None)
    status = table.bookkeeping.get("status", np.array([], dtype=object))
    done = int(np.sum(status == "done"))
    failed = len(status) - done
    summary: dict[str, Any] = {
        "store": store.path, "parameters": list(table.names),
        "layout": {"kind": layout.kind, "dims": list(layout.dims)},
        "created": meta.get("created", ""), "points": len(status), "done": done,
        "failed": failed, "missing": None, "grid_size": None,
        "shards": len(store.shard_files()), "size_bytes": store.size_bytes(),
        "quarantined": _quarantined(store),
        "temporary": _leftovers(store),
    }
    summary["excluded"] = None
    summary["segments"] = _segment_parts(store)
    if layout.kind == "grid" and layout.dims and len(status):
        from ..store.dataset import grid_counts, store_records

        # the cells open_store shows: the grid spanned by the stored values, empty ones
        # missing when a run's space holds them and excluded when none does
        counts = grid_counts(table.params, layout.dims, store_records(store, table.runs))
        summary["grid_size"] = counts["cells"]
        summary["missing"] = counts["missing"]
        summary["excluded"] = counts["excluded"]
    errors = table.bookkeeping.get("error", np.array([""] * len(status), dtype=object))
    failed_rows = np.flatnonzero(status != "done")
    summary["failures"] = [
        {"point": {n: _json_scalar(table.params[n][i]) for n in table.names},
         "error": str(errors[i])}
        for i in failed_rows[: max(failures, 0)]
    ]
    run_ids = table.bookkeeping.get("run", np.array([], dtype=object))
    finished = table.bookkeeping.get("finished", np.array([]))
    runs = []
    for run_id, record in sorted(table.runs.items(), key=lambda kv: kv[1].get("created", "")):
        mine = run_ids == run_id
        ends = finished[mine] if len(finished) else np.array([])
        runs.append({
            "run": run_id, "points": int(np.sum(mine)),
            "failed": int(np.sum(mine & (status != "done"))),
            "last_finished": (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(
                float(np.nanmax(ends)))) if len(ends) and np.isfinite(ends).any() else ""),
            **{k: record.get(k) for k in ("created", "user", "host", "executor", "function",
                                          "module", "source_sha256", "git_commit", "git_dirty",
                                          "python")},
            "packages": record.get("packages", {}),
        })
    summary["runs"] = runs
    return summary


def _json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _leftovers(store: Any) -> dict[str, int]:
    """Temporary files of writers that are gone: how many, how many bytes."""
    count = size = 0
    for path in store.leftovers():
        with contextlib.suppress(OSError):
            size += os.lstat(path).st_size
            count += 1
    return {"files": count, "bytes": size}


def _quarantined(store: Any) -> list[str]:
    try:
        names = os.listdir(store.quarantine_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".nc"))


def _started_store(path: str) -> Any:
    """A store a run has prepared (``notebookscan.json``) but written no shard to yet, or
    None."""
    from ..store import Store
    from ..store.schema import META_FILE

    store = Store(path)
    if store.shard_files() or not os.path.isfile(os.path.join(path, META_FILE)):
        return None
    return store


def _report_started(store: Any, as_json: bool, live: list[dict[str, Any]] = ()) -> int:
    """What ``status`` says of a store whose first shard is not written yet."""
    meta = store.metadata()
    if as_json:
        echo(json.dumps({"store": store.path, "parameters": meta.get("names", []),
                          "layout": meta.get("layout"), "created": meta.get("created", ""),
                          "points": 0, "done": 0, "failed": 0, "started": True,
                          "live_runs": list(live)}, indent=2))
        return EXIT_OK
    echo(f"store:      {store.path}")
    echo(f"parameters: {', '.join(meta.get('names', [])) or '-'}")
    echo(f"points:     none stored yet (store created {meta.get('created') or '?'}): a run "
          "is starting and has not written its first results; look again in a moment")
    return EXIT_OK


def _echo_live(live: list[dict[str, Any]]) -> None:
    """The live runs, first: what a running scan is doing now."""
    if live:
        stopped = sum(run["state"] == "stopped" for run in live)
        echo(f"live runs ({len(live) - stopped}"
              + (f"; {stopped} stopped" if stopped else "") + "):")
        for run in live:
            echo(_live_run_line(run))


def _segment_parts(store: Any) -> dict[str, Any] | None:
    """A segmented store's recordings and checkpoints (None for a plain store)."""
    recordings = store.recordings
    if recordings is None:
        return None
    checkpoints = store.checkpoints
    count = 0
    points = checkpoints.keys()  # a directory per point
    for key in points:
        count += sum(len(checkpoints.counts(key, link)) for link in checkpoints.links(key))
    return {"recordings": len(recordings.index().done_keys),
            "recording_shards": len(recordings.shard_files()),
            "recording_bytes": recordings.size_bytes(), "checkpoints": count}


def _live_runs(path: str) -> list[dict[str, Any]]:
    """The runs working on a store now, from their heartbeat records (see
    :mod:`notebookscan.store.leases`): each one's progress, workers and ETA, or that it
    stopped (its record is then removed)."""
    from ..errors import StoreError
    from ..store.leases import runner_states

    if not os.path.isdir(path):
        return []
    try:
        states = runner_states(path)
    except (StoreError, OSError):
        return []  # a leases/ that is not a directory: no live run can be told
    runs = []
    for state in states:
        record = state.record
        run: dict[str, Any] = {
            "runner": state.runner, "run": record.get("run", ""),
            "state": (record.get("state", "running") if state.alive else "stopped"),
            "host": record.get("host", ""), "user": record.get("user", ""),
            "pid": record.get("pid"), "silent_seconds": round(state.silent_for, 1)}
        for name in ("done", "failed", "running", "total", "skipped", "workers", "rate",
                     "held_elsewhere"):
            value = record.get(name)  # data written by another process: numbers only
            finite = type(value) in (int, float) and math.isfinite(value)
            run[name] = value if finite else None
        left = (run["total"] or 0) - (run["done"] or 0) - (run["failed"] or 0)
        rate = run["rate"] or 0.0
        run["eta_seconds"] = round(left / rate, 1) if rate > 0 and left >= 0 else None
        runs.append(run)
    return runs


def _live_run_line(run: dict[str, Any]) -> str:
    who = f"{run['user'] or '?'}@{run['host'] or '?'} pid {run['pid']}"
    if run["state"] == "stopped":
        return (f"  {run['run'] or '?'} ({who}): stopped (no heartbeat for "
                f"{run['silent_seconds']:.0f} s); its record and leases are removed, its "
                "points not stored run again with the next run")
    if run["state"] == "starting":
        return f"  {run['run'] or '?'} ({who}): starting"
    eta = (f", ETA {_format_seconds(run['eta_seconds'])}" if run["eta_seconds"] is not None
           else "")
    waits = (f", waiting for {run['held_elsewhere']} point(s) other runs compute"
             if run["held_elsewhere"] else "")
    return (f"  {run['run'] or '?'} ({who}): running, {run['done']} done, {run['failed']} "
            f"failed, {run['running']} running of {run['total']}; {run['workers']} "
            f"worker(s), {run['rate'] or 0:.3g} points/s{eta}{waits}")


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_status(args: argparse.Namespace) -> int:
    """``notebookscan status``."""
    live = _live_runs(args.store)
    started = _started_store(args.store) if os.path.isdir(args.store) else None
    if started is None and any(run["state"] != "stopped" for run in live):
        from ..store import Store

        if not Store(args.store).shard_files():
            started = Store(args.store)  # a run started: its record came before any shard
    if started is not None:
        code = _report_started(started, args.json, live)
        if not args.json:
            _echo_live(live)
        return code
    store = _existing_store(args.store)
    summary = store_summary(store, args.failures)
    summary["live_runs"] = live
    if args.json:
        echo(json.dumps(summary, indent=2, default=str))
        return EXIT_OK
    s = summary
    layout = s["layout"]
    dims = " × ".join(layout["dims"]) if layout["dims"] else "-"
    echo(f"store:      {s['store']}")
    echo(f"parameters: {', '.join(s['parameters']) or '-'} ({layout['kind']} layout: {dims})")
    counts = f"{s['done']} done, {s['failed']} failed"
    if s["missing"] is not None:
        counts += f", {s['missing']} missing"
        if s["excluded"]:
            counts += f", {s['excluded']} excluded (no run's space holds them)"
        counts += f" (of the {s['grid_size']}-cell grid spanned by the stored values)"
    elif s["points"] and layout["kind"] != "grid":
        counts += " (missing points: unknown for a points-layout store; `run --dry-run` tells)"
    echo(f"points:     {s['points']} stored: {counts}")
    echo(f"on disk:    {_human_bytes(s['size_bytes'])} in {s['shards']} shard(s)"
          + (f"; {len(s['quarantined'])} corrupt shard(s) in quarantine/: "
             + ", ".join(s["quarantined"]) if s["quarantined"] else ""))
    if s["segments"] is not None:
        seg = s["segments"]
        echo(f"segments:   {seg['recordings']} segment recording(s) in "
              f"{seg['recording_shards']} shard(s), {_human_bytes(seg['recording_bytes'])}; "
              f"{seg['checkpoints']} checkpoint(s)")
    if s["temporary"]["files"]:
        echo(f"leftovers:  {s['temporary']['files']} temporary file(s) of writers that are "
              f"gone, {_human_bytes(s['temporary']['bytes'])}; the next run, compact or verify "
              "removes them")
    _echo_live(live)
    if s["runs"]:
        echo(f"runs ({len(s['runs'])}):")
        for run in s["runs"]:
            git = ""
            if run.get("git_commit"):
                git = f", git {run['git_commit'][:10]}{' (dirty)' if run.get('git_dirty') else ''}"
            function = f"{run.get('module') or '?'}:{run.get('function') or '?'}"
            version = run["packages"].get("notebookscan", "?")
            echo(f"  {run['run']}  {run.get('created') or '?'}  {run.get('user') or '?'}@"
                  f"{run.get('host') or '?'}  {run['points']} point(s)"
                  + (f", {run['failed']} failed" if run["failed"] else ""))
            echo(f"      {function} (source sha256 {str(run.get('source_sha256'))[:12]}){git}; "
                  f"{run.get('executor') or '?'}; python {run.get('python') or '?'}, "
                  f"notebookscan {version}")
    if s["failed"]:
        shown = len(s["failures"])
        echo(f"failures ({s['failed']}" + (f", first {shown}" if shown < s["failed"] else "")
              + "):")
        for failure in s["failures"]:
            point = ", ".join(f"{k}={_format_scalar(v)}" for k, v in failure["point"].items())
            error = failure["error"].strip().splitlines()
            echo(f"  {point}: {error[-1] if error else '(no message)'}")
        echo("  (rerun the scan with --retry-failed once the cause is fixed)")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    """``notebookscan merge``."""
    from ..errors import StoreError
    from ..store import merge

    dest = os.path.abspath(args.dest)
    for source in args.sources:
        _existing_store(source, "SRC")
        if os.path.abspath(source) == dest:
            raise UsageError("DEST", f"{args.dest!r} is also a source; merge into another store")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UsageError("DEST", f"{args.dest!r} is a file; give a store directory")
    try:
        report = merge(args.sources, dest)
    except StoreError as exc:
        raise UsageError("DEST", str(exc)) from None
    echo(f"{report} into {dest}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    """``notebookscan compact``."""
    from ..store import compact

    store = _existing_store(args.store)
    before = store.size_bytes()
    report = compact(store.path)
    echo(str(report) + (f" ({_human_bytes(before)} → {_human_bytes(store.size_bytes())})"
                         if not report.skipped else ""))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``notebookscan verify``."""
    from ..store import verify

    store = _existing_store(args.store)
    report = verify(store.path)
    quarantined = _quarantined(store)
    echo(str(report))
    if quarantined:
        echo(f"already in quarantine/ (set aside by an earlier read): {', '.join(quarantined)}")
    if report.corrupt:
        echo(f"{len(report.corrupt)} corrupt shard(s) in {store.shards_dir}. Their points run "
              "again with the next scan; move the files away (reading the store moves them "
              "to quarantine/ for you).")
        return EXIT_FAILED
    echo("healthy" + (" (shards in quarantine/ are no longer part of the store)"
                       if quarantined else ""))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``notebookscan export``."""
    store = _existing_store(args.store)
    output = args.output
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".nc", ".csv"):
        raise UsageError("FILE", f"{output!r}: the file name must end in .nc (NetCDF) or .csv")
    if os.path.exists(output) and not args.force:
        raise UsageError("FILE", f"{output!r} exists; add --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError("FILE", f"the directory {parent!r} does not exist; create it first")
    t0 = time.perf_counter()
    if ext == ".nc":
        from ..store.varying import to_ragged

        # results of very different lengths go out as CF ragged arrays, not padded
        ds = to_ragged(store.dataset(lazy=False))
        tmp = f"{output}.tmp-{os.getpid()}"
        try:
            ds.to_netcdf(tmp)
            os.replace(tmp, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        what = f"{len(ds.data_vars)} variable(s) over {dict(ds.sizes)}"
        if store.segmented:  # a segmented store's recordings are part of it: beside it
            from ..store.recordings import open_recordings

            beside = f"{os.path.splitext(output)[0]}.recordings.nc"
            recordings = to_ragged(open_recordings(store.path))
            recordings.to_netcdf(f"{beside}.tmp-{os.getpid()}")
            os.replace(f"{beside}.tmp-{os.getpid()}", beside)
            what += f"; recordings in {beside}"
    else:
        frame = export_table(store)
        frame.to_csv(output, index=False)
        what = f"{len(frame)} row(s) × {len(frame.columns)} column(s)"
    echo(f"wrote {output}: {what}, {_human_bytes(os.path.getsize(output))}, in "
          f"{time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def export_table(store: Any) -> Any:
    """One row per stored point: parameters, key, scalar results and bookkeeping."""
    from ..store.schema import KEY, TRACEBACK, Layout

    names = tuple(store.metadata().get("names", ()))
    ds = store.dataset(lazy=False, layout=Layout("points", names))
    scalar = [name for name, var in ds.data_vars.items()
              if var.dims == ("point",) and name != TRACEBACK]
    frame = ds[scalar].to_dataframe().reset_index(drop=True)
    first = [c for c in (*names, KEY) if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
