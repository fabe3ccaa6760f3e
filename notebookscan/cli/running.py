"""``run``, ``attach``/``watch`` and ``stop``: executors, scans here or detached."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NotebookscanError
from ..run.stale import STALE_CHOICES
from .common import (
    EXECUTORS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    PROG,
    CommandFailed,
    UsageError,
    did_you_mean,
    echo,
    note,
    option_name,
    quote_path,
)
from .inputs import Config, load_config, load_function, parse_axis
from .signals import Interrupted, signal_words


@dataclass
class _Executor:
    """What to pass as ``executor=`` and how to clean up afterwards."""

    spec: Any
    close: Callable[[], None] | None = None
    startup: float = 0.0


def _make_executor(args: argparse.Namespace, settings: Mapping[str, Any]) -> _Executor:
    """Start (or connect to) what the options ask for. Called only when points will run."""
    kind = settings.get("executor") or "local"
    engines = settings.get("engines")
    t0 = time.perf_counter()
    connect_to = _connect_arguments(settings)
    if connect_to is not None:
        from ..errors import ExecutorError
        from ..executors.cluster import connect

        try:
            executor = connect(**connect_to)
        except ExecutorError as exc:
            if "engine(s) registered within" in str(exc):  # the cluster is there, engines not
                raise CommandFailed(_cli_wording(str(exc), connect_to["timeout"])) from exc
            given = "/".join(f"--{k.replace('_', '-')}" for k in CONNECT_KEYS
                             if connect_to.get(k) is not None)
            raise UsageError(given, f"cannot connect to that ipyparallel cluster: "
                                    f"{_cli_wording(str(exc), connect_to['timeout'])}") from exc
        except Exception as exc:
            given = "/".join(f"--{k.replace('_', '-')}" for k in CONNECT_KEYS
                             if connect_to.get(k) is not None)
            raise UsageError(given, f"cannot connect to that ipyparallel cluster: {exc}") from exc
        return _Executor(executor, executor.shutdown, time.perf_counter() - t0)
    if kind == "serial":
        return _Executor("serial")
    if kind == "processes":
        from ..executors import process_pool

        executor = process_pool(engines)
        return _Executor(executor, executor.shutdown)
    from ..errors import ExecutorError
    from ..executors.local_cluster import local_executor, shutdown_local_executor

    try:
        executor = local_executor(engines)
    except ExecutorError as exc:
        raise CommandFailed(f"{exc}\nOr run with --executor processes.") from exc
    # stopped by the command itself (not only at exit), while its signal handlers hold
    return _Executor(executor, shutdown_local_executor, time.perf_counter() - t0)


CONNECT_KEYS = ("profile", "cluster_id", "connection_file")
DEFAULT_ENGINE_TIMEOUT = 30.0


def _connect_arguments(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arguments of :func:`notebookscan.executors.cluster.connect` the options ask for, or None
    (no running cluster named)."""
    if all(settings.get(k) is None for k in CONNECT_KEYS):
        return None
    arguments = {k: settings.get(k) for k in CONNECT_KEYS}
    arguments["timeout"] = settings.get("engine_timeout") or DEFAULT_ENGINE_TIMEOUT
    if settings.get("min_engines") is not None:
        arguments["min_engines"] = settings["min_engines"]
    return arguments


def _cli_wording(message: str, timeout: float) -> str:
    """An executor's message with the command-line flags in place of the arguments."""
    message = message.replace("pass min_engines=0", "pass --min-engines 0")
    message = message.replace("min_engines=", "--min-engines ")
    message = message.replace("raise timeout", "raise --engine-timeout")
    if "--engine-timeout" not in message and "registered within" in message:
        message += f" Or wait longer: --engine-timeout SECONDS (now {timeout:g})."
    return message


def setting_error(key: str, message: str, origins: Mapping[str, str] | None = None) -> UsageError:
    """A bad value of setting ``key``, blamed on the flag or on the config file that gave it."""
    if origins and key in origins:
        return UsageError(key, message, config=origins[key])
    return UsageError(option_name(key), message)


def check_executor_options(settings: Mapping[str, Any],
                           origins: Mapping[str, str] | None = None) -> None:
    """Refuse contradictory or bad executor settings; ``origins`` maps keys read from a config
    file to that file, so that the message names the file and key instead of a flag."""
    def name(key: str) -> str:
        return option_name(key, origins)

    kind = settings.get("executor")
    connecting = [k for k in ("profile", "cluster_id", "connection_file")
                  if settings.get(k) is not None]
    if connecting and kind not in (None, "local"):
        raise setting_error(connecting[0], f"{name(connecting[0])} connects to a running "
                                           "ipyparallel cluster; it cannot be combined with "
                                           f"{name('executor')} {kind}. Drop one of them.",
                            origins)
    for option in ("min_engines", "engine_timeout"):
        if settings.get(option) is not None and not connecting:
            raise setting_error(option, f"{name(option)} applies to a running ipyparallel "
                                        "cluster (a Slurm job's engines, say); name it with "
                                        "--profile/--cluster-id or --connection-file. Local "
                                        "engines and processes start here and are waited for "
                                        "anyway.", origins)
    if connecting and settings.get("engines") is not None:
        raise setting_error("engines", f"{name('engines')} starts engines on this machine; with "
                                       f"{name(connecting[0])} the running cluster's engines "
                                       f"are used. Drop {name('engines')} (start more with "
                                       "`ipcluster engines`).", origins)
    if settings.get("connection_file") is not None and len(connecting) > 1:
        raise setting_error("connection_file", "give either --connection-file or --profile/"
                                               "--cluster-id, not both", origins)
    path = settings.get("connection_file")
    if path is not None and not os.path.isfile(os.path.expanduser(str(path))):
        raise setting_error("connection_file", f"{path!r} does not exist; it is the "
                                               "controller's security/ipcontroller-<cluster-id>-"
                                               "client.json", origins)
    if kind is not None and kind not in EXECUTORS:
        raise setting_error("executor", f"{kind!r} is not one of {', '.join(EXECUTORS)}"
                                        f"{did_you_mean(kind, EXECUTORS)}", origins)
    engines = settings.get("engines")
    if engines is not None and (isinstance(engines, bool) or not isinstance(engines, int)
                                or engines < 1):
        raise setting_error("engines", f"{engines!r} must be a whole number >= 1 (in a config "
                                       "file without quotes, e.g. engines = 4)", origins)
    if kind == "serial" and engines is not None:
        note(f"note: {name('engines')} is ignored with --executor serial (one point at a time)")


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# ====================================================================== run


def cmd_run(args: argparse.Namespace) -> int:
    """``notebookscan run``."""
    config = load_config(args.config) if args.config else Config()
    settings = dict(config.values)
    origins = dict.fromkeys(settings, config.path)  # which settings the config file gave
    for key in ("function", "store", "trials", "executor", "engines", "profile", "cluster_id",
                "connection_file", "retry_failed", "stale", "min_engines", "engine_timeout"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
            origins.pop(key, None)
    if not settings.get("function"):
        raise UsageError("MODULE:FUNCTION", "no function to scan; give MODULE:FUNCTION (e.g. "
                                            "notebookscan.models:firing_rate) or function = "
                                            "\"...\" in --config")
    if not settings.get("store"):
        raise UsageError("--store", "no store given; add --store DIR (a new or existing store "
                                    "directory) or store = \"...\" in --config")
    check_executor_options(settings, origins)
    trials = settings.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise setting_error("trials", f"{trials!r} must be a whole number >= 1 (in a config "
                                      "file without quotes, e.g. trials = 5)", origins)

    axes = dict(config.axes)
    seen: set[str] = set()
    for option, specs in (("--axis", args.axis), ("--log-axis", args.log_axis)):
        for spec in specs:
            name, values = parse_axis(spec, log=option == "--log-axis", option=option)
            if name in seen:
                raise UsageError(option, f"axis {name!r} is given twice; give it once")
            seen.add(name)
            axes[name] = values
    if not axes and not trials:
        raise UsageError("--axis", "no parameters to scan; add --axis NAME=VALUES (e.g. "
                                   "--axis k=1:20:20) or [axes] in --config")

    for key in ("function", "store"):
        if not isinstance(settings[key], str):
            raise setting_error(key, f"{settings[key]!r} must be text (in a config file in "
                                     f"quotes, e.g. {key} = \"...\")", origins)
    try:
        function = load_function(settings["function"])
    except UsageError as exc:
        if "function" not in origins:
            raise
        raise setting_error("function", str(exc).split(": ", 1)[1], origins) from None
    store = settings["store"]
    if os.path.exists(store) and not os.path.isdir(store):
        raise setting_error("store", f"{store!r} is a file; give a directory", origins)
    stale = settings.get("stale")
    if stale is not None and stale not in STALE_CHOICES:
        raise setting_error("stale", f"{stale!r} is not one of {', '.join(STALE_CHOICES)}"
                                     f"{did_you_mean(str(stale), STALE_CHOICES)}", origins)
    retry = settings.get("retry_failed")
    if retry is not None and not isinstance(retry, bool):
        raise setting_error("retry_failed", f"{retry!r} must be true or false (without "
                                            "quotes)", origins)
    scan = _make_scan(function, axes, trials, store)
    if args.detach and not args.dry_run:
        return _detach(scan, settings, retry_failed=bool(settings.get("retry_failed")),
                       stale=stale)
    return execute(scan, args, settings, retry_failed=bool(settings.get("retry_failed")),
                    stale=stale,
                    dry_run=args.dry_run)


def _make_scan(function: Callable[..., Any], axes: Mapping[str, Any], trials: int | None,
               store: str) -> Any:
    from .. import Scan, grid
    from .. import trials as trials_space
    from ..errors import NotebookscanError, SpaceError

    try:
        space = grid(**axes) if axes else None
        if trials:
            space = trials_space(trials) if space is None else space * trials_space(trials)
        return Scan(function, space, store)
    except SpaceError as exc:
        raise UsageError("--axis", cli_space_wording(str(exc))) from None
    except NotebookscanError as exc:  # the store holds other parameters, or is unreadable
        raise UsageError("--store", cli_space_wording(str(exc))) from None


_SPACE_TO_CLI = (  # Python advice in the space's messages, and the same advice as options
    (r"space \* grid\((\w+)=\.\.\.\)", r"--axis \1=VALUES"),
    (r"remove '(\w+)' from the space", r"remove --axis \1"),
    (r"\b(?:grid|zip_)\(\): axis '(\w+)'", r"--axis \1"),
    (r"\bgrid\((\w+)=", r"--axis \1="),
)


def cli_space_wording(message: str) -> str:
    """A space or scan message with its Python advice (``space * grid(x=...)``) as the
    command-line options that do the same (``--axis x=VALUES``)."""
    import re

    for pattern, replacement in _SPACE_TO_CLI:
        message = re.sub(pattern, replacement, message)
    return message


def execute(scan: Any, args: argparse.Namespace, settings: Mapping[str, Any], *,
             retry_failed: bool, dry_run: bool, stale: str | None = None) -> int:
    """Run what is missing from ``scan``'s store and report; the exit code."""
    from ..errors import NotebookscanError

    planned = scan.plan(retry_failed=retry_failed, stale=stale)
    to_run = len(planned.to_run)
    store = scan.store.path
    if dry_run:
        echo(f"{to_run} of {planned.total} point(s) would run into {store}; "
              f"{planned.stored} already stored"
              + (f" ({planned.failed_before} failed before)" if planned.failed_before else ""))
        if to_run:
            import pandas as pd

            with pd.option_context("display.width", 120, "display.max_columns", 20):
                echo(planned.to_run.drop(columns="key").head(20).to_string(index=False))
            if to_run > 20:
                echo(f"… and {to_run - 20} more")
        return EXIT_OK
    if planned.stale:
        _report_stale(planned.stale, stale, dry_run=dry_run)
    if planned.failed_before and not retry_failed:
        note(f"note: {planned.failed_before} point(s) failed in earlier runs and are not run "
              "again; add --retry-failed to run them")
    t0 = time.perf_counter()
    if to_run == 0:
        echo(f"nothing to compute: all {planned.total} point(s) are already in {store}")
    else:
        executor = _make_executor(args, settings)
        interrupted: Interrupted | None = None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*failed in earlier runs")
                scan.run(executor.spec, retry_failed=retry_failed, stale=stale or "reuse",
                         progress=_show_progress(args), wait=True)
        except Interrupted as exc:
            if scan.progress is None:  # before the loop started: nothing ran
                raise
            interrupted = exc
        except NotebookscanError as exc:
            raise CommandFailed(str(exc)) from exc
        finally:
            if executor.close is not None:
                executor.close()
        progress = scan.progress
        took = time.perf_counter() - t0
        extra = (f" (of which {executor.startup:.1f} s starting/connecting engines)"
                 if executor.startup >= 0.1 else "")
        echo(f"computed {progress.done + progress.failed} point(s) in {took:.1f} s{extra}: "
              f"{progress.done} done, {progress.failed} failed; "
              f"{planned.stored} already stored before")
        echo(f"store: {store}")
        if interrupted is not None:
            left = progress.total - progress.done - progress.failed
            note(f"{PROG} run: {signal_words(interrupted.signum)}: stopped the scan; the "
                  f"{progress.done + progress.failed} point(s) finished in this run are in the "
                  f"store; the other {left} run when the same command runs again. The engines "
                  "it started are stopped.")
            return 128 + interrupted.signum
    counts = scan.status()
    if counts["failed"]:
        echo(f"{counts['failed']} of {sum(counts.values())} point(s) are failed; see "
              f"`notebookscan status {quote_path(store)}`, fix the cause and rerun with "
              "--retry-failed")
        return EXIT_FAILED
    return EXIT_OK


def _detach(scan: Any, settings: Mapping[str, Any], *, retry_failed: bool,
            stale: str | None) -> int:
    """``run --detach``: start the scan in a background process; say how to follow it."""
    from ..errors import NotebookscanError

    kind = settings.get("executor") or "local"
    spec: Any = _connect_arguments(settings) or (None if kind == "local" else kind)
    if settings.get("engines") is not None:
        # the runner creates its own engines or processes; this is how many it makes
        os.environ["NOTEBOOKSCAN_WORKERS"] = str(settings["engines"])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*failed in earlier runs")
            run = scan.run(spec, detach=True, retry_failed=retry_failed, stale=stale or "reuse")
    except NotebookscanError as exc:
        raise CommandFailed(str(exc)) from exc
    store = quote_path(scan.store.path)
    echo(f"started detached run {run.run_id} into {scan.store.path}")
    echo(f"  follow it:  {PROG} attach {store}")
    echo(f"  stop it:    {PROG} stop {store}   (--now cancels the points running)")
    echo(f"  in Python:  notebookscan.attach({scan.store.path!r})")
    return EXIT_OK


# ====================================================================== detached runs


def _attach(args: argparse.Namespace) -> Any:
    from ..run.detached import attach

    if not os.path.isdir(args.store):
        raise UsageError("DIR", f"{args.store!r} is not a directory; give the store a detached "
                                "run writes to")
    try:
        return attach(args.store, args.run)
    except NotebookscanError as exc:
        raise UsageError("--run" if args.run else "DIR", str(exc)) from None


def cmd_attach(args: argparse.Namespace) -> int:
    """``notebookscan attach`` / ``watch``: follow a detached run until it ends."""
    run = _attach(args)
    echo(f"run {run.run_id} of {os.path.abspath(args.store)}")
    last = ""
    try:
        while True:
            ended = run.done()
            line = str(run.progress)
            if line != last or ended:
                echo(line)
                last = line
            if ended:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        note(f"\n{PROG} {args.command}: {signal_words(signum)}: stopped watching; the run "
              f"goes on (`{PROG} stop {quote_path(args.store)}` stops it)")
        return 128 + signum
    try:
        progress = run.wait()
    except NotebookscanError as exc:
        raise CommandFailed(f"{exc}") from None
    if progress.failed:
        echo(f"{progress.failed} point(s) failed; see `{PROG} status {quote_path(args.store)}`")
        return EXIT_FAILED
    if progress.stopped:
        echo(f"the run was stopped before every point ran; `{PROG} run` with the same "
              "arguments resumes it")
        return EXIT_STOPPED
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """``notebookscan stop``: ask a detached run to stop; wait until it has."""
    run = _attach(args)
    if run.done():
        echo(f"run {run.run_id} has already ended: {run.progress}")
        return EXIT_OK
    how = "cancelling the points running now" if args.now else "letting running points finish"
    echo(f"stopping run {run.run_id} ({how}); every finished point is kept")
    progress = run.stop(now=args.now, wait=not args.no_wait)
    echo(str(progress) if run.done() else "asked; the run stops shortly (`notebookscan "
                                           f"attach {quote_path(args.store)}` follows it)")
    return EXIT_OK


def _report_stale(report: Any, stale: str | None, *, dry_run: bool) -> None:
    """Say how many stored points other code computed, and what this run does with them;
    ``--stale=error`` stops here (exit 1)."""
    if stale == "error" and not dry_run:
        raise CommandFailed(f"{report.message()} Nothing was run: rerun with --stale=reuse "
                            "to keep them, --stale=recompute to compute them again, or give "
                            "a new --store.")
    if stale == "recompute":
        note(f"note: {report.message()} They run again (--stale=recompute).")
    else:
        note(f"note: {report.message()} They are reused; add --stale=recompute to compute "
              "them again, or give a new --store.")
