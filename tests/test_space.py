"""The sweep algebra: constructors, combinators, layouts, refine and validate."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notebookscan.errors import SpaceError
from notebookscan.keys import point_key, point_seed
from notebookscan.space import (
    DESCRIBE_LIST_UP_TO,
    RESERVED_NAMES,
    Layout,
    Space,
    axis_from_description,
    grid,
    points,
    sample,
    trials,
    zip_,
)

ROOT = Path(__file__).resolve().parents[1]

axis = st.lists(st.integers(-30, 30), min_size=1, max_size=5, unique=True)


# -- grid -------------------------------------------------------------------------------------
def test_grid_is_the_outer_product_first_axis_slowest() -> None:
    space = grid(a=[1, 2], b=["x", "y", "z"])
    assert list(space) == [{"a": a, "b": b} for a, b in itertools.product([1, 2], "xyz")]
    assert space.names == ("a", "b")
    assert len(space) == 6
    assert space.layout == Layout("grid", ("a", "b"))


@given(st.lists(axis, min_size=1, max_size=4))
def test_grid_columns_match_iteration_and_itertools(axes: list[list[int]]) -> None:
    names = [f"p{i}" for i in range(len(axes))]
    space = grid(**dict(zip(names, axes, strict=True)))
    expected = [dict(zip(names, row, strict=True)) for row in itertools.product(*axes)]
    assert len(space) == len(expected)
    assert list(space) == expected
    assert space.columns() == {n: [p[n] for p in expected] for n in names}
    assert space.keys() == [point_key(p) for p in expected]


def test_grid_accepts_ranges_arrays_and_fixed_values_and_gives_plain_scalars() -> None:
    space = grid(n=range(3), x=np.linspace(0, 1, 2), flag=np.bool_(True), method="rk4")
    assert len(space) == 6
    first = next(iter(space))
    assert first == {"n": 0, "x": 0.0, "flag": True, "method": "rk4"}
    assert [type(v) for v in first.values()] == [int, float, bool, str]
    assert all(type(v) is int for v in space.columns()["n"])


@pytest.mark.parametrize(
    ("axes", "fragments"),
    [
        ({"k": []}, ["'k'", "empty"]),
        ({"k": np.array([])}, ["'k'", "empty"]),
        ({"k": [1.0, float("nan")]}, ["'k'", "non-finite"]),
        ({"k": [1, None]}, ["'k'", "NoneType"]),
        ({"k": [1, 2, 1.0]}, ["'k'", "twice"]),
        ({"k": [np.linspace(0, 1, 11)[3], 0.3]}, ["'k'", "twice", "0.3"]),
        ({"k": np.ones((2, 2))}, ["'k'", "1-D", "(2, 2)"]),
        ({"k": {1, 2}}, ["'k'", "set", "order"]),
        ({"k": {"a": 1}}, ["'k'", "dict"]),
    ],
)
def test_grid_errors_name_the_axis(axes: dict, fragments: list[str]) -> None:
    with pytest.raises(SpaceError) as info:
        grid(**axes)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_grid_needs_an_axis() -> None:
    with pytest.raises(SpaceError, match="at least one axis"):
        grid()


def test_grid_refuses_an_axis_mixing_bools_numbers_and_text() -> None:
    # True, 1 and "1" are different points (keys), but a shard keeps one type per
    # variable: a mixed axis would come back as text, 1 and "1" in one cell
    with pytest.raises(SpaceError, match=r"'v' mixes bool and number and str"):
        grid(v=[True, 1, "1"])


# -- zip_ and points ------------------------------------------------------------------------
def test_zip_links_axes() -> None:
    space = zip_(k=[1, 2, 3], tau=np.array([0.1, 0.2, 0.3]))
    assert list(space) == [{"k": 1, "tau": 0.1}, {"k": 2, "tau": 0.2}, {"k": 3, "tau": 0.3}]
    assert space.layout == Layout("points", ("k", "tau"))


def test_zip_length_mismatch_gives_each_length() -> None:
    with pytest.raises(SpaceError, match=r"k: 3, tau: 2, c: 3"):
        zip_(k=[1, 2, 3], tau=[0.1, 0.2], c=list("abc"))


def test_zip_refuses_scalars_and_repeated_points() -> None:
    with pytest.raises(SpaceError, match=r"axis 'tau' is the single value 0\.1"):
        zip_(k=[1, 2], tau=0.1)
    with pytest.raises(SpaceError, match=r"zip_\(\).*more than once"):
        zip_(k=[1, 2, 1], tau=[0.1, 0.2, 0.1])
    with pytest.raises(SpaceError, match="at least one axis"):
        zip_()


def test_points_keeps_order_and_names_of_the_first_point() -> None:
    space = points([{"b": 2, "a": "x"}, {"a": "y", "b": 3}])
    assert space.names == ("b", "a")
    assert list(space) == [{"b": 2, "a": "x"}, {"b": 3, "a": "y"}]
    assert space.layout.kind == "points"


@pytest.mark.parametrize(
    ("rows", "fragments"),
    [
        ([], ["at least one point"]),
        ([{"a": 1}, {"b": 2}], ["point 1", "missing: a", "extra: 'b'"]),
        ([{"a": 1}, [("a", 2)]], ["item 1", "list"]),
        ([{1: 1}], ["names must be"]),
        ([{}], ["names must be"]),
        ([{"a": 1}, {"a": 1.0}], ["{'a': 1.0}", "more than once"]),
        ([{"a": [1]}], ["'a'", "list"]),
    ],
)
def test_points_errors(rows: list, fragments: list[str]) -> None:
    with pytest.raises(SpaceError) as info:
        points(rows)
    for fragment in fragments:
        assert fragment in str(info.value)


# -- products ---------------------------------------------------------------------------------
@given(axis, axis, axis)
def test_product_size_order_and_layout(a: list[int], b: list[int], c: list[int]) -> None:
    space = grid(a=a) * grid(b=b) * trials(2) * zip_(c=c, d=[str(x) for x in c])
    assert len(space) == len(a) * len(b) * 2 * len(c)
    assert space.names == ("a", "b", "trial", "c", "d")
    expected = [{"a": x, "b": y, "trial": t, "c": z, "d": str(z)}
                for x, y, t, z in itertools.product(a, b, range(2), c)]
    assert list(space) == expected
    assert len(set(space.keys())) == len(space)
    assert space.layout == Layout("points", space.names)


def test_product_of_grids_is_a_grid() -> None:
    space = grid(k=[1, 2]) * (grid(tau=[0.1]) * trials(3))
    assert space.layout == Layout("grid", ("k", "tau", "trial"))
    assert space.grid_coords() == {"k": [1, 2], "tau": [0.1], "trial": [0, 1, 2]}


def test_product_needs_disjoint_names() -> None:
    with pytest.raises(SpaceError, match=r"both spaces have 'k', 'tau'"):
        grid(k=[1], tau=[2], x=1) * grid(tau=[3], k=[4])


def test_operators_refuse_other_types() -> None:
    with pytest.raises(TypeError):
        grid(k=[1]) * 2  # type: ignore[operator]
    with pytest.raises(TypeError):
        grid(k=[1]) + 1  # type: ignore[operator]


# -- unions -------------------------------------------------------------------------------------
@given(axis, axis)
def test_union_is_the_ordered_set_union(a: list[int], b: list[int]) -> None:
    space = grid(x=a) + grid(x=b)
    expected = list(dict.fromkeys(a + b))
    assert space.columns() == {"x": expected}
    assert len(space) == len(expected)
    assert space.keys() == [point_key({"x": v}) for v in expected]


def test_union_deduplicates_linspace_against_values_typed_by_hand() -> None:
    fine = grid(k=np.linspace(0, 1, 11), tau=[1, 2])
    by_hand = grid(k=[0.3, 0.7, 1.5], tau=[1.0, 2.0])
    space = fine + by_hand
    assert len(space) == 22 + 2
    ks = space.columns()["k"]
    # first occurrence wins: the linspace value is kept, not the hand-typed one
    assert np.linspace(0, 1, 11)[3] in ks and 0.3 not in ks
    assert ks[-2:] == [1.5, 1.5]
    assert space.grid_coords()["k"] == [*np.linspace(0, 1, 11).tolist(), 1.5]
    assert space.grid_coords()["tau"] == [1, 2]


def test_union_of_coarse_and_fine_grids_gives_union_of_coords() -> None:
    space = grid(k=[0, 2, 4], tau=[1, 10]) + grid(k=[1, 2, 3], tau=[1])
    assert space.layout == Layout("grid", ("k", "tau"))
    assert len(space) == 6 + 2
    assert space.grid_coords() == {"k": [0, 1, 2, 3, 4], "tau": [1, 10]}


def test_union_reorders_right_columns_to_left_names() -> None:
    space = grid(a=[1], b=["x"]) + grid(b=["y"], a=[2])
    assert space.names == ("a", "b")
    assert list(space) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert space.layout == Layout("grid", ("a", "b"))


def test_union_with_points_has_points_layout() -> None:
    space = grid(a=[1, 2]) + points([{"a": 2}, {"a": 3}])
    assert len(space) == 3
    assert space.layout == Layout("points", ("a",))
    with pytest.raises(SpaceError, match="points layout"):
        space.grid_coords()


def test_union_needs_the_same_names() -> None:
    with pytest.raises(SpaceError, match=r"only in a: tau; only in b: n, m"):
        grid(k=[1], tau=[2]) + grid(k=[1], n=[1], m=[2])


# -- where ----------------------------------------------------------------------------------------
def test_where_runs_a_singular_dimension_once() -> None:
    space = grid(amp=[0, 0.5, 1], freq=[1, 2, 4]).where(
        lambda p: p["amp"] > 0 or p["freq"] == 1)
    pts = list(space)
    assert len(pts) == 7
    assert [p for p in pts if p["amp"] == 0] == [{"amp": 0, "freq": 1}]
    assert space.layout == Layout("grid", ("amp", "freq"))
    assert space.grid_coords() == {"amp": [0, 0.5, 1], "freq": [1, 2, 4]}


@given(axis, axis, st.integers(1, 5))
def test_where_drops_exactly_the_rejected_points(a: list[int], b: list[int], m: int) -> None:
    base = grid(a=a) * zip_(b=b)
    space = base.where(lambda p: (p["a"] + p["b"]) % m == 0)
    expected = [p for p in base if (p["a"] + p["b"]) % m == 0]
    assert list(space) == expected
    assert space.keys() == [point_key(p) for p in expected]
    assert space.layout.kind == "points"


def test_where_uses_cached_base_keys_consistently() -> None:
    base = grid(n=range(10))
    base.keys()
    assert base.where(lambda p: p["n"] > 6).keys() == [point_key({"n": n}) for n in (7, 8, 9)]


def test_where_can_empty_a_space() -> None:
    space = grid(n=range(3)).where(lambda p: False)
    assert len(space) == 0
    assert list(space) == [] and space.keys() == [] and space.columns() == {"n": []}
    assert len(space * grid(m=[1, 2])) == 0


def test_where_predicate_errors_name_the_point() -> None:
    with pytest.raises(SpaceError, match=r"ZeroDivisionError.*\{'x': 0\}") as info:
        grid(x=[2, 1, 0]).where(lambda p: 1 / p["x"] > 0.1)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(SpaceError, match="needs a function"):
        grid(x=[1]).where(True)  # type: ignore[arg-type]


# -- trials and seeds ---------------------------------------------------------------------------
def test_trials_axis_and_layout() -> None:
    space = trials(4)
    assert list(space) == [{"trial": i} for i in range(4)]
    assert space.layout == Layout("grid", ("trial",))
    assert len(set(space.seeds())) == 4


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_trials_needs_a_positive_integer(n: object) -> None:
    with pytest.raises(SpaceError, match=r"positive integer.*" + repr(n).replace(".", r"\.")):
        trials(n)  # type: ignore[arg-type]


def test_seeds_depend_on_the_point_not_on_order() -> None:
    forward = grid(k=[1, 2, 3]) * trials(3)
    backward = grid(k=[3, 2, 1]) * trials(3)
    shuffled = points(list(reversed(list(forward))))
    by_key = dict(zip(forward.keys(), forward.seeds(), strict=True))
    for other in (backward, shuffled):
        assert dict(zip(other.keys(), other.seeds(), strict=True)) == by_key
    for point, seed in zip(forward, forward.seeds(), strict=True):
        assert seed == point_seed(point_key(point))
    assert len(set(forward.seeds())) == 9


SCRIPT = """
import json, numpy as np
from notebookscan.space import grid, sample, trials
space = (grid(name=["alpha", "beta", "γ"], k=np.linspace(0, 1, 7)) * trials(3)
         + grid(name=["delta"], k=[0.5], trial=[0]))
s = sample(5, method="lhs", seed=3, x=(0, 1))
print(json.dumps([space.keys(), space.seeds(), s.keys()]))
"""


def test_keys_and_seeds_are_stable_across_processes() -> None:
    runs = []
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                             text=True, check=True, cwd=ROOT)
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    space = (grid(name=["alpha", "beta", "γ"], k=np.linspace(0, 1, 7)) * trials(3)
             + grid(name=["delta"], k=[0.5], trial=[0]))
    assert runs[0][:2] == [space.keys(), space.seeds()]
    assert runs[0][2] == sample(5, method="lhs", seed=3, x=(0, 1)).keys()


# -- sample -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["random", "lhs", "sobol"])
def test_sample_is_reproducible_and_in_range(method: str) -> None:
    make = lambda seed: sample(50, method=method, seed=seed, k=(-1, 2), tau=(1e-3, 10, "log"))  # noqa: E731
    a, b, c = make(7), make(7), make(8)
    assert a.columns() == b.columns() and a.keys() == b.keys()
    assert a.columns() != c.columns()
    cols = a.columns()
    assert len(a) == 50 and a.names == ("k", "tau")
    assert all(-1 <= v <= 2 for v in cols["k"])
    assert all(1e-3 <= v <= 10 for v in cols["tau"])
    # log-uniform: about half the points below the geometric mean
    assert 10 < sum(v < 0.1 for v in cols["tau"]) < 40
    assert a.layout == Layout("points", ("k", "tau"))


def test_lhs_puts_one_point_in_each_stratum() -> None:
    cols = sample(20, method="lhs", seed=0, x=(0, 20), y=(0, 1)).columns()
    assert sorted(int(v) for v in cols["x"]) == list(range(20))
    assert sorted(int(v * 20) for v in cols["y"]) == list(range(20))


def test_sobol_with_any_n_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(sample(10, method="sobol", seed=0, x=(0, 1))) == 10


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"n": 4, "x": (0, 1)}, ["seed=", "same points"]),
        ({"n": 4, "seed": 0}, ["at least one range"]),
        ({"n": 0, "seed": 0, "x": (0, 1)}, ["sample(n)", "positive integer, got 0"]),
        ({"n": 4, "seed": -1, "x": (0, 1)}, ["seed", "-1"]),
        ({"n": 4, "seed": 0, "method": "halton", "x": (0, 1)}, ["'halton'", "sobol"]),
        ({"n": 4, "seed": 0, "x": (1, 0)}, ["'x'", "(1, 0)", "low < high"]),
        ({"n": 4, "seed": 0, "x": (0, 1, "log")}, ["'x'", "0 < low"]),
        ({"n": 4, "seed": 0, "x": (0, 1, "cubic")}, ["'x'", "'cubic'"]),
        ({"n": 4, "seed": 0, "x": 3}, ["'x'", "(low, high)"]),
        ({"n": 4, "seed": 0, "x": ("a", 1)}, ["'x'", "('a', 1)"]),
    ],
)
def test_sample_errors(kwargs: dict, fragments: list[str]) -> None:
    with pytest.raises(SpaceError) as info:
        sample(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


# -- refine -----------------------------------------------------------------------------------
def test_refine_replaces_axes_through_products_unions_and_where() -> None:
    space = ((grid(k=[1, 2], tau=[0.1]) + grid(k=[5], tau=[0.1])) * trials(2)).where(
        lambda p: p["k"] != 2)
    refined = space.refine(k=[1, 2, 3], trials=3)
    assert sorted({p["k"] for p in refined}) == [1, 3]
    assert sorted({p["trial"] for p in refined}) == [0, 1, 2]
    assert len(refined) == 2 * 3
    assert refined.layout == space.layout
    assert len(space) == 2 * 2  # the original is unchanged
    assert space.refine() is space


def test_refine_keeps_structure_and_leaves_other_nodes_alone() -> None:
    base = grid(k=[1, 2]) * zip_(a=[1, 2], b=[3, 4]) * sample(3, seed=0, x=(0, 1))
    refined = base.refine(a=[5, 6, 7], b=[1, 1, 1])
    assert len(refined) == 2 * 3 * 3
    assert {p["x"] for p in refined} == {p["x"] for p in base}
    assert repr(refined).startswith("<Space: 18 points, points k(2) × zip_(a, b)[3]")


def test_refine_to_a_fixed_value() -> None:
    assert grid(k=[1, 2], tau=[1, 2]).refine(tau=5).columns()["tau"] == [5, 5]


def test_refine_errors() -> None:
    space = grid(k=[1], tau=[2]) * trials(2) * sample(2, seed=0, x=(0, 1)) * points([{"p": 1}])
    with pytest.raises(SpaceError, match=r"no axis 'gamma'.*k, tau, trials"):
        space.refine(gamma=[1])
    with pytest.raises(SpaceError, match=r"'x' comes from sample\(\).*new sample"):
        space.refine(x=[1])
    with pytest.raises(SpaceError, match=r"'p' comes from points\(\)"):
        space.refine(p=[1])
    with pytest.raises(SpaceError, match=r"refine\(trials=n\)"):
        space.refine(trial=[0, 1])
    with pytest.raises(SpaceError, match=r"positive integer"):
        space.refine(trials=0)
    with pytest.raises(SpaceError, match=r"'k'.*empty"):
        space.refine(k=[])
    with pytest.raises(SpaceError, match=r"a: 3, b: 2"):
        zip_(a=[1, 2], b=[3, 4]).refine(a=[1, 2, 3])


def test_refine_refuses_a_name_that_is_also_in_a_points_node() -> None:
    with pytest.raises(SpaceError, match=r"'k' comes from points\(\)"):
        (grid(k=[1, 2]) + points([{"k": 3}])).refine(k=[4])


# -- validate ------------------------------------------------------------------------------------
def model(k: float, tau: float, method: str = "rk4", seed: int = 0) -> float:
    return k * tau


def test_validate_accepts_a_fitting_space() -> None:
    grid(k=[1, 2.5], tau=np.linspace(0, 1, 3)).validate(model)
    (grid(k=[1], tau=[1]) * grid(method=["euler"])).validate(model)

    def needs_seed(k: float, seed: int) -> float:
        return k

    grid(k=[1]).validate(needs_seed)

    def anything(**params: object) -> int:
        return 0

    grid(x=[1], y=["a"]).validate(anything)


def test_validate_unknown_names() -> None:
    with pytest.raises(SpaceError, match=r"model\(\) has no parameter 'gamma' \(it takes k, tau"):
        grid(k=[1], tau=[1], gamma=[2]).validate(model)


def test_validate_missing_required_parameter() -> None:
    with pytest.raises(SpaceError, match=r"requires parameter 'tau'.*grid\(tau=\.\.\.\)"):
        grid(k=[1]).validate(model)


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        (grid(k=["a"], tau=[1]), "annotates k: float, but the space gives k='a' (str)"),
        (grid(k=[True], tau=[1]), "annotates k: float, but the space gives k=True (bool)"),
        (grid(k=[1], tau=[1], method=[1, 2]), "method: str, but the space gives method=1 (int)"),
        (grid(k=[1], tau=[1], seed=[0.5]), "annotates seed: int, but the space gives seed=0.5"),
    ],
)
def test_validate_type_contradictions(space: Space, fragment: str) -> None:
    with pytest.raises(SpaceError) as info:
        space.validate(model)
    assert fragment in str(info.value)


def test_validate_string_annotations_and_bool() -> None:
    def f(flag: "bool", n: "int") -> None:  # noqa: UP037
        pass

    grid(flag=[True, False], n=[1]).validate(f)
    with pytest.raises(SpaceError, match=r"flag: bool, but the space gives flag=1 \(int\)"):
        grid(flag=[1], n=[1]).validate(f)
    with pytest.raises(SpaceError, match=r"n: int, but the space gives n=2\.0 \(float\)"):
        grid(flag=[True], n=[1, 2.0, 3]).validate(f)


def test_validate_evaluated_annotations() -> None:
    def f(x, flag, name):  # type: ignore[no-untyped-def]
        pass

    f.__annotations__ = {"x": float, "flag": bool, "name": str}
    grid(x=[1, 2.5], flag=[False], name=["a"]).validate(f)
    with pytest.raises(SpaceError, match=r"x: float, but the space gives x='1' \(str\)"):
        grid(x=["1"], flag=[False], name=["a"]).validate(f)
    with pytest.raises(SpaceError, match=r"name: str, but the space gives name=0"):
        grid(x=[1], flag=[False], name=[0]).validate(f)


def test_validate_reserved_and_invalid_names() -> None:
    def anything(**params: object) -> None:
        pass

    for name in sorted(RESERVED_NAMES):
        with pytest.raises(SpaceError, match=rf"'{name}' is reserved"):
            grid(**{name: [1]}).validate(anything)
    for name in ["a b", "1x", "class", "k-1"]:
        with pytest.raises(SpaceError, match=rf"'{name}' is not a valid Python identifier"):
            points([{name: 1}]).validate(anything)


def test_validate_passes_trial_only_to_functions_that_take_it() -> None:
    def without(k: float, seed: int) -> float:
        return k

    def with_trial(k: float, trial: str) -> float:
        return k

    (grid(k=[1.0]) * trials(3)).validate(without)
    with pytest.raises(SpaceError, match=r"trial: str, but the space gives trial=0 \(int\)"):
        (grid(k=[1.0]) * trials(3)).validate(with_trial)
    with pytest.raises(SpaceError, match=r"no parameter 'trials'"):
        grid(k=[1.0], trials=[1]).validate(without)


def test_validate_positional_only() -> None:
    def f(k: float, /, tau: float) -> None:
        pass

    with pytest.raises(SpaceError, match=r"'k' of f\(\) is positional-only"):
        grid(k=[1], tau=[1]).validate(f)


def test_validate_reports_every_problem_at_once() -> None:
    with pytest.raises(SpaceError) as info:
        grid(k=["a"], ns_status=[1], gamma=[1]).validate(model)
    message = str(info.value)
    assert message.startswith("the space does not fit model():")
    for fragment in ["'ns_status' is reserved", "no parameter 'gamma'", "requires parameter 'tau'",
                     "k='a'"]:
        assert fragment in message
    assert message.count("\n  - ") == 5  # ns_status: reserved + unknown; gamma; tau; k


def test_validate_without_a_signature_still_checks_names() -> None:
    grid(x=[1]).validate(max)
    with pytest.raises(SpaceError, match="'ns_run' is reserved"):
        grid(ns_run=[1]).validate(max)


# -- summaries ----------------------------------------------------------------------------------
def test_repr() -> None:
    space = grid(k=np.linspace(0, 1, 20), tau=[0.1, 0.2]) * trials(5)
    assert repr(space) == "<Space: 200 points, grid k(20) × tau(2) × trial(5)>"
    assert repr(grid(k=[1])) == "<Space: 1 point, grid k(1)>"
    w = (grid(a=[1, 2]) + grid(a=[3])).where(lambda p: p["a"] > 1)
    assert repr(w) == "<Space: 2 points, grid (a(2) + a(1)).where(test_repr.<locals>.<lambda>)>"
    assert repr((grid(a=[1]) + grid(a=[2])) * trials(2)) == (
        "<Space: 4 points, grid (a(1) + a(1)) × trial(2)>")
    assert repr(sample(4, method="lhs", seed=0, x=(0, 1))) == (
        "<Space: 4 points, points sample[lhs](x)[4]>")


def test_repr_html_is_a_small_table() -> None:
    text = grid(k=[1, 5, 3], name=["a", "b"]).where(lambda p: p["k"] > 1)._repr_html_()
    assert "<table>" in text and "4 points, grid layout (k, name)" in text
    assert "<td>k</td><td>2</td><td>3</td><td>5</td>" in text
    assert "<td>name</td><td>2</td><td></td><td></td>" in text
    odd = points([{"<i>x": 1}, {"<i>x": 2.5}])._repr_html_()
    assert "<i>" not in odd and "<td>&lt;i&gt;x</td><td>2</td><td>1</td><td>2.5</td>" in odd


def test_spaces_survive_pickling() -> None:
    space = (grid(k=[1, 2]) + grid(k=[3])) * trials(2) * sample(3, seed=0, x=(0, 1))
    copy = pickle.loads(pickle.dumps(space))
    assert repr(copy) == repr(space)
    assert copy.keys() == space.keys() and copy.columns() == space.columns()
    assert copy.refine(trials=3).keys()[:9] == space.refine(trials=3).keys()[:9]


def test_describe_is_json_able_and_complete() -> None:
    space = ((grid(k=[1, 2]) + grid(k=[3])) * trials(2) * sample(
        3, method="sobol", seed=1, x=(1, 10, "log"))).where(lambda p: p["trial"] == 0)
    d = json.loads(json.dumps(space.describe()))
    assert d["size"] == 9 and d["names"] == ["k", "trial", "x"]
    assert d["layout"] == {"kind": "points", "dims": ["k", "trial", "x"]}
    node = d["node"]
    assert node["kind"] == "where" and node["size"] == 9
    product = node["base"]
    assert product["kind"] == "product" and product["size"] == 18
    inner, samp = product["parts"]
    assert samp == {"kind": "sample", "size": 3, "method": "sobol", "seed": 1, "n": 3,
                    "ranges": {"x": [1.0, 10.0, "log"]}}
    union, trial = inner["parts"]
    assert trial == {"kind": "trials", "size": 2, "axes": {"trial": 2}}
    assert union["kind"] == "union" and union["size"] == 3
    assert union["parts"][0] == {"kind": "grid", "size": 2, "axes": {"k": [1, 2]}}


@pytest.mark.parametrize("values, rule", [
    (range(100_000), "range"),
    (range(-500, 500, 7), "range"),
    (np.linspace(-1.0, 2.5, 1001), "linspace"),
    (np.geomspace(1e-3, 10.0, 200), "geomspace"),
])
def test_long_axes_are_described_by_their_rule_and_rebuilt_bit_for_bit(values, rule) -> None:
    space = grid(x=values, tau=[0.5, 1.0])
    described = json.loads(json.dumps(space.describe()))
    axis = described["node"]["axes"]["x"]
    assert list(axis) == [rule]
    assert len(json.dumps(described)) < 400  # does not grow with the axis
    again = grid(x=axis_from_description(axis), tau=[0.5, 1.0])
    assert np.array_equal(again.columns()["x"], space.columns()["x"])
    assert again.keys() == space.keys()


@pytest.mark.parametrize("values", [
    [0.1 * i for i in range(1, 101)],  # not what linspace(0.1, 10, 100) gives, bit for bit
    [*range(99), 1000],
    np.sqrt(np.arange(1.0, 101.0)),
    list(range(DESCRIBE_LIST_UP_TO)),  # short: kept as a list to stay readable
])
def test_axes_without_a_rule_are_described_as_their_values(values) -> None:
    axis = grid(x=values).describe()["node"]["axes"]["x"]
    assert axis == np.asarray(values).tolist()
    assert axis_from_description(axis) == axis


def test_long_zipped_columns_are_described_by_their_rule() -> None:
    space = zip_(i=range(1000), x=np.linspace(0.0, 1.0, 1000))
    axes = space.describe()["node"]["axes"]
    assert axes == {"i": {"range": [0, 1000, 1]}, "x": {"linspace": [0.0, 1.0, 1000]}}


def test_table() -> None:
    space = grid(k=[1, 2], tau=[0.5])
    df = space.table()
    assert list(df.columns) == ["k", "tau", "key"]
    assert df["key"].tolist() == space.keys()
    assert df["k"].tolist() == [1, 2]


def test_spaces_are_immutable_and_results_are_copies() -> None:
    space = grid(k=[1, 2])
    with pytest.raises(AttributeError, match="immutable"):
        space._axes = {}  # type: ignore[attr-defined]
    space.columns()["k"].append(3)
    space.keys().append("x")
    assert space.columns() == {"k": [1, 2]} and len(space.keys()) == 2


# -- performance ---------------------------------------------------------------------------------
def test_million_point_grid_is_fast() -> None:
    start = time.perf_counter()
    space = grid(a=np.linspace(0, 1, 100), b=range(100), c=np.logspace(-3, 0, 100))
    assert len(space) == 1_000_000
    cols = space.columns()
    keys = space.keys()
    elapsed = time.perf_counter() - start
    assert len(cols["c"]) == len(keys) == 1_000_000
    assert keys[123_456] == point_key({"a": cols["a"][123_456], "b": cols["b"][123_456],
                                       "c": cols["c"][123_456]})
    assert elapsed < 10, f"1M-point grid took {elapsed:.1f} s"


@pytest.mark.parametrize("values", [
    [round(v, 12) for v in np.linspace(0.0, 1.0, 120)],  # the builder's rounded 0-1 range
    [0.0, *np.geomspace(1e-3, 10.0, 99)],                 # zero in front of a geometric run
    np.linspace(-5.0, 0.0, 200)[::-1] + 1e-9,              # crosses zero, not a linspace
    -np.geomspace(1e-3, 10.0, 80),                         # geometric but negative
    np.concatenate([np.geomspace(-10.0, -1e-3, 40), np.geomspace(1e-3, 10.0, 40)]),
])
def test_describing_an_axis_never_raises_and_gives_back_its_values(values) -> None:
    space = grid(x=values)
    axis = json.loads(json.dumps(space.describe()))["node"]["axes"]["x"]
    assert isinstance(axis, list) or "geomspace" not in axis
    again = grid(x=axis_from_description(axis))
    assert again.keys() == space.keys()


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=DESCRIBE_LIST_UP_TO + 1,
                max_size=DESCRIBE_LIST_UP_TO + 20, unique=True))
def test_any_valid_float_axis_can_be_described(values) -> None:
    try:
        space = grid(x=values)
    except SpaceError:
        return  # repeats to 12 digits: not a valid axis
    axis = space.describe()["node"]["axes"]["x"]
    assert grid(x=axis_from_description(axis)).keys() == space.keys()
