"""Runners on one store share the work: leases on the keys in flight, and heartbeats.

Two runs on one store — a detached run and a notebook's Resume, or ``notebookscan run``
on two machines over a shared file system — would otherwise compute the same points
twice. Each run (a *runner*) announces itself and what it computes in the store's
``leases/`` directory:

``leases/<runner>.runner``
    The runner's record (JSON): its run id, host, pid, a heartbeat counter ``beat`` it
    increments at every beat, and its live progress (done, failed, total, running,
    workers, rate), which ``notebookscan status`` shows.
``leases/<runner>.<n>.lease``
    The keys of one chunk the runner computes (raw 20-byte keys, concatenated). A lease
    is written before the chunk is submitted and removed once its points are in a shard
    (or the run ends).

Before submitting a chunk a runner *claims* its keys: under ``leases/.lock`` it reads the
leases of the other live runners and writes a lease for the keys no one holds; only those
are computed. The keys others hold wait: they are stored by their runner (the waiting
runner then finds them in the shards and skips them), or their runner dies and the lease
expires — then the first runner to notice removes the dead runner's leases and record and
computes the points itself. Nothing is lost: a point leaves the leases only once it is in
a shard, or when its runner is gone.

When is a runner dead? No two machines' clocks are ever compared. An observer keeps, for
each runner it sees, the last ``beat`` counter it read and the time it first read that
value *on its own monotonic clock*; the runner is dead when its counter has not changed
for ``ttl`` seconds of that clock (a missing record counts as one unchanging value). A
runner first seen is given the full ``ttl``. Clocks that differ between machines, or that
jump (NTP, a suspended laptop), change nothing: the wall-clock times in a record are only
shown, never compared. On the runner's own host the check is faster: a runner whose
process (pid, with its start time) no longer runs is dead at once.

The time to live is :data:`DEFAULT_TTL` seconds, or the environment variable
``NOTEBOOKSCAN_LEASE_TTL``; a runner beats every ``ttl / 4`` seconds (at least every
:data:`MAX_BEAT_PERIOD`), from its loop's thread, which never waits longer than the time
to its next beat. A runner blocked for longer than the
``ttl`` (one point running longer in the serial executor) is taken for dead: its points
are then computed twice, which the store keeps as duplicates — never a loss.

``notebookscan status`` (:func:`runner_states`) shows each runner's last record. A runner
of this host is alive while its process runs; one of another host is watched for up to
2.5 beat periods, on the status process's own clock, and is alive if its counter moves.
A dead runner is shown as stopped, "no heartbeat for N s" — N from the file system's own
timestamps (the record's modification time against a file status writes, both stamped
by the same file system), which is a figure to show only, not a rule anything obeys —
and its record and leases are removed.

Any process can ask a runner to stop (:func:`request_stop`, the widgets' Stop button for
a run they did not start): it writes ``leases/<runner>.stop`` holding ``finish`` (running
points finish and are stored) or ``now`` (they are cancelled). The runner reads it at
every beat and obeys only a request its own user made: a regular file, opened without
following a link, with one link only (no hard link to someone else's file), owned by the
runner's effective uid, holding exactly one of those words. On a group-writable store
another user can create the file but not own it as you, so they cannot stop your run.

Files follow the store's rules (:mod:`notebookscan.store.files`): written to a temporary
name and renamed into place through a descriptor of ``leases/`` (never a link; not
fsynced, see :meth:`Runner._write`);
only regular files are read, each of bounded size; records are JSON, leases raw bytes —
nothing read is executed. A file that is neither is ignored. Where ``flock`` does not work
across machines, two runners claiming at the same moment may both compute a chunk:
duplicates again, not losses.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, StoreError
from ..keys import KEY_DTYPE
from .files import (
    check_own_directory,
    exclusive_lock,
    name_part,
    new_file_as,
    open_dir,
    open_regular,
    parse_json,
    pid_alive,
    write_all,
)
from .schema import LEASE_SUFFIX, LEASES, LEASES_LOCK, RUNNER_SUFFIX, STOP_SUFFIX

__all__ = ["DEFAULT_TTL", "Runner", "RunnerState", "lease_ttl", "live_runners", "request_stop",
           "runner_states"]

DEFAULT_TTL = 30.0  # seconds a runner's heartbeat may stay unchanged before it is dead
TTL_VARIABLE = "NOTEBOOKSCAN_LEASE_TTL"
MAX_BEAT_PERIOD = 1.0  # beat at least this often (status shows the progress beats carry)
KEY_BYTES = np.dtype(KEY_DTYPE).itemsize
LEASE_KEYS = 2**20  # keys per lease file at most (a bigger chunk takes several files)
RECORD_BYTES = 64 * 2**10  # a runner record is read only up to this size
CLAIM_WAIT = 10.0  # seconds to wait for the claim lock before claiming without it
RECORD_FORMAT = 1
STOP_WORDS = {b"finish": False, b"now": True}  # a stop request's text: stop now?

# runners of this process that have not ended: a record of this pid not listed here is
# a leftover of an earlier run in the same process (a notebook kernel)
_ACTIVE: set[str] = set()


def lease_ttl() -> float:
    """The time to live of a heartbeat: ``NOTEBOOKSCAN_LEASE_TTL`` or :data:`DEFAULT_TTL`."""
    text = os.environ.get(TTL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TTL
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if not 0 < ttl < float("inf"):
        raise StoreError(f"{TTL_VARIABLE}={text!r} is not a number of seconds > 0; set it to "
                         f"e.g. {DEFAULT_TTL:g} (seconds without a heartbeat before another "
                         "runner takes over a runner's points), or unset it")
    return ttl


def leases_dir(store_path: str) -> str:
    return os.path.join(store_path, LEASES)


# ---------------------------------------------------------------- identity of a process


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return f"uid{os.getuid()}"


def _process_start(pid: int) -> str:
    """When process ``pid`` of this host started (clock ticks since boot; "" if unknown):
    a pid reused by another process has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


_HOST = name_part(socket.gethostname())


def _runner_of(name: str) -> str:
    """The runner id a file of ``leases/`` belongs to (``host.pid.random``)."""
    if name.endswith(RUNNER_SUFFIX):
        return name[:-len(RUNNER_SUFFIX)]
    return name[:-len(LEASE_SUFFIX)].rsplit(".", 1)[0]


def _here(runner: str, record: Mapping[str, Any] | None) -> bool | None:
    """Whether ``runner``'s process still runs, when it ran on this host (and boot);
    None for a runner of another host (only its heartbeat tells)."""
    parts = runner.split(".")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return None
    if record is not None and record.get("boot") not in ("", None, _boot_id()):
        return None  # same host name, another boot (or another machine named alike)
    pid = int(parts[1])
    if pid == os.getpid():
        return runner in _ACTIVE
    if not pid_alive(pid):
        return False
    started = record.get("pid_start") if record is not None else None
    return not started or _process_start(pid) in ("", started)


def _gone_here(runner: str, record: Mapping[str, Any] | None) -> bool:
    """True when ``runner`` ran on this host and its process is gone."""
    return _here(runner, record) is False


# ---------------------------------------------------------------- reading


def _read_record(directory: str, name: str) -> dict[str, Any] | None:
    """A runner record, or None when absent, not a regular file, too big or not one."""
    try:
        fd = open_regular(os.path.join(directory, name))
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size > RECORD_BYTES:
            return None
        data = os.read(fd, RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        record = parse_json(data.decode("utf-8"), RECORD_BYTES)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or type(record.get("beat")) is not int:
        return None
    return record


def _read_lease(path: str) -> np.ndarray | None:
    """The keys of a lease file (None when it is not a regular file of whole keys)."""
    try:
        fd = open_regular(path)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size % KEY_BYTES or size > LEASE_KEYS * KEY_BYTES:
            return None
        data = bytearray(size)
        with os.fdopen(os.dup(fd), "rb") as f:
            if f.readinto(data) != size:
                return None
    except OSError:
        return None
    finally:
        os.close(fd)
    return np.frombuffer(bytes(data), dtype=KEY_DTYPE)


def _listing(directory: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Lease files by runner, and each runner's record file name, of ``directory``."""
    check_own_directory(directory, LEASES + "/")
    leases: dict[str, list[str]] = {}
    records: dict[str, str] = {}
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return leases, records
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if name.endswith(RUNNER_SUFFIX):
            records[_runner_of(name)] = name
        elif name.endswith(LEASE_SUFFIX):
            leases.setdefault(_runner_of(name), []).append(name)
    return leases, records


class Watch:
    """One observer's view of the runners' heartbeats (see the module docstring).

    Holds, per runner, the last counter read and when (this process's monotonic clock)
    it was first read.
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._seen: dict[str, tuple[Any, float]] = {}

    def silent_for(self, runner: str, record: Mapping[str, Any] | None) -> float:
        """Seconds (monotonic, this process) the runner's counter has stayed as it is."""
        signature = None if record is None else (record.get("beat"), record.get("run"))
        now = time.monotonic()
        last = self._seen.get(runner)
        if last is None or last[0] != signature:
            self._seen[runner] = (signature, now)
            return 0.0
        return now - last[1]

    def dead(self, runner: str, record: Mapping[str, Any] | None) -> bool:
        """True once ``runner`` has not beaten for ``ttl``, or its process here is gone."""
        silent = self.silent_for(runner, record)
        return _gone_here(runner, record) or silent >= self.ttl

    def forget(self, runner: str) -> None:
        self._seen.pop(runner, None)


def _remove(directory: str, names: Iterable[str]) -> None:
    """Unlink entries of ``leases/`` (entries only: links are not followed)."""
    try:
        dir_fd = open_dir(directory, create=False)
    except OSError:
        return
    try:
        for name in names:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- one runner


class Runner:
    """This process's runner in a store: its record, heartbeats and leases.

    Used by one thread (the scan loop's). Every method is cheap when there is nothing
    to do: claiming reads only lease files it has not read before.

    Parameters
    ----------
    store_path
        The store directory (``leases/`` is created inside it).
    run_id
        The id of the run (shown by ``notebookscan status``).
    ttl
        Seconds without a heartbeat after which another runner is dead (default:
        :func:`lease_ttl`).
    """

    def __init__(self, store_path: str, run_id: str, ttl: float | None = None):
        self.directory = leases_dir(store_path)
        self.run_id = run_id
        self.ttl = lease_ttl() if ttl is None else float(ttl)
        self.period = min(self.ttl / 4, MAX_BEAT_PERIOD)
        self.id = f"{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.watch = Watch(self.ttl)
        self._beat = 0
        self._last_beat = -float("inf")
        self._seq = 0
        self._mine: set[str] = set()  # names of this runner's lease files
        self._cache: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}
        self._started = time.time()
        self._status: dict[str, Any] = {}
        self.taken_over: list[str] = []  # dead runners whose leases this one removed
        self.others = False  # another runner has been seen on the store during this run
        self._identity = {"host": socket.gethostname(), "user": _user(), "pid": os.getpid(),
                          "pid_start": _process_start(os.getpid()), "boot": _boot_id()}
        self.active = False
        self.stop_request: bool | None = None  # None: none; else stop now?

    # ------------------------------------------------------------ the record

    def start(self, status: Mapping[str, Any]) -> None:
        """Write the runner's record (``state`` "starting" until the first beat)."""
        _ACTIVE.add(self.id)
        self.active = True
        self.beat({**status, "state": "starting"}, force=True)
        self._last_beat = -float("inf")  # the loop's first look makes it "running"

    def seconds_to_beat(self) -> float:
        """Seconds until the next beat is due (the loop waits no longer than this)."""
        return max(0.0, self._last_beat + self.period - time.monotonic())

    def beat(self, status: Mapping[str, Any], *, force: bool = False) -> bool:
        """Increment the counter and rewrite the record with ``status``, when due."""
        if not self.active or (not force and self.seconds_to_beat() > 0):
            return False
        self._last_beat = time.monotonic()
        self._beat += 1
        self._status = dict(status)
        record = {"format": RECORD_FORMAT, "runner": self.id, "run": self.run_id,
                  "beat": self._beat, "ttl": self.ttl, "period": self.period,
                  "started": self._started, "updated": time.time(), **self._identity,
                  "state": "running", **self._status}
        self._write(self.id + RUNNER_SUFFIX, json.dumps(record, default=_plain).encode())
        self._read_stop()
        return True

    def _read_stop(self) -> None:
        """Note a stop request of this runner's own user (see the module docstring)."""
        now = _read_stop_request(self.directory, self.id + STOP_SUFFIX)
        if now is not None:
            self.stop_request = bool(self.stop_request) or now

    def _write(self, name: str, data: bytes) -> None:
        """Write ``data`` as ``leases/name``: a temporary file renamed into place.

        Not fsynced: a lease or record matters only while its runner lives, and a crash
        of the machine ends the runner too; what such a crash may leave (an empty or cut
        file) reads as no keys, or no record, which expires like a dead runner's. An
        fsync would cost ~5 ms per chunk on a disk.
        """
        dir_fd = open_dir(self.directory, create=True)
        try:
            tmp = f".tmp-{name_part(_user())}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}"
            new_file_as(dir_fd, name, tmp, lambda fd: write_all(fd, data), sync=False)
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------ leases

    def held_elsewhere(self) -> np.ndarray:
        """Sorted keys leased by the other live runners.

        The leases and records of runners found dead are removed: their points are
        anyone's again.
        """
        leases, records = _listing(self.directory)
        held = []
        for runner in sorted(set(leases) | set(records)):
            if runner == self.id:
                continue
            self.others = True
            record = _read_record(self.directory, records[runner]) if runner in records else None
            if self.watch.dead(runner, record):
                self._take_over(runner, leases.get(runner, []), records.get(runner))
                continue
            for name in leases.get(runner, []):
                keys = self._lease_keys(name)
                if keys is not None:
                    held.append(keys)
        for name in [n for n in self._cache if _runner_of(n) not in leases]:
            del self._cache[name]
        if not held:
            return np.empty(0, dtype=KEY_DTYPE)
        return np.unique(np.concatenate(held))

    def _lease_keys(self, name: str) -> np.ndarray | None:
        """A lease's keys, read once per file (a lease never changes once written)."""
        path = os.path.join(self.directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == ident:
            return cached[1]
        keys = _read_lease(path)
        if keys is not None:
            self._cache[name] = (ident, keys)
        return keys

    def _take_over(self, runner: str, leases: list[str], record: str | None) -> None:
        """Remove a dead runner's leases (then its record): its points are free again."""
        _remove(self.directory, leases)
        if record is not None:
            _remove(self.directory, [record])
        _remove(self.directory, [runner + STOP_SUFFIX])
        for name in leases:
            self._cache.pop(name, None)
        self.watch.forget(runner)
        self.taken_over.append(runner)

    def pop_taken_over(self) -> list[str]:
        """The runners taken over since the last call (their journals may be folded)."""
        taken, self.taken_over = self.taken_over, []
        return taken

    def claim(self, keys: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Lease the ``keys`` no other live runner holds.

        Returns a bool per key (True: claimed, compute it) and the names of the lease
        files written (give them to :meth:`release` once the points are in a shard).
        """
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        with exclusive_lock(os.path.join(self._checked_dir(), LEASES_LOCK), CLAIM_WAIT):
            held = self.held_elsewhere()
            free = ~_isin(keys, held)
            names = self._write_leases(keys[free])
        return free, names

    def _checked_dir(self) -> str:
        os.close(open_dir(self.directory, create=True))  # a real directory, never a link
        return self.directory

    def _write_leases(self, keys: np.ndarray) -> list[str]:
        names = []
        for start in range(0, len(keys), LEASE_KEYS):
            self._seq += 1
            name = f"{self.id}.{self._seq}{LEASE_SUFFIX}"
            self._write(name, np.ascontiguousarray(keys[start:start + LEASE_KEYS]).tobytes())
            self._mine.add(name)
            names.append(name)
        return names

    def release(self, names: Iterable[str]) -> None:
        """Remove this runner's leases ``names`` (their points are stored)."""
        names = [n for n in names if n in self._mine]
        _remove(self.directory, names)
        self._mine.difference_update(names)

    def close(self) -> None:
        """Remove every lease of this runner, then its record (the run ends)."""
        if not self.active:
            return
        self.active = False
        try:
            self.release(list(self._mine))
            _remove(self.directory, [self.id + RUNNER_SUFFIX, self.id + STOP_SUFFIX])
        finally:
            _ACTIVE.discard(self.id)


def _read_stop_request(directory: str, name: str) -> bool | None:
    """A stop request ``leases/name``: True (now), False (finish), or None when there is
    none this process's user made (a link, a hard-linked or foreign file, other text)."""
    try:
        fd = open_regular(os.path.join(directory, name))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_nlink != 1 or st.st_size > 16:
            return None
        return STOP_WORDS.get(os.read(fd, 16).strip())
    except OSError:
        return None
    finally:
        os.close(fd)


def request_stop(store_path: str, runner: str, now: bool = False) -> None:
    """Ask the runner ``runner`` of a store to stop (it obeys at its next beat, when the
    request is of its own user).

    Parameters
    ----------
    store_path
        The store directory.
    runner
        The runner's id (:attr:`RunnerState.runner`).
    now
        Cancel the running points (``True``) or let them finish and be stored.
    """
    if not isinstance(runner, str) or runner != _safe_runner(runner):
        raise ArgumentTypeError(f"{runner!r} is not a runner id (host.pid.random, as "
                                "live_runners() or `notebookscan status` give them)")
    directory = leases_dir(store_path)
    dir_fd = open_dir(directory, create=False)
    try:
        tmp = f".tmp-{name_part(_user())}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}"
        text = b"now" if now else b"finish"
        new_file_as(dir_fd, runner + STOP_SUFFIX, tmp, lambda fd: write_all(fd, text),
                    sync=False)
    finally:
        os.close(dir_fd)


def _safe_runner(runner: str) -> str:
    """``runner`` with anything but the characters of a runner id replaced."""
    return ".".join(name_part(p) for p in runner.split(".")) if runner else "x"


def _isin(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def _plain(value: Any) -> Any:
    """numpy scalars in a status, as JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise ArgumentTypeError(f"{type(value).__name__} in a runner record")  # json wants a TypeError


# ---------------------------------------------------------------- observers (status)


@dataclass
class RunnerState:
    """A runner as ``notebookscan status`` shows it."""

    runner: str
    record: dict[str, Any]  # its last record ({} when it has none)
    alive: bool
    silent_for: float  # seconds its heartbeat has been unchanged, as far as is known


def runner_states(store_path: str, *, watch: float | None = None,
                  clean: bool = True) -> list[RunnerState]:
    """The runners of a store with their last records, and whether each is alive.

    One look cannot tell a silent runner of another host from a dead one without
    comparing clocks, so the records are read again for up to ``watch`` seconds
    (default: 2.5 beat periods, at most the ttl) while any runner's counter has not
    changed; one that has not beaten by then, or whose process on this host is gone,
    is dead. The records and leases of dead runners are removed when ``clean``.
    """
    directory = leases_dir(store_path)
    leases, records = _listing(directory)
    runners = sorted(set(leases) | set(records))
    if not runners:
        return []
    read = {r: (_read_record(directory, records[r]) if r in records else None) for r in runners}
    # what the records say of their timing, within sane bounds (a record is data only)
    ttl = min((_seconds(rec.get("ttl"), DEFAULT_TTL) for rec in read.values() if rec),
              default=DEFAULT_TTL)
    period = max((_seconds(rec.get("period"), MAX_BEAT_PERIOD, MAX_BEAT_PERIOD)
                  for rec in read.values() if rec), default=MAX_BEAT_PERIOD)
    limit = min(ttl, 2.5 * period) if watch is None else watch
    observer = Watch(limit)
    beaten: set[str] = set()
    gone = {r for r in runners if _gone_here(r, read[r])}
    beaten.update(r for r in runners if _here(r, read[r]) and read[r] is not None)
    for r in runners:
        observer.silent_for(r, read[r])
    start = time.monotonic()
    while time.monotonic() - start < limit and set(runners) - beaten - gone:
        time.sleep(min(0.1, period / 4))
        for r in set(runners) - beaten - gone:
            record = _read_record(directory, r + RUNNER_SUFFIX)  # listed or not (yet)
            if observer.silent_for(r, record) == 0.0:
                beaten.add(r)
                read[r] = record or read[r]
    states = []
    for r in runners:
        alive = r in beaten or (r not in gone and limit <= 0)
        silent = 0.0 if alive else _silence(directory, records.get(r), time.monotonic() - start)
        states.append(RunnerState(r, read[r] or {}, alive, silent))
        if not alive and clean:
            _remove(directory, [*leases.get(r, []), r + RUNNER_SUFFIX, r + STOP_SUFFIX])
    return states


def live_runners(store_path: str, watch: Watch) -> list[RunnerState]:
    """The runners of a store that are alive as far as one look can tell, without waiting.

    ``watch`` (a :class:`Watch`, kept by the caller between looks) remembers each
    runner's heartbeat counter: a runner of another host is alive until its counter has
    not moved for ``watch.ttl`` seconds of this process's clock; one of this host while
    its process runs. Nothing is removed (a runner takes over a dead one's leases).
    """
    directory = leases_dir(store_path)
    try:
        _, records = _listing(directory)
    except StoreError:
        return []
    states = []
    for runner, name in sorted(records.items()):
        record = _read_record(directory, name)
        if record is None:
            continue
        silent = watch.silent_for(runner, record)
        here = _here(runner, record)
        if here is False or (here is None and silent >= watch.ttl):
            continue
        states.append(RunnerState(runner, record, True, silent))
    for gone in set(watch._seen) - set(records):
        watch.forget(gone)
    return states


def _seconds(value: Any, default: float, most: float = 3600.0) -> float:
    """A record's number of seconds, if it is a finite one in (0, most]; else default."""
    if type(value) not in (int, float) or not 0 < value <= most:
        return default
    return float(value)


def _silence(directory: str, record: str | None, watched: float) -> float:
    """How long a dead runner's record has not changed: by the file system's own clock
    (its modification time against a file written now, one clock), else ``watched``."""
    if record is None:
        return watched
    probe = f".tmp-probe-{_HOST}.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        dir_fd = open_dir(directory, create=False)
    except OSError:
        return watched
    try:
        before = os.lstat(record, dir_fd=dir_fd).st_mtime
        new_file_as(dir_fd, probe, probe + ".tmp", lambda fd: None, sync=False)
        now = os.lstat(probe, dir_fd=dir_fd).st_mtime
        os.unlink(probe, dir_fd=dir_fd)
    except OSError:
        return watched
    finally:
        os.close(dir_fd)
    return max(watched, now - before)
