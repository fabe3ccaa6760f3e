"""Units and long names of parameters and results: recorded once, checked, given back.

The space declares its parameters' attributes (:meth:`notebookscan.Space.with_attrs`),
a function its results' (the ``attrs`` of a returned DataArray); the store keeps the
CF attributes of :data:`notebookscan.results.KEPT_ATTRS` (``units``, ``long_name``,
``standard_name``).

Where they are kept:

* ``notebookscan.json``: ``parameter_attrs`` and ``result_attrs``, ``{name: {"units":
  ..., ...}}``: the store's record, written under the metadata lock;
* each shard: a result's attributes on its variable, an own dim's (``time`` in
  seconds) on its coordinate (any NetCDF tool shows them).

The rules:

* declared once: a later run may add an attribute the store lacks (an older store, or
  a first declaration). Units that differ from the recorded ones are refused: a
  parameter's at :meth:`Store.prepare` (before anything runs), a result's at the flush
  that would write it (the run stops, nothing of that batch is written, everything
  stored is kept); one variable never holds values in two units. A different
  ``long_name`` or ``standard_name`` (a label, not the values' meaning) is not
  refused: the first recorded is kept.
* attributes are not part of a point's key: declaring units does not make stored points
  "new".
* reading (eager or lazy, after compaction or merge) gives the recorded attributes on
  the parameter coordinates and result variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..results import KEPT_ATTRS, attrs_conflict, joined_attrs, kept_attrs
from .schema import META_LOCK, PARAMETER_ATTRS, RESULT_ATTRS
from .shards import ShardData
from .versions import waiting_lock

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["apply_attrs", "check_parameter_attrs", "check_result_attrs", "merge_attrs",
           "recorded_attrs"]

Attrs = dict[str, dict[str, str]]


def recorded_attrs(meta: Mapping[str, Any], key: str) -> Attrs:
    """The attributes ``notebookscan.json`` records under ``key`` (malformed entries,
    from a hand-edited file, are ignored)."""
    found = meta.get(key)
    if not isinstance(found, dict):
        return {}
    out = {}
    for name, attrs in found.items():
        if isinstance(attrs, dict):
            kept, problem = kept_attrs(attrs)
            if kept and not problem:
                out[str(name)] = kept
    return out


def differences(recorded: Attrs, declared: Attrs) -> list[tuple[str, str, str, str]]:
    """``(name, attribute, recorded value, declared value)`` for every attribute of
    :data:`~notebookscan.results.STRICT_ATTRS` (the units) both give differently."""
    out = []
    for name, attrs in declared.items():
        key = attrs_conflict(recorded.get(name, {}), attrs)
        if key:
            out.append((name, key, recorded[name][key], attrs[key]))
    return out


def merged(recorded: Attrs, declared: Attrs) -> Attrs:
    """``recorded`` with the attributes only ``declared`` gives added (the first
    declared long_name wins)."""
    out = {name: dict(attrs) for name, attrs in recorded.items()}
    for name, attrs in declared.items():
        out[name] = joined_attrs(out.get(name, {}), attrs)
    return out


def check_parameter_attrs(store: Store, meta: dict[str, Any], declared: Attrs) -> bool:
    """Refuse ``declared`` parameter attributes that differ from those ``meta`` records;
    add the new ones to ``meta``. Returns whether ``meta`` changed (to be written)."""
    recorded = recorded_attrs(meta, PARAMETER_ATTRS)
    changed = differences(recorded, declared)
    if changed:
        name, key, old, new = changed[0]
        raise StoreError(
            f"the store {store.path} holds points whose parameter {name!r} has {key} "
            f"{old!r}, but this scan's space declares {key} {new!r}. A parameter in other "
            f"units is another experiment: use another store, or declare {key}={old!r} "
            f"(and give the values in {old!r}).")
    new = merged(recorded, declared)
    if new == recorded:
        return False
    meta[PARAMETER_ATTRS] = new
    return True


def shard_attrs(shard: ShardData) -> Attrs:
    """The kept attributes of the shard's results and of its own dims' coordinates
    (those it has; a dim and a result never share a name)."""
    out = {name: dict(attrs) for name, attrs in shard.coord_attrs.items() if attrs}
    for name, attrs in shard.result_attrs.items():
        kept = {k: attrs[k] for k in KEPT_ATTRS if isinstance(attrs.get(k), str) and attrs[k]}
        if kept:
            out[name] = kept
    return out


def check_result_attrs(store: Store, shard: ShardData, known: Attrs) -> str:
    """Why ``shard`` may not be written (a result declares other units than the store
    records), or ``""`` after recording its results' new attributes.

    ``known`` is the caller's cache of the recorded attributes, updated here.
    """
    declared = shard_attrs(shard)
    if not declared:
        return ""
    problem = _result_problem(store, known, declared)
    if problem or merged(known, declared) == known:
        return problem
    with waiting_lock(os.path.join(store.path, META_LOCK)):
        meta = store.metadata()
        known.clear()
        known.update(recorded_attrs(meta, RESULT_ATTRS))
        problem = _result_problem(store, known, declared)
        if problem:
            return problem
        new = merged(known, declared)
        if meta and new != known:
            meta[RESULT_ATTRS] = new
            store._write_metadata(meta)
        known.clear()
        known.update(new)
    return ""


def _result_problem(store: Store, known: Attrs, declared: Attrs) -> str:
    changed = differences(known, declared)
    if not changed:
        return ""
    name, key, old, new = changed[0]
    return (
        f"result {name!r} is stored in the store {store.path} with {key} {old!r}, and this "
        f"run returns it with {key} {new!r}. Nothing of this batch was written, and "
        "everything stored is kept. One result holds values in one unit: convert the "
        f"values (and declare {key}={old!r}), return them under another result name (e.g. "
        f"{{'{name}_v2': ...}}), or use another store.")


def apply_attrs(ds: Any, meta: Mapping[str, Any]) -> Any:
    """``ds`` with the recorded attributes on its parameter and result variables."""
    for key in (PARAMETER_ATTRS, RESULT_ATTRS):
        for name, attrs in recorded_attrs(meta, key).items():
            if name in ds.variables:
                ds.variables[name].attrs.update(attrs)
    return ds


def merge_attrs(target: Store, source_meta: Mapping[str, Any]) -> None:
    """Record the source store's parameter and result attributes in ``target`` before
    its shards are copied in; refuse the merge when the two stores disagree."""
    with waiting_lock(os.path.join(target.path, META_LOCK)):
        meta = target.metadata()
        if not meta:
            return
        changed = False
        for key in (PARAMETER_ATTRS, RESULT_ATTRS):
            mine, theirs = recorded_attrs(meta, key), recorded_attrs(source_meta, key)
            found = differences(mine, theirs)
            if found:
                name, attr, old, new = found[0]
                what = "parameter" if key == PARAMETER_ATTRS else "result"
                raise StoreError(
                    f"cannot merge: the {what} {name!r} has {attr} {old!r} in {target.path} "
                    f"but {new!r} in the store merged into it; nothing was copied. Convert "
                    "one store's values into a new store first, or keep them apart.")
            if merged(mine, theirs) != mine:
                meta[key] = merged(mine, theirs)
                changed = True
        if changed:
            target._write_metadata(meta)
