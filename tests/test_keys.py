"""Point keys and seeds: canonical values, stability, and the column fast path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notebookscan.errors import SpaceError
from notebookscan.keys import (
    canonical_token,
    check_value,
    keys_for_columns,
    point_key,
    point_seed,
)

ROOT = Path(__file__).resolve().parents[1]

scalars = st.one_of(
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=8),
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)


def test_key_follows_the_documented_canonical_form() -> None:
    text = "\x1f".join(["flag=b:1", "k=n:3.00000000000e-01", "n=n:2", "name=s:a"])
    expected = hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    assert point_key({"name": "a", "n": 2, "k": 0.3, "flag": True}) == expected
    assert point_key({"name": "a", "n": 2, "k": 0.3, "flag": True}) == "a195cb3143094cba5e8b"


def test_seed_follows_the_documented_derivation() -> None:
    key = "a195cb3143094cba5e8b"
    digest = hashlib.blake2b(b"seed:" + key.encode(), digest_size=4).digest()
    assert point_seed(key) == int.from_bytes(digest, "little") == 3441094499


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.linspace(0, 1, 11)[3], 0.3),
        (np.linspace(0, 1, 11)[7], 0.7),
        (0.1 + 0.2, 0.3),
        (1.0, 1),
        (np.float64(2.0), 2),
        (np.int64(5), 5),
        (-0.0, 0.0),
        (0.0, 0),
        (np.bool_(True), True),
        (np.str_("rk4"), "rk4"),
    ],
)
def test_values_that_are_the_same_parameter_share_a_key(a: object, b: object) -> None:
    assert canonical_token(check_value("x", a)) == canonical_token(check_value("x", b))
    assert point_key({"x": a}) == point_key({"x": b})


@pytest.mark.parametrize(
    ("a", "b"),
    [(True, 1), (1, "1"), (False, 0), (0.3, 0.3000001), (1e-20, 0), ("a", "A"), (2**60, 2**60 + 1)],
)
def test_different_values_have_different_keys(a: object, b: object) -> None:
    assert point_key({"x": a}) != point_key({"x": b})


def test_the_name_is_part_of_the_key() -> None:
    assert point_key({"x": 1}) != point_key({"y": 1})
    assert point_key({"x": 1, "y": 2}) != point_key({"x": 2, "y": 1})


@given(st.dictionaries(names, scalars, min_size=1, max_size=5), st.randoms())
def test_key_does_not_depend_on_the_order_of_parameters(point: dict, rnd) -> None:
    items = list(point.items())
    rnd.shuffle(items)
    assert point_key(dict(items)) == point_key(point)


@given(st.dictionaries(names, scalars, min_size=1, max_size=4))
def test_key_shape_and_seed_range(point: dict) -> None:
    key = point_key(point)
    assert len(key) == 20
    assert int(key, 16) >= 0
    assert 0 <= point_seed(key) < 2**32
    assert point_seed(key) == point_seed(point_key(dict(point)))


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), scalars, min_size=3,
                                max_size=3), min_size=1, max_size=20))
def test_keys_for_columns_matches_point_key(rows: list[dict]) -> None:
    columns = {name: [row[name] for row in rows] for name in ["c", "a", "b"]}
    assert keys_for_columns(["c", "a", "b"], columns) == [point_key(row) for row in rows]


def test_keys_for_columns_of_no_names_is_empty() -> None:
    assert keys_for_columns([], {}) == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(float("nan"), "non-finite"), (np.inf, "non-finite"), (None, "NoneType"),
     ([1, 2], "list"), (b"x", "bytes"), (1 + 2j, "complex")],
)
def test_check_value_rejects_and_names_the_parameter(value: object, fragment: str) -> None:
    with pytest.raises(SpaceError, match=fragment) as info:
        check_value("gamma", value)
    assert "'gamma'" in str(info.value)
    with pytest.raises(SpaceError, match="'gamma'"):
        point_key({"gamma": value})


def test_check_value_returns_plain_python_scalars() -> None:
    assert type(check_value("x", np.int32(3))) is int
    assert type(check_value("x", np.float32(0.5))) is float
    assert type(check_value("x", np.bool_(False))) is bool
    assert type(check_value("x", np.str_("a"))) is str


SCRIPT = """
import json, sys
from notebookscan.keys import point_key, point_seed
points = [{"name": s, "k": k / 7, "n": n, "ok": n % 2 == 0}
          for s in ["alpha", "beta", "γ"] for k in range(5) for n in range(3)]
keys = [point_key(p) for p in points]
print(json.dumps({"keys": keys, "seeds": [point_seed(k) for k in keys],
                  "set": sorted({point_key({"s": s}) for s in ["x", "y", "z"]})}))
"""


def _run(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def test_keys_and_seeds_are_the_same_in_other_processes() -> None:
    first, second = _run("1"), _run("12345")
    assert first == second
    points = [{"name": s, "k": k / 7, "n": n, "ok": n % 2 == 0}
              for s in ["alpha", "beta", "γ"] for k in range(5) for n in range(3)]
    assert first["keys"] == [point_key(p) for p in points]
    assert first["seeds"] == [point_seed(point_key(p)) for p in points]
