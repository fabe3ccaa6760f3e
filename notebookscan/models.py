"""Small, fast demonstration models for scans, tests and notebooks (numpy only).

``firing_rate``
    A population of leaky integrate-and-fire neurons driven by noisy input: how does
    the firing rate depend on the input strength ``k`` and the membrane time constant
    ``tau``? (the question of the Brian simulator's DataManager example).
``cellular_automaton``
    An elementary one-dimensional cellular automaton (Wolfram rules 0-255), the use
    case of the pypet paper.

Both are deterministic for a given ``seed`` and return a dict of scalars and labelled
:class:`xarray.DataArray` objects, the shape of result a scan stores directly.

Examples
--------
>>> import notebookscan as ns
>>> from notebookscan.models import firing_rate
>>> space = ns.grid(k=[5, 10, 15], tau=[0.005, 0.01]) * ns.trials(3)
>>> scan = ns.Scan(firing_rate, space, store="results/rates")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .errors import ArgumentError

__all__ = ["cellular_automaton", "firing_rate"]

#: Euler time step of :func:`firing_rate`, in seconds (0.1 ms).
DT = 1e-4
#: Membrane potential at which a neuron spikes (dimensionless; rest is 0).
THRESHOLD = 1.0
#: Membrane potential right after a spike.
RESET = 0.0
#: Mean input per unit of ``k``: the mean drive reaches threshold at ``k = 10``.
DRIVE_PER_K = 0.1
#: Standard deviation of the free membrane potential caused by the input noise.
NOISE = 0.2
#: Sampling interval of the returned voltage trace, in seconds (1 ms).
TRACE_DT = 1e-3
#: The units and names :func:`firing_rate` declares for its results and parameters (the
#: store keeps them; plots label their axes with them).
RATE_ATTRS = {"units": "Hz", "long_name": "firing rate"}
CV_ATTRS = {"units": "1", "long_name": "CV of inter-spike intervals"}
#: Units and names of :func:`firing_rate`'s parameters, for
#: ``space.with_attrs(**{n: FIRING_RATE_PARAMETERS[n] for n in space.names})``.
FIRING_RATE_PARAMETERS = {
    "k": {"units": "1", "long_name": "input strength"},
    "tau": {"units": "s", "long_name": "membrane time constant"},
    "n_neurons": {"long_name": "neurons"},
    "duration": {"units": "s", "long_name": "simulated time"},
}


def firing_rate(k: float, tau: float = 0.01, n_neurons: int = 100, duration: float = 1.0,
                seed: int = 0) -> dict[str, Any]:
    """Simulate leaky integrate-and-fire neurons driven by noisy input of strength ``k``.

    Each of ``n_neurons`` independent neurons follows (dimensionless potential ``v``,
    rest 0, threshold 1, reset to 0, no refractory period)::

        tau dv/dt = -v + 0.1 k + 0.2 sqrt(2 tau) xi(t)

    with ``xi`` Gaussian white noise (so the free potential fluctuates with standard
    deviation 0.2 around ``0.1 k``), integrated by the Euler(-Maruyama) method with
    ``dt = 0.1 ms``, vectorised over neurons. The mean input reaches threshold at
    ``k = 10``: below it, neurons fire only thanks to the noise, rarely and irregularly;
    above it, they fire regularly (the CV falls towards 0.2 at ``k = 20``). Smaller
    ``tau`` means faster membranes and proportionally higher rates. A call with the
    defaults takes about 25 ms.

    Parameters
    ----------
    k
        Input strength: the mean input is ``0.1 k`` (threshold 1); must be >= 0.
    tau
        Membrane time constant in seconds; must be > ``2 * dt`` (0.2 ms).
    n_neurons
        Number of neurons (all identical, independent noise).
    duration
        Simulated time in seconds.
    seed
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same result.

    Returns
    -------
    dict
        ``"rate"``: mean firing rate over neurons in Hz (a 0-d :class:`xarray.DataArray`
        with ``units`` and ``long_name``: see :data:`RATE_ATTRS`);
        ``"cv"``: coefficient of variation of the inter-spike intervals, the mean of the
        per-neuron CVs over neurons with at least 3 spikes (NaN when no neuron has; a
        0-d DataArray too);
        ``"v"``: :class:`xarray.DataArray` of neuron 0's membrane potential sampled every
        1 ms from ``t = 0``, dims ``("time",)``, coordinate ``time`` in seconds.

    Raises
    ------
    ValueError
        For a negative ``k``, a ``tau`` not above 0.2 ms, ``n_neurons < 1``, or a
        ``duration`` shorter than 1 ms.

    Examples
    --------
    >>> out = firing_rate(k=15, tau=0.01, seed=1)
    >>> sorted(out)
    ['cv', 'rate', 'v']
    >>> 50 < float(out["rate"]) < 200 and float(out["cv"]) < 0.5
    True
    >>> out["rate"].attrs["units"]
    'Hz'
    >>> float(firing_rate(k=15, tau=0.005, seed=1)["rate"]) > 1.5 * float(out["rate"])
    True
    >>> out["v"].dims, out["v"].sizes["time"], float(out["v"].time[1])
    (('time',), 1000, 0.001)
    >>> float(firing_rate(k=15, seed=1)["rate"]) == float(out["rate"])
    True
    >>> import math
    >>> float(firing_rate(k=0)["rate"]), math.isnan(firing_rate(k=0)["cv"])
    (0.0, True)
    """
    k, tau, duration = float(k), float(tau), float(duration)
    n_neurons = int(n_neurons)
    if not k >= 0:
        raise ArgumentError(f"k must be >= 0, got {k!r}")
    if not tau > 2 * DT:
        raise ArgumentError(f"tau must be > {2 * DT} s (twice the time step), got {tau!r}")
    if n_neurons < 1:
        raise ArgumentError(f"n_neurons must be >= 1, got {n_neurons!r}")
    if not duration >= TRACE_DT:
        raise ArgumentError(f"duration must be >= {TRACE_DT} s, got {duration!r}")

    rng = np.random.default_rng(seed)
    steps = round(duration / DT)
    every = round(TRACE_DT / DT)
    decay = 1.0 - DT / tau
    # Euler-Maruyama increments of the input, drawn all at once: mean + noise per step
    drive = rng.standard_normal((steps, n_neurons))
    drive *= NOISE * np.sqrt(2.0 * DT / tau)
    drive += DRIVE_PER_K * k * DT / tau

    v = np.zeros(n_neurons)
    spikes = np.zeros((steps, n_neurons), dtype=bool)
    trace = np.empty(-(-steps // every))
    for i in range(steps):
        if i % every == 0:  # the state at the start of each 1 ms interval
            trace[i // every] = v[0]
        v *= decay
        v += drive[i]
        fired = spikes[i]
        np.greater_equal(v, THRESHOLD, out=fired)
        v[fired] = RESET

    neuron, step = np.nonzero(spikes.T)  # sorted by neuron, then time
    rate = len(step) / (n_neurons * steps * DT)
    cv = _mean_cv(neuron, step, n_neurons)
    time = np.arange(len(trace)) * TRACE_DT
    v_da = xr.DataArray(trace, dims=("time",), coords={"time": time}, name="v",
                        attrs={"long_name": "membrane potential of neuron 0",
                               "units": "threshold"})
    v_da.time.attrs["units"] = "s"
    return {"rate": xr.DataArray(float(rate), attrs=RATE_ATTRS),
            "cv": xr.DataArray(cv, attrs=CV_ATTRS), "v": v_da}


def _mean_cv(neuron: np.ndarray, step: np.ndarray, n_neurons: int) -> float:
    """Mean over neurons with >= 3 spikes of std/mean of their inter-spike intervals."""
    if len(step) < 3:
        return float("nan")
    isi = np.diff(step).astype(np.float64)
    same = neuron[1:] == neuron[:-1]  # intervals within one neuron's train
    isi, owner = isi[same], neuron[1:][same]
    count = np.bincount(owner, minlength=n_neurons)
    enough = count >= 2
    if not enough.any():
        return float("nan")
    total = np.bincount(owner, isi, minlength=n_neurons)
    squares = np.bincount(owner, isi * isi, minlength=n_neurons)
    mean = total[enough] / count[enough]
    var = np.maximum(squares[enough] / count[enough] - mean * mean, 0.0)
    return float(np.mean(np.sqrt(var) / mean))


def cellular_automaton(rule: int, initial: str = "single", width: int = 101, steps: int = 100,
                       seed: int = 0) -> dict[str, Any]:
    """Run an elementary cellular automaton (Wolfram rule ``rule``) on a ring of cells.

    Each cell is 0 or 1; its next state is bit ``4*left + 2*self + right`` of ``rule``.
    The ends of the row wrap around (periodic boundary).

    Parameters
    ----------
    rule
        Wolfram rule number, 0-255 (e.g. 30 is chaotic, 90 draws a Sierpinski triangle,
        110 is Turing-complete).
    initial
        ``"single"``: one live cell in the middle; ``"random"``: each cell alive with
        probability 1/2, drawn with ``numpy.random.default_rng(seed)``.
    width
        Number of cells in a row (>= 3).
    steps
        Number of rows returned, the initial one included (>= 1).
    seed
        Seed for ``initial="random"`` (unused for ``"single"``).

    Returns
    -------
    dict
        ``"pattern"``: ``uint8`` :class:`xarray.DataArray` of shape ``(steps, width)``
        with dims ``("step", "cell")`` and integer coordinates; row 0 is the initial state.
        ``"density"``: fraction of live cells in the last row (a 0-d DataArray with
        ``units`` and ``long_name``).

    Raises
    ------
    ValueError
        For a rule outside 0-255, an unknown ``initial``, ``width < 3`` or ``steps < 1``.

    Examples
    --------
    >>> out = cellular_automaton(90, width=9, steps=4)
    >>> for row in out["pattern"].values:
    ...     print("".join("-#"[c] for c in row))
    ----#----
    ---#-#---
    --#---#--
    -#-#-#-#-
    >>> out["pattern"].dims, out["pattern"].dtype.name, float(out["density"])
    (('step', 'cell'), 'uint8', 0.4444444444444444)
    >>> a = cellular_automaton(30, initial="random", seed=3)["pattern"]
    >>> bool((a == cellular_automaton(30, initial="random", seed=3)["pattern"]).all())
    True
    """
    rule_number = int(rule)
    if rule_number != rule or not 0 <= rule_number <= 255:
        raise ArgumentError(f"rule must be an integer from 0 to 255, got {rule!r}")
    width, steps = int(width), int(steps)
    if width < 3:
        raise ArgumentError(f"width must be >= 3 cells, got {width!r}")
    if steps < 1:
        raise ArgumentError(f"steps must be >= 1, got {steps!r}")
    pattern = np.zeros((steps, width), dtype=np.uint8)
    if initial == "single":
        pattern[0, width // 2] = 1
    elif initial == "random":
        pattern[0] = np.random.default_rng(seed).integers(0, 2, width, dtype=np.uint8)
    else:
        raise ArgumentError(f"initial must be 'single' or 'random', got {initial!r}")
    table = np.array([(rule_number >> i) & 1 for i in range(8)], dtype=np.uint8)
    for t in range(1, steps):
        row = pattern[t - 1]
        neighbourhood = (np.roll(row, 1) << 2) | (row << 1) | np.roll(row, -1)
        pattern[t] = table[neighbourhood]
    da = xr.DataArray(pattern, dims=("step", "cell"),
                      coords={"step": np.arange(steps), "cell": np.arange(width)},
                      name="pattern", attrs={"long_name": "cell state"})
    density = xr.DataArray(float(pattern[-1].mean()), attrs={
        "units": "1", "long_name": "fraction of live cells in the last row"})
    return {"pattern": da, "density": density}
