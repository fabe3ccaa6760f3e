"""File operations the store does in its own directory, and only there.

Setting a file aside, telling whether a writer still runs, and the compactor's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["exclusive_lock", "pid_alive", "set_aside"]


def set_aside(source: str, directory: str, name: str, reason: str) -> str:
    """Move ``source`` to ``directory/name`` with ``name.reason.txt`` beside it; say where."""
    try:
        os.makedirs(directory, exist_ok=True)
        os.replace(source, os.path.join(directory, name))
        with open(os.path.join(directory, name + ".reason.txt"), "w") as f:
            f.write(reason + "\n")
    except OSError as exc:
        return f"left in place ({exc.strerror})"
    return f"moved to {directory}"


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` of this host runs (a zombie no longer counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): the signal check is all there is
        return True


@contextlib.contextmanager
def exclusive_lock(path: str):
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


