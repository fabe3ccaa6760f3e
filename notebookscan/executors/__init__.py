"""Executors: where a scan's points run.

``resolve_executor`` turns what a user passes as ``executor=`` into a
:class:`ScanExecutor`. ipyparallel is imported only when it is asked for.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from ..errors import ExecutorError
from .base import ScanExecutor
from .futures import FuturesExecutor, process_pool
from .serial import SerialExecutor

__all__ = ["FuturesExecutor", "ScanExecutor", "SerialExecutor", "resolve_executor"]

NAMED = ("serial", "processes", "local")


def _is_ipyparallel(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "ipyparallel"


def resolve_executor(spec: Any = None) -> tuple[ScanExecutor, bool]:
    """Return ``(executor, owned)`` for what the user passed as ``executor=``.

    ``owned`` is true when notebookscan created the executor for this run and shuts it
    down afterwards (a shared local ipyparallel cluster is reused, never owned by one run).

    Accepted: ``None`` or ``"local"`` (local ipyparallel engines, one per core),
    ``"serial"``, ``"processes"``, a :class:`ScanExecutor`, any
    :class:`concurrent.futures.Executor`, an ipyparallel ``Client``, ``View`` or
    ``Cluster``.
    """
    if isinstance(spec, ScanExecutor):
        return spec, False
    if spec is None or spec == "local":
        from .ipyparallel import local_executor

        return local_executor(), False
    if isinstance(spec, str):
        if spec == "serial":
            return SerialExecutor(), True
        if spec == "processes":
            return process_pool(), True
        raise ExecutorError(
            f"executor={spec!r} is not known; use one of {', '.join(map(repr, NAMED))}, "
            "a concurrent.futures.Executor, or an ipyparallel Client/View/Cluster."
        )
    if _is_ipyparallel(spec):
        from .ipyparallel import IPyParallelExecutor

        return IPyParallelExecutor.from_object(spec), False
    if isinstance(spec, Executor):
        return FuturesExecutor(spec), False
    raise ExecutorError(
        f"executor={spec!r} (type {type(spec).__name__}) cannot run a scan; pass None for local "
        "engines, 'serial', 'processes', a concurrent.futures.Executor, or an ipyparallel "
        "Client/View/Cluster."
    )
