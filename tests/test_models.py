"""The demo models: deterministic for a seed, documented outputs, sensible behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from notebookscan.models import cellular_automaton, firing_rate

# ---------------------------------------------------------------- firing_rate


def test_firing_rate_outputs_match_the_docstring() -> None:
    out = firing_rate(k=15, tau=0.01, duration=0.5, seed=3)
    assert sorted(out) == ["cv", "rate", "v"]
    assert isinstance(float(out["rate"]), float) and out["rate"].ndim == 0
    assert out["rate"].attrs == {"units": "Hz", "long_name": "firing rate"}
    assert isinstance(float(out["cv"]), float) and out["cv"].attrs["units"] == "1"
    v = out["v"]
    assert isinstance(v, xr.DataArray)
    assert v.dims == ("time",)
    assert v.sizes["time"] == 500  # 0.5 s sampled every 1 ms
    np.testing.assert_allclose(v.time.values[:3], [0.0, 0.001, 0.002])
    assert v.time.attrs["units"] == "s"
    assert float(v[0]) == 0.0  # starts at rest
    assert float(v.max()) < 1.0  # reset below threshold whenever sampled


def test_firing_rate_is_deterministic_for_a_seed() -> None:
    a = firing_rate(k=12, tau=0.005, n_neurons=20, duration=0.3, seed=7)
    b = firing_rate(k=12, tau=0.005, n_neurons=20, duration=0.3, seed=7)
    c = firing_rate(k=12, tau=0.005, n_neurons=20, duration=0.3, seed=8)
    assert a["rate"] == b["rate"] and a["cv"] == b["cv"]
    xr.testing.assert_identical(a["v"], b["v"])
    assert not np.array_equal(a["v"].values, c["v"].values)


def test_firing_rate_rises_with_k_and_falls_with_tau() -> None:
    rates = [firing_rate(k=k, tau=0.01, n_neurons=50, duration=0.5)["rate"]
             for k in (5, 10, 15, 20)]
    assert rates == sorted(rates) and rates[0] < rates[-1]
    fast = firing_rate(k=15, tau=0.005, n_neurons=50, duration=0.5)["rate"]
    assert fast > 1.5 * rates[2]


def test_firing_rate_is_regular_above_threshold_and_silent_without_input() -> None:
    strong = firing_rate(k=20, tau=0.01, n_neurons=50, duration=0.5)
    assert 0 < strong["cv"] < 0.4
    silent = firing_rate(k=0, n_neurons=10, duration=0.1)
    assert silent["rate"] == 0.0 and math.isnan(silent["cv"])


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"k": -1}, "k"), ({"k": 1, "tau": 1e-4}, "tau"), ({"k": 1, "n_neurons": 0}, "n_neurons"),
    ({"k": 1, "duration": 0.0}, "duration"),
])
def test_firing_rate_rejects_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        firing_rate(**kwargs)


# ---------------------------------------------------------------- cellular_automaton


def test_cellular_automaton_outputs_match_the_docstring() -> None:
    out = cellular_automaton(30, width=31, steps=12)
    pattern = out["pattern"]
    assert pattern.dims == ("step", "cell")
    assert pattern.shape == (12, 31) and pattern.dtype == np.uint8
    assert pattern.step.values.tolist() == list(range(12))
    assert pattern.cell.values.tolist() == list(range(31))
    assert pattern[0].values.sum() == 1 and pattern[0, 15] == 1
    assert out["density"] == pytest.approx(pattern[-1].values.mean())


def test_cellular_automaton_applies_the_rule() -> None:
    rule = 110
    pattern = cellular_automaton(rule, initial="random", width=40, steps=20, seed=2)["pattern"]
    p = pattern.values.astype(int)
    for t in range(1, p.shape[0]):
        prev = p[t - 1]
        index = 4 * np.roll(prev, 1) + 2 * prev + np.roll(prev, -1)
        assert np.array_equal(p[t], (rule >> index) & 1)


def test_cellular_automaton_rule_90_is_a_sierpinski_triangle() -> None:
    p = cellular_automaton(90, width=65, steps=32)["pattern"].values
    # row t of rule 90 from one cell is Pascal's triangle mod 2
    for t in range(32):
        expected = np.zeros(65, dtype=np.uint8)
        for j in range(t + 1):
            if math.comb(t, j) % 2:
                expected[32 - t + 2 * j] = 1
        assert np.array_equal(p[t], expected)


def test_cellular_automaton_is_deterministic_for_a_seed() -> None:
    a = cellular_automaton(30, initial="random", seed=4)
    b = cellular_automaton(30, initial="random", seed=4)
    c = cellular_automaton(30, initial="random", seed=5)
    xr.testing.assert_identical(a["pattern"], b["pattern"])
    assert a["density"] == b["density"]
    assert not np.array_equal(a["pattern"].values, c["pattern"].values)
    # the seed does not matter for a single live cell
    xr.testing.assert_identical(cellular_automaton(30, seed=1)["pattern"],
                                cellular_automaton(30, seed=2)["pattern"])


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"rule": 256}, "rule"), ({"rule": 2.5}, "rule"), ({"rule": 30, "initial": "x"}, "initial"),
    ({"rule": 30, "width": 2}, "width"), ({"rule": 30, "steps": 0}, "steps"),
])
def test_cellular_automaton_rejects_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        cellular_automaton(**kwargs)
