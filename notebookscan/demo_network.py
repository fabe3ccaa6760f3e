"""A small leaky integrate-and-fire network with synaptic delays, run in segments.

``n`` neurons (80 % excitatory, 20 % inhibitory), random sparse connections with
delays of 1-5 ms, noisy external drive, Euler steps of 0.1 ms. Spikes in flight sit in
a *ring buffer* of pending synaptic input (one row per future time step): it is part
of the state handed from one segment to the next, exactly like the spike queue that
Brian2 keeps in ``Network.store()``. Drop it, and every segment boundary loses the
spikes still travelling along the axons.

Everything is numpy; the state is a dict of arrays and ints, so a checkpoint holds it
as NetCDF. Noise is drawn from ``segment.rng()``, so a segment gives the same numbers
whether it runs straight after the previous one or after a crash and a resume.

Examples
--------
>>> from notebookscan.segments import iterate
>>> segments = list(iterate(lif_network, {"g": 4.0, "drive": 1.2, "n": 50}, segments=2,
...                         segment_duration=0.05))
>>> [s.recordings["v"].dims for s in segments]
[('time', 'v_index'), ('time', 'v_index')]
>>> float(segments[1].recordings["v"].time[0])
0.05
>>> sorted(segments[1].state)
['delays', 'refractory', 'ring', 'ring_pos', 'step', 'v', 'weights']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .segments.protocol import Segment, SegmentContext, Segments

__all__ = ["DT", "LIFNetwork", "lif_network", "rebalance"]

#: Euler time step (s).
DT = 1e-4
#: Membrane time constant (s).
TAU = 0.01
#: Threshold and reset of the dimensionless membrane potential (rest 0).
THRESHOLD, RESET = 1.0, 0.0
#: Refractory period (steps).
REFRACTORY_STEPS = 20
#: Synaptic delays are drawn from 1..MAX_DELAY_STEPS steps (0.1-5 ms).
MIN_DELAY_STEPS, MAX_DELAY_STEPS = 10, 50
#: Mean excitatory weight (jump of v per spike); weights are J × U(0.5, 1.5).
J = 0.1
#: Noise amplitude of the external drive.
SIGMA = 0.3
#: Segment duration (s) used when the scan sets none.
DEFAULT_SEGMENT = 0.1
#: Recorded neurons and decimation of the voltage trace (every 1 ms).
RECORDED = 5
RECORD_EVERY = 10


class LIFNetwork:
    """The network of one parameter point, with ``init()`` and ``advance()``.

    Parameters
    ----------
    g
        Relative strength of inhibition (inhibitory weight = ``-g * J``).
    drive
        Mean external drive (the free potential would settle at ``drive``; 1 is the
        threshold).
    n
        Number of neurons.
    p_connect
        Connection probability.
    seed
        The point's seed: fixes the connectivity and delays.
    """

    def __init__(self, g: float = 4.0, drive: float = 1.2, n: int = 100,
                 p_connect: float = 0.1, seed: int = 0):
        self.g, self.drive, self.n = float(g), float(drive), int(n)
        self.p_connect = float(p_connect)
        self.seed = int(seed)

    def init(self) -> dict[str, Any]:
        """The initial state: random potentials, connectivity, delays, no pending spikes."""
        rng = np.random.default_rng(self.seed)
        n = self.n
        connected = rng.random((n, n)) < self.p_connect
        np.fill_diagonal(connected, False)
        sign = np.where(np.arange(n) < int(0.8 * n), 1.0, -self.g)  # presynaptic type
        strength = rng.uniform(0.5, 1.5, (n, n))
        weights = np.where(connected, J * sign[:, None] * strength, 0.0)
        delays = rng.integers(MIN_DELAY_STEPS, MAX_DELAY_STEPS + 1, size=(n, n)).astype(np.int16)
        return {
            "v": rng.uniform(RESET, THRESHOLD, n),
            "refractory": np.zeros(n, dtype=np.int32),
            "ring": np.zeros((MAX_DELAY_STEPS + 1, n)),
            "ring_pos": 0,
            "step": 0,
            "weights": weights,
            "delays": delays,
        }

    def advance(self, state: Mapping[str, Any], segment: SegmentContext) -> Segment:
        """Run one segment from ``state``; return its recordings and the state after it."""
        from .segments.recording import Recorder

        duration = segment.duration or DEFAULT_SEGMENT
        steps = round(duration / DT)
        v = np.array(state["v"], dtype=np.float64)
        refractory = np.array(state["refractory"], dtype=np.int32)
        ring = np.array(state["ring"], dtype=np.float64)
        pos = int(state["ring_pos"])
        step = int(state["step"])
        weights, delays = state["weights"], state["delays"]
        size = ring.shape[0]
        rng = segment.rng()
        noise = rng.standard_normal((steps, self.n)) * (SIGMA * np.sqrt(DT / TAU))
        leak = DT / TAU
        recorder = Recorder(dt=DT, steps=steps, start_step=step, every=RECORD_EVERY)
        recorder.watch("v", v, index=slice(0, RECORDED))
        recorder.event("spikes", [], [])
        columns = np.arange(self.n)
        spikes = 0
        for k in range(steps):
            recorder.tick()
            active = refractory == 0
            v += active * (leak * (self.drive - v) + noise[k]) + ring[pos]
            ring[pos] = 0.0
            refractory[~active] -= 1
            fired = np.flatnonzero(v >= THRESHOLD)
            if fired.size:
                v[fired] = RESET
                refractory[fired] = REFRACTORY_STEPS
                rows = (pos + delays[fired]) % size
                np.add.at(ring, (rows, np.broadcast_to(columns, rows.shape)), weights[fired])
                recorder.event("spikes", np.full(fired.size, (step + k) * DT), fired)
                spikes += fired.size
            pos = (pos + 1) % size
        new_state = {"v": v, "refractory": refractory, "ring": ring, "ring_pos": pos,
                     "step": step + steps, "weights": weights, "delays": delays}
        excitatory = weights[weights > 0]
        summary = {
            "rate_hz": spikes / (self.n * steps * DT),
            "pending_input": float(np.abs(ring).sum()),
            "w_max": float(excitatory.max()) if excitatory.size else 0.0,
            "w_min": float(excitatory.min()) if excitatory.size else 0.0,
        }
        return Segment(recorder.recordings(), state=new_state, summary=summary)


def lif_network(g: float = 4.0, drive: float = 1.2, n: int = 100, p_connect: float = 0.1,
                seed: int = 0, *, segments: Segments) -> Iterator[Segment]:
    """The same network as a generator: one :class:`Segment` per segment asked for.

    Examples
    --------
    >>> import tempfile
    >>> import notebookscan as ns
    >>> from notebookscan.segments import SegmentedScan
    >>> scan = SegmentedScan(lif_network, ns.grid(g=[3.0, 5.0]), tempfile.mkdtemp(),
    ...                      segments=2, segment_duration=0.01)
    >>> scan.run(executor="serial", progress=False).progress.done
    2
    """
    network = LIFNetwork(g=g, drive=drive, n=n, p_connect=p_connect, seed=seed)
    state = network.init() if segments.state is None else segments.state
    for segment in segments:
        out = network.advance(state, segment)
        state = out.state or {}
        yield out


def rebalance(state: Mapping[str, Any]) -> dict[str, Any]:
    """Halve the strongest excitatory weight and double the weakest (between chained runs).

    Examples
    --------
    >>> w = np.array([[0.0, 0.1], [0.3, -0.4]])
    >>> rebalance({"weights": w})["weights"].tolist()
    [[0.0, 0.2], [0.15, -0.4]]
    """
    weights = np.array(state["weights"], dtype=np.float64)
    flat = weights.ravel()
    positive = np.flatnonzero(flat > 0)
    if positive.size:
        strongest = positive[np.argmax(flat[positive])]
        weakest = positive[np.argmin(flat[positive])]
        flat[strongest] /= 2
        flat[weakest] *= 2
    return {**state, "weights": weights}
