"""Where each number came from: code, packages, machine, time.

Collected once per run (not per point) and stored in every shard the run writes.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import inspect
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

__all__ = ["collect", "function_identity", "git_state"]

IDENTITY_ATTR = "__notebookscan_identity__"  # kept on the function (see function_identity)

PACKAGES = ("notebookscan", "numpy", "xarray", "netCDF4", "scipy", "ipyparallel", "cloudpickle")


def _version(package: str) -> str:
    """The version of ``package``: of the imported module when it is imported (the code
    that runs, and ~50x faster to read than the installed metadata)."""
    version = getattr(sys.modules.get(package), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def git_state(directory: str | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the git work tree holding ``directory`` (the caller's cwd)."""
    directory = directory or os.getcwd()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        root = git("rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": dirty, "git_root": root}


def function_identity(fn: Callable[..., Any]) -> dict[str, str]:
    """Name, module and a hash of the source of the scanned function.

    The first answer is kept on the function: a function pickled by value into another
    process (a detached runner, an engine) has no source file there, and must keep the
    identity it had where it was written.
    """
    target = inspect.unwrap(fn)
    known = getattr(target, IDENTITY_ATTR, None)
    if isinstance(known, dict):
        return dict(known)
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        source = ""
    code = getattr(target, "__code__", None)
    if not source and code is not None:
        source = repr(code.co_code)
    identity = {
        "function": getattr(target, "__qualname__", repr(target)),
        "module": getattr(target, "__module__", "") or "",
        "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
    }
    with contextlib.suppress(AttributeError, TypeError):  # builtins take no attributes
        setattr(target, IDENTITY_ATTR, dict(identity))
    return identity


def collect(fn: Callable[..., Any], *, executor: str = "", space: Any = None) -> dict[str, Any]:
    """Everything worth knowing later about how a run was made (JSON-able)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = ""
    record: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "user": user,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "executor": executor,
        **function_identity(fn),
        **git_state(),
    }
    if space is not None and hasattr(space, "describe"):
        record["space"] = space.describe()
    return record


def run_id(record: dict[str, Any]) -> str:
    """A short id for a run's provenance record (stored per point as ``run``)."""
    text = repr(sorted((k, repr(v)) for k, v in record.items())) + str(time.time_ns())
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
