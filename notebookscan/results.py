"""Turn what a simulation function returns into named arrays the store can keep.

A function may return a scalar, a numpy array, an :class:`xarray.DataArray` (its own
dims and index coordinates are kept, and its and its coordinates' CF attributes
``units``, ``long_name`` and ``standard_name``: see :data:`KEPT_ATTRS`), a dict of these
(or an :class:`xarray.Dataset`), or ``None`` (nothing to store).
A bare scalar or array becomes the variable ``result``. Anything else — Python objects,
complex numbers, ragged lists — is refused with a message that says what to return
instead; the scan records that point as failed and goes on.

Examples
--------
>>> normalize_result(3.5)
{'result': Value(data=3.5, dims=(), coords={})}
>>> v = normalize_result({"spikes": [0.1, 0.4]})["spikes"]
>>> v.dims, v.data.tolist()
(('spikes_index',), [0.1, 0.4])
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ResultError
from .keys import INT_MAX, INT_MIN, text_problem

__all__ = ["KEPT_ATTRS", "STRICT_ATTRS", "ResultError", "Value", "attrs_conflict",
           "derived_names", "joined_attrs", "kept_attrs", "name_problem", "normalize_result"]

DEFAULT_NAME = "result"
# NC_MAX_NAME is 256 bytes, but netCDF4-python cannot read back a name of exactly 256
MAX_NAME_BYTES = 255
# the store adds these variables per own dim of a result (see shards.py)
DIM_SUFFIXES = ("_length", "_coord")
ALLOWED_NAMES = (
    "names must be non-empty Unicode text in NFC form, start with a letter, digit, '_' "
    "or a non-ASCII character, contain no '/' and no control characters, not end with "
    f"a space, and be at most {MAX_NAME_BYTES} bytes in UTF-8 (including the "
    f"'{DIM_SUFFIXES[0]}' the store appends to dim names)"
)


#: The attributes of a returned DataArray (and of a parameter, see
#: :meth:`notebookscan.Space.with_attrs`) the store keeps: the CF names and units that
#: xarray and :mod:`notebookscan.plotting` put on axis and colorbar labels. Others are
#: dropped; these must be text.
KEPT_ATTRS = ("units", "long_name", "standard_name")
#: The attributes that must agree wherever a variable is declared: values in two units
#: cannot share a variable. Of the others (names only), the first declared is kept.
STRICT_ATTRS = ("units",)
MAX_ATTR_CHARS = 1000  # a label, not a document


def attrs_conflict(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """The first of :data:`STRICT_ATTRS` that ``old`` and ``new`` both give, differently
    (``""`` when none: they may be joined, see :func:`joined_attrs`)."""
    return next((k for k in STRICT_ATTRS if k in old and k in new and old[k] != new[k]), "")


def joined_attrs(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """``old`` with the attributes only ``new`` gives added (the first declared wins)."""
    return {**new, **old}


@dataclass(frozen=True, slots=True)
class Value:
    """One result variable of one point: data plus the names of its own dims.

    ``coords`` maps some of ``dims`` to 1-D coordinate arrays (e.g. ``time``);
    ``attrs`` holds the kept attributes (see :data:`KEPT_ATTRS`), or ``None``, and
    ``coord_attrs`` those of the coordinates (``{"time": {"units": "s"}}``), or ``None``.
    """

    data: Any  # a Python scalar (fast path) or a numpy array
    dims: tuple[str, ...] = ()
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, str] | None = field(default=None, repr=False)
    coord_attrs: dict[str, dict[str, str]] | None = field(default=None, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickling a slots dataclass goes through dataclasses.fields() per object: slow
        if self.attrs is None and self.coord_attrs is None:
            return (Value, (self.data, self.dims, self.coords))
        return (Value, (self.data, self.dims, self.coords, self.attrs, self.coord_attrs))


def kept_attrs(attrs: Mapping[Any, Any], *, strict: bool = False) -> tuple[dict[str, str], str]:
    """The :data:`KEPT_ATTRS` of ``attrs`` (in that order), and the problem (``""`` if none).

    With ``strict``, any other attribute is a problem too (a declaration, not a
    DataArray's attributes that may hold anything).

    >>> kept_attrs({"units": "Hz", "long_name": "firing rate", "note": 1})
    ({'units': 'Hz', 'long_name': 'firing rate'}, '')
    >>> kept_attrs({"units": 3})[1]
    "its 'units' is the int 3, not text"
    """
    if strict:
        other = [k for k in attrs if k not in KEPT_ATTRS]
        if other:
            return {}, (f"{other[0]!r} is not an attribute the store keeps (it keeps "
                        f"{', '.join(KEPT_ATTRS)})")
    kept: dict[str, str] = {}
    for key in KEPT_ATTRS:
        if key not in attrs:
            continue
        value = attrs[key]
        if not isinstance(value, str):
            return {}, f"its {key!r} is the {type(value).__name__} {value!r}, not text"
        problem = text_problem(value) or (
            f"it is {len(value)} characters long (at most {MAX_ATTR_CHARS})"
            if len(value) > MAX_ATTR_CHARS else "")
        if problem:
            return {}, f"its {key!r} {value[:80]!r} cannot be stored: {problem}"
        if value:
            kept[key] = value
    return kept, ""


def _as_array(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "U":
        _check_text_array(name, array)
        return array
    if kind == "S":
        array = array.astype(str)
        _check_text_array(name, array)
        return array
    if kind == "c":
        raise ResultError(
            f"result {name!r} is complex ({array.dtype}); NetCDF has no complex type. "
            f"Return its parts, e.g. {{'{name}_real': z.real, '{name}_imag': z.imag}}."
        )
    if kind == "M":
        raise ResultError(
            f"result {name!r} holds datetimes; return seconds as floats instead."
        )
    raise ResultError(
        f"result {name!r} of type {type(value).__name__} cannot be stored (numpy sees dtype "
        f"{array.dtype}); return numbers, strings, bools, numpy arrays, xarray.DataArrays "
        "or a dict of these. Ragged lists need one array each, or padding."
    )


@functools.lru_cache(maxsize=4096)  # called per result per point: names repeat
def name_problem(name: object) -> str:
    """Why NetCDF would refuse ``name`` for a variable or dimension (``""`` if it would not).

    The rules of netCDF-C's ``NC_check_name``, checked here so that a bad name fails its
    point instead of the whole flush.

    >>> name_problem("rate"), name_problem("a:b"), name_problem("λ")
    ('', '', '')
    >>> name_problem(":")
    "it starts with ':'"
    """
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode (a lone surrogate)"
    if "/" in name:
        return "it contains '/'"
    first = name[0]
    if first.isascii() and not (first.isalnum() or first == "_"):
        return f"it starts with {first!r}"
    bad = next((c for c in name if c.isascii() and not c.isprintable()), None)
    if bad is not None:
        return f"it contains the control character {bad!r}"
    if name[-1].isascii() and name[-1].isspace():
        return "it ends with a space"
    if unicodedata.normalize("NFC", name) != name:  # NetCDF would store it changed
        return "it is not in Unicode NFC form (unicodedata.normalize('NFC', name) differs)"
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long in UTF-8"
    return ""


def derived_names(dims: Iterable[str]) -> set[str]:
    """The names the store uses for ``dims``: the dims, their lengths and coordinates."""
    return {f"{dim}{suffix}" for dim in dims for suffix in ("", *DIM_SUFFIXES)}


def _check_name(name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise ResultError(f"result name {name!r} cannot be stored: {problem}; {ALLOWED_NAMES}")


def _check_dims(name: str, value: Value) -> None:
    """Refuse a result whose dims NetCDF would refuse."""
    for dim in value.dims:
        problem = name_problem(dim) or name_problem(f"{dim}{DIM_SUFFIXES[0]}")
        if problem:
            raise ResultError(f"result {name!r} has a dim {dim!r} that cannot be stored: "
                              f"{problem} (with '{DIM_SUFFIXES[0]}' appended); "
                              f"{ALLOWED_NAMES}. Use a shorter result or dim name.")


def _check_clashes(values: dict[str, Value]) -> None:
    """Refuse a result named like a dim (or its length or coordinate) of the same point."""
    if all(not v.dims for v in values.values()):
        return
    derived = {n: name for name, v in values.items() for n in derived_names(v.dims)}
    for name in values:
        if name in derived:
            raise ResultError(
                f"result name {name!r} is also the name the store gives a dim (or its "
                f"length or coordinate) of result {derived[name]!r}; rename one of them")


INT_RANGE = (INT_MIN, INT_MAX)  # NetCDF's widest signed integers


def _checked_scalar(name: str, value: Any) -> Any:
    """``value`` (a plain int or str) if the store keeps it exactly, else a `ResultError`."""
    kind = type(value)
    if kind is int and not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise ResultError(
            f"result {name!r} is the integer {value}, beyond the 64-bit integers NetCDF "
            f"stores ({INT_RANGE[0]} .. {INT_RANGE[1]}); return it as a float "
            f"(float(value)) or a str (str(value)).")
    if kind is str:
        problem = text_problem(value)
        if problem:
            raise ResultError(f"result {name!r} is the text {value!r}: {problem}; remove "
                              "or replace that character (e.g. value.replace('\\x00', '')).")
    return value


def _check_text_array(name: str, array: np.ndarray) -> None:
    """Refuse text arrays holding a NUL or a lone surrogate (see `keys.text_problem`)."""
    for text in array.ravel().tolist():
        problem = text_problem(text)
        if problem:
            raise ResultError(f"result {name!r} holds the text {text!r}: {problem}; remove "
                              "or replace that character in every element.")


def _normalize_one(name: str, value: Any) -> Value:
    kind = type(value)
    if kind is float or kind is bool:  # the hot path
        return Value(value)
    if kind is int or kind is str:
        return Value(_checked_scalar(name, value))
    if isinstance(value, np.generic):
        return Value(_checked_scalar(name, _as_array(name, value).item()))
    da_type = _dataarray_type()
    if da_type is not None and isinstance(value, da_type):
        data = _as_array(name, value.values)
        dims = tuple(str(d) for d in value.dims)
        coords = {
            dim: np.asarray(value.coords[dim].values)
            for dim in dims
            if dim in value.coords and value.coords[dim].ndim == 1
        }
        attrs = _result_attrs(name, value.attrs) if value.attrs else None
        if data.ndim == 0:
            return Value(_checked_scalar(name, data.item()), attrs=attrs)
        coord_attrs = {dim: found for dim in coords if value.coords[dim].attrs and
                       (found := _result_attrs(f"{name}'s coordinate {dim}",
                                               value.coords[dim].attrs))}
        return Value(data, dims, coords, attrs, coord_attrs or None)
    data = _as_array(name, value)
    if data.ndim == 0:
        return Value(_checked_scalar(name, data.item()))
    if data.ndim == 1:
        dims = (f"{name}_index",)
    else:
        dims = tuple(f"{name}_dim_{i}" for i in range(data.ndim))
    return Value(data, dims)


def _result_attrs(name: str, attrs: Mapping[Any, Any]) -> dict[str, str] | None:
    kept, problem = kept_attrs(attrs)
    if problem:
        raise ResultError(f"result {name!r}: {problem}; give {', '.join(KEPT_ATTRS)} as "
                          "short text, e.g. attrs={'units': 'Hz', 'long_name': 'rate'}.")
    return kept or None


def _dataarray_type() -> type | None:
    # xarray is always installed, but importing it on engines costs ~0.5 s: only look it up
    # once a result might be a DataArray.
    import sys

    module = sys.modules.get("xarray")
    return module.DataArray if module is not None else None


def normalize_result(returned: Any) -> dict[str, Value]:
    """Convert a function's return value into ``{name: Value}``.

    Raises
    ------
    ResultError
        When the value (or one entry of a returned dict) cannot be stored.
    """
    if returned is None:
        return {}
    if isinstance(returned, Mapping):
        out = {}
        for name, value in returned.items():
            if not isinstance(name, str):
                raise ResultError(f"result names must be strings, got {name!r}; "
                                  f"{ALLOWED_NAMES}")
            _check_name(name)
            out[name] = _normalize_one(name, value)
            _check_dims(name, out[name])
        _check_clashes(out)
        return out
    out = {DEFAULT_NAME: _normalize_one(DEFAULT_NAME, returned)}
    _check_dims(DEFAULT_NAME, out[DEFAULT_NAME])
    _check_clashes(out)
    return out
