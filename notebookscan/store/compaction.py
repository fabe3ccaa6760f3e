"""One compaction pass that streams: many shards into one, a few variables at a time.

Combining whole shards holds every column twice (the shards read, the table built),
plus the written file's chunks until it is closed. Here a pass holds the keys,
statuses and runs of its shards while it chooses the rows (the same rows, in the same
order, as :func:`~notebookscan.store.table.combine_shards`; parameters of numbers are
read a few at a time to sort by them), then the other variables a group of about
:data:`GROUP_BYTES` at a time:

1. *survey*: each group is read from every shard, combined exactly as
   ``combine_shards`` combines it, and its kept rows taken; a column of plain numbers
   is then dropped, keeping its type, shape and checksum (a :class:`Deferred` stands
   for it); other columns (text, ragged results, bools) are kept as they are. Groups
   of plain numbers every shard holds as one type (one value per point) skip this:
   their type and shape are known from the files;
2. *write*: :func:`~notebookscan.store.shards.write_shard` defines every variable,
   then writes each; a deferred column is combined again from the shards just when
   it is written, and dropped after (with netCDF's chunk cache off, see
   :func:`unchunked`, nothing else holds it);
3. *check*: the written shard is read back a group at a time and compared with the
   checksums of what was meant: the survey's, or those of the columns handed to the
   writer (:func:`~notebookscan.store.maintenance.check_written`).

The caller deletes the inputs only after the check passed. A column that combines
differently the second time (a shard changed meanwhile) fails the write or the check.
A pass whose parameters mix types, or whose results are renamed for their form, is
left to the caller (``plan`` returns None), which combines it whole.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError, UnknownNameError
from .forms import Form, family_of
from .ragged import RAGGED_ATTR
from .schema import BOOKKEEPING, DTYPE_ATTR, ROLE, VARIABLE
from .shards import (
    ShardData,
    ShardVanished,
    hdf5_lock,
    open_dataset,
    read_shard,
    shard_variables,
)
from .table import (
    Columns,
    ReadRules,
    choose_rows,
    combined_heads,
    concat_column,
    runs_of,
    split_forms,
    value_differs,
)

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["Deferred", "Input", "StreamedPass", "read_input", "unchunked"]

GROUP_BYTES = 2 * 2**20  # variables combined at a time (their size in memory, estimated)
HEAD = ("status", "run")  # with the keys and parameters: what choosing rows needs


@dataclass
class Input:
    """A shard to compact: its head (keys, parameters, statuses, runs), the variables
    it holds (see :func:`~notebookscan.store.shards.shard_variables`), their size in
    memory, and the forms of its results."""

    name: str
    head: ShardData
    variables: dict[str, dict[str, str]]
    sizes: dict[tuple[str, str], int]
    forms: dict[str, Form]
    nbytes: int
    lean: bool = False  # parameters of numbers only: not held, read again when needed
    #: (part, name) -> the type of each variable of plain numbers, one per point
    plain: dict[tuple[str, str], np.dtype] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)  # of its results


def read_input(store: Store, name: str) -> Input | None:
    """Shard ``name``'s head and description; None when it was set aside (unreadable).

    Raises ``ShardVanished`` when it is gone. The head is read through the store, which
    checks the file (and sets it aside when broken) before anything else is read.
    """
    head = store.read_shard(name, HEAD, text_as_bytes=True)  # parameters: to check keys
    if head is None:
        return None
    lean = all(c.dtype.kind in "biuf" for c in head.params.values())
    if lean:  # numbers hold no key separator (see table.combined_heads)
        head.params = {}
    path = os.path.join(store.shards_dir, name)
    try:
        variables = shard_variables(path)
        found = Input(name, head, variables, {}, {}, 0, lean)
        _describe(path, found)
    except FileNotFoundError as exc:
        raise ShardVanished(name) from exc
    found.nbytes = sum(found.sizes.values())
    return found


def _describe(path: str, found: Input) -> None:
    """Each variable's bytes in memory once read, each result's form and attributes,
    and the variables of plain numbers, from the file's declarations (no data read)."""
    variables, n = found.variables, found.head.n
    sizes, forms = found.sizes, found.forms
    with open_dataset(path) as nc:
        for part, names in variables.items():
            for name, stored in names.items():
                var = nc.variables.get(stored)
                if var is None and part == "bookkeeping":  # stored under its prefixed name
                    var = nc.variables.get(VARIABLE.get(name, ""))
                if var is None:
                    sizes[(part, name)] = 8 * n
                    continue
                count = int(np.prod(var.shape, dtype=np.int64))
                kind = var.datatype
                sizes[(part, name)] = count * (kind.itemsize if isinstance(kind, np.dtype)
                                               else 8)
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                if (isinstance(kind, np.dtype) and kind.kind in "iuf" and var.ndim == 1
                        and DTYPE_ATTR not in attrs and RAGGED_ATTR not in attrs):
                    found.plain[(part, name)] = kind
                if part != "results":
                    continue
                found.attrs[name] = attrs
                dims = tuple(var.dimensions[1:])
                if RAGGED_ATTR in attrs:
                    dims = (str(attrs[RAGGED_ATTR]), *dims)
                dtype = np.dtype(object) if not isinstance(kind, np.dtype) else kind
                if attrs.get(DTYPE_ATTR) == "bool":
                    dtype = np.dtype(np.int8)
                forms[name] = Form(dims, family_of(dtype, attrs))


@contextlib.contextmanager
def unchunked() -> Iterator[None]:
    """netCDF files opened meanwhile cache no chunks (restored after).

    HDF5 keeps a written variable's chunks in its cache (64 MiB a variable by default)
    until the file is closed: a shard written whole would be held twice, once in
    numpy and once there. Without the cache each write goes to the file at once.
    """
    import netCDF4

    with hdf5_lock():
        before = netCDF4.get_chunk_cache()
        netCDF4.set_chunk_cache(0, 0, 1.0)
    try:
        yield
    finally:
        with hdf5_lock():
            netCDF4.set_chunk_cache(*before)


class Deferred:
    """A column of plain numbers combined only when it is written (``np.asarray``).

    Its type, shape and checksum are the survey's; ``load`` combines it again and must
    give the same type and shape (a shard changed meanwhile raises ``StoreError``).
    """

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], sample: np.ndarray | None,
                 load: Callable[[], np.ndarray]):
        self.dtype, self.shape, self._sample, self._load = dtype, shape, sample, load

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        # the writer samples the first row to choose a codec
        if isinstance(index, int) and index == 0 and self._sample is not None:
            return self._sample
        return np.asarray(self)[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._load()
        if data.dtype != self.dtype or data.shape != self.shape:
            raise StoreError(f"a column combined to {data.dtype} {data.shape} the second "
                             f"time, {self.dtype} {self.shape} the first: a shard changed")
        return data if dtype is None else np.asarray(data, dtype=dtype)


def _mixed(column: np.ndarray) -> bool:
    """A parameter combined from shards that hold it as different types."""
    return column.dtype.kind == "O" and len({type(v) for v in column.tolist()}) > 1


class _Params(Mapping[str, np.ndarray]):
    """A pass's parameter columns, read from the inputs when looked up, a few at a
    time (about :data:`GROUP_BYTES`, in the order choosing rows sorts by them: the
    last name first); only the last few are kept."""

    def __init__(self, streamed: StreamedPass):
        self._pass = streamed
        self._held: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._held:
            if name not in self._pass.names:
                raise UnknownNameError(name)
            self._held = {}  # dropped before the next are read
            batch, held = [], 0
            for other in reversed(self._pass.names[:self._pass.names.index(name) + 1]):
                size = sum(i.sizes.get(("params", other), 0) for i in self._pass.inputs)
                if batch and held + size > GROUP_BYTES:
                    break
                batch.append(other)
                held += size
            blocks: dict[str, list[np.ndarray | None]] = {n: [] for n in batch}
            sizes = []
            for i in self._pass.inputs:
                if i.head.n:
                    read = self._pass._read(i, [i.variables["params"].get(n, n)
                                                for n in batch])
                    for n in batch:
                        blocks[n].append(read.params.get(n))
                    sizes.append(i.head.n)
            self._held = {n: concat_column(blocks.pop(n), sizes, exact=True) for n in batch}
        return self._held[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pass.names)

    def __len__(self) -> int:
        return len(self._pass.names)


def _deferrable(column: Any) -> bool:
    """Plain numbers the writer writes as they are (not bools: written as int8)."""
    return isinstance(column, np.ndarray) and column.dtype.kind in "iuf"


Group = list[tuple[str, str]]  # (part, name) read and combined together


@dataclass
class StreamedPass:
    """The shard a pass writes, built from its inputs' heads and then a group of
    variables at a time (see the module's docstring)."""

    store: Store
    inputs: Sequence[Input]
    names: tuple[str, ...]
    rules: ReadRules
    checksum: Callable[[Any], str]
    rows: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.intp))
    #: (part, name) -> the checksum of each column of the shard planned
    checksums: dict[tuple[str, str], str] = field(default_factory=dict)
    _groups: list[Group] = field(default_factory=list)
    _deferred: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    _direct: dict[tuple[str, str], np.dtype] = field(default_factory=dict)
    _cache: dict[int, dict[tuple[str, str], Any]] = field(default_factory=dict)

    def plan(self) -> ShardData | None:
        """The shard to write, deferred columns in it; None when a parameter holds
        values of several types (such a pass is written whole, see ``typed_parts``), a
        result is held in another form than the store's, or no input has rows."""
        if not any(i.head.n for i in self.inputs) or any(
                self.rules.forms.get(name, form) != form
                for i in self.inputs for name, form in i.forms.items()):
            return None  # no rows, or a result renamed for its form: combined whole
        lean = all(i.lean for i in self.inputs)
        if not lean:  # text parameters: held, as the keys may need them
            for i in self.inputs:
                if i.lean and i.head.n:
                    i.head.params = self._read(i, ()).params
        heads = [i.head for i in self.inputs if i.head.n]
        runs = runs_of(heads)
        held, bookkeeping = combined_heads(heads, () if lean else self.names, consume=True)
        for i in self.inputs:  # their columns are in ``held`` and ``bookkeeping`` now
            i.head = ShardData(i.head.n, {}, {}, {}, {}, {}, {}, {}, {})
        del heads
        if any(_mixed(c) for c in held.values()):
            return None
        params: Mapping[str, np.ndarray] = _Params(self) if lean else held
        self._groups = self._make_groups()
        candidates, kept, _ = choose_rows(params, bookkeeping, self.names, self.rules,
                                          self._differs, keep_conflicts=True)
        self.rows = candidates[kept]
        del candidates, kept, params, held  # the parameters are read again, in the groups
        shard = ShardData(len(self.rows), {}, {}, {}, {}, {}, {}, {},
                          {"provenance": json.dumps(runs, sort_keys=True)})
        for name in list(bookkeeping):  # one column copied at a time
            column = bookkeeping.pop(name)[self.rows]
            self.checksums[("bookkeeping", name)] = self.checksum(column)
            shard.bookkeeping[name] = column
        for index, group in enumerate(self._groups):
            if all(key in self._direct for key in group):  # nothing to learn before
                self._deferred[index] = set(group)
                for part, name in group:
                    getattr(shard, part)[name] = Deferred(
                        self._direct[(part, name)], (len(self.rows),), None,
                        self._loader(index, part, name))
                    if part == "results":
                        first = next(i for i in self.inputs if i.head.n)
                        shard.result_dims[name] = ()
                        shard.result_attrs[name] = {k: v for k, v in first.attrs[name].items()
                                                    if k != ROLE}
                continue
            columns, dims, attrs = self._combined(group)
            if any(_mixed(c) for (part, _), c in columns.items() if part == "params"):
                return None
            deferred = self._deferred[index] = set()
            for (part, name), column in columns.items():
                self.checksums[(part, name)] = self.checksum(column)
                if _deferrable(column) and (part != "coords" or column.ndim == 2):
                    sample = column[0].copy() if len(column) and column.ndim > 1 else None
                    column = Deferred(column.dtype, column.shape, sample,
                                      self._loader(index, part, name))
                    deferred.add((part, name))
                getattr(shard, part)[name] = column
            shard.result_dims.update(dims)
            shard.result_attrs.update(attrs)
            del columns
        shard.params = {n: shard.params[n] for n in self.names}
        shard.bookkeeping = {b: shard.bookkeeping[b] for b in BOOKKEEPING
                             if b in shard.bookkeeping}
        return shard

    # --------------------------------------------------------------- the groups

    def _make_groups(self) -> list[Group]:
        """The variables other than the heads' bookkeeping, in groups of about
        :data:`GROUP_BYTES`; a result goes with every result sharing one of its dims,
        and their lengths and coordinates (they are combined together).

        Variables of plain numbers that every input holds as one type combine into
        that type, one value per point (``_direct``): their groups are read only when
        written, and checked against what was written.
        """
        with_rows = [i for i in self.inputs if i.head.n]
        for key, dtype in with_rows[0].plain.items() if with_rows else ():
            if all(i.plain.get(key) == dtype for i in with_rows):
                self._direct[key] = dtype
        sizes: dict[tuple[str, str], int] = {}
        dims_of: dict[str, tuple[str, ...]] = {}
        for i in self.inputs:
            for key, size in i.sizes.items():
                sizes[key] = sizes.get(key, 0) + size
            for name, form in i.forms.items():
                dims_of.setdefault(name, form.dims)
        units: list[Group] = []
        unit_of: dict[str, int] = {}  # dim -> the unit holding its results
        for part, name in sizes:
            if (part == "bookkeeping" and name in ("key", *HEAD)) or part in ("lengths",
                                                                              "coords"):
                continue  # the heads' bookkeeping is held; the others go with a result
            if (part == "params" and name not in self.names) or (
                    part == "bookkeeping" and name not in BOOKKEEPING):
                continue  # as combine_shards: other variables are not combined
            dims = dims_of.get(name, ()) if part == "results" else ()
            unit: Group = [(part, name)]
            for j in sorted({unit_of[d] for d in dims if d in unit_of}):
                unit += units[j]  # results sharing a dim combine together
                units[j] = []
            for dim in dims:
                for extra in (("lengths", dim), ("coords", dim)):
                    if extra in sizes and extra not in unit:
                        unit.append(extra)
            units.append(unit)
            for part_, result in unit:
                if part_ == "results":
                    for dim in dims_of.get(result, ()):
                        unit_of[dim] = len(units) - 1
        groups: list[Group] = [[]]
        held = 0
        units = [u for u in units if u and all(k in self._direct for k in u)] + [
            u for u in units if u and not all(k in self._direct for k in u)]
        for unit in units:
            if groups[-1] and (all(k in self._direct for k in unit)
                               != all(k in self._direct for k in groups[-1])):
                groups.append([])  # direct variables in groups of their own
                held = 0
            size = sum(sizes[k] for k in unit)
            if groups[-1] and held + size > GROUP_BYTES:
                groups.append([])
                held = 0
            groups[-1] += unit
            held += size
        return [g for g in groups if g]

    def _read_group(self, group: Group) -> list[ShardData]:
        """The group's variables from every input with rows, results in the names
        their forms take (see :func:`~notebookscan.store.table.split_forms`)."""
        out = []
        for i in self.inputs:
            if i.head.n:
                shard = self._read(i, [i.variables[part][name] for part, name in group
                                       if name in i.variables[part]])
                shard.bookkeeping.pop("key", None)
                out.append(shard)
        split_forms(out, self.rules.forms)
        return out

    def _read(self, i: Input, variables: Sequence[str]) -> ShardData:
        """``variables`` of input ``i`` (and its keys), parameters only when named;
        ``StoreError`` when it cannot be read as it was."""
        try:
            shard = read_shard(os.path.join(self.store.shards_dir, i.name), variables,
                               text_as_bytes=True, parameters=not variables)
        except Exception as exc:  # gone or changed: the pass is undone
            raise StoreError(f"shard {i.name} cannot be read again: "
                             f"{type(exc).__name__}: {exc}") from exc
        if shard.n != i.head.n:
            raise StoreError(f"shard {i.name} changed while it was being compacted")
        return shard

    def _combined(self, group: Group) -> tuple[dict[tuple[str, str], Any],
                                               dict[str, tuple[str, ...]],
                                               dict[str, dict[str, Any]]]:
        """The group's columns combined as ``combine_shards`` combines them (kept rows
        only), and its results' dims and attributes."""
        shards = self._read_group(group)
        sizes = [s.n for s in shards]
        out: dict[tuple[str, str], Any] = {}
        for part, name in group:  # as ``combined_heads`` concatenates them
            if part in ("params", "bookkeeping"):
                blocks = [getattr(s, part).pop(name, None) for s in shards]
                out[(part, name)] = concat_column(blocks, sizes,
                                                  exact=part == "params")[self.rows]
        built = Columns(shards, consume=True)
        for name in built.result_dims:
            out[("results", name)] = built.result(name)[self.rows]
        for dim in built.dim_sizes:
            out[("lengths", dim)] = built.length(dim)[self.rows]
            coord = built.coordinate(dim)
            if coord is not None:
                out[("coords", dim)] = coord[self.rows] if coord.ndim == 2 else coord
        attrs = {name: {k: v for k, v in found.items() if k != ROLE}  # as table_to_shard
                 for name, found in built.result_attrs.items()}
        return out, built.result_dims, attrs

    def _differs(self, others: np.ndarray, winners: np.ndarray, candidates: np.ndarray
                 ) -> np.ndarray:
        """``choose_rows``' comparison of repeated keys' done rows, a group at a time."""
        found = np.zeros(len(others), dtype=bool)
        for group in self._groups:
            if any(part == "results" for part, _ in group):
                built = Columns(self._read_group(group), consume=True)
                for name in built.result_dims:
                    found |= value_differs(name, built.result(name), others, winners)
                for dim in built.dim_sizes:
                    found |= value_differs(dim, built.length(dim), others, winners)
                del built
        return found

    def _loader(self, index: int, part: str, name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            cached = self._cache.get(index)
            # the group is combined once: its other deferred columns wait for their own
            # write (it is combined again for a write tried a second time, uncompressed)
            if cached is None or (part, name) not in cached:
                self._cache.clear()
                columns = self._combined(self._groups[index])[0]
                cached = self._cache[index] = {k: columns[k] for k in self._deferred[index]}
                del columns
            column = cached.pop((part, name))
            if not cached:
                self._cache.pop(index, None)
            if (part, name) in self._direct:  # the check compares the file with this
                self.checksums[(part, name)] = self.checksum(column)
            return column
        return load
