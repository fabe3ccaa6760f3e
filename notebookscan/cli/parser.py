"""The argument parser: every subcommand, its options and examples."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..executors.registry import EXECUTOR_HELP
from ..run.stale import STALE_CHOICES
from .common import EXECUTORS, EXIT_USAGE, PROG, did_you_mean
from .demo import cmd_demo
from .running import cmd_attach, cmd_run, cmd_stop
from .store_commands import cmd_compact, cmd_export, cmd_merge, cmd_status, cmd_verify


class _Parser(argparse.ArgumentParser):
    """argparse with the project's wording: every error ends with where to find help."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        # A stray option after a subcommand is reported by that subcommand, with its usage.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._subcommand(parsed) or self
            parser.error(_unrecognized(extras, parser))
        return parsed

    def _subcommand(self, parsed: argparse.Namespace) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest or "", None) or "")
        return None

    def error(self, message: str) -> NoReturn:
        message = _suggest_choice(message)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n"
                              f"Run `{self.prog} --help` for the options and examples.\n")


def _unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's 'unrecognized arguments' with the nearest known option of ``parser``."""
    options = [o for action in parser._actions for o in action.option_strings
               if o.startswith("--")]
    first = next((e for e in extras if e.startswith("-")), None)
    hint = did_you_mean(first.split("=", 1)[0], options) if first else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


def _suggest_choice(message: str) -> str:
    """A mistyped subcommand or choice: add the nearest valid one."""
    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not match:
        return message
    choices = re.findall(r"'([^']*)'", match.group(2))
    return message + did_you_mean(match.group(1), choices)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _int_at_least(least: int, example: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; e.g. {example}") from None
        if value < least:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be {'0 or more' if least == 0 else f'at least {least}'}")
        return value

    return parse


_whole_number = _int_at_least(0, 0)
_positive_int = _int_at_least(1, 4)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; e.g. 600") \
            from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
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
  Numbers and true/false are read as such; quote a value to keep it text, with the
  quotes inside the shell's: --axis 'id="007"' (the text 007).

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
  Paths in the file (function, store, connection_file) are relative to the current
  directory, not to the file's.

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
exit codes: 0 every point done; 1 some points failed; 2 bad arguments; 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM).
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
    from .. import __version__

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
    p.add_argument("--failures", type=_whole_number, default=10, metavar="N",
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
