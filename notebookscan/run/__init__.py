"""The run engine: one loop (:mod:`.loop`) runs every kind of scan, fed by a source of
work (:mod:`.points` for a plain scan's points); the worker side (:mod:`.worker`,
:mod:`.batch`), the run's handle (:mod:`.handle`), detached runs (:mod:`.detached`),
events, provenance and stale-code checks.

It sits below the scans (:mod:`notebookscan.scan`, :mod:`notebookscan.segments`) and
above the executors and the store; it imports neither scans nor front ends.
"""
