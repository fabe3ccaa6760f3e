"""What orders the versions of a point, and what fixes the form of each result.

Runs are ordered by ordinals, never by clocks (clocks differ between the nodes of a
cluster). ``runs.json`` maps each run id to its ordinal in the store: a run takes the
next one when it starts, under a lock on ``.runs.lock``. Merging a store in gives the
runs it brings, in their own store's order, the ordinals after the destination's
(:func:`adopt_runs`): what was merged in last counts as the latest. Runs the file
does not list (stores written before it existed, shards from other code) rank first,
in run id order.

``notebookscan.json`` records the form of each result (``"results"``, see
:mod:`.forms`) when it is first written; :func:`check_forms` refuses a shard that
holds a result in another form.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .forms import Form, describe, family_of, shard_forms
from .schema import META_LOCK, ROLE, RUNS_FILE, RUNS_LOCK
from .shards import ShardData, open_dataset

if TYPE_CHECKING:
    from .directory import Store

__all__ = ["adopt_runs", "check_forms", "recorded_forms", "register_run", "run_order"]


@contextlib.contextmanager
def waiting_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting for it (short critical sections)."""
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}.json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ run ordinals


def run_order(store: Store) -> dict[str, int]:
    """Run id -> ordinal of every run ``runs.json`` lists (empty when there is none)."""
    path = os.path.join(store.path, RUNS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); restore it from a backup or "
                         "delete it (points are then ordered by run id)") from exc
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {str(k): v for k, v in runs.items() if isinstance(v, int) and not isinstance(v, bool)}


def _add_runs(store: Store, run_ids: Iterable[str]) -> dict[str, int]:
    """Give each run id not listed yet the next ordinal, in the given order."""
    os.makedirs(store.path, exist_ok=True)
    with waiting_lock(os.path.join(store.path, RUNS_LOCK)):
        runs = run_order(store)
        added = False
        for run_id in run_ids:
            if run_id and run_id not in runs:
                runs[run_id] = max(runs.values(), default=0) + 1
                added = True
        if added:
            _write_json(os.path.join(store.path, RUNS_FILE), {"runs": runs})
        return runs


def register_run(store: Store, run_id: str) -> int:
    """The ordinal of ``run_id`` in ``store``, taken now if the run has none yet."""
    return _add_runs(store, [run_id])[run_id]


def adopt_runs(target: Store, source: Store, run_ids: Iterable[str]) -> None:
    """List in ``target`` the runs a merge brings from ``source``: the source's listed
    runs in its order, then the others (``run_ids`` seen in its shards) by id."""
    order = run_order(source)
    listed = sorted(order, key=order.__getitem__)
    _add_runs(target, [*listed, *sorted(set(run_ids) - set(order))])


# ------------------------------------------------------------------ result forms


def recorded_forms(store: Store) -> dict[str, Form]:
    """The form of each result as ``notebookscan.json`` records it."""
    results = store.metadata().get("results")
    if not isinstance(results, dict):
        return {}
    return {str(name): Form.from_json(form) for name, form in results.items()
            if isinstance(form, dict)}


def forms_in_shards(store: Store) -> dict[str, Form]:
    """The form of each result in the first shard (by name) that holds it, read from
    the shards' metadata only (stores written before forms were recorded)."""
    forms: dict[str, Form] = {}
    for name in store.shard_files():
        with (contextlib.suppress(OSError, RuntimeError, KeyError, ValueError),
              open_dataset(os.path.join(store.shards_dir, name)) as nc):
            for var_name, var in nc.variables.items():
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                if attrs.get(ROLE) != "result" or var_name in forms:
                    continue
                dtype = var.dtype if not isinstance(var.dtype, type) else object
                forms[var_name] = Form(tuple(var.dimensions[1:]), family_of(dtype, attrs))
    return forms


def check_forms(store: Store, shard: ShardData, known: dict[str, Form]) -> str:
    """Why ``shard`` may not be written (a result in another form than the store's),
    or ``""`` after recording the forms of its new results.

    ``known`` is the caller's cache of the recorded forms, updated here.
    """
    forms = shard_forms(shard)
    problem = _form_problem(store, forms, known)
    if problem or all(name in known for name in forms):
        return problem
    with waiting_lock(os.path.join(store.path, META_LOCK)):
        meta = store.metadata()
        recorded = recorded_forms(store)
        if "results" not in meta:  # an older store: its shards say
            recorded = {**forms_in_shards(store), **recorded}
        known.clear()
        known.update(recorded)
        problem = _form_problem(store, forms, known)
        if problem:
            return problem
        known.update({name: form for name, form in forms.items() if name not in known})
        if meta:
            meta["results"] = {name: form.to_json() for name, form in known.items()}
            store._write_metadata(meta)
    return ""


def _form_problem(store: Store, forms: dict[str, Form], known: dict[str, Form]) -> str:
    changed = [(name, known[name], form) for name, form in forms.items()
               if name in known and known[name] != form]
    if not changed:
        return ""
    name, old, new = changed[0]
    more = f" (and {len(changed) - 1} more result(s))" if len(changed) > 1 else ""
    return (
        f"result {name!r} changed form{more}: the store {store.path} holds it as "
        f"{describe(old)}, and this run returns {describe(new)}. Nothing of this form was "
        "written, and everything stored is kept. Choose: store the new results in "
        "another store (store=another directory), return them under another result "
        f"name (e.g. {{'{name}_v2': ...}}), or go back to the function that returned "
        f"{describe(old)}."
    )
