"""The entry point: parse, run the command, turn errors and signals into exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from collections.abc import Sequence

from ..errors import NotebookscanError
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    UsageError,
    describe_os_error,
    show_warning,
)
from .parser import build_parser
from .signals import Signals, signal_words


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
        warnings.showwarning = show_warning
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
            print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            print(f"\n{prog}: {signal_words(signum)}; every point finished so far is in the "
                  "store.", file=sys.stderr)
            return 128 + signum
