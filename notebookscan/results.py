"""Turn what a simulation function returns into named arrays the store can keep.

A function may return a scalar, a numpy array, an :class:`xarray.DataArray` (its own
dims and index coordinates are kept), a dict of these, or ``None`` (nothing to store).
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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ResultError", "Value", "normalize_result"]

DEFAULT_NAME = "result"
_SCALAR_TYPES = (bool, int, float, str)


class ResultError(TypeError):
    """A function returned something the store cannot keep (the point is recorded as failed)."""


@dataclass(frozen=True, slots=True)
class Value:
    """One result variable of one point: data plus the names of its own dims.

    ``coords`` maps some of ``dims`` to 1-D coordinate arrays (e.g. ``time``).
    """

    data: Any  # a Python scalar (fast path) or a numpy array
    dims: tuple[str, ...] = ()
    coords: dict[str, np.ndarray] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickling a slots dataclass goes through dataclasses.fields() per object: slow
        return (Value, (self.data, self.dims, self.coords))


def _as_array(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "U":
        return array
    if kind == "S":
        return array.astype(str)
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


def _normalize_one(name: str, value: Any) -> Value:
    if type(value) in _SCALAR_TYPES:  # the hot path: plain floats, ints, ...
        return Value(value)
    if isinstance(value, np.generic):
        return Value(_as_array(name, value).item())
    da_type = _dataarray_type()
    if da_type is not None and isinstance(value, da_type):
        data = _as_array(name, value.values)
        dims = tuple(str(d) for d in value.dims)
        coords = {
            dim: np.asarray(value.coords[dim].values)
            for dim in dims
            if dim in value.coords and value.coords[dim].ndim == 1
        }
        if data.ndim == 0:
            return Value(data.item())
        return Value(data, dims, coords)
    data = _as_array(name, value)
    if data.ndim == 0:
        return Value(data.item())
    if data.ndim == 1:
        dims = (f"{name}_index",)
    else:
        dims = tuple(f"{name}_dim_{i}" for i in range(data.ndim))
    return Value(data, dims)


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
            if not isinstance(name, str) or not name or "/" in name:
                raise ResultError(
                    f"result names must be non-empty strings without '/', got {name!r}"
                )
            out[name] = _normalize_one(name, value)
        return out
    return {DEFAULT_NAME: _normalize_one(DEFAULT_NAME, returned)}
