"""What every command shares: exit codes, the two command errors, messages to the terminal."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import NotebookscanError
from ..executors.registry import EXECUTOR_NAMES

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

    def __init__(self, argument: str, message: str, *, config: str | None = None):
        # A value read from a config file names that file and key, not a flag never typed.
        where = f"config file {config}, key {argument}" if config else f"argument {argument}"
        super().__init__(f"{where}: {message}")
        self.argument = argument
        self.config = config


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the candidates closest to a mistyped ``word``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def option_name(key: str, origins: Mapping[str, str] | None = None) -> str:
    """How the user gave setting ``key``: ``--key-name``, or ``key (in FILE)`` from a config."""
    if origins and key in origins:
        return f"{key} (in {origins[key]})"
    return "--" + key.replace("_", "-")


class CommandFailed(NotebookscanError):
    """The command could not do its work (exit code 1)."""


def describe_os_error(exc: OSError) -> str:
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


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def echo(*parts: Any) -> None:
    print(*parts, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)



def quote_path(path: str) -> str:
    import shlex

    return shlex.quote(os.path.relpath(path) if not os.path.relpath(path).startswith("..")
                       else path)
