"""Keeping a store in shape: compaction, verification, leftovers of dead writers.

Every function here takes a :class:`~notebookscan.store.directory.Store` and acts only
inside its directory.

Compaction never loses a row: it combines only shards whose results have the same
forms, keeps every done version of a point whose values differ from the shown one
(a conflict, until :func:`resolve_store` settles it), and reads the shard it wrote
back — rows per key and a checksum per variable — before deleting anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError, StoreWarning
from .compaction import Input, StreamedPass, read_input, unchunked
from .files import exclusive_lock, set_aside
from .forms import compatible
from .journal import fold_journals
from .ragged import Ragged
from .schema import LOCK_FILE, SUPERSEDED
from .shards import (
    MalformedShard,
    ShardData,
    ShardVanished,
    read_shard,
    shard_variables,
    unreadable_reason,
)
from .table import Conflict, ReadRules, combine_shards, table_to_shard, typed_parts

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["CompactReport", "ResolveReport", "VerifyReport", "compact_store",
           "resolve_store", "verify_store"]

SMALL_SHARD = 16 * 2**20  # shards up to this size are worth compacting
COMPACT_MEMORY = 32 * 2**20  # shard data read per compaction pass (the pass needs ~2x)


@dataclass
class CompactReport:
    """What :func:`compact` did."""

    shards_before: int = 0
    shards_after: int = 0
    points: int = 0
    removed_temporary: int = 0
    folded: int = 0  # points folded in from the journals of dead writers
    skipped: str = ""
    recordings: CompactReport | None = None  # a segmented store's recordings
    problems: list[str] = field(default_factory=list)  # passes undone, and why

    def __str__(self) -> str:
        text = (f"compaction skipped: {self.skipped}" if self.skipped else
                f"compacted {self.shards_before} shard(s) into {self.shards_after}, "
                f"{self.points} point(s)")
        if self.recordings is not None:
            text += f"; recordings: {self.recordings}"
        return "\n".join([text, *self.problems])


@dataclass
class VerifyReport:
    """What :func:`verify` found: readable shards and corrupt ones (with reasons).

    ``corrupt`` maps each file that is not a readable shard to the reason: entries
    that are not regular files (links, FIFOs, directories), files that are not NetCDF,
    and malformed shards (see :class:`~notebookscan.store.shards.MalformedShard`).
    ``metadata`` is the problem of ``notebookscan.json``, if any; ``removed_temporary``
    counts the temporary files of gone writers that verifying removed.
    """

    ok: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)
    points: int = 0
    checkpoints: int | None = None  # sound checkpoints of a segmented store
    conflicts: list[Conflict] = field(default_factory=list)
    metadata: str = ""
    removed_temporary: int = 0

    @property
    def healthy(self) -> bool:
        """True when nothing is corrupt and the metadata is sound."""
        return not self.corrupt and not self.metadata

    def __str__(self) -> str:
        text = f"{len(self.ok)} shard(s) ok, {self.points} point(s)"
        if self.checkpoints is not None:
            text += f", {self.checkpoints} checkpoint(s) ok"
        if self.metadata:
            text += f"\nmetadata: {self.metadata}"
        for name, reason in self.corrupt.items():
            text += f"\ncorrupt: {name}: {reason}"
        for conflict in self.conflicts:
            text += f"\nconflict: {conflict}"
        if self.removed_temporary:
            text += (f"\nremoved {self.removed_temporary} temporary file(s) of writers that "
                     "are gone")
        return text


@dataclass
class ResolveReport:
    """What :func:`resolve_store` did: the points settled, and the shards rewritten
    (the originals are in ``superseded/``)."""

    keys: list[str] = field(default_factory=list)
    rows_removed: int = 0
    rewritten: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"resolved {len(self.keys)} point(s): {self.rows_removed} row(s) of other "
                f"versions left the shards; {len(self.rewritten)} shard(s) rewritten "
                "(originals in superseded/)")



def compact_store(store: Store, *, max_shard_bytes: int = SMALL_SHARD,
            max_total_bytes: int = 512 * 2**20,
            max_memory_bytes: int = COMPACT_MEMORY) -> CompactReport:
    """Rewrite the small shards into as few as possible (see :func:`compact`).

    Big shards stay as they are: reading them costs the same in one file or many.
    Each pass reads shards until they hold ``max_memory_bytes`` in memory, so
    compacting a million points needs no more memory than a fraction of them.
    """
    report = CompactReport()
    if not store.exists:
        report.skipped = "the store has no shards"
        return report
    with exclusive_lock(os.path.join(store.path, LOCK_FILE)) as locked:
        if not locked:
            report.skipped = "another process is compacting this store"
            return report
        report.removed_temporary = remove_dead_temporaries(store)
        report.folded = fold_journals(store)
        files = store.shard_files()
        report.shards_before = len(files)
        candidates, total = [], 0
        for name in files:
            try:
                size = os.path.getsize(os.path.join(store.shards_dir, name))
            except FileNotFoundError:
                continue
            if size <= max_shard_bytes and total + size <= max_total_bytes:
                candidates.append(name)
                total += size
        rules = store.read_rules()
        while len(candidates) >= 2:
            later: list[str] = []  # shards whose forms differ from this pass's
            report.points += _compact_pass(store, candidates, later, max_memory_bytes,
                                           rules, report)
            candidates[:0] = later
        if not report.points:
            report.skipped = "nothing to compact"
        report.shards_after = len(store.shard_files())
        store._index_cache.clear()
    return report

def _compact_pass(store: Store, candidates: list[str], later: list[str],
                  max_memory_bytes: int, rules: ReadRules, report: CompactReport) -> int:
    """Combine shards from the front of ``candidates`` (removed from it) into one,
    taking them until they hold ``max_memory_bytes`` in memory; returns the points
    written.

    Shards holding a result in another form than the pass's go to ``later``. The
    shards are combined a few variables at a time (see :mod:`.compaction`). The
    written shard is read back and checked before the inputs are deleted; on a
    mismatch it is deleted instead, and the inputs stay.
    """
    inputs: list[Input] = []
    held, forms = 0, {}
    while candidates and (len(inputs) < 2 or held < max_memory_bytes):
        name = candidates.pop(0)
        try:
            found = read_input(store, name)
        except ShardVanished:
            continue
        if found is None:
            continue
        if not compatible(found.forms, forms):
            later.append(name)
            continue
        forms.update(found.forms)
        inputs.append(found)
        held += found.nbytes
    if len(inputs) < 2:
        return 0
    chosen = [i.name for i in inputs]
    names = tuple(store.metadata().get("names") or
                  dict.fromkeys(n for i in inputs for n in i.variables["params"]))
    written: list[str] = []
    try:
        with unchunked():
            streamed = StreamedPass(store, inputs, names, rules, _checksum)
            shard = streamed.plan()
            del inputs
            if shard is None:  # a parameter of several types: one shard per type
                return _whole_pass(store, chosen, rules, report)
            written.append(store.write(shard, register_runs=False))
            problem = check_written(store, written[0], shard, streamed.checksums)
    except StoreError as exc:  # an input changed or vanished meanwhile
        problem = str(exc)
    if problem:
        return _undo(store, chosen, written, problem, report)
    _delete(store, chosen)
    return shard.n


def _whole_pass(store: Store, chosen: list[str], rules: ReadRules,
                report: CompactReport) -> int:
    """Combine shards ``chosen`` whole, writing one shard per type of the parameters
    (see :func:`~notebookscan.store.table.typed_parts`); returns the points written."""
    shards = []
    for name in chosen:
        with contextlib.suppress(ShardVanished):
            # text as bytes: a million points' bookkeeping as Python strings is ~0.5 GB
            shard = store.read_shard(name, text_as_bytes=True)
            if shard is not None:
                shards.append(shard)
    if len(shards) != len(chosen):
        return 0  # a shard went meanwhile: the next compaction tries again
    table = combine_shards(shards, store.metadata().get("names"), consume=True, rules=rules,
                           keep_conflicts=True)
    del shards
    written: list[str] = []
    for part in typed_parts(table):  # one type per parameter in each shard
        shard = table_to_shard(part)
        written.append(store.write(shard, register_runs=False))
        problem = check_written(store, written[-1], shard)
        if problem:
            return _undo(store, chosen, written, problem, report)
    _delete(store, chosen)
    return len(table)


def _undo(store: Store, chosen: list[str], written: list[str], problem: str,
          report: CompactReport) -> int:
    """Delete the shards a pass wrote and keep its inputs; say why."""
    for name in written:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(store.shards_dir, name))
    text = (f"compacting {len(chosen)} shard(s) was undone, they are kept as they "
            f"were: the shard written reads back differently ({problem})")
    report.problems.append(text)
    warnings.warn(f"{store.path}: {text}", StoreWarning, stacklevel=5)
    return 0


def _delete(store: Store, chosen: list[str]) -> None:
    for name in chosen:  # only after the compacted shard is safely in place
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(store.shards_dir, name))


CHECK_BYTES = 2**20  # variables of a written shard read back at a time, at most


def check_written(store: Store, name: str, expected: ShardData,
                  checksums: dict[tuple[str, str], str] | None = None) -> str:
    """Read shard ``name`` back and compare it with ``expected``: its keys row by row,
    and a checksum of every variable. Returns what differs, or ``""``.

    ``checksums`` holds, by ``(part, name)``, the checksums of columns of ``expected``
    already computed (those of a :class:`~notebookscan.store.compaction.Deferred`
    column: it is not built again). The shard is read back a few variables at a time
    (about :data:`CHECK_BYTES` of them), not whole: the check holds little more memory
    than ``expected`` itself.
    """
    path = os.path.join(store.shards_dir, name)
    known = checksums or {}
    try:
        stored = shard_variables(path)
        head = read_shard(path, (), text_as_bytes=True, parameters=False)  # the keys
    except Exception as exc:  # unreadable: whatever it is, the inputs must stay
        return f"it cannot be read: {type(exc).__name__}: {exc}"
    if head.n != expected.n:
        return f"{head.n} rows instead of {expected.n}"
    mine = known.get(("bookkeeping", "key")) or _checksum(expected.bookkeeping["key"])
    if _checksum(head.bookkeeping["key"]) != mine:  # same keys, same order
        return "the rows per key differ"
    del head
    for part in _PARTS:
        columns = getattr(expected, part)
        if set(columns) != set(stored[part]):
            return f"{part} {sorted(set(columns) ^ set(stored[part]))} missing or extra"
    problem = ""
    for group in _groups(expected, stored):
        if problem:
            break
        try:
            found = read_shard(path, [stored[part][var] for part, var in group],
                               text_as_bytes=True, parameters=False)
        except Exception as exc:
            return f"it cannot be read: {type(exc).__name__}: {exc}"
        problem = _compare(expected, found, group, known)
        del found  # before the next group is read
    return problem


_PARTS = ("params", "bookkeeping", "results", "lengths", "coords")


def _groups(expected: ShardData, stored: dict[str, dict[str, str]]
            ) -> list[list[tuple[str, str]]]:
    """The variables other than the keys, in groups of about :data:`CHECK_BYTES` (a
    bigger variable is a group of its own)."""
    groups: list[list[tuple[str, str]]] = [[]]
    held = 0
    for part in _PARTS:
        for var, column in getattr(expected, part).items():
            if part == "bookkeeping" and var == "key":
                continue  # checked first
            size = _nbytes(column)
            if groups[-1] and held + size > CHECK_BYTES:
                groups.append([])
                held = 0
            groups[-1].append((part, var))
            held += size
    return [group for group in groups if group]


def _nbytes(column: Any) -> int:
    if isinstance(column, Ragged):
        return int(column.values.nbytes) + int(column.counts.nbytes)
    return int(getattr(column, "nbytes", 0))


def _compare(expected: ShardData, found: ShardData, group: list[tuple[str, str]],
             known: dict[tuple[str, str], str]) -> str:
    for part, var in group:
        theirs = getattr(found, part).get(var)
        if theirs is None:
            return f"{part} [{var!r}] missing or extra"
        mine = known.get((part, var)) or _checksum(getattr(expected, part)[var])
        if mine != _checksum(theirs):
            return f"the checksum of {var!r} differs"
    return ""


def _as_bytes(column: np.ndarray) -> np.ndarray:
    """Text as numpy bytes (``S``), however it was read (bytes, str objects)."""
    if column.dtype.kind == "S":
        return column
    return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8")
                     for v in column.ravel().tolist()], dtype=bytes).reshape(column.shape)


CHECKSUM_ROWS_BYTES = 2**18  # rows of a column hashed at a time (their copies are this big)


def _checksum(column: Any) -> str:
    """A digest of a column's values that does not depend on how they were read:
    text as UTF-8 without padding, numbers as 64-bit, every NaN alike. Hashed a slice
    of rows at a time: the copies it makes stay small whatever the column's size."""
    if isinstance(column, Ragged):  # flat values and counts: never padded here
        return f"ragged:{_checksum(column.counts)}:{_checksum(column.values)}"
    data = np.asarray(column)
    digest = hashlib.blake2b(digest_size=16)
    # slices from the shape alone (8 bytes a number, 64 a text as Python bytes, which
    # it is hashed as): equal however the column was read
    size = 64 if data.dtype.kind in "OSU" else 8
    step = max(1, CHECKSUM_ROWS_BYTES // (size * max(1, int(np.prod(data.shape[1:])))))
    for start in range(0, len(data) if data.ndim else 1, step):
        digest.update(_canonical(data[start:start + step] if data.ndim else data))
        if data.dtype.kind in "OSU":
            digest.update(b"\0")
    return f"{data.shape}:" + digest.hexdigest()


def _canonical(data: np.ndarray) -> bytes:
    """The bytes :func:`_checksum` hashes for some rows of a column."""
    if data.dtype.kind in "OSU":
        text = _as_bytes(data.astype(object) if data.dtype.kind == "U" else data)
        return b"\0".join(text.ravel().tolist())
    if data.dtype.kind == "b":
        data = data.astype(np.int8)
    if data.dtype.kind == "f":
        data = np.where(np.isnan(data), np.nan, data.astype(np.float64))
    elif data.dtype.kind in "iu":
        data = data.astype(np.int64)
    return np.ascontiguousarray(data).tobytes()


def remove_dead_temporaries(store: Store) -> int:
    """Delete the ``.tmp-*`` files of writers that are gone (see :meth:`Store.leftovers`)."""
    return store.remove_leftovers()


def verify_store(store: Store) -> VerifyReport:
    """Read every shard and report each that cannot be read, with the reason, and the
    points stored as done twice with different values.

    Nothing is moved; temporary files of writers that are gone are removed.
    """
    report = VerifyReport()
    keys: list[np.ndarray] = []
    with contextlib.suppress(OSError):
        report.removed_temporary = store.remove_leftovers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        report.metadata = store.check_metadata()
    files, foreign = store._listing()
    for name, reason in foreign.items():
        report.corrupt[name] = f"not a shard: {reason}"
    for name in files:
        try:
            shard = store._read_checked(name, None, False)
        except FileNotFoundError:
            continue
        except (MalformedShard, OSError, KeyError, ValueError, RuntimeError, IndexError,
                MemoryError) as exc:
            report.corrupt[name] = unreadable_reason(exc)
            continue
        report.ok.append(name)
        report.points += shard.n
        keys.append(np.asarray(shard.bookkeeping["key"]).astype(str))
    if keys and len(np.unique(np.concatenate(keys))) < report.points:  # a key twice
        report.conflicts = _conflicts_in(store, report.ok)
    return report


def _conflicts_in(store: Store, names: Sequence[str]) -> list[Conflict]:
    """The conflicts among the named shards (read directly: nothing is set aside)."""
    shards = []
    for name in names:
        with contextlib.suppress(Exception):  # gone or unreadable since: verify said so
            shards.append(read_shard(os.path.join(store.shards_dir, name)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        return combine_shards(shards, store.metadata().get("names"),
                              rules=store.read_rules()).conflicts



def resolve_store(store: Store, keep: str, keys: Sequence[str] | None = None) -> ResolveReport:
    """Keep run ``keep``'s version of each conflicting point (of ``keys`` only, when
    given): rows of the other done versions leave the shards (see :meth:`Store.resolve`).

    Each shard holding such rows is written again without them, checked, and only then
    moved to ``superseded/`` (never deleted).
    """
    report = ResolveReport()
    wanted = None if keys is None else set(keys)
    with exclusive_lock(os.path.join(store.path, LOCK_FILE)) as locked:
        if not locked:
            raise StoreError(f"another process is compacting {store.path}; resolve again "
                             "when it is done")
        versions: dict[str, set[str]] = {}
        for conflict in store.conflicts():
            if wanted is None or conflict.key in wanted:
                versions.setdefault(conflict.key, set()).update((conflict.shown, conflict.other))
        losers = {key: runs - {keep} for key, runs in versions.items() if keep in runs}
        if not losers:
            return report
        report.keys = sorted(losers)
        for name in store.shard_files():
            shard = store.read_shard(name)
            if shard is None:
                continue
            drop = _losing_rows(shard, losers)
            if not drop.any():
                continue
            kept = _take_rows(shard, ~drop)
            written = store.write(kept, register_runs=False)
            problem = check_written(store, written, kept)
            if problem:
                os.unlink(os.path.join(store.shards_dir, written))
                raise StoreError(f"resolving stopped, {name} is kept as it was: its "
                                 f"rewritten copy reads back differently ({problem})")
            set_aside(os.path.join(store.shards_dir, name),
                      os.path.join(store.path, SUPERSEDED), name,
                      f"replaced by {written}: resolve(keep={keep!r}) removed "
                      f"{int(drop.sum())} row(s) of other versions")
            report.rows_removed += int(drop.sum())
            report.rewritten.append(name)
        store._index_cache.clear()
    return report


def _losing_rows(shard: ShardData, losers: dict[str, set[str]]) -> np.ndarray:
    keys = shard.bookkeeping["key"].astype(str)
    runs = shard.bookkeeping.get("run", np.full(shard.n, "", dtype=object)).astype(str)
    drop = np.zeros(shard.n, dtype=bool)
    for i in np.flatnonzero(np.isin(keys, list(losers))):
        drop[i] = runs[i] in losers[keys[i]]
    return drop


def _take_rows(shard: ShardData, rows: np.ndarray) -> ShardData:
    """The shard with only ``rows`` (a bool mask over its points)."""
    def pick(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(column)[rows] for name, column in columns.items()}

    coords = {dim: (c[rows] if c.ndim == 2 else c) for dim, c in shard.coords.items()}
    return ShardData(int(rows.sum()), pick(shard.params), pick(shard.bookkeeping),
                     pick(shard.results), dict(shard.result_dims), dict(shard.result_attrs),
                     pick(shard.lengths), coords, dict(shard.attrs))


