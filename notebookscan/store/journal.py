"""The writer's journal: every received chunk is on disk before it counts as done.

A scan loop keeps finished chunks in memory and writes them as one shard every
``flush_interval`` seconds. So that a killed client loses nothing it had received, each
group of chunks the loop receives is first appended to its journal — one append-only
file per writer, ``journal/<user>.<host>.<pid>.<time>.<random>.journal`` — and the file
is fsynced before the points are counted. The shard written at the next flush makes the
journal's records redundant: the journal is emptied (truncated), and removed when the
run ends.

A journal whose writer is dead (its pid no longer runs on this host, or it is this
process's own and no longer open) is *folded*: its records are combined into a shard
and the journal is removed. The next run folds before it decides what to compute, and
so does compaction. Readers (the index, the dataset) do not read journals: until a run
or a compaction folds them, a killed writer's last points show as missing.

A journal is data only, never pickle. Format: the 8 bytes ``NSJRNL01``, then records;
each record is

====== ========= ====================================================================
bytes  type      meaning
====== ========= ====================================================================
4      ``NSJR``  record magic
8      u64 LE    length of the body
16     bytes     BLAKE2b-128 digest of the body
body             u32 LE length of the header, the header (UTF-8 JSON), the columns
====== ========= ====================================================================

The header lists each column of the shard (part, name, dtype, shape) whose raw bytes
follow in order; text columns (numpy object arrays) are lists of strings in the header.
Only plain dtypes (bool, integers, floats, complex, fixed-width bytes and unicode) are
accepted on reading. A record cut short by a kill (the last one) fails its length or
digest check and is ignored with everything after it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import stat
import struct
import warnings
from collections.abc import Iterator
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError, StoreFormatError, StoreWarning
from .files import name_part, pid_alive, set_aside
from .schema import JOURNAL
from .shards import ShardData, fsync_directory, new_shard_name
from .table import combine_shards, table_to_shard

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["Journal", "JournalUnsupported", "fold_journals", "journal_files", "read_journal"]

FILE_MAGIC = b"NSJRNL01"
RECORD_MAGIC = b"NSJR"
_RECORD_HEAD = struct.Struct("<4sQ16s")
_HEADER_LENGTH = struct.Struct("<I")
SUFFIX = ".journal"
PARTS = ("params", "bookkeeping", "results", "lengths", "coords")
RAW_KINDS = "biufcSU"  # dtypes read back with np.frombuffer: no objects, no code
FOLD_BYTES = 64 * 2**20  # records combined into one shard at most, when folding
MAX_DIMS = 32

# journals this process has open (its pid is alive, yet they are no longer in use once
# closed: a later run in the same process, e.g. a notebook kernel, may fold them)
_OPEN: set[str] = set()


class JournalUnsupported(StoreError, ValueError):
    """A column the journal cannot hold as plain data (the loop writes a shard instead)."""


class JournalCorrupt(StoreFormatError):
    """A record whose digest matches but whose content is not a journal record."""


# ---------------------------------------------------------------- encoding


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise JournalUnsupported(f"attribute value of type {type(value).__name__}")


def encode_record(shard: ShardData) -> bytes:
    """One record (head and body) holding ``shard``; raises JournalUnsupported for a
    column that is not plain data."""
    columns, blobs = [], []
    for part in PARTS:
        for name, column in getattr(shard, part).items():
            data = np.asarray(column)  # a RowStack of big rows is stacked here
            entry: list[Any] = [part, name, data.dtype.str, list(data.shape)]
            if data.dtype.kind == "O":
                values = data.ravel().tolist()
                if not all(isinstance(v, str) for v in values):
                    raise JournalUnsupported(f"column {name!r} holds objects other than text")
                entry[2] = "text"
                entry.append(values)
            elif data.dtype.kind in RAW_KINDS and data.dtype.fields is None:
                blobs.append(np.ascontiguousarray(data).tobytes())
            else:
                raise JournalUnsupported(f"column {name!r} has dtype {data.dtype}")
            columns.append(entry)
    header = {
        "n": int(shard.n), "columns": columns,
        "result_dims": {k: list(v) for k, v in shard.result_dims.items()},
        "result_attrs": {k: {a: _jsonable(v) for a, v in attrs.items()}
                         for k, attrs in shard.result_attrs.items()},
        "attrs": {k: _jsonable(v) for k, v in shard.attrs.items()},
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    body = b"".join([_HEADER_LENGTH.pack(len(head)), head, *blobs])
    digest = blake2b(body, digest_size=16).digest()
    return _RECORD_HEAD.pack(RECORD_MAGIC, len(body), digest) + body


def _plain_dtype(text: Any) -> np.dtype:
    if not isinstance(text, str) or len(text) > 16:
        raise JournalCorrupt(f"dtype {text!r}")
    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise JournalCorrupt(f"dtype {text!r}") from exc
    if dtype.kind not in RAW_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise JournalCorrupt(f"dtype {text!r} is not plain data")
    return dtype


def _shape(value: Any, n: int, part: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_DIMS
            or not all(type(s) is int and s >= 0 for s in value)):
        raise JournalCorrupt(f"shape {value!r}")
    if part != "coords" and value[0] != n:
        raise JournalCorrupt(f"a {part} column of {value[0]} rows in a record of {n}")
    if len(value) > {"results": MAX_DIMS, "coords": 2}.get(part, 1):
        raise JournalCorrupt(f"a {part} column of {len(value)} dims")
    return tuple(value)


def decode_body(body: bytearray) -> ShardData:
    """The shard a record's body holds (raises JournalCorrupt when it holds none)."""
    try:
        (length,) = _HEADER_LENGTH.unpack_from(body, 0)
        header = json.loads(bytes(body[4:4 + length]).decode("utf-8"))
        n = header["n"]
        if type(n) is not int or n < 0:
            raise JournalCorrupt(f"n = {n!r}")
        shard = ShardData(n, {}, {}, {}, {}, {}, {}, {},
                          {str(k): v for k, v in dict(header["attrs"]).items()})
        offset = 4 + length
        for part, name, dtype_text, shape_list, *rest in header["columns"]:
            if part not in PARTS or not isinstance(name, str):
                raise JournalCorrupt(f"column {name!r} of part {part!r}")
            shape = _shape(shape_list, n, part)
            count = math.prod(shape)
            if dtype_text == "text":
                values = rest[0] if rest else None
                if (not isinstance(values, list) or len(values) != count
                        or not all(isinstance(v, str) for v in values)):
                    raise JournalCorrupt(f"text column {name!r}")
                data = np.empty(count, dtype=object)
                data[:] = values
                data = data.reshape(shape)
            else:
                dtype = _plain_dtype(dtype_text)
                size = count * dtype.itemsize
                if offset + size > len(body):
                    raise JournalCorrupt(f"column {name!r} runs past the record")
                data = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
                offset += size
            getattr(shard, part)[name] = data
        for name, dims in dict(header["result_dims"]).items():
            if name not in shard.results or not all(isinstance(d, str) for d in dims):
                raise JournalCorrupt(f"dims of result {name!r}")
            if shard.results[name].ndim != 1 + len(dims):
                raise JournalCorrupt(f"result {name!r} does not have dims {dims}")
            shard.result_dims[name] = tuple(dims)
        if set(shard.result_dims) != set(shard.results):
            raise JournalCorrupt("results without dims")
        for name, attrs in dict(header["result_attrs"]).items():
            shard.result_attrs[str(name)] = {str(k): v for k, v in dict(attrs).items()
                                            if isinstance(v, (str, int, float, bool))}
        if "key" not in shard.bookkeeping or "status" not in shard.bookkeeping:
            raise JournalCorrupt("no key or status column")
    except JournalCorrupt:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RecursionError, struct.error) as exc:
        raise JournalCorrupt(f"{type(exc).__name__}: {exc}") from exc
    return shard


def _records(f: Any, size: int) -> Iterator[bytearray]:
    """Bodies of the whole records of the open journal ``f`` (of ``size`` bytes, read
    from after the file magic), one at a time, stopping at the first record that is cut
    short or fails its digest."""
    offset = len(FILE_MAGIC)
    while offset + _RECORD_HEAD.size <= size:
        magic, length, digest = _RECORD_HEAD.unpack(f.read(_RECORD_HEAD.size))
        offset += _RECORD_HEAD.size
        if magic != RECORD_MAGIC or offset + length > size:
            return
        body = bytearray(length)
        if f.readinto(body) != length or blake2b(body, digest_size=16).digest() != digest:
            return
        yield body
        offset += length


# ---------------------------------------------------------------- the writer's side


def journal_dir(store_path: str) -> str:
    return os.path.join(store_path, JOURNAL)


def _checked_dir(directory: str, create: bool) -> bool:
    """True when ``directory`` is a real directory of the store (made if ``create``);
    a symlink or other file there is refused, so nothing is written outside the store."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o755)
    try:
        st = os.lstat(directory)
    except (FileNotFoundError, NotADirectoryError):  # no store yet (prepare says why)
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(
            f"{directory} is not a directory (a symlink or a file): notebookscan writes "
            "its journal only into a real directory inside the store. Remove it; the "
            "next run creates it.")
    return True


class Journal:
    """This writer's journal file in a store (created at the first :meth:`append`).

    Not thread-safe: the scan loop's thread alone uses it.
    """

    def __init__(self, store_path: str):
        self.directory = journal_dir(store_path)
        self.path: str | None = None
        self._fd: int | None = None
        self._dirty = False  # appended since the last sync
        self.bytes = 0  # bytes in the file now

    def append(self, shard: ShardData) -> None:
        """Write ``shard`` as one record (not yet durable: see :meth:`sync`)."""
        record = encode_record(shard)
        fd = self._open()
        view = memoryview(record)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self.bytes += len(record)
        self._dirty = True

    def sync(self) -> None:
        """Make every record appended so far durable (one fsync for all of them)."""
        if self._dirty and self._fd is not None:
            (getattr(os, "fdatasync", None) or os.fsync)(self._fd)
            self._dirty = False

    def discard(self) -> None:
        """Empty the journal: everything in it is now in shards."""
        if self._fd is not None and self.bytes > len(FILE_MAGIC):
            os.ftruncate(self._fd, len(FILE_MAGIC))
            self.bytes = len(FILE_MAGIC)
            self._dirty = False

    def close(self) -> None:
        """Close the file; remove it when it holds no record (else the next run folds it)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self.bytes <= len(FILE_MAGIC) and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        _OPEN.discard(self.path or "")

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        _checked_dir(self.directory, create=True)
        path = os.path.join(self.directory, new_shard_name()[:-len(".nc")] + SUFFIX)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, FILE_MAGIC)
            os.fsync(fd)
            fsync_directory(self.directory)  # the file itself survives a crash
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        self._fd, self.path, self.bytes = fd, path, len(FILE_MAGIC)
        _OPEN.add(path)
        return fd


# ---------------------------------------------------------------- folding


def journal_files(store_path: str) -> list[str]:
    """Names of the journal files in a store (of live and dead writers), sorted."""
    try:
        names = os.listdir(journal_dir(store_path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))


def writer_is_gone(name: str, directory: str) -> bool:
    """True for a journal of this host whose writer no longer runs (or is this process,
    which no longer has it open). Journals of other hosts are left to their hosts."""
    parts = name.split(".")
    if len(parts) < 6 or parts[1] != name_part(socket.gethostname()):
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return os.path.join(directory, name) not in _OPEN
    return not pid_alive(pid)


@contextlib.contextmanager
def open_journal(path: str) -> Iterator[Iterator[ShardData]]:
    """The shards a journal file holds, read one record at a time (a torn last record
    is left out).

    Raises JournalCorrupt for a file that is not a journal, or a record that holds no
    shard; OSError (``ELOOP``) for a symlink.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise JournalCorrupt("not a regular file")
        start = f.read(len(FILE_MAGIC))
        if start != FILE_MAGIC and not (len(start) < len(FILE_MAGIC)
                                        and FILE_MAGIC.startswith(start)):
            raise JournalCorrupt("it does not start with the journal magic")
        size = st.st_size if start == FILE_MAGIC else 0  # else killed while creating it
        yield (decode_body(body) for body in _records(f, size))


def read_journal(path: str) -> list[ShardData]:
    """Every shard a journal file holds (see :func:`open_journal`)."""
    with open_journal(path) as shards:
        return list(shards)


def fold_journals(store: Store) -> int:
    """Fold the journals of dead writers into shards, then remove them; returns points.

    Each journal is first claimed (renamed to a name of this process), so two processes
    never fold the same one; the shard is written before the journal is removed, so a
    kill in between leaves the points twice, which reading de-duplicates. A journal
    that cannot be read is moved to ``quarantine/`` with the reason.
    """
    directory = journal_dir(store.path)
    if not _checked_dir(directory, create=False):
        return 0
    folded = 0
    for name in journal_files(store.path):
        if not writer_is_gone(name, directory):
            continue
        claimed = os.path.join(directory, new_shard_name()[:-len(".nc")] + SUFFIX)
        _OPEN.add(claimed)
        try:
            try:
                os.rename(os.path.join(directory, name), claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            folded += _fold_one(store, claimed, name)
        finally:
            _OPEN.discard(claimed)
    return folded


def _fold_one(store: Store, path: str, name: str) -> int:
    """Write the records of the claimed journal ``path`` as shards, then remove it;
    records are read and written ``FOLD_BYTES`` at a time (bounded memory)."""

    names = store.metadata().get("names")
    points = 0
    try:
        with open_journal(path) as shards:
            group: list[ShardData] = []
            held = 0
            for shard in shards:
                group.append(shard)
                held += shard.nbytes
                if held >= FOLD_BYTES:
                    points += _write_group(store, group, names, table_to_shard)
                    group, held = [], 0
            points += _write_group(store, group, names, table_to_shard)
    except (JournalCorrupt, OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        # (records that decode but do not combine: hostile content, not a torn write)
        if isinstance(exc, OSError) and exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        where = set_aside(path, store.quarantine_dir, name, f"not a journal: {exc}")
        warnings.warn(f"journal {name} of the store {store.path} cannot be read ({exc}); "
                      f"{where}. Its points not folded so far run again.", StoreWarning,
                      stacklevel=3)
        return points
    os.unlink(path)
    return points


def _write_group(store: Store, group: list[ShardData], names: Any, to_shard: Any) -> int:
    if not group:
        return 0
    table = combine_shards(group, names, consume=True)
    store.write(to_shard(table))
    return len(table)
