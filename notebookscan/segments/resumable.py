"""Checking that a segmented model continues from its state exactly as it would without
stopping (:func:`check_resumable`): the model run straight through, and the way a scan
runs it, one segment per call from the previous segment's decoded checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ScanError
from ..keys import point_key, point_seed
from ..store.checkpoints import decode_state, encode_state, states_equal
from .protocol import (
    Segment,
    call_kwargs,
    iterate,
    model_form,
    model_target,
    segment_seed,
)
from .worker import SegmentTask, recording_values, run_segment

__all__ = ["check_resumable"]


def check_resumable(function: Any, point: Mapping[str, Any], *, segments: int = 3,
                    seed: int | None = None, segment_duration: float | None = None) -> None:
    """Check that a model continues from its state exactly as it would without stopping.

    Runs ``point`` twice in this process: straight through (:func:`iterate`) and the way
    the scan does, one segment per call starting from the decoded checkpoint of the
    previous one. Raises :class:`ScanError` naming the first recording, summary or state
    entry that differs — usually something the model keeps outside ``state``.

    Examples
    --------
    >>> def leaky(segments: Segments):
    ...     rng = np.random.default_rng(0)          # not in the state: restarts each segment
    ...     for segment in segments:
    ...         yield Segment({"x": rng.random(2)}, state={}, time=[0, 1])
    >>> check_resumable(leaky, {}, segments=2)
    Traceback (most recent call last):
    ...
    notebookscan.errors.ScanError: leaky() does not continue from its state: ...
    """
    form = model_form(function)
    key = point_key(point)
    seed = point_seed(key) if seed is None else seed
    name = getattr(model_target(function), "__name__", "model")
    straight = [_snapshot(out) for out in iterate(function, point, segments=segments,
                                                  seed=seed, segment_duration=segment_duration)]
    state: bytes | None = None
    files: dict[str, bytes] = {}
    for index in range(segments):
        task = SegmentTask(call_kwargs(function, point, seed), False, seed, key, 0, index,
                           segment_seed(seed, index, 0), state, files, segment_duration,
                           form, None)
        out = run_segment(function, task)
        if out.status != "done":
            raise ScanError(f"{name}() failed in segment {index} when resumed from its "
                            f"checkpoint: {out.error}\n{out.traceback}")
        problem = _compare_segment(straight[index], out, index)
        if problem:
            raise ScanError(f"{name}() does not continue from its state: {problem}. Put "
                            "everything the next segment needs into Segment(state=...) (or "
                            "files in segment.save_dir), including random generators' "
                            "state or draw from segment.rng().")
        state, files = out.state, out.files


def _snapshot(out: Segment) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of a yielded segment's recordings and state (the model may reuse its arrays)."""
    values = recording_values(out.recordings, out.time)
    recordings = {name: np.array(value.data, copy=True) for name, value in values.items()}
    return recordings, decode_state(encode_state(out.state or {}))


def _compare_segment(expected: tuple[dict[str, Any], dict[str, Any]], out: Any,
                     index: int) -> str:
    recordings, state = expected
    for name, data in recordings.items():
        got = out.recordings.get(name)
        if got is None or not np.array_equal(np.asarray(got.data), data, equal_nan=True):
            return f"recording {name!r} of segment {index} differs"
    problem = states_equal(state, decode_state(out.state))
    if problem:
        return f"the state after segment {index} differs ({problem})"
    return ""
