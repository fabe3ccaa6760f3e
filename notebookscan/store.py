"""The result store: a directory of immutable NetCDF-4 shards.

Guarantees
----------
* Every flush writes a new shard under a temporary name and renames it into place, so a
  shard is whole or absent, whatever gets killed. No file is appended or rewritten.
* Writers never collide: a shard's name holds user, host, process id and a random part.
  No lock is needed to write; two processes can scan into one store at once.
* Reading combines all shards and keeps one row per point key (``done`` beats
  ``failed``, then the latest), so overlapping shards — from two writers, a merge, or a
  compaction killed half-way — never show a point twice.
* Merging two stores is copying shards from one directory into the other.
* Compaction writes many shards into one new shard *before* deleting them: at every
  moment each point is in at least one shard.
* A shard that cannot be read is moved to ``quarantine/`` with the reason, reported by
  name, and the rest loads.
* A store holds data only. Nothing in it is unpickled or executed when it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import StoreError, StoreWarning
from .keys import KEY_DTYPE
from .layout import Layout, load_dataset
from .shards import ShardData, _clean, new_shard_name, read_shard, write_shard_atomically
from .table import Table, combine_shards

__all__ = [
    "CompactReport",
    "MergeReport",
    "Store",
    "VerifyReport",
    "compact",
    "merge",
    "open_store",
    "verify",
]

META_FILE = "notebookscan.json"
SHARDS = "shards"
QUARANTINE = "quarantine"
LOCK_FILE = ".compact.lock"
FORMAT = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.nc$")
_VANISH_RETRIES = 10
SMALL_SHARD = 16 * 2**20  # shards up to this size are worth compacting
COMPACT_MEMORY = 32 * 2**20  # shard data read per compaction pass (the pass needs ~2x)


def _index_entry(shard: ShardData) -> tuple[np.ndarray, np.ndarray]:
    # keys as 20 bytes and a bool per point, not Python strings: a scan keeps this for
    # every shard it wrote
    status = shard.bookkeeping["status"]
    done = status == (b"done" if status.dtype.kind == "S" else "done")
    return as_key_array(shard.bookkeeping["key"]), np.asarray(done, dtype=bool)


class _Vanished(Exception):
    """A shard disappeared while being read (compacted away): restart the read."""


@dataclass
class MergeReport:
    """What :func:`merge` did: shards copied, and points stored differently in both."""

    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # keys whose values differ

    def __str__(self) -> str:
        text = (f"merged {len(self.copied)} shard(s), {len(self.already_present)} already "
                f"present, {len(self.conflicts)} conflicting point(s)")
        if self.conflicts:
            text += " (kept the newest done result of each; keys: " + \
                ", ".join(self.conflicts[:5]) + ("…" if len(self.conflicts) > 5 else "") + ")"
        return text


@dataclass
class CompactReport:
    """What :func:`compact` did."""

    shards_before: int = 0
    shards_after: int = 0
    points: int = 0
    removed_temporary: int = 0
    skipped: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"compaction skipped: {self.skipped}"
        return (f"compacted {self.shards_before} shard(s) into {self.shards_after}, "
                f"{self.points} point(s)")


@dataclass
class VerifyReport:
    """What :func:`verify` found: readable shards and corrupt ones (with reasons)."""

    ok: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    points: int = 0

    @property
    def healthy(self) -> bool:
        return not self.corrupt

    def __str__(self) -> str:
        text = f"{len(self.ok)} shard(s) ok, {self.points} point(s)"
        for name, reason in self.corrupt.items():
            text += f"\ncorrupt: {name}: {reason}"
        return text


class Store:
    """A result store directory.

    Parameters
    ----------
    path
        The store's directory (created on the first write).

    Examples
    --------
    >>> import tempfile, notebookscan as ns
    >>> path = tempfile.mkdtemp()
    >>> _ = ns.Scan(lambda x: x * x, ns.grid(x=[1, 2, 3]), store=path).run(
    ...     executor="serial", progress=False)
    >>> store = Store(path)
    >>> sorted(store.index().done) == sorted(ns.grid(x=[1, 2, 3]).keys())
    True
    >>> float(store.dataset().result.sel(x=3))
    9.0
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.path.abspath(os.fspath(path))
        self.shards_dir = os.path.join(self.path, SHARDS)
        self.quarantine_dir = os.path.join(self.path, QUARANTINE)
        self._index_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._provenance_in: dict[str, str] = {}  # provenance text -> shard holding it

    def __repr__(self) -> str:
        return f"<Store {self.path}: {len(self.shard_files())} shard(s)>"

    # -------------------------------------------------------------- metadata

    @property
    def exists(self) -> bool:
        """True once the store's shard directory exists (something was written to it)."""
        return os.path.isdir(self.shards_dir)

    def metadata(self) -> dict[str, Any]:
        """The store's ``notebookscan.json`` (empty dict when there is none)."""
        path = os.path.join(self.path, META_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc

    def layout(self) -> Layout:
        """The layout results are shown in (``points`` when the store does not say)."""
        meta = self.metadata()
        if "layout" in meta:
            return Layout.from_json(meta["layout"])
        return Layout("points", ())

    def _write_metadata(self, meta: dict[str, Any]) -> None:
        tmp = os.path.join(self.path, f".tmp-{uuid.uuid4().hex}.json")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, META_FILE))

    def prepare(self, layout: Layout, names: Sequence[str]) -> None:
        """Create the directories and metadata, or check an existing store fits ``names``.

        A store holds one set of parameter names. Adding a points-layout space to a
        grid store turns the store's layout into ``points``.
        """
        os.makedirs(self.shards_dir, exist_ok=True)
        meta = self.metadata()
        names = list(names)
        if not meta:
            self._write_metadata({
                "format": FORMAT, "names": names, "layout": layout.to_json(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            return
        stored = list(meta.get("names", names))
        if sorted(stored) != sorted(names):
            raise StoreError(
                f"the store {self.path} holds points with parameters {stored}, but this scan's "
                f"space has {names}. Use another store, or give the space the same parameters "
                "(fixed values are fine: grid(..., tau=0.01))."
            )
        old = Layout.from_json(meta.get("layout", {"kind": "points", "dims": stored}))
        if old.kind == "grid" and layout.kind != "grid":
            meta["layout"] = Layout("points", tuple(stored)).to_json()
            self._write_metadata(meta)

    # -------------------------------------------------------------- shards

    def shard_files(self) -> list[str]:
        """Names of the complete shards (temporary files excluded), sorted."""
        try:
            names = os.listdir(self.shards_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(".nc") and not n.startswith("."))

    def write(self, shard: ShardData) -> str:
        """Write one shard atomically and return its file name.

        The ``provenance`` attribute is written only while no shard this Store object
        wrote still holds the same provenance: a run keeps it in its first shard.
        """
        os.makedirs(self.shards_dir, exist_ok=True)
        name = new_shard_name()
        text = shard.attrs.get("provenance")
        holder = self._provenance_in.get(text) if isinstance(text, str) else None
        if holder is not None and os.path.exists(os.path.join(self.shards_dir, holder)):
            # a run's provenance (tens of kB with the function's source) is kept in the
            # first shard of the run written here; later shards refer to it by run id
            shard = dataclasses.replace(
                shard, attrs={k: v for k, v in shard.attrs.items() if k != "provenance"})
        write_shard_atomically(self.shards_dir, name, shard)
        if isinstance(text, str) and "provenance" in shard.attrs:
            self._provenance_in[text] = name
        return name

    def quarantine(self, name: str, reason: str) -> None:
        """Move a shard that cannot be read out of the way, with the reason beside it."""
        where = set_aside(os.path.join(self.shards_dir, name), self.quarantine_dir, name, reason)
        warnings.warn(
            f"shard {name} of the store {self.path} cannot be read ({reason}); {where}. "
            "The rest of the store loads; the points it held will run again.",
            StoreWarning, stacklevel=4,
        )

    def _read(self, name: str, variables: Sequence[str] | None = None, *,
              text_as_bytes: bool = False) -> ShardData | None:
        path = os.path.join(self.shards_dir, name)
        try:
            shard = read_shard(path, variables, text_as_bytes=text_as_bytes)
            missing = [v for v in ("key", "status") if v not in shard.bookkeeping]
            if variables is None:
                missing += [n for n in self.metadata().get("names", []) if n not in shard.params]
            if missing:
                raise ValueError(f"it lacks the variables {missing}")
            return shard
        except FileNotFoundError as exc:
            raise _Vanished(name) from exc
        except OSError as exc:
            if not os.path.exists(path):  # netCDF-C reports an unlinked file as an HDF error
                raise _Vanished(name) from exc
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.EACCES):
                raise StoreError(f"cannot open shard {path}: {exc}") from exc
            self.quarantine(name, f"{type(exc).__name__}: {exc}")
        except (KeyError, ValueError, RuntimeError, IndexError) as exc:
            if not os.path.exists(path):
                raise _Vanished(name) from exc
            self.quarantine(name, f"not a notebookscan shard: {type(exc).__name__}: {exc}")
        return None

    def _read_all(self, names: Sequence[str] | None, variables: Sequence[str] | None = None,
                  *, text_as_bytes: bool = False) -> list[ShardData]:
        for _ in range(_VANISH_RETRIES):
            files = self.shard_files() if names is None else list(names)
            try:
                shards = [self._read(f, variables, text_as_bytes=text_as_bytes) for f in files]
                return [s for s in shards if s is not None]
            except _Vanished:
                if names is not None:
                    raise
                continue
        raise StoreError(f"shards of {self.path} kept vanishing while being read; try again")

    # -------------------------------------------------------------- reading

    def table(self, names: Sequence[str] | None = None) -> Table:
        """All points, one row per key, sorted by parameter values.

        ``names`` are the parameter names to expect when the store does not record them
        (an empty store).
        """
        return combine_shards(self._read_all(None), self.metadata().get("names") or names)

    def index(self) -> StoreIndex:
        """Keys of the points already stored, by status (reads only the key columns).

        Shards never change once written, so each is read once per Store object.
        """
        files = self.shard_files()
        live = set(files)
        # the loop thread writes while readers call this: only atomic dict operations
        for stale in set(self._index_cache) - live:
            self._index_cache.pop(stale, None)
        return self.index_of(files)

    def new_shards(self, seen: set[str]) -> list[str]:
        """Shards not in ``seen`` (e.g. written by another scan since the last look)."""
        return [name for name in self.shard_files() if name not in seen]

    def index_of(self, names: Sequence[str]) -> StoreIndex:
        """The :class:`StoreIndex` of the named shards only (shards gone are left out)."""
        entries = []
        for name in names:
            entry = self._index_cache.get(name)
            if entry is None:
                try:
                    shard = self._read(name, ["status"], text_as_bytes=True)
                except _Vanished:
                    continue
                if shard is None:
                    continue
                entry = self._index_cache[name] = _index_entry(shard)
            entries.append(entry)
        return StoreIndex.from_entries(entries)

    def dataset(self, *, lazy: bool | None = None, layout: Layout | None = None,
                extra_coords: dict[str, Sequence[Any]] | None = None,
                pending: dict[str, Sequence[Any]] | None = None) -> Any:
        """The store as a labelled :class:`xarray.Dataset` (see :func:`open_store`)."""
        layout = layout or self.layout()
        if layout.kind == "grid" and not layout.dims:
            layout = Layout("points", ())
        if lazy is None:
            lazy = self.size_bytes() > LAZY_THRESHOLD
        if lazy:
            import dask

            from .lazy import lazy_dataset
            from .shards import hdf5_lock

            # xarray reads a file's metadata (variables, attributes) outside the lock it
            # is given: hold ours while opening. Anything computed meanwhile runs in this
            # thread, since dask's worker threads would wait for the lock held here.
            # A shard compacted away while opening: open again (it is in the new one).
            for _ in range(_VANISH_RETRIES):
                try:
                    with hdf5_lock(), dask.config.set(scheduler="synchronous"):
                        return lazy_dataset(self, layout)
                except (_Vanished, FileNotFoundError):
                    continue
            raise StoreError(f"shards of {self.path} kept vanishing while being opened; "
                             "try again")
        return load_dataset(self, layout, extra_coords=extra_coords, pending=pending)

    def runs(self) -> dict[str, Any]:
        """Provenance of every run that wrote to the store (run id -> record), read from
        the shards' attributes only (cheap, whatever the size of the results)."""
        from .shards import open_dataset

        runs: dict[str, Any] = {}
        for name in self.shard_files():
            try:
                with open_dataset(os.path.join(self.shards_dir, name)) as nc:
                    text = nc.getncattr("provenance") if "provenance" in nc.ncattrs() else ""
            except OSError:
                continue
            with contextlib.suppress(ValueError, TypeError):
                runs.update(json.loads(text))
        return runs

    def size_bytes(self) -> int:
        """Total bytes of the store's shard files."""
        total = 0
        for name in self.shard_files():
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(os.path.join(self.shards_dir, name))
        return total

    # -------------------------------------------------------------- maintenance

    def small_shards(self, max_bytes: int = SMALL_SHARD) -> int:
        """How many shards are small enough that opening them costs more than reading."""
        count = 0
        for name in self.shard_files():
            with contextlib.suppress(FileNotFoundError):
                count += os.path.getsize(os.path.join(self.shards_dir, name)) <= max_bytes
        return count

    def compact(self, *, max_shard_bytes: int = SMALL_SHARD,
                max_total_bytes: int = 512 * 2**20,
                max_memory_bytes: int = COMPACT_MEMORY) -> CompactReport:
        """Rewrite the small shards into as few as possible (see :func:`compact`).

        Big shards stay as they are: reading them costs the same in one file or many.
        Each pass reads shards until they hold ``max_memory_bytes`` in memory, so
        compacting a million points needs no more memory than a fraction of them.
        """
        report = CompactReport()
        if not self.exists:
            report.skipped = "the store has no shards"
            return report
        with _exclusive_lock(os.path.join(self.path, LOCK_FILE)) as locked:
            if not locked:
                report.skipped = "another process is compacting this store"
                return report
            report.removed_temporary = self._remove_dead_temporaries()
            files = self.shard_files()
            report.shards_before = len(files)
            candidates, total = [], 0
            for name in files:
                try:
                    size = os.path.getsize(os.path.join(self.shards_dir, name))
                except FileNotFoundError:
                    continue
                if size <= max_shard_bytes and total + size <= max_total_bytes:
                    candidates.append(name)
                    total += size
            while len(candidates) >= 2:
                done = self._compact_pass(candidates, max_memory_bytes)
                report.points += done
                if not done:
                    break
            if not report.points:
                report.skipped = "nothing to compact"
            report.shards_after = len(self.shard_files())
            self._index_cache.clear()
        return report

    def _compact_pass(self, candidates: list[str], max_memory_bytes: int) -> int:
        """Combine shards from the front of ``candidates`` (removed from it) into one,
        reading them until they hold ``max_memory_bytes``; returns the points written."""
        shards, chosen, held = [], [], 0
        while candidates and (len(chosen) < 2 or held < max_memory_bytes):
            name = candidates.pop(0)
            try:
                # text as bytes: a million points' bookkeeping as Python strings is ~0.5 GB
                shard = self._read(name, text_as_bytes=True)
            except _Vanished:
                continue
            if shard is not None:
                shards.append(shard)
                chosen.append(name)
                held += shard.nbytes
        if len(chosen) < 2:
            return 0
        table = combine_shards(shards, self.metadata().get("names"), consume=True)
        del shards
        self.write(table_to_shard(table))
        for name in chosen:  # only after the compacted shard is safely in place
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.shards_dir, name))
        return len(table)

    def _remove_dead_temporaries(self) -> int:
        """Delete ``.tmp-*`` files left by writers of this host that no longer run."""
        removed = 0
        host = _clean(socket.gethostname())
        for name in os.listdir(self.shards_dir):
            if not name.startswith(".tmp-"):
                continue
            parts = name[len(".tmp-"):].split(".")
            if len(parts) < 4 or parts[1] != host:
                continue
            try:
                pid = int(parts[2])
            except ValueError:
                continue
            if not pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.shards_dir, name))
                    removed += 1
        return removed

    def verify(self) -> VerifyReport:
        """Open every shard and report the ones that cannot be read (nothing is moved)."""
        report = VerifyReport()
        for name in self.shard_files():
            path = os.path.join(self.shards_dir, name)
            try:
                shard = read_shard(path)
                if "key" not in shard.bookkeeping or "status" not in shard.bookkeeping:
                    raise KeyError("no key/status variables")
            except FileNotFoundError:
                continue
            except Exception as exc:
                report.corrupt[name] = f"{type(exc).__name__}: {exc}"
                continue
            report.ok.append(name)
            report.points += shard.n
        return report


LAZY_THRESHOLD = 2 * 2**30  # stores bigger than this open lazily by default


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


class StoreIndex:
    """Keys of stored points: ``done`` ones and ``failed`` ones (never done).

    Held as sorted arrays of 20-byte keys; ``is_done``/``is_failed`` test many keys at
    once, ``done``/``failed`` give sets of str (built on first use).
    """

    def __init__(self, done_keys: np.ndarray, failed_keys: np.ndarray):
        self.done_keys = done_keys
        self.failed_keys = failed_keys

    @classmethod
    def from_entries(cls, entries: Sequence[tuple[np.ndarray, np.ndarray]]) -> StoreIndex:
        """From ``(keys, is_done)`` pairs of shards; a key done anywhere is done."""
        if not entries:
            empty = np.empty(0, dtype=KEY_DTYPE)
            return cls(empty, empty)
        keys = np.concatenate([k for k, _ in entries])
        is_done = np.concatenate([d for _, d in entries])
        done = np.unique(keys[is_done])
        failed = np.unique(keys[~is_done])
        return cls(done, failed[~_sorted_isin(failed, done)])

    @functools.cached_property
    def done(self) -> set[str]:
        """Keys of the points stored as done."""
        return set(self.done_keys.astype(str).tolist())

    @functools.cached_property
    def failed(self) -> set[str]:
        """Keys of the points stored as failed and never done."""
        return set(self.failed_keys.astype(str).tolist())

    def is_done(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """A bool per key: is it stored as done?"""
        return _sorted_isin(as_key_array(keys), self.done_keys)

    def is_failed(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """A bool per key: is it stored as failed (and never done)?"""
        return _sorted_isin(as_key_array(keys), self.failed_keys)

    def __len__(self) -> int:
        return len(self.done_keys) + len(self.failed_keys)


def _sorted_isin(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_keys)`` by binary search (no copy of the stored keys)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def as_key_array(keys: Sequence[str] | np.ndarray) -> np.ndarray:
    """Keys as a ``KEY_DTYPE`` array (str keys are ASCII hex)."""
    if isinstance(keys, np.ndarray) and keys.dtype == KEY_DTYPE:
        return keys
    return np.asarray(keys if isinstance(keys, np.ndarray) else list(keys)).astype(KEY_DTYPE)


def table_to_shard(table: Table) -> ShardData:
    """A combined table as one shard (used by compaction)."""
    result_attrs = {
        name: {k: v for k, v in attrs.items() if k != "notebookscan_role"}
        for name, attrs in table.result_attrs.items()
    }
    return ShardData(
        len(table), dict(table.params), dict(table.bookkeeping), dict(table.results),
        dict(table.result_dims), result_attrs, dict(table.lengths), dict(table.coords),
        {"provenance": json.dumps(table.runs, sort_keys=True)},
    )


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
def _exclusive_lock(path: str):
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


# ------------------------------------------------------------------ functions


def _existing_store(path: str | os.PathLike[str]) -> Store:
    store = Store(path)
    if not store.exists:
        raise StoreError(
            f"{os.fspath(path)!r} is not a notebookscan store (no {SHARDS}/ directory in it). "
            "Check the path; a store is created by running a Scan with store=that path."
        )
    return store


def open_store(path: str | os.PathLike[str], *, lazy: bool | None = None) -> Any:
    """Open a store as a labelled :class:`xarray.Dataset`.

    Parameters
    ----------
    path
        The store directory.
    lazy
        Load nothing until asked (dask arrays, one chunk per point). ``None`` (default)
        is lazy for stores over 2 GiB.

    Returns
    -------
    xarray.Dataset
        Grid-layout stores have one dimension per parameter; others have a ``point``
        dimension with the parameters as coordinates. ``status`` says which points are
        ``done``, ``failed`` or ``missing``; ``error``/``traceback`` hold failures.
    """
    return _existing_store(path).dataset(lazy=lazy)


def compact(path: str | os.PathLike[str]) -> CompactReport:
    """Rewrite a store's small shards into one, never leaving data missing.

    The compacted shard is written (atomically) before the old ones are deleted, so a
    kill at any moment leaves every point readable (possibly twice, which reading
    de-duplicates). One compactor runs at a time (a lock file); others skip.
    """
    return _existing_store(path).compact()


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check that every shard of a store can be read; report the corrupt ones by name."""
    return _existing_store(path).verify()


def merge(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
          dest: str | os.PathLike[str]) -> MergeReport:
    """Copy the shards of one or more stores into ``dest``.

    This is all merging takes: shard names never collide, and reading de-duplicates
    points by key. The report lists points held by both with different results
    (e.g. computed with different code); the newest ``done`` result is shown.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    target = Store(dest)
    report = MergeReport()
    for source_path in sources:
        source = _existing_store(source_path)
        meta = source.metadata()
        if meta:
            target.prepare(Layout.from_json(meta["layout"]), meta.get("names", []))
        else:
            os.makedirs(target.shards_dir, exist_ok=True)
        before = _values_by_key(target)
        for name in source.shard_files():
            if not _SAFE_NAME.match(name):
                raise StoreError(f"refusing to copy the shard name {name!r}: not a plain file name")
            origin = os.path.join(source.shards_dir, name)
            if os.path.islink(origin):
                raise StoreError(f"refusing to copy {origin}: it is a symbolic link, and a store "
                                 "holds only its own files")
            destination = os.path.join(target.shards_dir, name)
            if os.path.exists(destination):
                report.already_present.append(name)
                continue
            tmp = os.path.join(target.shards_dir, f".tmp-merge-{uuid.uuid4().hex}")
            shutil.copyfile(origin, tmp)
            os.replace(tmp, destination)
            report.copied.append(name)
        after = _values_by_key(source)
        report.conflicts.extend(
            key for key, value in after.items() if key in before and before[key] != value
        )
    return report


def _values_by_key(store: Store) -> dict[str, tuple]:
    """A comparable fingerprint of each done point's results (for merge conflicts)."""
    if not store.shard_files():
        return {}
    table = store.table()
    status = table.bookkeeping.get("status")
    out = {}
    for i, key in enumerate(table.bookkeeping["key"].tolist()):
        if status is not None and status[i] != "done":
            continue
        out[key] = tuple(np.asarray(table.results[n][i]).tobytes() for n in sorted(table.results))
    return out
