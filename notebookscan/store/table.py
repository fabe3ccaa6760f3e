"""Combine shards into one de-duplicated table of points.

Shards are immutable and may overlap (two writers computed the same point, a merge
copied a store in, compaction was killed between writing and deleting). Combining
keeps one row per key: a ``done`` row wins over a ``failed`` one, and otherwise the
row of the run that started last in the store (its ordinal in ``runs.json``, never a
wall clock). Done rows of one key with different values are *conflicts*: listed,
warned about, and kept by compaction until :meth:`Store.resolve` picks one. Rows are
then sorted by their parameter values, so the table does not depend on which shard
holds which point.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StoreWarning
from ..keys import SEPARATOR, key_array
from . import ragged
from .forms import Form, shard_forms, split_names
from .schema import BOOKKEEPING, BOOKKEEPING_DTYPES, DTYPE_ATTR
from .shards import ShardData

__all__ = ["Columns", "Conflict", "ReadRules", "Table", "choose_rows", "combine_shards",
           "combined_heads", "split_forms", "typed_parts", "value_differs"]


@dataclass
class Table:
    """Points column by column, one row per key."""

    names: tuple[str, ...]
    params: dict[str, np.ndarray]
    bookkeeping: dict[str, np.ndarray]
    results: dict[str, np.ndarray]
    result_dims: dict[str, tuple[str, ...]]
    result_attrs: dict[str, dict[str, Any]]
    lengths: dict[str, np.ndarray]
    coords: dict[str, np.ndarray]
    runs: dict[str, Any] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.bookkeeping["key"])

    def take(self, index: np.ndarray) -> Table:
        def pick(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: column[index] for name, column in columns.items()}

        coords = {
            dim: (c[index] if c.ndim == 2 else c) for dim, c in self.coords.items()
        }
        return Table(self.names, pick(self.params), pick(self.bookkeeping), pick(self.results),
                     self.result_dims, self.result_attrs, pick(self.lengths), coords, self.runs,
                     self.conflicts)


_TYPED = {bool: np.dtype(bool), int: np.dtype(np.int64), float: np.dtype(np.float64)}


def typed_parts(table: Table) -> list[Table]:
    """``table`` split into parts whose parameter columns each hold one type.

    A parameter combined from shards of different types (see `_exact_dtype`) is a
    column of Python objects; a shard holds one type per variable, so compaction
    writes one shard per combination of types, and every value keeps its own.
    """
    mixed = [name for name, column in table.params.items() if column.dtype.kind == "O"
             and len({type(v) for v in column.tolist()}) > 1]
    if not mixed:
        return [table]
    signature = np.array(["|".join(type(v).__name__ for v in row)
                          for row in zip(*(table.params[n].tolist() for n in mixed),
                                         strict=True)])
    parts = []
    for sig in np.unique(signature):
        part = table.take(np.flatnonzero(signature == sig))
        for name in mixed:
            column = part.params[name]
            kind = type(column[0]) if len(column) else str
            if kind in _TYPED:
                part.params[name] = column.astype(_TYPED[kind])
        parts.append(part)
    return parts


def missing_for(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "M":
        return np.datetime64("NaT")
    if dtype.kind == "i":
        return np.iinfo(dtype).min
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    if dtype.kind == "O":
        return ""
    if dtype.kind == "S":
        return b""
    return 0


def _target_dtype(dtypes: list[np.dtype]) -> np.dtype:
    if any(d.kind == "O" for d in dtypes):
        return np.dtype(object)
    return np.result_type(*dtypes)


_EXACT_FLOAT_INT = 2**53  # ints up to this size are exact as float64
_VALUE_KIND = {"b": "bool", "i": "number", "u": "number", "f": "number", "O": "text",
               "S": "text", "U": "text"}


def _exact_dtype(blocks: list[np.ndarray]) -> np.dtype:
    """A dtype that holds every block's values as themselves (parameters).

    Shards of one store may hold a parameter as different types (two runs, a merge):
    bools never become ints, ints never become text, and ints beyond 2**53 never become
    floats, since each of these would show two points as one. Such mixes are combined
    as Python objects, each value as it was stored.
    """
    dtypes = [b.dtype for b in blocks]
    kinds = {_VALUE_KIND.get(d.kind, "other") for d in dtypes}
    if len(kinds) > 1:
        return np.dtype(object)
    if kinds == {"number"} and any(d.kind == "f" for d in dtypes) and any(
            d.kind in "iu" and len(b) and (np.abs(b.astype(np.float64)) > _EXACT_FLOAT_INT).any()
            for b, d in zip(blocks, dtypes, strict=True)):
        return np.dtype(object)
    return _target_dtype(dtypes)


def _bools_among_others(blocks: list[np.ndarray | None], is_bool: list[bool]
                        ) -> list[np.ndarray | None]:
    """Result blocks where bool blocks (int8, -1 or less where missing) meet blocks of
    another type: each bool block as that type, so that no int is read as a bool.

    With text, bools become ``"True"``/``"False"``; with floats 1.0/0.0 (NaN where
    missing); with ints 1/0 (the int missing marker where missing).
    """
    others = [b.dtype.kind for b, flag in zip(blocks, is_bool, strict=True)
              if b is not None and not flag]
    out: list[np.ndarray | None] = []
    for block, flag in zip(blocks, is_bool, strict=True):
        if block is None or not flag:
            out.append(block)
            continue
        missing = block < 0
        if any(k in "OSU" for k in others):
            text = np.where(block > 0, "True", "False").astype(object)
            text[missing] = ""
            out.append(text)
        elif "f" in others:
            out.append(np.where(missing, np.nan, block.astype(np.float64)))
        else:
            out.append(np.where(missing, np.iinfo(np.int64).min, block.astype(np.int64)))
    return out


def _convert_block(block: np.ndarray, target: np.dtype, exact: bool = False) -> np.ndarray:
    if block.dtype == target:
        return block
    if exact and target.kind == "O":  # each value as itself (see _exact_dtype)
        if block.dtype.kind == "S":
            return np.char.decode(block, "utf-8").astype(object)
        return block.astype(object)
    if target.kind == "f" and block.dtype.kind in "iu":
        out = block.astype(target)
        out[block == missing_for(block.dtype)] = np.nan
        return out
    if target.kind == "O":
        if block.dtype.kind == "S":  # text read as UTF-8 bytes
            return np.char.decode(block, "utf-8").astype(object)
        return block.astype(str).astype(object)
    return block.astype(target)


def concat_column(blocks: list[np.ndarray | None], sizes: list[int],
                   inner: tuple[int, ...] = (), *, exact: bool = False) -> np.ndarray:
    """Concatenate per-shard blocks along points, padding inner dims and absent blocks.

    With ``exact`` (parameters), blocks of different types keep each value as itself
    (see `_exact_dtype`).
    """
    present = [b for b in blocks if b is not None]
    if not present:
        dtype = np.dtype(np.float64)
    else:
        dtype = _exact_dtype(present) if exact else _target_dtype([b.dtype for b in present])
    if not inner and all(b is not None and b.dtype == dtype for b in blocks):
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    out = np.full((sum(sizes), *inner), missing_for(dtype), dtype=dtype)
    start = 0
    for block, size in zip(blocks, sizes, strict=True):
        if block is not None:
            region = (slice(start, start + size), *(slice(0, s) for s in block.shape[1:]))
            out[region] = _convert_block(block, dtype, exact)
        start += size
    return out


def combine_coordinate(dim: str, shards: Sequence[ShardData], size: int) -> np.ndarray | None:
    shared = [s.coords[dim] for s in shards if dim in s.coords and s.coords[dim].ndim == 1]
    per_point = [s for s in shards if dim in s.coords and s.coords[dim].ndim == 2]
    if not shared and not per_point:
        return None
    if not per_point:
        longest = max(shared, key=len)
        if all(np.array_equal(c, longest[: len(c)]) for c in shared) and len(longest) == size:
            return longest
    total = sum(s.n for s in shards)
    out = np.full((total, size), np.nan)
    start = 0
    for s in shards:
        c = s.coords.get(dim)
        if c is not None:
            if c.ndim == 1:
                out[start:start + s.n, : len(c)] = c
            else:
                out[start:start + s.n, : c.shape[1]] = c
        start += s.n
    return out


def runs_of(shards: Sequence[ShardData]) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for s in shards:
        text = s.attrs.get("provenance")
        if not isinstance(text, str):
            continue
        try:
            runs.update(json.loads(text))
        except ValueError:
            continue
    return runs


@dataclass(frozen=True)
class ReadRules:
    """What a store tells the reader: the order of its runs and each result's form.

    ``run_order`` maps a run id to its ordinal in the store (see :meth:`Store.run_order`);
    ``forms`` maps a result name to the form that keeps its name (see :mod:`.forms`).
    With ``supersede`` a later version replaces an earlier one without being a conflict:
    a segmented store's row describes its point after the newest segment run.
    """

    run_order: Mapping[str, int] = field(default_factory=dict)
    forms: Mapping[str, Form] = field(default_factory=dict)
    supersede: bool = False


@dataclass(frozen=True)
class Conflict:
    """Two done versions of one point with different values, both kept in the shards.

    ``shown`` is the run id of the version a read shows, ``other`` the run id of the
    version kept beside it until :meth:`Store.resolve` picks one.
    """

    key: str
    point: dict[str, Any]
    shown: str
    other: str

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v!r}" for k, v in self.point.items())
        return f"{where} (key {self.key}): shown run {self.shown}, kept run {self.other}"


def combine_shards(shards: Sequence[ShardData], names: Sequence[str] | None = None, *,
                   consume: bool = False, rules: ReadRules | None = None,
                   keep_conflicts: bool = False) -> Table:
    """Concatenate shards, keep one row per key, sort rows by parameter values.

    The row kept for a key is a ``done`` one if any, then the one of the run with the
    highest ordinal in ``rules.run_order`` (runs it does not list come first, in run id
    order), then the one of the later shard. Done versions with other values are
    listed in ``Table.conflicts`` (and reported with a ``StoreWarning``); with
    ``keep_conflicts`` (compaction) they stay in the table as extra rows. A result
    held in several forms is split into one variable per form (:mod:`.forms`).

    With ``consume``, each shard's columns are dropped from it as soon as they are
    combined, so the memory needed stays near one copy of the data (compaction).
    """
    rules = rules or ReadRules()
    shards = [s for s in shards if s.n]
    if names is None:
        names = list(dict.fromkeys(n for s in shards for n in s.params))
    names = tuple(names)
    if not shards:
        empty = np.array([], dtype=object)
        bookkeeping = {b: np.array([], dtype=BOOKKEEPING_DTYPES.get(b, object))
                       for b in BOOKKEEPING}
        return Table(names, dict.fromkeys(names, empty), bookkeeping, {}, {}, {}, {}, {})
    split_forms(shards, rules.forms)
    params, bookkeeping = combined_heads(shards, names, consume=consume)
    built = Columns(shards, consume=consume)
    result_column, length_column = built.result, built.length
    result_dims, dim_sizes = built.result_dims, built.dim_sizes

    # done versions of one key: compare their values (only rows of repeated keys)
    stash: dict[tuple[str, str], np.ndarray] = {}

    def differs(others: np.ndarray, winners: np.ndarray, candidates: np.ndarray
                ) -> np.ndarray:
        found = np.zeros(len(others), dtype=bool)
        for part, name, column in (
                *(("results", n, result_column(n)) for n in result_dims),
                *(("lengths", d, length_column(d)) for d in dim_sizes)):
            found |= value_differs(name, column, others, winners)
            stash[(part, name)] = column[candidates]
            del column
        return found

    candidates, kept, conflicts = choose_rows(params, bookkeeping, names, rules, differs,
                                              keep_conflicts=keep_conflicts)
    if conflicts and not keep_conflicts:
        _warn_conflicts(conflicts)
    rows = candidates[kept]
    for columns in (params, bookkeeping):
        for name in list(columns):  # one column copied at a time
            columns[name] = columns[name][rows]

    def pick(part: str, name: str, make: Any) -> np.ndarray:
        column = stash.pop((part, name), None)
        return make(name)[rows] if column is None else column[kept]

    results = {name: pick("results", name, result_column) for name in result_dims}
    lengths = {dim: pick("lengths", dim, length_column) for dim in dim_sizes}
    coords = {}
    for dim in dim_sizes:
        coord = built.coordinate(dim)
        if coord is not None:
            coords[dim] = coord[rows] if coord.ndim == 2 else coord
    return Table(names, params, bookkeeping, results, result_dims, built.result_attrs,
                 lengths, coords, runs_of(shards), conflicts)


class Columns:
    """The result, length and coordinate columns of shards (none empty, forms split
    already) concatenated in the shards' order, as :func:`combine_shards` combines them:
    results padded to the longest (or ragged), bools among other types converted.

    With ``consume``, each shard's result is dropped once its column is built.
    ``result_attrs`` are final once every result's column was built.
    """

    def __init__(self, shards: Sequence[ShardData], *, consume: bool = False):
        self.shards, self.consume = shards, consume
        self.sizes = [s.n for s in shards]
        self.result_dims: dict[str, tuple[str, ...]] = {}
        self.result_attrs: dict[str, dict[str, Any]] = {}
        for s in shards:
            for name, dims in s.result_dims.items():
                self.result_dims.setdefault(name, dims)
                self.result_attrs.setdefault(name, s.result_attrs.get(name, {}))
        self.dim_sizes: dict[str, int] = {}
        for s in shards:
            for name, dims in s.result_dims.items():
                for axis, dim in enumerate(dims):
                    self.dim_sizes[dim] = max(self.dim_sizes.get(dim, 0),
                                              s.results[name].shape[1 + axis])

    def result(self, name: str) -> Any:
        shards, sizes = self.shards, self.sizes
        found = [s.results.get(name) for s in shards]
        if self.consume:
            for s in shards:
                s.results.pop(name, None)
        is_bool = [b is not None and s.result_attrs.get(name, {}).get(DTYPE_ATTR) == "bool"
                   for b, s in zip(found, shards, strict=True)]
        if any(is_bool) and not all(f for b, f in zip(found, is_bool, strict=True)
                                    if b is not None):
            found = _bools_among_others(found, is_bool)
            self.result_attrs[name] = {k: v for k, v in self.result_attrs[name].items()
                                       if k != DTYPE_ATTR}
        dims = self.result_dims[name]
        inner = tuple(self.dim_sizes[d] for d in dims)
        # results whose lengths differ a lot stay flat values + counts (see ragged.py)
        combined = ragged.concat(
            found, sizes, [s.lengths.get(dims[0]) if dims else None for s in shards], inner,
            _target_dtype([b.dtype for b in found if b is not None] or [np.dtype("f8")]),
            _convert_block)
        return concat_column(found, sizes, inner) if combined is None else combined

    def length(self, dim: str) -> np.ndarray:
        column = concat_column([s.lengths.get(dim) for s in self.shards], self.sizes)
        if column.dtype.kind == "i":
            column[column < 0] = 0
        return column

    def coordinate(self, dim: str) -> np.ndarray | None:
        return combine_coordinate(dim, self.shards, self.dim_sizes[dim])


def combined_heads(shards: Sequence[ShardData], names: Sequence[str], *,
                   consume: bool = False) -> tuple[dict[str, np.ndarray],
                                                   dict[str, np.ndarray]]:
    """The parameters and bookkeeping of ``shards`` (none empty) concatenated, rows
    keyed as they are now (see `_migrate_separator_keys`): what choosing rows needs.

    With ``consume``, each shard's column is dropped as soon as it is concatenated.
    """
    sizes = [s.n for s in shards]

    def blocks(part: str, name: str) -> list[np.ndarray | None]:
        found = [getattr(s, part).get(name) for s in shards]
        if consume:
            for s in shards:
                getattr(s, part).pop(name, None)
        return found

    params = {n: concat_column(blocks("params", n), sizes, exact=True) for n in names}
    bookkeeping = {
        b: concat_column(blocks("bookkeeping", b), sizes)
        for b in BOOKKEEPING
        if any(b in s.bookkeeping for s in shards)
    }
    _migrate_separator_keys(bookkeeping, params)
    return params, bookkeeping


def choose_rows(params: Mapping[str, np.ndarray], bookkeeping: dict[str, np.ndarray],
                names: Sequence[str], rules: ReadRules,
                differs: Any, *, keep_conflicts: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list[Conflict]]:
    """The rows a combination keeps (see :func:`combine_shards`): ``candidates`` and
    ``kept``, the rows kept being ``candidates[kept]`` in parameter order, and the
    conflicts found. ``params`` may be a mapping that reads each column when asked:
    each is looked up once or twice, one at a time.

    ``differs(others, winners, candidates)`` tells, for each other done row of a
    repeated key, whether its values differ from the shown row's (see
    :func:`value_differs`); it is called only when keys repeat. With
    ``keep_conflicts`` the rows that differ are kept too.
    """
    best, others, winners = _select_rows(bookkeeping, rules.run_order)
    candidates = np.concatenate([best, others])
    found = np.zeros(len(others), dtype=bool)
    if len(others) and not rules.supersede:
        found = np.asarray(differs(others, winners, candidates), dtype=bool)
    conflicts = _conflicts(bookkeeping, params, others[found], winners[found])
    kept = np.flatnonzero(np.concatenate(
        [np.ones(len(best), dtype=bool), found & keep_conflicts]))
    kept = kept[_param_order(bookkeeping["key"], params, names, candidates[kept])]
    return candidates, kept, conflicts


def value_differs(name: str, column: Any, others: np.ndarray, winners: np.ndarray
                  ) -> np.ndarray:
    """Per other row: do its values of result (or length) ``name`` differ from its
    shown row's? Helper columns of readers (``__*``) never differ."""
    if name.startswith("__"):
        return np.zeros(len(others), dtype=bool)
    return ~_rows_equal(column[others], column[winners])


def _migrate_separator_keys(bookkeeping: dict[str, np.ndarray],
                            params: dict[str, np.ndarray]) -> None:
    """Give rows whose text parameters hold the key separator their current key.

    Before the separator was doubled inside text, such points could share a key with
    another point (see :mod:`notebookscan.keys`); their rows in older shards get the
    key their parameters have now, so reading (and compaction, which writes it) keeps
    one row per point. Rows already keyed this way get the same key again.
    """
    if "key" not in bookkeeping:
        return
    rows = np.zeros(len(bookkeeping["key"]), dtype=bool)
    for column in params.values():
        if column.dtype.kind == "O":
            rows |= np.fromiter((type(v) is str and SEPARATOR in v for v in column.tolist()),
                                dtype=bool, count=len(column))
    if not rows.any():
        return
    index = np.flatnonzero(rows)
    keys = key_array(list(params), {name: column[index] for name, column in params.items()})
    column = bookkeeping["key"]
    if column.dtype.kind != "S":
        keys = keys.astype(str).astype(column.dtype)
    column[index] = keys


def split_forms(shards: Sequence[ShardData], primary: Mapping[str, Form]) -> None:
    """Rename, in place, results held in a form other than the primary one (see
    :func:`.forms.split_names`), so that no form's rows are dropped when combining."""
    forms = [shard_forms(s) for s in shards]
    first: dict[str, Form] = {}
    if (all(first.setdefault(n, f) == f for found in forms for n, f in found.items())
            and all(primary.get(n, f) == f for n, f in first.items())):
        return  # one form per variable, the primary one: nothing to rename
    names = split_names(forms, primary)
    for shard, found in zip(shards, forms, strict=True):
        for name, form in found.items():
            new = names[(name, form)]
            if new != name:
                shard.results[new] = shard.results.pop(name)
                shard.result_dims[new] = shard.result_dims.pop(name)
                shard.result_attrs[new] = shard.result_attrs.pop(name, {})


def _select_rows(bookkeeping: Mapping[str, np.ndarray], run_order: Mapping[str, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row shown for each key; the other done rows of repeated keys, and their
    shown row.

    Shown: done before failed, then the run with the highest ordinal (runs without one
    first, by run id), then the later row. Only rows of repeated keys are ranked.
    """
    keys = bookkeeping["key"]
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    empty = np.array([], dtype=np.intp)
    if first.all():
        return order, empty, empty
    group = np.cumsum(first) - 1
    repeated = np.bincount(group)[group] > 1
    rows = order[repeated]
    status = bookkeeping.get("status")
    done = _is_done(status, rows)
    ordinal, run_rank = _run_ranks(bookkeeping.get("run"), rows, run_order)
    ranked = rows[np.lexsort((rows, run_rank, ordinal, done, keys[rows]))]
    ranked_keys = keys[ranked]
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = ranked_keys[1:] != ranked_keys[:-1]
    shown = ranked[last]
    shown_of = shown[np.cumsum(np.r_[True, ranked_keys[1:] != ranked_keys[:-1]]) - 1]
    other = ~last & _is_done(status, ranked)
    return np.concatenate([order[~repeated], shown]), ranked[other], shown_of[other]


def _is_done(status: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    if status is None:
        return np.ones(len(rows), dtype=bool)
    return np.asarray(status[rows] == (b"done" if status.dtype.kind == "S" else "done"))


def _run_ranks(runs: np.ndarray | None, rows: np.ndarray, run_order: Mapping[str, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its run's ordinal (-1 when the store does not list the run) and the
    rank of its run id in text order."""
    if runs is None:
        zeros = np.zeros(len(rows), dtype=np.int64)
        return zeros, zeros
    unique, rank = np.unique(runs[rows], return_inverse=True)
    ids = [u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u)
           for u in unique.tolist()]
    ordinals = np.array([run_order.get(i, -1) for i in ids], dtype=np.int64)
    return ordinals[rank], rank


def _rows_equal(a: Any, b: Any) -> np.ndarray:
    """Per row: do ``a`` and ``b`` hold the same values (NaN equals NaN)?"""
    if isinstance(a, ragged.Ragged) or isinstance(b, ragged.Ragged):
        # only rows of repeated keys get here: a digest per row, padding left out
        return np.array([ragged.row_fingerprint(a, i) == ragged.row_fingerprint(b, i)
                         for i in range(len(a))], dtype=bool)
    same = a == b
    if a.dtype.kind in "fc":
        same = same | ((a != a) & (b != b))
    same = np.asarray(same, dtype=bool)
    return same.reshape(len(a), -1).all(axis=1) if same.ndim > 1 else same


def _conflicts(bookkeeping: dict[str, np.ndarray], params: Mapping[str, np.ndarray],
               losers: np.ndarray, winners: np.ndarray) -> list[Conflict]:
    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    if not len(losers):
        return []
    runs = bookkeeping.get("run")
    # each parameter column looked up once (they may be read only when asked)
    values = {name: column[losers] for name, column in params.items()}
    out = []
    for j, (loser, winner) in enumerate(zip(losers.tolist(), winners.tolist(), strict=True)):
        out.append(Conflict(
            text(bookkeeping["key"][loser]),
            {name: v[j].item() if hasattr(v[j], "item") else v[j]
             for name, v in values.items()},
            "" if runs is None else text(runs[winner]),
            "" if runs is None else text(runs[loser])))
    return out


def _warn_conflicts(conflicts: Sequence[Conflict]) -> None:
    listed = "; ".join(str(c) for c in conflicts[:5])
    more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
    warnings.warn(
        f"{len(conflicts)} point(s) are stored twice as done with different values: "
        f"{listed}{more}. The version of the run that started (or was merged) last in "
        "this store is shown; both are kept. Pick one with Store(path).resolve(keep=run_id) "
        "(Store(path).conflicts() lists them).",
        StoreWarning, stacklevel=4)


def _param_order(keys: np.ndarray, params: Mapping[str, np.ndarray], names: Sequence[str],
                 rows: np.ndarray) -> np.ndarray:
    """Order of ``rows`` by parameter values (first name most significant), then key.

    One stable sort per column, least significant first (the order ``np.lexsort``
    gives): only one column's copy is held at a time, not one of every column.
    """
    order = np.argsort(keys[rows], kind="stable")
    for name in reversed(names):
        column = params[name][rows[order]]
        if column.dtype == object:
            column = column.astype(str)
        order = order[np.argsort(column, kind="stable")]
        del column
    return order


def table_to_shard(table: Table) -> ShardData:
    """A combined table as one shard (compaction, folding journals)."""
    result_attrs = {
        name: {k: v for k, v in attrs.items() if k != "notebookscan_role"}
        for name, attrs in table.result_attrs.items()
    }
    return ShardData(
        len(table), dict(table.params), dict(table.bookkeeping), dict(table.results),
        dict(table.result_dims), result_attrs, dict(table.lengths), dict(table.coords),
        {"provenance": json.dumps(table.runs, sort_keys=True)},
    )
