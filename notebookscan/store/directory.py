"""The :class:`Store`: one result store directory — its metadata, reading, writing and
quarantine. The guarantees it keeps are listed in :mod:`notebookscan.store`."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError, StoreWarning
from .attrs import apply_attrs, check_parameter_attrs, check_result_attrs
from .dataset import broadcast_excluded, load_dataset
from .files import (
    ForeignFile,
    check_own_directory,
    dead_temporaries,
    entry_problem,
    parse_json,
    probe_writable,
    read_json,
    remove_entries,
    set_aside,
    writer_tag,
)
from .forms import Form
from .index import StoreIndex, index_entry
from .maintenance import (
    SMALL_SHARD,
    CompactReport,
    ResolveReport,
    VerifyReport,
    compact_store,
    resolve_store,
    verify_store,
)
from .schema import (
    CHECKPOINTS_DIR,
    LEASES,
    META_FILE,
    META_LOCK,
    OWN_ENTRIES,
    QUARANTINE,
    ROLE,
    SEGMENTS_DIR,
    SHARDS,
    STORE_FORMAT,
    Layout,
)
from .shards import (
    MalformedShard,
    ShardData,
    ShardVanished,
    check_rows,
    hdf5_lock,
    new_shard_name,
    open_dataset,
    publish_shard,
    read_shard,
    unreadable_reason,
    write_shard_unpublished,
)
from .table import Conflict, ReadRules, Table, combine_shards
from .versions import check_forms, recorded_forms, register_run, run_order, waiting_lock

if TYPE_CHECKING:  # imported where used: an eager open needs neither
    from .checkpoints import CheckpointDirectory

__all__ = ["Store", "compact", "existing_store", "open_store", "verify"]

_VANISH_RETRIES = 10
# Shards whose rows' keys matched their parameters, in this process: a shard never
# changes, so the hash per row is paid once per file (path, device, inode, size, ctime),
# not once per open_store.
_KEYS_CHECKED: set[tuple[str, int, int, int, int]] = set()
_KEYS_CHECKED_MAX = 1_000_000
_LISTING_ROUNDS = 1000  # listings a read takes at most while shards keep changing


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
        self._forms: dict[str, Form] = {}  # recorded result forms (see check_forms)
        self._result_attrs: dict[str, dict[str, str]] = {}  # recorded units (see .attrs)
        self._runs_known: dict[str, int] = {}  # ordinals of the runs this object registered
        self._names_fix: list[str] | None = None  # the shards' names, when the metadata's are wrong
        self._names_checked = False

    def __repr__(self) -> str:
        return f"<Store {self.path}: {len(self.shard_files())} shard(s)>"

    # -------------------------------------------------------------- metadata

    @property
    def exists(self) -> bool:
        """True once the store's shard directory exists (something was written to it)."""
        return os.path.isdir(self.shards_dir)

    def metadata(self) -> dict[str, Any]:
        """The store's ``notebookscan.json`` (empty dict when there is none).

        When it names parameters no shard holds (see :meth:`check_metadata`), the
        shards' names are given instead, and a grid layout becomes a points layout.
        """
        path = os.path.join(self.path, META_FILE)
        try:
            meta = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except ForeignFile as exc:
            raise StoreError(f"{path} is {exc.strerror}; the store reads only a regular "
                             "file there. Move it away.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
        names = meta.get("names", []) if isinstance(meta, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StoreError(f"{path} is not a notebookscan store's metadata (a JSON object "
                             "whose 'names' is a list of parameter names); fix or delete it")
        if self._names_fix is not None:
            meta = {**meta, "names": list(self._names_fix),
                    "layout": Layout("points", tuple(self._names_fix)).to_json()}
        return meta

    def check_metadata(self) -> str:
        """Check the parameter names of ``notebookscan.json`` against the shards.

        Returns the problem ("" when none). Metadata that names parameters no shard
        holds, while the shards agree among themselves, is wrong (not the shards): the
        store is then read with the shards' names and a warning says how to fix the
        file. Shards are looked at only when the first one disagrees.
        """
        self._names_checked = True
        self._names_fix = None
        expected = set(self.metadata().get("names", []))
        files = self._listing()[0]
        if not expected or not files:
            return ""
        seen = []
        for name in files:
            names = _parameter_names(os.path.join(self.shards_dir, name))
            if names is None:
                continue
            if names == expected:
                return ""
            seen.append(names)
            if len(seen) > 1 and names != seen[0]:
                return ""  # shards differ: the ones unlike the metadata are set aside
        if not seen:
            return ""
        self._names_fix = sorted(seen[0], key=str)
        problem = (f"{os.path.join(self.path, META_FILE)} names the parameters "
                   f"{sorted(expected)}, but every shard holds {self._names_fix}; the store "
                   f"is read with the shards' names. Fix \"names\" (and \"layout\") in that "
                   "file.")
        warnings.warn(problem, StoreWarning, stacklevel=3)
        return problem

    def _check_names_once(self) -> None:
        if not self._names_checked:
            self.check_metadata()

    def layout(self) -> Layout:
        """The layout results are shown in (``points`` when the store does not say)."""
        meta = self.metadata()
        if "layout" in meta:
            return Layout.from_json(meta["layout"])
        return Layout("points", ())

    def _write_metadata(self, meta: dict[str, Any]) -> None:
        tmp = os.path.join(self.path, f".tmp-meta.{_writer()}.{uuid.uuid4().hex}.json")
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, META_FILE))

    def prepare(self, layout: Layout, names: Sequence[str],
                attrs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Create the directories and metadata, or check an existing store fits ``names``.

        A store holds one set of parameter names. Adding a points-layout space to a
        grid store turns the store's layout into ``points``. A store that cannot be
        written, a directory that holds other things than a store, and a path under a
        file are refused here, before anything is computed. Temporary files of writers
        that are gone are removed.

        ``attrs`` are the parameters' declared units and long names
        (:attr:`Space.attrs <notebookscan.Space.attrs>`): recorded when the store has
        none for a parameter, refused when they differ from those it records (see
        :mod:`notebookscan.store.attrs`).
        """
        self._create()
        self.remove_leftovers()
        declared = {str(k): dict(v) for k, v in (attrs or {}).items() if v}
        # under the metadata lock: a runner recording result forms or units meanwhile
        # must not have its record overwritten by this one's
        with waiting_lock(os.path.join(self.path, META_LOCK)):
            self._prepare_metadata(layout, list(names), declared)

    def _prepare_metadata(self, layout: Layout, names: list[str],
                          declared: dict[str, dict[str, str]]) -> None:
        """:meth:`prepare`'s work on ``notebookscan.json`` (the caller holds its lock)."""
        meta = self.metadata()
        if not meta:
            meta = {"format": STORE_FORMAT, "names": names, "layout": layout.to_json(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            check_parameter_attrs(self, meta, declared)
            try:
                self._write_metadata(meta)
            except OSError as exc:
                raise StoreError(_cannot_write(self.path, exc)) from None
            return
        stored = list(meta.get("names", names))
        if sorted(stored) != sorted(names):
            raise StoreError(
                f"the store {self.path} holds points with parameters {stored}, but this scan's "
                f"space has {names}. Use another store, or give the space the same parameters "
                "(fixed values are fine: grid(..., tau=0.01))."
            )
        changed = check_parameter_attrs(self, meta, declared)
        old = Layout.from_json(meta.get("layout", {"kind": "points", "dims": stored}))
        if old.kind == "grid" and layout.kind != "grid":
            meta["layout"] = Layout("points", tuple(stored)).to_json()
            changed = True
        if changed:
            self._write_metadata(meta)

    # -------------------------------------------------------------- shards

    def _create(self) -> None:
        """Make the store's directories, or refuse a path that cannot be a store."""
        path = self.path
        if os.path.isdir(path) and not _looks_like_store(path):
            raise StoreError(
                f"{path} is a directory that holds other files and is not a notebookscan "
                "store (no notebookscan.json, no shards/); give an empty or new directory "
                "as the store")
        check_own_directory(self.shards_dir, "shards/")
        check_own_directory(self.quarantine_dir, "quarantine/")
        check_own_directory(os.path.join(path, LEASES), "leases/")  # the run's record goes there
        try:
            os.makedirs(self.shards_dir, exist_ok=True)
            probe_writable(path)
            probe_writable(self.shards_dir)
        except OSError as exc:
            raise StoreError(_cannot_write(path, exc)) from None

    def shard_files(self) -> list[str]:
        """Names of the complete shards (temporary files excluded), sorted.

        Entries named like shards that are not regular files (a symbolic link, a FIFO,
        a directory, a device) are moved to ``quarantine/`` with the reason, unread.
        """
        names, foreign = self._listing()
        for name, reason in foreign.items():
            self.quarantine(name, f"not a shard: {reason}")
        return names

    def _listing(self) -> tuple[list[str], dict[str, str]]:
        """Regular shard files, and entries named like shards that are not (-> why)."""
        check_own_directory(self.shards_dir, "shards/")
        check_own_directory(self.quarantine_dir, "quarantine/")
        try:
            entries = list(os.scandir(self.shards_dir))
        except (FileNotFoundError, NotADirectoryError):
            return [], {}
        names, foreign = [], {}
        for entry in entries:
            if not entry.name.endswith(".nc") or entry.name.startswith("."):
                continue
            problem = entry_problem(entry)
            if problem:
                foreign[entry.name] = problem
            else:
                names.append(entry.name)
        return sorted(names), foreign

    def leftovers(self) -> list[str]:
        """Paths of temporary files whose writer is gone (see :func:`files.dead_temporaries`)."""
        return [os.path.join(directory, name) for directory in self._temporaries_dirs()
                for name in dead_temporaries(directory)]

    def remove_leftovers(self) -> int:
        """Delete the temporary files of writers that are gone; how many were removed."""
        return sum(remove_entries(directory, dead_temporaries(directory))
                   for directory in self._temporaries_dirs())

    def _temporaries_dirs(self) -> tuple[str, ...]:
        """Where writers leave temporary files: the store, shards/, leases/ (only when
        it is a real directory: a link there is not followed)."""
        leases = os.path.join(self.path, LEASES)
        real = os.path.isdir(leases) and not os.path.islink(leases)
        return (self.path, self.shards_dir, *((leases,) if real else ()))

    def write(self, shard: ShardData, *, register_runs: bool = True) -> str:
        """Write one shard atomically and return its file name.

        The ``provenance`` attribute is written only while no shard this Store object
        wrote still holds the same provenance: a run keeps it in its first shard.
        With ``register_runs``, the runs of the shard's rows not yet in ``runs.json``
        take their ordinals (see :meth:`register_run`).
        """
        name, tmp = self.write_unpublished(shard, register_runs=register_runs)
        publish_shard(tmp, os.path.join(self.shards_dir, name))
        return name

    def write_unpublished(self, shard: ShardData, *,
                          register_runs: bool = True) -> tuple[str, str]:
        """:meth:`write` up to the fsync: the shard's file name and the temporary file
        holding it, which :func:`~notebookscan.store.shards.publish_shard` (any thread, no
        HDF5) makes durable and visible under that name. Until then no reader sees it."""
        check_own_directory(self.shards_dir, "shards/")
        os.makedirs(self.shards_dir, exist_ok=True)
        if register_runs and "run" in shard.bookkeeping:
            for run_id in _run_ids(shard.bookkeeping["run"]):
                self.register_run(run_id)
        name = new_shard_name()
        text = shard.attrs.get("provenance")
        holder = self._provenance_in.get(text) if isinstance(text, str) else None
        if holder is not None and os.path.exists(os.path.join(self.shards_dir, holder)):
            # a run's provenance (tens of kB with the function's source) is kept in the
            # first shard of the run written here; later shards refer to it by run id
            shard = dataclasses.replace(
                shard, attrs={k: v for k, v in shard.attrs.items() if k != "provenance"})
        tmp = write_shard_unpublished(self.shards_dir, name, shard)
        if isinstance(text, str) and "provenance" in shard.attrs:
            self._provenance_in[text] = name
        return name, tmp

    # -------------------------------------------------------------- versions and forms

    def register_run(self, run_id: str) -> int:
        """The ordinal of run ``run_id`` in this store, taken now (atomically, under a
        lock) if it has none: later runs have higher ordinals, whatever the clocks."""
        ordinal = self._runs_known.get(run_id)
        if ordinal is None:
            ordinal = self._runs_known[run_id] = register_run(self, run_id)
        return ordinal

    def run_order(self) -> dict[str, int]:
        """Run id -> ordinal of the runs ``runs.json`` lists (see :mod:`.versions`)."""
        return run_order(self)

    def read_rules(self) -> ReadRules:
        """The run order and result forms reading this store follows."""
        return ReadRules(run_order(self), recorded_forms(self), supersede=self.segmented)

    def check_forms(self, shard: ShardData) -> str:
        """Why ``shard`` may not be written (a result in another form than the one the
        store records, or with other units: see :mod:`.attrs`), else ``""`` after
        recording the forms and units of its new results."""
        return (check_forms(self, shard, self._forms)
                or check_result_attrs(self, shard, self._result_attrs))

    def conflicts(self) -> list[Conflict]:
        """Points stored as done twice with different values (both kept; one shown)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            return self.table().conflicts

    def resolve(self, keep: str, keys: Sequence[str] | None = None) -> ResolveReport:
        """Settle conflicts in favour of run ``keep``: the other done versions of each
        conflicting point (of ``keys`` only, when given) leave the shards.

        The shards rewritten are kept in ``superseded/``, so nothing is lost. Run ids
        are listed by :meth:`conflicts`; a point with no version from ``keep`` is left
        as it is.
        """
        return resolve_store(self, keep, keys)

    def quarantine(self, name: str, reason: str) -> None:
        """Move a shard that cannot be read out of the way, with the reason beside it."""
        where = set_aside(os.path.join(self.shards_dir, name), self.quarantine_dir, name, reason)
        warnings.warn(
            f"shard {name} of the store {self.path} cannot be read ({reason}); {where}. "
            "The rest of the store loads; the points it held will run again.",
            StoreWarning, stacklevel=4,
        )

    def read_shard(self, name: str, variables: Sequence[str] | None = None, *,
                   text_as_bytes: bool = False) -> ShardData | None:
        """One shard by file name, or None when it was set aside as unreadable.

        Raises ``ShardVanished`` when the file is gone (compacted away meanwhile).
        """
        path = os.path.join(self.shards_dir, name)
        try:
            return self._read_checked(name, variables, text_as_bytes)
        except ForeignFile as exc:  # replaced by a link or FIFO since the listing
            self.quarantine(name, f"not a shard: {exc.strerror}")
            return None
        except FileNotFoundError as exc:
            raise ShardVanished(name) from exc
        except OSError as exc:
            if not os.path.exists(path):  # netCDF-C reports an unlinked file as an HDF error
                raise ShardVanished(name) from exc
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.EACCES):
                raise StoreError(f"cannot open shard {path}: {exc}") from exc
            self.quarantine(name, f"{type(exc).__name__}: {exc}")
        except (KeyError, ValueError, RuntimeError, IndexError, MemoryError) as exc:
            if not os.path.lexists(path):
                raise ShardVanished(name) from exc
            self.quarantine(name, unreadable_reason(exc))
        return None

    def _read_checked(self, name: str, variables: Sequence[str] | None,
                      text_as_bytes: bool) -> ShardData:
        """:func:`read_shard` and :func:`check_rows`, and the parameters the store has.

        The key check (a hash per row) runs once per file: a shard never changes.
        """
        path = os.path.join(self.shards_dir, name)
        identity = _identity(path)
        shard = read_shard(path, variables, text_as_bytes=text_as_bytes)
        # the same file before and after the read (not swapped meanwhile), checked before
        known = identity in _KEYS_CHECKED and _identity(path) == identity
        check_rows(shard, keys=not known)
        if len(_KEYS_CHECKED) > _KEYS_CHECKED_MAX:
            _KEYS_CHECKED.clear()
        _KEYS_CHECKED.add(identity)
        expected = self.metadata().get("names", [])
        if expected and set(shard.params) != set(expected) and not self._names_checked:
            self.check_metadata()  # the metadata may be what is wrong, not the shard
            expected = self.metadata().get("names", [])
        if expected and set(shard.params) != set(expected):
            raise MalformedShard(f"it holds the parameters {sorted(shard.params)}, the store "
                                 f"{sorted(expected)}")
        return shard

    def _read_all(self, names: Sequence[str] | None, variables: Sequence[str] | None = None,
                  *, text_as_bytes: bool = False) -> list[ShardData]:
        if names is not None:
            shards = [self.read_shard(f, variables, text_as_bytes=text_as_bytes) for f in names]
            return [s for s in shards if s is not None]
        got = self._read_listed(
            lambda name: self.read_shard(name, variables, text_as_bytes=text_as_bytes), {})
        return [got[name] for name in sorted(got) if got[name] is not None]

    def _read_listed(self, read: Any, got: dict[str, Any]) -> dict[str, Any]:
        """``read(name)`` of every shard, listing again after each round of reads until
        a listing holds no shard not read yet (``got``: results known already).

        A shard that vanishes was compacted away after its replacement was written,
        and a shard may be created and another removed while a listing is taken: only
        a listing taken after the reads tells that nothing was missed. Shards read
        before they vanished stay in the result (their points are also elsewhere).
        """
        files = self.shard_files()
        for _ in range(_LISTING_ROUNDS):
            vanished = False
            for name in files:
                if name in got:
                    continue
                try:
                    got[name] = read(name)
                except ShardVanished:
                    vanished = True
            files = self.shard_files()
            if not vanished and all(name in got for name in files):
                return got
        raise StoreError(f"the shards of {self.path} kept changing while being read "
                         f"({_LISTING_ROUNDS} listings); try again")

    # -------------------------------------------------------------- reading

    def table(self, names: Sequence[str] | None = None) -> Table:
        """All points, one row per key, sorted by parameter values.

        ``names`` are the parameter names to expect when the store does not record them
        (an empty store).
        """
        self._check_names_once()
        return combine_shards(self._read_all(None), self.metadata().get("names") or names,
                              rules=self.read_rules())

    def index(self) -> StoreIndex:
        """Keys of the points already stored, by status (reads only the key columns).

        Shards never change once written, so each is read once per Store object. Every
        stored point is counted, whatever compacts or merges meanwhile: the shards are
        listed again after reading, until a listing holds no shard not read.
        """
        live = set(self.shard_files())
        # the loop thread writes while readers call this: only atomic dict operations
        for stale in set(self._index_cache) - live:
            self._index_cache.pop(stale, None)
        got = self._read_listed(self._index_entry, {
            name: entry for name in live
            if (entry := self._index_cache.get(name)) is not None})
        return StoreIndex.from_entries([e for e in got.values() if e is not None], got)

    def _index_entry(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A shard's keys and done flags, cached; None when it was set aside."""
        entry = self._index_cache.get(name)
        if entry is None:
            shard = self.read_shard(name, ["status"], text_as_bytes=True)
            if shard is None:
                return None
            entry = self._index_cache[name] = index_entry(shard)
        return entry

    def new_shards(self, seen: set[str]) -> list[str]:
        """Shards not in ``seen`` (e.g. written by another scan since the last look)."""
        return [name for name in self.shard_files() if name not in seen]

    def index_of(self, names: Sequence[str]) -> StoreIndex:
        """The :class:`StoreIndex` of the named shards only (shards gone are left out)."""
        entries = []
        for name in names:
            try:
                entry = self._index_entry(name)
            except ShardVanished:
                continue
            if entry is not None:
                entries.append(entry)
        return StoreIndex.from_entries(entries)

    def dataset(self, *, lazy: bool | None = None, layout: Layout | None = None,
                extra_coords: dict[str, Sequence[Any]] | None = None,
                pending: dict[str, Sequence[Any]] | None = None) -> Any:
        """The store as a labelled :class:`xarray.Dataset` (see :func:`open_store`)."""
        self._check_names_once()
        layout = layout or self.layout()
        if layout.kind == "grid" and not layout.dims:
            layout = Layout("points", ())
        if lazy is None:
            lazy = self.size_bytes() > LAZY_THRESHOLD
        if lazy:
            import dask  # heavy: only for lazy loading

            from .lazy import lazy_dataset

            # xarray reads a file's metadata (variables, attributes) outside the lock it
            # is given: hold ours while opening. Anything computed meanwhile runs in this
            # thread, since dask's worker threads would wait for the lock held here.
            # A shard compacted away while opening: open again (it is in the new one).
            for _ in range(_VANISH_RETRIES):
                try:
                    with hdf5_lock(), dask.config.set(scheduler="synchronous"):
                        return apply_attrs(lazy_dataset(self, layout), self.metadata())
                except (ShardVanished, FileNotFoundError):
                    continue
            raise StoreError(f"shards of {self.path} kept vanishing while being opened; "
                             "try again")
        return apply_attrs(load_dataset(self, layout, extra_coords=extra_coords,
                                        pending=pending), self.metadata())

    def runs(self) -> dict[str, Any]:
        """Provenance of every run that wrote to the store (run id -> record), read from
        the shards' attributes only (cheap, whatever the size of the results)."""
        runs: dict[str, Any] = {}
        for name in self.shard_files():
            try:
                with open_dataset(os.path.join(self.shards_dir, name)) as nc:
                    text = nc.getncattr("provenance") if "provenance" in nc.ncattrs() else ""
            except (OSError, RuntimeError):
                continue
            with contextlib.suppress(ValueError, TypeError):
                runs.update(parse_json(text))
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

    # a segmented store keeps its recordings as a store of their own, plus checkpoints

    @property
    def segmented(self) -> bool:
        """True for a segmented store (its recordings are a store inside it)."""
        return os.path.isdir(os.path.join(self.path, SEGMENTS_DIR, SHARDS))

    @property
    def recordings(self) -> Store | None:
        """The store of a segmented store's recordings (``segments/``); None otherwise."""
        return Store(os.path.join(self.path, SEGMENTS_DIR)) if self.segmented else None

    @property
    def checkpoints(self) -> CheckpointDirectory:
        """A segmented store's checkpoints (``segments/checkpoints``, empty for a plain
        store), set aside into ``segments/quarantine/checkpoints``."""
        from .checkpoints import CheckpointDirectory

        segments = os.path.join(self.path, SEGMENTS_DIR)
        return CheckpointDirectory(os.path.join(segments, CHECKPOINTS_DIR),
                                   os.path.join(segments, QUARANTINE, CHECKPOINTS_DIR))

    def compact(self, **limits: int) -> CompactReport:
        """Rewrite the small shards into as few as possible (see :func:`compact_store`);
        a segmented store's recordings too (their report is ``report.recordings``)."""
        report = compact_store(self, **limits)
        recordings = self.recordings
        if recordings is not None:
            report.recordings = compact_store(recordings, **limits)
        return report

    def verify(self) -> VerifyReport:
        """Open every shard and report the ones that cannot be read (see :func:`verify_store`);
        a segmented store's recordings and checkpoints too (nothing is moved)."""
        report = verify_store(self)
        recordings = self.recordings
        if recordings is not None:
            part = verify_store(recordings)
            prefix = f"{SEGMENTS_DIR}/{SHARDS}/"
            report.ok += [prefix + name for name in part.ok]
            report.corrupt.update({prefix + n: why for n, why in part.corrupt.items()})
            ok, broken = self.checkpoints.verify_all()
            prefix = f"{SEGMENTS_DIR}/{CHECKPOINTS_DIR}/"
            report.checkpoints = len(ok)
            report.corrupt.update({prefix + label: why for label, why in broken.items()})
        return report


LAZY_THRESHOLD = 2 * 2**30  # stores bigger than this open lazily by default


def _run_ids(column: np.ndarray) -> list[str]:
    """The distinct run ids of a ``run`` column, as text, in order of first row."""
    unique, first = np.unique(column, return_index=True)
    return [u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u)
            for u in unique[np.argsort(first)].tolist()]


# ------------------------------------------------------------------ functions


def _writer() -> str:
    """``host.pid`` for temporary file names (their writer; see :func:`dead_temporaries`)."""
    return writer_tag()


def _identity(path: str) -> tuple[str, int, int, int, int]:
    """What tells one file from another at ``path``; ctime because no one can set it back
    after changing the file (mtime can be)."""
    st = os.lstat(path)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


def _looks_like_store(path: str) -> bool:
    """True for an empty directory or one holding any of a store's own entries."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return True  # the write that follows reports why
    return not names or bool(names & OWN_ENTRIES)


def _cannot_write(path: str, exc: OSError) -> str:
    """One line: why the store at ``path`` cannot be written, and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and not os.path.isdir(path)):
        return (f"cannot use {path} as a store: it, or a directory above it, is a file "
                f"({reason}); give a directory path")
    if exc.errno == errno.ENOSPC:
        return f"cannot write the store {path}: no space left on the device; free space first"
    return (f"cannot write the store {path} ({reason}); give a directory you can write, or "
            "fix its permissions (a read-only store can still be opened, verified and merged "
            "from)")


def _parameter_names(path: str) -> set[str] | None:
    """The parameter names of one shard, from its metadata (None when unreadable)."""
    try:
        with open_dataset(path) as nc:
            return {name for name, var in nc.variables.items()
                    if ROLE in var.ncattrs() and var.getncattr(ROLE) == "parameter"}
    except (OSError, RuntimeError, ValueError):
        return None


def existing_store(path: str | os.PathLike[str]) -> Store:
    store = Store(path)
    if not store.exists:
        raise StoreError(
            f"{os.fspath(path)!r} is not a notebookscan store (no {SHARDS}/ directory in it). "
            "Check the path; a store is created by running a Scan with store=that path."
        )
    return store


def open_store(path: str | os.PathLike[str], *, lazy: bool | None = None,
               broadcast: str | Sequence[str] | None = None) -> Any:
    """Open a store as a labelled :class:`xarray.Dataset`.

    Parameters
    ----------
    path
        The store directory.
    lazy
        Load nothing until asked (dask arrays, one chunk per point). ``None`` (default)
        is lazy for stores over 2 GiB.
    broadcast
        A grid dimension (or several) along which results computed once stand for the
        cells the scan dropped there (see
        :func:`~notebookscan.store.dataset.broadcast_excluded`); loads the data.

    Returns
    -------
    xarray.Dataset
        Grid-layout stores have one dimension per parameter; others have a ``point``
        dimension with the parameters as coordinates. ``status`` says which points are
        ``done``, ``failed`` or ``missing``, and which grid cells no run's space held
        (``excluded``, e.g. dropped by ``where``); ``error``/``traceback`` hold failures.
        Declared units and long names (:meth:`Space.with_attrs
        <notebookscan.Space.with_attrs>`, a returned DataArray's ``attrs``) are the
        ``attrs`` of the parameter coordinates and result variables, so plots label
        their axes with them.
    """
    ds = existing_store(path).dataset(lazy=lazy)
    return ds if broadcast is None else broadcast_excluded(ds, broadcast)


def compact(path: str | os.PathLike[str]) -> CompactReport:
    """Rewrite a store's small shards into one, never leaving data missing.

    The compacted shard is written (atomically) before the old ones are deleted, so a
    kill at any moment leaves every point readable (possibly twice, which reading
    de-duplicates). One compactor runs at a time (a lock file); others skip.
    """
    return existing_store(path).compact()


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check that every shard of a store can be read; report the corrupt ones by name."""
    return existing_store(path).verify()


