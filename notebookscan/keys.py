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
    "key_from_tokens",
    "keys_for_columns",
    "point_key",
    "point_seed",
]

KEY_LENGTH = 20  # hex digits: 80 bits, collisions negligible far beyond 10**9 points
SIGNIFICANT_DIGITS = 12  # floats that agree to 12 digits are the same parameter value


def check_value(name: str, value: object) -> object:
    """Return `value` as a plain Python scalar, or raise `SpaceError` naming `name`.

    Allowed: bool, int, float (finite) and str, including their numpy equivalents.
    """
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
    if isinstance(value, (bool, np.bool_)):
        return "b:1" if value else "b:0"
    if isinstance(value, (Integral, np.integer)):
        return f"n:{int(value)}"
    if isinstance(value, (Real, np.floating)):
        f = float(value)
        if f == 0.0:
            return "n:0"  # -0.0 and 0.0 are the same parameter value
        if f.is_integer() and abs(f) < 2**53:
            return f"n:{int(f)}"
        return f"n:{f:.{SIGNIFICANT_DIGITS - 1}e}"
    return "s:" + str(value)


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


def keys_for_columns(names: Sequence[str], columns: Mapping[str, Sequence[object]]) -> list[str]:
    """Keys of many points given column by column (fast: each distinct value is tokenised once)."""
    order = sorted(names)
    token_columns = []
    for name in order:
        cache: dict[object, str] = {}
        tokens = []
        for value in columns[name]:
            cache_key = (type(value), value)
            token = cache.get(cache_key)
            if token is None:
                token = cache[cache_key] = f"{name}={canonical_token(value)}"
            tokens.append(token)
        token_columns.append(tokens)
    blake = hashlib.blake2b
    size = KEY_LENGTH // 2
    return [
        blake("\x1f".join(row).encode("utf-8"), digest_size=size).hexdigest()
        for row in zip(*token_columns, strict=True)
    ] if order else []
