"""The ``notebookscan`` command line: headless scans and store maintenance.

Subcommands: ``run`` (scan a function over a grid of parameters, here or ``--detach``ed),
``attach``/``watch`` and ``stop`` (a detached run), ``status``, ``merge``, ``compact``,
``verify``, ``export`` and ``demo``. ``notebookscan --help`` and
``notebookscan <command> --help`` show examples; ``docs/cli.md`` is the reference.

Exit codes: 0 success; 1 the scan recorded failed points, ``verify`` found corrupt
shards, or the work could not be done (an executor did not start, …); 2 bad arguments
(the message names the argument and how to fix it); 3 the detached run that ``attach``
followed was stopped before every point ran; 130 interrupted (Ctrl-C, SIGINT); 143
terminated (SIGTERM: ``kill``, ``scancel``, a Slurm time limit, ``timeout``).

SIGINT and SIGTERM during ``run`` stop the scan as one Ctrl-C does: points running are
cancelled (they run again next time), every finished point is written to the store, the
engines the command started are stopped, and stderr says so. Further signals while it
stops only say that it is stopping: the final write and the clean-up are never cut.

Heavy modules (numpy, xarray, the store) are imported only by the command that needs
them, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import NotebookscanError
from .executors.registry import EXECUTOR_HELP, EXECUTOR_NAMES
from .stale import STALE_CHOICES

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "EXIT_TERMINATED",
           "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

PROG = "notebookscan"
EXECUTORS = EXECUTOR_NAMES
CONFIG_KEYS = ("function", "store", "axes", "log_axes", "trials", "executor", "engines",
               "profile", "cluster_id", "connection_file", "retry_failed", "stale")
AXIS_SYNTAX = ("write NAME=START:STOP:NUM (NUM evenly spaced values, e.g. k=1:20:20), "
               "NAME=V1,V2,... (e.g. tau=0.005,0.01) or NAME=VALUE (one fixed value)")


class UsageError(NotebookscanError):
    """A bad command-line argument: exit code 2, the message names the argument."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"argument {argument}: {message}")
        self.argument = argument


class CommandFailed(NotebookscanError):
    """The command could not do its work (exit code 1)."""


# ====================================================================== argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse with the project's wording: every error ends with where to find help."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n"
                              f"Run `{self.prog} --help` for the options and examples.\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; e.g. 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; e.g. 600") \
            from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; e.g. 4") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


RUN_EXAMPLES = """\
examples:
  # a 20 x 2 grid, 5 trials each, on local ipyparallel engines (one per core)
  notebookscan run notebookscan.models:firing_rate --store results/rates \\
      --axis k=1:20:20 --axis tau=0.005,0.01 --trials 5

  # a function in a file, log-spaced axis, in a process pool of 4 workers
  notebookscan run model.py:simulate --store results/sim --log-axis dt=1e-4:1e-2:5 \\
      --executor processes --engines 4

  # axes in a file; see what would run without running it
  notebookscan run --config scan.toml --dry-run

  # on a running cluster (`ipcluster start -n 64 --profile=hpc --cluster-id=scan`)
  notebookscan run model.py:simulate --config scan.toml --profile hpc --cluster-id scan

  # engines still queued by Slurm: start with none, let them join (or wait 10 minutes)
  notebookscan run model.py:simulate --config scan.toml --profile hpc --min-engines 0
  notebookscan run model.py:simulate --config scan.toml --profile hpc --engine-timeout 600

  # in the background, outliving this shell; follow it, stop it
  notebookscan run model.py:simulate --config scan.toml --detach
  notebookscan attach results/sim
  notebookscan stop results/sim

axes:
  NAME=START:STOP:NUM   NUM evenly spaced values from START to STOP (both included);
                        with --log-axis, spaced evenly on a log scale
  NAME=V1,V2,...        these values (numbers, true/false, or text)
  NAME=VALUE            one fixed value

config file (TOML; YAML with the same keys if PyYAML is installed):
  function = "model.py:simulate"    # optional, like MODULE:FUNCTION
  store = "results/sim"             # optional, like --store
  trials = 5
  [axes]
  k = "1:20:20"                     # the command-line syntax, or...
  tau = [0.005, 0.01]               # ...a list, or a single value, or...
  [log_axes]
  dt = {start = 1e-4, stop = 1e-2, num = 5}
  Other keys: executor, engines, profile, cluster_id, connection_file, retry_failed,
  stale.
  Command-line options override the file; --axis NAME overrides the file's NAME.

exit codes: 0 every point done (with --detach: the run started); 1 some points failed
(see `notebookscan status`); 2 bad arguments; 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM: kill, scancel, a Slurm time limit). Ctrl-C or SIGTERM stops the scan keeping
every finished point and stops the engines it started; a second one never cuts that
short.
"""

ATTACH_EXAMPLES = """\
examples:
  notebookscan attach results/rates              # the newest detached run you started
  notebookscan watch results/rates --run 3-1a2b3c

Shows the run's progress until it ends. Ctrl-C stops watching, not the run.
exit codes: 0 every point done; 1 some points failed, or the run failed or was killed;
3 the run was stopped before every point ran (run again to resume); 130/143 stopped
watching (the run goes on).
"""

STOP_EXAMPLES = """\
examples:
  notebookscan stop results/rates          # points running now finish first
  notebookscan stop results/rates --now    # cancel them too (they run next time)

Every finished point is kept; `notebookscan run` later resumes with what is left.
"""

STATUS_EXAMPLES = """\
examples:
  notebookscan status results/rates
  notebookscan status results/rates --failures 50
  notebookscan status results/rates --json | python -m json.tool
"""

MERGE_EXAMPLES = """\
examples:
  # bring the results of two machines together
  notebookscan merge laptop/rates cluster/rates results/rates

Merging copies shards; points held by several stores with different values are listed
(the newest done result is the one that is read).
"""

COMPACT_EXAMPLES = """\
examples:
  notebookscan compact results/rates

Safe while scans write to the store: the new shard is in place before the old ones go.
"""

VERIFY_EXAMPLES = """\
examples:
  notebookscan verify results/rates && echo healthy

exit codes: 0 every shard reads; 1 corrupt shards (named in the output).
Nothing is moved; reading the store later sets corrupt shards aside in quarantine/.
"""

EXPORT_EXAMPLES = """\
examples:
  notebookscan export results/rates rates.nc     # the labelled Dataset, all variables
  notebookscan export results/rates rates.csv    # one row per point, scalar variables

The CSV has the parameters, key, the scalar results and the bookkeeping columns
(status, error, seed, timings, host, worker, run); tracebacks and array results are
left out (export to .nc for those).
"""

DEMO_EXAMPLES = """\
examples:
  notebookscan demo --out demo-results                 # local ipyparallel engines
  notebookscan demo --out demo-results --quick --executor processes

Scans notebookscan.models.firing_rate (leaky integrate-and-fire neurons) over the input
strength k, the membrane time constant tau and 5 trials, then plots rate against k.
Running it again computes nothing: every point is already in the store.
"""

MAIN_DESCRIPTION = """\
Parameter scans of numerical simulations into labelled NetCDF stores.

A store is a directory of NetCDF shards; points already in it are never computed again,
so an interrupted `run` resumes where it stopped.
"""

MAIN_EXAMPLES = """\
examples:
  notebookscan demo --out demo-results
  notebookscan run notebookscan.models:firing_rate --store results/rates \\
      --axis k=1:20:20 --axis tau=0.005,0.01 --trials 5
  notebookscan status results/rates
  notebookscan export results/rates rates.csv

Run `notebookscan <command> --help` for each command's options and examples.
exit codes: 0 ok; 1 failed points or corrupt shards; 2 bad arguments; 3 a detached run
was stopped; 130 interrupted; 143 terminated (SIGTERM).
"""


def _add_executor_options(p: argparse.ArgumentParser, *, cluster: bool) -> None:
    group = p.add_argument_group("where the points run")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help=EXECUTOR_HELP)
    group.add_argument("--engines", type=_positive_int, default=None, metavar="N",
                       help="engines or processes to start (default: one per core)")
    if cluster:
        group.add_argument("--profile", default=None, metavar="P",
                           help="connect to a running ipyparallel cluster of this IPython "
                                "profile instead of starting engines")
        group.add_argument("--cluster-id", default=None, metavar="ID",
                           help="the cluster id of that cluster (see `ipcluster list`)")
        group.add_argument("--connection-file", default=None, metavar="F",
                           help="the controller's ipcontroller-*-client.json file")
        group.add_argument("--min-engines", type=_whole_number, default=None, metavar="N",
                           help="with a running cluster: engines to wait for before the scan "
                                "starts (default 1; 0 starts at once, engines join later)")
        group.add_argument("--engine-timeout", type=_positive_float, default=None,
                           metavar="S", help="with a running cluster: seconds to wait for "
                                             "the controller and --min-engines (default 30)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar (default: a bar when stderr is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``notebookscan`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description=MAIN_DESCRIPTION, epilog=MAIN_EXAMPLES,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text + ".",
                              epilog=epilog, formatter_class=_Formatter)

    p = command("run", "scan a function over a grid of parameter values into a store",
                RUN_EXAMPLES)
    p.add_argument("function", nargs="?", metavar="MODULE:FUNCTION",
                   help="the function to scan: a dotted module (mypkg.model:simulate) or a "
                        "Python file (path/model.py:simulate); optional with --config")
    p.add_argument("--store", metavar="DIR", help="the result store directory (created if new)")
    p.add_argument("--axis", action="append", default=[], metavar="NAME=VALUES",
                   help="a parameter axis; repeat for a grid (see 'axes' below)")
    p.add_argument("--log-axis", action="append", default=[], metavar="NAME=START:STOP:NUM",
                   help="an axis of NUM values spaced evenly on a log scale")
    p.add_argument("--trials", type=_positive_int, default=None, metavar="N",
                   help="repeat every point N times (parameter 'trial', its own seed each)")
    p.add_argument("--config", metavar="FILE", help="axes and options from a .toml or .yaml file")
    p.add_argument("--dry-run", action="store_true",
                   help="list the points that would run, run nothing")
    p.add_argument("--retry-failed", action="store_true", default=None,
                   help="also run points that failed in earlier runs")
    p.add_argument("--stale", choices=STALE_CHOICES, default=None,
                   help="stored points computed by other code (the function's source "
                        "changed): reuse them (default, with a note), recompute them, or "
                        "error (stop; then use a new --store)")
    p.add_argument("--detach", action="store_true",
                   help="run in a background process that outlives this shell; prints the "
                        "run id (follow it with `notebookscan attach`, stop it with "
                        "`notebookscan stop`)")
    _add_executor_options(p, cluster=True)
    p.set_defaults(handler=cmd_run)

    for name in ("attach", "watch"):
        p = command(name, "follow a detached run of a store until it ends", ATTACH_EXAMPLES)
        p.add_argument("store", metavar="DIR", help="the store directory")
        p.add_argument("--run", default=None, metavar="ID",
                       help="the run id (default: the newest run you started)")
        p.add_argument("--interval", type=_positive_float, default=2.0, metavar="S",
                       help="seconds between progress lines (default 2)")
        p.set_defaults(handler=cmd_attach)

    p = command("stop", "stop a detached run of a store, keeping every finished point",
                STOP_EXAMPLES)
    p.add_argument("store", metavar="DIR", help="the store directory")
    p.add_argument("--run", default=None, metavar="ID",
                   help="the run id (default: the newest run you started)")
    p.add_argument("--now", action="store_true",
                   help="cancel the points running now too (they run next time)")
    p.add_argument("--no-wait", action="store_true",
                   help="return at once instead of waiting for the run to end")
    p.set_defaults(handler=cmd_stop)

    p = command("status", "summarise a store: points by status, failures, runs, size",
                STATUS_EXAMPLES)
    p.add_argument("store", metavar="DIR", help="the store directory")
    p.add_argument("--failures", type=int, default=10, metavar="N",
                   help="failed points to list with their errors (default 10; 0 for none)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_status)

    p = command("merge", "copy the points of one or more stores into another", MERGE_EXAMPLES)
    p.add_argument("sources", nargs="+", metavar="SRC", help="stores to copy from")
    p.add_argument("dest", metavar="DEST", help="the store to copy into (created if new)")
    p.set_defaults(handler=cmd_merge)

    p = command("compact", "rewrite a store's many small shards into one", COMPACT_EXAMPLES)
    p.add_argument("store", metavar="DIR", help="the store directory")
    p.set_defaults(handler=cmd_compact)

    p = command("verify", "check that every shard of a store can be read", VERIFY_EXAMPLES)
    p.add_argument("store", metavar="DIR", help="the store directory")
    p.set_defaults(handler=cmd_verify)

    p = command("export", "write a store as one NetCDF file or a CSV table", EXPORT_EXAMPLES)
    p.add_argument("store", metavar="DIR", help="the store directory")
    p.add_argument("output", metavar="FILE", help="FILE.nc (NetCDF) or FILE.csv")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(handler=cmd_export)

    p = command("demo", "scan a spiking neuron model on local engines and plot the result",
                DEMO_EXAMPLES)
    p.add_argument("--out", default="demo-results", metavar="DIR",
                   help="where to write store/ and firing_rate.png (default: demo-results)")
    p.add_argument("--quick", action="store_true",
                   help="a small scan (20 points) for a first look or a test")
    _add_executor_options(p, cluster=False)
    p.set_defaults(handler=cmd_demo)
    return parser


# ====================================================================== entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``notebookscan`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit code: 0 ok, 1 failed points / corrupt shards / work not done,
    2 bad arguments, 3 a followed detached run was stopped, 130 interrupted (SIGINT),
    143 terminated (SIGTERM).
    """
    for stream in (sys.stdout, sys.stderr):  # paths that are not UTF-8 print as they are
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{PROG} {args.command}"
    with warnings.catch_warnings(), Signals(prog):
        warnings.showwarning = _show_warning
        try:
            return int(args.handler(args))
        except UsageError as exc:
            print(f"{prog}: error: {exc}\nRun `{prog} --help` for the options and examples.",
                  file=sys.stderr)
            return EXIT_USAGE
        except NotebookscanError as exc:  # CommandFailed and every error of the package
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except BrokenPipeError:  # `notebookscan status ... | head`
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
            return EXIT_OK
        except OSError as exc:  # a read-only store, a full disk: one line, no traceback
            print(f"{prog}: error: {_os_error(exc)}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            print(f"\n{prog}: {_signal_words(signum)}; every point finished so far is in the "
                  "store.", file=sys.stderr)
            return 128 + signum


# ====================================================================== signals


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C (the scan loop stops on it, writing every
    finished point), remembering which signal it was."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _signal_words(signum: int) -> str:
    return ("terminated (SIGTERM)" if signum == signal.SIGTERM
            else f"interrupted ({signal.Signals(signum).name})")


class Signals:
    """SIGINT and SIGTERM for the whole command, handled alike.

    The first signal raises :class:`Interrupted` (a ``KeyboardInterrupt``): the scan
    loop stops now on it and writes every finished point, as on Ctrl-C. Later signals
    raise nothing (the final write and the clean-up of engines must not be cut); they
    only say that the command is stopping. ``signum`` is the first signal received; the
    exit code is 128 + it.
    """

    def __init__(self, prog: str):
        self.prog = prog
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            # once stopping, the process is about to end: more signals must not raise in
            # the clean-up at exit
            signal.signal(signum, self._late if self.signum else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            raise Interrupted(signum)
        self._late(signum, frame)

    def _late(self, signum: int, frame: Any) -> None:
        _note(f"{self.prog}: {_signal_words(signum)} again; still stopping (writing what "
              "finished, stopping the engines), a moment")


def _os_error(exc: OSError) -> str:
    """One line for a failed file operation: the path, the reason, what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = ("this needs a store you can write: run it where you can, or copy the store "
               "first (`notebookscan merge SRC COPY`)")
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that device and run again (everything stored so far is kept)"
    else:
        fix = "check the path and try again"
    return f"{where}{reason}; {fix}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _echo(*parts: Any) -> None:
    print(*parts, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ====================================================================== axes and config


def parse_value(text: str) -> bool | int | float | str:
    """A command-line value: int, float, ``true``/``false`` or text (quotes removed).

    Examples
    --------
    >>> [parse_value(t) for t in ["3", "0.5", "1e-3", "true", "rk4", "'007'"]]
    [3, 0.5, 0.001, True, 'rk4', '007']
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value


def _spaced(name: str, start: Any, stop: Any, num: Any, *, log: bool,
            where: str) -> list[int] | list[float]:
    """NUM values from START to STOP, evenly spaced (on a log scale when ``log``)."""
    import numpy as np

    def number(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise UsageError(where, f"axis {name!r}: {what} {value!r} is not a finite number; "
                                    + AXIS_SYNTAX)
        return value

    start, stop = number(start, "START"), number(stop, "STOP")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise UsageError(where, f"axis {name!r}: NUM {num!r} must be a whole number >= 1 "
                                f"(how many values from {start} to {stop})")
    if num == 1 and start != stop:
        raise UsageError(where, f"axis {name!r}: NUM=1 gives one value, but START={start} and "
                                f"STOP={stop} differ; use NUM >= 2, or NAME={start}")
    if log:
        if start <= 0 or stop <= 0:
            raise UsageError(where, f"axis {name!r}: a log axis needs START and STOP > 0, got "
                                    f"{start} and {stop}")
        return np.geomspace(start, stop, num).tolist()
    values = np.linspace(start, stop, num)
    step = (stop - start) / (num - 1) if num > 1 else 0
    if isinstance(start, int) and isinstance(stop, int) and float(step).is_integer():
        return [int(v) for v in np.rint(values)]
    return values.tolist()


def parse_axis(spec: str, *, log: bool = False, option: str = "--axis") -> tuple[str, Any]:
    """``NAME=...`` from the command line as ``(name, values)`` for :func:`notebookscan.grid`.

    Examples
    --------
    >>> parse_axis("k=1:20:4")
    ('k', [1.0, 7.333333333333333, 13.666666666666666, 20.0])
    >>> parse_axis("k=0:30:4")
    ('k', [0, 10, 20, 30])
    >>> parse_axis("tau=0.005,0.01"), parse_axis("method=rk4")
    (('tau', [0.005, 0.01]), ('method', 'rk4'))
    >>> parse_axis("dt=1e-4:1e-2:3", log=True, option="--log-axis")
    ('dt', [0.0001, 0.001, 0.01])
    """
    name, sep, text = spec.partition("=")
    name = name.strip()
    if not sep or not name or not text.strip():
        raise UsageError(option, f"{spec!r} is not NAME=VALUES; " + AXIS_SYNTAX)
    if not name.isidentifier():
        raise UsageError(option, f"{spec!r}: {name!r} is not a valid parameter name (letters, "
                                 "digits and _, not starting with a digit)")
    return name, _axis_from_text(name, text, log=log, where=option, spec=spec)


def _axis_from_text(name: str, text: str, *, log: bool, where: str, spec: str) -> Any:
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise UsageError(where, f"{spec!r}: a range is START:STOP:NUM with three parts, got "
                                    f"{len(parts)}; " + AXIS_SYNTAX)
        start, stop, num = (parse_value(p) for p in parts)
        return _spaced(name, start, stop, num, log=log, where=where)
    if log:
        raise UsageError(where, f"{spec!r}: a log axis is NAME=START:STOP:NUM (e.g. "
                                f"{name}=1e-3:1e-1:5); give explicit values with --axis")
    if "," in text:
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise UsageError(where, f"{spec!r} has an empty value between commas; "
                                    + AXIS_SYNTAX)
        return [parse_value(item) for item in items]
    return parse_value(text)


def _axis_from_config(name: str, value: Any, *, log: bool, path: str) -> Any:
    table = "log_axes" if log else "axes"
    where = f"--config ({path}, [{table}] {name})"
    if isinstance(value, str):
        return _axis_from_text(name, value, log=log, where=where, spec=f"{name} = {value!r}")
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"start", "stop", "num", "log"})
        if unknown or not {"start", "stop", "num"} <= set(value):
            raise UsageError(where, f"a range table needs start, stop and num (and optionally "
                                    f"log = true), got keys {sorted(value)}")
        return _spaced(name, value["start"], value["stop"], value["num"],
                       log=log or bool(value.get("log", False)), where=where)
    if log:
        raise UsageError(where, "a log axis is a range: \"START:STOP:NUM\" or "
                                "{start = ..., stop = ..., num = ...}")
    if isinstance(value, list):
        if not value:
            raise UsageError(where, "the list of values is empty")
        return value
    return value


@dataclass
class Config:
    """What a ``--config`` file says (all optional)."""

    path: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Any] = field(default_factory=dict)


def load_config(path: str) -> Config:
    """Read a ``.toml`` (or ``.yaml``/``.yml``) scan description; see ``run --help``."""
    where = "--config"
    if not os.path.isfile(path):
        raise UsageError(where, f"{path!r} does not exist (or is not a file); give the path "
                                "of a .toml or .yaml file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise UsageError(where, "reading TOML on Python 3.10 needs tomli: "
                                        "`pip install tomli`") from None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(where, f"{path!r} is not valid TOML: {exc}") from None
    elif ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(where, f"{path!r} is YAML, which needs PyYAML (`pip install "
                                    "pyyaml`); or write the same keys as a .toml file") from None
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise UsageError(where, f"{path!r} is not valid YAML: {exc}") from None
    else:
        raise UsageError(where, f"{path!r}: use a .toml file (or .yaml/.yml with PyYAML "
                                "installed)")
    if not isinstance(data, dict):
        raise UsageError(where, f"{path!r} must hold key = value pairs at the top level")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(where, f"{path!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
                                f"known keys: {', '.join(CONFIG_KEYS)}")
    config = Config(path=path)
    for table, log in (("axes", False), ("log_axes", True)):
        axes = data.pop(table, {})
        if not isinstance(axes, dict):
            raise UsageError(where, f"{path!r}: {table} must be a table of NAME = VALUES")
        for name, value in axes.items():
            if name in config.axes:
                raise UsageError(where, f"{path!r}: axis {name!r} is in both axes and log_axes")
            config.axes[str(name)] = _axis_from_config(str(name), value, log=log, path=path)
    config.values = data
    return config


# ====================================================================== the function


def load_function(spec: str, *, argument: str = "MODULE:FUNCTION") -> Callable[..., Any]:
    """Import ``module:function`` or ``path/to/file.py:function``.

    Modules found only through the current directory, and files, are sent to workers
    by value (cloudpickle), so engines started elsewhere need not find them.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(argument, f"{spec!r} is not MODULE:FUNCTION; write e.g. "
                                   "mypkg.model:simulate or path/to/model.py:simulate")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _import_file(module_part, argument)
        by_value = True
    else:
        module, by_value = _import_dotted(module_part, argument)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise UsageError(argument, f"{module_part!r} has no function {attr!r}; it defines: "
                                       f"{', '.join(names) or 'no public functions'}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(argument, f"{spec!r} is a {type(target).__name__}, not a function")
    if by_value:
        import cloudpickle

        with contextlib.suppress(ValueError):  # already registered
            cloudpickle.register_pickle_by_value(module)
    return target


def _import_file(path: str, argument: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(argument, f"the file {path!r} does not exist; check the path (relative "
                                   f"to {os.getcwd()})")
    name = os.path.splitext(os.path.basename(full))[0]
    if not name.isidentifier():
        raise UsageError(argument, f"{path!r}: the file name must be a valid module name "
                                   "(letters, digits, _)")
    if name in sys.modules:
        name = f"notebookscan_user_{name}"
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise UsageError(argument, f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(full)
    if directory not in sys.path:  # like `python file.py`: the file's siblings import
        sys.path.insert(0, directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(argument, f"importing {path!r} failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
    return module


def _import_dotted(name: str, argument: str) -> tuple[Any, bool]:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(argument, f"{name!r} is neither a dotted module name nor a .py file")
    top = name.split(".")[0]
    cwd = os.getcwd()
    elsewhere = [p for p in sys.path if p not in ("", ".", cwd)]
    installed = (top in sys.builtin_module_names or top in sys.modules
                 or importlib.machinery.PathFinder.find_spec(top, elsewhere) is not None)
    if not installed and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise UsageError(argument, f"no module named {exc.name!r} (looked in {cwd} and the "
                                       "installed packages); check the spelling, or give a "
                                       "file: path/to/model.py:function") from None
        raise UsageError(argument, f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(argument, f"importing {name!r} failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
    return module, not installed


# ====================================================================== executors


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
        from .cluster import connect
        from .errors import ExecutorError

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
        from .executors import process_pool

        executor = process_pool(engines)
        return _Executor(executor, executor.shutdown)
    from .errors import ExecutorError
    from .executors.ipyparallel import local_executor, shutdown_local_executor

    try:
        executor = local_executor(engines)
    except ExecutorError as exc:
        raise CommandFailed(f"{exc}\nOr run with --executor processes.") from exc
    # stopped by the command itself (not only at exit), while its signal handlers hold
    return _Executor(executor, shutdown_local_executor, time.perf_counter() - t0)


CONNECT_KEYS = ("profile", "cluster_id", "connection_file")
DEFAULT_ENGINE_TIMEOUT = 30.0


def _connect_arguments(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arguments of :func:`notebookscan.cluster.connect` the options ask for, or None
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


def _check_executor_options(settings: Mapping[str, Any]) -> None:
    kind = settings.get("executor")
    connecting = [f"--{k.replace('_', '-')}" for k in ("profile", "cluster_id", "connection_file")
                  if settings.get(k) is not None]
    if connecting and kind not in (None, "local"):
        raise UsageError(connecting[0], f"{connecting[0]} connects to a running ipyparallel "
                                        f"cluster; it cannot be combined with --executor {kind}. "
                                        "Drop one of them.")
    for option in ("min_engines", "engine_timeout"):
        if settings.get(option) is not None and not connecting:
            flag = f"--{option.replace('_', '-')}"
            raise UsageError(flag, f"{flag} applies to a running ipyparallel cluster (a Slurm "
                                   "job's engines, say); name it with --profile/--cluster-id or "
                                   "--connection-file. Local engines and processes start here "
                                   "and are waited for anyway.")
    if connecting and settings.get("engines") is not None:
        raise UsageError("--engines", "--engines starts engines on this machine; with "
                                      f"{connecting[0]} the running cluster's engines are used. "
                                      "Drop --engines (start more with `ipcluster engines`).")
    if settings.get("connection_file") is not None and len(connecting) > 1:
        raise UsageError("--connection-file", "give either --connection-file or --profile/"
                                              "--cluster-id, not both")
    path = settings.get("connection_file")
    if path is not None and not os.path.isfile(os.path.expanduser(path)):
        raise UsageError("--connection-file", f"{path!r} does not exist; it is the controller's "
                                              "security/ipcontroller-<cluster-id>-client.json")
    if kind is not None and kind not in EXECUTORS:
        raise UsageError("--executor", f"{kind!r} is not one of {', '.join(EXECUTORS)}")
    engines = settings.get("engines")
    if engines is not None and (isinstance(engines, bool) or not isinstance(engines, int)
                                or engines < 1):
        raise UsageError("--engines", f"{engines!r} must be a whole number >= 1")
    if kind == "serial" and engines is not None:
        _note("note: --engines is ignored with --executor serial (one point at a time)")


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# ====================================================================== run


def cmd_run(args: argparse.Namespace) -> int:
    """``notebookscan run``."""
    config = load_config(args.config) if args.config else Config()
    settings = dict(config.values)
    for key in ("function", "store", "trials", "executor", "engines", "profile", "cluster_id",
                "connection_file", "retry_failed", "stale", "min_engines", "engine_timeout"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if not settings.get("function"):
        raise UsageError("MODULE:FUNCTION", "no function to scan; give MODULE:FUNCTION (e.g. "
                                            "notebookscan.models:firing_rate) or function = "
                                            "\"...\" in --config")
    if not settings.get("store"):
        raise UsageError("--store", "no store given; add --store DIR (a new or existing store "
                                    "directory) or store = \"...\" in --config")
    _check_executor_options(settings)
    trials = settings.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise UsageError("--trials", f"{trials!r} must be a whole number >= 1")

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

    function = load_function(str(settings["function"]))
    store = str(settings["store"])
    if os.path.exists(store) and not os.path.isdir(store):
        raise UsageError("--store", f"{store!r} is a file; give a directory")
    scan = _make_scan(function, axes, trials, store)
    stale = settings.get("stale")
    if stale is not None and stale not in STALE_CHOICES:
        raise UsageError("--stale", f"{stale!r} is not one of {', '.join(STALE_CHOICES)}")
    if args.detach and not args.dry_run:
        return _detach(scan, settings, retry_failed=bool(settings.get("retry_failed")),
                       stale=stale)
    return _execute(scan, args, settings, retry_failed=bool(settings.get("retry_failed")),
                    stale=stale,
                    dry_run=args.dry_run)


def _make_scan(function: Callable[..., Any], axes: Mapping[str, Any], trials: int | None,
               store: str) -> Any:
    from . import Scan, grid
    from . import trials as trials_space
    from .errors import NotebookscanError, SpaceError

    try:
        space = grid(**axes) if axes else None
        if trials:
            space = trials_space(trials) if space is None else space * trials_space(trials)
        return Scan(function, space, store)
    except SpaceError as exc:
        raise UsageError("--axis", str(exc)) from None
    except NotebookscanError as exc:  # the store holds other parameters, or is unreadable
        raise UsageError("--store", str(exc)) from None


def _execute(scan: Any, args: argparse.Namespace, settings: Mapping[str, Any], *,
             retry_failed: bool, dry_run: bool, stale: str | None = None) -> int:
    """Run what is missing from ``scan``'s store and report; the exit code."""
    from .errors import NotebookscanError

    planned = scan.plan(retry_failed=retry_failed, stale=stale)
    to_run = len(planned.to_run)
    store = scan.store.path
    if dry_run:
        _echo(f"{to_run} of {planned.total} point(s) would run into {store}; "
              f"{planned.stored} already stored"
              + (f" ({planned.failed_before} failed before)" if planned.failed_before else ""))
        if to_run:
            import pandas as pd

            with pd.option_context("display.width", 120, "display.max_columns", 20):
                _echo(planned.to_run.drop(columns="key").head(20).to_string(index=False))
            if to_run > 20:
                _echo(f"… and {to_run - 20} more")
        return EXIT_OK
    if planned.stale:
        _report_stale(planned.stale, stale, dry_run=dry_run)
    if planned.failed_before and not retry_failed:
        _note(f"note: {planned.failed_before} point(s) failed in earlier runs and are not run "
              "again; add --retry-failed to run them")
    t0 = time.perf_counter()
    if to_run == 0:
        _echo(f"nothing to compute: all {planned.total} point(s) are already in {store}")
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
        _echo(f"computed {progress.done + progress.failed} point(s) in {took:.1f} s{extra}: "
              f"{progress.done} done, {progress.failed} failed; "
              f"{planned.stored} already stored before")
        _echo(f"store: {store}")
        if interrupted is not None:
            left = progress.total - progress.done - progress.failed
            _note(f"{PROG} run: {_signal_words(interrupted.signum)}: stopped the scan; the "
                  f"{progress.done + progress.failed} point(s) finished in this run are in the "
                  f"store; the other {left} run when the same command runs again. The engines "
                  "it started are stopped.")
            return 128 + interrupted.signum
    counts = scan.status()
    if counts["failed"]:
        _echo(f"{counts['failed']} of {sum(counts.values())} point(s) are failed; see "
              f"`notebookscan status {_quote(store)}`, fix the cause and rerun with "
              "--retry-failed")
        return EXIT_FAILED
    return EXIT_OK


def _detach(scan: Any, settings: Mapping[str, Any], *, retry_failed: bool,
            stale: str | None) -> int:
    """``run --detach``: start the scan in a background process; say how to follow it."""
    from .errors import NotebookscanError

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
    store = _quote(scan.store.path)
    _echo(f"started detached run {run.run_id} into {scan.store.path}")
    _echo(f"  follow it:  {PROG} attach {store}")
    _echo(f"  stop it:    {PROG} stop {store}   (--now cancels the points running)")
    _echo(f"  in Python:  notebookscan.attach({scan.store.path!r})")
    return EXIT_OK


# ====================================================================== detached runs


def _attach(args: argparse.Namespace) -> Any:
    from .detached import attach

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
    _echo(f"run {run.run_id} of {os.path.abspath(args.store)}")
    last = ""
    try:
        while True:
            ended = run.done()
            line = str(run.progress)
            if line != last or ended:
                _echo(line)
                last = line
            if ended:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        _note(f"\n{PROG} {args.command}: {_signal_words(signum)}: stopped watching; the run "
              f"goes on (`{PROG} stop {_quote(args.store)}` stops it)")
        return 128 + signum
    try:
        progress = run.wait()
    except NotebookscanError as exc:
        raise CommandFailed(f"{exc}") from None
    if progress.failed:
        _echo(f"{progress.failed} point(s) failed; see `{PROG} status {_quote(args.store)}`")
        return EXIT_FAILED
    if progress.stopped:
        _echo(f"the run was stopped before every point ran; `{PROG} run` with the same "
              "arguments resumes it")
        return EXIT_STOPPED
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """``notebookscan stop``: ask a detached run to stop; wait until it has."""
    run = _attach(args)
    if run.done():
        _echo(f"run {run.run_id} has already ended: {run.progress}")
        return EXIT_OK
    how = "cancelling the points running now" if args.now else "letting running points finish"
    _echo(f"stopping run {run.run_id} ({how}); every finished point is kept")
    progress = run.stop(now=args.now, wait=not args.no_wait)
    _echo(str(progress) if run.done() else "asked; the run stops shortly (`notebookscan "
                                           f"attach {_quote(args.store)}` follows it)")
    return EXIT_OK


def _report_stale(report: Any, stale: str | None, *, dry_run: bool) -> None:
    """Say how many stored points other code computed, and what this run does with them;
    ``--stale=error`` stops here (exit 1)."""
    if stale == "error" and not dry_run:
        raise CommandFailed(f"{report.message()} Nothing was run: rerun with --stale=reuse "
                            "to keep them, --stale=recompute to compute them again, or give "
                            "a new --store.")
    if stale == "recompute":
        _note(f"note: {report.message()} They run again (--stale=recompute).")
    else:
        _note(f"note: {report.message()} They are reused; add --stale=recompute to compute "
              "them again, or give a new --store.")


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(os.path.relpath(path) if not os.path.relpath(path).startswith("..")
                       else path)


# ====================================================================== store commands


def _existing_store(path: str, argument: str = "DIR") -> Any:
    from .store import Store

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

    from .store.table import combine_shards

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
        from .store.dataset import grid_counts, store_records

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
    from .store import Store
    from .store.schema import META_FILE

    store = Store(path)
    if store.shard_files() or not os.path.isfile(os.path.join(path, META_FILE)):
        return None
    return store


def _report_started(store: Any, as_json: bool, live: list[dict[str, Any]] = ()) -> int:
    """What ``status`` says of a store whose first shard is not written yet."""
    meta = store.metadata()
    if as_json:
        _echo(json.dumps({"store": store.path, "parameters": meta.get("names", []),
                          "layout": meta.get("layout"), "created": meta.get("created", ""),
                          "points": 0, "done": 0, "failed": 0, "started": True,
                          "live_runs": list(live)}, indent=2))
        return EXIT_OK
    _echo(f"store:      {store.path}")
    _echo(f"parameters: {', '.join(meta.get('names', [])) or '-'}")
    _echo(f"points:     none stored yet (store created {meta.get('created') or '?'}): a run "
          "is starting and has not written its first results; look again in a moment")
    return EXIT_OK


def _echo_live(live: list[dict[str, Any]]) -> None:
    """The live runs, first: what a running scan is doing now."""
    if live:
        stopped = sum(run["state"] == "stopped" for run in live)
        _echo(f"live runs ({len(live) - stopped}"
              + (f"; {stopped} stopped" if stopped else "") + "):")
        for run in live:
            _echo(_live_run_line(run))


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
    from .errors import StoreError
    from .store.leases import runner_states

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
        from .store import Store

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
        _echo(json.dumps(summary, indent=2, default=str))
        return EXIT_OK
    s = summary
    layout = s["layout"]
    dims = " × ".join(layout["dims"]) if layout["dims"] else "-"
    _echo(f"store:      {s['store']}")
    _echo(f"parameters: {', '.join(s['parameters']) or '-'} ({layout['kind']} layout: {dims})")
    counts = f"{s['done']} done, {s['failed']} failed"
    if s["missing"] is not None:
        counts += f", {s['missing']} missing"
        if s["excluded"]:
            counts += f", {s['excluded']} excluded (no run's space holds them)"
        counts += f" (of the {s['grid_size']}-cell grid spanned by the stored values)"
    elif s["points"] and layout["kind"] != "grid":
        counts += " (missing points: unknown for a points-layout store; `run --dry-run` tells)"
    _echo(f"points:     {s['points']} stored: {counts}")
    _echo(f"on disk:    {_human_bytes(s['size_bytes'])} in {s['shards']} shard(s)"
          + (f"; {len(s['quarantined'])} corrupt shard(s) in quarantine/: "
             + ", ".join(s["quarantined"]) if s["quarantined"] else ""))
    if s["segments"] is not None:
        seg = s["segments"]
        _echo(f"segments:   {seg['recordings']} segment recording(s) in "
              f"{seg['recording_shards']} shard(s), {_human_bytes(seg['recording_bytes'])}; "
              f"{seg['checkpoints']} checkpoint(s)")
    if s["temporary"]["files"]:
        _echo(f"leftovers:  {s['temporary']['files']} temporary file(s) of writers that are "
              f"gone, {_human_bytes(s['temporary']['bytes'])}; the next run, compact or verify "
              "removes them")
    _echo_live(live)
    if s["runs"]:
        _echo(f"runs ({len(s['runs'])}):")
        for run in s["runs"]:
            git = ""
            if run.get("git_commit"):
                git = f", git {run['git_commit'][:10]}{' (dirty)' if run.get('git_dirty') else ''}"
            function = f"{run.get('module') or '?'}:{run.get('function') or '?'}"
            version = run["packages"].get("notebookscan", "?")
            _echo(f"  {run['run']}  {run.get('created') or '?'}  {run.get('user') or '?'}@"
                  f"{run.get('host') or '?'}  {run['points']} point(s)"
                  + (f", {run['failed']} failed" if run["failed"] else ""))
            _echo(f"      {function} (source sha256 {str(run.get('source_sha256'))[:12]}){git}; "
                  f"{run.get('executor') or '?'}; python {run.get('python') or '?'}, "
                  f"notebookscan {version}")
    if s["failed"]:
        shown = len(s["failures"])
        _echo(f"failures ({s['failed']}" + (f", first {shown}" if shown < s["failed"] else "")
              + "):")
        for failure in s["failures"]:
            point = ", ".join(f"{k}={_format_scalar(v)}" for k, v in failure["point"].items())
            error = failure["error"].strip().splitlines()
            _echo(f"  {point}: {error[-1] if error else '(no message)'}")
        _echo("  (rerun the scan with --retry-failed once the cause is fixed)")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    """``notebookscan merge``."""
    from .errors import StoreError
    from .store import merge

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
    _echo(f"{report} into {dest}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    """``notebookscan compact``."""
    from .store import compact

    store = _existing_store(args.store)
    before = store.size_bytes()
    report = compact(store.path)
    _echo(str(report) + (f" ({_human_bytes(before)} → {_human_bytes(store.size_bytes())})"
                         if not report.skipped else ""))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``notebookscan verify``."""
    from .store import verify

    store = _existing_store(args.store)
    report = verify(store.path)
    quarantined = _quarantined(store)
    _echo(str(report))
    if quarantined:
        _echo(f"already in quarantine/ (set aside by an earlier read): {', '.join(quarantined)}")
    if report.corrupt:
        _echo(f"{len(report.corrupt)} corrupt shard(s) in {store.shards_dir}. Their points run "
              "again with the next scan; move the files away (reading the store moves them "
              "to quarantine/ for you).")
        return EXIT_FAILED
    _echo("healthy" + (" (shards in quarantine/ are no longer part of the store)"
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
        from .store.dataset import to_ragged

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
            from .store.recordings import open_recordings

            beside = f"{os.path.splitext(output)[0]}.recordings.nc"
            recordings = to_ragged(open_recordings(store.path))
            recordings.to_netcdf(f"{beside}.tmp-{os.getpid()}")
            os.replace(f"{beside}.tmp-{os.getpid()}", beside)
            what += f"; recordings in {beside}"
    else:
        frame = export_table(store)
        frame.to_csv(output, index=False)
        what = f"{len(frame)} row(s) × {len(frame.columns)} column(s)"
    _echo(f"wrote {output}: {what}, {_human_bytes(os.path.getsize(output))}, in "
          f"{time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def export_table(store: Any) -> Any:
    """One row per stored point: parameters, key, scalar results and bookkeeping."""
    from .store.schema import KEY, TRACEBACK, Layout

    names = tuple(store.metadata().get("names", ()))
    ds = store.dataset(lazy=False, layout=Layout("points", names))
    scalar = [name for name, var in ds.data_vars.items()
              if var.dims == ("point",) and name != TRACEBACK]
    frame = ds[scalar].to_dataframe().reset_index(drop=True)
    first = [c for c in (*names, KEY) if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


# ====================================================================== demo


def demo_space(quick: bool) -> Any:
    """The demo's points: the quick scan is a subset of the full one (same store)."""
    from . import grid, trials

    if quick:
        return grid(k=[2, 6, 10, 14, 18], tau=[0.005, 0.01]) * trials(2)
    return grid(k=list(range(1, 21)), tau=[0.005, 0.01, 0.02]) * trials(5)


def cmd_demo(args: argparse.Namespace) -> int:
    """``notebookscan demo``."""
    from . import Scan
    from .errors import NotebookscanError
    from .models import firing_rate

    settings = {"executor": args.executor, "engines": args.engines}
    _check_executor_options(settings)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError("--out", f"{args.out!r} is a file; give a directory")
    os.makedirs(out, exist_ok=True)
    store = os.path.join(out, "store")
    t0 = time.perf_counter()
    try:
        scan = Scan(firing_rate, demo_space(args.quick), store)
    except NotebookscanError as exc:
        raise UsageError("--out", f"{exc} (choose a new --out directory)") from None
    _echo(f"scanning notebookscan.models.firing_rate over {scan.space!r}")
    code = _execute(scan, args, settings, retry_failed=False, dry_run=False)
    ds = scan.results()
    png = os.path.join(out, "firing_rate.png")
    plot_rates(ds, png)
    _echo(f"plot:  {png}")
    _echo(f"total: {time.perf_counter() - t0:.1f} s. Open the results in Python with "
          f"notebookscan.open_store({store!r})")
    return code


def plot_rates(ds: Any, path: str) -> None:
    """Save rate against k as a PNG: mean ± standard error over trials, one line per tau.

    Uses :func:`notebookscan.plotting.plot_result`, like the notebooks do.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    try:
        from .plotting import plot_result
    except ImportError:
        fig = _plot_rates_fallback(ds)
    else:
        fig = plot_result(ds, "rate", x="k", hue="tau", over="trial", logx=False,
                          title="leaky integrate-and-fire neurons: firing rate")
        ax = fig.axes[0]
        ax.set_xlabel("input strength k")
        ax.set_ylabel("firing rate (Hz), mean ± s.e.m. over trials")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)


def _plot_rates_fallback(ds: Any) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    rate = ds["rate"]
    count = rate.notnull().sum("trial")
    mean, sem = rate.mean("trial"), rate.std("trial", ddof=1) / count ** 0.5
    for tau in ds["tau"].values:
        ax.errorbar(ds["k"].values, mean.sel(tau=tau).values, yerr=sem.sel(tau=tau).values,
                    marker="o", ms=3, capsize=2, label=f"tau={float(tau):g}")
    ax.set_xlabel("input strength k")
    ax.set_ylabel("firing rate (Hz), mean ± s.e.m. over trials")
    ax.set_title("leaky integrate-and-fire neurons: firing rate", fontsize="medium")
    ax.legend()
    return fig


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
