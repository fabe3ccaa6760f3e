"""Checkpoints of segmented points: state as NetCDF, simulator files as opaque bytes.

A *state* is a dict of numpy arrays, numbers, strings, bools, ``None``, lists/tuples of
numbers and nested dicts of these. :func:`encode_state` writes it as an in-memory
NetCDF-4 file (nested dicts become groups, each array a variable); :func:`decode_state`
gives back an equal dict — same keys in the same order, same dtypes, same bits. No
pickle: a checkpoint is data any NetCDF tool can read.

On disk, under ``<store>/segments/checkpoints/<point key>/link-<L>/``, one directory per
checkpoint, named after the number of segments it follows::

    after-000006/
        state.nc          the state after 6 segments (the bytes the worker encoded)
        checkpoint.json   point, link, count, timings, summary, blake2b of every file
        files/...         files the model wrote into its save_dir (never opened here)

A checkpoint directory is written under a temporary name, every file fsynced, then
renamed into place: it is whole or absent. A checkpoint that fails its checksums is
moved to ``segments/quarantine/`` with the reason and the previous one is used.

Examples
--------
>>> import numpy as np
>>> state = {"v": np.linspace(0, 1, 4), "step": 40, "net": {"w": np.eye(2, dtype="f4")}}
>>> back = decode_state(encode_state(state))
>>> states_equal(state, back)
''
>>> type(back["step"]).__name__, back["net"]["w"].dtype.name
('int', 'float32')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ResultError, StoreError, StoreWarning
from .files import set_aside
from .schema import CHECKPOINTS_DIR, SEGMENTS_DIR
from .shards import fsync_directory, hdf5_lock

__all__ = [
    "Checkpoint",
    "CheckpointDirectory",
    "StateError",
    "decode_state",
    "encode_state",
    "states_equal",
]

KIND = "notebookscan_kind"
NAME = "notebookscan_name"
DTYPE = "notebookscan_dtype"
ORDER = "notebookscan_order"
FORMAT_ATTR = "notebookscan_state_format"
STATE_FORMAT = 1
_SAFE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_GENERATED = re.compile(r"^k\d+$")
_PY_SCALARS = {bool: "py:bool", int: "py:int", float: "py:float", str: "py:str"}
STATE_FILE = "state.nc"
META_FILE = "checkpoint.json"
FILES_DIR = "files"


class StateError(ResultError, ValueError):
    """A state (or a file handed over with it) cannot be kept in a checkpoint.

    A :class:`~notebookscan.errors.ResultError` (the link is recorded as failed) and, as
    before, a ``ValueError``.
    """


# ---------------------------------------------------------------------- encoding


def _native(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder not in ("=", "|"):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _check_dtype(path: str, array: np.ndarray) -> None:
    kind = array.dtype.kind
    if kind in "biuU" or (kind == "f" and array.dtype.itemsize in (4, 8)):
        return
    hint = {
        "c": "store the real and imaginary parts as two arrays",
        "f": "convert it to float32 or float64",
        "M": "store seconds (or steps) as numbers",
        "m": "store seconds (or steps) as numbers",
        "S": "decode the bytes to str",
        "O": "convert it to a numeric or str array (or a dict of arrays)",
    }.get(kind, "convert it to a numeric, bool or str array")
    raise StateError(f"state entry {path!r} has dtype {array.dtype}, which a checkpoint cannot "
                     f"hold; {hint}.")


def _put(group: Any, vname: str, key: str, path: str, value: Any) -> None:
    if isinstance(value, Mapping):
        sub = group.createGroup(vname)
        sub.setncattr(NAME, key)
        _put_mapping(sub, value, path)
        return
    kind: str
    if value is None:
        kind, array = "none", np.zeros((), dtype=np.int8)
    elif type(value) in _PY_SCALARS:
        kind = _PY_SCALARS[type(value)]
        if kind == "py:int" and not -2**63 <= value < 2**63:
            raise StateError(f"state entry {path!r} is the int {value}, too large for 64 bits; "
                             "store it as a str or split it.")
        array = np.asarray(value, dtype=object if kind == "py:str" else None)
    elif isinstance(value, np.generic):
        kind, array = "np:scalar", np.asarray(value)
    elif isinstance(value, np.ndarray):
        kind, array = "array", value
    elif isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        try:
            array = np.asarray(value)
        except ValueError:
            array = np.empty(0, dtype=object)
        if array.dtype.kind == "O":
            raise StateError(f"state entry {path!r} is a {kind} that is not a regular array of "
                             "numbers or strings; use a dict of arrays instead.")
    else:
        raise StateError(
            f"state entry {path!r} is a {type(value).__name__}; a checkpoint holds numpy "
            "arrays, numbers, str, bool, None, lists of numbers and dicts of these. Convert "
            "it (e.g. to arrays), or have the simulator save it into segment.save_dir."
        )
    if array.dtype.kind != "O":
        array = _native(array)
        _check_dtype(path, array)
    dtype_text = array.dtype.str if array.dtype.kind != "O" else "str"
    stored = array
    if array.dtype.kind == "b":
        stored = array.astype(np.uint8)
    elif array.dtype.kind in "UO":
        stored = np.asarray(array, dtype=object)
    dims = []
    for axis, size in enumerate(stored.shape):
        dim = f"{vname}_{axis}"
        group.createDimension(dim, size)
        dims.append(dim)
    if stored.dtype == object:
        var = group.createVariable(vname, str, tuple(dims))
        if stored.size:
            var[...] = stored
    else:
        var = group.createVariable(vname, stored.dtype, tuple(dims), fill_value=False)
        if stored.ndim == 0:
            var.assignValue(stored)
        elif stored.size:
            var[...] = stored
    var.setncatts({KIND: kind, NAME: key, DTYPE: dtype_text})


def _put_mapping(group: Any, state: Mapping[str, Any], path: str) -> None:
    order = []
    for i, (key, value) in enumerate(state.items()):
        if not isinstance(key, str) or not key:
            raise StateError(f"state keys must be non-empty str; {path or 'the state'} has the "
                             f"key {key!r}. Use str keys, e.g. str({key!r}).")
        vname = key if _SAFE.match(key) and not _GENERATED.match(key) else f"k{i}"
        order.append(key)
        _put(group, vname, key, f"{path}/{key}" if path else key, value)
    group.setncattr(ORDER, json.dumps(order))


def encode_state(state: Mapping[str, Any]) -> bytes:
    """The state as the bytes of a NetCDF-4 file (see the module docstring).

    Raises
    ------
    StateError
        When an entry cannot be kept (an object, complex numbers, a ragged list, ...),
        naming the entry and what to do instead.
    """
    if not isinstance(state, Mapping):
        raise StateError(f"the state must be a dict, got {type(state).__name__}; return "
                         "Segment(..., state={'name': array, ...}).")
    if not state:
        # a model whose state is all in its files hands over {} after every segment: the
        # same bytes each time, encoded once (and one object, pickled once per task)
        if not _EMPTY:
            _EMPTY.append(_encode(state))
        return _EMPTY[0]
    return _encode(state)


#: The encoding of the empty state, once made.
_EMPTY: list[bytes] = []


def _encode(state: Mapping[str, Any]) -> bytes:
    import netCDF4

    with hdf5_lock():
        nc = netCDF4.Dataset("state.nc", "w", format="NETCDF4", memory=4096)
        try:
            nc.setncattr(FORMAT_ATTR, STATE_FORMAT)
            _put_mapping(nc, state, "")
        except BaseException:
            with contextlib.suppress(Exception):
                nc.close()
            with contextlib.suppress(Exception):
                nc._close(False)  # mark it closed: never closed again by GC outside the lock
            raise
        return bytes(nc.close())


def _get(var: Any) -> Any:
    kind = var.getncattr(KIND)
    dtype_text = var.getncattr(DTYPE)
    data = var[...]
    if kind == "none":
        return None
    if kind == "py:str":
        return str(data)
    if dtype_text == "str" or var.dtype is str:
        array = np.asarray(data, dtype=object)
        array = array.astype(str) if dtype_text == "str" else array.astype(dtype_text)
    else:
        dtype = np.dtype(dtype_text)
        array = np.asarray(data)
        array = array.astype(bool) if dtype.kind == "b" else array.astype(dtype, copy=False)
    if kind == "py:bool":
        return bool(array)
    if kind == "py:int":
        return int(array)
    if kind == "py:float":
        return float(array)
    if kind == "np:scalar":
        return array[()]
    if kind == "list":
        return array.tolist()
    if kind == "tuple":
        return tuple(array.tolist())
    return np.array(array, copy=True)


def _get_mapping(group: Any) -> dict[str, Any]:
    by_name: dict[str, Any] = {}
    for var in group.variables.values():
        var.set_auto_maskandscale(False)
        by_name[var.getncattr(NAME)] = _get(var)
    for sub in group.groups.values():
        by_name[sub.getncattr(NAME)] = _get_mapping(sub)
    order = json.loads(group.getncattr(ORDER)) if ORDER in group.ncattrs() else list(by_name)
    return {key: by_name[key] for key in order}


def decode_state(data: bytes) -> dict[str, Any]:
    """The state dict encoded by :func:`encode_state`."""
    import netCDF4

    with hdf5_lock(), netCDF4.Dataset("state.nc", "r", memory=data) as nc:
        if FORMAT_ATTR not in nc.ncattrs():
            raise StateError("these bytes are not a notebookscan state (no "
                             f"{FORMAT_ATTR} attribute)")
        return _get_mapping(nc)


def states_equal(a: Any, b: Any, path: str = "") -> str:
    """``""`` when two states are identical (keys, order, types, dtypes, bits), else where not.

    Examples
    --------
    >>> states_equal({"x": np.array([1.0, np.nan])}, {"x": np.array([1.0, np.nan])})
    ''
    >>> states_equal({"x": 1}, {"x": 1.0})
    "'x': int vs float"
    """
    where = repr(path) if path else "the state"
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} vs {list(b)}"
        for key in a:
            problem = states_equal(a[key], b[key], f"{path}/{key}" if path else key)
            if problem:
                return problem
        return ""
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, (np.ndarray, np.generic)):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.kind in "biuf":
            same = np.asarray(a).tobytes() == np.asarray(b).tobytes()
        else:
            same = np.array_equal(a, b)
        return "" if same else f"{where}: values differ"
    if isinstance(a, float):
        return "" if np.float64(a).tobytes() == np.float64(b).tobytes() else f"{where}: {a} vs {b}"
    return "" if a == b else f"{where}: {a!r} vs {b!r}"


# ---------------------------------------------------------------------- on disk


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_relative(name: str) -> str:
    """A file name handed over by a model, refused if it could leave its directory."""
    norm = os.path.normpath(name)
    if os.path.isabs(norm) or norm.startswith("..") or norm in (".", "") or "\x00" in norm:
        raise StateError(f"the file name {name!r} from save_dir is not a plain relative path")
    return norm


@dataclass
class Checkpoint:
    """One checkpoint: the state after ``count`` segments of one point's link."""

    key: str
    link: int
    count: int
    path: str
    meta: dict[str, Any] = field(default_factory=dict)

    def state_bytes(self) -> bytes:
        """The encoded state, as written (see :meth:`state` for the decoded one)."""
        with open(os.path.join(self.path, STATE_FILE), "rb") as f:
            return f.read()

    def state(self) -> dict[str, Any]:
        """The decoded state."""
        return decode_state(self.state_bytes())

    def file_paths(self) -> dict[str, str]:
        """Name -> path of each file the model handed over (read them, never change them)."""
        return {name: os.path.join(self.path, FILES_DIR, name) for name in self.meta["files"]}

    def files(self) -> dict[str, bytes]:
        """Name -> contents of each file the model handed over."""
        out = {}
        for name, path in self.file_paths().items():
            with open(path, "rb") as f:
                out[name] = f.read()
        return out

    def verify(self) -> str:
        """``""`` when every file matches its checksum, else what is wrong."""
        try:
            if _file_digest(os.path.join(self.path, STATE_FILE)) != self.meta["state"]:
                return "state.nc does not match its checksum"
            for name, path in self.file_paths().items():
                if _file_digest(path) != self.meta["files"][name]:
                    return f"files/{name} does not match its checksum"
        except FileNotFoundError as exc:
            return f"a file is missing ({exc.filename})"
        return ""


class CheckpointDirectory:
    """The checkpoints of a segmented store (``<store>/segments/checkpoints``)."""

    def __init__(self, root: str, quarantine: str):
        self.root = root
        self.quarantine_dir = quarantine

    def link_dir(self, key: str, link: int) -> str:
        return os.path.join(self.root, key, f"link-{link:03d}")

    def counts(self, key: str, link: int) -> list[int]:
        """Segment counts of the complete checkpoints of one point's link, ascending."""
        try:
            names = os.listdir(self.link_dir(key, link))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith("after-"):
                with contextlib.suppress(ValueError):
                    out.append(int(name[len("after-"):]))
        return sorted(out)

    def links(self, key: str) -> list[int]:
        try:
            names = os.listdir(os.path.join(self.root, key))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith("link-"):
                with contextlib.suppress(ValueError):
                    out.append(int(name[len("link-"):]))
        return sorted(out)

    def open(self, key: str, link: int, count: int) -> Checkpoint:
        path = os.path.join(self.link_dir(key, link), f"after-{count:06d}")
        with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        return Checkpoint(key, link, count, path, meta)

    def latest(self, key: str, link: int, *, verify: bool = True) -> Checkpoint | None:
        """The newest readable checkpoint (corrupt ones are quarantined on the way)."""
        for _ in range(20):  # another writer may prune while we look
            counts = self.counts(key, link)
            if not counts:
                return None
            count = counts[-1]
            try:
                checkpoint = self.open(key, link, count)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                self.set_aside(key, link, count, f"checkpoint.json unreadable: {exc}")
                continue
            problem = checkpoint.verify() if verify else ""
            if problem:
                if not os.path.isdir(checkpoint.path):
                    continue
                self.set_aside(key, link, count, problem)
                continue
            return checkpoint
        raise StoreError(f"the checkpoints of point {key} link {link} under {self.root} kept "
                         "changing while being read; is another process pruning them?")

    def set_aside(self, key: str, link: int, count: int, reason: str) -> None:
        source = os.path.join(self.link_dir(key, link), f"after-{count:06d}")
        name = f"{key}.link-{link:03d}.after-{count:06d}.{uuid.uuid4().hex[:6]}"
        where = set_aside(source, self.quarantine_dir, name, reason)
        warnings.warn(f"checkpoint after segment {count} of point {key} (link {link}) cannot be "
                      f"used ({reason}); {where}. The point continues from an earlier checkpoint "
                      "and re-runs the segments after it.", StoreWarning, stacklevel=3)

    def write(self, key: str, link: int, count: int, state: bytes, files: Mapping[str, bytes],
              meta: Mapping[str, Any]) -> str:
        """Write one checkpoint atomically; returns its directory.

        When the same checkpoint already exists (a segment ran twice after a crash, or
        two writers), the existing one is kept: segments are deterministic.
        """
        parent = self.link_dir(key, link)
        os.makedirs(parent, exist_ok=True)
        final = os.path.join(parent, f"after-{count:06d}")
        if os.path.isdir(final):
            return final
        tmp = os.path.join(parent, f".tmp-{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(os.path.join(tmp, FILES_DIR))
            digests = {}
            for name, data in files.items():
                rel = safe_relative(name)
                target = os.path.join(tmp, FILES_DIR, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _write_synced(target, data)
                digests[rel] = _digest(data)
            _write_synced(os.path.join(tmp, STATE_FILE), state)
            full = {**meta, "key": key, "link": link, "count": count, "state": _digest(state),
                    "files": digests}
            _write_synced(os.path.join(tmp, META_FILE),
                          json.dumps(full, indent=1, sort_keys=True).encode("utf-8"))
            for directory, _, _ in os.walk(tmp):
                fsync_directory(directory)
            try:
                os.rename(tmp, final)
            except OSError:
                if os.path.isdir(final):  # someone else wrote it first
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_directory(parent)
        return final

    def prune(self, key: str, link: int, keep: int | None) -> int:
        """Delete all but the newest ``keep`` checkpoints of a link (None keeps all)."""
        if keep is None:
            return 0
        removed = 0
        for count in self.counts(key, link)[:-keep]:
            path = os.path.join(self.link_dir(key, link), f"after-{count:06d}")
            doomed = path + f".deleting-{uuid.uuid4().hex[:6]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, doomed)  # invisible to readers at once, then removed
                shutil.rmtree(doomed, ignore_errors=True)
                removed += 1
        return removed

    def remove_dead_temporaries(self) -> int:
        """Delete temporary checkpoint directories left by killed writers of this host."""
        removed = 0
        host = _host()
        if not os.path.isdir(self.root):
            return 0
        for directory, subdirs, _ in os.walk(self.root):
            for name in list(subdirs):
                if not name.startswith(".tmp-") and ".deleting-" not in name:
                    continue
                subdirs.remove(name)
                if name.startswith(".tmp-"):
                    parts = name[len(".tmp-"):].split(".")
                    if len(parts) < 3 or parts[0] != host or _alive(parts[1]):
                        continue
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
                removed += 1
        return removed

    def verify_all(self) -> tuple[list[str], dict[str, str]]:
        """Check every checkpoint (nothing is moved): labels of the sound ones, and the
        problem of each broken one (``key/link-001/after-000003`` -> reason)."""
        ok: list[str] = []
        broken: dict[str, str] = {}
        for key in self.keys():
            for link in self.links(key):
                for count in self.counts(key, link):
                    label = f"{key}/link-{link:03d}/after-{count:06d}"
                    try:
                        problem = self.open(key, link, count).verify()
                    except FileNotFoundError:
                        continue  # pruned meanwhile
                    except (OSError, ValueError) as exc:
                        problem = f"checkpoint.json unreadable: {exc}"
                    if problem:
                        broken[label] = problem
                    else:
                        ok.append(label)
        return ok, broken

    def keys(self) -> Iterator[str]:
        try:
            yield from sorted(n for n in os.listdir(self.root) if not n.startswith("."))
        except FileNotFoundError:
            return


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_+-]", "-", socket.gethostname()) or "x"


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def read_files(directory: str) -> dict[str, bytes]:
    """Every regular file under ``directory`` as ``relative path -> bytes``.

    Symbolic links are refused: a checkpoint keeps the model's own files only.
    """
    out: dict[str, bytes] = {}
    for root, dirs, names in os.walk(directory):
        for name in sorted(dirs) + sorted(names):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise StateError(f"{path} in save_dir is a symbolic link; write the file itself "
                                 "there (a checkpoint keeps copies, not links).")
        for name in sorted(names):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def write_files(directory: str, files: Mapping[str, bytes]) -> None:
    """Put handed-over files into ``directory`` (the inverse of :func:`read_files`)."""
    for name, data in files.items():
        target = os.path.join(directory, safe_relative(name))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


# ------------------------------------------------------------------ merging


def copy_checkpoints(source_root: str, dest_root: str) -> tuple[list[str], list[str]]:
    """Copy the checkpoints of one segmented store that ``dest_root`` lacks.

    Each checkpoint directory is copied atomically (temporary name, fsync, rename); one
    present in both stores is the same state (segments are deterministic) and is kept.
    Returns the labels (``key/link/after-n``) copied and those already present.
    """
    copied: list[str] = []
    present: list[str] = []
    origin = os.path.join(source_root, SEGMENTS_DIR, CHECKPOINTS_DIR)
    target = os.path.join(dest_root, SEGMENTS_DIR, CHECKPOINTS_DIR)
    if not os.path.isdir(origin):
        return copied, present
    for key in sorted(os.listdir(origin)):
        for link in sorted(os.listdir(os.path.join(origin, key))):
            if not link.startswith("link-"):
                continue
            parent = os.path.join(target, key, link)
            for name in sorted(os.listdir(os.path.join(origin, key, link))):
                if not name.startswith("after-"):
                    continue
                label = f"{key}/{link}/{name}"
                if os.path.exists(os.path.join(parent, name)):
                    present.append(label)
                    continue
                os.makedirs(parent, exist_ok=True)
                _copy_checkpoint(os.path.join(origin, key, link, name), parent, name)
                copied.append(label)
    return copied, present


def _copy_checkpoint(source: str, parent: str, name: str) -> None:
    tmp = os.path.join(parent, f".tmp-merge-{uuid.uuid4().hex}")
    try:
        shutil.copytree(source, tmp, symlinks=True)
        for directory, dirs, files in os.walk(tmp):
            for entry in (*dirs, *files):
                if os.path.islink(os.path.join(directory, entry)):
                    raise StoreError(f"refusing to copy {source}: it holds the symbolic link "
                                     f"{entry!r}; a store holds only its own files")
            for entry in files:
                with open(os.path.join(directory, entry), "rb") as f:
                    os.fsync(f.fileno())
            fsync_directory(directory)
        os.rename(tmp, os.path.join(parent, name))
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_directory(parent)
