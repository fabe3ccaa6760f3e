"""Detached scans: the scan loop in a background process that outlives the notebook.

``scan.run(detach=True)`` starts ``python -m notebookscan.run.detached`` in a new session.
Closing the notebook, restarting the kernel or losing the ssh connection does not stop
it. Any process of the same user can then attach to it from the store path alone:
``ns.attach("results/rates")`` gives the same handle as ``scan.run()`` — ``progress``,
``wait()``, ``stop()``, ``done()``, ``await``.

A detached run belongs to the user who started it:

- Its description (the function and the space, pickled by value) never touches the
  disk: the starter hands it to the runner through a pipe. Nothing another user writes
  into the store (a group-writable store, umask 002) can take its place.
- Its status, log and stop request live in ``<store>/.runs/<id>/``, a directory of mode
  0700 owned by that user. The runner and every handle use the directory through a
  descriptor opened without following links and checked for owner and mode, so
  renaming or replacing it by another user changes nothing they read or write.
  ``attach`` only considers such private directories of the calling user.
- The runner holds a POSIX lock on ``lock`` in that directory while it lives: the run is
  over exactly when nobody holds it (no pid to be reused, no clock to trust).
- Runs are ordered by an ordinal taken under a lock on ``.runs`` when they start, not by
  clock time, so ``attach`` picks the newest across time-zone changes and between hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Generator
from typing import Any

from ..errors import ScanError, StoreFormatError, WaitTimeout
from ..store.schema import DETACHED_RUNS
from .loop import Progress
from .provenance import function_identity

__all__ = ["DetachedRun", "attach"]

RUNS = DETACHED_RUNS
META = "run.json"  # run id and ordinal, written by the starter
STATUS = "status.json"  # the runner's counters
STOP = "stop"  # "finish" or "now", written by stop()
LOG = "log.txt"  # what the runner printed
LOCK = "lock"  # locked by the runner while it lives
STATUS_INTERVAL = 0.5
READY_TIMEOUT = 120.0  # seconds the runner may take to start (imports on a busy node)
LOCK_TIMEOUT = 10.0  # seconds to wait for the ordinal lock on .runs
ACTIVE = ("starting", "running")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# ---------------------------------------------------------------- private directories


def _open_dir(name: str, dir_fd: int | None = None) -> int:
    """A descriptor of the directory ``name``; a symbolic link is refused (``ELOOP``)."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _is_private(fd: int) -> bool:
    """True if ``fd`` is a directory of this user that nobody else can write or read."""
    st = os.fstat(fd)
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o077)


def _read_json_at(dir_fd: int, name: str) -> Any:
    """The JSON file ``name`` in ``dir_fd`` (a regular file, not followed through links)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise StoreFormatError(f"{name} is not a regular file")
        return json.loads(f.read(1 << 20))


def _write_json_at(dir_fd: int, name: str, data: dict[str, Any]) -> None:
    """Replace ``name`` in ``dir_fd`` by ``data`` atomically."""
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _runs_dir(store_path: str | os.PathLike[str]) -> str:
    return os.path.join(os.path.abspath(os.fspath(store_path)), RUNS)


def _open_runs(store_path: str | os.PathLike[str], *, create: bool) -> int:
    """The store's ``.runs`` directory (created if ``create``), never through a link."""
    path = _runs_dir(store_path)
    if create:
        os.makedirs(path, exist_ok=True)
    try:
        return _open_dir(path)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ScanError(f"cannot use {path} for detached runs ({exc.strerror}); it must be a "
                        "directory, not a link: remove it and start the run again") from exc


@contextlib.contextmanager
def _ordinal_lock(runs_fd: int, path: str) -> Generator[None, None, None]:
    """Hold an exclusive ``flock`` on the ``.runs`` directory (bounded wait)."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(runs_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ScanError(f"another process holds the lock on {path} for more than "
                                f"{LOCK_TIMEOUT:g} s; try again, or find it with "
                                f"`fuser {path}`") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        fcntl.flock(runs_fd, fcntl.LOCK_UN)


def _own_runs(runs_fd: int) -> list[tuple[int, str, int]]:
    """``(ordinal, run id, directory fd)`` of this user's private run directories.

    Entries of other users, links, non-private directories and directories without a
    valid ``run.json`` (runs of earlier versions) are skipped; the caller closes the fds.
    """
    found = []
    for name in os.listdir(runs_fd):
        try:
            fd = _open_dir(name, runs_fd)
        except OSError:
            continue
        try:
            meta = _read_json_at(fd, META) if _is_private(fd) else None
        except (OSError, ValueError):
            meta = None
        ordinal = meta.get("ordinal") if isinstance(meta, dict) else None
        run_id = meta.get("run_id") if isinstance(meta, dict) else None
        if (isinstance(ordinal, int) and not isinstance(ordinal, bool)
                and isinstance(run_id, str)):
            found.append((ordinal, run_id, fd))
        else:
            os.close(fd)
    return found


def _close_all(runs: list[tuple[int, str, int]], keep: int | None = None) -> None:
    for _, _, fd in runs:
        if fd != keep:
            os.close(fd)


# ---------------------------------------------------------------- the handle


class DetachedRun:
    """A handle on a scan running in a detached background process.

    The same interface as :class:`~notebookscan.scan.ScanRun`: ``progress``, ``wait()``,
    ``stop()``, ``done()`` and ``await run``, plus ``run_id`` and ``log()``. Works from
    any process of the user who started the run: the one that started it, a new kernel,
    or a terminal (``notebookscan attach``). Get one with :func:`attach`.
    """

    def __init__(self, dir_fd: int, run_id: str, directory: str):
        self._fd = dir_fd
        self.run_id = run_id
        self.directory = directory  # where it was found (informational; the fd is used)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"<DetachedRun {self.run_id}: {self.progress}>"

    def _status(self) -> dict[str, Any]:
        try:
            status = _read_json_at(self._fd, STATUS)
        except (OSError, ValueError):
            status = None
        return status if isinstance(status, dict) else {"state": "starting"}

    def _alive(self) -> bool:
        """True while the runner process holds its lock (it is released when it exits)."""
        try:
            fd = os.open(LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self._fd)
        except OSError:
            return False
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True  # held by the runner
        finally:
            os.close(fd)  # also releases the lock just taken
        return False

    @property
    def pid(self) -> int | None:
        """The runner process's id, as its status says (None before it wrote one)."""
        pid = self._status().get("pid")
        return pid if type(pid) is int else None

    def done(self) -> bool:
        """True once the run has ended (finished, stopped, failed or killed)."""
        return not self._alive()

    @property
    def progress(self) -> Progress:
        """Counters of the run, as the runner last wrote them (every half second)."""
        status = self._status()
        ended = self.done()
        progress = Progress(**{k: int(status.get(k) or 0) for k in (
            "total", "skipped", "done", "failed", "running", "shards", "workers",
            "failed_before")})
        progress.started_at = float(status.get("started") or time.time())
        progress.stopped = status.get("state") == "stopped"
        if ended:
            progress.running = 0
            progress.finished_at = float(status.get("ended") or progress.started_at)
            if status.get("state") == "failed":
                progress.error = ScanError(f"the detached run {self.run_id} failed: "
                                           f"{status.get('error')}; see its log()")
            elif status.get("state") in ACTIVE:
                progress.error = ScanError(
                    f"the detached run {self.run_id} ended without a final status (its "
                    "process was killed?). Everything it wrote is in the store: run the scan "
                    f"again to compute the rest. The end of its log: {_tail(self._fd)}")
        return progress

    def _result(self) -> Progress:
        progress = self.progress
        if progress.error is not None:
            raise progress.error
        return progress

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Progress:
        """Block until the run ends and return its progress.

        Raises :class:`~notebookscan.errors.WaitTimeout` (a ``TimeoutError``) after
        ``timeout`` seconds, and
        :class:`~notebookscan.errors.ScanError` if the run failed or was killed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"the detached run {self.run_id} is still running after "
                                  f"{timeout} s; wait longer, or stop it with run.stop()")
            time.sleep(poll)
        return self._result()

    async def _wait_async(self, poll: float = 0.5) -> Progress:
        while not self.done():
            await asyncio.sleep(poll)
        return self._result()

    def __await__(self) -> Generator[Any, None, Progress]:
        return self._wait_async().__await__()

    def stop(self, now: bool = False, *, wait: bool = True) -> Progress:
        """Ask the runner to stop; finished points are flushed to the store.

        Points running now finish first (``now=False``) or are cancelled (``now=True``);
        either way ``run()`` later resumes with what is left. ``wait=True`` blocks until
        the runner has ended.
        """
        if not self.done():
            fd = os.open(STOP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=self._fd)
            with os.fdopen(fd, "w") as f:
                f.write("now" if now else "finish")
        if wait:
            while not self.done():
                time.sleep(0.2)
        return self.progress

    def log(self) -> str:
        """What the runner printed (progress messages, errors)."""
        try:
            fd = os.open(LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self._fd)
        except FileNotFoundError:
            return ""
        with os.fdopen(fd, "rb") as f:
            return f.read().decode("utf-8", "replace")


def attach(store: str | os.PathLike[str], run_id: str | None = None) -> DetachedRun:
    """Attach to the newest detached run of a store that you started (or ``run_id``).

    Runs are ordered by the ordinal each took when it started, never by clock time.
    Only runs of the calling user are considered (their directories are private).
    """
    try:
        runs_fd = _open_runs(store, create=False)
    except FileNotFoundError:
        raise ScanError(f"no detached run was started for the store {os.fspath(store)!r}; "
                        "start one with scan.run(detach=True) or `notebookscan run "
                        "--detach`") from None
    try:
        runs = _own_runs(runs_fd)
        others = len(os.listdir(runs_fd)) - len(runs)
    finally:
        os.close(runs_fd)
    chosen = [r for r in runs if run_id is None or r[1] == run_id]
    if not chosen:
        _close_all(runs)
        mine = ", ".join(r[1] for r in sorted(runs)) or "none"
        other = (f"; {others} other entr{'y' if others == 1 else 'ies'} of .runs belong to "
                 "other users or older versions, or are not private") if others else ""
        what = "no detached run" if run_id is None else f"no detached run {run_id!r}"
        raise ScanError(f"{what} of yours in {_runs_dir(store)} (yours: {mine}{other}); "
                        "start one with scan.run(detach=True) or `notebookscan run --detach`")
    _, found_id, fd = max(chosen)
    _close_all(runs, keep=fd)
    return DetachedRun(fd, found_id, os.path.join(_runs_dir(store), found_id))


# ---------------------------------------------------------------- starting a run


def start(scan: Any, executor: Any, run_kwargs: dict[str, Any]) -> DetachedRun:
    """Start ``scan.run(executor, **run_kwargs)`` in a detached process."""
    import cloudpickle

    if executor is not None and not isinstance(executor, (str, dict)):
        raise ScanError(
            "detach=True needs an executor the background process can create itself: None "
            "(local engines), 'processes', 'serial', or the arguments of "
            "notebookscan.executors.cluster.connect() as a dict, e.g. executor={'profile': 'mpi', "
            "'cluster_id': 'nightly'}; got " + type(executor).__name__
        )
    function_identity(scan.function)  # kept on the function: the runner has no source file
    # the scan itself (its class by reference, imported in the runner: this module sits
    # below the scans and imports none), with its function, space and settings
    spec = cloudpickle.dumps({"scan": scan, "executor": executor, "run_kwargs": run_kwargs})
    dir_fd, run_id = _new_run_dir(scan.store.path)
    try:
        _launch(dir_fd, run_id, spec)
    except BaseException:
        os.close(dir_fd)
        raise
    return DetachedRun(dir_fd, run_id, os.path.join(_runs_dir(scan.store.path), run_id))


def _new_run_dir(store_path: str) -> tuple[int, str]:
    """Create this run's private directory under the next ordinal; its fd and run id."""
    runs_fd = _open_runs(store_path, create=True)
    try:
        with _ordinal_lock(runs_fd, _runs_dir(store_path)):
            runs = _own_runs(runs_fd)
            _close_all(runs)
            ordinal = max((r[0] for r in runs), default=0) + 1
            run_id = f"{ordinal}-{uuid.uuid4().hex[:6]}"
            os.mkdir(run_id, 0o700, dir_fd=runs_fd)
            fd = _open_dir(run_id, runs_fd)
            if not _is_private(fd):  # replaced between mkdir and open
                os.close(fd)
                raise ScanError(f"the run directory {run_id} in {_runs_dir(store_path)} was "
                                "replaced by someone else while it was created; nothing was "
                                "started. Check who can write the store's directory")
            _write_json_at(fd, META, {"run_id": run_id, "ordinal": ordinal,
                                      "created": time.time()})
    finally:
        os.close(runs_fd)
    _write_json_at(fd, STATUS, {"state": "starting"})
    return fd, run_id


def _launch(dir_fd: int, run_id: str, spec: bytes) -> None:
    """Start the runner on ``dir_fd``; wait until it holds its lock, then hand it ``spec``."""
    log_fd = os.open(LOG, _NEW_FILE, 0o600, dir_fd=dir_fd)
    ready_r, ready_w = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from notebookscan.run.detached import main; "
             "sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))", str(dir_fd), str(ready_w)],
            stdin=subprocess.PIPE, stdout=log_fd, stderr=subprocess.STDOUT,
            pass_fds=(dir_fd, ready_w), start_new_session=True, cwd=os.getcwd(),
        )
    finally:
        os.close(log_fd)
        os.close(ready_w)
    # reaps the runner when it ends (no zombie in a long-lived kernel)
    threading.Thread(target=process.wait, name="notebookscan-detached-reaper",
                     daemon=True).start()
    try:
        readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
        ready = os.read(ready_r, 1) if readable else b""
    finally:
        os.close(ready_r)
    assert process.stdin is not None
    try:
        if ready != b"1":
            raise ScanError(f"the detached runner of {run_id} did not start: {_tail(dir_fd)}")
        process.stdin.write(spec)
        process.stdin.close()  # the runner reads to the end
    except (BrokenPipeError, ScanError) as exc:
        with contextlib.suppress(OSError):
            process.kill()
        raise ScanError(f"the detached runner of {run_id} did not start: "
                        f"{_tail(dir_fd)}") from exc


def _tail(dir_fd: int) -> str:
    try:
        fd = os.open(LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            text = f.read().decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text[-2000:] or "(it printed nothing)"


# ---------------------------------------------------------------- the runner process


def _resolve(executor: Any) -> Any:
    if isinstance(executor, dict):
        from ..executors.cluster import connect

        return connect(**executor)
    return executor


class _Runner:
    """The runner's state: the status it writes, and the stop requests it applies."""

    def __init__(self, dir_fd: int):
        self.fd = dir_fd
        self.state: dict[str, Any] = {"state": "running", "pid": os.getpid(), "done": 0,
                                      "failed": 0, "total": 0, "started": time.time()}
        self.last = 0.0
        self.scan: Any = None
        self.stop_now: bool | None = None  # None: no stop asked
        self.finished = threading.Event()

    def write(self, force: bool = False) -> None:
        if force or time.monotonic() - self.last >= STATUS_INTERVAL:
            self.last = time.monotonic()
            _write_json_at(self.fd, STATUS, self.state)

    def on_progress(self, **counters: Any) -> None:
        self.state.update({k: counters[k] for k in ("done", "failed", "total", "running",
                                                    "workers") if k in counters})
        self.write()

    def on_started(self, total: int, skipped: int, **more: Any) -> None:
        self.state.update(total=total, skipped=skipped,
                          failed_before=more.get("failed_before", 0))
        self.write(force=True)

    def ask_stop(self, now: bool) -> None:
        self.stop_now = bool(self.stop_now) or now

    def on_signal(self, signum: int, frame: Any) -> None:
        self.ask_stop(now=True)  # what one Ctrl-C does in a terminal

    def watch(self) -> None:
        """Apply stop requests (the stop file, signals) once the scan's run exists."""
        applied: bool | None = None
        while not self.finished.wait(0.2):
            if self.stop_now is not True:  # a "finish" may still become "now"
                self._read_stop_file()
            run = self.scan._run if self.scan is not None else None
            if self.stop_now is not None and run is not None and applied != self.stop_now:
                applied = self.stop_now
                run.stop(now=self.stop_now, wait=False)

    def _read_stop_file(self) -> None:
        try:
            fd = os.open(STOP, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError:
            return
        with os.fdopen(fd, "rb") as f:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                self.ask_stop(now=f.read(16).strip() == b"now")


def _take_lock(dir_fd: int) -> int:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _serve(runner: _Runner, spec: dict[str, Any]) -> int:
    runner.write(force=True)
    scan = spec["scan"]
    scan.events.on("progress", runner.on_progress)
    scan.events.on("started", runner.on_started)
    runner.scan = scan
    state = runner.state
    try:
        run = scan.run(_resolve(spec["executor"]), wait=True, progress=False,
                       **spec["run_kwargs"])
        progress = run.progress
        state.update(done=progress.done, failed=progress.failed, total=progress.total,
                     shards=progress.shards,
                     state="stopped" if progress.stopped else "finished")
        return 0
    except BaseException as exc:
        state.update(state="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                     error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        state.update(running=0, ended=time.time())
        runner.write(force=True)


def main(dir_fd: int, ready_fd: int) -> int:
    """Entry point of the detached runner process (started by :func:`start`)."""
    import cloudpickle

    for fd in (dir_fd, ready_fd):
        os.set_inheritable(fd, False)  # not for the engines this process starts
    if not _is_private(dir_fd):
        print("the run directory is not private to this user; refusing to run", flush=True)
        return 2
    lock_fd = _take_lock(dir_fd)  # held until this process exits: "alive"
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    spec = cloudpickle.loads(sys.stdin.buffer.read())  # from the starter, never a file
    sys.stdin.close()
    runner = _Runner(dir_fd)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)
    threading.Thread(target=runner.watch, daemon=True).start()
    try:
        return _serve(runner, spec)
    finally:
        runner.finished.set()
        del lock_fd  # released when the process exits, after the final status
