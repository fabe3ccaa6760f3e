"""The form of a result variable, and how a store keeps results whose form changed.

A result's *form* is its own dims (names, hence also their number) and the family of
its values: ``number`` (ints and floats: ints combine into floats exactly), ``bool``,
``str``, ``datetime``, ``complex``. Sizes of own dims are not part of the form
(variable-length results are stored padded, with their lengths).

The rule:

* A store records the form of each result variable in ``notebookscan.json``
  (``"results"``) when it is first written. A run whose results arrive in another form
  is stopped before that form is written (:meth:`Store.check_forms`, called at each
  flush); nothing already stored is touched.
* Shards written otherwise (older versions, merged stores) may hold one variable in
  several forms. Reading keeps every row of every form: the recorded form (or, without
  a record, the form of the first shard in name order) keeps the name, each other form
  is shown as ``<name>__form2``, ``<name>__form3``, ... (in the order of
  :func:`form_label`). Compaction never combines shards whose forms differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .schema import DTYPE_ATTR, FORM_SUFFIX

__all__ = ["Form", "compatible", "describe", "form_of", "shard_forms", "split_names"]


class Form(NamedTuple):
    """Own dims and value family of one result variable."""

    dims: tuple[str, ...]
    family: str

    def to_json(self) -> dict[str, Any]:
        return {"dims": list(self.dims), "family": self.family}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Form:
        return cls(tuple(str(d) for d in data.get("dims", ())), str(data.get("family", "")))


def family_of(dtype: np.dtype, attrs: Mapping[str, Any] | None = None) -> str:
    """The value family of a stored column (bools are int8 with a marker attribute)."""
    if attrs and attrs.get(DTYPE_ATTR) == "bool":
        return "bool"
    kind = np.dtype(dtype).kind
    if kind == "b":
        return "bool"
    if kind in "iuf":
        return "number"
    if kind == "c":
        return "complex"
    if kind in "mM":
        return "datetime"
    return "str"


def form_of(shard: Any, name: str) -> Form:
    """The form of result ``name`` of a :class:`~notebookscan.store.shards.ShardData`."""
    return Form(tuple(shard.result_dims[name]),
                family_of(shard.results[name].dtype, shard.result_attrs.get(name)))


def shard_forms(shard: Any) -> dict[str, Form]:
    """The form of every result of a shard."""
    return {name: form_of(shard, name) for name in shard.results}


def compatible(a: Mapping[str, Form], b: Mapping[str, Form]) -> bool:
    """True when every variable ``a`` and ``b`` both hold has one form in both."""
    return all(b[name] == form for name, form in a.items() if name in b)


def describe(form: Form) -> str:
    """``'a scalar number'`` or ``'a str array with dims ('time',)'``."""
    if not form.dims:
        return f"a scalar {form.family}"
    return f"a {form.family} array with dims {form.dims}"


def form_label(form: Form) -> str:
    """A sortable text for a form (orders the secondary forms of one variable)."""
    return f"{len(form.dims)}:{','.join(form.dims)}:{form.family}"


def split_names(forms_by_shard: Iterable[Mapping[str, Form]],
                primary: Mapping[str, Form] | None = None) -> dict[tuple[str, Form], str]:
    """The name each (variable, form) is read under.

    The primary form of a variable (``primary[name]`` when it occurs, else the first
    seen) keeps the name; the others become ``<name>__form2``, ... in the order of
    :func:`form_label`, skipping names already taken.
    """
    seen: dict[str, list[Form]] = {}
    for forms in forms_by_shard:
        for name, form in forms.items():
            known = seen.setdefault(name, [])
            if form not in known:
                known.append(form)
    taken = set(seen)
    out: dict[tuple[str, Form], str] = {}
    for name, forms in seen.items():
        first = primary.get(name) if primary else None
        if first not in forms:
            first = forms[0]
        out[(name, first)] = name
        number = 2
        for form in sorted((f for f in forms if f != first), key=form_label):
            while f"{name}{FORM_SUFFIX}{number}" in taken:
                number += 1
            out[(name, form)] = f"{name}{FORM_SUFFIX}{number}"
            taken.add(out[(name, form)])
            number += 1
    return out
