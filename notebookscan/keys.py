"""Stable keys and seeds for parameter points.

A point's key is a hash of its canonical parameter values. It does not depend on the
order of execution, the process, the machine or the Python version, so a point computed
once is recognised everywhere: after a restart, in a refined scan, in a merged store.

Examples
--------
>>> import numpy as np
>>> point_key({"k": np.linspace(0, 1, 11)[3], "tau": 0.01}) == point_key({"tau": 0.01, "k": 0.3})
True
>>> point_key({"n": 1}) == point_key({"n": 1.0})
True
>>> point_key({"n": 1}) == point_key({"n": True})
False
>>> 0 <= point_seed(point_key({"k": 1.0})) < 2**32
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real

import numpy as np

from .errors import SpaceError

__all__ = [
    "canonical_token",
    "check_value",
    "key_array",
    "key_from_tokens",
    "keys_for_columns",
    "point_key",
    "point_seed",
    "seed_array",
]

KEY_LENGTH = 20  # hex digits: 80 bits, collisions negligible far beyond 10**9 points
SIGNIFICANT_DIGITS = 12  # floats that agree to 12 digits are the same parameter value


def check_value(name: str, value: object) -> object:
    """Return `value` as a plain Python scalar, or raise `SpaceError` naming `name`.

    Allowed: bool, int, float (finite) and str, including their numpy equivalents.
    """
    kind = type(value)
    if kind is int or kind is str or (kind is float and math.isfinite(value)):  # type: ignore[arg-type]
        return value  # already plain (the common case; the ABC checks below are slower)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (Integral, np.integer)):
        return int(value)
    if isinstance(value, (Real, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise SpaceError(
                f"parameter {name!r} has the non-finite value {f!r}; parameter values must "
                "be finite numbers, bools or strings. Drop it from the axis or use where()."
            )
        return f
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise SpaceError(
        f"parameter {name!r} has the value {value!r} of type {type(value).__name__}; "
        "parameter values must be int, float, bool or str (numpy scalars are fine). "
        "Pass an index or a name and look the object up inside the function."
    )


def canonical_token(value: object) -> str:
    """The canonical text of one (already checked) parameter value.

    Floats are rounded to 12 significant digits and integral floats written as
    integers, so values that differ only by floating-point noise share a token.
    """
    kind = type(value)
    if kind is int:  # the common types first: the ABC checks below cost a microsecond
        return f"n:{value}"
    if kind is float:
        return _float_token(value)  # type: ignore[arg-type]
    if kind is str:
        return "s:" + value  # type: ignore[operator]
    if isinstance(value, (bool, np.bool_)):
        return "b:1" if value else "b:0"
    if isinstance(value, (Integral, np.integer)):
        return f"n:{int(value)}"
    if isinstance(value, (Real, np.floating)):
        return _float_token(float(value))
    return "s:" + str(value)


def _float_token(f: float) -> str:
    if f == 0.0:
        return "n:0"  # -0.0 and 0.0 are the same parameter value
    if f.is_integer() and abs(f) < 2**53:
        return f"n:{int(f)}"
    return f"n:{f:.{SIGNIFICANT_DIGITS - 1}e}"


def key_from_tokens(items: Iterable[tuple[str, str]]) -> str:
    """Key of a point given `(name, token)` pairs in sorted name order."""
    text = "\x1f".join(f"{name}={token}" for name, token in items)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_LENGTH // 2).hexdigest()


def point_key(point: Mapping[str, object]) -> str:
    """The stable key of one point (a mapping of parameter name to value)."""
    return key_from_tokens(
        (name, canonical_token(check_value(name, point[name]))) for name in sorted(point)
    )


def point_seed(key: str) -> int:
    """A 32-bit seed derived from a point's key (the same key always gives the same seed)."""
    digest = hashlib.blake2b(("seed:" + key).encode("ascii"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


KEY_DTYPE = f"S{KEY_LENGTH}"  # keys held as fixed-width ASCII bytes: 20 bytes a point
_KEY_BLOCK = 2**13  # points hashed at a time, so the text built on the way stays small


def _token_column(name: str, values: list[object]) -> list[str]:
    """``name=token`` of each value; each distinct value is tokenised once."""
    cache: dict[tuple[type, object], str] = {}
    tokens = []
    for value in values:
        cache_key = (type(value), value)
        token = cache.get(cache_key)
        if token is None:
            token = cache[cache_key] = f"{name}={canonical_token(value)}"
        tokens.append(token)
    return tokens


def key_array(names: Sequence[str], columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Keys of many points given as numpy columns, as a ``KEY_DTYPE`` bytes array.

    The same keys as :func:`point_key`, computed a block of points at a time: a scan
    of a million points holds 20 MB of keys, and no per-point text beyond one block.
    """
    order = sorted(names)
    n = len(columns[order[0]]) if order else 0
    out = np.empty(n, dtype=KEY_DTYPE)
    blake = hashlib.blake2b
    size = KEY_LENGTH // 2
    for start in range(0, n, _KEY_BLOCK):
        stop = min(n, start + _KEY_BLOCK)
        token_columns = [_token_column(name, np.asarray(columns[name])[start:stop].tolist())
                         for name in order]
        out[start:stop] = [
            blake("\x1f".join(row).encode("utf-8"), digest_size=size).hexdigest()
            for row in zip(*token_columns, strict=True)
        ]
    return out


def keys_for_columns(names: Sequence[str], columns: Mapping[str, Sequence[object]]) -> list[str]:
    """Keys of many points given column by column, as a list of str.

    Examples
    --------
    >>> keys_for_columns(["k"], {"k": [0.3, 1]}) == [point_key({"k": 0.3}), point_key({"k": 1})]
    True
    """
    if not names:
        return []
    arrays = {name: np.array(list(columns[name]), dtype=object) for name in names}
    return key_array(names, arrays).astype(str).tolist()


def seed_array(keys: np.ndarray) -> np.ndarray:
    """:func:`point_seed` of each key of a ``KEY_DTYPE`` array, as uint32."""
    blake = hashlib.blake2b
    out = np.empty(len(keys), dtype=np.uint32)
    for start in range(0, len(keys), _KEY_BLOCK):  # no Python bytes per point beyond a block
        out[start:start + _KEY_BLOCK] = [
            int.from_bytes(blake(b"seed:" + key, digest_size=4).digest(), "little")
            for key in keys[start:start + _KEY_BLOCK].tolist()]
    return out
