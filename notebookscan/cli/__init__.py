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

from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
)
from .main import main

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "EXIT_TERMINATED",
           "EXIT_USAGE", "CommandFailed", "UsageError", "main"]
