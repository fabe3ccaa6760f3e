"""Long simulations in segments: streamed recordings, checkpoints, resume, extend, chains.

A segmented model hands over, after each segment, that segment's recordings and the
state needed to continue (plus, optionally, files its simulator saved). The scan runs
one segment per task, writes the recordings to the store as they arrive, checkpoints
the state as NetCDF (never pickle), and continues from the newest checkpoint after a
crash, on any engine, with results identical to an uninterrupted run.

.. code-block:: python

    import notebookscan as ns
    from notebookscan.segments import open_recordings
    scan = ns.Scan(model, space, "results/net", segments=40)   # a SegmentedScan
    scan.run()
    scan.extend(segments=10)           # only the 10 new segments run
    scan.chain(rebalance, runs=3)      # run k+1 starts from run k's transformed state
    open_recordings("results/net").v   # every segment joined along time

See docs/segments.md for a worked example.
"""

from __future__ import annotations

from ..store.checkpoints import Checkpoint, StateError, decode_state, encode_state, states_equal
from ..store.recordings import open_recordings
from .maintenance import SegmentedMergeReport, merge_segmented
from .protocol import (
    Segment,
    SegmentContext,
    Segments,
    is_segmented_model,
    iterate,
    segment_seed,
)
from .recording import Recorder
from .resumable import check_resumable
from .scan import SegmentedScan
from .source import SegmentEvents, SegmentProgress

__all__ = [
    "Checkpoint",
    "Recorder",
    "Segment",
    "SegmentContext",
    "SegmentEvents",
    "SegmentProgress",
    "SegmentedMergeReport",
    "SegmentedScan",
    "Segments",
    "StateError",
    "check_resumable",
    "decode_state",
    "encode_state",
    "is_segmented_model",
    "iterate",
    "merge_segmented",
    "open_recordings",
    "segment_seed",
    "states_equal",
]
