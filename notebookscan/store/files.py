"""File operations the store does in its own directory, and only there.

Setting a file aside, telling whether a writer still runs, the compactor's lock, and
opening what the store reads without being led elsewhere.

Rules every function here keeps (a store's directory may be writable by others):

* Nothing is written, moved or deleted through a symbolic link: directories are opened
  with ``O_NOFOLLOW`` and files created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative
  to a directory descriptor (``dir_fd``), then renamed into place. A rename or unlink
  acts on the directory entry, never on what a link points to.
* Only regular files are read, opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with
  ``fstat`` before a byte is read: a FIFO, a device or a directory named like a store
  file is refused at once instead of blocking.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import uuid
from collections.abc import Iterator
from typing import Any

from ..errors import StoreError, StoreFormatError

__all__ = [
    "ForeignFile",
    "check_own_directory",
    "copy_into",
    "dead_temporaries",
    "entry_problem",
    "exclusive_lock",
    "json_nesting_problem",
    "open_regular",
    "parse_json",
    "pid_alive",
    "probe_writable",
    "read_json",
    "set_aside",
]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | getattr(os, "O_CLOEXEC", 0))
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
JSON_MAX_DEPTH = 64  # nesting a store's JSON may have (ours is 3 deep)
JSON_MAX_BYTES = 16 * 2**20  # metadata or provenance text larger than this is refused


class ForeignFile(StoreError, OSError):
    """A store path that is not a regular file (a link, FIFO, device or directory).

    Also an ``OSError`` (with ``errno`` and ``filename``), as opening it would raise.
    """


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def entry_problem(entry: os.DirEntry) -> str | None:
    """Why a directory entry cannot be a store file (None for a regular file).

    Uses the file type the directory listing gives (no extra system call on Linux).
    """
    try:
        if entry.is_file(follow_symlinks=False):
            return None
        return f"{_kind(entry.stat(follow_symlinks=False).st_mode)}, not a regular file"
    except FileNotFoundError:
        return None  # gone meanwhile: the next listing drops it


def open_regular(path: str) -> int:
    """A read-only descriptor of the regular file ``path``; never follows a link or blocks.

    Raises :class:`ForeignFile` (an ``OSError``) for anything but a regular file.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symbolic link
            raise ForeignFile(errno.ELOOP, "a symbolic link, not a regular file", path) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ForeignFile(errno.EINVAL, f"{_kind(mode)}, not a regular file", path)
    return fd


def check_own_directory(path: str, what: str) -> None:
    """Raise :class:`StoreError` when ``path`` exists and is not a real directory."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISDIR(mode):
        raise StoreError(
            f"{path} is {_kind(mode)}, not a directory: the store's {what} must be a real "
            "directory inside the store, never a link elsewhere. Move it away (the store "
            "never writes through links) and try again.")


def open_dir(path: str, create: bool) -> int:
    """A descriptor of the directory ``path`` (its last part must not be a link)."""
    if create:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            check_own_directory(path, os.path.basename(path) + "/")
        raise


def _unique_name(dir_fd: int, name: str) -> str:
    """``name``, or ``name`` with a random part when the directory has it already."""
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{uuid.uuid4().hex[:8]}.{ext}" if dot else f"{name}.{uuid.uuid4().hex[:8]}"


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def new_file_as(dir_fd: int, name: str, tmp: str, fill: Any, *, sync: bool) -> None:
    """Create ``tmp`` (never an existing entry or a link), let ``fill(fd)`` write it,
    fsync it if ``sync``, and rename it to ``name``: a directory entry is replaced (a
    planted link included), never a link's target. ``tmp`` is removed on failure."""
    fd = os.open(tmp, _CREATE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        try:
            fill(fd)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def write_new(dir_fd: int, name: str, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` as ``name`` in the directory ``dir_fd``: a new file, renamed into place.

    The rename replaces a directory entry (a planted link included), never a link's target.
    """
    new_file_as(dir_fd, name, f".tmp-{uuid.uuid4().hex}",
                 lambda fd: write_all(fd, data), sync=sync)


def set_aside(source: str, directory: str, name: str, reason: str) -> str:
    """Move ``source`` to ``directory/name`` with ``name.reason.txt`` beside it; say where.

    Neither ``directory`` nor the reason file is followed when it is a link: a link
    planted as ``directory`` raises :class:`StoreError` naming it, and a planted
    ``name.reason.txt`` link is replaced, its target untouched. A file already set
    aside under ``name`` is kept (the new one gets a random part in its name).
    """
    src_fd = dst_fd = -1
    try:
        src_fd = open_dir(os.path.dirname(source), create=False)
        dst_fd = open_dir(directory, create=True)
        name = _unique_name(dst_fd, name)
        os.rename(os.path.basename(source), name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        write_new(dst_fd, name + ".reason.txt", (reason + "\n").encode("utf-8", "replace"))
    except OSError as exc:
        return f"left in place ({exc.strerror or exc})"
    finally:
        for fd in (src_fd, dst_fd):
            if fd >= 0:
                os.close(fd)
    return f"moved to {directory}"


def copy_into(origin: str, directory: str, name: str) -> bool:
    """Copy the regular file ``origin`` to ``directory/name`` durably; False if it exists.

    The bytes are written to a new temporary file, fsynced, renamed into place, and the
    directory fsynced, so the copy is whole and on disk when this returns.
    """
    src = open_regular(origin)
    dir_fd = -1
    try:
        dir_fd = open_dir(directory, create=False)
        try:
            os.lstat(name, dir_fd=dir_fd)
            return False
        except FileNotFoundError:
            pass
        def fill(dst: int) -> None:
            while chunk := os.read(src, 2**22):
                write_all(dst, chunk)

        new_file_as(dir_fd, name, f".tmp-merge-{writer_tag()}.{uuid.uuid4().hex}", fill,
                     sync=True)
        os.fsync(dir_fd)
        return True
    finally:
        os.close(src)
        if dir_fd >= 0:
            os.close(dir_fd)


def read_json(path: str, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """Parse the regular file ``path`` as JSON, in bounded time and memory.

    Raises ``FileNotFoundError`` when absent, :class:`ForeignFile` for a link, FIFO or
    directory, ``ValueError`` for text that is not JSON (a :class:`StoreFormatError` when
    too large or too deeply nested).
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise StoreFormatError(f"it holds {size} bytes, more than the {max_bytes} allowed")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(size + 1)  # not max_bytes: read() allocates what it is asked
            if len(data) > size:  # it grew meanwhile
                data += f.read(max_bytes + 1 - len(data))
    finally:
        os.close(fd)
    return parse_json(data.decode("utf-8"), max_bytes)


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_nesting_problem(text: str, max_bytes: int = JSON_MAX_BYTES,
                         max_depth: int = JSON_MAX_DEPTH) -> str | None:
    """Why ``text`` is too large or nested too deeply to parse, or None.

    Python's JSON parser recurses once per level: ten thousand ``[`` raise
    ``RecursionError``. Counted with numpy, outside strings, before any parsing.
    """
    import numpy as np

    if len(text) > max_bytes:
        return f"JSON text of {len(text)} characters, more than the {max_bytes} allowed"
    if "[" not in text and "{" not in text:
        return None
    codes = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    steps = (np.isin(codes, (91, 123)).astype(np.int64)
             - np.isin(codes, (93, 125)).astype(np.int64))
    deepest = int(np.cumsum(steps).max()) if len(steps) else 0
    if deepest > max_depth:
        return f"JSON nested {deepest} levels deep, more than the {max_depth} allowed"
    return None


def parse_json(text: str, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """``json.loads`` that refuses text too large or nested too deeply (``ValueError``)."""
    problem = json_nesting_problem(text, max_bytes)
    if problem:
        raise StoreFormatError(problem)
    return json.loads(text)


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


def name_part(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_+-]", "-", part) or "x"


def writer_tag() -> str:
    """``host.pid`` of this process, as temporary names carry it (see :func:`dead_temporaries`)."""
    return f"{name_part(socket.gethostname())}.{os.getpid()}"


def _temporary_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of the writer of a temporary file, or None when its name has none.

    Shard temporaries are ``.tmp-[plain-]user.host.pid.time.random.nc``, merge copies
    ``.tmp-merge-host.pid.random``, metadata ``.tmp-meta.host.pid.random.json``.
    """
    rest = name[len(".tmp-"):]
    for prefix in ("plain-", "merge-", "probe-"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            if prefix != "plain-":
                rest = "user." + rest
    parts = rest.split(".")
    if len(parts) >= 3 and parts[2].isdigit():
        return parts[1], int(parts[2])
    return None


def dead_temporaries(directory: str, *, unnamed_age: float = 24 * 3600) -> list[str]:
    """Temporary files (``.tmp-*``) in ``directory`` whose writer is gone.

    A writer of this host is gone when its process no longer runs. Temporaries of
    other hosts (whose processes cannot be seen from here) and those whose name carries
    no writer (older versions) count once untouched for ``unnamed_age`` seconds: no
    writer leaves a file it writes untouched that long.
    """
    import time

    host = name_part(socket.gethostname())
    out = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if not entry.name.startswith(".tmp-"):
            continue
        writer = _temporary_writer(entry.name)
        if writer is None or writer[0] != host:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > unnamed_age:
                    out.append(entry.name)
        elif not pid_alive(writer[1]):
            out.append(entry.name)
    return out


def remove_entries(directory: str, names: list[str]) -> int:
    """Unlink ``names`` from ``directory`` (entries only: links are not followed)."""
    removed = 0
    try:
        dir_fd = open_dir(directory, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    try:
        for name in names:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
    finally:
        os.close(dir_fd)
    return removed


def probe_writable(directory: str) -> None:
    """Raise ``OSError`` unless a file can be created (and removed) in ``directory``."""
    dir_fd = open_dir(directory, create=False)
    try:
        name = f".tmp-probe-{writer_tag()}.{uuid.uuid4().hex}"
        os.close(os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd))
        os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def exclusive_lock(path: str, wait: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created, never followed); yields whether held.

    ``wait``: seconds to keep trying while another process holds it (0: try once).
    A file system without locks (``ENOLCK``) yields False at once.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise StoreError(f"{path} is a symbolic link; the store's lock file must be a "
                             "regular file inside the store. Remove the link.") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file; remove it (it is the store's "
                             "lock file)")
        if not _flock(fd, wait):
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _flock(fd: int, wait: float) -> bool:
    """Take an exclusive flock on ``fd``, trying for up to ``wait`` seconds."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                return False
        time.sleep(0.005)
