"""Stable keys and seeds for parameter points.

A point's key is a hash of its canonical parameter values. It does not depend on the
order of execution, the process, the machine or the Python version, so a point computed
once is recognised everywhere: after a restart, in a refined scan, in a merged store.

Which values are the same point
-------------------------------
=========================== ==============================================================
value                       rule
=========================== ==============================================================
int (Python, numpy)         exact, within the 64-bit range ``-2**63 .. 2**63 - 1``; beyond
                            it a `SpaceError` (the store keeps int64): pass a float or a str
float (float64)             finite; equal to 12 significant digits is the same value
                            (``0.1 + 0.2`` is ``0.3``); an integral float below ``2**53``
                            is the int (``1.0`` is ``1``); ``-0.0`` is ``0.0``
float32, float16            the value its shortest decimal text names: ``np.float32(0.1)``
                            is ``0.1`` (not ``0.10000000149011612``), so a float32
                            ``linspace`` and the same values typed in float64 are the same
                            points
nan, inf, -inf              refused (`SpaceError`): a parameter value must be finite
bool (Python, numpy)        its own value: ``True`` is not ``1`` and not ``"1"``
str (Python, numpy)         exact text; a NUL character (``"\\x00"``) or text that is not
                            valid Unicode (a lone surrogate) is refused (`SpaceError`):
                            NetCDF would cut or refuse it
=========================== ==============================================================

Points stored before float32 values were read as their decimal text keep their old key
(that of the widened float64, e.g. ``0.10000000149011612``): a new run of the same
float32 axis computes those points once more, and the store shows both values.

The key text
------------
Each parameter gives ``name=token``, the tokens in sorted name order joined by the unit
separator ``"\\x1f"``; the key is the first 20 hex digits of its BLAKE2b hash. Tokens are
``n:<number>``, ``b:0``/``b:1`` and ``s:<text>``, where a ``"\\x1f"`` inside the text is
doubled. Parameter names of a scan are Python identifiers, so the text splits back into
its names and values in exactly one way: two different points never share a key (keys
are injective). Points whose names could make that text ambiguous (a name holding
``"="``, ``"\\x1f"`` or NUL; only possible in a space never run as a scan) use a
length-prefixed text instead, which starts with a NUL and so never equals the other.
Keys of points without a ``"\\x1f"`` in their text are those of every earlier version,
so stores written before keep skipping what they hold; text holding ``"\\x1f"`` was
ambiguous before, and such points are computed once more.

Examples
--------
>>> import numpy as np
>>> point_key({"k": np.linspace(0, 1, 11)[3], "tau": 0.01}) == point_key({"tau": 0.01, "k": 0.3})
True
>>> point_key({"n": 1}) == point_key({"n": 1.0})
True
>>> point_key({"n": 1}) == point_key({"n": True})
False
>>> point_key({"k": np.float32(0.1)}) == point_key({"k": 0.1})
True
>>> point_key({"a": "u\\x1fb=s:v", "b": "w"}) == point_key({"a": "u", "b": "v\\x1fb=s:w"})
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
    "canonical_unique",
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


INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # the store keeps integer parameters as int64
SEPARATOR = "\x1f"  # between the ``name=token`` items of a key's text
_V2 = "\x00k2"  # starts the length-prefixed key text (no other key text holds a NUL)


def check_value(name: str, value: object) -> object:
    """Return `value` as a plain Python scalar, or raise `SpaceError` naming `name`.

    Allowed: bool, int (64-bit), float (finite) and str (no NUL, valid Unicode),
    including their numpy equivalents; float32 and float16 become the float their
    shortest decimal text names (see the module docstring).
    """
    kind = type(value)
    if kind is float and math.isfinite(value):  # type: ignore[arg-type]
        return value  # already plain (the common case; the ABC checks below are slower)
    if kind is int:
        return _checked_int(name, value)  # type: ignore[arg-type]
    if kind is str:
        return _checked_text(name, value)  # type: ignore[arg-type]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (Integral, np.integer)):
        return _checked_int(name, int(value))
    if isinstance(value, (Real, np.floating)):
        f = as_float(value)
        if not math.isfinite(f):
            raise SpaceError(
                f"parameter {name!r} has the non-finite value {f!r}; parameter values must "
                "be finite numbers, bools or strings. Drop it from the axis or use where()."
            )
        return f
    if isinstance(value, (str, np.str_)):
        return _checked_text(name, str(value))
    raise SpaceError(
        f"parameter {name!r} has the value {value!r} of type {type(value).__name__}; "
        "parameter values must be int, float, bool or str (numpy scalars are fine). "
        "Pass an index or a name and look the object up inside the function."
    )


def as_float(value: object) -> float:
    """A Python float; a float32/float16 one is the float its shortest decimal text names.

    >>> as_float(np.float32(0.1)), float(np.float32(0.1))
    (0.1, 0.10000000149011612)
    """
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))  # numpy prints the shortest text that reads back the same
    return float(value)  # type: ignore[arg-type]


def floats_as_float64(array: np.ndarray) -> np.ndarray:
    """A float array as float64, float32/float16 values read as their shortest decimal text
    (the column form of :func:`as_float`)."""
    if array.dtype.itemsize < 8:
        return array.astype(str).astype(np.float64)
    return array.astype(np.float64, copy=False)


def _checked_int(name: str, value: int) -> int:
    if INT_MIN <= value <= INT_MAX:
        return value
    raise SpaceError(
        f"parameter {name!r} has the integer {value}, beyond the 64-bit integers the store "
        f"keeps ({INT_MIN} .. {INT_MAX}); pass it as a float ({float(value)!r}) or a "
        f"string ({str(value)!r}), or scale the parameter."
    )


def text_problem(value: str) -> str:
    """Why the store cannot keep the text `value` exactly (``""`` if it can)."""
    if "\x00" in value:
        return "it contains a NUL character ('\\x00'), which NetCDF cuts the text at"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "it is not valid Unicode (a lone surrogate), which UTF-8 cannot encode"
    return ""


def _checked_text(name: str, value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise SpaceError(f"parameter {name!r} has the text {value!r}: {problem}. Remove or "
                         "replace that character (e.g. value.replace('\\x00', '')).")
    return value


def canonical_token(value: object) -> str:
    """The canonical text of one (already checked) parameter value.

    Floats are rounded to 12 significant digits and integral floats written as
    integers, so values that differ only by floating-point noise share a token. A
    separator inside text is doubled, so the key text splits back in one way only.
    """
    kind = type(value)
    if kind is int:  # the common types first: the ABC checks below cost a microsecond
        return f"n:{value}"
    if kind is float:
        return _float_token(value)  # type: ignore[arg-type]
    if kind is str:
        return _text_token(value)  # type: ignore[arg-type]
    if isinstance(value, (bool, np.bool_)):
        return "b:1" if value else "b:0"
    if isinstance(value, (Integral, np.integer)):
        return f"n:{int(value)}"
    if isinstance(value, (Real, np.floating)):
        return _float_token(as_float(value))
    return _text_token(str(value))


def _text_token(text: str) -> str:
    if SEPARATOR in text:
        return "s:" + text.replace(SEPARATOR, SEPARATOR * 2)
    return "s:" + text


def _float_token(f: float) -> str:
    if f == 0.0:
        return "n:0"  # -0.0 and 0.0 are the same parameter value
    if f.is_integer() and abs(f) < 2**53:
        return f"n:{int(f)}"
    return f"n:{f:.{SIGNIFICANT_DIGITS - 1}e}"


def _plain_name(name: str) -> bool:
    """Names that cannot make the ``name=token`` text ambiguous (every identifier)."""
    return not ("=" in name or SEPARATOR in name or "\x00" in name)


def _key_text(names: Sequence[str], tokens: Iterable[str]) -> str:
    if all(_plain_name(name) for name in names):
        return SEPARATOR.join(f"{name}={token}" for name, token in zip(names, tokens,
                                                                        strict=True))
    return _V2 + "".join(f"{len(name)}:{name}{len(token)}:{token}"
                         for name, token in zip(names, tokens, strict=True))


def key_from_tokens(items: Iterable[tuple[str, str]]) -> str:
    """Key of a point given `(name, token)` pairs in sorted name order."""
    pairs = list(items)
    text = _key_text([name for name, _ in pairs], [token for _, token in pairs])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_LENGTH // 2).hexdigest()


def point_key(point: Mapping[str, object]) -> str:
    """The stable key of one point (a mapping of parameter name to value)."""
    names = sorted(point)
    text = _key_text(names, [canonical_token(check_value(name, point[name])) for name in names])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_LENGTH // 2).hexdigest()


def point_seed(key: str) -> int:
    """A 32-bit seed derived from a point's key (the same key always gives the same seed)."""
    digest = hashlib.blake2b(("seed:" + key).encode("ascii"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


KEY_DTYPE = f"S{KEY_LENGTH}"  # keys held as fixed-width ASCII bytes: 20 bytes a point
_KEY_BLOCK = 2**13  # points hashed at a time, so the text built on the way stays small


def _token_column(name: str, values: list[object], plain: bool) -> list[str]:
    """``name=token`` of each value (length-prefixed unless ``plain``, see `_key_text`);
    each distinct value is tokenised once."""
    cache: dict[tuple[type, object], str] = {}
    tokens = []
    for value in values:
        cache_key = (type(value), value)
        token = cache.get(cache_key)
        if token is None:
            text = canonical_token(value)
            token = cache[cache_key] = (f"{name}={text}" if plain else
                                        f"{len(name)}:{name}{len(text)}:{text}")
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
    plain = all(_plain_name(name) for name in order)
    separator, prefix = (SEPARATOR, "") if plain else ("", _V2)
    for start in range(0, n, _KEY_BLOCK):
        stop = min(n, start + _KEY_BLOCK)
        token_columns = [_token_column(name, np.asarray(columns[name])[start:stop].tolist(),
                                       plain) for name in order]
        out[start:stop] = [
            blake((prefix + separator.join(row)).encode("utf-8"),
                  digest_size=size).hexdigest()
            for row in zip(*token_columns, strict=True)
        ]
    return out


def legacy_key_array(names: Sequence[str], columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Keys as stores written before the separator was doubled inside text gave them.

    The same as :func:`key_array` for every point whose text holds no separator; kept so
    that readers recognise such rows of older shards (see ``store.table``).
    """
    order = sorted(names)
    n = len(columns[order[0]]) if order else 0
    out = np.empty(n, dtype=KEY_DTYPE)
    for i in range(n):
        tokens = []
        for name in order:
            token = canonical_token(np.asarray(columns[name])[i].item()
                                    if isinstance(columns[name], np.ndarray)
                                    and columns[name].dtype.kind != "O" else columns[name][i])
            if token.startswith("s:"):
                token = "s:" + token[2:].replace(SEPARATOR * 2, SEPARATOR)
            tokens.append(f"{name}={token}")
        out[i] = hashlib.blake2b(SEPARATOR.join(tokens).encode("utf-8"),
                                 digest_size=KEY_LENGTH // 2).hexdigest()
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


def _labels(values: np.ndarray) -> np.ndarray:
    """Text of an object column's values, telling kinds apart: where a parameter is text
    in some shards and numbers or bools in others, the text is quoted (``'1'``, not
    ``1``), so no two points fall into one cell."""
    items = values.tolist()
    if all(type(v) is str for v in items):
        return values.astype(str)
    return np.array([repr(v) if type(v) is str else str(v) for v in items], dtype=str)


def canonical_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each value's index, merging float noise (0.1 vs 0.1+1e-17)."""
    if values.dtype.kind == "O":
        values = _labels(values)
    elif values.dtype.kind == "U":
        values = values.astype(str)
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.dtype.kind != "f" or len(unique) < 2:
        return unique, inverse.reshape(-1)
    tokens = [canonical_token(v) for v in unique.tolist()]
    first: dict[str, int] = {}
    remap = np.array([first.setdefault(t, len(first)) for t in tokens])
    keep = np.unique(remap, return_index=True)[1]
    return unique[keep], remap[inverse.reshape(-1)]
