"""Values come back exactly as written, and keys are injective.

Scans run with the serial executor into real stores (NetCDF shards on disk). Every
value a run accepts is stored and read back as itself, before and after compaction;
values the store cannot keep are refused before any work (parameters) or fail their
point with a clear error (results); and a store a run accepted always opens.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import notebookscan as ns
from notebookscan.keys import SIGNIFICANT_DIGITS, keys_for_columns, point_key
from notebookscan.store import Store
from notebookscan.store.shards import Record, shard_from_records

SERIAL = {"executor": "serial", "progress": False}


def _run(fn, space, store, **kwargs):
    return ns.Scan(fn, space, store=store).run(**SERIAL, **kwargs).progress


def _opens_before_and_after_compaction(store):
    """The store opens; compaction keeps every value; returns both datasets."""
    before = ns.open_store(store)
    ns.compact(store)
    after = ns.open_store(store)
    assert before.sizes == after.sizes
    return before, after


# ---------------------------------------------------------------- keys are injective

SEPARATORS = ["\x1f", "\x1f\x1f", "=", ":", "s:", "n:", "b:1", "\x1e", "=s:", "\x1fb=s:"]
adversarial_text = st.lists(
    st.one_of(st.sampled_from(SEPARATORS),
              st.text(st.characters(blacklist_characters="\x00",
                                    blacklist_categories=("Cs",)), max_size=3)),
    max_size=5).map("".join)
values = st.one_of(adversarial_text, st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=False, allow_infinity=False))
names = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,4}", fullmatch=True),
                  adversarial_text.filter(bool))


def _same_point(a: dict, b: dict) -> bool:
    """The documented equality: same names; per name the same kind (bool, number, text)
    and, for numbers, equal to 12 significant digits (-0.0 == 0.0, 1 == 1.0)."""
    if set(a) != set(b):
        return False
    for name in a:
        x, y = a[name], b[name]
        kind = {bool: "b", str: "s"}
        if kind.get(type(x), "n") != kind.get(type(y), "n"):
            return False
        if isinstance(x, (str, bool)):
            if x != y:
                return False
        elif not _same_number(x, y):
            return False
    return True


def _same_number(x, y) -> bool:
    if x == y:
        return True
    fx, fy = float(x), float(y)
    if fx == fy == 0:
        return True
    if type(x) is int and type(y) is int:
        return False
    return f"{fx:.{SIGNIFICANT_DIGITS - 1}e}" == f"{fy:.{SIGNIFICANT_DIGITS - 1}e}" and not (
        (fx.is_integer() and abs(fx) < 2**53) or (fy.is_integer() and abs(fy) < 2**53))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(names, values, min_size=1, max_size=3),
       st.dictionaries(names, values, min_size=1, max_size=3))
def test_different_points_never_share_a_key(a, b):
    if _same_point(a, b):
        return
    assert point_key(a) != point_key(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(adversarial_text, min_size=4, max_size=4))
def test_text_values_moved_across_the_separator_never_share_a_key(texts):
    a, b, c, d = texts
    if (a, b) != (c, d):
        assert point_key({"a": a, "b": b}) != point_key({"a": c, "b": d})
    # the column path (spaces, scans) gives the same keys as point_key
    assert keys_for_columns(["a", "b"], {"a": [a, c], "b": [b, d]}) == [
        point_key({"a": a, "b": b}), point_key({"a": c, "b": d})]


def test_the_issue_example_gives_two_keys_and_two_results(tmp_path):
    one, two = {"a": "u\x1fb=s:v", "b": "w"}, {"a": "u", "b": "v\x1fb=s:w"}
    assert point_key(one) != point_key(two)
    store = tmp_path / "s"
    _run(lambda a, b: f"{a}|{b}", ns.points([one]), store)
    progress = _run(lambda a, b: f"{a}|{b}", ns.points([two]), store)
    assert progress.done == 1 and progress.skipped == 0
    ds = ns.open_store(store)
    assert sorted(ds.result.values.tolist()) == sorted(["u\x1fb=s:v|w", "u|v\x1fb=s:w"])


def _old_point_key(point: dict) -> str:
    """The key function of earlier versions (separator not escaped), for old stores."""
    def token(v):
        if type(v) is bool:
            return "b:1" if v else "b:0"
        if type(v) is int:
            return f"n:{v}"
        if type(v) is float:
            if v == 0.0:
                return "n:0"
            if v.is_integer() and abs(v) < 2**53:
                return f"n:{int(v)}"
            return f"n:{v:.11e}"
        return "s:" + v
    text = "\x1f".join(f"{n}={token(point[n])}" for n in sorted(point))
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _write_old_store(path, points, result):
    store = Store(path)
    names = list(points[0])
    store.prepare(ns.points(points).layout, names)
    now = time.time()
    records = [Record(_old_point_key(p), p, 0, "done", {"result": ns_value(result(p))},
                      "", "", now, now, "host", "pid 1", "old") for p in points]
    store.write(shard_from_records(names, records, {}))


def ns_value(x):
    from notebookscan.results import Value

    return Value(x)


def test_a_store_written_with_old_keys_is_recognised(tmp_path):
    """Keys of points without the separator in their text are those of earlier
    versions: a store written by them is skipped, nothing is computed again."""
    space = ns.grid(k=[0.1, 0.2, np.linspace(0, 1, 11)[3]], n=[1, 2], flag=[True, False],
                    name=["a", "b=s:c", "λ:="])
    path = tmp_path / "old"
    _write_old_store(path, list(space), lambda p: 1.0)
    calls = []
    progress = _run(lambda **p: calls.append(p) or 2.0, space, path)
    assert not calls and progress.skipped == len(space)
    assert (ns.open_store(path).result == 1.0).all()


def test_an_old_store_with_the_separator_in_text_opens_and_is_migrated(tmp_path):
    """Text holding the separator had ambiguous keys: those rows get their new key when
    read and when compacted, so the store opens with one row per point; after
    compaction a new run skips them."""
    points = [{"a": "u\x1fb=s:v", "b": "w"}, {"a": "x", "b": "y"}]
    path = tmp_path / "old"
    _write_old_store(path, points, lambda p: 1.0)
    Store(path).write(shard_from_records(["a", "b"], [Record(
        _old_point_key({"a": "z", "b": "z"}), {"a": "z", "b": "z"}, 0, "done",
        {"result": ns_value(1.0)}, "", "", 0.0, 0.0, "h", "w", "old")], {}))
    ds = ns.open_store(path)
    assert ds.sizes["point"] == 3
    assert sorted(ds.ns_key.values.tolist()) == sorted(point_key(p) for p in [*points, {
        "a": "z", "b": "z"}])
    ns.compact(path)
    calls = []
    progress = _run(lambda a, b: calls.append((a, b)) or 2.0, ns.points(points), path)
    assert not calls and progress.skipped == 2
    assert ns.open_store(path).sizes["point"] == 3


# ---------------------------------------------------------------- types per shard

def test_bool_and_int_results_in_different_shards_keep_their_values(tmp_path):
    # a run whose results change from bool to int is refused before writing
    # (tests/test_integrity.py); stores merged from two such runs keep both exactly
    _run(lambda x: True, ns.grid(x=[0]), tmp_path / "a")
    with pytest.raises(ns.ScanError, match="changed form"):
        _run(lambda x: 5, ns.grid(x=[0, 1]), tmp_path / "a")
    _run(lambda x: 5, ns.grid(x=[0, 1]), tmp_path / "b")
    ns.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "s")
    with pytest.warns(ns.StoreWarning, match="stored twice"):
        for ds in _opens_before_and_after_compaction(tmp_path / "s"):
            # the bool form keeps the name, the int form is the second form
            ints = ds["result__form2"].values.tolist()
            assert ints == [5, 5] and all(type(v) is int for v in ints)  # never read as True
    (conflict,) = Store(tmp_path / "s").conflicts()  # x=0's bool version is kept too
    assert conflict.point == {"x": 0}


def test_bool_and_int_parameters_in_different_shards_keep_their_values(tmp_path):
    store = tmp_path / "s"
    _run(lambda x: 1.0, ns.grid(x=[True, False]), store)
    _run(lambda x: 2.0, ns.grid(x=[1, 5, 0]), store)
    _run(lambda x: 3.0, ns.grid(x=["1", "True"]), store)
    for ds in _opens_before_and_after_compaction(store):
        assert ds.sizes["x"] == 7  # seven points, seven cells
        labels = ds.x.values.tolist()
        assert sorted(labels) == sorted(["True", "False", "1", "5", "0", "'1'", "'True'"])
        assert sorted(ds.result.values.tolist()) == [1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0]
    table = Store(store).table()
    assert sorted(map(repr, table.params["x"].tolist())) == sorted(
        map(repr, [True, False, 1, 5, 0, "1", "True"]))
    calls = []
    _run(lambda x: calls.append(x), ns.grid(x=[True, False]), store)
    _run(lambda x: calls.append(x), ns.grid(x=[1, 5, 0]), store)
    assert not calls  # every point recognised after compaction


def test_points_layout_keeps_each_parameter_value_as_itself(tmp_path):
    store = tmp_path / "s"
    _run(lambda x: 1.0, ns.points([{"x": True}]), store)
    _run(lambda x: 2.0, ns.points([{"x": 1}, {"x": 2**60}]), store)
    _run(lambda x: 3.0, ns.points([{"x": 2.0**60}]), store)
    for ds in _opens_before_and_after_compaction(store):
        got = {repr(v) for v in ds.x.values.tolist()}
        assert got == {"True", "1", repr(2**60), repr(2.0**60)}


def test_ints_beyond_2_53_and_floats_in_different_runs_stay_apart(tmp_path):
    store = tmp_path / "s"
    _run(lambda x: 1.0, ns.grid(x=[2**60 + 1]), store)
    _run(lambda x: 2.0, ns.grid(x=[2.0**60]), store)
    for ds in _opens_before_and_after_compaction(store):
        assert ds.sizes["x"] == 2


# ---------------------------------------------------------------- refused before work

@pytest.mark.parametrize(("axis", "fragments"), [
    ([1, True], ["'x'", "bool", "number", "True"]),
    ([1, "1"], ["'x'", "str", "'1'"]),
    ([True, "True"], ["'x'", "bool", "str"]),
    ([0.5, 2**60], ["'x'", "2**53", str(2**60)]),
    ([1e20, 10**20], ["'x'", "64-bit", str(10**20)]),
    ([2**70], ["'x'", "64-bit", "float"]),
    (np.array([2**64 - 1], dtype=np.uint64), ["'x'", "64-bit"]),
    (["a\x00b", "a"], ["'x'", "NUL"]),
    (["a\ud800"], ["'x'", "surrogate"]),
    ([math.nan], ["'x'", "non-finite"]),
    ([1.0, math.inf], ["'x'", "non-finite"]),
    ([-math.inf], ["'x'", "non-finite"]),
], ids=repr)
def test_values_the_store_cannot_keep_are_refused_before_work(tmp_path, axis, fragments):
    calls = []
    store = tmp_path / "s"
    with pytest.raises(ns.SpaceError) as info:
        _run(lambda x: calls.append(x) or 1.0, ns.grid(x=axis), store)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not calls and not Store(store).shard_files()


@pytest.mark.parametrize(("a", "b"), [([1, 2], [True]), ([1.5], ["a"]), ([0.5], [2**60])])
def test_a_union_of_different_kinds_is_refused(a, b):
    with pytest.raises(ns.SpaceError, match="a \\+ b: parameter 'x'"):
        ns.grid(x=a) + ns.grid(x=b)
    with pytest.raises(ns.SpaceError, match="'x'"):
        ns.points([{"x": a[0]}, {"x": b[0]}])


# ---------------------------------------------------------------- results that fail

@pytest.mark.parametrize(("bad", "fragments"), [
    (2**70, ["'y'", "64-bit", "float"]),
    (-(2**63) - 1, ["'y'", "64-bit"]),
    (np.uint64(2**64 - 1), ["'y'", "64-bit"]),
    ("a\x00b", ["'y'", "NUL"]),
    (np.array(["ok", "a\x00b"]), ["'y'", "NUL"]),
    ("\ud800", ["'y'", "surrogate"]),
], ids=repr)
def test_results_the_store_cannot_keep_fail_only_their_point(tmp_path, bad, fragments):
    store = tmp_path / "s"
    progress = _run(lambda x: {"y": bad if x == 1 else 1}, ns.grid(x=[0, 1, 2]), store)
    assert (progress.done, progress.failed) == (2, 1)
    ds = ns.open_store(store)
    assert ds.ns_status.values.tolist() == ["done", "failed", "done"]
    error = ds.ns_error.sel(x=1).item()
    assert error.startswith("ResultError"), error
    for fragment in fragments:
        assert fragment in error, error
    assert ds.y.sel(x=[0, 2]).values.tolist() == [1, 1]


def test_int64_extremes_and_text_round_trip(tmp_path):
    returns = [2**63 - 1, -(2**63), "tab\there\x1f", "λ", ""]
    store = tmp_path / "s"
    _run(lambda x: returns[x], ns.grid(x=range(len(returns))), store)
    for ds in _opens_before_and_after_compaction(store):
        assert ds.ns_status.values.tolist() == ["done"] * 5
        assert [str(v) for v in ds.result.values.tolist()] == [str(v) for v in returns]


# ---------------------------------------------------------------- -0.0, nan, float32

def test_negative_zero_is_the_point_zero(tmp_path):
    store = tmp_path / "s"
    _run(lambda x: 1.0, ns.grid(x=[-0.0, 1.0]), store)
    calls = []
    progress = _run(lambda x: calls.append(x), ns.grid(x=[0.0, 1]), store)
    assert not calls and progress.skipped == 2
    _run(lambda x: calls.append(x), ns.grid(x=[0]), store)
    assert not calls and ns.open_store(store).sizes["x"] == 2
    with pytest.raises(ns.SpaceError, match="twice"):
        ns.grid(x=[0.0, -0.0])


def test_a_float32_linspace_and_the_same_values_in_float64_are_the_same_points(tmp_path):
    store = tmp_path / "s"
    f32 = np.linspace(0, 1, 11, dtype=np.float32)
    _run(lambda x: x, ns.grid(x=f32), store)
    calls = []
    progress = _run(lambda x: calls.append(x), ns.grid(x=np.linspace(0, 1, 11)), store)
    assert not calls and progress.skipped == 11
    typed = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert ns.grid(x=typed).keys() == ns.grid(x=f32).keys()
    assert point_key({"x": np.float32(0.1)}) == point_key({"x": 0.1})
    ds = ns.open_store(store)
    assert ds.x.values.tolist() == typed  # stored as the decimal values


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_a_float32_value_has_the_key_of_its_shortest_decimal_text(value):
    f32 = np.float32(value)
    assert point_key({"x": f32}) == point_key({"x": float(str(f32))})
    assert ns.grid(x=np.array([f32])).keys() == [point_key({"x": f32})]
