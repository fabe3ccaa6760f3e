"""Write the demo notebooks from the sources in this file, with no outputs.

The sources below use the "percent" format: a line ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell (written as plain markdown, not commented out), and
``tags=[...]`` after either marks the cell for the tests (``tests/test_notebooks.py``).

    python notebooks/build.py                   # (re)write notebooks/*.ipynb
    python notebooks/build.py --check           # exit 1 if a notebook differs from its source
    python notebooks/build.py --execute OUT     # run them in OUT, keep outputs and figures
    python notebooks/build.py --execute OUT --small    # the same at the test suite's sizes

Edit the sources here, not the .ipynb files, then run the first command.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- sources

QUICKSTART = r'''
# %% [markdown]
# Quickstart: firing rate versus input

This notebook runs a parameter scan from start to finish. The model is a population of
leaky integrate-and-fire neurons driven by noisy input (the question of the Brian
simulator's DataManager example: *how does the firing rate depend on the input?*). We
simulate it for every combination of the input strength `k` and the membrane time
constant `tau`, several times each with different noise, and

1. call the model once,
2. describe the parameter points,
3. run them on local worker processes (ipyparallel engines),
4. get the results back as a labelled `xarray.Dataset` and plot them with error bars,
5. look at points that failed,
6. see that running the scan again computes nothing.

Results are written to `results/01-rates` next to this notebook. Delete that folder to
start again from scratch.

# %%
%matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np

import notebookscan as ns
from notebookscan.models import firing_rate
from notebookscan.plotting import plot_result

# The test suite sets NOTEBOOKSCAN_SMALL=1 for a smaller scan; leave it unset.
SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"
STORE = "results/01-rates"

# %% [markdown]
## 1. The model

`firing_rate(k, tau, n_neurons=100, duration=1.0, seed=0)` integrates
`tau dv/dt = -v + 0.1 k + noise` for 100 independent neurons during 1 s (Euler steps of
0.1 ms). A neuron spikes when `v` reaches 1 and is reset to 0, so the mean input reaches
the threshold at `k = 10`. It returns a dict: the mean firing rate `rate` (Hz), the
coefficient of variation `cv` of the inter-spike intervals (about 1 for irregular,
Poisson-like firing, near 0 for clockwork firing) and the voltage trace `v` of one neuron.
A call takes about 25 ms.

# %%
out = firing_rate(k=12.0, tau=0.01, seed=1)
print(f"rate = {out['rate']:.1f} Hz, CV = {out['cv']:.2f}")

fig, ax = plt.subplots(figsize=(8, 2.5))
out["v"].plot(ax=ax)
ax.axhline(1.0, color="grey", linestyle=":", label="threshold")
ax.set_title("neuron 0, k = 12, tau = 10 ms")
ax.legend(loc="lower right");

# %% [markdown]
## 2. The parameter points

A *space* is the set of points to run. `ns.grid` takes every combination of its axes;
`* ns.trials(n)` repeats each combination `n` times. The function receives the point's
parameters and a `seed`, derived from the parameter values: trial 3 of a point gets the
same seed on every run, on any engine or machine, so results are reproducible.

# %%
if SMALL:
    k_values, n_trials = np.linspace(0, 20, 6), 3
else:
    k_values, n_trials = np.linspace(0, 20, 21), 5

space = ns.grid(k=k_values, tau=[0.005, 0.01, 0.02]) * ns.trials(n_trials)
space

# %% [markdown]
## 3. Run the scan

`ns.Scan` ties together the function, the space and a store, the directory that keeps
the results. It checks the space against the function's signature first, so a misspelt
parameter fails here, before anything runs.

`scan.run()` starts local ipyparallel engines (one per core; the first time takes a few
seconds), skips every point the store already holds and returns at once: the scan runs
in the background and the notebook stays usable. Finished points are written to the
store every 2 seconds, so an interrupted scan loses almost nothing. `await scan` waits
for the end without blocking the kernel.

# %%
scan = ns.Scan(firing_rate, space, store=STORE)
scan.run()

# %%
progress = await scan
print(progress)

# %% [markdown]
## 4. The results

`scan.results()` reads the store and returns an `xarray.Dataset` with one dimension per
parameter (`k`, `tau`, `trial`), plus the dimensions of array results (`time`, for the
voltage trace). Besides the results, each point keeps its bookkeeping under names of its
own (`ns_key`, `ns_seed`, `ns_status`, `ns_error`, `ns_traceback`, start and end time,
`ns_duration`, `ns_host`, `ns_worker`, and `ns_run`: which run computed it; `ds.attrs["provenance"]` describes each run: code
version, package versions, machine).

# %% tags=["results"]
ds = scan.results()
ds

# %% [markdown]
From here on it is plain xarray. The mean ± standard deviation over the trials:

# %%
fig, (ax_rate, ax_cv) = plt.subplots(1, 2, figsize=(11, 4))
for tau in ds.tau.values:
    label = f"tau = {tau * 1e3:g} ms"
    rate, cv = ds.rate.sel(tau=tau), ds.cv.sel(tau=tau)
    ax_rate.errorbar(ds.k, rate.mean("trial"), yerr=rate.std("trial"), marker="o",
                     markersize=4, capsize=3, label=label)
    ax_cv.errorbar(ds.k, cv.mean("trial"), yerr=cv.std("trial"), marker="o",
                   markersize=4, capsize=3, label=label)
ax_rate.set(xlabel="input strength k", ylabel="firing rate (Hz)")
ax_cv.set(xlabel="input strength k", ylabel="CV of inter-spike intervals")
for ax in (ax_rate, ax_cv):
    ax.axvline(10, color="grey", linestyle=":")
    ax.grid(alpha=0.3)
ax_rate.legend()
fig.suptitle(f"mean ± std over {ds.sizes['trial']} trials; dotted: mean input at threshold")
fig.tight_layout()

# %% [markdown]
Below `k = 10` the mean input stays under the threshold: neurons fire only when the noise
pushes them over, and irregularly (the CV peaks a little below the threshold). Far below
it they hardly fire: with fewer than three spikes per neuron the CV is undefined and left
out, and the first values rest on a handful of spikes, hence the wide error bars. Above
the threshold the neurons fire more and more regularly and the CV falls towards 0.25.
There the rate is proportional to `1/tau`: faster membranes fire faster. The voltage
of one neuron (`tau` = 10 ms, first trial, first 300 ms) shows the two regimes:

# %%
traces = ds.v.sel(tau=0.01, trial=0).sel(k=[4, 10, 16], method="nearest")
traces.sel(time=slice(0, 0.3)).plot.line(x="time", row="k", aspect=5, size=1.6);

# %% [markdown]
`notebookscan.plotting.plot_result` draws the usual plots in one line (here with error
bars of one standard error of the mean over trials):

# %%
plot_result(ds, "rate", x="k", hue="tau")

# %% [markdown]
## 5. Status and failures

Every point of the space is `done`, `failed` or `missing` (not run yet):

# %%
scan.status()

# %% [markdown]
An exception in the function does not stop a scan: the point is stored as `failed`,
with its error and traceback, and the other points go on. Here a time constant of
0.1 ms is too short for the model's 0.1 ms time step:

# %%
risky = ns.Scan(firing_rate, ns.grid(k=[10.0, 15.0], tau=[1e-4, 1e-3, 1e-2]),
                store="results/01-failures")
await risky.run()
bad = risky.results()
bad.ns_status.to_pandas()

# %% tags=["failures"]
print(risky.status())
print(bad.ns_error.sel(k=10.0, tau=1e-4).item())
print(*bad.ns_traceback.sel(k=10.0, tau=1e-4).item().splitlines()[-3:], sep="\n")

# %% [markdown]
Failed points stay failed: running the scan again does not retry them (it warns that
they exist) unless you ask for it with `risky.run(retry_failed=True)`, for example after
fixing a bug in the model.

## 6. Running again computes nothing

A point is identified by its parameter values (the `key` is a hash of them), so the
store knows which points it holds. Run the same scan again, or build it anew as you would
after restarting the kernel: nothing is computed.

# %% tags=["rerun"]
again = ns.Scan(firing_rate, space, store=STORE)
print(await again.run())

# %% [markdown]
The store is a directory of NetCDF files that any process can read, for instance a
script on another machine; `ns.open_store` gives the same Dataset:

# %%
ns.open_store(STORE).rate.mean("trial").to_pandas().round(1)

# %% [markdown]
## Next

* `02-cellular-automata`: array results, and all 256 rules of an elementary cellular
  automaton.
* `03-coarse-to-fine`: your own model, a 2-D scan refined where it is interesting.
* `04-long-runs`: long simulations in segments: stop, resume, extend.
* `05-cluster`: ipyparallel clusters, detached runs, and merging stores.
* `06-adaptive`: points chosen by python-adaptive learners, resumed from the store.
'''

AUTOMATA = r'''
# %% [markdown]
# Elementary cellular automata: rules × initial conditions

A row of cells, each dead (0) or alive (1). At every step each cell looks at itself and
its two neighbours; these 8 possible neighbourhoods map to a new state by a *rule*, and
the 8 output bits make 256 rules (Wolfram's numbering). Some rules die out, some
repeat, some draw fractals (rule 90), some look random (rule 30), some are
computationally universal (rule 110).

Running every rule from several initial conditions and comparing the patterns is the
use case the pypet paper (Meyer and Obermayer, 2016) uses to introduce parameter
exploration. Here: all 256 rules, each from two initial conditions, one live cell in
the middle (`single`) and a random row (`random`, drawn from the point's seed).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import notebookscan as ns
from notebookscan.models import cellular_automaton

SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"  # set by the test suite
STORE = "results/02-automata"

# %% [markdown]
`cellular_automaton(rule, initial="single", width=101, steps=100, seed=0)` returns the
whole space-time diagram as an array with dimensions `(step, cell)`, and the density of
live cells in the last row. The row is a ring: what leaves on one side comes back on the
other. Rule 90 from a single cell:

# %%
out = cellular_automaton(90, width=31, steps=16)
for row in out["pattern"].values:
    print("".join(" #"[cell] for cell in row))

# %% [markdown]
## The scan

Every rule from both initial conditions. Each call takes about a millisecond, so most
of the time goes into starting the engines and writing the store.

# %%
rules = [0, 18, 22, 30, 45, 54, 60, 73, 90, 105, 110, 150, 184, 232] if SMALL else range(256)
space = ns.grid(rule=rules, initial=["single", "random"])
scan = ns.Scan(cellular_automaton, space, store=STORE)
print(await scan.run())

# %% [markdown]
Each point's result keeps its own dimensions: `pattern` has dimensions `(rule, initial,
step, cell)`, stored as `uint8` like the function returned it.

# %% tags=["results"]
ds = scan.results()
ds

# %% [markdown]
## Space-time diagrams

Time runs downwards. From a single cell, rule 30 grows an irregular triangle, rule 90
the Sierpinski triangle and rule 110 a pattern that grows to the left only; rule 184 (a
model of traffic flow) moves the cell one step to the right at every step. The patterns
reach the edges after 50 steps and come back in from the other side. From a random row,
rules 30 and 90 stay disordered, rule 110 forms structures moving over a periodic
background, and rule 184 sorts the cells into jams and free flow.

# %%
show = [30, 90, 110, 184]
fig, axes = plt.subplots(2, len(show), figsize=(13, 7), sharex=True, sharey=True)
for col, rule in enumerate(show):
    for row, initial in enumerate(["single", "random"]):
        ax = axes[row, col]
        ax.imshow(ds.pattern.sel(rule=rule, initial=initial), cmap="Greys",
                  interpolation="nearest", aspect="auto")
        ax.set_title(f"rule {rule}, {initial}")
for ax in axes[:, 0]:
    ax.set_ylabel("step")
for ax in axes[-1]:
    ax.set_xlabel("cell")
fig.tight_layout()

# %% [markdown]
## All rules at once

The fraction of live cells after 100 steps, for every rule. From a single cell most
rules end with an empty or a full row; from a random row the final densities spread
between 0 and 1.

# %%
fig, ax = plt.subplots(figsize=(12, 3.5))
for initial, marker in (("random", "o"), ("single", "x")):
    ax.scatter(ds.rule, ds.density.sel(initial=initial), marker=marker, s=14,
               label=f"{initial} start")
ax.set(xlabel="rule", ylabel="density after 100 steps", xlim=(-2, 257))
ax.grid(alpha=0.3)
ax.legend(loc="upper left");

# %% [markdown]
The Dataset can be queried like any other, array results included. Which rules keep
the number of live cells constant at every step, starting from the random row? (Rule 184,
the traffic model, is one: cars move but are neither created nor destroyed.)

# %% tags=["conserving"]
random_start = ds.pattern.sel(initial="random").astype(int)
live = random_start.sum("cell")                     # live cells, per rule and step
conserving = (live == live.isel(step=0)).all("step")
print("rules that conserve the number of live cells:",
      ds.rule.values[conserving.values].tolist())

# %% [markdown]
The store can be opened later from any process with `ns.open_store("results/02-automata")`,
and running this notebook again computes nothing: every point is already stored.
'''

COARSE_TO_FINE = r'''
# %% [markdown]
# Coarse to fine: a 2-D scan, refined where it is interesting

Scans in several dimensions get expensive quickly. A common strategy: a coarse scan
first, a look at it, then a finer grid with more trials only where something happens,
keeping every point already computed. This notebook does that with a model defined in
the notebook itself, as your own would be.

**The question.** Neurons receive an input whose mean is modulated sinusoidally, with a
relative depth `amp` and a frequency `freq`. How strongly do their spikes lock to the
modulation? The membrane integrates its input over about its time constant (10 ms), so
slow modulations should be followed and fast ones filtered out; where is the cut-off,
and how does it depend on the depth?

# %%
%matplotlib inline
import os
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

import notebookscan as ns
from notebookscan.plotting import plot_result
from notebookscan.widgets import Explorer

SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"  # set by the test suite
STORE = "results/03-modulation"

# %% [markdown]
## The model

The leaky integrate-and-fire population of `notebookscan.models.firing_rate` (mean input
`0.1 k`, below the threshold of 1 at the default `k = 8`, plus noise), with the mean input
multiplied by `1 + amp sin(2π freq t)`. Locking is measured by the *vector strength* of
the spike times: the length of the mean of `exp(2πi freq t_spike)`, 0 when spikes ignore
the phase of the modulation, 1 when they all fall at the same phase.

Any function that takes the parameters as keyword arguments and returns numbers, arrays
or a dict of them can be scanned. It is sent to the engines by value, so it can live in
a notebook cell; the modules it uses must be installed where the engines run.

# %%
def modulated_population(amp: float, freq: float, k: float = 8.0, tau: float = 0.01,
                         n_neurons: int = 100, duration: float = 1.0, seed: int = 0):
    """LIF neurons whose mean input 0.1 k is modulated by 1 + amp sin(2 pi freq t)."""
    dt = 1e-4
    steps = round(duration / dt)
    t = np.arange(steps) * dt
    drive = 0.1 * k * (1 + amp * np.sin(2 * np.pi * freq * t))
    noise = np.random.default_rng(seed).standard_normal((steps, n_neurons))
    noise *= 0.2 * np.sqrt(2 * dt / tau)
    v = np.zeros(n_neurons)
    spike_steps = []
    for i in range(steps):
        v += dt / tau * (drive[i] - v) + noise[i]
        fired = v >= 1.0
        if fired.any():
            v[fired] = 0.0
            spike_steps.append(np.full(fired.sum(), i))
    spike_times = t[np.concatenate(spike_steps)] if spike_steps else np.empty(0)
    phases = np.exp(2j * np.pi * freq * spike_times)
    return {"rate": spike_times.size / (n_neurons * duration),
            "locking": float(np.abs(phases.mean())) if spike_times.size else np.nan}


modulated_population(amp=0.5, freq=10.0)

# %% [markdown]
## A coarse scan, without pointless points

With `amp = 0` there is no modulation, and `freq` means nothing: every frequency would
run the same simulation. `where` keeps only the points for which the condition holds,
here a single frequency at `amp = 0`. Frequencies are spaced logarithmically.

# %%
if SMALL:
    amps, coarse_freqs, n_trials = [0.0, 0.5, 1.0], np.geomspace(1, 300, 4), 2
else:
    amps, coarse_freqs, n_trials = [0.0, 0.25, 0.5, 0.75, 1.0], np.geomspace(1, 300, 7), 3

coarse = ns.grid(amp=amps, freq=coarse_freqs).where(
    lambda p: p["amp"] > 0 or p["freq"] == coarse_freqs[0]) * ns.trials(n_trials)
print(f"{len(coarse)} points instead of {len(amps) * len(coarse_freqs) * n_trials}")
coarse

# %%
scan = ns.Scan(modulated_population, coarse, store=STORE)
print(await scan.run())

# %% [markdown]
## Where is it interesting?

The explorer shows any result over one or two parameters, with sliders for the others.
In JupyterLab, choose the variable and the axes, untick *average over trials* to see
single trials, or switch to the status map. Its *Refine* section can also run a
refinement; here we refine in code, so that the notebook runs from top to bottom.

# %%
Explorer(scan, var="locking", x="freq", y="amp")

# %% [markdown]
The same as a plot of lines (error bars: one standard error over trials):

# %%
ds = scan.results()
plot_result(ds, "locking", x="freq", hue="amp", logx=True)

# %% [markdown]
Locking grows with the depth of the modulation, stays about constant up to a few tens
of hertz, and falls above: the membrane filters out fast modulations. (At `amp = 0` only
1 Hz was run; the grey ticks labelled *missing* mark the frequencies that `where` left out
there.) The interesting
region is above 20 Hz. We refine there: 13 frequencies from 20 to 300 Hz, and 6 trials
instead of 3 to shrink the error bars.

## Refine

`scan.refine(...)` adds to the space the same grid with some axes replaced: here `freq`
and the number of trials. The condition given to `where` is applied to the new points as
well, so `amp = 0` gets no new frequencies. `scan.plan()` counts what would run, running
nothing:

# %% tags=["before"]
before = scan.status()
print("before:", before)
if SMALL:
    scan.refine(freq=np.geomspace(20, 300, 5), trials=3)
else:
    scan.refine(freq=np.geomspace(20, 300, 13), trials=6)
print(scan.space)
scan.plan()

# %% [markdown]
Only the new points run; every point of the coarse scan is read from the store:

# %% tags=["refined"]
print(await scan.run())
after = scan.status()
print("after:", after)

# %% [markdown]
Each point records the run that computed it. All points of the coarse scan still carry
the coarse run's id, so none was computed again:

# %% tags=["runs"]
ds = scan.results()
done = ds.ns_status.values == "done"
per_run = Counter(ds.ns_run.values[done])
for run_id, count in per_run.items():
    print(f"run {run_id}: {count} points")
assert sorted(per_run.values()) == sorted([before["done"], after["done"] - before["done"]])

# %% [markdown]
## The refined picture

Old and new points together, mean ± standard deviation over the trials (3 or 6 at the
coarse frequencies, 6 at the new ones):

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
for amp in ds.amp.values[1:]:
    locking = ds.locking.sel(amp=amp)
    ax.errorbar(locking.freq, locking.mean("trial"), yerr=locking.std("trial"),
                marker="o", markersize=3, capsize=2, label=f"amp = {amp:g}")
ax.axvspan(20, 300, color="grey", alpha=0.1, label="refined")
ax.set(xscale="log", xlabel="modulation frequency (Hz)", ylabel="vector strength")
ax.grid(alpha=0.3, which="both")
ax.legend();

# %% [markdown]
The finer grid shows what the coarse one only hinted at: with a deep modulation, locking
rises to a peak near 40 Hz before the membrane's filtering takes over, and it falls by
half between 40 and 300 Hz.

The explorer of the refined scan shows the coarse and the fine points together
(frequencies that a depth was not run at are drawn as empty cells):

# %%
Explorer(scan, var="locking", x="freq", y="amp")
'''

LONG_RUNS = r'''
# %% [markdown]
# Long runs in segments: streamed recordings, stop and resume, extend, chain

Some simulations run for a long model time and record a lot: a network whose activity
you want to watch while it runs, or a run that must survive a crash at hour five. A
*segmented* model runs one segment (here 0.1 s of model time) at a time. After each
segment, its recordings are written to the store and the state needed to continue is
saved as a checkpoint (a NetCDF file). So:

* the recordings can be read while the scan runs;
* a stopped, interrupted or killed scan continues from the last checkpoint of each point,
  with results identical to an uninterrupted run;
* a finished scan can be *extended* by more model time, and *chained*: run again from its
  final state, changed by a function of yours between runs;
* memory stays bounded by one segment, however long the run.

# %%
import asyncio
import os

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import notebookscan as ns
from notebookscan.demo_network import lif_network, rebalance

SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"  # set by the test suite
STORE = "results/04-network"
xr.set_options(display_expand_data=False);

# %% [markdown]
## The model

`lif_network(g, drive, n=100, p_connect=0.1, seed, segments)` is a network of 100 leaky
integrate-and-fire neurons, 80 % excitatory and 20 % inhibitory, randomly connected with
synaptic delays of 1 to 5 ms. `g` is the strength of inhibition relative to excitation,
`drive` the mean external input (1 is the threshold). Spikes still travelling along
the axons at the end of a segment are part of the state handed to the next one, like
the spike queue a simulator such as Brian2 saves.

It is a generator: it builds the network (or restores it from the state it is given)
and yields one `Segment` (recordings, state, summary) for every segment the scan asks
for. `ns.Scan` recognises such a function and runs it segment by segment; the recorded
quantities are the voltage of 5 neurons (every 1 ms), all spikes, and per-segment
summaries (rate, pending synaptic input, largest and smallest excitatory weight).

# %%
if SMALL:
    space, segments = ns.grid(g=[4.0, 5.0, 6.0], drive=[1.2]), 40
else:
    space, segments = ns.grid(g=[3.0, 4.0, 5.0, 6.0], drive=[1.1, 1.3]), 50

scan = ns.Scan(lif_network, space, store=STORE, segments=segments, segment_duration=0.1)
scan

# %% [markdown]
## Run, watch, stop

The scan starts in the background. While it runs, `scan.status()` counts the segments
already in the store (written every half second here, `flush_interval=0.5`; the default
is every 2 seconds), and `scan.recordings()` reads what has been recorded so far. When
about a third of the segments are stored, we plot the firing rate of each segment so far
(each point's line ends where it has got to), then stop the scan: `scan.stop()` submits
nothing more, lets the running segments finish and writes them. (On a fast machine a
small scan may be finished before it is stopped.)

# %%
run = scan.run(flush_interval=0.5)
target = scan.status()["segments_total"] // 3
while scan.status()["segments_done"] < target and not run.done():
    await asyncio.sleep(0.1)

so_far = scan.recordings(link=0, variables=["rate_hz"])
print("segments stored so far, per point:")
print(so_far.rate_hz.notnull().sum("segment").to_pandas())
so_far.rate_hz.plot.line(x="segment", hue="g", col="drive", marker=".", figsize=(10, 3));

# %% tags=["stopped"]
print(scan.stop())
scan.status()

# %% [markdown]
Some points are complete, some are part done, maybe some not started. Run the scan again
to continue: each point resumes from its newest checkpoint, and only the missing
segments run. The same happens after the kernel (or the machine) died: build the scan
again in a new kernel and call `run()`.

# %% tags=["resumed"]
print(await scan.run())
scan.status()

# %% [markdown]
## Recordings

`scan.recordings()` joins the segments of every point into one time axis per point
(`time` for sampled values, `spikes` for events), laid out like `scan.results()`.
`link=0` selects the first run of each point; the chain below adds more runs (and, when
this notebook runs a second time, they are in the store already).

# %%
rec = scan.recordings(link=0)
rec

# %%
point = dict(g=float(rec.g[-1]), drive=float(rec.drive[-1]))
one = rec.sel(point)
n_spikes = int(one.spikes_length)
fig, (ax_raster, ax_v) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
ax_raster.plot(one.spikes_time[:n_spikes], one.spikes_index[:n_spikes], "|",
               markersize=3, color="k")
ax_raster.set(ylabel="neuron", title=f"g = {point['g']:g}, drive = {point['drive']:g}")
ax_v.plot(one.time, one.v.isel(v_index=0), linewidth=0.8)
ax_v.set(xlabel="time (s)", ylabel="v of neuron 0", xlim=(0.8, 1.4))
for boundary in np.arange(0.9, 1.4, 0.1):
    for ax in (ax_raster, ax_v):
        ax.axvline(boundary, color="tab:red", linewidth=0.8, linestyle="--")
fig.tight_layout()

# %% [markdown]
The dashed lines mark segment boundaries: at each of them the scan saved the network's
state, and the next segment started from that saved state, possibly on another engine.
The activity runs on without a seam.

# %% [markdown]
## Extend

One more second of model time for every point: 10 more segments each, starting from
each point's final checkpoint. Nothing already computed runs again.

# %% tags=["extended"]
print(await scan.extend(duration=1.0))
print(f"the time axis now ends at "
      f"{float(scan.recordings(link=0, variables=['v']).time.max()):.3f} s")

# %% [markdown]
## Chain

A chained run starts from the final state of the previous one, passed through a function
of yours in this process. `rebalance` halves the strongest excitatory weight of the
network and doubles the weakest. `chain(rebalance, runs=3)` makes every point run three
times in a row (links 0, 1 and 2); each link keeps its own recordings and final state.

# %% tags=["chained"]
print(await scan.chain(rebalance, runs=3, segments=segments // 2))
scan.status()

# %% [markdown]
The transformation is visible in the states and in the per-segment summaries of the
weights:

# %%
for link in range(3):
    weights = scan.state(point, link=link)["weights"]
    excitatory = weights[weights > 0]
    print(f"link {link}: final excitatory weights from {excitatory.min():.4f} "
          f"to {excitatory.max():.4f}")

chained = scan.recordings(variables=["rate_hz", "w_max", "w_min"])
titles = {"rate_hz": "firing rate (Hz)", "w_max": "largest excitatory weight",
          "w_min": "smallest excitatory weight"}
fig, axes = plt.subplots(1, 3, figsize=(13, 3))
for ax, (var, title) in zip(axes, titles.items(), strict=True):
    for link in chained.link.values:
        values = chained[var].sel({**point, "link": link}).dropna("segment")
        ax.plot(values.segment, values, marker=".", label=f"link {link}")
    ax.set(xlabel="segment", title=title)
axes[0].legend()
fig.suptitle(f"g = {point['g']:g}, drive = {point['drive']:g}")
fig.tight_layout()

# %% [markdown]
Changing two weights out of about 800 leaves the activity as it was; the point here is
the mechanism. The function between runs can be anything that maps a state to a state: a
plasticity rule applied offline, a lesion, a change of input.

# %% [markdown]
`scan.results()` has one row per point: its last link, the number of segments in it,
and the last segment's summary.

# %% tags=["results"]
scan.results()[["link", "segments", "rate_hz", "w_max", "w_min", "ns_status"]]
'''

CLUSTER = r'''
# %% [markdown]
# Clusters, detached runs, and merging stores

A scan runs unchanged on any ipyparallel cluster: local engines, engines started by a
batch system (Slurm, PBS, SGE, LSF), MPI, or a cluster somebody started with `ipcluster`.
The process that runs the scan (this notebook) receives the results and writes the
store; engines never write files, so no shared file system is needed for the results.

This notebook

1. starts a small cluster and connects to it as another process would,
2. runs a scan on it,
3. runs a scan *detached*, in a background process that outlives the notebook, and
   attaches to it,
4. merges the stores of two "machines" into one.

# %%
import os
import shutil

import numpy as np

import notebookscan as ns
from notebookscan.models import firing_rate

SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"  # set by the test suite
k_values = np.linspace(0, 20, 6 if SMALL else 21)
n_trials = 2 if SMALL else 5

# %% [markdown]
## 1. A cluster

`ns.start_cluster(n)` starts an ipyparallel controller in this process's machine and `n`
engines through a launcher: local processes by default. It returns a handle with an
`executor` for scans and the location of the connection file; `cluster.stop()` stops
everything (so does the end of the kernel).

# %%
cluster = ns.start_cluster(2)
cluster

# %% [markdown]
On a cluster's login node, the same call submits the engines as a batch job (not run
here):

```python
cluster = ns.start_cluster(
    64, engines="slurm",
    account="myproj", queue="compute", timelimit="02:00:00",   # --account, --partition, --time
)
scan.run(executor=cluster.executor)
cluster.stop()                                                 # scancel, stop the controller
```

`engines="pbs"`, `"sge"`, `"lsf"` and `"mpi"` work the same way (see `docs/cluster.md`).

A cluster can also be started once, outside any notebook, in a terminal or a batch job:

```bash
ipcluster start -n 64 --engines=slurm --ip='*' --profile=scan --cluster-id=run1 --daemonize
ipcluster list
```

and any number of notebooks or scripts connect to it by profile and cluster id:

```python
executor = ns.connect(profile="scan", cluster_id="run1")
```

Here we connect to the cluster we just started, through its profile directory, as a
second notebook would:

# %%
executor = ns.connect(profile_dir=cluster.profile_dir, cluster_id=cluster.cluster_id)
executor

# %% [markdown]
## 2. A scan on the cluster

Pass the executor to `run`. This is "machine A": it scans the two shorter time
constants.

# %% tags=["machine-a"]
space_a = ns.grid(k=k_values, tau=[0.005, 0.01]) * ns.trials(n_trials)
scan_a = ns.Scan(firing_rate, space_a, store="results/05-machine-a")
print(await scan_a.run(executor=executor))

# %% [markdown]
## 3. A detached run

`run(detach=True)` runs the scan loop in a background process that keeps going when the
notebook is closed, the kernel restarted or the ssh connection lost. It needs an executor
it can create itself: `None` (local engines), `"processes"`, or the arguments of
`ns.connect` as a dict, as here. This is "machine B": it scans the two longer time
constants, so the time constant of 10 ms is computed on both machines.

# %%
space_b = ns.grid(k=k_values, tau=[0.01, 0.02]) * ns.trials(n_trials)
scan_b = ns.Scan(firing_rate, space_b, store="results/05-machine-b")
scan_b.run(detach=True,
           executor={"profile_dir": cluster.profile_dir, "cluster_id": cluster.cluster_id})

# %% [markdown]
Any process of the user who started it, for instance a new kernel after the notebook was
closed, attaches to the run with the store's path alone. The handle is the one
`scan.run()` returns: `progress`, `stop()`, `wait()`, `done()`, or `await` it:

# %% tags=["detached"]
detached = ns.attach("results/05-machine-b")
print(detached.run_id, detached.progress)
final = await detached
print(final)

# %% [markdown]
## 4. Two machines, one result

A store is a directory of NetCDF files whose names never collide, so merging stores is
copying files. Say machine B's store came over with `scp -r` or `rsync` (here a plain
copy); `ns.merge` copies the shards of both stores into a third one and reports points
that both hold with *different* results:

# %% tags=["merged"]
shutil.copytree("results/05-machine-b", "results/05-from-machine-b", dirs_exist_ok=True)
report = ns.merge(["results/05-machine-a", "results/05-from-machine-b"], "results/05-merged")
print(report)
merged = ns.open_store("results/05-merged")
(merged.ns_status == "done").sum(["k", "trial"]).to_pandas().rename("points done")

# %% [markdown]
The points with `tau = 10 ms` were computed on both machines, and the results are
identical: each point's seed comes from its parameter values, not from the machine or
the order of execution. Reading a store keeps one row per point.

# %%
a = ns.open_store("results/05-machine-a")
b = ns.open_store("results/05-from-machine-b")
both = sorted(set(a.ns_key.values.ravel()) & set(b.ns_key.values.ravel()))
same = np.array_equal(a.rate.sel(tau=0.01), b.rate.sel(tau=0.01))
print(f"{len(both)} points computed on both machines; identical results: {same}")
merged.rate.mean("trial").to_pandas().round(1).T

# %% [markdown]
Finally, stop the cluster:

# %%
executor.shutdown()
cluster.stop()
cluster
'''

ADAPTIVE = r'''
# %% [markdown]
# Let the sampler choose: adaptive scans

A grid spends as many points where nothing happens as where everything does. A
[python-adaptive](https://adaptive.readthedocs.io) *learner* picks each next point where
the function changes most, so a sharp feature needs far fewer points. notebookscan runs
the points a learner asks for on the same engines as any scan, stores every one (with
its key and seed) in the same crash-safe store, and rebuilds the learner from the store
when a run is stopped or killed: no pickles.

Needs the `adaptive` extra: `pip install 'notebookscan[adaptive]'`.

# %%
%matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np

import notebookscan as ns
from notebookscan.adaptive import line, on_grid

SMALL = os.environ.get("NOTEBOOKSCAN_SMALL") == "1"  # set by the test suite
POINTS = 60 if SMALL else 200

# %% [markdown]
## A sharp step in one dimension

A function with a step of width 0.01 at `x = 0.3`. `AdaptiveScan` takes the function,
the bounds of its continuous parameters (one: a `Learner1D`) and a `Goal`: stop at a
loss, a number of points or a time budget, whichever comes first. The learner learns
the function's only scalar result (name another with `value=`).

# %%
def step(x: float):
    return {"y": np.tanh((x - 0.3) / 0.01)}


scan = ns.AdaptiveScan(step, {"x": (0, 1)}, store="results/06-step",
                       goal=ns.Goal(points=POINTS, loss=0.005))
scan.run()

# %%
progress = await scan
print(progress)

# %% [markdown]
`scan.results()` is a Dataset over `point` with the parameters as coordinates, like any
list of points; `line` sorts it by `x` for a line plot. The points crowd at the step.

# %%
ds = scan.results()
data = line(ds, "y", "x")
fig, ax = plt.subplots(figsize=(7, 3))
data.plot(ax=ax, marker=".", lw=0.8)
ax.set_title(f"{ds.sizes['point']} points chosen by the learner")
plt.show()

# %% [markdown]
## Stopped or killed: continue from the store

A new scan on the same store tells the learner every stored point first, then asks for
more. The points it will ask first are known before it runs (`next_points`), and they
are the same whichever process rebuilds it. Here the goal grows by 20 points: only
those run.

# %% tags=["resume"]
more = ns.AdaptiveScan(step, {"x": (0, 1)}, store="results/06-step",
                       goal=ns.Goal(points=ds.sizes["point"] + 20))
print("first asks:", [round(p["x"], 4) for p in more.next_points(3)])
more.run()
print(await more)

# %% [markdown]
## A ring in two dimensions, for two kinds

Two continuous parameters give a `Learner2D`; `grid=` adds discrete or categorical
parameters, with one learner per grid cell balanced by a `BalancingLearner`. The
function also takes a `seed`: each point gets its own, derived from its key, as in
every scan.

# %%
def ring(x: float, y: float, width: float, seed: int):
    noise = 1e-3 * np.random.default_rng(seed).normal()
    return {"z": np.exp(-((np.hypot(x, y) - 0.5) ** 2) / width ** 2) + noise}


rings = ns.AdaptiveScan(ring, {"x": (-1, 1), "y": (-1, 1)}, store="results/06-ring",
                        grid=ns.grid(width=[0.05, 0.2]), balance="npoints",
                        goal=ns.Goal(points=2 * POINTS))
rings.run()
print(await rings)

# %% [markdown]
`on_grid` interpolates the points on their Delaunay triangulation onto a regular grid;
the dots are the points the learner chose.

# %%
ds2 = rings.results()
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, width in zip(axes, [0.05, 0.2]):
    image = on_grid(ds2, "z", "x", "y", n=120, width=width)
    image.plot(ax=ax, add_colorbar=False)
    chosen = ds2.where(ds2.width == width, drop=True)
    ax.plot(chosen.x, chosen.y, "k.", ms=2)
    ax.set_title(f"width {width}: {chosen.sizes['point']} points")
plt.show()

# %% [markdown]
## Trials: learn a mean to a given precision

`trials=True` learns the mean of a noisy function over seeded trials (an
`AverageLearner` per grid cell): trials are added until the standard error is below
`atol` (or the goal says stop). Each trial is a point with its own key and seed.

# %%
def noisy(k: int, seed: int):
    return {"m": np.random.default_rng(seed).normal(k, 1.0)}


trials = ns.AdaptiveScan(noisy, {}, store="results/06-trials", trials=True,
                         grid={"k": [1, 2]}, learner_options={"atol": 0.2},
                         goal=ns.Goal(points=POINTS))
trials.run()
print(await trials)
print(trials.results().m.groupby("k").mean().to_series())
'''

NOTEBOOKS = {
    "01-quickstart": QUICKSTART,
    "02-cellular-automata": AUTOMATA,
    "03-coarse-to-fine": COARSE_TO_FINE,
    "04-long-runs": LONG_RUNS,
    "05-cluster": CLUSTER,
    "06-adaptive": ADAPTIVE,
}

# --------------------------------------------------------------------------- building

_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=\[(?P<tags>[^\]]*)\])?\s*$")


def parse(source: str) -> list[tuple[str, str, list[str]]]:
    """Cells of a percent-format source: (kind, text, tags)."""
    cells: list[tuple[str, str, list[str]]] = []
    kind, tags, lines = None, [], []
    for line in source.strip("\n").splitlines():
        match = _MARKER.match(line)
        if match:
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip("\n"), tags))
            kind = "markdown" if match["markdown"] else "code"
            tags = re.findall(r'"([^"]+)"', match["tags"] or "")
            lines = []
        elif kind is None:
            raise ValueError(f"text before the first cell marker: {line!r}")
        else:
            lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n"), tags))
    return cells


def notebook(name: str) -> object:
    """The notebook ``name`` as an nbformat node, without outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python", "pygments_lexer": "ipython3"},
    }
    for i, (kind, text, tags) in enumerate(parse(NOTEBOOKS[name])):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: a rebuild changes nothing
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def text_of(name: str) -> str:
    import nbformat

    return nbformat.writes(notebook(name)) + "\n"


def write_all() -> None:
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        path.write_text(text_of(name), encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent)}")


def check_all() -> int:
    stale = [name for name in NOTEBOOKS
             if not (HERE / f"{name}.ipynb").exists()
             or (HERE / f"{name}.ipynb").read_text(encoding="utf-8") != text_of(name)]
    for name in stale:
        print(f"notebooks/{name}.ipynb differs from its source in build.py", file=sys.stderr)
    return 1 if stale else 0


def execute_all(out: Path, small: bool, names: list[str]) -> int:
    """Run notebooks in ``out`` (results/ lands there); keep outputs and PNG figures."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out.mkdir(parents=True, exist_ok=True)
    if small:
        os.environ["NOTEBOOKSCAN_SMALL"] = "1"
    else:
        os.environ.pop("NOTEBOOKSCAN_SMALL", None)
    failures = 0
    for name in names:
        nb = notebook(name)
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(out)}})
        t0 = time.perf_counter()
        try:
            client.execute()
            status = "ok"
        except CellExecutionError as exc:
            status = f"FAILED: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            failures += 1
        seconds = time.perf_counter() - t0
        nbformat.write(nb, out / f"{name}.ipynb")
        figures = 0
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                png = output.get("data", {}).get("image/png")
                if png:
                    figures += 1
                    (out / f"{name}-{cell.id}-{figures}.png").write_bytes(base64.b64decode(png))
        print(f"{name}: {status} in {seconds:.1f} s, {figures} figure(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a notebook differs from its source")
    parser.add_argument("--execute", metavar="OUT", type=Path,
                        help="run the notebooks in OUT and keep outputs and figures there")
    parser.add_argument("--small", action="store_true",
                        help="with --execute: the test suite's sizes (NOTEBOOKSCAN_SMALL=1)")
    parser.add_argument("names", nargs="*", help="notebooks to execute (default: all)")
    args = parser.parse_args(argv)
    if args.check:
        return check_all()
    if args.execute:
        names = args.names or list(NOTEBOOKS)
        unknown = sorted(set(names) - set(NOTEBOOKS))
        if unknown:
            parser.error(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}")
        if args.execute.resolve() == HERE:
            parser.error("run them somewhere else than notebooks/, which keeps no outputs")
        return execute_all(args.execute, args.small, names)
    write_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
